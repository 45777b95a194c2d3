//! ringside-raw: ring compression with CSAM-style scanning and PATM-style
//! patching (raw mode in VirtualBox's terms). The design and its limits:
//! docs/raw.md.
//!
//! [`shadow`]: the rules that turn the guest's descriptors into the shadow
//! descriptors ring-1 execution needs; [`monitor`]: the two views of the
//! CPU (`enter` builds the shadow tables in the hypervisor area and the
//! ring-1 substrate state, `leave` restores the guest's); [`csam`]: the
//! code scanner; [`patm`]: jump patches and their code; [`engine`]: the
//! monitor's run loop (`--engine raw`, behind `core::exec`).

pub mod csam;
pub mod engine;
pub mod monitor;
pub mod patm;
pub mod shadow;

pub use engine::Raw;
