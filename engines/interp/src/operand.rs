//! Operands: registers, memory and immediates, read and written at a width
//! chosen at compile time. Every instruction family is written once over
//! [`Width`] instead of once per operand size.

use iced_x86::{OpKind, Register};
use ringside_core::cpu::flags::{parity, AF, CF, OF, PF, SF, STATUS, ZF};
use ringside_core::cpu::{CpuResult, CpuState, SegReg};
use ringside_core::mmu::MemWord;
use ringside_core::Machine;

use crate::exec::{Ctx, Decoded, MemoryOperand, Operand};

/// An operand width: 8, 16 or 32 bits. Values travel as `u32`, masked.
pub trait Width: Copy + 'static {
    const BITS: u32;
    const BYTES: u32 = Self::BITS / 8;
    const MASK: u32;
    const SIGN: u32 = 1 << (Self::BITS - 1);
    fn reg(cpu: &CpuState, r: Register) -> u32;
    fn set_reg(cpu: &mut CpuState, r: Register, v: u32);
    fn reg_n(cpu: &CpuState, n: usize) -> u32;
    fn set_reg_n(cpu: &mut CpuState, n: usize, v: u32);
    fn read(m: &mut Machine, s: SegReg, off: u32) -> CpuResult<u32>;
    fn write(m: &mut Machine, s: SegReg, off: u32, v: u32) -> CpuResult<()>;
    /// Load a value of this width from host memory.
    ///
    /// # Safety
    /// `p` must be valid for reading `BYTES` bytes.
    unsafe fn load_host(p: *const u8) -> u32;
    /// Store a value of this width to host memory.
    ///
    /// # Safety
    /// `p` must be valid for writing `BYTES` bytes.
    unsafe fn store_host(p: *mut u8, v: u32);
    /// Sign-extend a value of this width to 32 bits.
    #[inline(always)]
    fn sext(v: u32) -> u32 {
        let shift = 32 - Self::BITS;
        (((v << shift) as i32) >> shift) as u32
    }
}

#[derive(Clone, Copy)]
pub struct W8;
#[derive(Clone, Copy)]
pub struct W16;
#[derive(Clone, Copy)]
pub struct W32;

impl Width for W8 {
    #[inline(always)]
    unsafe fn load_host(p: *const u8) -> u32 {
        // SAFETY: the caller guarantees BYTES readable bytes.
        unsafe { <u8 as MemWord>::load(p) as u32 }
    }
    #[inline(always)]
    unsafe fn store_host(p: *mut u8, v: u32) {
        // SAFETY: the caller guarantees BYTES writable bytes.
        unsafe { (v as u8).store(p) }
    }
    const BITS: u32 = 8;
    const MASK: u32 = 0xFF;
    #[inline(always)]
    fn reg(cpu: &CpuState, r: Register) -> u32 {
        cpu.reg8(gpr_index(r, Register::AL)) as u32
    }
    #[inline(always)]
    fn set_reg(cpu: &mut CpuState, r: Register, v: u32) {
        cpu.set_reg8(gpr_index(r, Register::AL), v as u8)
    }
    #[inline(always)]
    fn reg_n(cpu: &CpuState, n: usize) -> u32 {
        cpu.reg8(n) as u32
    }
    #[inline(always)]
    fn set_reg_n(cpu: &mut CpuState, n: usize, v: u32) {
        cpu.set_reg8(n, v as u8)
    }
    #[inline(always)]
    fn read(m: &mut Machine, s: SegReg, off: u32) -> CpuResult<u32> {
        m.read_seg::<u8>(s, off).map(u32::from)
    }
    #[inline(always)]
    fn write(m: &mut Machine, s: SegReg, off: u32, v: u32) -> CpuResult<()> {
        m.write_seg::<u8>(s, off, v as u8)
    }
}

impl Width for W16 {
    #[inline(always)]
    unsafe fn load_host(p: *const u8) -> u32 {
        // SAFETY: the caller guarantees BYTES readable bytes.
        unsafe { <u16 as MemWord>::load(p) as u32 }
    }
    #[inline(always)]
    unsafe fn store_host(p: *mut u8, v: u32) {
        // SAFETY: the caller guarantees BYTES writable bytes.
        unsafe { (v as u16).store(p) }
    }
    const BITS: u32 = 16;
    const MASK: u32 = 0xFFFF;
    #[inline(always)]
    fn reg(cpu: &CpuState, r: Register) -> u32 {
        cpu.gpr[gpr_index(r, Register::AX)] & 0xFFFF
    }
    #[inline(always)]
    fn set_reg(cpu: &mut CpuState, r: Register, v: u32) {
        cpu.set_reg16(gpr_index(r, Register::AX), v as u16)
    }
    #[inline(always)]
    fn reg_n(cpu: &CpuState, n: usize) -> u32 {
        cpu.gpr[n] & 0xFFFF
    }
    #[inline(always)]
    fn set_reg_n(cpu: &mut CpuState, n: usize, v: u32) {
        cpu.set_reg16(n, v as u16)
    }
    #[inline(always)]
    fn read(m: &mut Machine, s: SegReg, off: u32) -> CpuResult<u32> {
        m.read_seg::<u16>(s, off).map(u32::from)
    }
    #[inline(always)]
    fn write(m: &mut Machine, s: SegReg, off: u32, v: u32) -> CpuResult<()> {
        m.write_seg::<u16>(s, off, v as u16)
    }
}

impl Width for W32 {
    #[inline(always)]
    unsafe fn load_host(p: *const u8) -> u32 {
        // SAFETY: the caller guarantees BYTES readable bytes.
        unsafe { <u32 as MemWord>::load(p) }
    }
    #[inline(always)]
    unsafe fn store_host(p: *mut u8, v: u32) {
        // SAFETY: the caller guarantees BYTES writable bytes.
        unsafe { v.store(p) }
    }
    const BITS: u32 = 32;
    const MASK: u32 = u32::MAX;
    #[inline(always)]
    fn reg(cpu: &CpuState, r: Register) -> u32 {
        cpu.gpr[gpr_index(r, Register::EAX)]
    }
    #[inline(always)]
    fn set_reg(cpu: &mut CpuState, r: Register, v: u32) {
        cpu.gpr[gpr_index(r, Register::EAX)] = v
    }
    #[inline(always)]
    fn reg_n(cpu: &CpuState, n: usize) -> u32 {
        cpu.gpr[n]
    }
    #[inline(always)]
    fn set_reg_n(cpu: &mut CpuState, n: usize, v: u32) {
        cpu.gpr[n] = v
    }
    #[inline(always)]
    fn read(m: &mut Machine, s: SegReg, off: u32) -> CpuResult<u32> {
        m.read_seg::<u32>(s, off)
    }
    #[inline(always)]
    fn write(m: &mut Machine, s: SegReg, off: u32, v: u32) -> CpuResult<()> {
        m.write_seg::<u32>(s, off, v)
    }
}

/// The encoding number (0-7) of a general register relative to the first
/// register of its class. The mask keeps a register of another class (which
/// a correct decode never passes) inside the register file.
#[inline(always)]
pub fn gpr_index(r: Register, first: Register) -> usize {
    (r as usize).wrapping_sub(first as usize) & 7
}

/// The segment register an iced `Register` names.
#[inline(always)]
pub fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

/// The effective address (offset in its segment) of the memory operand.
#[inline(always)]
pub fn ea(cpu: &CpuState, d: &Decoded) -> u32 {
    let m = &d.mem;
    let mut a = m.displacement;
    if m.base != MemoryOperand::NONE {
        a = a.wrapping_add(cpu.gpr[m.base as usize]);
    }
    if m.index != MemoryOperand::NONE {
        let index = if m.byte_index {
            cpu.reg8(m.index as usize) as u32
        } else {
            cpu.gpr[m.index as usize]
        };
        a = a.wrapping_add(index << m.scale_shift);
    }
    if d.a16 {
        a & 0xFFFF
    } else {
        a
    }
}

/// The segment of the memory operand (override or default).
#[inline(always)]
pub fn mem_seg(d: &Decoded) -> SegReg {
    d.mem.segment
}

/// Read operand `n` (register, memory or immediate).
#[inline(always)]
pub fn read_op<W: Width>(c: &mut Ctx, d: &Decoded, n: u32) -> CpuResult<u32> {
    match d.ops[n as usize] {
        Operand::Gpr(r) => Ok(W::reg_n(&c.m.cpu, r as usize)),
        Operand::Memory => {
            let off = ea(&c.m.cpu, d);
            W::read(c.m, mem_seg(d), off)
        }
        Operand::Immediate => Ok(d.imm & W::MASK),
        Operand::Other => match d.i.op_kind(n) {
            OpKind::Register => Ok(W::reg(&c.m.cpu, d.i.op_register(n))),
            _ => Ok(d.imm & W::MASK),
        },
    }
}

/// Write operand `n` (register or memory).
#[inline(always)]
pub fn write_op<W: Width>(c: &mut Ctx, d: &Decoded, n: u32, v: u32) -> CpuResult<()> {
    match d.ops[n as usize] {
        Operand::Gpr(r) => {
            W::set_reg_n(&mut c.m.cpu, r as usize, v);
            Ok(())
        }
        Operand::Other if d.i.op_kind(n) == OpKind::Register => {
            W::set_reg(&mut c.m.cpu, d.i.op_register(n), v);
            Ok(())
        }
        _ => {
            let off = ea(&c.m.cpu, d);
            W::write(c.m, mem_seg(d), off, v)
        }
    }
}

/// A read-modify-write destination: operand 0 as register or memory. The
/// memory form checks write access before reading, so the update cannot
/// fault after the read.
#[derive(Clone, Copy)]
pub enum Dest {
    /// A general register by encoding number.
    Gpr(u8),
    Reg(Register),
    Mem(SegReg, u32),
}

#[inline(always)]
pub fn rmw_begin<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<(Dest, u32)> {
    match d.ops[0] {
        Operand::Gpr(r) => Ok((Dest::Gpr(r), W::reg_n(&c.m.cpu, r as usize))),
        Operand::Other if d.i.op0_kind() == OpKind::Register => {
            let r = d.i.op0_register();
            Ok((Dest::Reg(r), W::reg(&c.m.cpu, r)))
        }
        _ => {
            let s = mem_seg(d);
            let off = ea(&c.m.cpu, d);
            c.m.probe_seg_write(s, off, W::BYTES)?;
            let v = W::read(c.m, s, off)?;
            Ok((Dest::Mem(s, off), v))
        }
    }
}

#[inline(always)]
pub fn rmw_end<W: Width>(c: &mut Ctx, dest: Dest, v: u32) -> CpuResult<()> {
    match dest {
        Dest::Gpr(r) => {
            W::set_reg_n(&mut c.m.cpu, r as usize, v);
            Ok(())
        }
        Dest::Reg(r) => {
            W::set_reg(&mut c.m.cpu, r, v);
            Ok(())
        }
        Dest::Mem(s, off) => W::write(c.m, s, off, v),
    }
}

/// SF, ZF and PF of a result.
#[inline(always)]
pub fn szp<W: Width>(r: u32) -> u32 {
    let r = r & W::MASK;
    let mut f = parity(r);
    if r == 0 {
        f |= ZF;
    }
    if r & W::SIGN != 0 {
        f |= SF;
    }
    f
}

/// Replace the status flags selected by `mask` with `flags`.
#[inline(always)]
pub fn set_flags(cpu: &mut CpuState, mask: u32, flags: u32) {
    cpu.eflags = (cpu.eflags & !mask) | (flags & mask);
}

#[inline(always)]
pub fn set_status(cpu: &mut CpuState, flags: u32) {
    set_flags(cpu, STATUS, flags)
}

/// Flags of `a + b + carry = r`.
#[inline(always)]
pub fn add_flags<W: Width>(a: u32, b: u32, carry: u32) -> (u32, u32) {
    let wide = a as u64 + b as u64 + carry as u64;
    let r = wide as u32 & W::MASK;
    let mut f = szp::<W>(r) | ((a ^ b ^ r) & AF);
    if wide > W::MASK as u64 {
        f |= CF;
    }
    if (a ^ r) & (b ^ r) & W::SIGN != 0 {
        f |= OF;
    }
    (r, f)
}

/// Flags of `a - b - borrow = r`.
#[inline(always)]
pub fn sub_flags<W: Width>(a: u32, b: u32, borrow: u32) -> (u32, u32) {
    let r = a.wrapping_sub(b).wrapping_sub(borrow) & W::MASK;
    let mut f = szp::<W>(r) | ((a ^ b ^ r) & AF);
    if (a as u64) < b as u64 + borrow as u64 {
        f |= CF;
    }
    if (a ^ b) & (a ^ r) & W::SIGN != 0 {
        f |= OF;
    }
    (r, f)
}

#[inline(always)]
pub fn cf(cpu: &CpuState) -> u32 {
    cpu.eflags & CF
}

pub const STATUS_NO_CF: u32 = STATUS & !CF;
pub const PF_ZF_SF: u32 = PF | ZF | SF;
