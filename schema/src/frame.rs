//! The frame header shared by the client protocol and the link, and sans-IO frame
//! splitting: feed it the bytes you have, it tells you whether a whole frame is there.
//!
//! Layout (PROTOCOL.md §Framing): one little-endian `u32` word `W`; `W >> 24` is the
//! protocol version, `W & 0x00FF_FFFF` the payload length in bytes; then the payload, one
//! FlatBuffers root. A payload is never empty and never exceeds the receiver's limit.
//! This module must never allocate per frame or panic on any input.

use flatbuffers::{InvalidFlatbuffer, VerifierOptions};

use crate::{client, link};

/// Bytes in the fixed frame header.
pub const HEADER_LEN: usize = 4;
/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest payload the 24-bit length field can express.
pub const MAX_PAYLOAD_LEN: usize = 0x00FF_FFFF;
/// Smallest well-formed FlatBuffers root (root offset + vtable-less table is larger
/// still; 8 keeps obviously bogus 1-byte payloads out before the verifier runs).
pub const MIN_PAYLOAD_LEN: usize = 8;

/// Why a byte sequence is not an acceptable frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported protocol version {0} (this server speaks {PROTOCOL_VERSION})")]
    BadVersion(u8),
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame payload of {0} bytes is too short to be a frame")]
    TooShort(usize),
    #[error("frame payload is not a valid FlatBuffers frame: {0}")]
    Malformed(String),
    #[error("frame has no body")]
    NoBody,
}

impl From<InvalidFlatbuffer> for FrameError {
    fn from(e: InvalidFlatbuffer) -> Self {
        FrameError::Malformed(e.to_string())
    }
}

/// Encodes the header word for a payload of `len` bytes.
///
/// # Panics
/// If `len` exceeds [`MAX_PAYLOAD_LEN`]: encoders check limits before building frames.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    assert!(len <= MAX_PAYLOAD_LEN, "frame payload too large for the header");
    let word = (u32::from(PROTOCOL_VERSION) << 24) | len as u32;
    word.to_le_bytes()
}

/// Reads a header and validates version and length against `max_payload`.
pub fn parse_header(h: [u8; HEADER_LEN], max_payload: usize) -> Result<usize, FrameError> {
    let word = u32::from_le_bytes(h);
    let version = (word >> 24) as u8;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    let len = (word & 0x00FF_FFFF) as usize;
    if len > max_payload {
        return Err(FrameError::TooLarge { len, max: max_payload });
    }
    if len < MIN_PAYLOAD_LEN {
        return Err(FrameError::TooShort(len));
    }
    Ok(len)
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some(total))` when
/// `buf[..total]` is a whole frame (header included; the payload is
/// `buf[HEADER_LEN..total]`), or the header error.
pub fn split_frame(buf: &[u8], max_payload: usize) -> Result<Option<usize>, FrameError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = parse_header(*h, max_payload)?;
    let total = HEADER_LEN + len;
    Ok((buf.len() >= total).then_some(total))
}

/// Verifier limits for client frames: generous for real frames, tight enough that a
/// hostile payload cannot make verification expensive.
fn client_verifier() -> VerifierOptions {
    VerifierOptions {
        max_depth: 16,
        max_tables: 10_000,
        max_apparent_size: 1 << 24,
        ignore_missing_null_terminator: false,
    }
}

/// Verifies and opens a client frame payload (header already stripped).
pub fn parse_client(payload: &[u8]) -> Result<client::Frame<'_>, FrameError> {
    if payload.len() < MIN_PAYLOAD_LEN {
        return Err(FrameError::TooShort(payload.len()));
    }
    let frame = flatbuffers::root_with_opts::<client::Frame>(&client_verifier(), payload)?;
    if frame.body_type() == client::Body::NONE {
        return Err(FrameError::NoBody);
    }
    Ok(frame)
}

/// Verifies and opens a whole client frame (header included), as carried on the link.
pub fn parse_client_framed(bytes: &[u8], max_payload: usize) -> Result<client::Frame<'_>, FrameError> {
    match split_frame(bytes, max_payload)? {
        Some(total) if total == bytes.len() => parse_client(&bytes[HEADER_LEN..]),
        _ => Err(FrameError::Malformed("length does not match the frame".into())),
    }
}

/// Verifies and opens a link frame payload (header already stripped).
pub fn parse_link(payload: &[u8]) -> Result<link::LinkFrame<'_>, FrameError> {
    if payload.len() < MIN_PAYLOAD_LEN {
        return Err(FrameError::TooShort(payload.len()));
    }
    let opts = VerifierOptions {
        max_depth: 16,
        max_tables: 1_000_000,
        max_apparent_size: 1 << 26,
        ignore_missing_null_terminator: false,
    };
    let frame = flatbuffers::root_with_opts::<link::LinkFrame>(&opts, payload)?;
    if frame.body_type() == link::LinkBody::NONE {
        return Err(FrameError::NoBody);
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    const MAX: usize = 64 * 1024;

    fn check_split(bytes: &[u8], expect: Result<Option<usize>, FrameError>) {
        assert_eq!(split_frame(bytes, MAX), expect, "input {bytes:?}");
    }

    #[test]
    fn header_roundtrip() {
        for len in [8usize, 100, 65_535, MAX_PAYLOAD_LEN] {
            assert_eq!(parse_header(header(len), MAX_PAYLOAD_LEN), Ok(len));
        }
        assert_eq!(header(10), [10, 0, 0, 1]);
    }

    #[test]
    fn split_needs_more_bytes() {
        check_split(&[], Ok(None));
        check_split(&[12, 0], Ok(None));
        check_split(&[12, 0, 0, 1, 1, 2, 3], Ok(None));
    }

    #[test]
    fn split_rejects_bad_headers() {
        check_split(&[12, 0, 0, 2], Err(FrameError::BadVersion(2)));
        check_split(&[12, 0, 0, 0], Err(FrameError::BadVersion(0)));
        check_split(&[1, 0, 1, 1], Err(FrameError::TooLarge { len: 65_537, max: MAX }));
        check_split(&[0xff, 0xff, 0xff, 1], Err(FrameError::TooLarge { len: MAX_PAYLOAD_LEN, max: MAX }));
        check_split(&[0, 0, 0, 1], Err(FrameError::TooShort(0)));
        check_split(&[7, 0, 0, 1], Err(FrameError::TooShort(7)));
    }

    #[test]
    fn split_finds_whole_frame_and_leaves_rest() {
        let f = encode::ping(7, 42);
        let mut buf = f.clone();
        buf.extend_from_slice(&[1, 2]);
        assert_eq!(split_frame(&buf, MAX), Ok(Some(f.len())));
        let frame = parse_client(&buf[HEADER_LEN..f.len()]).unwrap();
        assert_eq!(frame.request_id(), 7);
        assert_eq!(frame.body_as_ping().unwrap().client_time_ms(), 42);
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[0; 8],
            &[0xff; 8],
            &[8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f],
            &[4, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            b"GET / HTTP/1.1\r\n",
        ];
        for c in cases {
            assert!(parse_client(c).is_err(), "accepted garbage {c:?}");
            assert!(parse_link(c).is_err(), "link accepted garbage {c:?}");
        }
        assert_eq!(parse_client(&[1, 2, 3]).unwrap_err(), FrameError::TooShort(3));
    }

    #[test]
    fn frame_without_body_is_rejected() {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let root = client::Frame::create(&mut fbb, &client::FrameArgs { request_id: 1, ..Default::default() });
        fbb.finish(root, None);
        assert_eq!(parse_client(fbb.finished_data()).unwrap_err(), FrameError::NoBody);
    }

    #[test]
    fn framed_parse_checks_length() {
        let f = encode::ping(1, 2);
        assert!(parse_client_framed(&f, MAX).is_ok());
        assert!(parse_client_framed(&f[..f.len() - 1], MAX).is_err());
        let mut longer = f.clone();
        longer.push(0);
        assert!(parse_client_framed(&longer, MAX).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = split_frame(&bytes, MAX);
            let _ = parse_client(&bytes);
            let _ = parse_link(&bytes);
            let _ = parse_client_framed(&bytes, MAX);
        }

        #[test]
        fn truncated_valid_frames_never_panic(cut in 0usize..200) {
            let f = encode::login(3, 10_000, "alice", "sig", crate::client::ClientType::Ios, "phone-1", "1.0");
            let cut = cut.min(f.len());
            let _ = split_frame(&f[..cut], MAX);
            if cut > HEADER_LEN { let _ = parse_client(&f[HEADER_LEN..cut]); }
        }
    }
}
