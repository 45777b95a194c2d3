//! ringside-kvm: hardware virtualization through /dev/kvm (HWACCM in
//! VirtualBox's terms).
//!
//! Not built yet: this crate is reserved by the workspace layout of
//! DESIGN.md section 2 and holds no code. It is planned in issue 4.
