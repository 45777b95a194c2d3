//! The MC146818 real-time clock and its CMOS RAM (Motorola MC146818A data
//! sheet; the PC/AT Technical Reference for the CMOS map): an index port at
//! 0x70 (bit 7 disables NMI), a data port at 0x71, 128 bytes of which the
//! first 14 are the clock.
//!
//! Time comes only from the virtual clock. The caller gives the time of day
//! at virtual time 0 (seconds since the Unix epoch); the clock counts one
//! update cycle per virtual second from there. Nothing is polled: each
//! event the guest enabled (periodic, alarm, update-ended) is a timer
//! callback at the virtual instant it happens, and flags the guest did not
//! ask to be interrupted for are worked out when it reads register C.
//!
//! The model, in the data sheet's terms:
//! - Register A: DV2-0 = 010 (the PC's 32.768 kHz crystal) runs the divider
//!   chain; 11x holds it in reset, and the first update comes 500 ms after
//!   leaving reset. Other DV values stop the chain too (they select time
//!   bases a PC does not have). RS3-0 pick the periodic rate. UIP is set
//!   for the 244 us before each update.
//! - Register B: SET stops updates (and, going high, clears UIE), PIE, AIE,
//!   UIE, SQWE (kept, there is no SQW pin), DM (binary or BCD), 24/12 (the
//!   PM flag is bit 7 of the hours byte), DSE (kept, ignored).
//! - Register C: IRQF, PF, AF, UF; reading it clears them and lowers IRQ 8,
//!   which is high while IRQF is set.
//! - Register D: VRT is always 1 (the battery is good).
//!
//! An update is instantaneous at the end of the UIP window. The clock is
//! kept as calendar fields in binary and shown in the format register B
//! selects, so changing DM or 24/12 shows the same time in the new format
//! (the chip would reinterpret the stored bytes). Values written to the time
//! registers are clamped to their ranges; an impossible date such as 31
//! February rolls over at the next update. The alarm bytes are compared as
//! stored, with 0xC0-0xFF as "don't care". The century byte at 0x32 (the
//! IBM convention, named in ACPI's FADT) follows the clock.

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const INDEX_PORT: u16 = 0x70;
pub const DATA_PORT: u16 = 0x71;
/// The RTC interrupts on ISA IRQ 8 (the slave PIC's input 0).
pub const RTC_IRQ: u8 = 8;

const CMOS_SIZE: usize = 128;

const REG_SECONDS: u8 = 0x00;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES: u8 = 0x02;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS: u8 = 0x04;
const REG_HOURS_ALARM: u8 = 0x05;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
/// IBM's century byte.
const REG_CENTURY: u8 = 0x32;

const A_UIP: u8 = 1 << 7;
/// DV2-0 = 010: a 32.768 kHz time base, divider running.
const A_DV_32K: u8 = 0b010 << 4;
const A_DV_MASK: u8 = 0b111 << 4;
const A_RS_MASK: u8 = 0x0F;

const B_SET: u8 = 1 << 7;
const B_PIE: u8 = 1 << 6;
const B_AIE: u8 = 1 << 5;
const B_UIE: u8 = 1 << 4;
const B_SQWE: u8 = 1 << 3;
const B_DM_BINARY: u8 = 1 << 2;
const B_24_HOUR: u8 = 1 << 1;

const C_IRQF: u8 = 1 << 7;
const C_PF: u8 = 1 << 6;
const C_AF: u8 = 1 << 5;
const C_UF: u8 = 1 << 4;

const D_VRT: u8 = 1 << 7;

/// The PM flag of the hours byte in 12-hour mode.
const HOUR_PM: u8 = 1 << 7;

const NS_PER_SEC: i128 = 1_000_000_000;
/// The divider chain counts a 32.768 kHz crystal.
const CRYSTAL_HZ: i128 = 32_768;
/// UIP rises 244 us (8 crystal cycles) before an update (data sheet,
/// "Update Cycle").
const UIP_LEAD_NS: i128 = 244_141;
/// Leaving divider reset, the first update comes half a second later.
const FIRST_UPDATE_NS: i128 = 500_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// What a BIOS and an operating system read from CMOS about the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmosConfig {
    /// Installed RAM in bytes.
    pub ram_bytes: u64,
    /// An x87 is present (equipment byte bit 1).
    pub math_coprocessor: bool,
    /// The first and second hard disk, if present.
    pub hard_disks: [Option<DiskGeometry>; 2],
}

/// A hard disk's CHS geometry, stored as the user-defined drive type 47.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskGeometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

/// The clock's calendar, in binary: what the time registers show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Calendar {
    century: u8,
    year: u8,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday (the PC convention).
    weekday: u8,
}

impl Calendar {
    fn from_unix(secs: i64) -> Calendar {
        let days = secs.div_euclid(SECS_PER_DAY);
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let year = year.rem_euclid(10_000);
        Calendar {
            century: (year / 100) as u8,
            year: (year % 100) as u8,
            month: month as u8,
            day: day as u8,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
            // 1970-01-01 was a Thursday (5 when Sunday is 1).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    fn days(&self) -> i64 {
        let year = self.century as i64 * 100 + self.year as i64;
        days_from_civil(year, self.month as i64, self.day as i64)
    }

    fn time_of_day(&self) -> i64 {
        self.hour as i64 * 3600 + self.minute as i64 * 60 + self.second as i64
    }

    /// `n` update cycles: the date normalises (31 February becomes 3 March)
    /// and the weekday counts on from what the guest last wrote, as the
    /// chip's own counter does.
    fn advance(&mut self, n: i64) {
        let days = self.days();
        let secs = days * SECS_PER_DAY + self.time_of_day() + n;
        let weekday = self.weekday;
        let new_days = secs.div_euclid(SECS_PER_DAY);
        *self = Calendar::from_unix(secs);
        self.weekday = ((weekday as i64 - 1 + new_days - days).rem_euclid(7) + 1) as u8;
    }

    fn is_valid(&self) -> bool {
        self.century < 100
            && self.year < 100
            && (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && (1..=7).contains(&self.weekday)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm). A day past the month's end counts on into the next month.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// A BCD byte with digits above 9 decodes to a large number; the caller
/// clamps it.
fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0F)
}

/// What a saved state holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RtcState {
    index: u8,
    nmi_disabled: bool,
    /// The CMOS bytes; the alarm bytes, registers A and B and the PF/AF/UF
    /// flags of C live here too. The time registers and the century byte
    /// are shown from `clock` instead.
    cmos: Vec<u8>,
    clock: Calendar,
    /// Virtual time up to which updates and flags have been counted.
    synced_ns: u64,
    /// Where the divider chain last left reset: updates come at
    /// `origin_ns + 500 ms + k s`, periodic ticks at multiples of the
    /// period after it.
    origin_ns: i64,
    /// The level IRQ 8 was last driven to.
    irq: bool,
}

pub struct Rtc {
    s: RtcState,
}

impl Rtc {
    /// A clock reading `start_unix_secs` at virtual time 0, with register
    /// A = 0x26 (32.768 kHz, 1024 Hz periodic rate) and B = 0x02 (24-hour,
    /// BCD), as a PC BIOS leaves them. The rest of the CMOS is zero.
    pub fn new(start_unix_secs: u64) -> Rtc {
        let mut cmos = vec![0u8; CMOS_SIZE];
        cmos[REG_A as usize] = A_DV_32K | 0x06;
        cmos[REG_B as usize] = B_24_HOUR;
        Rtc {
            s: RtcState {
                index: 0,
                nmi_disabled: false,
                cmos,
                clock: Calendar::from_unix(i64::try_from(start_unix_secs).unwrap_or(i64::MAX)),
                synced_ns: 0,
                // Updates at whole virtual seconds: the chain left reset
                // half a second before time 0.
                origin_ns: -(FIRST_UPDATE_NS as i64),
                irq: false,
            },
        }
    }

    /// A clock as [`Rtc::new`], with the CMOS bytes the BIOS and operating
    /// systems read about the machine filled in.
    pub fn with_config(start_unix_secs: u64, config: &CmosConfig) -> Rtc {
        let mut rtc = Rtc::new(start_unix_secs);
        rtc.fill_configuration(config);
        rtc
    }

    /// Whether the last index write set bit 7: NMIs are masked.
    pub fn nmi_disabled(&self) -> bool {
        self.s.nmi_disabled
    }

    /// The configuration bytes of the AT CMOS map (Technical Reference,
    /// "CMOS RAM Address Map"), with the extensions Bochs and SeaBIOS use.
    fn fill_configuration(&mut self, config: &CmosConfig) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let cmos = &mut self.s.cmos;
        let base_kib = (config.ram_bytes / KIB).min(640) as u16;
        cmos[0x15..=0x16].copy_from_slice(&base_kib.to_le_bytes());
        let ext_kib = (config.ram_bytes.saturating_sub(MIB) / KIB).min(0xFFFF) as u16;
        cmos[0x17..=0x18].copy_from_slice(&ext_kib.to_le_bytes());
        cmos[0x30..=0x31].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (config.ram_bytes.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF) as u16;
        cmos[0x34..=0x35].copy_from_slice(&above_16m.to_le_bytes());
        // Equipment byte: no floppy (bit 0 clear), the x87 in bit 1, and
        // display type 00 (EGA/VGA, which has its own BIOS) in bits 5-4.
        cmos[0x14] = if config.math_coprocessor { 0x02 } else { 0x00 };
        // Byte 0x12 holds a type per drive (high nibble: drive 0); 0xF
        // means "see bytes 0x19/0x1A", where 47 is the user-defined type
        // whose geometry follows at 0x1B (drive 0) and 0x24 (drive 1).
        let mut types = 0u8;
        for (n, disk) in config.hard_disks.iter().enumerate() {
            let Some(g) = disk else { continue };
            types |= 0xF0 >> (4 * n);
            cmos[0x19 + n] = 47;
            let at = 0x1B + 9 * n;
            let cyl = g.cylinders.to_le_bytes();
            cmos[at..at + 2].copy_from_slice(&cyl);
            cmos[at + 2] = g.heads;
            // No write precompensation.
            cmos[at + 3..at + 5].copy_from_slice(&[0xFF, 0xFF]);
            // Control byte: bit 3 for more than 8 heads; retries enabled.
            cmos[at + 5] = 0xC0 | if g.heads > 8 { 0x08 } else { 0 };
            cmos[at + 6..at + 8].copy_from_slice(&cyl);
            cmos[at + 8] = g.sectors;
        }
        cmos[0x12] = types;
        // The checksum covers 0x10-0x2D, high byte first.
        let sum: u16 = cmos[0x10..=0x2D].iter().map(|&b| b as u16).sum();
        cmos[0x2E..=0x2F].copy_from_slice(&sum.to_be_bytes());
    }

    fn reg(&self, r: u8) -> u8 {
        self.s.cmos[r as usize]
    }

    fn binary(&self) -> bool {
        self.reg(REG_B) & B_DM_BINARY != 0
    }

    /// DV2-0 = 010: the divider chain runs.
    fn divider_running(&self) -> bool {
        self.reg(REG_A) & A_DV_MASK == A_DV_32K
    }

    /// Update cycles happen: the divider runs and SET is clear.
    fn updating(&self) -> bool {
        self.divider_running() && self.reg(REG_B) & B_SET == 0
    }

    /// The periodic interrupt's period in crystal cycles (data sheet table
    /// "Periodic Interrupt Rate"); RS = 0 turns it off.
    fn periodic_cycles(&self) -> Option<i128> {
        match self.reg(REG_A) & A_RS_MASK {
            0 => None,
            // Rates 1 and 2 repeat 8 and 9 with a 32.768 kHz time base.
            rs @ 1..=2 => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    /// IRQF is the OR of each flag with its enable.
    fn irqf(&self) -> bool {
        let flags = self.reg(REG_C);
        let enables = self.reg(REG_B);
        (flags & C_PF != 0 && enables & B_PIE != 0)
            || (flags & C_AF != 0 && enables & B_AIE != 0)
            || (flags & C_UF != 0 && enables & B_UIE != 0)
    }

    fn since_origin(&self, now_ns: u64) -> i128 {
        now_ns as i128 - self.s.origin_ns as i128
    }

    /// The number of update cycles up to `now_ns`, counted from the origin.
    fn update_count(&self, now_ns: u64) -> i128 {
        (self.since_origin(now_ns) - FIRST_UPDATE_NS).div_euclid(NS_PER_SEC)
    }

    fn next_update_ns(&self, now_ns: u64) -> i128 {
        self.s.origin_ns as i128 + FIRST_UPDATE_NS + (self.update_count(now_ns) + 1) * NS_PER_SEC
    }

    fn periodic_count(&self, now_ns: u64, cycles: i128) -> i128 {
        (self.since_origin(now_ns) * CRYSTAL_HZ).div_euclid(cycles * NS_PER_SEC)
    }

    fn next_periodic_ns(&self, now_ns: u64, cycles: i128) -> i128 {
        let n = self.periodic_count(now_ns, cycles) + 1;
        // Round up: at this instant the tick has happened.
        self.s.origin_ns as i128 + (n * cycles * NS_PER_SEC + CRYSTAL_HZ - 1) / CRYSTAL_HZ
    }

    /// Count the update cycles and periodic ticks between the last sync
    /// and `now_ns`: advance the clock and set PF, AF and UF. Virtual time
    /// never runs backwards; an earlier `now_ns` changes nothing.
    fn catch_up(&mut self, now_ns: u64) {
        let then = self.s.synced_ns;
        if now_ns <= then {
            return;
        }
        self.s.synced_ns = now_ns;
        if !self.divider_running() {
            return;
        }
        let mut flags = 0;
        if let Some(cycles) = self.periodic_cycles() {
            if self.periodic_count(now_ns, cycles) > self.periodic_count(then, cycles) {
                flags |= C_PF;
            }
        }
        if self.updating() {
            let n = self.update_count(now_ns) - self.update_count(then);
            if n > 0 {
                let n = i64::try_from(n).unwrap_or(i64::MAX / 2);
                if self
                    .seconds_to_alarm(self.s.clock.time_of_day())
                    .is_some_and(|d| d <= n)
                {
                    flags |= C_AF;
                }
                self.s.clock.advance(n);
                flags |= C_UF;
            }
        }
        self.s.cmos[REG_C as usize] |= flags;
    }

    /// A time field as register B's format shows it.
    fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.reg(REG_B) & B_24_HOUR != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u8 {
        if self.reg(REG_B) & B_24_HOUR != 0 {
            return self.decode(v).min(23);
        }
        let h12 = self.decode(v & !HOUR_PM).clamp(1, 12);
        h12 % 12 + if v & HOUR_PM != 0 { 12 } else { 0 }
    }

    /// Seconds from time of day `tod` until the next update whose new time
    /// matches the alarm (1 = the next update), within a day; None if the
    /// alarm bytes can never match.
    fn seconds_to_alarm(&self, tod: i64) -> Option<i64> {
        let matches = |alarm: u8, value: u8| alarm & 0xC0 == 0xC0 || alarm == value;
        let (sa, ma, ha) = (
            self.reg(REG_SECONDS_ALARM),
            self.reg(REG_MINUTES_ALARM),
            self.reg(REG_HOURS_ALARM),
        );
        let sec_ok: [bool; 60] = std::array::from_fn(|s| matches(sa, self.encode(s as u8)));
        let min_ok: [bool; 60] = std::array::from_fn(|m| matches(ma, self.encode(m as u8)));
        let hour_ok: [bool; 24] = std::array::from_fn(|h| matches(ha, self.encode_hour(h as u8)));
        if !sec_ok.contains(&true) || !min_ok.contains(&true) || !hour_ok.contains(&true) {
            return None;
        }
        // Skip whole hours and minutes that cannot match: a few hundred
        // steps at most.
        let mut d = 1;
        while d <= SECS_PER_DAY {
            let t = (tod + d) % SECS_PER_DAY;
            let (h, m, s) = (
                (t / 3600) as usize,
                (t / 60 % 60) as usize,
                (t % 60) as usize,
            );
            if !hour_ok[h] {
                d += 3600 - (t % 3600);
            } else if !min_ok[m] {
                d += 60 - s as i64;
            } else if !sec_ok[s] {
                d += 1;
            } else {
                return Some(d);
            }
        }
        None
    }

    fn read_register(&mut self, r: u8) -> u8 {
        let c = self.s.clock;
        match r {
            REG_SECONDS => self.encode(c.second),
            REG_MINUTES => self.encode(c.minute),
            REG_HOURS => self.encode_hour(c.hour),
            REG_WEEKDAY => self.encode(c.weekday),
            REG_DAY => self.encode(c.day),
            REG_MONTH => self.encode(c.month),
            REG_YEAR => self.encode(c.year),
            REG_CENTURY => self.encode(c.century),
            REG_A => {
                let uip = self.updating()
                    && self.next_update_ns(self.s.synced_ns) - self.s.synced_ns as i128
                        <= UIP_LEAD_NS;
                self.reg(REG_A) | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                let value = self.reg(REG_C) | if self.irqf() { C_IRQF } else { 0 };
                self.s.cmos[REG_C as usize] = 0;
                value
            }
            REG_D => D_VRT,
            _ => self.reg(r),
        }
    }

    fn write_register(&mut self, r: u8, v: u8) {
        let d = self.decode(v);
        match r {
            REG_SECONDS => self.s.clock.second = d.min(59),
            REG_MINUTES => self.s.clock.minute = d.min(59),
            REG_HOURS => self.s.clock.hour = self.decode_hour(v),
            REG_WEEKDAY => self.s.clock.weekday = d.clamp(1, 7),
            REG_DAY => self.s.clock.day = d.clamp(1, 31),
            REG_MONTH => self.s.clock.month = d.clamp(1, 12),
            REG_YEAR => self.s.clock.year = d.min(99),
            REG_CENTURY => self.s.clock.century = d.min(99),
            REG_A => {
                let was_running = self.divider_running();
                // UIP is read-only.
                self.s.cmos[REG_A as usize] = v & !A_UIP;
                if !was_running && self.divider_running() {
                    self.s.origin_ns = i64::try_from(self.s.synced_ns).unwrap_or(i64::MAX);
                }
            }
            REG_B => {
                let old = self.reg(REG_B);
                let mut v = v;
                if v & B_SET != 0 && old & B_SET == 0 {
                    v &= !B_UIE;
                }
                self.s.cmos[REG_B as usize] = v;
            }
            // C and D are read-only.
            REG_C | REG_D => {}
            _ => self.s.cmos[r as usize] = v,
        }
    }

    /// Drive IRQ 8 from IRQF and ask for a callback at the next event that
    /// could raise it. With IRQF set nothing can change the line until the
    /// guest reads C, so no callback is needed.
    fn update_irq_and_timer(&mut self, ctx: &mut DeviceCtx) {
        let level = self.irqf();
        if level != self.s.irq {
            self.s.irq = level;
            ctx.set_irq(RTC_IRQ, level);
        }
        match self.next_interrupt_ns() {
            Some(t) => ctx.schedule(t.clamp(0, u64::MAX as i128) as u64),
            None => ctx.cancel_timer(),
        }
    }

    fn next_interrupt_ns(&self) -> Option<i128> {
        if self.irqf() || !self.divider_running() {
            return None;
        }
        let now = self.s.synced_ns;
        let b = self.reg(REG_B);
        let mut next: Option<i128> = None;
        let mut consider = |t: i128| next = Some(next.map_or(t, |n: i128| n.min(t)));
        if b & B_PIE != 0 {
            if let Some(cycles) = self.periodic_cycles() {
                consider(self.next_periodic_ns(now, cycles));
            }
        }
        if self.updating() {
            let update = self.next_update_ns(now);
            if b & B_UIE != 0 {
                consider(update);
            }
            if b & B_AIE != 0 {
                if let Some(d) = self.seconds_to_alarm(self.s.clock.time_of_day()) {
                    consider(update + (d as i128 - 1) * NS_PER_SEC);
                }
            }
        }
        next
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        match port {
            // The index register is write-only on the PC.
            INDEX_PORT => 0xFF,
            DATA_PORT => self.read_register(self.s.index),
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, v: u8) {
        match port {
            INDEX_PORT => {
                self.s.nmi_disabled = v & 0x80 != 0;
                self.s.index = v & 0x7F;
            }
            DATA_PORT => self.write_register(self.s.index, v),
            _ => {}
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("rtc", reason)
    }
}

impl Device for Rtc {
    fn name(&self) -> &'static str {
        "rtc"
    }

    /// A wider access covers the next ports, one byte lane each.
    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        self.catch_up(ctx.now_ns);
        let value = (0..size.min(4) as u16).fold(0u32, |acc, i| {
            acc | (self.read_byte(port.wrapping_add(i)) as u32) << (8 * i)
        });
        self.update_irq_and_timer(ctx);
        value
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        self.catch_up(ctx.now_ns);
        for i in 0..size.min(4) as u16 {
            self.write_byte(port.wrapping_add(i), (value >> (8 * i)) as u8);
        }
        self.update_irq_and_timer(ctx);
    }

    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.catch_up(ctx.now_ns);
        self.update_irq_and_timer(ctx);
    }

    /// The RTC and its CMOS RAM run on the battery: a system reset keeps
    /// the time and the RAM. Its RESET pin clears what the data sheet says
    /// it clears (MC146818A, "RESET"): PIE, AIE, UIE and SQWE in register
    /// B and the flags of register C, so IRQ 8 is low after it.
    fn reset(&mut self, _power_on: &Value, ctx: &mut DeviceCtx) -> Result<(), StateError> {
        self.catch_up(ctx.now_ns);
        self.s.cmos[REG_B as usize] &= !(B_PIE | B_AIE | B_UIE | B_SQWE);
        self.s.cmos[REG_C as usize] = 0;
        // The bus lowered IRQ 8 with every other line.
        self.s.irq = false;
        self.update_irq_and_timer(ctx);
        Ok(())
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.s).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let s: RtcState = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if s.cmos.len() != CMOS_SIZE {
            return Err(Self::state_error("CMOS is not 128 bytes"));
        }
        if s.index as usize >= CMOS_SIZE {
            return Err(Self::state_error("index out of range"));
        }
        if !s.clock.is_valid() {
            return Err(Self::state_error("clock fields out of range"));
        }
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
    use proptest::prelude::*;
    use ringside_core::bus::Bus;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_DAY_EVENING: u64 = 1_709_251_198;

    fn bus_with(rtc: Rtc) -> Bus {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(rtc));
        bus.claim_ports(id, INDEX_PORT, DATA_PORT);
        bus
    }

    #[test]
    fn rtc_reset_keeps_time_and_cmos_and_clears_interrupt_enables_and_flags() {
        let mut bus = bus_with(Rtc::new(0));
        write(&mut bus, 0x7D, 0x42, 0);
        write(&mut bus, REG_B, B_24_HOUR | B_PIE | B_UIE | B_SQWE, 0);
        // Past the first update: UF and PF are set, IRQ 8 is high.
        let later = 3 * NS_PER_SEC as u64;
        bus.run_timers(later);
        assert!(bus.irq_level(RTC_IRQ));
        let before = time_bcd(&mut bus, later);
        bus.reset(later).unwrap();
        assert!(!bus.irq_level(RTC_IRQ));
        assert_eq!(read(&mut bus, REG_B, later), B_24_HOUR);
        assert_eq!(read(&mut bus, REG_C, later), 0);
        assert_eq!(read(&mut bus, 0x7D, later), 0x42, "CMOS RAM is kept");
        assert_eq!(time_bcd(&mut bus, later), before, "the time is kept");
        assert_eq!(bus.next_deadline(), u64::MAX, "no interrupt is enabled");
    }

    fn read(bus: &mut Bus, reg: u8, now: u64) -> u8 {
        bus.io_write(INDEX_PORT, 1, reg as u32, now);
        bus.io_read(DATA_PORT, 1, now) as u8
    }

    fn write(bus: &mut Bus, reg: u8, value: u8, now: u64) {
        bus.io_write(INDEX_PORT, 1, reg as u32, now);
        bus.io_write(DATA_PORT, 1, value as u32, now);
    }

    fn time_bcd(bus: &mut Bus, now: u64) -> [u8; 8] {
        [
            REG_CENTURY,
            REG_YEAR,
            REG_MONTH,
            REG_DAY,
            REG_WEEKDAY,
            REG_HOURS,
            REG_MINUTES,
            REG_SECONDS,
        ]
        .map(|r| read(bus, r, now))
    }

    #[test]
    fn rtc_time_advances_with_virtual_time_only() {
        let mut bus = bus_with(Rtc::new(LEAP_DAY_EVENING));
        assert_eq!(
            time_bcd(&mut bus, 0),
            [0x20, 0x24, 0x02, 0x29, 0x05, 0x23, 0x59, 0x58]
        );
        // However long the host takes, the clock reads the same at the
        // same virtual time.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(read(&mut bus, REG_SECONDS, SEC - 1), 0x58);
        assert_eq!(read(&mut bus, REG_SECONDS, SEC), 0x59);
        // Two seconds on: midnight into 1 March, a Friday.
        assert_eq!(
            time_bcd(&mut bus, 2 * SEC),
            [0x20, 0x24, 0x03, 0x01, 0x06, 0x00, 0x00, 0x00]
        );
        assert_eq!(read(&mut bus, REG_HOURS, 2 * SEC + 3600 * SEC), 0x01);
    }

    #[test]
    fn rtc_bcd_and_binary_modes() {
        let mut bus = bus_with(Rtc::new(LEAP_DAY_EVENING));
        assert_eq!(read(&mut bus, REG_MINUTES, 0), 0x59);
        write(&mut bus, REG_B, B_24_HOUR | B_DM_BINARY, 0);
        assert_eq!(read(&mut bus, REG_MINUTES, 0), 59);
        assert_eq!(read(&mut bus, REG_YEAR, 0), 24);
        // Setting the time in binary, then reading it in BCD.
        write(&mut bus, REG_B, B_SET | B_24_HOUR | B_DM_BINARY, 0);
        write(&mut bus, REG_HOURS, 17, 0);
        write(&mut bus, REG_MINUTES, 45, 0);
        write(&mut bus, REG_B, B_24_HOUR, 0);
        assert_eq!(read(&mut bus, REG_HOURS, 0), 0x17);
        assert_eq!(read(&mut bus, REG_MINUTES, 0), 0x45);
    }

    #[test]
    fn rtc_12_hour_mode_sets_pm_bit() {
        let mut bus = bus_with(Rtc::new(LEAP_DAY_EVENING));
        write(&mut bus, REG_B, 0, 0);
        assert_eq!(read(&mut bus, REG_HOURS, 0), HOUR_PM | 0x11);
        // Midnight is 12 AM: no PM flag.
        assert_eq!(read(&mut bus, REG_HOURS, 2 * SEC), 0x12);
        write(&mut bus, REG_HOURS, HOUR_PM | 0x12, 2 * SEC);
        write(&mut bus, REG_B, B_24_HOUR, 2 * SEC);
        assert_eq!(read(&mut bus, REG_HOURS, 2 * SEC), 0x12, "12 PM is noon");
    }

    #[test]
    fn rtc_update_in_progress_precedes_the_second() {
        let mut bus = bus_with(Rtc::new(0));
        let uip = |bus: &mut Bus, t| read(bus, REG_A, t) & A_UIP != 0;
        assert!(!uip(&mut bus, SEC - 245_000));
        assert!(uip(&mut bus, SEC - 244_000));
        assert_eq!(read(&mut bus, REG_SECONDS, SEC - 1), 0x00);
        assert!(uip(&mut bus, SEC - 1));
        assert!(!uip(&mut bus, SEC));
        assert_eq!(read(&mut bus, REG_SECONDS, SEC), 0x01);
        // SET stops updates, so UIP stays low.
        write(&mut bus, REG_B, B_SET | B_24_HOUR, SEC);
        assert!(!uip(&mut bus, 2 * SEC - 1000));
        assert_eq!(read(&mut bus, REG_SECONDS, 5 * SEC), 0x01);
    }

    #[test]
    fn rtc_leaving_divider_reset_delays_the_first_update_half_a_second() {
        let mut bus = bus_with(Rtc::new(0));
        write(&mut bus, REG_A, 0x70, 100 * MS);
        assert_eq!(read(&mut bus, REG_SECONDS, 3 * SEC), 0x00, "held in reset");
        write(&mut bus, REG_A, 0x26, 3 * SEC);
        assert_eq!(read(&mut bus, REG_SECONDS, 3 * SEC + 499 * MS), 0x00);
        assert_eq!(read(&mut bus, REG_SECONDS, 3 * SEC + 500 * MS), 0x01);
    }

    #[test]
    fn rtc_periodic_interrupt_rate_follows_register_a() {
        let mut bus = bus_with(Rtc::new(0));
        // RS = 15: every 500 ms.
        write(&mut bus, REG_A, A_DV_32K | 0x0F, 0);
        write(&mut bus, REG_B, B_PIE | B_24_HOUR, 0);
        assert_eq!(bus.next_deadline(), 500 * MS);
        bus.run_timers(499 * MS);
        assert!(!bus.irq_level(RTC_IRQ));
        bus.run_timers(500 * MS);
        assert!(bus.irq_level(RTC_IRQ));
        assert_eq!(read(&mut bus, REG_C, 500 * MS), C_IRQF | C_PF);
        assert_eq!(bus.next_deadline(), 1000 * MS);
        // RS = 6: 1024 Hz, a tick every 976.5625 us.
        write(&mut bus, REG_A, A_DV_32K | 0x06, 1000 * MS);
        read(&mut bus, REG_C, 1000 * MS);
        let ticks: Vec<u64> = (0..4)
            .map(|_| {
                let t = bus.next_deadline();
                bus.run_timers(t);
                assert!(bus.irq_level(RTC_IRQ));
                read(&mut bus, REG_C, t);
                t
            })
            .collect();
        assert_eq!(
            ticks,
            [1_000_976_563, 1_001_953_125, 1_002_929_688, 1_003_906_250]
        );
    }

    #[test]
    fn rtc_reading_c_lowers_irq8() {
        let mut bus = bus_with(Rtc::new(0));
        // No periodic rate, so only UF can be set.
        write(&mut bus, REG_A, A_DV_32K, 0);
        write(&mut bus, REG_B, B_UIE | B_24_HOUR, 0);
        bus.run_timers(SEC);
        assert!(bus.irq_level(RTC_IRQ));
        assert_eq!(read(&mut bus, REG_C, SEC), C_IRQF | C_UF);
        assert!(!bus.irq_level(RTC_IRQ));
        assert_eq!(read(&mut bus, REG_C, SEC), 0, "reading C cleared it");
        assert_eq!(bus.next_deadline(), 2 * SEC);
    }

    #[test]
    fn rtc_flags_are_set_without_their_enables() {
        let mut bus = bus_with(Rtc::new(0));
        assert_eq!(bus.next_deadline(), u64::MAX, "nothing enabled, no timer");
        assert_eq!(read(&mut bus, REG_C, 3 * SEC), C_PF | C_UF);
        assert!(!bus.irq_level(RTC_IRQ));
        // Enabling an interrupt whose flag is set raises IRQF at once.
        write(&mut bus, REG_B, B_UIE | B_24_HOUR, 4 * SEC);
        assert!(bus.irq_level(RTC_IRQ));
    }

    #[test]
    fn rtc_alarm_fires_at_the_matching_second() {
        let mut bus = bus_with(Rtc::new(0));
        write(&mut bus, REG_SECONDS_ALARM, 0x05, 0);
        write(&mut bus, REG_MINUTES_ALARM, 0x00, 0);
        write(&mut bus, REG_HOURS_ALARM, 0x00, 0);
        write(&mut bus, REG_B, B_AIE | B_24_HOUR, 0);
        assert_eq!(bus.next_deadline(), 5 * SEC);
        bus.run_timers(5 * SEC);
        assert!(bus.irq_level(RTC_IRQ));
        assert_eq!(
            read(&mut bus, REG_C, 5 * SEC) & (C_IRQF | C_AF),
            C_IRQF | C_AF
        );
        // Don't-care minutes and hours: the alarm repeats each minute.
        write(&mut bus, REG_MINUTES_ALARM, 0xC0, 5 * SEC);
        write(&mut bus, REG_HOURS_ALARM, 0xFF, 5 * SEC);
        assert_eq!(bus.next_deadline(), 65 * SEC);
        // All three don't-care: every second.
        write(&mut bus, REG_SECONDS_ALARM, 0xC0, 5 * SEC);
        assert_eq!(bus.next_deadline(), 6 * SEC);
        // An alarm that can never match schedules nothing.
        write(&mut bus, REG_SECONDS_ALARM, 0x61, 5 * SEC);
        assert_eq!(bus.next_deadline(), u64::MAX);
    }

    #[test]
    fn rtc_set_bit_clears_uie() {
        let mut bus = bus_with(Rtc::new(0));
        write(&mut bus, REG_B, B_UIE | B_24_HOUR, 0);
        write(&mut bus, REG_B, B_SET | B_UIE | B_24_HOUR, 0);
        assert_eq!(read(&mut bus, REG_B, 0), B_SET | B_24_HOUR);
    }

    #[test]
    fn rtc_register_d_reports_valid_ram_and_time() {
        let mut bus = bus_with(Rtc::new(0));
        write(&mut bus, REG_D, 0, 0);
        assert_eq!(read(&mut bus, REG_D, 0), D_VRT);
    }

    #[test]
    fn rtc_index_bit_7_is_the_nmi_mask() {
        let mut bus = bus_with(Rtc::new(0));
        bus.io_write(INDEX_PORT, 1, 0x80 | 0x40, 0);
        bus.io_write(DATA_PORT, 1, 0x5A, 0);
        assert!(bus.find_device::<Rtc>().is_some_and(|r| r.nmi_disabled()));
        assert_eq!(read(&mut bus, 0x40, 0), 0x5A, "the index ignores bit 7");
        assert!(!bus.find_device::<Rtc>().is_some_and(|r| r.nmi_disabled()));
    }

    #[test]
    fn cmos_reports_memory_sizes_and_valid_checksum() {
        let config = CmosConfig {
            ram_bytes: 128 << 20,
            math_coprocessor: false,
            hard_disks: [
                Some(DiskGeometry {
                    cylinders: 1024,
                    heads: 16,
                    sectors: 63,
                }),
                None,
            ],
        };
        let mut bus = bus_with(Rtc::with_config(0, &config));
        let word =
            |bus: &mut Bus, lo: u8| read(bus, lo, 0) as u32 | (read(bus, lo + 1, 0) as u32) << 8;
        assert_eq!(word(&mut bus, 0x15), 640);
        assert_eq!(word(&mut bus, 0x17), 65535, "127 MiB is capped");
        assert_eq!(word(&mut bus, 0x30), 65535);
        assert_eq!(word(&mut bus, 0x34), (112 << 20) / 65536);
        assert_eq!(read(&mut bus, 0x12, 0), 0xF0);
        assert_eq!(read(&mut bus, 0x19, 0), 47);
        assert_eq!(word(&mut bus, 0x1B), 1024);
        assert_eq!(read(&mut bus, 0x1D, 0), 16);
        assert_eq!(read(&mut bus, 0x23, 0), 63);
        let sum: u32 = (0x10..=0x2D).map(|r| read(&mut bus, r, 0) as u32).sum();
        let stored = (read(&mut bus, 0x2E, 0) as u32) << 8 | read(&mut bus, 0x2F, 0) as u32;
        assert_eq!(stored, sum);

        let small = Rtc::with_config(
            0,
            &CmosConfig {
                ram_bytes: 4 << 20,
                ..CmosConfig::default()
            },
        );
        let mut bus = bus_with(small);
        assert_eq!(word(&mut bus, 0x17), 3072);
        assert_eq!(word(&mut bus, 0x34), 0);
        assert_eq!(read(&mut bus, 0x12, 0), 0, "no disks");
    }

    #[test]
    fn state_round_trips() {
        let mut bus = bus_with(Rtc::new(LEAP_DAY_EVENING));
        write(&mut bus, 0x40, 0x99, 0);
        write(&mut bus, REG_B, B_PIE | B_24_HOUR, 0);
        read(&mut bus, REG_SECONDS, 2 * SEC);
        let saved = bus.find_device::<Rtc>().map(|r| r.save_state()).unwrap();

        let mut other = Rtc::new(0);
        other.restore_state(&saved).unwrap();
        assert_eq!(other.save_state(), saved);
        let mut bus = bus_with(other);
        assert_eq!(read(&mut bus, 0x40, 2 * SEC), 0x99);
        assert_eq!(read(&mut bus, REG_DAY, 2 * SEC), 0x01);

        let mut rtc = Rtc::new(0);
        let before = rtc.save_state();
        let mut short = saved.clone();
        short["cmos"] = serde_json::json!([1, 2, 3]);
        let mut bad_month = saved.clone();
        bad_month["clock"]["month"] = serde_json::json!(13);
        for garbage in [serde_json::json!({"index": "x"}), short, bad_month] {
            assert!(rtc.restore_state(&garbage).is_err());
            assert_eq!(rtc.save_state(), before, "a failed restore changes nothing");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read(u16, u8),
        Write(u16, u8, u8),
        Timers,
    }

    fn op() -> impl Strategy<Value = Op> {
        let port = prop_oneof![Just(INDEX_PORT), Just(DATA_PORT), 0x6Fu16..=0x72];
        let size = prop_oneof![Just(1u8), Just(2), Just(4)];
        prop_oneof![
            (port.clone(), size.clone()).prop_map(|(p, s)| Op::Read(p, s)),
            (port, size, any::<u8>()).prop_map(|(p, s, v)| Op::Write(p, s, v)),
            Just(Op::Timers),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn rtc_survives_any_port_sequence(
            start in any::<u64>(),
            ops in proptest::collection::vec((op(), 0u64..3 * SEC, any::<bool>()), 1..64),
        ) {
            let mut bus = Bus::new();
            let id = bus.add(Box::new(Rtc::with_config(start, &CmosConfig {
                ram_bytes: start,
                math_coprocessor: true,
                hard_disks: [None, Some(DiskGeometry { cylinders: 2, heads: 255, sectors: 1 })],
            })));
            bus.claim_ports(id, INDEX_PORT, DATA_PORT);
            let mut now = 0u64;
            for (op, dt, backwards) in ops {
                // Mostly forward; sometimes an earlier time, which must not
                // upset the device either.
                now = if backwards { now.saturating_sub(dt) } else { now + dt };
                match op {
                    Op::Read(p, s) => { bus.io_read(p, s, now); }
                    Op::Write(p, s, v) => bus.io_write(p, s, v as u32 * 0x0101_0101, now),
                    Op::Timers => bus.run_timers(now.max(bus.next_deadline().min(now + 10 * SEC))),
                }
            }
            let state = bus.find_device::<Rtc>().map(|r| r.save_state()).unwrap();
            let mut fresh = Rtc::new(0);
            prop_assert!(fresh.restore_state(&state).is_ok());
        }
    }
}
