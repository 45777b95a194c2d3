//! The CPU: architectural state and the parts of the architecture every
//! software engine shares — flags, segmentation (SELM), event delivery
//! (TRPM) and hardware task switching — and the instructions with
//! architectural side effects, as `Machine` functions with explicit
//! operands that the interpreter, a recompiler's slow paths and a
//! raw-mode monitor all call: far transfers ([`far_transfer`], [`iret`]),
//! software interrupts ([`software_interrupts`]), the I/O permission check
//! ([`io_permission`]), control and debug
//! registers ([`control_registers`], [`debug_registers`]), MSRs and the
//! TSC ([`msr`]), [`cpuid`], flag control ([`flag_control`]), the
//! descriptor-table registers ([`descriptor_tables`]) and SYSENTER/SYSEXIT
//! ([`fast_system_call`]).

pub mod boundary;
pub mod control_registers;
pub mod cpuid;
pub mod debug_registers;
pub mod descriptor_tables;
pub mod events;
pub mod far_transfer;
pub mod fast_system_call;
#[cfg(test)]
mod fixture;
pub mod flag_control;
pub mod flags;
pub mod io_permission;
pub mod iret;
pub mod msr;
pub mod operand_size;
pub mod segments;
pub mod software_interrupts;
pub mod state;
pub mod tasking;

pub use operand_size::OperandSize;
pub use state::{
    attr, cr0, cr4, msr_index, reg, CpuState, Msrs, RunState, SegReg, Segment, TableReg,
};

/// The features CPUID leaf 1 reports in EDX: exactly what ringside
/// implements. No FPU, no MMX/SSE, no PAE, no VME.
pub const CPUID_FEATURES: u32 = (1 << 2) // DE: CR4.DE
    | (1 << 3) // PSE: 4 MiB pages
    | (1 << 4) // TSC
    | (1 << 5) // MSR
    | (1 << 8) // CX8: CMPXCHG8B
    | (1 << 11) // SEP: SYSENTER/SYSEXIT
    | (1 << 12) // MTRR: the memory type range registers (`msr`)
    | (1 << 13) // PGE: CR4.PGE accepted (every TLB flush is complete)
    | (1 << 15) // CMOV
    | (1 << 16); // PAT: IA32_PAT (`msr`)

/// CPUID.1:EDX for a machine with or without a local APIC (bit 9).
pub fn cpuid_features(has_lapic: bool) -> u32 {
    CPUID_FEATURES | if has_lapic { 1 << 9 } else { 0 }
}

/// Exception vectors (SDM Vol. 3A table 6-1).
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
}

/// An exception raised by an instruction (or by event delivery). Raising it
/// commits nothing: the engine delivers it with the instruction's own EIP
/// (faults) or the next EIP (traps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// For #PF: the linear address that goes to CR2 when it is delivered.
    pub address: u32,
}

impl Fault {
    pub const fn new(vector: u8, error_code: Option<u32>) -> Fault {
        Fault {
            vector,
            error_code,
            address: 0,
        }
    }
    pub const fn de() -> Fault {
        Fault::new(vector::DE, None)
    }
    pub const fn ud() -> Fault {
        Fault::new(vector::UD, None)
    }
    pub const fn nm() -> Fault {
        Fault::new(vector::NM, None)
    }
    pub const fn br() -> Fault {
        Fault::new(vector::BR, None)
    }
    pub const fn gp(code: u32) -> Fault {
        Fault::new(vector::GP, Some(code))
    }
    pub const fn gp0() -> Fault {
        Fault::gp(0)
    }
    pub const fn ss(code: u32) -> Fault {
        Fault::new(vector::SS, Some(code))
    }
    pub const fn np(code: u32) -> Fault {
        Fault::new(vector::NP, Some(code))
    }
    pub const fn ts(code: u32) -> Fault {
        Fault::new(vector::TS, Some(code))
    }
    pub const fn ac() -> Fault {
        Fault::new(vector::AC, Some(0))
    }
    pub const fn pf(address: u32, code: u32) -> Fault {
        Fault {
            vector: vector::PF,
            error_code: Some(code),
            address,
        }
    }
    /// #GP or #SS with a selector error code, as segment loads raise them.
    pub const fn gp_sel(selector: u16) -> Fault {
        Fault::gp((selector & 0xFFFC) as u32)
    }

    /// Whether the manuals classify this vector as a trap (EIP saved is the
    /// next instruction's) rather than a fault.
    pub fn is_trap(&self) -> bool {
        matches!(self.vector, vector::BP | vector::OF)
    }
}

pub type CpuResult<T> = Result<T, Fault>;
