//! Data transfer and conversion (SDM Vol. 1 7.3.1): MOV, MOVZX, MOVSX,
//! XCHG, CMOVcc, LEA, BSWAP, CBW/CWDE, CWD/CDQ, XLAT, LAHF, SAHF, SALC and
//! the NOPs.

use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind};
use ringside_core::cpu::flags::{CF, OF, PF, SF, ZF};
use ringside_core::cpu::{reg, CpuResult};

use crate::exec::{Ctx, Decoded, Handler, Operand};
use crate::operand::*;
use crate::table::{op_bits, w};

/// Evaluate a condition code against EFLAGS (SDM Vol. 1 appendix B).
#[inline(always)]
pub fn condition(f: u32, cc: ConditionCode) -> bool {
    condition_number(f, cc as u8)
}

/// [`condition`] by the condition's number (`ConditionCode as u8`), so
/// that handlers specialised for one condition at compile time test it
/// with no table (`control::jcc`).
#[inline(always)]
pub fn condition_number(f: u32, cc: u8) -> bool {
    const O: u8 = ConditionCode::o as u8;
    const NO: u8 = ConditionCode::no as u8;
    const B: u8 = ConditionCode::b as u8;
    const AE: u8 = ConditionCode::ae as u8;
    const E: u8 = ConditionCode::e as u8;
    const NE: u8 = ConditionCode::ne as u8;
    const BE: u8 = ConditionCode::be as u8;
    const A: u8 = ConditionCode::a as u8;
    const S: u8 = ConditionCode::s as u8;
    const NS: u8 = ConditionCode::ns as u8;
    const P: u8 = ConditionCode::p as u8;
    const NP: u8 = ConditionCode::np as u8;
    const L: u8 = ConditionCode::l as u8;
    const GE: u8 = ConditionCode::ge as u8;
    const LE: u8 = ConditionCode::le as u8;
    const G: u8 = ConditionCode::g as u8;
    let cf = f & CF != 0;
    let zf = f & ZF != 0;
    let sf = f & SF != 0;
    let of = f & OF != 0;
    let pf = f & PF != 0;
    match cc {
        O => of,
        NO => !of,
        B => cf,
        AE => !cf,
        E => zf,
        NE => !zf,
        BE => cf || zf,
        A => !cf && !zf,
        S => sf,
        NS => !sf,
        P => pf,
        NP => !pf,
        L => sf != of,
        GE => sf == of,
        LE => zf || sf != of,
        G => !zf && sf == of,
        _ => true,
    }
}

fn mov<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<W>(c, d, 1)?;
    write_op::<W>(c, d, 0, v)
}

/// MOV between registers.
fn mov_reg_reg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = W::reg_n(&c.m.cpu, d.regs[1]);
    W::set_reg_n(&mut c.m.cpu, d.regs[0], v);
    Ok(())
}

/// MOV of an immediate to a register.
fn mov_reg_imm<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    W::set_reg_n(&mut c.m.cpu, d.regs[0], d.imm & W::MASK);
    Ok(())
}

/// MOV from memory to a register.
fn mov_reg_mem<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let off = ea(&c.m.cpu, d);
    let v = W::read(c.m, mem_seg(d), off)?;
    W::set_reg_n(&mut c.m.cpu, d.regs[0], v);
    Ok(())
}

/// MOV from a register to memory.
fn mov_mem_reg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let off = ea(&c.m.cpu, d);
    let v = W::reg_n(&c.m.cpu, d.regs[1]);
    W::write(c.m, mem_seg(d), off, v)
}

/// MOVZX/MOVSX: source width `S` (8 or 16), destination width `D` (16 or
/// 32), the destination register resolved at decode time.
fn movx<S: Width, D: Width, const SIGNED: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<S>(c, d, 1)?;
    let v = if SIGNED { S::sext(v) } else { v };
    D::set_reg_n(&mut c.m.cpu, d.regs[0], v);
    Ok(())
}

fn xchg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    // Put the register operand second so the memory one (if any) is op 0.
    let (mem_first, reg_op) = if d.i.op1_kind() == OpKind::Register {
        (0, 1)
    } else {
        (1, 0)
    };
    let r = d.i.op_register(reg_op);
    let rv = W::reg(&c.m.cpu, r);
    if d.i.op_kind(mem_first) == OpKind::Register {
        let r0 = d.i.op_register(mem_first);
        let v0 = W::reg(&c.m.cpu, r0);
        W::set_reg(&mut c.m.cpu, r0, rv);
        W::set_reg(&mut c.m.cpu, r, v0);
        return Ok(());
    }
    let (dest, mv) = rmw_begin::<W>(c, d)?;
    rmw_end::<W>(c, dest, rv)?;
    W::set_reg(&mut c.m.cpu, r, mv);
    Ok(())
}

/// CMOVcc: the source is read (and may fault) even when the condition is
/// false; a 32-bit destination is then left unchanged on P6.
fn cmov<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<W>(c, d, 1)?;
    if condition(c.m.cpu.eflags, d.i.condition_code()) {
        W::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
    }
    Ok(())
}

fn lea<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let a = ea(&c.m.cpu, d);
    W::set_reg(&mut c.m.cpu, d.i.op0_register(), a);
    Ok(())
}

/// BSWAP r32. With a 16-bit operand the result is undefined; P6-class CPUs
/// clear the low word, which is what ringside does.
fn bswap(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let r = d.i.op0_register();
    if r.size() == 2 {
        W16::set_reg(&mut c.m.cpu, r, 0);
    } else {
        let v = W32::reg(&c.m.cpu, r);
        W32::set_reg(&mut c.m.cpu, r, v.swap_bytes());
    }
    Ok(())
}

fn cbw(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = c.m.cpu.gpr[reg::EAX] as u8 as i8 as u16;
    c.m.cpu.set_reg16(reg::EAX, v);
    Ok(())
}

fn cwde(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.cpu.gpr[reg::EAX] = c.m.cpu.gpr[reg::EAX] as u16 as i16 as i32 as u32;
    Ok(())
}

fn cwd(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = if c.m.cpu.gpr[reg::EAX] & 0x8000 != 0 {
        0xFFFF
    } else {
        0
    };
    c.m.cpu.set_reg16(reg::EDX, v);
    Ok(())
}

fn cdq(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.cpu.gpr[reg::EDX] = ((c.m.cpu.gpr[reg::EAX] as i32) >> 31) as u32;
    Ok(())
}

/// XLAT: AL <- [seg:(E)BX + AL].
fn xlat(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let al = c.m.cpu.gpr[reg::EAX] & 0xFF;
    let bx = if d.a16 {
        c.m.cpu.gpr[reg::EBX] & 0xFFFF
    } else {
        c.m.cpu.gpr[reg::EBX]
    };
    let off = bx.wrapping_add(al);
    let off = if d.a16 { off & 0xFFFF } else { off };
    let v = c.m.read_seg::<u8>(mem_seg(d), off)?;
    c.m.cpu.set_reg8(0, v);
    Ok(())
}

/// LAHF: AH <- SF:ZF:0:AF:0:PF:1:CF.
fn lahf(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let f = (c.m.cpu.eflags & 0xD5) | 2;
    c.m.cpu.set_reg8(4, f as u8);
    Ok(())
}

fn sahf(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let ah = c.m.cpu.reg8(4) as u32;
    set_flags(&mut c.m.cpu, 0xD5, ah);
    Ok(())
}

/// SALC (undocumented, D6): AL <- CF ? FF : 00.
fn salc(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = if c.m.cpu.eflags & CF != 0 { 0xFF } else { 0 };
    c.m.cpu.set_reg8(0, v);
    Ok(())
}

fn nop(_c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = op_bits(i, 0);
    Some(match i.mnemonic() {
        Mnemonic::Mov => {
            let sreg = (0..i.op_count()).any(|n| {
                i.op_kind(n) == OpKind::Register && i.op_register(n).is_segment_register()
            });
            let sysreg = (0..i.op_count()).any(|n| {
                i.op_kind(n) == OpKind::Register
                    && (i.op_register(n).is_cr()
                        || i.op_register(n).is_dr()
                        || i.op_register(n).is_tr())
            });
            if sreg || sysreg {
                return None;
            }
            match (Operand::of(i, 0), Operand::of(i, 1)) {
                (Operand::Gpr(_), Operand::Gpr(_)) => w!(bits, mov_reg_reg),
                (Operand::Gpr(_), Operand::Immediate) => w!(bits, mov_reg_imm),
                (Operand::Gpr(_), Operand::Memory) => w!(bits, mov_reg_mem),
                (Operand::Memory, Operand::Gpr(_)) => w!(bits, mov_mem_reg),
                _ => w!(bits, mov),
            }
        }
        Mnemonic::Movzx | Mnemonic::Movsx => {
            let signed = i.mnemonic() == Mnemonic::Movsx;
            match (op_bits(i, 1), bits, signed) {
                (8, 16, false) => movx::<W8, W16, false>,
                (8, _, false) => movx::<W8, W32, false>,
                (_, 16, false) => movx::<W16, W16, false>,
                (_, _, false) => movx::<W16, W32, false>,
                (8, 16, true) => movx::<W8, W16, true>,
                (8, _, true) => movx::<W8, W32, true>,
                (_, 16, true) => movx::<W16, W16, true>,
                (_, _, true) => movx::<W16, W32, true>,
            }
        }
        Mnemonic::Xchg => w!(bits, xchg),
        Mnemonic::Cmovo
        | Mnemonic::Cmovno
        | Mnemonic::Cmovb
        | Mnemonic::Cmovae
        | Mnemonic::Cmove
        | Mnemonic::Cmovne
        | Mnemonic::Cmovbe
        | Mnemonic::Cmova
        | Mnemonic::Cmovs
        | Mnemonic::Cmovns
        | Mnemonic::Cmovp
        | Mnemonic::Cmovnp
        | Mnemonic::Cmovl
        | Mnemonic::Cmovge
        | Mnemonic::Cmovle
        | Mnemonic::Cmovg => w!(bits, cmov),
        Mnemonic::Lea => w!(bits, lea),
        Mnemonic::Bswap => bswap,
        Mnemonic::Cbw => cbw,
        Mnemonic::Cwde => cwde,
        Mnemonic::Cwd => cwd,
        Mnemonic::Cdq => cdq,
        Mnemonic::Xlatb => xlat,
        Mnemonic::Lahf => lahf,
        Mnemonic::Sahf => sahf,
        Mnemonic::Salc => salc,
        Mnemonic::Nop | Mnemonic::Pause => nop,
        _ => return None,
    })
}
