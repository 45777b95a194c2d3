//! Saved state on a booted PC (`core::snapshot`): a restored machine runs
//! on exactly like the one that was saved, and no damaged snapshot file —
//! truncated, bit-flipped, or forged with a correct checksum — panics or
//! changes the machine it is restored into.

use proptest::prelude::*;
use ringside_core::bus::BusState;
use ringside_core::config::MachineConfig;
use ringside_core::cpu::CpuState;
use ringside_core::snapshot::{self, HEADER_LEN};
use ringside_core::time::Clock;
use ringside_core::{boot, Machine, RunOutcome, StopReason};
use ringside_devices::pc::{build_pc, HostIo};
use ringside_devices::uart::Uart16550;
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;

/// Instructions the demo OS needs to boot and wait at its shell prompt.
const BOOTED: u64 = 2_000_000;

/// The demo OS on the default PC, its COM1 output collected.
fn demo_pc() -> (Machine, SharedBuffer) {
    let com1 = SharedBuffer::default();
    let io = HostIo::com1_only(com1.clone());
    let mut m = build_pc(&MachineConfig::default(), io).expect("the default PC builds");
    let demo = ringside_guests::find("demo").expect("the demo OS is built in");
    boot::load_multiboot(&mut m, demo.image, "").expect("the demo loads");
    (m, com1)
}

fn config() -> String {
    MachineConfig::default().to_toml()
}

fn run(m: &mut Machine, budget: u64) -> RunOutcome {
    m.run_until_stopped(&mut Interp::new(), Some(budget))
        .expect("the interpreter runs the demo")
}

/// Everything a restore may change.
#[derive(Debug, PartialEq)]
struct Parts {
    cpu: CpuState,
    a20: bool,
    clock: Clock,
    bus: BusState,
    devices: Vec<(&'static str, serde_json::Value)>,
}

fn parts(m: &Machine) -> Parts {
    Parts {
        cpu: m.cpu.clone(),
        a20: m.mem().a20_enabled(),
        clock: m.clock.clone(),
        bus: m.bus.bus_state(),
        devices: m.bus.save_state(),
    }
}

fn type_line(m: &mut Machine, line: &[u8]) {
    let now = m.clock.now_ns();
    let uart = m.bus.find_device::<Uart16550>().expect("COM1");
    uart.push_input(line);
    m.bus.poke::<Uart16550>(now);
}

#[test]
fn a_restored_demo_runs_on_exactly_like_the_saved_one() {
    let (mut saved, saved_out) = demo_pc();
    assert_eq!(run(&mut saved, BOOTED), RunOutcome::InstructionLimit);
    assert!(
        String::from_utf8_lossy(&saved_out.contents()).ends_with("ringside$ "),
        "the demo waits at its prompt: {:?}",
        String::from_utf8_lossy(&saved_out.contents())
    );
    let bytes = snapshot::to_bytes(&saved, &config()).unwrap();
    let (mut restored, restored_out) = demo_pc();
    snapshot::from_bytes(&bytes)
        .unwrap()
        .restore_into(&mut restored)
        .unwrap();
    assert_eq!(parts(&restored), parts(&saved));
    assert!(restored.mem().ram_slice() == saved.mem().ram_slice());
    let before = saved_out.contents().len();
    for m in [&mut saved, &mut restored] {
        type_line(m, b"ps\nrun hello\npoweroff\n");
        assert_eq!(
            run(m, 10_000_000),
            RunOutcome::Stopped(StopReason::DebugExit(0))
        );
    }
    let tail = String::from_utf8_lossy(&saved_out.contents()[before..]).into_owned();
    assert!(tail.contains("Hello from user space!"), "{tail}");
    assert_eq!(String::from_utf8_lossy(&restored_out.contents()), tail);
    assert_eq!(restored.clock, saved.clock);
    assert_eq!(parts(&restored), parts(&saved));
}

/// A state saved while the recompiler runs the demo restores under the
/// interpreter, and one saved under the interpreter restores under the
/// recompiler: either way the session goes on exactly as without the
/// trip (the state holds no engine's caches).
#[test]
fn a_state_saved_under_jit_runs_on_under_interp_and_back() {
    let engine = |jit: bool| -> Box<dyn ringside_core::Engine> {
        if jit {
            Box::new(ringside_jit::Jit::with_threshold(1))
        } else {
            Box::new(Interp::new())
        }
    };
    let mut ends = Vec::new();
    for (save_on_jit, restore_on_jit) in [(false, false), (true, false), (false, true)] {
        let (mut saved, _) = demo_pc();
        saved
            .run_until_stopped(engine(save_on_jit).as_mut(), Some(BOOTED))
            .unwrap();
        let bytes = snapshot::to_bytes(&saved, &config()).unwrap();
        let (mut restored, out) = demo_pc();
        snapshot::from_bytes(&bytes)
            .unwrap()
            .restore_into(&mut restored)
            .unwrap();
        type_line(&mut restored, b"run hello\npoweroff\n");
        let outcome = restored
            .run_until_stopped(engine(restore_on_jit).as_mut(), Some(10_000_000))
            .unwrap();
        assert_eq!(outcome, RunOutcome::Stopped(StopReason::DebugExit(0)));
        ends.push((parts(&restored), out.contents()));
    }
    assert_eq!(ends[1], ends[0], "saved under jit, restored under interp");
    assert_eq!(ends[2], ends[0], "saved under interp, restored under jit");
}

/// A booted demo PC, a snapshot of it, and what the machine looked like.
struct Fixture {
    m: Machine,
    bytes: Vec<u8>,
    original: snapshot::Snapshot,
    parts: Parts,
    ram: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let (mut m, _) = demo_pc();
        run(&mut m, BOOTED);
        let bytes = snapshot::to_bytes(&m, &config()).unwrap();
        let original = snapshot::from_bytes(&bytes).unwrap();
        // The machine the damaged files are restored into is elsewhere in
        // its run than the snapshot, so a partial restore would show.
        run(&mut m, 20_000);
        type_line(&mut m, b"p");
        Fixture {
            parts: parts(&m),
            ram: m.mem().ram_slice().to_vec(),
            m,
            bytes,
            original,
        }
    }

    fn assert_unchanged(&self) {
        assert_eq!(parts(&self.m), self.parts);
        assert!(self.m.mem().ram_slice() == &self.ram[..], "RAM changed");
    }

    /// Restore `bytes`; a restore that succeeded (a forged file can hold
    /// another valid state) is undone by restoring the fixture's state.
    fn restore(&mut self, bytes: &[u8]) -> bool {
        let result = snapshot::from_bytes(bytes).and_then(|s| s.restore_into(&mut self.m));
        if result.is_err() {
            self.assert_unchanged();
            return false;
        }
        true
    }
}

fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static F: std::sync::OnceLock<std::sync::Mutex<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| std::sync::Mutex::new(Fixture::new()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_truncated_snapshot_is_refused_and_changes_nothing(cut in any::<prop::sample::Index>()) {
        let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let len = cut.index(f.bytes.len());
        let bytes = f.bytes[..len].to_vec();
        prop_assert!(!f.restore(&bytes), "a cut at {} was accepted", len);
    }

    /// CRC-32 detects every burst of errors 32 bits long or shorter, so
    /// any flips within one 32-bit window are refused.
    #[test]
    fn flipped_bits_are_refused_and_change_nothing(
        at in any::<prop::sample::Index>(),
        mask in 1u32..,
    ) {
        let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = f.bytes.clone();
        let at = at.index(bytes.len() - 3);
        for (i, b) in mask.to_le_bytes().iter().enumerate() {
            bytes[at + i] ^= b;
        }
        prop_assert!(!f.restore(&bytes), "flips {:#x} at {} were accepted", mask, at);
    }

    /// A file damaged after its checksum was computed (or forged) reaches
    /// the JSON, every device's `restore_state` and the decompressor: it
    /// may hold another valid state, but an error changes nothing. Half the
    /// cases damage the state section, half the RAM section.
    #[test]
    fn a_damaged_payload_with_a_correct_checksum_never_panics(
        in_state in any::<bool>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = f.bytes.clone();
        let state_len = u64::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap());
        let state = HEADER_LEN + 8..HEADER_LEN + 8 + state_len as usize;
        let at = if in_state {
            state.start + at.index(state.len())
        } else {
            state.end + at.index(bytes.len() - state.end)
        };
        bytes[at] ^= mask;
        let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
        bytes[25..29].copy_from_slice(&crc.to_le_bytes());
        if f.restore(&bytes) {
            // Back to where the fixture was: the same state, the same run.
            let Fixture { m, original, .. } = &mut *f;
            original.restore_into(m).unwrap();
            run(m, 20_000);
            type_line(m, b"p");
            f.assert_unchanged();
        }
    }
}
