//! Decimal arithmetic (SDM Vol. 1 7.3.4): DAA, DAS, AAA, AAS, AAM, AAD.
//! The pseudo-code is the instructions' pages in SDM Vol. 2A.

use iced_x86::{Instruction, Mnemonic};
use ringside_core::cpu::flags::{AF, CF};
use ringside_core::cpu::{reg, CpuResult, Fault};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;

fn al(c: &Ctx) -> u32 {
    c.m.cpu.gpr[reg::EAX] & 0xFF
}

fn daa(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let f = c.m.cpu.eflags;
    let old_al = al(c);
    let old_cf = f & CF != 0;
    let mut a = old_al;
    let mut cf = false;
    let mut af = false;
    if a & 0xF > 9 || f & AF != 0 {
        cf = old_cf || a + 6 > 0xFF;
        a = (a + 6) & 0xFF;
        af = true;
    }
    if old_al > 0x99 || old_cf {
        a = (a + 0x60) & 0xFF;
        cf = true;
    }
    finish(c, a, cf, af)
}

fn das(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let f = c.m.cpu.eflags;
    let old_al = al(c);
    let old_cf = f & CF != 0;
    let mut a = old_al;
    let mut cf = false;
    let mut af = false;
    if a & 0xF > 9 || f & AF != 0 {
        cf = old_cf || a < 6;
        a = a.wrapping_sub(6) & 0xFF;
        af = true;
    }
    if old_al > 0x99 || old_cf {
        a = a.wrapping_sub(0x60) & 0xFF;
        cf = true;
    }
    finish(c, a, cf, af)
}

fn finish(c: &mut Ctx, a: u32, cf: bool, af: bool) -> CpuResult<()> {
    c.m.cpu.set_reg8(0, a as u8);
    let f = szp::<W8>(a) | (cf as u32 * CF) | (af as u32 * AF);
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// AAA: ASCII adjust after addition. AX <- AX + 106h when a decimal carry
/// is needed, then AL keeps only its low nibble.
fn aaa(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let mut ax = c.m.cpu.gpr[reg::EAX] & 0xFFFF;
    let adjust = ax & 0xF > 9 || c.m.cpu.eflags & AF != 0;
    if adjust {
        ax = ax.wrapping_add(0x106) & 0xFFFF;
    }
    ax &= 0xFF0F;
    c.m.cpu.set_reg16(reg::EAX, ax as u16);
    let f = szp::<W8>(ax & 0xFF) | (adjust as u32 * (AF | CF));
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// AAS: ASCII adjust after subtraction.
fn aas(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let mut ax = c.m.cpu.gpr[reg::EAX] & 0xFFFF;
    let adjust = ax & 0xF > 9 || c.m.cpu.eflags & AF != 0;
    if adjust {
        ax = ax.wrapping_sub(6) & 0xFFFF;
        ax = ((ax & 0xFF) | (ax.wrapping_sub(0x100) & 0xFF00)) & 0xFFFF;
    }
    ax &= 0xFF0F;
    c.m.cpu.set_reg16(reg::EAX, ax as u16);
    let f = szp::<W8>(ax & 0xFF) | (adjust as u32 * (AF | CF));
    set_status(&mut c.m.cpu, f);
    Ok(())
}

/// AAM imm8: AH <- AL / imm8, AL <- AL mod imm8; #DE when imm8 is 0.
fn aam(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let base = d.imm & 0xFF;
    if base == 0 {
        return Err(Fault::de());
    }
    let a = al(c);
    let (q, r) = (a / base, a % base);
    c.m.cpu.set_reg16(reg::EAX, ((q << 8) | r) as u16);
    set_status(&mut c.m.cpu, szp::<W8>(r));
    Ok(())
}

/// AAD imm8: AL <- (AL + AH * imm8) & FFh, AH <- 0.
fn aad(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let base = d.imm & 0xFF;
    let ah = (c.m.cpu.gpr[reg::EAX] >> 8) & 0xFF;
    let (r, f) = add_flags::<W8>(al(c), (ah * base) & 0xFF, 0);
    c.m.cpu.set_reg16(reg::EAX, r as u16);
    set_status(&mut c.m.cpu, f);
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Daa => daa,
        Mnemonic::Das => das,
        Mnemonic::Aaa => aaa,
        Mnemonic::Aas => aas,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
        _ => return None,
    })
}
