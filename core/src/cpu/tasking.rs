//! Hardware task switching (SDM Vol. 3A chapter 7): JMP or CALL to a TSS
//! descriptor or task gate, INT through a task gate, and IRET with NT set.
//! Busy bits, the NT flag and the back link follow table 7-2; the 32-bit TSS
//! layout is figure 7-2, the 16-bit one figure 7-11.

use super::flags::{NT, VM};
use super::segments::{null_segment, system_type, Descriptor};
use super::state::{cr0, SegReg, Segment};
use super::{CpuResult, Fault};
use crate::machine::Machine;

/// What caused a task switch: it decides busy bits, NT and the back link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchReason {
    Jmp,
    Call,
    /// IRET with EFLAGS.NT = 1: return to the task in the back link.
    Iret,
    /// An interrupt or exception through a task gate; `ext` marks events
    /// external to the program for error codes.
    Interrupt {
        ext: bool,
    },
}

/// A TSS image as read from memory, in one width-independent form.
struct TaskImage {
    cr3: Option<u32>,
    eip: u32,
    eflags: u32,
    gpr: [u32; 8],
    seg: [u16; 6],
    ldt: u16,
}

impl Machine {
    /// Switch to the task whose TSS `selector` names. `return_eip` is the EIP
    /// saved in the outgoing task. Faults before the switch commits leave the
    /// old task untouched; faults while loading the new task's segments are
    /// raised in the new task's context (SDM Vol. 3A 7.3, step 14).
    pub fn task_switch(
        &mut self,
        selector: u16,
        reason: TaskSwitchReason,
        return_eip: u32,
    ) -> CpuResult<()> {
        let ext = matches!(reason, TaskSwitchReason::Interrupt { ext: true }) as u32;
        let sel_code = (selector as u32 & 0xFFFC) | ext;
        let iret = reason == TaskSwitchReason::Iret;
        let bad_selector = || {
            if iret {
                Fault::ts(sel_code)
            } else {
                Fault::gp(sel_code)
            }
        };
        if selector & 4 != 0 {
            return Err(bad_selector());
        }
        let desc = self.read_descriptor(selector)?.ok_or_else(bad_selector)?;
        let t = desc.typ();
        let is_tss = !desc.is_code_or_data()
            && matches!(
                t,
                system_type::TSS16_AVAIL
                    | system_type::TSS16_BUSY
                    | system_type::TSS32_AVAIL
                    | system_type::TSS32_BUSY
            );
        let busy = t & 2 != 0;
        if !is_tss || busy != iret {
            return Err(bad_selector());
        }
        if !desc.present() {
            return Err(Fault::np(sel_code));
        }
        let new32 = t & 8 != 0;
        if desc.limit() < if new32 { 0x67 } else { 0x2B } {
            return Err(Fault::ts(sel_code));
        }

        // Read everything of the new task before writing anything.
        let new_base = desc.base();
        let image = self.read_task_image(new_base, new32)?;
        let old = self.cpu.tr;
        let old32 = old.attr & 8 != 0;
        self.probe_write(old.base, if old32 { 0x68 } else { 0x2C }, false)?;
        if matches!(
            reason,
            TaskSwitchReason::Call | TaskSwitchReason::Interrupt { .. }
        ) {
            self.probe_write(new_base, 2, false)?;
        }

        // Save the outgoing task (table 7-2: IRET clears NT in the saved image).
        let mut saved_eflags = self.cpu.eflags;
        if iret {
            saved_eflags &= !NT;
        }
        self.save_task_image(old.base, old32, return_eip, saved_eflags)?;
        if matches!(reason, TaskSwitchReason::Jmp | TaskSwitchReason::Iret) {
            self.set_tss_busy(old.selector, false)?;
        }
        let mut eflags = image.eflags;
        if matches!(
            reason,
            TaskSwitchReason::Call | TaskSwitchReason::Interrupt { .. }
        ) {
            self.write_lin::<u16>(new_base, old.selector, false)?;
            eflags |= NT;
        }
        let mut new_desc = desc;
        if !iret {
            new_desc = Descriptor(desc.0 | (2 << 40));
            self.write_descriptor(selector, new_desc)?;
        }

        // Commit the switch: from here, faults belong to the new task.
        self.cpu.tr = new_desc.to_segment(selector);
        self.cpu.cr0 |= cr0::TS;
        if let Some(cr3) = image.cr3 {
            if self.cpu.paging() {
                self.cpu.cr3 = cr3;
                self.tlb.flush();
            }
        }
        self.cpu.eip = image.eip;
        self.cpu.eflags = (eflags & super::flags::IMPLEMENTED) | super::flags::FIXED1;
        if !new32 {
            self.cpu.eflags &= 0xFFFF;
            self.cpu.eflags |= super::flags::FIXED1;
        }
        self.cpu.gpr = image.gpr;
        for (i, &s) in image.seg.iter().enumerate() {
            self.cpu.seg[i] = null_segment(s);
        }
        self.cpu.ldtr = null_segment(image.ldt);
        self.load_task_segments(&image)
    }

    fn read_task_image(&mut self, base: u32, tss32: bool) -> CpuResult<TaskImage> {
        let rd32 = |m: &mut Machine, off: u32| m.read_lin::<u32>(base.wrapping_add(off), false);
        let rd16 = |m: &mut Machine, off: u32| m.read_lin::<u16>(base.wrapping_add(off), false);
        let mut gpr = [0u32; 8];
        let mut seg = [0u16; 6];
        if tss32 {
            for (i, g) in gpr.iter_mut().enumerate() {
                *g = rd32(self, 40 + 4 * i as u32)?;
            }
            for (i, s) in seg.iter_mut().enumerate() {
                *s = rd16(self, 72 + 4 * i as u32)?;
            }
            Ok(TaskImage {
                cr3: Some(rd32(self, 28)?),
                eip: rd32(self, 32)?,
                eflags: rd32(self, 36)?,
                gpr,
                seg,
                ldt: rd16(self, 96)?,
            })
        } else {
            for (i, g) in gpr.iter_mut().enumerate() {
                // A 16-bit task's registers keep their upper halves.
                *g = (self.cpu.gpr[i] & 0xFFFF_0000) | rd16(self, 18 + 2 * i as u32)? as u32;
            }
            for (i, s) in seg.iter_mut().take(4).enumerate() {
                *s = rd16(self, 34 + 2 * i as u32)?;
            }
            Ok(TaskImage {
                cr3: None,
                eip: rd16(self, 14)? as u32,
                eflags: rd16(self, 16)? as u32,
                gpr,
                seg,
                ldt: rd16(self, 42)?,
            })
        }
    }

    fn save_task_image(&mut self, base: u32, tss32: bool, eip: u32, eflags: u32) -> CpuResult<()> {
        let gpr = self.cpu.gpr;
        let sels: Vec<u16> = self.cpu.seg.iter().map(|s| s.selector).collect();
        if tss32 {
            self.write_lin::<u32>(base.wrapping_add(32), eip, false)?;
            self.write_lin::<u32>(base.wrapping_add(36), eflags, false)?;
            for (i, g) in gpr.iter().enumerate() {
                self.write_lin::<u32>(base.wrapping_add(40 + 4 * i as u32), *g, false)?;
            }
            for (i, s) in sels.iter().enumerate() {
                self.write_lin::<u16>(base.wrapping_add(72 + 4 * i as u32), *s, false)?;
            }
        } else {
            self.write_lin::<u16>(base.wrapping_add(14), eip as u16, false)?;
            self.write_lin::<u16>(base.wrapping_add(16), eflags as u16, false)?;
            for (i, g) in gpr.iter().enumerate() {
                self.write_lin::<u16>(base.wrapping_add(18 + 2 * i as u32), *g as u16, false)?;
            }
            for (i, s) in sels.iter().take(4).enumerate() {
                self.write_lin::<u16>(base.wrapping_add(34 + 2 * i as u32), *s, false)?;
            }
        }
        Ok(())
    }

    /// Set or clear the busy bit of the TSS descriptor `selector` names.
    pub fn set_tss_busy(&mut self, selector: u16, busy: bool) -> CpuResult<()> {
        if let Some(d) = self.read_descriptor(selector)? {
            let nd = if busy {
                d.0 | (2 << 40)
            } else {
                d.0 & !(2 << 40)
            };
            self.write_descriptor(selector, Descriptor(nd))?;
        }
        Ok(())
    }

    /// Load LDTR and the segment registers of the incoming task, with the
    /// checks of SDM Vol. 3A table 7-1.
    fn load_task_segments(&mut self, image: &TaskImage) -> CpuResult<()> {
        let ts = |sel: u16| Fault::ts(sel as u32 & 0xFFFC);
        // LDTR first: the other selectors may name LDT descriptors.
        if image.ldt & !3 != 0 {
            if image.ldt & 4 != 0 {
                return Err(ts(image.ldt));
            }
            let d = self.read_descriptor(image.ldt)?.ok_or(ts(image.ldt))?;
            if d.is_code_or_data() || d.typ() != system_type::LDT || !d.present() {
                return Err(ts(image.ldt));
            }
            self.cpu.ldtr = d.to_segment(image.ldt);
        }
        if self.cpu.eflags & VM != 0 {
            for (i, &s) in image.seg.iter().enumerate() {
                self.cpu.seg[i] = Segment::vm86(s);
            }
            return Ok(());
        }
        let cs_sel = image.seg[SegReg::Cs as usize];
        let cpl = (cs_sel & 3) as u8;
        if cs_sel & !3 == 0 {
            return Err(ts(cs_sel));
        }
        let cs = self.read_descriptor(cs_sel)?.ok_or(ts(cs_sel))?;
        let dpl_ok = if cs.conforming() {
            cs.dpl() <= cpl
        } else {
            cs.dpl() == cpl
        };
        if !cs.is_code() || !dpl_ok {
            return Err(ts(cs_sel));
        }
        if !cs.present() {
            return Err(Fault::np(cs_sel as u32 & 0xFFFC));
        }
        let ss_sel = image.seg[SegReg::Ss as usize];
        if ss_sel & !3 == 0 {
            return Err(ts(ss_sel));
        }
        let ss = self.read_descriptor(ss_sel)?.ok_or(ts(ss_sel))?;
        if (ss_sel & 3) as u8 != cpl || ss.dpl() != cpl || !ss.writable_data() {
            return Err(ts(ss_sel));
        }
        if !ss.present() {
            return Err(Fault::ss(ss_sel as u32 & 0xFFFC));
        }
        let cs = self.set_accessed(cs_sel, cs)?;
        let ss = self.set_accessed(ss_sel, ss)?;
        self.cpu.seg[SegReg::Cs as usize] = cs.to_segment(cs_sel);
        self.cpu.seg[SegReg::Ss as usize] = ss.to_segment(ss_sel);
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let sel = image.seg[s as usize];
            if sel & !3 == 0 {
                continue;
            }
            let d = self.read_descriptor(sel)?.ok_or(ts(sel))?;
            if !(d.is_data() || d.readable_code()) {
                return Err(ts(sel));
            }
            if (d.is_data() || !d.conforming()) && (d.dpl() < cpl || d.dpl() < (sel & 3) as u8) {
                return Err(ts(sel));
            }
            if !d.present() {
                return Err(Fault::np(sel as u32 & 0xFFFC));
            }
            let d = self.set_accessed(sel, d)?;
            self.cpu.seg[s as usize] = d.to_segment(sel);
        }
        Ok(())
    }
}
