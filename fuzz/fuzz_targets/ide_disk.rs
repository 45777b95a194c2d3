//! Disk images and the IDE command set: the input's first part is a
//! sequence of register writes and reads on the primary channel (command
//! block 0x1F0-0x1F7, device control 0x3F6, with 16- and 32-bit data
//! transfers), the rest a disk image (copy-on-write, padded to whole
//! sectors) as the master. No sequence panics or reads outside the image.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::config::MachineConfig;
use ringside_devices::ide::{
    Disk, DiskMode, IdeChannel, PRIMARY_COMMAND_BLOCK, PRIMARY_CONTROL,
};
use ringside_devices::pc::{build_pc, HostIo};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let ops = (n as usize * 4).min(rest.len());
    let (ops, image) = rest.split_at(ops);
    let mut image = image.to_vec();
    image.resize(image.len().div_ceil(512).max(1) * 512, 0);
    let Ok(disk) = Disk::from_bytes(image, DiskMode::Snapshot) else {
        return;
    };
    let mut config = MachineConfig::default();
    config.machine.memory_mib = 1;
    let Ok(mut m) = build_pc(&config, HostIo::discarded()) else {
        return;
    };
    m.add_port_device(
        Box::new(IdeChannel::new(disk, None)),
        &[
            (PRIMARY_COMMAND_BLOCK, PRIMARY_COMMAND_BLOCK + 7),
            (PRIMARY_CONTROL, PRIMARY_CONTROL),
        ],
    );
    for op in ops.chunks_exact(4) {
        let reg = op[0] & 7;
        let port = if op[0] & 8 != 0 {
            PRIMARY_CONTROL
        } else {
            PRIMARY_COMMAND_BLOCK + reg as u16
        };
        let now = m.clock.now_ns();
        let value = u16::from_le_bytes([op[2], op[3]]) as u32;
        match op[0] >> 4 {
            // Data transfers, many at once (a sector is 256 words).
            0..=3 => {
                for _ in 0..=op[1] {
                    let _ = m.bus.io_read(PRIMARY_COMMAND_BLOCK, 2, now);
                }
            }
            4 => {
                for _ in 0..=op[1] {
                    m.bus.io_write(PRIMARY_COMMAND_BLOCK, 2, value, now);
                }
            }
            5 => {
                let _ = m.bus.io_read(PRIMARY_COMMAND_BLOCK, 4, now);
            }
            6..=9 => {
                let _ = m.bus.io_read(port, 1, now);
            }
            _ => m.bus.io_write(port, 1, op[1] as u32, now),
        }
    }
});
