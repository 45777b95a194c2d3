//! The UI on a real terminal: raw mode and the alternate screen for the
//! life of the session (restored on every way out, errors and panics
//! included), and the loop that runs the guest in slices between looks at
//! the keyboard.

use std::io::{self, Stdout};
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use super::{App, Tick};

/// At most this many redraws a second while the guest runs.
const FRAME: Duration = Duration::from_millis(33);
/// How long to wait for a key when the guest is halted until a device
/// deadline: short enough that timers keep ticking, long enough that an
/// idle guest costs no CPU.
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// How long to wait for a key when the guest is stopped (then nothing
/// changes but by a key, or a resize, which is an event too).
const STOPPED_WAIT: Duration = Duration::from_millis(250);

/// Raw mode and the alternate screen; dropping it gives the terminal back
/// as it was.
struct Session;

impl Session {
    fn enter() -> io::Result<Session> {
        enable_raw_mode()?;
        // From here on Drop restores even if the rest fails.
        let session = Session;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
    }
}

/// Run the UI on the process's terminal until the user quits.
pub fn run_terminal(app: &mut App) -> io::Result<()> {
    // A panic message printed on the alternate screen would vanish with
    // it: give the terminal back first, then report.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
        report(info);
    }));
    let _session = Session::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    run_loop(&mut terminal, app)
}

fn run_loop(terminal: &mut Terminal<CrosstermBackend<Stdout>>, app: &mut App) -> io::Result<()> {
    terminal.draw(|f| app.draw(f))?;
    let mut drawn = Instant::now();
    loop {
        // One slice of the guest, then the keyboard: without waiting while
        // the guest is busy, a little when it idles, long when stopped.
        let (wait, mut dirty) = match app.tick() {
            Tick::Busy => (Duration::ZERO, false),
            Tick::Idle => (IDLE_WAIT, false),
            Tick::JustStopped => (Duration::ZERO, true),
            Tick::Stopped => (STOPPED_WAIT, false),
        };
        if event::poll(wait)? {
            loop {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => app.handle_key(k),
                    Event::Resize(..) => {}
                    _ => {}
                }
                dirty = true;
                if app.quit_requested() || !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        if app.quit_requested() {
            return Ok(());
        }
        if dirty || (app.is_running() && drawn.elapsed() >= FRAME) {
            terminal.draw(|f| app.draw(f))?;
            drawn = Instant::now();
        }
    }
}
