//! Ways into a machine (DESIGN.md section 7): a raw ROM image at the reset
//! vector, and a Multiboot v1 kernel loaded directly, like `qemu -kernel`.

use std::sync::Arc;

use goblin::elf::{program_header::PT_LOAD, Elf};
use thiserror::Error;

use crate::bus::StateError;

use crate::cpu::flags::FIXED1;
use crate::cpu::segments::Descriptor;
use crate::cpu::{cr0, reg, CpuState, SegReg, TableReg};
use crate::machine::Machine;
use crate::memory::MemoryError;
use crate::reset::{MultibootImage, Restart};

#[derive(Debug, Error)]
pub enum BootError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A device refused its own power-on state during a reset.
    #[error("reset: {0}")]
    DeviceReset(#[from] StateError),
    #[error("not an ELF file: {0}")]
    NotElf(String),
    #[error("ELF kernel is not a 32-bit i386 executable")]
    WrongArch,
    #[error("no Multiboot header in the first 8 KiB of the kernel")]
    NoMultibootHeader,
    #[error(
        "the Multiboot header at file offset {0:#x} has a wrong checksum (magic + flags + checksum must be 0 modulo 2^32)"
    )]
    BadMultibootChecksum(usize),
    #[error("not an ELF file, and its Multiboot header does not set flag bit 16 (the a.out kludge: load addresses in the header)")]
    NoLoadAddresses,
    #[error("the Multiboot header's load addresses (a.out kludge, flag bit 16) are invalid: {0}")]
    BadLoadAddresses(String),
    #[error("Multiboot header requests unsupported features (flags {0:#x})")]
    UnsupportedFlags(u32),
    #[error("kernel segment {paddr:#x}+{len:#x} does not fit in guest RAM of {ram:#x} bytes")]
    SegmentOutsideRam { paddr: u64, len: u64, ram: u32 },
    #[error(
        "kernel segment {paddr:#x}-{end:#x} overlaps {what} ({start:#x}-{limit:#x}), which the loader writes and the memory map reserves; load the kernel at or above 1 MiB"
    )]
    OverLoaderData {
        paddr: u64,
        end: u64,
        what: &'static str,
        start: u64,
        limit: u64,
    },
    #[error("kernel segment at file offset {0:#x} extends past the end of the file")]
    Truncated(u64),
    #[error("{0} Multiboot modules given; at most 16 are supported")]
    TooManyModules(usize),
    #[error(
        "a module of {len:#x} bytes does not fit in guest RAM of {ram:#x} bytes after the kernel"
    )]
    ModuleOutsideRam { len: usize, ram: u32 },
    #[error("the command line and module strings are too long for the boot information")]
    BootInfoTooLarge,
    #[error(
        "the boot information ({len:#x} bytes) fits neither at {low:#x}, where the kernel is, nor after the kernel and modules (at {after:#x}) in guest RAM of {ram:#x} bytes"
    )]
    NoRoomForBootInfo {
        len: u32,
        low: u32,
        after: u64,
        ram: u32,
    },
}

/// Map a raw ROM image at the top of the first MiB and at the top of the
/// 4 GiB space, and leave the CPU at the reset vector. Images over 128 KiB
/// appear in full only at the top of 4 GiB; the low copy shows their last
/// 128 KiB, like a PC's BIOS window. A reset starts the CPU at the reset
/// vector again (`reset::Restart::ResetVector`).
pub fn load_rom(m: &mut Machine, image: &[u8]) -> Result<(), BootError> {
    m.map_rom(image, 1 << 32)?;
    let low = &image[image.len().saturating_sub(128 * 1024)..];
    m.map_rom(low, 1 << 20)?;
    m.reset_cpu();
    m.restart = Restart::ResetVector;
    Ok(())
}

/// The Multiboot v1 header (Multiboot Specification 0.6.96, section 3.1.1).
const MB_MAGIC: u32 = 0x1BAD_B002;
const MB_BOOT_MAGIC: u32 = 0x2BAD_B002;
const MB_FLAG_PAGE_ALIGN: u32 = 1 << 0;
const MB_FLAG_MEMORY_INFO: u32 = 1 << 1;
const MB_FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Where the loader puts its GDT, and its boot information block (the
/// Multiboot information, memory map, module list and strings) when the
/// kernel leaves that space free; otherwise the block, and the GDT with it
/// if need be, go after the kernel and its modules (as QEMU places them).
const GDT_ADDR: u32 = 0x0800;
const GDT_SIZE: u32 = 24;
const BOOT_BLOCK: u32 = 0x9000;

/// The ranges the loader writes that cannot move (`write_boot_info`,
/// `write_mp_tables`, the ACPI tables): a kernel over them is refused.
const FIXED_LOADER_DATA: [(&str, u64, u64); 2] = [
    ("the BIOS data area", 0x400, 0x500),
    (
        "the EBDA and the BIOS area with the ACPI and MP tables",
        0x9_FC00,
        0x10_0000,
    ),
];

/// The boot information block's layout, from its base.
mod block {
    pub const INFO: u32 = 0;
    pub const MMAP: u32 = 0x100;
    pub const MODS: u32 = 0x200;
    pub const STRINGS: u32 = 0x400;
    /// Where the GDT goes when it moves into the block.
    pub const GDT: u32 = 0x600;
    pub const SIZE: u32 = 0x618;
}

/// True when `image` is an ELF file with a Multiboot v1 header.
pub fn is_multiboot_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF") && find_multiboot_header(image).is_some()
}

/// True when `image` is a kernel `load_multiboot` can load: an ELF file
/// with a Multiboot v1 header, or any file (a flat binary) whose header
/// gives its load addresses itself (the a.out kludge, flag bit 16), as
/// QEMU's `-kernel` takes it. Only the first 8 KiB are looked at.
pub fn is_multiboot_kernel(image: &[u8]) -> bool {
    match find_multiboot_header(image) {
        Some((_, flags)) => image.starts_with(b"\x7fELF") || flags & MB_FLAG_AOUT_KLUDGE != 0,
        None => false,
    }
}

/// The file offset of a Multiboot magic whose checksum is wrong, when the
/// image has no valid header: what a user who got the checksum wrong
/// needs to hear instead of "no header".
pub fn bad_multiboot_checksum(image: &[u8]) -> Option<usize> {
    if find_multiboot_header(image).is_some() {
        return None;
    }
    header_words(image).find_map(|(off, magic, _, _)| (magic == MB_MAGIC).then_some(off))
}

/// Every 32-bit aligned (magic, flags, checksum) candidate in the first
/// 8 KiB (Multiboot 0.6.96 section 3.1.1), with its offset.
fn header_words(image: &[u8]) -> impl Iterator<Item = (usize, u32, u32, u32)> + '_ {
    let end = image.len().min(8192);
    (0..end.saturating_sub(11)).step_by(4).map(move |off| {
        let word = |i: usize| u32::from_le_bytes(image[off + i..off + i + 4].try_into().unwrap());
        (off, word(0), word(4), word(8))
    })
}

/// The offset and flags of the first valid Multiboot header.
fn find_multiboot_header(image: &[u8]) -> Option<(usize, u32)> {
    header_words(image).find_map(|(off, magic, flags, sum)| {
        (magic == MB_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0)
            .then_some((off, flags))
    })
}

/// Load a Multiboot v1 ELF kernel and leave the CPU at its entry point in the
/// state the Multiboot specification (section 3.2) defines: protected mode,
/// flat 4 GiB segments, paging and interrupts off, EAX = 0x2BADB002,
/// EBX = the boot information.
pub fn load_multiboot(m: &mut Machine, image: &[u8], cmdline: &str) -> Result<(), BootError> {
    load_multiboot_with_modules(m, image, cmdline, &[])
}

/// A Multiboot module (an initial RAM disk, say) and its string.
pub struct Module<'a> {
    pub data: &'a [u8],
    pub string: &'a str,
}

const MAX_MODULES: usize = 16;

/// Load a Multiboot v1 kernel with modules: each module is placed on a
/// page boundary after the kernel (Multiboot 0.6.96 section 3.3, flag bit 3).
/// The machine keeps what it was given, so that a reset loads it again
/// (`reset::Restart::Multiboot`).
pub fn load_multiboot_with_modules(
    m: &mut Machine,
    image: &[u8],
    cmdline: &str,
    modules: &[Module],
) -> Result<(), BootError> {
    load_multiboot_image(m, image, cmdline, modules)?;
    m.restart = Restart::Multiboot(Arc::new(MultibootImage {
        image: image.to_vec(),
        cmdline: cmdline.to_owned(),
        modules: modules
            .iter()
            .map(|module| (module.data.to_vec(), module.string.to_owned()))
            .collect(),
    }));
    Ok(())
}

/// The loader itself: kernel, modules, boot information, CPU at the entry.
pub(crate) fn load_multiboot_image(
    m: &mut Machine,
    image: &[u8],
    cmdline: &str,
    modules: &[Module],
) -> Result<(), BootError> {
    if modules.len() > MAX_MODULES {
        return Err(BootError::TooManyModules(modules.len()));
    }
    let Some((header, flags)) = find_multiboot_header(image) else {
        return Err(match bad_multiboot_checksum(image) {
            Some(off) => BootError::BadMultibootChecksum(off),
            None => BootError::NoMultibootHeader,
        });
    };
    let known = MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO | MB_FLAG_AOUT_KLUDGE;
    if flags & 0xFFFF & !known != 0 {
        // Bits 0-15 are requirements: a loader that cannot meet one must refuse.
        return Err(BootError::UnsupportedFlags(flags));
    }
    let ram = m.mem.ram_size();
    // Bit 16: the header's addresses, not the ELF headers, say where the
    // image goes (section 3.1.3; QEMU and GRUB do the same).
    let (loaded, entry) = if flags & MB_FLAG_AOUT_KLUDGE != 0 {
        load_with_header_addresses(m, image, header)?
    } else if image.starts_with(b"\x7fELF") {
        load_elf_segments(m, image)?
    } else {
        return Err(BootError::NoLoadAddresses);
    };
    let kernel_end = loaded.iter().map(|&(_, end)| end).max().unwrap_or(0);
    // What the loader writes at fixed places (as firmware leaves it under
    // `qemu -kernel`) must not land in the kernel: the BIOS data area
    // fields, and the EBDA, ACPI and MP tables' range.
    for &(paddr, end) in &loaded {
        for (what, start, limit) in FIXED_LOADER_DATA {
            if paddr < limit && end > start {
                return Err(BootError::OverLoaderData {
                    paddr,
                    end,
                    what,
                    start,
                    limit,
                });
            }
        }
    }
    let mut placed = Vec::with_capacity(modules.len());
    let mut next = kernel_end.max(0x10_0000).div_ceil(4096) * 4096;
    for module in modules {
        let end = next + module.data.len() as u64;
        if end > ram as u64 {
            return Err(BootError::ModuleOutsideRam {
                len: module.data.len(),
                ram,
            });
        }
        m.mem.write_ram(next as u32, module.data)?;
        placed.push((next as u32, end as u32, module.string));
        next = end.div_ceil(4096) * 4096;
    }
    // The loader's own data goes where the kernel is not.
    let collides = |start: u32, len: u32| {
        loaded
            .iter()
            .any(|&(a, b)| a < (start + len) as u64 && b > start as u64)
    };
    let after = next;
    let base = if !collides(BOOT_BLOCK, block::SIZE) {
        BOOT_BLOCK
    } else if after + block::SIZE as u64 <= ram as u64 {
        after as u32
    } else {
        return Err(BootError::NoRoomForBootInfo {
            len: block::SIZE,
            low: BOOT_BLOCK,
            after,
            ram,
        });
    };
    let gdt = if !collides(GDT_ADDR, GDT_SIZE) {
        GDT_ADDR
    } else {
        base + block::GDT
    };
    write_boot_info(m, base, cmdline, &placed)?;
    if m.bus.has_lapic() {
        write_mp_tables(m)?;
    }
    if let Some(t) = m.acpi_tables.clone() {
        m.mem.write_ram(t.at, &t.bytes)?;
    }
    enter_flat_protected_mode_with_gdt(m, entry, gdt);
    m.cpu.gpr[reg::EAX] = MB_BOOT_MAGIC;
    m.cpu.gpr[reg::EBX] = base + block::INFO;
    Ok(())
}

/// The physical ranges a kernel occupies once loaded, and its entry point.
type Loaded = (Vec<(u64, u64)>, u32);

/// Check that the range `paddr`+`len` lies in guest RAM.
fn check_in_ram(paddr: u64, len: u64, ram: u32) -> Result<u64, BootError> {
    let end = paddr.saturating_add(len);
    if end > ram as u64 {
        return Err(BootError::SegmentOutsideRam { paddr, len, ram });
    }
    Ok(end)
}

/// Zero `len` bytes of RAM from `at` (a kernel's bss, which may be as
/// large as RAM: written a block at a time, not from one buffer).
fn zero_ram(m: &mut Machine, at: u64, len: u64) -> Result<(), BootError> {
    const BLOCK: u64 = 64 * 1024;
    let zeros = [0u8; BLOCK as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(BLOCK);
        m.mem.write_ram((at + done) as u32, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// An ELF kernel's PT_LOAD segments, at their physical addresses.
fn load_elf_segments(m: &mut Machine, image: &[u8]) -> Result<Loaded, BootError> {
    let elf = Elf::parse(image).map_err(|e| BootError::NotElf(e.to_string()))?;
    if elf.is_64 || elf.header.e_machine != goblin::elf::header::EM_386 {
        return Err(BootError::WrongArch);
    }
    let ram = m.mem.ram_size();
    let mut loaded: Vec<(u64, u64)> = Vec::new();
    for ph in elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD) {
        let (paddr, filesz, memsz) = (ph.p_paddr, ph.p_filesz, ph.p_memsz);
        let end = check_in_ram(paddr, memsz.max(filesz), ram)?;
        let file_end = ph
            .p_offset
            .checked_add(filesz)
            .ok_or(BootError::Truncated(ph.p_offset))?;
        let bytes = image
            .get(ph.p_offset as usize..file_end as usize)
            .ok_or(BootError::Truncated(ph.p_offset))?;
        m.mem.write_ram(paddr as u32, bytes)?;
        if memsz > filesz {
            zero_ram(m, paddr + filesz, memsz - filesz)?;
        }
        loaded.push((paddr, end));
    }
    Ok((loaded, elf.entry as u32))
}

/// A kernel placed by its Multiboot header's address fields (the "a.out
/// kludge", flag bit 16; Multiboot 0.6.96 section 3.1.3): the file from
/// the offset that puts the header at `header_addr` is loaded at
/// `load_addr`, up to `load_end_addr` (0: to the end of the file), then
/// zeroed up to `bss_end_addr` (0: no bss); the entry is `entry_addr`.
/// Every field comes from an untrusted file and is checked.
fn load_with_header_addresses(
    m: &mut Machine,
    image: &[u8],
    header: usize,
) -> Result<Loaded, BootError> {
    let bad = |why: String| BootError::BadLoadAddresses(why);
    let field = |i: usize| {
        image
            .get(header + i..header + i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| bad("the header ends before its address fields".into()))
    };
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(12)?, field(16)?, field(20)?, field(24)?, field(28)?);
    let before_header = header_addr.checked_sub(load_addr).ok_or_else(|| {
        bad(format!(
            "load_addr {load_addr:#x} is above header_addr {header_addr:#x}"
        ))
    })?;
    let start = (header as u64)
        .checked_sub(before_header as u64)
        .ok_or_else(|| {
            bad(format!(
                "load_addr {load_addr:#x} would start {before_header:#x} bytes before the header, before the start of the file"
            ))
        })? as usize;
    let len = if load_end == 0 {
        image.len() - start
    } else {
        load_end.checked_sub(load_addr).ok_or_else(|| {
            bad(format!(
                "load_end_addr {load_end:#x} is below load_addr {load_addr:#x}"
            ))
        })? as usize
    };
    let bytes = image.get(start..start + len).ok_or_else(|| {
        bad(format!(
            "load_end_addr {load_end:#x} lies past the end of the file ({} bytes from load_addr)",
            image.len() - start
        ))
    })?;
    let loaded_end = load_addr as u64 + len as u64;
    let end = if bss_end == 0 {
        loaded_end
    } else if (bss_end as u64) < loaded_end {
        return Err(bad(format!(
            "bss_end_addr {bss_end:#x} is below the end of the loaded image {loaded_end:#x}"
        )));
    } else {
        bss_end as u64
    };
    let ram = m.mem.ram_size();
    check_in_ram(load_addr as u64, end - load_addr as u64, ram)?;
    m.mem.write_ram(load_addr, bytes)?;
    zero_ram(m, loaded_end, end - loaded_end)?;
    Ok((vec![(load_addr as u64, end)], entry))
}

/// The Multiboot information structure (section 3.3): memory sizes, the
/// command line, the boot loader's name and a BIOS-style memory map.
fn write_boot_info(
    m: &mut Machine,
    base: u32,
    cmdline: &str,
    modules: &[(u32, u32, &str)],
) -> Result<(), BootError> {
    let ram = m.mem.ram_size();
    let mut info = [0u32; 22];
    // flags: mem_* (0), cmdline (2), mmap (6), boot_loader_name (9).
    info[0] = (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9);
    info[1] = 639;
    info[2] = (ram.saturating_sub(1 << 20)) / 1024;
    let mut strings = Vec::new();
    let strings_at = base + block::STRINGS;
    let mods_at = base + block::MODS;
    let mmap_at = base + block::MMAP;
    info[4] = strings_at;
    // The whole command line: what does not fit is an error below, never cut.
    strings.extend_from_slice(cmdline.as_bytes());
    strings.push(0);
    info[16] = strings_at + strings.len() as u32;
    strings.extend_from_slice(b"ringside\0");
    // Modules (flag bit 3): start, end, string, reserved.
    let mut mods = Vec::new();
    for &(start, end, string) in modules {
        let at = strings_at + strings.len() as u32;
        strings.extend_from_slice(string.as_bytes());
        strings.push(0);
        for w in [start, end, at, 0] {
            mods.extend_from_slice(&w.to_le_bytes());
        }
    }
    if block::STRINGS as usize + strings.len() > block::GDT as usize {
        return Err(BootError::BootInfoTooLarge);
    }
    if !modules.is_empty() {
        info[0] |= 1 << 3;
        info[5] = modules.len() as u32;
        info[6] = mods_at;
        m.mem.write_ram(mods_at, &mods)?;
    }
    // Memory map entries: size, base (64), length (64), type.
    let mut regions: Vec<(u64, u64, u32)> = vec![(0, 0x9_FC00, 1), (0x9_FC00, 0x400, 2)];
    // The ACPI tables (at 0xE0000 on a PC), then the MP tables' 64 KiB.
    if let Some(t) = &m.acpi_tables {
        regions.push((t.at as u64, t.reserve as u64, 2));
    }
    regions.push((0xF_0000, 0x1_0000, 2));
    regions.push((0x10_0000, ram as u64 - 0x10_0000, 1));
    let mut mmap = Vec::new();
    for (base, len, ty) in regions.iter().filter(|r| r.1 > 0) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&base.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&ty.to_le_bytes());
    }
    info[11] = mmap.len() as u32;
    info[12] = mmap_at;
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    m.mem.write_ram(base + block::INFO, &bytes)?;
    // The BIOS data area fields an OS reads without calling the BIOS (as
    // firmware leaves them under `qemu -kernel`): COM1's base, the EBDA
    // segment and the base memory size in KiB.
    m.mem.write_ram(0x400, &0x3F8u16.to_le_bytes())?;
    m.mem.write_ram(0x40E, &0x9FC0u16.to_le_bytes())?;
    m.mem.write_ram(0x413, &639u16.to_le_bytes())?;
    m.mem.write_ram(mmap_at, &mmap)?;
    m.mem.write_ram(strings_at, &strings)?;
    Ok(())
}

/// Where the MP tables go for a kernel booted without the BIOS: the
/// 0xF0000-0xFFFFF range an OS scans (MP spec 1.4 section 4), reserved in
/// the memory map above.
const MP_FLOATING_POINTER: u32 = 0xF_0000;
const MP_CONFIG_TABLE: u32 = 0xF_0010;

/// Write an Intel MP 1.4 floating pointer and configuration table
/// describing this PC — one CPU with its local APIC, the ISA bus, the
/// IOAPIC with ISA IRQ 0 on pin 2 — as ringside's BIOS does, so a kernel
/// loaded directly finds the APICs by the spec's scan, like under
/// `qemu -kernel`.
pub fn write_mp_tables(m: &mut Machine) -> Result<(), BootError> {
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    // Processor: LAPIC ID 0, version 0x14, enabled + bootstrap, signature, features.
    entries.extend_from_slice(&[0, 0, 0x14, 0x03]);
    let cpuid = m.cpuid(1, 0);
    entries.extend_from_slice(&cpuid.eax.to_le_bytes());
    entries.extend_from_slice(&cpuid.edx.to_le_bytes());
    entries.extend_from_slice(&[0; 8]);
    count += 1;
    // Bus 0: ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // IOAPIC ID 1, version 0x11, enabled, at 0xFEC00000.
    entries.extend_from_slice(&[2, 1, 0x11, 1]);
    entries.extend_from_slice(&0xFEC0_0000u32.to_le_bytes());
    count += 1;
    // I/O interrupts: the 8259A's INTR on pin 0 (ExtINT), then the ISA IRQs
    // (IRQ 0 on pin 2; IRQ 2 is the cascade and has no entry).
    let mut io = vec![(3u8, 0u8, 0u8)];
    io.extend(
        (0..16u8)
            .filter(|&irq| irq != 2)
            .map(|irq| (0, irq, if irq == 0 { 2 } else { irq })),
    );
    for (ty, irq, pin) in io {
        entries.extend_from_slice(&[3, ty, 0, 0, 0, irq, 1, pin]);
        count += 1;
    }
    // Local interrupts: LINT0 ExtINT, LINT1 NMI, to every local APIC.
    for (ty, lint) in [(3u8, 0u8), (1, 1)] {
        entries.extend_from_slice(&[4, ty, 0, 0, 0, 0, 0xFF, lint]);
        count += 1;
    }
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]);
    table.extend_from_slice(b"RINGSIDE");
    table.extend_from_slice(b"RINGSIDE PC ");
    table.extend_from_slice(&[0; 6]);
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
    table.extend_from_slice(&[0; 4]);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&MP_CONFIG_TABLE.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);
    m.mem.write_ram(MP_FLOATING_POINTER, &fp)?;
    m.mem.write_ram(MP_CONFIG_TABLE, &table)?;
    Ok(())
}

/// The byte that makes a table sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// Put the CPU in 32-bit protected mode with flat segments from a GDT the
/// loader writes at 0x800 (selectors 0x08 code, 0x10 data).
pub fn enter_flat_protected_mode(m: &mut Machine, entry: u32) {
    enter_flat_protected_mode_with_gdt(m, entry, GDT_ADDR);
}

/// [`enter_flat_protected_mode`] with the GDT at `gdt_addr`, which lies in
/// RAM (the Multiboot loader moves it away from a kernel that sits at 0x800).
fn enter_flat_protected_mode_with_gdt(m: &mut Machine, entry: u32, gdt_addr: u32) {
    let gdt: [u64; 3] = [0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    m.mem
        .write_ram(gdt_addr, &bytes)
        .expect("the loader's GDT lies in RAM: at 0x800, or in a boot block checked to fit");
    let mut cpu = CpuState::at_reset();
    cpu.cr0 = cr0::PE | cr0::ET;
    cpu.gdtr = TableReg {
        base: gdt_addr,
        limit: GDT_SIZE as u16 - 1,
        _pad: 0,
    };
    cpu.idtr = TableReg {
        base: 0,
        limit: 0x3FF,
        _pad: 0,
    };
    for s in SegReg::ALL {
        let d = if s == SegReg::Cs {
            Descriptor(gdt[1])
        } else {
            Descriptor(gdt[2])
        };
        cpu.seg[s as usize] = d.to_segment(if s == SegReg::Cs { 0x08 } else { 0x10 });
    }
    cpu.eip = entry;
    cpu.eflags = FIXED1;
    cpu.gpr = [0; 8];
    m.cpu = cpu;
    m.set_a20(true);
    m.tlb.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal Multiboot header followed by `tail`, behind an ELF magic.
    fn image_with_header(tail: &[u8]) -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend_from_slice(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&MB_MAGIC.to_le_bytes());
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&(0u32.wrapping_sub(MB_MAGIC).wrapping_sub(3)).to_le_bytes());
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn mp_tables_have_valid_checksums_and_the_ioapic() {
        let mut m = Machine::with_ram_mib(2).unwrap();
        write_mp_tables(&mut m).unwrap();
        let mut fp = [0u8; 16];
        m.mem.read_ram(MP_FLOATING_POINTER, &mut fp).unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        let mut head = [0u8; 44];
        m.mem.read_ram(MP_CONFIG_TABLE, &mut head).unwrap();
        assert_eq!(&head[..4], b"PCMP");
        let len = u16::from_le_bytes([head[4], head[5]]) as usize;
        let mut table = vec![0u8; len];
        m.mem.read_ram(MP_CONFIG_TABLE, &mut table).unwrap();
        assert_eq!(table.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert!(table
            .windows(8)
            .any(|w| w[0] == 2 && w[4..8] == 0xFEC0_0000u32.to_le_bytes()));
    }

    /// A flat (non-ELF) kernel: 0x20 bytes of code stand-in, then a
    /// Multiboot header with the a.out kludge's address fields, then
    /// `code`; `fields` are header_addr, load_addr, load_end_addr,
    /// bss_end_addr, entry_addr.
    fn flat_kernel(fields: [u32; 5], code: &[u8]) -> Vec<u8> {
        let flags = MB_FLAG_AOUT_KLUDGE | MB_FLAG_MEMORY_INFO;
        let mut v = vec![0x90u8; 0x20];
        for w in [
            MB_MAGIC,
            flags,
            0u32.wrapping_sub(MB_MAGIC).wrapping_sub(flags),
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for w in fields {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(code);
        v
    }

    #[test]
    fn a_flat_kernel_is_loaded_where_its_header_says_and_its_bss_zeroed() {
        let code = [0xF4u8; 12];
        // Header (file offset 0x20) at 0x100020: the file loads at 0x100000.
        let image = flat_kernel([0x10_0020, 0x10_0000, 0, 0x10_2000, 0x10_0040], &code);
        assert!(is_multiboot_kernel(&image) && !is_multiboot_elf(&image));
        let mut m = Machine::with_ram_mib(4).unwrap();
        m.mem.write_ram(0x10_1000, &[0xAA; 0x1000]).unwrap();
        load_multiboot(&mut m, &image, "").unwrap();
        let mut back = vec![0u8; image.len()];
        m.mem.read_ram(0x10_0000, &mut back).unwrap();
        assert_eq!(back, image, "the whole file from load_addr");
        let mut bss = vec![0xFFu8; 0x2000 - image.len()];
        m.mem
            .read_ram(0x10_0000 + image.len() as u32, &mut bss)
            .unwrap();
        assert!(bss.iter().all(|&b| b == 0), "bss zeroed up to bss_end_addr");
        assert_eq!(m.cpu.eip, 0x10_0040);
        assert_eq!(m.cpu.gpr[reg::EAX], MB_BOOT_MAGIC);
        // load_end_addr cuts the load short: the rest is not copied.
        let image = flat_kernel([0x10_0020, 0x10_0000, 0x10_0030, 0, 0x10_0040], &code);
        let mut m = Machine::with_ram_mib(4).unwrap();
        load_multiboot(&mut m, &image, "").unwrap();
        let mut after = [0xFFu8; 4];
        m.mem.read_ram(0x10_0030, &mut after).unwrap();
        assert_eq!(after, [0; 4]);
    }

    #[test]
    fn hostile_header_addresses_are_refused_with_the_field_named() {
        let code = [0xF4u8; 12];
        let len = 0x20 + 32 + code.len() as u32;
        for (fields, says) in [
            ([0x10_0000, 0x10_0020, 0, 0, 0], "above header_addr"),
            (
                [0x10_0100, 0x10_0000, 0, 0, 0],
                "before the start of the file",
            ),
            ([0x10_0020, 0x10_0000, 0x0F_FFFF, 0, 0], "below load_addr"),
            (
                [0x10_0020, 0x10_0000, 0x10_0000 + len + 1, 0, 0],
                "past the end of the file",
            ),
            ([0x10_0020, 0x10_0000, 0, 0x10_0001, 0], "bss_end_addr"),
            (
                [0xFFFF_FF20, 0xFFFF_FF00, 0, 0, 0],
                "does not fit in guest RAM",
            ),
            (
                [0x10_0020, 0x10_0000, 0, 0xFFFF_FFFF, 0],
                "does not fit in guest RAM",
            ),
        ] {
            let mut m = Machine::with_ram_mib(4).unwrap();
            let err = load_multiboot(&mut m, &flat_kernel(fields, &code), "").unwrap_err();
            assert!(err.to_string().contains(says), "{fields:x?}: {err}");
        }
        // A header cut off before its address fields.
        let mut cut = flat_kernel([0x10_0020, 0x10_0000, 0, 0, 0], &[]);
        cut.truncate(0x20 + 20);
        let err = load_multiboot(&mut Machine::with_ram_mib(4).unwrap(), &cut, "").unwrap_err();
        assert!(
            err.to_string().contains("ends before its address fields"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_checksum_and_a_flat_image_without_addresses_are_named() {
        let mut image = flat_kernel([0x10_0020, 0x10_0000, 0, 0, 0x10_0000], &[0xF4]);
        image[0x28] ^= 1;
        let mut m = Machine::with_ram_mib(4).unwrap();
        let err = load_multiboot(&mut m, &image, "").unwrap_err();
        assert!(
            matches!(err, BootError::BadMultibootChecksum(0x20)),
            "{err}"
        );
        assert_eq!(bad_multiboot_checksum(&image), Some(0x20));
        assert!(!is_multiboot_kernel(&image));
        let flags = MB_FLAG_MEMORY_INFO;
        let mut plain = vec![0u8; 8];
        for w in [
            MB_MAGIC,
            flags,
            0u32.wrapping_sub(MB_MAGIC).wrapping_sub(flags),
        ] {
            plain.extend_from_slice(&w.to_le_bytes());
        }
        assert!(!is_multiboot_kernel(&plain));
        let err = load_multiboot(&mut m, &plain, "").unwrap_err();
        assert!(matches!(err, BootError::NoLoadAddresses), "{err}");
    }

    /// Issue 16 item 10: a kernel over the loader's fixed data was said
    /// not to fit in RAM (or was silently overwritten by the MP tables).
    #[test]
    fn a_kernel_over_the_loaders_fixed_data_is_refused_saying_what_it_hits() {
        for (paddr, what) in [
            (0x0, "the BIOS data area"),
            (0xF_0000, "the EBDA and the BIOS area"),
            (0x9_F000, "the EBDA and the BIOS area"),
        ] {
            let mut m = Machine::with_ram_mib(4).unwrap();
            let err = load_multiboot(&mut m, &kernel_at(paddr, 0x1000, &[0xF4]), "").unwrap_err();
            assert!(
                matches!(err, BootError::OverLoaderData { .. }),
                "{paddr:#x}: {err}"
            );
            assert!(err.to_string().contains(what), "{paddr:#x}: {err}");
        }
    }

    #[test]
    fn a_file_without_multiboot_header_is_refused() {
        let mut m = Machine::with_ram_mib(2).unwrap();
        let err = load_multiboot(&mut m, b"\x7fELF not really", "").unwrap_err();
        assert!(matches!(err, BootError::NoMultibootHeader));
    }

    /// A minimal 32-bit Multiboot ELF kernel: one segment at `paddr` of
    /// `memsz` bytes whose first bytes are `code`, entered at `paddr`.
    fn kernel_at(paddr: u32, memsz: u32, code: &[u8]) -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend_from_slice(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let half = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
        let word = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        half(&mut v, 2); // ET_EXEC
        half(&mut v, 3); // EM_386
        word(&mut v, 1);
        word(&mut v, paddr); // e_entry
        word(&mut v, 52); // e_phoff
        word(&mut v, 0);
        word(&mut v, 0);
        for x in [52, 32, 1, 40, 0, 0] {
            half(&mut v, x);
        }
        for x in [1, 0x100, paddr, paddr, code.len() as u32, memsz, 5, 0x1000] {
            word(&mut v, x); // PT_LOAD at file offset 0x100
        }
        word(&mut v, MB_MAGIC);
        word(&mut v, 3);
        word(&mut v, 0u32.wrapping_sub(MB_MAGIC).wrapping_sub(3));
        v.resize(0x100, 0);
        v.extend_from_slice(code);
        v
    }

    #[test]
    fn a_kernel_over_the_boot_information_gets_it_placed_after_itself() {
        let mut m = Machine::with_ram_mib(4).unwrap();
        let code = [0xF4u8; 16];
        load_multiboot(&mut m, &kernel_at(0x8000, 0x284C, &code), "quiet").unwrap();
        let info = m.cpu.gpr[reg::EBX];
        assert!(
            info >= 0x10_0000,
            "info at {info:#x}, not inside the kernel"
        );
        let mut kernel = [0u8; 16];
        m.mem.read_ram(0x8000, &mut kernel).unwrap();
        assert_eq!(kernel, code, "the kernel is intact");
        let mut cmdline_at = [0u8; 4];
        m.mem.read_ram(info + 16, &mut cmdline_at).unwrap();
        let mut cmdline = [0u8; 6];
        m.mem
            .read_ram(u32::from_le_bytes(cmdline_at), &mut cmdline)
            .unwrap();
        assert_eq!(&cmdline, b"quiet\0");
        assert_eq!(m.cpu.gdtr.base, GDT_ADDR, "the GDT stays where it is free");
    }

    #[test]
    fn a_kernel_over_the_gdt_gets_the_gdt_moved_too() {
        let mut m = Machine::with_ram_mib(4).unwrap();
        let code = [0x90u8; 32];
        load_multiboot(&mut m, &kernel_at(0x800, 0x9000, &code), "").unwrap();
        assert_ne!(m.cpu.gdtr.base, GDT_ADDR);
        let mut kernel = [0u8; 32];
        m.mem.read_ram(0x800, &mut kernel).unwrap();
        assert_eq!(kernel, code, "the kernel is intact");
        assert_eq!(m.cpu.eip, 0x800);
    }

    #[test]
    fn no_room_for_the_boot_information_is_an_error_saying_so() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        let err = load_multiboot(&mut m, &kernel_at(0x8000, 0x2000, &[0xF4]), "").unwrap_err();
        assert!(err.to_string().contains("boot information"), "{err}");
    }

    #[test]
    fn a_truncated_elf_is_a_clean_error() {
        let mut m = Machine::with_ram_mib(2).unwrap();
        assert!(load_multiboot(&mut m, &image_with_header(&[0; 8]), "").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Hostile kernel images never panic the loader: they load or are
        /// refused with an error.
        #[test]
        fn random_kernel_images_never_panic_the_loader(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut m = Machine::with_ram_mib(2).unwrap();
            let _ = load_multiboot(&mut m, &image_with_header(&tail), "console");
        }

        #[test]
        fn random_rom_images_load_or_are_refused(len in 0usize..70_000) {
            let mut m = Machine::with_ram_mib(1).unwrap();
            let r = load_rom(&mut m, &vec![0x90; len]);
            prop_assert_eq!(r.is_ok(), len > 0);
        }
    }
}
