//! The debugger's command language, shared by the terminal UI's command
//! line, the gdb stub's `monitor` and scripts: one line in, text out.
//!
//! Addresses are numbers (`0x1000` hex, `4096` decimal), register names
//! (`esp`), symbols of the booted image (`kmain`), or a symbol or register
//! plus an offset (`kmain+0x10`).

use std::fmt::Write as _;

use crate::dbgf::{Debugger, StopCause};
use crate::inspect::{self, Syntax};
use crate::stops::{self, Address, Condition, StopKind, WatchKind};

/// The command summary `help` prints.
pub const HELP: &str = "\
step [N]            retire N instructions (s)
next                step over a CALL or INT n (n)
cont                run until something stops the debugger (c)
break ADDR [if C]   breakpoint at a linear address (b); C is REG OP VALUE
pbreak PADDR [if C] breakpoint at a physical address
watch [r|w|a] ADDR [LEN]  watchpoint on a linear range (default w, 4 bytes)
catch vector N | port P | cr3 | ring 0|3   stop on an event, I/O port, CR3 change, ring entry
info                list breakpoints, watchpoints and catches
delete ID | disable ID | enable ID | ignore ID N
regs                registers, segment caches, control and debug registers
set REG VALUE       write a register (eax, eip, cr3, cs.base, ...)
pset REG VALUE      the same in the compare partner's machine
input TEXT          type TEXT and Enter on the guest's COM1 (given when it waits)
x ADDR [LEN]        memory at a linear address; xp for a physical one
write ADDR BYTES..  write bytes at a linear address
dis [ADDR] [N]      disassemble (default: at EIP); syntax intel|att
dg | dl | di | tss  GDT, LDT, IDT, the current TSS
ptwalk ADDR         walk the page tables for a linear address
history [N]         the last retired instructions and what they changed
where               the current instruction and symbol
stats               engine statistics
engine [NAME]       show or switch the engine of the stopped machine
save FILE           save the machine (snapshot file; the running machine is unchanged)
load FILE           restore a snapshot into this machine (refused, and nothing changes, if it does not fit)
symbols FILE        load the symbols of an ELF file (for a kernel booted from disk)
help                this text";

impl Debugger {
    /// Evaluate an address expression.
    pub fn eval(&mut self, text: &str) -> Result<u32, String> {
        let text = text.trim();
        let (head, offset) = match text.rsplit_once('+') {
            Some((h, o)) if !h.is_empty() => (h.trim(), stops::parse_number(o)?),
            _ => (text, 0),
        };
        let base = if let Ok(v) = stops::parse_number(head) {
            v
        } else if let Some(v) = stops::register_value(&self.main.machine.cpu, head) {
            v
        } else if let Some(v) = self.symbols.resolve(head) {
            v
        } else {
            return Err(format!(
                "'{head}' is not a number, a register or a symbol of the image"
            ));
        };
        Ok(base.wrapping_add(offset))
    }

    /// Where the CPU stands: CS:EIP, the symbol, the instruction.
    pub fn location(&mut self) -> String {
        let m = &mut self.main.machine;
        let eip = m.cpu.eip;
        let lines = inspect::disassemble(m, &self.symbols, eip, 1, self.syntax);
        let cs = m.cpu.seg[ringside_core::cpu::SegReg::Cs as usize].selector;
        let line = lines.first();
        let sym = line
            .and_then(|l| l.symbol.clone())
            .map(|s| format!(" <{s}>"))
            .unwrap_or_default();
        let text = line.map(|l| l.text.as_str()).unwrap_or("??");
        format!(
            "{cs:04x}:{eip:08x}{sym}  {text}  (instruction {})",
            m.clock.icount
        )
    }

    /// The report after a stop: why, and where.
    pub fn describe_stop(&mut self, cause: &StopCause) -> String {
        let mut out = String::new();
        match cause {
            StopCause::Stepped => {}
            StopCause::Divergence(d) => {
                let a = self.main.engine.name();
                let b = self.partner.as_ref().map_or("?", |p| p.engine.name());
                out.push_str(&crate::lockstep::format_divergence(d, a, b));
                out.push('\n');
            }
            StopCause::Vector { vector, .. } => {
                let _ = writeln!(out, "stopped: {cause}");
                out.push_str(&self.faulting_instruction(*vector));
            }
            other => {
                let _ = writeln!(out, "stopped: {other}");
            }
        }
        out.push_str(&self.location());
        out
    }

    /// At a handler's first instruction: the interrupted (for a fault, the
    /// faulting) instruction, from the frame the delivery pushed (SDM Vol.
    /// 3A 6.12.1), and CR2 for a page fault.
    fn faulting_instruction(&mut self, vector: u8) -> String {
        let m = &mut self.main.machine;
        let wide = m.peek_vector_handler(vector).is_some_and(|(_, w)| w);
        let pm = m.cpu.protected_mode();
        // Exceptions with an error code (table 6-1) push it last.
        let has_code = pm && matches!(vector, 8 | 10..=14 | 17);
        let frame = m.peek_event_frame(wide, has_code);
        let mut out = String::new();
        if vector == 14 {
            let _ = write!(out, "CR2={:08x}", m.cpu.cr2);
        }
        if let Some(code) = frame.and_then(|f| f.error_code) {
            let sep = if out.is_empty() { "" } else { " " };
            let _ = write!(out, "{sep}error code {code:#x}");
        }
        if !out.is_empty() {
            out.push('\n');
        }
        if let Some(f) = frame {
            let (cs, eip) = (f.cs, f.eip);
            let lin = m.peek_segment_base(cs).unwrap_or(0).wrapping_add(eip);
            let mut code = [0u8; 15];
            let n = m.peek_into(lin, &mut code);
            let bits = if pm && (wide || m.cpu.code32()) {
                32
            } else {
                16
            };
            let text = if n == 0 {
                "?? (not mapped)".to_string()
            } else {
                let insn = iced_x86::Decoder::with_ip(
                    bits,
                    &code[..n],
                    eip as u64,
                    iced_x86::DecoderOptions::NONE,
                )
                .decode();
                inspect::format_instruction(&insn, None, self.syntax)
            };
            let sym = self
                .symbols
                .describe(lin)
                .map(|s| format!(" <{s}>"))
                .unwrap_or_default();
            let _ = writeln!(out, "interrupted at {cs:04x}:{eip:08x}{sym}  {text}");
        }
        out
    }

    /// One stop as `info` lists it.
    fn describe_stop_entry(&self, id: u32) -> String {
        self.stops()
            .iter()
            .find(|s| s.id == id)
            .map_or_else(|| format!("no stop #{id}"), |s| s.to_string())
    }

    /// Run one command line. Errors are for the user to read.
    pub fn execute(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, args)) = words.split_first() else {
            return Ok(String::new());
        };
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .ok_or_else(|| format!("'{cmd}' needs more arguments (see help)"))
        };
        match cmd {
            "help" | "h" | "?" => Ok(HELP.to_string()),
            "step" | "s" | "stepi" | "si" => {
                let n = match args.first() {
                    Some(a) => stops::parse_number(a)? as u64,
                    None => 1,
                };
                let cause = self.step(n)?;
                Ok(self.describe_stop(&cause))
            }
            "next" | "n" | "nexti" | "ni" => {
                let cause = self.step_over()?;
                Ok(self.describe_stop(&cause))
            }
            "cont" | "c" | "continue" => {
                let cause = self.cont(|| false)?;
                Ok(self.describe_stop(&cause))
            }
            "break" | "b" | "pbreak" => {
                let at = self.eval(arg(0)?)?;
                let condition = match args.get(1) {
                    Some(&"if") => Some(Condition::parse(&args[2..].join(" "))?),
                    Some(other) => return Err(format!("expected 'if', not '{other}'")),
                    None => None,
                };
                let at = if cmd == "pbreak" {
                    Address::Physical(at)
                } else {
                    Address::Linear(at)
                };
                let id = self.add_breakpoint(at, condition);
                Ok(self.describe_stop_entry(id))
            }
            "watch" => {
                let (kind, rest) = match args.first().copied() {
                    Some("r") => (WatchKind::Read, &args[1..]),
                    Some("w") => (WatchKind::Write, &args[1..]),
                    Some("a") => (WatchKind::Access, &args[1..]),
                    _ => (WatchKind::Write, args),
                };
                let start = self.eval(rest.first().ok_or("watch needs an address")?)?;
                let len = match rest.get(1) {
                    Some(l) => stops::parse_number(l)?,
                    None => 4,
                };
                let id = self.add_watchpoint(start, len, kind);
                Ok(self.describe_stop_entry(id))
            }
            "catch" => {
                let kind = match arg(0)? {
                    "vector" | "vec" => StopKind::Vector(stops::parse_number(arg(1)?)? as u8),
                    "port" | "io" => StopKind::Port(stops::parse_number(arg(1)?)? as u16),
                    "cr3" => StopKind::Cr3Change,
                    "ring" => match stops::parse_number(arg(1)?)? {
                        r @ (0 | 3) => StopKind::Ring(r as u8),
                        r => return Err(format!("catch ring takes 0 or 3, not {r}")),
                    },
                    other => {
                        return Err(format!("catch what? '{other}' (vector, port, cr3, ring)"))
                    }
                };
                let id = self.add_catch(kind);
                Ok(self.describe_stop_entry(id))
            }
            "info" | "stops" => {
                if self.stops().is_empty() {
                    return Ok("no breakpoints, watchpoints or catches".into());
                }
                Ok(self
                    .stops()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "delete" | "d" => {
                let id = stops::parse_number(arg(0)?)?;
                if self.delete(id) {
                    Ok(format!("deleted #{id}"))
                } else {
                    Err(format!("no stop #{id}"))
                }
            }
            "disable" | "enable" => {
                let id = stops::parse_number(arg(0)?)?;
                if self.set_enabled(id, cmd == "enable") {
                    Ok(format!("{cmd}d #{id}"))
                } else {
                    Err(format!("no stop #{id}"))
                }
            }
            "ignore" => {
                let id = stops::parse_number(arg(0)?)?;
                let n = stops::parse_number(arg(1)?)? as u64;
                if self.set_after(id, n + 1) {
                    Ok(format!("#{id} stops from hit {} on", n + 1))
                } else {
                    Err(format!("no stop #{id}"))
                }
            }
            "regs" | "r" | "registers" => Ok(inspect::format_registers(&self.main.machine.cpu)),
            "input" => {
                // The rest of the line, as typed, plus Enter.
                let text = line.trim_start()[cmd.len()..].trim_start();
                if self.host_input.is_none() {
                    return Err("this machine's host input goes nowhere: whoever built \
                                the debugger set no Debugger::host_input"
                        .to_string());
                }
                self.queue_input(format!("{text}\n").as_bytes());
                Ok(format!("queued for COM1: {text}"))
            }
            "set" | "pset" => {
                let name = arg(0)?;
                let value = self.eval(arg(1)?)?;
                let m = if cmd == "pset" {
                    &mut self
                        .partner
                        .as_mut()
                        .ok_or("pset writes the compare partner's registers: there is none")?
                        .machine
                } else {
                    &mut self.main.machine
                };
                stops::set_register(&mut m.cpu, name, value)?;
                // Control and debug registers change translation and watches.
                m.flush_tlb();
                m.sync_debug_registers();
                Ok(format!("{name} = {value:#x}"))
            }
            "x" | "xp" => {
                let at = self.eval(arg(0)?)?;
                let len = match args.get(1) {
                    Some(l) => stops::parse_number(l)?.min(4096),
                    None => 64,
                };
                let bytes = if cmd == "x" {
                    inspect::read_lin(&mut self.main.machine, at, len)
                } else {
                    inspect::read_phys(&self.main.machine, at, len)
                };
                Ok(inspect::hex_dump(at, &bytes))
            }
            "write" => {
                let at = self.eval(arg(0)?)?;
                let bytes: Result<Vec<u8>, String> = args[1..]
                    .iter()
                    .map(|b| {
                        u8::from_str_radix(b.trim_start_matches("0x"), 16)
                            .map_err(|_| format!("'{b}' is not a hex byte"))
                    })
                    .collect();
                let bytes = bytes?;
                inspect::write_lin(&mut self.main.machine, at, &bytes)?;
                Ok(format!("wrote {} bytes at {at:#010x}", bytes.len()))
            }
            "dis" | "u" | "disassemble" => {
                let at = match args.first() {
                    Some(a) => {
                        // A linear address: make it CS-relative.
                        let lin = self.eval(a)?;
                        lin.wrapping_sub(
                            self.main.machine.cpu.seg[ringside_core::cpu::SegReg::Cs as usize].base,
                        )
                    }
                    None => self.main.machine.cpu.eip,
                };
                let n = match args.get(1) {
                    Some(n) => stops::parse_number(n)?.min(200) as usize,
                    None => 10,
                };
                let mark = self.main.machine.cpu.eip;
                let bps = self.breakpoint_addresses();
                let lines =
                    inspect::disassemble(&mut self.main.machine, &self.symbols, at, n, self.syntax);
                Ok(inspect::format_lines(&lines, mark, &bps))
            }
            "syntax" => {
                self.syntax = match arg(0)? {
                    "intel" => Syntax::Intel,
                    "att" | "at&t" | "gas" => Syntax::Att,
                    other => return Err(format!("syntax intel or att, not '{other}'")),
                };
                Ok(format!("syntax {:?}", self.syntax))
            }
            "dg" => Ok(inspect::dump_gdt(&mut self.main.machine)),
            "dl" => Ok(inspect::dump_ldt(&mut self.main.machine)),
            "di" => Ok(inspect::dump_idt(&mut self.main.machine)),
            "tss" | "dt" => Ok(inspect::dump_tss(&mut self.main.machine)),
            "ptwalk" | "pt" => {
                let at = self.eval(arg(0)?)?;
                Ok(inspect::page_walk(&mut self.main.machine, at))
            }
            "history" => {
                let n = match args.first() {
                    Some(n) => stops::parse_number(n)? as usize,
                    None => 20,
                };
                let all: Vec<_> = self.history().cloned().collect();
                let mut out = String::new();
                for r in all.iter().skip(all.len().saturating_sub(n)) {
                    let changes: Vec<String> = r
                        .changes
                        .iter()
                        .map(|(n, a, b)| format!("{n} {a:x}->{b:x}"))
                        .collect();
                    // Decoded with the current code size: right unless the
                    // CPU changed modes since.
                    let bits = if self.main.machine.cpu.code32() {
                        32
                    } else {
                        16
                    };
                    let insn = iced_x86::Decoder::with_ip(
                        bits,
                        &r.bytes,
                        r.eip as u64,
                        iced_x86::DecoderOptions::NONE,
                    )
                    .decode();
                    let text = inspect::format_instruction(&insn, None, Syntax::Intel);
                    let _ = writeln!(
                        out,
                        "{:>10} {:04x}:{:08x} {text:<28} {}",
                        r.icount,
                        r.cs,
                        r.eip,
                        changes.join(" ")
                    );
                }
                if out.is_empty() {
                    out = "no history yet (instructions are recorded while stepping or running checked)\n".into();
                }
                Ok(out)
            }
            "where" | "bt" => Ok(self.location()),
            "stats" => {
                let s = self.stats();
                let mut out = format!(
                    "engine {}: {} instructions\n",
                    self.engine_name(),
                    s.instructions
                );
                for (k, v) in s.counters {
                    let _ = writeln!(out, "  {k} {v}");
                }
                Ok(out)
            }
            "symbols" => self.load_symbols(std::path::Path::new(arg(0)?)),
            "save" => self.save_snapshot(std::path::Path::new(arg(0)?)),
            "load" => self.load_snapshot(std::path::Path::new(arg(0)?)),
            "engine" => match args.first() {
                None => Ok(format!("engine {}", self.engine_name())),
                Some(name) => {
                    self.set_engine(name)?;
                    Ok(format!("engine {} takes over at {}", name, self.location()))
                }
            },
            other => Err(format!("unknown command '{other}' (try help)")),
        }
    }
}

/// The commands that touch host files. The gdb stub calls them only with
/// a path it has confined to its snapshot directory (docs/security.md).
impl Debugger {
    /// `symbols FILE`: the symbols of an ELF file (read within the image
    /// limit, regular files only).
    pub fn load_symbols(&mut self, path: &std::path::Path) -> Result<String, String> {
        use ringside_core::input_file::{read_input, InputKind};
        let image = read_input(path, InputKind::Image).map_err(|e| e.to_string())?;
        let symbols = crate::symbols::Symbols::from_elf(&image);
        if symbols.is_empty() {
            return Err(format!("{}: no ELF symbols", path.display()));
        }
        let n = symbols.len();
        self.symbols = symbols;
        Ok(format!("{n} symbols from {}", path.display()))
    }

    /// `save FILE`: the machine as a snapshot file (the machine runs on
    /// unchanged).
    pub fn save_snapshot(&mut self, path: &std::path::Path) -> Result<String, String> {
        ringside_core::snapshot::save(&self.main.machine, &self.config_toml, path)
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "saved the machine at instruction {} to {}",
            self.main.machine.clock.icount,
            path.display()
        ))
    }

    /// `load FILE`: restore a snapshot into this machine, or change nothing.
    pub fn load_snapshot(&mut self, path: &std::path::Path) -> Result<String, String> {
        let snap = ringside_core::snapshot::read(path).map_err(|e| e.to_string())?;
        snap.restore_into(&mut self.main.machine)
            .map_err(|e| e.to_string())?;
        self.begin();
        Ok(format!("loaded {}: {}", path.display(), self.location()))
    }
}
