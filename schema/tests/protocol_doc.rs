//! PROTOCOL.md's worked example must stay true: the hex bytes it prints for a Ping are
//! what the reference encoder produces and what the decoder reads back. (The signature
//! test vector is checked beside the signer, in `sig.rs`.)

use tern_schema::client::Body;
use tern_schema::{encode, frame};

/// The hex of the block after the `<!-- ping-hex -->` marker.
fn documented_ping() -> Vec<u8> {
    let doc = include_str!("../PROTOCOL.md");
    let at = doc.find("<!-- ping-hex -->").expect("PROTOCOL.md has the <!-- ping-hex --> example");
    let block = doc[at..].split("```").nth(1).expect("a fenced block follows the marker");
    block
        .split_whitespace()
        .filter(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

#[test]
fn the_documented_ping_is_what_the_encoder_writes() {
    let bytes = encode::ping(7, 42);
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(documented_ping(), bytes, "PROTOCOL.md §2 example is stale; the encoder writes {}", hex.join(" "));
}

#[test]
fn the_documented_ping_decodes() {
    let bytes = documented_ping();
    let f = frame::parse_client_framed(&bytes, 1 << 16).expect("the example is a valid frame");
    assert_eq!(f.request_id(), 7);
    assert_eq!(f.body_type(), Body::Ping);
    assert_eq!(f.body_as_ping().unwrap().client_time_ms(), 42);
    // The header: payload length little-endian in bytes 0-2, version 1 in byte 3.
    assert_eq!(usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16, bytes.len() - 4);
    assert_eq!(bytes[3], 1);
}
