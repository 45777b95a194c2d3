//! Batch mode: the UI's command language without a terminal, for scripts
//! (like gdb's `-batch -x FILE` and Bochs's command files). Each command
//! runs as if typed on the command line; a command that runs the guest
//! (`c`, `s`, `n`) returns when the guest stops, so the next command sees
//! the stopped machine. Replies go to `out` as text, after the command
//! echoed as `> command`; errors go to `err`.

use std::io::{self, BufRead, Write};

use super::{App, Tick};

/// What a batch run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchEnd {
    /// Commands run.
    pub commands: u64,
    /// Commands that answered with an error.
    pub errors: u64,
    /// The script said `quit` (the rest was not run).
    pub quit: bool,
}

/// Run every line of `script` through the UI: blank lines and lines
/// starting with `#` are skipped.
pub fn run_batch(
    app: &mut App,
    script: impl BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<BatchEnd> {
    let mut end = BatchEnd::default();
    // What the UI said before the script (its greeting) is not repeated.
    let (_, mut mark) = app.output_since(0);
    for line in script.lines() {
        let line = line?;
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        end.commands += 1;
        app.submit(command);
        // The echo first (the guest's output during a run comes after it).
        let mut failed = print_since(app, &mut mark, out, err)?;
        // A run command: on to the stop (virtual time only, no pacing).
        while app.is_running() {
            if app.tick() == Tick::JustStopped {
                break;
            }
        }
        failed |= print_since(app, &mut mark, out, err)?;
        if failed {
            end.errors += 1;
        }
        if app.quit_requested() {
            end.quit = true;
            break;
        }
    }
    Ok(end)
}

/// Print what the UI said after `mark`; true if any of it was an error.
fn print_since(
    app: &App,
    mark: &mut u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<bool> {
    let (lines, next) = app.output_since(*mark);
    *mark = next;
    let mut failed = false;
    for (text, error) in lines {
        if error {
            failed = true;
            writeln!(err, "{text}")?;
        } else {
            writeln!(out, "{text}")?;
        }
    }
    out.flush()?;
    Ok(failed)
}
