//! The descriptor-table registers (SDM Vol. 3A 2.4): LGDT, LIDT, SGDT,
//! SIDT, LLDT, SLDT, LTR and STR. The loads' checks are core's
//! (`ringside_core::cpu::descriptor_tables`); the stores only copy.

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::descriptor_tables::DescriptorTable;
use ringside_core::cpu::{CpuResult, Fault, OperandSize, SegReg};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;

/// SLDT, STR, LLDT and LTR are not recognized in real and virtual-8086
/// mode.
fn require_protected(c: &Ctx) -> CpuResult<()> {
    if !c.m.cpu.protected_mode() || c.m.cpu.vm86() {
        return Err(Fault::ud());
    }
    Ok(())
}

fn mem_operand(c: &Ctx, d: &Decoded) -> CpuResult<(SegReg, u32)> {
    if d.i.op0_kind() != OpKind::Memory && (d.i.op_count() < 2 || d.i.op1_kind() != OpKind::Memory)
    {
        return Err(Fault::ud());
    }
    Ok((mem_seg(d), ea(&c.m.cpu, d)))
}

/// The offset of the base in an m16&32 operand at `off`.
fn base_offset(d: &Decoded, off: u32) -> u32 {
    if d.a16 {
        off.wrapping_add(2) & 0xFFFF
    } else {
        off.wrapping_add(2)
    }
}

/// LGDT/LIDT m16&32. The privilege check comes before the operand is
/// read: a CPL 3 LGDT of an unmapped operand is #GP, not #PF.
fn load_table<const IDT: bool, const O32: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (s, off) = mem_operand(c, d)?;
    c.m.check_privileged()?;
    let limit = c.m.read_seg::<u16>(s, off)?;
    let base = c.m.read_seg::<u32>(s, base_offset(d, off))?;
    let table = if IDT {
        DescriptorTable::Idt
    } else {
        DescriptorTable::Gdt
    };
    c.m.load_descriptor_table_register(table, limit, base, OperandSize::from_bits32(O32))
}

/// SGDT/SIDT m: the 16-bit limit then the 32-bit base.
fn store_table<const IDT: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (s, off) = mem_operand(c, d)?;
    let t = if IDT { c.m.cpu.idtr } else { c.m.cpu.gdtr };
    let base_off = base_offset(d, off);
    c.m.probe_seg_write(s, off, 2)?;
    c.m.probe_seg_write(s, base_off, 4)?;
    c.m.write_seg::<u16>(s, off, t.limit)?;
    c.m.write_seg::<u32>(s, base_off, t.base)
}

/// Store a selector-sized system register: r32 destinations are
/// zero-extended, memory gets 16 bits.
fn store_selector(c: &mut Ctx, d: &Decoded, v: u32) -> CpuResult<()> {
    if d.i.op0_kind() == OpKind::Register && d.i.op0_register().size() == 4 {
        W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
        Ok(())
    } else {
        write_op::<W16>(c, d, 0, v & 0xFFFF)
    }
}

fn sldt(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let v = c.m.cpu.ldtr.selector as u32;
    store_selector(c, d, v)
}

fn str_(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let v = c.m.cpu.tr.selector as u32;
    store_selector(c, d, v)
}

/// LLDT r/m16; the mode and privilege checks come before the operand is
/// read.
fn lldt(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    c.m.check_privileged()?;
    let sel = read_op::<W16>(c, d, 0)? as u16;
    c.m.load_ldtr(sel)
}

/// LTR r/m16; the mode and privilege checks come before the operand is
/// read.
fn ltr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    c.m.check_privileged()?;
    let sel = read_op::<W16>(c, d, 0)? as u16;
    c.m.load_task_register(sel)
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let osize32 = match i.code().op_code().operand_size() {
        16 => false,
        32 => true,
        _ => i.code_size() == iced_x86::CodeSize::Code32,
    };
    Some(match i.mnemonic() {
        Mnemonic::Lgdt if osize32 => load_table::<false, true>,
        Mnemonic::Lgdt => load_table::<false, false>,
        Mnemonic::Lidt if osize32 => load_table::<true, true>,
        Mnemonic::Lidt => load_table::<true, false>,
        Mnemonic::Sgdt => store_table::<false>,
        Mnemonic::Sidt => store_table::<true>,
        Mnemonic::Sldt => sldt,
        Mnemonic::Str => str_,
        Mnemonic::Lldt => lldt,
        Mnemonic::Ltr => ltr,
        _ => return None,
    })
}
