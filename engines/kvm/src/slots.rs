//! Guest physical memory as KVM memory slots.
//!
//! RAM is the machine's own `vm-memory` mapping, registered as is (no
//! copy): a store by the guest under KVM is a store into the same bytes the
//! interpreter reads. ROM images are copied into an anonymous mapping the
//! engine owns and registered read-only, so a guest write to ROM exits as
//! MMIO and is dropped by `Machine::phys_write`, as on the bus. MMIO ranges
//! and unassigned addresses get no slot at all: every access to them exits.
//!
//! The layout follows `Memory::classify` page by page, so a ROM that
//! overlays RAM (the BIOS window below 1 MiB) splits the RAM slot around it.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use ringside_core::memory::{Memory, PhysKind, PAGE_SIZE};
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// What backs one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// RAM, from this byte offset into the RAM mapping.
    Ram { offset: u32 },
    /// ROM `index`, from this byte offset into its image.
    Rom { index: usize, offset: u32 },
}

/// One contiguous guest-physical range with one kind of backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    pub guest: u64,
    pub size: u64,
    pub backing: Backing,
}

/// What one page is, for the layout: `None` when accesses must exit.
fn page_backing(mem: &Memory, page: u64) -> Option<Backing> {
    let first = page as u32;
    let last = first | (PAGE_SIZE - 1);
    match (mem.classify(first), mem.classify(last)) {
        (PhysKind::Ram(offset), PhysKind::Ram(_)) => Some(Backing::Ram { offset }),
        (PhysKind::Rom { index, offset }, PhysKind::Rom { index: i2, .. }) if index == i2 => {
            Some(Backing::Rom { index, offset })
        }
        _ => None,
    }
}

/// Whether `next` continues `slot` at the page right after it.
fn continues(slot: &SlotPlan, next: Backing) -> bool {
    let len = slot.size as u32;
    match (slot.backing, next) {
        (Backing::Ram { offset: a }, Backing::Ram { offset: b }) => a.wrapping_add(len) == b,
        (
            Backing::Rom {
                index: i,
                offset: a,
            },
            Backing::Rom {
                index: j,
                offset: b,
            },
        ) => i == j && a.wrapping_add(len) == b,
        _ => false,
    }
}

/// The slot layout of `mem`: maximal runs of pages with the same backing,
/// in address order. The whole 4 GiB space is scanned once per VM, which
/// costs a few milliseconds.
pub fn plan_slots(mem: &Memory) -> Vec<SlotPlan> {
    let mut slots: Vec<SlotPlan> = Vec::new();
    let page = PAGE_SIZE as u64;
    let mut addr = 0u64;
    while addr < 1 << 32 {
        if let Some(b) = page_backing(mem, addr) {
            match slots.last_mut() {
                Some(s) if s.guest + s.size == addr && continues(s, b) => s.size += page,
                _ => slots.push(SlotPlan {
                    guest: addr,
                    size: page,
                    backing: b,
                }),
            }
        }
        addr += page;
    }
    slots
}

/// An anonymous, page-aligned host mapping holding copies of the ROM pages.
pub struct RomCopy {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone and freed in Drop.
unsafe impl Send for RomCopy {}

impl RomCopy {
    fn new(len: usize) -> std::io::Result<RomCopy> {
        if len == 0 {
            return Ok(RomCopy {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RomCopy {
            ptr: ptr as *mut u8,
            len,
        })
    }
}

impl Drop for RomCopy {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: ptr/len are exactly what mmap returned; KVM no longer
            // uses it because the VM fd (and its slots) is dropped first.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

/// Copy the ROM slots of `plan` into one new anonymous mapping; returns it
/// and, per slot of the plan, the host address of its copy (0 for RAM
/// slots).
fn copy_roms(mem: &Memory, plan: &[SlotPlan]) -> Result<(RomCopy, Vec<u64>), String> {
    let rom_len: u64 = plan
        .iter()
        .filter(|s| matches!(s.backing, Backing::Rom { .. }))
        .map(|s| s.size)
        .sum();
    let roms = RomCopy::new(rom_len as usize).map_err(|e| format!("mapping ROM copies: {e}"))?;
    let mut addrs = vec![0u64; plan.len()];
    let mut rom_used = 0usize;
    for (slot, s) in plan.iter().enumerate() {
        if let Backing::Rom { index, offset } = s.backing {
            // SAFETY: rom_used + size <= roms.len by the sum above, and
            // nothing else refers to the fresh mapping yet.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(roms.ptr.add(rom_used), s.size as usize) };
            for (i, b) in dst.iter_mut().enumerate() {
                *b = mem.rom_bytes(index, offset + i as u32).unwrap_or(0xFF);
            }
            addrs[slot] = dst.as_ptr() as u64;
            rom_used += s.size as usize;
        }
    }
    Ok((roms, addrs))
}

/// Register `plan` with the VM. ROM pages are copied into a new
/// [`RomCopy`], which the caller must keep alive as long as the VM.
pub fn register_slots(
    vm: &VmFd,
    mem: &Memory,
    plan: &[SlotPlan],
    readonly_supported: bool,
) -> Result<RomCopy, String> {
    let (roms, rom_addrs) = copy_roms(mem, plan)?;
    let ram_host = mem
        .guest_memory()
        .get_host_address(GuestAddress(0))
        .map_err(|e| format!("guest RAM has no host address: {e}"))? as u64;
    for (slot, s) in plan.iter().enumerate() {
        let (userspace_addr, flags) = match s.backing {
            Backing::Ram { offset } => (ram_host + offset as u64, 0),
            // Without read-only slots the copy is mapped writable: guest
            // writes to ROM then stick in the copy.
            Backing::Rom { .. } => (
                rom_addrs[slot],
                if readonly_supported {
                    KVM_MEM_READONLY
                } else {
                    0
                },
            ),
        };
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: s.guest,
            memory_size: s.size,
            userspace_addr,
        };
        // SAFETY: the host range is either inside the machine's RAM mapping
        // (which outlives the VM: the engine re-plans when the mapping
        // changes) or inside `roms`, which the caller keeps with the VM.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("registering guest memory {:#x}+{:#x}: {e}", s.guest, s.size))?;
    }
    Ok(roms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bios_window_splits_the_ram_slot() {
        let mut mem = Memory::new(2).unwrap();
        mem.map_rom(&[0x90; 0x10000], 1 << 20).unwrap();
        let plan = plan_slots(&mem);
        assert_eq!(
            plan,
            vec![
                SlotPlan {
                    guest: 0,
                    size: 0xF0000,
                    backing: Backing::Ram { offset: 0 }
                },
                SlotPlan {
                    guest: 0xF0000,
                    size: 0x10000,
                    backing: Backing::Rom {
                        index: 0,
                        offset: 0
                    }
                },
                SlotPlan {
                    guest: 0x10_0000,
                    size: 0x10_0000,
                    backing: Backing::Ram { offset: 0x10_0000 }
                },
            ]
        );
    }

    /// The ROM slots' copies hold the ROM's bytes, each slot at its own
    /// place in one anonymous mapping (the unsafe part of registering
    /// slots that runs without a VM, so Miri runs it: scripts/miri.sh).
    #[test]
    fn rom_slots_are_copied_byte_for_byte_into_one_mapping() {
        let mut mem = Memory::new(1).unwrap();
        let rom: Vec<u8> = (0..0x2000u32).map(|i| (i * 7) as u8).collect();
        mem.map_rom(&rom, 1 << 20).unwrap();
        let plan = [
            SlotPlan {
                guest: 0,
                size: 0x1000,
                backing: Backing::Ram { offset: 0 },
            },
            SlotPlan {
                guest: 0xFF000,
                size: 0x1000,
                backing: Backing::Rom {
                    index: 0,
                    offset: 0x1000,
                },
            },
            SlotPlan {
                guest: 0xFE000,
                size: 0x1000,
                backing: Backing::Rom {
                    index: 0,
                    offset: 0,
                },
            },
        ];
        let (copy, addrs) = copy_roms(&mem, &plan).unwrap();
        assert_eq!(copy.len, 0x2000);
        assert_eq!(addrs[0], 0, "no copy for RAM");
        assert_eq!(addrs[2], addrs[1] + 0x1000, "copies follow each other");
        for (slot, from) in [(1usize, 0x1000usize), (2, 0)] {
            // SAFETY: each ROM slot's copy is 0x1000 bytes inside `copy`,
            // which lives to the end of the test.
            let got = unsafe { std::slice::from_raw_parts(addrs[slot] as *const u8, 0x1000) };
            assert_eq!(got, &rom[from..from + 0x1000], "slot {slot}");
        }
    }

    #[test]
    fn mmio_pages_get_no_slot() {
        let mut mem = Memory::new(1).unwrap();
        mem.map_mmio(0x8_0000, 0x20, ringside_core::memory::DeviceId(0));
        let plan = plan_slots(&mem);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].guest + plan[0].size, 0x8_0000);
        assert_eq!(plan[1].guest, 0x8_1000);
    }
}
