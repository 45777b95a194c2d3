//! `lab-broken`: the interpreter with one wrong flag rule, for the lab
//! "find the bug" (book chapter "Lab 11"). It is the reference
//! interpreter, stepped one instruction at a time, except that INC
//! clears CF afterwards, where the SDM says "The CF flag is not
//! affected" (Vol. 2A, INC). A student finds the first instruction where
//! it parts from `interp` with `ringside compare` and names the bug. Not
//! listed by `ringside engines`: it exists only for the lab.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use ringside_core::cpu::flags::CF;
use ringside_core::{run_by_steps, Budget, Engine, EngineError, EngineStats, Exit, Machine};
use ringside_interp::Interp;

pub struct BrokenInterp {
    inner: Interp,
}

impl BrokenInterp {
    pub fn new() -> BrokenInterp {
        BrokenInterp {
            inner: Interp::new(),
        }
    }
}

impl Engine for BrokenInterp {
    fn name(&self) -> &'static str {
        "lab-broken"
    }

    /// One step at a time (core's `run_by_steps`).
    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        run_by_steps(m, budget, |m| self.step(m))
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        let (bytes, n) = m.peek_code();
        let bitness = if m.cpu.code32() { 32 } else { 16 };
        let inc = Decoder::new(bitness, &bytes[..n], DecoderOptions::NONE)
            .decode()
            .mnemonic()
            == Mnemonic::Inc;
        let before = m.clock.icount;
        let exit = self.inner.step(m)?;
        // The bug: only when the INC retired (not when it faulted).
        if inc && m.clock.icount == before + 1 {
            m.cpu.eflags &= !CF;
        }
        Ok(exit)
    }

    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }
}
