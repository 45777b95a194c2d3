//! ringside-testsuites: conformance runners and the shared pieces of the
//! integration tests.
//!
//! [`sst`] runs SingleStepTests-format instruction tests (such as the
//! hardware-captured 286 real-mode set in `../shared/conformance`) on any
//! engine. The guest programs themselves live in the `ringside-guests`
//! crate (testsuites/guests); the integration tests in testsuites/tests.

pub mod sst;
