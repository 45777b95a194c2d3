//! `ringside bench`: the built-in workloads on each engine and on peer
//! emulators, as a table, a JSON record and bar charts (docs/bench.md).
//!
//! Every measurement is a child process — `ringside run builtin:NAME
//! --clock fast --stats-json FILE` for an engine, `qemu-system-i386
//! -kernel` (or `-drive` for a disk) for the QEMU peer, `bochs` on a
//! pseudo-terminal for the Bochs peer — so each run starts from nothing, and its
//! CPU time is the child's own (getrusage RUSAGE_CHILDREN around one
//! wait). Within a repetition of a workload every engine and peer runs
//! once, one after the other, so that the machine's drift between
//! repetitions falls on all of them alike and cancels in the ratios.

mod bochs;
mod plot;

use crate::child::wait_or_kill;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

#[derive(Args)]
pub struct BenchArgs {
    /// Engines, comma-separated: interp, jit, raw, kvm (default: every
    /// engine this host can run).
    #[arg(long, value_name = "LIST")]
    engines: Option<String>,
    /// Workloads, comma-separated (default: all but bench-int-small; with
    /// --quick: bench-int-small, demo-session and two nanobenchmarks).
    #[arg(long, value_name = "LIST")]
    workloads: Option<String>,
    /// Repetitions of every run.
    #[arg(long, value_name = "N", default_value_t = 3)]
    reps: u32,
    /// Peer emulators run on the same images: qemu, bochs.
    #[arg(long, value_name = "LIST")]
    peers: Option<String>,
    /// Write every run and the summaries as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw M instructions/s per workload to FILE.svg and the
    /// nanobenchmarks' ns per operation to FILE-nano.svg.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// A CI-sized run: the short workload set, 10000 nanobenchmark
    /// iterations.
    #[arg(long)]
    quick: bool,
    /// Iterations of each nanobenchmark operation (default 1000000, 10000
    /// with --quick).
    #[arg(long, value_name = "N")]
    iters: Option<u32>,
}

/// The nanobench guest's operations, in the order it runs them
/// (testsuites/guests/src-guests/nanobench.c).
const NANO_OPS: &[&str] = &[
    "syscall-int80",
    "syscall-sysenter",
    "in",
    "tpr",
    "call-ret",
    "pagefault",
    "divzero",
    "ptemod",
    "cli-sti",
    "pushf-popf",
];

/// The demo OS's scripted session: boot to the prompt, list, run two
/// programs (one of them 100000 system calls), power off.
const DEMO_SESSION: &[u8] = b"help\nps\nrun hello\nrun syscalls\npoweroff\n";

/// The demo OS's process-heavy session. The shell has no command that
/// spawns many processes, so this runs every program that exercises the
/// kernel: eight spawns (three in the background), 100000 getpid()
/// calls, 4096 demand-zero page faults, 100000 OUTs trapped by the I/O
/// bitmap, and a process killed by a protection fault. (`sleeper` is
/// left out: under QEMU it would sleep in real time.)
const DEMO_PROCESSES: &[u8] = b"run hello\nrun hello &\nrun hello &\nrun hello &\nrun syscalls\nrun pagefaults\nrun ports\nrun fault\nrun hello\nps\npoweroff\n";

const DEFAULT_NANO_ITERS: u32 = 1_000_000;
const QUICK_NANO_ITERS: u32 = 10_000;
/// A run that outlives this is killed and recorded as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// One workload: a built-in guest, its command line and input.
struct Workload {
    name: String,
    guest: &'static str,
    cmdline: Option<String>,
    script: &'static [u8],
    /// Nanobench: the operation, whose `nanobench: OP ops=N insns=I`
    /// line the run must print, and N.
    nano: Option<(&'static str, u32)>,
    /// The guest turns paging on (this host's KVM may not run it).
    paged: bool,
    /// `guest` is a disk image booted through the BIOS (`builtin:NAME`
    /// of ringside's disks), not a Multiboot kernel.
    disk: bool,
    about: String,
}

fn workload(name: &str, iters: u32) -> Option<Workload> {
    let plain = |guest, script, about: &str| Workload {
        name: name.to_owned(),
        guest,
        cmdline: None,
        script,
        nano: None,
        paged: true,
        disk: false,
        about: about.to_owned(),
    };
    let disk = |guest, about: &str| Workload {
        disk: true,
        ..plain(guest, b"", about)
    };
    Some(match name {
        "bench-int" => plain("bench-int", b"", "integer benchmark, paging on"),
        "bench-int-small" => plain("bench-int-small", b"", "bench-int with 1/100 of the work"),
        "bench-int-disk" => disk(
            "bench-int-disk",
            "bench-int booted from a disk through the BIOS (what Bochs runs)",
        ),
        "bench-int-small-disk" => disk(
            "bench-int-small-disk",
            "bench-int-small booted from a disk through the BIOS",
        ),
        "demo-session" => plain(
            "demo",
            DEMO_SESSION,
            "demo OS: boot, help, ps, run hello, run syscalls, poweroff",
        ),
        "demo-processes" => plain(
            "demo",
            DEMO_PROCESSES,
            "demo OS: 8 spawns, syscalls, 4096 page faults, ports, a killed process",
        ),
        _ => {
            // nano-OP, or nano-OP-unpaged: the guest with `paging=off`,
            // which a KVM that runs only unpaged protected mode runs.
            let rest = name.strip_prefix("nano-")?;
            let (op_name, paged) = match rest.strip_suffix("-unpaged") {
                Some(op) => (op, false),
                None => (rest, true),
            };
            let op = NANO_OPS.iter().find(|op| **op == op_name)?;
            // These two need page tables: the guest refuses them unpaged.
            if !paged && matches!(*op, "pagefault" | "ptemod") {
                return None;
            }
            let paging = if paged { "" } else { " paging=off" };
            Workload {
                name: name.to_owned(),
                guest: "nanobench",
                cmdline: Some(format!("ops={op} iters={iters}{paging}")),
                script: b"",
                nano: Some((op, iters)),
                paged,
                disk: false,
                about: format!("nanobench {op}, {iters} iterations{paging}"),
            }
        }
    })
}

fn all_workload_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "bench-int",
        "bench-int-disk",
        "demo-session",
        "demo-processes",
    ]
    .map(String::from)
    .to_vec();
    names.extend(NANO_OPS.iter().map(|op| format!("nano-{op}")));
    names
}

/// What runs a workload: one of ringside's engines, or a peer emulator.
#[derive(Clone, Debug, PartialEq)]
enum Runner {
    Engine(String),
    Qemu,
    Bochs,
}

impl Runner {
    fn name(&self) -> &str {
        match self {
            Runner::Engine(e) => e,
            Runner::Qemu => "qemu",
            Runner::Bochs => "bochs",
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Runner::Engine(_) => "engine",
            Runner::Qemu | Runner::Bochs => "peer",
        }
    }
}

/// The engines and peers that run, and the reasons for those that don't.
struct Plan {
    runners: Vec<Runner>,
    /// (name, reason) for every engine or peer asked for that is skipped.
    skipped: Vec<(String, String)>,
    /// When KVM runs here but not paged guests: why.
    kvm_no_paging: Option<String>,
    qemu_version: Option<String>,
    bochs_version: Option<String>,
}

fn plan(args: &BenchArgs) -> Result<Plan> {
    let mut plan = Plan {
        runners: Vec::new(),
        skipped: Vec::new(),
        kvm_no_paging: None,
        qemu_version: None,
        bochs_version: None,
    };
    let asked: Vec<String> = match &args.engines {
        Some(list) => split_list(list),
        None => ["interp", "jit", "raw", "kvm"].map(String::from).to_vec(),
    };
    for engine in asked {
        match engine.as_str() {
            // raw-nopatm: raw mode with `raw.patm = false`, to show what
            // patching saves.
            "interp" | "jit" | "raw" | "raw-nopatm" => plan.runners.push(Runner::Engine(engine)),
            "kvm" => {
                let probe = ringside_kvm::probe();
                if !probe.available.ok {
                    let reason = format!("not available: {}", probe.available.reason);
                    plan.skipped.push((engine, reason));
                    continue;
                }
                if !probe.paging.ok {
                    plan.kvm_no_paging = Some(probe.paging.reason);
                }
                plan.runners.push(Runner::Engine(engine));
            }
            other => {
                bail!("--engines: unknown engine '{other}' (interp, jit, raw, raw-nopatm, kvm)")
            }
        }
    }
    for peer in args.peers.as_deref().map(split_list).unwrap_or_default() {
        match peer.as_str() {
            "qemu" => match qemu_version() {
                Some(v) => {
                    plan.qemu_version = Some(v);
                    plan.runners.push(Runner::Qemu);
                }
                None => plan.skipped.push((
                    peer,
                    "skipped: qemu-system-i386 is not installed (or does not run)".into(),
                )),
            },
            "bochs" => match bochs::version() {
                Ok(v) => {
                    plan.bochs_version = Some(v);
                    plan.runners.push(Runner::Bochs);
                }
                Err(why) => plan.skipped.push((peer, format!("skipped: {why}"))),
            },
            other => bail!("--peers: unknown peer '{other}' (qemu, bochs)"),
        }
    }
    if plan.runners.is_empty() {
        bail!("no engine or peer to run");
    }
    Ok(plan)
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The first line of `qemu-system-i386 --version`, or None when it does
/// not run.
fn qemu_version() -> Option<String> {
    let out = Command::new("qemu-system-i386")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("").to_owned())
}

/// What one child process did and cost.
struct Measured {
    status: Option<i32>,
    wall: Duration,
    user: Duration,
    sys: Duration,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

/// The user and system CPU time of this process's waited-for children.
fn children_cpu_time() -> (Duration, Duration) {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a
    // valid value; getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN is a valid `who` and `ru` outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (time(ru.ru_utime), time(ru.ru_stime))
}

/// Runs `cmd` with `script` on stdin (nothing when empty) and its output
/// in files under `dir`, killing it after RUN_TIMEOUT.
fn measure(cmd: &mut Command, script: &[u8], dir: &Path) -> Result<Measured> {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let out = std::fs::File::create(&out_path).context("creating the run's output file")?;
    let err = std::fs::File::create(&err_path).context("creating the run's error file")?;
    cmd.stdout(out).stderr(err).stdin(if script.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    });
    let (user0, sys0) = children_cpu_time();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A guest that stops before reading all of its script closes the
        // pipe: that is its business, not an error of the benchmark.
        let _ = stdin.write_all(script);
    }
    let (status, wall, timed_out) = wait_or_kill(&mut child, start, false, RUN_TIMEOUT)?;
    let (user1, sys1) = children_cpu_time();
    Ok(Measured {
        status: status.code(),
        wall,
        user: user1.saturating_sub(user0),
        sys: sys1.saturating_sub(sys0),
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned(),
        timed_out,
    })
}

/// The `(ops, insns)` of the guest's `nanobench: OP ops=N insns=I` line.
fn nano_line(stdout: &str, op: &str) -> Option<(u64, u64)> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("nanobench: ")?.strip_prefix(op)?;
        let mut words = rest.split_whitespace();
        let ops = words.next()?.strip_prefix("ops=")?.parse().ok()?;
        let insns = words.next()?.strip_prefix("insns=")?.parse().ok()?;
        Some((ops, insns))
    })
}

/// How a run ended, as the table and the JSON say it.
enum Outcome {
    Ok,
    NotRunnable(String),
    Failed(String),
}

/// One run of one workload on one engine or peer.
struct RunRecord {
    workload: String,
    runner: Runner,
    rep: u32,
    outcome: Outcome,
    measured: Option<Measured>,
    /// From `--stats-json` (engines only).
    stats: Option<Value>,
    /// The nanobench line's (ops, insns): insns are the guest's RDTSC
    /// difference, instructions under ringside, cycles under QEMU or KVM.
    nano: Option<(u64, u64)>,
}

impl RunRecord {
    fn instructions(&self) -> Option<u64> {
        self.stats.as_ref()?["instructions"].as_u64()
    }
    fn counter(&self, key: &str) -> Option<u64> {
        self.stats.as_ref()?["counters"][key].as_u64()
    }
    /// The engine's own cost counters, as a share or a count per run.
    fn engine_costs(&self) -> Value {
        let Some(stats) = &self.stats else {
            return json!({});
        };
        let counters = &stats["counters"];
        match self.runner.name() {
            "jit" => {
                let compile_s = self.counter("compile_us_total").unwrap_or(0) as f64 / 1e6;
                let wall_s = stats["wall_s"].as_f64().unwrap_or(0.0);
                json!({
                    "compile_s": compile_s,
                    "compile_share": (wall_s > 0.0).then(|| compile_s / wall_s),
                    "native_share_permille": counters["native_share_permille"],
                })
            }
            "kvm" => {
                let exits: u64 = counters
                    .as_object()
                    .map(|c| {
                        c.iter()
                            .filter(|(k, _)| k.starts_with("exits_"))
                            .filter_map(|(_, v)| v.as_u64())
                            .sum()
                    })
                    .unwrap_or(0);
                json!({ "exits": exits, "kvm_runs": counters["kvm_runs"] })
            }
            // Raw mode's cost is its monitor entries (traps), and the share
            // of instructions its substrate ran.
            "raw" | "raw-nopatm" => {
                let traps = counters["raw.monitor_entries"].as_u64().unwrap_or(0);
                let per_1000 = self
                    .instructions()
                    .filter(|&n| n > 0)
                    .map(|n| traps as f64 * 1000.0 / n as f64);
                json!({
                    "traps": traps,
                    "traps_per_1000_insns": per_1000,
                    "substrate_instructions": counters["raw.substrate_instructions"],
                    "patch_executions": counters["raw.patm_executions"],
                })
            }
            _ => json!({}),
        }
    }
}

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn main(args: BenchArgs) -> Result<i32> {
    let iters = args.iters.unwrap_or(if args.quick {
        QUICK_NANO_ITERS
    } else {
        DEFAULT_NANO_ITERS
    });
    let names = match &args.workloads {
        Some(list) => split_list(list),
        None if args.quick => [
            "bench-int-small",
            "demo-session",
            "nano-call-ret",
            "nano-divzero",
        ]
        .map(String::from)
        .to_vec(),
        None => all_workload_names(),
    };
    let workloads = names
        .iter()
        .map(|n| {
            workload(n, iters).with_context(|| {
                format!(
                    "--workloads: unknown workload '{n}' (bench-int-small, bench-int-small-disk, nano-OP-unpaged, {})",
                    all_workload_names().join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let plan = plan(&args)?;
    for (name, reason) in &plan.skipped {
        println!("{name}: {reason}");
    }
    let tmp = Tmp(std::env::temp_dir().join(format!("ringside-bench-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)
        .with_context(|| format!("cannot create {}", tmp.0.display()))?;
    let exe = std::env::current_exe().context("cannot find the ringside binary")?;

    let total = (workloads.len() * plan.runners.len()) as u64 * u64::from(args.reps);
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:32} {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut records = Vec::new();
    for w in &workloads {
        for rep in 1..=args.reps {
            for runner in &plan.runners {
                bar.set_message(format!("{} on {} (rep {rep})", w.name, runner.name()));
                records.push(run_one(w, runner, rep, &plan, &exe, &tmp.0)?);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let summaries: Vec<Summary> = workloads
        .iter()
        .flat_map(|w| plan.runners.iter().map(|r| summarize(w, r, &records)))
        .collect();
    print_table(&summaries);
    if let Some(path) = &args.json {
        let doc = json_document(&args, iters, &plan, &workloads, &records, &summaries);
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let nano_path = plot::nano_path(path);
        plot::draw(path, &nano_path, &plan, &workloads, &summaries)?;
        println!("wrote {} and {}", path.display(), nano_path.display());
    }
    let failed = records
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed(_)));
    Ok(if failed { 1 } else { 0 })
}

fn run_one(
    w: &Workload,
    runner: &Runner,
    rep: u32,
    plan: &Plan,
    exe: &Path,
    tmp: &Path,
) -> Result<RunRecord> {
    let mut record = RunRecord {
        workload: w.name.clone(),
        runner: runner.clone(),
        rep,
        outcome: Outcome::Ok,
        measured: None,
        stats: None,
        nano: None,
    };
    let stats_path = tmp.join("stats.json");
    let _ = std::fs::remove_file(&stats_path);
    let mut cmd = match runner {
        Runner::Engine(engine) => {
            if let (true, "kvm", Some(reason)) = (w.paged, engine.as_str(), &plan.kvm_no_paging) {
                record.outcome = Outcome::NotRunnable(reason.clone());
                return Ok(record);
            }
            let mut cmd = Command::new(exe);
            let (engine_arg, settings): (&str, &[&str]) = match engine.as_str() {
                "raw-nopatm" => ("raw", &["--set", "raw.patm=false"]),
                e => (e, &[]),
            };
            cmd.arg("run")
                .arg(format!("builtin:{}", w.guest))
                .args(["--engine", engine_arg, "--clock", "fast", "--stats-json"])
                .arg(&stats_path)
                .args(settings);
            if let Some(c) = &w.cmdline {
                cmd.args(["--cmdline", c]);
            }
            cmd
        }
        Runner::Qemu => {
            let image = export_image(w, tmp)?;
            let mut cmd = Command::new("qemu-system-i386");
            cmd.args(qemu_args(&image, w.disk, w.cmdline.as_deref()));
            cmd
        }
        Runner::Bochs => {
            if !w.disk {
                record.outcome = Outcome::NotRunnable(
                    "Bochs boots disks only: bench-int-disk is bench-int on a disk (docs/bench.md: why the nanobenchmarks and the demo have none)".into(),
                );
                return Ok(record);
            }
            let image = export_image(w, tmp)?;
            bochs::command(&image, tmp)?
        }
    };
    let m = if *runner == Runner::Bochs {
        bochs::measure(&mut cmd, tmp)?
    } else {
        measure(&mut cmd, w.script, tmp)?
    };
    if let Runner::Engine(_) = runner {
        record.stats = std::fs::read(&stats_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    }
    record.nano = w.nano.and_then(|(op, _)| nano_line(&m.stdout, op));
    let last_error = m.stderr.lines().last().unwrap_or("").to_owned();
    record.outcome = match (runner, m.status) {
        _ if m.timed_out => Outcome::Failed(format!("killed after {RUN_TIMEOUT:?}")),
        (Runner::Engine(_), Some(crate::cli::status::ENGINE_UNAVAILABLE)) => {
            Outcome::NotRunnable(last_error)
        }
        (Runner::Bochs, _) if !m.stdout.contains(bochs::SHUTDOWN) => Outcome::Failed(format!(
            "Bochs ended without the guest's shutdown (status {:?}): {}",
            m.status,
            bochs::last_message(&m.stdout)
        )),
        (Runner::Engine(_), Some(0)) | (Runner::Qemu, Some(0 | 1)) | (Runner::Bochs, _) => {
            if w.nano.is_some() && record.nano.is_none() {
                Outcome::Failed("no nanobench line for the operation".into())
            } else {
                Outcome::Ok
            }
        }
        (_, status) => Outcome::Failed(format!(
            "exit status {}: {last_error}",
            status.map_or("none (killed)".into(), |s| s.to_string())
        )),
    };
    record.measured = Some(m);
    Ok(record)
}

/// The workload's built-in image, written once into `tmp` for a peer.
fn export_image(w: &Workload, tmp: &Path) -> Result<PathBuf> {
    let (bytes, ext) = if w.disk {
        let d = ringside_guests::find_disk(w.guest)
            .with_context(|| format!("no built-in disk {}", w.guest))?;
        (d.image, "img")
    } else {
        let g = ringside_guests::find(w.guest)
            .with_context(|| format!("no built-in guest {}", w.guest))?;
        (g.image, "elf")
    };
    let image = tmp.join(format!("{}.{ext}", w.guest));
    if !image.exists() {
        std::fs::write(&image, bytes)
            .with_context(|| format!("cannot write {}", image.display()))?;
    }
    Ok(image)
}

/// QEMU TCG booting the exported image as a Multiboot kernel (or a disk
/// through its BIOS, in snapshot mode), COM1 on stdio, the debug-exit
/// port where ringside has it (its status is then the guest's value * 2
/// + 1; the demo's ACPI power-off exits 0).
fn qemu_args(image: &Path, disk: bool, cmdline: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-no-reboot",
        "-m",
        "32",
    ]
    .map(String::from)
    .to_vec();
    if disk {
        args.extend([
            "-snapshot".into(),
            "-drive".into(),
            format!("file={},format=raw,if=ide", image.display()),
        ]);
    } else {
        args.extend(["-kernel".into(), image.display().to_string()]);
    }
    if let Some(c) = cmdline {
        args.extend(["-append".into(), c.to_owned()]);
    }
    args
}

/// The figures of one workload on one engine or peer, over its
/// successful repetitions.
struct Summary {
    workload: String,
    runner: String,
    kind: &'static str,
    /// Why there is nothing to show.
    status: Option<String>,
    runs: usize,
    instructions: Option<u64>,
    /// The instructions M insn/s divides: the engine's own count, or for
    /// an engine or peer that counts none (kvm, qemu) the interpreter's
    /// (or the recompiler's) count of the same workload.
    instructions_basis: Option<u64>,
    wall_s: Option<Stats>,
    cpu_s: Option<Stats>,
    mips: Option<f64>,
    ns_per_op: Option<f64>,
    /// The guest's RDTSC difference per operation: instructions under
    /// ringside, cycles under QEMU or KVM.
    tsc_per_op: Option<f64>,
    /// The engine's own costs: medians over the runs.
    costs: Value,
    /// This runner's speed relative to the interpreter: the interpreter's
    /// median wall time over this runner's.
    speed_vs_interp: Option<f64>,
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

fn median(v: Vec<f64>) -> Option<f64> {
    stats(v).map(|s| s.median)
}

fn summarize(w: &Workload, runner: &Runner, records: &[RunRecord]) -> Summary {
    let of = |name: &str| -> Vec<&RunRecord> {
        records
            .iter()
            .filter(|r| r.workload == w.name && r.runner.name() == name)
            .collect()
    };
    let ok = |r: &&RunRecord| matches!(r.outcome, Outcome::Ok);
    let mine: Vec<&RunRecord> = of(runner.name()).into_iter().filter(ok).collect();
    let status = of(runner.name())
        .into_iter()
        .find_map(|r| match &r.outcome {
            Outcome::Ok => None,
            Outcome::NotRunnable(why) => Some(format!("not runnable on this engine: {why}")),
            Outcome::Failed(why) => Some(format!("failed: {why}")),
        });
    let wall = |r: &RunRecord| r.measured.as_ref().map(|m| m.wall.as_secs_f64());
    let wall_s = stats(mine.iter().filter_map(|r| wall(r)).collect());
    let cpu_s = stats(
        mine.iter()
            .filter_map(|r| r.measured.as_ref().map(|m| (m.user + m.sys).as_secs_f64()))
            .collect(),
    );
    let instructions = mine.iter().find_map(|r| r.instructions());
    let counted_elsewhere = ["interp", "jit", "raw"]
        .iter()
        .find_map(|e| of(e).into_iter().filter(ok).find_map(|r| r.instructions()));
    let instructions_basis = instructions.or(counted_elsewhere);
    let mips = match (instructions_basis, wall_s) {
        (Some(n), Some(s)) if s.median > 0.0 => Some(n as f64 / s.median / 1e6),
        _ => None,
    };
    let ops = w.nano.map(|(_, n)| f64::from(n));
    let ns_per_op = ops.zip(wall_s).map(|(n, s)| s.median * 1e9 / n);
    let tsc_per_op = median(
        mine.iter()
            .filter_map(|r| r.nano)
            .map(|(ops, insns)| insns as f64 / ops.max(1) as f64)
            .collect(),
    );
    let costs = median_costs(&mine, ops);
    let interp_wall = stats(
        of("interp")
            .into_iter()
            .filter(ok)
            .filter_map(&wall)
            .collect(),
    );
    let speed_vs_interp = match (interp_wall, wall_s) {
        (Some(i), Some(s)) if s.median > 0.0 => Some(i.median / s.median),
        _ => None,
    };
    Summary {
        workload: w.name.clone(),
        runner: runner.name().to_owned(),
        kind: runner.kind(),
        status: if mine.is_empty() {
            status.or(Some("no runs".into()))
        } else {
            status
        },
        runs: mine.len(),
        instructions,
        instructions_basis,
        wall_s,
        cpu_s,
        mips,
        ns_per_op,
        tsc_per_op,
        costs,
        speed_vs_interp,
    }
}

/// The median of each cost counter over the runs, and per operation for
/// a nanobenchmark.
fn median_costs(runs: &[&RunRecord], ops: Option<f64>) -> Value {
    let per_run: Vec<Value> = runs.iter().map(|r| r.engine_costs()).collect();
    let mut out = serde_json::Map::new();
    let keys: Vec<String> = per_run
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for key in keys {
        let m = median(per_run.iter().filter_map(|c| c[&key].as_f64()).collect());
        if let Some(m) = m {
            out.insert(key.clone(), json!(m));
            if let (Some(n), "exits") = (ops, key.as_str()) {
                out.insert("exits_per_op".into(), json!(m / n));
            }
            if let (Some(n), "traps") = (ops, key.as_str()) {
                out.insert("traps_per_op".into(), json!(m / n));
            }
        }
    }
    Value::Object(out)
}

fn print_table(summaries: &[Summary]) {
    println!(
        "{:<22} {:<10} {:>12} {:>26} {:>8} {:>9} {:>9} {:>9} {:<28} {:>9}",
        "workload",
        "runner",
        "instructions",
        "wall ms: median [min-max]",
        "cpu ms",
        "M insn/s",
        "ns/op",
        "tsc/op",
        "engine costs",
        "vs interp"
    );
    for s in summaries {
        if let (Some(why), 0) = (&s.status, s.runs) {
            println!("{:<22} {:<10} {why}", s.workload, s.runner);
            continue;
        }
        let ms = |x: f64| x * 1e3;
        let wall = s.wall_s.map_or("-".into(), |w| {
            format!("{:.1} [{:.1}-{:.1}]", ms(w.median), ms(w.min), ms(w.max))
        });
        let instructions = match (s.instructions, s.instructions_basis) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) => format!("({n})"),
            _ => "-".into(),
        };
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |x| format!("{x:.digits$}"));
        let costs = match s.runner.as_str() {
            "jit" => s.costs["compile_share"]
                .as_f64()
                .map_or("-".into(), |c| format!("compile {:.1}%", c * 100.0)),
            "raw" | "raw-nopatm" => {
                let per_1000 = s.costs["traps_per_1000_insns"]
                    .as_f64()
                    .map_or("-".into(), |k| format!("{k:.2}/1k"));
                match s.costs["traps_per_op"].as_f64() {
                    Some(t) => format!("{t:.3} traps/op {per_1000}"),
                    None => s.costs["traps"]
                        .as_f64()
                        .map_or("-".into(), |t| format!("{t:.0} traps {per_1000}")),
                }
            }
            "kvm" => match s.costs["exits_per_op"].as_f64() {
                Some(e) => format!("{e:.3} exits/op"),
                None => s.costs["exits"]
                    .as_f64()
                    .map_or("-".into(), |e| format!("{e:.0} exits")),
            },
            _ => "-".into(),
        };
        let note = match &s.status {
            Some(why) => format!("  ({why})"),
            None => String::new(),
        };
        println!(
            "{:<22} {:<10} {:>12} {:>26} {:>8} {:>9} {:>9} {:>9} {:<28} {:>9}{note}",
            s.workload,
            s.runner,
            instructions,
            wall,
            opt(s.cpu_s.map(|c| ms(c.median)), 1),
            opt(s.mips, 1),
            opt(s.ns_per_op, 1),
            opt(s.tsc_per_op, 2),
            costs,
            s.speed_vs_interp.map_or("-".into(), |r| format!("{r:.2}x")),
        );
    }
    println!(
        "\nwall, cpu: the whole child process (start-up, boot, the workload).\n\
         instructions in parentheses: the interpreter's count, for engines and peers that count none.\n\
         ns/op: median wall / iterations, start-up and boot included.\n\
         tsc/op: the guest's RDTSC difference per operation: instructions under interp and jit, cycles under kvm and qemu.\n\
         vs interp: the interpreter's median wall / this row's."
    );
}

/// The ringside commit: RINGSIDE_COMMIT at build time, else the source
/// tree's HEAD now (which may be newer than the binary).
fn ringside_commit() -> (String, &'static str) {
    if let Some(c) = option_env!("RINGSIDE_COMMIT") {
        return (c.to_owned(), "RINGSIDE_COMMIT at build time");
    }
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(h) => (h, "git HEAD of the source tree at run time"),
        None => ("unknown".into(), "no RINGSIDE_COMMIT and no git tree"),
    }
}

fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn opt_stats(s: Option<Stats>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({ "median": s.median, "min": s.min, "max": s.max }),
    )
}

fn json_document(
    args: &BenchArgs,
    iters: u32,
    plan: &Plan,
    workloads: &[Workload],
    records: &[RunRecord],
    summaries: &[Summary],
) -> Value {
    let (commit, commit_source) = ringside_commit();
    let runs: Vec<Value> = records
        .iter()
        .map(|r| {
            let m = r.measured.as_ref();
            let (status, reason) = match &r.outcome {
                Outcome::Ok => ("ok", None),
                Outcome::NotRunnable(why) => ("not runnable", Some(why.clone())),
                Outcome::Failed(why) => ("failed", Some(why.clone())),
            };
            json!({
                "workload": r.workload,
                "engine": r.runner.name(),
                "kind": r.runner.kind(),
                "rep": r.rep,
                "status": status,
                "reason": reason,
                "exit_status": m.and_then(|m| m.status),
                "instructions": r.instructions(),
                "wall_ns": m.map(|m| m.wall.as_nanos() as u64),
                "user_ns": m.map(|m| m.user.as_nanos() as u64),
                "sys_ns": m.map(|m| m.sys.as_nanos() as u64),
                "nanobench": r.nano.map(|(ops, insns)| json!({ "ops": ops, "tsc": insns })),
                "engine_costs": r.engine_costs(),
                "stats": r.stats,
            })
        })
        .collect();
    let summaries: Vec<Value> = summaries
        .iter()
        .map(|s| {
            json!({
                "workload": s.workload,
                "engine": s.runner,
                "kind": s.kind,
                "status": s.status,
                "runs": s.runs,
                "instructions": s.instructions,
                "instructions_basis": s.instructions_basis,
                "wall_s": opt_stats(s.wall_s),
                "cpu_s": opt_stats(s.cpu_s),
                "mips": s.mips,
                "ns_per_op": s.ns_per_op,
                "tsc_per_op": s.tsc_per_op,
                "engine_costs": s.costs,
                "speed_vs_interp": s.speed_vs_interp,
            })
        })
        .collect();
    let skipped: Vec<Value> = plan
        .skipped
        .iter()
        .map(|(name, reason)| json!({ "name": name, "reason": reason }))
        .collect();
    let peers: Vec<Value> = plan
        .runners
        .iter()
        .filter_map(|r| match r {
            Runner::Qemu => Some(json!({
                "name": "qemu",
                "version": plan.qemu_version,
                "command": qemu_args(Path::new("IMAGE.elf"), false, Some("CMDLINE")),
                "disk_command": qemu_args(Path::new("IMAGE.img"), true, None),
            })),
            Runner::Bochs => Some(json!({
                "name": "bochs",
                "version": plan.bochs_version,
                "command": bochs::ARGS,
                "bochsrc": bochs::bochsrc(Path::new("IMAGE.img"), Path::new("DIR")),
            })),
            Runner::Engine(_) => None,
        })
        .collect();
    json!({
        "ringside_commit": commit,
        "ringside_commit_source": commit_source,
        "ringside_version": env!("CARGO_PKG_VERSION"),
        "host": {
            "cpu": host_cpu(),
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "kvm_paging": plan.kvm_no_paging.as_ref().map_or(Value::Null, |why| json!(why)),
        },
        "settings": {
            "reps": args.reps,
            "quick": args.quick,
            "nano_iters": iters,
            "clock": "fast",
            "order": "for each workload, for each repetition, every engine and peer in turn",
        },
        "engines": plan.runners.iter().filter(|r| r.kind() == "engine").map(|r| r.name()).collect::<Vec<_>>(),
        "peers": peers,
        "skipped": skipped,
        "workloads": workloads.iter().map(|w| json!({
            "name": w.name,
            "guest": format!("builtin:{}", w.guest),
            "cmdline": w.cmdline,
            "script": String::from_utf8_lossy(w.script),
            "ops": w.nano.map(|(_, n)| n),
            "about": w.about,
        })).collect::<Vec<_>>(),
        "runs": runs,
        "summaries": summaries,
    })
}
