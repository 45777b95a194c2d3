//! The Bochs peer: Bochs 2.x booting a workload's disk image through its
//! own BIOS. Debian's Bochs has no display-less build (`nogui`), so it
//! draws the guest's screen with its curses `term` library, which needs a
//! terminal: it runs on a pseudo-terminal whose output is read and kept
//! (its last lines say why Bochs ended). It is built with its internal
//! debugger, which stops before the first instruction: `-rc` gives it
//! `c` (continue). Bochs has no debug-exit device; ringside's guests end
//! by writing "Shutdown" to port 8900h after their debug-exit write
//! (testsuites/guests/lib/serial.c), on which Bochs exits, saying so.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{children_cpu_time, wait_or_kill, Measured, RUN_TIMEOUT};

/// The Bochs BIOS and the LGPL VGA BIOS, as Debian installs them
/// (packages bochsbios and vgabios).
const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// What Bochs says when a guest writes "Shutdown" to port 8900h.
pub(super) const SHUTDOWN: &str = "Shutdown port: shutdown requested";

/// Bochs's arguments after the configuration file: quick start, the
/// debugger's command file, and no stale image locks.
pub(super) const ARGS: [&str; 6] = ["-q", "-f", "bochsrc", "-rc", "debugger.rc", "-unlock"];

/// Bochs's version line ("Bochs x86 Emulator 2.7"), or why the peer
/// cannot run here.
pub(super) fn version() -> std::result::Result<String, String> {
    let out = Command::new("bochs")
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|_| "bochs is not installed (Debian: bochs, bochs-term, bochsbios, vgabios)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("Bochs x86 Emulator"))
        .map(|l| l.trim().to_owned())
        .ok_or("bochs --help does not say which Bochs it is")?;
    for (file, package) in [(BIOS, "bochsbios"), (VGA_BIOS, "vgabios")] {
        if !Path::new(file).is_file() {
            return Err(format!("{file} is missing (Debian package {package})"));
        }
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so.0.0.0").exists()
        && !Path::new("/usr/lib/bochs/plugins/libbx_term_gui.so.0.0.0").exists()
    {
        return Err("Bochs's terminal display is missing (Debian package bochs-term)".into());
    }
    Ok(line)
}

/// The configuration: 32 MiB like ringside's PC, the disk on the first
/// IDE channel, booted; COM1 into a file (the guests do not program the
/// word length, so Bochs's 16550 sends their bytes cut to 5 bits: the
/// file is kept but not read); as fast as it runs (`clock: sync=none`).
pub(super) fn bochsrc(image: &Path, dir: &Path) -> String {
    format!(
        "megs: 32\n\
         romimage: file={BIOS}\n\
         vgaromimage: file={VGA_BIOS}\n\
         ata0-master: type=disk, path={}, mode=flat\n\
         boot: disk\n\
         display_library: term\n\
         com1: enabled=1, mode=file, dev={}\n\
         log: {}\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         debug: action=ignore\n\
         clock: sync=none, time0=1\n",
        image.display(),
        dir.join("bochs-com1.out").display(),
        dir.join("bochs.log").display()
    )
}

/// Bochs on `image`, its configuration written into `dir`.
pub(super) fn command(image: &Path, dir: &Path) -> Result<Command> {
    std::fs::write(dir.join("bochsrc"), bochsrc(image, dir))
        .context("cannot write the Bochs configuration")?;
    std::fs::write(dir.join("debugger.rc"), "c\n")
        .context("cannot write Bochs's debugger commands")?;
    let mut cmd = Command::new("bochs");
    cmd.args(ARGS).current_dir(dir).env("TERM", "xterm");
    Ok(cmd)
}

/// A pseudo-terminal: (master, slave).
fn pty() -> Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes the two descriptors it opens into the given
    // integers; a null name, termios and window size are allowed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "cannot open a pseudo-terminal for Bochs: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: both descriptors were just opened and are owned by nobody
    // else; FD_CLOEXEC keeps them out of every other program started
    // meanwhile (Bochs gets the slave as its 0, 1 and 2, which dup2
    // leaves open).
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok((OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)))
    }
}

/// Run `cmd` with a pseudo-terminal as its standard input, output and
/// error, keeping everything it writes there (as `stdout`), killing it
/// after RUN_TIMEOUT (`wait_or_kill`).
pub(super) fn measure(cmd: &mut Command, dir: &Path) -> Result<Measured> {
    let (master, slave) = pty()?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // Its own session (and process group), away from ours: the watchdog
    // kills the whole group, and nothing Bochs does reaches our terminal.
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let (user0, sys0) = children_cpu_time();
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start bochs")?;
    // The parent's copies of the slave are gone (moved into `cmd` and
    // dropped with it below), so the master reads end (EIO) when Bochs
    // and everything it started have closed the terminal.
    let mut reader = std::fs::File::from(master);
    let drain = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => screen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: every holder of the slave has closed it.
                Err(_) => break,
            }
        }
        screen
    });
    let waited = wait_or_kill(&mut child, start, true, RUN_TIMEOUT);
    let (user1, sys1) = children_cpu_time();
    // Drop the command (and the slave descriptors it holds) so the
    // master sees the end, whatever the wait said.
    *cmd = Command::new("true");
    let screen = drain.join().unwrap_or_default();
    let (status, wall, timed_out) = waited?;
    let _ = std::fs::write(dir.join("bochs-screen.out"), &screen);
    Ok(Measured {
        status: status.code(),
        wall,
        user: user1.saturating_sub(user0),
        sys: sys1.saturating_sub(sys0),
        stdout: String::from_utf8_lossy(&screen).into_owned(),
        stderr: String::new(),
        timed_out,
    })
}

/// The message Bochs ended with (the line after "Bochs is exiting with
/// the following message:"), or its last line.
pub(super) fn last_message(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().map(str::trim).collect();
    lines
        .iter()
        .position(|l| l.contains("Bochs is exiting with the following message"))
        .and_then(|i| lines.get(i + 1))
        .or(lines.iter().rev().find(|l| !l.is_empty()))
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no output".into())
}
