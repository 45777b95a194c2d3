//! The gdb remote protocol's framing, checked before gdbstub sees a byte.
//!
//! gdbstub ends the whole session on a packet it cannot take: a wrong
//! checksum, bytes outside any packet, a packet longer than its buffer or a
//! command it cannot parse. A client on the stub's port may send anything,
//! so [`Wire`] sits between the connection and gdbstub and answers what
//! the protocol answers instead (GDB manual, "Remote Protocol", E.1
//! "Overview"):
//!
//! - a packet whose checksum is wrong or not hex gets a NAK (`-`), which
//!   asks the client to send it again, and never reaches gdbstub;
//! - a packet longer than [`PACKET_LIMIT`] bytes gets a NAK and is dropped
//!   (its bytes are not kept: memory stays bounded whatever the client
//!   sends);
//! - bytes outside a packet other than `+`, `-` and the interrupt byte
//!   (0x03) are dropped;
//! - a command gdbstub cannot parse (or any protocol error it reports) gets
//!   the error reply `E16` (EINVAL) from `gdb::serve_connection`, which
//!   then starts a new gdbstub session on the same connection (the
//!   debugger's state, breakpoints included, is kept; a client that turned
//!   acknowledgements off stays without them: [`Wire`] drops the new
//!   session's `+`).

use std::collections::VecDeque;

use gdbstub::conn::{Connection, ConnectionExt};

/// The longest packet the stub takes, `$` to checksum included (4,096
/// bytes, gdbstub's packet buffer, which gdb learns from `qSupported`'s
/// `PacketSize`).
pub const PACKET_LIMIT: usize = 4096;

/// Where the reader is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum In {
    /// Between packets.
    Idle,
    /// Inside `$...`, before `#`.
    Body,
    /// After `#`: this many checksum digits seen.
    Checksum(u8),
}

/// A connection with the protocol's framing checked (see the module).
pub struct Wire<C> {
    inner: C,
    state: In,
    /// The packet being read (`$`, body, `#`, digits), while it fits.
    packet: Vec<u8>,
    /// The packet outgrew [`PACKET_LIMIT`]: it is being skipped.
    overlong: bool,
    /// Checked bytes not yet handed to gdbstub.
    ready: VecDeque<u8>,
    /// Packets handed to gdbstub so far.
    pub packets: u64,
    /// Packets refused with a NAK (bad checksum or too long).
    pub naks: u64,
    /// Bytes dropped outside any packet.
    pub dropped: u64,
    /// The client asked for `QStartNoAckMode`.
    no_ack: bool,
    /// Drop the acknowledgements gdbstub writes (a session restarted
    /// after the client turned them off).
    pub(crate) quiet_acks: bool,
    /// Where the writer is in gdbstub's output: inside a packet or
    /// between packets (where a `+` or `-` is an acknowledgement).
    out_in_packet: bool,
    out_checksum: u8,
}

impl<C: ConnectionExt<Error = std::io::Error>> Wire<C> {
    pub fn new(inner: C) -> Wire<C> {
        Wire {
            inner,
            state: In::Idle,
            packet: Vec::new(),
            overlong: false,
            ready: VecDeque::new(),
            packets: 0,
            naks: 0,
            dropped: 0,
            no_ack: false,
            quiet_acks: false,
            out_in_packet: false,
            out_checksum: 0,
        }
    }

    /// A new gdbstub session is starting on this connection.
    pub(crate) fn restart(&mut self) {
        self.quiet_acks = self.no_ack;
        self.out_in_packet = false;
    }

    /// Answer the packet gdbstub could not take with `body` (the error
    /// reply of a restart): acknowledged first (it arrived intact; gdbstub
    /// failed before its own `+`) unless the client turned
    /// acknowledgements off.
    pub(crate) fn reply(&mut self, body: &[u8]) -> std::io::Result<()> {
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        if !self.no_ack {
            self.inner.write(b'+')?;
        }
        self.inner.write(b'$')?;
        self.inner.write_all(body)?;
        self.inner.write(b'#')?;
        self.inner.write_all(format!("{sum:02x}").as_bytes())?;
        self.inner.flush()
    }

    /// Take one byte from the client through the framing rules; a byte
    /// or a whole checked packet lands in `ready`.
    fn feed(&mut self, b: u8) -> std::io::Result<()> {
        match self.state {
            In::Idle => match b {
                b'$' => {
                    self.state = In::Body;
                    self.packet.clear();
                    self.packet.push(b);
                    self.overlong = false;
                }
                b'+' | b'-' | 0x03 => self.ready.push_back(b),
                _ => self.dropped += 1,
            },
            In::Body | In::Checksum(_) => {
                if !self.overlong {
                    if self.packet.len() < PACKET_LIMIT {
                        self.packet.push(b);
                    } else {
                        self.overlong = true;
                        self.packet.clear();
                    }
                }
                self.state = match self.state {
                    In::Body if b == b'#' => In::Checksum(0),
                    In::Body => In::Body,
                    In::Checksum(n) => In::Checksum(n + 1),
                    In::Idle => unreachable!("matched above"),
                };
                if self.state == In::Checksum(2) {
                    self.state = In::Idle;
                    self.end_packet()?;
                }
            }
        }
        Ok(())
    }

    /// A packet's last checksum digit has arrived.
    fn end_packet(&mut self) -> std::io::Result<()> {
        if self.overlong || !checksum_ok(&self.packet) {
            self.naks += 1;
            self.packet.clear();
            self.inner.write(b'-')?;
            return self.inner.flush();
        }
        let body = &self.packet[1..self.packet.len() - 3];
        if body == b"QStartNoAckMode" {
            self.no_ack = true;
        }
        self.packets += 1;
        self.ready.extend(self.packet.drain(..));
        Ok(())
    }
}

/// `$body#xx` with `xx` two hex digits equal to the body's byte sum.
fn checksum_ok(packet: &[u8]) -> bool {
    let n = packet.len();
    if n < 4 || packet[0] != b'$' || packet[n - 3] != b'#' {
        return false;
    }
    let digits = std::str::from_utf8(&packet[n - 2..]).ok();
    let Some(want) = digits.and_then(|d| u8::from_str_radix(d, 16).ok()) else {
        return false;
    };
    let sum = packet[1..n - 3].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    sum == want
}

/// gdbstub's view of a [`Wire`]: borrowed, so that a new session can
/// start on the same connection after a protocol error.
pub struct Session<'a, C>(pub &'a mut Wire<C>);

impl<C: ConnectionExt<Error = std::io::Error>> Connection for Session<'_, C> {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        let w = &mut *self.0;
        if w.out_in_packet {
            if w.out_checksum > 0 {
                w.out_checksum -= 1;
                w.out_in_packet = w.out_checksum > 0;
            } else if byte == b'#' {
                w.out_checksum = 2;
            }
        } else if byte == b'$' {
            w.out_in_packet = true;
            w.out_checksum = 0;
        } else if (byte == b'+' || byte == b'-') && w.quiet_acks {
            return Ok(());
        }
        w.inner.write(byte)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.inner.flush()
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        self.0.inner.on_session_start()
    }
}

impl<C: ConnectionExt<Error = std::io::Error>> ConnectionExt for Session<'_, C> {
    fn read(&mut self) -> Result<u8, Self::Error> {
        let w = &mut *self.0;
        loop {
            if let Some(b) = w.ready.pop_front() {
                return Ok(b);
            }
            let b = w.inner.read()?;
            w.feed(b)?;
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        let w = &mut *self.0;
        loop {
            if let Some(&b) = w.ready.front() {
                return Ok(Some(b));
            }
            // Only what has arrived: a byte the inner connection has is
            // read without waiting.
            if w.inner.peek()?.is_none() {
                return Ok(None);
            }
            let b = w.inner.read()?;
            w.feed(b)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's bytes in memory; what the stub writes is kept.
    struct Mem {
        input: VecDeque<u8>,
        output: Vec<u8>,
    }

    impl Connection for Mem {
        type Error = std::io::Error;
        fn write(&mut self, b: u8) -> std::io::Result<()> {
            self.output.push(b);
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl ConnectionExt for Mem {
        fn read(&mut self) -> std::io::Result<u8> {
            self.input
                .pop_front()
                .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
        }
        fn peek(&mut self) -> std::io::Result<Option<u8>> {
            Ok(self.input.front().copied())
        }
    }

    fn wire(input: &[u8]) -> Wire<Mem> {
        Wire::new(Mem {
            input: input.iter().copied().collect(),
            output: Vec::new(),
        })
    }

    fn drain(w: &mut Wire<Mem>) -> Vec<u8> {
        let mut s = Session(w);
        let mut out = Vec::new();
        while let Ok(Some(_)) = s.peek() {
            out.push(s.read().unwrap());
        }
        out
    }

    #[test]
    fn a_good_packet_passes_whole_and_acks_pass_through() {
        let mut w = wire(b"+$g#67-\x03");
        assert_eq!(drain(&mut w), b"+$g#67-\x03");
        assert_eq!((w.packets, w.naks, w.dropped), (1, 0, 0));
        assert!(w.inner.output.is_empty());
    }

    #[test]
    fn a_wrong_checksum_gets_a_nak_and_never_reaches_gdbstub() {
        let mut w = wire(b"$m0,4#00$g#67");
        assert_eq!(drain(&mut w), b"$g#67");
        assert_eq!(w.inner.output, b"-");
        assert_eq!((w.packets, w.naks), (1, 1));
        let mut w = wire(b"$g#zz");
        assert!(drain(&mut w).is_empty());
        assert_eq!(w.inner.output, b"-", "non-hex digits are a bad checksum");
    }

    #[test]
    fn garbage_between_packets_is_dropped() {
        let mut w = wire(b"garbage\xff$g#67");
        assert_eq!(drain(&mut w), b"$g#67");
        assert_eq!(w.dropped, 8);
    }

    #[test]
    fn an_overlong_packet_is_refused_without_being_kept() {
        let mut long = b"$M0,800:".to_vec();
        long.extend(std::iter::repeat_n(b'0', 3 * PACKET_LIMIT));
        long.extend_from_slice(b"#00$g#67");
        let mut w = wire(&long);
        assert_eq!(drain(&mut w), b"$g#67");
        assert_eq!(w.inner.output, b"-");
        assert!(w.packet.capacity() <= 2 * PACKET_LIMIT);
    }

    #[test]
    fn a_restarted_session_keeps_acknowledgements_off_if_the_client_turned_them_off() {
        let mut w = wire(b"$QStartNoAckMode#b0");
        assert_eq!(drain(&mut w).len(), 19);
        w.restart();
        let mut s = Session(&mut w);
        s.write_all(b"+$OK#9a").unwrap();
        assert_eq!(
            w.inner.output, b"$OK#9a",
            "the new session's ack is dropped"
        );
        let mut w = wire(b"$g#67");
        drain(&mut w);
        w.restart();
        Session(&mut w).write_all(b"+$OK#9a").unwrap();
        assert_eq!(w.inner.output, b"+$OK#9a", "acks stay on otherwise");
    }
}
