//! Control registers (SDM Vol. 3A 2.5, Vol. 2B "MOV—Move to/from Control
//! Registers", LMSW, CLTS, INVLPG): CR0, CR2, CR3 and CR4 with their checks,
//! and the TLB flushes a write implies. Every flush here is complete: the
//! software TLB has no global entries to keep (CPUID reports PGE because
//! flushing more than required is allowed).
//!
//! Also the rule every privileged instruction starts with (SDM Vol. 3A
//! 5.9): CPL must be 0, and in virtual-8086 mode CPL is 3.

use super::state::{cr0, cr4};
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

impl Machine {
    /// #GP(0) unless CPL is 0 (SDM Vol. 3A 5.9, privileged instructions).
    pub fn check_privileged(&self) -> CpuResult<()> {
        if self.cpu.cpl() != 0 {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// MOV from CRn. CR1 and CR5-CR7 do not exist: #UD.
    pub fn read_control_register(&self, n: u8) -> CpuResult<u32> {
        self.check_privileged()?;
        match n {
            0 => Ok(self.cpu.cr0),
            2 => Ok(self.cpu.cr2),
            3 => Ok(self.cpu.cr3),
            4 => Ok(self.cpu.cr4),
            _ => Err(Fault::ud()),
        }
    }

    /// MOV to CRn. CR0: PG without PE, or NW without CD, is #GP(0); the
    /// reserved bits read back as the defined ones with ET set, and
    /// changing PG, WP or PE flushes the TLB. CR3 keeps the page-directory
    /// base, PCD and PWT and flushes the TLB. CR4: a bit ringside does not
    /// implement is #GP(0); any write flushes the TLB (PSE and PGE change
    /// how entries are made).
    pub fn write_control_register(&mut self, n: u8, value: u32) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        match n {
            0 => {
                if value & cr0::PG != 0 && value & cr0::PE == 0 {
                    return Err(Fault::gp0());
                }
                if value & cr0::NW != 0 && value & cr0::CD == 0 {
                    return Err(Fault::gp0());
                }
                let old = self.cpu.cr0;
                let new = (value & cr0::DEFINED) | cr0::ET;
                self.cpu.cr0 = new;
                if (old ^ new) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
                    self.tlb.flush();
                }
            }
            2 => self.cpu.cr2 = value,
            3 => {
                self.cpu.cr3 = value & 0xFFFF_F018;
                self.tlb.flush();
            }
            4 => {
                if value & !cr4::SUPPORTED != 0 {
                    return Err(Fault::gp0());
                }
                self.cpu.cr4 = value;
                self.tlb.flush();
            }
            _ => return Err(Fault::ud()),
        }
        Ok(())
    }

    /// LMSW: loads PE, MP, EM and TS from the low bits of `value`; it can
    /// set PE but never clear it.
    pub fn load_machine_status_word(&mut self, value: u16) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        let old = self.cpu.cr0;
        self.cpu.cr0 = (old & !0xE) | (value as u32 & 0xF) | (old & cr0::PE);
        Ok(())
    }

    /// CLTS: clear CR0.TS, which a task switch set so the next x87
    /// instruction raises #NM (SDM Vol. 3A 2.5).
    pub fn clear_task_switched(&mut self) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        self.cpu.cr0 &= !cr0::TS;
        Ok(())
    }

    /// INVLPG of the page holding linear address `linear`.
    pub fn invalidate_tlb_entry(&mut self, linear: u32) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        self.tlb.invalidate_page(linear);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::state::{attr, SegReg};

    /// A machine in flat protected mode at `cpl`, with paging on and one
    /// 4 MiB identity page, and its TLB filled for linear address 0.
    fn paged_machine(cpl: u16) -> Machine {
        let mut m = Machine::with_ram_mib(4).unwrap();
        // Page directory at 0x1000: entry 0 maps 4 MiB at 0 (PS, U, W, P).
        m.phys_write(0x1000, 4, 0x87);
        m.cpu.cr4 = cr4::PSE;
        m.cpu.cr3 = 0x1000;
        m.cpu.cr0 = cr0::PE | cr0::PG | cr0::ET;
        let cs = &mut m.cpu.seg[SegReg::Cs as usize];
        cs.selector = 8 | cpl;
        cs.attr = (cs.attr & !attr::DPL_MASK) | ((cpl as u32) << attr::DPL_SHIFT);
        let ss = &mut m.cpu.seg[SegReg::Ss as usize];
        ss.selector = 0x10 | cpl;
        ss.attr = (ss.attr & !attr::DPL_MASK) | ((cpl as u32) << attr::DPL_SHIFT);
        m.read_lin::<u32>(0x2000, false).unwrap();
        assert!(cached(&m));
        m
    }

    /// Whether the TLB holds the translation of linear 0x2000.
    fn cached(m: &Machine) -> bool {
        m.tlb.lookup_phys(0x2000, false).is_some()
    }

    #[test]
    fn a_cr3_write_flushes_the_tlb() {
        let mut m = paged_machine(0);
        m.write_control_register(3, 0x1000).unwrap();
        assert!(!cached(&m));
    }

    #[test]
    fn a_cr0_write_that_changes_wp_flushes_the_tlb_and_one_that_changes_ts_does_not() {
        let mut m = paged_machine(0);
        let cr0 = m.cpu.cr0;
        m.write_control_register(0, cr0 | cr0::TS).unwrap();
        assert!(cached(&m));
        m.write_control_register(0, cr0 | cr0::WP).unwrap();
        assert!(!cached(&m));
        assert_eq!(m.cpu.cr0, cr0 | cr0::WP);
    }

    #[test]
    fn cr0_with_pg_and_without_pe_is_a_general_protection_fault() {
        let mut m = paged_machine(0);
        assert_eq!(m.write_control_register(0, cr0::PG), Err(Fault::gp0()));
    }

    #[test]
    fn a_control_register_write_at_cpl3_is_a_general_protection_fault() {
        let mut m = paged_machine(3);
        assert_eq!(m.write_control_register(3, 0), Err(Fault::gp0()));
        assert_eq!(m.cpu.cr3, 0x1000);
    }

    #[test]
    fn cr1_does_not_exist() {
        let m = paged_machine(0);
        assert_eq!(m.read_control_register(1), Err(Fault::ud()));
    }

    #[test]
    fn an_unimplemented_cr4_bit_is_a_general_protection_fault() {
        let mut m = paged_machine(0);
        assert_eq!(m.write_control_register(4, 1 << 5), Err(Fault::gp0()));
    }

    #[test]
    fn lmsw_sets_pe_but_never_clears_it() {
        let mut m = paged_machine(0);
        m.load_machine_status_word(0).unwrap();
        assert_ne!(m.cpu.cr0 & cr0::PE, 0);
        assert_eq!(m.cpu.cr0 & (cr0::MP | cr0::EM | cr0::TS), 0);
    }

    #[test]
    fn invlpg_drops_the_page_from_the_tlb() {
        let mut m = paged_machine(0);
        m.invalidate_tlb_entry(0x2000).unwrap();
        assert!(!cached(&m));
    }
}
