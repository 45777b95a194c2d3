//! SYSENTER and SYSEXIT (core's `ringside_core::cpu::fast_system_call`).

use iced_x86::{Instruction, Mnemonic};
use ringside_core::cpu::CpuResult;

use crate::exec::{Ctx, Decoded, Handler};

fn sysenter(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.next_eip = c.m.sysenter()?;
    Ok(())
}

fn sysexit(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    c.next_eip = c.m.sysexit()?;
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    Some(match i.mnemonic() {
        Mnemonic::Sysenter => sysenter,
        Mnemonic::Sysexit => sysexit,
        _ => return None,
    })
}
