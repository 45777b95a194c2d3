//! The `jit-torture` guest through the `ringside` command: every one of
//! its tests passes on the interpreter, and the recompiler ends it exactly
//! as the interpreter does (exit status, COM1 output, instruction count)
//! at the default threshold, at threshold 2000 (which every case's hot
//! loop passes before it changes anything), with every block compiled at
//! its first run, and with regions of 32 blocks; the lockstep comparator
//! finds no instruction where the two disagree, at thresholds 2000 and 1. The guest's IDE case needs a disk:
//! every run gets a fresh scratch image as the primary master.

mod common;

use common::{ringside_with_input, text};

/// A fresh 1 MiB scratch disk in the temp dir, named after `tag`; the
/// guest writes two sectors of it.
fn scratch_disk(tag: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "ringside-jit-torture-{}-{tag}.img",
        std::process::id()
    ));
    std::fs::write(&path, vec![0u8; 1 << 20]).expect("write a disk image to the temp dir");
    path.display().to_string()
}

struct End {
    exit: Option<i32>,
    com1: String,
    instructions: u64,
}

/// Runs the guest to its end with `engine_args`.
fn run(tag: &str, engine_args: &[&str]) -> End {
    let disk = scratch_disk(tag);
    let mut args = vec![
        "run",
        "builtin:jit-torture",
        "--clock",
        "fast",
        "--stats",
        "--disk",
        &disk,
    ];
    args.extend_from_slice(engine_args);
    let out = ringside_with_input(&args, b"");
    let _ = std::fs::remove_file(&disk);
    let stderr = text(&out.stderr);
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no statistics in {stderr}"));
    let stats: serde_json::Value = serde_json::from_str(json).expect("the statistics are JSON");
    End {
        exit: out.status.code(),
        com1: text(&out.stdout),
        instructions: stats["instructions"]
            .as_u64()
            .expect("the statistics hold an instruction count"),
    }
}

/// The numbered test lines of the guest's output, each with what follows
/// its "..." (a test that prints details goes on to a second line).
fn test_lines(com1: &str) -> Vec<(u32, String, String)> {
    let mut tests = Vec::new();
    let mut lines = com1.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some((number, rest)) = trimmed.split_once(' ') else {
            continue;
        };
        let (Ok(number), Some((name, verdict))) = (number.parse::<u32>(), rest.split_once(" ... "))
        else {
            continue;
        };
        let mut verdict = verdict.to_owned();
        if verdict.is_empty() {
            if let Some(details) = lines.next() {
                verdict = details.rsplit(" ... ").next().unwrap_or("").to_owned();
            }
        }
        tests.push((number, name.to_owned(), verdict));
    }
    tests
}

fn assert_every_test_passed(end: &End, what: &str) {
    assert_eq!(
        end.exit,
        Some(0),
        "{what}: exit status; output:\n{}",
        end.com1
    );
    let tests = test_lines(&end.com1);
    assert!(!tests.is_empty(), "{what}: no test lines in\n{}", end.com1);
    for (i, (number, name, verdict)) in tests.iter().enumerate() {
        assert_eq!(*number as usize, i + 1, "{what}: tests out of order");
        assert_eq!(verdict, "ok", "{what}: test {number} {name}");
    }
    assert!(
        tests.iter().any(|(_, name, _)| name.starts_with("IDE:")),
        "{what}: the IDE case did not run"
    );
    let summary = format!("jit-torture: {} passed, 0 skipped, 0 failed", tests.len());
    assert!(
        end.com1.lines().any(|l| l == summary),
        "{what}: no line {summary:?} in\n{}",
        end.com1
    );
}

fn assert_ends_like_interp(engine_args: &[&str], tag: &str) {
    let interp = run(&format!("{tag}-interp"), &["--engine", "interp"]);
    assert_every_test_passed(&interp, "interp");
    let jit = run(tag, engine_args);
    assert_every_test_passed(&jit, tag);
    assert_eq!(
        jit.com1, interp.com1,
        "{tag}: COM1 output differs from interp"
    );
    assert_eq!(
        jit.instructions, interp.instructions,
        "{tag}: instruction count differs from interp"
    );
}

#[test]
fn every_test_passes_on_interp_with_the_ide_case_run() {
    let end = run("interp", &["--engine", "interp"]);
    assert_every_test_passed(&end, "interp");
}

#[test]
fn jit_at_the_default_threshold_ends_like_interp() {
    assert_ends_like_interp(&["--engine", "jit"], "jit-default");
}

#[test]
fn jit_at_a_threshold_every_hot_loop_passes_ends_like_interp() {
    assert_ends_like_interp(&["--engine", "jit", "--jit-threshold", "2000"], "jit-2000");
}

#[test]
fn jit_compiling_every_block_at_its_first_run_ends_like_interp() {
    assert_ends_like_interp(&["--engine", "jit", "--jit-threshold", "1"], "jit-1");
}

#[test]
fn jit_with_regions_of_32_blocks_ends_like_interp() {
    assert_ends_like_interp(
        &[
            "--engine",
            "jit",
            "--jit-threshold",
            "1",
            "--jit-region-blocks",
            "32",
        ],
        "jit-1-regions-32",
    );
}

/// Lockstep from the first instruction to the guest's debug-exit, with
/// `jit_args` for the recompiler.
fn assert_compare_finds_no_divergence(threshold: &str, jit_args: &[&str]) {
    let disk = scratch_disk(&format!("compare-{threshold}"));
    let mut args = vec!["compare", "--engines", "interp,jit"];
    args.extend_from_slice(jit_args);
    args.extend_from_slice(&["builtin:jit-torture", "--disk", &disk]);
    let out = ringside_with_input(&args, b"");
    let _ = std::fs::remove_file(&disk);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "compare at threshold {threshold}: {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("no divergence")
            && stdout.contains("both stopped: debug-exit port written with 0"),
        "compare at threshold {threshold}: {stdout}"
    );
}

#[test]
fn compare_finds_no_divergence_with_every_block_compiled_at_its_first_run() {
    assert_compare_finds_no_divergence("1", &["--jit-threshold", "1"]);
}

#[test]
fn compare_finds_no_divergence_at_a_threshold_every_hot_loop_passes() {
    assert_compare_finds_no_divergence("2000", &["--jit-threshold", "2000"]);
}
