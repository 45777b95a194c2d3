//! The raw-mode engine (docs/raw.md), first version: ring compression on
//! the interpreter substrate with CSAM trap patches.
//!
//! One iteration of `run`:
//! 1. the guest is at CPL 0: CSAM makes sure the code at EIP is scanned;
//! 2. `monitor::enter` builds the substrate view; the substrate runs with
//!    every event redirected to the monitor (`EventPolicy::redirect_all`:
//!    a fault comes back with nothing committed and EIP at the faulting
//!    instruction, an INT n unretired, an external interrupt acknowledged)
//!    and with execution breakpoints on CSAM's sites;
//! 3. `monitor::leave` restores the guest view and the monitor finishes
//!    what stopped the substrate *on the guest view* with the reference
//!    interpreter: it steps the faulting, trapping or patched instruction
//!    (a CLI clears the guest's IF, an IN reaches the device, a guest #PF
//!    is delivered through the guest's IDT), or delivers the external
//!    interrupt through the guest's IDT.
//!
//! Instruction counts are the interpreter's by construction: the
//! substrate retires the guest instructions it runs, each step retires
//! one. The substrate's IF is the guest's (so an interrupt is taken at the
//! boundary the interpreter would take it) and IOPL is 0 (so CLI, STI and
//! port I/O fault); guests with IOPL above 0, TF set or debug-register
//! breakpoints armed are left to the fallback (`cannot_run`).

use std::collections::BTreeMap;

use ringside_core::cpu::events::{Delivery, EventPolicy, EventSource};
use ringside_core::cpu::{flags, SegReg};
use ringside_core::exec::Primary;
use ringside_core::{Budget, Engine, EngineError, EngineStats, Exit, Machine, StopReason};
use ringside_interp::Interp;

use crate::csam::Csam;
use crate::monitor::{self, DEFAULT_AREA};

/// Counters, after VirtualBox's statistics.
#[derive(Default)]
struct Counters {
    monitor_entries: u64,
    substrate_instructions: u64,
    stepped_instructions: u64,
    fallback_instructions: u64,
    traps_by_vector: BTreeMap<u8, u64>,
    site_traps: u64,
    external_interrupts: u64,
}

/// `--engine raw`: ring compression on the interpreter.
pub struct Raw {
    /// The substrate, and the reference that steps on the guest view.
    interp: Interp,
    csam: Csam,
    area: u32,
    counters: Counters,
    code_seq: u64,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            interp: Interp::new(),
            csam: Csam::default(),
            area: DEFAULT_AREA,
            counters: Counters::default(),
            code_seq: 0,
        }
    }
}

impl Raw {
    pub fn new() -> Raw {
        Raw::default()
    }

    /// Drop the scans of pages the guest (or anything) wrote.
    fn note_code_writes(&mut self, m: &Machine) {
        let seq = m.mem().code_write_seq();
        if seq == self.code_seq {
            return;
        }
        match m.mem().code_writes_since(self.code_seq) {
            ringside_core::memory::CodeWrites::All => self.csam.clear(),
            ringside_core::memory::CodeWrites::Pages(pages) => {
                for &p in pages {
                    self.csam.drop_page(p);
                }
            }
        }
        self.code_seq = seq;
    }

    /// One substrate stretch and what ends it, finished on the guest view.
    /// Returns the exit to give the caller, if any.
    fn stretch(&mut self, m: &mut Machine, left: u64) -> Result<Option<Exit>, EngineError> {
        self.note_code_writes(m);
        if m.cpu.cpl() == 0 {
            let code32 = m.cpu.code32();
            let eip = m.cpu.seg(SegReg::Cs).base.wrapping_add(m.cpu.eip);
            self.csam.ensure_scanned(m, eip, code32);
        }
        let users_breakpoints = std::mem::take(&mut m.breakpoints);
        let users_policy = std::mem::take(&mut m.event_policy);
        let view = match monitor::enter(m, self.area) {
            Ok(v) => v,
            Err(e) => {
                m.breakpoints = users_breakpoints;
                m.event_policy = users_policy;
                return Err(EngineError::Unavailable {
                    engine: "raw",
                    what: e.to_string(),
                });
            }
        };
        // The substrate's IF is the guest's (see the module doc).
        if view.eflags_if_iopl & flags::IF == 0 {
            m.cpu.eflags &= !flags::IF;
        }
        let mut bps: Vec<u32> = self.csam.sites().iter().copied().collect();
        bps.extend(users_breakpoints.iter().copied());
        bps.sort_unstable();
        bps.dedup();
        m.breakpoints = bps;
        let mut policy = EventPolicy::default();
        policy.redirect_all();
        m.event_policy = policy;
        let before = m.clock.icount;
        let exit = self.interp.run(m, Budget { instructions: left });
        self.counters.substrate_instructions += m.clock.icount - before;
        monitor::leave(m, &view);
        m.breakpoints = users_breakpoints;
        m.event_policy = users_policy;
        let exit = exit?;
        self.counters.monitor_entries += 1;
        match exit {
            Exit::Breakpoint => {
                let lin = m.cpu.seg(SegReg::Cs).base.wrapping_add(m.cpu.eip);
                if m.breakpoints.binary_search(&lin).is_ok() {
                    return Ok(Some(Exit::Breakpoint));
                }
                self.counters.site_traps += 1;
                self.step_guest(m)
            }
            Exit::Event(e) => {
                *self
                    .counters
                    .traps_by_vector
                    .entry(e.event.vector)
                    .or_default() += 1;
                match e.event.source {
                    EventSource::External | EventSource::Nmi => {
                        self.counters.external_interrupts += 1;
                        match m.deliver_event(e.event, e.return_eip) {
                            Delivery::Delivered => Ok(None),
                            Delivery::TripleFault => {
                                Ok(Some(Exit::Stopped(StopReason::TripleFault {
                                    cs: m.cpu.seg(SegReg::Cs).selector,
                                    eip: m.cpu.eip,
                                })))
                            }
                            Delivery::Redirected(x) => Ok(Some(Exit::Event(x))),
                        }
                    }
                    // A fault or an INT n: nothing committed, EIP at the
                    // instruction; a debug trap cannot happen (cannot_run).
                    _ => self.step_guest(m),
                }
            }
            other => Ok(Some(other)),
        }
    }

    /// Step one instruction on the guest view with the interpreter.
    fn step_guest(&mut self, m: &mut Machine) -> Result<Option<Exit>, EngineError> {
        let before = m.clock.icount;
        let exit = self.interp.step(m)?;
        self.counters.stepped_instructions += m.clock.icount - before;
        Ok(match exit {
            Exit::BudgetSpent => None,
            other => Some(other),
        })
    }
}

/// Why raw mode cannot run the guest now: `monitor::cannot_run`, and what
/// this version leaves to the fallback: IOPL above 0, TF, armed debug
/// registers.
pub fn cannot_run(m: &Machine) -> Option<&'static str> {
    monitor::cannot_run(m).or_else(|| {
        if m.cpu.eflags & flags::IOPL != 0 {
            Some("iopl")
        } else if m.cpu.eflags & flags::TF != 0 {
            Some("tf")
        } else if m.cpu.dr[7] & 0xFF != 0 {
            Some("debug-registers")
        } else {
            None
        }
    })
}

impl Engine for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        let start = m.clock.icount;
        loop {
            let done = m.clock.icount - start;
            if done >= budget.instructions {
                return Ok(Exit::BudgetSpent);
            }
            let left = budget.instructions - done;
            if cannot_run(m).is_some() {
                // The guest left raw mode's reach mid-run: run on with the
                // interpreter; the execution manager hands it over properly
                // at the next slice.
                let before = m.clock.icount;
                let exit = self.interp.run(
                    m,
                    Budget {
                        instructions: left.min(10_000),
                    },
                )?;
                self.counters.fallback_instructions += m.clock.icount - before;
                match exit {
                    Exit::BudgetSpent => continue,
                    other => return Ok(other),
                }
            }
            if let Some(exit) = self.stretch(m, left)? {
                if exit == Exit::BudgetSpent {
                    continue;
                }
                return Ok(exit);
            }
        }
    }

    /// One instruction through the same path as `run`: the substrate runs
    /// it at ring 1 or 3 (a budget of one), or the monitor finishes what
    /// stopped it; so `compare` checks raw mode itself, instruction by
    /// instruction.
    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        if cannot_run(m).is_some() {
            let before = m.clock.icount;
            let exit = self.interp.step(m)?;
            self.counters.fallback_instructions += m.clock.icount - before;
            return Ok(exit);
        }
        let before = m.clock.icount;
        loop {
            match self.stretch(m, 1)? {
                // The monitor finished one instruction or delivered one
                // event on the guest view.
                None => return Ok(Exit::BudgetSpent),
                // A REP string instruction the substrate paused between
                // iterations (a budget of one spends it without retiring):
                // go on until it retires, as a step must.
                Some(Exit::BudgetSpent) if m.clock.icount == before => {
                    if cannot_run(m).is_some() {
                        return self.step(m);
                    }
                }
                Some(exit) => return Ok(exit),
            }
        }
    }

    fn stats(&self) -> EngineStats {
        let c = &self.counters;
        let mut s = EngineStats {
            instructions: c.substrate_instructions
                + c.stepped_instructions
                + c.fallback_instructions,
            ..EngineStats::default()
        };
        for (k, v) in [
            ("monitor_entries", c.monitor_entries),
            ("substrate_instructions", c.substrate_instructions),
            ("stepped_instructions", c.stepped_instructions),
            ("fallback_instructions", c.fallback_instructions),
            ("site_traps", c.site_traps),
            ("external_interrupts", c.external_interrupts),
            ("csam_sites", self.csam.sites().len() as u64),
            ("csam_scans", self.csam.scans),
            ("csam_instructions_scanned", self.csam.instructions_scanned),
        ] {
            s.counters.insert(k, v);
        }
        for (&v, &n) in &c.traps_by_vector {
            *s.counters.entry(TRAP_NAMES[v as usize]).or_default() += n;
        }
        s
    }

    fn honours_breakpoints(&self) -> bool {
        true
    }
}

impl Primary for Raw {
    fn cannot_run(&self, m: &Machine) -> Option<&'static str> {
        cannot_run(m)
    }
}

/// Counter names for traps by vector (`EngineStats` keys are static).
static TRAP_NAMES: [&str; 256] = {
    let mut n = ["traps.other"; 256];
    n[0] = "traps.00-de";
    n[1] = "traps.01-db";
    n[3] = "traps.03-bp";
    n[6] = "traps.06-ud";
    n[13] = "traps.0d-gp";
    n[14] = "traps.0e-pf";
    n[0x80] = "traps.80-int";
    n
};
