//! The interpreter as raw mode's substrate (docs/raw.md): it executes code
//! the monitor put in the hypervisor area, through the MMU's overlay, and
//! drops what it decoded there when the monitor rewrites it.

use ringside_core::cpu::reg;
use ringside_core::Machine;
use ringside_interp::Interp;

mod common;
use common::*;

const AREA: u32 = 0xFFC0_0000;

/// `mov eax, imm32; hlt`
fn set_eax_and_halt(v: u32) -> Vec<u8> {
    let mut code = vec![0xB8];
    code.extend_from_slice(&v.to_le_bytes());
    code.push(0xF4);
    code
}

fn run_at_area(m: &mut Machine, interp: &mut Interp) {
    m.cpu.eip = AREA;
    m.cpu.run.halted = false;
    m.run_until_stopped(interp, Some(1000)).unwrap();
}

#[test]
fn code_in_the_hypervisor_area_runs_and_a_monitor_rewrite_is_seen() {
    let mut m = machine(&[0xF4]);
    m.map_hypervisor_area(AREA).unwrap();
    let mut interp = Interp::new();
    m.write_monitor(0, &set_eax_and_halt(0x1234)).unwrap();
    run_at_area(&mut m, &mut interp);
    assert_eq!(m.cpu.gpr[reg::EAX], 0x1234);
    assert_eq!(m.cpu.eip, AREA + 6, "stopped after the HLT in the area");
    // The same interpreter, its decoded block cached: the monitor patches
    // the code and the next run executes the new bytes.
    m.write_monitor(0, &set_eax_and_halt(0x5678)).unwrap();
    run_at_area(&mut m, &mut interp);
    assert_eq!(m.cpu.gpr[reg::EAX], 0x5678);
}

#[test]
fn a_store_into_the_area_from_running_code_reaches_monitor_memory() {
    // mov dword [AREA + 0x100], 0xAABBCCDD; hlt
    let mut code = vec![0xC7, 0x05];
    code.extend_from_slice(&(AREA + 0x100).to_le_bytes());
    code.extend_from_slice(&0xAABB_CCDDu32.to_le_bytes());
    code.push(0xF4);
    let mut m = machine(&code);
    m.map_hypervisor_area(AREA).unwrap();
    run(&mut m);
    assert_eq!(
        &m.mem().monitor().unwrap()[0x100..0x104],
        &0xAABB_CCDDu32.to_le_bytes()
    );
}

#[test]
fn running_code_that_stores_into_decoded_area_code_runs_the_new_code() {
    // At AREA: mov byte [AREA + 0x11], 0x42 ; jmp AREA + 0x10
    // At AREA + 0x10: mov al, imm8 (imm8 = 0x11 before the store) ; hlt
    let mut m = machine(&[0xF4]);
    m.map_hypervisor_area(AREA).unwrap();
    let mut first = vec![0xC6, 0x05];
    first.extend_from_slice(&(AREA + 0x11).to_le_bytes());
    first.push(0x42);
    first.extend_from_slice(&[0xEB, 0x10 - 9]); // jmp short to AREA + 0x10
    m.write_monitor(0, &first).unwrap();
    m.write_monitor(0x10, &[0xB0, 0x11, 0xF4]).unwrap();
    let mut interp = Interp::new();
    // Decode and run the tail once, so its block is cached with 0x11.
    m.cpu.eip = AREA + 0x10;
    m.run_until_stopped(&mut interp, Some(100)).unwrap();
    assert_eq!(m.cpu.gpr[reg::EAX] & 0xFF, 0x11);
    run_at_area(&mut m, &mut interp);
    assert_eq!(
        m.cpu.gpr[reg::EAX] & 0xFF,
        0x42,
        "the store reached the decoded code"
    );
}
