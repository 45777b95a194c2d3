//! A guest's reset reboots the PC (`core::reset`): the `reboot` guest
//! resets by the 8042, by port 0x92 and by a triple fault, and counts its
//! boots in CMOS and in RAM, which a reset keeps. It runs as a Multiboot
//! kernel (the loader loads it again at each reset) and as `reboot-disk`
//! behind a boot sector (the BIOS boots it again), on every engine; the
//! lockstep comparator follows both machines through each reboot; a state
//! saved after a reboot restores; `no_reboot` stops as before; and what a
//! reset resets and keeps is pinned device by device.
//!
//! KVM runs only where /dev/kvm opens and the host probe says this host's
//! KVM runs the guest's mode; otherwise the KVM tests print what they
//! skipped and why.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use ringside_core::config::{DiskConfig, DiskMode, MachineConfig};
use ringside_core::cpu::CpuState;
use ringside_core::{boot, snapshot, Engine, Machine, RunOutcome, StopReason};
use ringside_debugger::lockstep::{self, format_divergence, Outcome, Side};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_jit::Jit;
use ringside_kvm::Kvm;

/// Far more than the guest needs (about 140,000 instructions through the
/// BIOS, 21,000 as a Multiboot kernel).
const MAX_INSNS: u64 = 10_000_000;
/// The guest's line on its fourth and last boot.
const LAST_BOOT: &str = "reboot: boot 4 (CMOS counted 3, RAM counted 3)";

#[derive(Clone, Copy, Debug)]
enum Boot {
    /// `reboot` loaded by the Multiboot loader.
    Multiboot,
    /// `reboot-disk` booted by ringside's BIOS.
    Bios,
}

/// A copy of a built-in disk image, removed with the machine that uses it.
struct TempDisk(PathBuf);

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Pc {
    machine: Machine,
    com1: SharedBuffer,
    _disk: Option<TempDisk>,
}

impl Pc {
    fn output(&self) -> String {
        String::from_utf8_lossy(&self.com1.contents()).into_owned()
    }
}

fn pc(boot: Boot, cmdline: &str, no_reboot: bool) -> Pc {
    static DISKS: AtomicU32 = AtomicU32::new(0);
    let mut config = MachineConfig::default();
    config.machine.no_reboot = no_reboot;
    let mut disk = None;
    if let Boot::Bios = boot {
        let image = ringside_guests::find_disk("reboot-disk").expect("reboot-disk is built in");
        let path = std::env::temp_dir().join(format!(
            "ringside-reboot-{}-{}.img",
            std::process::id(),
            DISKS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, image.image).expect("write the disk image to the temp dir");
        config.disks.push(DiskConfig {
            path: path.to_string_lossy().into_owned(),
            mode: DiskMode::Snapshot,
        });
        disk = Some(TempDisk(path));
    }
    let com1 = SharedBuffer::default();
    let mut machine =
        build_pc(&config, HostIo::com1_only(com1.clone())).expect("the default PC builds");
    match boot {
        Boot::Multiboot => {
            let guest = ringside_guests::find("reboot").expect("reboot is built in");
            boot::load_multiboot(&mut machine, guest.image, cmdline).expect("reboot loads");
        }
        Boot::Bios => {
            boot::load_rom(&mut machine, ringside_firmware::BIOS).expect("the BIOS loads")
        }
    }
    Pc {
        machine,
        com1,
        _disk: disk,
    }
}

/// Run to the end; the outcome.
fn run(pc: &mut Pc, engine: &mut dyn Engine) -> RunOutcome {
    pc.machine
        .run_until_stopped(engine, Some(MAX_INSNS))
        .unwrap_or_else(|e| panic!("{}: {e}", engine.name()))
}

/// The guest booted four times, each boot counted in CMOS and RAM, and
/// exited 0 after three reboots.
fn assert_booted_four_times(pc: &Pc, outcome: RunOutcome, what: &str) {
    let out = pc.output();
    assert_eq!(
        outcome,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "{what}:\n{out}"
    );
    assert_eq!(pc.machine.reboots, 3, "{what}:\n{out}");
    for line in [
        "reboot: resetting through the 8042 (command 0xfe)",
        "reboot: resetting through port 0x92 bit 0",
        "reboot: resetting by a triple fault",
        LAST_BOOT,
    ] {
        assert!(out.contains(line), "{what}: no '{line}' in:\n{out}");
    }
}

#[test]
fn reboot_guest_boots_four_times_through_each_reset_on_interp_and_jit() {
    for boot in [Boot::Multiboot, Boot::Bios] {
        let mut counts = Vec::new();
        for jit in [false, true] {
            let mut pc = pc(boot, "", false);
            let outcome = if jit {
                run(&mut pc, &mut Jit::with_threshold(1))
            } else {
                run(&mut pc, &mut Interp::new())
            };
            let what = format!("{boot:?} on {}", if jit { "jit" } else { "interp" });
            assert_booted_four_times(&pc, outcome, &what);
            counts.push(pc.machine.clock.icount);
        }
        // The instruction count goes on across reboots, the same on both.
        assert_eq!(counts[0], counts[1], "{boot:?}: interp vs jit");
    }
}

#[test]
fn reboot_guest_boots_four_times_on_kvm_where_the_host_allows() {
    if let Err(e) = Kvm::new() {
        println!("reboot on kvm skipped: {e}");
        return;
    }
    let probe = ringside_kvm::probe();
    for (boot, mode, result) in [
        (
            Boot::Multiboot,
            "unpaged protected mode",
            &probe.protected_mode,
        ),
        (Boot::Bios, "real mode", &probe.real_mode),
    ] {
        // The BIOS runs in real mode and starts the guest in unpaged
        // protected mode: it needs both.
        if !result.ok || !probe.protected_mode.ok {
            println!(
                "reboot ({boot:?}) on kvm skipped: this host's KVM cannot run {mode}: {}",
                result.reason
            );
            continue;
        }
        let mut pc = pc(boot, "", false);
        let outcome = run(&mut pc, &mut Kvm::new().expect("it opened above"));
        assert_booted_four_times(&pc, outcome, &format!("{boot:?} on kvm"));
    }
}

#[test]
fn without_reboot_a_reset_request_and_a_triple_fault_stop_the_machine() {
    for (cmdline, want) in [
        ("", StopReason::ResetRequested),
        ("first=2", StopReason::ResetRequested),
        ("first=3", StopReason::TripleFault { cs: 0, eip: 0 }),
    ] {
        for jit in [false, true] {
            let mut pc = pc(Boot::Multiboot, cmdline, true);
            let outcome = if jit {
                run(&mut pc, &mut Jit::with_threshold(1))
            } else {
                run(&mut pc, &mut Interp::new())
            };
            let what = format!("first={cmdline:?} jit={jit}: {outcome:?}\n{}", pc.output());
            match (outcome, want) {
                (RunOutcome::Stopped(got), StopReason::TripleFault { .. }) => {
                    assert!(matches!(got, StopReason::TripleFault { .. }), "{what}")
                }
                (got, want) => assert_eq!(got, RunOutcome::Stopped(want), "{what}"),
            }
            assert_eq!(pc.machine.reboots, 0, "{what}");
            assert!(
                pc.output().contains("reboot: boot 1 ") && !pc.output().contains("boot 2"),
                "{what}"
            );
        }
    }
}

#[test]
fn a_bare_machine_that_was_never_booted_stops_on_a_reset() {
    // No ROM, no kernel: nothing to boot again, so the reset stops it.
    let mut m = Machine::with_ram_mib(1).expect("1 MiB machine");
    let code = [0xB0, 0xFE, 0xE6, 0x64, 0xF4]; // mov al, 0xfe; out 0x64, al; hlt
    m.write_ram(0x1000, &code).expect("code in RAM");
    m.add_port_device(
        Box::new(ringside_devices::i8042::KeyboardController::new()),
        &[(0x60, 0x60), (0x64, 0x64)],
    );
    m.cpu = CpuState::at_reset();
    m.cpu.seg[1] = ringside_core::cpu::Segment::real_mode(0x0100);
    m.cpu.eip = 0;
    assert!(!m.reboots_on_reset());
    let outcome = m
        .run_until_stopped(&mut Interp::new(), Some(100))
        .expect("interp runs it");
    assert_eq!(outcome, RunOutcome::Stopped(StopReason::ResetRequested));
    assert_eq!(m.reboots, 0);
}

#[test]
fn a_rom_that_resets_forever_stops_at_the_instruction_limit_the_same_on_every_run() {
    // mov al, 0xfe; out 0x64, al; jmp $  at the reset vector: every boot
    // resets at once.
    let mut rom = vec![0xF4u8; 0x10000];
    rom[0xFFF0..0xFFF6].copy_from_slice(&[0xB0, 0xFE, 0xE6, 0x64, 0xEB, 0xFE]);
    let mut seen = Vec::new();
    for jit in [false, true] {
        let mut m = build_pc(&MachineConfig::default(), HostIo::discarded()).expect("PC builds");
        boot::load_rom(&mut m, &rom).expect("the ROM loads");
        let mut engine: Box<dyn Engine> = if jit {
            Box::new(Jit::with_threshold(1))
        } else {
            Box::new(Interp::new())
        };
        let outcome = m
            .run_until_stopped(engine.as_mut(), Some(100_000))
            .expect("the engine runs the ROM");
        assert_eq!(outcome, RunOutcome::InstructionLimit, "jit={jit}");
        // Two instructions per boot.
        assert!(
            (49_999..=50_000).contains(&m.reboots),
            "jit={jit}: {} reboots",
            m.reboots
        );
        seen.push((m.clock.icount, m.reboots));
    }
    assert_eq!(seen[0], seen[1], "interp vs jit: (instructions, reboots)");
}

#[test]
fn a_reset_puts_cpu_and_devices_in_their_reset_state_and_keeps_ram_and_cmos() {
    let mut m = build_pc(&MachineConfig::default(), HostIo::discarded()).expect("PC builds");
    boot::load_rom(&mut m, ringside_firmware::BIOS).expect("the BIOS loads");
    let now = m.clock.now_ns();
    let pic_mask_at_power_on = m.bus.io_read(0x21, 1, now);
    // What a guest leaves behind: registers, protected mode, A20 off, the
    // PIC's mask, a CMOS byte, the RTC's periodic interrupt, a RAM byte,
    // time gone by.
    m.cpu.gpr = [0x1234_5678; 8];
    m.cpu.cr0 |= 1;
    m.cpu.eip = 0x4321;
    m.clock.icount = 1_000_000;
    m.set_a20(false);
    m.bus.io_write(0x21, 1, 0x5A, now);
    m.bus.io_write(0x70, 1, 0x7D, now);
    m.bus.io_write(0x71, 1, 0x42, now);
    m.bus.io_write(0x70, 1, 0x0B, now);
    let reg_b = m.bus.io_read(0x71, 1, now);
    m.bus.io_write(0x71, 1, reg_b | 0x40, now); // PIE
    m.write_ram(0x5000, &[0xAB]).expect("RAM");

    m.reset().expect("the machine resets");

    let mut want = CpuState::at_reset();
    want.msr.tsc_offset = m.cpu.msr.tsc_offset;
    assert_eq!(
        m.cpu, want,
        "the CPU's state after RESET (SDM Vol. 3A 9.1.1)"
    );
    assert_eq!(m.tsc(), 0, "RESET clears the TSC");
    assert_eq!(m.cpu.linear_eip(), 0xFFFF_FFF0, "the reset vector");
    assert_eq!(m.clock.icount, 1_000_000, "instructions go on counting");
    assert!(m.mem().a20_enabled(), "A20 is on again");
    let now = m.clock.now_ns();
    assert_eq!(
        m.bus.io_read(0x21, 1, now),
        pic_mask_at_power_on,
        "the PIC is back in its power-on state"
    );
    m.bus.io_write(0x70, 1, 0x7D, now);
    assert_eq!(m.bus.io_read(0x71, 1, now), 0x42, "CMOS RAM is kept");
    m.bus.io_write(0x70, 1, 0x0B, now);
    assert_eq!(
        m.bus.io_read(0x71, 1, now) & 0x40,
        0,
        "the RTC's RESET pin clears PIE"
    );
    let mut byte = [0u8];
    m.mem().read_ram(0x5000, &mut byte).expect("RAM");
    assert_eq!(byte[0], 0xAB, "RAM is kept");
    assert_eq!(m.reboots, 1);
}

#[test]
fn a_state_saved_after_a_reboot_restores_and_runs_on_to_the_same_end() {
    let mut whole = pc(Boot::Multiboot, "", false);
    let end = run(&mut whole, &mut Interp::new());
    assert_booted_four_times(&whole, end, "uninterrupted");

    // Run into the second boot (after the first reset), save, restore into
    // a new machine and finish there.
    let mut first = pc(Boot::Multiboot, "", false);
    let mut interp = Interp::new();
    while first.machine.reboots < 1 {
        let outcome = first
            .machine
            .run_until_stopped(&mut interp, Some(1_000))
            .expect("interp runs the guest");
        assert_eq!(outcome, RunOutcome::InstructionLimit);
    }
    first
        .machine
        .run_until_stopped(&mut interp, Some(1_000))
        .expect("interp runs the guest");
    let config = MachineConfig::default().to_toml();
    let bytes = snapshot::to_bytes(&first.machine, &config).expect("the state saves");
    let mut second = pc(Boot::Multiboot, "", false);
    snapshot::from_bytes(&bytes)
        .expect("the state reads back")
        .restore_into(&mut second.machine)
        .expect("the state restores");
    assert_eq!(second.machine.reboots, 1, "the reboot count is restored");
    let end = run(&mut second, &mut Interp::new());
    assert_eq!(end, RunOutcome::Stopped(StopReason::DebugExit(0)));
    assert_eq!(second.machine.reboots, 3);
    assert_eq!(second.machine.clock.icount, whole.machine.clock.icount);
    assert_eq!(
        [first.output(), second.output()].concat(),
        whole.output(),
        "COM1 before the save and after the restore"
    );
}

/// Both sides of a lockstep run reboot at the same instruction and the
/// comparison goes on to the guest's exit.
fn lockstep_through_the_reboots(boot: Boot, b: Box<dyn Engine>) {
    let name = b.name();
    let mut a = Side {
        machine: pc(boot, "", false).machine,
        engine: Box::new(Interp::new()),
    };
    let mut b = Side {
        machine: pc(boot, "", false).machine,
        engine: b,
    };
    match lockstep::run(&mut a, &mut b, MAX_INSNS).expect("both engines step") {
        Outcome::Stopped { reason, .. } => {
            assert_eq!(reason, StopReason::DebugExit(0), "{boot:?} interp,{name}")
        }
        Outcome::NoDivergence { instructions } => {
            panic!("{boot:?} interp,{name}: no exit within {instructions} instructions")
        }
        Outcome::Divergence(d) => panic!("{boot:?}:\n{}", format_divergence(&d, "interp", name)),
    }
    assert_eq!((a.machine.reboots, b.machine.reboots), (3, 3), "{boot:?}");
}

#[test]
fn lockstep_follows_interp_and_jit_through_every_reboot() {
    for boot in [Boot::Multiboot, Boot::Bios] {
        lockstep_through_the_reboots(boot, Box::new(Jit::with_threshold(1)));
    }
}

#[test]
fn lockstep_follows_interp_and_kvm_through_every_reboot_where_the_host_allows() {
    // The Multiboot guest only: under KVM the BIOS's CPUID answers with the
    // host's, so a lockstep run through the BIOS diverges there, reboot
    // or not.
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            println!("lockstep interp,kvm skipped: {e}");
            return;
        }
    };
    let probe = ringside_kvm::probe();
    for (ok, what) in [
        (&probe.protected_mode, "run unpaged protected mode"),
        (&probe.single_step, "single-step"),
    ] {
        if !ok.ok {
            println!(
                "lockstep interp,kvm skipped: this host's KVM cannot {what}: {}",
                ok.reason
            );
            return;
        }
    }
    lockstep_through_the_reboots(Boot::Multiboot, Box::new(kvm));
}
