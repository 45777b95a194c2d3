//! ringside-raw: ring compression with CSAM-style scanning and PATM-style
//! patching (raw mode in VirtualBox's terms). The design and what is built
//! so far: docs/raw.md.
//!
//! Built: [`shadow`], the rules that turn the guest's descriptors into the
//! shadow descriptors ring-1 execution needs. The engine itself (monitor,
//! CSAM, PATM, the substrate) is not built yet; `--engine raw` is not
//! accepted.

pub mod shadow;
