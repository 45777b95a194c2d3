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
        println!("skipped: qemu-system-i386 is not installed");
        assert!(b.stdout.contains("qemu: skipped"), "{}", b.stdout);
    }
    let _ = std::fs::remove_dir_all(&b.dir);
}

#[test]
fn the_raw_engine_is_reported_not_built_and_the_rest_runs() {
    let b = bench("raw", &["--engines", "raw,interp", "--peers", "bochs"]);
    assert!(b.stdout.contains("raw: not built yet"), "{}", b.stdout);
    assert!(b.stdout.contains("bochs: skipped"), "{}", b.stdout);
    assert!(runs_of(&b.json, "raw").is_empty());
    assert_eq!(runs_of(&b.json, "interp").len(), 2);
    let _ = std::fs::remove_dir_all(&b.dir);
}
