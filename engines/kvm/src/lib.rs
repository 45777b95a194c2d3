//! ringside-kvm: hardware virtualization through /dev/kvm (HWACCM in
//! VirtualBox's terms, DESIGN.md section 5).
//!
//! It owns one KVM VM with one vCPU per engine, created lazily on the first
//! run, whose memory slots are the machine's own RAM mapping ([`slots`]).
//! It does not own any state: `CpuState` is loaded into the vCPU on every
//! `run`/`step` and read back exactly when they return ([`registers`]).
//! Port I/O, MMIO, interrupts and timers go through the machine's devices
//! like under every other engine ([`vcpu`]).
//!
//! Time under KVM: the guest runs on host time. `icount` does not change
//! during `run` (nothing counts instructions in hardware); the host
//! nanoseconds spent in KVM_RUN are added to the clock's idle time so
//! device timers progress. `step` retires exactly one instruction with
//! guest single-stepping and counts it. The budget of `run` is therefore a
//! cap on KVM_RUN entries, not on instructions.
//!
//! What a host can run differs (a software KVM such as kvm_pvm runs real
//! and unpaged protected mode only): [`probe::probe`] finds out. A guest
//! the host cannot run ends with `EngineError::Unavailable` saying what
//! the host lacks.
//!
//! Start reading at [`Kvm`], then `vcpu::Vm::enter`, then [`registers`].

use ringside_core::memory::PhysRange;
use ringside_core::{Budget, Engine, EngineError, EngineStats, Exit, Machine};

#[cfg(target_os = "linux")]
mod kick;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod registers;
#[cfg(target_os = "linux")]
pub mod slots;
#[cfg(target_os = "linux")]
mod vcpu;

pub use probe::{probe, Probe, ProbeResult};

/// What the engine counts; `stats` reports it.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    instructions: u64,
    kvm_runs: u64,
    exits_io: u64,
    exits_mmio: u64,
    exits_hlt: u64,
    exits_interrupt_window: u64,
    exits_kick: u64,
    exits_debug: u64,
    exits_shutdown: u64,
    interrupts_injected: u64,
    host_ns_in_guest: u64,
}

/// The KVM engine.
pub struct Kvm {
    #[cfg(target_os = "linux")]
    kvm: kvm_ioctls::Kvm,
    #[cfg(target_os = "linux")]
    vm: Option<vcpu::Vm>,
    counters: Counters,
}

impl Kvm {
    /// Open /dev/kvm. The VM and its vCPU are made on the first run.
    #[cfg(target_os = "linux")]
    pub fn new() -> Result<Kvm, EngineError> {
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| EngineError::Unavailable {
            engine: "kvm",
            what: format!("cannot open /dev/kvm: {e}"),
        })?;
        Ok(Kvm {
            kvm,
            vm: None,
            counters: Counters::default(),
        })
    }

    /// KVM exists only on Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn new() -> Result<Kvm, EngineError> {
        Err(EngineError::Unavailable {
            engine: "kvm",
            what: "KVM is only available on Linux hosts".into(),
        })
    }

    #[cfg(target_os = "linux")]
    fn enter(&mut self, m: &mut Machine, mode: vcpu::Mode) -> Result<Exit, EngineError> {
        if m.cpu.run.shutdown {
            return Ok(Exit::Stopped(ringside_core::StopReason::TripleFault {
                cs: m.cpu.seg[1].selector,
                eip: m.cpu.eip,
            }));
        }
        if !m.mem.a20_enabled() {
            return Err(vcpu::unavailable(
                "the A20 gate is off, which the kvm engine does not model",
            ));
        }
        let identity = vcpu::MemoryIdentity::of(m);
        if self.vm.as_ref().map(|vm| vm.identity) != Some(identity) {
            // A different machine (or a new memory layout): new slots.
            self.vm = None;
            self.vm = Some(vcpu::Vm::new(&self.kvm, m)?);
        }
        let vm = self.vm.as_mut().expect("the VM was created just above");
        let result = vm.enter(m, mode, &mut self.counters);
        invalidate_code_pages(m);
        result
    }

    #[cfg(not(target_os = "linux"))]
    fn enter(&mut self, _m: &mut Machine) -> Result<Exit, EngineError> {
        Kvm::new().map(|_| Exit::BudgetSpent)
    }
}

/// The guest may have written any RAM page while under KVM, without the
/// stores passing through `Memory`'s code-page tracking: record a write to
/// every page that software engines made code from, so they drop it.
fn invalidate_code_pages(m: &mut Machine) {
    let pages = m.mem.ram_size() / ringside_core::memory::PAGE_SIZE;
    for page in 0..pages {
        if m.mem.is_code_page(page) {
            let off = page * ringside_core::memory::PAGE_SIZE;
            let byte = m.mem.ram_slice()[off as usize];
            m.mem.store_ram_byte(off, byte);
        }
    }
}

impl Engine for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    /// Run until an exit the caller must see; `budget.instructions` caps
    /// the number of KVM_RUN entries (see the crate documentation).
    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        #[cfg(target_os = "linux")]
        return self.enter(
            m,
            vcpu::Mode::Run {
                entries: budget.instructions,
            },
        );
        #[cfg(not(target_os = "linux"))]
        {
            let _ = budget;
            self.enter(m)
        }
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        #[cfg(target_os = "linux")]
        return self.enter(m, vcpu::Mode::Step);
        #[cfg(not(target_os = "linux"))]
        self.enter(m)
    }

    /// KVM caches no code: nothing to forget.
    fn invalidate(&mut self, _pages: PhysRange) {}

    fn stats(&self) -> EngineStats {
        let c = &self.counters;
        let mut s = EngineStats {
            instructions: c.instructions,
            ..EngineStats::default()
        };
        for (name, v) in [
            ("kvm_runs", c.kvm_runs),
            ("exits_io", c.exits_io),
            ("exits_mmio", c.exits_mmio),
            ("exits_hlt", c.exits_hlt),
            ("exits_interrupt_window", c.exits_interrupt_window),
            ("exits_kick", c.exits_kick),
            ("exits_debug", c.exits_debug),
            ("exits_shutdown", c.exits_shutdown),
            ("interrupts_injected", c.interrupts_injected),
            ("host_ns_in_guest", c.host_ns_in_guest),
        ] {
            s.counters.insert(name, v);
        }
        s
    }
}
