//! What the front-end's test binaries share: running the built
//! `ringside` with a script on stdin.

use std::process::{Command, Output};

/// Run `ringside ARGS` with `input` on stdin. A run that outlives two
/// minutes is killed (and the test then fails on its status), so a guest
/// that never stops cannot hang the test suite.
pub fn ringside_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringside starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("the script is written");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("ringside ends")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[allow(dead_code)] // the engine tests' (jit.rs, raw.rs), not every binary's
/// What a guest needs besides its image: pc-hw has two IDE disks and
/// checks that the line it reads on COM1 is the one its command line
/// expects; jit-torture loads code from a scratch disk as the master.
pub fn guest_args(guest: &str, tag: &str) -> Vec<String> {
    let disks = match guest {
        "pc-hw" => 2,
        "jit-torture" => 1,
        _ => return Vec::new(),
    };
    let mut args = Vec::new();
    for n in 0..disks {
        let path = std::env::temp_dir().join(format!(
            "ringside-{tag}-{}-{guest}-disk{n}.img",
            std::process::id()
        ));
        std::fs::write(&path, vec![0u8; 1 << 20]).expect("write a disk image to the temp dir");
        args.push("--disk".to_owned());
        args.push(format!("{},snapshot", path.display()));
    }
    if guest == "pc-hw" {
        args.push("--cmdline".to_owned());
        args.push("expect=hello".to_owned());
    }
    args
}

#[allow(dead_code)]
/// Every built-in guest, with the script the interactive ones get.
pub const GUESTS: &[(&str, &[u8])] = &[
    ("bench-int-small", b""),
    ("bench-int-small-disk", b""),
    ("demo", b"run hello\nrun bench\npoweroff\n"),
    ("demo-disk", b"run hello\npoweroff\n"),
    ("exceptions", b""),
    ("fw-probe", b""),
    ("hello", b""),
    ("irq-console", b"add 40 2\nexit 0\n"),
    ("irq-console-disk", b"add 40 2\nexit 0\n"),
    ("irq-pm", b""),
    ("irq-real", b""),
    ("jit-torture", b""),
    ("nanobench", b""),
    ("paging", b""),
    ("pc-hw", b"hello\n"),
    ("pm-segments", b""),
    ("privilege", b""),
    ("reboot", b""),
    ("reboot-disk", b""),
    ("smc", b""),
    ("tasks", b""),
    ("vm86", b""),
];

#[allow(dead_code)] // the engine tests' (jit.rs, raw.rs), not every binary's
/// `ringside compare --engines interp,ENGINE` on every built-in guest, to
/// its end (pc-hw over its first five million instructions; the demo OS
/// and the console guests with a session on stdin): what did not end in
/// "no divergence", one line per guest.
pub fn compare_every_guest_with(engine: &str) -> Vec<String> {
    let engines = format!("interp,{engine}");
    let mut wrong = Vec::new();
    for &(guest, _) in GUESTS {
        let limit = match guest {
            "pc-hw" => "5000000",
            _ => "100000000",
        };
        let input: &[u8] = match guest {
            "demo" | "demo-disk" => b"run hello\npoweroff\n",
            "irq-console" | "irq-console-disk" => b"add 40 2\nexit 0\n",
            _ => b"",
        };
        let image = format!("builtin:{guest}");
        let extra = guest_args(guest, engine);
        let mut args = vec![
            "compare",
            "--engines",
            &engines,
            "--max-insns",
            limit,
            &image,
        ];
        args.extend(extra.iter().map(String::as_str));
        let out = ringside_with_input(&args, input);
        let stdout = text(&out.stdout);
        println!("{guest}: {}", stdout.trim());
        let ended = stdout.contains("no divergence")
            && (stdout.contains("both stopped") || limit != "100000000");
        if out.status.code() != Some(0) || !ended {
            wrong.push(format!("{guest}: {stdout}{}", text(&out.stderr)));
        }
    }
    wrong
}

#[allow(dead_code)] // the engine tests' (jit.rs, raw.rs), not every binary's
/// The statistics `ringside run --stats` printed last on `stderr`, as
/// JSON (`what` names the run in the panic when there are none).
pub fn stats_json(stderr: &str, what: &str) -> serde_json::Value {
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what}: no statistics in {stderr}"));
    serde_json::from_str(json).expect("the statistics are JSON")
}
