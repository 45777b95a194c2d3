//! A 16550A UART (National Semiconductor PC16550D data sheet): the eight
//! registers with the divisor latch, the 16-byte receive FIFO with its
//! trigger levels and character timeout, line and modem status, the four
//! interrupt sources in the IIR's priority order, and loopback.
//!
//! Transmitted bytes go to the host sink at once, so the transmitter is
//! always empty: LSR.THRE and TEMT stay set, and the THRE interrupt is
//! pending again right after each THR write. Host input waits in an
//! unbounded queue and moves into the receive FIFO as room frees up, so
//! no byte from the host is ever lost to an overrun; only loopback can
//! overrun the FIFO. The front-end gives bytes with `push_input` and then
//! calls the timer callback (`hostio::give_host_input`), which moves them
//! into the FIFO at once.
//!
//! When to ask the host for input (`hostio::InputRequests`, the front-end
//! feeds its script then, see `Signals::input_wanted`): on a poll, a read
//! of LSR or RBR that finds the receiver empty; and, when paced, one
//! character time of the programmed line format and baud rate after the
//! receiver became ready for a byte by interrupt (IER.ERBFI set, the IRQ
//! line able to reach the CPU, nothing received or queued), and every
//! character time after that while it stays so. That is when the next
//! byte of a wire at that rate would arrive, so a guest that reads RBR
//! only in its interrupt handler and never polls or halts gets a script
//! at the line's pace, at the same instructions on every run.
//!
//! The character timeout follows the data sheet: it is reported when the
//! FIFO holds data and nothing was received or read for four character
//! times (from the divisor and the word format in LCR) of virtual time.
//!
//! The IRQ line follows the UART's INTR output, whatever MCR says, as in
//! QEMU, whose guests rely on it (some never set OUT2). With
//! [`Uart16550::gate_irq_with_out2`] (`devices.com1.out2_gates_irq`) it
//! is a real PC board instead, which routes INTR through the OUT2 pin:
//! the line is driven only while MCR.OUT2 is set, and not in loopback,
//! where the data sheet forces the modem outputs inactive. Parity,
//! framing and break errors are never produced: there is no wire to
//! garble the host's bytes. Host input is flow-controlled (as with
//! RTS/CTS): a receive-FIFO reset empties the FIFO, and the host bytes it
//! held that the guest never read are sent again, so no input is lost.

use std::any::Any;
use std::collections::VecDeque;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use ringside_core::hostio::{HostInput, InputRequests};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Sink;

pub const COM1_BASE: u16 = 0x3F8;
pub const COM2_BASE: u16 = 0x2F8;
/// The PC's interrupt lines for COM1 and COM2.
pub const COM1_IRQ: u8 = 4;
pub const COM2_IRQ: u8 = 3;

const IER_ERBFI: u8 = 1 << 0;
const IER_ETBEI: u8 = 1 << 1;
const IER_ELSI: u8 = 1 << 2;
const IER_EDSSI: u8 = 1 << 3;

const IIR_NO_INTERRUPT: u8 = 0x01;
const IIR_LINE_STATUS: u8 = 0x06;
const IIR_RECEIVED_DATA: u8 = 0x04;
const IIR_CHARACTER_TIMEOUT: u8 = 0x0C;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_MODEM_STATUS: u8 = 0x00;
/// Bits 7-6 read 11 while the FIFOs are enabled.
const IIR_FIFOS_ENABLED: u8 = 0xC0;

const FCR_ENABLE: u8 = 1 << 0;
const FCR_RX_RESET: u8 = 1 << 1;
/// The bits FCR keeps: enable, DMA mode, trigger level.
const FCR_KEPT: u8 = 0xC9;

const LCR_STOP_BITS: u8 = 1 << 2;
const LCR_PARITY: u8 = 1 << 3;
const LCR_DLAB: u8 = 1 << 7;

const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
const MCR_BITS: u8 = 0x1F;

const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

const MSR_DCTS: u8 = 1 << 0;
const MSR_DDSR: u8 = 1 << 1;
const MSR_TERI: u8 = 1 << 2;
const MSR_DDCD: u8 = 1 << 3;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;
/// Outside loopback a terminal is attached: CTS, DSR and DCD are active.
const MSR_TERMINAL: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

const FIFO_BYTES: usize = 16;
/// The UART's clock on the PC: 1.8432 MHz, divided by 16 per bit.
const CLOCK_HZ: u128 = 1_843_200;

pub struct Uart16550 {
    base: u16,
    irq: u8,
    out: Sink,
    regs: UartRegs,
    /// MCR.OUT2 gates the IRQ line, as on a PC board (configuration, not
    /// state).
    out2_gate: bool,
    /// When to ask the host for input (host side, not state).
    requests: InputRequests,
}

/// The register state (what a saved state holds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct UartRegs {
    /// The receive FIFO; one byte deep (the 16450's holding register)
    /// while FCR.0 is clear.
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    /// Bytes from the host that have not yet fit into the FIFO.
    #[serde(default)]
    host_in: VecDeque<u8>,
    /// LSR.OE, latched until LSR is read.
    #[serde(default)]
    overrun: bool,
    /// The THRE interrupt is pending (cleared by an IIR read that reports
    /// it, or by a THR write).
    #[serde(default)]
    thre_pending: bool,
    /// MSR bits 3-0: changes of the modem inputs since MSR was read.
    #[serde(default)]
    msr_delta: u8,
    /// The last time a byte entered the FIFO or the guest read one: the
    /// character timeout counts from here.
    #[serde(default)]
    rx_activity_ns: u64,
    /// The level the IRQ line was last driven to.
    #[serde(default)]
    irq_level: bool,
    /// Since when the receiver has been ready for a byte by interrupt
    /// (`ready_for_paced_input`); paced host input is asked for one
    /// character time after it. None while it is not ready.
    #[serde(default)]
    rx_ready_since_ns: Option<u64>,
}

impl Uart16550 {
    /// A UART at `base` interrupting on COM1's line (IRQ 4).
    pub fn new(base: u16, out: Sink) -> Uart16550 {
        Uart16550::with_irq(base, COM1_IRQ, out)
    }

    /// A UART at `base` interrupting on line `irq`.
    pub fn with_irq(base: u16, irq: u8, out: Sink) -> Uart16550 {
        Uart16550 {
            base,
            irq,
            out,
            regs: UartRegs {
                // 9600 baud.
                divisor: 12,
                ..UartRegs::default()
            },
            out2_gate: false,
            requests: InputRequests::default(),
        }
    }

    /// Route the IRQ line through MCR.OUT2, as a PC board does, instead
    /// of driving it from INTR alone (QEMU's behaviour, the default).
    pub fn gate_irq_with_out2(mut self, gate: bool) -> Uart16550 {
        self.out2_gate = gate;
        self
    }

    /// Queue bytes from the host for the guest to receive. None is ever
    /// dropped: they wait here until the FIFO has room.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.regs.host_in.extend(bytes);
    }

    /// Host input the guest has not read yet (queued or in the FIFO).
    pub fn has_pending_input(&self) -> bool {
        !self.regs.host_in.is_empty() || !self.regs.rx.is_empty()
    }

    fn fifo_enabled(&self) -> bool {
        self.regs.fcr & FCR_ENABLE != 0
    }

    fn loopback(&self) -> bool {
        self.regs.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_BYTES
        } else {
            1
        }
    }

    /// FCR bits 7-6: 1, 4, 8 or 14 bytes.
    fn trigger_level(&self) -> usize {
        match self.regs.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// One character on the wire: start bit, 5-8 data bits, parity, and
    /// 1, 1.5 or 2 stop bits, at the divisor's rate. A divisor of 0 loads
    /// the 16-bit counter with 0, which counts 65536.
    fn character_ns(&self) -> u64 {
        let lcr = self.regs.lcr;
        let data_bits = 5 + (lcr & 3) as u128;
        let parity = if lcr & LCR_PARITY != 0 { 1 } else { 0 };
        let stop_half_bits = match (lcr & LCR_STOP_BITS != 0, data_bits) {
            (false, _) => 2,
            (true, 5) => 3,
            (true, _) => 4,
        };
        let half_bits = 2 * (1 + data_bits + parity) + stop_half_bits;
        let divisor = match self.regs.divisor {
            0 => 65_536,
            d => d as u128,
        };
        (half_bits * divisor * 16 * 1_000_000_000 / (2 * CLOCK_HZ)) as u64
    }

    fn timeout_deadline(&self) -> u64 {
        self.regs
            .rx_activity_ns
            .saturating_add(4 * self.character_ns())
    }

    /// The modem inputs: in loopback they follow the MCR outputs (RTS ->
    /// CTS, DTR -> DSR, OUT1 -> RI, OUT2 -> DCD).
    fn modem_inputs(&self) -> u8 {
        if self.loopback() {
            let m = self.regs.mcr;
            ((m & 0x2) << 3) | ((m & 0x1) << 5) | ((m & 0x4) << 4) | ((m & 0x8) << 4)
        } else {
            MSR_TERMINAL
        }
    }

    fn lsr(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.regs.rx.is_empty() {
            lsr |= LSR_DR;
        }
        if self.regs.overrun {
            lsr |= LSR_OE;
        }
        lsr
    }

    /// The highest-priority pending interrupt (data sheet table "Interrupt
    /// Control Functions"), as IIR bits 3-0.
    fn pending_interrupt(&self, now_ns: u64) -> Option<u8> {
        let ier = self.regs.ier;
        let rx = self.regs.rx.len();
        let data_ready = if self.fifo_enabled() {
            rx >= self.trigger_level()
        } else {
            rx > 0
        };
        if ier & IER_ELSI != 0 && self.regs.overrun {
            Some(IIR_LINE_STATUS)
        } else if ier & IER_ERBFI != 0 && data_ready {
            Some(IIR_RECEIVED_DATA)
        } else if ier & IER_ERBFI != 0
            && self.fifo_enabled()
            && rx > 0
            && now_ns >= self.timeout_deadline()
        {
            Some(IIR_CHARACTER_TIMEOUT)
        } else if ier & IER_ETBEI != 0 && self.regs.thre_pending {
            Some(IIR_THR_EMPTY)
        } else if ier & IER_EDSSI != 0 && self.regs.msr_delta != 0 {
            Some(IIR_MODEM_STATUS)
        } else {
            None
        }
    }

    fn iir(&self, now_ns: u64) -> u8 {
        let fifo = if self.fifo_enabled() {
            IIR_FIFOS_ENABLED
        } else {
            0
        };
        self.pending_interrupt(now_ns).unwrap_or(IIR_NO_INTERRUPT) | fifo
    }

    /// A byte arrives at the receiver from the loopback path. With the
    /// FIFO full the byte in the shift register is lost (FIFO mode) or
    /// overwrites the holding register (16450 mode); either way LSR.OE.
    fn receive_looped_back(&mut self, byte: u8, now_ns: u64) {
        if self.regs.rx.len() < self.rx_capacity() {
            self.regs.rx.push_back(byte);
        } else {
            self.regs.overrun = true;
            if !self.fifo_enabled() {
                if let Some(held) = self.regs.rx.back_mut() {
                    *held = byte;
                }
            }
        }
        self.regs.rx_activity_ns = now_ns;
    }

    /// Move host input into the FIFO while it has room. In loopback the
    /// receiver is cut off from the serial input, so the host waits.
    fn refill_from_host(&mut self, now_ns: u64) {
        if self.loopback() {
            return;
        }
        let mut moved = false;
        while self.regs.rx.len() < self.rx_capacity() {
            let Some(b) = self.regs.host_in.pop_front() else {
                break;
            };
            self.regs.rx.push_back(b);
            moved = true;
        }
        if moved {
            self.regs.rx_activity_ns = now_ns;
        }
    }

    /// The guest polled an empty receiver: ask the front-end for input.
    fn want_input_if_empty(&mut self, ctx: &mut DeviceCtx) {
        if self.requests != InputRequests::Off
            && self.regs.rx.is_empty()
            && self.regs.host_in.is_empty()
        {
            ctx.signals.input_wanted = true;
        }
    }

    /// The IRQ line is connected to INTR: always, unless the board gates
    /// it with OUT2 (then OUT2 set and not in loopback).
    fn irq_connected(&self) -> bool {
        !self.out2_gate || (self.regs.mcr & MCR_OUT2 != 0 && !self.loopback())
    }

    /// Drive the IRQ line: an interrupt is pending and reaches the line.
    fn update_irq(&mut self, ctx: &mut DeviceCtx) {
        let level = self.irq_connected() && self.pending_interrupt(ctx.now_ns).is_some();
        if level != self.regs.irq_level {
            self.regs.irq_level = level;
            ctx.set_irq(self.irq, level);
        }
    }

    /// The receive path is enabled and empty: the received-data interrupt
    /// is enabled and can reach the line, the receiver is connected to the
    /// serial input (not loopback), and nothing was received or queued.
    fn ready_for_paced_input(&self) -> bool {
        self.regs.ier & IER_ERBFI != 0
            && self.irq_connected()
            && !self.loopback()
            && self.regs.rx.is_empty()
            && self.regs.host_in.is_empty()
    }

    /// Note when the receiver became ready for a paced byte (or stopped
    /// being ready), after anything that may have changed it.
    fn note_receiver_readiness(&mut self, now_ns: u64) {
        let ready = self.ready_for_paced_input();
        InputRequests::note_ready(&mut self.regs.rx_ready_since_ns, ready, now_ns);
    }

    /// When paced host input is to be asked for: one character time after
    /// the receiver became ready.
    fn paced_input_due(&self) -> Option<u64> {
        self.requests
            .paced_due(self.regs.rx_ready_since_ns, self.character_ns())
    }

    /// The next callback: the character timeout, if it is still to come
    /// and would interrupt, or the next paced request for input.
    fn schedule(&mut self, ctx: &mut DeviceCtx) {
        let now = ctx.now_ns;
        let timeout = (self.regs.ier & IER_ERBFI != 0
            && self.fifo_enabled()
            && !self.regs.rx.is_empty()
            && self.timeout_deadline() > now)
            .then(|| self.timeout_deadline());
        match [timeout, self.paced_input_due()]
            .into_iter()
            .flatten()
            .min()
        {
            Some(t) => ctx.schedule(t),
            None => ctx.cancel_timer(),
        }
    }

    /// What every access and callback ends with: the IRQ line, the
    /// receiver's readiness, the next callback.
    fn settle(&mut self, ctx: &mut DeviceCtx) {
        self.update_irq(ctx);
        self.note_receiver_readiness(ctx.now_ns);
        self.schedule(ctx);
    }

    fn read_register(&mut self, offset: u16, ctx: &mut DeviceCtx) -> u8 {
        let dlab = self.regs.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.regs.divisor as u8,
            0 => {
                self.want_input_if_empty(ctx);
                let byte = self.regs.rx.pop_front().unwrap_or(0);
                self.regs.rx_activity_ns = ctx.now_ns;
                self.refill_from_host(ctx.now_ns);
                byte
            }
            1 if dlab => (self.regs.divisor >> 8) as u8,
            1 => self.regs.ier,
            2 => {
                let iir = self.iir(ctx.now_ns);
                if iir & 0x0F == IIR_THR_EMPTY {
                    self.regs.thre_pending = false;
                }
                iir
            }
            3 => self.regs.lcr,
            4 => self.regs.mcr,
            5 => {
                self.want_input_if_empty(ctx);
                let lsr = self.lsr();
                self.regs.overrun = false;
                lsr
            }
            6 => {
                let msr = self.modem_inputs() | self.regs.msr_delta;
                self.regs.msr_delta = 0;
                msr
            }
            7 => self.regs.scr,
            _ => 0xFF,
        }
    }

    fn write_register(&mut self, offset: u16, v: u8, ctx: &mut DeviceCtx) {
        let dlab = self.regs.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.regs.divisor = (self.regs.divisor & 0xFF00) | v as u16,
            0 => self.transmit(v, ctx),
            1 if dlab => self.regs.divisor = (self.regs.divisor & 0x00FF) | ((v as u16) << 8),
            1 => {
                let old = self.regs.ier;
                self.regs.ier = v & 0x0F;
                // Enabling ETBEI with the THR empty interrupts at once.
                if old & IER_ETBEI == 0 && v & IER_ETBEI != 0 {
                    self.regs.thre_pending = true;
                }
            }
            2 => {
                // Switching the FIFOs on or off empties them; the other
                // bits are only programmed while FCR.0 is (being) set.
                if (self.regs.fcr ^ v) & FCR_ENABLE != 0 || v & FCR_RX_RESET != 0 {
                    // Host input is flow-controlled (as with RTS/CTS): what a
                    // reset empties before the guest read it is sent again,
                    // so a script never loses bytes to a driver's FIFO setup.
                    let unread: Vec<u8> = self.regs.rx.drain(..).collect();
                    if !self.loopback() {
                        for b in unread.into_iter().rev() {
                            self.regs.host_in.push_front(b);
                        }
                    }
                }
                self.regs.fcr = if v & FCR_ENABLE != 0 { v & FCR_KEPT } else { 0 };
                self.refill_from_host(ctx.now_ns);
            }
            3 => self.regs.lcr = v,
            4 => {
                let inputs = self.modem_inputs();
                self.regs.mcr = v & MCR_BITS;
                self.note_modem_changes(inputs);
                self.refill_from_host(ctx.now_ns);
            }
            7 => self.regs.scr = v,
            // LSR is for factory testing and MSR is read-only.
            _ => {}
        }
    }

    /// Set the MSR delta bits for inputs that changed: DCTS, DDSR, DDCD on
    /// any change, TERI when RI goes from active to inactive.
    fn note_modem_changes(&mut self, before: u8) {
        let after = self.modem_inputs();
        let changed = before ^ after;
        let mut delta = 0;
        if changed & MSR_CTS != 0 {
            delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            delta |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            delta |= MSR_DDCD;
        }
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            delta |= MSR_TERI;
        }
        self.regs.msr_delta |= delta;
    }

    /// A THR write: the byte leaves at once, so THRE drops and rises again
    /// within the write, which an edge-triggered PIC sees as a new edge.
    fn transmit(&mut self, v: u8, ctx: &mut DeviceCtx) {
        self.regs.thre_pending = false;
        self.update_irq(ctx);
        if self.loopback() {
            self.receive_looped_back(v, ctx.now_ns);
        } else {
            let _ = self.out.write_all(&[v]);
            if v == b'\n' {
                let _ = self.out.flush();
            }
        }
        self.regs.thre_pending = true;
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("uart16550", reason)
    }
}

impl HostInput for Uart16550 {
    fn push_host_input(&mut self, bytes: &[u8]) {
        self.push_input(bytes);
    }

    fn set_input_requests(&mut self, requests: InputRequests) {
        self.requests = requests;
    }
}

impl Device for Uart16550 {
    fn name(&self) -> &'static str {
        "uart16550"
    }

    /// A wider access covers the next registers, one byte lane each.
    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        self.refill_from_host(ctx.now_ns);
        let mut value = 0u32;
        for i in 0..size.min(4) as u16 {
            let offset = port.wrapping_add(i).wrapping_sub(self.base);
            value |= (self.read_register(offset, ctx) as u32) << (8 * i);
        }
        self.settle(ctx);
        value
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        self.refill_from_host(ctx.now_ns);
        for i in 0..size.min(4) as u16 {
            let offset = port.wrapping_add(i).wrapping_sub(self.base);
            self.write_register(offset, (value >> (8 * i)) as u8, ctx);
        }
        self.settle(ctx);
    }

    /// The character timeout, host input given since the last access, or
    /// a paced request for input: the receiver has been ready for a
    /// character time with nothing arriving, so ask the host now, and
    /// again a character time later if it has nothing.
    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.refill_from_host(ctx.now_ns);
        self.note_receiver_readiness(ctx.now_ns);
        if self.paced_input_due().is_some_and(|t| t <= ctx.now_ns) {
            ctx.signals.input_wanted = true;
            self.regs.rx_ready_since_ns = Some(ctx.now_ns);
        }
        self.settle(ctx);
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.regs).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let regs: UartRegs = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if regs.rx.len() > FIFO_BYTES {
            return Err(Self::state_error("receive FIFO longer than 16 bytes"));
        }
        if regs.ier & !0x0F != 0 || regs.mcr & !MCR_BITS != 0 || regs.msr_delta & !0x0F != 0 {
            return Err(Self::state_error("reserved register bits set"));
        }
        self.regs = regs;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
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
    use proptest::prelude::*;
    use ringside_core::bus::Bus;

    const THR: u16 = COM1_BASE;
    const RBR: u16 = COM1_BASE;
    const IER: u16 = COM1_BASE + 1;
    const IIR: u16 = COM1_BASE + 2;
    const FCR: u16 = COM1_BASE + 2;
    const LCR: u16 = COM1_BASE + 3;
    const MCR: u16 = COM1_BASE + 4;
    const LSR: u16 = COM1_BASE + 5;
    const MSR: u16 = COM1_BASE + 6;

    fn bus_with_uart() -> (Bus, SharedBuffer) {
        let buf = SharedBuffer::default();
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Uart16550::new(COM1_BASE, Box::new(buf.clone()))));
        bus.claim_ports(id, COM1_BASE, COM1_BASE + 7);
        (bus, buf)
    }

    fn uart(bus: &mut Bus) -> &mut Uart16550 {
        bus.find_device::<Uart16550>()
            .expect("the bus holds a UART")
    }

    fn read(bus: &mut Bus, port: u16) -> u8 {
        bus.io_read(port, 1, 0) as u8
    }

    fn write(bus: &mut Bus, port: u16, v: u8) {
        bus.io_write(port, 1, v as u32, 0);
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
        u.push_input(b"queued");
        let saved = u.save_state();
        let mut v = Uart16550::new(COM1_BASE, Box::new(std::io::sink()));
        v.restore_state(&saved).unwrap();
        assert_eq!(v.regs, u.regs);
        assert!(v.restore_state(&serde_json::json!({"ier": "x"})).is_err());
        assert_eq!(v.regs, u.regs, "a failed restore changes nothing");
    }

    #[test]
    fn state_round_trips() {
        let (mut bus, _) = bus_with_uart();
        write(&mut bus, FCR, 0x41);
        write(&mut bus, IER, IER_ERBFI | IER_ETBEI);
        write(&mut bus, MCR, MCR_OUT2);
        uart(&mut bus).push_input(&[7; 20]);
        read(&mut bus, LSR);
        let saved = uart(&mut bus).save_state();
        let mut other = Uart16550::new(COM1_BASE, Box::new(std::io::sink()));
        other.restore_state(&saved).unwrap();
        assert_eq!(other.save_state(), saved);
        assert!(other.has_pending_input());

        let before = other.save_state();
        let mut long = before.clone();
        long["rx"] = serde_json::json!(vec![0; 17]);
        let mut reserved = before.clone();
        reserved["mcr"] = serde_json::json!(0x20);
        for garbage in [long, reserved, serde_json::json!("x")] {
            assert!(other.restore_state(&garbage).is_err());
            assert_eq!(
                other.save_state(),
                before,
                "a failed restore changes nothing"
            );
        }
    }

    #[test]
    fn scratch_register_holds_its_value() {
        let (mut bus, _) = bus_with_uart();
        bus.io_write(COM1_BASE + 7, 1, 0xA5, 0);
        assert_eq!(bus.io_read(COM1_BASE + 7, 1, 0), 0xA5);
    }

    fn bus_with_gated_uart() -> Bus {
        let mut bus = Bus::new();
        let u = Uart16550::new(COM1_BASE, Box::new(std::io::sink())).gate_irq_with_out2(true);
        let id = bus.add(Box::new(u));
        bus.claim_ports(id, COM1_BASE, COM1_BASE + 7);
        bus
    }

    #[test]
    fn uart_irq_follows_intr_whatever_out2_says_by_default() {
        let (mut bus, _) = bus_with_uart();
        uart(&mut bus).push_input(b"x");
        write(&mut bus, IER, IER_ERBFI);
        assert!(
            bus.irq_level(COM1_IRQ),
            "MCR 0, OUT2 clear: the line is driven, as in QEMU"
        );
        assert_eq!(read(&mut bus, RBR), b'x');
        assert!(!bus.irq_level(COM1_IRQ));
    }

    #[test]
    fn uart_rda_interrupt_needs_out2_on_a_gated_board() {
        let mut bus = bus_with_gated_uart();
        uart(&mut bus).push_input(b"x");
        write(&mut bus, IER, IER_ERBFI);
        assert_eq!(read(&mut bus, IIR), IIR_RECEIVED_DATA);
        assert!(
            !bus.irq_level(COM1_IRQ),
            "OUT2 clear: the line is not driven"
        );
        write(&mut bus, MCR, MCR_OUT2);
        assert!(bus.irq_level(COM1_IRQ));
        assert_eq!(read(&mut bus, RBR), b'x');
        assert!(!bus.irq_level(COM1_IRQ));
        assert_eq!(read(&mut bus, IIR), IIR_NO_INTERRUPT);
        // Loopback forces OUT2 inactive: a looped-back byte interrupts
        // the UART but not the line.
        write(&mut bus, MCR, MCR_OUT2 | MCR_LOOP);
        write(&mut bus, THR, b'y');
        assert_eq!(read(&mut bus, IIR), IIR_RECEIVED_DATA);
        assert!(!bus.irq_level(COM1_IRQ));
    }

    #[test]
    fn uart_gated_by_out2_asks_for_paced_input_only_with_out2_set() {
        let mut bus = bus_with_gated_uart();
        uart(&mut bus).set_input_requests(InputRequests::Paced);
        bus.io_write(IER, 1, IER_ERBFI as u32, 0);
        assert_eq!(
            bus.next_deadline(),
            u64::MAX,
            "the interrupt cannot reach the CPU"
        );
        bus.io_write(MCR, 1, MCR_OUT2 as u32, 1000);
        assert_eq!(bus.next_deadline(), 1000 + 729_166);
    }

    #[test]
    fn uart_fifo_trigger_level() {
        let (mut bus, _) = bus_with_uart();
        // FIFO on, trigger at 8 bytes.
        write(&mut bus, FCR, 0x81);
        write(&mut bus, IER, IER_ERBFI);
        write(&mut bus, MCR, MCR_OUT2);
        uart(&mut bus).push_input(b"1234567");
        assert_eq!(read(&mut bus, IIR), IIR_FIFOS_ENABLED | IIR_NO_INTERRUPT);
        uart(&mut bus).push_input(b"8");
        assert_eq!(read(&mut bus, IIR), IIR_FIFOS_ENABLED | IIR_RECEIVED_DATA);
        assert!(bus.irq_level(COM1_IRQ));
        assert_eq!(read(&mut bus, RBR), b'1');
        assert_eq!(read(&mut bus, IIR), IIR_FIFOS_ENABLED | IIR_NO_INTERRUPT);
        assert!(!bus.irq_level(COM1_IRQ));
        // Seven bytes below the trigger: after four character times (LCR 0
        // is 5N1, 7 bits at 9600 baud: 729167 ns each) the timeout speaks.
        let deadline = bus.next_deadline();
        assert_eq!(deadline, 4 * 729_166);
        bus.run_timers(deadline);
        assert!(bus.irq_level(COM1_IRQ));
        assert_eq!(
            bus.io_read(IIR, 1, deadline) as u8,
            IIR_FIFOS_ENABLED | IIR_CHARACTER_TIMEOUT
        );
        // Reading a byte restarts the timeout.
        assert_eq!(bus.io_read(RBR, 1, deadline), b'2' as u32);
        assert!(!bus.irq_level(COM1_IRQ));
    }

    #[test]
    fn uart_fifo_trigger_levels_follow_fcr() {
        for (fcr, level) in [(0x01u8, 1usize), (0x41, 4), (0x81, 8), (0xC1, 14)] {
            let (mut bus, _) = bus_with_uart();
            write(&mut bus, FCR, fcr);
            write(&mut bus, IER, IER_ERBFI);
            uart(&mut bus).push_input(&vec![0; level - 1]);
            assert_eq!(read(&mut bus, IIR) & 0x0F, IIR_NO_INTERRUPT, "FCR {fcr:#x}");
            uart(&mut bus).push_input(&[0]);
            assert_eq!(
                read(&mut bus, IIR) & 0x0F,
                IIR_RECEIVED_DATA,
                "FCR {fcr:#x}"
            );
        }
    }

    #[test]
    fn uart_thre_interrupt_after_write() {
        let (mut bus, buf) = bus_with_uart();
        write(&mut bus, MCR, MCR_OUT2);
        assert!(!bus.irq_level(COM1_IRQ));
        write(&mut bus, IER, IER_ETBEI);
        assert!(bus.irq_level(COM1_IRQ), "enabled with the THR empty");
        assert_eq!(read(&mut bus, IIR), IIR_THR_EMPTY);
        assert!(!bus.irq_level(COM1_IRQ), "reading IIR cleared it");
        assert_eq!(read(&mut bus, IIR), IIR_NO_INTERRUPT);
        write(&mut bus, THR, b'a');
        assert!(bus.irq_level(COM1_IRQ));
        write(&mut bus, THR, b'b');
        assert_eq!(read(&mut bus, IIR), IIR_THR_EMPTY);
        // Rewriting IER with ETBEI already set does not raise it again.
        write(&mut bus, IER, IER_ETBEI);
        assert_eq!(read(&mut bus, IIR), IIR_NO_INTERRUPT);
        assert_eq!(buf.contents(), b"ab");
    }

    #[test]
    fn uart_iir_priority_order() {
        let (mut bus, _) = bus_with_uart();
        write(&mut bus, IER, 0x0F);
        // Loopback: CTS, DSR and DCD drop, which is a modem status change.
        write(&mut bus, MCR, MCR_LOOP);
        assert_eq!(read(&mut bus, IIR), IIR_THR_EMPTY);
        // Two bytes into a one-byte holding register: an overrun.
        write(&mut bus, THR, 1);
        write(&mut bus, THR, 2);
        assert_eq!(read(&mut bus, IIR), IIR_LINE_STATUS);
        assert_eq!(
            read(&mut bus, IIR),
            IIR_LINE_STATUS,
            "IIR reads do not clear it"
        );
        assert_ne!(read(&mut bus, LSR) & LSR_OE, 0);
        assert_eq!(read(&mut bus, IIR), IIR_RECEIVED_DATA);
        assert_eq!(read(&mut bus, RBR), 2, "the new byte overwrote the old");
        assert_eq!(read(&mut bus, IIR), IIR_THR_EMPTY);
        assert_eq!(read(&mut bus, IIR), IIR_MODEM_STATUS);
        assert_eq!(read(&mut bus, MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        assert_eq!(read(&mut bus, IIR), IIR_NO_INTERRUPT);
        assert!(!bus.irq_level(COM1_IRQ), "nothing is pending");
    }

    #[test]
    fn uart_overrun_sets_lsr_oe() {
        let (mut bus, _) = bus_with_uart();
        write(&mut bus, FCR, 0x07);
        write(&mut bus, MCR, MCR_LOOP);
        for b in 0..16 {
            write(&mut bus, THR, b);
        }
        assert_eq!(read(&mut bus, LSR) & (LSR_OE | LSR_DR), LSR_DR);
        write(&mut bus, THR, 16);
        assert_eq!(read(&mut bus, LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(read(&mut bus, LSR) & LSR_OE, 0, "reading LSR cleared OE");
        let received: Vec<u8> = (0..16).map(|_| read(&mut bus, RBR)).collect();
        assert_eq!(
            received,
            (0..16).collect::<Vec<u8>>(),
            "the 17th byte was lost"
        );
        assert_eq!(read(&mut bus, LSR) & LSR_DR, 0);
    }

    #[test]
    fn uart_host_input_is_never_dropped() {
        let (mut bus, _) = bus_with_uart();
        write(&mut bus, FCR, 0x01);
        let sent: Vec<u8> = (0..1000).map(|i| (i * 7) as u8).collect();
        uart(&mut bus).push_input(&sent);
        let mut got = Vec::new();
        while read(&mut bus, LSR) & LSR_DR != 0 {
            got.push(read(&mut bus, RBR));
        }
        assert_eq!(got, sent);
        assert!(!uart(&mut bus).has_pending_input());
        // A FIFO reset empties the FIFO, but host input is flow-controlled:
        // the unread bytes are sent again, so none is lost.
        uart(&mut bus).push_input(&[1; 20]);
        write(&mut bus, FCR, 0x03);
        let mut left = 0;
        while read(&mut bus, LSR) & LSR_DR != 0 {
            read(&mut bus, RBR);
            left += 1;
        }
        assert_eq!(left, 20, "every host byte arrives despite the reset");
    }

    #[test]
    fn uart_polled_empty_receiver_wants_input() {
        let (mut bus, _) = bus_with_uart();
        assert_eq!(bus.io_read(LSR, 1, 1000) as u8 & LSR_DR, 0);
        assert!(bus.signals.input_wanted);
        bus.signals.input_wanted = false;
        // The front-end feeds a byte (hostio::give_host_input: queue, then
        // the timer callback): it is in the FIFO at once.
        uart(&mut bus).push_input(b"k");
        bus.poke::<Uart16550>(1000);
        assert_ne!(bus.io_read(LSR, 1, 1000) as u8 & LSR_DR, 0);
        assert!(!bus.signals.input_wanted, "the byte was there");
        assert_eq!(bus.io_read(RBR, 1, 1000), b'k' as u32);
        bus.io_read(RBR, 1, 1000);
        assert!(bus.signals.input_wanted);
        bus.signals.input_wanted = false;
        uart(&mut bus).set_input_requests(InputRequests::Off);
        bus.io_read(LSR, 1, 1000);
        assert!(!bus.signals.input_wanted, "no host input is attached");
    }

    #[test]
    fn uart_paced_input_is_asked_for_a_character_time_after_the_receiver_is_ready() {
        let (mut bus, _) = bus_with_uart();
        // 8N1 at 115200 baud: 86805 ns a character.
        write(&mut bus, LCR, LCR_DLAB);
        write(&mut bus, COM1_BASE, 1);
        write(&mut bus, COM1_BASE + 1, 0);
        write(&mut bus, LCR, 0x03);
        uart(&mut bus).set_input_requests(InputRequests::Paced);
        assert_eq!(bus.next_deadline(), u64::MAX, "receive interrupt off");
        bus.io_write(IER, 1, IER_ERBFI as u32, 1000);
        let due = 1000 + 86_805;
        assert_eq!(bus.next_deadline(), due);
        bus.run_timers(due - 1);
        assert!(!bus.signals.input_wanted, "not due yet");
        bus.run_timers(due);
        assert!(bus.signals.input_wanted);
        bus.signals.input_wanted = false;
        assert_eq!(
            bus.next_deadline(),
            due + 86_805,
            "nothing given: asked again a character later"
        );
        uart(&mut bus).push_input(b"k");
        bus.poke::<Uart16550>(due);
        assert!(bus.irq_level(COM1_IRQ));
        assert_eq!(bus.next_deadline(), u64::MAX, "not empty: nothing asked");
        assert_eq!(bus.io_read(RBR, 1, due + 500), b'k' as u32);
        assert_eq!(
            bus.next_deadline(),
            due + 500 + 86_805,
            "empty again: the next byte a character later"
        );
        bus.io_write(IER, 1, 0, due + 600);
        assert_eq!(bus.next_deadline(), u64::MAX, "receive interrupt off");
    }

    #[test]
    fn uart_loopback_msr_follows_mcr() {
        let (mut bus, _) = bus_with_uart();
        assert_eq!(read(&mut bus, MSR), MSR_TERMINAL);
        write(&mut bus, MCR, MCR_LOOP | 0x0F);
        assert_eq!(
            read(&mut bus, MSR),
            0xF0,
            "CTS, DSR and DCD were active already"
        );
        // RI going inactive is the trailing edge TERI reports.
        write(&mut bus, MCR, MCR_LOOP | 0x0B);
        assert_eq!(read(&mut bus, MSR), 0xB0 | MSR_TERI);
        write(&mut bus, MCR, MCR_LOOP | 0x0A);
        assert_eq!(read(&mut bus, MSR), MSR_CTS | MSR_DCD | MSR_DDSR);
    }

    #[test]
    fn uart_com2_interrupts_on_its_own_line() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Uart16550::with_irq(
            COM2_BASE,
            COM2_IRQ,
            Box::new(std::io::sink()),
        )));
        bus.claim_ports(id, COM2_BASE, COM2_BASE + 7);
        bus.io_write(COM2_BASE + 4, 1, MCR_OUT2 as u32, 0);
        bus.io_write(COM2_BASE + 1, 1, IER_ETBEI as u32, 0);
        assert!(bus.irq_level(COM2_IRQ));
        assert!(!bus.irq_level(COM1_IRQ));
    }

    #[test]
    fn uart_character_timeout_follows_lcr_and_divisor() {
        let (mut bus, _) = bus_with_uart();
        write(&mut bus, LCR, LCR_DLAB);
        write(&mut bus, COM1_BASE, 1);
        write(&mut bus, COM1_BASE + 1, 0);
        // 8N1 at 115200 baud: 10 bits, 86805 ns a character.
        write(&mut bus, LCR, 0x03);
        write(&mut bus, FCR, 0xC1);
        write(&mut bus, IER, IER_ERBFI);
        uart(&mut bus).push_input(b"z");
        read(&mut bus, LSR);
        assert_eq!(bus.next_deadline(), 4 * 86_805);
        // 8 data bits, parity and 2 stop bits: 12 bits.
        write(&mut bus, LCR, 0x0F);
        assert_eq!(bus.next_deadline(), 4 * 104_166);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read(u16, u8),
        Write(u16, u8, u8),
        Input(Vec<u8>),
        Timers,
    }

    fn op() -> impl Strategy<Value = Op> {
        let port = COM1_BASE - 1..=COM1_BASE + 8;
        let size = prop_oneof![Just(1u8), Just(2), Just(4)];
        prop_oneof![
            (port.clone(), size.clone()).prop_map(|(p, s)| Op::Read(p, s)),
            (port, size, any::<u8>()).prop_map(|(p, s, v)| Op::Write(p, s, v)),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Op::Input),
            Just(Op::Timers),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn uart_survives_any_port_sequence(
            ops in proptest::collection::vec((op(), 0u64..5_000_000), 1..64),
        ) {
            let (mut bus, _) = bus_with_uart();
            let mut now = 0u64;
            for (op, dt) in ops {
                now += dt;
                match op {
                    Op::Read(p, s) => { bus.io_read(p, s, now); }
                    Op::Write(p, s, v) => bus.io_write(p, s, v as u32 * 0x0101_0101, now),
                    Op::Input(bytes) => uart(&mut bus).push_input(&bytes),
                    Op::Timers => bus.run_timers(now),
                }
            }
            let state = uart(&mut bus).save_state();
            let mut fresh = Uart16550::new(COM1_BASE, Box::new(std::io::sink()));
            prop_assert!(fresh.restore_state(&state).is_ok());
        }
    }
}
