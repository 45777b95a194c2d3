//! The lockstep comparator: run two machines one instruction at a time and
//! stop at the first instruction after which they disagree.
//!
//! After every step it compares the architectural state — general
//! registers, EIP, EFLAGS (without the flags the instruction just executed
//! leaves undefined: core's table, shared with the conformance runner),
//! segment registers with their hidden caches, descriptor-table registers,
//! control registers — the instruction count, and memory wherever either
//! machine wrote during the step (`Machine::write_log`; an engine that
//! cannot log, like KVM, is checked at the places the other one wrote). Device state needs no comparison of
//! its own: both machines see the same virtual time and the same (no)
//! input, so devices can only diverge through what the CPUs did. A reset
//! (a reset request or a triple fault) that both machines report at the
//! same instruction reboots both, and the comparison goes on.

use std::fmt::Write as _;

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic};
use ringside_core::cpu::flags::undefined_flags;
use ringside_core::cpu::{reg, CpuState, SegReg};
use ringside_core::hostio::{HostInputRoute, InputRequests, InputRequestsRoute};
use ringside_core::{Engine, EngineError, Exit, Machine, StopReason};

/// One machine and the engine that runs it.
pub struct Side {
    pub machine: Machine,
    pub engine: Box<dyn Engine>,
}

/// One field that differs between the two machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// The first instruction after which the machines disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Instructions both machines retired before this one.
    pub instruction: u64,
    pub cs: u16,
    pub eip: u32,
    pub bytes: Vec<u8>,
    pub disassembly: String,
    pub before: CpuState,
    pub a: CpuState,
    pub b: CpuState,
    pub differences: Vec<Difference>,
}

/// How a lockstep run ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The machines agreed for this many instructions (the limit).
    NoDivergence {
        instructions: u64,
    },
    /// Both machines stopped the same way, agreeing throughout.
    Stopped {
        reason: StopReason,
        instructions: u64,
    },
    Divergence(Box<Divergence>),
}

/// The instruction at CS:EIP of `m`, read without side effects.
fn peek_instruction(m: &mut Machine) -> (Vec<u8>, Instruction) {
    let code32 = m.cpu.code32();
    let (code, n) = m.peek_code();
    let mut bytes = code[..n].to_vec();
    let mut d = Decoder::with_ip(
        if code32 { 32 } else { 16 },
        &bytes,
        m.cpu.eip as u64,
        DecoderOptions::NONE,
    );
    let insn = d.decode();
    let len = if insn.is_invalid() {
        bytes.len().min(1)
    } else {
        insn.len()
    };
    bytes.truncate(len);
    (bytes, insn)
}

/// The EFLAGS bits an instruction leaves undefined, with the shift count
/// taken from the state before it ran.
fn undefined_mask(insn: &Instruction, before: &CpuState) -> u32 {
    let count = match insn.mnemonic() {
        Mnemonic::Shl
        | Mnemonic::Sal
        | Mnemonic::Shr
        | Mnemonic::Sar
        | Mnemonic::Rol
        | Mnemonic::Ror
        | Mnemonic::Rcl
        | Mnemonic::Rcr
        | Mnemonic::Shld
        | Mnemonic::Shrd => {
            let last = insn.op_count().saturating_sub(1);
            Some(match insn.op_kind(last) {
                iced_x86::OpKind::Register => before.gpr[reg::ECX] & 0x1F,
                iced_x86::OpKind::Immediate8 => insn.immediate8() as u32 & 0x1F,
                _ => 1,
            })
        }
        _ => None,
    };
    undefined_flags(insn.mnemonic(), count)
}

/// Every architectural difference between two CPU states.
pub fn compare_states(a: &CpuState, b: &CpuState, flag_mask: u32) -> Vec<Difference> {
    // Equal states (the comparator's every step): nothing to format.
    if a.eflags & !flag_mask == b.eflags & !flag_mask && {
        let (mut x, mut y) = (a.clone(), b.clone());
        x.eflags = 0;
        y.eflags = 0;
        x == y
    } {
        return Vec::new();
    }
    let mut d = Vec::new();
    let mut diff = |field: &str, x: String, y: String| {
        if x != y {
            d.push(Difference {
                field: field.to_owned(),
                a: x,
                b: y,
            });
        }
    };
    const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
    for (i, n) in NAMES.iter().enumerate() {
        diff(n, format!("{:08x}", a.gpr[i]), format!("{:08x}", b.gpr[i]));
    }
    diff("eip", format!("{:08x}", a.eip), format!("{:08x}", b.eip));
    diff(
        "eflags",
        format!("{:08x}", a.eflags & !flag_mask),
        format!("{:08x}", b.eflags & !flag_mask),
    );
    for s in SegReg::ALL {
        let (x, y) = (a.seg(s), b.seg(s));
        diff(
            s.name(),
            format!(
                "{:04x} base {:08x} limit {:08x} attr {:05x}",
                x.selector, x.base, x.limit, x.attr
            ),
            format!(
                "{:04x} base {:08x} limit {:08x} attr {:05x}",
                y.selector, y.base, y.limit, y.attr
            ),
        );
    }
    for (name, x, y) in [("ldtr", &a.ldtr, &b.ldtr), ("tr", &a.tr, &b.tr)] {
        diff(
            name,
            format!(
                "{:04x} base {:08x} limit {:08x}",
                x.selector, x.base, x.limit
            ),
            format!(
                "{:04x} base {:08x} limit {:08x}",
                y.selector, y.base, y.limit
            ),
        );
    }
    diff(
        "gdtr",
        format!("{:08x}/{:04x}", a.gdtr.base, a.gdtr.limit),
        format!("{:08x}/{:04x}", b.gdtr.base, b.gdtr.limit),
    );
    diff(
        "idtr",
        format!("{:08x}/{:04x}", a.idtr.base, a.idtr.limit),
        format!("{:08x}/{:04x}", b.idtr.base, b.idtr.limit),
    );
    for (name, x, y) in [
        ("cr0", a.cr0, b.cr0),
        ("cr2", a.cr2, b.cr2),
        ("cr3", a.cr3, b.cr3),
        ("cr4", a.cr4, b.cr4),
    ] {
        diff(name, format!("{x:08x}"), format!("{y:08x}"));
    }
    diff("halted", a.run.halted.to_string(), b.run.halted.to_string());
    d
}

/// One comparison step: `Engine::step`, and when that delivered an event
/// without retiring an instruction (a fault: EIP moved to the handler,
/// nothing retired), one more step so the handler's first instruction runs
/// too. Engines differ in where a single step over a faulting instruction
/// stops (the interpreter stops at the handler; a KVM single-step may run
/// its first instruction); after this both stand at the same boundary.
fn step_to_an_instruction(s: &mut Side) -> Result<Exit, EngineError> {
    let (icount, cs, eip) = (
        s.machine.clock.icount,
        s.machine.cpu.seg(SegReg::Cs).selector,
        s.machine.cpu.eip,
    );
    let exit = s.engine.step(&mut s.machine)?;
    let moved = s.machine.cpu.eip != eip || s.machine.cpu.seg(SegReg::Cs).selector != cs;
    let delivered = s.machine.clock.icount == icount && moved && !s.machine.cpu.run.halted;
    if exit == Exit::BudgetSpent && delivered {
        return s.engine.step(&mut s.machine);
    }
    Ok(exit)
}

/// Run both sides in lockstep for at most `max_insns` instructions.
pub fn run(a: &mut Side, b: &mut Side, max_insns: u64) -> Result<Outcome, EngineError> {
    run_with_input(a, b, max_insns, &mut Input::none())
}

/// Host input for a lockstep run: a script, given to both machines a line
/// at a time whenever the guest waits for input (it polls an empty
/// receive buffer, or halts with nothing else to wake it, or the device
/// asks at a paced point of virtual time, `hostio::InputRequests::Paced`)
/// — at the same instruction on both sides, so input cannot make them
/// differ.
pub struct Input {
    script: std::collections::VecDeque<u8>,
    route: Option<(HostInputRoute, InputRequestsRoute)>,
}

impl Input {
    /// No input.
    pub fn none() -> Input {
        Input {
            script: Default::default(),
            route: None,
        }
    }

    /// `script`, delivered through `route`, to the device whose requests
    /// for input `requests` sets (the front-end knows the machine's
    /// devices: COM1 for `ringside compare`).
    pub fn script(script: &[u8], route: HostInputRoute, requests: InputRequestsRoute) -> Input {
        Input {
            script: script.iter().copied().collect(),
            route: Some((route, requests)),
        }
    }

    /// Tell both machines' input device when to ask: paced while the
    /// script has more, never once it is spent.
    fn set_requests(&self, a: &mut Machine, b: &mut Machine) {
        if let Some((_, requests)) = self.route {
            let r = if self.script.is_empty() {
                InputRequests::Off
            } else {
                InputRequests::Paced
            };
            requests(a, r);
            requests(b, r);
        }
    }

    /// Give both machines the next line; false when none is left.
    fn feed(&mut self, a: &mut Machine, b: &mut Machine) -> bool {
        let Some((route, _)) = self.route else {
            return false;
        };
        if self.script.is_empty() {
            return false;
        }
        let end = self
            .script
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.script.len(), |i| i + 1);
        let line: Vec<u8> = self.script.drain(..end).collect();
        route(a, &line);
        route(b, &line);
        if self.script.is_empty() {
            self.set_requests(a, b);
        }
        true
    }
}

/// [`run`] with host input.
pub fn run_with_input(
    a: &mut Side,
    b: &mut Side,
    max_insns: u64,
    input: &mut Input,
) -> Result<Outcome, EngineError> {
    a.machine.set_write_log(true);
    b.machine.set_write_log(true);
    input.set_requests(&mut a.machine, &mut b.machine);
    let start = a.machine.clock.icount;
    loop {
        let done = a.machine.clock.icount - start;
        if done >= max_insns {
            return Ok(Outcome::NoDivergence { instructions: done });
        }
        let before = a.machine.cpu.clone();
        let (bytes, insn) = peek_instruction(&mut a.machine);
        for s in [&mut *a, &mut *b] {
            if let Some(log) = s.machine.write_log.as_mut() {
                log.clear();
            }
        }
        let ea = step_to_an_instruction(a)?;
        let eb = step_to_an_instruction(b)?;
        // A reset both machines report at the same instruction reboots
        // both before they are compared: the CPU state at a shutdown or a
        // reset request is never seen by the guest (the reset replaces
        // it), and engines leave different bits there (KVM sets RF). What
        // is compared is the state both start again from; the exits still
        // say where each stopped.
        let rebooted = match (ea, eb) {
            (Exit::Stopped(ra), Exit::Stopped(rb))
                if ra == rb
                    && ra.is_reset()
                    && a.machine.reboots_on_reset()
                    && b.machine.reboots_on_reset() =>
            {
                for s in [&mut *a, &mut *b] {
                    s.machine
                        .reset()
                        .map_err(|e| EngineError::Reboot(e.to_string()))?;
                }
                true
            }
            _ => false,
        };
        let undefined = undefined_mask(&insn, &before);
        let mut differences = compare_states(&a.machine.cpu, &b.machine.cpu, undefined);
        // Flags the instruction left undefined may legitimately differ; copy
        // A's into B so the difference does not surface later as a false
        // divergence of an instruction that only reads them.
        b.machine.cpu.eflags =
            (b.machine.cpu.eflags & !undefined) | (a.machine.cpu.eflags & undefined);
        if a.machine.clock.icount != b.machine.clock.icount {
            differences.push(Difference {
                field: "instructions".into(),
                a: a.machine.clock.icount.to_string(),
                b: b.machine.clock.icount.to_string(),
            });
        }
        // Compare what is in memory wherever either machine wrote: an
        // engine that cannot log its writes (KVM) is still checked at every
        // place the other one wrote.
        let (wa, wb) = (
            a.machine.write_log.clone().unwrap_or_default(),
            b.machine.write_log.clone().unwrap_or_default(),
        );
        let mut places: Vec<(u32, u32)> = wa.iter().chain(&wb).map(|&(p, s, _)| (p, s)).collect();
        places.sort_unstable();
        places.dedup();
        for (addr, size) in places {
            let read = |m: &Machine| -> Vec<Option<u8>> {
                (0..size)
                    .map(|i| m.mem().read_plain(addr.wrapping_add(i)))
                    .collect()
            };
            let (ma, mb) = (read(&a.machine), read(&b.machine));
            if ma != mb {
                let show = |v: &[Option<u8>]| {
                    v.iter()
                        .map(|b| b.map_or("--".to_owned(), |b| format!("{b:02x}")))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                differences.push(Difference {
                    field: format!("memory {addr:08x}"),
                    a: show(&ma),
                    b: show(&mb),
                });
            }
        }
        if ea != eb {
            differences.push(Difference {
                field: "exit".into(),
                a: format!("{ea:?}"),
                b: format!("{eb:?}"),
            });
        }
        if !differences.is_empty() {
            let mut disassembly = String::new();
            IntelFormatter::new().format(&insn, &mut disassembly);
            return Ok(Outcome::Divergence(Box::new(Divergence {
                instruction: done,
                cs: before.seg(SegReg::Cs).selector,
                eip: before.eip,
                bytes,
                disassembly,
                before,
                a: a.machine.cpu.clone(),
                b: b.machine.cpu.clone(),
                differences,
            })));
        }
        match ea {
            // Both rebooted: the comparison goes on from the reset vector.
            Exit::Stopped(_) if rebooted => {}
            Exit::Stopped(reason) => {
                return Ok(Outcome::Stopped {
                    reason,
                    instructions: a.machine.clock.icount - start,
                })
            }
            Exit::WaitingForInput => {
                input.feed(&mut a.machine, &mut b.machine);
            }
            Exit::Halted => {
                // Same virtual time on both sides: the next line of input
                // if the guest waits for it, else jump both to the next
                // device event, or stop if nothing can wake them.
                if input.feed(&mut a.machine, &mut b.machine) {
                    continue;
                }
                let wa = a.machine.skip_to_next_deadline();
                let wb = b.machine.skip_to_next_deadline();
                if !(wa && wb) {
                    let (cs, eip) = (a.machine.cpu.seg(SegReg::Cs).selector, a.machine.cpu.eip);
                    return Ok(Outcome::Stopped {
                        reason: StopReason::IdleForever { cs, eip },
                        instructions: a.machine.clock.icount - start,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The report of a divergence: the instruction, the two states side by
/// side with the differing fields marked, and the instruction count.
pub fn format_divergence(d: &Divergence, name_a: &str, name_b: &str) -> String {
    let mut s = String::new();
    let bytes: Vec<String> = d.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(
        s,
        "divergence after {} instructions, at {:04x}:{:08x}  {}  {}",
        d.instruction,
        d.cs,
        d.eip,
        bytes.join(" "),
        d.disassembly
    );
    let _ = writeln!(s, "  {:<14} {:<44} {}", "", name_a, name_b);
    for diff in &d.differences {
        let _ = writeln!(s, "* {:<14} {:<44} {}", diff.field, diff.a, diff.b);
    }
    if let Some(k) = known_deviation(d, name_a, name_b) {
        let _ = writeln!(
            s,
            "note: a known host deviation, not an engine bug: {} (docs/kvm-host-deviations.md, \"{}\")",
            k.what, k.id
        );
    }
    s
}

/// A documented way a host differs from the manuals, which explains a
/// divergence without an engine being wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownDeviation {
    /// The entry's name in docs/kvm-host-deviations.md.
    pub id: &'static str,
    pub what: &'static str,
}

/// The known host deviation that explains `d`, if one does: a divergence
/// against `kvm` at an instruction the host is documented to get wrong,
/// in nothing but the fields it gets wrong (docs/kvm-host-deviations.md).
pub fn known_deviation(d: &Divergence, name_a: &str, name_b: &str) -> Option<KnownDeviation> {
    if name_a != "kvm" && name_b != "kvm" {
        return None;
    }
    let only = |fields: &[&str]| {
        !d.differences.is_empty()
            && d.differences
                .iter()
                .all(|x| fields.contains(&x.field.as_str()))
    };
    let mnemonic = Decoder::new(32, &d.bytes, DecoderOptions::NONE)
        .decode()
        .mnemonic();
    match mnemonic {
        Mnemonic::Cpuid if d.before.gpr[reg::EAX] == 1 && only(&["ecx", "edx"]) => {
            Some(KnownDeviation {
                id: "cpuid-leaf1-host-features",
                what: "KVM on this host answers CPUID leaf 1 with its own CPU's feature bits in ECX and EDX, not the configured ones",
            })
        }
        Mnemonic::Aam | Mnemonic::Aad if only(&["eflags"]) => Some(KnownDeviation {
            id: "aam-aad-flags",
            what: "KVM on this host sets SF, ZF and PF after AAM and AAD from the whole register, not from AL",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_core::boot;
    use ringside_devices::pc::{build_pc, HostIo};

    fn side(guest: &str) -> Side {
        let io = HostIo::discarded();
        let mut m = build_pc(&ringside_core::config::MachineConfig::default(), io).unwrap();
        let g = ringside_guests::find(guest).unwrap();
        boot::load_multiboot(&mut m, g.image, "").unwrap();
        Side {
            machine: m,
            engine: Box::new(ringside_interp::Interp::new()),
        }
    }

    #[test]
    fn interp_against_itself_agrees_to_the_guests_exit() {
        let (mut a, mut b) = (side("hello"), side("hello"));
        match run(&mut a, &mut b, 1_000_000).unwrap() {
            Outcome::Stopped {
                reason,
                instructions,
            } => {
                assert_eq!(reason, StopReason::DebugExit(0));
                assert!(instructions > 100);
            }
            other => panic!("expected both to stop cleanly, got {other:?}"),
        }
    }

    #[test]
    fn interp_against_itself_agrees_for_200000_instructions_of_paged_code() {
        let (mut a, mut b) = (side("bench-int-small"), side("bench-int-small"));
        assert!(matches!(
            run(&mut a, &mut b, 200_000).unwrap(),
            Outcome::NoDivergence {
                instructions: 200_000
            }
        ));
    }

    #[test]
    fn a_corrupted_register_shows_as_a_divergence_at_the_next_step() {
        let (mut a, mut b) = (side("hello"), side("hello"));
        assert!(matches!(
            run(&mut a, &mut b, 50).unwrap(),
            Outcome::NoDivergence { instructions: 50 }
        ));
        b.machine.cpu.gpr[reg::EDI] ^= 0x10;
        match run(&mut a, &mut b, 50).unwrap() {
            Outcome::Divergence(d) => {
                assert_eq!(d.instruction, 0, "the very next step");
                assert!(
                    d.differences.iter().any(|x| x.field == "edi"),
                    "{:?}",
                    d.differences
                );
                let report = format_divergence(&d, "interp", "interp");
                println!("{report}");
                assert!(report.contains("* edi"), "{report}");
            }
            other => panic!("expected a divergence, got {other:?}"),
        }
    }

    /// Issue 16 item 9: interp vs kvm diverged at CPUID in the demo OS
    /// and the report did not say it is a documented host deviation.
    #[test]
    fn a_divergence_at_a_documented_kvm_deviation_is_named_in_the_report() {
        let mut before = CpuState::at_reset();
        before.gpr[reg::EAX] = 1;
        let (mut a, mut b) = (before.clone(), before.clone());
        a.gpr[reg::ECX] = 0;
        b.gpr[reg::ECX] = 0x76d8_1203;
        let differences = compare_states(&a, &b, 0);
        let d = Divergence {
            instruction: 7776,
            cs: 8,
            eip: 0x1000,
            bytes: vec![0x0F, 0xA2],
            disassembly: "cpuid".into(),
            before: before.clone(),
            a,
            b,
            differences,
        };
        let report = format_divergence(&d, "interp", "kvm");
        assert!(report.contains("known host deviation"), "{report}");
        assert!(report.contains("\"cpuid-leaf1-host-features\""), "{report}");
        // Not between two software engines, and not for another leaf or
        // another register.
        assert!(known_deviation(&d, "interp", "jit").is_none());
        let mut other = d.clone();
        other.before.gpr[reg::EAX] = 0;
        assert!(known_deviation(&other, "interp", "kvm").is_none());
        other = d.clone();
        other.b.gpr[reg::EBX] = 1;
        other.differences = compare_states(&other.a, &other.b, 0);
        assert!(known_deviation(&other, "interp", "kvm").is_none());
        assert!(!format_divergence(&other, "interp", "kvm").contains("note:"));
    }

    #[test]
    fn undefined_flags_of_the_instruction_are_not_compared() {
        let mut a = CpuState::at_reset();
        let mut b = a.clone();
        a.eflags |= ringside_core::cpu::flags::AF;
        b.eflags &= !ringside_core::cpu::flags::AF;
        assert!(!compare_states(&a, &b, 0).is_empty());
        assert!(compare_states(&a, &b, undefined_flags(Mnemonic::And, None)).is_empty());
    }
}
