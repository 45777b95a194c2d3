//! What makes the debugger stop: breakpoints (linear or physical, with hit
//! counts and a condition on registers), watchpoints on linear ranges, and
//! catches (an exception or interrupt vector, an I/O port, a CR3 change,
//! entering ring 0 or ring 3).
//!
//! All of them are checked by the debugger itself around `Engine::step`,
//! from the architectural state alone, so they behave identically on every
//! engine: a breakpoint is "the next instruction to run is here", a
//! watchpoint is "the instruction that just retired accessed this range"
//! (its memory operands are found by iced-x86's instruction info, with the
//! registers as they were before it ran), a vector catch is "an event
//! through vector N was just delivered".

use iced_x86::{
    Decoder, DecoderOptions, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};
use ringside_core::cpu::{reg, CpuState, SegReg};
use ringside_core::Machine;

/// Which accesses a watchpoint catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Read,
    Write,
    Access,
}

impl WatchKind {
    /// Whether an access that reads and/or writes is caught.
    pub fn catches(self, read: bool, write: bool) -> bool {
        match self {
            WatchKind::Read => read,
            WatchKind::Write => write,
            WatchKind::Access => read || write,
        }
    }
}

/// A register comparison: `eax == 5`, `ecx != 0`, `esp < 0x9000`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub register: String,
    pub op: CmpOp,
    pub value: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Condition {
    /// Parse `REG OP VALUE` (VALUE in hex with 0x, or decimal).
    pub fn parse(text: &str) -> Result<Condition, String> {
        for (sym, op) in [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ] {
            if let Some((l, r)) = text.split_once(sym) {
                let register = l.trim().to_ascii_lowercase();
                if register_value(&CpuState::at_reset(), &register).is_none() {
                    return Err(format!("unknown register '{register}' in condition"));
                }
                let value = parse_number(r.trim())?;
                return Ok(Condition {
                    register,
                    op,
                    value,
                });
            }
        }
        Err(format!(
            "a condition is REGISTER OP VALUE with OP one of == != < <= > >=, not '{text}'"
        ))
    }

    pub fn holds(&self, cpu: &CpuState) -> bool {
        let Some(v) = register_value(cpu, &self.register) else {
            return false;
        };
        match self.op {
            CmpOp::Eq => v == self.value,
            CmpOp::Ne => v != self.value,
            CmpOp::Lt => v < self.value,
            CmpOp::Le => v <= self.value,
            CmpOp::Gt => v > self.value,
            CmpOp::Ge => v >= self.value,
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        };
        write!(f, "{} {op} {:#x}", self.register, self.value)
    }
}

/// A number as users type them: `0x1f`, `1f h`-less hex with 0x only,
/// or decimal.
pub fn parse_number(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let parsed = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(&h.replace('_', ""), 16)
    } else {
        s.replace('_', "").parse::<u32>()
    };
    parsed.map_err(|_| format!("'{s}' is not a number (hex needs 0x)"))
}

/// A register by name: the general registers (32, 16 and 8 bit), EIP,
/// EFLAGS, segment selectors, control and debug registers, and segment
/// caches as `cs.base`, `ss.limit`, `ds.attr`.
pub fn register_value(c: &CpuState, name: &str) -> Option<u32> {
    const R32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
    const R16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
    const R8L: [&str; 4] = ["al", "cl", "dl", "bl"];
    const R8H: [&str; 4] = ["ah", "ch", "dh", "bh"];
    let name = name.to_ascii_lowercase();
    if let Some(i) = R32.iter().position(|r| *r == name) {
        return Some(c.gpr[i]);
    }
    if let Some(i) = R16.iter().position(|r| *r == name) {
        return Some(c.gpr[i] & 0xFFFF);
    }
    if let Some(i) = R8L.iter().position(|r| *r == name) {
        return Some(c.gpr[i] & 0xFF);
    }
    if let Some(i) = R8H.iter().position(|r| *r == name) {
        return Some((c.gpr[i] >> 8) & 0xFF);
    }
    if let Some((seg, field)) = name.split_once('.') {
        let s = seg_index(seg)?;
        let seg = c.seg[s];
        return match field {
            "base" => Some(seg.base),
            "limit" => Some(seg.limit),
            "attr" => Some(seg.attr),
            "sel" | "selector" => Some(seg.selector as u32),
            _ => None,
        };
    }
    if let Some(s) = seg_index(&name) {
        return Some(c.seg[s].selector as u32);
    }
    Some(match name.as_str() {
        "eip" => c.eip,
        "eflags" | "flags" => c.eflags,
        "cr0" => c.cr0,
        "cr2" => c.cr2,
        "cr3" => c.cr3,
        "cr4" => c.cr4,
        "dr0" => c.dr[0],
        "dr1" => c.dr[1],
        "dr2" => c.dr[2],
        "dr3" => c.dr[3],
        "dr6" => c.dr[6],
        "dr7" => c.dr[7],
        "cpl" => c.cpl() as u32,
        _ => return None,
    })
}

/// Set a register by name (the names of [`register_value`] except `cpl`).
pub fn set_register(c: &mut CpuState, name: &str, v: u32) -> Result<(), String> {
    const R32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
    const R16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
    let lower = name.to_ascii_lowercase();
    if let Some(i) = R32.iter().position(|r| *r == lower) {
        c.gpr[i] = v;
        return Ok(());
    }
    if let Some(i) = R16.iter().position(|r| *r == lower) {
        c.gpr[i] = (c.gpr[i] & 0xFFFF_0000) | (v & 0xFFFF);
        return Ok(());
    }
    if let Some((seg, field)) = lower.split_once('.') {
        let s = seg_index(seg).ok_or_else(|| format!("no segment register '{seg}'"))?;
        let seg = &mut c.seg[s];
        match field {
            "base" => seg.base = v,
            "limit" => seg.limit = v,
            "attr" => seg.attr = v,
            "sel" | "selector" => seg.selector = v as u16,
            _ => {
                return Err(format!(
                    "a segment cache has base, limit, attr, sel: not '{field}'"
                ))
            }
        }
        return Ok(());
    }
    if let Some(s) = seg_index(&lower) {
        // The selector only; the cache stays (set cs.base etc. for it).
        c.seg[s].selector = v as u16;
        return Ok(());
    }
    match lower.as_str() {
        "eip" => c.eip = v,
        "eflags" | "flags" => c.eflags = (v | 2) & 0x003F_7FD7,
        "cr0" => c.cr0 = v,
        "cr2" => c.cr2 = v,
        "cr3" => c.cr3 = v,
        "cr4" => c.cr4 = v,
        "dr0" => c.dr[0] = v,
        "dr1" => c.dr[1] = v,
        "dr2" => c.dr[2] = v,
        "dr3" => c.dr[3] = v,
        "dr6" => c.dr[6] = v,
        "dr7" => c.dr[7] = v,
        _ => return Err(format!("no register '{name}'")),
    }
    Ok(())
}

fn seg_index(name: &str) -> Option<usize> {
    crate::inspect::SEG_NAMES.iter().position(|s| *s == name)
}

/// Where a breakpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    Linear(u32),
    Physical(u32),
}

/// One stop condition the user set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopKind {
    Breakpoint {
        at: Address,
        condition: Option<Condition>,
    },
    Watchpoint {
        start: u32,
        len: u32,
        kind: WatchKind,
    },
    /// An event through this vector (exception, interrupt, INT n).
    Vector(u8),
    /// IN or OUT (also string forms) to this port.
    Port(u16),
    Cr3Change,
    /// Entering this privilege level (0 or 3).
    Ring(u8),
}

/// A stop condition with its id, hit count and whether it is temporary
/// (the hidden breakpoint of `next`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub id: u32,
    pub kind: StopKind,
    pub hits: u64,
    /// Stop only from this hit on (`ignore` counts), 1 = every hit.
    pub after: u64,
    pub enabled: bool,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} ", self.id)?;
        match &self.kind {
            StopKind::Breakpoint { at, condition } => {
                match at {
                    Address::Linear(a) => write!(f, "break at linear {a:#010x}")?,
                    Address::Physical(a) => write!(f, "break at physical {a:#010x}")?,
                }
                if let Some(c) = condition {
                    write!(f, " if {c}")?;
                }
            }
            StopKind::Watchpoint { start, len, kind } => {
                let k = match kind {
                    WatchKind::Read => "read",
                    WatchKind::Write => "write",
                    WatchKind::Access => "access",
                };
                write!(f, "watch {k} {start:#010x} len {len}")?
            }
            StopKind::Vector(v) => write!(f, "catch vector {v:#04x}")?,
            StopKind::Port(p) => write!(f, "catch port {p:#06x}")?,
            StopKind::Cr3Change => write!(f, "catch cr3 changes")?,
            StopKind::Ring(r) => write!(f, "catch entering ring {r}")?,
        }
        write!(f, ", {} hits", self.hits)?;
        if !self.enabled {
            write!(f, " (disabled)")?;
        }
        Ok(())
    }
}

/// One memory access of an instruction: linear start, size, read, write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub lin: u32,
    pub size: u32,
    pub read: bool,
    pub write: bool,
}

/// The instruction at CS:EIP, decoded without side effects, with its
/// bytes.
pub fn decode_next_with_bytes(m: &mut Machine) -> Option<(Instruction, Vec<u8>)> {
    let (bytes, n) = m.peek_code();
    if n == 0 {
        return None;
    }
    let bitness = if m.cpu.code32() { 32 } else { 16 };
    let insn =
        Decoder::with_ip(bitness, &bytes[..n], m.cpu.eip as u64, DecoderOptions::NONE).decode();
    if insn.is_invalid() {
        return None;
    }
    let len = insn.len().min(n);
    Some((insn, bytes[..len].to_vec()))
}

/// The instruction at CS:EIP, decoded without side effects.
pub fn decode_next(m: &mut Machine) -> Option<Instruction> {
    decode_next_with_bytes(m).map(|(i, _)| i)
}

fn iced_register_value(c: &CpuState, r: Register) -> Option<u64> {
    let seg = |s: SegReg| Some(c.seg[s as usize].base as u64);
    match r {
        Register::ES => seg(SegReg::Es),
        Register::CS => seg(SegReg::Cs),
        Register::SS => seg(SegReg::Ss),
        Register::DS => seg(SegReg::Ds),
        Register::FS => seg(SegReg::Fs),
        Register::GS => seg(SegReg::Gs),
        Register::EIP => Some(c.eip as u64),
        _ => {
            let name = format!("{r:?}").to_ascii_lowercase();
            register_value(c, &name).map(u64::from)
        }
    }
}

/// The memory an instruction accesses when it runs from state `c`: its
/// explicit operands and the stack (iced-x86's instruction info). String
/// instructions give their first element; REP repeats are not expanded.
pub fn accesses(
    factory: &mut InstructionInfoFactory,
    insn: &Instruction,
    c: &CpuState,
) -> Vec<Access> {
    let info = factory.info(insn);
    let mut out = Vec::new();
    for mem in info.used_memory() {
        let (read, write) = match mem.access() {
            OpAccess::Read | OpAccess::CondRead => (true, false),
            OpAccess::Write | OpAccess::CondWrite => (false, true),
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, true),
            _ => continue,
        };
        let Some(lin) = mem.virtual_address(0, |r, _, _| iced_register_value(c, r)) else {
            continue;
        };
        // 16-bit addressing wraps the offset at 64 KiB; iced computes it
        // with the segment base added, so only the sum is truncated to 32.
        out.push(Access {
            lin: lin as u32,
            size: mem.memory_size().size().max(1) as u32,
            read,
            write,
        });
    }
    out
}

/// The I/O port an instruction accesses, if it is IN, OUT, INS or OUTS.
pub fn io_port(insn: &Instruction, c: &CpuState) -> Option<u16> {
    match insn.mnemonic() {
        Mnemonic::In
        | Mnemonic::Out
        | Mnemonic::Insb
        | Mnemonic::Insw
        | Mnemonic::Insd
        | Mnemonic::Outsb
        | Mnemonic::Outsw
        | Mnemonic::Outsd => {}
        _ => return None,
    }
    for i in 0..insn.op_count() {
        match insn.op_kind(i) {
            OpKind::Immediate8 => return Some(insn.immediate8() as u16),
            OpKind::Register if insn.op_register(i) == Register::DX => {
                return Some(c.gpr[reg::EDX] as u16)
            }
            _ => {}
        }
    }
    // INS/OUTS take DX implicitly.
    Some(c.gpr[reg::EDX] as u16)
}

/// Whether `[start, start+len)` and `[a, a+n)` overlap (with wrap-around).
pub fn overlaps(start: u32, len: u32, a: u32, n: u32) -> bool {
    a.wrapping_sub(start) < len || start.wrapping_sub(a) < n
}
