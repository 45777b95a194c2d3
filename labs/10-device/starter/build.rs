//! Builds the guest that uses the device (`guest/`: the labs' runtime
//! and `hash.c`) with the system C compiler, as ringside builds its own
//! guests: `cc -m32 -ffreestanding -nostdlib`, then `ld -m elf_i386`.
//! Given: you do not need to change it.

use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): gcc and binutils are needed"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=guest");
    let mut objects = Vec::new();
    for source in ["start.S", "runtime.c", "hash.c"] {
        let object = out.join(format!("{source}.o"));
        run(Command::new("cc")
            .args([
                "-m32",
                "-ffreestanding",
                "-nostdlib",
                "-fno-pie",
                "-fno-stack-protector",
            ])
            .args(["-fno-asynchronous-unwind-tables", "-O1", "-Wall", "-c"])
            .arg(format!("guest/{source}"))
            .args(["-I", "guest", "-o"])
            .arg(&object));
        objects.push(object);
    }
    run(Command::new("ld")
        .args([
            "-m",
            "elf_i386",
            "--no-warn-rwx-segments",
            "-T",
            "guest/kernel.ld",
            "-o",
        ])
        .arg(out.join("guest.elf"))
        .args(&objects));
}
