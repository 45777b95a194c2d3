//! The operand size of an instruction (SDM Vol. 1 3.6): 16 or 32 bits, from
//! the code segment's D bit and the 66h prefix. It sizes stack slots, the
//! offset of a far pointer and which EFLAGS bits POPF and IRET can reach.

/// 16- or 32-bit operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandSize {
    Bits16,
    Bits32,
}

impl OperandSize {
    /// 32 bits when `bits32`, else 16.
    pub const fn from_bits32(bits32: bool) -> OperandSize {
        if bits32 {
            OperandSize::Bits32
        } else {
            OperandSize::Bits16
        }
    }

    pub const fn is_32(self) -> bool {
        matches!(self, OperandSize::Bits32)
    }

    /// Bytes per operand: a stack slot's size.
    pub const fn bytes(self) -> u32 {
        match self {
            OperandSize::Bits16 => 2,
            OperandSize::Bits32 => 4,
        }
    }

    /// The bits an operand of this size holds.
    pub const fn mask(self) -> u32 {
        match self {
            OperandSize::Bits16 => 0xFFFF,
            OperandSize::Bits32 => u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_sizes_give_their_slot_bytes_and_masks() {
        assert_eq!(OperandSize::Bits16.bytes(), 2);
        assert_eq!(OperandSize::Bits32.bytes(), 4);
        assert_eq!(OperandSize::Bits16.mask(), 0xFFFF);
        assert_eq!(OperandSize::from_bits32(true), OperandSize::Bits32);
    }
}
