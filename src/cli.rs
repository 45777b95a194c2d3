//! Command-line front-end (clap). `ringside` with no command runs the
//! default built-in guest and takes the same options as `run`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ringside_core::config::{ClockMode, DiskConfig, DiskMode, MachineConfig};
use ringside_core::input_file::{open_regular, read_input, InputKind};
use ringside_core::{
    boot, snapshot, Engine, EngineError, EngineStats, Machine, RunOutcome, StopReason,
};
use ringside_devices::pc::{build_pc, HostIo};

use crate::session::{Checkpoint, Input, Session, SessionEnd};

/// The guest `cargo run --release` boots.
pub const DEFAULT_GUEST: &str = "builtin:demo";

#[derive(Parser)]
#[command(
    name = "ringside",
    version,
    about = "An IA-32 PC emulator with interchangeable execution engines",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `run`, for `ringside` with no command.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest: builtin:NAME, a Multiboot kernel (ELF or flat) or a disk image.
    Run(RunArgs),
    /// List the built-in guests, or write them out as files.
    Guests {
        /// Write every built-in guest as NAME.elf (kernels) or NAME.img (disks) into this directory.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
    },
    /// Run two engines in lockstep and stop at the first instruction where they disagree.
    Compare {
        /// The two engines, e.g. interp,interp.
        #[arg(long, value_name = "A,B")]
        engines: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show how the recompiler translates the guest block at CS:EIP after
    /// N instructions: the guest instructions and the Cranelift IR.
    JitDump {
        /// Run this many instructions first (on the interpreter).
        #[arg(long, value_name = "N", default_value_t = 0)]
        at: u64,
        /// Then run on until the guest is about to execute this linear
        /// address (hex, e.g. 0x101d68)
        #[arg(long, value_name = "ADDR", value_parser = parse_hex_u32)]
        eip: Option<u32>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Debug a guest in the terminal UI (optionally side by side with a second engine).
    Debug {
        /// Run a second machine on this engine in lockstep and stop at the first divergence.
        #[arg(long, value_name = "ENGINE")]
        compare: Option<String>,
        /// No terminal UI: run the commands of -x files, then those on
        /// stdin, and print the replies as text (as with gdb -batch).
        #[arg(long)]
        batch: bool,
        /// A file of debugger commands, one a line (# comments); implies
        /// --batch. Repeatable.
        #[arg(short = 'x', value_name = "FILE")]
        commands: Vec<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Serve the GDB remote protocol for a guest (attach with gdb's `target remote`).
    Gdb {
        /// Where to listen: ADDR:PORT, or a port alone (on loopback).
        #[arg(long, value_name = "[ADDR:]PORT", default_value = "127.0.0.1:1234")]
        listen: String,
        /// The directory `monitor save|load|snapshot|symbols` may read and
        /// write files in (plain names only); without it they are off.
        #[arg(long, value_name = "DIR")]
        snapshot_dir: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// List the execution engines and what each can run on this host.
    Engines,
    /// The course's labs: list, start one, check your work.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Measure the built-in workloads on each engine (and on peer emulators).
    Bench(crate::bench_cmd::BenchArgs),
    /// Show the machine configuration.
    Config {
        /// Print the default machine configuration (TOML).
        #[arg(long)]
        print_default: bool,
    },
    /// Run instruction conformance suites.
    Conformance {
        #[command(subcommand)]
        suite: Suite,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// List the labs.
    List,
    /// Write a lab's starter files into DIR.
    Start {
        /// The lab's number.
        number: u32,
        /// Where the files go (created if needed; existing files are
        /// never replaced).
        dir: PathBuf,
    },
    /// Build your work and run it on ringside, and say what is right.
    Check {
        /// The lab's number.
        number: u32,
        /// Your lab directory.
        #[arg(required_unless_present = "solution")]
        dir: Option<PathBuf>,
        /// Check the reference solution instead (for teachers).
        #[arg(long, conflicts_with = "dir")]
        solution: bool,
    },
}

#[derive(Subcommand)]
enum Suite {
    /// SingleStepTests-format files (JSON arrays, gzip'd or not).
    Sst {
        /// Directory holding the test files.
        dir: PathBuf,
        #[arg(long, default_value = "interp")]
        engine: String,
        /// Print per-opcode results as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClockArg {
    Paced,
    Fast,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum DisplayArg {
    /// COM1 on the terminal.
    #[default]
    Serial,
    /// The guest's text screen on the terminal; typed keys go to the keyboard.
    Text,
}

#[derive(Args, Default)]
pub(crate) struct RunArgs {
    /// The guest: builtin:NAME, a Multiboot kernel (ELF or flat), or a disk image.
    image: Option<String>,
    /// A machine configuration (TOML); the flags below override its keys.
    #[arg(long, value_name = "FILE")]
    machine: Option<PathBuf>,
    /// A raw ROM image at the reset vector instead of ringside's BIOS.
    #[arg(long, value_name = "ROM", conflicts_with_all = ["image", "kernel"])]
    bios: Option<PathBuf>,
    /// A Multiboot v1 kernel, loaded like `qemu -kernel`.
    #[arg(long, value_name = "ELF", conflicts_with = "image")]
    kernel: Option<String>,
    /// A Multiboot module for the kernel.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line (Multiboot).
    #[arg(long)]
    cmdline: Option<String>,
    /// An IDE disk image (first: master, second: slave), booted through the
    /// BIOS. With --load-state: the state's disk at this position, in the
    /// mode to open it (no wider than the state records).
    #[arg(long, value_name = "PATH[,ro|,snapshot]")]
    disk: Vec<String>,
    /// Guest RAM in MiB (machine.memory_mib).
    #[arg(long, value_name = "MIB")]
    mem: Option<u32>,
    /// Execution engine (machine.engine): interp, jit, raw or kvm.
    #[arg(long)]
    engine: Option<String>,
    /// Runs of a guest block before the recompiler compiles it (jit.threshold).
    #[arg(long, value_name = "N")]
    jit_threshold: Option<u32>,
    /// The most guest blocks one compiled region may hold, 1-32 (jit.region_blocks).
    #[arg(long, value_name = "N")]
    jit_region_blocks: Option<u32>,
    /// Compile on a background thread, true or false (jit.background).
    #[arg(long, value_name = "BOOL")]
    jit_background: Option<bool>,
    /// Set any configuration key, e.g. `--set jit.threshold=1` or
    /// `--set cpu.vendor=AuthenticAMD` (after the file and the other
    /// flags; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Pace virtual time against the wall clock, or run as fast as possible (clock.mode).
    #[arg(long, value_enum)]
    clock: Option<ClockArg>,
    /// What the terminal shows.
    #[arg(long, value_enum, default_value_t)]
    display: DisplayArg,
    /// Write the guest's COM1 output to FILE instead of the terminal
    /// (under `--display text` COM1 is not shown otherwise).
    #[arg(long, value_name = "FILE")]
    com1_log: Option<PathBuf>,
    /// Stop after this many instructions (counted across reboots).
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// Stop when the guest resets the machine (status 126) or triple-faults
    /// (status 125) instead of rebooting it (machine.no_reboot).
    #[arg(long)]
    no_reboot: bool,
    /// Print run statistics as one JSON object on stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Write run statistics as JSON to this file.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
    /// Save the machine's state to FILE when the guest has retired N
    /// instructions, and run on.
    #[arg(long, num_args = 2, value_names = ["N", "FILE"])]
    save_state_at: Option<Vec<String>>,
    /// Rebuild the machine a state was saved from, restore the state and run
    /// on (no IMAGE: the file names what the machine was built from).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["image", "machine", "bios", "kernel", "initrd", "cmdline", "mem"]
    )]
    load_state: Option<PathBuf>,
    /// With --load-state: open the state's disks in the modes it records
    /// (by default they open copy-on-write and are never written, since a
    /// state file could name any file; docs/security.md).
    #[arg(long, requires = "load_state")]
    trust_state_paths: bool,
    /// Boot the default guest when nothing else is configured (`ringside`
    /// with no command).
    #[arg(skip)]
    default_guest: bool,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            let mut args = cli.run;
            args.default_guest = true;
            run(args)
        }
        Some(Command::Run(args)) => run(args),
        Some(Command::Guests { export }) => guests(export.as_deref()).map(|_| 0),
        Some(Command::Compare { engines, run }) => compare(&engines, run),
        Some(Command::JitDump { at, eip, run }) => jit_dump(at, eip, run),
        Some(Command::Debug {
            compare,
            batch,
            commands,
            run,
        }) => crate::debug_cmd::main(
            compare,
            crate::debug_cmd::Batch {
                batch,
                files: commands,
            },
            run,
        ),
        Some(Command::Gdb {
            listen,
            snapshot_dir,
            run,
        }) => crate::gdb_cmd::main(&listen, snapshot_dir.as_deref(), run),
        Some(Command::Bench(args)) => crate::bench_cmd::main(args),
        Some(Command::Lab { action }) => match action {
            LabAction::List => crate::lab_cmd::list(),
            LabAction::Start { number, dir } => crate::lab_cmd::start(number, &dir),
            LabAction::Check {
                number,
                dir,
                solution,
            } => crate::lab_cmd::check(number, dir.as_deref(), solution),
        },
        Some(Command::Engines) => {
            engines();
            Ok(0)
        }
        Some(Command::Config { print_default }) => {
            if print_default {
                print!("{}", MachineConfig::default().to_toml());
                Ok(0)
            } else {
                Err(anyhow::anyhow!(
                    "nothing to do: try `ringside config --print-default`"
                ))
            }
        }
        Some(Command::Conformance {
            suite: Suite::Sst { dir, engine, json },
        }) => conformance_sst(&dir, &engine, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: a closed stderr (a pipe whose reader left)
            // must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "ringside: error: {e:#}");
            match e.downcast_ref::<EngineError>() {
                Some(EngineError::Unavailable { .. }) => status::ENGINE_UNAVAILABLE,
                _ => status::ERROR,
            }
        }
    }
}

/// The recompiler's threshold for the engines this process makes: the
/// configuration's `jit.threshold` (or `--jit-threshold`), set when the
/// configuration is read.
static JIT_THRESHOLD: AtomicU32 = AtomicU32::new(ringside_jit::DEFAULT_THRESHOLD);
static JIT_REGION_BLOCKS: AtomicU32 = AtomicU32::new(ringside_jit::DEFAULT_REGION_BLOCKS as u32);
static JIT_BACKGROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
static JIT_OPTIMIZE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `raw.patm` for the raw-mode engines this process makes.
static RAW_PATM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub(crate) fn set_raw_settings(patm: bool) {
    RAW_PATM.store(patm, Ordering::Relaxed);
}

pub(crate) fn set_jit_settings(
    threshold: u32,
    region_blocks: u32,
    background: bool,
    optimize: bool,
) {
    JIT_OPTIMIZE.store(optimize, Ordering::Relaxed);
    JIT_THRESHOLD.store(threshold.max(1), Ordering::Relaxed);
    JIT_REGION_BLOCKS.store(region_blocks.clamp(1, 32), Ordering::Relaxed);
    JIT_BACKGROUND.store(background, Ordering::Relaxed);
}

/// The engines this build has, by name.
pub(crate) fn make_engine(name: &str) -> Result<Box<dyn Engine>> {
    match name {
        "interp" => Ok(Box::new(ringside_interp::Interp::new())),
        "jit" => {
            let mut j = ringside_jit::Jit::with_settings(
                JIT_THRESHOLD.load(Ordering::Relaxed),
                JIT_REGION_BLOCKS.load(Ordering::Relaxed),
            );
            j.set_background(JIT_BACKGROUND.load(Ordering::Relaxed));
            j.set_optimize(JIT_OPTIMIZE.load(Ordering::Relaxed));
            Ok(Box::new(j))
        }
        "kvm" => Ok(Box::new(ringside_kvm::Kvm::new()?)),
        // Ring compression where the guest pages, the interpreter where it
        // does not (core::exec's execution manager).
        "raw" => Ok(Box::new(ringside_core::exec::ExecutionManager::new(
            ringside_raw::Raw::with_patching(RAW_PATM.load(Ordering::Relaxed)),
            ringside_interp::Interp::new(),
        ))),
        // The lab "find the bug" (src/lab_engine.rs); not listed.
        "lab-broken" => Ok(Box::new(crate::lab_engine::BrokenInterp::new())),
        other => bail!("unknown engine '{other}' (available: interp, jit, raw, kvm)"),
    }
}

/// `ringside engines`: every engine, whether it runs here, and for kvm the
/// modes this host's KVM runs, found by running tiny guests.
fn engines() {
    println!("interp: available (the reference interpreter runs everywhere)");
    println!("jit: available (the Cranelift recompiler runs on every host Cranelift supports)");
    println!("raw: available (ring compression on the interpreter substrate; real mode, unpaged and v86 code run on the interpreter)");
    let probe = ringside_kvm::probe();
    if !probe.available.ok {
        println!("kvm: not available: {}", probe.available.reason);
        return;
    }
    println!("kvm: available ({})", probe.available.reason);
    for (mode, r) in probe.lines() {
        let answer = if r.ok { "yes" } else { "no" };
        println!("  {mode}: {answer} ({})", r.reason);
    }
}

/// Exit statuses other than a guest's own debug-exit value. Those of a
/// machine's end (halt and power-off 0, no boot 5, triple fault 125, a
/// reset not taken 126) are `StopReason::exit_status`'s.
pub mod status {
    pub const HALTED: i32 = 0;
    /// The BIOS found nothing to boot (INT 18h, POST code 0x18).
    pub const NO_BOOT: i32 = 5;
    pub const ERROR: i32 = 2;
    pub const QUIT: i32 = 3;
    /// The engine cannot run this guest on this host (or at all here): the
    /// message says what the host lacks.
    pub const ENGINE_UNAVAILABLE: i32 = 4;
    pub const INSTRUCTION_LIMIT: i32 = 124;
    /// Ctrl-C (128 + SIGINT, as a shell reports a process it ended).
    pub const INTERRUPTED: i32 = 130;
}

/// "after N instructions (T s, R M/s) at CS:EIP": how far a run got.
fn how_far(m: &Machine, wall: f64) -> String {
    let n = m.clock.icount;
    let rate = n as f64 / wall.max(1e-9) / 1e6;
    // An idle interactive session runs well under 1 M/s: keep digits.
    let rate = if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.2}")
    };
    format!(
        "after {} instructions ({wall:.1} s, {rate} M/s) at {:04x}:{:08x}",
        crate::progress::group(n),
        m.cpu.seg[1].selector,
        m.cpu.eip
    )
}

/// How a machine's end shows to the user, the same in `run` and `gdb`:
/// the `--stats` label, the exit status (`StopReason::exit_status`) and
/// the line said on stderr (none for a debug exit: the guest chose its
/// status).
pub fn machine_end(r: &StopReason, post_code: Option<u8>) -> (&'static str, i32, Option<String>) {
    let code = i32::from(r.exit_status(post_code));
    match r {
        StopReason::DebugExit(_) => (r.kind(), code, None),
        StopReason::DeadHalt { .. } if code == status::NO_BOOT => (
            "no-boot",
            code,
            Some("the BIOS found no bootable disk (INT 18h)".into()),
        ),
        _ => (r.kind(), code, Some(r.to_string())),
    }
}

/// What the machine boots.
enum BootImage {
    Rom(Vec<u8>),
    Kernel {
        image: Vec<u8>,
        name: String,
    },
    /// Boot the configured disks through ringside's BIOS.
    Disks,
}

/// A built-in disk image written to a temporary file for the IDE device,
/// removed when the run ends.
struct TempDisk(PathBuf);

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse_disk(spec: &str) -> Result<DiskConfig> {
    let (path, mode) = match spec.rsplit_once(',') {
        Some((p, "ro")) => (p, DiskMode::Ro),
        Some((p, "snapshot")) => (p, DiskMode::Snapshot),
        Some((p, "rw")) => (p, DiskMode::Rw),
        // A path with a comma in it: the whole of it names a file.
        Some(_) if Path::new(spec).exists() => (spec, DiskMode::Rw),
        Some((_, other)) if !other.contains('/') => {
            bail!("--disk {spec}: unknown mode '{other}' (ro, snapshot or rw); a path with a comma takes its mode after it: --disk '{spec},rw'")
        }
        _ => (spec, DiskMode::Rw),
    };
    Ok(DiskConfig {
        path: path.to_owned(),
        mode,
    })
}

/// The configuration this run uses: the file (or the default), then every
/// flag as an override of one key.
fn configure(args: &RunArgs) -> Result<MachineConfig> {
    let mut c = match &args.machine {
        Some(p) => {
            let bytes = read_input(p, InputKind::Config)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", p.display()))?;
            MachineConfig::from_toml(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => MachineConfig::default(),
    };
    if let Some(m) = args.mem {
        c.machine.memory_mib = m;
    }
    override_engine_and_clock(&mut c, args)?;
    if let Some(cmdline) = &args.cmdline {
        c.boot.cmdline = cmdline.clone();
    }
    if let Some(initrd) = &args.initrd {
        c.boot.initrd = initrd.display().to_string();
    }
    if let Some(bios) = &args.bios {
        c.boot.bios = bios.display().to_string();
        c.boot.image.clear();
    }
    if let Some(k) = args.kernel.as_ref().or(args.image.as_ref()) {
        c.boot.image = k.clone();
    }
    // `--kernel` says what the file is: a file that is not a kernel is an
    // error, not a disk image (as a positional image may be).
    if let Some(k) = args.kernel.as_ref().filter(|k| !k.starts_with("builtin:")) {
        let head = image_head(Path::new(k))?;
        if !is_kernel(&head) {
            match boot::bad_multiboot_checksum(&head) {
                Some(off) => bail!("--kernel {k}: the Multiboot header at file offset {off:#x} has a wrong checksum (magic + flags + checksum must be 0 modulo 2^32)"),
                None => bail!("--kernel {k}: not a Multiboot kernel (neither an ELF file nor a flat image whose Multiboot header gives load addresses, flag bit 16)"),
            }
        }
    }
    for d in &args.disk {
        c.disks.push(parse_disk(d)?);
    }
    let nothing_to_boot = c.boot.image.is_empty() && c.boot.bios.is_empty() && c.disks.is_empty();
    if args.default_guest && nothing_to_boot {
        c.boot.image = DEFAULT_GUEST.into();
    }
    c.validate()?;
    Ok(c)
}

/// `--engine`, `--clock`, `--no-reboot` and `--set`: the options that
/// also apply to a restored machine.
fn override_engine_and_clock(c: &mut MachineConfig, args: &RunArgs) -> Result<()> {
    if let Some(e) = &args.engine {
        c.machine.engine = e.clone();
    }
    if args.no_reboot {
        c.machine.no_reboot = true;
    }
    if let Some(t) = args.jit_threshold {
        c.jit.threshold = t;
    }
    if let Some(n) = args.jit_region_blocks {
        c.jit.region_blocks = n;
    }
    if let Some(b) = args.jit_background {
        c.jit.background = b;
    }
    if let Some(clock) = args.clock {
        c.clock.mode = match clock {
            ClockArg::Paced => ClockMode::Paced,
            ClockArg::Fast => ClockMode::Fast,
        };
    }
    for assignment in &args.set {
        let (key, value) = assignment
            .split_once('=')
            .with_context(|| format!("--set {assignment}: expected KEY=VALUE"))?;
        c.set(key.trim(), value.trim())?;
    }
    set_jit_settings(
        c.jit.threshold,
        c.jit.region_blocks,
        c.jit.background,
        c.jit.optimize,
    );
    set_raw_settings(c.raw.patm);
    Ok(())
}

/// Decide what boots, reading the image (and turning a built-in or a
/// positional non-kernel image into a disk).
fn boot_image(
    c: &mut MachineConfig,
    temp: &mut Option<TempDisk>,
    positional_disk_mode: DiskMode,
) -> Result<BootImage> {
    if !c.boot.bios.is_empty() {
        let rom = read_input(Path::new(&c.boot.bios), InputKind::Rom)?;
        return Ok(BootImage::Rom(rom));
    }
    let name = c.boot.image.clone();
    if name.is_empty() {
        if c.disks.is_empty() {
            bail!("nothing to run: give an IMAGE (builtin:NAME, a Multiboot kernel or a disk image), --disk or --bios");
        }
        return Ok(BootImage::Disks);
    }
    let bytes: Vec<u8> = if let Some(b) = name.strip_prefix("builtin:") {
        match (ringside_guests::find(b), ringside_guests::find_disk(b)) {
            (Some(g), _) => g.image.to_vec(),
            (None, Some(d)) => d.image.to_vec(),
            (None, None) => bail!("no built-in guest '{b}' (see `ringside guests`)"),
        }
    } else {
        match read_if_kernel(Path::new(&name))? {
            Some(bytes) => bytes,
            // Not a kernel: a disk image, opened (not read) like --disk.
            None => {
                c.disks.insert(
                    0,
                    DiskConfig {
                        path: name,
                        mode: positional_disk_mode,
                    },
                );
                c.validate()?;
                return Ok(BootImage::Disks);
            }
        }
    };
    if boot::is_multiboot_kernel(&bytes) {
        return Ok(BootImage::Kernel { image: bytes, name });
    }
    if bytes.starts_with(b"\x7fELF") {
        if let Some(off) = boot::bad_multiboot_checksum(&bytes) {
            bail!("{name}: the Multiboot header at file offset {off:#x} has a wrong checksum (magic + flags + checksum must be 0 modulo 2^32)");
        }
        bail!(
            "{name} is an ELF file without a Multiboot header; ringside boots Multiboot v1 kernels"
        );
    }
    // A built-in disk image, booted through the BIOS from a temporary
    // copy.
    {
        let p = std::env::temp_dir().join(format!(
            "ringside-{}-{}.img",
            name.trim_start_matches("builtin:"),
            std::process::id()
        ));
        std::fs::write(&p, &bytes).with_context(|| format!("cannot write {}", p.display()))?;
        *temp = Some(TempDisk(p.clone()));
        c.disks.insert(
            0,
            DiskConfig {
                path: p.display().to_string(),
                mode: DiskMode::Snapshot,
            },
        );
        Ok(BootImage::Disks)
    }
}

/// The first 8 KiB of the image at `path` (where a Multiboot header must
/// be), from a regular file only.
fn image_head(path: &Path) -> Result<Vec<u8>> {
    let (file, _) = open_regular(path).map_err(|(error, what)| match what {
        Some(what) => anyhow::anyhow!(
            "cannot read image {}: it is {what}, not a regular file",
            path.display()
        ),
        None => anyhow::anyhow!("cannot read image {}: {error}", path.display()),
    })?;
    let mut head = Vec::with_capacity(8192);
    file.take(8192)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(head)
}

/// An ELF file (checked further when loaded) or a flat Multiboot kernel.
fn is_kernel(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") || boot::is_multiboot_kernel(head)
}

/// The whole file at `path` if it is a kernel — an ELF file, or a flat
/// Multiboot kernel (a header with the a.out kludge's load addresses in
/// its first 8 KiB) — read within the limit for images; None if it is
/// not (a disk image, which is opened, never read whole). Only a regular
/// file is looked at: a FIFO or a device is refused without blocking.
pub(crate) fn read_if_kernel(path: &Path) -> Result<Option<Vec<u8>>> {
    if !is_kernel(&image_head(path)?) {
        return Ok(None);
    }
    Ok(Some(read_input(path, InputKind::Image)?))
}

fn load(m: &mut Machine, c: &MachineConfig, image: BootImage) -> Result<()> {
    match image {
        BootImage::Rom(rom) => boot::load_rom(m, &rom).context("cannot load the ROM")?,
        BootImage::Disks => {
            boot::load_rom(m, ringside_firmware::BIOS).context("cannot load the BIOS")?
        }
        BootImage::Kernel { image, name } => {
            let initrd = if c.boot.initrd.is_empty() {
                None
            } else {
                Some(read_input(Path::new(&c.boot.initrd), InputKind::Initrd)?)
            };
            let modules: Vec<boot::Module> = initrd
                .iter()
                .map(|data| boot::Module {
                    data,
                    string: &c.boot.initrd,
                })
                .collect();
            boot::load_multiboot_with_modules(m, &image, &c.boot.cmdline, &modules)
                .with_context(|| format!("cannot load {name}"))?
        }
    }
    Ok(())
}

/// Host input: a terminal in raw mode, or a script on a pipe or a file.
fn host_input() -> (Input, Option<RawModeGuard>) {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let guard = RawModeGuard::enable();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8];
            let mut stdin = std::io::stdin();
            while let Ok(1) = stdin.read(&mut b) {
                if tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        (Input::Terminal(rx), guard)
    } else {
        (Input::Script(Box::new(stdin)), None)
    }
}

/// Raw terminal mode for the life of a run.
struct RawModeGuard;

impl RawModeGuard {
    /// Raw input (each key as typed, no echo), but output still
    /// post-processed by the terminal, LF becoming CR LF, as QEMU's stdio
    /// does: guest text and the `--stats` line start at the left margin.
    fn enable() -> Option<RawModeGuard> {
        crossterm::terminal::enable_raw_mode().ok()?;
        keep_output_processing();
        Some(RawModeGuard)
    }
}

/// Turn OPOST and ONLCR back on for the terminal on standard input (raw
/// mode turned them off; they concern output only).
fn keep_output_processing() {
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that
    // tcgetattr fills; nothing is kept beyond the calls.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0 {
            t.c_oflag |= libc::OPOST | libc::ONLCR;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
        }
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// The machine a run or a comparison side boots: the configuration with
/// every flag applied, the PC built from it with `io`, the image loaded.
/// A built-in disk image is copied into a temporary file the snapshot disk
/// reads; the file is removed here (the open disk keeps its data).
pub(crate) fn build_machine(args: &RunArgs, io: HostIo) -> Result<(MachineConfig, Machine)> {
    let built = build(args, io)?;
    Ok((built.config, built.machine))
}

/// For the debugger front-ends: the machine, the configuration it was
/// built with, and the one a saved state records (which builds it again).
/// `--save-state-at` belongs to `run`; the debuggers have `save`.
pub(crate) fn build_debuggee(
    args: &RunArgs,
    io: HostIo,
) -> Result<(MachineConfig, MachineConfig, Machine)> {
    if args.save_state_at.is_some() {
        bail!("--save-state-at is an option of `run` (the debugger saves with its `save` command)");
    }
    let built = build(args, io)?;
    Ok((built.config, built.rebuild, built.machine))
}

/// A machine ready to run, the configuration it was built with, and the
/// configuration that builds it again, which a saved state records.
struct Built {
    config: MachineConfig,
    machine: Machine,
    rebuild: MachineConfig,
}

/// Build the machine the options describe, or, with `--load-state`, the
/// machine a state was saved from, with the state restored.
fn build(args: &RunArgs, io: HostIo) -> Result<Built> {
    if let Some(path) = &args.load_state {
        return build_restored(args, path, io)
            .with_context(|| format!("--load-state {}", path.display()));
    }
    let requested = configure(args)?;
    let mut config = requested.clone();
    let (machine, builtin_disk) = build_and_load(&mut config, io, DiskMode::Rw)?;
    let rebuild = rebuild_config(&requested, &config, builtin_disk);
    Ok(Built {
        config,
        machine,
        rebuild,
    })
}

/// Build the PC `config` describes and load what it boots. True in the
/// second place when that is a built-in disk image, whose temporary file
/// is removed again here (the open disk keeps its data).
fn build_and_load(
    config: &mut MachineConfig,
    io: HostIo,
    positional_disk_mode: DiskMode,
) -> Result<(Machine, bool)> {
    let mut temp = None;
    let image = boot_image(config, &mut temp, positional_disk_mode)?;
    let mut m = build_pc(config, io)?;
    load(&mut m, config, image)?;
    Ok((m, temp.is_some()))
}

/// The configuration a saved state records: it builds the same machine
/// again, from any directory. A disk image given as IMAGE is named as the
/// disk it became; a built-in disk stays `builtin:NAME` (its temporary file
/// is gone); paths are made absolute.
fn rebuild_config(
    requested: &MachineConfig,
    built: &MachineConfig,
    builtin_disk: bool,
) -> MachineConfig {
    let mut c = if builtin_disk {
        requested.clone()
    } else {
        built.clone()
    };
    if !builtin_disk && built.disks.len() > requested.disks.len() {
        c.boot.image.clear();
    }
    let boot = [&mut c.boot.image, &mut c.boot.bios, &mut c.boot.initrd];
    for path in boot
        .into_iter()
        .chain(c.disks.iter_mut().map(|d| &mut d.path))
    {
        if path.is_empty() || path.starts_with("builtin:") {
            continue;
        }
        if let Ok(absolute) = std::path::absolute(&*path) {
            *path = absolute.display().to_string();
        }
    }
    c
}

/// `--load-state`: read and verify the file, build the machine its
/// configuration describes (with this run's `--engine` and `--clock`, and
/// its disks opened as [`restored_disk_modes`] decides), and restore the
/// state into it.
fn build_restored(args: &RunArgs, path: &Path, io: HostIo) -> Result<Built> {
    let saved = snapshot::read(path)?;
    let mut config = saved.config().clone();
    override_engine_and_clock(&mut config, args)?;
    let recorded = config.disks.clone();
    let positional = restored_disk_modes(&mut config, args)?;
    let rebuild = config.clone();
    let (mut machine, _) = build_and_load(&mut config, io, positional)?;
    for (i, d) in config.disks.iter().enumerate() {
        let how = match d.mode {
            DiskMode::Rw => "read-write",
            DiskMode::Ro => "read-only",
            DiskMode::Snapshot => "copy-on-write (the file is never written)",
        };
        let note = match recorded.get(i) {
            Some(r) if r.mode == DiskMode::Rw && d.mode != DiskMode::Rw => {
                "; the state records it rw: --trust-state-paths or --disk PATH,rw writes it"
            }
            _ => "",
        };
        eprintln!("ringside: restored disk {i} {}: {how}{note}", d.path);
    }
    saved.restore_into(&mut machine)?;
    Ok(Built {
        config,
        machine,
        rebuild,
    })
}

/// The modes a saved state's disks open in. A state file names its disks
/// by path, and a forged one can name any file the user can write, so
/// none is written unless the user says so on the command line
/// (docs/security.md): by default every disk opens copy-on-write;
/// `--trust-state-paths` keeps the modes the state records; `--disk
/// PATH[,MODE]` names the state's disk at its position, which must be the
/// same file, in a mode no wider than the state records (rw only where it
/// records rw). Returns the mode for an image the state names to boot that
/// turns out to be a disk.
fn restored_disk_modes(config: &mut MachineConfig, args: &RunArgs) -> Result<DiskMode> {
    if args.disk.len() > config.disks.len() {
        bail!(
            "{} --disk given, but the state has {} disks",
            args.disk.len(),
            config.disks.len()
        );
    }
    for (i, d) in config.disks.iter_mut().enumerate() {
        let Some(spec) = args.disk.get(i) else {
            if !args.trust_state_paths {
                d.mode = DiskMode::Snapshot;
            }
            continue;
        };
        let given = parse_disk(spec)?;
        if !same_file(&given.path, &d.path) {
            bail!(
                "--disk {spec}: disk {i} of the state is {}, not {}",
                d.path,
                given.path
            );
        }
        if given.mode == DiskMode::Rw && d.mode != DiskMode::Rw {
            bail!(
                "--disk {spec}: the state records disk {i} as {}; --disk may narrow a disk's mode, not widen it to rw",
                if d.mode == DiskMode::Ro { "ro" } else { "snapshot" }
            );
        }
        d.mode = given.mode;
    }
    Ok(if args.trust_state_paths {
        DiskMode::Rw
    } else {
        DiskMode::Snapshot
    })
}

/// Whether two paths name the same file (as absolute paths, or once
/// symlinks are resolved).
fn same_file(a: &str, b: &str) -> bool {
    let absolute = |p: &str| std::path::absolute(p).ok();
    if absolute(a).is_some() && absolute(a) == absolute(b) {
        return true;
    }
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// `--save-state-at N FILE`: a checkpoint that saves the machine, as
/// `rebuild` builds it, when exactly N instructions have retired.
fn save_checkpoint(
    values: &[String],
    rebuild: &MachineConfig,
    m: &Machine,
    engine: &dyn Engine,
) -> Result<Checkpoint> {
    let [n, file] = values else {
        bail!("--save-state-at takes two values, N and FILE");
    };
    let at: u64 = n
        .parse()
        .with_context(|| format!("--save-state-at: '{n}' is not a number of instructions"))?;
    if engine.name() == "kvm" {
        bail!("--save-state-at: the kvm engine counts no instructions in `run`; save the state under --engine interp (it restores under kvm)");
    }
    if at < m.clock.icount {
        bail!(
            "--save-state-at {at}: the restored machine has already retired {} instructions",
            m.clock.icount
        );
    }
    let path = PathBuf::from(file);
    let config_toml = rebuild.to_toml();
    Ok(Checkpoint {
        at,
        action: Box::new(move |s: &Session| {
            let m = &s.machine;
            snapshot::save(m, &config_toml, &path).context("--save-state-at")?;
            let script = match s.script_bytes_read() {
                Some(n) => format!(" (input script: {n} bytes read)"),
                None => String::new(),
            };
            eprintln!(
                "ringside: saved the state at {} instructions to {}{script}",
                m.clock.icount,
                path.display()
            );
            Ok(())
        }),
    })
}

fn run(args: RunArgs) -> Result<i32> {
    let text = args.display == DisplayArg::Text;
    // A line on stderr while a long run is silent, where stderr is a
    // terminal the text screen does not own; Ctrl-C as a signal (not a
    // key for the guest) ends the run with a summary.
    let progress = crate::progress::Progress::new(!text && std::io::stderr().is_terminal());
    if !std::io::stdin().is_terminal() {
        crate::progress::catch_interrupt();
    }
    // The text screen owns the terminal: COM1 goes to the log file if one
    // is named, else nowhere (it would garble the screen).
    let com1: Box<dyn Write + Send> = match &args.com1_log {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("--com1-log {}: cannot create", path.display()))?,
        ),
        None if text => Box::new(std::io::sink()),
        None => progress.watch(Box::new(std::io::stdout())),
    };
    // So does the debug console (port 0xE9), which goes to stderr.
    let debug_console: Box<dyn Write + Send> = if text {
        Box::new(std::io::sink())
    } else {
        progress.watch(Box::new(std::io::stderr()))
    };
    let io = HostIo {
        com1,
        com2: Box::new(std::io::sink()),
        debug_console,
    };
    let Built {
        config,
        machine: m,
        rebuild,
    } = build(&args, io)?;
    let engine = make_engine(&config.machine.engine)?;
    let checkpoint = match &args.save_state_at {
        Some(values) => Some(save_checkpoint(values, &rebuild, &m, engine.as_ref())?),
        None => None,
    };
    let (input, raw) = host_input();
    let mut session = Session::new(m, engine, input, config.clock.mode);
    session.set_text_display(text);
    session.set_progress(progress);
    if let Some(c) = checkpoint {
        session.set_checkpoint(c);
    }
    let start = Instant::now();
    let end = session.run(args.max_insns);
    let wall = start.elapsed().as_secs_f64();
    session.finish_progress();
    drop(raw);
    let _ = std::io::stdout().flush();
    let end = end?;
    let m = &session.machine;
    let missed_checkpoint = session.checkpoint_pending();
    if let Some(at) = missed_checkpoint {
        eprintln!(
            "ringside: the run ended after {} instructions, before --save-state-at {at}: no state was saved",
            m.clock.icount
        );
    }
    let (exit, code) = match end {
        SessionEnd::Quit => {
            eprintln!("ringside: quit {}", how_far(m, wall));
            ("quit", status::QUIT)
        }
        SessionEnd::Interrupted => {
            eprintln!("ringside: interrupted (Ctrl-C) {}", how_far(m, wall));
            ("interrupted", status::INTERRUPTED)
        }
        SessionEnd::Machine(RunOutcome::Stopped(r)) => {
            let (label, code, message) = machine_end(&r, m.bus.signals.post_code);
            if let Some(message) = message {
                eprintln!("ringside: {message}");
            }
            (label, code)
        }
        SessionEnd::Machine(RunOutcome::Event(e)) => {
            // `run` intercepts no vectors; only the debugger does.
            eprintln!("ringside: unexpected event exit: {e:?}");
            ("exception", status::ERROR)
        }
        SessionEnd::Machine(RunOutcome::InstructionLimit) => {
            let what = if ran_uncounted(&session.engine.stats()) {
                "--max-insns limit (under kvm: KVM_RUN entries, docs/kvm.md)"
            } else {
                "instruction limit"
            };
            eprintln!(
                "ringside: {what} reached at {:04x}:{:08x}",
                m.cpu.seg[1].selector, m.cpu.eip
            );
            ("instruction-limit", status::INSTRUCTION_LIMIT)
        }
    };
    if args.stats || args.stats_json.is_some() {
        let st = session.engine.stats();
        let counted = m.clock.icount;
        // KVM counts only what it single-steps; what it ran freely is
        // counted nowhere, so the total is unknown (null), not the steps.
        let instructions = (!ran_uncounted(&st)).then_some(counted);
        let json = serde_json::json!({
            "engine": session.engine.name(),
            "instructions": instructions,
            "instructions_counted": counted,
            "wall_s": wall,
            "mips": instructions
                .filter(|&n| wall > 0.0 && n > 0)
                .map(|n| n as f64 / wall / 1e6),
            "exit": exit,
            "exit_code": code,
            "reboots": m.reboots,
            "post_code": m.bus.signals.post_code,
            "counters": st.counters,
        });
        if args.stats {
            eprintln!("{json}");
        }
        if let Some(p) = &args.stats_json {
            write_atomically(p, format!("{json}\n").as_bytes())?;
        }
    }
    // A state the user asked for and did not get is an error, whatever
    // the guest's own status was.
    if missed_checkpoint.is_some() && code == 0 {
        return Ok(status::ERROR);
    }
    Ok(code)
}

/// Whether the engine ran guest code whose instructions it could not
/// count (kvm's free KVM_RUN entries): its budget then capped entries, and
/// the machine's instruction count holds only what was counted.
fn ran_uncounted(stats: &EngineStats) -> bool {
    stats.counters.get("uncounted_runs").is_some_and(|&n| n > 0)
}

/// Build one machine of a comparison: the same configuration and image for
/// both sides, no host input, output discarded.
fn comparison_side(args: &RunArgs, engine: &str) -> Result<ringside_debugger::lockstep::Side> {
    let io = HostIo::discarded();
    let (_, machine) = build_machine(args, io)?;
    Ok(ringside_debugger::lockstep::Side {
        machine,
        engine: make_engine(engine)?,
    })
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0x").trim_start_matches("0X");
    u32::from_str_radix(digits, 16).map_err(|e| format!("{s}: not a hexadecimal address: {e}"))
}

fn jit_dump(at: u64, eip: Option<u32>, args: RunArgs) -> Result<i32> {
    let (_, mut m) = build_machine(&args, HostIo::discarded())?;
    // The budget of `run_until_stopped` also counts delivered events, so
    // run on until the count is reached or the guest stops.
    let mut interp = ringside_interp::Interp::new();
    while m.clock.icount < at {
        let outcome = m.run_until_stopped(&mut interp, Some(at - m.clock.icount))?;
        if !matches!(outcome, ringside_core::RunOutcome::InstructionLimit) {
            bail!(
                "the guest stopped after {} instructions ({outcome:?})",
                m.clock.icount
            );
        }
    }
    if let Some(address) = eip {
        use ringside_core::{Budget, Engine, Exit};
        m.breakpoints.push(address);
        let limit = args.max_insns.unwrap_or(1_000_000_000);
        let start = m.clock.icount;
        loop {
            let before = m.clock.icount;
            if before - start >= limit {
                bail!("the guest did not reach {address:#x} in {limit} instructions");
            }
            match interp.run(&mut m, Budget { instructions: 1 << 22 })? {
                Exit::Breakpoint => break,
                Exit::BudgetSpent if m.clock.icount > before => {}
                Exit::Halted if m.skip_to_next_deadline() => {}
                other => bail!(
                    "the guest stopped after {} instructions before reaching {address:#x} ({other:?})",
                    m.clock.icount
                ),
            }
        }
        m.breakpoints.clear();
    }
    let dump = ringside_jit::Jit::new()
        .dump_block(&mut m)
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "; guest block at {:04x}:{:08x}, after {} instructions",
        m.cpu.seg(ringside_core::cpu::SegReg::Cs).selector,
        m.cpu.eip,
        m.clock.icount
    );
    print!("{}", dump.guest);
    println!();
    print!("{}", dump.ir);
    println!();
    println!("; host code (x86-64)");
    print!("{}", dump.host);
    Ok(0)
}

fn compare(engines: &str, args: RunArgs) -> Result<i32> {
    use ringside_debugger::lockstep::{format_divergence, run_with_input, Input, Outcome};
    use std::io::{IsTerminal, Read};
    let Some((ea, eb)) = engines.split_once(',') else {
        bail!("--engines takes two engine names, e.g. interp,interp");
    };
    if args.save_state_at.is_some() {
        bail!("--save-state-at is an option of `run`");
    }
    let mut a = comparison_side(&args, ea)?;
    let mut b = comparison_side(&args, eb)?;
    let limit = args.max_insns.unwrap_or(100_000_000);
    // Input from a pipe or a file is a script, as for `run`: both machines
    // get each line when the guest waits for input.
    let mut input = if std::io::stdin().is_terminal() {
        Input::none()
    } else {
        let mut script = Vec::new();
        std::io::stdin()
            .read_to_end(&mut script)
            .context("reading the input script from stdin")?;
        Input::script(
            &script,
            ringside_core::hostio::give_host_input::<ringside_devices::uart::Uart16550>,
            ringside_core::hostio::request_host_input::<ringside_devices::uart::Uart16550>,
        )
    };
    // In chunks, so a terminal sees how far it got (a bar to the limit)
    // and Ctrl-C stops it with a summary; nothing extra off a terminal.
    const CHUNK: u64 = 1 << 20;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(limit);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "compare {bar:30} {human_pos}/{human_len} instructions, {per_sec}, {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    crate::progress::catch_interrupt();
    let mut done = 0u64;
    let outcome = loop {
        let chunk = CHUNK.min(limit - done);
        let outcome = run_with_input(&mut a, &mut b, chunk, &mut input);
        match outcome {
            Ok(Outcome::NoDivergence { instructions }) => {
                done += instructions;
                bar.set_position(done);
                if done >= limit {
                    break Ok(Outcome::NoDivergence { instructions: done });
                }
                if crate::progress::interrupted() {
                    bar.finish_and_clear();
                    println!("no divergence in {done} instructions (interrupted by Ctrl-C before the limit of {limit})");
                    return Ok(status::INTERRUPTED);
                }
            }
            // The counts of the last chunk, made counts of the whole run.
            Ok(Outcome::Stopped {
                reason,
                instructions,
            }) => {
                break Ok(Outcome::Stopped {
                    reason,
                    instructions: done + instructions,
                })
            }
            Ok(Outcome::Divergence(mut d)) => {
                d.instruction += done;
                break Ok(Outcome::Divergence(d));
            }
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    match outcome? {
        Outcome::NoDivergence { instructions } => {
            println!("no divergence in {instructions} instructions");
            Ok(0)
        }
        Outcome::Stopped {
            reason,
            instructions,
        } => {
            println!("no divergence in {instructions} instructions (both stopped: {reason})");
            Ok(0)
        }
        Outcome::Divergence(d) => {
            print!("{}", format_divergence(&d, ea, eb));
            Ok(1)
        }
    }
}

/// Write a file through a temporary file and a rename, so a reader never
/// sees half of it and an old copy is never lost to a failed write.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn guests(export: Option<&Path>) -> Result<()> {
    match export {
        None => {
            for g in ringside_guests::GUESTS {
                println!("builtin:{:<16} {}", g.name, g.description);
            }
            for d in ringside_guests::DISKS {
                println!("builtin:{:<16} {} (disk image)", d.name, d.description);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for g in ringside_guests::GUESTS {
                write_atomically(&dir.join(format!("{}.elf", g.name)), g.image)?;
            }
            for d in ringside_guests::DISKS {
                write_atomically(&dir.join(format!("{}.img", d.name)), d.image)?;
            }
            let n = ringside_guests::GUESTS.len() + ringside_guests::DISKS.len();
            println!("wrote {n} guests to {}", dir.display());
        }
    }
    Ok(())
}

fn conformance_sst(dir: &Path, engine: &str, json: bool) -> Result<i32> {
    make_engine(engine)?;
    let name = engine.to_owned();
    let factory = move || make_engine(&name).expect("the engine name was checked above");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = ringside_testsuites::sst::run_dir(dir, &factory, threads)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.per_file)?);
    } else {
        for (file, r) in &report.per_file {
            for f in &r.failures {
                println!("FAIL {file}: {f}");
            }
        }
    }
    for (reason, n) in report.skip_reasons() {
        println!("skipped {n}: {reason}");
    }
    println!("{}", report.summary());
    let (_, failed, _) = report.totals();
    Ok(if failed == 0 { 0 } else { 1 })
}
