//! The gdb remote protocol: the input is everything a client sends (after
//! a handshake the fuzzer may keep or break), served by ringside's stub
//! over a connection in memory; the session ends when the bytes do (a read
//! past them is a connection error). No packet panics the stub or makes
//! it write files (no snapshot directory is given, so file commands are
//! off). The guest is a real-mode ROM counting up in AX forever.
#![no_main]
use gdbstub::conn::{Connection, ConnectionExt};
use libfuzzer_sys::fuzz_target;
use ringside_core::{boot, Machine};
use ringside_debugger::gdb::{serve_connection, GdbTarget};
use ringside_debugger::{Debugger, EngineFactory};

struct Bytes<'a> {
    input: &'a [u8],
    at: usize,
    sent: usize,
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the client is gone")
}

impl Connection for Bytes<'_> {
    type Error = std::io::Error;
    fn write(&mut self, _byte: u8) -> Result<(), Self::Error> {
        self.sent += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl ConnectionExt for Bytes<'_> {
    fn read(&mut self) -> Result<u8, Self::Error> {
        let b = *self.input.get(self.at).ok_or_else(eof)?;
        self.at += 1;
        Ok(b)
    }
    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        self.input.get(self.at).map(|b| Some(*b)).ok_or_else(eof)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rom = vec![0x40u8; 0x10000]; // inc ax
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0xE0, 0x00, 0xF0]);
    rom[0xEFFE..0xF000].copy_from_slice(&[0xEB, 0xFE]);
    let Ok(mut m) = Machine::with_ram_mib(1) else {
        return;
    };
    if boot::load_rom(&mut m, &rom).is_err() {
        return;
    }
    let factory: EngineFactory = Box::new(|_: &str| Ok(Box::new(ringside_interp::Interp::new())));
    let Ok(engine) = factory("interp") else {
        return;
    };
    let mut target = GdbTarget::new(Debugger::new(m, engine, factory), Box::new(|_, _| None));
    let conn = Bytes {
        input: data,
        at: 0,
        sent: 0,
    };
    let _ = serve_connection(&mut target, conn);
});
