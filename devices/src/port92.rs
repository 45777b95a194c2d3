//! System control port A at 0x92 (IBM PS/2 Technical Reference; Intel
//! 82371AB PIIX4 data sheet, "Port 92h"): the fast A20 gate and the fast
//! CPU reset, which spare the guest the slow trip through the 8042.
//!
//! Bit 1 asks for A20 on or off (the machine applies it); bit 0 going from
//! 0 to 1 resets the CPU. The other bits (the PS/2's CMOS security lock and
//! disk activity lights) are kept and read back but do nothing. A read
//! returns the last value written; bit 1 shows the A20 state as last set
//! through this port, which is "on" until the guest writes it, matching a
//! machine that starts with A20 enabled.

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError, StopRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SYSTEM_CONTROL_PORT: u16 = 0x92;

const FAST_RESET: u8 = 1 << 0;
const FAST_A20: u8 = 1 << 1;

/// What a saved state holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Port92State {
    value: u8,
}

pub struct SystemControlPort {
    s: Port92State,
}

impl Default for SystemControlPort {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemControlPort {
    pub fn new() -> SystemControlPort {
        SystemControlPort {
            s: Port92State { value: FAST_A20 },
        }
    }

    fn write(&mut self, v: u8, ctx: &mut DeviceCtx) {
        let old = self.s.value;
        self.s.value = v;
        ctx.signals.a20 = Some(v & FAST_A20 != 0);
        // The reset is an edge: writing back a value read with bit 0
        // still set does not reset again.
        if old & FAST_RESET == 0 && v & FAST_RESET != 0 {
            ctx.signals.stop = Some(StopRequest::Reset);
        }
    }
}

impl Device for SystemControlPort {
    fn name(&self) -> &'static str {
        "port92"
    }

    fn io_read(&mut self, port: u16, size: u8, _ctx: &mut DeviceCtx) -> u32 {
        // Only the byte at 0x92 is ours; other lanes of a wider access
        // read as ones.
        (0..size.min(4) as u16).fold(0u32, |acc, i| {
            let byte = if port.wrapping_add(i) == SYSTEM_CONTROL_PORT {
                self.s.value
            } else {
                0xFF
            };
            acc | (byte as u32) << (8 * i)
        })
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        for i in 0..size.min(4) as u16 {
            if port.wrapping_add(i) == SYSTEM_CONTROL_PORT {
                self.write((value >> (8 * i)) as u8, ctx);
            }
        }
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.s).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        self.s = serde_json::from_value(state.clone()).map_err(|e| StateError::new("port92", e))?;
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

    fn bus_with_port92() -> Bus {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(SystemControlPort::new()));
        bus.claim_ports(id, SYSTEM_CONTROL_PORT, SYSTEM_CONTROL_PORT);
        bus
    }

    #[test]
    fn port92_fast_a20_and_reset() {
        let mut bus = bus_with_port92();
        assert_eq!(
            bus.io_read(SYSTEM_CONTROL_PORT, 1, 0),
            0x02,
            "A20 starts on"
        );
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x00, 0);
        assert_eq!(bus.signals.a20, Some(false));
        assert_eq!(bus.io_read(SYSTEM_CONTROL_PORT, 1, 0), 0x00);
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x02, 0);
        assert_eq!(bus.signals.a20, Some(true));
        assert_eq!(bus.signals.stop, None);
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x03, 0);
        assert_eq!(bus.signals.stop, Some(StopRequest::Reset));
        assert_eq!(bus.io_read(SYSTEM_CONTROL_PORT, 1, 0), 0x03);
    }

    #[test]
    fn port92_reset_needs_a_rising_edge() {
        let mut bus = bus_with_port92();
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x03, 0);
        bus.signals.stop = None;
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x03, 0);
        assert_eq!(bus.signals.stop, None);
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x02, 0);
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0x03, 0);
        assert_eq!(bus.signals.stop, Some(StopRequest::Reset));
    }

    #[test]
    fn state_round_trips() {
        let mut bus = bus_with_port92();
        bus.io_write(SYSTEM_CONTROL_PORT, 1, 0xC0, 0);
        let saved = bus
            .find_device::<SystemControlPort>()
            .map(|p| p.save_state())
            .unwrap();
        let mut other = SystemControlPort::new();
        other.restore_state(&saved).unwrap();
        assert_eq!(other.s.value, 0xC0);
        for garbage in [serde_json::json!({"value": 256}), serde_json::json!([])] {
            assert!(other.restore_state(&garbage).is_err());
            assert_eq!(other.s.value, 0xC0, "a failed restore changes nothing");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn port92_survives_any_port_sequence(
            ops in proptest::collection::vec((0x90u16..=0x94, prop_oneof![Just(1u8), Just(2), Just(4)], proptest::option::of(any::<u32>()), any::<u32>()), 1..64),
        ) {
            let mut bus = bus_with_port92();
            for (port, size, write, now) in ops {
                match write {
                    Some(v) => bus.io_write(port, size, v, now as u64),
                    None => { bus.io_read(port, size, now as u64); }
                }
            }
        }
    }
}
