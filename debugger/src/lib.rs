//! ringside-debugger: the debug facility (DBGF): debugger core, lockstep
//! comparator, terminal UI and GDB stub.
//!
//! Not built yet: this crate is reserved by the workspace layout of
//! DESIGN.md section 2 and holds no code. The comparator is planned in
//! issue 4, the rest in issue 5.
