//! Random guest code on the recompiler (every block compiled at its first
//! run, regions of 32 blocks or one), in every CPU mode: the run ends
//! cleanly within its budget.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_fuzz::{jit, run_checked, GuestCase};

fuzz_target!(|data: &[u8]| {
    if let Some(case) = GuestCase::read(data) {
        let regions = if case.regs[0] & 1 == 0 { 32 } else { 1 };
        let _ = run_checked(&mut case.machine(), &mut *jit(regions));
    }
});
