//! ringside-testsuites: conformance runners and the shared pieces of the
//! integration tests.
//!
//! [`sst`] runs SingleStepTests-format instruction tests (such as the
//! hardware-captured 286 real-mode set in `../shared/conformance`) on any
//! engine. The guest programs themselves live in the `ringside-guests`
//! crate (testsuites/guests); the integration tests in testsuites/tests.
//! [`book`] compiles the chapters of the user's guide so that their Rust
//! examples run as doctests.

pub mod sst;

/// Whether `CI` is set (to anything but empty, `0` or `false`), as
/// `.ci/run` sets it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test that cannot run here for want of a tool or a data set says why
/// and skips, outside CI. In CI (`in_ci`), where `.ci/run` installs every
/// tool the tests use and the conformance data sits beside the clone, the
/// same situation fails the test with the reason: a skip there would pass
/// off a test that never ran. (Host limits, such as what this host's KVM
/// can run, are not for this: they skip everywhere.)
pub fn skip_unless_ci(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason}; CI is set, and CI provides it: a failure, not a skip");
    }
    println!("{test}: skipped: {reason}");
}

/// The book's chapters (book/src), compiled so their Rust examples run as
/// doctests: an example that stops compiling or asserting fails
/// `cargo test`, so the book cannot drift from the code.
pub mod book {
    #[doc = include_str!("../../book/src/getting-started.md")]
    pub mod getting_started {}

    #[doc = include_str!("../../book/src/how-an-instruction-executes.md")]
    pub mod how_an_instruction_executes {}

    #[doc = include_str!("../../book/src/machine-model.md")]
    pub mod machine_model {}

    #[doc = include_str!("../../book/src/memory-and-paging.md")]
    pub mod memory_and_paging {}

    #[doc = include_str!("../../book/src/exceptions-and-interrupts.md")]
    pub mod exceptions_and_interrupts {}

    #[doc = include_str!("../../book/src/device-bus.md")]
    pub mod device_bus {}

    #[doc = include_str!("../../book/src/saved-state.md")]
    pub mod saved_state {}

    #[doc = include_str!("../../book/src/pc-platform.md")]
    pub mod pc_platform {}

    #[doc = include_str!("../../book/src/demo-os.md")]
    pub mod demo_os {}

    #[doc = include_str!("../../book/src/guests.md")]
    pub mod guests {}

    #[doc = include_str!("../../book/src/recompiler.md")]
    pub mod recompiler {}

    #[doc = include_str!("../../book/src/hardware-virtualization.md")]
    pub mod hardware_virtualization {}

    #[doc = include_str!("../../book/src/comparing-engines.md")]
    pub mod comparing_engines {}

    #[doc = include_str!("../../book/src/raw-mode.md")]
    pub mod raw_mode {}

    #[doc = include_str!("../../book/src/engines-compared.md")]
    pub mod engines_compared {}

    #[doc = include_str!("../../book/src/debugger.md")]
    pub mod debugger {}

    #[doc = include_str!("../../book/src/gdb.md")]
    pub mod gdb {}
}
