//! The kvm engine against the interpreter, on what this host's KVM runs.
//! Every test skips (with a printed reason) when /dev/kvm cannot be opened.

use std::io::Write;
use std::sync::{Arc, Mutex};

use iced_x86::code_asm::{al, bl, bx, cr0, cx, dx, eax, ecx, CodeAssembler};
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

/// Where the flat protected-mode guests below start.
const FLAT_CODE: u32 = 0x10000;

/// A PC in flat 32-bit protected mode, unpaged, at `FLAT_CODE` with
/// `code`; its IDT is the loader's empty one (no gate for any vector).
fn flat_pc(code: impl FnOnce(&mut CodeAssembler)) -> Machine {
    let mut a = CodeAssembler::new(32).unwrap();
    code(&mut a);
    let bytes = a.assemble(FLAT_CODE as u64).unwrap();
    let mut m = build_pc(&MachineConfig::default(), HostIo::discarded()).unwrap();
    m.write_ram(FLAT_CODE, &bytes).unwrap();
    boot::enter_flat_protected_mode(&mut m, FLAT_CODE);
    m.cpu.gpr[4] = 0x9000;
    m
}

/// MOV to CR0 with PG set, in a guest with no #GP or #DF gate.
fn guest_enabling_paging_without_an_idt() -> Machine {
    flat_pc(|a| {
        a.mov(eax, cr0).unwrap();
        a.or(eax, 0x8000_0000u32 as i32).unwrap();
        a.mov(cr0, eax).unwrap();
        a.mov(al, 0x50u32).unwrap();
        a.out(0xF4u32, al).unwrap();
    })
}

/// The engine, or None (after saying why) when this host's KVM runs
/// 32-bit paging: the tests of the paging guard need a host that refuses it.
fn kvm_without_paging_or_skip(test: &str) -> Option<Kvm> {
    let kvm = kvm_or_skip(test)?;
    let p = ringside_kvm::probe();
    if p.paging.ok || !p.protected_mode.ok {
        println!(
            "{test}: skipped: the paging guard is for hosts that run unpaged protected mode \
             and refuse 32-bit paging; this one: unpaged {}, paging {}",
            p.protected_mode.reason, p.paging.reason
        );
        return None;
    }
    Some(kvm)
}

fn assert_paging_refused(e: ringside_core::EngineError) {
    let text = e.to_string();
    assert!(
        matches!(e, ringside_core::EngineError::Unavailable { .. }),
        "{text}"
    );
    assert!(
        text.contains("cannot run 32-bit paging")
            && text.contains(&format!("MOV to CR0 at 0008:{:08x}", FLAT_CODE + 8)),
        "{text}"
    );
}

#[test]
fn enabling_paging_without_a_gp_gate_stops_as_unavailable_not_as_a_triple_fault() {
    let test = "enabling_paging_without_a_gp_gate";
    let Some(mut kvm) = kvm_without_paging_or_skip(test) else {
        return;
    };
    let mut m = guest_enabling_paging_without_an_idt();
    let e = m
        .run_until_stopped(&mut kvm, Some(1_000_000))
        .expect_err("the host refuses paging: the run cannot go on");
    assert_paging_refused(e);
    assert!(!m.cpu.run.shutdown, "no triple fault recorded");
}

#[test]
fn stepping_onto_a_mov_to_cr0_that_enables_paging_stops_before_it() {
    let test = "stepping_onto_mov_cr0_pg";
    let Some(mut kvm) = kvm_without_paging_or_skip(test) else {
        return;
    };
    let mut m = guest_enabling_paging_without_an_idt();
    assert_eq!(kvm.step(&mut m).unwrap(), Exit::BudgetSpent);
    assert_eq!(kvm.step(&mut m).unwrap(), Exit::BudgetSpent);
    assert_paging_refused(kvm.step(&mut m).expect_err("the host refuses paging"));
    assert_eq!(m.cpu.eip, FLAT_CODE + 8, "the MOV did not run");
    assert_eq!(kvm.stats().instructions, 2);
}

#[test]
fn an_unpaged_guest_without_a_gp_gate_runs_freely_not_single_stepped() {
    let test = "unpaged_guest_runs_freely";
    let Some(mut kvm) = kvm_without_paging_or_skip(test) else {
        return;
    };
    // 100,000 iterations of a two-instruction loop: 200,000 instructions.
    let mut m = flat_pc(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 100_000u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.mov(al, 7u32).unwrap();
        a.out(0xF4u32, al).unwrap();
    });
    let stop = run_to_stop(&mut m, &mut kvm);
    assert_eq!(stop, StopReason::DebugExit(7));
    let stats = kvm.stats();
    println!("{test}: {:?}", stats.counters);
    assert_eq!(
        stats.counters["single_step_runs"], 0,
        "{:?}",
        stats.counters
    );
    assert_eq!(stats.counters["exits_debug"], 0, "{:?}", stats.counters);
    assert!(stats.counters["uncounted_runs"] >= 1);
    // What ran freely is not counted: no instruction is claimed.
    assert_eq!(stats.instructions, 0);
    assert_eq!(m.clock.icount, 0);
}
