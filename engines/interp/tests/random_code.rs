//! Robustness: random byte streams executed as guest code, in random CPU
//! modes with random registers, descriptor tables and memory, never make
//! the interpreter panic, hang or touch memory outside the guest. Every run
//! ends as a clean `RunOutcome` (or a clean `EngineError`) within its
//! instruction budget.

use proptest::prelude::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::{FIXED1, VM};
use ringside_core::cpu::segments::Descriptor;
use ringside_core::cpu::{cr0, reg, SegReg, Segment, TableReg};
use ringside_core::{Machine, RunOutcome};
use ringside_interp::Interp;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Real,
    Protected32,
    Protected16,
    Paged32,
    Vm86,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Real),
        Just(Mode::Protected32),
        Just(Mode::Protected16),
        Just(Mode::Paged32),
        Just(Mode::Vm86),
    ]
}

const CODE: u32 = 0x8000;
const IDT: u32 = 0x1000;

fn set_up(
    mode: Mode,
    code: &[u8],
    regs: &[u32; 8],
    flags: u32,
    idt: &[u8],
    data: &[u8],
) -> Machine {
    let mut m = Machine::with_ram_mib(2).expect("2 MiB of RAM maps");
    m.write_ram(0x2000, data).expect("data fits");
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("RINGSIDE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_code_ends_cleanly_within_its_budget(
        mode in mode(),
        code in proptest::collection::vec(any::<u8>(), 1..48),
        regs in any::<[u32; 8]>(),
        flags in any::<u32>(),
        idt in proptest::collection::vec(any::<u8>(), 8..256),
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut m = set_up(mode, &code, &regs, flags, &idt, &data);
        let mut engine = Interp::new();
        let start = m.clock.icount;
        let outcome = m.run_until_stopped(&mut engine, Some(2_000));
        // Unsupported instructions are a clean error; everything else ends
        // in a RunOutcome.
        if let Ok(o) = outcome {
            prop_assert!(matches!(o, RunOutcome::Stopped(_) | RunOutcome::InstructionLimit));
        }
        prop_assert!(m.clock.icount - start <= 2_000);
        prop_assert!(m.cpu.eflags & FIXED1 != 0);
    }
}
