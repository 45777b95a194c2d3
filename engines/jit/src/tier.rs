//! The recompiler as a tier under the interpreter's loop: it counts each
//! block's runs, compiles a block with Cranelift once it is hot, keeps the
//! host code, and runs it when the interpreter's loop offers the block
//! again.
//!
//! **Code memory.** cranelift-jit cannot free one function, so code lives
//! in *generations*: one `JITModule` at a time holds every translation.
//! A translation dies with its interpreter block (a code write, a cleared
//! cache); its bytes stay until the generation is freed. When the
//! generation holds more than its budget of host code bytes, the tier asks
//! for a flush: at the next serviced boundary (no translated code is
//! running then) every block's translation is dropped, the module's
//! memory freed and a new generation begun. Flushes are counted.

use std::collections::HashMap;

use cranelift_codegen::ir::types;
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;
use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, OpKind};
use ringside_core::cpu::SegReg;
use ringside_core::Machine;
use ringside_interp::exec::{Block, BlockEnd, Decoded, Tier, Translation};

use crate::compile::{
    codegen, entry_signature, trampoline, trampoline_signature, Compiled, Job, Unit, Worker,
};
use crate::frame::{Frame, LinkSlot, Trampoline};
use crate::translate::{Mode, Shape, Translator};

/// Counters the recompiler reports (see `docs/jit.md`).
#[derive(Default, Clone, Debug)]
pub struct Counters {
    pub compiled: u64,
    pub compile_failures: u64,
    pub compile_nanos: u64,
    /// Per-unit compile times in microseconds (for p50/p99).
    pub compile_micros: Vec<u32>,
    pub code_bytes: u64,
    pub translated_insns: u64,
    pub delegated_insns: u64,
    /// Entries into translated code.
    pub entries: u64,
    /// Instructions retired by translated code (including the ones it
    /// handed to the interpreter's handlers).
    pub native_instructions: u64,
    pub exits_fault: u64,
    pub exits_event: u64,
    pub exits_not_retired: u64,
    pub mode_mismatches: u64,
    /// Guest blocks in compiled regions.
    pub region_blocks: u64,
    /// Single instructions run alone from their own translation (steps).
    pub single_steps: u64,
    pub flushes: u64,
    /// Translations entered straight from another one's exit through a
    /// link slot, without going back to the interpreter's loop.
    pub chained: u64,
    /// Link slots filled.
    pub links_made: u64,
    /// Hot blocks left to the interpreter because a region made for
    /// another entry holds them (`Recompiler::covered`).
    pub covered_blocks: u64,
    /// Hot blocks attached to the code of a region compiled for another
    /// entry (`Shape::entries`) instead of being compiled again.
    pub region_entries: u64,
    /// Times a hot block waited for a region being compiled that holds
    /// it, rather than being compiled on its own.
    pub member_waits: u64,
}

/// The tier.
pub struct Recompiler {
    pub threshold: u32,
    /// Host code bytes a generation may hold before it is flushed.
    pub cache_budget: u64,
    pub counters: Counters,
    module: Option<JITModule>,
    /// The trampoline the engine enters translations through, in a
    /// module of its own that lives as long as the recompiler (flushes
    /// free only the translations' modules).
    trampoline: Option<(JITModule, usize)>,
    /// The indirect-branch table (`Frame::indirect`): emptied at every
    /// flush, since its entries point into the generation's code.
    indirect: Box<[LinkSlot]>,
    generation_bytes: u64,
    flush_wanted: bool,
    fctx: FunctionBuilderContext,
    /// The decoded instructions of this generation's translations (their
    /// helper calls point into them): freed with the generation.
    decoded: Vec<Box<[Decoded]>>,
    /// The link slots of this generation's translations (generated code
    /// returns their addresses): freed with the generation.
    links: Vec<*mut [LinkSlot]>,
    /// The slot of the last plain exit that did not chain: filled when
    /// the next block the loop offers has a translation for its mode.
    last_exit: Option<*mut LinkSlot>,
    /// The most guest blocks one region may hold (1: blocks only).
    pub region_blocks: usize,
    /// Keep the IR text of the next compile (for `jit-dump`).
    pub keep_ir: bool,
    pub last_ir: Option<String>,
    /// The host code of the same compile, disassembled.
    pub last_host: Option<String>,
    /// Compile hot blocks on a background thread (at thresholds above 1;
    /// at 1 every block is compiled before its first run).
    pub background: bool,
    /// Cranelift's optimizer on (`jit.optimize`); set before the first
    /// compile.
    pub optimize: bool,
    isa: Option<OwnedTargetIsa>,
    worker: Option<Worker<JobKey>>,
    /// Bumped at every flush: background results of an older generation
    /// are dropped.
    module_generation: u64,
    /// Blocks being compiled in the background, and finished translations
    /// not yet attached to their block.
    in_flight: HashMap<BlockKey, ()>,
    /// Blocks that have run at least [`Recompiler::warm_runs`] times in
    /// this generation: a region takes in only these besides its entry,
    /// so that code the guest never ran (error paths) costs no compile
    /// time.
    warm: std::collections::HashSet<BlockKey>,
    /// Blocks inside a region compiled (or being compiled) for another
    /// entry, from which that entry is reached again inside the region
    /// (the body of a loop whose head is the entry), with the blocks
    /// generation of the region: such a block does not get a region of
    /// its own when it gets hot; the interpreter runs it until control
    /// comes back to the entry (`Counters::covered_blocks`).
    covered: HashMap<BlockKey, u64>,
    ready: HashMap<BlockKey, Ready>,
    /// The blocks of compiled one-page regions other than their entries,
    /// each with its way into the region's code (`Shape::entries`) and the
    /// blocks generation the region was formed in: a block found here when
    /// it gets hot enters that code rather than being compiled again (a
    /// loop entered at its preheader and at its head, or at several
    /// places, is compiled once). Valid while no block has been dropped
    /// since: a write to the page drops the region's entry block.
    entries: HashMap<BlockKey, Ready>,
    /// The blocks of one-page regions being compiled in the background,
    /// other than their entries, with the blocks generation of the region.
    members: HashMap<BlockKey, u64>,
}

/// A block as the background compiler knows it: EIP, physical page,
/// mode bits.
type BlockKey = (u32, u32, u32);

/// A background job's key: the block, the interpreter's blocks
/// generation when the job was made (a translation is attached only if no
/// block was dropped since, so its code still matches memory), and the
/// code generation it is for.
#[derive(Clone, Copy, Debug)]
pub struct JobKey {
    block: BlockKey,
    blocks_generation: u64,
    module_generation: u64,
}

/// A finished background translation (entry 0: the compile failed).
#[derive(Clone, Copy, Debug)]
struct Ready {
    entry: usize,
    reach: u32,
    blocks_generation: u64,
}

/// The default hotness threshold: runs of a block before it is compiled.
pub const DEFAULT_THRESHOLD: u32 = 10000;
/// The default bound on the guest blocks of a region. The blocks are
/// basic blocks (the recompiler's interpreter ends its blocks at
/// conditional branches), and a region takes in only blocks the guest has
/// run often (`Recompiler::warm_runs`), so the bound is rarely reached.
pub const DEFAULT_REGION_BLOCKS: usize = 16;
/// The default code budget of a generation.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Cranelift's settings for the recompiler. `optimize` runs Cranelift's
/// e-graph mid-end (`opt_level=speed`: constant folding, GVN, alias
/// analysis); without it (`opt_level=none`) a region compiles about a
/// third faster and runs about a tenth slower (docs/jit.md, "Compile
/// time").
fn new_isa(optimize: bool) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift setting {k}={v}: {e}"))
    };
    set(
        &mut flags,
        "opt_level",
        if optimize { "speed" } else { "none" },
    )?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    // Tail calls between translations need frame pointers (Cranelift's
    // x64 backend relies on them).
    set(&mut flags, "preserve_frame_pointers", "true")?;
    set(&mut flags, "is_pic", "false")?;
    cranelift_native::builder()
        .map_err(|e| format!("this host cannot run Cranelift code: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("cranelift: {e}"))
}

/// Copy compiled code into `module`'s executable memory as function
/// `name`; returns its address.
fn install(
    module: &mut JITModule,
    name: &str,
    signature: &cranelift_codegen::ir::Signature,
    compiled: &Compiled,
) -> Result<usize, String> {
    let id = module
        .declare_function(name, cranelift_module::Linkage::Local, signature)
        .map_err(|e| format!("declare: {e}"))?;
    module
        .define_function_bytes(id, compiled.alignment, &compiled.code, &[])
        .map_err(|e| format!("install: {e:?}"))?;
    module
        .finalize_definitions()
        .map_err(|e| format!("finalize: {e}"))?;
    Ok(module.get_finalized_function(id) as usize)
}

fn new_module(isa: OwnedTargetIsa) -> JITModule {
    JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ))
}

impl Recompiler {
    pub fn new(threshold: u32) -> Recompiler {
        Recompiler {
            threshold: threshold.max(1),
            cache_budget: DEFAULT_CACHE_BYTES,
            counters: Counters::default(),
            module: None,
            trampoline: None,
            indirect: vec![LinkSlot::default(); crate::frame::INDIRECT_SLOTS].into_boxed_slice(),
            generation_bytes: 0,
            flush_wanted: false,
            fctx: FunctionBuilderContext::new(),
            keep_ir: false,
            last_ir: None,
            last_host: None,
            decoded: Vec::new(),
            links: Vec::new(),
            last_exit: None,
            region_blocks: DEFAULT_REGION_BLOCKS,
            background: false,
            optimize: true,
            isa: None,
            worker: None,
            module_generation: 0,
            in_flight: HashMap::new(),
            warm: Default::default(),
            covered: HashMap::new(),
            ready: HashMap::new(),
            entries: HashMap::new(),
            members: HashMap::new(),
        }
    }

    fn isa(&mut self) -> Result<OwnedTargetIsa, String> {
        if self.isa.is_none() {
            self.isa = Some(new_isa(self.optimize)?);
        }
        Ok(self.isa.clone().expect("made above"))
    }

    /// Compile a region for `mode` on this thread: `blocks` are guest
    /// blocks by EIP, the first the entry; returns the entry address and
    /// its reach.
    pub fn compile(
        &mut self,
        blocks: Vec<(u32, Vec<Decoded>)>,
        mode: Mode,
    ) -> Result<(usize, u32), String> {
        self.compile_unit(Unit::new(blocks, mode))
    }

    fn compile_unit(&mut self, mut unit: Unit) -> Result<(usize, u32), String> {
        let isa = self.isa()?;
        let compiled = codegen(&*isa, &mut self.fctx, &mut unit, self.keep_ir);
        self.finish(unit, compiled)
    }

    /// Install a compiled unit in the code memory and keep what its code
    /// points at with the generation.
    fn finish(
        &mut self,
        unit: Unit,
        compiled: Result<Compiled, String>,
    ) -> Result<(usize, u32), String> {
        let compiled = compiled?;
        let isa = self.isa()?;
        self.make_trampoline(&isa)?;
        let module = self.module.get_or_insert_with(|| new_module(isa.clone()));
        // Named after the guest EIP (and made unique), so that `perf`'s
        // JIT map names the guest code a host sample falls in.
        let name = format!("guest_{:08x}_{}", unit.first_eip(), self.counters.compiled);
        let entry = install(module, &name, &entry_signature(&*isa), &compiled)?;
        if self.keep_ir {
            self.last_ir = compiled.ir.clone();
            self.last_host = Some(disassemble_host(&compiled.code, entry as u64));
        }
        if let Some((page, blocks_generation)) = unit.one_page {
            for &(eip, reach) in &compiled.shape.entries {
                self.entries.insert(
                    (eip, page, unit.mode.bits()),
                    Ready {
                        entry,
                        reach,
                        blocks_generation,
                    },
                );
            }
        }
        // The code points into these: keep them with the generation.
        let Unit { blocks, slots, .. } = unit;
        self.decoded.extend(blocks.into_iter().map(|(_, i)| i));
        self.links.push(slots.into_raw());
        let bytes = compiled.code.len() as u64;
        let nanos = compiled.nanos;
        let c = &mut self.counters;
        c.compiled += 1;
        c.compile_nanos += nanos;
        c.compile_micros
            .push((nanos / 1000).min(u32::MAX as u64) as u32);
        c.code_bytes += bytes;
        c.translated_insns += compiled.shape.translated as u64;
        c.delegated_insns += compiled.shape.delegated as u64;
        self.generation_bytes += bytes;
        if self.generation_bytes > self.cache_budget {
            self.flush_wanted = true;
        }
        Ok((entry, compiled.shape.reach))
    }

    /// Install what the background compiler has finished (results made
    /// for an older code generation are dropped).
    fn collect(&mut self) {
        while let Some(done) = self.worker.as_ref().and_then(|w| w.poll()) {
            let key = done.key;
            self.in_flight.remove(&key.block);
            if let Some((page, _)) = done.unit.one_page {
                for (eip, _) in &done.unit.blocks[1..] {
                    self.members.remove(&(*eip, page, done.unit.mode.bits()));
                }
            }
            if key.module_generation != self.module_generation {
                continue;
            }
            let (entry, reach) = match self.finish(done.unit, done.result) {
                Ok(done) => done,
                Err(_) => {
                    self.counters.compile_failures += 1;
                    (0, 0)
                }
            };
            self.ready.insert(
                key.block,
                Ready {
                    entry,
                    reach,
                    blocks_generation: key.blocks_generation,
                },
            );
        }
    }

    /// A hot block without a translation, with background compilation:
    /// attach its finished translation if there is one and it was made
    /// from the memory that is there now; otherwise queue it (once) and
    /// let the interpreter run the block meanwhile.
    fn compile_in_background(
        &mut self,
        block: &mut Block,
        m: &mut Machine,
        mode: Mode,
        blocks_generation: u64,
    ) -> Option<Translation> {
        // `run_block` has collected finished work and looked for a region
        // to enter already.
        let key = (m.cpu.eip, block.phys_page, mode.bits());
        if self.members.get(&key) == Some(&blocks_generation) {
            // A block of a region still being compiled for another entry
            // (the blocks of a loop get hot together): ask again a little
            // later, when that region's code may be there to enter.
            block.runs = self.threshold - (self.threshold / 16).max(1);
            self.counters.member_waits += 1;
            return None;
        }
        if let Some(r) = self.ready.remove(&key) {
            if r.blocks_generation == blocks_generation {
                if r.entry == 0 {
                    // Never try this block again; the interpreter runs it.
                    block.runs = u32::MAX;
                    return None;
                }
                let t = Translation {
                    entry: r.entry,
                    mode: mode.bits(),
                    reach: r.reach,
                };
                block.translation = Some(t);
                return Some(t);
            }
            // Made before some block was dropped: its code may be stale.
        }
        if self.in_flight.contains_key(&key) {
            return None;
        }
        if self.worker.is_none() {
            match self.isa().and_then(Worker::start) {
                Ok(w) => self.worker = Some(w),
                Err(_) => {
                    self.background = false;
                    return None;
                }
            }
        }
        let (region, pages) = form_region(m, block, mode, self.region_blocks, &self.warm);
        self.counters.region_blocks += region.len() as u64;
        self.cover(&region, &pages, mode, blocks_generation);
        let mut unit = Unit::new(region, mode);
        unit.one_page = one_page(block, &pages, blocks_generation);
        if let Some((page, _)) = unit.one_page {
            for (eip, _) in &unit.blocks[1..] {
                self.members
                    .insert((*eip, page, mode.bits()), blocks_generation);
            }
        }
        let job = Job {
            key: JobKey {
                block: key,
                blocks_generation,
                module_generation: self.module_generation,
            },
            unit,
        };
        if self.worker.as_ref().is_some_and(|w| w.submit(job)) {
            self.in_flight.insert(key, ());
        } else {
            self.background = false;
        }
        None
    }
}

impl Recompiler {
    /// A way into the code of a region compiled for another entry, for
    /// the block at `eip` (`Recompiler::entries`).
    fn region_entry(
        &mut self,
        block: &Block,
        eip: u32,
        mode: Mode,
        blocks_generation: u64,
    ) -> Option<Translation> {
        if block.second_page().is_some() {
            return None;
        }
        let key = (eip, block.phys_page, mode.bits());
        let r = *self.entries.get(&key)?;
        if r.blocks_generation != blocks_generation {
            self.entries.remove(&key);
            return None;
        }
        self.counters.region_entries += 1;
        Some(Translation {
            entry: r.entry,
            mode: mode.bits(),
            reach: r.reach,
        })
    }

    /// Record the blocks of `region` (its first the entry; `pages`, each
    /// block's physical page) from which the entry is reached again
    /// inside the region.
    fn cover(
        &mut self,
        region: &[(u32, Vec<Decoded>)],
        pages: &[u32],
        mode: Mode,
        blocks_generation: u64,
    ) {
        // Successors inside the region, by index.
        let index = |t: u32| region.iter().position(|b| b.0 == t);
        let successors: Vec<Vec<usize>> = region
            .iter()
            .map(|(_, insns)| {
                let mut out: Vec<usize> = insns
                    .iter()
                    .filter_map(direct_target)
                    .filter_map(index)
                    .collect();
                if let Some(last) = insns.last() {
                    out.extend(index(last.next_eip));
                }
                out
            })
            .collect();
        // Blocks that lead back to the entry: grow backwards from it.
        let mut leads_back = vec![false; region.len()];
        if let Some(first) = leads_back.first_mut() {
            *first = true;
        }
        let mut changed = true;
        while changed {
            changed = false;
            for n in 1..region.len() {
                if !leads_back[n] && successors[n].iter().any(|&s| leads_back[s]) {
                    leads_back[n] = true;
                    changed = true;
                }
            }
        }
        for (n, (eip, _)) in region.iter().enumerate().skip(1) {
            if leads_back[n] {
                self.covered
                    .insert((*eip, pages[n], mode.bits()), blocks_generation);
            }
        }
    }

    /// Compile the trampoline (once): no translation is installed before
    /// it exists, so `enter` always has it.
    fn make_trampoline(&mut self, isa: &OwnedTargetIsa) -> Result<(), String> {
        if self.trampoline.is_some() {
            return Ok(());
        }
        let compiled = trampoline(&**isa, &mut self.fctx)?;
        let mut module = new_module(isa.clone());
        let entry = install(
            &mut module,
            "ringside_jit_trampoline",
            &trampoline_signature(&**isa),
            &compiled,
        )?;
        self.trampoline = Some((module, entry));
        Ok(())
    }

    /// Runs after which a block is warm: a thirty-second of the threshold.
    fn warm_runs(&self) -> u32 {
        (self.threshold / 32).max(1)
    }

    /// Free the link slots of the generation.
    fn free_links(&mut self) {
        self.last_exit = None;
        for slots in self.links.drain(..) {
            // SAFETY: made by `Box::into_raw` in `compile`; the code that
            // returns their addresses is freed with them.
            drop(unsafe { Box::from_raw(slots) });
        }
    }
}

impl Drop for Recompiler {
    fn drop(&mut self) {
        self.free_links();
        if let Some(module) = self.module.take() {
            // SAFETY: the engine is going away: its translations (kept in
            // the interpreter's blocks of the same engine) can never be
            // entered again.
            unsafe { module.free_memory() };
        }
        if let Some((module, _)) = self.trampoline.take() {
            // SAFETY: as above: nothing can enter it again.
            unsafe { module.free_memory() };
        }
    }
}

/// Host code as text, one instruction per line (x86-64, Intel syntax).
fn disassemble_host(code: &[u8], address: u64) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for i in &mut decoder {
        text.clear();
        formatter.format(&i, &mut text);
        out.push_str(&format!("{:5x}  {text}\n", i.ip() - address));
    }
    out
}

/// Build the IR of a region into `b`.
pub fn translate_into(
    b: &mut FunctionBuilder,
    blocks: &[(u32, &[Decoded])],
    mode: Mode,
    ptr: types::Type,
    host_cc: CallConv,
    slots: &mut [LinkSlot],
) -> Shape {
    let mut t = Translator::new(b, mode, ptr, host_cc, slots);
    t.begin_region(blocks);
    for (n, &(_, insns)) in blocks.iter().enumerate() {
        t.enter_block(n);
        let mut open = true;
        for (k, d) in insns.iter().enumerate() {
            if !t.instruction(k, d) {
                open = false;
                break;
            }
        }
        if open {
            let last = insns.last().expect("blocks are never empty");
            t.finish(last.next_eip, insns.len());
        }
    }
    t.shape
}

/// The warm guest blocks reachable from `entry` by direct branches and
/// fall-through inside the entry's pages (at most `limit`), decoded by the
/// interpreter's rules: the entry's physical page, and the next one when
/// the entry block itself runs onto it. Staying in the entry block's pages
/// means the region dies with the entry block when one of them is
/// written.
///
/// Returns the blocks and, for each, the physical page it was decoded from.
fn form_region(
    m: &mut Machine,
    entry: &Block,
    mode: Mode,
    limit: usize,
    warm: &std::collections::HashSet<BlockKey>,
) -> (Vec<(u32, Vec<Decoded>)>, Vec<u32>) {
    let eip0 = m.cpu.eip;
    let mode = mode.bits();
    let code32 = m.cpu.code32();
    let page_offset0 = m.cpu.linear_eip() & 0xFFF;
    let mut blocks = vec![(eip0, cut_at_branch(&entry.insns))];
    let mut block_pages = vec![entry.phys_page];
    if limit <= 1 {
        return (blocks, block_pages);
    }
    // The entry's page, and when the entry block's last instruction runs
    // onto the next page, that page too: the entry block (which holds the
    // translation) dies when either is written and is looked up only
    // while the second still maps where it did, so the region may take in
    // blocks of both (a loop across a page boundary stays inside).
    let mut pages = vec![(entry.phys_page, 0u32)];
    if let Some((_, phys2)) = entry.second_page() {
        pages.push((phys2, 0x1000));
    }
    let mut page = vec![0u8; 0x1000 * pages.len()];
    for &(phys, at) in &pages {
        let Some((host, _)) = m.mem().page_host_ptr(phys << 12) else {
            page.truncate(at as usize);
            break;
        };
        // SAFETY: page_host_ptr returned the first byte of a 4 KiB
        // RAM/ROM page; the copy ends before anything can write guest
        // memory.
        page[at as usize..at as usize + 0x1000]
            .copy_from_slice(unsafe { std::slice::from_raw_parts(host, 0x1000) });
    }
    if page.is_empty() {
        return (blocks, block_pages);
    }
    let mut next = 0;
    while next < blocks.len() && blocks.len() < limit {
        let mut targets = Vec::new();
        for d in &blocks[next].1 {
            if let Some(t) = direct_target(d) {
                targets.push(t);
            }
        }
        // Fall through only past a conditional branch or a block cut at
        // its length limit: after an instruction that ends its block by
        // itself (HLT, a mode change, a transfer) execution leaves the
        // region anyway, and what follows may not be code.
        let last = blocks[next].1.last().expect("blocks are never empty");
        let falls = match last.i.flow_control() {
            FlowControl::ConditionalBranch => true,
            FlowControl::Next => !ringside_interp::table::handler_for(&last.i).1,
            _ => false,
        };
        if falls {
            targets.push(last.next_eip);
        }
        next += 1;
        for t in targets {
            let off = page_offset0 as i64 + (t as i64 - eip0 as i64);
            if blocks.len() >= limit
                || blocks.iter().any(|b| b.0 == t)
                || !(0..page.len() as i64).contains(&off)
                || (!code32 && t > 0xFFFF)
            {
                continue;
            }
            let phys = pages[off as usize >> 12].0;
            if !warm.contains(&(t, phys, mode)) {
                continue;
            }
            let insns = decode_block(&page[off as usize..], t, code32);
            let total: usize = blocks.iter().map(|b| b.1.len()).sum();
            if !insns.is_empty() && total + insns.len() <= MAX_REGION_INSNS {
                blocks.push((t, insns));
                block_pages.push(phys);
            }
        }
    }
    (blocks, block_pages)
}

/// `Unit::one_page` for a region formed at `entry` whose blocks come from
/// `pages`: the entry's page when the entry block and every other block
/// lie in it.
fn one_page(entry: &Block, pages: &[u32], blocks_generation: u64) -> Option<(u32, u64)> {
    (entry.second_page().is_none() && pages.iter().all(|&p| p == entry.phys_page))
        .then_some((entry.phys_page, blocks_generation))
}

/// A block as the recompiler translates it: the interpreter's block up to
/// its first conditional branch. (The recompiler's interpreter already
/// ends its blocks there, `InterpCore::split_at_branches`; this keeps the
/// rule for a block decoded otherwise. Translating past a conditional
/// branch would compile the code after every loop once more for each loop
/// head, where a block of its own, entered from the branch's exit, is
/// compiled once.)
fn cut_at_branch(insns: &[Decoded]) -> Vec<Decoded> {
    let end = insns
        .iter()
        .position(|d| d.i.flow_control() == FlowControl::ConditionalBranch)
        .map_or(insns.len(), |n| n + 1);
    insns[..end].to_vec()
}

/// A near branch's target, for the branches a region follows.
fn direct_target(d: &Decoded) -> Option<u32> {
    use iced_x86::Mnemonic::*;
    let near = matches!(d.i.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32);
    let followed = matches!(
        d.i.mnemonic(),
        Jmp | Ja | Jae | Jb | Jbe | Je | Jne | Jg | Jge | Jl | Jle | Jo | Jno | Jp | Jnp | Js | Jns
    );
    (near && followed).then_some(d.imm)
}

/// Decode a block from `bytes` (the rest of the page from `eip`) by the
/// interpreter's block rules, leaving out an instruction that does not fit
/// in the page or does not decode (the interpreter deals with those).
fn decode_block(bytes: &[u8], eip: u32, code32: bool) -> Vec<Decoded> {
    let mut decoder = Decoder::with_ip(
        if code32 { 32 } else { 16 },
        bytes,
        eip as u64,
        DecoderOptions::NONE,
    );
    let mut insns = Vec::new();
    let mut ins = Instruction::default();
    while insns.len() < ringside_interp::exec::MAX_BLOCK && decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if decoder.last_error() != DecoderError::None || ins.is_invalid() {
            break;
        }
        let end = ins.ip32().wrapping_add(ins.len() as u32);
        if !code32 && end > 0x10000 {
            break;
        }
        let (d, ends) = Decoded::new(ins, code32);
        let branch = d.i.flow_control() == FlowControl::ConditionalBranch;
        insns.push(d);
        if ends || branch {
            break;
        }
    }
    insns
}

/// The most guest instructions one region may hold (compile time grows
/// faster than linearly with the function's size).
const MAX_REGION_INSNS: usize = 256;

impl Tier for Recompiler {
    #[inline]
    fn run_block(
        &mut self,
        block: &mut Block,
        m: &mut Machine,
        code_seq: u64,
        budget: u64,
        blocks_generation: u64,
    ) -> Option<BlockEnd> {
        let fill = self.last_exit.take();
        if block.translation.is_none() {
            block.runs = block.runs.saturating_add(1);
            if block.runs == self.warm_runs() && self.region_blocks > 1 {
                self.warm
                    .insert((m.cpu.eip, block.phys_page, Mode::of(m).bits()));
            }
            if block.runs < self.threshold || block.runs == u32::MAX {
                return None;
            }
        }
        let mode = Mode::of(m);
        if block.translation.is_none() {
            if self.background && self.threshold > 1 {
                // Finished background work first: it may hold the region
                // this block can enter.
                self.collect();
            }
            block.translation = self.region_entry(block, m.cpu.eip, mode, blocks_generation);
        }
        let t = match block.translation {
            Some(t) if t.mode == mode.bits() => t,
            Some(_) => {
                // Made for another CPL, stack size or segments: start
                // counting again.
                self.counters.mode_mismatches += 1;
                block.translation = None;
                block.runs = 0;
                return None;
            }
            None if self.covered.get(&(m.cpu.eip, block.phys_page, mode.bits()))
                == Some(&blocks_generation) =>
            {
                // Inside a loop of a region made for another entry: the
                // interpreter runs it until the loop's head, where the
                // region is entered (a flush or a write to the page
                // starts the count again).
                block.runs = u32::MAX;
                self.counters.covered_blocks += 1;
                return None;
            }
            None if self.background && self.threshold > 1 => {
                self.compile_in_background(block, m, mode, blocks_generation)?
            }
            None => {
                let (region, pages) = form_region(m, block, mode, self.region_blocks, &self.warm);
                self.counters.region_blocks += region.len() as u64;
                self.cover(&region, &pages, mode, blocks_generation);
                let mut unit = Unit::new(region, mode);
                unit.one_page = one_page(block, &pages, blocks_generation);
                match self.compile_unit(unit) {
                    Ok((entry, reach)) => {
                        let t = Translation {
                            entry,
                            mode: mode.bits(),
                            reach,
                        };
                        block.translation = Some(t);
                        t
                    }
                    Err(_) => {
                        // Never try this block again; the interpreter runs it.
                        self.counters.compile_failures += 1;
                        block.runs = u32::MAX;
                        return None;
                    }
                }
            }
        };
        if t.reach as u64 > budget {
            // It could retire past the budget before its first check:
            // the interpreter runs this block (near a deadline).
            return None;
        }
        let epoch = blocks_generation.wrapping_add(m.tlb().generation());
        if let Some(slot) = fill {
            // SAFETY: slots live as long as their generation, and a flush
            // forgets `last_exit`.
            let slot = unsafe { &mut *slot };
            // The exit went to this block's EIP in the mode this
            // translation is for: from now on, while the epoch holds
            // (nothing the block lookup depends on has changed), the exit
            // leads here. Only in flat CS, where EIP alone names the
            // linear address.
            if slot.target == m.cpu.eip && slot.mode == t.mode && mode.is_flat(SegReg::Cs) {
                slot.entry = t.entry;
                slot.len = t.reach;
                slot.epoch = epoch;
                self.counters.links_made += 1;
            }
        }
        Some(self.enter(t, m, code_seq, budget, blocks_generation))
    }

    fn step_block(
        &mut self,
        block: &mut Block,
        m: &mut Machine,
        code_seq: u64,
    ) -> Option<BlockEnd> {
        let mode = Mode::of(m);
        let t = match block.single {
            Some(t) if t.mode == mode.bits() => t,
            _ => match self.compile(vec![(m.cpu.eip, block.insns[..1].to_vec())], mode) {
                Ok((entry, reach)) => {
                    let t = Translation {
                        entry,
                        mode: mode.bits(),
                        reach,
                    };
                    block.single = Some(t);
                    t
                }
                Err(_) => {
                    self.counters.compile_failures += 1;
                    return None;
                }
            },
        };
        self.counters.single_steps += 1;
        Some(self.enter(t, m, code_seq, 1, 0))
    }

    fn wants_flush(&self) -> bool {
        self.flush_wanted
    }

    fn flushed(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: called at a boundary, after every block's
            // translation was dropped: no code of this module runs or can
            // be entered again.
            unsafe { module.free_memory() };
        }
        self.generation_bytes = 0;
        self.decoded.clear();
        self.free_links();
        self.indirect.fill(LinkSlot::default());
        self.module_generation += 1;
        self.ready.clear();
        self.warm.clear();
        self.covered.clear();
        self.entries.clear();
        self.members.clear();
        self.flush_wanted = false;
        self.counters.flushes += 1;
    }
}

impl Recompiler {
    /// Run translation `t`, and after it, while each one leaves plainly
    /// through a filled link slot of the current epoch and nothing is due
    /// that the interpreter's loop would look at between blocks (pending
    /// work, the budget), the translations the slots lead to. The mode
    /// cannot have changed on a plain exit (every instruction that changes
    /// it ends the block through a helper, which returns null), and a
    /// slot is only filled for a translation of the same mode.
    fn enter(
        &mut self,
        t: Translation,
        m: &mut Machine,
        code_seq: u64,
        budget: u64,
        blocks_generation: u64,
    ) -> BlockEnd {
        let before = m.clock.icount;
        // The interpreter's loop stops before the instruction at `stop_at`.
        let stop_at = before + budget + 1;
        let mp: *mut Machine = m;
        // SAFETY: every pointer is derived from `mp`, which stays valid
        // for the calls; while a translation runs nothing else touches
        // the machine but the translation and the helpers it calls with
        // this frame. Each entry was made by `compile` and its generation
        // is alive (flushes drop every translation and slot first).
        let mut frame = unsafe {
            let abi = (*mp).abi_pointers();
            Frame {
                cpu: abi.cpu,
                tlb: abi.tlb,
                pending: abi.pending,
                icount: &raw mut (*mp).clock.icount,
                machine: mp,
                budget,
                code_seq,
                icount_base: before,
                rec: [crate::translate::LAZY_NONE; 5],
                end: BlockEnd::default(),
                stop_at,
                blocks_generation,
                tlb_generation: abi.tlb_generation,
                chained: 0,
                indirect: self.indirect.as_mut_ptr(),
            }
        };
        let trampoline = self
            .trampoline
            .as_ref()
            .expect("made before the first translation was installed")
            .1;
        // SAFETY: the trampoline was compiled with `Trampoline`'s
        // signature and lives as long as the recompiler.
        let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) };
        let mut entry = t.entry;
        loop {
            // SAFETY: as above; the entry is a translation of a live
            // generation, which the trampoline calls.
            let exit = unsafe { trampoline(&mut frame, entry) };
            self.counters.entries += 1;
            // A translation returns a slot only where its helpers said go
            // on (no fault, no exit, the instruction retired); otherwise
            // null.
            if exit.is_null() {
                break;
            }
            let e = &frame.end;
            // SAFETY: a plain exit returns one of its generation's slots;
            // the machine is not borrowed by anything while no
            // translation runs.
            let (slot, now, epoch, quiet) = unsafe {
                (
                    *exit,
                    (*mp).clock.icount,
                    blocks_generation.wrapping_add((*mp).tlb().generation()),
                    *frame.pending == 0,
                )
            };
            if slot.entry == 0
                || slot.epoch != epoch
                || !quiet
                || e.event_delivered
                || now + slot.len as u64 >= stop_at
            {
                self.last_exit = Some(exit.cast_mut());
                break;
            }
            frame.budget = stop_at - now - 1;
            frame.icount_base = now;
            entry = slot.entry;
            self.counters.chained += 1;
        }
        frame.settle_flags();
        let c = &mut self.counters;
        c.entries += frame.chained;
        c.chained += frame.chained;
        c.native_instructions += m.clock.icount - before;
        if frame.end.fault.is_some() {
            c.exits_fault += 1;
        }
        if frame.end.exit.is_some() {
            c.exits_event += 1;
        }
        if frame.end.not_retired {
            c.exits_not_retired += 1;
        }
        frame.end
    }
}
