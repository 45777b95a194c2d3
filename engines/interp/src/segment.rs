//! Segment-register instructions (SDM Vol. 3A chapter 3, 5.10): MOV to and
//! from segment registers, PUSH/POP of segment registers, LDS/LES/LFS/LGS/
//! LSS, and the protection probes LAR, LSL, VERR, VERW and ARPL.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use ringside_core::cpu::flags::ZF;
use ringside_core::cpu::segments::{system_type, Descriptor};
use ringside_core::cpu::{reg, CpuResult, Fault, SegReg};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;

/// Load a segment register through core (its checks, and the interrupt
/// shadow after a load of SS); the block ends, since the segment's base,
/// limit or size may be what later instructions were decoded for.
fn load(c: &mut Ctx, s: SegReg, sel: u16) -> CpuResult<()> {
    c.m.load_segment(s, sel)?;
    c.end_block = true;
    Ok(())
}

fn mov_to_sreg(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let s = seg_of(d.i.op0_register());
    if d.i.op0_register() == Register::CS {
        return Err(Fault::ud());
    }
    let sel = read_op::<W16>(c, d, 1)? as u16;
    load(c, s, sel)
}

/// MOV r/m, Sreg: a 32-bit register destination gets the selector
/// zero-extended; memory always receives 16 bits.
fn mov_from_sreg(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let sel = c.m.cpu.seg[seg_of(d.i.op1_register()) as usize].selector as u32;
    if d.i.op0_kind() == OpKind::Register && d.i.op0_register().size() == 4 {
        W32::set_reg(&mut c.m.cpu, d.i.op0_register(), sel);
        Ok(())
    } else {
        write_op::<W16>(c, d, 0, sel)
    }
}

/// PUSH Sreg. With a 32-bit operand size ESP moves by 4 but only the
/// selector's 16 bits are written, as P6 and later processors do.
fn push_sreg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let sel = c.m.cpu.seg[seg_of(d.i.op0_register()) as usize].selector;
    let sp = c.m.stack_pointer().wrapping_sub(W::BYTES);
    let sp = if c.m.cpu.stack32() { sp } else { sp & 0xFFFF };
    c.m.probe_seg_write(SegReg::Ss, sp, W::BYTES)?;
    c.m.write_seg::<u16>(SegReg::Ss, sp, sel)?;
    c.m.set_sp(sp);
    Ok(())
}

/// POP ES/SS/DS/FS/GS. The pop uses the stack attributes in force before
/// the load (SDM Vol. 2B POP: the stack-address size is the old SS's B
/// bit), so a POP SS that changes the stack size moves ESP as the old stack
/// does: a 16-bit stack wraps SP at 64 KiB and keeps ESP's upper half.
fn pop_sreg<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let s = seg_of(d.i.op0_register());
    let sel = c.m.stack_read(0, W::BYTES)? as u16;
    let esp = c.m.cpu.gpr[reg::ESP];
    let popped = if c.m.cpu.stack32() {
        esp.wrapping_add(W::BYTES)
    } else {
        (esp & 0xFFFF_0000) | (esp.wrapping_add(W::BYTES) & 0xFFFF)
    };
    load(c, s, sel)?;
    c.m.cpu.gpr[reg::ESP] = popped;
    Ok(())
}

/// LDS/LES/LFS/LGS/LSS r, m16:16/32.
fn load_far_pointer<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if d.i.op1_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let s = mem_seg(d);
    let off = ea(&c.m.cpu, d);
    let offset = W::read(c.m, s, off)?;
    let sel_off = off.wrapping_add(W::BYTES);
    let sel_off = if d.a16 { sel_off & 0xFFFF } else { sel_off };
    let sel = c.m.read_seg::<u16>(s, sel_off)?;
    let target = match d.i.mnemonic() {
        Mnemonic::Lds => SegReg::Ds,
        Mnemonic::Les => SegReg::Es,
        Mnemonic::Lfs => SegReg::Fs,
        Mnemonic::Lgs => SegReg::Gs,
        _ => SegReg::Ss,
    };
    load(c, target, sel)?;
    W::set_reg(&mut c.m.cpu, d.i.op0_register(), offset);
    Ok(())
}

/// LAR, LSL, VERR and VERW are protected-mode only (#UD in real and
/// virtual-8086 mode).
fn require_protected(c: &Ctx) -> CpuResult<()> {
    if !c.m.cpu.protected_mode() || c.m.cpu.vm86() {
        return Err(Fault::ud());
    }
    Ok(())
}

/// The descriptor a probe instruction may see, or None (ZF = 0): not null,
/// inside its table, and visible at CPL and RPL unless conforming code.
fn visible_descriptor(c: &mut Ctx, sel: u16) -> CpuResult<Option<Descriptor>> {
    if sel & !3 == 0 {
        return Ok(None);
    }
    let Some(d) = c.m.read_descriptor(sel)? else {
        return Ok(None);
    };
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if !(d.is_code() && d.conforming()) && (d.dpl() < cpl || d.dpl() < rpl) {
        return Ok(None);
    }
    Ok(Some(d))
}

fn set_zf(c: &mut Ctx, on: bool) {
    if on {
        c.m.cpu.eflags |= ZF;
    } else {
        c.m.cpu.eflags &= !ZF;
    }
}

fn lar<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let sel = read_op::<W16>(c, d, 1)? as u16;
    let desc = visible_descriptor(c, sel)?.filter(|x| {
        x.is_code_or_data()
            || matches!(
                x.typ(),
                system_type::TSS16_AVAIL
                    | system_type::LDT
                    | system_type::TSS16_BUSY
                    | system_type::CALL_GATE16
                    | system_type::TASK_GATE
                    | system_type::TSS32_AVAIL
                    | system_type::TSS32_BUSY
                    | system_type::CALL_GATE32
            )
    });
    if let Some(x) = desc {
        let rights = ((x.0 >> 32) as u32) & 0x00F0_FF00;
        W::set_reg(&mut c.m.cpu, d.i.op0_register(), rights & W::MASK);
    }
    set_zf(c, desc.is_some());
    Ok(())
}

fn lsl<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let sel = read_op::<W16>(c, d, 1)? as u16;
    let desc = visible_descriptor(c, sel)?.filter(|x| {
        x.is_code_or_data()
            || matches!(
                x.typ(),
                system_type::TSS16_AVAIL
                    | system_type::LDT
                    | system_type::TSS16_BUSY
                    | system_type::TSS32_AVAIL
                    | system_type::TSS32_BUSY
            )
    });
    if let Some(x) = desc {
        W::set_reg(&mut c.m.cpu, d.i.op0_register(), x.limit() & W::MASK);
    }
    set_zf(c, desc.is_some());
    Ok(())
}

fn verify<const WRITE: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let sel = read_op::<W16>(c, d, 0)? as u16;
    let ok = visible_descriptor(c, sel)?.is_some_and(|x| {
        if WRITE {
            x.writable_data()
        } else {
            x.is_data() || x.readable_code()
        }
    });
    set_zf(c, ok);
    Ok(())
}

/// ARPL r/m16, r16: raise the destination selector's RPL to the source's.
fn arpl(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    require_protected(c)?;
    let src = W16::reg(&c.m.cpu, d.i.op1_register());
    let (dest, v) = rmw_begin::<W16>(c, d)?;
    if v & 3 < src & 3 {
        rmw_end::<W16>(c, dest, (v & !3) | (src & 3))?;
        set_zf(c, true);
    } else {
        set_zf(c, false);
    }
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let osize = match i.code().op_code().operand_size() {
        16 => 16,
        32 => 32,
        _ => {
            if i.code_size() == iced_x86::CodeSize::Code32 {
                32
            } else {
                16
            }
        }
    };
    let pick = |f16: Handler, f32: Handler| if osize == 16 { f16 } else { f32 };
    let is_sreg =
        |n: u32| i.op_kind(n) == OpKind::Register && i.op_register(n).is_segment_register();
    Some(match i.mnemonic() {
        Mnemonic::Mov if is_sreg(0) => mov_to_sreg,
        Mnemonic::Mov if is_sreg(1) => mov_from_sreg,
        Mnemonic::Push if is_sreg(0) => pick(push_sreg::<W16>, push_sreg::<W32>),
        Mnemonic::Pop if is_sreg(0) => pick(pop_sreg::<W16>, pop_sreg::<W32>),
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => {
            pick(load_far_pointer::<W16>, load_far_pointer::<W32>)
        }
        Mnemonic::Lar => pick(lar::<W16>, lar::<W32>),
        Mnemonic::Lsl => pick(lsl::<W16>, lsl::<W32>),
        Mnemonic::Verr => verify::<false>,
        Mnemonic::Verw => verify::<true>,
        Mnemonic::Arpl => arpl,
        _ => return None,
    })
}
