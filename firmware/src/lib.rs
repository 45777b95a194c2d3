//! ringside's BIOS: a small PC firmware written for this project, built
//! from C and GNU assembler by `build.rs` and embedded here as a 64 KiB
//! ROM image.
//!
//! This crate owns the firmware's sources (`src-bios/`) and the image;
//! it does not map or run it — `ringside_core::boot::load_rom` does that,
//! at the top of the first MiB and of the 4 GiB space, with the CPU at
//! the reset vector F000:FFF0. Start reading at `README.md` (the design
//! and the memory layout), then `src-bios/reset.S` (reset to boot) and
//! `src-bios/post.c` (what POST sets up).
//!
//! [`BOOT_TEST_DISK`] is the disk image the firmware's own test boots:
//! its boot sector exercises the services through the BIOS interface and
//! reports on COM1.

/// The ROM image: 64 KiB, mapped so that it ends at 1 MiB (F000:0000)
/// and at 4 GiB. Its last 16 bytes hold the reset vector (a far jump),
/// the BIOS date, the model byte and the checksum byte.
///
/// ```
/// let rom = ringside_firmware::BIOS;
/// assert_eq!(rom.len(), 64 * 1024);
/// assert_eq!(rom[0xFFF0], 0xEA); // JMP ptr16:16 at the reset vector
/// ```
pub static BIOS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bios.bin"));

/// A raw disk image (with sector 0 bootable) whose boot code checks the
/// BIOS services from the guest's side — INT 10h output, INT 13h reads,
/// the E820 map, the tick count, the MP tables — prints what it finds on
/// the screen and COM1 and writes 0 to port 0xF4 when all is well (a
/// failed check's number otherwise). Source: `tests/boot-test.S`.
pub static BOOT_TEST_DISK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/boot-test.img"));

/// Where the reset vector lies within [`BIOS`]: F000:FFF0.
pub const RESET_VECTOR_OFFSET: usize = 0xFFF0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_is_64_kib() {
        assert_eq!(BIOS.len(), 64 * 1024);
    }

    #[test]
    fn reset_vector_is_a_far_jump_into_the_bios_segment() {
        let jump = &BIOS[RESET_VECTOR_OFFSET..RESET_VECTOR_OFFSET + 5];
        assert_eq!(jump[0], 0xEA, "JMP ptr16:16");
        let offset = u16::from_le_bytes([jump[1], jump[2]]) as usize;
        let segment = u16::from_le_bytes([jump[3], jump[4]]);
        assert_eq!(segment, 0xF000);
        assert!(
            offset < RESET_VECTOR_OFFSET,
            "the target is code in the ROM, below the vector"
        );
    }

    #[test]
    fn date_and_model_byte_are_where_software_looks() {
        let date = &BIOS[0xFFF5..0xFFFD];
        assert!(date.iter().enumerate().all(|(i, &c)| if i == 2 || i == 5 {
            c == b'/'
        } else {
            c.is_ascii_digit()
        }));
        assert_eq!(BIOS[0xFFFE], 0xFC, "model byte: AT");
    }

    #[test]
    fn rom_bytes_sum_to_zero() {
        let sum = BIOS.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        assert_eq!(sum, 0);
    }

    #[test]
    fn boot_test_disk_has_the_boot_signature() {
        assert_eq!(BOOT_TEST_DISK.len() % 512, 0);
        assert_eq!(&BOOT_TEST_DISK[510..512], &[0x55, 0xAA]);
    }
}
