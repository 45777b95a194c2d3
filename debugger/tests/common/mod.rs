//! What the debugger's integration tests share: built-in kernels booted
//! directly (like qemu -kernel) into a debugger, COM1 captured.

use ringside_core::boot;
use ringside_core::config::MachineConfig;
use ringside_core::hostio::give_host_input;
use ringside_core::{Engine, Machine};
use ringside_debugger::symbols::Symbols;
use ringside_debugger::Debugger;
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::uart::Uart16550;
use ringside_devices::SharedBuffer;

/// The engines the tests use, by name.
pub fn factory() -> ringside_debugger::EngineFactory {
    Box::new(|name: &str| -> Result<Box<dyn Engine>, String> {
        match name {
            "interp" => Ok(Box::new(ringside_interp::Interp::new())),
            "jit" => Ok(Box::new(ringside_jit::Jit::with_threshold(1))),
            "kvm" => Ok(Box::new(
                ringside_kvm::Kvm::new().map_err(|e| e.to_string())?,
            )),
            other => Err(format!("no engine {other}")),
        }
    })
}

/// The default PC booted into the built-in kernel `guest`, with COM1.
pub fn machine(guest: &str) -> (Machine, SharedBuffer) {
    let com1 = SharedBuffer::default();
    let mut m = build_pc(&MachineConfig::default(), HostIo::com1_only(com1.clone()))
        .expect("the default PC builds");
    let image = ringside_guests::find(guest).expect("built in").image;
    boot::load_multiboot(&mut m, image, "").expect("the kernel loads");
    (m, com1)
}

/// That machine in a debugger on `engine`, with the kernel's symbols and
/// host input routed to COM1 (as `ringside debug` wires it).
pub fn debugger(guest: &str, engine: &str) -> (Debugger, SharedBuffer) {
    let (m, com1) = machine(guest);
    let f = factory();
    let e = f(engine).expect("the engine exists");
    let mut d = Debugger::new(m, e, f);
    d.symbols = Symbols::from_elf(ringside_guests::find(guest).expect("built in").image);
    d.host_input = Some(give_host_input::<Uart16550>);
    (d, com1)
}
