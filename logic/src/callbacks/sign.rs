//! The signature on every callback request, so the business server can tell Tern's
//! requests from anyone else's and refuse replays.
//!
//! Scheme (README "Callbacks"): headers `X-Tern-Timestamp: <Unix seconds>` and
//! `X-Tern-Signature: <lowercase hex of HMAC-SHA256(app secret, timestamp + "." + body)>`,
//! where `timestamp` is the header's decimal text and `body` the exact request body bytes.
//! The business server recomputes the MAC over what it received, compares in constant
//! time, and refuses timestamps more than a few minutes from its clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the signing time (Unix seconds, decimal).
pub const TIMESTAMP_HEADER: &str = "x-tern-timestamp";
/// Header carrying the signature (64 lowercase hex digits).
pub const SIGNATURE_HEADER: &str = "x-tern-signature";

/// The signature of `body` sent at `timestamp` (Unix seconds) with `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// Whether `signature` is `body`'s at `timestamp` (constant-time in the MAC). For tests
/// and for business servers written in Rust.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], signature: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    match unhex(signature) {
        Some(raw) => mac.verify_slice(&raw).is_ok(),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented test vector (README "Callbacks"), computed independently with
    /// Python's `hmac.new(secret, b"1767225600." + body, hashlib.sha256).hexdigest()`.
    #[test]
    fn test_vector() {
        let body = br#"{"command":"message.send.before"}"#;
        let sig = sign(b"tern-callback-test-secret", 1_767_225_600, body);
        assert_eq!(sig, "97038cbdcd163160c55dba7c5d082803233b3f1bdcf78010bac44f35b0c3cfd8");
        assert!(verify(b"tern-callback-test-secret", 1_767_225_600, body, &sig));
    }

    #[test]
    fn any_change_breaks_it() {
        let sig = sign(b"secret-0123456789", 100, b"{}");
        assert!(!verify(b"secret-0123456789", 101, b"{}", &sig));
        assert!(!verify(b"secret-0123456789", 100, b"{ }", &sig));
        assert!(!verify(b"other-secret-0123", 100, b"{}", &sig));
        assert!(!verify(b"secret-0123456789", 100, b"{}", &sig[1..]));
        assert!(!verify(b"secret-0123456789", 100, b"{}", "zz"));
    }
}
