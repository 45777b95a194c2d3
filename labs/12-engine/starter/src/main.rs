//! Runs the built-in guest bench-int-small on the interpreter and on your
//! engine in lockstep — both machines one instruction at a time, their
//! CPU states compared after each — and says where they first differ,
//! or that they agree to the end, and how much your engine ran itself.
//! Given: you do not need to change it. `cargo run --release --offline`.

use ringside_core::boot;
use ringside_core::config::MachineConfig;
use ringside_debugger::lockstep::{self, Outcome, Side};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_interp::Interp;

use lab12_engine::Mine;

const GUEST: &str = "bench-int-small";

fn side(engine: Box<dyn ringside_core::Engine>) -> Result<Side, Box<dyn std::error::Error>> {
    let image = ringside_guests::find(GUEST).ok_or("no built-in guest bench-int-small")?;
    let mut machine = build_pc(&MachineConfig::default(), HostIo::discarded())?;
    boot::load_multiboot(&mut machine, image.image, "")?;
    Ok(Side { machine, engine })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = side(Box::new(Interp::new()))?;
    let mut b = side(Box::new(Mine::new()))?;
    let outcome = lockstep::run(&mut a, &mut b, 100_000_000)?;
    let stats = b.engine.stats();
    let own = stats.counters.get("own_instructions").copied().unwrap_or(0);
    let status = match &outcome {
        Outcome::Stopped {
            reason,
            instructions,
        } => {
            println!("lockstep: interp and mine agree on all {instructions} instructions of {GUEST} ({reason})");
            println!(
                "mine ran {own} of them itself ({:.1}%)",
                own as f64 * 100.0 / (*instructions).max(1) as f64
            );
            0
        }
        Outcome::NoDivergence { instructions } => {
            println!("lockstep: interp and mine agree on {instructions} instructions, and {GUEST} has not finished");
            1
        }
        Outcome::Divergence(d) => {
            println!("{}", lockstep::format_divergence(d, "interp", "mine"));
            1
        }
    };
    std::process::exit(status)
}
