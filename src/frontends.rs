//! What the debugger front-ends (`ringside debug`, `ringside gdb`) share:
//! a machine built from the run options like `ringside run` builds it, in a
//! debugger with the engines this build has and the symbols of the booted
//! kernel.

use anyhow::Result;
use ringside_core::config::MachineConfig;
use ringside_core::hostio::give_host_input;
use ringside_debugger::symbols::Symbols;
use ringside_debugger::{Debugger, EngineFactory};
use ringside_devices::pc::HostIo;
use ringside_devices::uart::Uart16550;

use crate::cli::{build_debuggee, make_engine, RunArgs};

/// Engines by name, for the debugger's `engine` command and compare mode.
pub fn engine_factory() -> EngineFactory {
    Box::new(|name: &str| make_engine(name).map_err(|e| format!("{e:#}")))
}

/// The symbols of the kernel the configuration boots (none for ROMs,
/// disks and stripped kernels).
pub fn image_symbols(config: &MachineConfig) -> Symbols {
    let name = &config.boot.image;
    let bytes = if let Some(b) = name.strip_prefix("builtin:") {
        ringside_guests::find(b).map(|g| g.image.to_vec())
    } else if !name.is_empty() {
        crate::cli::read_if_kernel(std::path::Path::new(name))
            .ok()
            .flatten()
    } else {
        None
    };
    bytes.map_or_else(Symbols::none, |b| Symbols::from_elf(&b))
}

/// A debugger on the machine the run options describe, on the configured
/// engine, ready to save its machine (`save`: the configuration that
/// builds it again is recorded).
pub fn build_debugger(args: &RunArgs, io: HostIo) -> Result<(MachineConfig, Debugger)> {
    let (config, rebuild, machine) = build_debuggee(args, io)?;
    let engine = make_engine(&config.machine.engine)?;
    let mut d = Debugger::new(machine, engine, engine_factory());
    d.symbols = image_symbols(&config);
    d.host_input = Some(give_host_input::<Uart16550>);
    d.config_toml = rebuild.to_toml();
    Ok((config, d))
}
