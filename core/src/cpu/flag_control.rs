//! Flag control (SDM Vol. 1 3.4.3, Vol. 2B POPF/PUSHF/CLI/STI): which EFLAGS
//! bits an instruction may change depends on CPL, IOPL and virtual-8086
//! mode. The merge rule is shared by POPF and IRET.

use super::flags::{self, AC, ID, IF, IOPL, NT, RF, VM};
use super::operand_size::OperandSize;
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

impl Machine {
    /// Merge a popped EFLAGS image under the privilege rules of IRET/POPF:
    /// IOPL changes only at CPL 0, IF only when CPL <= IOPL; VM, VIF and
    /// VIP never change here; RF is taken from the image only by IRET
    /// (`iret`). A 16-bit image reaches only FLAGS.
    pub fn merge_eflags(&mut self, image: u32, size: OperandSize, cpl: u8, iret: bool) {
        self.pending().raise(work::CPU);
        let mut writable = flags::STATUS | flags::TF | flags::DF | NT;
        if size.is_32() {
            writable |= AC | ID;
            if iret {
                writable |= RF;
            }
        }
        if cpl == 0 {
            writable |= IOPL;
        }
        if cpl <= self.cpu.iopl() {
            writable |= IF;
        }
        if !size.is_32() {
            writable &= 0xFFFF;
        }
        self.cpu.eflags = (self.cpu.eflags & !writable) | (image & writable) | flags::FIXED1;
    }

    /// PUSHF/PUSHFD: in virtual-8086 mode with IOPL < 3, #GP(0). The image
    /// has VM and RF cleared (SDM Vol. 2B PUSHF).
    pub fn push_flags(&mut self, size: OperandSize) -> CpuResult<()> {
        if self.cpu.vm86() && self.cpu.iopl() < 3 {
            return Err(Fault::gp0());
        }
        let image = self.cpu.eflags & !(VM | RF);
        self.push(image & size.mask(), size.bytes())
    }

    /// POPF/POPFD: which bits change depends on CPL and IOPL (SDM Vol. 2B
    /// POPF); RF is cleared.
    pub fn pop_flags(&mut self, size: OperandSize) -> CpuResult<()> {
        if self.cpu.vm86() && self.cpu.iopl() < 3 {
            return Err(Fault::gp0());
        }
        let image = self.stack_read(0, size.bytes())?;
        self.adjust_sp(size.bytes());
        // In virtual-8086 mode CPL is 3, so IOPL is never changed.
        let cpl = self.cpu.cpl();
        self.merge_eflags(image, size, cpl, false);
        self.cpu.eflags &= !RF;
        Ok(())
    }

    /// CLI and STI are allowed when CPL <= IOPL (always in real mode; in
    /// virtual-8086 mode CPL is 3, so IOPL must be 3 — there is no VME).
    fn check_interrupt_flag_access(&self) -> CpuResult<()> {
        if self.cpu.protected_mode() && self.cpu.cpl() > self.cpu.iopl() {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// CLI.
    pub fn clear_interrupt_flag(&mut self) -> CpuResult<()> {
        self.check_interrupt_flag_access()?;
        self.cpu.eflags &= !IF;
        Ok(())
    }

    /// STI. Setting IF starts the interrupt shadow: interrupts are first
    /// recognized after the next instruction (SDM Vol. 3A 6.8.3).
    pub fn set_interrupt_flag(&mut self) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_interrupt_flag_access()?;
        if self.cpu.eflags & IF == 0 {
            self.cpu.run.interrupt_shadow = true;
        }
        self.cpu.eflags |= IF;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::protected_mode_machine;

    #[test]
    fn popf_at_cpl3_does_not_change_iopl_or_if() {
        let mut m = protected_mode_machine(3);
        m.phys_write(0x8000, 4, (IOPL | IF | flags::CF) as u64);
        m.pop_flags(OperandSize::Bits32).unwrap();
        assert_eq!(m.cpu.eflags, flags::FIXED1 | flags::CF);
        assert_eq!(m.stack_pointer(), 0x8004);
    }

    #[test]
    fn popf_at_cpl0_changes_iopl_and_if_but_never_vm() {
        let mut m = protected_mode_machine(0);
        m.phys_write(0x8000, 4, (IOPL | IF | VM) as u64);
        m.pop_flags(OperandSize::Bits32).unwrap();
        assert_eq!(m.cpu.eflags, flags::FIXED1 | IOPL | IF);
    }

    #[test]
    fn pushf_clears_vm_and_rf_in_the_image() {
        let mut m = protected_mode_machine(0);
        m.cpu.eflags |= RF | flags::CF;
        m.push_flags(OperandSize::Bits32).unwrap();
        assert_eq!(m.stack_read(0, 4), Ok(flags::FIXED1 | flags::CF));
    }

    #[test]
    fn cli_above_iopl_is_a_general_protection_fault() {
        let mut m = protected_mode_machine(3);
        m.cpu.eflags |= IF;
        assert_eq!(m.clear_interrupt_flag(), Err(Fault::gp0()));
        assert_ne!(m.cpu.eflags & IF, 0);
    }

    #[test]
    fn sti_that_sets_if_starts_the_interrupt_shadow_and_one_that_does_not_leaves_it() {
        let mut m = protected_mode_machine(0);
        m.set_interrupt_flag().unwrap();
        assert!(m.cpu.run.interrupt_shadow);
        m.cpu.run.interrupt_shadow = false;
        m.set_interrupt_flag().unwrap();
        assert!(!m.cpu.run.interrupt_shadow);
    }
}
