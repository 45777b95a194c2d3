//! The GDB remote stub: `gdbstub` on one side, the debugger core on the
//! other.
//!
//! gdb sees one i386 thread (`gdbstub_arch`'s `X86_SSE` target
//! description). Addresses are linear (through the guest's paging, like
//! everything the debugger reads): for a flat kernel that is what the ELF
//! says. So is the program counter: gdb's `eip` is CS.base + EIP, the
//! linear address of the next instruction, and a value gdb writes to it is
//! made relative to CS.base again. gdb compares its breakpoint addresses,
//! and reads the instructions it shows, at that register; with EIP alone,
//! in real mode (F000:E005 is linear FE005) or under any segment with a
//! base, gdb found none of its breakpoints at the stop and silently went
//! on, and disassembled the wrong bytes. A stop at a breakpoint gdb did not
//! set (`monitor break`, `monitor pbreak`) is reported as SIGTRAP, not as
//! a breakpoint hit, since gdb resumes from a "breakpoint hit" at an
//! address where it has none (it takes it for one it just removed).
//! Software and hardware breakpoints are both debugger breakpoints —
//! no guest memory is patched, so a breakpoint cannot be seen or
//! overwritten by the guest, and there is no limit of four. Watchpoints are
//! the debugger's (any length, read, write or access). `monitor` runs the
//! debugger's command language, plus what the front-end adds (snapshots,
//! compare).
//!
//! Running: `continue` runs the debugger in slices and looks at the
//! connection between slices, so a Ctrl-C from gdb stops the guest within
//! one slice.

use std::net::TcpStream;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::outputln;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
pub use gdbstub::stub::DisconnectReason;
use gdbstub::stub::{GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind as GdbWatch,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::{X86CoreRegs, X86SegmentRegs};
use gdbstub_arch::x86::X86_SSE;
use ringside_core::cpu::{reg, SegReg};
use ringside_core::StopReason;

use crate::dbgf::{Debugger, Resume, StopCause};
use crate::gdb_wire::{Session, Wire, PACKET_LIMIT};
use crate::inspect;
use crate::stops::{Address, StopKind, WatchKind};

/// Monitor commands the front-end adds (they need the machine
/// configuration): return None for a command it does not know.
pub type ExtraMonitor = Box<dyn FnMut(&mut Debugger, &str) -> Option<Result<String, String>>>;

/// Commands gdb itself does better; `monitor` refuses them.
const GDB_OWN: [&str; 8] = ["step", "s", "next", "n", "cont", "c", "continue", "si"];

/// What the next `wait_for_stop_reason` does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Continue,
    Step,
}

/// The target gdbstub drives.
pub struct GdbTarget {
    pub debugger: Debugger,
    extra: ExtraMonitor,
    pending: Pending,
    /// How the machine ended, once it did (a debug exit, a halt, a triple
    /// fault...): the front-end gives the same exit status as `run`
    /// (`StopReason::exit_status`).
    pub ended: Option<StopReason>,
    /// Host input for the guest's COM1 (a script on the stub's stdin),
    /// passed on as it arrives.
    pub input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    /// The linear addresses of the breakpoints gdb set (Z0/Z1 packets).
    gdb_breakpoints: Vec<u32>,
    /// The only directory `monitor` may write or read files in (saved
    /// states, symbol files), canonical; None: no file commands at all.
    snapshot_dir: Option<PathBuf>,
    /// Commands gdbstub could not take, each answered `E16` with a new
    /// gdbstub session (`serve_connection`).
    pub protocol_errors: u64,
    /// Packets refused with a NAK (bad checksum, too long), and bytes
    /// dropped outside packets, in the last session (`gdb_wire`).
    pub naks: u64,
    pub dropped_bytes: u64,
}

impl GdbTarget {
    pub fn new(debugger: Debugger, extra: ExtraMonitor) -> GdbTarget {
        GdbTarget {
            debugger,
            extra,
            pending: Pending::Continue,
            ended: None,
            input: None,
            gdb_breakpoints: Vec::new(),
            snapshot_dir: None,
            protocol_errors: 0,
            naks: 0,
            dropped_bytes: 0,
        }
    }

    /// Let `monitor save|load|snapshot save|snapshot load|symbols` use
    /// files in `dir` (created if missing), and only there.
    pub fn set_snapshot_dir(&mut self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir)
            .and_then(|_| dir.canonicalize())
            .map(|d| self.snapshot_dir = Some(d))
            .map_err(|e| format!("snapshot directory {}: {e}", dir.display()))
    }

    /// Run one `monitor` line: gdb's own commands are refused, the file
    /// commands are confined to the snapshot directory, the front-end's
    /// extras come next, the debugger's command language last.
    pub fn monitor(&mut self, line: &str) -> Result<String, String> {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let word = words.first().copied().unwrap_or("");
        if GDB_OWN.contains(&word) {
            return Err(format!(
                "'{word}' is gdb's own: use stepi, nexti or continue (monitor runs the debugger's inspection and stop commands)"
            ));
        }
        let file_command = match words.as_slice() {
            ["snapshot", op @ ("save" | "load"), rest @ ..] => Some((*op, rest.join(" "))),
            ["snapshot", ..] => return Err("monitor snapshot save|load FILE".into()),
            [op @ ("save" | "load" | "symbols"), rest @ ..] => Some((*op, rest.join(" "))),
            _ => None,
        };
        if let Some((op, name)) = file_command {
            let Some(dir) = &self.snapshot_dir else {
                return Err(format!(
                    "'{op}' is off: the stub reads and writes files only in the directory given with `ringside gdb --snapshot-dir DIR`"
                ));
            };
            let path = confine(dir, &name)?;
            return match op {
                "save" => self.debugger.save_snapshot(&path),
                "load" => self.debugger.load_snapshot(&path),
                _ => self.debugger.load_symbols(&path),
            };
        }
        if let Some(r) = (self.extra)(&mut self.debugger, line) {
            return r;
        }
        self.debugger.execute(line)
    }

    /// Run one slice of the guest with the host input that arrived; an
    /// idle guest lets the wall clock catch up a little instead of
    /// spinning (at most 10 ms per slice). Some(cause) when it stopped.
    fn run_slice(&mut self) -> Result<Option<StopCause>, String> {
        self.take_input();
        let before = self.debugger.main.machine.clock.now_ns();
        match self.debugger.resume(SLICE)? {
            Resume::Running => Ok(None),
            Resume::Idle => {
                let skipped = self.debugger.main.machine.clock.now_ns() - before;
                std::thread::sleep(Duration::from_nanos(skipped.min(10_000_000)));
                Ok(None)
            }
            Resume::Stopped(cause) => Ok(Some(cause)),
        }
    }

    /// With no gdb attached (after a detach or a dropped connection): the
    /// guest runs on, as under QEMU, with every breakpoint, watchpoint and
    /// catch removed (gdb removes its own before it detaches; the
    /// `monitor` ones would stop a guest nobody watches), until `attach`
    /// says a new client is waiting (asked between slices) or the machine
    /// ends. Some(end) if it ended.
    pub fn run_detached(
        &mut self,
        mut attach: impl FnMut() -> bool,
    ) -> Result<Option<StopReason>, String> {
        self.gdb_breakpoints.clear();
        let ids: Vec<u32> = self.debugger.stops().iter().map(|s| s.id).collect();
        for id in ids {
            self.debugger.delete(id);
        }
        self.pending = Pending::Continue;
        self.debugger.begin();
        while !attach() {
            match self.run_slice()? {
                None => {}
                Some(StopCause::Machine(r)) => {
                    self.ended = Some(r);
                    return Ok(Some(r));
                }
                // Nothing else stops a guest without stops; should it,
                // the next client finds it there.
                Some(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    fn take_input(&mut self) {
        if let Some(rx) = &self.input {
            while let Ok(bytes) = rx.try_recv() {
                self.debugger.queue_input(&bytes);
            }
        }
    }

    /// The stop reason gdb gets for a debugger stop.
    fn report(&mut self, cause: &StopCause) -> SingleThreadStopReason<u32> {
        match cause {
            StopCause::Stepped => SingleThreadStopReason::DoneStep,
            StopCause::Breakpoint { .. } => {
                let pc = self.debugger.main.machine.cpu.linear_eip();
                if self.gdb_breakpoints.contains(&pc) {
                    SingleThreadStopReason::SwBreak(())
                } else {
                    SingleThreadStopReason::Signal(Signal::SIGTRAP)
                }
            }
            StopCause::Watchpoint { id, access } => {
                let (addr, kind) = self
                    .debugger
                    .stops()
                    .iter()
                    .find(|s| s.id == *id)
                    .and_then(|s| match s.kind {
                        StopKind::Watchpoint { start, kind, .. } => Some((start, kind)),
                        _ => None,
                    })
                    .unwrap_or((access.lin, WatchKind::Write));
                let kind = match kind {
                    WatchKind::Read => GdbWatch::Read,
                    WatchKind::Write => GdbWatch::Write,
                    WatchKind::Access => GdbWatch::ReadWrite,
                };
                SingleThreadStopReason::Watch {
                    tid: (),
                    kind,
                    addr,
                }
            }
            StopCause::Interrupted => SingleThreadStopReason::Signal(Signal::SIGINT),
            StopCause::Machine(r) => {
                self.ended = Some(*r);
                match r {
                    // gdb says "terminated with signal": the CPU shut down.
                    StopReason::TripleFault { .. } => {
                        SingleThreadStopReason::Terminated(Signal::SIGSEGV)
                    }
                    StopReason::ResetRequested => {
                        SingleThreadStopReason::Terminated(Signal::SIGHUP)
                    }
                    _ => {
                        let post = self.debugger.main.machine.bus.signals.post_code;
                        SingleThreadStopReason::Exited(r.exit_status(post))
                    }
                }
            }
            // Catches and divergences: a trap; `monitor where` says which.
            _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
        }
    }
}

impl Target for GdbTarget {
    type Arch = X86_SSE;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // Breakpoints are the debugger's, not INT3 patched into guest memory.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl SingleThreadBase for GdbTarget {
    fn read_registers(&mut self, regs: &mut X86CoreRegs) -> TargetResult<(), Self> {
        let c = &self.debugger.main.machine.cpu;
        let g = &c.gpr;
        regs.eax = g[reg::EAX];
        regs.ecx = g[reg::ECX];
        regs.edx = g[reg::EDX];
        regs.ebx = g[reg::EBX];
        regs.esp = g[reg::ESP];
        regs.ebp = g[reg::EBP];
        regs.esi = g[reg::ESI];
        regs.edi = g[reg::EDI];
        regs.eip = c.linear_eip();
        regs.eflags = c.eflags;
        let sel = |s: SegReg| c.seg[s as usize].selector as u32;
        regs.segments = X86SegmentRegs {
            cs: sel(SegReg::Cs),
            ss: sel(SegReg::Ss),
            ds: sel(SegReg::Ds),
            es: sel(SegReg::Es),
            fs: sel(SegReg::Fs),
            gs: sel(SegReg::Gs),
        };
        // No FPU and no SSE in ringside's CPU: those read as zero.
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86CoreRegs) -> TargetResult<(), Self> {
        let c = &mut self.debugger.main.machine.cpu;
        let g = &mut c.gpr;
        g[reg::EAX] = regs.eax;
        g[reg::ECX] = regs.ecx;
        g[reg::EDX] = regs.edx;
        g[reg::EBX] = regs.ebx;
        g[reg::ESP] = regs.esp;
        g[reg::EBP] = regs.ebp;
        g[reg::ESI] = regs.esi;
        g[reg::EDI] = regs.edi;
        c.eip = regs.eip.wrapping_sub(c.seg[SegReg::Cs as usize].base);
        c.eflags = (regs.eflags | 2) & 0x003F_7FD7;
        // Selectors only: the segment caches stay (`monitor set cs.base`
        // changes those).
        let s = &regs.segments;
        for (r, v) in [
            (SegReg::Cs, s.cs),
            (SegReg::Ss, s.ss),
            (SegReg::Ds, s.ds),
            (SegReg::Es, s.es),
            (SegReg::Fs, s.fs),
            (SegReg::Gs, s.gs),
        ] {
            c.seg[r as usize].selector = v as u16;
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u32, data: &mut [u8]) -> TargetResult<usize, Self> {
        let bytes = inspect::read_lin(&mut self.debugger.main.machine, start, data.len() as u32);
        let mut n = 0;
        for (d, b) in data.iter_mut().zip(bytes) {
            match b {
                Some(b) => {
                    *d = b;
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 && !data.is_empty() {
            // EFAULT: nothing mapped there.
            return Err(TargetError::Errno(14));
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: u32, data: &[u8]) -> TargetResult<(), Self> {
        inspect::write_lin(&mut self.debugger.main.machine, start, data)
            .map_err(|_| TargetError::Errno(14))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for GdbTarget {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.pending = Pending::Continue;
        self.debugger.begin();
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for GdbTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.pending = Pending::Step;
        Ok(())
    }
}

impl Breakpoints for GdbTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GdbTarget {
    fn add_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        self.debugger.add_breakpoint(Address::Linear(addr), None);
        self.gdb_breakpoints.push(addr);
        Ok(true)
    }
    fn remove_sw_breakpoint(&mut self, addr: u32, _kind: usize) -> TargetResult<bool, Self> {
        if let Some(i) = self.gdb_breakpoints.iter().position(|&a| a == addr) {
            self.gdb_breakpoints.swap_remove(i);
        }
        Ok(self.debugger.delete_kind(&StopKind::Breakpoint {
            at: Address::Linear(addr),
            condition: None,
        }))
    }
}

impl HwBreakpoint for GdbTarget {
    fn add_hw_breakpoint(&mut self, addr: u32, kind: usize) -> TargetResult<bool, Self> {
        self.add_sw_breakpoint(addr, kind)
    }
    fn remove_hw_breakpoint(&mut self, addr: u32, kind: usize) -> TargetResult<bool, Self> {
        self.remove_sw_breakpoint(addr, kind)
    }
}

fn watch_kind(kind: GdbWatch) -> WatchKind {
    match kind {
        GdbWatch::Write => WatchKind::Write,
        GdbWatch::Read => WatchKind::Read,
        GdbWatch::ReadWrite => WatchKind::Access,
    }
}

impl HwWatchpoint for GdbTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u32,
        len: u32,
        kind: GdbWatch,
    ) -> TargetResult<bool, Self> {
        self.debugger.add_watchpoint(addr, len, watch_kind(kind));
        Ok(true)
    }
    fn remove_hw_watchpoint(
        &mut self,
        addr: u32,
        len: u32,
        kind: GdbWatch,
    ) -> TargetResult<bool, Self> {
        Ok(self.debugger.delete_kind(&StopKind::Watchpoint {
            start: addr,
            len: len.max(1),
            kind: watch_kind(kind),
        }))
    }
}

impl MonitorCmd for GdbTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let result = self.monitor(&String::from_utf8_lossy(cmd));
        match result {
            Ok(text) => {
                for l in text.lines() {
                    outputln!(out, "{l}");
                }
            }
            Err(e) => outputln!(out, "error: {e}"),
        }
        Ok(())
    }
}

/// gdbstub's event loop: run the debugger in slices, look at the connection
/// between them. Generic over the connection so that the fuzzer can feed
/// packets from memory (`serve_connection`); ringside serves a TCP stream.
pub struct EventLoop<C>(std::marker::PhantomData<C>);

/// Instructions per slice between two looks at the connection.
const SLICE: u64 = 50_000;

impl<C: ConnectionExt<Error = std::io::Error>> BlockingEventLoop for EventLoop<C> {
    type Target = GdbTarget;
    type Connection = C;
    type StopReason = SingleThreadStopReason<u32>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget,
        conn: &mut C,
    ) -> Result<Event<SingleThreadStopReason<u32>>, WaitForStopReasonError<String, std::io::Error>>
    {
        target.take_input();
        if target.pending == Pending::Step {
            target.pending = Pending::Continue;
            let cause = target
                .debugger
                .step(1)
                .map_err(WaitForStopReasonError::Target)?;
            return Ok(Event::TargetStopped(target.report(&cause)));
        }
        loop {
            if conn
                .peek()
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
            if let Some(cause) = target.run_slice().map_err(WaitForStopReasonError::Target)? {
                return Ok(Event::TargetStopped(target.report(&cause)));
            }
        }
    }

    fn on_interrupt(
        _target: &mut GdbTarget,
    ) -> Result<Option<SingleThreadStopReason<u32>>, String> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// How a gdb session ended (an `Err` from the serve functions is the
/// guest's or the debugger's failure instead).
#[derive(Debug)]
pub enum SessionEnd {
    /// gdbstub's own end: gdb detached or killed, or the guest exited.
    Gdb(DisconnectReason),
    /// The client went away without a word (or its connection failed).
    ConnectionLost(String),
}

/// Serve one gdb connection until gdb detaches or the guest exits.
pub fn serve(target: &mut GdbTarget, conn: TcpStream) -> Result<SessionEnd, String> {
    let _ = conn.set_nodelay(true);
    serve_connection(target, conn)
}

/// Serve one gdb session over any connection (a TCP stream for ringside,
/// bytes in memory for the fuzzer): until gdb detaches, the guest exits,
/// or the connection fails (a read error ends the session). The framing
/// is checked first (`gdb_wire`: a bad checksum gets a NAK, an overlong
/// packet or stray bytes are dropped); a command gdbstub cannot take gets
/// the error reply `E16` and a new gdbstub session on the same
/// connection, with the debugger's state as it was.
pub fn serve_connection<C: ConnectionExt<Error = std::io::Error>>(
    target: &mut GdbTarget,
    conn: C,
) -> Result<SessionEnd, String> {
    let mut wire = Wire::new(conn);
    let result = serve_wire(target, &mut wire);
    target.naks = wire.naks;
    target.dropped_bytes = wire.dropped;
    result
}

fn serve_wire<C: ConnectionExt<Error = std::io::Error>>(
    target: &mut GdbTarget,
    wire: &mut Wire<C>,
) -> Result<SessionEnd, String> {
    loop {
        let packets_before = wire.packets;
        let gdb = GdbStub::builder(Session(&mut *wire))
            .packet_buffer_size(PACKET_LIMIT)
            .build()
            .map_err(|e| format!("gdb stub: {e}"))?;
        let error = match gdb.run_blocking::<EventLoop<Session<'_, C>>>(target) {
            Ok(reason) => return Ok(SessionEnd::Gdb(reason)),
            Err(e) => e,
        };
        // The guest or the debugger failed: the session is over.
        if error.is_target_error() {
            return Err(format!("gdb stub: {error}"));
        }
        // The client is gone: so it is when the error came without a new
        // packet (nothing the client sent to answer).
        if error.is_connection_error() || wire.packets == packets_before {
            return Ok(SessionEnd::ConnectionLost(error.to_string()));
        }
        target.protocol_errors += 1;
        if let Err(e) = wire.reply(b"E16") {
            return Ok(SessionEnd::ConnectionLost(e.to_string()));
        }
        wire.restart();
    }
}

/// The file `name` names inside the canonical directory `dir`, for a
/// `monitor` command of a gdb client, which may be anyone who reaches the
/// port: a relative path of plain names only (no root, no `..`, no `.`),
/// whose directory, once symlinks are resolved, is `dir` or below it, and
/// which, if it is itself a symlink, points below `dir` too.
fn confine(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| {
        Err(format!(
            "'{name}': {why}; files are read and written only inside {}",
            dir.display()
        ))
    };
    let relative = Path::new(name);
    if name.is_empty() {
        return refuse("no file name");
    }
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return refuse("an absolute path, '..' or '.' is not allowed");
    }
    let path = dir.join(relative);
    let below = |p: &Path| p.canonicalize().is_ok_and(|c| c.starts_with(dir));
    if !path.parent().is_some_and(below) {
        return refuse("its directory is not inside the snapshot directory");
    }
    let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && !below(&path) {
        return refuse("a symlink leading out of the snapshot directory");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_core::{boot, Machine};

    /// A bare machine running a real-mode ROM that far-jumps to F000:E000
    /// and counts up in AX there, in a debugger on the interpreter, behind
    /// the gdb target.
    fn target() -> GdbTarget {
        let mut rom = vec![0x40u8; 0x10000]; // inc ax
        rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0xE0, 0x00, 0xF0]);
        let mut m = Machine::with_ram_mib(1).unwrap();
        boot::load_rom(&mut m, &rom).unwrap();
        let factory: crate::EngineFactory =
            Box::new(|_: &str| Ok(Box::new(ringside_interp::Interp::new())));
        let engine = factory("interp").unwrap();
        GdbTarget::new(Debugger::new(m, engine, factory), Box::new(|_, _| None))
    }

    fn pc(t: &mut GdbTarget) -> u32 {
        let mut regs = X86CoreRegs::default();
        assert!(t.read_registers(&mut regs).is_ok());
        regs.eip
    }

    #[test]
    fn the_program_counter_gdb_sees_is_linear_in_real_mode() {
        let mut t = target();
        assert_eq!(pc(&mut t), 0xFFFF_FFF0, "CS base FFFF0000 + IP FFF0");
        t.debugger.step(2).unwrap();
        assert_eq!(t.debugger.main.machine.cpu.eip, 0xE001);
        assert_eq!(pc(&mut t), 0xF_E001, "F000:E001");
        let mut regs = X86CoreRegs::default();
        assert!(t.read_registers(&mut regs).is_ok());
        regs.eip = 0xF_E010;
        assert!(t.write_registers(&regs).is_ok());
        assert_eq!(
            t.debugger.main.machine.cpu.eip, 0xE010,
            "made relative to CS"
        );
    }

    #[test]
    fn a_stop_at_a_breakpoint_gdb_set_is_a_breakpoint_hit_and_any_other_a_sigtrap() {
        let mut t = target();
        assert!(matches!(t.add_hw_breakpoint(0xF_E004, 1), Ok(true)));
        let cause = t.debugger.cont(|| false).unwrap();
        assert!(matches!(
            t.report(&cause),
            SingleThreadStopReason::SwBreak(())
        ));
        t.debugger.add_breakpoint(Address::Physical(0xF_E008), None);
        let cause = t.debugger.cont(|| false).unwrap();
        assert_eq!(t.debugger.main.machine.cpu.linear_eip(), 0xF_E008);
        assert!(matches!(
            t.report(&cause),
            SingleThreadStopReason::Signal(Signal::SIGTRAP)
        ));
    }

    fn snapshot_dir(test: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ringside-gdb-files-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A target whose debugger can save its 1 MiB machine, with `dir` as
    /// its snapshot directory.
    fn target_saving_into(dir: &Path) -> GdbTarget {
        let mut t = target();
        let mut config = ringside_core::config::MachineConfig::default();
        config.machine.memory_mib = 1;
        t.debugger.config_toml = config.to_toml();
        t.set_snapshot_dir(dir).unwrap();
        t
    }

    #[test]
    fn monitor_snapshot_save_outside_the_snapshot_directory_is_refused() {
        let dir = snapshot_dir("outside");
        let outside = snapshot_dir("outside-target");
        let mut t = target_saving_into(&dir);
        let absolute = outside.join("x");
        for line in [
            format!("save {}", absolute.display()),
            format!("snapshot save {}", absolute.display()),
            "snapshot save ../x".to_string(),
            "save sub/../../x".to_string(),
            "snapshot load /etc/passwd".to_string(),
            "symbols /dev/zero".to_string(),
        ] {
            let err = t.monitor(&line).unwrap_err();
            assert!(err.contains("only inside"), "{line}: {err}");
        }
        assert!(!absolute.exists() && !outside.exists());
        assert!(!dir.parent().unwrap().join("x").exists());
    }

    #[cfg(unix)]
    #[test]
    fn monitor_save_through_a_symlink_leading_out_is_refused() {
        let dir = snapshot_dir("symlink");
        let outside = snapshot_dir("symlink-target");
        std::fs::create_dir_all(&outside).unwrap();
        let mut t = target_saving_into(&dir);
        std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dir.join("f")).unwrap();
        for line in ["snapshot save out/x", "snapshot save f", "load f"] {
            let err = t.monitor(line).unwrap_err();
            assert!(err.contains("only inside"), "{line}: {err}");
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn monitor_snapshot_save_of_a_plain_name_lands_in_the_directory_and_loads_back() {
        let dir = snapshot_dir("plain");
        let mut t = target_saving_into(&dir);
        let said = t.monitor("snapshot save state.ssm").unwrap();
        assert!(said.contains("saved the machine"), "{said}");
        assert!(dir.join("state.ssm").is_file());
        t.debugger.step(3).unwrap();
        t.monitor("snapshot load state.ssm").unwrap();
        assert_eq!(t.debugger.main.machine.cpu.eip, 0xFFF0);
    }

    #[test]
    fn file_commands_are_off_without_a_snapshot_directory() {
        let mut t = target();
        let err = t.monitor("snapshot save x").unwrap_err();
        assert!(err.contains("--snapshot-dir"), "{err}");
        assert!(!Path::new("x").exists());
    }
}
