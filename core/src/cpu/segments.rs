//! Segmentation (SELM): descriptors, segment-register loads with every
//! protection check, and segment-relative memory access with limit and type
//! checks, in real, protected and virtual-8086 mode.
//!
//! References: SDM Vol. 3A chapter 3 (segmentation), 5.3-5.6 (limit, type
//! and privilege checks), and the MOV/POP/LDS pseudo-code in Vol. 2.

use super::flags::AC;
use super::state::{attr, cr0, SegReg, Segment};
use super::{CpuResult, Fault};
use crate::machine::Machine;
use crate::mmu::MemWord;

/// A raw 8-byte segment or gate descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor(pub u64);

/// System descriptor and gate types (S = 0), SDM Vol. 3A table 3-2.
pub mod system_type {
    pub const TSS16_AVAIL: u8 = 1;
    pub const LDT: u8 = 2;
    pub const TSS16_BUSY: u8 = 3;
    pub const CALL_GATE16: u8 = 4;
    pub const TASK_GATE: u8 = 5;
    pub const INT_GATE16: u8 = 6;
    pub const TRAP_GATE16: u8 = 7;
    pub const TSS32_AVAIL: u8 = 9;
    pub const TSS32_BUSY: u8 = 11;
    pub const CALL_GATE32: u8 = 12;
    pub const INT_GATE32: u8 = 14;
    pub const TRAP_GATE32: u8 = 15;
}

impl Descriptor {
    pub fn base(&self) -> u32 {
        let d = self.0;
        (((d >> 16) & 0xFF_FFFF) | ((d >> 32) & 0xFF00_0000)) as u32
    }
    /// The limit in bytes, granularity applied.
    pub fn limit(&self) -> u32 {
        let d = self.0;
        let raw = ((d & 0xFFFF) | ((d >> 32) & 0xF_0000)) as u32;
        if self.granular() {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }
    fn granular(&self) -> bool {
        self.0 & (1 << 55) != 0
    }
    /// The attribute bits in the layout of [`attr`].
    pub fn attr(&self) -> u32 {
        let hi = (self.0 >> 32) as u32;
        ((hi >> 8) & 0xFF) | ((hi >> 8) & 0xF000)
    }
    pub fn typ(&self) -> u8 {
        ((self.0 >> 40) & 0xF) as u8
    }
    /// S: 1 for code and data segments, 0 for system descriptors and gates.
    pub fn is_code_or_data(&self) -> bool {
        self.0 & (1 << 44) != 0
    }
    pub fn is_code(&self) -> bool {
        self.is_code_or_data() && self.typ() & 8 != 0
    }
    pub fn is_data(&self) -> bool {
        self.is_code_or_data() && self.typ() & 8 == 0
    }
    pub fn dpl(&self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }
    pub fn present(&self) -> bool {
        self.0 & (1 << 47) != 0
    }
    pub fn conforming(&self) -> bool {
        self.is_code() && self.typ() & 4 != 0
    }
    pub fn readable_code(&self) -> bool {
        self.is_code() && self.typ() & 2 != 0
    }
    pub fn writable_data(&self) -> bool {
        self.is_data() && self.typ() & 2 != 0
    }
    /// Gate fields: target selector, offset and (call gates) parameter count.
    pub fn gate_selector(&self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub fn gate_offset(&self) -> u32 {
        let d = self.0;
        ((d & 0xFFFF) | ((d >> 32) & 0xFFFF_0000)) as u32
    }
    /// A 16-bit gate's offset is only the low word.
    pub fn gate_offset_sized(&self) -> u32 {
        if self.typ() & 8 != 0 {
            self.gate_offset()
        } else {
            self.gate_offset() & 0xFFFF
        }
    }
    pub fn gate_param_count(&self) -> u32 {
        ((self.0 >> 32) & 0x1F) as u32
    }
    /// The hidden cache a segment register holds after loading this.
    pub fn to_segment(&self, selector: u16) -> Segment {
        Segment {
            selector,
            _pad: 0,
            attr: self.attr(),
            base: self.base(),
            limit: self.limit(),
        }
    }
}

/// A null segment register (a null selector loaded in protected mode).
pub fn null_segment(selector: u16) -> Segment {
    Segment {
        selector,
        _pad: 0,
        attr: attr::UNUSABLE,
        base: 0,
        limit: 0,
    }
}

/// Fast-path test: a present, usable, readable, expand-up segment.
#[inline(always)]
fn fast_readable(a: u32) -> bool {
    let m = a & (attr::UNUSABLE | attr::S | attr::CODE | attr::DC | attr::RW);
    // Expand-up data (any RW), or readable code (conforming or not).
    (m & !attr::RW) == attr::S || (m & !attr::DC) == attr::S | attr::CODE | attr::RW
}

#[inline(always)]
fn fast_writable(a: u32) -> bool {
    a & (attr::UNUSABLE | attr::S | attr::CODE | attr::DC | attr::RW) == attr::S | attr::RW
}

/// The exception a failed segment check raises: #SS(0) for the stack
/// segment, #GP(0) otherwise (SDM Vol. 3A 5.3).
#[inline]
pub fn segment_fault(s: SegReg) -> Fault {
    if s == SegReg::Ss {
        Fault::ss(0)
    } else {
        Fault::gp0()
    }
}

/// Full limit and type check of an access of `size` bytes at `offset`,
/// returning the linear address. `protected` enables the type checks, which
/// real and virtual-8086 mode do not make.
pub fn check_segment_access(
    seg: &Segment,
    s: SegReg,
    offset: u32,
    size: u32,
    write: bool,
    protected: bool,
) -> CpuResult<u32> {
    let a = seg.attr;
    if protected {
        if a & attr::UNUSABLE != 0 {
            return Err(segment_fault(s));
        }
        let code = a & attr::CODE != 0;
        if write && (code || a & attr::RW == 0) {
            return Err(segment_fault(s));
        }
        if !write && code && a & attr::RW == 0 {
            return Err(segment_fault(s));
        }
    }
    let last = offset.wrapping_add(size - 1);
    let expand_down = a & (attr::CODE | attr::DC) == attr::DC && (protected || a & attr::S != 0);
    let ok = if expand_down && protected {
        // Valid offsets are limit+1 ..= 0xFFFF or 0xFFFFFFFF (SDM Vol. 3A 5.3).
        let upper = if seg.is_big() { u32::MAX } else { 0xFFFF };
        offset > seg.limit && last >= offset && last <= upper
    } else {
        last >= offset && last <= seg.limit
    };
    if !ok {
        return Err(segment_fault(s));
    }
    Ok(seg.base.wrapping_add(offset))
}

impl Machine {
    /// Translate `segment:offset` for a data read of `size` bytes.
    #[inline(always)]
    pub fn seg_read_addr(&self, s: SegReg, offset: u32, size: u32) -> CpuResult<u32> {
        let seg = &self.cpu.seg[s as usize];
        if fast_readable(seg.attr)
            && offset <= seg.limit.wrapping_sub(size - 1)
            && seg.limit >= size - 1
        {
            return Ok(seg.base.wrapping_add(offset));
        }
        check_segment_access(seg, s, offset, size, false, self.type_checks())
    }

    /// Translate `segment:offset` for a data write of `size` bytes.
    #[inline(always)]
    pub fn seg_write_addr(&self, s: SegReg, offset: u32, size: u32) -> CpuResult<u32> {
        let seg = &self.cpu.seg[s as usize];
        if fast_writable(seg.attr)
            && offset <= seg.limit.wrapping_sub(size - 1)
            && seg.limit >= size - 1
        {
            return Ok(seg.base.wrapping_add(offset));
        }
        check_segment_access(seg, s, offset, size, true, self.type_checks())
    }

    #[inline(always)]
    fn type_checks(&self) -> bool {
        self.cpu.protected_mode() && !self.cpu.vm86()
    }

    /// Whether data accesses now are user-mode (CPL 3) accesses for paging.
    #[inline(always)]
    pub fn user_access(&self) -> bool {
        self.cpu.cpl() == 3
    }

    /// #AC: a misaligned access at CPL 3 with CR0.AM and EFLAGS.AC set
    /// (SDM Vol. 3A 6.15, interrupt 17).
    #[inline(always)]
    fn alignment_check(&self, lin: u32, size: u32, user: bool) -> CpuResult<()> {
        if user
            && size > 1
            && lin & (size - 1) != 0
            && self.cpu.cr0 & cr0::AM != 0
            && self.cpu.eflags & AC != 0
        {
            return Err(Fault::ac());
        }
        Ok(())
    }

    /// Read a value at `segment:offset` with the current privilege.
    #[inline(always)]
    pub fn read_seg<T: MemWord>(&mut self, s: SegReg, offset: u32) -> CpuResult<T> {
        let lin = self.seg_read_addr(s, offset, T::SIZE)?;
        let user = self.user_access();
        self.alignment_check(lin, T::SIZE, user)?;
        self.read_lin(lin, user)
    }

    /// Write a value at `segment:offset` with the current privilege.
    #[inline(always)]
    pub fn write_seg<T: MemWord>(&mut self, s: SegReg, offset: u32, value: T) -> CpuResult<()> {
        let lin = self.seg_write_addr(s, offset, T::SIZE)?;
        let user = self.user_access();
        self.alignment_check(lin, T::SIZE, user)?;
        self.write_lin(lin, value, user)
    }

    /// Check that a write of `size` bytes at `segment:offset` would succeed.
    pub fn probe_seg_write(&mut self, s: SegReg, offset: u32, size: u32) -> CpuResult<u32> {
        let lin = self.seg_write_addr(s, offset, size)?;
        let user = self.user_access();
        self.alignment_check(lin, size, user)?;
        self.probe_write(lin, size, user)?;
        Ok(lin)
    }

    /// Read the descriptor a selector names, from the GDT or the LDT. `Ok(None)`
    /// when the selector is outside the table's limit (or names the LDT while
    /// none is loaded); the caller picks the exception.
    pub fn read_descriptor(&mut self, selector: u16) -> CpuResult<Option<Descriptor>> {
        let index = (selector & !7) as u32;
        let (base, limit) = if selector & 4 != 0 {
            if self.cpu.ldtr.is_unusable() {
                return Ok(None);
            }
            (self.cpu.ldtr.base, self.cpu.ldtr.limit)
        } else {
            (self.cpu.gdtr.base, self.cpu.gdtr.limit as u32)
        };
        if index + 7 > limit {
            return Ok(None);
        }
        // Descriptor-table reads are supervisor accesses (SDM Vol. 3A 4.6).
        let raw = self.read_lin::<u64>(base.wrapping_add(index), false)?;
        Ok(Some(Descriptor(raw)))
    }

    /// Write a descriptor back (accessed and busy bits).
    pub fn write_descriptor(&mut self, selector: u16, d: Descriptor) -> CpuResult<()> {
        let base = if selector & 4 != 0 {
            self.cpu.ldtr.base
        } else {
            self.cpu.gdtr.base
        };
        self.write_lin::<u64>(base.wrapping_add((selector & !7) as u32), d.0, false)
    }

    /// Set the accessed bit of a code or data descriptor if it is clear.
    pub fn set_accessed(&mut self, selector: u16, d: Descriptor) -> CpuResult<Descriptor> {
        if d.0 & (1 << 40) == 0 {
            let nd = Descriptor(d.0 | (1 << 40));
            let base = if selector & 4 != 0 {
                self.cpu.ldtr.base
            } else {
                self.cpu.gdtr.base
            };
            let addr = base.wrapping_add((selector & !7) as u32 + 5);
            self.write_lin::<u8>(addr, (nd.0 >> 40) as u8, false)?;
            return Ok(nd);
        }
        Ok(d)
    }

    /// Load a data or stack segment register (MOV, POP, LDS/LES/LFS/LGS/LSS)
    /// with the checks of SDM Vol. 2B MOV pseudo-code. CS is not loaded here.
    /// A load of SS holds off interrupts until the next instruction has run
    /// (SDM Vol. 3A 6.8.3), so a MOV SS / MOV ESP pair is never split.
    pub fn load_segment(&mut self, s: SegReg, selector: u16) -> CpuResult<()> {
        self.load_segment_cache(s, selector)?;
        if s == SegReg::Ss {
            self.cpu.run.interrupt_shadow = true;
            // The shadow is a rule of the next boundary.
            self.pending().raise(crate::cpu::boundary::work::CPU);
        }
        Ok(())
    }

    /// The register and descriptor-cache part of `load_segment`.
    fn load_segment_cache(&mut self, s: SegReg, selector: u16) -> CpuResult<()> {
        if !self.cpu.protected_mode() {
            // Real mode keeps the cached limit and attributes (which is what
            // makes "unreal mode" work); only base and selector change.
            let seg = &mut self.cpu.seg[s as usize];
            seg.selector = selector;
            seg.base = (selector as u32) << 4;
            seg.attr = (seg.attr & !(attr::UNUSABLE | attr::DPL_MASK)) | attr::P | attr::S;
            if seg.attr & attr::CODE != 0 {
                seg.attr = attr::REAL_MODE_DATA | (seg.attr & (attr::DB | attr::G));
            }
            return Ok(());
        }
        if self.cpu.vm86() {
            self.cpu.seg[s as usize] = Segment::vm86(selector);
            return Ok(());
        }
        let segment = self.checked_segment(s, selector)?;
        self.cpu.seg[s as usize] = segment;
        Ok(())
    }

    /// The protection checks of a protected-mode data/stack segment load,
    /// returning the cache to load (the accessed bit is set in memory).
    pub fn checked_segment(&mut self, s: SegReg, selector: u16) -> CpuResult<Segment> {
        let cpl = self.cpu.cpl();
        let rpl = (selector & 3) as u8;
        if selector & !3 == 0 {
            if s == SegReg::Ss {
                return Err(Fault::gp0());
            }
            return Ok(null_segment(selector));
        }
        let d = self
            .read_descriptor(selector)?
            .ok_or(Fault::gp_sel(selector))?;
        if s == SegReg::Ss {
            if rpl != cpl || !d.writable_data() || d.dpl() != cpl {
                return Err(Fault::gp_sel(selector));
            }
            if !d.present() {
                return Err(Fault::ss(selector as u32 & 0xFFFC));
            }
        } else {
            if !(d.is_data() || d.readable_code()) {
                return Err(Fault::gp_sel(selector));
            }
            if (d.is_data() || !d.conforming()) && (rpl > d.dpl() || cpl > d.dpl()) {
                return Err(Fault::gp_sel(selector));
            }
            if !d.present() {
                return Err(Fault::np(selector as u32 & 0xFFFC));
            }
        }
        let d = self.set_accessed(selector, d)?;
        Ok(d.to_segment(selector))
    }

    /// Push onto the current stack (SS:ESP or SS:SP), `size` 2 or 4 bytes.
    pub fn push(&mut self, value: u32, size: u32) -> CpuResult<()> {
        let esp = self.cpu.gpr[super::reg::ESP];
        let big = self.cpu.stack32();
        let new_sp = if big {
            esp.wrapping_sub(size)
        } else {
            (esp.wrapping_sub(size)) & 0xFFFF
        };
        if size == 4 {
            self.write_seg::<u32>(SegReg::Ss, new_sp, value)?;
        } else {
            self.write_seg::<u16>(SegReg::Ss, new_sp, value as u16)?;
        }
        self.set_sp(new_sp);
        Ok(())
    }

    /// Read the value `size` bytes at SS:ESP + `depth` without popping.
    pub fn stack_read(&mut self, depth: u32, size: u32) -> CpuResult<u32> {
        let sp = self.stack_pointer().wrapping_add(depth);
        let sp = if self.cpu.stack32() { sp } else { sp & 0xFFFF };
        if size == 4 {
            self.read_seg::<u32>(SegReg::Ss, sp)
        } else {
            self.read_seg::<u16>(SegReg::Ss, sp).map(u32::from)
        }
    }

    /// ESP or SP, as the stack size says.
    #[inline]
    pub fn stack_pointer(&self) -> u32 {
        let esp = self.cpu.gpr[super::reg::ESP];
        if self.cpu.stack32() {
            esp
        } else {
            esp & 0xFFFF
        }
    }

    /// Set ESP or only SP, as the stack size says.
    #[inline]
    pub fn set_sp(&mut self, v: u32) {
        if self.cpu.stack32() {
            self.cpu.gpr[super::reg::ESP] = v;
        } else {
            self.cpu.set_reg16(super::reg::ESP, v as u16);
        }
    }

    /// Add to ESP or SP, as the stack size says.
    #[inline]
    pub fn adjust_sp(&mut self, delta: u32) {
        let v = self.stack_pointer().wrapping_add(delta);
        self.set_sp(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_fields_decode_as_in_the_manual() {
        // A flat 32-bit ring-0 code segment: base 0, limit FFFFF, G, D, P, type A.
        let d = Descriptor(0x00CF_9A00_0000_FFFF);
        assert_eq!(d.base(), 0);
        assert_eq!(d.limit(), 0xFFFF_FFFF);
        assert!(d.is_code());
        assert!(d.readable_code());
        assert_eq!(d.dpl(), 0);
        let s = d.to_segment(8);
        assert!(s.is_big());
        assert!(s.is_code());
    }

    #[test]
    fn expand_down_segment_rejects_offsets_at_or_below_the_limit() {
        let seg = Segment {
            selector: 0x10,
            _pad: 0,
            attr: attr::P | attr::S | attr::RW | attr::DC,
            base: 0,
            limit: 0x0FFF,
        };
        assert!(check_segment_access(&seg, SegReg::Ds, 0x0FFF, 1, false, true).is_err());
        assert!(check_segment_access(&seg, SegReg::Ds, 0x1000, 4, false, true).is_ok());
        assert!(check_segment_access(&seg, SegReg::Ds, 0xFFFE, 4, false, true).is_err());
    }

    #[test]
    fn write_to_code_segment_faults_only_in_protected_mode() {
        let seg = Descriptor(0x00CF_9A00_0000_FFFF).to_segment(8);
        assert_eq!(
            check_segment_access(&seg, SegReg::Cs, 0, 1, true, true),
            Err(Fault::gp0())
        );
        assert!(check_segment_access(&seg, SegReg::Cs, 0, 1, true, false).is_ok());
    }

    #[test]
    fn a_stack_segment_load_holds_off_interrupts_and_a_data_segment_load_does_not() {
        let mut m = Machine::with_ram_mib(1).unwrap();
        m.load_segment(SegReg::Ds, 0x1000).unwrap();
        assert!(!m.cpu.run.interrupt_shadow);
        m.load_segment(SegReg::Ss, 0x1000).unwrap();
        assert!(m.cpu.run.interrupt_shadow);
        assert_eq!(m.cpu.seg[SegReg::Ss as usize].base, 0x10000);
    }

    #[test]
    fn stack_limit_violation_raises_ss() {
        let seg = Segment::real_mode(0);
        assert_eq!(
            check_segment_access(&seg, SegReg::Ss, 0xFFFF, 2, false, false),
            Err(Fault::ss(0))
        );
    }
}
