//! Making a KVM single step end where the interpreter's does when the
//! stepped instruction raises an exception or an interrupt is delivered.
//!
//! KVM single-steps with the trap flag (KVM_GUESTDBG_SINGLESTEP sets
//! RFLAGS.TF behind the guest's back). Event delivery clears TF (SDM Vol. 3A
//! 6.12.1.2), so the trap cannot come at the handler's first instruction:
//! real hardware runs the whole handler and traps after its IRET, and
//! kvm_pvm traps after the handler's first instruction. Worse, the EFLAGS
//! image the delivery pushed has the debugger's TF in it, so the handler's
//! IRET would turn single-stepping on in the guest.
//!
//! Every engine's step ends at the handler's first instruction, with the
//! guest's own flags in the frame. The kvm engine gets there with hardware
//! breakpoints: for the instruction it is about to step, it finds the
//! vectors the instruction can raise (or the vector it is injecting), puts
//! an execute breakpoint on each one's handler (up to the four debug
//! registers), and when one of them fires it takes TF out of the pushed
//! image again. Which frame slot holds EFLAGS follows from the return
//! address the delivery pushed (SDM Vol. 3A 6.12.1, figure 6-4).

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
use ringside_core::cpu::flags::{RF, TF};
use ringside_core::Machine;

/// A handler to put a breakpoint on: its linear address, and whether the
/// gate pushes a 32-bit frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handler {
    pub(crate) address: u32,
    pub(crate) wide: bool,
}

/// Up to four handlers, one per debug register.
pub(crate) type HandlerBreakpoints = [Option<Handler>; 4];

/// The instruction at CS:EIP.
pub(crate) fn decode_at_eip(m: &mut Machine) -> Option<Instruction> {
    let (code, n) = m.peek_code();
    if n == 0 {
        return None;
    }
    let bitness = if m.cpu.code32() { 32 } else { 16 };
    Some(Decoder::with_ip(bitness, &code[..n], m.cpu.eip as u64, DecoderOptions::NONE).decode())
}

/// The vectors `insn` can raise, most specific first.
fn candidate_vectors(insn: Option<&Instruction>) -> Vec<u8> {
    let Some(insn) = insn else {
        return vec![14, 13, 6];
    };
    let mut v = Vec::new();
    match insn.mnemonic() {
        Mnemonic::Div | Mnemonic::Idiv | Mnemonic::Aam => v.push(0),
        Mnemonic::Int => v.push(insn.immediate8()),
        Mnemonic::Int3 => v.push(3),
        Mnemonic::Int1 => v.push(1),
        Mnemonic::Into => v.push(4),
        Mnemonic::Bound => v.push(5),
        _ => {}
    }
    if insn.code() == Code::INVALID || insn.mnemonic() == Mnemonic::Ud2 {
        v.push(6);
    }
    let touches_memory = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory)
        || insn.is_stack_instruction()
        || insn.is_string_instruction();
    if touches_memory {
        v.extend([13, 12, 14]);
    } else {
        // Privileged, I/O and segment-loading instructions raise #GP.
        v.push(13);
    }
    v.push(6);
    v
}

/// Vector `v`'s handler, read from the IVT or the IDT as the processor
/// would (task gates and bad entries give None).
pub(crate) fn handler(m: &mut Machine, v: u8) -> Option<Handler> {
    m.peek_vector_handler(v)
        .map(|(address, wide)| Handler { address, wide })
}

/// A guard for hosts whose KVM refuses CR0.PG with #GP (kvm_pvm):
/// breakpoints on the #GP handler and on the #DF handler (where a #GP
/// that cannot be delivered ends up, SDM Vol. 3A 6.15), so that the
/// engine sees the refusal and stops with a message instead of letting
/// the guest fail in its own handler. A guest with neither gate shuts
/// down on the refusal, and the engine looks at the instruction then
/// (`mov_cr0_sets_paging`): no gate is needed for the guard, and the guest
/// runs freely either way.
pub(crate) fn paging_guard(m: &mut Machine) -> HandlerBreakpoints {
    let gp = handler(m, 13);
    let df = handler(m, 8).filter(|df| Some(*df) != gp);
    [gp, df, None, None]
}

/// At the #GP or #DF handler's first instruction (the guard fired): was
/// the fault a MOV to CR0 that set PG? Returns the faulting CS:EIP if so.
/// The frame is error code, EIP, CS (SDM Vol. 3A 6.12.1; #DF pushes an
/// error code of 0); the GPRs are still those the faulting instruction saw.
pub(crate) fn refused_paging(m: &mut Machine, wide: bool) -> Option<(u16, u32)> {
    // Protected mode pushes an error code for #GP; real mode does not.
    let error_code = m.cpu.protected_mode();
    let frame = m.peek_event_frame(wide, error_code)?;
    let (cs, eip) = (frame.cs, frame.eip);
    mov_cr0_sets_paging(m, cs, eip).then_some((cs, eip))
}

/// Whether the instruction at `cs`:`eip` is a MOV to CR0 whose source
/// register (as the GPRs are now) has PG set.
pub(crate) fn mov_cr0_sets_paging(m: &mut Machine, cs: u16, eip: u32) -> bool {
    let Some(lin) = m.peek_segment_base(cs).map(|b| b.wrapping_add(eip)) else {
        return false;
    };
    let Some(bytes) = m.peek_bytes(lin, 3) else {
        return false;
    };
    // MOV CR0, r32: 0F 22 /r with reg = 0 and mod = 11 (SDM Vol. 2B MOV).
    if bytes[0] != 0x0F || bytes[1] != 0x22 || bytes[2] & 0xF8 != 0xC0 {
        return false;
    }
    m.cpu.gpr[(bytes[2] & 7) as usize] & 0x8000_0000 != 0
}

/// Breakpoints for a step of the instruction at CS:EIP, with the vector
/// being injected (if any) first.
pub(crate) fn breakpoints_for_step(
    m: &mut Machine,
    insn: Option<&Instruction>,
    injected: Option<u8>,
) -> HandlerBreakpoints {
    let mut vectors: Vec<u8> = injected.into_iter().collect();
    if injected.is_none() {
        vectors.extend(candidate_vectors(insn));
    }
    // A breakpoint on the instruction being stepped would fire before it
    // runs: a handler there cannot be told from the instruction itself.
    let here = m.cpu.linear_eip();
    let mut out: HandlerBreakpoints = [None; 4];
    let mut n = 0;
    for v in vectors {
        if n == out.len() {
            break;
        }
        if let Some(h) = handler(m, v) {
            if h.address != here && !out[..n].iter().flatten().any(|o| o.address == h.address) {
                out[n] = Some(h);
                n += 1;
            }
        }
    }
    out
}

/// The step stopped at a handler's first instruction: the CPU delivered an
/// event whose frame is at SS:ESP. Take the debugger's TF out of the
/// pushed EFLAGS image when the guest's own TF was clear, and say whether
/// the delivery was a trap after the instruction (INT n, INTO, INT3: the
/// instruction retired) rather than a fault on it.
///
/// `wide` is the gate's frame width; `before_cs`/`before_eip`/`next_eip`
/// describe the stepped instruction.
pub(crate) fn fix_delivered_frame(
    m: &mut Machine,
    wide: bool,
    guest_tf: bool,
    before_cs: u16,
    before_eip: u32,
    next_eip: Option<u32>,
) -> bool {
    // Frame: [error code] EIP CS EFLAGS; which one it is shows in whether
    // EIP/CS are on top or one slot up.
    let found = [false, true].into_iter().find_map(|error_code| {
        let f = m.peek_event_frame(wide, error_code)?;
        if f.cs != before_cs {
            return None;
        }
        if f.eip == before_eip {
            Some((f, false))
        } else if Some(f.eip) == next_eip {
            Some((f, true))
        } else {
            None
        }
    });
    // Delivery clears RF (SDM Vol. 3A 6.12.1); the RF in the vCPU's flags
    // is KVM's, set so that resuming does not hit the breakpoint again.
    m.cpu.eflags &= !RF;
    let Some((frame, retired)) = found else {
        return false;
    };
    if !guest_tf {
        if let Some(pa) = m.peek_translation(frame.eflags_at.wrapping_add(1)) {
            if let Some(b) = m.mem().read_plain(pa) {
                // TF is bit 8: bit 0 of the image's second byte.
                let clean = b & !((TF >> 8) as u8);
                if clean != b {
                    m.phys_write(pa, 1, clean as u64);
                }
            }
        }
    }
    retired
}
