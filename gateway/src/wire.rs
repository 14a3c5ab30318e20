//! Transport framing of one connection, sans-IO: cuts received bytes into whole Tern
//! frames for [`crate::conn::Conn`], for plain TCP (length-prefixed frames) and for
//! WebSocket (upgrade handshake, then one binary message per frame), and says how a
//! Tern frame going out must be wrapped.
//!
//! It knows nothing about the protocol state (that is `conn`) nor about sockets (that is
//! `worker`); it must never do I/O or panic on any input.

use bytes::Bytes;
use tern_schema::frame::{self, FrameError};
use tern_schema::HEADER_LEN;

use crate::ws::{self, Handshake, WsDecoder, WsEvent};

/// Which transport a connection speaks, and where it is in it.
#[derive(Debug)]
pub enum Wire {
    Tcp,
    /// WebSocket connection waiting for its HTTP upgrade request.
    WsHandshake,
    Ws(WsDecoder),
}

/// How an outgoing Tern frame is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// As is.
    Tcp,
    /// In one binary WebSocket frame.
    Ws,
    /// Not yet upgraded: Tern frames cannot be sent (they are dropped).
    None,
}

/// One step of decoding.
#[derive(Debug)]
pub enum Step<'a> {
    /// Nothing more can be decoded until more bytes arrive (nothing consumed).
    NeedMore,
    /// A whole Tern frame (header included).
    Frame(&'a [u8]),
    /// Write these bytes verbatim (upgrade response, WebSocket pong), then continue.
    Raw(Bytes),
    /// Consumed something that needs no action (a fragment, a pong).
    Skip,
    /// The bytes are not an acceptable frame: report it (Tern error) and close; on
    /// WebSocket, with this close status (0 on TCP).
    BadFrame(FrameError, u16),
    /// The client started the WebSocket closing handshake.
    PeerClose,
    /// Handshake refused: write this HTTP response and close.
    Reject(Bytes),
}

impl Wire {
    pub fn new(ws: bool) -> Wire {
        if ws {
            Wire::WsHandshake
        } else {
            Wire::Tcp
        }
    }

    pub fn framing(&self) -> Framing {
        match self {
            Wire::Tcp => Framing::Tcp,
            Wire::WsHandshake => Framing::None,
            Wire::Ws(_) => Framing::Ws,
        }
    }

    /// Decodes the next unit at the start of `data`; returns bytes consumed and the step.
    /// `max_payload` bounds a Tern frame's payload (header excluded).
    pub fn step<'a>(&'a mut self, data: &'a mut [u8], max_payload: usize) -> (usize, Step<'a>) {
        match self {
            Wire::Tcp => match frame::split_frame(data, max_payload) {
                Ok(Some(total)) => (total, Step::Frame(&data[..total])),
                Ok(None) => (0, Step::NeedMore),
                Err(e) => (data.len(), Step::BadFrame(e, 0)),
            },
            Wire::WsHandshake => match ws::handshake(data) {
                Handshake::Partial => (0, Step::NeedMore),
                Handshake::Accept { consumed, response } => {
                    *self = Wire::Ws(WsDecoder::default());
                    (consumed, Step::Raw(response.into()))
                }
                Handshake::Reject { response, reason } => {
                    tracing::debug!(reason, "websocket handshake refused");
                    (data.len(), Step::Reject(response.into()))
                }
            },
            Wire::Ws(dec) => {
                let all = data.len();
                match dec.decode(data, max_payload + HEADER_LEN) {
                    Ok(None) => (0, Step::NeedMore),
                    Ok(Some((n, ev))) => match ev {
                        WsEvent::Message(m) => (n, Step::Frame(m)),
                        WsEvent::Fragment | WsEvent::Pong => (n, Step::Skip),
                        WsEvent::Ping(p) => (n, Step::Raw(ws::control_frame(ws::OP_PONG, p).into())),
                        WsEvent::Close(_) => (n, Step::PeerClose),
                    },
                    Err(e @ ws::WsError::TooLarge { len, .. }) => (
                        all,
                        Step::BadFrame(
                            FrameError::TooLarge {
                                len: usize::try_from(len).unwrap_or(usize::MAX).saturating_sub(HEADER_LEN),
                                max: max_payload,
                            },
                            e.close_code(),
                        ),
                    ),
                    Err(e) => (all, Step::BadFrame(FrameError::Malformed(format!("websocket: {e}")), e.close_code())),
                }
            }
        }
    }

    /// No message in progress and no buffer held (the framing half of "parked").
    pub fn is_idle(&self) -> bool {
        match self {
            Wire::Tcp | Wire::WsHandshake => true,
            Wire::Ws(dec) => dec.is_idle(),
        }
    }

    /// Frees buffers that are only needed while a message is in progress.
    pub fn release(&mut self) {
        if let Wire::Ws(dec) = self {
            dec.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_schema::encode;

    fn describe(step: &Step<'_>) -> String {
        match step {
            Step::NeedMore => "need-more".into(),
            Step::Frame(f) => format!("frame {}", f.len()),
            Step::Raw(b) if b.starts_with(b"HTTP") => format!("raw {}", String::from_utf8_lossy(&b[..12])),
            Step::Raw(b) => format!("raw {:02x?}", &b[..]),
            Step::Skip => "skip".into(),
            Step::BadFrame(e, code) => format!("bad {} {code}", crate::conn::frame_error_code(e)),
            Step::PeerClose => "peer-close".into(),
            Step::Reject(b) => format!("reject {}", String::from_utf8_lossy(&b[..12])),
        }
    }

    /// Feeds all of `input` step by step; describes each step.
    fn check(mut wire: Wire, input: &[u8], expect: &[&str]) {
        let mut buf = input.to_vec();
        let mut off = 0;
        let mut got = Vec::new();
        loop {
            let (n, step) = wire.step(&mut buf[off..], 100);
            got.push(describe(&step));
            let stop = matches!(step, Step::NeedMore | Step::BadFrame(..) | Step::Reject(_) | Step::PeerClose);
            off += n;
            if stop || off == buf.len() {
                break;
            }
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn tcp_frames() {
        let ping = encode::ping(1, 2);
        let mut two = ping.clone();
        two.extend_from_slice(&ping);
        let n = ping.len();
        check(Wire::Tcp, &two, &[&format!("frame {n}"), &format!("frame {n}")]);
        check(Wire::Tcp, &two[..n + 3], &[&format!("frame {n}"), "need-more"]);
        check(Wire::Tcp, &[0xff, 0, 0, 1], &["bad 80002 0"]);
        check(Wire::Tcp, &[9, 0, 0, 9], &["bad 80001 0"]);
        check(Wire::Tcp, &[1, 0, 0, 1], &["bad 80000 0"]);
    }

    #[test]
    fn websocket_upgrade_then_frames() {
        let ping = encode::ping(1, 2);
        let mut input = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
        input.extend(ws::tests::client_frame(0x82, &ping, [1, 2, 3, 4]));
        input.extend(ws::tests::client_frame(0x89, b"", [1, 2, 3, 4]));
        input.extend(ws::tests::client_frame(0x88, &[3, 232], [1, 2, 3, 4]));
        check(
            Wire::new(true),
            &input,
            &["raw HTTP/1.1 101", &format!("frame {}", ping.len()), "raw [8a, 00]", "peer-close"],
        );
        check(Wire::new(true), b"GET / HTTP/1.1\r\n\r\n", &["reject HTTP/1.1 400"]);
        check(Wire::new(true), b"GET / HT", &["need-more"]);
    }

    #[test]
    fn websocket_limits_map_to_tern_errors() {
        let mut wire = Wire::Ws(WsDecoder::default());
        let mut big = ws::tests::client_frame(0x82, &[0; 105], [1, 2, 3, 4]);
        let (_, step) = wire.step(&mut big, 100);
        assert_eq!(describe(&step), "bad 80002 1009");
        let mut text = ws::tests::client_frame(0x81, b"hi", [1, 2, 3, 4]);
        let mut wire = Wire::Ws(WsDecoder::default());
        let (_, step) = wire.step(&mut text, 100);
        assert_eq!(describe(&step), "bad 80000 1008");
    }
}
