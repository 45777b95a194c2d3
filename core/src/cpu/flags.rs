//! EFLAGS: bit definitions, parity, and the table of flags the manuals leave
//! undefined per instruction.
//!
//! The undefined-flag table is shared: the conformance runner masks these
//! bits when it compares against captured hardware results, and the lockstep
//! comparator masks them when it compares two engines. Each entry cites the
//! instruction's page in the Intel SDM Vol. 2 ("Flags Affected").

use iced_x86::Mnemonic;

pub const CF: u32 = 1 << 0;
/// Bit 1 always reads as 1.
pub const FIXED1: u32 = 1 << 1;
pub const PF: u32 = 1 << 2;
pub const AF: u32 = 1 << 4;
pub const ZF: u32 = 1 << 6;
pub const SF: u32 = 1 << 7;
pub const TF: u32 = 1 << 8;
pub const IF: u32 = 1 << 9;
pub const DF: u32 = 1 << 10;
pub const OF: u32 = 1 << 11;
pub const IOPL: u32 = 3 << 12;
pub const NT: u32 = 1 << 14;
pub const RF: u32 = 1 << 16;
pub const VM: u32 = 1 << 17;
pub const AC: u32 = 1 << 18;
pub const VIF: u32 = 1 << 19;
pub const VIP: u32 = 1 << 20;
pub const ID: u32 = 1 << 21;

/// The six arithmetic status flags.
pub const STATUS: u32 = CF | PF | AF | ZF | SF | OF;
/// Bits that always read as one.
pub const EFLAGS_FIXED_ONES: u32 = FIXED1;
/// Every bit a P6-class CPU without VME implements. VIF/VIP exist only with
/// CR4.VME/PVI, which ringside does not offer, so they stay clear.
pub const IMPLEMENTED: u32 = STATUS | TF | IF | DF | IOPL | NT | RF | VM | AC | ID;

/// Parity flag value for a result: set when the low byte has an even number
/// of one bits.
#[inline(always)]
pub fn parity(result: u32) -> u32 {
    // 0x6996 holds the odd parity of each 4-bit value.
    let b = (result ^ (result >> 4)) & 0xF;
    (((0x6996u32 >> b) & 1) ^ 1) << 2
}

/// The EFLAGS bits an instruction leaves undefined, given the instruction and,
/// for shifts and rotates, the masked count. Bits in this mask may differ
/// between correct implementations and must not be compared.
pub fn undefined_flags(mnemonic: Mnemonic, count: Option<u32>) -> u32 {
    use Mnemonic::*;
    match mnemonic {
        // SDM Vol. 2A MUL, IMUL: "SF, ZF, AF, and PF flags are undefined."
        Mul | Imul => SF | ZF | AF | PF,
        // SDM Vol. 2A DIV, IDIV: "CF, OF, SF, ZF, AF, and PF are undefined."
        Div | Idiv => CF | OF | SF | ZF | AF | PF,
        // SDM Vol. 2A AAA, AAS: "OF, SF, ZF, and PF flags are undefined."
        Aaa | Aas => OF | SF | ZF | PF,
        // SDM Vol. 2A AAM, AAD: "OF, AF, and CF flags are undefined."
        Aam | Aad => OF | AF | CF,
        // SDM Vol. 2A DAA, DAS: "The OF flag is undefined."
        Daa | Das => OF,
        // SDM Vol. 2A AND/OR/XOR/TEST: "The state of the AF flag is undefined."
        And | Or | Xor | Test => AF,
        // SDM Vol. 2B SAL/SAR/SHL/SHR: OF is defined only for 1-bit shifts;
        // "For a non-zero count, the AF flag is undefined."
        Shl | Sal | Shr | Sar => match count {
            Some(0) => 0,
            Some(1) => AF,
            _ => AF | OF,
        },
        // SDM Vol. 2B RCL/RCR/ROL/ROR: OF is defined only for 1-bit rotates.
        Rol | Ror | Rcl | Rcr => match count {
            Some(0) | Some(1) => 0,
            _ => OF,
        },
        // SDM Vol. 2B SHLD/SHRD: OF undefined for counts above 1, AF for any
        // non-zero count; all flags (and the result) for counts larger than
        // the operand size.
        Shld | Shrd => match count {
            Some(0) => 0,
            Some(1) => AF,
            _ => AF | OF,
        },
        // SDM Vol. 2A BSF/BSR: "CF, OF, SF, AF, and PF flags are undefined."
        Bsf | Bsr => CF | OF | SF | AF | PF,
        // SDM Vol. 2A BT/BTS/BTR/BTC: "OF, SF, AF, and PF flags are undefined."
        Bt | Bts | Btr | Btc => OF | SF | AF | PF,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_is_set_for_an_even_number_of_ones_in_the_low_byte() {
        assert_eq!(parity(0), PF);
        assert_eq!(parity(1), 0);
        assert_eq!(parity(3), PF);
        assert_eq!(parity(0x100), PF);
        assert_eq!(parity(0xFF), PF);
        assert_eq!(parity(0x7F), 0);
    }

    #[test]
    fn one_bit_shift_defines_overflow() {
        assert_eq!(undefined_flags(Mnemonic::Shl, Some(1)) & OF, 0);
        assert_ne!(undefined_flags(Mnemonic::Shl, Some(2)) & OF, 0);
    }
}
