//! Saved state (SSM in VirtualBox's terms): a whole machine in one file.
//!
//! A snapshot holds what cannot be rebuilt from the machine's configuration:
//! the CPU state, all of guest RAM, the A20 gate, the clock, the bus's own
//! state (interrupt line levels, each device's timer deadline, the signals
//! not yet taken) and every device's `save_state`. It also holds the
//! configuration as TOML, so a front-end can build the same machine again,
//! and enough of the machine's identity to refuse a different one: the RAM
//! size, the devices by name, a CRC-32 of every ROM and the size of every
//! disk image. ROM and disk contents are not saved: they must be the ones
//! the machine was built with. Engines keep only caches, so a state saved
//! under one engine restores under any other.
//!
//! The file (docs/snapshots.md has the details):
//!
//! ```text
//! offset  size  field
//!      0    13  magic, "RINGSIDE-SSM\0"
//!     13     4  format version, u32 little-endian (FORMAT_VERSION)
//!     17     8  payload length in bytes, u64 little-endian
//!     25     4  CRC-32 (IEEE) of the payload, u32 little-endian
//!     29     -  payload: two sections, each a u64 little-endian length
//!               and its bytes: the machine state as JSON, then guest RAM
//!               as one zlib stream
//! ```
//!
//! Restoring is all-or-nothing. [`from_bytes`] verifies the frame, the
//! checksum, the JSON and the RAM before it returns a [`Snapshot`];
//! [`Snapshot::restore_into`] checks the snapshot against the machine,
//! restores the devices (putting back the ones already restored if a later
//! one refuses its state), and only then overwrites RAM, CPU, clock and bus.
//! Any error leaves the machine exactly as it was.
//!
//! ```
//! use ringside_core::config::MachineConfig;
//! use ringside_core::{snapshot, Machine};
//!
//! let mut config = MachineConfig::default();
//! config.machine.memory_mib = 1;
//! let mut m = Machine::with_ram_mib(1).unwrap();
//! m.cpu.gpr[0] = 0x1234;
//! let bytes = snapshot::to_bytes(&m, &config.to_toml()).unwrap();
//! m.cpu.gpr[0] = 0;
//! snapshot::from_bytes(&bytes).unwrap().restore_into(&mut m).unwrap();
//! assert_eq!(m.cpu.gpr[0], 0x1234);
//! ```

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::bus::{BusState, StateError};
use crate::config::{ConfigError, MachineConfig};
use crate::cpu::CpuState;
use crate::input_file::{open_regular, InputKind};
use crate::machine::Machine;
use crate::memory::DeviceId;
use crate::time::Clock;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 13] = b"RINGSIDE-SSM\0";
/// The format this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, version, payload length and CRC-32.
pub const HEADER_LEN: usize = MAGIC.len() + 4 + 8 + 4;

/// Why a snapshot could not be written, read or restored. Every variant
/// raised by reading or restoring leaves the machine unchanged, except
/// [`SnapshotError::Rollback`]. Each message is whole (it includes its
/// cause), so callers print it as it is.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write snapshot {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read snapshot {}: it is larger than the limit of {limit} bytes for a saved state", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("not a ringside snapshot (it does not start with the magic bytes RINGSIDE-SSM)")]
    NotASnapshot,
    #[error(
        "snapshot format version {found} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
    #[error("snapshot is truncated: {what} needs {needed} bytes, there are {found}")]
    Truncated {
        what: &'static str,
        needed: u64,
        found: u64,
    },
    #[error("snapshot has {0} bytes after the end of its payload")]
    TrailingBytes(u64),
    #[error(
        "snapshot is corrupted: the payload's CRC-32 is {found:#010x}, the header says {expected:#010x}"
    )]
    Checksum { expected: u32, found: u32 },
    /// The checksum matched but the payload is not a state this build
    /// wrote (only a forged or buggy file gets here).
    #[error("snapshot payload is malformed: {0}")]
    Malformed(String),
    #[error("snapshot: {0}")]
    Config(ConfigError),
    #[error("snapshot is of a machine with {saved} bytes of RAM; this machine has {machine}")]
    RamSize { saved: u32, machine: u32 },
    #[error("snapshot is of a machine with the devices [{saved}]; this machine has [{machine}]")]
    Devices { saved: String, machine: String },
    #[error("snapshot is of a machine with other ROMs: {0}")]
    Roms(String),
    #[error("snapshot: disk image {path} {problem}; a snapshot holds no disk contents, so the image must be the one it was saved with")]
    Disk { path: String, problem: String },
    #[error("snapshot cannot be restored: {0}")]
    Device(StateError),
    /// A device refused its saved state, and one of the devices restored
    /// before it then refused its own earlier state: the devices are no
    /// longer consistent. A device that keeps its `restore_state` contract
    /// never causes this.
    #[error("snapshot cannot be restored ({failed}), and putting the devices back failed too ({rollback})")]
    Rollback {
        failed: StateError,
        rollback: StateError,
    },
}

/// A ROM mapping as the snapshot records it: ROM contents are not saved,
/// only enough to refuse a machine whose ROM differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RomRecord {
    base: u32,
    bytes: u32,
    crc32: u32,
}

/// A disk image named in the configuration, with its size when saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskRecord {
    path: String,
    bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRecord {
    name: String,
    state: Value,
}

/// The JSON section: everything but RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// The machine's configuration, as TOML.
    config: String,
    ram_bytes: u32,
    roms: Vec<RomRecord>,
    disks: Vec<DiskRecord>,
    cpu: CpuState,
    a20: bool,
    clock: Clock,
    /// `Machine::reboots` (absent from states saved before reboots were
    /// counted).
    #[serde(default)]
    reboots: u64,
    bus: BusState,
    /// By device index, as the bus holds them.
    devices: Vec<DeviceRecord>,
}

/// A snapshot read and verified, ready to restore.
pub struct Snapshot {
    state: State,
    config: MachineConfig,
    ram: Vec<u8>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let devices: Vec<&str> = self.state.devices.iter().map(|d| d.name.as_str()).collect();
        f.debug_struct("Snapshot")
            .field("ram_bytes", &self.state.ram_bytes)
            .field("devices", &devices)
            .field("icount", &self.state.clock.icount)
            .finish_non_exhaustive()
    }
}

/// Save `m`, built from the configuration `config_toml`, to `path`
/// atomically: the bytes go to a temporary file in the same directory,
/// which is flushed to disk and renamed over `path`. If anything fails,
/// `path` is untouched and the temporary file is removed.
pub fn save(m: &Machine, config_toml: &str, path: &Path) -> Result<(), SnapshotError> {
    let bytes = to_bytes(m, config_toml)?;
    write_atomically(path, &bytes)
}

/// The snapshot file of `m` as bytes. Fails only when `config_toml` is
/// not a valid configuration of this machine or a disk image it names
/// cannot be found.
pub fn to_bytes(m: &Machine, config_toml: &str) -> Result<Vec<u8>, SnapshotError> {
    let state = capture(m, config_toml)?;
    Ok(encode(&state, m.mem.ram_slice()))
}

/// Read and verify the snapshot at `path` (see [`from_bytes`]). A file that
/// does not start with the magic bytes is refused before the rest of it is
/// read.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let read_error = |error| SnapshotError::Read {
        path: path.to_owned(),
        error,
    };
    let limit = InputKind::SavedState.limit();
    let (file, md) = open_regular(path).map_err(|(error, what)| match what {
        Some(what) => read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        )),
        None => read_error(error),
    })?;
    let too_large = || SnapshotError::TooLarge {
        path: path.to_owned(),
        limit,
    };
    if md.len() > limit {
        return Err(too_large());
    }
    // The read stops one byte past the limit, so a file that grows while
    // it is read costs no more memory than the limit.
    let mut file = file.take(limit + 1);
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAGIC.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    check_magic(&bytes)?;
    file.read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    from_bytes(&bytes)
}

/// Parse and verify a snapshot: the frame, the checksum, the JSON state,
/// the configuration and the RAM (decompressed here, to exactly the saved
/// size). Nothing is left to fail later but the comparison with the
/// machine it is restored into.
pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let payload = unframe(bytes)?;
    let (json, rest) = take_section(payload, "the state section")?;
    let (packed, rest) = take_section(rest, "the RAM section")?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the RAM section",
            rest.len()
        )));
    }
    let state: State =
        serde_json::from_slice(json).map_err(|e| malformed(format!("the state: {e}")))?;
    let config = MachineConfig::from_toml(&state.config).map_err(SnapshotError::Config)?;
    if config_ram_bytes(&config) != state.ram_bytes as u64 {
        return Err(malformed(format!(
            "the configuration has {} MiB of RAM, the state {} bytes",
            config.machine.memory_mib, state.ram_bytes
        )));
    }
    if state.bus.deadlines.len() != state.devices.len() {
        return Err(malformed(format!(
            "{} timer deadlines for {} devices",
            state.bus.deadlines.len(),
            state.devices.len()
        )));
    }
    check_cpu(&state.cpu)?;
    let ram = inflate(packed, state.ram_bytes)?;
    Ok(Snapshot { state, config, ram })
}

/// Refuse a CPU state no guest could have reached on ringside's CPU: the
/// engines assume what MOV CR0, MOV CR4, POPF and IRET guarantee (a forged
/// state must not hand them, say, paging without protection).
fn check_cpu(cpu: &CpuState) -> Result<(), SnapshotError> {
    use crate::cpu::{cr0, cr4, flags};
    let problem = if cpu.cr0 & !cr0::DEFINED != 0 {
        format!("CR0 {:#010x} sets reserved bits", cpu.cr0)
    } else if cpu.cr0 & cr0::PG != 0 && cpu.cr0 & cr0::PE == 0 {
        // SDM Vol. 3A 2.5: setting PG without PE raises #GP.
        format!("CR0 {:#010x} sets PG without PE", cpu.cr0)
    } else if cpu.cr0 & cr0::NW != 0 && cpu.cr0 & cr0::CD == 0 {
        format!("CR0 {:#010x} sets NW without CD", cpu.cr0)
    } else if cpu.cr4 & !cr4::SUPPORTED != 0 {
        format!(
            "CR4 {:#010x} sets bits this CPU does not implement",
            cpu.cr4
        )
    } else if cpu.eflags & flags::FIXED1 == 0 {
        format!(
            "EFLAGS {:#010x} clears bit 1, which is always 1",
            cpu.eflags
        )
    } else if cpu.eflags & !(flags::IMPLEMENTED | flags::FIXED1) != 0 {
        format!(
            "EFLAGS {:#010x} sets reserved bits (or VIF/VIP, which need VME)",
            cpu.eflags
        )
    } else {
        return Ok(());
    };
    Err(malformed(format!("the CPU state: {problem}")))
}

impl Snapshot {
    /// The configuration of the machine the snapshot was taken of, as
    /// saved (TOML).
    pub fn config_toml(&self) -> &str {
        &self.state.config
    }

    /// The same configuration, parsed (it was validated when read).
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// The CPU state the snapshot restores.
    pub fn cpu(&self) -> &CpuState {
        &self.state.cpu
    }

    /// The clock the snapshot restores (`icount`: instructions retired
    /// when it was saved).
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// Make `m` the machine that was saved, or change nothing and say why
    /// not. `m` must be built from the same configuration (the RAM size,
    /// the devices, the ROMs and the disk sizes are checked). Afterwards
    /// every engine drops code it made from RAM, the TLB is empty and the
    /// data breakpoints follow the restored DR7.
    pub fn restore_into(&self, m: &mut Machine) -> Result<(), SnapshotError> {
        self.check_machine(m)?;
        restore_devices(m, &self.state.devices)?;
        // Nothing below can fail: the machine takes the rest as a whole.
        // `write_ram` records a code write for every code page it covers,
        // so engines drop what they made from the old contents.
        m.mem
            .write_ram(0, &self.ram)
            .expect("check_machine compared the RAM sizes");
        m.cpu = self.state.cpu.clone();
        m.clock = self.state.clock.clone();
        m.reboots = self.state.reboots;
        m.mem.set_a20(self.state.a20);
        m.bus.restore_bus_state(&self.state.bus);
        m.watch.hits = 0;
        m.tlb.flush();
        m.sync_debug_registers();
        Ok(())
    }

    /// Refuse a machine that is not the one saved.
    fn check_machine(&self, m: &Machine) -> Result<(), SnapshotError> {
        let s = &self.state;
        if m.mem.ram_size() != s.ram_bytes {
            return Err(SnapshotError::RamSize {
                saved: s.ram_bytes,
                machine: m.mem.ram_size(),
            });
        }
        let machine: Vec<&str> = m.bus.devices().map(|d| d.name()).collect();
        let saved: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
        if machine != saved {
            return Err(SnapshotError::Devices {
                saved: saved.join(", "),
                machine: machine.join(", "),
            });
        }
        check_roms(&s.roms, &rom_records(m))?;
        for disk in &s.disks {
            let problem = match std::fs::metadata(&disk.path) {
                Err(e) => format!("cannot be found ({e})"),
                Ok(md) if md.len() != disk.bytes => format!(
                    "is {} bytes; it was {} when the state was saved",
                    md.len(),
                    disk.bytes
                ),
                Ok(_) => continue,
            };
            return Err(SnapshotError::Disk {
                path: disk.path.clone(),
                problem,
            });
        }
        Ok(())
    }
}

fn malformed(what: String) -> SnapshotError {
    SnapshotError::Malformed(what)
}

fn config_ram_bytes(config: &MachineConfig) -> u64 {
    config.machine.memory_mib as u64 * 1024 * 1024
}

/// Everything but RAM, from the machine.
fn capture(m: &Machine, config_toml: &str) -> Result<State, SnapshotError> {
    let config = MachineConfig::from_toml(config_toml).map_err(SnapshotError::Config)?;
    if config_ram_bytes(&config) != m.mem.ram_size() as u64 {
        return Err(SnapshotError::Config(ConfigError::Invalid {
            key: "machine.memory_mib",
            problem: format!(
                "{} MiB, but the machine has {} bytes of RAM",
                config.machine.memory_mib,
                m.mem.ram_size()
            ),
        }));
    }
    let disks = config
        .disks
        .iter()
        .map(|d| match std::fs::metadata(&d.path) {
            Ok(md) => Ok(DiskRecord {
                path: d.path.clone(),
                bytes: md.len(),
            }),
            Err(e) => Err(SnapshotError::Disk {
                path: d.path.clone(),
                problem: format!("cannot be found ({e})"),
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(State {
        config: config_toml.to_owned(),
        ram_bytes: m.mem.ram_size(),
        roms: rom_records(m),
        disks,
        cpu: m.cpu.clone(),
        a20: m.mem.a20_enabled(),
        clock: m.clock.clone(),
        reboots: m.reboots,
        bus: m.bus.bus_state(),
        devices: m
            .bus
            .save_state()
            .into_iter()
            .map(|(name, state)| DeviceRecord {
                name: name.to_owned(),
                state,
            })
            .collect(),
    })
}

fn rom_records(m: &Machine) -> Vec<RomRecord> {
    m.mem
        .roms()
        .map(|(base, data)| RomRecord {
            base,
            bytes: data.len() as u32,
            crc32: crc32fast::hash(data),
        })
        .collect()
}

fn check_roms(saved: &[RomRecord], machine: &[RomRecord]) -> Result<(), SnapshotError> {
    if saved.len() != machine.len() {
        return Err(SnapshotError::Roms(format!(
            "{} ROM mappings saved, this machine has {}",
            saved.len(),
            machine.len()
        )));
    }
    match saved.iter().zip(machine).position(|(s, m)| s != m) {
        None => Ok(()),
        Some(i) => {
            let (s, m) = (&saved[i], &machine[i]);
            Err(SnapshotError::Roms(format!(
                "ROM {i} was {:#x} bytes at {:#010x} with CRC-32 {:#010x}, \
                 this machine's is {:#x} bytes at {:#010x} with CRC-32 {:#010x}",
                s.bytes, s.base, s.crc32, m.bytes, m.base, m.crc32
            )))
        }
    }
}

/// Restore every device, or none: if one refuses its state (and so stays
/// as it was), the devices restored before it get their own state back.
fn restore_devices(m: &mut Machine, saved: &[DeviceRecord]) -> Result<(), SnapshotError> {
    let before: Vec<Value> = m.bus.devices().map(|d| d.save_state()).collect();
    // check_machine matched the device lists, so every index is a device.
    for (i, record) in saved.iter().enumerate() {
        let Some(device) = m.bus.device_mut(DeviceId(i)) else {
            break;
        };
        let Err(failed) = device.restore_state(&record.state) else {
            continue;
        };
        for (j, state) in before.iter().enumerate().take(i) {
            if let Some(device) = m.bus.device_mut(DeviceId(j)) {
                if let Err(rollback) = device.restore_state(state) {
                    return Err(SnapshotError::Rollback { failed, rollback });
                }
            }
        }
        return Err(SnapshotError::Device(failed));
    }
    Ok(())
}

fn encode(state: &State, ram: &[u8]) -> Vec<u8> {
    // Serialising cannot fail: every map key in the state is a string.
    let json = serde_json::to_vec(state).expect("the state serialises to JSON");
    // Writing into a Vec cannot fail.
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(ram).expect("compressing into memory");
    let packed = z.finish().expect("compressing into memory");
    let mut payload = Vec::with_capacity(16 + json.len() + packed.len());
    for section in [&json, &packed] {
        payload.extend_from_slice(&(section.len() as u64).to_le_bytes());
        payload.extend_from_slice(section);
    }
    frame(FORMAT_VERSION, &payload)
}

/// Header and payload.
fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The bytes present must be a prefix of the magic (an empty or short file
/// is then reported as truncated).
fn check_magic(bytes: &[u8]) -> Result<(), SnapshotError> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] == MAGIC[..n] {
        Ok(())
    } else {
        Err(SnapshotError::NotASnapshot)
    }
}

/// Check the header and the checksum; the payload.
fn unframe(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    check_magic(bytes)?;
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated {
            what: "the header",
            needed: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let version = u32::from_le_bytes(field(13, 4).try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let length = u64::from_le_bytes(field(17, 8).try_into().expect("8 bytes"));
    let expected = u32::from_le_bytes(field(25, 4).try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_LEN..];
    let present = payload.len() as u64;
    if present < length {
        return Err(SnapshotError::Truncated {
            what: "the payload",
            needed: length.saturating_add(HEADER_LEN as u64),
            found: bytes.len() as u64,
        });
    }
    if present > length {
        return Err(SnapshotError::TrailingBytes(present - length));
    }
    let found = crc32fast::hash(payload);
    if found != expected {
        return Err(SnapshotError::Checksum { expected, found });
    }
    Ok(payload)
}

/// One length-prefixed section, and what follows it.
fn take_section<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), SnapshotError> {
    if bytes.len() < 8 {
        return Err(malformed(format!("{what} has no length")));
    }
    let (len, rest) = bytes.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if len > rest.len() as u64 {
        return Err(malformed(format!(
            "{what} is {len} bytes long, only {} remain",
            rest.len()
        )));
    }
    Ok(rest.split_at(len as usize))
}

/// Decompress RAM, which must come to exactly `ram_bytes`.
fn inflate(packed: &[u8], ram_bytes: u32) -> Result<Vec<u8>, SnapshotError> {
    let mut ram = Vec::with_capacity(ram_bytes as usize);
    let mut z = ZlibDecoder::new(packed);
    (&mut z)
        .take(ram_bytes as u64 + 1)
        .read_to_end(&mut ram)
        .map_err(|e| malformed(format!("RAM does not decompress: {e}")))?;
    if ram.len() != ram_bytes as usize {
        return Err(malformed(format!(
            "RAM decompresses to {}{} bytes, the state says {ram_bytes}",
            if ram.len() > ram_bytes as usize {
                "more than "
            } else {
                ""
            },
            ram.len().min(ram_bytes as usize)
        )));
    }
    if z.total_in() != packed.len() as u64 {
        return Err(malformed(format!(
            "{} bytes after the end of the RAM stream",
            packed.len() as u64 - z.total_in()
        )));
    }
    Ok(ram)
}

/// Write `bytes` to a temporary file next to `path`, flush it to disk and
/// rename it over `path`: a reader sees the old file or the new one, never
/// part of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);
    let write_error = |error| SnapshotError::Write {
        path: path.to_owned(),
        error,
    };
    let Some(name) = path.file_name() else {
        return Err(write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        )));
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_error(e));
    }
    // Make the rename itself durable. The file is complete at `path`
    // whether or not this succeeds, so a failure here is not an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::any::Any;

    use serde_json::json;

    use super::*;
    use crate::bus::{Device, DeviceCtx};

    /// A one-register device: a write sets the register, raises line 5
    /// when it is odd and schedules a timer. `restore_state` refuses values
    /// above `limit`, and after `restores_left` restores refuses anything
    /// (a device breaking its contract, for the rollback test).
    struct Register {
        name: &'static str,
        value: u32,
        limit: u32,
        restores_left: u32,
    }

    impl Register {
        fn new(name: &'static str) -> Register {
            Register {
                name,
                value: 0,
                limit: u32::MAX,
                restores_left: u32::MAX,
            }
        }
    }

    impl Device for Register {
        fn name(&self) -> &'static str {
            self.name
        }
        fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
            self.value
        }
        fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
            self.value = value;
            ctx.set_irq(5, value & 1 != 0);
            ctx.schedule(ctx.now_ns + 1000);
        }
        fn save_state(&self) -> Value {
            json!({ "value": self.value })
        }
        fn restore_state(&mut self, state: &Value) -> Result<(), StateError> {
            let value = state["value"]
                .as_u64()
                .filter(|&v| v <= self.limit as u64 && self.restores_left > 0)
                .ok_or_else(|| StateError::new(self.name, "bad value"))?;
            self.restores_left -= 1;
            self.value = value as u32;
            Ok(())
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    fn config_toml(mib: u32) -> String {
        let mut c = MachineConfig::default();
        c.machine.memory_mib = mib;
        c.to_toml()
    }

    /// 2 MiB of RAM, a ROM at the top of memory, two registers at ports
    /// 0x10 and 0x11.
    fn machine_with(devices: Vec<Register>) -> Machine {
        let mut m = Machine::with_ram_mib(2).unwrap();
        m.mem
            .map_rom(&[0xEA, 0x5B, 0xE0, 0x00, 0xF0], 1 << 32)
            .unwrap();
        for (i, d) in devices.into_iter().enumerate() {
            let port = 0x10 + i as u16;
            m.add_port_device(Box::new(d), &[(port, port)]);
        }
        m
    }

    fn machine() -> Machine {
        machine_with(vec![Register::new("first"), Register::new("second")])
    }

    /// A machine in a state far from reset in every part a snapshot holds.
    fn busy_machine() -> Machine {
        let mut m = machine();
        m.cpu.gpr[0] = 0xDEAD_BEEF;
        m.cpu.eip = 0x1234;
        m.cpu.cr0 |= 1;
        m.mem.write_ram(0x1000, b"saved state").unwrap();
        m.mem.write_ram(0x1F_FFF0, &[0x5A; 16]).unwrap();
        m.clock.icount = 5000;
        m.clock.idle_ns = 77;
        // The second register lowers line 5, the first raises it again.
        m.bus.io_write(0x11, 1, 0x40, m.clock.now_ns());
        m.bus.io_write(0x10, 1, 0x33, m.clock.now_ns());
        m.bus.signals.post_code = Some(0x42);
        m.set_a20(false);
        m
    }

    /// Everything a restore may change, to compare machines.
    #[derive(Debug, PartialEq)]
    struct Fingerprint {
        cpu: CpuState,
        ram: Vec<u8>,
        a20: bool,
        clock: Clock,
        bus: BusState,
        devices: Vec<(&'static str, Value)>,
    }

    fn fingerprint(m: &Machine) -> Fingerprint {
        Fingerprint {
            cpu: m.cpu.clone(),
            ram: m.mem.ram_slice().to_vec(),
            a20: m.mem.a20_enabled(),
            clock: m.clock.clone(),
            bus: m.bus.bus_state(),
            devices: m.bus.save_state(),
        }
    }

    fn snapshot_of(m: &Machine) -> Vec<u8> {
        to_bytes(m, &config_toml(2)).unwrap()
    }

    /// A file around `json` and `packed` with a correct checksum.
    fn forged(json: &[u8], packed: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        for section in [json, packed] {
            payload.extend_from_slice(&(section.len() as u64).to_le_bytes());
            payload.extend_from_slice(section);
        }
        frame(FORMAT_VERSION, &payload)
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(bytes).unwrap();
        z.finish().unwrap()
    }

    fn state_json(m: &Machine) -> Vec<u8> {
        serde_json::to_vec(&capture(m, &config_toml(2)).unwrap()).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ringside-snapshot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_small_machine_round_trips_into_a_fresh_one() {
        let saved = busy_machine();
        let bytes = snapshot_of(&saved);
        let mut m = machine();
        let snapshot = from_bytes(&bytes).unwrap();
        assert_eq!(snapshot.clock().icount, 5000);
        assert_eq!(snapshot.config().machine.memory_mib, 2);
        snapshot.restore_into(&mut m).unwrap();
        assert_eq!(fingerprint(&m), fingerprint(&saved));
        // The restored timer deadline and line level are live.
        assert_eq!(m.bus.next_deadline(), 5077 + 1000);
        assert!(m.bus.irq_level(5));
    }

    #[test]
    fn snapshots_of_the_same_machine_are_byte_identical() {
        assert_eq!(snapshot_of(&busy_machine()), snapshot_of(&busy_machine()));
    }

    #[test]
    fn a_file_without_the_magic_is_not_a_snapshot() {
        let mut bytes = snapshot_of(&machine());
        bytes[0] = b'X';
        assert!(matches!(
            from_bytes(&bytes),
            Err(SnapshotError::NotASnapshot)
        ));
        assert!(matches!(
            from_bytes(b"\x7fELF"),
            Err(SnapshotError::NotASnapshot)
        ));
    }

    #[test]
    fn another_format_version_is_refused_naming_it() {
        let mut bytes = snapshot_of(&machine());
        bytes[13..17].copy_from_slice(&2u32.to_le_bytes());
        let err = from_bytes(&bytes).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsupportedVersion { found: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let bytes = snapshot_of(&machine());
        for len in 0..bytes.len() {
            match from_bytes(&bytes[..len]) {
                Err(SnapshotError::Truncated { found, .. }) => assert_eq!(found, len as u64),
                other => panic!("cut at {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn bytes_after_the_payload_are_refused() {
        let mut bytes = snapshot_of(&machine());
        bytes.extend_from_slice(b"tail");
        assert!(matches!(
            from_bytes(&bytes),
            Err(SnapshotError::TrailingBytes(4))
        ));
    }

    #[test]
    fn a_flipped_bit_in_the_payload_or_its_checksum_fails_the_checksum() {
        let bytes = snapshot_of(&machine());
        for at in [
            25,
            28,
            HEADER_LEN,
            HEADER_LEN + 9,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(from_bytes(&bad), Err(SnapshotError::Checksum { .. })),
                "flip at {at}"
            );
        }
    }

    #[test]
    fn a_forged_payload_that_is_not_the_state_is_malformed() {
        let m = machine();
        let ram = zlib(m.mem.ram_slice());
        for json in [&b"not json"[..], b"{}", b"{\"config\": 3}"] {
            let err = from_bytes(&forged(json, &ram)).unwrap_err();
            assert!(matches!(err, SnapshotError::Malformed(_)), "{err}");
        }
        let mut unknown: Value = serde_json::from_slice(&state_json(&m)).unwrap();
        unknown["extra"] = json!(1);
        let err = from_bytes(&forged(&serde_json::to_vec(&unknown).unwrap(), &ram)).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn forged_ram_that_does_not_decompress_or_has_another_size_is_malformed() {
        let m = machine();
        let json = state_json(&m);
        for (packed, says) in [
            (b"not zlib".to_vec(), "does not decompress"),
            (zlib(&[0; 4096]), "decompresses to 4096 bytes"),
            (zlib(&vec![0; (2 << 20) + 1]), "more than"),
            ([zlib(m.mem.ram_slice()), vec![0]].concat(), "after the end"),
        ] {
            let err = from_bytes(&forged(&json, &packed)).unwrap_err();
            assert!(
                matches!(&err, SnapshotError::Malformed(s) if s.contains(says)),
                "{err}"
            );
        }
    }

    #[test]
    fn a_state_whose_configuration_disagrees_is_refused() {
        let m = machine();
        let ram = zlib(m.mem.ram_slice());
        let mut state: Value = serde_json::from_slice(&state_json(&m)).unwrap();
        state["config"] = json!(config_toml(4));
        let err = from_bytes(&forged(&serde_json::to_vec(&state).unwrap(), &ram)).unwrap_err();
        assert!(err.to_string().contains("4 MiB"), "{err}");
        state["config"] = json!("[machine");
        let err = from_bytes(&forged(&serde_json::to_vec(&state).unwrap(), &ram)).unwrap_err();
        assert!(matches!(err, SnapshotError::Config(_)), "{err}");
        assert!(matches!(
            to_bytes(&m, &config_toml(4)),
            Err(SnapshotError::Config(_))
        ));
    }

    #[test]
    fn a_machine_with_other_ram_is_refused_and_left_unchanged() {
        let snapshot = from_bytes(&snapshot_of(&busy_machine())).unwrap();
        let mut m = Machine::with_ram_mib(4).unwrap();
        let before = fingerprint(&m);
        let err = snapshot.restore_into(&mut m).unwrap_err();
        assert!(matches!(err, SnapshotError::RamSize { .. }), "{err}");
        assert_eq!(fingerprint(&m), before);
    }

    #[test]
    fn a_machine_with_other_devices_is_refused_naming_them() {
        let snapshot = from_bytes(&snapshot_of(&busy_machine())).unwrap();
        let mut m = machine_with(vec![Register::new("first"), Register::new("third")]);
        let before = fingerprint(&m);
        let err = snapshot.restore_into(&mut m).unwrap_err().to_string();
        assert!(
            err.contains("[first, second]") && err.contains("[first, third]"),
            "{err}"
        );
        assert_eq!(fingerprint(&m), before);
    }

    #[test]
    fn a_machine_with_another_rom_is_refused() {
        let snapshot = from_bytes(&snapshot_of(&busy_machine())).unwrap();
        let mut m = Machine::with_ram_mib(2).unwrap();
        m.map_rom(&[0xF4], 1 << 32).unwrap();
        for name in ["first", "second"] {
            m.add_port_device(Box::new(Register::new(name)), &[]);
        }
        let err = snapshot.restore_into(&mut m).unwrap_err();
        assert!(matches!(err, SnapshotError::Roms(_)), "{err}");
        assert_eq!(m.cpu, CpuState::at_reset());
    }

    #[test]
    fn a_resized_or_missing_disk_is_refused() {
        let dir = temp_dir("disk");
        let disk = dir.join("disk.img");
        std::fs::write(&disk, [0u8; 1024]).unwrap();
        let mut config = MachineConfig::from_toml(&config_toml(2)).unwrap();
        config.disks.push(crate::config::DiskConfig {
            path: disk.display().to_string(),
            mode: crate::config::DiskMode::Ro,
        });
        let bytes = to_bytes(&busy_machine(), &config.to_toml()).unwrap();
        let snapshot = from_bytes(&bytes).unwrap();
        snapshot.restore_into(&mut machine()).unwrap();
        std::fs::write(&disk, [0u8; 2048]).unwrap();
        let mut m = machine();
        let err = snapshot.restore_into(&mut m).unwrap_err().to_string();
        assert!(err.contains("is 2048 bytes; it was 1024"), "{err}");
        std::fs::remove_file(&disk).unwrap();
        let err = snapshot.restore_into(&mut m).unwrap_err().to_string();
        assert!(err.contains("cannot be found"), "{err}");
        assert_eq!(m.cpu, CpuState::at_reset());
    }

    #[test]
    fn a_device_refusing_its_state_rolls_back_the_devices_restored_before_it() {
        let snapshot = from_bytes(&snapshot_of(&busy_machine())).unwrap();
        let mut picky = Register::new("second");
        picky.limit = 0x3F;
        let mut m = machine_with(vec![Register::new("first"), picky]);
        m.bus.io_write(0x10, 1, 7, 0);
        let before = fingerprint(&m);
        let err = snapshot.restore_into(&mut m).unwrap_err();
        assert!(matches!(err, SnapshotError::Device(_)), "{err}");
        assert!(err.to_string().contains("second"), "{err}");
        assert_eq!(fingerprint(&m), before);
    }

    #[test]
    fn a_device_that_cannot_take_its_own_state_back_is_reported() {
        let snapshot = from_bytes(&snapshot_of(&busy_machine())).unwrap();
        let mut once = Register::new("first");
        once.restores_left = 1;
        let mut picky = Register::new("second");
        picky.limit = 0x3F;
        let mut m = machine_with(vec![once, picky]);
        let err = snapshot.restore_into(&mut m).unwrap_err();
        assert!(matches!(err, SnapshotError::Rollback { .. }), "{err}");
    }

    #[test]
    fn restore_drops_cached_code_and_rearms_data_breakpoints() {
        let mut saved = machine();
        // DR0 armed for writes (L0, R/W0 = 01).
        saved.cpu.dr[7] = 1 | (1 << 16);
        let snapshot = from_bytes(&snapshot_of(&saved)).unwrap();
        let mut m = machine();
        m.mem.mark_code_page(3);
        let cursor = m.mem.code_write_seq();
        snapshot.restore_into(&mut m).unwrap();
        assert_eq!(
            m.mem.code_writes_since(cursor),
            crate::memory::CodeWrites::Pages(&[3])
        );
        assert!(m.watch.active);
    }

    #[test]
    fn save_replaces_the_file_whole_and_a_failed_save_leaves_it_as_it_was() {
        let dir = temp_dir("atomic");
        let path = dir.join("state.ssm");
        save(&machine(), &config_toml(2), &path).unwrap();
        save(&busy_machine(), &config_toml(2), &path).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(first, snapshot_of(&busy_machine()));
        assert_eq!(read(&path).unwrap().clock().icount, 5000);
        let err = save(&machine(), "[machine", &path).unwrap_err();
        assert!(matches!(err, SnapshotError::Config(_)), "{err}");
        let err = save(&machine(), &config_toml(2), &dir.join("no/such/dir/s")).unwrap_err();
        assert!(matches!(err, SnapshotError::Write { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), first);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.ssm"], "no temporary file is left behind");
    }

    #[test]
    fn reading_a_file_that_is_not_a_snapshot_says_so() {
        let dir = temp_dir("read");
        let path = dir.join("kernel.elf");
        std::fs::write(&path, b"\x7fELF and more").unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::NotASnapshot)));
        let err = read(&dir.join("missing")).unwrap_err();
        assert!(matches!(err, SnapshotError::Read { .. }), "{err}");
    }

    /// A state saved from a 1 MiB machine whose CPU `forge` changed.
    fn state_with_cpu(forge: impl FnOnce(&mut CpuState)) -> Result<Snapshot, SnapshotError> {
        let mut m = Machine::with_ram_mib(1).unwrap();
        forge(&mut m.cpu);
        from_bytes(&to_bytes(&m, &config_toml(1)).unwrap())
    }

    fn refused_naming(forge: impl FnOnce(&mut CpuState), field: &str) {
        let err = state_with_cpu(forge).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed(_)), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }

    #[test]
    fn a_state_with_paging_but_not_protection_is_refused() {
        refused_naming(
            |c| c.cr0 = crate::cpu::cr0::PG | crate::cpu::cr0::ET,
            "PG without PE",
        );
    }

    #[test]
    fn a_state_with_reserved_cr0_or_unsupported_cr4_bits_is_refused() {
        refused_naming(|c| c.cr0 |= 1 << 8, "CR0");
        refused_naming(|c| c.cr4 = 1 << 0, "CR4");
    }

    #[test]
    fn a_state_with_reserved_eflags_bits_is_refused() {
        refused_naming(|c| c.eflags = 0xFFFF_FFFF, "EFLAGS");
        refused_naming(|c| c.eflags = 0, "EFLAGS");
        refused_naming(|c| c.eflags = 0x2 | crate::cpu::flags::VIF, "EFLAGS");
        assert!(state_with_cpu(|c| c.eflags = 0x2 | crate::cpu::flags::IMPLEMENTED).is_ok());
    }

    #[test]
    fn a_state_file_over_the_size_limit_or_not_a_regular_file_is_refused() {
        let dir = temp_dir("limits");
        let big = dir.join("big.ssm");
        File::create(&big)
            .unwrap()
            .set_len(InputKind::SavedState.limit() + 1)
            .unwrap();
        let err = read(&big).unwrap_err();
        assert!(matches!(err, SnapshotError::TooLarge { .. }), "{err}");
        let err = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
    }
}
