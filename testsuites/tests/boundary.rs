//! Engine-independent interrupt timing (DESIGN.md section 4): an interrupt
//! is taken at the first instruction boundary where it is pending and the
//! CPU accepts it, whatever way the run is cut. These tests run the
//! built-in guests that use timers and devices (demo, pc-hw, irq-pm,
//! irq-real) with every external interrupt redirected to the test
//! (`EventPolicy`), which records the instruction count it arrived at and
//! delivers it; one unsliced run, runs sliced into budgets, and a run of
//! single steps must record the same interrupts at the same counts, and
//! end with the same output and the same CPU state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use ringside_core::config::{DiskConfig, DiskMode, MachineConfig};
use ringside_core::cpu::events::{Delivery, EventPolicy, EventSource};
use ringside_core::cpu::CpuState;
use ringside_core::{boot, Budget, Engine, Exit, Machine};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::uart::Uart16550;
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;

#[derive(Clone, Copy, Debug)]
enum Guest {
    /// The demo OS, running a scripted session.
    Demo,
    /// pc-hw with its two disks and its COM1 input.
    PcHw,
    /// irq-pm: the PIT and the 8259A in unpaged protected mode.
    IrqPm,
    /// irq-real: a boot sector the BIOS starts, with IRQ 0 hooked.
    IrqReal,
}

/// Files removed with the machine that uses them.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

struct Pc {
    machine: Machine,
    com1: SharedBuffer,
    input: Vec<u8>,
    _files: TempFiles,
}

fn temp_file(bytes: &[u8]) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "ringside-boundary-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("write a disk image to the temp dir");
    path
}

fn pc(guest: Guest) -> Pc {
    let mut config = MachineConfig::default();
    let mut files = Vec::new();
    let mut disk = |config: &mut MachineConfig, bytes: &[u8]| {
        let path = temp_file(bytes);
        config.disks.push(DiskConfig {
            path: path.to_string_lossy().into_owned(),
            mode: DiskMode::Snapshot,
        });
        files.push(path);
    };
    match guest {
        Guest::PcHw => {
            disk(&mut config, &vec![0u8; 1 << 20]);
            disk(&mut config, &vec![0u8; 1 << 20]);
        }
        Guest::IrqReal => {
            let image = ringside_guests::find_disk("irq-real").expect("irq-real is built in");
            disk(&mut config, image.image);
        }
        Guest::Demo | Guest::IrqPm => {}
    }
    let com1 = SharedBuffer::default();
    let mut machine =
        build_pc(&config, HostIo::com1_only(com1.clone())).expect("the default PC builds");
    let (kernel, cmdline, input): (_, _, &[u8]) = match guest {
        Guest::Demo => (Some("demo"), "", b"run hello\nps\npoweroff\n"),
        Guest::PcHw => (Some("pc-hw"), "expect=hello", b"hello\n"),
        Guest::IrqPm => (Some("irq-pm"), "", b""),
        Guest::IrqReal => (None, "", b""),
    };
    match kernel {
        Some(name) => {
            let image = ringside_guests::find(name).expect("the guest is built in");
            boot::load_multiboot(&mut machine, image.image, cmdline).expect("the guest loads");
        }
        None => boot::load_rom(&mut machine, ringside_firmware::BIOS).expect("the BIOS loads"),
    }
    Pc {
        machine,
        com1,
        input: input.to_vec(),
        _files: TempFiles(files),
    }
}

/// How a drive cuts the run.
enum Cut<'a> {
    /// One `run` with the whole budget at a time.
    Whole,
    /// `run` with budgets taken in turn from the list.
    Slices(&'a [u64]),
    /// One `run` up to this instruction count, then one `step` at a time.
    StepsFrom(u64),
}

/// What a drive saw.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    /// (instruction count, vector) of every interrupt taken.
    interrupts: Vec<(u64, u8)>,
    end: String,
    icount: u64,
    cpu: CpuState,
    com1: Vec<u8>,
}

/// Run `guest` on the interpreter until it stops or `limit` instructions
/// retired, cutting the run as `cut` says.
fn drive(guest: Guest, cut: Cut, limit: u64) -> Trace {
    let mut pc = pc(guest);
    let m = &mut pc.machine;
    let mut policy = EventPolicy::default();
    for v in 0..=255u8 {
        policy.redirect(&[EventSource::External, EventSource::Nmi], v);
    }
    m.event_policy = policy.clone();
    let mut engine = Interp::new();
    let mut input = pc.input.iter().copied();
    let mut interrupts = Vec::new();
    let mut slice = 0;
    let end = loop {
        let left = limit.saturating_sub(m.clock.icount);
        if left == 0 {
            break "limit".to_string();
        }
        let exit = match cut {
            Cut::Whole => engine.run(m, Budget { instructions: left }),
            Cut::Slices(budgets) => {
                let b = budgets[slice % budgets.len()].max(1);
                slice += 1;
                engine.run(
                    m,
                    Budget {
                        instructions: b.min(left),
                    },
                )
            }
            Cut::StepsFrom(n) if m.clock.icount < n => engine.run(
                m,
                Budget {
                    instructions: (n - m.clock.icount).min(left),
                },
            ),
            Cut::StepsFrom(_) => engine.step(m),
        }
        .expect("the interpreter runs every built-in guest");
        match exit {
            Exit::Event(e) => {
                interrupts.push((m.clock.icount, e.event.vector));
                m.event_policy.clear();
                let delivered = m.deliver_event(e.event, e.return_eip);
                m.event_policy = policy.clone();
                assert_eq!(delivered, Delivery::Delivered, "{guest:?}: {e:?}");
            }
            Exit::Halted => {
                if !m.skip_to_next_deadline() {
                    break "idle forever".to_string();
                }
            }
            Exit::WaitingForInput => {
                if let Some(b) = input.next() {
                    let now = m.clock.now_ns();
                    let uart = m.bus.find_device::<Uart16550>().expect("COM1");
                    uart.push_input(&[b]);
                    m.bus.poke::<Uart16550>(now);
                }
            }
            Exit::Stopped(r) => break r.to_string(),
            Exit::BudgetSpent => {}
            Exit::Breakpoint => panic!("no breakpoint was set"),
        }
    };
    Trace {
        interrupts,
        end,
        icount: m.clock.icount,
        cpu: m.cpu.clone(),
        com1: pc.com1.contents(),
    }
}

/// Budgets that cut runs at awkward places: single instructions, primes,
/// and long stretches.
const SLICES: &[u64] = &[1, 7, 3, 64, 1, 113, 2, 997, 5, 4096, 1, 31];

/// The whole run, runs sliced into budgets and a run stepped from
/// `steps_from` on take the same interrupts at the same instruction counts
/// and end the same way.
fn assert_same(guest: Guest, limit: u64, steps_from: u64) {
    let whole = drive(guest, Cut::Whole, limit);
    let stepped = whole
        .interrupts
        .iter()
        .filter(|i| i.0 >= steps_from)
        .count();
    assert!(
        stepped > 0,
        "{guest:?} took no interrupt after {steps_from}: the test would prove nothing"
    );
    let sliced = drive(guest, Cut::Slices(SLICES), limit);
    assert_eq!(
        whole, sliced,
        "{guest:?}: sliced run differs from the whole run"
    );
    let steps = drive(guest, Cut::StepsFrom(steps_from), limit);
    assert_eq!(
        whole, steps,
        "{guest:?}: stepped run differs from the whole run"
    );
}

#[test]
fn irq_pm_takes_every_interrupt_at_the_same_instruction_however_the_run_is_cut() {
    assert_same(Guest::IrqPm, 1_000_000, 0);
}

#[test]
fn irq_real_takes_every_interrupt_at_the_same_instruction_however_the_run_is_cut() {
    assert_same(Guest::IrqReal, 1_000_000, 0);
}

#[test]
fn demo_takes_every_interrupt_at_the_same_instruction_however_the_run_is_cut() {
    assert_same(Guest::Demo, 5_000_000, 0);
}

/// pc-hw retires about 55 million instructions, most of them busy-waiting
/// on timers; the stepped run steps its last 200,000 or so, where its
/// LAPIC timer, IDE and COM1 interrupts come thick and fast.
#[test]
fn pc_hw_takes_every_interrupt_at_the_same_instruction_however_the_run_is_cut() {
    assert_same(Guest::PcHw, 100_000_000, 55_000_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random budgets: instruction counts, interrupts, output and the final
    /// state are those of the unsliced run.
    #[test]
    fn a_run_sliced_into_random_budgets_ends_like_the_unsliced_run(
        budgets in proptest::collection::vec(1u64..3000, 1..16),
        demo in any::<bool>(),
    ) {
        let guest = if demo { Guest::Demo } else { Guest::IrqPm };
        let whole = drive(guest, Cut::Whole, 5_000_000);
        let sliced = drive(guest, Cut::Slices(&budgets), 5_000_000);
        prop_assert_eq!(whole, sliced);
    }
}
