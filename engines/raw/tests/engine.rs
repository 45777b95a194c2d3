//! The raw engine behind the execution manager, against the interpreter
//! alone: every paged built-in guest must end with the same exit, COM1
//! output, instruction count and CPU state, with most of its instructions
//! run by the substrate at ring 1 and 3.

use ringside_core::config::MachineConfig;
use ringside_core::exec::ExecutionManager;
use ringside_core::{boot, Engine, Machine, RunOutcome};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_raw::Raw;

fn machine(name: &str, cmdline: &str) -> (Machine, SharedBuffer) {
    let guest = ringside_guests::find(name).expect("the guest is built in");
    let com1 = SharedBuffer::default();
    let mut m = build_pc(&MachineConfig::default(), HostIo::com1_only(com1.clone())).unwrap();
    boot::load_multiboot(&mut m, guest.image, cmdline).expect("the guest loads");
    (m, com1)
}

fn run(name: &str, cmdline: &str, engine: &mut dyn Engine) -> (RunOutcome, u64, String, Machine) {
    let (mut m, com1) = machine(name, cmdline);
    let outcome = m
        .run_until_stopped(engine, Some(200_000_000))
        .expect("the guest runs");
    let out = String::from_utf8_lossy(&com1.contents()).into_owned();
    (outcome, m.clock.icount, out, m)
}

fn same_as_interp(name: &str, cmdline: &str) -> ringside_core::EngineStats {
    let (want, want_icount, want_out, want_m) = run(name, cmdline, &mut Interp::new());
    let mut em = ExecutionManager::new(Raw::new(), Interp::new());
    let (got, icount, out, m) = run(name, cmdline, &mut em);
    assert_eq!(out, want_out, "{name}: COM1 output");
    assert_eq!(got, want, "{name}: exit");
    assert_eq!(icount, want_icount, "{name}: instructions");
    assert_eq!(m.cpu, want_m.cpu, "{name}: CPU state");
    let diffs: Vec<(usize, u8, u8)> = m
        .mem()
        .ram_slice()
        .iter()
        .zip(want_m.mem().ram_slice())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .take(16)
        .collect();
    assert!(
        diffs.is_empty(),
        "{name}: RAM differs at (offset, raw, interp) {diffs:x?}"
    );
    em.stats()
}

fn counter(s: &ringside_core::EngineStats, k: &str) -> u64 {
    s.counters.get(k).copied().unwrap_or(0)
}

#[test]
fn paging_runs_on_raw_as_on_the_interpreter() {
    let s = same_as_interp("paging", "");
    assert!(counter(&s, "raw.substrate_instructions") > 0, "{s:?}");
}

#[test]
fn bench_int_small_runs_on_raw_as_on_the_interpreter() {
    let s = same_as_interp("bench-int-small", "");
    let substrate = counter(&s, "raw.substrate_instructions");
    let stepped = counter(&s, "raw.stepped_instructions");
    assert!(substrate > 10 * stepped, "mostly on the substrate: {s:?}");
}

#[test]
fn nanobench_runs_on_raw_as_on_the_interpreter() {
    let s = same_as_interp("nanobench", "iters=200");
    assert!(counter(&s, "raw.monitor_entries") > 0, "{s:?}");
}

#[test]
fn every_other_built_in_guest_without_input_runs_on_raw_as_on_the_interpreter() {
    for name in [
        "exceptions",
        "jit-torture",
        "pm-segments",
        "privilege",
        "smc",
        "tasks",
        "vm86",
        "hello",
        "irq-pm",
        "fw-probe",
        "reboot",
    ] {
        same_as_interp(name, "");
    }
}
