//! Port I/O (SDM Vol. 1 chapter 19): IN and OUT, with the protection of
//! 19.5 — at CPL > IOPL or in virtual-8086 mode every port accessed must be
//! allowed by the I/O permission bitmap in the TSS (core's
//! `Machine::check_io_permission`).

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::{reg, CpuResult};

use crate::exec::{Ctx, Decoded, Handler};

fn size_of(i: &Instruction) -> u32 {
    let r = if i.mnemonic() == Mnemonic::In {
        i.op0_register()
    } else {
        i.op1_register()
    };
    r.size() as u32
}

fn port_of(c: &Ctx, d: &Decoded, n: u32) -> u16 {
    if d.i.op_kind(n) == OpKind::Register {
        c.m.cpu.gpr[reg::EDX] as u16
    } else {
        d.imm as u16
    }
}

fn in_<const SIZE: u32>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let port = port_of(c, d, 1);
    c.m.check_io_permission(port, SIZE)?;
    let now = c.m.clock.now_ns();
    let v = c.m.bus.io_read(port, SIZE as u8, now);
    match SIZE {
        1 => c.m.cpu.set_reg8(0, v as u8),
        2 => c.m.cpu.set_reg16(reg::EAX, v as u16),
        _ => c.m.cpu.gpr[reg::EAX] = v,
    }
    Ok(())
}

fn out<const SIZE: u32>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let port = port_of(c, d, 0);
    c.m.check_io_permission(port, SIZE)?;
    let now = c.m.clock.now_ns();
    let v = c.m.cpu.gpr[reg::EAX];
    c.m.bus.io_write(port, SIZE as u8, v, now);
    c.m.apply_a20_signal();
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let size = match i.mnemonic() {
        Mnemonic::In | Mnemonic::Out => size_of(i),
        _ => return None,
    };
    Some(match (i.mnemonic(), size) {
        (Mnemonic::In, 1) => in_::<1>,
        (Mnemonic::In, 2) => in_::<2>,
        (Mnemonic::In, _) => in_::<4>,
        (Mnemonic::Out, 1) => out::<1>,
        (Mnemonic::Out, 2) => out::<2>,
        (_, _) => out::<4>,
    })
}
