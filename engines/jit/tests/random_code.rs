//! Robustness: random byte streams executed as guest code on the
//! recompiler, in random CPU modes with random registers, descriptor
//! tables and memory (the interpreter's set-up,
//! testsuites/shared/random_bytes.rs), with every block compiled at its
//! first run: no panic, no hang, no host memory touched outside the guest.
//! Every run ends as a clean `RunOutcome` (or a clean `EngineError`)
//! within its budget. `RINGSIDE_FUZZ_CASES` streams (2,000 by default; the
//! long campaign in fuzz/README.md runs 100,000).

use proptest::prelude::*;
use ringside_jit::Jit;

#[path = "../../../testsuites/shared/random_bytes.rs"]
mod random_bytes;
use random_bytes::{case, cases, ends_cleanly};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_code_ends_cleanly_within_its_budget_on_the_recompiler(
        case in case(),
        regions in prop_oneof![Just(1u32), Just(32u32)],
    ) {
        ends_cleanly(&mut case.machine(), &mut Jit::with_settings(1, regions))?;
    }
}
