//! The port and MMIO buses (PDM in VirtualBox's terms): devices plug in
//! behind a small trait and never touch the CPU. A device sees port or MMIO
//! accesses and a [`DeviceCtx`] through which it reports what the machine
//! must act on (a stop request, a POST code).

use crate::memory::DeviceId;

/// Why a device asks the machine to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// A write of `code` to the debug-exit port: the run ends with this
    /// exit status.
    DebugExit(u8),
    /// The guest asked for a system reset.
    Reset,
}

/// What devices tell the machine, collected while an instruction runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    pub stop: Option<StopRequest>,
    /// The last value written to a POST-code port.
    pub post_code: Option<u8>,
}

/// What a device may do while handling an access.
pub struct DeviceCtx<'a> {
    /// Virtual time now, in nanoseconds.
    pub now_ns: u64,
    pub signals: &'a mut Signals,
}

/// A device on the buses. Sizes are 1, 2 or 4 bytes.
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
}

/// The device list and the port map.
pub struct Bus {
    devices: Vec<Box<dyn Device>>,
    /// Device index + 1 per port; 0 means nothing answers.
    ports: Box<[u16]>,
    pub signals: Signals,
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
            ports: vec![0u16; 65536].into_boxed_slice(),
            signals: Signals::default(),
        }
    }

    /// Add a device; it answers nothing until ports or MMIO are claimed.
    pub fn add(&mut self, device: Box<dyn Device>) -> DeviceId {
        self.devices.push(device);
        DeviceId(self.devices.len() - 1)
    }

    /// Route ports `first..=last` to `device`.
    pub fn claim_ports(&mut self, device: DeviceId, first: u16, last: u16) {
        for p in first..=last {
            self.ports[p as usize] = device.0 as u16 + 1;
        }
    }

    pub fn devices(&self) -> impl Iterator<Item = &dyn Device> {
        self.devices.iter().map(|d| d.as_ref())
    }

    /// Find a device by name and type, e.g. to read captured UART output.
    pub fn device_mut(&mut self, id: DeviceId) -> Option<&mut (dyn Device + 'static)> {
        self.devices.get_mut(id.0).map(|d| d.as_mut())
    }

    fn port_owner(&self, port: u16) -> Option<usize> {
        match self.ports[port as usize] {
            0 => None,
            n => Some(n as usize - 1),
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
            let mut ctx = DeviceCtx {
                now_ns,
                signals: &mut self.signals,
            };
            return self.devices[d].io_read(port, size, &mut ctx) & mask(size);
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
                let mut ctx = DeviceCtx {
                    now_ns,
                    signals: &mut self.signals,
                };
                self.devices[d].io_write(port, size, value & mask(size), &mut ctx);
            }
            return;
        }
        for i in 0..size as u16 {
            self.io_write(port.wrapping_add(i), 1, (value >> (8 * i)) & 0xFF, now_ns);
        }
    }

    pub fn mmio_read(&mut self, device: DeviceId, offset: u32, size: u8, now_ns: u64) -> u32 {
        let mut ctx = DeviceCtx {
            now_ns,
            signals: &mut self.signals,
        };
        match self.devices.get_mut(device.0) {
            Some(d) => d.mmio_read(offset, size, &mut ctx) & mask(size),
            None => mask(size),
        }
    }

    pub fn mmio_write(&mut self, device: DeviceId, offset: u32, size: u8, value: u32, now_ns: u64) {
        let mut ctx = DeviceCtx {
            now_ns,
            signals: &mut self.signals,
        };
        if let Some(d) = self.devices.get_mut(device.0) {
            d.mmio_write(offset, size, value & mask(size), &mut ctx);
        }
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
        }
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
}
