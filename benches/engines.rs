//! Engines compared on the same guests (criterion): the interpreter, raw mode (with and
//! without patching) and
//! the recompiler (at its default threshold, compile time included, and
//! with every block compiled at its first run) on `bench-int-small`: the
//! same integer work as `ringside run builtin:bench-int --stats`, with
//! 1/100 of the iterations.
//! Then every engine on short workloads: two nanobenchmarks
//! (`builtin:nanobench`, 20000 iterations of `call-ret` and of
//! `pagefault`), `builtin:hello` and `builtin:irq-pm` (timer interrupts,
//! port I/O, HLT): the last two do not turn paging on, so that a host
//! whose KVM cannot page still measures kvm on them. kvm is
//! skipped, with the reason on stderr, where this host's KVM cannot run
//! the guest (the probe `ringside engines` prints).
//! Throughput is reported in guest instructions per second (for kvm, the
//! interpreter's count of the same run: KVM counts none).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringside_core::{boot, Engine, Machine, RunOutcome, StopReason};

fn boot_guest(name: &str) -> Machine {
    let guest = ringside_guests::find(name).expect("the guest is built in");
    let mut m = ringside_devices::standard_machine(
        32,
        Box::new(std::io::sink()),
        Box::new(std::io::sink()),
    )
    .expect("a 32 MiB machine");
    boot::load_multiboot(&mut m, guest.image, "").expect("the guest loads");
    m
}

fn run_to_exit(m: &mut Machine, engine: &mut dyn Engine) -> u64 {
    let outcome = m
        .run_until_stopped(engine, Some(1 << 32))
        .expect("the engine runs the guest");
    assert_eq!(outcome, RunOutcome::Stopped(StopReason::DebugExit(0)));
    m.clock.icount
}

fn bench_int(c: &mut Criterion) {
    let instructions = run_to_exit(
        &mut boot_guest("bench-int-small"),
        &mut ringside_interp::Interp::new(),
    );
    let mut group = c.benchmark_group("bench-int-small");
    group.sample_size(10);
    group.throughput(Throughput::Elements(instructions));
    group.bench_function("interp", |b| {
        b.iter(|| {
            let mut m = boot_guest("bench-int-small");
            run_to_exit(&mut m, &mut ringside_interp::Interp::new())
        })
    });
    group.bench_function("jit", |b| {
        b.iter(|| {
            let mut m = boot_guest("bench-int-small");
            run_to_exit(&mut m, &mut ringside_jit::Jit::new())
        })
    });
    group.bench_function("jit (threshold 1)", |b| {
        b.iter(|| {
            let mut m = boot_guest("bench-int-small");
            run_to_exit(&mut m, &mut ringside_jit::Jit::with_threshold(1))
        })
    });
    group.bench_function("raw", |b| {
        b.iter(|| {
            let mut m = boot_guest("bench-int-small");
            run_to_exit(&mut m, &mut raw(true))
        })
    });
    // The same run under the debugger, continuing with no breakpoint: what
    // the debugger costs when it has nothing to check (free running).
    group.bench_function("interp under the debugger (no breakpoints)", |b| {
        b.iter(|| debugger_cont(boot_guest("bench-int-small"), None))
    });
    // A breakpoint that never hits: the interpreter checks it itself
    // (engine-assisted breakpoints) and runs free.
    group.bench_function("interp under the debugger (one breakpoint)", |b| {
        b.iter(|| debugger_cont(boot_guest("bench-int-small"), Some(Stop::Breakpoint)))
    });
    group.finish();

    // A watchpoint that never fires: the debugger steps and checks every
    // instruction (checked running).
    let mut group = c.benchmark_group("bench-int-small checked");
    group.sample_size(10);
    group.throughput(Throughput::Elements(instructions));
    group.bench_function("interp under the debugger (one watchpoint)", |b| {
        b.iter(|| debugger_cont(boot_guest("bench-int-small"), Some(Stop::Watchpoint)))
    });
    group.finish();
}

/// A stop the guest never triggers.
enum Stop {
    Breakpoint,
    Watchpoint,
}

/// Continue to the guest's exit under the debugger, optionally with a
/// stop that never fires.
fn debugger_cont(m: Machine, stop: Option<Stop>) -> u64 {
    use ringside_debugger::stops::{Address, WatchKind};
    use ringside_debugger::{Debugger, StopCause};
    let mut d = Debugger::new(
        m,
        Box::new(ringside_interp::Interp::new()),
        Box::new(|_: &str| Err("one engine".to_string())),
    );
    match stop {
        Some(Stop::Breakpoint) => {
            d.add_breakpoint(Address::Linear(0xFFFF_FFF0), None);
        }
        Some(Stop::Watchpoint) => {
            d.add_watchpoint(0xFFFF_F000, 4, WatchKind::Access);
        }
        None => {}
    }
    let cause = d.cont(|| false).expect("the debugger runs the guest");
    assert_eq!(cause, StopCause::Machine(StopReason::DebugExit(0)));
    d.main.machine.clock.icount
}

/// A short workload every engine runs: a built-in guest, its command
/// line, and whether it turns paging on.
struct Short {
    group: &'static str,
    guest: &'static str,
    cmdline: &'static str,
    paged: bool,
}

const SHORT: &[Short] = &[
    Short {
        group: "nanobench call-ret",
        guest: "nanobench",
        cmdline: "ops=call-ret iters=20000",
        paged: true,
    },
    Short {
        group: "nanobench pagefault",
        guest: "nanobench",
        cmdline: "ops=pagefault iters=20000",
        paged: true,
    },
    Short {
        group: "hello",
        guest: "hello",
        cmdline: "",
        paged: false,
    },
    Short {
        group: "irq-pm",
        guest: "irq-pm",
        cmdline: "",
        paged: false,
    },
];

/// Why this host's KVM cannot run a guest booted by the Multiboot loader
/// (unpaged protected mode, or paged when `paged`): the mode and the
/// probe's reason; `None` when it can.
fn kvm_skip_reason(paged: bool) -> Option<String> {
    if let Err(e) = ringside_kvm::Kvm::new() {
        return Some(e.to_string());
    }
    let probe = ringside_kvm::probe();
    let (mode, result) = if paged {
        ("32-bit paging", &probe.paging)
    } else {
        ("unpaged protected mode", &probe.protected_mode)
    };
    (!result.ok).then(|| format!("{mode}: {}", result.reason))
}

/// The default PC (`ringside run`'s machine: the PIC, PIT, APIC and the
/// rest the nanobenchmarks and irq-pm use) with `name` loaded by the
/// Multiboot loader, `cmdline` its command line.
/// `--engine raw`: raw mode behind the execution manager.
fn raw(
    patm: bool,
) -> ringside_core::exec::ExecutionManager<ringside_raw::Raw, ringside_interp::Interp> {
    ringside_core::exec::ExecutionManager::new(
        ringside_raw::Raw::with_patching(patm),
        ringside_interp::Interp::new(),
    )
}

fn boot_pc(name: &str, cmdline: &str) -> Machine {
    let guest = ringside_guests::find(name).expect("the guest is built in");
    let com1 = ringside_devices::SharedBuffer::default();
    let mut m = ringside_devices::pc::build_pc(
        &ringside_core::config::MachineConfig::default(),
        ringside_devices::pc::HostIo::com1_only(com1),
    )
    .expect("the default PC builds");
    boot::load_multiboot(&mut m, guest.image, cmdline).expect("the guest loads");
    m
}

fn short_workloads(c: &mut Criterion) {
    for w in SHORT {
        let boot = || boot_pc(w.guest, w.cmdline);
        let instructions = run_to_exit(&mut boot(), &mut ringside_interp::Interp::new());
        let mut group = c.benchmark_group(w.group);
        group.sample_size(10);
        group.throughput(Throughput::Elements(instructions));
        group.bench_function("interp", |b| {
            b.iter(|| run_to_exit(&mut boot(), &mut ringside_interp::Interp::new()))
        });
        group.bench_function("jit", |b| {
            b.iter(|| run_to_exit(&mut boot(), &mut ringside_jit::Jit::new()))
        });
        // Raw mode with and without PATM's patches (behind the execution
        // manager: the interpreter runs what raw mode cannot).
        group.bench_function("raw", |b| {
            b.iter(|| run_to_exit(&mut boot(), &mut raw(true)))
        });
        group.bench_function("raw (raw.patm = false)", |b| {
            b.iter(|| run_to_exit(&mut boot(), &mut raw(false)))
        });
        match kvm_skip_reason(w.paged) {
            None => {
                group.bench_function("kvm", |b| {
                    b.iter(|| {
                        let mut kvm = ringside_kvm::Kvm::new().expect("the probe opened /dev/kvm");
                        run_to_exit(&mut boot(), &mut kvm)
                    })
                });
            }
            Some(why) => eprintln!("{}: kvm skipped: {why}", w.group),
        }
        group.finish();
    }
}

criterion_group!(benches, bench_int, short_workloads);
criterion_main!(benches);
