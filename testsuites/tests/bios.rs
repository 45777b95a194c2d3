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
