//! `ringside debug`: the terminal UI (being written; see the TUI work).

use anyhow::{bail, Result};

use crate::cli::RunArgs;

pub fn main(_compare: Option<String>, _run: RunArgs) -> Result<i32> {
    bail!("ringside debug: the terminal UI is not built yet")
}
