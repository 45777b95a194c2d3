//! Raw mode (`--engine raw`: ring compression on the interpreter
//! substrate behind the execution manager) against the interpreter,
//! through the `ringside` command: every built-in guest ends the same way
//! (exit status, COM1 output, instruction count), and the lockstep
//! comparator, which steps raw mode through its substrate and monitor one
//! instruction at a time, finds no instruction where they disagree.

mod common;

use common::{compare_every_guest_with, guest_args, ringside_with_input, stats_json, text, GUESTS};

/// Run a guest to its end; returns (exit status, stdout, instructions,
/// the raw counters as JSON).
fn run(guest: &str, input: &[u8], engine: &str) -> (Option<i32>, String, u64, serde_json::Value) {
    let image = format!("builtin:{guest}");
    let extra = guest_args(guest, "raw");
    let mut args = vec![
        "run", &image, "--clock", "fast", "--stats", "--engine", engine,
    ];
    args.extend(extra.iter().map(String::as_str));
    let out = ringside_with_input(&args, input);
    let v = stats_json(&text(&out.stderr), guest);
    (
        out.status.code(),
        text(&out.stdout),
        v["instructions"].as_u64().expect("an instruction count"),
        v["counters"].clone(),
    )
}

#[test]
fn every_built_in_guest_ends_alike_on_raw_and_interp() {
    let mut wrong = Vec::new();
    let mut ran_on_the_substrate = 0;
    for &(guest, input) in GUESTS {
        let reference = run(guest, input, "interp");
        let raw = run(guest, input, "raw");
        let substrate = raw.3["raw.substrate_instructions"].as_u64().unwrap_or(0);
        println!(
            "{guest}: {} instructions, {substrate} on the substrate, {} monitor entries",
            raw.2, raw.3["raw.monitor_entries"]
        );
        if substrate > 0 {
            ran_on_the_substrate += 1;
        }
        if (&raw.0, &raw.1, raw.2) != (&reference.0, &reference.1, reference.2) {
            wrong.push(format!(
                "{guest}: exit {:?}, {} instructions, output {:?}; interp: exit {:?}, {} instructions, output {:?}",
                raw.0, raw.2, raw.1, reference.0, reference.2, reference.1
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        ran_on_the_substrate >= 8,
        "only {ran_on_the_substrate} guests paged on raw"
    );
}

/// The comparator steps both engines; a raw step runs the instruction on
/// the substrate at ring 1 or 3, or through the monitor. The demo OS gets a
/// shell session and is compared to its power-off; pc-hw over its first
/// five million instructions.
#[test]
fn compare_finds_no_divergence_between_interp_and_raw() {
    let wrong = compare_every_guest_with("raw");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Monitor traps per 1,000 guest instructions of a run, and the run's
/// instruction count and stdout.
fn traps_per_1000(args: &[&str], input: &[u8]) -> (f64, u64, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["--engine", "raw", "--clock", "fast", "--stats"]);
    let out = ringside_with_input(&all, input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("statistics");
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let n = v["instructions"].as_u64().expect("instructions");
    let traps = v["counters"]["raw.monitor_entries"]
        .as_u64()
        .expect("raw.monitor_entries");
    (traps as f64 * 1000.0 / n as f64, n, text(&out.stdout))
}

/// The yardstick for PATM: with `raw.patm = false` every CLI,
/// STI, PUSHF, POPF (and the IRET and segment pushes of a kernel entry)
/// traps; patched, they run as patch code. Monitor traps per 1,000 guest
/// instructions must drop at least tenfold on the CLI/STI and PUSHF/POPF
/// nanobenchmarks and on the demo OS's shell session, which must run the
/// same instructions and print the same either way.
#[test]
fn patching_cuts_monitor_traps_per_instruction_tenfold() {
    let session: &[u8] = b"help\nps\nrun hello\nrun syscalls\npoweroff\n";
    for (what, args, input) in [
        (
            "nanobench cli-sti",
            vec!["builtin:nanobench", "--cmdline", "ops=cli-sti iters=20000"],
            &b""[..],
        ),
        (
            "nanobench pushf-popf",
            vec![
                "builtin:nanobench",
                "--cmdline",
                "ops=pushf-popf iters=20000",
            ],
            &b""[..],
        ),
        ("demo session", vec!["builtin:demo"], session),
    ] {
        let (patched, n1, out1) = traps_per_1000(&args, input);
        let mut off = args.clone();
        off.extend(["--set", "raw.patm=false"]);
        let (trapping, n2, out2) = traps_per_1000(&off, input);
        assert_eq!(n1, n2, "{what}: the same instructions");
        assert_eq!(out1, out2, "{what}: the same output");
        assert!(
            trapping >= 10.0 * patched,
            "{what}: {trapping:.2} traps/1000 unpatched against {patched:.2} patched"
        );
        println!(
            "{what}: {trapping:.2} traps per 1000 instructions unpatched, {patched:.2} patched"
        );
    }
}
