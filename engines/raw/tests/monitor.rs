//! Ring compression on the interpreter substrate (docs/raw.md): `enter`
//! builds the shadow tables and the substrate view; the interpreter then
//! really runs the guest's kernel code at CPL 1 through them, and a
//! privileged instruction or an INT n lands in the monitor's stub for its
//! vector, at CPL 0, with the frame on the monitor's stack.

use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::{cr0, cr4, flags, reg, SegReg, Segment, TableReg};
use ringside_core::{Budget, Engine, Exit, Machine, StopReason};
use ringside_interp::Interp;
use ringside_raw::monitor::{
    cannot_run, enter, layout, leave, stub_entered, EnterError, DEFAULT_AREA, MONITOR_CS,
};

const CODE: u32 = 0x10000;
const IDT: u32 = 0x3000;
const PD: u32 = 0x1000;

/// A paged guest at CPL 0: the loader's flat GDT (0x08 code, 0x10 data),
/// the first 4 MiB identity-mapped by one 4 MiB page, an IDT whose gate
/// 0x80 has DPL 3, interrupts on, `code` at CODE.
fn guest(code: &[u8]) -> Machine {
    let mut m = Machine::with_ram_mib(8).unwrap();
    enter_flat_protected_mode(&mut m, CODE);
    m.write_ram(CODE, code).unwrap();
    m.write_ram(PD, &0x87u32.to_le_bytes()).unwrap();
    let gate = |dpl: u64| 0x0000_8E00_0008_2000u64 | dpl << 45;
    for v in 0..256u32 {
        let g = if v == 0x80 { gate(3) } else { gate(0) };
        m.write_ram(IDT + 8 * v, &g.to_le_bytes()).unwrap();
    }
    m.cpu.idtr = TableReg {
        base: IDT,
        limit: 256 * 8 - 1,
        _pad: 0,
    };
    m.cpu.cr3 = PD;
    m.cpu.cr4 |= cr4::PSE;
    m.cpu.cr0 |= cr0::PG;
    m.cpu.eflags |= flags::IF;
    m.cpu.gpr[reg::ESP] = 0x9000;
    m
}

/// Run the substrate until it stops; entering a monitor stub (through an
/// interrupt gate, so with IF = 0) halts it for good at CPL 0.
fn run_substrate(m: &mut Machine) -> Exit {
    Interp::new().run(m, Budget { instructions: 100 }).unwrap()
}

fn in_monitor(exit: Exit) -> bool {
    matches!(exit, Exit::Stopped(StopReason::DeadHalt { cs, .. }) if cs == MONITOR_CS)
}

#[test]
fn enter_then_leave_gives_back_the_guest_view_exactly() {
    let mut m = guest(&[0xF4]);
    let before = m.cpu.clone();
    let view = enter(&mut m, DEFAULT_AREA).unwrap();
    assert_ne!(m.cpu, before);
    leave(&mut m, &view);
    assert_eq!(m.cpu, before);
    assert_eq!(m.hypervisor_area(), None);
}

#[test]
fn the_substrate_view_is_ring_1_with_shadow_tables_if_on_and_iopl_0() {
    let mut m = guest(&[0xF4]);
    m.cpu.eflags = m.cpu.eflags & !flags::IF | flags::IOPL;
    let view = enter(&mut m, DEFAULT_AREA).unwrap();
    assert_eq!(m.cpu.cpl(), 1);
    assert_eq!(m.cpu.seg(SegReg::Cs).selector, 0x09);
    assert_eq!(m.cpu.seg(SegReg::Ss).selector, 0x11);
    assert_eq!(m.cpu.gdtr.base, DEFAULT_AREA + layout::GDT);
    assert_eq!(m.cpu.idtr.base, DEFAULT_AREA + layout::IDT);
    assert_eq!(m.cpu.eflags & (flags::IF | flags::IOPL), flags::IF);
    assert_eq!(
        view.eflags_if_iopl,
        flags::IOPL,
        "the guest's IF = 0, IOPL = 3"
    );
    // The guest reads its own tables through the shadow GDT's copy.
    let code = m
        .read_lin::<u64>(DEFAULT_AREA + layout::GDT + 8, false)
        .unwrap();
    assert_eq!((code >> 45) & 3, 1, "the kernel code descriptor is DPL 1");
}

#[test]
fn kernel_code_runs_at_cpl_1_until_a_privileged_instruction_enters_the_monitor() {
    // mov eax, [0x5000]; inc eax; mov [0x5000], eax; cli
    let code = [0xA1, 0x00, 0x50, 0, 0, 0x40, 0xA3, 0x00, 0x50, 0, 0, 0xFA];
    let mut m = guest(&code);
    m.write_ram(0x5000, &41u32.to_le_bytes()).unwrap();
    let view = enter(&mut m, DEFAULT_AREA).unwrap();
    let icount = m.clock.icount;
    assert!(in_monitor(run_substrate(&mut m)));
    assert_eq!(stub_entered(&m, &view), Some(13), "CLI at CPL 1 is #GP");
    assert_eq!(m.cpu.gpr[reg::EAX], 42);
    let mut v = [0u8; 4];
    m.mem().read_ram(0x5000, &mut v).unwrap();
    assert_eq!(u32::from_le_bytes(v), 42);
    assert_eq!(
        m.clock.icount - icount,
        4,
        "three guest instructions and the stub's HLT"
    );
    // The #GP frame on the monitor's ring-0 stack: error code, EIP of the
    // CLI, the compressed CS, EFLAGS, and the ring-1 SS:ESP.
    let top = DEFAULT_AREA + layout::STACK_TOP;
    let word = |m: &mut Machine, i: u32| m.read_lin::<u32>(top - 24 + 4 * i, false).unwrap();
    assert_eq!(word(&mut m, 1), CODE + 11, "EIP of the CLI");
    assert_eq!(word(&mut m, 2), 0x09);
    assert_eq!(word(&mut m, 5), 0x11, "the guest's stack, compressed");
    assert_eq!(m.cpu.seg(SegReg::Cs).selector, MONITOR_CS);
}

/// A guest at ring 3 about to run `int 0x80`, with a 32-bit TSS whose
/// ring-0 stack is 0x10:0x8000 when `tss` (else the reset TR, which
/// names no usable TSS).
fn user_guest_at_int_0x80(tss: bool) -> Machine {
    let mut m = guest(&[0xCD, 0x80]);
    let user = |sel: u16, ty: u32| Segment {
        selector: sel,
        _pad: 0,
        attr: 0xC0F0 | ty,
        base: 0,
        limit: 0xFFFF_FFFF,
    };
    m.cpu.seg[SegReg::Cs as usize] = user(0x1B, 0xB);
    m.cpu.seg[SegReg::Ss as usize] = user(0x23, 0x3);
    m.cpu.gpr[reg::ESP] = 0x7000;
    // The handler at the gate's target (0x2000): HLT.
    m.write_ram(0x2000, &[0xF4]).unwrap();
    if tss {
        let mut t = [0u8; 0x68];
        t[4..8].copy_from_slice(&0x8000u32.to_le_bytes());
        t[8..10].copy_from_slice(&0x10u16.to_le_bytes());
        m.write_ram(0x4000, &t).unwrap();
        m.cpu.tr = Segment {
            selector: 0x18,
            _pad: 0,
            attr: 0x8B,
            base: 0x4000,
            limit: 0x67,
        };
    } else {
        m.cpu.tr.attr = 0x83; // a 16-bit TSS: no direct system calls
    }
    m
}

#[test]
fn int_0x80_from_guest_ring_3_enters_the_guests_handler_at_ring_1_directly() {
    let mut m = user_guest_at_int_0x80(true);
    let view = enter(&mut m, DEFAULT_AREA).unwrap();
    assert_eq!(m.cpu.cpl(), 3, "ring 3 stays ring 3");
    // The handler's HLT faults at ring 1: that #GP is the first monitor
    // entry, so the INT went to the guest's handler without one.
    assert!(in_monitor(run_substrate(&mut m)));
    assert_eq!(stub_entered(&m, &view), Some(13));
    let top = DEFAULT_AREA + layout::STACK_TOP;
    let gp_eip = m.read_lin::<u32>(top - 20, false).unwrap();
    assert_eq!(gp_eip, 0x2000, "the #GP is the handler's HLT");
    // The INT's frame on the guest's ring-0 stack (the shadow TSS's
    // SS1:ESP1): EIP past the INT, the user CS, EFLAGS with the guest's
    // IF, the user SS:ESP.
    let frame: Vec<u32> = (0..5)
        .map(|i| {
            let mut b = [0u8; 4];
            m.mem().read_ram(0x8000 - 20 + 4 * i, &mut b).unwrap();
            u32::from_le_bytes(b)
        })
        .collect();
    assert_eq!(frame[0], CODE + 2);
    assert_eq!(frame[1], 0x1B);
    assert_ne!(frame[2] & flags::IF, 0);
    assert_eq!(frame[3], 0x7000);
    assert_eq!(frame[4], 0x23);
}

#[test]
fn without_a_32_bit_tss_int_0x80_from_ring_3_enters_the_monitor() {
    let mut m = user_guest_at_int_0x80(false);
    let view = enter(&mut m, DEFAULT_AREA).unwrap();
    assert!(in_monitor(run_substrate(&mut m)));
    assert_eq!(stub_entered(&m, &view), Some(0x80));
}

#[test]
fn a_guest_mapping_over_the_hypervisor_area_is_refused() {
    let mut m = guest(&[0xF4]);
    let pde = PD + 4 * (DEFAULT_AREA >> 22);
    m.write_ram(pde, &0x0040_0087u32.to_le_bytes()).unwrap();
    assert!(matches!(
        enter(&mut m, DEFAULT_AREA),
        Err(EnterError::AreaClash(DEFAULT_AREA))
    ));
    assert_eq!(m.hypervisor_area(), None);
}

#[test]
fn unpaged_and_real_mode_guests_are_left_to_the_fallback() {
    let mut m = guest(&[0xF4]);
    m.cpu.cr0 &= !cr0::PG;
    assert_eq!(cannot_run(&m), Some("unpaged"));
    assert!(matches!(
        enter(&mut m, DEFAULT_AREA),
        Err(EnterError::Mode("unpaged"))
    ));
}
