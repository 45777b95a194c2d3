//! The `ringside` command as users run it: the default guest, `run` with
//! ROMs and built-ins, statistics, `guests`, `conformance sst`, and clean
//! errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ringside(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .expect("the ringside binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringside-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn no_command_runs_the_default_guest() {
    let out = ringside(&[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("Hello from ringside!"));
}

#[test]
fn debug_exit_value_becomes_the_exit_status() {
    // mov al, 5; out 0xF4, al  at the reset vector (F000:FFF0).
    let dir = temp_dir("rom5");
    let rom = dir.join("rom.bin");
    let mut image = vec![0xF4u8; 0x10000];
    image[0xFFF0..0xFFF4].copy_from_slice(&[0xB0, 0x05, 0xE6, 0xF4]);
    std::fs::write(&rom, &image).unwrap();
    let out = ringside(&["run", "--bios", rom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
}

#[test]
fn cli_hlt_stops_with_a_message_saying_where() {
    let dir = temp_dir("hlt");
    let rom = dir.join("rom.bin");
    let mut image = vec![0x90u8; 0x1000];
    image[0xFF0..0xFF2].copy_from_slice(&[0xFA, 0xF4]); // cli; hlt
    std::fs::write(&rom, &image).unwrap();
    let out = ringside(&["run", "--bios", rom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("halted with interrupts disabled at f000:0000fff2"),
        "stderr: {err}"
    );
}

#[test]
fn stats_json_reports_the_run() {
    let dir = temp_dir("stats");
    let path = dir.join("stats.json");
    let out = ringside(&[
        "run",
        "builtin:bench-int-small",
        "--stats-json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["engine"], "interp");
    assert_eq!(v["exit"], "debug-exit");
    assert_eq!(v["exit_code"], 0);
    assert!(v["instructions"].as_u64().unwrap() > 1_000_000);
    assert!(v["mips"].as_f64().unwrap() > 0.0);
    assert!(v["wall_s"].as_f64().is_some());
    assert!(v["post_code"].is_null());
    assert!(v["counters"]["blocks_decoded"].as_u64().unwrap() > 0);
}

#[test]
fn max_insns_stops_the_run_with_status_124() {
    let out = ringside(&["run", "builtin:bench-int", "--max-insns", "1000"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("instruction limit"));
}

#[test]
fn guests_are_listed_and_exported() {
    let out = ringside(&["guests"]);
    let list = text(&out.stdout);
    assert!(list.contains("builtin:bench-int"));
    assert!(list.contains("builtin:hello"));
    let dir = temp_dir("export");
    let out = ringside(&["guests", "--export", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let elf = std::fs::read(dir.join("hello.elf")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    // An exported guest runs like the built-in one.
    let out = ringside(&["run", dir.join("hello.elf").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bad_inputs_are_clear_errors_not_panics() {
    let dir = temp_dir("bad");
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"not a kernel").unwrap();
    for args in [
        vec!["run", junk.to_str().unwrap()],
        vec!["run", "builtin:no-such-guest"],
        vec!["run", "/no/such/file"],
        vec!["run", "builtin:hello", "--engine", "warp"],
        vec!["run", "builtin:hello", "--mem", "0"],
    ] {
        let out = ringside(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("error:") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn conformance_sst_ends_with_the_summary_line() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/sst286-real");
    if !suite.is_dir() {
        println!("skipped: {} is not present", suite.display());
        return;
    }
    // A two-file copy keeps this test quick; the full suite runs in
    // testsuites/tests/sst286_real.rs.
    let dir = temp_dir("sst");
    for f in ["00.json.gz", "F7.6.json.gz"] {
        std::fs::copy(suite.join(f), dir.join(f)).unwrap();
    }
    let out = ringside(&["conformance", "sst", dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    assert_eq!(last, "236 passed, 0 failed, 4 skipped", "output: {stdout}");
    assert!(stdout.contains("skipped 4: LOCK on a non-lockable instruction"));
    assert_eq!(out.status.code(), Some(0));
    let out = ringside(&["conformance", "sst", dir.to_str().unwrap(), "--json"]);
    let stdout = text(&out.stdout);
    let json_end = stdout.rfind('}').unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout[..=json_end]).unwrap();
    assert_eq!(
        v["F7.6"]["passed"].as_u64().unwrap() + v["F7.6"]["skipped"].as_u64().unwrap(),
        120
    );
    assert_eq!(v["F7.6"]["failed"], 0);
}

#[test]
fn a_disk_boots_through_ringsides_bios() {
    let dir = temp_dir("disk");
    let disk = dir.join("boot-test.img");
    std::fs::write(&disk, ringside_firmware::BOOT_TEST_DISK).unwrap();
    let spec = format!("{},snapshot", disk.display());
    let out = ringside(&["run", "--disk", &spec, "--clock", "fast"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("ringside BIOS"), "{stdout}");
    assert!(stdout.contains("boot-test: all checks passed"), "{stdout}");
    // Snapshot mode: the test's sector-100 write never reached the file.
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        ringside_firmware::BOOT_TEST_DISK
    );
}

#[test]
fn default_configuration_prints_and_loads_back() {
    let out = ringside(&["config", "--print-default"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = temp_dir("config");
    let path = dir.join("machine.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let out = ringside(&["run", "builtin:hello", "--machine", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn a_wrong_configuration_key_is_named_in_the_error() {
    let dir = temp_dir("badconfig");
    let path = dir.join("machine.toml");
    let good = text(&ringside(&["config", "--print-default"]).stdout);
    std::fs::write(&path, good.replace("memory_mib", "memory_megs")).unwrap();
    let out = ringside(&["run", "builtin:hello", "--machine", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("memory_megs") && !err.contains("panicked"),
        "{err}"
    );
}
