//! CPUID (SDM Vol. 2A CPUID): what the processor says it is. Leaf 0 gives
//! the highest basic leaf (1) and the vendor string "RingsideVCPU"; leaf 1
//! the signature ([`super::CPUID_SIGNATURE`]) and exactly the features
//! ringside implements ([`super::cpuid_features`]).

use super::{cpuid_features, CPUID_SIGNATURE};
use crate::machine::Machine;

/// EAX, EBX, ECX and EDX after CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl Machine {
    /// CPUID for `leaf` (EAX).
    pub fn cpuid(&self, leaf: u32) -> CpuidResult {
        match leaf {
            0 => CpuidResult {
                eax: 1,
                ebx: u32::from_le_bytes(*b"Ring"),
                ecx: u32::from_le_bytes(*b"VCPU"),
                edx: u32::from_le_bytes(*b"side"),
            },
            // Out-of-range leaves return the highest basic leaf (SDM Vol.
            // 2A CPUID). Bit 9 (APIC) only when the machine has a local
            // APIC.
            _ => CpuidResult {
                eax: CPUID_SIGNATURE,
                ebx: 0,
                ecx: 0,
                edx: cpuid_features(self.bus.has_lapic()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CPUID_FEATURES;

    #[test]
    fn cpuid_leaf_1_reports_the_signature_and_the_feature_bits() {
        let m = Machine::with_ram_mib(1).unwrap();
        let r = m.cpuid(1);
        assert_eq!(r.eax, CPUID_SIGNATURE);
        assert_eq!(r.edx, CPUID_FEATURES);
        // No local APIC on this machine, so no APIC bit.
        assert_eq!(r.edx & (1 << 9), 0);
    }

    #[test]
    fn cpuid_leaf_0_names_the_vendor() {
        let r = Machine::with_ram_mib(1).unwrap().cpuid(0);
        let mut vendor = Vec::new();
        for reg in [r.ebx, r.edx, r.ecx] {
            vendor.extend_from_slice(&reg.to_le_bytes());
        }
        assert_eq!(vendor, b"RingsideVCPU");
        assert_eq!(r.eax, 1);
    }

    #[test]
    fn a_leaf_beyond_the_highest_answers_as_the_highest() {
        let m = Machine::with_ram_mib(1).unwrap();
        assert_eq!(m.cpuid(0x8000_0000), m.cpuid(1));
    }
}
