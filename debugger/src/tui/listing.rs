//! The disassembly pane's window: which instructions it shows, where the
//! cursor is, and how it scrolls.
//!
//! x86 code cannot be decoded backwards, so going back from an address
//! decodes forward from a point known to be an instruction boundary: the
//! start of the enclosing symbol when it is close enough, otherwise the
//! farthest byte before the address from which decoding lands exactly on
//! it (variable-length decoding resynchronises within a few instructions,
//! so this is right in practice, though not guaranteed).

use iced_x86::{Decoder, DecoderOptions};
use ringside_core::cpu::SegReg;
use ringside_core::Machine;

use crate::inspect::{self, Syntax};
use crate::symbols::Symbols;

/// How far back a symbol's start may be to decode from it.
const SYMBOL_REACH: u32 = 4096;
/// How many bytes back the resynchronising search starts.
const PROBE_BYTES: u32 = 64;

/// The instructions the pane shows and the cursor among them.
#[derive(Default)]
pub struct Listing {
    /// CS-relative offset of the first instruction shown.
    start: u32,
    /// The instructions from `start`, one per row the pane has.
    pub lines: Vec<inspect::Line>,
    /// Index in `lines` of the cursor.
    pub cursor: usize,
    /// How many of `lines` fitted in the pane at the last draw (symbol
    /// labels take rows too).
    pub visible: usize,
    /// The CS base and EIP the window was placed around; when the CPU
    /// moves, the window follows it.
    placed_for: Option<(u32, u32)>,
}

impl Listing {
    /// Bring the window up to date for a pane of `rows` rows: placed
    /// around EIP (a quarter of the rows before it, the cursor on it) when
    /// the CPU has moved since, else where the cursor keys left it.
    pub fn refresh(&mut self, m: &mut Machine, symbols: &Symbols, syntax: Syntax, rows: usize) {
        let here = (m.cpu.seg[SegReg::Cs as usize].base, m.cpu.eip);
        let moved = self.placed_for != Some(here);
        if moved {
            self.start = back(m, symbols, here.1, rows / 4);
            self.placed_for = Some(here);
        }
        self.lines = inspect::disassemble(m, symbols, self.start, rows.max(1), syntax);
        if moved {
            self.cursor = self.lines.iter().position(|l| l.eip == here.1).unwrap_or(0);
        }
        self.cursor = self.cursor.min(self.lines.len().saturating_sub(1));
    }

    /// The instruction under the cursor.
    pub fn at_cursor(&self) -> Option<&inspect::Line> {
        self.lines.get(self.cursor)
    }

    /// Cursor down one instruction; at the bottom row the window scrolls.
    pub fn down(&mut self) {
        if self.cursor + 1 < self.visible.min(self.lines.len()) {
            self.cursor += 1;
        } else if let Some(next) = self.lines.get(1) {
            self.start = next.eip;
        }
    }

    /// Cursor up one instruction; at the top row the window scrolls back.
    pub fn up(&mut self, m: &mut Machine, symbols: &Symbols) {
        if self.cursor > 0 {
            self.cursor -= 1;
        } else {
            self.start = back(m, symbols, self.start, 1);
        }
    }
}

/// Where a symbol containing linear address `lin` starts.
fn symbol_start(symbols: &Symbols, lin: u32) -> Option<u32> {
    let name = symbols.describe(lin)?;
    match name.rsplit_once("+0x") {
        Some((_, off)) => u32::from_str_radix(off, 16)
            .ok()
            .map(|o| lin.wrapping_sub(o)),
        None => Some(lin),
    }
}

/// A CS-relative offset up to `n` instructions before `target` from which
/// decoding forward lands on `target` (`target` itself if none is found).
fn back(m: &mut Machine, symbols: &Symbols, target: u32, n: usize) -> u32 {
    if n == 0 {
        return target;
    }
    let base = m.cpu.seg[SegReg::Cs as usize].base;
    let bits = if m.cpu.code32() { 32 } else { 16 };
    let lin = base.wrapping_add(target);
    let from_symbol = symbol_start(symbols, lin)
        .map(|s| lin.wrapping_sub(s))
        .filter(|&d| d > 0 && d <= SYMBOL_REACH && d <= target)
        .map(|d| target - d);
    let probes = (1..=PROBE_BYTES.min(target)).rev().map(|k| target - k);
    for start in from_symbol.into_iter().chain(probes) {
        if let Some(boundaries) = boundaries(m, base, bits, start, target) {
            let keep = boundaries.len().saturating_sub(n);
            return boundaries.get(keep).copied().unwrap_or(target);
        }
    }
    target
}

/// The instruction starts from `start` up to `target`, if the instructions
/// end exactly at `target` (all readable and valid).
fn boundaries(m: &mut Machine, base: u32, bits: u32, start: u32, target: u32) -> Option<Vec<u32>> {
    let bytes = m.peek_bytes(base.wrapping_add(start), target - start)?;
    let mut decoder = Decoder::with_ip(bits, &bytes, start as u64, DecoderOptions::NONE);
    let mut starts = Vec::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            return None;
        }
        starts.push(insn.ip32());
    }
    (!starts.is_empty()).then_some(starts)
}
