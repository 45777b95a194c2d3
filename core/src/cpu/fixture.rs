//! A protected-mode machine for the unit tests of the architectural
//! operations: a GDT with flat ring-0 and ring-3 code and data, a 32-bit
//! TSS whose ring-0 stack is [`RING0_STACK`], and a call gate from ring 3
//! to ring 0 with two parameters. No paging: linear = physical.

use super::segments::Descriptor;
use super::state::{cr0, SegReg};
use crate::machine::Machine;

pub const GDT: u32 = 0x1000;
pub const TSS: u32 = 0x3000;
pub const RING0_CODE: u16 = 0x08;
pub const RING0_DATA: u16 = 0x10;
pub const RING3_CODE: u16 = 0x18 | 3;
pub const RING3_DATA: u16 = 0x20 | 3;
pub const TSS_SELECTOR: u16 = 0x28;
/// A 32-bit call gate (DPL 3) to `RING0_CODE:GATE_TARGET`, copying two
/// dwords of parameters.
pub const CALL_GATE: u16 = 0x30 | 3;
pub const GATE_TARGET: u32 = 0x0040_1234;
/// ESP0 in the TSS.
pub const RING0_STACK: u32 = 0x9000;

const DESCRIPTORS: [u64; 7] = [
    0,
    0x00CF_9B00_0000_FFFF,
    0x00CF_9300_0000_FFFF,
    0x00CF_FB00_0000_FFFF,
    0x00CF_F300_0000_FFFF,
    // 32-bit TSS, available, base TSS, limit 0x67.
    0x0000_8900_0000_0067 | ((TSS as u64) << 16),
    // 32-bit call gate, DPL 3, two parameters.
    ((GATE_TARGET as u64 >> 16) << 48)
        | (0xEC02 << 32)
        | ((RING0_CODE as u64) << 16)
        | (GATE_TARGET as u64 & 0xFFFF),
];

/// The machine in protected mode at `cpl` (0 or 3), every data segment
/// register on that ring's data segment, ESP at 0x8000, TR loaded.
pub fn protected_mode_machine(cpl: u8) -> Machine {
    let mut m = Machine::with_ram_mib(1).unwrap();
    for (i, d) in DESCRIPTORS.iter().enumerate() {
        m.phys_write(GDT + 8 * i as u32, 8, *d);
    }
    m.phys_write(TSS + 4, 4, RING0_STACK as u64);
    m.phys_write(TSS + 8, 4, RING0_DATA as u64);
    m.cpu.cr0 = cr0::PE | cr0::ET;
    m.cpu.gdtr.base = GDT;
    m.cpu.gdtr.limit = 8 * DESCRIPTORS.len() as u16 - 1;
    let (code, data) = if cpl == 0 {
        (RING0_CODE, RING0_DATA)
    } else {
        (RING3_CODE, RING3_DATA)
    };
    for s in SegReg::ALL {
        let sel = if s == SegReg::Cs { code } else { data };
        m.cpu.seg[s as usize] = descriptor(sel).to_segment(sel);
    }
    m.cpu.tr = descriptor(TSS_SELECTOR).to_segment(TSS_SELECTOR);
    m.cpu.gpr[super::reg::ESP] = 0x8000;
    m
}

/// The fixture's descriptor for `selector`.
pub fn descriptor(selector: u16) -> Descriptor {
    Descriptor(DESCRIPTORS[(selector >> 3) as usize])
}

/// Write dwords at linear `addr` upwards.
pub fn write_dwords(m: &mut Machine, addr: u32, values: &[u32]) {
    for (i, &v) in values.iter().enumerate() {
        m.phys_write(addr + 4 * i as u32, 4, v as u64);
    }
}

/// The dword at linear `addr`.
pub fn dword(m: &mut Machine, addr: u32) -> u32 {
    m.phys_read(addr, 4) as u32
}
