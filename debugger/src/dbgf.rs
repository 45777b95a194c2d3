//! The debugger core (DBGF): one stopped-or-running machine that every
//! front-end drives — the gdb stub, the terminal UI, and tests.
//!
//! Two ways to run:
//!
//! - **free running**, when nothing can make the debugger stop (no
//!   breakpoint, watchpoint, catch or compare partner): the engine's own
//!   `run` in slices, so the debugger costs next to nothing;
//! - **checked**, otherwise: one `Engine::step` at a time, with every stop
//!   condition checked from the architectural state around each step
//!   ([`crate::stops`]) and each retired instruction recorded in the
//!   history. Because the checks use nothing but `CpuState` and memory,
//!   breakpoints and watchpoints behave the same on every engine.
//!
//! With a compare partner (a second machine on another engine) every step
//! is a lockstep step ([`crate::lockstep`]), and a divergence stops the
//! debugger like a breakpoint.

use std::collections::VecDeque;

use ringside_core::cpu::{reg, CpuState, SegReg};
use ringside_core::hostio::HostInputRoute;
use ringside_core::{Budget, Engine, EngineStats, Exit, Machine, StopReason};

use crate::inspect::Syntax;
use crate::lockstep::{self, Divergence, Outcome, Side};
use crate::stops::{self, Access, Address, Condition, Stop, StopKind, WatchKind};
use crate::symbols::Symbols;

/// Makes an engine by name (the front-end knows which engines exist).
pub type EngineFactory = Box<dyn Fn(&str) -> Result<Box<dyn Engine>, String>>;

/// Why the debugger stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum StopCause {
    /// The requested steps are done (or `next` reached its return address).
    Stepped,
    Breakpoint {
        id: u32,
    },
    Watchpoint {
        id: u32,
        access: Access,
    },
    Vector {
        id: u32,
        vector: u8,
    },
    Port {
        id: u32,
        port: u16,
    },
    Cr3 {
        id: u32,
        old: u32,
        new: u32,
    },
    Ring {
        id: u32,
        from: u8,
        to: u8,
    },
    /// The machine stopped by itself (debug exit, dead halt, triple fault).
    Machine(StopReason),
    /// The front-end asked (Ctrl-C in gdb, a key in the TUI).
    Interrupted,
    /// The compare partner disagrees.
    Divergence(Box<Divergence>),
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Stepped => write!(f, "stepped"),
            StopCause::Breakpoint { id } => write!(f, "breakpoint #{id}"),
            StopCause::Watchpoint { id, access } => write!(
                f,
                "watchpoint #{id}: {} of {} bytes at {:#010x}",
                match (access.read, access.write) {
                    (true, true) => "read-write",
                    (false, true) => "write",
                    _ => "read",
                },
                access.size,
                access.lin
            ),
            StopCause::Vector { id, vector } => write!(f, "catch #{id}: vector {vector:#04x}"),
            StopCause::Port { id, port } => write!(f, "catch #{id}: port {port:#06x}"),
            StopCause::Cr3 { id, old, new } => {
                write!(f, "catch #{id}: CR3 {old:#010x} -> {new:#010x}")
            }
            StopCause::Ring { id, from, to } => write!(f, "catch #{id}: ring {from} -> {to}"),
            StopCause::Machine(r) => write!(f, "machine stopped: {r}"),
            StopCause::Interrupted => write!(f, "interrupted"),
            StopCause::Divergence(d) => write!(
                f,
                "divergence after {} instructions at {:04x}:{:08x}",
                d.instruction, d.cs, d.eip
            ),
        }
    }
}

/// What a slice of running did.
#[derive(Clone, Debug, PartialEq)]
pub enum Resume {
    /// Still running: call again.
    Running,
    /// The CPU is halted until a device deadline (or input): the front-end
    /// may wait a little before the next slice.
    Idle,
    Stopped(StopCause),
}

/// One retired instruction in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    pub icount: u64,
    pub cs: u16,
    pub eip: u32,
    pub bytes: Vec<u8>,
    /// Registers the instruction changed: name, before, after.
    pub changes: Vec<(&'static str, u32, u32)>,
}

/// How many retired instructions the history keeps.
pub const HISTORY: usize = 256;
/// Instructions per slice when free running.
const SLICE: u64 = 200_000;

/// The debugger: a machine, its engine, the stops, and the history.
pub struct Debugger {
    pub main: Side,
    /// The second machine of compare mode.
    pub partner: Option<Side>,
    factory: EngineFactory,
    pub symbols: Symbols,
    pub syntax: Syntax,
    stops: Vec<Stop>,
    next_id: u32,
    /// The hidden breakpoint of `next`: linear address and the ESP at or
    /// above which it counts (so recursion does not stop it early).
    temp: Option<(u32, u32)>,
    history: VecDeque<Retired>,
    /// The registers at the previous stop, for "what changed".
    pub previous: CpuState,
    /// Host input waiting for the guest (COM1).
    input: VecDeque<u8>,
    /// Where host input goes (the front-end knows the machine's devices:
    /// COM1 for `ringside debug`). Without one, queued input is dropped
    /// when the guest waits for it, as on a machine without a UART.
    pub host_input: Option<HostInputRoute>,
    /// iced-x86's instruction-info factory, kept for its buffers.
    info: iced_x86::InstructionInfoFactory,
    /// The machine's configuration (TOML), which snapshots record so that
    /// a saved state can be restored into the same machine.
    pub config_toml: String,
}

impl Debugger {
    pub fn new(machine: Machine, engine: Box<dyn Engine>, factory: EngineFactory) -> Debugger {
        let previous = machine.cpu.clone();
        Debugger {
            main: Side { machine, engine },
            partner: None,
            factory,
            symbols: Symbols::none(),
            syntax: Syntax::Intel,
            stops: Vec::new(),
            next_id: 1,
            temp: None,
            history: VecDeque::with_capacity(HISTORY),
            previous,
            input: VecDeque::new(),
            host_input: None,
            info: iced_x86::InstructionInfoFactory::new(),
            config_toml: String::new(),
        }
    }

    pub fn machine(&mut self) -> &mut Machine {
        &mut self.main.machine
    }

    /// Compare mode: a second machine (built from the same configuration)
    /// on `engine`, stepped together with the first.
    pub fn set_partner(&mut self, machine: Machine, engine: &str) -> Result<(), String> {
        let engine = (self.factory)(engine)?;
        self.partner = Some(Side { machine, engine });
        Ok(())
    }

    /// Switch the engine of the stopped machine. The new engine takes over
    /// from `CpuState` at this instruction boundary.
    pub fn set_engine(&mut self, name: &str) -> Result<(), String> {
        self.main.engine = (self.factory)(name)?;
        self.main.machine.handover();
        Ok(())
    }

    pub fn engine_name(&self) -> &'static str {
        self.main.engine.name()
    }

    pub fn stats(&self) -> EngineStats {
        self.main.engine.stats()
    }

    /// Bytes for the guest's COM1, given when it waits for input.
    pub fn queue_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    // ---- stops -------------------------------------------------------

    fn add(&mut self, kind: StopKind) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.stops.push(Stop {
            id,
            kind,
            hits: 0,
            after: 1,
            enabled: true,
        });
        id
    }

    pub fn add_breakpoint(&mut self, at: Address, condition: Option<Condition>) -> u32 {
        self.add(StopKind::Breakpoint { at, condition })
    }

    pub fn add_watchpoint(&mut self, start: u32, len: u32, kind: WatchKind) -> u32 {
        self.add(StopKind::Watchpoint {
            start,
            len: len.max(1),
            kind,
        })
    }

    pub fn add_catch(&mut self, kind: StopKind) -> u32 {
        self.add(kind)
    }

    /// Remove a stop by id; false if there is none.
    pub fn delete(&mut self, id: u32) -> bool {
        let n = self.stops.len();
        self.stops.retain(|s| s.id != id);
        self.stops.len() != n
    }

    /// Remove the first stop of this kind (the gdb stub's z packets).
    pub fn delete_kind(&mut self, kind: &StopKind) -> bool {
        match self.stops.iter().position(|s| &s.kind == kind) {
            Some(i) => {
                self.stops.remove(i);
                true
            }
            None => false,
        }
    }

    /// Stop only from hit `n` on (`ignore`-style counts).
    pub fn set_after(&mut self, id: u32, n: u64) -> bool {
        match self.stops.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.after = n.max(1);
                true
            }
            None => false,
        }
    }

    pub fn set_enabled(&mut self, id: u32, on: bool) -> bool {
        match self.stops.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.enabled = on;
                true
            }
            None => false,
        }
    }

    pub fn stops(&self) -> &[Stop] {
        &self.stops
    }

    /// Linear addresses of the enabled linear breakpoints (for marking
    /// disassembly).
    pub fn breakpoint_addresses(&self) -> Vec<u32> {
        self.stops
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| match s.kind {
                StopKind::Breakpoint {
                    at: Address::Linear(a),
                    ..
                } => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Whether running must go one checked step at a time.
    pub fn checked(&self) -> bool {
        let anything =
            self.partner.is_some() || self.temp.is_some() || self.stops.iter().any(|s| s.enabled);
        anything && self.engine_breakpoints().is_none()
    }

    /// When every enabled stop is a linear breakpoint (and `next`'s hidden
    /// one) and the engine honours `Machine::breakpoints`, the addresses to
    /// give it: the engine then runs free and stops only there. None when
    /// the debugger must step.
    fn engine_breakpoints(&self) -> Option<Vec<u32>> {
        if self.partner.is_some() || !self.main.engine.honours_breakpoints() {
            return None;
        }
        let mut at: Vec<u32> = self.temp.iter().map(|t| t.0).collect();
        for s in self.stops.iter().filter(|s| s.enabled) {
            match s.kind {
                StopKind::Breakpoint {
                    at: Address::Linear(a),
                    ..
                } => at.push(a),
                _ => return None,
            }
        }
        at.sort_unstable();
        at.dedup();
        Some(at)
    }

    /// The engine stopped before an instruction at a breakpoint address:
    /// whether a breakpoint (its condition, its hit count) or `next`'s
    /// return point makes the debugger stop here.
    fn breakpoint_hit(&mut self) -> Option<StopCause> {
        let cpu = &self.main.machine.cpu;
        let lin = cpu.linear_eip();
        let mut cause = None;
        for s in self.stops.iter_mut().filter(|s| s.enabled) {
            if let StopKind::Breakpoint {
                at: Address::Linear(a),
                condition,
            } = &s.kind
            {
                if *a == lin && condition.as_ref().is_none_or(|c| c.holds(cpu)) {
                    s.hits += 1;
                    if s.hits >= s.after && cause.is_none() {
                        cause = Some(StopCause::Breakpoint { id: s.id });
                    }
                }
            }
        }
        if cause.is_some() {
            self.temp = None;
            return cause;
        }
        if let Some((at, esp)) = self.temp {
            if lin == at && cpu.gpr[reg::ESP] >= esp {
                self.temp = None;
                return Some(StopCause::Stepped);
            }
        }
        None
    }

    // ---- history ----------------------------------------------------

    /// The last retired instructions, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Retired> {
        self.history.iter()
    }

    fn record(&mut self, before: &CpuState, bytes: Vec<u8>) {
        let after = &self.main.machine.cpu;
        let mut changes = Vec::new();
        const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
        for (i, n) in NAMES.iter().enumerate() {
            if before.gpr[i] != after.gpr[i] {
                changes.push((*n, before.gpr[i], after.gpr[i]));
            }
        }
        if before.eflags != after.eflags {
            changes.push(("eflags", before.eflags, after.eflags));
        }
        for (n, s) in crate::inspect::SEG_NAMES.iter().zip(SegReg::ALL) {
            let (a, b) = (
                before.seg[s as usize].selector,
                after.seg[s as usize].selector,
            );
            if a != b {
                changes.push((n, a as u32, b as u32));
            }
        }
        for (n, a, b) in [
            ("cr0", before.cr0, after.cr0),
            ("cr2", before.cr2, after.cr2),
            ("cr3", before.cr3, after.cr3),
            ("cr4", before.cr4, after.cr4),
        ] {
            if a != b {
                changes.push((n, a, b));
            }
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Retired {
            icount: self.main.machine.clock.icount,
            cs: before.seg[SegReg::Cs as usize].selector,
            eip: before.eip,
            bytes,
            changes,
        });
    }

    // ---- running ------------------------------------------------------

    /// Give the guest waiting host input (the next line of it), if any.
    fn feed_input(&mut self) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let end = self
            .input
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.input.len(), |i| i + 1);
        let bytes: Vec<u8> = self.input.drain(..end).collect();
        if let Some(route) = self.host_input {
            for side in std::iter::once(&mut self.main).chain(self.partner.as_mut()) {
                route(&mut side.machine, &bytes);
            }
        }
        true
    }

    /// One checked step: step the engine (both engines in compare mode) and
    /// check every stop condition. Returns the cause if the debugger stops.
    fn checked_step(&mut self) -> Result<Resume, String> {
        let m = &mut self.main.machine;
        let before = m.cpu.clone();
        let icount = m.clock.icount;
        let (insn, bytes) = match stops::decode_next_with_bytes(m) {
            Some((i, b)) => (Some(i), b),
            None => (None, Vec::new()),
        };
        let watching = self.stops.iter().any(|s| {
            s.enabled && matches!(s.kind, StopKind::Watchpoint { .. } | StopKind::Port(_))
        });
        let accesses = match (&insn, watching) {
            (Some(i), true) => stops::accesses(&mut self.info, i, &before),
            _ => Vec::new(),
        };
        let port = match (&insn, watching) {
            (Some(i), true) => stops::io_port(i, &before),
            _ => None,
        };

        let exit = match self.partner.as_mut() {
            Some(partner) => {
                match lockstep::run(&mut self.main, partner, 1).map_err(|e| e.to_string())? {
                    Outcome::NoDivergence { .. } => Exit::BudgetSpent,
                    Outcome::Stopped { reason, .. } => Exit::Stopped(reason),
                    Outcome::Divergence(mut d) => {
                        // Each lockstep run here is one step: count from
                        // the machine's start, not from this step.
                        d.instruction = icount;
                        return Ok(Resume::Stopped(StopCause::Divergence(d)));
                    }
                }
            }
            None => self
                .main
                .engine
                .step(&mut self.main.machine)
                .map_err(|e| e.to_string())?,
        };
        let m = &mut self.main.machine;
        let retired = m.clock.icount != icount;
        if retired {
            self.record(&before, bytes);
        }
        match exit {
            // A reset reboots the machine (unless `no_reboot`): the stops
            // below are checked at the reset vector.
            Exit::Stopped(r) => {
                if let Some(r) = self.settle_stop(r)? {
                    return Ok(Resume::Stopped(StopCause::Machine(r)));
                }
            }
            Exit::Halted => {
                if self.feed_input() {
                    return Ok(Resume::Running);
                }
                let m = &mut self.main.machine;
                if !m.skip_to_next_deadline() {
                    let (cs, eip) = (m.cpu.seg[SegReg::Cs as usize].selector, m.cpu.eip);
                    return Ok(Resume::Stopped(StopCause::Machine(
                        StopReason::IdleForever { cs, eip },
                    )));
                }
                if let Some(p) = self.partner.as_mut() {
                    p.machine.skip_to_next_deadline();
                }
                return Ok(Resume::Idle);
            }
            Exit::WaitingForInput => {
                self.feed_input();
            }
            Exit::BudgetSpent | Exit::Event(_) | Exit::Breakpoint => {}
        }
        let m = &mut self.main.machine;
        let after = m.cpu.clone();
        let lin = after.linear_eip();
        let phys = m.peek_translation(lin);
        let delivered_to = |m: &mut Machine, v: u8| {
            // An event through v: the CPU now stands at v's handler, and the
            // step either retired nothing (a fault or an interrupt) or was
            // an instruction that raises v (INT n, INT3, INTO).
            let at_handler = m.peek_vector_handler(v).is_some_and(|(h, _)| h == lin);
            let raises = insn.as_ref().is_some_and(|i| {
                use iced_x86::Mnemonic::*;
                match i.mnemonic() {
                    Int => i.immediate8() == v,
                    Int3 => v == 3,
                    Into => v == 4,
                    Int1 => v == 1,
                    _ => false,
                }
            });
            at_handler && (!retired || raises)
        };
        let mut cause = None;
        for s in self.stops.iter_mut().filter(|s| s.enabled) {
            let hit =
                match &s.kind {
                    StopKind::Watchpoint { start, len, kind } => retired
                        .then(|| {
                            accesses.iter().copied().find(|a| {
                                kind.catches(a.read, a.write)
                                    && stops::overlaps(*start, *len, a.lin, a.size)
                            })
                        })
                        .flatten()
                        .map(|access| StopCause::Watchpoint { id: s.id, access }),
                    StopKind::Port(p) => (retired && port == Some(*p))
                        .then_some(StopCause::Port { id: s.id, port: *p }),
                    StopKind::Cr3Change => (before.cr3 != after.cr3).then_some(StopCause::Cr3 {
                        id: s.id,
                        old: before.cr3,
                        new: after.cr3,
                    }),
                    StopKind::Ring(r) => (before.cpl() != after.cpl() && after.cpl() == *r)
                        .then_some(StopCause::Ring {
                            id: s.id,
                            from: before.cpl(),
                            to: after.cpl(),
                        }),
                    StopKind::Vector(v) => delivered_to(m, *v).then_some(StopCause::Vector {
                        id: s.id,
                        vector: *v,
                    }),
                    StopKind::Breakpoint { at, condition } => {
                        let here = match at {
                            Address::Linear(a) => *a == lin,
                            Address::Physical(a) => Some(*a) == phys,
                        };
                        (here && condition.as_ref().is_none_or(|c| c.holds(&after)))
                            .then_some(StopCause::Breakpoint { id: s.id })
                    }
                };
            if let Some(c) = hit {
                s.hits += 1;
                if s.hits >= s.after && cause.is_none() {
                    cause = Some(c);
                }
            }
        }
        if let Some(c) = cause {
            self.temp = None;
            return Ok(Resume::Stopped(c));
        }
        if let Some((at, esp)) = self.temp {
            if lin == at && after.gpr[reg::ESP] >= esp {
                self.temp = None;
                return Ok(Resume::Stopped(StopCause::Stepped));
            }
        }
        Ok(Resume::Running)
    }

    /// Run for about `slice` instructions (less if something stops it).
    pub fn resume(&mut self, slice: u64) -> Result<Resume, String> {
        if self.checked() {
            for _ in 0..slice.max(1) {
                match self.checked_step()? {
                    Resume::Running => {}
                    other => return Ok(other),
                }
            }
            return Ok(Resume::Running);
        }
        let breakpoints = self.engine_breakpoints().unwrap_or_default();
        if breakpoints
            .binary_search(&self.main.machine.cpu.linear_eip())
            .is_ok()
        {
            // Standing on a breakpoint: go past it first, one checked step.
            match self.checked_step()? {
                Resume::Running => {}
                other => return Ok(other),
            }
        }
        let m = &mut self.main.machine;
        m.breakpoints = breakpoints;
        let exit = self
            .main
            .engine
            .run(
                m,
                Budget {
                    instructions: slice,
                },
            )
            .map_err(|e| e.to_string());
        self.main.machine.breakpoints.clear();
        let exit = exit?;
        Ok(match exit {
            Exit::BudgetSpent | Exit::Event(_) => Resume::Running,
            Exit::Breakpoint => match self.breakpoint_hit() {
                Some(cause) => Resume::Stopped(cause),
                None => Resume::Running,
            },
            Exit::WaitingForInput => {
                self.feed_input();
                Resume::Running
            }
            Exit::Halted => {
                if self.feed_input() {
                    Resume::Running
                } else if self.main.machine.skip_to_next_deadline() {
                    Resume::Idle
                } else {
                    let m = &self.main.machine;
                    Resume::Stopped(StopCause::Machine(StopReason::IdleForever {
                        cs: m.cpu.seg[SegReg::Cs as usize].selector,
                        eip: m.cpu.eip,
                    }))
                }
            }
            Exit::Stopped(r) => match self.settle_stop(r)? {
                Some(r) => Resume::Stopped(StopCause::Machine(r)),
                None => Resume::Running,
            },
        })
    }

    /// A stop of the machine: a reset reboots it unless it does not reboot
    /// (`Machine::settle_stop`). With a compare partner the lockstep
    /// comparator has already rebooted both, and a stop it reports is
    /// one that ends the run.
    fn settle_stop(&mut self, reason: StopReason) -> Result<Option<StopReason>, String> {
        self.main
            .machine
            .settle_stop(reason)
            .map_err(|e| e.to_string())
    }

    /// Continue until something stops the debugger, or `interrupted`
    /// returns true (checked between slices).
    pub fn cont(&mut self, mut interrupted: impl FnMut() -> bool) -> Result<StopCause, String> {
        self.begin();
        let slice = if self.checked() { 4096 } else { SLICE };
        loop {
            if interrupted() {
                return Ok(StopCause::Interrupted);
            }
            if let Resume::Stopped(c) = self.resume(slice)? {
                return Ok(c);
            }
        }
    }

    /// Retire `n` instructions (events delivered on the way do not count),
    /// stopping early at any stop condition.
    pub fn step(&mut self, n: u64) -> Result<StopCause, String> {
        self.begin();
        let target = self.main.machine.clock.icount + n;
        // A bound on steps that retire nothing (event deliveries, halts).
        let mut guard = n.saturating_mul(4).saturating_add(1000);
        while self.main.machine.clock.icount < target && guard > 0 {
            guard -= 1;
            if let Resume::Stopped(c) = self.checked_step()? {
                return Ok(c);
            }
        }
        Ok(StopCause::Stepped)
    }

    /// Step over: like `step 1`, but a CALL (or INT n) runs until control
    /// comes back to the next instruction at the same stack depth.
    pub fn step_over(&mut self) -> Result<StopCause, String> {
        if !self.arm_step_over() {
            return self.step(1);
        }
        self.cont(|| false)
    }

    /// The first half of a step over, for front-ends that run in slices:
    /// if the next instruction is a CALL or INT n, set the hidden
    /// breakpoint after it and return true (running until `Stepped` then
    /// completes the step over); otherwise return false (`step(1)` is the
    /// whole step over).
    pub fn arm_step_over(&mut self) -> bool {
        let m = &mut self.main.machine;
        let Some(insn) = stops::decode_next(m) else {
            return false;
        };
        let over = {
            use iced_x86::Mnemonic::*;
            matches!(insn.mnemonic(), Call | Int | Into | Int3)
        };
        if over {
            let base = m.cpu.seg[SegReg::Cs as usize].base;
            let after = base.wrapping_add(insn.next_ip() as u32);
            self.temp = Some((after, m.cpu.gpr[reg::ESP]));
        }
        over
    }

    /// Forget an armed step over (the run that was to complete it ended
    /// some other way, e.g. interrupted).
    pub fn disarm_step_over(&mut self) {
        self.temp = None;
    }

    /// The registers now become the baseline that the next stop's
    /// "changed since the last stop" is measured against. Every way of
    /// running calls it first; front-ends that resume in slices call it
    /// when they start.
    pub fn begin(&mut self) {
        self.previous = self.main.machine.cpu.clone();
    }
}
