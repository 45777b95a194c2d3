//! The descriptor-table registers (SDM Vol. 3A 2.4, Vol. 2A LGDT/LIDT,
//! Vol. 2B LLDT/LTR): GDTR and IDTR take a base and limit as they are;
//! LDTR and TR are loaded from a GDT descriptor with its checks, and LTR
//! marks the TSS busy.

use super::operand_size::OperandSize;
use super::segments::{null_segment, system_type, Descriptor};
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

/// Which table register LGDT/LIDT loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorTable {
    Gdt,
    Idt,
}

impl Machine {
    /// LLDT and LTR are not recognized in real and virtual-8086 mode.
    fn check_protected_mode_instruction(&self) -> CpuResult<()> {
        if !self.cpu.protected_mode() || self.cpu.vm86() {
            return Err(Fault::ud());
        }
        Ok(())
    }

    /// LGDT/LIDT with the limit and base read from the operand. With a
    /// 16-bit operand size only 24 bits of the base load.
    pub fn load_descriptor_table_register(
        &mut self,
        table: DescriptorTable,
        limit: u16,
        base: u32,
        size: OperandSize,
    ) -> CpuResult<()> {
        self.check_privileged()?;
        let base = if size.is_32() {
            base
        } else {
            base & 0x00FF_FFFF
        };
        let t = match table {
            DescriptorTable::Gdt => &mut self.cpu.gdtr,
            DescriptorTable::Idt => &mut self.cpu.idtr,
        };
        t.base = base;
        t.limit = limit;
        Ok(())
    }

    /// LLDT. A null selector leaves no LDT; otherwise the selector must
    /// name an LDT descriptor in the GDT.
    pub fn load_ldtr(&mut self, selector: u16) -> CpuResult<()> {
        self.check_protected_mode_instruction()?;
        self.check_privileged()?;
        if selector & !3 == 0 {
            self.cpu.ldtr = null_segment(selector);
            return Ok(());
        }
        if selector & 4 != 0 {
            return Err(Fault::gp_sel(selector));
        }
        let desc = self
            .read_descriptor(selector)?
            .ok_or(Fault::gp_sel(selector))?;
        if desc.is_code_or_data() || desc.typ() != system_type::LDT {
            return Err(Fault::gp_sel(selector));
        }
        if !desc.present() {
            return Err(Fault::np(selector as u32 & 0xFFFC));
        }
        self.cpu.ldtr = desc.to_segment(selector);
        Ok(())
    }

    /// LTR: the selector must name an available TSS in the GDT, which
    /// becomes busy.
    pub fn load_task_register(&mut self, selector: u16) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_protected_mode_instruction()?;
        self.check_privileged()?;
        if selector & !3 == 0 {
            return Err(Fault::gp0());
        }
        if selector & 4 != 0 {
            return Err(Fault::gp_sel(selector));
        }
        let desc = self
            .read_descriptor(selector)?
            .ok_or(Fault::gp_sel(selector))?;
        let available = !desc.is_code_or_data()
            && matches!(
                desc.typ(),
                system_type::TSS16_AVAIL | system_type::TSS32_AVAIL
            );
        if !available {
            return Err(Fault::gp_sel(selector));
        }
        if !desc.present() {
            return Err(Fault::np(selector as u32 & 0xFFFC));
        }
        let busy = Descriptor(desc.0 | (2 << 40));
        self.write_descriptor(selector, busy)?;
        self.cpu.tr = busy.to_segment(selector);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::*;

    #[test]
    fn ltr_loads_an_available_tss_and_marks_it_busy() {
        let mut m = protected_mode_machine(0);
        m.load_task_register(TSS_SELECTOR).unwrap();
        let busy = m.read_descriptor(TSS_SELECTOR).unwrap().unwrap();
        assert_eq!(busy.typ(), system_type::TSS32_BUSY);
        assert_eq!(m.cpu.tr.base, TSS);
        // A busy TSS cannot be loaded again.
        assert_eq!(
            m.load_task_register(TSS_SELECTOR),
            Err(Fault::gp_sel(TSS_SELECTOR))
        );
    }

    #[test]
    fn lldt_of_a_code_segment_is_a_general_protection_fault() {
        let mut m = protected_mode_machine(0);
        assert_eq!(m.load_ldtr(RING0_CODE), Err(Fault::gp_sel(RING0_CODE)));
    }

    #[test]
    fn lldt_and_ltr_are_undefined_in_real_mode() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.load_ldtr(0), Err(Fault::ud()));
        assert_eq!(m.load_task_register(TSS_SELECTOR), Err(Fault::ud()));
    }

    #[test]
    fn lgdt_with_a_16_bit_operand_loads_24_bits_of_base() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.load_descriptor_table_register(
            DescriptorTable::Gdt,
            0x17,
            0x1234_5678,
            OperandSize::Bits16,
        )
        .unwrap();
        assert_eq!((m.cpu.gdtr.base, m.cpu.gdtr.limit), (0x34_5678, 0x17));
    }

    #[test]
    fn lidt_at_cpl3_is_a_general_protection_fault() {
        let mut m = protected_mode_machine(3);
        assert_eq!(
            m.load_descriptor_table_register(DescriptorTable::Idt, 0, 0, OperandSize::Bits32),
            Err(Fault::gp0())
        );
    }
}
