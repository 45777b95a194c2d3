//! ACPI tables (ACPI Specification 1.0b/2.0, chapter 5) describing this
//! PC: the RSDP, an RSDT listing the FADT, the MADT and the HPET table,
//! and the FACS and DSDT the FADT points to. One builder serves both ways
//! into a machine: the BIOS copies the tables from fw_cfg (file
//! [`FW_CFG_FILE`]) to [`TABLES_BASE`] at every POST, and the Multiboot
//! loader writes them there itself; either way an OS finds the RSDP by
//! the specification's scan of 0xE0000-0xFFFFF (5.2.4.1).
//!
//! The tables follow QEMU's i440fx PC where the two machines are alike
//! (ACPI PM registers at 0x600 with the PM timer at 0x608, SCI on IRQ 9,
//! the HPET at 0xFED00000, IRQ 0 overridden to GSI 2), so kernels written
//! for QEMU find what they look for. The IOAPIC's ID is 1, as in the MP
//! tables. The DSDT holds only `\_S5` (soft off, SLP_TYP 0), which the
//! PM device ([`crate::acpi_pm`]) turns into a power-off.

use crate::acpi_pm::{PM_BASE, PM_TMR_PORT, SCI_IRQ};
use crate::hpet::{CAPABILITIES, HPET_BASE};
use crate::ioapic::IOAPIC_BASE;
use crate::lapic::LAPIC_BASE;

/// Where the tables live: the 64 KiB at 0xE0000, inside the range the
/// RSDP scan covers and reserved in both memory maps.
pub const TABLES_BASE: u32 = 0xE_0000;
/// The room they may take there.
pub const TABLES_SIZE: u32 = 0x1_0000;
/// The fw_cfg file the BIOS copies to [`TABLES_BASE`].
pub const FW_CFG_FILE: &str = "etc/ringside/acpi";

/// The HPET table's event timer block ID: the low half of the HPET's
/// capabilities register.
const HPET_CAPABILITIES_LOW: u32 = CAPABILITIES as u32;

const OEM_ID: &[u8; 6] = b"RINGSD";
const OEM_TABLE_ID: &[u8; 8] = b"RINGSIDE";

/// What the tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// A local APIC (and so a MADT).
    pub lapic: bool,
    /// The IOAPIC's ID, when there is one.
    pub ioapic_id: Option<u8>,
    /// An HPET at [`HPET_BASE`] (and so an HPET table).
    pub hpet: bool,
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A description table: the 36-byte header (5.2.6) and `body`, with its
/// length and checksum filled in.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"RNGS");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// The tables laid out for `base` (16-byte aligned; the FACS 64-byte
/// aligned), RSDP first.
pub fn build(p: &Platform, base: u32) -> Vec<u8> {
    let mut out = vec![0u8; 0x40];
    let place = |out: &mut Vec<u8>, bytes: &[u8], align: usize| -> u32 {
        while !out.len().is_multiple_of(align) {
            out.push(0);
        }
        let at = base + out.len() as u32;
        out.extend_from_slice(bytes);
        at
    };

    // FACS (5.2.9): no firmware waking vector, no global lock use.
    let mut facs = Vec::with_capacity(64);
    facs.extend_from_slice(b"FACS");
    facs.extend_from_slice(&64u32.to_le_bytes());
    facs.resize(64, 0);
    let facs_at = place(&mut out, &facs, 64);

    // DSDT: Name (_S5, Package (4) { 0, 0, 0, 0 }).
    let aml = [
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
    ];
    let dsdt_at = place(&mut out, &table(b"DSDT", 1, &aml), 16);

    // FADT (5.2.8, ACPI 1.0 layout, 116 bytes).
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&facs_at.to_le_bytes());
    f.extend_from_slice(&dsdt_at.to_le_bytes());
    f.push(0); // INT_MODEL (1.0) / reserved
    f.push(0); // Preferred_PM_Profile: unspecified
    f.extend_from_slice(&(SCI_IRQ as u16).to_le_bytes());
    // SMI_CMD 0: no SMI, ACPI mode is always on (SCI_EN reads 1).
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    for blk in [
        PM_BASE as u32,
        0,
        PM_BASE as u32 + 4,
        0,
        0,
        PM_TMR_PORT as u32,
        0,
        0,
    ] {
        // PM1a_EVT, PM1b_EVT, PM1a_CNT, PM1b_CNT, PM2_CNT, PM_TMR, GPE0, GPE1
        f.extend_from_slice(&blk.to_le_bytes());
    }
    // PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN, GPE0_LEN,
    // GPE1_LEN, GPE1_BASE, CST_CNT.
    f.extend_from_slice(&[4, 2, 0, 4, 0, 0, 0, 0]);
    // P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: no C2, no C3.
    f.extend_from_slice(&101u16.to_le_bytes());
    f.extend_from_slice(&1001u16.to_le_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // FLUSH_SIZE, FLUSH_STRIDE
    f.extend_from_slice(&[0, 0]); // DUTY_OFFSET, DUTY_WIDTH
                                  // DAY_ALRM, MON_ALRM: none; CENTURY: CMOS 0x32.
    f.extend_from_slice(&[0, 0, 0x32]);
    f.extend_from_slice(&0u16.to_le_bytes()); // IAPC_BOOT_ARCH (2.0)
    f.push(0);
    // Flags: WBINVD (0), PROC_C1 (2), PWR_BUTTON (4) and SLP_BUTTON (5):
    // no fixed buttons; TMR_VAL_EXT (8) clear: a 24-bit PM timer.
    f.extend_from_slice(&(1u32 | 1 << 2 | 1 << 4 | 1 << 5).to_le_bytes());
    let fadt_at = place(&mut out, &table(b"FACP", 1, &f), 16);

    let mut rsdt_entries = vec![fadt_at];

    if p.lapic {
        // MADT (5.2.10).
        let mut a = Vec::new();
        a.extend_from_slice(&LAPIC_BASE.to_le_bytes());
        a.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s present
        a.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // processor 0, APIC ID 0, enabled
        if let Some(id) = p.ioapic_id {
            a.extend_from_slice(&[1, 12, id, 0]);
            a.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
            a.extend_from_slice(&0u32.to_le_bytes()); // GSI base
                                                      // ISA IRQ 0 arrives at GSI 2, flags: conforms to the bus.
            a.extend_from_slice(&[2, 10, 0, 0]);
            a.extend_from_slice(&2u32.to_le_bytes());
            a.extend_from_slice(&0u16.to_le_bytes());
            // The SCI: level triggered, active high (flags 0b1101).
            a.extend_from_slice(&[2, 10, 0, SCI_IRQ]);
            a.extend_from_slice(&(SCI_IRQ as u32).to_le_bytes());
            a.extend_from_slice(&0x000Du16.to_le_bytes());
        }
        // LINT1 of every processor is the NMI input.
        a.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);
        rsdt_entries.push(place(&mut out, &table(b"APIC", 1, &a), 16));
    }

    if p.hpet {
        // IA-PC HPET Specification 1.0a, 3.2.4.
        let mut h = Vec::new();
        h.extend_from_slice(&HPET_CAPABILITIES_LOW.to_le_bytes());
        // Base address: system memory, as a Generic Address Structure.
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&(HPET_BASE as u64).to_le_bytes());
        h.push(0); // HPET number
        h.extend_from_slice(&0u16.to_le_bytes()); // minimum clock tick
        h.push(0); // no page protection
        rsdt_entries.push(place(&mut out, &table(b"HPET", 1, &h), 16));
    }

    let rsdt: Vec<u8> = rsdt_entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    let rsdt_at = place(&mut out, &table(b"RSDT", 1, &rsdt), 16);

    // RSDP (5.2.4.3), revision 0: 20 bytes at the start.
    let mut rsdp = Vec::with_capacity(20);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(0);
    rsdp.extend_from_slice(&rsdt_at.to_le_bytes());
    rsdp[8] = checksum(&rsdp);
    out[..20].copy_from_slice(&rsdp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc() -> Platform {
        Platform {
            lapic: true,
            ioapic_id: Some(1),
            hpet: true,
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// The table at physical address `addr` of a blob built for `TABLES_BASE`.
    fn table_at(blob: &[u8], addr: u32) -> &[u8] {
        let off = (addr - TABLES_BASE) as usize;
        let len = u32_at(blob, off + 4) as usize;
        &blob[off..off + len]
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    fn rsdt_tables(blob: &[u8]) -> Vec<&[u8]> {
        let rsdt = table_at(blob, u32_at(blob, 16));
        (36..rsdt.len())
            .step_by(4)
            .map(|i| table_at(blob, u32_at(rsdt, i)))
            .collect()
    }

    #[test]
    fn the_rsdp_leads_to_an_rsdt_of_fadt_madt_and_hpet_with_valid_checksums() {
        let blob = build(&pc(), TABLES_BASE);
        assert!(blob.len() <= TABLES_SIZE as usize);
        assert_eq!(&blob[..8], b"RSD PTR ");
        assert_eq!(sum(&blob[..20]), 0);
        let rsdt = table_at(&blob, u32_at(&blob, 16));
        assert_eq!(&rsdt[..4], b"RSDT");
        assert_eq!(sum(rsdt), 0);
        let names: Vec<&[u8]> = rsdt_tables(&blob).iter().map(|t| &t[..4]).collect();
        assert_eq!(names, [b"FACP", b"APIC", b"HPET"]);
        for t in rsdt_tables(&blob) {
            assert_eq!(sum(t), 0, "{}", String::from_utf8_lossy(&t[..4]));
        }
    }

    #[test]
    fn the_fadt_names_the_pm_timer_the_sci_the_dsdt_and_a_64_byte_aligned_facs() {
        let blob = build(&pc(), TABLES_BASE);
        let fadt = rsdt_tables(&blob)[0];
        assert_eq!(fadt.len(), 116);
        assert_eq!(u32_at(fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI_INT");
        assert_eq!(u32_at(fadt, 112) & (1 << 8), 0, "24-bit timer");
        let facs = u32_at(fadt, 36);
        assert_eq!(facs % 64, 0);
        assert_eq!(&table_at(&blob, facs)[..4], b"FACS");
        let dsdt = table_at(&blob, u32_at(fadt, 40));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(sum(dsdt), 0);
        assert_eq!(&dsdt[36..41], b"\x08_S5_");
    }

    #[test]
    fn the_madt_has_the_cpu_the_ioapic_and_the_irq_0_override() {
        let blob = build(&pc(), TABLES_BASE);
        let madt = rsdt_tables(&blob)[1];
        assert_eq!(u32_at(madt, 36), 0xFEE0_0000);
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
        let mut entries = Vec::new();
        let mut i = 44;
        while i < madt.len() {
            entries.push(&madt[i..i + madt[i + 1] as usize]);
            i += madt[i + 1] as usize;
        }
        let kinds: Vec<u8> = entries.iter().map(|e| e[0]).collect();
        assert_eq!(kinds, [0, 1, 2, 2, 4]);
        assert_eq!(entries[1][2], 1, "IOAPIC ID as in the MP table");
        assert_eq!(u32_at(entries[1], 4), 0xFEC0_0000);
        assert_eq!(
            (entries[2][3], u32_at(entries[2], 4)),
            (0, 2),
            "IRQ 0 -> GSI 2"
        );
    }

    #[test]
    fn the_hpet_table_gives_the_block_id_and_the_base_address() {
        let blob = build(&pc(), TABLES_BASE);
        let hpet = rsdt_tables(&blob)[2];
        assert_eq!(hpet.len(), 56);
        assert_eq!(u32_at(hpet, 36), 0x8086_A201);
        assert_eq!(u32_at(hpet, 44), HPET_BASE);
    }

    #[test]
    fn a_machine_without_apic_or_hpet_lists_only_the_fadt() {
        let blob = build(
            &Platform {
                lapic: false,
                ioapic_id: None,
                hpet: false,
            },
            TABLES_BASE,
        );
        let names: Vec<&[u8]> = rsdt_tables(&blob).iter().map(|t| &t[..4]).collect();
        assert_eq!(names, [b"FACP"]);
    }
}
