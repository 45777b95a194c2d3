//! ringside-raw: ring compression with CSAM-style scanning and PATM-style
//! patching (raw mode in VirtualBox's terms). The design and what is built
//! so far: docs/raw.md.
//!
//! Built: [`shadow`], the rules that turn the guest's descriptors into the
//! shadow descriptors ring-1 execution needs, and [`monitor`], the two
//! views of the CPU (`enter` builds the shadow tables in the hypervisor
//! area and the ring-1 substrate state, `leave` restores the guest's).
//! Not built yet: the monitor's run loop and trap emulation, CSAM, PATM;
//! `--engine raw` is not accepted.

pub mod csam;
pub mod engine;
pub mod monitor;
pub mod shadow;

pub use engine::Raw;
