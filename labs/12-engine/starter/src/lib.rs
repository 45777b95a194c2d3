//! Lab 12: an engine of your own (the book's chapter "Lab 12: write an
//! engine").
//!
//! `Mine` implements ringside's `Engine` trait (the book's chapter "The
//! machine model": the engine contract). It runs a small subset of IA-32
//! itself — register moves, arithmetic and logic, jumps — and leaves
//! everything else to the reference interpreter, one instruction at a
//! time. Both work on the same `Machine`: the state is the machine's, an
//! engine keeps only counters, so either can run the next instruction.
//!
//! What is given: the engine's frame (`run`, `step`, `stats`) and
//! [`next_plain_instruction`], which says when the boundary before an
//! instruction needs nothing from core (no interrupt, timer, trap or
//! breakpoint due; see its comment) and decodes the instruction. What
//! you write: [`execute`] (TODO lab 12).

use iced_x86::{Decoder, DecoderOptions, Instruction};
use ringside_core::cpu::flags::{RF, TF, VM};
use ringside_core::cpu::{cr0, SegReg};
use ringside_core::{run_by_steps, Budget, Engine, EngineError, EngineStats, Exit, Machine};
use ringside_interp::Interp;

/// The engine: its own instructions, and the interpreter for the rest.
#[derive(Default)]
pub struct Mine {
    fallback: Interp,
    /// Instructions this engine ran itself.
    own: u64,
    /// Steps it left to the interpreter.
    fallback_steps: u64,
}

impl Mine {
    pub fn new() -> Mine {
        Mine::default()
    }
}

impl Engine for Mine {
    fn name(&self) -> &'static str {
        "mine"
    }

    /// One step at a time (core's `run_by_steps`).
    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        run_by_steps(m, budget, |m| self.step(m))
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        if let Some(insn) = next_plain_instruction(m) {
            if let Some(next_eip) = execute(m, &insn) {
                // The instruction retired: EIP moves on, and virtual time
                // with the instruction count.
                m.cpu.eip = next_eip;
                m.clock.icount += 1;
                self.own += 1;
                return Ok(Exit::BudgetSpent);
            }
        }
        self.fallback_steps += 1;
        self.fallback.step(m)
    }

    fn stats(&self) -> EngineStats {
        let mut s = self.fallback.stats();
        s.instructions += self.own;
        s.counters.insert("own_instructions", self.own);
        s.counters.insert("fallback_steps", self.fallback_steps);
        s
    }
}

/// Given: the instruction at CS:EIP, decoded, when the boundary before
/// it is *plain*: nothing is due there that core's boundary code must do
/// (the interpreter's `step` does it: interrupts, timers, traps), and
/// the instruction can be fetched with nothing but a read. Otherwise
/// None, and the interpreter takes the step.
///
/// Plain means: no pending work and no device deadline reached (virtual
/// time is not yet at the bus's next deadline: a timer, and the
/// interrupt it may raise, would come first: DESIGN.md section 4); not
/// halted; no interrupt shadow (MOV SS, STI), no single-step (TF) or
/// resume flag (RF), no debug-register breakpoints or debugger
/// breakpoints (their traps come after the instruction, SDM Vol. 3A
/// 17.3); protected mode, not virtual-8086, with a flat 32-bit code
/// segment (so no segment limit can fault); and with paging on, the
/// instruction's bytes on pages the TLB already holds for this
/// privilege (a fetch that walked the page tables could fault, and
/// would set their accessed bits, SDM Vol. 3A 4.8, which a read does
/// not; the interpreter's fetch fills the TLB, so the next time
/// through, the page is there).
pub fn next_plain_instruction(m: &mut Machine) -> Option<Instruction> {
    let cpu = &m.cpu;
    let cs = cpu.seg(SegReg::Cs);
    let plain = m.pending().get() == 0
        && m.clock.now_ns() < m.bus.next_deadline()
        && !cpu.run.halted
        && !cpu.run.interrupt_shadow
        && cpu.eflags & (TF | RF | VM) == 0
        && cpu.dr[7] & 0xFF == 0
        && m.breakpoints.is_empty()
        && m.substrate.is_none()
        && cpu.cr0 & cr0::PE != 0
        && cpu.code32()
        && cs.base == 0
        && cs.limit == u32::MAX;
    if !plain {
        return None;
    }
    let eip = m.cpu.eip;
    let (bytes, n) = m.peek_code();
    let insn = Decoder::with_ip(32, &bytes[..n], u64::from(eip), DecoderOptions::NONE).decode();
    if insn.is_invalid() {
        return None;
    }
    if m.cpu.cr0 & cr0::PG != 0 {
        // The TLB must hold both ends of the instruction, and map them
        // where the bytes just read came from (a guest that changed a
        // PTE without INVLPG fetches through the old entry, as a CPU
        // does: the interpreter's fetch then decides).
        let user = m.cpu.cpl() == 3;
        let last = eip.wrapping_add(insn.len() as u32 - 1);
        for lin in [eip, last] {
            let cached = m.tlb().lookup_phys(lin, user);
            let walked = m.peek_translation(lin).map(|p| p >> 12);
            if cached.is_none() || cached != walked {
                return None;
            }
        }
    }
    Some(insn)
}

/// TODO lab 12: run `insn` on the machine's CPU (`m.cpu.gpr`,
/// `m.cpu.eflags`) and return the EIP of the instruction that comes
/// next — `insn.next_ip32()`, or a jump's target — or return None,
/// having changed nothing, to leave the instruction to the interpreter.
///
/// The subset the lab asks for (match on `insn.mnemonic()` and check the
/// operands' kinds, or on `insn.code()`, which tells the forms apart):
/// MOV r32 from an immediate or a register; ADD, SUB, CMP, AND, OR, XOR
/// and TEST of two 32-bit registers or a register and an immediate; INC
/// and DEC of a 32-bit register; NOP; JMP and the sixteen Jcc, short and
/// near (`insn.is_jcc_short_or_near()`: LOOPE and LOOPNE have condition
/// codes too, but they count ECX down). Each sets EFLAGS as its page in
/// the SDM Vol. 2 says under "Flags Affected".
pub fn execute(m: &mut Machine, insn: &Instruction) -> Option<u32> {
    let _ = (m, insn);
    None
}
