//! CSAM, the code scanning and analysis manager (docs/raw.md): before the
//! guest's ring-0 code runs at ring 1, it is scanned with iced-x86 by
//! recursive descent from where it is entered, following fall-through and
//! direct branches and calls, and every instruction that would behave
//! differently at ring 1 without faulting is marked as a *site*:
//!
//! - PUSHF and POPF (the real IF and IOPL show, a POPF of IF is lost),
//!   IRET (to the same level it cannot restore IF or IOPL);
//! - SGDT, SIDT, SLDT, STR, SMSW (the shadow tables' addresses show);
//! - LAR, LSL, VERR, VERW (compressed DPLs show);
//! - MOV from a segment register, PUSH of one, far CALL (selectors with
//!   RPL 1 show);
//! - INT n, INT3, INTO, INT1 (delivered by the monitor with the guest's
//!   gate rules), SYSENTER and SYSEXIT;
//! - every indirect branch, RET and RETF: their targets are not known
//!   until they run, so the monitor runs them and scans where they went.
//!
//! The instructions that fault at ring 1 (CLI, STI, HLT, IN, OUT, MOV to
//! and from control and debug registers, LGDT, LIDT, LLDT, LTR, INVLPG,
//! WBINVD, RDMSR, WRMSR, ...) need no mark: the fault brings them to the
//! monitor. This first CSAM places *trap patches* only, as execution
//! breakpoints on the substrate (the guest's bytes are not changed, so
//! what it reads of its code is its own); PATM's jump patches come later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};
use ringside_core::cpu::SegReg;
use ringside_core::Machine;

use crate::patm::Kind;

/// What the scanner knows: the instructions scanned, the sites found, and
/// the physical page each scanned instruction started on.
#[derive(Default)]
pub struct Csam {
    scanned: HashSet<u32>,
    sites: BTreeSet<u32>,
    /// Instructions PATM can patch (32-bit code, one page): linear
    /// address -> (kind, physical address, bytes).
    patchable: BTreeMap<u32, (Kind, u32, Vec<u8>)>,
    /// Physical page -> linear addresses scanned on it.
    pages: HashMap<u32, Vec<u32>>,
    /// The CR3 the scan was made under.
    cr3: Option<u32>,
    pub instructions_scanned: u64,
    pub scans: u64,
    /// Changes whenever sites or patchable instructions change.
    pub version: u64,
    /// Times every scan was forgotten (a new address space).
    pub clears: u64,
}

/// Whether `i` must not run at ring 1 in place of ring 0. (Indirect
/// branches and returns are not sites: the substrate stops before any
/// supervisor instruction CSAM has not scanned, core::substrate.)
fn is_site(i: &Instruction) -> bool {
    let sreg = |r: Register| r.is_segment_register();
    match i.mnemonic() {
        Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Popf | Mnemonic::Popfd => true,
        Mnemonic::Iret | Mnemonic::Iretd => true,
        Mnemonic::Sgdt | Mnemonic::Sidt | Mnemonic::Sldt | Mnemonic::Str | Mnemonic::Smsw => true,
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw => true,
        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1 => true,
        Mnemonic::Sysenter | Mnemonic::Sysexit => true,
        Mnemonic::Mov => {
            i.op_count() == 2 && i.op1_kind() == OpKind::Register && sreg(i.op1_register())
        }
        Mnemonic::Push => i.op0_kind() == OpKind::Register && sreg(i.op0_register()),
        _ => match i.flow_control() {
            // Far CALL, JMP and RET: CALL pushes CS, and a far transfer's
            // selector checks see compressed privilege levels.
            FlowControl::Call | FlowControl::UnconditionalBranch => {
                matches!(i.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
                    || (i.is_call_far_indirect() || i.is_jmp_far_indirect())
            }
            FlowControl::Return => matches!(i.mnemonic(), Mnemonic::Retf),
            FlowControl::IndirectBranch | FlowControl::IndirectCall => {
                i.is_call_far_indirect() || i.is_jmp_far_indirect()
            }
            _ => false,
        },
    }
}

/// What PATM can patch at `i`: CLI, STI, PUSHFD and POPFD without
/// prefixes in 32-bit code.
fn patchable(i: &Instruction, code32: bool) -> Option<Kind> {
    if !code32 || i.len() > 2 {
        return None;
    }
    let kind = match i.code() {
        Code::Cli => Kind::Cli,
        Code::Sti => Kind::Sti,
        Code::Pushfd => Kind::Pushfd,
        Code::Popfd => Kind::Popfd,
        Code::Iretd => Kind::Iretd,
        Code::Pushd_ES => Kind::PushSreg(SegReg::Es),
        Code::Pushd_CS => Kind::PushSreg(SegReg::Cs),
        Code::Pushd_SS => Kind::PushSreg(SegReg::Ss),
        Code::Pushd_DS => Kind::PushSreg(SegReg::Ds),
        Code::Pushd_FS => Kind::PushSreg(SegReg::Fs),
        Code::Pushd_GS => Kind::PushSreg(SegReg::Gs),
        _ => return None,
    };
    // No prefixes: the one- and two-byte forms only.
    let plain = match kind {
        Kind::PushSreg(SegReg::Fs | SegReg::Gs) => i.len() == 2,
        _ => i.len() == 1,
    };
    plain.then_some(kind)
}

/// The most instructions one scan follows (a bound on work per entry).
const SCAN_LIMIT: usize = 4096;

impl Csam {
    /// Forget everything (the guest changed address space).
    pub fn clear(&mut self) {
        self.version += 1;
        self.clears += 1;
        self.scanned.clear();
        self.sites.clear();
        self.patchable.clear();
        self.pages.clear();
    }

    /// Drop what was scanned on physical page `page` (it was written).
    pub fn drop_page(&mut self, page: u32) {
        if let Some(lins) = self.pages.remove(&page) {
            self.version += 1;
            for lin in lins {
                self.scanned.remove(&lin);
                self.sites.remove(&lin);
                self.patchable.remove(&lin);
            }
        }
    }

    /// Physical pages holding scanned code.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    pub fn is_scanned(&self, lin: u32) -> bool {
        self.scanned.contains(&lin)
    }

    /// The scanned set, lent to the substrate's hooks for a stretch.
    pub fn take_scanned(&mut self) -> HashSet<u32> {
        std::mem::take(&mut self.scanned)
    }

    pub fn put_scanned(&mut self, scanned: HashSet<u32>) {
        self.scanned = scanned;
    }

    pub fn sites(&self) -> &BTreeSet<u32> {
        &self.sites
    }

    /// The instructions PATM can patch.
    pub fn patchable(&self) -> &BTreeMap<u32, (Kind, u32, Vec<u8>)> {
        &self.patchable
    }

    /// Make sure the code at `eip` (linear, in the guest's address space
    /// now, CS `code32`) is scanned; scans from there when it is not.
    pub fn ensure_scanned(&mut self, m: &mut Machine, eip: u32, code32: bool) {
        if self.cr3 != Some(m.cpu.cr3) {
            self.clear();
            self.cr3 = Some(m.cpu.cr3);
        }
        if self.scanned.contains(&eip) {
            return;
        }
        self.scans += 1;
        self.version += 1;
        let mut todo = vec![eip];
        let mut budget = SCAN_LIMIT;
        while let Some(start) = todo.pop() {
            let mut at = start;
            loop {
                if budget == 0 || self.scanned.contains(&at) {
                    break;
                }
                let Some(phys) = m.peek_translation(at) else {
                    break;
                };
                let Some(bytes) = m.peek_bytes(at, 15).or_else(|| {
                    // The instruction may end at an unmapped page: take
                    // what there is up to the page end.
                    let n = 0x1000 - (at & 0xFFF);
                    m.peek_bytes(at, n.min(15))
                }) else {
                    break;
                };
                let mut d = Decoder::with_ip(
                    if code32 { 32 } else { 16 },
                    &bytes,
                    at as u64,
                    DecoderOptions::NONE,
                );
                let i = d.decode();
                if i.code() == Code::INVALID {
                    // Let it fault at ring 1: the monitor runs it.
                    self.mark(at, phys, true);
                    budget -= 1;
                    break;
                }
                let site = is_site(&i);
                self.mark(at, phys, site);
                if let Some(kind) = patchable(&i, code32) {
                    let len = i.len();
                    if (phys & 0xFFF) as usize + len <= 0x1000 {
                        self.patchable
                            .insert(at, (kind, phys, bytes[..len].to_vec()));
                    }
                }
                m.mark_code_page(phys >> 12);
                budget -= 1;
                let next = i.next_ip32();
                match i.flow_control() {
                    FlowControl::Next | FlowControl::Interrupt | FlowControl::Exception => {
                        at = next
                    }
                    FlowControl::ConditionalBranch => {
                        if i.op0_kind() == OpKind::NearBranch16
                            || i.op0_kind() == OpKind::NearBranch32
                        {
                            todo.push(i.near_branch_target() as u32);
                        }
                        at = next;
                    }
                    FlowControl::UnconditionalBranch | FlowControl::Call if !site => {
                        if matches!(i.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32) {
                            todo.push(i.near_branch_target() as u32);
                        }
                        if i.flow_control() == FlowControl::Call {
                            at = next;
                        } else {
                            break;
                        }
                    }
                    FlowControl::XbeginXabortXend => at = next,
                    // The callee is scanned when it is reached; the code
                    // after the call now.
                    FlowControl::IndirectCall if !site => at = next,
                    // Sites and ends of flow: the monitor runs them and
                    // scans where control goes.
                    _ => break,
                }
            }
        }
        self.instructions_scanned += (SCAN_LIMIT - budget) as u64;
    }

    fn mark(&mut self, lin: u32, phys: u32, site: bool) {
        self.scanned.insert(lin);
        self.pages.entry(phys >> 12).or_default().push(lin);
        if site {
            self.sites.insert(lin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    fn decode(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Instruction {
        let mut a = CodeAssembler::new(32).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(0x1000).unwrap();
        Decoder::with_ip(32, &bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn the_instructions_that_do_not_fault_at_ring_1_but_differ_are_sites() {
        for site in [
            decode(|a| a.pushfd()),
            decode(|a| a.popfd()),
            decode(|a| a.iretd()),
            decode(|a| a.sgdt(dword_ptr(eax))),
            decode(|a| a.smsw(eax)),
            decode(|a| a.lar(eax, ebx)),
            decode(|a| a.mov(eax, cs)),
            decode(|a| a.push(ds)),
            decode(|a| a.int(0x80)),
            decode(|a| a.retf()),
        ] {
            assert!(is_site(&site), "{site}");
        }
    }

    #[test]
    fn ordinary_and_faulting_instructions_are_not_sites() {
        for plain in [
            decode(|a| a.mov(eax, ebx)),
            decode(|a| a.mov(ds, eax)),
            decode(|a| a.cli()),
            decode(|a| a.hlt()),
            decode(|a| a.add(dword_ptr(eax), 1)),
            decode(|a| a.jmp(eax)),
            decode(|a| a.ret()),
        ] {
            assert!(!is_site(&plain), "{plain}");
        }
    }
}
