//! The original system's signature format ("UserSig", TLS-style), accepted beside
//! Tern's own (`crate::sig`) so a business server that signs with one of the UserSig
//! libraries works unchanged.
//!
//! A UserSig is a JSON object `{"TLS.identifier", "TLS.appId", "TLS.expireTime",
//! "TLS.expire", "TLS.sig"}` (the widely used libraries write `TLS.sdkappid` and
//! `TLS.time` for the second and third; both spellings are read), zlib-deflated, then
//! base64 with `+`→`*`, `/`→`-`, `=`→`_`. `TLS.sig` is the standard base64 of
//! HMAC-SHA256(app secret, `"TLS.identifier:{id}\nTLS.appId:{app}\nTLS.expireTime:{issued}\nTLS.expire:{ttl}\n"`)
//! (with the libraries' names in the libraries' spelling; an optional `TLS.userbuf` is
//! appended as `TLS.userbuf:{it}\n`). It is valid while `issued + ttl` (seconds) is
//! in the future.
//!
//! This module must never inflate more than [`MAX_JSON_BYTES`] (a zlib bomb in a query
//! parameter must cost nothing) and never compare MACs itself (`hmac` does it in
//! constant time).

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::sig::SigError;

/// Longest UserSig accepted, in characters (real ones are 150–400).
pub const MAX_ENCODED_LEN: usize = 2048;
/// Most bytes the inflated JSON may have.
pub const MAX_JSON_BYTES: usize = 4096;

/// The two spellings of the fields that differ: (app id key, issued-at key).
const SPELLINGS: [(&str, &str); 2] = [("TLS.appId", "TLS.expireTime"), ("TLS.sdkappid", "TLS.time")];

/// The original's URL-safe base64 variant to standard base64.
fn unescape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

/// A number field written as a number or a numeric string.
fn number(doc: &Value, key: &str) -> Option<u64> {
    match doc.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks a UserSig for `user_id` of `app_id` at `now_unix_secs`; returns its expiry.
pub fn verify(secret: &[u8], app_id: u32, user_id: &str, signature: &str, now_unix_secs: u64) -> Result<u64, SigError> {
    if signature.is_empty() {
        return Err(SigError::Missing);
    }
    if signature.len() > MAX_ENCODED_LEN {
        return Err(SigError::Malformed);
    }
    let zipped = STANDARD.decode(unescape(signature)).map_err(|_| SigError::Malformed)?;
    let mut json = Vec::with_capacity(256);
    flate2::read::ZlibDecoder::new(zipped.as_slice())
        .take(MAX_JSON_BYTES as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| SigError::Malformed)?;
    if json.len() > MAX_JSON_BYTES {
        return Err(SigError::Malformed);
    }
    let doc: Value = serde_json::from_slice(&json).map_err(|_| SigError::Malformed)?;
    let (app_key, time_key) = SPELLINGS.into_iter().find(|(a, _)| doc.get(*a).is_some()).ok_or(SigError::Malformed)?;
    let identifier = doc.get("TLS.identifier").and_then(Value::as_str).ok_or(SigError::Malformed)?;
    let signed_app = number(&doc, app_key).ok_or(SigError::Malformed)?;
    let issued = number(&doc, time_key).ok_or(SigError::Malformed)?;
    let ttl = number(&doc, "TLS.expire").ok_or(SigError::Malformed)?;
    let tag = doc.get("TLS.sig").and_then(Value::as_str).ok_or(SigError::Malformed)?;
    let tag = STANDARD.decode(tag).map_err(|_| SigError::Malformed)?;
    let mut content =
        format!("TLS.identifier:{identifier}\n{app_key}:{signed_app}\n{time_key}:{issued}\nTLS.expire:{ttl}\n");
    if let Some(buf) = doc.get("TLS.userbuf").and_then(Value::as_str) {
        content.push_str(&format!("TLS.userbuf:{buf}\n"));
    }
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(content.as_bytes());
    mac.verify_slice(&tag).map_err(|_| SigError::Mismatch)?;
    // Bound to this app and identity only after the MAC says the fields are the signer's.
    if identifier != user_id || signed_app != u64::from(app_id) {
        return Err(SigError::Mismatch);
    }
    let expiry = issued.saturating_add(ttl);
    if expiry <= now_unix_secs {
        return Err(SigError::Expired);
    }
    Ok(expiry)
}

/// Mints a UserSig (the original's spelling), for tests and `tern sig --usersig`.
pub fn sign(secret: &[u8], app_id: u32, user_id: &str, issued_unix_secs: u64, ttl_secs: u64) -> String {
    use std::io::Write;
    let content = format!(
        "TLS.identifier:{user_id}\nTLS.appId:{app_id}\nTLS.expireTime:{issued_unix_secs}\nTLS.expire:{ttl_secs}\n"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(content.as_bytes());
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": user_id,
        "TLS.appId": app_id,
        "TLS.expireTime": issued_unix_secs,
        "TLS.expire": ttl_secs,
        "TLS.sig": STANDARD.encode(mac.finalize().into_bytes()),
    });
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(doc.to_string().as_bytes());
    let zipped = z.finish().unwrap_or_default();
    STANDARD
        .encode(zipped)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";

    #[test]
    fn roundtrip_and_rules() {
        let s = sign(SECRET, 1400, "alice", 1_000, 500);
        assert_eq!(verify(SECRET, 1400, "alice", &s, 1_499), Ok(1_500));
        assert_eq!(verify(SECRET, 1400, "alice", &s, 1_500), Err(SigError::Expired));
        assert_eq!(verify(SECRET, 1400, "bob", &s, 0), Err(SigError::Mismatch));
        assert_eq!(verify(SECRET, 1401, "alice", &s, 0), Err(SigError::Mismatch));
        assert_eq!(verify(b"other", 1400, "alice", &s, 0), Err(SigError::Mismatch));
        assert_eq!(verify(SECRET, 1400, "alice", "!!!", 0), Err(SigError::Malformed));
        assert_eq!(verify(SECRET, 1400, "alice", &"A".repeat(MAX_ENCODED_LEN + 1), 0), Err(SigError::Malformed));
    }

    /// Made by `scripts/original-client.py usersig s3cret 1400 alice 1700000000
    /// 2000000000 [tencent]`: Python's zlib, hmac and base64, independent of this code.
    const PYTHON_VECTORS: [&str; 2] = [
        "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwok5mcmpUInEggLPFCUrQxMDA4hAakVBZlFqSGZuKlDU3AAKkOWUrIwMUMWLM9OBxnqFmxdVGRYbaYf7VBZaJloYlRdYmOtrV5kapzuF6qe5W3i4W4YHmxYF*mTbKtUCAOl5MBo_",
        "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwok5mcmpUInilOzEgoLMFCUrQxMDA4hYSWZuKpBvbgAFENHUioLMIqC4kQGqeHFmOsjMkpLcrNCiUBMPf69s36yATP-w3OxSb8ewwOz0orAox0qDlCpzI*OiYNd0W6VaAIggMQ8_",
    ];

    #[test]
    fn an_independent_implementation_agrees() {
        for v in PYTHON_VECTORS {
            assert_eq!(verify(SECRET, 1400, "alice", v, 1_800_000_000), Ok(3_700_000_000), "{v}");
            assert_eq!(verify(SECRET, 1400, "bob", v, 1_800_000_000), Err(SigError::Mismatch));
            assert_eq!(verify(SECRET, 1400, "alice", v, 3_700_000_000), Err(SigError::Expired));
        }
        // And what this code mints, the independent one's parser would read: same JSON
        // keys, same content string (checked by round-tripping through verify above).
        assert!(sign(SECRET, 1400, "alice", 1_700_000_000, 2_000_000_000).len() > 100);
    }

    #[test]
    fn a_zlib_bomb_is_refused_cheaply() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b' '; 1 << 20]).unwrap();
        let s: String = STANDARD.encode(z.finish().unwrap()).replace('+', "*").replace('/', "-").replace('=', "_");
        assert!(s.len() < MAX_ENCODED_LEN, "{}", s.len());
        assert_eq!(verify(SECRET, 1, "a", &s, 0), Err(SigError::Malformed));
    }
}
