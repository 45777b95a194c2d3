//! The emulator's own ports (DESIGN.md section 6): debug-exit at 0xF4 (a
//! write of v stops the machine with exit status v), POST codes at 0x80 and
//! 0x190 (the last value is recorded), and the debug console at 0xE9
//! (bytes written appear on the host, as Bochs' and QEMU's port E9 hack).

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError, StopRequest};
use serde_json::{json, Value};

use crate::Sink;

pub const DEBUG_EXIT_PORT: u16 = 0xF4;
pub const POST_PORTS: [u16; 2] = [0x80, 0x190];
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;

/// Port 0xF4: any write stops the machine with the low byte as status.
#[derive(Default)]
pub struct DebugExit;

impl Device for DebugExit {
    fn name(&self) -> &'static str {
        "debug-exit"
    }
    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
        ctx.signals.stop = Some(StopRequest::DebugExit(value as u8));
    }
    fn save_state(&self) -> Value {
        json!({})
    }
    fn restore_state(&mut self, _state: &Value) -> Result<(), StateError> {
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// POST code ports: the last byte written is kept and reported.
#[derive(Default)]
pub struct PostCode {
    last: Option<u8>,
}

impl Device for PostCode {
    fn name(&self) -> &'static str {
        "post-code"
    }
    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        self.last.map_or(u32::MAX, u32::from)
    }
    fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
        self.last = Some(value as u8);
        ctx.signals.post_code = Some(value as u8);
    }
    fn save_state(&self) -> Value {
        json!({ "last": self.last })
    }
    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let last = match &state["last"] {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .filter(|&b| b <= 0xFF)
                    .ok_or_else(|| StateError::new("post-code", "last is not a byte"))?
                    as u8,
            ),
        };
        self.last = last;
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Port 0xE9: bytes written go to the host; reads return 0xE9 so a guest
/// can detect the port (the Bochs convention).
pub struct DebugConsole {
    out: Sink,
}

impl DebugConsole {
    pub fn new(out: Sink) -> DebugConsole {
        DebugConsole { out }
    }
}

impl Device for DebugConsole {
    fn name(&self) -> &'static str {
        "debug-console"
    }
    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        0xE9
    }
    fn io_write(&mut self, _port: u16, _size: u8, value: u32, _ctx: &mut DeviceCtx) {
        let _ = self.out.write_all(&[value as u8]);
        let _ = self.out.flush();
    }
    fn save_state(&self) -> Value {
        json!({})
    }
    fn restore_state(&mut self, _state: &Value) -> Result<(), StateError> {
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedBuffer;
    use ringside_core::bus::Bus;

    #[test]
    fn debug_exit_write_requests_a_stop_with_the_value() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(DebugExit));
        bus.claim_ports(id, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT);
        bus.io_write(DEBUG_EXIT_PORT, 1, 7, 0);
        assert_eq!(bus.signals.stop, Some(StopRequest::DebugExit(7)));
    }

    #[test]
    fn post_code_keeps_the_last_value() {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(PostCode::default()));
        bus.claim_ports(id, 0x80, 0x80);
        bus.claim_ports(id, 0x190, 0x190);
        bus.io_write(0x80, 1, 0x12, 0);
        bus.io_write(0x190, 1, 0x34, 0);
        assert_eq!(bus.signals.post_code, Some(0x34));
        assert_eq!(bus.io_read(0x80, 1, 0), 0x34);
    }

    #[test]
    fn post_code_state_round_trips_and_rejects_garbage() {
        let mut p = PostCode { last: Some(0x42) };
        let saved = p.save_state();
        p.last = None;
        p.restore_state(&saved).unwrap();
        assert_eq!(p.last, Some(0x42));
        assert!(p.restore_state(&json!({ "last": 300 })).is_err());
        assert_eq!(p.last, Some(0x42));
    }

    #[test]
    fn debug_console_passes_bytes_to_the_host() {
        let buf = SharedBuffer::default();
        let mut bus = Bus::new();
        let id = bus.add(Box::new(DebugConsole::new(Box::new(buf.clone()))));
        bus.claim_ports(id, DEBUG_CONSOLE_PORT, DEBUG_CONSOLE_PORT);
        bus.io_write(DEBUG_CONSOLE_PORT, 1, b'A' as u32, 0);
        assert_eq!(buf.contents(), b"A");
        assert_eq!(bus.io_read(DEBUG_CONSOLE_PORT, 1, 0), 0xE9);
    }
}
