//! Processor control (SDM Vol. 2): CPUID, HLT, INVD/WBINVD, UD2, and the
//! x87 escape opcodes and WAIT of a CPU that has no coprocessor. CPUID's
//! answers are core's (`ringside_core::cpu::cpuid`).

use iced_x86::{Instruction, Mnemonic, OpCodeTableKind};
use ringside_core::cpu::{cr0, reg, CpuResult, Fault, SegReg};
use ringside_core::{Exit, StopReason};

use crate::exec::{Ctx, Decoded, Handler};

/// INVD/WBINVD: there are no caches to model; only the privilege check
/// remains.
fn cache_control(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.check_privileged()
}

/// HLT: stop until an interrupt. With IF = 0 nothing can wake the CPU
/// (ringside models no NMI source), so the machine stops with a message.
fn hlt(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.m.check_privileged()?;
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
    let r = c.m.cpuid(c.m.cpu.gpr[reg::EAX], c.m.cpu.gpr[reg::ECX]);
    let g = &mut c.m.cpu.gpr;
    g[reg::EAX] = r.eax;
    g[reg::EBX] = r.ebx;
    g[reg::ECX] = r.ecx;
    g[reg::EDX] = r.edx;
    Ok(())
}

fn ud2(_c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    Err(Fault::ud())
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
    Some(match i.mnemonic() {
        Mnemonic::Invd | Mnemonic::Wbinvd => cache_control,
        Mnemonic::Hlt => hlt,
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Ud2 => ud2,
        Mnemonic::Wait => fwait,
        _ => return None,
    })
}
