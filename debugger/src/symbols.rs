//! Symbols from an ELF image (the kernel the machine booted), for
//! disassembly, breakpoints by name and the gdb stub's `monitor` output.

use goblin::elf::section_header::SHN_ABS;
use goblin::elf::sym::{STT_FUNC, STT_NOTYPE, STT_OBJECT};
use goblin::elf::Elf;

/// Address-sorted symbols.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    /// (address, size, name), sorted by address; shared, so a copy for a
    /// disassembler's symbol resolver is cheap.
    entries: std::sync::Arc<[(u32, u32, String)]>,
}

impl Symbols {
    /// No symbols (a ROM, a disk, or a stripped image).
    pub fn none() -> Symbols {
        Symbols::default()
    }

    /// The function, object and untyped symbols of a 32-bit ELF image. An
    /// image that is not ELF, or has no symbol table, gives no symbols.
    pub fn from_elf(image: &[u8]) -> Symbols {
        let Ok(elf) = Elf::parse(image) else {
            return Symbols::none();
        };
        let mut entries: Vec<(u32, u32, String)> = elf
            .syms
            .iter()
            .filter(|s| {
                // Absolute symbols (SHN_ABS: constants such as a linker
                // script's sizes) are numbers, not places: with them a
                // stacked EFLAGS 0x202 was shown as `i+0x102`.
                matches!(s.st_type(), STT_FUNC | STT_OBJECT | STT_NOTYPE)
                    && s.st_value != 0
                    && s.st_shndx != 0
                    && s.st_shndx != SHN_ABS as usize
            })
            .filter_map(|s| {
                let name = elf.strtab.get_at(s.st_name)?;
                // Local labels and section markers say nothing useful.
                if name.is_empty() || name.starts_with(".L") || name.starts_with('$') {
                    return None;
                }
                Some((s.st_value as u32, s.st_size as u32, name.to_string()))
            })
            .collect();
        entries.sort();
        entries.dedup_by_key(|e| e.0);
        Symbols {
            entries: entries.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of a symbol that starts exactly at `addr`.
    pub fn exact(&self, addr: u32) -> Option<&str> {
        let i = self.entries.binary_search_by_key(&addr, |e| e.0).ok()?;
        Some(&self.entries[i].2)
    }

    /// `name` or `name+0x1c` for an address inside (or just after the start
    /// of, for sizeless symbols) a symbol.
    pub fn describe(&self, addr: u32) -> Option<String> {
        let i = match self.entries.binary_search_by_key(&addr, |e| e.0) {
            Ok(i) => return Some(self.entries[i].2.clone()),
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (start, size, name) = &self.entries[i];
        let off = addr - start;
        let inside = if *size > 0 { off < *size } else { off < 0x1000 };
        inside.then(|| format!("{name}+{off:#x}"))
    }

    /// The address of a symbol by name.
    pub fn resolve(&self, name: &str) -> Option<u32> {
        self.entries.iter().find(|e| e.2 == name).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_kernel_symbols_resolve_both_ways() {
        let demo = ringside_guests::find("demo").expect("the demo is built in");
        let s = Symbols::from_elf(demo.image);
        assert!(s.len() > 10, "{} symbols", s.len());
        let main = s.resolve("kmain").expect("the demo kernel has kmain");
        assert_eq!(s.exact(main), Some("kmain"));
        assert_eq!(s.describe(main + 1).as_deref(), Some("kmain+0x1"));
    }

    /// Issue 16 item 10: the stack pane showed a pushed EFLAGS 0x202 as
    /// `i+0x102`, an absolute symbol of the demo kernel.
    #[test]
    fn small_numbers_are_not_named_after_absolute_symbols() {
        let demo = ringside_guests::find("demo").expect("the demo is built in");
        let s = Symbols::from_elf(demo.image);
        assert_eq!(s.describe(0x202), None);
        assert_eq!(s.describe(0x246), None);
    }

    #[test]
    fn garbage_gives_no_symbols() {
        assert!(Symbols::from_elf(b"not an elf").is_empty());
    }
}
