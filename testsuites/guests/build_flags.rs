// How the guests' C and assembly are compiled and linked, and the demo
// OS's file lists: included by build.rs, which builds the built-in
// guests, and by the library (`ringside_guests::build_flags`), so that
// `ringside lab` builds a student's copy of the demo OS exactly as the
// built-in one is built.

/// No x87, MMX or SSE code may come out of the compiler: the emulated CPU
/// has no FPU. `-nostdinc` keeps the host's headers out; `guest.h` is all
/// a guest sees. Loop-pattern distribution is off so a C loop stays a
/// loop instead of becoming a call to memset.
pub const CFLAGS: &[&str] = &[
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
pub const LDFLAGS: &[&str] = &[
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

/// The demo OS's kernel sources, relative to `demo/kernel/`.
pub const DEMO_KERNEL: &[&str] = &[
    "entry.S",
    "trapasm.S",
    "main.c",
    "desc.c",
    "trap.c",
    "syscall.c",
    "pic.c",
    "apic.c",
    "kalloc.c",
    "vm.c",
    "elf.c",
    "proc.c",
    "console.c",
    "printf.c",
    "string.c",
    "shell.c",
    "programs.S",
];

/// What every demo user program links, relative to `demo/user/`.
pub const DEMO_USER_LIB: &[&str] = &["crt0.S", "ulib.c"];

/// The demo's user programs: name, main source, defines. The kernel
/// embeds `NAME.elf` for each name `demo/kernel/programs.S` lists.
pub const DEMO_PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("hello", "hello.c", &[]),
    ("bench", "bench.c", &[]),
    ("bench-small", "bench.c", &["BENCH_SMALL"]),
    ("syscalls", "syscalls.c", &[]),
    ("pagefaults", "pagefaults.c", &[]),
    ("ports", "ports.c", &[]),
    ("sleeper", "sleeper.c", &[]),
    ("fault", "fault.c", &[]),
    ("cat", "cat.c", &[]),
];

