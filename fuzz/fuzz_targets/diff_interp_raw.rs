//! Random guest code on the interpreter and on raw mode: the same outcome,
//! instruction count, CPU state and RAM; on a difference the panic names
//! the first divergent instruction. Excused, as docs/raw.md documents:
//! a guest that maps the hypervisor area (the top 4 MiB of the linear
//! space) stops raw mode with `EngineError::Unavailable`, and guest ring-0
//! code, which runs at ring 1 (a supervisor level), reaches the area's
//! monitor pages where the interpreter takes a page fault on the unmapped
//! address (seen here as the interpreter's CR2 in the area at the end:
//! the first fault ends these runs, at the HLT every vector leads to or,
//! with the stack in the area too, a triple fault). A guest that loads
//! such a value into CR2 itself is excused as well: rare, and a gap in
//! this target's check, not in raw mode. And a guest that rewrites its
//! page directory without INVLPG or a CR3 load: which stale translations
//! the CPU still uses is its choice (SDM Vol. 3A 4.10.4.2), and raw mode
//! flushes the TLB at monitor entries where the interpreter keeps it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::EngineError;
use ringside_fuzz::{differential, page_directory_rewritten, raw, GuestCase, Mode};
use ringside_raw::monitor::DEFAULT_AREA;

fuzz_target!(|data: &[u8]| {
    if let Some(case) = GuestCase::read(data) {
        let paged = case.mode == Mode::Paged32;
        differential(&case, "raw", raw, |interp, raw_result| {
            matches!(raw_result, Err(EngineError::Unavailable { .. }))
                || (paged && interp.cpu.cr2 >= DEFAULT_AREA)
                || (paged && page_directory_rewritten(interp))
        });
    }
});
