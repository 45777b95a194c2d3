//! The host probe: what this host's KVM can run, found by running it.
//!
//! Each mode gets a tiny guest on a fresh 1 MiB machine with only the
//! debug-exit port: a few instructions, then OUT to port 0xF4 with a known
//! value. The paging guest also gets an IDT whose handlers report the
//! vector, so a host that refuses CR0.PG with #GP (kvm_pvm) says so
//! instead of shutting down.

use iced_x86::code_asm::{al, ax, bx, cr0, cr3, dx, eax, CodeAssembler};
use std::any::Any;

use iced_x86::IcedError;
use ringside_core::boot::enter_flat_protected_mode;
use ringside_core::bus::{Device, DeviceCtx, StateError, StopRequest};
use ringside_core::cpu::{reg, CpuState, SegReg, Segment};
use ringside_core::{Budget, Engine, EngineError, Exit, Machine, StopReason};

use crate::Kvm;

/// One capability: can the host do it, and why (not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    pub reason: String,
}

impl ProbeResult {
    fn yes(reason: impl Into<String>) -> ProbeResult {
        ProbeResult {
            ok: true,
            reason: reason.into(),
        }
    }
    fn no(reason: impl Into<String>) -> ProbeResult {
        ProbeResult {
            ok: false,
            reason: reason.into(),
        }
    }
}

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// /dev/kvm opens and a VM can be made.
    pub available: ProbeResult,
    pub real_mode: ProbeResult,
    pub protected_mode: ProbeResult,
    pub paging: ProbeResult,
    pub single_step: ProbeResult,
    /// IRET in protected mode (how handlers return from interrupts).
    pub protected_iret: ProbeResult,
}

impl Probe {
    /// One line per mode, as `ringside engines` prints them.
    pub fn lines(&self) -> Vec<(&'static str, &ProbeResult)> {
        vec![
            ("real mode", &self.real_mode),
            ("unpaged protected mode", &self.protected_mode),
            ("protected-mode IRET", &self.protected_iret),
            ("32-bit paging", &self.paging),
            ("single-step", &self.single_step),
        ]
    }
}

/// Where the probe guests put their code.
const CODE: u32 = 0x1000;
/// Paging guest: page directory, page table, IDT and exception handlers.
const PAGE_DIR: u32 = 0x10000;
const PAGE_TABLE: u32 = 0x11000;
const IDT: u32 = 0x12000;
const HANDLERS: u32 = 0x13000;
/// What an exception handler of the paging guest writes: this plus the vector.
const VECTOR_CODE: u8 = 0xE0;
/// KVM_RUN entries a probe guest may take (each ends at an exit or a 1 ms kick).
const PROBE_ENTRIES: u64 = 2000;

/// The probe guests' only port: a write stops the machine with the low
/// byte as status, as the PC's debug-exit port does (DESIGN.md section 6).
/// The probe builds it from core's bus alone: the engines do not depend on
/// the device crate (DESIGN.md section 2).
const DEBUG_EXIT_PORT: u16 = 0xF4;

struct ProbeExit;

impl Device for ProbeExit {
    fn name(&self) -> &'static str {
        "probe-exit"
    }
    fn io_read(&mut self, _port: u16, _size: u8, _ctx: &mut DeviceCtx) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _port: u16, _size: u8, value: u32, ctx: &mut DeviceCtx) {
        ctx.signals.stop = Some(StopRequest::DebugExit(value as u8));
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

fn fresh_machine() -> Result<Machine, String> {
    let mut m = Machine::with_ram_mib(1).map_err(|e| e.to_string())?;
    m.add_port_device(Box::new(ProbeExit), &[(DEBUG_EXIT_PORT, DEBUG_EXIT_PORT)]);
    Ok(m)
}

fn assemble(
    bits: u32,
    at: u32,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, String> {
    let mut a = CodeAssembler::new(bits).map_err(|e| e.to_string())?;
    build(&mut a).map_err(|e| e.to_string())?;
    a.assemble(at as u64).map_err(|e| e.to_string())
}

fn load(m: &mut Machine, at: u32, bytes: &[u8]) -> Result<(), String> {
    m.write_ram(at, bytes).map_err(|e| e.to_string())
}

/// Real mode at 0000:1000 with a stack below the code.
fn real_mode_machine(code: &[u8]) -> Result<Machine, String> {
    let mut m = fresh_machine()?;
    load(&mut m, CODE, code)?;
    let mut cpu = CpuState::at_reset();
    cpu.seg = [Segment::real_mode(0); 6];
    cpu.eip = CODE;
    cpu.gpr[reg::ESP] = 0xF00;
    m.cpu = cpu;
    Ok(m)
}

/// Run a probe guest to its debug exit and say what came out.
fn run_to_exit(kvm: &mut Kvm, m: &mut Machine) -> Result<StopReason, String> {
    match kvm.run(
        m,
        Budget {
            instructions: PROBE_ENTRIES,
        },
    ) {
        Ok(Exit::Stopped(r)) => Ok(r),
        Ok(other) => Err(format!(
            "the guest did not reach its exit ({other:?} at {:04x}:{:08x})",
            m.cpu.seg[SegReg::Cs as usize].selector,
            m.cpu.eip
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn probe_real_mode(kvm: &mut Kvm) -> ProbeResult {
    let mut guest = || -> Result<ProbeResult, String> {
        let code = assemble(16, CODE, |a| {
            a.mov(ax, 0x1234)?;
            a.add(ax, 0x1111)?;
            a.mov(dx, DEBUG_EXIT_PORT as u32)?;
            a.out(dx, al)
        })?;
        let mut m = real_mode_machine(&code)?;
        let stop = run_to_exit(kvm, &mut m)?;
        Ok(
            if stop == StopReason::DebugExit(0x45) && m.cpu.gpr[reg::EAX] as u16 == 0x2345 {
                ProbeResult::yes("a real-mode guest ran to its exit")
            } else {
                ProbeResult::no(format!("the real-mode guest ended wrongly: {stop}"))
            },
        )
    };
    guest().unwrap_or_else(ProbeResult::no)
}

fn probe_protected_mode(kvm: &mut Kvm) -> ProbeResult {
    let mut guest = || -> Result<ProbeResult, String> {
        let code = assemble(32, CODE, |a| {
            a.mov(eax, 0x1111_1111)?;
            a.add(eax, 0x2222_2222)?;
            a.out(DEBUG_EXIT_PORT as u32, al)
        })?;
        let mut m = fresh_machine()?;
        load(&mut m, CODE, &code)?;
        enter_flat_protected_mode(&mut m, CODE);
        let stop = run_to_exit(kvm, &mut m)?;
        Ok(
            if stop == StopReason::DebugExit(0x33) && m.cpu.gpr[reg::EAX] == 0x3333_3333 {
                ProbeResult::yes("a flat 32-bit protected-mode guest ran to its exit")
            } else {
                ProbeResult::no(format!("the protected-mode guest ended wrongly: {stop}"))
            },
        )
    };
    guest().unwrap_or_else(ProbeResult::no)
}

/// IRET to the same privilege level in flat protected mode: PUSHFD,
/// PUSH CS, PUSH offset, IRETD, then the exit write at that offset.
fn probe_protected_iret(kvm: &mut Kvm) -> ProbeResult {
    let mut guest = || -> Result<ProbeResult, String> {
        let after = CODE + 9;
        let mut code = vec![0x9C, 0x6A, 0x08, 0x68];
        code.extend_from_slice(&after.to_le_bytes());
        code.extend_from_slice(&[0xCF, 0xB0, 0x44, 0xE6, DEBUG_EXIT_PORT as u8]);
        let mut m = fresh_machine()?;
        load(&mut m, CODE, &code)?;
        enter_flat_protected_mode(&mut m, CODE);
        m.cpu.gpr[reg::ESP] = 0x9000;
        Ok(match run_to_exit(kvm, &mut m) {
            Ok(StopReason::DebugExit(0x44)) => {
                ProbeResult::yes("IRETD to the same privilege level returned to its target")
            }
            Ok(other) => ProbeResult::no(format!("the IRET guest ended wrongly: {other}")),
            Err(e) => ProbeResult::no(format!("IRET in protected mode stopped the guest: {e}")),
        })
    };
    guest().unwrap_or_else(ProbeResult::no)
}

/// Whether the host runs a guest that turns on 32-bit paging.
pub(crate) fn probe_paging(kvm: &mut Kvm) -> ProbeResult {
    let mut guest = || -> Result<ProbeResult, String> {
        let mut m = fresh_machine()?;
        // Identity-map the first 4 MiB with 4 KiB pages (present, writable).
        load(&mut m, PAGE_DIR, &(PAGE_TABLE | 3).to_le_bytes())?;
        let table: Vec<u8> = (0..1024u32)
            .flat_map(|i| ((i << 12) | 3).to_le_bytes())
            .collect();
        load(&mut m, PAGE_TABLE, &table)?;
        // Every exception vector reports itself on the debug-exit port.
        let mut idt = Vec::new();
        for v in 0..32u32 {
            let at = HANDLERS + v * 16;
            let handler = assemble(32, at, |a| {
                a.mov(al, (VECTOR_CODE as u32) + v)?;
                a.out(DEBUG_EXIT_PORT as u32, al)?;
                a.hlt()
            })?;
            load(&mut m, at, &handler)?;
            // A 32-bit interrupt gate to 0x08:handler (SDM Vol. 3A 6.11).
            let gate =
                (at as u64 & 0xFFFF) | (0x08 << 16) | (0x8E00u64 << 32) | ((at as u64 >> 16) << 48);
            idt.extend_from_slice(&gate.to_le_bytes());
        }
        load(&mut m, IDT, &idt)?;
        let code = assemble(32, CODE, |a| {
            a.mov(eax, PAGE_DIR)?;
            a.mov(cr3, eax)?;
            a.mov(eax, cr0)?;
            a.or(eax, 0x8000_0000u32 as i32)?;
            a.mov(cr0, eax)?;
            a.mov(al, 0x50)?;
            a.out(DEBUG_EXIT_PORT as u32, al)
        })?;
        load(&mut m, CODE, &code)?;
        enter_flat_protected_mode(&mut m, CODE);
        m.cpu.idtr.base = IDT;
        m.cpu.idtr.limit = 32 * 8 - 1;
        m.cpu.gpr[reg::ESP] = 0xF000;
        let stop = run_to_exit(kvm, &mut m)?;
        Ok(match stop {
            StopReason::DebugExit(0x50) => {
                ProbeResult::yes("a guest with CR0.PG set ran to its exit")
            }
            StopReason::DebugExit(c) if c >= VECTOR_CODE => {
                let v = c - VECTOR_CODE;
                let name = match v {
                    13 => "#GP".to_string(),
                    14 => "#PF".to_string(),
                    6 => "#UD".to_string(),
                    v => format!("exception {v}"),
                };
                ProbeResult::no(format!(
                    "MOV to CR0 setting PG raised {name} in the guest: this host's KVM cannot run 32-bit paging"
                ))
            }
            other => ProbeResult::no(format!("the paging guest ended wrongly: {other}")),
        })
    };
    guest().unwrap_or_else(ProbeResult::no)
}

fn probe_single_step(kvm: &mut Kvm) -> ProbeResult {
    let mut guest = || -> Result<ProbeResult, String> {
        let code = assemble(16, CODE, |a| {
            a.mov(ax, 1)?;
            a.mov(bx, 2)?;
            a.mov(dx, DEBUG_EXIT_PORT as u32)?;
            a.out(dx, al)
        })?;
        let mut m = real_mode_machine(&code)?;
        let exit = kvm.step(&mut m).map_err(|e: EngineError| e.to_string())?;
        Ok(
            if exit == Exit::BudgetSpent
                && m.clock.icount == 1
                && m.cpu.eip == CODE + 3
                && m.cpu.gpr[reg::EAX] as u16 == 1
                && m.cpu.gpr[reg::EBX] as u16 == 0
            {
                ProbeResult::yes("one step retired exactly one instruction")
            } else {
                ProbeResult::no(format!(
                    "one step ended with {exit:?} at EIP {:#x} after {} instructions",
                    m.cpu.eip, m.clock.icount
                ))
            },
        )
    };
    guest().unwrap_or_else(ProbeResult::no)
}

/// Find out what this host's KVM runs.
pub fn probe() -> Probe {
    let mut kvm = match Kvm::new() {
        Ok(mut k) => {
            // The probe wants to see what the host does, unguarded.
            k.paging_guard = Some(false);
            k
        }
        Err(e) => {
            let why = ProbeResult::no(e.to_string());
            return Probe {
                available: why.clone(),
                real_mode: why.clone(),
                protected_mode: why.clone(),
                paging: why.clone(),
                single_step: why.clone(),
                protected_iret: why,
            };
        }
    };
    Probe {
        available: ProbeResult::yes("/dev/kvm opened"),
        real_mode: probe_real_mode(&mut kvm),
        protected_mode: probe_protected_mode(&mut kvm),
        protected_iret: probe_protected_iret(&mut kvm),
        paging: probe_paging(&mut kvm),
        single_step: probe_single_step(&mut kvm),
    }
}
