//! ringside-debugger: the debug facility (DBGF in VirtualBox's terms).
//!
//! - [`dbgf`]: the debugger core every front-end drives — stop, continue,
//!   step, step over; breakpoints, watchpoints and catches ([`stops`]);
//!   the history of retired instructions; switching engines; compare mode.
//! - [`commands`]: the command language of the TUI's command line and the
//!   gdb stub's `monitor`.
//! - [`inspect`]: memory, disassembly, registers, page walks, descriptor
//!   tables, without side effects on the guest.
//! - [`symbols`]: ELF symbols of the booted image.
//! - [`lockstep`]: the comparator (two machines, two engines, stepped
//!   together and compared after every instruction).
//! - [`tui`]: the terminal UI of `ringside debug`.

pub mod commands;
pub mod dbgf;
pub mod gdb;
pub mod gdb_wire;
pub mod inspect;
pub mod lockstep;
pub mod stops;
pub mod symbols;
pub mod tui;

pub use dbgf::{Debugger, EngineFactory, Resume, StopCause};
