//! Waiting for a child process with a time limit: `ringside bench`'s
//! runs and `ringside lab`'s cargo.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Wait for `child`, started at `start`, killing it (with `group`, the
/// process group it leads) after `limit`: its status, its wall time and
/// whether it was killed. A watchdog thread kills; the wait itself
/// blocks, so the wall time is not rounded to a polling interval.
pub(crate) fn wait_or_kill(
    child: &mut Child,
    start: Instant,
    group: bool,
    limit: Duration,
) -> Result<(ExitStatus, Duration, bool)> {
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let expired = finished.recv_timeout(limit).is_err();
        if expired {
            // SAFETY: kill has no memory effects; the child is not yet
            // reaped (the waiting thread has not signalled), so the pid
            // is still ours, and with `group` so is the group it leads.
            unsafe { libc::kill(if group { -pid } else { pid }, libc::SIGKILL) };
        }
        expired
    });
    let status = child.wait().context("waiting for a child process")?;
    let wall = start.elapsed();
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    Ok((status, wall, timed_out))
}
