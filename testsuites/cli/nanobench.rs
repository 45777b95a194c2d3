//! The `nanobench` guest through the `ringside` command: every
//! operation's line appears with the iterations asked for, the run is
//! deterministic to the instruction, `ops=` runs only what it names, and
//! the recompiler prints the same lines and retires the same number of
//! instructions as the interpreter (ringside's TSC counts retired
//! instructions, so the `insns=` the guest prints are the engine's count
//! too).

mod common;

use common::{ringside_with_input, text};

/// Every operation, in the order the guest runs them.
const OPERATIONS: &[&str] = &[
    "syscall-int80",
    "syscall-sysenter",
    "in",
    "tpr",
    "call-ret",
    "pagefault",
    "divzero",
    "ptemod",
    "cli-sti",
    "pushf-popf",
];

struct End {
    exit: Option<i32>,
    com1: String,
    instructions: u64,
    counters: serde_json::Value,
}

/// Runs the guest with `cmdline` and `engine_args` to its end; `tag`
/// names its statistics file.
fn run(tag: &str, cmdline: &str, engine_args: &[&str]) -> End {
    let stats = std::env::temp_dir().join(format!(
        "ringside-nanobench-{}-{tag}.json",
        std::process::id()
    ));
    let mut args = vec![
        "run",
        "builtin:nanobench",
        "--clock",
        "fast",
        "--stats-json",
        stats.to_str().expect("the temp dir is UTF-8"),
        "--cmdline",
        cmdline,
    ];
    args.extend_from_slice(engine_args);
    let out = ringside_with_input(&args, b"");
    let json = std::fs::read(&stats)
        .unwrap_or_else(|e| panic!("no statistics: {e}; {}", text(&out.stderr)));
    let _ = std::fs::remove_file(&stats);
    let stats: serde_json::Value = serde_json::from_slice(&json).expect("the statistics are JSON");
    End {
        exit: out.status.code(),
        com1: text(&out.stdout),
        instructions: stats["instructions"]
            .as_u64()
            .expect("the statistics hold an instruction count"),
        counters: stats["counters"].clone(),
    }
}

/// The `(operation, ops, insns)` of each `nanobench: OP ops=N insns=I`
/// line.
fn results(com1: &str) -> Vec<(String, u64, u64)> {
    com1.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("nanobench: ")?.split(' ');
            let op = words.next()?;
            let ops = words.next()?.strip_prefix("ops=")?.parse().ok()?;
            let insns = words.next()?.strip_prefix("insns=")?.parse().ok()?;
            Some((op.to_owned(), ops, insns))
        })
        .collect()
}

#[test]
fn every_operation_runs_the_iterations_asked_for() {
    let end = run("all", "iters=1000", &[]);
    assert_eq!(end.exit, Some(0), "{}", end.com1);
    let results = results(&end.com1);
    let ran: Vec<&str> = results.iter().map(|(op, _, _)| op.as_str()).collect();
    assert_eq!(ran, OPERATIONS, "{}", end.com1);
    for (op, ops, insns) in &results {
        assert_eq!(*ops, 1000, "{op}");
        // The operation and DEC/JNZ at least, for each iteration.
        assert!(*insns > 3 * 1000, "{op}: {insns} instructions");
    }
    assert!(end.com1.contains("nanobench: done\n"), "{}", end.com1);
}

#[test]
fn two_runs_print_the_same_counts_and_retire_the_same_instructions() {
    let first = run("first", "iters=1000", &[]);
    let second = run("second", "iters=1000", &[]);
    assert_eq!(first.exit, Some(0), "{}", first.com1);
    assert_eq!(first.com1, second.com1, "COM1 output differs between runs");
    assert_eq!(
        first.instructions, second.instructions,
        "instruction counts differ between runs"
    );
}

#[test]
fn ops_on_the_command_line_runs_only_the_operations_named() {
    let end = run("divzero", "ops=divzero iters=500", &[]);
    assert_eq!(end.exit, Some(0), "{}", end.com1);
    let results = results(&end.com1);
    assert_eq!(results.len(), 1, "{}", end.com1);
    let (op, ops, _) = &results[0];
    assert_eq!((op.as_str(), *ops), ("divzero", 500));
    assert!(end.com1.contains("nanobench: done\n"), "{}", end.com1);
}

/// At the default threshold the recompiler compiles little of a run this
/// short; at threshold 1 it compiles every loop and handler.
#[test]
fn the_recompiler_prints_and_retires_what_the_interpreter_does() {
    let interp = run("interp", "iters=1000", &["--engine", "interp"]);
    assert_eq!(interp.exit, Some(0), "{}", interp.com1);
    for (tag, threshold) in [("jit", "10000"), ("jit-1", "1")] {
        let jit = run(
            tag,
            "iters=1000",
            &["--engine", "jit", "--jit-threshold", threshold],
        );
        assert_eq!(jit.exit, Some(0), "threshold {threshold}: {}", jit.com1);
        assert_eq!(
            results(&jit.com1),
            results(&interp.com1),
            "threshold {threshold}"
        );
        assert_eq!(jit.com1, interp.com1, "threshold {threshold}");
        assert_eq!(
            jit.instructions, interp.instructions,
            "threshold {threshold}"
        );
    }
}

/// The guest's operation counts are the engine's: under raw mode with
/// patching off (trap and emulate alone), N more system calls by INT 0x80
/// are N more monitor traps of vector 0x80, and N more INs N more
/// emulated INs. (The difference of two runs: the first instructions after
/// the guest turns paging on may run on the interpreter, before the
/// execution manager hands the machine to raw mode, and the guest's output
/// polls the UART with INs too.)
#[test]
fn under_raw_without_patching_n_more_operations_are_n_more_monitor_traps() {
    for (op, counter) in [
        ("syscall-int80", "raw.traps.80-int"),
        ("in", "raw.emulated.in"),
    ] {
        let traps = |n: u64| {
            let end = run(
                &format!("raw-{op}-{n}"),
                &format!("ops={op} iters={n}"),
                &["--engine", "raw", "--set", "raw.patm=false"],
            );
            assert_eq!(end.exit, Some(0), "{op}");
            let (_, ops, _) = results(&end.com1)
                .into_iter()
                .find(|(o, _, _)| o == op)
                .expect("the operation's line");
            assert_eq!(ops, n, "{op}: operations");
            end.counters[counter].as_u64().unwrap_or(0)
        };
        // (Counts with as many digits, so that printing the results takes
        // the same port reads.)
        let (one, two) = (traps(4000), traps(7000));
        assert_eq!(
            two - one,
            3000,
            "{op}: {counter} {one} for 4000, {two} for 7000"
        );
    }
}

/// `paging=off` runs the operations that need no page tables unpaged (for
/// a KVM that runs only unpaged protected mode), and refuses the two that
/// do, with status 2.
#[test]
fn paging_off_runs_unpaged_and_refuses_the_operations_that_need_paging() {
    let end = run("unpaged", "ops=in,call-ret iters=100 paging=off", &[]);
    assert_eq!(end.exit, Some(0), "{}", end.com1);
    let ops: Vec<String> = results(&end.com1).into_iter().map(|r| r.0).collect();
    assert_eq!(ops, ["in", "call-ret"]);
    let end = run("unpaged-pf", "ops=pagefault paging=off", &[]);
    assert_eq!(end.exit, Some(2));
    assert!(
        end.com1.contains("pagefault and ptemod need paging"),
        "{}",
        end.com1
    );
}

/// Issue 13's count check on the hardware side: under kvm, N more INs are
/// N more I/O exits (each port read leaves the guest). Skipped, with the
/// reason, on a host whose KVM cannot run unpaged protected mode (a host
/// limit, not a missing tool: never a CI failure).
#[test]
fn under_kvm_n_more_ins_are_n_more_io_exits() {
    let engines = text(&ringside_with_input(&["engines"], b"").stdout);
    if !engines.contains("unpaged protected mode: yes") {
        println!("under_kvm_n_more_ins_are_n_more_io_exits: skipped: this host's KVM cannot run unpaged protected mode:\n{engines}");
        return;
    }
    // (exits_io, COM1 output) for n INs.
    let exits = |n: u32| {
        let cmdline = format!("ops=in iters={n} paging=off");
        let out = ringside_with_input(
            &[
                "run",
                "builtin:nanobench",
                "--engine",
                "kvm",
                "--clock",
                "fast",
                "--stats",
                "--cmdline",
                &cmdline,
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stats = text(&out.stderr);
        let json: serde_json::Value = serde_json::from_str(
            stats
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .expect("the --stats line"),
        )
        .expect("the --stats line is JSON");
        let com1 = text(&out.stdout);
        assert!(com1.contains(&format!("nanobench: in ops={n} ")), "{com1}");
        (
            json["counters"]["exits_io"]
                .as_u64()
                .expect("kvm counts I/O exits"),
            com1.len() as i64,
        )
    };
    let ((one, out_one), (two, out_two)) = (exits(4000), exits(7000));
    // Printing a character is a status read and a data write on COM1:
    // two exits more per character the second run printed more.
    assert_eq!(
        two as i64 - one as i64,
        3000 + 2 * (out_two - out_one),
        "exits_io {one} for 4000 INs, {two} for 7000"
    );
}
