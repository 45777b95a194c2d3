//! ringside-devices: the devices of the PC, each behind core's `Device`
//! trait and testable through its ports alone.
//!
//! The PC of the late 1990s: the 8259A PICs ([`pic`]), the 8254 PIT
//! ([`pit`]), the local and I/O APICs ([`lapic`], [`ioapic`]), the HPET,
//! the RTC and CMOS ([`rtc`]), the 16550A UARTs ([`uart`]), the 8042
//! keyboard controller ([`i8042`]), the IDE disk controller ([`ide`]),
//! the VGA text screen ([`vga_text`]), port 92h, ACPI power management
//! and tables, fw_cfg, and the emulator's own ports ([`emulator_ports`]:
//! debug-exit at 0xF4, POST codes at 0x80 and 0x190, the debug console
//! at 0xE9). [`pc`] wires them into a machine from a configuration.
//! Start reading at [`uart`].

pub mod acpi;
pub mod acpi_pm;
pub mod emulator_ports;
pub mod fw_cfg;
pub mod hpet;
pub mod i8042;
pub mod ide;
pub mod ioapic;
pub mod lapic;
pub mod pc;
pub mod pic;
pub mod pit;
pub mod port92;
pub mod rtc;
pub mod uart;
pub mod vga_text;

/// Output sinks live in core (`ringside_core::hostio`) so the debugger can
/// capture a guest's output without depending on this crate; they are
/// re-exported here for the front-end's wiring.
pub use ringside_core::hostio::{SharedBuffer, Sink};

use emulator_ports::{DebugConsole, DebugExit, PostCode, DEBUG_CONSOLE_PORT, DEBUG_EXIT_PORT};
use ringside_core::memory::MemoryError;
use ringside_core::Machine;
use uart::{Uart16550, COM1_BASE};

/// Build a machine with `mem_mib` MiB of RAM and this device set:
/// COM1 (output to `console`), debug-exit, POST codes and the debug console
/// (output to `debug_console`).
pub fn standard_machine(
    mem_mib: u32,
    console: Sink,
    debug_console: Sink,
) -> Result<Machine, MemoryError> {
    let mut m = Machine::with_ram_mib(mem_mib)?;
    m.add_port_device(
        Box::new(Uart16550::new(COM1_BASE, console)),
        &[(COM1_BASE, COM1_BASE + 7)],
    );
    m.add_port_device(Box::new(DebugExit), &[(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT)]);
    m.add_port_device(
        Box::new(PostCode::default()),
        &[(0x80, 0x80), (0x190, 0x190)],
    );
    m.add_port_device(
        Box::new(DebugConsole::new(debug_console)),
        &[(DEBUG_CONSOLE_PORT, DEBUG_CONSOLE_PORT)],
    );
    Ok(m)
}
