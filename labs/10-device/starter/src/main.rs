//! Runs the guest (`guest/hash.c`, built by build.rs) on a PC with your
//! device plugged in, on ringside's interpreter, with COM1 on standard
//! output; exits with the guest's status. Given: you do not need to
//! change it. `cargo run --release --offline` runs it.

use ringside_core::config::MachineConfig;
use ringside_core::{boot, RunOutcome, StopReason};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_interp::Interp;

use lab10_device::{Hasher, HASH_PORTS};

const GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut m = build_pc(
        &MachineConfig::default(),
        HostIo::com1_only(std::io::stdout()),
    )?;
    m.add_port_device(Box::new(Hasher::new()), &[HASH_PORTS]);
    boot::load_multiboot(&mut m, GUEST, "")?;
    let outcome = m.run_until_stopped(&mut Interp::new(), Some(50_000_000))?;
    match outcome {
        RunOutcome::Stopped(StopReason::DebugExit(status)) => std::process::exit(status.into()),
        other => {
            eprintln!("the guest did not finish: {other:?}");
            std::process::exit(3)
        }
    }
}
