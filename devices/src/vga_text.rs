//! CGA/VGA 80x25 colour text mode: the registers a text-mode guest
//! programs, and a renderer for front-ends.
//!
//! The characters live in guest RAM at 0xB8000, two bytes a cell
//! (character, attribute). RAM here is plain memory, so the device does
//! not own it: a front-end passes those 32 KiB to [`VgaText::render`].
//! The device owns the ports, as the IBM VGA Technical Reference (IBM
//! Personal System/2 Hardware Interface Technical Reference, "Video
//! Subsystem") describes them:
//!
//! - the CRT controller at 0x3D4/0x3D5 (registers 00h-18h). The renderer
//!   follows the cursor start/end (0Ah/0Bh, with the cursor-off bit), the
//!   start address (0Ch/0Dh) and the cursor location (0Eh/0Fh);
//! - Input Status Register 1 at 0x3DA, whose retrace bits follow virtual
//!   time, and whose read resets the attribute controller's flip-flop;
//! - the attribute controller (0x3C0/0x3C1), miscellaneous output
//!   (0x3C2 write, 0x3CC read), sequencer (0x3C4/0x3C5), DAC (0x3C6-0x3C9),
//!   feature control (0x3DA write, 0x3CA read) and graphics controller
//!   (0x3CE/0x3CF), which are stored and read back but change nothing:
//!   fonts, colours, graphics modes and the 0x3Bx monochrome addresses
//!   are not emulated.

use std::any::Any;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the colour text buffer sits in guest physical memory.
pub const TEXT_BUFFER: u32 = 0xB8000;
/// The size of the text buffer window (0xB8000-0xBFFFF).
pub const TEXT_BUFFER_SIZE: usize = 0x8000;
pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
/// The port ranges the device answers.
pub const PORT_RANGES: [(u16, u16); 3] = [(0x3C0, 0x3CF), (0x3D4, 0x3D5), (0x3DA, 0x3DA)];

const ATTRIBUTE_INDEX: u16 = 0x3C0;
const ATTRIBUTE_DATA_READ: u16 = 0x3C1;
const MISC_OUTPUT_WRITE: u16 = 0x3C2;
const SEQUENCER_INDEX: u16 = 0x3C4;
const SEQUENCER_DATA: u16 = 0x3C5;
const DAC_PEL_MASK: u16 = 0x3C6;
const DAC_READ_INDEX: u16 = 0x3C7;
const DAC_WRITE_INDEX: u16 = 0x3C8;
const DAC_DATA: u16 = 0x3C9;
const FEATURE_CONTROL_READ: u16 = 0x3CA;
const MISC_OUTPUT_READ: u16 = 0x3CC;
const GRAPHICS_INDEX: u16 = 0x3CE;
const GRAPHICS_DATA: u16 = 0x3CF;
const CRTC_INDEX: u16 = 0x3D4;
const CRTC_DATA: u16 = 0x3D5;
const INPUT_STATUS_1: u16 = 0x3DA;

// CRT controller registers.
const CURSOR_START: usize = 0x0A;
const CURSOR_END: usize = 0x0B;
const START_ADDRESS_HIGH: usize = 0x0C;
const START_ADDRESS_LOW: usize = 0x0D;
const CURSOR_LOCATION_HIGH: usize = 0x0E;
const CURSOR_LOCATION_LOW: usize = 0x0F;
const OVERFLOW: usize = 0x07;
const VERTICAL_RETRACE_END: usize = 0x11;
/// Cursor Start bit 5: the cursor is off.
const CURSOR_OFF: u8 = 0x20;
/// Vertical Retrace End bit 7: CRTC registers 00h-07h are write-protected
/// (all but Overflow bit 4, line compare bit 8).
const PROTECT_0_7: u8 = 0x80;
const OVERFLOW_LINE_COMPARE_8: u8 = 0x10;

/// Attribute Address Register bit 5, Palette Address Source: 0 hands the
/// palette to the CPU and blanks the screen.
const PALETTE_ADDRESS_SOURCE: u8 = 0x20;

// Input Status Register 1.
/// Bit 0: the raster is in a horizontal or vertical blanking interval
/// (display enable is inactive): the CPU can reach memory without snow.
const DISPLAY_DISABLED: u8 = 0x01;
/// Bit 3: vertical retrace.
const VERTICAL_RETRACE: u8 = 0x08;

/// The raster timing the input status bits follow, that of 640x480 at
/// 60 Hz: 525 lines of 31.778 us make a 16.68 ms frame, of which 45 lines
/// (1.43 ms) are vertical blanking and retrace; of each line's 800 dot
/// clocks at 25.175 MHz, 160 (6.356 us) are horizontal blanking. Mode 3
/// really scans 449 lines at 70 Hz; software polling for retrace edges
/// only needs them to come and go with time.
const FRAME_NS: u64 = 16_680_000;
const VERTICAL_RETRACE_NS: u64 = 1_430_000;
const LINE_NS: u64 = 31_778;
const HORIZONTAL_BLANK_NS: u64 = 6_356;

/// CRTC registers 00h-18h as the BIOS leaves them in mode 3 (80x25
/// colour text, 9x16 cells), so a guest that never calls the video BIOS
/// still sees a sane cursor.
const MODE3_CRTC: [u8; 25] = [
    0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x00,
    0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF,
];
const MODE3_SEQUENCER: [u8; 5] = [0x03, 0x00, 0x03, 0x00, 0x02];
const MODE3_GRAPHICS: [u8; 9] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF];
const MODE3_ATTRIBUTE: [u8; 21] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
    0x0C, 0x00, 0x0F, 0x08, 0x00,
];
/// Colour I/O addresses (0x3Dx), RAM enabled, 28.322 MHz clock, sync
/// polarities for 400 lines.
const MODE3_MISC_OUTPUT: u8 = 0x67;
const DAC_ENTRIES: usize = 256;

/// The VGA registers (what a saved state holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct VgaRegs {
    crtc_index: u8,
    crtc: [u8; 25],
    /// The attribute controller's index, with Palette Address Source.
    attribute_index: u8,
    /// The flip-flop that makes 0x3C0 alternate between index and data.
    attribute_expects_data: bool,
    attribute: [u8; 21],
    misc_output: u8,
    feature_control: u8,
    sequencer_index: u8,
    sequencer: [u8; 5],
    graphics_index: u8,
    graphics: [u8; 9],
    pel_mask: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    /// Which of red, green, blue the next DAC data access reaches.
    dac_component: u8,
    /// The last DAC index written was the read index (DAC State register).
    dac_reading: bool,
    /// 256 entries of red, green, blue, six bits each.
    palette: Vec<u8>,
}

impl Default for VgaRegs {
    fn default() -> Self {
        VgaRegs {
            crtc_index: 0,
            crtc: MODE3_CRTC,
            attribute_index: PALETTE_ADDRESS_SOURCE,
            attribute_expects_data: false,
            attribute: MODE3_ATTRIBUTE,
            misc_output: MODE3_MISC_OUTPUT,
            feature_control: 0,
            sequencer_index: 0,
            sequencer: MODE3_SEQUENCER,
            graphics_index: 0,
            graphics: MODE3_GRAPHICS,
            pel_mask: 0xFF,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_component: 0,
            dac_reading: false,
            palette: vec![0; DAC_ENTRIES * 3],
        }
    }
}

/// The VGA in 80x25 colour text mode.
#[derive(Default)]
pub struct VgaText {
    regs: VgaRegs,
}

/// What the screen shows: 80x25 cells of (character, attribute), row by
/// row, and the cursor's (row, column) when it is visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    pub cells: Vec<(u8, u8)>,
    pub cursor: Option<(u8, u8)>,
}

impl Screen {
    /// The screen as 25 lines of text, CP437 mapped to Unicode, trailing
    /// spaces trimmed, each line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(ROWS * (COLUMNS + 1));
        for row in self.cells.chunks(COLUMNS) {
            let line: String = row.iter().map(|&(ch, _)| cp437_to_char(ch)).collect();
            text.push_str(line.trim_end_matches(' '));
            text.push('\n');
        }
        text
    }
}

impl VgaText {
    pub fn new() -> VgaText {
        VgaText::default()
    }

    /// The screen the CRTC shows from `vram`, the 32 KiB at 0xB8000.
    /// Display memory is addressed in cells from the start address and
    /// wraps at the end of the window.
    pub fn render(&self, vram: &[u8]) -> Screen {
        let cells_in_window = TEXT_BUFFER_SIZE / 2;
        let start = self.crtc_word(START_ADDRESS_HIGH, START_ADDRESS_LOW) as usize;
        let cells = (0..COLUMNS * ROWS)
            .map(|i| {
                let offset = (start + i) % cells_in_window * 2;
                let ch = vram.get(offset).copied().unwrap_or(0);
                let attr = vram.get(offset + 1).copied().unwrap_or(0);
                (ch, attr)
            })
            .collect();
        Screen {
            cells,
            cursor: self.cursor(start, cells_in_window),
        }
    }

    /// The cursor's place on screen. It is off when Cursor Start bit 5 is
    /// set, or when its first scan line lies below its last (the VGA then
    /// draws nothing), or when it sits outside the 25 rows shown.
    fn cursor(&self, start: usize, cells_in_window: usize) -> Option<(u8, u8)> {
        let first_line = self.regs.crtc[CURSOR_START];
        let last_line = self.regs.crtc[CURSOR_END] & 0x1F;
        if first_line & CURSOR_OFF != 0 || first_line & 0x1F > last_line {
            return None;
        }
        let location = self.crtc_word(CURSOR_LOCATION_HIGH, CURSOR_LOCATION_LOW) as usize;
        let cell = (location + cells_in_window - start % cells_in_window) % cells_in_window;
        (cell < COLUMNS * ROWS).then_some(((cell / COLUMNS) as u8, (cell % COLUMNS) as u8))
    }

    fn crtc_word(&self, high: usize, low: usize) -> u16 {
        u16::from_be_bytes([self.regs.crtc[high], self.regs.crtc[low]])
    }

    fn read_register(&mut self, port: u16, now_ns: u64) -> u8 {
        let r = &mut self.regs;
        match port {
            ATTRIBUTE_INDEX => r.attribute_index,
            ATTRIBUTE_DATA_READ => read_indexed(&r.attribute, r.attribute_index & 0x1F),
            // Input Status Register 0: no switch sense, no CRT interrupt.
            MISC_OUTPUT_WRITE => 0x00,
            SEQUENCER_INDEX => r.sequencer_index,
            SEQUENCER_DATA => read_indexed(&r.sequencer, r.sequencer_index),
            DAC_PEL_MASK => r.pel_mask,
            // DAC State: 11b after a read index was written, 00b after a
            // write index.
            DAC_READ_INDEX => {
                if r.dac_reading {
                    0x03
                } else {
                    0x00
                }
            }
            DAC_WRITE_INDEX => r.dac_write_index,
            DAC_DATA => {
                let value = r
                    .palette
                    .get(r.dac_read_index as usize * 3 + r.dac_component as usize)
                    .copied()
                    .unwrap_or(0);
                if r.next_dac_component() {
                    r.dac_read_index = r.dac_read_index.wrapping_add(1);
                }
                value
            }
            FEATURE_CONTROL_READ => r.feature_control,
            MISC_OUTPUT_READ => r.misc_output,
            GRAPHICS_INDEX => r.graphics_index,
            GRAPHICS_DATA => read_indexed(&r.graphics, r.graphics_index),
            CRTC_INDEX => r.crtc_index,
            CRTC_DATA => read_indexed(&r.crtc, r.crtc_index),
            INPUT_STATUS_1 => {
                // Software reads this port to put the attribute flip-flop
                // in a known state (expecting an index) before using 0x3C0.
                r.attribute_expects_data = false;
                input_status_1(now_ns)
            }
            _ => 0xFF,
        }
    }

    fn write_register(&mut self, port: u16, value: u8) {
        let r = &mut self.regs;
        match port {
            ATTRIBUTE_INDEX if r.attribute_expects_data => {
                write_indexed(&mut r.attribute, r.attribute_index & 0x1F, value);
                r.attribute_expects_data = false;
            }
            ATTRIBUTE_INDEX => {
                r.attribute_index = value & 0x3F;
                r.attribute_expects_data = true;
            }
            MISC_OUTPUT_WRITE => r.misc_output = value,
            SEQUENCER_INDEX => r.sequencer_index = value & 0x07,
            SEQUENCER_DATA => write_indexed(&mut r.sequencer, r.sequencer_index, value),
            DAC_PEL_MASK => r.pel_mask = value,
            DAC_READ_INDEX => {
                r.dac_read_index = value;
                r.dac_component = 0;
                r.dac_reading = true;
            }
            DAC_WRITE_INDEX => {
                r.dac_write_index = value;
                r.dac_component = 0;
                r.dac_reading = false;
            }
            DAC_DATA => {
                let slot = r.dac_write_index as usize * 3 + r.dac_component as usize;
                if let Some(entry) = r.palette.get_mut(slot) {
                    // The DAC keeps six bits per colour.
                    *entry = value & 0x3F;
                }
                if r.next_dac_component() {
                    r.dac_write_index = r.dac_write_index.wrapping_add(1);
                }
            }
            GRAPHICS_INDEX => r.graphics_index = value & 0x0F,
            GRAPHICS_DATA => write_indexed(&mut r.graphics, r.graphics_index, value),
            CRTC_INDEX => r.crtc_index = value & 0x1F,
            CRTC_DATA => self.write_crtc(value),
            INPUT_STATUS_1 => r.feature_control = value,
            _ => {}
        }
    }

    /// A CRTC data write, honouring the protect bit that keeps a program
    /// from changing the horizontal timing and wrecking the monitor's sync.
    fn write_crtc(&mut self, value: u8) {
        let r = &mut self.regs;
        let index = r.crtc_index as usize;
        let protected = r.crtc[VERTICAL_RETRACE_END] & PROTECT_0_7 != 0;
        match index {
            OVERFLOW if protected => {
                r.crtc[OVERFLOW] = (r.crtc[OVERFLOW] & !OVERFLOW_LINE_COMPARE_8)
                    | (value & OVERFLOW_LINE_COMPARE_8);
            }
            0..=7 if protected => {}
            _ => write_indexed(&mut r.crtc, r.crtc_index, value),
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("vga-text", reason)
    }
}

impl VgaRegs {
    /// Step through red, green, blue; true when an entry is complete and
    /// the index moves on.
    fn next_dac_component(&mut self) -> bool {
        self.dac_component += 1;
        if self.dac_component == 3 {
            self.dac_component = 0;
            true
        } else {
            false
        }
    }
}

/// An indexed register; an index past the last register reads as all ones.
fn read_indexed(regs: &[u8], index: u8) -> u8 {
    regs.get(index as usize).copied().unwrap_or(0xFF)
}

/// Write an indexed register; an index past the last one is ignored.
fn write_indexed(regs: &mut [u8], index: u8, value: u8) {
    if let Some(r) = regs.get_mut(index as usize) {
        *r = value;
    }
}

/// Input Status Register 1 at virtual time `now_ns`.
fn input_status_1(now_ns: u64) -> u8 {
    let in_frame = now_ns % FRAME_NS;
    let vertical = in_frame >= FRAME_NS - VERTICAL_RETRACE_NS;
    let horizontal = in_frame % LINE_NS >= LINE_NS - HORIZONTAL_BLANK_NS;
    let mut status = 0;
    if vertical {
        status |= VERTICAL_RETRACE;
    }
    if vertical || horizontal {
        status |= DISPLAY_DISABLED;
    }
    status
}

impl Device for VgaText {
    fn name(&self) -> &'static str {
        "vga-text"
    }

    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        // A wider access reaches consecutive byte-wide ports.
        (0..size.min(4)).fold(0, |acc, i| {
            acc | (self.read_register(port.wrapping_add(i as u16), ctx.now_ns) as u32) << (8 * i)
        })
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, _ctx: &mut DeviceCtx) {
        // `out dx, ax` to an index port writes the index (AL), then the
        // data register above it (AH): the usual way to set a register.
        for i in 0..size.min(4) {
            self.write_register(port.wrapping_add(i as u16), (value >> (8 * i)) as u8);
        }
    }

    fn save_state(&self) -> Value {
        serde_json::to_value(&self.regs).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let regs = VgaRegs::deserialize(state).map_err(Self::state_error)?;
        if regs.palette.len() != DAC_ENTRIES * 3 {
            return Err(Self::state_error("the DAC palette must have 768 entries"));
        }
        if regs.dac_component >= 3 {
            return Err(Self::state_error("DAC component out of range"));
        }
        self.regs = regs;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Code page 437, the PC's character set: the glyphs the VGA's ROM font
/// draws for each byte, as Unicode.
fn cp437_to_char(byte: u8) -> char {
    match byte {
        0x00 => ' ',
        0x01..=0x1F => CP437_CONTROL[byte as usize - 1],
        0x7F => '⌂',
        0x20..=0x7E => byte as char,
        0x80..=0xFF => CP437_HIGH[byte as usize - 0x80],
    }
}

const CP437_CONTROL: [char; 31] = [
    '☺', '☻', '♥', '♦', '♣', '♠', '•', '◘', '○', '◙', '♂', '♀', '♪', '♫', '☼', '►', '◄', '↕', '‼',
    '¶', '§', '▬', '↨', '↑', '↓', '→', '←', '∟', '↔', '▲', '▼',
];

/// 0x80-0xFF; 0xFF, a blank glyph, maps to a plain space.
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', ' ', //
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringside_core::bus::Bus;

    fn bus_with_vga() -> Bus {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(VgaText::new()));
        for (first, last) in PORT_RANGES {
            bus.claim_ports(id, first, last);
        }
        bus
    }

    fn set_crtc(bus: &mut Bus, index: u8, value: u8) {
        bus.io_write(CRTC_INDEX, 1, index as u32, 0);
        bus.io_write(CRTC_DATA, 1, value as u32, 0);
    }

    fn vram_with(text: &[(usize, &str)]) -> Vec<u8> {
        let mut vram = vec![0u8; TEXT_BUFFER_SIZE];
        for cell in vram.chunks_exact_mut(2) {
            cell.copy_from_slice(&[b' ', 0x07]);
        }
        for &(cell, s) in text {
            for (i, b) in s.bytes().enumerate() {
                vram[(cell + i) * 2] = b;
                vram[(cell + i) * 2 + 1] = 0x1F;
            }
        }
        vram
    }

    fn render(bus: &mut Bus, vram: &[u8]) -> Screen {
        bus.find_device::<VgaText>().unwrap().render(vram)
    }

    #[test]
    fn render_shows_characters_and_cursor() {
        let mut bus = bus_with_vga();
        let vram = vram_with(&[(0, "Hello"), (2 * 80 + 3, "world")]);
        set_crtc(&mut bus, CURSOR_LOCATION_HIGH as u8, 0);
        set_crtc(&mut bus, CURSOR_LOCATION_LOW as u8, 85);
        let screen = render(&mut bus, &vram);
        assert_eq!(screen.cells.len(), COLUMNS * ROWS);
        assert_eq!(screen.cells[0], (b'H', 0x1F));
        assert_eq!(screen.cells[5], (b' ', 0x07));
        assert_eq!(screen.cursor, Some((1, 5)));
        let text = screen.to_text();
        assert_eq!(text.lines().count(), ROWS);
        assert!(text.starts_with("Hello\n\n   world\n\n"), "{text:?}");
    }

    #[test]
    fn cursor_disable_bit_hides_the_cursor() {
        let mut bus = bus_with_vga();
        let vram = vram_with(&[]);
        assert_eq!(render(&mut bus, &vram).cursor, Some((0, 0)));
        set_crtc(&mut bus, CURSOR_START as u8, CURSOR_OFF | 0x0D);
        assert_eq!(render(&mut bus, &vram).cursor, None);
        set_crtc(&mut bus, CURSOR_START as u8, 0x0D);
        assert_eq!(render(&mut bus, &vram).cursor, Some((0, 0)));
        // A first scan line below the last one draws no cursor either.
        set_crtc(&mut bus, CURSOR_START as u8, 0x0F);
        assert_eq!(render(&mut bus, &vram).cursor, None);
    }

    #[test]
    fn start_address_scrolls_the_view() {
        let mut bus = bus_with_vga();
        let vram = vram_with(&[(0, "first"), (80, "second"), (25 * 80, "below")]);
        set_crtc(&mut bus, START_ADDRESS_HIGH as u8, 0);
        set_crtc(&mut bus, START_ADDRESS_LOW as u8, 80);
        set_crtc(&mut bus, CURSOR_LOCATION_LOW as u8, 81);
        let screen = render(&mut bus, &vram);
        let text = screen.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "second");
        assert_eq!(lines[24], "below");
        assert_eq!(
            screen.cursor,
            Some((0, 1)),
            "the cursor moves with the view"
        );

        // The view wraps at the end of the 32 KiB window.
        set_crtc(&mut bus, START_ADDRESS_HIGH as u8, 0x3F);
        set_crtc(&mut bus, START_ADDRESS_LOW as u8, 0xB0);
        assert_eq!(
            render(&mut bus, &vram).to_text().lines().nth(1),
            Some("first")
        );
    }

    #[test]
    fn retrace_bit_toggles_with_virtual_time() {
        let mut bus = bus_with_vga();
        let retrace = |bus: &mut Bus, t: u64| bus.io_read(INPUT_STATUS_1, 1, t) as u8;
        assert_eq!(retrace(&mut bus, 0) & VERTICAL_RETRACE, 0);
        let in_retrace = FRAME_NS - VERTICAL_RETRACE_NS + 1_000;
        assert_eq!(
            retrace(&mut bus, in_retrace),
            VERTICAL_RETRACE | DISPLAY_DISABLED
        );
        assert_eq!(
            retrace(&mut bus, FRAME_NS) & VERTICAL_RETRACE,
            0,
            "next frame"
        );
        assert_eq!(
            retrace(&mut bus, 2 * FRAME_NS + in_retrace) & VERTICAL_RETRACE,
            VERTICAL_RETRACE
        );
        // Within the visible lines, bit 0 marks each horizontal blank.
        assert_eq!(retrace(&mut bus, 100), 0);
        assert_eq!(retrace(&mut bus, LINE_NS - 100), DISPLAY_DISABLED);
    }

    #[test]
    fn word_write_to_an_index_port_sets_index_and_data() {
        let mut bus = bus_with_vga();
        bus.io_write(CRTC_INDEX, 2, 0x3400 | CURSOR_LOCATION_LOW as u32, 0);
        bus.io_write(CRTC_INDEX, 1, CURSOR_LOCATION_LOW as u32, 0);
        assert_eq!(bus.io_read(CRTC_DATA, 1, 0), 0x34);
        bus.io_write(SEQUENCER_INDEX, 2, 0x0F02, 0);
        assert_eq!(bus.io_read(SEQUENCER_DATA, 1, 0), 0x0F);
    }

    #[test]
    fn reading_input_status_resets_the_attribute_flip_flop() {
        let mut bus = bus_with_vga();
        bus.io_write(ATTRIBUTE_INDEX, 1, 0x21, 0);
        bus.io_read(INPUT_STATUS_1, 1, 0);
        // The flip-flop expects an index again: 0x32 selects register 12h.
        bus.io_write(ATTRIBUTE_INDEX, 1, 0x32, 0);
        bus.io_write(ATTRIBUTE_INDEX, 1, 0x05, 0);
        assert_eq!(bus.io_read(ATTRIBUTE_INDEX, 1, 0), 0x32);
        assert_eq!(bus.io_read(ATTRIBUTE_DATA_READ, 1, 0), 0x05);
        bus.io_write(ATTRIBUTE_INDEX, 1, 0x21, 0);
        assert_eq!(
            bus.io_read(ATTRIBUTE_DATA_READ, 1, 0),
            MODE3_ATTRIBUTE[1] as u32,
            "register 01h untouched"
        );
    }

    #[test]
    fn crtc_protect_bit_guards_the_timing_registers() {
        let mut bus = bus_with_vga();
        set_crtc(&mut bus, 0x00, 0x12);
        assert_eq!(bus.io_read(CRTC_DATA, 1, 0), MODE3_CRTC[0] as u32);
        set_crtc(&mut bus, OVERFLOW as u8, 0x00);
        assert_eq!(bus.io_read(CRTC_DATA, 1, 0), (MODE3_CRTC[7] & !0x10) as u32);
        set_crtc(&mut bus, VERTICAL_RETRACE_END as u8, 0x0E);
        set_crtc(&mut bus, 0x00, 0x12);
        assert_eq!(bus.io_read(CRTC_DATA, 1, 0), 0x12);
    }

    #[test]
    fn dac_data_steps_through_red_green_blue() {
        let mut bus = bus_with_vga();
        bus.io_write(DAC_WRITE_INDEX, 1, 7, 0);
        for v in [0x3F, 0x20, 0xFF, 0x01] {
            bus.io_write(DAC_DATA, 1, v, 0);
        }
        assert_eq!(bus.io_read(DAC_WRITE_INDEX, 1, 0), 8);
        bus.io_write(DAC_READ_INDEX, 1, 7, 0);
        assert_eq!(bus.io_read(DAC_READ_INDEX, 1, 0), 3, "DAC state: reading");
        let rgb: Vec<u32> = (0..4).map(|_| bus.io_read(DAC_DATA, 1, 0)).collect();
        assert_eq!(rgb, [0x3F, 0x20, 0x3F, 0x01]);
    }

    #[test]
    fn to_text_maps_cp437_to_unicode() {
        let mut cells = vec![(b' ', 0x07); COLUMNS * ROWS];
        for (i, b) in [0xC9u8, 0xCD, 0xBB, 0x01, b'A', 0x00]
            .into_iter()
            .enumerate()
        {
            cells[i] = (b, 0x07);
        }
        let screen = Screen {
            cells,
            cursor: None,
        };
        assert!(screen.to_text().starts_with("╔═╗☺A\n"));
    }

    #[test]
    fn state_round_trips() {
        let mut bus = bus_with_vga();
        set_crtc(&mut bus, CURSOR_LOCATION_LOW as u8, 0x42);
        bus.io_write(DAC_WRITE_INDEX, 1, 3, 0);
        bus.io_write(DAC_DATA, 1, 0x11, 0);
        bus.io_write(ATTRIBUTE_INDEX, 1, 0x30, 0);
        let vga = bus.find_device::<VgaText>().unwrap();
        let saved = vga.save_state();
        let mut copy = VgaText::new();
        copy.restore_state(&saved).unwrap();
        assert_eq!(copy.regs, vga.regs);

        let mut short_palette = saved.clone();
        short_palette["palette"] = serde_json::json!([1, 2, 3]);
        let mut long_crtc = saved.clone();
        long_crtc["crtc"] = serde_json::json!(vec![0u8; 26]);
        for garbage in [serde_json::json!("vga"), short_palette, long_crtc] {
            assert!(copy.restore_state(&garbage).is_err());
            assert_eq!(copy.save_state(), saved, "a failed restore changes nothing");
        }
    }

    fn vga_port() -> impl Strategy<Value = u16> {
        prop_oneof![
            4 => 0x3C0u16..=0x3CF,
            4 => prop::sample::select(vec![CRTC_INDEX, CRTC_DATA, INPUT_STATUS_1]),
            1 => any::<u16>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_port_sequences_never_panic(
            accesses in prop::collection::vec(
                (vga_port(), prop::sample::select(vec![1u8, 2, 4]), any::<u32>(), any::<bool>(), any::<u64>()),
                0..64,
            ),
            vram_len in prop::sample::select(vec![0usize, 1, 4001, TEXT_BUFFER_SIZE]),
        ) {
            let mut bus = bus_with_vga();
            for (port, size, value, write, now) in accesses {
                if write {
                    bus.io_write(port, size, value, now);
                } else {
                    bus.io_read(port, size, now);
                }
            }
            let vga = bus.find_device::<VgaText>().unwrap();
            let screen = vga.render(&vec![0x41; vram_len]);
            prop_assert_eq!(screen.to_text().lines().count(), ROWS);
            let saved = vga.save_state();
            let mut copy = VgaText::new();
            prop_assert!(copy.restore_state(&saved).is_ok());
            prop_assert_eq!(copy.save_state(), saved);
        }
    }
}
