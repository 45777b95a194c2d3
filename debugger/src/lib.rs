//! ringside-debugger: the debug facility (DBGF in VirtualBox's terms).
//!
//! It owns the lockstep comparator ([`lockstep`]): two machines built from
//! the same configuration, each on its own engine, stepped one instruction
//! at a time and compared after every step, stopping at the first
//! instruction where architectural state or memory writes differ. The
//! debugger core, terminal UI and gdb stub of issue 5 will build on it; they
//! are not written yet.

pub mod lockstep;
