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
    starter: &'static [(&'static str, &'static str)],
    solution: &'static [(&'static str, &'static str)],
    check: fn(&Run) -> Verdict,
}

/// The files every kernel lab gets: given, not to be changed.
const RUNTIME: [(&str, &str); 4] = [
    ("start.S", include_str!("../labs/runtime/start.S")),
    ("runtime.c", include_str!("../labs/runtime/runtime.c")),
    ("lab.h", include_str!("../labs/runtime/lab.h")),
    ("kernel.ld", include_str!("../labs/runtime/kernel.ld")),
];

/// A lab's one file `$name`, from `labs/$dir/$side/` (starter or
/// solution).
macro_rules! lab_file {
    ($dir:literal, $side:literal, $name:literal) => {
        &[(
            $name,
            include_str!(concat!("../labs/", $dir, "/", $side, "/", $name)),
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
                include_str!(concat!("../labs/", $dir, "/", $side, "/kernel.c")),
            ),
        ]
    };
}

const LABS: &[Lab] = &[
    Lab {
        number: 1,
        title: "A boot sector: real mode, BIOS services, print over COM1",
        page: "book/src/lab-1-boot-sector.md",
        build: Build::BootSector,
        starter: lab_file!("01-boot-sector", "starter", "boot.S"),
        solution: lab_file!("01-boot-sector", "solution", "boot.S"),
        check: check_boot_sector,
    },
    Lab {
        number: 2,
        title: "Into protected mode: a GDT, a far jump, a segment limit and its #GP",
        page: "book/src/lab-2-protected-mode.md",
        build: Build::BootSector,
        starter: lab_file!("02-protected-mode", "starter", "boot.S"),
        solution: lab_file!("02-protected-mode", "solution", "boot.S"),
        check: check_protected_mode,
    },
    Lab {
        number: 3,
        title: "Paging: page tables and a page fault handler that maps on demand",
        page: "book/src/lab-3-paging.md",
        build: Build::Kernel,
        starter: kernel_files!("03-paging", "starter"),
        solution: kernel_files!("03-paging", "solution"),
        check: check_paging,
    },
    Lab {
        number: 4,
        title: "Interrupts: the 8259A PIC, the 8254 timer and an IDT, counting ticks",
        page: "book/src/lab-4-interrupts.md",
        build: Build::Kernel,
        starter: kernel_files!("04-interrupts", "starter"),
        solution: kernel_files!("04-interrupts", "solution"),
        check: check_interrupts,
    },
    Lab {
        number: 6,
        title: "Ring compression: the demo OS on raw mode, and its trap counters",
        page: "book/src/lab-6-raw-traps.md",
        build: Build::Answers(&[RAW_DEMO]),
        starter: lab_file!("06-raw-traps", "starter", "answer.txt"),
        solution: lab_file!("06-raw-traps", "solution", "answer.txt"),
        check: check_raw_traps,
    },
    Lab {
        number: 7,
        title: "CSAM and PATM: which instructions get patched, and the traps it saves",
        page: "book/src/lab-7-csam-patm.md",
        build: Build::Answers(&[RAW_DEMO, RAW_DEMO_NO_PATM]),
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
        starter: lab_file!("09-kvm-exits", "starter", "answer.txt"),
        solution: lab_file!("09-kvm-exits", "solution", "answer.txt"),
        check: check_kvm_exits,
    },
    Lab {
        number: 11,
        title: "Find the bug: an engine with one wrong flag rule, found with compare",
        page: "book/src/lab-11-find-the-bug.md",
        build: Build::Answers(&[Probe {
            command: "compare --engines interp,lab-broken builtin:bench-int --max-insns 50000000",
            input: "",
        }]),
        starter: lab_file!("11-find-the-bug", "starter", "answer.txt"),
        solution: lab_file!("11-find-the-bug", "solution", "answer.txt"),
        check: check_find_the_bug,
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

/// Write lab `number`'s starter files into `dir`, refusing to replace a
/// file that exists there (it may be the student's work).
pub fn start(number: u32, dir: &Path) -> Result<i32> {
    let l = lab(number)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let taken: Vec<String> = l
        .starter
        .iter()
        .filter(|(name, _)| dir.join(name).exists())
        .map(|(name, _)| name.to_string())
        .collect();
    if !taken.is_empty() {
        bail!(
            "{} already has {}: not replaced (start the lab in an empty directory)",
            dir.display(),
            taken.join(", ")
        );
    }
    for (name, text) in l.starter {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    }
    println!(
        "lab {number}: {}\nthe starter files are in {}: {}\nthe steps are in {}; when you are done: ringside lab check {number} {}",
        l.title,
        dir.display(),
        l.starter.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
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
            std::fs::create_dir_all(&src)?;
            for (name, text) in l.solution {
                std::fs::write(src.join(name), text)?;
            }
            src
        }
        (Some(d), false) => d.to_path_buf(),
        (None, false) => bail!("lab check {number}: name the lab's directory, or --solution"),
    };
    let result = build_and_run(l, &source, &work);
    let _ = std::fs::remove_dir_all(&work);
    let run = match result? {
        Ok(run) => run,
        Err(build_error) => {
            println!("lab {number}: does not build yet\n{build_error}");
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
    }))
}

/// Run this binary with `args`, `input` on its stdin.
fn run_with_input(me: &Path, args: &[&str], input: &str) -> Result<std::process::Output> {
    use std::io::Write;
    let mut child = Command::new(me)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run ringside {}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A guest that stops before reading it all closes the pipe early.
        let _ = stdin.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .with_context(|| format!("ringside {}", args.join(" ")))
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

/// Build the work in `src` into `work` and run it. The inner Err is a
/// build failure, told to the student; the outer one a failure of
/// ringside or of the host.
fn build_and_run(l: &Lab, src: &Path, work: &Path) -> Result<std::result::Result<Run, String>> {
    let me = std::env::current_exe().context("cannot find the ringside binary")?;
    let stats = work.join("stats.json");
    let stats_arg = stats.display().to_string();
    let mut run = Command::new(&me);
    run.args(["run", "--clock", "fast", "--no-reboot"]);
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
    let out = run
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run ringside")?;
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
    }))
}

/// What every lab says about a run that ended the wrong way.
fn ending(run: &Run, wanted: i32, problems: &mut Verdict) {
    match run.status {
        Some(s) if s == wanted => {}
        Some(124) => problems.push(
            "the guest was still running after the instruction limit: a loop that never ends?".into(),
        ),
        Some(125) => problems.push(format!(
            "the CPU shut down (a triple fault: an exception with no working handler). ringside said: {}",
            run.said.trim()
        )),
        Some(s) => problems.push(format!(
            "the run ended with status {s}, not {wanted}. ringside said: {}",
            run.said.trim()
        )),
        None => problems.push("ringside ended by a signal".into()),
    }
}

fn check_boot_sector(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("Hello from my boot sector!") {
        p.push(
            "COM1 did not show \"Hello from my boot sector!\": print each character of the message with INT 10h, AH = 0Eh (ringside's BIOS copies the screen's teletype output to COM1)"
                .into(),
        );
    }
    ending(run, 0, &mut p);
    p
}

fn check_protected_mode(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if run.status == Some(1) {
        p.push("the run ended with status 1: the lines that end it while TODO 2 is not done are still there".into());
        return p;
    }
    if !run.com1.contains("protected mode!") {
        p.push("COM1 did not show \"protected mode!\": the 32-bit code did not run (check the GDT's code descriptor, CR0.PE and the far jump)".into());
    }
    if !run.com1.contains("#GP, error code 0") {
        p.push("the #GP handler did not report the limit violation: check the IDT gate for vector 13 (present, interrupt gate, CODE:gp_handler) and the 4 KiB data segment at 18h".into());
    }
    ending(run, 13, &mut p);
    p
}

fn check_paging(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("page faults: 8\n") {
        p.push(format!(
            "the kernel counted {} page faults, not 8: each of the 8 pages at DEMAND must fault once (paging on, their entries not present at first) and be mapped by the handler",
            run.com1
                .lines()
                .find_map(|l| l.strip_prefix("page faults: "))
                .unwrap_or("no")
        ));
    }
    if !run.com1.contains("sum: 36\n") {
        p.push("the sum of the values read back is not 36: a page that was written must be there when read (map each page to its own frame)".into());
    }
    // The kernel's own count must be the CPU's: ringside counted the
    // exceptions it delivered.
    let delivered = run.counter("exceptions");
    if delivered != 8 {
        p.push(format!(
            "ringside delivered {delivered} exceptions, not 8 (one #PF per page): see them with `ringside debug` and `catch vector 14`"
        ));
    }
    ending(run, 0, &mut p);
    p
}

fn check_interrupts(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("ticks: 50\n") {
        p.push(if run.said.contains("no device in this machine raises one") {
            "the CPU halted with nothing to wake it: the PIT is not programmed, or IRQ 0 is masked at the PIC".into()
        } else {
            "COM1 did not show \"ticks: 50\": count a tick in timer_interrupt and send the PIC an end-of-interrupt".into()
        });
    }
    let delivered = run.counter("interrupts");
    if delivered < 50 {
        p.push(format!(
            "ringside delivered {delivered} interrupts; 50 timer ticks need at least 50"
        ));
    }
    ending(run, 0, &mut p);
    p
}

/// `key: value` from an answers file (comments and blanks skipped; the
/// value trimmed; `?` counts as no answer).
fn answer<'a>(answers: &'a str, key: &str) -> Option<&'a str> {
    answers
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && *v != "?")
}

fn check_find_the_bug(run: &Run) -> Verdict {
    let mut p = Vec::new();
    // The truth, from the comparator's own report.
    let report = &run.com1;
    let first = report.lines().next().unwrap_or("");
    let Some(after) = first
        .strip_prefix("divergence after ")
        .and_then(|r| r.split_whitespace().next())
    else {
        p.push(format!(
            "ringside compare did not report a divergence (status {:?}): {}{}",
            run.status, report, run.said
        ));
        return p;
    };
    // "... at 0008:001020a6  42  inc edx": the mnemonic after the bytes.
    let mnemonic = first
        .split("  ")
        .nth(2)
        .and_then(|d| d.split_whitespace().next())
        .unwrap_or("");
    let flags: Vec<String> = report
        .lines()
        .find_map(|l| l.strip_prefix("* eflags"))
        .map(|v| {
            let vals: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| u32::from_str_radix(x, 16).ok())
                .collect();
            match vals.as_slice() {
                [a, b] => ringside_debugger::inspect::flag_names(a ^ b)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        })
        .unwrap_or_default();
    let given = |key| answer(&run.answers, key);
    match given("instruction") {
        None => p.push("instruction: run the compare the file names and copy the number after \"divergence after\"".into()),
        Some(n) if n.replace(',', "") != after => p.push(format!(
            "instruction: {n} is not where the engines part (run the compare again, on builtin:bench-int)"
        )),
        Some(_) => {}
    }
    match given("mnemonic") {
        None => p.push(
            "mnemonic: the instruction's name is at the end of the report's first line".into(),
        ),
        Some(m) if !m.eq_ignore_ascii_case(mnemonic) => p.push(format!(
            "mnemonic: {m} is not the instruction at the divergence"
        )),
        Some(_) => {}
    }
    match given("flag") {
        None => p.push("flag: compare the two EFLAGS values the report shows, bit by bit (CF is bit 0, PF 2, AF 4, ZF 6, SF 7, OF 11)".into()),
        Some(f) if !flags.iter().any(|x| x.eq_ignore_ascii_case(f)) => p.push(format!(
            "flag: {f} is not a flag the two engines disagree on"
        )),
        Some(_) => {}
    }
    if given("rule").is_none() {
        p.push("rule: say which rule of the manual the broken engine breaks (the instruction's \"Flags Affected\" in SDM Vol. 2)".into());
    }
    p
}

/// An answer that must be the number `truth` (None: the probe did not
/// report it, which is ringside's failure, said as such).
fn numeric_answer(run: &Run, key: &str, truth: Option<u64>, hint: &str, p: &mut Verdict) {
    let Some(truth) = truth else {
        p.push(format!(
            "{key}: ringside did not report this counter; its output: {}",
            run.said.trim()
        ));
        return;
    };
    match answer(&run.answers, key) {
        None => p.push(format!("{key}: {hint}")),
        Some(v) if v.replace(',', "").parse::<u64>() != Ok(truth) => {
            p.push(format!("{key}: {v} is not what the run shows; {hint}"))
        }
        Some(_) => {}
    }
}

/// An answer in words: present, and a sentence (not a word or two).
fn sentence_answer(run: &Run, key: &str, hint: &str, p: &mut Verdict) {
    match answer(&run.answers, key) {
        Some(v) if v.split_whitespace().count() >= 6 => {}
        _ => p.push(format!("{key}: {hint}")),
    }
}

fn check_raw_traps(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let Some(raw) = run.probes.first() else {
        return vec!["the run on raw mode did not happen".into()];
    };
    let hint = "read it from the counters of the run the file names";
    numeric_answer(
        run,
        "gp_traps",
        raw.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "out_emulated",
        raw.counter("raw.emulated.out"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "in_emulated",
        raw.counter("raw.emulated.in"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "substrate_instructions",
        raw.counter("raw.substrate_instructions"),
        hint,
        &mut p,
    );
    sentence_answer(
        run,
        "why",
        "explain in a sentence, with the CPL the kernel runs at under raw mode and the IOPL (the book's chapter on raw mode, SDM Vol. 1 19.5)",
        &mut p,
    );
    p
}

fn check_csam_patm(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let [with, without] = run.probes.as_slice() else {
        return vec!["the two runs on raw mode did not happen".into()];
    };
    let hint = "read it from the counters of the runs the file names";
    numeric_answer(
        run,
        "gp_traps_with_patm",
        with.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "gp_traps_without_patm",
        without.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "site_traps_without_patm",
        without.counter("raw.site_traps"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "live_patches",
        with.counter("raw.patm_live_patches"),
        hint,
        &mut p,
    );
    // The kind with the most installed patches.
    let most = with.stats["counters"].as_object().and_then(|c| {
        c.iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("raw.patm_installed.jump.")?, v.as_u64()?)))
            .max_by_key(|&(_, n)| n)
            .map(|(k, _)| k.to_string())
    });
    match (answer(&run.answers, "most_patched"), most) {
        (_, None) => p.push("most_patched: ringside reported no patches".into()),
        (None, Some(_)) => {
            p.push("most_patched: look at the raw.patm_installed.jump.* counters".into())
        }
        (Some(v), Some(m)) if !v.eq_ignore_ascii_case(&m) => p.push(format!(
            "most_patched: {v} is not the kind with the most patches"
        )),
        _ => {}
    }
    sentence_answer(
        run,
        "why",
        "explain in a sentence what a patch can do in place that the monitor must do for OUT and IN",
        &mut p,
    );
    p
}

fn check_recompiler(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let [dump, bench, smc] = run.probes.as_slice() else {
        return vec!["the three runs the lab names did not happen".into()];
    };
    // The guest block: the lines between the header and the blank line.
    let guest = dump
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("; guest block"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .count() as u64;
    let in_dump = (guest > 0).then_some(guest);
    numeric_answer(
        run,
        "guest_instructions",
        in_dump,
        "count the guest instructions jit-dump lists above the IR",
        &mut p,
    );
    // An opcode of the IR ("= ushr.i32 v1, v2"), the type suffix off.
    let opcodes: Vec<&str> = dump
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" = ")?.1.split_whitespace().next())
        .map(|op| op.split('.').next().unwrap_or(op))
        .collect();
    match answer(&run.answers, "shr_becomes") {
        Some(op) if op.starts_with("ushr") && opcodes.contains(&op) => {}
        Some(op) if !opcodes.contains(&op) => p.push(format!(
            "shr_becomes: {op} does not appear in the block's IR"
        )),
        Some(op) => p.push(format!(
            "shr_becomes: {op} is in the IR, but it is not what a logical shift right becomes"
        )),
        None => p.push(
            "shr_becomes: find the IR instruction that shifts right without the sign (Cranelift's opcode list: ushr, sshr...)".into(),
        ),
    }
    let hint = "read it from the --stats counters of the run the file names";
    numeric_answer(
        run,
        "compiled_regions",
        bench.counter("compiled_blocks"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "chained_transitions",
        bench.counter("chained_translations"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "native_instructions",
        bench.counter("native_instructions"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "smc_invalidated",
        smc.counter("translations_invalidated"),
        hint,
        &mut p,
    );
    sentence_answer(
        run,
        "why",
        "explain in a sentence why a translation goes stale and how a write to its code is noticed (the recompiler's chapter, \"Code that writes code\")",
        &mut p,
    );
    p
}

fn check_kvm_exits(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let Some(kvm) = run.probes.first() else {
        return vec!["the run on kvm did not happen".into()];
    };
    if run.status != Some(0) {
        return vec![format!(
            "this host cannot run the lab's guest on kvm (ringside engines says what its KVM runs); do this lab on a host with KVM. ringside said: {}",
            kvm.stderr.trim()
        )];
    }
    let hint = "read it from the --stats counters of the run the file names";
    numeric_answer(run, "io_exits", kvm.counter("exits_io"), hint, &mut p);
    numeric_answer(run, "hlt_exits", kvm.counter("exits_hlt"), hint, &mut p);
    numeric_answer(
        run,
        "injected",
        kvm.counter("interrupts_injected"),
        hint,
        &mut p,
    );
    match answer(&run.answers, "varies") {
        Some(v) if v.trim() == "exits_kick" => {}
        Some(v) => p.push(format!(
            "varies: {v} is the same in every run; run the command a few times and compare each exits_* counter"
        )),
        None => p.push("varies: run the command a few times and compare each exits_* counter".into()),
    }
    sentence_answer(
        run,
        "why",
        "explain in a sentence what that exit is for and why its count depends on the host (the chapter \"Hardware virtualization\")",
        &mut p,
    );
    p
}
