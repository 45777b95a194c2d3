//! ringside-raw: ring compression with CSAM-style scanning and PATM-style
//! patching (raw mode in VirtualBox's terms).
//!
//! Not built yet: this crate is reserved by the workspace layout of
//! DESIGN.md section 2 and holds no code. It is planned in its own issue.
