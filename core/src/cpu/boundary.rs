//! The instruction boundary: what happens between two instructions, for
//! every engine (DESIGN.md section 4, "What every engine stands on").
//!
//! Four engines must take interrupts, faults and device deadlines at exactly
//! the same instruction, so the rules applied between instructions live here
//! and nowhere else. They follow the priority order of SDM Vol. 3A 6.9
//! (table 6-2), highest first:
//!
//! 1. host and machine stops: host input wanted, shutdown after a triple
//!    fault, a stop a device requested (debug-exit port, reset) — the
//!    "hardware reset" and "external hardware interventions" rows;
//! 2. traps on the previous instruction: the TF single-step trap and data
//!    breakpoints ([`Machine::finish_instruction`], which engines call right
//!    after an instruction on their careful path);
//! 3. NMI;
//! 4. device timers now due (a timer that asks for host input returns to
//!    the caller right there), then maskable hardware interrupts (IF = 1
//!    and no interrupt shadow, SDM Vol. 3A 6.8.1 and 6.8.3);
//! 5. a halted CPU stays halted;
//! 6. code breakpoints: DR0-DR3 execute breakpoints, a fault before the
//!    next instruction, suppressed by RF (SDM Vol. 3A 17.2.4, 17.3.1.1).
//!
//! # The pending-work word
//!
//! Looking at all of that before every instruction would cost more than the
//! instructions. Instead, whatever may need the boundary's attention raises
//! a bit in one [`PendingWork`] word: the bus after every device call (port
//! I/O, MMIO, timer callbacks, INTA cycles), memory when a page holding
//! cached code is written, core's architectural operations that can change
//! whether an interrupt can be taken or how code runs (STI, the EFLAGS
//! merge of POPF and IRET, IRET, a load of SS, software interrupts, far
//! transfers, CR/DR/MSR writes, SYSENTER/SYSEXIT, LTR) — so an engine
//! needs no list of its own of the instructions that matter — and the host
//! (the debugger, another thread).
//! Device deadlines are the one thing that arrives without a bit: the clock
//! advances with every retired instruction, so an engine stops at the
//! instruction count [`Machine::boundary_icount`] names. An engine's fast
//! path therefore tests one word and compares one counter; when either
//! fires it calls [`Machine::service_boundary`] (software engines) or
//! [`Machine::next_boundary_work`] (engines whose CPU delivers events
//! itself, such as KVM). Because the bits are raised by what happened and
//! not by where an engine cut its blocks, every engine takes every
//! interrupt at the same instruction count, however it slices its run.
//!
//! The word is `#[repr(C)]` and shared (an `Arc` of an atomic) between the
//! machine, its bus and its memory, so generated code can test it through a
//! pointer ([`PendingWork::as_ptr`]) and a host thread can raise it.

use std::sync::atomic::{AtomicU32, Ordering};

use super::events::{Delivery, Event};
use super::flags::{IF, RF, TF};
use super::{vector, Fault, SegReg};
use crate::engine::{Exit, StopReason};
use crate::machine::Machine;

/// The bits of the pending-work word.
pub mod work {
    /// A device was called (port I/O, MMIO, a timer callback, an INTA
    /// cycle): interrupt lines, NMI, the next deadline, the signals (stop,
    /// A20, host input wanted) may have changed.
    pub const DEVICE: u32 = 1 << 0;
    /// A page that decoded or translated code was made from was written
    /// (`Memory`'s code-write log has new entries).
    pub const CODE_WRITE: u32 = 1 << 1;
    /// The CPU's interrupt acceptance or execution mode may have changed:
    /// IF, the interrupt shadow, NMI blocking (IRET), CR0/CR3/CR4, an
    /// event was delivered, HLT.
    pub const CPU: u32 = 1 << 2;
    /// Something outside the guest asked the engine to come back (the
    /// debugger, a host thread).
    pub const HOST: u32 = 1 << 3;
    /// Sticky while instruction-by-instruction rules apply: TF or RF set,
    /// an interrupt shadow, DR0-DR3 enabled in DR7. The boundary raises it
    /// again each time it finds one of them, so it looks before every
    /// instruction until they are gone.
    pub const STEP: u32 = 1 << 4;
}

/// The pending-work word (see the module documentation).
#[repr(C)]
#[derive(Debug, Default)]
pub struct PendingWork {
    bits: AtomicU32,
}

impl PendingWork {
    /// Ask the next boundary to look (`bits` from [`work`]).
    #[inline(always)]
    pub fn raise(&self, bits: u32) {
        self.bits.fetch_or(bits, Ordering::Relaxed);
    }

    /// The bits raised and not yet taken: an engine's fast-path test.
    #[inline(always)]
    pub fn get(&self) -> u32 {
        self.bits.load(Ordering::Relaxed)
    }

    /// Take every raised bit, leaving the word clear.
    #[inline]
    pub fn take(&self) -> u32 {
        self.bits.swap(0, Ordering::Relaxed)
    }

    /// The word's address, for generated code: a `u32` that is non-zero
    /// while work is pending. Valid as long as the machine lives (the word
    /// is heap-allocated and never moves).
    pub fn as_ptr(&self) -> *const u32 {
        self.bits.as_ptr()
    }
}

/// What the CPU can accept at this boundary. Software engines derive it
/// from `CpuState`; an engine whose CPU runs elsewhere (KVM) reports its
/// CPU's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acceptance {
    /// An NMI can be delivered now (not blocked by an NMI handler, no
    /// interrupt shadow).
    pub nmi: bool,
    /// A maskable interrupt can be delivered now (IF = 1, no shadow).
    pub interrupt: bool,
}

/// Work the boundary hands an engine that delivers events itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundaryWork {
    /// Nothing: run the next instruction.
    None,
    /// Return this to the engine's caller.
    Exit(Exit),
    /// Deliver an NMI.
    Nmi,
    /// Deliver this interrupt vector (already acknowledged: the interrupt
    /// controller moved it to in-service).
    Interrupt(u8),
}

/// What [`Machine::service_boundary`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// Nothing stands in the way: execute the instruction at CS:EIP.
    Execute,
    /// An event was delivered; the CPU stands at its handler. Look at the
    /// boundary again before executing (another event may follow).
    Delivered(DeliveredKind),
    /// Return this exit to the engine's caller.
    Exit(Exit),
}

/// What kind of event a boundary delivered, for engines' counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveredKind {
    /// A debug exception (trap or code breakpoint).
    Exception,
    /// An NMI or a maskable interrupt.
    Interrupt,
}

/// The facts about an instruction's start that decide the traps after it
/// (taken by [`Machine::start_instruction`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionStart {
    tf: bool,
    shadow: bool,
    rf: bool,
    /// The instruction is a raw-mode monitor's patch code, which leaves an
    /// interrupt shadow to the next guest instruction (crate::substrate).
    patch: bool,
}

impl Machine {
    /// The instruction count at which the boundary must look next, for an
    /// engine that may run until `target`: `target`, or earlier if a device
    /// deadline falls before it. A timer then fires at the instruction
    /// where virtual time reaches its deadline, however the engine cut its
    /// blocks. Valid until a device is called (which raises
    /// [`work::DEVICE`]).
    #[inline]
    pub fn boundary_icount(&self, target: u64) -> u64 {
        let deadline = self.bus.next_deadline();
        if deadline == u64::MAX {
            return target;
        }
        let per = self.clock.ns_per_insn.max(1);
        let n = deadline
            .saturating_sub(self.clock.now_ns())
            .div_ceil(per)
            .max(1);
        target.min(self.clock.icount.saturating_add(n))
    }

    /// The CPU's acceptance of events now, from `CpuState`.
    pub fn acceptance(&self) -> Acceptance {
        let run = &self.cpu.run;
        let mut accept = Acceptance {
            nmi: !run.nmi_blocked && !run.interrupt_shadow,
            interrupt: self.cpu.eflags & IF != 0 && !run.interrupt_shadow,
        };
        if let Some(h) = &self.substrate {
            // A raw-mode substrate (crate::substrate): the guest's virtual
            // IF gates maskable interrupts, and patch code is no window.
            let gate = self.mem.monitor().map_or(0, |m| m[h.gate as usize]);
            if h.in_window(self.cpu.linear_eip()) {
                accept = Acceptance {
                    nmi: false,
                    interrupt: false,
                };
            } else if gate & crate::substrate::GATE_IF == 0 {
                accept.interrupt = false;
            }
        }
        accept
    }

    /// Priority 1 (SDM Vol. 3A table 6-2): host input wanted, shutdown, a
    /// stop a device requested.
    fn machine_stops(&mut self) -> Option<Exit> {
        if self.bus.signals.input_wanted {
            self.bus.signals.input_wanted = false;
            return Some(Exit::WaitingForInput);
        }
        if self.cpu.run.shutdown {
            return Some(self.triple_fault_exit());
        }
        self.take_stop_request().map(Exit::Stopped)
    }

    /// Priorities 5 and 6: NMI, then device timers due now and a maskable
    /// interrupt. `accept` says what the CPU can take.
    fn interrupt_work(&mut self, accept: Acceptance) -> BoundaryWork {
        if self.bus.take_nmi() {
            self.cpu.run.nmi_pending = true;
        }
        if self.cpu.run.nmi_pending && accept.nmi {
            self.cpu.run.nmi_pending = false;
            return BoundaryWork::Nmi;
        }
        let now = self.clock.now_ns();
        if now >= self.bus.next_deadline() {
            self.bus.run_timers(now);
            // A device asked for host input at a paced point of virtual
            // time (`hostio::InputRequests::Paced`): the caller feeds it
            // here, at this very boundary on every engine, before an
            // interrupt the new byte may raise is looked for.
            if self.bus.signals.input_wanted {
                self.bus.signals.input_wanted = false;
                return BoundaryWork::Exit(Exit::WaitingForInput);
            }
        }
        if accept.interrupt && self.bus.interrupt_pending() {
            if let Some(v) = self.bus.acknowledge_interrupt(now) {
                return BoundaryWork::Interrupt(v);
            }
        }
        BoundaryWork::None
    }

    /// The boundary for an engine whose CPU delivers events itself (KVM):
    /// the machine's stops, then an NMI, then device timers and a maskable
    /// interrupt, in SDM order. Call it until it returns `None` or `Exit`,
    /// updating `accept` after each event handed over.
    pub fn next_boundary_work(&mut self, accept: Acceptance) -> BoundaryWork {
        if let Some(exit) = self.machine_stops() {
            return BoundaryWork::Exit(exit);
        }
        self.interrupt_work(accept)
    }

    /// Whether the interrupt controller holds an interrupt for the CPU:
    /// an engine whose CPU cannot take it yet asks to be told when it can
    /// (KVM's interrupt window).
    pub fn interrupt_waiting(&mut self) -> bool {
        self.bus.interrupt_pending()
    }

    /// The boundary for a software engine: look at everything of SDM Vol.
    /// 3A table 6-2 in order and deliver what is due, through
    /// [`Machine::deliver_event`] (so redirection applies). Delivers at
    /// most one event per call. Raises [`work::STEP`] again while
    /// instruction-by-instruction rules apply.
    pub fn service_boundary(&mut self) -> Boundary {
        if let Some(exit) = self.machine_stops() {
            return Boundary::Exit(exit);
        }
        match self.interrupt_work(self.acceptance()) {
            BoundaryWork::Nmi => {
                self.cpu.run.nmi_blocked = true;
                let ev = Event {
                    vector: vector::NMI,
                    source: super::events::EventSource::Nmi,
                    error_code: None,
                    address: 0,
                };
                return self.boundary_delivery(ev, DeliveredKind::Interrupt);
            }
            BoundaryWork::Interrupt(v) => {
                return self.boundary_delivery(Event::external(v), DeliveredKind::Interrupt);
            }
            BoundaryWork::Exit(exit) => return Boundary::Exit(exit),
            BoundaryWork::None => {}
        }
        if self.cpu.run.halted {
            return Boundary::Exit(self.halt_exit());
        }
        if self.step_rules_apply() {
            self.pending().raise(work::STEP);
        }
        if self
            .substrate
            .as_ref()
            .is_some_and(|h| h.in_window(self.cpu.linear_eip()))
        {
            // Patch code is no interrupt window (crate::substrate): look
            // again at the boundary after it.
            self.pending().raise(work::CPU);
        }
        if let Some(hits) = self.code_breakpoint_hits() {
            self.cpu.dr[6] = (self.cpu.dr[6] & !0xF) | hits;
            // The handler's IRET sets RF so the instruction then runs once.
            let ev = Event::from_fault(Fault::new(vector::DB, None));
            return self.boundary_delivery(ev, DeliveredKind::Exception);
        }
        Boundary::Execute
    }

    /// Deliver an event the boundary found, with the current EIP as the
    /// return address (nothing of the next instruction has run).
    fn boundary_delivery(&mut self, ev: Event, kind: DeliveredKind) -> Boundary {
        self.pending().raise(work::CPU);
        match self.deliver_event(ev, self.cpu.eip) {
            Delivery::Delivered => Boundary::Delivered(kind),
            Delivery::TripleFault => Boundary::Exit(self.triple_fault_exit()),
            Delivery::Redirected(e) => Boundary::Exit(Exit::Event(e)),
        }
    }

    /// Whether the careful, one-instruction-at-a-time rules apply: TF or
    /// RF set, an interrupt shadow, or debug registers enabled in DR7.
    #[inline]
    pub fn step_rules_apply(&self) -> bool {
        self.cpu.eflags & (TF | RF) != 0
            || self.cpu.run.interrupt_shadow
            || self.cpu.dr[7] & 0xFF != 0
    }

    /// The exit for a halted CPU: it waits for an interrupt, or, with
    /// IF = 0, nothing can wake it.
    pub fn halt_exit(&self) -> Exit {
        if self.cpu.interrupts_enabled() {
            Exit::Halted
        } else {
            Exit::Stopped(StopReason::DeadHalt {
                cs: self.cpu.seg[SegReg::Cs as usize].selector,
                eip: self.cpu.eip,
            })
        }
    }

    /// The exit after a triple fault shut the CPU down.
    pub fn triple_fault_exit(&self) -> Exit {
        Exit::Stopped(StopReason::TripleFault {
            cs: self.cpu.seg[SegReg::Cs as usize].selector,
            eip: self.cpu.eip,
        })
    }

    /// DR0-DR3 execute breakpoints that match the next instruction (SDM
    /// Vol. 3A 17.2.4): B0-B3 of the hits, or None. RF suppresses them.
    fn code_breakpoint_hits(&self) -> Option<u32> {
        let dr7 = self.cpu.dr[7];
        if dr7 & 0xFF == 0 || self.cpu.eflags & RF != 0 {
            return None;
        }
        let lin = self.cpu.linear_eip();
        let hits = (0..4)
            .filter(|&n| {
                let enabled = dr7 & (3 << (2 * n)) != 0;
                let rw = (dr7 >> (16 + 4 * n)) & 3;
                enabled && rw == 0 && self.cpu.dr[n] == lin
            })
            .fold(0, |acc, n| acc | 1 << n);
        (hits != 0).then_some(hits)
    }

    /// Note what decides the traps after the instruction about to run, and
    /// clear the data-breakpoint hits it may collect.
    #[inline]
    pub fn start_instruction(&mut self) -> InstructionStart {
        self.watch.hits = 0;
        InstructionStart {
            tf: self.cpu.eflags & TF != 0,
            shadow: self.cpu.run.interrupt_shadow,
            rf: self.cpu.eflags & RF != 0,
            patch: self
                .substrate
                .as_ref()
                .is_some_and(|h| h.in_window(self.cpu.linear_eip())),
        }
    }

    /// The rules right after an instruction retired on the careful path,
    /// first of the next boundary's: the interrupt shadow lasts one
    /// instruction, RF is cleared once an instruction retires (SDM Vol. 3A
    /// 17.3.1.1), a stop a device requested comes first (priority 1), then
    /// the traps on the previous instruction (priority 4): data breakpoints
    /// hit by it (a trap: EIP is past the instruction, SDM Vol. 3A 17.2.5)
    /// and the TF single-step trap (SDM Vol. 3A 17.3.1.4), both held off by
    /// an interrupt shadow the instruction ended. `event_delivered`: the
    /// instruction delivered an event itself (INT n, a task switch), which
    /// leaves no single-step trap. `ended`: an exit the instruction itself
    /// produced (HLT, a shutdown while delivering INT n, an event the
    /// policy redirected), which comes before any trap.
    pub fn finish_instruction(
        &mut self,
        start: InstructionStart,
        event_delivered: bool,
        ended: Option<Exit>,
    ) -> Boundary {
        if start.shadow && !start.patch {
            self.cpu.run.interrupt_shadow = false;
        }
        if start.rf && self.cpu.eflags & RF != 0 && !event_delivered {
            self.cpu.eflags &= !RF;
        }
        if let Some(exit) = ended {
            return Boundary::Exit(exit);
        }
        if let Some(stop) = self.take_stop_request() {
            return Boundary::Exit(Exit::Stopped(stop));
        }
        let data_hits = std::mem::take(&mut self.watch.hits);
        if data_hits != 0 && !start.shadow {
            let bs = if start.tf { 1 << 14 } else { 0 };
            self.cpu.dr[6] = (self.cpu.dr[6] & !0xF) | data_hits | bs;
            let ev = Event::from_fault(Fault::new(vector::DB, None));
            return self.boundary_delivery(ev, DeliveredKind::Exception);
        }
        if start.tf && !event_delivered && !self.cpu.run.interrupt_shadow {
            self.cpu.dr[6] |= 1 << 14; // DR6.BS
            let ev = Event::from_fault(Fault::new(vector::DB, None));
            return self.boundary_delivery(ev, DeliveredKind::Exception);
        }
        Boundary::Execute
    }

    /// Deliver a fault an instruction raised, with EIP at the instruction
    /// (nothing of it committed), or hand it to the caller when the event
    /// policy redirects its vector.
    pub fn raise_fault(&mut self, f: Fault) -> Boundary {
        if f.vector == vector::DB {
            // General detect (SDM Vol. 3A 17.2.4): the only #DB fault an
            // instruction raises itself.
            self.cpu.dr[6] |= 1 << 13;
        }
        self.boundary_delivery(Event::from_fault(f), DeliveredKind::Exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose port write schedules its timer 95 ns ahead.
    struct Timer;
    impl crate::bus::Device for Timer {
        fn name(&self) -> &'static str {
            "timer"
        }
        fn io_read(&mut self, _: u16, _: u8, _: &mut crate::bus::DeviceCtx) -> u32 {
            0
        }
        fn io_write(&mut self, _: u16, _: u8, _: u32, ctx: &mut crate::bus::DeviceCtx) {
            ctx.schedule(ctx.now_ns + 95);
        }
        fn save_state(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn restore_state(&mut self, _: &serde_json::Value) -> Result<(), crate::bus::StateError> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    #[test]
    fn the_pending_word_is_raised_by_bits_and_taken_whole() {
        let w = PendingWork::default();
        assert_eq!(w.get(), 0);
        w.raise(work::DEVICE);
        w.raise(work::CPU);
        assert_eq!(w.get(), work::DEVICE | work::CPU);
        // SAFETY: the pointer is the word's own, read while it lives.
        assert_eq!(unsafe { *w.as_ptr() }, work::DEVICE | work::CPU);
        assert_eq!(w.take(), work::DEVICE | work::CPU);
        assert_eq!(w.get(), 0);
    }

    #[test]
    fn the_bus_and_memory_raise_the_machines_word() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.add_port_device(Box::new(Timer), &[(0x40, 0x40)]);
        m.pending().take();
        m.bus.io_write(0x41, 1, 0, 0);
        assert_eq!(m.pending().take(), 0, "no device answers port 0x41");
        m.bus.io_write(0x40, 1, 0, 0);
        assert_eq!(m.pending().take(), work::DEVICE, "a device call");
        m.mark_code_page(3);
        m.write_ram(0x3000, &[1]).unwrap();
        assert_eq!(m.pending().take(), work::CODE_WRITE, "a code page written");
    }

    #[test]
    fn the_boundary_icount_stops_at_the_instruction_reaching_a_deadline() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.clock.ns_per_insn = 10;
        m.clock.icount = 100;
        // No deadline: the target.
        assert_eq!(m.boundary_icount(5000), 5000);
        // A deadline 95 ns away is reached by the 10th instruction.
        m.add_port_device(Box::new(Timer), &[(0x40, 0x40)]);
        let now = m.clock.now_ns();
        m.bus.io_write(0x40, 1, 0, now);
        assert_eq!(m.boundary_icount(5000), 110);
        assert_eq!(m.boundary_icount(105), 105, "the target comes first");
    }

    #[test]
    fn a_software_boundary_delivers_one_event_per_call_in_priority_order() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.cpu.run.nmi_pending = true;
        m.cpu.run.halted = true;
        // Real mode, IVT at 0: the NMI handler's vector is 0000:0000.
        assert_eq!(
            m.service_boundary(),
            Boundary::Delivered(DeliveredKind::Interrupt)
        );
        assert!(
            m.cpu.run.nmi_blocked && !m.cpu.run.halted,
            "NMI wakes the CPU"
        );
        assert_eq!(m.service_boundary(), Boundary::Execute);
        m.bus.signals.input_wanted = true;
        m.cpu.run.shutdown = true;
        assert_eq!(m.service_boundary(), Boundary::Exit(Exit::WaitingForInput));
        assert_eq!(m.service_boundary(), Boundary::Exit(m.triple_fault_exit()));
    }

    /// A device whose timer asks the host for input, as a UART pacing an
    /// input script does.
    struct PacedReceiver;
    impl crate::bus::Device for PacedReceiver {
        fn name(&self) -> &'static str {
            "paced receiver"
        }
        fn io_read(&mut self, _: u16, _: u8, _: &mut crate::bus::DeviceCtx) -> u32 {
            0
        }
        fn io_write(&mut self, _: u16, _: u8, _: u32, ctx: &mut crate::bus::DeviceCtx) {
            ctx.schedule(ctx.now_ns + 50);
        }
        fn timer(&mut self, ctx: &mut crate::bus::DeviceCtx) {
            ctx.signals.input_wanted = true;
        }
        fn save_state(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn restore_state(&mut self, _: &serde_json::Value) -> Result<(), crate::bus::StateError> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    #[test]
    fn a_timer_asking_for_input_returns_at_the_boundary_where_it_fired() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.add_port_device(Box::new(PacedReceiver), &[(0x40, 0x40)]);
        m.bus.io_write(0x40, 1, 0, 0);
        m.clock.icount = 49;
        assert_eq!(m.service_boundary(), Boundary::Execute, "not due yet");
        m.clock.icount = 50;
        assert_eq!(m.service_boundary(), Boundary::Exit(Exit::WaitingForInput));
        assert!(!m.bus.signals.input_wanted, "taken with the exit");
        assert_eq!(m.bus.next_deadline(), u64::MAX);
        assert_eq!(m.service_boundary(), Boundary::Execute);
    }
}
