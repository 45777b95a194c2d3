//! Your engine against the interpreter on small programs, in lockstep:
//! after every instruction the two CPU states must be the same (flags
//! the manual leaves undefined aside), and your engine must have run
//! every instruction of the program itself. Given: these are what the
//! checker runs (`cargo test`); add your own beside them.

use iced_x86::code_asm::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::{AF, CF, OF, PF, SF, ZF};
use ringside_core::{Engine, Machine};
use ringside_debugger::lockstep::{self, Outcome, Side};
use ringside_devices::emulator_ports::{DebugExit, DEBUG_EXIT_PORT};
use ringside_interp::Interp;

use lab12_engine::Mine;

const AT: u64 = 0x1000;

/// The program `build` assembles, at 0x1000 in flat protected mode, then
/// `out 0xf4, al` to end it; `regs` are EAX..EDI (ESP is kept) and
/// `flags` the status flags to start with. Your engine must run every
/// instruction of it itself.
fn agree(build: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>, regs: [u32; 8], flags: u32) {
    agree_leaving(build, regs, flags, 0);
}

/// `agree`, with `left` of the program's instructions that are not in
/// the subset and must be left to the interpreter.
fn agree_leaving(
    build: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
    regs: [u32; 8],
    flags: u32,
    left: u64,
) {
    let mut a = CodeAssembler::new(32).unwrap();
    build(&mut a).unwrap();
    a.out(0xF4, al).unwrap();
    let code = a.assemble(AT).unwrap();
    let side = |engine: Box<dyn Engine>| {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.add_port_device(Box::new(DebugExit), &[(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT)]);
        m.write_ram(AT as u32, &code).unwrap();
        enter_flat_protected_mode(&mut m, AT as u32);
        let stack = m.cpu.gpr[4];
        m.cpu.gpr = regs;
        m.cpu.gpr[4] = stack;
        m.cpu.eflags |= flags;
        Side { machine: m, engine }
    };
    let mut interp = side(Box::new(Interp::new()));
    let mut mine = side(Box::new(Mine::new()));
    let instructions = match lockstep::run(&mut interp, &mut mine, 100_000).unwrap() {
        Outcome::Stopped { instructions, .. } => instructions,
        Outcome::Divergence(d) => panic!("{}", lockstep::format_divergence(&d, "interp", "mine")),
        other => panic!("the program did not end: {other:?}"),
    };
    let own = mine.engine.stats().counters["own_instructions"];
    assert_eq!(
        own,
        instructions - 1 - left,
        "your engine ran {own} of the program's {} instructions itself (the final OUT and {left} more are the interpreter's)",
        instructions - 1
    );
}

const REGS: [u32; 8] = [
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x8000_0000,
    1,
    0,
    0,
    0x0000_00FF,
    0x1234_5678,
];

#[test]
fn mov_loads_immediates_and_registers() {
    agree(
        |a| {
            a.mov(eax, 0x1234_5678u32)?;
            a.mov(ebx, eax)?;
            a.mov(ecx, 0xFFFF_FFFFu32)?;
            a.mov(edi, ecx)?;
            a.mov(ebp, 0u32)
        },
        REGS,
        0,
    );
}

#[test]
fn add_and_sub_set_all_six_status_flags() {
    agree(
        |a| {
            a.add(eax, edx)?; // 7fffffff + 1: OF, SF, AF
            a.add(ebx, edx)?; // ffffffff + 1: CF, ZF, AF
            a.sub(ecx, edx)?; // 80000000 - 1: OF
            a.sub(ebp, edx)?; // 0 - 1: CF, SF, AF
            a.add(esi, 1)?; // imm8 form: ff + 1, AF
            a.sub(edi, 0x1234_5679)?; // imm32 form: borrow
            a.add(eax, -2)?; // sign-extended imm8
            a.sub(esi, esi)?; // ZF, PF
            a.add(edi, 0x0F0F_0F0F)
        },
        REGS,
        0,
    );
}

#[test]
fn cmp_sets_flags_and_keeps_its_operands() {
    agree(
        |a| {
            a.cmp(eax, ebx)?;
            a.cmp(ebx, eax)?;
            a.cmp(ecx, edx)?;
            a.cmp(ebp, 0)?;
            a.cmp(esi, 0x100)?;
            a.cmp(edi, 0x1234_5678)
        },
        REGS,
        0,
    );
}

#[test]
fn logic_clears_cf_and_of_and_sets_sf_zf_pf() {
    agree(
        |a| {
            a.and(eax, ecx)?;
            a.or(ebx, edx)?;
            a.xor(ecx, ecx)?;
            a.test(esi, edi)?;
            a.and(edi, 0xFF)?;
            a.or(ebp, 0x8000_0000u32 as i32)?;
            a.xor(edx, -1)?;
            a.test(ebx, 0x8000_0000u32)
        },
        REGS,
        CF | OF | AF,
    );
}

#[test]
fn inc_and_dec_keep_cf() {
    for cf in [0, CF] {
        agree(
            |a| {
                a.inc(eax)?; // 7fffffff: OF, SF, AF
                a.inc(ebx)?; // ffffffff: ZF, AF, CF kept
                a.dec(ecx)?; // 80000000: OF
                a.dec(ebp)?; // 0: SF, AF
                a.inc(esi)?;
                a.dec(edx)
            },
            REGS,
            cf,
        );
    }
}

#[test]
fn jumps_follow_every_condition_short_and_near() {
    // Every status-flag combination that the sixteen conditions read.
    for flags in 0..64u32 {
        let initial = [CF, PF, AF, ZF, SF, OF]
            .iter()
            .enumerate()
            .filter(|(i, _)| flags & (1 << i) != 0)
            .fold(0, |f, (_, bit)| f | bit);
        agree(
            |a| {
                type Jcc = fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>;
                let conditions: [Jcc; 16] = [
                    CodeAssembler::jo,
                    CodeAssembler::jno,
                    CodeAssembler::jb,
                    CodeAssembler::jae,
                    CodeAssembler::je,
                    CodeAssembler::jne,
                    CodeAssembler::jbe,
                    CodeAssembler::ja,
                    CodeAssembler::js,
                    CodeAssembler::jns,
                    CodeAssembler::jp,
                    CodeAssembler::jnp,
                    CodeAssembler::jl,
                    CodeAssembler::jge,
                    CodeAssembler::jle,
                    CodeAssembler::jg,
                ];
                for (i, jcc) in conditions.iter().enumerate() {
                    let mut over = a.create_label();
                    jcc(a, over)?;
                    // Every other one jumps over 200 bytes: the near form.
                    for _ in 0..if i % 2 == 0 { 1 } else { 200 } {
                        a.nop()?;
                    }
                    a.set_label(&mut over)?;
                    a.nop()?;
                }
                let mut end = a.create_label();
                a.jmp(end)?;
                a.mov(eax, 0xBADu32)?;
                a.set_label(&mut end)?;
                a.nop()
            },
            REGS,
            initial,
        );
    }
}

#[test]
fn a_counted_loop_runs_to_the_end() {
    agree(
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 1000u32)?;
            a.mov(eax, 0u32)?;
            a.set_label(&mut top)?;
            a.add(eax, ecx)?;
            a.dec(ecx)?;
            a.jne(top)
        },
        REGS,
        0,
    );
}

#[test]
fn loop_instructions_are_left_to_the_interpreter() {
    // LOOPE and LOOPNE have condition codes like Jcc, but count ECX
    // down first: not in the subset. With ZF set, LOOPE runs 3 times.
    agree_leaving(
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 3u32)?;
            a.set_label(&mut top)?;
            a.nop()?;
            a.loope(top)?;
            let mut again = a.create_label();
            a.set_label(&mut again)?;
            a.loopne(again)
        },
        REGS,
        ZF,
        3 + 1,
    );
}

/// A device whose timer ends the run: armed by a write to port 0x300,
/// it goes off 500 ns later.
struct Alarm;

impl ringside_core::bus::Device for Alarm {
    fn name(&self) -> &'static str {
        "alarm"
    }
    fn io_read(&mut self, _: u16, _: u8, _: &mut ringside_core::bus::DeviceCtx) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _: u16, _: u8, _: u32, ctx: &mut ringside_core::bus::DeviceCtx) {
        ctx.schedule(ctx.now_ns + 500);
    }
    fn timer(&mut self, ctx: &mut ringside_core::bus::DeviceCtx) {
        ctx.signals.stop = Some(ringside_core::bus::StopRequest::DebugExit(42));
    }
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore_state(
        &mut self,
        _: &serde_json::Value,
    ) -> Result<(), ringside_core::bus::StateError> {
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_timer_that_comes_due_in_a_register_loop_fires_at_the_same_instruction() {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.mov(dx, 0x300u32).unwrap();
    a.out(dx, al).unwrap(); // arm the alarm: 500 ns from now
    a.mov(ecx, 100_000u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.dec(ecx).unwrap();
    a.jne(top).unwrap();
    a.out(0xF4, al).unwrap();
    let code = a.assemble(AT).unwrap();
    let side = |engine: Box<dyn Engine>| {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.clock.ns_per_insn = 1;
        m.add_port_device(Box::new(Alarm), &[(0x300, 0x300)]);
        m.add_port_device(Box::new(DebugExit), &[(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT)]);
        m.write_ram(AT as u32, &code).unwrap();
        enter_flat_protected_mode(&mut m, AT as u32);
        Side { machine: m, engine }
    };
    let mut interp = side(Box::new(Interp::new()));
    let mut mine = side(Box::new(Mine::new()));
    match lockstep::run(&mut interp, &mut mine, 1_000_000).unwrap() {
        Outcome::Stopped {
            reason: ringside_core::StopReason::DebugExit(42),
            ..
        } => {}
        Outcome::Divergence(d) => panic!("{}", lockstep::format_divergence(&d, "interp", "mine")),
        other => panic!("the alarm should end the run in the loop: {other:?}"),
    }
    assert!(
        mine.engine.stats().counters["own_instructions"] > 400,
        "your engine ran the loop itself until the alarm"
    );
}
