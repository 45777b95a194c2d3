//! The PC's devices working together under the interpreter: the PIT's
//! IRQ 0 reaching the CPU through the 8259A (and the local APIC in virtual
//! wire mode), halts skipping virtual time to the next timer event, and
//! COM1 input arriving by interrupt.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::config::MachineConfig;
use ringside_core::cpu::{reg, TableReg};
use ringside_core::{Machine, RunOutcome, StopReason};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::uart::Uart16550;
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;

const CODE: u32 = 0x10000;
const IDT: u32 = 0x1000;

fn pc(config: &MachineConfig, com1: SharedBuffer) -> Machine {
    build_pc(config, HostIo::com1_only(com1)).expect("the default PC builds")
}

/// Load 32-bit code at CODE in flat protected mode, with IDT gates for
/// vectors 0x20 (timer) and 0x24 (COM1) pointing at labels in the code.
fn load(
    m: &mut Machine,
    f: impl FnOnce(&mut CodeAssembler, &mut CodeLabel, &mut CodeLabel) -> Result<(), IcedError>,
) {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut timer = a.create_label();
    let mut com1 = a.create_label();
    f(&mut a, &mut timer, &mut com1).unwrap();
    let result = a
        .assemble_options(
            CODE as u64,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let bytes = result.inner.code_buffer.clone();
    let timer_addr = result.label_ip(&timer).unwrap() as u32;
    let com1_addr = result.label_ip(&com1).unwrap() as u32;
    enter_flat_protected_mode(m, CODE);
    m.write_ram(CODE, &bytes).unwrap();
    for (vector, handler) in [(0x20u32, timer_addr), (0x24, com1_addr)] {
        let gate = (handler as u64 & 0xFFFF)
            | (0x08 << 16)
            | (0x8E00u64 << 32)
            | ((handler as u64 >> 16) << 48);
        m.write_ram(IDT + 8 * vector, &gate.to_le_bytes()).unwrap();
    }
    m.cpu.idtr = TableReg {
        base: IDT,
        limit: 0x7FF,
        _pad: 0,
    };
    m.cpu.gpr[reg::ESP] = 0x9000;
}

/// Program the PIC pair (vectors 0x20/0x28, only IRQ 0 and IRQ 4 unmasked).
fn init_pic(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0x21, 0xEE),
        (0xA1, 0xFF),
    ] {
        a.mov(al, value as u32)?;
        a.out(port as u32, al)?;
    }
    Ok(())
}

#[test]
fn pit_interrupts_reach_the_cpu_and_halts_skip_to_them() {
    let mut m = pc(&MachineConfig::default(), SharedBuffer::default());
    load(&mut m, |a, timer, rx| {
        init_pic(a)?;
        // PIT channel 0, mode 2, count 1193 (about 1 kHz).
        a.mov(al, 0x34u32)?;
        a.out(0x43u32, al)?;
        a.mov(al, (1193 & 0xFF) as u32)?;
        a.out(0x40u32, al)?;
        a.mov(al, (1193 >> 8) as u32)?;
        a.out(0x40u32, al)?;
        a.xor(ebx, ebx)?;
        a.sti()?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(ebx, 10)?;
        a.jb(wait)?;
        a.mov(al, 0u32)?;
        a.out(0xF4u32, al)?;
        a.set_label(timer)?;
        a.inc(ebx)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.iretd()?;
        a.set_label(rx)?;
        a.iretd()
    });
    let out = m
        .run_until_stopped(&mut Interp::new(), Some(1_000_000))
        .unwrap();
    assert_eq!(out, RunOutcome::Stopped(StopReason::DebugExit(0)));
    assert_eq!(m.cpu.gpr[reg::EBX], 10);
    // Ten periods of ~1 ms of virtual time passed, mostly skipped while halted.
    assert!(
        m.clock.now_ns() >= 8_000_000,
        "virtual time {}",
        m.clock.now_ns()
    );
    assert!(
        m.clock.icount < 1_000,
        "the halts did not execute instructions"
    );
}

#[test]
fn com1_input_arrives_by_interrupt() {
    let com1 = SharedBuffer::default();
    let mut m = pc(&MachineConfig::default(), com1.clone());
    load(&mut m, |a, timer, rx| {
        init_pic(a)?;
        // COM1: enable the receive interrupt (IER bit 0) and OUT2.
        a.mov(dx, 0x3F9u32)?;
        a.mov(al, 0x01u32)?;
        a.out(dx, al)?;
        a.mov(dx, 0x3FCu32)?;
        a.mov(al, 0x08u32)?;
        a.out(dx, al)?;
        a.xor(ebx, ebx)?;
        a.sti()?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.test(ebx, ebx)?;
        a.jz(wait)?;
        // Echo the byte back with 1 added and exit.
        a.mov(eax, ebx)?;
        a.inc(al)?;
        a.mov(dx, 0x3F8u32)?;
        a.out(dx, al)?;
        a.mov(al, 0u32)?;
        a.out(0xF4u32, al)?;
        a.set_label(rx)?;
        a.mov(dx, 0x3F8u32)?;
        a.in_(al, dx)?;
        a.movzx(ebx, al)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.iretd()?;
        a.set_label(timer)?;
        a.iretd()
    });
    m.bus.find_device::<Uart16550>().unwrap().push_input(b"A");
    let out = m
        .run_until_stopped(&mut Interp::new(), Some(1_000_000))
        .unwrap();
    assert_eq!(out, RunOutcome::Stopped(StopReason::DebugExit(0)));
    assert_eq!(com1.contents(), b"B");
}

/// The `pc-hw` guest: an OS written for 1990s PC hardware that finds the MP
/// table by the spec's scan, programs the IOAPIC and the LAPIC timer, drives
/// the IDE slave with PIO and IRQ 14, and reads COM1 input by interrupt.
#[test]
fn a_1990s_style_os_finds_and_drives_the_pc_hardware() {
    let dir = std::env::temp_dir().join(format!("ringside-pchw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = MachineConfig::default();
    for name in ["master.img", "slave.img"] {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        config.disks.push(ringside_core::config::DiskConfig {
            path: path.display().to_string(),
            mode: ringside_core::config::DiskMode::Rw,
        });
    }
    let com1 = SharedBuffer::default();
    let mut m = pc(&config, com1.clone());
    let guest = ringside_guests::find("pc-hw").expect("pc-hw is built in");
    ringside_core::boot::load_multiboot(&mut m, guest.image, "expect=hello").unwrap();
    m.bus
        .find_device::<Uart16550>()
        .unwrap()
        .push_input(b"hello\n");
    let out = m
        .run_until_stopped(&mut Interp::new(), Some(200_000_000))
        .unwrap();
    let text = String::from_utf8_lossy(&com1.contents()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out, RunOutcome::Stopped(StopReason::DebugExit(0)), "{text}");
    assert!(text.contains("echo: hello"), "{text}");
}

#[test]
fn multiboot_modules_are_loaded_page_aligned_after_the_kernel() {
    let mut m = pc(&MachineConfig::default(), SharedBuffer::default());
    let guest = ringside_guests::find("hello").expect("hello is built in");
    let initrd = b"an initial ram disk".repeat(300);
    let modules = [ringside_core::boot::Module {
        data: &initrd,
        string: "initrd.img",
    }];
    ringside_core::boot::load_multiboot_with_modules(&mut m, guest.image, "quiet", &modules)
        .unwrap();
    let info = m.cpu.gpr[reg::EBX];
    let word = |m: &Machine, a: u32| {
        let mut b = [0u8; 4];
        m.mem().read_ram(a, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    assert_ne!(word(&m, info) & (1 << 3), 0, "flags bit 3: modules present");
    assert_eq!(word(&m, info + 20), 1, "mods_count");
    let entry = word(&m, info + 24);
    let (start, end, string) = (word(&m, entry), word(&m, entry + 4), word(&m, entry + 8));
    assert_eq!(start % 4096, 0);
    assert!(start >= 0x10_0000);
    assert_eq!(end - start, initrd.len() as u32);
    let mut got = vec![0u8; initrd.len()];
    m.mem().read_ram(start, &mut got).unwrap();
    assert_eq!(got, initrd);
    let mut name = [0u8; 11];
    m.mem().read_ram(string, &mut name).unwrap();
    assert_eq!(&name, b"initrd.img\0");
}

/// ACPI soft off: SLP_EN with the `\_S5` sleep type (0) in PM1a_CNT, the
/// port the FADT names, ends the run as a power-off.
#[test]
fn writing_slp_en_with_the_s5_type_powers_the_pc_off() {
    let mut m = pc(&MachineConfig::default(), SharedBuffer::default());
    load(&mut m, |a, timer, rx| {
        a.mov(dx, 0x604u32)?;
        a.mov(ax, 0x2000u32)?;
        a.out(dx, ax)?;
        // Not reached: power-off comes before the debug exit.
        a.mov(al, 7u32)?;
        a.out(0xF4u32, al)?;
        a.set_label(timer)?;
        a.iretd()?;
        a.set_label(rx)?;
        a.iretd()
    });
    let out = m.run_until_stopped(&mut Interp::new(), Some(1000)).unwrap();
    assert_eq!(out, RunOutcome::Stopped(StopReason::PowerOff));
}

/// The HPET, routed by legacy replacement to IRQ 0, interrupts the CPU
/// through the 8259A once its comparator is reached: the whole path from
/// MMIO writes to the interrupt on the default PC.
#[test]
fn an_hpet_one_shot_in_legacy_replacement_interrupts_through_irq_0() {
    let mut m = pc(&MachineConfig::default(), SharedBuffer::default());
    load(&mut m, |a, timer, rx| {
        init_pic(a)?;
        a.xor(ebx, ebx)?;
        // Timer 0: interrupts enabled, edge, one-shot; comparator 1000
        // counts (10 us); then LEG_RT_CNF | ENABLE_CNF.
        a.mov(dword_ptr(0xFED0_0100u32), 0x4u32)?;
        a.mov(dword_ptr(0xFED0_0108u32), 1000u32)?;
        a.mov(dword_ptr(0xFED0_010Cu32), 0u32)?;
        a.mov(dword_ptr(0xFED0_0010u32), 0x3u32)?;
        a.sti()?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.hlt()?;
        a.cmp(ebx, 0)?;
        a.je(wait)?;
        a.mov(al, 0u32)?;
        a.out(0xF4u32, al)?;
        a.set_label(timer)?;
        a.inc(ebx)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.iretd()?;
        a.set_label(rx)?;
        a.iretd()
    });
    let out = m
        .run_until_stopped(&mut Interp::new(), Some(1_000_000))
        .unwrap();
    assert_eq!(out, RunOutcome::Stopped(StopReason::DebugExit(0)));
    assert_eq!(
        m.cpu.gpr[reg::EBX],
        1,
        "exactly one interrupt from the one-shot"
    );
    assert!(m.clock.now_ns() >= 10_000, "not before the comparator");
}
