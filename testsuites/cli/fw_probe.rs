//! The `fw-probe` guest on ringside and on `qemu-system-i386 -cpu
//! coreduo`: the firmware interfaces (fw_cfg, the ACPI tables, the PM
//! timer, the HPET) and the CPU identity (CPUID, the Core Duo's MSRs)
//! an OS finds must be QEMU's wherever ringside models QEMU's PC, and
//! ringside's own values are pinned where they are fixed by design. The
//! guest prints one `probe: KEY = VALUE` line per finding
//! (testsuites/guests/src-guests/fw-probe.c); the tests compare them key
//! by key.

mod common;

use common::{ringside_with_input, text};
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The command line both machines pass: a space in it shows the whole
/// string arrives, not its first word.
const CMDLINE: &str = "probe-cmdline-x y";
/// `--mem 64` on ringside, `-m 64` on QEMU.
const MEM_MIB: &str = "64";

/// The keys whose values ringside and QEMU must print alike.
const AGREEING_KEYS: &[&str] = &[
    // The signature item reads "QEMU" wherever fw_cfg exists.
    "fw_cfg.present",
    // Both have the I/O-port interface (ID bit 0).
    "fw_cfg.id.traditional",
    // One CPU on both: neither is given more.
    "fw_cfg.nb_cpus",
    // RAM_SIZE is the -m / --mem size, 64 MiB on both.
    "fw_cfg.ram_size",
    // The BIOS (SeaBIOS on QEMU) reads the memory map from etc/e820.
    "fw_cfg.e820_listed",
    // The RSDP lies in 0xE0000-0xFFFFF on both (where varies, informative).
    "acpi.rsdp_found",
    // The RSDT lists the FADT, MADT and HPET table on both.
    "acpi.rsdt.has_FACP",
    "acpi.rsdt.has_APIC",
    "acpi.rsdt.has_HPET",
    // Every table sums to 0 on both (ACPI 5.2.6).
    "acpi.checksum.RSDP",
    "acpi.checksum.RSDT",
    "acpi.checksum.FACP",
    "acpi.checksum.APIC",
    "acpi.checksum.HPET",
    "acpi.checksum.DSDT",
    "acpi.checksums_valid",
    // QEMU's PIIX4 PM block sits at 0x600; ringside's too, timer at +8.
    "acpi.fadt.pm_tmr_blk",
    // A 3.58 MHz timer advances across a million-iteration loop on both.
    "acpi.pm_timer.advances",
    // The FADT points to a DSDT on both.
    "acpi.dsdt.present",
    // The local APIC's architectural address.
    "acpi.madt.lapic_address",
    // Both have the 8259A pair (PCAT_COMPAT).
    "acpi.madt.pcat_compat",
    // One processor local APIC entry: one CPU.
    "acpi.madt.processors",
    // One IOAPIC at its architectural address, serving GSIs from 0.
    "acpi.madt.ioapics",
    "acpi.madt.ioapic_address",
    "acpi.madt.ioapic_gsi_base",
    // The 8254 is wired to IOAPIC pin 2 on both, as on every PC with one.
    "acpi.madt.iso_irq0_to_gsi2",
    // ringside's HPET is modelled on QEMU's: same base and capabilities.
    "hpet.base",
    "hpet.vendor",
    "hpet.timers",
    "hpet.counter_64bit",
    "hpet.legacy_replacement",
    "hpet.period_fs",
    "hpet.counter_advances",
    // Both are `-cpu coreduo`: the same identity leaves.
    "cpuid.vendor",
    "cpuid.max_basic_leaf",
    "cpuid.signature",
    "cpuid.family",
    "cpuid.model",
    "cpuid.stepping",
    "cpuid.brand",
    "cpuid.max_extended_leaf",
    // VCNT 8, fixed ranges, WC: the Core Duo's MTRRCAP (and QEMU's).
    "msr.mtrrcap",
    // No BIOS touches IA32_PAT: its reset value on both.
    "msr.pat",
    // Writable MTRR and PAT MSRs read back what was written on both.
    "msr.mtrr_physbase0.write_read_back",
    "msr.mtrr_physmask0.write_read_back",
    "msr.pat.write_read_back",
    // EFER exists exactly when CPUID.80000001H advertises NX or LM, on both
    // (QEMU's coreduo advertises NX, ringside's does not).
    "msr.efer_matches_cpuid",
    // The Core Duo has IA32_MISC_ENABLE with fast strings on at reset.
    "msr.misc_enable.readable",
    "msr.misc_enable.fast_strings",
];

/// Keys the guest prints on both machines whose values differ, and why.
/// They, and every key in neither list (the informative ones: table
/// revisions, the SCI, the e820 entries, ...), are printed side by side,
/// not compared.
const DIFFERING_KEYS: &[(&str, &str)] = &[
    ("fw_cfg.id", "the whole ID: QEMU sets bit 1 as well"),
    (
        "fw_cfg.id.dma",
        "QEMU's fw_cfg has the DMA interface, ringside's only the I/O ports",
    ),
    (
        "fw_cfg.cmdline",
        "QEMU's Multiboot loader puts -append only into the Multiboot information; its CMDLINE_SIZE is 0",
    ),
    (
        "fw_cfg.cmdline_size",
        "as fw_cfg.cmdline",
    ),
    (
        "multiboot.cmdline",
        "QEMU prefixes the kernel's file name (checked separately: it ends with the command line)",
    ),
    (
        "fw_cfg.file_count",
        "QEMU lists its option ROMs, SMBIOS and ACPI loader files",
    ),
    ("fw_cfg.files", "as fw_cfg.file_count"),
    (
        "fw_cfg.e820_entries",
        "each machine's own memory map (QEMU 7.2 lists RAM alone)",
    ),
    (
        "acpi.rsdp_address",
        "SeaBIOS allocates the RSDP in its own F segment",
    ),
    (
        "acpi.rsdt_address",
        "SeaBIOS places the tables at the top of RAM",
    ),
    (
        "acpi.rsdt.tables",
        "QEMU also has a WAET table (and the order is each builder's)",
    ),
    ("acpi.checksum.WAET", "only QEMU has a WAET table"),
    (
        "acpi.madt.overrides",
        "QEMU also overrides the PCI interrupts 5, 9, 10 and 11 to level-triggered",
    ),
    (
        "acpi.madt.ioapic_id",
        "each machine numbers its IOAPIC (QEMU 0)",
    ),
    ("acpi.dsdt.length", "each machine's own AML"),
    ("acpi.pm_timer.first", "a time"),
    ("cpuid.1.ecx", "QEMU sets the hypervisor bit and SSE3, ringside neither"),
    (
        "cpuid.1.edx",
        "QEMU's coreduo has FPU, PAE, MMX and SSE, ringside's implements none of them",
    ),
    ("cpuid.hypervisor_bit", "QEMU's TCG announces itself"),
    ("cpuid.80000001.edx", "QEMU's coreduo advertises NX"),
    ("msr.efer", "NX on QEMU makes IA32_EFER exist there"),
    ("msr.efer.advertised", "as msr.efer"),
    (
        "cpuid.pmu_version",
        "QEMU's TCG has no performance counters: leaf 0xA is 0",
    ),
    ("cpuid.pmu_gp_counters", "as cpuid.pmu_version"),
    ("cpuid.pmu_counter_width", "as cpuid.pmu_version"),
    (
        "msr.pmc0_count",
        "TCG ignores IA32_PERFEVTSEL0 and reads IA32_PMC0 as 0",
    ),
    ("msr.pmc0_advances", "as msr.pmc0_count"),
    ("msr.pmc0_counts_the_loop", "as msr.pmc0_count"),
    (
        "msr.misc_enable",
        "QEMU also sets bit 18 (ENABLE MONITOR FSM) for its MONITOR/MWAIT",
    ),
    (
        "msr.mtrr_def_type",
        "SeaBIOS enables the MTRRs (0xc06); no BIOS runs before a ringside Multiboot guest",
    ),
    ("msr.mtrr_physbase0", "as msr.mtrr_def_type"),
    ("msr.mtrr_physmask0", "as msr.mtrr_def_type"),
    (
        "msr.amd_k7_perfevtsel0",
        "TCG reads an MSR it does not know as 0 instead of raising #GP",
    ),
];

/// What ringside prints by design, whatever QEMU does.
const RINGSIDE_BY_DESIGN: &[(&str, &str)] = &[
    ("fw_cfg.present", "yes"),
    ("fw_cfg.id.traditional", "yes"),
    ("fw_cfg.id.dma", "no"),
    ("fw_cfg.nb_cpus", "1"),
    ("fw_cfg.ram_size", "0x4000000"),
    ("fw_cfg.cmdline", CMDLINE),
    ("fw_cfg.e820_listed", "yes"),
    ("multiboot.cmdline", CMDLINE),
    ("acpi.rsdp_found", "yes"),
    ("acpi.rsdt.has_FACP", "yes"),
    ("acpi.rsdt.has_APIC", "yes"),
    ("acpi.rsdt.has_HPET", "yes"),
    ("acpi.checksums_valid", "yes"),
    ("acpi.fadt.pm_tmr_blk", "0x608"),
    ("acpi.pm_timer.advances", "yes"),
    ("acpi.dsdt.present", "yes"),
    ("acpi.madt.lapic_address", "0xfee00000"),
    ("acpi.madt.processors", "1"),
    ("acpi.madt.ioapic_address", "0xfec00000"),
    ("acpi.madt.iso_irq0_to_gsi2", "yes"),
    ("hpet.base", "0xfed00000"),
    ("hpet.vendor", "0x8086"),
    ("hpet.timers", "3"),
    ("hpet.counter_64bit", "yes"),
    ("hpet.legacy_replacement", "yes"),
    ("hpet.period_fs", "10000000"),
    ("hpet.counter_advances", "yes"),
    ("cpuid.vendor", "GenuineIntel"),
    ("cpuid.max_basic_leaf", "0xa"),
    ("cpuid.signature", "0x6e8"),
    ("cpuid.family", "6"),
    ("cpuid.model", "14"),
    ("cpuid.stepping", "8"),
    (
        "cpuid.brand",
        "Genuine Intel(R) CPU           T2600  @ 2.16GHz",
    ),
    ("cpuid.max_extended_leaf", "0x80000008"),
    ("cpuid.pmu_gp_counters", "2"),
    ("msr.mtrrcap", "0x508"),
    ("msr.pat", "0x7040600070406"),
    ("msr.mtrr_physbase0.write_read_back", "same"),
    ("msr.mtrr_physmask0.write_read_back", "same"),
    ("msr.pat.write_read_back", "same"),
    ("msr.misc_enable.readable", "yes"),
    ("msr.misc_enable.fast_strings", "yes"),
    ("msr.pmc0_advances", "yes"),
    ("msr.pmc0_counts_the_loop", "yes"),
    ("msr.efer", "#GP"),
    ("msr.efer.advertised", "no"),
    ("msr.efer_matches_cpuid", "yes"),
    ("msr.amd_k7_perfevtsel0", "#GP"),
];

/// CPUID feature bits ringside must not advertise: it implements none
/// of them (leaf, register, bit, name).
const FEATURES_ABSENT: &[(&str, u32, &str)] = &[
    ("cpuid.1.edx", 0, "FPU"),
    ("cpuid.1.edx", 6, "PAE"),
    ("cpuid.1.edx", 23, "MMX"),
    ("cpuid.1.edx", 25, "SSE"),
    ("cpuid.1.edx", 26, "SSE2"),
    ("cpuid.1.ecx", 0, "SSE3"),
    ("cpuid.80000001.edx", 20, "NX"),
    ("cpuid.80000001.edx", 29, "LM"),
];

/// On `--engine kvm` the fw_cfg, ACPI and HPET lines come from ringside's
/// own devices and tables, so they must be the interpreter's; these are
/// the prefixes of those keys. CPUID and MSRs are partly answered by the
/// host's KVM module there, so they are printed, not compared.
const DEVICE_KEY_PREFIXES: &[&str] = &["fw_cfg.", "acpi.", "hpet.", "multiboot."];
/// Device keys whose values are times, not properties.
const TIME_KEYS: &[&str] = &["acpi.pm_timer.first"];

type Findings = BTreeMap<String, String>;

/// The `probe: KEY = VALUE` lines of the guest's output, by key. A key
/// printed twice is a guest bug.
fn parse_findings(output: &str) -> Findings {
    let mut findings = Findings::new();
    for line in output.lines() {
        let Some(finding) = line.trim_end_matches('\r').strip_prefix("probe: ") else {
            continue;
        };
        let (key, value) = finding
            .split_once(" = ")
            .or_else(|| finding.strip_suffix(" =").map(|key| (key, "")))
            .unwrap_or_else(|| panic!("a finding without ` = `: {line:?}"));
        let previous = findings.insert(key.to_string(), value.to_string());
        assert!(previous.is_none(), "{key} printed twice in:\n{output}");
    }
    findings
}

/// Runs the guest on ringside. The clock is paced against the wall
/// clock (the default), so the PM timer and the HPET advance across the
/// guest's delay loops on KVM too, where no instructions are counted.
fn ringside_findings(engine: &str) -> (Findings, String) {
    let args = [
        "run",
        "builtin:fw-probe",
        "--engine",
        engine,
        "--mem",
        MEM_MIB,
        "--cmdline",
        CMDLINE,
    ];
    let out = ringside_with_input(&args, b"");
    let stdout = text(&out.stdout);
    let what = format!("{args:?}:\n{stdout}{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{what}");
    assert!(stdout.contains("fw-probe: done"), "{what}");
    (parse_findings(&stdout), what)
}

/// Runs the guest under QEMU's TCG as a Core Duo; `None` (with the
/// reason printed) when QEMU is not installed.
fn qemu_findings(test: &str) -> Option<(Findings, String)> {
    let qemu = "qemu-system-i386";
    if Command::new(qemu).arg("--version").output().is_err() {
        ringside_testsuites::skip_unless_ci(
            test,
            &format!("{qemu} is not installed (Debian package qemu-system-x86)"),
        );
        return None;
    }
    let guest = ringside_guests::find("fw-probe").expect("fw-probe is built in");
    let kernel = std::env::temp_dir().join(format!("ringside-fw-probe-{}.elf", std::process::id()));
    std::fs::write(&kernel, guest.image).expect("write the kernel to the temp dir");
    let mut child = Command::new(qemu)
        .args(["-kernel", kernel.to_str().expect("a UTF-8 path")])
        .args(["-cpu", "coreduo", "-m", MEM_MIB, "-append", CMDLINE])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("qemu can be waited for").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out: Output = child.wait_with_output().expect("qemu ends");
    let _ = std::fs::remove_file(&kernel);
    let stdout = text(&out.stdout);
    let what = format!("qemu -cpu coreduo:\n{stdout}{}", text(&out.stderr));
    // isa-debug-exit turns the guest's status 0 into QEMU's exit status 1.
    assert_eq!(out.status.code(), Some(1), "{what}");
    assert!(stdout.contains("fw-probe: done"), "{what}");
    Some((parse_findings(&stdout), what))
}

fn value<'a>(findings: &'a Findings, key: &str, what: &str) -> &'a str {
    findings
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {what}"))
}

fn hex(value: &str) -> u32 {
    u32::from_str_radix(value.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{value:?} is not hex: {e}"))
}

/// Prints the keys not compared, side by side, so a change shows in the
/// test's output.
fn print_informative(left: (&str, &Findings), right: (&str, &Findings), compared: &[&str]) {
    let keys: std::collections::BTreeSet<&String> = left.1.keys().chain(right.1.keys()).collect();
    for key in keys.into_iter().filter(|k| !compared.contains(&k.as_str())) {
        let l = left.1.get(key).map_or("(absent)", String::as_str);
        let r = right.1.get(key).map_or("(absent)", String::as_str);
        let why = DIFFERING_KEYS
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, why)| why);
        println!("  {key}: {} {l:?}, {} {r:?}  {why}", left.0, right.0);
    }
}

#[test]
fn findings_parse_from_the_guests_output() {
    let output = "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n\
                  fw-probe: start\n\
                  probe: fw_cfg.cmdline = \n\
                  probe: cpuid.brand = Genuine Intel(R) CPU           T2600  @ 2.16GHz\r\n\
                  probe: multiboot.cmdline = a = b\n\
                  probe: msr.efer = #GP\n";
    let findings = parse_findings(output);
    assert_eq!(findings.len(), 4);
    assert_eq!(findings["fw_cfg.cmdline"], "");
    assert_eq!(
        findings["cpuid.brand"],
        "Genuine Intel(R) CPU           T2600  @ 2.16GHz"
    );
    assert_eq!(findings["multiboot.cmdline"], "a = b");
    assert_eq!(findings["msr.efer"], "#GP");
}

#[test]
fn the_agreeing_and_differing_keys_are_disjoint() {
    for key in AGREEING_KEYS {
        assert!(
            !DIFFERING_KEYS.iter().any(|(k, _)| k == key),
            "{key} is both compared and listed as differing"
        );
    }
}

/// QEMU's values are the ones ringside is designed to have, for every key
/// the two must agree on: the design targets are QEMU's `-cpu coreduo`
/// PC. This half runs without ringside's side.
#[test]
fn qemu_coreduo_prints_every_agreeing_key_with_ringsides_design_value() {
    let test = "qemu_coreduo_prints_every_agreeing_key_with_ringsides_design_value";
    let Some((qemu, what)) = qemu_findings(test) else {
        return;
    };
    for key in AGREEING_KEYS {
        let found = value(&qemu, key, &what);
        if let Some((_, designed)) = RINGSIDE_BY_DESIGN.iter().find(|(k, _)| k == key) {
            assert_eq!(found, *designed, "{key} on QEMU\n{what}");
        }
    }
    for (key, _) in DIFFERING_KEYS {
        value(&qemu, key, &what);
    }
    // QEMU's Multiboot loader passes "KERNEL-PATH CMDLINE".
    let multiboot = value(&qemu, "multiboot.cmdline", &what);
    assert!(
        multiboot.ends_with(&format!(" {CMDLINE}")),
        "{multiboot:?}\n{what}"
    );
}

#[test]
fn ringside_prints_its_designed_firmware_and_cpu_identity() {
    let (ringside, what) = ringside_findings("interp");
    for (key, designed) in RINGSIDE_BY_DESIGN {
        assert_eq!(value(&ringside, key, &what), *designed, "{key}\n{what}");
    }
    for (key, bit, name) in FEATURES_ABSENT {
        let bits = hex(value(&ringside, key, &what));
        assert_eq!(bits & (1 << bit), 0, "{key} advertises {name}\n{what}");
    }
}

#[test]
fn ringside_and_qemu_coreduo_agree_on_firmware_and_cpu_identity() {
    let test = "ringside_and_qemu_coreduo_agree_on_firmware_and_cpu_identity";
    let Some((qemu, qemu_what)) = qemu_findings(test) else {
        return;
    };
    let (ringside, what) = ringside_findings("interp");
    for key in AGREEING_KEYS {
        assert_eq!(
            value(&ringside, key, &what),
            value(&qemu, key, &qemu_what),
            "{key}: ringside vs QEMU\n{what}\n{qemu_what}"
        );
    }
    assert_eq!(value(&ringside, "multiboot.cmdline", &what), CMDLINE);
    println!("{test}: not compared:");
    print_informative(("ringside", &ringside), ("qemu", &qemu), AGREEING_KEYS);
}

#[test]
fn kvm_engine_sees_the_interpreters_fw_cfg_acpi_and_hpet() {
    let test = "kvm_engine_sees_the_interpreters_fw_cfg_acpi_and_hpet";
    let report = text(&ringside_with_input(&["engines"], b"").stdout);
    if !report.contains("unpaged protected mode: yes") {
        println!("{test}: skipped: this host's KVM cannot run unpaged protected mode:\n{report}");
        return;
    }
    let (interp, interp_what) = ringside_findings("interp");
    let (kvm, kvm_what) = ringside_findings("kvm");
    let device_keys = |findings: &Findings| -> Vec<String> {
        findings
            .keys()
            .filter(|k| DEVICE_KEY_PREFIXES.iter().any(|p| k.starts_with(p)))
            .filter(|k| !TIME_KEYS.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let keys = device_keys(&interp);
    assert!(
        keys.iter().any(|k| k == "hpet.period_fs"),
        "the interpreter found no HPET\n{interp_what}"
    );
    assert_eq!(keys, device_keys(&kvm), "the device keys\n{kvm_what}");
    for key in &keys {
        assert_eq!(
            interp[key], kvm[key],
            "{key}: interp vs kvm\n{interp_what}\n{kvm_what}"
        );
    }
    println!("{test}: CPUID and MSRs, answered partly by the host's KVM, not compared:");
    let compared: Vec<&str> = keys.iter().map(String::as_str).collect();
    print_informative(("interp", &interp), ("kvm", &kvm), &compared);
}
