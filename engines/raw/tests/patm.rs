//! PATM's mechanisms, each against the interpreter alone (docs/raw.md,
//! "PATM"): a small paged guest runs at CPL 0 on raw mode and on the
//! interpreter from the same start, and must end with the same CPU state,
//! RAM and instruction count; the counters show the mechanism was used.

use iced_x86::code_asm::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::config::MachineConfig;
use ringside_core::cpu::{cr0, cr4, flags, reg, TableReg};
use ringside_core::{Budget, Engine, EngineStats, Exit, Machine};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_raw::Raw;

const PD: u32 = 0x1000;
const PT: u32 = 0x2000;
const IDT: u32 = 0x3000;
const CODE: u32 = 0x10000;
const DATA: u32 = 0x20000;
const STACK_TOP: u32 = 0x9000;
/// A page the guest maps only when it faults on it.
const LATE: u32 = 0x30000;

/// A PC (PIC and PIT included) with a paged guest at CPL 0: the first 4
/// MiB mapped by one page table, every page present but `LATE`'s, an IDT
/// whose gates all go to `handler` (or to `handlers[v]`), `code` at CODE.
fn guest(code: &[u8], handlers: &[(u8, u32)], default_handler: u32) -> Machine {
    let mut m = build_pc(
        &MachineConfig::default(),
        HostIo::com1_only(SharedBuffer::default()),
    )
    .unwrap();
    enter_flat_protected_mode(&mut m, CODE);
    m.write_ram(CODE, code).unwrap();
    m.write_ram(PD, &(PT | 7).to_le_bytes()).unwrap();
    for p in 0..1024u32 {
        let pte = if p << 12 == LATE { 0 } else { p << 12 | 7 };
        m.write_ram(PT + 4 * p, &pte.to_le_bytes()).unwrap();
    }
    for v in 0..256u32 {
        let target = handlers
            .iter()
            .find(|(n, _)| *n as u32 == v)
            .map_or(default_handler, |(_, t)| *t);
        let gate =
            0x0000_8E00_0008_0000u64 | (target as u64 & 0xFFFF) | ((target as u64) >> 16) << 48;
        m.write_ram(IDT + 8 * v, &gate.to_le_bytes()).unwrap();
    }
    m.cpu.idtr = TableReg {
        base: IDT,
        limit: 256 * 8 - 1,
        _pad: 0,
    };
    m.cpu.cr3 = PD;
    m.cpu.cr0 |= cr0::PG;
    m.cpu.cr4 &= !cr4::PSE;
    m.cpu.gpr[reg::ESP] = STACK_TOP;
    m
}

fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    f(&mut a).unwrap();
    a.assemble(CODE as u64).unwrap()
}

/// Run `m` to a halt (or `limit` instructions) on raw mode and a copy on
/// the interpreter; both must agree on everything. Returns raw's counters
/// and the machine.
fn same_as_interp(make: impl Fn() -> Machine, limit: u64) -> (EngineStats, Machine) {
    let mut want = make();
    let mut got = make();
    let want_exit = Interp::new()
        .run(
            &mut want,
            Budget {
                instructions: limit,
            },
        )
        .unwrap();
    let mut raw = Raw::new();
    let mut got_exit = Exit::BudgetSpent;
    while got.clock.icount < limit {
        let left = limit - got.clock.icount;
        got_exit = raw.run(&mut got, Budget { instructions: left }).unwrap();
        if got_exit != Exit::BudgetSpent {
            break;
        }
    }
    assert_eq!(got_exit, want_exit, "exit");
    assert_eq!(got.clock.icount, want.clock.icount, "instructions");
    assert_eq!(got.cpu, want.cpu, "CPU state");
    let diffs: Vec<(usize, u8, u8)> = got
        .mem()
        .ram_slice()
        .iter()
        .zip(want.mem().ram_slice())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .take(8)
        .collect();
    assert!(
        diffs.is_empty(),
        "RAM differs at (offset, raw, interp) {diffs:x?}"
    );
    (raw.stats(), got)
}

fn counter(s: &EngineStats, k: &str) -> u64 {
    s.counters.get(k).copied().unwrap_or(0)
}

#[test]
fn cli_sti_pushfd_and_popfd_are_patched_and_run_without_the_monitor() {
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 1000)?;
        a.set_label(&mut top)?;
        a.cli()?;
        a.pushfd()?;
        a.sti()?;
        a.popfd()?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.pushfd()?;
        a.pop(eax)?;
        a.hlt()
    });
    let make = || {
        let mut m = guest(&code, &[], CODE);
        m.cpu.eflags |= flags::IF;
        m
    };
    let (s, m) = same_as_interp(make, 1_000_000);
    assert_eq!(
        m.cpu.gpr[reg::EAX] & flags::IF,
        0,
        "the last POPFD restored IF = 0"
    );
    assert!(counter(&s, "patm_executions") >= 4000, "{s:?}");
    assert!(counter(&s, "monitor_entries") < 20, "{s:?}");
}

#[test]
fn patching_off_traps_every_cli_sti_pushfd_and_popfd() {
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 100)?;
        a.set_label(&mut top)?;
        a.cli()?;
        a.pushfd()?;
        a.sti()?;
        a.popfd()?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    let mut m2 = guest(&code, &[], CODE);
    let mut raw = Raw::with_patching(false);
    raw.run(
        &mut m2,
        Budget {
            instructions: 10_000,
        },
    )
    .unwrap();
    let s = raw.stats();
    assert!(counter(&s, "monitor_entries") >= 400, "{s:?}");
    assert_eq!(counter(&s, "patm_executions"), 0, "{s:?}");
}

/// What the guest reads back of its own state is its own: LAR and LSL of
/// its ring-0 selectors, SGDT, SIDT, PUSHFD's IF and IOPL, MOV from CS
/// and SS, SMSW.
#[test]
fn the_guest_reads_back_its_own_descriptors_tables_flags_and_selectors() {
    let code = assemble(|a| {
        a.mov(eax, 8)?;
        a.lar(ebx, eax)?;
        a.lsl(edx, eax)?;
        a.sgdt(dword_ptr(DATA))?;
        a.sidt(dword_ptr(DATA + 8))?;
        a.pushfd()?;
        a.pop(esi)?;
        a.mov(edi, 0)?;
        a.mov(di, cs)?;
        a.mov(ebp, 0)?;
        a.mov(bp, ss)?;
        a.smsw(word_ptr(DATA + 16))?;
        a.hlt()
    });
    let make = || {
        let mut m = guest(&code, &[], CODE);
        m.cpu.eflags |= flags::IF;
        m
    };
    let (_, m) = same_as_interp(make, 1000);
    let gdt_base = make().cpu.gdtr.base;
    assert_eq!((m.cpu.gpr[reg::EBX] >> 13) & 3, 0, "LAR: DPL 0");
    assert_eq!(m.cpu.gpr[reg::EDX], 0xFFFF_FFFF, "LSL: the flat limit");
    let mut gdtr = [0u8; 6];
    m.mem().read_ram(DATA, &mut gdtr).unwrap();
    assert_eq!(u32::from_le_bytes(gdtr[2..6].try_into().unwrap()), gdt_base);
    let mut idtr = [0u8; 6];
    m.mem().read_ram(DATA + 8, &mut idtr).unwrap();
    assert_eq!(u32::from_le_bytes(idtr[2..6].try_into().unwrap()), IDT);
    assert_eq!(m.cpu.gpr[reg::ESI] & (flags::IF | flags::IOPL), flags::IF);
    assert_eq!(m.cpu.gpr[reg::EDI], 0x08, "MOV from CS: RPL 0");
    assert_eq!(m.cpu.gpr[reg::EBP], 0x10, "MOV from SS: RPL 0");
}

/// `main` at CODE and the code `handler` assembles at `at` after it.
fn with_handler(
    mut main: Vec<u8>,
    at: u32,
    handler: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    handler(&mut a).unwrap();
    assert!(main.len() <= (at - CODE) as usize);
    main.resize((at - CODE) as usize, 0x90);
    main.extend(a.assemble(at as u64).unwrap());
    main
}

/// Where the tests' called function goes.
const FUNC: u32 = CODE + 0x400;

/// `main` at CODE and `func` at FUNC.
fn with_function(main: Vec<u8>, func: &[u8]) -> Vec<u8> {
    let mut code = main;
    assert!(code.len() <= (FUNC - CODE) as usize);
    code.resize((FUNC - CODE) as usize, 0x90);
    code.extend_from_slice(func);
    code
}

/// A store over a patched CLI removes its patch: the guest's new
/// instruction runs.
#[test]
fn a_guest_writing_over_a_patched_instruction_removes_the_patch() {
    let main = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 5)?;
        a.set_label(&mut top)?;
        a.mov(eax, FUNC)?;
        a.call(eax)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        // Overwrite the function's CLI with INC EBX (0x43), call it again.
        a.mov(byte_ptr(FUNC), 0x43)?;
        a.sti()?;
        a.mov(eax, FUNC)?;
        a.call(eax)?;
        a.hlt()
    });
    // CLI; RET
    let code = with_function(main, &[0xFA, 0xC3]);
    let make = || {
        let mut m = guest(&code, &[], CODE);
        m.cpu.gpr[reg::EBX] = 0;
        m
    };
    let (s, m) = same_as_interp(make, 10_000);
    assert_eq!(m.cpu.gpr[reg::EBX], 1, "the new instruction ran");
    assert_ne!(m.cpu.eflags & flags::IF, 0, "no CLI after the write");
    assert!(counter(&s, "patm_removed.dirty") >= 1, "{s:?}");
}

/// A jump patch's five bytes cover the guest's next instructions only for
/// a fetch that starts at the patched one: a jump into those bytes (into
/// the middle of where the patch's JMP would be on hardware) runs the
/// guest's own instructions.
#[test]
fn a_jump_into_the_bytes_a_jump_patch_covers_runs_the_guests_own_code() {
    let main = assemble(|a| {
        a.mov(ebx, 0)?;
        a.mov(eax, FUNC)?;
        a.call(eax)?;
        a.call(eax)?;
        // FUNC + 1: the INC after the CLI.
        a.mov(eax, FUNC + 1)?;
        a.call(eax)?;
        a.hlt()
    });
    // CLI; INC EBX; INC EBX; RET
    let code = with_function(main, &[0xFA, 0x43, 0x43, 0xC3]);
    let make = || {
        let mut m = guest(&code, &[], CODE);
        m.cpu.eflags |= flags::IF;
        m
    };
    let (s, m) = same_as_interp(make, 10_000);
    assert_eq!(m.cpu.gpr[reg::EBX], 6);
    assert!(counter(&s, "patm_executions") >= 2, "{s:?}");
}

/// POPFD with ESP at an unmapped page faults inside patch code; the
/// monitor maps the fault back to the POPFD: the guest's #PF handler sees
/// the POPFD's address, CR2 and error code, maps the page and returns, and
/// the POPFD then pops the image there.
#[test]
fn a_fault_in_patch_code_is_the_patched_instructions_fault() {
    let handler = CODE + 0x800;
    let code = {
        let main = assemble(|a| {
            let mut top = a.create_label();
            a.mov(ecx, 3)?;
            a.set_label(&mut top)?;
            a.pushfd()?;
            a.popfd()?;
            a.dec(ecx)?;
            a.jnz(top)?;
            // The top of the stack on the unmapped page (the fault's frame
            // goes below it, on a mapped one).
            a.mov(esp, LATE)?;
            a.popfd()?;
            a.pushfd()?;
            a.pop(eax)?;
            a.hlt()
        });
        with_handler(main, handler, |a| {
            a.mov(eax, dword_ptr(esp))?;
            a.mov(dword_ptr(DATA + 16), eax)?;
            a.mov(eax, dword_ptr(esp + 4))?;
            a.mov(dword_ptr(DATA + 8), eax)?;
            a.mov(eax, cr2)?;
            a.mov(dword_ptr(DATA + 12), eax)?;
            a.mov(dword_ptr(PT + 4 * (LATE >> 12)), LATE | 7)?;
            a.invlpg(dword_ptr(LATE))?;
            a.add(esp, 4)?;
            a.iretd()?;
            Ok(())
        })
    };
    let make = || {
        let mut m = guest(&code, &[(14, handler)], handler);
        m.write_ram(LATE, &(flags::IF | 2 | flags::CF).to_le_bytes())
            .unwrap();
        m
    };
    let (s, m) = same_as_interp(make, 10_000);
    let word = |at: u32| {
        let mut b = [0u8; 4];
        m.mem().read_ram(at, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    let mut at_eip = [0u8; 1];
    m.mem().read_ram(word(DATA + 8), &mut at_eip).unwrap();
    assert_eq!(at_eip[0], 0x9D, "the frame's EIP is the POPFD's");
    assert_eq!(word(DATA + 12), LATE, "CR2");
    assert_eq!(word(DATA + 16), 0, "error code: not present, read, CPL 0");
    assert_eq!(
        m.cpu.gpr[reg::EAX] & (flags::IF | flags::CF),
        flags::IF | flags::CF
    );
    assert!(counter(&s, "patm_faults") >= 1, "{s:?}");
}

/// CSAM scans a page when ring-0 code first runs there: code reached after
/// the guest's #PF handler maps a page is scanned then and its CLI patched.
#[test]
fn code_on_a_page_mapped_after_a_page_fault_is_scanned_and_patched() {
    let handler = CODE + 0x800;
    let code = {
        let main = assemble(|a| {
            a.mov(eax, LATE)?;
            a.call(eax)?;
            a.call(eax)?;
            a.hlt()
        });
        with_handler(main, handler, |a| {
            // Map LATE (PTE = LATE | 3), drop its TLB entry, return to the
            // faulting instruction.
            a.mov(dword_ptr(PT + 4 * (LATE >> 12)), LATE | 7)?;
            a.invlpg(dword_ptr(LATE))?;
            a.add(esp, 4)?;
            a.iretd()?;
            Ok(())
        })
    };
    let make = || {
        let mut m = guest(&code, &[(14, handler)], handler);
        m.cpu.eflags |= flags::IF;
        // At LATE: CLI; INC ESI; STI; RET.
        m.write_ram(LATE, &[0xFA, 0x46, 0xFB, 0xC3]).unwrap();
        m
    };
    let (s, m) = same_as_interp(make, 10_000);
    assert_eq!(m.cpu.gpr[reg::ESI], 2);
    assert!(counter(&s, "csam_unscanned_stops") >= 1, "{s:?}");
    assert!(counter(&s, "patm_installed.jump.cli") >= 1, "{s:?}");
    assert!(counter(&s, "patm_executions") >= 2, "{s:?}");
}

/// A POPFD of NT (or TF, or IOPL) is not the patch's fast path: it bails
/// to the monitor, which runs the guest's POPFD itself.
#[test]
fn a_popfd_the_patch_does_not_handle_bails_to_the_monitor() {
    let code = assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 3)?;
        a.set_label(&mut top)?;
        a.pushfd()?;
        a.popfd()?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.push(flags::NT | 2)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(eax)?;
        a.hlt()
    });
    let make = || guest(&code, &[], CODE);
    let (s, m) = same_as_interp(make, 10_000);
    assert_ne!(m.cpu.gpr[reg::EAX] & flags::NT, 0);
    assert!(counter(&s, "patm_bails") >= 1, "{s:?}");
}

/// The PIT's IRQ 0 interrupts a loop of patched CLI, STI, PUSHFD and
/// POPFD: stepping raw mode and the interpreter side by side, every
/// interrupt lands at the same instruction (after the instruction that
/// follows STI, never inside patch code), with the same state.
#[test]
fn interrupts_land_where_the_interpreter_takes_them_around_patched_instructions() {
    let handler = CODE + 0x800;
    let code = {
        let main = assemble(|a| {
            let mut top = a.create_label();
            // 8259A: vectors 0x20-0x27, IRQ 0 unmasked.
            for (port, v) in [
                (0x20u16, 0x11u8),
                (0x21, 0x20),
                (0x21, 0x04),
                (0x21, 0x01),
                (0x21, 0xFE),
                (0xA1, 0xFF),
            ] {
                a.mov(al, v as u32)?;
                a.out(port as u32, al)?;
            }
            // 8254 channel 0, rate generator, count 2.
            a.mov(al, 0x34)?;
            a.out(0x43, al)?;
            a.mov(al, 2)?;
            a.out(0x40, al)?;
            a.mov(al, 0)?;
            a.out(0x40, al)?;
            a.sti()?;
            a.set_label(&mut top)?;
            a.cli()?;
            a.inc(esi)?;
            a.sti()?;
            a.inc(edi)?;
            a.pushfd()?;
            a.cli()?;
            a.inc(ebp)?;
            a.popfd()?;
            a.jmp(top)
        });
        with_handler(main, handler, |a| {
            a.inc(dword_ptr(DATA))?;
            a.mov(eax, dword_ptr(esp))?;
            a.mov(dword_ptr(DATA + 4), eax)?;
            a.mov(al, 0x20)?;
            a.out(0x20, al)?;
            a.iretd()?;
            Ok(())
        })
    };
    let mut want = guest(&code, &[], handler);
    let mut got = guest(&code, &[], handler);
    let mut interp = Interp::new();
    let mut raw = Raw::new();
    for n in 0..60_000u32 {
        let a = raw.step(&mut got).unwrap();
        let b = interp.step(&mut want).unwrap();
        assert_eq!(a, b, "exit at step {n}");
        assert_eq!(got.clock.icount, want.clock.icount, "count at step {n}");
        assert_eq!(got.cpu, want.cpu, "CPU state at step {n}");
    }
    let mut irqs = [0u8; 4];
    got.mem().read_ram(DATA, &mut irqs).unwrap();
    let irqs = u32::from_le_bytes(irqs);
    assert!(irqs >= 20, "only {irqs} interrupts");
    let s = raw.stats();
    assert!(counter(&s, "patm_executions") >= 10_000, "{s:?}");
    assert_eq!(counter(&s, "external_interrupts") as u32, irqs, "{s:?}");
}

/// A paged kernel at ring 0 IRETs into a virtual-8086 task; raw mode
/// cannot run v86, so the interpreter runs it; the task's INT faults (#GP,
/// IOPL 0) into the kernel's handler, a loop at ring 0 that raw mode runs
/// again. The whole run ends as on the interpreter alone.
#[test]
fn a_v86_task_is_handed_to_the_interpreter_and_the_kernel_comes_back_to_raw() {
    let handler = CODE + 0x800;
    let code = {
        let mut main = assemble(|a| {
            // The IRET frame into v86: GS, FS, DS, ES, SS, ESP, EFLAGS (VM),
            // CS, EIP.
            for v in [0u32, 0, 0, 0, 0x2000, 0xFFF0, flags::VM | 2, 0x1000, 0x0100] {
                a.push(v)?;
            }
            a.iretd()
        });
        main.resize(0x100, 0x90);
        // At 1000:0100 (linear 0x10100): MOV AX,1234h; INC AX; INT 30h.
        main.extend_from_slice(&[0xB8, 0x34, 0x12, 0x40, 0xCD, 0x30]);
        with_handler(main, handler, |a| {
            let mut top = a.create_label();
            a.mov(ebx, dword_ptr(esp + 4))?;
            a.mov(ecx, 1000)?;
            a.set_label(&mut top)?;
            a.inc(esi)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()?;
            Ok(())
        })
    };
    let make = || {
        let mut m = guest(&code, &[], handler);
        // A GDT with a TSS (ring-0 stack 0x10:0x8000) for the v86 exit.
        let gdt: [u64; 4] = [
            0,
            0x00CF_9A00_0000_FFFF,
            0x00CF_9200_0000_FFFF,
            0x0000_8B00_4000_0067,
        ];
        for (i, d) in gdt.iter().enumerate() {
            m.write_ram(0x5000 + 8 * i as u32, &d.to_le_bytes())
                .unwrap();
        }
        let mut tss = [0u8; 0x68];
        tss[4..8].copy_from_slice(&0x8000u32.to_le_bytes());
        tss[8..10].copy_from_slice(&0x10u16.to_le_bytes());
        m.write_ram(0x4000, &tss).unwrap();
        m.cpu.gdtr = TableReg {
            base: 0x5000,
            limit: 31,
            _pad: 0,
        };
        m.cpu.tr = ringside_core::cpu::Segment {
            selector: 0x18,
            _pad: 0,
            attr: 0x8B,
            base: 0x4000,
            limit: 0x67,
        };
        m
    };
    let (s, m) = same_as_interp(make, 100_000);
    assert_eq!(
        m.cpu.gpr[reg::EAX] & 0xFFFF,
        0x1235,
        "the v86 code ran: {:x?}",
        m.cpu.gpr
    );
    assert_eq!(m.cpu.gpr[reg::EBX], 0x0104, "the #GP was the INT's");
    assert_eq!(m.cpu.gpr[reg::ESI], 1000);
    assert!(counter(&s, "fallback_instructions") >= 3, "{s:?}");
    assert!(
        counter(&s, "substrate_instructions") >= 1500,
        "the handler's loop ran on raw again: {s:?}"
    );
}
