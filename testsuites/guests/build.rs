//! Builds every guest from C and GNU assembler sources with the system C
//! compiler and linker, then writes `guests.rs` (the table `src/lib.rs`
//! includes) into `OUT_DIR`.
//!
//! A guest is the runtime in `lib/` plus its own sources in `src-guests/`,
//! linked at 1 MiB by `link.ld`. To add one, add its sources and a row to
//! `GUESTS` below.
//!
//! The demo OS in `demo/` is built apart (`build_demo`): its user
//! programs first, then the kernel that embeds them, as the Multiboot
//! guest `demo`, and a disk image, `demo-disk`, of its boot sector and
//! the kernel. Disk images go into a table of their own, `DISKS`, with
//! the disks that are a boot sector alone (`BOOT_SECTOR_DISKS`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct GuestSpec {
    name: &'static str,
    description: &'static str,
    /// Paths relative to `src-guests/`.
    sources: &'static [&'static str],
    /// Extra preprocessor definitions, e.g. `BENCH_SMALL`.
    defines: &'static [&'static str],
}

/// Every guest, sorted by name.
const GUESTS: &[GuestSpec] = &[
    GuestSpec {
        name: "bench-int",
        description: "integer benchmark with paging on: sieve, CRC-32, memcpy/memcmp, heap sort",
        sources: &["bench-int.c"],
        defines: &[],
    },
    GuestSpec {
        name: "bench-int-small",
        description: "bench-int with 1/100 of the work, for quick tests",
        sources: &["bench-int.c"],
        defines: &["BENCH_SMALL"],
    },
    GuestSpec {
        name: "exceptions",
        description: "every exception raised on purpose: vectors, error codes, fault vs trap EIP, #DF, no FPU",
        sources: &["exceptions.c"],
        defines: &[],
    },
    GuestSpec {
        name: "fw-probe",
        description: "prints what firmware and CPU identity it finds, one `probe: KEY = VALUE` per line: fw_cfg, ACPI tables, PM timer, HPET, CPUID, MSRs (MTRRs, PAT, perf counters, EFER)",
        sources: &["fw-probe.c"],
        defines: &[],
    },
    GuestSpec {
        name: "hello",
        description: "prints a greeting on COM1 and exits 0",
        sources: &["hello.c"],
        defines: &[],
    },
    GuestSpec {
        name: "irq-console",
        description: "COM1 and keyboard read only by IRQ 4 and IRQ 1, MCR.OUT2 clear, a busy idle loop without HLT: runs the commands it is sent",
        sources: &["irq-console.c"],
        defines: &[],
    },
    GuestSpec {
        name: "irq-pm",
        description: "unpaged protected mode: 8259A at 0x20, 8254 IRQ 0 at 1 kHz taken with STI; HLT, CMOS and POST ports",
        sources: &["irq-pm.c", "irq-pm.S"],
        defines: &[],
    },
    GuestSpec {
        name: "jit-torture",
        description: "recompiler torture: aliased code, stores into the next instruction, page-straddling fetches, IDE-loaded code, a fault at each access of a long block, IRQs in tight loops",
        sources: &["jit-torture.c", "jit-torture.S"],
        defines: &[],
    },
    GuestSpec {
        name: "nanobench",
        description: "Adams & Agesen's nanobenchmarks with paging on, one RDTSC-timed loop each: INT 0x80, SYSENTER, IN, TPR write, CALL/RET, #PF, #DE, PTE write + INVLPG, CLI/STI, PUSHF/POPF; `ops=` and `iters=` on the command line",
        sources: &["nanobench.c", "nanobench.S"],
        defines: &[],
    },
    GuestSpec {
        name: "paging",
        description: "page-fault error codes and CR2, accessed/dirty bits, 4 MiB pages, CR0.WP, INVLPG",
        sources: &["paging.c"],
        defines: &[],
    },
    GuestSpec {
        name: "pc-hw",
        description: "a 1990s PC OS's drivers: MP table scan, IOAPIC and LAPIC timer, IDE slave PIO by IRQ 14, COM1 input by IRQ 4",
        sources: &[
            "pc-hw/main.c",
            "pc-hw/mptable.c",
            "pc-hw/apic.c",
            "pc-hw/ide.c",
            "pc-hw/uart.c",
        ],
        defines: &[],
    },
    GuestSpec {
        name: "pm-segments",
        description: "segment limits, expand-down, null and not-present selectors, SS rules, LAR/LSL/VERR/VERW/ARPL",
        sources: &["pm-segments.c"],
        defines: &[],
    },
    GuestSpec {
        name: "privilege",
        description: "call gates, ring 3 to ring 0 stack switch, IRET to an outer ring, SYSENTER/SYSEXIT, RPL checks",
        sources: &["privilege.c", "privilege.S"],
        defines: &[],
    },
    GuestSpec {
        name: "reboot",
        description: "resets the PC by the 8042, port 0x92 and a triple fault, counting its boots in CMOS and RAM",
        sources: &["reboot.c"],
        defines: &[],
    },
    GuestSpec {
        name: "smc",
        description: "self-modifying code: same page, other page, next instruction, hot loop, physical alias",
        sources: &["smc.c", "smc.S"],
        defines: &[],
    },
    GuestSpec {
        name: "tasks",
        description: "hardware task switches: JMP/CALL to TSS and task gate, IRET with NT, busy bits, #TS",
        sources: &["tasks.c", "tasks.S"],
        defines: &[],
    },
    GuestSpec {
        name: "vm86",
        description: "virtual-8086 mode: segment arithmetic, IOPL-sensitive instructions, I/O bitmap, monitor",
        sources: &["vm86.c", "vm86.S"],
        defines: &[],
    },
];

/// A disk image that is a boot sector and nothing else: the BIOS loads it
/// and it runs in real mode.
struct BootSectorSpec {
    name: &'static str,
    description: &'static str,
    /// Relative to `src-guests/`.
    source: &'static str,
}

/// The boot-sector disks, sorted by name.
const BOOT_SECTOR_DISKS: &[BootSectorSpec] = &[BootSectorSpec {
    name: "irq-real",
    description: "real mode from the BIOS: IRQ 0 hooked in the IVT at 1 kHz, chained to the BIOS's INT 08h, COM1 and INT 10h output",
    source: "irq-real.S",
}];

/// Guests also written out as a disk image booted through the BIOS: the
/// guest, the disk's name, its description.
const KERNEL_DISKS: &[(&str, &str, &str)] = &[
    (
        "bench-int",
        "bench-int-disk",
        "bench-int behind the demo's boot sector: the benchmark for emulators that boot only disks (Bochs)",
    ),
    (
        "bench-int-small",
        "bench-int-small-disk",
        "bench-int-small behind the demo's boot sector (a short run of the disk benchmark)",
    ),
    (
        "irq-console",
        "irq-console-disk",
        "the irq-console guest behind the demo's boot sector: keys typed during the BIOS's self test reach it",
    ),
    (
        "reboot",
        "reboot-disk",
        "the reboot guest behind the demo's boot sector: each reset goes through the BIOS again",
    ),
];

/// The runtime every guest links, relative to `lib/`.
const RUNTIME: &[&str] = &[
    "crt0.S",
    "trap.S",
    "runtime.c",
    "serial.c",
    "string.c",
    "paging.c",
];

include!("build_flags.rs");

const DEMO_DESCRIPTION: &str =
    "the demo teaching OS: processes, paging, system calls and a shell on COM1 (demo/README.md)";
const DEMO_DISK_DESCRIPTION: &str =
    "the demo OS on a raw disk image: its boot sector loads the kernel with INT 13h";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib_dir = manifest_dir.join("lib");
    let guest_dir = manifest_dir.join("src-guests");
    let link_script = manifest_dir.join("link.ld");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("build_flags.rs").display()
    );

    // The directories catch headers and new files; compile() names each
    // source as well.
    println!("cargo:rerun-if-changed={}", link_script.display());
    println!("cargo:rerun-if-changed={}", lib_dir.display());
    println!("cargo:rerun-if-changed={}", guest_dir.display());

    let runtime_objects: Vec<PathBuf> = RUNTIME
        .iter()
        .map(|source| {
            compile(
                &lib_dir.join(source),
                &out_dir.join("lib"),
                &[&lib_dir],
                &[],
            )
        })
        .collect();

    // Every Multiboot guest, the demo's kernel among them, sorted by name.
    let mut rows = vec![("demo", DEMO_DESCRIPTION)];
    for guest in GUESTS {
        let objects_dir = out_dir.join(guest.name);
        let mut objects = runtime_objects.clone();
        for source in guest.sources {
            objects.push(compile(
                &guest_dir.join(source),
                &objects_dir,
                &[&lib_dir],
                guest.defines,
            ));
        }
        let image = out_dir.join(format!("{}.elf", guest.name));
        link(&objects, &link_script, &image);
        rows.push((guest.name, guest.description));
    }
    build_demo(&manifest_dir.join("demo"), &out_dir);
    rows.sort();

    let mut disks = vec![("demo-disk", DEMO_DISK_DESCRIPTION)];
    // Guests that also come as a disk, behind the demo's boot sector (a
    // small Multiboot-style loader), to be booted through the BIOS.
    let demo_boot = fs::read(out_dir.join("demo").join("bootsect.bin")).expect("read bootsect.bin");
    for (guest, disk, description) in KERNEL_DISKS {
        let elf = fs::read(out_dir.join(format!("{guest}.elf"))).expect("read a guest image");
        fs::write(
            out_dir.join(format!("{disk}.img")),
            disk_image(&demo_boot, &elf),
        )
        .expect("write a disk image to OUT_DIR");
        disks.push((disk, description));
    }
    for disk in BOOT_SECTOR_DISKS {
        let object = compile(
            &guest_dir.join(disk.source),
            &out_dir.join(disk.name),
            &[],
            &[],
        );
        let boot_sector = out_dir.join(disk.name).join("bootsect.bin");
        link_boot_sector(&object, &boot_sector);
        let boot = fs::read(&boot_sector).expect("read the boot sector");
        fs::write(
            out_dir.join(format!("{}.img", disk.name)),
            boot_sector_disk(&boot),
        )
        .expect("write a disk image to OUT_DIR");
        disks.push((disk.name, disk.description));
    }
    disks.sort();

    let mut table = String::from("pub static GUESTS: &[Guest] = &[\n");
    for (name, description) in rows {
        writeln!(
            table,
            "    Guest {{ name: {name:?}, description: {description:?}, image: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.elf\")), expect_exit: 0 }},"
        )
        .expect("writing to a String cannot fail");
    }
    table.push_str("];\n");
    table.push_str("pub static DISKS: &[Disk] = &[\n");
    for (name, description) in disks {
        writeln!(
            table,
            "    Disk {{ name: {name:?}, description: {description:?}, image: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.img\")), expect_exit: 0 }},"
        )
        .expect("writing to a String cannot fail");
    }
    table.push_str("];\n");
    fs::write(out_dir.join("guests.rs"), table).expect("write guests.rs to OUT_DIR");
}

/// Builds the demo OS: each user program (linked at 1 GiB by
/// `user/user.ld`), the kernel with the programs embedded (`demo.elf`,
/// linked at 1 MiB by `kernel/kernel.ld`), the boot sector, and the disk
/// image `demo-disk.img`.
fn build_demo(demo_dir: &Path, out_dir: &Path) {
    let kernel_dir = demo_dir.join("kernel");
    let user_dir = demo_dir.join("user");
    let boot_dir = demo_dir.join("boot");
    let build_dir = out_dir.join("demo");
    println!("cargo:rerun-if-changed={}", demo_dir.display());
    for dir in [&kernel_dir, &user_dir, &boot_dir] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let user_lib: Vec<PathBuf> = DEMO_USER_LIB
        .iter()
        .map(|source| {
            compile(
                &user_dir.join(source),
                &build_dir.join("user-lib"),
                &[demo_dir],
                &[],
            )
        })
        .collect();
    let programs_dir = build_dir.join("programs");
    // bench.c includes the guests' shared bench-work.h, from lib/.
    let lib_dir = demo_dir.join("../lib");
    for (name, source, defines) in DEMO_PROGRAMS {
        let mut objects = user_lib.clone();
        objects.push(compile(
            &user_dir.join(source),
            &build_dir.join(format!("user-{name}")),
            &[demo_dir, &lib_dir],
            defines,
        ));
        fs::create_dir_all(&programs_dir).expect("create the demo programs directory");
        link(
            &objects,
            &user_dir.join("user.ld"),
            &programs_dir.join(format!("{name}.elf")),
        );
    }

    // programs.S .incbin's the programs, found through -I.
    let kernel_objects: Vec<PathBuf> = DEMO_KERNEL
        .iter()
        .map(|source| {
            compile(
                &kernel_dir.join(source),
                &build_dir.join("kernel"),
                &[demo_dir, &programs_dir],
                &[],
            )
        })
        .collect();
    let kernel = out_dir.join("demo.elf");
    link(&kernel_objects, &kernel_dir.join("kernel.ld"), &kernel);

    let boot_object = compile(
        &boot_dir.join("bootsect.S"),
        &build_dir.join("boot"),
        &[],
        &[],
    );
    let boot_sector = build_dir.join("bootsect.bin");
    link_boot_sector(&boot_object, &boot_sector);

    let elf = fs::read(&kernel).expect("read demo.elf");
    let boot = fs::read(&boot_sector).expect("read bootsect.bin");
    fs::write(out_dir.join("demo-disk.img"), disk_image(&boot, &elf))
        .expect("write demo-disk.img to OUT_DIR");
}

/// Links a boot sector as the flat 512 bytes the BIOS loads at 0x7C00.
fn link_boot_sector(object: &Path, boot_sector: &Path) {
    let mut ld = Command::new("ld");
    ld.args(["-m", "elf_i386", "-nostdlib", "--build-id=none"])
        .args(["-Ttext", "0x7c00", "--oformat", "binary", "-e", "_start"])
        .arg("-o")
        .arg(boot_sector)
        .arg(object);
    run(ld, "ld");
}

/// Where the boot sector loads the kernel image, and the most it can
/// stage below 1 MiB (0x10000-0x8FFFF; see `demo/boot/bootsect.S`).
const DEMO_KERNEL_ADDRESS: u32 = 0x10_0000;
const DEMO_KERNEL_MAX_SECTORS: usize = 1024;
/// The fields build.rs fills in the boot sector.
const BOOT_SECTORS_OFFSET: usize = 4;
const BOOT_ENTRY_OFFSET: usize = 6;
/// Disk images are padded to whole cylinders of 16 heads x 63 sectors,
/// the geometry BIOSes assume for small disks, so CHS reads fit it.
const CYLINDER_BYTES: usize = 16 * 63 * 512;

/// The boot sector, then the kernel's loadable segments laid out from
/// 1 MiB as they will be in memory (gaps zero-filled, .bss left out: the
/// kernel clears it), with the kernel's size in sectors and its entry
/// point written into the boot sector.
fn disk_image(boot: &[u8], elf: &[u8]) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    check_boot_sector(boot);
    assert_eq!(
        &boot[BOOT_SECTORS_OFFSET..BOOT_ENTRY_OFFSET + 4],
        &[0xFF; 6],
        "the boot sector's fields moved"
    );
    assert_eq!(&elf[..4], b"\x7fELF", "a kernel image is not an ELF file");

    let entry = u32_at(24);
    let (phoff, phentsize, phnum) = (
        u32_at(28) as usize,
        u16_at(42) as usize,
        u16_at(44) as usize,
    );
    let mut kernel = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_LOAD: u32 = 1;
        if u32_at(ph) != PT_LOAD || u32_at(ph + 16) == 0 {
            continue;
        }
        let (offset, paddr, filesz) = (
            u32_at(ph + 4) as usize,
            u32_at(ph + 12),
            u32_at(ph + 16) as usize,
        );
        let at = paddr
            .checked_sub(DEMO_KERNEL_ADDRESS)
            .expect("the demo kernel is linked at 1 MiB") as usize;
        if kernel.len() < at + filesz {
            kernel.resize(at + filesz, 0);
        }
        kernel[at..at + filesz].copy_from_slice(&elf[offset..offset + filesz]);
    }
    let sectors = kernel.len().div_ceil(512);
    assert!(
        sectors <= DEMO_KERNEL_MAX_SECTORS,
        "the demo kernel ({sectors} sectors) is too big for the boot sector's staging area"
    );

    let mut image = boot.to_vec();
    image[BOOT_SECTORS_OFFSET..BOOT_SECTORS_OFFSET + 2]
        .copy_from_slice(&(sectors as u16).to_le_bytes());
    image[BOOT_ENTRY_OFFSET..BOOT_ENTRY_OFFSET + 4].copy_from_slice(&entry.to_le_bytes());
    image.extend_from_slice(&kernel);
    image.resize(image.len().div_ceil(CYLINDER_BYTES) * CYLINDER_BYTES, 0);
    image
}

/// A disk of one cylinder whose only contents are its boot sector.
fn boot_sector_disk(boot: &[u8]) -> Vec<u8> {
    check_boot_sector(boot);
    let mut image = boot.to_vec();
    image.resize(CYLINDER_BYTES, 0);
    image
}

fn check_boot_sector(boot: &[u8]) {
    assert_eq!(boot.len(), 512, "the boot sector must be one sector");
    assert_eq!(
        &boot[510..],
        &[0x55, 0xAA],
        "the boot sector lacks its signature"
    );
}

/// Compiles one `.c` or `.S` file into `objects_dir`; returns the object.
fn compile(source: &Path, objects_dir: &Path, include_dirs: &[&Path], defines: &[&str]) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    fs::create_dir_all(objects_dir).expect("create object directory in OUT_DIR");
    let file_name = source
        .file_name()
        .expect("sources are files")
        .to_string_lossy();
    let object = objects_dir.join(format!("{file_name}.o"));
    let mut cc = Command::new("cc");
    cc.args(CFLAGS);
    for dir in include_dirs {
        cc.arg("-I").arg(dir);
    }
    for define in defines {
        cc.arg(format!("-D{define}"));
    }
    cc.arg("-c").arg(source).arg("-o").arg(&object);
    run(cc, "cc");
    object
}

fn link(objects: &[PathBuf], link_script: &Path, image: &Path) {
    let mut ld = Command::new("ld");
    ld.args(LDFLAGS)
        .arg("-T")
        .arg(link_script)
        .arg("-o")
        .arg(image)
        .args(objects);
    run(ld, "ld");
}

/// Runs a tool; a failure stops the build with the tool's own message.
fn run(mut command: Command, tool: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{tool}` ({e}); the guests need a C compiler and GNU ld that target i386 (`cc -m32`)"));
    if !output.status.success() {
        panic!(
            "`{:?}` failed with {}:\n{}{}",
            command,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
