//! Instruction behaviours the 286 real-mode conformance set cannot reach:
//! 32-bit forms, the 486/Pentium/P6 additions, and the rules of precise
//! exceptions, the interrupt shadow, single-stepping and LOCK. Each test
//! assembles a snippet with iced-x86, runs it in flat 32-bit protected
//! mode and checks the architectural result.

use iced_x86::code_asm::*;
use ringside_core::cpu::flags::{CF, IF, OF, RF, TF, ZF};
use ringside_core::cpu::segments::Descriptor;
use ringside_core::cpu::{cr0, reg, vector};
use ringside_core::{Engine, Exit, Machine, RunOutcome, StopReason};
use ringside_interp::Interp;

mod common;
use common::*;

#[test]
fn bswap_reverses_byte_order() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.bswap(eax)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX], 0x4433_2211);
}

#[test]
fn cmpxchg_stores_on_match_and_loads_accumulator_otherwise() {
    let mut m = machine(&assemble(|a| {
        a.mov(dword_ptr(0x5000), 7u32)?;
        a.mov(eax, 7u32)?;
        a.mov(ecx, 9u32)?;
        a.cmpxchg(dword_ptr(0x5000), ecx)?;
        a.setz(bl)?;
        a.mov(eax, 1u32)?;
        a.cmpxchg(dword_ptr(0x5000), ecx)?;
        a.setz(bh)
    }));
    run(&mut m);
    let mut word = [0u8; 4];
    m.mem().read_ram(0x5000, &mut word).unwrap();
    assert_eq!(u32::from_le_bytes(word), 9);
    assert_eq!(
        m.cpu.gpr[reg::EBX] & 0xFFFF,
        0x0001,
        "ZF set on match, clear on mismatch"
    );
    assert_eq!(
        m.cpu.gpr[reg::EAX],
        9,
        "the mismatch loads the destination into EAX"
    );
}

#[test]
fn xadd_exchanges_and_adds() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 5u32)?;
        a.mov(ebx, 10u32)?;
        a.xadd(eax, ebx)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX], 15);
    assert_eq!(m.cpu.gpr[reg::EBX], 5);
}

#[test]
fn cmpxchg8b_compares_edx_eax_with_memory() {
    let mut m = machine(&assemble(|a| {
        a.mov(dword_ptr(0x5000), 1u32)?;
        a.mov(dword_ptr(0x5004), 2u32)?;
        a.mov(eax, 1u32)?;
        a.mov(edx, 2u32)?;
        a.mov(ebx, 0xAAu32)?;
        a.mov(ecx, 0xBBu32)?;
        a.cmpxchg8b(qword_ptr(0x5000))
    }));
    run(&mut m);
    let mut q = [0u8; 8];
    m.mem().read_ram(0x5000, &mut q).unwrap();
    assert_eq!(u64::from_le_bytes(q), 0xBB_0000_00AA);
    assert_ne!(m.cpu.eflags & ZF, 0);
}

#[test]
fn cmov_moves_only_when_the_condition_holds() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 1u32)?;
        a.mov(ebx, 2u32)?;
        a.mov(ecx, 3u32)?;
        a.cmp(eax, eax)?;
        a.cmove(ebx, ecx)?;
        a.cmovne(eax, ecx)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EBX], 3);
    assert_eq!(m.cpu.gpr[reg::EAX], 1);
}

#[test]
fn shld_and_shrd_shift_in_bits_from_the_source() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 0x8000_0001u32)?;
        a.mov(ebx, 0xF000_0000u32)?;
        a.shld(eax, ebx, 4)?;
        a.mov(ecx, 0x0000_000Fu32)?;
        a.mov(edx, 0x1234_5678u32)?;
        a.shrd(edx, ecx, 8)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX], 0x0000_001F);
    assert_eq!(m.cpu.gpr[reg::EDX], 0x0F12_3456);
}

#[test]
fn bt_with_register_offset_addresses_a_bit_string_beyond_the_operand() {
    let mut m = machine(&assemble(|a| {
        a.mov(dword_ptr(0x5004), 0x0000_0002u32)?;
        a.mov(eax, 33u32)?;
        a.bts(dword_ptr(0x5000), eax)?;
        a.setc(bl)
    }));
    run(&mut m);
    assert_eq!(
        m.cpu.gpr[reg::EBX] & 0xFF,
        1,
        "bit 33 = bit 1 of the next dword was set"
    );
    let mut d = [0u8; 4];
    m.mem().read_ram(0x5004, &mut d).unwrap();
    assert_eq!(u32::from_le_bytes(d), 0x2);
    let mut m = machine(&assemble(|a| {
        a.mov(eax, -1i32 as u32)?;
        a.mov(dword_ptr(0x4FFC), 0x8000_0000u32)?;
        a.bt(dword_ptr(0x5000), eax)
    }));
    run(&mut m);
    assert_ne!(m.cpu.eflags & CF, 0, "bit -1 is bit 31 of the dword below");
}

#[test]
fn bsf_of_zero_sets_zf_and_keeps_the_destination() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 0x55u32)?;
        a.xor(ebx, ebx)?;
        a.bsf(eax, ebx)?;
        a.setz(cl)?;
        a.mov(ebx, 0x0010_0000u32)?;
        a.bsr(edx, ebx)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX], 0x55);
    assert_eq!(m.cpu.gpr[reg::ECX] & 0xFF, 1);
    assert_eq!(m.cpu.gpr[reg::EDX], 20);
}

#[test]
fn three_operand_imul_sets_overflow_on_truncation() {
    let mut m = machine(&assemble(|a| {
        a.mov(ebx, 0x4000_0000u32)?;
        a.imul_3(eax, ebx, 4)
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX], 0);
    assert_eq!(m.cpu.eflags & (CF | OF), CF | OF);
}

#[test]
fn divide_overflow_raises_de_and_commits_nothing() {
    let mut m = machine(&assemble(|a| {
        a.mov(edx, 5u32)?;
        a.mov(eax, 0u32)?;
        a.mov(ecx, 2u32)?;
        a.div(ecx)
    }));
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::DE));
    assert_eq!(m.cpu.gpr[reg::EDX], 5, "EDX unchanged by the faulting DIV");
}

/// The EFLAGS image a fault pushes has RF set; a software interrupt's and
/// a trap's do not (SDM Vol. 3A 17.3.1.1). Found by the interp/kvm
/// differential test.
#[test]
fn a_fault_pushes_rf_and_a_software_interrupt_does_not() {
    let frame_eflags = |m: &mut Machine| {
        let top = m.cpu.gpr[reg::ESP];
        m.read_lin::<u32>(top + 8, false).unwrap()
    };
    let mut m = machine(&assemble(|a| {
        a.mov(ecx, 0u32)?;
        a.div(ecx)
    }));
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::DE));
    assert_ne!(
        frame_eflags(&mut m) & RF,
        0,
        "#DE is a fault: RF pushed as 1"
    );
    assert_eq!(m.cpu.eflags & RF, 0, "delivery clears RF");

    let mut m = machine(&assemble(|a| a.int(5)));
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(5));
    assert_eq!(frame_eflags(&mut m) & RF, 0, "INT n pushes RF as 0");
}

#[test]
fn faulting_push_commits_nothing() {
    // SS becomes a 4 KiB expand-up segment, so a push at ESP = 0x2000 is
    // outside its limit: #SS. Delivering it needs the same stack, so it
    // escalates to #DF and then a shutdown; through all of it neither ESP
    // nor memory may change.
    let mut m = machine(&assemble(|a| {
        a.mov(esp, 0x2000u32)?;
        a.mov(eax, 0xDEAD_BEEFu32)?;
        a.push(eax)
    }));
    let small = Descriptor(0x0040_9300_0000_0FFF);
    m.cpu.seg[2] = small.to_segment(0x10);
    let out = run(&mut m);
    assert!(
        matches!(out, RunOutcome::Stopped(StopReason::TripleFault { .. })),
        "{out:?}"
    );
    assert_eq!(m.cpu.gpr[reg::ESP], 0x2000);
    let mut d = [0u8; 4];
    m.mem().read_ram(0x1FFC, &mut d).unwrap();
    assert_eq!(u32::from_le_bytes(d), 0);
}

#[test]
fn lock_on_a_register_destination_is_undefined_opcode() {
    // lock add eax, ebx
    let mut m = machine(&[0xF0, 0x01, 0xD8, 0xF4]);
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::UD));
}

#[test]
fn lock_on_a_memory_destination_is_allowed() {
    // lock inc dword [0x5000]; hlt
    let mut m = machine(&[0xF0, 0xFF, 0x05, 0x00, 0x50, 0x00, 0x00, 0xF4]);
    run(&mut m);
    assert_eq!(vector_taken(&m), None);
    let mut d = [0u8; 4];
    m.mem().read_ram(0x5000, &mut d).unwrap();
    assert_eq!(u32::from_le_bytes(d), 1);
}

#[test]
fn instruction_longer_than_15_bytes_raises_gp() {
    let mut code = vec![0x66u8; 14];
    code.extend_from_slice(&[0xB8, 1, 2, 3, 4, 0xF4]);
    let mut m = machine(&code);
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::GP));
}

#[test]
fn x87_escape_raises_nm_when_cr0_ts_is_set() {
    let mut m = machine(&[0xDB, 0xE3, 0xF4]); // fninit
    m.cpu.cr0 |= cr0::TS;
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::NM));
}

#[test]
fn no_coprocessor_probe_finds_no_fpu() {
    // mov word [0x5000], 0x5A5A; fninit; fnstsw [0x5000]; hlt
    let mut m = machine(&assemble(|a| {
        a.mov(word_ptr(0x5000), 0x5A5Au32)?;
        a.fninit()?;
        a.fnstsw(word_ptr(0x5000))
    }));
    run(&mut m);
    assert_eq!(vector_taken(&m), None);
    let mut w = [0u8; 2];
    m.mem().read_ram(0x5000, &mut w).unwrap();
    assert_eq!(u16::from_le_bytes(w), 0x5A5A, "no coprocessor answered");
}

#[test]
fn cpuid_reports_no_fpu_and_the_implemented_features() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 1u32)?;
        a.cpuid()
    }));
    run(&mut m);
    let features = m.cpu.gpr[reg::EDX];
    assert_eq!(features & 1, 0, "no FPU");
    assert_ne!(features & (1 << 15), 0, "CMOV");
    assert_ne!(features & (1 << 8), 0, "CMPXCHG8B");
    assert_eq!(features & (1 << 23), 0, "no MMX");
}

#[test]
fn cpuid_subleaf_in_ecx_selects_the_cache_of_leaf_4() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 4u32)?;
        a.mov(ecx, 2u32)?;
        a.cpuid()
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX] & 0xFF, 0x43, "unified level-2 cache");
}

#[test]
fn rdpmc_reads_a_counter_of_retired_instructions() {
    // PERFEVTSEL0 = instructions retired, USR | OS | EN; then count.
    let mut m = machine(&assemble(|a| {
        a.mov(ecx, 0x186u32)?;
        a.mov(eax, 0x43_00C0u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.xor(ecx, ecx)?;
        a.rdpmc()?;
        a.mov(ebx, eax)?;
        a.nop()?;
        a.nop()?;
        a.rdpmc()
    }));
    run(&mut m);
    assert_eq!(vector_taken(&m), None);
    assert_eq!(m.cpu.gpr[reg::EAX] - m.cpu.gpr[reg::EBX], 4);
}

#[test]
fn rdtsc_counts_retired_instructions() {
    let mut m = machine(&assemble(|a| {
        a.rdtsc()?;
        a.mov(ebx, eax)?;
        a.nop()?;
        a.nop()?;
        a.rdtsc()
    }));
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX] - m.cpu.gpr[reg::EBX], 4);
}

#[test]
fn sti_holds_off_single_step_and_interrupts_for_one_instruction() {
    let mut m = machine(&assemble(|a| {
        a.sti()?;
        a.nop()
    }));
    let mut engine = Interp::new();
    engine.step(&mut m).unwrap();
    assert!(m.cpu.run.interrupt_shadow);
    assert_ne!(m.cpu.eflags & IF, 0);
    engine.step(&mut m).unwrap();
    assert!(!m.cpu.run.interrupt_shadow);
}

#[test]
fn trap_flag_raises_debug_trap_after_the_next_instruction() {
    let mut m = machine(&assemble(|a| {
        a.pushfd()?;
        a.or(dword_ptr(esp), TF)?;
        a.popfd()?;
        a.mov(ecx, 0x1234u32)?;
        a.mov(edx, 0x5678u32)
    }));
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::DB));
    assert_eq!(
        m.cpu.gpr[reg::ECX],
        0x1234,
        "the instruction after POPF retired first"
    );
    assert_eq!(
        m.cpu.gpr[reg::EDX],
        0,
        "the trap came before the second one"
    );
    assert_ne!(m.cpu.dr[6] & (1 << 14), 0, "DR6.BS");
}

#[test]
fn execution_breakpoint_faults_before_the_instruction() {
    let code = assemble(|a| {
        a.mov(ecx, 1u32)?;
        a.mov(edx, 2u32)
    });
    let mut m = machine(&code);
    m.cpu.dr[0] = CODE + 5; // the second MOV
    m.cpu.dr[7] = 0x401; // L0, execute
    run(&mut m);
    assert_eq!(vector_taken(&m), Some(vector::DB));
    assert_eq!(m.cpu.gpr[reg::ECX], 1);
    assert_eq!(m.cpu.gpr[reg::EDX], 0);
    assert_eq!(m.cpu.dr[6] & 0xF, 1);
}

#[test]
fn hlt_at_cpl0_with_interrupts_off_stops_the_machine_after_it() {
    let mut m = machine(&assemble(|a| a.cli()));
    match run(&mut m) {
        RunOutcome::Stopped(StopReason::DeadHalt { cs: sel, eip: at }) => {
            assert_eq!(sel, 0x08);
            assert_eq!(at, CODE + 2);
        }
        other => panic!("expected a dead halt, got {other:?}"),
    }
}

#[test]
fn triple_fault_shuts_the_machine_down() {
    let mut m = machine(&[0x0F, 0x0B]); // ud2
    m.cpu.idtr.limit = 0; // no usable IDT: #UD -> #GP -> #DF -> shutdown
    let out = run(&mut m);
    assert!(
        matches!(out, RunOutcome::Stopped(StopReason::TripleFault { .. })),
        "{out:?}"
    );
}

#[test]
fn self_modifying_store_into_the_next_instruction_is_seen() {
    // mov byte [next+1], 0x42 ; next: mov al, 0x00 ; hlt
    let next = CODE + 7;
    let mut code = vec![0xC6, 0x05];
    code.extend_from_slice(&(next + 1).to_le_bytes());
    code.push(0x42);
    code.extend_from_slice(&[0xB0, 0x00, 0xF4]);
    let mut m = machine(&code);
    run(&mut m);
    assert_eq!(m.cpu.gpr[reg::EAX] & 0xFF, 0x42);
}

#[test]
fn step_retires_exactly_one_instruction() {
    let mut m = machine(&assemble(|a| {
        a.mov(eax, 1u32)?;
        a.mov(ebx, 2u32)
    }));
    let mut engine = Interp::new();
    assert_eq!(engine.step(&mut m).unwrap(), Exit::BudgetSpent);
    assert_eq!(m.clock.icount, 1);
    assert_eq!(m.cpu.gpr[reg::EAX], 1);
    assert_eq!(m.cpu.gpr[reg::EBX], 0);
}

#[test]
fn intercepted_exception_returns_to_the_caller_undelivered() {
    let mut m = machine(&[0x0F, 0x0B]); // ud2
    m.event_policy.redirect_exceptions(1 << vector::UD);
    let out = run(&mut m);
    assert!(
        matches!(out, RunOutcome::Event(e) if e.event.vector == vector::UD && e.return_eip == CODE),
        "{out:?}"
    );
    assert_eq!(
        m.cpu.eip, CODE,
        "EIP still points at the faulting instruction"
    );
    assert_eq!(m.cpu.gpr[reg::ESP], STACK, "nothing was pushed");
}

#[test]
fn rep_movs_over_overlapping_ranges_moves_element_by_element() {
    // dst = src + 1: each doubleword is read whole before it is written,
    // so the copy is not the byte-smearing of a byte-wise memmove.
    let code = assemble(|a| {
        a.mov(esi, 0x5000u32)?;
        a.mov(edi, 0x5001u32)?;
        a.mov(ecx, 2u32)?;
        a.rep().movsd()
    });
    let mut m = machine(&code);
    m.write_ram(0x5000, b"ABCDEFGHI").unwrap();
    run(&mut m);
    let mut got = [0u8; 9];
    m.mem().read_ram(0x5000, &mut got).unwrap();
    assert_eq!(&got, b"AABCDDFGH");
    assert_eq!(m.cpu.gpr[reg::ECX], 0);
    assert_eq!(m.cpu.gpr[reg::ESI], 0x5008);
    assert_eq!(m.cpu.gpr[reg::EDI], 0x5009);
}

#[test]
fn rep_stos_across_a_page_boundary_fills_both_pages() {
    let code = assemble(|a| {
        a.mov(edi, 0x5FF0u32)?;
        a.mov(ecx, 0x20u32)?;
        a.mov(al, 0x5Au32)?;
        a.rep().stosb()
    });
    let mut m = machine(&code);
    run(&mut m);
    let mut got = [0u8; 0x22];
    m.mem().read_ram(0x5FEF, &mut got).unwrap();
    assert_eq!(got[0], 0, "before the range");
    assert!(got[1..0x21].iter().all(|&b| b == 0x5A));
    assert_eq!(got[0x21], 0, "after the range");
    assert_eq!(m.cpu.gpr[reg::EDI], 0x6010);
}

/// The snippet's machine with a GDT at 0x3000 holding flat 32-bit code
/// (0x08) and data (0x10) and a 16-bit data segment (0x18: base 0, limit
/// 0xFFFF, B = 0), which is SS unless `stack32`.
fn machine_with_stack(code: &[u8], stack32: bool) -> Machine {
    let mut m = machine(code);
    let gdt: [u64; 4] = [
        0,
        0x00CF_9B00_0000_FFFF,
        0x00CF_9300_0000_FFFF,
        0x0000_9300_0000_FFFF,
    ];
    for (n, d) in gdt.iter().enumerate() {
        m.write_ram(0x3000 + 8 * n as u32, &d.to_le_bytes())
            .unwrap();
    }
    m.cpu.gdtr = ringside_core::cpu::TableReg {
        base: 0x3000,
        limit: 31,
        _pad: 0,
    };
    if !stack32 {
        m.cpu.seg[2] = Descriptor(gdt[3]).to_segment(0x18);
    }
    m
}

/// The pop uses the old stack's size (SDM Vol. 2B POP): from a 16-bit
/// stack, SP wraps at 64 KiB and ESP's upper half stays, even though the
/// new SS is a 32-bit stack.
#[test]
fn pop_ss_to_a_32_bit_stack_pops_with_the_old_16_bit_stack_pointer() {
    let mut m = machine_with_stack(&[0x17, 0xF4], false); // pop ss (o32); hlt
    m.cpu.gpr[reg::ESP] = 0x0002_FFFC;
    m.write_ram(0xFFFC, &0x10u32.to_le_bytes()).unwrap();
    run(&mut m);
    assert_eq!(m.cpu.seg[2].selector, 0x10);
    assert_eq!(
        m.cpu.gpr[reg::ESP],
        0x0002_0000,
        "SP wrapped, upper half kept"
    );
}

#[test]
fn pop_ss_to_a_16_bit_stack_pops_with_the_old_32_bit_stack_pointer() {
    let mut m = machine_with_stack(&[0x66, 0x17, 0xF4], true); // pop ss (o16); hlt
    m.cpu.gpr[reg::ESP] = 0x0001_FFFE;
    m.write_ram(0x1_FFFE, &0x18u16.to_le_bytes()).unwrap();
    run(&mut m);
    assert_eq!(m.cpu.seg[2].selector, 0x18);
    assert!(!m.cpu.seg[2].is_big());
    assert_eq!(m.cpu.gpr[reg::ESP], 0x0002_0000, "all of ESP moved");
}

#[test]
fn pop_ds_on_a_16_bit_stack_wraps_sp_at_64_kib() {
    let mut m = machine_with_stack(&[0x1F, 0xF4], false); // pop ds (o32); hlt
    m.cpu.gpr[reg::ESP] = 0x1234_FFFC;
    m.write_ram(0xFFFC, &0x10u32.to_le_bytes()).unwrap();
    run(&mut m);
    assert_eq!(m.cpu.seg[3].selector, 0x10);
    assert_eq!(m.cpu.gpr[reg::ESP], 0x1234_0000);
}

/// Every PUSH and POP of a segment register, with 16- and 32-bit operand
/// size, on 16- and 32-bit stacks, at the 64 KiB wrap: ESP moves by the
/// operand size as the stack in force says, and a push stores the 16-bit
/// selector (a P6 writes two bytes for a 32-bit push of a segment
/// register, SDM Vol. 2B PUSH).
#[test]
fn push_and_pop_of_every_segment_register_at_the_stack_wrap() {
    // (opcode bytes, segment register index) for ES, CS, SS, DS, FS, GS.
    let pushes: [(&[u8], usize); 6] = [
        (&[0x06], 0),
        (&[0x0E], 1),
        (&[0x16], 2),
        (&[0x1E], 3),
        (&[0x0F, 0xA0], 4),
        (&[0x0F, 0xA8], 5),
    ];
    let pops: [(&[u8], usize); 4] = [
        (&[0x07], 0),
        (&[0x1F], 3),
        (&[0x0F, 0xA1], 4),
        (&[0x0F, 0xA9], 5),
    ];
    for stack32 in [false, true] {
        for o32 in [false, true] {
            let size = if o32 { 4 } else { 2 };
            // 16-bit stack: SP at 0 wraps to the top of the segment; 32-bit
            // stack: ESP at 0x20000 moves below it.
            let (sp0, top) = if stack32 {
                (0x0002_0000u32, 0x0002_0000u32)
            } else {
                (0x1234_0000, 0x1_0000)
            };
            let prefix: &[u8] = if o32 { &[] } else { &[0x66] };
            for &(op, s) in &pushes {
                let mut code = prefix.to_vec();
                code.extend_from_slice(op);
                code.push(0xF4);
                let mut m = machine_with_stack(&code, stack32);
                m.cpu.gpr[reg::ESP] = sp0;
                m.write_ram(top - 4, &[0xEE; 4]).unwrap();
                run(&mut m);
                let sel = m.cpu.seg[s].selector;
                let expected = if stack32 {
                    sp0 - size
                } else {
                    (sp0 & 0xFFFF_0000) | (0x1_0000 - size)
                };
                let what = format!("push sreg {s}, o32 {o32}, stack32 {stack32}");
                assert_eq!(m.cpu.gpr[reg::ESP], expected, "{what}");
                let mut word = [0u8; 4];
                m.mem().read_ram(top - 4, &mut word).unwrap();
                let at = (4 - size) as usize;
                assert_eq!(&word[at..at + 2], &sel.to_le_bytes(), "{what}");
                if o32 {
                    assert_eq!(&word[2..], &[0xEE, 0xEE], "{what}: two bytes written");
                }
            }
            for &(op, s) in &pops {
                let mut code = prefix.to_vec();
                code.extend_from_slice(op);
                code.push(0xF4);
                let mut m = machine_with_stack(&code, stack32);
                let start = if stack32 {
                    sp0 - size
                } else {
                    (sp0 & 0xFFFF_0000) | (0x1_0000 - size)
                };
                m.cpu.gpr[reg::ESP] = start;
                m.write_ram(top - size, &0x10u32.to_le_bytes()[..size as usize])
                    .unwrap();
                run(&mut m);
                let what = format!("pop sreg {s}, o32 {o32}, stack32 {stack32}");
                assert_eq!(m.cpu.seg[s].selector, 0x10, "{what}");
                assert_eq!(
                    m.cpu.gpr[reg::ESP],
                    sp0,
                    "{what}: back where the push began"
                );
            }
        }
    }
}
