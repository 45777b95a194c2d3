//! ringside-jit: the Cranelift recompiler (REM in VirtualBox's terms).
//!
//! Not built yet: this crate is reserved by the workspace layout of
//! DESIGN.md section 2 and holds no code. The recompiler is planned in its
//! own issue; until then `--engine jit` is rejected by the front-end as an
//! unknown engine.
