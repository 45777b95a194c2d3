//! A 16550A UART (National Semiconductor PC16550D data sheet): the eight
//! registers with the divisor latch, FIFO control, line and modem status,
//! and loopback. Transmitted bytes go to the host sink at once, so the
//! transmitter is always empty (LSR.THRE and TEMT stay set). Receiving from
//! the host and interrupts come with the platform issue; until then the
//! receive FIFO only fills in loopback mode.

use std::any::Any;
use std::collections::VecDeque;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Sink;

pub const COM1_BASE: u16 = 0x3F8;

const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const LCR_DLAB: u8 = 1 << 7;
const MCR_LOOP: u8 = 1 << 4;

pub struct Uart16550 {
    base: u16,
    out: Sink,
    regs: UartRegs,
}

/// The register state (what a saved state holds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct UartRegs {
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
}

impl Uart16550 {
    pub fn new(base: u16, out: Sink) -> Uart16550 {
        Uart16550 {
            base,
            out,
            regs: UartRegs {
                divisor: 12,
                ..UartRegs::default()
            },
        }
    }

    fn lsr(&self) -> u8 {
        LSR_THRE | LSR_TEMT | if self.regs.rx.is_empty() { 0 } else { LSR_DR }
    }

    /// MSR: in loopback the modem inputs follow the MCR outputs.
    fn msr(&self) -> u8 {
        if self.regs.mcr & MCR_LOOP != 0 {
            let m = self.regs.mcr;
            ((m & 0x2) << 3) | ((m & 0x1) << 5) | ((m & 0x4) << 4) | ((m & 0x8) << 4)
        } else {
            0xB0 // CTS, DSR, DCD: a terminal is attached
        }
    }
}

impl Device for Uart16550 {
    fn name(&self) -> &'static str {
        "uart16550"
    }

    fn io_read(&mut self, port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        let dlab = self.regs.lcr & LCR_DLAB != 0;
        (match port.wrapping_sub(self.base) {
            0 if dlab => self.regs.divisor as u8,
            0 => self.regs.rx.pop_front().unwrap_or(0),
            1 if dlab => (self.regs.divisor >> 8) as u8,
            1 => self.regs.ier,
            // IIR: no interrupt pending; FIFO-enabled bits when FCR.0 is set.
            2 => 0x01 | if self.regs.fcr & 1 != 0 { 0xC0 } else { 0 },
            3 => self.regs.lcr,
            4 => self.regs.mcr,
            5 => self.lsr(),
            6 => self.msr(),
            7 => self.regs.scr,
            _ => 0xFF,
        }) as u32
    }

    fn io_write(&mut self, port: u16, _size: u8, value: u32, _ctx: &mut DeviceCtx) {
        let v = value as u8;
        let dlab = self.regs.lcr & LCR_DLAB != 0;
        match port.wrapping_sub(self.base) {
            0 if dlab => self.regs.divisor = (self.regs.divisor & 0xFF00) | v as u16,
            // In loopback the byte returns to the receiver (16-byte FIFO).
            0 if self.regs.mcr & MCR_LOOP != 0 && self.regs.rx.len() < 16 => {
                self.regs.rx.push_back(v)
            }
            0 if self.regs.mcr & MCR_LOOP != 0 => {}
            0 => {
                let _ = self.out.write_all(&[v]);
                if v == b'\n' {
                    let _ = self.out.flush();
                }
            }
            1 if dlab => self.regs.divisor = (self.regs.divisor & 0x00FF) | ((v as u16) << 8),
            1 => self.regs.ier = v & 0x0F,
            2 => {
                self.regs.fcr = v & 0xC9;
                if v & 0x2 != 0 {
                    self.regs.rx.clear();
                }
            }
            3 => self.regs.lcr = v,
            4 => self.regs.mcr = v & 0x1F,
            7 => self.regs.scr = v,
            _ => {}
        }
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.regs).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let regs: UartRegs = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if regs.rx.len() > 16 {
            return Err(Self::state_error("receive FIFO longer than 16 bytes"));
        }
        self.regs = regs;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Uart16550 {
    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("uart16550", reason)
    }
}

impl Drop for Uart16550 {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedBuffer;
    use ringside_core::bus::Bus;

    fn bus_with_uart() -> (Bus, SharedBuffer) {
        let buf = SharedBuffer::default();
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Uart16550::new(COM1_BASE, Box::new(buf.clone()))));
        bus.claim_ports(id, COM1_BASE, COM1_BASE + 7);
        (bus, buf)
    }

    #[test]
    fn transmitted_bytes_reach_the_host() {
        let (mut bus, buf) = bus_with_uart();
        for b in b"hi\n" {
            assert_ne!(bus.io_read(COM1_BASE + 5, 1, 0) & LSR_THRE as u32, 0);
            bus.io_write(COM1_BASE, 1, *b as u32, 0);
        }
        assert_eq!(buf.contents(), b"hi\n");
    }

    #[test]
    fn divisor_latch_is_reached_with_dlab() {
        let (mut bus, buf) = bus_with_uart();
        bus.io_write(COM1_BASE + 3, 1, 0x80, 0);
        bus.io_write(COM1_BASE, 1, 0x01, 0);
        bus.io_write(COM1_BASE + 1, 1, 0x00, 0);
        assert_eq!(bus.io_read(COM1_BASE, 1, 0), 1);
        bus.io_write(COM1_BASE + 3, 1, 0x03, 0);
        assert_eq!(bus.io_read(COM1_BASE + 3, 1, 0), 3);
        assert!(buf.contents().is_empty());
    }

    #[test]
    fn loopback_returns_written_bytes() {
        let (mut bus, buf) = bus_with_uart();
        bus.io_write(COM1_BASE + 4, 1, MCR_LOOP as u32, 0);
        bus.io_write(COM1_BASE, 1, 0x5A, 0);
        assert_ne!(bus.io_read(COM1_BASE + 5, 1, 0) & LSR_DR as u32, 0);
        assert_eq!(bus.io_read(COM1_BASE, 1, 0), 0x5A);
        assert!(buf.contents().is_empty());
    }

    #[test]
    fn state_round_trips_through_save_and_restore() {
        let mut u = Uart16550::new(COM1_BASE, Box::new(std::io::sink()));
        u.regs.scr = 0x3C;
        u.regs.lcr = 0x03;
        let saved = u.save_state();
        let mut v = Uart16550::new(COM1_BASE, Box::new(std::io::sink()));
        v.restore_state(&saved).unwrap();
        assert_eq!(v.regs, u.regs);
        assert!(v.restore_state(&serde_json::json!({"ier": "x"})).is_err());
        assert_eq!(v.regs, u.regs, "a failed restore changes nothing");
    }

    #[test]
    fn scratch_register_holds_its_value() {
        let (mut bus, _) = bus_with_uart();
        bus.io_write(COM1_BASE + 7, 1, 0xA5, 0);
        assert_eq!(bus.io_read(COM1_BASE + 7, 1, 0), 0xA5);
    }
}
