//! The `ringside` command: argument parsing and wiring only. Everything it
//! does is a call into the library crates.

mod bench_cmd;
mod child;
mod cli;
mod debug_cmd;
mod frontends;
mod gdb_cmd;
mod lab_cmd;
mod lab_engine;
mod progress;
mod session;

/// The status of a command whose standard output was closed under it
/// (`ringside guests | head -1`): 128 + SIGPIPE, as a shell reports a
/// program a broken pipe ended.
const CLOSED_STDOUT: i32 = 141;

fn main() {
    // println! panics when stdout is a pipe whose reader has gone (Rust
    // ignores SIGPIPE, so the write fails with EPIPE). That is not a bug
    // to report: end quietly with 141 instead of a panic message and 101.
    // Any other panic is reported as before.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !stdout_closed(info.payload()) {
            report(info);
        }
    }));
    let code = std::panic::catch_unwind(cli::main).unwrap_or_else(|payload| {
        if stdout_closed(payload.as_ref()) {
            CLOSED_STDOUT
        } else {
            101
        }
    });
    std::process::exit(code);
}

/// The panic print! and println! raise when stdout's reader has gone.
fn stdout_closed(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}
