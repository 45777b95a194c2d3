//! The `ringside` command: argument parsing and wiring only. Everything it
//! does is a call into the library crates.

mod bench_cmd;
mod cli;
mod debug_cmd;
mod frontends;
mod gdb_cmd;
mod lab_cmd;
mod lab_engine;
mod progress;
mod session;

fn main() {
    std::process::exit(cli::main());
}
