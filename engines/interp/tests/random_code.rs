//! Robustness: random byte streams executed as guest code, in random CPU
//! modes with random registers, descriptor tables and memory, never make
//! the interpreter panic, hang or touch memory outside the guest. Every run
//! ends as a clean `RunOutcome` (or a clean `EngineError`) within its
//! instruction budget.

use proptest::prelude::*;
use ringside_interp::Interp;

#[path = "../../../testsuites/shared/random_bytes.rs"]
mod random_bytes;
use random_bytes::{case, cases, ends_cleanly};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(100_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_code_ends_cleanly_within_its_budget(case in case()) {
        ends_cleanly(&mut case.machine(), &mut Interp::new())?;
    }
}
