//! Moving a machine between the interpreter and the recompiler at
//! arbitrary instruction boundaries changes nothing: a guest run in slices
//! of random length, alternating engines, ends with the same exit, COM1
//! output, instruction count, CPU state and RAM as on the interpreter
//! alone (DESIGN.md principle 1: any engine can take over at any
//! instruction boundary).

use proptest::prelude::*;
use ringside_core::{boot, Engine, Machine, RunOutcome};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_jit::Jit;

const GUESTS: &[&str] = &[
    "bench-int-small",
    "irq-pm",
    "exceptions",
    "smc",
    "paging",
    "privilege",
];
const MAX_INSNS: u64 = 50_000_000;

fn machine(name: &str) -> (Machine, SharedBuffer) {
    let guest = ringside_guests::find(name).expect("the guest is built in");
    let com1 = SharedBuffer::default();
    let mut m =
        ringside_devices::standard_machine(32, Box::new(com1.clone()), Box::new(std::io::sink()))
            .expect("32 MiB machine");
    boot::load_multiboot(&mut m, guest.image, "").expect("the guest loads");
    (m, com1)
}

struct End {
    outcome: RunOutcome,
    icount: u64,
    cpu: ringside_core::cpu::CpuState,
    ram: Vec<u8>,
    com1: Vec<u8>,
}

fn alone(name: &str) -> End {
    let (mut m, com1) = machine(name);
    let outcome = m
        .run_until_stopped(&mut Interp::new(), Some(MAX_INSNS))
        .expect("interp runs the guest");
    End {
        outcome,
        icount: m.clock.icount,
        cpu: m.cpu.clone(),
        ram: m.mem().ram_slice().to_vec(),
        com1: com1.contents(),
    }
}

/// Run `name` in slices of `every` instructions, alternating engines
/// (starting with jit when `jit_first`).
fn switching(name: &str, every: u64, jit_first: bool) -> End {
    let (mut m, com1) = machine(name);
    let mut engines: [Box<dyn Engine>; 2] =
        [Box::new(Interp::new()), Box::new(Jit::with_settings(1, 32))];
    let mut turn = jit_first as usize;
    let outcome = loop {
        m.handover();
        let o = m
            .run_until_stopped(engines[turn].as_mut(), Some(every))
            .expect("the engine runs the guest");
        if o != RunOutcome::InstructionLimit || m.clock.icount >= MAX_INSNS {
            break o;
        }
        turn ^= 1;
    };
    End {
        outcome,
        icount: m.clock.icount,
        cpu: m.cpu.clone(),
        ram: m.mem().ram_slice().to_vec(),
        com1: com1.contents(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn switching_between_interp_and_jit_every_k_instructions_ends_as_interp_alone(
        guest in proptest::sample::select(GUESTS),
        every in 1u64..20_000,
        jit_first in any::<bool>(),
    ) {
        // Very short slices on the long guest would take minutes.
        let every = if guest == "bench-int-small" { every.max(2_000) } else { every };
        let want = alone(guest);
        let got = switching(guest, every, jit_first);
        let what = format!("{guest}, every {every}, jit first: {jit_first}");
        prop_assert_eq!(got.outcome, want.outcome, "{}", what);
        prop_assert_eq!(got.icount, want.icount, "{}", what);
        prop_assert_eq!(&got.cpu, &want.cpu, "{}", what);
        prop_assert!(got.ram == want.ram, "{}: RAM differs", what);
        prop_assert_eq!(&got.com1, &want.com1, "{}", what);
    }
}
