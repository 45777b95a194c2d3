//! The recompiler (`--engine jit`) against the interpreter, through the
//! `ringside` command as users run it: every built-in guest ends the same
//! way (exit status, COM1 output, instruction count) at the default
//! threshold and with every block compiled at its first run, and the
//! lockstep comparator finds no instruction where they disagree.

mod common;

use common::{compare_every_guest_with, guest_args, ringside_with_input, stats_json, text, GUESTS};

/// The list above is every guest `ringside guests` names, but bench-int
/// and bench-int-disk, whose short variants run the same code.
#[test]
fn the_guest_list_covers_every_built_in_guest() {
    let out = ringside_with_input(&["guests"], b"");
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.strip_prefix("builtin:").map(str::to_owned))
        .filter(|n| n != "bench-int" && n != "bench-int-disk")
        .collect();
    let mut ours: Vec<&str> = GUESTS.iter().map(|g| g.0).collect();
    let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    ours.sort_unstable();
    listed.sort_unstable();
    assert_eq!(ours, listed);
}

/// Run a guest to its end; returns (exit status, stdout, instructions,
/// the share of instructions retired in translated code, per mille).
fn run(guest: &str, input: &[u8], engine_args: &[&str]) -> (Option<i32>, String, u64, u64) {
    let image = format!("builtin:{guest}");
    let extra = guest_args(guest, "jit");
    let mut args = vec!["run", &image, "--clock", "fast", "--stats"];
    args.extend_from_slice(engine_args);
    args.extend(extra.iter().map(String::as_str));
    let out = ringside_with_input(&args, input);
    let v = stats_json(&text(&out.stderr), guest);
    let share = v["counters"]["native_share_permille"].as_u64().unwrap_or(0);
    (
        out.status.code(),
        text(&out.stdout),
        v["instructions"].as_u64().expect("an instruction count"),
        share,
    )
}

#[test]
fn every_built_in_guest_ends_alike_on_jit_and_interp() {
    let mut wrong = Vec::new();
    for &(guest, input) in GUESTS {
        let reference = run(guest, input, &["--engine", "interp"]);
        for (threshold, regions) in [("1", "1"), ("1", "32"), ("2000", "1")] {
            let jit = run(
                guest,
                input,
                &[
                    "--engine",
                    "jit",
                    "--jit-threshold",
                    threshold,
                    "--jit-region-blocks",
                    regions,
                ],
            );
            println!(
                "{guest} threshold {threshold}, regions of {regions}: {} instructions, {}\u{2030} in translated code",
                jit.2, jit.3
            );
            if reference.0 != Some(0) {
                wrong.push(format!(
                    "{guest} on interp: exit {:?}, output {:?}",
                    reference.0, reference.1
                ));
            }
            if (&jit.0, &jit.1, jit.2) != (&reference.0, &reference.1, reference.2) {
                wrong.push(format!(
                    "{guest} at threshold {threshold}, regions of {regions}: exit {:?}, {} instructions, output {:?}; interp: exit {:?}, {} instructions, output {:?}",
                    jit.0, jit.2, jit.1, reference.0, reference.2, reference.1
                ));
            }
            if threshold == "1" && jit.3 < 900 {
                wrong.push(format!(
                    "{guest}: only {}\u{2030} of the instructions ran in translated code at threshold 1",
                    jit.3
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The comparator steps both engines; a step on jit runs the instruction's
/// own translation, so this checks every translated instruction of every
/// guest against the interpreter. pc-hw (55 million instructions, four
/// minutes in lockstep) is compared over its first five million here; its
/// full run is compared by hand (docs/jit.md). The demo OS gets a shell
/// session on stdin (`run hello`, `poweroff`: `run bench` alone is longer
/// than the comparator's limit) and is compared to its power-off.
#[test]
fn compare_finds_no_divergence_between_interp_and_jit() {
    let wrong = compare_every_guest_with("jit");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A block of a region compiled for another entry (a loop entered at its
/// preheader, then at its head) is entered through that region's code
/// instead of being compiled again (`region_entries`), and the guest's
/// results stay the interpreter's. Foreground compiles keep the count
/// deterministic.
#[test]
fn a_hot_block_inside_another_entrys_region_enters_that_regions_code() {
    for guest in ["bench-int-small", "jit-torture"] {
        let reference = run(guest, b"", &["--engine", "interp"]);
        let image = format!("builtin:{guest}");
        let mut args = vec![
            "run",
            &image,
            "--clock",
            "fast",
            "--stats",
            "--engine",
            "jit",
            "--jit-threshold",
            "50",
            "--jit-background",
            "false",
        ];
        let extra = guest_args(guest, "jit");
        args.extend(extra.iter().map(String::as_str));
        let out = ringside_with_input(&args, b"");
        let v = stats_json(&text(&out.stderr), guest);
        let entries = v["counters"]["region_entries"]
            .as_u64()
            .expect("region_entries");
        let instructions = v["instructions"].as_u64().expect("an instruction count");
        println!("{guest}: {entries} region entries");
        assert!(
            entries >= 1,
            "{guest}: no block entered another entry's region"
        );
        assert_eq!(
            (out.status.code(), text(&out.stdout), instructions),
            (reference.0, reference.1, reference.2),
            "{guest}: jit with region entries differs from interp"
        );
    }
}
