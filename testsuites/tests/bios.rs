//! ringside's own BIOS (firmware/) booting on the interpreter with the PC
//! devices: POST, then the self-test boot disk, which checks the BIOS
//! services (INT 10h, 13h, 15h, 16h, 1Ah, the MP table) and exits through
//! the debug-exit port.

use ringside_core::config::{DiskConfig, DiskMode, MachineConfig};
use ringside_core::{boot, RunOutcome, StopReason};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;

#[test]
fn bios_boots_the_self_test_disk() {
    let disk = std::env::temp_dir().join(format!("ringside-bios-test-{}.img", std::process::id()));
    std::fs::write(&disk, ringside_firmware::BOOT_TEST_DISK).unwrap();
    let mut config = MachineConfig::default();
    config.disks.push(DiskConfig {
        path: disk.to_string_lossy().into_owned(),
        mode: DiskMode::Snapshot,
    });
    let com1 = SharedBuffer::default();
    let mut m = build_pc(&config, HostIo::com1_only(com1.clone())).unwrap();
    boot::load_rom(&mut m, ringside_firmware::BIOS).unwrap();
    let out = m
        .run_until_stopped(&mut Interp::new(), Some(500_000_000))
        .unwrap();
    let text = String::from_utf8_lossy(&com1.contents()).into_owned();
    println!("{text}");
    let _ = std::fs::remove_file(&disk);
    assert_eq!(
        out,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "output:\n{text}"
    );
    assert!(
        text.contains("boot-test: all checks passed"),
        "output:\n{text}"
    );
}

/// POST copies the machine's ACPI tables from fw_cfg to 0xE0000, byte for
/// byte, and its E820 map reserves them.
#[test]
fn bios_copies_the_acpi_tables_from_fw_cfg_and_reserves_them_in_e820() {
    let config = MachineConfig::default();
    let mut m = build_pc(&config, HostIo::discarded()).unwrap();
    boot::load_rom(&mut m, ringside_firmware::BIOS).unwrap();
    // No disk: POST runs, then INT 19h finds nothing to boot.
    let _ = m.run_until_stopped(&mut Interp::new(), Some(20_000_000));
    let tables = m.acpi_tables.clone().expect("the default PC has ACPI");
    let mut copied = vec![0u8; tables.bytes.len()];
    m.mem().read_ram(tables.at, &mut copied).unwrap();
    assert_eq!(&copied[..8], b"RSD PTR ");
    assert_eq!(copied, &tables.bytes[..]);
    // The E820 map in the EBDA: a count at 0x9FC00 + 0x100, entries of 20
    // bytes from + 0x108 (firmware/src-bios/layout.h).
    let mut count = [0u8; 2];
    m.mem().read_ram(0x9FD00, &mut count).unwrap();
    let entries: Vec<(u32, u32, u32)> = (0..u16::from_le_bytes(count) as u32)
        .map(|i| {
            let mut e = [0u8; 20];
            m.mem().read_ram(0x9FD08 + 20 * i, &mut e).unwrap();
            let word = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
            (word(0), word(8), word(16))
        })
        .collect();
    assert!(
        entries.contains(&(0xE0000, 0x10000, 2)),
        "no reserved entry for the ACPI tables: {entries:x?}"
    );
}

/// With `devices.acpi` off there are no tables and no reservation.
#[test]
fn bios_without_acpi_publishes_no_tables() {
    let mut config = MachineConfig::default();
    config.devices.acpi = false;
    let mut m = build_pc(&config, HostIo::discarded()).unwrap();
    boot::load_rom(&mut m, ringside_firmware::BIOS).unwrap();
    let _ = m.run_until_stopped(&mut Interp::new(), Some(20_000_000));
    let mut rsdp = [0u8; 8];
    m.mem().read_ram(0xE0000, &mut rsdp).unwrap();
    assert_ne!(&rsdp, b"RSD PTR ");
}
