//! Guest physical memory: RAM on `vm-memory`, ROM regions, MMIO ranges
//! claimed by devices, the A20 gate, and the code-page map that makes
//! self-modifying code correct.
//!
//! RAM is one `GuestMemoryMmap` region starting at physical address 0 (the
//! same mapping KVM registers as a memory slot). ROM images and MMIO ranges
//! overlay it: an address is MMIO if a device claims it, else ROM if a ROM is
//! mapped there, else RAM if below the RAM size, else unassigned (reads give
//! all ones, writes are dropped, as on a PC bus with nothing answering).

use std::sync::Arc;

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::cpu::boundary::{work, PendingWork};

pub const PAGE_SIZE: u32 = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u32);

/// A range of guest physical pages, `[first, first + count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub first_page: u32,
    pub pages: u32,
}

/// Identifies a device on the bus (an index into the bus's device list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(pub usize);

/// What answers at a physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysKind {
    /// RAM, at this byte offset into the RAM mapping.
    Ram(u32),
    /// ROM `index`, at this byte offset into its image.
    Rom {
        index: usize,
        offset: u32,
    },
    /// A device's MMIO range, at this offset from the range's start.
    Mmio {
        device: DeviceId,
        offset: u32,
    },
    /// Monitor memory (a raw-mode engine's hypervisor area), at this
    /// offset; only while it is visible (`Memory::set_monitor_visible`).
    Monitor(u32),
    Unassigned,
}

/// The size of monitor memory: one 4 MiB window (docs/raw.md, "The
/// hypervisor area").
pub const MONITOR_SIZE: u32 = 4 << 20;

/// Memory a raw-mode monitor owns: not guest RAM, in a physical window
/// nothing else claims. Its last page is never monitor memory but a
/// *sink*: guest page tables that name a frame in the window are sent
/// there and reach unassigned space, so the guest cannot reach the
/// monitor's memory physically.
struct MonitorMemory {
    base: u32,
    /// The `MONITOR_SIZE` bytes (a boxed slice, freed in `drop`), held by
    /// a raw pointer as RAM is (`Memory::ram_ptr`): the TLB keeps pointers
    /// into it across the monitor's writes, and a pointer derived from a
    /// `Box`'s shared borrow dies at the next write through the box (Miri,
    /// Stacked Borrows: a TLB read after a `store_monitor_byte` was
    /// undefined behaviour). Every access derives from this pointer.
    data: *mut u8,
    visible: bool,
    /// Pages of monitor memory an engine decoded code from: a store there
    /// drops it; stores to the others (the monitor's data: the virtual
    /// IF, scratch, counters) log nothing.
    code_pages: [u64; (MONITOR_SIZE / PAGE_SIZE / 64) as usize],
}

impl MonitorMemory {
    fn new(base: u32) -> MonitorMemory {
        let bytes = vec![0u8; MONITOR_SIZE as usize].into_boxed_slice();
        MonitorMemory {
            base,
            data: Box::into_raw(bytes) as *mut u8,
            visible: false,
            code_pages: [0; (MONITOR_SIZE / PAGE_SIZE / 64) as usize],
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `data` is the start of MONITOR_SIZE bytes this value owns.
        unsafe { std::slice::from_raw_parts(self.data, MONITOR_SIZE as usize) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.data, MONITOR_SIZE as usize) }
    }
}

impl Drop for MonitorMemory {
    fn drop(&mut self) {
        let all = std::ptr::slice_from_raw_parts_mut(self.data, MONITOR_SIZE as usize);
        // SAFETY: made by `Box::into_raw` in `new` and freed only here.
        drop(unsafe { Box::from_raw(all) });
    }
}

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("guest RAM of {0} MiB is not supported (1 to 3072 MiB)")]
    BadRamSize(u32),
    #[error("could not map guest RAM: {0}")]
    Map(String),
    #[error("ROM image of {0} bytes is too large (at most 16 MiB)")]
    RomTooLarge(usize),
    #[error("ROM image is empty")]
    RomEmpty,
    #[error("physical range {start:#x}+{len:#x} is not RAM")]
    NotRam { start: u32, len: usize },
    #[error("no free 4 MiB physical window above RAM for monitor memory")]
    NoMonitorWindow,
}

struct Rom {
    base: u32,
    data: Box<[u8]>,
}

struct MmioRange {
    start: u32,
    end: u32, // exclusive, as u64 to allow the top of memory
    device: DeviceId,
}

pub struct Memory {
    ram: GuestMemoryMmap,
    ram_ptr: *mut u8,
    ram_size: u32,
    roms: Vec<Rom>,
    mmio: Vec<MmioRange>,
    a20_mask: u32,
    /// One bit per RAM page: decoded or translated code was made from it.
    code_pages: Vec<u64>,
    /// Log of code pages invalidated by writes, read by every engine that
    /// caches code through its own cursor (see [`Memory::code_writes_since`]).
    code_log: Vec<u32>,
    /// Sequence number of `code_log[0]`.
    code_log_base: u64,
    /// Raised with `work::CODE_WRITE` when a code page is written.
    pending: Arc<PendingWork>,
    monitor: Option<MonitorMemory>,
}

/// What an engine must drop since its cursor into the code-write log.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeWrites<'a> {
    /// Code made from these physical pages.
    Pages(&'a [u32]),
    /// Everything: the log was trimmed past the cursor.
    All,
}

/// Entries the code-write log keeps before it is trimmed.
const CODE_LOG_LIMIT: usize = 1 << 16;

// SAFETY: `ram_ptr` points into the mapping owned by `ram`, which moves with
// the `Memory`; the mapping is never shared with another `Memory`, so sending
// the whole value to another thread transfers exclusive ownership with it.
unsafe impl Send for Memory {}

impl Memory {
    /// Raise `pending` (the machine's pending-work word) when a code page
    /// is written.
    pub fn share_pending_work(&mut self, pending: Arc<PendingWork>) {
        self.pending = pending;
    }

    /// Map `mib` MiB of zeroed RAM at physical address 0.
    pub fn new(mib: u32) -> Result<Memory, MemoryError> {
        if mib == 0 || mib > 3072 {
            return Err(MemoryError::BadRamSize(mib));
        }
        let size = mib as usize * 1024 * 1024;
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)])
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        let ram_ptr = ram
            .get_host_address(GuestAddress(0))
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        let pages = size / PAGE_SIZE as usize;
        Ok(Memory {
            ram,
            ram_ptr,
            ram_size: size as u32,
            roms: Vec::new(),
            mmio: Vec::new(),
            a20_mask: u32::MAX,
            code_pages: vec![0; pages.div_ceil(64)],
            code_log: Vec::new(),
            code_log_base: 0,
            pending: Arc::default(),
            monitor: None,
        })
    }

    /// The RAM mapping (KVM registers it as a memory slot as is).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.ram
    }

    pub fn ram_size(&self) -> u32 {
        self.ram_size
    }

    /// Map a ROM image so that it ends at `end` (exclusive, 64-bit so the top
    /// of the 4 GiB space can be named). The image is padded at the front to
    /// whole pages with 0xFF, as an unprogrammed flash chip reads.
    pub fn map_rom(&mut self, image: &[u8], end: u64) -> Result<(), MemoryError> {
        if image.is_empty() {
            return Err(MemoryError::RomEmpty);
        }
        if image.len() > 16 << 20 {
            return Err(MemoryError::RomTooLarge(image.len()));
        }
        let padded = image.len().div_ceil(PAGE_SIZE as usize) * PAGE_SIZE as usize;
        let mut data = vec![0xFFu8; padded];
        data[padded - image.len()..].copy_from_slice(image);
        let base = (end - padded as u64) as u32;
        self.roms.push(Rom {
            base,
            data: data.into_boxed_slice(),
        });
        Ok(())
    }

    /// Claim `[start, start + len)` for a device's MMIO handlers.
    pub fn map_mmio(&mut self, start: u32, len: u32, device: DeviceId) {
        self.mmio.push(MmioRange {
            start,
            end: start.saturating_add(len),
            device,
        });
    }

    /// The A20 gate. When it is off, address bit 20 is forced to zero, as
    /// the 8086 wrap-around requires. Callers must flush the TLB.
    pub fn set_a20(&mut self, enabled: bool) {
        self.a20_mask = if enabled { u32::MAX } else { !(1 << 20) };
    }

    pub fn a20_enabled(&self) -> bool {
        self.a20_mask == u32::MAX
    }

    #[inline(always)]
    pub fn a20_mask(&self) -> u32 {
        self.a20_mask
    }

    /// Allocate monitor memory (once) in a free 4 MiB-aligned physical
    /// window above RAM; returns the window's base. Hidden until
    /// `set_monitor_visible(true)`.
    pub fn allocate_monitor(&mut self) -> Result<u32, MemoryError> {
        if let Some(m) = &self.monitor {
            return Ok(m.base);
        }
        let free = |base: u32| {
            base >= self.ram_size
                && (base..base + MONITOR_SIZE)
                    .step_by(PAGE_SIZE as usize)
                    .all(|a| matches!(self.classify(a), PhysKind::Unassigned))
        };
        let base = [0xF000_0000u32, 0xE000_0000, 0xD000_0000, 0xC000_0000]
            .into_iter()
            .find(|&b| free(b))
            .ok_or(MemoryError::NoMonitorWindow)?;
        self.monitor = Some(MonitorMemory::new(base));
        Ok(base)
    }

    /// Make monitor memory answer at its physical window (while a raw-mode
    /// engine runs) or not (the window reads as unassigned).
    pub fn set_monitor_visible(&mut self, on: bool) {
        if let Some(m) = &mut self.monitor {
            m.visible = on;
        }
    }

    /// Where a frame the guest's page tables name goes: into the sink page
    /// when it lies in the visible monitor window.
    #[inline]
    pub fn guest_frame(&self, phys: u32) -> u32 {
        match &self.monitor {
            Some(m) if m.visible && phys.wrapping_sub(m.base) < MONITOR_SIZE => {
                m.base + MONITOR_SIZE - PAGE_SIZE + (phys & (PAGE_SIZE - 1))
            }
            _ => phys,
        }
    }

    /// The physical base of the visible monitor window.
    #[inline]
    pub fn visible_monitor_base(&self) -> Option<u32> {
        self.monitor.as_ref().filter(|m| m.visible).map(|m| m.base)
    }

    /// Monitor memory, for the monitor to build its tables and code in
    /// (whether visible or not); `Machine::write_monitor` also drops code
    /// decoded from the pages it writes.
    pub fn monitor_mut(&mut self) -> Option<&mut [u8]> {
        self.monitor.as_mut().map(|m| m.bytes_mut())
    }

    /// Monitor memory, for reading.
    pub fn monitor(&self) -> Option<&[u8]> {
        self.monitor.as_ref().map(|m| m.bytes())
    }

    /// The monitor wrote `len` bytes at `offset` of its memory: log those
    /// pages as written code, so engines drop what they decoded there.
    pub fn note_monitor_written(&mut self, offset: u32, len: u32) {
        if len == 0 {
            return;
        }
        // Only pages an engine decoded code from (the monitor's data — the
        // virtual IF, its tables — is written at every entry).
        for page in offset >> PAGE_SHIFT..=(offset + len - 1) >> PAGE_SHIFT {
            self.monitor_page_written(page);
        }
    }

    /// Monitor page `page` (counted from the window's start) was written:
    /// if an engine decoded code from it, log it as written code.
    fn monitor_page_written(&mut self, page: u32) {
        let Some(m) = &mut self.monitor else {
            return;
        };
        let (w, b) = ((page / 64) as usize, page % 64);
        if m.code_pages[w] & (1 << b) != 0 {
            m.code_pages[w] &= !(1 << b);
            let base = m.base;
            self.log_code_write((base >> PAGE_SHIFT) + page);
        }
    }

    /// What answers at `addr` (A20 already applied by the caller).
    pub fn classify(&self, addr: u32) -> PhysKind {
        if let Some(m) = &self.monitor {
            let off = addr.wrapping_sub(m.base);
            if m.visible && off < MONITOR_SIZE - PAGE_SIZE {
                return PhysKind::Monitor(off);
            }
        }
        for m in &self.mmio {
            if addr >= m.start && addr < m.end {
                return PhysKind::Mmio {
                    device: m.device,
                    offset: addr - m.start,
                };
            }
        }
        for (index, r) in self.roms.iter().enumerate() {
            let off = addr.wrapping_sub(r.base);
            if (off as usize) < r.data.len() {
                return PhysKind::Rom { index, offset: off };
            }
        }
        if addr < self.ram_size {
            PhysKind::Ram(addr)
        } else {
            PhysKind::Unassigned
        }
    }

    /// Host pointer to the start of a RAM, ROM or monitor page for the TLB,
    /// and whether stores may use it (RAM only); None when the page is
    /// MMIO, unassigned, or not uniformly one kind.
    pub fn page_host_ptr(&self, page_addr: u32) -> Option<(*mut u8, bool)> {
        let last = page_addr | (PAGE_SIZE - 1);
        match (self.classify(page_addr), self.classify(last)) {
            (PhysKind::Ram(off), PhysKind::Ram(_)) => {
                // SAFETY: off + PAGE_SIZE <= ram_size, inside the mapping.
                Some((unsafe { self.ram_ptr.add(off as usize) }, true))
            }
            (PhysKind::Monitor(off), PhysKind::Monitor(_)) => {
                let m = self.monitor.as_ref()?;
                // SAFETY: off + PAGE_SIZE <= MONITOR_SIZE, inside the
                // allocation, which lives as long as self. Not for stores
                // in the TLB (false): they take the slow path, which drops
                // code decoded from the page (`store_monitor_byte`).
                Some((unsafe { m.data.add(off as usize) }, false))
            }
            (PhysKind::Rom { index, offset }, PhysKind::Rom { index: i2, .. }) if index == i2 => {
                let ptr = self.roms[index].data.as_ptr() as *mut u8;
                // SAFETY: offset is page-aligned inside a page-padded image;
                // the pointer is only ever read through (ROM is never
                // installed for writes in the TLB).
                Some((unsafe { ptr.add(offset as usize) }, false))
            }
            _ => None,
        }
    }

    /// Read a byte of RAM or ROM (None: MMIO or unassigned).
    pub fn read_plain(&self, addr: u32) -> Option<u8> {
        match self.classify(addr) {
            PhysKind::Ram(off) => Some(self.ram_slice()[off as usize]),
            PhysKind::Rom { index, offset } => Some(self.roms[index].data[offset as usize]),
            PhysKind::Monitor(off) => self.monitor.as_ref().map(|m| m.bytes()[off as usize]),
            _ => None,
        }
    }

    /// Write one byte of visible monitor memory by offset (the slow path
    /// of a store through the hypervisor area); code decoded there is
    /// dropped.
    pub fn store_monitor_byte(&mut self, off: u32, v: u8) {
        let Some(m) = &mut self.monitor else {
            return;
        };
        m.bytes_mut()[off as usize] = v;
        self.monitor_page_written(off >> PAGE_SHIFT);
    }

    /// All of RAM as a byte slice.
    pub fn ram_slice(&self) -> &[u8] {
        // SAFETY: the mapping is ram_size bytes long and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ram_ptr, self.ram_size as usize) }
    }

    fn ram_slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ram_ptr, self.ram_size as usize) }
    }

    /// Copy bytes into RAM (loaders, DMA, the debugger). Code made from the
    /// pages written is invalidated first.
    pub fn write_ram(&mut self, addr: u32, bytes: &[u8]) -> Result<(), MemoryError> {
        let end = addr as u64 + bytes.len() as u64;
        if end > self.ram_size as u64 {
            return Err(MemoryError::NotRam {
                start: addr,
                len: bytes.len(),
            });
        }
        if !bytes.is_empty() {
            for page in (addr >> PAGE_SHIFT)..=((end - 1) as u32 >> PAGE_SHIFT) {
                self.note_write(page);
            }
        }
        self.ram_slice_mut()[addr as usize..end as usize].copy_from_slice(bytes);
        Ok(())
    }

    /// RAM pages in `pages` were written by something that does not store
    /// through `Memory` (KVM's vCPU): log the code pages among them, as
    /// `write_ram` does for the pages it writes.
    pub fn note_pages_written(&mut self, pages: PhysRange) {
        let ram_pages = self.ram_size >> PAGE_SHIFT;
        let end = pages.first_page.saturating_add(pages.pages).min(ram_pages);
        for page in pages.first_page..end {
            self.note_write(page);
        }
    }

    /// Read bytes from RAM.
    pub fn read_ram(&self, addr: u32, out: &mut [u8]) -> Result<(), MemoryError> {
        let end = addr as u64 + out.len() as u64;
        if end > self.ram_size as u64 {
            return Err(MemoryError::NotRam {
                start: addr,
                len: out.len(),
            });
        }
        out.copy_from_slice(&self.ram_slice()[addr as usize..end as usize]);
        Ok(())
    }

    /// Write one byte of RAM by offset, honouring code pages (the slow path
    /// of a guest store).
    #[inline]
    pub fn store_ram_byte(&mut self, off: u32, v: u8) {
        self.note_write(off >> PAGE_SHIFT);
        self.ram_slice_mut()[off as usize] = v;
    }

    /// Mark a RAM page as holding code that an engine cached. Returns false
    /// if it already was.
    pub fn mark_code_page(&mut self, page: u32) -> bool {
        if let Some(m) = &mut self.monitor {
            let rel = page.wrapping_sub(m.base >> PAGE_SHIFT);
            if rel < MONITOR_SIZE / PAGE_SIZE {
                let (w, b) = ((rel / 64) as usize, rel % 64);
                let fresh = m.code_pages[w] & (1 << b) == 0;
                m.code_pages[w] |= 1 << b;
                return fresh;
            }
        }
        let (w, b) = ((page / 64) as usize, page % 64);
        match self.code_pages.get_mut(w) {
            Some(word) if *word & (1 << b) == 0 => {
                *word |= 1 << b;
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    pub fn is_code_page(&self, page: u32) -> bool {
        let (w, b) = ((page / 64) as usize, page % 64);
        self.code_pages
            .get(w)
            .is_some_and(|word| word & (1 << b) != 0)
    }

    #[inline(always)]
    fn note_write(&mut self, page: u32) {
        if self.is_code_page(page) {
            let (w, b) = ((page / 64) as usize, page % 64);
            self.code_pages[w] &= !(1 << b);
            self.log_code_write(page);
        }
    }

    /// Make engines drop what they decoded from physical page `page`, as
    /// if it were written (a raw-mode monitor installing or removing a
    /// patch there changes what the substrate's fetches see).
    pub fn invalidate_code(&mut self, page: u32) {
        self.log_code_write(page);
    }

    /// Log `page` as written code and raise the pending-work bit.
    fn log_code_write(&mut self, page: u32) {
        if self.code_log.len() >= CODE_LOG_LIMIT {
            self.code_log_base += self.code_log.len() as u64;
            self.code_log.clear();
        }
        self.code_log.push(page);
        self.pending.raise(work::CODE_WRITE);
    }

    /// The sequence number the next code-page invalidation will get. An
    /// engine whose cursor equals it has nothing to drop.
    #[inline(always)]
    pub fn code_write_seq(&self) -> u64 {
        self.code_log_base + self.code_log.len() as u64
    }

    /// The invalidations an engine with cursor `seq` has not seen yet. Each
    /// engine keeps its own cursor, so engines that take turns on a machine
    /// all see every write.
    pub fn code_writes_since(&self, seq: u64) -> CodeWrites<'_> {
        if seq < self.code_log_base {
            CodeWrites::All
        } else {
            let start = ((seq - self.code_log_base) as usize).min(self.code_log.len());
            CodeWrites::Pages(&self.code_log[start..])
        }
    }

    /// Every ROM mapping: its base address and its page-padded image, in
    /// the order they were mapped (snapshots record their checksums).
    pub fn roms(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.roms.iter().map(|r| (r.base, &r.data[..]))
    }

    /// The bytes of ROM `index` (the debugger and snapshots read them).
    pub fn rom_bytes(&self, index: usize, offset: u32) -> Option<u8> {
        self.roms.get(index)?.data.get(offset as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_mapped_at_the_top_is_found_by_address() {
        let mut m = Memory::new(1).unwrap();
        m.map_rom(&[0xEA, 1, 2], 1 << 32).unwrap();
        assert_eq!(
            m.classify(0xFFFF_FFFD),
            PhysKind::Rom {
                index: 0,
                offset: 0xFFD
            }
        );
        assert_eq!(m.read_plain(0xFFFF_FFFD), Some(0xEA));
        assert_eq!(m.read_plain(0xFFFF_F000), Some(0xFF));
    }

    #[test]
    fn writing_a_code_page_records_an_invalidation() {
        let mut m = Memory::new(1).unwrap();
        assert!(m.mark_code_page(3));
        let cursor = m.code_write_seq();
        m.write_ram(0x3010, &[1]).unwrap();
        assert_eq!(m.code_writes_since(cursor), CodeWrites::Pages(&[3]));
        assert!(!m.is_code_page(3));
        assert_eq!(
            m.code_writes_since(m.code_write_seq()),
            CodeWrites::Pages(&[])
        );
    }

    #[test]
    fn addresses_past_ram_are_unassigned() {
        let m = Memory::new(1).unwrap();
        assert_eq!(m.classify(2 << 20), PhysKind::Unassigned);
    }
}
