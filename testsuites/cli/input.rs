//! Input for guests that take it only by interrupt and never poll or halt
//! (issue 12). `builtin:irq-console` reads COM1 and the keyboard only in
//! their interrupt handlers, leaves MCR.OUT2 clear and idles in a busy
//! loop without HLT; an input script still reaches it, at paced points of
//! virtual time (a character time of COM1's line, a byte time of the
//! keyboard cable), so the same script gives the same instruction count
//! on every run, clock mode and engine.

mod common;

use common::{ringside_with_input, text};

const COM1_SCRIPT: &[u8] = b"echo hello over the wire\nadd 40 2\nfib 30\ncount\nexit 0\n";

const COM1_SESSION: &str = "irq-console: ready, MCR.OUT2 clear\n\
com1> echo hello over the wire\ncom1: hello over the wire\n\
com1> add 40 2\ncom1: 42\n\
com1> fib 30\ncom1: 832040\n\
com1> count\ncom1: 4 from com1, 0 from the keyboard\n\
com1> exit 0\ncom1: exit 0\n";

const KEYBOARD_SCRIPT: &[u8] = b"echo Hello, Keys!\nadd 40 2\ncount\nexit 0\n";

const KEYBOARD_SESSION: &str = "irq-console: ready, MCR.OUT2 clear\n\
kbd> echo Hello, Keys!\nkbd: Hello, Keys!\n\
kbd> add 40 2\nkbd: 42\n\
kbd> count\nkbd: 0 from com1, 3 from the keyboard\n\
kbd> exit 0\nkbd: exit 0\n";

/// Where the script goes: COM1, or the keyboard (`--display text`, which
/// takes COM1's output off the terminal: `--com1-log FILE` keeps it).
#[derive(Clone, Copy, Debug)]
enum Device {
    Com1,
    Keyboard,
}

#[derive(Debug, PartialEq, Eq)]
struct Session {
    status: Option<i32>,
    /// What the guest wrote on COM1.
    com1: String,
    instructions: u64,
}

fn session(image: &str, device: Device, script: &[u8], extra: &[&str]) -> Session {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let log = std::env::temp_dir().join(format!(
        "ringside-input-{}-{}.com1",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let log = log.to_str().expect("a UTF-8 path").to_string();
    let mut args = vec!["run", image, "--stats"];
    if let Device::Keyboard = device {
        args.extend(["--display", "text", "--com1-log", &log]);
    }
    args.extend_from_slice(extra);
    let out = ringside_with_input(&args, script);
    let stderr = text(&out.stderr);
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no statistics in {stderr}"));
    let stats: serde_json::Value = serde_json::from_str(json).expect("the statistics are JSON");
    let com1 = match device {
        Device::Com1 => text(&out.stdout),
        Device::Keyboard => {
            let com1 = std::fs::read_to_string(&log).expect("the COM1 log");
            let _ = std::fs::remove_file(&log);
            // COM1 sends CR LF; the other device's output shows LF.
            com1.replace("\r\n", "\n")
        }
    };
    Session {
        status: out.status.code(),
        com1,
        instructions: stats["instructions"]
            .as_u64()
            .expect("an instruction count"),
    }
}

#[test]
fn a_script_reaches_an_interrupt_only_guest_over_com1() {
    let s = session(
        "builtin:irq-console",
        Device::Com1,
        COM1_SCRIPT,
        &["--clock", "fast"],
    );
    assert_eq!(s.com1, COM1_SESSION);
    assert_eq!(s.status, Some(0));
}

#[test]
fn a_script_reaches_an_interrupt_only_guest_over_the_keyboard() {
    let s = session(
        "builtin:irq-console",
        Device::Keyboard,
        KEYBOARD_SCRIPT,
        &["--clock", "fast"],
    );
    assert_eq!(s.com1, KEYBOARD_SESSION);
    assert_eq!(s.status, Some(0));
}

/// Twice under `--clock paced`, then `fast`, then on the recompiler (at
/// its default threshold, and compiling every block at its first run):
/// the same output and the same instruction count each time.
#[test]
fn interrupt_driven_sessions_take_the_same_instructions_on_every_run_clock_and_engine() {
    let script: &[u8] = b"add 40 2\nexit 0\n";
    for device in [Device::Com1, Device::Keyboard] {
        let runs: &[&[&str]] = &[
            &["--clock", "paced"],
            &["--clock", "paced"],
            &["--clock", "fast"],
            &["--clock", "paced", "--engine", "jit"],
            &["--clock", "fast", "--engine", "jit", "--jit-threshold", "1"],
        ];
        let first = session("builtin:irq-console", device, script, runs[0]);
        assert_eq!(first.status, Some(0), "{device:?}: {first:?}");
        assert!(first.com1.contains("> add 40 2\n"), "{device:?}: {first:?}");
        println!("{device:?}: {} instructions", first.instructions);
        for args in &runs[1..] {
            let again = session("builtin:irq-console", device, script, args);
            assert_eq!(again, first, "{device:?} with {args:?}");
        }
    }
}

/// `compare` feeds the script to both machines when the guest asks, a
/// line at a time: the paced request comes at the same instruction on
/// both engines.
#[test]
fn compare_finds_no_divergence_on_an_interrupt_only_guest_fed_a_script() {
    let out = ringside_with_input(
        &["compare", "--engines", "interp,jit", "builtin:irq-console"],
        b"add 40 2\nexit 0\n",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("no divergence"), "{stdout}");
    assert!(
        stdout.contains("both stopped: debug-exit port written with 0"),
        "{stdout}"
    );
}

/// By default COM1's IRQ line follows the UART's interrupt whatever
/// MCR.OUT2 says (QEMU's behaviour, the sessions above); with
/// `devices.com1.out2_gates_irq` the board gates it with OUT2, as a PC
/// does: with OUT2 clear no IRQ 4 arrives (the guest sees no
/// transmitter-empty interrupt, says so, and exits with 3, having
/// received nothing), with OUT2 set the session runs.
#[test]
fn irq4_is_gated_by_out2_only_when_the_configuration_asks() {
    let dir = std::env::temp_dir().join(format!("ringside-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    let toml = dir.join("gated.toml");
    let printed = ringside_with_input(&["config", "--print-default"], b"");
    let default = text(&printed.stdout);
    assert!(default.contains("[devices.com1]"), "{default}");
    let gated = default.replacen("out2_gates_irq = false", "out2_gates_irq = true", 1);
    std::fs::write(&toml, gated).expect("write the configuration");
    let toml = toml.to_str().expect("a UTF-8 temp path");

    let clear = session(
        "builtin:irq-console",
        Device::Com1,
        b"add 40 2\nexit 0\n",
        &["--machine", toml, "--clock", "fast"],
    );
    assert_eq!(clear.status, Some(3), "{clear:?}");
    assert!(clear.com1.contains("MCR.OUT2 clear"), "{clear:?}");
    assert!(clear.com1.contains("no interrupt from COM1"), "{clear:?}");
    assert!(
        !clear.com1.contains("com1> "),
        "nothing received: {clear:?}"
    );

    let set = session(
        "builtin:irq-console",
        Device::Com1,
        b"add 40 2\nexit 0\n",
        &["--machine", toml, "--clock", "fast", "--cmdline", "out2"],
    );
    assert_eq!(set.status, Some(0), "{set:?}");
    assert!(set.com1.contains("MCR.OUT2 set"), "{set:?}");
    assert!(set.com1.contains("com1> add 40 2\ncom1: 42\n"), "{set:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Booted through ringside's BIOS with the script on the keyboard: the
/// BIOS polls the 8042's status port around its self test, which must
/// not take keys from the script (they would stand in front of its 55h,
/// or be read away by its flush), so the self test passes and the guest
/// gets the session. Keys the keyboard offers while the BIOS and the boot
/// sector still run after the self test go to the BIOS's own keyboard
/// buffer (type-ahead, as on a PC), which the guest does not read: the
/// script starts with empty lines for them.
#[test]
fn the_bios_self_test_leaves_a_keyboard_script_to_the_guest() {
    let s = session(
        "builtin:irq-console-disk",
        Device::Keyboard,
        b"\n\n\nadd 40 2\nexit 0\n",
        &["--clock", "fast"],
    );
    assert!(s.com1.contains("ringside BIOS"), "{s:?}");
    assert!(!s.com1.contains("8042 self test failed"), "{s:?}");
    assert!(
        s.com1
            .contains("kbd> add 40 2\nkbd: 42\nkbd> exit 0\nkbd: exit 0\n"),
        "{s:?}"
    );
    assert_eq!(s.status, Some(0), "{s:?}");
}
