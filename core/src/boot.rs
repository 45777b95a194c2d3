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
    #[error("Multiboot header requests unsupported features (flags {0:#x})")]
    UnsupportedFlags(u32),
    #[error("kernel segment {paddr:#x}+{len:#x} does not fit in guest RAM of {ram:#x} bytes")]
    SegmentOutsideRam { paddr: u64, len: u64, ram: u32 },
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

fn find_multiboot_header(image: &[u8]) -> Option<u32> {
    let end = image.len().min(8192);
    (0..end.saturating_sub(11)).step_by(4).find_map(|off| {
        let word = |i: usize| u32::from_le_bytes(image[off + i..off + i + 4].try_into().unwrap());
        let (magic, flags, sum) = (word(0), word(4), word(8));
        (magic == MB_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0).then_some(flags)
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
    let flags = find_multiboot_header(image).ok_or(BootError::NoMultibootHeader)?;
    let known = MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO | MB_FLAG_AOUT_KLUDGE;
    if flags & 0xFFFF & !known != 0 {
        // Bits 0-15 are requirements: a loader that cannot meet one must refuse.
        return Err(BootError::UnsupportedFlags(flags));
    }
    let elf = Elf::parse(image).map_err(|e| BootError::NotElf(e.to_string()))?;
    if elf.is_64 || elf.header.e_machine != goblin::elf::header::EM_386 {
        return Err(BootError::WrongArch);
    }
    let ram = m.mem.ram_size();
    let mut kernel_end = 0u64;
    let mut loaded: Vec<(u64, u64)> = Vec::new();
    for ph in elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD) {
        let (paddr, filesz, memsz) = (ph.p_paddr, ph.p_filesz, ph.p_memsz);
        let end = paddr.saturating_add(memsz.max(filesz));
        if end > ram as u64 {
            return Err(BootError::SegmentOutsideRam {
                paddr,
                len: memsz,
                ram,
            });
        }
        let file_end = ph
            .p_offset
            .checked_add(filesz)
            .ok_or(BootError::Truncated(ph.p_offset))?;
        let bytes = image
            .get(ph.p_offset as usize..file_end as usize)
            .ok_or(BootError::Truncated(ph.p_offset))?;
        m.mem.write_ram(paddr as u32, bytes)?;
        if memsz > filesz {
            let zeros = vec![0u8; (memsz - filesz) as usize];
            m.mem.write_ram((paddr + filesz) as u32, &zeros)?;
        }
        kernel_end = kernel_end.max(end);
        loaded.push((paddr, end));
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
    enter_flat_protected_mode_with_gdt(m, elf.entry as u32, gdt);
    m.cpu.gpr[reg::EAX] = MB_BOOT_MAGIC;
    m.cpu.gpr[reg::EBX] = base + block::INFO;
    Ok(())
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
