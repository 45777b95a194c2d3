//! The primary ATA/IDE channel: a master disk and an optional slave behind
//! the command block at 0x1F0-0x1F7, the control block at 0x3F6 and IRQ 14,
//! moving data by PIO only.
//!
//! The reference is ATA/ATAPI-4 (NCITS 317-1998): clause 7 for the
//! registers, clause 8 for the commands, clause 9 for the protocols a
//! command follows (PIO data-in, PIO data-out, non-data, software reset).
//! Time is virtual, so a command is finished the moment the host writes it:
//! BSY is only ever seen while the host holds SRST. ATA allows a device
//! that fast.
//!
//! The commands: IDENTIFY DEVICE, READ/WRITE SECTORS, READ/WRITE MULTIPLE,
//! SET MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS, READ VERIFY SECTORS,
//! EXECUTE DEVICE DIAGNOSTIC, FLUSH CACHE, RECALIBRATE, and SET FEATURES
//! and the power-mode commands, which are accepted and change nothing.
//! Every other command ends with ERR and ABRT. There is no DMA, no 48-bit
//! addressing and no ATAPI.
//!
//! The medium is a [`Disk`]: a raw image file, opened read-write,
//! read-only, or as a snapshot whose writes stay in memory. Start reading
//! at [`IdeChannel`]'s `Device` impl, then `Drive::execute`.

use std::any::Any;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use ringside_core::bus::{Device, DeviceCtx, StateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The primary channel's command block: data, error/features, sector
/// count, LBA low/mid/high, device, status/command.
pub const PRIMARY_COMMAND_BLOCK: u16 = 0x1F0;
/// The primary channel's alternate status (read) / device control (write).
pub const PRIMARY_CONTROL: u16 = 0x3F6;
/// The ISA interrupt line of the primary channel.
pub const PRIMARY_IRQ: u8 = 14;
pub const SECTOR_SIZE: usize = 512;

const DATA_PORT: u16 = PRIMARY_COMMAND_BLOCK;
const ERROR_PORT: u16 = PRIMARY_COMMAND_BLOCK + 1;
const SECTOR_COUNT_PORT: u16 = PRIMARY_COMMAND_BLOCK + 2;
const LBA_LOW_PORT: u16 = PRIMARY_COMMAND_BLOCK + 3;
const LBA_MID_PORT: u16 = PRIMARY_COMMAND_BLOCK + 4;
const LBA_HIGH_PORT: u16 = PRIMARY_COMMAND_BLOCK + 5;
const DEVICE_PORT: u16 = PRIMARY_COMMAND_BLOCK + 6;
const STATUS_PORT: u16 = PRIMARY_COMMAND_BLOCK + 7;

// Status register (ATA/ATAPI-4 clause 7).
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DF: u8 = 0x20;
const DSC: u8 = 0x10;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
/// A device with nothing to do: ready, heads settled (seek complete).
const READY: u8 = DRDY | DSC;

// Error register.
const UNC: u8 = 0x40;
const IDNF: u8 = 0x10;
const ABRT: u8 = 0x04;
/// The diagnostic code after reset or EXECUTE DEVICE DIAGNOSTIC: device 0
/// passed, and device 1 passed or is absent.
const DIAGNOSTIC_PASSED: u8 = 0x01;

// Device register.
const DEVICE_LBA: u8 = 0x40;
const DEVICE_DEV: u8 = 0x10;

// Device control register.
const NIEN: u8 = 0x02;
const SRST: u8 = 0x04;

/// The largest READ/WRITE MULTIPLE block (IDENTIFY word 47).
const MAX_MULTIPLE: u8 = 16;

/// What CHS can address: 16383 cylinders of 16 heads of 63 sectors
/// (8.4 GB). A larger disk reports this geometry and is reached by LBA.
const CHS_MAX_SECTORS: u64 = 16383 * 16 * 63;
const DEFAULT_HEADS: u8 = 16;
const DEFAULT_SECTORS_PER_TRACK: u8 = 63;
/// The most sectors IDENTIFY words 60-61 can report with 28-bit LBA.
const LBA28_MAX_SECTORS: u64 = 0x0FFF_FFFF;

const MODEL: &str = "RINGSIDE HARDDISK";
const FIRMWARE_REVISION: &str = "1.0";

/// Command opcodes (ATA/ATAPI-4 clause 8).
mod opcode {
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NO_RETRY: u8 = 0x21;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NO_RETRY: u8 = 0x31;
    pub const READ_VERIFY_SECTORS: u8 = 0x40;
    pub const READ_VERIFY_SECTORS_NO_RETRY: u8 = 0x41;
    pub const EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
    pub const INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
    pub const READ_MULTIPLE: u8 = 0xC4;
    pub const WRITE_MULTIPLE: u8 = 0xC5;
    pub const SET_MULTIPLE_MODE: u8 = 0xC6;
    pub const STANDBY_IMMEDIATE: u8 = 0xE0;
    pub const IDLE_IMMEDIATE: u8 = 0xE1;
    pub const STANDBY: u8 = 0xE2;
    pub const IDLE: u8 = 0xE3;
    pub const CHECK_POWER_MODE: u8 = 0xE5;
    pub const FLUSH_CACHE: u8 = 0xE7;
    pub const IDENTIFY_DEVICE: u8 = 0xEC;
    pub const SET_FEATURES: u8 = 0xEF;
    /// ATA-1's opcodes for the power commands, still sent by old drivers:
    /// standby immediate, idle immediate, standby, idle, check power mode.
    pub const LEGACY_STANDBY_IMMEDIATE: u8 = 0x94;
    pub const LEGACY_IDLE_IMMEDIATE: u8 = 0x95;
    pub const LEGACY_STANDBY: u8 = 0x96;
    pub const LEGACY_IDLE: u8 = 0x97;
    pub const LEGACY_CHECK_POWER_MODE: u8 = 0x98;
}

/// How a disk image may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    /// Writes reach the image file.
    ReadWrite,
    /// Write commands are aborted.
    ReadOnly,
    /// Copy-on-write: written sectors are kept in memory and the image
    /// file never changes.
    Snapshot,
}

/// Why a disk image cannot be used.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("cannot open disk image {image}")]
    Open { image: String, source: io::Error },
    #[error("disk image {image} is {size} bytes, not a whole number of 512-byte sectors")]
    PartialSector { image: String, size: u64 },
    #[error("disk image {image} is empty")]
    Empty { image: String },
    #[error("disk image {image} is {what}, not a regular file")]
    NotAFile { image: String, what: &'static str },
}

/// A CHS translation: cylinders x heads x sectors per track (IDENTIFY
/// DEVICE words 1/3/6 for the default, 54-56 for the current one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The translation `heads` x `sectors_per_track` gives a disk of
    /// `sectors`: as many whole cylinders as fit below the CHS limit, and
    /// at least one, so that a tiny image still has CHS addresses.
    fn for_disk(sectors: u64, heads: u8, sectors_per_track: u8) -> Geometry {
        let heads = heads.max(1);
        let sectors_per_track = sectors_per_track.max(1);
        let per_cylinder = heads as u64 * sectors_per_track as u64;
        let cylinders = (sectors.min(CHS_MAX_SECTORS) / per_cylinder).clamp(1, 65535) as u16;
        Geometry {
            cylinders,
            heads,
            sectors_per_track,
        }
    }

    fn sectors(&self) -> u64 {
        self.cylinders as u64 * self.heads as u64 * self.sectors_per_track as u64
    }
}

/// Where a disk's sectors live.
enum Image {
    File(File),
    Memory(Vec<u8>),
}

/// A raw disk image: sector n is bytes n*512 .. n*512+512.
pub struct Disk {
    image: Image,
    mode: DiskMode,
    sectors: u64,
    /// Snapshot mode: the sectors the guest wrote, by LBA.
    overlay: BTreeMap<u64, Vec<u8>>,
}

impl Disk {
    /// Open the raw image at `path`. Its size must be a non-zero multiple
    /// of 512 bytes.
    pub fn open(path: impl AsRef<Path>, mode: DiskMode) -> Result<Disk, DiskError> {
        let path = path.as_ref();
        let image = path.display().to_string();
        let open_error = |source| DiskError::Open {
            image: image.clone(),
            source,
        };
        // A FIFO would block the open forever and a character device
        // (/dev/zero) has no size: only a regular file is a disk image.
        // Checked by path before the open, and on the descriptor after it
        // (the open is non-blocking on unix, so a FIFO swapped in between
        // cannot hang it either).
        let not_regular = |md: &std::fs::Metadata| DiskError::NotAFile {
            image: image.clone(),
            what: ringside_core::input_file::file_type_name(md),
        };
        let metadata = std::fs::metadata(path).map_err(open_error)?;
        if !metadata.is_file() {
            return Err(not_regular(&metadata));
        }
        let mut options = OpenOptions::new();
        options.read(true).write(mode == DiskMode::ReadWrite);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(path).map_err(open_error)?;
        let metadata = file.metadata().map_err(open_error)?;
        if !metadata.is_file() {
            return Err(not_regular(&metadata));
        }
        let sectors = whole_sectors(metadata.len(), &image)?;
        Ok(Disk {
            image: Image::File(file),
            mode,
            sectors,
            overlay: BTreeMap::new(),
        })
    }

    /// A disk whose image is `bytes` in memory (for tests and generated
    /// images); ReadWrite changes `bytes`, Snapshot keeps an overlay.
    pub fn from_bytes(bytes: Vec<u8>, mode: DiskMode) -> Result<Disk, DiskError> {
        let sectors = whole_sectors(bytes.len() as u64, "in-memory image")?;
        Ok(Disk {
            image: Image::Memory(bytes),
            mode,
            sectors,
            overlay: BTreeMap::new(),
        })
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    pub fn mode(&self) -> DiskMode {
        self.mode
    }

    /// The default CHS translation: 16 heads, 63 sectors per track.
    pub fn geometry(&self) -> Geometry {
        Geometry::for_disk(self.sectors, DEFAULT_HEADS, DEFAULT_SECTORS_PER_TRACK)
    }

    fn read_sector(&self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(data) = self.overlay.get(&lba) {
            buf.copy_from_slice(data);
            return Ok(());
        }
        let offset = lba * SECTOR_SIZE as u64;
        match &self.image {
            Image::File(file) => read_at(file, buf, offset),
            Image::Memory(bytes) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|start| bytes.get(start..start + buf.len()))
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    fn write_sector(&mut self, lba: u64, data: &[u8]) -> io::Result<()> {
        match self.mode {
            DiskMode::ReadOnly => Err(io::ErrorKind::PermissionDenied.into()),
            DiskMode::Snapshot => {
                self.overlay.insert(lba, data.to_vec());
                Ok(())
            }
            DiskMode::ReadWrite => {
                let offset = lba * SECTOR_SIZE as u64;
                match &mut self.image {
                    Image::File(file) => write_at(file, data, offset),
                    Image::Memory(bytes) => {
                        let dst = usize::try_from(offset)
                            .ok()
                            .and_then(|start| bytes.get_mut(start..start + data.len()))
                            .ok_or(io::ErrorKind::UnexpectedEof)?;
                        dst.copy_from_slice(data);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Push written sectors to stable storage (FLUSH CACHE).
    fn flush(&mut self) -> io::Result<()> {
        match (&self.image, self.mode) {
            (Image::File(file), DiskMode::ReadWrite) => file.sync_data(),
            _ => Ok(()),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn whole_sectors(size: u64, image: &str) -> Result<u64, DiskError> {
    let image = image.to_string();
    match (size / SECTOR_SIZE as u64, size % SECTOR_SIZE as u64) {
        (_, 0) if size == 0 => Err(DiskError::Empty { image }),
        (sectors, 0) => Ok(sectors),
        _ => Err(DiskError::PartialSector { image, size }),
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// The command block registers the host writes. Writes reach both devices
/// of the channel (ATA/ATAPI-4 clause 7), so the channel holds one copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TaskFile {
    features: u8,
    sector_count: u8,
    lba_low: u8,
    lba_mid: u8,
    lba_high: u8,
    device: u8,
}

impl TaskFile {
    /// What a device leaves after reset or diagnostics: the ATA signature
    /// (an ATAPI device would put 14h/EBh in LBA mid/high) with device 0
    /// selected.
    fn signature() -> TaskFile {
        TaskFile {
            sector_count: 1,
            lba_low: 1,
            ..TaskFile::default()
        }
    }

    /// The device the DEV bit selects: 0 (master) or 1 (slave).
    fn selected(&self) -> usize {
        usize::from(self.device & DEVICE_DEV != 0)
    }

    /// The sector count of a transfer: 0 means 256.
    fn count(&self) -> u32 {
        match self.sector_count {
            0 => 256,
            n => n as u32,
        }
    }
}

/// The direction of a PIO data transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Direction {
    /// Device to host (PIO data-in).
    In,
    /// Host to device (PIO data-out).
    Out,
}

/// A transfer in progress: the DRQ data block and where the command stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Transfer {
    direction: Direction,
    /// The current data block: what the host reads, or what it writes.
    buffer: Vec<u8>,
    /// Bytes of `buffer` the host has moved so far.
    pos: usize,
    /// The sectors of a READ/WRITE command; None for IDENTIFY DEVICE.
    run: Option<SectorRun>,
}

/// The sectors a READ or WRITE command still has to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SectorRun {
    /// The first sector of the current block.
    lba: u64,
    /// Sectors from `lba` to the end of the command.
    remaining: u32,
    /// Sectors per DRQ block: 1, or the multiple count.
    block: u32,
    /// The command was addressed by CHS, so progress is reported in CHS.
    chs: bool,
}

impl SectorRun {
    fn block_sectors(&self) -> u32 {
        self.block.min(self.remaining)
    }
}

/// One device's registers and state (what a saved state holds of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DriveRegs {
    status: u8,
    error: u8,
    /// Sectors per block of READ/WRITE MULTIPLE; 0 until SET MULTIPLE MODE.
    multiple: u8,
    /// The current CHS translation (INITIALIZE DEVICE PARAMETERS).
    heads: u8,
    sectors_per_track: u8,
    /// The device's interrupt is pending. It drives INTRQ only while the
    /// device is selected and nIEN is clear.
    intrq: bool,
    transfer: Option<Transfer>,
}

impl DriveRegs {
    /// Power-on defaults; software reset restores them too, as a device
    /// does unless SET FEATURES told it to keep its settings.
    fn power_on() -> DriveRegs {
        DriveRegs {
            status: READY,
            error: DIAGNOSTIC_PASSED,
            multiple: 0,
            heads: DEFAULT_HEADS,
            sectors_per_track: DEFAULT_SECTORS_PER_TRACK,
            intrq: false,
            transfer: None,
        }
    }
}

/// A device on the channel: the medium and the device's registers.
struct Drive {
    disk: Disk,
    regs: DriveRegs,
}

impl Drive {
    fn new(disk: Disk) -> Drive {
        Drive {
            disk,
            regs: DriveRegs::power_on(),
        }
    }

    fn geometry(&self) -> Geometry {
        Geometry::for_disk(
            self.disk.sectors,
            self.regs.heads,
            self.regs.sectors_per_track,
        )
    }

    /// Run command `cmd` written to the command register of device
    /// `index`. Writing the command register clears a pending interrupt.
    fn execute(&mut self, cmd: u8, tf: &mut TaskFile, index: usize) {
        use opcode::*;
        self.regs.intrq = false;
        self.regs.transfer = None;
        self.regs.error = 0;
        match cmd {
            IDENTIFY_DEVICE => self.identify(index),
            READ_SECTORS | READ_SECTORS_NO_RETRY => self.start_read(tf, 1),
            WRITE_SECTORS | WRITE_SECTORS_NO_RETRY => self.start_write(tf, 1),
            READ_MULTIPLE | WRITE_MULTIPLE if self.regs.multiple == 0 => self.abort(),
            READ_MULTIPLE => self.start_read(tf, self.regs.multiple as u32),
            WRITE_MULTIPLE => self.start_write(tf, self.regs.multiple as u32),
            SET_MULTIPLE_MODE => self.set_multiple_mode(tf),
            INITIALIZE_DEVICE_PARAMETERS => self.initialize_device_parameters(tf),
            READ_VERIFY_SECTORS | READ_VERIFY_SECTORS_NO_RETRY => match self.target(tf) {
                Some(_) => self.finish(),
                None => self.fail(0, IDNF),
            },
            FLUSH_CACHE => match self.disk.flush() {
                Ok(()) => self.finish(),
                Err(_) => self.fail(DF, ABRT),
            },
            // The heads are always over cylinder 0 already.
            0x10..=0x1F => self.finish(),
            CHECK_POWER_MODE | LEGACY_CHECK_POWER_MODE => {
                // FFh: the device is active or idle; it never spins down.
                tf.sector_count = 0xFF;
                self.finish();
            }
            // No timers, transfer modes or caches to configure: accepted.
            SET_FEATURES
            | STANDBY_IMMEDIATE
            | IDLE_IMMEDIATE
            | STANDBY
            | IDLE
            | LEGACY_STANDBY_IMMEDIATE
            | LEGACY_IDLE_IMMEDIATE
            | LEGACY_STANDBY
            | LEGACY_IDLE => self.finish(),
            _ => self.abort(),
        }
    }

    /// Non-data command completion: ready, with an interrupt.
    fn finish(&mut self) {
        self.regs.status = READY;
        self.regs.transfer = None;
        self.regs.intrq = true;
    }

    /// Command completion with an error: ERR (and `status` bits), the
    /// reason in the error register, and an interrupt.
    fn fail(&mut self, status: u8, error: u8) {
        self.regs.status = READY | ERR | status;
        self.regs.error = error;
        self.regs.transfer = None;
        self.regs.intrq = true;
    }

    fn abort(&mut self) {
        self.fail(0, ABRT);
    }

    /// The sectors the task file names (device register bit 6 chooses LBA
    /// or CHS), or None if any of them lies outside the medium.
    fn target(&self, tf: &TaskFile) -> Option<SectorRun> {
        let count = tf.count();
        let chs = tf.device & DEVICE_LBA == 0;
        let lba = if chs {
            let g = self.geometry();
            let cylinder = u16::from_le_bytes([tf.lba_mid, tf.lba_high]);
            let head = tf.device & 0x0F;
            let sector = tf.lba_low;
            // Sectors are numbered from 1 within a track.
            if sector == 0
                || sector > g.sectors_per_track
                || head >= g.heads
                || cylinder >= g.cylinders
            {
                return None;
            }
            (cylinder as u64 * g.heads as u64 + head as u64) * g.sectors_per_track as u64
                + sector as u64
                - 1
        } else {
            u32::from_le_bytes([tf.lba_low, tf.lba_mid, tf.lba_high, tf.device & 0x0F]) as u64
        };
        (lba + count as u64 <= self.disk.sectors).then_some(SectorRun {
            lba,
            remaining: count,
            block: 1,
            chs,
        })
    }

    /// Put the address of sector `lba` in the task file, as CHS or LBA
    /// like the command that named it: the last sector moved as a
    /// command progresses, the failing sector on an error.
    fn report_address(&self, tf: &mut TaskFile, lba: u64, chs: bool) {
        if chs {
            let g = self.geometry();
            let spt = g.sectors_per_track as u64;
            let cylinder = lba / (spt * g.heads as u64);
            tf.lba_low = (lba % spt + 1) as u8;
            tf.lba_mid = cylinder as u8;
            tf.lba_high = (cylinder >> 8) as u8;
            tf.device = (tf.device & 0xF0) | ((lba / spt) % g.heads as u64) as u8;
        } else {
            tf.lba_low = lba as u8;
            tf.lba_mid = (lba >> 8) as u8;
            tf.lba_high = (lba >> 16) as u8;
            tf.device = (tf.device & 0xF0) | ((lba >> 24) & 0x0F) as u8;
        }
    }

    /// IDENTIFY DEVICE: one PIO data-in block of 256 words.
    fn identify(&mut self, index: usize) {
        let buffer = self
            .identify_words(index)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        self.regs.transfer = Some(Transfer {
            direction: Direction::In,
            buffer,
            pos: 0,
            run: None,
        });
        self.regs.status = READY | DRQ;
        self.regs.intrq = true;
    }

    /// The IDENTIFY DEVICE data (ATA/ATAPI-4 clause 8, IDENTIFY DEVICE).
    fn identify_words(&self, index: usize) -> [u16; 256] {
        let mut w = [0u16; 256];
        let default = self.disk.geometry();
        let current = self.geometry();
        // A fixed (non-removable) ATA device.
        w[0] = 0x0040;
        w[1] = default.cylinders;
        w[3] = default.heads as u16;
        w[6] = default.sectors_per_track as u16;
        put_ata_string(&mut w[10..20], &format!("RINGSIDE-{index}"));
        put_ata_string(&mut w[23..27], FIRMWARE_REVISION);
        put_ata_string(&mut w[27..47], MODEL);
        // 80h in the high byte, then the largest READ/WRITE MULTIPLE block.
        w[47] = 0x8000 | MAX_MULTIPLE as u16;
        // LBA supported; no DMA and no IORDY: PIO only.
        w[49] = 1 << 9;
        // Bit 14 set and bit 15 clear: the word is valid (later revisions
        // require it).
        w[50] = 0x4000;
        // PIO mode 2 timing, the fastest without IORDY.
        w[51] = 0x0200;
        // Words 54-58 (the current translation) are valid.
        w[53] = 0x0001;
        w[54] = current.cylinders;
        w[55] = current.heads as u16;
        w[56] = current.sectors_per_track as u16;
        let chs_capacity = current.sectors();
        w[57] = chs_capacity as u16;
        w[58] = (chs_capacity >> 16) as u16;
        if self.regs.multiple != 0 {
            w[59] = 0x0100 | self.regs.multiple as u16;
        }
        let lba_capacity = self.disk.sectors.min(LBA28_MAX_SECTORS);
        w[60] = lba_capacity as u16;
        w[61] = (lba_capacity >> 16) as u16;
        // ATA-1 through ATA/ATAPI-4.
        w[80] = 0x001E;
        // Command sets: a write cache (writes sit in the host's page cache
        // until FLUSH CACHE), and FLUSH CACHE itself (word 83 bit 12, as
        // ATA/ATAPI-6 numbers it). Words 83/84/87 carry the 01b in bits
        // 15-14 that marks them valid.
        w[82] = 1 << 5;
        w[83] = 0x4000 | 1 << 12;
        w[84] = 0x4000;
        w[85] = 1 << 5;
        w[86] = 1 << 12;
        w[87] = 0x4000;
        w
    }

    /// READ SECTORS / READ MULTIPLE: PIO data-in in blocks of `block`
    /// sectors.
    fn start_read(&mut self, tf: &mut TaskFile, block: u32) {
        match self.target(tf) {
            Some(run) => self.load_in_block(SectorRun { block, ..run }, tf),
            None => self.fail(0, IDNF),
        }
    }

    /// PIO data-in (ATA/ATAPI-4 clause 9): read the next block from the
    /// medium, then set DRQ and interrupt; the host reads the status, then
    /// the block.
    fn load_in_block(&mut self, run: SectorRun, tf: &mut TaskFile) {
        let mut buffer = vec![0; run.block_sectors() as usize * SECTOR_SIZE];
        for (i, sector) in buffer.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            let lba = run.lba + i as u64;
            if self.disk.read_sector(lba, sector).is_err() {
                self.report_address(tf, lba, run.chs);
                return self.fail(DF, UNC);
            }
        }
        self.regs.transfer = Some(Transfer {
            direction: Direction::In,
            buffer,
            pos: 0,
            run: Some(run),
        });
        self.regs.status = READY | DRQ;
        self.regs.intrq = true;
    }

    /// The host read a byte of the data register.
    fn read_data_byte(&mut self, tf: &mut TaskFile) -> u8 {
        let Some(t) = self
            .regs
            .transfer
            .as_mut()
            .filter(|t| t.direction == Direction::In)
        else {
            // No DRQ: nothing drives the data lines.
            return 0xFF;
        };
        let Some(&byte) = t.buffer.get(t.pos) else {
            return 0xFF;
        };
        t.pos += 1;
        if t.pos == t.buffer.len() {
            self.in_block_done(tf);
        }
        byte
    }

    /// The host has read the whole block: load the next one, or end the
    /// command. The last block of PIO data-in brings no interrupt.
    fn in_block_done(&mut self, tf: &mut TaskFile) {
        self.regs.status = READY;
        let Some(run) = self.regs.transfer.take().and_then(|t| t.run) else {
            return;
        };
        let n = run.block_sectors();
        let remaining = run.remaining - n;
        self.report_address(tf, run.lba + n as u64 - 1, run.chs);
        tf.sector_count = remaining as u8;
        if remaining > 0 {
            let next = SectorRun {
                lba: run.lba + n as u64,
                remaining,
                ..run
            };
            self.load_in_block(next, tf);
        }
    }

    /// WRITE SECTORS / WRITE MULTIPLE: PIO data-out in blocks of `block`
    /// sectors. A read-only medium aborts the command before any data.
    fn start_write(&mut self, tf: &TaskFile, block: u32) {
        if self.disk.mode == DiskMode::ReadOnly {
            return self.abort();
        }
        match self.target(tf) {
            Some(run) => self.expect_out_block(SectorRun { block, ..run }),
            None => self.fail(0, IDNF),
        }
    }

    /// PIO data-out: set DRQ for the next block. The first block is asked
    /// for without an interrupt; each later one with the interrupt that
    /// reports the previous block written.
    fn expect_out_block(&mut self, run: SectorRun) {
        self.regs.transfer = Some(Transfer {
            direction: Direction::Out,
            buffer: vec![0; run.block_sectors() as usize * SECTOR_SIZE],
            pos: 0,
            run: Some(run),
        });
        self.regs.status = READY | DRQ;
    }

    /// The host wrote a byte of the data register.
    fn write_data_byte(&mut self, tf: &mut TaskFile, byte: u8) {
        let Some(t) = self
            .regs
            .transfer
            .as_mut()
            .filter(|t| t.direction == Direction::Out)
        else {
            return;
        };
        let Some(slot) = t.buffer.get_mut(t.pos) else {
            return;
        };
        *slot = byte;
        t.pos += 1;
        if t.pos == t.buffer.len() {
            self.out_block_done(tf);
        }
    }

    /// The host has written the whole block: put it on the medium, then
    /// interrupt, asking for the next block or ending the command.
    fn out_block_done(&mut self, tf: &mut TaskFile) {
        let Some(Transfer {
            buffer,
            run: Some(run),
            ..
        }) = self.regs.transfer.take()
        else {
            return;
        };
        for (i, sector) in buffer.chunks_exact(SECTOR_SIZE).enumerate() {
            let lba = run.lba + i as u64;
            if self.disk.write_sector(lba, sector).is_err() {
                self.report_address(tf, lba, run.chs);
                return self.fail(DF, ABRT);
            }
        }
        let n = run.block_sectors();
        let remaining = run.remaining - n;
        self.report_address(tf, run.lba + n as u64 - 1, run.chs);
        tf.sector_count = remaining as u8;
        if remaining > 0 {
            self.expect_out_block(SectorRun {
                lba: run.lba + n as u64,
                remaining,
                ..run
            });
            self.regs.intrq = true;
        } else {
            self.finish();
        }
    }

    /// SET MULTIPLE MODE: the block size of READ/WRITE MULTIPLE, a power
    /// of two up to word 47's maximum; 0 turns multiple mode off.
    fn set_multiple_mode(&mut self, tf: &TaskFile) {
        match tf.sector_count {
            n if n == 0 || (n.is_power_of_two() && n <= MAX_MULTIPLE) => {
                self.regs.multiple = n;
                self.finish();
            }
            _ => self.abort(),
        }
    }

    /// INITIALIZE DEVICE PARAMETERS: the host picks the CHS translation,
    /// heads from the device register (bits 3-0, plus one) and sectors per
    /// track from the sector count.
    fn initialize_device_parameters(&mut self, tf: &TaskFile) {
        if tf.sector_count == 0 {
            return self.abort();
        }
        self.regs.heads = (tf.device & 0x0F) + 1;
        self.regs.sectors_per_track = tf.sector_count;
        self.finish();
    }
}

/// Store `text` as an ATA string: two characters per word, the first in
/// the high byte, padded with spaces.
fn put_ata_string(words: &mut [u16], text: &str) {
    let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from_be_bytes([hi, lo]);
    }
}

/// The registers the channel itself holds (what a saved state holds of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ChannelRegs {
    task_file: TaskFile,
    device_control: u8,
    /// The level last driven on IRQ 14.
    irq_line: bool,
}

/// The primary ATA channel with a master disk and an optional slave.
pub struct IdeChannel {
    drives: [Option<Drive>; 2],
    regs: ChannelRegs,
}

/// A saved state: the channel's registers, and per device its registers,
/// the size of its disk (to catch a different disk at restore) and a
/// snapshot disk's overlay. The rest of the medium is the image file.
#[derive(Serialize, Deserialize)]
struct SavedChannel {
    channel: ChannelRegs,
    drives: [Option<SavedDrive>; 2],
}

#[derive(Serialize, Deserialize)]
struct SavedDrive {
    sectors: u64,
    regs: DriveRegs,
    overlay: BTreeMap<u64, Vec<u8>>,
}

impl IdeChannel {
    /// The channel after power-on: both devices ready, with the signature
    /// in the registers.
    pub fn new(master: Disk, slave: Option<Disk>) -> IdeChannel {
        IdeChannel {
            drives: [Some(Drive::new(master)), slave.map(Drive::new)],
            regs: ChannelRegs {
                task_file: TaskFile::signature(),
                ..ChannelRegs::default()
            },
        }
    }

    /// Read a byte-wide register. An absent slave is answered for by the
    /// master with zeros, except the device register it shares; a probe
    /// that writes patterns into the registers and reads them back then
    /// finds nothing there.
    fn read_register(&mut self, port: u16) -> u8 {
        let tf = &self.regs.task_file;
        let Some(drive) = self.drives[tf.selected()].as_mut() else {
            return match port {
                DEVICE_PORT => tf.device,
                ERROR_PORT..=STATUS_PORT | PRIMARY_CONTROL => 0,
                _ => 0xFF,
            };
        };
        match port {
            ERROR_PORT => drive.regs.error,
            SECTOR_COUNT_PORT => tf.sector_count,
            LBA_LOW_PORT => tf.lba_low,
            LBA_MID_PORT => tf.lba_mid,
            LBA_HIGH_PORT => tf.lba_high,
            DEVICE_PORT => tf.device,
            // Reading the status register acknowledges the interrupt.
            STATUS_PORT => {
                drive.regs.intrq = false;
                drive.regs.status
            }
            // The alternate status leaves the interrupt pending, so a
            // driver can poll without losing it.
            PRIMARY_CONTROL => drive.regs.status,
            _ => 0xFF,
        }
    }

    fn write_register(&mut self, port: u16, value: u8) {
        let tf = &mut self.regs.task_file;
        match port {
            ERROR_PORT => tf.features = value,
            SECTOR_COUNT_PORT => tf.sector_count = value,
            LBA_LOW_PORT => tf.lba_low = value,
            LBA_MID_PORT => tf.lba_mid = value,
            LBA_HIGH_PORT => tf.lba_high = value,
            DEVICE_PORT => tf.device = value,
            STATUS_PORT => self.write_command(value),
            PRIMARY_CONTROL => self.write_device_control(value),
            _ => {}
        }
    }

    /// The data register moves 16-bit words; a 32-bit access moves two, a
    /// byte access one byte.
    fn read_data(&mut self, size: u8) -> u32 {
        let tf = &mut self.regs.task_file;
        let drive = self.drives[tf.selected()].as_mut();
        let Some(drive) = drive else {
            return u32::MAX;
        };
        (0..size.min(4)).fold(0, |acc, i| {
            acc | (drive.read_data_byte(tf) as u32) << (8 * i)
        })
    }

    fn write_data(&mut self, size: u8, value: u32) {
        let tf = &mut self.regs.task_file;
        if let Some(drive) = self.drives[tf.selected()].as_mut() {
            for i in 0..size.min(4) {
                drive.write_data_byte(tf, (value >> (8 * i)) as u8);
            }
        }
    }

    fn write_command(&mut self, cmd: u8) {
        // Devices held in reset take no commands.
        if self.regs.device_control & SRST != 0 {
            return;
        }
        if cmd == opcode::EXECUTE_DEVICE_DIAGNOSTIC {
            return self.execute_device_diagnostic();
        }
        let tf = &mut self.regs.task_file;
        let index = tf.selected();
        // A command to an absent slave goes nowhere.
        if let Some(drive) = self.drives[index].as_mut() {
            drive.execute(cmd, tf, index);
        }
    }

    /// EXECUTE DEVICE DIAGNOSTIC: both devices run it whichever is
    /// selected, leave the signature, and device 0 interrupts.
    fn execute_device_diagnostic(&mut self) {
        for drive in self.drives.iter_mut().flatten() {
            drive.regs.transfer = None;
            drive.regs.status = READY;
            drive.regs.error = DIAGNOSTIC_PASSED;
            drive.regs.intrq = false;
        }
        self.regs.task_file = TaskFile::signature();
        if let Some(master) = self.drives[0].as_mut() {
            master.regs.intrq = true;
        }
    }

    /// The device control register: nIEN masks INTRQ; SRST held high keeps
    /// both devices in reset (BSY), and its falling edge ends the reset
    /// with power-on settings and the signature, without an interrupt
    /// (ATA/ATAPI-4 clause 9, software reset).
    fn write_device_control(&mut self, value: u8) {
        let was_in_reset = self.regs.device_control & SRST != 0;
        let in_reset = value & SRST != 0;
        self.regs.device_control = value;
        if in_reset && !was_in_reset {
            for drive in self.drives.iter_mut().flatten() {
                drive.regs.transfer = None;
                drive.regs.intrq = false;
                drive.regs.status = BSY;
            }
        } else if was_in_reset && !in_reset {
            for drive in self.drives.iter_mut().flatten() {
                drive.regs = DriveRegs::power_on();
            }
            self.regs.task_file = TaskFile::signature();
        }
    }

    /// Drive IRQ 14 from the selected device's INTRQ, unless nIEN masks it.
    fn update_irq(&mut self, ctx: &mut DeviceCtx) {
        let pending = self.drives[self.regs.task_file.selected()]
            .as_ref()
            .is_some_and(|d| d.regs.intrq);
        let level = pending && self.regs.device_control & NIEN == 0;
        if level != self.regs.irq_line {
            self.regs.irq_line = level;
            ctx.set_irq(PRIMARY_IRQ, level);
        }
    }

    fn state_error(reason: impl std::fmt::Display) -> StateError {
        StateError::new("ata-ide", reason)
    }
}

impl Device for IdeChannel {
    fn name(&self) -> &'static str {
        "ata-ide"
    }

    fn io_read(&mut self, port: u16, size: u8, ctx: &mut DeviceCtx) -> u32 {
        let value = if port == DATA_PORT {
            self.read_data(size)
        } else {
            // Wider accesses to the byte registers read consecutive ports.
            (0..size.min(4)).fold(0, |acc, i| {
                acc | (self.read_register(port.wrapping_add(i as u16)) as u32) << (8 * i)
            })
        };
        self.update_irq(ctx);
        value
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32, ctx: &mut DeviceCtx) {
        if port == DATA_PORT {
            self.write_data(size, value);
        } else {
            for i in 0..size.min(4) {
                self.write_register(port.wrapping_add(i as u16), (value >> (8 * i)) as u8);
            }
        }
        self.update_irq(ctx);
    }

    fn save_state(&self) -> Value {
        let drives = [0, 1].map(|i| {
            self.drives[i].as_ref().map(|d| SavedDrive {
                sectors: d.disk.sectors,
                regs: d.regs.clone(),
                overlay: d.disk.overlay.clone(),
            })
        });
        let saved = SavedChannel {
            channel: self.regs,
            drives,
        };
        serde_json::to_value(&saved).unwrap_or(Value::Null)
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
        let saved = SavedChannel::deserialize(state).map_err(Self::state_error)?;
        for (i, (saved, drive)) in saved.drives.iter().zip(&self.drives).enumerate() {
            match (saved, drive) {
                (Some(saved), Some(drive)) => check_saved_drive(saved, &drive.disk)
                    .map_err(|e| Self::state_error(format!("device {i}: {e}")))?,
                (None, None) => {}
                (Some(_), None) => {
                    return Err(Self::state_error(format!(
                        "device {i} was saved but no disk is attached"
                    )))
                }
                (None, Some(_)) => {
                    return Err(Self::state_error(format!(
                        "device {i} has a disk but the state has none"
                    )))
                }
            }
        }
        self.regs = saved.channel;
        for (saved, drive) in saved.drives.into_iter().zip(&mut self.drives) {
            if let (Some(saved), Some(drive)) = (saved, drive) {
                drive.regs = saved.regs;
                drive.disk.overlay = saved.overlay;
            }
        }
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Whether a saved device state fits `disk` and could have been reached.
fn check_saved_drive(saved: &SavedDrive, disk: &Disk) -> Result<(), String> {
    if saved.sectors != disk.sectors {
        return Err(format!(
            "saved with a disk of {} sectors, the attached disk has {}",
            saved.sectors, disk.sectors
        ));
    }
    if !saved.overlay.is_empty() && disk.mode != DiskMode::Snapshot {
        return Err("written sectors saved for a disk not in snapshot mode".into());
    }
    if let Some((lba, _)) = saved
        .overlay
        .iter()
        .find(|(&lba, data)| lba >= disk.sectors || data.len() != SECTOR_SIZE)
    {
        return Err(format!("bad overlay sector {lba}"));
    }
    let regs = &saved.regs;
    if !(1..=16).contains(&regs.heads) || regs.sectors_per_track == 0 {
        return Err("bad CHS translation".into());
    }
    if regs.multiple > MAX_MULTIPLE || !(regs.multiple == 0 || regs.multiple.is_power_of_two()) {
        return Err("bad multiple count".into());
    }
    let Some(t) = &regs.transfer else {
        return Ok(());
    };
    if t.pos >= t.buffer.len() {
        return Err("transfer position outside its block".into());
    }
    match t.run {
        None if t.direction == Direction::In && t.buffer.len() == SECTOR_SIZE => Ok(()),
        None => Err("bad IDENTIFY transfer".into()),
        Some(run) => {
            let fits = (1..=MAX_MULTIPLE as u32).contains(&run.block)
                && run.remaining >= 1
                && run.remaining <= 256
                && t.buffer.len() == run.block_sectors() as usize * SECTOR_SIZE
                && run
                    .lba
                    .checked_add(run.remaining as u64)
                    .is_some_and(|end| end <= disk.sectors.min(LBA28_MAX_SECTORS));
            if !fits {
                Err("bad sector transfer".into())
            } else if t.direction == Direction::Out && disk.mode == DiskMode::ReadOnly {
                Err("write in progress to a read-only disk".into())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringside_core::bus::Bus;

    const CONTROL: u16 = PRIMARY_CONTROL;

    fn bus_with(master: Disk, slave: Option<Disk>) -> Bus {
        let mut bus = Bus::new();
        let id = bus.add(Box::new(IdeChannel::new(master, slave)));
        bus.claim_ports(id, PRIMARY_COMMAND_BLOCK, STATUS_PORT);
        bus.claim_ports(id, PRIMARY_CONTROL, PRIMARY_CONTROL);
        bus
    }

    /// An image whose every sector is different: sector n starts with n,
    /// then a pattern.
    fn patterned_image(sectors: usize) -> Vec<u8> {
        let mut image = vec![0u8; sectors * SECTOR_SIZE];
        for (n, sector) in image.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            for (i, b) in sector.iter_mut().enumerate() {
                *b = (i * 7 + n * 13) as u8;
            }
            sector[..4].copy_from_slice(&(n as u32).to_le_bytes());
        }
        image
    }

    fn memory_disk(sectors: usize, mode: DiskMode) -> Disk {
        Disk::from_bytes(patterned_image(sectors), mode).unwrap()
    }

    fn sector_of(image: &[u8], lba: u64) -> &[u8] {
        &image[lba as usize * SECTOR_SIZE..][..SECTOR_SIZE]
    }

    /// A temporary image file, removed when dropped.
    struct TempImage(std::path::PathBuf);

    impl TempImage {
        fn new(name: &str, contents: &[u8]) -> TempImage {
            let path = std::env::temp_dir()
                .join(format!("ringside-ide-{}-{name}.img", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempImage(path)
        }
        fn contents(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn issue_lba(bus: &mut Bus, cmd: u8, lba: u32, count: u8) {
        bus.io_write(SECTOR_COUNT_PORT, 1, count as u32, 0);
        bus.io_write(LBA_LOW_PORT, 1, lba & 0xFF, 0);
        bus.io_write(LBA_MID_PORT, 1, (lba >> 8) & 0xFF, 0);
        bus.io_write(LBA_HIGH_PORT, 1, (lba >> 16) & 0xFF, 0);
        bus.io_write(DEVICE_PORT, 1, 0xE0 | (lba >> 24) & 0x0F, 0);
        bus.io_write(STATUS_PORT, 1, cmd as u32, 0);
    }

    fn status(bus: &mut Bus) -> u8 {
        bus.io_read(STATUS_PORT, 1, 0) as u8
    }

    fn read_bytes(bus: &mut Bus, len: usize) -> Vec<u8> {
        (0..len / 2)
            .flat_map(|_| (bus.io_read(DATA_PORT, 2, 0) as u16).to_le_bytes())
            .collect()
    }

    fn write_bytes(bus: &mut Bus, data: &[u8]) {
        for w in data.chunks_exact(2) {
            bus.io_write(DATA_PORT, 2, u16::from_le_bytes([w[0], w[1]]) as u32, 0);
        }
    }

    fn identify(bus: &mut Bus) -> Vec<u16> {
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert_eq!(status(bus), READY | DRQ);
        read_bytes(bus, SECTOR_SIZE)
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect()
    }

    fn ata_string(words: &[u16]) -> String {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }

    #[test]
    fn identify_reports_geometry_and_lba_capacity() {
        // 20 cylinders of 16 x 63, plus a partial cylinder LBA still reaches.
        let sectors = 20 * 1008 + 100;
        let mut bus = bus_with(memory_disk(sectors, DiskMode::ReadOnly), None);
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert!(bus.irq_level(PRIMARY_IRQ), "the data block is announced");
        let w = identify(&mut bus);
        assert_eq!(status(&mut bus), READY, "DRQ clears after 256 words");
        assert_eq!((w[1], w[3], w[6]), (20, 16, 63));
        assert_eq!((w[54], w[55], w[56]), (20, 16, 63));
        assert_eq!(w[57] as u32 | (w[58] as u32) << 16, 20 * 1008);
        assert_eq!(w[60] as u32 | (w[61] as u32) << 16, sectors as u32);
        assert_eq!(ata_string(&w[27..47]), "RINGSIDE HARDDISK");
        assert!(!ata_string(&w[10..20]).is_empty());
        assert_eq!(ata_string(&w[23..27]), FIRMWARE_REVISION);
        assert_ne!(w[49] & 1 << 9, 0, "LBA supported");
        assert_eq!(w[47], 0x8010);
        assert_eq!(w[59], 0, "multiple mode off until SET MULTIPLE MODE");
        assert_ne!(w[80] & 1 << 4, 0, "ATA/ATAPI-4");
    }

    #[test]
    fn read_sectors_lba28_returns_image_bytes() {
        let image = patterned_image(64);
        let mut bus = bus_with(
            Disk::from_bytes(image.clone(), DiskMode::ReadOnly).unwrap(),
            None,
        );
        issue_lba(&mut bus, opcode::READ_SECTORS, 5, 2);
        for lba in 5..7 {
            assert!(bus.irq_level(PRIMARY_IRQ), "sector {lba} announced");
            assert_eq!(status(&mut bus), READY | DRQ);
            assert!(!bus.irq_level(PRIMARY_IRQ));
            assert_eq!(read_bytes(&mut bus, SECTOR_SIZE), sector_of(&image, lba));
        }
        assert!(
            !bus.irq_level(PRIMARY_IRQ),
            "no interrupt after the last block"
        );
        assert_eq!(status(&mut bus), READY);
        assert_eq!(bus.io_read(LBA_LOW_PORT, 1, 0), 6, "the last sector read");
    }

    #[test]
    fn read_sectors_chs_addresses_like_lba() {
        let image = patterned_image(3 * 1008);
        let mut bus = bus_with(
            Disk::from_bytes(image.clone(), DiskMode::ReadOnly).unwrap(),
            None,
        );
        // Cylinder 1, head 2, sector 3: (1 * 16 + 2) * 63 + 3 - 1.
        bus.io_write(SECTOR_COUNT_PORT, 1, 1, 0);
        bus.io_write(LBA_LOW_PORT, 1, 3, 0);
        bus.io_write(LBA_MID_PORT, 1, 1, 0);
        bus.io_write(LBA_HIGH_PORT, 1, 0, 0);
        bus.io_write(DEVICE_PORT, 1, 0xA0 | 2, 0);
        bus.io_write(STATUS_PORT, 1, opcode::READ_SECTORS as u32, 0);
        assert_eq!(status(&mut bus), READY | DRQ);
        assert_eq!(read_bytes(&mut bus, SECTOR_SIZE), sector_of(&image, 1136));

        // Sector 0 does not exist in CHS.
        bus.io_write(LBA_LOW_PORT, 1, 0, 0);
        bus.io_write(STATUS_PORT, 1, opcode::READ_SECTORS as u32, 0);
        assert_eq!(status(&mut bus), READY | ERR);
        assert_eq!(bus.io_read(ERROR_PORT, 1, 0) as u8, IDNF);
    }

    #[test]
    fn write_sectors_reaches_the_image_file() {
        let file = TempImage::new("write", &patterned_image(64));
        let disk = Disk::open(&file.0, DiskMode::ReadWrite).unwrap();
        let mut bus = bus_with(disk, None);
        issue_lba(&mut bus, opcode::WRITE_SECTORS, 3, 2);
        assert!(
            !bus.irq_level(PRIMARY_IRQ),
            "the first block is asked for without an interrupt"
        );
        let data: Vec<u8> = (0..2 * SECTOR_SIZE).map(|i| (i % 251) as u8).collect();
        assert_eq!(status(&mut bus), READY | DRQ);
        write_bytes(&mut bus, &data[..SECTOR_SIZE]);
        assert!(bus.irq_level(PRIMARY_IRQ), "the next block is asked for");
        assert_eq!(status(&mut bus), READY | DRQ);
        write_bytes(&mut bus, &data[SECTOR_SIZE..]);
        assert!(bus.irq_level(PRIMARY_IRQ), "completion interrupts");
        assert_eq!(status(&mut bus), READY);
        bus.io_write(STATUS_PORT, 1, opcode::FLUSH_CACHE as u32, 0);
        assert_eq!(status(&mut bus), READY);

        let contents = file.contents();
        assert_eq!(&contents[3 * SECTOR_SIZE..5 * SECTOR_SIZE], &data[..]);
        assert_eq!(sector_of(&contents, 2), sector_of(&patterned_image(64), 2));
    }

    #[test]
    fn snapshot_disk_never_writes_the_file() {
        let original = patterned_image(64);
        let file = TempImage::new("snapshot", &original);
        let mut bus = bus_with(Disk::open(&file.0, DiskMode::Snapshot).unwrap(), None);
        let data = vec![0x5A; SECTOR_SIZE];
        issue_lba(&mut bus, opcode::WRITE_SECTORS, 7, 1);
        write_bytes(&mut bus, &data);
        assert_eq!(status(&mut bus), READY);
        bus.io_write(STATUS_PORT, 1, opcode::FLUSH_CACHE as u32, 0);

        issue_lba(&mut bus, opcode::READ_SECTORS, 6, 2);
        assert_eq!(read_bytes(&mut bus, SECTOR_SIZE), sector_of(&original, 6));
        assert_eq!(
            read_bytes(&mut bus, SECTOR_SIZE),
            data,
            "the guest sees its write"
        );
        drop(bus);
        assert_eq!(file.contents(), original);
    }

    #[test]
    fn read_only_disk_rejects_writes() {
        let image = patterned_image(16);
        let mut bus = bus_with(
            Disk::from_bytes(image.clone(), DiskMode::ReadOnly).unwrap(),
            None,
        );
        issue_lba(&mut bus, opcode::WRITE_SECTORS, 1, 1);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY | ERR, "no DRQ: no data is taken");
        assert_eq!(bus.io_read(ERROR_PORT, 1, 0) as u8, ABRT);
        write_bytes(&mut bus, &[0xEE; SECTOR_SIZE]);
        issue_lba(&mut bus, opcode::READ_SECTORS, 1, 1);
        assert_eq!(read_bytes(&mut bus, SECTOR_SIZE), sector_of(&image, 1));
    }

    #[test]
    fn read_multiple_transfers_blocks_of_the_multiple_count() {
        let image = patterned_image(64);
        let mut bus = bus_with(
            Disk::from_bytes(image.clone(), DiskMode::ReadOnly).unwrap(),
            None,
        );
        issue_lba(&mut bus, opcode::READ_MULTIPLE, 0, 1);
        assert_eq!(status(&mut bus), READY | ERR, "multiple mode is off");

        issue_lba(&mut bus, opcode::SET_MULTIPLE_MODE, 0, 4);
        assert_eq!(status(&mut bus), READY);
        issue_lba(&mut bus, opcode::READ_MULTIPLE, 10, 10);
        // Blocks of 4, 4 and the remaining 2 sectors, one interrupt each.
        for (first, len) in [(10, 4), (14, 4), (18, 2)] {
            assert!(bus.irq_level(PRIMARY_IRQ));
            assert_eq!(status(&mut bus), READY | DRQ);
            let block = read_bytes(&mut bus, len * SECTOR_SIZE - 2);
            assert_eq!(status(&mut bus), READY | DRQ, "still inside the block");
            assert!(!bus.irq_level(PRIMARY_IRQ));
            let end = read_bytes(&mut bus, 2);
            let expected = &image[first * SECTOR_SIZE..(first + len) * SECTOR_SIZE];
            assert_eq!([block, end].concat(), expected);
        }
        assert!(!bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY);

        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        let w = identify(&mut bus);
        assert_eq!(w[59], 0x0104);
    }

    #[test]
    fn write_multiple_interrupts_after_each_block() {
        let mut bus = bus_with(memory_disk(64, DiskMode::Snapshot), None);
        issue_lba(&mut bus, opcode::SET_MULTIPLE_MODE, 0, 2);
        issue_lba(&mut bus, opcode::WRITE_MULTIPLE, 20, 3);
        let data: Vec<u8> = (0..3 * SECTOR_SIZE).map(|i| (i / 3) as u8).collect();
        assert_eq!(status(&mut bus), READY | DRQ);
        write_bytes(&mut bus, &data[..2 * SECTOR_SIZE]);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY | DRQ);
        write_bytes(&mut bus, &data[2 * SECTOR_SIZE..]);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY);
        issue_lba(&mut bus, opcode::READ_SECTORS, 20, 3);
        assert_eq!(read_bytes(&mut bus, 3 * SECTOR_SIZE), data);
    }

    #[test]
    fn sector_count_zero_means_256() {
        let image = patterned_image(300);
        let mut bus = bus_with(
            Disk::from_bytes(image.clone(), DiskMode::ReadOnly).unwrap(),
            None,
        );
        issue_lba(&mut bus, opcode::READ_SECTORS, 10, 0);
        let mut interrupts = 0;
        let mut data = Vec::new();
        while status(&mut bus) & DRQ != 0 {
            interrupts += 1;
            data.extend(read_bytes(&mut bus, SECTOR_SIZE));
        }
        assert_eq!(interrupts, 256);
        assert_eq!(data, &image[10 * SECTOR_SIZE..266 * SECTOR_SIZE]);

        // 256 sectors from 100 run past the end of a 300-sector disk.
        issue_lba(&mut bus, opcode::READ_SECTORS, 100, 0);
        assert_eq!(status(&mut bus), READY | ERR);
        assert_eq!(bus.io_read(ERROR_PORT, 1, 0) as u8, IDNF);
    }

    #[test]
    fn nien_masks_irq14() {
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), None);
        bus.io_write(CONTROL, 1, NIEN as u32, 0);
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert!(!bus.irq_level(PRIMARY_IRQ));
        assert_eq!(bus.io_read(CONTROL, 1, 0) as u8, READY | DRQ);
        bus.io_write(CONTROL, 1, 0, 0);
        assert!(
            bus.irq_level(PRIMARY_IRQ),
            "the interrupt was still pending"
        );
    }

    #[test]
    fn reading_status_clears_the_interrupt_but_alternate_status_does_not() {
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), None);
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(bus.io_read(CONTROL, 1, 0) as u8, READY | DRQ);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY | DRQ);
        assert!(!bus.irq_level(PRIMARY_IRQ));
    }

    #[test]
    fn absent_slave_reads_zero_status() {
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), None);
        bus.io_write(DEVICE_PORT, 1, 0xB0, 0);
        assert_eq!(status(&mut bus), 0);
        assert_eq!(bus.io_read(CONTROL, 1, 0), 0);
        bus.io_write(SECTOR_COUNT_PORT, 1, 0x55, 0);
        assert_eq!(
            bus.io_read(SECTOR_COUNT_PORT, 1, 0),
            0,
            "no registers to probe"
        );
        assert_eq!(bus.io_read(DEVICE_PORT, 1, 0), 0xB0);
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert_eq!(status(&mut bus), 0);
        assert!(!bus.irq_level(PRIMARY_IRQ), "the command went nowhere");
        bus.io_write(DEVICE_PORT, 1, 0xA0, 0);
        assert_eq!(status(&mut bus), READY, "the master did not run it either");
    }

    #[test]
    fn slave_disk_answers_when_selected() {
        let slave_image = patterned_image(8);
        let slave = Disk::from_bytes(slave_image.clone(), DiskMode::ReadOnly).unwrap();
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), Some(slave));
        bus.io_write(SECTOR_COUNT_PORT, 1, 1, 0);
        bus.io_write(LBA_LOW_PORT, 1, 3, 0);
        bus.io_write(LBA_MID_PORT, 1, 0, 0);
        bus.io_write(LBA_HIGH_PORT, 1, 0, 0);
        bus.io_write(DEVICE_PORT, 1, 0xF0, 0);
        bus.io_write(STATUS_PORT, 1, opcode::READ_SECTORS as u32, 0);
        assert!(bus.irq_level(PRIMARY_IRQ));
        bus.io_write(DEVICE_PORT, 1, 0xE0, 0);
        assert!(
            !bus.irq_level(PRIMARY_IRQ),
            "only the selected device drives INTRQ"
        );
        assert_eq!(status(&mut bus), READY);
        bus.io_write(DEVICE_PORT, 1, 0xF0, 0);
        assert_eq!(status(&mut bus), READY | DRQ);
        assert_eq!(
            read_bytes(&mut bus, SECTOR_SIZE),
            sector_of(&slave_image, 3)
        );
    }

    #[test]
    fn unknown_command_aborts() {
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), None);
        // READ DMA: there is no DMA.
        bus.io_write(STATUS_PORT, 1, 0xC8, 0);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(status(&mut bus), READY | ERR);
        assert_eq!(bus.io_read(ERROR_PORT, 1, 0) as u8, ABRT);
    }

    #[test]
    fn srst_resets_to_the_signature() {
        let mut bus = bus_with(memory_disk(64, DiskMode::ReadOnly), None);
        issue_lba(&mut bus, opcode::SET_MULTIPLE_MODE, 0, 8);
        issue_lba(&mut bus, opcode::READ_SECTORS, 3, 4);
        assert!(bus.irq_level(PRIMARY_IRQ));
        bus.io_write(CONTROL, 1, SRST as u32, 0);
        assert!(!bus.irq_level(PRIMARY_IRQ));
        assert_eq!(bus.io_read(CONTROL, 1, 0) as u8, BSY, "held in reset");
        bus.io_write(CONTROL, 1, 0, 0);
        assert!(
            !bus.irq_level(PRIMARY_IRQ),
            "reset ends without an interrupt"
        );
        assert_eq!(status(&mut bus), READY);
        let signature: Vec<u32> = (ERROR_PORT..=DEVICE_PORT)
            .map(|p| bus.io_read(p, 1, 0))
            .collect();
        assert_eq!(signature, [1, 1, 1, 0, 0, 0]);
        bus.io_write(STATUS_PORT, 1, opcode::IDENTIFY_DEVICE as u32, 0);
        assert_eq!(
            identify(&mut bus)[59],
            0,
            "multiple mode back to its default"
        );
    }

    #[test]
    fn execute_device_diagnostic_leaves_the_signature() {
        let mut bus = bus_with(memory_disk(16, DiskMode::ReadOnly), None);
        bus.io_write(DEVICE_PORT, 1, 0xB0, 0);
        bus.io_write(STATUS_PORT, 1, opcode::EXECUTE_DEVICE_DIAGNOSTIC as u32, 0);
        assert!(bus.irq_level(PRIMARY_IRQ));
        assert_eq!(bus.io_read(DEVICE_PORT, 1, 0), 0, "device 0 selected");
        assert_eq!(status(&mut bus), READY);
        assert_eq!(bus.io_read(ERROR_PORT, 1, 0) as u8, DIAGNOSTIC_PASSED);
    }

    #[test]
    fn image_size_not_a_multiple_of_512_is_an_error() {
        let file = TempImage::new("partial", &[0u8; 1000]);
        let err = Disk::open(&file.0, DiskMode::ReadOnly).err().unwrap();
        assert!(matches!(err, DiskError::PartialSector { size: 1000, .. }));
        assert!(err.to_string().contains("512-byte sectors"), "{err}");

        let empty = TempImage::new("empty", &[]);
        let err = Disk::open(&empty.0, DiskMode::ReadWrite).err().unwrap();
        assert!(matches!(err, DiskError::Empty { .. }));
        assert!(Disk::from_bytes(vec![0; 513], DiskMode::Snapshot).is_err());
        let missing = std::env::temp_dir().join("ringside-ide-no-such-image.img");
        assert!(matches!(
            Disk::open(missing, DiskMode::ReadOnly),
            Err(DiskError::Open { .. })
        ));
    }

    #[test]
    fn state_round_trips() {
        let image = patterned_image(64);
        let disk = || Disk::from_bytes(image.clone(), DiskMode::Snapshot).unwrap();
        let mut bus = bus_with(disk(), None);
        issue_lba(&mut bus, opcode::WRITE_SECTORS, 9, 1);
        write_bytes(&mut bus, &[0x77; SECTOR_SIZE]);
        issue_lba(&mut bus, opcode::READ_SECTORS, 8, 2);
        let first_half = read_bytes(&mut bus, 300);
        let saved = bus.find_device::<IdeChannel>().unwrap().save_state();

        let mut restored = IdeChannel::new(disk(), None);
        restored.restore_state(&saved).unwrap();
        assert_eq!(restored.save_state(), saved);
        let mut bus2 = Bus::new();
        let id = bus2.add(Box::new(restored));
        bus2.claim_ports(id, PRIMARY_COMMAND_BLOCK, STATUS_PORT);
        let rest = read_bytes(&mut bus2, 2 * SECTOR_SIZE - 300);
        let mut expected = sector_of(&image, 8).to_vec();
        expected.extend([0x77; SECTOR_SIZE]);
        assert_eq!([first_half, rest].concat(), expected);

        let channel = bus.find_device::<IdeChannel>().unwrap();
        for garbage in [
            serde_json::json!({"channel": 3}),
            serde_json::json!(null),
            serde_json::json!({"channel": saved["channel"], "drives": [null, null]}),
        ] {
            assert!(channel.restore_state(&garbage).is_err());
            assert_eq!(
                channel.save_state(),
                saved,
                "a failed restore changes nothing"
            );
        }
        let mut wrong_size = IdeChannel::new(memory_disk(32, DiskMode::Snapshot), None);
        assert!(wrong_size.restore_state(&saved).is_err());
        let mut read_only = IdeChannel::new(memory_disk(64, DiskMode::ReadOnly), None);
        assert!(
            read_only.restore_state(&saved).is_err(),
            "overlay on a read-only disk"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_character_device_is_refused_as_a_disk_without_blocking() {
        let fifo = std::env::temp_dir().join(format!("ringside-ide-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (path, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            let err = Disk::open(path, DiskMode::ReadOnly)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(what), "{err}");
        }
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn a_saved_transfer_that_wraps_past_the_last_sector_is_refused() {
        let mut bus = bus_with(memory_disk(64, DiskMode::Snapshot), None);
        issue_lba(&mut bus, opcode::READ_SECTORS, 8, 2);
        let saved = bus.find_device::<IdeChannel>().unwrap().save_state();
        let mut restored = IdeChannel::new(memory_disk(64, DiskMode::Snapshot), None);
        restored.restore_state(&saved).unwrap();
        for lba in [u64::MAX - 1, 63, LBA28_MAX_SECTORS] {
            let mut forged = saved.clone();
            let at = forged
                .pointer_mut("/drives/0/regs/transfer/run/lba")
                .expect("the saved read names its sector");
            *at = serde_json::json!(lba);
            let err = restored.restore_state(&forged).unwrap_err();
            assert!(
                err.to_string().contains("bad sector transfer"),
                "lba {lba}: {err}"
            );
        }
    }

    /// One guest access in the fuzz test.
    #[derive(Clone, Debug)]
    enum Access {
        Read(u16, u8),
        Write(u16, u8, u32),
        /// A whole sector through the data port, in or out.
        DataBlock(bool),
    }

    fn access() -> impl Strategy<Value = Access> {
        let port = prop::sample::select(vec![
            DATA_PORT,
            ERROR_PORT,
            SECTOR_COUNT_PORT,
            LBA_LOW_PORT,
            LBA_MID_PORT,
            LBA_HIGH_PORT,
            DEVICE_PORT,
            STATUS_PORT,
            CONTROL,
        ]);
        let size = prop::sample::select(vec![1u8, 2, 4]);
        let command = prop::sample::select(vec![
            0x20u32, 0x21, 0x30, 0x31, 0x40, 0x90, 0x91, 0xC4, 0xC5, 0xC6, 0xE5, 0xE7, 0xEC, 0xEF,
            0x10, 0xA1, 0xFF,
        ]);
        prop_oneof![
            3 => (port.clone(), size.clone()).prop_map(|(p, s)| Access::Read(p, s)),
            3 => (port, size, any::<u32>()).prop_map(|(p, s, v)| Access::Write(p, s, v)),
            2 => command.prop_map(|c| Access::Write(STATUS_PORT, 1, c)),
            1 => prop::sample::select(vec![0u32, 2, 4, 0x0A, 0x0E]).prop_map(|v| Access::Write(CONTROL, 1, v)),
            1 => any::<bool>().prop_map(Access::DataBlock),
        ]
    }

    fn fuzz_channel(with_slave: bool) -> IdeChannel {
        let slave = with_slave.then(|| memory_disk(8, DiskMode::ReadOnly));
        IdeChannel::new(memory_disk(40, DiskMode::Snapshot), slave)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_port_sequences_never_panic(
            with_slave in any::<bool>(),
            accesses in prop::collection::vec(access(), 0..200),
        ) {
            let mut bus = Bus::new();
            let id = bus.add(Box::new(fuzz_channel(with_slave)));
            bus.claim_ports(id, PRIMARY_COMMAND_BLOCK, STATUS_PORT);
            bus.claim_ports(id, PRIMARY_CONTROL, PRIMARY_CONTROL);
            for a in accesses {
                match a {
                    Access::Read(port, size) => {
                        bus.io_read(port, size, 0);
                    }
                    Access::Write(port, size, value) => bus.io_write(port, size, value, 0),
                    Access::DataBlock(false) => {
                        read_bytes(&mut bus, SECTOR_SIZE);
                    }
                    Access::DataBlock(true) => write_bytes(&mut bus, &[0xA5; SECTOR_SIZE]),
                }
            }
            let channel = bus.find_device::<IdeChannel>().unwrap();
            let saved = channel.save_state();
            let mut copy = fuzz_channel(with_slave);
            prop_assert!(copy.restore_state(&saved).is_ok());
            prop_assert_eq!(copy.save_state(), saved);
        }
    }
}
