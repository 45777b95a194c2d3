//! The raw-mode engine (docs/raw.md): ring compression on the interpreter
//! substrate, CSAM scanning, PATM jump patches and trap patches.
//!
//! One iteration of `run`:
//! 1. the guest is at CPL 0: CSAM makes sure the code at EIP is scanned;
//! 2. `monitor::enter` builds the substrate view; the substrate runs with
//!    every event redirected to the monitor (`EventPolicy::redirect_all`:
//!    a fault comes back with nothing committed and EIP at the faulting
//!    instruction, an INT n unretired, an external interrupt acknowledged)
//!    with PATM's jump patches (core::substrate) and with execution
//!    breakpoints on the sites left to trap and on patches' bail points;
//! 3. `monitor::leave` restores the guest view and the monitor finishes
//!    what stopped the substrate *on the guest view* with the reference
//!    interpreter: it steps the faulting, trapping or patched instruction
//!    (a CLI clears the guest's IF, an IN reaches the device, a guest #PF
//!    is delivered through the guest's IDT), or delivers the external
//!    interrupt through the guest's IDT.
//!
//! Instruction counts are the interpreter's by construction: the
//! substrate retires the guest instructions it runs (a patch retires the
//! one it stands for), each step retires one. The substrate's real IF is 1
//! and IOPL 0; the guest's IF is in the virtual-interrupt gate, which the
//! substrate honours, so an interrupt is taken at the boundary the
//! interpreter would take it. Guests with IOPL above 0, TF set or
//! debug-register breakpoints armed are left to the fallback
//! (`cannot_run`).

use std::collections::BTreeMap;

use ringside_core::cpu::events::{Delivery, EventPolicy, EventSource};
use ringside_core::cpu::{flags, SegReg};
use ringside_core::exec::Primary;
use ringside_core::{Budget, Engine, EngineError, EngineStats, Exit, Machine, StopReason};
use ringside_interp::Interp;

use crate::csam::Csam;
use crate::monitor::{self, DEFAULT_AREA};
use crate::patm::{Kind, Patm};

/// Counters, after VirtualBox's statistics.
#[derive(Default)]
struct Counters {
    monitor_entries: u64,
    substrate_instructions: u64,
    stepped_instructions: u64,
    fallback_instructions: u64,
    traps_by_vector: BTreeMap<u8, u64>,
    site_traps: u64,
    /// Instructions the monitor ran on the guest view, by mnemonic.
    traps_by_insn: BTreeMap<iced_x86::Mnemonic, u64>,
    /// The substrate stopped before supervisor code CSAM had not scanned.
    unscanned_stops: u64,
    external_interrupts: u64,
    /// Patch code that stopped at a bail point, and faults in patch code,
    /// both finished by the monitor on the guest view.
    patch_bails: u64,
    patch_faults: u64,
    patch_executions: u64,
}

/// `--engine raw`: ring compression on the interpreter.
pub struct Raw {
    /// The substrate: its decoded blocks hold patched fetches.
    substrate: Interp,
    /// The reference that steps on the guest view (and runs what raw mode
    /// cannot).
    reference: Interp,
    csam: Csam,
    patm: Patm,
    area: u32,
    counters: Counters,
    code_seq: u64,
    /// The substrate's breakpoints (sites left to trap, bail points and
    /// the user's), and what they were made from.
    breakpoints: Vec<u32>,
    breakpoints_from: Option<(u64, u64, Vec<u32>)>,
    /// CSAM's version PATM last installed from, and the CR3 and TLB
    /// generation its mappings were checked under.
    patched_from: u64,
    mappings_checked: (u32, u64),
    /// CSAM's `clears` when the substrate's blocks were last dropped.
    substrate_clears: u64,
    /// The shadow tables, kept between entries.
    shadows: monitor::ShadowCache,
}

impl Default for Raw {
    fn default() -> Self {
        Raw::with_patching(true)
    }
}

impl Raw {
    pub fn new() -> Raw {
        Raw::default()
    }

    /// Raw mode with PATM's jump patches (`raw.patm`) or without them
    /// (every sensitive instruction traps).
    pub fn with_patching(patm: bool) -> Raw {
        Raw {
            substrate: Interp::new(),
            reference: Interp::new(),
            csam: Csam::default(),
            patm: Patm::new(DEFAULT_AREA, patm),
            area: DEFAULT_AREA,
            counters: Counters::default(),
            code_seq: 0,
            breakpoints: Vec::new(),
            breakpoints_from: None,
            patched_from: u64::MAX,
            mappings_checked: (u32::MAX, u64::MAX),
            substrate_clears: 0,
            shadows: monitor::ShadowCache::default(),
        }
    }

    /// The installed patches (tests and the book's listings look).
    pub fn patches(&self) -> impl Iterator<Item = &crate::patm::Patch> {
        self.patm.patches()
    }

    /// Install jump patches for what CSAM found, after dropping the ones
    /// whose site no longer maps the patched instruction.
    fn sync_patches(&mut self, m: &mut Machine) {
        let checked = (m.cpu.cr3, m.tlb().generation());
        if checked != self.mappings_checked {
            self.patm.verify_mappings(m);
            self.mappings_checked = (m.cpu.cr3, m.tlb().generation());
        }
        if self.patched_from == self.csam.version {
            return;
        }
        let todo: Vec<_> = self
            .csam
            .patchable()
            .iter()
            .filter(|(site, _)| !self.patm.is_patched(**site))
            .map(|(&site, k)| (site, k.clone()))
            .collect();
        let mut all = true;
        for (site, (kind, phys, bytes)) in todo {
            all &= self.patm.install(m, site, phys, &bytes, kind);
        }
        if all {
            self.patched_from = self.csam.version;
        }
        // Installing logged the patched pages for the engines' decoders;
        // the scans of those pages stand.
        self.mappings_checked = (m.cpu.cr3, m.tlb().generation());
    }

    /// The substrate's breakpoints: CSAM's sites that are not patched
    /// (all of them when patches cannot run now), the bail points and the
    /// user's; rebuilt only when one changed.
    fn substrate_breakpoints(&mut self, users: &[u32], patches_run: bool) -> Vec<u32> {
        let key = (
            self.csam.version,
            self.patm.version | (patches_run as u64) << 63,
        );
        let fresh =
            matches!(&self.breakpoints_from, Some((c, p, u)) if (*c, *p) == key && u == users);
        let same_kind = matches!(&self.breakpoints_from,
            Some((_, p, u)) if *p >> 63 == key.1 >> 63 && u == users);
        if !fresh && !same_kind {
            // The user's breakpoints changed, or patches stopped or
            // started running: the substrate's blocks were cut for, and
            // decoded with, the old ones (core::substrate).
            self.substrate.drop_decoded_code();
        }
        if !fresh {
            let mut bps: Vec<u32> = self
                .csam
                .sites()
                .iter()
                .copied()
                .filter(|s| !patches_run || !self.patm.is_patched(*s))
                .chain(self.patm.bail_points())
                .chain(users.iter().copied())
                .collect();
            bps.sort_unstable();
            bps.dedup();
            self.breakpoints = bps;
            self.breakpoints_from = Some((key.0, key.1, users.to_vec()));
        }
        // Lent to the machine for the stretch, given back after it.
        std::mem::take(&mut self.breakpoints)
    }

    fn in_patch_code(&self, m: &Machine) -> bool {
        let lin = m.cpu.linear_eip();
        let (base, len) = self.patm.window();
        lin.wrapping_sub(base) < len
    }

    /// The substrate stopped in patch code (a bail point, a fault): the
    /// guest is at the patched instruction, every register its own (the
    /// patch code's rules, `patm`). Put EIP back on it.
    fn back_to_site(&mut self, m: &mut Machine) -> bool {
        let lin = m.cpu.linear_eip();
        match self.patm.patch_at(lin) {
            Some(p) => {
                if p.kind == Kind::Iretd && lin == p.exit {
                    // The IRETD itself faulted after the patch set the
                    // gate: the guest's IF is the one before.
                    let at = crate::patm::layout::SCRATCH_GATE as usize;
                    let old = m.mem().monitor().map_or(0, |mon| mon[at]);
                    m.cpu.eflags = m.cpu.eflags & !flags::IF | (old as u32) << 8 & flags::IF;
                }
                m.cpu.eip = p.site.wrapping_sub(m.cpu.seg(SegReg::Cs).base);
                true
            }
            None => false,
        }
    }

    /// Drop the scans of pages the guest (or anything) wrote.
    fn note_code_writes(&mut self, m: &mut Machine) {
        let seq = m.mem().code_write_seq();
        if seq == self.code_seq {
            return;
        }
        let pages = match m.mem().code_writes_since(self.code_seq) {
            ringside_core::memory::CodeWrites::All => None,
            ringside_core::memory::CodeWrites::Pages(pages) => Some(pages.to_vec()),
        };
        match pages {
            None => {
                self.csam.clear();
                let pages: Vec<u32> = self.patm.patches().map(|p| p.phys >> 12).collect();
                for p in pages {
                    self.patm.page_written(m, p);
                }
            }
            Some(pages) => {
                for p in pages {
                    self.csam.drop_page(p);
                    self.patm.page_written(m, p);
                }
            }
        }
        // Removing patches logged their pages too: not guest writes.
        self.code_seq = m.mem().code_write_seq();
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
        if self.csam.clears != self.substrate_clears {
            // The substrate's blocks were cut where scans ended: with the
            // scans forgotten, so are they.
            self.substrate.drop_decoded_code();
            self.substrate_clears = self.csam.clears;
        }
        let users_breakpoints = std::mem::take(&mut m.breakpoints);
        let users_policy = std::mem::take(&mut m.event_policy);
        let view = match monitor::enter_with(m, self.area, &mut self.shadows) {
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
        if self.patm.enabled {
            // With the area mapped: patch code goes into monitor memory.
            self.sync_patches(m);
            self.code_seq = m.mem().code_write_seq();
        }
        // Patch code addresses monitor memory through SS: it runs only
        // while the guest's kernel stack segment is flat.
        let patches_run = self.patm.enabled && kernel_stack_is_flat(m, &view);
        m.breakpoints = self.substrate_breakpoints(&users_breakpoints, patches_run);
        let mut policy = EventPolicy::default();
        policy.redirect_all();
        m.event_policy = policy;
        m.substrate = self.patm.lend_hooks();
        let mut parked = None;
        if let Some(h) = m.substrate.as_mut() {
            h.scanned = Some(self.csam.take_scanned());
            // `raw.patm = false` is trap-and-emulate alone: no shortcut
            // for system calls either.
            h.direct = if self.patm.enabled {
                view.direct
            } else {
                [0; 4]
            };
            if !patches_run {
                parked = Some(std::mem::take(&mut h.fetch));
            }
        }
        let before = m.clock.icount;
        let mut exit = self.substrate.run(m, Budget { instructions: left });
        // Patch code runs to its end before the monitor looks: only a
        // bail point or a fault stops inside it. (Anything else stopping
        // there — a device's stop request seen at a boundary — waits.)
        let mut guard = 0;
        while guard < 64
            && self.in_patch_code(m)
            && matches!(exit, Ok(ref e) if !matches!(e, Exit::Breakpoint | Exit::Event(_)))
        {
            match self.substrate.step(m) {
                Ok(Exit::BudgetSpent) => {}
                other => exit = other,
            }
            guard += 1;
        }
        self.counters.substrate_instructions += m.clock.icount - before;
        let mut hooks = m.substrate.take();
        if let Some(scanned) = hooks.as_mut().and_then(|h| h.scanned.take()) {
            self.csam.put_scanned(scanned);
        }
        if let (Some(h), Some(fetch)) = (hooks.as_mut(), parked) {
            h.fetch = fetch;
        }
        self.patm.take_back_hooks(hooks);
        monitor::leave(m, &view);
        self.breakpoints = std::mem::replace(&mut m.breakpoints, users_breakpoints);
        m.event_policy = users_policy;
        let exit = exit?;
        self.counters.monitor_entries += 1;
        if guard == 64 {
            return Err(EngineError::Unavailable {
                engine: "raw",
                what: format!("patch code at {:#x} did not finish", m.cpu.linear_eip()),
            });
        }
        match exit {
            Exit::Breakpoint => {
                let lin = m.cpu.linear_eip();
                if self.back_to_site(m) {
                    self.counters.patch_bails += 1;
                    return self.step_guest(m);
                }
                if m.breakpoints.binary_search(&lin).is_ok() {
                    return Ok(Some(Exit::Breakpoint));
                }
                if m.cpu.cpl() == 0 && !self.csam.is_scanned(lin) {
                    // Supervisor code CSAM has not seen: scan it now; what
                    // cannot be scanned (an unmapped page) runs on the
                    // guest view, which raises its fault.
                    self.counters.unscanned_stops += 1;
                    let code32 = m.cpu.code32();
                    self.csam.ensure_scanned(m, lin, code32);
                    if self.csam.is_scanned(lin) {
                        return Ok(None);
                    }
                    return self.step_guest(m);
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
                    // A fault in patch code is the patched instruction's.
                    _ => {
                        if self.back_to_site(m) {
                            self.counters.patch_faults += 1;
                        }
                        self.step_guest(m)
                    }
                }
            }
            other => Ok(Some(other)),
        }
    }

    /// Step one instruction on the guest view with the interpreter.
    fn step_guest(&mut self, m: &mut Machine) -> Result<Option<Exit>, EngineError> {
        let (code, n) = m.peek_code();
        let mnemonic = iced_x86::Decoder::new(
            if m.cpu.code32() { 32 } else { 16 },
            &code[..n],
            iced_x86::DecoderOptions::NONE,
        )
        .decode()
        .mnemonic();
        // INVLPG after a page-table edit may move the guest's tables in a
        // way the write monitor does not see: build the shadows afresh.
        // (LGDT, LIDT, LLDT, LTR, MOV to CRn and task switches change the
        // cache's key; stores to the tables are write-monitored.)
        if mnemonic == iced_x86::Mnemonic::Invlpg {
            self.shadows.invalidate();
        }
        // Traps by emulated instruction, after VirtualBox's statistics.
        *self.counters.traps_by_insn.entry(mnemonic).or_default() += 1;
        let before = m.clock.icount;
        let exit = self.reference.step(m)?;
        self.counters.stepped_instructions += m.clock.icount - before;
        Ok(match exit {
            Exit::BudgetSpent => None,
            other => Some(other),
        })
    }
}

/// Whether the guest's kernel stack segment — SS at CPL 0, the TSS's SS0
/// otherwise — is flat: base 0, limit 4 GiB, 32-bit (patch code reaches
/// monitor memory through SS).
fn kernel_stack_is_flat(m: &mut Machine, view: &monitor::GuestView) -> bool {
    use ringside_core::cpu::attr;
    use ringside_core::cpu::segments::Descriptor;
    let flat = |s: &ringside_core::cpu::Segment| {
        s.base == 0 && s.limit == 0xFFFF_FFFF && s.attr & attr::DB != 0
    };
    if m.cpu.cpl() != 3 {
        return flat(m.cpu.seg(SegReg::Ss));
    }
    let Some(ss0) = m
        .peek_bytes(view.tr.base.wrapping_add(8), 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
    else {
        return false;
    };
    if ss0 & 4 != 0 || ss0 & !7 == 0 || (ss0 | 7) as u32 > view.gdtr.limit as u32 {
        return false;
    }
    m.peek_bytes(view.gdtr.base.wrapping_add((ss0 & !7) as u32), 8)
        .is_some_and(|d| {
            let d = Descriptor(u64::from_le_bytes(d.try_into().expect("8 bytes")));
            flat(&d.to_segment(ss0))
        })
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
        let exit = self.run_budget(m, budget);
        self.counters.patch_executions = self.patm.executions(m);
        exit
    }

    /// One instruction through the same path as `run`: the substrate runs
    /// it at ring 1 or 3 (a budget of one), or the monitor finishes what
    /// stopped it; so `compare` checks raw mode itself, instruction by
    /// instruction.
    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        let exit = self.step_one(m);
        self.counters.patch_executions = self.patm.executions(m);
        exit
    }

    fn stats(&self) -> EngineStats {
        self.counters_now()
    }

    fn honours_breakpoints(&self) -> bool {
        true
    }
}

impl Raw {
    fn run_budget(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        let start = m.clock.icount;
        loop {
            let done = m.clock.icount - start;
            if done >= budget.instructions {
                return Ok(Exit::BudgetSpent);
            }
            let left = budget.instructions - done;
            if cannot_run(m).is_some() {
                // The guest left raw mode's reach mid-run (a v86 task, a
                // POPF of IOPL): run on with the interpreter, asking again
                // every `FALLBACK_SLICE` instructions, so that raw mode
                // takes the guest back soon after it can.
                let before = m.clock.icount;
                let exit = self.reference.run(
                    m,
                    Budget {
                        instructions: left.min(FALLBACK_SLICE),
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

    fn step_one(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        if cannot_run(m).is_some() {
            let before = m.clock.icount;
            let exit = self.reference.step(m)?;
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
                        return self.step_one(m);
                    }
                }
                Some(exit) => return Ok(exit),
            }
        }
    }

    fn counters_now(&self) -> EngineStats {
        let c = &self.counters;
        let mut s = EngineStats {
            instructions: c.substrate_instructions
                + c.stepped_instructions
                + c.fallback_instructions,
            ..EngineStats::default()
        };
        let trap_sites = self
            .csam
            .sites()
            .iter()
            .filter(|s| !self.patm.is_patched(**s))
            .count() as u64;
        let installed = |k: Kind| self.patm.installed.get(k.name()).copied().unwrap_or(0);
        for (k, v) in [
            ("monitor_entries", c.monitor_entries),
            ("substrate_instructions", c.substrate_instructions),
            ("stepped_instructions", c.stepped_instructions),
            ("fallback_instructions", c.fallback_instructions),
            ("site_traps", c.site_traps),
            ("csam_unscanned_stops", c.unscanned_stops),
            ("external_interrupts", c.external_interrupts),
            ("csam_sites", self.csam.sites().len() as u64),
            ("csam_scans", self.csam.scans),
            ("csam_instructions_scanned", self.csam.instructions_scanned),
            ("csam_pages", self.csam.pages() as u64),
            ("shadow_builds", self.shadows.builds),
            ("patm_enabled", self.patm.enabled as u64),
            ("patm_live_patches", self.patm.patches().count() as u64),
            ("patm_trap_patches", trap_sites),
            ("patm_installed.jump.cli", installed(Kind::Cli)),
            ("patm_installed.jump.sti", installed(Kind::Sti)),
            ("patm_installed.jump.pushfd", installed(Kind::Pushfd)),
            ("patm_installed.jump.popfd", installed(Kind::Popfd)),
            ("patm_installed.jump.iretd", installed(Kind::Iretd)),
            (
                "patm_installed.jump.push_sreg",
                installed(Kind::PushSreg(SegReg::Ds)),
            ),
            ("patm_removed.dirty", self.patm.removed.dirty),
            ("patm_removed.remapped", self.patm.removed.remapped),
            ("patm_removed.flushed", self.patm.removed.flushed),
            ("patm_executions", c.patch_executions),
            ("patm_bails", c.patch_bails),
            ("patm_faults", c.patch_faults),
        ] {
            s.counters.insert(k, v);
        }
        for (&v, &n) in &c.traps_by_vector {
            *s.counters.entry(TRAP_NAMES[v as usize]).or_default() += n;
        }
        for (mnemonic, &n) in &c.traps_by_insn {
            let name = format!("emulated.{mnemonic:?}").to_lowercase();
            *s.counters
                .entry(ringside_core::exec::intern(&name))
                .or_default() += n;
        }
        s
    }
}

impl Primary for Raw {
    fn cannot_run(&self, m: &Machine) -> Option<&'static str> {
        cannot_run(m)
    }
}

/// Instructions the interpreter runs, when the guest leaves raw mode's
/// reach in the middle of a run, before raw mode asks again.
pub const FALLBACK_SLICE: u64 = 1_000;

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
