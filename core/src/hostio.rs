//! What passes between the machine and the host outside the guest's own
//! I/O: where a character device's output goes ([`Sink`], [`SharedBuffer`]),
//! how host input (a line typed into the debugger, a gdb `monitor` text,
//! an input script) reaches the device that receives it ([`HostInput`],
//! [`HostInputRoute`]), and when that device asks the host for more
//! ([`InputRequests`]).
//!
//! These live in core so that the debugger and the engines can hand input
//! to a guest and capture its output without depending on the device crate
//! (DESIGN.md section 2: devices -> core, debugger -> engines -> core).

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::Machine;

/// Where a character device's output goes.
pub type Sink = Box<dyn Write + Send>;

/// A sink that keeps everything written to it, for tests, captures and the
/// debugger's console pane. Clones share one buffer.
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// When a device that takes host input asks the host for the next byte
/// (it sets `Signals::input_wanted`, and the engine returns
/// `Exit::WaitingForInput`). Asking is invisible to the guest; what the
/// host then gives is not, so a device asks only at points that depend on
/// what the guest did and on virtual time, never on the wall clock: an
/// input script then reaches the guest at the same instructions on every
/// run (DESIGN.md section 3, input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputRequests {
    /// Never: no host input is attached to this device.
    Off,
    /// When the guest polls the empty receiver (the device's module says
    /// which reads count). The default.
    #[default]
    OnPoll,
    /// As `OnPoll`, and also at paced points of virtual time while the
    /// guest's receive path is enabled and empty, so a guest that only
    /// takes input by interrupt, and never polls or halts, receives it
    /// too: a byte every character time of the line (UART), a key every
    /// byte time of the keyboard cable (8042). For input scripts.
    Paced,
}

impl InputRequests {
    /// Keep `since`, when the device's receive path became ready for
    /// paced input (`None` while it is not ready), up to date after
    /// anything that may have changed `ready`.
    pub fn note_ready(since: &mut Option<u64>, ready: bool, now_ns: u64) {
        if !ready {
            *since = None;
        } else if since.is_none() {
            *since = Some(now_ns);
        }
    }

    /// When paced host input is to be asked for: `interval_ns` after the
    /// receive path became ready (`since`), and only under `Paced`.
    pub fn paced_due(self, since: Option<u64>, interval_ns: u64) -> Option<u64> {
        if self != InputRequests::Paced {
            return None;
        }
        since.map(|since| since.saturating_add(interval_ns))
    }
}

/// A device that receives bytes from the host (a UART's receive side, a
/// keyboard controller). Bytes are queued, never dropped; the device hands
/// them to the guest as it can take them.
pub trait HostInput {
    fn push_host_input(&mut self, bytes: &[u8]);
    /// When to ask the host for input ([`InputRequests`]). Takes effect
    /// at the device's next access or timer callback; [`request_host_input`]
    /// applies it at once.
    fn set_input_requests(&mut self, requests: InputRequests);
}

/// How whoever owns the machine's wiring (the front-end) tells a component
/// that does not know the device types (the debugger) where host input goes.
pub type HostInputRoute = fn(&mut Machine, &[u8]) -> bool;

/// Likewise, how it sets when that device asks for input.
pub type InputRequestsRoute = fn(&mut Machine, InputRequests) -> bool;

/// Give `bytes` to the first device of type `T` and run its timer callback
/// at once, so it raises its interrupt even while the guest is halted (no
/// guest access would otherwise reach it). Returns whether the machine has
/// such a device. `give_host_input::<T>` is a [`HostInputRoute`].
pub fn give_host_input<T: HostInput + 'static>(m: &mut Machine, bytes: &[u8]) -> bool {
    let now = m.clock.now_ns();
    let Some(device) = m.bus.find_device::<T>() else {
        return false;
    };
    device.push_host_input(bytes);
    m.bus.poke::<T>(now);
    true
}

/// Set when the first device of type `T` asks for host input, and run its
/// timer callback at once so that it arms, or cancels, its paced request
/// now. Returns whether the machine has such a device.
/// `request_host_input::<T>` is an [`InputRequestsRoute`].
pub fn request_host_input<T: HostInput + 'static>(
    m: &mut Machine,
    requests: InputRequests,
) -> bool {
    let now = m.clock.now_ns();
    let Some(device) = m.bus.find_device::<T>() else {
        return false;
    };
    device.set_input_requests(requests);
    m.bus.poke::<T>(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffer_clones_see_one_buffer() {
        let buffer = SharedBuffer::default();
        let mut writer = buffer.clone();
        writer.write_all(b"hello").unwrap();
        assert_eq!(buffer.contents(), b"hello");
    }

    /// A receiver that records its input and whether its timer ran.
    #[derive(Default)]
    struct Receiver {
        got: Vec<u8>,
        poked: bool,
        requests: InputRequests,
    }

    impl HostInput for Receiver {
        fn push_host_input(&mut self, bytes: &[u8]) {
            self.got.extend_from_slice(bytes);
        }
        fn set_input_requests(&mut self, requests: InputRequests) {
            self.requests = requests;
        }
    }

    impl crate::bus::Device for Receiver {
        fn name(&self) -> &'static str {
            "receiver"
        }
        fn io_read(&mut self, _: u16, _: u8, _: &mut crate::bus::DeviceCtx) -> u32 {
            u32::MAX
        }
        fn io_write(&mut self, _: u16, _: u8, _: u32, _: &mut crate::bus::DeviceCtx) {}
        fn timer(&mut self, _: &mut crate::bus::DeviceCtx) {
            self.poked = true;
        }
        fn save_state(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn restore_state(&mut self, _: &serde_json::Value) -> Result<(), crate::bus::StateError> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    #[test]
    fn give_host_input_queues_the_bytes_and_runs_the_device_timer() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.bus.add(Box::new(Receiver::default()));
        let route: HostInputRoute = give_host_input::<Receiver>;
        assert!(route(&mut m, b"ls\n"));
        let receiver = m.bus.find_device::<Receiver>().unwrap();
        assert_eq!(receiver.got, b"ls\n");
        assert!(receiver.poked);
    }

    #[test]
    fn give_host_input_reports_a_machine_without_the_device() {
        struct Absent;
        impl HostInput for Absent {
            fn push_host_input(&mut self, _bytes: &[u8]) {}
            fn set_input_requests(&mut self, _requests: InputRequests) {}
        }
        let mut m = Machine::with_ram_mib(1).unwrap();
        assert!(!give_host_input::<Absent>(&mut m, b"x"));
        assert!(!request_host_input::<Absent>(&mut m, InputRequests::Paced));
    }

    #[test]
    fn request_host_input_sets_the_mode_and_runs_the_device_timer() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.bus.add(Box::new(Receiver::default()));
        let route: InputRequestsRoute = request_host_input::<Receiver>;
        assert!(route(&mut m, InputRequests::Paced));
        let receiver = m.bus.find_device::<Receiver>().unwrap();
        assert_eq!(receiver.requests, InputRequests::Paced);
        assert!(receiver.poked);
    }
}
