//! The machine configuration (CFGM in VirtualBox's terms): one TOML
//! document describes a machine — memory, engine, clock, boot method,
//! devices and disks. Every command-line flag of the front-end overrides one
//! key of it. Unknown keys and bad values are errors that name the key.
//!
//! `ringside config --print-default` prints [`MachineConfig::default`] as
//! TOML; `--machine FILE` loads one with [`MachineConfig::from_toml`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML did not parse or a key/value did not fit the schema; the
    /// message names the key and the position.
    #[error("machine configuration: {0}")]
    Syntax(String),
    #[error("machine configuration: `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// How the host paces virtual time (DESIGN.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// When the guest halts, sleep until host time catches up with virtual
    /// time, so an idle guest costs no host CPU.
    Paced,
    /// Never sleep (batch runs). The guest computes exactly the same.
    Fast,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSection {
    /// Guest RAM in MiB (1-3072).
    pub memory_mib: u32,
    /// Execution engine by name.
    pub engine: String,
    /// A guest's reset request or a triple fault stops the machine (exit
    /// status 126 or 125) instead of rebooting it (QEMU's `-no-reboot`).
    #[serde(default)]
    pub no_reboot: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    /// Virtual nanoseconds each retired instruction advances the clock.
    pub ns_per_instruction: u64,
    pub mode: ClockMode,
    /// The real-time clock's time at power-on, in seconds since the Unix
    /// epoch. Fixed by default so runs are reproducible.
    pub rtc_start: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// What to boot: `builtin:NAME`, a Multiboot ELF kernel path, or empty
    /// to boot the first disk through the BIOS.
    #[serde(default)]
    pub image: String,
    /// A raw ROM image at the reset vector instead of ringside's BIOS.
    #[serde(default)]
    pub bios: String,
    /// Kernel command line (Multiboot).
    #[serde(default)]
    pub cmdline: String,
    /// A Multiboot module (initial RAM disk).
    #[serde(default)]
    pub initrd: String,
}

/// A serial port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub enabled: bool,
    pub port: u16,
    pub irq: u8,
    /// MCR.OUT2 gates the IRQ line, as on a real PC board. Off by default:
    /// the line follows the UART's interrupt output whatever OUT2 says, as
    /// in QEMU, which software written for QEMU relies on.
    #[serde(default)]
    pub out2_gates_irq: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    pub com1: SerialConfig,
    pub com2: SerialConfig,
    /// 8259A pair.
    pub pic: bool,
    /// 8254 and port 0x61.
    pub pit: bool,
    /// MC146818 RTC/CMOS.
    pub rtc: bool,
    /// 8042 keyboard controller and port 0x92.
    pub keyboard: bool,
    /// Local APIC and IOAPIC.
    pub apic: bool,
    /// ATA/IDE primary channel.
    pub ide: bool,
    /// CGA/VGA text mode.
    pub vga: bool,
    /// Debug-exit port 0xF4.
    pub debug_exit: bool,
    /// POST-code ports 0x80 and 0x190.
    pub post_codes: bool,
    /// Debug console port 0xE9.
    pub debug_console: bool,
    /// QEMU's fw_cfg interface at ports 0x510-0x511.
    #[serde(default = "yes")]
    pub fw_cfg: bool,
    /// ACPI: the tables (RSDP, RSDT, FADT, MADT, HPET) the BIOS and the
    /// Multiboot loader publish, and the PM registers at 0x600.
    #[serde(default = "yes")]
    pub acpi: bool,
    /// HPET at 0xFED00000. A file without the key gets one.
    #[serde(default = "yes")]
    pub hpet: bool,
}

/// The default of device keys older configuration files lack.
fn yes() -> bool {
    true
}

/// How a disk image is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// Writes reach the image file.
    Rw,
    /// Writes fail.
    Ro,
    /// Copy-on-write: writes are kept in memory and never reach the file.
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: String,
    pub mode: DiskMode,
}

/// The recompiler (`--engine jit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitSection {
    /// Runs of a block before it is compiled (1: compile at the first run).
    pub threshold: u32,
    /// The most guest blocks one compiled region may hold (1-32).
    #[serde(default = "default_region_blocks")]
    pub region_blocks: u32,
    /// Compile on a background thread while the guest runs on (at
    /// thresholds above 1); the guest's results and instruction count are
    /// the same either way.
    #[serde(default = "default_background")]
    pub background: bool,
    /// Run Cranelift's optimizer (`opt_level=speed`) on every region;
    /// false compiles about a third faster, and the code runs slower
    /// (docs/jit.md, "Compile time").
    #[serde(default = "default_optimize")]
    pub optimize: bool,
}

fn default_region_blocks() -> u32 {
    16
}

fn default_background() -> bool {
    true
}

fn default_optimize() -> bool {
    true
}

impl Default for JitSection {
    fn default() -> Self {
        JitSection {
            threshold: 10000,
            region_blocks: default_region_blocks(),
            background: default_background(),
            optimize: default_optimize(),
        }
    }
}

/// Raw mode (`--engine raw`, docs/raw.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSection {
    /// PATM: patch the sensitive instructions CSAM finds with jumps into
    /// patch code; false leaves every one of them to trap into the
    /// monitor (to show what patching saves).
    #[serde(default = "default_patm")]
    pub patm: bool,
}

fn default_patm() -> bool {
    true
}

impl Default for RawSection {
    fn default() -> Self {
        RawSection {
            patm: default_patm(),
        }
    }
}

/// Who the CPU says it is (CPUID): by default the Intel Core Duo T2600
/// (`cpu::cpuid`). The feature bits are always what ringside implements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSection {
    /// The 12-character vendor string of CPUID leaf 0.
    pub vendor: String,
    /// Family as software computes it (1-15, or 15 + extended family).
    pub family: u16,
    /// Model as software computes it (0-255; above 15 only for families 6
    /// and 15, which have the extended model field).
    pub model: u8,
    pub stepping: u8,
    /// The brand string of CPUID leaves 0x80000002-4 (at most 47 characters).
    pub brand: String,
}

impl Default for CpuSection {
    fn default() -> Self {
        let id = crate::cpu::cpuid::CpuIdentity::default();
        CpuSection {
            vendor: String::from_utf8_lossy(&id.vendor).into_owned(),
            family: id.family,
            model: id.model,
            stepping: id.stepping,
            brand: id.brand,
        }
    }
}

impl CpuSection {
    /// The identity this section describes, checked.
    pub fn identity(&self) -> Result<crate::cpu::cpuid::CpuIdentity, ConfigError> {
        let vendor: [u8; 12] = self.vendor.as_bytes().try_into().map_err(|_| {
            invalid(
                "cpu.vendor",
                format!("{:?} is not 12 characters long", self.vendor),
            )
        })?;
        let id = crate::cpu::cpuid::CpuIdentity {
            vendor,
            family: self.family,
            model: self.model,
            stepping: self.stepping,
            brand: self.brand.clone(),
        };
        id.validate().map_err(|problem| invalid("cpu", problem))?;
        Ok(id)
    }
}

/// One machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub machine: MachineSection,
    #[serde(default)]
    pub cpu: CpuSection,
    pub clock: ClockSection,
    #[serde(default)]
    pub jit: JitSection,
    #[serde(default)]
    pub raw: RawSection,
    #[serde(default)]
    pub boot: BootSection,
    pub devices: DevicesSection,
    /// IDE disks: the first is the primary master, the second the slave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            machine: MachineSection {
                memory_mib: 32,
                engine: "interp".into(),
                no_reboot: false,
            },
            cpu: CpuSection::default(),
            clock: ClockSection {
                ns_per_instruction: 1,
                mode: ClockMode::Paced,
                // 2026-01-01T00:00:00Z.
                rtc_start: 1_767_225_600,
            },
            jit: JitSection::default(),
            raw: RawSection::default(),
            boot: BootSection::default(),
            devices: DevicesSection {
                com1: SerialConfig {
                    enabled: true,
                    port: 0x3F8,
                    irq: 4,
                    out2_gates_irq: false,
                },
                com2: SerialConfig {
                    enabled: true,
                    port: 0x2F8,
                    irq: 3,
                    out2_gates_irq: false,
                },
                pic: true,
                pit: true,
                rtc: true,
                keyboard: true,
                apic: true,
                ide: true,
                vga: true,
                debug_exit: true,
                post_codes: true,
                debug_console: true,
                fw_cfg: true,
                acpi: true,
                hpet: true,
            },
            disks: Vec::new(),
        }
    }
}

impl MachineConfig {
    /// Parse and validate a TOML machine description.
    pub fn from_toml(text: &str) -> Result<MachineConfig, ConfigError> {
        let c: MachineConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// `--set KEY=VALUE`: set one key, named by its dotted path
    /// (`jit.threshold`, `devices.com1.irq`, `cpu.vendor`), to a value
    /// written as in TOML (`1`, `true`, `0x3F8`, `"text"`); a bare word
    /// that is not a TOML value is taken as a string. The result is
    /// checked like a configuration file; an unknown key or a value of the
    /// wrong type is an error naming the key, and leaves `self` unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |problem: String| ConfigError::Syntax(format!("--set {key}: {problem}"));
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "not a key (use a dotted path such as jit.threshold)".into()
            ));
        }
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
            Err(_) => toml::Value::String(value.into()),
        };
        let mut root =
            toml::Value::try_from(&*self).map_err(|e| bad(format!("cannot serialise: {e}")))?;
        let (last, parents) = path.split_last().expect("at least one part");
        let mut table = &mut root;
        for (i, part) in parents.iter().enumerate() {
            table = table
                .as_table_mut()
                .and_then(|t| t.get_mut(*part))
                .filter(|v| v.is_table())
                .ok_or_else(|| bad(format!("no section `{}`", path[..=i].join("."))))?;
        }
        let t = table
            .as_table_mut()
            .ok_or_else(|| bad("not a section".into()))?;
        t.insert((*last).to_owned(), value);
        let c: MachineConfig = root
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string().trim().to_owned()))?;
        c.validate()?;
        *self = c;
        Ok(())
    }

    /// Check values the schema cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mem = self.machine.memory_mib;
        if !(1..=3072).contains(&mem) {
            return Err(invalid(
                "machine.memory_mib",
                format!("{mem} is not in 1..=3072"),
            ));
        }
        if self.clock.ns_per_instruction == 0 || self.clock.ns_per_instruction > 1_000_000 {
            return Err(invalid(
                "clock.ns_per_instruction",
                "must be in 1..=1000000",
            ));
        }
        self.cpu.identity()?;
        if self.jit.threshold == 0 {
            return Err(invalid("jit.threshold", "must be at least 1"));
        }
        if !(1..=32).contains(&self.jit.region_blocks) {
            return Err(invalid("jit.region_blocks", "must be in 1..=32"));
        }
        for (key, s) in [
            ("devices.com1", &self.devices.com1),
            ("devices.com2", &self.devices.com2),
        ] {
            if s.enabled && s.irq >= 16 {
                return Err(invalid(
                    key,
                    format!("irq {} is not an ISA IRQ (0-15)", s.irq),
                ));
            }
        }
        if self.devices.com1.enabled
            && self.devices.com2.enabled
            && self.devices.com1.port.abs_diff(self.devices.com2.port) < 8
        {
            return Err(invalid("devices.com2.port", "overlaps devices.com1.port"));
        }
        if self.disks.len() > 2 {
            return Err(invalid(
                "disks",
                "the IDE channel holds two disks (master and slave)",
            ));
        }
        if !self.disks.is_empty() && !self.devices.ide {
            return Err(invalid(
                "devices.ide",
                "disks are configured but the IDE channel is off",
            ));
        }
        if !self.boot.image.is_empty() && !self.boot.bios.is_empty() {
            return Err(invalid("boot.bios", "give either boot.image or boot.bios"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let d = MachineConfig::default();
        assert_eq!(MachineConfig::from_toml(&d.to_toml()).unwrap(), d);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = MachineConfig::default()
            .to_toml()
            .replace("memory_mib", "memory_mb");
        let err = MachineConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("memory_mb"), "{err}");
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        let mut c = MachineConfig::default();
        c.machine.memory_mib = 0;
        let err = MachineConfig::from_toml(&c.to_toml()).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "machine.memory_mib",
                ..
            }
        ));
        let text = MachineConfig::default()
            .to_toml()
            .replace("mode = \"paced\"", "mode = \"sometimes\"");
        let err = MachineConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("sometimes") || err.contains("mode"), "{err}");
    }

    #[test]
    fn hex_ports_and_disks_parse() {
        let mut text = MachineConfig::default().to_toml();
        text.push_str("\n[[disks]]\npath = \"a.img\"\nmode = \"snapshot\"\n");
        let c = MachineConfig::from_toml(&text.replace("port = 1016", "port = 0x3F8")).unwrap();
        assert_eq!(c.devices.com1.port, 0x3F8);
        assert_eq!(c.disks[0].mode, DiskMode::Snapshot);
    }

    #[test]
    fn out2_gating_is_off_unless_asked_for() {
        let text = MachineConfig::default().to_toml();
        assert!(text.contains("out2_gates_irq = false"), "{text}");
        let without = text.replace("out2_gates_irq = false\n", "");
        let c = MachineConfig::from_toml(&without).unwrap();
        assert!(
            !c.devices.com1.out2_gates_irq,
            "absent means QEMU's behaviour"
        );
        let gated = MachineConfig::from_toml(&text.replacen(
            "out2_gates_irq = false",
            "out2_gates_irq = true",
            1,
        ))
        .unwrap();
        assert!(gated.devices.com1.out2_gates_irq);
        assert!(!gated.devices.com2.out2_gates_irq);
    }

    #[test]
    fn the_cpu_identity_is_configurable_and_checked() {
        let text = MachineConfig::default().to_toml();
        assert!(text.contains("vendor = \"GenuineIntel\""), "{text}");
        let c = MachineConfig::from_toml(&text.replace("model = 14", "model = 13")).unwrap();
        assert_eq!(c.cpu.identity().unwrap().signature(), 0x6D8);
        let err = MachineConfig::from_toml(&text.replace("GenuineIntel", "Intel"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu.vendor"), "{err}");
        let err = MachineConfig::from_toml(&text.replace("stepping = 8", "stepping = 99"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stepping 99"), "{err}");
        let without = text.replace("[cpu]", "[old_cpu]");
        assert!(
            MachineConfig::from_toml(&without).is_err(),
            "unknown section"
        );
    }

    #[test]
    fn set_changes_one_key_by_its_dotted_path() {
        let mut c = MachineConfig::default();
        c.set("jit.threshold", "1").unwrap();
        c.set("devices.com1.port", "0x2E8").unwrap();
        c.set("cpu.vendor", "\"AuthenticAMD\"").unwrap();
        c.set("machine.engine", "jit").unwrap();
        c.set("devices.hpet", "false").unwrap();
        assert_eq!(c.jit.threshold, 1);
        assert_eq!(c.devices.com1.port, 0x2E8);
        assert_eq!(c.cpu.vendor, "AuthenticAMD");
        assert_eq!(c.machine.engine, "jit", "a bare word is a string");
        assert!(!c.devices.hpet);
    }

    #[test]
    fn set_refuses_unknown_keys_wrong_types_and_bad_values_and_changes_nothing() {
        let mut c = MachineConfig::default();
        let before = c.clone();
        for (key, value, names) in [
            ("jit.treshold", "1", "treshold"),
            ("nosuch.key", "1", "nosuch"),
            ("jit.threshold", "many", "threshold"),
            ("jit.threshold", "0", "jit.threshold"),
            ("machine", "1", "machine"),
            ("", "1", "--set"),
        ] {
            let err = c.set(key, value).unwrap_err().to_string();
            assert!(err.contains(names), "{key}={value}: {err}");
        }
        assert_eq!(c, before);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "[machine",
            "machine = 3",
            "[[disks]]\npath = 1",
            "\u{0}\u{1}",
        ] {
            assert!(MachineConfig::from_toml(text).is_err());
        }
    }
}
