//! Event redirection (`EventPolicy`, DESIGN.md section 4): every source of
//! events — exceptions, INT n, INT3, INTO, ICEBP, external interrupts,
//! NMI, debug traps and faults raised while delivering another event — can
//! be handed to the caller instead of being delivered, with the vector, the
//! source, the error code and the CPU state as it was before delivery.

mod common;

use std::any::Any;

use common::*;
use iced_x86::code_asm::*;
use ringside_core::bus::{Acknowledge, Device, DeviceCtx, InterruptOutput, StateError};
use ringside_core::cpu::events::{Event, EventExit, EventSource};
use ringside_core::cpu::flags::{IF, OF, TF};
use ringside_core::cpu::{reg, vector};
use ringside_core::{Engine, Exit, Machine};
use ringside_interp::Interp;

/// Run until the engine returns something other than a spent budget.
fn run_to_exit(m: &mut Machine) -> Exit {
    let mut engine = Interp::new();
    loop {
        match engine
            .run(m, ringside_core::Budget { instructions: 1000 })
            .unwrap()
        {
            Exit::BudgetSpent => {}
            other => return other,
        }
    }
}

fn event_exit(exit: Exit) -> EventExit {
    match exit {
        Exit::Event(e) => e,
        other => panic!("expected a redirected event, got {other:?}"),
    }
}

/// Redirect `vector` from `source`, run, and check that the state is the
/// one before delivery: nothing pushed, CS still the snippet's.
fn redirected(
    code: &[u8],
    source: EventSource,
    v: u8,
    setup: impl FnOnce(&mut Machine),
) -> (Machine, EventExit) {
    let mut m = machine(code);
    setup(&mut m);
    m.event_policy.redirect(&[source], v);
    let e = event_exit(run_to_exit(&mut m));
    assert_eq!(e.event.vector, v);
    assert_eq!(e.event.source, source);
    assert_eq!(m.cpu.gpr[reg::ESP], STACK, "nothing was pushed");
    assert_eq!(vector_taken(&m), None, "no handler was entered");
    (m, e)
}

#[test]
fn redirected_int_n_does_not_retire_and_leaves_eip_on_it() {
    let code = assemble(|a| {
        a.nop()?;
        a.int(0x10)
    });
    let (m, e) = redirected(&code, EventSource::Software, 0x10, |_| {});
    assert_eq!(m.cpu.eip, CODE + 1, "EIP on the INT");
    assert_eq!(m.clock.icount, 1, "only the NOP retired");
    assert_eq!(e.return_eip, CODE + 3, "delivery would return past the INT");
    assert_eq!(e.during, None);
}

#[test]
fn redirected_int3_and_into_are_software_events() {
    let (m, e) = redirected(
        &assemble(|a| a.int3()),
        EventSource::Software,
        vector::BP,
        |_| {},
    );
    assert_eq!((m.cpu.eip, e.return_eip), (CODE, CODE + 1));
    let (m, e) = redirected(
        &assemble(|a| a.into()),
        EventSource::Software,
        vector::OF,
        |m| m.cpu.eflags |= OF,
    );
    assert_eq!((m.cpu.eip, e.return_eip), (CODE, CODE + 1));
}

#[test]
fn redirected_icebp_is_its_own_source() {
    let (m, e) = redirected(&[0xF1, 0xF4], EventSource::Icebp, vector::DB, |_| {});
    assert_eq!((m.cpu.eip, e.return_eip), (CODE, CODE + 1));
}

#[test]
fn redirected_exception_carries_its_error_code_and_commits_nothing() {
    // Selector 0x1234 is past the GDT's limit: #GP(selector).
    let code = assemble(|a| {
        a.mov(eax, 0x1234u32)?;
        a.mov(ds, ax)
    });
    let (m, e) = redirected(&code, EventSource::Exception, vector::GP, |_| {});
    assert_eq!(e.event.error_code, Some(0x1234 & 0xFFFC));
    assert_eq!(m.cpu.eip, CODE + 5, "EIP on the faulting MOV");
    assert_eq!(e.return_eip, CODE + 5);
}

#[test]
fn redirected_single_step_trap_comes_after_the_instruction() {
    let code = assemble(|a| a.mov(ecx, 7u32));
    let (m, e) = redirected(&code, EventSource::Exception, vector::DB, |m| {
        m.cpu.eflags |= TF
    });
    assert_eq!(m.cpu.gpr[reg::ECX], 7, "the instruction retired");
    assert_eq!(m.cpu.eip, CODE + 5, "a trap: EIP past the instruction");
    assert_eq!(e.return_eip, CODE + 5);
    assert_ne!(m.cpu.dr[6] & (1 << 14), 0, "DR6.BS");
}

#[test]
fn redirected_nmi_leaves_the_cpu_before_delivery() {
    let code = assemble(|a| a.nop());
    let (m, e) = redirected(&code, EventSource::Nmi, vector::NMI, |m| {
        m.cpu.run.nmi_pending = true
    });
    assert_eq!(m.cpu.eip, CODE);
    assert_eq!(e.return_eip, CODE);
    assert!(!m.cpu.run.nmi_pending, "the NMI was taken from the pin");
}

/// A one-vector interrupt controller: INTR is up while a vector waits.
struct OneShot(Option<u8>);

impl InterruptOutput for OneShot {
    fn intr(&self) -> bool {
        self.0.is_some()
    }
    fn acknowledge(&mut self, _ctx: &mut DeviceCtx) -> Acknowledge {
        self.0.take().map_or(Acknowledge::None, Acknowledge::Vector)
    }
}

impl Device for OneShot {
    fn name(&self) -> &'static str {
        "one-shot"
    }
    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _ctx: &mut DeviceCtx) {}
    fn interrupt_output(&mut self) -> Option<&mut dyn InterruptOutput> {
        Some(self)
    }
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), StateError> {
        Ok(())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[test]
fn redirected_external_interrupt_is_acknowledged_and_handed_over() {
    let code = assemble(|a| {
        a.nop()?;
        a.nop()
    });
    let (m, e) = redirected(&code, EventSource::External, 0x1C, |m| {
        m.cpu.eflags |= IF;
        let id = m.bus.add(Box::new(OneShot(Some(0x1C))));
        m.bus.set_pic(id);
    });
    assert_eq!(m.cpu.eip, CODE, "taken before the first instruction");
    assert_eq!(e.return_eip, CODE);
    let mut m = m;
    assert!(
        !m.bus.interrupt_pending(),
        "the controller was acknowledged"
    );
}

#[test]
fn fault_while_delivering_a_software_interrupt_names_the_event_being_delivered() {
    // Vector 0x40 is past the IDT's limit: delivery raises #GP with the
    // IDT error code (vector * 8 + 2).
    let code = assemble(|a| a.int(0x40));
    let (m, e) = redirected(&code, EventSource::Exception, vector::GP, |_| {});
    assert_eq!(e.event.error_code, Some(0x40 * 8 + 2));
    assert_eq!(e.during, Some(Event::software(0x40)));
    assert_eq!(m.cpu.eip, CODE, "EIP on the INT");
}

#[test]
fn without_a_policy_every_event_is_delivered() {
    let mut m = machine(&assemble(|a| a.int(0x10)));
    assert!(m.event_policy.is_empty());
    let exit = run_to_exit(&mut m);
    assert!(matches!(exit, Exit::Stopped(_)), "{exit:?}");
    assert_eq!(
        m.cpu.gpr[reg::EAX] & 0xFF,
        0x10,
        "the handler of vector 0x10 ran"
    );
}
