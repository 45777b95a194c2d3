//! A system reset: what a PC does when a guest asks for one and what the
//! machine keeps across it.
//!
//! A guest resets the PC by pulsing the CPU's RESET line through the 8042
//! (command 0xFE, or bit 0 of its output port), through the fast-reset bit
//! of port 0x92, or by a triple fault, whose shutdown cycle the chipset
//! turns into a reset. On a PC each of them restarts the machine: the CPU
//! takes its reset state (SDM Vol. 3A 9.1.1, "Processor State After
//! Reset": CS = F000 with base FFFF0000, EIP = FFF0, real mode, the TSC at
//! 0) and fetches the firmware at the reset vector, the chipset's devices
//! return to their reset state, and what survives a reset survives: RAM,
//! the battery-backed RTC and CMOS, the disks. A20 is on again, as the
//! 8042 and port 0x92 leave it at power-on.
//!
//! What restarts the guest depends on how the machine was booted
//! ([`Restart`]): firmware (ringside's BIOS or a raw ROM) runs again from
//! the reset vector; a Multiboot kernel loaded directly, which has no
//! firmware to reload it, is loaded again by the loader, as QEMU's
//! `-kernel` does (its option ROM runs again after a reset). A machine
//! that was never booted by either (a test's bare machine) and a machine
//! configured with `machine.no_reboot` (`--no-reboot`) stop instead, as
//! before: `StopReason::ResetRequested` or `StopReason::TripleFault`.
//!
//! The reset is the machine's, not an engine's: an engine reports the
//! request or the triple fault as a stop, and every run loop (core's
//! `run_until_stopped`, the front-end's session, the debugger, the
//! lockstep comparator) hands it to [`Machine::settle_stop`], which
//! reboots and lets the run go on. Virtual time and the instruction count
//! go on counting across a reboot, so `--max-insns` bounds a guest that
//! resets in a loop and the same input gives the same count.

use std::sync::Arc;

use crate::boot::{self, BootError};
use crate::engine::StopReason;
use crate::machine::Machine;

/// How the machine was booted, so that a reset can boot it again.
#[derive(Clone, Debug, Default)]
pub enum Restart {
    /// Nothing booted it: a reset stops the machine.
    #[default]
    Stop,
    /// Firmware at the reset vector (a raw ROM or ringside's BIOS): the CPU
    /// starts there again.
    ResetVector,
    /// A Multiboot kernel loaded directly: the loader loads it again.
    Multiboot(Arc<MultibootImage>),
}

/// What the Multiboot loader was given, kept to load it again.
#[derive(Debug)]
pub struct MultibootImage {
    pub image: Vec<u8>,
    pub cmdline: String,
    /// Each module's bytes and string.
    pub modules: Vec<(Vec<u8>, String)>,
}

impl Machine {
    /// Whether a reset request or a triple fault reboots this machine
    /// (rather than stopping it).
    pub fn reboots_on_reset(&self) -> bool {
        !self.no_reboot && !matches!(self.restart, Restart::Stop)
    }

    /// A stop an engine reported. A reset request or a triple fault
    /// reboots the machine when it [reboots on reset](Self::reboots_on_reset)
    /// and returns `None`: the run goes on from the reset vector (or the
    /// reloaded kernel's entry). Any other stop is returned: it ends the run.
    pub fn settle_stop(&mut self, reason: StopReason) -> Result<Option<StopReason>, BootError> {
        if reason.is_reset() && self.reboots_on_reset() {
            self.reset()?;
            Ok(None)
        } else {
            Ok(Some(reason))
        }
    }

    /// Reset the machine as a PC's RESET line does (see the module doc):
    /// devices, A20 and the CPU to their reset state, RAM and the RTC
    /// kept; then the boot method starts again. Counted in `reboots`.
    /// An error means a Multiboot kernel that loaded at power-on did not
    /// load again, or a device refused its own power-on state; neither can
    /// come from what the guest did.
    pub fn reset(&mut self) -> Result<(), BootError> {
        let now = self.clock.now_ns();
        self.bus.reset(now)?;
        self.set_a20(true);
        self.reset_cpu();
        if let Restart::Multiboot(kernel) = self.restart.clone() {
            let modules: Vec<boot::Module> = kernel
                .modules
                .iter()
                .map(|(data, string)| boot::Module { data, string })
                .collect();
            boot::load_multiboot_image(self, &kernel.image, &kernel.cmdline, &modules)?;
        }
        // RESET sets the TSC to 0 (SDM Vol. 3B 17.17); it reads icount +
        // offset.
        self.cpu.msr.tsc_offset = self.clock.icount.wrapping_neg();
        self.watch.hits = 0;
        self.sync_debug_registers();
        self.reboots += 1;
        // Engines take the machine over afresh: new mode, new code.
        self.handover();
        Ok(())
    }
}
