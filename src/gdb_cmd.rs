//! `ringside gdb`: the GDB remote stub for a guest.
//!
//! The machine is built from the run options like `ringside run` builds
//! it; COM1 goes to stdout, and a script on stdin (a pipe or a file, not a
//! terminal) is the guest's COM1 input, given when the guest waits for it.
//! The stub listens on loopback unless told otherwise (a port alone is on
//! loopback). The guest waits at its first instruction for the first gdb;
//! after a detach or a dropped connection it runs on and the stub waits
//! for the next client, as QEMU's does, until gdb kills the guest or the
//! machine ends; the stub then exits with the status `ringside run` would
//! give that end (0 after a kill).
//! `monitor` commands that read or write files work only inside the
//! directory given with `--snapshot-dir` (docs/security.md).

use std::io::{IsTerminal, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use anyhow::{Context, Result};
use ringside_core::snapshot;
use ringside_debugger::gdb::{serve, DisconnectReason, ExtraMonitor, GdbTarget, SessionEnd};
use ringside_debugger::lockstep::Side;
use ringside_debugger::{Debugger, StopCause};
use ringside_devices::pc::HostIo;

use crate::cli::{build_machine, machine_end, make_engine, status, RunArgs};
use crate::frontends::build_debugger;

/// Instructions `monitor compare` runs at most before it gives up.
const COMPARE_LIMIT: u64 = 5_000_000;

pub fn main(listen: &str, snapshot_dir: Option<&Path>, run: RunArgs) -> Result<i32> {
    let io = HostIo {
        com1: Box::new(std::io::stdout()),
        com2: Box::new(std::io::sink()),
        debug_console: Box::new(std::io::stderr()),
    };
    let (_, debugger) = build_debugger(&run, io)?;
    let listen = listen_address(listen);
    let listener =
        TcpListener::bind(&listen).with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!("ringside: warning: the gdb stub listens on {addr}, reachable from other hosts");
    }
    eprintln!(
        "ringside: gdb stub listening on {addr} ({} engine, {} symbols); attach with: gdb -ex 'target remote {addr}'",
        debugger.engine_name(),
        debugger.symbols.len()
    );
    let mut target = GdbTarget::new(debugger, extra_monitor(run));
    // A gdb client may be anyone who reaches the port: it reads and writes
    // files only in the directory the user named (docs/security.md).
    if let Some(dir) = snapshot_dir {
        target.set_snapshot_dir(dir).map_err(anyhow::Error::msg)?;
    }
    target.input = script_input();
    // The guest waits, stopped at its first instruction, for the first
    // client (like QEMU's -S); after a detach or a dropped connection it
    // runs on while the stub waits for the next, until gdb kills it or
    // the machine ends (like QEMU's gdbstub).
    let (mut conn, mut peer) = listener.accept().context("waiting for gdb")?;
    loop {
        eprintln!("ringside: gdb connected from {peer}");
        let served = serve(&mut target, conn);
        if target.protocol_errors + target.naks + target.dropped_bytes > 0 {
            eprintln!(
                "ringside: gdb client errors: {} commands refused (E16), {} packets refused (NAK: bad checksum or over {} bytes), {} stray bytes dropped",
                target.protocol_errors,
                target.naks,
                ringside_debugger::gdb_wire::PACKET_LIMIT,
                target.dropped_bytes
            );
        }
        match served.map_err(anyhow::Error::msg)? {
            SessionEnd::Gdb(DisconnectReason::Kill) => {
                eprintln!("ringside: gdb killed the guest");
                return Ok(status::HALTED);
            }
            SessionEnd::Gdb(
                DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_),
            ) => {
                break;
            }
            SessionEnd::Gdb(DisconnectReason::Disconnect) => {
                eprintln!(
                    "ringside: gdb detached; the guest runs on, waiting for the next gdb on {addr}"
                );
            }
            SessionEnd::ConnectionLost(why) => {
                eprintln!("ringside: the gdb connection was lost ({why}); the guest runs on, waiting for the next gdb on {addr}");
            }
        }
        match run_until_attached(&mut target, &listener)? {
            Some((c, p)) => (conn, peer) = (c, p),
            None => break,
        }
    }
    let m = &target.debugger.main.machine;
    let Some(end) = target.ended else {
        return Ok(status::HALTED);
    };
    let (_, code, message) = machine_end(&end, m.bus.signals.post_code);
    if let Some(message) = message {
        eprintln!("ringside: {message}");
    }
    Ok(code)
}

/// `--listen`: ADDR:PORT, or a port alone (`4399` or `:4399`, QEMU's
/// form), which is on loopback.
fn listen_address(listen: &str) -> String {
    let port = listen.strip_prefix(':').unwrap_or(listen);
    if port.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port}")
    } else {
        listen.to_string()
    }
}

/// Run the detached guest until a new client connects (Some) or the
/// machine ends (None).
fn run_until_attached(
    target: &mut GdbTarget,
    listener: &TcpListener,
) -> Result<Option<(TcpStream, SocketAddr)>> {
    listener.set_nonblocking(true)?;
    let mut next = None;
    let mut failure = None;
    let ended = target
        .run_detached(|| match listener.accept() {
            Ok(c) => {
                next = Some(c);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => {
                failure = Some(e);
                true
            }
        })
        .map_err(anyhow::Error::msg)?;
    listener.set_nonblocking(false)?;
    if let Some(e) = failure {
        return Err(e).context("waiting for gdb");
    }
    if ended.is_some() {
        return Ok(None);
    }
    let (conn, peer) = match next {
        Some(c) => c,
        // Stopped for another reason: the next client finds it there.
        None => listener.accept().context("waiting for gdb")?,
    };
    conn.set_nonblocking(false)?;
    Ok(Some((conn, peer)))
}

/// A script on stdin becomes the guest's COM1 input (read by a thread, so
/// a stdin that never ends does not hold the stub up).
fn script_input() -> Option<std::sync::mpsc::Receiver<Vec<u8>>> {
    if std::io::stdin().is_terminal() {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    Some(rx)
}

/// The monitor command that needs the machine configuration: `compare
/// ENGINE` (a second machine made
/// from the same configuration and the current state, run in lockstep to
/// the next divergence).
fn extra_monitor(run: RunArgs) -> ExtraMonitor {
    Box::new(move |d: &mut Debugger, line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["compare", engine] => Some(compare(d, &run, engine)),
            ["compare", ..] => Some(Err("monitor compare ENGINE".into())),
            _ => None,
        }
    })
}

fn compare(d: &mut Debugger, run: &RunArgs, engine: &str) -> Result<String, String> {
    let io = HostIo::discarded();
    let (_, mut partner) = build_machine(run, io).map_err(|e| format!("{e:#}"))?;
    // The partner starts where the debugged machine stands now.
    let bytes = snapshot::to_bytes(&d.main.machine, &d.config_toml).map_err(|e| e.to_string())?;
    snapshot::from_bytes(&bytes)
        .and_then(|s| s.restore_into(&mut partner))
        .map_err(|e| e.to_string())?;
    let engine = make_engine(engine).map_err(|e| format!("{e:#}"))?;
    d.partner = Some(Side {
        machine: partner,
        engine,
    });
    let start = d.main.machine.clock.icount;
    let mut steps = 0u64;
    let cause = d.cont(|| {
        steps += 1;
        steps * 4096 > COMPARE_LIMIT
    });
    let partner_name = d.partner.as_ref().map_or("?", |p| p.engine.name());
    let done = d.main.machine.clock.icount - start;
    let text = match cause {
        Ok(StopCause::Interrupted) => Ok(format!(
            "no divergence in {done} instructions ({} vs {partner_name}; stopped after the limit)",
            d.engine_name()
        )),
        Ok(c @ StopCause::Divergence(_)) => Ok(d.describe_stop(&c)),
        Ok(c) => Ok(format!(
            "no divergence in {done} instructions ({} vs {partner_name}); {}",
            d.engine_name(),
            d.describe_stop(&c)
        )),
        Err(e) => Err(e),
    };
    d.partner = None;
    text
}
