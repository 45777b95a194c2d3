//! Fast system calls (SDM Vol. 2B SYSENTER/SYSEXIT, Vol. 3A 5.8.7): to ring
//! 0 and back with flat segments derived from IA32_SYSENTER_CS, no
//! descriptor reads and no stack frame.

use super::flags::{IF, RF, VM};
use super::state::{attr, reg, SegReg, Segment};
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

/// The flat 4 GiB segment SYSENTER/SYSEXIT load without reading a
/// descriptor.
fn flat(selector: u16, code: bool, dpl: u8) -> Segment {
    let ty = if code {
        attr::CODE | attr::RW | attr::ACCESSED
    } else {
        attr::RW | attr::ACCESSED
    };
    Segment {
        selector,
        _pad: 0,
        attr: ty | attr::S | attr::P | attr::DB | attr::G | ((dpl as u32) << attr::DPL_SHIFT),
        base: 0,
        limit: u32::MAX,
    }
}

impl Machine {
    /// SYSENTER: to ring 0 at IA32_SYSENTER_EIP with the stack at
    /// IA32_SYSENTER_ESP; CS from IA32_SYSENTER_CS and SS the next
    /// selector. Returns the EIP to continue at.
    pub fn sysenter(&mut self) -> CpuResult<u32> {
        self.pending().raise(work::CPU);
        let cs = self.cpu.msr.sysenter_cs as u16;
        if !self.cpu.protected_mode() || cs & 0xFFFC == 0 {
            return Err(Fault::gp0());
        }
        self.cpu.eflags &= !(VM | IF | RF);
        self.cpu.seg[SegReg::Cs as usize] = flat(cs & 0xFFFC, true, 0);
        self.cpu.seg[SegReg::Ss as usize] = flat((cs & 0xFFFC) + 8, false, 0);
        self.cpu.gpr[reg::ESP] = self.cpu.msr.sysenter_esp;
        Ok(self.cpu.msr.sysenter_eip)
    }

    /// SYSEXIT: back to ring 3 (CS = IA32_SYSENTER_CS + 16, SS + 24), EIP
    /// from EDX and ESP from ECX. Returns the EIP to continue at.
    pub fn sysexit(&mut self) -> CpuResult<u32> {
        self.pending().raise(work::CPU);
        let cs = self.cpu.msr.sysenter_cs as u16;
        if !self.cpu.protected_mode() || self.cpu.cpl() != 0 || cs & 0xFFFC == 0 {
            return Err(Fault::gp0());
        }
        self.cpu.seg[SegReg::Cs as usize] = flat((cs + 16) | 3, true, 3);
        self.cpu.seg[SegReg::Ss as usize] = flat((cs + 24) | 3, false, 3);
        self.cpu.gpr[reg::ESP] = self.cpu.gpr[reg::ECX];
        Ok(self.cpu.gpr[reg::EDX])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::protected_mode_machine;

    #[test]
    fn sysenter_enters_ring_0_with_flat_segments_from_the_msrs_and_sysexit_returns_to_ring_3() {
        let mut m = protected_mode_machine(3);
        m.cpu.eflags |= IF;
        m.cpu.msr.sysenter_cs = 0x08;
        m.cpu.msr.sysenter_esp = 0x9000;
        m.cpu.msr.sysenter_eip = 0x0040_0000;
        assert_eq!(m.sysenter(), Ok(0x0040_0000));
        assert_eq!(m.cpu.cpl(), 0);
        assert_eq!(m.cpu.seg[SegReg::Ss as usize].selector, 0x10);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x9000);
        assert_eq!(m.cpu.eflags & IF, 0);
        m.cpu.gpr[reg::ECX] = 0x7000;
        m.cpu.gpr[reg::EDX] = 0x1234;
        assert_eq!(m.sysexit(), Ok(0x1234));
        assert_eq!(m.cpu.cpl(), 3);
        assert_eq!(m.cpu.seg[SegReg::Cs as usize].selector, 0x1B);
        assert_eq!(m.cpu.gpr[reg::ESP], 0x7000);
    }

    #[test]
    fn sysenter_with_a_null_sysenter_cs_is_a_general_protection_fault() {
        let mut m = protected_mode_machine(3);
        assert_eq!(m.sysenter(), Err(Fault::gp0()));
    }
}
