//! A hostile guest against the monitor: random bytes run as ring-0 code
//! of a paged guest with random registers, flags, GDT, IDT and data, on
//! raw mode behind the execution manager. Whatever the code does — load
//! random descriptors, write all over the linear space (the hypervisor
//! area included), fault inside and outside patch code — the run ends
//! cleanly within its budget, no panic, and the monitor has left: the
//! hypervisor area is unmapped and the substrate's hooks are gone.

use proptest::prelude::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::FIXED1;
use ringside_core::cpu::{cr0, cr4, reg, TableReg};
use ringside_core::exec::ExecutionManager;
use ringside_core::{Machine, RunOutcome};
use ringside_interp::Interp;
use ringside_raw::Raw;

const CODE: u32 = 0x8000;
const IDT: u32 = 0x1000;
const GDT: u32 = 0x2800;
const PD: u32 = 0x3000;
const BUDGET: u64 = 2_000;

fn set_up(
    code: &[u8],
    regs: &[u32; 8],
    flags: u32,
    gdt: &[u8],
    idt: &[u8],
    data: &[u8],
) -> Machine {
    let mut m = Machine::with_ram_mib(4).expect("4 MiB of RAM maps");
    enter_flat_protected_mode(&mut m, CODE);
    m.write_ram(0x2000, data).expect("data fits");
    m.write_ram(CODE, code).expect("code fits");
    m.write_ram(IDT, idt).expect("IDT fits");
    m.cpu.idtr = TableReg {
        base: IDT,
        limit: idt.len() as u16 - 1,
        _pad: 0,
    };
    // The loader's flat descriptors first (0x08 code, 0x10 data), then
    // random ones the code may load.
    let mut table = vec![0u8; 24];
    m.mem()
        .read_ram(m.cpu.gdtr.base, &mut table)
        .expect("the loader's GDT is in RAM");
    table.extend_from_slice(gdt);
    m.write_ram(GDT, &table).expect("GDT fits");
    m.cpu.gdtr = TableReg {
        base: GDT,
        limit: table.len() as u16 - 1,
        _pad: 0,
    };
    // The first 4 MiB identity-mapped by one 4 MiB page.
    m.write_ram(PD, &0x87u32.to_le_bytes()).expect("PD fits");
    m.cpu.cr3 = PD;
    m.cpu.cr4 |= cr4::PSE;
    m.cpu.cr0 |= cr0::PG;
    m.cpu.gpr = *regs;
    m.cpu.gpr[reg::ESP] = 0x7000 + (regs[reg::ESP] & 0xFFC);
    m.cpu.eip = CODE;
    m.cpu.eflags = (flags & 0x0000_0ED5) | FIXED1 | (flags & 0x200);
    m
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("RINGSIDE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_ring_0_code_on_raw_ends_cleanly_and_leaves_the_monitor(
        code in proptest::collection::vec(any::<u8>(), 1..64),
        regs in any::<[u32; 8]>(),
        flags in any::<u32>(),
        gdt in proptest::collection::vec(any::<u8>(), 0..64),
        idt in proptest::collection::vec(any::<u8>(), 8..256),
        data in proptest::collection::vec(any::<u8>(), 0..512),
        patm in any::<bool>(),
    ) {
        let mut m = set_up(&code, &regs, flags, &gdt, &idt, &data);
        let mut engine = ExecutionManager::new(Raw::with_patching(patm), Interp::new());
        let start = m.clock.icount;
        let outcome = m.run_until_stopped(&mut engine, Some(BUDGET));
        // An instruction no engine implements, or a guest raw mode refuses
        // (its GDT too large, a mapping over the area) is a clean error;
        // everything else ends in a RunOutcome.
        if let Ok(o) = outcome {
            prop_assert!(matches!(o, RunOutcome::Stopped(_) | RunOutcome::InstructionLimit));
        }
        prop_assert!(m.clock.icount - start <= BUDGET);
        prop_assert!(m.cpu.eflags & FIXED1 != 0);
        prop_assert_eq!(m.hypervisor_area(), None);
        prop_assert!(m.substrate.is_none());
    }
}
