//! `ringside run` and `compare` when the guest resets the PC: the machine
//! reboots and `--stats` counts the reboots; `--no-reboot` (or
//! `machine.no_reboot`) stops with status 126 on a reset request and 125
//! on a triple fault, as before; a guest that resets forever ends at
//! `--max-insns`. On every engine (kvm where the host allows, with what it
//! skipped printed).

mod common;

use common::{ringside_with_input, text};
use std::process::Output;

fn ringside(args: &[&str]) -> Output {
    ringside_with_input(args, b"")
}

/// The `--stats` JSON object on stderr.
fn stats(out: &Output) -> serde_json::Value {
    common::stats_json(&text(&out.stderr), "the run")
}

/// The engines to run: interp and jit, and kvm when this host's KVM runs
/// unpaged protected mode (and, for a BIOS boot, real mode).
fn engines(test: &str, bios: bool) -> Vec<&'static str> {
    let mut engines = vec!["interp", "jit"];
    let report = text(&ringside(&["engines"]).stdout);
    let modes = report.contains("unpaged protected mode: yes")
        && (!bios || report.contains("real mode: yes"));
    if modes {
        engines.push("kvm");
    } else {
        println!("{test}: kvm skipped: this host's KVM cannot run the guest's modes:\n{report}");
    }
    engines
}

#[test]
fn run_reboots_the_guest_at_each_reset_and_counts_the_reboots() {
    let test = "run_reboots_the_guest_at_each_reset_and_counts_the_reboots";
    for (guest, bios) in [("builtin:reboot", false), ("builtin:reboot-disk", true)] {
        let mut counts = Vec::new();
        for engine in engines(test, bios) {
            let out = ringside(&[
                "run", guest, "--engine", engine, "--clock", "fast", "--stats",
            ]);
            let stdout = text(&out.stdout);
            let what = format!("{guest} on {engine}: {stdout}{}", text(&out.stderr));
            assert_eq!(out.status.code(), Some(0), "{what}");
            assert!(
                stdout.contains("reboot: boot 4 (CMOS counted 3, RAM counted 3)"),
                "{what}"
            );
            let stats = stats(&out);
            assert_eq!(stats["reboots"], 3, "{what}");
            assert_eq!(stats["exit"], "debug-exit", "{what}");
            if engine != "kvm" {
                counts.push(stats["instructions"].as_u64().expect("a count"));
            }
        }
        assert_eq!(
            counts[0], counts[1],
            "{guest}: interp and jit instruction counts"
        );
    }
}

#[test]
fn no_reboot_stops_with_126_on_a_reset_request_and_125_on_a_triple_fault() {
    let test = "no_reboot_stops_with_126_on_a_reset_request_and_125_on_a_triple_fault";
    let dir = std::env::temp_dir().join(format!("ringside-reboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = text(&ringside(&["config", "--print-default"]).stdout)
        .replace("no_reboot = false", "no_reboot = true");
    assert!(
        toml.contains("no_reboot = true"),
        "machine.no_reboot is a key:\n{toml}"
    );
    let machine = dir.join("no-reboot.toml");
    std::fs::write(&machine, toml).expect("write the configuration");
    let machine = machine.to_str().expect("a UTF-8 path");
    for engine in engines(test, false) {
        for (first, status, message) in [
            ("first=1", 126, "the guest requested a reset"),
            ("first=2", 126, "the guest requested a reset"),
            ("first=3", 125, "triple fault (shutdown) at 0008:"),
        ] {
            for how in [vec!["--no-reboot"], vec!["--machine", machine]] {
                let mut args = vec!["run", "builtin:reboot", "--cmdline", first];
                args.extend(["--engine", engine, "--clock", "fast", "--stats"]);
                args.extend(how);
                let out = ringside(&args);
                let what = format!("{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
                assert_eq!(out.status.code(), Some(status), "{what}");
                assert!(text(&out.stderr).contains(message), "{what}");
                assert_eq!(stats(&out)["reboots"], 0, "{what}");
            }
        }
    }
}

#[test]
fn a_guest_that_resets_forever_ends_at_max_insns() {
    // mov al, 0xfe; out 0x64, al; jmp $  at the reset vector.
    let dir = std::env::temp_dir().join(format!("ringside-reboot-rom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rom = dir.join("reset.bin");
    let mut image = vec![0xF4u8; 0x10000];
    image[0xFFF0..0xFFF6].copy_from_slice(&[0xB0, 0xFE, 0xE6, 0x64, 0xEB, 0xFE]);
    std::fs::write(&rom, &image).expect("write the ROM");
    let rom = rom.to_str().expect("a UTF-8 path");
    let mut seen = Vec::new();
    for engine in ["interp", "jit", "interp"] {
        let out = ringside(&[
            "run",
            "--bios",
            rom,
            "--engine",
            engine,
            "--max-insns",
            "100000",
            "--stats",
        ]);
        let what = format!("{engine}: {}", text(&out.stderr));
        assert_eq!(out.status.code(), Some(124), "{what}");
        let stats = stats(&out);
        assert_eq!(stats["instructions"], 100_000, "{what}");
        let reboots = stats["reboots"].as_u64().expect("a count");
        assert!((49_999..=50_000).contains(&reboots), "{what}");
        seen.push(reboots);
    }
    assert!(seen.iter().all(|&r| r == seen[0]), "{seen:?}");
}

#[test]
fn compare_follows_both_engines_through_the_reboots() {
    let test = "compare_follows_both_engines_through_the_reboots";
    let mut partners = vec!["jit"];
    if engines(test, false).contains(&"kvm") {
        partners.push("kvm");
    }
    for partner in partners {
        let pair = format!("interp,{partner}");
        let out = ringside(&["compare", "--engines", &pair, "builtin:reboot"]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{pair}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("both stopped: debug-exit port written with 0"),
            "{pair}: {stdout}"
        );
    }
}
