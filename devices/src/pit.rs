//! The 8254 programmable interval timer (Intel 8254 data sheet) and the
//! PC's system control port B at 0x61, which owns the gate of the PIT's
//! channel 2 and shows its output.
//!
//! Three counters at ports 0x40-0x42 and the control word register at 0x43.
//! Each counter counts down on the 1.193182 MHz input clock in one of six
//! modes (data sheet, "Modes 0-5"), in binary or BCD, written and read as
//! the LSB, the MSB or both ("Read/Write Operations"), and can be frozen
//! for reading by the counter latch command or the read-back command,
//! which also latches a status byte ("Read-Back Command").
//!
//! The counters never tick. Clock edge k of the input clock happens at
//! virtual time k / 1.193182 MHz, so a counter remembers when it was
//! loaded and computes its count and OUT level from the clock edges since.
//! Channel 0's OUT drives IRQ0: the device asks the bus for a timer
//! callback exactly at the next clock edge where OUT changes, and drives
//! the line then. A callback that comes late (virtual time jumped past a
//! pulse) still shows the PIC the rising edge it missed.
//!
//! On a PC, channel 0 is the system timer (gate tied high, OUT on IRQ0),
//! channel 1 once timed DRAM refresh (gate high, OUT unused), channel 2
//! drives the speaker (gate from port 0x61 bit 0, OUT read at bit 5).
//!
//! Port 0x61 bits: 0 timer 2 gate, 1 speaker data enable, 2-3 parity and
//! I/O channel check enables (stored only), 4 the refresh request toggle
//! (flips every 15.085 us of virtual time, so firmware delay loops that
//! count its edges work), 5 timer 2 OUT; 6-7 (NMI sources) read as 0.
//!
//! Not modelled: the speaker's sound, and the chip's undefined power-on
//! state (every counter starts in mode 0 with no count: OUT low, no IRQ0
//! until the guest programs it).

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// System control port B.
pub const PORT_B: u16 = 0x61;

/// The ports the device answers: the counters and control word, and port B.
pub const PIT_PORTS: [(u16, u16); 2] = [(0x40, 0x43), (PORT_B, PORT_B)];

const COUNTER_PORT: u16 = 0x40;
const CONTROL_PORT: u16 = 0x43;

/// The PC's PIT input clock: 105/88 MHz, from the 14.31818 MHz crystal
/// divided by 12.
pub const PIT_HZ: u64 = 1_193_182;
const NS_PER_SECOND: u64 = 1_000_000_000;

/// The refresh request bit of port B toggles once per DRAM refresh cycle.
pub const REFRESH_PERIOD_NS: u64 = 15_085;

const PORT_B_GATE2: u8 = 1 << 0;
/// Bits 0-3 of port B are read/write; the rest are status.
const PORT_B_WRITABLE: u8 = 0x0F;
const PORT_B_REFRESH: u8 = 1 << 4;
const PORT_B_OUT2: u8 = 1 << 5;

/// The largest initial count: 0 means 2^16 in binary (10^4 in BCD; a BCD
/// count with invalid digits stays below 2^16 too).
const MAX_COUNT: u32 = 0x1_0000;

/// The number of input clock edges up to virtual time `ns`.
const fn tick_at(ns: u64) -> u64 {
    (ns as u128 * PIT_HZ as u128 / NS_PER_SECOND as u128) as u64
}

/// The last clock edge virtual time can reach; saved states stay below it.
const MAX_TICK: u64 = tick_at(u64::MAX);

/// The virtual time of input clock edge `tick` (the first nanosecond at or
/// after it).
fn ns_of_tick(tick: u64) -> u64 {
    let ns = (tick as u128 * NS_PER_SECOND as u128).div_ceil(PIT_HZ as u128);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn from_bcd(value: u16) -> u32 {
    (0..4).rev().fold(0, |acc, digit| {
        acc * 10 + ((value >> (4 * digit)) & 0xF) as u32
    })
}

fn to_bcd(value: u32) -> u16 {
    (0..4).fold(0, |acc, digit| {
        acc | (((value / 10u32.pow(digit)) % 10) as u16) << (4 * digit)
    })
}

/// Which bytes of the count a counter reads and writes (control word RW1,
/// RW0; 00 is the latch command and never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Access {
    Lsb,
    Msb,
    LsbThenMsb,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::LsbThenMsb => 3,
        }
    }
}

/// A count in the counting element: `n` was loaded, and `base_e`
/// counting clock edges had passed since by clock edge `base_tick` (edges
/// where the gate held the count do not count).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Count {
    /// The initial count, in clocks (1..=65536).
    n: u32,
    /// Counting clock edges elapsed since the load, as of `base_tick`.
    base_e: u64,
    base_tick: u64,
    /// False while the gate holds the count (modes 0, 2, 3 and 4).
    running: bool,
    /// The count is loaded on the clock edge after the write (or trigger):
    /// until `base_tick` the counter still shows this CE and OUT.
    before_load: Option<(u16, bool)>,
    /// Modes 2 and 3: a count written while counting is loaded at the end
    /// of the current period (or half-period): (count, clock edge, clock
    /// edges elapsed at that edge in the new count's cycle).
    pending: Option<(u32, u64, u64)>,
}

impl Count {
    fn loaded(n: u32, tick: u64, e: u64) -> Count {
        Count {
            n,
            base_e: e,
            base_tick: tick,
            running: true,
            before_load: None,
            pending: None,
        }
    }

    /// Counting clock edges since the load, at clock edge `t`.
    fn elapsed(&self, t: u64) -> u64 {
        if self.running && t > self.base_tick {
            self.base_e.saturating_add(t - self.base_tick)
        } else {
            self.base_e
        }
    }
}

/// OUT in `mode`, `e` clocks after the count `n` was loaded (data sheet,
/// the waveforms of each mode).
fn out_level(mode: u8, n: u64, e: u64) -> bool {
    match mode {
        // Low while counting, high from terminal count on.
        0 | 1 => e >= n,
        // Low for the one clock where the count is 1, then reload.
        2 => e % n != n - 1,
        // High for ceil(n/2) clocks, low for floor(n/2).
        3 => e % n < n.div_ceil(2),
        // A one-clock low strobe at terminal count.
        _ => e != n,
    }
}

/// The first `e' > e` where OUT changes, if it ever does.
fn next_out_change(mode: u8, n: u64, e: u64) -> Option<u64> {
    match mode {
        0 | 1 => (e < n).then_some(n),
        2 => {
            if n < 2 {
                return None;
            }
            let p = e % n;
            Some(if p < n - 1 {
                e - p + n - 1
            } else {
                e.saturating_add(1)
            })
        }
        3 => {
            let high = n.div_ceil(2);
            if high == n {
                return None;
            }
            let p = e % n;
            Some(if p < high {
                e + (high - p)
            } else {
                e + (n - p)
            })
        }
        _ => match e.cmp(&n) {
            std::cmp::Ordering::Less => Some(n),
            std::cmp::Ordering::Equal => Some(n + 1),
            std::cmp::Ordering::Greater => None,
        },
    }
}

/// The counting element's value `e` clocks after loading `n`, in 0..modulus.
fn ce_value(mode: u8, n: u64, e: u64, modulus: u64) -> u64 {
    let value = match mode {
        2 => n - e % n,
        // Mode 3 counts down by two. An odd count spends one extra clock
        // in the high half: it loses 1 on the first clock of the high half
        // and 3 on the first clock of the low half (data sheet, mode 3).
        3 if n & 1 == 0 => n - 2 * (e % n % (n / 2)),
        3 => {
            let p = e % n;
            let high = n.div_ceil(2);
            match p {
                0 => n,
                p if p < high => n - 1 - 2 * (p - 1),
                p if p == high => n,
                p => n - 3 - 2 * (p - high - 1),
            }
        }
        // Modes 0, 1, 4, 5 keep counting past zero, wrapping around.
        _ => (n % modulus + modulus - e % modulus) % modulus,
    };
    value % modulus
}

/// The read side's latch of a count (counter latch or read-back command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LatchedCount {
    value: u16,
    msb_next: bool,
}

/// One of the three counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    /// Control word M2-M0 as written (6 and 7 are modes 2 and 3).
    mode_bits: u8,
    bcd: bool,
    access: Access,
    gate: bool,
    /// The count register: the last complete count written since the
    /// control word, in clocks.
    count_register: Option<u32>,
    /// Two-byte writes: the LSB, waiting for the MSB.
    written_lsb: Option<u8>,
    /// Two-byte reads of the live count: the next read returns the MSB.
    read_msb_next: bool,
    latched_count: Option<LatchedCount>,
    latched_status: Option<u8>,
    /// Status bit 6: a count was written but is not in the counting
    /// element yet.
    null_count: bool,
    count: Option<Count>,
    /// The counting element while no count is loaded.
    idle_ce: u16,
}

impl Counter {
    fn new(gate: bool) -> Counter {
        Counter {
            mode_bits: 0,
            bcd: false,
            access: Access::LsbThenMsb,
            gate,
            count_register: None,
            written_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latched_status: None,
            null_count: false,
            count: None,
            idle_ce: 0,
        }
    }

    fn mode(&self) -> u8 {
        if self.mode_bits & 2 != 0 {
            self.mode_bits & 3
        } else {
            self.mode_bits
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            MAX_COUNT as u64
        }
    }

    /// Carry out loads that were due by clock edge `t`.
    fn catch_up(&mut self, t: u64) {
        let Some(count) = &mut self.count else {
            return;
        };
        if count.before_load.is_some() && t >= count.base_tick {
            count.before_load = None;
            self.null_count = false;
        }
        if let Some((n, at, e)) = count.pending {
            if t >= at {
                *count = Count::loaded(n, at, e);
                self.null_count = false;
            }
        }
    }

    /// OUT at clock edge `t` (after `catch_up(t)`).
    fn out(&self, t: u64) -> bool {
        let mode = self.mode();
        // Modes 2 and 3: a low gate forces OUT high at once.
        if matches!(mode, 2 | 3) && !self.gate {
            return true;
        }
        match &self.count {
            // Right after the control word OUT is low in mode 0 and high
            // in all others.
            None => mode != 0,
            Some(c) => match c.before_load {
                Some((_, out)) if t < c.base_tick => out,
                _ => out_level(mode, c.n as u64, c.elapsed(t)),
            },
        }
    }

    /// The counting element at clock edge `t`, as the guest reads it.
    fn ce(&self, t: u64) -> u16 {
        let Some(c) = &self.count else {
            return self.idle_ce;
        };
        if let Some((ce, _)) = c.before_load.filter(|_| t < c.base_tick) {
            return ce;
        }
        let value = ce_value(self.mode(), c.n as u64, c.elapsed(t), self.modulus());
        if self.bcd {
            to_bcd(value as u32)
        } else {
            value as u16
        }
    }

    /// The next clock edge after `t` where OUT may change.
    fn next_transition(&self, t: u64) -> Option<u64> {
        let mode = self.mode();
        if matches!(mode, 2 | 3) && !self.gate {
            return None;
        }
        let c = self.count.as_ref()?;
        if c.before_load.is_some() && t < c.base_tick {
            return Some(c.base_tick);
        }
        if !c.running {
            return None;
        }
        let from = t.max(c.base_tick);
        let e = c.elapsed(from);
        let change = next_out_change(mode, c.n as u64, e)
            .map(|next| from.saturating_add(next.saturating_sub(e)));
        let pending = c.pending.map(|(_, at, _)| at);
        match (change, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether OUT rises anywhere in clock edges (from, to], starting from
    /// the state at `from`.
    fn rises_between(&self, from: u64, to: u64) -> bool {
        let mut counter = self.clone();
        let mut t = from;
        let mut level = counter.out(t);
        // OUT alternates, so a rise shows within a fall and a rise, plus
        // the load edge, which may leave OUT where it was.
        for _ in 0..4 {
            let Some(next) = counter.next_transition(t).filter(|&n| n > t && n <= to) else {
                return false;
            };
            counter.catch_up(next);
            let now = counter.out(next);
            if now && !level {
                return true;
            }
            level = now;
            t = next;
        }
        false
    }

    /// Load `n` on the clock edge after `t`.
    fn load_on_next_clock(&mut self, t: u64, n: u32, out_before: bool) {
        let running = !matches!(self.mode(), 0 | 4) || self.gate;
        self.count = Some(Count {
            running,
            before_load: Some((self.ce(t), out_before)),
            ..Count::loaded(n, t.saturating_add(1), 0)
        });
    }

    /// Modes 2 and 3: a count written while counting waits for the end of
    /// the period (mode 2) or half-period (mode 3).
    fn reload_at_boundary(&mut self, t: u64, n_new: u32) {
        let mode = self.mode();
        let Some(c) = &mut self.count else {
            return;
        };
        let from = t.max(c.base_tick);
        let e = c.elapsed(from);
        let n = c.n as u64;
        let p = e % n;
        let high = n.div_ceil(2);
        let (boundary, start_e) = if mode == 3 && p < high {
            // The new count starts with its low half.
            (e - p + high, (n_new as u64).div_ceil(2))
        } else {
            (e - p + n, 0)
        };
        let at = from.saturating_add(boundary - e);
        c.pending = Some((n_new, at, start_e));
    }

    /// A complete count arrived in the count register.
    fn count_written(&mut self, t: u64, raw: u16) {
        let n = if self.bcd {
            match from_bcd(raw) {
                0 => 10_000,
                n => n,
            }
        } else if raw == 0 {
            MAX_COUNT
        } else {
            raw as u32
        };
        self.count_register = Some(n);
        self.null_count = true;
        match self.mode() {
            // Writing a count (re)starts modes 0 and 4; mode 0 takes OUT
            // low until the new terminal count.
            0 => self.load_on_next_clock(t, n, false),
            4 => self.load_on_next_clock(t, n, self.out(t)),
            2 | 3 => match &self.count {
                Some(c) if c.running => self.reload_at_boundary(t, n),
                Some(_) => {}
                None if self.gate => self.load_on_next_clock(t, n, true),
                None => {}
            },
            // Modes 1 and 5 wait for a rising edge on the gate.
            _ => {}
        }
    }

    fn write_count_byte(&mut self, t: u64, value: u8) {
        match self.access {
            Access::Lsb => self.count_written(t, value as u16),
            Access::Msb => self.count_written(t, (value as u16) << 8),
            Access::LsbThenMsb => match self.written_lsb.take() {
                Some(lsb) => self.count_written(t, lsb as u16 | (value as u16) << 8),
                None => {
                    self.written_lsb = Some(value);
                    if self.mode() == 0 {
                        // Mode 0: the first byte stops the count and takes
                        // OUT low at once.
                        self.idle_ce = self.ce(t);
                        self.count = None;
                    }
                }
            },
        }
    }

    fn read_count_byte(&mut self, t: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some(latch) = &mut self.latched_count {
            let value = latch.value;
            let msb = match self.access {
                Access::Lsb => false,
                Access::Msb => true,
                Access::LsbThenMsb => latch.msb_next,
            };
            if self.access == Access::LsbThenMsb && !msb {
                latch.msb_next = true;
            } else {
                self.latched_count = None;
            }
            return if msb { (value >> 8) as u8 } else { value as u8 };
        }
        let value = self.ce(t);
        let msb = match self.access {
            Access::Lsb => false,
            Access::Msb => true,
            Access::LsbThenMsb => {
                self.read_msb_next = !self.read_msb_next;
                !self.read_msb_next
            }
        };
        if msb {
            (value >> 8) as u8
        } else {
            value as u8
        }
    }

    /// A control word with RW != 00: all control logic is reset and OUT
    /// goes to the mode's initial level; the count waits for a write.
    fn program(&mut self, t: u64, control: u8) {
        self.idle_ce = self.ce(t);
        self.mode_bits = (control >> 1) & 7;
        self.bcd = control & 1 != 0;
        self.access = match (control >> 4) & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::LsbThenMsb,
        };
        self.count_register = None;
        self.written_lsb = None;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
        self.null_count = true;
        self.count = None;
    }

    /// Counter latch command: a second latch before the first is read is
    /// ignored.
    fn latch_count(&mut self, t: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(LatchedCount {
                value: self.ce(t),
                msb_next: false,
            });
        }
    }

    /// Read-back status: OUT, null count, RW, mode and BCD as programmed.
    fn latch_status(&mut self, t: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(
                (self.out(t) as u8) << 7
                    | (self.null_count as u8) << 6
                    | self.access.bits() << 4
                    | self.mode_bits << 1
                    | self.bcd as u8,
            );
        }
    }

    fn set_gate(&mut self, t: u64, level: bool) {
        if level == self.gate {
            return;
        }
        let out_before = self.out(t);
        self.gate = level;
        match self.mode() {
            // Modes 0 and 4 count only while the gate is high, resuming on
            // the clock after it rises.
            0 | 4 => {
                if let Some(c) = &mut self.count {
                    if level {
                        c.base_tick = c.base_tick.max(t.saturating_add(1));
                    } else {
                        c.base_e = c.elapsed(t);
                        c.base_tick = c.base_tick.max(t);
                    }
                    c.running = level;
                }
            }
            // Modes 2 and 3: a low gate stops the count (OUT goes high);
            // a rising gate reloads the count register on the next clock.
            2 | 3 => {
                if level {
                    if let Some(n) = self.count_register {
                        self.load_on_next_clock(t, n, true);
                    }
                } else if let Some(c) = &mut self.count {
                    c.base_e = c.elapsed(t);
                    c.base_tick = c.base_tick.max(t);
                    c.running = false;
                    c.pending = None;
                }
            }
            // Modes 1 and 5: a rising gate (re)triggers the count.
            _ => {
                if let (true, Some(n)) = (level, self.count_register) {
                    self.load_on_next_clock(t, n, out_before);
                }
            }
        }
    }

    fn validate(&self, which: usize) -> Result<(), StateError> {
        let bad = |what: &str| Err(Pit::state_error(format!("counter {which}: {what}")));
        let count_ok = |n: u32| (1..=MAX_COUNT).contains(&n);
        if self.mode_bits > 7 {
            return bad("mode is not 0-7");
        }
        if self.count_register.is_some_and(|n| !count_ok(n)) {
            return bad("count register out of range");
        }
        if let Some(c) = &self.count {
            if !count_ok(c.n) || c.pending.is_some_and(|(n, _, _)| !count_ok(n)) {
                return bad("count out of range");
            }
            let (pending_at, pending_e) = c.pending.map_or((0, 0), |(_, at, e)| (at, e));
            if [c.base_tick, c.base_e, pending_at, pending_e]
                .iter()
                .any(|&tick| tick > MAX_TICK)
            {
                return bad("clock edge beyond the end of virtual time");
            }
        }
        Ok(())
    }
}

/// The 8254 with port B.
pub struct Pit {
    counters: [Counter; 3],
    /// Port B bits 0-3 as written.
    port_b: u8,
    /// The level this device last drove on IRQ0.
    irq0: bool,
    /// The clock edge channel 0's OUT was last looked at.
    synced_tick: u64,
}

/// What a saved state holds.
#[derive(Serialize, Deserialize)]
struct PitState {
    version: u32,
    counters: [Counter; 3],
    port_b: u8,
    irq0: bool,
    synced_tick: u64,
}

const STATE_VERSION: u32 = 1;

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    pub fn new() -> Pit {
        Pit {
            // Channels 0 and 1 have their gates tied high; channel 2's gate
            // is port B bit 0, clear at reset.
            counters: [Counter::new(true), Counter::new(true), Counter::new(false)],
            port_b: 0,
            irq0: false,
            synced_tick: 0,
        }
    }

    /// Bring IRQ0 up to date with channel 0's OUT at `ctx.now_ns` and ask
    /// for a callback at its next change.
    fn sync_irq0(&mut self, ctx: &mut DeviceCtx) {
        let t = tick_at(ctx.now_ns);
        let rose = t > self.synced_tick && self.counters[0].rises_between(self.synced_tick, t);
        let counter = &mut self.counters[0];
        counter.catch_up(t);
        let out = counter.out(t);
        if rose {
            // A pulse came and went while nobody looked: the PIC still
            // needs its rising edge.
            if self.irq0 {
                ctx.set_irq(0, false);
            }
            ctx.set_irq(0, true);
            if !out {
                ctx.set_irq(0, false);
            }
        } else if out != self.irq0 {
            ctx.set_irq(0, out);
        }
        self.irq0 = out;
        self.synced_tick = t;
        match counter.next_transition(t) {
            Some(tick) => ctx.schedule(ns_of_tick(tick)),
            None => ctx.cancel_timer(),
        }
    }

    fn write_control(&mut self, t: u64, control: u8) {
        let select = (control >> 6) as usize;
        if select == 3 {
            // Read-back: bit 5 low latches counts, bit 4 low latches
            // status, bits 1-3 select counters 0-2.
            for (i, counter) in self.counters.iter_mut().enumerate() {
                if control & (2 << i) == 0 {
                    continue;
                }
                counter.catch_up(t);
                if control & 0x20 == 0 {
                    counter.latch_count(t);
                }
                if control & 0x10 == 0 {
                    counter.latch_status(t);
                }
            }
            return;
        }
        let counter = &mut self.counters[select];
        counter.catch_up(t);
        if control & 0x30 == 0 {
            counter.latch_count(t);
        } else {
            counter.program(t, control);
        }
    }

    fn read_port_b(&mut self, now_ns: u64) -> u8 {
        let t = tick_at(now_ns);
        let counter = &mut self.counters[2];
        counter.catch_up(t);
        let refresh = (now_ns / REFRESH_PERIOD_NS) % 2 == 1;
        self.port_b
            | if refresh { PORT_B_REFRESH } else { 0 }
            | if counter.out(t) { PORT_B_OUT2 } else { 0 }
    }

    fn read_port(&mut self, port: u16, now_ns: u64) -> u8 {
        let t = tick_at(now_ns);
        match port {
            0x40..=0x42 => {
                let counter = &mut self.counters[(port - COUNTER_PORT) as usize];
                counter.catch_up(t);
                counter.read_count_byte(t)
            }
            PORT_B => self.read_port_b(now_ns),
            // The control word register cannot be read.
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8, now_ns: u64) {
        let t = tick_at(now_ns);
        match port {
            0x40..=0x42 => {
                let counter = &mut self.counters[(port - COUNTER_PORT) as usize];
                counter.catch_up(t);
                counter.write_count_byte(t, value);
            }
            CONTROL_PORT => self.write_control(t, value),
            PORT_B => {
                self.port_b = value & PORT_B_WRITABLE;
                let counter = &mut self.counters[2];
                counter.catch_up(t);
                counter.set_gate(t, value & PORT_B_GATE2 != 0);
            }
            _ => {}
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("pit8254", reason)
    }
}

impl Device for Pit {
    fn name(&self) -> &'static str {
        "pit8254"
    }

    /// Word and dword accesses reach consecutive ports, as on the ISA bus.
    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        self.sync_irq0(ctx);
        (0..size.min(4) as u16).fold(0u32, |acc, i| {
            acc | (self.read_port(port.wrapping_add(i), ctx.now_ns) as u32) << (8 * i)
        })
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        // Edges under the old programming first, then the write's own.
        self.sync_irq0(ctx);
        for i in 0..size.min(4) as u16 {
            self.write_port(port.wrapping_add(i), (value >> (8 * i)) as u8, ctx.now_ns);
        }
        self.sync_irq0(ctx);
    }

    /// Also the way to re-arm the callback after a restore: it only looks
    /// at the time and reschedules.
    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.sync_irq0(ctx);
    }

    fn save_state(&self) -> Value {
        let state = PitState {
            version: STATE_VERSION,
            counters: self.counters.clone(),
            port_b: self.port_b,
            irq0: self.irq0,
            synced_tick: self.synced_tick,
        };
        serde_json::to_value(&state).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let state: PitState = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if state.version != STATE_VERSION {
            return Err(Self::state_error(format!(
                "version {} (expected {STATE_VERSION})",
                state.version
            )));
        }
        for (i, counter) in state.counters.iter().enumerate() {
            counter.validate(i)?;
        }
        if state.synced_tick > MAX_TICK {
            return Err(Self::state_error(
                "clock edge beyond the end of virtual time",
            ));
        }
        if state.port_b & !PORT_B_WRITABLE != 0 {
            return Err(Self::state_error("port B holds read-only bits"));
        }
        if state.counters[2].gate != (state.port_b & PORT_B_GATE2 != 0)
            || !state.counters[0].gate
            || !state.counters[1].gate
        {
            return Err(Self::state_error("gate levels do not match the wiring"));
        }
        self.counters = state.counters;
        self.port_b = state.port_b;
        self.irq0 = state.irq0;
        self.synced_tick = state.synced_tick;
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

    /// A test listener that records when IRQ0 rises.
    #[derive(Default)]
    struct EdgeRecorder {
        level: bool,
        rises: Vec<u64>,
    }

    impl Device for EdgeRecorder {
        fn name(&self) -> &'static str {
            "edge-recorder"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}
        fn irq_line(&mut self, line: u8, level: bool, ctx: &mut DeviceCtx) {
            if line == 0 {
                if level && !self.level {
                    self.rises.push(ctx.now_ns);
                }
                self.level = level;
            }
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

    fn bus_with_pit() -> Bus {
        let mut bus = Bus::new();
        let pit = bus.add(Box::new(Pit::new()));
        for (first, last) in PIT_PORTS {
            bus.claim_ports(pit, first, last);
        }
        let recorder = bus.add(Box::new(EdgeRecorder::default()));
        bus.add_irq_listener(recorder);
        bus
    }

    /// Virtual time of input clock edge `tick`.
    fn at(tick: u64) -> u64 {
        ns_of_tick(tick)
    }

    /// Write a control word and a two-byte count for the counter it selects.
    fn program(bus: &mut Bus, now: u64, control: u8, count: u16) {
        bus.io_write(CONTROL_PORT, 1, control as u32, now);
        let port = COUNTER_PORT + (control >> 6) as u16;
        bus.io_write(port, 1, (count & 0xFF) as u32, now);
        bus.io_write(port, 1, (count >> 8) as u32, now);
    }

    fn read_count(bus: &mut Bus, now: u64, counter: u16) -> u16 {
        let lsb = bus.io_read(COUNTER_PORT + counter, 1, now);
        let msb = bus.io_read(COUNTER_PORT + counter, 1, now);
        (lsb | msb << 8) as u16
    }

    fn out2(bus: &mut Bus, now: u64) -> bool {
        bus.io_read(PORT_B, 1, now) & PORT_B_OUT2 as u32 != 0
    }

    /// Run device timers in deadline order up to `end`.
    fn run_until(bus: &mut Bus, end: u64) {
        loop {
            let deadline = bus.next_deadline();
            if deadline > end {
                return;
            }
            bus.run_timers(deadline);
        }
    }

    fn rises(bus: &mut Bus) -> Vec<u64> {
        bus.find_device::<EdgeRecorder>()
            .map(|r| r.rises.clone())
            .unwrap_or_default()
    }

    #[test]
    fn clock_edges_follow_virtual_time() {
        assert_eq!(tick_at(1_000_000_000), PIT_HZ);
        for tick in [1, 1193, 1_193_182, 123_456_789] {
            assert_eq!(tick_at(at(tick)), tick);
            assert_eq!(tick_at(at(tick) - 1), tick - 1);
        }
    }

    #[test]
    fn mode2_rate_generator_raises_irq0_every_period() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 1193);
        run_until(&mut bus, 10_000_000);
        // The control word sets OUT high. The count loads on clock edge 1;
        // OUT is low while the count is 1 and rises with each reload, 1193
        // clocks (about 1 ms) apart.
        let expected: Vec<u64> = (0..=10)
            .map(|k| if k == 0 { 0 } else { at(1 + 1193 * k) })
            .collect();
        assert_eq!(rises(&mut bus), expected);
        assert!(bus.irq_level(0));
    }

    #[test]
    fn mode2_count_written_while_counting_takes_effect_at_the_next_period() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 100);
        bus.io_write(0x40, 1, 50, at(51));
        bus.io_write(0x40, 1, 0, at(51));
        run_until(&mut bus, at(210));
        assert_eq!(rises(&mut bus), vec![0, at(101), at(151), at(201)]);
    }

    #[test]
    fn mode0_interrupt_on_terminal_count_fires_once() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x30, 100);
        assert!(!bus.irq_level(0));
        run_until(&mut bus, 1_000_000_000);
        assert_eq!(rises(&mut bus), vec![at(101)]);
        assert!(bus.irq_level(0), "OUT stays high after terminal count");
        assert_eq!(bus.next_deadline(), u64::MAX);
    }

    #[test]
    fn mode0_new_count_takes_out_low_and_restarts() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x30, 100);
        run_until(&mut bus, at(200));
        bus.io_write(0x40, 1, 50, at(200));
        assert!(!bus.irq_level(0), "the first byte takes OUT low");
        bus.io_write(0x40, 1, 0, at(200));
        run_until(&mut bus, at(1000));
        assert_eq!(rises(&mut bus), vec![at(101), at(251)]);
    }

    #[test]
    fn mode1_one_shot_starts_on_gate_rising_edge() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0xB2, 10);
        assert!(out2(&mut bus, at(10)), "no trigger yet");
        bus.io_write(PORT_B, 1, 1, at(20));
        assert!(out2(&mut bus, at(20)));
        assert!(!out2(&mut bus, at(21)));
        assert!(!out2(&mut bus, at(30)));
        assert!(out2(&mut bus, at(31)));
    }

    #[test]
    fn mode3_square_wave_is_high_for_half_the_period() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x36, 100);
        run_until(&mut bus, at(50));
        assert!(bus.irq_level(0));
        run_until(&mut bus, at(51));
        assert!(!bus.irq_level(0));
        run_until(&mut bus, at(100));
        assert!(!bus.irq_level(0));
        run_until(&mut bus, at(350));
        // Mode 3 sets OUT high with the control word.
        assert_eq!(rises(&mut bus), vec![0, at(101), at(201), at(301)]);
    }

    #[test]
    fn mode3_count_0_is_the_bios_18_hz_tick() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x36, 0);
        run_until(&mut bus, 120_000_000);
        assert_eq!(rises(&mut bus), vec![0, at(1 + 65536), at(1 + 2 * 65536)]);
    }

    #[test]
    fn mode3_new_count_waits_for_the_end_of_the_half_period() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x36, 100);
        bus.io_write(0x40, 1, 40, at(20));
        bus.io_write(0x40, 1, 0, at(20));
        run_until(&mut bus, at(51));
        assert!(!bus.irq_level(0), "the old high half ran to its end");
        run_until(&mut bus, at(120));
        // The new count starts with its low half: 20 low, 20 high, 20 low.
        assert_eq!(rises(&mut bus), vec![0, at(71), at(111)]);
    }

    #[test]
    fn mode3_odd_count_is_high_one_clock_longer_and_counts_by_two() {
        let mut bus = bus_with_pit();
        bus.io_write(PORT_B, 1, 1, 0);
        program(&mut bus, 0, 0xB6, 5);
        let outs: Vec<bool> = (1..=6).map(|k| out2(&mut bus, at(k))).collect();
        assert_eq!(outs, [true, true, true, false, false, true]);
        let counts: Vec<u16> = (1..=6).map(|k| read_count(&mut bus, at(k), 2)).collect();
        assert_eq!(counts, [5, 4, 2, 5, 2, 5]);
    }

    #[test]
    fn mode4_software_strobe_pulses_out_low_for_one_clock() {
        let mut bus = bus_with_pit();
        bus.io_write(PORT_B, 1, 1, 0);
        program(&mut bus, at(5), 0xB8, 10);
        let outs: Vec<bool> = (14..=18).map(|k| out2(&mut bus, at(k))).collect();
        assert_eq!(outs, [true, true, false, true, true]);
    }

    #[test]
    fn mode5_hardware_strobe_waits_for_the_gate() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0xBA, 4);
        assert!((1..100).all(|k| out2(&mut bus, at(k))));
        bus.io_write(PORT_B, 1, 1, at(200));
        let outs: Vec<bool> = (204..=206).map(|k| out2(&mut bus, at(k))).collect();
        assert_eq!(outs, [true, false, true]);
    }

    #[test]
    fn gate_low_stops_mode2_and_forces_out_high() {
        let mut bus = bus_with_pit();
        bus.io_write(PORT_B, 1, 1, 0);
        program(&mut bus, 0, 0xB4, 10);
        assert_eq!(read_count(&mut bus, at(4), 2), 7);
        bus.io_write(PORT_B, 1, 0, at(4));
        assert_eq!(read_count(&mut bus, at(10), 2), 7);
        assert!(out2(&mut bus, at(10)));
        bus.io_write(PORT_B, 1, 1, at(20));
        // A rising gate reloads the count on the next clock.
        assert_eq!(read_count(&mut bus, at(21), 2), 10);
        assert_eq!(read_count(&mut bus, at(22), 2), 9);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut bus = bus_with_pit();
        bus.io_write(PORT_B, 1, 1, 0);
        program(&mut bus, 0, 0xB0, 10);
        bus.io_write(PORT_B, 1, 0, at(6));
        assert_eq!(read_count(&mut bus, at(100), 2), 5);
        assert!(!out2(&mut bus, at(100)));
        bus.io_write(PORT_B, 1, 1, at(200));
        assert!(!out2(&mut bus, at(205)));
        assert!(out2(&mut bus, at(206)));
    }

    #[test]
    fn latch_command_freezes_the_count() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 0x1000);
        bus.io_write(CONTROL_PORT, 1, 0x00, at(101));
        // A second latch before the read is ignored.
        bus.io_write(CONTROL_PORT, 1, 0x00, at(300));
        assert_eq!(read_count(&mut bus, at(500), 0), 0x1000 - 100);
        assert_eq!(read_count(&mut bus, at(500), 0), 0x1000 - 499);
    }

    #[test]
    fn read_back_reports_status_and_count() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 1000);
        bus.io_write(CONTROL_PORT, 1, 0xC2, at(11));
        // OUT high, count loaded, LSB then MSB, mode 2, binary.
        assert_eq!(bus.io_read(0x40, 1, at(20)), 0xB4);
        assert_eq!(read_count(&mut bus, at(20), 0), 990);
    }

    #[test]
    fn read_back_status_shows_null_count_until_the_count_is_loaded() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 1000);
        bus.io_write(CONTROL_PORT, 1, 0xE2, 0);
        assert_eq!(bus.io_read(0x40, 1, 0), 0xF4);
        bus.io_write(CONTROL_PORT, 1, 0xE2, at(1));
        assert_eq!(bus.io_read(0x40, 1, at(1)), 0xB4);
    }

    #[test]
    fn lohi_access_writes_two_bytes() {
        let mut bus = bus_with_pit();
        bus.io_write(CONTROL_PORT, 1, 0x30, 0);
        bus.io_write(0x40, 1, 0x34, 0);
        bus.io_write(CONTROL_PORT, 1, 0xE2, at(5));
        assert_ne!(bus.io_read(0x40, 1, at(5)) & 0x40, 0, "no count loaded yet");
        bus.io_write(0x40, 1, 0x12, at(10));
        assert_eq!(read_count(&mut bus, at(16), 0), 0x1234 - 5);
    }

    #[test]
    fn lsb_only_and_msb_only_access_move_one_byte() {
        let mut bus = bus_with_pit();
        bus.io_write(CONTROL_PORT, 1, 0x10, 0);
        bus.io_write(0x40, 1, 0x50, 0);
        assert_eq!(bus.io_read(0x40, 1, at(11)), 0x50 - 10);
        assert_eq!(
            bus.io_read(0x40, 1, at(11)),
            0x50 - 10,
            "every read is the LSB"
        );
        bus.io_write(CONTROL_PORT, 1, 0x20, at(20));
        bus.io_write(0x40, 1, 0x12, at(20));
        assert_eq!(bus.io_read(0x40, 1, at(21)), 0x12);
        assert_eq!(bus.io_read(0x40, 1, at(22)), 0x11);
    }

    #[test]
    fn bcd_counting_reads_decimal_digits() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x35, 0x1000);
        assert_eq!(read_count(&mut bus, at(11), 0), 0x0990);
        // A BCD count of 0 is 10000.
        program(&mut bus, at(100), 0x35, 0x0000);
        assert_eq!(read_count(&mut bus, at(101), 0), 0x0000);
        assert_eq!(read_count(&mut bus, at(102), 0), 0x9999);
    }

    #[test]
    fn refresh_bit_toggles_with_virtual_time() {
        let mut bus = bus_with_pit();
        let refresh = |bus: &mut Bus, now| bus.io_read(PORT_B, 1, now) & 0x10 != 0;
        assert!(!refresh(&mut bus, 0));
        assert!(!refresh(&mut bus, REFRESH_PERIOD_NS - 1));
        assert!(refresh(&mut bus, REFRESH_PERIOD_NS));
        assert!(!refresh(&mut bus, 2 * REFRESH_PERIOD_NS));
        assert!(refresh(&mut bus, 1001 * REFRESH_PERIOD_NS));
    }

    #[test]
    fn port_b_keeps_bits_0_to_3_and_shows_timer2_out() {
        let mut bus = bus_with_pit();
        bus.io_write(PORT_B, 1, 0xFF, 0);
        assert_eq!(bus.io_read(PORT_B, 1, 0), 0x0F);
        program(&mut bus, 0, 0xB6, 4);
        assert_eq!(bus.io_read(PORT_B, 1, at(1)), 0x2F);
    }

    #[test]
    fn control_word_register_reads_as_ones() {
        let mut bus = bus_with_pit();
        assert_eq!(bus.io_read(CONTROL_PORT, 1, 0), 0xFF);
    }

    #[test]
    fn late_timer_callback_still_delivers_the_missed_rising_edge() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 100);
        // Three periods pass before the machine looks: OUT is high again,
        // but the PIC must still see one rising edge.
        bus.run_timers(at(350));
        assert_eq!(rises(&mut bus), vec![0, at(350)]);
        assert!(bus.irq_level(0));
        assert_eq!(bus.next_deadline(), at(400));
    }

    #[test]
    fn irq0_reaches_the_cpu_through_the_pic() {
        use crate::pic::{Pic, PIC_PORTS};
        let mut bus = bus_with_pit();
        let pic = bus.add(Box::new(Pic::new()));
        for (first, last) in PIC_PORTS {
            bus.claim_ports(pic, first, last);
        }
        bus.add_irq_listener(pic);
        bus.set_pic(pic);
        // Mode 2's control word raises OUT, an edge the PIC latches; ICW1
        // resets the PIC's edge latches afterwards, as firmware does.
        program(&mut bus, 0, 0x34, 1193);
        for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
            bus.io_write(port, 1, value, 0);
        }
        run_until(&mut bus, at(1193));
        assert!(!bus.interrupt_pending());
        run_until(&mut bus, at(1194));
        assert_eq!(bus.acknowledge_interrupt(at(1194)), Some(0x20));
        bus.io_write(0x20, 1, 0x20, at(1194));
        assert!(!bus.interrupt_pending());
        run_until(&mut bus, at(1194 + 1193));
        assert!(bus.interrupt_pending());
    }

    #[test]
    fn state_round_trips() {
        let mut bus = bus_with_pit();
        program(&mut bus, 0, 0x34, 1000);
        bus.io_write(PORT_B, 1, 0x03, 0);
        program(&mut bus, 0, 0xB6, 7);
        bus.io_write(CONTROL_PORT, 1, 0x00, at(30));
        run_until(&mut bus, at(50));
        let saved = bus
            .find_device::<Pit>()
            .expect("the PIT is on the bus")
            .save_state();

        // A restored PIT carries on where the saved one was; a port access
        // (or a timer callback) re-arms its deadline.
        let mut other = bus_with_pit();
        let pit = other.find_device::<Pit>().expect("the PIT is on the bus");
        pit.restore_state(&saved).expect("a saved state restores");
        assert_eq!(pit.save_state(), saved);
        assert_eq!(read_count(&mut other, at(50), 0), 1000 - 29, "the latch");
        assert_eq!(other.next_deadline(), at(1000));
        assert_eq!(read_count(&mut other, at(60), 0), 1000 - 59);
        assert_eq!(
            read_count(&mut other, at(60), 2),
            2,
            "mode 3, count 7, clock 3 of 7"
        );

        let pit = other.find_device::<Pit>().expect("the PIT is on the bus");
        let before = pit.save_state();
        let mut garbage = vec![serde_json::json!({}), serde_json::json!([1, 2, 3])];
        for (path, value) in [
            ("/version", serde_json::json!(2)),
            ("/port_b", serde_json::json!(0x13)),
            ("/port_b", serde_json::json!(0x00)),
            ("/counters/0/mode_bits", serde_json::json!(8)),
            ("/counters/0/count/n", serde_json::json!(0)),
            ("/counters/0/count/base_e", serde_json::json!(u64::MAX)),
            ("/synced_tick", serde_json::json!(u64::MAX)),
            ("/counters/2/count_register", serde_json::json!(70000)),
            ("/counters/1/access", serde_json::json!("Both")),
        ] {
            let mut bad = before.clone();
            if let Some(slot) = bad.pointer_mut(path) {
                *slot = value;
            }
            assert_ne!(bad, before, "{path} exists");
            garbage.push(bad);
        }
        for state in &garbage {
            assert!(pit.restore_state(state).is_err(), "{state}");
            assert_eq!(pit.save_state(), before, "a failed restore changes nothing");
        }
    }

    const FUZZ_PORTS: [u16; 5] = [0x40, 0x41, 0x42, 0x43, PORT_B];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_port_sequences_never_panic(
            ops in proptest::collection::vec(
                (0..FUZZ_PORTS.len(), any::<u8>(), any::<bool>(), prop_oneof![Just(1u8), Just(2), Just(4)],
                 prop_oneof![0u64..2_000, 0u64..200_000, 0u64..(1 << 40)]),
                0..64,
            )
        ) {
            let mut bus = bus_with_pit();
            let mut now = 0u64;
            for (port, value, write, size, advance) in ops {
                now += advance;
                let port = FUZZ_PORTS[port];
                if write {
                    bus.io_write(port, size, value as u32 * 0x0101_0101, now);
                } else {
                    bus.io_read(port, size, now);
                }
                bus.run_timers(now);
                prop_assert!(bus.next_deadline() > now, "a callback is never due in the past");
            }
            let pit = bus.find_device::<Pit>().expect("the PIT is on the bus");
            let saved = pit.save_state();
            prop_assert!(Pit::new().restore_state(&saved).is_ok());
        }
    }
}
