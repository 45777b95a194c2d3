//! Stack instructions (SDM Vol. 1 6.2-6.5): PUSH, POP, PUSHA, POPA, ENTER,
//! LEAVE. Segment-register pushes and pops live in `segment`, PUSHF/POPF in
//! `flag_control` (they touch IF and IOPL).

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::{reg, CpuResult, SegReg};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::table::{op_bits, w};

/// Pop a value of width W from the stack (ESP is committed).
#[inline(always)]
pub fn pop<W: Width>(c: &mut Ctx) -> CpuResult<u32> {
    let v = c.m.stack_read(0, W::BYTES)?;
    c.m.adjust_sp(W::BYTES);
    Ok(v)
}

/// Push a value of width W (nothing is committed if the write faults).
#[inline(always)]
pub fn push<W: Width>(c: &mut Ctx, v: u32) -> CpuResult<()> {
    c.m.push(v, W::BYTES)
}

fn push_op<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    // PUSH ESP pushes the value ESP had before the instruction.
    let v = read_op::<W>(c, d, 0)?;
    push::<W>(c, v)
}

/// POP r/m. A memory destination addressed through ESP uses the
/// incremented ESP (SDM Vol. 2B POP); a fault leaves ESP as it was.
fn pop_op<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = c.m.stack_read(0, W::BYTES)?;
    if d.i.op0_kind() == OpKind::Register {
        c.m.adjust_sp(W::BYTES);
        W::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
        return Ok(());
    }
    let old_esp = c.m.cpu.gpr[reg::ESP];
    c.m.adjust_sp(W::BYTES);
    let off = ea(&c.m.cpu, d);
    if let Err(f) = W::write(c.m, mem_seg(d), off, v) {
        c.m.cpu.gpr[reg::ESP] = old_esp;
        return Err(f);
    }
    Ok(())
}

/// Addresses of `n` consecutive stack slots below SP, checked for writing.
fn check_push_room<W: Width>(c: &mut Ctx, n: u32) -> CpuResult<()> {
    let sp = c.m.stack_pointer();
    for k in 1..=n {
        let mut a = sp.wrapping_sub(k * W::BYTES);
        if !c.m.cpu.stack32() {
            a &= 0xFFFF;
        }
        c.m.probe_seg_write(SegReg::Ss, a, W::BYTES)?;
    }
    Ok(())
}

fn pusha<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    check_push_room::<W>(c, 8)?;
    let sp = W::reg_n(&c.m.cpu, reg::ESP);
    for r in 0..8 {
        let v = if r == reg::ESP {
            sp
        } else {
            W::reg_n(&c.m.cpu, r)
        };
        push::<W>(c, v)?;
    }
    Ok(())
}

fn popa<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let mut vals = [0u32; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = c.m.stack_read(k as u32 * W::BYTES, W::BYTES)?;
    }
    // Popped in the order EDI, ESI, EBP, (ESP skipped), EBX, EDX, ECX, EAX.
    for (k, v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != reg::ESP {
            W::set_reg_n(&mut c.m.cpu, r, *v);
        }
    }
    c.m.adjust_sp(8 * W::BYTES);
    Ok(())
}

/// ENTER imm16, imm8 (SDM Vol. 2A ENTER): a fault restores ESP and EBP.
fn enter<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let alloc = d.i.immediate16() as u32;
    let level = (d.i.immediate8_2nd() as u32) % 32;
    let (old_esp, old_ebp) = (c.m.cpu.gpr[reg::ESP], c.m.cpu.gpr[reg::EBP]);
    let r = enter_frame::<W>(c, alloc, level);
    if r.is_err() {
        c.m.cpu.gpr[reg::ESP] = old_esp;
        c.m.cpu.gpr[reg::EBP] = old_ebp;
    }
    r
}

fn enter_frame<W: Width>(c: &mut Ctx, alloc: u32, level: u32) -> CpuResult<()> {
    let ebp = W::reg_n(&c.m.cpu, reg::EBP);
    push::<W>(c, ebp)?;
    let frame = c.m.stack_pointer();
    let big = c.m.cpu.stack32();
    if level > 0 {
        let mut bp = if big {
            c.m.cpu.gpr[reg::EBP]
        } else {
            c.m.cpu.gpr[reg::EBP] & 0xFFFF
        };
        for _ in 1..level {
            bp = bp.wrapping_sub(W::BYTES);
            if !big {
                bp &= 0xFFFF;
            }
            let v = W::read(c.m, SegReg::Ss, bp)?;
            push::<W>(c, v)?;
        }
        push::<W>(c, frame)?;
    }
    // The last stack slot the frame allocates must be writable.
    let new_sp = c.m.stack_pointer().wrapping_sub(alloc);
    let new_sp = if big { new_sp } else { new_sp & 0xFFFF };
    if alloc > 0 {
        c.m.probe_seg_write(SegReg::Ss, new_sp, 1)?;
    }
    W::set_reg_n(&mut c.m.cpu, reg::EBP, frame);
    c.m.set_sp(new_sp);
    Ok(())
}

/// LEAVE: ESP <- EBP, then pop EBP.
fn leave<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let bp = if c.m.cpu.stack32() {
        c.m.cpu.gpr[reg::EBP]
    } else {
        c.m.cpu.gpr[reg::EBP] & 0xFFFF
    };
    let v = W::read(c.m, SegReg::Ss, bp)?;
    c.m.set_sp(bp.wrapping_add(W::BYTES));
    if !c.m.cpu.stack32() {
        let sp = c.m.stack_pointer() & 0xFFFF;
        c.m.set_sp(sp);
    }
    W::set_reg_n(&mut c.m.cpu, reg::EBP, v);
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let seg_operand = i.op_count() == 1
        && i.op0_kind() == OpKind::Register
        && i.op0_register().is_segment_register();
    if seg_operand {
        return None;
    }
    let bits = op_bits(i, 0);
    let osize = match i.code().op_code().operand_size() {
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
    Some(match i.mnemonic() {
        Mnemonic::Push => w!(bits, push_op),
        Mnemonic::Pop => w!(bits, pop_op),
        Mnemonic::Pusha => pusha::<W16>,
        Mnemonic::Pushad => pusha::<W32>,
        Mnemonic::Popa => popa::<W16>,
        Mnemonic::Popad => popa::<W32>,
        Mnemonic::Enter => w!(osize, enter),
        Mnemonic::Leave => w!(osize, leave),
        _ => return None,
    })
}
