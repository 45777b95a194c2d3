//! Random guest code on raw mode behind the execution manager (ring
//! compression where the guest pages, the interpreter elsewhere): the run
//! ends cleanly within its budget, and the monitor has left (the
//! substrate's hooks are gone).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_fuzz::{raw, run_checked, GuestCase};

fuzz_target!(|data: &[u8]| {
    if let Some(case) = GuestCase::read(data) {
        let mut m = case.machine();
        let _ = run_checked(&mut m, &mut *raw());
        assert!(m.substrate.is_none(), "the raw-mode substrate outlived the run");
    }
});
