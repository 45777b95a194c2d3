//! Code changed from outside the guest while the recompiler holds a
//! translation of it: `jit-torture`'s test "debugger_target called in a
//! hot loop" calls `debugger_target` (MOV EAX, imm32; RET) 20000 times
//! and prints how many calls returned which value. The host rewrites the
//! immediate through the debugger's memory write (`inspect::write_lin`,
//! what the gdb stub and the TUI use), or restores a state saved before
//! the code changed; the interpreter and the recompiler (every block
//! compiled at its first run, and at a threshold of 2000, which the loop
//! passes well before the change) must then end the guest alike, with
//! the change seen (or, after the restore, not seen) from the same call
//! on.

use ringside_core::config::{DiskConfig, DiskMode, MachineConfig};
use ringside_core::{boot, snapshot, Engine, Machine, RunOutcome, StopReason};
use ringside_debugger::inspect;
use ringside_debugger::symbols::Symbols;
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_jit::Jit;

const GUEST: &str = "jit-torture";
const LOOP_TEST: &str = "debugger_target called in a hot loop";
const ORIGINAL: u32 = 0x0DE6_0001;
const PATCHED: u32 = 0x0DE6_0002;
/// Far more than the guest needs (about 2.4 million instructions).
const MAX_INSNS: u64 = 50_000_000;

/// The default PC with a scratch disk as the IDE master (the guest's IDE
/// case writes and reads two sectors of it; snapshot mode keeps the file
/// as it is). The disk is written once for all the tests of this binary,
/// which run in parallel.
fn config() -> MachineConfig {
    static DISK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let path = DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "ringside-jit-torture-host-{}.img",
            std::process::id()
        ));
        std::fs::write(&path, vec![0u8; 1 << 20]).expect("write a disk image to the temp dir");
        path.display().to_string()
    });
    let mut c = MachineConfig::default();
    c.disks.push(DiskConfig {
        path: path.clone(),
        mode: DiskMode::Snapshot,
    });
    c
}

fn machine() -> (Machine, SharedBuffer) {
    let guest = ringside_guests::find(GUEST).expect("the guest is built in");
    let com1 = SharedBuffer::default();
    let mut m = build_pc(&config(), HostIo::com1_only(com1.clone())).expect("the PC builds");
    boot::load_multiboot(&mut m, guest.image, "").expect("the guest loads");
    (m, com1)
}

fn immediate_address() -> u32 {
    let guest = ringside_guests::find(GUEST).expect("the guest is built in");
    Symbols::from_elf(guest.image)
        .resolve("debugger_target_immediate")
        .expect("the guest exports debugger_target_immediate")
}

fn engines() -> Vec<(&'static str, Box<dyn Engine>)> {
    vec![
        ("interp", Box::new(Interp::new())),
        ("jit, threshold 1", Box::new(Jit::with_threshold(1))),
        ("jit, threshold 2000", Box::new(Jit::with_threshold(2000))),
    ]
}

/// Runs until `icount` instructions have retired in all (the budget of
/// `run_until_stopped` also pays for interrupt deliveries).
fn run_to(m: &mut Machine, engine: &mut dyn Engine, icount: u64) {
    while m.clock.icount < icount {
        let outcome = m
            .run_until_stopped(engine, Some(icount - m.clock.icount))
            .expect("the engine runs the guest");
        assert_eq!(
            outcome,
            RunOutcome::InstructionLimit,
            "the guest stopped at {}",
            m.clock.icount
        );
    }
}

fn run_to_end(m: &mut Machine, engine: &mut dyn Engine) -> RunOutcome {
    m.run_until_stopped(engine, Some(MAX_INSNS))
        .expect("the engine runs the guest")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where the loop starts: the instruction count at which its test line
/// has been printed, found on the interpreter in slices of 1000.
fn loop_start() -> u64 {
    let (mut m, com1) = machine();
    let mut interp = Interp::new();
    while !text(&com1.contents()).contains(LOOP_TEST) {
        assert!(
            m.clock.icount < MAX_INSNS,
            "the loop's test line never came"
        );
        let icount = m.clock.icount + 1000;
        run_to(&mut m, &mut interp, icount);
    }
    m.clock.icount
}

/// (calls returning the first value, the first value, calls returning the
/// other, the other, the call it first came from), from the guest's line
/// "debugger_target: N calls, A returned X, B returned Y from call I".
fn loop_counts(com1: &str) -> (u32, u32, u32, u32, u32) {
    let line = com1
        .lines()
        .find(|l| l.trim_start().starts_with("debugger_target: "))
        .unwrap_or_else(|| panic!("no debugger_target line in\n{com1}"));
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let number = |w: &str| -> u32 {
        match w.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => w.parse(),
        }
        .unwrap_or_else(|_| panic!("{w:?} in {line:?} is not a number"))
    };
    // debugger_target: N calls A returned X B returned Y from call I ...
    (
        number(words[3]),
        number(words[5]),
        number(words[6]),
        number(words[8]),
        number(words[11]),
    )
}

struct End {
    outcome: RunOutcome,
    icount: u64,
    com1: String,
}

fn uninterrupted() -> End {
    let (mut m, com1) = machine();
    let outcome = run_to_end(&mut m, &mut Interp::new());
    End {
        outcome,
        icount: m.clock.icount,
        com1: text(&com1.contents()),
    }
}

fn assert_passed(end: &End, what: &str) {
    assert_eq!(
        end.outcome,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "{what}: {}",
        end.com1
    );
    assert!(
        !end.com1.contains("FAIL") && end.com1.contains(" passed, 0 skipped, 0 failed"),
        "{what}: {}",
        end.com1
    );
}

#[test]
fn code_rewritten_by_the_debugger_mid_loop_is_seen_from_the_same_call_on_every_engine() {
    // About 16 instructions a call: the patch comes after some 6000
    // calls, well past the 2000 runs that compile the loop, and well
    // before the 20000th.
    let patch_at = loop_start() + 100_000;
    let address = immediate_address();
    let mut ends = Vec::new();
    for (name, mut engine) in engines() {
        let (mut m, com1) = machine();
        run_to(&mut m, engine.as_mut(), patch_at);
        inspect::write_lin(&mut m, address, &PATCHED.to_le_bytes())
            .expect("the immediate is mapped");
        let outcome = run_to_end(&mut m, engine.as_mut());
        let end = End {
            outcome,
            icount: m.clock.icount,
            com1: text(&com1.contents()),
        };
        assert_passed(&end, name);
        ends.push((name, end));
    }
    let (_, reference) = &ends[0];
    let (before, first, after, other, from_call) = loop_counts(&reference.com1);
    assert_eq!(first, ORIGINAL, "{}", reference.com1);
    assert_eq!(other, PATCHED, "the patch was not seen: {}", reference.com1);
    assert!(
        before > 3000 && after > 0 && from_call == before,
        "the patch landed outside the hot loop: {}",
        reference.com1
    );
    for (name, end) in &ends[1..] {
        assert_eq!(end.com1, reference.com1, "{name}: COM1 differs from interp");
        assert_eq!(
            end.icount, reference.icount,
            "{name}: instruction count differs from interp"
        );
    }
}

/// Saves the state inside the loop, runs on while the code changes (the
/// debugger patches it mid-loop, and the guest itself rewrites it in its
/// next test and calls it hot, so the recompiler holds translations of
/// both versions), restores the state and runs to the end: the guest
/// ends exactly as a run that was never interrupted, which saw only the
/// original code in the loop.
#[test]
fn a_state_restored_from_before_the_code_changed_runs_the_original_code_on_every_engine() {
    let start = loop_start();
    let save_at = start + 50_000;
    let patch_at = start + 100_000;
    let address = immediate_address();
    let reference = uninterrupted();
    assert_passed(&reference, "uninterrupted");
    let (same, first, changed, _, _) = loop_counts(&reference.com1);
    assert_eq!(
        (same, first, changed),
        (20_000, ORIGINAL, 0),
        "{}",
        reference.com1
    );
    let config_toml = config().to_toml();
    for (name, mut engine) in engines() {
        let (mut m, com1) = machine();
        run_to(&mut m, engine.as_mut(), save_at);
        let saved = snapshot::to_bytes(&m, &config_toml).expect("the state saves");
        let printed_at_save = com1.contents().len();
        run_to(&mut m, engine.as_mut(), patch_at);
        inspect::write_lin(&mut m, address, &PATCHED.to_le_bytes())
            .expect("the immediate is mapped");
        let first_end = run_to_end(&mut m, engine.as_mut());
        let printed_at_first_end = com1.contents().len();
        let first_tail = text(&com1.contents()[printed_at_save..]);
        assert!(
            first_tail.contains(&format!("returned {PATCHED:#x}")),
            "{name}: the patch before the restore was not seen: {first_tail}"
        );
        assert_eq!(first_end, reference.outcome, "{name}: {first_tail}");

        snapshot::from_bytes(&saved)
            .expect("the state reads back")
            .restore_into(&mut m)
            .expect("the state restores");
        let outcome = run_to_end(&mut m, engine.as_mut());
        let tail = text(&com1.contents()[printed_at_first_end..]);
        assert_eq!(outcome, reference.outcome, "{name}: {tail}");
        assert_eq!(
            tail,
            reference.com1[printed_at_save..],
            "{name}: after the restore the guest printed otherwise than an uninterrupted run"
        );
        assert_eq!(
            m.clock.icount, reference.icount,
            "{name}: instruction count after the restore"
        );
    }
}
