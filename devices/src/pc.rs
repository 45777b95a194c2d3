//! The PC: a machine built from a [`MachineConfig`] with the device set of
//! DESIGN.md section 6 wired the way a PC wires them — ISA IRQs to the
//! 8259A pair and the IOAPIC (IRQ 0 arriving at IOAPIC pin 2, as the MP
//! table says), the PIC's INTR to the local APIC's LINT0, MMIO windows at
//! 0xFEE00000 and 0xFEC00000, and the HPET's at 0xFED00000.

use std::path::Path;

use ringside_core::config::{DiskMode as ConfigDiskMode, MachineConfig};
use ringside_core::memory::MemoryError;
use ringside_core::Machine;
use thiserror::Error;

use crate::acpi::{self, Platform, FW_CFG_FILE, TABLES_BASE, TABLES_SIZE};
use crate::acpi_pm::{AcpiPm, PM_PORTS};
use crate::emulator_ports::{
    DebugConsole, DebugExit, PostCode, DEBUG_CONSOLE_PORT, DEBUG_EXIT_PORT,
};
use crate::fw_cfg::{e820_file, FwCfg, FwCfgContents, FW_CFG_PORTS};
use crate::hpet::{Hpet, HPET_BASE, HPET_SIZE};
use crate::i8042::KeyboardController;
use crate::ide::{Disk, DiskError, DiskMode, IdeChannel, PRIMARY_COMMAND_BLOCK, PRIMARY_CONTROL};
use crate::ioapic::{IoApic, IOAPIC_BASE, IOAPIC_SIZE};
use crate::lapic::{LocalApic, LAPIC_BASE, LAPIC_SIZE};
use crate::pic::{Pic, PIC_PORTS};
use crate::pit::{Pit, PIT_PORTS};
use crate::port92::SystemControlPort;
use crate::rtc::{CmosConfig, DiskGeometry, Rtc};
use crate::uart::Uart16550;
use crate::vga_text::{VgaText, PORT_RANGES as VGA_PORTS};
use crate::Sink;

#[derive(Debug, Error)]
pub enum PcError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Disk(DiskError),
    #[error("{0}")]
    Config(String),
    #[error("{error}")]
    Initrd { path: String, error: String },
}

/// The same file attached twice, once read-write: the guest's writes
/// through one disk would change what the other had read (and cached),
/// behind its back. Read-only and snapshot attachments of one file may
/// share it. The same file is the same canonical path.
fn refuse_a_file_written_through_two_disks(config: &MachineConfig) -> Result<(), PcError> {
    let canonical: Vec<_> = config
        .disks
        .iter()
        .map(|d| std::fs::canonicalize(&d.path).ok())
        .collect();
    for (i, a) in config.disks.iter().enumerate() {
        for (j, b) in config.disks.iter().enumerate().skip(i + 1) {
            let same = canonical[i].is_some() && canonical[i] == canonical[j];
            if same && (a.mode == ConfigDiskMode::Rw || b.mode == ConfigDiskMode::Rw) {
                return Err(PcError::Config(format!(
                    "disk {} is attached twice (disks {i} and {j}), once read-write: writes through one would change the other behind its back; attach it once, or both ro or snapshot",
                    b.path
                )));
            }
        }
    }
    Ok(())
}

/// Where the machine's character devices talk to the host.
pub struct HostIo {
    pub com1: Sink,
    pub com2: Sink,
    pub debug_console: Sink,
}

impl HostIo {
    /// COM1 to `com1`, nothing else anywhere: what tests and the debugger's
    /// front-ends capture.
    pub fn com1_only(com1: impl std::io::Write + Send + 'static) -> HostIo {
        HostIo {
            com1: Box::new(com1),
            com2: Box::new(std::io::sink()),
            debug_console: Box::new(std::io::sink()),
        }
    }

    /// All output discarded: the partner machine of a comparison.
    pub fn discarded() -> HostIo {
        HostIo::com1_only(std::io::sink())
    }

    /// Everything to stdout/stderr, as `ringside run` wires it.
    pub fn terminal() -> HostIo {
        HostIo {
            com1: Box::new(std::io::stdout()),
            com2: Box::new(std::io::sink()),
            debug_console: Box::new(std::io::stderr()),
        }
    }
}

/// IOAPIC inputs for bus lines: ISA IRQ 0 arrives at pin 2 and pin 0 is
/// left to the 8259A's INTR (the MP 1.4 "interrupt source override" every
/// PC chipset since the 82093AA has).
pub(crate) fn ioapic_pin_map() -> [u8; 24] {
    let mut map: [u8; 24] = std::array::from_fn(|i| i as u8);
    map.swap(0, 2);
    map
}

/// Build a PC from a configuration.
pub fn build_pc(config: &MachineConfig, io: HostIo) -> Result<Machine, PcError> {
    let mut m = Machine::with_ram_mib(config.machine.memory_mib)?;
    m.clock.ns_per_insn = config.clock.ns_per_instruction;
    m.no_reboot = config.machine.no_reboot;
    m.cpu_identity = config
        .cpu
        .identity()
        .map_err(|e| PcError::Config(e.to_string()))?;
    m.reset_cpu();
    let d = &config.devices;
    if d.pic {
        let pic = m.add_port_device(Box::new(Pic::new()), &PIC_PORTS);
        m.bus.add_irq_listener(pic);
        m.bus.set_pic(pic);
    }
    if d.pit {
        m.add_port_device(Box::new(Pit::new()), &PIT_PORTS);
    }
    if d.apic {
        let lapic = m.bus.add(Box::new(LocalApic::new()));
        m.map_mmio(LAPIC_BASE, LAPIC_SIZE, lapic);
        m.bus.set_lapic(lapic);
        // The IOAPIC's ID is 1, as the MP table says (ID 0 is the CPU's).
        let ioapic = m.bus.add(Box::new(IoApic::with_id(1)));
        m.map_mmio(IOAPIC_BASE, IOAPIC_SIZE, ioapic);
        m.bus.add_irq_listener_mapped(ioapic, ioapic_pin_map());
        m.bus.add_eoi_listener(ioapic);
    }
    let mut disks = Vec::new();
    if d.ide {
        refuse_a_file_written_through_two_disks(config)?;
        for dc in &config.disks {
            let mode = match dc.mode {
                ConfigDiskMode::Rw => DiskMode::ReadWrite,
                ConfigDiskMode::Ro => DiskMode::ReadOnly,
                ConfigDiskMode::Snapshot => DiskMode::Snapshot,
            };
            let disk = Disk::open(Path::new(&dc.path), mode).map_err(PcError::Disk)?;
            disks.push(disk);
        }
    }
    if d.rtc {
        let geometry = |i: usize| {
            disks.get(i).map(|disk: &Disk| {
                let g = disk.geometry();
                DiskGeometry {
                    cylinders: g.cylinders,
                    heads: g.heads,
                    sectors: g.sectors_per_track,
                }
            })
        };
        let cmos = CmosConfig {
            ram_bytes: config.machine.memory_mib as u64 * 1024 * 1024,
            math_coprocessor: false,
            hard_disks: [geometry(0), geometry(1)],
        };
        let rtc = Rtc::with_config(config.clock.rtc_start, &cmos);
        m.add_port_device(Box::new(rtc), &[(0x70, 0x71)]);
    }
    if d.keyboard {
        m.add_port_device(
            Box::new(KeyboardController::new()),
            &[(0x60, 0x60), (0x64, 0x64)],
        );
        m.add_port_device(Box::new(SystemControlPort::new()), &[(0x92, 0x92)]);
    }
    let HostIo {
        com1,
        com2,
        debug_console,
    } = io;
    if d.com1.enabled {
        let u = Uart16550::with_irq(d.com1.port, d.com1.irq, com1)
            .gate_irq_with_out2(d.com1.out2_gates_irq);
        m.add_port_device(Box::new(u), &[(d.com1.port, d.com1.port + 7)]);
    }
    if d.com2.enabled {
        let u = Uart16550::with_irq(d.com2.port, d.com2.irq, com2)
            .gate_irq_with_out2(d.com2.out2_gates_irq);
        m.add_port_device(Box::new(u), &[(d.com2.port, d.com2.port + 7)]);
    }
    {
        let mut disks = disks.into_iter();
        if let Some(master) = disks.next() {
            let ide = IdeChannel::new(master, disks.next());
            m.add_port_device(
                Box::new(ide),
                &[
                    (PRIMARY_COMMAND_BLOCK, PRIMARY_COMMAND_BLOCK + 7),
                    (PRIMARY_CONTROL, PRIMARY_CONTROL),
                ],
            );
        }
    }
    if d.vga {
        m.add_port_device(Box::new(VgaText::new()), &VGA_PORTS);
    }
    if d.debug_exit {
        m.add_port_device(Box::new(DebugExit), &[(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT)]);
    }
    if d.post_codes {
        m.add_port_device(
            Box::new(PostCode::default()),
            &[(0x80, 0x80), (0x190, 0x190)],
        );
    }
    if d.debug_console {
        m.add_port_device(
            Box::new(DebugConsole::new(debug_console)),
            &[(DEBUG_CONSOLE_PORT, DEBUG_CONSOLE_PORT)],
        );
    }
    if d.hpet {
        let hpet = m.bus.add(Box::new(Hpet::new()));
        m.map_mmio(HPET_BASE, HPET_SIZE, hpet);
    }
    if d.acpi {
        m.add_port_device(Box::new(AcpiPm::new()), &PM_PORTS);
        let platform = Platform {
            lapic: d.apic,
            ioapic_id: d.apic.then_some(1),
            hpet: d.hpet,
        };
        m.acpi_tables = Some(ringside_core::machine::AcpiTables {
            at: TABLES_BASE,
            bytes: acpi::build(&platform, TABLES_BASE).into(),
            reserve: TABLES_SIZE,
        });
    }
    if d.fw_cfg {
        let ram_bytes = config.machine.memory_mib as u64 * 1024 * 1024;
        let mut files: Vec<(String, std::sync::Arc<[u8]>)> =
            vec![("etc/e820".into(), e820_file(ram_bytes).into())];
        if let Some(t) = &m.acpi_tables {
            files.push((FW_CFG_FILE.into(), t.bytes.clone()));
        }
        let initrd = match config.boot.initrd.as_str() {
            "" => None,
            path => Some(
                ringside_core::input_file::read_input(
                    std::path::Path::new(path),
                    ringside_core::input_file::InputKind::Initrd,
                )
                .map_err(|e| PcError::Initrd {
                    path: path.into(),
                    error: e.to_string(),
                })?
                .into(),
            ),
        };
        let contents = FwCfgContents {
            ram_bytes,
            cmdline: config.boot.cmdline.clone(),
            initrd,
            files,
        };
        m.add_port_device(Box::new(FwCfg::new(&contents)), &FW_CFG_PORTS);
    }
    Ok(m)
}
