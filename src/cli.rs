//! Command-line front-end (clap). `ringside` with no command runs the
//! default built-in guest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ringside_core::{boot, Engine, Machine, RunOutcome, StopReason};

/// The guest `cargo run --release` boots.
pub const DEFAULT_GUEST: &str = "builtin:hello";

#[derive(Parser)]
#[command(
    name = "ringside",
    version,
    about = "An IA-32 PC emulator with interchangeable execution engines"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest: a built-in (builtin:NAME), a Multiboot ELF kernel, or a raw ROM with --bios.
    Run(RunArgs),
    /// List the built-in guests, or write them out as files.
    Guests {
        /// Write every built-in guest as NAME.elf into this directory.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
    },
    /// Run instruction conformance suites.
    Conformance {
        #[command(subcommand)]
        suite: Suite,
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

#[derive(Args, Default)]
struct RunArgs {
    /// The guest: builtin:NAME or a Multiboot ELF file.
    image: Option<String>,
    /// A raw ROM image mapped below 1 MiB and 4 GiB; the CPU starts at the reset vector.
    #[arg(long, value_name = "ROM", conflicts_with = "image")]
    bios: Option<PathBuf>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    mem: u32,
    /// Execution engine.
    #[arg(long, default_value = "interp")]
    engine: String,
    /// Stop after this many instructions.
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// Print run statistics as one JSON object on stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Write run statistics as JSON to this file.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
    /// Kernel command line for Multiboot guests.
    #[arg(long, default_value = "")]
    cmdline: String,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(RunArgs {
            image: Some(DEFAULT_GUEST.into()),
            mem: 32,
            engine: "interp".into(),
            ..RunArgs::default()
        }),
        Some(Command::Run(args)) => run(args),
        Some(Command::Guests { export }) => guests(export.as_deref()).map(|_| 0),
        Some(Command::Conformance {
            suite: Suite::Sst { dir, engine, json },
        }) => conformance_sst(&dir, &engine, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringside: error: {e:#}");
            status::ERROR
        }
    }
}

/// The engines this build has, by name.
fn make_engine(name: &str) -> Result<Box<dyn Engine>> {
    match name {
        "interp" => Ok(Box::new(ringside_interp::Interp::new())),
        other => bail!("unknown engine '{other}' (available: interp)"),
    }
}

/// Exit statuses other than a guest's own debug-exit value.
pub mod status {
    pub const HALTED: i32 = 0;
    pub const ERROR: i32 = 2;
    pub const INSTRUCTION_LIMIT: i32 = 124;
    pub const TRIPLE_FAULT: i32 = 125;
    pub const RESET: i32 = 126;
}

fn load_guest(m: &mut Machine, args: &RunArgs) -> Result<String> {
    if let Some(rom) = &args.bios {
        let image =
            std::fs::read(rom).with_context(|| format!("cannot read ROM {}", rom.display()))?;
        boot::load_rom(m, &image).with_context(|| format!("cannot load ROM {}", rom.display()))?;
        return Ok(rom.display().to_string());
    }
    let Some(name) = &args.image else {
        bail!("nothing to run: give an IMAGE (builtin:NAME or a Multiboot ELF) or --bios ROM");
    };
    let image: Vec<u8> = if let Some(b) = name.strip_prefix("builtin:") {
        match ringside_guests::find(b) {
            Some(g) => g.image.to_vec(),
            None => bail!("no built-in guest '{b}' (see `ringside guests`)"),
        }
    } else {
        std::fs::read(name).with_context(|| format!("cannot read {name}"))?
    };
    if !boot::is_multiboot_elf(&image) {
        bail!("{name} is not a Multiboot ELF kernel (raw ROM images need --bios)");
    }
    boot::load_multiboot(m, &image, &args.cmdline)
        .with_context(|| format!("cannot load {name}"))?;
    Ok(name.clone())
}

fn run(args: RunArgs) -> Result<i32> {
    let mut engine = make_engine(&args.engine)?;
    let mut m = ringside_devices::standard_machine(
        args.mem,
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    )?;
    load_guest(&mut m, &args)?;
    let start = Instant::now();
    let outcome = m.run_until_stopped(engine.as_mut(), args.max_insns);
    let wall = start.elapsed().as_secs_f64();
    let _ = std::io::stdout().flush();
    let outcome = outcome?;
    let (exit, code) = match outcome {
        RunOutcome::Stopped(StopReason::DebugExit(v)) => ("debug-exit", v as i32),
        RunOutcome::Stopped(r @ (StopReason::DeadHalt { .. } | StopReason::IdleForever { .. })) => {
            eprintln!("ringside: {r}");
            ("halt", status::HALTED)
        }
        RunOutcome::Stopped(r @ StopReason::TripleFault { .. }) => {
            eprintln!("ringside: {r}");
            ("triple-fault", status::TRIPLE_FAULT)
        }
        RunOutcome::Stopped(r @ StopReason::ResetRequested) => {
            eprintln!("ringside: {r}");
            ("reset", status::RESET)
        }
        RunOutcome::Exception(f) => {
            // `run` intercepts no vectors; only the debugger does.
            eprintln!("ringside: unexpected exception exit: {f:?}");
            ("exception", status::ERROR)
        }
        RunOutcome::InstructionLimit => {
            eprintln!(
                "ringside: instruction limit reached at {:04x}:{:08x}",
                m.cpu.seg[1].selector, m.cpu.eip
            );
            ("instruction-limit", status::INSTRUCTION_LIMIT)
        }
    };
    if args.stats || args.stats_json.is_some() {
        let st = engine.stats();
        let instructions = m.clock.icount;
        let json = serde_json::json!({
            "engine": engine.name(),
            "instructions": instructions,
            "wall_s": wall,
            "mips": if wall > 0.0 { instructions as f64 / wall / 1e6 } else { 0.0 },
            "exit": exit,
            "exit_code": code,
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
    Ok(code)
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
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for g in ringside_guests::GUESTS {
                write_atomically(&dir.join(format!("{}.elf", g.name)), g.image)?;
            }
            println!(
                "wrote {} guests to {}",
                ringside_guests::GUESTS.len(),
                dir.display()
            );
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
