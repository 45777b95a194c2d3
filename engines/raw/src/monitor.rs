//! The monitor's two views of one CPU (docs/raw.md, "State: guest view
//! and substrate view"). [`enter`] turns the guest's state in `m.cpu` into
//! the state the substrate runs — ring 0 compressed to ring 1, the shadow
//! GDT, IDT, LDT and TSS in the hypervisor area, real IF = 1 and IOPL = 0
//! — and returns what only the guest view holds; [`leave`] turns it back.
//! Between the two, the substrate (the interpreter acting as bare
//! hardware) really runs guest code at CPL 1 and 3 through these tables:
//! a fault or interrupt goes through the shadow IDT into a ring-0 monitor
//! stub (one HLT per vector), so the substrate halting at CPL 0 means
//! "the monitor is entered", and the stub says which vector.

use std::sync::Arc;

use ringside_core::cpu::{attr, flags, SegReg, Segment, TableReg};
use ringside_core::exec::needs_paged_protected_mode;
use ringside_core::memory::MemoryError;
use ringside_core::Machine;
use thiserror::Error;

use crate::shadow::{compress_selector, shadow_idt_gate, shadow_table};

/// The hypervisor area's first choice: the top 4 MiB of the linear space.
pub const DEFAULT_AREA: u32 = 0xFFC0_0000;

/// Where things are in monitor memory (offsets from the area's base).
pub mod layout {
    /// The shadow GDT: 64 KiB, the most a GDT can be.
    pub const GDT: u32 = 0x0_0000;
    /// The shadow IDT: 256 gates.
    pub const IDT: u32 = 0x1_0000;
    /// The monitor's TSS (no I/O bitmap: every port access at CPL 1 and 3
    /// faults, IOPL being 0).
    pub const TSS: u32 = 0x1_0800;
    pub const TSS_LIMIT: u32 = 0x67;
    /// One 8-byte stub per vector, then the SYSENTER stub.
    pub const STUBS: u32 = 0x1_1000;
    pub const SYSENTER_STUB: u32 = STUBS + 256 * 8;
    /// The monitor's ring-0 stack (8 KiB below `STACK_TOP`).
    pub const STACK_TOP: u32 = 0x1_4000;
    /// The shadow LDT: 64 KiB.
    pub const LDT: u32 = 0x2_0000;
}

/// The monitor's own GDT entries, at the top of the 64 KiB shadow GDT
/// (a guest GDT must end below them).
pub const MONITOR_CS: u16 = 0xFFE8;
pub const MONITOR_SS: u16 = 0xFFF0;
pub const MONITOR_TSS: u16 = 0xFFF8;

#[derive(Debug, Error)]
pub enum EnterError {
    /// The guest is in a mode ring compression cannot run.
    #[error("raw mode cannot run the guest now: {0}")]
    Mode(&'static str),
    /// The guest's page directory maps the hypervisor area.
    #[error("the guest maps the hypervisor area at {0:#x}")]
    AreaClash(u32),
    #[error("the guest's GDT (limit {0:#x}) reaches the monitor's descriptors")]
    GdtTooLarge(u16),
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// What only the guest view holds while the substrate runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestView {
    pub area: u32,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub ldtr: Segment,
    pub tr: Segment,
    /// The guest's IF and IOPL (the virtual ones).
    pub eflags_if_iopl: u32,
    pub sysenter: (u32, u32, u32),
    /// Software-interrupt vectors the substrate delivers itself from
    /// ring 3 (core::substrate's `direct`).
    pub direct: [u64; 4],
    /// The guest's GDT and LDT as they were at `enter`, to carry the
    /// accessed bits the substrate sets in the shadows back (`leave`).
    guest_gdt: Arc<[u8]>,
    guest_ldt: Arc<[u8]>,
}

const IF_IOPL: u32 = flags::IF | flags::IOPL;

/// Why the execution manager must keep raw mode away from the guest now:
/// the modes ring compression needs, and no code or stack of the guest's
/// own at ring 1 or 2 (which compressed ring 0 could not be told from).
pub fn cannot_run(m: &Machine) -> Option<&'static str> {
    if let Some(reason) = needs_paged_protected_mode(m) {
        return Some(reason);
    }
    let middle = |s: &Segment| matches!(s.dpl(), 1 | 2) || matches!(s.selector & 3, 1 | 2);
    if middle(m.cpu.seg(SegReg::Cs)) || middle(m.cpu.seg(SegReg::Ss)) {
        return Some("ring-1-or-2");
    }
    None
}

/// Whether IDT gate `gate` is a system-call gate the substrate can take
/// directly: present, DPL 3, a 32-bit interrupt or trap gate whose target
/// is a present, non-conforming ring-0 code segment of the guest's GDT.
fn is_system_call_gate(gate: u64, gdt: &[u8]) -> bool {
    use ringside_core::cpu::segments::{system_type, Descriptor};
    let gate = Descriptor(gate);
    if !gate.present()
        || gate.dpl() != 3
        || !matches!(
            gate.typ(),
            system_type::INT_GATE32 | system_type::TRAP_GATE32
        )
        || gate.is_code_or_data()
    {
        return false;
    }
    let sel = gate.gate_selector();
    let i = (sel & !7) as usize;
    if sel & 4 != 0 || i == 0 || i + 8 > gdt.len() {
        return false;
    }
    let code = Descriptor(u64::from_le_bytes(
        gdt[i..i + 8].try_into().expect("8 bytes"),
    ));
    code.present() && code.is_code() && !code.conforming() && code.dpl() == 0
}

/// A segment register's cache, compressed like its descriptor.
fn compress_segment(s: &Segment) -> Segment {
    if s.is_unusable() || s.attr & attr::S == 0 {
        return *s;
    }
    let conforming = s.attr & attr::CODE != 0 && s.attr & attr::DC != 0;
    let mut out = *s;
    out.selector = compress_selector(s.selector);
    if s.dpl() == 0 && !conforming {
        out.attr = out.attr & !attr::DPL_MASK | 1 << attr::DPL_SHIFT;
    }
    out
}

/// The guest's cache from the substrate's: the inverse of
/// `compress_segment` for the segments `cannot_run` lets through.
fn expand_segment(s: &Segment) -> Segment {
    if s.is_unusable() || s.attr & attr::S == 0 {
        return *s;
    }
    let conforming = s.attr & attr::CODE != 0 && s.attr & attr::DC != 0;
    let mut out = *s;
    if s.selector & 3 == 1 {
        out.selector &= !3;
    }
    if s.dpl() == 1 && !conforming {
        out.attr &= !attr::DPL_MASK;
    }
    out
}

/// A flat 4 GiB descriptor with access byte `access` (G = 1, D/B = 1).
fn flat(access: u8) -> u64 {
    0x00CF_0000_0000_FFFF | (access as u64) << 40
}

/// Read `len` bytes of the guest's linear memory (through its page
/// tables); what is not mapped reads as zeros.
fn read_linear(m: &mut Machine, lin: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = m.peek_into(lin.wrapping_add(done as u32), &mut out[done..]);
        if n == 0 {
            // An unmapped page: leave zeros, go on at the next page.
            let next = (lin.wrapping_add(done as u32) | 0xFFF).wrapping_add(1);
            done += next.wrapping_sub(lin.wrapping_add(done as u32)) as usize;
        } else {
            done += n;
        }
    }
    out
}

/// Turn the guest view in `m.cpu` into the substrate view, building the
/// shadow tables in the hypervisor area at `area`.
pub fn enter(m: &mut Machine, area: u32) -> Result<GuestView, EnterError> {
    enter_with(m, area, &mut ShadowCache::default())
}

/// `enter`, reusing the shadows in `cache` when nothing they were built
/// from changed.
pub fn enter_with(
    m: &mut Machine,
    area: u32,
    cache: &mut ShadowCache,
) -> Result<GuestView, EnterError> {
    if let Some(reason) = cannot_run(m) {
        return Err(EnterError::Mode(reason));
    }
    if m.guest_maps_area(area) {
        return Err(EnterError::AreaClash(area));
    }
    let gdtr = m.cpu.gdtr;
    if gdtr.limit as u32 >= MONITOR_CS as u32 {
        return Err(EnterError::GdtTooLarge(gdtr.limit));
    }
    let key = CacheKey {
        area,
        gdtr,
        idtr: m.cpu.idtr,
        ldtr: m.cpu.ldtr,
        tr: m.cpu.tr,
        cr: (m.cpu.cr0, m.cpu.cr3, m.cpu.cr4),
    };
    if cache.holds(m, &key) {
        m.map_hypervisor_area(area)?;
    } else {
        cache.key = None;
        let built = build_shadows(m, area)?;
        cache.key = Some(key);
        cache.seq = m.mem().code_write_seq();
        cache.pages = built.pages;
        cache.guest_gdt = built.guest_gdt.into();
        cache.guest_ldt = built.guest_ldt.into();
        cache.direct = built.direct;
        cache.builds += 1;
    }
    // The guest's IF goes into the substrate's virtual-interrupt gate
    // (core::substrate); the real IF is 1.
    m.write_monitor(
        crate::patm::layout::VFLAGS,
        &(m.cpu.eflags & flags::IF).to_le_bytes(),
    )?;
    let (ldtr, direct) = (m.cpu.ldtr, cache.direct);
    let (guest_gdt, guest_ldt) = (cache.guest_gdt.clone(), cache.guest_ldt.clone());
    let idtr = m.cpu.idtr;

    let view = GuestView {
        area,
        gdtr,
        idtr,
        ldtr,
        tr: m.cpu.tr,
        eflags_if_iopl: m.cpu.eflags & IF_IOPL,
        sysenter: (
            m.cpu.msr.sysenter_cs,
            m.cpu.msr.sysenter_esp,
            m.cpu.msr.sysenter_eip,
        ),
        direct,
        guest_gdt,
        guest_ldt,
    };
    let cpu = &mut m.cpu;
    for s in cpu.seg.iter_mut() {
        *s = compress_segment(s);
    }
    cpu.gdtr = TableReg {
        base: area + layout::GDT,
        limit: 0xFFFF,
        _pad: 0,
    };
    cpu.idtr = TableReg {
        base: area + layout::IDT,
        limit: 256 * 8 - 1,
        _pad: 0,
    };
    if !view.guest_ldt.is_empty() {
        cpu.ldtr.base = area + layout::LDT;
    }
    cpu.tr = Segment {
        selector: MONITOR_TSS,
        _pad: 0,
        attr: attr::P | 0xB,
        base: area + layout::TSS,
        limit: layout::TSS_LIMIT,
    };
    cpu.eflags = cpu.eflags & !IF_IOPL | flags::IF;
    // SYSENTER must not reach guest code at ring 0: with SYSENTER_CS 0 it
    // raises #GP(0) at the instruction, committing nothing (SDM Vol. 2B
    // SYSENTER), and the monitor runs it on the guest view.
    cpu.msr.sysenter_cs = 0;
    cpu.msr.sysenter_esp = 0;
    cpu.msr.sysenter_eip = 0;
    Ok(view)
}

/// What `build_shadows` made, for the cache.
struct Built {
    guest_gdt: Vec<u8>,
    guest_ldt: Vec<u8>,
    direct: [u64; 4],
    pages: Vec<u32>,
}

/// Read the guest's tables, map the hypervisor area and write the shadow
/// GDT, IDT, LDT and TSS and the stubs into it; write-monitor the guest's
/// table pages.
fn build_shadows(m: &mut Machine, area: u32) -> Result<Built, EnterError> {
    let gdtr = m.cpu.gdtr;
    let guest_gdt = read_linear(m, gdtr.base, gdtr.limit as usize + 1);
    let idtr = m.cpu.idtr;
    let guest_idt = read_linear(m, idtr.base, (idtr.limit as usize + 1).min(256 * 8));
    let ldtr = m.cpu.ldtr;
    let guest_ldt = if ldtr.is_unusable() || ldtr.selector & !3 == 0 {
        Vec::new()
    } else {
        read_linear(m, ldtr.base, ldtr.limit.min(0xFFFF) as usize + 1)
    };
    m.map_hypervisor_area(area)?;

    // The shadow GDT: the guest's descriptors compressed, the guest's LDT
    // descriptor pointing at the shadow LDT, and the monitor's three.
    let mut gdt = vec![0u8; 0x1_0000];
    gdt[..guest_gdt.len()].copy_from_slice(&shadow_table(&guest_gdt));
    if !guest_ldt.is_empty() {
        let i = (ldtr.selector & !7) as usize;
        if i + 8 <= guest_gdt.len() {
            let d = u64::from_le_bytes(gdt[i..i + 8].try_into().expect("8 bytes"));
            let base = (area + layout::LDT) as u64;
            let d = d & !0xFF00_00FF_FFFF_0000 | (base & 0xFF_FFFF) << 16 | (base >> 24) << 56;
            gdt[i..i + 8].copy_from_slice(&d.to_le_bytes());
        }
    }
    let tss_base = (area + layout::TSS) as u64;
    let tss_desc = layout::TSS_LIMIT as u64
        | (tss_base & 0xFF_FFFF) << 16
        | 0x89 << 40
        | (tss_base >> 24) << 56;
    for (sel, d) in [
        (MONITOR_CS, flat(0x9B)),
        (MONITOR_SS, flat(0x93)),
        (MONITOR_TSS, tss_desc),
    ] {
        let i = sel as usize;
        gdt[i..i + 8].copy_from_slice(&d.to_le_bytes());
    }
    m.write_monitor(layout::GDT, &gdt)?;

    // The shadow IDT: every vector into its stub; the 32 exception vectors
    // always present (the monitor decides what the guest sees).
    // System-call gates (DPL 3, vector 32 and up, a 32-bit interrupt or
    // trap gate to ring-0 code) point at the guest's own handler: a
    // software interrupt from ring 3 then enters the guest's kernel at
    // ring 1 without the monitor (core::substrate, "Direct system calls"),
    // on the ring-1 stack of the shadow TSS, which is the guest's ring-0
    // one. The guest's TSS must be a 32-bit one.
    let tss32 = matches!(m.cpu.tr.attr & 0xF, 0x9 | 0xB) && m.cpu.tr.limit >= 0x67;
    let guest_stack0 = if tss32 {
        let b = read_linear(m, m.cpu.tr.base.wrapping_add(4), 6);
        Some((
            u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            u16::from_le_bytes([b[4], b[5]]),
        ))
    } else {
        None
    };
    let mut direct = [0u64; 4];
    let mut idt = Vec::with_capacity(256 * 8);
    for v in 0..256usize {
        let guest = guest_idt
            .get(v * 8..v * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0);
        let guest = if v < 32 { guest | 1 << 47 } else { guest };
        let gate = if v >= 32 && guest_stack0.is_some() && is_system_call_gate(guest, &guest_gdt) {
            direct[v / 64] |= 1 << (v % 64);
            guest
        } else {
            shadow_idt_gate(guest, MONITOR_CS, area + layout::STUBS + 8 * v as u32)
        };
        idt.extend_from_slice(&gate.to_le_bytes());
    }
    m.write_monitor(layout::IDT, &idt)?;
    m.write_monitor(layout::STUBS, &[0xF4; 256 * 8 + 8])?;
    if !guest_ldt.is_empty() {
        m.write_monitor(layout::LDT, &shadow_table(&guest_ldt))?;
    }
    let mut tss = [0u8; layout::TSS_LIMIT as usize + 1];
    tss[4..8].copy_from_slice(&(area + layout::STACK_TOP).to_le_bytes());
    tss[8..10].copy_from_slice(&MONITOR_SS.to_le_bytes());
    if let Some((esp0, ss0)) = guest_stack0 {
        // SS1:ESP1 = the guest's SS0:ESP0, compressed.
        tss[0x0C..0x10].copy_from_slice(&esp0.to_le_bytes());
        tss[0x10..0x12].copy_from_slice(&compress_selector(ss0).to_le_bytes());
    }
    tss[0x66..0x68].copy_from_slice(&(layout::TSS_LIMIT as u16 + 1).to_le_bytes());
    m.write_monitor(layout::TSS, &tss)?;

    // Write-monitor the guest's GDT and LDT (SELM's write handlers in
    // VirtualBox): their pages count as code pages, so a store there ends
    // the substrate's stretch (core::substrate) and the next `enter`
    // shadows the new descriptors before a segment load can use them.
    let mut pages = Vec::new();
    let mut watch = |m: &mut Machine, base: u32, len: u32| {
        if len == 0 {
            return;
        }
        let mut page = base & !0xFFF;
        let last = base.wrapping_add(len - 1) & !0xFFF;
        loop {
            if let Some(phys) = m.peek_translation(page) {
                m.mark_code_page(phys >> 12);
                pages.push(phys >> 12);
            }
            if page == last {
                break;
            }
            page = page.wrapping_add(0x1000);
        }
    };
    watch(m, gdtr.base, guest_gdt.len() as u32);
    watch(m, ldtr.base, guest_ldt.len() as u32);
    // And, for the direct system calls, its IDT and TSS.
    watch(m, idtr.base, guest_idt.len() as u32);
    if guest_stack0.is_some() {
        watch(m, m.cpu.tr.base, 0x68);
    }

    Ok(Built {
        guest_gdt,
        guest_ldt,
        direct,
        pages,
    })
}

/// The key of what `enter` built: while it and the guest's table pages are
/// unchanged, the shadows in monitor memory are still right.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheKey {
    area: u32,
    gdtr: TableReg,
    idtr: TableReg,
    ldtr: Segment,
    tr: Segment,
    cr: (u32, u32, u32),
}

/// The shadows `enter` built last, kept between entries (VirtualBox's SELM
/// and TRPM keep theirs while their write handlers see no change): the
/// key, the guest's table pages (write-monitored) and the code-write log
/// position after the build.
#[derive(Default)]
pub struct ShadowCache {
    key: Option<CacheKey>,
    seq: u64,
    pages: Vec<u32>,
    guest_gdt: Arc<[u8]>,
    guest_ldt: Arc<[u8]>,
    direct: [u64; 4],
    /// Times the shadows were built (not reused).
    pub builds: u64,
}

impl ShadowCache {
    /// Forget the shadows: the next `enter` builds them again.
    pub fn invalidate(&mut self) {
        self.key = None;
    }

    /// Whether the shadows were built for `key` and no table page was
    /// written since.
    fn holds(&self, m: &Machine, key: &CacheKey) -> bool {
        if self.key.as_ref() != Some(key) {
            return false;
        }
        match m.mem().code_writes_since(self.seq) {
            ringside_core::memory::CodeWrites::All => false,
            ringside_core::memory::CodeWrites::Pages(written) => {
                !written.iter().any(|p| self.pages.contains(p))
            }
        }
    }
}

/// The accessed bits the substrate set in a shadow table (segment loads
/// set them, SDM Vol. 3A 3.4.5) that the guest's table at `base` lacks:
/// the linear addresses of the access bytes to set.
fn accessed_bits_to_carry(m: &Machine, shadow_at: u32, guest: &[u8], base: u32) -> Vec<(u32, u8)> {
    let Some(mon) = m.mem().monitor() else {
        return Vec::new();
    };
    (0..guest.len() / 8)
        .filter_map(|i| {
            let access = 8 * i + 5;
            let shadow = mon[shadow_at as usize + access];
            (guest[access] & 0x10 != 0 && shadow & 1 != 0 && guest[access] & 1 == 0)
                .then(|| (base.wrapping_add(access as u32), guest[access] | 1))
        })
        .collect()
}

/// Turn the substrate view back into the guest's, and take the hypervisor
/// area out of the linear space.
pub fn leave(m: &mut Machine, view: &GuestView) {
    let mut carry = accessed_bits_to_carry(m, layout::GDT, &view.guest_gdt, view.gdtr.base);
    carry.extend(accessed_bits_to_carry(
        m,
        layout::LDT,
        &view.guest_ldt,
        view.ldtr.base,
    ));
    // The guest's IF is what patch code and the monitor left in the gate.
    let vif = m
        .mem()
        .monitor()
        .map_or(view.eflags_if_iopl & flags::IF, |mon| {
            let at = crate::patm::layout::VFLAGS as usize;
            u32::from_le_bytes(mon[at..at + 4].try_into().expect("4 bytes")) & flags::IF
        });
    let cpu = &mut m.cpu;
    for s in cpu.seg.iter_mut() {
        *s = expand_segment(s);
    }
    cpu.gdtr = view.gdtr;
    cpu.idtr = view.idtr;
    cpu.ldtr = view.ldtr;
    cpu.tr = view.tr;
    cpu.eflags = cpu.eflags & !IF_IOPL | (view.eflags_if_iopl & flags::IOPL) | vif;
    (
        cpu.msr.sysenter_cs,
        cpu.msr.sysenter_esp,
        cpu.msr.sysenter_eip,
    ) = view.sysenter;
    m.unmap_hypervisor_area();
    // Into the guest's tables, as the CPU sets them: a supervisor write
    // through the guest's page tables (accessed and dirty bits included).
    for (lin, byte) in carry {
        let _ = m.write_lin::<u8>(lin, byte, false);
    }
}

/// The vector whose stub the substrate halted in (EIP is past the HLT), or
/// 256 for the SYSENTER stub; None when it did not halt in a stub. The
/// stubs are entered through interrupt gates, so IF is 0 there and the
/// substrate reports a halt with interrupts off (`StopReason::DeadHalt`).
pub fn stub_entered(m: &Machine, view: &GuestView) -> Option<u16> {
    if m.cpu.cpl() != 0 {
        return None;
    }
    let off = m
        .cpu
        .eip
        .wrapping_sub(1)
        .wrapping_sub(view.area + layout::STUBS);
    (off <= 256 * 8 && off.is_multiple_of(8)).then_some((off / 8) as u16)
}
