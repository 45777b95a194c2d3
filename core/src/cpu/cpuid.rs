//! CPUID (SDM Vol. 2A CPUID): what the processor says it is.
//!
//! ringside's CPU introduces itself as a real part, by default the Intel
//! Core Duo T2600 ("Yonah", family 6 model 14 stepping 8, the part QEMU
//! calls `-cpu coreduo`): its vendor, signature, brand string, cache
//! descriptors and leaf ranges, so software that picks code paths by
//! vendor and model takes the Intel P6-family path. The feature bits are
//! not the part's but exactly what ringside implements
//! ([`super::cpuid_features`]): no FPU, MMX, SSE, PAE, NX or VMX. The
//! identity ([`CpuIdentity`]) is configurable (`[cpu]` in the machine
//! configuration); only the leaves' identity fields change with it.
//!
//! The model-specific registers that go with the part are in
//! [`super::msr`]; leaf 0xA describes its two performance counters.

use super::cpuid_features;
use super::state::msr_index::misc_enable;
use crate::machine::Machine;

/// EAX, EBX, ECX and EDX after CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Who the processor says it is (`[cpu]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuIdentity {
    /// The 12-byte vendor string of leaf 0 (EBX, EDX, ECX).
    pub vendor: [u8; 12],
    /// The family as software computes it: 0-15, or 15 plus the extended
    /// family (up to 270).
    pub family: u16,
    /// The model as software computes it (with the extended model for
    /// families 6 and 15): 0-255.
    pub model: u8,
    pub stepping: u8,
    /// Leaves 0x80000002-4: at most 47 bytes (NUL-padded to 48).
    pub brand: String,
}

impl Default for CpuIdentity {
    /// The Intel Core Duo T2600, as QEMU's `coreduo` model names it.
    fn default() -> Self {
        CpuIdentity {
            vendor: *b"GenuineIntel",
            family: 6,
            model: 14,
            stepping: 8,
            brand: "Genuine Intel(R) CPU           T2600  @ 2.16GHz".into(),
        }
    }
}

impl CpuIdentity {
    /// CPUID.1:EAX (SDM Vol. 2A figure 3-6): stepping in bits 3:0, model
    /// 7:4, family 11:8, extended model 19:16, extended family 27:20.
    pub fn signature(&self) -> u32 {
        let (family, ext_family) = if self.family >= 15 {
            (15u32, (self.family - 15) as u32)
        } else {
            (self.family as u32, 0)
        };
        let (model, ext_model) = if family == 6 || family == 15 {
            ((self.model & 0xF) as u32, (self.model >> 4) as u32)
        } else {
            ((self.model & 0xF) as u32, 0)
        };
        (self.stepping as u32 & 0xF) | model << 4 | family << 8 | ext_model << 16 | ext_family << 20
    }

    /// Check a configured identity; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self
            .vendor
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ')
        {
            return Err("the vendor must be 12 printable ASCII characters".into());
        }
        if self.family == 0 || self.family > 270 {
            return Err(format!("family {} is not in 1..=270", self.family));
        }
        if self.family != 6 && self.family < 15 && self.model > 15 {
            return Err(format!(
                "model {} needs the extended model field, which only families 6 and 15 have",
                self.model
            ));
        }
        if self.stepping > 15 {
            return Err(format!("stepping {} is not in 0..=15", self.stepping));
        }
        if self.brand.len() > 47 || !self.brand.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err("the brand string must be at most 47 printable ASCII characters".into());
        }
        Ok(())
    }

    /// Bytes `4*index..4*index+4` of the NUL-padded brand string.
    fn brand_word(&self, index: usize) -> u32 {
        let mut bytes = [0u8; 48];
        bytes[..self.brand.len().min(47)]
            .copy_from_slice(&self.brand.as_bytes()[..self.brand.len().min(47)]);
        u32::from_le_bytes(bytes[4 * index..4 * index + 4].try_into().expect("4 bytes"))
    }
}

/// The highest basic leaf, and the one IA32_MISC_ENABLE's "limit CPUID
/// maxval" bit (22) leaves visible (SDM Vol. 4 table 2-2, IA32_MISC_ENABLE).
const MAX_BASIC_LEAF: u32 = 0xA;
const LIMITED_BASIC_LEAF: u32 = 2;
const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;

/// Leaf 0xA (SDM Vol. 3B 20.2.1): architectural performance monitoring
/// version 1, two general-purpose counters of 40 bits, seven events
/// enumerated in EBX, where a set bit means "not available". Unhalted core
/// cycles (bit 0), instructions retired (1) and reference cycles (2) are
/// counted (virtual time: one cycle per instruction); the cache and branch
/// events (3-6) are not.
pub const PERFMON_VERSION: u32 = 1;
pub const PERFMON_COUNTERS: u32 = 2;
pub const PERFMON_WIDTH: u32 = 40;
const PERFMON_UNAVAILABLE_EVENTS: u32 = 0b111_1000;

impl Machine {
    /// The highest basic leaf as the guest sees it now.
    fn max_basic_leaf(&self) -> u32 {
        if self.cpu.msr.misc_enable & misc_enable::LIMIT_CPUID_MAXVAL != 0 {
            LIMITED_BASIC_LEAF
        } else {
            MAX_BASIC_LEAF
        }
    }

    /// CPUID for `leaf` (EAX) and `subleaf` (ECX, used by leaf 4).
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let id = &self.cpu_identity;
        let r = |eax, ebx, ecx, edx| CpuidResult { eax, ebx, ecx, edx };
        let word =
            |i: usize| u32::from_le_bytes(id.vendor[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let max_basic = self.max_basic_leaf();
        // Beyond the highest basic or extended leaf: the highest basic
        // leaf's data (SDM Vol. 2A CPUID, "If a value entered for CPUID.EAX
        // is higher than the maximum input value ...").
        let leaf = if leaf > max_basic && !(0x8000_0000..=MAX_EXTENDED_LEAF).contains(&leaf) {
            max_basic
        } else {
            leaf
        };
        match leaf {
            0 => r(max_basic, word(0), word(2), word(1)),
            // EBX: brand index 0, no CLFLUSH size (CLFSH is not
            // advertised), no logical-processor count (no HTT), initial
            // APIC ID 0 (bits 31:24). ECX: no SSE3, MONITOR, VMX, EST...
            1 => r(id.signature(), 0, 0, cpuid_features(self.bus.has_lapic())),
            // The T2600's cache and TLB descriptors (one iteration, AL = 1):
            // 0xB0/0xB3 instruction and data TLBs, 0x02 ITLB 4M, 0xF0
            // prefetch, 0x7D 2 MiB L2, 0x30/0x2C 32 KiB L1 instruction and
            // data caches, 0x04 DTLB 4M.
            2 => r(0x02B3_B001, 0x0000_00F0, 0, 0x2C04_307D),
            // Deterministic cache parameters (SDM Vol. 2A table 3-8): L1
            // data and instruction 32 KiB 8-way, L2 2 MiB 8-way, 64-byte
            // lines, one core sharing each; then the null cache type.
            4 => {
                let cache = |ty: u32, level: u32, ways: u32, sets: u32| {
                    r(ty | level << 5 | 1 << 8, (ways - 1) << 22 | 63, sets - 1, 0)
                };
                match subleaf {
                    0 => cache(1, 1, 8, 64),
                    1 => cache(2, 1, 8, 64),
                    2 => cache(3, 2, 8, 4096),
                    _ => r(0, 0, 0, 0),
                }
            }
            0xA => r(
                PERFMON_VERSION | PERFMON_COUNTERS << 8 | PERFMON_WIDTH << 16 | 7 << 24,
                PERFMON_UNAVAILABLE_EVENTS,
                0,
                0,
            ),
            0x8000_0000 => r(MAX_EXTENDED_LEAF, 0, 0, 0),
            0x8000_0002..=0x8000_0004 => {
                let base = 4 * (leaf - 0x8000_0002) as usize;
                r(
                    id.brand_word(base),
                    id.brand_word(base + 1),
                    id.brand_word(base + 2),
                    id.brand_word(base + 3),
                )
            }
            // L2: 2048 KiB, 8-way (encoding 6), 64-byte lines.
            0x8000_0006 => r(0, 0, 2048 << 16 | 6 << 12 | 64, 0),
            // 32 physical address bits; the linear-address field is 0, as
            // QEMU reports it for 32-bit parts (KVM accepts only 0, 48 or
            // 57 there, and both engines answer alike).
            0x8000_0008 => r(0x20, 0, 0, 0),
            // Leaf 3 (no PSN), 5 (no MONITOR), 6 (no thermal and power
            // management), 7-9, 0x80000001 (no NX, no long mode: so no
            // IA32_EFER), 0x80000005 and 0x80000007: reserved or empty.
            _ => r(0, 0, 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CPUID_FEATURES;

    fn machine() -> Machine {
        Machine::with_ram_mib(1).unwrap()
    }

    fn string(words: &[u32]) -> String {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn leaf_0_names_an_intel_part_and_the_highest_basic_leaf() {
        let r = machine().cpuid(0, 0);
        assert_eq!(string(&[r.ebx, r.edx, r.ecx]), "GenuineIntel");
        assert_eq!(r.eax, 0xA);
    }

    #[test]
    fn leaf_1_gives_the_core_duo_signature_and_ringsides_own_features() {
        let m = machine();
        let r = m.cpuid(1, 0);
        assert_eq!(r.eax, 0x6E8, "family 6, model 14, stepping 8");
        assert_eq!(r.edx, CPUID_FEATURES);
        assert_eq!(r.ecx, 0);
        // No local APIC on this machine, so no APIC bit.
        assert_eq!(r.edx & (1 << 9), 0);
    }

    #[test]
    fn the_brand_string_spans_three_extended_leaves() {
        let m = machine();
        let words: Vec<u32> = (0x8000_0002..=0x8000_0004)
            .flat_map(|l| {
                let r = m.cpuid(l, 0);
                [r.eax, r.ebx, r.ecx, r.edx]
            })
            .collect();
        assert_eq!(
            string(&words),
            "Genuine Intel(R) CPU           T2600  @ 2.16GHz"
        );
        assert_eq!(m.cpuid(0x8000_0000, 0).eax, 0x8000_0008);
    }

    #[test]
    fn no_extended_features_are_advertised_so_there_is_no_efer() {
        let r = machine().cpuid(0x8000_0001, 0);
        assert_eq!((r.ecx, r.edx), (0, 0));
    }

    #[test]
    fn a_leaf_beyond_the_highest_answers_as_the_highest_basic_leaf() {
        let m = machine();
        assert_eq!(m.cpuid(0xB, 0), m.cpuid(0xA, 0));
        assert_eq!(m.cpuid(0x4000_0000, 0), m.cpuid(0xA, 0));
        assert_eq!(m.cpuid(0x8000_0009, 0), m.cpuid(0xA, 0));
    }

    #[test]
    fn leaf_4_enumerates_three_caches_then_the_null_type() {
        let m = machine();
        let types: Vec<u32> = (0..5).map(|s| m.cpuid(4, s).eax & 0x1F).collect();
        assert_eq!(types, [1, 2, 3, 0, 0]);
        let l2 = m.cpuid(4, 2);
        let bytes = ((l2.ebx >> 22) + 1) * ((l2.ebx & 0xFFF) + 1) * (l2.ecx + 1);
        assert_eq!(bytes, 2 << 20);
    }

    #[test]
    fn leaf_0xa_describes_two_40_bit_counters_of_version_1() {
        let r = machine().cpuid(0xA, 0);
        assert_eq!(r.eax & 0xFF, 1);
        assert_eq!((r.eax >> 8) & 0xFF, 2);
        assert_eq!((r.eax >> 16) & 0xFF, 40);
        assert_eq!(
            r.ebx & 0b11,
            0,
            "core cycles and instructions retired are available"
        );
    }

    #[test]
    fn limit_cpuid_maxval_caps_the_basic_leaves_at_2() {
        let mut m = machine();
        m.cpu.msr.misc_enable |= misc_enable::LIMIT_CPUID_MAXVAL;
        assert_eq!(m.cpuid(0, 0).eax, 2);
        assert_eq!(m.cpuid(4, 0), m.cpuid(2, 0));
    }

    #[test]
    fn a_configured_identity_changes_vendor_signature_and_brand() {
        let mut m = machine();
        m.cpu_identity = CpuIdentity {
            vendor: *b"AuthenticAMD",
            family: 15 + 8,
            model: 0x31,
            stepping: 0,
            brand: "Test".into(),
        };
        let r = m.cpuid(0, 0);
        assert_eq!(string(&[r.ebx, r.edx, r.ecx]), "AuthenticAMD");
        assert_eq!(m.cpuid(1, 0).eax, 0x0083_0F10);
        assert_eq!(m.cpuid(0x8000_0002, 0).eax, u32::from_le_bytes(*b"Test"));
    }

    #[test]
    fn identities_software_cannot_encode_are_refused() {
        let ok = CpuIdentity::default();
        assert!(ok.validate().is_ok());
        for bad in [
            CpuIdentity {
                family: 0,
                ..ok.clone()
            },
            CpuIdentity {
                family: 5,
                model: 16,
                ..ok.clone()
            },
            CpuIdentity {
                stepping: 16,
                ..ok.clone()
            },
            CpuIdentity {
                brand: "x".repeat(48),
                ..ok.clone()
            },
            CpuIdentity {
                vendor: *b"Genuine\0ntel",
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
