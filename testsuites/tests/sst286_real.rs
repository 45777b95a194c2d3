//! Acceptance: the hardware-captured 80286 real-mode tests in
//! ../shared/conformance/sst286-real pass on the interpreter at 99.5% or
//! better of the tests that are not skipped.

use std::path::PathBuf;

use ringside_core::Engine;
use ringside_testsuites::sst;

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/sst286-real")
}

#[test]
fn interpreter_passes_the_286_real_mode_suite() {
    let dir = suite_dir();
    if !dir.is_dir() {
        ringside_testsuites::skip_unless_ci(
            "interpreter_passes_the_286_real_mode_suite",
            &format!("{} is not present on this machine", dir.display()),
        );
        return;
    }
    let factory = || Box::new(ringside_interp::Interp::new()) as Box<dyn Engine>;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = sst::run_dir(&dir, &factory, threads).expect("the suite loads");
    for (file, r) in &report.per_file {
        for f in &r.failures {
            println!("FAIL {file}: {f}");
        }
    }
    for (reason, n) in report.skip_reasons() {
        println!("skipped {n}: {reason}");
    }
    let (passed, failed, skipped) = report.totals();
    println!("{}", report.summary());
    assert_eq!(
        passed + failed + skipped,
        39_000,
        "the suite holds 39,000 tests"
    );
    assert!(
        skipped < 1_000,
        "exclusions must stay narrow: {skipped} skipped"
    );
    let rate = passed as f64 / (passed + failed) as f64;
    assert!(rate >= 0.995, "pass rate {:.4} is below 99.5%", rate);
}

/// The recompiler passes at least what the interpreter passes: each test
/// is one `step`, which on jit runs the instruction's own translation.
#[test]
fn recompiler_passes_what_the_interpreter_passes_on_the_286_real_mode_suite() {
    let dir = suite_dir();
    if !dir.is_dir() {
        ringside_testsuites::skip_unless_ci(
            "recompiler_passes_what_the_interpreter_passes_on_the_286_real_mode_suite",
            &format!("{} is not present on this machine", dir.display()),
        );
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let interp = || Box::new(ringside_interp::Interp::new()) as Box<dyn Engine>;
    let jit = || Box::new(ringside_jit::Jit::with_threshold(1)) as Box<dyn Engine>;
    let a = sst::run_dir(&dir, &interp, threads).expect("the suite loads");
    let b = sst::run_dir(&dir, &jit, threads).expect("the suite loads");
    println!("interp: {}\njit: {}", a.summary(), b.summary());
    for (file, r) in &b.per_file {
        for f in &r.failures {
            println!("FAIL on jit {file}: {f}");
        }
    }
    let (pa, _, sa) = a.totals();
    let (pb, fb, sb) = b.totals();
    assert_eq!(sa, sb, "the same tests are skipped");
    assert!(
        pb >= pa,
        "jit passed {pb}, interp {pa} ({fb} failed on jit)"
    );
}
