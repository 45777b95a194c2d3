//! The execution manager (EM in VirtualBox's terms): which engine runs the
//! guest now. An engine that can run the guest only in some states — raw
//! mode needs protected mode with paging and no virtual-8086 task — is the
//! *primary*; whatever it cannot run goes to a *fallback* that runs
//! everything (the interpreter, or the recompiler), and the guest returns
//! to the primary as soon as the primary can take it again.
//!
//! The manager is itself an [`Engine`], so every front-end, the debugger
//! and the lockstep comparator use it like any engine. Both engines keep
//! the engine contract, so handing the machine from one to the other at an
//! instruction boundary changes nothing the guest can see; the manager
//! only decides *who*, and counts where the guest ran:
//!
//! - `em.primary_instructions`, `em.fallback_instructions`: instructions
//!   retired under each engine;
//! - `em.primary_us`, `em.fallback_us`: host time spent in each (wall
//!   clock: host time never reaches the guest);
//! - `em.to_fallback`, `em.to_primary`: hand-overs;
//! - `em.fallback.<reason>`: fallback stretches by the primary's reason
//!   (`real-mode`, `unpaged`, `v86`, or the primary's own).
//!
//! While on the fallback, the manager asks again every
//! [`FALLBACK_SLICE`] instructions and at every exit: a switch back can
//! lag the mode change by that many instructions, which changes nothing
//! but the counters above (engines agree instruction for instruction).
//! Each engine's own counters appear prefixed with its name.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use crate::engine::{Budget, Engine, EngineError, EngineStats, Exit};
use crate::machine::Machine;

/// Instructions the fallback runs before the manager asks the primary
/// again.
pub const FALLBACK_SLICE: u64 = 1_000;

/// An engine that can run the guest only in some states.
pub trait Primary: Engine {
    /// Why this engine cannot run the guest in the machine's current
    /// state, or `None` when it can. Asked at every hand-over point, so it
    /// must be cheap.
    fn cannot_run(&self, m: &Machine) -> Option<&'static str>;
}

/// The reason a CPU mode keeps a ring-compression engine away: it needs
/// protected mode with paging and no virtual-8086 mode (the VirtualBox
/// manual, "Details about software virtualization").
pub fn needs_paged_protected_mode(m: &Machine) -> Option<&'static str> {
    if !m.cpu.protected_mode() {
        Some("real-mode")
    } else if !m.cpu.paging() {
        Some("unpaged")
    } else if m.cpu.vm86() {
        Some("v86")
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    Primary,
    Fallback,
}

/// The execution manager over a primary engine and a fallback.
pub struct ExecutionManager<P: Primary, F: Engine> {
    pub primary: P,
    pub fallback: F,
    current: Current,
    stats: EngineStats,
}

impl<P: Primary, F: Engine> ExecutionManager<P, F> {
    pub fn new(primary: P, fallback: F) -> Self {
        ExecutionManager {
            primary,
            fallback,
            current: Current::Primary,
            stats: EngineStats::default(),
        }
    }

    fn count(&mut self, key: &'static str, n: u64) {
        *self.stats.counters.entry(key).or_default() += n;
    }

    /// Decide who runs next, counting a hand-over (and handing the
    /// machine over: the TLB and the engines' view start afresh).
    fn choose(&mut self, m: &mut Machine) -> Current {
        let next = match self.primary.cannot_run(m) {
            None => Current::Primary,
            Some(reason) => {
                if self.current == Current::Primary {
                    self.count(fallback_key(reason), 1);
                }
                Current::Fallback
            }
        };
        match (self.current, next) {
            (Current::Primary, Current::Fallback) => self.count("em.to_fallback", 1),
            (Current::Fallback, Current::Primary) => self.count("em.to_primary", 1),
            _ => {}
        }
        if next != self.current {
            m.handover();
        }
        self.current = next;
        next
    }

    /// Run the chosen engine, counting its instructions and host time.
    fn run_on(
        &mut self,
        who: Current,
        m: &mut Machine,
        f: impl FnOnce(&mut dyn Engine, &mut Machine) -> Result<Exit, EngineError>,
    ) -> Result<Exit, EngineError> {
        let before = m.clock.icount;
        let start = Instant::now();
        let exit = match who {
            Current::Primary => f(&mut self.primary, m),
            Current::Fallback => f(&mut self.fallback, m),
        };
        let us = start.elapsed().as_micros() as u64;
        let retired = m.clock.icount - before;
        self.stats.instructions += retired;
        match who {
            Current::Primary => {
                self.count("em.primary_instructions", retired);
                self.count("em.primary_us", us);
            }
            Current::Fallback => {
                self.count("em.fallback_instructions", retired);
                self.count("em.fallback_us", us);
            }
        }
        exit
    }
}

/// A counter name made at run time, kept for the life of the process:
/// each distinct name is allocated once.
pub fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// `em.fallback.<reason>` for the reasons the manager knows; the
/// primary's own reasons are counted under `em.fallback.other`.
fn fallback_key(reason: &'static str) -> &'static str {
    match reason {
        "real-mode" => "em.fallback.real-mode",
        "unpaged" => "em.fallback.unpaged",
        "v86" => "em.fallback.v86",
        _ => "em.fallback.other",
    }
}

impl<P: Primary, F: Engine> Engine for ExecutionManager<P, F> {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        let mut left = budget.instructions;
        loop {
            let who = self.choose(m);
            let slice = match who {
                Current::Primary => left,
                Current::Fallback => left.min(FALLBACK_SLICE),
            };
            let before = m.clock.icount;
            let exit = self.run_on(who, m, |e, m| {
                e.run(
                    m,
                    Budget {
                        instructions: slice,
                    },
                )
            })?;
            let used = exit.budget_used(slice, m.clock.icount - before);
            left = left.saturating_sub(used);
            // A fallback slice that ran out, with budget left: ask again.
            if exit == Exit::BudgetSpent && left > 0 {
                continue;
            }
            return Ok(exit);
        }
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        let who = self.choose(m);
        self.run_on(who, m, |e, m| e.step(m))
    }

    fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        for (prefix, engine) in [
            (self.primary.name(), self.primary.stats()),
            (self.fallback.name(), self.fallback.stats()),
        ] {
            for (k, v) in engine.counters {
                s.counters.insert(intern(&format!("{prefix}.{k}")), v);
            }
        }
        s
    }

    fn honours_breakpoints(&self) -> bool {
        self.primary.honours_breakpoints() && self.fallback.honours_breakpoints()
    }
}
