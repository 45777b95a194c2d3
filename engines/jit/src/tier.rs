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

use std::time::Instant;

use cranelift_codegen::ir::{types, AbiParam};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;
use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, OpKind};
use ringside_core::Machine;
use ringside_interp::exec::{Block, BlockEnd, Decoded, Tier, Translation};

use crate::frame::{Entry, Frame};
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
}

/// The tier.
pub struct Recompiler {
    pub threshold: u32,
    /// Host code bytes a generation may hold before it is flushed.
    pub cache_budget: u64,
    pub counters: Counters,
    module: Option<JITModule>,
    generation_bytes: u64,
    flush_wanted: bool,
    fctx: FunctionBuilderContext,
    /// The decoded instructions of this generation's translations (their
    /// helper calls point into them): freed with the generation.
    decoded: Vec<Box<[Decoded]>>,
    /// The most guest blocks one region may hold (1: blocks only).
    pub region_blocks: usize,
    /// Keep the IR text of the next compile (for `jit-dump`).
    pub keep_ir: bool,
    pub last_ir: Option<String>,
}

/// The default hotness threshold: runs of a block before it is compiled.
pub const DEFAULT_THRESHOLD: u32 = 2000;
/// The default bound on the guest blocks of a region: 1, a block alone
/// (its loops back to itself stay inside). Measured on bench-int, larger
/// regions run the guest no faster today and cost two to three times the
/// compile time (docs/jit.md, "Limits").
pub const DEFAULT_REGION_BLOCKS: usize = 1;
/// The default code budget of a generation.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

fn new_module() -> Result<JITModule, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift setting {k}={v}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
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
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| format!("this host cannot run Cranelift code: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("cranelift: {e}"))?;
    let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    Ok(JITModule::new(builder))
}

impl Recompiler {
    pub fn new(threshold: u32) -> Recompiler {
        Recompiler {
            threshold: threshold.max(1),
            cache_budget: DEFAULT_CACHE_BYTES,
            counters: Counters::default(),
            module: None,
            generation_bytes: 0,
            flush_wanted: false,
            fctx: FunctionBuilderContext::new(),
            keep_ir: false,
            last_ir: None,
            decoded: Vec::new(),
            region_blocks: DEFAULT_REGION_BLOCKS,
        }
    }

    /// Compile a region for `mode`: `blocks` are guest blocks by EIP, the
    /// first the entry; returns the entry address.
    pub fn compile(
        &mut self,
        blocks: Vec<(u32, Vec<Decoded>)>,
        mode: Mode,
    ) -> Result<usize, String> {
        if self.module.is_none() {
            self.module = Some(new_module()?);
        }
        let module = self.module.as_mut().expect("made above");
        let start = Instant::now();
        let ptr = module.target_config().pointer_type();
        let mut ctx: Context = module.make_context();
        ctx.func.signature.params.push(AbiParam::new(ptr));
        ctx.func.signature.returns.push(AbiParam::new(types::I32));
        let kept: Vec<(u32, Box<[Decoded]>)> = blocks
            .into_iter()
            .map(|(eip, insns)| (eip, insns.into_boxed_slice()))
            .collect();
        let shape = {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let view: Vec<(u32, &[Decoded])> = kept.iter().map(|(e, i)| (*e, &i[..])).collect();
            let shape = translate_into(&mut b, &view, mode, ptr);
            b.seal_all_blocks();
            b.finalize(module.isa().frontend_config());
            shape
        };
        if self.keep_ir {
            self.last_ir = Some(ctx.func.display().to_string());
        }
        let id = module
            .declare_anonymous_function(&ctx.func.signature)
            .map_err(|e| format!("declare: {e}"))?;
        module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("compile: {e:?}"))?;
        let bytes = ctx
            .compiled_code()
            .map(|c| c.code_info().total_size as u64)
            .unwrap_or(0);
        module.clear_context(&mut ctx);
        module
            .finalize_definitions()
            .map_err(|e| format!("finalize: {e}"))?;
        let entry = module.get_finalized_function(id) as usize;
        // The helper calls point into these: keep them with the code.
        self.decoded.extend(kept.into_iter().map(|(_, i)| i));
        let nanos = start.elapsed().as_nanos() as u64;
        let c = &mut self.counters;
        c.compiled += 1;
        c.compile_nanos += nanos;
        c.compile_micros
            .push((nanos / 1000).min(u32::MAX as u64) as u32);
        c.code_bytes += bytes;
        c.translated_insns += shape.translated as u64;
        c.delegated_insns += shape.delegated as u64;
        self.generation_bytes += bytes;
        if self.generation_bytes > self.cache_budget {
            self.flush_wanted = true;
        }
        Ok(entry)
    }
}

impl Drop for Recompiler {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the engine is going away: its translations (kept in
            // the interpreter's blocks of the same engine) can never be
            // entered again.
            unsafe { module.free_memory() };
        }
    }
}

/// Build the IR of a region into `b`.
pub fn translate_into(
    b: &mut FunctionBuilder,
    blocks: &[(u32, &[Decoded])],
    mode: Mode,
    ptr: types::Type,
) -> Shape {
    let mut t = Translator::new(b, mode, ptr);
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

/// The guest blocks reachable from `entry` by direct branches and fall
/// through inside the entry's physical page (at most `limit`), decoded by
/// the interpreter's rules. Staying in one page means the region dies
/// with the entry block when that page is written.
fn form_region(m: &mut Machine, entry: &Block, limit: usize) -> Vec<(u32, Vec<Decoded>)> {
    let eip0 = m.cpu.eip;
    let code32 = m.cpu.code32();
    let page_offset0 = m.cpu.linear_eip() & 0xFFF;
    let mut blocks = vec![(eip0, entry.insns.clone())];
    if limit <= 1 {
        return blocks;
    }
    let Some((host, _)) = m.mem().page_host_ptr(entry.phys_page << 12) else {
        return blocks;
    };
    let mut page = [0u8; 0x1000];
    // SAFETY: page_host_ptr returned the first byte of a 4 KiB RAM/ROM
    // page; the copy ends before anything can write guest memory.
    page.copy_from_slice(unsafe { std::slice::from_raw_parts(host, 0x1000) });
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
            if blocks.len() >= limit || blocks.iter().any(|b| b.0 == t) {
                continue;
            }
            let off = page_offset0 as i64 + (t as i64 - eip0 as i64);
            if !(0..0x1000).contains(&off) || (!code32 && t > 0xFFFF) {
                continue;
            }
            let insns = decode_block(&page[off as usize..], t, code32);
            let total: usize = blocks.iter().map(|b| b.1.len()).sum();
            if !insns.is_empty() && total + insns.len() <= MAX_REGION_INSNS {
                blocks.push((t, insns));
            }
        }
    }
    blocks
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
        insns.push(d);
        if ends {
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
    ) -> Option<BlockEnd> {
        let mode = Mode::of(m);
        let t = match block.translation {
            Some(t) if t.mode == mode.bits() => t,
            Some(_) => {
                // Made for another CPL or stack size: start counting again.
                self.counters.mode_mismatches += 1;
                block.translation = None;
                block.runs = 0;
                return None;
            }
            None => {
                block.runs = block.runs.saturating_add(1);
                if block.runs < self.threshold || block.runs == u32::MAX {
                    return None;
                }
                let region = form_region(m, block, self.region_blocks);
                self.counters.region_blocks += region.len() as u64;
                match self.compile(region, mode) {
                    Ok(entry) => {
                        let t = Translation {
                            entry,
                            mode: mode.bits(),
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
        Some(self.enter(t, m, code_seq, budget))
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
                Ok(entry) => {
                    let t = Translation {
                        entry,
                        mode: mode.bits(),
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
        Some(self.enter(t, m, code_seq, 1))
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
        self.flush_wanted = false;
        self.counters.flushes += 1;
    }
}

impl Recompiler {
    /// Run translation `t` of `block`.
    fn enter(&mut self, t: Translation, m: &mut Machine, code_seq: u64, budget: u64) -> BlockEnd {
        let before = m.clock.icount;
        let mp: *mut Machine = m;
        // SAFETY: every pointer is derived from `mp`, which stays valid
        // for the call; while the translation runs nothing else touches
        // the machine but the translation and the helpers it calls with
        // this frame. The entry was made by `compile` for this block's
        // instructions (`insns` points at them) and its generation is
        // alive (flushes drop every translation first).
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
                end: BlockEnd::default(),
            }
        };
        // SAFETY: as above; the entry has the `Entry` signature.
        unsafe {
            let entry: Entry = std::mem::transmute::<usize, Entry>(t.entry);
            entry(&mut frame);
        }
        let c = &mut self.counters;
        c.entries += 1;
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
