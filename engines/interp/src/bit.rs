//! Bit and byte instructions (SDM Vol. 1 7.3.7): BT, BTS, BTR, BTC, BSF,
//! BSR and SETcc.

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::flags::{CF, ZF};
use ringside_core::cpu::CpuResult;

use crate::data::condition;
use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::table::{op_bits, w};

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// BT family. With a register bit offset and a memory operand, the offset
/// addresses a bit string: it is signed and may reach outside the operand
/// (SDM Vol. 2A 3.1.1.9, "bit base" addressing).
fn bit_test<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (dest, value, bit) = if d.i.op0_kind() == OpKind::Register {
        let offset = read_op::<W>(c, d, 1)?;
        let r = d.i.op0_register();
        (Dest::Reg(r), W::reg(&c.m.cpu, r), offset & (W::BITS - 1))
    } else {
        let s = mem_seg(d);
        let mut off = ea(&c.m.cpu, d);
        let bit = if d.i.op1_kind() == OpKind::Register {
            let raw = W::sext(W::reg(&c.m.cpu, d.i.op1_register())) as i32;
            let units = raw >> W::BITS.trailing_zeros();
            off = off.wrapping_add((units * W::BYTES as i32) as u32);
            if d.a16 {
                off &= 0xFFFF;
            }
            (raw as u32) & (W::BITS - 1)
        } else {
            d.imm & (W::BITS - 1)
        };
        if OP != BT {
            c.m.probe_seg_write(s, off, W::BYTES)?;
        }
        let v = W::read(c.m, s, off)?;
        (Dest::Mem(s, off), v, bit)
    };
    let cf = (value >> bit) & 1;
    let new = match OP {
        BTS => value | (1 << bit),
        BTR => value & !(1 << bit),
        BTC => value ^ (1 << bit),
        _ => value,
    };
    if OP != BT {
        rmw_end::<W>(c, dest, new)?;
    }
    set_flags(&mut c.m.cpu, CF, cf);
    Ok(())
}

/// BSF/BSR: ZF = 1 and the destination unchanged when the source is zero.
fn bit_scan<W: Width, const REVERSE: bool>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = read_op::<W>(c, d, 1)?;
    if v == 0 {
        set_status(&mut c.m.cpu, ZF);
        return Ok(());
    }
    let index = if REVERSE {
        31 - v.leading_zeros()
    } else {
        v.trailing_zeros()
    };
    W::set_reg(&mut c.m.cpu, d.i.op0_register(), index);
    set_status(&mut c.m.cpu, szp::<W>(index) & !ZF);
    Ok(())
}

fn setcc(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let v = condition(c.m.cpu.eflags, d.i.condition_code()) as u32;
    write_op::<W8>(c, d, 0, v)
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = op_bits(i, 0);
    Some(match i.mnemonic() {
        Mnemonic::Bt => w!(bits, bit_test, BT),
        Mnemonic::Bts => w!(bits, bit_test, BTS),
        Mnemonic::Btr => w!(bits, bit_test, BTR),
        Mnemonic::Btc => w!(bits, bit_test, BTC),
        Mnemonic::Bsf => w!(bits, bit_scan, false),
        Mnemonic::Bsr => w!(bits, bit_scan, true),
        Mnemonic::Seto
        | Mnemonic::Setno
        | Mnemonic::Setb
        | Mnemonic::Setae
        | Mnemonic::Sete
        | Mnemonic::Setne
        | Mnemonic::Setbe
        | Mnemonic::Seta
        | Mnemonic::Sets
        | Mnemonic::Setns
        | Mnemonic::Setp
        | Mnemonic::Setnp
        | Mnemonic::Setl
        | Mnemonic::Setge
        | Mnemonic::Setle
        | Mnemonic::Setg => setcc,
        _ => return None,
    })
}
