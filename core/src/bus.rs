//! The port and MMIO buses (PDM in VirtualBox's terms): devices plug in
//! behind a small trait and never touch the CPU. A device sees port or MMIO
//! accesses, virtual-clock callbacks and interrupt-line changes, and acts on
//! the machine only through a [`DeviceCtx`]: it raises or lowers IRQ lines,
//! schedules its next timer callback, sends APIC-bus messages, or reports a
//! stop request or POST code.
//!
//! Interrupt routing (SDM Vol. 3A chapter 10, the 8259A and 82093AA data
//! sheets): devices drive 24 lines (ISA IRQ n is line n). The bus tells
//! every interrupt controller that listens (the PIC pair, the IOAPIC) when a
//! line changes. The CPU takes interrupts from the local APIC when one is
//! plugged in — it sees the PIC's INTR output on its LINT0 pin and returns
//! [`Acknowledge::ExtInt`] when the PIC must supply the vector — and from
//! the PIC directly otherwise.

use std::any::Any;
use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::cpu::boundary::{work, PendingWork};
use crate::memory::DeviceId;

/// Interrupt lines on the bus: global system interrupts 0-23.
pub const IRQ_LINES: u8 = 24;

/// Why a device asks the machine to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopRequest {
    /// A write of `code` to the debug-exit port: the run ends with this
    /// exit status.
    DebugExit(u8),
    /// The guest asked for a system reset.
    Reset,
    /// The guest powered the machine off (ACPI S5).
    PowerOff,
}

/// What devices tell the machine, collected while an instruction runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    pub stop: Option<StopRequest>,
    /// The last value written to a POST-code port.
    pub post_code: Option<u8>,
    /// A20 gate changes requested by the keyboard controller or port 0x92.
    pub a20: Option<bool>,
    /// A device that takes host input (UART, keyboard) found its receive
    /// buffer empty when the guest looked: the front-end may feed it the
    /// next byte of an input script now (DESIGN.md section 3, input).
    pub input_wanted: bool,
}

/// Delivery modes of an APIC-bus message (SDM Vol. 3A 10.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
}

/// An interrupt message on the APIC bus (IOAPIC redirection entry or IPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApicMessage {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub level_triggered: bool,
    /// Destination: an APIC ID (physical) or a logical destination mask.
    pub destination: u8,
    pub logical: bool,
}

/// What the CPU-facing controller answers to an interrupt acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acknowledge {
    Vector(u8),
    /// Virtual-wire mode: the 8259A supplies the vector (LINT0 in ExtINT).
    ExtInt,
    /// Nothing is pending any more.
    None,
}

/// The effects a device produced while handling one call.
#[derive(Debug, Default)]
pub struct DeviceEvents {
    /// Line changes and claims, carried out in the order they were made.
    lines: Vec<LineEvent>,
    timer: Option<Option<u64>>,
    apic: Vec<ApicMessage>,
    eoi: Vec<u8>,
}

/// What a device did to an interrupt line.
#[derive(Debug)]
enum LineEvent {
    Level(u8, bool),
    Claim(u8, bool),
}

/// What a device may do while handling an access or callback.
pub struct DeviceCtx<'a> {
    /// Virtual time now, in nanoseconds.
    pub now_ns: u64,
    pub signals: &'a mut Signals,
    events: &'a mut DeviceEvents,
}

impl<'a> DeviceCtx<'a> {
    pub fn new(now_ns: u64, signals: &'a mut Signals, events: &'a mut DeviceEvents) -> Self {
        DeviceCtx {
            now_ns,
            signals,
            events,
        }
    }

    /// Drive interrupt line `line` (0-23) high or low. Edge-triggered
    /// controllers see a rising edge when a low line goes high.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        if line < IRQ_LINES {
            self.events.lines.push(LineEvent::Level(line, level));
        }
    }

    /// Raise and lower a line: one edge for edge-triggered inputs.
    pub fn pulse_irq(&mut self, line: u8) {
        self.set_irq(line, true);
        self.set_irq(line, false);
    }

    /// Take interrupt line `line` over from every other device that drives
    /// it (`claimed`), or give it back. The HPET's legacy replacement route
    /// (IA-PC HPET 1.0a section 2.3.7) cuts the PIT off IRQ 0 and the RTC
    /// off IRQ 8 this way. While a device holds a line, the others' changes
    /// on it reach no listener: the bus lowers the line when the claim
    /// starts, remembers the level the others drive, and drives the line
    /// to it when the claim ends.
    pub fn claim_irq_line(&mut self, line: u8, claimed: bool) {
        if line < IRQ_LINES {
            self.events.lines.push(LineEvent::Claim(line, claimed));
        }
    }

    /// Ask for [`Device::timer`] at virtual time `deadline_ns` (replacing
    /// any earlier request of this device).
    pub fn schedule(&mut self, deadline_ns: u64) {
        self.events.timer = Some(Some(deadline_ns));
    }

    /// Cancel this device's pending timer callback.
    pub fn cancel_timer(&mut self) {
        self.events.timer = Some(None);
    }

    /// Put a message on the APIC bus (IOAPIC -> local APIC).
    pub fn send_apic_message(&mut self, msg: ApicMessage) {
        self.events.apic.push(msg);
    }

    /// Broadcast an EOI for a level-triggered `vector` (local APIC ->
    /// IOAPIC, which clears Remote IRR).
    pub fn broadcast_eoi(&mut self, vector: u8) {
        self.events.eoi.push(vector);
    }
}

/// Errors restoring a device's saved state.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{device}: bad saved state: {reason}")]
pub struct StateError {
    pub device: &'static str,
    pub reason: String,
}

impl StateError {
    pub fn new(device: &'static str, reason: impl std::fmt::Display) -> StateError {
        StateError {
            device,
            reason: reason.to_string(),
        }
    }
}

/// The role of a device that drives the CPU's interrupt input.
pub trait InterruptOutput {
    /// INTR: an interrupt is ready for the CPU.
    fn intr(&self) -> bool;
    /// The INTA cycle: the vector to deliver (and the controller's state
    /// moves the interrupt to in-service).
    fn acknowledge(&mut self, ctx: &mut DeviceCtx) -> Acknowledge;
    /// The local APIC's LINT0/LINT1 pins; controllers without them ignore it.
    fn set_lint(&mut self, _pin: u8, _level: bool) {}
    /// An NMI for the CPU (local APIC NMI delivery), taken once.
    fn take_nmi(&mut self) -> bool {
        false
    }
}

/// A device on the buses. Sizes are 1, 2 or 4 bytes. Devices never read
/// wall time: `ctx.now_ns` is virtual time.
pub trait Device: Send {
    fn name(&self) -> &'static str;
    /// Read from a claimed port. Unclaimed bits read as ones.
    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32;
    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx);
    /// Read from a claimed MMIO range; `offset` is from the range's start.
    fn mmio_read(&mut self, _offset: u32, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }
    fn mmio_write(&mut self, _offset: u32, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}
    /// The virtual clock reached the deadline set with `ctx.schedule`.
    fn timer(&mut self, _ctx: &mut DeviceCtx) {}
    /// Interrupt controllers registered with [`Bus::add_irq_listener`]: an
    /// interrupt line changed level.
    fn irq_line(&mut self, _line: u8, _level: bool, _ctx: &mut DeviceCtx) {}
    /// The local APIC: a message arrived on the APIC bus.
    fn apic_message(&mut self, _msg: &ApicMessage, _ctx: &mut DeviceCtx) {}
    /// The IOAPIC: an EOI for a level-triggered vector was broadcast.
    fn eoi_broadcast(&mut self, _vector: u8, _ctx: &mut DeviceCtx) {}
    /// The PIC and the local APIC drive the CPU's interrupt input.
    fn interrupt_output(&mut self) -> Option<&mut dyn InterruptOutput> {
        None
    }
    /// The device's state, for saved states (versioned by the device).
    fn save_state(&self) -> Value;
    /// Restore a state `save_state` produced. On error the device is
    /// unchanged.
    fn restore_state(&mut self, state: &Value) -> Result<(), StateError>;
    /// The system's RESET line was asserted (a guest's reset request or a
    /// triple fault, `Machine::reset`): go back to the reset state.
    /// `power_on` is the device's own `save_state` from when it was
    /// plugged in, so by default a reset restores that state: on a PC the
    /// reset state of these chips is their power-on state. A device a PC
    /// does not reset, or resets only in part (the battery-backed RTC),
    /// overrides this; it may drive its lines and schedule its timer
    /// through `ctx` (the bus has lowered every line and cancelled every
    /// timer before it calls this).
    fn reset(&mut self, power_on: &Value, _ctx: &mut DeviceCtx) -> Result<(), StateError> {
        self.restore_state(power_on)
    }
    /// Typed access for front-ends (e.g. to feed input to a UART).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The part of a saved state the bus holds itself rather than a device
/// (`core::snapshot`): interrupt line levels, each device's timer deadline
/// by device index, and the signals not yet taken.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusState {
    pub lines: [bool; IRQ_LINES as usize],
    /// The device index holding each line ([`DeviceCtx::claim_irq_line`]).
    #[serde(default)]
    pub claims: [Option<usize>; IRQ_LINES as usize],
    /// The level the other devices drive on each claimed line.
    #[serde(default)]
    pub unclaimed_levels: [bool; IRQ_LINES as usize],
    pub deadlines: Vec<Option<u64>>,
    pub signals: Signals,
}

/// The device list, the port map, interrupt routing and device timers.
pub struct Bus {
    devices: Vec<Box<dyn Device>>,
    /// Each device's state when it was plugged in: what `Device::reset`
    /// returns it to.
    power_on: Vec<Value>,
    /// Device index + 1 per port; 0 means nothing answers.
    ports: Box<[u16]>,
    pub signals: Signals,
    /// Current level of each interrupt line.
    lines: [bool; IRQ_LINES as usize],
    /// The device holding each line, and the level the others drive on it
    /// meanwhile ([`DeviceCtx::claim_irq_line`]).
    claims: [Option<usize>; IRQ_LINES as usize],
    unclaimed_levels: [bool; IRQ_LINES as usize],
    /// Interrupt controllers and the line-to-input map each sees.
    irq_listeners: Vec<(DeviceId, [u8; IRQ_LINES as usize])>,
    eoi_listeners: Vec<DeviceId>,
    pic: Option<DeviceId>,
    lapic: Option<DeviceId>,
    /// Each device's next timer deadline.
    deadlines: Vec<Option<u64>>,
    /// The earliest deadline of all, cached for the engines' fast check.
    earliest: u64,
    /// Counts device calls: interrupt-controller state changes only inside
    /// them, so INTR and NMI answers are cached per epoch (the engines ask
    /// at every block boundary).
    epoch: u64,
    intr_cache: Option<(u64, bool)>,
    nmi_checked: u64,
    /// Raised with `work::DEVICE` after every device call.
    pending: Arc<PendingWork>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus {
            devices: Vec::new(),
            power_on: Vec::new(),
            ports: vec![0u16; 65536].into_boxed_slice(),
            signals: Signals::default(),
            lines: [false; IRQ_LINES as usize],
            claims: [None; IRQ_LINES as usize],
            unclaimed_levels: [false; IRQ_LINES as usize],
            irq_listeners: Vec::new(),
            eoi_listeners: Vec::new(),
            pic: None,
            lapic: None,
            deadlines: Vec::new(),
            earliest: u64::MAX,
            epoch: 1,
            intr_cache: None,
            nmi_checked: 0,
            pending: Arc::default(),
        }
    }

    /// Raise `pending` (the machine's pending-work word) after device calls.
    pub fn share_pending_work(&mut self, pending: Arc<PendingWork>) {
        self.pending = pending;
    }

    /// Add a device; it answers nothing until ports or MMIO are claimed.
    pub fn add(&mut self, device: Box<dyn Device>) -> DeviceId {
        self.power_on.push(device.save_state());
        self.devices.push(device);
        self.deadlines.push(None);
        DeviceId(self.devices.len() - 1)
    }

    /// Route ports `first..=last` to `device`.
    pub fn claim_ports(&mut self, device: DeviceId, first: u16, last: u16) {
        for p in first..=last {
            self.ports[p as usize] = device.0 as u16 + 1;
        }
    }

    /// Tell `device` about every interrupt-line change (PIC, IOAPIC).
    pub fn add_irq_listener(&mut self, device: DeviceId) {
        self.add_irq_listener_mapped(device, std::array::from_fn(|i| i as u8));
    }

    /// Like `add_irq_listener`, with bus line n arriving at input `map[n]`:
    /// the PC wires ISA IRQ 0 (the PIT) to IOAPIC pin 2 (MP spec 1.4,
    /// interrupt source override).
    pub fn add_irq_listener_mapped(&mut self, device: DeviceId, map: [u8; IRQ_LINES as usize]) {
        self.irq_listeners.push((device, map));
    }

    /// Tell `device` about EOI broadcasts (IOAPIC).
    pub fn add_eoi_listener(&mut self, device: DeviceId) {
        self.eoi_listeners.push(device);
    }

    /// The 8259A pair: the CPU's interrupt source when no local APIC is.
    pub fn set_pic(&mut self, device: DeviceId) {
        self.pic = Some(device);
    }

    /// The local APIC: receives APIC-bus messages and drives the CPU.
    pub fn set_lapic(&mut self, device: DeviceId) {
        self.lapic = Some(device);
    }

    pub fn devices(&self) -> impl Iterator<Item = &dyn Device> {
        self.devices.iter().map(|d| d.as_ref())
    }

    pub fn device_mut(&mut self, id: DeviceId) -> Option<&mut (dyn Device + 'static)> {
        self.devices.get_mut(id.0).map(|d| d.as_mut())
    }

    /// The first device of type `T`, for front-ends and tests.
    pub fn find_device<T: 'static>(&mut self) -> Option<&mut T> {
        self.devices
            .iter_mut()
            .find_map(|d| d.as_any_mut().downcast_mut::<T>())
    }

    /// Run the timer callback of the first device of type `T` now: after the
    /// front-end hands a device host input outside any guest access, this
    /// lets it raise its interrupt at once.
    pub fn poke<T: 'static>(&mut self, now_ns: u64) {
        let found = self
            .devices
            .iter_mut()
            .position(|d| d.as_any_mut().downcast_mut::<T>().is_some());
        if let Some(d) = found {
            self.with_device(d, now_ns, |dev, ctx| dev.timer(ctx));
        }
    }

    /// The level of an interrupt line.
    pub fn irq_level(&self, line: u8) -> bool {
        self.lines.get(line as usize).copied().unwrap_or(false)
    }

    fn port_owner(&self, port: u16) -> Option<usize> {
        match self.ports[port as usize] {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// Call into device `d` with a fresh context, then carry out what it
    /// asked for (interrupt lines, timers, APIC messages).
    fn with_device<R>(
        &mut self,
        d: usize,
        now_ns: u64,
        f: impl FnOnce(&mut dyn Device, &mut DeviceCtx) -> R,
    ) -> R {
        self.epoch += 1;
        self.pending.raise(work::DEVICE);
        let mut events = DeviceEvents::default();
        let r = {
            let mut ctx = DeviceCtx::new(now_ns, &mut self.signals, &mut events);
            f(self.devices[d].as_mut(), &mut ctx)
        };
        self.apply(d, events, now_ns, 0);
        r
    }

    /// Carry out a device's events. Routing may make other devices produce
    /// events in turn; `depth` bounds the chain (a guest cannot make it
    /// recurse forever: a misprogrammed loop is cut off).
    fn apply(&mut self, d: usize, events: DeviceEvents, now_ns: u64, depth: u32) {
        if let Some(t) = events.timer {
            self.deadlines[d] = t;
            self.update_earliest();
        }
        if depth > 8 {
            return;
        }
        for event in events.lines {
            match event {
                LineEvent::Level(line, level) => match self.claims[line as usize] {
                    Some(holder) if holder != d => self.unclaimed_levels[line as usize] = level,
                    _ => self.drive_line(line, level, now_ns, depth),
                },
                LineEvent::Claim(line, true) if self.claims[line as usize].is_none() => {
                    self.claims[line as usize] = Some(d);
                    self.unclaimed_levels[line as usize] = self.lines[line as usize];
                    self.drive_line(line, false, now_ns, depth);
                }
                LineEvent::Claim(line, false) if self.claims[line as usize] == Some(d) => {
                    self.claims[line as usize] = None;
                    let level = self.unclaimed_levels[line as usize];
                    self.drive_line(line, level, now_ns, depth);
                }
                LineEvent::Claim(..) => {}
            }
        }
        for msg in events.apic {
            if let Some(l) = self.lapic {
                self.call(l.0, now_ns, depth, |dev, ctx| dev.apic_message(&msg, ctx));
            }
        }
        for vector in events.eoi {
            for l in self.eoi_listeners.clone() {
                self.call(l.0, now_ns, depth, |dev, ctx| {
                    dev.eoi_broadcast(vector, ctx)
                });
            }
        }
        self.update_lint0();
    }

    /// Set `line` to `level` and tell every interrupt controller.
    fn drive_line(&mut self, line: u8, level: bool, now_ns: u64, depth: u32) {
        self.lines[line as usize] = level;
        for (l, map) in self.irq_listeners.clone() {
            let input = map[line as usize];
            self.call(l.0, now_ns, depth, |dev, ctx| {
                dev.irq_line(input, level, ctx)
            });
        }
    }

    fn call(
        &mut self,
        d: usize,
        now_ns: u64,
        depth: u32,
        f: impl FnOnce(&mut dyn Device, &mut DeviceCtx),
    ) {
        self.epoch += 1;
        self.pending.raise(work::DEVICE);
        let mut events = DeviceEvents::default();
        {
            let mut ctx = DeviceCtx::new(now_ns, &mut self.signals, &mut events);
            f(self.devices[d].as_mut(), &mut ctx);
        }
        self.apply(d, events, now_ns, depth + 1);
    }

    /// The PIC's INTR output is wired to the local APIC's LINT0.
    fn update_lint0(&mut self) {
        let (Some(pic), Some(lapic)) = (self.pic, self.lapic) else {
            return;
        };
        let intr = self.devices[pic.0]
            .interrupt_output()
            .is_some_and(|o| o.intr());
        if let Some(o) = self.devices[lapic.0].interrupt_output() {
            o.set_lint(0, intr);
        }
    }

    /// An IN instruction. A multi-byte access to ports owned by different
    /// devices is split into byte accesses, as the ISA bus does.
    pub fn io_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        let owner = self.port_owner(port);
        let uniform = (1..size as u16).all(|i| self.port_owner(port.wrapping_add(i)) == owner);
        if uniform {
            let Some(d) = owner else {
                return mask(size);
            };
            return self.with_device(d, now_ns, |dev, ctx| dev.io_read(port, size, ctx))
                & mask(size);
        }
        (0..size as u16).fold(0, |acc, i| {
            acc | (self.io_read(port.wrapping_add(i), 1, now_ns) << (8 * i))
        })
    }

    /// An OUT instruction.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) {
        let owner = self.port_owner(port);
        let uniform = (1..size as u16).all(|i| self.port_owner(port.wrapping_add(i)) == owner);
        if uniform {
            if let Some(d) = owner {
                self.with_device(d, now_ns, |dev, ctx| {
                    dev.io_write(port, size, value & mask(size), ctx)
                });
            }
            return;
        }
        for i in 0..size as u16 {
            self.io_write(port.wrapping_add(i), 1, (value >> (8 * i)) & 0xFF, now_ns);
        }
    }

    pub fn mmio_read(&mut self, device: DeviceId, offset: u32, size: u8, now_ns: u64) -> u32 {
        if device.0 >= self.devices.len() {
            return mask(size);
        }
        self.with_device(device.0, now_ns, |dev, ctx| {
            dev.mmio_read(offset, size, ctx)
        }) & mask(size)
    }

    pub fn mmio_write(&mut self, device: DeviceId, offset: u32, size: u8, value: u32, now_ns: u64) {
        if device.0 < self.devices.len() {
            self.with_device(device.0, now_ns, |dev, ctx| {
                dev.mmio_write(offset, size, value & mask(size), ctx)
            });
        }
    }

    fn update_earliest(&mut self) {
        self.earliest = self
            .deadlines
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or(u64::MAX);
    }

    /// The earliest pending device deadline (u64::MAX when none).
    #[inline(always)]
    pub fn next_deadline(&self) -> u64 {
        self.earliest
    }

    /// Run the timer callbacks of every device whose deadline is at or
    /// before `now_ns`, in deadline order.
    pub fn run_timers(&mut self, now_ns: u64) {
        // Bounded: a device that keeps rescheduling into the past is called
        // at most a few times per step.
        for _ in 0..64 {
            let due = self
                .deadlines
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.filter(|&t| t <= now_ns).map(|t| (t, i)))
                .min();
            let Some((_, d)) = due else {
                return;
            };
            self.deadlines[d] = None;
            self.update_earliest();
            self.with_device(d, now_ns, |dev, ctx| dev.timer(ctx));
        }
    }

    /// INTR as the CPU sees it.
    pub fn interrupt_pending(&mut self) -> bool {
        if let Some((epoch, intr)) = self.intr_cache {
            if epoch == self.epoch {
                return intr;
            }
        }
        let intr = match self.lapic.or(self.pic) {
            Some(s) => self.devices[s.0]
                .interrupt_output()
                .is_some_and(|o| o.intr()),
            None => false,
        };
        self.intr_cache = Some((self.epoch, intr));
        intr
    }

    /// The interrupt acknowledge cycle: the vector to deliver, if any.
    pub fn acknowledge_interrupt(&mut self, now_ns: u64) -> Option<u8> {
        let src = self.lapic.or(self.pic)?;
        match self.inta(src, now_ns) {
            Acknowledge::Vector(v) => Some(v),
            Acknowledge::None => None,
            // Virtual wire: the 8259A supplies the vector.
            Acknowledge::ExtInt => match self.inta(self.pic?, now_ns) {
                Acknowledge::Vector(v) => Some(v),
                _ => None,
            },
        }
    }

    /// One INTA cycle at a controller.
    fn inta(&mut self, controller: DeviceId, now_ns: u64) -> Acknowledge {
        self.with_device(controller.0, now_ns, |dev, ctx| {
            dev.interrupt_output()
                .map_or(Acknowledge::None, |o| o.acknowledge(ctx))
        })
    }

    /// An NMI the CPU-facing controller delivers, taken once.
    pub fn take_nmi(&mut self) -> bool {
        let Some(l) = self.lapic else {
            return false;
        };
        // An NMI can only have arrived during a device call.
        if self.nmi_checked == self.epoch {
            return false;
        }
        self.nmi_checked = self.epoch;
        self.devices[l.0]
            .interrupt_output()
            .is_some_and(|o| o.take_nmi())
    }

    /// Whether a local APIC is plugged in (CPUID reports it).
    pub fn has_lapic(&self) -> bool {
        self.lapic.is_some()
    }

    /// Whether any device could ever interrupt the CPU (a PIC or LAPIC is
    /// plugged in). Without one, a HLT with IF = 1 waits forever.
    pub fn has_interrupt_controller(&self) -> bool {
        self.pic.is_some() || self.lapic.is_some()
    }

    /// The bus's own saved state (the devices save theirs).
    pub fn bus_state(&self) -> BusState {
        BusState {
            lines: self.lines,
            claims: self.claims,
            unclaimed_levels: self.unclaimed_levels,
            deadlines: self.deadlines.clone(),
            signals: self.signals.clone(),
        }
    }

    /// Take a saved bus state. Deadlines are matched to devices by index:
    /// the caller checks that the state was saved with as many devices as
    /// are plugged in (a device without a saved deadline gets none).
    pub fn restore_bus_state(&mut self, state: &BusState) {
        self.lines = state.lines;
        self.claims = state.claims;
        self.unclaimed_levels = state.unclaimed_levels;
        for (i, d) in self.deadlines.iter_mut().enumerate() {
            *d = state.deadlines.get(i).copied().flatten();
        }
        self.update_earliest();
        self.signals = state.signals.clone();
        // The controllers' state changed outside a device call: the cached
        // INTR and NMI answers are stale.
        self.epoch += 1;
        self.intr_cache = None;
        self.pending.raise(work::DEVICE);
    }

    /// Assert the RESET line of every device (`Machine::reset`): lines go
    /// low and claims on them end, timers are cancelled, requests not yet taken are dropped (the
    /// last POST code stays, as a POST card keeps showing it), and each
    /// device returns to its reset state. An error names the device whose
    /// power-on state did not restore, which only a device whose
    /// `restore_state` refuses its own `save_state` can cause.
    pub fn reset(&mut self, now_ns: u64) -> Result<(), StateError> {
        self.lines = [false; IRQ_LINES as usize];
        self.claims = [None; IRQ_LINES as usize];
        self.unclaimed_levels = [false; IRQ_LINES as usize];
        self.deadlines.iter_mut().for_each(|d| *d = None);
        self.update_earliest();
        self.signals = Signals {
            post_code: self.signals.post_code,
            ..Signals::default()
        };
        for d in 0..self.devices.len() {
            let power_on = self.power_on[d].clone();
            self.with_device(d, now_ns, |dev, ctx| dev.reset(&power_on, ctx))?;
        }
        self.epoch += 1;
        self.intr_cache = None;
        self.pending.raise(work::DEVICE);
        Ok(())
    }

    /// Every device's saved state, by device index.
    pub fn save_state(&self) -> Vec<(&'static str, Value)> {
        self.devices
            .iter()
            .map(|d| (d.name(), d.save_state()))
            .collect()
    }
}

fn mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Latch(u32);
    impl Device for Latch {
        fn name(&self) -> &'static str {
            "latch"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            self.0
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
            self.0 = value;
            ctx.signals.post_code = Some(value as u8);
            ctx.set_irq(3, value & 1 != 0);
            ctx.schedule(ctx.now_ns + 100);
        }
        fn timer(&mut self, ctx: &mut DeviceCtx) {
            self.0 = 0xEE;
            ctx.set_irq(3, false);
        }
        fn save_state(&self) -> Value {
            serde_json::json!({ "v": self.0 })
        }
        fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
            self.0 = state["v"]
                .as_u64()
                .ok_or_else(|| StateError::new("latch", "no v"))? as u32;
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    #[test]
    fn reset_restores_power_on_state_lowers_lines_and_cancels_timers() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Latch(7)));
        bus.claim_ports(id, 0x80, 0x80);
        bus.io_write(0x80, 1, 0x33, 0);
        bus.signals.stop = Some(StopRequest::Reset);
        assert!(bus.irq_level(3));
        assert_eq!(bus.next_deadline(), 100);
        bus.reset(50).unwrap();
        assert_eq!(
            bus.io_read(0x80, 1, 60),
            7,
            "the state it was plugged in with"
        );
        assert!(!bus.irq_level(3));
        assert_eq!(bus.next_deadline(), u64::MAX);
        assert_eq!(bus.signals.stop, None, "the request was served");
        assert_eq!(
            bus.signals.post_code,
            Some(0x33),
            "a POST card keeps showing"
        );
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let mut bus = Bus::new();
        assert_eq!(bus.io_read(0x1234, 2, 0), 0xFFFF);
    }

    #[test]
    fn claimed_port_reaches_its_device() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Latch(0)));
        bus.claim_ports(id, 0x80, 0x80);
        bus.io_write(0x80, 1, 0x1AB, 0);
        assert_eq!(bus.io_read(0x80, 1, 0), 0xAB);
        assert_eq!(bus.signals.post_code, Some(0xAB));
    }

    #[test]
    fn word_access_across_two_owners_is_split_into_bytes() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Latch(0x5A)));
        bus.claim_ports(id, 0x80, 0x80);
        assert_eq!(bus.io_read(0x80, 2, 0), 0xFF5A);
    }

    #[test]
    fn device_irq_lines_and_timers_are_carried_out() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(Latch(0)));
        bus.claim_ports(id, 0x80, 0x80);
        bus.io_write(0x80, 1, 1, 1000);
        assert!(bus.irq_level(3));
        assert_eq!(bus.next_deadline(), 1100);
        bus.run_timers(1050);
        assert!(bus.irq_level(3), "not due yet");
        bus.run_timers(1100);
        assert!(!bus.irq_level(3));
        assert_eq!(bus.next_deadline(), u64::MAX);
        assert_eq!(bus.io_read(0x80, 1, 0), 0xEE);
    }

    #[test]
    fn device_state_round_trips() {
        let mut a = Latch(0x42);
        let saved = a.save_state();
        a.0 = 0;
        a.restore_state(&saved).unwrap();
        assert_eq!(a.0, 0x42);
        assert!(a.restore_state(&serde_json::json!({})).is_err());
        assert_eq!(a.0, 0x42);
    }

    /// Drives line 3 (a write of 0 or 1) or claims it (0x100 | claimed).
    struct LineDevice;
    impl Device for LineDevice {
        fn name(&self) -> &'static str {
            "line-device"
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            0
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
            if value & 0x100 != 0 {
                ctx.claim_irq_line(3, value & 1 != 0);
            } else {
                ctx.set_irq(3, value & 1 != 0);
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

    #[test]
    fn claimed_line_hides_other_drivers_until_released() {
        let mut bus = Bus::new();
        let (old, new) = (0x10, 0x20);
        let id = bus.add(Box::new(LineDevice));
        bus.claim_ports(id, old, old + 1);
        let id = bus.add(Box::new(LineDevice));
        bus.claim_ports(id, new, new + 1);
        bus.io_write(old, 2, 1, 0);
        assert!(bus.irq_level(3));
        bus.io_write(new, 2, 0x101, 0);
        assert!(!bus.irq_level(3), "a claim starts with the line low");
        bus.io_write(old, 2, 0, 0);
        bus.io_write(old, 2, 1, 0);
        assert!(!bus.irq_level(3), "the old driver is cut off");
        bus.io_write(new, 2, 1, 0);
        assert!(bus.irq_level(3), "the holder drives it");
        bus.io_write(new, 2, 0, 0);
        bus.io_write(old, 2, 0x101, 0);
        assert!(!bus.irq_level(3), "only one holder at a time");
        let saved = bus.bus_state();
        bus.io_write(new, 2, 0x100, 0);
        assert!(bus.irq_level(3), "released: the old driver's level is back");
        bus.restore_bus_state(&saved);
        bus.io_write(old, 2, 0, 0);
        assert!(!bus.irq_level(3), "a restored claim still holds");
        bus.reset(0).unwrap();
        bus.io_write(old, 2, 1, 0);
        assert!(bus.irq_level(3), "reset ends the claim");
    }
}
