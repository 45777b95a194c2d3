//! Hostile input files through the `ringside` command (docs/security.md):
//! a forged saved state cannot make ringside write a file the user did not
//! name on the command line, and no input file (an image, an initrd, a
//! disk, a saved state, or a file a state names) can block ringside in
//! `open` or make it read without bound.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringside-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `ringside ARGS` with an empty stdin; the run must end within
/// `limit` (it is killed and the test fails otherwise).
fn ringside_within(limit: Duration, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringside starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("ringside is waitable").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ringside {args:?} did not end within {limit:?}; stderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("ringside ends")
}

fn ringside(args: &[&str]) -> Output {
    ringside_within(Duration::from_secs(120), args)
}

/// A refusal: status 2 and a message holding `needle`.
fn assert_refused(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Save the state of `builtin:jit-torture` with `disk_arg` as its disk at
/// 1000 instructions (before the guest writes two sectors of the disk,
/// which it does later in its run).
fn save_jit_torture_state(dir: &Path, disk_arg: &str, name: &str) -> PathBuf {
    let state = dir.join(name);
    let out = ringside(&[
        "run",
        "builtin:jit-torture",
        "--engine",
        "interp",
        "--clock",
        "fast",
        "--disk",
        disk_arg,
        "--save-state-at",
        "1000",
        state.to_str().unwrap(),
        "--max-insns",
        "2000",
    ]);
    assert!(state.exists(), "{}", text(&out.stderr));
    state
}

/// A state file with `from` replaced by `to` in its JSON section and the
/// frame (lengths and CRC-32) made right again: what anyone can forge.
fn forge(state: &Path, from: &str, to: &str, out: &Path) {
    let bytes = std::fs::read(state).unwrap();
    let payload = &bytes[29..];
    let json_len = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&payload[8..8 + json_len]).unwrap();
    assert!(json.contains(from), "{from} is not in the state");
    let json = json.replace(from, to);
    let mut new_payload = (json.len() as u64).to_le_bytes().to_vec();
    new_payload.extend_from_slice(json.as_bytes());
    new_payload.extend_from_slice(&payload[8 + json_len..]);
    let mut forged = bytes[..17].to_vec();
    forged.extend_from_slice(&(new_payload.len() as u64).to_le_bytes());
    forged.extend_from_slice(&crc32fast::hash(&new_payload).to_le_bytes());
    forged.extend_from_slice(&new_payload);
    std::fs::write(out, forged).unwrap();
}

/// Run a restored state to the guest's end (`extra` after the state).
fn run_restored(state: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--engine",
        "interp",
        "--clock",
        "fast",
        "--load-state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ringside(&args)
}

#[test]
fn a_forged_state_naming_a_host_file_read_write_leaves_it_unwritten() {
    let dir = temp_dir("forged-rw");
    let scratch = dir.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    let state = save_jit_torture_state(&dir, scratch.to_str().unwrap(), "saved.ssm");
    // Same length as the scratch image's path, so nothing else moves.
    let victim = dir.join("victim.img");
    let original: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7) as u8).collect();
    std::fs::write(&victim, &original).unwrap();
    let forged = dir.join("forged.ssm");
    forge(
        &state,
        scratch.to_str().unwrap(),
        victim.to_str().unwrap(),
        &forged,
    );

    let out = run_restored(&forged, &[]);
    let err = text(&out.stderr);
    assert!(
        text(&out.stdout).contains("jit-torture:"),
        "the guest ran to its end: {err}"
    );
    assert!(
        std::fs::read(&victim).unwrap() == original,
        "the victim file was written"
    );
    assert!(err.contains("copy-on-write"), "{err}");

    // The user who trusts the state gets the mode it records.
    let out = run_restored(&forged, &["--trust-state-paths"]);
    assert!(
        text(&out.stderr).contains("read-write"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read(&victim).unwrap() != original,
        "--trust-state-paths keeps rw, and the guest writes its disk"
    );
}

#[test]
fn disk_with_load_state_must_name_the_same_file_and_cannot_widen_its_mode() {
    let dir = temp_dir("disk-narrow");
    let scratch = dir.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    let path = scratch.to_str().unwrap();
    let state = save_jit_torture_state(&dir, &format!("{path},snapshot"), "snap.ssm");
    let widened = run_restored(&state, &["--disk", &format!("{path},rw")]);
    assert_refused(&widened, "not widen it to rw");
    let other = dir.join("other.img");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let elsewhere = run_restored(&state, &["--disk", other.to_str().unwrap()]);
    assert_refused(&elsewhere, "not");
    assert!(text(&elsewhere.stderr).contains("disk 0 of the state is"));

    // A state that records rw may be narrowed, and kept rw explicitly.
    let rw_state = save_jit_torture_state(&dir, path, "rw.ssm");
    let narrowed = run_restored(&rw_state, &["--disk", &format!("{path},ro")]);
    assert!(
        text(&narrowed.stderr).contains("read-only"),
        "{}",
        text(&narrowed.stderr)
    );
    assert!(std::fs::read(&scratch).unwrap().iter().all(|&b| b == 0));
    let kept = run_restored(&rw_state, &["--disk", &format!("{path},rw")]);
    assert!(
        text(&kept.stderr).contains("read-write"),
        "{}",
        text(&kept.stderr)
    );
    assert!(
        std::fs::read(&scratch).unwrap().iter().any(|&b| b != 0),
        "--disk PATH,rw writes the disk the state records rw"
    );
}

const QUICK: Duration = Duration::from_secs(20);

#[test]
fn dev_zero_as_the_image_or_the_initrd_is_refused_at_once() {
    let out = ringside_within(QUICK, &["run", "/dev/zero"]);
    assert_refused(&out, "image /dev/zero: it is a character device");
    let out = ringside_within(
        QUICK,
        &["run", "--kernel", "builtin:hello", "--initrd", "/dev/zero"],
    );
    assert_refused(&out, "initrd /dev/zero: it is a character device");
}

#[test]
fn a_fifo_as_the_image_the_state_or_a_disk_is_refused_without_blocking() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    assert_refused(&ringside_within(QUICK, &["run", f]), "it is a FIFO");
    assert_refused(
        &ringside_within(QUICK, &["run", "--load-state", f]),
        "it is a FIFO",
    );
    assert_refused(
        &ringside_within(QUICK, &["run", "--disk", f]),
        "is a FIFO, not a regular file",
    );
}

#[test]
fn a_state_naming_a_fifo_or_dev_zero_is_refused_without_blocking() {
    let dir = temp_dir("state-names");
    let scratch = dir.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    let state = save_jit_torture_state(&dir, scratch.to_str().unwrap(), "saved.ssm");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let forged = dir.join("fifo-disk.ssm");
    forge(
        &state,
        scratch.to_str().unwrap(),
        fifo.to_str().unwrap(),
        &forged,
    );
    let out = ringside_within(QUICK, &["run", "--load-state", forged.to_str().unwrap()]);
    assert_refused(&out, "is a FIFO, not a regular file");
    let forged = dir.join("zero-image.ssm");
    forge(&state, "builtin:jit-torture", "/dev/zero", &forged);
    let out = ringside_within(QUICK, &["run", "--load-state", forged.to_str().unwrap()]);
    assert_refused(&out, "/dev/zero: it is a character device");
}

#[test]
fn a_sparse_kernel_over_the_image_limit_is_refused_without_reading_it() {
    let dir = temp_dir("sparse");
    let big = dir.join("big.elf");
    std::fs::write(&big, b"\x7fELF").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = ringside_within(QUICK, &["run", "--kernel", big.to_str().unwrap()]);
    assert_refused(&out, "larger than the limit of 268435456 bytes");
}
