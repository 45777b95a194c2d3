//! An interactive or scripted run of one machine: the loop around the
//! engine that feeds host input, paces virtual time against the wall clock
//! and stops when the guest is done.
//!
//! Input (DESIGN.md section 3): from a terminal, bytes arrive as typed (raw
//! mode; Ctrl-A x quits, as in QEMU's -nographic). From a pipe or a file the
//! input is a script: the next byte is read only when the guest waits for
//! input — it polls an empty receive buffer or halts — or when the device
//! the script goes to asks for it at a paced point of virtual time, its
//! receive path enabled and empty (`hostio::InputRequests::Paced`: a guest
//! that takes input only by interrupt and idles in a busy loop). Either
//! way the point depends only on what the guest did, so the same script
//! always gives the same run.
//!
//! Pacing: when the guest halts with a device deadline ahead, `paced` mode
//! sleeps until the wall clock catches up with virtual time (an idle guest
//! costs almost no host CPU); `fast` mode jumps at once. Neither changes
//! what the guest computes.
//!
//! A checkpoint (`--save-state-at`) runs once, at the first instruction
//! boundary where exactly its number of instructions has retired: the
//! engine's budget is cut to end there.

use std::io::{IsTerminal, Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringside_core::config::ClockMode;
use ringside_core::hostio::{give_host_input, request_host_input, InputRequests};
use ringside_core::{Budget, Engine, Exit, Machine, RunOutcome, StopReason};
use ringside_devices::i8042::KeyboardController;
use ringside_devices::uart::Uart16550;
use ringside_devices::vga_text::{VgaText, TEXT_BUFFER, TEXT_BUFFER_SIZE};

use crate::progress::Progress;

/// Where host input comes from.
pub enum Input {
    /// A script read on demand (a pipe or a file).
    Script(Box<dyn Read + Send>),
    /// Bytes typed on a terminal, delivered by a reader thread.
    Terminal(Receiver<u8>),
}

/// Ctrl-A, the escape prefix: Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.
const ESCAPE: u8 = 0x01;

/// Something to do once, when exactly `at` instructions have retired
/// (`Clock::icount`).
pub struct Checkpoint {
    pub at: u64,
    pub action: CheckpointAction,
}

/// What a checkpoint does; it sees the whole session (the machine, and how
/// much of the input script was read).
pub type CheckpointAction = Box<dyn FnOnce(&Session) -> anyhow::Result<()>>;

/// How a session ended, beyond the machine's own stop reasons.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    Machine(RunOutcome),
    /// The user typed Ctrl-A x.
    Quit,
    /// Ctrl-C, as a signal (`progress::catch_interrupt`).
    Interrupted,
}

pub struct Session {
    pub machine: Machine,
    pub engine: Box<dyn Engine>,
    input: Input,
    script_done: bool,
    escape_pending: bool,
    clock: ClockMode,
    wall_start: Instant,
    virt_start: u64,
    /// Mirror the text screen to the terminal; typed keys go to the 8042.
    text_display: bool,
    last_screen: String,
    checkpoint: Option<Checkpoint>,
    /// Bytes of the input script given to the guest so far.
    script_read: u64,
    /// The progress line on the terminal, if any.
    progress: Option<Progress>,
}

impl Session {
    pub fn new(
        machine: Machine,
        engine: Box<dyn Engine>,
        input: Input,
        clock: ClockMode,
    ) -> Session {
        let virt_start = machine.clock.now_ns();
        Session {
            machine,
            engine,
            input,
            script_done: false,
            escape_pending: false,
            clock,
            wall_start: Instant::now(),
            virt_start,
            text_display: false,
            last_screen: String::new(),
            checkpoint: None,
            script_read: 0,
            progress: None,
        }
    }

    /// Bytes of the input script given to the guest so far (None when the
    /// input is a terminal).
    pub fn script_bytes_read(&self) -> Option<u64> {
        matches!(self.input, Input::Script(_)).then_some(self.script_read)
    }

    /// Run `checkpoint` during [`Session::run`] (replacing any other).
    pub fn set_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = Some(checkpoint);
    }

    /// The instruction count of a checkpoint the run did not reach.
    pub fn checkpoint_pending(&self) -> Option<u64> {
        self.checkpoint.as_ref().map(|c| c.at)
    }

    /// Show progress on long, silent runs (`progress.rs`).
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    /// Take the progress line away (the run is over).
    pub fn finish_progress(&self) {
        if let Some(p) = &self.progress {
            p.finish();
        }
    }

    /// Show the guest's text screen instead of COM1.
    pub fn set_text_display(&mut self, on: bool) {
        self.text_display = on;
    }

    /// Redraw the text screen when it changed.
    fn refresh_display(&mut self) {
        if !self.text_display {
            return;
        }
        let mut vram = vec![0u8; TEXT_BUFFER_SIZE];
        if self.machine.mem().read_ram(TEXT_BUFFER, &mut vram).is_err() {
            return;
        }
        let Some(vga) = self.machine.bus.find_device::<VgaText>() else {
            return;
        };
        let screen = vga.render(&vram).to_text();
        if screen != self.last_screen {
            let mut out = std::io::stdout();
            // Home, clear, then the 25 lines (CR LF: the terminal is raw).
            // No line feed after the last row: on a 25-row terminal it
            // would scroll the first row away.
            let rows = screen.trim_end_matches('\n').replace('\n', "\r\n");
            let _ = write!(out, "\x1b[H\x1b[2J{rows}");
            let _ = out.flush();
            self.last_screen = screen;
        }
    }

    /// Tell the devices when to ask for input. The device the input goes
    /// to asks while a script has more to give, paced; the other never
    /// asks, so that its polls (a firmware printing on COM1 under a text
    /// display) do not take the script. Typed input is given as it comes,
    /// so no device asks for it.
    fn set_input_requests(&mut self) {
        let requests = match self.input {
            Input::Script(_) if !self.script_done => InputRequests::Paced,
            _ => InputRequests::Off,
        };
        let m = &mut self.machine;
        if self.text_display && request_host_input::<KeyboardController>(m, requests) {
            request_host_input::<Uart16550>(m, InputRequests::Off);
        } else {
            request_host_input::<Uart16550>(m, requests);
            request_host_input::<KeyboardController>(m, InputRequests::Off);
        }
    }

    /// Host input for the guest: COM1, or the keyboard with a text display.
    /// Either device is poked at once so an idle, halted guest gets its
    /// interrupt.
    fn give_input(&mut self, bytes: &[u8]) {
        if self.text_display && give_host_input::<KeyboardController>(&mut self.machine, bytes) {
            return;
        }
        give_host_input::<Uart16550>(&mut self.machine, bytes);
    }

    /// Run until the guest stops, the user quits or `max_insns` budget is
    /// spent. Errors are the engine's, or the checkpoint's.
    pub fn run(&mut self, max_insns: Option<u64>) -> anyhow::Result<SessionEnd> {
        const SLICE: u64 = 1 << 20;
        let mut given = 0u64;
        self.set_input_requests();
        loop {
            let mut left = match max_insns {
                Some(max) if given >= max => {
                    return Ok(SessionEnd::Machine(RunOutcome::InstructionLimit))
                }
                Some(max) => (max - given).min(SLICE),
                None => SLICE,
            };
            // Between two engine runs the session holds nothing of the
            // guest's but its place in the input script (which the
            // checkpoint can ask for): the place for a checkpoint.
            if let Some(at) = self.checkpoint_pending() {
                let icount = self.machine.clock.icount;
                if icount >= at {
                    if let Some(c) = self.checkpoint.take() {
                        (c.action)(self)?;
                    }
                } else {
                    left = left.min(at - icount);
                }
            }
            let before = self.machine.clock.icount;
            let exit = self
                .engine
                .run(&mut self.machine, Budget { instructions: left })?;
            given += exit.budget_used(left, self.machine.clock.icount - before);
            // Guest output without a newline (a shell prompt) must show now.
            let _ = std::io::stdout().flush();
            if let Some(p) = self.progress.as_mut() {
                p.tick(exit == Exit::BudgetSpent, self.machine.clock.icount);
            }
            if crate::progress::interrupted() {
                return Ok(SessionEnd::Interrupted);
            }
            if self.drain_terminal() {
                return Ok(SessionEnd::Quit);
            }
            self.refresh_display();
            match exit {
                // No debugger here sets breakpoints: none can stop a run.
                Exit::BudgetSpent | Exit::Breakpoint => {}
                // A reset reboots the machine (unless `no_reboot`) and the
                // run goes on; the instruction budget counts on.
                Exit::Stopped(reason) => {
                    if let Some(reason) = self.machine.settle_stop(reason)? {
                        return Ok(SessionEnd::Machine(RunOutcome::Stopped(reason)));
                    }
                }
                Exit::Event(e) => return Ok(SessionEnd::Machine(RunOutcome::Event(e))),
                Exit::WaitingForInput => {
                    self.feed_script_byte();
                }
                Exit::Halted => {
                    if self.feed_script_byte() {
                        continue;
                    }
                    if self.machine.cpu.interrupts_enabled() && self.machine.bus.interrupt_pending()
                    {
                        continue;
                    }
                    if self.machine.bus.next_deadline() != u64::MAX
                        && self.machine.bus.has_interrupt_controller()
                    {
                        if self.pace_until(self.machine.bus.next_deadline()) {
                            return Ok(SessionEnd::Quit);
                        }
                        self.machine.skip_to_next_deadline();
                        continue;
                    }
                    // Nothing scheduled: only host input can wake the guest.
                    match &self.input {
                        Input::Terminal(_) => {
                            if self.wait_for_key() {
                                return Ok(SessionEnd::Quit);
                            }
                        }
                        _ => {
                            let cs = self.machine.cpu.seg[1].selector;
                            let eip = self.machine.cpu.eip;
                            return Ok(SessionEnd::Machine(RunOutcome::Stopped(
                                StopReason::IdleForever { cs, eip },
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Give the guest the next script byte. False when there is none.
    fn feed_script_byte(&mut self) -> bool {
        if self.script_done {
            return false;
        }
        let Input::Script(r) = &mut self.input else {
            return false;
        };
        let mut b = [0u8];
        match r.read(&mut b) {
            Ok(1) => {
                self.script_read += 1;
                self.give_input(&b);
                true
            }
            _ => {
                self.script_done = true;
                // Nothing more to give: devices stop asking, and a guest
                // that halts with nothing else scheduled can be seen to.
                self.set_input_requests();
                // A guest with a timer (the demo OS) runs on forever: say
                // so to a user watching (issue 16 item 10).
                if std::io::stderr().is_terminal() {
                    eprintln!(
                        "ringside: the input script has ended after {} bytes; the guest runs on until it stops by itself (Ctrl-C ends the run)",
                        self.script_read
                    );
                }
                false
            }
        }
    }

    /// Pass typed bytes to COM1. True when the user asked to quit.
    fn drain_terminal(&mut self) -> bool {
        let Input::Terminal(rx) = &self.input else {
            return false;
        };
        let bytes: Vec<u8> = rx.try_iter().collect();
        self.deliver_typed(&bytes)
    }

    fn deliver_typed(&mut self, bytes: &[u8]) -> bool {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if self.escape_pending {
                self.escape_pending = false;
                match b {
                    b'x' | b'X' => return true,
                    ESCAPE => out.push(ESCAPE),
                    _ => {}
                }
            } else if b == ESCAPE {
                self.escape_pending = true;
            } else {
                out.push(b);
            }
        }
        if !out.is_empty() {
            self.give_input(&out);
        }
        false
    }

    /// Block until a key arrives. True when the user asked to quit (or the
    /// terminal closed).
    fn wait_for_key(&mut self) -> bool {
        let Input::Terminal(rx) = &self.input else {
            return false;
        };
        match rx.recv() {
            Ok(b) => self.deliver_typed(&[b]),
            Err(_) => true,
        }
    }

    /// In paced mode, sleep until the wall clock reaches virtual time
    /// `deadline_ns`, waking early for typed input. True to quit.
    fn pace_until(&mut self, deadline_ns: u64) -> bool {
        if self.clock == ClockMode::Fast {
            return false;
        }
        // Virtual time falls behind the wall clock while the guest computes
        // (an instruction is worth less wall time than virtual time on a slow
        // engine); re-anchor then, so idle periods are still slept in full.
        let now = Instant::now();
        let virt_now = self.machine.clock.now_ns();
        let virt_now_on_wall =
            self.wall_start + Duration::from_nanos(virt_now.saturating_sub(self.virt_start));
        if virt_now_on_wall < now {
            self.wall_start = now;
            self.virt_start = virt_now;
        }
        let due =
            self.wall_start + Duration::from_nanos(deadline_ns.saturating_sub(self.virt_start));
        if due <= now {
            return false;
        }
        let wait = due - now;
        match &self.input {
            Input::Terminal(rx) => match rx.recv_timeout(wait) {
                Ok(b) => self.deliver_typed(&[b]),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    false
                }
            },
            _ => {
                std::thread::sleep(wait);
                false
            }
        }
    }
}
