//! A 16550A UART (National Semiconductor PC16550D data sheet): the eight
//! registers with the divisor latch, FIFO control, line and modem status,
//! and loopback. Transmitted bytes go to the host sink at once, so the
//! transmitter is always empty (LSR.THRE and TEMT stay set). Receiving from
//! the host and interrupts come with the platform issue; until then the
//! receive FIFO only fills in loopback mode.

use std::collections::VecDeque;

use ringside_core::bus::{Device, DeviceCtx};

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
            rx: VecDeque::new(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            fcr: 0,
            divisor: 12,
        }
    }

    fn lsr(&self) -> u8 {
        LSR_THRE | LSR_TEMT | if self.rx.is_empty() { 0 } else { LSR_DR }
    }

    /// MSR: in loopback the modem inputs follow the MCR outputs.
    fn msr(&self) -> u8 {
        if self.mcr & MCR_LOOP != 0 {
            let m = self.mcr;
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
        let dlab = self.lcr & LCR_DLAB != 0;
        (match port.wrapping_sub(self.base) {
            0 if dlab => self.divisor as u8,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            // IIR: no interrupt pending; FIFO-enabled bits when FCR.0 is set.
            2 => 0x01 | if self.fcr & 1 != 0 { 0xC0 } else { 0 },
            3 => self.lcr,
            4 => self.mcr,
            5 => self.lsr(),
            6 => self.msr(),
            7 => self.scr,
            _ => 0xFF,
        }) as u32
    }

    fn io_write(&mut self, port: u16, _size: u8, value: u32, _ctx: &mut DeviceCtx) {
        let v = value as u8;
        let dlab = self.lcr & LCR_DLAB != 0;
        match port.wrapping_sub(self.base) {
            0 if dlab => self.divisor = (self.divisor & 0xFF00) | v as u16,
            // In loopback the byte returns to the receiver (16-byte FIFO).
            0 if self.mcr & MCR_LOOP != 0 && self.rx.len() < 16 => self.rx.push_back(v),
            0 if self.mcr & MCR_LOOP != 0 => {}
            0 => {
                let _ = self.out.write_all(&[v]);
                if v == b'\n' {
                    let _ = self.out.flush();
                }
            }
            1 if dlab => self.divisor = (self.divisor & 0x00FF) | ((v as u16) << 8),
            1 => self.ier = v & 0x0F,
            2 => {
                self.fcr = v & 0xC9;
                if v & 0x2 != 0 {
                    self.rx.clear();
                }
            }
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1F,
            7 => self.scr = v,
            _ => {}
        }
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
    fn scratch_register_holds_its_value() {
        let (mut bus, _) = bus_with_uart();
        bus.io_write(COM1_BASE + 7, 1, 0xA5, 0);
        assert_eq!(bus.io_read(COM1_BASE + 7, 1, 0), 0xA5);
    }
}
