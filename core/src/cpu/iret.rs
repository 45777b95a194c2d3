//! IRET in every mode (SDM Vol. 2A IRET pseudo-code, Vol. 3A 6.14 and
//! 20.3): in real mode; in virtual-8086 mode (IOPL-sensitive); in protected
//! mode to the same or an outer ring; from ring 0 back to virtual-8086
//! mode; and with EFLAGS.NT set, the return to the task in the back link.
//!
//! Operands are explicit (QEMU's `helper_iret_real` and
//! `helper_iret_protected` are the model). Nothing is committed on a fault.

use super::far_transfer::{code_segment, Transfer};
use super::flags::{self, IOPL, NT, VIF, VIP, VM};
use super::operand_size::OperandSize;
use super::state::{reg, SegReg, Segment};
use super::tasking::TaskSwitchReason;
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

impl Machine {
    /// IRET or IRETD. `next_eip` is the EIP after the instruction: a
    /// nested-task return saves it in the outgoing task.
    pub fn iret(&mut self, size: OperandSize, next_eip: u32) -> CpuResult<Transfer> {
        self.pending().raise(work::CPU);
        if !self.cpu.protected_mode() {
            return self.iret_real_or_vm86(size);
        }
        if self.cpu.vm86() {
            if self.cpu.iopl() < 3 {
                return Err(Fault::gp0());
            }
            return self.iret_real_or_vm86(size);
        }
        self.cpu.run.nmi_blocked = false;
        if self.cpu.eflags & NT != 0 {
            // Return to the task in the back link (SDM Vol. 3A 7.3).
            let link = self.read_lin::<u16>(self.cpu.tr.base, false)?;
            self.task_switch(link, TaskSwitchReason::Iret, next_eip)?;
            return Ok(Transfer {
                eip: self.cpu.eip,
                task_switch: true,
            });
        }
        let slot = size.bytes();
        let offset = self.stack_read(0, slot)?;
        let sel = self.stack_read(slot, slot)? as u16;
        let image = self.stack_read(2 * slot, slot)?;
        let cpl = self.cpu.cpl();
        if size.is_32() && image & VM != 0 && cpl == 0 {
            return self.iret_to_vm86(offset, sel, image);
        }
        let desc = self.check_return_cs(sel)?;
        let rpl = (sel & 3) as u8;
        if offset > desc.limit() {
            return Err(Fault::gp0());
        }
        if rpl == cpl {
            let desc = self.set_accessed(sel, desc)?;
            self.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, cpl);
            self.adjust_sp(3 * slot);
            self.merge_eflags(image, size, cpl, true);
            return Ok(Transfer {
                eip: offset,
                task_switch: false,
            });
        }
        let new_esp = self.stack_read(3 * slot, slot)?;
        let ss_sel = self.stack_read(4 * slot, slot)? as u16;
        let new_ss = self.check_return_ss(ss_sel, rpl)?;
        let desc = self.set_accessed(sel, desc)?;
        self.merge_eflags(image, size, cpl, true);
        self.cpu.seg[SegReg::Cs as usize] = code_segment(sel, desc, rpl);
        self.cpu.seg[SegReg::Ss as usize] = new_ss;
        if size.is_32() && new_ss.is_big() {
            self.cpu.gpr[reg::ESP] = new_esp;
        } else {
            self.cpu.set_reg16(reg::ESP, new_esp as u16);
        }
        self.null_inaccessible_segments();
        Ok(Transfer {
            eip: offset,
            task_switch: false,
        })
    }

    /// IRET in real mode, or in virtual-8086 mode with IOPL 3.
    fn iret_real_or_vm86(&mut self, size: OperandSize) -> CpuResult<Transfer> {
        let slot = size.bytes();
        let offset = self.stack_read(0, slot)?;
        let sel = self.stack_read(slot, slot)? as u16;
        let image = self.stack_read(2 * slot, slot)?;
        if offset > self.cpu.seg[SegReg::Cs as usize].limit {
            return Err(Fault::gp0());
        }
        self.load_cs_real_or_vm86(sel);
        self.adjust_sp(3 * slot);
        let vm86 = self.cpu.vm86();
        let f = self.cpu.eflags;
        self.cpu.eflags = match size {
            OperandSize::Bits32 => {
                // VM, VIF and VIP are kept; in v86 mode IOPL is kept too.
                let keep = VM | VIF | VIP | if vm86 { IOPL } else { 0 };
                (image & flags::IMPLEMENTED & !keep) | (f & keep)
            }
            OperandSize::Bits16 => {
                let keep = if vm86 { IOPL } else { 0 };
                (f & 0xFFFF_0000) | (image & flags::IMPLEMENTED & 0xFFFF & !keep) | (f & keep)
            }
        } | flags::FIXED1;
        Ok(Transfer {
            eip: offset & size.mask(),
            task_switch: false,
        })
    }

    /// IRET from ring 0 to virtual-8086 mode (SDM Vol. 2A IRET,
    /// "RETURN-TO-VIRTUAL-8086-MODE"): the frame also holds ESP, SS, ES,
    /// DS, FS and GS, all loaded the virtual-8086 way.
    fn iret_to_vm86(&mut self, offset: u32, cs: u16, image: u32) -> CpuResult<Transfer> {
        let mut vals = [0u32; 6];
        for (k, v) in vals.iter_mut().enumerate() {
            *v = self.stack_read(12 + 4 * k as u32, 4)?;
        }
        let [esp, ss, es, ds, fs, gs] = vals;
        self.cpu.eflags = (image & flags::IMPLEMENTED) | flags::FIXED1;
        self.cpu.seg[SegReg::Cs as usize] = Segment::vm86(cs);
        self.cpu.seg[SegReg::Ss as usize] = Segment::vm86(ss as u16);
        self.cpu.seg[SegReg::Es as usize] = Segment::vm86(es as u16);
        self.cpu.seg[SegReg::Ds as usize] = Segment::vm86(ds as u16);
        self.cpu.seg[SegReg::Fs as usize] = Segment::vm86(fs as u16);
        self.cpu.seg[SegReg::Gs as usize] = Segment::vm86(gs as u16);
        self.cpu.gpr[reg::ESP] = esp;
        Ok(Transfer {
            eip: offset & 0xFFFF,
            task_switch: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::*;
    use crate::cpu::flags::IF;

    #[test]
    fn iret_to_ring_3_nulls_the_data_segments_ring_3_may_not_use() {
        let mut m = protected_mode_machine(0);
        // ES already holds ring-3 data; DS keeps ring-0 data.
        m.cpu.seg[SegReg::Es as usize] = descriptor(RING3_DATA).to_segment(RING3_DATA);
        let image = flags::FIXED1 | IF;
        write_dwords(
            &mut m,
            0x8000,
            &[0x4000, RING3_CODE as u32, image, 0x7000, RING3_DATA as u32],
        );
        let t = m.iret(OperandSize::Bits32, 0).unwrap();
        assert_eq!(t.eip, 0x4000);
        assert!(!t.task_switch);
        assert_eq!(m.cpu.cpl(), 3);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x7000);
        assert_eq!(m.cpu.eflags, image);
        assert!(m.cpu.seg[SegReg::Ds as usize].is_unusable());
        assert_eq!(m.cpu.seg[SegReg::Es as usize].selector, RING3_DATA);
    }

    #[test]
    fn iret_at_ring_3_cannot_change_iopl() {
        let mut m = protected_mode_machine(3);
        write_dwords(
            &mut m,
            0x8000,
            &[0x4000, RING3_CODE as u32, flags::FIXED1 | IOPL],
        );
        m.iret(OperandSize::Bits32, 0).unwrap();
        assert_eq!(m.cpu.iopl(), 0);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x800C);
    }

    #[test]
    fn iret_in_virtual_8086_mode_below_iopl_3_is_a_general_protection_fault() {
        let mut m = protected_mode_machine(0);
        m.cpu.eflags |= VM;
        assert_eq!(m.iret(OperandSize::Bits16, 0), Err(Fault::gp0()));
    }

    #[test]
    fn iret_from_ring_0_with_vm_set_enters_virtual_8086_mode() {
        let mut m = protected_mode_machine(0);
        write_dwords(
            &mut m,
            0x8000,
            &[
                0x0100,
                0x2000,
                flags::FIXED1 | VM,
                0xFFFE,
                0x3000,
                0x4000,
                0x5000,
                0x6000,
                0x7000,
            ],
        );
        let t = m.iret(OperandSize::Bits32, 0).unwrap();
        assert_eq!(t.eip, 0x0100);
        assert!(m.cpu.vm86());
        assert_eq!(m.cpu.seg[SegReg::Cs as usize].base, 0x20000);
        assert_eq!(m.cpu.seg[SegReg::Gs as usize].base, 0x70000);
        assert_eq!(m.cpu.gpr[reg::ESP], 0xFFFE);
    }

    #[test]
    fn iret_in_real_mode_keeps_the_upper_eflags_with_a_16_bit_frame() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.cpu.seg[SegReg::Ss as usize] = Segment::real_mode(0);
        m.cpu.gpr[reg::ESP] = 0x100;
        m.cpu.eflags |= flags::AC;
        write_dwords(&mut m, 0x100, &[0x0000_0010, 0x0000_0202]);
        let t = m.iret(OperandSize::Bits16, 0).unwrap();
        assert_eq!(t.eip, 0x10);
        assert_eq!(m.cpu.eflags, flags::AC | 0x202);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x106);
    }
}
