//! Differential property tests of the recompiler against the interpreter:
//! random instruction streams (testsuites/shared/random_streams.rs: ALU,
//! shifts, multiply and divide with random divisors that fault, bit
//! tests, SETcc/CMOVcc, string operations, BCD, pushes and pops, forward
//! jumps...) with random registers, flags and data, in 16-bit real mode,
//! flat 32-bit protected mode and the same with paging on.
//!
//! * Whole runs: the interpreter alone and the recompiler with every
//!   block compiled at its first run must end with the same exit, the same
//!   instruction count, the same CPU state (every flag, the undefined ones
//!   included: the recompiler computes them as the interpreter does) and
//!   the same memory. This checks regions, lazy flags and the inline TLB
//!   path across instructions.
//! * Lockstep: the comparator steps both engines one instruction at a
//!   time (a step on jit runs the instruction's own translation).
//!
//! `RINGSIDE_JIT_DIFF_CASES` sets the number of whole-run streams
//! (default 20000), `RINGSIDE_JIT_LOCKSTEP_CASES` the lockstep ones
//! (default 2000).

use std::cell::Cell;
use std::time::Instant;

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ringside_debugger::lockstep::{self, Outcome, Side};
use ringside_interp::Interp;
use ringside_jit::Jit;

#[path = "../../../testsuites/shared/random_streams.rs"]
mod random_streams;
use random_streams::*;

fn env_cases(key: &str, default: u32) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// RAM the streams can touch: vectors, IDT, data, stack, code and the
/// page tables (whose accessed and dirty bits the CPU writes).
const COMPARED_RAM: usize = (PAGE_TABLE + 0x1000) as usize;

#[test]
fn random_streams_end_alike_on_interp_and_jit() {
    let cases = env_cases("RINGSIDE_JIT_DIFF_CASES", 20_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    });
    let started = Instant::now();
    let instructions = Cell::new(0u64);
    let faulted = Cell::new(0u32);
    let modes = vec![Mode::Real, Mode::Protected, Mode::Paged];
    let result = runner.run(&case(modes), |c| {
        let code = assemble(c.mode, &c.stream);
        let mut a = machine(&c, &code);
        let mut b = machine(&c, &code);
        let ea = a.run_until_stopped(&mut Interp::new(), Some(MAX_INSNS));
        // Regions of many blocks on one case in two (forward jumps make
        // them), blocks alone on the other.
        let regions = if c.regs[0] & 1 == 0 { 32 } else { 1 };
        let eb = b.run_until_stopped(&mut Jit::with_settings(1, regions), Some(MAX_INSNS));
        let report = |what: &str| {
            TestCaseError::fail(format!(
                "{:?} mode, regions of {regions} blocks: {what}\ninterp: {ea:?} after {} instructions\n{:#x?}\njit: {eb:?} after {} instructions\n{:#x?}\nstream:\n{}",
                c.mode,
                a.clock.icount,
                a.cpu,
                b.clock.icount,
                b.cpu,
                listing(c.mode, &code)
            ))
        };
        if ea != eb {
            return Err(report("the runs ended differently"));
        }
        if a.clock.icount != b.clock.icount {
            return Err(report("the instruction counts differ"));
        }
        if a.cpu != b.cpu {
            return Err(report("the CPU states differ"));
        }
        let (ra, rb) = (a.mem().ram_slice(), b.mem().ram_slice());
        if ra[..COMPARED_RAM] != rb[..COMPARED_RAM] {
            let at = (0..COMPARED_RAM).find(|&i| ra[i] != rb[i]).unwrap_or(0);
            return Err(report(&format!(
                "memory differs first at {at:#x}: interp {:#04x}, jit {:#04x}",
                ra[at], rb[at]
            )));
        }
        instructions.set(instructions.get() + a.clock.icount);
        if a.cpu.eip == HLT_STUB + 1 {
            faulted.set(faulted.get() + 1);
        }
        Ok(())
    });
    println!(
        "{cases} streams, {} instructions, {} ended in an exception handler, {:.1?}",
        instructions.get(),
        faulted.get(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        faulted.get() > 0,
        "no stream faulted: the fault paths went untested"
    );
}

#[test]
fn random_streams_agree_in_lockstep_on_interp_and_jit() {
    let cases = env_cases("RINGSIDE_JIT_LOCKSTEP_CASES", 2_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 1024,
        ..Config::default()
    });
    let started = Instant::now();
    let modes = vec![Mode::Real, Mode::Protected, Mode::Paged];
    let result = runner.run(&case(modes), |c| {
        let code = assemble(c.mode, &c.stream);
        let mut a = Side {
            machine: machine(&c, &code),
            engine: Box::new(Interp::new()),
        };
        let mut b = Side {
            machine: machine(&c, &code),
            engine: Box::new(Jit::with_threshold(1)),
        };
        match lockstep::run(&mut a, &mut b, MAX_INSNS) {
            Ok(Outcome::Divergence(d)) => Err(TestCaseError::fail(format!(
                "{:?} mode\n{}\nstream:\n{}",
                c.mode,
                lockstep::format_divergence(&d, "interp", "jit"),
                listing(c.mode, &code)
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("engine error: {e}"))),
        }
    });
    println!("{cases} streams in lockstep, {:.1?}", started.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
}
