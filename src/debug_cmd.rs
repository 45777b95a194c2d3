//! `ringside debug`: the guest in the debugger's terminal UI, built like
//! `ringside run` builds it, with COM1 captured for the UI's console pane;
//! with `--compare ENGINE` a second machine from the same options runs in
//! lockstep beside it. With `--batch`, `-x FILE` or commands on a pipe it
//! runs the same command language without a terminal and prints the
//! replies as text (`tui::run_batch`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use ringside_debugger::tui::{run_batch, run_terminal, App};
use ringside_devices::pc::HostIo;
use ringside_devices::SharedBuffer;

use crate::cli::{build_machine, RunArgs};
use crate::frontends::build_debugger;

/// How `ringside debug` takes its commands.
pub struct Batch {
    /// `--batch`: no terminal UI even on a terminal.
    pub batch: bool,
    /// `-x FILE`: command files, run in order before stdin's commands.
    pub files: Vec<PathBuf>,
}

pub fn main(compare: Option<String>, batch: Batch, run: RunArgs) -> Result<i32> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let batch_mode = batch.batch || !batch.files.is_empty() || !stdin_is_terminal;
    if !batch_mode && !std::io::stdout().is_terminal() {
        bail!("ringside debug is a terminal UI: run it with stdout on a terminal, or script it with --batch -x FILE or commands on stdin");
    }
    // The guest's serial output and its debug console (port 0xE9) go to
    // the console pane: the terminal itself belongs to the UI. In batch
    // mode they go to stdout and stderr, in order with the replies.
    let console = SharedBuffer::default();
    let io = if batch_mode {
        HostIo {
            com1: Box::new(std::io::stdout()),
            com2: Box::new(std::io::sink()),
            debug_console: Box::new(std::io::stderr()),
        }
    } else {
        HostIo {
            com1: Box::new(console.clone()),
            com2: Box::new(std::io::sink()),
            debug_console: Box::new(console.clone()),
        }
    };
    let (_config, mut debugger) = build_debugger(&run, io)?;
    if let Some(engine) = compare {
        // The partner's output would only repeat the first machine's (a
        // difference shows as a divergence first).
        let quiet = HostIo::discarded();
        let (_, machine) = build_machine(&run, quiet).context("the compare partner")?;
        debugger
            .set_partner(machine, &engine)
            .map_err(|e| anyhow!("--compare {engine}: {e}"))?;
    }
    let mut app = App::new(debugger, console);
    if batch_mode {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        let mut errors = 0;
        let mut quit = false;
        for file in &batch.files {
            let script = std::fs::File::open(file)
                .with_context(|| format!("-x {}: cannot open", file.display()))?;
            let end = run_batch(
                &mut app,
                std::io::BufReader::new(script),
                &mut out,
                &mut err,
            )
            .with_context(|| format!("-x {}", file.display()))?;
            errors += end.errors;
            if end.quit {
                quit = true;
                break;
            }
        }
        if !quit && !stdin_is_terminal {
            let end = run_batch(&mut app, std::io::stdin().lock(), &mut out, &mut err)
                .context("commands from stdin")?;
            errors += end.errors;
        }
        // Like gdb -batch: 1 when a command failed.
        return Ok(i32::from(errors > 0));
    }
    run_terminal(&mut app).context("the terminal")?;
    Ok(0)
}
