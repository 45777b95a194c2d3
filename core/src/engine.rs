//! The engine contract (DESIGN.md section 4): how the machine asks an
//! execution engine to run guest code, and what comes back.

use std::collections::BTreeMap;

use crate::machine::Machine;
use thiserror::Error;

/// How much an engine may run before returning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Retire at most this many instructions.
    pub instructions: u64,
}

/// Why an engine returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The instruction budget is spent.
    BudgetSpent,
    /// HLT with interrupts enabled: the CPU waits for an interrupt. The
    /// caller advances virtual time or stops.
    Halted,
    /// The machine stopped for good.
    Stopped(StopReason),
    /// A device found its host-input buffer empty when the guest looked
    /// (`Signals::input_wanted`): the caller may feed input now, then run on.
    WaitingForInput,
    /// An event the caller asked to see (`Machine::event_policy`) was
    /// raised. It was not delivered; the CPU state is as it was before
    /// delivery began (see `EventExit`).
    Event(crate::cpu::events::EventExit),
    /// The next instruction is at one of the debugger's breakpoint
    /// addresses (`Machine::breakpoints`) and has not run. Only engines
    /// whose `honours_breakpoints` is true return it.
    Breakpoint,
}

impl Exit {
    /// How much of a `left`-instruction budget a `run` that retired
    /// `retired` instructions and returned this exit used up. A spent
    /// budget is spent whole (retired instructions plus delivered events
    /// and paused REP slices); any other exit counts what retired, at least
    /// one, so a limited run always ends.
    pub fn budget_used(&self, left: u64, retired: u64) -> u64 {
        match self {
            Exit::BudgetSpent => left,
            _ => retired.max(1),
        }
    }
}

/// Why a machine stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `code` to the debug-exit port.
    DebugExit(u8),
    /// HLT with interrupts disabled and nothing that could wake the CPU.
    DeadHalt { cs: u16, eip: u32 },
    /// HLT with interrupts enabled in a machine where no device can raise
    /// an interrupt, so the CPU would wait forever.
    IdleForever { cs: u16, eip: u32 },
    /// A triple fault: the CPU shut down (SDM Vol. 3A 6.15, #DF). A PC
    /// resets then, so run loops reboot as for `ResetRequested`.
    TripleFault { cs: u16, eip: u32 },
    /// The guest requested a reset (the 8042 or port 0x92). Run loops
    /// reboot the machine (`Machine::settle_stop`); it ends a run only
    /// when the machine does not reboot (`machine.no_reboot`).
    ResetRequested,
    /// The guest powered the machine off (ACPI soft off, S5): the run
    /// ends with status 0, as QEMU's does.
    PowerOff,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::DebugExit(c) => write!(f, "debug-exit port written with {c}"),
            StopReason::DeadHalt { cs, eip } => {
                write!(f, "halted with interrupts disabled at {cs:04x}:{eip:08x}")
            }
            StopReason::IdleForever { cs, eip } => write!(
                f,
                "halted at {cs:04x}:{eip:08x} waiting for an interrupt, but no device in this machine raises one"
            ),
            StopReason::TripleFault { cs, eip } => {
                write!(f, "triple fault (shutdown) at {cs:04x}:{eip:08x}")
            }
            StopReason::ResetRequested => write!(f, "the guest requested a reset"),
            StopReason::PowerOff => write!(f, "the guest powered the machine off (ACPI S5)"),
        }
    }
}

impl StopReason {
    /// A reset of the PC: the guest's request, or the shutdown after a
    /// triple fault (`Machine::settle_stop` reboots on either).
    pub fn is_reset(&self) -> bool {
        matches!(
            self,
            StopReason::ResetRequested | StopReason::TripleFault { .. }
        )
    }

    /// A short machine-readable name, as `--stats` prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::DebugExit(_) => "debug-exit",
            StopReason::DeadHalt { .. } | StopReason::IdleForever { .. } => "halt",
            StopReason::TripleFault { .. } => "triple-fault",
            StopReason::ResetRequested => "reset",
            StopReason::PowerOff => "power-off",
        }
    }

    /// The exit status a front-end (`ringside run`, `ringside gdb`) gives
    /// a machine that ended here: the guest's own value for a debug exit,
    /// 0 for a halt or power-off, 5 when the BIOS found nothing to boot
    /// (it halts after POST code 0x18, `post_code`), 125 for a triple
    /// fault and 126 for a reset the machine did not take (README, "Exit
    /// status").
    pub fn exit_status(&self, post_code: Option<u8>) -> u8 {
        match self {
            StopReason::DebugExit(v) => *v,
            StopReason::DeadHalt { cs: 0xF000, .. } if post_code == Some(0x18) => 5,
            StopReason::DeadHalt { .. } | StopReason::IdleForever { .. } => 0,
            StopReason::PowerOff => 0,
            StopReason::TripleFault { .. } => 125,
            StopReason::ResetRequested => 126,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The engine met something it does not implement.
    #[error(
        "{engine}: unsupported instruction at {cs:04x}:{eip:08x} (bytes {bytes:02x?}): {what}"
    )]
    Unsupported {
        engine: &'static str,
        cs: u16,
        eip: u32,
        bytes: Vec<u8>,
        what: String,
    },
    /// The engine cannot run on this host or in this CPU mode.
    #[error("{engine}: {what}")]
    Unavailable { engine: &'static str, what: String },
    /// The machine could not boot again after a reset.
    #[error("reboot after a reset: {0}")]
    Reboot(String),
}

/// `Engine::run` for an engine that runs one `step` at a time (the lab
/// engines): at most `budget` steps, each retiring an instruction or
/// delivering an event, so that a guest that faults forever without
/// retiring anything still returns to the caller.
pub fn run_by_steps(
    m: &mut Machine,
    budget: Budget,
    mut step: impl FnMut(&mut Machine) -> Result<Exit, EngineError>,
) -> Result<Exit, EngineError> {
    let start = m.clock.icount;
    for _ in 0..budget.instructions {
        match step(m)? {
            Exit::BudgetSpent if m.clock.icount - start < budget.instructions => {}
            other => return Ok(other),
        }
    }
    Ok(Exit::BudgetSpent)
}

/// Counters an engine exposes: instructions, exits by reason, and its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub instructions: u64,
    pub counters: BTreeMap<&'static str, u64>,
}

/// An execution engine. State lives in the `Machine`; an engine keeps only
/// caches and counters, so any engine can take over at any instruction
/// boundary.
///
/// **Invalidation.** An engine that caches code made from guest memory
/// (decoded blocks, translations) marks each page it made code from
/// (`Machine::mark_code_page`) and keeps a cursor into the machine's
/// code-write log (`Memory::code_write_seq`, `code_writes_since`). Every
/// writer — a guest store, a device's DMA, a loader, the debugger, a
/// restored snapshot, KVM's vCPU (`Machine::note_ram_written`) — logs the
/// code pages it writes and raises `work::CODE_WRITE`; the engine drops
/// what it made from the logged pages before it runs again. The log is the
/// one invalidation contract: there is no separate call to make.
pub trait Engine {
    fn name(&self) -> &'static str;
    /// Run until the budget is spent, the guest halts or stops, or an event
    /// the caller must see happens.
    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError>;
    /// Retire exactly one instruction (or deliver one pending event).
    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError>;
    fn stats(&self) -> EngineStats;
    /// Whether `run` stops before an instruction at a linear address in
    /// `Machine::breakpoints` (with `Exit::Breakpoint`). Engines that do
    /// not are driven one `step` at a time while breakpoints are set.
    fn honours_breakpoints(&self) -> bool {
        false
    }
}
