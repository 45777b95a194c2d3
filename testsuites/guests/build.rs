//! Builds every guest from C and GNU assembler sources with the system C
//! compiler and linker, then writes `guests.rs` (the table `src/lib.rs`
//! includes) into `OUT_DIR`.
//!
//! A guest is the runtime in `lib/` plus its own sources in `src-guests/`,
//! linked at 1 MiB by `link.ld`. To add one, add its sources and a row to
//! `GUESTS` below.

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
        name: "hello",
        description: "prints a greeting on COM1 and exits 0",
        sources: &["hello.c"],
        defines: &[],
    },
    GuestSpec {
        name: "paging",
        description: "page-fault error codes and CR2, accessed/dirty bits, 4 MiB pages, CR0.WP, INVLPG",
        sources: &["paging.c"],
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

/// The runtime every guest links, relative to `lib/`.
const RUNTIME: &[&str] = &[
    "crt0.S",
    "trap.S",
    "runtime.c",
    "serial.c",
    "string.c",
    "paging.c",
];

/// No x87, MMX or SSE code may come out of the compiler: the emulated CPU
/// has no FPU. `-nostdinc` keeps the host's headers out; `guest.h` is all
/// a guest sees. Loop-pattern distribution is off so a C loop stays a
/// loop instead of becoming a call to memset.
const CFLAGS: &[&str] = &[
    "-m32",
    "-march=i686",
    "-ffreestanding",
    "-nostdlib",
    "-nostdinc",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",
    "-fno-asynchronous-unwind-tables",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-O2",
    "-Wall",
    "-Werror",
];

/// A static ELF32 executable laid out by `link.ld`; the code is writable
/// on purpose (the `smc` guest patches itself), hence no RWX warning.
const LDFLAGS: &[&str] = &[
    "-m",
    "elf_i386",
    "-nostdlib",
    "--build-id=none",
    "-z",
    "max-page-size=0x1000",
    "-z",
    "noexecstack",
    "--no-warn-rwx-segments",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib_dir = manifest_dir.join("lib");
    let guest_dir = manifest_dir.join("src-guests");
    let link_script = manifest_dir.join("link.ld");

    // The directories catch headers and new files; compile() names each
    // source as well.
    println!("cargo:rerun-if-changed={}", link_script.display());
    println!("cargo:rerun-if-changed={}", lib_dir.display());
    println!("cargo:rerun-if-changed={}", guest_dir.display());

    let runtime_objects: Vec<PathBuf> = RUNTIME
        .iter()
        .map(|source| compile(&lib_dir.join(source), &out_dir.join("lib"), &lib_dir, &[]))
        .collect();

    let mut table = String::from("pub static GUESTS: &[Guest] = &[\n");
    for guest in GUESTS {
        let objects_dir = out_dir.join(guest.name);
        let mut objects = runtime_objects.clone();
        for source in guest.sources {
            objects.push(compile(
                &guest_dir.join(source),
                &objects_dir,
                &lib_dir,
                guest.defines,
            ));
        }
        let image = out_dir.join(format!("{}.elf", guest.name));
        link(&objects, &link_script, &image);
        writeln!(
            table,
            "    Guest {{ name: {:?}, description: {:?}, image: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{}.elf\")), expect_exit: 0 }},",
            guest.name, guest.description, guest.name
        )
        .expect("writing to a String cannot fail");
    }
    table.push_str("];\n");
    fs::write(out_dir.join("guests.rs"), table).expect("write guests.rs to OUT_DIR");
}

/// Compiles one `.c` or `.S` file into `objects_dir`; returns the object.
fn compile(source: &Path, objects_dir: &Path, include_dir: &Path, defines: &[&str]) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    fs::create_dir_all(objects_dir).expect("create object directory in OUT_DIR");
    let file_name = source
        .file_name()
        .expect("sources are files")
        .to_string_lossy();
    let object = objects_dir.join(format!("{file_name}.o"));
    let mut cc = Command::new("cc");
    cc.args(CFLAGS).arg("-I").arg(include_dir);
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
