//! Shadow descriptors for ring compression (docs/raw.md): the guest's
//! kernel runs at ring 1, so what it set up for ring 0 must admit ring 1.
//!
//! Descriptor layout: SDM Vol. 3A 3.4.5 (segment descriptors), 7.2.2 (TSS
//! descriptor), 5.8.3 and 6.11 (call and IDT gates). The access byte is bits
//! 47:40 of the 8-byte descriptor: P (47), DPL (46:45), S (44), type (43:40).
//!
//! The rules:
//! - every descriptor of DPL 0 becomes DPL 1 — data and stack segments
//!   (SS needs DPL = CPL = 1), non-conforming code, TSS and LDT
//!   descriptors, call and task gates — except conforming code segments,
//!   which run at their caller's privilege and keep their DPL;
//! - a selector of RPL 0 becomes RPL 1 (gate targets, segment registers);
//! - DPL 1-3 and RPL 1-3 are kept, so guest ring-3 code sees no change.

/// The access byte's DPL field.
const DPL_SHIFT: u32 = 45;
const DPL_MASK: u64 = 3 << DPL_SHIFT;
/// S: 1 for code and data segments, 0 for system descriptors.
const S_BIT: u64 = 1 << 44;
/// In a code/data type: bit 3 set means code, bit 2 then means conforming.
const TYPE_CODE: u64 = 1 << 43;
const TYPE_CONFORMING: u64 = 1 << 42;

/// System descriptor types that are gates holding a target selector in
/// bits 31:16: 16- and 32-bit call gates, task gates, interrupt and trap
/// gates.
fn is_gate(desc: u64) -> bool {
    desc & S_BIT == 0 && matches!((desc >> 40) & 0xF, 0x4 | 0x5 | 0x6 | 0x7 | 0xC | 0xE | 0xF)
}

/// The DPL of a descriptor.
pub fn dpl(desc: u64) -> u8 {
    ((desc & DPL_MASK) >> DPL_SHIFT) as u8
}

/// Selector `sel` with RPL 0 raised to 1.
pub fn compress_selector(sel: u16) -> u16 {
    if sel & 3 == 0 && sel & !3 != 0 {
        sel | 1
    } else {
        sel
    }
}

/// The shadow of one guest descriptor.
pub fn compress_descriptor(desc: u64) -> u64 {
    if desc == 0 {
        return 0;
    }
    let conforming_code = desc & S_BIT != 0 && desc & TYPE_CODE != 0 && desc & TYPE_CONFORMING != 0;
    let mut d = desc;
    if dpl(d) == 0 && !conforming_code {
        d = d & !DPL_MASK | 1 << DPL_SHIFT;
    }
    if is_gate(d) {
        let sel = ((d >> 16) & 0xFFFF) as u16;
        d = d & !(0xFFFF << 16) | (compress_selector(sel) as u64) << 16;
    }
    d
}

/// The shadow of a guest descriptor table (GDT or LDT) given as its bytes
/// (limit + 1 of them); a trailing partial descriptor is copied unchanged.
pub fn shadow_table(guest: &[u8]) -> Vec<u8> {
    let mut out = guest.to_vec();
    for chunk in out.chunks_exact_mut(8) {
        let d = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        chunk.copy_from_slice(&compress_descriptor(d).to_le_bytes());
    }
    out
}

/// A shadow IDT gate: a 32-bit interrupt gate to `offset` in the monitor's
/// code segment `monitor_cs` (a ring-0 selector), present when the guest's
/// gate is, with the guest gate's DPL compressed (so INT n from the rings
/// the guest allows still reaches the monitor, and from the others still
/// raises #GP).
pub fn shadow_idt_gate(guest_gate: u64, monitor_cs: u16, offset: u32) -> u64 {
    let present = guest_gate & (1 << 47);
    let dpl = dpl(compress_descriptor(guest_gate | 1 << 47)) as u64;
    (offset as u64 & 0xFFFF)
        | (monitor_cs as u64) << 16
        | 0xE << 40
        | dpl << DPL_SHIFT
        | present
        | ((offset as u64) >> 16) << 48
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat 4 GiB segment descriptor with access byte `access`.
    fn flat(access: u8) -> u64 {
        0x00CF_0000_0000_FFFF | (access as u64) << 40
    }

    #[test]
    fn ring_0_code_data_and_stack_descriptors_become_ring_1() {
        for access in [0x9A, 0x92, 0x96] {
            let shadow = compress_descriptor(flat(access));
            assert_eq!(dpl(shadow), 1, "{access:#x}");
            assert_eq!(
                shadow & !DPL_MASK,
                flat(access) & !DPL_MASK,
                "only the DPL changes"
            );
        }
    }

    #[test]
    fn ring_3_and_conforming_descriptors_keep_their_dpl() {
        assert_eq!(compress_descriptor(flat(0xFA)), flat(0xFA), "ring-3 code");
        assert_eq!(compress_descriptor(flat(0xF2)), flat(0xF2), "ring-3 data");
        assert_eq!(
            compress_descriptor(flat(0x9E)),
            flat(0x9E),
            "conforming code, DPL 0"
        );
        assert_eq!(compress_descriptor(0), 0, "the null descriptor");
    }

    #[test]
    fn tss_and_ldt_descriptors_become_ring_1_and_keep_base_limit_and_busy() {
        let tss = 0x0000_8B00_1000_0067u64; // busy 32-bit TSS at 0x1000
        let shadow = compress_descriptor(tss);
        assert_eq!(dpl(shadow), 1);
        assert_eq!(shadow & !DPL_MASK, tss);
        let ldt = 0x0000_8200_2000_00FFu64;
        assert_eq!(dpl(compress_descriptor(ldt)), 1);
    }

    #[test]
    fn call_gates_get_ring_1_and_a_compressed_target_selector() {
        // 32-bit call gate, DPL 0, to 0008:00401000.
        let gate = 0x0040_8C00_0008_1000u64;
        let shadow = compress_descriptor(gate);
        assert_eq!(dpl(shadow), 1);
        assert_eq!((shadow >> 16) & 0xFFFF, 0x0009);
        assert_eq!(
            shadow & 0xFFFF_0000_0000_FFFF,
            gate & 0xFFFF_0000_0000_FFFF,
            "offset kept"
        );
    }

    #[test]
    fn selectors_of_rpl_0_become_rpl_1_and_the_null_selector_stays_null() {
        assert_eq!(compress_selector(0x08), 0x09);
        assert_eq!(compress_selector(0x1B), 0x1B);
        assert_eq!(compress_selector(0x0A), 0x0A);
        assert_eq!(compress_selector(0), 0);
        assert_eq!(compress_selector(3), 3);
    }

    #[test]
    fn a_whole_gdt_is_compressed_descriptor_by_descriptor() {
        let gdt: Vec<u8> = [0, flat(0x9A), flat(0x92), flat(0xFA), flat(0xF2)]
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
        let shadow = shadow_table(&gdt);
        let dpls: Vec<u8> = shadow
            .chunks_exact(8)
            .map(|c| dpl(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        assert_eq!(dpls, [0, 1, 1, 3, 3]);
    }

    #[test]
    fn idt_gates_enter_the_monitor_with_the_guests_dpl_compressed() {
        // Guest: 32-bit interrupt gate, DPL 0, to 0008:C0100000.
        let kernel_only = 0xC010_8E00_0008_0000u64;
        // Guest: 32-bit trap gate, DPL 3 (INT 0x80).
        let syscall = 0xC010_EF00_0008_2000u64;
        let g = shadow_idt_gate(kernel_only, 0x40, 0xFFC0_1234);
        assert_eq!(dpl(g), 1, "ring-1 kernel code may still INT n it");
        assert_eq!((g >> 16) & 0xFFFF, 0x40);
        assert_eq!((g & 0xFFFF) | ((g >> 48) << 16), 0xFFC0_1234);
        assert_eq!((g >> 40) & 0xF, 0xE, "an interrupt gate");
        assert_ne!(g & (1 << 47), 0);
        assert_eq!(dpl(shadow_idt_gate(syscall, 0x40, 0)), 3);
        assert_eq!(
            shadow_idt_gate(kernel_only & !(1 << 47), 0x40, 0) & (1 << 47),
            0,
            "not present stays not present"
        );
    }
}
