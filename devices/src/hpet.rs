//! The High Precision Event Timer (Intel, "IA-PC HPET Specification" 1.0a):
//! a 64-bit main counter running at 100 MHz and three timers that compare
//! it with their comparators, behind 1 KiB of MMIO at 0xFED00000.
//!
//! Registers (spec section 2.3, all 64 bits wide; a 32-bit guest reaches
//! them as two 32-bit halves, and 1- or 2-byte accesses act on the bytes
//! they cover): General Capabilities and ID (0x000), General Configuration
//! (0x010: ENABLE_CNF, LEG_RT_CNF), General Interrupt Status (0x020, write
//! 1 to clear), the Main Counter (0x0F0), and per timer N at 0x100 + 0x20*N
//! its Configuration and Capability, Comparator (+0x08) and FSB Interrupt
//! Route (+0x10) registers. Undefined offsets read 0; writes to read-only
//! bits are ignored.
//!
//! The counter never ticks. While ENABLE_CNF is set it is the value it had
//! when the guest set the bit plus one count per 10 ns of virtual time
//! since; while it is clear the counter holds its value and the guest may
//! write it. Each armed timer remembers the virtual time its comparator
//! next matches, and the device asks the bus for a callback at the
//! earliest of them.
//!
//! Behaviour follows QEMU's HPET (hw/timer/hpet.c, QEMU 7.2), which guests
//! written for QEMU rely on:
//!
//! - every timer can be periodic and 64 bits wide (Tn_PER_INT_CAP and
//!   Tn_SIZE_CAP set on all three);
//! - the route capability is IOAPIC input 2 only (0x00000004), what
//!   QEMU's default `pc` machine gives its HPET (its `q35` machine offers
//!   inputs 2, 8 and 16-23 instead);
//! - a timer is armed when the counter is enabled (if its comparator is
//!   not all ones), when its comparator is written, or when Tn_INT_ENB_CNF
//!   is set, all while ENABLE_CNF is set; clearing Tn_INT_ENB_CNF or
//!   ENABLE_CNF disarms it. A comparator already passed fires one count
//!   later;
//! - a one-shot timer fires once per arming; in 32-bit mode it also fires
//!   when the counter's low 32 bits wrap before the match (spec 2.3.9.2.1);
//! - in periodic mode a comparator write without Tn_VAL_SET_CNF sets only
//!   the period, one with it sets the comparator and the period (spec
//!   2.3.9.2.2), and Tn_VAL_SET_CNF clears itself after the write;
//! - writes to the main counter while ENABLE_CNF is set have no effect.
//!
//! Where ringside differs from QEMU: a periodic timer's comparator moves
//! past the counter when it fires, so it fires once per period (QEMU 7.2
//! fires a second time one count after an exact match); timers fire at the
//! exact virtual time the counter reaches the comparator, not up to one
//! count later.
//!
//! Interrupt routing. Tn_INT_ROUTE_CNF names an IOAPIC input; the device
//! drives the bus line `build_pc` wires to that pin (`ioapic_pin_map`: pin
//! 2 is bus line 0, which the 8259A also sees as IRQ 0). The field is
//! writable whatever the capability says, as in QEMU; routes 24-31 reach
//! nothing. With LEG_RT_CNF
//! set, timer 0 drives ISA IRQ 0 and timer 1 ISA IRQ 8 whatever their
//! route, and, as on a real chipset and in QEMU, the PIT and the RTC are
//! cut off those lines: the HPET claims them on the bus
//! (`DeviceCtx::claim_irq_line`), which lowers them, and when LEG_RT_CNF
//! is cleared gives them back at the level the PIT and the RTC drive
//! meanwhile. An edge-triggered timer pulses its line once per
//! firing; a level-triggered one holds it high and sets its status bit
//! until the guest writes 1 to that bit.
//!
//! Not modelled: FSB (MSI) delivery (Tn_FSB_INT_DEL_CAP is 0, so
//! Tn_FSB_EN_CNF reads 0 and the FSB route register is storage only).

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError, IRQ_LINES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pc::ioapic_pin_map;

/// Where PCs put the (first) HPET.
pub const HPET_BASE: u32 = 0xFED0_0000;
/// The register block: the general registers and 32 timers' worth of room.
pub const HPET_SIZE: u32 = 0x400;

const TIMERS: usize = 3;
/// COUNTER_CLK_PERIOD in femtoseconds: 10 ns, a 100 MHz counter.
const COUNTER_CLK_PERIOD_FS: u64 = 10_000_000;
const NS_PER_COUNT: u64 = 10;

const REG_CAPABILITIES: u32 = 0x000;
const REG_CONFIG: u32 = 0x010;
const REG_STATUS: u32 = 0x020;
const REG_COUNTER: u32 = 0x0F0;
const REG_TIMER0: u32 = 0x100;
const TIMER_STRIDE: u32 = 0x20;
/// Offsets inside a timer's block.
const TN_CONFIG: u32 = 0x00;
const TN_COMPARATOR: u32 = 0x08;
const TN_FSB_ROUTE: u32 = 0x10;

const REV_ID: u64 = 1;
const NUM_TIM_CAP_SHIFT: u32 = 8;
const COUNT_SIZE_CAP: u64 = 1 << 13;
const LEG_RT_CAP: u64 = 1 << 15;
const VENDOR_ID: u64 = 0x8086;
/// General Capabilities and ID: 0x00989680_8086A201.
pub const CAPABILITIES: u64 = (COUNTER_CLK_PERIOD_FS << 32)
    | (VENDOR_ID << 16)
    | LEG_RT_CAP
    | COUNT_SIZE_CAP
    | ((TIMERS as u64 - 1) << NUM_TIM_CAP_SHIFT)
    | REV_ID;

const ENABLE_CNF: u64 = 1 << 0;
const LEG_RT_CNF: u64 = 1 << 1;
const CONFIG_WRITABLE: u64 = ENABLE_CNF | LEG_RT_CNF;

const TN_INT_TYPE_CNF: u64 = 1 << 1;
const TN_INT_ENB_CNF: u64 = 1 << 2;
const TN_TYPE_CNF: u64 = 1 << 3;
const TN_PER_INT_CAP: u64 = 1 << 4;
const TN_SIZE_CAP: u64 = 1 << 5;
const TN_VAL_SET_CNF: u64 = 1 << 6;
const TN_32MODE_CNF: u64 = 1 << 8;
const TN_INT_ROUTE_SHIFT: u32 = 9;
const TN_INT_ROUTE_CNF: u64 = 0x1F << TN_INT_ROUTE_SHIFT;
/// IOAPIC inputs a timer may be routed to: input 2, as QEMU's `pc`.
const TN_INT_ROUTE_CAP: u64 = 1 << 2;
/// The bits a guest can change (no Tn_FSB_EN_CNF: no FSB delivery).
const TN_CONFIG_WRITABLE: u64 = TN_INT_TYPE_CNF
    | TN_INT_ENB_CNF
    | TN_TYPE_CNF
    | TN_VAL_SET_CNF
    | TN_32MODE_CNF
    | TN_INT_ROUTE_CNF;
const TN_CAPABILITIES: u64 = (TN_INT_ROUTE_CAP << 32) | TN_SIZE_CAP | TN_PER_INT_CAP;

/// Legacy replacement routes (spec 2.3.7): timer 0 to ISA IRQ 0, timer 1
/// to ISA IRQ 8.
const LEGACY_IRQ: [u8; 2] = [0, 8];

/// A comparator no guest wrote: enabling the counter does not arm it.
const COMPARATOR_RESET: u64 = u64::MAX;

const STATE_VERSION: u32 = 1;

/// One timer's registers and the bookkeeping of its next firing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timer {
    /// The guest-writable bits of Tn_CONF_CAP (the capabilities are
    /// constants added on read).
    config: u64,
    comparator: u64,
    /// What a periodic timer adds to its comparator each time it fires.
    period: u64,
    /// Tn_FSB_INT_ROUTE, kept for reading back only.
    fsb_route: u64,
    /// A 32-bit one-shot timer's next firing is the counter's wrap, and
    /// the comparator match comes after it.
    wrap_pending: bool,
    /// When an armed timer fires next, in virtual ns.
    deadline_ns: Option<u64>,
    /// The bus line this timer holds high (level-triggered, not yet
    /// cleared): its bit in the General Interrupt Status register.
    asserted_line: Option<u8>,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            config: 0,
            comparator: COMPARATOR_RESET,
            period: 0,
            fsb_route: 0,
            wrap_pending: false,
            deadline_ns: None,
            asserted_line: None,
        }
    }

    fn periodic(&self) -> bool {
        self.config & TN_TYPE_CNF != 0
    }

    fn mode_32bit(&self) -> bool {
        self.config & TN_32MODE_CNF != 0
    }

    fn interrupts_enabled(&self) -> bool {
        self.config & TN_INT_ENB_CNF != 0
    }

    fn level_triggered(&self) -> bool {
        self.config & TN_INT_TYPE_CNF != 0
    }

    /// Counts from `count` until the comparator matches; a comparator the
    /// counter has passed (by up to half the counter's range) matches one
    /// count from now, as in QEMU.
    fn counts_to_match(&self, count: u64) -> u64 {
        if self.mode_32bit() {
            let d = (self.comparator as u32).wrapping_sub(count as u32);
            if (d as i32) > 0 {
                d as u64
            } else {
                1
            }
        } else {
            let d = self.comparator.wrapping_sub(count);
            if (d as i64) > 0 {
                d
            } else {
                1
            }
        }
    }

    /// A periodic timer fired at `count`: move the comparator to the first
    /// period boundary after it.
    fn advance_comparator(&mut self, count: u64) {
        if self.mode_32bit() {
            let (comparator, period) = (self.comparator as u32, self.period as u32);
            let behind = (count as u32).wrapping_sub(comparator);
            if period != 0 && (behind as i32) >= 0 {
                let periods = behind / period + 1;
                self.comparator = comparator.wrapping_add(periods.wrapping_mul(period)) as u64;
            }
        } else {
            let behind = count.wrapping_sub(self.comparator);
            if self.period != 0 && (behind as i64) >= 0 {
                let periods = behind / self.period + 1;
                self.comparator = self
                    .comparator
                    .wrapping_add(periods.wrapping_mul(self.period));
            }
        }
    }
}

/// Everything the device holds: the saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registers {
    /// General Configuration.
    config: u64,
    /// The main counter: its value at `counter_since_ns` while enabled,
    /// the value it holds while halted.
    counter: u64,
    counter_since_ns: u64,
    timers: [Timer; TIMERS],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HpetState {
    version: u32,
    registers: Registers,
}

/// The HPET with three timers.
pub struct Hpet {
    regs: Registers,
    /// The bus line that reaches each IOAPIC input (the inverse of
    /// `ioapic_pin_map`).
    line_of_pin: [u8; IRQ_LINES as usize],
}

impl Default for Hpet {
    fn default() -> Self {
        Self::new()
    }
}

impl Hpet {
    pub fn new() -> Hpet {
        let mut line_of_pin = [0u8; IRQ_LINES as usize];
        for (line, pin) in ioapic_pin_map().into_iter().enumerate() {
            line_of_pin[pin as usize] = line as u8;
        }
        Hpet {
            regs: Registers {
                config: 0,
                counter: 0,
                counter_since_ns: 0,
                timers: std::array::from_fn(|_| Timer::new()),
            },
            line_of_pin,
        }
    }

    fn enabled(&self) -> bool {
        self.regs.config & ENABLE_CNF != 0
    }

    fn legacy_replacement(&self) -> bool {
        self.regs.config & LEG_RT_CNF != 0
    }

    /// The main counter at virtual time `now_ns`.
    fn counter_at(&self, now_ns: u64) -> u64 {
        if self.enabled() {
            let elapsed = now_ns.saturating_sub(self.regs.counter_since_ns) / NS_PER_COUNT;
            self.regs.counter.wrapping_add(elapsed)
        } else {
            self.regs.counter
        }
    }

    /// The virtual time the running counter reaches `count` (at or after
    /// its value at `counter_since_ns`, modulo 2^64).
    fn time_of_count(&self, count: u64) -> u64 {
        let counts = count.wrapping_sub(self.regs.counter) as u128;
        let ns = self.regs.counter_since_ns as u128 + counts * NS_PER_COUNT as u128;
        ns.min(u64::MAX as u128) as u64
    }

    /// General Interrupt Status: one bit per timer holding its line.
    fn status(&self) -> u64 {
        self.regs
            .timers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.asserted_line.is_some())
            .fold(0, |acc, (n, _)| acc | 1 << n)
    }

    /// The bus line timer `n` drives now.
    fn line_of(&self, n: usize) -> Option<u8> {
        if self.legacy_replacement() && n < LEGACY_IRQ.len() {
            return Some(LEGACY_IRQ[n]);
        }
        let route = (self.regs.timers[n].config & TN_INT_ROUTE_CNF) >> TN_INT_ROUTE_SHIFT;
        self.line_of_pin.get(route as usize).copied()
    }

    /// Arm timer `n` for its next comparator match (or, for a 32-bit
    /// one-shot timer, the counter's wrap if that comes first).
    fn arm(&mut self, n: usize, now_ns: u64) {
        let count = self.counter_at(now_ns);
        let t = &self.regs.timers[n];
        let mut counts = t.counts_to_match(count);
        let mut wrap_pending = false;
        if t.mode_32bit() && !t.periodic() {
            let to_wrap = (1u64 << 32) - (count as u32) as u64;
            if to_wrap < counts {
                counts = to_wrap;
                wrap_pending = true;
            }
        }
        let deadline = self.time_of_count(count.wrapping_add(counts));
        let t = &mut self.regs.timers[n];
        t.wrap_pending = wrap_pending;
        t.deadline_ns = Some(deadline);
    }

    fn disarm(&mut self, n: usize, ctx: &mut DeviceCtx) {
        let t = &mut self.regs.timers[n];
        t.deadline_ns = None;
        t.wrap_pending = false;
        self.deassert(n, ctx);
    }

    /// Drop timer `n`'s level interrupt: its status bit and its line.
    fn deassert(&mut self, n: usize, ctx: &mut DeviceCtx) {
        if let Some(line) = self.regs.timers[n].asserted_line.take() {
            ctx.set_irq(line, false);
        }
    }

    /// Timer `n` fired: interrupt, if it may.
    fn signal(&mut self, n: usize, ctx: &mut DeviceCtx) {
        if !self.regs.timers[n].interrupts_enabled() {
            self.deassert(n, ctx);
            return;
        }
        let Some(line) = self.line_of(n) else {
            return;
        };
        if self.regs.timers[n].level_triggered() {
            if self.regs.timers[n].asserted_line != Some(line) {
                self.deassert(n, ctx);
                ctx.set_irq(line, true);
                self.regs.timers[n].asserted_line = Some(line);
            }
        } else {
            self.deassert(n, ctx);
            ctx.pulse_irq(line);
        }
    }

    /// Timer `n`'s deadline came: fire it and re-arm it if it repeats.
    fn fire(&mut self, n: usize, now_ns: u64, ctx: &mut DeviceCtx) {
        let count = self.counter_at(now_ns);
        let t = &mut self.regs.timers[n];
        t.deadline_ns = None;
        if t.periodic() && t.period != 0 {
            t.advance_comparator(count);
            self.arm(n, now_ns);
        } else if t.wrap_pending {
            // The wrap came first; now the match (arming from just after
            // the wrap never finds another wrap before it).
            self.arm(n, now_ns);
        }
        self.signal(n, ctx);
    }

    /// Ask the bus for a callback at the earliest armed timer's deadline.
    fn schedule(&self, ctx: &mut DeviceCtx) {
        match self.regs.timers.iter().filter_map(|t| t.deadline_ns).min() {
            Some(deadline) => ctx.schedule(deadline),
            None => ctx.cancel_timer(),
        }
    }

    /// The 32-bit register at dword-aligned `offset`.
    fn read_dword(&self, offset: u32, now_ns: u64) -> u32 {
        let (reg, half) = (offset & !7, offset & 4 != 0);
        let value = match reg {
            REG_CAPABILITIES => CAPABILITIES,
            REG_CONFIG => self.regs.config,
            REG_STATUS => self.status(),
            REG_COUNTER => self.counter_at(now_ns),
            _ => match self.timer_register(offset) {
                Some((n, TN_CONFIG)) => self.regs.timers[n].config | TN_CAPABILITIES,
                Some((n, TN_COMPARATOR)) => self.regs.timers[n].comparator,
                Some((n, TN_FSB_ROUTE)) => self.regs.timers[n].fsb_route,
                _ => 0,
            },
        };
        if half {
            (value >> 32) as u32
        } else {
            value as u32
        }
    }

    /// The timer and the register inside its block at `offset`, if a
    /// timer's register is there.
    fn timer_register(&self, offset: u32) -> Option<(usize, u32)> {
        let n = (offset.checked_sub(REG_TIMER0)? / TIMER_STRIDE) as usize;
        (n < TIMERS).then_some((n, ((offset - REG_TIMER0) % TIMER_STRIDE) & !7))
    }

    /// A 32-bit write to the register at dword-aligned `offset`.
    fn write_dword(&mut self, offset: u32, value: u32, ctx: &mut DeviceCtx) {
        let high = offset & 4 != 0;
        let now = ctx.now_ns;
        match offset & !7 {
            REG_CONFIG if !high => self.write_config(value as u64, now, ctx),
            REG_STATUS if !high => {
                for n in 0..TIMERS {
                    if value & (1 << n) != 0 {
                        self.deassert(n, ctx);
                    }
                }
            }
            // The spec asks software to halt the counter before writing it;
            // as in QEMU, a write to a running counter has no effect.
            REG_COUNTER if !self.enabled() => {
                self.regs.counter = merge_half(self.regs.counter, value, high);
            }
            _ => match self.timer_register(offset) {
                Some((n, TN_CONFIG)) if !high => self.write_timer_config(n, value as u64, now, ctx),
                Some((n, TN_COMPARATOR)) => self.write_comparator(n, value, high, now),
                Some((n, TN_FSB_ROUTE)) => {
                    let t = &mut self.regs.timers[n];
                    t.fsb_route = merge_half(t.fsb_route, value, high);
                }
                _ => {}
            },
        }
    }

    fn write_config(&mut self, value: u64, now_ns: u64, ctx: &mut DeviceCtx) {
        let was_enabled = self.enabled();
        let was_legacy = self.legacy_replacement();
        if was_enabled && value & ENABLE_CNF == 0 {
            // Halting: the counter holds the value it has reached.
            self.regs.counter = self.counter_at(now_ns);
        }
        self.regs.config = value & CONFIG_WRITABLE;
        let legacy = self.legacy_replacement();
        if was_legacy != legacy {
            // Timers 0 and 1 change lines: a level they hold is dropped on
            // the old line, ISA IRQ 0 and 8 are taken from the PIT and the
            // RTC (or given back), and the level is raised on the new line.
            let held: Vec<usize> = (0..LEGACY_IRQ.len())
                .filter(|&n| self.regs.timers[n].asserted_line.is_some())
                .collect();
            for &n in &held {
                self.deassert(n, ctx);
            }
            for line in LEGACY_IRQ {
                ctx.claim_irq_line(line, legacy);
            }
            for n in held {
                self.signal(n, ctx);
            }
        }
        match (was_enabled, self.enabled()) {
            (false, true) => {
                self.regs.counter_since_ns = now_ns;
                for n in 0..TIMERS {
                    if self.regs.timers[n].comparator != COMPARATOR_RESET {
                        self.arm(n, now_ns);
                    }
                }
            }
            (true, false) => {
                for n in 0..TIMERS {
                    self.disarm(n, ctx);
                }
            }
            _ => {}
        }
    }

    fn write_timer_config(&mut self, n: usize, value: u64, now_ns: u64, ctx: &mut DeviceCtx) {
        let enabled = self.enabled();
        let t = &mut self.regs.timers[n];
        let old = t.config;
        t.config = value & TN_CONFIG_WRITABLE;
        if t.mode_32bit() {
            t.comparator &= u32::MAX as u64;
            t.period &= u32::MAX as u64;
        }
        let changed = old ^ t.config;
        let armed = t.deadline_ns.is_some();
        if changed & TN_INT_ENB_CNF != 0 {
            if t.interrupts_enabled() {
                if enabled {
                    self.arm(n, now_ns);
                }
            } else {
                self.disarm(n, ctx);
            }
        } else if armed && changed & (TN_TYPE_CNF | TN_32MODE_CNF) != 0 {
            // The next match depends on the mode.
            self.arm(n, now_ns);
        }
        let t = &self.regs.timers[n];
        if t.asserted_line.is_some() && (!t.level_triggered() || changed & TN_INT_ROUTE_CNF != 0) {
            // A level interrupt the timer no longer holds, or holds on
            // another line: the next firing raises it again.
            self.deassert(n, ctx);
        }
    }

    /// Spec 2.3.9.2.2: in periodic mode the comparator register sets the
    /// period, and with Tn_VAL_SET_CNF the comparator too.
    fn write_comparator(&mut self, n: usize, value: u32, high: bool, now_ns: u64) {
        let t = &mut self.regs.timers[n];
        if !t.periodic() || t.config & TN_VAL_SET_CNF != 0 {
            t.comparator = merge_half(t.comparator, value, high);
        }
        if t.periodic() {
            // QEMU clamps the period to half the counter's range.
            let value = if t.mode_32bit() {
                value & i32::MAX as u32
            } else {
                value
            };
            t.period = merge_half(t.period, value, high);
        }
        if t.mode_32bit() {
            t.comparator &= u32::MAX as u64;
        }
        t.config &= !TN_VAL_SET_CNF;
        if self.enabled() {
            self.arm(n, now_ns);
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("hpet", reason)
    }
}

/// `old` with its low or high 32 bits replaced by `value`.
fn merge_half(old: u64, value: u32, high: bool) -> u64 {
    if high {
        (old & u32::MAX as u64) | ((value as u64) << 32)
    } else {
        (old & !(u32::MAX as u64)) | value as u64
    }
}

impl Registers {
    /// What a saved state must satisfy.
    fn check(&self) -> Result<(), String> {
        if self.config & !CONFIG_WRITABLE != 0 {
            return Err(format!("reserved configuration bits {:#x}", self.config));
        }
        for (n, t) in self.timers.iter().enumerate() {
            if t.config & !TN_CONFIG_WRITABLE != 0 {
                return Err(format!(
                    "timer {n}: read-only configuration bits {:#x}",
                    t.config
                ));
            }
            if t.deadline_ns.is_some() && self.config & ENABLE_CNF == 0 {
                return Err(format!("timer {n} armed while the counter is halted"));
            }
            if t.wrap_pending && t.deadline_ns.is_none() {
                return Err(format!("timer {n} waits for a wrap but is not armed"));
            }
            if t.asserted_line.is_some_and(|l| l >= IRQ_LINES) {
                return Err(format!("timer {n} holds a line beyond {}", IRQ_LINES - 1));
            }
        }
        Ok(())
    }
}

impl Device for Hpet {
    fn name(&self) -> &'static str {
        "hpet"
    }

    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }

    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}

    fn mmio_read(&mut self, offset: u32, size: u8, ctx: &mut DeviceCtx) -> u32 {
        let size = size.clamp(1, 4) as u32;
        (0..size).fold(0, |acc, i| {
            let byte_offset = offset + i;
            let dword = self.read_dword(byte_offset & !3, ctx.now_ns);
            let byte = (dword >> (8 * (byte_offset & 3))) & 0xFF;
            acc | (byte << (8 * i))
        })
    }

    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, ctx: &mut DeviceCtx) {
        let size = size.clamp(1, 4) as u32;
        if size == 4 && offset & 3 == 0 {
            self.write_dword(offset, value, ctx);
            self.schedule(ctx);
            return;
        }
        // A narrow or unaligned write changes only the bytes it covers of
        // each register it touches; in the write-1-to-clear status
        // register the other bytes write 0.
        let mut i = 0;
        while i < size {
            let dword_offset = (offset + i) & !3;
            let mut merged = if dword_offset == REG_STATUS {
                0
            } else {
                self.read_dword(dword_offset, ctx.now_ns)
            };
            while i < size && (offset + i) & !3 == dword_offset {
                let shift = 8 * ((offset + i) & 3);
                let byte = (value >> (8 * i)) & 0xFF;
                merged = (merged & !(0xFF << shift)) | (byte << shift);
                i += 1;
            }
            self.write_dword(dword_offset, merged, ctx);
        }
        self.schedule(ctx);
    }

    fn timer(&mut self, ctx: &mut DeviceCtx) {
        let now = ctx.now_ns;
        let mut due: Vec<(u64, usize)> = (0..TIMERS)
            .filter_map(|n| self.regs.timers[n].deadline_ns.map(|d| (d, n)))
            .filter(|&(d, _)| d <= now)
            .collect();
        due.sort_unstable();
        for (_, n) in due {
            self.fire(n, now, ctx);
        }
        self.schedule(ctx);
    }

    fn save_state(&self) -> Value {
        let state = HpetState {
            version: STATE_VERSION,
            registers: self.regs.clone(),
        };
        serde_json::to_value(&state).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let state: HpetState = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if state.version != STATE_VERSION {
            return Err(Self::state_error(format!(
                "version {} (expected {STATE_VERSION})",
                state.version
            )));
        }
        state.registers.check().map_err(Self::state_error)?;
        self.regs = state.registers;
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
    use ringside_core::config::MachineConfig;
    use ringside_core::memory::DeviceId;

    use crate::pc::{build_pc, HostIo};

    /// Records every level change it sees, by input, with the time.
    #[derive(Default)]
    struct LineRecorder {
        changes: Vec<(u8, bool, u64)>,
    }

    impl Device for LineRecorder {
        fn name(&self) -> &'static str {
            "line-recorder"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}
        fn irq_line(&mut self, line: u8, level: bool, ctx: &mut DeviceCtx) {
            self.changes.push((line, level, ctx.now_ns));
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

    const T0_CONFIG: u32 = REG_TIMER0 + TN_CONFIG;
    const T0_COMPARATOR: u32 = REG_TIMER0 + TN_COMPARATOR;
    const T1_CONFIG: u32 = REG_TIMER0 + TIMER_STRIDE + TN_CONFIG;
    const T1_COMPARATOR: u32 = REG_TIMER0 + TIMER_STRIDE + TN_COMPARATOR;

    /// The HPET on a bus, with one recorder listening as the 8259A does
    /// (ISA IRQ n is input n) and one as the PC's IOAPIC does (through
    /// `ioapic_pin_map`).
    struct Rig {
        bus: Bus,
        hpet: DeviceId,
        isa: DeviceId,
        ioapic: DeviceId,
        now: u64,
    }

    impl Rig {
        fn new() -> Rig {
            let mut bus = Bus::new();
            let hpet = bus.add(Box::new(Hpet::new()));
            let isa = bus.add(Box::new(LineRecorder::default()));
            bus.add_irq_listener(isa);
            let ioapic = bus.add(Box::new(LineRecorder::default()));
            bus.add_irq_listener_mapped(ioapic, ioapic_pin_map());
            Rig {
                bus,
                hpet,
                isa,
                ioapic,
                now: 0,
            }
        }

        fn read(&mut self, offset: u32) -> u32 {
            self.bus.mmio_read(self.hpet, offset, 4, self.now)
        }

        fn write(&mut self, offset: u32, value: u32) {
            self.bus.mmio_write(self.hpet, offset, 4, value, self.now);
        }

        /// A 64-bit register, low half first, as a 32-bit guest reads it.
        fn read64(&mut self, offset: u32) -> u64 {
            let low = self.read(offset) as u64;
            low | (self.read(offset + 4) as u64) << 32
        }

        fn write64(&mut self, offset: u32, value: u64) {
            self.write(offset, value as u32);
            self.write(offset + 4, (value >> 32) as u32);
        }

        /// Let virtual time run to `ns`, serving every timer callback at
        /// its deadline, as an engine does.
        fn run_until(&mut self, ns: u64) {
            while self.bus.next_deadline() <= ns {
                self.now = self.bus.next_deadline();
                self.bus.run_timers(self.now);
            }
            self.now = ns;
        }

        fn recorder(&mut self, id: DeviceId) -> &mut LineRecorder {
            let dev = self.bus.device_mut(id).expect("plugged in");
            dev.as_any_mut()
                .downcast_mut::<LineRecorder>()
                .expect("a recorder")
        }

        /// When `input` of the listener `id` went high.
        fn rises(&mut self, id: DeviceId, input: u8) -> Vec<u64> {
            self.recorder(id)
                .changes
                .iter()
                .filter(|&&(i, level, _)| i == input && level)
                .map(|&(_, _, t)| t)
                .collect()
        }

        /// Timer 0 periodic on IOAPIC input 2, first firing at count
        /// `first`, then every `period` counts. Tn_VAL_SET_CNF clears
        /// itself after each comparator write, so it is set again for the
        /// second half.
        fn program_periodic_timer0(&mut self, first: u64, period: u32) {
            self.route_timer0_to_pin2(TN_TYPE_CNF | TN_VAL_SET_CNF);
            self.write(T0_COMPARATOR + 4, (first >> 32) as u32);
            self.route_timer0_to_pin2(TN_TYPE_CNF | TN_VAL_SET_CNF);
            self.write(T0_COMPARATOR, first as u32);
            self.write(T0_COMPARATOR, period);
        }

        /// Timer 0 on IOAPIC input 2 with interrupts on, plus `extra`.
        fn route_timer0_to_pin2(&mut self, extra: u64) {
            let config = TN_INT_ENB_CNF | (2 << TN_INT_ROUTE_SHIFT) | extra;
            self.write(T0_CONFIG, config as u32);
        }
    }

    #[test]
    fn capabilities_announce_three_64bit_timers_at_100_mhz() {
        let mut rig = Rig::new();
        assert_eq!(rig.read(REG_CAPABILITIES), 0x8086_A201);
        assert_eq!(rig.read(REG_CAPABILITIES + 4), 10_000_000);
        rig.write64(REG_CAPABILITIES, 0);
        assert_eq!(rig.read64(REG_CAPABILITIES), 0x0098_9680_8086_A201);
        for n in 0..3 {
            let config = REG_TIMER0 + n * TIMER_STRIDE;
            assert_eq!(rig.read(config), 0x30, "periodic- and 64-bit-capable");
            assert_eq!(rig.read(config + 4), 0x4, "IOAPIC input 2 only");
        }
    }

    #[test]
    fn byte_and_word_reads_see_the_bytes_they_cover() {
        let mut rig = Rig::new();
        assert_eq!(rig.bus.mmio_read(rig.hpet, 1, 1, 0), 0xA2);
        assert_eq!(rig.bus.mmio_read(rig.hpet, 2, 2, 0), 0x8086);
        assert_eq!(rig.bus.mmio_read(rig.hpet, 6, 2, 0), 0x0098);
    }

    #[test]
    fn reserved_bits_and_undefined_offsets_read_zero() {
        let mut rig = Rig::new();
        rig.write(REG_CONFIG, u32::MAX);
        assert_eq!(rig.read(REG_CONFIG), 0x3, "ENABLE_CNF and LEG_RT_CNF only");
        rig.write(REG_CONFIG, 0);
        rig.write(REG_CONFIG + 4, u32::MAX);
        assert_eq!(rig.read(REG_CONFIG + 4), 0);
        rig.write(T0_CONFIG, u32::MAX);
        assert_eq!(
            rig.read(T0_CONFIG),
            0x3F7E,
            "the writable bits and the capabilities; no FSB delivery"
        );
        rig.write(T0_CONFIG + 4, 0);
        assert_eq!(
            rig.read(T0_CONFIG + 4),
            0x4,
            "the route capability is read-only"
        );
        rig.write(T0_CONFIG, 0);
        for offset in [0x008, 0x030, 0x0E0, 0x0F8, 0x118, 0x160, 0x3FC] {
            rig.write(offset, u32::MAX);
            assert_eq!(rig.read(offset), 0, "offset {offset:#x}");
        }
    }

    #[test]
    fn counter_stands_still_while_halted() {
        let mut rig = Rig::new();
        rig.run_until(5_000);
        assert_eq!(rig.read64(REG_COUNTER), 0);
    }

    #[test]
    fn counter_advances_one_count_per_10_virtual_ns_while_enabled() {
        let mut rig = Rig::new();
        rig.run_until(1_000);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(1_009);
        assert_eq!(rig.read64(REG_COUNTER), 0);
        rig.run_until(1_010);
        assert_eq!(rig.read64(REG_COUNTER), 1);
        rig.run_until(1_000 + 12_345_678);
        assert_eq!(rig.read64(REG_COUNTER), 1_234_567);
        rig.write(REG_CONFIG, 0);
        rig.run_until(100_000_000);
        assert_eq!(rig.read64(REG_COUNTER), 1_234_567, "halted, it holds");
    }

    #[test]
    fn counter_written_while_halted_counts_on_from_the_value_written() {
        let mut rig = Rig::new();
        rig.write64(REG_COUNTER, 0x1_2345_6789);
        assert_eq!(rig.read64(REG_COUNTER), 0x1_2345_6789);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(100);
        assert_eq!(rig.read64(REG_COUNTER), 0x1_2345_6793);
        rig.write(REG_COUNTER, 0);
        assert_eq!(
            rig.read64(REG_COUNTER),
            0x1_2345_6793,
            "a running counter ignores writes, as in QEMU"
        );
    }

    #[test]
    fn one_shot_fires_once_on_the_routed_ioapic_pin_at_the_match() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(0);
        rig.write64(T0_COMPARATOR, 500);
        rig.run_until(40);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(100_000);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![40 + 5_000]);
        assert_eq!(
            rig.recorder(rig.ioapic).changes,
            vec![(2, true, 5_040), (2, false, 5_040)],
            "edge-triggered: one pulse"
        );
        assert_eq!(rig.read(REG_STATUS), 0, "edge interrupts set no status");
        assert_eq!(rig.bus.next_deadline(), u64::MAX, "once only");
    }

    #[test]
    fn one_shot_written_while_running_fires_at_its_comparator() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(0);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(1_000);
        rig.write64(T0_COMPARATOR, 300);
        rig.run_until(10_000);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![3_000]);
    }

    #[test]
    fn periodic_fires_every_period_and_accumulates_the_comparator() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(TN_TYPE_CNF | TN_VAL_SET_CNF);
        assert_ne!(rig.read(T0_CONFIG) as u64 & TN_VAL_SET_CNF, 0);
        rig.write(T0_COMPARATOR + 4, 0);
        assert_eq!(
            rig.read(T0_CONFIG) as u64 & TN_VAL_SET_CNF,
            0,
            "VAL_SET clears itself"
        );
        rig.route_timer0_to_pin2(TN_TYPE_CNF | TN_VAL_SET_CNF);
        rig.write(T0_COMPARATOR, 100);
        rig.write(T0_COMPARATOR, 250);
        assert_eq!(
            rig.read64(T0_COMPARATOR),
            100,
            "without VAL_SET: the period"
        );
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(6_000);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![1_000, 3_500, 6_000]);
        assert_eq!(rig.read64(T0_COMPARATOR), 850);
    }

    #[test]
    fn periodic_callback_that_comes_late_skips_to_the_next_period() {
        let mut rig = Rig::new();
        rig.program_periodic_timer0(100, 100);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.now = 3_500;
        rig.bus.run_timers(rig.now);
        assert_eq!(
            rig.rises(rig.ioapic, 2),
            vec![3_500],
            "one interrupt for all"
        );
        assert_eq!(rig.read64(T0_COMPARATOR), 400);
        assert_eq!(rig.bus.next_deadline(), 4_000);
    }

    #[test]
    fn mode_32bit_periodic_comparator_wraps_at_2_pow_32() {
        let mut rig = Rig::new();
        rig.write64(REG_COUNTER, 0xFFFF_FF00);
        rig.route_timer0_to_pin2(TN_TYPE_CNF | TN_VAL_SET_CNF | TN_32MODE_CNF);
        rig.write(T0_COMPARATOR, 0xFFFF_FF80);
        rig.write(T0_COMPARATOR, 0x100);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(10 * 0x180);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![10 * 0x80, 10 * 0x180]);
        assert_eq!(rig.read64(T0_COMPARATOR), 0x180, "wrapped to 32 bits");
        assert_eq!(rig.read64(REG_COUNTER), 0x1_0000_0080, "the counter has 64");
    }

    #[test]
    fn mode_32bit_one_shot_fires_at_the_wrap_and_at_the_match() {
        let mut rig = Rig::new();
        rig.write64(REG_COUNTER, 0xFFFF_FFF0);
        rig.route_timer0_to_pin2(TN_32MODE_CNF);
        rig.write64(T0_COMPARATOR, 0x1_0000_0020);
        assert_eq!(rig.read64(T0_COMPARATOR), 0x20, "32 bits wide");
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(100_000);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![10 * 0x10, 10 * 0x30]);
    }

    #[test]
    fn level_triggered_holds_line_and_status_until_cleared_by_writing_1() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(TN_INT_TYPE_CNF);
        rig.write64(T0_COMPARATOR, 10);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(1_000);
        assert_eq!(rig.read(REG_STATUS), 1);
        assert!(rig.bus.irq_level(0), "IOAPIC pin 2 is bus line 0");
        rig.write(REG_STATUS, 0b110);
        assert_eq!(rig.read(REG_STATUS), 1, "writing 0 leaves the bit");
        assert!(rig.bus.irq_level(0));
        rig.bus.mmio_write(rig.hpet, REG_STATUS, 1, 1, rig.now);
        assert_eq!(rig.read(REG_STATUS), 0);
        assert!(!rig.bus.irq_level(0));
        assert_eq!(
            rig.recorder(rig.ioapic).changes,
            vec![(2, true, 100), (2, false, 1_000)]
        );
    }

    #[test]
    fn legacy_replacement_routes_timer0_to_irq0_and_timer1_to_irq8() {
        let mut rig = Rig::new();
        let route_to_pin_20 = TN_INT_ENB_CNF | (20 << TN_INT_ROUTE_SHIFT);
        rig.write(T0_CONFIG, route_to_pin_20 as u32);
        rig.write(T1_CONFIG, route_to_pin_20 as u32);
        rig.write64(T0_COMPARATOR, 100);
        rig.write64(T1_COMPARATOR, 200);
        rig.write(REG_CONFIG, (ENABLE_CNF | LEG_RT_CNF) as u32);
        rig.run_until(10_000);
        assert_eq!(rig.rises(rig.isa, 0), vec![1_000]);
        assert_eq!(rig.rises(rig.isa, 8), vec![2_000]);
        assert_eq!(rig.rises(rig.ioapic, 2), vec![1_000], "IRQ 0 reaches pin 2");
        assert_eq!(rig.rises(rig.ioapic, 20), Vec::<u64>::new());

        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.write64(T0_COMPARATOR, 2_000);
        rig.run_until(30_000);
        assert_eq!(
            rig.rises(rig.ioapic, 20),
            vec![20_000],
            "its own route again"
        );
    }

    /// Drives bus lines as the PIT and the RTC do: a write of
    /// `line | level << 7`.
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

    #[test]
    fn legacy_replacement_cuts_the_pit_and_rtc_off_irq0_and_irq8_until_cleared() {
        const DRIVER_PORT: u16 = 0x40;
        let mut rig = Rig::new();
        let driver = rig.bus.add(Box::new(LineDriver));
        rig.bus.claim_ports(driver, DRIVER_PORT, DRIVER_PORT);
        rig.bus.io_write(DRIVER_PORT, 1, 0x80 | 8, 0);
        assert!(rig.bus.irq_level(8), "the RTC holds IRQ 8");

        rig.write(REG_CONFIG, LEG_RT_CNF as u32);
        assert!(!rig.bus.irq_level(8), "the HPET takes IRQ 8 over");
        rig.bus.io_write(DRIVER_PORT, 1, 0x80, 0);
        assert!(!rig.bus.irq_level(0), "the PIT's IRQ 0 goes nowhere");
        assert_eq!(rig.rises(rig.isa, 0), Vec::<u64>::new());

        rig.write(REG_CONFIG, 0);
        assert!(rig.bus.irq_level(0), "given back at the PIT's level");
        assert!(rig.bus.irq_level(8), "and the RTC's");
    }

    #[test]
    fn halting_the_counter_disarms_the_timers() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(0);
        rig.write64(T0_COMPARATOR, 100);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(500);
        rig.write(REG_CONFIG, 0);
        rig.run_until(5_000);
        assert_eq!(rig.rises(rig.ioapic, 2), Vec::<u64>::new());
        assert_eq!(rig.bus.next_deadline(), u64::MAX);
    }

    #[test]
    fn save_restore_mid_countdown_fires_at_the_same_time() {
        let mut rig = Rig::new();
        rig.program_periodic_timer0(1_000, 1_000);
        rig.write(REG_CONFIG, ENABLE_CNF as u32);
        rig.run_until(4_321);
        let saved = rig.bus.device_mut(rig.hpet).unwrap().save_state();
        let bus_state = rig.bus.bus_state();

        let mut fresh = Rig::new();
        fresh
            .bus
            .device_mut(fresh.hpet)
            .unwrap()
            .restore_state(&saved)
            .unwrap();
        fresh.bus.restore_bus_state(&bus_state);
        fresh.now = rig.now;
        assert_eq!(fresh.read64(REG_COUNTER), rig.read64(REG_COUNTER));
        rig.run_until(40_000);
        fresh.run_until(40_000);
        assert_eq!(
            fresh.rises(fresh.ioapic, 2),
            vec![10_000, 20_000, 30_000, 40_000]
        );
        assert_eq!(rig.rises(rig.ioapic, 2), fresh.rises(fresh.ioapic, 2));
    }

    #[test]
    fn corrupt_saved_state_is_refused_and_changes_nothing() {
        let mut rig = Rig::new();
        rig.route_timer0_to_pin2(0);
        rig.write64(T0_COMPARATOR, 77);
        let hpet = rig.bus.device_mut(rig.hpet).unwrap();
        let saved = hpet.save_state();
        let corrupt = |pointer: &str, value: Value| {
            let mut state = saved.clone();
            *state.pointer_mut(pointer).expect("the field exists") = value;
            state
        };
        let bad = [
            corrupt("/version", serde_json::json!(2)),
            corrupt("/registers/config", serde_json::json!(4)),
            corrupt("/registers/timers/1/config", serde_json::json!(0x8000)),
            corrupt("/registers/timers/2/deadline_ns", serde_json::json!(5)),
            corrupt("/registers/timers", serde_json::json!([])),
            corrupt("/registers/counter", serde_json::json!("soon")),
            serde_json::json!({ "version": 1 }),
        ];
        for state in bad {
            assert!(hpet.restore_state(&state).is_err(), "{state}");
            assert_eq!(hpet.save_state(), saved);
        }
        hpet.restore_state(&saved).unwrap();
    }

    #[test]
    fn default_pc_answers_with_hpet_capabilities_at_0xfed00000() {
        let mut m = build_pc(&MachineConfig::default(), HostIo::discarded()).expect("a PC");
        assert_eq!(m.phys_read(HPET_BASE, 4), 0x8086_A201);
        assert_eq!(m.phys_read(HPET_BASE + 4, 4), 10_000_000);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read { offset: u32, size: u8 },
        Write { offset: u32, size: u8, value: u32 },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let register = prop_oneof![
            Just(REG_CONFIG),
            Just(REG_STATUS),
            Just(REG_COUNTER),
            Just(REG_COUNTER + 4),
            (
                0u32..3,
                prop_oneof![Just(0u32), Just(4), Just(8), Just(12), Just(16)]
            )
                .prop_map(|(n, o)| REG_TIMER0 + n * TIMER_STRIDE + o),
        ];
        let offset = prop_oneof![6 => register, 1 => 0u32..HPET_SIZE];
        let size = prop_oneof![6 => Just(4u8), 1 => Just(1u8), 1 => Just(2u8)];
        let value = prop_oneof![
            any::<u32>(),
            0u32..0x80,
            (0u32..0x40, 0u32..24).prop_map(|(flags, route)| flags | route << 9),
        ];
        prop_oneof![
            2 => (offset.clone(), size.clone()).prop_map(|(offset, size)| Op::Read { offset, size }),
            6 => (offset, size, value)
                .prop_map(|(offset, size, value)| Op::Write { offset, size, value }),
            2 => (0u64..50_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_access_sequences_keep_deadlines_ahead_and_state_restorable(
            ops in proptest::collection::vec(op(), 1..64)
        ) {
            let mut rig = Rig::new();
            for op in ops {
                match op {
                    Op::Read { offset, size } => {
                        rig.bus.mmio_read(rig.hpet, offset, size, rig.now);
                    }
                    Op::Write { offset, size, value } => {
                        rig.bus.mmio_write(rig.hpet, offset, size, value, rig.now);
                    }
                    Op::Advance(ns) => {
                        let until = rig.now + ns;
                        rig.run_until(until);
                    }
                }
                // A timer is never due in the past: callbacks cannot loop.
                prop_assert!(rig.bus.next_deadline() > rig.now);
            }
            // Every state the guest can reach is one a restore accepts.
            let saved = rig.bus.device_mut(rig.hpet).map(|h| h.save_state());
            let mut copy = Hpet::new();
            prop_assert_eq!(copy.restore_state(&saved.unwrap_or(Value::Null)), Ok(()));
        }
    }
}
