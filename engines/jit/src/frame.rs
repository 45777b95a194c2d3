//! The frame a translated block runs in, and the helpers it calls.
//!
//! A translation is a host function `fn(*mut Frame) -> *const LinkSlot` in
//! Cranelift's `tail` calling convention (so that one translation can
//! jump to the next with a tail call, see [`LinkSlot`]); the engine enters
//! it through a trampoline in the platform's C convention ([`Trampoline`]).
//! The frame carries the three pointers of the generated-code ABI
//! (`ringside_core::abi`: CpuState, the software TLB, the pending-work
//! word), the instruction counter, the machine itself (for helpers) and
//! the interpreter's decoded instructions of the block, so that any
//! instruction can be handed to the interpreter's handler for it: the
//! recompiler's slow path, and its fallback for every instruction it does
//! not translate.

use std::mem::offset_of;

use ringside_core::cpu::CpuState;
use ringside_core::mmu::TlbEntry;
use ringside_core::Machine;
use ringside_interp::exec::{BlockEnd, Ctx, Decoded};

/// What generated code reads and what its helpers write.
#[repr(C)]
pub struct Frame {
    pub cpu: *mut CpuState,
    pub tlb: *const TlbEntry,
    pub pending: *const u32,
    /// `Machine::clock.icount`.
    pub icount: *mut u64,
    pub machine: *mut Machine,
    /// Instructions the translation may retire before it must return
    /// (the next deadline, minus one): checked at every back edge of a
    /// region (for the target block's reach, `translate::RegionBlock`)
    /// and before every chained entry.
    pub budget: u64,
    /// The interpreter's code-write cursor, for `Ctx::code_seq`.
    pub code_seq: u64,
    /// `Machine::clock.icount` when the translation was entered: the
    /// translation counts what it retires from here.
    pub icount_base: u64,
    /// The lazy flag record a translation left at a plain exit, for the
    /// next one to start from (kind, operands, result, carried CF; see
    /// `translate::lazy_kind`): while `rec[0]` is not `LAZY_NONE`,
    /// CpuState's EFLAGS has exact control bits but stale status bits,
    /// and [`Frame::settle_flags`] makes them exact. A translation clears
    /// `rec[0]` when it takes the record at its entry.
    pub rec: [u32; 5],
    /// Written by helpers when the block must end abnormally.
    pub end: BlockEnd,
    /// For chaining in generated code (see `translate::Translator::chain_block`):
    /// the instruction count before which the engine's loop must stop
    /// (the budget's end plus one),
    pub stop_at: u64,
    /// the interpreter's blocks generation (constant while translations
    /// run: blocks are only dropped between runs),
    pub blocks_generation: u64,
    /// the TLB's generation counter (the chain epoch is the sum of the
    /// two, as in [`LinkSlot::epoch`]),
    pub tlb_generation: *const u64,
    /// and the translations entered from another one's exit.
    pub chained: u64,
    /// The indirect-branch table ([`INDIRECT_SLOTS`] link slots, by a
    /// hash of the target EIP): where a translation leaves to an EIP it
    /// computes (RET), it looks for the target here and goes on through
    /// the slot like through a fixed exit's.
    pub indirect: *mut LinkSlot,
}

/// The size of the indirect-branch table (a power of two).
pub const INDIRECT_SLOTS: usize = 1024;

pub const FRAME_CPU: i32 = offset_of!(Frame, cpu) as i32;
pub const FRAME_TLB: i32 = offset_of!(Frame, tlb) as i32;
pub const FRAME_ICOUNT: i32 = offset_of!(Frame, icount) as i32;
pub const FRAME_PENDING: i32 = offset_of!(Frame, pending) as i32;
pub const FRAME_BUDGET: i32 = offset_of!(Frame, budget) as i32;
pub const FRAME_ICOUNT_BASE: i32 = offset_of!(Frame, icount_base) as i32;
pub const FRAME_REC: i32 = offset_of!(Frame, rec) as i32;
pub const FRAME_EVENT_DELIVERED: i32 =
    (offset_of!(Frame, end) + offset_of!(BlockEnd, event_delivered)) as i32;
pub const FRAME_STOP_AT: i32 = offset_of!(Frame, stop_at) as i32;
pub const FRAME_BLOCKS_GENERATION: i32 = offset_of!(Frame, blocks_generation) as i32;
pub const FRAME_TLB_GENERATION: i32 = offset_of!(Frame, tlb_generation) as i32;
pub const FRAME_CHAINED: i32 = offset_of!(Frame, chained) as i32;
pub const FRAME_INDIRECT: i32 = offset_of!(Frame, indirect) as i32;
pub const SLOT_TARGET: i32 = offset_of!(LinkSlot, target) as i32;
pub const SLOT_MODE: i32 = offset_of!(LinkSlot, mode) as i32;
pub const SLOT_SIZE: i64 = std::mem::size_of::<LinkSlot>() as i64;
pub const SLOT_ENTRY: i32 = offset_of!(LinkSlot, entry) as i32;
pub const SLOT_EPOCH: i32 = offset_of!(LinkSlot, epoch) as i32;
pub const SLOT_LEN: i32 = offset_of!(LinkSlot, len) as i32;

impl Frame {
    /// Apply the record a translation left (if any) to CpuState's EFLAGS:
    /// before anything but a translation looks at the state again.
    pub fn settle_flags(&mut self) {
        let [kind, a, b, r, cf] = self.rec;
        if kind == crate::translate::LAZY_NONE {
            return;
        }
        // SAFETY: `cpu` is the running machine's CpuState; no translation
        // runs while the engine settles.
        let cpu = unsafe { &mut *self.cpu };
        let f = (cpu.eflags & !ringside_core::cpu::flags::CF) | cf;
        cpu.eflags = lazy_flags(kind | crate::translate::LAZY_KEEP_CF, a, b, r, f);
        self.rec[0] = crate::translate::LAZY_NONE;
    }
}

/// What a helper returns to generated code.
pub const CONTINUE: u32 = 0;
/// Leave the block: the state is in `CpuState` (EIP, instruction count)
/// and anything abnormal in `Frame::end`.
pub const LEAVE: u32 = 1;

/// How the engine runs a translation: a function in the C convention
/// that calls the translation at `entry` (in the `tail` convention) with
/// the frame and returns what it returns: null to go back to the
/// interpreter's loop, or, after a plain exit to a fixed EIP, that exit's
/// [`LinkSlot`], through which the engine may go straight on to the
/// translation of the next block (see `tier::Recompiler::enter`). A
/// translation itself goes on through a filled slot with a tail call
/// while nothing stands in the way, so the trampoline returns only where
/// a chain ends.
pub type Trampoline = unsafe extern "C" fn(*mut Frame, usize) -> *const LinkSlot;

/// One exit of a translation to a fixed EIP, and what it was last seen to
/// lead to. Filled by the engine when the block the interpreter's loop
/// runs after the exit has a translation for the same mode; valid while
/// `epoch` is the current chain epoch. (Generated code writes only the
/// slots of the indirect-branch table, `Frame::indirect`, and only to
/// claim one empty for a new target: the engine fills it.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkSlot {
    /// The next translation's entry, or 0.
    pub entry: usize,
    /// The chain epoch (interpreter blocks generation + TLB generation)
    /// when it was filled.
    pub epoch: u64,
    /// The next translation's reach (`exec::Translation::reach`): it is
    /// entered only while that many instructions fit in the budget.
    pub len: u32,
    /// The EIP the exit goes to.
    pub target: u32,
    /// The mode (`Mode::bits`) of the translation the exit belongs to.
    pub mode: u32,
}

/// Run instruction `d` through the interpreter's handler,
/// exactly as the interpreter's own block loop would (`exec::run_block`):
/// the slow path of every translated instruction (a TLB miss, a segment
/// that needs the full check, a misaligned user access, MMIO, a store to
/// a code page) and the whole of every instruction the recompiler does not
/// translate. Generated code has stored its registers and flags, EIP (the
/// instruction's own) and the instruction count before the call, and
/// reloads them after.
///
/// # Safety
/// `frame` must be the frame of a running translation, `d` one of the
/// decoded instructions its generation keeps, and nothing else may hold a
/// reference to the machine.
pub unsafe extern "C" fn interpret_one(frame: *mut Frame, d: *const Decoded) -> u32 {
    // SAFETY: the caller's contract: a live frame, a live instruction, and
    // the machine reachable only through the frame while the translation
    // runs.
    let (f, d) = unsafe { (&mut *frame, &*d) };
    // SAFETY: as above.
    let m = unsafe { &mut *f.machine };
    let mut c = Ctx {
        m,
        next_eip: d.next_eip,
        end_block: false,
        exit: None,
        event_delivered: false,
        not_retired: false,
        code_seq: f.code_seq,
    };
    if let Err(fault) = (d.exec)(&mut c, d) {
        f.end.fault = Some(fault);
        return LEAVE;
    }
    let Ctx {
        m,
        next_eip,
        end_block,
        exit,
        not_retired,
        event_delivered,
        ..
    } = c;
    f.end.event_delivered = event_delivered;
    m.cpu.eip = next_eip;
    if not_retired {
        f.end.not_retired = true;
        f.end.exit = exit;
        return LEAVE;
    }
    m.clock.icount += 1;
    if exit.is_some() {
        f.end.exit = exit;
        return LEAVE;
    }
    if m.pending().get() != 0 || end_block || next_eip != d.next_eip {
        return LEAVE;
    }
    CONTINUE
}

/// EFLAGS with a dynamic flag record applied: `kind` is
/// `translate::lazy_kind(op, bits)` (or `LAZY_NONE`; with `LAZY_KEEP_CF`
/// the record leaves CF alone, as INC and DEC do), `a`, `b`, `r` the
/// operands and result masked to `bits`. The same rules as the
/// interpreter's (`operand::add_flags`, `sub_flags`, `szp`), which it
/// calls.
pub extern "C" fn lazy_flags(kind: u32, a: u32, b: u32, r: u32, eflags: u32) -> u32 {
    use crate::translate::{LAZY_ADD, LAZY_CO, LAZY_KEEP_CF, LAZY_LOGIC, LAZY_SUB};
    use ringside_core::cpu::flags::{CF, STATUS};
    use ringside_interp::operand::{add_flags, sub_flags, szp, W16, W32, W8};
    let op = kind & 0xFF;
    let bits = (kind >> 8) & 0xFF;
    let f = match (op, bits) {
        (LAZY_ADD, 8) => add_flags::<W8>(a, b, 0).1,
        (LAZY_ADD, 16) => add_flags::<W16>(a, b, 0).1,
        (LAZY_ADD, _) => add_flags::<W32>(a, b, 0).1,
        (LAZY_SUB, 8) => sub_flags::<W8>(a, b, 0).1,
        (LAZY_SUB, 16) => sub_flags::<W16>(a, b, 0).1,
        (LAZY_SUB, _) => sub_flags::<W32>(a, b, 0).1,
        (LAZY_LOGIC, 8) => szp::<W8>(r),
        (LAZY_LOGIC, 16) => szp::<W16>(r),
        (LAZY_LOGIC, _) => szp::<W32>(r),
        (LAZY_CO, 8) => szp::<W8>(r) | (a & 1) | (b & 1) << 11,
        (LAZY_CO, 16) => szp::<W16>(r) | (a & 1) | (b & 1) << 11,
        (LAZY_CO, _) => szp::<W32>(r) | (a & 1) | (b & 1) << 11,
        _ => return eflags,
    };
    if kind & LAZY_KEEP_CF != 0 {
        return (eflags & !(STATUS & !CF)) | (f & !CF);
    }
    (eflags & !STATUS) | f
}
