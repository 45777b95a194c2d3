//! The ELF/Multiboot loader and the boot-information writer: any bytes as
//! a kernel (with a command line and, on odd first bytes, a module) load
//! into a 4 MiB machine or are refused with a clear error; a kernel that
//! loads runs for a while on the interpreter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::boot;
use ringside_core::Machine;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let _ = boot::is_multiboot_elf(image);
    let Ok(mut m) = Machine::with_ram_mib(4) else {
        return;
    };
    let loaded = if flags & 1 == 1 {
        let module = &image[..image.len().min(64)];
        boot::load_multiboot_with_modules(
            &mut m,
            image,
            "console=ttyS0 \u{e9}",
            &[boot::Module {
                data: module,
                string: "initrd",
            }],
        )
    } else {
        boot::load_multiboot(&mut m, image, "")
    };
    if loaded.is_ok() && flags & 2 == 2 {
        let _ = ringside_fuzz::run_checked(&mut m, &mut *ringside_fuzz::interp());
    }
});
