//! `ringside bench` on a short workload set and one repetition: the
//! shapes of its table, JSON and SVG figures, never their timings.

mod common;

use std::path::PathBuf;

use common::{ringside_with_input, text};

/// A fresh directory for one test's output files.
fn out_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringside-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}

fn have_qemu() -> bool {
    std::process::Command::new("qemu-system-i386")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Bench {
    stdout: String,
    json: serde_json::Value,
    dir: PathBuf,
}

/// `ringside bench --quick --reps 1` on bench-int-small and one
/// nanobenchmark, with `extra` options, writing out.json and out.svg.
fn bench(tag: &str, extra: &[&str]) -> Bench {
    let dir = out_dir(tag);
    let json = dir.join("out.json");
    let svg = dir.join("out.svg");
    let mut args = vec![
        "bench",
        "--quick",
        "--reps",
        "1",
        "--workloads",
        "bench-int-small,nano-call-ret",
        "--json",
        json.to_str().expect("the temp dir is UTF-8"),
        "--plot",
        svg.to_str().expect("the temp dir is UTF-8"),
    ];
    args.extend_from_slice(extra);
    let out = ringside_with_input(&args, b"");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(&json).expect("the JSON is written"))
        .expect("the JSON parses");
    Bench { stdout, json, dir }
}

fn runs_of<'a>(json: &'a serde_json::Value, engine: &str) -> Vec<&'a serde_json::Value> {
    json["runs"]
        .as_array()
        .expect("runs is an array")
        .iter()
        .filter(|r| r["engine"] == engine)
        .collect()
}

#[test]
fn interp_and_jit_write_a_table_a_json_record_and_two_figures() {
    let b = bench("interp-jit", &["--engines", "interp,jit"]);
    for engine in ["interp", "jit"] {
        let rows = b
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(engine))
            .count();
        assert_eq!(rows, 2, "one row per workload for {engine}:\n{}", b.stdout);
        let runs = runs_of(&b.json, engine);
        assert_eq!(runs.len(), 2, "{engine}: one run per workload");
        for r in runs {
            assert_eq!(r["status"], "ok", "{r}");
            assert!(r["workload"].is_string(), "{r}");
            assert!(r["instructions"].as_u64().is_some_and(|n| n > 0), "{r}");
            assert!(r["wall_ns"].as_u64().is_some_and(|n| n > 0), "{r}");
            assert!(r["user_ns"].is_u64() && r["sys_ns"].is_u64(), "{r}");
        }
    }
    let nano = runs_of(&b.json, "interp")
        .into_iter()
        .find(|r| r["workload"] == "nano-call-ret")
        .expect("a nanobenchmark run");
    assert_eq!(nano["nanobench"]["ops"], 10000, "{nano}");
    let jit = &runs_of(&b.json, "jit")[0];
    assert!(jit["engine_costs"]["compile_s"].is_number(), "{jit}");
    assert!(b.json["ringside_commit"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(b.json["host"]["cpu"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    let summaries = b.json["summaries"].as_array().expect("summaries");
    assert_eq!(summaries.len(), 4, "two workloads by two engines");
    for s in summaries {
        assert!(s["wall_s"]["median"].is_number(), "{s}");
        assert!(s["mips"].is_number(), "{s}");
    }
    for svg in ["out.svg", "out-nano.svg"] {
        let body = std::fs::read_to_string(b.dir.join(svg)).expect("the figure is written");
        assert!(
            body.starts_with("<svg"),
            "{svg}: {}",
            &body[..body.len().min(80)]
        );
    }
    let _ = std::fs::remove_dir_all(&b.dir);
}

/// kvm on this host may be absent or unable to run paged guests: either
/// way the command runs the rest and says why.
#[test]
fn interp_and_kvm_with_the_qemu_peer_run_or_give_reasons() {
    let b = bench("kvm-qemu", &["--engines", "interp,kvm", "--peers", "qemu"]);
    assert!(b.stdout.contains("kvm"), "{}", b.stdout);
    assert_eq!(runs_of(&b.json, "interp").len(), 2);
    if have_qemu() {
        let qemu = runs_of(&b.json, "qemu");
        assert_eq!(qemu.len(), 2, "one qemu run per workload");
        assert!(qemu.iter().all(|r| r["kind"] == "peer"));
        let version = &b.json["peers"][0]["version"];
        assert!(
            version.as_str().is_some_and(|v| v.contains("QEMU")),
            "{version}"
        );
        assert!(
            b.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("qemu")),
            "{}",
            b.stdout
        );
    } else {
        assert!(b.stdout.contains("qemu: skipped"), "{}", b.stdout);
        ringside_testsuites::skip_unless_ci(
            "the QEMU peer of this test",
            "qemu-system-i386 is not installed (Debian package qemu-system-x86)",
        );
    }
    let _ = std::fs::remove_dir_all(&b.dir);
}

#[test]
fn raw_runs_beside_interp_with_its_traps() {
    let b = bench("raw", &["--engines", "raw,interp"]);
    let raw = runs_of(&b.json, "raw");
    assert_eq!(raw.len(), 2, "one run per workload");
    assert_eq!(runs_of(&b.json, "interp").len(), 2);
    assert!(
        b.stdout
            .lines()
            .any(|l| l.contains(" raw ") && l.contains("traps/op")),
        "the nanobenchmark row gives raw's traps per operation: {}",
        b.stdout
    );
    let _ = std::fs::remove_dir_all(&b.dir);
}

/// The Bochs peer boots the disk benchmark through its own BIOS on a
/// pseudo-terminal, beside the interpreter and QEMU booting the same
/// disk, and says why it cannot run a Multiboot kernel; where Bochs is
/// not installed the command says so (and the test skips, counted).
#[test]
fn bochs_runs_the_disk_benchmark_and_gives_its_reason_for_a_kernel() {
    let dir = out_dir("bochs");
    let json = dir.join("out.json");
    let out = ringside_with_input(
        &[
            "bench",
            "--reps",
            "1",
            "--engines",
            "interp",
            "--peers",
            "bochs",
            "--workloads",
            "bench-int-small-disk,bench-int-small",
            "--json",
            json.to_str().expect("the temp dir is UTF-8"),
        ],
        b"",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON is written")).unwrap();
    if stdout.contains("bochs: skipped") {
        ringside_testsuites::skip_unless_ci(
            "the Bochs peer test",
            "bochs is not installed (Debian packages bochs, bochs-term, bochsbios, vgabios)",
        );
        return;
    }
    let bochs = runs_of(&json, "bochs");
    assert_eq!(bochs.len(), 2, "{bochs:?}");
    let disk = bochs
        .iter()
        .find(|r| r["workload"] == "bench-int-small-disk")
        .expect("a Bochs run of the disk");
    assert_eq!(disk["status"], "ok", "{disk}");
    assert!(disk["wall_ns"].as_u64().is_some_and(|ns| ns > 0), "{disk}");
    let kernel = bochs
        .iter()
        .find(|r| r["workload"] == "bench-int-small")
        .expect("a Bochs record of the kernel");
    assert_eq!(kernel["status"], "not runnable", "{kernel}");
    assert!(
        kernel["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Bochs boots disks only")),
        "{kernel}"
    );
    let peer = &json["peers"][0];
    assert_eq!(peer["name"], "bochs");
    assert!(
        peer["version"]
            .as_str()
            .is_some_and(|v| v.contains("Bochs x86 Emulator")),
        "{peer}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("bench-int-small-disk")
            && l.contains(" bochs ")
            && l.ends_with('x')),
        "a Bochs row with its ratio to the interpreter: {stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A book chapter's `$ ringside bench` command, split into words, after
/// checking its workloads and repetitions against the JSON record beside
/// it; and those workloads.
fn chapter_command<'a>(
    chapter: &'a str,
    json: &serde_json::Value,
    json_name: &str,
) -> (Vec<&'a str>, Vec<String>) {
    let writes = format!("--json book/src/{json_name}");
    let command = chapter
        .lines()
        .filter_map(|l| l.strip_prefix("$ ringside bench "))
        .find(|c| {
            c.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&writes)
        })
        .unwrap_or_else(|| panic!("the chapter shows its `$ ringside bench ... {writes}` command"));
    let words: Vec<&str> = command.split_whitespace().collect();
    let workloads = names(option(&words, "--workloads"));
    let recorded: Vec<&str> = json["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .map(|w| w["name"].as_str().expect("a workload's name"))
        .collect();
    assert_eq!(workloads, recorded, "the command's workloads");
    assert_eq!(
        option(&words, "--reps").map(str::to_owned),
        json["settings"]["reps"].as_u64().map(|n| n.to_string()),
        "the command's repetitions"
    );
    (words, workloads)
}

/// The value of `--NAME` on a command line split into words.
fn option<'a>(words: &[&'a str], name: &str) -> Option<&'a str> {
    let at = words.iter().position(|w| *w == name)?;
    words.get(at + 1).copied()
}

fn names(list: Option<&str>) -> Vec<String> {
    list.map_or(Vec::new(), |l| l.split(',').map(String::from).collect())
}

/// A `ringside bench` run the chapter shows: its command (the one that
/// writes `json_name`) against the record, and every table row against
/// the record's summaries; the run's workloads.
fn check_run(chapter: &str, json: &serde_json::Value, json_name: &str) -> Vec<String> {
    let (words, workloads) = chapter_command(chapter, json, json_name);
    let mut engines: Vec<&str> = json["engines"]
        .as_array()
        .expect("engines")
        .iter()
        .chain(json["skipped"].as_array().expect("skipped"))
        .map(|e| e.as_str().or(e["name"].as_str()).expect("a name"))
        .filter(|e| !matches!(*e, "qemu" | "bochs"))
        .collect();
    engines.sort_unstable();
    let mut asked = names(option(&words, "--engines"));
    asked.sort_unstable();
    assert_eq!(asked, engines, "the command's engines");
    let peers: Vec<&str> = json["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["name"].as_str().expect("a peer's name"))
        .collect();
    assert_eq!(
        names(option(&words, "--peers")),
        peers,
        "the command's peers"
    );

    let summaries = json["summaries"].as_array().expect("summaries");
    let summary = |workload: &str, runner: &str| {
        summaries
            .iter()
            .find(|s| s["workload"] == workload && s["engine"] == runner)
            .unwrap_or_else(|| panic!("no summary for {workload} on {runner}"))
    };
    let ms = |s: &serde_json::Value, field: &str| {
        s["wall_s"][field].as_f64().expect("a wall time") * 1e3
    };
    let mut rows = 0;
    for line in chapter.lines() {
        let mut cells = line.split_whitespace();
        let (Some(workload), Some(runner)) = (cells.next(), cells.next()) else {
            continue;
        };
        if !workloads.iter().any(|w| w == workload) {
            continue;
        }
        rows += 1;
        let s = summary(workload, runner);
        match s["status"].as_str() {
            Some(reason) => assert!(line.contains(reason), "{line}\nvs the record: {reason}"),
            None => {
                let wall = format!(
                    "{:.1} [{:.1}-{:.1}]",
                    ms(s, "median"),
                    ms(s, "min"),
                    ms(s, "max")
                );
                assert!(line.contains(&wall), "{line}\nvs the record: {wall}");
            }
        }
    }
    assert_eq!(rows, summaries.len(), "one table row per summary");

    workloads
}

/// The book's "Engines compared" chapter shows a command, the table it
/// printed and, beside it, the JSON record of the same run. After a new
/// run all three must be replaced together: this fails when the command's
/// workloads, engines, peers or repetitions are not the record's, when a
/// table row has no summary in the record (or its wall time or reason is
/// not the record's), and when a nanobenchmark figure the chapter quotes
/// is not the record's.
#[test]
fn the_engines_compared_chapter_matches_its_json_record() {
    let chapter = include_str!("../../book/src/engines-compared.md");
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../book/src/engines-compared.json"))
            .expect("the chapter's JSON record parses");
    let workloads = check_run(chapter, &json, "engines-compared.json");
    // The second run: kvm on the operations this host's KVM runs unpaged.
    let kvm: serde_json::Value =
        serde_json::from_str(include_str!("../../book/src/engines-compared-kvm.json"))
            .expect("the chapter's second JSON record parses");
    check_run(chapter, &kvm, "engines-compared-kvm.json");
    let summaries = json["summaries"].as_array().expect("summaries");
    let summary = |workload: &str, runner: &str| {
        summaries
            .iter()
            .find(|s| s["workload"] == workload && s["engine"] == runner)
            .unwrap_or_else(|| panic!("no summary for {workload} on {runner}"))
    };

    // The comparison with Adams and Agesen quotes interp's, jit's and
    // raw's ns/op, and raw's traps per operation.
    let mut quoted = 0;
    for line in chapter.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(workload) = cells.get(2).and_then(|c| c.strip_prefix('`')) else {
            continue;
        };
        let workload = workload.trim_end_matches('`');
        if workload.contains('`') || !workloads.iter().any(|w| w == workload) {
            continue;
        }
        for (column, runner) in [(3, "interp"), (4, "jit"), (5, "raw")] {
            let ns = summary(workload, runner)["ns_per_op"]
                .as_f64()
                .expect("a nanobenchmark's ns/op");
            let cell = cells[column].split_whitespace().next().unwrap_or("");
            assert_eq!(cell, format!("{ns:.1}"), "{workload} on {runner}");
        }
        // raw's traps per operation, in brackets after its ns/op.
        let traps = summary(workload, "raw")["engine_costs"]["traps_per_op"]
            .as_f64()
            .expect("raw's traps per operation");
        assert!(
            cells[5].ends_with(&format!("({traps:.2})")),
            "{workload}: {} vs the record's {traps:.2} traps/op",
            cells[5]
        );
        quoted += 1;
    }
    assert!(quoted >= 8, "the nanobenchmark table quotes {quoted} rows");
}

/// The book's "Raw mode, CSAM and PATM" chapter shows a `ringside bench`
/// command, the table it printed, and counters of its demo session, all
/// from the JSON record beside it: this fails when the command and the
/// record differ, when a table row's traps do not match the record's
/// summary, or when a quoted counter is not the record's.
#[test]
fn the_raw_mode_chapter_matches_its_json_record() {
    let chapter = include_str!("../../book/src/raw-mode.md");
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../book/src/raw-mode.json"))
            .expect("the chapter's JSON record parses");
    let (words, workloads) = chapter_command(chapter, &json, "raw-mode.json");
    let engines: Vec<&str> = json["engines"]
        .as_array()
        .expect("engines")
        .iter()
        .map(|e| e.as_str().expect("an engine"))
        .collect();
    assert_eq!(names(option(&words, "--engines")), engines);

    let summaries = json["summaries"].as_array().expect("summaries");
    let mut rows = 0;
    for line in chapter.lines() {
        let mut cells = line.split_whitespace();
        let (Some(workload), Some(runner)) = (cells.next(), cells.next()) else {
            continue;
        };
        if !workloads.iter().any(|w| w == workload) {
            continue;
        }
        let s = summaries
            .iter()
            .find(|s| s["workload"] == workload && s["engine"] == runner)
            .unwrap_or_else(|| panic!("no summary for {workload} on {runner}"));
        let per_1000 = s["engine_costs"]["traps_per_1000_insns"]
            .as_f64()
            .expect("traps per 1000 instructions");
        assert!(
            line.contains(&format!("{per_1000:.2}/1k")),
            "{line}\nvs the record: {per_1000:.2}/1k"
        );
        rows += 1;
    }
    assert_eq!(rows, summaries.len(), "one table row per summary");

    // The quoted counters: `raw.NAME VALUE` lines, from the first raw run
    // of the demo session.
    let run = json["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["workload"] == "demo-session" && r["engine"] == "raw")
        .expect("a raw run of the demo session");
    let counters = &run["stats"]["counters"];
    let mut quoted = 0;
    for line in chapter.lines() {
        let mut cells = line.split_whitespace();
        let (Some(name), Some(value), None) = (cells.next(), cells.next(), cells.next()) else {
            continue;
        };
        if !(name.starts_with("raw.") || name.starts_with("em.")) {
            continue;
        }
        assert_eq!(
            counters[name].as_u64().map(|v| v.to_string()).as_deref(),
            Some(value),
            "{name}"
        );
        quoted += 1;
    }
    assert!(quoted >= 10, "the chapter quotes {quoted} counters");
}
