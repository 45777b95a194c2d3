//! The generated-code ABI: what code generated at run time (the
//! recompiler's blocks, raw-mode patch code) may touch of a machine, and
//! how (DESIGN.md section 4, "What every engine stands on").
//!
//! Generated code gets three pointers when it is entered
//! ([`Machine::abi_pointers`]) and touches nothing else directly:
//!
//! * **`CpuState`**, by the field offsets in [`cpu_state`]. Between calls
//!   into Rust, generated code may keep guest registers in host registers,
//!   but `CpuState` must be exact whenever it calls a helper that can
//!   fault or look at the state, and when it returns.
//! * **The software TLB**, an array of [`tlb::ENTRIES`] entries of
//!   [`tlb::ENTRY_SIZE`] bytes, laid out as [`TlbEntry`]. For an access of
//!   `n` bytes at linear address `lin` by privilege class `user` (CPL 3)
//!   for reading or writing: take the entry at [`tlb::index`]`(lin)`; the
//!   access hits if the tag at [`tlb::tag_offset`]`(user, write)` equals
//!   `lin >> 12` and `(lin & 0xFFF) <= 0x1000 - n` (the access stays in the
//!   page); the host address is then `addend + lin` (the entry's addend is
//!   the page's host address less its linear address, wrapping). Instruction
//!   fetches use the read tags. Anything else — a miss, a page-crossing
//!   access, MMIO, a data breakpoint — calls the slow path
//!   (`Machine::read_lin` / `write_lin`), which walks the page tables,
//!   raises #PF precisely and refills the entry. Generated code never
//!   writes the TLB.
//! * **The pending-work word** ([`PendingWork`]): a `u32` that is non-zero
//!   when the instruction boundary must look. Generated code tests it
//!   after every instruction that may raise it (a helper call, a store
//!   through the slow path) and at the end of each block, and returns to
//!   the engine's loop when it is set.
//!
//! **Code writes.** A page that decoded or translated code was made from
//! is a code page (`Memory::is_code_page`); the TLB never holds a write
//! entry for one. A store to it therefore takes the slow path, which
//! records the page in the code-write log (`Memory::code_writes_since`)
//! and raises `work::CODE_WRITE`, so the engine drops what it made from
//! the page before it runs again. Self-modifying code needs nothing more
//! from generated code than to honour the pending word after a slow-path
//! store.
//!
//! **Lifetime.** The TLB's host pointers point into the machine's RAM and
//! ROM. `Machine` keeps its memory and TLB private and flushes the TLB
//! whenever the physical map changes (ROM or MMIO mapped, A20, a restored
//! snapshot) and at every engine handover ([`Machine::handover`]), so a
//! host pointer read from the TLB is valid until generated code returns or
//! calls into Rust.
//!
//! The test at the bottom pins every offset: changing one must be a
//! deliberate act, made together with the code generators.

use std::mem::offset_of;

pub use crate::cpu::boundary::{work, PendingWork};
use crate::cpu::CpuState;
use crate::machine::Machine;
pub use crate::mmu::TlbEntry;

/// Byte offsets of `CpuState` fields.
pub mod cpu_state {
    use super::*;
    use crate::cpu::{Msrs, RunState, Segment, TableReg};

    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI as `[u32; 8]`.
    pub const GPR: usize = offset_of!(CpuState, gpr);
    pub const EIP: usize = offset_of!(CpuState, eip);
    pub const EFLAGS: usize = offset_of!(CpuState, eflags);
    /// ES, CS, SS, DS, FS, GS as `[Segment; 6]`.
    pub const SEG: usize = offset_of!(CpuState, seg);
    pub const SEGMENT_SIZE: usize = std::mem::size_of::<Segment>();
    /// Within a `Segment`.
    pub const SEGMENT_SELECTOR: usize = offset_of!(Segment, selector);
    pub const SEGMENT_ATTR: usize = offset_of!(Segment, attr);
    pub const SEGMENT_BASE: usize = offset_of!(Segment, base);
    pub const SEGMENT_LIMIT: usize = offset_of!(Segment, limit);
    pub const LDTR: usize = offset_of!(CpuState, ldtr);
    pub const TR: usize = offset_of!(CpuState, tr);
    pub const GDTR: usize = offset_of!(CpuState, gdtr);
    pub const IDTR: usize = offset_of!(CpuState, idtr);
    /// Within a `TableReg`.
    pub const TABLE_BASE: usize = offset_of!(TableReg, base);
    pub const TABLE_LIMIT: usize = offset_of!(TableReg, limit);
    pub const CR0: usize = offset_of!(CpuState, cr0);
    pub const CR2: usize = offset_of!(CpuState, cr2);
    pub const CR3: usize = offset_of!(CpuState, cr3);
    pub const CR4: usize = offset_of!(CpuState, cr4);
    /// DR0-DR7 as `[u32; 8]`.
    pub const DR: usize = offset_of!(CpuState, dr);
    pub const MSR: usize = offset_of!(CpuState, msr);
    pub const MSR_TSC_OFFSET: usize = MSR + offset_of!(Msrs, tsc_offset);
    pub const RUN: usize = offset_of!(CpuState, run);
    /// One byte each (0 or 1).
    pub const RUN_HALTED: usize = RUN + offset_of!(RunState, halted);
    pub const RUN_INTERRUPT_SHADOW: usize = RUN + offset_of!(RunState, interrupt_shadow);
    pub const SIZE: usize = std::mem::size_of::<CpuState>();

    /// The offset of general register `r` (`cpu::reg::EAX`...).
    pub const fn gpr(r: usize) -> usize {
        GPR + 4 * r
    }

    /// The offset of segment register `s`'s field at `field` (one of the
    /// `SEGMENT_*` offsets).
    pub const fn segment(s: crate::cpu::SegReg, field: usize) -> usize {
        SEG + SEGMENT_SIZE * s as usize + field
    }
}

/// The software TLB's layout and index rule.
pub mod tlb {
    use super::*;

    /// Entries in the direct-mapped TLB.
    pub const ENTRIES: usize = crate::mmu::TLB_ENTRIES;
    pub const ENTRY_SIZE: usize = std::mem::size_of::<TlbEntry>();
    /// Within an entry: the four tags (`[u32; 4]`), the addend (the page's
    /// host address less its linear address, wrapping), the physical page
    /// number.
    pub const TAGS: usize = offset_of!(TlbEntry, tags);
    pub const ADDEND: usize = offset_of!(TlbEntry, addend);
    pub const PHYS_PAGE: usize = offset_of!(TlbEntry, phys_page);
    /// A tag that matches no linear page (`lin >> 12` is below 2^20).
    pub const INVALID_TAG: u32 = crate::mmu::INVALID_TAG;

    /// The entry that caches linear address `lin`.
    #[inline(always)]
    pub const fn index(lin: u32) -> usize {
        (lin >> 12) as usize % ENTRIES
    }

    /// The offset within an entry of the tag for an access by privilege
    /// class `user` (CPL 3) that reads (or fetches) or writes.
    #[inline(always)]
    pub const fn tag_offset(user: bool, write: bool) -> usize {
        TAGS + 4 * (2 * user as usize + write as usize)
    }
}

/// What generated code is given when it is entered.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiPointers {
    pub cpu: *mut CpuState,
    /// The first of [`tlb::ENTRIES`] entries.
    pub tlb: *const TlbEntry,
    /// The pending-work word.
    pub pending: *const u32,
    /// The TLB's generation (`Tlb::generation`): changes whenever any
    /// entry does.
    pub tlb_generation: *const u64,
}

impl Machine {
    /// The pointers generated code works through (see the module
    /// documentation). Valid while the machine is not moved and no
    /// `&mut Machine` is used by anything but the generated code's own
    /// helper calls.
    pub fn abi_pointers(&mut self) -> AbiPointers {
        AbiPointers {
            cpu: &mut self.cpu,
            tlb: self.tlb.entries_ptr(),
            pending: self.pending().as_ptr(),
            tlb_generation: self.tlb.generation_ptr(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{reg, SegReg};
    use crate::mmu::AccessKind;

    /// Generated code addresses these by number: a layout change must be
    /// made together with the code generators.
    #[test]
    fn every_published_offset_is_pinned() {
        use cpu_state::*;
        assert_eq!(GPR, 0);
        assert_eq!(gpr(reg::ESP), 16);
        assert_eq!(EIP, 32);
        assert_eq!(EFLAGS, 36);
        assert_eq!(SEG, 40);
        assert_eq!(SEGMENT_SIZE, 16);
        assert_eq!(
            (SEGMENT_SELECTOR, SEGMENT_ATTR, SEGMENT_BASE, SEGMENT_LIMIT),
            (0, 4, 8, 12)
        );
        assert_eq!(segment(SegReg::Ss, SEGMENT_BASE), 40 + 32 + 8);
        assert_eq!((LDTR, TR, GDTR, IDTR), (136, 152, 168, 176));
        assert_eq!((TABLE_BASE, TABLE_LIMIT), (0, 4));
        assert_eq!((CR0, CR2, CR3, CR4), (184, 188, 192, 196));
        assert_eq!(DR, 200);
        assert_eq!((MSR, MSR_TSC_OFFSET), (232, 232));
        assert_eq!(RUN, 536);
        assert_eq!((RUN_HALTED, RUN_INTERRUPT_SHADOW), (536, 538));
        assert_eq!(SIZE, 544);

        assert_eq!(tlb::ENTRIES, 1024);
        assert_eq!(tlb::ENTRY_SIZE, 32);
        assert_eq!((tlb::TAGS, tlb::ADDEND, tlb::PHYS_PAGE), (0, 16, 24));
        assert_eq!(tlb::tag_offset(false, false), 0);
        assert_eq!(tlb::tag_offset(false, true), 4);
        assert_eq!(tlb::tag_offset(true, false), 8);
        assert_eq!(tlb::tag_offset(true, true), 12);
        assert_eq!(tlb::index(0x0040_3123), 0x403 % 1024);
    }

    /// The rule the module documents, carried out with raw pointers the way
    /// generated code does, finds the byte `read_lin` reads.
    #[test]
    fn a_tlb_hit_by_the_published_rule_reads_guest_memory() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_ram(0x5123, &[0xAB]).unwrap();
        m.translate(0x5123, AccessKind::Read, false).unwrap();
        let p = m.abi_pointers();
        let lin = 0x5123u32;
        // SAFETY: the TLB has ENTRIES entries of ENTRY_SIZE bytes; the tag
        // and host fields are at the published offsets; a hit means the
        // addend plus the linear address is the byte in RAM.
        let byte = unsafe {
            let entry = (p.tlb as *const u8).add(tlb::index(lin) * tlb::ENTRY_SIZE);
            let tag = (entry.add(tlb::tag_offset(false, false)) as *const u32).read();
            assert_eq!(tag, lin >> 12, "the fill installed a read tag");
            let addend = (entry.add(tlb::ADDEND) as *const *const u8).read();
            addend.wrapping_add(lin as usize).read()
        };
        assert_eq!(byte, 0xAB);
        assert_eq!(m.read_lin::<u8>(lin, false), Ok(0xAB));
    }

    #[test]
    fn no_write_entry_is_installed_for_a_code_page() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.mark_code_page(5);
        m.translate(0x5000, AccessKind::Write, false).unwrap();
        let p = m.abi_pointers();
        // SAFETY: as above.
        let tag = unsafe {
            let entry = (p.tlb as *const u8).add(tlb::index(0x5000) * tlb::ENTRY_SIZE);
            (entry.add(tlb::tag_offset(false, true)) as *const u32).read()
        };
        assert_eq!(
            tag,
            tlb::INVALID_TAG,
            "stores to code pages take the slow path"
        );
        m.pending().take();
        m.write_lin::<u8>(0x5000, 1, false).unwrap();
        assert_ne!(m.pending().get() & work::CODE_WRITE, 0);
    }
}
