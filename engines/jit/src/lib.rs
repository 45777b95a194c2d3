//! ringside-jit: the Cranelift recompiler (REM in VirtualBox's terms).
//!
//! The recompiler is a tier under the interpreter's loop
//! (`ringside_interp::exec::Tier`): guest code is decoded and interpreted
//! first; a block that has run [`Jit::threshold`] times is compiled to host
//! code with Cranelift ([`translate`]) and run natively from then on
//! ([`tier`]). Everything that is not a block run — instruction boundaries,
//! interrupts, single steps, deadlines, breakpoints, invalidation after
//! code writes — is the interpreter's loop, so the two engines agree by
//! construction on where every interrupt lands, and the translation of
//! each instruction must agree with the interpreter's handler for it (the
//! handler is its slow path).
//!
//! Start reading at [`tier::Recompiler::run_block`], then
//! [`translate::Translator::instruction`]. `docs/jit.md` has the design.

pub mod compile;
pub mod frame;
pub mod tier;
pub mod translate;

use ringside_core::{Budget, Engine, EngineError, EngineStats, Exit, Machine};
use ringside_interp::exec::InterpCore;

pub use tier::{DEFAULT_CACHE_BYTES, DEFAULT_REGION_BLOCKS, DEFAULT_THRESHOLD};

/// The recompiler engine.
pub struct Jit {
    core: InterpCore,
    tier: tier::Recompiler,
}

impl Default for Jit {
    fn default() -> Self {
        Jit::new()
    }
}

impl Jit {
    pub fn new() -> Jit {
        Jit::with_threshold(DEFAULT_THRESHOLD)
    }

    /// A recompiler that compiles a block on its `threshold`-th run (1:
    /// at its first run).
    pub fn with_threshold(threshold: u32) -> Jit {
        let mut core = InterpCore::default();
        // Basic blocks: the tier's run counts then say which paths are
        // hot, and regions are made of those.
        core.split_at_branches = true;
        Jit {
            core,
            tier: tier::Recompiler::new(threshold),
        }
    }

    /// A recompiler with regions of up to `region_blocks` guest blocks.
    pub fn with_settings(threshold: u32, region_blocks: u32) -> Jit {
        let mut j = Jit::with_threshold(threshold);
        j.tier.region_blocks = region_blocks.max(1) as usize;
        j
    }

    /// Compile on a background thread (at thresholds above 1): a hot block
    /// runs interpreted until its translation is ready, which is attached
    /// at the next run of the block after that.
    pub fn set_background(&mut self, on: bool) {
        self.tier.background = on;
    }

    /// Run Cranelift's optimizer (`opt_level=speed`) on every region (on
    /// by default; see `tier::new_isa`). Set before the first run.
    pub fn set_optimize(&mut self, on: bool) {
        self.tier.optimize = on;
    }

    pub fn threshold(&self) -> u32 {
        self.tier.threshold
    }

    /// Bound the host code a generation may hold (bytes) before a flush.
    pub fn set_cache_budget(&mut self, bytes: u64) {
        self.tier.cache_budget = bytes;
    }

    /// The Cranelift IR of the block at the machine's CS:EIP, compiled
    /// afresh (for `ringside jit-dump` and the book): decodes the block
    /// as the interpreter does, translates it for the current mode, and
    /// returns the guest instructions, the IR and the host code.
    pub fn dump_block(&mut self, m: &mut Machine) -> Result<BlockDump, String> {
        let insns = self
            .core
            .decode_block_at(m)
            .map_err(|f| format!("the block at CS:EIP cannot be fetched: {f:?}"))?;
        let mut guest = String::new();
        for d in &insns {
            guest.push_str(&format!("{:08x}  {}\n", d.i.ip32(), d.i));
        }
        let mut t = tier::Recompiler::new(1);
        t.keep_ir = true;
        t.region_blocks = 1;
        t.compile(vec![(m.cpu.eip, insns)], translate::Mode::of(m))?;
        Ok(BlockDump {
            guest,
            ir: t.last_ir.take().unwrap_or_default(),
            host: t.last_host.take().unwrap_or_default(),
        })
    }
}

/// One block as `ringside jit-dump` shows it.
pub struct BlockDump {
    /// The guest instructions, one per line with their EIP.
    pub guest: String,
    /// The Cranelift IR the translator built.
    pub ir: String,
    /// The host code Cranelift made of it (x86-64, offsets from the
    /// function's start).
    pub host: String,
}

impl Engine for Jit {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        let before = m.clock.icount;
        let exit = self.core.run_with(m, budget, &mut self.tier);
        self.core.counters.instructions += m.clock.icount - before;
        exit
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        let before = m.clock.icount;
        let exit = self.core.step_with(m, &mut self.tier);
        self.core.counters.instructions += m.clock.icount - before;
        exit
    }

    /// The interpreter's loop checks breakpoints; while any breakpoint is
    /// set, no block is run natively (a step still runs the instruction's
    /// own translation).
    fn honours_breakpoints(&self) -> bool {
        true
    }

    fn stats(&self) -> EngineStats {
        let c = &self.core.counters;
        let t = &self.tier.counters;
        let mut s = EngineStats {
            instructions: c.instructions,
            ..EngineStats::default()
        };
        let mut times = t.compile_micros.clone();
        times.sort_unstable();
        let pct = |p: usize| {
            if times.is_empty() {
                0
            } else {
                times[(times.len() - 1) * p / 100] as u64
            }
        };
        let k = &mut s.counters;
        k.insert("blocks_decoded", c.blocks_decoded);
        k.insert("block_lookups", c.block_lookups);
        k.insert("chained_blocks", c.chained_blocks);
        k.insert("exceptions", c.exceptions);
        k.insert("interrupts", c.interrupts);
        k.insert("invalidated_blocks", c.invalidated_blocks);
        k.insert("jit_threshold", self.tier.threshold as u64);
        k.insert("compiled_blocks", t.compiled);
        k.insert("compile_failures", t.compile_failures);
        k.insert("compile_us_total", t.compile_nanos / 1000);
        k.insert("compile_us_p50", pct(50));
        k.insert("compile_us_p99", pct(99));
        k.insert("code_bytes", t.code_bytes);
        k.insert("translated_instructions", t.translated_insns);
        k.insert("delegated_instructions", t.delegated_insns);
        k.insert("native_entries", t.entries);
        k.insert("chained_translations", t.chained);
        k.insert("links_made", t.links_made);
        k.insert("covered_blocks", t.covered_blocks);
        k.insert("region_entries", t.region_entries);
        k.insert("member_waits", t.member_waits);
        k.insert("native_instructions", t.native_instructions);
        k.insert(
            "native_share_permille",
            (t.native_instructions * 1000)
                .checked_div(c.instructions)
                .unwrap_or(0),
        );
        k.insert(
            "instructions_per_entry_x10",
            (t.native_instructions * 10)
                .checked_div(t.entries)
                .unwrap_or(0),
        );
        k.insert("exits_fault", t.exits_fault);
        k.insert("exits_event", t.exits_event);
        k.insert("exits_not_retired", t.exits_not_retired);
        k.insert("mode_mismatches", t.mode_mismatches);
        k.insert(
            "translations_invalidated",
            self.core.cache.dropped_translations,
        );
        k.insert("flushes", t.flushes);
        k.insert("region_blocks", t.region_blocks);
        k.insert("single_steps", t.single_steps);
        s
    }
}
