//! Far control transfers: JMP/CALL ptr16:16/32 and m16:16/32, RET far and
//! IRET/IRETD. The architecture (gates, stack switches, task switches,
//! every IRET case) is core's `ringside_core::cpu::far_transfer` and
//! `ringside_core::cpu::iret`; these handlers read the operands, call it
//! and say where execution goes on.

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::far_transfer::Transfer;
use ringside_core::cpu::CpuResult;

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::table::operand_size;

/// The far pointer operand: immediate ptr16:16/32 or m16:16/32.
fn far_pointer<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<(u16, u32)> {
    match d.i.op0_kind() {
        OpKind::FarBranch16 => Ok((d.i.far_branch_selector(), d.i.far_branch16() as u32)),
        OpKind::FarBranch32 => Ok((d.i.far_branch_selector(), d.i.far_branch32())),
        _ => {
            let s = mem_seg(d);
            let off = ea(&c.m.cpu, d);
            let offset = W::read(c.m, s, off)?;
            let sel_off = off.wrapping_add(W::BYTES);
            let sel_off = if d.a16 { sel_off & 0xFFFF } else { sel_off };
            let sel = c.m.read_seg::<u16>(s, sel_off)?;
            Ok((sel, offset))
        }
    }
}

/// Continue where a transfer went. A task switch, like an event delivery,
/// takes no single-step trap after the instruction.
fn go(c: &mut Ctx, t: Transfer) {
    c.next_eip = t.eip;
    if t.task_switch {
        c.event_delivered = true;
    }
}

fn jmp_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (sel, offset) = far_pointer::<W>(c, d)?;
    let t = c.m.far_jump(sel, offset, operand_size::<W>(), c.next_eip)?;
    go(c, t);
    Ok(())
}

fn call_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (sel, offset) = far_pointer::<W>(c, d)?;
    let t = c.m.far_call(sel, offset, operand_size::<W>(), c.next_eip)?;
    go(c, t);
    Ok(())
}

/// RET far, and RET far imm16 (the bytes of parameters to release).
fn ret_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let release = if d.i.op_count() == 1 { d.imm } else { 0 };
    c.next_eip = c.m.far_return(operand_size::<W>(), release)?;
    Ok(())
}

fn iret<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let real_or_vm86 = !c.m.cpu.protected_mode() || c.m.cpu.vm86();
    let t = c.m.iret(operand_size::<W>(), c.next_eip)?;
    go(c, t);
    if real_or_vm86 {
        c.end_block = true;
    }
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = match i.code().op_code().operand_size() {
        16 => 16,
        32 => 32,
        _ => {
            if i.code_size() == iced_x86::CodeSize::Code32 {
                32
            } else {
                16
            }
        }
    };
    let bits = match i.op0_kind() {
        OpKind::FarBranch16 => 16,
        OpKind::FarBranch32 => 32,
        OpKind::Memory => match i.memory_size() {
            iced_x86::MemorySize::SegPtr16 => 16,
            iced_x86::MemorySize::SegPtr32 => 32,
            _ => bits,
        },
        _ => bits,
    };
    let pick = |f16: Handler, f32: Handler| if bits == 16 { f16 } else { f32 };
    Some(match i.mnemonic() {
        Mnemonic::Jmp => pick(jmp_far::<W16>, jmp_far::<W32>),
        Mnemonic::Call => pick(call_far::<W16>, call_far::<W32>),
        Mnemonic::Retf => pick(ret_far::<W16>, ret_far::<W32>),
        Mnemonic::Iret => iret::<W16>,
        Mnemonic::Iretd => iret::<W32>,
        _ => return None,
    })
}
