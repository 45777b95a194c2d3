//! The xAPIC local APIC (SDM Vol. 3A chapter 10) of our single CPU: the
//! register page at 0xFEE00000 (10.4.1, Table 10-1), interrupt acceptance
//! through IRR, ISR and TMR with task and processor priority (10.8), EOI
//! (10.8.5), the local vector table (10.5.1), the error status register
//! (10.5.3), the timer (10.5.4), self-IPIs through the ICR (10.6.1), and the
//! spurious-interrupt register's software enable (10.4.7.2, 10.9).
//!
//! Where the interrupts come from: the IOAPIC's messages on the APIC bus
//! ([`Device::apic_message`]), the timer, self-IPIs, and the LINT0/LINT1
//! pins. The bus wires the 8259A's INTR output to LINT0; with LINT0 in
//! ExtINT mode the APIC is a "virtual wire" (MP spec 1.4, 3.6.2.2) and the
//! CPU's acknowledge goes on to the PIC for the vector
//! ([`Acknowledge::ExtInt`]).
//!
//! Choices this model makes, and why:
//! - The timer runs from a virtual bus clock of 100 MHz ([`BUS_CLOCK_NS`]
//!   = 10 ns per count before the divider). The SDM leaves the frequency to
//!   the part; a fixed one keeps runs deterministic.
//! - After reset LINT0 reads as ExtINT (masked, like every LVT entry of a
//!   software-disabled APIC). A BIOS would program this virtual wire
//!   (MP spec 3.6.2.2; QEMU's reset programs it for the boot CPU), and a
//!   kernel loaded directly expects the PIC to reach the CPU. While the APIC
//!   is software-disabled, ExtINT on LINT0 passes in spite of the forced
//!   mask; once software enables the APIC, it must unmask LINT0 itself.
//! - Registers are 32 bits at 16-byte strides; the SDM guarantees nothing
//!   for other access widths (10.4.1), so they read 0 and writes are
//!   ignored.
//! - One CPU: INIT, SIPI, SMI and IPIs to other APIC IDs go nowhere. The
//!   APR (absent on Pentium 4 and Xeon, Table 10-1 note) and the remote
//!   read register read 0. The thermal and performance-counter LVT entries
//!   hold what is written but never fire. Timer mode TSC-deadline is not
//!   offered (the version register and CPUID do not announce it).
//! - The IA32_APIC_BASE MSR (global enable, relocation) lives in the CPU;
//!   this device is always at [`LAPIC_BASE`].

use std::any::Any;

use ringside_core::bus::{
    Acknowledge, ApicMessage, DeliveryMode, Device, DeviceCtx, InterruptOutput, StateError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The physical address of the register page (SDM Vol. 3A 10.4.1).
pub const LAPIC_BASE: u32 = 0xFEE0_0000;
/// The register page is 4 KiB.
pub const LAPIC_SIZE: u32 = 0x1000;

/// Length of one bus-clock tick: the timer counts at 100 MHz before the
/// divide configuration divides it further.
pub const BUS_CLOCK_NS: u64 = 10;

// Register offsets in the page (SDM Vol. 3A Table 10-1).
const REG_ID: u32 = 0x020;
const REG_VERSION: u32 = 0x030;
const REG_TPR: u32 = 0x080;
const REG_APR: u32 = 0x090;
const REG_PPR: u32 = 0x0A0;
const REG_EOI: u32 = 0x0B0;
const REG_RRD: u32 = 0x0C0;
const REG_LDR: u32 = 0x0D0;
const REG_DFR: u32 = 0x0E0;
const REG_SVR: u32 = 0x0F0;
const REG_ISR: u32 = 0x100;
const REG_TMR: u32 = 0x180;
const REG_IRR: u32 = 0x200;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

/// Version 0x14 (an integrated xAPIC), six LVT entries (max LVT = 5), no
/// EOI-broadcast suppression (SDM Vol. 3A 10.4.8).
const VERSION: u32 = 0x0005_0014;

/// The writable bits of the ID register: an 8-bit xAPIC ID.
const ID_MASK: u32 = 0xFF00_0000;
const LDR_MASK: u32 = 0xFF00_0000;
/// DFR bits 31:28 hold the model; bits 27:0 read as ones (10.6.2.2).
const DFR_MODEL_MASK: u32 = 0xF000_0000;
const DFR_FLAT: u32 = 0xF;
const DFR_CLUSTER: u32 = 0x0;

/// SVR: spurious vector, APIC software enable, focus processor checking
/// (SDM Vol. 3A Figure 10-23).
const SVR_ENABLE: u32 = 1 << 8;
const SVR_WRITABLE: u32 = 0x3FF;

// The LVT, in register order (0x320 + 0x10 * index; Figure 10-8).
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
const LVT_ENTRIES: usize = 6;

const LVT_ACTIVE_LOW: u32 = 1 << 13;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL: u32 = 1 << 15;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;

/// Writable bits per LVT entry: timer (vector, mask, periodic), thermal and
/// performance counters (vector, delivery mode, mask), LINT0/LINT1 (also
/// polarity and trigger mode), error (vector, mask).
const LVT_WRITABLE: [u32; LVT_ENTRIES] = [0x300FF, 0x107FF, 0x107FF, 0x1A7FF, 0x1A7FF, 0x100FF];

/// LINT0 after reset: the virtual wire to the 8259A, masked because the
/// APIC starts software-disabled (see the module doc).
const LINT0_RESET: u32 = LVT_MASKED | (DM_EXTINT << 8);

// Delivery-mode encodings of LVT entries and the ICR (Figures 10-8, 10-12).
const DM_FIXED: u32 = 0;
const DM_LOWEST_PRIORITY: u32 = 1;
const DM_NMI: u32 = 4;
const DM_EXTINT: u32 = 7;

// Error status bits this model can set (SDM Vol. 3A Figure 10-9).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER_ADDRESS: u32 = 1 << 7;
const ESR_BITS: u32 =
    ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER_ADDRESS;

// ICR fields (SDM Vol. 3A Figure 10-12). Delivery status (bit 12) always
// reads 0: a self-IPI is accepted at once.
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;
const ICR_HIGH_WRITABLE: u32 = 0xFF00_0000;
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_SHORTHAND_NONE: u32 = 0;
const ICR_SHORTHAND_SELF: u32 = 1;
const ICR_SHORTHAND_ALL_INCLUDING_SELF: u32 = 2;

/// Divide configuration: bits 0, 1 and 3 (SDM Vol. 3A Figure 10-10).
const DIVIDE_WRITABLE: u32 = 0b1011;

/// Vectors 0-15 are reserved for exceptions; the APIC refuses them
/// (SDM Vol. 3A 10.5.2).
const FIRST_LEGAL_VECTOR: u8 = 16;

/// A 256-bit vector set laid out as the ISR, TMR and IRR are: eight 32-bit
/// registers, vector v at bit v % 32 of register v / 32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn insert(&mut self, v: u8) {
        self.0[v as usize / 32] |= 1 << (v % 32);
    }

    fn remove(&mut self, v: u8) {
        self.0[v as usize / 32] &= !(1 << (v % 32));
    }

    fn contains(&self, v: u8) -> bool {
        self.0[v as usize / 32] & (1 << (v % 32)) != 0
    }

    /// The highest vector in the set: the one with the highest priority.
    fn highest(&self) -> Option<u8> {
        (0..8usize).rev().find_map(|i| {
            let word = self.0[i];
            (word != 0).then(|| (i * 32 + 31 - word.leading_zeros() as usize) as u8)
        })
    }

    /// Register `index` (0-7) of the set, as the guest reads it.
    fn register(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }

    /// No reserved vector (0-15) can be in a set the APIC built.
    fn holds_only_legal_vectors(&self) -> bool {
        self.0[0] & 0xFFFF == 0
    }
}

/// The register state (what a saved state holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LapicRegs {
    id: u32,
    tpr: u32,
    ldr: u32,
    /// Only the model bits (31:28); the rest read as ones.
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// The ESR as the guest reads it: errors latched by the last ESR write.
    esr: u32,
    /// Errors seen since the last ESR write, not yet visible.
    esr_pending: u32,
    lvt: [u32; LVT_ENTRIES],
    icr_low: u32,
    icr_high: u32,
    timer_initial: u32,
    timer_divide: u32,
    /// The timer counted `timer_base_count` at virtual time `timer_base_ns`
    /// and has counted down since; 0 means stopped.
    timer_base_ns: u64,
    timer_base_count: u32,
    /// When the count next reaches 0 (None while stopped).
    timer_next_expiry: Option<u64>,
    /// The input level on LINT0 and LINT1, before polarity.
    lint_level: [bool; 2],
    nmi_pending: bool,
    /// An ExtINT message arrived: the PIC supplies the vector.
    extint_pending: bool,
}

impl Default for LapicRegs {
    /// The power-up state (SDM Vol. 3A 10.4.7.1), with LINT0 as the
    /// virtual wire.
    fn default() -> Self {
        let mut lvt = [LVT_MASKED; LVT_ENTRIES];
        lvt[LVT_LINT0] = LINT0_RESET;
        LapicRegs {
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: DFR_MODEL_MASK,
            svr: 0xFF,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            lvt,
            icr_low: 0,
            icr_high: 0,
            timer_initial: 0,
            timer_divide: 0,
            timer_base_ns: 0,
            timer_base_count: 0,
            timer_next_expiry: None,
            lint_level: [false; 2],
            nmi_pending: false,
            extint_pending: false,
        }
    }
}

impl LapicRegs {
    /// Reasons a saved state could not have come from this model.
    fn check(&self) -> Result<(), String> {
        let fields = [
            ("ID", self.id, ID_MASK),
            ("TPR", self.tpr, 0xFF),
            ("LDR", self.ldr, LDR_MASK),
            ("DFR", self.dfr, DFR_MODEL_MASK),
            ("SVR", self.svr, SVR_WRITABLE),
            ("ESR", self.esr, ESR_BITS),
            ("pending ESR", self.esr_pending, ESR_BITS),
            ("ICR low", self.icr_low, ICR_LOW_WRITABLE),
            ("ICR high", self.icr_high, ICR_HIGH_WRITABLE),
            ("divide configuration", self.timer_divide, DIVIDE_WRITABLE),
        ];
        for (name, value, allowed) in fields {
            if value & !allowed != 0 {
                return Err(format!("{name} {value:#x} sets reserved bits"));
            }
        }
        for (i, (&entry, &writable)) in self.lvt.iter().zip(&LVT_WRITABLE).enumerate() {
            let remote_irr = if i == LVT_LINT0 || i == LVT_LINT1 {
                LVT_REMOTE_IRR
            } else {
                0
            };
            if entry & !(writable | remote_irr) != 0 {
                return Err(format!("LVT entry {i} {entry:#x} sets reserved bits"));
            }
            if self.svr & SVR_ENABLE == 0 && entry & LVT_MASKED == 0 {
                return Err(format!("LVT entry {i} unmasked while software-disabled"));
            }
        }
        for (name, set) in [("ISR", self.isr), ("TMR", self.tmr), ("IRR", self.irr)] {
            if !set.holds_only_legal_vectors() {
                return Err(format!("{name} holds a reserved vector"));
            }
        }
        if self.timer_base_count > self.timer_initial {
            return Err("timer count above its initial count".into());
        }
        if self.timer_next_expiry.is_some() != (self.timer_base_count > 0) {
            return Err("timer expiry does not match its count".into());
        }
        Ok(())
    }
}

/// The local APIC of the one CPU.
pub struct LocalApic {
    regs: LapicRegs,
}

impl Default for LocalApic {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalApic {
    /// A local APIC with APIC ID 0, in its power-up state.
    pub fn new() -> LocalApic {
        LocalApic {
            regs: LapicRegs::default(),
        }
    }

    /// Take a pending NMI (from an NMI message, a self-IPI or LINT0/LINT1
    /// in NMI mode); the CPU delivers it through vector 2.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.regs.nmi_pending)
    }

    /// When the timer next expires. A restored state cannot reach the bus's
    /// timer list; the machine re-arms it from this.
    pub fn timer_deadline(&self) -> Option<u64> {
        self.regs.timer_next_expiry
    }

    fn software_enabled(&self) -> bool {
        self.regs.svr & SVR_ENABLE != 0
    }

    fn id(&self) -> u8 {
        (self.regs.id >> 24) as u8
    }

    /// PPR (SDM Vol. 3A 10.8.3.1): the task priority, or the class of the
    /// highest in-service vector when that is higher.
    fn ppr(&self) -> u32 {
        let isrv = self.regs.isr.highest().unwrap_or(0) as u32;
        if self.regs.tpr >> 4 >= isrv >> 4 {
            self.regs.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The IRR vector the CPU should take now: the highest one, when its
    /// priority class is above the processor priority class (10.8.3).
    fn deliverable_vector(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let v = self.regs.irr.highest()?;
        (u32::from(v) >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// Whether this APIC is among the destinations of a message or IPI
    /// (SDM Vol. 3A 10.6.2): its ID or the broadcast ID 0xFF in physical
    /// mode; in logical mode its LDR bit under the flat or cluster model.
    fn accepts_destination(&self, destination: u8, logical: bool) -> bool {
        if !logical {
            return destination == 0xFF || destination == self.id();
        }
        let ldr = (self.regs.ldr >> 24) as u8;
        match self.regs.dfr >> 28 {
            DFR_FLAT => ldr & destination != 0,
            DFR_CLUSTER => {
                let cluster = destination >> 4;
                (cluster == ldr >> 4 || cluster == 0xF) && ldr & destination & 0x0F != 0
            }
            _ => false,
        }
    }

    /// Accept a Fixed interrupt into the IRR. The TMR bit records the
    /// trigger mode, so that the EOI knows to tell the IOAPIC (10.8.4).
    /// Returns whether the vector was accepted.
    fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        // A software-disabled APIC takes no fixed interrupts (10.4.7.2).
        if !self.software_enabled() {
            return false;
        }
        if vector < FIRST_LEGAL_VECTOR {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.regs.irr.insert(vector);
        if level_triggered {
            self.regs.tmr.insert(vector);
        } else {
            self.regs.tmr.remove(vector);
        }
        true
    }

    /// Note an error for the ESR; a newly seen error raises the error LVT
    /// interrupt (SDM Vol. 3A 10.5.3).
    fn record_error(&mut self, bit: u32) {
        let new = self.regs.esr_pending & bit == 0;
        self.regs.esr_pending |= bit;
        let lvt = self.regs.lvt[LVT_ERROR];
        if !new || lvt & LVT_MASKED != 0 || !self.software_enabled() {
            return;
        }
        let vector = lvt as u8;
        if vector < FIRST_LEGAL_VECTOR {
            // Delivering it would be another error; note that one only, so
            // a bad error vector cannot loop.
            self.regs.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        } else {
            self.regs.irr.insert(vector);
            self.regs.tmr.remove(vector);
        }
    }

    /// LINT pin `pin` is asserted: its input level, through the polarity
    /// bit of its LVT entry.
    fn lint_asserted(&self, pin: usize) -> bool {
        let active_low = self.regs.lvt[LVT_LINT0 + pin] & LVT_ACTIVE_LOW != 0;
        self.regs.lint_level[pin] != active_low
    }

    /// A LINT pin in ExtINT mode makes the APIC a virtual wire for the PIC.
    /// The forced mask of a software-disabled APIC does not cut the wire.
    fn virtual_wire_active(&self) -> bool {
        (0..2).any(|pin| {
            let lvt = self.regs.lvt[LVT_LINT0 + pin];
            delivery_mode(lvt) == DM_EXTINT
                && (lvt & LVT_MASKED == 0 || !self.software_enabled())
                && self.lint_asserted(pin)
        })
    }

    /// A level-triggered Fixed LINT pin delivers while it is asserted and
    /// its Remote IRR is clear; the EOI clears Remote IRR (10.5.1).
    fn service_level_lint(&mut self, pin: usize) {
        let lvt = self.regs.lvt[LVT_LINT0 + pin];
        let waiting = delivery_mode(lvt) == DM_FIXED
            && lvt & (LVT_LEVEL | LVT_MASKED | LVT_REMOTE_IRR) == LVT_LEVEL
            && self.lint_asserted(pin);
        if waiting && self.accept_interrupt(lvt as u8, true) {
            self.regs.lvt[LVT_LINT0 + pin] |= LVT_REMOTE_IRR;
        }
    }

    /// EOI (SDM Vol. 3A 10.8.5): retire the highest in-service vector, and
    /// tell the IOAPICs when it was level-triggered.
    fn end_of_interrupt(&mut self, ctx: &mut DeviceCtx) {
        let Some(v) = self.regs.isr.highest() else {
            return;
        };
        self.regs.isr.remove(v);
        if self.regs.tmr.contains(v) {
            ctx.broadcast_eoi(v);
        }
        for pin in 0..2 {
            let lvt = &mut self.regs.lvt[LVT_LINT0 + pin];
            if *lvt & LVT_REMOTE_IRR != 0 && *lvt as u8 == v {
                *lvt &= !LVT_REMOTE_IRR;
                self.service_level_lint(pin);
            }
        }
    }

    /// Send the IPI the ICR describes (SDM Vol. 3A 10.6.1). With one CPU
    /// only the IPIs that reach this APIC do anything.
    fn send_ipi(&mut self) {
        let icr = self.regs.icr_low;
        let destination = (self.regs.icr_high >> 24) as u8;
        let to_self = match (icr >> 18) & 3 {
            ICR_SHORTHAND_NONE => self.accepts_destination(destination, icr & ICR_LOGICAL != 0),
            ICR_SHORTHAND_SELF | ICR_SHORTHAND_ALL_INCLUDING_SELF => true,
            _ => false,
        };
        let vector = icr as u8;
        match delivery_mode(icr) {
            DM_FIXED | DM_LOWEST_PRIORITY if vector < FIRST_LEGAL_VECTOR => {
                self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            }
            // IPIs are edge-triggered: the trigger bit only matters for an
            // INIT level de-assert.
            DM_FIXED | DM_LOWEST_PRIORITY if to_self => {
                self.accept_interrupt(vector, false);
            }
            DM_NMI if to_self => self.regs.nmi_pending = true,
            _ => {}
        }
    }

    /// Nanoseconds per timer count under the current divide configuration.
    fn ns_per_count(&self) -> u64 {
        let d = self.regs.timer_divide;
        let encoding = (d & 0b11) | ((d >> 1) & 0b100);
        // Encodings 0-6 divide by 2..128; 7 (0b1011) divides by 1.
        BUS_CLOCK_NS << ((encoding + 1) & 7)
    }

    fn timer_periodic(&self) -> bool {
        self.regs.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC != 0
    }

    /// The current count (SDM Vol. 3A 10.5.4), a function of virtual time:
    /// in periodic mode the count reloads from the initial count on
    /// reaching 0; in one-shot mode it stays at 0.
    fn current_count(&self, now_ns: u64) -> u32 {
        let base = u64::from(self.regs.timer_base_count);
        if base == 0 {
            return 0;
        }
        let elapsed = now_ns.saturating_sub(self.regs.timer_base_ns) / self.ns_per_count();
        let initial = u64::from(self.regs.timer_initial);
        if elapsed < base {
            (base - elapsed) as u32
        } else if self.timer_periodic() && initial > 0 {
            (initial - (elapsed - base) % initial) as u32
        } else {
            0
        }
    }

    /// Raise the timer interrupt for an expiry at or before `now_ns` that
    /// has not been handled yet, and work out the next one. Several missed
    /// periods make one interrupt: the IRR holds one bit per vector.
    fn catch_up_timer(&mut self, now_ns: u64) {
        let Some(expiry) = self.regs.timer_next_expiry else {
            return;
        };
        if expiry > now_ns {
            return;
        }
        let lvt = self.regs.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept_interrupt(lvt as u8, false);
        }
        let period = u64::from(self.regs.timer_initial) * self.ns_per_count();
        if self.timer_periodic() && period > 0 {
            let periods = (now_ns - expiry) / period + 1;
            self.regs.timer_next_expiry =
                Some(expiry.saturating_add(periods.saturating_mul(period)));
        } else {
            self.regs.timer_base_count = 0;
            self.regs.timer_next_expiry = None;
        }
    }

    /// Restart the count-down from the count at `now_ns`, so that a change
    /// of divider or mode applies from here on. The count only changes at
    /// whole counts, so the base moves back to the last one.
    fn rebase_timer(&mut self, now_ns: u64) {
        self.catch_up_timer(now_ns);
        if self.regs.timer_base_count == 0 {
            return;
        }
        let npc = self.ns_per_count();
        let elapsed = now_ns.saturating_sub(self.regs.timer_base_ns) / npc;
        let count = self.current_count(now_ns);
        self.regs.timer_base_ns = self
            .regs
            .timer_base_ns
            .saturating_add(elapsed.saturating_mul(npc));
        self.set_timer_count(count);
    }

    /// Count down from `count` starting at the current base time.
    fn set_timer_count(&mut self, count: u32) {
        self.regs.timer_base_count = count;
        self.regs.timer_next_expiry = (count > 0).then(|| {
            self.regs
                .timer_base_ns
                .saturating_add(u64::from(count) * self.ns_per_count())
        });
    }

    /// Tell the bus when the timer wants its next callback.
    fn schedule_timer(&self, ctx: &mut DeviceCtx) {
        match self.regs.timer_next_expiry {
            Some(t) => ctx.schedule(t),
            None => ctx.cancel_timer(),
        }
    }

    fn read_register(&mut self, offset: u32, now_ns: u64) -> u32 {
        let r = &self.regs;
        match offset {
            REG_ID => r.id,
            REG_VERSION => VERSION,
            REG_TPR => r.tpr,
            REG_APR | REG_RRD | REG_EOI => 0,
            REG_PPR => self.ppr(),
            REG_LDR => r.ldr,
            REG_DFR => r.dfr | !DFR_MODEL_MASK,
            REG_SVR => r.svr,
            0x100..=0x170 => r.isr.register(((offset - REG_ISR) >> 4) as usize),
            0x180..=0x1F0 => r.tmr.register(((offset - REG_TMR) >> 4) as usize),
            0x200..=0x270 => r.irr.register(((offset - REG_IRR) >> 4) as usize),
            REG_ESR => r.esr,
            REG_ICR_LOW => r.icr_low,
            REG_ICR_HIGH => r.icr_high,
            REG_LVT_TIMER..=REG_LVT_ERROR => r.lvt[((offset - REG_LVT_TIMER) >> 4) as usize],
            REG_TIMER_INITIAL => r.timer_initial,
            REG_TIMER_CURRENT => self.current_count(now_ns),
            REG_TIMER_DIVIDE => r.timer_divide,
            _ => {
                self.record_error(ESR_ILLEGAL_REGISTER_ADDRESS);
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32, ctx: &mut DeviceCtx) {
        let now = ctx.now_ns;
        match offset {
            REG_ID => self.regs.id = value & ID_MASK,
            REG_TPR => self.regs.tpr = value & 0xFF,
            REG_EOI => self.end_of_interrupt(ctx),
            REG_LDR => self.regs.ldr = value & LDR_MASK,
            REG_DFR => self.regs.dfr = value & DFR_MODEL_MASK,
            REG_SVR => {
                self.regs.svr = value & SVR_WRITABLE;
                // Software disable masks every LVT entry (10.4.7.2).
                if !self.software_enabled() {
                    for lvt in &mut self.regs.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            // The ESR is write-before-read: a write latches the errors seen
            // since the last one (10.5.3).
            REG_ESR => self.regs.esr = std::mem::take(&mut self.regs.esr_pending),
            REG_ICR_LOW => {
                self.regs.icr_low = value & ICR_LOW_WRITABLE;
                self.send_ipi();
            }
            REG_ICR_HIGH => self.regs.icr_high = value & ICR_HIGH_WRITABLE,
            REG_LVT_TIMER..=REG_LVT_ERROR => {
                let index = ((offset - REG_LVT_TIMER) >> 4) as usize;
                self.write_lvt(index, value, ctx);
            }
            REG_TIMER_INITIAL => {
                // A write restarts the count-down; 0 stops the timer.
                self.regs.timer_initial = value;
                self.regs.timer_base_ns = now;
                self.set_timer_count(value);
                self.schedule_timer(ctx);
            }
            REG_TIMER_DIVIDE => {
                self.rebase_timer(now);
                self.regs.timer_divide = value & DIVIDE_WRITABLE;
                self.set_timer_count(self.regs.timer_base_count);
                self.schedule_timer(ctx);
            }
            // Read-only registers ignore writes.
            REG_VERSION | REG_APR | REG_PPR | REG_RRD | REG_TIMER_CURRENT => {}
            0x100..=0x270 => {}
            _ => self.record_error(ESR_ILLEGAL_REGISTER_ADDRESS),
        }
    }

    fn write_lvt(&mut self, index: usize, value: u32, ctx: &mut DeviceCtx) {
        if index == LVT_TIMER {
            // A mode change applies from the current count on.
            self.rebase_timer(ctx.now_ns);
        }
        let old = self.regs.lvt[index];
        let mut new = (value & LVT_WRITABLE[index]) | (old & LVT_REMOTE_IRR);
        if !self.software_enabled() {
            new |= LVT_MASKED;
        }
        // Remote IRR means nothing for an edge-triggered pin.
        if new & LVT_LEVEL == 0 {
            new &= !LVT_REMOTE_IRR;
        }
        self.regs.lvt[index] = new;
        match index {
            LVT_TIMER => {
                self.set_timer_count(self.regs.timer_base_count);
                self.schedule_timer(ctx);
            }
            // Unmasking a level-triggered pin that is asserted delivers.
            LVT_LINT0 | LVT_LINT1 => self.service_level_lint(index - LVT_LINT0),
            _ => {}
        }
    }
}

/// The delivery-mode field (bits 10:8) of an LVT entry or the ICR.
fn delivery_mode(reg: u32) -> u32 {
    (reg >> 8) & 7
}

/// Only 32-bit accesses to the first dword of a 16-byte slot reach a
/// register (SDM Vol. 3A 10.4.1).
fn register_access(offset: u32, size: u8) -> bool {
    size == 4 && offset & 0xF == 0 && offset < LAPIC_SIZE
}

impl Device for LocalApic {
    fn name(&self) -> &'static str {
        "lapic"
    }

    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }

    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}

    fn mmio_read(&mut self, offset: u32, size: u8, ctx: &mut DeviceCtx) -> u32 {
        if !register_access(offset, size) {
            return 0;
        }
        self.read_register(offset, ctx.now_ns)
    }

    fn mmio_write(&mut self, offset: u32, size: u8, value: u32, ctx: &mut DeviceCtx) {
        if register_access(offset, size) {
            self.write_register(offset, value, ctx);
        }
    }

    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.catch_up_timer(ctx.now_ns);
        self.schedule_timer(ctx);
    }

    fn apic_message(&mut self, msg: &ApicMessage, _ctx: &mut DeviceCtx) {
        if !self.accepts_destination(msg.destination, msg.logical) {
            return;
        }
        match msg.mode {
            // With one CPU, lowest priority has a single candidate.
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.accept_interrupt(msg.vector, msg.level_triggered);
            }
            DeliveryMode::Nmi => self.regs.nmi_pending = true,
            DeliveryMode::ExtInt => self.regs.extint_pending = true,
            DeliveryMode::Smi | DeliveryMode::Init | DeliveryMode::StartUp => {}
        }
    }

    fn interrupt_output(&mut self) -> Option<&mut dyn InterruptOutput> {
        Some(self)
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.regs).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let regs: LapicRegs = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        regs.check().map_err(Self::state_error)?;
        self.regs = regs;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl InterruptOutput for LocalApic {
    fn take_nmi(&mut self) -> bool {
        LocalApic::take_nmi(self)
    }

    fn intr(&self) -> bool {
        self.regs.extint_pending
            || self.virtual_wire_active()
            || self.deliverable_vector().is_some()
    }

    /// The INTA cycle: ExtINT sources first (their vector comes from the
    /// PIC and is not subject to APIC priority), then the highest
    /// deliverable IRR vector moves to the ISR.
    fn acknowledge(&mut self, _ctx: &mut DeviceCtx) -> Acknowledge {
        if std::mem::take(&mut self.regs.extint_pending) || self.virtual_wire_active() {
            return Acknowledge::ExtInt;
        }
        let Some(v) = self.deliverable_vector() else {
            return Acknowledge::None;
        };
        self.regs.irr.remove(v);
        self.regs.isr.insert(v);
        Acknowledge::Vector(v)
    }

    /// LINT0 carries the PIC's INTR, LINT1 is free for an NMI source.
    /// Fixed and NMI pins act on a rising edge unless level-triggered.
    fn set_lint(&mut self, pin: u8, level: bool) {
        let pin = pin as usize;
        if pin > 1 {
            return;
        }
        let was = self.lint_asserted(pin);
        self.regs.lint_level[pin] = level;
        let rising = !was && self.lint_asserted(pin);
        let lvt = self.regs.lvt[LVT_LINT0 + pin];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        match delivery_mode(lvt) {
            DM_FIXED if lvt & LVT_LEVEL != 0 => self.service_level_lint(pin),
            DM_FIXED if rising => {
                self.accept_interrupt(lvt as u8, false);
            }
            // NMI is always edge-triggered (10.5.1).
            DM_NMI if rising => self.regs.nmi_pending = true,
            _ => {}
        }
    }
}

impl LocalApic {
    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("lapic", reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringside_core::bus::Bus;
    use ringside_core::memory::DeviceId;

    const REG_LVT_LINT0: u32 = REG_LVT_TIMER + 0x10 * LVT_LINT0 as u32;
    const REG_LVT_LINT1: u32 = REG_LVT_TIMER + 0x10 * LVT_LINT1 as u32;
    const PIC_PORT: u16 = 0x20;
    const SENDER_PORT: u16 = 0x30;

    /// Stands in for the 8259A: a write to its port raises INTR with that
    /// vector until the CPU acknowledges it.
    #[derive(Default)]
    struct TestPic {
        pending: Option<u8>,
    }

    impl Device for TestPic {
        fn name(&self) -> &'static str {
            "test-pic"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, _ctx: &mut DeviceCtx) {
            self.pending = (value != 0).then_some(value as u8);
        }
        fn interrupt_output(&mut self) -> Option<&mut dyn InterruptOutput> {
            Some(self)
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

    impl InterruptOutput for TestPic {
        fn intr(&self) -> bool {
            self.pending.is_some()
        }
        fn acknowledge(&mut self, _ctx: &mut DeviceCtx) -> Acknowledge {
            self.pending
                .take()
                .map_or(Acknowledge::None, Acknowledge::Vector)
        }
    }

    /// Stands in for the IOAPIC: a write to its port puts a message on the
    /// APIC bus (vector in bits 7:0, destination in bits 15:8, bit 16
    /// level-triggered, bit 17 logical, delivery mode in bits 26:24); it
    /// records the EOI broadcasts it hears.
    #[derive(Default)]
    struct MessageSender {
        eois: Vec<u8>,
    }

    impl Device for MessageSender {
        fn name(&self) -> &'static str {
            "message-sender"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
            let mode = match (value >> 24) & 7 {
                0 => DeliveryMode::Fixed,
                1 => DeliveryMode::LowestPriority,
                2 => DeliveryMode::Smi,
                3 => DeliveryMode::Nmi,
                4 => DeliveryMode::Init,
                5 => DeliveryMode::StartUp,
                _ => DeliveryMode::ExtInt,
            };
            ctx.send_apic_message(ApicMessage {
                vector: value as u8,
                mode,
                level_triggered: value & (1 << 16) != 0,
                destination: (value >> 8) as u8,
                logical: value & (1 << 17) != 0,
            });
        }
        fn eoi_broadcast(&mut self, vector: u8, _ctx: &mut DeviceCtx) {
            self.eois.push(vector);
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
        lapic: DeviceId,
    }

    impl Rig {
        /// A bus with the local APIC, the stand-in PIC on LINT0 and the
        /// stand-in IOAPIC.
        fn new() -> Rig {
            let mut bus = Bus::new();
            let lapic = bus.add(Box::new(LocalApic::new()));
            bus.set_lapic(lapic);
            let pic = bus.add(Box::new(TestPic::default()));
            bus.claim_ports(pic, PIC_PORT, PIC_PORT);
            bus.set_pic(pic);
            let sender = bus.add(Box::new(MessageSender::default()));
            bus.claim_ports(sender, SENDER_PORT, SENDER_PORT + 3);
            bus.add_eoi_listener(sender);
            Rig { bus, lapic }
        }

        /// The same, with the APIC software-enabled (spurious vector 0xFF).
        fn enabled() -> Rig {
            let mut rig = Rig::new();
            rig.write(REG_SVR, SVR_ENABLE | 0xFF, 0);
            rig
        }

        fn read(&mut self, reg: u32, now: u64) -> u32 {
            self.bus.mmio_read(self.lapic, reg, 4, now)
        }

        fn write(&mut self, reg: u32, value: u32, now: u64) {
            self.bus.mmio_write(self.lapic, reg, 4, value, now);
        }

        fn self_ipi(&mut self, vector: u8) {
            self.write(REG_ICR_LOW, (ICR_SHORTHAND_SELF << 18) | vector as u32, 0);
        }

        fn irr_has(&mut self, vector: u8) -> bool {
            let reg = REG_IRR + 0x10 * (vector as u32 / 32);
            self.read(reg, 0) & (1 << (vector % 32)) != 0
        }

        fn isr_has(&mut self, vector: u8) -> bool {
            let reg = REG_ISR + 0x10 * (vector as u32 / 32);
            self.read(reg, 0) & (1 << (vector % 32)) != 0
        }
    }

    #[test]
    fn timer_one_shot_fires_once_after_count_times_divide() {
        let mut rig = Rig::enabled();
        rig.write(REG_TIMER_DIVIDE, 0b0001, 0); // divide by 4: 40 ns a count
        rig.write(REG_LVT_TIMER, 0x40, 0);
        rig.write(REG_TIMER_INITIAL, 100, 1000);
        assert_eq!(rig.bus.next_deadline(), 1000 + 100 * 40);
        rig.bus.run_timers(4999);
        assert!(!rig.bus.interrupt_pending());
        rig.bus.run_timers(5000);
        assert!(rig.bus.interrupt_pending());
        assert_eq!(rig.bus.acknowledge_interrupt(5000), Some(0x40));
        rig.write(REG_EOI, 0, 5000);
        rig.bus.run_timers(1_000_000);
        assert!(!rig.bus.interrupt_pending(), "one shot fires once");
        assert_eq!(rig.bus.next_deadline(), u64::MAX);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 1_000_000), 0);
    }

    #[test]
    fn timer_periodic_reloads() {
        let mut rig = Rig::enabled();
        rig.write(REG_TIMER_DIVIDE, 0b1011, 0); // divide by 1: 10 ns a count
        rig.write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x50, 0);
        rig.write(REG_TIMER_INITIAL, 10, 0);
        for period in 1..=3u64 {
            let t = period * 100;
            assert_eq!(rig.bus.next_deadline(), t);
            rig.bus.run_timers(t);
            assert_eq!(rig.bus.acknowledge_interrupt(t), Some(0x50));
            rig.write(REG_EOI, 0, t);
            assert_eq!(rig.read(REG_TIMER_CURRENT, t), 10, "reloaded");
            assert_eq!(rig.read(REG_TIMER_CURRENT, t + 50), 5);
        }
    }

    #[test]
    fn current_count_counts_down_with_virtual_time() {
        let mut rig = Rig::enabled();
        rig.write(REG_TIMER_DIVIDE, 0b0000, 0); // divide by 2: 20 ns a count
        rig.write(REG_TIMER_INITIAL, 1000, 0);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 0), 1000);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 200), 990);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 219), 990);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 19_999), 1);
        assert_eq!(rig.read(REG_TIMER_CURRENT, 20_000), 0);
        rig.bus.run_timers(20_000);
        assert!(!rig.bus.interrupt_pending(), "the timer LVT is masked");
        assert_eq!(rig.read(REG_TIMER_INITIAL, 20_000), 1000);
    }

    #[test]
    fn divide_configuration_covers_all_eight_encodings() {
        let divisors = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        let mut rig = Rig::enabled();
        for (encoding, divisor) in divisors {
            rig.write(REG_TIMER_DIVIDE, encoding, 0);
            rig.write(REG_TIMER_INITIAL, 3, 0);
            assert_eq!(rig.bus.next_deadline(), 3 * BUS_CLOCK_NS * divisor);
            assert_eq!(rig.read(REG_TIMER_DIVIDE, 0), encoding);
        }
    }

    #[test]
    fn divide_change_keeps_the_current_count() {
        let mut rig = Rig::enabled();
        rig.write(REG_TIMER_DIVIDE, 0b1011, 0); // 10 ns a count
        rig.write(REG_TIMER_INITIAL, 100, 0);
        rig.write(REG_TIMER_DIVIDE, 0b0000, 300); // 20 ns a count from 70
        assert_eq!(rig.read(REG_TIMER_CURRENT, 300), 70);
        assert_eq!(rig.bus.next_deadline(), 300 + 70 * 20);
    }

    #[test]
    fn initial_count_zero_stops_the_timer() {
        let mut rig = Rig::enabled();
        rig.write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x50, 0);
        rig.write(REG_TIMER_INITIAL, 10, 0);
        rig.write(REG_TIMER_INITIAL, 0, 50);
        assert_eq!(rig.bus.next_deadline(), u64::MAX);
        rig.bus.run_timers(10_000);
        assert!(!rig.bus.interrupt_pending());
    }

    #[test]
    fn eoi_clears_highest_in_service_vector() {
        let mut rig = Rig::enabled();
        rig.self_ipi(0x30);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x30));
        rig.self_ipi(0x50);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x50));
        assert!(rig.isr_has(0x30) && rig.isr_has(0x50));
        rig.write(REG_EOI, 0, 0);
        assert!(rig.isr_has(0x30));
        assert!(!rig.isr_has(0x50));
        rig.write(REG_EOI, 0, 0);
        assert!(!rig.isr_has(0x30));
    }

    #[test]
    fn in_service_vector_blocks_its_own_class() {
        let mut rig = Rig::enabled();
        rig.self_ipi(0x58);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x58));
        assert_eq!(rig.read(REG_PPR, 0), 0x50);
        rig.self_ipi(0x5F);
        assert!(!rig.bus.interrupt_pending());
        rig.write(REG_EOI, 0, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x5F));
    }

    #[test]
    fn tpr_blocks_lower_priority_classes() {
        let mut rig = Rig::enabled();
        rig.write(REG_TPR, 0x50, 0);
        rig.self_ipi(0x45);
        rig.self_ipi(0x55);
        assert!(rig.irr_has(0x45) && rig.irr_has(0x55));
        assert!(
            !rig.bus.interrupt_pending(),
            "class 5 does not beat TPR 0x50"
        );
        rig.self_ipi(0x65);
        assert!(rig.bus.interrupt_pending());
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x65));
        assert_eq!(rig.read(REG_PPR, 0), 0x60);
        rig.write(REG_EOI, 0, 0);
        assert_eq!(rig.read(REG_PPR, 0), 0x50);
        rig.write(REG_TPR, 0x00, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x55));
        assert_eq!(
            rig.bus.acknowledge_interrupt(0),
            None,
            "0x45 is below 0x55's class"
        );
    }

    #[test]
    fn self_ipi_sets_irr() {
        let mut rig = Rig::enabled();
        rig.self_ipi(0x41);
        assert!(rig.irr_has(0x41));
        assert_eq!(rig.read(REG_ICR_LOW, 0) & (1 << 12), 0, "delivered at once");
        // Physical destination = own APIC ID.
        rig.write(REG_ID, 0x0300_0000, 0);
        rig.write(REG_ICR_HIGH, 0x0300_0000, 0);
        rig.write(REG_ICR_LOW, 0x42, 0);
        assert!(rig.irr_has(0x42));
        // Another APIC ID: nobody there.
        rig.write(REG_ICR_HIGH, 0x0500_0000, 0);
        rig.write(REG_ICR_LOW, 0x43, 0);
        assert!(!rig.irr_has(0x43));
        // All excluding self: nobody either.
        rig.write(REG_ICR_LOW, (3 << 18) | 0x44, 0);
        assert!(!rig.irr_has(0x44));
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x42));
    }

    #[test]
    fn illegal_ipi_vector_is_reported_in_esr_after_a_write() {
        let mut rig = Rig::enabled();
        rig.self_ipi(0x05);
        assert!(!rig.irr_has(0x05));
        assert_eq!(rig.read(REG_ESR, 0), 0, "not latched before a write");
        rig.write(REG_ESR, 0, 0);
        assert_eq!(rig.read(REG_ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
        rig.write(REG_ESR, 0, 0);
        assert_eq!(rig.read(REG_ESR, 0), 0);
    }

    #[test]
    fn error_lvt_raises_its_vector() {
        let mut rig = Rig::enabled();
        rig.write(REG_LVT_ERROR, 0xE0, 0);
        rig.read(0x040, 0); // a reserved register
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0xE0));
        rig.write(REG_ESR, 0, 0);
        assert_eq!(rig.read(REG_ESR, 0), ESR_ILLEGAL_REGISTER_ADDRESS);
    }

    #[test]
    fn level_triggered_message_sets_tmr_and_broadcasts_eoi() {
        let mut rig = Rig::enabled();
        rig.bus.io_write(SENDER_PORT, 4, (1 << 16) | 0x61, 0);
        rig.bus.io_write(SENDER_PORT, 4, 0x62, 0);
        assert_eq!(rig.read(REG_TMR + 0x30, 0), 1 << 1);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x62));
        rig.write(REG_EOI, 0, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x61));
        rig.write(REG_EOI, 0, 0);
        let sender = rig
            .bus
            .find_device::<MessageSender>()
            .map(|s| s.eois.clone());
        assert_eq!(
            sender,
            Some(vec![0x61]),
            "only the level vector is broadcast"
        );
    }

    #[test]
    fn messages_for_other_destinations_are_ignored() {
        let mut rig = Rig::enabled();
        rig.bus.io_write(SENDER_PORT, 4, 0x0500 | 0x61, 0); // physical ID 5
        rig.bus
            .io_write(SENDER_PORT, 4, (1 << 17) | 0x0100 | 0x62, 0); // logical, LDR 0
        assert!(!rig.bus.interrupt_pending());
        rig.write(REG_LDR, 0x0100_0000, 0);
        rig.bus
            .io_write(SENDER_PORT, 4, (1 << 17) | 0x0300 | 0x63, 0);
        rig.bus.io_write(SENDER_PORT, 4, 0xFF00 | 0x64, 0); // physical broadcast
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x64));
        rig.write(REG_EOI, 0, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x63));
    }

    #[test]
    fn nmi_message_is_taken_once() {
        let mut rig = Rig::new();
        rig.bus.io_write(SENDER_PORT, 4, 3 << 24, 0);
        let lapic = rig.bus.find_device::<LocalApic>();
        assert_eq!(
            lapic.map(|l| (l.take_nmi(), l.take_nmi())),
            Some((true, false))
        );
    }

    #[test]
    fn extint_message_asks_the_pic_for_the_vector() {
        let mut rig = Rig::enabled();
        rig.bus.io_write(PIC_PORT, 1, 0x21, 0);
        assert!(!rig.bus.interrupt_pending(), "LINT0 is masked");
        rig.bus.io_write(SENDER_PORT, 4, 7 << 24, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x21));
    }

    #[test]
    fn software_disabled_apic_still_passes_extint_on_lint0() {
        let mut rig = Rig::new();
        // Software disable forces the mask; ExtINT still gets through.
        rig.write(REG_LVT_LINT0, DM_EXTINT << 8, 0);
        assert_eq!(rig.read(REG_LVT_LINT0, 0), LVT_MASKED | (DM_EXTINT << 8));
        assert!(!rig.bus.interrupt_pending());
        rig.bus.io_write(PIC_PORT, 1, 0x08, 0);
        assert!(rig.bus.interrupt_pending());
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x08));
        assert!(!rig.bus.interrupt_pending());
        // Fixed interrupts are not taken while software-disabled.
        rig.self_ipi(0x41);
        assert!(!rig.irr_has(0x41));
        assert!(!rig.bus.interrupt_pending());
    }

    #[test]
    fn enabled_apic_passes_extint_only_with_lint0_unmasked() {
        let mut rig = Rig::enabled();
        rig.bus.io_write(PIC_PORT, 1, 0x08, 0);
        assert!(!rig.bus.interrupt_pending(), "LINT0 is still masked");
        rig.write(REG_LVT_LINT0, DM_EXTINT << 8, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x08));
    }

    #[test]
    fn level_triggered_lint0_waits_for_eoi() {
        let mut rig = Rig::enabled();
        rig.write(REG_LVT_LINT0, LVT_LEVEL | 0x60, 0);
        rig.bus.io_write(PIC_PORT, 1, 0x08, 0);
        assert_ne!(rig.read(REG_LVT_LINT0, 0) & LVT_REMOTE_IRR, 0);
        assert_eq!(rig.bus.acknowledge_interrupt(0), Some(0x60));
        assert!(!rig.bus.interrupt_pending(), "Remote IRR holds the pin");
        rig.write(REG_EOI, 0, 0);
        assert_eq!(
            rig.bus.acknowledge_interrupt(0),
            Some(0x60),
            "still asserted"
        );
        rig.bus.io_write(PIC_PORT, 1, 0, 0);
        rig.write(REG_EOI, 0, 0);
        assert_eq!(rig.read(REG_LVT_LINT0, 0) & LVT_REMOTE_IRR, 0);
        assert!(!rig.bus.interrupt_pending());
    }

    #[test]
    fn software_disable_masks_every_lvt_entry() {
        let mut rig = Rig::enabled();
        for reg in (REG_LVT_TIMER..=REG_LVT_ERROR).step_by(0x10) {
            rig.write(reg, 0x30, 0);
            assert_eq!(rig.read(reg, 0) & LVT_MASKED, 0);
        }
        rig.write(REG_SVR, 0xFF, 0);
        for reg in (REG_LVT_TIMER..=REG_LVT_ERROR).step_by(0x10) {
            assert_ne!(rig.read(reg, 0) & LVT_MASKED, 0);
        }
    }

    #[test]
    fn registers_read_their_reset_values() {
        let mut rig = Rig::new();
        assert_eq!(rig.read(REG_ID, 0), 0);
        assert_eq!(rig.read(REG_VERSION, 0), 0x0005_0014);
        assert_eq!(rig.read(REG_DFR, 0), u32::MAX);
        assert_eq!(rig.read(REG_SVR, 0), 0xFF);
        assert_eq!(rig.read(REG_LVT_TIMER, 0), LVT_MASKED);
        assert_eq!(
            rig.bus.mmio_read(rig.lapic, REG_VERSION, 1, 0),
            0,
            "not 32 bits"
        );
        assert_eq!(rig.bus.mmio_read(rig.lapic, REG_VERSION + 4, 4, 0), 0);
    }

    #[test]
    fn state_round_trips() {
        let mut rig = Rig::enabled();
        rig.write(REG_TPR, 0x20, 0);
        rig.self_ipi(0x70);
        rig.write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x80, 0);
        rig.write(REG_TIMER_INITIAL, 500, 100);
        let saved = rig.bus.find_device::<LocalApic>().map(|l| l.save_state());
        let saved = saved.unwrap_or(Value::Null);
        let mut copy = LocalApic::new();
        assert_eq!(copy.restore_state(&saved), Ok(()));
        let original = rig.bus.find_device::<LocalApic>().map(|l| l.regs.clone());
        assert_eq!(Some(copy.regs.clone()), original);
        assert_eq!(copy.timer_deadline(), Some(100 + 500 * 20));

        let before = copy.regs.clone();
        assert!(copy
            .restore_state(&serde_json::json!({"tpr": "x"}))
            .is_err());
        let mut bad = saved.clone();
        bad["tpr"] = 0x100.into();
        assert!(copy.restore_state(&bad).is_err());
        let mut bad = saved;
        bad["timer_next_expiry"] = Value::Null;
        assert!(copy.restore_state(&bad).is_err());
        assert_eq!(copy.regs, before, "a failed restore changes nothing");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read { offset: u32, size: u8 },
        Write { offset: u32, size: u8, value: u32 },
        Advance(u64),
        Acknowledge,
        Pic(u8),
        Message(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let registers = vec![
            REG_TPR,
            REG_EOI,
            REG_LDR,
            REG_DFR,
            REG_SVR,
            REG_ESR,
            REG_ICR_LOW,
            REG_ICR_HIGH,
            REG_LVT_TIMER,
            REG_LVT_LINT0,
            REG_LVT_LINT1,
            REG_LVT_ERROR,
            REG_TIMER_INITIAL,
            REG_TIMER_CURRENT,
            REG_TIMER_DIVIDE,
        ];
        let offset = prop_oneof![
            3 => proptest::sample::select(registers),
            2 => (0u32..0x100).prop_map(|r| r << 4),
            1 => 0u32..0x1010,
        ];
        let size = prop_oneof![6 => Just(4u8), 1 => Just(1u8), 1 => Just(2u8)];
        let value = prop_oneof![
            any::<u32>(),
            0u32..0x200,
            Just(SVR_ENABLE | 0xFF),
            (any::<u8>(), 0u32..8).prop_map(|(v, m)| (m << 8) | v as u32),
        ];
        prop_oneof![
            3 => (offset.clone(), size.clone()).prop_map(|(offset, size)| Op::Read { offset, size }),
            6 => (offset, size, value)
                .prop_map(|(offset, size, value)| Op::Write { offset, size, value }),
            2 => (0u64..5000).prop_map(Op::Advance),
            1 => Just(Op::Acknowledge),
            1 => any::<u8>().prop_map(Op::Pic),
            1 => any::<u32>().prop_map(Op::Message),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_access_sequences_never_panic(
            enabled in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..64),
        ) {
            let mut rig = if enabled { Rig::enabled() } else { Rig::new() };
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Read { offset, size } => {
                        rig.bus.mmio_read(rig.lapic, offset, size, now);
                    }
                    Op::Write { offset, size, value } => {
                        rig.bus.mmio_write(rig.lapic, offset, size, value, now);
                    }
                    Op::Advance(ns) => {
                        now += ns;
                        rig.bus.run_timers(now);
                    }
                    Op::Acknowledge => {
                        if rig.bus.interrupt_pending() {
                            rig.bus.acknowledge_interrupt(now);
                        }
                    }
                    Op::Pic(v) => rig.bus.io_write(PIC_PORT, 1, v as u32, now),
                    Op::Message(m) => rig.bus.io_write(SENDER_PORT, 4, m, now),
                }
            }
            // Every state the guest can reach is one a restore accepts.
            let saved = rig.bus.find_device::<LocalApic>().map(|l| l.save_state());
            let mut copy = LocalApic::new();
            prop_assert_eq!(copy.restore_state(&saved.unwrap_or(Value::Null)), Ok(()));
        }
    }
}
