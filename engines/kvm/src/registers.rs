//! `CpuState` <-> the vCPU's register files: the pure translation between
//! ringside's architectural state and the structures the KVM ioctls take
//! (KVM_GET/SET_REGS, _SREGS, _DEBUGREGS, _MSRS, _VCPU_EVENTS, _MP_STATE).
//!
//! Both sides describe segment caches the way VMX does (SDM Vol. 3C
//! 24.4.1): ringside packs the access rights into one word, KVM spreads the
//! same bits over one byte each. The translation is therefore exact, and a
//! round trip is the identity; the tests at the bottom pin that down.

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events,
    KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, KVM_VCPUEVENT_VALID_NMI_PENDING,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI,
};
use ringside_core::cpu::flags::IF;
use ringside_core::cpu::{attr, msr_index, CpuState, Msrs, RunState, SegReg, Segment, TableReg};

/// Everything KVM holds of one vCPU that ringside models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VcpuRegisters {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub debugregs: kvm_debugregs,
    /// IA32_TIME_STAMP_COUNTER and the SYSENTER MSRs, as (index, value).
    /// IA32_APIC_BASE travels in `sregs.apic_base`.
    pub msrs: [(u32, u64); 4],
    pub events: kvm_vcpu_events,
    pub mp_state: u32,
}

/// The MSRs exchanged through KVM_GET/SET_MSRS, in `VcpuRegisters::msrs` order.
pub const MSR_INDICES: [u32; 4] = [
    msr_index::TSC,
    msr_index::SYSENTER_CS,
    msr_index::SYSENTER_ESP,
    msr_index::SYSENTER_EIP,
];

/// A segment cache in KVM's spelling: one field per access-rights bit.
pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let bit = |b: u32| ((s.attr & b) != 0) as u8;
    kvm_segment {
        base: s.base as u64,
        limit: s.limit,
        selector: s.selector,
        type_: (s.attr & attr::TYPE_MASK) as u8,
        s: bit(attr::S),
        dpl: s.dpl(),
        present: bit(attr::P),
        avl: bit(attr::AVL),
        // L (bit 13) is always zero for an IA-32 CPU, but carried as is.
        l: bit(1 << 13),
        db: bit(attr::DB),
        g: bit(attr::G),
        unusable: bit(attr::UNUSABLE),
        padding: 0,
    }
}

/// The inverse of [`segment_to_kvm`].
pub fn segment_from_kvm(k: &kvm_segment) -> Segment {
    let flag = |v: u8, b: u32| if v != 0 { b } else { 0 };
    Segment {
        selector: k.selector,
        _pad: 0,
        attr: (k.type_ as u32 & attr::TYPE_MASK)
            | flag(k.s, attr::S)
            | ((k.dpl as u32 & 3) << attr::DPL_SHIFT)
            | flag(k.present, attr::P)
            | flag(k.avl, attr::AVL)
            | flag(k.l, 1 << 13)
            | flag(k.db, attr::DB)
            | flag(k.g, attr::G)
            | flag(k.unusable, attr::UNUSABLE),
        base: k.base as u32,
        limit: k.limit,
    }
}

fn table_to_kvm(t: &TableReg) -> kvm_dtable {
    kvm_dtable {
        base: t.base as u64,
        limit: t.limit,
        padding: [0; 3],
    }
}

fn table_from_kvm(k: &kvm_dtable) -> TableReg {
    TableReg {
        base: k.base as u32,
        limit: k.limit,
        _pad: 0,
    }
}

/// Translate `cpu` into the vCPU's register files. `tsc` is the value
/// IA32_TIME_STAMP_COUNTER has now (`Machine::tsc`).
pub fn cpu_to_kvm(cpu: &CpuState, tsc: u64) -> VcpuRegisters {
    let g = |r: usize| cpu.gpr[r] as u64;
    let regs = kvm_regs {
        rax: g(0),
        rcx: g(1),
        rdx: g(2),
        rbx: g(3),
        rsp: g(4),
        rbp: g(5),
        rsi: g(6),
        rdi: g(7),
        rip: cpu.eip as u64,
        rflags: cpu.eflags as u64,
        ..Default::default()
    };
    let seg = |s: SegReg| segment_to_kvm(&cpu.seg[s as usize]);
    let sregs = kvm_sregs {
        cs: seg(SegReg::Cs),
        ds: seg(SegReg::Ds),
        es: seg(SegReg::Es),
        fs: seg(SegReg::Fs),
        gs: seg(SegReg::Gs),
        ss: seg(SegReg::Ss),
        tr: segment_to_kvm(&cpu.tr),
        ldt: segment_to_kvm(&cpu.ldtr),
        gdt: table_to_kvm(&cpu.gdtr),
        idt: table_to_kvm(&cpu.idtr),
        cr0: cpu.cr0 as u64,
        cr2: cpu.cr2 as u64,
        cr3: cpu.cr3 as u64,
        cr4: cpu.cr4 as u64,
        cr8: 0,
        efer: 0,
        apic_base: cpu.msr.apic_base,
        // No external interrupt is queued inside KVM at an engine boundary:
        // the engine injects one only right before entering the guest.
        interrupt_bitmap: [0; 4],
    };
    let debugregs = kvm_debugregs {
        db: [
            cpu.dr[0] as u64,
            cpu.dr[1] as u64,
            cpu.dr[2] as u64,
            cpu.dr[3] as u64,
        ],
        dr6: cpu.dr[6] as u64,
        dr7: cpu.dr[7] as u64,
        ..Default::default()
    };
    let msrs = [
        (msr_index::TSC, tsc),
        (msr_index::SYSENTER_CS, cpu.msr.sysenter_cs as u64),
        (msr_index::SYSENTER_ESP, cpu.msr.sysenter_esp as u64),
        (msr_index::SYSENTER_EIP, cpu.msr.sysenter_eip as u64),
    ];
    let mut events = kvm_vcpu_events {
        flags: KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING,
        ..Default::default()
    };
    // VMX refuses "blocking by STI" with IF = 0 (SDM Vol. 3C 26.3.1.5), so
    // the one-instruction shadow is described as the kind that fits.
    if cpu.run.interrupt_shadow {
        events.interrupt.shadow = if cpu.eflags & IF != 0 {
            KVM_X86_SHADOW_INT_STI
        } else {
            KVM_X86_SHADOW_INT_MOV_SS
        } as u8;
    }
    events.nmi.pending = cpu.run.nmi_pending as u8;
    events.nmi.masked = cpu.run.nmi_blocked as u8;
    VcpuRegisters {
        regs,
        sregs,
        debugregs,
        msrs,
        events,
        mp_state: if cpu.run.halted {
            KVM_MP_STATE_HALTED
        } else {
            KVM_MP_STATE_RUNNABLE
        },
    }
}

/// Translate the vCPU's register files back into a `CpuState`. `icount`
/// is the machine's retired-instruction count, against which the TSC is
/// kept as an offset. DR4/DR5 are not stored (they alias DR6/DR7) and
/// read as zero; `shutdown` is never set here (a shutdown is an exit).
pub fn kvm_to_cpu(k: &VcpuRegisters, icount: u64) -> CpuState {
    let r = &k.regs;
    let s = &k.sregs;
    let msr = |index: u32| {
        k.msrs
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |&(_, v)| v)
    };
    let mut seg = [Segment::default(); 6];
    seg[SegReg::Es as usize] = segment_from_kvm(&s.es);
    seg[SegReg::Cs as usize] = segment_from_kvm(&s.cs);
    seg[SegReg::Ss as usize] = segment_from_kvm(&s.ss);
    seg[SegReg::Ds as usize] = segment_from_kvm(&s.ds);
    seg[SegReg::Fs as usize] = segment_from_kvm(&s.fs);
    seg[SegReg::Gs as usize] = segment_from_kvm(&s.gs);
    let d = &k.debugregs;
    CpuState {
        gpr: [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi].map(|v| v as u32),
        eip: r.rip as u32,
        eflags: r.rflags as u32,
        seg,
        ldtr: segment_from_kvm(&s.ldt),
        tr: segment_from_kvm(&s.tr),
        gdtr: table_from_kvm(&s.gdt),
        idtr: table_from_kvm(&s.idt),
        cr0: s.cr0 as u32,
        cr2: s.cr2 as u32,
        cr3: s.cr3 as u32,
        cr4: s.cr4 as u32,
        dr: [
            d.db[0] as u32,
            d.db[1] as u32,
            d.db[2] as u32,
            d.db[3] as u32,
            0,
            0,
            d.dr6 as u32,
            d.dr7 as u32,
        ],
        msr: Msrs {
            tsc_offset: msr(msr_index::TSC).wrapping_sub(icount),
            sysenter_cs: msr(msr_index::SYSENTER_CS) as u32,
            sysenter_esp: msr(msr_index::SYSENTER_ESP) as u32,
            sysenter_eip: msr(msr_index::SYSENTER_EIP) as u32,
            _pad: 0,
            apic_base: s.apic_base,
            // The part's other MSRs (IA32_MISC_ENABLE, the MTRRs, PAT, the
            // performance counters) are the host module's under KVM and not
            // exchanged (docs/kvm-host-deviations.md): the caller keeps
            // ringside's own values.
            ..Msrs::default()
        },
        run: RunState {
            halted: k.mp_state == KVM_MP_STATE_HALTED,
            shutdown: false,
            interrupt_shadow: k.events.interrupt.shadow != 0,
            nmi_pending: k.events.nmi.pending != 0,
            nmi_blocked: k.events.nmi.masked != 0,
            _pad: [0; 3],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_core::cpu::cr0;
    use ringside_core::cpu::flags::{EFLAGS_FIXED_ONES, VM};

    fn assert_round_trip(cpu: &CpuState) {
        let icount = 12_345;
        let tsc = icount + cpu.msr.tsc_offset;
        let back = kvm_to_cpu(&cpu_to_kvm(cpu, tsc), icount);
        assert_eq!(&back, cpu);
    }

    #[test]
    fn reset_state_survives_a_round_trip() {
        assert_round_trip(&CpuState::at_reset());
    }

    #[test]
    fn real_mode_state_survives_a_round_trip() {
        let mut cpu = CpuState::at_reset();
        cpu.seg = [
            Segment::real_mode(0x1000),
            Segment::real_mode(0x07C0),
            Segment::real_mode(0x9000),
            Segment::real_mode(0),
            Segment::real_mode(0xB800),
            Segment::real_mode(0xFFFF),
        ];
        cpu.gpr = [1, 2, 3, 4, 0xFFFE, 6, 7, 8];
        cpu.eip = 0x7C00;
        cpu.eflags = EFLAGS_FIXED_ONES | IF | 0x8D5;
        cpu.run.interrupt_shadow = true;
        cpu.msr.tsc_offset = 99;
        assert_round_trip(&cpu);
    }

    #[test]
    fn flat_protected_mode_state_survives_a_round_trip() {
        let mut cpu = CpuState::at_reset();
        let code = Segment {
            selector: 0x08,
            _pad: 0,
            attr: attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED | attr::DB | attr::G,
            base: 0,
            limit: 0xFFFF_FFFF,
        };
        let data = Segment {
            selector: 0x10,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G,
            ..code
        };
        let null = Segment {
            selector: 0,
            attr: attr::UNUSABLE,
            ..Segment::default()
        };
        cpu.seg = [data, code, data, data, null, null];
        cpu.cr0 = cr0::PE | cr0::ET | cr0::WP;
        cpu.cr4 = 0x10;
        cpu.gdtr = TableReg {
            base: 0x800,
            limit: 0x17,
            _pad: 0,
        };
        cpu.idtr = TableReg {
            base: 0x1000,
            limit: 0x7FF,
            _pad: 0,
        };
        cpu.dr = [
            0x1000,
            0x2000,
            0x3000,
            0x4000,
            0,
            0,
            0xFFFF_0FF1,
            0x0000_0403,
        ];
        cpu.msr.sysenter_cs = 0x08;
        cpu.msr.sysenter_esp = 0x9_0000;
        cpu.msr.sysenter_eip = 0x10_0000;
        cpu.run.nmi_blocked = true;
        cpu.run.halted = true;
        assert_round_trip(&cpu);
    }

    #[test]
    fn virtual_8086_state_survives_a_round_trip() {
        let mut cpu = CpuState::at_reset();
        cpu.cr0 = cr0::PE | cr0::ET;
        cpu.eflags = EFLAGS_FIXED_ONES | VM | IF | (3 << 12);
        cpu.seg = [
            Segment::vm86(0x2000),
            Segment::vm86(0x1234),
            Segment::vm86(0x3000),
            Segment::vm86(0x4000),
            Segment::vm86(0x5000),
            Segment::vm86(0x6000),
        ];
        cpu.tr = Segment {
            selector: 0x28,
            _pad: 0,
            attr: attr::P | 0xB,
            base: 0x2_0000,
            limit: 0x2067,
        };
        cpu.run.nmi_pending = true;
        assert_round_trip(&cpu);
    }

    #[test]
    fn an_unusable_segment_is_marked_unusable_for_kvm() {
        let s = Segment {
            attr: attr::UNUSABLE,
            ..Segment::default()
        };
        assert_eq!(segment_to_kvm(&s).unusable, 1);
        assert_eq!(segment_to_kvm(&Segment::real_mode(0)).unusable, 0);
    }
}
