//! What the instruction tests share: a flat protected-mode machine whose
//! IDT handlers record the vector they were entered through, and a small
//! assembler front.

#![allow(dead_code)] // each test file uses its own part of this

use iced_x86::code_asm::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::{reg, TableReg};
use ringside_core::{Machine, RunOutcome};
use ringside_interp::Interp;

pub const CODE: u32 = 0x10000;
pub const IDT: u32 = 0x1000;
pub const STACK: u32 = 0x9000;
/// Each vector's handler is `mov al, vector; hlt` at HANDLERS + 8 * vector.
pub const HANDLERS: u32 = 0x2000;

/// A flat protected-mode machine with an IDT whose handlers record the
/// vector in AL and halt, the snippet at CODE and ESP at STACK.
pub fn machine(code: &[u8]) -> Machine {
    let mut m = Machine::with_ram_mib(2).unwrap();
    enter_flat_protected_mode(&mut m, CODE);
    m.write_ram(CODE, code).unwrap();
    for v in 0..32u32 {
        let h = HANDLERS + 8 * v;
        m.write_ram(h, &[0xB0, v as u8, 0xF4]).unwrap();
        let gate =
            (h as u64 & 0xFFFF) | (0x08 << 16) | (0x8E00u64 << 32) | ((h as u64 >> 16) << 48);
        m.write_ram(IDT + 8 * v, &gate.to_le_bytes()).unwrap();
    }
    m.cpu.idtr = TableReg {
        base: IDT,
        limit: 32 * 8 - 1,
        _pad: 0,
    };
    m.cpu.gpr[reg::ESP] = STACK;
    m
}

pub fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE as u64).unwrap()
}

/// Run to the HLT (with interrupts off, the machine stops there).
pub fn run(m: &mut Machine) -> RunOutcome {
    m.run_until_stopped(&mut Interp::new(), Some(100_000))
        .unwrap()
}

/// The vector a test's handler recorded, if the run ended in a handler.
pub fn vector_taken(m: &Machine) -> Option<u8> {
    let eip = m.cpu.eip;
    (HANDLERS..HANDLERS + 8 * 32)
        .contains(&eip)
        .then(|| ((eip - HANDLERS) / 8) as u8)
}
