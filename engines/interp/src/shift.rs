//! Shifts and rotates (SDM Vol. 1 7.3.5-7.3.6, Vol. 2B SAL/SAR/SHL/SHR,
//! RCL/RCR/ROL/ROR, SHLD, SHRD). Counts are masked to 5 bits as on every
//! CPU since the 286; a masked count of zero changes nothing, flags
//! included.

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::flags::{CF, OF};
use ringside_core::cpu::{reg, CpuResult};

use crate::exec::{Ctx, Decoded, Handler, Operand};
use crate::operand::*;
use crate::table::{op_bits, w};

const ROL: u8 = 0;
const ROR: u8 = 1;
const RCL: u8 = 2;
const RCR: u8 = 3;
const SHL: u8 = 4;
const SHR: u8 = 5;
const SAR: u8 = 7;

/// The count operand: 1, CL or an immediate.
#[inline(always)]
fn count(c: &Ctx, d: &Decoded) -> u32 {
    let n = match d.i.op1_kind() {
        OpKind::Register => c.m.cpu.gpr[reg::ECX] & 0xFF,
        _ => d.imm,
    };
    n & 0x1F
}

/// Shift or rotate `a` by a non-zero masked count; returns result and the
/// flags word to merge under `mask`.
#[inline(always)]
fn shift<W: Width, const OP: u8>(a: u32, n: u32, flags: u32) -> (u32, u32, u32) {
    let bits = W::BITS;
    let cf_in = flags & CF;
    match OP {
        ROL => {
            let k = n % bits;
            let r = if k == 0 {
                a
            } else {
                ((a << k) | (a >> (bits - k))) & W::MASK
            };
            let cf = r & 1;
            let of = ((r >> (bits - 1)) ^ cf) & 1;
            (r, cf | (of << 11), CF | OF)
        }
        ROR => {
            let k = n % bits;
            let r = if k == 0 {
                a
            } else {
                ((a >> k) | (a << (bits - k))) & W::MASK
            };
            let cf = (r >> (bits - 1)) & 1;
            let of = ((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1;
            (r, cf | (of << 11), CF | OF)
        }
        RCL => {
            let k = if bits == 32 { n } else { n % (bits + 1) };
            let mut r = a as u64 | ((cf_in as u64) << bits);
            let w = bits + 1;
            if k != 0 {
                r = ((r << k) | (r >> (w - k))) & ((1u64 << w) - 1);
            }
            let cf = ((r >> bits) & 1) as u32;
            let res = r as u32 & W::MASK;
            let of = ((res >> (bits - 1)) ^ cf) & 1;
            (res, cf | (of << 11), CF | OF)
        }
        RCR => {
            let k = if bits == 32 { n } else { n % (bits + 1) };
            let of = ((a >> (bits - 1)) ^ cf_in) & 1;
            let mut r = a as u64 | ((cf_in as u64) << bits);
            let w = bits + 1;
            if k != 0 {
                r = ((r >> k) | (r << (w - k))) & ((1u64 << w) - 1);
            }
            let cf = ((r >> bits) & 1) as u32;
            (r as u32 & W::MASK, cf | (of << 11), CF | OF)
        }
        SHL => {
            let wide = (a as u64) << n;
            let r = wide as u32 & W::MASK;
            let cf = ((wide >> bits) & 1) as u32;
            let of = ((r >> (bits - 1)) ^ cf) & 1;
            (r, szp::<W>(r) | cf | (of << 11), STATUS)
        }
        SHR => {
            let cf = if n > bits { 0 } else { (a >> (n - 1)) & 1 };
            let r = if n >= bits { 0 } else { a >> n };
            let of = (a >> (bits - 1)) & 1;
            (r, szp::<W>(r) | cf | (of << 11), STATUS)
        }
        _ => {
            let s = W::sext(a) as i32;
            let r = (s >> n.min(31)) as u32 & W::MASK;
            let cf = ((s >> (n - 1).min(31)) & 1) as u32;
            (r, szp::<W>(r) | cf, STATUS)
        }
    }
}

const STATUS: u32 = ringside_core::cpu::flags::STATUS;

fn shift_rm<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = count(c, d);
    let (dest, a) = rmw_begin::<W>(c, d)?;
    if n == 0 {
        // The operand is still accessed (and may fault) with a zero count.
        return rmw_end::<W>(c, dest, a);
    }
    let (r, f, mask) = shift::<W, OP>(a, n, c.m.cpu.eflags);
    rmw_end::<W>(c, dest, r)?;
    set_flags(&mut c.m.cpu, mask, f);
    Ok(())
}

/// A shift or rotate of a register by an immediate count, the commonest
/// form, with its operands resolved at decode time.
fn shift_reg_imm<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = d.imm & 0x1F;
    if n == 0 {
        return Ok(());
    }
    let cpu = &mut c.m.cpu;
    let a = W::reg_n(cpu, d.regs[0]);
    let (r, f, mask) = shift::<W, OP>(a, n, cpu.eflags);
    W::set_reg_n(cpu, d.regs[0], r);
    set_flags(cpu, mask, f);
    Ok(())
}

/// SHLD/SHRD dst, src, count (SDM Vol. 2B). Counts above the operand size
/// give undefined results; ringside shifts through the 32/64-bit
/// concatenation like P6 does.
fn double_shift<W: Width, const LEFT: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let n = match d.i.op2_kind() {
        OpKind::Register => c.m.cpu.gpr[reg::ECX] & 0x1F,
        _ => d.imm & 0x1F,
    };
    let src = W::reg(&c.m.cpu, d.i.op1_register());
    let (dest, a) = rmw_begin::<W>(c, d)?;
    if n == 0 {
        return rmw_end::<W>(c, dest, a);
    }
    let bits = W::BITS;
    let (r, cf) = if LEFT {
        let cat = ((a as u64) << bits) | src as u64;
        let cat = if bits == 16 {
            cat | ((a as u64) << 32)
        } else {
            cat
        };
        let shifted = cat << n;
        let r = (shifted >> bits) as u32 & W::MASK;
        let cf = ((cat >> (2 * bits - n).min(63)) & 1) as u32;
        let cf = if n <= bits { (a >> (bits - n)) & 1 } else { cf };
        (r, cf)
    } else {
        let cat = ((src as u64) << bits) | a as u64;
        let cat = if bits == 16 {
            cat | ((a as u64) << 32)
        } else {
            cat
        };
        let r = (cat >> n) as u32 & W::MASK;
        let cf = ((cat >> (n - 1)) & 1) as u32;
        (r, cf)
    };
    let of = ((r ^ a) >> (bits - 1)) & 1;
    rmw_end::<W>(c, dest, r)?;
    set_flags(&mut c.m.cpu, STATUS, szp::<W>(r) | cf | (of << 11));
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = op_bits(i, 0);
    let reg_imm = matches!(
        (Operand::of(i, 0), Operand::of(i, 1)),
        (Operand::Gpr(_), Operand::Immediate)
    );
    macro_rules! shift {
        ($op:expr) => {
            if reg_imm {
                w!(bits, shift_reg_imm, $op)
            } else {
                w!(bits, shift_rm, $op)
            }
        };
    }
    Some(match i.mnemonic() {
        Mnemonic::Rol => shift!(ROL),
        Mnemonic::Ror => shift!(ROR),
        Mnemonic::Rcl => shift!(RCL),
        Mnemonic::Rcr => shift!(RCR),
        Mnemonic::Shl | Mnemonic::Sal => shift!(SHL),
        Mnemonic::Shr => shift!(SHR),
        Mnemonic::Sar => shift!(SAR),
        Mnemonic::Shld => w!(bits, double_shift, true),
        Mnemonic::Shrd => w!(bits, double_shift, false),
        _ => return None,
    })
}
