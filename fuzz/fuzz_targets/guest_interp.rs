//! Random guest code on the interpreter, in every CPU mode
//! (`ringside_fuzz::GuestCase`): the run ends cleanly within its budget.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_fuzz::{interp, run_checked, GuestCase};

fuzz_target!(|data: &[u8]| {
    if let Some(case) = GuestCase::read(data) {
        let _ = run_checked(&mut case.machine(), &mut *interp());
    }
});
