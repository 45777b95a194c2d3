//! Random instruction streams for differential tests: a weighted mix of
//! instruction templates (ALU, shifts, multiply and divide, bit tests,
//! SETcc/CMOVcc, string operations, BCD, forward jumps, ...) assembled
//! with iced-x86, followed by HLT, with random registers, flags and data,
//! in real mode, flat unpaged 32-bit protected mode, or the same with
//! paging on. Every memory operand lies in a fixed data area, every
//! exception vector leads to a HLT stub, and IF is clear, so a faulting
//! instruction ends the run at a dead halt.
//!
//! Shared (by `#[path]`) between the differential tests of the kvm engine
//! (engines/kvm/tests/differential.rs) and of the recompiler
//! (engines/jit/tests/differential.rs).

#![allow(dead_code)]

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use proptest::prelude::*;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::cpu::flags::{AF, CF, DF, FIXED1, OF, PF, SF, ZF};
use ringside_core::cpu::{reg, SegReg, Segment, TableReg};
use ringside_core::Machine;

/// Every exception and interrupt vector leads here: one HLT byte.
pub const HLT_STUB: u32 = 0x0600;
/// The protected-mode IDT: 256 interrupt gates.
pub const IDT: u32 = 0x1000;
/// All memory operands of the stream lie in this area.
pub const DATA: u32 = 0x2000;
pub const DATA_LEN: u32 = 512;
/// The stack grows down from here (exception frames land below it).
pub const STACK_TOP: u32 = 0x7000;
pub const CODE: u32 = 0x8000;
/// Instructions a stream may run before the comparison stops.
pub const MAX_INSNS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Real,
    Protected,
    /// Flat 32-bit protected mode with paging on: the first 4 MiB mapped
    /// one to one through 4-KiB pages, writable, supervisor.
    Paged,
}

impl Mode {
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Real => 16,
            Mode::Protected | Mode::Paged => 32,
        }
    }
}

/// The paged mode's page directory and its one page table.
pub const PAGE_DIR: u32 = 0x1_0000;
pub const PAGE_TABLE: u32 = 0x1_1000;

/// Operand width of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum W {
    B,
    H,
    D,
}

/// A register or a place in the data area.
#[derive(Clone, Copy, Debug)]
pub enum Rm {
    Reg(u8),
    Mem(u16),
}

/// A shift or rotate count.
#[derive(Clone, Copy, Debug)]
pub enum Count {
    One,
    Cl,
    Imm(u8),
}

/// One instruction template. Register numbers are the ModRM numbers
/// (EAX ECX EDX EBX ESP EBP ESI EDI; for bytes AL CL DL BL AH CH DH BH);
/// no template writes ESP except through PUSH and POP.
#[derive(Clone, Copy, Debug)]
pub enum Template {
    /// ADD OR ADC SBB AND SUB XOR CMP (op 0..8), TEST (op 8).
    AluRmReg {
        op: u8,
        w: W,
        dst: Rm,
        src: u8,
    },
    AluRegMem {
        op: u8,
        w: W,
        dst: u8,
        off: u16,
    },
    AluRmImm {
        op: u8,
        w: W,
        dst: Rm,
        imm: u32,
    },
    /// INC DEC NEG NOT.
    Unary {
        op: u8,
        w: W,
        dst: Rm,
    },
    /// ROL ROR RCL RCR SHL SHR SAR.
    Shift {
        op: u8,
        w: W,
        dst: Rm,
        count: Count,
    },
    /// SHLD SHRD.
    DoubleShift {
        right: bool,
        w: W,
        dst: Rm,
        src: u8,
        count: Count,
    },
    /// MUL IMUL DIV IDIV of EDX:EAX (AX, DX:AX) by the operand.
    MulDiv {
        op: u8,
        w: W,
        src: Rm,
        /// DIV/IDIV: make the operands unable to raise #DE first (the
        /// other half of the cases divide whatever the registers hold).
        guard: bool,
    },
    ImulTwo {
        w: W,
        dst: u8,
        src: Rm,
    },
    ImulThree {
        w: W,
        dst: u8,
        src: Rm,
        imm: u32,
    },
    /// BT BTS BTR BTC with a register bit offset (register destination
    /// only: with memory it addresses a bit string beyond the data area).
    BitReg {
        op: u8,
        w: W,
        dst: u8,
        src: u8,
    },
    BitImm {
        op: u8,
        w: W,
        dst: Rm,
        bit: u8,
    },
    BitScan {
        reverse: bool,
        w: W,
        dst: u8,
        src: Rm,
    },
    Setcc {
        cc: u8,
        dst: Rm,
    },
    Cmovcc {
        cc: u8,
        w: W,
        dst: u8,
        src: Rm,
    },
    /// MOVZX/MOVSX from a byte or (into 32 bits) a word.
    Extend {
        signed: bool,
        from_word: bool,
        w: W,
        dst: u8,
        src: Rm,
    },
    Xchg {
        w: W,
        dst: Rm,
        src: u8,
    },
    Xadd {
        w: W,
        dst: Rm,
        src: u8,
    },
    Cmpxchg {
        w: W,
        dst: Rm,
        src: u8,
    },
    Bswap {
        r: u8,
    },
    Lea {
        w: W,
        dst: u8,
        base: u8,
        index: u8,
        scale: u8,
        disp: i32,
    },
    PushReg {
        w: W,
        r: u8,
    },
    PushImm {
        imm: u32,
    },
    PopReg {
        w: W,
        r: u8,
    },
    Pushf,
    /// MOVS STOS LODS CMPS SCAS, after loading ESI, EDI and ECX.
    Str {
        op: u8,
        w: W,
        /// 0 none, 1 REP/REPE, 2 REPNE.
        rep: u8,
        count: u8,
        src_off: u8,
        dst_off: u8,
    },
    /// CBW CWDE CWD CDQ LAHF SAHF CLC STC CMC.
    Implied {
        op: u8,
    },
    /// DAA DAS AAA AAS (only DAS is generated: see `template`).
    Bcd {
        op: u8,
    },
    Aam {
        imm: u8,
    },
    Aad {
        imm: u8,
    },
    /// A Jcc forward over the next `skip` templates.
    Jcc {
        cc: u8,
        skip: u8,
    },
}

pub fn width() -> impl Strategy<Value = W> {
    prop_oneof![Just(W::B), Just(W::H), Just(W::D)]
}

pub fn wide() -> impl Strategy<Value = W> {
    prop_oneof![Just(W::H), Just(W::D)]
}

/// A register the template may write: any but ESP (for bytes, AH is fine,
/// and is what number 4 means there).
pub fn dst_reg() -> impl Strategy<Value = u8> {
    prop_oneof![0u8..4, 5u8..8]
}

pub fn any_reg() -> impl Strategy<Value = u8> {
    0u8..8
}

/// An offset in the data area that leaves room for a dword.
pub fn offset() -> impl Strategy<Value = u16> {
    0u16..(DATA_LEN as u16 - 4)
}

pub fn rm() -> impl Strategy<Value = Rm> {
    prop_oneof![dst_reg().prop_map(Rm::Reg), offset().prop_map(Rm::Mem)]
}

pub fn count() -> impl Strategy<Value = Count> {
    prop_oneof![
        Just(Count::One),
        Just(Count::Cl),
        (0u8..40).prop_map(Count::Imm)
    ]
}

/// An immediate biased towards the values where flags change.
pub fn imm() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(0x7F),
            Just(0x80),
            Just(0xFF),
            Just(0x7FFF),
            Just(0x8000),
            Just(0xFFFF),
            Just(0x7FFF_FFFF),
            Just(0x8000_0000),
            Just(0xFFFF_FFFF)
        ],
    ]
}

pub fn template() -> impl Strategy<Value = Template> {
    prop_oneof![
        6 => (0u8..9, width(), rm(), any_reg())
            .prop_map(|(op, w, dst, src)| Template::AluRmReg { op, w, dst, src }),
        3 => (0u8..9, width(), dst_reg(), offset())
            .prop_map(|(op, w, dst, off)| Template::AluRegMem { op: op.min(7), w, dst, off }),
        5 => (0u8..9, width(), rm(), imm())
            .prop_map(|(op, w, dst, imm)| Template::AluRmImm { op, w, dst, imm }),
        3 => (0u8..4, width(), rm()).prop_map(|(op, w, dst)| Template::Unary { op, w, dst }),
        5 => (0u8..7, width(), rm(), count())
            .prop_map(|(op, w, dst, count)| Template::Shift { op, w, dst, count }),
        2 => (any::<bool>(), wide(), rm(), any_reg(), count())
            .prop_map(|(right, w, dst, src, count)| Template::DoubleShift { right, w, dst, src, count }),
        3 => (0u8..4, width(), rm(), any::<bool>())
            .prop_map(|(op, w, src, guard)| Template::MulDiv { op, w, src, guard }),
        1 => (wide(), dst_reg(), rm()).prop_map(|(w, dst, src)| Template::ImulTwo { w, dst, src }),
        1 => (wide(), dst_reg(), rm(), imm())
            .prop_map(|(w, dst, src, imm)| Template::ImulThree { w, dst, src, imm }),
        2 => (0u8..4, wide(), dst_reg(), any_reg())
            .prop_map(|(op, w, dst, src)| Template::BitReg { op, w, dst, src }),
        2 => (0u8..4, wide(), rm(), any::<u8>())
            .prop_map(|(op, w, dst, bit)| Template::BitImm { op, w, dst, bit }),
        2 => (any::<bool>(), wide(), dst_reg(), rm())
            .prop_map(|(reverse, w, dst, src)| Template::BitScan { reverse, w, dst, src }),
        2 => (0u8..16, rm()).prop_map(|(cc, dst)| Template::Setcc { cc, dst }),
        2 => (0u8..16, wide(), dst_reg(), rm())
            .prop_map(|(cc, w, dst, src)| Template::Cmovcc { cc, w, dst, src }),
        2 => (any::<bool>(), any::<bool>(), wide(), dst_reg(), rm()).prop_map(
            |(signed, from_word, w, dst, src)| Template::Extend {
                signed,
                from_word: from_word && w == W::D,
                w,
                dst,
                src
            }
        ),
        1 => (width(), rm(), dst_reg()).prop_map(|(w, dst, src)| Template::Xchg { w, dst, src }),
        1 => (width(), rm(), dst_reg()).prop_map(|(w, dst, src)| Template::Xadd { w, dst, src }),
        1 => (width(), rm(), dst_reg()).prop_map(|(w, dst, src)| Template::Cmpxchg { w, dst, src }),
        1 => dst_reg().prop_map(|r| Template::Bswap { r }),
        2 => (wide(), dst_reg(), any_reg(), dst_reg(), 0u8..4, any::<i32>()).prop_map(
            |(w, dst, base, index, scale, disp)| Template::Lea { w, dst, base, index, scale, disp }
        ),
        1 => (wide(), any_reg()).prop_map(|(w, r)| Template::PushReg { w, r }),
        1 => imm().prop_map(|imm| Template::PushImm { imm }),
        1 => (wide(), dst_reg()).prop_map(|(w, r)| Template::PopReg { w, r }),
        1 => Just(Template::Pushf),
        3 => (0u8..5, width(), 0u8..3, 0u8..8, any::<u8>(), any::<u8>()).prop_map(
            |(op, w, rep, count, src_off, dst_off)| Template::Str { op, w, rep, count, src_off, dst_off }
        ),
        2 => (0u8..9).prop_map(|op| Template::Implied { op }),
        // AAA, AAS and DAA only where the host can emulate them: kvm_pvm's
        // instruction emulator has none of the three and fails the run
        // with KVM_INTERNAL_ERROR_EMULATION (docs/kvm-host-deviations.md).
        1 => Just(Template::Bcd { op: 1 }),
        // AAM 0 raises #DE.
        1 => prop_oneof![Just(10u8), Just(0u8), any::<u8>()].prop_map(|imm| Template::Aam { imm }),
        1 => prop_oneof![Just(10u8), any::<u8>()].prop_map(|imm| Template::Aad { imm }),
        2 => (0u8..16, 1u8..4).prop_map(|(cc, skip)| Template::Jcc { cc, skip }),
    ]
}

/// One generated case.
#[derive(Clone, Debug)]
pub struct Case {
    pub mode: Mode,
    pub regs: [u32; 8],
    pub flags: u32,
    pub data: Data,
    pub stream: Vec<Template>,
}

/// The data area's initial bytes, shown as hex in failure reports.
#[derive(Clone)]
pub struct Data(pub Vec<u8>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

pub fn case(modes: Vec<Mode>) -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(modes),
        any::<[u32; 8]>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), DATA_LEN as usize),
        proptest::collection::vec(template(), 1..24),
    )
        .prop_map(|(mode, regs, flags, data, stream)| Case {
            mode,
            regs,
            flags,
            data: Data(data),
            stream,
        })
}

pub const R8: [AsmRegister8; 8] = [al, cl, dl, bl, ah, ch, dh, bh];
pub const R16: [AsmRegister16; 8] = [ax, cx, dx, bx, sp, bp, si, di];
pub const R32: [AsmRegister32; 8] = [eax, ecx, edx, ebx, esp, ebp, esi, edi];

pub fn mem_at(off: u16) -> u64 {
    (DATA + off as u32) as u64
}

/// Run `$body` with `$r` bound to register `$i` (and `$m` to a function
/// making a memory operand) at width `$w`.
macro_rules! sized {
    ($w:expr, [$($r:ident = $i:expr),*], $m:ident, $body:expr) => {
        match $w {
            W::B => {
                $(let $r = R8[$i as usize];)*
                let $m = |o: u16| byte_ptr(mem_at(o));
                $body
            }
            W::H => {
                $(let $r = R16[$i as usize];)*
                let $m = |o: u16| word_ptr(mem_at(o));
                $body
            }
            W::D => {
                $(let $r = R32[$i as usize];)*
                let $m = |o: u16| dword_ptr(mem_at(o));
                $body
            }
        }
    };
}

/// `sized!` for templates that exist only for words and dwords.
macro_rules! sized_wide {
    ($w:expr, [$($r:ident = $i:expr),*], $m:ident, $body:expr) => {
        match $w {
            W::B => unreachable!("the strategy makes no byte form"),
            W::H => {
                $(let $r = R16[$i as usize];)*
                let $m = |o: u16| word_ptr(mem_at(o));
                $body
            }
            W::D => {
                $(let $r = R32[$i as usize];)*
                let $m = |o: u16| dword_ptr(mem_at(o));
                $body
            }
        }
    };
}

/// `$a.<op>($x, $y)` for ALU op number `$op`.
macro_rules! alu {
    ($a:expr, $op:expr, $x:expr, $y:expr) => {
        match $op {
            0 => $a.add($x, $y),
            1 => $a.or($x, $y),
            2 => $a.adc($x, $y),
            3 => $a.sbb($x, $y),
            4 => $a.and($x, $y),
            5 => $a.sub($x, $y),
            6 => $a.xor($x, $y),
            7 => $a.cmp($x, $y),
            _ => $a.test($x, $y),
        }
    };
}

/// `alu!` without TEST, which has no register, memory form.
macro_rules! alu_to_reg {
    ($a:expr, $op:expr, $x:expr, $y:expr) => {
        match $op {
            0 => $a.add($x, $y),
            1 => $a.or($x, $y),
            2 => $a.adc($x, $y),
            3 => $a.sbb($x, $y),
            4 => $a.and($x, $y),
            5 => $a.sub($x, $y),
            6 => $a.xor($x, $y),
            _ => $a.cmp($x, $y),
        }
    };
}

macro_rules! shift {
    ($a:expr, $op:expr, $x:expr, $y:expr) => {
        match $op {
            0 => $a.rol($x, $y),
            1 => $a.ror($x, $y),
            2 => $a.rcl($x, $y),
            3 => $a.rcr($x, $y),
            4 => $a.shl($x, $y),
            5 => $a.shr($x, $y),
            _ => $a.sar($x, $y),
        }
    };
}

macro_rules! bit_op {
    ($a:expr, $op:expr, $x:expr, $y:expr) => {
        match $op {
            0 => $a.bt($x, $y),
            1 => $a.bts($x, $y),
            2 => $a.btr($x, $y),
            _ => $a.btc($x, $y),
        }
    };
}

/// `$a.<method for condition $cc>($($arg),*)`, conditions in encoding order.
macro_rules! by_condition {
    ($a:expr, $cc:expr, [$($name:ident),*], $args:tt) => {{
        let mut i = 0u8;
        let mut result = None;
        $(
            if result.is_none() && i == $cc {
                result = Some($a.$name $args);
            }
            i += 1;
        )*
        let _ = i;
        result.expect("condition codes are 0..16")
    }};
}

/// Immediate `v` sign-truncated to width `w`, as code_asm takes it.
pub fn imm_for(w: W, v: u32) -> i32 {
    match w {
        W::B => v as i8 as i32,
        W::H => v as i16 as i32,
        W::D => v as i32,
    }
}

pub fn emit(
    a: &mut CodeAssembler,
    mode: Mode,
    t: &Template,
    next_label: &mut Option<CodeLabel>,
) -> Result<(), IcedError> {
    match *t {
        Template::AluRmReg { op, w, dst, src } => match dst {
            Rm::Reg(d) => sized!(w, [d = d, s = src], _m, alu!(a, op, d, s)),
            Rm::Mem(o) => sized!(w, [s = src], m, alu!(a, op, m(o), s)),
        },
        Template::AluRegMem { op, w, dst, off } => {
            sized!(w, [d = dst], m, alu_to_reg!(a, op, d, m(off)))
        }
        Template::AluRmImm { op, w, dst, imm } => {
            let v = imm_for(w, imm);
            match dst {
                Rm::Reg(d) => sized!(w, [d = d], _m, alu!(a, op, d, v)),
                Rm::Mem(o) => sized!(w, [], m, alu!(a, op, m(o), v)),
            }
        }
        Template::Unary { op, w, dst } => {
            macro_rules! unary {
                ($x:expr) => {
                    match op {
                        0 => a.inc($x),
                        1 => a.dec($x),
                        2 => a.neg($x),
                        _ => a.not($x),
                    }
                };
            }
            match dst {
                Rm::Reg(d) => sized!(w, [d = d], _m, unary!(d)),
                Rm::Mem(o) => sized!(w, [], m, unary!(m(o))),
            }
        }
        Template::Shift { op, w, dst, count } => match (dst, count) {
            (Rm::Reg(d), Count::Cl) => sized!(w, [d = d], _m, shift!(a, op, d, cl)),
            (Rm::Reg(d), Count::One) => sized!(w, [d = d], _m, shift!(a, op, d, 1)),
            (Rm::Reg(d), Count::Imm(n)) => sized!(w, [d = d], _m, shift!(a, op, d, n as i32)),
            (Rm::Mem(o), Count::Cl) => sized!(w, [], m, shift!(a, op, m(o), cl)),
            (Rm::Mem(o), Count::One) => sized!(w, [], m, shift!(a, op, m(o), 1)),
            (Rm::Mem(o), Count::Imm(n)) => sized!(w, [], m, shift!(a, op, m(o), n as i32)),
        },
        Template::DoubleShift {
            right,
            w,
            dst,
            src,
            count,
        } => {
            macro_rules! dshift {
                ($x:expr, $s:expr, $c:expr) => {
                    if right {
                        a.shrd($x, $s, $c)
                    } else {
                        a.shld($x, $s, $c)
                    }
                };
            }
            // A count above the operand size leaves result and flags
            // undefined (SDM Vol. 2B SHLD/SHRD): possible only for words.
            let count = match (w, count) {
                (W::H, Count::Cl) => {
                    a.and(cl, 0x0F)?;
                    count
                }
                (W::H, Count::Imm(n)) => Count::Imm(n % 17),
                _ => count,
            };
            match (dst, count) {
                (Rm::Reg(d), Count::Cl) => sized_wide!(w, [d = d, s = src], _m, dshift!(d, s, cl)),
                (Rm::Reg(d), Count::One) => sized_wide!(w, [d = d, s = src], _m, dshift!(d, s, 1)),
                (Rm::Reg(d), Count::Imm(n)) => {
                    sized_wide!(w, [d = d, s = src], _m, dshift!(d, s, n as i32))
                }
                (Rm::Mem(o), Count::Cl) => sized_wide!(w, [s = src], m, dshift!(m(o), s, cl)),
                (Rm::Mem(o), Count::One) => sized_wide!(w, [s = src], m, dshift!(m(o), s, 1)),
                (Rm::Mem(o), Count::Imm(n)) => {
                    sized_wide!(w, [s = src], m, dshift!(m(o), s, n as i32))
                }
            }
        }
        Template::MulDiv { op, w, src, guard } => {
            macro_rules! muldiv {
                ($x:expr) => {
                    match op {
                        0 => a.mul($x),
                        1 => a.imul($x),
                        2 => a.div($x),
                        _ => a.idiv($x),
                    }
                };
            }
            // Guarded DIV and IDIV get a divisor and a dividend that cannot
            // raise #DE; unguarded ones divide what the registers hold, so
            // the streams take #DE often (a zero divisor or an overflow).
            let src = match (op, w, src) {
                (2.., W::B, Rm::Reg(4)) | (2.., W::H | W::D, Rm::Reg(2)) => Rm::Reg(3),
                _ => src,
            };
            if op >= 2 && guard {
                let positive = match w {
                    W::B => 0x7F,
                    W::H => 0x7FFF,
                    W::D => 0x7FFF_FFFF,
                };
                match src {
                    Rm::Reg(s) => sized!(w, [s = s], _m, {
                        if op == 3 {
                            alu!(a, 4, s, imm_for(w, positive))?;
                        }
                        alu!(a, 1, s, 1)?
                    }),
                    Rm::Mem(o) => sized!(w, [], m, {
                        if op == 3 {
                            alu!(a, 4, m(o), imm_for(w, positive))?;
                        }
                        alu!(a, 1, m(o), 1)?
                    }),
                }
                match (op, w) {
                    (2, W::B) => a.mov(ah, 0)?,
                    (2, W::H) => a.mov(dx, 0)?,
                    (2, W::D) => a.mov(edx, 0)?,
                    (_, W::B) => a.cbw()?,
                    (_, W::H) => a.cwd()?,
                    (_, W::D) => a.cdq()?,
                }
            }
            match src {
                Rm::Reg(s) => sized!(w, [s = s], _m, muldiv!(s)),
                Rm::Mem(o) => sized!(w, [], m, muldiv!(m(o))),
            }
        }
        Template::ImulTwo { w, dst, src } => match src {
            Rm::Reg(s) => sized_wide!(w, [d = dst, s = s], _m, a.imul_2(d, s)),
            Rm::Mem(o) => sized_wide!(w, [d = dst], m, a.imul_2(d, m(o))),
        },
        Template::ImulThree { w, dst, src, imm } => {
            let v = imm_for(w, imm);
            match src {
                Rm::Reg(s) => sized_wide!(w, [d = dst, s = s], _m, a.imul_3(d, s, v)),
                Rm::Mem(o) => sized_wide!(w, [d = dst], m, a.imul_3(d, m(o), v)),
            }
        }
        Template::BitReg { op, w, dst, src } => {
            sized_wide!(w, [d = dst, s = src], _m, bit_op!(a, op, d, s))
        }
        Template::BitImm { op, w, dst, bit } => match dst {
            Rm::Reg(d) => sized_wide!(w, [d = d], _m, bit_op!(a, op, d, bit as i32)),
            Rm::Mem(o) => sized_wide!(w, [], m, bit_op!(a, op, m(o), bit as i32)),
        },
        Template::BitScan {
            reverse,
            w,
            dst,
            src,
        } => match src {
            Rm::Reg(s) => sized_wide!(w, [d = dst, s = s], _m, {
                if reverse {
                    a.bsr(d, s)
                } else {
                    a.bsf(d, s)
                }
            }),
            Rm::Mem(o) => sized_wide!(w, [d = dst], m, {
                if reverse {
                    a.bsr(d, m(o))
                } else {
                    a.bsf(d, m(o))
                }
            }),
        },
        Template::Setcc { cc, dst } => match dst {
            Rm::Reg(d) => {
                let d = R8[d as usize];
                by_condition!(
                    a,
                    cc,
                    [
                        seto, setno, setb, setae, sete, setne, setbe, seta, sets, setns, setp,
                        setnp, setl, setge, setle, setg
                    ],
                    (d)
                )
            }
            Rm::Mem(o) => {
                let m = byte_ptr(mem_at(o));
                by_condition!(
                    a,
                    cc,
                    [
                        seto, setno, setb, setae, sete, setne, setbe, seta, sets, setns, setp,
                        setnp, setl, setge, setle, setg
                    ],
                    (m)
                )
            }
        },
        Template::Cmovcc { cc, w, dst, src } => match src {
            Rm::Reg(s) => sized_wide!(
                w,
                [d = dst, s = s],
                _m,
                by_condition!(
                    a,
                    cc,
                    [
                        cmovo, cmovno, cmovb, cmovae, cmove, cmovne, cmovbe, cmova, cmovs, cmovns,
                        cmovp, cmovnp, cmovl, cmovge, cmovle, cmovg
                    ],
                    (d, s)
                )
            ),
            Rm::Mem(o) => sized_wide!(
                w,
                [d = dst],
                m,
                by_condition!(
                    a,
                    cc,
                    [
                        cmovo, cmovno, cmovb, cmovae, cmove, cmovne, cmovbe, cmova, cmovs, cmovns,
                        cmovp, cmovnp, cmovl, cmovge, cmovle, cmovg
                    ],
                    (d, m(o))
                )
            ),
        },
        Template::Extend {
            signed,
            from_word,
            w,
            dst,
            src,
        } => {
            macro_rules! extend {
                ($d:expr, $s:expr) => {
                    if signed {
                        a.movsx($d, $s)
                    } else {
                        a.movzx($d, $s)
                    }
                };
            }
            match (w, from_word, src) {
                (W::D, true, Rm::Reg(s)) => extend!(R32[dst as usize], R16[s as usize]),
                (W::D, true, Rm::Mem(o)) => extend!(R32[dst as usize], word_ptr(mem_at(o))),
                (W::D, false, Rm::Reg(s)) => extend!(R32[dst as usize], R8[s as usize]),
                (W::D, false, Rm::Mem(o)) => extend!(R32[dst as usize], byte_ptr(mem_at(o))),
                (_, _, Rm::Reg(s)) => extend!(R16[dst as usize], R8[s as usize]),
                (_, _, Rm::Mem(o)) => extend!(R16[dst as usize], byte_ptr(mem_at(o))),
            }
        }
        Template::Xchg { w, dst, src } => match dst {
            Rm::Reg(d) => sized!(w, [d = d, s = src], _m, a.xchg(d, s)),
            Rm::Mem(o) => sized!(w, [s = src], m, a.xchg(m(o), s)),
        },
        Template::Xadd { w, dst, src } => match dst {
            Rm::Reg(d) => sized!(w, [d = d, s = src], _m, a.xadd(d, s)),
            Rm::Mem(o) => sized!(w, [s = src], m, a.xadd(m(o), s)),
        },
        Template::Cmpxchg { w, dst, src } => match dst {
            Rm::Reg(d) => sized!(w, [d = d, s = src], _m, a.cmpxchg(d, s)),
            Rm::Mem(o) => sized!(w, [s = src], m, a.cmpxchg(m(o), s)),
        },
        Template::Bswap { r } => a.bswap(R32[r as usize]),
        Template::Lea {
            w,
            dst,
            base,
            index,
            scale,
            disp,
        } => {
            let addr = R32[base as usize] + R32[index as usize] * (1 << scale) + disp;
            match w {
                W::D => a.lea(R32[dst as usize], addr),
                _ => a.lea(R16[dst as usize], addr),
            }
        }
        Template::PushReg { w, r } => match w {
            W::D => a.push(R32[r as usize]),
            _ => a.push(R16[r as usize]),
        },
        Template::PushImm { imm } => match mode {
            // PUSH imm16: the operand size is the code's.
            Mode::Real => a.push(imm as i16 as i32),
            Mode::Protected | Mode::Paged => a.push(imm as i32),
        },
        Template::PopReg { w, r } => match w {
            W::D => a.pop(R32[r as usize]),
            _ => a.pop(R16[r as usize]),
        },
        Template::Pushf => a.pushf(),
        Template::Str {
            op,
            w,
            rep,
            count,
            src_off,
            dst_off,
        } => {
            // Sources and destinations in the middle of the data area, so
            // eight dwords either way (DF may be set) stay inside it.
            a.mov(esi, DATA + 0x80 + src_off as u32)?;
            a.mov(edi, DATA + 0x80 + dst_off as u32)?;
            a.mov(ecx, count as u32)?;
            match (rep, op) {
                (1, 0..=2) => a.rep(),
                (1, _) => a.repe(),
                (2, _) => a.repne(),
                _ => a,
            };
            match (op, w) {
                (0, W::B) => a.movsb(),
                (0, W::H) => a.movsw(),
                (0, W::D) => a.movsd(),
                (1, W::B) => a.stosb(),
                (1, W::H) => a.stosw(),
                (1, W::D) => a.stosd(),
                (2, W::B) => a.lodsb(),
                (2, W::H) => a.lodsw(),
                (2, W::D) => a.lodsd(),
                (3, W::B) => a.cmpsb(),
                (3, W::H) => a.cmpsw(),
                (3, W::D) => a.cmpsd(),
                (_, W::B) => a.scasb(),
                (_, W::H) => a.scasw(),
                (_, W::D) => a.scasd(),
            }
        }
        Template::Implied { op } => match op {
            0 => a.cbw(),
            1 => a.cwde(),
            2 => a.cwd(),
            3 => a.cdq(),
            4 => a.lahf(),
            5 => a.sahf(),
            6 => a.clc(),
            7 => a.stc(),
            _ => a.cmc(),
        },
        Template::Bcd { op } => match op {
            0 => a.daa(),
            1 => a.das(),
            2 => a.aaa(),
            _ => a.aas(),
        },
        Template::Aam { imm } => a.aam(imm as i32),
        Template::Aad { imm } => a.aad(imm as i32),
        Template::Jcc { cc, .. } => {
            let target = a.create_label();
            *next_label = Some(target);
            by_condition!(
                a,
                cc,
                [jo, jno, jb, jae, je, jne, jbe, ja, js, jns, jp, jnp, jl, jge, jle, jg],
                (target)
            )
        }
    }
}

/// The stream as code at `CODE`, ending in HLT.
pub fn assemble(mode: Mode, stream: &[Template]) -> Vec<u8> {
    let mut a = CodeAssembler::new(mode.bitness()).expect("16 and 32 are valid bitnesses");
    // Forward-jump targets still to place: (label, templates to go).
    let mut pending: Vec<(CodeLabel, u8)> = Vec::new();
    for t in stream {
        let mut label = None;
        emit(&mut a, mode, t, &mut label).unwrap_or_else(|e| panic!("assembling {t:?}: {e}"));
        for (l, left) in pending.iter_mut() {
            *left -= 1;
            if *left == 0 {
                // One label per instruction: a NOP between targets.
                a.set_label(l).expect("a fresh label");
                a.nop().expect("NOP assembles");
            }
        }
        pending.retain(|&(_, left)| left > 0);
        if let (Some(l), Template::Jcc { skip, .. }) = (label, t) {
            pending.push((l, *skip));
        }
    }
    for (mut l, _) in pending {
        a.set_label(&mut l).expect("a fresh label");
        a.nop().expect("NOP assembles");
    }
    a.hlt().expect("HLT assembles");
    a.assemble(CODE as u64).expect("the stream assembles")
}

/// A machine holding the case, ready to run the stream at CS:CODE.
pub fn machine(c: &Case, code: &[u8]) -> Machine {
    let mut m = Machine::with_ram_mib(2).expect("2 MiB of RAM maps");
    m.write_ram(HLT_STUB, &[0xF4]).expect("the stub fits");
    m.write_ram(DATA, &c.data.0).expect("the data area fits");
    m.write_ram(CODE, code).expect("the code fits");
    let mut stack = STACK_TOP;
    match c.mode {
        Mode::Real => {
            // Every IVT entry is 0000:HLT_STUB.
            let ivt: Vec<u8> = (0..256).flat_map(|_| HLT_STUB.to_le_bytes()).collect();
            m.write_ram(0, &ivt).expect("the IVT fits");
            for s in SegReg::ALL {
                m.cpu.seg[s as usize] = Segment::real_mode(0);
            }
            // The stack is SP: the upper half of ESP is a random bystander.
            stack |= c.regs[reg::ESP] & 0xFFFF_0000;
        }
        Mode::Protected | Mode::Paged => {
            enter_flat_protected_mode(&mut m, CODE);
            // A 32-bit interrupt gate to 0x08:HLT_STUB for every vector
            // (SDM Vol. 3A 6.11).
            let gate = (HLT_STUB as u64 & 0xFFFF)
                | (0x08 << 16)
                | (0x8E00u64 << 32)
                | ((HLT_STUB as u64 >> 16) << 48);
            let idt: Vec<u8> = (0..256).flat_map(|_| gate.to_le_bytes()).collect();
            m.write_ram(IDT, &idt).expect("the IDT fits");
            m.cpu.idtr = TableReg {
                base: IDT,
                limit: 256 * 8 - 1,
                _pad: 0,
            };
        }
    }
    m.cpu.gpr = c.regs;
    m.cpu.gpr[reg::ESP] = stack;
    m.cpu.eip = CODE;
    m.cpu.eflags = (c.flags & (CF | PF | AF | ZF | SF | OF | DF)) | FIXED1;
    if c.mode == Mode::Paged {
        // PDE 0 -> the page table; PTEs map 0-4 MiB one to one
        // (present, writable; SDM Vol. 3A 4.3).
        let pde = (PAGE_TABLE | 0x3).to_le_bytes();
        m.write_ram(PAGE_DIR, &pde)
            .expect("the page directory fits");
        let ptes: Vec<u8> = (0..1024u32)
            .flat_map(|n| ((n << 12) | 0x3).to_le_bytes())
            .collect();
        m.write_ram(PAGE_TABLE, &ptes).expect("the page table fits");
        m.cpu.cr3 = PAGE_DIR;
        m.cpu.cr0 |= ringside_core::cpu::cr0::PG;
        m.flush_tlb();
    }
    m
}

/// The stream as it was assembled, one instruction a line, for reports.
pub fn listing(mode: Mode, code: &[u8]) -> String {
    let mut d = Decoder::with_ip(mode.bitness(), code, CODE as u64, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    for insn in d.iter() {
        let mut text = String::new();
        f.format(&insn, &mut text);
        out.push_str(&format!("  {:08x}  {text}\n", insn.ip()));
    }
    out
}

pub fn cases() -> u32 {
    std::env::var("RINGSIDE_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}
