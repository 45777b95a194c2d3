//! System instructions (SDM Vol. 3A 2.8) and flag control: descriptor-table
//! registers, LDTR and TR, CR0-CR4 and DR0-DR7, CLTS, LMSW/SMSW, INVD,
//! WBINVD, INVLPG, HLT, CPUID, RDTSC, RDMSR/WRMSR, SYSENTER/SYSEXIT, UD2,
//! PUSHF/POPF, CLI/STI and the other flag instructions, and the x87 escape
//! opcodes of a CPU that has no coprocessor.

use iced_x86::{Instruction, Mnemonic, OpCodeTableKind, OpKind, Register};
use ringside_core::cpu::flags::{CF, DF, IF, RF, VM};
use ringside_core::cpu::segments::{system_type, Descriptor};
use ringside_core::cpu::{
    attr, cpuid_features, cr0, cr4, msr_index, reg, CpuResult, Fault, SegReg, Segment,
};
use ringside_core::{Exit, StopReason};

use crate::exec::{Ctx, Decoded, Handler};
use crate::far::merge_eflags;
use crate::operand::*;
use crate::stack::{pop, push};

/// Privileged instructions need CPL 0; in virtual-8086 mode CPL is 3.
fn require_cpl0(c: &Ctx) -> CpuResult<()> {
    if c.m.cpu.cpl() != 0 {
        return Err(Fault::gp0());
    }
    Ok(())
}

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

/// LGDT/LIDT m16&32. With a 16-bit operand size only 24 bits of base load.
fn load_table<const IDT: bool, const O32: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (s, off) = mem_operand(c, d)?;
    require_cpl0(c)?;
    let limit = c.m.read_seg::<u16>(s, off)?;
    let base_off = if d.a16 {
        off.wrapping_add(2) & 0xFFFF
    } else {
        off.wrapping_add(2)
    };
    let mut base = c.m.read_seg::<u32>(s, base_off)?;
    if !O32 {
        base &= 0x00FF_FFFF;
    }
    let t = if IDT {
        &mut c.m.cpu.idtr
    } else {
        &mut c.m.cpu.gdtr
    };
    t.base = base;
    t.limit = limit;
    Ok(())
}

/// SGDT/SIDT m: the 16-bit limit then the 32-bit base.
fn store_table<const IDT: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (s, off) = mem_operand(c, d)?;
    let t = if IDT { c.m.cpu.idtr } else { c.m.cpu.gdtr };
    let base_off = if d.a16 {
        off.wrapping_add(2) & 0xFFFF
    } else {
        off.wrapping_add(2)
    };
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

fn lldt(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    require_cpl0(c)?;
    let sel = read_op::<W16>(c, d, 0)? as u16;
    if sel & !3 == 0 {
        c.m.cpu.ldtr = ringside_core::cpu::segments::null_segment(sel);
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp_sel(sel));
    }
    let desc = c.m.read_descriptor(sel)?.ok_or(Fault::gp_sel(sel))?;
    if desc.is_code_or_data() || desc.typ() != system_type::LDT {
        return Err(Fault::gp_sel(sel));
    }
    if !desc.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    c.m.cpu.ldtr = desc.to_segment(sel);
    Ok(())
}

fn ltr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    require_cpl0(c)?;
    let sel = read_op::<W16>(c, d, 0)? as u16;
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp_sel(sel));
    }
    let desc = c.m.read_descriptor(sel)?.ok_or(Fault::gp_sel(sel))?;
    let avail = !desc.is_code_or_data()
        && matches!(
            desc.typ(),
            system_type::TSS16_AVAIL | system_type::TSS32_AVAIL
        );
    if !avail {
        return Err(Fault::gp_sel(sel));
    }
    if !desc.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    let busy = Descriptor(desc.0 | (2 << 40));
    c.m.write_descriptor(sel, busy)?;
    c.m.cpu.tr = busy.to_segment(sel);
    Ok(())
}

/// LMSW: loads PE, MP, EM and TS; it can set PE but never clear it.
fn lmsw(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<W16>(c, d, 0)?;
    require_cpl0(c)?;
    let old = c.m.cpu.cr0;
    let new = (old & !0xE) | (v & 0xF) | (old & cr0::PE);
    c.m.cpu.cr0 = new;
    Ok(())
}

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
    require_cpl0(c)?;
    c.m.cpu.cr0 &= !cr0::TS;
    Ok(())
}

/// MOV to CRn with the checks of SDM Vol. 2B "MOV—Move to/from Control
/// Registers" and Vol. 3A 2.5.
fn mov_to_cr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let v = W32::reg(&c.m.cpu, d.i.op1_register());
    match d.i.op0_register() {
        Register::CR0 => {
            if v & cr0::PG != 0 && v & cr0::PE == 0 {
                return Err(Fault::gp0());
            }
            if v & cr0::NW != 0 && v & cr0::CD == 0 {
                return Err(Fault::gp0());
            }
            let old = c.m.cpu.cr0;
            let new = (v & cr0::DEFINED) | cr0::ET;
            c.m.cpu.cr0 = new;
            if (old ^ new) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
                c.m.flush_tlb();
            }
        }
        Register::CR2 => c.m.cpu.cr2 = v,
        Register::CR3 => {
            c.m.cpu.cr3 = v & 0xFFFF_F018;
            c.m.flush_tlb();
        }
        Register::CR4 => {
            if v & !cr4::SUPPORTED != 0 {
                return Err(Fault::gp0());
            }
            c.m.cpu.cr4 = v;
            c.m.flush_tlb();
        }
        _ => return Err(Fault::ud()),
    }
    Ok(())
}

fn mov_from_cr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let v = match d.i.op1_register() {
        Register::CR0 => c.m.cpu.cr0,
        Register::CR2 => c.m.cpu.cr2,
        Register::CR3 => c.m.cpu.cr3,
        Register::CR4 => c.m.cpu.cr4,
        _ => return Err(Fault::ud()),
    };
    W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
    Ok(())
}

/// Map DRn to its storage: DR4/DR5 alias DR6/DR7 unless CR4.DE, where they
/// are #UD (SDM Vol. 3A 17.2.2).
fn debug_reg_index(c: &Ctx, r: Register) -> CpuResult<usize> {
    let n = r as usize - Register::DR0 as usize;
    match n {
        0..=3 | 6 | 7 => Ok(n),
        4 | 5 if c.m.cpu.cr4 & cr4::DE == 0 => Ok(n + 2),
        _ => Err(Fault::ud()),
    }
}

fn mov_to_dr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let n = debug_reg_index(c, d.i.op0_register())?;
    let v = W32::reg(&c.m.cpu, d.i.op1_register());
    c.m.cpu.dr[n] = match n {
        6 => (v & 0x0000_E00F) | 0xFFFF_0FF0,
        7 => (v & 0xFFFF_2BFF) | 0x400,
        _ => v,
    };
    c.m.sync_debug_registers();
    Ok(())
}

fn mov_from_dr(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let n = debug_reg_index(c, d.i.op1_register())?;
    let v = c.m.cpu.dr[n];
    W32::set_reg(&mut c.m.cpu, d.i.op0_register(), v);
    Ok(())
}

fn cache_control(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)
}

fn invlpg(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (s, off) = mem_operand(c, d)?;
    require_cpl0(c)?;
    let lin = c.m.cpu.seg[s as usize].base.wrapping_add(off);
    c.m.invalidate_tlb_page(lin);
    Ok(())
}

/// HLT: stop until an interrupt. With IF = 0 nothing can wake the CPU
/// (ringside models no NMI source), so the machine stops with a message.
fn hlt(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    c.m.cpu.run.halted = true;
    c.exit = Some(if c.m.cpu.interrupts_enabled() {
        Exit::Halted
    } else {
        Exit::Stopped(StopReason::DeadHalt {
            cs: c.m.cpu.seg[SegReg::Cs as usize].selector,
            eip: c.next_eip,
        })
    });
    Ok(())
}

fn cpuid(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let leaf = c.m.cpu.gpr[reg::EAX];
    let (a, b, cx, dx) = match leaf {
        0 => (
            1,
            u32::from_le_bytes(*b"Ring"),
            u32::from_le_bytes(*b"VCPU"),
            u32::from_le_bytes(*b"side"),
        ),
        // Out-of-range leaves return the highest basic leaf (SDM Vol. 2A CPUID).
        // Bit 9 (APIC) only when the machine has a local APIC.
        _ => (
            ringside_core::cpu::CPUID_SIGNATURE,
            0,
            0,
            cpuid_features(c.m.bus.has_lapic()),
        ),
    };
    let g = &mut c.m.cpu.gpr;
    g[reg::EAX] = a;
    g[reg::EBX] = b;
    g[reg::ECX] = cx;
    g[reg::EDX] = dx;
    Ok(())
}

fn rdtsc(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    if c.m.cpu.cr4 & cr4::TSD != 0 && c.m.cpu.cpl() != 0 {
        return Err(Fault::gp0());
    }
    let t = c.m.tsc();
    c.m.cpu.gpr[reg::EAX] = t as u32;
    c.m.cpu.gpr[reg::EDX] = (t >> 32) as u32;
    Ok(())
}

fn rdmsr(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let m = &c.m.cpu.msr;
    let v: u64 = match c.m.cpu.gpr[reg::ECX] {
        msr_index::TSC => c.m.tsc(),
        msr_index::APIC_BASE => m.apic_base,
        msr_index::SYSENTER_CS => m.sysenter_cs as u64,
        msr_index::SYSENTER_ESP => m.sysenter_esp as u64,
        msr_index::SYSENTER_EIP => m.sysenter_eip as u64,
        _ => return Err(Fault::gp0()),
    };
    c.m.cpu.gpr[reg::EAX] = v as u32;
    c.m.cpu.gpr[reg::EDX] = (v >> 32) as u32;
    Ok(())
}

fn wrmsr(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    require_cpl0(c)?;
    let v = ((c.m.cpu.gpr[reg::EDX] as u64) << 32) | c.m.cpu.gpr[reg::EAX] as u64;
    match c.m.cpu.gpr[reg::ECX] {
        msr_index::TSC => c.m.cpu.msr.tsc_offset = v.wrapping_sub(c.m.clock.icount),
        msr_index::APIC_BASE => {
            // Bits 0-7, 9-10 and above bit 35 are reserved (SDM Vol. 3A 10.4.4).
            if v & !0xF_FFFF_F900 != 0 {
                return Err(Fault::gp0());
            }
            c.m.cpu.msr.apic_base = v;
        }
        msr_index::SYSENTER_CS => c.m.cpu.msr.sysenter_cs = v as u32,
        msr_index::SYSENTER_ESP => c.m.cpu.msr.sysenter_esp = v as u32,
        msr_index::SYSENTER_EIP => c.m.cpu.msr.sysenter_eip = v as u32,
        _ => return Err(Fault::gp0()),
    }
    Ok(())
}

fn flat(selector: u16, code: bool, dpl: u8) -> Segment {
    let ty = if code {
        attr::CODE | attr::RW | attr::ACCESSED
    } else {
        attr::RW | attr::ACCESSED
    };
    Segment {
        selector,
        _pad: 0,
        attr: ty | attr::S | attr::P | attr::DB | attr::G | ((dpl as u32) << attr::DPL_SHIFT),
        base: 0,
        limit: u32::MAX,
    }
}

/// SYSENTER: to ring 0 with flat segments from IA32_SYSENTER_CS (SDM Vol.
/// 2B SYSENTER).
fn sysenter(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let cs = c.m.cpu.msr.sysenter_cs as u16;
    if !c.m.cpu.protected_mode() || cs & 0xFFFC == 0 {
        return Err(Fault::gp0());
    }
    c.m.cpu.eflags &= !(VM | IF | RF);
    c.m.cpu.seg[SegReg::Cs as usize] = flat(cs & 0xFFFC, true, 0);
    c.m.cpu.seg[SegReg::Ss as usize] = flat((cs & 0xFFFC) + 8, false, 0);
    c.m.cpu.gpr[reg::ESP] = c.m.cpu.msr.sysenter_esp;
    c.next_eip = c.m.cpu.msr.sysenter_eip;
    Ok(())
}

/// SYSEXIT: back to ring 3, EIP from EDX and ESP from ECX.
fn sysexit(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let cs = c.m.cpu.msr.sysenter_cs as u16;
    if !c.m.cpu.protected_mode() || c.m.cpu.cpl() != 0 || cs & 0xFFFC == 0 {
        return Err(Fault::gp0());
    }
    c.m.cpu.seg[SegReg::Cs as usize] = flat((cs + 16) | 3, true, 3);
    c.m.cpu.seg[SegReg::Ss as usize] = flat((cs + 24) | 3, false, 3);
    c.m.cpu.gpr[reg::ESP] = c.m.cpu.gpr[reg::ECX];
    c.next_eip = c.m.cpu.gpr[reg::EDX];
    Ok(())
}

fn ud2(_c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    Err(Fault::ud())
}

/// PUSHF: in virtual-8086 mode with IOPL < 3, #GP(0). The image has VM and
/// RF cleared (SDM Vol. 2B PUSHF).
fn pushf<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    if c.m.cpu.vm86() && c.m.cpu.iopl() < 3 {
        return Err(Fault::gp0());
    }
    let v = c.m.cpu.eflags & !(VM | RF);
    push::<W>(c, v & W::MASK)
}

/// POPF: which bits change depends on CPL and IOPL (SDM Vol. 2B POPF).
fn popf<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    if c.m.cpu.vm86() && c.m.cpu.iopl() < 3 {
        return Err(Fault::gp0());
    }
    let image = c.m.stack_read(0, W::BYTES)?;
    pop::<W>(c)?;
    // In virtual-8086 mode CPL is 3, so IOPL is never changed.
    let cpl = c.m.cpu.cpl();
    merge_eflags(c, image, W::BITS == 32, cpl, false);
    c.m.cpu.eflags &= !RF;
    Ok(())
}

/// CLI/STI: allowed when CPL <= IOPL (always in real mode). STI that sets
/// IF starts the interrupt shadow.
fn cli_sti<const SET: bool>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let cpu = &c.m.cpu;
    if cpu.protected_mode() && cpu.cpl() > cpu.iopl() {
        return Err(Fault::gp0());
    }
    if SET {
        if c.m.cpu.eflags & IF == 0 {
            c.m.cpu.run.interrupt_shadow = true;
        }
        c.m.cpu.eflags |= IF;
    } else {
        c.m.cpu.eflags &= !IF;
    }
    Ok(())
}

fn flag_op<const BIT: u32, const OP: u8>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    match OP {
        0 => c.m.cpu.eflags &= !BIT,
        1 => c.m.cpu.eflags |= BIT,
        _ => c.m.cpu.eflags ^= BIT,
    }
    Ok(())
}

/// An x87 escape (D8-DF) on a CPU without a coprocessor: #NM when CR0.EM
/// or CR0.TS is set, otherwise nothing responds and nothing happens, so the
/// classic FNINIT/FNSTSW probe finds no FPU (SDM Vol. 3A 9.2.1).
fn x87_escape(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    if c.m.cpu.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

/// WAIT/FWAIT: #NM when CR0.MP and CR0.TS are both set.
fn fwait(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    if c.m.cpu.cr0 & (cr0::MP | cr0::TS) == cr0::MP | cr0::TS {
        return Err(Fault::nm());
    }
    Ok(())
}

fn is_x87_escape(i: &Instruction) -> bool {
    // x87 mnemonics all start with F (FADD, FNINIT, ...); FXSAVE/FXRSTOR
    // live in the 0F table and are not escapes.
    i.code().op_code().table() == OpCodeTableKind::Normal
        && format!("{:?}", i.mnemonic()).starts_with('F')
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    if is_x87_escape(i) {
        return Some(x87_escape);
    }
    let osize32 = match i.code().op_code().operand_size() {
        16 => false,
        32 => true,
        _ => i.code_size() == iced_x86::CodeSize::Code32,
    };
    let reg_op =
        |n: u32| (i.op_count() > n && i.op_kind(n) == OpKind::Register).then(|| i.op_register(n));
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
        Mnemonic::Lmsw => lmsw,
        Mnemonic::Smsw => smsw,
        Mnemonic::Clts => clts,
        Mnemonic::Mov if reg_op(0).is_some_and(|r| r.is_cr()) => mov_to_cr,
        Mnemonic::Mov if reg_op(1).is_some_and(|r| r.is_cr()) => mov_from_cr,
        Mnemonic::Mov if reg_op(0).is_some_and(|r| r.is_dr()) => mov_to_dr,
        Mnemonic::Mov if reg_op(1).is_some_and(|r| r.is_dr()) => mov_from_dr,
        Mnemonic::Invd | Mnemonic::Wbinvd => cache_control,
        Mnemonic::Invlpg => invlpg,
        Mnemonic::Hlt => hlt,
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Rdtsc => rdtsc,
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        Mnemonic::Sysenter => sysenter,
        Mnemonic::Sysexit => sysexit,
        Mnemonic::Ud2 => ud2,
        Mnemonic::Pushf => pushf::<W16>,
        Mnemonic::Pushfd => pushf::<W32>,
        Mnemonic::Popf => popf::<W16>,
        Mnemonic::Popfd => popf::<W32>,
        Mnemonic::Cli => cli_sti::<false>,
        Mnemonic::Sti => cli_sti::<true>,
        Mnemonic::Clc => flag_op::<CF, 0>,
        Mnemonic::Stc => flag_op::<CF, 1>,
        Mnemonic::Cmc => flag_op::<CF, 2>,
        Mnemonic::Cld => flag_op::<DF, 0>,
        Mnemonic::Std => flag_op::<DF, 1>,
        Mnemonic::Wait => fwait,
        _ => return None,
    })
}
