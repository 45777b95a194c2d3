//! String instructions (SDM Vol. 1 7.3.9): MOVS, CMPS, SCAS, LODS, STOS,
//! INS and OUTS, with the REP/REPE/REPNE prefixes. A completed REP
//! instruction is one retired instruction. It runs in slices of
//! `REP_SLICE` iterations: between slices it pauses, not retired, with EIP
//! still on it, so a huge count cannot hold the engine past its budget. A
//! fault in the middle likewise leaves (E)CX, (E)SI and (E)DI describing
//! the iterations done, with EIP at the instruction so it resumes after the
//! handler returns (SDM Vol. 2B REP).

use iced_x86::{Instruction, Mnemonic};
use ringside_core::cpu::flags::{DF, ZF};
use ringside_core::cpu::{reg, CpuResult, SegReg};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;
use crate::table::{op_bits, w};

const MOVS: u8 = 0;
const CMPS: u8 = 1;
const SCAS: u8 = 2;
const LODS: u8 = 3;
const STOS: u8 = 4;
const INS: u8 = 5;
const OUTS: u8 = 6;

/// Address-size view of the index and count registers.
#[derive(Clone, Copy)]
struct Regs {
    a16: bool,
}

impl Regs {
    #[inline(always)]
    fn get(&self, c: &Ctx, r: usize) -> u32 {
        if self.a16 {
            c.m.cpu.gpr[r] & 0xFFFF
        } else {
            c.m.cpu.gpr[r]
        }
    }
    #[inline(always)]
    fn set(&self, c: &mut Ctx, r: usize, v: u32) {
        if self.a16 {
            c.m.cpu.set_reg16(r, v as u16);
        } else {
            c.m.cpu.gpr[r] = v;
        }
    }
    #[inline(always)]
    fn step(&self, c: &mut Ctx, r: usize, delta: u32) {
        let v = self.get(c, r).wrapping_add(delta);
        self.set(c, r, v);
    }
}

/// One iteration; returns the flags of a comparison (CMPS/SCAS).
#[inline(always)]
fn iteration<W: Width, const OP: u8>(c: &mut Ctx, r: Regs, src: SegReg) -> CpuResult<()> {
    let delta = if c.m.cpu.eflags & DF != 0 {
        W::BYTES.wrapping_neg()
    } else {
        W::BYTES
    };
    let si = r.get(c, reg::ESI);
    let di = r.get(c, reg::EDI);
    match OP {
        MOVS => {
            let v = W::read(c.m, src, si)?;
            W::write(c.m, SegReg::Es, di, v)?;
            r.step(c, reg::ESI, delta);
            r.step(c, reg::EDI, delta);
        }
        CMPS => {
            let a = W::read(c.m, src, si)?;
            let b = W::read(c.m, SegReg::Es, di)?;
            let (_, f) = sub_flags::<W>(a, b, 0);
            set_status(&mut c.m.cpu, f);
            r.step(c, reg::ESI, delta);
            r.step(c, reg::EDI, delta);
        }
        SCAS => {
            let b = W::read(c.m, SegReg::Es, di)?;
            let a = W::reg_n(&c.m.cpu, reg::EAX);
            let (_, f) = sub_flags::<W>(a, b, 0);
            set_status(&mut c.m.cpu, f);
            r.step(c, reg::EDI, delta);
        }
        LODS => {
            let v = W::read(c.m, src, si)?;
            W::set_reg_n(&mut c.m.cpu, reg::EAX, v);
            r.step(c, reg::ESI, delta);
        }
        STOS => {
            let v = W::reg_n(&c.m.cpu, reg::EAX);
            W::write(c.m, SegReg::Es, di, v)?;
            r.step(c, reg::EDI, delta);
        }
        INS => {
            let port = c.m.cpu.gpr[reg::EDX] as u16;
            c.m.check_io_permission(port, W::BYTES)?;
            // The destination is checked before the port is read, so a
            // fault does not lose the input.
            c.m.probe_seg_write(SegReg::Es, di, W::BYTES)?;
            let now = c.m.clock.now_ns();
            let v = c.m.bus.io_read(port, W::BYTES as u8, now);
            W::write(c.m, SegReg::Es, di, v)?;
            r.step(c, reg::EDI, delta);
        }
        _ => {
            let port = c.m.cpu.gpr[reg::EDX] as u16;
            c.m.check_io_permission(port, W::BYTES)?;
            let v = W::read(c.m, src, si)?;
            let now = c.m.clock.now_ns();
            c.m.bus.io_write(port, W::BYTES as u8, v, now);
            c.m.apply_a20_signal();
            r.step(c, reg::ESI, delta);
        }
    }
    Ok(())
}

fn string<W: Width, const OP: u8>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let r = Regs { a16: d.a16 };
    let src = mem_seg(d);
    if OP == INS || OP == OUTS {
        c.end_block = true;
    }
    let rep = d.i.has_rep_prefix() || d.i.has_repne_prefix();
    if !rep {
        return iteration::<W, OP>(c, r, src);
    }
    // REPE/REPNE only test ZF for CMPS and SCAS.
    let until_zf = match OP {
        CMPS | SCAS if d.i.has_repne_prefix() => Some(true),
        CMPS | SCAS => Some(false),
        _ => None,
    };
    let in_place = (OP == MOVS || OP == STOS) && !d.a16 && c.m.cpu.eflags & DF == 0;
    let mut left = REP_SLICE;
    while left > 0 {
        if in_place {
            // After an ordinary iteration has filled the TLB, the rest of
            // the page goes at once.
            left -= rep_in_place::<W, OP>(c, src, left);
            if left == 0 {
                break;
            }
        }
        let count = r.get(c, reg::ECX);
        if count == 0 {
            return Ok(());
        }
        iteration::<W, OP>(c, r, src)?;
        r.set(c, reg::ECX, count.wrapping_sub(1));
        left -= 1;
        if let Some(stop_on) = until_zf {
            if (c.m.cpu.eflags & ZF != 0) == stop_on {
                return Ok(());
            }
        }
        if c.m.mem().code_write_seq() != c.code_seq {
            // The loop may have overwritten code that follows: let the
            // engine drop stale blocks, then resume the REP at EIP.
            break;
        }
    }
    if r.get(c, reg::ECX) != 0 {
        c.next_eip = c.m.cpu.eip;
        c.end_block = true;
        c.not_retired = true;
    }
    Ok(())
}

/// The fast path of REP MOVS and REP STOS with 32-bit addresses going
/// up: as many iterations at once as stay inside one source and one
/// destination page that the TLB holds for the access, copied element by
/// element (so overlapping moves behave as the one-at-a-time loop),
/// with ESI, EDI and ECX updated as after that many iterations. Anything
/// the TLB does not hold (a miss, MMIO, a code page, a data breakpoint),
/// a segment limit in the way or alignment checking leaves the rest to
/// the ordinary loop. Returns the iterations done, at most `budget`.
fn rep_in_place<W: Width, const OP: u8>(c: &mut Ctx, src: SegReg, budget: u32) -> u32 {
    let size = W::BYTES;
    let user = c.m.user_access();
    if user && c.m.cpu.cr0 & ringside_core::cpu::cr0::AM != 0 {
        return 0;
    }
    let mut done = 0;
    while done < budget {
        let cpu = &c.m.cpu;
        let (count, si, di) = (cpu.gpr[reg::ECX], cpu.gpr[reg::ESI], cpu.gpr[reg::EDI]);
        let Ok(dst_lin) = c.m.seg_write_addr(SegReg::Es, di, size) else {
            break;
        };
        let room = |lin: u32| (0x1000 - (lin & 0xFFF)) / size;
        let mut n = count.min(budget - done).min(room(dst_lin));
        let src_lin = if OP == MOVS {
            let Ok(lin) = c.m.seg_read_addr(src, si, size) else {
                break;
            };
            n = n.min(room(lin));
            lin
        } else {
            0
        };
        if n == 0 {
            break;
        }
        // The whole run must pass the segment checks, not just its start.
        if c.m.seg_write_addr(SegReg::Es, di, n * size).is_err()
            || (OP == MOVS && c.m.seg_read_addr(src, si, n * size).is_err())
        {
            break;
        }
        let tlb = c.m.tlb();
        let Some(dst) = tlb.cached_span(dst_lin, n * size, true, user) else {
            break;
        };
        if OP == MOVS {
            let Some(from) = tlb.cached_span(src_lin, n * size, false, user) else {
                break;
            };
            for k in 0..n as usize {
                let at = k * size as usize;
                // SAFETY: both spans are n * size bytes inside pages the
                // TLB holds for this access (RAM; writable, not code).
                unsafe {
                    let v = W::load_host(from.add(at));
                    W::store_host(dst.add(at), v);
                }
            }
        } else {
            let v = W::reg_n(&c.m.cpu, reg::EAX);
            for k in 0..n as usize {
                // SAFETY: as above, for the destination span.
                unsafe { W::store_host(dst.add(k * size as usize), v) };
            }
        }
        let cpu = &mut c.m.cpu;
        cpu.gpr[reg::ECX] = count - n;
        cpu.gpr[reg::EDI] = di.wrapping_add(n * size);
        if OP == MOVS {
            cpu.gpr[reg::ESI] = si.wrapping_add(n * size);
        }
        done += n;
        if n == count {
            break;
        }
    }
    done
}

/// Iterations a REP instruction runs before it pauses (not retired) so the
/// engine can return within its budget; it continues on the next run.
const REP_SLICE: u32 = 4096;

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = match i.mnemonic() {
        Mnemonic::Outsb | Mnemonic::Insb => 8,
        Mnemonic::Outsw | Mnemonic::Insw => 16,
        Mnemonic::Outsd | Mnemonic::Insd => 32,
        _ => op_bits(
            i,
            if i.op_count() > 0 && i.op0_kind() == iced_x86::OpKind::Register {
                1
            } else {
                0
            },
        ),
    };
    Some(match i.mnemonic() {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd => w!(bits, string, MOVS),
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd => w!(bits, string, CMPS),
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd => w!(bits, string, SCAS),
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd => w!(bits, string, LODS),
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd => w!(bits, string, STOS),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => w!(bits, string, INS),
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => w!(bits, string, OUTS),
        _ => return None,
    })
}
