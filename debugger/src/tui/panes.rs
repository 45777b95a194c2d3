//! Drawing the UI: the layout and one function per pane.
//!
//! ```text
//! ┌Registers─┐┌Disassembly─────────────────────────────┐
//! │          ││                                        │
//! │          │└────────────────────────────────────────┘
//! └──────────┘┌Memory───────────────────┐┌COM1─────────┐
//! ┌Stack─────┐│                         ││             │
//! │          │└─────────────────────────┘└─────────────┘
//! │          │┌Output──────────────────────┐┌Engine────┐
//! │          ││> command line              ││          │
//! └──────────┘└────────────────────────────┘└──────────┘
//!  STOPPED  s step  n next  c cont  b break ...  q quit
//! ```
//!
//! Below 120x36 (an 80x24 terminal, say) the compact layout shows the
//! registers and the disassembly side by side, and under them the output
//! beside one other pane (COM1, stack, memory or engine: Tab cycles):
//!
//! ```text
//! ┌Registers─┐┌Disassembly──────────────┐
//! │          ││                         │
//! └──────────┘└─────────────────────────┘
//! ┌Output────────────────┐┌COM1 [Tab]──┐
//! │> command line        ││            │
//! └──────────────────────┘└────────────┘
//!  STOPPED  s step  n next  c cont  : cmd  ? help  q quit
//! ```
//!
//! Output lines longer than the pane wrap. Every pane draws into whatever
//! rectangle it gets: a small terminal clips panes, it never makes a
//! computation underflow.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;
use ringside_core::cpu::{reg, CpuState, SegReg};

use super::{console, App, Focus, Kind, SidePane, CHANGED, DIFFERENT, KEYS_HELP};
use crate::dbgf::StopCause;
use crate::inspect;
use crate::stops;

/// Below this size the panes do not fit and a note says so.
const MIN_WIDTH: u16 = 64;
const MIN_HEIGHT: u16 = 18;
/// Below this size the compact layout is used.
const FULL_WIDTH: u16 = 120;
const FULL_HEIGHT: u16 = 36;
/// The register column's width.
const LEFT_WIDTH: u16 = 30;
const STATS_WIDTH: u16 = 30;

/// The registers of compare mode, one a row: (label, name for
/// `stops::register_value`).
const COMPARED: [(&str, &str); 20] = [
    ("eax", "eax"),
    ("ebx", "ebx"),
    ("ecx", "ecx"),
    ("edx", "edx"),
    ("esi", "esi"),
    ("edi", "edi"),
    ("ebp", "ebp"),
    ("esp", "esp"),
    ("eip", "eip"),
    ("efl", "eflags"),
    ("cs", "cs"),
    ("ss", "ss"),
    ("ds", "ds"),
    ("es", "es"),
    ("fs", "fs"),
    ("gs", "gs"),
    ("cr0", "cr0"),
    ("cr2", "cr2"),
    ("cr3", "cr3"),
    ("cr4", "cr4"),
];

/// The single-machine register pane, two registers a row.
const PAIRS: [[&str; 2]; 10] = [
    ["eax", "esi"],
    ["ebx", "edi"],
    ["ecx", "ebp"],
    ["edx", "esp"],
    ["eip", "eflags"],
    ["cs", "ss"],
    ["ds", "es"],
    ["fs", "gs"],
    ["cr0", "cr2"],
    ["cr3", "cr4"],
];

fn value(c: &CpuState, name: &str) -> u32 {
    stops::register_value(c, name).unwrap_or(0)
}

/// A register's value as the pane prints it: selectors in 4 digits.
fn hex(name: &str, v: u32) -> String {
    if matches!(name, "cs" | "ss" | "ds" | "es" | "fs" | "gs") {
        format!("{v:04x}    ")
    } else {
        format!("{v:08x}")
    }
}

fn label(name: &str) -> &str {
    if name == "eflags" {
        "efl"
    } else {
        name
    }
}

fn bordered(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block.border_style(Style::new().fg(Color::Yellow))
    } else {
        block
    }
}

fn mode_name(c: &CpuState) -> &'static str {
    if !c.protected_mode() {
        "real mode"
    } else if c.vm86() {
        "virtual-8086"
    } else if c.paging() {
        "protected, paging"
    } else {
        "protected"
    }
}

impl App {
    /// Draw the whole UI into the frame.
    pub fn draw(&mut self, frame: &mut Frame) {
        let [main, bar] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(frame.area());
        self.draw_key_bar(frame, bar);
        if main.width < MIN_WIDTH || main.height < MIN_HEIGHT {
            let note = format!(
                "The terminal is {}x{}; the debugger's panes need at least {MIN_WIDTH}x{}. \
                 Keys still work (q quits).",
                frame.area().width,
                frame.area().height,
                MIN_HEIGHT + 1
            );
            frame.render_widget(Paragraph::new(note).wrap(Wrap { trim: true }), main);
            return;
        }
        if main.width < FULL_WIDTH || main.height < FULL_HEIGHT {
            self.draw_compact(frame, main);
        } else {
            self.draw_full(frame, main);
        }
        if self.help {
            draw_help(frame, main);
        }
    }

    /// The layout of a small terminal (80x24 and up to 120x36).
    fn draw_compact(&mut self, frame: &mut Frame, main: Rect) {
        let compare = self.debugger.partner.is_some();
        // The registers want 14 rows (25 in compare mode, which clips);
        // the output keeps at least 7.
        let top_rows = if compare { 25 } else { 14 };
        let top_rows = top_rows.min(main.height.saturating_sub(7));
        let [top, bottom] =
            Layout::vertical([Constraint::Length(top_rows), Constraint::Min(0)]).areas(main);
        let [registers, disassembly] =
            Layout::horizontal([Constraint::Length(LEFT_WIDTH), Constraint::Min(0)]).areas(top);
        let [output, side] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(STATS_WIDTH)]).areas(bottom);
        if compare {
            self.draw_compared_registers(frame, registers);
        } else {
            self.draw_registers(frame, registers);
        }
        self.draw_disassembly(frame, disassembly);
        self.draw_output(frame, output);
        match self.side {
            SidePane::Com1 => self.draw_console(frame, side),
            SidePane::Stack => self.draw_stack(frame, side),
            SidePane::Memory => self.draw_memory(frame, side),
            SidePane::Engine => self.draw_stats(frame, side),
        }
    }

    /// The layout of a large terminal: every pane at once.
    fn draw_full(&mut self, frame: &mut Frame, main: Rect) {
        let compare = self.debugger.partner.is_some();
        let [left, right] =
            Layout::horizontal([Constraint::Length(LEFT_WIDTH), Constraint::Min(0)]).areas(main);
        let registers_height = if compare { 25 } else { 14 };
        let [registers, stack] =
            Layout::vertical([Constraint::Length(registers_height), Constraint::Min(0)])
                .areas(left);
        let [disassembly, middle, bottom] = Layout::vertical([
            Constraint::Percentage(36),
            Constraint::Percentage(30),
            Constraint::Min(0),
        ])
        .areas(right);
        let [memory, com1] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Min(0)]).areas(middle);
        let [output, stats] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(STATS_WIDTH)]).areas(bottom);

        if compare {
            self.draw_compared_registers(frame, registers);
        } else {
            self.draw_registers(frame, registers);
        }
        self.draw_stack(frame, stack);
        self.draw_disassembly(frame, disassembly);
        self.draw_memory(frame, memory);
        self.draw_console(frame, com1);
        self.draw_output(frame, output);
        self.draw_stats(frame, stats);
    }

    /// Registers, two a row, those changed since the last stop
    /// highlighted.
    fn draw_registers(&self, frame: &mut Frame, area: Rect) {
        let now = &self.debugger.main.machine.cpu;
        let before = &self.debugger.previous;
        let style = |name: &str| {
            if value(now, name) != value(before, name) {
                CHANGED
            } else {
                Style::new()
            }
        };
        let mut lines = Vec::new();
        for (i, pair) in PAIRS.iter().enumerate() {
            let mut spans = Vec::new();
            for (j, name) in pair.iter().enumerate() {
                if j > 0 {
                    spans.push(Span::raw("  "));
                }
                spans.push(Span::raw(format!("{:<3} ", label(name))));
                spans.push(Span::styled(hex(name, value(now, name)), style(name)));
            }
            lines.push(Line::from(spans));
            if i == 4 {
                lines.push(Line::styled(
                    format!("    [{}]", inspect::flag_names(now.eflags)),
                    style("eflags"),
                ));
            }
        }
        lines.push(Line::raw(format!("cpl {}  {}", now.cpl(), mode_name(now))));
        frame.render_widget(
            Paragraph::new(lines).block(bordered(" Registers ".into(), false)),
            area,
        );
    }

    /// Compare mode: both machines' registers side by side; `*` and red
    /// where they differ, yellow where the first changed since the last
    /// stop.
    fn draw_compared_registers(&self, frame: &mut Frame, area: Rect) {
        let Some(partner) = self.debugger.partner.as_ref() else {
            return;
        };
        let a = &self.debugger.main.machine.cpu;
        let b = &partner.machine.cpu;
        let before = &self.debugger.previous;
        let mut lines = vec![Line::styled(
            format!(
                "      {:<8} {:<8}",
                self.debugger.engine_name(),
                partner.engine.name()
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        for (shown, name) in COMPARED {
            let (va, vb) = (value(a, name), value(b, name));
            let differs = va != vb;
            let changed = va != value(before, name);
            lines.push(Line::from(vec![
                Span::styled(
                    if differs { "* " } else { "  " },
                    if differs { DIFFERENT } else { Style::new() },
                ),
                Span::raw(format!("{shown:<3} ")),
                Span::styled(hex(name, va), if changed { CHANGED } else { Style::new() }),
                Span::raw(" "),
                Span::styled(
                    hex(name, vb),
                    if differs { DIFFERENT } else { Style::new() },
                ),
            ]));
        }
        lines.push(Line::raw(format!(
            "    [{}]",
            inspect::flag_names(a.eflags)
        )));
        lines.push(Line::raw(format!("cpl {}  {}", a.cpl(), mode_name(a))));
        frame.render_widget(
            Paragraph::new(lines).block(bordered(" Registers (compare) ".into(), false)),
            area,
        );
    }

    /// Dwords at SS:ESP, with the symbol a value points into (return
    /// addresses stand out).
    fn draw_stack(&mut self, frame: &mut Frame, area: Rect) {
        let m = &mut self.debugger.main.machine;
        let ss = m.cpu.seg(SegReg::Ss);
        let (sel, base) = (ss.selector, ss.base);
        let esp = if m.cpu.stack32() {
            m.cpu.gpr[reg::ESP]
        } else {
            m.cpu.gpr[reg::ESP] & 0xFFFF
        };
        let rows = area.height.saturating_sub(2) as u32;
        let mut lines = Vec::new();
        for i in 0..rows {
            let lin = base.wrapping_add(esp).wrapping_add(4 * i);
            let v = inspect::lin_u32(m, lin);
            let sym = v
                .and_then(|v| self.debugger.symbols.describe(v))
                .unwrap_or_default();
            let text = match v {
                Some(v) => format!("{lin:08x} {v:08x} {sym}"),
                None => format!("{lin:08x} ????????"),
            };
            lines.push(Line::raw(text));
        }
        frame.render_widget(
            Paragraph::new(lines).block(bordered(format!(" Stack {sel:04x}:{esp:08x} "), false)),
            area,
        );
    }

    /// Instructions around EIP: `=>` and green on the current one, `●` on
    /// breakpoints, the cursor reversed.
    fn draw_disassembly(&mut self, frame: &mut Frame, area: Rect) {
        let rows = area.height.saturating_sub(2) as usize;
        let symbols = self.debugger.symbols.clone();
        let syntax = self.debugger.syntax;
        let m = &mut self.debugger.main.machine;
        self.listing.refresh(m, &symbols, syntax, rows);
        let here = m.cpu.linear_eip();
        let cs = m.cpu.seg(SegReg::Cs).selector;
        let eip = m.cpu.eip;
        let breakpoints = self.debugger.breakpoint_addresses();
        let wide = area.width >= 72;
        let mut lines = Vec::new();
        let mut visible = 0;
        for (i, l) in self.listing.lines.iter().enumerate() {
            let label = l.symbol.as_deref().filter(|s| !s.contains('+'));
            let needed = if label.is_some() { 2 } else { 1 };
            if lines.len() + needed > rows {
                break;
            }
            if let Some(name) = label {
                lines.push(Line::styled(
                    format!("{name}:"),
                    Style::new().fg(Color::Cyan),
                ));
            }
            let current = l.linear == here;
            let mut style = if current {
                Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            if i == self.listing.cursor {
                style = style.add_modifier(Modifier::REVERSED);
            }
            // A narrow pane (the compact layout) keeps the instruction
            // whole and leaves the bytes out.
            let hex: String = if wide {
                let hex: String = l.bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("{hex:<16} ")
            } else {
                String::new()
            };
            let mark = if breakpoints.contains(&l.linear) {
                Span::styled("●", Style::new().fg(Color::Red))
            } else {
                Span::raw(" ")
            };
            lines.push(Line::from(vec![
                Span::styled(if current { "=>" } else { "  " }, style),
                mark,
                Span::styled(format!("{:08x}  {hex}{}", l.eip, l.text), style),
            ]));
            visible += 1;
        }
        self.listing.visible = visible;
        let sym = symbols
            .describe(here)
            .map(|s| format!(" <{s}>"))
            .unwrap_or_default();
        frame.render_widget(
            Paragraph::new(lines).block(bordered(
                format!(" Disassembly {cs:04x}:{eip:08x}{sym} "),
                false,
            )),
            area,
        );
    }

    /// A hex dump at the `mem` address (DS:0 by default), as wide as the
    /// pane allows.
    fn draw_memory(&mut self, frame: &mut Frame, area: Rect) {
        let (name, at) = match self.memory.clone() {
            Some(expr) => {
                let at = self.debugger.eval(&expr);
                (expr, at)
            }
            None => (
                "DS:0".to_string(),
                Ok(self.debugger.main.machine.cpu.seg(SegReg::Ds).base),
            ),
        };
        let inner_width = area.width.saturating_sub(2);
        let per_row: u32 = match inner_width {
            75.. => 16,
            43.. => 8,
            _ => 4,
        };
        let rows = area.height.saturating_sub(2) as u32;
        let (title, lines) = match at {
            Ok(at) => {
                let bytes = inspect::read_lin(&mut self.debugger.main.machine, at, rows * per_row);
                let lines: Vec<Line> = bytes
                    .chunks(per_row as usize)
                    .enumerate()
                    .map(|(i, row)| {
                        let dump = inspect::hex_dump(at.wrapping_add(i as u32 * per_row), row);
                        Line::raw(dump.trim_end().to_string())
                    })
                    .collect();
                (format!(" Memory {name} = {at:08x} "), lines)
            }
            Err(e) => (
                format!(" Memory {name} "),
                vec![Line::styled(e, Style::new().fg(Color::Red))],
            ),
        };
        frame.render_widget(Paragraph::new(lines).block(bordered(title, false)), area);
    }

    /// The tail of the guest's COM1 output.
    fn draw_console(&self, frame: &mut Frame, area: Rect) {
        let rows = area.height.saturating_sub(2) as usize;
        let lines: Vec<Line> = console::tail(&self.console, rows)
            .into_iter()
            .map(Line::raw)
            .collect();
        let title = if self.focus == Focus::Input {
            " COM1: typing to the guest (Esc ends) "
        } else if self.typed_while_stopped {
            " COM1: typed input waits until the guest runs (c) "
        } else {
            " COM1 "
        };
        frame.render_widget(
            Paragraph::new(lines).block(bordered(title.into(), self.focus == Focus::Input)),
            area,
        );
    }

    /// Command output (scrollable) over the command line.
    fn draw_output(&mut self, frame: &mut Frame, area: Rect) {
        let focused = self.focus == Focus::Command;
        let rows = area.height.saturating_sub(3) as usize;
        let width = area.width.saturating_sub(2) as usize;
        // Long lines wrap at the pane's edge; scrolling counts screen rows.
        // Only the newest lines that can be in view are wrapped.
        let wanted = rows + self.scroll;
        let mut wrapped: Vec<(String, Kind)> = Vec::new();
        for (text, kind) in self.output.iter().rev() {
            if wrapped.len() >= wanted + rows {
                break;
            }
            let pieces = wrap(text, width.max(1));
            for piece in pieces.into_iter().rev() {
                wrapped.push((piece, *kind));
            }
        }
        wrapped.reverse();
        let total = wrapped.len();
        self.scroll = self.scroll.min(total.saturating_sub(rows));
        let end = total - self.scroll;
        let start = end.saturating_sub(rows);
        // The newest output sits just above the command line.
        let blank = std::iter::repeat_n(Line::raw(""), rows - (end - start));
        let mut lines: Vec<Line> = blank
            .chain(wrapped[start..end].iter().map(|(text, kind)| {
                let style = match kind {
                    Kind::Echo => Style::new().fg(Color::Cyan),
                    Kind::Text => Style::new(),
                    Kind::Error => Style::new().fg(Color::Red),
                    Kind::Alert => DIFFERENT,
                };
                Line::styled(text.clone(), style)
            }))
            .collect();
        if focused {
            // The end of a long command stays in view.
            let room = width.saturating_sub(3);
            let skip = self.command.chars().count().saturating_sub(room);
            let shown: String = self.command.chars().skip(skip).collect();
            let x = area.x + 1 + 2 + shown.chars().count() as u16;
            let y = area.y + 1 + rows as u16;
            lines.push(Line::from(vec![
                Span::styled("> ", Style::new().fg(Color::Yellow)),
                Span::raw(shown),
            ]));
            if x < area.right().saturating_sub(1) && y < area.bottom().saturating_sub(1) {
                frame.set_cursor_position((x, y));
            }
        } else {
            lines.push(Line::styled(
                ": command (help lists them), ? keys",
                Style::new().fg(Color::DarkGray),
            ));
        }
        let title = if self.scroll > 0 {
            format!(" Output (back {} lines, PgDn) ", self.scroll)
        } else {
            " Output ".into()
        };
        frame.render_widget(Paragraph::new(lines).block(bordered(title, focused)), area);
    }

    /// The engine, where the run stands, and the engine's counters.
    fn draw_stats(&self, frame: &mut Frame, area: Rect) {
        let d = &self.debugger;
        let mut lines = vec![Line::raw(format!("engine  {}", d.engine_name()))];
        if let Some(p) = &d.partner {
            lines.push(Line::raw(format!("compare {}", p.engine.name())));
        }
        lines.push(Line::raw(format!(
            "insns   {}",
            d.main.machine.clock.icount
        )));
        let state = if self.running {
            Line::styled("state   running", Style::new().fg(Color::Green))
        } else {
            Line::raw("state   stopped")
        };
        lines.push(state);
        if let Some(cause) = &self.last_stop {
            let style = if matches!(cause, StopCause::Divergence(_)) {
                DIFFERENT
            } else {
                Style::new()
            };
            lines.push(Line::styled(format!("why     {cause}"), style));
        }
        lines.push(Line::raw(format!("stops   {}", d.stops().len())));
        let stats = d.stats();
        for (k, v) in &stats.counters {
            lines.push(Line::raw(format!("{k} {v}")));
        }
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(bordered(" Engine ".into(), false)),
            area,
        );
    }

    /// The bottom line: the state, then the keys of the focused mode.
    fn draw_key_bar(&self, frame: &mut Frame, area: Rect) {
        let diverged = matches!(self.last_stop, Some(StopCause::Divergence(_)));
        let (badge, badge_style) = if self.running {
            (" RUNNING ", Style::new().bg(Color::Green).fg(Color::Black))
        } else if diverged {
            (" DIVERGED ", Style::new().bg(Color::Red).fg(Color::White))
        } else {
            (" STOPPED ", Style::new().bg(Color::Blue).fg(Color::White))
        };
        let keys: &[(&str, &str)] = match self.focus {
            Focus::Keys if self.running => &[
                ("Esc", "stop"),
                ("i", "type to guest"),
                (":", "command"),
                ("q", "quit"),
            ],
            Focus::Keys => &[
                ("s", "step"),
                ("n", "next"),
                ("c", "cont"),
                ("b", "break at cursor"),
                ("↑↓", "cursor"),
                ("PgUp/PgDn", "output"),
                (":", "command"),
                ("i", "type to guest"),
                ("?", "help"),
                ("q", "quit"),
            ],
            Focus::Command => &[
                ("Enter", "run"),
                ("↑↓", "earlier commands"),
                ("Esc", "cancel"),
                ("Ctrl-C", "stop guest"),
            ],
            Focus::Input => &[("keys", "go to COM1"), ("Esc", "end typing")],
        };
        // A narrow terminal gets the short form, which always keeps the
        // command line, the help and quit.
        let length = |keys: &[(&str, &str)]| {
            badge.chars().count()
                + keys
                    .iter()
                    .map(|(k, w)| k.chars().count() + w.chars().count() + 3)
                    .sum::<usize>()
        };
        let short: &[(&str, &str)] = match self.focus {
            Focus::Keys if self.running => {
                &[("Esc", "stop"), ("i", "type"), (":", "cmd"), ("q", "quit")]
            }
            Focus::Keys => &[
                ("s", "step"),
                ("n", "next"),
                ("c", "cont"),
                ("b", "break"),
                (":", "cmd"),
                ("?", "help"),
                ("q", "quit"),
            ],
            Focus::Command => &[("Enter", "run"), ("↑↓", "recall"), ("Esc", "cancel")],
            Focus::Input => &[("keys", "to COM1"), ("Esc", "end")],
        };
        let keys = if length(keys) > area.width as usize {
            short
        } else {
            keys
        };
        let mut spans = vec![Span::styled(badge, badge_style)];
        for (key, what) in keys {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(
                *key,
                Style::new().add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(" {what} ")));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
    }
}

/// `text` cut into pieces of at most `width` characters (a line that
/// fits is one piece; an empty line is one empty piece).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width {
        return vec![text.to_string()];
    }
    chars.chunks(width).map(|c| c.iter().collect()).collect()
}

/// The keys' help, in a box over the middle of the panes.
fn draw_help(frame: &mut Frame, main: Rect) {
    let text_width = KEYS_HELP
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0) as u16;
    let width = (text_width + 4).min(main.width);
    let height = (KEYS_HELP.lines().count() as u16 + 2).min(main.height);
    let area = Rect {
        x: main.x + (main.width - width) / 2,
        y: main.y + (main.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(KEYS_HELP)
            .wrap(Wrap { trim: false })
            .block(bordered(" Keys ".into(), true)),
        area,
    );
}
