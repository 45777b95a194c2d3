//! The terminal UI of `ringside debug` (VirtualBox's debugger console and
//! a hardware debugger's panes, on ratatui): registers, disassembly with
//! breakpoints and a cursor, memory, stack, the guest's COM1, engine
//! statistics, and a command line running [`Debugger::execute`].
//!
//! The UI is a state machine, [`App`], kept apart from the terminal so
//! tests drive it with synthetic keys and draw it on ratatui's
//! `TestBackend`:
//!
//! - [`App::handle_key`] and [`App::submit`] change the state (start or
//!   stop a run, step, edit the command line, type to the guest);
//! - [`App::tick`] runs the guest for one slice while it is running;
//! - [`App::draw`] renders the panes ([`panes`]).
//!
//! [`run_terminal`] is the loop on a real terminal: slices of guest
//! execution with the keyboard polled between them, so the guest runs
//! behind the UI and any key reaches it at once.

mod batch;
mod console;
mod listing;
mod panes;
mod terminal;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::style::{Color, Modifier, Style};
use ringside_core::hostio::SharedBuffer;

use crate::dbgf::{Debugger, Resume, StopCause};
use crate::stops::{self, Address, StopKind};

pub use batch::run_batch;
pub use terminal::run_terminal;

/// How a register that changed since the last stop is drawn.
pub const CHANGED: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
/// How a field where the compare partner differs is drawn.
pub const DIFFERENT: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);

/// Instructions per slice when the guest runs free (the engine's own run).
const FREE_SLICE: u64 = 50_000;
/// Instructions per slice when every instruction is checked (breakpoints,
/// catches, compare mode): each costs a step and the checks, so fewer.
const CHECKED_SLICE: u64 = 4_000;
/// How many output lines are kept for scrolling back.
const OUTPUT_LINES: usize = 5_000;

/// The commands the UI adds to the debugger's command language.
pub const TUI_HELP: &str = "\
mem [ADDR]          show memory at ADDR in the memory pane (default DS:0)
clear               clear this output
quit                leave the debugger (q)
keys: s step, n next, c continue, b break at the cursor, up/down move the
cursor, PgUp/PgDn scroll this output, : or / command line, i type to the
guest's COM1 (Esc ends), Esc or Ctrl-C stop a running guest, Tab the next
side pane (small terminals), ? h or F1 the keys, q quit";

/// What `?`, `h` and F1 show over the panes: the keys, and where the
/// commands are listed. Short enough for an 80x24 terminal.
pub const KEYS_HELP: &str = "\
s          step one instruction       n      step over a CALL or INT n
c          continue                   Esc    stop a running guest
b          breakpoint at the cursor   Up/Dn  move the cursor
PgUp/PgDn  scroll the output          Tab    next side pane (small terminal)
: or /     command line: Enter runs it, Up/Dn earlier ones, Esc cancels
i          type to the guest's COM1 (Esc ends typing)
? h F1     this help                  q      quit

Commands (on the command line): break, watch, catch, x, regs, dis,
ptwalk, history, save, load, engine... ':help' lists them all.
Scripts: ringside debug --batch -x FILE (or commands on a pipe).

Any key closes this help.";

/// The panes a small terminal shows one at a time beside the output
/// (Tab cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidePane {
    Com1,
    Stack,
    Memory,
    Engine,
}

impl SidePane {
    fn next(self) -> SidePane {
        match self {
            SidePane::Com1 => SidePane::Stack,
            SidePane::Stack => SidePane::Memory,
            SidePane::Memory => SidePane::Engine,
            SidePane::Engine => SidePane::Com1,
        }
    }
}

/// Where keys go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Single keys are actions (s, n, c, b, ...).
    Keys,
    /// Keys edit the command line.
    Command,
    /// Keys go to the guest's COM1.
    Input,
}

/// What a line of output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A command as typed.
    Echo,
    Text,
    Error,
    /// A divergence report.
    Alert,
}

/// What one [`App::tick`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Not running: nothing to do.
    Stopped,
    /// Ran a slice; still running.
    Busy,
    /// The guest is halted until a device deadline: wait a little.
    Idle,
    /// The run just stopped.
    JustStopped,
}

/// The state of the debugger's terminal UI.
pub struct App {
    pub debugger: Debugger,
    /// The guest's COM1 output.
    console: SharedBuffer,
    focus: Focus,
    running: bool,
    quit: bool,
    /// The command line being edited.
    command: String,
    /// Earlier command lines, for up/down on the command line.
    recall: Vec<String>,
    recall_at: Option<usize>,
    output: Vec<(String, Kind)>,
    /// Output lines scrolled back from the newest.
    scroll: usize,
    last_stop: Option<StopCause>,
    /// The memory pane's address expression; None is DS:0.
    memory: Option<String>,
    listing: listing::Listing,
    /// Keys typed to the guest while it was stopped wait for it to run.
    typed_while_stopped: bool,
    /// The keys' help is shown over the panes (any key closes it).
    help: bool,
    /// The pane a small terminal shows beside the output.
    side: SidePane,
    /// Output lines said since the start (batch mode prints from a mark).
    said: u64,
}

impl App {
    /// The UI on a stopped debugger whose guest writes COM1 to `console`.
    pub fn new(mut debugger: Debugger, console: SharedBuffer) -> App {
        let here = debugger.location();
        let mut app = App {
            debugger,
            console,
            focus: Focus::Keys,
            running: false,
            quit: false,
            command: String::new(),
            recall: Vec::new(),
            recall_at: None,
            output: Vec::new(),
            scroll: 0,
            last_stop: None,
            memory: None,
            listing: listing::Listing::default(),
            typed_while_stopped: false,
            help: false,
            side: SidePane::Com1,
            said: 0,
        };
        app.say(
            Kind::Text,
            "stopped at the first instruction: c continue, s step, : command (help), q quit",
        );
        app.say(Kind::Text, &here);
        app
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// True while the keys' help is shown.
    pub fn help_shown(&self) -> bool {
        self.help
    }

    /// The output lines said after `mark` (a count of lines said since
    /// the start; lines older than the scroll-back are gone), each with
    /// true for an error, and the new mark.
    pub fn output_since(&self, mark: u64) -> (Vec<(String, bool)>, u64) {
        let new = (self.said.saturating_sub(mark) as usize).min(self.output.len());
        let lines = self.output[self.output.len() - new..]
            .iter()
            .map(|(text, kind)| (text.clone(), *kind == Kind::Error))
            .collect();
        (lines, self.said)
    }

    /// Why the debugger last stopped (None while running or before the
    /// first run).
    pub fn last_stop(&self) -> Option<&StopCause> {
        self.last_stop.as_ref()
    }

    // ---- output ----------------------------------------------------------

    fn say(&mut self, kind: Kind, text: &str) {
        for line in text.trim_end_matches('\n').lines() {
            self.output.push((line.to_string(), kind));
            self.said += 1;
        }
        let excess = self.output.len().saturating_sub(OUTPUT_LINES);
        self.output.drain(..excess);
        self.scroll = 0;
    }

    // ---- running -----------------------------------------------------------

    /// Run the guest for one slice, if it is running.
    pub fn tick(&mut self) -> Tick {
        if !self.running {
            return Tick::Stopped;
        }
        let slice = if self.debugger.checked() {
            CHECKED_SLICE
        } else {
            FREE_SLICE
        };
        match self.debugger.resume(slice) {
            Ok(Resume::Running) => Tick::Busy,
            Ok(Resume::Idle) => Tick::Idle,
            Ok(Resume::Stopped(cause)) => {
                self.stopped(cause);
                Tick::JustStopped
            }
            Err(e) => {
                self.running = false;
                self.debugger.disarm_step_over();
                self.say(Kind::Error, &format!("the engine failed: {e}"));
                Tick::JustStopped
            }
        }
    }

    /// The debugger stopped: report why and where.
    fn stopped(&mut self, cause: StopCause) {
        self.running = false;
        self.debugger.disarm_step_over();
        let report = self.debugger.describe_stop(&cause);
        let kind = if matches!(cause, StopCause::Divergence(_)) {
            Kind::Alert
        } else {
            Kind::Text
        };
        self.say(kind, &report);
        self.last_stop = Some(cause);
    }

    /// True (and says so) when the guest is running and the action needs
    /// it stopped.
    fn busy(&mut self) -> bool {
        if self.running {
            self.say(Kind::Error, "the guest is running: Esc or Ctrl-C stops it");
        }
        self.running
    }

    fn start_run(&mut self) {
        self.debugger.begin();
        self.running = true;
        self.last_stop = None;
        self.typed_while_stopped = false;
    }

    /// Continue: the guest runs in slices until something stops it.
    pub fn cont(&mut self) {
        if !self.busy() {
            self.start_run();
        }
    }

    /// Step `n` instructions (in compare mode both machines together).
    pub fn step(&mut self, n: u64) {
        if self.busy() {
            return;
        }
        match self.debugger.step(n) {
            Ok(cause) => self.stopped(cause),
            Err(e) => self.say(Kind::Error, &e),
        }
    }

    /// Step over a CALL or INT n: runs in slices like a continue, so a
    /// callee that waits for input does not freeze the UI.
    pub fn next(&mut self) {
        if self.busy() {
            return;
        }
        if self.debugger.arm_step_over() {
            self.start_run();
        } else {
            self.step(1);
        }
    }

    /// Stop a running guest where it is.
    pub fn interrupt(&mut self) {
        if self.running {
            self.stopped(StopCause::Interrupted);
        }
    }

    /// Set or clear a breakpoint on the instruction under the cursor.
    fn toggle_breakpoint(&mut self) {
        let Some(lin) = self.listing.at_cursor().map(|l| l.linear) else {
            return;
        };
        let existing = self.debugger.stops().iter().find_map(|s| match s.kind {
            StopKind::Breakpoint {
                at: Address::Linear(a),
                ..
            } if a == lin => Some(s.id),
            _ => None,
        });
        match existing {
            Some(id) => {
                self.debugger.delete(id);
                self.say(Kind::Text, &format!("deleted #{id}"));
            }
            None => {
                let id = self.debugger.add_breakpoint(Address::Linear(lin), None);
                let text = self
                    .debugger
                    .stops()
                    .iter()
                    .find(|s| s.id == id)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                self.say(Kind::Text, &text);
            }
        }
    }

    // ---- commands ------------------------------------------------------------

    /// Run a command line as if typed: the UI's own commands and the ones
    /// that run the guest here, everything else through
    /// [`Debugger::execute`].
    pub fn submit(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.say(Kind::Echo, &format!("> {line}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (words[0], &words[1..]);
        match cmd {
            "c" | "cont" | "continue" => self.cont(),
            "n" | "next" | "nexti" | "ni" => self.next(),
            "s" | "step" | "stepi" | "si" => match args.first() {
                None => self.step(1),
                Some(a) => match stops::parse_number(a) {
                    Ok(n) => self.step(n as u64),
                    Err(e) => self.say(Kind::Error, &e),
                },
            },
            "mem" => self.set_memory(args),
            "clear" => {
                self.output.clear();
                self.scroll = 0;
            }
            "q" | "quit" => self.quit = true,
            "help" | "h" | "?" => {
                self.say(Kind::Text, crate::commands::HELP);
                self.say(Kind::Text, TUI_HELP);
            }
            _ => match self.debugger.execute(line) {
                Ok(text) => self.say(Kind::Text, &text),
                Err(e) => self.say(Kind::Error, &e),
            },
        }
    }

    fn set_memory(&mut self, args: &[&str]) {
        if args.is_empty() {
            self.memory = None;
            return;
        }
        let expr = args.join(" ");
        match self.debugger.eval(&expr) {
            Ok(at) => {
                self.say(Kind::Text, &format!("memory pane at {expr} = {at:#010x}"));
                self.memory = Some(expr);
            }
            Err(e) => self.say(Kind::Error, &e),
        }
    }

    // ---- keys ------------------------------------------------------------------

    /// One key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let ctrl_c = ctrl && key.code == KeyCode::Char('c');
        // The help is in front: the key that closes it does nothing else
        // (but Ctrl-C still stops a running guest).
        if self.help {
            self.help = false;
            if ctrl_c {
                self.interrupt();
            }
            return;
        }
        match self.focus {
            Focus::Keys => self.action_key(key.code, ctrl_c),
            Focus::Command => self.command_key(key.code, ctrl, ctrl_c),
            Focus::Input => self.input_key(key.code, ctrl),
        }
    }

    fn action_key(&mut self, code: KeyCode, ctrl_c: bool) {
        if ctrl_c || code == KeyCode::Esc {
            self.interrupt();
            return;
        }
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('s') => self.step(1),
            KeyCode::Char('n') => self.next(),
            KeyCode::Char('c') => self.cont(),
            KeyCode::Char('b') => self.toggle_breakpoint(),
            KeyCode::Char(':') | KeyCode::Char('/') => self.focus = Focus::Command,
            KeyCode::Char('i') => self.focus = Focus::Input,
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => self.help = true,
            KeyCode::Tab => self.side = self.side.next(),
            KeyCode::Up => {
                let symbols = self.debugger.symbols.clone();
                self.listing.up(&mut self.debugger.main.machine, &symbols);
            }
            KeyCode::Down => self.listing.down(),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            _ => {}
        }
    }

    fn command_key(&mut self, code: KeyCode, ctrl: bool, ctrl_c: bool) {
        if ctrl_c {
            self.command.clear();
            self.focus = Focus::Keys;
            self.interrupt();
            return;
        }
        match code {
            KeyCode::Enter => {
                let line = std::mem::take(&mut self.command);
                self.focus = Focus::Keys;
                self.recall_at = None;
                if !line.trim().is_empty() && self.recall.last() != Some(&line) {
                    self.recall.push(line.clone());
                }
                self.submit(&line);
            }
            KeyCode::Esc => {
                self.command.clear();
                self.recall_at = None;
                self.focus = Focus::Keys;
            }
            KeyCode::Backspace => {
                self.command.pop();
            }
            KeyCode::Up if !self.recall.is_empty() => {
                let at = self
                    .recall_at
                    .map_or(self.recall.len() - 1, |i| i.saturating_sub(1));
                self.recall_at = Some(at);
                self.command = self.recall[at].clone();
            }
            KeyCode::Down => {
                if let Some(i) = self.recall_at {
                    if i + 1 < self.recall.len() {
                        self.recall_at = Some(i + 1);
                        self.command = self.recall[i + 1].clone();
                    } else {
                        self.recall_at = None;
                        self.command.clear();
                    }
                }
            }
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Char(c) if !ctrl => self.command.push(c),
            _ => {}
        }
    }

    /// A key for the guest: the bytes a terminal would send for it.
    fn input_key(&mut self, code: KeyCode, ctrl: bool) {
        let bytes: Vec<u8> = match code {
            KeyCode::Esc => {
                self.focus = Focus::Keys;
                return;
            }
            KeyCode::Enter => vec![b'\r'],
            KeyCode::Backspace => vec![0x7f],
            KeyCode::Tab => vec![b'\t'],
            KeyCode::Char(c) if ctrl && c.is_ascii_alphabetic() => {
                vec![(c.to_ascii_lowercase() as u8) & 0x1f]
            }
            KeyCode::Char(c) => c.to_string().into_bytes(),
            _ => return,
        };
        self.debugger.queue_input(&bytes);
        if !self.running {
            self.typed_while_stopped = true;
        }
    }
}
