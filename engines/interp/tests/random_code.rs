//! Robustness: random byte streams executed as guest code, in random CPU
//! modes with random registers, descriptor tables and memory, never make
//! the interpreter panic, hang or touch memory outside the guest. Every run
//! ends as a clean `RunOutcome` (or a clean `EngineError`) within its
//! instruction budget.

use proptest::prelude::*;
use ringside_interp::Interp;

#[path = "../../../testsuites/shared/random_bytes.rs"]
mod random_bytes;
use random_bytes::{ends_cleanly, mode, set_up};

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
        ends_cleanly(&mut m, &mut Interp::new())?;
    }
}
