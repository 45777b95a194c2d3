//! The two interrupt guests, `irq-pm` (a Multiboot kernel in unpaged
//! protected mode) and `irq-real` (a boot sector the BIOS starts in real
//! mode), on the interpreter and on KVM: both engines must print the same
//! on COM1 and exit the same way, and the lockstep comparator must find no
//! instruction after which they disagree, up to the guest's exit.
//!
//! A state saved under the recompiler also restores under KVM and the
//! other way round (`a_state_moves_between_jit_and_kvm_in_both_directions`).
//!
//! KVM runs only where /dev/kvm opens and the host probe says this host's
//! KVM runs the guest's mode (and single-steps, for lockstep); otherwise
//! each test prints what it skipped and why.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use ringside_core::config::{DiskConfig, DiskMode, MachineConfig};
use ringside_core::{boot, Engine, Exit, Machine, RunOutcome, StopReason};
use ringside_debugger::lockstep::{self, format_divergence, Outcome, Side};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_kvm::{Kvm, Probe};

/// Where the BIOS loads and starts a boot sector (0000:7C00).
const BOOT_SECTOR: u32 = 0x7C00;
/// Far more than either guest needs (each retires well under 100,000).
const MAX_INSNS: u64 = 10_000_000;

#[derive(Clone, Copy)]
enum Guest {
    /// A built-in Multiboot kernel, loaded as `qemu -kernel` would.
    Multiboot(&'static str),
    /// A built-in disk image, booted through ringside's BIOS.
    Disk(&'static str),
}

impl Guest {
    fn real_mode(self) -> bool {
        matches!(self, Guest::Disk(_))
    }
}

/// A copy of a built-in disk image, removed with the machine that uses it.
struct TempDisk(PathBuf);

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A PC ready to run `guest`, with what it writes to COM1.
struct Pc {
    machine: Machine,
    com1: SharedBuffer,
    _disk: Option<TempDisk>,
}

fn pc(guest: Guest) -> Pc {
    static DISKS: AtomicU32 = AtomicU32::new(0);
    let mut config = MachineConfig::default();
    let mut disk = None;
    if let Guest::Disk(name) = guest {
        let image = ringside_guests::find_disk(name).expect("the disk is built in");
        let path = std::env::temp_dir().join(format!(
            "ringside-kvm-guests-{}-{}.img",
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
    match guest {
        Guest::Multiboot(name) => {
            let image = ringside_guests::find(name).expect("the guest is built in");
            boot::load_multiboot(&mut machine, image.image, "").expect("the guest loads");
        }
        Guest::Disk(_) => {
            boot::load_rom(&mut machine, ringside_firmware::BIOS).expect("the BIOS loads")
        }
    }
    Pc {
        machine,
        com1,
        _disk: disk,
    }
}

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(ringside_kvm::probe)
}

/// Why KVM cannot run `guest` here (`None` when it can). Lockstep also
/// needs single-stepping.
fn kvm_skip_reason(guest: Guest, lockstep: bool) -> Option<String> {
    if let Err(e) = Kvm::new() {
        return Some(e.to_string());
    }
    let probe = probe();
    let (mode, result) = if guest.real_mode() {
        ("real mode", &probe.real_mode)
    } else {
        ("unpaged protected mode", &probe.protected_mode)
    };
    if !result.ok {
        return Some(format!(
            "this host's KVM cannot run {mode}: {}",
            result.reason
        ));
    }
    if lockstep && !probe.single_step.ok {
        return Some(format!(
            "this host's KVM cannot single-step: {}",
            probe.single_step.reason
        ));
    }
    None
}

/// Runs the guest to its exit; returns how it stopped and its COM1 output.
fn run(guest: Guest, engine: &mut dyn Engine) -> (RunOutcome, String) {
    let mut pc = pc(guest);
    let out = pc
        .machine
        .run_until_stopped(engine, Some(MAX_INSNS))
        .unwrap_or_else(|e| panic!("{}: {e}", engine.name()));
    (
        out,
        String::from_utf8_lossy(&pc.com1.contents()).into_owned(),
    )
}

fn same_output_and_exit_on_interp_and_kvm(guest: Guest, name: &str) {
    let (interp_out, interp_text) = run(guest, &mut Interp::new());
    println!("{name} on interp:\n{interp_text}");
    assert_eq!(
        interp_out,
        RunOutcome::Stopped(StopReason::DebugExit(0)),
        "{name} on interp:\n{interp_text}"
    );
    if let Some(why) = kvm_skip_reason(guest, false) {
        println!("{name} on kvm skipped: {why}");
        return;
    }
    let mut kvm = Kvm::new().expect("the skip check opened /dev/kvm");
    let (kvm_out, kvm_text) = run(guest, &mut kvm);
    assert_eq!(kvm_out, interp_out, "{name} on kvm:\n{kvm_text}");
    assert_eq!(kvm_text, interp_text, "{name}: COM1 output, kvm vs interp");
}

/// Steps the interpreter until the BIOS jumps to the boot sector, so the
/// comparison covers the guest's own instructions.
fn run_bios_to_boot_sector(m: &mut Machine) {
    let mut interp = Interp::new();
    for _ in 0..MAX_INSNS {
        if m.cpu.linear_eip() == BOOT_SECTOR {
            return;
        }
        match interp.step(m).expect("the BIOS runs on interp") {
            Exit::Halted => assert!(m.skip_to_next_deadline(), "the BIOS halted for good"),
            Exit::Stopped(reason) => panic!("the BIOS stopped before booting: {reason}"),
            _ => {}
        }
    }
    panic!("the BIOS did not reach the boot sector in {MAX_INSNS} instructions");
}

/// interp and kvm in lockstep from the guest's first instruction to its
/// exit. For a disk, both machines first run the BIOS on interp to the
/// boot sector.
fn no_divergence_between_interp_and_kvm(guest: Guest, name: &str) {
    if let Some(why) = kvm_skip_reason(guest, true) {
        println!("{name}: lockstep interp,kvm skipped: {why}");
        return;
    }
    let (mut a, mut b) = (pc(guest), pc(guest));
    if guest.real_mode() {
        run_bios_to_boot_sector(&mut a.machine);
        run_bios_to_boot_sector(&mut b.machine);
    }
    let mut interp = Side {
        machine: a.machine,
        engine: Box::new(Interp::new()),
    };
    let mut kvm = Side {
        machine: b.machine,
        engine: Box::new(Kvm::new().expect("the skip check opened /dev/kvm")),
    };
    match lockstep::run(&mut interp, &mut kvm, MAX_INSNS).expect("both engines step") {
        Outcome::Stopped {
            reason,
            instructions,
        } => {
            println!(
                "{name}: no divergence in {instructions} instructions (both stopped: {reason})"
            );
            assert_eq!(reason, StopReason::DebugExit(0), "{name}");
        }
        Outcome::NoDivergence { instructions } => {
            panic!("{name}: no exit within {instructions} instructions")
        }
        Outcome::Divergence(d) => panic!("{name}:\n{}", format_divergence(&d, "interp", "kvm")),
    }
}

#[test]
fn irq_pm_prints_and_exits_the_same_on_interp_and_kvm() {
    same_output_and_exit_on_interp_and_kvm(Guest::Multiboot("irq-pm"), "irq-pm");
}

#[test]
fn irq_real_prints_and_exits_the_same_on_interp_and_kvm() {
    same_output_and_exit_on_interp_and_kvm(Guest::Disk("irq-real"), "irq-real");
}

#[test]
fn irq_pm_interp_and_kvm_agree_in_lockstep_to_the_exit() {
    no_divergence_between_interp_and_kvm(Guest::Multiboot("irq-pm"), "irq-pm");
}

#[test]
fn irq_real_interp_and_kvm_agree_in_lockstep_from_the_boot_sector_to_the_exit() {
    no_divergence_between_interp_and_kvm(Guest::Disk("irq-real"), "irq-real");
}

/// Step `engine` until the machine has retired `until` instructions (or
/// stopped). A halted CPU waits for its next device deadline, as
/// `run_until_stopped` does.
fn step_until(m: &mut Machine, engine: &mut dyn Engine, until: u64) {
    while m.clock.icount < until {
        match engine.step(m).expect("the engine steps") {
            Exit::Halted if !m.skip_to_next_deadline() => return,
            Exit::Stopped(_) => return,
            _ => {}
        }
    }
}

/// interp -> kvm -> interp at pseudo-random instruction counts must give
/// the same COM1 output, exit, instruction count, CPU state and memory as
/// interp alone. KVM stretches are single-stepped, so virtual time stays
/// the instruction count and timer interrupts land where they do on interp.
fn moving_between_engines_changes_nothing(guest: Guest, name: &str) {
    if let Some(why) = kvm_skip_reason(guest, true) {
        println!("{name}: interp -> kvm -> interp skipped: {why}");
        return;
    }
    let start = |m: &mut Machine| {
        if guest.real_mode() {
            run_bios_to_boot_sector(m);
        }
    };
    let mut alone = pc(guest);
    start(&mut alone.machine);
    let first = alone.machine.clock.icount;
    let want = alone
        .machine
        .run_until_stopped(&mut Interp::new(), Some(MAX_INSNS))
        .expect("interp runs the guest");
    let total = alone.machine.clock.icount - first;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below.max(1)
    };
    for case in 0..6 {
        let into_kvm = first + next(total);
        let back = into_kvm + 1 + next(total / 4);
        let mut moved = pc(guest);
        start(&mut moved.machine);
        let mut interp = Interp::new();
        let mut kvm = Kvm::new().expect("the skip check opened /dev/kvm");
        step_until(&mut moved.machine, &mut interp, into_kvm);
        step_until(&mut moved.machine, &mut kvm, back);
        let got = moved
            .machine
            .run_until_stopped(&mut interp, Some(MAX_INSNS))
            .expect("interp finishes the guest");
        let what = format!("{name} case {case}: interp to {into_kvm}, kvm to {back}, interp");
        println!("{what}");
        assert_eq!(got, want, "{what}");
        assert_eq!(moved.com1.contents(), alone.com1.contents(), "{what}");
        assert_eq!(
            moved.machine.clock.icount, alone.machine.clock.icount,
            "{what}"
        );
        // The TSC under KVM runs on host cycles: its offset is the one
        // field a trip through KVM legitimately changes.
        moved.machine.cpu.msr.tsc_offset = alone.machine.cpu.msr.tsc_offset;
        assert_eq!(moved.machine.cpu, alone.machine.cpu, "{what}");
        assert!(
            moved.machine.mem().ram_slice() == alone.machine.mem().ram_slice(),
            "{what}: RAM differs"
        );
    }
}

#[test]
fn irq_pm_moved_interp_kvm_interp_at_random_counts_ends_the_same() {
    moving_between_engines_changes_nothing(Guest::Multiboot("irq-pm"), "irq-pm");
}

#[test]
fn irq_real_moved_interp_kvm_interp_at_random_counts_ends_the_same() {
    moving_between_engines_changes_nothing(Guest::Disk("irq-real"), "irq-real");
}

/// A state saved under the recompiler restores under KVM, and a state
/// saved under KVM restores under the recompiler: either way `irq-pm`
/// (timer interrupts in unpaged protected mode) ends as it does on the
/// interpreter alone, its COM1 output split between the two machines
/// exactly where the state was saved. KVM is stopped part way by single
/// steps (it counts no instructions in a plain run).
#[test]
fn a_state_moves_between_jit_and_kvm_in_both_directions() {
    use ringside_core::snapshot;
    let guest = Guest::Multiboot("irq-pm");
    if let Some(why) = kvm_skip_reason(guest, true) {
        println!("a_state_moves_between_jit_and_kvm_in_both_directions: skipped: {why}");
        return;
    }
    let (whole, whole_text) = run(guest, &mut Interp::new());
    assert_eq!(whole, RunOutcome::Stopped(StopReason::DebugExit(0)));
    let config = MachineConfig::default().to_toml();
    for saved_on_jit in [true, false] {
        let mut first = pc(guest);
        if saved_on_jit {
            let mut jit = ringside_jit::Jit::with_threshold(1);
            let out = first
                .machine
                .run_until_stopped(&mut jit, Some(4_500))
                .expect("jit runs irq-pm");
            assert_eq!(out, RunOutcome::InstructionLimit);
        } else {
            let mut kvm = Kvm::new().expect("the skip check opened /dev/kvm");
            for _ in 0..4_500 {
                match kvm.step(&mut first.machine).expect("kvm steps irq-pm") {
                    Exit::Halted => assert!(first.machine.skip_to_next_deadline()),
                    Exit::Stopped(r) => panic!("irq-pm stopped under kvm after a step: {r}"),
                    _ => {}
                }
            }
        }
        let bytes = snapshot::to_bytes(&first.machine, &config).expect("the state saves");
        let mut second = pc(guest);
        snapshot::from_bytes(&bytes)
            .expect("the saved state reads back")
            .restore_into(&mut second.machine)
            .expect("the state restores");
        let out = if saved_on_jit {
            let mut kvm = Kvm::new().expect("the skip check opened /dev/kvm");
            second.machine.run_until_stopped(&mut kvm, Some(MAX_INSNS))
        } else {
            let mut jit = ringside_jit::Jit::with_threshold(1);
            second.machine.run_until_stopped(&mut jit, Some(MAX_INSNS))
        }
        .expect("the restored machine runs");
        let (before, after) = (first.com1.contents(), second.com1.contents());
        let direction = if saved_on_jit {
            "jit -> kvm"
        } else {
            "kvm -> jit"
        };
        assert_eq!(out, whole, "{direction}");
        assert!(
            !before.is_empty() && !after.is_empty(),
            "{direction}: saved mid-run"
        );
        assert_eq!(
            String::from_utf8_lossy(&[before, after].concat()),
            whole_text,
            "{direction}: COM1 before the save and after the restore"
        );
    }
}

/// What the KVM checks of this file do on this host, counted: each guest's
/// three checks (the same output, lockstep, moving between engines) and
/// the state move between jit and kvm run or skip by the probe, and this
/// test prints how many run and how many skip, with each reason, so the
/// test output says what this host covered. Run and skipped add up to
/// every check, and a guest whose mode the probe says this host runs is
/// counted as run.
#[test]
fn the_kvm_checks_say_how_many_run_and_how_many_skip_on_this_host() {
    let mut checks: Vec<(&str, Guest, bool)> = Vec::new();
    for guest in [Guest::Multiboot("irq-pm"), Guest::Disk("irq-real")] {
        checks.push(("the same output and exit", guest, false));
        checks.push(("lockstep to the exit", guest, true));
        checks.push(("moved interp -> kvm -> interp", guest, true));
    }
    checks.push((
        "a state moved between jit and kvm",
        Guest::Multiboot("irq-pm"),
        true,
    ));
    let probe = ringside_kvm::probe();
    let (mut ran, mut skipped) = (0, 0);
    for (what, guest, lockstep) in &checks {
        let name = match guest {
            Guest::Multiboot(n) | Guest::Disk(n) => n,
        };
        match kvm_skip_reason(*guest, *lockstep) {
            None => {
                ran += 1;
                println!("kvm: {name}: {what}: runs");
            }
            Some(why) => {
                skipped += 1;
                println!("kvm: {name}: {what}: skipped: {why}");
                let mode_ok = if guest.real_mode() {
                    probe.real_mode.ok
                } else {
                    probe.protected_mode.ok
                };
                assert!(
                    !(mode_ok && (!lockstep || probe.single_step.ok)),
                    "{name}: {what} skipped although the probe says this host runs it"
                );
            }
        }
    }
    assert_eq!(ran + skipped, checks.len());
    println!(
        "kvm on this host: {ran} of {} checks run, {skipped} skipped",
        checks.len()
    );
}
