//! The kick: a periodic host timer that interrupts KVM_RUN.
//!
//! KVM_RUN returns only when the guest does something that exits. A guest
//! that spins without port I/O would otherwise never give the devices'
//! timers (PIT, RTC) a chance to run, nor the engine a chance to stop. A
//! POSIX timer sends a signal to the vCPU thread every millisecond while
//! the engine runs; the signal makes KVM_RUN return EINTR, and the engine
//! runs due timers and injects interrupts before entering again. A kick
//! that lands while the thread is outside KVM_RUN is harmless: the next one
//! comes a millisecond later.

use std::sync::Once;

/// How often a running guest is kicked out of KVM_RUN.
const KICK_PERIOD_NS: i64 = 1_000_000;

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn ignore_kick(_: libc::c_int) {}

/// Install the (empty) handler once per process. SA_RESTART keeps the
/// front-end's own system calls from seeing EINTR; KVM_RUN never restarts.
fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask
        // is a valid argument; the handler does nothing, so it is
        // async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_kick as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// A per-thread periodic timer, disarmed while the engine is not running.
pub struct Kicker {
    timer: libc::timer_t,
}

// SAFETY: the timer id is a plain handle; it targets the thread that
// created it, which is the thread that runs the vCPU.
unsafe impl Send for Kicker {}

impl Kicker {
    /// A timer aimed at the calling thread.
    pub fn new() -> std::io::Result<Kicker> {
        install_handler();
        // SAFETY: sigevent is plain data; the fields set are the ones
        // SIGEV_THREAD_ID reads (timer_create(2)).
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: both pointers are valid for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Kicker { timer })
    }

    fn set(&self, period_ns: i64) {
        let t = libc::timespec {
            tv_sec: 0,
            tv_nsec: period_ns,
        };
        let spec = libc::itimerspec {
            it_interval: t,
            it_value: t,
        };
        // SAFETY: the timer id came from timer_create and is still alive.
        unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
    }

    pub fn arm(&self) {
        self.set(KICK_PERIOD_NS);
    }

    pub fn disarm(&self) {
        self.set(0);
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // SAFETY: deleting the timer this value created, once.
        unsafe { libc::timer_delete(self.timer) };
    }
}
