//! What a raw-mode monitor asks of the CPU it runs guest code on, the
//! *substrate* (docs/raw.md, "PATM"). The interpreter acting as bare
//! hardware honours these hooks while a monitor has installed them in
//! [`Machine::substrate`](crate::Machine); no other engine looks at them,
//! and outside a raw-mode stretch they are absent.
//!
//! - **Jump patches.** An instruction fetch that *starts* at a patched
//!   linear address decodes the patch's bytes (a `JMP rel32` into patch
//!   code) instead of the guest's. Data reads, the debugger and every other
//!   engine see the guest's own bytes, and a fetch that starts anywhere
//!   else sees the guest's bytes too, so a patch displaces no instruction.
//! - **Patch code does not count.** Instructions in the patch-code window
//!   retire without advancing the instruction count, except the ones the
//!   monitor marks (each patch's jump back to guest code retires the guest
//!   instruction the patch stands for). Their boundaries are no interrupt
//!   window and they do not end an interrupt shadow (the patched site's
//!   jump, the guest instruction's start, does): to interrupts and virtual
//!   time a patch is one guest instruction. The window is read-only to
//!   every store through the MMU.
//! - **Unscanned code stops.** Supervisor code (CPL 0-2) runs only where
//!   the monitor's scanner has been: before an instruction whose linear
//!   address is not in `scanned`, the substrate stops as at a breakpoint
//!   (`Exit::Breakpoint`), and its decoder ends a block before one. So
//!   the monitor scans code the first time it is reached however it is
//!   reached (a return, an indirect jump), with no trap on the branches.
//! - **Breakpoints at block starts.** The decoder ends a block before an
//!   execution breakpoint (`Machine::breakpoints`) too, and the run loop
//!   checks breakpoints at block starts only: the monitor drops the
//!   substrate's decoded blocks whenever its breakpoints change in a way
//!   its code invalidation does not already cover.
//! - **Code writes end the stretch.** A store into a page of decoded code
//!   ends the substrate's run at the next boundary (`Exit::BudgetSpent`),
//!   so the monitor drops its scans and the patches of what was written
//!   before the code runs.
//! - **Direct system calls.** A software interrupt (INT n) from CPL 3
//!   whose vector is in `direct` is delivered by the substrate itself
//!   through its IDT, whatever the event policy says: the monitor points
//!   those shadow gates at the guest's own handlers (VirtualBox's TRPM did
//!   the same for the system-call gate). The frame carries the gate's IF,
//!   and an interrupt gate clears the gate, not the real IF.
//! - **The virtual-interrupt gate.** The guest's IF is virtual (the real
//!   EFLAGS.IF stays 1); bit 1 of one byte of monitor memory holds it, and
//!   the substrate accepts a maskable interrupt only when it is set (as
//!   AMD-V's V_INTR_MASKING gates virtual interrupts with the guest's IF).
//!   A store that sets it makes the next boundary look for interrupts, and
//!   a store of [`GATE_STI`] begins an interrupt shadow when the gate was
//!   clear, as STI does (SDM Vol. 3A 6.8.3).

use std::collections::{HashMap, HashSet};

/// Bit of the gate byte that holds the guest's virtual IF.
pub const GATE_IF: u8 = 0x02;
/// A store of this value into the gate is the guest's STI.
pub const GATE_STI: u8 = 0x82;

/// The hooks (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct SubstrateHooks {
    /// Linear address of a patched instruction -> the bytes a fetch that
    /// starts there decodes.
    pub fetch: HashMap<u32, [u8; 5]>,
    /// The patch-code window: linear base and length.
    pub window: (u32, u32),
    /// Linear addresses in the window whose instruction counts.
    pub counted: HashSet<u32>,
    /// Offset in monitor memory of the virtual-interrupt gate byte.
    pub gate: u32,
    /// Linear addresses of the supervisor instructions the monitor has
    /// scanned (None: no such rule).
    pub scanned: Option<HashSet<u32>>,
    /// Software-interrupt vectors delivered directly from CPL 3 (bit v).
    pub direct: [u64; 4],
}

impl SubstrateHooks {
    #[inline]
    pub fn in_window(&self, lin: u32) -> bool {
        lin.wrapping_sub(self.window.0) < self.window.1
    }

    /// Whether supervisor code must stop before the instruction at `lin`
    /// (not scanned). `cpl`: the CPL it would run at.
    #[inline]
    pub fn stops_before(&self, lin: u32, cpl: u8) -> bool {
        cpl != 3 && !self.in_window(lin) && self.scanned.as_ref().is_some_and(|s| !s.contains(&lin))
    }

    /// Whether software interrupt `vector` from CPL 3 is delivered
    /// directly.
    #[inline]
    pub fn delivers_directly(&self, vector: u8) -> bool {
        self.direct[vector as usize / 64] & (1 << (vector % 64)) != 0
    }

    /// Whether the instruction at `lin` retires without counting: patch
    /// code (but for its marked exits) and the jump of a patched site.
    #[inline]
    pub fn uncounted(&self, lin: u32) -> bool {
        (self.in_window(lin) && !self.counted.contains(&lin)) || self.fetch.contains_key(&lin)
    }
}
