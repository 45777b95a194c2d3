//! From a decoded instruction to the function that executes it. Each
//! instruction family's module maps its own mnemonics; anything no module
//! claims is not an instruction of a P6-class integer CPU without x87, MMX
//! or SSE, and raises #UD, as such a CPU does.

use iced_x86::{Instruction, OpKind};
use ringside_core::cpu::{CpuResult, Fault, OperandSize};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::Width;

/// Instantiate a handler generic over the operand width for `bits`.
macro_rules! w {
    ($bits:expr, $f:ident) => {
        match $bits {
            8 => $f::<$crate::operand::W8> as $crate::exec::Handler,
            16 => $f::<$crate::operand::W16> as $crate::exec::Handler,
            _ => $f::<$crate::operand::W32> as $crate::exec::Handler,
        }
    };
    ($bits:expr, $f:ident, $k:expr) => {
        match $bits {
            8 => $f::<$crate::operand::W8, $k> as $crate::exec::Handler,
            16 => $f::<$crate::operand::W16, $k> as $crate::exec::Handler,
            _ => $f::<$crate::operand::W32, $k> as $crate::exec::Handler,
        }
    };
}
pub(crate) use w;

/// Core's name for the operand width `W` of a 16- or 32-bit handler.
pub fn operand_size<W: Width>() -> OperandSize {
    OperandSize::from_bits32(W::BITS == 32)
}

/// The width in bits of operand `n`: a register's size or the memory
/// operand's size.
pub fn op_bits(i: &Instruction, n: u32) -> u32 {
    if n >= i.op_count() {
        return 32;
    }
    match i.op_kind(n) {
        OpKind::Register => i.op_register(n).size() as u32 * 8,
        OpKind::Immediate8 => 8,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 16,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 32,
        _ => match i.memory_size().size() {
            1 => 8,
            2 => 16,
            _ => 32,
        },
    }
}

/// The handler for `i`, and whether the block must end after it.
pub fn handler_for(i: &Instruction) -> (Handler, bool) {
    if i.is_invalid() {
        return (invalid_opcode, true);
    }
    // Instructions that change state decoding or the fast path depend on
    // (mode, privilege, IF, paging): the block ends after them.
    let system = crate::processor_control::lookup(i)
        .or_else(|| crate::control_registers::lookup(i))
        .or_else(|| crate::descriptor_tables::lookup(i))
        .or_else(|| crate::msr::lookup(i))
        .or_else(|| crate::fast_system_call::lookup(i))
        .or_else(|| crate::flag_control::lookup(i));
    if let Some(h) = system {
        return (h, true);
    }
    if let Some(h) = crate::control::lookup(i) {
        return (h, true);
    }
    if let Some(h) = crate::io::lookup(i) {
        return (h, true);
    }
    let h = crate::arith::lookup(i)
        .or_else(|| crate::data::lookup(i))
        .or_else(|| crate::shift::lookup(i))
        .or_else(|| crate::bit::lookup(i))
        .or_else(|| crate::bcd::lookup(i))
        .or_else(|| crate::stack::lookup(i))
        .or_else(|| crate::string::lookup(i));
    match h {
        Some(h) => (h, false),
        None => match crate::segment::lookup(i) {
            Some(h) => (h, true),
            None => (invalid_opcode, true),
        },
    }
}

/// #UD: not an instruction of this CPU.
pub fn invalid_opcode(_c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    Err(Fault::ud())
}
