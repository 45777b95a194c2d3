//! The PC's devices: random sequences of port reads and writes (8, 16 and
//! 32 bits, to the ports of every device and around them), MMIO accesses
//! to the local APIC, the I/O APIC and the HPET, time passing (device
//! timers run) and interrupt acknowledges, against the default PC. No
//! sequence panics; a device that asks for a reset or a stop is fine.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::config::MachineConfig;
use ringside_devices::pc::{build_pc, HostIo};

/// Ports the PC's devices claim, and their neighbours.
const PORTS: &[u16] = &[
    0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x60, 0x64, 0x70, 0x71, 0x80, 0x92,
    0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0x2F8, 0x2FD, 0x3D4, 0x3D5, 0x3DA,
    0x3C0, 0x3C4, 0x3C5, 0x3CE, 0x3CF, 0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7,
    0x3F6, 0x4D0, 0x4D1, 0x510, 0x511, 0x514, 0x600, 0x604, 0x608, 0xB000, 0xB004, 0xB008, 0xE9,
    0xF4, 0x402, 0xCF8, 0xCFC,
];
/// MMIO windows: the local APIC, the I/O APIC, the HPET.
const MMIO: &[u32] = &[0xFEE0_0000, 0xFEC0_0000, 0xFED0_0000];

fuzz_target!(|data: &[u8]| {
    let mut config = MachineConfig::default();
    config.machine.memory_mib = 1;
    let Ok(mut m) = build_pc(&config, HostIo::discarded()) else {
        return;
    };
    for op in data.chunks_exact(6) {
        let size = [1u8, 2, 4, 1][(op[0] >> 6) as usize];
        let value = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        let now = m.clock.now_ns();
        match op[0] & 7 {
            0 | 1 => {
                let port = PORTS[op[1] as usize % PORTS.len()];
                let _ = m.bus.io_read(port.wrapping_add((op[0] >> 3 & 1) as u16), size, now);
            }
            2 | 3 => {
                let port = PORTS[op[1] as usize % PORTS.len()];
                m.bus.io_write(port, size, value, now);
            }
            4 => {
                let base = MMIO[op[1] as usize % MMIO.len()];
                let offset = (value >> 20) & 0x3FC;
                let _ = m.phys_read(base + offset, size as u32);
            }
            5 => {
                let base = MMIO[op[1] as usize % MMIO.len()];
                let offset = (op[1] as u32 >> 2) << 4 | (op[0] as u32 >> 3 & 3) << 2;
                m.phys_write(base + offset, size as u32, value as u64);
            }
            6 => {
                // Time passes: up to about a second of virtual time.
                m.clock.icount += (value as u64) & 0x3FFF_FFFF;
                let now = m.clock.now_ns();
                m.bus.run_timers(now);
            }
            _ => {
                if m.bus.interrupt_pending() {
                    let _ = m.bus.acknowledge_interrupt(now);
                }
                let _ = m.bus.take_nmi();
            }
        }
    }
});
