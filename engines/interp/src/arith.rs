//! Binary arithmetic and logic (SDM Vol. 1 7.3.2, 7.3.3): ADD, ADC, SUB,
//! SBB, CMP, AND, OR, XOR, TEST, INC, DEC, NEG, NOT, MUL, IMUL, DIV, IDIV,
//! and the 486/Pentium exchange-and-compare family CMPXCHG, XADD, CMPXCHG8B.

use iced_x86::{Mnemonic, OpKind};
use ringside_core::cpu::flags::{CF, OF, ZF};
use ringside_core::cpu::{reg, CpuResult, Fault};

use crate::exec::{Ctx, Decoded, Handler, Operand};
use crate::operand::*;
use crate::table::{op_bits, w};

const ADD: u8 = 0;
const OR: u8 = 1;
const ADC: u8 = 2;
const SBB: u8 = 3;
const AND: u8 = 4;
const SUB: u8 = 5;
const XOR: u8 = 6;
const CMP: u8 = 7;
const TEST: u8 = 8;

/// Compute `a OP b`, returning the result and the new status flags.
#[inline(always)]
fn alu<W: Width, const OP: u8>(cpu_flags: u32, a: u32, b: u32) -> (u32, u32) {
    match OP {
        ADD => add_flags::<W>(a, b, 0),
        ADC => add_flags::<W>(a, b, cpu_flags & CF),
        SUB | CMP => sub_flags::<W>(a, b, 0),
        SBB => sub_flags::<W>(a, b, cpu_flags & CF),
        AND | TEST => {
            let r = a & b;
            (r, szp::<W>(r))
        }
        OR => {
            let r = a | b;
            (r, szp::<W>(r))
        }
        _ => {
            let r = a ^ b;
            (r, szp::<W>(r))
        }
    }
}

/// `OP dst, src` where dst is a register or memory, src anything.
fn alu_rm<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if OP == CMP || OP == TEST {
        let a = read_op::<W>(c, d, 0)?;
        let b = read_op::<W>(c, d, 1)?;
        let (_, f) = alu::<W, OP>(c.m.cpu.eflags, a, b);
        set_status(&mut c.m.cpu, f);
        return Ok(());
    }
    if d.i.op0_kind() == OpKind::Register {
        let r = d.i.op0_register();
        let a = W::reg(&c.m.cpu, r);
        let b = read_op::<W>(c, d, 1)?;
        let (v, f) = alu::<W, OP>(c.m.cpu.eflags, a, b);
        W::set_reg(&mut c.m.cpu, r, v);
        set_status(&mut c.m.cpu, f);
        return Ok(());
    }
    let b = read_op::<W>(c, d, 1)?;
    let (dest, a) = rmw_begin::<W>(c, d)?;
    let (v, f) = alu::<W, OP>(c.m.cpu.eflags, a, b);
    rmw_end::<W>(c, dest, v)?;
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// `OP reg, reg`: both operands registers, resolved at decode time.
fn alu_reg_reg<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let cpu = &mut c.m.cpu;
    let a = W::reg_n(cpu, d.regs[0]);
    let b = W::reg_n(cpu, d.regs[1]);
    let (v, f) = alu::<W, OP>(cpu.eflags, a, b);
    if OP != CMP && OP != TEST {
        W::set_reg_n(cpu, d.regs[0], v);
    }
    set_status(cpu, f);
    Ok(())
}

/// `OP reg, imm`.
fn alu_reg_imm<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let cpu = &mut c.m.cpu;
    let a = W::reg_n(cpu, d.regs[0]);
    let (v, f) = alu::<W, OP>(cpu.eflags, a, d.imm & W::MASK);
    if OP != CMP && OP != TEST {
        W::set_reg_n(cpu, d.regs[0], v);
    }
    set_status(cpu, f);
    Ok(())
}

/// INC and DEC of a register (`DELTA` 1 or -1).
fn inc_dec_reg<W: Width, const DEC: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let cpu = &mut c.m.cpu;
    let a = W::reg_n(cpu, d.regs[0]);
    let (v, f) = if DEC {
        sub_flags::<W>(a, 1, 0)
    } else {
        add_flags::<W>(a, 1, 0)
    };
    W::set_reg_n(cpu, d.regs[0], v);
    set_flags(cpu, STATUS_NO_CF, f);
    Ok(())
}

fn inc<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (dest, a) = rmw_begin::<W>(c, d)?;
    let (v, f) = add_flags::<W>(a, 1, 0);
    rmw_end::<W>(c, dest, v)?;
    set_flags(&mut c.m.cpu, STATUS_NO_CF, f);
    Ok(())
}

fn dec<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (dest, a) = rmw_begin::<W>(c, d)?;
    let (v, f) = sub_flags::<W>(a, 1, 0);
    rmw_end::<W>(c, dest, v)?;
    set_flags(&mut c.m.cpu, STATUS_NO_CF, f);
    Ok(())
}

fn neg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (dest, a) = rmw_begin::<W>(c, d)?;
    let (v, f) = sub_flags::<W>(0, a, 0);
    rmw_end::<W>(c, dest, v)?;
    set_status(&mut c.m.cpu, f);
    Ok(())
}

fn not<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (dest, a) = rmw_begin::<W>(c, d)?;
    rmw_end::<W>(c, dest, !a & W::MASK)
}

/// MUL: unsigned AX <- AL*src, DX:AX <- AX*src, EDX:EAX <- EAX*src.
/// CF = OF = upper half non-zero; SF/ZF/PF from the low half as P6 sets them
/// (they are undefined, see core's flag table).
fn mul<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src = read_op::<W>(c, d, 0)? as u64;
    let a = W::reg_n(&c.m.cpu, reg::EAX) as u64;
    let p = a * src;
    let (lo, hi) = ((p as u32) & W::MASK, (p >> W::BITS) as u32 & W::MASK);
    store_wide::<W>(c, lo, hi);
    let mut f = szp::<W>(lo);
    if hi != 0 {
        f |= CF | OF;
    }
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// Store a double-width result: AX for bytes, DX:AX, EDX:EAX.
#[inline(always)]
fn store_wide<W: Width>(c: &mut Ctx, lo: u32, hi: u32) {
    if W::BITS == 8 {
        c.m.cpu.set_reg16(reg::EAX, (lo | (hi << 8)) as u16);
    } else {
        W::set_reg_n(&mut c.m.cpu, reg::EAX, lo);
        W::set_reg_n(&mut c.m.cpu, reg::EDX, hi);
    }
}

/// One-operand IMUL (signed, double-width result).
fn imul1<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src = W::sext(read_op::<W>(c, d, 0)?) as i32 as i64;
    let a = W::sext(W::reg_n(&c.m.cpu, reg::EAX)) as i32 as i64;
    let p = a * src;
    let lo = p as u32 & W::MASK;
    let hi = (p >> W::BITS) as u32 & W::MASK;
    store_wide::<W>(c, lo, hi);
    let mut f = szp::<W>(lo);
    if W::sext(lo) as i32 as i64 != p {
        f |= CF | OF;
    }
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// Two- and three-operand IMUL: dst <- src1 * src2, truncated.
fn imul_n<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (a, b) = if d.i.op_count() == 3 {
        (read_op::<W>(c, d, 1)?, d.imm & W::MASK)
    } else {
        (read_op::<W>(c, d, 0)?, read_op::<W>(c, d, 1)?)
    };
    let p = (W::sext(a) as i32 as i64) * (W::sext(b) as i32 as i64);
    let r = p as u32 & W::MASK;
    let mut f = szp::<W>(r);
    if W::sext(r) as i32 as i64 != p {
        f |= CF | OF;
    }
    W::set_reg(&mut c.m.cpu, d.i.op0_register(), r);
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// DIV: #DE on a zero divisor or a quotient too large (SDM Vol. 2A DIV).
fn div<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src = read_op::<W>(c, d, 0)? as u64;
    if src == 0 {
        return Err(Fault::de());
    }
    let dividend = if W::BITS == 8 {
        (c.m.cpu.gpr[reg::EAX] & 0xFFFF) as u64
    } else {
        ((W::reg_n(&c.m.cpu, reg::EDX) as u64) << W::BITS) | W::reg_n(&c.m.cpu, reg::EAX) as u64
    };
    let q = dividend / src;
    let r = dividend % src;
    if q > W::MASK as u64 {
        return Err(Fault::de());
    }
    store_quotient::<W>(c, q as u32, r as u32);
    Ok(())
}

#[inline(always)]
fn store_quotient<W: Width>(c: &mut Ctx, q: u32, r: u32) {
    if W::BITS == 8 {
        c.m.cpu
            .set_reg16(reg::EAX, ((q & 0xFF) | ((r & 0xFF) << 8)) as u16);
    } else {
        W::set_reg_n(&mut c.m.cpu, reg::EAX, q & W::MASK);
        W::set_reg_n(&mut c.m.cpu, reg::EDX, r & W::MASK);
    }
}

/// IDIV: signed; #DE when the quotient does not fit (SDM Vol. 2A IDIV).
fn idiv<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src = W::sext(read_op::<W>(c, d, 0)?) as i32 as i64;
    if src == 0 {
        return Err(Fault::de());
    }
    let dividend: i64 = if W::BITS == 8 {
        c.m.cpu.gpr[reg::EAX] as u16 as i16 as i64
    } else if W::BITS == 16 {
        (((c.m.cpu.gpr[reg::EDX] & 0xFFFF) << 16) | (c.m.cpu.gpr[reg::EAX] & 0xFFFF)) as i32 as i64
    } else {
        (((c.m.cpu.gpr[reg::EDX] as u64) << 32) | c.m.cpu.gpr[reg::EAX] as u64) as i64
    };
    let q = dividend.wrapping_div(src);
    let r = dividend.wrapping_rem(src);
    let max = (W::SIGN - 1) as i64;
    let min = -(W::SIGN as i64);
    if q > max || q < min || (dividend == i64::MIN && src == -1) {
        return Err(Fault::de());
    }
    store_quotient::<W>(c, q as u32, r as u32);
    Ok(())
}

/// CMPXCHG: compare the accumulator with dst; equal -> dst <- src, else
/// accumulator <- dst. The destination is always written (SDM Vol. 2A).
fn cmpxchg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src = W::reg(&c.m.cpu, d.i.op1_register());
    let (dest, cur) = rmw_begin::<W>(c, d)?;
    let acc = W::reg_n(&c.m.cpu, reg::EAX);
    let (_, f) = sub_flags::<W>(acc, cur, 0);
    if acc == cur {
        rmw_end::<W>(c, dest, src)?;
    } else {
        rmw_end::<W>(c, dest, cur)?;
        W::set_reg_n(&mut c.m.cpu, reg::EAX, cur);
    }
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// XADD: tmp <- src + dst; src <- dst; dst <- tmp.
fn xadd<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let src_reg = d.i.op1_register();
    let src = W::reg(&c.m.cpu, src_reg);
    let (dest, cur) = rmw_begin::<W>(c, d)?;
    let (sum, f) = add_flags::<W>(cur, src, 0);
    W::set_reg(&mut c.m.cpu, src_reg, cur);
    rmw_end::<W>(c, dest, sum)?;
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// CMPXCHG8B m64: compare EDX:EAX with m64; equal -> m64 <- ECX:EBX and
/// ZF = 1, else EDX:EAX <- m64 and ZF = 0. The register form is #UD.
fn cmpxchg8b(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if d.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let s = mem_seg(d);
    let off = ea(&c.m.cpu, d);
    c.m.probe_seg_write(s, off, 8)?;
    let cur = c.m.read_seg::<u64>(s, off)?;
    let cpu = &c.m.cpu;
    let expect = ((cpu.gpr[reg::EDX] as u64) << 32) | cpu.gpr[reg::EAX] as u64;
    if cur == expect {
        let new = ((cpu.gpr[reg::ECX] as u64) << 32) | cpu.gpr[reg::EBX] as u64;
        c.m.write_seg::<u64>(s, off, new)?;
        c.m.cpu.eflags |= ZF;
    } else {
        c.m.write_seg::<u64>(s, off, cur)?;
        c.m.cpu.gpr[reg::EAX] = cur as u32;
        c.m.cpu.gpr[reg::EDX] = (cur >> 32) as u32;
        c.m.cpu.eflags &= !ZF;
    }
    Ok(())
}

pub fn lookup(i: &iced_x86::Instruction) -> Option<Handler> {
    let bits = op_bits(i, 0);
    let shape = (Operand::of(i, 0), Operand::of(i, 1));
    // The register forms, the commonest, get handlers that read their
    // operands without looking at their shapes.
    macro_rules! alu {
        ($op:expr) => {
            match shape {
                (Operand::Gpr(_), Operand::Gpr(_)) => w!(bits, alu_reg_reg, $op),
                (Operand::Gpr(_), Operand::Immediate) => w!(bits, alu_reg_imm, $op),
                _ => w!(bits, alu_rm, $op),
            }
        };
    }
    let reg = matches!(shape.0, Operand::Gpr(_));
    Some(match i.mnemonic() {
        Mnemonic::Add => alu!(ADD),
        Mnemonic::Or => alu!(OR),
        Mnemonic::Adc => alu!(ADC),
        Mnemonic::Sbb => alu!(SBB),
        Mnemonic::And => alu!(AND),
        Mnemonic::Sub => alu!(SUB),
        Mnemonic::Xor => alu!(XOR),
        Mnemonic::Cmp => alu!(CMP),
        Mnemonic::Test => alu!(TEST),
        Mnemonic::Inc if reg => w!(bits, inc_dec_reg, false),
        Mnemonic::Dec if reg => w!(bits, inc_dec_reg, true),
        Mnemonic::Inc => w!(bits, inc),
        Mnemonic::Dec => w!(bits, dec),
        Mnemonic::Neg => w!(bits, neg),
        Mnemonic::Not => w!(bits, not),
        Mnemonic::Mul => w!(bits, mul),
        Mnemonic::Imul if i.op_count() == 1 => w!(bits, imul1),
        Mnemonic::Imul => w!(bits, imul_n),
        Mnemonic::Div => w!(bits, div),
        Mnemonic::Idiv => w!(bits, idiv),
        Mnemonic::Cmpxchg => w!(bits, cmpxchg),
        Mnemonic::Xadd => w!(bits, xadd),
        Mnemonic::Cmpxchg8b => cmpxchg8b,
        _ => return None,
    })
}
