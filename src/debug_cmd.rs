//! `ringside debug`: the guest in the debugger's terminal UI, built like
//! `ringside run` builds it, with COM1 captured for the UI's console pane;
//! with `--compare ENGINE` a second machine from the same options runs in
//! lockstep beside it.

use std::io::IsTerminal;

use anyhow::{anyhow, bail, Context, Result};
use ringside_debugger::tui::{run_terminal, App};
use ringside_devices::pc::HostIo;
use ringside_devices::SharedBuffer;

use crate::cli::{build_machine, RunArgs};
use crate::frontends::build_debugger;

pub fn main(compare: Option<String>, run: RunArgs) -> Result<i32> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("ringside debug is a terminal UI: run it with stdin and stdout on a terminal");
    }
    // The guest's serial output and its debug console (port 0xE9) both go
    // to the console pane: the terminal itself belongs to the UI.
    let console = SharedBuffer::default();
    let io = HostIo {
        com1: Box::new(console.clone()),
        com2: Box::new(std::io::sink()),
        debug_console: Box::new(console.clone()),
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
    run_terminal(&mut app).context("the terminal")?;
    Ok(0)
}
