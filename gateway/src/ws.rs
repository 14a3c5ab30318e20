//! WebSocket (RFC 6455) server side, sans-IO: the HTTP upgrade handshake, decoding of
//! masked client frames in place (binary messages, fragmentation reassembled within the
//! size limit, ping/pong/close control frames) and the headers of server frames.
//!
//! One binary message carries exactly one Tern frame (4-byte header + FlatBuffers), the
//! same bytes as on plain TCP. Text messages and extensions are refused. This module
//! must never do I/O, allocate while no fragmented message is in progress, or panic on
//! any input.

use std::fmt;

/// Largest handshake request accepted; browsers send well under 2 KiB.
pub const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
/// Headers parsed in a handshake request.
const MAX_HEADERS: usize = 32;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close status codes (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Outcome of feeding the bytes received so far to the handshake parser.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The request is not complete yet.
    Partial,
    /// Upgrade accepted: write `response`; frames start at byte `consumed`.
    Accept { consumed: usize, response: Vec<u8> },
    /// Not an acceptable upgrade: write `response` and close.
    Reject { response: Vec<u8>, reason: &'static str },
}

fn reject(status: &str, extra: &str, reason: &'static str) -> Handshake {
    let response = format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n").into_bytes();
    Handshake::Reject { response, reason }
}

fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses a client's upgrade request from the start of `buf`.
pub fn handshake(buf: &[u8]) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HANDSHAKE_BYTES => return Handshake::Partial,
        Ok(httparse::Status::Partial) => {
            return reject("431 Request Header Fields Too Large", "", "handshake too large");
        }
        Err(_) => return reject("400 Bad Request", "", "not an HTTP request"),
    };
    if consumed > MAX_HANDSHAKE_BYTES {
        return reject("431 Request Header Fields Too Large", "", "handshake too large");
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return reject("400 Bad Request", "", "not an HTTP/1.1 GET");
    }
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if !header("Upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return reject("400 Bad Request", "", "missing Upgrade: websocket");
    }
    if !header("Connection").is_some_and(|v| has_token(v, "upgrade")) {
        return reject("400 Bad Request", "", "missing Connection: upgrade");
    }
    if header("Sec-WebSocket-Version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return reject("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version");
    }
    let key = match header("Sec-WebSocket-Key").map(<[u8]>::trim_ascii) {
        // base64 of 16 bytes
        Some(k) if k.len() == 24 && k.ends_with(b"==") => k,
        _ => return reject("400 Bad Request", "", "missing or malformed Sec-WebSocket-Key"),
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    Handshake::Accept { consumed, response }
}

/// A client frame that breaks the protocol; the connection is closed with `close_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    Unmasked,
    ReservedBits,
    UnknownOpcode(u8),
    /// Text messages are not part of the Tern protocol.
    Text,
    ControlTooLong,
    ControlFragmented,
    /// A continuation with no message in progress, or a new message inside one.
    BadContinuation,
    BadClosePayload,
    /// Message (or frame) larger than the limit.
    TooLarge {
        len: u64,
        max: usize,
    },
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Unmasked => f.write_str("client frames must be masked"),
            WsError::ReservedBits => f.write_str("reserved bits set (no extensions negotiated)"),
            WsError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            WsError::Text => f.write_str("text messages are not supported; send binary frames"),
            WsError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            WsError::ControlFragmented => f.write_str("fragmented control frame"),
            WsError::BadContinuation => f.write_str("unexpected continuation or interleaved message"),
            WsError::BadClosePayload => f.write_str("close frame payload of 1 byte"),
            WsError::TooLarge { len, max } => write!(f, "message of {len} bytes exceeds the limit of {max}"),
        }
    }
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            WsError::TooLarge { .. } => CLOSE_TOO_BIG,
            WsError::Text => CLOSE_POLICY,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// What one decoded client frame means.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A complete binary message (unmasked).
    Message(&'a [u8]),
    /// A fragment was buffered; nothing to do yet.
    Fragment,
    Ping(&'a [u8]),
    Pong,
    /// The client starts the closing handshake (status code, if any).
    Close(Option<u16>),
}

/// Per-connection decoder state: only the reassembly buffer of a fragmented message,
/// empty (unallocated) otherwise.
#[derive(Debug, Default)]
pub struct WsDecoder {
    frag: Vec<u8>,
    in_message: bool,
    /// `frag` was handed out as a message and is released on the next call.
    delivered: bool,
}

impl WsDecoder {
    /// Decodes the frame at the start of `buf`, unmasking its payload in place. Returns
    /// `Ok(None)` when more bytes are needed, else the bytes consumed and the event.
    /// `max_message` bounds a whole (reassembled) message.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
    ) -> Result<Option<(usize, WsEvent<'a>)>, WsError> {
        self.release();
        let Some(&[b0, b1]) = buf.first_chunk::<2>() else { return Ok(None) };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        let control = opcode & 0x08 != 0;
        match opcode {
            OP_CONTINUATION | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            OP_TEXT => return Err(WsError::Text),
            op => return Err(WsError::UnknownOpcode(op)),
        }
        let (len, mut pos) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xFF; 8])), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if control {
            if len > 125 {
                return Err(WsError::ControlTooLong);
            }
            if !fin {
                return Err(WsError::ControlFragmented);
            }
        } else {
            let so_far = if opcode == OP_CONTINUATION { self.frag.len() as u64 } else { 0 };
            if so_far.saturating_add(len) > max_message as u64 {
                return Err(WsError::TooLarge { len: so_far.saturating_add(len), max: max_message });
            }
        }
        let Some(mask) = buf.get(pos..pos + 4) else { return Ok(None) };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        pos += 4;
        // len <= max_message (data) or 125 (control), so it fits in usize.
        let total = pos + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let payload = &mut buf[pos..total];
        unmask(payload, mask);
        let payload = &buf[pos..total];
        let event = match opcode {
            OP_BINARY if self.in_message => return Err(WsError::BadContinuation),
            OP_BINARY if fin => WsEvent::Message(payload),
            OP_BINARY => {
                self.in_message = true;
                self.frag.extend_from_slice(payload);
                WsEvent::Fragment
            }
            OP_CONTINUATION if !self.in_message => return Err(WsError::BadContinuation),
            OP_CONTINUATION => {
                self.frag.extend_from_slice(payload);
                if fin {
                    self.in_message = false;
                    self.delivered = true;
                    WsEvent::Message(&self.frag)
                } else {
                    WsEvent::Fragment
                }
            }
            OP_PING => WsEvent::Ping(payload),
            OP_PONG => WsEvent::Pong,
            _ => match payload {
                [] => WsEvent::Close(None),
                [_] => return Err(WsError::BadClosePayload),
                [a, b, ..] => WsEvent::Close(Some(u16::from_be_bytes([*a, *b]))),
            },
        };
        Ok(Some((total, event)))
    }

    /// Frees the reassembly buffer once its message was handed out.
    /// No fragmented message in progress and no buffer held.
    pub fn is_idle(&self) -> bool {
        !self.in_message && self.frag.capacity() == 0
    }

    pub fn release(&mut self) {
        if self.delivered {
            self.frag = Vec::new();
            self.delivered = false;
        }
    }

    /// Heap bytes held (for the memory budget).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.frag.capacity()
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let m = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Most bytes a server frame header takes.
pub const MAX_HEADER: usize = 10;

/// Header of an unmasked, final server frame with `opcode` and `len` payload bytes.
pub fn server_header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(l) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A whole unmasked control frame (payload up to 125 bytes; longer is truncated).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let (h, n) = server_header(opcode, payload.len());
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&h[..n]);
    v.extend_from_slice(payload);
    v
}

/// A close frame with a status code.
pub fn close_frame(code: u16) -> Vec<u8> {
    control_frame(OP_CLOSE, &code.to_be_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n{extra}\r\n")
    }

    fn check_handshake(req: &str, expect: &str) {
        let got = match handshake(req.as_bytes()) {
            Handshake::Partial => "partial".to_owned(),
            Handshake::Accept { consumed, response } => {
                assert_eq!(consumed, req.len());
                String::from_utf8(response).unwrap()
            }
            Handshake::Reject { response, .. } => {
                String::from_utf8(response).unwrap().lines().next().unwrap().to_owned()
            }
        };
        assert!(got.contains(expect), "{req:?}: got {got:?}, want {expect:?}");
    }

    #[test]
    fn handshakes() {
        let ok = format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n");
        // RFC 6455 §1.3 example.
        check_handshake(&request(&ok), "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
        check_handshake(&request(&ok), "HTTP/1.1 101 Switching Protocols");
        check_handshake(&request(&ok)[..40], "partial");
        check_handshake(&request(&format!("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n")), "426");
        check_handshake(&request("Sec-WebSocket-Version: 13\r\n"), "400");
        check_handshake(&request("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n"), "400");
        check_handshake(&request(&ok).replace("GET", "POST"), "400");
        check_handshake(&request(&ok).replace("Upgrade: websocket", "Upgrade: h2c"), "400");
        check_handshake(&request(&ok).replace("keep-alive, Upgrade", "keep-alive"), "400");
        check_handshake("\x16\x03\x01\x02\x00", "400");
        let huge = request(&format!("{ok}X-Pad: {}\r\n", "a".repeat(MAX_HANDSHAKE_BYTES)));
        check_handshake(&huge[..MAX_HANDSHAKE_BYTES + 10], "431");
    }

    #[test]
    fn handshake_leaves_following_bytes() {
        let mut req = request(&format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n")).into_bytes();
        let n = req.len();
        req.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
        assert!(matches!(handshake(&req), Handshake::Accept { consumed, .. } if consumed == n));
    }

    /// A masked client frame.
    pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut v = vec![first];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    /// Decodes every frame of `input`, describing events (or the error) in order.
    fn check_decode(input: &[u8], max: usize, expect: &[&str]) {
        let mut dec = WsDecoder::default();
        let mut buf = input.to_vec();
        let mut off = 0;
        let mut got = Vec::new();
        loop {
            match dec.decode(&mut buf[off..], max) {
                Ok(None) => {
                    if off < buf.len() {
                        got.push(format!("need-more({})", buf.len() - off));
                    }
                    break;
                }
                Ok(Some((n, ev))) => {
                    got.push(match ev {
                        WsEvent::Message(m) => format!("msg {}", String::from_utf8_lossy(m)),
                        WsEvent::Fragment => "frag".to_owned(),
                        WsEvent::Ping(p) => format!("ping {}", String::from_utf8_lossy(p)),
                        WsEvent::Pong => "pong".to_owned(),
                        WsEvent::Close(c) => format!("close {c:?}"),
                    });
                    off += n;
                }
                Err(e) => {
                    got.push(format!("err {}", e.close_code()));
                    break;
                }
            }
        }
        assert_eq!(got, expect);
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn data_frames() {
        check_decode(&client_frame(0x82, b"hello", M), 100, &["msg hello"]);
        let long = "x".repeat(300);
        check_decode(&client_frame(0x82, long.as_bytes(), M), 1000, &[&format!("msg {long}")]);
        let huge = vec![b'y'; 70_000];
        let f = client_frame(0x82, &huge, M);
        assert_eq!(f[1] & 0x7f, 127);
        check_decode(&f, 100_000, &[&format!("msg {}", "y".repeat(70_000))]);
        check_decode(&client_frame(0x82, b"hello", M)[..7], 100, &["need-more(7)"]);
        check_decode(&[0x82], 100, &["need-more(1)"]);
    }

    #[test]
    fn control_frames() {
        let mut input = client_frame(0x89, b"hb", M);
        input.extend(client_frame(0x8A, b"", M));
        input.extend(client_frame(0x88, &1000u16.to_be_bytes(), M));
        input.extend(client_frame(0x88, b"", M));
        check_decode(&input, 100, &["ping hb", "pong", "close Some(1000)", "close None"]);
        check_decode(&client_frame(0x88, b"x", M), 100, &["err 1002"]);
        check_decode(&client_frame(0x89, &[0; 126], M), 1000, &["err 1002"]);
        check_decode(&client_frame(0x09, b"", M), 100, &["err 1002"]);
    }

    #[test]
    fn fragmentation_is_reassembled_within_the_limit() {
        let mut input = client_frame(0x02, b"hel", M);
        input.extend(client_frame(0x89, b"p", M)); // control frames may interleave
        input.extend(client_frame(0x00, b"lo ", M));
        input.extend(client_frame(0x80, b"world", M));
        input.extend(client_frame(0x82, b"next", M));
        check_decode(&input, 100, &["frag", "ping p", "frag", "msg hello world", "msg next"]);

        let mut input = client_frame(0x02, b"0123456789", M);
        input.extend(client_frame(0x80, b"0123456789", M));
        check_decode(&input, 15, &["frag", "err 1009"]);

        check_decode(&client_frame(0x80, b"x", M), 100, &["err 1002"]);
        let mut input = client_frame(0x02, b"a", M);
        input.extend(client_frame(0x82, b"b", M));
        check_decode(&input, 100, &["frag", "err 1002"]);
    }

    #[test]
    fn violations() {
        // Unmasked.
        check_decode(&[0x82, 0x01, b'x'], 100, &["err 1002"]);
        // Text.
        check_decode(&client_frame(0x81, b"hi", M), 100, &["err 1008"]);
        // RSV bits.
        check_decode(&client_frame(0xC2, b"hi", M), 100, &["err 1002"]);
        // Reserved opcode.
        check_decode(&client_frame(0x83, b"hi", M), 100, &["err 1002"]);
        // Oversize is refused from the header alone, before the payload arrives.
        check_decode(&client_frame(0x82, &[0; 200], M)[..8], 100, &["err 1009"]);
        // 64-bit length with the top bit set.
        check_decode(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 100, &["err 1009"]);
    }

    #[test]
    fn buffer_is_released_after_delivery() {
        let mut dec = WsDecoder::default();
        let mut a = client_frame(0x02, b"ab", M);
        let mut b = client_frame(0x80, b"cd", M);
        assert!(matches!(dec.decode(&mut a, 100), Ok(Some((_, WsEvent::Fragment)))));
        assert!(matches!(dec.decode(&mut b, 100), Ok(Some((_, WsEvent::Message(b"abcd"))))));
        dec.release();
        assert_eq!(dec.heap_bytes(), 0);
    }

    #[test]
    fn server_headers() {
        assert_eq!(&server_header(OP_BINARY, 5).0[..2], &[0x82, 5]);
        assert_eq!(server_header(OP_BINARY, 200), ([0x82, 126, 0, 200, 0, 0, 0, 0, 0, 0], 4));
        assert_eq!(server_header(OP_BINARY, 70_000).1, 10);
        assert_eq!(close_frame(1000), vec![0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn unmask_matches_bytewise() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, M);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ M[i % 4]).collect();
            assert_eq!(fast, slow);
        }
    }
}
