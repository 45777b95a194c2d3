//! RDMSR, WRMSR, RDTSC and RDPMC: ECX, EDX and EAX to and from core's model-specific
//! registers (`ringside_core::cpu::msr`).

use iced_x86::{Instruction, Mnemonic};
use ringside_core::cpu::{reg, CpuResult};

use crate::exec::{Ctx, Decoded, Handler};

/// EDX:EAX = `v`.
fn set_edx_eax(c: &mut Ctx, v: u64) {
    c.m.cpu.gpr[reg::EAX] = v as u32;
    c.m.cpu.gpr[reg::EDX] = (v >> 32) as u32;
}

fn rdtsc(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let t = c.m.read_time_stamp_counter()?;
    set_edx_eax(c, t);
    Ok(())
}

fn rdpmc(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = c.m.read_performance_monitoring_counter()?;
    set_edx_eax(c, v);
    Ok(())
}

fn rdmsr(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = c.m.read_msr(c.m.cpu.gpr[reg::ECX])?;
    set_edx_eax(c, v);
    Ok(())
}

fn wrmsr(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let v = ((c.m.cpu.gpr[reg::EDX] as u64) << 32) | c.m.cpu.gpr[reg::EAX] as u64;
    c.m.write_msr(c.m.cpu.gpr[reg::ECX], v)
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Rdtsc => rdtsc,
        Mnemonic::Rdpmc => rdpmc,
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        _ => return None,
    })
}
