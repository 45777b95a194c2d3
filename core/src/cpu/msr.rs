//! Model-specific registers (SDM Vol. 2B RDMSR, WRMSR, RDTSC, RDPMC; Vol. 4
//! tables 2-2 and "MSRs in Intel Core Solo and Intel Core Duo
//! processors"): the MSRs of the part CPUID names (`cpu::cpuid`) that
//! matter to an operating system —
//!
//! - the time-stamp counter, IA32_APIC_BASE and the SYSENTER MSRs;
//! - IA32_PLATFORM_ID and IA32_BIOS_SIGN_ID (no microcode update loaded);
//! - IA32_MISC_ENABLE, with "limit CPUID maxval" acting on CPUID;
//! - the MTRRs (IA32_MTRRCAP: 8 variable ranges, fixed ranges, WC) and
//!   IA32_PAT, advertised by CPUID.1:EDX bits 12 and 16: checked and
//!   stored (memory types change no behaviour here: there are no caches
//!   to model);
//! - architectural performance monitoring version 1 (CPUID leaf 0xA):
//!   IA32_PERFEVTSEL0/1 and IA32_PMC0/1 count unhalted core cycles,
//!   reference cycles and instructions retired — one cycle per
//!   instruction, as virtual time runs — at every privilege level (the USR
//!   and OS bits enable counting but do not filter by CPL), with no
//!   overflow interrupt; other events count nothing.
//!
//! Any other index is #GP(0), as on a CPU without it: IA32_EFER among
//! them, since CPUID advertises neither NX nor long mode, and the AMD
//! performance MSRs.

use super::state::msr_index::{self, misc_enable};
use super::state::{cr4, reg};
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

/// IA32_MTRRCAP: 8 variable ranges, fixed ranges supported (bit 8), write
/// combining supported (bit 10); no SMRR.
pub const MTRRCAP: u64 = 8 | 1 << 8 | 1 << 10;

/// Memory types an MTRR may hold (SDM Vol. 3A table 11-8): UC, WC, WT, WP,
/// WB.
fn valid_mtrr_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// A PAT entry (SDM Vol. 3A table 11-10): UC, WC, WT, WP, WB, UC-.
fn valid_pat_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

/// Writable IA32_PERFEVTSEL bits for version 1: event, unit mask, USR, OS,
/// E, PC, INT, EN, INV and CMASK (bit 21 and bits 63:32 are reserved).
const PERFEVTSEL_WRITABLE: u64 = 0xFFDF_FFFF;
const PERFEVTSEL_USR: u64 = 1 << 16;
const PERFEVTSEL_OS: u64 = 1 << 17;
const PERFEVTSEL_EN: u64 = 1 << 22;
const PERFEVTSEL_INV: u64 = 1 << 23;
const PMC_MASK: u64 = (1 << 40) - 1;

/// Whether a counter with this event select counts retired instructions
/// (which, in virtual time, are also the cycles): unhalted core cycles
/// (0x3C/0), reference cycles (0x3C/1) and instructions retired (0xC0/0),
/// enabled for some privilege level, without inversion or a threshold.
fn counts_instructions(sel: u64) -> bool {
    let event = (sel & 0xFF, (sel >> 8) & 0xFF);
    sel & PERFEVTSEL_EN != 0
        && sel & (PERFEVTSEL_USR | PERFEVTSEL_OS) != 0
        && sel & PERFEVTSEL_INV == 0
        && sel >> 24 & 0xFF == 0
        && matches!(event, (0x3C, 0) | (0x3C, 1) | (0xC0, 0))
}

impl Machine {
    /// RDMSR of `index` (ECX).
    pub fn read_msr(&self, index: u32) -> CpuResult<u64> {
        self.check_privileged()?;
        let m = &self.cpu.msr;
        Ok(match index {
            msr_index::TSC => self.tsc(),
            // Platform 0 (bits 52:50).
            msr_index::PLATFORM_ID => 0,
            msr_index::APIC_BASE => m.apic_base,
            // The microcode revision in bits 63:32: none loaded.
            msr_index::BIOS_SIGN_ID => 0,
            msr_index::PMC0 | msr_index::PMC1 => {
                self.performance_counter((index - msr_index::PMC0) as usize)
            }
            msr_index::MTRRCAP => MTRRCAP,
            msr_index::SYSENTER_CS => m.sysenter_cs as u64,
            msr_index::SYSENTER_ESP => m.sysenter_esp as u64,
            msr_index::SYSENTER_EIP => m.sysenter_eip as u64,
            msr_index::PERFEVTSEL0 | msr_index::PERFEVTSEL1 => {
                m.perfevtsel[(index - msr_index::PERFEVTSEL0) as usize]
            }
            msr_index::MISC_ENABLE => m.misc_enable,
            msr_index::MTRR_PHYSBASE0..=msr_index::MTRR_PHYSMASK7 => {
                m.mtrr_var[(index - msr_index::MTRR_PHYSBASE0) as usize]
            }
            _ if fixed_mtrr(index).is_some() => m.mtrr_fixed[fixed_mtrr(index).unwrap_or(0)],
            msr_index::PAT => m.pat,
            msr_index::MTRR_DEF_TYPE => m.mtrr_def_type,
            _ => return Err(Fault::gp0()),
        })
    }

    /// WRMSR of `value` (EDX:EAX) to `index` (ECX). Writing the TSC sets
    /// the offset from the instruction count, so the counter runs on from
    /// the value written. Reserved bits set, or an invalid memory type, is
    /// #GP(0) and changes nothing.
    pub fn write_msr(&mut self, index: u32, value: u64) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        let check = |ok: bool| if ok { Ok(()) } else { Err(Fault::gp0()) };
        match index {
            msr_index::TSC => self.cpu.msr.tsc_offset = value.wrapping_sub(self.clock.icount),
            msr_index::APIC_BASE => {
                // Bits 0-7, 9-10 and above bit 35 are reserved (SDM Vol. 3A 10.4.4).
                check(value & !0xF_FFFF_F900 == 0)?;
                self.cpu.msr.apic_base = value;
            }
            // Writing starts a microcode update check; nothing to load.
            msr_index::BIOS_SIGN_ID => {}
            msr_index::PMC0 | msr_index::PMC1 => {
                // Version 1: bits 31:0 are written and sign-extended into
                // 39:32 (SDM Vol. 3B 20.2.1).
                let v = value as u32 as i32 as i64 as u64 & PMC_MASK;
                self.set_performance_counter((index - msr_index::PMC0) as usize, v);
            }
            msr_index::SYSENTER_CS => self.cpu.msr.sysenter_cs = value as u32,
            msr_index::SYSENTER_ESP => self.cpu.msr.sysenter_esp = value as u32,
            msr_index::SYSENTER_EIP => self.cpu.msr.sysenter_eip = value as u32,
            msr_index::PERFEVTSEL0 | msr_index::PERFEVTSEL1 => {
                check(value & !PERFEVTSEL_WRITABLE == 0)?;
                let i = (index - msr_index::PERFEVTSEL0) as usize;
                let now = self.performance_counter(i);
                self.cpu.msr.perfevtsel[i] = value;
                self.set_performance_counter(i, now);
            }
            msr_index::MISC_ENABLE => {
                check(value & !(misc_enable::WRITABLE | misc_enable::READ_ONLY) == 0)?;
                self.cpu.msr.misc_enable = value & misc_enable::WRITABLE | misc_enable::READ_ONLY;
            }
            msr_index::MTRR_PHYSBASE0..=msr_index::MTRR_PHYSMASK7 => {
                let i = (index - msr_index::MTRR_PHYSBASE0) as usize;
                // 32 physical address bits (CPUID 0x80000008): PhysBase is
                // type (7:0) and base (31:12); PhysMask is valid (11) and
                // mask (31:12) (SDM Vol. 3A 11.11.2.3).
                if i.is_multiple_of(2) {
                    check(value & !0xFFFF_F0FF == 0 && valid_mtrr_type(value & 0xFF))?;
                } else {
                    check(value & !0xFFFF_F800 == 0)?;
                }
                self.cpu.msr.mtrr_var[i] = value;
            }
            _ if fixed_mtrr(index).is_some() => {
                check((0..8).all(|b| valid_mtrr_type(value >> (8 * b) & 0xFF)))?;
                self.cpu.msr.mtrr_fixed[fixed_mtrr(index).unwrap_or(0)] = value;
            }
            msr_index::PAT => {
                check((0..8).all(|b| valid_pat_type(value >> (8 * b) & 0xFF)))?;
                self.cpu.msr.pat = value;
            }
            msr_index::MTRR_DEF_TYPE => {
                // Type (7:0), fixed-range enable (10), enable (11).
                check(value & !0xCFF == 0 && valid_mtrr_type(value & 0xFF))?;
                self.cpu.msr.mtrr_def_type = value;
            }
            // IA32_PLATFORM_ID and IA32_MTRRCAP are read-only.
            _ => return Err(Fault::gp0()),
        }
        Ok(())
    }

    /// IA32_PMCn now.
    fn performance_counter(&self, n: usize) -> u64 {
        let m = &self.cpu.msr;
        if counts_instructions(m.perfevtsel[n]) {
            m.pmc[n].wrapping_add(self.clock.icount) & PMC_MASK
        } else {
            m.pmc[n]
        }
    }

    /// Make IA32_PMCn read `v` now, counting on under its event select.
    fn set_performance_counter(&mut self, n: usize, v: u64) {
        self.cpu.msr.pmc[n] = if counts_instructions(self.cpu.msr.perfevtsel[n]) {
            v.wrapping_sub(self.clock.icount)
        } else {
            v
        };
    }

    /// RDPMC (SDM Vol. 2B): counter ECX into EDX:EAX, at CPL 0 or with
    /// CR4.PCE set; a counter number the CPU does not have is #GP(0).
    pub fn read_performance_monitoring_counter(&self) -> CpuResult<u64> {
        if self.cpu.cr4 & cr4::PCE == 0 && self.cpu.cpl() != 0 {
            return Err(Fault::gp0());
        }
        match self.cpu.gpr[reg::ECX] {
            n @ 0..=1 => Ok(self.performance_counter(n as usize)),
            _ => Err(Fault::gp0()),
        }
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

/// The index in `Msrs::mtrr_fixed` of a fixed-range MTRR.
fn fixed_mtrr(index: u32) -> Option<usize> {
    match index {
        msr_index::MTRR_FIX64K_00000 => Some(0),
        msr_index::MTRR_FIX16K_80000 => Some(1),
        msr_index::MTRR_FIX16K_A0000 => Some(2),
        msr_index::MTRR_FIX4K_C0000..=msr_index::MTRR_FIX4K_F8000 => {
            Some(3 + (index - msr_index::MTRR_FIX4K_C0000) as usize)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efer_is_a_general_protection_fault_because_cpuid_advertises_no_nx_or_long_mode() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.cpuid(0x8000_0001, 0).edx & (1 << 20 | 1 << 29), 0);
        assert_eq!(m.write_msr(msr_index::EFER, 0), Err(Fault::gp0()));
        assert_eq!(m.read_msr(msr_index::EFER), Err(Fault::gp0()));
    }

    #[test]
    fn amd_performance_msrs_are_a_general_protection_fault_on_an_intel_part() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        for index in [0xC001_0000, 0xC001_0004] {
            assert_eq!(m.read_msr(index), Err(Fault::gp0()));
            assert_eq!(m.write_msr(index, 0), Err(Fault::gp0()));
        }
    }

    #[test]
    fn misc_enable_resets_with_fast_strings_and_keeps_its_read_only_bits() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.read_msr(msr_index::MISC_ENABLE), Ok(0x1881));
        m.write_msr(msr_index::MISC_ENABLE, misc_enable::LIMIT_CPUID_MAXVAL)
            .unwrap();
        assert_eq!(
            m.read_msr(msr_index::MISC_ENABLE),
            Ok(misc_enable::LIMIT_CPUID_MAXVAL | misc_enable::READ_ONLY)
        );
        assert_eq!(m.cpuid(0, 0).eax, 2, "limit CPUID maxval acts on CPUID");
        assert_eq!(
            m.write_msr(msr_index::MISC_ENABLE, 1 << 1),
            Err(Fault::gp0())
        );
    }

    #[test]
    fn mtrrcap_reports_eight_variable_ranges_fixed_ranges_and_wc_and_is_read_only() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.read_msr(msr_index::MTRRCAP), Ok(0x508));
        assert_eq!(m.write_msr(msr_index::MTRRCAP, 0), Err(Fault::gp0()));
        assert_ne!(m.cpuid(1, 0).edx & (1 << 12), 0, "CPUID advertises MTRR");
    }

    #[test]
    fn variable_mtrrs_keep_valid_values_and_refuse_bad_types_and_reserved_bits() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_msr(msr_index::MTRR_PHYSBASE0, 0x0000_0006).unwrap();
        m.write_msr(msr_index::MTRR_PHYSBASE0 + 1, 0xF800_0800)
            .unwrap();
        assert_eq!(m.read_msr(msr_index::MTRR_PHYSBASE0), Ok(6));
        assert_eq!(m.read_msr(msr_index::MTRR_PHYSBASE0 + 1), Ok(0xF800_0800));
        assert_eq!(
            m.write_msr(msr_index::MTRR_PHYSMASK7 - 1, 2),
            Err(Fault::gp0()),
            "type 2 is reserved"
        );
        assert_eq!(
            m.write_msr(msr_index::MTRR_PHYSBASE0, 1 << 32),
            Err(Fault::gp0()),
            "beyond 32 address bits"
        );
        assert_eq!(
            m.write_msr(msr_index::MTRR_PHYSMASK7, 0x100),
            Err(Fault::gp0())
        );
        assert_eq!(
            m.read_msr(msr_index::MTRR_PHYSBASE0),
            Ok(6),
            "a refused write changes nothing"
        );
    }

    #[test]
    fn fixed_mtrrs_and_the_default_type_check_every_memory_type() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_msr(msr_index::MTRR_FIX4K_F8000, 0x0505_0505_0505_0505)
            .unwrap();
        assert_eq!(
            m.read_msr(msr_index::MTRR_FIX4K_F8000),
            Ok(0x0505_0505_0505_0505)
        );
        assert_eq!(
            m.write_msr(msr_index::MTRR_FIX16K_A0000, 0x0300),
            Err(Fault::gp0())
        );
        assert_eq!(
            m.read_msr(0x260),
            Err(Fault::gp0()),
            "no fixed MTRR at 0x260"
        );
        assert_eq!(
            m.read_msr(msr_index::MTRR_DEF_TYPE),
            Ok(0),
            "MTRRs are off after RESET"
        );
        m.write_msr(msr_index::MTRR_DEF_TYPE, 0xC06).unwrap();
        assert_eq!(
            m.write_msr(msr_index::MTRR_DEF_TYPE, 0x1006),
            Err(Fault::gp0())
        );
    }

    #[test]
    fn pat_resets_to_the_architectural_value_and_refuses_reserved_types() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.read_msr(msr_index::PAT), Ok(0x0007_0406_0007_0406));
        assert_ne!(m.cpuid(1, 0).edx & (1 << 16), 0, "CPUID advertises PAT");
        m.write_msr(msr_index::PAT, 0x0007_0106_0007_0406).unwrap();
        assert_eq!(m.read_msr(msr_index::PAT), Ok(0x0007_0106_0007_0406));
        assert_eq!(m.write_msr(msr_index::PAT, 0x02), Err(Fault::gp0()));
        assert_eq!(m.write_msr(msr_index::PAT, 0x08), Err(Fault::gp0()));
    }

    #[test]
    fn an_enabled_counter_counts_retired_instructions_and_a_stopped_one_holds() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.clock.icount = 1000;
        m.write_msr(msr_index::PMC0, 5).unwrap();
        // Instructions retired (0xC0), USR | OS | EN.
        m.write_msr(msr_index::PERFEVTSEL0, 0x43_00C0).unwrap();
        m.clock.icount = 1250;
        assert_eq!(m.read_msr(msr_index::PMC0), Ok(255));
        m.write_msr(msr_index::PERFEVTSEL0, 0x03_00C0).unwrap();
        m.clock.icount = 5000;
        assert_eq!(
            m.read_msr(msr_index::PMC0),
            Ok(255),
            "EN clear: the counter holds"
        );
        // An event ringside does not count (LLC misses, 0x2E/0x41).
        m.write_msr(msr_index::PERFEVTSEL1, 0x43_412E).unwrap();
        m.clock.icount = 6000;
        assert_eq!(m.read_msr(msr_index::PMC1), Ok(0));
        assert_eq!(
            m.write_msr(msr_index::PERFEVTSEL0, 1 << 32),
            Err(Fault::gp0())
        );
    }

    #[test]
    fn a_counter_write_sign_extends_bit_31_into_40_bits_and_wraps_there() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_msr(msr_index::PMC1, 0xFFFF_FFFE).unwrap();
        assert_eq!(m.read_msr(msr_index::PMC1), Ok(0xFF_FFFF_FFFE));
        m.write_msr(msr_index::PERFEVTSEL1, 0x41_003C).unwrap();
        m.clock.icount += 3;
        assert_eq!(m.read_msr(msr_index::PMC1), Ok(1));
    }

    #[test]
    fn rdpmc_needs_cpl_0_or_cr4_pce_and_a_counter_that_exists() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_msr(msr_index::PMC0, 42).unwrap();
        m.cpu.gpr[reg::ECX] = 0;
        assert_eq!(m.read_performance_monitoring_counter(), Ok(42));
        m.cpu.gpr[reg::ECX] = 2;
        assert_eq!(m.read_performance_monitoring_counter(), Err(Fault::gp0()));
    }

    #[test]
    fn platform_id_and_the_microcode_signature_read_and_platform_id_is_read_only() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.read_msr(msr_index::PLATFORM_ID), Ok(0));
        assert_eq!(m.write_msr(msr_index::PLATFORM_ID, 0), Err(Fault::gp0()));
        m.write_msr(msr_index::BIOS_SIGN_ID, 0).unwrap();
        assert_eq!(m.read_msr(msr_index::BIOS_SIGN_ID), Ok(0));
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
