//! Model-specific registers (SDM Vol. 4 table 2-2; Vol. 2B RDMSR, WRMSR,
//! RDTSC): the time-stamp counter, IA32_APIC_BASE and the three
//! SYSENTER MSRs. Any other index is #GP(0), as on a CPU without it.

use super::state::{cr4, msr_index};
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

impl Machine {
    /// RDMSR of `index` (ECX).
    pub fn read_msr(&self, index: u32) -> CpuResult<u64> {
        self.check_privileged()?;
        let m = &self.cpu.msr;
        Ok(match index {
            msr_index::TSC => self.tsc(),
            msr_index::APIC_BASE => m.apic_base,
            msr_index::SYSENTER_CS => m.sysenter_cs as u64,
            msr_index::SYSENTER_ESP => m.sysenter_esp as u64,
            msr_index::SYSENTER_EIP => m.sysenter_eip as u64,
            _ => return Err(Fault::gp0()),
        })
    }

    /// WRMSR of `value` (EDX:EAX) to `index` (ECX). Writing the TSC sets
    /// the offset from the instruction count, so the counter runs on from
    /// the value written.
    pub fn write_msr(&mut self, index: u32, value: u64) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        match index {
            msr_index::TSC => self.cpu.msr.tsc_offset = value.wrapping_sub(self.clock.icount),
            msr_index::APIC_BASE => {
                // Bits 0-7, 9-10 and above bit 35 are reserved (SDM Vol. 3A 10.4.4).
                if value & !0xF_FFFF_F900 != 0 {
                    return Err(Fault::gp0());
                }
                self.cpu.msr.apic_base = value;
            }
            msr_index::SYSENTER_CS => self.cpu.msr.sysenter_cs = value as u32,
            msr_index::SYSENTER_ESP => self.cpu.msr.sysenter_esp = value as u32,
            msr_index::SYSENTER_EIP => self.cpu.msr.sysenter_eip = value as u32,
            _ => return Err(Fault::gp0()),
        }
        Ok(())
    }

    /// RDTSC: the time-stamp counter; with CR4.TSD set only CPL 0 may read
    /// it (SDM Vol. 3A 17.17).
    pub fn read_time_stamp_counter(&self) -> CpuResult<u64> {
        if self.cpu.cr4 & cr4::TSD != 0 && self.cpu.cpl() != 0 {
            return Err(Fault::gp0());
        }
        Ok(self.tsc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrmsr_of_an_unknown_index_is_a_general_protection_fault() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.write_msr(0xC000_0080, 0), Err(Fault::gp0()));
        assert_eq!(m.read_msr(0xC000_0080), Err(Fault::gp0()));
    }

    #[test]
    fn a_tsc_write_makes_the_counter_run_on_from_the_value_written() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.clock.icount = 100;
        m.write_msr(msr_index::TSC, 5000).unwrap();
        m.clock.icount = 150;
        assert_eq!(m.read_msr(msr_index::TSC), Ok(5050));
        assert_eq!(m.read_time_stamp_counter(), Ok(5050));
    }

    #[test]
    fn apic_base_rejects_reserved_bits() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.write_msr(msr_index::APIC_BASE, 1), Err(Fault::gp0()));
        m.write_msr(msr_index::APIC_BASE, 0xFEE0_0900).unwrap();
        assert_eq!(m.read_msr(msr_index::APIC_BASE), Ok(0xFEE0_0900));
    }
}
