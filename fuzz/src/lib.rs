//! What the fuzz targets share: turning libFuzzer's bytes into a machine
//! with guest code, running it on an engine, and comparing two runs.
//!
//! A guest case is read from the input as:
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0 | mode (low 3 bits, modulo 5: real, 16-bit protected, 32-bit protected, 32-bit paged, virtual-8086); bit 7: the IDT or IVT is the data bytes instead of gates to a HLT |
//! | 1-32 | EAX..EDI |
//! | 33-36 | EFLAGS (arithmetic flags, DF, TF and IF as given; IOPL too) |
//! | 37 | code length - 1 (up to 128 bytes) |
//! | then | the code, at 0x8000; the rest is data at 0x2000 (up to 512 bytes) |
//!
//! Every vector leads to a HLT at 0x600 (unless bit 7), so a fault ends the
//! run at a dead halt, and RAM is HLTs wherever the case put nothing; the
//! budget bounds the rest.

use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::{FIXED1, VM};
use ringside_core::cpu::segments::Descriptor;
use ringside_core::cpu::{cr0, cr4, reg, SegReg, Segment, TableReg};
use ringside_core::{Engine, EngineError, Machine, RunOutcome};
use ringside_debugger::lockstep::{self, Outcome, Side};

/// The most instructions one case runs.
pub const BUDGET: u64 = 2_000;
pub const CODE: u32 = 0x8000;
pub const DATA: u32 = 0x2000;
pub const HLT_STUB: u32 = 0x0600;
pub const IDT: u32 = 0x1000;
pub const PAGE_DIR: u32 = 0x3000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Real,
    Protected16,
    Protected32,
    Paged32,
    Vm86,
}

/// One guest case, read from fuzzer bytes.
#[derive(Clone, Debug)]
pub struct GuestCase {
    pub mode: Mode,
    pub raw_idt: bool,
    pub regs: [u32; 8],
    pub flags: u32,
    pub code: Vec<u8>,
    pub data: Vec<u8>,
}

impl GuestCase {
    /// The case in `bytes` (None when too short to hold one).
    pub fn read(bytes: &[u8]) -> Option<GuestCase> {
        if bytes.len() < 39 {
            return None;
        }
        let mode = match (bytes[0] & 7) % 5 {
            0 => Mode::Real,
            1 => Mode::Protected16,
            2 => Mode::Protected32,
            3 => Mode::Paged32,
            _ => Mode::Vm86,
        };
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let mut regs = [0u32; 8];
        for (n, r) in regs.iter_mut().enumerate() {
            *r = word(1 + 4 * n);
        }
        let flags = word(33);
        let len = (bytes[37] as usize % 128) + 1;
        let rest = &bytes[38..];
        let code = rest[..len.min(rest.len())].to_vec();
        let data = rest[code.len()..].iter().take(512).copied().collect();
        Some(GuestCase {
            mode,
            raw_idt: bytes[0] & 0x80 != 0,
            regs,
            flags,
            code,
            data,
        })
    }

    /// A 4 MiB machine set up for the case.
    pub fn machine(&self) -> Machine {
        let mut m = Machine::with_ram_mib(4).expect("4 MiB of RAM maps");
        // RAM is HLTs wherever nothing else is: a stream that runs off its
        // end or jumps anywhere halts there instead of running the zeros
        // (ADD [BX+SI],AL) to the budget, which made the jit targets
        // compile dozens of 64-instruction blocks a case. (Page directory
        // entries of 0xF4F4F4F4 are not present.)
        m.write_ram(0, &vec![0xF4; 4 << 20]).expect("RAM is 4 MiB");
        m.write_ram(PAGE_DIR, &[0; 4096]).expect("fits");
        m.write_ram(DATA, &self.data).expect("data fits");
        m.write_ram(CODE, &self.code).expect("code fits");
        let idt: Vec<u8> = if self.raw_idt {
            self.data.clone()
        } else if self.mode == Mode::Real {
            (0..256).flat_map(|_| (HLT_STUB as u16).to_le_bytes().into_iter().chain([0, 0])).collect()
        } else {
            // Interrupt gates, DPL 3 (so INT n from any ring reaches the
            // HLT), to CS 0x08 : HLT_STUB.
            let gate = (HLT_STUB as u64 & 0xFFFF) | (0x08 << 16) | (0xEE00u64 << 32);
            (0..256).flat_map(|_| gate.to_le_bytes()).collect()
        };
        match self.mode {
            Mode::Real => {
                for s in SegReg::ALL {
                    m.cpu.seg[s as usize] = Segment::real_mode(0);
                }
                m.write_ram(0, &idt[..idt.len().min(0x400)]).expect("IVT fits");
            }
            _ => {
                enter_flat_protected_mode(&mut m, CODE);
                let idt = &idt[..idt.len().clamp(0, 0x800)];
                m.write_ram(IDT, idt).expect("IDT fits");
                m.cpu.idtr = TableReg {
                    base: IDT,
                    limit: (idt.len().max(1) - 1) as u16,
                    _pad: 0,
                };
                if self.mode == Mode::Protected16 {
                    let d = Descriptor(0x000F_9B00_0000_FFFF);
                    m.cpu.seg[SegReg::Cs as usize] = d.to_segment(8);
                }
                if self.mode == Mode::Paged32 {
                    // The first 4 MiB identity-mapped by one 4 MiB page.
                    m.write_ram(PAGE_DIR, &0x87u32.to_le_bytes()).expect("fits");
                    m.cpu.cr3 = PAGE_DIR;
                    m.cpu.cr4 |= cr4::PSE;
                    m.cpu.cr0 |= cr0::PG;
                }
                if self.mode == Mode::Vm86 {
                    for s in SegReg::ALL {
                        m.cpu.seg[s as usize] = Segment::vm86(0);
                    }
                    m.cpu.eflags |= VM;
                }
            }
        }
        m.cpu.gpr = self.regs;
        m.cpu.gpr[reg::ESP] &= 0xFFFF;
        m.cpu.eip = CODE;
        m.cpu.eflags = (m.cpu.eflags & VM) | (self.flags & 0x0000_3FD5) | FIXED1;
        m
    }
}

/// Whether the guest of a paged case wrote its page directory (beyond the
/// accessed and dirty bits the CPU sets). After that, which stale TLB
/// entries an engine still uses is the CPU's choice (SDM Vol. 3A 4.10.4.2:
/// without INVLPG or a CR3 load, "the processor may use" the old
/// translation), and engines that cache differently may differ there.
pub fn page_directory_rewritten(m: &Machine) -> bool {
    let mut pd = [0u8; 4096];
    if m.mem().read_ram(PAGE_DIR, &mut pd).is_err() {
        return true;
    }
    pd.chunks_exact(4).enumerate().any(|(n, e)| {
        let e = u32::from_le_bytes(e.try_into().expect("4 bytes")) & !0x60;
        e != if n == 0 { 0x87 } else { 0 }
    })
}

/// Run `m` on `engine` for at most [`BUDGET`] instructions and check what
/// must hold whatever the code did: the run ended cleanly within its
/// budget and the fixed EFLAGS bit is set.
pub fn run_checked(m: &mut Machine, engine: &mut dyn Engine) -> Result<RunOutcome, EngineError> {
    let start = m.clock.icount;
    let outcome = m.run_until_stopped(engine, Some(BUDGET));
    if let Ok(o) = &outcome {
        assert!(
            matches!(o, RunOutcome::Stopped(_) | RunOutcome::InstructionLimit),
            "unexpected outcome {o:?}"
        );
    }
    assert!(
        m.clock.icount - start <= BUDGET,
        "ran {} instructions on a budget of {BUDGET}",
        m.clock.icount - start
    );
    assert!(m.cpu.eflags & FIXED1 != 0, "EFLAGS bit 1 cleared");
    outcome
}

/// The interpreter.
pub fn interp() -> Box<dyn Engine> {
    Box::new(ringside_interp::Interp::new())
}

/// The recompiler compiling every block at its first run, in regions of
/// up to 32 blocks or one (`regions`), without Cranelift's optimizer
/// (`jit.optimize=false`): under the fuzzer's instrumentation Cranelift
/// is a hundred times slower than natively, and the translation, not
/// Cranelift's mid-end, is what the targets test (the optimizer is
/// checked on the same guarantees by the differential tests in
/// `cargo test`).
pub fn jit(regions: u32) -> Box<dyn Engine> {
    let mut j = ringside_jit::Jit::with_settings(1, regions);
    j.set_optimize(false);
    Box::new(j)
}

/// Raw mode behind the execution manager (the interpreter where the guest
/// does not page), as `--engine raw` makes it.
pub fn raw() -> Box<dyn Engine> {
    Box::new(ringside_core::exec::ExecutionManager::new(
        ringside_raw::Raw::new(),
        ringside_interp::Interp::new(),
    ))
}

/// Run `case` on the interpreter and on `other`: they must end alike
/// (outcome, instruction count, CPU state, RAM). On a difference, the
/// case is run again in lockstep and the panic names the first
/// instruction where the engines disagree. `excused` lets a target pass
/// over a documented limit of the other engine, given the interpreter's
/// machine at the end and the other engine's result.
pub fn differential(
    case: &GuestCase,
    name: &str,
    other: impl Fn() -> Box<dyn Engine>,
    excused: impl Fn(&Machine, &Result<RunOutcome, EngineError>) -> bool,
) {
    let mut a = case.machine();
    let mut b = case.machine();
    let ea = run_checked(&mut a, &mut *interp());
    let eb = run_checked(&mut b, &mut *other());
    if excused(&a, &eb) {
        return;
    }
    let same = ea == eb
        && a.clock.icount == b.clock.icount
        && a.cpu == b.cpu
        && a.mem().ram_slice() == b.mem().ram_slice();
    if same {
        return;
    }
    let mut sa = Side {
        machine: case.machine(),
        engine: interp(),
    };
    let mut sb = Side {
        machine: case.machine(),
        engine: other(),
    };
    let first = match lockstep::run(&mut sa, &mut sb, BUDGET) {
        Ok(Outcome::Divergence(d)) => lockstep::format_divergence(&d, "interp", name),
        other => format!("no divergence in lockstep ({other:?}): the free runs differ"),
    };
    let at = a
        .mem()
        .ram_slice()
        .iter()
        .zip(b.mem().ram_slice())
        .position(|(x, y)| x != y);
    // The CPU state's fields that differ at the end (the lockstep
    // comparison may pass over some, such as hidden caches).
    let (ca, cb) = (format!("{:#x?}", a.cpu), format!("{:#x?}", b.cpu));
    let fields: Vec<String> = ca
        .lines()
        .zip(cb.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("{} | {}", x.trim(), y.trim()))
        .collect();
    panic!(
        "interp and {name} end differently on {case:x?}\n\
         interp: {ea:?} after {} instructions, {name}: {eb:?} after {}\n\
         first RAM difference: {at:x?}\nCPU fields (interp | {name}):\n{}\n{first}",
        a.clock.icount,
        b.clock.icount,
        fields.join("\n")
    );
}
