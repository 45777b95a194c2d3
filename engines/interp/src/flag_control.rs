//! Flag control (SDM Vol. 1 3.4.3): PUSHF/POPF, CLI/STI, and CLC, STC,
//! CMC, CLD and STD. The privilege rules of PUSHF, POPF, CLI and STI are
//! core's (`ringside_core::cpu::flag_control`).

use iced_x86::{Instruction, Mnemonic};
use ringside_core::cpu::flags::{CF, DF};
use ringside_core::cpu::CpuResult;

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::table::operand_size;

fn pushf<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.push_flags(operand_size::<W>())
}

fn popf<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.pop_flags(operand_size::<W>())
}

fn cli(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.clear_interrupt_flag()
}

fn sti(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.set_interrupt_flag()
}

/// CLC/STC/CMC and CLD/STD: clear (0), set (1) or complement (2) one flag.
fn flag_op<const BIT: u32, const OP: u8>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    match OP {
        0 => c.m.cpu.eflags &= !BIT,
        1 => c.m.cpu.eflags |= BIT,
        _ => c.m.cpu.eflags ^= BIT,
    }
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Pushf => pushf::<W16>,
        Mnemonic::Pushfd => pushf::<W32>,
        Mnemonic::Popf => popf::<W16>,
        Mnemonic::Popfd => popf::<W32>,
        Mnemonic::Cli => cli,
        Mnemonic::Sti => sti,
        Mnemonic::Clc => flag_op::<CF, 0>,
        Mnemonic::Stc => flag_op::<CF, 1>,
        Mnemonic::Cmc => flag_op::<CF, 2>,
        Mnemonic::Cld => flag_op::<DF, 0>,
        Mnemonic::Std => flag_op::<DF, 1>,
        _ => return None,
    })
}
