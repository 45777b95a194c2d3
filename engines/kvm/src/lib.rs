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
mod step_catch;
#[cfg(target_os = "linux")]
mod vcpu;

pub use probe::{probe, Probe, ProbeResult};

/// Why a KVM_RUN came back, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExitReason {
    Io,
    Mmio,
    Hlt,
    InterruptWindow,
    /// The host timer kicked the vCPU out (or a signal did).
    Kick,
    Debug,
    Shutdown,
    /// Entry failures and internal errors: the run ends with an error.
    Failure,
}

impl ExitReason {
    const ALL: [ExitReason; 8] = [
        ExitReason::Io,
        ExitReason::Mmio,
        ExitReason::Hlt,
        ExitReason::InterruptWindow,
        ExitReason::Kick,
        ExitReason::Debug,
        ExitReason::Shutdown,
        ExitReason::Failure,
    ];

    /// The counter names: exits, and their mean round trip.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            ExitReason::Io => ("exits_io", "exit_io_mean_round_trip_ns"),
            ExitReason::Mmio => ("exits_mmio", "exit_mmio_mean_round_trip_ns"),
            ExitReason::Hlt => ("exits_hlt", "exit_hlt_mean_round_trip_ns"),
            ExitReason::InterruptWindow => (
                "exits_interrupt_window",
                "exit_interrupt_window_mean_round_trip_ns",
            ),
            ExitReason::Kick => ("exits_kick", "exit_kick_mean_round_trip_ns"),
            ExitReason::Debug => ("exits_debug", "exit_debug_mean_round_trip_ns"),
            ExitReason::Shutdown => ("exits_shutdown", "exit_shutdown_mean_round_trip_ns"),
            ExitReason::Failure => ("exits_failure", "exit_failure_mean_round_trip_ns"),
        }
    }
}

/// What the engine counts; `stats` reports it.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    instructions: u64,
    kvm_runs: u64,
    /// Exits by reason (indexed like `ExitReason::ALL`).
    exits: [u64; 8],
    /// Host nanoseconds of each exit's round trip, by reason: the KVM_RUN
    /// that ended with it plus the user-space handling until the vCPU is
    /// entered again (or the engine returns).
    exit_ns: [u64; 8],
    interrupts_injected: u64,
    host_ns_in_guest: u64,
    /// KVM_RUN entries with single-stepping on (`step`, and the paging
    /// guard stepping past a #GP handler's first instruction).
    single_step_runs: u64,
    /// KVM_RUN entries that ran the guest freely: the instructions they
    /// retired are counted nowhere (see the crate documentation).
    uncounted_runs: u64,
}

impl Counters {
    fn exit(&mut self, reason: ExitReason, ns: u64) {
        let i = reason as usize;
        self.exits[i] += 1;
        self.exit_ns[i] += ns;
    }

    fn handled(&mut self, reason: ExitReason, ns: u64) {
        self.exit_ns[reason as usize] += ns;
    }
}

/// The KVM engine.
pub struct Kvm {
    #[cfg(target_os = "linux")]
    kvm: kvm_ioctls::Kvm,
    #[cfg(target_os = "linux")]
    vm: Option<vcpu::Vm>,
    counters: Counters,
    /// Whether to watch for the host refusing CR0.PG (see
    /// `step_catch::paging_guard`); None until the first run asks the
    /// probe.
    paging_guard: Option<bool>,
}

/// Whether this host's KVM refuses 32-bit paging, probed once per process.
#[cfg(target_os = "linux")]
fn host_refuses_paging() -> bool {
    static REFUSES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REFUSES.get_or_init(|| match Kvm::new() {
        Ok(mut k) => {
            k.paging_guard = Some(false);
            !probe::probe_paging(&mut k).ok
        }
        Err(_) => false,
    })
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
            paging_guard: None,
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
        if !m.mem().a20_enabled() {
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
        let guard = *self.paging_guard.get_or_insert_with(host_refuses_paging);
        let vm = self.vm.as_mut().expect("the VM was created just above");
        let result = vm.enter(m, mode, guard, &mut self.counters);
        hand_back(m);
        result
    }

    #[cfg(not(target_os = "linux"))]
    fn enter(&mut self, _m: &mut Machine) -> Result<Exit, EngineError> {
        Kvm::new().map(|_| Exit::BudgetSpent)
    }
}

/// The guest may have written any RAM page while under KVM, without the
/// stores passing through core: note them all as written (the code-write
/// log drops what software engines made from them), and hand the machine
/// back with the TLB flushed.
fn hand_back(m: &mut Machine) {
    let pages = m.mem().ram_size() / ringside_core::memory::PAGE_SIZE;
    m.note_ram_written(PhysRange {
        first_page: 0,
        pages,
    });
    m.handover();
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

    fn stats(&self) -> EngineStats {
        let c = &self.counters;
        let mut s = EngineStats {
            instructions: c.instructions,
            ..EngineStats::default()
        };
        for (name, v) in [
            ("kvm_runs", c.kvm_runs),
            ("interrupts_injected", c.interrupts_injected),
            ("host_ns_in_guest", c.host_ns_in_guest),
            ("single_step_runs", c.single_step_runs),
            ("uncounted_runs", c.uncounted_runs),
        ] {
            s.counters.insert(name, v);
        }
        for r in ExitReason::ALL {
            let (n, ns) = (c.exits[r as usize], c.exit_ns[r as usize]);
            let (count_key, mean_key) = r.keys();
            s.counters.insert(count_key, n);
            if let Some(mean) = ns.checked_div(n) {
                s.counters.insert(mean_key, mean);
            }
        }
        s
    }
}
