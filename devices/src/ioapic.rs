//! The 82093AA I/O APIC (Intel 82093AA I/O Advanced Programmable Interrupt
//! Controller data sheet, sections 3.0-3.2): 24 interrupt pins, each with a
//! redirection-table entry that turns a pin's signal into a message on the
//! APIC bus for the local APIC (which takes it by the destination rules of
//! SDM Vol. 3A 10.6.2).
//!
//! The guest reaches the registers indirectly: it writes a register index
//! to IOREGSEL (offset 0x00) and reads or writes the register through IOWIN
//! (offset 0x10). Registers: ID (0x00), version (0x01), arbitration ID
//! (0x02) and the redirection table (0x10 + 2n: low dword of entry n,
//! 0x11 + 2n: high dword).
//!
//! Pins follow the bus's interrupt lines (line n is pin n). An
//! edge-triggered pin sends a message on the rising edge of its asserted
//! level; a level-triggered pin sends while asserted and sets Remote IRR
//! until the local APIC broadcasts the EOI for its vector, then sends again
//! if still asserted. Polarity says which level is asserted.
//!
//! Choices this model makes, and why:
//! - Messages arrive at once, so Delivery Status always reads 0 (idle).
//! - IOREGSEL takes any access width (only its low byte matters). IOWIN
//!   is a 32-bit window onto 32-bit registers (data sheet 3.1); other
//!   widths read 0 and write nothing.
//! - Remote IRR applies to Fixed and Lowest Priority entries, the only
//!   ones the local APIC answers with an EOI; NMI, SMI, INIT and ExtINT
//!   entries are sent as edge-triggered, as the data sheet requires of
//!   them. An entry switched to edge trigger loses its Remote IRR, as in
//!   QEMU; guests use this to clear a stuck entry.
//! - Reserved delivery modes (011, 110) send nothing.

use std::any::Any;

use ringside_core::bus::{ApicMessage, DeliveryMode, Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The physical address of the register window (82093AA data sheet 3.0;
/// the MP tables and ACPI MADT announce it).
pub const IOAPIC_BASE: u32 = 0xFEC0_0000;
/// The window decodes 4 KiB.
pub const IOAPIC_SIZE: u32 = 0x1000;

/// Interrupt input pins, and redirection-table entries.
pub const IOAPIC_PINS: usize = 24;

const IOREGSEL: u32 = 0x00;
const IOWIN: u32 = 0x10;

// Register indexes (data sheet 3.2).
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION: u32 = 0x10;
const REG_REDIRECTION_LAST: u32 = REG_REDIRECTION + 2 * IOAPIC_PINS as u32 - 1;

/// The 4-bit IOAPIC ID in bits 27:24 (data sheet 3.2.1).
const ID_MASK: u32 = 0x0F00_0000;
/// Version 0x11, maximum redirection entry 23 (data sheet 3.2.2).
const VERSION: u32 = ((IOAPIC_PINS as u32 - 1) << 16) | 0x11;

// Redirection-table entry fields (data sheet 3.2.4).
const RTE_ACTIVE_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_LOGICAL: u64 = 1 << 11;
/// Vector, delivery mode, destination mode, polarity, trigger mode, mask.
const RTE_LOW_WRITABLE: u64 = 0x0001_AFFF;
/// The destination field, bits 63:56.
const RTE_HIGH_WRITABLE: u64 = 0xFF00_0000_0000_0000;
/// After reset every entry is masked (data sheet 3.2.4).
const RTE_RESET: u64 = RTE_MASKED;

/// The register state (what a saved state holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct IoApicRegs {
    id: u32,
    /// The register IOWIN reaches.
    regsel: u32,
    redirection: [u64; IOAPIC_PINS],
    /// The input level on each pin, before polarity.
    pin_level: [bool; IOAPIC_PINS],
}

impl Default for IoApicRegs {
    fn default() -> Self {
        IoApicRegs {
            id: 0,
            regsel: 0,
            redirection: [RTE_RESET; IOAPIC_PINS],
            pin_level: [false; IOAPIC_PINS],
        }
    }
}

impl IoApicRegs {
    /// Reasons a saved state could not have come from this model.
    fn check(&self) -> Result<(), String> {
        if self.id & !ID_MASK != 0 {
            return Err(format!("ID {:#x} sets reserved bits", self.id));
        }
        if self.regsel > 0xFF {
            return Err(format!("IOREGSEL {:#x} is not a byte", self.regsel));
        }
        for (pin, &entry) in self.redirection.iter().enumerate() {
            if entry & !(RTE_LOW_WRITABLE | RTE_HIGH_WRITABLE | RTE_REMOTE_IRR) != 0 {
                return Err(format!(
                    "redirection entry {pin} {entry:#x} sets reserved bits"
                ));
            }
            if entry & RTE_REMOTE_IRR != 0 && !uses_remote_irr(entry) {
                return Err(format!(
                    "redirection entry {pin} has Remote IRR without level trigger"
                ));
            }
        }
        Ok(())
    }
}

/// Whether an entry waits for an EOI between messages: level-triggered
/// Fixed and Lowest Priority entries.
fn uses_remote_irr(entry: u64) -> bool {
    entry & RTE_LEVEL != 0
        && matches!(
            delivery_mode(entry),
            Some(DeliveryMode::Fixed | DeliveryMode::LowestPriority)
        )
}

/// The delivery-mode field, bits 10:8 (None for the reserved encodings).
fn delivery_mode(entry: u64) -> Option<DeliveryMode> {
    match (entry >> 8) & 7 {
        0 => Some(DeliveryMode::Fixed),
        1 => Some(DeliveryMode::LowestPriority),
        2 => Some(DeliveryMode::Smi),
        4 => Some(DeliveryMode::Nmi),
        5 => Some(DeliveryMode::Init),
        7 => Some(DeliveryMode::ExtInt),
        _ => None,
    }
}

/// The I/O APIC: 24 pins routed to the local APIC.
pub struct IoApic {
    regs: IoApicRegs,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// An IOAPIC with ID 0 and every entry masked.
    pub fn new() -> IoApic {
        IoApic {
            regs: IoApicRegs::default(),
        }
    }

    /// An IOAPIC whose ID register holds `id` (bits 24-27), as firmware
    /// programs it to match the MP table. It is part of the power-on state,
    /// so a reset keeps it (ringside's machine, not its BIOS, sets it).
    pub fn with_id(id: u8) -> IoApic {
        let mut a = IoApic::new();
        a.regs.id = ((id as u32) << 24) & ID_MASK;
        a
    }

    /// Pin `pin` is asserted: its input level, through its polarity bit.
    fn asserted(&self, pin: usize) -> bool {
        let active_low = self.regs.redirection[pin] & RTE_ACTIVE_LOW != 0;
        self.regs.pin_level[pin] != active_low
    }

    /// Put entry `pin`'s message on the APIC bus.
    fn send(&mut self, pin: usize, ctx: &mut DeviceCtx) {
        let entry = self.regs.redirection[pin];
        let Some(mode) = delivery_mode(entry) else {
            return;
        };
        let level_triggered = uses_remote_irr(entry);
        if level_triggered {
            self.regs.redirection[pin] |= RTE_REMOTE_IRR;
        }
        ctx.send_apic_message(ApicMessage {
            vector: entry as u8,
            mode,
            level_triggered,
            destination: (entry >> 56) as u8,
            logical: entry & RTE_LOGICAL != 0,
        });
    }

    /// A level-triggered entry sends while its pin is asserted, unmasked
    /// and not waiting for an EOI.
    fn service_level_pin(&mut self, pin: usize, ctx: &mut DeviceCtx) {
        let entry = self.regs.redirection[pin];
        if uses_remote_irr(entry)
            && entry & (RTE_MASKED | RTE_REMOTE_IRR) == 0
            && self.asserted(pin)
        {
            self.send(pin, ctx);
        }
    }

    fn read_register(&self, index: u32) -> u32 {
        match index {
            REG_ID => self.regs.id,
            REG_VERSION => VERSION,
            // The arbitration ID is loaded from the ID (data sheet 3.2.3).
            REG_ARBITRATION => self.regs.id,
            REG_REDIRECTION..=REG_REDIRECTION_LAST => {
                let n = index - REG_REDIRECTION;
                let entry = self.regs.redirection[(n / 2) as usize];
                if n & 1 == 1 {
                    (entry >> 32) as u32
                } else {
                    entry as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, index: u32, value: u32, ctx: &mut DeviceCtx) {
        match index {
            REG_ID => self.regs.id = value & ID_MASK,
            REG_REDIRECTION..=REG_REDIRECTION_LAST => {
                let n = index - REG_REDIRECTION;
                let pin = (n / 2) as usize;
                let old = self.regs.redirection[pin];
                if n & 1 == 1 {
                    let high = (u64::from(value) << 32) & RTE_HIGH_WRITABLE;
                    self.regs.redirection[pin] = (old & !RTE_HIGH_WRITABLE) | high;
                    return;
                }
                let low = u64::from(value) & RTE_LOW_WRITABLE;
                let mut entry = (old & (RTE_HIGH_WRITABLE | RTE_REMOTE_IRR)) | low;
                if !uses_remote_irr(entry) {
                    entry &= !RTE_REMOTE_IRR;
                }
                self.regs.redirection[pin] = entry;
                // Unmasking an asserted level pin delivers it now.
                self.service_level_pin(pin, ctx);
            }
            // Version and arbitration ID are read-only.
            _ => {}
        }
    }
}

impl Device for IoApic {
    fn name(&self) -> &'static str {
        "ioapic"
    }

    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }

    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}

    fn mmio_read(&mut self, offset: u32, size: u8, _ctx: &mut DeviceCtx) -> u32 {
        match (offset, size) {
            (IOREGSEL, _) => self.regs.regsel,
            (IOWIN, 4) => self.read_register(self.regs.regsel),
            _ => 0,
        }
    }

    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, ctx: &mut DeviceCtx) {
        match (offset, size) {
            (IOREGSEL, _) => self.regs.regsel = value & 0xFF,
            (IOWIN, 4) => self.write_register(self.regs.regsel, value, ctx),
            _ => {}
        }
    }

    fn irq_line(&mut self, line: u8, level: bool, ctx: &mut DeviceCtx) {
        let pin = line as usize;
        if pin >= IOAPIC_PINS {
            return;
        }
        let was = self.asserted(pin);
        self.regs.pin_level[pin] = level;
        let entry = self.regs.redirection[pin];
        // Signals on a masked pin are ignored, edges lost (data sheet 3.2.4).
        if entry & RTE_MASKED != 0 {
            return;
        }
        if uses_remote_irr(entry) {
            self.service_level_pin(pin, ctx);
        } else if !was && self.asserted(pin) {
            self.send(pin, ctx);
        }
    }

    /// The local APIC retired a level-triggered `vector`: entries waiting
    /// on it may send again.
    fn eoi_broadcast(&mut self, vector: u8, ctx: &mut DeviceCtx) {
        for pin in 0..IOAPIC_PINS {
            let entry = self.regs.redirection[pin];
            if entry & RTE_REMOTE_IRR != 0 && entry as u8 == vector {
                self.regs.redirection[pin] &= !RTE_REMOTE_IRR;
                self.service_level_pin(pin, ctx);
            }
        }
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.regs).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let regs: IoApicRegs = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        regs.check().map_err(Self::state_error)?;
        self.regs = regs;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl IoApic {
    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("ioapic", reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lapic::LocalApic;
    use proptest::prelude::*;
    use ringside_core::bus::Bus;
    use ringside_core::memory::DeviceId;

    const LINE_PORT: u16 = 0x10;
    const LAPIC_SVR: u32 = 0x0F0;
    const LAPIC_EOI: u32 = 0x0B0;

    /// Drives interrupt lines: a write of `line | level << 7` to its port.
    struct LineDriver;

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

    struct Rig {
        bus: Bus,
        ioapic: DeviceId,
        lapic: DeviceId,
    }

    impl Rig {
        /// The IOAPIC on the interrupt lines, delivering to a
        /// software-enabled local APIC with ID 0.
        fn new() -> Rig {
            let mut bus = Bus::new();
            let lapic = bus.add(Box::new(LocalApic::new()));
            bus.set_lapic(lapic);
            let ioapic = bus.add(Box::new(IoApic::new()));
            bus.add_irq_listener(ioapic);
            bus.add_eoi_listener(ioapic);
            let driver = bus.add(Box::new(LineDriver));
            bus.claim_ports(driver, LINE_PORT, LINE_PORT);
            bus.mmio_write(lapic, LAPIC_SVR, 4, 0x1FF, 0);
            Rig { bus, ioapic, lapic }
        }

        fn read(&mut self, index: u32) -> u32 {
            self.bus.mmio_write(self.ioapic, IOREGSEL, 4, index, 0);
            self.bus.mmio_read(self.ioapic, IOWIN, 4, 0)
        }

        fn write(&mut self, index: u32, value: u32) {
            self.bus.mmio_write(self.ioapic, IOREGSEL, 4, index, 0);
            self.bus.mmio_write(self.ioapic, IOWIN, 4, value, 0);
        }

        fn program(&mut self, pin: u32, low: u32, destination: u8) {
            self.write(REG_REDIRECTION + 2 * pin + 1, (destination as u32) << 24);
            self.write(REG_REDIRECTION + 2 * pin, low);
        }

        fn set_line(&mut self, line: u8, level: bool) {
            self.bus
                .io_write(LINE_PORT, 1, line as u32 | ((level as u32) << 7), 0);
        }

        fn eoi(&mut self) {
            self.bus.mmio_write(self.lapic, LAPIC_EOI, 4, 0, 0);
        }

        fn remote_irr(&mut self, pin: u32) -> bool {
            self.read(REG_REDIRECTION + 2 * pin) as u64 & RTE_REMOTE_IRR != 0
        }
    }

    const LEVEL: u32 = RTE_LEVEL as u32;
    const MASKED: u32 = RTE_MASKED as u32;
    const ACTIVE_LOW: u32 = RTE_ACTIVE_LOW as u32;

    #[test]
    fn ioapic_edge_pin_delivers_vector_to_lapic() {
        let mut rig = Rig::new();
        rig.program(3, 0x31, 0);
        rig.set_line(3, true);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x31));
        rig.eoi();
        rig.set_line(3, true);
        assert!(!rig.bus.interrupt_pending(), "no new edge");
        rig.set_line(3, false);
        rig.set_line(3, true);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x31));
        assert!(!rig.remote_irr(3));
    }

    #[test]
    fn ioapic_level_pin_sets_remote_irr_until_eoi() {
        let mut rig = Rig::new();
        rig.program(10, LEVEL | 0x41, 0);
        rig.set_line(10, true);
        assert!(rig.remote_irr(10));
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x41));
        rig.set_line(10, true);
        assert!(!rig.bus.interrupt_pending(), "Remote IRR holds the pin");
        // EOI with the pin still asserted: delivered again.
        rig.eoi();
        assert!(rig.remote_irr(10));
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x41));
        rig.set_line(10, false);
        rig.eoi();
        assert!(!rig.remote_irr(10));
        assert!(!rig.bus.interrupt_pending());
    }

    #[test]
    fn masked_entry_delivers_nothing() {
        let mut rig = Rig::new();
        rig.program(5, MASKED | 0x35, 0);
        rig.program(6, MASKED | LEVEL | 0x36, 0);
        rig.set_line(5, true);
        rig.set_line(6, true);
        assert!(!rig.bus.interrupt_pending());
        assert!(!rig.remote_irr(6));
        // The edge seen while masked is lost.
        rig.program(5, 0x35, 0);
        assert!(!rig.bus.interrupt_pending());
    }

    #[test]
    fn unmasking_asserted_level_pin_delivers() {
        let mut rig = Rig::new();
        rig.program(7, MASKED | LEVEL | 0x47, 0);
        rig.set_line(7, true);
        assert!(!rig.bus.interrupt_pending());
        rig.program(7, LEVEL | 0x47, 0);
        assert!(rig.remote_irr(7));
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x47));
    }

    #[test]
    fn active_low_level_pin_asserts_on_low_level() {
        let mut rig = Rig::new();
        rig.set_line(9, true);
        rig.program(9, ACTIVE_LOW | LEVEL | 0x49, 0);
        assert!(!rig.bus.interrupt_pending(), "a high line is idle");
        rig.set_line(9, false);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x49));
    }

    #[test]
    fn messages_for_another_apic_id_are_not_taken() {
        let mut rig = Rig::new();
        rig.program(4, 0x34, 5);
        rig.set_line(4, true);
        assert!(!rig.bus.interrupt_pending());
        rig.program(4, RTE_LOGICAL as u32 | 0x34, 0xFF);
        rig.set_line(4, false);
        rig.set_line(4, true);
        assert!(!rig.bus.interrupt_pending(), "the LAPIC's LDR is 0");
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let mut rig = Rig::new();
        rig.program(11, LEVEL | 0x51, 0);
        rig.set_line(11, true);
        assert!(rig.remote_irr(11));
        rig.program(11, 0x51, 0);
        assert!(!rig.remote_irr(11));
    }

    #[test]
    fn id_version_and_arbitration_registers() {
        let mut rig = Rig::new();
        assert_eq!(rig.read(REG_VERSION), 0x0017_0011);
        rig.write(REG_ID, 0xFFFF_FFFF);
        assert_eq!(rig.read(REG_ID), 0x0F00_0000);
        assert_eq!(rig.read(REG_ARBITRATION), 0x0F00_0000);
        rig.write(REG_VERSION, 0);
        assert_eq!(rig.read(REG_VERSION), 0x0017_0011);
        assert_eq!(rig.read(REG_REDIRECTION + 2 * 23), MASKED);
        assert_eq!(rig.read(0x40), 0, "past the last entry");
        rig.write(REG_REDIRECTION + 1, 0xFFFF_FFFF);
        assert_eq!(rig.read(REG_REDIRECTION + 1), 0xFF00_0000);
        assert_eq!(
            rig.bus.mmio_read(rig.ioapic, IOWIN, 1, 0),
            0,
            "IOWIN is 32 bits"
        );
    }

    #[test]
    fn state_round_trips() {
        let mut rig = Rig::new();
        rig.write(REG_ID, 0x0200_0000);
        rig.program(10, LEVEL | 0x41, 0);
        rig.set_line(10, true);
        let saved = rig.bus.find_device::<IoApic>().map(|a| a.save_state());
        let saved = saved.unwrap_or(Value::Null);
        let mut copy = IoApic::new();
        assert_eq!(copy.restore_state(&saved), Ok(()));
        let original = rig.bus.find_device::<IoApic>().map(|a| a.regs.clone());
        assert_eq!(Some(copy.regs.clone()), original);

        let before = copy.regs.clone();
        assert!(copy.restore_state(&serde_json::json!([1, 2, 3])).is_err());
        let mut bad = saved.clone();
        bad["redirection"][0] = (1u64 << 40).into();
        assert!(copy.restore_state(&bad).is_err());
        let mut bad = saved;
        bad["pin_level"] = serde_json::json!([true]);
        assert!(copy.restore_state(&bad).is_err());
        assert_eq!(copy.regs, before, "a failed restore changes nothing");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read { offset: u32, size: u8 },
        Write { offset: u32, size: u8, value: u32 },
        Line { line: u8, level: bool },
        Advance(u64),
        AcknowledgeAndEoi,
    }

    fn op() -> impl Strategy<Value = Op> {
        let offset = prop_oneof![3 => prop_oneof![Just(IOREGSEL), Just(IOWIN)], 1 => 0u32..0x1000];
        let size = prop_oneof![6 => Just(4u8), 1 => Just(1u8), 1 => Just(2u8)];
        let value = prop_oneof![
            any::<u32>(),
            0u32..0x40,
            (any::<u8>(), 0u32..0x20).prop_map(|(v, flags)| (flags << 11) | v as u32),
        ];
        prop_oneof![
            2 => (offset.clone(), size.clone()).prop_map(|(offset, size)| Op::Read { offset, size }),
            6 => (offset, size, value)
                .prop_map(|(offset, size, value)| Op::Write { offset, size, value }),
            3 => (0u8..32, any::<bool>()).prop_map(|(line, level)| Op::Line { line, level }),
            1 => (0u64..5000).prop_map(Op::Advance),
            2 => Just(Op::AcknowledgeAndEoi),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_access_sequences_never_panic(ops in proptest::collection::vec(op(), 1..64)) {
            let mut rig = Rig::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Read { offset, size } => {
                        rig.bus.mmio_read(rig.ioapic, offset, size, now);
                    }
                    Op::Write { offset, size, value } => {
                        rig.bus.mmio_write(rig.ioapic, offset, size, value, now);
                    }
                    Op::Line { line, level } => rig.set_line(line, level),
                    Op::Advance(ns) => {
                        now += ns;
                        rig.bus.run_timers(now);
                    }
                    Op::AcknowledgeAndEoi => {
                        if rig.bus.interrupt_pending() {
                            rig.bus.acknowledge_interrupt(now);
                        }
                        rig.eoi();
                    }
                }
            }
            // Every state the guest can reach is one a restore accepts.
            let saved = rig.bus.find_device::<IoApic>().map(|a| a.save_state());
            let mut copy = IoApic::new();
            prop_assert_eq!(copy.restore_state(&saved.unwrap_or(Value::Null)), Ok(()));
        }
    }
}
