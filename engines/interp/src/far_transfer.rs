//! Far control transfers (SDM Vol. 3A 5.8, Vol. 2 JMP/CALL/RET/IRET
//! pseudo-code): direct to a code segment, through call gates (with the
//! inner-stack switch and parameter copy), to a TSS or through a task gate
//! (hardware task switch), far returns to the same or an outer ring, and
//! IRET in every mode, including the return to virtual-8086 mode and the
//! nested-task return.

use iced_x86::{Instruction, Mnemonic, OpKind};
use ringside_core::cpu::flags::{self, AC, ID, IF, IOPL, NT, RF, VIF, VIP, VM};
use ringside_core::cpu::segments::{null_segment, system_type, Descriptor};
use ringside_core::cpu::tasking::TaskSwitchReason;
use ringside_core::cpu::{attr, reg, CpuResult, Fault, SegReg, Segment};

use crate::exec::{Ctx, Decoded, Handler};
use crate::operand::*;

fn sel_fault(sel: u16) -> Fault {
    Fault::gp_sel(sel)
}

/// The far pointer operand: immediate ptr16:16/32 or m16:16/32.
fn far_pointer<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<(u16, u32)> {
    match d.i.op0_kind() {
        OpKind::FarBranch16 => Ok((d.i.far_branch_selector(), d.i.far_branch16() as u32)),
        OpKind::FarBranch32 => Ok((d.i.far_branch_selector(), d.i.far_branch32())),
        _ => {
            let s = mem_seg(d);
            let off = ea(&c.m.cpu, d);
            let offset = W::read(c.m, s, off)?;
            let sel_off = off.wrapping_add(W::BYTES);
            let sel_off = if d.a16 { sel_off & 0xFFFF } else { sel_off };
            let sel = c.m.read_seg::<u16>(s, sel_off)?;
            Ok((sel, offset))
        }
    }
}

/// Load CS in real or virtual-8086 mode.
fn load_cs_real(c: &mut Ctx, sel: u16) {
    if c.m.cpu.vm86() {
        c.m.cpu.seg[SegReg::Cs as usize] = Segment::vm86(sel);
    } else {
        c.m.load_real_cs(sel);
    }
}

fn real_mode(c: &Ctx) -> bool {
    !c.m.cpu.protected_mode() || c.m.cpu.vm86()
}

/// Checks for a direct far JMP/CALL to a code segment (SDM Vol. 3A 5.8.1).
fn check_direct_code(c: &Ctx, sel: u16, d: Descriptor) -> CpuResult<()> {
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    let ok = if d.conforming() {
        d.dpl() <= cpl
    } else {
        rpl <= cpl && d.dpl() == cpl
    };
    if !ok {
        return Err(sel_fault(sel));
    }
    if !d.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    Ok(())
}

/// The code segment a CS load installs, with RPL set to `cpl`.
fn code_segment(sel: u16, d: Descriptor, cpl: u8) -> Segment {
    d.to_segment((sel & !3) | cpl as u16)
}

fn jmp_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (sel, offset) = far_pointer::<W>(c, d)?;
    let offset = offset & W::MASK;
    if real_mode(c) {
        if offset > c.m.cpu.seg[SegReg::Cs as usize].limit {
            return Err(Fault::gp0());
        }
        load_cs_real(c, sel);
        c.next_eip = offset;
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let desc = c.m.read_descriptor(sel)?.ok_or(sel_fault(sel))?;
    let cpl = c.m.cpu.cpl();
    if desc.is_code() {
        check_direct_code(c, sel, desc)?;
        if offset > desc.limit() {
            return Err(Fault::gp0());
        }
        let desc = c.m.set_accessed(sel, desc)?;
        c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
        c.next_eip = offset;
        return Ok(());
    }
    if desc.is_code_or_data() {
        return Err(sel_fault(sel));
    }
    let rpl = (sel & 3) as u8;
    match desc.typ() {
        system_type::CALL_GATE16 | system_type::CALL_GATE32 => {
            if desc.dpl() < cpl || desc.dpl() < rpl {
                return Err(sel_fault(sel));
            }
            if !desc.present() {
                return Err(Fault::np(sel as u32 & 0xFFFC));
            }
            let tsel = desc.gate_selector();
            if tsel & !3 == 0 {
                return Err(Fault::gp0());
            }
            let target = c.m.read_descriptor(tsel)?.ok_or(sel_fault(tsel))?;
            let ok = target.is_code()
                && if target.conforming() {
                    target.dpl() <= cpl
                } else {
                    target.dpl() == cpl
                };
            if !ok {
                return Err(sel_fault(tsel));
            }
            if !target.present() {
                return Err(Fault::np(tsel as u32 & 0xFFFC));
            }
            let off = desc.gate_offset_sized();
            if off > target.limit() {
                return Err(Fault::gp0());
            }
            let target = c.m.set_accessed(tsel, target)?;
            c.m.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, cpl);
            c.next_eip = off;
            Ok(())
        }
        system_type::TASK_GATE
        | system_type::TSS16_AVAIL
        | system_type::TSS32_AVAIL
        | system_type::TSS16_BUSY
        | system_type::TSS32_BUSY => task_transfer(c, sel, desc, TaskSwitchReason::Jmp),
        _ => Err(sel_fault(sel)),
    }
}

/// JMP/CALL to a TSS descriptor or through a task gate.
fn task_transfer(
    c: &mut Ctx,
    sel: u16,
    desc: Descriptor,
    reason: TaskSwitchReason,
) -> CpuResult<()> {
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if desc.dpl() < cpl || desc.dpl() < rpl {
        return Err(sel_fault(sel));
    }
    if !desc.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    let tss = if desc.typ() == system_type::TASK_GATE {
        desc.gate_selector()
    } else {
        sel
    };
    c.m.task_switch(tss, reason, c.next_eip)?;
    c.next_eip = c.m.cpu.eip;
    c.event_delivered = true;
    Ok(())
}

fn call_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let (sel, offset) = far_pointer::<W>(c, d)?;
    let offset = offset & W::MASK;
    let old_cs = c.m.cpu.seg[SegReg::Cs as usize].selector as u32;
    let ret = c.next_eip;
    if real_mode(c) {
        if offset > c.m.cpu.seg[SegReg::Cs as usize].limit {
            return Err(Fault::gp0());
        }
        push_frame::<W>(c, &[old_cs, ret])?;
        load_cs_real(c, sel);
        c.next_eip = offset;
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let desc = c.m.read_descriptor(sel)?.ok_or(sel_fault(sel))?;
    let cpl = c.m.cpu.cpl();
    if desc.is_code() {
        check_direct_code(c, sel, desc)?;
        if offset > desc.limit() {
            return Err(Fault::gp0());
        }
        push_frame::<W>(c, &[old_cs, ret])?;
        let desc = c.m.set_accessed(sel, desc)?;
        c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
        c.next_eip = offset;
        return Ok(());
    }
    if desc.is_code_or_data() {
        return Err(sel_fault(sel));
    }
    match desc.typ() {
        system_type::CALL_GATE16 | system_type::CALL_GATE32 => call_gate(c, sel, desc),
        system_type::TASK_GATE
        | system_type::TSS16_AVAIL
        | system_type::TSS32_AVAIL
        | system_type::TSS16_BUSY
        | system_type::TSS32_BUSY => task_transfer(c, sel, desc, TaskSwitchReason::Call),
        _ => Err(sel_fault(sel)),
    }
}

/// Push values (first pushed first) on the current stack, all or nothing.
fn push_frame<W: Width>(c: &mut Ctx, values: &[u32]) -> CpuResult<()> {
    let ss = c.m.cpu.seg[SegReg::Ss as usize];
    let esp = c.m.stack_pointer();
    let user = c.m.user_access();
    let sp = if c.m.cpu.protected_mode() && !c.m.cpu.vm86() {
        c.m.write_stack_frame(&ss, esp, values, W::BITS == 32, user)?
    } else {
        // Real and virtual-8086 mode: no type checks, limit checks only.
        let mut sp = esp;
        for _ in values {
            sp = sp.wrapping_sub(W::BYTES);
            if !c.m.cpu.stack32() {
                sp &= 0xFFFF;
            }
            c.m.probe_seg_write(SegReg::Ss, sp, W::BYTES)?;
        }
        let mut sp = esp;
        for &v in values {
            sp = sp.wrapping_sub(W::BYTES);
            if !c.m.cpu.stack32() {
                sp &= 0xFFFF;
            }
            W::write(c.m, SegReg::Ss, sp, v)?;
        }
        sp
    };
    c.m.set_sp(sp);
    Ok(())
}

/// CALL through a call gate (SDM Vol. 3A 5.8.5-5.8.6).
fn call_gate(c: &mut Ctx, sel: u16, gate: Descriptor) -> CpuResult<()> {
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if gate.dpl() < cpl || gate.dpl() < rpl {
        return Err(sel_fault(sel));
    }
    if !gate.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    let tsel = gate.gate_selector();
    if tsel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let target = c.m.read_descriptor(tsel)?.ok_or(sel_fault(tsel))?;
    if !target.is_code() || target.dpl() > cpl {
        return Err(sel_fault(tsel));
    }
    if !target.present() {
        return Err(Fault::np(tsel as u32 & 0xFFFC));
    }
    let gate32 = gate.typ() == system_type::CALL_GATE32;
    let size = if gate32 { 4 } else { 2 };
    let offset = gate.gate_offset_sized();
    if offset > target.limit() {
        return Err(Fault::gp0());
    }
    let old_cs = c.m.cpu.seg[SegReg::Cs as usize].selector as u32;
    let ret = c.next_eip;
    if !target.conforming() && target.dpl() < cpl {
        // More privileged: switch to the inner stack from the TSS.
        let new_cpl = target.dpl();
        let (ss_sel, new_esp) = c.m.inner_stack_from_tss(new_cpl, 0)?;
        if ss_sel & !3 == 0 {
            return Err(Fault::ts(0));
        }
        let ss_desc =
            c.m.read_descriptor(ss_sel)?
                .ok_or(Fault::ts(ss_sel as u32 & 0xFFFC))?;
        if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !ss_desc.writable_data() {
            return Err(Fault::ts(ss_sel as u32 & 0xFFFC));
        }
        if !ss_desc.present() {
            return Err(Fault::ss(ss_sel as u32 & 0xFFFC));
        }
        // Copy the parameters from the caller's stack (read before writing).
        let count = gate.gate_param_count();
        let mut frame = vec![
            c.m.cpu.seg[SegReg::Ss as usize].selector as u32,
            c.m.cpu.gpr[reg::ESP],
        ];
        let mut params = Vec::with_capacity(count as usize);
        for k in 0..count {
            params.push(c.m.stack_read((count - 1 - k) * size, size)?);
        }
        frame.extend(params);
        frame.push(old_cs);
        frame.push(ret);
        let new_ss = c.m.set_accessed(ss_sel, ss_desc)?.to_segment(ss_sel);
        let new_sp =
            c.m.write_stack_frame(&new_ss, new_esp, &frame, gate32, new_cpl == 3)
                .map_err(|f| {
                    if f.vector == ringside_core::cpu::vector::SS {
                        Fault::ss(ss_sel as u32 & 0xFFFC)
                    } else {
                        f
                    }
                })?;
        let target = c.m.set_accessed(tsel, target)?;
        c.m.cpu.seg[SegReg::Ss as usize] = new_ss;
        if new_ss.is_big() {
            c.m.cpu.gpr[reg::ESP] = new_sp;
        } else {
            c.m.cpu.set_reg16(reg::ESP, new_sp as u16);
        }
        c.m.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, new_cpl);
        c.next_eip = offset;
        return Ok(());
    }
    if gate32 {
        push_frame::<W32>(c, &[old_cs, ret])?;
    } else {
        push_frame::<W16>(c, &[old_cs, ret])?;
    }
    let target = c.m.set_accessed(tsel, target)?;
    c.m.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, cpl);
    c.next_eip = offset;
    Ok(())
}

/// Checks common to far RET and IRET on the code selector popped.
fn check_return_cs(c: &mut Ctx, sel: u16) -> CpuResult<Descriptor> {
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = c.m.read_descriptor(sel)?.ok_or(sel_fault(sel))?;
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if !d.is_code() || rpl < cpl {
        return Err(sel_fault(sel));
    }
    if d.conforming() && d.dpl() > rpl {
        return Err(sel_fault(sel));
    }
    if !d.conforming() && d.dpl() != rpl {
        return Err(sel_fault(sel));
    }
    if !d.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    Ok(d)
}

/// The outer-ring stack selector popped by RET/IRET (SDM Vol. 2B RET).
fn check_return_ss(c: &mut Ctx, ss_sel: u16, new_cpl: u8) -> CpuResult<Segment> {
    if ss_sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = c.m.read_descriptor(ss_sel)?.ok_or(sel_fault(ss_sel))?;
    if (ss_sel & 3) as u8 != new_cpl || !d.writable_data() || d.dpl() != new_cpl {
        return Err(sel_fault(ss_sel));
    }
    if !d.present() {
        return Err(Fault::ss(ss_sel as u32 & 0xFFFC));
    }
    let d = c.m.set_accessed(ss_sel, d)?;
    Ok(d.to_segment(ss_sel))
}

/// After a return to an outer ring, data segment registers the new CPL may
/// not use are nulled (SDM Vol. 2B RET, "RETURN-TO-OUTER-PRIVILEGE-LEVEL").
fn null_inaccessible_segments(c: &mut Ctx) {
    let cpl = c.m.cpu.cpl();
    for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        let seg = c.m.cpu.seg[s as usize];
        let a = seg.attr;
        let data_or_nonconforming = a & attr::CODE == 0 || a & attr::DC == 0;
        if seg.is_unusable() || (data_or_nonconforming && seg.dpl() < cpl) {
            c.m.cpu.seg[s as usize] = null_segment(0);
        }
    }
}

fn ret_far<W: Width>(c: &mut Ctx, d: &Decoded) -> CpuResult<()> {
    let imm = if d.i.op_count() == 1 {
        d.imm & 0xFFFF
    } else {
        0
    };
    let offset = c.m.stack_read(0, W::BYTES)?;
    let sel = c.m.stack_read(W::BYTES, W::BYTES)? as u16;
    if real_mode(c) {
        if offset > c.m.cpu.seg[SegReg::Cs as usize].limit {
            return Err(Fault::gp0());
        }
        load_cs_real(c, sel);
        c.m.adjust_sp(2 * W::BYTES + imm);
        c.next_eip = offset;
        return Ok(());
    }
    let desc = check_return_cs(c, sel)?;
    let cpl = c.m.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if offset > desc.limit() {
        return Err(Fault::gp0());
    }
    if rpl == cpl {
        let desc = c.m.set_accessed(sel, desc)?;
        c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
        c.m.adjust_sp(2 * W::BYTES + imm);
        c.next_eip = offset;
        return Ok(());
    }
    let new_esp = c.m.stack_read(2 * W::BYTES + imm, W::BYTES)?;
    let ss_sel = c.m.stack_read(3 * W::BYTES + imm, W::BYTES)? as u16;
    let new_ss = check_return_ss(c, ss_sel, rpl)?;
    let desc = c.m.set_accessed(sel, desc)?;
    c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, rpl);
    c.m.cpu.seg[SegReg::Ss as usize] = new_ss;
    let esp = new_esp.wrapping_add(imm);
    if W::BITS == 16 {
        c.m.cpu.set_reg16(reg::ESP, esp as u16);
    } else if new_ss.is_big() {
        c.m.cpu.gpr[reg::ESP] = esp;
    } else {
        c.m.cpu.set_reg16(reg::ESP, esp as u16);
    }
    null_inaccessible_segments(c);
    c.next_eip = offset;
    Ok(())
}

/// Merge a popped EFLAGS image under the privilege rules of IRET/POPF:
/// IOPL changes only at CPL 0, IF only when CPL <= IOPL; VM, VIF and VIP
/// never change here; RF is taken from the image only by IRET.
pub fn merge_eflags(c: &mut Ctx, image: u32, bits32: bool, cpl: u8, iret: bool) {
    let mut writable = flags::STATUS | flags::TF | flags::DF | NT;
    if bits32 {
        writable |= AC | ID;
        if iret {
            writable |= RF;
        }
    }
    if cpl == 0 {
        writable |= IOPL;
    }
    if cpl <= c.m.cpu.iopl() {
        writable |= IF;
    }
    if !bits32 {
        writable &= 0xFFFF;
    }
    c.m.cpu.eflags = (c.m.cpu.eflags & !writable) | (image & writable) | flags::FIXED1;
}

fn iret<W: Width>(c: &mut Ctx, _d: &Decoded) -> CpuResult<()> {
    let cpu = &c.m.cpu;
    if !cpu.protected_mode() {
        return iret_real::<W>(c);
    }
    if cpu.vm86() {
        if cpu.iopl() < 3 {
            return Err(Fault::gp0());
        }
        return iret_real::<W>(c);
    }
    c.m.cpu.run.nmi_blocked = false;
    if c.m.cpu.eflags & NT != 0 {
        // Return to the task in the back link (SDM Vol. 3A 7.3).
        let link = c.m.read_lin::<u16>(c.m.cpu.tr.base, false)?;
        c.m.task_switch(link, TaskSwitchReason::Iret, c.next_eip)?;
        c.next_eip = c.m.cpu.eip;
        c.event_delivered = true;
        return Ok(());
    }
    let offset = c.m.stack_read(0, W::BYTES)?;
    let sel = c.m.stack_read(W::BYTES, W::BYTES)? as u16;
    let image = c.m.stack_read(2 * W::BYTES, W::BYTES)?;
    let cpl = c.m.cpu.cpl();
    if W::BITS == 32 && image & VM != 0 && cpl == 0 {
        return iret_to_vm86(c, offset, sel, image);
    }
    let desc = check_return_cs(c, sel)?;
    let rpl = (sel & 3) as u8;
    if offset > desc.limit() {
        return Err(Fault::gp0());
    }
    if rpl == cpl {
        let desc = c.m.set_accessed(sel, desc)?;
        c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
        c.m.adjust_sp(3 * W::BYTES);
        merge_eflags(c, image, W::BITS == 32, cpl, true);
        c.next_eip = offset;
        return Ok(());
    }
    let new_esp = c.m.stack_read(3 * W::BYTES, W::BYTES)?;
    let ss_sel = c.m.stack_read(4 * W::BYTES, W::BYTES)? as u16;
    let new_ss = check_return_ss(c, ss_sel, rpl)?;
    let desc = c.m.set_accessed(sel, desc)?;
    merge_eflags(c, image, W::BITS == 32, cpl, true);
    c.m.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, rpl);
    c.m.cpu.seg[SegReg::Ss as usize] = new_ss;
    if W::BITS == 32 && new_ss.is_big() {
        c.m.cpu.gpr[reg::ESP] = new_esp;
    } else {
        c.m.cpu.set_reg16(reg::ESP, new_esp as u16);
    }
    null_inaccessible_segments(c);
    c.next_eip = offset;
    Ok(())
}

/// IRET in real mode, or in virtual-8086 mode with IOPL 3.
fn iret_real<W: Width>(c: &mut Ctx) -> CpuResult<()> {
    let offset = c.m.stack_read(0, W::BYTES)?;
    let sel = c.m.stack_read(W::BYTES, W::BYTES)? as u16;
    let image = c.m.stack_read(2 * W::BYTES, W::BYTES)?;
    if offset > c.m.cpu.seg[SegReg::Cs as usize].limit {
        return Err(Fault::gp0());
    }
    load_cs_real(c, sel);
    c.m.adjust_sp(3 * W::BYTES);
    let vm86 = c.m.cpu.vm86();
    let f = c.m.cpu.eflags;
    c.m.cpu.eflags = if W::BITS == 32 {
        // VM, VIF and VIP are kept; in v86 mode IOPL is kept too.
        let keep = VM | VIF | VIP | if vm86 { IOPL } else { 0 };
        (image & flags::IMPLEMENTED & !keep) | (f & keep)
    } else {
        let keep = if vm86 { IOPL } else { 0 };
        (f & 0xFFFF_0000) | (image & flags::IMPLEMENTED & 0xFFFF & !keep) | (f & keep)
    } | flags::FIXED1;
    c.next_eip = offset & W::MASK;
    c.end_block = true;
    Ok(())
}

/// IRET from ring 0 to virtual-8086 mode (SDM Vol. 2A IRET,
/// "RETURN-TO-VIRTUAL-8086-MODE").
fn iret_to_vm86(c: &mut Ctx, offset: u32, cs: u16, image: u32) -> CpuResult<()> {
    let mut vals = [0u32; 6];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = c.m.stack_read(12 + 4 * k as u32, 4)?;
    }
    let [esp, ss, es, ds, fs, gs] = vals;
    c.m.cpu.eflags = (image & flags::IMPLEMENTED) | flags::FIXED1;
    c.m.cpu.seg[SegReg::Cs as usize] = Segment::vm86(cs);
    c.m.cpu.seg[SegReg::Ss as usize] = Segment::vm86(ss as u16);
    c.m.cpu.seg[SegReg::Es as usize] = Segment::vm86(es as u16);
    c.m.cpu.seg[SegReg::Ds as usize] = Segment::vm86(ds as u16);
    c.m.cpu.seg[SegReg::Fs as usize] = Segment::vm86(fs as u16);
    c.m.cpu.seg[SegReg::Gs as usize] = Segment::vm86(gs as u16);
    c.m.cpu.gpr[reg::ESP] = esp;
    c.next_eip = offset & 0xFFFF;
    Ok(())
}

pub fn lookup(i: &Instruction) -> Option<Handler> {
    let bits = match i.code().op_code().operand_size() {
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
    let bits = match i.op0_kind() {
        OpKind::FarBranch16 => 16,
        OpKind::FarBranch32 => 32,
        OpKind::Memory => match i.memory_size() {
            iced_x86::MemorySize::SegPtr16 => 16,
            iced_x86::MemorySize::SegPtr32 => 32,
            _ => bits,
        },
        _ => bits,
    };
    let pick = |f16: Handler, f32: Handler| if bits == 16 { f16 } else { f32 };
    Some(match i.mnemonic() {
        Mnemonic::Jmp => pick(jmp_far::<W16>, jmp_far::<W32>),
        Mnemonic::Call => pick(call_far::<W16>, call_far::<W32>),
        Mnemonic::Retf => pick(ret_far::<W16>, ret_far::<W32>),
        Mnemonic::Iret => iret::<W16>,
        Mnemonic::Iretd => iret::<W32>,
        _ => return None,
    })
}
