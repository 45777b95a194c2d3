//! Random guest code on the interpreter and on the recompiler (threshold
//! 1): the same outcome, instruction count, CPU state and RAM; on a
//! difference the panic names the first divergent instruction (found in
//! lockstep).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_fuzz::{differential, jit, GuestCase};

fuzz_target!(|data: &[u8]| {
    if let Some(case) = GuestCase::read(data) {
        let regions = if case.regs[0] & 1 == 0 { 32 } else { 1 };
        differential(&case, "jit", || jit(regions), |_, _| false);
    }
});
