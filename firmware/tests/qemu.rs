//! Boots the BIOS under QEMU (`qemu-system-i386 -bios`), the reference PC
//! this firmware is checked against. Each test is skipped, saying so,
//! when QEMU is not installed.
//!
//! QEMU's i440fx PC has the same legacy devices at the same ports as
//! ringside (8259s, 8254, MC146818, 8042, 16550A, ATA on 0x1F0 — PIIX3
//! decodes the legacy IDE ports with no PCI set-up —, LAPIC and IOAPIC).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringside_firmware::{BIOS, BOOT_TEST_DISK};

const QEMU: &str = "qemu-system-i386";

fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A scratch directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("ringside-firmware-{}-{}", name, std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, bytes).expect("write to the scratch directory");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running QEMU with our ROM, COM1 on its standard output, the
/// debug-exit device at port 0xF4 (a write of v exits with 2v+1) and,
/// when asked for, its monitor on a Unix socket.
struct Qemu {
    child: Child,
    serial: mpsc::Receiver<Vec<u8>>,
    output: Vec<u8>,
    monitor: Option<PathBuf>,
}

impl Qemu {
    fn start(scratch: &Scratch, disk: Option<&[u8]>, with_monitor: bool) -> Qemu {
        let bios = scratch.write("bios.bin", BIOS);
        let mut qemu = Command::new(QEMU);
        qemu.arg("-bios")
            .arg(bios)
            .args(["-serial", "stdio", "-display", "none", "-no-reboot"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
        if let Some(disk) = disk {
            let image = scratch.write("disk.img", disk);
            qemu.arg("-drive")
                .arg(format!("file={},format=raw,if=ide", image.display()));
        }
        let monitor = with_monitor.then(|| scratch.0.join("monitor.sock"));
        match &monitor {
            Some(socket) => qemu
                .arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", socket.display())),
            None => qemu.args(["-monitor", "none"]),
        };
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-i386");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (sender, serial) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Qemu {
            child,
            serial,
            output: Vec::new(),
            monitor,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    fn collect(&mut self) {
        while let Ok(bytes) = self.serial.try_recv() {
            self.output.extend_from_slice(&bytes);
        }
    }

    /// Waits until `text` appears on COM1; false if QEMU exits first or
    /// `timeout` passes.
    fn wait_for(&mut self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.collect();
            if self.output().contains(text) {
                return true;
            }
            if Instant::now() > deadline || self.child.try_wait().expect("poll qemu").is_some() {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for QEMU to exit; its exit code, or None if it was still
    /// running after `timeout` (it is killed then).
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll qemu") {
                thread::sleep(Duration::from_millis(100));
                self.collect();
                return status.code();
            }
            if Instant::now() > deadline {
                self.collect();
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types keys through the monitor's `sendkey` (QEMU key names).
    fn send_keys(&self, keys: &[&str]) {
        let socket = self.monitor.as_ref().expect("started with a monitor");
        let mut monitor = UnixStream::connect(socket).expect("connect to the QEMU monitor");
        for key in keys {
            writeln!(monitor, "sendkey {key}").expect("write to the QEMU monitor");
            // One key at a time: sendkey holds each key down for 100 ms.
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Without QEMU the test skips with the reason printed, outside CI; with
/// `CI` set (`.ci/run` installs QEMU) it fails instead, as
/// `ringside_testsuites::skip_unless_ci` does for the other crates' tests.
fn skip_unless_ci() {
    let reason = format!("{QEMU} is not installed (apt-get install qemu-system-x86)");
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("{reason}; CI is set, and CI provides it: a failure, not a skip");
    }
    eprintln!("skipped: {reason}");
}

#[test]
fn boot_test_disk_passes_every_check_under_qemu() {
    if !qemu_available() {
        skip_unless_ci();
        return;
    }
    let scratch = Scratch::new("boot-test");
    let mut qemu = Qemu::start(&scratch, Some(BOOT_TEST_DISK), true);
    let prompt = qemu.wait_for("waiting for keys", Duration::from_secs(60));
    assert!(prompt, "{}", qemu.output());
    qemu.send_keys(&["h", "i", "shift-1", "ret"]);
    let status = qemu.wait_exit(Duration::from_secs(30));
    let output = qemu.output();
    println!("{output}");
    assert!(
        output.contains(" 18 INT 16h AH=00h: keys 2368 1769 0221 1c0d ... ok"),
        "{output}"
    );
    assert!(output.contains("boot-test: all checks passed"), "{output}");
    assert_eq!(
        status,
        Some(1),
        "QEMU exits with (0 << 1) | 1 when the guest writes 0 to port 0xF4"
    );
}

#[test]
fn without_a_disk_the_bios_says_so_and_halts() {
    if !qemu_available() {
        skip_unless_ci();
        return;
    }
    let scratch = Scratch::new("no-disk");
    let mut qemu = Qemu::start(&scratch, None, false);
    let said_so = qemu.wait_for("No bootable disk", Duration::from_secs(30));
    let output = qemu.output();
    println!("{output}");
    assert!(said_so, "{output}");
    assert_eq!(
        qemu.wait_exit(Duration::from_millis(500)),
        None,
        "the BIOS halts; QEMU keeps running until killed"
    );
}
