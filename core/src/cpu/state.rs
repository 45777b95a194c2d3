//! `CpuState`: every piece of architectural IA-32 state, in one place.
//!
//! This is the single source of truth at every engine boundary (DESIGN.md
//! section 3): when an engine returns, these fields are exact. The struct is
//! `#[repr(C)]` so generated code can address fields by offset; the offsets
//! are pinned by a test at the bottom of this file.

use serde::{Deserialize, Serialize};

use super::flags::{EFLAGS_FIXED_ONES, IF};

/// General register numbers in the encoding order of the manuals (SDM Vol. 2A
/// table 2-2): EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
pub mod reg {
    pub const EAX: usize = 0;
    pub const ECX: usize = 1;
    pub const EDX: usize = 2;
    pub const EBX: usize = 3;
    pub const ESP: usize = 4;
    pub const EBP: usize = 5;
    pub const ESI: usize = 6;
    pub const EDI: usize = 7;
}

/// Segment register numbers in encoding order: ES, CS, SS, DS, FS, GS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];

    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }

    pub fn from_index(i: usize) -> Option<SegReg> {
        Self::ALL.get(i).copied()
    }
}

/// Attribute bits of a segment's hidden descriptor cache, laid out like the
/// VMX "access rights" field (SDM Vol. 3C 24.4.1): descriptor bits 40-47 in
/// bits 0-7, bits 52-55 in bits 12-15, and bit 16 meaning "unusable" (a null
/// selector was loaded).
pub mod attr {
    pub const TYPE_MASK: u32 = 0xF;
    /// Data: accessed. Code: accessed.
    pub const ACCESSED: u32 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const RW: u32 = 1 << 1;
    /// Data: expand-down. Code: conforming.
    pub const DC: u32 = 1 << 2;
    /// Set for code segments.
    pub const CODE: u32 = 1 << 3;
    /// S: 1 for code/data, 0 for system descriptors.
    pub const S: u32 = 1 << 4;
    pub const DPL_SHIFT: u32 = 5;
    pub const DPL_MASK: u32 = 3 << 5;
    pub const P: u32 = 1 << 7;
    pub const AVL: u32 = 1 << 12;
    /// D/B: default operand size (code), big stack (SS), upper bound (expand-down).
    pub const DB: u32 = 1 << 14;
    pub const G: u32 = 1 << 15;
    pub const UNUSABLE: u32 = 1 << 16;

    /// A writable, accessed, present data segment: what real mode loads.
    pub const REAL_MODE_DATA: u32 = P | S | RW | ACCESSED;
}

/// A segment register: the visible selector and the hidden descriptor cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub selector: u16,
    #[serde(skip)]
    pub _pad: u16,
    /// Attributes, see [`attr`].
    pub attr: u32,
    pub base: u32,
    /// The limit in bytes (granularity already applied).
    pub limit: u32,
}

impl Segment {
    /// A segment as real mode loads it: base = selector * 16, limit 64 KiB.
    pub fn real_mode(selector: u16) -> Segment {
        Segment {
            selector,
            _pad: 0,
            attr: attr::REAL_MODE_DATA,
            base: (selector as u32) << 4,
            limit: 0xFFFF,
        }
    }

    /// A segment as virtual-8086 mode loads it (SDM Vol. 3A 20.1.1).
    pub fn vm86(selector: u16) -> Segment {
        Segment {
            attr: attr::REAL_MODE_DATA | (3 << attr::DPL_SHIFT),
            ..Segment::real_mode(selector)
        }
    }

    pub fn dpl(&self) -> u8 {
        ((self.attr & attr::DPL_MASK) >> attr::DPL_SHIFT) as u8
    }
    pub fn is_unusable(&self) -> bool {
        self.attr & attr::UNUSABLE != 0
    }
    pub fn is_code(&self) -> bool {
        self.attr & (attr::S | attr::CODE) == attr::S | attr::CODE
    }
    /// The D/B bit: 32-bit default operand size for CS, ESP-sized stack for SS.
    pub fn is_big(&self) -> bool {
        self.attr & attr::DB != 0
    }
    pub fn rpl(&self) -> u8 {
        (self.selector & 3) as u8
    }
}

/// GDTR or IDTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableReg {
    pub base: u32,
    pub limit: u16,
    #[serde(skip)]
    pub _pad: u16,
}

/// The model-specific registers ringside models.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Msrs {
    /// IA32_TIME_STAMP_COUNTER is `icount + tsc_offset` (time is virtual):
    /// WRMSR to it changes the offset.
    pub tsc_offset: u64,
    pub sysenter_cs: u32,
    pub sysenter_esp: u32,
    pub sysenter_eip: u32,
    #[serde(skip)]
    pub _pad: u32,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    // The Core Duo's model-specific registers (`cpu::msr`). Snapshots from
    // before they existed load with their reset values.
    /// IA32_MISC_ENABLE.
    #[serde(default = "reset_misc_enable")]
    pub misc_enable: u64,
    /// IA32_PAT.
    #[serde(default = "reset_pat")]
    pub pat: u64,
    /// IA32_MTRR_DEF_TYPE.
    #[serde(default)]
    pub mtrr_def_type: u64,
    /// IA32_MTRR_PHYSBASE0/PHYSMASK0 ... PHYSBASE7/PHYSMASK7, in MSR order.
    #[serde(default)]
    pub mtrr_var: [u64; 16],
    /// The fixed-range MTRRs: FIX64K_00000, FIX16K_80000, FIX16K_A0000,
    /// FIX4K_C0000 ... FIX4K_F8000.
    #[serde(default)]
    pub mtrr_fixed: [u64; 11],
    /// IA32_PERFEVTSEL0 and 1.
    #[serde(default)]
    pub perfevtsel: [u64; 2],
    /// IA32_PMC0 and 1: the value while stopped; while counting, the
    /// counter is `pmc + icount` (40 bits), so it costs nothing per
    /// instruction.
    #[serde(default)]
    pub pmc: [u64; 2],
}

fn reset_misc_enable() -> u64 {
    msr_index::misc_enable::RESET
}

fn reset_pat() -> u64 {
    msr_index::PAT_RESET
}

impl Default for Msrs {
    /// The values after RESET (SDM Vol. 3A table 9-1 and Vol. 4).
    fn default() -> Self {
        Msrs {
            tsc_offset: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            _pad: 0,
            apic_base: 0,
            misc_enable: reset_misc_enable(),
            pat: reset_pat(),
            mtrr_def_type: 0,
            mtrr_var: [0; 16],
            mtrr_fixed: [0; 11],
            perfevtsel: [0; 2],
            pmc: [0; 2],
        }
    }
}

pub mod msr_index {
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1B;
    pub const BIOS_SIGN_ID: u32 = 0x8B;
    pub const PMC0: u32 = 0xC1;
    pub const PMC1: u32 = 0xC2;
    pub const MTRRCAP: u32 = 0xFE;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const PERFEVTSEL0: u32 = 0x186;
    pub const PERFEVTSEL1: u32 = 0x187;
    pub const MISC_ENABLE: u32 = 0x1A0;
    pub const MTRR_PHYSBASE0: u32 = 0x200;
    pub const MTRR_PHYSMASK7: u32 = 0x20F;
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26F;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2FF;
    pub const EFER: u32 = 0xC000_0080;
    /// PAT after RESET: WB, WT, UC-, UC in entries 0-3 and again in 4-7
    /// (SDM Vol. 3A 11.12.4).
    pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

    /// IA32_MISC_ENABLE bits of the Core Duo (SDM Vol. 4 tables 2-2 and
    /// "MSRs in Intel Core Solo and Intel Core Duo processors").
    pub mod misc_enable {
        pub const FAST_STRINGS: u64 = 1 << 0;
        pub const TM1: u64 = 1 << 3;
        /// Read-only 1: performance monitoring is available.
        pub const PERFMON_AVAILABLE: u64 = 1 << 7;
        pub const FERR_MULTIPLEXING: u64 = 1 << 10;
        /// Read-only 1: no branch trace storage.
        pub const BTS_UNAVAILABLE: u64 = 1 << 11;
        /// Read-only 1: no precise event-based sampling.
        pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
        pub const TM2: u64 = 1 << 13;
        pub const EIST: u64 = 1 << 16;
        pub const MONITOR_FSM: u64 = 1 << 18;
        pub const LIMIT_CPUID_MAXVAL: u64 = 1 << 22;
        pub const XTPR_DISABLE: u64 = 1 << 23;
        pub const XD_DISABLE: u64 = 1 << 34;
        pub const READ_ONLY: u64 = PERFMON_AVAILABLE | BTS_UNAVAILABLE | PEBS_UNAVAILABLE;
        /// The bits WRMSR may change; writing any other bit is #GP(0).
        pub const WRITABLE: u64 = FAST_STRINGS
            | TM1
            | FERR_MULTIPLEXING
            | TM2
            | EIST
            | MONITOR_FSM
            | LIMIT_CPUID_MAXVAL
            | XTPR_DISABLE
            | XD_DISABLE;
        pub const RESET: u64 = FAST_STRINGS | READ_ONLY;
    }
}

/// Run state that is part of the architecture but not a register.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// HLT executed; waiting for an interrupt.
    pub halted: bool,
    /// Triple fault (or an explicit shutdown): the CPU stopped.
    pub shutdown: bool,
    /// The instruction just retired was MOV SS, POP SS or STI (with IF going
    /// 0 -> 1): interrupts and some debug traps are held off for one
    /// instruction (SDM Vol. 3A 6.8.3).
    pub interrupt_shadow: bool,
    /// An NMI is waiting to be delivered.
    pub nmi_pending: bool,
    /// Inside an NMI handler: further NMIs are blocked until IRET.
    pub nmi_blocked: bool,
    #[serde(skip)]
    pub _pad: [u8; 3],
}

pub mod cr0 {
    pub const PE: u32 = 1 << 0;
    pub const MP: u32 = 1 << 1;
    pub const EM: u32 = 1 << 2;
    pub const TS: u32 = 1 << 3;
    pub const ET: u32 = 1 << 4;
    pub const NE: u32 = 1 << 5;
    pub const WP: u32 = 1 << 16;
    pub const AM: u32 = 1 << 18;
    pub const NW: u32 = 1 << 29;
    pub const CD: u32 = 1 << 30;
    pub const PG: u32 = 1 << 31;
    /// Bits that exist on a P6-class CPU; the others are reserved.
    pub const DEFINED: u32 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

pub mod cr4 {
    pub const TSD: u32 = 1 << 2;
    pub const DE: u32 = 1 << 3;
    pub const PSE: u32 = 1 << 4;
    pub const PGE: u32 = 1 << 7;
    pub const PCE: u32 = 1 << 8;
    /// The CR4 bits ringside's CPU implements (CPUID reports exactly these
    /// features); setting any other bit raises #GP(0).
    pub const SUPPORTED: u32 = TSD | DE | PSE | PGE | PCE;
}

/// All architectural state of one IA-32 CPU.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuState {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub gpr: [u32; 8],
    pub eip: u32,
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// DR0-DR7 (DR4/DR5 are not stored: they alias DR6/DR7 when CR4.DE=0).
    pub dr: [u32; 8],
    pub msr: Msrs,
    pub run: RunState,
}

impl Default for CpuState {
    fn default() -> Self {
        Self::at_reset()
    }
}

impl CpuState {
    /// The state after RESET (SDM Vol. 3A 9.1.1, table 9-1): real mode,
    /// CS.selector = F000 with base FFFF0000, EIP = FFF0.
    pub fn at_reset() -> CpuState {
        let mut seg = [Segment::real_mode(0); 6];
        seg[SegReg::Cs as usize] = Segment {
            selector: 0xF000,
            base: 0xFFFF_0000,
            ..Segment::real_mode(0xF000)
        };
        let system = |ty: u32| Segment {
            selector: 0,
            _pad: 0,
            attr: attr::P | ty,
            base: 0,
            limit: 0xFFFF,
        };
        CpuState {
            // EDX holds the processor signature after reset (the default
            // identity's; `Machine::reset_cpu` puts in the configured one).
            gpr: [
                0,
                0,
                super::cpuid::CpuIdentity::default().signature(),
                0,
                0,
                0,
                0,
                0,
            ],
            eip: 0xFFF0,
            eflags: EFLAGS_FIXED_ONES,
            seg,
            ldtr: system(0x2),
            tr: system(0xB),
            gdtr: TableReg {
                base: 0,
                limit: 0xFFFF,
                _pad: 0,
            },
            idtr: TableReg {
                base: 0,
                limit: 0xFFFF,
                _pad: 0,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xFFFF_0FF0, 0x0000_0400],
            msr: Msrs {
                apic_base: 0xFEE0_0000 | (1 << 11) | (1 << 8),
                ..Msrs::default()
            },
            run: RunState::default(),
        }
    }

    #[inline(always)]
    pub fn seg(&self, s: SegReg) -> &Segment {
        &self.seg[s as usize]
    }

    #[inline(always)]
    pub fn protected_mode(&self) -> bool {
        self.cr0 & cr0::PE != 0
    }

    #[inline(always)]
    pub fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    #[inline(always)]
    pub fn vm86(&self) -> bool {
        self.eflags & super::flags::VM != 0
    }

    /// The current privilege level. Like Intel CPUs, ringside keeps it in the
    /// DPL of the SS cache (SDM Vol. 3C 24.4.1): real mode is 0, virtual-8086
    /// mode 3.
    #[inline(always)]
    pub fn cpl(&self) -> u8 {
        if !self.protected_mode() {
            0
        } else if self.vm86() {
            3
        } else {
            self.seg[SegReg::Ss as usize].dpl()
        }
    }

    /// IOPL from EFLAGS bits 12-13.
    #[inline(always)]
    pub fn iopl(&self) -> u8 {
        ((self.eflags >> 12) & 3) as u8
    }

    /// True when the code segment's default operand/address size is 32 bits.
    /// As on hardware this is the cached D bit in every mode (real mode can
    /// keep a 32-bit CS loaded in protected mode; virtual-8086 loads clear it).
    #[inline(always)]
    pub fn code32(&self) -> bool {
        self.seg[SegReg::Cs as usize].is_big()
    }

    /// True when the stack is addressed with ESP (SS.B = 1), SP otherwise.
    #[inline(always)]
    pub fn stack32(&self) -> bool {
        self.seg[SegReg::Ss as usize].is_big()
    }

    pub fn interrupts_enabled(&self) -> bool {
        self.eflags & IF != 0
    }

    /// The linear address of the next instruction.
    pub fn linear_eip(&self) -> u32 {
        self.seg[SegReg::Cs as usize].base.wrapping_add(self.eip)
    }

    /// Low 16 bits of a general register.
    pub fn reg16(&self, r: usize) -> u16 {
        self.gpr[r] as u16
    }

    pub fn set_reg16(&mut self, r: usize, v: u16) {
        self.gpr[r] = (self.gpr[r] & 0xFFFF_0000) | v as u32;
    }

    /// An 8-bit register by encoding: AL, CL, DL, BL, AH, CH, DH, BH.
    pub fn reg8(&self, r: usize) -> u8 {
        if r < 4 {
            self.gpr[r] as u8
        } else {
            (self.gpr[r - 4] >> 8) as u8
        }
    }

    pub fn set_reg8(&mut self, r: usize, v: u8) {
        if r < 4 {
            self.gpr[r] = (self.gpr[r] & !0xFF) | v as u32;
        } else {
            self.gpr[r - 4] = (self.gpr[r - 4] & !0xFF00) | ((v as u32) << 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Generated code (jit, raw-mode patches) addresses these fields by
    /// offset: changing the layout must be a deliberate act.
    #[test]
    fn cpu_state_layout_is_pinned() {
        assert_eq!(offset_of!(CpuState, gpr), 0);
        assert_eq!(offset_of!(CpuState, eip), 32);
        assert_eq!(offset_of!(CpuState, eflags), 36);
        assert_eq!(offset_of!(CpuState, seg), 40);
        assert_eq!(std::mem::size_of::<Segment>(), 16);
        assert_eq!(offset_of!(CpuState, ldtr), 40 + 96);
        assert_eq!(offset_of!(CpuState, tr), 152);
        assert_eq!(offset_of!(CpuState, gdtr), 168);
        assert_eq!(offset_of!(CpuState, cr0), 184);
    }

    #[test]
    fn reset_state_starts_at_the_reset_vector() {
        let s = CpuState::at_reset();
        assert_eq!(s.linear_eip(), 0xFFFF_FFF0);
        assert_eq!(s.cpl(), 0);
        assert!(!s.protected_mode());
    }

    #[test]
    fn high_byte_registers_alias_bits_8_to_15() {
        let mut s = CpuState::at_reset();
        s.gpr[reg::EBX] = 0x1234_5678;
        assert_eq!(s.reg8(7), 0x56); // BH
        s.set_reg8(7, 0xAB);
        assert_eq!(s.gpr[reg::EBX], 0x1234_AB78);
    }
}
