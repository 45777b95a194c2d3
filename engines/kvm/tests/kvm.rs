//! The kvm engine against the interpreter, on what this host's KVM runs.
//! Every test skips (with a printed reason) when /dev/kvm cannot be opened.

use std::io::Write;
use std::sync::{Arc, Mutex};

use iced_x86::code_asm::{al, bl, bx, cx, dx, CodeAssembler};
use ringside_core::config::MachineConfig;
use ringside_core::{boot, Budget, Engine, Exit, Machine, RunOutcome, StopReason};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_interp::Interp;
use ringside_kvm::Kvm;

/// The engine, or None (after saying why) when this host has no KVM.
fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(k) => Some(k),
        Err(e) => {
            println!("{test}: skipped: {e}");
            None
        }
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 64 KiB BIOS image: at F000:0000 a real-mode program that writes "hi"
/// to COM1, reads the line status, sums 1..=100 in a loop and exits through
/// port 0xF4 with the low byte of the sum plus the status; at the reset
/// vector a far jump to it.
fn rom_guest() -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    a.mov(dx, 0x3F8u32).unwrap();
    a.mov(al, b'h' as u32).unwrap();
    a.out(dx, al).unwrap();
    a.mov(al, b'i' as u32).unwrap();
    a.out(dx, al).unwrap();
    a.mov(dx, 0x3FDu32).unwrap();
    a.in_(al, dx).unwrap();
    a.mov(bx, 0u32).unwrap();
    a.mov(cx, 100u32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.add(bx, cx).unwrap();
    a.loop_(top).unwrap();
    a.add(al, bl).unwrap();
    a.out(0xF4u32, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(0).unwrap();
    let mut image = vec![0xF4u8; 0x10000];
    image[..code.len()].copy_from_slice(&code);
    // JMP FAR F000:0000 at the reset vector (F000:FFF0).
    image[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]);
    image
}

/// A PC with the guest ROM, and its captured COM1.
fn pc_with_rom() -> (Machine, Capture) {
    let com1 = Capture::default();
    let io = HostIo::com1_only(com1.clone());
    let mut m = build_pc(&MachineConfig::default(), io).unwrap();
    boot::load_rom(&mut m, &rom_guest()).unwrap();
    (m, com1)
}

fn run_to_stop(m: &mut Machine, engine: &mut dyn Engine) -> StopReason {
    match m.run_until_stopped(engine, Some(1_000_000)).unwrap() {
        RunOutcome::Stopped(r) => r,
        other => panic!("the guest did not stop: {other:?}"),
    }
}

#[test]
fn probe_finds_real_and_unpaged_protected_mode() {
    if kvm_or_skip("probe").is_none() {
        return;
    }
    let p = ringside_kvm::probe();
    for (mode, r) in p.lines() {
        println!("{mode}: {} ({})", if r.ok { "yes" } else { "no" }, r.reason);
    }
    assert!(p.available.ok);
    assert!(p.real_mode.ok, "{}", p.real_mode.reason);
    assert!(p.protected_mode.ok, "{}", p.protected_mode.reason);
    // Paging depends on the host: with VT-x/AMD-V it runs, under kvm_pvm
    // it does not; either way the probe must say why.
    assert!(!p.paging.reason.is_empty());
}

#[test]
fn real_mode_rom_guest_exits_the_same_under_kvm_and_interp() {
    let Some(mut kvm) = kvm_or_skip("real_mode_rom_guest") else {
        return;
    };
    let (mut on_interp, interp_out) = pc_with_rom();
    let want = run_to_stop(&mut on_interp, &mut Interp::new());
    let (mut on_kvm, kvm_out) = pc_with_rom();
    let got = run_to_stop(&mut on_kvm, &mut kvm);
    // 5050 = 0x13BA: BL is 0xBA; AL is the line status register.
    assert!(matches!(want, StopReason::DebugExit(_)), "{want:?}");
    assert_eq!(got, want);
    assert_eq!(*kvm_out.0.lock().unwrap(), b"hi");
    assert_eq!(*interp_out.0.lock().unwrap(), b"hi");
    assert_eq!(on_kvm.cpu.gpr[..4], on_interp.cpu.gpr[..4]);
    assert_eq!(on_kvm.cpu.eip, on_interp.cpu.eip);
    assert!(kvm.stats().counters["exits_io"] >= 3);
}

#[test]
fn moving_a_machine_interp_kvm_interp_changes_nothing() {
    let Some(mut kvm) = kvm_or_skip("moving_a_machine") else {
        return;
    };
    let (mut alone, alone_out) = pc_with_rom();
    let want = run_to_stop(&mut alone, &mut Interp::new());

    let (mut moved, moved_out) = pc_with_rom();
    let mut interp = Interp::new();
    // Into the summing loop: the far jump, the COM1 writes and the IN are behind.
    // (Reading the UART's status makes it ask for host input: the run
    // returns early with WaitingForInput and is resumed.)
    while moved.clock.icount < 20 {
        let left = 20 - moved.clock.icount;
        let exit = interp
            .run(&mut moved, Budget { instructions: left })
            .unwrap();
        assert!(
            matches!(exit, Exit::BudgetSpent | Exit::WaitingForInput),
            "{exit:?}"
        );
    }
    assert_eq!(moved.clock.icount, 20);
    for _ in 0..5 {
        assert_eq!(kvm.step(&mut moved).unwrap(), Exit::BudgetSpent);
    }
    assert_eq!(moved.clock.icount, 25);
    let got = run_to_stop(&mut moved, &mut interp);

    assert_eq!(got, want);
    assert_eq!(*moved_out.0.lock().unwrap(), *alone_out.0.lock().unwrap());
    assert_eq!(moved.clock.icount, alone.clock.icount);
    // The TSC under KVM runs on host cycles: its offset is the one field
    // a trip through KVM legitimately changes.
    moved.cpu.msr.tsc_offset = alone.cpu.msr.tsc_offset;
    assert_eq!(moved.cpu, alone.cpu);
    assert_eq!(moved.mem().ram_slice(), alone.mem().ram_slice());
}

#[test]
fn a_kvm_step_over_port_io_completes_the_instruction() {
    let Some(mut kvm) = kvm_or_skip("step_over_port_io") else {
        return;
    };
    let (mut on_interp, _) = pc_with_rom();
    let (mut on_kvm, _) = pc_with_rom();
    let mut interp = Interp::new();
    // The far jump, two MOVs, then the OUT to COM1 is instruction 4.
    for _ in 0..3 {
        interp.step(&mut on_interp).unwrap();
        interp.step(&mut on_kvm).unwrap();
    }
    interp.step(&mut on_interp).unwrap();
    assert_eq!(kvm.step(&mut on_kvm).unwrap(), Exit::BudgetSpent);
    on_kvm.cpu.msr.tsc_offset = on_interp.cpu.msr.tsc_offset;
    assert_eq!(on_kvm.cpu, on_interp.cpu);
}
