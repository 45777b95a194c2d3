//! I/O protection (SDM Vol. 1 19.5): at CPL > IOPL, or in virtual-8086
//! mode, every port an IN, OUT, INS or OUTS accesses must be allowed by the
//! I/O permission bitmap of the current 32-bit TSS; otherwise #GP(0).

use super::segments::system_type;
use super::{CpuResult, Fault};
use crate::machine::Machine;

impl Machine {
    /// Check that `size` bytes of ports starting at `port` may be accessed.
    pub fn check_io_permission(&mut self, port: u16, size: u32) -> CpuResult<()> {
        let cpu = &self.cpu;
        if !cpu.protected_mode() || (!cpu.vm86() && cpu.cpl() <= cpu.iopl()) {
            return Ok(());
        }
        let tr = cpu.tr;
        let tss32 = matches!(
            (tr.attr & 0xF) as u8,
            system_type::TSS32_AVAIL | system_type::TSS32_BUSY
        );
        if !tss32 || tr.limit < 103 {
            return Err(Fault::gp0());
        }
        // The bitmap's offset is the word at 102 (SDM Vol. 3A figure 7-2);
        // a port's bit and the bits of the ports after it are read as one
        // word, so an access may straddle a byte.
        let map_base = self.read_lin::<u16>(tr.base.wrapping_add(102), false)? as u32;
        let byte = map_base + port as u32 / 8;
        if byte + 1 > tr.limit {
            return Err(Fault::gp0());
        }
        let bits = self.read_lin::<u16>(tr.base.wrapping_add(byte), false)? as u32;
        let mask = ((1u32 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp0());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::fixture::{protected_mode_machine, TSS};

    #[test]
    fn a_port_cleared_in_the_bitmap_is_allowed_at_cpl3_and_its_neighbour_is_not() {
        let mut m = protected_mode_machine(3);
        // The bitmap right after the TSS (offset 0x68), every port denied
        // up to 0x407, then port 0x3F8's bit cleared.
        m.cpu.tr.limit = 0x68 + 0x80;
        m.phys_write(TSS + 102, 2, 0x68);
        for b in 0..0x81u32 {
            m.phys_write(TSS + 0x68 + b, 1, 0xFF);
        }
        m.phys_write(TSS + 0x68 + 0x3F8 / 8, 1, 0xFE);
        assert_eq!(m.check_io_permission(0x3F8, 1), Ok(()));
        assert_eq!(m.check_io_permission(0x3F8, 2), Err(Fault::gp0()));
        assert_eq!(m.check_io_permission(0x3F9, 1), Err(Fault::gp0()));
    }

    #[test]
    fn ports_are_open_at_cpl0_without_reading_the_tss() {
        let mut m = protected_mode_machine(0);
        m.cpu.tr.limit = 0;
        assert_eq!(m.check_io_permission(0x80, 4), Ok(()));
    }
}
