//! Control and debug registers (SDM Vol. 3A 2.5, 17.2): MOV to and from
//! CR0-CR4 and DR0-DR7, LMSW, SMSW, CLTS and INVLPG. The checks and the
//! TLB flushes are core's (`ringside_core::cpu::control_registers`,
//! `ringside_core::cpu::debug_registers`); these handlers move operands.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use ringside_core::cpu::{CpuResult, Fault};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;

/// n of CRn or DRn: iced numbers each set of registers consecutively.
fn index(r: Register, first: Register) -> u8 {
    (r as usize - first as usize) as u8
}

/// LMSW r/m16.
fn lmsw(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<W16>(c, d, 0)?;
    c.m.load_machine_status_word(v as u16)
}

/// SMSW: a 32-bit register destination gets all of CR0, memory its low
/// 16 bits. Not privileged.
fn smsw(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = c.m.cpu.cr0;
    if d.i.op0_kind() == OpKind::Register && d.i.op0_register().size() == 4 {
        W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
        Ok(())
    } else {
        write_op::<W16>(c, d, 0, v & 0xFFFF)
    }
}

fn clts(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.clear_task_switched()
}

fn mov_to_cr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = W32::reg(&c.m.cpu, d.i.op1_register());
    let n = index(d.i.op0_register(), Register::CR0);
    c.m.write_control_register(n, v)
}

fn mov_from_cr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = index(d.i.op1_register(), Register::CR0);
    let v = c.m.read_control_register(n)?;
    W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
    Ok(())
}

fn mov_to_dr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = index(d.i.op0_register(), Register::DR0);
    let v = W32::reg(&c.m.cpu, d.i.op1_register());
    c.m.write_debug_register(n, v)
}

fn mov_from_dr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = index(d.i.op1_register(), Register::DR0);
    let v = c.m.read_debug_register(n)?;
    W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
    Ok(())
}

/// INVLPG m: the page of the operand's linear address.
fn invlpg(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if d.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let s = mem_seg(d);
    let linear = c.m.cpu.seg[s as usize].base.wrapping_add(ea(&c.m.cpu, d));
    c.m.invalidate_tlb_entry(linear)
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let reg_op =
        |n: u32| (i.op_count() > n && i.op_kind(n) == OpKind::Register).then(|| i.op_register(n));
    Some(match i.mnemonic() {
        Mnemonic::Lmsw => lmsw,
        Mnemonic::Smsw => smsw,
        Mnemonic::Clts => clts,
        Mnemonic::Mov if reg_op(0).is_some_and(|r| r.is_cr()) => mov_to_cr,
        Mnemonic::Mov if reg_op(1).is_some_and(|r| r.is_cr()) => mov_from_cr,
        Mnemonic::Mov if reg_op(0).is_some_and(|r| r.is_dr()) => mov_to_dr,
        Mnemonic::Mov if reg_op(1).is_some_and(|r| r.is_dr()) => mov_from_dr,
        Mnemonic::Invlpg => invlpg,
        _ => return None,
    })
}
