//! Far control transfers (SDM Vol. 3A 5.8, Vol. 2 JMP/CALL/RET pseudo-code):
//! JMP and CALL directly to a code segment, through a call gate (CALL to a
//! more privileged ring switches to the inner stack from the TSS and copies
//! the gate's parameters), or to a TSS or task gate (a hardware task switch,
//! `tasking`); and far RET to the same or an outer ring. JMP and CALL are
//! written once: they differ only in the return frame CALL pushes, in the
//! privilege a call gate may reach and in the task switch's reason.
//!
//! Operands are explicit (QEMU's `helper_ljmp_protected`,
//! `helper_lcall_protected` and `helper_lret_protected` are the model), so
//! the interpreter, a recompiler's slow path and a raw-mode monitor share
//! them. Each function commits nothing when it faults.

use super::operand_size::OperandSize;
use super::segments::{null_segment, system_type, Descriptor};
use super::state::{attr, reg, SegReg, Segment};
use super::tasking::TaskSwitchReason;
use super::{vector, CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

/// Where a control transfer left the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The EIP of the next instruction, in the code segment now loaded.
    pub eip: u32,
    /// The transfer was a hardware task switch: the new task's state is
    /// loaded, and like an event delivery it takes no single-step trap
    /// after the instruction (SDM Vol. 3A 7.3).
    pub task_switch: bool,
}

impl Transfer {
    fn to(eip: u32) -> Transfer {
        Transfer {
            eip,
            task_switch: false,
        }
    }
}

/// JMP or CALL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FarBranch {
    Jump,
    Call,
}

/// Checks for a direct far JMP/CALL to a code segment (SDM Vol. 3A 5.8.1).
fn check_direct_code(cpl: u8, sel: u16, d: Descriptor) -> CpuResult<()> {
    let rpl = (sel & 3) as u8;
    let ok = if d.conforming() {
        d.dpl() <= cpl
    } else {
        rpl <= cpl && d.dpl() == cpl
    };
    if !ok {
        return Err(Fault::gp_sel(sel));
    }
    if !d.present() {
        return Err(Fault::np(sel as u32 & 0xFFFC));
    }
    Ok(())
}

/// The code segment a CS load installs, with RPL set to `cpl`.
pub(super) fn code_segment(sel: u16, d: Descriptor, cpl: u8) -> Segment {
    d.to_segment((sel & !3) | cpl as u16)
}

impl Machine {
    /// Real mode, or virtual-8086 mode: far transfers load CS as
    /// selector * 16 with no descriptor.
    pub(super) fn real_or_vm86(&self) -> bool {
        !self.cpu.protected_mode() || self.cpu.vm86()
    }

    /// Load CS in real or virtual-8086 mode.
    pub(super) fn load_cs_real_or_vm86(&mut self, sel: u16) {
        if self.cpu.vm86() {
            self.cpu.seg[SegReg::Cs as usize] = Segment::vm86(sel);
        } else {
            self.load_real_cs(sel);
        }
    }

    /// Far JMP to `selector:offset` (`offset` is truncated to the operand
    /// size). `next_eip` is the EIP after the JMP: a task switch saves it
    /// in the outgoing task.
    pub fn far_jump(
        &mut self,
        selector: u16,
        offset: u32,
        size: OperandSize,
        next_eip: u32,
    ) -> CpuResult<Transfer> {
        self.pending().raise(work::CPU);
        self.far_branch(FarBranch::Jump, selector, offset, size, next_eip)
    }

    /// Far CALL to `selector:offset` (`offset` is truncated to the operand
    /// size). `return_eip` is the EIP after the CALL: the return address
    /// pushed, or saved in the outgoing task by a task switch.
    pub fn far_call(
        &mut self,
        selector: u16,
        offset: u32,
        size: OperandSize,
        return_eip: u32,
    ) -> CpuResult<Transfer> {
        self.pending().raise(work::CPU);
        self.far_branch(FarBranch::Call, selector, offset, size, return_eip)
    }

    fn far_branch(
        &mut self,
        branch: FarBranch,
        sel: u16,
        offset: u32,
        size: OperandSize,
        next_eip: u32,
    ) -> CpuResult<Transfer> {
        let offset = offset & size.mask();
        let old_cs = self.cpu.seg[SegReg::Cs as usize].selector as u32;
        if self.real_or_vm86() {
            if offset > self.cpu.seg[SegReg::Cs as usize].limit {
                return Err(Fault::gp0());
            }
            if branch == FarBranch::Call {
                self.push_frame(size, &[old_cs, next_eip])?;
            }
            self.load_cs_real_or_vm86(sel);
            return Ok(Transfer::to(offset));
        }
        if sel & !3 == 0 {
            return Err(Fault::gp0());
        }
        let desc = self.read_descriptor(sel)?.ok_or(Fault::gp_sel(sel))?;
        let cpl = self.cpu.cpl();
        if desc.is_code() {
            check_direct_code(cpl, sel, desc)?;
            if offset > desc.limit() {
                return Err(Fault::gp0());
            }
            if branch == FarBranch::Call {
                self.push_frame(size, &[old_cs, next_eip])?;
            }
            let desc = self.set_accessed(sel, desc)?;
            self.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
            return Ok(Transfer::to(offset));
        }
        if desc.is_code_or_data() {
            return Err(Fault::gp_sel(sel));
        }
        match desc.typ() {
            system_type::CALL_GATE16 | system_type::CALL_GATE32 => {
                self.through_call_gate(branch, sel, desc, next_eip)
            }
            system_type::TASK_GATE
            | system_type::TSS16_AVAIL
            | system_type::TSS32_AVAIL
            | system_type::TSS16_BUSY
            | system_type::TSS32_BUSY => {
                let reason = match branch {
                    FarBranch::Jump => TaskSwitchReason::Jmp,
                    FarBranch::Call => TaskSwitchReason::Call,
                };
                self.task_transfer(sel, desc, reason, next_eip)
            }
            _ => Err(Fault::gp_sel(sel)),
        }
    }

    /// JMP/CALL to a TSS descriptor or through a task gate (SDM Vol. 3A
    /// 7.3).
    fn task_transfer(
        &mut self,
        sel: u16,
        desc: Descriptor,
        reason: TaskSwitchReason,
        next_eip: u32,
    ) -> CpuResult<Transfer> {
        let cpl = self.cpu.cpl();
        let rpl = (sel & 3) as u8;
        if desc.dpl() < cpl || desc.dpl() < rpl {
            return Err(Fault::gp_sel(sel));
        }
        if !desc.present() {
            return Err(Fault::np(sel as u32 & 0xFFFC));
        }
        let tss = if desc.typ() == system_type::TASK_GATE {
            desc.gate_selector()
        } else {
            sel
        };
        self.task_switch(tss, reason, next_eip)?;
        Ok(Transfer {
            eip: self.cpu.eip,
            task_switch: true,
        })
    }

    /// Push values (first pushed first) on the current stack, all or nothing.
    fn push_frame(&mut self, size: OperandSize, values: &[u32]) -> CpuResult<()> {
        let ss = self.cpu.seg[SegReg::Ss as usize];
        let esp = self.stack_pointer();
        let user = self.user_access();
        let sp = if self.cpu.protected_mode() && !self.cpu.vm86() {
            self.write_stack_frame(&ss, esp, values, size.is_32(), user)?
        } else {
            // Real and virtual-8086 mode: no type checks, limit checks only.
            let slot = size.bytes();
            let mut sp = esp;
            for _ in values {
                sp = sp.wrapping_sub(slot);
                if !self.cpu.stack32() {
                    sp &= 0xFFFF;
                }
                self.probe_seg_write(SegReg::Ss, sp, slot)?;
            }
            let mut sp = esp;
            for &v in values {
                sp = sp.wrapping_sub(slot);
                if !self.cpu.stack32() {
                    sp &= 0xFFFF;
                }
                match size {
                    OperandSize::Bits16 => self.write_seg::<u16>(SegReg::Ss, sp, v as u16)?,
                    OperandSize::Bits32 => self.write_seg::<u32>(SegReg::Ss, sp, v)?,
                }
            }
            sp
        };
        self.set_sp(sp);
        Ok(())
    }

    /// JMP or CALL through a call gate (SDM Vol. 3A 5.8.5-5.8.6). A JMP
    /// reaches only a conforming segment or one of the same privilege; a
    /// CALL to a more privileged non-conforming segment switches stacks.
    fn through_call_gate(
        &mut self,
        branch: FarBranch,
        sel: u16,
        gate: Descriptor,
        next_eip: u32,
    ) -> CpuResult<Transfer> {
        let cpl = self.cpu.cpl();
        let rpl = (sel & 3) as u8;
        if gate.dpl() < cpl || gate.dpl() < rpl {
            return Err(Fault::gp_sel(sel));
        }
        if !gate.present() {
            return Err(Fault::np(sel as u32 & 0xFFFC));
        }
        let tsel = gate.gate_selector();
        if tsel & !3 == 0 {
            return Err(Fault::gp0());
        }
        let target = self.read_descriptor(tsel)?.ok_or(Fault::gp_sel(tsel))?;
        let reachable = match branch {
            FarBranch::Jump => {
                if target.conforming() {
                    target.dpl() <= cpl
                } else {
                    target.dpl() == cpl
                }
            }
            FarBranch::Call => target.dpl() <= cpl,
        };
        if !target.is_code() || !reachable {
            return Err(Fault::gp_sel(tsel));
        }
        if !target.present() {
            return Err(Fault::np(tsel as u32 & 0xFFFC));
        }
        let offset = gate.gate_offset_sized();
        if offset > target.limit() {
            return Err(Fault::gp0());
        }
        if branch == FarBranch::Jump {
            let target = self.set_accessed(tsel, target)?;
            self.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, cpl);
            return Ok(Transfer::to(offset));
        }
        let gate_size = OperandSize::from_bits32(gate.typ() == system_type::CALL_GATE32);
        let old_cs = self.cpu.seg[SegReg::Cs as usize].selector as u32;
        if !target.conforming() && target.dpl() < cpl {
            return self.call_to_inner_ring(gate, gate_size, tsel, target, old_cs, next_eip);
        }
        self.push_frame(gate_size, &[old_cs, next_eip])?;
        let target = self.set_accessed(tsel, target)?;
        self.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, cpl);
        Ok(Transfer::to(offset))
    }

    /// CALL through a gate to a more privileged ring: the inner stack from
    /// the TSS gets the caller's SS:ESP, the gate's parameter count of
    /// stack slots copied from the caller's stack, then CS:EIP (SDM Vol. 3A
    /// 5.8.5, figure 5-13).
    fn call_to_inner_ring(
        &mut self,
        gate: Descriptor,
        gate_size: OperandSize,
        tsel: u16,
        target: Descriptor,
        old_cs: u32,
        return_eip: u32,
    ) -> CpuResult<Transfer> {
        let new_cpl = target.dpl();
        let (ss_sel, new_esp) = self.inner_stack_from_tss(new_cpl, 0)?;
        if ss_sel & !3 == 0 {
            return Err(Fault::ts(0));
        }
        let ss_desc = self
            .read_descriptor(ss_sel)?
            .ok_or(Fault::ts(ss_sel as u32 & 0xFFFC))?;
        if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !ss_desc.writable_data() {
            return Err(Fault::ts(ss_sel as u32 & 0xFFFC));
        }
        if !ss_desc.present() {
            return Err(Fault::ss(ss_sel as u32 & 0xFFFC));
        }
        // Copy the parameters from the caller's stack (read before writing).
        let count = gate.gate_param_count();
        let slot = gate_size.bytes();
        let mut frame = vec![
            self.cpu.seg[SegReg::Ss as usize].selector as u32,
            self.cpu.gpr[reg::ESP],
        ];
        let mut params = Vec::with_capacity(count as usize);
        for k in 0..count {
            params.push(self.stack_read((count - 1 - k) * slot, slot)?);
        }
        frame.extend(params);
        frame.push(old_cs);
        frame.push(return_eip);
        let new_ss = self.set_accessed(ss_sel, ss_desc)?.to_segment(ss_sel);
        let new_sp = self
            .write_stack_frame(&new_ss, new_esp, &frame, gate_size.is_32(), new_cpl == 3)
            .map_err(|f| {
                if f.vector == vector::SS {
                    Fault::ss(ss_sel as u32 & 0xFFFC)
                } else {
                    f
                }
            })?;
        let target = self.set_accessed(tsel, target)?;
        self.cpu.seg[SegReg::Ss as usize] = new_ss;
        if new_ss.is_big() {
            self.cpu.gpr[reg::ESP] = new_sp;
        } else {
            self.cpu.set_reg16(reg::ESP, new_sp as u16);
        }
        self.cpu.seg[SegReg::Cs as usize] = code_segment(tsel, target, new_cpl);
        Ok(Transfer::to(gate.gate_offset_sized()))
    }

    /// Checks common to far RET and IRET on the code selector popped.
    pub(super) fn check_return_cs(&mut self, sel: u16) -> CpuResult<Descriptor> {
        if sel & !3 == 0 {
            return Err(Fault::gp0());
        }
        let d = self.read_descriptor(sel)?.ok_or(Fault::gp_sel(sel))?;
        let cpl = self.cpu.cpl();
        let rpl = (sel & 3) as u8;
        if !d.is_code() || rpl < cpl {
            return Err(Fault::gp_sel(sel));
        }
        if d.conforming() && d.dpl() > rpl {
            return Err(Fault::gp_sel(sel));
        }
        if !d.conforming() && d.dpl() != rpl {
            return Err(Fault::gp_sel(sel));
        }
        if !d.present() {
            return Err(Fault::np(sel as u32 & 0xFFFC));
        }
        Ok(d)
    }

    /// The outer-ring stack selector popped by RET/IRET (SDM Vol. 2B RET).
    pub(super) fn check_return_ss(&mut self, ss_sel: u16, new_cpl: u8) -> CpuResult<Segment> {
        if ss_sel & !3 == 0 {
            return Err(Fault::gp0());
        }
        let d = self.read_descriptor(ss_sel)?.ok_or(Fault::gp_sel(ss_sel))?;
        if (ss_sel & 3) as u8 != new_cpl || !d.writable_data() || d.dpl() != new_cpl {
            return Err(Fault::gp_sel(ss_sel));
        }
        if !d.present() {
            return Err(Fault::ss(ss_sel as u32 & 0xFFFC));
        }
        let d = self.set_accessed(ss_sel, d)?;
        Ok(d.to_segment(ss_sel))
    }

    /// After a return to an outer ring, data segment registers the new CPL
    /// may not use are nulled (SDM Vol. 2B RET,
    /// "RETURN-TO-OUTER-PRIVILEGE-LEVEL").
    pub(super) fn null_inaccessible_segments(&mut self) {
        let cpl = self.cpu.cpl();
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = self.cpu.seg[s as usize];
            let a = seg.attr;
            let data_or_nonconforming = a & attr::CODE == 0 || a & attr::DC == 0;
            if seg.is_unusable() || (data_or_nonconforming && seg.dpl() < cpl) {
                self.cpu.seg[s as usize] = null_segment(0);
            }
        }
    }

    /// Far RET, releasing `release` bytes of parameters (RET imm16) from
    /// the caller's stack — and, on a return to an outer ring, from the
    /// outer stack too. Returns the EIP to continue at.
    pub fn far_return(&mut self, size: OperandSize, release: u32) -> CpuResult<u32> {
        self.pending().raise(work::CPU);
        let slot = size.bytes();
        let imm = release & 0xFFFF;
        let offset = self.stack_read(0, slot)?;
        let sel = self.stack_read(slot, slot)? as u16;
        if self.real_or_vm86() {
            if offset > self.cpu.seg[SegReg::Cs as usize].limit {
                return Err(Fault::gp0());
            }
            self.load_cs_real_or_vm86(sel);
            self.adjust_sp(2 * slot + imm);
            return Ok(offset);
        }
        let desc = self.check_return_cs(sel)?;
        let cpl = self.cpu.cpl();
        let rpl = (sel & 3) as u8;
        if offset > desc.limit() {
            return Err(Fault::gp0());
        }
        if rpl == cpl {
            let desc = self.set_accessed(sel, desc)?;
            self.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
            self.adjust_sp(2 * slot + imm);
            return Ok(offset);
        }
        let new_esp = self.stack_read(2 * slot + imm, slot)?;
        let ss_sel = self.stack_read(3 * slot + imm, slot)? as u16;
        let new_ss = self.check_return_ss(ss_sel, rpl)?;
        let desc = self.set_accessed(sel, desc)?;
        self.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, rpl);
        self.cpu.seg[SegReg::Ss as usize] = new_ss;
        let esp = new_esp.wrapping_add(imm);
        if !size.is_32() || !new_ss.is_big() {
            self.cpu.set_reg16(reg::ESP, esp as u16);
        } else {
            self.cpu.gpr[reg::ESP] = esp;
        }
        self.null_inaccessible_segments();
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::*;

    #[test]
    fn a_far_call_through_a_call_gate_to_ring_0_switches_stacks_and_copies_parameters() {
        let mut m = protected_mode_machine(3);
        // The caller pushed two parameters: 0x2222 first, then 0x1111.
        m.cpu.gpr[reg::ESP] = 0x7FF8;
        write_dwords(&mut m, 0x7FF8, &[0x1111, 0x2222]);
        let t = m
            .far_call(CALL_GATE, 0, OperandSize::Bits32, 0x5000)
            .unwrap();
        assert_eq!(t, Transfer::to(GATE_TARGET));
        assert_eq!(m.cpu.cpl(), 0);
        assert_eq!(m.cpu.seg[SegReg::Cs as usize].selector, RING0_CODE);
        assert_eq!(m.cpu.seg[SegReg::Ss as usize].selector, RING0_DATA);
        // SDM Vol. 3A figure 5-13: EIP, CS, the parameters in the caller's
        // order, ESP, SS.
        let esp = RING0_STACK - 6 * 4;
        assert_eq!(m.cpu.gpr[reg::ESP], esp);
        let frame: Vec<u32> = (0..6).map(|k| dword(&mut m, esp + 4 * k)).collect();
        assert_eq!(
            frame,
            [
                0x5000,
                RING3_CODE as u32,
                0x1111,
                0x2222,
                0x7FF8,
                RING3_DATA as u32
            ]
        );
    }

    #[test]
    fn a_far_jump_through_a_call_gate_cannot_raise_privilege() {
        let mut m = protected_mode_machine(3);
        let before = m.cpu.clone();
        assert_eq!(
            m.far_jump(CALL_GATE, 0, OperandSize::Bits32, 0x5000),
            Err(Fault::gp_sel(RING0_CODE))
        );
        assert_eq!(m.cpu, before);
    }

    #[test]
    fn a_direct_far_call_pushes_the_return_address_and_truncates_a_16_bit_offset() {
        let mut m = protected_mode_machine(0);
        let t = m
            .far_call(RING0_CODE, 0x1_2345, OperandSize::Bits16, 0x0777)
            .unwrap();
        assert_eq!(t.eip, 0x2345);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x8000 - 4);
        assert_eq!(dword(&mut m, 0x7FFC), ((RING0_CODE as u32) << 16) | 0x0777);
    }

    #[test]
    fn a_far_return_to_ring_3_releases_the_parameters_on_both_stacks_and_nulls_ring_0_data() {
        let mut m = protected_mode_machine(0);
        // EIP, CS, 8 bytes of parameters, ESP, SS.
        write_dwords(
            &mut m,
            0x8000,
            &[0x4000, RING3_CODE as u32, 1, 2, 0x7000, RING3_DATA as u32],
        );
        assert_eq!(m.far_return(OperandSize::Bits32, 8), Ok(0x4000));
        assert_eq!(m.cpu.cpl(), 3);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x7008);
        assert_eq!(m.cpu.seg[SegReg::Ds as usize].selector, 0);
        assert!(m.cpu.seg[SegReg::Ds as usize].is_unusable());
    }

    #[test]
    fn a_far_return_in_real_mode_pops_cs_and_ip() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.cpu.seg[SegReg::Ss as usize] = Segment::real_mode(0);
        m.cpu.gpr[reg::ESP] = 0x100;
        m.phys_write(0x100, 4, 0x1234_0010);
        assert_eq!(m.far_return(OperandSize::Bits16, 2), Ok(0x0010));
        assert_eq!(m.cpu.seg[SegReg::Cs as usize].base, 0x12340);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x106);
    }
}
