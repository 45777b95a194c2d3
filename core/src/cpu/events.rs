//! Event delivery (TRPM): exceptions, software interrupts, external
//! interrupts and NMI, through the real-mode IVT or the protected-mode IDT
//! (interrupt, trap and task gates), with the privilege-changing stack switch
//! through the TSS, virtual-8086 exits, error codes, double faults and the
//! triple-fault shutdown.
//!
//! The pseudo-code this follows is the INT n/INTO/INT3 page of SDM Vol. 2A
//! and SDM Vol. 3A chapter 6 (6.12 exception and interrupt handling, 6.15
//! double-fault conditions).

use super::flags::{AC, IF, NT, RF, TF, VM};
use super::segments::{check_segment_access, null_segment, system_type};
use super::state::{reg, SegReg, Segment};
use super::tasking::TaskSwitchReason;
use super::{vector, CpuResult, Fault};
use crate::machine::Machine;

/// Where an event comes from; this decides privilege checks, the EXT bit of
/// error codes and how nested faults combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// An exception raised by an instruction or by delivery itself.
    Exception,
    /// INT n, INT3 or INTO: the gate's DPL is checked against CPL.
    Software,
    /// ICEBP (INT1, opcode F1): a software event without the DPL check.
    Icebp,
    /// A maskable interrupt from the interrupt controller.
    External,
    Nmi,
}

/// One event to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub vector: u8,
    pub source: EventSource,
    pub error_code: Option<u32>,
    /// For #PF: the address for CR2.
    pub address: u32,
}

impl Event {
    pub fn from_fault(f: Fault) -> Event {
        Event {
            vector: f.vector,
            source: EventSource::Exception,
            error_code: f.error_code,
            address: f.address,
        }
    }
    pub fn nmi() -> Event {
        Event {
            vector: vector::NMI,
            source: EventSource::Nmi,
            error_code: None,
            address: 0,
        }
    }
    pub fn software(vector: u8) -> Event {
        Event {
            vector,
            source: EventSource::Software,
            error_code: None,
            address: 0,
        }
    }
    pub fn external(vector: u8) -> Event {
        Event {
            vector,
            source: EventSource::External,
            error_code: None,
            address: 0,
        }
    }
    fn ext(&self) -> u32 {
        match self.source {
            EventSource::Software | EventSource::Icebp => 0,
            _ => 1,
        }
    }
}

impl EventSource {
    const ALL: [EventSource; 5] = [
        EventSource::Exception,
        EventSource::Software,
        EventSource::Icebp,
        EventSource::External,
        EventSource::Nmi,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of delivering an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The handler's first instruction is next.
    Delivered,
    /// A fault while delivering a double fault: the CPU shut down.
    TripleFault,
    /// The event policy redirects the event to the caller: nothing was
    /// delivered (see [`EventExit`]).
    Redirected(EventExit),
}

/// An event handed to the engine's caller instead of being delivered
/// (`EventPolicy::Exit` of DESIGN.md section 3). The CPU state is as it was
/// before delivery began: for a fault, the faulting instruction committed
/// nothing and EIP points at it; for a software interrupt (INT n, INT3,
/// INTO, ICEBP) the instruction did not retire and EIP points at it; for a
/// trap (a debug trap) the instruction retired and EIP is past it; for an
/// external interrupt, it was acknowledged at the interrupt controller
/// (the caller now owns its delivery); for a fault raised while delivering
/// another event, `during` names that event and nothing of either was
/// delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventExit {
    pub event: Event,
    /// The address delivery would have saved as the return address.
    pub return_eip: u32,
    /// The event whose delivery raised this one, if any.
    pub during: Option<Event>,
}

/// Which events go to the engine's caller instead of through the IDT or
/// IVT: one bit per (source, vector). Empty by default. The debugger
/// catches vectors with it, the conformance runner sees every fault, and
/// the raw-mode monitor takes every event the guest's kernel would handle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPolicy {
    by_source: [[u64; 4]; 5],
}

impl EventPolicy {
    /// Redirect `vector` when it comes from any of `sources`.
    pub fn redirect(&mut self, sources: &[EventSource], vector: u8) {
        for s in sources {
            self.by_source[s.index()][vector as usize / 64] |= 1 << (vector % 64);
        }
    }

    /// Redirect the exceptions (source `Exception`) whose vectors are set
    /// in `mask` (bit v for vector v < 32).
    pub fn redirect_exceptions(&mut self, mask: u32) {
        for v in (0..32u8).filter(|v| mask & (1 << v) != 0) {
            self.redirect(&[EventSource::Exception], v);
        }
    }

    /// Redirect every event from every source.
    pub fn redirect_all(&mut self) {
        self.by_source = [[u64::MAX; 4]; 5];
    }

    /// Deliver everything again.
    pub fn clear(&mut self) {
        *self = EventPolicy::default();
    }

    /// Whether `event` goes to the caller.
    #[inline]
    pub fn redirects(&self, event: &Event) -> bool {
        let v = event.vector as usize;
        self.by_source[event.source.index()][v / 64] & (1 << (v % 64)) != 0
    }

    /// Whether nothing is redirected.
    pub fn is_empty(&self) -> bool {
        EventSource::ALL
            .iter()
            .all(|s| self.by_source[s.index()] == [0; 4])
    }
}

/// SDM Vol. 3A table 6-4: exception classes for the double-fault rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

/// The RF the EFLAGS image of a protected-mode frame gets beyond the
/// current one: "For any fault-class exception except a debug exception
/// generated in response to an instruction breakpoint, the value pushed for
/// RF is 1" (SDM Vol. 3A 17.3.1.1). The fault-class vectors are those of
/// table 6-1; #DB is left out (instruction breakpoints push RF as it is,
/// and ringside's other debug exceptions are traps).
fn pushed_rf(ev: &Event) -> u32 {
    let fault = matches!(
        ev.vector,
        vector::DE
            | vector::BR
            | vector::UD
            | vector::NM
            | vector::TS
            | vector::NP
            | vector::SS
            | vector::GP
            | vector::PF
            | vector::MF
            | vector::AC
    );
    if ev.source == EventSource::Exception && fault {
        RF
    } else {
        0
    }
}

fn class_of(v: u8) -> Class {
    match v {
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => Class::Contributory,
        vector::PF => Class::PageFault,
        _ => Class::Benign,
    }
}

impl Machine {
    /// Deliver `event`, saving `return_eip` as the address to resume at.
    /// Faults raised during delivery are combined by the rules of SDM Vol. 3A
    /// table 6-5: a second contributory fault or page fault becomes #DF, a
    /// fault while delivering #DF shuts the CPU down.
    ///
    /// The event policy ([`Machine::event_policy`]) is consulted for the
    /// event and for every fault raised while delivering it: a redirected
    /// one comes back as [`Delivery::Redirected`] with nothing delivered.
    pub fn deliver_event(&mut self, event: Event, return_eip: u32) -> Delivery {
        if self.event_policy.redirects(&event) && !self.substrate_delivers(&event) {
            return Delivery::Redirected(EventExit {
                event,
                return_eip,
                during: None,
            });
        }
        let mut ev = event;
        let mut ret = return_eip;
        loop {
            match self.deliver_once(ev, ret) {
                Ok(()) => {
                    self.cpu.run.halted = false;
                    return Delivery::Delivered;
                }
                Err(f2) => {
                    if ev.vector == vector::DF && ev.source == EventSource::Exception {
                        self.cpu.run.shutdown = true;
                        return Delivery::TripleFault;
                    }
                    let first = if ev.source == EventSource::Exception {
                        class_of(ev.vector)
                    } else {
                        Class::Benign
                    };
                    let second = class_of(f2.vector);
                    let delivering = ev;
                    let double = matches!(
                        (first, second),
                        (Class::Contributory, Class::Contributory)
                            | (Class::PageFault, Class::Contributory)
                            | (Class::PageFault, Class::PageFault)
                    );
                    ev = if double {
                        Event {
                            vector: vector::DF,
                            source: EventSource::Exception,
                            error_code: Some(0),
                            address: 0,
                        }
                    } else {
                        // The second fault is handled serially; its error code
                        // carries EXT because delivery, not the program, raised it.
                        Event {
                            vector: f2.vector,
                            source: EventSource::Exception,
                            error_code: f2.error_code.map(|c| c | ev.ext()),
                            address: f2.address,
                        }
                    };
                    // Faults during delivery report the interrupted instruction.
                    ret = self.cpu.eip;
                    if self.event_policy.redirects(&ev) {
                        return Delivery::Redirected(EventExit {
                            event: ev,
                            return_eip: ret,
                            during: Some(delivering),
                        });
                    }
                }
            }
        }
    }

    /// A raw-mode substrate delivers a system call itself
    /// (crate::substrate, "Direct system calls").
    fn substrate_delivers(&self, event: &Event) -> bool {
        event.source == EventSource::Software
            && self.cpu.cpl() == 3
            && self
                .substrate
                .as_ref()
                .is_some_and(|h| h.delivers_directly(event.vector))
    }

    fn deliver_once(&mut self, ev: Event, return_eip: u32) -> CpuResult<()> {
        if ev.vector == vector::PF && ev.source == EventSource::Exception {
            self.cpu.cr2 = ev.address;
        }
        if !self.cpu.protected_mode() {
            self.deliver_real_mode(ev, return_eip)
        } else {
            self.deliver_protected_mode(ev, return_eip)
        }
    }

    /// Real mode: FLAGS, CS, IP pushed; CS:IP from the IVT (SDM Vol. 2A INT n,
    /// REAL-ADDRESS-MODE). Error codes are not pushed in real mode.
    fn deliver_real_mode(&mut self, ev: Event, return_eip: u32) -> CpuResult<()> {
        let entry = (ev.vector as u32) * 4;
        if entry + 3 > self.cpu.idtr.limit as u32 {
            return Err(Fault::gp0());
        }
        let sp = self.stack_pointer();
        let frame = [
            self.cpu.eflags & 0xFFFF,
            self.cpu.seg[SegReg::Cs as usize].selector as u32,
            return_eip & 0xFFFF,
        ];
        let mut addrs = [0u32; 3];
        for (i, a) in addrs.iter_mut().enumerate() {
            let off = sp.wrapping_sub(2 * (i as u32 + 1)) & 0xFFFF;
            *a = self.seg_write_addr(SegReg::Ss, off, 2)?;
        }
        let vec_lin = self.cpu.idtr.base.wrapping_add(entry);
        let ip = self.read_lin::<u16>(vec_lin, false)?;
        let cs = self.read_lin::<u16>(vec_lin.wrapping_add(2), false)?;
        for (a, v) in addrs.iter().zip(frame) {
            self.write_lin::<u16>(*a, v as u16, false)?;
        }
        self.set_sp(sp.wrapping_sub(6) & 0xFFFF);
        self.cpu.eflags &= !(IF | TF | AC | RF);
        self.load_real_cs(cs);
        self.cpu.eip = ip as u32;
        Ok(())
    }

    /// Load CS the real-mode way (base = selector * 16).
    pub fn load_real_cs(&mut self, selector: u16) {
        let cs = &mut self.cpu.seg[SegReg::Cs as usize];
        cs.selector = selector;
        cs.base = (selector as u32) << 4;
    }

    fn deliver_protected_mode(&mut self, ev: Event, return_eip: u32) -> CpuResult<()> {
        let ext = ev.ext();
        let idt_code = (ev.vector as u32) * 8 + 2 + ext;
        let entry = (ev.vector as u32) * 8;
        if entry + 7 > self.cpu.idtr.limit as u32 {
            return Err(Fault::gp(idt_code));
        }
        let gate = super::segments::Descriptor(
            self.read_lin::<u64>(self.cpu.idtr.base.wrapping_add(entry), false)?,
        );
        let gtype = gate.typ();
        let is_gate = !gate.is_code_or_data()
            && matches!(
                gtype,
                system_type::TASK_GATE
                    | system_type::INT_GATE16
                    | system_type::TRAP_GATE16
                    | system_type::INT_GATE32
                    | system_type::TRAP_GATE32
            );
        if !is_gate {
            return Err(Fault::gp(idt_code));
        }
        let cpl = self.cpu.cpl();
        if ev.source == EventSource::Software && gate.dpl() < cpl {
            return Err(Fault::gp(idt_code));
        }
        if !gate.present() {
            return Err(Fault::np(idt_code));
        }
        if gtype == system_type::TASK_GATE {
            let tss = gate.gate_selector();
            self.task_switch(
                tss,
                TaskSwitchReason::Interrupt { ext: ext != 0 },
                return_eip,
            )?;
            if let Some(code) = ev.error_code {
                self.push_error_code_after_task_switch(code)?;
            }
            return Ok(());
        }
        let sel = gate.gate_selector();
        if sel & !3 == 0 {
            return Err(Fault::gp(ext));
        }
        let desc = self
            .read_descriptor(sel)?
            .ok_or(Fault::gp((sel as u32 & 0xFFFC) | ext))?;
        if !desc.is_code() || desc.dpl() > cpl {
            return Err(Fault::gp((sel as u32 & 0xFFFC) | ext));
        }
        if !desc.present() {
            return Err(Fault::np((sel as u32 & 0xFFFC) | ext));
        }
        let gate32 = gtype & 8 != 0;
        let trap = gtype & 1 != 0;
        let offset = gate.gate_offset_sized();
        let vm86 = self.cpu.vm86();
        let mut old_eflags = self.cpu.eflags;
        // A raw-mode substrate's direct system call: the guest's IF is the
        // virtual-interrupt gate's (crate::substrate).
        let gate = self.substrate.as_ref().map(|h| h.gate as usize);
        if let (Some(at), Some(mon)) = (gate, self.mem.monitor()) {
            old_eflags = old_eflags & !IF | ((mon[at] & crate::substrate::GATE_IF) as u32) << 8;
        }
        let old_cs = self.cpu.seg[SegReg::Cs as usize].selector as u32;

        let inner = !desc.conforming() && desc.dpl() < cpl;
        if vm86 && (!inner || desc.dpl() != 0) {
            // From virtual-8086 mode the handler must be a ring-0,
            // non-conforming segment (SDM Vol. 3A 20.3.1.1).
            return Err(Fault::gp((sel as u32 & 0xFFFC) | ext));
        }
        let new_cpl = if inner { desc.dpl() } else { cpl };
        let new_cs = desc.to_segment((sel & !3) | new_cpl as u16);
        if offset > new_cs.limit {
            return Err(Fault::gp(ext));
        }

        let mut frame: Vec<u32> = Vec::with_capacity(10);
        let (new_ss, new_esp) = if inner {
            let (ss_sel, esp) = self.inner_stack_from_tss(new_cpl, ext)?;
            let ss_desc = self
                .read_descriptor(ss_sel)?
                .ok_or(Fault::ts((ss_sel as u32 & 0xFFFC) | ext))?;
            if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !ss_desc.writable_data()
            {
                return Err(Fault::ts((ss_sel as u32 & 0xFFFC) | ext));
            }
            if !ss_desc.present() {
                return Err(Fault::ss((ss_sel as u32 & 0xFFFC) | ext));
            }
            if vm86 {
                for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                    frame.push(self.cpu.seg[s as usize].selector as u32);
                }
            }
            frame.push(self.cpu.seg[SegReg::Ss as usize].selector as u32);
            frame.push(self.cpu.gpr[reg::ESP]);
            let ss_desc = self.set_accessed(ss_sel, ss_desc)?;
            (ss_desc.to_segment(ss_sel), esp)
        } else {
            (self.cpu.seg[SegReg::Ss as usize], self.cpu.gpr[reg::ESP])
        };
        frame.push(old_eflags | pushed_rf(&ev));
        frame.push(old_cs);
        frame.push(return_eip);
        if let Some(code) = ev.error_code {
            frame.push(code);
        }
        let stack_fault = if inner {
            Fault::ss((new_ss.selector as u32 & 0xFFFC) | ext)
        } else {
            Fault::ss(ext)
        };
        let new_sp = self
            .write_stack_frame(&new_ss, new_esp, &frame, gate32, new_cpl == 3)
            .map_err(|f| {
                if f.vector == vector::SS {
                    stack_fault
                } else {
                    f
                }
            })?;
        self.set_accessed(sel, desc)?;

        // Commit: nothing below can fault.
        if inner {
            self.cpu.seg[SegReg::Ss as usize] = new_ss;
            if vm86 {
                for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
                    self.cpu.seg[s as usize] = null_segment(0);
                }
            }
        }
        if new_ss.is_big() {
            self.cpu.gpr[reg::ESP] = new_sp;
        } else {
            self.cpu.set_reg16(reg::ESP, new_sp as u16);
        }
        self.cpu.seg[SegReg::Cs as usize] = new_cs;
        self.cpu.eip = offset;
        self.cpu.eflags &= !(TF | NT | VM | RF);
        if !trap {
            match gate {
                Some(at) => {
                    if let Some(mon) = self.mem.monitor_mut() {
                        mon[at] &= !crate::substrate::GATE_IF;
                    }
                }
                None => self.cpu.eflags &= !IF,
            }
        }
        Ok(())
    }

    /// SS:ESP for privilege level `dpl` from the current TSS (SDM Vol. 3A
    /// 7.2.1, figures 7-2 and 7-11).
    pub fn inner_stack_from_tss(&mut self, dpl: u8, ext: u32) -> CpuResult<(u16, u32)> {
        let tr = self.cpu.tr;
        let tss_fault = Fault::ts((tr.selector as u32 & 0xFFFC) | ext);
        let tss32 = tr.attr & 0xF == system_type::TSS32_BUSY as u32
            || tr.attr & 0xF == system_type::TSS32_AVAIL as u32;
        if tss32 {
            let off = 8 * dpl as u32 + 4;
            if off + 7 > tr.limit {
                return Err(tss_fault);
            }
            let esp = self.read_lin::<u32>(tr.base.wrapping_add(off), false)?;
            let ss = self.read_lin::<u16>(tr.base.wrapping_add(off + 4), false)?;
            Ok((ss, esp))
        } else {
            let off = 4 * dpl as u32 + 2;
            if off + 3 > tr.limit {
                return Err(tss_fault);
            }
            let sp = self.read_lin::<u16>(tr.base.wrapping_add(off), false)?;
            let ss = self.read_lin::<u16>(tr.base.wrapping_add(off + 2), false)?;
            Ok((ss, sp as u32))
        }
    }

    /// Push `values` (first pushed first) onto the stack described by `ss`
    /// with stack pointer `esp`, checking the whole frame before writing any
    /// of it. Returns the new stack pointer.
    pub fn write_stack_frame(
        &mut self,
        ss: &Segment,
        esp: u32,
        values: &[u32],
        size32: bool,
        user: bool,
    ) -> CpuResult<u32> {
        let size = if size32 { 4 } else { 2 };
        let big = ss.is_big();
        let wrap = |v: u32| if big { v } else { v & 0xFFFF };
        let mut addrs = Vec::with_capacity(values.len());
        let mut sp = esp;
        for _ in values {
            sp = wrap(sp.wrapping_sub(size));
            let lin = check_segment_access(ss, SegReg::Ss, sp, size, true, true)?;
            self.probe_write(lin, size, user)?;
            addrs.push(lin);
        }
        for (lin, &v) in addrs.iter().zip(values) {
            if size32 {
                self.write_lin::<u32>(*lin, v, user)?;
            } else {
                self.write_lin::<u16>(*lin, v as u16, user)?;
            }
        }
        Ok(sp)
    }

    fn push_error_code_after_task_switch(&mut self, code: u32) -> CpuResult<()> {
        let size = if self.cpu.tr.attr & 8 != 0 { 4 } else { 2 };
        self.push(code, size)
    }
}
