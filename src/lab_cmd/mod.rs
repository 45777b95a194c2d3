//! `ringside lab`: the course's labs (book chapter "Labs"; the files in
//! `labs/`). `list` shows them, `start N DIR` writes a lab's starter files
//! into DIR (never over a file that is there), `check N DIR` builds the
//! student's work with the system compiler and runs it on ringside (this
//! very binary, as a child), then judges what it printed on COM1, how it
//! ended and the engine's counters, with a hint for each thing that is
//! not right yet; `check N --solution` does the same for the reference
//! solution, for teachers and for CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod checks;
use checks::*;

/// How a lab's files become something ringside runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// `boot.S`, assembled into a 512-byte boot sector at 0000:7C00 and
    /// booted from a disk through ringside's BIOS.
    BootSector,
    /// C and assembly files linked with `kernel.ld` into a Multiboot
    /// kernel, loaded directly (the labs' runtime comes with it).
    Kernel,
    /// Nothing to build: `answer.txt` holds what the student found with
    /// the commands the lab names, which the checker runs itself.
    Answers(&'static [Probe]),
    /// A copy of the demo OS (`kernel/`, `user/`, `syscall.h`), built as
    /// `build.rs` builds the built-in one (`ringside_guests::build_flags`)
    /// with the user programs `kernel/programs.S` lists, and booted with
    /// `input` typed at its prompt.
    DemoOs { input: &'static str },
    /// A Rust crate against ringside's library crates: `cargo test`, then
    /// `cargo run`, whose output the lab's check reads.
    Crate,
}

/// A ringside command an answers lab's checker runs to know the truth:
/// its arguments, as the student types them after `ringside` (split at
/// spaces), and what goes to its stdin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    command: &'static str,
    input: &'static str,
}

/// What a probe printed.
struct ProbeOut {
    stdout: String,
    stderr: String,
    /// The `--stats` JSON object (the last line of stderr that is one;
    /// Null without one).
    stats: serde_json::Value,
}

impl ProbeOut {
    fn new(out: &std::process::Output) -> ProbeOut {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stats = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        ProbeOut {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            stats,
        }
    }

    fn counter(&self, name: &str) -> Option<u64> {
        self.stats["counters"][name].as_u64()
    }
}

/// The demo OS on raw mode, running `run hello` (labs 6 and 7).
const RAW_DEMO: Probe = Probe {
    command: "run builtin:demo --engine raw --clock fast --stats",
    input: "run hello\npoweroff\n",
};
const RAW_DEMO_NO_PATM: Probe = Probe {
    command: "run builtin:demo --engine raw --clock fast --stats --set raw.patm=false",
    input: "run hello\npoweroff\n",
};

/// What a run of the student's work did.
struct Run {
    status: Option<i32>,
    /// The guest's COM1 output (for an answers lab: what the command the
    /// lab names printed).
    com1: String,
    /// An answers lab's `answer.txt`.
    answers: String,
    /// An answers lab's probes, in order.
    probes: Vec<ProbeOut>,
    /// What ringside said on stderr.
    said: String,
    /// `--stats-json`.
    stats: serde_json::Value,
    /// A crate lab's `cargo test`: each test's name, and its failure
    /// message when it failed.
    tests: Vec<(String, Option<String>)>,
}

impl Run {
    fn counter(&self, name: &str) -> u64 {
        self.stats["counters"][name].as_u64().unwrap_or(0)
    }
}

/// What is not right yet, each with a hint.
type Verdict = Vec<String>;

struct Lab {
    number: u32,
    title: &'static str,
    /// Its page in the book.
    page: &'static str,
    build: Build,
    /// The files the starter is made from (for lab 5, the demo OS's).
    base: Files,
    /// The starter: files given whole, and patches (`NAME.patch`, a
    /// unified diff) applied to the base's file NAME.
    starter: Files,
    /// The reference solution: the same, applied to the starter.
    solution: Files,
    check: fn(&Run) -> Verdict,
}

/// Files by path (relative to the lab's directory) and contents.
type Files = &'static [(&'static str, &'static str)];

/// The files every kernel lab gets: given, not to be changed.
const RUNTIME: [(&str, &str); 4] = [
    ("start.S", include_str!("../../labs/runtime/start.S")),
    ("runtime.c", include_str!("../../labs/runtime/runtime.c")),
    ("lab.h", include_str!("../../labs/runtime/lab.h")),
    ("kernel.ld", include_str!("../../labs/runtime/kernel.ld")),
];

/// A lab's one file `$name`, from `labs/$dir/$side/` (starter or
/// solution).
macro_rules! lab_file {
    ($dir:literal, $side:literal, $name:literal) => {
        &[(
            $name,
            include_str!(concat!("../../labs/", $dir, "/", $side, "/", $name)),
        )]
    };
}

/// A kernel lab's files: the runtime, and `kernel.c` from `labs/$dir/$side/`.
macro_rules! kernel_files {
    ($dir:literal, $side:literal) => {
        &[
            RUNTIME[0],
            RUNTIME[1],
            RUNTIME[2],
            RUNTIME[3],
            (
                "kernel.c",
                include_str!(concat!("../../labs/", $dir, "/", $side, "/kernel.c")),
            ),
        ]
    };
}

/// The demo OS's sources, `$path` relative to its directory.
macro_rules! demo_files {
    ($from:literal as $to:literal, $($path:literal),* $(,)?) => {
        &[
            ($to, include_str!(concat!("../../testsuites/guests/demo/", $from))),
            $(($path, include_str!(concat!("../../testsuites/guests/demo/", $path)))),*
        ]
    };
}

/// What lab 5 starts from: the demo OS's sources as the built-in one is
/// built (a test checks that no file of `demo/kernel` or `demo/user` is
/// missing), and the guests' shared benchmark work that `user/bench.c`
/// includes (from `lib/`, found on the include path).
const DEMO_FILES: Files = demo_files!(
    "../lib/bench-work.h" as "bench-work.h",
    "README.md",
    "syscall.h",
    "kernel/apic.c",
    "kernel/console.c",
    "kernel/desc.c",
    "kernel/elf.c",
    "kernel/entry.S",
    "kernel/kalloc.c",
    "kernel/kernel.h",
    "kernel/kernel.ld",
    "kernel/main.c",
    "kernel/pic.c",
    "kernel/printf.c",
    "kernel/proc.c",
    "kernel/programs.S",
    "kernel/shell.c",
    "kernel/string.c",
    "kernel/syscall.c",
    "kernel/trap.c",
    "kernel/trapasm.S",
    "kernel/vm.c",
    "kernel/x86.h",
    "user/bench.c",
    "user/cat.c",
    "user/crt0.S",
    "user/fault.c",
    "user/hello.c",
    "user/pagefaults.c",
    "user/ports.c",
    "user/sleeper.c",
    "user/syscalls.c",
    "user/ulib.c",
    "user/user.h",
    "user/user.ld",
);

/// Files of `labs/$dir/`, `$path` relative to it.
macro_rules! lab_files {
    ($dir:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../labs/", $dir, "/", $path)))),*]
    };
}

const LABS: &[Lab] = &[
    Lab {
        number: 1,
        title: "A boot sector: real mode, BIOS services, print over COM1",
        page: "book/src/lab-1-boot-sector.md",
        build: Build::BootSector,
        base: &[],
        starter: lab_file!("01-boot-sector", "starter", "boot.S"),
        solution: lab_file!("01-boot-sector", "solution", "boot.S"),
        check: check_boot_sector,
    },
    Lab {
        number: 2,
        title: "Into protected mode: a GDT, a far jump, a segment limit and its #GP",
        page: "book/src/lab-2-protected-mode.md",
        build: Build::BootSector,
        base: &[],
        starter: lab_file!("02-protected-mode", "starter", "boot.S"),
        solution: lab_file!("02-protected-mode", "solution", "boot.S"),
        check: check_protected_mode,
    },
    Lab {
        number: 3,
        title: "Paging: page tables and a page fault handler that maps on demand",
        page: "book/src/lab-3-paging.md",
        build: Build::Kernel,
        base: &[],
        starter: kernel_files!("03-paging", "starter"),
        solution: kernel_files!("03-paging", "solution"),
        check: check_paging,
    },
    Lab {
        number: 4,
        title: "Interrupts: the 8259A PIC, the 8254 timer and an IDT, counting ticks",
        page: "book/src/lab-4-interrupts.md",
        build: Build::Kernel,
        base: &[],
        starter: kernel_files!("04-interrupts", "starter"),
        solution: kernel_files!("04-interrupts", "solution"),
        check: check_interrupts,
    },
    Lab {
        number: 5,
        title: "System calls and ring 3: two new system calls in the demo OS",
        page: "book/src/lab-5-system-call.md",
        build: Build::DemoOs {
            input: "run lab\nrun hello\npoweroff\n",
        },
        base: DEMO_FILES,
        starter: lab_files!("05-system-call/starter":
            "syscall.h.patch",
            "kernel/programs.S.patch",
            "kernel/syscall.c.patch",
            "user/user.h.patch",
            "user/ulib.c.patch",
            "user/lab.c",
        ),
        solution: lab_files!("05-system-call/solution":
            "kernel/kernel.h.patch",
            "kernel/syscall.c.patch",
            "user/ulib.c.patch",
        ),
        check: check_system_call,
    },
    Lab {
        number: 6,
        title: "Ring compression: the demo OS on raw mode, and its trap counters",
        page: "book/src/lab-6-raw-traps.md",
        build: Build::Answers(&[RAW_DEMO]),
        base: &[],
        starter: lab_file!("06-raw-traps", "starter", "answer.txt"),
        solution: lab_file!("06-raw-traps", "solution", "answer.txt"),
        check: check_raw_traps,
    },
    Lab {
        number: 7,
        title: "CSAM and PATM: which instructions get patched, and the traps it saves",
        page: "book/src/lab-7-csam-patm.md",
        build: Build::Answers(&[RAW_DEMO, RAW_DEMO_NO_PATM]),
        base: &[],
        starter: lab_file!("07-csam-patm", "starter", "answer.txt"),
        solution: lab_file!("07-csam-patm", "solution", "answer.txt"),
        check: check_csam_patm,
    },
    Lab {
        number: 8,
        title: "The recompiler: a block's Cranelift IR, chained translations, self-modifying code",
        page: "book/src/lab-8-recompiler.md",
        build: Build::Answers(&[
            Probe {
                command: "jit-dump --at 100000 builtin:bench-int-small",
                input: "",
            },
            Probe {
                command: "run builtin:bench-int-small --engine jit --clock fast --stats --set jit.background=false --set jit.threshold=50",
                input: "",
            },
            Probe {
                command: "run builtin:smc --engine jit --clock fast --stats --set jit.background=false --set jit.threshold=1",
                input: "",
            },
        ]),
        base: &[],
        starter: lab_file!("08-recompiler", "starter", "answer.txt"),
        solution: lab_file!("08-recompiler", "solution", "answer.txt"),
        check: check_recompiler,
    },
    Lab {
        number: 9,
        title: "Hardware virtualization: the KVM exits of a device-heavy guest",
        page: "book/src/lab-9-kvm-exits.md",
        build: Build::Answers(&[Probe {
            command: "run builtin:irq-pm --engine kvm --clock fast --stats",
            input: "",
        }]),
        base: &[],
        starter: lab_file!("09-kvm-exits", "starter", "answer.txt"),
        solution: lab_file!("09-kvm-exits", "solution", "answer.txt"),
        check: check_kvm_exits,
    },
    Lab {
        number: 10,
        title: "Write a device: a port device with an interrupt, unit-tested, used by a guest",
        page: "book/src/lab-10-device.md",
        build: Build::Crate,
        base: &[
            ("Cargo.lock", include_str!("../../Cargo.lock")),
            ("guest/start.S", RUNTIME[0].1),
            ("guest/runtime.c", RUNTIME[1].1),
            ("guest/lab.h", RUNTIME[2].1),
            ("guest/kernel.ld", RUNTIME[3].1),
        ],
        starter: lab_files!("10-device/starter":
            "Cargo.toml",
            "build.rs",
            "guest/hash.c",
            "src/lib.rs",
            "src/main.rs",
            "tests/ports.rs",
        ),
        solution: lab_files!("10-device/solution": "src/lib.rs.patch"),
        check: check_device,
    },
    Lab {
        number: 11,
        title: "Find the bug: an engine with one wrong flag rule, found with compare",
        page: "book/src/lab-11-find-the-bug.md",
        build: Build::Answers(&[Probe {
            command: "compare --engines interp,lab-broken builtin:bench-int --max-insns 50000000",
            input: "",
        }]),
        base: &[],
        starter: lab_file!("11-find-the-bug", "starter", "answer.txt"),
        solution: lab_file!("11-find-the-bug", "solution", "answer.txt"),
        check: check_find_the_bug,
    },
    Lab {
        number: 12,
        title: "Write an engine: a subset of IA-32 of your own, checked in lockstep",
        page: "book/src/lab-12-engine.md",
        build: Build::Crate,
        base: &[("Cargo.lock", include_str!("../../Cargo.lock"))],
        starter: lab_files!("12-engine/starter":
            "Cargo.toml",
            "src/lib.rs",
            "src/main.rs",
            "tests/engine.rs",
        ),
        solution: lab_files!("12-engine/solution": "src/lib.rs.patch"),
        check: check_engine,
    },
];

fn lab(number: u32) -> Result<&'static Lab> {
    match LABS.iter().find(|l| l.number == number) {
        Some(l) => Ok(l),
        None => bail!("no lab {number} (`ringside lab list` shows them)"),
    }
}

pub fn list() -> Result<i32> {
    for l in LABS {
        println!("{:>2}  {}", l.number, l.title);
        println!("    {}", l.page);
    }
    Ok(0)
}

/// A lab's files, starter or solution: the base, then the starter's
/// files and patches, then (for the solution) the solution's, each
/// replacing or patching what the one before made.
fn lab_files(l: &Lab, solution: bool) -> Result<Vec<(String, String)>> {
    let mut files: Vec<(String, String)> = l
        .base
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let layers: &[Files] = if solution {
        &[l.starter, l.solution]
    } else {
        &[l.starter]
    };
    for layer in layers {
        for (name, text) in layer.iter() {
            match name.strip_suffix(".patch") {
                Some(target) => {
                    let Some(file) = files.iter_mut().find(|(n, _)| n == target) else {
                        bail!(
                            "lab {}: {name} patches {target}, which it does not have",
                            l.number
                        );
                    };
                    let patch = diffy::Patch::from_str(text).with_context(|| {
                        format!("lab {}: {name} is not a unified diff", l.number)
                    })?;
                    file.1 = diffy::apply(&file.1, &patch).with_context(|| {
                        format!("lab {}: {name} does not apply to {target}", l.number)
                    })?;
                }
                None => match files.iter_mut().find(|(n, _)| n == name) {
                    Some(file) => file.1 = text.to_string(),
                    None => files.push((name.to_string(), text.to_string())),
                },
            }
        }
    }
    for (_, text) in files.iter_mut() {
        if text.contains(RINGSIDE_PLACEHOLDER) {
            *text = text.replace(RINGSIDE_PLACEHOLDER, RINGSIDE_SOURCE);
        }
    }
    Ok(files)
}

/// Where ringside's sources were when this binary was built: a crate
/// lab's `Cargo.toml` names ringside's crates there (`{{RINGSIDE}}` in
/// the lab's files).
const RINGSIDE_SOURCE: &str = env!("CARGO_MANIFEST_DIR");
const RINGSIDE_PLACEHOLDER: &str = "{{RINGSIDE}}";

/// Write `files` under `dir`, making the directories they are in.
fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Write lab `number`'s starter files into `dir`, refusing to replace a
/// file that exists there (it may be the student's work).
pub fn start(number: u32, dir: &Path) -> Result<i32> {
    let l = lab(number)?;
    let files = lab_files(l, false)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let taken: Vec<&str> = files
        .iter()
        .filter(|(name, _)| dir.join(name).exists())
        .map(|(name, _)| name.as_str())
        .collect();
    if !taken.is_empty() {
        bail!(
            "{} already has {}: not replaced (start the lab in an empty directory)",
            dir.display(),
            taken.join(", ")
        );
    }
    write_files(dir, &files)?;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let shown = if names.len() > 8 {
        format!("{} files ({}, ...)", names.len(), names[..4].join(", "))
    } else {
        names.join(", ")
    };
    println!(
        "lab {number}: {}\nthe starter files are in {}: {shown}\nthe steps are in {}; when you are done: ringside lab check {number} {}",
        l.title,
        dir.display(),
        l.page,
        dir.display()
    );
    Ok(0)
}

/// Build and run lab `number` from `dir` (or its reference solution),
/// and say what is right and what is not. Status 0 when it passes, 1
/// when it does not (or does not build).
pub fn check(number: u32, dir: Option<&Path>, solution: bool) -> Result<i32> {
    let l = lab(number)?;
    let work = scratch_dir(number)?;
    let source = match (dir, solution) {
        (_, true) => {
            let src = work.join("solution");
            write_files(&src, &lab_files(l, true)?)?;
            src
        }
        (Some(d), false) => d.to_path_buf(),
        (None, false) => bail!("lab check {number}: name the lab's directory, or --solution"),
    };
    let result = build_and_run(l, &source, &work);
    if let (Some(dir), false) = (dir, solution) {
        keep_image(&work, dir);
    }
    let _ = std::fs::remove_dir_all(&work);
    let run = match result? {
        Ok(run) => run,
        Err(build_error) => {
            println!("lab {number}: does not build yet\n{build_error}");
            println!("(the steps are in {})", l.page);
            return Ok(1);
        }
    };
    let problems = (l.check)(&run);
    let what = if solution {
        "the reference solution"
    } else {
        "your work"
    };
    if problems.is_empty() {
        println!("lab {number}: PASS ({what}): {}", l.title);
        Ok(0)
    } else {
        println!("lab {number}: not yet ({what}):");
        for p in &problems {
            println!("  - {p}");
        }
        println!("(the steps are in {})", l.page);
        Ok(1)
    }
}

/// What a check built, kept in `dir/build/` for the student to run or
/// debug (`ringside run lab5/build/demo.elf`); said when kept.
fn keep_image(work: &Path, dir: &Path) {
    for name in ["disk.img", "kernel.elf", "demo.elf"] {
        let built = work.join(name);
        if !built.is_file() {
            continue;
        }
        let kept = dir.join("build").join(name);
        let copied =
            std::fs::create_dir_all(dir.join("build")).and_then(|_| std::fs::copy(&built, &kept));
        match copied {
            Ok(_) => println!("built: {} (ringside run {0})", kept.display()),
            Err(e) => println!("(could not keep the image in {}: {e})", kept.display()),
        }
    }
}

/// An answers lab: the student's `answer.txt`, and what each of the
/// lab's probes printed (the run's status is the first probe's).
fn run_probes(me: &Path, probes: &[Probe], src: &Path) -> Result<std::result::Result<Run, String>> {
    let Ok(answers) = std::fs::read_to_string(src.join("answer.txt")) else {
        return Ok(Err(format!("{} has no answer.txt", src.display())));
    };
    let mut outs = Vec::new();
    let mut status = None;
    for probe in probes {
        let args: Vec<&str> = probe.command.split_whitespace().collect();
        let out = run_with_input(me, &args, probe.input)?;
        status = status.or(out.status.code());
        outs.push(ProbeOut::new(&out));
    }
    Ok(Ok(Run {
        status,
        com1: outs.first().map(|o| o.stdout.clone()).unwrap_or_default(),
        said: outs.first().map(|o| o.stderr.clone()).unwrap_or_default(),
        answers,
        probes: outs,
        stats: serde_json::Value::Null,
        tests: Vec::new(),
    }))
}

/// A crate lab: `cargo test`, then `cargo run`, of the crate the lab
/// gives with the student's `src/` in it (every file but `src/main.rs`,
/// which is given), offline, with ringside's lock file and one target
/// directory shared by every lab crate (`target/lab-crates` in ringside's
/// tree), so that ringside's crates are compiled once for all of them.
/// The given files — the tests the checker reads, `src/main.rs`,
/// `build.rs`, the guest — are the lab's own, not the student's copies.
fn run_crate(l: &Lab, src: &Path, work: &Path) -> Result<std::result::Result<Run, String>> {
    let root = Path::new(RINGSIDE_SOURCE);
    if !root.join("core/Cargo.toml").is_file() {
        return Ok(Err(format!(
            "this lab builds against ringside's source tree, which was at {} when this ringside was built and is not there now: run the lab with a ringside built from its sources",
            root.display()
        )));
    }
    if !src.join("src/lib.rs").is_file() {
        return Ok(Err(format!("{} has no src/lib.rs", src.display())));
    }
    let krate = work.join("crate");
    let given: Vec<(String, String)> = lab_files(l, false)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with("src/") || name == "src/main.rs")
        .collect();
    write_files(&krate, &given)?;
    copy_sources(&src.join("src"), &krate.join("src"))?;
    let manifest = krate.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_cmd = |verb: &str| {
        let mut c = Command::new(&cargo);
        c.arg(verb)
            .args(["--release", "--offline", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", root.join("target/lab-crates"))
            .env("RUST_BACKTRACE", "0");
        c
    };
    eprintln!(
        "building {} with cargo (a lab crate's first build compiles ringside's crates too: a minute or two)",
        src.display()
    );
    let test = match output_within(&mut cargo_cmd("test"), CARGO_TEST_LIMIT)? {
        Some(out) => out,
        None => {
            return Ok(Err(format!(
                "cargo test did not end within {} minutes: a test that never ends?",
                CARGO_TEST_LIMIT.as_secs() / 60
            )))
        }
    };
    let test_out = String::from_utf8_lossy(&test.stdout).into_owned();
    let test_err = String::from_utf8_lossy(&test.stderr).into_owned();
    if !test.status.success() && !test_out.contains("test result:") {
        return Ok(Err(format!("cargo test failed:\n{}", tail(&test_err, 60))));
    }
    let Some(out) = output_within(cargo_cmd("run").arg("--quiet"), CARGO_RUN_LIMIT)? else {
        return Ok(Err(format!(
            "cargo run did not end within {} minutes: an engine or device that never returns?",
            CARGO_RUN_LIMIT.as_secs() / 60
        )));
    };
    Ok(Ok(Run {
        status: out.status.code(),
        com1: String::from_utf8_lossy(&out.stdout).into_owned(),
        answers: String::new(),
        probes: Vec::new(),
        said: String::from_utf8_lossy(&out.stderr).into_owned(),
        stats: serde_json::Value::Null,
        tests: test_results(&test_out),
    }))
}

/// How long a crate lab's `cargo test` may take, its first build of
/// ringside's crates included, and its `cargo run`.
const CARGO_TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(20 * 60);
const CARGO_RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The student's sources under `from`, copied to `to`: every file and
/// directory but a top-level `main.rs` (the lab gives it).
fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let (path, name) = (entry.path(), entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_sources(&path, &to.join(&name))?;
        } else if name != "main.rs" || from.file_name() != Some("src".as_ref()) {
            std::fs::copy(&path, to.join(&name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// Run `cmd` to its end, collecting what it prints, or kill it and
/// everything it started (its own process group: cargo's test binaries
/// too) after `limit` (None).
fn output_within(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> Result<Option<std::process::Output>> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    fn read_all(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let (status, _, killed) =
        crate::child::wait_or_kill(&mut child, std::time::Instant::now(), true, limit)?;
    let output = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Ok((!killed).then_some(output))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `cargo test`'s verdicts: `test NAME ... ok|FAILED` lines, and for a
/// failed test the first lines of what it printed (its panic message),
/// from the `---- NAME stdout ----` section.
fn test_results(out: &str) -> Vec<(String, Option<String>)> {
    out.lines()
        .filter_map(|l| {
            let (name, verdict) = l.strip_prefix("test ")?.split_once(" ... ")?;
            match verdict.trim() {
                "ok" => Some((name.to_string(), None)),
                "FAILED" => {
                    let header = format!("---- {name} stdout ----");
                    let message = out
                        .lines()
                        .skip_while(|x| *x != header)
                        .skip(1)
                        .skip_while(|x| x.trim().is_empty())
                        .take_while(|x| !x.trim().is_empty() && !x.starts_with("stack backtrace"))
                        .filter(|x| !x.starts_with("note: "))
                        .map(|x| match x.find("panicked at ") {
                            Some(i) if x.starts_with("thread '") => &x[i..],
                            _ => x.trim(),
                        })
                        .take(4)
                        .collect::<Vec<_>>()
                        .join(" ");
                    Some((name.to_string(), Some(message)))
                }
                _ => None,
            }
        })
        .collect()
}

/// Run this binary with `args`, `input` on its stdin.
fn run_with_input(me: &Path, args: &[&str], input: &str) -> Result<std::process::Output> {
    output_with_input(Command::new(me).args(args), input)
}

/// Run `cmd` to its end with `input` on its stdin (and nothing more),
/// collecting what it prints.
fn output_with_input(cmd: &mut Command, input: &str) -> Result<std::process::Output> {
    use std::io::Write;
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let what = || format!("ringside {}", args.join(" "));
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", what()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A guest that stops before reading it all closes the pipe early.
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().with_context(what)
}

fn scratch_dir(number: u32) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ringside-lab{number}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Run a build tool; Err(its output) when it fails.
fn tool(cmd: &mut Command) -> Result<std::result::Result<(), String>> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {name} (gcc and binutils are needed)"))?;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "{name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Build the demo OS in `src` into `work` as `build.rs` builds the
/// built-in one (its flags, less -Werror: a student's warning is shown,
/// not fatal), with the user programs `kernel/programs.S` lists; the
/// kernel's path, or Err(what the compiler or linker said).
fn build_demo(src: &Path, work: &Path) -> Result<std::result::Result<PathBuf, String>> {
    use ringside_guests::build_flags::{
        CFLAGS, DEMO_KERNEL, DEMO_PROGRAMS, DEMO_USER_LIB, LDFLAGS,
    };
    let compile = |source: &Path, out: &Path, includes: &[&Path], defines: &[&str]| {
        let mut cc = Command::new("cc");
        cc.args(CFLAGS.iter().filter(|f| **f != "-Werror"));
        for dir in includes {
            cc.arg("-I").arg(dir);
        }
        for d in defines {
            cc.arg(format!("-D{d}"));
        }
        cc.arg("-c").arg(source).arg("-o").arg(out);
        tool(&mut cc)
    };
    let link = |objects: &[PathBuf], script: &Path, out: &Path| {
        tool(
            Command::new("ld")
                .args(LDFLAGS)
                .arg("-T")
                .arg(script)
                .arg("-o")
                .arg(out)
                .args(objects),
        )
    };
    let programs_s = src.join("kernel/programs.S");
    let Ok(listing) = std::fs::read_to_string(&programs_s) else {
        return Ok(Err(format!("{} is missing", programs_s.display())));
    };
    let programs = work.join("programs");
    let objects = work.join("objects");
    std::fs::create_dir_all(&programs)?;
    std::fs::create_dir_all(&objects)?;
    let mut user_lib = Vec::new();
    for f in DEMO_USER_LIB {
        let obj = objects.join(format!("user-{f}.o"));
        if let Err(e) = compile(&src.join("user").join(f), &obj, &[src], &[])? {
            return Ok(Err(e));
        }
        user_lib.push(obj);
    }
    // Each `PROGRAM name` line: the demo's own programs as build.rs
    // builds them, any other from user/NAME.c.
    for name in listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PROGRAM "))
        .map(str::trim)
    {
        let (source, defines) = DEMO_PROGRAMS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, source, defines)| (source.to_string(), *defines))
            .unwrap_or((format!("{name}.c"), &[]));
        let obj = objects.join(format!("program-{name}.o"));
        if let Err(e) = compile(&src.join("user").join(&source), &obj, &[src], defines)? {
            return Ok(Err(e));
        }
        let mut all = user_lib.clone();
        all.push(obj);
        let elf = programs.join(format!("{name}.elf"));
        if let Err(e) = link(&all, &src.join("user/user.ld"), &elf)? {
            return Ok(Err(e));
        }
    }
    let mut kernel_objects = Vec::new();
    for f in DEMO_KERNEL {
        let obj = objects.join(format!("kernel-{f}.o"));
        if let Err(e) = compile(&src.join("kernel").join(f), &obj, &[src, &programs], &[])? {
            return Ok(Err(e));
        }
        kernel_objects.push(obj);
    }
    let kernel = work.join("demo.elf");
    if let Err(e) = link(&kernel_objects, &src.join("kernel/kernel.ld"), &kernel)? {
        return Ok(Err(e));
    }
    Ok(Ok(kernel))
}

/// Build the work in `src` into `work` and run it. The inner Err is a
/// build failure, told to the student; the outer one a failure of
/// ringside or of the host.
fn build_and_run(l: &Lab, src: &Path, work: &Path) -> Result<std::result::Result<Run, String>> {
    let me = std::env::current_exe().context("cannot find the ringside binary")?;
    let stats = work.join("stats.json");
    let stats_arg = stats.display().to_string();
    let mut run = Command::new(&me);
    run.args(["run", "--clock", "fast", "--no-reboot"]);
    // What is typed at the guest (its COM1 input).
    let mut input = "";
    match l.build {
        Build::BootSector => {
            let boot = src.join("boot.S");
            if !boot.is_file() {
                return Ok(Err(format!("{} has no boot.S", src.display())));
            }
            let obj = work.join("boot.o");
            let bin = work.join("boot.bin");
            if let Err(e) = tool(
                Command::new("cc")
                    .arg("-m32")
                    .arg("-c")
                    .arg(&boot)
                    .arg("-o")
                    .arg(&obj),
            )? {
                return Ok(Err(e));
            }
            if let Err(e) = tool(
                Command::new("ld")
                    .args([
                        "-m",
                        "elf_i386",
                        "-Ttext",
                        "0x7c00",
                        "-e",
                        "_start",
                        "--oformat",
                        "binary",
                        "-o",
                    ])
                    .arg(&bin)
                    .arg(&obj),
            )? {
                return Ok(Err(e));
            }
            let sector = std::fs::read(&bin)?;
            if sector.len() != 512 || sector[510..] != [0x55, 0xAA] {
                return Ok(Err(format!(
                    "boot.S assembles to {} bytes; a boot sector is exactly 512, ending in 55 AA (keep `.org 510` and `.word 0xaa55` last)",
                    sector.len()
                )));
            }
            let mut disk = sector;
            disk.resize(64 * 512, 0);
            let img = work.join("disk.img");
            std::fs::write(&img, disk)?;
            run.arg("--disk")
                .arg(format!("{},snapshot", img.display()))
                .args(["--max-insns", "20000000"]);
        }
        Build::Answers(probes) => return run_probes(&me, probes, src),
        Build::Crate => return run_crate(l, src, work),
        Build::DemoOs { input: typed } => {
            let kernel = match build_demo(src, work)? {
                Ok(kernel) => kernel,
                Err(e) => return Ok(Err(e)),
            };
            input = typed;
            run.arg(&kernel).args(["--max-insns", "300000000"]);
        }
        Build::Kernel => {
            let mut objects = Vec::new();
            let mut sources: Vec<PathBuf> = std::fs::read_dir(src)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("c" | "S")))
                .collect();
            sources.sort();
            for s in &sources {
                let obj = work.join(format!(
                    "{}.o",
                    s.file_name().unwrap_or_default().to_string_lossy()
                ));
                let mut cc = Command::new("cc");
                cc.args([
                    "-m32",
                    "-ffreestanding",
                    "-nostdlib",
                    "-fno-pie",
                    "-fno-stack-protector",
                ])
                .args(["-fno-asynchronous-unwind-tables", "-O1", "-Wall", "-c"])
                .arg(s)
                .arg("-I")
                .arg(src)
                .arg("-o")
                .arg(&obj);
                if let Err(e) = tool(&mut cc)? {
                    return Ok(Err(e));
                }
                objects.push(obj);
            }
            let elf = work.join("kernel.elf");
            if let Err(e) = tool(
                Command::new("ld")
                    .args(["-m", "elf_i386", "--no-warn-rwx-segments", "-T"])
                    .arg(src.join("kernel.ld"))
                    .arg("-o")
                    .arg(&elf)
                    .args(&objects),
            )? {
                return Ok(Err(e));
            }
            run.arg(&elf).args(["--max-insns", "50000000"]);
        }
    }
    run.args(["--stats-json", &stats_arg]);
    let out = output_with_input(&mut run, input)?;
    let stats = std::fs::read(&stats)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Ok(Run {
        status: out.status.code(),
        com1: String::from_utf8_lossy(&out.stdout).into_owned(),
        answers: String::new(),
        probes: Vec::new(),
        said: String::from_utf8_lossy(&out.stderr).into_owned(),
        stats,
        tests: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_5_starts_from_every_file_of_the_demo_os() {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testsuites/guests/demo");
        for dir in ["kernel", "user"] {
            for entry in std::fs::read_dir(demo.join(dir)).unwrap() {
                let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
                assert!(
                    DEMO_FILES.iter().any(|(n, _)| *n == name),
                    "{name} is not in DEMO_FILES"
                );
            }
        }
    }

    #[test]
    fn every_labs_patches_apply_and_a_solution_differs_from_its_starter() {
        for l in LABS {
            let starter = lab_files(l, false).unwrap();
            let solution = lab_files(l, true).unwrap();
            assert!(!starter.is_empty(), "lab {}", l.number);
            assert_ne!(starter, solution, "lab {}", l.number);
            assert!(
                starter.iter().all(|(n, _)| !n.ends_with(".patch")),
                "lab {}: a patch was written as a file",
                l.number
            );
        }
    }
}
