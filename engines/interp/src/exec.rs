//! The execution loop and the decoded-instruction cache.
//!
//! Guest code is decoded once into blocks — straight-line runs of decoded
//! instructions inside one physical page, ending at a control transfer or at
//! an instruction that changes how later ones must run — and cached by
//! (physical address, EIP, code size). Each decoded instruction carries the
//! function that executes it. A write to a page that blocks were decoded
//! from drops those blocks before the write can be executed (code-page
//! tracking in core), so self-modifying code is always seen.

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, OpKind, Register};
use ringside_core::cpu::boundary::{work, Boundary, DeliveredKind, PendingWork};
use ringside_core::cpu::{CpuResult, Fault, SegReg};
use ringside_core::memory::CodeWrites;
use ringside_core::mmu::AccessKind;
use ringside_core::{Budget, EngineError, Exit, Machine};

use crate::table;

/// What an instruction's handler can reach while it runs.
pub struct Ctx<'a> {
    pub m: &'a mut Machine,
    /// EIP after this instruction; branches overwrite it.
    pub next_eip: u32,
    /// End the current block after this instruction: it changed state that
    /// decoding or the fast path depends on (CS, mode, IF, the stack size...).
    pub end_block: bool,
    /// Return from `run` after this instruction.
    pub exit: Option<Exit>,
    /// A software interrupt or task switch happened: no single-step trap.
    pub event_delivered: bool,
    /// The code-write sequence number when this instruction started: a
    /// different number now means a store hit a page with cached code.
    pub code_seq: u64,
    /// The instruction did not retire and EIP stays on it: a REP string
    /// instruction stopped part-way (after a slice of its iterations) and
    /// resumes at the next run, which is what keeps a REP with a huge count
    /// from holding the engine past its budget; or a software interrupt
    /// went to the caller under the event policy.
    pub not_retired: bool,
}

pub type Handler = fn(&mut Ctx, &Decoded) -> CpuResult<()>;

/// One decoded instruction, ready to run.
#[derive(Clone)]
pub struct Decoded {
    pub i: Instruction,
    pub exec: Handler,
    /// EIP of the next instruction (wrapped to 16 bits in 16-bit code).
    pub next_eip: u32,
    /// The immediate operand, sign- or zero-extended as the instruction says.
    pub imm: u32,
    /// The memory operand uses 16-bit addressing.
    pub a16: bool,
    /// Operands 0-2 resolved at decode time, so that the handlers do not
    /// ask iced for the operand kinds and registers at every execution
    /// (the idea of Bochs's decoder, which picks handlers and operand
    /// forms once).
    pub ops: [Operand; 3],
    /// The general registers of operands 0 and 1 by encoding number (0
    /// where the operand is not a general register): what the handlers
    /// specialised for register forms read.
    pub regs: [usize; 2],
    /// The memory operand's address computation, resolved at decode time.
    pub mem: MemoryOperand,
    /// Guest instructions it retires: 1, or 0 for a raw-mode monitor's
    /// patch code (core::substrate).
    pub retires: u8,
}

impl Decoded {
    pub fn new(i: Instruction, code32: bool) -> (Decoded, bool) {
        let (exec, ends_block) = table::handler_for(&i);
        let ops = [0, 1, 2].map(|n| Operand::of(&i, n));
        let eip = i.ip32();
        let next = eip.wrapping_add(i.len() as u32);
        let next_eip = if code32 { next } else { next & 0xFFFF };
        // A near branch's target travels as its immediate.
        let imm = match i.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 => i.near_branch32(),
            _ => (0..i.op_count())
                .find_map(|n| immediate_of(&i, n))
                .unwrap_or(0),
        };
        let base = i.memory_base();
        let index = i.memory_index();
        let a16 = base.is_gpr16()
            || index.is_gpr16()
            || (base == Register::None && index == Register::None && i.memory_displ_size() == 2)
            || matches!(
                i.op0_kind(),
                iced_x86::OpKind::MemorySegSI
                    | iced_x86::OpKind::MemoryESDI
                    | iced_x86::OpKind::MemorySegDI
            )
            || (i.op_count() > 1
                && matches!(
                    i.op1_kind(),
                    iced_x86::OpKind::MemorySegSI
                        | iced_x86::OpKind::MemoryESDI
                        | iced_x86::OpKind::MemorySegDI
                ))
            || base == Register::BX && index == Register::AL;
        // A conditional branch ends the block only when taken (its handler
        // says so), so blocks run on through not-taken branches.
        let ends = match i.flow_control() {
            FlowControl::Next => ends_block,
            FlowControl::ConditionalBranch => false,
            _ => true,
        };
        (
            Decoded {
                i,
                exec,
                next_eip,
                imm,
                a16,
                ops,
                regs: [ops[0], ops[1]].map(|op| match op {
                    Operand::Gpr(r) => r as usize,
                    _ => 0,
                }),
                mem: MemoryOperand::of(&i),
                retires: 1,
            },
            ends,
        )
    }
}

/// An operand's shape, fixed by the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A general register by encoding number (for byte operands: AL, CL,
    /// DL, BL, AH, CH, DH, BH).
    Gpr(u8),
    Memory,
    Immediate,
    /// Anything else (segment, control or debug registers, branch
    /// targets, implicit string operands): handlers ask iced.
    Other,
}

impl Operand {
    pub(crate) fn of(i: &Instruction, n: u32) -> Operand {
        if n >= i.op_count() {
            return Operand::Other;
        }
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_gpr8() || r.is_gpr16() || r.is_gpr32() {
                    Operand::Gpr(r.number() as u8 & 7)
                } else {
                    Operand::Other
                }
            }
            OpKind::Memory => Operand::Memory,
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32 => Operand::Immediate,
            _ => Operand::Other,
        }
    }
}

/// How a memory operand's offset is computed: displacement, plus a base
/// register, plus an index register shifted by the scale. Register numbers
/// are 0-7; [`MemoryOperand::NONE`] means no register. With 16-bit
/// addressing the sum is taken modulo 64 KiB, so the full 32-bit registers
/// give the same offset as their 16-bit halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    pub displacement: u32,
    pub base: u8,
    pub index: u8,
    pub scale_shift: u8,
    /// The index is a byte register (XLAT's AL), not a full register.
    pub byte_index: bool,
    pub segment: SegReg,
}

impl MemoryOperand {
    pub const NONE: u8 = 0xFF;

    fn of(i: &Instruction) -> MemoryOperand {
        let number = |r: Register| {
            if r == Register::None {
                MemoryOperand::NONE
            } else {
                r.number() as u8 & 7
            }
        };
        let index = i.memory_index();
        MemoryOperand {
            displacement: i.memory_displacement32(),
            base: number(i.memory_base()),
            index: number(index),
            scale_shift: i.memory_index_scale().trailing_zeros() as u8,
            byte_index: index.is_gpr8(),
            segment: crate::operand::seg_of(i.memory_segment()),
        }
    }
}

fn immediate_of(i: &Instruction, n: u32) -> Option<u32> {
    use iced_x86::OpKind::*;
    Some(match i.op_kind(n) {
        Immediate8 => i.immediate8() as u32,
        Immediate16 => i.immediate16() as u32,
        Immediate32 => i.immediate32(),
        Immediate8to16 => i.immediate8to16() as u16 as u32,
        Immediate8to32 => i.immediate8to32() as u32,
        Immediate8_2nd => i.immediate8_2nd() as u32,
        _ => return None,
    })
}

/// The most instructions in a decoded block.
pub const MAX_BLOCK: usize = 64;
const FRONT: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    phys: u32,
    eip: u32,
    code32: bool,
}

/// A decoded block: straight-line instructions from one page (the last may
/// straddle onto the next), with what a faster tier keeps about it.
pub struct Block {
    pub insns: Vec<Decoded>,
    /// A faster tier's count of this block's runs (the recompiler's
    /// hotness count); the interpreter itself does not count.
    pub runs: u32,
    /// A faster tier's translation of this block, if it made one: dropped
    /// with the block, so it can never outlive the code it was made from.
    pub translation: Option<Translation>,
    /// The same tier's translation of the first instruction alone (what a
    /// single step runs).
    pub single: Option<Translation>,
    /// EIP just past the last instruction's last byte (for the CS limit check).
    end_eip: u32,
    /// The physical page the block was decoded from.
    pub phys_page: u32,
    /// When the last instruction continues onto the next page: that page's
    /// (linear, physical) page numbers, checked at every lookup because the
    /// second page's mapping may change independently of the first.
    second: Option<(u32, u32)>,
    /// Where control went after this block, and the block found there
    /// (block chaining): the fall-through and the taken branch, most
    /// recent first.
    links: [Link; 2],
}

/// What a faster tier (the recompiler) made of a block: the host code's
/// entry, as an address, and the CPU mode it was made for (the tier checks
/// that the mode still holds before entering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub entry: usize,
    pub mode: u32,
    /// The most instructions it may retire before it checks the budget
    /// itself: it is entered only with at least this much budget.
    pub reach: u32,
}

/// How a block run ended, whichever tier ran it.
#[derive(Debug, Default)]
pub struct BlockEnd {
    /// The instruction at EIP raised this fault and committed nothing.
    pub fault: Option<Fault>,
    /// The run must return this exit.
    pub exit: Option<Exit>,
    /// The last instruction did not retire (a paused REP, a redirected
    /// software interrupt).
    pub not_retired: bool,
    /// The last instruction delivered an event itself (a software
    /// interrupt, a task switch): no single-step trap follows it.
    pub event_delivered: bool,
}

/// A faster tier under the interpreter's loop: offered every block the
/// loop is about to run unchecked (no deadline or breakpoint inside it, no
/// single-step work), it may run the block itself and say how it ended,
/// or return `None` to let the interpreter run it. Whatever it does must
/// end exactly as the interpreter would: same state, same instruction
/// count, same fault at the same instruction.
pub trait Tier {
    /// `budget`: the most instructions the run may retire (at least the
    /// block's length); the tier may go on past the block into the next
    /// ones while nothing the loop would look at between blocks is due
    /// (pending work, the budget). `blocks_generation` changes whenever
    /// blocks are dropped (their ids and translations die): a tier that
    /// remembers which block followed which must forget it then.
    fn run_block(
        &mut self,
        block: &mut Block,
        m: &mut Machine,
        code_seq: u64,
        budget: u64,
        blocks_generation: u64,
    ) -> Option<BlockEnd>;
    /// Run only the first instruction of `block` (a single step, or an
    /// instruction under TF or debug registers), or `None` to let the
    /// interpreter run it. The caller applies the rules after the
    /// instruction (core's `finish_instruction`).
    fn step_block(
        &mut self,
        _block: &mut Block,
        _m: &mut Machine,
        _code_seq: u64,
    ) -> Option<BlockEnd> {
        None
    }
    /// Polled at every serviced boundary: the tier wants every
    /// translation dropped (its code cache is full).
    fn wants_flush(&self) -> bool {
        false
    }
    /// Every translation has been dropped from the blocks.
    fn flushed(&mut self) {}
}

/// No tier: the interpreter runs everything.
pub struct NoTier;

impl Tier for NoTier {
    #[inline(always)]
    fn run_block(
        &mut self,
        _: &mut Block,
        _: &mut Machine,
        _: u64,
        _: u64,
        _: u64,
    ) -> Option<BlockEnd> {
        None
    }
}

/// A remembered successor: after the block, EIP `eip` led to block
/// `target`, when the chain generation (`InterpCore::chain_generation`)
/// was `generation`. While the generation is unchanged, nothing a fetch
/// depends on has changed (CS, CPL and the mode change only across a
/// serviced boundary; the TLB and the cache count their own changes), so
/// the fetch would find `target` again.
#[derive(Clone, Copy)]
struct Link {
    eip: u32,
    target: u32,
    generation: u64,
}

/// A link no generation matches.
const NO_LINK: Link = Link {
    eip: 0,
    target: 0,
    generation: u64::MAX,
};

/// Counters the interpreter reports.
#[derive(Default, Clone, Debug)]
pub struct Counters {
    /// Instructions this engine retired.
    pub instructions: u64,
    pub blocks_decoded: u64,
    pub block_lookups: u64,
    /// Blocks reached through a link from the previous block, without a
    /// lookup.
    pub chained_blocks: u64,
    pub uncached_insns: u64,
    pub invalidated_blocks: u64,
    pub exceptions: u64,
    pub interrupts: u64,
}

/// The decoded-block cache.
#[derive(Default)]
pub struct BlockCache {
    blocks: Vec<Option<Block>>,
    free: Vec<u32>,
    map: HashMap<Key, u32>,
    by_page: HashMap<u32, Vec<Key>>,
    front: Vec<(Key, u32)>,
    /// Bumped whenever blocks are dropped (ids are reused), so that links
    /// to them die.
    generation: u64,
    /// Translations dropped with their blocks (code writes, clears).
    pub dropped_translations: u64,
}

impl Block {
    /// The (linear, physical) page numbers of the page the last
    /// instruction continues onto, if it straddles: the block dies when
    /// either of its pages is written, and is looked up only while the
    /// second linear page still maps to that physical page.
    pub fn second_page(&self) -> Option<(u32, u32)> {
        self.second
    }
}

impl BlockCache {
    fn front_index(k: &Key) -> usize {
        ((k.phys ^ (k.eip << 3) ^ (k.eip >> 9)) as usize) % FRONT
    }

    fn lookup(&mut self, k: Key) -> Option<u32> {
        if self.front.is_empty() {
            self.front = vec![
                (
                    Key {
                        phys: u32::MAX,
                        eip: 0,
                        code32: false
                    },
                    0
                );
                FRONT
            ];
        }
        let fi = Self::front_index(&k);
        if self.front[fi].0 == k {
            return Some(self.front[fi].1);
        }
        let id = *self.map.get(&k)?;
        self.front[fi] = (k, id);
        Some(id)
    }

    fn insert(&mut self, k: Key, b: Block) -> u32 {
        let page = b.phys_page;
        if let Some((_, second)) = b.second {
            self.by_page.entry(second).or_default().push(k);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.blocks[id as usize] = Some(b);
                id
            }
            None => {
                self.blocks.push(Some(b));
                self.blocks.len() as u32 - 1
            }
        };
        self.map.insert(k, id);
        self.by_page.entry(page).or_default().push(k);
        id
    }

    /// Drop every block decoded from `page`. Returns how many.
    pub fn invalidate_page(&mut self, page: u32) -> u64 {
        let Some(keys) = self.by_page.remove(&page) else {
            return 0;
        };
        self.generation += 1;
        let mut n = 0;
        for k in keys {
            if let Some(id) = self.map.remove(&k) {
                if let Some(Some(b)) = self.blocks.get(id as usize) {
                    self.dropped_translations += b.translation.is_some() as u64;
                }
                self.blocks[id as usize] = None;
                self.free.push(id);
                n += 1;
            }
        }
        self.front.clear();
        n
    }

    pub fn clear(&mut self) {
        let generation = self.generation + 1;
        let dropped = self.dropped_translations + self.translations() as u64;
        *self = BlockCache::default();
        self.generation = generation;
        self.dropped_translations = dropped;
    }

    /// Live blocks that carry a translation.
    pub fn translations(&self) -> usize {
        self.blocks
            .iter()
            .flatten()
            .filter(|b| b.translation.is_some())
            .count()
    }

    /// Drop every block's translation (the blocks stay).
    pub fn drop_translations(&mut self) {
        for b in self.blocks.iter_mut().flatten() {
            b.translation = None;
            b.single = None;
            b.runs = 0;
        }
    }

    /// The block a link of `from` names for `eip`, if still valid.
    #[inline(always)]
    fn follow(&self, from: u32, eip: u32, generation: u64) -> Option<u32> {
        let b = self.blocks.get(from as usize)?.as_ref()?;
        b.links
            .iter()
            .find(|l| l.eip == eip && l.generation == generation)
            .map(|l| l.target)
    }

    /// Remember that `eip` after block `from` led to `target`.
    fn link(&mut self, from: u32, eip: u32, target: u32, generation: u64) {
        if let Some(Some(b)) = self.blocks.get_mut(from as usize) {
            b.links[1] = b.links[0];
            b.links[0] = Link {
                eip,
                target,
                generation,
            };
        }
    }

    /// Live blocks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The interpreter's state: caches and counters only.
#[derive(Default)]
pub struct InterpCore {
    pub cache: BlockCache,
    pub counters: Counters,
    /// How far this engine has read the machine's code-write log.
    code_cursor: u64,
    /// The last single-stepped instruction was a REP that paused.
    rep_paused: bool,
    /// Boundaries serviced by `run`: part of the chain generation, since
    /// CS, CPL and the mode change only across a serviced boundary.
    boundaries: u64,
    /// End blocks at conditional branches too (basic blocks), for a tier
    /// that counts runs per block to find the hot paths; the interpreter
    /// alone runs faster with blocks that go on past them.
    pub split_at_branches: bool,
}

enum Fetched {
    Block(u32),
    /// The instruction cannot be cached (page-crossing, MMIO, CS-limit
    /// edge): run it alone.
    Single(Box<Decoded>),
}

/// Run the instructions of a block until one ends it: a fault, a paused
/// REP, a taken branch, work for the boundary, or (when `CHECKED`) the
/// deadline instruction count `stop_at` or a debugger breakpoint. Returns
/// the fault if one was raised.
#[inline(always)]
fn run_block<const CHECKED: bool>(
    c: &mut Ctx,
    insns: &[Decoded],
    pending: &PendingWork,
    stop_at: u64,
) -> Option<Fault> {
    for d in insns {
        c.next_eip = d.next_eip;
        if let Err(f) = (d.exec)(c, d) {
            return Some(f);
        }
        c.m.cpu.eip = c.next_eip;
        if c.not_retired {
            return None;
        }
        c.m.clock.icount += d.retires as u64;
        if pending.get() != 0
            || c.end_block
            || (CHECKED && (c.m.clock.icount >= stop_at || at_breakpoint(c.m)))
        {
            return None;
        }
    }
    None
}

/// A raw-mode jump patch at linear `lin` (core::substrate): an
/// instruction fetch that starts there decodes the patch's `JMP rel32`,
/// which retires nothing itself.
fn patched_fetch(m: &Machine, lin: u32, eip: u32, code32: bool) -> Option<Decoded> {
    let patch = m.substrate.as_ref().filter(|_| code32)?.fetch.get(&lin)?;
    let mut pd = Decoder::with_ip(32, patch, eip as u64, DecoderOptions::NONE);
    let (mut d, _) = Decoded::new(pd.decode(), code32);
    d.retires = 0;
    Some(d)
}

/// Whether the next instruction is at one of the debugger's breakpoints.
#[inline]
fn at_breakpoint(m: &Machine) -> bool {
    (!m.breakpoints.is_empty() && m.breakpoints.binary_search(&m.cpu.linear_eip()).is_ok())
        || m.substrate
            .as_ref()
            .is_some_and(|h| h.stops_before(m.cpu.linear_eip(), m.cpu.cpl()))
}

impl InterpCore {
    /// Run until the budget is spent or something stops the run.
    ///
    /// The loop services the instruction boundary (core's
    /// `Machine::service_boundary`) only when the pending-work word has a
    /// bit raised or the clock reaches the next device deadline; otherwise
    /// it runs cached blocks, testing that word after every instruction.
    pub fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        self.run_with(m, budget, &mut NoTier)
    }

    /// `run`, offering each block to a faster tier first (see [`Tier`]).
    #[inline(always)]
    pub fn run_with<T: Tier>(
        &mut self,
        m: &mut Machine,
        budget: Budget,
        tier: &mut T,
    ) -> Result<Exit, EngineError> {
        m.sync_debug_registers();
        self.process_code_writes(m);
        let code_seq_at_start = m.mem().code_write_seq();
        let target = m.clock.icount.saturating_add(budget.instructions);
        // Entering is a boundary like any other: look at everything.
        m.pending().raise(work::HOST);
        let mut stop_at = target;
        // Events delivered and paused REP slices spend budget without
        // retiring instructions, so a guest that faults forever (or a REP
        // with a huge count) still returns to the caller.
        let mut stalls_left = budget.instructions;
        // The block just run, when control left it plainly (no fault, no
        // exit, no boundary since): its links may name the next block.
        let mut chain_from: Option<u32> = None;
        let pending = m.pending_work();
        while m.clock.icount < target && stalls_left > 0 {
            if m.pending().get() != 0 || m.clock.icount >= stop_at {
                chain_from = None;
                self.boundaries += 1;
                if m.pending().take() & work::CODE_WRITE != 0 {
                    self.process_code_writes(m);
                    if m.substrate.is_some() && m.mem().code_write_seq() != code_seq_at_start {
                        // A raw-mode substrate: the monitor's scans and
                        // patches of the written code must be looked at
                        // before it runs (core::substrate).
                        return Ok(Exit::BudgetSpent);
                    }
                }
                if tier.wants_flush() {
                    self.cache.drop_translations();
                    tier.flushed();
                }
                match m.service_boundary() {
                    Boundary::Execute => {}
                    Boundary::Delivered(kind) => {
                        self.count_delivery(kind);
                        stalls_left -= 1;
                        continue;
                    }
                    Boundary::Exit(exit) => return Ok(exit),
                }
                stop_at = m.boundary_icount(target);
                if at_breakpoint(m) {
                    return Ok(Exit::Breakpoint);
                }
                if m.pending().get() & work::STEP != 0 {
                    // TF, RF, an interrupt shadow or debug registers: one
                    // instruction, then the boundary again.
                    let before = m.clock.icount;
                    if let Some(exit) = self.step_one(m, tier)? {
                        return Ok(exit);
                    }
                    if m.clock.icount == before {
                        stalls_left -= 1;
                    }
                    continue;
                }
            } else if at_breakpoint(m) {
                return Ok(Exit::Breakpoint);
            }
            let from = chain_from.take();
            let linked =
                from.and_then(|b| self.cache.follow(b, m.cpu.eip, self.chain_generation(m)));
            let fetched = match linked {
                Some(id) => {
                    self.counters.chained_blocks += 1;
                    Ok(Fetched::Block(id))
                }
                None => self.fetch(m),
            };
            if let (Some(b), Ok(Fetched::Block(id)), None) = (from, &fetched, linked) {
                let generation = self.chain_generation(m);
                self.cache.link(b, m.cpu.eip, *id, generation);
            }
            let fetched = match fetched {
                Ok(f) => f,
                Err(f) => {
                    stalls_left -= 1;
                    if let Some(exit) = self.raise(m, f) {
                        return Ok(exit);
                    }
                    continue;
                }
            };
            let id = match fetched {
                Fetched::Block(id) => id,
                Fetched::Single(d) => {
                    let before = m.clock.icount;
                    if let Some(exit) = self.execute_single(m, &d)? {
                        return Ok(exit);
                    }
                    if m.clock.icount == before {
                        stalls_left -= 1;
                    }
                    continue;
                }
            };
            let blocks_generation = self.cache.generation;
            let block = self.cache.blocks[id as usize]
                .as_mut()
                .expect("the block id was just looked up and nothing freed it");
            // With debugger breakpoints set, the block ends before an
            // instruction at one of them (the loop's check then stops).
            // The per-instruction test of the deadline and of debugger
            // breakpoints is needed only when the block could reach them;
            // only such unchecked runs are offered to the tier.
            let unchecked = (m.breakpoints.is_empty() || m.substrate.is_some())
                && m.clock.icount.saturating_add(block.insns.len() as u64) < stop_at;
            let native = if unchecked {
                let budget = stop_at - m.clock.icount - 1;
                tier.run_block(block, m, self.code_cursor, budget, blocks_generation)
            } else {
                None
            };
            let end = match native {
                Some(end) => end,
                None => {
                    let mut c = Ctx {
                        m,
                        next_eip: 0,
                        end_block: false,
                        exit: None,
                        event_delivered: false,
                        not_retired: false,
                        code_seq: self.code_cursor,
                    };
                    let fault = if unchecked {
                        run_block::<false>(&mut c, &block.insns, &pending, stop_at)
                    } else {
                        run_block::<true>(&mut c, &block.insns, &pending, stop_at)
                    };
                    BlockEnd {
                        fault,
                        exit: c.exit.take(),
                        not_retired: c.not_retired,
                        event_delivered: c.event_delivered,
                    }
                }
            };
            if end.not_retired {
                stalls_left -= 1;
            }
            let BlockEnd {
                fault,
                exit,
                not_retired,
                ..
            } = end;
            if fault.is_none() && exit.is_none() && !not_retired {
                chain_from = Some(id);
            }
            if let Some(f) = fault {
                stalls_left -= 1;
                if let Some(exit) = self.raise(m, f) {
                    return Ok(exit);
                }
            }
            if let Some(exit) = exit {
                self.process_code_writes(m);
                return Ok(exit);
            }
        }
        Ok(Exit::BudgetSpent)
    }

    /// Execute exactly one instruction (or deliver one pending event).
    pub fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        self.step_with(m, &mut NoTier)
    }

    /// `step`, offering the instruction to a faster tier first (see
    /// [`Tier::step_block`]).
    pub fn step_with<T: Tier>(
        &mut self,
        m: &mut Machine,
        tier: &mut T,
    ) -> Result<Exit, EngineError> {
        m.sync_debug_registers();
        self.process_code_writes(m);
        if tier.wants_flush() {
            self.cache.drop_translations();
            tier.flushed();
        }
        m.pending().take();
        // A step that delivered an interrupt, an NMI or a code-breakpoint
        // #DB ends at the handler's first instruction, like a step over a
        // faulting instruction: every engine's step stops there (the
        // debugger's vector catches and the comparator rely on it).
        match m.service_boundary() {
            Boundary::Execute => {}
            Boundary::Delivered(kind) => {
                self.count_delivery(kind);
                return Ok(Exit::BudgetSpent);
            }
            Boundary::Exit(exit) => return Ok(exit),
        }
        // A REP string instruction pauses every few thousand iterations
        // without retiring; a step runs it to the end, so that a step
        // retires exactly one instruction in every engine.
        loop {
            self.rep_paused = false;
            let exit = self.step_one(m, tier)?;
            if let Some(exit) = exit {
                return Ok(exit);
            }
            if !self.rep_paused {
                return Ok(Exit::BudgetSpent);
            }
        }
    }

    /// The chain generation: changes whenever anything a block lookup
    /// depends on may have changed (see [`Link`]).
    #[inline(always)]
    fn chain_generation(&self, m: &Machine) -> u64 {
        m.tlb()
            .generation()
            .wrapping_add(self.cache.generation)
            .wrapping_add(self.boundaries)
    }

    fn count_delivery(&mut self, kind: DeliveredKind) {
        match kind {
            DeliveredKind::Exception => self.counters.exceptions += 1,
            DeliveredKind::Interrupt => self.counters.interrupts += 1,
        }
    }

    fn step_one<T: Tier>(
        &mut self,
        m: &mut Machine,
        tier: &mut T,
    ) -> Result<Option<Exit>, EngineError> {
        let d = match self.fetch(m) {
            Ok(Fetched::Block(id)) => {
                let b = self.cache.blocks[id as usize]
                    .as_mut()
                    .expect("the block id was just looked up and nothing freed it");
                let start = m.start_instruction();
                if let Some(end) = tier.step_block(b, m, self.code_cursor) {
                    return Ok(self.finish_single(m, start, end));
                }
                Box::new(b.insns[0].clone())
            }
            Ok(Fetched::Single(d)) => d,
            Err(f) => return Ok(self.raise(m, f)),
        };
        self.execute_single(m, &d)
    }

    /// Run one decoded instruction on the careful path: core's
    /// `finish_instruction` then applies the rules that follow an
    /// instruction (interrupt shadow, RF, single-step and data-breakpoint
    /// traps).
    fn execute_single(
        &mut self,
        m: &mut Machine,
        d: &Decoded,
    ) -> Result<Option<Exit>, EngineError> {
        let start = m.start_instruction();
        let mut c = Ctx {
            m,
            next_eip: d.next_eip,
            end_block: false,
            exit: None,
            event_delivered: false,
            not_retired: false,
            code_seq: self.code_cursor,
        };
        let result = (d.exec)(&mut c, d);
        let exit = c.exit.take();
        let delivered = c.event_delivered;
        let paused = c.not_retired;
        let next = c.next_eip;
        if let Err(f) = result {
            return Ok(self.raise(m, f));
        }
        m.cpu.eip = next;
        if paused {
            self.rep_paused = true;
            return Ok(exit);
        }
        m.clock.icount += d.retires as u64;
        self.process_code_writes(m);
        match m.finish_instruction(start, delivered, exit) {
            Boundary::Execute => Ok(None),
            Boundary::Delivered(kind) => {
                self.count_delivery(kind);
                Ok(None)
            }
            Boundary::Exit(exit) => Ok(Some(exit)),
        }
    }

    /// The end of an instruction a tier ran alone (`Tier::step_block`):
    /// what `execute_single` does after the handler, with EIP and the
    /// instruction count already moved by the tier.
    fn finish_single(
        &mut self,
        m: &mut Machine,
        start: ringside_core::cpu::boundary::InstructionStart,
        end: BlockEnd,
    ) -> Option<Exit> {
        if let Some(f) = end.fault {
            return self.raise(m, f);
        }
        if end.not_retired {
            self.rep_paused = true;
            return end.exit;
        }
        self.process_code_writes(m);
        match m.finish_instruction(start, end.event_delivered, end.exit) {
            Boundary::Execute => None,
            Boundary::Delivered(kind) => {
                self.count_delivery(kind);
                None
            }
            Boundary::Exit(exit) => Some(exit),
        }
    }

    /// Deliver a fault raised by the instruction at EIP (or hand it to the
    /// caller when the event policy redirects it).
    fn raise(&mut self, m: &mut Machine, f: Fault) -> Option<Exit> {
        match m.raise_fault(f) {
            Boundary::Exit(exit) => Some(exit),
            Boundary::Delivered(_) | Boundary::Execute => {
                self.counters.exceptions += 1;
                None
            }
        }
    }

    /// Drop the blocks of every code page written since this engine last
    /// looked (by any writer: the guest, a device, a loader or the debugger).
    pub fn process_code_writes(&mut self, m: &mut Machine) {
        let seq = m.mem().code_write_seq();
        if seq == self.code_cursor {
            return;
        }
        match m.mem().code_writes_since(self.code_cursor) {
            CodeWrites::All => {
                self.counters.invalidated_blocks += self.cache.len() as u64;
                self.cache.clear();
            }
            CodeWrites::Pages(pages) => {
                for &page in pages {
                    self.counters.invalidated_blocks += self.cache.invalidate_page(page);
                }
            }
        }
        self.code_cursor = seq;
    }

    /// The decoded instructions of the block at CS:EIP (for tools that
    /// show what a block is made of, such as the recompiler's IR dump).
    pub fn decode_block_at(&mut self, m: &mut Machine) -> CpuResult<Vec<Decoded>> {
        match self.fetch(m)? {
            Fetched::Block(id) => Ok(self.cache.blocks[id as usize]
                .as_ref()
                .expect("the block id was just looked up and nothing freed it")
                .insns
                .clone()),
            Fetched::Single(d) => Ok(vec![*d]),
        }
    }

    /// Find or decode the block at CS:EIP.
    fn fetch(&mut self, m: &mut Machine) -> CpuResult<Fetched> {
        let cs = m.cpu.seg[SegReg::Cs as usize];
        let eip = m.cpu.eip;
        if eip > cs.limit {
            return Err(Fault::gp0());
        }
        let lin = cs.base.wrapping_add(eip);
        let user = m.cpu.cpl() == 3;
        let phys = match m.tlb().lookup_phys(lin, user) {
            Some(page) => (page << 12) | (lin & 0xFFF),
            None => m.translate(lin, AccessKind::Execute, user)?,
        } & m.mem().a20_mask();
        let code32 = m.cpu.code32();
        let key = Key { phys, eip, code32 };
        self.counters.block_lookups += 1;
        if let Some(id) = self.cache.lookup(key) {
            let b = self.cache.blocks[id as usize]
                .as_ref()
                .expect("the map only holds live blocks");
            let second_ok = match b.second {
                None => true,
                Some((lin_page, phys_page)) => {
                    let lin2 = lin_page << 12;
                    let p2 = match m.tlb().lookup_phys(lin2, user) {
                        Some(p) => Ok(p << 12),
                        None => m.translate(lin2, AccessKind::Execute, user),
                    };
                    p2.is_ok_and(|p| (p & m.mem().a20_mask()) >> 12 == phys_page)
                }
            };
            if b.end_eip.wrapping_sub(1) <= cs.limit && b.end_eip > eip && second_ok {
                return Ok(Fetched::Block(id));
            }
            if !second_ok {
                // The next page moved: decode afresh under today's mapping.
                self.counters.invalidated_blocks += self.cache.invalidate_page(phys >> 12);
            } else {
                return self.decode_single(m);
            }
        }
        let page = phys >> 12;
        let Some((host, _)) = m.mem().page_host_ptr(phys & !0xFFF) else {
            return self.decode_single(m);
        };
        // Decode from a copy of the rest of the page: the decode loop may
        // walk the page tables (for an instruction that straddles into the
        // next page), which can set accessed bits in guest RAM, so no
        // borrow of guest memory may live across it.
        let tail = (0x1000 - (phys & 0xFFF)) as usize;
        let mut copy = [0u8; 0x1000];
        // SAFETY: page_host_ptr returned the start of a 4 KiB RAM/ROM page
        // and `phys & 0xFFF` + `tail` is 4096; the slice is dropped at the
        // end of this statement, before anything can write guest memory.
        copy[..tail].copy_from_slice(unsafe {
            std::slice::from_raw_parts(host.add((phys & 0xFFF) as usize), tail)
        });
        let bytes = &copy[..tail];
        let mut decoder = Decoder::with_ip(
            if code32 { 32 } else { 16 },
            bytes,
            eip as u64,
            DecoderOptions::NONE,
        );
        let mut insns = Vec::new();
        let mut ins = Instruction::default();
        let mut end_eip = eip;
        let mut second = None;
        while insns.len() < MAX_BLOCK && decoder.can_decode() {
            let at = decoder.position();
            if let Some(d) = patched_fetch(
                m,
                lin.wrapping_add(at as u32),
                eip.wrapping_add(at as u32),
                code32,
            ) {
                end_eip = d.i.ip32().wrapping_add(d.i.len() as u32);
                insns.push(d);
                break;
            }
            if !insns.is_empty()
                && m.substrate.as_ref().is_some_and(|h| {
                    let ins_lin = lin.wrapping_add(at as u32);
                    h.stops_before(ins_lin, m.cpu.cpl())
                        || m.breakpoints.binary_search(&ins_lin).is_ok()
                })
            {
                // A raw-mode substrate stops before unscanned supervisor
                // code and before its breakpoints: the block ends here, so
                // the check at each block's start is enough
                // (core::substrate).
                break;
            }
            decoder.decode_out(&mut ins);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                // The instruction continues on the next page: cache it too
                // when that page is RAM or ROM and mapped now; otherwise the
                // uncached path fetches it (and raises its fault precisely).
                let ins_eip = eip.wrapping_add(at as u32);
                if let Some((d, page2)) =
                    self.decode_straddling(m, &bytes[at..], lin, ins_eip, code32, user)
                {
                    let ins_end = d.i.ip32().wrapping_add(d.i.len() as u32);
                    if ins_end.wrapping_sub(1) <= cs.limit && (code32 || ins_end <= 0x10000) {
                        end_eip = ins_end;
                        insns.push(d);
                        second = Some(page2);
                    }
                }
                break;
            }
            if ins.is_invalid() && exceeds_15_bytes(&bytes[at..], code32) {
                // Let the uncached path raise #GP for the over-long instruction.
                break;
            }
            let ins_end = ins.ip32().wrapping_add(ins.len() as u32);
            // Stay inside the CS limit and, in 16-bit code, before IP wraps.
            if ins_end.wrapping_sub(1) > cs.limit
                || (!code32 && ins_end > 0x10000)
                || ins_end < ins.ip32()
            {
                break;
            }
            let (mut d, ends) = Decoded::new(ins, code32);
            if m.substrate
                .as_ref()
                .is_some_and(|h| h.uncounted(lin.wrapping_add(at as u32)))
            {
                d.retires = 0;
            }
            end_eip = ins_end;
            let branch = self.split_at_branches
                && d.i.flow_control() == iced_x86::FlowControl::ConditionalBranch;
            insns.push(d);
            if ends || branch {
                break;
            }
        }
        if insns.is_empty() {
            return self.decode_single(m);
        }
        m.mark_code_page(page);
        if let Some((_, page2)) = second {
            m.mark_code_page(page2);
        }
        self.counters.blocks_decoded += 1;
        let id = self.cache.insert(
            key,
            Block {
                insns,
                end_eip,
                phys_page: page,
                runs: 0,
                translation: None,
                single: None,
                second,
                links: [NO_LINK; 2],
            },
        );
        Ok(Fetched::Block(id))
    }

    /// Decode an instruction whose bytes run from the end of the block's
    /// page (`head`) onto the next linear page. Returns the instruction and
    /// the next page's (linear, physical) page numbers.
    fn decode_straddling(
        &mut self,
        m: &mut Machine,
        head: &[u8],
        block_lin: u32,
        ins_eip: u32,
        code32: bool,
        user: bool,
    ) -> Option<(Decoded, (u32, u32))> {
        let lin2 = (block_lin & !0xFFF).wrapping_add(0x1000);
        let phys2 = m.translate(lin2, AccessKind::Execute, user).ok()? & m.mem().a20_mask();
        let (host2, _) = m.mem().page_host_ptr(phys2 & !0xFFF)?;
        let mut buf = head.to_vec();
        // SAFETY: host2 is the start of a 4 KiB RAM/ROM page; 15 bytes fit.
        buf.extend_from_slice(unsafe { std::slice::from_raw_parts(host2, 15) });
        let mut decoder = Decoder::with_ip(
            if code32 { 32 } else { 16 },
            &buf,
            ins_eip as u64,
            DecoderOptions::NONE,
        );
        let ins = decoder.decode();
        if ins.is_invalid() || ins.len() <= head.len() {
            return None;
        }
        let (d, _) = Decoded::new(ins, code32);
        Some((d, (lin2 >> 12, phys2 >> 12)))
    }

    /// Fetch and decode one instruction byte by byte through the MMU: used
    /// where the instruction crosses a page or the CS limit, or lives in MMIO.
    fn decode_single(&mut self, m: &mut Machine) -> CpuResult<Fetched> {
        self.counters.uncached_insns += 1;
        let cs = m.cpu.seg[SegReg::Cs as usize];
        let eip = m.cpu.eip;
        let code32 = m.cpu.code32();
        let start_lin = cs.base.wrapping_add(eip);
        let uncounted = m.substrate.as_ref().is_some_and(|h| h.uncounted(start_lin));
        if let Some(d) = patched_fetch(m, start_lin, eip, code32) {
            return Ok(Fetched::Single(Box::new(d)));
        }
        let user = m.cpu.cpl() == 3;
        let mut bytes = Vec::with_capacity(15);
        let mut ins = Instruction::default();
        loop {
            let off = eip.wrapping_add(bytes.len() as u32);
            let off = if code32 { off } else { off & 0xFFFF };
            if bytes.len() == 15 {
                return Err(Fault::gp0());
            }
            if off > cs.limit || (!code32 && eip as usize + bytes.len() > 0xFFFF) {
                return Err(Fault::gp0());
            }
            let lin = cs.base.wrapping_add(off);
            let pa = m.translate(lin, AccessKind::Execute, user)?;
            bytes.push(m.phys_read(pa, 1) as u8);
            let mut decoder = Decoder::with_ip(
                if code32 { 32 } else { 16 },
                &bytes,
                eip as u64,
                DecoderOptions::NONE,
            );
            decoder.decode_out(&mut ins);
            match decoder.last_error() {
                DecoderError::NoMoreBytes => {}
                _ if ins.is_invalid()
                    && (exceeds_15_bytes(&bytes, code32)
                        || (bytes.len() == 15 && bytes[..14].iter().all(|&b| is_prefix(b)))) =>
                {
                    return Err(Fault::gp0());
                }
                _ => break,
            }
        }
        let (mut d, _) = Decoded::new(ins, code32);
        if uncounted {
            d.retires = 0;
        }
        Ok(Fetched::Single(Box::new(d)))
    }
}

fn is_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
    )
}

/// Whether an encoding iced rejects is rejected only for being longer than
/// 15 bytes, which is #GP(0) rather than #UD (SDM Vol. 2A 2.3.11): strip
/// the redundant prefixes, decode what remains, and count.
fn exceeds_15_bytes(bytes: &[u8], code32: bool) -> bool {
    let is_prefix = |b: u8| {
        matches!(
            b,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
        )
    };
    let n = bytes.iter().take_while(|&&b| is_prefix(b)).count();
    if n == 0 {
        return false;
    }
    let mut kept: Vec<u8> = Vec::new();
    for p in [0x66u8, 0x67] {
        if bytes[..n].contains(&p) {
            kept.push(p);
        }
    }
    let stripped = n - kept.len();
    kept.extend_from_slice(&bytes[n..bytes.len().min(n + 15)]);
    let mut d = Decoder::new(if code32 { 32 } else { 16 }, &kept, DecoderOptions::NONE);
    let i = d.decode();
    !i.is_invalid() && stripped + i.len() > 15
}
