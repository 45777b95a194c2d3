//! Robustness: random byte streams executed as guest code, in random CPU
//! modes with random registers, descriptor tables and memory, never make
//! the interpreter panic, hang or touch memory outside the guest. Every run
//! ends as a clean `RunOutcome` (or a clean `EngineError`) within its
//! instruction budget.

use proptest::prelude::*;
use ringside_core::cpu::flags::FIXED1;
use ringside_core::RunOutcome;
use ringside_interp::Interp;

#[path = "../../../testsuites/shared/random_bytes.rs"]
mod random_bytes;
use random_bytes::{mode, set_up};

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
