//! PATM, the patch manager (docs/raw.md, "PATM"): the sensitive
//! instructions CSAM finds in the guest's ring-0 code that can be done
//! without the monitor are replaced by a 5-byte `JMP rel32` into *patch
//! code* in the hypervisor area — real 32-bit x86, generated with dynasmrt
//! and run by the substrate at ring 1 — which does what the instruction
//! does to the guest's *virtual* state and jumps back. The monitor is not
//! entered; a patch costs a handful of substrate instructions where a trap
//! costs a monitor entry.
//!
//! Patched here: CLI, STI, PUSHFD, POPFD (32-bit code). Each patch's code
//! follows three rules that keep the engine exact (core::substrate):
//!
//! 1. **Precise faults.** The only instructions that can fault (the guest
//!    stack accesses of PUSHFD and POPFD) come before anything of the
//!    guest's state changes; the monitor maps a fault in patch code back
//!    to the site and runs the instruction on the guest view.
//! 2. **One guest instruction.** Patch code retires uncounted but for its
//!    jump back, which retires the guest instruction the patch stands for;
//!    interrupts are not taken inside it.
//! 3. **Bail out when unsure.** What the fast path does not handle (a POPF
//!    of TF, NT or IOPL, a 16-bit stack) goes to a *bail point*, an
//!    execution breakpoint, where the monitor runs the guest's instruction
//!    itself, exactly as for a trap patch.
//!
//! Patch code reaches monitor memory by absolute addresses with an SS
//! override: the guest's DS at a kernel entry may be a user segment, but
//! its kernel stack segment is flat (the monitor patches only while it
//! is, `Patm::usable`).
//!
//! The guest's IF lives in the substrate's virtual-interrupt gate
//! (`layout::VFLAGS`, IF in bit 9 as in EFLAGS): CLI and STI are one store
//! into it; PUSHFD merges it into the image, POPFD takes it from there.

use std::collections::BTreeMap;

use dynasmrt::{dynasm, x86::X86Relocation, DynasmApi, DynasmLabelApi, VecAssembler};
use ringside_core::cpu::{flags, SegReg};
use ringside_core::substrate::{SubstrateHooks, GATE_STI};
use ringside_core::Machine;

/// Where PATM's state and code live in monitor memory (offsets from the
/// area's base; `monitor::layout` has the rest).
pub mod layout {
    /// The guest's virtual EFLAGS.IF (bit 9; nothing else is ever set).
    pub const VFLAGS: u32 = 0x3_0000;
    /// The virtual-interrupt gate byte: VFLAGS's second byte.
    pub const GATE: u32 = VFLAGS + 1;
    /// Scratch dwords for patch code.
    pub const SCRATCH_EAX: u32 = 0x3_0010;
    pub const SCRATCH_IMAGE: u32 = 0x3_0014;
    pub const SCRATCH_IMAGE2: u32 = 0x3_0018;
    pub const SCRATCH_FLAGS: u32 = 0x3_001C;
    /// The gate as it was before an IRETD patch changed it (the monitor
    /// puts it back when the IRETD then faults).
    pub const SCRATCH_GATE: u32 = 0x3_0020;
    /// One execution counter (a dword) per patch slot.
    pub const COUNTS: u32 = 0x3_1000;
    /// Patch code: `SLOTS` slots of `SLOT` bytes.
    pub const CODE: u32 = 0x4_0000;
    pub const SLOT: u32 = 256;
    pub const SLOTS: u32 = 0xF00;
}

/// What a patch stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cli,
    Sti,
    Pushfd,
    Popfd,
    /// PUSH of a segment register (32-bit operand size): the selector's
    /// RPL 1 becomes the guest's 0.
    PushSreg(SegReg),
    /// IRETD to ring 3 (to ring 0, to v86 or out of a task: bail).
    Iretd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cli => "cli",
            Kind::Sti => "sti",
            Kind::Pushfd => "pushfd",
            Kind::Popfd => "popfd",
            Kind::PushSreg(_) => "push-sreg",
            Kind::Iretd => "iretd",
        }
    }
}

/// One installed jump patch.
#[derive(Clone, Debug)]
pub struct Patch {
    pub kind: Kind,
    /// The guest instruction's linear address and physical page.
    pub site: u32,
    pub phys: u32,
    /// Its original bytes (one or two, on one page).
    pub original: Vec<u8>,
    pub slot: u32,
    /// The counted jump back, and the bail point if the patch has one.
    pub exit: u32,
    pub bail: Option<u32>,
}

impl Patch {
    /// Whether the guest's bytes at the site are still the patched
    /// instruction's.
    pub fn intact(&self, m: &Machine) -> bool {
        self.original
            .iter()
            .enumerate()
            .all(|(i, &b)| m.mem().read_plain(self.phys + i as u32) == Some(b))
    }
}

/// Why patches went away (VirtualBox's statistics).
#[derive(Default, Clone, Copy, Debug)]
pub struct Removed {
    /// The guest wrote over the patched instruction.
    pub dirty: u64,
    /// The site's linear address now maps other code (a new address space
    /// or page tables changed).
    pub remapped: u64,
    /// Patch memory was full and every patch was dropped.
    pub flushed: u64,
}

/// The patch manager.
pub struct Patm {
    /// `raw.patm`: when false nothing is patched and every sensitive
    /// instruction traps.
    pub enabled: bool,
    area: u32,
    patches: BTreeMap<u32, Patch>,
    free: Vec<u32>,
    next_slot: u32,
    /// The hooks the substrate honours (core::substrate): lent to the
    /// machine while the substrate runs, kept here between stretches.
    hooks: Option<Box<SubstrateHooks>>,
    window: (u32, u32),
    /// Changes whenever the set of patches or bail points changes.
    pub version: u64,
    /// Patches installed, by `Kind::name`.
    pub installed: BTreeMap<&'static str, u64>,
    pub removed: Removed,
    /// Execution counts of removed patches (live ones are in monitor memory).
    retired_executions: u64,
}

impl Patm {
    pub fn new(area: u32, enabled: bool) -> Patm {
        let window = (area + layout::CODE, layout::SLOTS * layout::SLOT);
        let hooks = SubstrateHooks {
            window,
            gate: layout::GATE,
            ..SubstrateHooks::default()
        };
        Patm {
            enabled,
            area,
            patches: BTreeMap::new(),
            free: Vec::new(),
            next_slot: 0,
            hooks: Some(Box::new(hooks)),
            window,
            version: 0,
            installed: BTreeMap::new(),
            removed: Removed::default(),
            retired_executions: 0,
        }
    }

    /// The patch-code window: linear base and length.
    pub fn window(&self) -> (u32, u32) {
        self.window
    }

    /// The hooks, for `Machine::substrate` while the substrate runs.
    pub fn lend_hooks(&mut self) -> Option<Box<SubstrateHooks>> {
        self.hooks.take()
    }

    /// The hooks back from the machine after the substrate ran.
    pub fn take_back_hooks(&mut self, hooks: Option<Box<SubstrateHooks>>) {
        if hooks.is_some() {
            self.hooks = hooks;
        }
    }

    fn hooks(&mut self) -> &mut SubstrateHooks {
        self.hooks
            .as_deref_mut()
            .expect("the hooks are lent only while the substrate runs, when nothing patches")
    }

    pub fn patches(&self) -> impl Iterator<Item = &Patch> {
        self.patches.values()
    }

    pub fn is_patched(&self, site: u32) -> bool {
        self.patches.contains_key(&site)
    }

    /// The bail points, for the substrate's breakpoints.
    pub fn bail_points(&self) -> impl Iterator<Item = u32> + '_ {
        self.patches.values().filter_map(|p| p.bail)
    }

    /// The patch whose code holds linear address `lin`.
    pub fn patch_at(&self, lin: u32) -> Option<&Patch> {
        let off = lin.wrapping_sub(self.area + layout::CODE);
        if off >= layout::SLOTS * layout::SLOT {
            return None;
        }
        let slot = off / layout::SLOT;
        self.patches.values().find(|p| p.slot == slot)
    }

    /// Times patch code ran, all patches (live and removed).
    pub fn executions(&self, m: &Machine) -> u64 {
        let live: u64 = m.mem().monitor().map_or(0, |mon| {
            self.patches
                .values()
                .map(|p| {
                    let at = (layout::COUNTS + 4 * p.slot) as usize;
                    u32::from_le_bytes(mon[at..at + 4].try_into().expect("4 bytes")) as u64
                })
                .sum()
        });
        live + self.retired_executions
    }

    /// Install a jump patch for the one-byte instruction `kind` at linear
    /// `site` (physical `phys`, original byte `original`). Returns false
    /// when there is no room.
    pub fn install(
        &mut self,
        m: &mut Machine,
        site: u32,
        phys: u32,
        original: &[u8],
        kind: Kind,
    ) -> bool {
        if self.patches.contains_key(&site) {
            return true;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.next_slot < layout::SLOTS => {
                self.next_slot += 1;
                self.next_slot - 1
            }
            None => {
                let n = self.patches.len() as u64;
                self.clear(m);
                self.removed.flushed += n;
                return false;
            }
        };
        let code = self.area + layout::CODE + slot * layout::SLOT;
        let next = site.wrapping_add(original.len() as u32);
        let (bytes, exit, bail) = assemble(self.area, code, slot, kind, next);
        debug_assert!(bytes.len() as u32 <= layout::SLOT);
        if m.write_monitor(code - self.area, &bytes).is_err()
            || m.write_monitor(layout::COUNTS + 4 * slot, &[0; 4]).is_err()
        {
            self.free.push(slot);
            return false;
        }
        let rel = code.wrapping_sub(site.wrapping_add(5));
        let mut jmp = [0xE9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        self.hooks().fetch.insert(site, jmp);
        self.hooks().counted.insert(exit);
        m.invalidate_code(phys >> 12);
        self.patches.insert(
            site,
            Patch {
                kind,
                site,
                phys,
                original: original.to_vec(),
                slot,
                exit,
                bail,
            },
        );
        *self.installed.entry(kind.name()).or_default() += 1;
        self.version += 1;
        true
    }

    fn remove(&mut self, m: &mut Machine, site: u32) {
        let Some(p) = self.patches.remove(&site) else {
            return;
        };
        if let Some(mon) = m.mem().monitor() {
            let at = (layout::COUNTS + 4 * p.slot) as usize;
            self.retired_executions +=
                u32::from_le_bytes(mon[at..at + 4].try_into().expect("4 bytes")) as u64;
        }
        self.hooks().fetch.remove(&site);
        self.hooks().counted.remove(&p.exit);
        self.free.push(p.slot);
        m.invalidate_code(p.phys >> 12);
        self.version += 1;
    }

    /// Drop every patch.
    pub fn clear(&mut self, m: &mut Machine) {
        let sites: Vec<u32> = self.patches.keys().copied().collect();
        for s in sites {
            self.remove(m, s);
        }
    }

    /// Physical page `page` was written: remove the patches whose
    /// instruction changed (a write over a patched instruction).
    pub fn page_written(&mut self, m: &mut Machine, page: u32) {
        let dirty: Vec<u32> = self
            .patches
            .values()
            .filter(|p| p.phys >> 12 == page && !p.intact(m))
            .map(|p| p.site)
            .collect();
        for s in dirty {
            self.remove(m, s);
            self.removed.dirty += 1;
        }
    }

    /// Remove the patches whose linear address no longer reaches the
    /// patched instruction (a new address space, changed page tables).
    pub fn verify_mappings(&mut self, m: &mut Machine) {
        let stale: Vec<u32> = self
            .patches
            .values()
            .filter(|p| m.peek_translation(p.site) != Some(p.phys) || !p.intact(m))
            .map(|p| p.site)
            .collect();
        for s in stale {
            self.remove(m, s);
            self.removed.remapped += 1;
        }
    }
}

/// Absolute address of monitor-memory offset `off` as a dynasm operand.
fn at(area: u32, off: u32) -> i32 {
    area.wrapping_add(off) as i32
}

/// Assemble the patch code for `kind` at linear `code` (slot `slot`),
/// returning to `next`. Returns the bytes, the linear address of the
/// counted jump back and the bail point, if any.
fn assemble(area: u32, code: u32, slot: u32, kind: Kind, next: u32) -> (Vec<u8>, u32, Option<u32>) {
    let gate = at(area, layout::GATE);
    let vflags = at(area, layout::VFLAGS);
    let eax_save = at(area, layout::SCRATCH_EAX);
    let image = at(area, layout::SCRATCH_IMAGE);
    let image2 = at(area, layout::SCRATCH_IMAGE2);
    let flags_save = at(area, layout::SCRATCH_FLAGS);
    let gate_save = at(area, layout::SCRATCH_GATE);
    let iret_bail = (flags::VM | flags::NT | flags::IOPL | flags::TF) as i32;
    let count = at(area, layout::COUNTS + 4 * slot);
    let not_if_iopl = !(flags::IF | flags::IOPL) as i32;
    let popf_bail = (flags::TF | flags::NT | flags::IOPL) as i32;
    let mut ops = VecAssembler::<X86Relocation>::new(code as usize);
    // The execution count, kept without touching the flags (LEA): EAX is
    // saved in the scratch dword by the caller of this fragment.
    macro_rules! count_and_restore_eax {
        () => {
            dynasm!(ops
                ; .arch x86
                ; ss mov eax, [count]
                ; lea eax, [eax + 1]
                ; ss mov [count], eax
                ; ss mov eax, [eax_save]
            )
        };
    }
    // EAX and the arithmetic flags into scratch (LAHF, SETO).
    macro_rules! save_eax_and_flags {
        () => {
            dynasm!(ops
                ; .arch x86
                ; ss mov [eax_save], eax
                ; lahf
                ; seto al
                ; ss mov [flags_save], eax
            )
        };
    }
    // The arithmetic flags back (ADD AL,7Fh sets OF from the saved SETO
    // byte; SAHF the others).
    macro_rules! restore_flags {
        () => {
            dynasm!(ops
                ; .arch x86
                ; ss mov eax, [flags_save]
                ; add al, 0x7F
                ; sahf
            )
        };
    }
    macro_rules! restore_flags_and_eax {
        () => {
            restore_flags!();
            dynasm!(ops ; .arch x86 ; ss mov eax, [eax_save]);
        };
    }
    // To `bail_restore` unless SS is a 32-bit stack (LAR, the B bit).
    macro_rules! bail_unless_32_bit_stack {
        () => {
            dynasm!(ops
                ; .arch x86
                ; mov eax, ss
                ; lar eax, eax
                ; test eax, 0x0040_0000
                ; jz >bail_restore
            )
        };
    }
    let mut bail = None;
    match kind {
        // Below.
        Kind::PushSreg(_) | Kind::Iretd => {}
        Kind::Cli => {
            dynasm!(ops
                ; .arch x86
                ; ss mov BYTE [gate], 0
                ; ss mov [eax_save], eax
            );
            count_and_restore_eax!();
        }
        Kind::Sti => {
            dynasm!(ops
                ; .arch x86
                ; ss mov BYTE [gate], GATE_STI as i8
                ; ss mov [eax_save], eax
            );
            count_and_restore_eax!();
        }
        Kind::Pushfd => {
            // The guest's push first (a fault there commits nothing); then
            // the image gets the virtual IF and IOPL 0, and the real
            // flags, which the AND and OR change, come back with POPFD
            // (at ring 1 it cannot touch the real IF or IOPL).
            dynasm!(ops
                ; .arch x86
                ; pushf
                ; ss pop DWORD [image]
                ; ss mov [eax_save], eax
                ; ss mov eax, [image]
                ; and eax, not_if_iopl
                ; ss or eax, [vflags]
                ; ss mov [image2], eax
                ; ss push DWORD [image]
                ; popf
                ; ss push DWORD [image2]
            );
            count_and_restore_eax!();
        }
        Kind::Popfd => {
            // A 32-bit stack only ([ESP] addresses the top), checked with
            // LAR, which changes ZF: the arithmetic flags are saved first
            // (LAHF, SETO) and restored (ADD AL,7Fh sets OF from AL; SAHF
            // the rest) before the read of the image, the one access that
            // can fault, so that a fault finds every register and flag the
            // guest's. A POPF of TF, NT or IOPL bails.
            save_eax_and_flags!();
            bail_unless_32_bit_stack!();
            restore_flags_and_eax!();
            dynasm!(ops
                ; .arch x86
                ; mov eax, [esp]
                ; test eax, popf_bail
                ; jnz >bail_restore
                ; shr eax, 8
                ; and eax, 2
                ; ss mov [gate], al
            );
            count_and_restore_eax!();
            dynasm!(ops
                ; .arch x86
                ; popf
            );
        }
    }
    if let Kind::PushSreg(sreg) = kind {
        // The guest's push first (a fault commits nothing); then the
        // pushed selector is popped, its RPL 1 made 0, and pushed back
        // into the same slot (POP and PUSH follow SS.B as the guest's
        // PUSH did); the flags are saved and restored around it.
        match sreg {
            SegReg::Es => dynasm!(ops ; .arch x86 ; push es),
            SegReg::Cs => dynasm!(ops ; .arch x86 ; push cs),
            SegReg::Ss => dynasm!(ops ; .arch x86 ; push ss),
            SegReg::Ds => dynasm!(ops ; .arch x86 ; push ds),
            SegReg::Fs => dynasm!(ops ; .arch x86 ; push fs),
            SegReg::Gs => dynasm!(ops ; .arch x86 ; push gs),
        }
        save_eax_and_flags!();
        dynasm!(ops
            ; .arch x86
            ; pop eax
            ; ss mov [image], eax
            ; and eax, 3
            ; cmp eax, 1
            ; jne >keep
            ; ss and DWORD [image], !3
            ; keep:
            ; ss push DWORD [image]
        );
        restore_flags!();
        count_and_restore_eax!();
    }
    if kind == Kind::Iretd {
        // A 32-bit stack only, checked with LAR (flags saved first). The
        // frame is read with EAX and the flags the guest's, one dword at a
        // time, so that a fault there commits nothing — CS first: a return
        // to ring 0 bails before the outer-ring slots are touched; then
        // the gate takes the image's IF (its old value kept for the
        // monitor, should the IRETD itself fault) and the substrate's IRETD
        // returns to ring 3.
        save_eax_and_flags!();
        bail_unless_32_bit_stack!();
        restore_flags_and_eax!();
        dynasm!(ops
            ; .arch x86
            ; mov eax, [esp + 4]
            ; and eax, 3
            ; cmp eax, 3
            ; jne >bail_restore
        );
        restore_flags_and_eax!();
        dynasm!(ops
            ; .arch x86
            ; mov eax, [esp + 16]
            ; ss mov eax, [eax_save]
            ; mov eax, [esp + 8]
            ; ss mov [image2], eax
            ; test eax, iret_bail
            ; jnz >bail_restore
            ; ss movzx eax, BYTE [gate]
            ; ss mov [gate_save], eax
            ; ss mov eax, [image2]
            ; shr eax, 8
            ; and eax, 2
            ; ss mov [gate], al
        );
        dynasm!(ops
            ; .arch x86
            ; ss mov eax, [count]
            ; lea eax, [eax + 1]
            ; ss mov [count], eax
        );
        restore_flags_and_eax!();
    }
    let bailing = matches!(kind, Kind::Popfd | Kind::Iretd);
    // The jump back, encoded here: its displacement wraps around the
    // 32-bit linear space (patch code sits at the top, guest code below).
    let exit = code + ops.offset().0 as u32;
    if kind == Kind::Iretd {
        // The IRETD itself retires the guest's.
        dynasm!(ops ; .arch x86 ; iretd);
    } else {
        let mut jmp = [0xE9u8, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&next.wrapping_sub(exit.wrapping_add(5)).to_le_bytes());
        ops.extend(jmp);
    }
    if bailing {
        dynasm!(ops ; .arch x86 ; bail_restore:);
        restore_flags_and_eax!();
        bail = Some(code + ops.offset().0 as u32);
        dynasm!(ops
            ; .arch x86
            ; int3
        );
    }
    let bytes = ops
        .finalize()
        .expect("patch code has only local labels, all defined");
    (bytes, exit, bail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    fn decode(bytes: &[u8], ip: u32) -> Vec<iced_x86::Instruction> {
        Decoder::with_ip(32, bytes, ip as u64, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn every_patch_fits_its_slot_and_jumps_back_to_the_next_instruction() {
        let area = 0xFFC0_0000;
        for kind in [
            Kind::Cli,
            Kind::Sti,
            Kind::Pushfd,
            Kind::Popfd,
            Kind::Iretd,
            Kind::PushSreg(SegReg::Ds),
            Kind::PushSreg(SegReg::Gs),
        ] {
            let code = area + layout::CODE + 3 * layout::SLOT;
            let (bytes, exit, _) = assemble(area, code, 3, kind, 0xC010_0001);
            assert!(
                bytes.len() as u32 <= layout::SLOT,
                "{kind:?}: {}",
                bytes.len()
            );
            let insns = decode(&bytes, code);
            let back = insns.iter().find(|i| i.ip32() == exit).expect("exit");
            if kind == Kind::Iretd {
                assert_eq!(back.mnemonic(), Mnemonic::Iretd);
            } else {
                assert_eq!(back.mnemonic(), Mnemonic::Jmp, "{kind:?}");
                assert_eq!(back.near_branch32(), 0xC010_0001, "{kind:?}");
            }
        }
    }

    #[test]
    fn pushfd_pushes_first_so_a_stack_fault_commits_nothing() {
        let area = 0xFFC0_0000;
        let code = area + layout::CODE;
        let (bytes, _, _) = assemble(area, code, 0, Kind::Pushfd, 0x1000);
        assert_eq!(decode(&bytes, code)[0].mnemonic(), Mnemonic::Pushfd);
    }

    #[test]
    fn popfd_has_a_bail_point_and_the_others_do_not() {
        let area = 0xFFC0_0000;
        let code = area + layout::CODE;
        for (kind, has) in [
            (Kind::Cli, false),
            (Kind::Sti, false),
            (Kind::Pushfd, false),
            (Kind::Popfd, true),
            (Kind::Iretd, true),
            (Kind::PushSreg(SegReg::Es), false),
        ] {
            let (bytes, _, bail) = assemble(area, code, 0, kind, 0x1000);
            assert_eq!(bail.is_some(), has, "{kind:?}");
            if let Some(b) = bail {
                let i = decode(&bytes, code)
                    .into_iter()
                    .find(|i| i.ip32() == b)
                    .expect("bail point on an instruction boundary");
                assert_eq!(i.mnemonic(), Mnemonic::Int3);
            }
        }
    }
}
