//! Software interrupts (SDM Vol. 2A INT n/INTO/INT3/INT1): the checks the
//! instruction makes before the event is delivered through
//! [`Machine::deliver_event`]. INT n in virtual-8086 mode is
//! IOPL-sensitive (ringside has no VME); INT3 and INTO are not. ICEBP
//! (INT1) skips the gate's DPL check. The saved EIP is the next
//! instruction's: these are traps.

use super::events::{Delivery, Event, EventSource};
use super::flags::OF;
use super::{vector, CpuResult, Fault};
use crate::cpu::boundary::work;
use crate::machine::Machine;

/// Which software interrupt instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftwareInterrupt {
    /// INT n (CD ib).
    IntN(u8),
    /// INT3 (CC): #BP.
    Int3,
    /// INTO (CE): #OF when EFLAGS.OF is set.
    Into,
    /// ICEBP/INT1 (F1): #DB.
    Icebp,
}

impl Machine {
    /// Execute a software interrupt instruction; `next_eip` is the EIP
    /// after it. Returns how delivery ended, or `None` for an INTO with OF
    /// clear (nothing is delivered). A fault of the instruction's own
    /// checks is returned as `Err` with nothing committed; faults during
    /// delivery are handled by `deliver_event`.
    pub fn software_interrupt(
        &mut self,
        interrupt: SoftwareInterrupt,
        next_eip: u32,
    ) -> CpuResult<Option<Delivery>> {
        self.pending().raise(work::CPU);
        let (vector, source) = match interrupt {
            SoftwareInterrupt::IntN(n) => {
                if self.cpu.vm86() && self.cpu.iopl() < 3 {
                    return Err(Fault::gp0());
                }
                (n, EventSource::Software)
            }
            SoftwareInterrupt::Int3 => (vector::BP, EventSource::Software),
            SoftwareInterrupt::Into => {
                if self.cpu.eflags & OF == 0 {
                    return Ok(None);
                }
                (vector::OF, EventSource::Software)
            }
            SoftwareInterrupt::Icebp => (vector::DB, EventSource::Icebp),
        };
        let event = Event {
            vector,
            source,
            error_code: None,
            address: 0,
        };
        Ok(Some(self.deliver_event(event, next_eip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::flags::VM;

    #[test]
    fn into_with_of_clear_delivers_nothing() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        let before = m.cpu.clone();
        assert_eq!(
            m.software_interrupt(SoftwareInterrupt::Into, 0x101),
            Ok(None)
        );
        assert_eq!(m.cpu, before);
    }

    #[test]
    fn int_n_in_real_mode_enters_the_ivt_handler_with_the_next_eip_saved() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.cpu.seg[crate::cpu::SegReg::Ss as usize] = crate::cpu::Segment::real_mode(0);
        m.cpu.gpr[crate::cpu::reg::ESP] = 0x1000;
        // IVT entry 0x21: 0x0050:0x0008.
        m.phys_write(0x21 * 4, 4, 0x0050_0008);
        let d = m.software_interrupt(SoftwareInterrupt::IntN(0x21), 0x0123);
        assert_eq!(d, Ok(Some(Delivery::Delivered)));
        assert_eq!(m.cpu.eip, 0x0008);
        assert_eq!(m.cpu.seg[crate::cpu::SegReg::Cs as usize].selector, 0x0050);
        // FLAGS, CS, IP: IP is the next instruction's.
        assert_eq!(m.phys_read(0x0FFA, 2), 0x0123);
    }

    #[test]
    fn int_n_in_virtual_8086_mode_below_iopl_3_is_a_general_protection_fault_but_int3_is_not() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.cpu.cr0 |= crate::cpu::cr0::PE;
        m.cpu.eflags |= VM;
        assert_eq!(
            m.software_interrupt(SoftwareInterrupt::IntN(0x21), 0),
            Err(Fault::gp0())
        );
        assert!(m
            .software_interrupt(SoftwareInterrupt::Int3, 0)
            .is_ok_and(|d| d.is_some()));
    }
}
