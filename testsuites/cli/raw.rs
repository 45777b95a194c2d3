//! Raw mode (`--engine raw`: ring compression on the interpreter
//! substrate behind the execution manager) against the interpreter,
//! through the `ringside` command: every built-in guest ends the same way
//! (exit status, COM1 output, instruction count), and the lockstep
//! comparator, which steps raw mode through its substrate and monitor one
//! instruction at a time, finds no instruction where they disagree.

mod common;

use common::{compare_every_guest_with, guest_args, ringside_with_input, text, GUESTS};

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
    let stderr = text(&out.stderr);
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{guest}: no statistics in {stderr}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("the statistics are JSON");
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
