//! Builds the BIOS ROM (`bios.bin`, 64 KiB) and the self-test boot disk
//! (`boot-test.img`) into `OUT_DIR` from the sources in `src-bios/` and
//! `tests/`, with the system C compiler and GNU ld.
//!
//! The ROM is linked by `bios.ld` into a flat binary, then its last byte
//! is set so that all its bytes sum to 0 modulo 256 (the checksum
//! `src/lib.rs` checks).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The BIOS sources, relative to `src-bios/`: 16-bit runtime services in
/// assembly, POST in 32-bit C.
const BIOS_SOURCES: &[&str] = &[
    "reset.S",
    "vectors.S",
    "video.S",
    "disk.S",
    "keyboard.S",
    "time.S",
    "system.S",
    "post.c",
    "console.c",
    "memmap.c",
    "ata.c",
    "mptable.c",
    "acpi.c",
];

/// The size of the ROM: it ends at 1 MiB and at 4 GiB.
const ROM_SIZE: usize = 64 * 1024;

/// No x87, MMX or SSE code may come out of the compiler: the emulated CPU
/// has no FPU. `-march=i386` keeps POST to instructions every IA-32 CPU
/// has. Address 0 (the IVT) is a real address to POST, hence
/// `-fno-delete-null-pointer-checks`; `min-pagesize=0` stops GCC from
/// treating the BDA's small constant addresses as offsets from NULL.
const CFLAGS: &[&str] = &[
    "-m32",
    "-march=i386",
    "-ffreestanding",
    "-nostdlib",
    "-nostdinc",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",
    "-fno-asynchronous-unwind-tables",
    "-fno-delete-null-pointer-checks",
    "--param=min-pagesize=0",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-Os",
    "-Wall",
    "-Werror",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bios_dir = manifest_dir.join("src-bios");
    let tests_dir = manifest_dir.join("tests");
    println!("cargo:rerun-if-changed={}", bios_dir.display());
    println!("cargo:rerun-if-changed={}", tests_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("bios.ld").display()
    );

    let objects: Vec<PathBuf> = BIOS_SOURCES
        .iter()
        .map(|source| compile(&bios_dir.join(source), &out_dir.join("bios"), &bios_dir))
        .collect();
    let elf = out_dir.join("bios.elf");
    let raw = out_dir.join("bios.raw");
    link(&objects, &manifest_dir.join("bios.ld"), &elf, &[]);
    link(
        &objects,
        &manifest_dir.join("bios.ld"),
        &raw,
        &["--oformat", "binary"],
    );
    let mut rom = fs::read(&raw).expect("read the linked ROM");
    assert_eq!(
        rom.len(),
        ROM_SIZE,
        "bios.ld must produce exactly {ROM_SIZE} bytes"
    );
    let sum = rom[..ROM_SIZE - 1]
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    rom[ROM_SIZE - 1] = sum.wrapping_neg();
    fs::write(out_dir.join("bios.bin"), &rom).expect("write bios.bin to OUT_DIR");

    let boot_object = compile(
        &tests_dir.join("boot-test.S"),
        &out_dir.join("boot-test"),
        &tests_dir,
    );
    link(
        &[boot_object],
        &tests_dir.join("boot-test.ld"),
        &out_dir.join("boot-test.img"),
        &["--oformat", "binary"],
    );
}

/// Compiles one `.c` or `.S` file into `objects_dir`; returns the object.
fn compile(source: &Path, objects_dir: &Path, include_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    fs::create_dir_all(objects_dir).expect("create object directory in OUT_DIR");
    let file_name = source
        .file_name()
        .expect("sources are files")
        .to_string_lossy();
    let object = objects_dir.join(format!("{file_name}.o"));
    let mut cc = Command::new("cc");
    cc.args(CFLAGS)
        .arg("-I")
        .arg(include_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object);
    run(cc, "cc");
    object
}

fn link(objects: &[PathBuf], link_script: &Path, output: &Path, extra: &[&str]) {
    let mut ld = Command::new("ld");
    ld.args([
        "-m",
        "elf_i386",
        "-nostdlib",
        "--build-id=none",
        "-z",
        "noexecstack",
    ])
    .args(extra)
    .arg("-T")
    .arg(link_script)
    .arg("-o")
    .arg(output)
    .args(objects);
    run(ld, "ld");
}

/// Runs a tool; a failure stops the build with the tool's own message.
fn run(mut command: Command, tool: &str) {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}); the BIOS needs a C compiler and GNU ld that target i386 (`cc -m32`)")
    });
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
