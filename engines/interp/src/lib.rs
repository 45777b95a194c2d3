//! ringside-interp: the reference interpreter. Every other engine is
//! checked against it.
//!
//! It decodes guest code with `iced-x86` into cached blocks ([`exec`]) and
//! runs each instruction through the handler of its family: one module per
//! family, in the manuals' own terms ([`arith`], [`bcd`], [`shift`], [`bit`],
//! [`data`], [`stack`], [`string`], [`control`], [`far_transfer`],
//! [`segment`], [`flag_control`], [`control_registers`],
//! [`descriptor_tables`], [`msr`], [`fast_system_call`],
//! [`processor_control`], [`io`]). Operand access at 8, 16 and 32 bits is
//! written once, in [`operand`]. It owns no architectural state: everything
//! lives in ringside-core's `Machine`, which the interpreter only caches
//! decodes of. Instructions with architectural side effects beyond their
//! operands (far transfers, IRET, software interrupts, CR/DR/MSR access,
//! CPUID, flag control, descriptor-table loads, SYSENTER/SYSEXIT) are
//! core's `Machine` functions with explicit operands (`ringside_core::cpu`);
//! their handlers here only read the operands, call them and say where
//! execution goes on.
//!
//! Start reading at [`exec::InterpCore::run`], then [`table`], then any family.

pub mod arith;
pub mod bcd;
pub mod bit;
pub mod control;
pub mod control_registers;
pub mod data;
pub mod descriptor_tables;
pub mod exec;
pub mod far_transfer;
pub mod fast_system_call;
pub mod flag_control;
pub mod io;
pub mod msr;
pub mod operand;
pub mod processor_control;
pub mod segment;
pub mod shift;
pub mod stack;
pub mod string;
pub mod table;

use ringside_core::{Budget, Engine, EngineError, EngineStats, Exit, Machine};

/// The interpreter engine.
#[derive(Default)]
pub struct Interp {
    core: exec::InterpCore,
}

impl Interp {
    pub fn new() -> Interp {
        Interp::default()
    }

    /// Drop every decoded block (a raw-mode monitor whose scans the
    /// substrate's blocks were cut by forgot them all).
    pub fn drop_decoded_code(&mut self) {
        self.core.cache.clear();
    }
}

impl Engine for Interp {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        let before = m.clock.icount;
        let exit = self.core.run(m, budget);
        self.core.counters.instructions += m.clock.icount - before;
        exit
    }

    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        let before = m.clock.icount;
        let exit = self.core.step(m);
        self.core.counters.instructions += m.clock.icount - before;
        exit
    }

    /// `run` checks `Machine::breakpoints` before every instruction.
    fn honours_breakpoints(&self) -> bool {
        true
    }

    fn stats(&self) -> EngineStats {
        let c = &self.core.counters;
        let mut s = EngineStats {
            instructions: c.instructions,
            ..EngineStats::default()
        };
        s.counters.insert("blocks_decoded", c.blocks_decoded);
        s.counters.insert("block_lookups", c.block_lookups);
        s.counters.insert("chained_blocks", c.chained_blocks);
        s.counters.insert("uncached_instructions", c.uncached_insns);
        s.counters
            .insert("invalidated_blocks", c.invalidated_blocks);
        s.counters.insert("exceptions", c.exceptions);
        s.counters.insert("interrupts", c.interrupts);
        s
    }
}
