//! One VM with one vCPU, and the loop that enters it: VM entry, the exit
//! it comes back with, and what ringside does about each exit.
//!
//! Exits that belong to the machine go to the same places as under every
//! other engine: port I/O to `Bus::io_read/io_write`, MMIO (and writes to
//! ROM, and reads of unassigned addresses) to `Machine::phys_read/
//! phys_write`. Interrupts come from the userspace PIC/LAPIC: injected with
//! KVM_INTERRUPT when the vCPU can take one, otherwise an interrupt-window
//! exit is requested.

use std::os::fd::AsRawFd;
use std::time::Instant;

use iced_x86::Mnemonic;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_guest_debug, kvm_interrupt, kvm_msr_entry, kvm_run, CpuId, Msrs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_MP_STATE_HALTED,
};
use kvm_ioctls::{Cap, VcpuExit, VcpuFd, VmFd};
use ringside_core::cpu::boundary::{Acceptance, BoundaryWork};
use ringside_core::cpu::flags::{IF, TF};
use ringside_core::cpu::{Msrs as CpuMsrs, SegReg};
use ringside_core::memory::PAGE_SIZE;
use ringside_core::{EngineError, Exit, Machine, StopReason};

use crate::kick::Kicker;
use crate::registers::{cpu_to_kvm, kvm_to_cpu, VcpuRegisters, MSR_INDICES};
use crate::slots::{plan_slots, register_slots, RomCopy};
use crate::step_catch::{self, HandlerBreakpoints};
use crate::{Counters, ExitReason};

pub(crate) fn unavailable(what: impl Into<String>) -> EngineError {
    EngineError::Unavailable {
        engine: "kvm",
        what: what.into(),
    }
}

/// KVM_INTERRUPT = _IOW(KVMIO, 0x86, struct kvm_interrupt): kvm-ioctls
/// has no wrapper for it because it is only meaningful without an
/// in-kernel interrupt controller, which is exactly ringside's setup.
const KVM_INTERRUPT: libc::c_ulong = (1 << 30) | (4 << 16) | (0xAE << 8) | 0x86;

/// Where the TSS that VMX needs to run real mode without "unrestricted
/// guest" lives (KVM_SET_TSS_ADDR): three pages no ringside machine uses.
const VMX_TSS_ADDR: usize = 0xFFFB_D000;

/// A single step that sees this many exits without the debug exit is
/// reported as a host failure instead of looping.
const STEP_ENTRY_LIMIT: u64 = 1 << 22;

/// How the loop runs the vCPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Until an exit the caller must see, or after this many KVM_RUNs.
    Run { entries: u64 },
    /// One instruction, with guest single-stepping.
    Step,
}

/// Identifies the memory a VM's slots were built from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct MemoryIdentity {
    ram_host: usize,
    ram_size: u32,
    roms: usize,
}

impl MemoryIdentity {
    pub(crate) fn of(m: &Machine) -> MemoryIdentity {
        let roms = (0..)
            .take_while(|&i| m.mem().rom_bytes(i, 0).is_some())
            .count();
        MemoryIdentity {
            ram_host: m.mem().ram_slice().as_ptr() as usize,
            ram_size: m.mem().ram_size(),
            roms,
        }
    }
}

pub(crate) struct Vm {
    // Field order is drop order: the vCPU and VM go before the ROM copies
    // their slots point into.
    vcpu: VcpuFd,
    _vm: VmFd,
    _roms: RomCopy,
    pub(crate) identity: MemoryIdentity,
    kicker: Kicker,
    kicker_tid: libc::pid_t,
    /// What KVM_SET_GUEST_DEBUG last set: single-step, and the handler
    /// breakpoints of a step (see [`step_catch`]).
    debug: (bool, HandlerBreakpoints),
    /// The last exit and when it came, until its handling is counted.
    last_exit: Option<(ExitReason, Instant)>,
    /// The handler breakpoint a step stopped at, if it did.
    caught: Option<step_catch::Handler>,
    /// The last exit was port I/O or MMIO that KVM completes on the next
    /// KVM_RUN: until then RIP still points at the instruction.
    io_pending: bool,
}

/// The exit, copied out of kvm_run so the machine can be used while
/// handling it.
enum ExitKind {
    IoIn,
    IoOut,
    MmioRead {
        addr: u64,
        len: usize,
    },
    MmioWrite {
        addr: u64,
        data: [u8; 8],
        len: usize,
    },
    Hlt,
    IrqWindowOpen,
    Kicked,
    /// A debug exit, with the DR6 it reported.
    Debug {
        dr6: u64,
    },
    Shutdown,
    FailEntry(u64),
    InternalError,
    Other(String),
}

impl ExitKind {
    fn reason(&self) -> ExitReason {
        match self {
            ExitKind::IoIn | ExitKind::IoOut => ExitReason::Io,
            ExitKind::MmioRead { .. } | ExitKind::MmioWrite { .. } => ExitReason::Mmio,
            ExitKind::Hlt => ExitReason::Hlt,
            ExitKind::IrqWindowOpen => ExitReason::InterruptWindow,
            ExitKind::Kicked => ExitReason::Kick,
            ExitKind::Debug { .. } => ExitReason::Debug,
            ExitKind::Shutdown => ExitReason::Shutdown,
            ExitKind::FailEntry(_) | ExitKind::InternalError | ExitKind::Other(_) => {
                ExitReason::Failure
            }
        }
    }
}

/// The CPUID table ringside's CPU answers (`Machine::cpuid`): every basic
/// and extended leaf, and leaf 4 per sub-leaf.
fn cpuid_entries(m: &Machine) -> Vec<kvm_cpuid_entry2> {
    let entry = |function: u32, index: u32, flags: u32| {
        let r = m.cpuid(function, index);
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
            ..Default::default()
        }
    };
    let max_basic = m.cpuid(0, 0).eax;
    let max_extended = m.cpuid(0x8000_0000, 0).eax;
    let mut entries = Vec::new();
    for leaf in 0..=max_basic {
        if leaf == 4 {
            for sub in 0..4 {
                entries.push(entry(4, sub, KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
            }
        } else {
            entries.push(entry(leaf, 0, 0));
        }
    }
    entries.extend((0x8000_0000..=max_extended).map(|leaf| entry(leaf, 0, 0)));
    entries
}

impl Vm {
    pub(crate) fn new(kvm: &kvm_ioctls::Kvm, m: &Machine) -> Result<Vm, EngineError> {
        let vm = kvm
            .create_vm()
            .map_err(|e| unavailable(format!("cannot create a VM: {e}")))?;
        // Only VMX without unrestricted guest needs it; other hosts refuse
        // or ignore it, and either is fine.
        let _ = vm.set_tss_address(VMX_TSS_ADDR);
        let plan = plan_slots(m.mem());
        let max_slots = kvm.get_nr_memslots();
        if plan.len() > max_slots {
            return Err(unavailable(format!(
                "the memory layout needs {} slots, this host allows {max_slots}",
                plan.len()
            )));
        }
        let readonly = vm.check_extension(Cap::ReadonlyMem);
        let roms = register_slots(&vm, m.mem(), &plan, readonly).map_err(unavailable)?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| unavailable(format!("cannot create a vCPU: {e}")))?;
        // The CPU ringside models (CPUID as the interpreter answers it), so
        // a guest sees the same processor under every engine.
        let cpuid = CpuId::from_entries(&cpuid_entries(m))
            .map_err(|e| unavailable(format!("building CPUID: {e:?}")))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| unavailable(format!("KVM_SET_CPUID2: {e}")))?;
        let kicker =
            Kicker::new().map_err(|e| unavailable(format!("cannot create a host timer: {e}")))?;
        Ok(Vm {
            vcpu,
            _vm: vm,
            _roms: roms,
            identity: MemoryIdentity::of(m),
            kicker,
            // SAFETY: gettid has no preconditions.
            kicker_tid: unsafe { libc::gettid() },
            debug: (false, [None; 4]),
            caught: None,
            last_exit: None,
            io_pending: false,
        })
    }

    /// Load `m.cpu` into the vCPU.
    fn load_state(&mut self, m: &Machine) -> Result<(), EngineError> {
        let k = cpu_to_kvm(&m.cpu, m.tsc());
        let v = &self.vcpu;
        let fail = |what: &str, e: kvm_ioctls::Error| unavailable(format!("{what}: {e}"));
        v.set_sregs(&k.sregs)
            .map_err(|e| fail("KVM_SET_SREGS", e))?;
        v.set_regs(&k.regs).map_err(|e| fail("KVM_SET_REGS", e))?;
        v.set_debug_regs(&k.debugregs)
            .map_err(|e| fail("KVM_SET_DEBUGREGS", e))?;
        let entries: Vec<kvm_msr_entry> = k
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|e| unavailable(format!("building the MSR list: {e:?}")))?;
        let n = v.set_msrs(&msrs).map_err(|e| fail("KVM_SET_MSRS", e))?;
        if n != entries.len() {
            return Err(unavailable(format!(
                "KVM_SET_MSRS accepted {n} of {} MSRs (index {:#x} refused)",
                entries.len(),
                entries[n].index
            )));
        }
        v.set_vcpu_events(&k.events)
            .map_err(|e| fail("KVM_SET_VCPU_EVENTS", e))?;
        Ok(())
    }

    /// Let KVM finish an instruction whose I/O or MMIO exit was handled,
    /// without running guest code: KVM_RUN with immediate_exit set
    /// completes the pending access and returns EINTR, or comes back with
    /// the instruction's next access (a read-modify-write to MMIO, a REP
    /// string I/O), which is handled in turn.
    fn complete_pending_io(&mut self, m: &mut Machine) -> Result<(), EngineError> {
        while self.io_pending {
            self.io_pending = false;
            self.vcpu.set_kvm_immediate_exit(1);
            let r = self.enter_guest();
            self.vcpu.set_kvm_immediate_exit(0);
            match r? {
                // Single-stepping: completing the access ends the
                // instruction with its debug trap.
                ExitKind::Kicked | ExitKind::Debug { .. } => {}
                ExitKind::IoIn | ExitKind::IoOut => self.port_io(m),
                ExitKind::MmioRead { addr, len } => self.mmio_read(m, addr, len),
                ExitKind::MmioWrite { addr, data, len } => self.mmio_write(m, addr, &data[..len]),
                _ => {
                    return Err(unavailable(
                        "completing guest I/O: KVM ran guest code despite immediate_exit",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Point the paging guard at the #GP and #DF handlers of the IDT the
    /// vCPU has now, if it changed.
    fn rearm_paging_guard(&mut self, m: &mut Machine) -> Result<(), EngineError> {
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| unavailable(format!("KVM_GET_SREGS: {e}")))?;
        let idtr = (sregs.idt.base as u32, sregs.idt.limit);
        if idtr == (m.cpu.idtr.base, m.cpu.idtr.limit) {
            return Ok(());
        }
        m.cpu.idtr.base = idtr.0;
        m.cpu.idtr.limit = idtr.1;
        let breakpoints = step_catch::paging_guard(m);
        self.set_guest_debug(false, breakpoints)
    }

    /// Read the vCPU back into `m.cpu`.
    fn store_state(&mut self, m: &mut Machine, halted: bool) -> Result<(), EngineError> {
        self.complete_pending_io(m)?;
        let v = &self.vcpu;
        let fail = |what: &str, e: kvm_ioctls::Error| unavailable(format!("{what}: {e}"));
        let mut msrs = Msrs::from_entries(&MSR_INDICES.map(|index| kvm_msr_entry {
            index,
            ..Default::default()
        }))
        .map_err(|e| unavailable(format!("building the MSR list: {e:?}")))?;
        let n = v.get_msrs(&mut msrs).map_err(|e| fail("KVM_GET_MSRS", e))?;
        if n != MSR_INDICES.len() {
            return Err(unavailable(format!(
                "KVM_GET_MSRS returned {n} of {} MSRs",
                MSR_INDICES.len()
            )));
        }
        let mut msr_values = [(0u32, 0u64); 4];
        for (slot, e) in msr_values.iter_mut().zip(msrs.as_slice()) {
            *slot = (e.index, e.data);
        }
        let mut k = VcpuRegisters {
            regs: v.get_regs().map_err(|e| fail("KVM_GET_REGS", e))?,
            sregs: v.get_sregs().map_err(|e| fail("KVM_GET_SREGS", e))?,
            debugregs: v
                .get_debug_regs()
                .map_err(|e| fail("KVM_GET_DEBUGREGS", e))?,
            msrs: msr_values,
            events: v
                .get_vcpu_events()
                .map_err(|e| fail("KVM_GET_VCPU_EVENTS", e))?,
            mp_state: v
                .get_mp_state()
                .map_err(|e| fail("KVM_GET_MP_STATE", e))?
                .mp_state,
        };
        // Without an in-kernel interrupt controller KVM leaves HLT to user
        // space and its mp_state stays RUNNABLE: the engine tracks the halt.
        if halted {
            k.mp_state = KVM_MP_STATE_HALTED;
        }
        let model_msrs = m.cpu.msr;
        m.cpu = kvm_to_cpu(&k, m.clock.icount);
        m.cpu.msr = CpuMsrs {
            tsc_offset: m.cpu.msr.tsc_offset,
            sysenter_cs: m.cpu.msr.sysenter_cs,
            sysenter_esp: m.cpu.msr.sysenter_esp,
            sysenter_eip: m.cpu.msr.sysenter_eip,
            apic_base: m.cpu.msr.apic_base,
            ..model_msrs
        };
        m.sync_debug_registers();
        Ok(())
    }

    /// Single-step on or off, with execute breakpoints on `breakpoints`
    /// (guest debug overrides the guest's own DR0-DR7 while it is on).
    fn set_guest_debug(
        &mut self,
        step: bool,
        breakpoints: HandlerBreakpoints,
    ) -> Result<(), EngineError> {
        if self.debug == (step, breakpoints) {
            return Ok(());
        }
        let mut dbg = kvm_guest_debug::default();
        if step {
            dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        let mut dr7 = 0u64;
        for (i, h) in breakpoints.iter().enumerate() {
            if let Some(h) = h {
                dbg.arch.debugreg[i] = h.address as u64;
                // Ln set, R/W = 00 (execute), LEN = 00 (SDM Vol. 3A 17.2.4).
                dr7 |= 1 << (2 * i);
            }
        }
        if dr7 != 0 {
            dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            dbg.arch.debugreg[7] = dr7;
        }
        self.vcpu
            .set_guest_debug(&dbg)
            .map_err(|e| unavailable(format!("KVM_SET_GUEST_DEBUG: {e}")))?;
        self.debug = (step, breakpoints);
        Ok(())
    }

    fn inject_interrupt(&self, vector: u8) -> Result<(), EngineError> {
        let irq = kvm_interrupt { irq: vector as u32 };
        // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the pointer,
        // which is valid for the call; the fd is this VM's vCPU.
        let r = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
        if r != 0 {
            return Err(unavailable(format!(
                "KVM_INTERRUPT (vector {vector:#x}): {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn kvm_run(&mut self) -> &mut kvm_run {
        self.vcpu.get_kvm_run()
    }

    /// Enter the guest once and copy out what it exited with.
    fn enter_guest(&mut self) -> Result<ExitKind, EngineError> {
        Ok(match self.vcpu.run() {
            Ok(VcpuExit::IoIn(..)) => ExitKind::IoIn,
            Ok(VcpuExit::IoOut(..)) => ExitKind::IoOut,
            Ok(VcpuExit::MmioRead(addr, data)) => ExitKind::MmioRead {
                addr,
                len: data.len().min(8),
            },
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let len = data.len().min(8);
                let mut d = [0u8; 8];
                d[..len].copy_from_slice(&data[..len]);
                ExitKind::MmioWrite { addr, data: d, len }
            }
            Ok(VcpuExit::Hlt) => ExitKind::Hlt,
            Ok(VcpuExit::IrqWindowOpen) => ExitKind::IrqWindowOpen,
            Ok(VcpuExit::Intr) => ExitKind::Kicked,
            Ok(VcpuExit::Debug(arch)) => ExitKind::Debug { dr6: arch.dr6 },
            Ok(VcpuExit::Shutdown) => ExitKind::Shutdown,
            Ok(VcpuExit::FailEntry(reason, _)) => ExitKind::FailEntry(reason),
            Ok(VcpuExit::InternalError) => ExitKind::InternalError,
            Ok(other) => ExitKind::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => ExitKind::Kicked,
            Err(e) => return Err(unavailable(format!("KVM_RUN failed: {e}"))),
        })
    }

    /// Port I/O: every element of a (possibly REP string) IN or OUT goes to
    /// the bus, in order.
    fn port_io(&mut self, m: &mut Machine) {
        let run = self.kvm_run();
        // SAFETY: the exit reason was KVM_EXIT_IO, so `io` is the live
        // member of the union.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = io.size as usize;
        let len = size * io.count as usize;
        // SAFETY: data_offset points inside the kvm_run mapping, which is
        // at least one page; KVM puts count * size bytes there.
        let data = unsafe {
            let base = run as *mut kvm_run as *mut u8;
            std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len)
        };
        let now = m.clock.now_ns();
        for chunk in data.chunks_mut(size.max(1)) {
            if io.direction == kvm_bindings::KVM_EXIT_IO_OUT as u8 {
                let mut v = [0u8; 4];
                v[..chunk.len()].copy_from_slice(chunk);
                m.bus
                    .io_write(io.port, size as u8, u32::from_le_bytes(v), now);
            } else {
                let v = m.bus.io_read(io.port, size as u8, now).to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
        self.io_pending = true;
    }

    fn mmio_read(&mut self, m: &mut Machine, addr: u64, len: usize) {
        let addr = addr as u32;
        let crosses = (addr & (PAGE_SIZE - 1)) as usize + len > PAGE_SIZE as usize;
        let value = if crosses || !len.is_power_of_two() {
            (0..len as u32).fold(0u64, |acc, i| {
                acc | (m.phys_read(addr.wrapping_add(i), 1) << (8 * i))
            })
        } else {
            m.phys_read(addr, len as u32)
        };
        let run = self.kvm_run();
        // SAFETY: the exit reason was KVM_EXIT_MMIO, so `mmio` is the live
        // member of the union.
        unsafe {
            run.__bindgen_anon_1.mmio.data[..len].copy_from_slice(&value.to_le_bytes()[..len])
        };
        self.io_pending = true;
    }

    fn mmio_write(&mut self, m: &mut Machine, addr: u64, data: &[u8]) {
        let addr = addr as u32;
        let len = data.len();
        let crosses = (addr & (PAGE_SIZE - 1)) as usize + len > PAGE_SIZE as usize;
        if crosses || !len.is_power_of_two() {
            for (i, &b) in data.iter().enumerate() {
                m.phys_write(addr.wrapping_add(i as u32), 1, b as u64);
            }
        } else {
            let mut v = [0u8; 8];
            v[..len].copy_from_slice(data);
            m.phys_write(addr, len as u32, u64::from_le_bytes(v));
        }
        self.io_pending = true;
    }

    /// Why the host refused to go on, for FAIL_ENTRY and INTERNAL_ERROR.
    fn host_failure(&mut self, m: &Machine, what: String) -> EngineError {
        let cpu = &m.cpu;
        let mode = if cpu.paging() {
            "32-bit paging"
        } else if cpu.vm86() {
            "virtual-8086 mode"
        } else if cpu.protected_mode() {
            "unpaged protected mode"
        } else {
            "real mode"
        };
        unavailable(format!(
            "this host's KVM cannot run the guest in {mode} ({what}) at {:04x}:{:08x}, CR0={:#010x} CR4={:#010x}",
            cpu.seg[SegReg::Cs as usize].selector,
            cpu.eip,
            cpu.cr0,
            cpu.cr4
        ))
    }

    /// Run the vCPU on `m` in `mode`. `m.cpu` is exact when this returns
    /// Ok (and as exact as the host lets it be on an error).
    pub(crate) fn enter(
        &mut self,
        m: &mut Machine,
        mode: Mode,
        guard_paging: bool,
        counters: &mut Counters,
    ) -> Result<Exit, EngineError> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if tid != self.kicker_tid {
            self.kicker = Kicker::new()
                .map_err(|e| unavailable(format!("cannot create a host timer: {e}")))?;
            self.kicker_tid = tid;
        }
        let cs = m.cpu.seg[SegReg::Cs as usize].selector;
        if guard_paging
            && mode == Mode::Step
            && m.cpu.protected_mode()
            && !m.cpu.paging()
            && step_catch::mov_cr0_sets_paging(m, cs, m.cpu.eip)
        {
            // The step would end at the #GP handler (or shut down): stop
            // before the host refuses it.
            return Err(unavailable(paging_refused(cs, m.cpu.eip)));
        }
        self.load_state(m)?;
        // What a step must know to end at a handler like the other engines
        // (see step_catch): the instruction, and where its handlers are.
        let before = (
            m.cpu.seg[SegReg::Cs as usize].selector,
            m.cpu.eip,
            m.cpu.eflags & TF != 0,
        );
        let insn = if mode == Mode::Step && !m.cpu.run.halted {
            step_catch::decode_at_eip(m)
        } else {
            None
        };
        let guard = guard_paging && mode != Mode::Step && !m.cpu.paging();
        let breakpoints = if mode == Mode::Step {
            step_catch::breakpoints_for_step(m, insn.as_ref(), None)
        } else if guard {
            step_catch::paging_guard(m)
        } else {
            [None; 4]
        };
        self.set_guest_debug(mode == Mode::Step, breakpoints)?;
        self.caught = None;
        self.kicker.arm();
        let result = self.enter_loop(m, mode, guard, counters);
        self.kicker.disarm();
        if let Some((reason, at)) = self.last_exit.take() {
            counters.handled(reason, at.elapsed().as_nanos() as u64);
        }
        let (exit, halted, mut retired) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = self.store_state(m, m.cpu.run.halted);
                return Err(e);
            }
        };
        self.store_state(m, halted)?;
        if let Some(h) = self.caught.take() {
            // The step stopped at a handler's first instruction: mend the
            // frame, and learn whether the instruction retired (a trap such
            // as INT n) or faulted.
            let next = insn.map(|i| i.next_ip() as u32);
            retired =
                step_catch::fix_delivered_frame(m, h.wide, before.2, before.0, before.1, next);
        }
        if retired {
            m.clock.icount += 1;
            counters.instructions += 1;
            // The TSC read back is the vCPU's; ringside keeps it as icount
            // plus an offset, so the offset absorbs the retirement.
            m.cpu.msr.tsc_offset = m.cpu.msr.tsc_offset.wrapping_sub(1);
        }
        let cs = m.cpu.seg[SegReg::Cs as usize].selector;
        let eip = m.cpu.eip;
        Ok(match exit {
            LoopExit::Plain(e) => e,
            LoopExit::Halt => {
                if m.cpu.interrupts_enabled() {
                    Exit::Halted
                } else {
                    Exit::Stopped(StopReason::DeadHalt { cs, eip })
                }
            }
            // A refused MOV to CR0 whose #GP found no gate (and no #DF
            // gate) shuts the vCPU down with EIP still on the MOV.
            LoopExit::Shutdown
                if guard_paging
                    && !m.cpu.paging()
                    && step_catch::mov_cr0_sets_paging(m, cs, eip) =>
            {
                return Err(unavailable(paging_refused(cs, eip)));
            }
            LoopExit::Shutdown => {
                m.cpu.run.shutdown = true;
                Exit::Stopped(StopReason::TripleFault { cs, eip })
            }
            LoopExit::HostFailure(what) => return Err(self.host_failure(m, what)),
            LoopExit::HostLacks(what) => return Err(unavailable(what)),
        })
    }

    /// The entry loop. Returns how it ended, whether the CPU is halted, and
    /// whether an instruction retired under single-step.
    fn enter_loop(
        &mut self,
        m: &mut Machine,
        mode: Mode,
        guard: bool,
        counters: &mut Counters,
    ) -> Result<(LoopExit, bool, bool), EngineError> {
        let mut halted = m.cpu.run.halted;
        let mut if_flag = m.cpu.eflags & IF != 0;
        let mut ready = !m.cpu.run.interrupt_shadow;
        let mut entries = 0u64;
        // The paging guard is stepping over the #GP handler's first
        // instruction (see the Debug exit below).
        let mut stepping_past = false;
        loop {
            // The instruction boundary's rules are core's: this loop only
            // carries out what they hand it, the KVM way (an NMI or an
            // interrupt injected into the vCPU).
            let mut accept = Acceptance {
                nmi: true,
                interrupt: if_flag && ready,
            };
            loop {
                match m.next_boundary_work(accept) {
                    BoundaryWork::None => break,
                    BoundaryWork::Exit(exit) => {
                        return Ok((LoopExit::Plain(exit), halted, false));
                    }
                    BoundaryWork::Nmi => {
                        if mode == Mode::Step {
                            let bps = step_catch::breakpoints_for_step(m, None, Some(2));
                            self.set_guest_debug(true, bps)?;
                        }
                        self.vcpu
                            .nmi()
                            .map_err(|e| unavailable(format!("KVM_NMI: {e}")))?;
                        halted = false;
                        accept.nmi = false;
                    }
                    BoundaryWork::Interrupt(v) => {
                        if mode == Mode::Step {
                            let bps = step_catch::breakpoints_for_step(m, None, Some(v));
                            self.set_guest_debug(true, bps)?;
                        }
                        self.inject_interrupt(v)?;
                        counters.interrupts_injected += 1;
                        halted = false;
                        accept.interrupt = false;
                    }
                }
            }
            // An interrupt the vCPU cannot take yet: exit as soon as it can.
            let window = !(if_flag && ready) && m.interrupt_waiting();
            self.kvm_run().request_interrupt_window = window as u8;
            if halted {
                return Ok((LoopExit::Halt, true, false));
            }
            match mode {
                Mode::Run { entries: max } if entries >= max.max(1) => {
                    return Ok((LoopExit::Plain(Exit::BudgetSpent), false, false));
                }
                Mode::Step if entries >= STEP_ENTRY_LIMIT => {
                    return Ok((
                        LoopExit::HostFailure(format!(
                            "single-step: no debug exit after {STEP_ENTRY_LIMIT} entries"
                        )),
                        false,
                        false,
                    ));
                }
                _ => {}
            }
            if guard {
                if stepping_past {
                    self.set_guest_debug(true, [None; 4])?;
                } else {
                    // The IDT may have moved since the last entry.
                    let bps = step_catch::paging_guard(m);
                    self.set_guest_debug(false, bps)?;
                }
            }
            if let Some((reason, at)) = self.last_exit.take() {
                counters.handled(reason, at.elapsed().as_nanos() as u64);
            }
            let start = Instant::now();
            self.io_pending = false;
            let exit = self.enter_guest()?;
            let spent = start.elapsed().as_nanos() as u64;
            entries += 1;
            counters.kvm_runs += 1;
            if self.debug.0 {
                counters.single_step_runs += 1;
            } else {
                counters.uncounted_runs += 1;
            }
            counters.host_ns_in_guest += spent;
            counters.exit(exit.reason(), spent);
            self.last_exit = Some((exit.reason(), Instant::now()));
            // KVM runs on host time (DESIGN.md section 3): the host time
            // spent in the guest passes on the virtual clock as idle time,
            // so device timers progress; icount counts only what is known
            // to have retired (single steps).
            if mode != Mode::Step {
                m.clock.idle_ns += spent;
            }
            {
                let run = self.kvm_run();
                if_flag = run.if_flag != 0;
                ready = run.ready_for_interrupt_injection != 0;
            }
            if guard
                && matches!(
                    exit,
                    ExitKind::IoIn
                        | ExitKind::IoOut
                        | ExitKind::MmioRead { .. }
                        | ExitKind::MmioWrite { .. }
                )
            {
                // The guest may have loaded another IDT since the guard was
                // armed (LIDT does not exit): follow its #GP and #DF gates
                // at every exit that comes back here anyway.
                self.rearm_paging_guard(m)?;
            }
            match exit {
                ExitKind::IoIn | ExitKind::IoOut => {
                    self.port_io(m);
                    if mode == Mode::Step {
                        // Completing the access retires the instruction
                        // (some hosts raise no single-step trap for it).
                        self.complete_pending_io(m)?;
                    }
                    m.apply_a20_signal();
                    if !m.mem().a20_enabled() {
                        return Ok((
                            LoopExit::HostFailure(
                                "the guest turned the A20 gate off, which the kvm engine does not model"
                                    .into(),
                            ),
                            false,
                            false,
                        ));
                    }
                    if let Some(stop) = m.take_stop_request() {
                        return Ok((
                            LoopExit::Plain(Exit::Stopped(stop)),
                            false,
                            mode == Mode::Step,
                        ));
                    }
                    if mode == Mode::Step {
                        return Ok((LoopExit::Plain(Exit::BudgetSpent), false, true));
                    }
                }
                ExitKind::MmioRead { addr, len } => {
                    self.mmio_read(m, addr, len);
                    if mode == Mode::Step {
                        self.complete_pending_io(m)?;
                        return Ok((LoopExit::Plain(Exit::BudgetSpent), false, true));
                    }
                }
                ExitKind::MmioWrite { addr, data, len } => {
                    self.mmio_write(m, addr, &data[..len]);
                    if mode == Mode::Step {
                        self.complete_pending_io(m)?;
                        return Ok((LoopExit::Plain(Exit::BudgetSpent), false, true));
                    }
                }
                ExitKind::Hlt => {
                    return Ok((LoopExit::Halt, true, mode == Mode::Step));
                }
                ExitKind::IrqWindowOpen | ExitKind::Kicked => {}
                ExitKind::Debug { dr6 } => {
                    if stepping_past {
                        // The single-step trap after the handler's first
                        // instruction: the guard goes back on.
                        stepping_past = false;
                        continue;
                    }
                    if guard && dr6 & 0xF != 0 {
                        // The paging guard: the guest is at its #GP (or #DF)
                        // handler.
                        let hit = (0..4).find(|&i| dr6 & (1 << i) != 0);
                        let wide = hit.and_then(|i| self.debug.1[i]).is_some_and(|h| h.wide);
                        self.store_state(m, false)?;
                        if let Some((cs, eip)) = step_catch::refused_paging(m, wide) {
                            return Ok((
                                LoopExit::HostLacks(paging_refused(cs, eip)),
                                false,
                                false,
                            ));
                        }
                        // An ordinary #GP. Hosts differ in whether RF lets a
                        // resumed guest past an execute breakpoint (kvm_pvm
                        // ignores it), so step the handler's first
                        // instruction with the guard off, then re-arm it.
                        stepping_past = true;
                        continue;
                    }
                    if mode == Mode::Step {
                        // DR6.B0-B3: a handler breakpoint (step_catch).
                        let hit = (0..4).find(|&i| dr6 & (1 << i) != 0);
                        if let Some(h) = hit.and_then(|i| self.debug.1[i]) {
                            self.caught = Some(h);
                            return Ok((LoopExit::Plain(Exit::BudgetSpent), false, false));
                        }
                        // A single-step trap inside a REP string instruction
                        // comes after each iteration, with EIP still on the
                        // instruction and RF set (SDM Vol. 3A 17.3.1.4). The
                        // instruction has not retired: keep stepping, so a
                        // step retires the whole REP as every engine counts it.
                        let regs = self
                            .vcpu
                            .get_regs()
                            .map_err(|e| unavailable(format!("KVM_GET_REGS: {e}")))?;
                        let mid_rep = regs.rip as u32 == m.cpu.eip && regs.rflags & (1 << 16) != 0;
                        if mid_rep {
                            continue;
                        }
                        // A host may report a stepped HLT as the single-step
                        // trap after it (kvm_pvm does) rather than as a HLT
                        // exit; the CPU is halted all the same.
                        if retired_hlt(m, regs.rip as u32) {
                            return Ok((LoopExit::Halt, true, true));
                        }
                        return Ok((LoopExit::Plain(Exit::BudgetSpent), false, true));
                    }
                }
                ExitKind::Shutdown => {
                    return Ok((LoopExit::Shutdown, false, false));
                }
                ExitKind::FailEntry(reason) => {
                    return Ok((
                        LoopExit::HostFailure(format!(
                            "VM entry failed, hardware reason {reason:#x}"
                        )),
                        false,
                        false,
                    ));
                }
                ExitKind::InternalError => {
                    // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR.
                    let sub = unsafe { self.kvm_run().__bindgen_anon_1.internal.suberror };
                    return Ok((
                        LoopExit::HostFailure(format!("KVM internal error, suberror {sub}")),
                        false,
                        false,
                    ));
                }
                ExitKind::Other(name) => {
                    return Ok((
                        LoopExit::HostFailure(format!("unexpected exit {name}")),
                        false,
                        false,
                    ));
                }
            }
        }
    }
}

/// Whether the instruction at CS:EIP of `m` (the state before a step) is
/// HLT and the step ended just after it, at `rip`: the step retired HLT.
fn retired_hlt(m: &mut Machine, rip: u32) -> bool {
    step_catch::decode_at_eip(m)
        .is_some_and(|insn| insn.mnemonic() == Mnemonic::Hlt && insn.next_ip() as u32 == rip)
}

/// The stop for a MOV to CR0 that sets PG on a host that refuses it.
fn paging_refused(cs: u16, eip: u32) -> String {
    format!(
        "this host's KVM cannot run 32-bit paging: the guest's MOV to CR0 at \
         {cs:04x}:{eip:08x} sets PG and the host refuses it with #GP \
         (`ringside engines` shows what this host runs; use --engine interp)"
    )
}

/// How the entry loop ended.
enum LoopExit {
    Plain(Exit),
    Halt,
    Shutdown,
    HostFailure(String),
    /// The guest needs something the host lacks: the message says what.
    HostLacks(String),
}
