//! Acceptance: the guest programs of testsuites/guests — protected-mode
//! segment checks, every exception with its error code, paging, privilege
//! changes, task switches, virtual-8086 mode, self-modifying code, the
//! recompiler torture — run on
//! the interpreter and report success through the debug-exit port.

use ringside_core::{boot, Machine, RunOutcome, StopReason};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;

/// Boot a built-in guest on the interpreter; return its exit and COM1 output.
fn run_guest(name: &str, max_insns: u64) -> (RunOutcome, String) {
    let guest = ringside_guests::find(name).unwrap_or_else(|| panic!("guest {name} is built in"));
    let com1 = SharedBuffer::default();
    let mut m: Machine =
        ringside_devices::standard_machine(32, Box::new(com1.clone()), Box::new(std::io::sink()))
            .expect("32 MiB machine");
    boot::load_multiboot(&mut m, guest.image, "").expect("guest loads");
    let outcome = m
        .run_until_stopped(&mut Interp::new(), Some(max_insns))
        .expect("the interpreter supports every instruction the guests use");
    (
        outcome,
        String::from_utf8_lossy(&com1.contents()).into_owned(),
    )
}

fn assert_passes(name: &str) {
    let expect = ringside_guests::find(name)
        .map(|g| g.expect_exit)
        .unwrap_or(0);
    let (outcome, out) = run_guest(name, 50_000_000);
    println!("{out}");
    assert_eq!(
        outcome,
        RunOutcome::Stopped(StopReason::DebugExit(expect)),
        "{name} did not pass; its output:\n{out}"
    );
}

#[test]
fn hello_greets_on_com1_and_exits_zero() {
    let (outcome, out) = run_guest("hello", 1_000_000);
    assert_eq!(outcome, RunOutcome::Stopped(StopReason::DebugExit(0)));
    assert!(
        out.starts_with("Hello from ringside!"),
        "output was {out:?}"
    );
}

#[test]
fn bench_int_small_checksum_is_right() {
    let (outcome, out) = run_guest("bench-int-small", 50_000_000);
    assert_eq!(
        outcome,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "{out}"
    );
    assert!(out.contains("checksum 0x9145f486"), "output was {out:?}");
}

#[test]
fn protected_mode_segment_checks_pass() {
    assert_passes("pm-segments");
}

#[test]
fn every_exception_is_raised_with_its_error_code() {
    assert_passes("exceptions");
}

#[test]
fn paging_faults_and_accessed_dirty_bits_pass() {
    assert_passes("paging");
}

#[test]
fn privilege_changes_through_gates_and_iret_pass() {
    assert_passes("privilege");
}

#[test]
fn hardware_task_switches_pass() {
    assert_passes("tasks");
}

#[test]
fn virtual_8086_mode_passes() {
    assert_passes("vm86");
}

#[test]
fn self_modifying_code_is_seen() {
    assert_passes("smc");
}

/// jit-torture takes IRQ 0 from the 8254 through the 8259A, which the
/// standard machine lacks, so it runs on the default PC; without a disk
/// its IDE case is skipped (testsuites/cli/jit_torture.rs attaches one).
#[test]
fn recompiler_torture_passes_on_the_interpreter() {
    let guest = ringside_guests::find("jit-torture").expect("jit-torture is built in");
    let com1 = SharedBuffer::default();
    let mut m = ringside_devices::pc::build_pc(
        &ringside_core::config::MachineConfig::default(),
        ringside_devices::pc::HostIo::com1_only(com1.clone()),
    )
    .expect("the default PC builds");
    boot::load_multiboot(&mut m, guest.image, "").expect("guest loads");
    let outcome = m
        .run_until_stopped(&mut Interp::new(), Some(50_000_000))
        .expect("the interpreter supports every instruction the guest uses");
    let out = String::from_utf8_lossy(&com1.contents()).into_owned();
    println!("{out}");
    assert_eq!(
        outcome,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "jit-torture did not pass; its output:\n{out}"
    );
    let skipped: Vec<&str> = out.lines().filter(|l| l.contains("skipped:")).collect();
    assert_eq!(
        skipped,
        [" 11 IDE: READ SECTORS by REP INSW over hot code runs the loaded code ... skipped: no IDE master disk"],
        "only the IDE case may be skipped without a disk"
    );
}

#[test]
fn same_guest_gives_same_instruction_count_and_output() {
    let a = run_guest_counted("bench-int-small");
    let b = run_guest_counted("bench-int-small");
    assert_eq!(a, b);
}

fn run_guest_counted(name: &str) -> (u64, String) {
    let guest = ringside_guests::find(name).expect("built in");
    let com1 = SharedBuffer::default();
    let mut m =
        ringside_devices::standard_machine(32, Box::new(com1.clone()), Box::new(std::io::sink()))
            .expect("machine");
    boot::load_multiboot(&mut m, guest.image, "").expect("loads");
    m.run_until_stopped(&mut Interp::new(), Some(50_000_000))
        .expect("runs");
    (
        m.clock.icount,
        String::from_utf8_lossy(&com1.contents()).into_owned(),
    )
}
