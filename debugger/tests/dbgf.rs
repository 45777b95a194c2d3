//! The debugger core on real guests: the demo OS (paged, on the
//! interpreter) and irq-pm (unpaged, on the interpreter and on KVM where
//! the host runs it).

mod common;

use common::debugger;
use ringside_core::config::MachineConfig;
use ringside_core::StopReason;
use ringside_debugger::stops::{Address, Condition, StopKind, WatchKind};
use ringside_debugger::StopCause;

#[test]
fn a_breakpoint_on_a_kernel_symbol_stops_before_its_first_instruction() {
    let (mut d, _) = debugger("demo", "interp");
    let kmain = d.symbols.resolve("kmain").unwrap();
    let id = d.add_breakpoint(Address::Linear(kmain), None);
    let cause = d.cont(|| false).unwrap();
    assert_eq!(cause, StopCause::Breakpoint { id });
    assert_eq!(d.main.machine.cpu.linear_eip(), kmain);
    assert!(d.location().contains("<kmain>"), "{}", d.location());
}

/// The recompiler under the debugger: a breakpoint stops before its
/// instruction, steps retire one instruction each, and continuing from
/// there ends the session exactly as on the interpreter.
#[test]
fn breakpoints_steps_and_continue_on_jit_match_the_interpreter() {
    let mut ends = Vec::new();
    for engine in ["interp", "jit"] {
        let (mut d, com1) = debugger("demo", engine);
        d.queue_input(b"run hello\npoweroff\n");
        let kmain = d.symbols.resolve("kmain").unwrap();
        let id = d.add_breakpoint(Address::Linear(kmain), None);
        assert_eq!(
            d.cont(|| false).unwrap(),
            StopCause::Breakpoint { id },
            "{engine}"
        );
        assert_eq!(d.main.machine.cpu.linear_eip(), kmain, "{engine}");
        d.delete(id);
        let start = d.main.machine.clock.icount;
        assert_eq!(d.step(40).unwrap(), StopCause::Stepped, "{engine}");
        assert_eq!(d.main.machine.clock.icount, start + 40, "{engine}");
        let at_step = (d.main.machine.cpu.clone(), d.main.machine.clock.icount);
        assert_eq!(
            d.cont(|| false).unwrap(),
            StopCause::Machine(StopReason::DebugExit(0)),
            "{engine}"
        );
        ends.push((at_step, d.main.machine.clock.icount, com1.contents()));
    }
    assert_eq!(ends[0], ends[1], "interp and jit disagree");
    let out = {
        let (mut d, _) = debugger("demo", "jit");
        d.step(1000).unwrap();
        d.execute("stats").unwrap()
    };
    assert!(out.contains("single_steps"), "{out}");
}

#[test]
fn step_retires_exactly_n_instructions_and_history_records_them() {
    let (mut d, _) = debugger("demo", "interp");
    let start = d.main.machine.clock.icount;
    assert_eq!(d.step(25).unwrap(), StopCause::Stepped);
    assert_eq!(d.main.machine.clock.icount, start + 25);
    assert_eq!(d.history().count(), 25);
    assert!(d.history().any(|r| !r.changes.is_empty()));
}

#[test]
fn stats_counts_the_instructions_the_engine_retired() {
    let (mut d, _) = debugger("demo", "interp");
    d.queue_input(b"run hello\npoweroff\n");
    d.step(10).unwrap();
    d.cont(|| false).unwrap();
    let retired = d.main.machine.clock.icount;
    assert!(retired > 100_000, "the demo ran: {retired}");
    assert_eq!(d.stats().instructions, retired);
    let out = d.execute("stats").unwrap();
    assert!(
        out.starts_with(&format!("engine interp: {retired} instructions")),
        "{out}"
    );
}

#[test]
fn next_steps_over_a_call_to_the_instruction_after_it() {
    let (mut d, _) = debugger("demo", "interp");
    let kmain = d.symbols.resolve("kmain").unwrap();
    d.add_breakpoint(Address::Linear(kmain), None);
    d.cont(|| false).unwrap();
    let id = d.stops()[0].id;
    d.delete(id);
    // Step until the next instruction is a CALL, then step over it.
    loop {
        let insn = ringside_debugger::stops::decode_next(&mut d.main.machine).unwrap();
        if insn.mnemonic() == iced_x86::Mnemonic::Call {
            let (after, esp) = (
                d.main.machine.cpu.eip + insn.len() as u32,
                d.main.machine.cpu.gpr[4],
            );
            let before = d.main.machine.clock.icount;
            assert_eq!(d.step_over().unwrap(), StopCause::Stepped);
            assert_eq!(d.main.machine.cpu.eip, after);
            assert_eq!(d.main.machine.cpu.gpr[4], esp);
            assert!(d.main.machine.clock.icount > before + 1, "the callee ran");
            return;
        }
        d.step(1).unwrap();
    }
}

#[test]
fn catching_vector_14_stops_at_the_demo_kernels_first_page_fault() {
    let (mut d, _) = debugger("demo", "interp");
    d.queue_input(b"run hello\n");
    let id = d.add_catch(StopKind::Vector(14));
    let cause = d.cont(|| false).unwrap();
    assert_eq!(cause, StopCause::Vector { id, vector: 14 });
    let handler = d.main.machine.peek_vector_handler(14).unwrap().0;
    assert_eq!(d.main.machine.cpu.linear_eip(), handler);
    let cr2 = d.main.machine.cpu.cr2;
    println!("first page fault: CR2 = {cr2:#x}, at {}", d.location());
    assert_ne!(cr2, 0);
}

#[test]
fn a_write_watchpoint_on_a_kernel_variable_fires_after_the_store() {
    let (mut d, _) = debugger("demo", "interp");
    let ticks = d
        .symbols
        .resolve("ticks")
        .expect("the demo kernel counts ticks");
    let id = d.add_watchpoint(ticks, 4, WatchKind::Write);
    let cause = d.cont(|| false).unwrap();
    match cause {
        StopCause::Watchpoint { id: got, access } => {
            assert_eq!(got, id);
            assert!(access.write);
            assert!(ringside_debugger::stops::overlaps(
                ticks,
                4,
                access.lin,
                access.size
            ));
        }
        other => panic!("{other:?}"),
    }
    // The store has retired: the last history entry is the writing
    // instruction.
    assert!(d.history().last().is_some());
}

#[test]
fn a_conditional_breakpoint_with_a_hit_count_stops_on_the_right_hit() {
    // The timer interrupt handler runs once per tick; stop at its third run.
    let (mut d, _) = debugger("demo", "interp");
    let trap = d
        .symbols
        .resolve("trap")
        .expect("the demo kernel has trap()");
    let id = d.add_breakpoint(
        Address::Linear(trap),
        Some(Condition::parse("esp != 0").unwrap()),
    );
    d.set_after(id, 3);
    assert_eq!(d.cont(|| false).unwrap(), StopCause::Breakpoint { id });
    assert_eq!(d.stops()[0].hits, 3);
}

#[test]
fn catching_ring_3_and_cr3_changes_stop_on_the_first_user_program() {
    let (mut d, _) = debugger("demo", "interp");
    d.queue_input(b"run hello\n");
    let ring = d.add_catch(StopKind::Ring(3));
    let cause = d.cont(|| false).unwrap();
    assert!(
        matches!(cause, StopCause::Ring { id, from: 0, to: 3 } if id == ring),
        "{cause:?}"
    );
    assert_eq!(d.main.machine.cpu.cpl(), 3);
}

#[test]
fn the_guest_runs_to_its_exit_under_the_debugger() {
    let (mut d, com1) = debugger("demo", "interp");
    d.queue_input(b"run hello\npoweroff\n");
    let cause = d.cont(|| false).unwrap();
    assert_eq!(cause, StopCause::Machine(StopReason::DebugExit(0)));
    let out = String::from_utf8_lossy(&com1.contents()).into_owned();
    assert!(out.contains("Hello from user space!"), "{out}");
}

#[test]
fn a_page_fault_stop_names_cr2_and_the_faulting_instruction() {
    let (mut d, _) = debugger("demo", "interp");
    d.execute("input run hello").unwrap();
    d.execute("catch vector 14").unwrap();
    let out = d.execute("cont").unwrap();
    println!("{out}");
    let cr2 = d.main.machine.cpu.cr2;
    assert!(out.contains(&format!("CR2={cr2:08x}")), "{out}");
    assert!(
        out.contains("interrupted at 001b:"),
        "a ring-3 instruction faulted: {out}"
    );
    assert!(out.contains("<vector_14>"), "{out}");
}

#[test]
fn compare_mode_finds_a_corrupted_partner_register_at_the_next_step() {
    let (mut d, _) = debugger("demo", "interp");
    let (partner, _) = debugger("demo", "interp");
    d.set_partner(partner.main.machine, "interp").unwrap();
    assert_eq!(
        d.step(1000).unwrap(),
        StopCause::Stepped,
        "interp agrees with itself"
    );
    d.execute("pset edi 0x1234").unwrap();
    let out = d.execute("step").unwrap();
    assert!(out.contains("divergence after"), "{out}");
    assert!(out.contains("* edi"), "{out}");
}

/// Breakpoints, watchpoints and catches are checked by the debugger from
/// the architectural state around each step, so every engine stops at the
/// same instructions for the same reasons. irq-pm runs unpaged, which this
/// host's KVM can run.
#[test]
fn stops_are_the_same_on_interp_and_kvm() {
    let test = "stops_are_the_same_on_interp_and_kvm";
    if let Err(e) = ringside_kvm::Kvm::new() {
        println!("{test}: skipped: {e}");
        return;
    }
    let probe = ringside_kvm::probe();
    if !probe.protected_mode.ok || !probe.single_step.ok {
        println!(
            "{test}: skipped: this host's KVM cannot run irq-pm stepwise: {} / {}",
            probe.protected_mode.reason, probe.single_step.reason
        );
        return;
    }
    let trace = |engine: &str| {
        let (mut d, com1) = debugger("irq-pm", engine);
        let timer = d.symbols.resolve("timer_interrupt").unwrap();
        let ticks = d.symbols.resolve("ticks").unwrap();
        d.add_breakpoint(
            Address::Linear(timer),
            Some(Condition::parse("esp != 0").unwrap()),
        );
        d.add_watchpoint(ticks, 4, WatchKind::Access);
        d.add_catch(StopKind::Vector(0x20));
        d.add_catch(StopKind::Port(0x3F8));
        let mut seen = Vec::new();
        for _ in 0..60 {
            let cause = d.cont(|| false).unwrap();
            let m = &d.main.machine;
            seen.push(format!(
                "{cause} at {:08x} after {} instructions",
                m.cpu.eip, m.clock.icount
            ));
            if matches!(cause, StopCause::Machine(_)) {
                break;
            }
        }
        (seen, com1.contents())
    };
    let (on_interp, out_interp) = trace("interp");
    let (on_kvm, out_kvm) = trace("kvm");
    println!("{}", on_interp.join("\n"));
    assert!(
        on_interp.iter().any(|s| s.starts_with("breakpoint")),
        "{on_interp:?}"
    );
    assert!(
        on_interp.iter().any(|s| s.starts_with("watchpoint")),
        "{on_interp:?}"
    );
    assert!(
        on_interp.iter().any(|s| s.contains("vector 0x20")),
        "{on_interp:?}"
    );
    assert!(
        on_interp.iter().any(|s| s.contains("port 0x03f8")),
        "{on_interp:?}"
    );
    assert_eq!(on_interp, on_kvm);
    assert_eq!(out_interp, out_kvm);
}

/// With only linear breakpoints set, the interpreter runs free and stops
/// itself at them (`Machine::breakpoints`); KVM does not, so the debugger
/// steps it. Both must stop at the same places with the same hit counts.
#[test]
fn engine_assisted_breakpoints_stop_where_stepping_does() {
    let trace = |engine: &str| {
        let (mut d, _) = debugger("irq-pm", engine);
        let timer = d.symbols.resolve("timer_interrupt").unwrap();
        let main = d.symbols.resolve("guest_main").unwrap();
        let every_third = d.add_breakpoint(Address::Linear(timer), None);
        d.set_after(every_third, 3);
        d.add_breakpoint(
            Address::Linear(main),
            Some(Condition::parse("eax != 0x12345678").unwrap()),
        );
        let free = !d.checked();
        let mut seen = Vec::new();
        loop {
            let cause = d.cont(|| false).unwrap();
            seen.push(format!(
                "{cause} at {:08x} after {}",
                d.main.machine.cpu.eip, d.main.machine.clock.icount
            ));
            if matches!(cause, StopCause::Machine(_)) {
                break;
            }
        }
        (free, seen)
    };
    let (free, on_interp) = trace("interp");
    assert!(free, "the interpreter runs free with breakpoints only");
    println!("{}", on_interp.join("\n"));
    assert!(on_interp.len() > 10, "{on_interp:?}");
    match ringside_kvm::Kvm::new() {
        Ok(_) if ringside_kvm::probe().protected_mode.ok => {
            let (free, on_kvm) = trace("kvm");
            assert!(!free, "kvm is stepped");
            assert_eq!(on_interp, on_kvm);
        }
        _ => println!("engine_assisted_breakpoints_stop_where_stepping_does: kvm side skipped: kvm cannot run irq-pm here"),
    }
}

/// The debugger's `save` mid-session and `load` into a fresh machine (on
/// the interpreter, and on KVM where the host runs the guest): the rest of
/// the run prints the same and ends at the same instruction count. A
/// damaged file is refused and changes nothing.
#[test]
fn save_and_load_in_the_debugger_continue_the_guest_exactly() {
    let dir = std::env::temp_dir().join(format!("ringside-dbgf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mid.ssm");
    let file = file.to_str().unwrap();

    let (mut d, com1) = debugger("irq-pm", "interp");
    d.config_toml = MachineConfig::default().to_toml();
    let ticks = d.symbols.resolve("ticks").unwrap();
    d.add_watchpoint(ticks, 4, WatchKind::Write);
    for _ in 0..5 {
        d.cont(|| false).unwrap();
    }
    d.execute("delete 1").unwrap();
    let saved_at = d.main.machine.clock.icount;
    let printed_before = com1.contents().len();
    assert!(d
        .execute(&format!("save {file}"))
        .unwrap()
        .contains("saved"));
    assert_eq!(
        d.cont(|| false).unwrap(),
        StopCause::Machine(StopReason::DebugExit(0))
    );
    let want_tail = com1.contents()[printed_before..].to_vec();
    let want_end = d.main.machine.clock.icount;

    let mut engines = vec!["interp", "jit"];
    match ringside_kvm::Kvm::new() {
        Ok(_) if ringside_kvm::probe().protected_mode.ok => engines.push("kvm"),
        _ => println!("save_and_load...: the kvm restore skipped: kvm cannot run irq-pm here"),
    }
    for engine in engines {
        let (mut fresh, com1) = debugger("irq-pm", engine);
        let out = fresh.execute(&format!("load {file}")).unwrap();
        assert!(out.contains("loaded"), "{out}");
        assert_eq!(fresh.main.machine.clock.icount, saved_at);
        if engine != "kvm" {
            // Free running on KVM counts no instructions; stepping does.
            assert_eq!(
                fresh.cont(|| false).unwrap(),
                StopCause::Machine(StopReason::DebugExit(0))
            );
            assert_eq!(fresh.main.machine.clock.icount, want_end, "{engine}");
        } else {
            let ticks = fresh.symbols.resolve("ticks").unwrap();
            // A watchpoint makes the debugger step KVM, so it counts.
            fresh.add_watchpoint(ticks, 4, WatchKind::Read);
            let mut cause = fresh.cont(|| false).unwrap();
            while cause != StopCause::Machine(StopReason::DebugExit(0)) {
                cause = fresh.cont(|| false).unwrap();
            }
            assert_eq!(fresh.main.machine.clock.icount, want_end, "{engine}");
        }
        assert_eq!(
            com1.contents(),
            want_tail,
            "{engine}: the output after the save"
        );
    }

    // A damaged file: refused, and the machine is as it was.
    let mut bytes = std::fs::read(file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(file, &bytes).unwrap();
    let (mut other, _) = debugger("irq-pm", "interp");
    other.step(100).unwrap();
    let before = (
        other.main.machine.cpu.clone(),
        other.main.machine.mem().ram_slice().to_vec(),
    );
    let err = other.execute(&format!("load {file}")).unwrap_err();
    assert!(err.contains("checksum") || err.contains("CRC"), "{err}");
    assert_eq!(other.main.machine.cpu, before.0);
    assert!(other.main.machine.mem().ram_slice() == &before.1[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 64 KiB real-mode ROM: at E000 `MOV AX, 1`, eight `INC AX`, `MOV AL,
/// 7`, `OUT F4h, AL` (assembled by iced-x86 for a 16-bit CS); at the reset
/// vector a far `JMP F000:E000`, or with `far` false a near `JMP E000`,
/// after which CS keeps its reset base FFFF0000. The linear addresses of
/// the eight INCs are returned.
fn real_mode_rom(far: bool) -> (Vec<u8>, Vec<u32>) {
    use iced_x86::code_asm::*;
    let mut a = CodeAssembler::new(16).unwrap();
    a.mov(ax, 1).unwrap();
    for _ in 0..8 {
        a.inc(ax).unwrap();
    }
    a.mov(al, 7).unwrap();
    a.out(0xF4, al).unwrap();
    let code = a.assemble(0xE000).unwrap();
    let mut rom = vec![0x90u8; 0x10000];
    rom[0xE000..0xE000 + code.len()].copy_from_slice(&code);
    let base: u32 = if far {
        // JMP ptr16:16 (EA), which iced's assembler has no form for.
        rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0xE0, 0x00, 0xF0]);
        0xF_0000
    } else {
        let mut a = CodeAssembler::new(16).unwrap();
        a.jmp(0xE000u64).unwrap();
        let jmp = a.assemble(0xFFF0).unwrap();
        rom[0xFFF0..0xFFF0 + jmp.len()].copy_from_slice(&jmp);
        0xFFFF_0000
    };
    (rom, (0..8).map(|i| base + 0xE003 + i).collect())
}

/// A ROM booted at the reset vector in a debugger on `engine`.
fn rom_debugger(rom: &[u8], engine: &str) -> ringside_debugger::Debugger {
    use ringside_devices::pc::{build_pc, HostIo};
    let mut m = build_pc(&MachineConfig::default(), HostIo::discarded()).unwrap();
    ringside_core::boot::load_rom(&mut m, rom).unwrap();
    let f = common::factory();
    let e = f(engine).unwrap();
    ringside_debugger::Debugger::new(m, e, f)
}

#[test]
fn breakpoints_stop_in_a_real_mode_rom_at_linear_and_physical_addresses() {
    for engine in ["interp", "jit"] {
        for far in [true, false] {
            let (rom, incs) = real_mode_rom(far);
            let what = format!("{engine}, far jump {far}");
            let mut d = rom_debugger(&rom, engine);
            let linear = d.add_breakpoint(Address::Linear(incs[1]), None);
            // Unpaged: the physical address is the linear one.
            let physical = d.add_breakpoint(Address::Physical(incs[4]), None);
            assert_eq!(
                d.cont(|| false).unwrap(),
                StopCause::Breakpoint { id: linear },
                "{what}"
            );
            assert_eq!(d.main.machine.cpu.linear_eip(), incs[1], "{what}");
            assert_eq!(d.main.machine.cpu.eip, 0xE004, "{what}");
            assert_eq!(
                d.cont(|| false).unwrap(),
                StopCause::Breakpoint { id: physical },
                "{what}"
            );
            assert_eq!(d.main.machine.cpu.linear_eip(), incs[4], "{what}");
            assert_eq!(d.main.machine.cpu.gpr[0] & 0xFFFF, 5, "{what}: AX = 1 + 4");
            assert_eq!(
                d.cont(|| false).unwrap(),
                StopCause::Machine(StopReason::DebugExit(7)),
                "{what}"
            );
        }
    }
}
