//! The 8042 keyboard controller and the keyboard behind it (Intel 8042
//! data sheet; the IBM PC/AT and PS/2 Technical References for its
//! firmware's commands; the IBM 101/102-key keyboard's command set): the
//! data port 0x60, the status/command port 0x64, the output port that gates
//! A20 and holds the CPU's reset line, and IRQ 1.
//!
//! The controller answers at once: the input buffer is never seen full
//! (IBF stays 0) and a byte waiting behind the output buffer moves in as
//! soon as the guest has read the one before. The keyboard speaks scancode
//! set 2; with translation on (command byte bit 6) the controller turns its
//! bytes into set 1, so the identify reply reads AB 41 and "set 2" reads
//! 0x41, as on real hardware. Host key presses arrive as set-1 scancodes
//! ([`KeyboardController::push_key_bytes`], or ASCII through
//! [`KeyboardController::push_ascii`]) and are sent as they are with
//! translation on, and in set 2 without it.
//!
//! Host input waits in an unbounded queue while the keyboard is disabled,
//! not scanning, or the output buffer is full; a keyboard reset does not
//! discard it. The front-end gives key presses and then calls the timer
//! callback (`hostio::give_host_input`), which moves the first byte into
//! an empty output buffer at once.
//!
//! When to ask the host for input (`hostio::InputRequests`, the front-end
//! feeds its script then, see `Signals::input_wanted`): only while the
//! guest can receive a key — the keyboard interface enabled (command byte
//! bit 4 clear), the keyboard scanning, the output buffer empty, and no
//! controller or keyboard reply or command byte on its way. On a poll,
//! that is a read of port 0x60 with nothing in it; a read of the status
//! port never asks, since a firmware polls it for its own commands'
//! replies (a key fed then would stand in front of the self test's 55h).
//! When paced, the keyboard asks one byte time of its cable (about 1 ms)
//! after the guest became able to receive, and every byte time after that
//! while it stays so: a guest that takes keys only by IRQ 1 and never
//! polls or halts gets a script at a keyboard's pace, at the same
//! instructions on every run.
//!
//! The auxiliary (mouse) port exists but nothing is plugged into it:
//! 0xA7/0xA8 disable and enable it, 0xA9 finds the interface good, and
//! bytes sent to it with 0xD4 are never answered, which is how a PS/2 mouse
//! driver learns that there is no mouse.

use std::any::Any;
use std::collections::VecDeque;

use ringside_core::bus::{Device, DeviceCtx, StateError, StopRequest};
use ringside_core::hostio::{HostInput, InputRequests};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DATA_PORT: u16 = 0x60;
/// Reads give the status register, writes are controller commands.
pub const COMMAND_PORT: u16 = 0x64;
pub const KEYBOARD_IRQ: u8 = 1;
pub const AUX_IRQ: u8 = 12;

const STATUS_OBF: u8 = 1 << 0;
/// The system flag: set by a successful self-test or by command byte bit 2.
const STATUS_SYS: u8 = 1 << 2;
/// The last byte written went to port 0x64 (a command), not 0x60.
const STATUS_A2: u8 = 1 << 3;
/// The keylock switch: 1 = the keyboard is not inhibited.
const STATUS_INH: u8 = 1 << 4;
/// The output buffer holds a byte from the auxiliary device.
const STATUS_AUXB: u8 = 1 << 5;

const CMD_KBD_INT: u8 = 1 << 0;
const CMD_AUX_INT: u8 = 1 << 1;
const CMD_SYS: u8 = 1 << 2;
const CMD_KBD_DISABLE: u8 = 1 << 4;
const CMD_AUX_DISABLE: u8 = 1 << 5;
const CMD_XLAT: u8 = 1 << 6;

/// Output port bit 0 drives the CPU's reset line (0 = reset).
const OUT_RESET: u8 = 1 << 0;
const OUT_A20: u8 = 1 << 1;
const OUT_KBD_OBF: u8 = 1 << 4;
const OUT_AUX_OBF: u8 = 1 << 5;
/// Bits 2-3 and 6-7: the clock and data lines, idle high.
const OUT_LINES_IDLE: u8 = 0xCC;

const KBD_ACK: u8 = 0xFA;
const KBD_BAT_PASSED: u8 = 0xAA;
const KBD_ECHO: u8 = 0xEE;
const KBD_RESEND: u8 = 0xFE;
const KBD_ID: [u8; 2] = [0xAB, 0x83];
const KBD_SCANCODE_SET: u8 = 2;

/// The keyboard's own buffer and the controller's queue of replies hold
/// 16 bytes; more are lost, as when a guest writes commands and never
/// reads the replies.
const BUFFER_BYTES: usize = 16;
/// The 8042's internal RAM that commands 0x20-0x3F / 0x60-0x7F reach;
/// byte 0 is the command byte.
const RAM_BYTES: usize = 32;
/// A byte takes about a millisecond on the keyboard cable (11 bits at
/// 10-16.7 kHz): paced host input is asked for that long after the guest
/// became able to receive a key.
const KEYBOARD_BYTE_NS: u64 = 1_000_000;

/// Set-1 make code -> set-2 make code for the keys of a 101/102-key
/// keyboard; the 8042's translation is the inverse (the table from QEMU's
/// ps2.c, in hexadecimal).
const SET1_TO_SET2: [u8; 128] = [
    0x00, 0x76, 0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45, 0x4E, 0x55, 0x66, 0x0D,
    0x15, 0x1D, 0x24, 0x2D, 0x2C, 0x35, 0x3C, 0x43, 0x44, 0x4D, 0x54, 0x5B, 0x5A, 0x14, 0x1C, 0x1B,
    0x23, 0x2B, 0x34, 0x33, 0x3B, 0x42, 0x4B, 0x4C, 0x52, 0x0E, 0x12, 0x5D, 0x1A, 0x22, 0x21, 0x2A,
    0x32, 0x31, 0x3A, 0x41, 0x49, 0x4A, 0x59, 0x7C, 0x11, 0x29, 0x58, 0x05, 0x06, 0x04, 0x0C, 0x03,
    0x0B, 0x02, 0x0A, 0x01, 0x09, 0x77, 0x7E, 0x6C, 0x75, 0x7D, 0x7B, 0x6B, 0x73, 0x74, 0x79, 0x69,
    0x72, 0x7A, 0x70, 0x71, 0x7F, 0x60, 0x61, 0x78, 0x07, 0x0F, 0x17, 0x1F, 0x27, 0x2F, 0x37, 0x3F,
    0x47, 0x4F, 0x56, 0x5E, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40, 0x48, 0x50, 0x57, 0x6F,
    0x13, 0x19, 0x39, 0x51, 0x53, 0x5C, 0x5F, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68, 0x6A, 0x6D, 0x6E,
];

/// The 8042's set 2 -> set 1 translation of bytes below 0x80.
const SET2_TO_SET1: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut set1 = 128;
    // Downwards, so that where two set-1 codes share a set-2 code the
    // lower one wins.
    while set1 > 0 {
        set1 -= 1;
        table[SET1_TO_SET2[set1] as usize] = set1 as u8;
    }
    table
};

/// A byte the keyboard sends, as the CPU sees it through the controller.
fn translate(byte: u8) -> u8 {
    match byte {
        // F7's set-2 code is the one key code above 0x7F.
        0x83 => 0x41,
        b if b < 0x80 => SET2_TO_SET1[b as usize],
        // Replies (FA, AA, EE, FE, AB, ...) pass unchanged.
        b => b,
    }
}

/// A host set-1 byte as the keyboard sends it in set 2: a break code is
/// F0 and the make code; the E0 and E1 prefixes are the same in both sets.
fn set1_to_set2(byte: u8) -> (Option<u8>, u8) {
    match byte {
        0xE0 | 0xE1 => (None, byte),
        b if b & 0x80 != 0 => (Some(0xF0), SET1_TO_SET2[(b & 0x7F) as usize]),
        b => (None, SET1_TO_SET2[b as usize]),
    }
}

const LEFT_SHIFT: u8 = 0x2A;
const LEFT_CTRL: u8 = 0x1D;
const BREAK: u8 = 0x80;

/// The set-1 make code of the US-layout key that types `ch`, and the
/// modifier held with it.
fn us_key_for_ascii(ch: u8) -> Option<(u8, Option<u8>)> {
    const ROWS: [(u8, &[u8], &[u8]); 4] = [
        (0x02, b"1234567890-=", b"!@#$%^&*()_+"),
        (0x10, b"qwertyuiop[]", b"QWERTYUIOP{}"),
        (0x1E, b"asdfghjkl;'`", b"ASDFGHJKL:\"~"),
        (0x2B, b"\\zxcvbnm,./", b"|ZXCVBNM<>?"),
    ];
    for (first, plain, shifted) in ROWS {
        if let Some(i) = plain.iter().position(|&c| c == ch) {
            return Some((first + i as u8, None));
        }
        if let Some(i) = shifted.iter().position(|&c| c == ch) {
            return Some((first + i as u8, Some(LEFT_SHIFT)));
        }
    }
    match ch {
        b' ' => Some((0x39, None)),
        b'\n' | b'\r' => Some((0x1C, None)),
        0x08 | 0x7F => Some((0x0E, None)),
        b'\t' => Some((0x0F, None)),
        0x1B => Some((0x01, None)),
        // The other control characters are Ctrl and a letter.
        0x01..=0x1A => us_key_for_ascii(ch + 0x60).map(|(code, _)| (code, Some(LEFT_CTRL))),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OutputByte {
    value: u8,
    /// From the auxiliary port: AUXB is set and IRQ 12 is raised.
    aux: bool,
}

/// The keyboard's side of the cable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyboardState {
    /// Scanning enabled (F4) or disabled (F5).
    scanning: bool,
    /// A command (ED, F0, F3) waiting for its parameter byte.
    awaiting: Option<u8>,
    leds: u8,
    typematic: u8,
    /// For the resend command (FE).
    last_sent: u8,
}

impl KeyboardState {
    fn power_on() -> KeyboardState {
        KeyboardState {
            scanning: true,
            awaiting: None,
            leds: 0,
            // 10.9 characters per second after a 500 ms delay.
            typematic: 0x2B,
            last_sent: KBD_BAT_PASSED,
        }
    }
}

/// What a saved state holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KbcState {
    /// Internal RAM; byte 0 is the command byte.
    ram: Vec<u8>,
    sys: bool,
    last_write_was_command: bool,
    /// The output buffer: OBF is set while it holds a byte.
    output: Option<OutputByte>,
    /// What port 0x60 reads when the buffer is empty (the last byte).
    last_output: u8,
    /// Controller replies, ahead of anything from the keyboard.
    controller_out: VecDeque<OutputByte>,
    /// Bytes the keyboard has sent, as the CPU will see them.
    keyboard_out: VecDeque<u8>,
    /// Set-1 scancodes from the host, not yet sent by the keyboard.
    host_in: VecDeque<u8>,
    /// A controller command (0x60-0x7F, 0xD1-0xD4) waiting for its data.
    awaiting: Option<u8>,
    a20: bool,
    keyboard: KeyboardState,
    irq1: bool,
    irq12: bool,
    /// Since when the guest has been able to receive a key
    /// (`ready_for_key`); paced host input is asked for a keyboard byte
    /// time after it. None while it is not.
    #[serde(default)]
    key_ready_since_ns: Option<u64>,
}

pub struct KeyboardController {
    s: KbcState,
    /// When to ask the host for input (host side, not state).
    requests: InputRequests,
}

impl Default for KeyboardController {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyboardController {
    /// A controller as a BIOS leaves it after POST: self-test passed (SYS),
    /// command byte 0x65 (translation on, auxiliary port disabled, keyboard
    /// interrupt enabled), A20 enabled (as the machine starts) and the
    /// keyboard scanning.
    pub fn new() -> KeyboardController {
        let mut ram = vec![0u8; RAM_BYTES];
        ram[0] = CMD_XLAT | CMD_AUX_DISABLE | CMD_SYS | CMD_KBD_INT;
        KeyboardController {
            s: KbcState {
                ram,
                sys: true,
                last_write_was_command: false,
                output: None,
                last_output: 0,
                controller_out: VecDeque::new(),
                keyboard_out: VecDeque::new(),
                host_in: VecDeque::new(),
                awaiting: None,
                a20: true,
                keyboard: KeyboardState::power_on(),
                irq1: false,
                irq12: false,
                key_ready_since_ns: None,
            },
            requests: InputRequests::default(),
        }
    }

    /// Queue set-1 scancodes typed on the host.
    pub fn push_key_bytes(&mut self, scancodes: &[u8]) {
        self.s.host_in.extend(scancodes);
    }

    /// Queue the key presses that type `ch` on a US keyboard (with Shift
    /// or Ctrl as needed): make and break codes in set 1. Returns false,
    /// queuing nothing, for a byte no key types.
    pub fn push_ascii(&mut self, ch: u8) -> bool {
        let Some((code, modifier)) = us_key_for_ascii(ch) else {
            return false;
        };
        if let Some(m) = modifier {
            self.s.host_in.push_back(m);
        }
        self.s.host_in.extend([code, code | BREAK]);
        if let Some(m) = modifier {
            self.s.host_in.push_back(m | BREAK);
        }
        true
    }

    /// Host input not yet read by the guest.
    pub fn has_pending_input(&self) -> bool {
        !self.s.host_in.is_empty()
    }

    fn command_byte(&self) -> u8 {
        self.s.ram[0]
    }

    fn set_command_byte(&mut self, v: u8) {
        self.s.ram[0] = v;
        self.s.sys = v & CMD_SYS != 0;
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_INH;
        if let Some(b) = self.s.output {
            status |= STATUS_OBF | if b.aux { STATUS_AUXB } else { 0 };
        }
        if self.s.sys {
            status |= STATUS_SYS;
        }
        if self.s.last_write_was_command {
            status |= STATUS_A2;
        }
        status
    }

    fn output_port(&self) -> u8 {
        let mut port = OUT_LINES_IDLE | OUT_RESET;
        if self.s.a20 {
            port |= OUT_A20;
        }
        match self.s.output {
            Some(b) if b.aux => port |= OUT_AUX_OBF,
            Some(_) => port |= OUT_KBD_OBF,
            None => {}
        }
        port
    }

    fn write_output_port(&mut self, v: u8, ctx: &mut DeviceCtx) {
        self.set_a20(v & OUT_A20 != 0, ctx);
        if v & OUT_RESET == 0 {
            ctx.signals.stop = Some(StopRequest::Reset);
        }
    }

    fn set_a20(&mut self, on: bool, ctx: &mut DeviceCtx) {
        self.s.a20 = on;
        ctx.signals.a20 = Some(on);
    }

    fn reply(&mut self, value: u8) {
        if self.s.controller_out.len() < BUFFER_BYTES {
            self.s
                .controller_out
                .push_back(OutputByte { value, aux: false });
        }
    }

    /// The keyboard sends a byte; the controller translates it to set 1
    /// if the command byte asks for that.
    fn keyboard_send(&mut self, byte: u8) {
        self.s.keyboard.last_sent = byte;
        let byte = if self.command_byte() & CMD_XLAT != 0 {
            translate(byte)
        } else {
            byte
        };
        if self.s.keyboard_out.len() < BUFFER_BYTES {
            self.s.keyboard_out.push_back(byte);
        }
    }

    /// F5, F6 and FF restore the power-on defaults. Bytes the keyboard
    /// already sent stay in the buffer, so no reply is lost.
    fn keyboard_defaults(&mut self, scanning: bool) {
        self.s.keyboard = KeyboardState {
            scanning,
            ..KeyboardState::power_on()
        };
    }

    /// A byte written to port 0x60 with no controller command waiting goes
    /// to the keyboard.
    fn keyboard_command(&mut self, v: u8) {
        if let Some(cmd) = self.s.keyboard.awaiting.take() {
            // A byte with bit 7 set is a new command, which aborts the
            // one waiting for a parameter.
            if v < 0x80 {
                self.keyboard_parameter(cmd, v);
                return;
            }
        }
        match v {
            0xED | 0xF0 | 0xF3 => {
                self.s.keyboard.awaiting = Some(v);
                self.keyboard_send(KBD_ACK);
            }
            0xEE => self.keyboard_send(KBD_ECHO),
            0xF2 => {
                self.keyboard_send(KBD_ACK);
                KBD_ID.iter().for_each(|&b| self.keyboard_send(b));
            }
            0xF4 => {
                self.s.keyboard.scanning = true;
                self.keyboard_send(KBD_ACK);
            }
            0xF5 | 0xF6 => {
                self.keyboard_defaults(v == 0xF6);
                self.keyboard_send(KBD_ACK);
            }
            // Set-3 key types: acknowledged, meaningless in set 2.
            0xF7..=0xFD => self.keyboard_send(KBD_ACK),
            0xFE => self.keyboard_send(self.s.keyboard.last_sent),
            0xFF => {
                self.keyboard_defaults(true);
                self.keyboard_send(KBD_ACK);
                self.keyboard_send(KBD_BAT_PASSED);
            }
            _ => self.keyboard_send(KBD_RESEND),
        }
    }

    fn keyboard_parameter(&mut self, cmd: u8, v: u8) {
        match cmd {
            0xED => {
                self.s.keyboard.leds = v & 0x07;
                self.keyboard_send(KBD_ACK);
            }
            0xF3 => {
                self.s.keyboard.typematic = v;
                self.keyboard_send(KBD_ACK);
            }
            // F0 00 asks for the set; F0 01-03 selects one, which this
            // keyboard acknowledges but stays in set 2.
            _ if v == 0 => {
                self.keyboard_send(KBD_ACK);
                self.keyboard_send(KBD_SCANCODE_SET);
            }
            _ if v <= 3 => self.keyboard_send(KBD_ACK),
            _ => self.keyboard_send(KBD_RESEND),
        }
    }

    fn controller_command(&mut self, cmd: u8, ctx: &mut DeviceCtx) {
        self.s.awaiting = None;
        match cmd {
            0x20..=0x3F => self.reply(self.s.ram[(cmd & 0x1F) as usize]),
            0x60..=0x7F | 0xD1..=0xD4 => self.s.awaiting = Some(cmd),
            0xA7 => self.s.ram[0] |= CMD_AUX_DISABLE,
            0xA8 => self.s.ram[0] &= !CMD_AUX_DISABLE,
            // Interface tests: 0x00 = no error on the clock and data lines.
            0xA9 | 0xAB => self.reply(0x00),
            0xAA => {
                self.s.sys = true;
                self.reply(0x55);
            }
            0xAD => self.s.ram[0] |= CMD_KBD_DISABLE,
            0xAE => self.s.ram[0] &= !CMD_KBD_DISABLE,
            // Input port: bit 7 = keyboard not inhibited; the AT's jumper
            // inputs read 0.
            0xC0 => self.reply(0x80),
            0xD0 => self.reply(self.output_port()),
            0xDD => self.set_a20(false, ctx),
            0xDF => self.set_a20(true, ctx),
            // Pulse the output port bits whose command bit is 0 for 6 us;
            // bit 0 is the CPU's reset line.
            0xF0..=0xFF if cmd & 1 == 0 => ctx.signals.stop = Some(StopRequest::Reset),
            _ => {}
        }
    }

    fn write_data(&mut self, v: u8, ctx: &mut DeviceCtx) {
        match self.s.awaiting.take() {
            Some(cmd @ 0x60..=0x7F) => {
                let at = (cmd & 0x1F) as usize;
                if at == 0 {
                    self.set_command_byte(v);
                } else {
                    self.s.ram[at] = v;
                }
            }
            Some(0xD1) => self.write_output_port(v, ctx),
            // Write the output buffer as if the keyboard or the auxiliary
            // device had sent the byte.
            Some(0xD2) => self.reply(v),
            Some(0xD3) => {
                if self.s.controller_out.len() < BUFFER_BYTES {
                    self.s.controller_out.push_back(OutputByte {
                        value: v,
                        aux: true,
                    });
                }
            }
            // To the auxiliary device: nothing is plugged in to answer.
            Some(_) => {}
            None => self.keyboard_command(v),
        }
    }

    /// Move the next byte into an empty output buffer: controller replies
    /// first, then what the keyboard sent, then host key presses, which
    /// the keyboard sends only while it is enabled and scanning.
    fn fill_output(&mut self) {
        if self.s.output.is_some() {
            return;
        }
        if let Some(b) = self.s.controller_out.pop_front() {
            self.s.output = Some(b);
            return;
        }
        if self.command_byte() & CMD_KBD_DISABLE != 0 {
            return;
        }
        let value = match self.s.keyboard_out.pop_front() {
            Some(v) => v,
            None if self.s.keyboard.scanning => {
                let Some(code) = self.s.host_in.pop_front() else {
                    return;
                };
                if self.command_byte() & CMD_XLAT != 0 {
                    code
                } else {
                    let (prefix, code) = set1_to_set2(code);
                    match prefix {
                        Some(p) => {
                            self.s.keyboard_out.push_front(code);
                            p
                        }
                        None => code,
                    }
                }
            }
            None => return,
        };
        self.s.output = Some(OutputByte { value, aux: false });
    }

    /// The guest can receive a key now: the keyboard interface is
    /// enabled and the keyboard scanning, nothing is in the output buffer
    /// or on its way to it, and no controller or keyboard command waits
    /// for its data byte.
    fn ready_for_key(&self) -> bool {
        self.command_byte() & CMD_KBD_DISABLE == 0
            && self.s.keyboard.scanning
            && self.s.output.is_none()
            && self.s.controller_out.is_empty()
            && self.s.keyboard_out.is_empty()
            && self.s.host_in.is_empty()
            && self.s.awaiting.is_none()
            && self.s.keyboard.awaiting.is_none()
    }

    /// Note when the guest became able to receive a key (or stopped
    /// being able to), after anything that may have changed it.
    fn note_key_readiness(&mut self, now_ns: u64) {
        let ready = self.ready_for_key();
        InputRequests::note_ready(&mut self.s.key_ready_since_ns, ready, now_ns);
    }

    /// When paced host input is to be asked for: a keyboard byte time
    /// after the guest became able to receive a key.
    fn paced_input_due(&self) -> Option<u64> {
        self.requests
            .paced_due(self.s.key_ready_since_ns, KEYBOARD_BYTE_NS)
    }

    /// What every access and callback ends with: the next byte into the
    /// output buffer, the IRQ lines, readiness for a key, the next
    /// callback (only paced input needs one).
    fn settle(&mut self, ctx: &mut DeviceCtx) {
        self.fill_output();
        self.update_irqs(ctx);
        self.note_key_readiness(ctx.now_ns);
        match self.paced_input_due() {
            Some(t) => ctx.schedule(t),
            None => ctx.cancel_timer(),
        }
    }

    /// IRQ 1 is high while the output buffer holds a keyboard byte and
    /// command byte bit 0 allows it; IRQ 12 likewise for the auxiliary
    /// port with bit 1.
    fn update_irqs(&mut self, ctx: &mut DeviceCtx) {
        let cmd = self.command_byte();
        let (irq1, irq12) = match self.s.output {
            Some(b) if b.aux => (false, cmd & CMD_AUX_INT != 0),
            Some(_) => (cmd & CMD_KBD_INT != 0, false),
            None => (false, false),
        };
        if irq1 != self.s.irq1 {
            self.s.irq1 = irq1;
            ctx.set_irq(KEYBOARD_IRQ, irq1);
        }
        if irq12 != self.s.irq12 {
            self.s.irq12 = irq12;
            ctx.set_irq(AUX_IRQ, irq12);
        }
    }

    fn read_data(&mut self, ctx: &mut DeviceCtx) -> u8 {
        match self.s.output.take() {
            Some(b) => {
                self.s.last_output = b.value;
                // The line drops when the buffer empties, and rises again
                // for the next byte: an edge per byte.
                self.update_irqs(ctx);
                b.value
            }
            None => {
                // The guest polls the data port for a key.
                if self.requests != InputRequests::Off && self.ready_for_key() {
                    ctx.signals.input_wanted = true;
                }
                self.s.last_output
            }
        }
    }

    fn read_byte(&mut self, port: u16, ctx: &mut DeviceCtx) -> u8 {
        match port {
            DATA_PORT => self.read_data(ctx),
            COMMAND_PORT => self.status(),
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, v: u8, ctx: &mut DeviceCtx) {
        match port {
            DATA_PORT => {
                self.s.last_write_was_command = false;
                self.write_data(v, ctx);
            }
            COMMAND_PORT => {
                self.s.last_write_was_command = true;
                self.controller_command(v, ctx);
            }
            _ => {}
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("i8042", reason)
    }
}

/// Host input to the keyboard is text: each byte is typed as the key
/// presses that produce it; a byte no key types is dropped.
impl HostInput for KeyboardController {
    fn push_host_input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push_ascii(b);
        }
    }

    fn set_input_requests(&mut self, requests: InputRequests) {
        self.requests = requests;
    }
}

impl Device for KeyboardController {
    fn name(&self) -> &'static str {
        "i8042"
    }

    /// A wider access covers the next ports, one byte lane each.
    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        let mut value = 0u32;
        for i in 0..size.min(4) as u16 {
            self.fill_output();
            value |= (self.read_byte(port.wrapping_add(i), ctx) as u32) << (8 * i);
        }
        self.settle(ctx);
        value
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        for i in 0..size.min(4) as u16 {
            self.write_byte(port.wrapping_add(i), (value >> (8 * i)) as u8, ctx);
        }
        self.settle(ctx);
    }

    /// Host input given since the last access, or a paced request for
    /// input: the guest has been able to receive a key for a byte time
    /// with none arriving, so ask the host now, and again a byte time
    /// later if it has nothing.
    fn timer(&mut self, ctx: &mut DeviceCtx) {
        self.fill_output();
        self.note_key_readiness(ctx.now_ns);
        if self.paced_input_due().is_some_and(|t| t <= ctx.now_ns) {
            ctx.signals.input_wanted = true;
            self.s.key_ready_since_ns = Some(ctx.now_ns);
        }
        self.settle(ctx);
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.s).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let s: KbcState = serde_json::from_value(state.clone()).map_err(Self::state_error)?;
        if s.ram.len() != RAM_BYTES {
            return Err(Self::state_error("internal RAM is not 32 bytes"));
        }
        if s.controller_out.len() > BUFFER_BYTES {
            return Err(Self::state_error("controller queue longer than 16 bytes"));
        }
        // One more than the buffer: the second byte of a set-2 break code.
        if s.keyboard_out.len() > BUFFER_BYTES + 1 {
            return Err(Self::state_error("keyboard buffer longer than 16 bytes"));
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

    fn bus_with_kbc() -> Bus {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(KeyboardController::new()));
        bus.claim_ports(id, DATA_PORT, DATA_PORT);
        bus.claim_ports(id, COMMAND_PORT, COMMAND_PORT);
        bus
    }

    fn kbc(bus: &mut Bus) -> &mut KeyboardController {
        bus.find_device::<KeyboardController>()
            .expect("the bus holds a keyboard controller")
    }

    fn command(bus: &mut Bus, cmd: u8) {
        bus.io_write(COMMAND_PORT, 1, cmd as u32, 0);
    }

    fn data(bus: &mut Bus, v: u8) {
        bus.io_write(DATA_PORT, 1, v as u32, 0);
    }

    /// Read the output buffer until it is empty, checking OBF each time.
    fn drain(bus: &mut Bus) -> Vec<u8> {
        let mut out = Vec::new();
        while bus.io_read(COMMAND_PORT, 1, 0) as u8 & STATUS_OBF != 0 {
            out.push(bus.io_read(DATA_PORT, 1, 0) as u8);
        }
        out
    }

    fn set_command_byte(bus: &mut Bus, v: u8) {
        command(bus, 0x60);
        data(bus, v);
    }

    #[test]
    fn kbc_self_test_returns_55() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xAA);
        let status = bus.io_read(COMMAND_PORT, 1, 0) as u8;
        assert_eq!(
            status & (STATUS_OBF | STATUS_SYS | STATUS_A2),
            STATUS_OBF | STATUS_SYS | STATUS_A2
        );
        assert_eq!(drain(&mut bus), [0x55]);
        command(&mut bus, 0xAB);
        assert_eq!(drain(&mut bus), [0x00]);
    }

    #[test]
    fn kbc_command_byte_reads_back_and_sets_sys() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0x20);
        assert_eq!(drain(&mut bus), [0x65]);
        set_command_byte(&mut bus, 0x40);
        assert_eq!(
            bus.io_read(COMMAND_PORT, 1, 0) as u8 & (STATUS_SYS | STATUS_A2),
            0
        );
        command(&mut bus, 0x20);
        assert_eq!(drain(&mut bus), [0x40]);
        // Internal RAM beyond the command byte.
        command(&mut bus, 0x65);
        data(&mut bus, 0x3C);
        command(&mut bus, 0x25);
        assert_eq!(drain(&mut bus), [0x3C]);
    }

    #[test]
    fn kbc_output_port_write_toggles_a20() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xD1);
        data(&mut bus, 0xDD);
        assert_eq!(bus.signals.a20, Some(false));
        command(&mut bus, 0xD0);
        assert_eq!(drain(&mut bus)[0] & OUT_A20, 0);
        command(&mut bus, 0xD1);
        data(&mut bus, 0xDF);
        assert_eq!(bus.signals.a20, Some(true));
        command(&mut bus, 0xD0);
        assert_eq!(
            drain(&mut bus)[0] & (OUT_A20 | OUT_RESET),
            OUT_A20 | OUT_RESET
        );
        command(&mut bus, 0xDD);
        assert_eq!(bus.signals.a20, Some(false));
        command(&mut bus, 0xDF);
        assert_eq!(bus.signals.a20, Some(true));
        assert_eq!(bus.signals.stop, None);
    }

    #[test]
    fn kbc_output_port_reset_bit_requests_reset() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xD1);
        data(&mut bus, 0x02);
        assert_eq!(bus.signals.stop, Some(StopRequest::Reset));
    }

    #[test]
    fn kbc_fe_pulse_requests_reset() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xFF);
        command(&mut bus, 0xF1);
        assert_eq!(bus.signals.stop, None, "bit 0 not pulsed");
        command(&mut bus, 0xFE);
        assert_eq!(bus.signals.stop, Some(StopRequest::Reset));
        bus.signals.stop = None;
        command(&mut bus, 0xF0);
        assert_eq!(bus.signals.stop, Some(StopRequest::Reset));
    }

    #[test]
    fn keyboard_reset_acks_and_passes_bat() {
        let mut bus = bus_with_kbc();
        data(&mut bus, 0xFF);
        assert_eq!(bus.io_read(COMMAND_PORT, 1, 0) as u8 & STATUS_A2, 0);
        assert_eq!(drain(&mut bus), [0xFA, 0xAA]);
    }

    #[test]
    fn keyboard_identify_is_translated_like_any_keyboard_byte() {
        let mut bus = bus_with_kbc();
        data(&mut bus, 0xF2);
        assert_eq!(drain(&mut bus), [0xFA, 0xAB, 0x41], "translated");
        set_command_byte(&mut bus, 0x01);
        data(&mut bus, 0xF2);
        assert_eq!(drain(&mut bus), [0xFA, 0xAB, 0x83], "raw set 2");
    }

    #[test]
    fn keyboard_reports_scancode_set_2() {
        let mut bus = bus_with_kbc();
        data(&mut bus, 0xF0);
        data(&mut bus, 0x00);
        assert_eq!(
            drain(&mut bus),
            [0xFA, 0xFA, 0x41],
            "set 2 through translation"
        );
        set_command_byte(&mut bus, 0x01);
        data(&mut bus, 0xF0);
        data(&mut bus, 0x02);
        data(&mut bus, 0xF0);
        data(&mut bus, 0x00);
        assert_eq!(drain(&mut bus), [0xFA, 0xFA, 0xFA, 0xFA, 0x02]);
    }

    #[test]
    fn keyboard_commands_are_acknowledged() {
        let mut bus = bus_with_kbc();
        for byte in [0xED, 0x07, 0xF3, 0x20, 0xF4, 0xF5, 0xF6] {
            data(&mut bus, byte);
        }
        assert_eq!(drain(&mut bus), [0xFA; 7]);
        data(&mut bus, 0xEE);
        assert_eq!(drain(&mut bus), [0xEE], "echo answers with itself");
        // A command in place of the LED byte aborts the LED command.
        data(&mut bus, 0xED);
        data(&mut bus, 0xEE);
        assert_eq!(drain(&mut bus), [0xFA, 0xEE]);
        data(&mut bus, 0xFE);
        assert_eq!(drain(&mut bus), [0xEE], "resend repeats the last byte");
        data(&mut bus, 0x12);
        assert_eq!(drain(&mut bus), [0xFE], "not a command");
    }

    #[test]
    fn ascii_input_becomes_set1_make_and_break_codes() {
        let mut bus = bus_with_kbc();
        for ch in *b"aA\n!" {
            assert!(kbc(&mut bus).push_ascii(ch));
        }
        assert!(!kbc(&mut bus).push_ascii(0xE9), "no key types it");
        assert_eq!(
            drain(&mut bus),
            [
                0x1E, 0x9E, // a
                0x2A, 0x1E, 0x9E, 0xAA, // Shift-a
                0x1C, 0x9C, // Enter
                0x2A, 0x02, 0x82, 0xAA, // Shift-1
            ]
        );
        kbc(&mut bus).push_ascii(0x03);
        assert_eq!(drain(&mut bus), [0x1D, 0x2E, 0xAE, 0x9D], "Ctrl-C");
    }

    #[test]
    fn host_scancodes_are_sent_in_set_2_without_translation() {
        let mut bus = bus_with_kbc();
        set_command_byte(&mut bus, 0x01);
        kbc(&mut bus).push_key_bytes(&[0x1E, 0x9E, 0xE0, 0x48, 0xE0, 0xC8]);
        assert_eq!(
            drain(&mut bus),
            [0x1C, 0xF0, 0x1C, 0xE0, 0x75, 0xE0, 0xF0, 0x75]
        );
    }

    #[test]
    fn translation_inverts_the_set_2_table() {
        for set1 in 1..0x59u8 {
            assert_eq!(translate(SET1_TO_SET2[set1 as usize]), set1);
        }
        assert_eq!(
            [translate(1), translate(2), translate(3)],
            [0x43, 0x41, 0x3F]
        );
    }

    #[test]
    fn keyboard_irq_follows_the_output_buffer_and_command_byte() {
        let mut bus = bus_with_kbc();
        kbc(&mut bus).push_key_bytes(&[0x1E, 0x9E]);
        bus.io_read(COMMAND_PORT, 1, 0);
        assert!(bus.irq_level(KEYBOARD_IRQ));
        bus.io_read(DATA_PORT, 1, 0);
        assert!(bus.irq_level(KEYBOARD_IRQ), "the next byte raised it again");
        bus.io_read(DATA_PORT, 1, 0);
        assert!(!bus.irq_level(KEYBOARD_IRQ));
        set_command_byte(&mut bus, 0x64);
        kbc(&mut bus).push_key_bytes(&[0x1E]);
        bus.io_read(COMMAND_PORT, 1, 0);
        assert!(!bus.irq_level(KEYBOARD_IRQ), "interrupt disabled");
        set_command_byte(&mut bus, 0x65);
        assert!(bus.irq_level(KEYBOARD_IRQ));
    }

    #[test]
    fn disabled_keyboard_holds_its_bytes() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xAD);
        kbc(&mut bus).push_key_bytes(&[0x1E]);
        assert!(drain(&mut bus).is_empty());
        // Controller replies still come through.
        command(&mut bus, 0xAA);
        assert_eq!(drain(&mut bus), [0x55]);
        command(&mut bus, 0xAE);
        assert_eq!(drain(&mut bus), [0x1E]);
        // Not scanning: the key waits for F4.
        data(&mut bus, 0xF5);
        kbc(&mut bus).push_key_bytes(&[0x1F]);
        assert_eq!(drain(&mut bus), [0xFA]);
        data(&mut bus, 0xF4);
        assert_eq!(drain(&mut bus), [0xFA, 0x1F]);
    }

    #[test]
    fn aux_port_has_no_mouse() {
        let mut bus = bus_with_kbc();
        command(&mut bus, 0xA8);
        command(&mut bus, 0x20);
        assert_eq!(drain(&mut bus)[0] & CMD_AUX_DISABLE, 0);
        command(&mut bus, 0xA7);
        command(&mut bus, 0x20);
        assert_ne!(drain(&mut bus)[0] & CMD_AUX_DISABLE, 0);
        command(&mut bus, 0xA9);
        assert_eq!(drain(&mut bus), [0x00]);
        // A mouse reset: nobody answers.
        command(&mut bus, 0xD4);
        data(&mut bus, 0xFF);
        assert!(drain(&mut bus).is_empty());
        // The loop-back command places a byte as if the mouse sent it.
        set_command_byte(&mut bus, 0x47);
        command(&mut bus, 0xD3);
        data(&mut bus, 0x5A);
        assert_ne!(bus.io_read(COMMAND_PORT, 1, 0) as u8 & STATUS_AUXB, 0);
        assert!(bus.irq_level(AUX_IRQ));
        assert!(!bus.irq_level(KEYBOARD_IRQ));
        assert_eq!(drain(&mut bus), [0x5A]);
        assert!(!bus.irq_level(AUX_IRQ));
    }

    #[test]
    fn polling_the_data_port_wants_input_and_the_status_port_does_not() {
        let mut bus = bus_with_kbc();
        assert_eq!(bus.io_read(COMMAND_PORT, 1, 1000) as u8 & STATUS_OBF, 0);
        assert!(
            !bus.signals.input_wanted,
            "firmware polls the status port for its own commands' replies"
        );
        bus.io_read(DATA_PORT, 1, 1000);
        assert!(bus.signals.input_wanted, "a read of an empty data port");
        bus.signals.input_wanted = false;
        // A controller command waiting for its data byte: no key now.
        command(&mut bus, 0x60);
        bus.io_read(DATA_PORT, 1, 0);
        assert!(!bus.signals.input_wanted, "the command byte is on its way");
        data(&mut bus, 0x65);
        // The keyboard interface disabled: no key either.
        command(&mut bus, 0xAD);
        bus.io_read(DATA_PORT, 1, 0);
        assert!(!bus.signals.input_wanted, "the interface is disabled");
        command(&mut bus, 0xAE);
        kbc(&mut bus).set_input_requests(InputRequests::Off);
        bus.io_read(DATA_PORT, 1, 0);
        assert!(!bus.signals.input_wanted, "no host input is attached");
    }

    #[test]
    fn paced_keys_are_asked_for_a_byte_time_after_the_guest_can_receive_one() {
        let mut bus = bus_with_kbc();
        kbc(&mut bus).set_input_requests(InputRequests::Paced);
        // A BIOS's self test: poll the status port, send AAh, read 55h.
        bus.io_read(COMMAND_PORT, 1, 1000);
        assert!(!bus.signals.input_wanted);
        assert_eq!(bus.next_deadline(), 1000 + KEYBOARD_BYTE_NS);
        bus.io_write(COMMAND_PORT, 1, 0xAA, 1200);
        assert_eq!(bus.next_deadline(), u64::MAX, "a reply is on its way");
        assert_eq!(bus.io_read(DATA_PORT, 1, 1300), 0x55, "no key before it");
        let due = 1300 + KEYBOARD_BYTE_NS;
        assert_eq!(bus.next_deadline(), due);
        bus.run_timers(due - 1);
        assert!(!bus.signals.input_wanted, "not due yet");
        bus.run_timers(due);
        assert!(bus.signals.input_wanted);
        bus.signals.input_wanted = false;
        assert_eq!(
            bus.next_deadline(),
            due + KEYBOARD_BYTE_NS,
            "nothing given: asked again a byte time later"
        );
        // The host gives a key (hostio::give_host_input: queue, then the
        // timer callback).
        kbc(&mut bus).push_ascii(b'a');
        bus.poke::<KeyboardController>(due);
        assert!(bus.irq_level(KEYBOARD_IRQ));
        assert_eq!(bus.next_deadline(), u64::MAX, "the key is being read");
        assert_eq!(bus.io_read(DATA_PORT, 1, due + 10), 0x1E);
        assert_eq!(bus.io_read(DATA_PORT, 1, due + 20), 0x9E);
        assert_eq!(bus.next_deadline(), due + 20 + KEYBOARD_BYTE_NS);
        // Requests turned off: the pending one is cancelled.
        kbc(&mut bus).set_input_requests(InputRequests::Off);
        bus.poke::<KeyboardController>(due + 30);
        assert_eq!(bus.next_deadline(), u64::MAX);
    }

    #[test]
    fn state_round_trips() {
        let mut bus = bus_with_kbc();
        set_command_byte(&mut bus, 0x47);
        kbc(&mut bus).push_key_bytes(&[0x10, 0x90]);
        command(&mut bus, 0xD1);
        let saved = kbc(&mut bus).save_state();
        let mut other = KeyboardController::new();
        other.restore_state(&saved).unwrap();
        assert_eq!(other.save_state(), saved);
        let mut bus = Bus::new();
        let id = bus.add(Box::new(other));
        bus.claim_ports(id, DATA_PORT, DATA_PORT);
        bus.claim_ports(id, COMMAND_PORT, COMMAND_PORT);
        data(&mut bus, 0xDD);
        assert_eq!(bus.signals.a20, Some(false), "the pending D1 survived");
        assert_eq!(drain(&mut bus), [0x10, 0x90]);

        let mut k = KeyboardController::new();
        let before = k.save_state();
        let mut short = before.clone();
        short["ram"] = serde_json::json!([0]);
        for garbage in [serde_json::json!({"ram": "x"}), short, Value::Null] {
            assert!(k.restore_state(&garbage).is_err());
            assert_eq!(k.save_state(), before, "a failed restore changes nothing");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read(u16, u8),
        Write(u16, u8, u8),
        Keys(Vec<u8>),
        Ascii(u8),
        Timers,
    }

    fn op() -> impl Strategy<Value = Op> {
        let port = prop_oneof![Just(DATA_PORT), Just(COMMAND_PORT), 0x5Fu16..=0x65];
        let size = prop_oneof![Just(1u8), Just(2), Just(4)];
        let kbc_byte = prop_oneof![any::<u8>(), 0xA7u8..=0xAE, 0xD0u8..=0xDF, 0xED..=0xFFu8];
        prop_oneof![
            (port.clone(), size.clone()).prop_map(|(p, s)| Op::Read(p, s)),
            (port, size, kbc_byte).prop_map(|(p, s, v)| Op::Write(p, s, v)),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Op::Keys),
            any::<u8>().prop_map(Op::Ascii),
            Just(Op::Timers),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn kbc_survives_any_port_sequence(
            ops in proptest::collection::vec((op(), 0u64..2_000_000), 1..64),
        ) {
            let mut bus = Bus::new();
            let id = bus.add(Box::new(KeyboardController::new()));
            bus.claim_ports(id, DATA_PORT, COMMAND_PORT);
            let mut now = 0u64;
            for (op, dt) in ops {
                now += dt;
                match op {
                    Op::Read(p, s) => { bus.io_read(p, s, now); }
                    Op::Write(p, s, v) => bus.io_write(p, s, v as u32 * 0x0101_0101, now),
                    Op::Keys(k) => kbc(&mut bus).push_key_bytes(&k),
                    Op::Ascii(c) => { kbc(&mut bus).push_ascii(c); }
                    Op::Timers => bus.run_timers(now),
                }
            }
            let state = kbc(&mut bus).save_state();
            let mut fresh = KeyboardController::new();
            prop_assert!(fresh.restore_state(&state).is_ok());
        }
    }
}
