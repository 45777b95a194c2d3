//! Near control transfers and software interrupts (SDM Vol. 1 6.3, 7.3.8):
//! JMP, Jcc, JCXZ/JECXZ, LOOP/LOOPE/LOOPNE, CALL, RET, INT n, INT3, INTO,
//! INT1, BOUND. Far transfers are in `far_transfer`.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use ringside_core::cpu::events::Delivery;
use ringside_core::cpu::software_interrupts::SoftwareInterrupt;
use ringside_core::cpu::{reg, CpuResult, Fault, SegReg};
use ringside_core::Exit;

use crate::data::condition_number;
use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::stack::{pop, push};
use crate::table::w;

/// Check a near branch target against the CS limit (#GP(0) if outside).
#[inline(always)]
pub fn check_target(c: &Ctx, target: u32) -> CpuResult<u32> {
    if target > c.m.cpu.seg[SegReg::Cs as usize].limit {
        return Err(Fault::gp0());
    }
    Ok(target)
}

fn jmp_rel(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    c.next_eip = check_target(c, d.i.near_branch32())?;
    Ok(())
}

fn jmp_indirect<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let t = read_op::<W>(c, d, 0)?;
    c.next_eip = check_target(c, t)?;
    Ok(())
}

/// Conditional branches do not end a decoded block: the block continues
/// on the fall-through path and a taken branch leaves it early.
/// Jcc, specialised by condition (`ConditionCode as u8`); the target
/// travels as the decoded immediate.
fn jcc<const CC: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if condition_number(c.m.cpu.eflags, CC) {
        c.next_eip = check_target(c, d.imm)?;
        c.end_block = true;
    }
    Ok(())
}

/// The count register of LOOP/JCXZ: CX or ECX by address size.
fn counter_is_cx(code: Code) -> bool {
    matches!(
        code,
        Code::Loop_rel8_16_CX
            | Code::Loop_rel8_32_CX
            | Code::Loope_rel8_16_CX
            | Code::Loope_rel8_32_CX
            | Code::Loopne_rel8_16_CX
            | Code::Loopne_rel8_32_CX
            | Code::Jcxz_rel8_16
            | Code::Jcxz_rel8_32
    )
}

fn jcxz<const CX: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let count = if CX {
        c.m.cpu.gpr[reg::ECX] & 0xFFFF
    } else {
        c.m.cpu.gpr[reg::ECX]
    };
    if count == 0 {
        c.next_eip = check_target(c, d.i.near_branch32())?;
        c.end_block = true;
    }
    Ok(())
}

/// LOOP (KIND 0), LOOPE (1), LOOPNE (2). The count is decremented only if
/// the branch target is valid (a fault commits nothing).
fn loop_<const CX: bool, const KIND: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let count = if CX {
        c.m.cpu.gpr[reg::ECX].wrapping_sub(1) & 0xFFFF
    } else {
        c.m.cpu.gpr[reg::ECX].wrapping_sub(1)
    };
    let zf = c.m.cpu.eflags & ringside_core::cpu::flags::ZF != 0;
    let taken = count != 0
        && match KIND {
            1 => zf,
            2 => !zf,
            _ => true,
        };
    if taken {
        c.next_eip = check_target(c, d.i.near_branch32())?;
        c.end_block = true;
    }
    if CX {
        c.m.cpu.set_reg16(reg::ECX, count as u16);
    } else {
        c.m.cpu.gpr[reg::ECX] = count;
    }
    Ok(())
}

fn call_rel<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let t = check_target(c, d.i.near_branch32())?;
    push::<W>(c, c.next_eip)?;
    c.next_eip = t;
    Ok(())
}

fn call_indirect<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let t = read_op::<W>(c, d, 0)?;
    let t = check_target(c, t)?;
    push::<W>(c, c.next_eip)?;
    c.next_eip = t;
    Ok(())
}

/// RET [imm16]: the target is checked before ESP changes.
fn ret_near<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let t = c.m.stack_read(0, W::BYTES)?;
    let t = check_target(c, t)?;
    pop::<W>(c)?;
    if d.i.op_count() == 1 {
        c.m.adjust_sp(d.imm & 0xFFFF);
    }
    c.next_eip = t;
    Ok(())
}

/// INT n, INT3, INTO and ICEBP: core checks and delivers
/// (`ringside_core::cpu::software_interrupts`); the handler continues at
/// the handler core entered, or stops the machine on a triple fault.
fn software_interrupt(c: &mut Ctx, interrupt: SoftwareInterrupt) -> CpuResult<()> {
    let Some(outcome) = c.m.software_interrupt(interrupt, c.next_eip)? else {
        return Ok(());
    };
    c.event_delivered = true;
    c.end_block = true;
    c.next_eip = c.m.cpu.eip;
    match outcome {
        Delivery::Delivered => {}
        Delivery::TripleFault => c.exit = Some(c.m.triple_fault_exit()),
        Delivery::Redirected(e) => {
            // Nothing was delivered: the instruction does not retire and
            // EIP stays on it (core's `EventExit`).
            c.exit = Some(Exit::Event(e));
            c.not_retired = true;
        }
    }
    Ok(())
}

fn int_n(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    software_interrupt(c, SoftwareInterrupt::IntN(d.imm as u8))
}

fn int3(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    software_interrupt(c, SoftwareInterrupt::Int3)
}

fn int1(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    software_interrupt(c, SoftwareInterrupt::Icebp)
}

fn into(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    software_interrupt(c, SoftwareInterrupt::Into)
}

/// BOUND r, m: #BR unless lower <= r <= upper (signed).
fn bound<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    if d.i.op1_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let s = mem_seg(d);
    let off = ea(&c.m.cpu, d);
    let lower = W::sext(W::read(c.m, s, off)?) as i32;
    let hi_off = off.wrapping_add(W::BYTES);
    let hi_off = if d.a16 { hi_off & 0xFFFF } else { hi_off };
    let upper = W::sext(W::read(c.m, s, hi_off)?) as i32;
    let v = W::sext(W::reg(&c.m.cpu, d.i.op0_register())) as i32;
    if v < lower || v > upper {
        return Err(Fault::br());
    }
    Ok(())
}

fn operand_bits(i: &Instruction) -> u32 {
    match i.code().op_code().operand_size() {
        16 => 16,
        32 => 32,
        _ => {
            if i.code_size() == iced_x86::CodeSize::Code32 {
                32
            } else {
                16
            }
        }
    }
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let far = matches!(i.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || (i.op_count() == 1
            && i.op0_kind() == OpKind::Memory
            && matches!(
                i.memory_size(),
                iced_x86::MemorySize::SegPtr16 | iced_x86::MemorySize::SegPtr32
            ));
    let bits = operand_bits(i);
    let cx = counter_is_cx(i.code());
    Some(match i.mnemonic() {
        Mnemonic::Jmp | Mnemonic::Call | Mnemonic::Retf | Mnemonic::Iret | Mnemonic::Iretd
            if far
                || matches!(
                    i.mnemonic(),
                    Mnemonic::Retf | Mnemonic::Iret | Mnemonic::Iretd
                ) =>
        {
            return crate::far_transfer::lookup(i)
        }
        Mnemonic::Jmp
            if i.op0_kind() == OpKind::NearBranch16 || i.op0_kind() == OpKind::NearBranch32 =>
        {
            jmp_rel
        }
        Mnemonic::Jmp => w!(bits, jmp_indirect),
        Mnemonic::Call
            if i.op0_kind() == OpKind::NearBranch16 || i.op0_kind() == OpKind::NearBranch32 =>
        {
            w!(bits, call_rel)
        }
        Mnemonic::Call => w!(bits, call_indirect),
        Mnemonic::Ret => w!(bits, ret_near),
        Mnemonic::Jo
        | Mnemonic::Jno
        | Mnemonic::Jb
        | Mnemonic::Jae
        | Mnemonic::Je
        | Mnemonic::Jne
        | Mnemonic::Jbe
        | Mnemonic::Ja
        | Mnemonic::Js
        | Mnemonic::Jns
        | Mnemonic::Jp
        | Mnemonic::Jnp
        | Mnemonic::Jl
        | Mnemonic::Jge
        | Mnemonic::Jle
        | Mnemonic::Jg => {
            use iced_x86::ConditionCode as C;
            macro_rules! by_condition {
                ($($cc:ident),*) => {
                    match i.condition_code() {
                        $(C::$cc => jcc::<{ C::$cc as u8 }>,)*
                        C::None => return None,
                    }
                };
            }
            by_condition!(o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g)
        }
        Mnemonic::Jcxz | Mnemonic::Jecxz => {
            if cx {
                jcxz::<true>
            } else {
                jcxz::<false>
            }
        }
        Mnemonic::Loop if cx => loop_::<true, 0>,
        Mnemonic::Loop => loop_::<false, 0>,
        Mnemonic::Loope if cx => loop_::<true, 1>,
        Mnemonic::Loope => loop_::<false, 1>,
        Mnemonic::Loopne if cx => loop_::<true, 2>,
        Mnemonic::Loopne => loop_::<false, 2>,
        Mnemonic::Int => int_n,
        Mnemonic::Int3 => int3,
        Mnemonic::Int1 => int1,
        Mnemonic::Into => into,
        Mnemonic::Bound => w!(bits, bound),
        _ => return None,
    })
}
