//! The MMU (PGM): 32-bit two-level paging with 4 KiB and 4 MiB pages, and a
//! software TLB shared by the software engines.
//!
//! Every guest memory access goes linear -> physical here. The fast path is a
//! direct-mapped TLB lookup that yields a host pointer for RAM (and, for
//! reads, ROM) pages; everything else — misses, MMIO, page-crossing accesses,
//! writes to pages that hold cached code — takes the slow path, which walks
//! the page tables (SDM Vol. 3A 4.3), sets accessed and dirty bits, raises #PF
//! with the error code of SDM Vol. 3A 4.7, and routes MMIO to the bus.

use crate::cpu::segments::Descriptor;
use crate::cpu::{cr0, cr4, CpuResult, Fault};
use crate::machine::Machine;
use crate::memory::{PhysKind, MONITOR_SIZE, PAGE_SHIFT, PAGE_SIZE};

/// Page-table entry bits (SDM Vol. 3A table 4-5 and 4-6).
pub mod pte {
    pub const P: u32 = 1 << 0;
    pub const RW: u32 = 1 << 1;
    pub const US: u32 = 1 << 2;
    pub const A: u32 = 1 << 5;
    pub const D: u32 = 1 << 6;
    pub const PS: u32 = 1 << 7;
    pub const G: u32 = 1 << 8;
}

/// #PF error code bits (SDM Vol. 3A 4.7).
pub mod pf_error {
    pub const P: u32 = 1 << 0;
    pub const WR: u32 = 1 << 1;
    pub const US: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Execute,
}

pub(crate) const TLB_ENTRIES: usize = 1024;
pub(crate) const INVALID_TAG: u32 = u32::MAX;

/// One TLB slot, laid out for generated code (`abi::tlb` publishes the
/// offsets). `tags[class * 2 + write]` holds the virtual page number for
/// which the access is allowed, class 0 being supervisor and 1 user.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlbEntry {
    pub(crate) tags: [u32; 4],
    /// The host address of the page's first byte minus the page's linear
    /// address (wrapping): the host address of linear `lin` in the page is
    /// `addend + lin`, one add for generated code. Every tag of an entry
    /// names the same linear page.
    pub(crate) addend: *mut u8,
    pub(crate) phys_page: u32,
    _pad: u32,
}

const EMPTY: TlbEntry = TlbEntry {
    tags: [INVALID_TAG; 4],
    addend: std::ptr::null_mut(),
    phys_page: 0,
    _pad: 0,
};

/// The software TLB.
pub struct Tlb {
    entries: Box<[TlbEntry]>,
    /// A 4 MiB page is cached as many 4 KiB entries: INVLPG then flushes all.
    has_large_pages: bool,
    pub flushes: u64,
    pub misses: u64,
    /// Bumped by every change to any entry (fill, flush, INVLPG, revoked
    /// writes): an engine that remembers a translation it looked up (the
    /// interpreter's block chaining) knows it still holds while this is
    /// unchanged.
    generation: u64,
}

// SAFETY: the host pointers point into the `Memory` of the same `Machine`,
// which moves together with the TLB.
unsafe impl Send for Tlb {}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: vec![EMPTY; TLB_ENTRIES].into_boxed_slice(),
            has_large_pages: false,
            flushes: 0,
            misses: 0,
            generation: 0,
        }
    }
}

impl Tlb {
    /// The first entry, for generated code (`abi::tlb`).
    pub fn entries_ptr(&self) -> *const TlbEntry {
        self.entries.as_ptr()
    }

    /// See the field: changes whenever any entry changes.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation counter, for generated code that checks it itself.
    pub fn generation_ptr(&self) -> *const u64 {
        &self.generation
    }

    pub fn flush(&mut self) {
        self.generation += 1;
        self.entries.iter_mut().for_each(|e| *e = EMPTY);
        self.has_large_pages = false;
        self.flushes += 1;
    }

    /// Drop the entries of the linear pages in `[lin_base, lin_base +
    /// len)` (the hypervisor area coming or going), keeping the others.
    pub fn flush_range(&mut self, lin_base: u32, len: u32) {
        self.generation += 1;
        if self.has_large_pages {
            self.flush();
            return;
        }
        let first = lin_base >> PAGE_SHIFT;
        let pages = len >> PAGE_SHIFT;
        for e in self.entries.iter_mut() {
            if e.tags
                .iter()
                .any(|&t| t != INVALID_TAG && t.wrapping_sub(first) < pages)
            {
                *e = EMPTY;
            }
        }
    }

    /// INVLPG.
    pub fn invalidate_page(&mut self, lin: u32) {
        self.generation += 1;
        if self.has_large_pages {
            self.flush();
        } else {
            let vpn = lin >> PAGE_SHIFT;
            self.entries[vpn as usize % TLB_ENTRIES] = EMPTY;
        }
    }

    /// Stop fast-path writes to a physical page (it now holds cached code).
    pub fn revoke_writes(&mut self, phys_page: u32) {
        self.generation += 1;
        for e in self.entries.iter_mut() {
            if e.phys_page == phys_page {
                e.tags[1] = INVALID_TAG;
                e.tags[3] = INVALID_TAG;
            }
        }
    }

    #[inline(always)]
    fn hit(&self, lin: u32, slot: usize) -> Option<*mut u8> {
        let vpn = lin >> PAGE_SHIFT;
        let e = &self.entries[vpn as usize % TLB_ENTRIES];
        if e.tags[slot] == vpn {
            // A valid tag means `addend + lin` is inside the page's host
            // memory (the caller keeps the access inside the page).
            Some(e.addend.wrapping_add(lin as usize))
        } else {
            None
        }
    }

    /// The host address of `len` bytes at `lin`, when the TLB holds the
    /// page for this access (a read, or a write when `write`) by this
    /// privilege class and the bytes stay inside it. None otherwise: the
    /// caller takes the slow path, which walks, checks and fills. A string
    /// instruction's fast path copies through it.
    #[inline(always)]
    pub fn cached_span(&self, lin: u32, len: u32, write: bool, user: bool) -> Option<*mut u8> {
        if len == 0 || (lin & (PAGE_SIZE - 1)) > PAGE_SIZE - len {
            return None;
        }
        self.hit(lin, user as usize * 2 + write as usize)
    }

    /// The physical page of a linear page cached for reading by this class.
    #[inline(always)]
    pub fn lookup_phys(&self, lin: u32, user: bool) -> Option<u32> {
        let vpn = lin >> PAGE_SHIFT;
        let e = &self.entries[vpn as usize % TLB_ENTRIES];
        (e.tags[user as usize * 2] == vpn).then_some(e.phys_page)
    }
}

/// A value guest memory holds: u8, u16, u32 or u64, little-endian.
pub trait MemWord: Copy {
    const SIZE: u32;
    fn from_u64(v: u64) -> Self;
    fn to_u64(self) -> u64;
    /// # Safety
    /// `p` must be valid for reading `SIZE` bytes.
    unsafe fn load(p: *const u8) -> Self;
    /// # Safety
    /// `p` must be valid for writing `SIZE` bytes.
    unsafe fn store(self, p: *mut u8);
}

macro_rules! mem_word {
    ($t:ty) => {
        impl MemWord for $t {
            const SIZE: u32 = std::mem::size_of::<$t>() as u32;
            #[inline(always)]
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                self as u64
            }
            #[inline(always)]
            unsafe fn load(p: *const u8) -> Self {
                // SAFETY: the caller guarantees SIZE readable bytes.
                unsafe { <$t>::from_le((p as *const $t).read_unaligned()) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut u8) {
                // SAFETY: the caller guarantees SIZE writable bytes.
                unsafe { (p as *mut $t).write_unaligned(self.to_le()) }
            }
        }
    };
}
mem_word!(u8);
mem_word!(u16);
mem_word!(u32);
mem_word!(u64);

/// The result of a successful page walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub phys: u32,
    /// Effective permissions of the mapping: writable and user-accessible
    /// at both levels.
    pub writable: bool,
    pub user: bool,
    pub dirty: bool,
    pub large: bool,
}

/// What an event delivery pushed (see `Machine::peek_event_frame`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFrame {
    pub error_code: Option<u32>,
    /// The saved return address and code segment.
    pub eip: u32,
    pub cs: u16,
    /// Where the saved EFLAGS (or FLAGS) image is, linear.
    pub eflags_at: u32,
}

impl Machine {
    /// Read a value at a linear address with the privilege of `user` (a CPL 3
    /// access) — the path every instruction's data reads take.
    #[inline(always)]
    pub fn read_lin<T: MemWord>(&mut self, lin: u32, user: bool) -> CpuResult<T> {
        if (lin & (PAGE_SIZE - 1)) <= PAGE_SIZE - T::SIZE {
            if let Some(p) = self.tlb.hit(lin, user as usize * 2) {
                // SAFETY: the access stays inside one cached RAM/ROM page.
                return Ok(unsafe { T::load(p) });
            }
        }
        self.read_lin_slow(lin, T::SIZE, user).map(T::from_u64)
    }

    /// Write a value at a linear address.
    #[inline(always)]
    pub fn write_lin<T: MemWord>(&mut self, lin: u32, value: T, user: bool) -> CpuResult<()> {
        if (lin & (PAGE_SIZE - 1)) <= PAGE_SIZE - T::SIZE {
            if let Some(p) = self.tlb.hit(lin, user as usize * 2 + 1) {
                // SAFETY: the access stays inside one cached writable RAM page
                // that holds no cached code.
                unsafe { value.store(p) };
                return Ok(());
            }
        }
        self.write_lin_slow(lin, T::SIZE, value.to_u64(), user)
    }

    /// Check that `size` bytes at `lin` may be written, without writing:
    /// instructions that write several places probe first so that a fault
    /// commits nothing.
    pub fn probe_write(&mut self, lin: u32, size: u32, user: bool) -> CpuResult<()> {
        let last = lin.wrapping_add(size.max(1) - 1);
        self.translate(lin, AccessKind::Write, user)?;
        if (last ^ lin) >> PAGE_SHIFT != 0 {
            self.translate(last, AccessKind::Write, user)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn read_lin_slow(&mut self, lin: u32, size: u32, user: bool) -> CpuResult<u64> {
        let last = lin.wrapping_add(size - 1);
        let p0 = self.translate(lin, AccessKind::Read, user)?;
        if self.watch.active {
            self.check_data_breakpoints(lin, size, false);
        }
        if (last ^ lin) >> PAGE_SHIFT == 0 {
            return Ok(self.phys_read(p0, size));
        }
        let p1 = self.translate(last & !(PAGE_SIZE - 1), AccessKind::Read, user)?;
        let first_len = PAGE_SIZE - (lin & (PAGE_SIZE - 1));
        let mut v = 0u64;
        for i in 0..size {
            let pa = if i < first_len {
                p0 + i
            } else {
                p1 + (i - first_len)
            };
            v |= self.phys_read(pa, 1) << (8 * i);
        }
        Ok(v)
    }

    #[inline(never)]
    fn write_lin_slow(&mut self, lin: u32, size: u32, value: u64, user: bool) -> CpuResult<()> {
        let last = lin.wrapping_add(size - 1);
        let p0 = self.translate(lin, AccessKind::Write, user)?;
        if self.watch.active {
            self.check_data_breakpoints(lin, size, true);
        }
        if (last ^ lin) >> PAGE_SHIFT == 0 {
            self.phys_write(p0, size, value);
            return Ok(());
        }
        let p1 = self.translate(last & !(PAGE_SIZE - 1), AccessKind::Write, user)?;
        let first_len = PAGE_SIZE - (lin & (PAGE_SIZE - 1));
        for i in 0..size {
            let pa = if i < first_len {
                p0 + i
            } else {
                p1 + (i - first_len)
            };
            self.phys_write(pa, 1, (value >> (8 * i)) & 0xFF);
        }
        Ok(())
    }

    /// Read `size` bytes (1, 2, 4 or 8) of physical memory inside one page.
    pub fn phys_read(&mut self, addr: u32, size: u32) -> u64 {
        let addr = addr & self.mem.a20_mask();
        match self.mem.classify(addr) {
            PhysKind::Mmio { device, offset } => {
                let now = self.clock.now_ns();
                if size == 8 {
                    let lo = self.bus.mmio_read(device, offset, 4, now) as u64;
                    let hi = self.bus.mmio_read(device, offset + 4, 4, now) as u64;
                    lo | (hi << 32)
                } else {
                    self.bus.mmio_read(device, offset, size as u8, now) as u64
                }
            }
            _ => (0..size).fold(0u64, |acc, i| {
                let b = self
                    .mem
                    .read_plain(addr.wrapping_add(i) & self.mem.a20_mask());
                acc | ((b.unwrap_or(0xFF) as u64) << (8 * i))
            }),
        }
    }

    /// Write `size` bytes of physical memory inside one page. ROM and
    /// unassigned addresses ignore writes; RAM writes invalidate cached code.
    pub fn phys_write(&mut self, addr: u32, size: u32, value: u64) {
        let addr = addr & self.mem.a20_mask();
        if let Some(log) = self.write_log.as_mut() {
            log.push((addr, size, value));
        }
        match self.mem.classify(addr) {
            PhysKind::Mmio { device, offset } => {
                let now = self.clock.now_ns();
                if size == 8 {
                    self.bus.mmio_write(device, offset, 4, value as u32, now);
                    self.bus
                        .mmio_write(device, offset + 4, 4, (value >> 32) as u32, now);
                } else {
                    self.bus
                        .mmio_write(device, offset, size as u8, value as u32, now);
                }
            }
            _ => {
                for i in 0..size {
                    let a = addr.wrapping_add(i) & self.mem.a20_mask();
                    match self.mem.classify(a) {
                        PhysKind::Ram(off) => {
                            self.mem.store_ram_byte(off, (value >> (8 * i)) as u8)
                        }
                        PhysKind::Monitor(off) => {
                            let v = (value >> (8 * i)) as u8;
                            let v = if self.substrate.as_ref().is_some_and(|h| h.gate == off) {
                                self.store_interrupt_gate(off, v)
                            } else {
                                v
                            };
                            self.mem.store_monitor_byte(off, v)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Translate a linear address for an access, walking the page tables on
    /// a TLB miss and filling the TLB. Returns the physical address.
    pub fn translate(&mut self, lin: u32, access: AccessKind, user: bool) -> CpuResult<u32> {
        let write = access == AccessKind::Write;
        let slot = user as usize * 2 + write as usize;
        let vpn = lin >> PAGE_SHIFT;
        let idx = vpn as usize % TLB_ENTRIES;
        if self.tlb.entries[idx].tags[slot] == vpn {
            return Ok((self.tlb.entries[idx].phys_page << PAGE_SHIFT) | (lin & (PAGE_SIZE - 1)));
        }
        self.tlb.misses += 1;
        let t = self.walk_page_tables(lin, access, user)?;
        self.fill_tlb(lin, &t, user);
        Ok(t.phys)
    }

    fn fill_tlb(&mut self, lin: u32, t: &Translation, user: bool) {
        if self.watch.active {
            // Every access must reach the breakpoint check in the slow path.
            return;
        }
        let phys_page = (t.phys & self.mem.a20_mask()) >> PAGE_SHIFT;
        let Some((host, ram)) = self.mem.page_host_ptr(phys_page << PAGE_SHIFT) else {
            return;
        };
        let vpn = lin >> PAGE_SHIFT;
        let idx = vpn as usize % TLB_ENTRIES;
        let class = user as usize;
        self.tlb.generation += 1;
        let can_write = if user {
            t.writable && t.user
        } else {
            t.writable || self.cpu.cr0 & cr0::WP == 0
        };
        let e = &mut self.tlb.entries[idx];
        // The addend is the page's host address less its linear address:
        // an entry keeps its other tags only for the same linear page
        // mapped to the same host page.
        let addend = host.wrapping_sub((vpn as usize) << PAGE_SHIFT);
        if e.phys_page != phys_page || e.addend != addend {
            *e = EMPTY;
        }
        e.addend = addend;
        e.phys_page = phys_page;
        e.tags[class * 2] = vpn;
        let logging = self.write_log.is_some();
        if can_write && t.dirty && ram && !logging && !self.mem.is_code_page(phys_page) {
            e.tags[class * 2 + 1] = vpn;
        }
        if t.large {
            self.tlb.has_large_pages = true;
        }
    }

    /// Walk the guest's page tables (SDM Vol. 3A 4.3) for one access,
    /// checking permissions and setting accessed/dirty bits. Without paging
    /// the linear address is the physical one.
    pub fn walk_page_tables(
        &mut self,
        lin: u32,
        access: AccessKind,
        user: bool,
    ) -> CpuResult<Translation> {
        let write = access == AccessKind::Write;
        if let Some(area) = self.hypervisor_area {
            let off = lin.wrapping_sub(area);
            if off < MONITOR_SIZE {
                if let Some(base) = self.mem.visible_monitor_base() {
                    // Supervisor-only: a CPL-3 access is a protection fault
                    // the monitor tells apart from the guest's own.
                    if user {
                        let wr = if write { pf_error::WR } else { 0 };
                        return Err(Fault::pf(lin, pf_error::P | pf_error::US | wr));
                    }
                    // Patch code is read-only to every store through the
                    // MMU, whatever CR0.WP says (crate::substrate).
                    if write && self.substrate.as_ref().is_some_and(|h| h.in_window(lin)) {
                        return Err(Fault::pf(lin, pf_error::P | pf_error::WR));
                    }
                    // The TLB may now hold an area page: unmapping drops it.
                    self.area_in_tlb = true;
                    return Ok(Translation {
                        phys: base + off,
                        writable: true,
                        user: false,
                        dirty: true,
                        large: false,
                    });
                }
            }
        }
        if !self.cpu.paging() {
            return Ok(Translation {
                phys: self.mem.guest_frame(lin & self.mem.a20_mask()),
                writable: true,
                user: true,
                dirty: true,
                large: false,
            });
        }
        let code = |present: bool, rsvd: bool| {
            let bit = |on: bool, b: u32| if on { b } else { 0 };
            bit(present, pf_error::P)
                | bit(write, pf_error::WR)
                | bit(user, pf_error::US)
                | bit(rsvd, pf_error::RSVD)
        };
        let pde_addr = (self.cpu.cr3 & 0xFFFF_F000) | ((lin >> 22) << 2);
        let pde = self.phys_read(pde_addr, 4) as u32;
        if pde & pte::P == 0 {
            return Err(Fault::pf(lin, code(false, false)));
        }
        let large = pde & pte::PS != 0 && self.cpu.cr4 & cr4::PSE != 0;
        if large && pde & 0x003F_E000 != 0 {
            // Bits 21:13 of a 4 MiB PDE are reserved without PSE-36
            // (SDM Vol. 3A table 4-4).
            return Err(Fault::pf(lin, code(true, true)));
        }
        let (entry, entry_addr, phys, writable, usr) = if large {
            (
                pde,
                pde_addr,
                (pde & 0xFFC0_0000) | (lin & 0x003F_FFFF),
                pde & pte::RW != 0,
                pde & pte::US != 0,
            )
        } else {
            let pte_addr = (pde & 0xFFFF_F000) | (((lin >> 12) & 0x3FF) << 2);
            let pte = self.phys_read(pte_addr, 4) as u32;
            if pte & pte::P == 0 {
                return Err(Fault::pf(lin, code(false, false)));
            }
            (
                pte,
                pte_addr,
                (pte & 0xFFFF_F000) | (lin & 0xFFF),
                pde & pte & pte::RW != 0,
                pde & pte & pte::US != 0,
            )
        };
        // SDM Vol. 3A 4.6: user accesses need U/S and, to write, R/W at
        // both levels; supervisor writes need R/W only when CR0.WP = 1.
        let allowed = if user {
            usr && (!write || writable)
        } else {
            !write || writable || self.cpu.cr0 & cr0::WP == 0
        };
        if !allowed {
            return Err(Fault::pf(lin, code(true, false)));
        }
        if !large && pde & pte::A == 0 {
            self.phys_write(pde_addr, 4, (pde | pte::A) as u64);
        }
        let mut new_entry = entry | pte::A;
        if write {
            new_entry |= pte::D;
        }
        if new_entry != entry {
            self.phys_write(entry_addr, 4, new_entry as u64);
        }
        Ok(Translation {
            phys: self.mem.guest_frame(phys),
            writable,
            user: usr,
            dirty: new_entry & pte::D != 0,
            large,
        })
    }

    /// Overlay the hypervisor area (docs/raw.md): the 4 MiB of linear
    /// addresses from `lin_base` (rounded down to 4 MiB) translate to
    /// monitor memory, supervisor-only, whatever the guest's page tables
    /// say, and monitor memory becomes visible at its physical window.
    /// Returns that window's base. The area's TLB entries are dropped.
    pub fn map_hypervisor_area(
        &mut self,
        lin_base: u32,
    ) -> Result<u32, crate::memory::MemoryError> {
        let phys = self.mem.allocate_monitor()?;
        self.mem.set_monitor_visible(true);
        let base = lin_base & !(MONITOR_SIZE - 1);
        self.hypervisor_area = Some(base);
        // Only the area's own linear pages change meaning, and the TLB
        // holds none of them: the guest maps nothing there (the monitor
        // checks, `guest_maps_area`) and unmapping dropped the area's.
        if self.area_in_tlb {
            self.tlb.flush_range(base, MONITOR_SIZE);
            self.area_in_tlb = false;
        }
        Ok(phys)
    }

    /// Remove the overlay: the area's linear addresses are the guest's
    /// again and monitor memory is hidden (its window reads as
    /// unassigned). The area's TLB entries are dropped.
    pub fn unmap_hypervisor_area(&mut self) {
        if let Some(base) = self.hypervisor_area.take() {
            if self.area_in_tlb {
                self.tlb.flush_range(base, MONITOR_SIZE);
                self.area_in_tlb = false;
            }
        }
        self.mem.set_monitor_visible(false);
    }

    /// Write `bytes` into monitor memory at `offset` (the monitor building
    /// its tables, stubs and patches): what engines decoded from the pages
    /// whose bytes change is dropped, as for a store into guest code.
    pub fn write_monitor(
        &mut self,
        offset: u32,
        bytes: &[u8],
    ) -> Result<(), crate::memory::MemoryError> {
        let end = offset as u64 + bytes.len() as u64;
        let Some(mem) = self.mem.monitor_mut() else {
            return Err(crate::memory::MemoryError::NoMonitorWindow);
        };
        if end > (MONITOR_SIZE - PAGE_SIZE) as u64 {
            return Err(crate::memory::MemoryError::NotRam {
                start: offset,
                len: bytes.len(),
            });
        }
        // Page by page, and only where the bytes change: a monitor that
        // rewrites its tables as they were (every entry, typically) drops no
        // decoded code and adds nothing to the code-write log.
        let mut at = offset as usize;
        let mut rest = bytes;
        let mut changed = Vec::new();
        while !rest.is_empty() {
            let n = rest.len().min(PAGE_SIZE as usize - at % PAGE_SIZE as usize);
            let (chunk, tail) = rest.split_at(n);
            if mem[at..at + n] != *chunk {
                mem[at..at + n].copy_from_slice(chunk);
                changed.push((at as u32, n as u32));
            }
            at += n;
            rest = tail;
        }
        for (at, n) in changed {
            self.mem.note_monitor_written(at, n);
        }
        Ok(())
    }

    /// A store into the substrate's virtual-interrupt gate
    /// (crate::substrate): the next boundary looks for interrupts, and the
    /// guest's STI begins an interrupt shadow when IF was clear.
    /// Returns the byte to store (the gate holds IF only).
    fn store_interrupt_gate(&mut self, off: u32, v: u8) -> u8 {
        use crate::substrate::{GATE_IF, GATE_STI};
        let old = self.mem.monitor().map_or(0, |m| m[off as usize]);
        if v == GATE_STI && old & GATE_IF == 0 {
            self.cpu.run.interrupt_shadow = true;
        }
        if v & GATE_IF != 0 {
            self.pending().raise(crate::cpu::boundary::work::CPU);
        }
        v & GATE_IF
    }

    /// The overlaid hypervisor area's linear base, if any.
    pub fn hypervisor_area(&self) -> Option<u32> {
        self.hypervisor_area
    }

    /// Whether the guest's current page directory maps anything in the 4
    /// MiB of linear addresses from `lin_base`: the area cannot go there.
    pub fn guest_maps_area(&mut self, lin_base: u32) -> bool {
        if !self.cpu.paging() {
            return false;
        }
        let pde_addr = (self.cpu.cr3 & 0xFFFF_F000) | ((lin_base >> 22) << 2);
        self.phys_read(pde_addr, 4) as u32 & pte::P != 0
    }

    /// Translate a linear address for the debugger or a loader: no A/D
    /// updates, no faults raised, no TLB fill.
    pub fn peek_translation(&mut self, lin: u32) -> Option<u32> {
        if !self.cpu.paging() {
            return Some(lin & self.mem.a20_mask());
        }
        let pde = self.phys_read((self.cpu.cr3 & 0xFFFF_F000) | ((lin >> 22) << 2), 4) as u32;
        if pde & pte::P == 0 {
            return None;
        }
        if pde & pte::PS != 0 && self.cpu.cr4 & cr4::PSE != 0 {
            return Some((pde & 0xFFC0_0000) | (lin & 0x003F_FFFF));
        }
        let pte = self.phys_read((pde & 0xFFFF_F000) | (((lin >> 12) & 0x3FF) << 2), 4) as u32;
        (pte & pte::P != 0).then_some((pte & 0xFFFF_F000) | (lin & 0xFFF))
    }

    /// Fill `buf` from a linear address without side effects, one
    /// translation per page. Returns how many leading bytes were readable
    /// (RAM or ROM behind a present mapping).
    pub fn peek_into(&mut self, lin: u32, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let at = lin.wrapping_add(n as u32);
            let Some(pa) = self.peek_translation(at) else {
                break;
            };
            let end = (n + (PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize).min(buf.len());
            // A run within one page of RAM: one copy (the common case).
            if let crate::memory::PhysKind::Ram(off) = self.mem.classify(pa) {
                let (off, len) = (off as usize, end - n);
                if let Some(src) = self.mem.ram_slice().get(off..off + len) {
                    buf[n..end].copy_from_slice(src);
                    n = end;
                    continue;
                }
            }
            for (k, slot) in buf[n..end].iter_mut().enumerate() {
                match self.mem.read_plain(pa.wrapping_add(k as u32)) {
                    Some(b) => *slot = b,
                    None => return n + k,
                }
            }
            n = end;
        }
        n
    }

    /// Bytes at a linear address for the debugger: no side effects, None
    /// if any byte is not RAM or ROM behind a present mapping.
    pub fn peek_bytes(&mut self, lin: u32, len: u32) -> Option<Vec<u8>> {
        let mut v = vec![0; len as usize];
        (self.peek_into(lin, &mut v) == v.len()).then_some(v)
    }

    /// Up to 15 bytes (the longest instruction) at CS:EIP, and how many of
    /// them were readable: what an instruction decoder outside an engine
    /// (the debugger, the comparator, the kvm engine's step) looks at.
    pub fn peek_code(&mut self) -> ([u8; 15], usize) {
        let mut code = [0u8; 15];
        let n = self.peek_into(self.cpu.linear_eip(), &mut code);
        (code, n)
    }

    fn peek_u32(&mut self, lin: u32) -> Option<u32> {
        self.peek_bytes(lin, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The frame an event delivery just pushed at SS:ESP (SDM Vol. 3A
    /// 6.12.1, figure 6-4): slots of 4 bytes through a 32-bit gate, of 2
    /// otherwise; an error code, when there is one, on top. Read without
    /// side effects.
    pub fn peek_event_frame(&mut self, gate32: bool, error_code: bool) -> Option<EventFrame> {
        let ss = self.cpu.seg[crate::cpu::SegReg::Ss as usize].base;
        let esp = self.cpu.gpr[crate::cpu::reg::ESP];
        let sp = if self.cpu.stack32() {
            esp
        } else {
            esp & 0xFFFF
        };
        let slot = if gate32 { 4 } else { 2 };
        let at = ss.wrapping_add(sp.wrapping_add(if error_code { slot } else { 0 }));
        let read = |m: &mut Machine, a: u32| {
            m.peek_bytes(a, slot)
                .map(|b| b.iter().rev().fold(0u32, |acc, &x| (acc << 8) | x as u32))
        };
        Some(EventFrame {
            error_code: if error_code {
                Some(read(self, ss.wrapping_add(sp))?)
            } else {
                None
            },
            eip: read(self, at)?,
            cs: read(self, at.wrapping_add(slot))? as u16,
            eflags_at: at.wrapping_add(2 * slot),
        })
    }

    /// The base of the segment a selector names, read the way a segment
    /// load would (selector * 16 in real mode; the GDT or LDT descriptor in
    /// protected mode), without side effects.
    pub fn peek_segment_base(&mut self, selector: u16) -> Option<u32> {
        if !self.cpu.protected_mode() {
            return Some((selector as u32) << 4);
        }
        let (base, limit) = if selector & 4 != 0 {
            (self.cpu.ldtr.base, self.cpu.ldtr.limit)
        } else {
            (self.cpu.gdtr.base, self.cpu.gdtr.limit as u32)
        };
        let index = (selector & !7) as u32;
        if index + 7 > limit {
            return None;
        }
        let lo = self.peek_u32(base.wrapping_add(index))? as u64;
        let hi = self.peek_u32(base.wrapping_add(index + 4))? as u64;
        Some(Descriptor(lo | (hi << 32)).base())
    }

    /// Where an event through vector `v` would start: the handler's linear
    /// address, and whether the gate pushes a 32-bit frame. Read from the
    /// real-mode IVT (SDM Vol. 3A 20.1.4) or from an interrupt or trap gate
    /// of the IDT (6.11); task gates and bad entries give None. No side
    /// effects.
    pub fn peek_vector_handler(&mut self, v: u8) -> Option<(u32, bool)> {
        let idtr = self.cpu.idtr;
        if !self.cpu.protected_mode() {
            if v as u32 * 4 + 3 > idtr.limit as u32 {
                return None;
            }
            let far = self.peek_u32(idtr.base.wrapping_add(v as u32 * 4))?;
            return Some((((far >> 16) << 4).wrapping_add(far & 0xFFFF), false));
        }
        if v as u32 * 8 + 7 > idtr.limit as u32 {
            return None;
        }
        let at = idtr.base.wrapping_add(v as u32 * 8);
        let lo = self.peek_u32(at)? as u64;
        let hi = self.peek_u32(at.wrapping_add(4))? as u64;
        let gate = Descriptor(lo | (hi << 32));
        if !gate.present() || !matches!(gate.typ(), 6 | 7 | 14 | 15) {
            return None;
        }
        let base = self.peek_segment_base(gate.gate_selector())?;
        Some((
            base.wrapping_add(gate.gate_offset_sized()),
            gate.typ() & 8 != 0,
        ))
    }

    /// Make engines drop what they decoded from `phys_page`
    /// (`Memory::invalidate_code`).
    pub fn invalidate_code(&mut self, phys_page: u32) {
        self.mem.invalidate_code(phys_page);
    }

    /// Record that cached code was made from a physical page: writes to it
    /// must now take the slow path so the code can be invalidated.
    pub fn mark_code_page(&mut self, phys_page: u32) {
        if self.mem.mark_code_page(phys_page) {
            self.tlb.revoke_writes(phys_page);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr0, cr4, vector};
    use crate::machine::Machine;
    use crate::mmu::{pf_error, pte};

    fn paged_machine() -> Machine {
        let mut m = Machine::with_ram_mib(4).unwrap();
        // Page directory at 0x1000, one page table at 0x2000 mapping
        // linear 0x400000.. via PDE 1; PDE 0 is a 4 MiB page.
        m.mem.write_ram(0x1000, &(0x87u32).to_le_bytes()).unwrap(); // 4 MiB, P|RW|US|PS
        m.mem
            .write_ram(
                0x1004,
                &(0x2000u32 | pte::P | pte::RW | pte::US).to_le_bytes(),
            )
            .unwrap();
        m.mem
            .write_ram(0x2000, &(0x3000u32 | pte::P | pte::US).to_le_bytes())
            .unwrap(); // 0x400000 -> 0x3000, read-only
        m.cpu.cr3 = 0x1000;
        m.cpu.cr4 |= cr4::PSE;
        m.cpu.cr0 |= cr0::PE | cr0::PG;
        m
    }

    const AREA: u32 = 0xFFC0_0000;

    #[test]
    fn the_hypervisor_area_reaches_monitor_memory_whatever_the_guest_maps() {
        let mut m = paged_machine();
        // The guest maps the area's first page to RAM 0x3000.
        m.mem
            .write_ram(
                0x1000 + 4 * (AREA >> 22),
                &(0x2000u32 | pte::P | pte::RW).to_le_bytes(),
            )
            .unwrap();
        let phys = m.map_hypervisor_area(AREA).unwrap();
        assert!(phys >= m.mem.ram_size(), "monitor memory is not guest RAM");
        m.write_lin::<u32>(AREA + 8, 0xC0DE_F00D, false).unwrap();
        assert_eq!(m.read_lin::<u32>(AREA + 8, false), Ok(0xC0DE_F00D));
        assert_eq!(
            &m.mem.monitor().unwrap()[8..12],
            &0xC0DE_F00Du32.to_le_bytes()
        );
        let mut ram = [0u8; 4];
        m.mem.read_ram(0x3008, &mut ram).unwrap();
        assert_eq!(ram, [0; 4], "guest RAM behind the area is untouched");
    }

    #[test]
    fn the_hypervisor_area_is_supervisor_only() {
        let mut m = paged_machine();
        m.map_hypervisor_area(AREA).unwrap();
        let err = m.read_lin::<u8>(AREA + 0x10, true).unwrap_err();
        assert_eq!(
            err,
            crate::cpu::Fault::pf(AREA + 0x10, pf_error::P | pf_error::US)
        );
        let err = m.write_lin::<u8>(AREA, 1, true).unwrap_err();
        assert_eq!(
            err,
            crate::cpu::Fault::pf(AREA, pf_error::P | pf_error::US | pf_error::WR)
        );
    }

    #[test]
    fn a_guest_pte_naming_monitor_memory_reaches_unassigned_space() {
        let mut m = paged_machine();
        let phys = m.map_hypervisor_area(AREA).unwrap();
        m.write_lin::<u32>(AREA, 0x1234_5678, false).unwrap();
        // PDE 2 (linear 0x800000): a 4 MiB page onto monitor memory.
        m.mem
            .write_ram(0x1008, &(phys | 0x87).to_le_bytes())
            .unwrap();
        assert_eq!(
            m.read_lin::<u32>(0x80_0000, false),
            Ok(u32::MAX),
            "reads as unassigned"
        );
        m.write_lin::<u32>(0x80_0000, 0, false).unwrap();
        assert_eq!(
            m.read_lin::<u32>(AREA, false),
            Ok(0x1234_5678),
            "the write went nowhere"
        );
    }

    #[test]
    fn unmapping_the_area_gives_the_guest_its_own_mapping_and_hides_monitor_memory() {
        let mut m = paged_machine();
        let phys = m.map_hypervisor_area(AREA).unwrap();
        m.write_lin::<u32>(AREA, 7, false).unwrap();
        m.unmap_hypervisor_area();
        assert_eq!(m.hypervisor_area(), None);
        // The area's PDE is not present in the guest's directory.
        assert!(m.read_lin::<u32>(AREA, false).is_err());
        assert_eq!(m.phys_read(phys, 4), 0xFFFF_FFFF, "hidden: unassigned");
        assert_eq!(m.mem.monitor().unwrap()[0], 7, "kept for the next time");
        assert_eq!(
            m.map_hypervisor_area(AREA).unwrap(),
            phys,
            "the same window again"
        );
        assert_eq!(m.read_lin::<u32>(AREA, false), Ok(7));
    }

    #[test]
    fn guest_maps_area_reports_a_present_directory_entry() {
        let mut m = paged_machine();
        assert!(!m.guest_maps_area(AREA));
        assert!(m.guest_maps_area(0x40_0000));
    }

    #[test]
    fn read_sets_accessed_bits_and_write_sets_dirty() {
        let mut m = paged_machine();
        m.write_lin::<u32>(0x5000, 7, false).unwrap();
        let pde0 = m.phys_read(0x1000, 4) as u32;
        assert_eq!(pde0 & (pte::A | pte::D), pte::A | pte::D);
        m.read_lin::<u8>(0x400010, false).unwrap();
        let pte0 = m.phys_read(0x2000, 4) as u32;
        assert_eq!(pte0 & (pte::A | pte::D), pte::A);
    }

    #[test]
    fn user_write_to_read_only_page_faults_with_protection_error() {
        let mut m = paged_machine();
        let f = m.write_lin::<u8>(0x400004, 1, true).unwrap_err();
        assert_eq!(f.vector, vector::PF);
        assert_eq!(
            f.error_code,
            Some(pf_error::P | pf_error::WR | pf_error::US)
        );
        assert_eq!(f.address, 0x400004);
    }

    #[test]
    fn supervisor_write_to_read_only_page_needs_cr0_wp_to_fault() {
        let mut m = paged_machine();
        m.write_lin::<u8>(0x400004, 1, false).unwrap();
        m.tlb.flush();
        m.cpu.cr0 |= cr0::WP;
        assert!(m.write_lin::<u8>(0x400004, 1, false).is_err());
    }

    #[test]
    fn not_present_page_faults_with_p_clear() {
        let mut m = paged_machine();
        let f = m.read_lin::<u32>(0x401000, false).unwrap_err();
        assert_eq!(f.error_code, Some(0));
    }

    #[test]
    fn page_crossing_read_combines_two_pages() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.mem.write_ram(0xFFE, &[1, 2, 3, 4]).unwrap();
        assert_eq!(m.read_lin::<u32>(0xFFE, false).unwrap(), 0x0403_0201);
    }

    /// A device with one 32-bit register at every MMIO offset.
    struct Register32(u32);
    impl crate::bus::Device for Register32 {
        fn name(&self) -> &'static str {
            "reg32"
        }
        fn io_read(&mut self, _: u16, _: u8, _: &mut crate::bus::DeviceCtx) -> u32 {
            0
        }
        fn io_write(&mut self, _: u16, _: u8, _: u32, _: &mut crate::bus::DeviceCtx) {}
        fn mmio_read(&mut self, offset: u32, size: u8, _: &mut crate::bus::DeviceCtx) -> u32 {
            assert_eq!((offset, size), (0x80, 4));
            self.0
        }
        fn mmio_write(&mut self, offset: u32, size: u8, value: u32, _: &mut crate::bus::DeviceCtx) {
            assert_eq!((offset, size), (0x80, 4));
            self.0 = value;
        }
        fn save_state(&self) -> serde_json::Value {
            serde_json::json!(self.0)
        }
        fn restore_state(&mut self, _: &serde_json::Value) -> Result<(), crate::bus::StateError> {
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    #[test]
    fn mmio_accesses_reach_the_device_with_offset_and_size() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        let id = m.bus.add(Box::new(Register32(0)));
        m.map_mmio(0xFEE0_0000, 0x1000, id);
        m.write_lin::<u32>(0xFEE0_0080, 0x1234_5678, false).unwrap();
        assert_eq!(m.read_lin::<u32>(0xFEE0_0080, false).unwrap(), 0x1234_5678);
        // MMIO pages are never cached in the TLB: every access reaches the device.
        m.write_lin::<u32>(0xFEE0_0080, 7, false).unwrap();
        assert_eq!(m.read_lin::<u32>(0xFEE0_0080, false).unwrap(), 7);
    }

    #[test]
    fn writes_to_rom_are_ignored() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.map_rom(&[0xAA; 16], 1 << 20).unwrap();
        m.write_lin::<u8>(0xFFFF0, 0x55, false).unwrap();
        assert_eq!(m.read_lin::<u8>(0xFFFF0, false).unwrap(), 0xAA);
    }

    #[test]
    fn store_to_a_code_page_is_logged_even_after_a_cached_write() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.write_lin::<u8>(0x3000, 1, false).unwrap(); // fills a write TLB entry
        m.mark_code_page(3);
        let seq = m.mem.code_write_seq();
        m.write_lin::<u8>(0x3001, 2, false).unwrap();
        assert_eq!(
            m.mem.code_write_seq(),
            seq + 1,
            "the write TLB entry was revoked"
        );
    }

    #[test]
    fn a20_off_wraps_at_one_megabyte() {
        let mut m = Machine::with_ram_mib(2).unwrap();
        m.mem.write_ram(0x10, &[0x42]).unwrap();
        m.set_a20(false);
        assert_eq!(m.read_lin::<u8>(0x10_0010, false).unwrap(), 0x42);
    }
}
