//! The client side of WebSocket (RFC 6455) as the worker's event loop needs it, sans-IO:
//! the upgrade request, the end of the server's upgrade answer, masked frames out, and
//! unmasked server frames in. Tern carries one whole frame per binary message.
//!
//! Server frames this codec does not handle (fragments, masked frames, oversized
//! lengths) are errors, never panics; the caller closes the connection.

/// What the server sent, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum WsIn<'a> {
    Binary(&'a [u8]),
    /// Close with its status code (if any).
    Close(Option<u16>),
    Ping(&'a [u8]),
    /// Pong or text: nothing a Tern client acts on.
    Ignored,
}

/// A server frame this client cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("fragmented WebSocket message")]
    Fragmented,
    #[error("masked WebSocket frame from the server")]
    Masked,
    #[error("WebSocket frame of {0} bytes is over the limit")]
    TooLong(u64),
    #[error("unknown WebSocket opcode {0}")]
    Opcode(u8),
}

const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The upgrade request for `ws://{host}/` (the key is fixed: the answer's accept value
/// is not checked, only its `101` status).
pub fn upgrade_request(host: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Looks for the end of the server's upgrade answer in `buf`: `None` until it is
/// complete, then `Ok(header length)` for a `101`, `Err(status line)` otherwise.
pub fn upgrade_answer(buf: &[u8]) -> Option<Result<usize, String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status = buf[..end].split(|b| *b == b'\r').next().unwrap_or_default();
    let ok = status.split(|b| *b == b' ').nth(1) == Some(b"101");
    Some(if ok { Ok(end) } else { Err(String::from_utf8_lossy(status).into_owned()) })
}

/// Appends one masked frame with `opcode` and `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Appends one masked binary frame.
pub fn encode_binary(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    encode(out, BINARY, payload, mask);
}

/// Appends the pong answering a ping.
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    encode(out, PONG, payload, mask);
}

/// Reads the next whole server frame from `buf`: `Ok(None)` if more bytes are needed,
/// else the frame and the bytes it took.
pub fn next(buf: &[u8], max_len: usize) -> Result<Option<(WsIn<'_>, usize)>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b1 & 0x80 != 0 {
        return Err(WsError::Masked);
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > max_len as u64 {
        return Err(WsError::TooLong(len));
    }
    let Some(payload) = buf.get(pos..pos + len as usize) else { return Ok(None) };
    pos += len as usize;
    if !fin || opcode == 0 {
        return Err(WsError::Fragmented);
    }
    let item = match opcode {
        BINARY => WsIn::Binary(payload),
        CLOSE => WsIn::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
        PING => WsIn::Ping(payload),
        PONG | 0x1 => WsIn::Ignored,
        op => return Err(WsError::Opcode(op)),
    };
    Ok(Some((item, pos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reads_server_frames_whole_or_not_at_all() {
        let big = vec![7u8; 300];
        let mut buf = server(BINARY, b"abc");
        buf.extend(server(BINARY, &big));
        buf.extend(server(PING, b"p"));
        buf.extend(server(CLOSE, &1000u16.to_be_bytes()));
        let (a, n1) = next(&buf, 1 << 20).unwrap().unwrap();
        assert_eq!((a, n1), (WsIn::Binary(b"abc"), 5));
        let (b, n2) = next(&buf[n1..], 1 << 20).unwrap().unwrap();
        assert_eq!((b, n2), (WsIn::Binary(&big[..]), 304));
        let (c, n3) = next(&buf[n1 + n2..], 1 << 20).unwrap().unwrap();
        assert_eq!(c, WsIn::Ping(b"p"));
        let (d, _) = next(&buf[n1 + n2 + n3..], 1 << 20).unwrap().unwrap();
        assert_eq!(d, WsIn::Close(Some(1000)));
        for cut in 0..n1 + n2 {
            if cut != n1 {
                let r = next(&buf[..cut], 1 << 20).unwrap();
                assert!(r.is_none() || cut > n1, "cut {cut}");
            }
        }
        assert_eq!(next(&buf[n1..], 100), Err(WsError::TooLong(300)));
        assert_eq!(next(&[0x02, 0], 10), Err(WsError::Fragmented));
        assert_eq!(next(&[0x82, 0x80, 0, 0, 0, 0], 10), Err(WsError::Masked));
    }

    #[test]
    fn masks_what_it_sends() {
        let mut out = Vec::new();
        encode_binary(&mut out, b"hello", [1, 2, 3, 4]);
        assert_eq!(&out[..6], &[0x82, 0x85, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = out[6..].iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]).collect();
        assert_eq!(unmasked, b"hello");
        let mut long = Vec::new();
        encode_binary(&mut long, &[0; 200], [0; 4]);
        assert_eq!(&long[..4], &[0x82, 0x80 | 126, 0, 200]);
    }

    #[test]
    fn upgrade_answers() {
        assert_eq!(upgrade_answer(b"HTTP/1.1 101 Switching"), None);
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x82\x00";
        assert_eq!(upgrade_answer(ok), Some(Ok(ok.len() - 2)));
        let bad = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert_eq!(upgrade_answer(bad), Some(Err("HTTP/1.1 400 Bad Request".into())));
        assert!(String::from_utf8(upgrade_request("127.0.0.1:9")).unwrap().starts_with("GET / HTTP/1.1\r\n"));
    }
}
