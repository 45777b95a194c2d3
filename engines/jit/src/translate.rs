//! Guest block -> Cranelift IR.
//!
//! A region of the interpreter's basic blocks (the recompiler's
//! interpreter ends its blocks at conditional branches; `tier::form_region`
//! picks the warm ones reachable from the entry) becomes one host
//! function in Cranelift's `tail` convention. Each
//! instruction is either *translated*, with an inline fast path and, where
//! it touches memory or can fault, an out-of-line slow path that hands the
//! whole instruction to the interpreter's handler ([`frame::interpret_one`]);
//! or *delegated*: the instruction is always handed to the interpreter.
//! Either way the instruction ends exactly as the interpreter ends it,
//! which is what lets the two engines run in lockstep.
//!
//! **Registers** are loaded into Cranelift variables at entry (those the
//! region uses) and written back (only those written on the path) at
//! every exit and before every helper call; after a delegated
//! instruction's helper returns they are loaded again (a slow path's
//! helper call is followed by a return, not by more of the region).
//!
//! **Edges** inside a region: forward edges are plain jumps; back edges
//! check the pending-work word and the budget for the target's reach
//! ([`RegionBlock::reach`]). Exits to a fixed EIP store the state, hand
//! the flag record to the next translation through the frame, and go on
//! to it with a tail call through their link slot when it is filled
//! (`Translator::chain_block`); a RET goes on through the
//! indirect-branch table the same way.
//!
//! **Flags** are lazy (see [`Pending`]): a register-only arithmetic or
//! logic instruction does not compute EFLAGS but records its operands and
//! result; a conditional branch that follows tests the record directly
//! (`cmp eax, ebx; jb` becomes one host compare), and the record is turned
//! into real flag bits only where something needs them: a cold exit or a
//! helper call, an instruction that reads flags the record cannot answer,
//! or a partial overwrite (INC keeps CF). A plain exit passes the record
//! on to the next translation instead (`frame::Frame::rec`).
//!
//! **Memory** goes through the software TLB by the ABI rule
//! (`ringside_core::abi`): a segment whose attributes allow the fast path,
//! an offset inside its limit, a tag hit, an access that stays in its
//! page, and (at CPL 3) an aligned address; anything else takes the slow
//! path. Stores to code pages always miss (the TLB never holds a write
//! entry for them), so self-modifying code is caught by the interpreter's
//! handler in the slow path, which logs the write and raises the pending
//! word; the helper then ends the block.
//!
//! **Precise exceptions**: a fast path checks everything before it changes
//! anything, so a fault is always raised by the interpreter's handler on
//! the slow path, from the state before the instruction.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Block, InstBuilder, MemFlagsData, SigRef, Signature, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};
use iced_x86::{ConditionCode, Mnemonic, OpKind};
use ringside_core::abi::{cpu_state, tlb};
use ringside_core::cpu::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use ringside_core::cpu::{attr, SegReg};
use ringside_interp::exec::{Decoded, MemoryOperand, Operand};

use crate::frame::{self, FRAME_CPU, FRAME_ICOUNT, FRAME_TLB};

const ESP: usize = 4;

/// The CPU mode a translation is made for, checked at every entry.
///
/// Besides the privilege class and stack size, a translation is
/// specialised on which of ES, CS, SS and DS are *flat* (base 0, limit
/// 4 GiB, and for data segments writable expand-up data; for CS 32-bit
/// code): an access through a flat segment needs no segment check and its
/// offset is its linear address, and a branch target in flat CS is always
/// inside the limit. A segment can only change by an instruction that
/// loads it (or a far transfer, an interrupt, a task switch), and every
/// one of those ends the interpreter's block and so leaves a translation
/// (`Ctx::end_block`); the mode is checked again at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// CPL 3: user TLB tags, alignment checks.
    pub user: bool,
    /// SS.B: the stack is addressed with ESP.
    pub stack32: bool,
    /// Bit `SegReg as u8` set for each flat segment among ES, CS, SS, DS.
    pub flat: u8,
}

/// The attribute bits core's fast-path segment checks look at.
const SEG_CHECKED: u32 = attr::UNUSABLE | attr::S | attr::CODE | attr::DC | attr::RW;

impl Mode {
    pub fn of(m: &ringside_core::Machine) -> Mode {
        let cpu = &m.cpu;
        let mut flat = 0;
        for s in [SegReg::Es, SegReg::Cs, SegReg::Ss, SegReg::Ds] {
            let g = cpu.seg(s);
            let usable = if s == SegReg::Cs {
                cpu.code32()
            } else {
                g.attr & SEG_CHECKED == attr::S | attr::RW
            };
            if g.base == 0 && g.limit == u32::MAX && usable {
                flat |= 1 << s as u8;
            }
        }
        Mode {
            user: cpu.cpl() == 3,
            stack32: cpu.stack32(),
            flat,
        }
    }

    pub fn bits(self) -> u32 {
        self.user as u32 | (self.stack32 as u32) << 1 | (self.flat as u32) << 2
    }

    /// Whether segment `s` is flat (see the type's documentation).
    pub fn is_flat(self, s: SegReg) -> bool {
        self.flat & (1 << s as u8) != 0
    }
}

/// What a translation is made of, for the counters.
#[derive(Default, Clone, Debug)]
pub struct Shape {
    pub translated: u32,
    pub delegated: u32,
    /// The entry's reach (see `RegionBlock::reach`).
    pub reach: u32,
    /// The region's other blocks, by EIP, with their reaches: the
    /// function may be entered at any of them (it starts at the block
    /// whose EIP is CpuState's), so a block of the region that gets hot
    /// on its own is attached to this code instead of being compiled
    /// again (`Recompiler::entries`).
    pub entries: Vec<(u32, u32)>,
}

/// The kind of the last flag-setting operation not yet turned into bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlagOp {
    /// `r = a + b`.
    Add,
    /// `r = a - b`.
    Sub,
    /// `r = a OP b` for AND, OR, XOR, TEST: CF = OF = AF = 0.
    Logic,
    /// SF, ZF, PF of `r`, AF = 0, CF = bit 0 of `a`, OF = bit 0 of `b`:
    /// shifts and IMUL, whose CF and OF are computed with the result.
    Co,
}

/// A lazy flag record: the flags in `mask` are those of `op` on `a`, `b`
/// giving `r` at `bits` width (values masked to the width); the other
/// flag bits are in the flags variable.
#[derive(Clone, Copy, Debug)]
struct Pending {
    op: FlagOp,
    bits: u32,
    a: Value,
    b: Value,
    r: Value,
    mask: u32,
}

/// The flags condition `cc` reads.
fn flags_read(cc: ConditionCode) -> u32 {
    use ConditionCode as C;
    match cc {
        C::o | C::no => OF,
        C::b | C::ae => CF,
        C::e | C::ne => ZF,
        C::be | C::a => CF | ZF,
        C::s | C::ns => SF,
        C::p | C::np => PF,
        C::l | C::ge => SF | OF,
        _ => SF | OF | ZF,
    }
}

/// What the translator knows of the dynamic record's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hint {
    /// Any kind (paths from several records meet).
    Unknown,
    /// No record: the flags variable is exact.
    Exact,
    /// This operation, width and mask, or no record (after a slow path,
    /// whose handler left exact bits).
    Record(FlagOp, u32, u32),
}

/// One block of a region.
#[derive(Clone, Copy)]
pub struct RegionBlock {
    pub eip: u32,
    pub block: Block,
    pub len: usize,
    pub end_eip: u32,
    /// Some jump or fall-through of the region enters it.
    pub entered_inside: bool,
    /// The most instructions a path from this block's start may retire
    /// before it leaves the region or takes a back edge (a jump to a
    /// block not after it in the region's order): only back edges check
    /// the budget (and pending work), each for its target's reach, so
    /// that the straight-line paths between them run unchecked and still
    /// never retire past the budget.
    pub reach: usize,
}

/// What the translator knows about the state on the current path.
#[derive(Clone, Copy)]
struct State {
    dirty: u8,
    flags_dirty: bool,
    pending: Option<Pending>,
    dynamic: bool,
    hint: Hint,
}

/// The kind word of a dynamic flag record: the operation and the width.
pub fn lazy_kind(op: u32, bits: u32) -> u32 {
    op | bits << 8
}
pub const LAZY_NONE: u32 = 0;
pub const LAZY_ADD: u32 = 1;
pub const LAZY_SUB: u32 = 2;
pub const LAZY_LOGIC: u32 = 3;
pub const LAZY_CO: u32 = 4;
/// In a kind word: CF is not the record's but the flags' (INC, DEC).
pub const LAZY_KEEP_CF: u32 = 1 << 16;

/// A static record as a dynamic one (kind, operands, result), when the
/// helper can compute its flags.
fn lazy_op(p: &Pending) -> Option<(u32, Value, Value, Value)> {
    let op = lazy_op_code(p.op);
    let kind = if p.mask == STATUS {
        lazy_kind(op, p.bits)
    } else if p.mask == STATUS & !CF {
        lazy_kind(op, p.bits) | LAZY_KEEP_CF
    } else {
        return None;
    };
    Some((kind, p.a, p.b, p.r))
}

/// The dynamic record's operation code for `op`.
fn lazy_op_code(op: FlagOp) -> u32 {
    match op {
        FlagOp::Add => LAZY_ADD,
        FlagOp::Sub => LAZY_SUB,
        FlagOp::Logic => LAZY_LOGIC,
        FlagOp::Co => LAZY_CO,
    }
}

/// The general registers an instruction uses and writes (bit per
/// register number), by iced's instruction information.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub used: u8,
    pub written: u8,
}

pub struct Translator<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    mode: Mode,
    frame: Value,
    tlb: Value,
    helper_sig: SigRef,
    /// A translation's own signature, for the tail call to the next.
    entry_sig: SigRef,
    helper: usize,
    lazy_sig: SigRef,
    lazy_helper: usize,
    gpr: [Variable; 8],
    flags: Variable,
    /// The dynamic flag record (see [`Lazy`]): kind, operands, result.
    rk: Variable,
    ra: Variable,
    rb: Variable,
    rr: Variable,
    /// CF of the dynamic record (0 or 1), kept apart so that a partial
    /// record (INC, DEC) can sit on top of any record without computing
    /// anything: CF is carried, the rest comes from the record.
    rc: Variable,
    /// The dynamic record's possible kinds, while `dynamic`.
    hint: Hint,
    /// Instructions retired by the region before the current block.
    count: Variable,
    /// The region's blocks: guest EIP, Cranelift block, instructions,
    /// EIP past the last instruction's last byte.
    blocks: Vec<RegionBlock>,
    /// Registers written since they were last stored (bit per register).
    dirty: u8,
    flags_dirty: bool,
    pending: Option<Pending>,
    /// The flags are the flags variable with the dynamic record applied
    /// (at region block entries: their predecessors' records differ).
    dynamic: bool,
    /// Registers the region's instructions may write.
    region_written: u8,
    /// Records made so far (to see whether an instruction made one).
    records: u32,
    /// The current block ended in a return (the instruction left).
    terminated: bool,
    /// The instruction being translated: its index in its block, its
    /// address (for the helper) and its EIP.
    index: usize,
    insn: *const Decoded,
    insn_eip: u32,
    /// This instruction's slow path (created on first use).
    slow: Option<Block>,
    info: iced_x86::InstructionInfoFactory,
    /// The region's link slots (kept by the recompiler with the code),
    /// and those handed out: (target EIP, address).
    slots: &'a mut [frame::LinkSlot],
    links: Vec<(u32, usize)>,
    /// Blocks marked cold, and whether the current block is one.
    cold_blocks: std::collections::HashSet<Block>,
    in_cold: bool,
    /// The shared leave block, once made.
    leave: Option<Block>,
    /// The region block being translated.
    current: usize,
    /// The shared chaining exit, once made.
    chain: Option<Block>,
    ptr: types::Type,
    pub shape: Shape,
}

/// A 32-bit immediate as Cranelift wants it for an `i32` operation.
fn k(v: u32) -> i64 {
    v as i32 as i64
}

fn mf() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'a, 'b> Translator<'a, 'b> {
    /// Start the function: load the frame's pointers, the registers and
    /// the instruction count.
    pub fn new(
        b: &'a mut FunctionBuilder<'b>,
        mode: Mode,
        ptr: types::Type,
        host_cc: CallConv,
        slots: &'a mut [frame::LinkSlot],
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let frame = b.block_params(entry)[0];
        let tlb = b.ins().load(ptr, mf(), frame, FRAME_TLB);
        // The helpers are Rust functions in the host's C convention; the
        // translations themselves use `tail` (see `frame::Trampoline`).
        let mut sig = Signature::new(host_cc);
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        sig.returns.push(AbiParam::new(types::I32));
        let helper_sig = b.import_signature(sig);
        let entry_sig = b.import_signature(b.func.signature.clone());
        let mut sig = Signature::new(host_cc);
        for _ in 0..5 {
            sig.params.push(AbiParam::new(types::I32));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let lazy_sig = b.import_signature(sig);

        let gpr = [0; 8].map(|_| b.declare_var(types::I32));
        let flags = b.declare_var(types::I32);
        let [rk, ra, rb, rr, rc] = [0; 5].map(|_| b.declare_var(types::I32));
        let count = b.declare_var(types::I64);
        let zero = b.ins().iconst(types::I32, 0);
        for v in [rk, ra, rb, rr, rc] {
            b.def_var(v, zero);
        }
        let zero64 = b.ins().iconst(types::I64, 0);
        b.def_var(count, zero64);
        Translator {
            b,
            mode,
            frame,
            tlb,
            helper_sig,
            entry_sig,
            helper: frame::interpret_one as *const () as usize,
            lazy_sig,
            lazy_helper: frame::lazy_flags as *const () as usize,
            gpr,
            flags,
            rk,
            rc,
            ra,
            rb,
            rr,
            count,
            blocks: Vec::new(),
            dirty: 0,
            flags_dirty: false,
            pending: None,
            dynamic: false,
            hint: Hint::Unknown,
            records: 0,
            region_written: 0xFF,
            terminated: false,
            index: 0,
            insn: std::ptr::null(),
            insn_eip: 0,
            slow: None,
            info: iced_x86::InstructionInfoFactory::new(),
            slots,
            links: Vec::new(),
            cold_blocks: std::collections::HashSet::new(),
            in_cold: false,
            leave: None,
            current: 0,
            chain: None,
            ptr,
            shape: Shape::default(),
        }
    }

    fn load_regs(&mut self, regs: u8) {
        if regs == 0 {
            return;
        }
        let cpu = self.cpu();
        for r in 0..8 {
            if regs & (1 << r) != 0 {
                let v = self
                    .b
                    .ins()
                    .load(types::I32, mf(), cpu, cpu_state::gpr(r) as i32);
                self.b.def_var(self.gpr[r], v);
            }
        }
    }

    fn load_flags(&mut self) {
        let cpu = self.cpu();
        let f = self
            .b
            .ins()
            .load(types::I32, mf(), cpu, cpu_state::EFLAGS as i32);
        self.b.def_var(self.flags, f);
    }

    /// Lay out a region: one Cranelift block per guest block (the first is
    /// the entry), entered from the function's entry.
    pub fn begin_region(&mut self, blocks: &[(u32, &[Decoded])]) {
        for &(eip, insns) in blocks {
            let last = insns.last().expect("region blocks are never empty");
            let block = self.new_block();
            self.blocks.push(RegionBlock {
                eip,
                block,
                len: insns.len(),
                end_eip: last.i.ip32().wrapping_add(last.i.len() as u32),
                entered_inside: false,
                reach: insns.len(),
            });
        }
        // The registers any instruction of the region may write (what a
        // path into a region block may hold unstored), and those it uses
        // at all: only these are loaded at entry (a delegated instruction's
        // handler reads CpuState, not the variables).
        self.region_written = 0;
        let mut used = 0;
        for &(_, insns) in blocks {
            for d in insns {
                let a = self.access(d);
                self.region_written |= a.written;
                used |= a.used;
            }
        }
        // Which region blocks a jump or fall-through inside the region may
        // enter: only those can be entered holding unstored registers.
        let mut targets: Vec<u32> = Vec::new();
        let mut successors: Vec<Vec<u32>> = Vec::new();
        for (n, &(_, insns)) in blocks.iter().enumerate() {
            let mut out = Vec::new();
            for d in insns {
                let near = matches!(d.i.op0_kind(), OpKind::NearBranch32 | OpKind::NearBranch16);
                let branch = matches!(
                    d.i.flow_control(),
                    iced_x86::FlowControl::ConditionalBranch
                        | iced_x86::FlowControl::UnconditionalBranch
                );
                if near && branch {
                    out.push(d.imm);
                }
            }
            out.push(self.blocks[n].end_eip);
            targets.extend_from_slice(&out);
            successors.push(out);
        }
        for b in &mut self.blocks {
            b.entered_inside = targets.contains(&b.eip);
        }
        // Reaches, last block first: a forward edge goes to a later block.
        for n in (0..self.blocks.len()).rev() {
            let mut longest = 0;
            for t in &successors[n] {
                if let Some(m) = self.blocks.iter().position(|b| b.eip == *t) {
                    if m > n {
                        longest = longest.max(self.blocks[m].reach);
                    }
                }
            }
            self.blocks[n].reach = self.blocks[n].len + longest;
        }
        self.shape.reach = self.blocks[0].reach as u32;
        let zero = self.iconst(0);
        for r in 0..8 {
            self.b.def_var(self.gpr[r], zero);
        }
        self.load_regs(used);
        self.load_flags();
        // The record the previous translation left in the frame (if it
        // chained here through a plain exit), taken and cleared; without
        // one the carried CF is the flags' CF.
        let mut rec = [0; 5].map(|_| None);
        for (n, v) in rec.iter_mut().enumerate() {
            *v = Some(self.b.ins().load(
                types::I32,
                mf(),
                self.frame,
                frame::FRAME_REC + 4 * n as i32,
            ));
        }
        let [kind, a, b, r, rec_cf] = rec.map(|v| v.expect("loaded above"));
        let none = self.iconst(LAZY_NONE);
        self.b.ins().store(mf(), none, self.frame, frame::FRAME_REC);
        let f = self.b.use_var(self.flags);
        let flags_cf = self.b.ins().band_imm_s(f, CF as i64);
        let cf = self.b.ins().select(kind, rec_cf, flags_cf);
        self.set_dynamic_values(kind, a, b, r, cf);
        self.dirty = self.region_written;
        self.dynamic = true;
        self.hint = Hint::Exact;
        self.shape.entries = self.blocks[1..]
            .iter()
            .map(|b| (b.eip, b.reach as u32))
            .collect();
        self.dispatch_entry();
    }

    /// Go to the region block at CpuState's EIP: a region is entered at
    /// its first block (compared first) or, through `Shape::entries`, at
    /// any other. Every way into a translation stores EIP first (the
    /// dispatcher's state, an exit before it chains), and every block
    /// entered so starts from the state loaded above, like the first
    /// (`enter_block` treats a block entered from inside, too, as having
    /// every register written, which is safe for this path as well).
    fn dispatch_entry(&mut self) {
        let first = self.blocks[0].block;
        if self.blocks.len() == 1 {
            self.b.ins().jump(first, &[]);
            return;
        }
        let cpu = self.cpu();
        let eip = self
            .b
            .ins()
            .load(types::I32, mf(), cpu, cpu_state::EIP as i32);
        for n in 0..self.blocks.len() {
            let (target, at) = (self.blocks[n].block, self.blocks[n].eip);
            let hit = self.b.ins().icmp_imm_s(IntCC::Equal, eip, at as i32 as i64);
            if n + 1 == self.blocks.len() {
                // No EIP matches only if a caller broke the rule above;
                // the first block is what a one-entry region assumed.
                self.b.ins().brif(hit, target, &[], first, &[]);
            } else {
                let next = self.b.create_block();
                self.b.ins().brif(hit, target, &[], next, &[]);
                self.switch(next);
            }
        }
    }

    /// Start translating region block `n`: every path into it has made
    /// its state canonical (registers possibly written, flags dynamic).
    pub fn enter_block(&mut self, n: usize) {
        self.current = n;
        self.switch(self.blocks[n].block);
        self.pending = None;
        self.terminated = false;
        if self.blocks[n].entered_inside {
            self.dirty = self.region_written;
            self.flags_dirty = true;
            self.dynamic = true;
            self.hint = Hint::Unknown;
        } else {
            // Entered only from the function's entry: nothing is written
            // yet; the flags are the frame's record, if any.
            self.dirty = 0;
            self.flags_dirty = false;
            self.dynamic = true;
            self.hint = Hint::Unknown;
        }
    }

    /// The CpuState pointer, loaded from the frame where it is used (so
    /// that it does not hold a host register across the region's loops).
    fn cpu(&mut self) -> Value {
        self.b.ins().load(self.ptr, mf(), self.frame, FRAME_CPU)
    }

    /// The general registers `d` uses and writes (ESP counts as both for
    /// anything that may touch the stack).
    fn access(&mut self, d: &Decoded) -> Access {
        let mut a = Access {
            used: 0,
            written: 0,
        };
        for u in self.info.info(&d.i).used_registers() {
            let r = u.register();
            if r.is_gpr8() || r.is_gpr16() || r.is_gpr32() {
                let n = 1u8 << (r.full_register32().number() & 7);
                a.used |= n;
                if !matches!(
                    u.access(),
                    iced_x86::OpAccess::Read
                        | iced_x86::OpAccess::CondRead
                        | iced_x86::OpAccess::NoMemAccess
                ) {
                    a.written |= n;
                }
            }
        }
        if d.i.stack_pointer_increment() != 0 {
            a.used |= 1 << ESP;
            a.written |= 1 << ESP;
        }
        a
    }

    // ---- block layout ----

    /// A new block; cold when made on a cold path (everything a cold
    /// path branches to is cold too, so the fast path is laid out
    /// contiguously and cold code after it).
    fn new_block(&mut self) -> Block {
        let b = self.b.create_block();
        if self.in_cold {
            self.mark_cold(b);
        }
        b
    }

    fn mark_cold(&mut self, b: Block) {
        self.b.set_cold_block(b);
        self.cold_blocks.insert(b);
    }

    fn switch(&mut self, b: Block) {
        self.b.switch_to_block(b);
        self.in_cold = self.cold_blocks.contains(&b);
    }

    // ---- registers ----

    fn reg(&mut self, r: usize) -> Value {
        self.b.use_var(self.gpr[r])
    }

    fn set_reg(&mut self, r: usize, v: Value) {
        self.b.def_var(self.gpr[r], v);
        self.dirty |= 1 << r;
    }

    /// A general register by encoding number at a width (AL..BH for 8).
    fn read_gpr(&mut self, bits: u32, n: usize) -> Value {
        match bits {
            32 => self.reg(n),
            16 => {
                let v = self.reg(n);
                self.b.ins().band_imm_s(v, 0xFFFF)
            }
            _ if n < 4 => {
                let v = self.reg(n);
                self.b.ins().band_imm_s(v, 0xFF)
            }
            _ => {
                let v = self.reg(n - 4);
                let v = self.b.ins().ushr_imm_s(v, 8);
                self.b.ins().band_imm_s(v, 0xFF)
            }
        }
    }

    fn write_gpr(&mut self, bits: u32, n: usize, v: Value) {
        match bits {
            32 => self.set_reg(n, v),
            16 => {
                let old = self.reg(n);
                let hi = self.b.ins().band_imm_s(old, k(0xFFFF_0000));
                let lo = self.b.ins().band_imm_s(v, 0xFFFF);
                let nv = self.b.ins().bor(hi, lo);
                self.set_reg(n, nv)
            }
            _ if n < 4 => {
                let old = self.reg(n);
                let hi = self.b.ins().band_imm_s(old, k(!0xFF));
                let lo = self.b.ins().band_imm_s(v, 0xFF);
                let nv = self.b.ins().bor(hi, lo);
                self.set_reg(n, nv)
            }
            _ => {
                let old = self.reg(n - 4);
                let rest = self.b.ins().band_imm_s(old, k(0xFFFF_00FF));
                let lo = self.b.ins().band_imm_s(v, 0xFF);
                let mid = self.b.ins().ishl_imm_s(lo, 8);
                let nv = self.b.ins().bor(rest, mid);
                self.set_reg(n - 4, nv)
            }
        }
    }

    fn iconst(&mut self, v: u32) -> Value {
        self.b.ins().iconst(types::I32, v as i32 as i64)
    }

    // ---- flags ----

    /// Turn the lazy record's flags in `mask` into bits of the flags
    /// variable.
    fn materialize(&mut self, mask: u32) {
        if mask == 0 {
            return;
        }
        if self.dynamic {
            let f = self.dynamic_flags();
            self.b.def_var(self.flags, f);
            self.flags_dirty = true;
            self.dynamic = false;
        }
        let Some(p) = self.pending else {
            return;
        };
        let mask = mask & p.mask;
        if mask == 0 {
            return;
        }
        let bits = self.flag_bits(&p, mask);
        let f = self.b.use_var(self.flags);
        let kept = self.b.ins().band_imm_s(f, k(!mask));
        let nf = self.b.ins().bor(kept, bits);
        self.b.def_var(self.flags, nf);
        self.flags_dirty = true;
        let left = p.mask & !mask;
        self.pending = if left == 0 {
            None
        } else {
            Some(Pending { mask: left, ..p })
        };
    }

    /// The flags variable with the dynamic record applied: nothing to do
    /// without a record, inline for the commonest records (32-bit
    /// subtractions: CMP, SUB, DEC), a helper call otherwise. CF is the
    /// record's carried CF either way.
    fn dynamic_flags(&mut self) -> Value {
        let args = [self.rk, self.ra, self.rb, self.rr, self.flags].map(|v| self.b.use_var(v));
        let rc = self.b.use_var(self.rc);
        if self.in_cold {
            // On a cold path: the helper, whatever the record (without
            // one it gives the flags back: CF is then the flags' CF).
            let no_cf = self.b.ins().band_imm_s(args[4], k(!CF));
            let with_cf = self.b.ins().bor(no_cf, rc);
            let callee = self.b.ins().iconst(types::I64, self.lazy_helper as i64);
            let kind = self.b.ins().bor_imm_s(args[0], LAZY_KEEP_CF as i64);
            let call = self.b.ins().call_indirect(
                self.lazy_sig,
                callee,
                &[kind, args[1], args[2], args[3], with_cf],
            );
            return self.b.inst_results(call)[0];
        }
        let record = self.new_block();
        let sub32 = self.new_block();
        let call_block = self.new_block();
        let done = self.new_block();
        let result = self.b.append_block_param(done, types::I32);
        self.mark_cold(call_block);
        // No record (the kind is LAZY_NONE, as at a function's entry): the
        // flags variable is exact.
        self.b
            .ins()
            .brif(args[0], record, &[], done, &[args[4].into()]);
        self.b.seal_block(record);
        self.switch(record);
        let no_cf = self.b.ins().band_imm_s(args[4], k(!CF));
        let with_cf = self.b.ins().bor(no_cf, rc);
        let op = self.b.ins().band_imm_s(args[0], 0xFFFF);
        let is_sub32 = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, op, lazy_kind(LAZY_SUB, 32) as i64);
        self.b.ins().brif(is_sub32, sub32, &[], call_block, &[]);
        self.b.seal_block(sub32);
        self.b.seal_block(call_block);
        self.switch(sub32);
        let p = Pending {
            op: FlagOp::Sub,
            bits: 32,
            a: args[1],
            b: args[2],
            r: args[3],
            mask: STATUS,
        };
        let bits = self.flag_bits(&p, STATUS & !CF);
        let kept = self.b.ins().band_imm_s(with_cf, k(!(STATUS & !CF)));
        let f = self.b.ins().bor(kept, bits);
        self.b.ins().jump(done, &[f.into()]);
        self.switch(call_block);
        let callee = self.b.ins().iconst(types::I64, self.lazy_helper as i64);
        let kind = self.b.ins().bor_imm_s(args[0], LAZY_KEEP_CF as i64);
        let call = self.b.ins().call_indirect(
            self.lazy_sig,
            callee,
            &[kind, args[1], args[2], args[3], with_cf],
        );
        let f = self.b.inst_results(call)[0];
        self.b.ins().jump(done, &[f.into()]);
        self.b.seal_block(done);
        self.switch(done);
        result
    }

    /// CF of a whole static record, as a 0/1 value.
    fn record_cf(&mut self, p: &Pending) -> Value {
        match p.op {
            FlagOp::Logic => self.iconst(0),
            FlagOp::Co => self.b.ins().band_imm_s(p.a, 1),
            FlagOp::Add => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, p.r, p.a);
                self.b.ins().uextend(types::I32, c)
            }
            FlagOp::Sub => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, p.a, p.b);
                self.b.ins().uextend(types::I32, c)
            }
        }
    }

    /// Make the flag state canonical for a region block entry: a whole
    /// record goes to the dynamic variables with its CF, a record of all
    /// but CF (INC, DEC) too, carrying CF from what it sits on; anything
    /// else becomes bits.
    fn make_dynamic(&mut self) {
        let op_of = |p: &Pending| lazy_op_code(p.op);
        match self.pending {
            None if self.dynamic => return,
            Some(p) if p.mask == STATUS => {
                let cf = self.record_cf(&p);
                self.set_dynamic(lazy_kind(op_of(&p), p.bits), p.a, p.b, p.r, cf);
                self.hint = Hint::Record(p.op, p.bits, p.mask);
            }
            Some(p) if p.mask == STATUS & !CF => {
                // CF is the one below: the dynamic record's, or the bit.
                let cf = if self.dynamic {
                    self.b.use_var(self.rc)
                } else {
                    let f = self.b.use_var(self.flags);
                    self.b.ins().band_imm_s(f, CF as i64)
                };
                self.set_dynamic(lazy_kind(op_of(&p), p.bits), p.a, p.b, p.r, cf);
                self.hint = Hint::Record(p.op, p.bits, p.mask);
            }
            _ => {
                self.materialize(STATUS);
                self.exact_dynamic();
                self.hint = Hint::Exact;
            }
        }
        self.pending = None;
        self.dynamic = true;
    }

    /// No dynamic record: the flags variable is exact (and CF carried).
    fn exact_dynamic(&mut self) {
        let z = self.iconst(0);
        let f = self.b.use_var(self.flags);
        let cf = self.b.ins().band_imm_s(f, CF as i64);
        self.set_dynamic(LAZY_NONE, z, z, z, cf);
    }

    fn set_dynamic(&mut self, kind: u32, a: Value, b: Value, r: Value, cf: Value) {
        let k = self.iconst(kind);
        self.set_dynamic_values(k, a, b, r, cf);
    }

    fn set_dynamic_values(&mut self, k: Value, a: Value, b: Value, r: Value, cf: Value) {
        self.b.def_var(self.rk, k);
        self.b.def_var(self.ra, a);
        self.b.def_var(self.rb, b);
        self.b.def_var(self.rr, r);
        self.b.def_var(self.rc, cf);
    }

    /// The flag bits in `mask` of a record, as the interpreter computes
    /// them (`operand::add_flags`, `sub_flags`, `szp`).
    fn flag_bits(&mut self, p: &Pending, mask: u32) -> Value {
        let ins = self.b.ins();
        let mut acc = ins.iconst(types::I32, 0);
        let (a, b, r, bits) = (p.a, p.b, p.r, p.bits);
        if mask & ZF != 0 {
            let z = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
            let z = self.b.ins().uextend(types::I32, z);
            let z = self.b.ins().ishl_imm_s(z, 6);
            acc = self.b.ins().bor(acc, z);
        }
        if mask & SF != 0 {
            let s = if bits == 8 {
                r
            } else {
                self.b.ins().ushr_imm_s(r, (bits - 8) as i64)
            };
            let s = self.b.ins().band_imm_s(s, SF as i64);
            acc = self.b.ins().bor(acc, s);
        }
        if mask & PF != 0 {
            let low = self.b.ins().band_imm_s(r, 0xFF);
            let n = self.b.ins().popcnt(low);
            let odd = self.b.ins().band_imm_s(n, 1);
            let even = self.b.ins().bxor_imm_s(odd, 1);
            let pf = self.b.ins().ishl_imm_s(even, 2);
            acc = self.b.ins().bor(acc, pf);
        }
        if p.op == FlagOp::Co {
            if mask & CF != 0 {
                let c = self.b.ins().band_imm_s(a, 1);
                acc = self.b.ins().bor(acc, c);
            }
            if mask & OF != 0 {
                let o = self.b.ins().band_imm_s(b, 1);
                let o = self.b.ins().ishl_imm_s(o, 11);
                acc = self.b.ins().bor(acc, o);
            }
        } else if p.op != FlagOp::Logic {
            if mask & AF != 0 {
                let x = self.b.ins().bxor(a, b);
                let x = self.b.ins().bxor(x, r);
                let x = self.b.ins().band_imm_s(x, AF as i64);
                acc = self.b.ins().bor(acc, x);
            }
            if mask & CF != 0 {
                let cc = if p.op == FlagOp::Add {
                    // a + b carried out iff the masked result is below a.
                    self.b.ins().icmp(IntCC::UnsignedLessThan, r, a)
                } else {
                    self.b.ins().icmp(IntCC::UnsignedLessThan, a, b)
                };
                let c = self.b.ins().uextend(types::I32, cc);
                acc = self.b.ins().bor(acc, c);
            }
            if mask & OF != 0 {
                let x = if p.op == FlagOp::Add {
                    let ar = self.b.ins().bxor(a, r);
                    let br = self.b.ins().bxor(b, r);
                    self.b.ins().band(ar, br)
                } else {
                    let ab = self.b.ins().bxor(a, b);
                    let ar = self.b.ins().bxor(a, r);
                    self.b.ins().band(ab, ar)
                };
                let x = self.b.ins().ushr_imm_s(x, (bits - 1) as i64);
                let x = self.b.ins().band_imm_s(x, 1);
                let x = self.b.ins().ishl_imm_s(x, 11);
                acc = self.b.ins().bor(acc, x);
            }
        }
        acc
    }

    /// Record the flags of an operation lazily. Flags of the previous
    /// record that this one does not replace are turned into bits first.
    fn record(&mut self, op: FlagOp, bits: u32, a: Value, b: Value, r: Value, mask: u32) {
        if self.dynamic {
            if mask == STATUS {
                self.dynamic = false;
            } else if !(mask == STATUS & !CF && self.pending.is_none_or(|p| p.mask & !mask == 0)) {
                // (All but CF on top of a dynamic record: CF stays the
                // record's, nothing to compute.)
                self.materialize(STATUS);
            }
        }
        if let Some(p) = self.pending {
            self.materialize(p.mask & !mask);
        }
        self.pending = Some(Pending {
            op,
            bits,
            a,
            b,
            r,
            mask,
        });
        self.records += 1;
    }

    /// Replace the flags in `mask` with `bits` now (no record).
    fn set_flags_now(&mut self, mask: u32, bits: Value) {
        if self.dynamic {
            if mask == STATUS {
                self.dynamic = false;
            } else {
                self.materialize(STATUS);
            }
        }
        if let Some(p) = self.pending {
            self.materialize(p.mask & !mask);
            self.pending = None;
        }
        let f = self.b.use_var(self.flags);
        let kept = self.b.ins().band_imm_s(f, k(!mask));
        let nf = self.b.ins().bor(kept, bits);
        self.b.def_var(self.flags, nf);
        self.flags_dirty = true;
    }

    fn flags_now(&mut self) -> Value {
        self.materialize(STATUS);
        self.b.use_var(self.flags)
    }

    /// Whether condition `cc` holds, answered from the lazy record when it
    /// can be (one host compare), from the flag bits otherwise.
    fn condition(&mut self, cc: ConditionCode) -> Value {
        let needs = flags_read(cc);
        if let Some(p) = self.pending {
            if p.mask & needs == needs {
                return self.record_condition(&p, cc);
            }
        }
        if self.dynamic && self.pending.is_none_or(|p| p.mask & needs == 0) {
            if needs == CF {
                // CF is the dynamic record's carried CF.
                let rc = self.b.use_var(self.rc);
                let set = self.b.ins().icmp_imm_s(IntCC::NotEqual, rc, 0);
                return if cc == ConditionCode::b {
                    set
                } else {
                    self.b.ins().bxor_imm_s(set, 1)
                };
            }
            match self.hint {
                Hint::Exact => {
                    // No record: the flags variable is exact.
                    let f = self.b.use_var(self.flags);
                    return self.bits_condition(f, cc);
                }
                Hint::Record(op, bits, mask) if mask & needs == needs => {
                    // The record of a known kind, or (after a slow path)
                    // none: choose between the two answers.
                    let p = Pending {
                        op,
                        bits,
                        a: self.b.use_var(self.ra),
                        b: self.b.use_var(self.rb),
                        r: self.b.use_var(self.rr),
                        mask,
                    };
                    let from_record = self.record_condition(&p, cc);
                    let f = self.b.use_var(self.flags);
                    let from_bits = self.bits_condition(f, cc);
                    let rk = self.b.use_var(self.rk);
                    return self.b.ins().select(rk, from_record, from_bits);
                }
                _ => {}
            }
        }
        let f = self.flags_now();
        self.bits_condition(f, cc)
    }

    /// `cc` from a record whose mask holds the flags it reads.
    fn record_condition(&mut self, p: &Pending, cc: ConditionCode) -> Value {
        use ConditionCode as C;
        let shift = 32 - p.bits as i64;
        let signed = |t: &mut Self, v: Value| {
            if shift == 0 {
                v
            } else {
                let x = t.b.ins().ishl_imm_s(v, shift);
                t.b.ins().sshr_imm_s(x, shift)
            }
        };
        let cmp = |t: &mut Self, c: IntCC, x: Value, y: Value| t.b.ins().icmp(c, x, y);
        match (p.op, cc) {
            (_, C::e) => return self.b.ins().icmp_imm_s(IntCC::Equal, p.r, 0),
            (_, C::ne) => return self.b.ins().icmp_imm_s(IntCC::NotEqual, p.r, 0),
            (FlagOp::Sub, C::b) => return cmp(self, IntCC::UnsignedLessThan, p.a, p.b),
            (FlagOp::Sub, C::ae) => return cmp(self, IntCC::UnsignedGreaterThanOrEqual, p.a, p.b),
            (FlagOp::Sub, C::be) => return cmp(self, IntCC::UnsignedLessThanOrEqual, p.a, p.b),
            (FlagOp::Sub, C::a) => return cmp(self, IntCC::UnsignedGreaterThan, p.a, p.b),
            (FlagOp::Sub, C::l | C::ge | C::le | C::g) => {
                let a = signed(self, p.a);
                let b = signed(self, p.b);
                let c = match cc {
                    C::l => IntCC::SignedLessThan,
                    C::ge => IntCC::SignedGreaterThanOrEqual,
                    C::le => IntCC::SignedLessThanOrEqual,
                    _ => IntCC::SignedGreaterThan,
                };
                return cmp(self, c, a, b);
            }
            (_, C::s | C::ns) | (FlagOp::Logic, C::l | C::ge | C::le | C::g) => {
                // For logic results OF = 0, so L is S and LE is S or Z.
                let r = signed(self, p.r);
                let c = match cc {
                    C::s | C::l => IntCC::SignedLessThan,
                    C::ns | C::ge => IntCC::SignedGreaterThanOrEqual,
                    C::le => IntCC::SignedLessThanOrEqual,
                    _ => IntCC::SignedGreaterThan,
                };
                return self.b.ins().icmp_imm_s(c, r, 0);
            }
            _ => {}
        }
        // Anything else: the record's bits.
        let bits = self.flag_bits(p, flags_read(cc));
        self.bits_condition(bits, cc)
    }

    /// `cc` from flag bits `f`.
    fn bits_condition(&mut self, f: Value, cc: ConditionCode) -> Value {
        use ConditionCode as C;
        let bit = |t: &mut Self, m: u32| {
            let x = t.b.ins().band_imm_s(f, m as i64);
            t.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        };
        let sf_ne_of = |t: &mut Self| {
            let s = t.b.ins().ushr_imm_s(f, 7);
            let o = t.b.ins().ushr_imm_s(f, 11);
            let x = t.b.ins().bxor(s, o);
            let x = t.b.ins().band_imm_s(x, 1);
            t.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        };
        let not = |t: &mut Self, v: Value| t.b.ins().bxor_imm_s(v, 1);
        match cc {
            C::o => bit(self, OF),
            C::no => {
                let v = bit(self, OF);
                not(self, v)
            }
            C::b => bit(self, CF),
            C::ae => {
                let v = bit(self, CF);
                not(self, v)
            }
            C::e => bit(self, ZF),
            C::ne => {
                let v = bit(self, ZF);
                not(self, v)
            }
            C::be => bit(self, CF | ZF),
            C::a => {
                let v = bit(self, CF | ZF);
                not(self, v)
            }
            C::s => bit(self, SF),
            C::ns => {
                let v = bit(self, SF);
                not(self, v)
            }
            C::p => bit(self, PF),
            C::np => {
                let v = bit(self, PF);
                not(self, v)
            }
            C::l => sf_ne_of(self),
            C::ge => {
                let v = sf_ne_of(self);
                not(self, v)
            }
            C::le => {
                let l = sf_ne_of(self);
                let z = bit(self, ZF);
                self.b.ins().bor(l, z)
            }
            _ => {
                let l = sf_ne_of(self);
                let z = bit(self, ZF);
                let le = self.b.ins().bor(l, z);
                not(self, le)
            }
        }
    }

    // ---- state write-back and exits ----

    fn store_regs(&mut self, regs: u8) {
        if regs == 0 {
            return;
        }
        let cpu = self.cpu();
        for r in 0..8 {
            if regs & (1 << r) != 0 {
                let v = self.b.use_var(self.gpr[r]);
                self.b.ins().store(mf(), v, cpu, cpu_state::gpr(r) as i32);
            }
        }
    }

    /// Store the written registers and the flags (with the record turned
    /// into bits) to CpuState, without changing what this path holds. On
    /// a `cold` path a static record is turned into bits by the helper
    /// (a call is smaller code than the inline computation).
    fn store_state(&mut self, cold: bool) {
        self.store_regs(self.dirty);
        let f = if self.dynamic {
            self.dynamic_flags()
        } else {
            self.b.use_var(self.flags)
        };
        let f = match self.pending {
            Some(p) if cold && lazy_op(&p).is_some() => {
                let (kind, a, b, r) = lazy_op(&p).expect("just checked");
                let kind = self.iconst(kind);
                let callee = self.b.ins().iconst(types::I64, self.lazy_helper as i64);
                let call = self
                    .b
                    .ins()
                    .call_indirect(self.lazy_sig, callee, &[kind, a, b, r, f]);
                Some(self.b.inst_results(call)[0])
            }
            Some(p) => {
                let bits = self.flag_bits(&p, p.mask);
                let kept = self.b.ins().band_imm_s(f, k(!p.mask));
                Some(self.b.ins().bor(kept, bits))
            }
            None if self.flags_dirty || self.dynamic => Some(f),
            None => None,
        };
        if let Some(f) = f {
            let cpu = self.cpu();
            self.b.ins().store(mf(), f, cpu, cpu_state::EFLAGS as i32);
        }
    }

    fn store_icount(&mut self, retired: usize) {
        let count = self.b.use_var(self.count);
        let base = self
            .b
            .ins()
            .load(types::I64, mf(), self.frame, frame::FRAME_ICOUNT_BASE);
        let n = self.b.ins().iadd(base, count);
        let n = self.b.ins().iadd_imm_s(n, retired as i64);
        let icount = self.b.ins().load(self.ptr, mf(), self.frame, FRAME_ICOUNT);
        self.b.ins().store(mf(), n, icount, 0);
    }

    /// Leave the block with `retired` instructions retired and EIP `eip`.
    /// `target`: the EIP when it is fixed (the exit gets a link slot).
    /// A `cold` exit goes through the shared leave block; a hot one (the
    /// ends of blocks, taken every time the translation runs) stores
    /// inline, the flags computed inline where the record allows.
    fn exit_with(&mut self, eip: Value, retired: usize, cold: bool, target: Option<u32>) {
        let slot = match target {
            Some(t) => self.link_slot(t),
            None => 0,
        };
        if cold || self.in_cold {
            self.leave_via(eip, retired, None, slot);
            return;
        }
        // A plain exit hands its flags on as a record in the frame (the
        // next translation starts from it; the engine settles it into
        // EFLAGS when it stops chaining): no flag bits computed here.
        let st = self.state();
        self.store_regs(self.dirty);
        let rec = self.flag_args();
        let cpu = self.cpu();
        self.b
            .ins()
            .store(mf(), rec[0], cpu, cpu_state::EFLAGS as i32);
        for (n, v) in rec[1..].iter().enumerate() {
            self.b
                .ins()
                .store(mf(), *v, self.frame, frame::FRAME_REC + 4 * n as i32);
        }
        self.set_state(st);
        self.b.ins().store(mf(), eip, cpu, cpu_state::EIP as i32);
        self.store_icount(retired);
        // (No slot where the region ran out of them.)
        let given = target.is_some() && slot != 0;
        let slot = self.b.ins().iconst(self.ptr, slot as i64);
        if given {
            let chain = self.chain_block();
            self.b.ins().jump(chain, &[slot.into()]);
        } else if target.is_none() && self.mode.is_flat(SegReg::Cs) {
            self.indirect_exit(eip);
        } else {
            self.b.ins().return_(&[slot]);
        }
        self.terminated = true;
    }

    /// Leave to the computed EIP `eip` through the indirect-branch table
    /// (`frame::Frame::indirect`, indexed by a hash of the EIP): when
    /// `eip`'s slot is for `eip` in this mode, go on through it as
    /// through a fixed exit's slot; otherwise take the slot for `eip`
    /// (empty) and return it, so that the engine fills it when the block
    /// there has a translation.
    fn indirect_exit(&mut self, eip: Value) {
        let shifted = self.b.ins().ushr_imm_s(eip, 10);
        let h = self.b.ins().bxor(eip, shifted);
        let h = self
            .b
            .ins()
            .band_imm_s(h, (frame::INDIRECT_SLOTS - 1) as i64);
        let h = self.b.ins().uextend(self.ptr, h);
        let offset = self.b.ins().imul_imm_s(h, frame::SLOT_SIZE);
        let table = self
            .b
            .ins()
            .load(self.ptr, mf(), self.frame, frame::FRAME_INDIRECT);
        let slot = self.b.ins().iadd(table, offset);
        let target = self
            .b
            .ins()
            .load(types::I32, mf(), slot, frame::SLOT_TARGET);
        let mode = self.b.ins().load(types::I32, mf(), slot, frame::SLOT_MODE);
        let same_eip = self.b.ins().icmp(IntCC::Equal, target, eip);
        let same_mode = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, mode, self.mode.bits() as i64);
        let hit = self.b.ins().band(same_eip, same_mode);
        let chain = self.chain_block();
        let miss = self.new_block();
        self.b.ins().brif(hit, chain, &[slot.into()], miss, &[]);
        self.b.seal_block(miss);
        self.switch(miss);
        let zero = self.b.ins().iconst(self.ptr, 0);
        self.b.ins().store(mf(), zero, slot, frame::SLOT_ENTRY);
        self.b.ins().store(mf(), eip, slot, frame::SLOT_TARGET);
        let bits = self.iconst(self.mode.bits());
        self.b.ins().store(mf(), bits, slot, frame::SLOT_MODE);
        self.b.ins().return_(&[slot]);
    }

    /// The translation's shared chaining exit (made on first use): after
    /// a plain exit has stored the whole state (registers, EIP, the flag
    /// record in the frame, the instruction count), go straight on to the
    /// translation the exit's link slot names, by a tail call, when the
    /// engine's loop would (`tier::Recompiler::enter`): the slot is
    /// filled in the current chain epoch, no work is pending, the last
    /// instruction delivered no event, and the next block fits in the
    /// budget. Otherwise return the slot to the engine.
    fn chain_block(&mut self) -> Block {
        if let Some(b) = self.chain {
            return b;
        }
        let here = self.b.current_block().expect("called while emitting code");
        let was_cold = self.in_cold;
        let b = self.b.create_block();
        let slot = self.b.append_block_param(b, self.ptr);
        self.switch(b);
        let give_back = self.new_block();
        let f = self.frame;
        let entry = self.b.ins().load(self.ptr, mf(), slot, frame::SLOT_ENTRY);
        let epoch = self.b.ins().load(types::I64, mf(), slot, frame::SLOT_EPOCH);
        let blocks = self
            .b
            .ins()
            .load(types::I64, mf(), f, frame::FRAME_BLOCKS_GENERATION);
        let tlb = self
            .b
            .ins()
            .load(self.ptr, mf(), f, frame::FRAME_TLB_GENERATION);
        let tlb = self.b.ins().load(types::I64, mf(), tlb, 0);
        let now_epoch = self.b.ins().iadd(blocks, tlb);
        let word = self.b.ins().load(self.ptr, mf(), f, frame::FRAME_PENDING);
        let work = self.b.ins().load(types::I32, mf(), word, 0);
        let event = self
            .b
            .ins()
            .uload8(types::I32, mf(), f, frame::FRAME_EVENT_DELIVERED);
        let icount = self.b.ins().load(self.ptr, mf(), f, FRAME_ICOUNT);
        let now = self.b.ins().load(types::I64, mf(), icount, 0);
        let len = self.b.ins().uload32(mf(), slot, frame::SLOT_LEN);
        let stop_at = self.b.ins().load(types::I64, mf(), f, frame::FRAME_STOP_AT);
        let need = self.b.ins().iadd(now, len);
        let filled = self.b.ins().icmp_imm_s(IntCC::NotEqual, entry, 0);
        let current = self.b.ins().icmp(IntCC::Equal, epoch, now_epoch);
        let quiet = self.b.ins().bor(work, event);
        let quiet = self.b.ins().icmp_imm_s(IntCC::Equal, quiet, 0);
        let fits = self.b.ins().icmp(IntCC::UnsignedLessThan, need, stop_at);
        for ok in [filled, current, quiet, fits] {
            let go = self.new_block();
            self.b.ins().brif(ok, go, &[], give_back, &[]);
            self.b.seal_block(go);
            self.switch(go);
        }
        let budget = self.b.ins().isub(stop_at, now);
        let budget = self.b.ins().iadd_imm_s(budget, -1);
        self.b.ins().store(mf(), budget, f, frame::FRAME_BUDGET);
        self.b.ins().store(mf(), now, f, frame::FRAME_ICOUNT_BASE);
        let chained = self.b.ins().load(types::I64, mf(), f, frame::FRAME_CHAINED);
        let chained = self.b.ins().iadd_imm_s(chained, 1);
        self.b.ins().store(mf(), chained, f, frame::FRAME_CHAINED);
        self.b
            .ins()
            .return_call_indirect(self.entry_sig, entry, &[f]);
        self.b.seal_block(give_back);
        self.switch(give_back);
        self.b.ins().return_(&[slot]);
        self.b.switch_to_block(here);
        self.in_cold = was_cold;
        self.chain = Some(b);
        b
    }

    /// Leave the translation through the shared leave block: the written
    /// registers are stored here, the rest (flags as a record, EIP, the
    /// instruction count, the instruction to hand to the interpreter's
    /// handler first if any, the link slot to return) is passed to it.
    /// One copy of that code per translation keeps every exit small.
    fn leave_via(&mut self, eip: Value, retired: usize, run: Option<*const Decoded>, slot: usize) {
        let st = self.state();
        self.store_regs(self.dirty);
        let [f, rk, ra, rb, rr, rc] = self.flag_args();
        let count = self.b.use_var(self.count);
        let count = self.b.ins().iadd_imm_s(count, retired as i64);
        let run = self.b.ins().iconst(types::I64, run.map_or(0, |d| d as i64));
        let slot = self.b.ins().iconst(self.ptr, slot as i64);
        let leave = self.leave_block();
        self.b.ins().jump(
            leave,
            &[eip, count, run, slot, f, rk, ra, rb, rr, rc].map(|v| v.into()),
        );
        self.set_state(st);
        self.terminated = true;
    }

    /// The flags as a dynamic record for the shared leave block: the
    /// flags variable, kind, operands, result, and the carried CF
    /// ([`frame::lazy_flags`] with `LAZY_KEEP_CF` gives the bits).
    fn flag_args(&mut self) -> [Value; 6] {
        let f = self.b.use_var(self.flags);
        match self.pending {
            Some(p) if lazy_op(&p).is_some() => {
                let (kind, a, b, r) = lazy_op(&p).expect("just checked");
                let cf = if p.mask & CF != 0 {
                    self.record_cf(&p)
                } else if self.dynamic {
                    self.b.use_var(self.rc)
                } else {
                    self.b.ins().band_imm_s(f, CF as i64)
                };
                let kind = self.iconst(kind & !LAZY_KEEP_CF);
                [f, kind, a, b, r, cf]
            }
            None if self.dynamic => {
                [self.flags, self.rk, self.ra, self.rb, self.rr, self.rc].map(|v| self.b.use_var(v))
            }
            _ => {
                self.materialize(STATUS);
                let f = self.b.use_var(self.flags);
                let cf = self.b.ins().band_imm_s(f, CF as i64);
                let z = self.iconst(LAZY_NONE);
                [f, z, z, z, z, cf]
            }
        }
    }

    /// The translation's shared leave block (made on first use, cold).
    fn leave_block(&mut self) -> Block {
        if let Some(b) = self.leave {
            return b;
        }
        let here = self.b.current_block().expect("called while emitting code");
        let was_cold = self.in_cold;
        let b = self.b.create_block();
        self.mark_cold(b);
        let i32t = types::I32;
        let eip = self.b.append_block_param(b, i32t);
        let count = self.b.append_block_param(b, types::I64);
        let run = self.b.append_block_param(b, types::I64);
        let slot = self.b.append_block_param(b, self.ptr);
        let args: Vec<Value> = (0..6).map(|_| self.b.append_block_param(b, i32t)).collect();
        self.switch(b);
        let cpu = self.cpu();
        let no_cf = self.b.ins().band_imm_s(args[0], k(!CF));
        let with_cf = self.b.ins().bor(no_cf, args[5]);
        let kind = self.b.ins().bor_imm_s(args[1], LAZY_KEEP_CF as i64);
        let callee = self.b.ins().iconst(types::I64, self.lazy_helper as i64);
        let call = self.b.ins().call_indirect(
            self.lazy_sig,
            callee,
            &[kind, args[2], args[3], args[4], with_cf],
        );
        let flags = self.b.inst_results(call)[0];
        self.b
            .ins()
            .store(mf(), flags, cpu, cpu_state::EFLAGS as i32);
        self.b.ins().store(mf(), eip, cpu, cpu_state::EIP as i32);
        let base = self
            .b
            .ins()
            .load(types::I64, mf(), self.frame, frame::FRAME_ICOUNT_BASE);
        let n = self.b.ins().iadd(base, count);
        let icount = self.b.ins().load(self.ptr, mf(), self.frame, FRAME_ICOUNT);
        self.b.ins().store(mf(), n, icount, 0);
        let run_block = self.new_block();
        let done = self.new_block();
        self.b.ins().brif(run, run_block, &[], done, &[]);
        self.b.seal_block(run_block);
        self.switch(run_block);
        let callee = self.b.ins().iconst(types::I64, self.helper as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.helper_sig, callee, &[self.frame, run]);
        let r = self.b.inst_results(call)[0];
        let null = self.b.ins().iconst(self.ptr, 0);
        let exit = self.b.ins().select(r, null, slot);
        self.b.ins().return_(&[exit]);
        self.b.seal_block(done);
        self.switch(done);
        self.b.ins().return_(&[slot]);
        self.b.switch_to_block(here);
        self.in_cold = was_cold;
        self.leave = Some(b);
        b
    }

    /// The end of the block after `retired` instructions, falling through
    /// to `eip`.
    pub fn finish(&mut self, eip: u32, retired: usize) {
        self.edge(eip, retired);
    }

    /// Go on at `target` after `retired` instructions of the current
    /// block: inside the region when the target is one of its blocks and
    /// nothing stands in the way (pending work, the instruction budget,
    /// the CS limit), otherwise leave.
    fn edge(&mut self, target: u32, retired: usize) {
        let Some(n) = self.blocks.iter().position(|b| b.eip == target) else {
            let e = self.iconst(target);
            self.exit_with(e, retired, false, Some(target));
            return;
        };
        let t = self.blocks[n];
        self.make_dynamic();
        let count = self.b.use_var(self.count);
        let after = self.b.ins().iadd_imm_s(count, retired as i64);
        if n > self.current && self.mode.is_flat(SegReg::Cs) {
            // A forward edge: the reach checked where this path began
            // covers it.
            self.b.def_var(self.count, after);
            self.b.ins().jump(t.block, &[]);
            self.terminated = true;
            return;
        }
        let word = self
            .b
            .ins()
            .load(self.ptr, mf(), self.frame, frame::FRAME_PENDING);
        let work = self.b.ins().load(types::I32, mf(), word, 0);
        let budget = self
            .b
            .ins()
            .load(types::I64, mf(), self.frame, frame::FRAME_BUDGET);
        let quiet = self.b.ins().icmp_imm_s(IntCC::Equal, work, 0);
        let need = self.b.ins().iadd_imm_s(after, t.reach as i64);
        let fits = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, need, budget);
        let leave = self.new_block();
        self.mark_cold(leave);
        let mut checks = vec![quiet, fits];
        if !self.mode.is_flat(SegReg::Cs) {
            let limit = self.cs_limit();
            let in_cs = self.b.ins().icmp_imm_s(
                IntCC::UnsignedGreaterThanOrEqual,
                limit,
                k(t.end_eip.wrapping_sub(1)),
            );
            checks.push(in_cs);
        }
        // One compare and branch per check.
        for ok in checks {
            let go = self.new_block();
            self.b.ins().brif(ok, go, &[], leave, &[]);
            self.b.seal_block(go);
            self.switch(go);
        }
        self.b.seal_block(leave);
        let go = self.b.current_block().expect("just switched to it");
        self.switch(leave);
        let e = self.iconst(target);
        self.exit_with(e, retired, true, Some(target));
        self.switch(go);
        self.b.def_var(self.count, after);
        self.b.ins().jump(t.block, &[]);
        self.terminated = true;
    }

    /// Hand a delegated instruction to the interpreter: every written
    /// register and the flags are stored first, then the call, and either
    /// a return (the helper said leave) or the reload of all the state and
    /// a jump to `join`.
    fn call_interpreter(&mut self, join: Block) {
        self.store_state(false);
        let eip = self.iconst(self.insn_eip);
        let cpu = self.cpu();
        self.b.ins().store(mf(), eip, cpu, cpu_state::EIP as i32);
        self.store_icount(self.index);
        let callee = self.b.ins().iconst(types::I64, self.helper as i64);
        let idx = self.b.ins().iconst(types::I64, self.insn as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.helper_sig, callee, &[self.frame, idx]);
        let r = self.b.inst_results(call)[0];
        let leave = self.new_block();
        let reload = self.new_block();
        self.mark_cold(leave);
        self.b.ins().brif(r, leave, &[], reload, &[]);
        self.switch(leave);
        self.b.seal_block(leave);
        let null = self.b.ins().iconst(self.ptr, 0);
        self.b.ins().return_(&[null]);
        self.switch(reload);
        self.b.seal_block(reload);
        self.load_regs(0xFF);
        self.load_flags();
        self.b.ins().jump(join, &[]);
    }

    /// The address of the link slot of an exit to `target` (one per
    /// target), or 0 when the region's slots are used up.
    fn link_slot(&mut self, target: u32) -> usize {
        if let Some(&(_, a)) = self.links.iter().find(|(t, _)| *t == target) {
            return a;
        }
        let Some(slot) = self.slots.get_mut(self.links.len()) else {
            return 0;
        };
        *slot = frame::LinkSlot {
            target,
            mode: self.mode.bits(),
            ..Default::default()
        };
        let a = slot as *mut frame::LinkSlot as usize;
        self.links.push((target, a));
        a
    }

    /// The current instruction's slow path: a cold block that hands the
    /// instruction to the interpreter.
    fn slow_block(&mut self) -> Block {
        match self.slow {
            Some(b) => b,
            None => {
                let b = self.new_block();
                self.mark_cold(b);
                self.slow = Some(b);
                b
            }
        }
    }

    /// Go to the slow path unless `ok` holds.
    fn guard(&mut self, ok: Value) {
        let slow = self.slow_block();
        self.guard_to(ok, slow);
    }

    /// Go to `miss` unless `ok` holds.
    fn guard_to(&mut self, ok: Value, miss: Block) {
        let go = self.new_block();
        self.b.ins().brif(ok, go, &[], miss, &[]);
        self.b.seal_block(go);
        self.switch(go);
    }

    // ---- memory ----

    /// The offset of a memory operand in its segment.
    fn effective_address(&mut self, d: &Decoded) -> Value {
        let m = &d.mem;
        let mut a = self.iconst(m.displacement);
        if m.base != MemoryOperand::NONE {
            let r = self.reg(m.base as usize);
            a = self.b.ins().iadd(a, r);
        }
        if m.index != MemoryOperand::NONE {
            let i = if m.byte_index {
                self.read_gpr(8, m.index as usize)
            } else {
                self.reg(m.index as usize)
            };
            let i = if m.scale_shift != 0 {
                self.b.ins().ishl_imm_s(i, m.scale_shift as i64)
            } else {
                i
            };
            a = self.b.ins().iadd(a, i);
        }
        if d.a16 {
            a = self.b.ins().band_imm_s(a, 0xFFFF);
        }
        a
    }

    /// The host address of `bytes` bytes at `s:offset` for a read or a
    /// write, or a jump to the slow path (see the module documentation).
    /// Each check is a compare and a branch of its own (cheaper on x86
    /// than combining the outcomes).
    fn host_address(&mut self, s: SegReg, offset: Value, bytes: u32, write: bool) -> Value {
        let slow = self.slow_block();
        self.host_address_or(s, offset, bytes, write, slow)
    }

    /// `bits` bits read at `s:offset`, inline through the TLB. Every
    /// failed check — a TLB miss included — goes to the instruction's slow
    /// path, which runs the whole instruction in the interpreter's handler
    /// (which walks the page tables and fills the TLB, or faults) and
    /// leaves the translation for the next instruction. Nothing comes back,
    /// so no call sits on a path that goes on: the fast path's values need
    /// not survive one, and register allocation stays free. A miss costs a
    /// trip through the interpreter, and misses are rare once the TLB is
    /// warm (a few thousand on all of bench-int).
    fn load_mem(&mut self, s: SegReg, offset: Value, bits: u32) -> Value {
        let p = self.host_address(s, offset, bits / 8, false);
        self.load_host(bits, p)
    }

    /// [`Self::host_address`] with every failed check going to `miss`.
    fn host_address_or(
        &mut self,
        s: SegReg,
        offset: Value,
        bytes: u32,
        write: bool,
        miss: Block,
    ) -> Value {
        // A flat data segment: base 0, limit 4 GiB, an attribute the fast
        // path allows (reads through CS keep the full check).
        let lin = if s != SegReg::Cs && self.mode.is_flat(s) {
            offset
        } else {
            self.segment_checks(s, offset, bytes, write, miss)
        };
        self.tlb_lookup(lin, bytes, write, miss, miss)
    }

    /// The host address of `bytes` bytes at linear `lin` through the TLB
    /// (a miss goes to `miss`, a misaligned user access to `misaligned`).
    fn tlb_lookup(
        &mut self,
        lin: Value,
        bytes: u32,
        write: bool,
        miss: Block,
        misaligned: Block,
    ) -> Value {
        // The TLB: the entry of the first byte's page must carry the tag
        // of the *last* byte's page. Tags live only at their own index, so
        // that one compare is both the hit and the "stays in its page"
        // test of the ABI (an access running into the next page has a
        // last page whose tag cannot sit at the first page's index).
        // The entry's offset in the table, (page & (ENTRIES - 1)) *
        // ENTRY_SIZE, in one shift and one mask.
        const { assert!(tlb::ENTRY_SIZE.is_power_of_two() && tlb::ENTRIES.is_power_of_two()) };
        let size_log2 = tlb::ENTRY_SIZE.trailing_zeros() as i64;
        let shifted = self.b.ins().ushr_imm_s(lin, 12 - size_log2);
        let off_e = self
            .b
            .ins()
            .band_imm_s(shifted, ((tlb::ENTRIES - 1) * tlb::ENTRY_SIZE) as i64);
        let off_e = self.b.ins().uextend(types::I64, off_e);
        let entry = self.b.ins().iadd(self.tlb, off_e);
        let tag = self.b.ins().load(
            types::I32,
            mf(),
            entry,
            tlb::tag_offset(self.mode.user, write) as i32,
        );
        let last = if bytes > 1 {
            self.b.ins().iadd_imm_s(lin, bytes as i64 - 1)
        } else {
            lin
        };
        let last_vpn = self.b.ins().ushr_imm_s(last, 12);
        let hit = self.b.ins().icmp(IntCC::Equal, tag, last_vpn);
        self.guard_to(hit, miss);
        if self.mode.user && bytes > 1 {
            // A misaligned user access may owe #AC: the slow path decides.
            let mis = self.b.ins().band_imm_s(lin, bytes as i64 - 1);
            let aligned = self.b.ins().icmp_imm_s(IntCC::Equal, mis, 0);
            self.guard_to(aligned, misaligned);
        }
        let addend = self
            .b
            .ins()
            .load(types::I64, mf(), entry, tlb::ADDEND as i32);
        let lin = self.b.ins().uextend(types::I64, lin);
        self.b.ins().iadd(addend, lin)
    }

    /// The checks of a segment that is not flat (core's fast-path rule:
    /// an attribute the fast path allows and an offset inside the limit),
    /// each to the slow path; returns the linear address.
    fn segment_checks(
        &mut self,
        s: SegReg,
        offset: Value,
        bytes: u32,
        write: bool,
        miss: Block,
    ) -> Value {
        let seg = |f| cpu_state::segment(s, f) as i32;
        let cpu = self.cpu();
        let a = self
            .b
            .ins()
            .load(types::I32, mf(), cpu, seg(cpu_state::SEGMENT_ATTR));
        let m = self.b.ins().band_imm_s(a, SEG_CHECKED as i64);
        // Fast-path segments, as core's `fast_readable` / `fast_writable`.
        let seg_ok = if write {
            self.b
                .ins()
                .icmp_imm_s(IntCC::Equal, m, (attr::S | attr::RW) as i64)
        } else {
            let data = self.b.ins().band_imm_s(m, k(!attr::RW));
            let data = self.b.ins().icmp_imm_s(IntCC::Equal, data, attr::S as i64);
            let code = self.b.ins().band_imm_s(m, k(!attr::DC));
            let code = self.b.ins().icmp_imm_s(
                IntCC::Equal,
                code,
                (attr::S | attr::CODE | attr::RW) as i64,
            );
            self.b.ins().bor(data, code)
        };
        self.guard_to(seg_ok, miss);
        // offset + bytes - 1 <= limit, without wrapping.
        let cpu = self.cpu();
        let limit = self
            .b
            .ins()
            .load(types::I32, mf(), cpu, seg(cpu_state::SEGMENT_LIMIT));
        let off64 = self.b.ins().uextend(types::I64, offset);
        let last = self.b.ins().iadd_imm_s(off64, bytes as i64 - 1);
        let lim64 = self.b.ins().uextend(types::I64, limit);
        let in_limit = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, last, lim64);
        self.guard_to(in_limit, miss);
        let cpu = self.cpu();
        let base = self
            .b
            .ins()
            .load(types::I32, mf(), cpu, seg(cpu_state::SEGMENT_BASE));
        self.b.ins().iadd(base, offset)
    }

    fn load_host(&mut self, bits: u32, p: Value) -> Value {
        match bits {
            32 => self.b.ins().load(types::I32, mf(), p, 0),
            16 => self.b.ins().uload16(types::I32, mf(), p, 0),
            _ => self.b.ins().uload8(types::I32, mf(), p, 0),
        }
    }

    fn store_host(&mut self, bits: u32, p: Value, v: Value) {
        match bits {
            32 => self.b.ins().store(mf(), v, p, 0),
            16 => self.b.ins().istore16(mf(), v, p, 0),
            _ => self.b.ins().istore8(mf(), v, p, 0),
        };
    }

    // ---- instructions ----

    /// Translate instruction `index` of the current block. Returns false
    /// when the block has been left for good here (an unconditional
    /// transfer).
    pub fn instruction(&mut self, index: usize, d: &Decoded) -> bool {
        self.index = index;
        self.insn = d;
        self.insn_eip = d.i.ip32();
        self.slow = None;
        self.terminated = false;
        let before = self.state();
        if !self.translate(d) {
            let join = self.new_block();
            self.shape.delegated += 1;
            // The whole instruction goes to the interpreter: its flags
            // must be real bits first.
            self.materialize(STATUS);
            self.call_interpreter(join);
            self.clean();
            self.b.seal_block(join);
            self.switch(join);
            return true;
        }
        self.shape.translated += 1;
        let left = self.terminated;
        if self.slow.is_none() {
            // No slow path: the instruction goes on in the block it ends in.
            return !left;
        }
        self.finish_slow_path(d, before, left)
    }

    /// The slow path of a translated instruction (any failed check of its
    /// fast path: a TLB miss, a segment or alignment check, a store to a
    /// code page, MMIO) runs the whole instruction in the interpreter's
    /// handler, with the state complete in CpuState as it was before the
    /// instruction (every guard comes before any change, so the variables
    /// and the compile-time state saved in `before` still hold it), and
    /// leaves: through the link slot of the next instruction when the
    /// handler says go on, with null otherwise. Nothing comes back to the
    /// fast path: its lazy flags stay as it made them, and no value of it
    /// has to survive a call. Misses are rare once the TLB is warm.
    fn finish_slow_path(&mut self, d: &Decoded, before: State, left: bool) -> bool {
        let here = self.b.current_block();
        let after = self.state();
        let slow = self.slow_block();
        self.switch(slow);
        self.b.seal_block(slow);
        self.set_state(before);
        let eip = self.iconst(self.insn_eip);
        let on = self.link_slot(d.next_eip);
        self.leave_via(eip, self.index, Some(self.insn), on);
        self.set_state(after);
        self.terminated = left;
        match (here, left) {
            (Some(b), false) => {
                self.switch(b);
                true
            }
            _ => false,
        }
    }

    /// Nothing written since the last load: after a helper call.
    fn clean(&mut self) {
        self.dirty = 0;
        self.flags_dirty = false;
        self.pending = None;
        self.dynamic = false;
    }

    fn state(&self) -> State {
        State {
            dirty: self.dirty,
            flags_dirty: self.flags_dirty,
            pending: self.pending,
            dynamic: self.dynamic,
            hint: self.hint,
        }
    }

    fn set_state(&mut self, st: State) {
        self.dirty = st.dirty;
        self.flags_dirty = st.flags_dirty;
        self.pending = st.pending;
        self.dynamic = st.dynamic;
        self.hint = st.hint;
    }

    /// The fast path of `d`, or false to delegate it.
    fn translate(&mut self, d: &Decoded) -> bool {
        use Mnemonic::*;
        let i = &d.i;
        let bits = |n: u32| ringside_interp::table::op_bits(i, n);
        match (i.mnemonic(), d.ops[0], d.ops[1]) {
            (Nop, _, _) if i.op_count() == 0 => true,
            (Mov, Operand::Gpr(r), Operand::Gpr(s)) => {
                let w = bits(0);
                let v = self.read_gpr(w, s as usize);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Mov, Operand::Gpr(r), Operand::Immediate) => {
                let w = bits(0);
                let v = self.iconst(d.imm);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Mov, Operand::Gpr(r), Operand::Memory) => {
                let w = bits(0);
                let off = self.effective_address(d);
                let v = self.load_mem(d.mem.segment, off, w);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Mov, Operand::Memory, Operand::Gpr(_) | Operand::Immediate) => {
                let w = bits(0);
                let v = self.source(d, w);
                let off = self.effective_address(d);
                let p = self.host_address(d.mem.segment, off, w / 8, true);
                self.store_host(w, p, v);
                true
            }
            (Movzx | Movsx, Operand::Gpr(r), Operand::Gpr(_) | Operand::Memory) => {
                let (dw, sw) = (bits(0), bits(1));
                let v = match d.ops[1] {
                    Operand::Gpr(s) => self.read_gpr(sw, s as usize),
                    _ => {
                        let off = self.effective_address(d);
                        self.load_mem(d.mem.segment, off, sw)
                    }
                };
                let v = if i.mnemonic() == Movsx {
                    let sh = 32 - sw as i64;
                    let x = self.b.ins().ishl_imm_s(v, sh);
                    self.b.ins().sshr_imm_s(x, sh)
                } else {
                    v
                };
                self.write_gpr(dw, r as usize, v);
                true
            }
            (Lea, Operand::Gpr(r), Operand::Memory) => {
                let w = bits(0);
                let v = self.effective_address(d);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Add | Or | Adc | Sbb | And | Sub | Xor | Cmp | Test, _, _) => self.alu(d),
            (Inc | Dec, Operand::Gpr(r), _) => {
                let w = bits(0);
                let a = self.read_gpr(w, r as usize);
                let one = self.iconst(1);
                let (op, v) = if i.mnemonic() == Inc {
                    (FlagOp::Add, self.b.ins().iadd_imm_s(a, 1))
                } else {
                    (FlagOp::Sub, self.b.ins().iadd_imm_s(a, -1))
                };
                let v = self.mask(v, w);
                self.write_gpr(w, r as usize, v);
                self.record(op, w, a, one, v, STATUS & !CF);
                true
            }
            (Neg, Operand::Gpr(r), _) => {
                let w = bits(0);
                let a = self.read_gpr(w, r as usize);
                let zero = self.iconst(0);
                let v = self.b.ins().isub(zero, a);
                let v = self.mask(v, w);
                self.write_gpr(w, r as usize, v);
                self.record(FlagOp::Sub, w, zero, a, v, STATUS);
                true
            }
            (Not, Operand::Gpr(r), _) => {
                let w = bits(0);
                let a = self.read_gpr(w, r as usize);
                let v = self.b.ins().bnot(a);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Shl | Shr | Sar, Operand::Gpr(r), Operand::Immediate) => {
                self.shift_imm(i.mnemonic(), bits(0), r as usize, d.imm & 0x1F);
                true
            }
            (Imul, Operand::Gpr(r), Operand::Gpr(_) | Operand::Memory) if i.op_count() >= 2 => {
                let w = bits(0);
                if w == 8 {
                    return false;
                }
                let a = match d.ops[1] {
                    Operand::Gpr(s) => self.read_gpr(w, s as usize),
                    _ => {
                        let off = self.effective_address(d);
                        self.load_mem(d.mem.segment, off, w)
                    }
                };
                let b = if i.op_count() == 3 {
                    self.iconst(d.imm & if w == 16 { 0xFFFF } else { u32::MAX })
                } else {
                    self.read_gpr(w, r as usize)
                };
                self.imul(w, r as usize, a, b);
                true
            }
            (Push, Operand::Gpr(_) | Operand::Immediate, _) if self.mode.stack32 => {
                let w = bits(0);
                let v = self.source0(d, w);
                self.push(w, v);
                true
            }
            (Pop, Operand::Gpr(r), _) if self.mode.stack32 => {
                let w = bits(0);
                let esp = self.reg(ESP);
                let v = self.load_mem(SegReg::Ss, esp, w);
                let nsp = self.b.ins().iadd_imm_s(esp, (w / 8) as i64);
                self.set_reg(ESP, nsp);
                self.write_gpr(w, r as usize, v);
                true
            }
            (Jmp, _, _)
                if i.op0_kind() == OpKind::NearBranch32 || i.op0_kind() == OpKind::NearBranch16 =>
            {
                self.check_target(d.imm);
                self.edge(d.imm, self.index + 1);
                true
            }
            (Call, _, _)
                if self.mode.stack32
                    && matches!(i.op0_kind(), OpKind::NearBranch32 | OpKind::NearBranch16) =>
            {
                let w = if i.code() == iced_x86::Code::Call_rel32_32 {
                    32
                } else {
                    16
                };
                self.check_target(d.imm);
                let ret = self.iconst(d.next_eip);
                self.push(w, ret);
                let t = self.iconst(d.imm);
                self.exit_with(t, self.index + 1, false, Some(d.imm));
                true
            }
            (Ret, _, _) if self.mode.stack32 => {
                let w = if matches!(
                    i.code(),
                    iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16
                ) {
                    16
                } else {
                    32
                };
                let esp = self.reg(ESP);
                let t = self.load_mem(SegReg::Ss, esp, w);
                if !self.mode.is_flat(SegReg::Cs) {
                    let limit = self.cs_limit();
                    let ok = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, t, limit);
                    self.guard(ok);
                }
                let extra = if i.op_count() == 1 { d.imm & 0xFFFF } else { 0 };
                let nsp = self.b.ins().iadd_imm_s(esp, (w / 8 + extra) as i64);
                self.set_reg(ESP, nsp);
                self.exit_with(t, self.index + 1, false, None);
                true
            }
            _ if i.flow_control() == iced_x86::FlowControl::ConditionalBranch
                && matches!(i.op0_kind(), OpKind::NearBranch32 | OpKind::NearBranch16)
                && i.condition_code() != ConditionCode::None
                && matches!(
                    i.mnemonic(),
                    Ja | Jae
                        | Jb
                        | Jbe
                        | Je
                        | Jne
                        | Jg
                        | Jge
                        | Jl
                        | Jle
                        | Jo
                        | Jno
                        | Jp
                        | Jnp
                        | Js
                        | Jns
                ) =>
            {
                self.check_target(d.imm);
                let taken = self.condition(i.condition_code());
                let out = self.new_block();
                let on = self.new_block();
                self.b.ins().brif(taken, out, &[], on, &[]);
                self.b.seal_block(out);
                self.b.seal_block(on);
                self.switch(out);
                let st = self.state();
                self.edge(d.imm, self.index + 1);
                self.set_state(st);
                self.terminated = false;
                self.switch(on);
                true
            }
            _ => false,
        }
    }

    fn mask(&mut self, v: Value, bits: u32) -> Value {
        match bits {
            32 => v,
            16 => self.b.ins().band_imm_s(v, 0xFFFF),
            _ => self.b.ins().band_imm_s(v, 0xFF),
        }
    }

    /// Operand 1 as a source value (register or immediate).
    fn source(&mut self, d: &Decoded, w: u32) -> Value {
        match d.ops[1] {
            Operand::Gpr(s) => self.read_gpr(w, s as usize),
            _ => {
                let v = d.imm & if w == 32 { u32::MAX } else { (1 << w) - 1 };
                self.iconst(v)
            }
        }
    }

    /// Operand 0 as a source value (register or immediate).
    fn source0(&mut self, d: &Decoded, w: u32) -> Value {
        match d.ops[0] {
            Operand::Gpr(s) => self.read_gpr(w, s as usize),
            _ => {
                let v = d.imm & if w == 32 { u32::MAX } else { (1 << w) - 1 };
                self.iconst(v)
            }
        }
    }

    /// CS's limit, as the guest has it now.
    fn cs_limit(&mut self) -> Value {
        let cpu = self.cpu();
        self.b.ins().load(
            types::I32,
            mf(),
            cpu,
            cpu_state::segment(SegReg::Cs, cpu_state::SEGMENT_LIMIT) as i32,
        )
    }

    /// A near branch target beyond the CS limit raises #GP: the slow path
    /// (never, in flat 32-bit CS).
    fn check_target(&mut self, target: u32) {
        if self.mode.is_flat(SegReg::Cs) {
            return;
        }
        let limit = self.cs_limit();
        let ok = self.b.ins().icmp_imm_s(
            IntCC::UnsignedGreaterThanOrEqual,
            limit,
            target as i32 as i64,
        );
        self.guard(ok);
    }

    /// PUSH on a 32-bit stack: the store is checked before ESP changes.
    fn push(&mut self, w: u32, v: Value) {
        let esp = self.reg(ESP);
        let nsp = self.b.ins().iadd_imm_s(esp, -((w / 8) as i64));
        let p = self.host_address(SegReg::Ss, nsp, w / 8, true);
        self.store_host(w, p, v);
        self.set_reg(ESP, nsp);
    }

    /// The two-operand arithmetic and logic group.
    fn alu(&mut self, d: &Decoded) -> bool {
        use Mnemonic::*;
        let i = &d.i;
        let mn = i.mnemonic();
        let w = ringside_interp::table::op_bits(i, 0);
        let compare = matches!(mn, Cmp | Test);
        let carry = matches!(mn, Adc | Sbb);
        // Operand 1.
        let (b, mem_dst) = match (d.ops[0], d.ops[1]) {
            (Operand::Gpr(_), Operand::Gpr(_) | Operand::Immediate) => (self.source(d, w), None),
            (Operand::Gpr(_), Operand::Memory) => {
                let off = self.effective_address(d);
                (self.load_mem(d.mem.segment, off, w), None)
            }
            (Operand::Memory, Operand::Gpr(_) | Operand::Immediate) if compare => {
                // Memory is only read: the value stands for operand 0.
                let b = self.source(d, w);
                let off = self.effective_address(d);
                let a = self.load_mem(d.mem.segment, off, w);
                (b, Some((a, None)))
            }
            (Operand::Memory, Operand::Gpr(_) | Operand::Immediate) => {
                let b = self.source(d, w);
                let off = self.effective_address(d);
                let p = self.host_address(d.mem.segment, off, w / 8, true);
                let a = self.load_host(w, p);
                (b, Some((a, Some(p))))
            }
            _ => return false,
        };
        let a = match (d.ops[0], mem_dst) {
            (Operand::Gpr(r), _) => self.read_gpr(w, r as usize),
            (_, Some((a, _))) => a,
            _ => return false,
        };
        let cin = if carry {
            let f = self.flags_now();
            Some(self.b.ins().band_imm_s(f, CF as i64))
        } else {
            None
        };
        let (op, r) = match mn {
            Add | Adc => {
                let mut r = self.b.ins().iadd(a, b);
                if let Some(c) = cin {
                    r = self.b.ins().iadd(r, c);
                }
                (FlagOp::Add, r)
            }
            Sub | Sbb | Cmp => {
                let mut r = self.b.ins().isub(a, b);
                if let Some(c) = cin {
                    r = self.b.ins().isub(r, c);
                }
                (FlagOp::Sub, r)
            }
            And | Test => (FlagOp::Logic, self.b.ins().band(a, b)),
            Or => (FlagOp::Logic, self.b.ins().bor(a, b)),
            _ => (FlagOp::Logic, self.b.ins().bxor(a, b)),
        };
        let r = self.mask(r, w);
        if !compare {
            match (d.ops[0], mem_dst) {
                (Operand::Gpr(n), _) => self.write_gpr(w, n as usize, r),
                (_, Some((_, Some(p)))) => self.store_host(w, p, r),
                _ => unreachable!("operand 0 was matched above"),
            }
        }
        match cin {
            None => self.record(op, w, a, b, r, STATUS),
            Some(c) => {
                // ADC/SBB: the carry-in joins the flags, so they are
                // computed now (as `add_flags`/`sub_flags` with a carry).
                let bits = self.carry_flags(op == FlagOp::Add, w, a, b, c, r);
                self.set_flags_now(STATUS, bits);
            }
        }
        true
    }

    /// Flags of `a + b + c` or `a - b - c` (c = 0 or 1) giving `r`.
    fn carry_flags(&mut self, add: bool, w: u32, a: Value, b: Value, c: Value, r: Value) -> Value {
        let p = Pending {
            op: if add { FlagOp::Add } else { FlagOp::Sub },
            bits: w,
            a,
            b,
            r,
            mask: STATUS,
        };
        let rest = self.flag_bits(&p, STATUS & !CF);
        let a64 = self.b.ins().uextend(types::I64, a);
        let b64 = self.b.ins().uextend(types::I64, b);
        let c64 = self.b.ins().uextend(types::I64, c);
        let cf = if add {
            let s = self.b.ins().iadd(a64, b64);
            let s = self.b.ins().iadd(s, c64);
            let lim = if w == 32 {
                u32::MAX as i64
            } else {
                (1i64 << w) - 1
            };
            self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, s, lim)
        } else {
            let s = self.b.ins().iadd(b64, c64);
            self.b.ins().icmp(IntCC::UnsignedLessThan, a64, s)
        };
        let cf = self.b.ins().uextend(types::I32, cf);
        self.b.ins().bor(rest, cf)
    }

    /// SHL, SHR, SAR of a register by an immediate (as `shift::shift`).
    fn shift_imm(&mut self, mn: Mnemonic, w: u32, r: usize, n: u32) {
        if n == 0 {
            return;
        }
        let a = self.read_gpr(w, r);
        let (res, cf, of) = match mn {
            Mnemonic::Shl => {
                let a64 = self.b.ins().uextend(types::I64, a);
                let wide = self.b.ins().ishl_imm_s(a64, n as i64);
                let res = self.b.ins().ireduce(types::I32, wide);
                let res = self.mask(res, w);
                let cf = self.b.ins().ushr_imm_s(wide, w as i64);
                let cf = self.b.ins().ireduce(types::I32, cf);
                let cf = self.b.ins().band_imm_s(cf, 1);
                let top = self.b.ins().ushr_imm_s(res, (w - 1) as i64);
                let of = self.b.ins().bxor(top, cf);
                let of = self.b.ins().band_imm_s(of, 1);
                (res, cf, Some(of))
            }
            Mnemonic::Shr => {
                let cf = if n > w {
                    self.iconst(0)
                } else {
                    let x = self.b.ins().ushr_imm_s(a, (n - 1) as i64);
                    self.b.ins().band_imm_s(x, 1)
                };
                let res = if n >= w {
                    self.iconst(0)
                } else {
                    self.b.ins().ushr_imm_s(a, n as i64)
                };
                let of = self.b.ins().ushr_imm_s(a, (w - 1) as i64);
                let of = self.b.ins().band_imm_s(of, 1);
                (res, cf, Some(of))
            }
            _ => {
                let sh = 32 - w as i64;
                let s = self.b.ins().ishl_imm_s(a, sh);
                let s = self.b.ins().sshr_imm_s(s, sh);
                let res = self.b.ins().sshr_imm_s(s, n.min(31) as i64);
                let res = self.mask(res, w);
                let cf = self.b.ins().sshr_imm_s(s, (n - 1).min(31) as i64);
                let cf = self.b.ins().band_imm_s(cf, 1);
                (res, cf, None)
            }
        };
        self.write_gpr(w, r, res);
        let of = match of {
            Some(of) => of,
            None => self.iconst(0),
        };
        self.record(FlagOp::Co, w, cf, of, res, STATUS);
    }

    /// IMUL r, r/m(, imm): the truncated product, CF = OF = the product did
    /// not fit, SF/ZF/PF of the result, AF clear (as `arith::imul_n`).
    fn imul(&mut self, w: u32, r: usize, a: Value, b: Value) {
        let sh = 32 - w as i64;
        let sext = |t: &mut Self, v: Value| {
            let x = t.b.ins().ishl_imm_s(v, sh);
            let x = t.b.ins().sshr_imm_s(x, sh);
            t.b.ins().sextend(types::I64, x)
        };
        let a64 = sext(self, a);
        let b64 = sext(self, b);
        let p = self.b.ins().imul(a64, b64);
        let lo = self.b.ins().ireduce(types::I32, p);
        let res = self.mask(lo, w);
        let back = sext(self, res);
        let over = self.b.ins().icmp(IntCC::NotEqual, back, p);
        let over = self.b.ins().uextend(types::I32, over);
        self.write_gpr(w, r, res);
        self.record(FlagOp::Co, w, over, over, res, STATUS);
    }
}
