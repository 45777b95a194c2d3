//! The ACPI fixed-hardware power-management registers (ACPI
//! Specification 2.0, 4.7.3), at the I/O addresses QEMU's PIIX4 PM
//! function uses on its PC: the PM1a event block at 0x600 (status,
//! enable), the PM1a control block at 0x604 and the PM timer at 0x608.
//! The FADT ([`crate::acpi`]) names them.
//!
//! - The PM timer counts at 3.579545 MHz of virtual time, 24 bits wide
//!   (FADT TMR_VAL_EXT clear), and TMR_STS is set whenever its bit 23
//!   changes, as the specification says.
//! - There is no SMI command port, so ACPI mode is always on: SCI_EN reads
//!   1.
//! - Writing SLP_EN with SLP_TYP 0 — the `\_S5` (soft off) value of our
//!   DSDT — powers the machine off: the run ends as after a debug-exit
//!   write of 0. Other sleep types are ignored (no S1-S4).
//! - No SCI is ever raised: the enable bits are kept but no event source
//!   (timer overflow, buttons, RTC alarm) interrupts.

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError, StopRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The PM1a event block (PM1_STS, PM1_EN).
pub const PM_BASE: u16 = 0x600;
/// The PM1a control block (PM1_CNT).
pub const PM1_CNT_PORT: u16 = PM_BASE + 4;
/// The PM timer (PM_TMR).
pub const PM_TMR_PORT: u16 = PM_BASE + 8;
/// The ports the device claims.
pub const PM_PORTS: [(u16, u16); 1] = [(PM_BASE, PM_BASE + 11)];
/// The ISA IRQ the FADT names as the SCI.
pub const SCI_IRQ: u8 = 9;
/// The PM timer's frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const TMR_STS: u16 = 1 << 0;
const SCI_EN: u16 = 1 << 0;
/// PM1_CNT bits software may set and read back: BM_RLD (1) and SLP_TYP
/// (12:10). GBL_RLS (2) and SLP_EN (13) are write-only.
const PM1_CNT_KEPT: u16 = 1 << 1 | 7 << 10;
const SLP_EN: u16 = 1 << 13;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    pm1_en: u16,
    /// The PM1_CNT bits kept (`PM1_CNT_KEPT`).
    pm1_cnt: u16,
    /// The timer value (unwrapped) when TMR_STS was last cleared.
    tmr_sts_since: u64,
}

/// The PM registers.
#[derive(Default)]
pub struct AcpiPm {
    s: State,
}

impl AcpiPm {
    pub fn new() -> AcpiPm {
        AcpiPm::default()
    }

    /// PM timer ticks since power-on, unwrapped.
    fn ticks(now_ns: u64) -> u64 {
        (now_ns as u128 * PM_TIMER_HZ as u128 / 1_000_000_000) as u64
    }

    fn pm1_sts(&self, now_ns: u64) -> u16 {
        if Self::ticks(now_ns) >> 23 != self.s.tmr_sts_since >> 23 {
            TMR_STS
        } else {
            0
        }
    }

    /// The register file's bytes 0x600-0x60B now.
    fn bytes(&self, now_ns: u64) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..2].copy_from_slice(&self.pm1_sts(now_ns).to_le_bytes());
        b[2..4].copy_from_slice(&self.s.pm1_en.to_le_bytes());
        b[4..6].copy_from_slice(&(self.s.pm1_cnt | SCI_EN).to_le_bytes());
        let timer = (Self::ticks(now_ns) & 0xFF_FFFF) as u32;
        b[8..12].copy_from_slice(&timer.to_le_bytes());
        b
    }
}

impl Device for AcpiPm {
    fn name(&self) -> &'static str {
        "acpi-pm"
    }

    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        let b = self.bytes(ctx.now_ns);
        let at = port.wrapping_sub(PM_BASE) as usize;
        (0..size as usize).fold(0u32, |v, i| {
            v | (*b.get(at + i).unwrap_or(&0xFF) as u32) << (8 * i)
        })
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        let at = port.wrapping_sub(PM_BASE) as usize;
        for i in 0..size as usize {
            let byte = (value >> (8 * i)) as u8 as u16;
            match at + i {
                // PM1_STS: write 1 to clear. Only TMR_STS is ever set.
                0 if byte & TMR_STS != 0 => {
                    self.s.tmr_sts_since = Self::ticks(ctx.now_ns);
                }
                2 => self.s.pm1_en = self.s.pm1_en & 0xFF00 | byte,
                3 => self.s.pm1_en = self.s.pm1_en & 0x00FF | byte << 8,
                4 => self.s.pm1_cnt = self.s.pm1_cnt & 0xFF00 | byte & PM1_CNT_KEPT,
                5 => {
                    let high = byte << 8;
                    self.s.pm1_cnt = self.s.pm1_cnt & 0x00FF | high & PM1_CNT_KEPT;
                    if high & SLP_EN != 0 && (high >> 10) & 7 == 0 {
                        ctx.signals.stop = Some(StopRequest::PowerOff);
                    }
                }
                _ => {}
            }
        }
    }

    fn save_state(&self) -> Value {
        serde_json::json!({ "version": 1, "state": self.s })
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        if state.get("version").and_then(Value::as_u64) != Some(1) {
            return Err(StateError::new("acpi-pm", "unknown version"));
        }
        let s: State = serde_json::from_value(state.get("state").cloned().unwrap_or(Value::Null))
            .map_err(|e| StateError::new("acpi-pm", e))?;
        self.s = s;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_core::bus::{DeviceEvents, Signals};

    struct Harness {
        pm: AcpiPm,
        signals: Signals,
        events: DeviceEvents,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                pm: AcpiPm::new(),
                signals: Signals::default(),
                events: DeviceEvents::default(),
            }
        }
        fn read(&mut self, now_ns: u64, port: u16, size: u8) -> u32 {
            let mut ctx = DeviceCtx::new(now_ns, &mut self.signals, &mut self.events);
            self.pm.io_read(port, size, &mut ctx)
        }
        fn write(&mut self, now_ns: u64, port: u16, size: u8, value: u32) {
            let mut ctx = DeviceCtx::new(now_ns, &mut self.signals, &mut self.events);
            self.pm.io_write(port, size, value, &mut ctx)
        }
    }

    #[test]
    fn the_pm_timer_counts_3_579545_mhz_of_virtual_time_in_24_bits() {
        let mut h = Harness::new();
        assert_eq!(h.read(0, PM_TMR_PORT, 4), 0);
        assert_eq!(h.read(1_000_000_000, PM_TMR_PORT, 4), 3_579_545 & 0xFF_FFFF);
        assert_eq!(h.read(1_000_000, PM_TMR_PORT, 4), 3579);
        // 2^24 ticks later it wraps.
        let wrap_ns = (1u64 << 24) * 1_000_000_000 / PM_TIMER_HZ + 1;
        assert!(h.read(wrap_ns, PM_TMR_PORT, 4) < 10);
    }

    #[test]
    fn tmr_sts_sets_when_bit_23_changes_and_clears_by_writing_1() {
        let mut h = Harness::new();
        assert_eq!(h.read(0, PM_BASE, 2) & 1, 0);
        let bit23_ns = (1u64 << 23) * 1_000_000_000 / PM_TIMER_HZ + 1_000;
        assert_eq!(h.read(bit23_ns, PM_BASE, 2) & 1, 1);
        h.write(bit23_ns, PM_BASE, 2, 1);
        assert_eq!(h.read(bit23_ns, PM_BASE, 2) & 1, 0);
    }

    #[test]
    fn sci_en_reads_1_because_there_is_no_smi_command_port() {
        let mut h = Harness::new();
        assert_eq!(h.read(0, PM1_CNT_PORT, 2) & 1, 1);
        h.write(0, PM1_CNT_PORT, 2, 0);
        assert_eq!(h.read(0, PM1_CNT_PORT, 2) & 1, 1);
    }

    #[test]
    fn slp_en_with_the_s5_type_powers_off_and_other_types_do_not() {
        let mut h = Harness::new();
        h.write(0, PM1_CNT_PORT, 2, (3 << 10) | (1 << 13));
        assert_eq!(h.signals.stop, None, "SLP_TYP 3 is no sleep state we have");
        assert_eq!(
            h.read(0, PM1_CNT_PORT, 2) & (1 << 13),
            0,
            "SLP_EN is write-only"
        );
        h.write(0, PM1_CNT_PORT, 2, 1 << 13);
        assert_eq!(h.signals.stop, Some(StopRequest::PowerOff));
    }

    #[test]
    fn the_enable_register_keeps_what_is_written_byte_by_byte() {
        let mut h = Harness::new();
        h.write(0, PM_BASE + 2, 1, 0x21);
        h.write(0, PM_BASE + 3, 1, 0x01);
        assert_eq!(h.read(0, PM_BASE + 2, 2), 0x0121);
    }

    #[test]
    fn saved_state_round_trips_and_garbage_is_refused() {
        let mut h = Harness::new();
        h.write(0, PM_BASE + 2, 2, 0x0100);
        let saved = h.pm.save_state();
        let mut other = AcpiPm::new();
        other.restore_state(&saved).unwrap();
        assert_eq!(other.s, h.pm.s);
        assert!(other
            .restore_state(&serde_json::json!({"version": 9}))
            .is_err());
        assert!(other
            .restore_state(&serde_json::json!({"version": 1, "state": 3}))
            .is_err());
        assert_eq!(other.s, h.pm.s, "a refused state changes nothing");
    }
}
