//! Progress on long runs, and Ctrl-C (issue 16 item 5).
//!
//! On a terminal, a run whose guest has been busy and silent for two
//! seconds (a benchmark computing, a kernel spinning) shows one line on
//! stderr: instructions retired and the rate (indicatif). The line goes
//! away as soon as the guest writes anything or idles, so it never mixes
//! with the guest's output, and it is drawn only when the guest's last
//! output ended a line. When stderr is not a terminal nothing is shown.
//!
//! Ctrl-C, when it is a signal (stdin is not a terminal in raw mode, where
//! it is a key for the guest), stops the run at the next slice boundary,
//! and the front-end says how far it got.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long the guest must be busy and silent before the line shows.
const QUIET: Duration = Duration::from_secs(2);
/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// What the guest's output sinks and the run loop share.
#[derive(Default)]
struct Shared {
    /// When the guest last wrote (None: not yet).
    last_output: Mutex<Option<Instant>>,
    /// The guest's output so far ended a line (or there was none).
    mid_line: AtomicBool,
    /// The line, while it is shown.
    bar: Mutex<Option<ProgressBar>>,
}

impl Shared {
    fn hide(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

/// The progress line of one run.
pub struct Progress {
    shared: Arc<Shared>,
    enabled: bool,
    start: Instant,
    busy_since: Option<Instant>,
    drawn: Instant,
}

impl Progress {
    /// Shown only if `enabled` (stderr is a terminal and nothing else
    /// draws on it).
    pub fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            shared: Arc::default(),
            enabled,
            start: now,
            busy_since: None,
            drawn: now,
        }
    }

    /// A guest output stream that hides the line before each write and
    /// notes when the guest last wrote.
    pub fn watch(&self, inner: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
        // No line is ever shown: the guest's writes go straight through.
        if !self.enabled {
            return inner;
        }
        Box::new(Watched {
            inner,
            shared: Arc::clone(&self.shared),
        })
    }

    /// After each slice of the run: `busy` when the guest ran its whole
    /// slice (neither halted nor waited for input); `icount` the
    /// instructions retired so far.
    pub fn tick(&mut self, busy: bool, icount: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !busy {
            self.busy_since = None;
            self.shared.hide();
            return;
        }
        let since = *self.busy_since.get_or_insert(now);
        let last = self.shared.last_output.lock().ok().and_then(|l| *l);
        let quiet = last.is_none_or(|t| now - t >= QUIET);
        if now - since < QUIET || !quiet || self.shared.mid_line.load(Ordering::Relaxed) {
            return;
        }
        if now - self.drawn < REDRAW {
            return;
        }
        self.drawn = now;
        let Ok(mut bar) = self.shared.bar.lock() else {
            return;
        };
        let bar = bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} ringside: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        });
        let secs = (now - self.start).as_secs_f64();
        bar.set_message(format!(
            "{} instructions retired, {:.0} M/s, {:.0} s",
            group(icount),
            icount as f64 / secs.max(1e-9) / 1e6,
            secs
        ));
        bar.tick();
    }

    /// The run is over: take the line away.
    pub fn finish(&self) {
        self.shared.hide();
    }
}

/// A guest output stream under a progress line.
struct Watched {
    inner: Box<dyn Write + Send>,
    shared: Arc<Shared>,
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.hide();
        if let Ok(mut last) = self.shared.last_output.lock() {
            *last = Some(Instant::now());
        }
        if let Some(&b) = buf.last() {
            self.shared.mid_line.store(b != b'\n', Ordering::Relaxed);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// 1234567 as "1,234,567" (indicatif's `HumanCount`).
pub fn group(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C (SIGINT) sets a flag instead of ending the process:
/// the run loop stops at its next slice and says how far it got. (Only
/// an atomic store happens in the handler, which is async-signal-safe.)
pub fn catch_interrupt() {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// True once Ctrl-C was pressed (after `catch_interrupt`).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn guest_output_hides_the_line_and_marks_a_line_in_progress() {
        let p = Progress::new(true);
        let mut sink = p.watch(Box::new(std::io::sink()));
        sink.write_all(b"ringside$ ").unwrap();
        assert!(p.shared.mid_line.load(Ordering::Relaxed));
        sink.write_all(b"ok\n").unwrap();
        assert!(!p.shared.mid_line.load(Ordering::Relaxed));
        assert!(p.shared.last_output.lock().unwrap().is_some());
    }
}
