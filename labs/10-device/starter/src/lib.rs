//! Lab 10: a device of your own — a hash coprocessor on the I/O ports,
//! with an interrupt (the book's chapter "Lab 10: write a device").
//!
//! A guest writes bytes to DATA, writes START to CMD, and goes on with its
//! work; the device takes a while (virtual time), then raises IRQ 5. The
//! guest's handler reads RESULT: the 32-bit FNV-1a hash of the bytes.
//!
//! | port  | read                             | write                       |
//! | ----- | -------------------------------- | --------------------------- |
//! | 0x310 | 0xFF (nothing there)             | DATA: one byte of input (ignored while busy, and past 4096 bytes) |
//! | 0x311 | STATUS: bit 0 BUSY, bit 1 DONE   | CMD: 0 RESET, 1 START (others ignored) |
//! | 0x314 | RESULT: the hash; reading it acknowledges | ignored            |
//! | other | 0xFF in every byte read          | ignored                     |
//!
//! - START (when not busy) makes the device BUSY for 100 ns plus 10 ns
//!   per input byte of virtual time (`DeviceCtx::schedule`); then it is
//!   DONE, no longer BUSY, and raises IRQ 5 (the line stays high). A
//!   START while DONE drops the result not read yet: DONE clears and
//!   IRQ 5 goes low first, so the next completion raises it anew (an
//!   edge the 8259A sees).
//! - The input holds at most 4096 bytes (`MAX_INPUT`); a guest cannot
//!   make the device grow without end.
//! - Reading RESULT (any size: the hash's low bytes) when DONE clears
//!   DONE, lowers IRQ 5 and forgets the input, ready for the next.
//! - RESET forgets the input and the result, clears BUSY and DONE,
//!   cancels the pending timer and lowers IRQ 5.
//! - FNV-1a, 32 bits: start from 2166136261 (0x811C9DC5); for each byte,
//!   XOR it in, then multiply by 16777619 (0x01000193), wrapping.
//! - The saved state holds the input, the result and the flags, with a
//!   version; a state of another version, or a malformed one, is refused
//!   and changes nothing. (The bus saves the pending deadline itself.)

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde_json::{json, Value};

/// The ports the device claims (`Machine::add_port_device`).
pub const HASH_PORTS: (u16, u16) = (0x310, 0x317);
pub const DATA: u16 = 0x310;
pub const CMD: u16 = 0x311;
pub const RESULT: u16 = 0x314;
/// The interrupt line it raises.
pub const HASH_IRQ: u8 = 5;
pub const CMD_RESET: u32 = 0;
pub const CMD_START: u32 = 1;
pub const STATUS_BUSY: u32 = 1;
pub const STATUS_DONE: u32 = 2;
/// The most input bytes the device keeps.
pub const MAX_INPUT: usize = 4096;

/// The hash coprocessor.
#[derive(Default)]
pub struct Hasher {
    // TODO lab 10: the device's state (the input, the result, BUSY, DONE).
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
}

/// FNV-1a over `bytes` (the spec above).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    // TODO lab 10
    let _ = bytes;
    0
}

impl Device for Hasher {
    fn name(&self) -> &'static str {
        "hasher"
    }

    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        // TODO lab 10: STATUS and RESULT.
        let _ = (port, size, ctx);
        u32::MAX
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        // TODO lab 10: DATA and CMD.
        let _ = (port, size, value, ctx);
    }

    fn timer(&mut self, ctx: &mut DeviceCtx) {
        // TODO lab 10: the work is done.
        let _ = ctx;
    }

    fn save_state(&self) -> Value {
        // TODO lab 10
        json!({})
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        // TODO lab 10
        let _ = state;
        Err(StateError::new("hasher", "not written yet"))
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
