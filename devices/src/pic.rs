//! The PC's pair of 8259A programmable interrupt controllers (Intel 8259A
//! data sheet), modelled as one device: the master at ports 0x20/0x21, the
//! slave at 0xA0/0xA1 with its INT output wired to the master's IR2, and
//! the edge/level control registers (ELCR) at 0x4D0/0x4D1 of the PIIX/EISA
//! chipsets.
//!
//! What each section of the data sheet became:
//! - "Interrupt Sequence": [`Pic::acknowledge`] is the INTA cycle: the
//!   highest-priority request moves from IRR to ISR and its vector goes to
//!   the CPU. A request that vanished before INTA yields the "default IR7"
//!   vector with no ISR bit set (spurious IRQ7, or IRQ15 on the slave).
//! - "Initialization Command Words": ICW1 (LTIM, SNGL, IC4, ADI), ICW2 (the
//!   vector base), ICW3 (the cascade map / slave ID), ICW4 (uPM, AEOI,
//!   SFNM).
//! - "Operation Command Words": OCW1 is the IMR; OCW2 the EOI, rotation and
//!   set-priority commands; OCW3 the IRR/ISR read select, the poll command
//!   and special mask mode.
//! - "Edge and Level Triggered Modes": a rising edge latches an edge
//!   request; a level request follows its pin. ICW1.LTIM makes all eight
//!   inputs level-triggered, an ELCR bit makes one.
//!
//! Bus line n is ISA IRQ n: lines 0, 1 and 3-7 reach the master's IR pins,
//! lines 8-15 the slave's IR0-7. Bus line 2 is not connected: on a PC the
//! master's IR2 is the cascade input.
//!
//! One deliberate difference from the chip: the data sheet asks that an
//! edge-triggered input stay high until the first INTA pulse. Here a rising
//! edge stays latched in IRR until it is acknowledged, even if the line
//! drops first, because devices on our bus may pulse a line
//! ([`DeviceCtx::pulse_irq`]) and the CPU only samples INTR between
//! instructions.
//!
//! Not modelled: buffered mode (ICW4.BUF and M/S; the master/slave roles
//! are fixed by the wiring) and the third INTA byte of MCS-80/85 mode.

use std::any::Any;

use ringside_core::bus::{Acknowledge, Device, DeviceCtx, InterruptOutput, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The port ranges the pair answers: master, slave, ELCR.
pub const PIC_PORTS: [(u16, u16); 3] = [(0x20, 0x21), (0xA0, 0xA1), (0x4D0, 0x4D1)];

const MASTER_PORT: u16 = 0x20;
const SLAVE_PORT: u16 = 0xA0;
const ELCR_PORT: u16 = 0x4D0;

/// The master's IR pin that the slave's INT output drives.
const CASCADE_IR: u8 = 2;

/// ELCR bits that may be set (PIIX3 data sheet, ELCR1/ELCR2): IRQ0 (timer),
/// IRQ1 (keyboard), IRQ2 (cascade), IRQ8 (RTC) and IRQ13 (FPU error) are
/// always edge-triggered.
const ELCR_WRITABLE: [u8; 2] = [0xF8, 0xDE];

const ICW1_IC4: u8 = 1 << 0;
const ICW1_SNGL: u8 = 1 << 1;
const ICW1_ADI: u8 = 1 << 2;
const ICW1_LTIM: u8 = 1 << 3;
/// Bit 4 distinguishes ICW1 from OCW2/OCW3 on the A0 = 0 port.
const ICW1_SELECT: u8 = 1 << 4;
/// Bit 3 distinguishes OCW3 from OCW2.
const OCW3_SELECT: u8 = 1 << 3;

const ICW4_UPM: u8 = 1 << 0;
const ICW4_AEOI: u8 = 1 << 1;
const ICW4_SFNM: u8 = 1 << 4;

const OCW3_RIS: u8 = 1 << 0;
const OCW3_RR: u8 = 1 << 1;
const OCW3_POLL: u8 = 1 << 2;
const OCW3_SMM: u8 = 1 << 5;
const OCW3_ESMM: u8 = 1 << 6;

/// Which initialization command word the chip expects next on A0 = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum InitStep {
    /// Initialized: A0 = 1 writes go to the IMR (OCW1).
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Chip8259 {
    /// Interrupt request register: requests waiting for service.
    irr: u8,
    /// In-service register: interrupts acknowledged and not yet ended.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// The levels on the eight IR pins, to see rising edges.
    pins: u8,
    /// Edge/level control register: 1 = level-triggered.
    elcr: u8,
    icw1: u8,
    icw2: u8,
    icw3: u8,
    icw4: u8,
    step: InitStep,
    /// The IR with the highest priority; rotation moves it (IR7 is lowest
    /// after ICW1, so this starts at 0).
    highest: u8,
    /// OCW3: reads of A0 = 0 return ISR instead of IRR.
    read_isr: bool,
    /// OCW3: the next read is a poll (an acknowledge by software).
    poll: bool,
    /// OCW3: special mask mode.
    special_mask: bool,
    /// OCW2: rotate priority on each automatic EOI.
    rotate_in_aeoi: bool,
}

impl Chip8259 {
    /// The state after power-on. The data sheet leaves it undefined; this
    /// is the state ICW1-ICW4 with vector base 0, 8086 mode and the PC's
    /// cascade wiring would leave (firmware programs the real one).
    fn new(icw3: u8) -> Chip8259 {
        Chip8259 {
            irr: 0,
            isr: 0,
            imr: 0,
            pins: 0,
            elcr: 0,
            icw1: ICW1_SELECT | ICW1_IC4,
            icw2: 0,
            icw3,
            icw4: ICW4_UPM,
            step: InitStep::Ready,
            highest: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            rotate_in_aeoi: false,
        }
    }

    /// The inputs that are level-triggered.
    fn level_mask(&self) -> u8 {
        if self.icw1 & ICW1_LTIM != 0 {
            0xFF
        } else {
            self.elcr
        }
    }

    fn single(&self) -> bool {
        self.icw1 & ICW1_SNGL != 0
    }

    fn auto_eoi(&self) -> bool {
        self.icw4 & ICW4_AEOI != 0
    }

    /// An IR pin changed level. Edge inputs latch a request on the rising
    /// edge; level inputs follow the pin.
    fn set_pin(&mut self, ir: u8, level: bool) {
        let bit = 1u8 << (ir & 7);
        let was_high = self.pins & bit != 0;
        if level {
            self.pins |= bit;
            if !was_high {
                self.irr |= bit;
            }
        } else {
            self.pins &= !bit;
        }
        self.follow_level_pins();
    }

    /// Level-triggered requests are the pins themselves.
    fn follow_level_pins(&mut self) {
        let level = self.level_mask();
        self.irr = (self.irr & !level) | (self.pins & level);
    }

    /// Priority rank of `ir`: 0 is the highest.
    fn rank(&self, ir: u8) -> u8 {
        ir.wrapping_sub(self.highest) & 7
    }

    /// The highest-priority IR among `bits`, in the current rotation.
    fn highest_of(&self, bits: u8) -> Option<u8> {
        (0..8)
            .map(|rank| (self.highest + rank) & 7)
            .find(|&ir| bits & (1 << ir) != 0)
    }

    /// The priority resolver: the IR that would be acknowledged now.
    /// `nested_ir` is the master's cascade input in special fully nested
    /// mode, which may interrupt while its own level is in service (a
    /// higher-priority request inside the slave).
    fn resolve(&self, nested_ir: Option<u8>) -> Option<u8> {
        let requests = self.irr & !self.imr;
        if self.special_mask {
            // Special mask mode: every unmasked level that is not itself
            // in service may interrupt, lower priorities included.
            return self.highest_of(requests & !self.isr);
        }
        let candidate = self.highest_of(requests)?;
        let in_service = self.highest_of(self.isr).map_or(8, |ir| self.rank(ir));
        let rank = self.rank(candidate);
        (rank < in_service || (Some(candidate) == nested_ir && rank == in_service))
            .then_some(candidate)
    }

    /// The INTA (or poll) that takes `ir` into service.
    fn start_service(&mut self, ir: u8) {
        let bit = 1u8 << ir;
        // A level request stays for as long as the pin is high.
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi() {
            // AEOI: the ISR bit is reset at the end of the last INTA pulse.
            if self.rotate_in_aeoi {
                self.highest = (ir + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    /// The byte the chip drives on the last INTA pulse for `ir`.
    fn vector(&self, ir: u8) -> u8 {
        if self.icw4 & ICW4_UPM != 0 {
            // 8086 mode: T7-T3 from ICW2, the IR number below.
            (self.icw2 & 0xF8) | ir
        } else {
            // MCS-80/85 mode answers INTA with a CALL: 0xCD, then the low
            // and high bytes of the routine's address. An x86 CPU gives
            // two INTA pulses and takes the second byte as the vector.
            if self.icw1 & ICW1_ADI != 0 {
                (self.icw1 & 0xE0) | (ir << 2)
            } else {
                (self.icw1 & 0xC0) | (ir << 3)
            }
        }
    }

    /// Master: whether a slave sits on `ir` (ICW3 bit set, cascade mode).
    fn has_slave_on(&self, ir: u8) -> bool {
        !self.single() && self.icw3 & (1 << ir) != 0
    }

    /// Slave: whether it answers the cascade address `id` (ICW3 ID).
    fn answers_cascade(&self, id: u8) -> bool {
        !self.single() && self.icw3 & 7 == id
    }

    fn write(&mut self, a0: bool, value: u8) {
        if a0 {
            match self.step {
                InitStep::Icw2 => {
                    self.icw2 = value;
                    self.step = if !self.single() {
                        InitStep::Icw3
                    } else if self.icw1 & ICW1_IC4 != 0 {
                        InitStep::Icw4
                    } else {
                        InitStep::Ready
                    };
                }
                InitStep::Icw3 => {
                    self.icw3 = value;
                    self.step = if self.icw1 & ICW1_IC4 != 0 {
                        InitStep::Icw4
                    } else {
                        InitStep::Ready
                    };
                }
                InitStep::Icw4 => {
                    self.icw4 = value;
                    self.step = InitStep::Ready;
                }
                InitStep::Ready => self.imr = value,
            }
        } else if value & ICW1_SELECT != 0 {
            self.write_icw1(value);
        } else if value & OCW3_SELECT != 0 {
            self.write_ocw3(value);
        } else {
            self.write_ocw2(value);
        }
    }

    /// ICW1 starts the initialization sequence. The data sheet lists what
    /// it resets: the edge sense circuit (an input must go low then high
    /// again to request), the IMR, the priority (IR7 lowest), special mask
    /// mode and the read select (IRR), and ICW4 when IC4 = 0. The ISR and
    /// the poll and AEOI-rotation state go too, as in other PC emulators.
    fn write_icw1(&mut self, value: u8) {
        self.icw1 = value;
        self.step = InitStep::Icw2;
        self.irr = 0;
        self.isr = 0;
        self.imr = 0;
        self.highest = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.rotate_in_aeoi = false;
        if value & ICW1_IC4 == 0 {
            self.icw4 = 0;
        }
        self.follow_level_pins();
    }

    /// OCW2: R, SL and EOI in bits 7-5 select the command, L2-L0 a level.
    fn write_ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            0b001 => {
                self.end_highest_in_service();
            }
            0b011 => self.isr &= !(1 << level),
            0b101 => {
                if let Some(ir) = self.end_highest_in_service() {
                    self.highest = (ir + 1) & 7;
                }
            }
            0b111 => {
                self.isr &= !(1 << level);
                self.highest = (level + 1) & 7;
            }
            // Set priority: `level` becomes the lowest.
            0b110 => self.highest = (level + 1) & 7,
            0b100 => self.rotate_in_aeoi = true,
            0b000 => self.rotate_in_aeoi = false,
            // 0b010: no operation.
            _ => {}
        }
    }

    /// A non-specific EOI resets the highest-priority ISR bit. In special
    /// mask mode it leaves alone ISR bits that the IMR masks (data sheet,
    /// "End of Interrupt").
    fn end_highest_in_service(&mut self) -> Option<u8> {
        let eligible = if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        };
        let ir = self.highest_of(eligible)?;
        self.isr &= !(1 << ir);
        Some(ir)
    }

    fn write_ocw3(&mut self, value: u8) {
        if value & OCW3_POLL != 0 {
            self.poll = true;
        }
        if value & OCW3_RR != 0 {
            self.read_isr = value & OCW3_RIS != 0;
        }
        if value & OCW3_ESMM != 0 {
            self.special_mask = value & OCW3_SMM != 0;
        }
    }

    /// The poll word: bit 7 set when a request is being served, bits 2-0
    /// its level. The read counts as the acknowledge.
    fn poll_read(&mut self, nested_ir: Option<u8>) -> u8 {
        self.poll = false;
        match self.resolve(nested_ir) {
            Some(ir) => {
                self.start_service(ir);
                0x80 | ir
            }
            None => 0,
        }
    }
}

/// The master and slave 8259A with the ELCR pair: one device.
pub struct Pic {
    master: Chip8259,
    slave: Chip8259,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

/// What a saved state holds.
#[derive(Serialize, Deserialize)]
struct PicState {
    version: u32,
    master: Chip8259,
    slave: Chip8259,
}

const STATE_VERSION: u32 = 1;

impl Pic {
    pub fn new() -> Pic {
        Pic {
            master: Chip8259::new(1 << CASCADE_IR),
            slave: Chip8259::new(CASCADE_IR),
        }
    }

    /// The master's IR2 pin is the slave's INT output.
    fn update_cascade(&mut self) {
        let slave_int = self.slave.resolve(None).is_some();
        self.master.set_pin(CASCADE_IR, slave_int);
    }

    /// The master's input that special fully nested mode lets through
    /// while it is in service.
    fn master_nested_ir(&self) -> Option<u8> {
        (self.master.icw4 & ICW4_SFNM != 0 && self.master.has_slave_on(CASCADE_IR))
            .then_some(CASCADE_IR)
    }

    fn read_port(&mut self, port: u16) -> u8 {
        let nested = self.master_nested_ir();
        match port {
            MASTER_PORT | 0x21 => read_chip(&mut self.master, port & 1 != 0, nested),
            SLAVE_PORT | 0xA1 => read_chip(&mut self.slave, port & 1 != 0, None),
            ELCR_PORT => self.master.elcr,
            0x4D1 => self.slave.elcr,
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            MASTER_PORT | 0x21 => self.master.write(port & 1 != 0, value),
            SLAVE_PORT | 0xA1 => self.slave.write(port & 1 != 0, value),
            ELCR_PORT => {
                self.master.elcr = value & ELCR_WRITABLE[0];
                self.master.follow_level_pins();
            }
            0x4D1 => {
                self.slave.elcr = value & ELCR_WRITABLE[1];
                self.slave.follow_level_pins();
            }
            _ => {}
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("pic8259", reason)
    }
}

/// A read of one chip: a pending poll first, then IRR/ISR (A0 = 0) or the
/// IMR (A0 = 1).
fn read_chip(chip: &mut Chip8259, a0: bool, nested_ir: Option<u8>) -> u8 {
    if chip.poll {
        chip.poll_read(nested_ir)
    } else if a0 {
        chip.imr
    } else if chip.read_isr {
        chip.isr
    } else {
        chip.irr
    }
}

fn validate_chip(chip: &Chip8259, writable_elcr: u8, which: &str) -> Result<(), StateError> {
    if chip.highest > 7 {
        return Err(Pic::state_error(format!(
            "{which}: priority {} is not an IR number",
            chip.highest
        )));
    }
    if chip.elcr & !writable_elcr != 0 {
        return Err(Pic::state_error(format!(
            "{which}: ELCR {:#04x} sets edge-only inputs",
            chip.elcr
        )));
    }
    Ok(())
}

impl InterruptOutput for Pic {
    fn intr(&self) -> bool {
        self.master.resolve(self.master_nested_ir()).is_some()
    }

    /// The INTA cycle (data sheet, "Interrupt Sequence"). On the first
    /// pulse the highest request moves from IRR to ISR; on the second the
    /// vector goes out, from the slave when the master's request came
    /// through a cascade input.
    fn acknowledge(&mut self, _ctx: &mut DeviceCtx) -> Acknowledge {
        let nested = self.master_nested_ir();
        let Some(ir) = self.master.resolve(nested) else {
            // The request went away between INTR and INTA: the master
            // answers as if IR7 had requested, and sets no ISR bit.
            return Acknowledge::Vector(self.master.vector(7));
        };
        self.master.start_service(ir);
        if !self.master.has_slave_on(ir) {
            return Acknowledge::Vector(self.master.vector(ir));
        }
        if ir != CASCADE_IR || !self.slave.answers_cascade(CASCADE_IR) {
            // The master put a cascade address on CAS0-2 that no slave
            // answers: nothing drives the data bus.
            return Acknowledge::Vector(0xFF);
        }
        let vector = match self.slave.resolve(None) {
            Some(slave_ir) => {
                self.slave.start_service(slave_ir);
                self.slave.vector(slave_ir)
            }
            // The slave's request vanished: its default IR7 (IRQ15), while
            // the master keeps IR2 in service.
            None => self.slave.vector(7),
        };
        // The slave's INT falls during the INTA pulses; a request still
        // pending there raises it again, a new edge for the master.
        self.master.set_pin(CASCADE_IR, false);
        self.update_cascade();
        Acknowledge::Vector(vector)
    }
}

impl Device for Pic {
    fn name(&self) -> &'static str {
        "pic8259"
    }

    /// Word and dword accesses reach consecutive ports, as on the ISA bus.
    fn io_read(&mut self, port: u16, size: u8, _ctx: &mut DeviceCtx) -> u32 {
        let value = (0..size.min(4) as u16).fold(0u32, |acc, i| {
            acc | (self.read_port(port.wrapping_add(i)) as u32) << (8 * i)
        });
        self.update_cascade();
        value
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, _ctx: &mut DeviceCtx) {
        for i in 0..size.min(4) as u16 {
            self.write_port(port.wrapping_add(i), (value >> (8 * i)) as u8);
        }
        self.update_cascade();
    }

    fn irq_line(&mut self, line: u8, level: bool, _ctx: &mut DeviceCtx) {
        match line {
            CASCADE_IR => {}
            0..=7 => self.master.set_pin(line, level),
            8..=15 => self.slave.set_pin(line - 8, level),
            // GSIs 16-23 reach only the IOAPIC.
            _ => return,
        }
        self.update_cascade();
    }

    fn interrupt_output(&mut self) -> Option<&mut dyn InterruptOutput> {
        Some(self)
    }

    fn save_state(&self) -> Value {
        let state = PicState {
            version: STATE_VERSION,
            master: self.master.clone(),
            slave: self.slave.clone(),
        };
        serde_json::to_value(&state).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let state: PicState = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if state.version != STATE_VERSION {
            return Err(Self::state_error(format!(
                "version {} (expected {STATE_VERSION})",
                state.version
            )));
        }
        validate_chip(&state.master, ELCR_WRITABLE[0], "master")?;
        validate_chip(&state.slave, ELCR_WRITABLE[1], "slave")?;
        self.master = state.master;
        self.slave = state.slave;
        self.update_cascade();
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringside_core::bus::Bus;

    /// A test device that drives interrupt lines: a write of `v` to its
    /// port sets line `v & 0x1F` to level `v & 0x80`.
    struct LineDriver;

    const DRIVER_PORT: u16 = 0x500;

    impl Device for LineDriver {
        fn name(&self) -> &'static str {
            "line-driver"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
            ctx.set_irq((value & 0x1F) as u8, value & 0x80 != 0);
        }
        fn save_state(&self) -> Value {
            Value::Null
        }
        fn restore_state(&mut self, _state: &Value) -> Result<(), StateError> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    fn bus_with_pic() -> Bus {
        let mut bus = Bus::new();
        let pic = bus.add(Box::new(Pic::new()));
        for (first, last) in PIC_PORTS {
            bus.claim_ports(pic, first, last);
        }
        bus.add_irq_listener(pic);
        bus.set_pic(pic);
        let driver = bus.add(Box::new(LineDriver));
        bus.claim_ports(driver, DRIVER_PORT, DRIVER_PORT);
        bus
    }

    /// The PC BIOS sequence: edge-triggered, cascade, ICW4; vector bases
    /// `master` and `slave`; slave on IR2; 8086 mode plus `icw4_extra`.
    fn init_pair(bus: &mut Bus, master: u8, slave: u8, icw4_extra: u8) {
        for (port, icw2, icw3) in [(0x20u16, master, 0x04u8), (0xA0, slave, 0x02)] {
            bus.io_write(port, 1, 0x11, 0);
            bus.io_write(port + 1, 1, icw2 as u32, 0);
            bus.io_write(port + 1, 1, icw3 as u32, 0);
            bus.io_write(port + 1, 1, (0x01 | icw4_extra) as u32, 0);
        }
    }

    fn pc_bus() -> Bus {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x20, 0x28, 0);
        bus
    }

    fn set_line(bus: &mut Bus, line: u8, level: bool) {
        bus.io_write(
            DRIVER_PORT,
            1,
            line as u32 | if level { 0x80 } else { 0 },
            0,
        );
    }

    fn pulse(bus: &mut Bus, line: u8) {
        set_line(bus, line, true);
        set_line(bus, line, false);
    }

    fn read_isr(bus: &mut Bus, port: u16) -> u8 {
        bus.io_write(port, 1, 0x0B, 0);
        let isr = bus.io_read(port, 1, 0) as u8;
        bus.io_write(port, 1, 0x0A, 0);
        isr
    }

    fn read_irr(bus: &mut Bus, port: u16) -> u8 {
        bus.io_write(port, 1, 0x0A, 0);
        bus.io_read(port, 1, 0) as u8
    }

    #[test]
    fn icw_sequence_sets_vector_base() {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x40, 0x78, 0);
        pulse(&mut bus, 1);
        assert!(bus.interrupt_pending());
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x41));
        pulse(&mut bus, 9);
        // IRQ9 arrives on IR2, below IRQ1 which is still in service.
        bus.io_write(0x20, 1, 0x20, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x79));
    }

    #[test]
    fn icw1_clears_imr_and_pending_edges() {
        let mut bus = pc_bus();
        bus.io_write(0x21, 1, 0xFF, 0);
        pulse(&mut bus, 3);
        assert_eq!(read_irr(&mut bus, 0x20), 0x08);
        bus.io_write(0x20, 1, 0x11, 0);
        assert_eq!(read_irr(&mut bus, 0x20), 0);
        bus.io_write(0x21, 1, 0x20, 0);
        bus.io_write(0x21, 1, 0x04, 0);
        bus.io_write(0x21, 1, 0x01, 0);
        assert_eq!(bus.io_read(0x21, 1, 0), 0, "ICW1 cleared the IMR");
        assert!(!bus.interrupt_pending());
    }

    #[test]
    fn edge_input_held_high_requests_only_on_the_next_rising_edge_after_icw1() {
        let mut bus = pc_bus();
        set_line(&mut bus, 4, true);
        bus.io_write(0x20, 1, 0x11, 0);
        for v in [0x20, 0x04, 0x01] {
            bus.io_write(0x21, 1, v, 0);
        }
        assert!(!bus.interrupt_pending(), "the edge sense latch was reset");
        set_line(&mut bus, 4, false);
        set_line(&mut bus, 4, true);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x24));
    }

    #[test]
    fn imr_masks_a_request_that_irr_still_shows() {
        let mut bus = pc_bus();
        bus.io_write(0x21, 1, 0x20, 0);
        assert_eq!(bus.io_read(0x21, 1, 0), 0x20);
        pulse(&mut bus, 5);
        assert!(!bus.interrupt_pending());
        assert_eq!(read_irr(&mut bus, 0x20), 0x20);
        bus.io_write(0x21, 1, 0x00, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x25));
    }

    #[test]
    fn edge_request_stays_latched_after_the_line_drops() {
        let mut bus = pc_bus();
        pulse(&mut bus, 6);
        assert!(bus.interrupt_pending());
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x26));
        assert!(!bus.interrupt_pending(), "INTA cleared the edge request");
    }

    #[test]
    fn ocw3_selects_irr_or_isr_for_reads() {
        let mut bus = pc_bus();
        pulse(&mut bus, 3);
        pulse(&mut bus, 5);
        assert_eq!(read_irr(&mut bus, 0x20), 0x28);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x23));
        assert_eq!(read_irr(&mut bus, 0x20), 0x20);
        assert_eq!(read_isr(&mut bus, 0x20), 0x08);
    }

    #[test]
    fn in_service_level_blocks_lower_priorities_and_lets_higher_ones_through() {
        let mut bus = pc_bus();
        pulse(&mut bus, 3);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x23));
        pulse(&mut bus, 5);
        assert!(!bus.interrupt_pending(), "IRQ5 waits for IRQ3's EOI");
        pulse(&mut bus, 1);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x21));
        bus.io_write(0x20, 1, 0x20, 0);
        bus.io_write(0x20, 1, 0x20, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x25));
    }

    #[test]
    fn non_specific_eoi_clears_the_highest_priority_isr_bit() {
        let mut bus = pc_bus();
        pulse(&mut bus, 4);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x24));
        pulse(&mut bus, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x20));
        assert_eq!(read_isr(&mut bus, 0x20), 0x11);
        bus.io_write(0x20, 1, 0x20, 0);
        assert_eq!(read_isr(&mut bus, 0x20), 0x10);
    }

    #[test]
    fn specific_eoi_clears_only_that_isr_bit() {
        let mut bus = pc_bus();
        pulse(&mut bus, 3);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x23));
        pulse(&mut bus, 1);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x21));
        assert_eq!(read_isr(&mut bus, 0x20), 0x0A);
        bus.io_write(0x20, 1, 0x63, 0);
        assert_eq!(read_isr(&mut bus, 0x20), 0x02);
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x20, 0x28, ICW4_AEOI);
        pulse(&mut bus, 3);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x23));
        assert_eq!(read_isr(&mut bus, 0x20), 0);
        pulse(&mut bus, 4);
        assert!(bus.interrupt_pending(), "nothing in service blocks IRQ4");
    }

    #[test]
    fn rotate_on_non_specific_eoi_makes_the_served_level_lowest() {
        let mut bus = pc_bus();
        pulse(&mut bus, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x20));
        bus.io_write(0x20, 1, 0xA0, 0);
        assert_eq!(read_isr(&mut bus, 0x20), 0);
        pulse(&mut bus, 0);
        pulse(&mut bus, 7);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x27));
    }

    #[test]
    fn set_priority_command_makes_the_given_level_lowest() {
        let mut bus = pc_bus();
        // IR4 lowest, so IR5 highest: IR6 beats IR3.
        bus.io_write(0x20, 1, 0xC4, 0);
        pulse(&mut bus, 3);
        pulse(&mut bus, 6);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x26));
        assert!(!bus.interrupt_pending(), "IR3 ranks below IR6 now");
    }

    #[test]
    fn rotate_in_auto_eoi_mode_rotates_on_each_acknowledge() {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x20, 0x28, ICW4_AEOI);
        bus.io_write(0x20, 1, 0x80, 0);
        pulse(&mut bus, 1);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x21));
        pulse(&mut bus, 1);
        pulse(&mut bus, 3);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x23));
    }

    #[test]
    fn level_triggered_irq_stays_requested_while_high() {
        let mut bus = pc_bus();
        // ELCR2 bit 2: IRQ10 level-triggered.
        bus.io_write(0x4D1, 1, 0x04, 0);
        set_line(&mut bus, 10, true);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2A));
        bus.io_write(0xA0, 1, 0x20, 0);
        bus.io_write(0x20, 1, 0x20, 0);
        assert!(bus.interrupt_pending(), "the line is still high");
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2A));
        // The handler quiets the device before its EOIs.
        set_line(&mut bus, 10, false);
        bus.io_write(0xA0, 1, 0x20, 0);
        bus.io_write(0x20, 1, 0x20, 0);
        assert!(!bus.interrupt_pending());
        assert_eq!(read_irr(&mut bus, 0xA0), 0);
    }

    #[test]
    fn ltim_makes_every_input_level_triggered() {
        let mut bus = bus_with_pic();
        bus.io_write(0x20, 1, 0x19, 0);
        for v in [0x20, 0x04, 0x01] {
            bus.io_write(0x21, 1, v, 0);
        }
        set_line(&mut bus, 5, true);
        assert_eq!(read_irr(&mut bus, 0x20), 0x20);
        set_line(&mut bus, 5, false);
        assert_eq!(read_irr(&mut bus, 0x20), 0);
    }

    #[test]
    fn elcr_keeps_timer_keyboard_cascade_rtc_and_fpu_edge_triggered() {
        let mut bus = pc_bus();
        bus.io_write(0x4D0, 2, 0xFFFF, 0);
        assert_eq!(bus.io_read(0x4D0, 2, 0), 0xDEF8);
    }

    #[test]
    fn level_request_that_vanishes_before_inta_gives_spurious_irq7() {
        let mut bus = pc_bus();
        bus.io_write(0x4D0, 1, 0x08, 0);
        set_line(&mut bus, 3, true);
        assert!(bus.interrupt_pending());
        set_line(&mut bus, 3, false);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x27));
        assert_eq!(
            read_isr(&mut bus, 0x20),
            0,
            "a spurious IRQ7 sets no ISR bit"
        );
    }

    #[test]
    fn slave_interrupt_arrives_through_master_ir2() {
        let mut bus = pc_bus();
        pulse(&mut bus, 12);
        assert_eq!(read_irr(&mut bus, 0x20), 0x04);
        assert!(bus.interrupt_pending());
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2C));
        assert_eq!(read_isr(&mut bus, 0x20), 0x04);
        assert_eq!(read_isr(&mut bus, 0xA0), 0x10);
        assert!(!bus.interrupt_pending());
    }

    #[test]
    fn bus_line_2_is_not_the_cascade_input() {
        let mut bus = pc_bus();
        pulse(&mut bus, 2);
        assert!(!bus.interrupt_pending());
        assert_eq!(read_irr(&mut bus, 0x20), 0);
    }

    #[test]
    fn masked_slave_request_does_not_reach_the_master() {
        let mut bus = pc_bus();
        bus.io_write(0xA1, 1, 0x01, 0);
        pulse(&mut bus, 8);
        assert!(!bus.interrupt_pending());
        bus.io_write(0xA1, 1, 0x00, 0);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x28));
    }

    #[test]
    fn vanished_slave_request_gives_spurious_irq15_with_master_ir2_in_service() {
        let mut bus = pc_bus();
        bus.io_write(0x4D1, 1, 0x08, 0);
        set_line(&mut bus, 11, true);
        assert!(bus.interrupt_pending());
        set_line(&mut bus, 11, false);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2F));
        assert_eq!(
            read_isr(&mut bus, 0x20),
            0x04,
            "the master still needs its EOI"
        );
        assert_eq!(read_isr(&mut bus, 0xA0), 0);
    }

    #[test]
    fn second_slave_request_in_auto_eoi_mode_is_delivered_too() {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x20, 0x28, ICW4_AEOI);
        pulse(&mut bus, 9);
        pulse(&mut bus, 13);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x29));
        assert!(bus.interrupt_pending());
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2D));
        assert!(!bus.interrupt_pending());
    }

    #[test]
    fn special_fully_nested_mode_lets_a_higher_slave_request_through() {
        let mut bus = bus_with_pic();
        init_pair(&mut bus, 0x20, 0x28, ICW4_SFNM);
        pulse(&mut bus, 12);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2C));
        pulse(&mut bus, 9);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x29));
        pulse(&mut bus, 3);
        assert!(!bus.interrupt_pending(), "IR3 ranks below IR2 in service");
    }

    #[test]
    fn fully_nested_mode_holds_back_slave_requests_while_ir2_is_in_service() {
        let mut bus = pc_bus();
        pulse(&mut bus, 12);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2C));
        pulse(&mut bus, 9);
        assert!(!bus.interrupt_pending());
    }

    #[test]
    fn poll_command_returns_the_highest_request() {
        let mut bus = pc_bus();
        pulse(&mut bus, 4);
        pulse(&mut bus, 6);
        bus.io_write(0x20, 1, 0x0C, 0);
        assert_eq!(bus.io_read(0x20, 1, 0), 0x84);
        assert_eq!(read_isr(&mut bus, 0x20), 0x10, "the poll read acknowledged");
        assert_eq!(
            read_irr(&mut bus, 0x20),
            0x40,
            "a poll is good for one read"
        );
        bus.io_write(0x20, 1, 0x20, 0);
        bus.io_write(0x20, 1, 0x0C, 0);
        assert_eq!(bus.io_read(0x21, 1, 0), 0x86);
        bus.io_write(0x20, 1, 0x20, 0);
        bus.io_write(0x20, 1, 0x0C, 0);
        assert_eq!(bus.io_read(0x20, 1, 0), 0x00, "nothing requested");
    }

    #[test]
    fn special_mask_mode_lets_lower_priority_requests_through() {
        let mut bus = pc_bus();
        pulse(&mut bus, 1);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x21));
        bus.io_write(0x21, 1, 0x02, 0);
        bus.io_write(0x20, 1, 0x68, 0);
        pulse(&mut bus, 5);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x25));
        // A non-specific EOI skips the masked IR1 and ends IR5.
        bus.io_write(0x20, 1, 0x20, 0);
        assert_eq!(read_isr(&mut bus, 0x20), 0x02);
        bus.io_write(0x20, 1, 0x48, 0);
        pulse(&mut bus, 5);
        assert!(!bus.interrupt_pending(), "back in fully nested mode");
    }

    #[test]
    fn mcs80_mode_vector_is_the_call_address_low_byte() {
        let mut bus = bus_with_pic();
        // ICW1: A7-A5 = 0b101, ADI (interval 4), single, ICW4 needed.
        bus.io_write(0x20, 1, 0xB7, 0);
        bus.io_write(0x21, 1, 0x12, 0);
        bus.io_write(0x21, 1, 0x00, 0);
        pulse(&mut bus, 3);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0xA0 | (3 << 2)));
    }

    #[test]
    fn single_mode_master_answers_ir2_itself() {
        let mut bus = bus_with_pic();
        bus.io_write(0x20, 1, 0x13, 0);
        bus.io_write(0x21, 1, 0x50, 0);
        bus.io_write(0x21, 1, 0x01, 0);
        bus.io_write(0xA0, 1, 0x11, 0);
        for v in [0x70, 0x02, 0x01] {
            bus.io_write(0xA1, 1, v, 0);
        }
        pulse(&mut bus, 10);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x52));
    }

    #[test]
    fn state_round_trips() {
        let mut bus = pc_bus();
        bus.io_write(0x4D1, 1, 0x04, 0);
        bus.io_write(0x21, 1, 0x80, 0);
        pulse(&mut bus, 3);
        pulse(&mut bus, 12);
        assert_eq!(bus.acknowledge_interrupt(0), Some(0x2C));
        let pic = bus.find_device::<Pic>().expect("the PIC is on the bus");
        let saved = pic.save_state();

        let mut restored = Pic::new();
        restored
            .restore_state(&saved)
            .expect("a saved state restores");
        assert_eq!(restored.master, pic.master);
        assert_eq!(restored.slave, pic.slave);
        assert_eq!(restored.save_state(), saved);

        let garbage = [
            serde_json::json!({}),
            serde_json::json!("pic"),
            serde_json::json!({ "version": 99, "master": saved["master"], "slave": saved["slave"] }),
        ];
        let mut bad_priority = saved.clone();
        bad_priority["master"]["highest"] = 9.into();
        let mut bad_elcr = saved.clone();
        bad_elcr["slave"]["elcr"] = 0x01.into();
        let mut bad_step = saved.clone();
        bad_step["slave"]["step"] = "Icw9".into();
        for state in garbage.iter().chain([&bad_priority, &bad_elcr, &bad_step]) {
            assert!(restored.restore_state(state).is_err(), "{state}");
            assert_eq!(
                restored.save_state(),
                saved,
                "a failed restore changes nothing"
            );
        }
    }

    const FUZZ_PORTS: [u16; 7] = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, DRIVER_PORT];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_port_sequences_never_panic(
            ops in proptest::collection::vec(
                (0..FUZZ_PORTS.len(), any::<u8>(), any::<bool>(), prop_oneof![Just(1u8), Just(2), Just(4)], 0u64..10_000, any::<bool>()),
                0..64,
            )
        ) {
            let mut bus = bus_with_pic();
            let mut now = 0u64;
            for (port, value, write, size, advance, ack) in ops {
                now += advance;
                let port = FUZZ_PORTS[port];
                if write {
                    bus.io_write(port, size, value as u32 * 0x0101_0101, now);
                } else {
                    bus.io_read(port, size, now);
                }
                if ack && bus.interrupt_pending() {
                    prop_assert!(bus.acknowledge_interrupt(now).is_some());
                } else if ack {
                    bus.acknowledge_interrupt(now);
                }
            }
            let pic = bus.find_device::<Pic>().expect("the PIC is on the bus");
            let saved = pic.save_state();
            prop_assert!(Pic::new().restore_state(&saved).is_ok());
        }
    }
}
