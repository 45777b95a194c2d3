//! The machine (VirtualBox's Main API in miniature): CPU state, memory, TLB,
//! buses and clock in one value that every engine and front-end works on.

use std::sync::Arc;

use crate::bus::{Bus, Device, StopRequest};
use crate::cpu::boundary::PendingWork;
use crate::cpu::events::{EventExit, EventPolicy};
use crate::cpu::CpuState;
use crate::engine::{Budget, Engine, EngineError, Exit, StopReason};
use crate::memory::{DeviceId, Memory, MemoryError, PhysRange};
use crate::mmu::Tlb;
use crate::reset::Restart;
use crate::time::Clock;

/// One IA-32 PC.
pub struct Machine {
    pub cpu: CpuState,
    /// Guest memory. Private: the TLB holds host pointers into it, so it
    /// is changed only through `Machine`'s methods, which keep the two
    /// consistent (`mem()` reads it).
    pub(crate) mem: Memory,
    /// The software TLB, shared by the software engines (`abi::tlb`).
    pub(crate) tlb: Tlb,
    pub bus: Bus,
    pub clock: Clock,
    /// Data breakpoints armed in DR7, derived from the debug registers by
    /// [`Machine::sync_debug_registers`].
    pub watch: DataWatch,
    /// Event redirection (DESIGN.md section 3, `EventPolicy::Exit`): the
    /// events, by source and vector, that `deliver_event` returns to the
    /// caller (as `Exit::Event`) instead of delivering them. The debugger,
    /// the conformance runner and the raw-mode monitor use this.
    pub event_policy: EventPolicy,
    /// The pending-work word (`cpu::boundary`), shared with the bus and
    /// memory, which raise it.
    pending: Arc<PendingWork>,
    /// When set, every guest-physical write is recorded here (address,
    /// size, value) — the lockstep comparator compares what two engines
    /// wrote. While it is on, the TLB holds no write entries, so no store
    /// can bypass the log.
    pub write_log: Option<Vec<(u32, u32, u64)>>,
    /// The debugger's execution breakpoints: sorted linear addresses.
    /// Engines that honour them (`Engine::honours_breakpoints`) stop `run`
    /// with `Exit::Breakpoint` before executing an instruction there; empty
    /// unless a debugger set them.
    pub breakpoints: Vec<u32>,
    /// How a reset boots the machine again (`reset`); set by the loaders.
    pub(crate) restart: Restart,
    /// A reset request or a triple fault stops the machine instead of
    /// rebooting it (`machine.no_reboot`, `--no-reboot`).
    pub no_reboot: bool,
    /// Reboots so far (`Machine::reset`).
    pub reboots: u64,
    /// Who the CPU says it is (CPUID, and EDX after RESET); `[cpu]` in
    /// the configuration.
    pub cpu_identity: crate::cpu::cpuid::CpuIdentity,
    /// ACPI tables the Multiboot loader writes into RAM (the BIOS gets
    /// the same bytes through fw_cfg); set by whoever builds the PC.
    pub acpi_tables: Option<AcpiTables>,
    /// The linear base of the hypervisor area a raw-mode engine overlays
    /// while it runs (`Machine::map_hypervisor_area`); None otherwise.
    pub(crate) hypervisor_area: Option<u32>,
    /// The TLB may hold a translation of the hypervisor area.
    pub(crate) area_in_tlb: bool,
    /// A raw-mode monitor's hooks on the substrate CPU while it runs guest
    /// code (`substrate`); None otherwise.
    pub substrate: Option<Box<crate::substrate::SubstrateHooks>>,
}

/// ACPI tables laid out for one physical address (`Machine::acpi_tables`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Where they go; the RSDP is first.
    pub at: u32,
    pub bytes: Arc<[u8]>,
    /// The bytes from `at` the memory map reserves for them.
    pub reserve: u32,
}

/// DR0-DR3 data breakpoints (SDM Vol. 3A 17.2.4-17.2.5). While any is armed
/// the TLB is not filled, so every access takes the slow path, where it is
/// compared with the breakpoint ranges; hits are collected here until the
/// instruction retires and the engine raises the #DB trap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataWatch {
    pub active: bool,
    /// B0-B3 of the breakpoints hit by the current instruction.
    pub hits: u32,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Stopped(StopReason),
    /// The instruction limit was reached first.
    InstructionLimit,
    /// An event the caller redirects (`event_policy`) was raised.
    Event(EventExit),
}

impl Machine {
    /// A machine with `mib` MiB of RAM, no ROM, no devices, in the reset state.
    pub fn with_ram_mib(mib: u32) -> Result<Machine, MemoryError> {
        let pending = Arc::new(PendingWork::default());
        let mut mem = Memory::new(mib)?;
        mem.share_pending_work(pending.clone());
        let mut bus = Bus::new();
        bus.share_pending_work(pending.clone());
        Ok(Machine {
            cpu: CpuState::at_reset(),
            mem,
            tlb: Tlb::default(),
            bus,
            clock: Clock::default(),
            watch: DataWatch::default(),
            event_policy: EventPolicy::default(),
            pending,
            write_log: None,
            breakpoints: Vec::new(),
            restart: Restart::default(),
            no_reboot: false,
            reboots: 0,
            cpu_identity: Default::default(),
            acpi_tables: None,
            hypervisor_area: None,
            area_in_tlb: false,
            substrate: None,
        })
    }

    /// Put the CPU in its RESET state (SDM Vol. 3A 9.1.1), with the
    /// configured processor signature in EDX.
    pub fn reset_cpu(&mut self) {
        self.cpu = CpuState::at_reset();
        self.cpu.gpr[crate::cpu::reg::EDX] = self.cpu_identity.signature();
    }

    /// Guest memory, for reading. Changes go through `Machine` (writes to
    /// RAM, mappings, A20) so that the TLB stays consistent.
    #[inline(always)]
    pub fn mem(&self) -> &Memory {
        &self.mem
    }

    /// The software TLB, for its statistics.
    pub fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    /// Forget every cached translation (a MOV to CR3 does this; so does
    /// anything that changes the physical map).
    pub fn flush_tlb(&mut self) {
        self.tlb.flush();
    }

    /// INVLPG: forget the translation of the page holding `lin`.
    pub fn invalidate_tlb_page(&mut self, lin: u32) {
        self.tlb.invalidate_page(lin);
    }

    /// Copy `bytes` into RAM at `addr` (a loader, a device's DMA, the
    /// debugger, a restored snapshot): code made from the pages written is
    /// invalidated as for any guest store.
    pub fn write_ram(&mut self, addr: u32, bytes: &[u8]) -> Result<(), MemoryError> {
        self.mem.write_ram(addr, bytes)
    }

    /// Map a ROM image ending at `end` (see `Memory::map_rom`). The
    /// physical map changed: the TLB is flushed.
    pub fn map_rom(&mut self, image: &[u8], end: u64) -> Result<(), MemoryError> {
        let r = self.mem.map_rom(image, end);
        self.tlb.flush();
        r
    }

    /// Route physical `start..start + len` to `device` (MMIO). The
    /// physical map changed: the TLB is flushed.
    pub fn map_mmio(&mut self, start: u32, len: u32, device: DeviceId) {
        self.mem.map_mmio(start, len, device);
        self.tlb.flush();
    }

    /// RAM pages `pages` may have been written by something that does not
    /// store through core (KVM's vCPU): code made from any of them is
    /// invalidated, through the code-write log, as for a guest store.
    pub fn note_ram_written(&mut self, pages: PhysRange) {
        self.mem.note_pages_written(pages);
    }

    /// An engine takes over the machine, or hands it back, at an
    /// instruction boundary (DESIGN.md section 4): the TLB may cache
    /// translations another engine's guest code has since changed, so it
    /// is flushed, and the next boundary looks at everything.
    pub fn handover(&mut self) {
        self.tlb.flush();
        self.pending().raise(crate::cpu::boundary::work::HOST);
    }

    /// A handle on the pending-work word that does not borrow the machine
    /// (an engine's loop tests it while a handler has the machine).
    pub fn pending_work(&self) -> Arc<PendingWork> {
        self.pending.clone()
    }

    /// The pending-work word: raise a bit of `cpu::boundary::work` to make
    /// the next instruction boundary look.
    #[inline(always)]
    pub fn pending(&self) -> &PendingWork {
        &self.pending
    }

    /// Re-derive the armed data breakpoints from DR7 (after a write to a
    /// debug register, or when state was loaded from outside).
    pub fn sync_debug_registers(&mut self) {
        let dr7 = self.cpu.dr[7];
        let active = (0..4).any(|n| dr7 & (3 << (2 * n)) != 0 && (dr7 >> (16 + 4 * n)) & 1 == 1);
        if active != self.watch.active {
            self.tlb.flush();
        }
        self.watch.active = active;
    }

    /// Compare a data access with the armed breakpoints. RW = 01 breaks on
    /// writes, RW = 11 on reads and writes; LEN 00/01/11 cover 1/2/4 bytes
    /// (10 is undefined on P6 and treated as 4).
    pub fn check_data_breakpoints(&mut self, lin: u32, size: u32, write: bool) {
        let dr7 = self.cpu.dr[7];
        for n in 0..4 {
            let enabled = dr7 & (3 << (2 * n)) != 0;
            let rw = (dr7 >> (16 + 4 * n)) & 3;
            if !enabled || !(rw == 3 || (rw == 1 && write)) {
                continue;
            }
            let len = match (dr7 >> (18 + 4 * n)) & 3 {
                0 => 1,
                1 => 2,
                _ => 4,
            };
            let start = self.cpu.dr[n] & !(len - 1);
            let overlap = lin.wrapping_sub(start) < len || start.wrapping_sub(lin) < size;
            if overlap {
                self.watch.hits |= 1 << n;
            }
        }
    }

    /// Plug a device in and route ports `first..=last` to it.
    pub fn add_port_device(&mut self, device: Box<dyn Device>, ports: &[(u16, u16)]) -> DeviceId {
        let id = self.bus.add(device);
        for &(first, last) in ports {
            self.bus.claim_ports(id, first, last);
        }
        id
    }

    /// The A20 gate (the TLB caches translations made under the old mask).
    pub fn set_a20(&mut self, enabled: bool) {
        if self.mem.a20_enabled() != enabled {
            self.mem.set_a20(enabled);
            self.tlb.flush();
        }
    }

    /// Carry out an A20 change a device asked for (8042 output port or
    /// port 0x92). Engines call this after port I/O.
    pub fn apply_a20_signal(&mut self) {
        if let Some(on) = self.bus.signals.a20.take() {
            self.set_a20(on);
        }
    }

    /// Start or stop recording physical writes in `write_log`.
    pub fn set_write_log(&mut self, on: bool) {
        if on != self.write_log.is_some() {
            self.write_log = on.then(Vec::new);
            // Cached write entries would let stores bypass the log.
            self.tlb.flush();
        }
    }

    /// The IA32_TIME_STAMP_COUNTER value now.
    pub fn tsc(&self) -> u64 {
        self.clock.icount.wrapping_add(self.cpu.msr.tsc_offset)
    }

    /// A stop a device requested during the last instruction, if any.
    pub fn take_stop_request(&mut self) -> Option<StopReason> {
        self.bus.signals.stop.take().map(|r| match r {
            StopRequest::DebugExit(c) => StopReason::DebugExit(c),
            StopRequest::Reset => StopReason::ResetRequested,
            StopRequest::PowerOff => StopReason::PowerOff,
        })
    }

    /// The CPU halted with interrupts enabled: jump virtual time to the
    /// next device deadline and run the timers due then (DESIGN.md section
    /// 3). Returns false when no device has anything scheduled, so nothing
    /// can ever wake the CPU.
    pub fn skip_to_next_deadline(&mut self) -> bool {
        if self.cpu.interrupts_enabled() && self.bus.interrupt_pending() {
            // Already something to take: no time needs to pass.
            return true;
        }
        let deadline = self.bus.next_deadline();
        if deadline == u64::MAX || !self.bus.has_interrupt_controller() {
            return false;
        }
        let now = self.clock.now_ns();
        if deadline > now {
            self.clock.idle_ns += deadline - now;
        }
        self.bus.run_timers(self.clock.now_ns());
        true
    }

    /// [`Machine::settle_stop`] for a run loop that reports engine errors.
    fn settle_stop_for_engine(
        &mut self,
        reason: StopReason,
    ) -> Result<Option<StopReason>, EngineError> {
        self.settle_stop(reason)
            .map_err(|e| EngineError::Reboot(e.to_string()))
    }

    /// Run `engine` until the machine stops or `max_insns` instructions have
    /// retired in this call (a reset reboots the machine and the run goes
    /// on, `reset`).
    pub fn run_until_stopped(
        &mut self,
        engine: &mut dyn Engine,
        max_insns: Option<u64>,
    ) -> Result<RunOutcome, EngineError> {
        const SLICE: u64 = 1 << 22;
        // Budget handed out so far: instructions retired, plus events and
        // paused REP slices, which spend budget without retiring.
        let mut given = 0u64;
        loop {
            let left = match max_insns {
                Some(max) => {
                    if given >= max {
                        return Ok(RunOutcome::InstructionLimit);
                    }
                    (max - given).min(SLICE)
                }
                None => SLICE,
            };
            let before = self.clock.icount;
            let exit = engine.run(self, Budget { instructions: left })?;
            given += exit.budget_used(left, self.clock.icount - before);
            match exit {
                // This loop has no host input to give: the guest keeps waiting.
                Exit::BudgetSpent | Exit::WaitingForInput => {}
                // Breakpoints are the debugger's: a plain run goes past them.
                Exit::Breakpoint => {
                    if let Exit::Stopped(reason) = engine.step(self)? {
                        if let Some(reason) = self.settle_stop_for_engine(reason)? {
                            return Ok(RunOutcome::Stopped(reason));
                        }
                    }
                }
                Exit::Stopped(reason) => {
                    if let Some(reason) = self.settle_stop_for_engine(reason)? {
                        return Ok(RunOutcome::Stopped(reason));
                    }
                }
                Exit::Event(e) => return Ok(RunOutcome::Event(e)),
                Exit::Halted => {
                    if !self.skip_to_next_deadline() {
                        return Ok(RunOutcome::Stopped(StopReason::IdleForever {
                            cs: self.cpu.seg[1].selector,
                            eip: self.cpu.eip,
                        }));
                    }
                }
            }
        }
    }
}
