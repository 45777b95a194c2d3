//! Random bytes as guest code, in random CPU modes with random registers,
//! descriptor tables and memory: the set-up the random-code robustness
//! tests of the interpreter (engines/interp/tests/random_code.rs) and the
//! recompiler (engines/jit/tests/random_code.rs) share (by `#[path]`).

use proptest::prelude::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::{FIXED1, VM};
use ringside_core::cpu::segments::Descriptor;
use ringside_core::cpu::{cr0, reg, SegReg, Segment, TableReg};
use ringside_core::{Engine, Machine, RunOutcome};

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Real,
    Protected32,
    Protected16,
    Paged32,
    Vm86,
}

pub fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Real),
        Just(Mode::Protected32),
        Just(Mode::Protected16),
        Just(Mode::Paged32),
        Just(Mode::Vm86),
    ]
}

/// How many streams a test runs: `RINGSIDE_FUZZ_CASES`, else `default`
/// (the long campaign sets 100,000; fuzz/README.md).
pub fn cases(default: u32) -> u32 {
    std::env::var("RINGSIDE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One random guest: a mode, up to 47 bytes of code, the registers,
/// EFLAGS, an IDT's bytes and data.
#[derive(Debug, Clone)]
pub struct Case {
    pub mode: Mode,
    pub code: Vec<u8>,
    pub regs: [u32; 8],
    pub flags: u32,
    pub idt: Vec<u8>,
    pub data: Vec<u8>,
}

prop_compose! {
    pub fn case()(
        mode in mode(),
        code in proptest::collection::vec(any::<u8>(), 1..48),
        regs in any::<[u32; 8]>(),
        flags in any::<u32>(),
        idt in proptest::collection::vec(any::<u8>(), 8..256),
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) -> Case {
        Case { mode, code, regs, flags, idt, data }
    }
}

impl Case {
    /// The machine that runs it (`set_up`).
    pub fn machine(&self) -> Machine {
        set_up(
            self.mode, &self.code, &self.regs, self.flags, &self.idt, &self.data,
        )
    }
}

pub const CODE: u32 = 0x8000;
pub const IDT: u32 = 0x1000;

pub fn set_up(
    mode: Mode,
    code: &[u8],
    regs: &[u32; 8],
    flags: u32,
    idt: &[u8],
    data: &[u8],
) -> Machine {
    let mut m = Machine::with_ram_mib(2).expect("2 MiB of RAM maps");
    m.write_ram(0x2000, data).expect("data fits");
    // The first 128 KiB are HLTs where the case puts nothing: code that
    // runs off its end or jumps nearby halts there rather than running the
    // zeros (ADD [BX+SI],AL) to the budget (on the recompiler at threshold
    // 1, dozens of 64-instruction blocks compiled a case). Not all of RAM:
    // writing 2 MiB a case tripled the interpreter's 100,000 cases.
    m.write_ram(0, &[0xF4; 0x2_0000]).expect("RAM is 2 MiB");
    m.write_ram(0x3000, &[0; 4096])
        .expect("the page directory is clear");
    m.write_ram(CODE, code).expect("code fits");
    match mode {
        Mode::Real => {
            for s in SegReg::ALL {
                m.cpu.seg[s as usize] = Segment::real_mode(0);
            }
            m.write_ram(0, idt).expect("IVT fits");
        }
        _ => {
            enter_flat_protected_mode(&mut m, CODE);
            m.write_ram(IDT, idt).expect("IDT fits");
            m.cpu.idtr = TableReg {
                base: IDT,
                limit: idt.len() as u16 - 1,
                _pad: 0,
            };
            if matches!(mode, Mode::Protected16) {
                let d = Descriptor(0x000F_9B00_0000_FFFF);
                m.cpu.seg[SegReg::Cs as usize] = d.to_segment(8);
            }
            if matches!(mode, Mode::Paged32) {
                // Identity-map the first 4 MiB with one 4 MiB page, PD at 0x3000.
                m.write_ram(0x3000, &0x87u32.to_le_bytes())
                    .expect("PD fits");
                m.cpu.cr3 = 0x3000;
                m.cpu.cr4 |= ringside_core::cpu::cr4::PSE;
                m.cpu.cr0 |= cr0::PG;
            }
            if matches!(mode, Mode::Vm86) {
                for s in SegReg::ALL {
                    m.cpu.seg[s as usize] = Segment::vm86(0);
                }
                m.cpu.eflags |= VM;
            }
        }
    }
    m.cpu.gpr = *regs;
    m.cpu.gpr[reg::ESP] &= 0xFFFF;
    m.cpu.eip = CODE;
    m.cpu.eflags = (m.cpu.eflags & VM) | (flags & 0x0000_0ED5) | FIXED1;
    m
}

/// Run `m` on `engine` for at most 2,000 instructions: the run ends
/// cleanly within its budget (an unsupported instruction is a clean
/// error, anything else a `RunOutcome`) and EFLAGS bit 1 stays set.
pub fn ends_cleanly(m: &mut Machine, engine: &mut dyn Engine) -> Result<(), TestCaseError> {
    let start = m.clock.icount;
    let outcome = m.run_until_stopped(engine, Some(2_000));
    if let Ok(o) = outcome {
        prop_assert!(matches!(
            o,
            RunOutcome::Stopped(_) | RunOutcome::InstructionLimit
        ));
    }
    prop_assert!(m.clock.icount - start <= 2_000);
    prop_assert!(m.cpu.eflags & FIXED1 != 0);
    Ok(())
}
