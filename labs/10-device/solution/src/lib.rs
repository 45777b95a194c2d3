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

/// Its version in saved states.
const STATE_VERSION: u64 = 1;

/// The hash coprocessor.
#[derive(Default)]
pub struct Hasher {
    input: Vec<u8>,
    result: u32,
    busy: bool,
    done: bool,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    fn status(&self) -> u32 {
        (if self.busy { STATUS_BUSY } else { 0 }) | (if self.done { STATUS_DONE } else { 0 })
    }
}

/// FNV-1a over `bytes` (the spec above).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl Device for Hasher {
    fn name(&self) -> &'static str {
        "hasher"
    }

    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        let ones = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => u32::MAX,
        };
        match port {
            CMD => self.status(),
            RESULT if self.done => {
                self.done = false;
                self.input.clear();
                ctx.set_irq(HASH_IRQ, false);
                self.result & ones
            }
            RESULT => self.result & ones,
            _ => ones,
        }
    }

    fn io_write(&mut self, port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
        match (port, value) {
            (DATA, v) if !self.busy && self.input.len() < MAX_INPUT => self.input.push(v as u8),
            (CMD, CMD_START) if !self.busy => {
                self.busy = true;
                self.done = false;
                ctx.set_irq(HASH_IRQ, false);
                let work = 100 + 10 * self.input.len() as u64;
                ctx.schedule(ctx.now_ns + work);
            }
            (CMD, CMD_RESET) => {
                *self = Hasher::default();
                ctx.cancel_timer();
                ctx.set_irq(HASH_IRQ, false);
            }
            _ => {}
        }
    }

    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.result = fnv1a(&self.input);
        self.busy = false;
        self.done = true;
        ctx.set_irq(HASH_IRQ, true);
    }

    fn save_state(&self) -> Value {
        json!({
            "version": STATE_VERSION,
            "input": self.input,
            "result": self.result,
            "busy": self.busy,
            "done": self.done,
        })
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let bad = |what: &str| StateError::new("hasher", what);
        if state["version"] != STATE_VERSION {
            return Err(bad("a state of another version"));
        }
        let input: Vec<u8> = serde_json::from_value(state["input"].clone())
            .map_err(|_| bad("input is not a list of bytes"))?;
        let result = state["result"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| bad("result is not a 32-bit number"))?;
        let (Some(busy), Some(done)) = (state["busy"].as_bool(), state["done"].as_bool()) else {
            return Err(bad("busy and done must be true or false"));
        };
        *self = Hasher {
            input,
            result,
            busy,
            done,
        };
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
