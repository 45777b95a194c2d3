//! The execution manager (`core::exec`) hands a guest between a primary
//! engine that runs only paged protected mode and a fallback that runs
//! everything. Here the primary is the recompiler restricted to what raw
//! mode can run, and the fallback the interpreter: a guest that starts
//! unpaged and turns paging on must end exactly as on the interpreter
//! alone, with both engines' shares counted; a guest that never pages
//! runs on the fallback throughout.

use ringside_core::exec::{needs_paged_protected_mode, ExecutionManager, Primary};
use ringside_core::{boot, Budget, Engine, EngineError, EngineStats, Exit, Machine, RunOutcome};
use ringside_devices::SharedBuffer;
use ringside_interp::Interp;
use ringside_jit::Jit;

/// The recompiler, willing to run only where raw mode could.
struct PagedOnly(Jit);

impl Engine for PagedOnly {
    fn name(&self) -> &'static str {
        "paged-jit"
    }
    fn run(&mut self, m: &mut Machine, budget: Budget) -> Result<Exit, EngineError> {
        assert_eq!(needs_paged_protected_mode(m), None, "ran outside its modes");
        self.0.run(m, budget)
    }
    fn step(&mut self, m: &mut Machine) -> Result<Exit, EngineError> {
        assert_eq!(
            needs_paged_protected_mode(m),
            None,
            "stepped outside its modes"
        );
        self.0.step(m)
    }
    fn stats(&self) -> EngineStats {
        self.0.stats()
    }
}

impl Primary for PagedOnly {
    fn cannot_run(&self, m: &Machine) -> Option<&'static str> {
        needs_paged_protected_mode(m)
    }
}

fn machine(name: &str) -> (Machine, SharedBuffer) {
    let guest = ringside_guests::find(name).expect("the guest is built in");
    let com1 = SharedBuffer::default();
    let mut m =
        ringside_devices::standard_machine(32, Box::new(com1.clone()), Box::new(std::io::sink()))
            .expect("32 MiB machine");
    boot::load_multiboot(&mut m, guest.image, "").expect("the guest loads");
    (m, com1)
}

fn run(name: &str, engine: &mut dyn Engine) -> (RunOutcome, u64, Vec<u8>, Machine) {
    let (mut m, com1) = machine(name);
    let outcome = m
        .run_until_stopped(engine, Some(100_000_000))
        .expect("the guest runs");
    (outcome, m.clock.icount, com1.contents(), m)
}

#[test]
fn a_guest_handed_between_primary_and_fallback_ends_as_on_the_interpreter() {
    for name in ["paging", "bench-int-small", "jit-torture", "vm86"] {
        let (want_outcome, want_icount, want_out, want_m) = run(name, &mut Interp::new());
        let mut em = ExecutionManager::new(PagedOnly(Jit::with_settings(1, 32)), Interp::new());
        let (outcome, icount, out, m) = run(name, &mut em);
        assert_eq!(outcome, want_outcome, "{name}");
        assert_eq!(icount, want_icount, "{name}");
        assert_eq!(out, want_out, "{name}");
        assert_eq!(m.cpu, want_m.cpu, "{name}");
        let s = em.stats();
        let c = |k: &str| s.counters.get(k).copied().unwrap_or(0);
        assert_eq!(
            c("em.primary_instructions") + c("em.fallback_instructions"),
            icount,
            "{name}: every instruction ran on one of the two"
        );
        assert!(
            c("em.fallback.unpaged") >= 1,
            "{name}: starts unpaged: {s:?}"
        );
        if name == "vm86" {
            // Unpaged from start to end (its v86 tasks too).
            assert_eq!(c("em.primary_instructions"), 0, "{s:?}");
            assert_eq!(c("em.to_primary"), 0, "{s:?}");
        } else {
            assert!(c("em.primary_instructions") > 0, "{name}: {s:?}");
            assert!(c("em.to_primary") >= 1, "{name}: {s:?}");
        }
    }
}

#[test]
fn stepping_through_the_manager_retires_one_instruction_on_the_engine_that_can_run_it() {
    let (mut m, _) = machine("paging");
    let mut em = ExecutionManager::new(PagedOnly(Jit::with_settings(1, 32)), Interp::new());
    for _ in 0..2000 {
        let before = m.clock.icount;
        em.step(&mut m).expect("steps");
        assert!(m.clock.icount - before <= 1);
    }
    let s = em.stats();
    assert!(
        s.counters
            .get("em.fallback_instructions")
            .copied()
            .unwrap_or(0)
            > 0
    );
}
