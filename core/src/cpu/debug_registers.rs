//! Debug registers (SDM Vol. 3A 17.2, Vol. 2B "MOV—Move to/from Debug
//! Registers"): DR0-DR3 addresses, DR6 status, DR7 control. DR4 and DR5
//! alias DR6 and DR7 unless CR4.DE is set, when they are #UD (17.2.2). A
//! write re-derives the armed data breakpoints
//! ([`Machine::sync_debug_registers`]). DR7.GD (general detect) is not
//! modelled.

use super::state::cr4;
use super::{CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

impl Machine {
    /// Map DRn to its storage.
    fn debug_register_index(&self, n: u8) -> CpuResult<usize> {
        match n {
            0..=3 | 6 | 7 => Ok(n as usize),
            4 | 5 if self.cpu.cr4 & cr4::DE == 0 => Ok(n as usize + 2),
            _ => Err(Fault::ud()),
        }
    }

    /// MOV from DRn.
    pub fn read_debug_register(&self, n: u8) -> CpuResult<u32> {
        self.check_privileged()?;
        let n = self.debug_register_index(n)?;
        Ok(self.cpu.dr[n])
    }

    /// MOV to DRn. DR6 and DR7 keep their reserved bits at the values the
    /// manual fixes (17.2.3, 17.2.4).
    pub fn write_debug_register(&mut self, n: u8, value: u32) -> CpuResult<()> {
        self.pending().raise(work::CPU);
        self.check_privileged()?;
        let n = self.debug_register_index(n)?;
        self.cpu.dr[n] = match n {
            6 => (value & 0x0000_E00F) | 0xFFFF_0FF0,
            7 => (value & 0xFFFF_2BFF) | 0x400,
            _ => value,
        };
        self.sync_debug_registers();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr4_aliases_dr6_without_cr4_de_and_is_undefined_with_it() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_debug_register(6, 0).unwrap();
        assert_eq!(m.read_debug_register(4), Ok(0xFFFF_0FF0));
        m.cpu.cr4 |= cr4::DE;
        assert_eq!(m.read_debug_register(4), Err(Fault::ud()));
    }

    #[test]
    fn a_dr7_write_arms_the_data_breakpoints() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_debug_register(0, 0x1000).unwrap();
        // L0 with R/W0 = 01 (data writes).
        m.write_debug_register(7, 1 | (1 << 16)).unwrap();
        assert!(m.watch.active);
        assert_eq!(m.cpu.dr[7], 0x401 | (1 << 16));
    }
}
