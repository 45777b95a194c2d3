//! Looking at a machine without disturbing it: memory through the guest's
//! paging or physically, disassembly with symbols, the registers, the page
//! walk of a linear address, and the descriptor tables decoded the way
//! VirtualBox's `dg`/`di` print them.
//!
//! Nothing here has a side effect on the guest: page walks set no accessed
//! bits, device memory is not read (it shows as `??`), and the TLB is left
//! alone.

use std::fmt::Write as _;

use iced_x86::{
    Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, IntelFormatter, SymbolResolver,
    SymbolResult,
};
use ringside_core::cpu::segments::{system_type, Descriptor};
use ringside_core::cpu::{reg, CpuState, SegReg};
use ringside_core::mmu::pte;
use ringside_core::Machine;

use crate::symbols::Symbols;

/// `len` bytes from a linear address; unreadable bytes are None. Read a
/// page at a time (`Machine::peek_into`), skipping over unreadable bytes.
pub fn read_lin(m: &mut Machine, lin: u32, len: u32) -> Vec<Option<u8>> {
    let len = len as usize;
    let mut buf = vec![0u8; len];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let i = out.len();
        let n = m.peek_into(lin.wrapping_add(i as u32), &mut buf[i..]);
        out.extend(buf[i..i + n].iter().map(|&b| Some(b)));
        if out.len() < len {
            out.push(None);
        }
    }
    out
}

/// `len` bytes from a physical address (RAM and ROM only).
pub fn read_phys(m: &Machine, pa: u32, len: u32) -> Vec<Option<u8>> {
    (0..len)
        .map(|i| m.mem().read_plain(pa.wrapping_add(i)))
        .collect()
}

/// A little-endian dword at a linear address, if all four bytes read.
pub fn lin_u32(m: &mut Machine, lin: u32) -> Option<u32> {
    m.peek_bytes(lin, 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Write bytes at a linear address through the guest's paging (the
/// debugger's memory writes). Fails without writing anything if any byte
/// is unmapped. Engines see the write like a guest store (code caches are
/// invalidated).
pub fn write_lin(m: &mut Machine, lin: u32, bytes: &[u8]) -> Result<(), String> {
    let phys: Option<Vec<u32>> = (0..bytes.len() as u32)
        .map(|i| m.peek_translation(lin.wrapping_add(i)))
        .collect();
    let phys = phys.ok_or_else(|| format!("{lin:#010x}: not mapped"))?;
    for (pa, b) in phys.into_iter().zip(bytes) {
        m.phys_write(pa, 1, *b as u64);
    }
    Ok(())
}

/// Write bytes at a physical address.
pub fn write_phys(m: &mut Machine, pa: u32, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        m.phys_write(pa.wrapping_add(i as u32), 1, *b as u64);
    }
}

/// A hex dump, 16 bytes a line, with the address of each line.
pub fn hex_dump(start: u32, bytes: &[Option<u8>]) -> String {
    let mut out = String::new();
    for (n, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}:", start.wrapping_add(16 * n as u32));
        for b in line {
            match b {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str(" ??"),
            }
        }
        out.push_str("  ");
        for b in line {
            out.push(match b {
                Some(c) if c.is_ascii_graphic() || *c == b' ' => *c as char,
                _ => '.',
            });
        }
        out.push('\n');
    }
    out
}

/// Assembler syntax for disassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Syntax {
    #[default]
    Intel,
    Att,
}

/// Resolves branch targets and memory displacements to symbols for iced.
struct Resolver(Symbols);

impl SymbolResolver for Resolver {
    fn symbol(
        &mut self,
        _instruction: &Instruction,
        _operand: u32,
        _instruction_operand: Option<u32>,
        address: u64,
        _address_size: u32,
    ) -> Option<SymbolResult<'_>> {
        let s = self.0.exact(address as u32)?;
        Some(SymbolResult::with_str(address, s))
    }
}

/// One decoded instruction as text, in `syntax`, with branch targets and
/// displacements named by `symbols` when given.
pub fn format_instruction(insn: &Instruction, symbols: Option<&Symbols>, syntax: Syntax) -> String {
    let mut text = String::new();
    // The formatters own their resolver (a cheap shared copy).
    let resolver = symbols.map(|s| Box::new(Resolver(s.clone())) as Box<dyn SymbolResolver>);
    match syntax {
        Syntax::Intel => IntelFormatter::with_options(resolver, None).format(insn, &mut text),
        Syntax::Att => GasFormatter::with_options(resolver, None).format(insn, &mut text),
    }
    text
}

/// One disassembled instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Offset in the code segment (the instruction's EIP).
    pub eip: u32,
    pub linear: u32,
    pub bytes: Vec<u8>,
    pub text: String,
    /// `name+off` when the address is inside a known symbol.
    pub symbol: Option<String>,
}

/// Disassemble `count` instructions starting at CS-relative `eip` (with the
/// current CS base and code size).
pub fn disassemble(
    m: &mut Machine,
    symbols: &Symbols,
    eip: u32,
    count: usize,
    syntax: Syntax,
) -> Vec<Line> {
    let base = m.cpu.seg[SegReg::Cs as usize].base;
    let bitness = if m.cpu.code32() { 32 } else { 16 };
    let mut out = Vec::with_capacity(count);
    let mut at = eip;
    for _ in 0..count {
        let linear = base.wrapping_add(at);
        let mut code = [0u8; 15];
        let n = m.peek_into(linear, &mut code);
        let bytes = &code[..n];
        if bytes.is_empty() {
            out.push(Line {
                eip: at,
                linear,
                bytes: vec![],
                text: "?? (not mapped)".into(),
                symbol: symbols.describe(linear),
            });
            break;
        }
        let insn = Decoder::with_ip(bitness, bytes, at as u64, DecoderOptions::NONE).decode();
        let len = insn.len().max(1);
        out.push(Line {
            eip: at,
            linear,
            bytes: bytes[..len.min(bytes.len())].to_vec(),
            text: if insn.is_invalid() {
                "(bad)".into()
            } else {
                format_instruction(&insn, Some(symbols), syntax)
            },
            symbol: symbols.describe(linear),
        });
        at = at.wrapping_add(len as u32);
    }
    out
}

/// Format disassembly lines; `mark` is the EIP to flag with `=>`, and
/// `breakpoints` the linear addresses to flag with `*`.
pub fn format_lines(lines: &[Line], mark: u32, breakpoints: &[u32]) -> String {
    let mut out = String::new();
    for l in lines {
        if let Some(s) = l.symbol.as_deref().filter(|s| !s.contains('+')) {
            let _ = writeln!(out, "{s}:");
        }
        let arrow = if l.eip == mark { "=>" } else { "  " };
        let bp = if breakpoints.contains(&l.linear) {
            '*'
        } else {
            ' '
        };
        let hex: String = l.bytes.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "{arrow}{bp}{:08x}  {hex:<16} {}", l.eip, l.text);
    }
    out
}

/// The registers the way the debugger prints them (`regs`): general
/// registers, EIP and EFLAGS, segment registers with their caches, control,
/// debug and descriptor-table registers.
pub fn format_registers(c: &CpuState) -> String {
    let g = &c.gpr;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "eax={:08x} ebx={:08x} ecx={:08x} edx={:08x} esi={:08x} edi={:08x}",
        g[reg::EAX],
        g[reg::EBX],
        g[reg::ECX],
        g[reg::EDX],
        g[reg::ESI],
        g[reg::EDI]
    );
    let _ = writeln!(
        out,
        "eip={:08x} esp={:08x} ebp={:08x} eflags={:08x} [{}] cpl={}",
        c.eip,
        g[reg::ESP],
        g[reg::EBP],
        c.eflags,
        flag_names(c.eflags),
        c.cpl()
    );
    for (name, s) in SEG_NAMES.iter().zip(SegReg::ALL) {
        let seg = c.seg[s as usize];
        let _ = writeln!(
            out,
            "{name}={:04x} base={:08x} limit={:08x} attr={:05x}",
            seg.selector, seg.base, seg.limit, seg.attr
        );
    }
    let _ = writeln!(
        out,
        "cr0={:08x} cr2={:08x} cr3={:08x} cr4={:08x}",
        c.cr0, c.cr2, c.cr3, c.cr4
    );
    let _ = writeln!(
        out,
        "gdtr={:08x}:{:04x} idtr={:08x}:{:04x} ldtr={:04x} tr={:04x}",
        c.gdtr.base, c.gdtr.limit, c.idtr.base, c.idtr.limit, c.ldtr.selector, c.tr.selector
    );
    let _ = writeln!(
        out,
        "dr0={:08x} dr1={:08x} dr2={:08x} dr3={:08x} dr6={:08x} dr7={:08x}",
        c.dr[0], c.dr[1], c.dr[2], c.dr[3], c.dr[6], c.dr[7]
    );
    out
}

/// Segment register names in `SegReg::ALL` order.
pub const SEG_NAMES: [&str; 6] = ["es", "cs", "ss", "ds", "fs", "gs"];

/// The set flags by name, as in `[ZF PF IF]`.
pub fn flag_names(eflags: u32) -> String {
    const NAMES: [(u32, &str); 14] = [
        (0, "CF"),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (8, "TF"),
        (9, "IF"),
        (10, "DF"),
        (11, "OF"),
        (14, "NT"),
        (16, "RF"),
        (17, "VM"),
        (18, "AC"),
        (21, "ID"),
    ];
    let mut v: Vec<String> = NAMES
        .iter()
        .filter(|(bit, _)| eflags & (1 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let iopl = (eflags >> 12) & 3;
    if iopl != 0 {
        v.push(format!("IOPL={iopl}"));
    }
    v.join(" ")
}

/// The walk of a linear address through the guest's page tables
/// (`ptwalk`), one line per level.
pub fn page_walk(m: &mut Machine, lin: u32) -> String {
    let c = m.cpu.clone();
    let mut out = String::new();
    if !c.paging() {
        let _ = writeln!(
            out,
            "paging is off (CR0.PG = 0): linear {lin:#010x} = physical {:#010x}",
            lin & m.mem().a20_mask()
        );
        return out;
    }
    let dir = c.cr3 & 0xFFFF_F000;
    let pde_at = dir | ((lin >> 22) << 2);
    let pde = m.phys_read(pde_at, 4) as u32;
    let _ = writeln!(
        out,
        "linear {lin:#010x}: directory index {:#x}, table index {:#x}, offset {:#x}",
        lin >> 22,
        (lin >> 12) & 0x3FF,
        lin & 0xFFF
    );
    let _ = writeln!(out, "CR3 {:#010x}", c.cr3);
    let _ = writeln!(
        out,
        "PDE at {pde_at:#010x} = {pde:08x} {}",
        entry_flags(pde)
    );
    if pde & pte::P == 0 {
        let _ = writeln!(out, "not present: #PF");
        return out;
    }
    if pde & pte::PS != 0 && c.cr4 & ringside_core::cpu::cr4::PSE != 0 {
        let pa = (pde & 0xFFC0_0000) | (lin & 0x003F_FFFF);
        let _ = writeln!(out, "4 MiB page: physical {pa:#010x}");
        return out;
    }
    let pte_at = (pde & 0xFFFF_F000) | (((lin >> 12) & 0x3FF) << 2);
    let entry = m.phys_read(pte_at, 4) as u32;
    let _ = writeln!(
        out,
        "PTE at {pte_at:#010x} = {entry:08x} {}",
        entry_flags(entry)
    );
    if entry & pte::P == 0 {
        let _ = writeln!(out, "not present: #PF");
        return out;
    }
    let pa = (entry & 0xFFFF_F000) | (lin & 0xFFF);
    let _ = writeln!(out, "physical {pa:#010x}");
    out
}

fn entry_flags(e: u32) -> String {
    let mut v = Vec::new();
    for (bit, set, clear) in [
        (pte::P, "P", "NP"),
        (pte::RW, "RW", "R"),
        (pte::US, "U", "S"),
        (pte::A, "A", ""),
        (pte::D, "D", ""),
        (pte::PS, "PS", ""),
        (pte::G, "G", ""),
    ] {
        let s = if e & bit != 0 { set } else { clear };
        if !s.is_empty() {
            v.push(s);
        }
    }
    format!("[{}]", v.join(" "))
}

/// A descriptor the way `dg` prints it: selector, type, base, limit, DPL
/// and the flags (VirtualBox's DBGF style).
pub fn describe_descriptor(selector: u32, d: Descriptor) -> String {
    let raw = d.0;
    if raw == 0 {
        return format!("{selector:04x} Null");
    }
    let p = if d.present() { "P " } else { "NP" };
    let dpl = d.dpl();
    if d.is_code_or_data() {
        let typ = d.typ();
        let kind = if d.is_code() {
            match (typ >> 1) & 3 {
                0 => "CodeEO",
                1 => "CodeER",
                2 => "CodeConfEO",
                _ => "CodeConfER",
            }
        } else {
            match (typ >> 1) & 3 {
                0 => "DataRO",
                1 => "DataRW",
                2 => "DataDownRO",
                _ => "DataDownRW",
            }
        };
        let acc = if typ & 1 != 0 { "A " } else { "NA" };
        let size = if raw & (1 << 54) != 0 { "32" } else { "16" };
        let gran = if raw & (1 << 55) != 0 { "G" } else { " " };
        return format!(
            "{selector:04x} {kind:<10} Bas={:08x} Lim={:08x} DPL={dpl} {p} {acc} {gran} D{size}",
            d.base(),
            d.limit()
        );
    }
    let t = d.typ();
    let name = match t {
        system_type::TSS16_AVAIL => "TSS16Avl",
        system_type::LDT => "LDT",
        system_type::TSS16_BUSY => "TSS16Busy",
        system_type::CALL_GATE16 => "CallGate16",
        system_type::TASK_GATE => "TaskGate",
        system_type::INT_GATE16 => "IntGate16",
        system_type::TRAP_GATE16 => "TrapGate16",
        system_type::TSS32_AVAIL => "TSS32Avl",
        system_type::TSS32_BUSY => "TSS32Busy",
        system_type::CALL_GATE32 => "CallGate32",
        system_type::INT_GATE32 => "IntGate32",
        system_type::TRAP_GATE32 => "TrapGate32",
        _ => "Reserved",
    };
    match t {
        system_type::CALL_GATE16
        | system_type::CALL_GATE32
        | system_type::INT_GATE16
        | system_type::INT_GATE32
        | system_type::TRAP_GATE16
        | system_type::TRAP_GATE32 => format!(
            "{selector:04x} {name:<10} Sel:Off={:04x}:{:08x} DPL={dpl} {p}",
            d.gate_selector(),
            d.gate_offset_sized()
        ),
        system_type::TASK_GATE => format!(
            "{selector:04x} {name:<10} TSS={:04x} DPL={dpl} {p}",
            d.gate_selector()
        ),
        _ => format!(
            "{selector:04x} {name:<10} Bas={:08x} Lim={:08x} DPL={dpl} {p}",
            d.base(),
            d.limit()
        ),
    }
}

fn read_descriptor(m: &mut Machine, at: u32) -> Option<Descriptor> {
    let lo = lin_u32(m, at)? as u64;
    let hi = lin_u32(m, at.wrapping_add(4))? as u64;
    Some(Descriptor(lo | (hi << 32)))
}

/// A descriptor table (`dg`, `dl`): every entry within the limit, with
/// null entries left out.
fn dump_table(m: &mut Machine, base: u32, limit: u32, ldt: bool) -> String {
    let mut out = String::new();
    let entries = (limit as u64 + 1) / 8;
    for i in 0..entries.min(8192) as u32 {
        let sel = (i * 8) | if ldt { 4 } else { 0 };
        match read_descriptor(m, base.wrapping_add(i * 8)) {
            Some(d) if d.0 == 0 => {}
            Some(d) => {
                let _ = writeln!(out, "{}", describe_descriptor(sel, d));
            }
            None => {
                let _ = writeln!(out, "{sel:04x} ?? (not mapped)");
            }
        }
    }
    out
}

/// The GDT (`dg`).
pub fn dump_gdt(m: &mut Machine) -> String {
    let g = m.cpu.gdtr;
    format!(
        "GDT base={:08x} limit={:04x}\n{}",
        g.base,
        g.limit,
        dump_table(m, g.base, g.limit as u32, false)
    )
}

/// The LDT (`dl`).
pub fn dump_ldt(m: &mut Machine) -> String {
    let l = m.cpu.ldtr;
    if l.is_unusable() || l.selector & !3 == 0 {
        return "no LDT loaded (LDTR is null)\n".into();
    }
    format!(
        "LDT selector={:04x} base={:08x} limit={:08x}\n{}",
        l.selector,
        l.base,
        l.limit,
        dump_table(m, l.base, l.limit, true)
    )
}

/// The IDT (`di`): protected-mode gates, or the real-mode IVT's far
/// pointers.
pub fn dump_idt(m: &mut Machine) -> String {
    let i = m.cpu.idtr;
    let mut out = format!("IDT base={:08x} limit={:04x}\n", i.base, i.limit);
    if !m.cpu.protected_mode() {
        for v in 0..=(i.limit as u32 / 4).min(255) {
            let at = i.base.wrapping_add(v * 4);
            if let Some(p) = lin_u32(m, at) {
                let _ = writeln!(out, "{v:02x} {:04x}:{:04x}", p >> 16, p & 0xFFFF);
            }
        }
        return out;
    }
    for v in 0..=(i.limit as u32 / 8).min(255) {
        match read_descriptor(m, i.base.wrapping_add(v * 8)) {
            Some(d) if d.0 == 0 => {}
            Some(d) => {
                let _ = writeln!(
                    out,
                    "{}",
                    describe_descriptor(v, d).replacen(
                        &format!("{v:04x}"),
                        &format!("{v:02x}  "),
                        1,
                    )
                );
            }
            None => {
                let _ = writeln!(out, "{v:02x}   ?? (not mapped)");
            }
        }
    }
    out
}

/// The current 32-bit TSS (`tss`): the fields a kernel sets up.
pub fn dump_tss(m: &mut Machine) -> String {
    let tr = m.cpu.tr;
    if tr.selector & !3 == 0 {
        return "no task register loaded (TR is null)\n".into();
    }
    let base = tr.base;
    let mut field = |off: u32| lin_u32(m, base.wrapping_add(off)).unwrap_or(0);
    let names: [(&str, u32); 17] = [
        ("link", 0),
        ("esp0", 4),
        ("ss0", 8),
        ("esp1", 12),
        ("ss1", 16),
        ("esp2", 20),
        ("ss2", 24),
        ("cr3", 28),
        ("eip", 32),
        ("eflags", 36),
        ("eax", 40),
        ("esp", 56),
        ("cs", 76),
        ("ss", 80),
        ("ds", 84),
        ("ldt", 96),
        ("iomap", 100),
    ];
    let mut out = format!(
        "TSS selector={:04x} base={:08x} limit={:08x}\n",
        tr.selector, tr.base, tr.limit
    );
    for (name, off) in names {
        let v = field(off);
        let v = if name == "iomap" { v >> 16 } else { v };
        let _ = writeln!(out, "{name:<7}{v:08x}");
    }
    out
}
