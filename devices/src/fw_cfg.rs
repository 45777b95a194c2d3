//! QEMU's firmware configuration interface, fw_cfg (QEMU's
//! docs/specs/fw_cfg.rst), through its traditional I/O-port interface on
//! the PC: a 16-bit write of an item's selector to port 0x510 selects it
//! and rewinds it; each byte read from port 0x511 returns the item's next
//! byte, and 0 past its end. There is no DMA interface (the ID item says
//! so) and the deprecated data-port writes are ignored.
//!
//! Kernels written for QEMU read the CPU count and RAM size here, and the
//! command line and initrd when booted with `-kernel`; ringside's BIOS
//! reads its ACPI tables here (file `etc/ringside/acpi`, see
//! [`crate::acpi`]). The items:
//!
//! | selector | item | value |
//! |---|---|---|
//! | 0x0000 | SIGNATURE | "QEMU" |
//! | 0x0001 | ID | 1: traditional interface, no DMA |
//! | 0x0002 | UUID | 16 zero bytes |
//! | 0x0003 | RAM_SIZE | u64 |
//! | 0x0004 | NOGRAPHIC | u16 0 |
//! | 0x0005 | NB_CPUS | u16 1 |
//! | 0x000b, 0x0012 | INITRD_SIZE, INITRD_DATA | the `--initrd` file, when given |
//! | 0x000e | BOOT_MENU | u16 0 |
//! | 0x000f | MAX_CPUS | u16 1 |
//! | 0x0014, 0x0015 | CMDLINE_SIZE, CMDLINE_DATA | the command line with its NUL, when given |
//! | 0x0019 | FILE_DIR | the files below, big-endian as the spec says |
//! | 0x0020... | files | `etc/e820` (QEMU's RAM map), `etc/ringside/acpi` |
//!
//! Numbers are little-endian except the file directory's. Unknown
//! selectors read as an empty item.

use std::any::Any;
use std::sync::Arc;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde_json::{json, Value};

/// The selector register (16-bit writes).
pub const FW_CFG_PORT_SEL: u16 = 0x510;
/// The data register (byte reads).
pub const FW_CFG_PORT_DATA: u16 = 0x511;
/// The ports the device claims.
pub const FW_CFG_PORTS: [(u16, u16); 1] = [(FW_CFG_PORT_SEL, FW_CFG_PORT_DATA)];

pub mod item {
    pub const SIGNATURE: u16 = 0x0000;
    pub const ID: u16 = 0x0001;
    pub const UUID: u16 = 0x0002;
    pub const RAM_SIZE: u16 = 0x0003;
    pub const NOGRAPHIC: u16 = 0x0004;
    pub const NB_CPUS: u16 = 0x0005;
    pub const INITRD_SIZE: u16 = 0x000B;
    pub const BOOT_MENU: u16 = 0x000E;
    pub const MAX_CPUS: u16 = 0x000F;
    pub const INITRD_DATA: u16 = 0x0012;
    pub const CMDLINE_SIZE: u16 = 0x0014;
    pub const CMDLINE_DATA: u16 = 0x0015;
    pub const FILE_DIR: u16 = 0x0019;
    pub const FILE_FIRST: u16 = 0x0020;
}

/// The longest file name (with its NUL) a directory entry holds.
const FILE_NAME_MAX: usize = 56;

/// What the machine tells its firmware and kernel.
#[derive(Clone, Debug, Default)]
pub struct FwCfgContents {
    pub ram_bytes: u64,
    /// The kernel command line (`boot.cmdline`), empty for none.
    pub cmdline: String,
    /// The initial RAM disk (`boot.initrd`), when given.
    pub initrd: Option<Arc<[u8]>>,
    /// Named files, in directory order.
    pub files: Vec<(String, Arc<[u8]>)>,
}

/// The fw_cfg device.
pub struct FwCfg {
    items: Vec<(u16, Arc<[u8]>)>,
    selected: u16,
    offset: u32,
}

/// QEMU's `etc/e820` for a PC with `ram_bytes` of RAM below 4 GiB: one RAM
/// entry (address u64, length u64, type u32, little-endian); the BIOS
/// carves the holes out of it.
pub fn e820_file(ram_bytes: u64) -> Vec<u8> {
    let mut e = Vec::with_capacity(20);
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&ram_bytes.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes());
    e
}

impl FwCfg {
    /// A device serving `contents`. Files whose names do not fit a
    /// directory entry are left out.
    pub fn new(contents: &FwCfgContents) -> FwCfg {
        let mut items: Vec<(u16, Arc<[u8]>)> = Vec::new();
        let mut add = |sel: u16, bytes: Vec<u8>| items.push((sel, bytes.into()));
        add(item::SIGNATURE, b"QEMU".to_vec());
        add(item::ID, 1u32.to_le_bytes().to_vec());
        add(item::UUID, vec![0; 16]);
        add(item::RAM_SIZE, contents.ram_bytes.to_le_bytes().to_vec());
        add(item::NOGRAPHIC, 0u16.to_le_bytes().to_vec());
        add(item::NB_CPUS, 1u16.to_le_bytes().to_vec());
        add(item::BOOT_MENU, 0u16.to_le_bytes().to_vec());
        add(item::MAX_CPUS, 1u16.to_le_bytes().to_vec());
        if !contents.cmdline.is_empty() {
            let mut line = contents.cmdline.as_bytes().to_vec();
            line.push(0);
            add(
                item::CMDLINE_SIZE,
                (line.len() as u32).to_le_bytes().to_vec(),
            );
            add(item::CMDLINE_DATA, line);
        }
        if let Some(initrd) = &contents.initrd {
            add(
                item::INITRD_SIZE,
                (initrd.len() as u32).to_le_bytes().to_vec(),
            );
            items.push((item::INITRD_DATA, initrd.clone()));
        }
        let files: Vec<&(String, Arc<[u8]>)> = contents
            .files
            .iter()
            .filter(|(name, _)| name.len() < FILE_NAME_MAX)
            .take((0x4000 - item::FILE_FIRST) as usize)
            .collect();
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (i, (name, data)) in files.iter().enumerate() {
            let select = item::FILE_FIRST + i as u16;
            dir.extend_from_slice(&(data.len() as u32).to_be_bytes());
            dir.extend_from_slice(&select.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut n = [0u8; FILE_NAME_MAX];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
            items.push((select, data.clone()));
        }
        items.push((item::FILE_DIR, dir.into()));
        items.sort_by_key(|(sel, _)| *sel);
        FwCfg {
            items,
            selected: 0,
            offset: 0,
        }
    }

    fn current(&self) -> &[u8] {
        match self.items.binary_search_by_key(&self.selected, |(s, _)| *s) {
            Ok(i) => &self.items[i].1,
            Err(_) => &[],
        }
    }
}

impl Device for FwCfg {
    fn name(&self) -> &'static str {
        "fw-cfg"
    }

    fn io_read(&mut self, port: u16, size: u8, _ctx: &mut DeviceCtx) -> u32 {
        if port != FW_CFG_PORT_DATA {
            return u32::MAX;
        }
        let mut v = 0u32;
        for i in 0..size as u32 {
            let byte = self
                .current()
                .get(self.offset as usize)
                .copied()
                .unwrap_or(0);
            self.offset = self.offset.saturating_add(1);
            v |= (byte as u32) << (8 * i);
        }
        v
    }

    fn io_write(&mut self, port: u16, _size: u8, value: u32, _ctx: &mut DeviceCtx) {
        if port == FW_CFG_PORT_SEL {
            // Bit 14 (write channel) and bit 15 (architecture-local) are
            // part of the key; no such items exist here.
            self.selected = value as u16;
            self.offset = 0;
        }
    }

    /// The contents come from the configuration; only the position is
    /// state.
    fn save_state(&self) -> Value {
        json!({ "version": 1, "selected": self.selected, "offset": self.offset })
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let field = |k: &str| state.get(k).and_then(Value::as_u64);
        match (field("version"), field("selected"), field("offset")) {
            (Some(1), Some(sel), Some(off)) if sel <= 0xFFFF && off <= u32::MAX as u64 => {
                self.selected = sel as u16;
                self.offset = off as u32;
                Ok(())
            }
            _ => Err(StateError::new(
                "fw-cfg",
                "expected version 1 with selected and offset",
            )),
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_core::bus::{DeviceEvents, Signals};

    fn device() -> FwCfg {
        FwCfg::new(&FwCfgContents {
            ram_bytes: 64 << 20,
            cmdline: "console=ttyS0".into(),
            initrd: Some(b"initrd!".to_vec().into()),
            files: vec![
                ("etc/e820".into(), e820_file(64 << 20).into()),
                ("opt/x".into(), b"xyz".to_vec().into()),
            ],
        })
    }

    fn read_item(d: &mut FwCfg, sel: u16, len: usize) -> Vec<u8> {
        let (mut s, mut e) = (Signals::default(), DeviceEvents::default());
        let mut ctx = DeviceCtx::new(0, &mut s, &mut e);
        d.io_write(FW_CFG_PORT_SEL, 2, sel as u32, &mut ctx);
        (0..len)
            .map(|_| d.io_read(FW_CFG_PORT_DATA, 1, &mut ctx) as u8)
            .collect()
    }

    #[test]
    fn the_signature_reads_qemu_and_the_id_says_traditional_interface_only() {
        let mut d = device();
        assert_eq!(read_item(&mut d, item::SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut d, item::ID, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn cpu_count_and_ram_size_are_little_endian_numbers() {
        let mut d = device();
        assert_eq!(read_item(&mut d, item::NB_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut d, item::MAX_CPUS, 2), [1, 0]);
        assert_eq!(
            read_item(&mut d, item::RAM_SIZE, 8),
            (64u64 << 20).to_le_bytes()
        );
    }

    #[test]
    fn the_command_line_comes_with_its_size_including_the_nul() {
        let mut d = device();
        assert_eq!(read_item(&mut d, item::CMDLINE_SIZE, 4), [14, 0, 0, 0]);
        assert_eq!(
            read_item(&mut d, item::CMDLINE_DATA, 14),
            b"console=ttyS0\0"
        );
        assert_eq!(read_item(&mut d, item::INITRD_SIZE, 4), [7, 0, 0, 0]);
        assert_eq!(read_item(&mut d, item::INITRD_DATA, 7), b"initrd!");
    }

    #[test]
    fn the_file_directory_lists_files_big_endian_with_their_selectors() {
        let mut d = device();
        let dir = read_item(&mut d, item::FILE_DIR, 4 + 2 * 64);
        assert_eq!(&dir[..4], [0, 0, 0, 2]);
        let entry = &dir[4 + 64..4 + 128];
        assert_eq!(&entry[..4], [0, 0, 0, 3], "size");
        assert_eq!(&entry[4..6], [0, 0x21], "selector");
        assert_eq!(&entry[8..13], b"opt/x");
        assert_eq!(read_item(&mut d, 0x21, 3), b"xyz");
        let e820 = read_item(&mut d, 0x20, 20);
        assert_eq!(&e820[8..16], (64u64 << 20).to_le_bytes());
    }

    #[test]
    fn reading_past_the_end_or_an_unknown_item_gives_zeros_and_selecting_rewinds() {
        let mut d = device();
        assert_eq!(read_item(&mut d, item::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut d, 0x1234, 3), [0, 0, 0]);
        assert_eq!(read_item(&mut d, item::SIGNATURE, 2), b"QE");
    }

    #[test]
    fn without_a_command_line_there_are_no_command_line_items() {
        let mut d = FwCfg::new(&FwCfgContents::default());
        assert_eq!(read_item(&mut d, item::CMDLINE_SIZE, 4), [0; 4]);
        assert_eq!(read_item(&mut d, item::FILE_DIR, 4), [0; 4]);
    }

    #[test]
    fn saved_position_round_trips_and_garbage_is_refused() {
        let mut d = device();
        read_item(&mut d, item::SIGNATURE, 2);
        let saved = d.save_state();
        let mut other = device();
        other.restore_state(&saved).unwrap();
        let (mut s, mut e) = (Signals::default(), DeviceEvents::default());
        let mut ctx = DeviceCtx::new(0, &mut s, &mut e);
        assert_eq!(other.io_read(FW_CFG_PORT_DATA, 1, &mut ctx), b'M' as u32);
        assert!(other
            .restore_state(&json!({"version": 1, "selected": 1 << 20, "offset": 0}))
            .is_err());
        assert!(other.restore_state(&json!("x")).is_err());
    }
}
