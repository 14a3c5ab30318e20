//! User signatures (`userSign`): proof from a business server that a user of an app may
//! log in until an expiry time.
//!
//! Format (PROTOCOL.md §Signatures): `base64url_nopad(0x01 ‖ expiry_unix_secs:u64 BE ‖
//! HMAC-SHA256(app_secret, "tern-sig-v1\n{app_id}\n{user_id}\n{expiry}"))`, 55 characters.
//! Verification is constant-time in the MAC.
//!
//! Every signature has a [`Purpose`]. A user's login signature (version byte 1, the
//! format above) never authorizes an admin call: admin signatures carry version byte 2
//! and a MAC over `"tern-admin-sig-v1\n..."`, so no login signature, whoever it was minted
//! for, verifies as an admin one, nor the reverse ([`SigError::WrongPurpose`]).
//!
//! Signatures in the original system's format (the TLS-style UserSig, [`crate::usersig`])
//! are accepted beside Tern's for both purposes with the same expiry rule: that format
//! has no purpose field, so for it the admin rule rests on the caller's check that the
//! identifier is one of the app's admins, which are never users.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
/// Version byte of admin signatures.
const ADMIN_VERSION: u8 = 2;
const MAC_LEN: usize = 32;
const RAW_LEN: usize = 1 + 8 + MAC_LEN;
/// Length of an encoded signature in characters.
pub const ENCODED_LEN: usize = 55;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("signature is empty")]
    Missing,
    #[error("signature is not in the expected encoding")]
    Malformed,
    #[error("signature has expired")]
    Expired,
    #[error("signature does not match")]
    Mismatch,
    /// A login signature given for an admin call, or an admin signature for a login.
    #[error("signature is not for this purpose (admin calls need an admin signature: `tern sig --admin`)")]
    WrongPurpose,
}

/// What a signature authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A user's login (long connection, `/v1/user/login`).
    Login,
    /// An app admin's management calls.
    Admin,
}

impl Purpose {
    fn version(self) -> u8 {
        match self {
            Purpose::Login => VERSION,
            Purpose::Admin => ADMIN_VERSION,
        }
    }

    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Login => b"tern-sig-v1\n",
            Purpose::Admin => b"tern-admin-sig-v1\n",
        }
    }
}

impl SigError {
    /// The protocol/API error code for this failure.
    pub fn code(self) -> u32 {
        match self {
            SigError::Missing => crate::codes::SIGN_MISSING,
            SigError::Malformed => crate::codes::SIGN_MALFORMED,
            SigError::Expired => crate::codes::SIGN_EXPIRED,
            SigError::Mismatch | SigError::WrongPurpose => crate::codes::SIGN_WRONG,
        }
    }
}

/// `n` in decimal, written into `buf` (no allocation: a gateway verifies every login).
fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn mac(purpose: Purpose, secret: &[u8], app_id: u32, user_id: &str, expiry: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    let mut digits = [0u8; 20];
    mac.update(purpose.domain());
    mac.update(decimal(u64::from(app_id), &mut digits));
    mac.update(b"\n");
    mac.update(user_id.as_bytes());
    mac.update(b"\n");
    mac.update(decimal(expiry, &mut digits));
    mac
}

/// Mints a login signature for `user_id` of `app_id` valid until `expiry_unix_secs`.
pub fn sign(secret: &[u8], app_id: u32, user_id: &str, expiry_unix_secs: u64) -> String {
    sign_for(Purpose::Login, secret, app_id, user_id, expiry_unix_secs)
}

/// Mints an admin signature for the admin identifier `admin_id` of `app_id`.
pub fn sign_admin(secret: &[u8], app_id: u32, admin_id: &str, expiry_unix_secs: u64) -> String {
    sign_for(Purpose::Admin, secret, app_id, admin_id, expiry_unix_secs)
}

/// Mints a signature for `purpose`.
pub fn sign_for(purpose: Purpose, secret: &[u8], app_id: u32, user_id: &str, expiry_unix_secs: u64) -> String {
    let tag = mac(purpose, secret, app_id, user_id, expiry_unix_secs).finalize().into_bytes();
    let mut raw = [0u8; RAW_LEN];
    raw[0] = purpose.version();
    raw[1..9].copy_from_slice(&expiry_unix_secs.to_be_bytes());
    raw[9..].copy_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Checks a login `signature` (Tern's or the original's UserSig format) for `user_id`
/// of `app_id` at time `now_unix_secs`; returns the expiry on success.
pub fn verify(secret: &[u8], app_id: u32, user_id: &str, signature: &str, now_unix_secs: u64) -> Result<u64, SigError> {
    verify_for(Purpose::Login, secret, app_id, user_id, signature, now_unix_secs)
}

/// Checks `signature` for `purpose`: Tern's format of that purpose, or the original
/// system's UserSig (which has no purpose; see the module doc).
pub fn verify_for(
    purpose: Purpose,
    secret: &[u8],
    app_id: u32,
    user_id: &str,
    signature: &str,
    now_unix_secs: u64,
) -> Result<u64, SigError> {
    if signature.is_empty() {
        return Err(SigError::Missing);
    }
    if signature.len() != ENCODED_LEN {
        // Tern's signatures have one length; a UserSig is far longer (zlib'd JSON).
        return crate::usersig::verify(secret, app_id, user_id, signature, now_unix_secs);
    }
    let mut raw = [0u8; RAW_LEN + 2];
    let n = URL_SAFE_NO_PAD.decode_slice(signature, &mut raw).map_err(|_| SigError::Malformed)?;
    if n != RAW_LEN || (raw[0] != VERSION && raw[0] != ADMIN_VERSION) {
        return Err(SigError::Malformed);
    }
    let expiry = u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes"));
    let given = if raw[0] == ADMIN_VERSION { Purpose::Admin } else { Purpose::Login };
    // Check the MAC before the expiry so an attacker learns nothing from the order.
    mac(given, secret, app_id, user_id, expiry).verify_slice(&raw[9..RAW_LEN]).map_err(|_| SigError::Mismatch)?;
    if given != purpose {
        return Err(SigError::WrongPurpose);
    }
    if expiry <= now_unix_secs {
        return Err(SigError::Expired);
    }
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";

    #[test]
    fn decimal_matches_to_string() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 10_000, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    /// The test vector PROTOCOL.md §3 prints, so a client can check its signer
    /// offline; if this fails, the document is wrong.
    #[test]
    fn documented_test_vector() {
        let s = sign(b"tern-example-secret", 10_000, "alice", 1_900_000_000);
        assert_eq!(s, DOC_VECTOR_SIGN);
        assert_eq!(verify(b"tern-example-secret", 10_000, "alice", &s, 1_899_999_999), Ok(1_900_000_000));
        let doc = include_str!("../PROTOCOL.md");
        assert!(doc.contains(DOC_VECTOR_SIGN), "PROTOCOL.md §3 must print the signature {DOC_VECTOR_SIGN}");
        assert!(doc.contains(DOC_VECTOR_MAC_HEX), "PROTOCOL.md §3 must print the MAC {DOC_VECTOR_MAC_HEX}");
        let raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
        let hex: String = raw[9..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, DOC_VECTOR_MAC_HEX);
    }

    const DOC_VECTOR_SIGN: &str = "AQAAAABxP7MAiFS5NpirI3D0KVlK1DOwsJg-50BNTVCAqgg-jAp8V3A";
    const DOC_VECTOR_MAC_HEX: &str = "8854b93698ab2370f429594ad433b0b0983ee7404d4d5080aa083e8c0a7c5770";

    #[test]
    fn roundtrip() {
        let s = sign(SECRET, 10_000, "alice", 2_000);
        assert_eq!(s.len(), ENCODED_LEN);
        assert_eq!(verify(SECRET, 10_000, "alice", &s, 1_999), Ok(2_000));
    }

    #[test]
    fn expiry_is_enforced() {
        let s = sign(SECRET, 1, "alice", 2_000);
        assert_eq!(verify(SECRET, 1, "alice", &s, 2_000), Err(SigError::Expired));
        assert_eq!(verify(SECRET, 1, "alice", &s, 5_000), Err(SigError::Expired));
    }

    #[test]
    fn every_bound_field_matters() {
        let s = sign(SECRET, 1, "alice", 2_000);
        assert_eq!(verify(b"other", 1, "alice", &s, 0), Err(SigError::Mismatch));
        assert_eq!(verify(SECRET, 2, "alice", &s, 0), Err(SigError::Mismatch));
        assert_eq!(verify(SECRET, 1, "alicf", &s, 0), Err(SigError::Mismatch));
        // Extending the expiry in the token breaks the MAC.
        let forged = {
            let mut raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
            raw[8] ^= 1;
            URL_SAFE_NO_PAD.encode(raw)
        };
        assert_eq!(verify(SECRET, 1, "alice", &forged, 0), Err(SigError::Mismatch));
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(verify(SECRET, 1, "a", "", 0), Err(SigError::Missing));
        assert_eq!(verify(SECRET, 1, "a", "short", 0), Err(SigError::Malformed));
        let bad_chars = "!".repeat(ENCODED_LEN);
        assert_eq!(verify(SECRET, 1, "a", &bad_chars, 0), Err(SigError::Malformed));
        let mut raw = [0u8; RAW_LEN];
        raw[0] = 3;
        assert_eq!(verify(SECRET, 1, "a", &URL_SAFE_NO_PAD.encode(raw), 0), Err(SigError::Malformed));
    }

    #[test]
    fn purposes_never_cross() {
        let login = sign(SECRET, 1, "admin", 2_000);
        let admin = sign_admin(SECRET, 1, "admin", 2_000);
        assert_eq!(admin.len(), ENCODED_LEN);
        assert_eq!(verify_for(Purpose::Admin, SECRET, 1, "admin", &admin, 0), Ok(2_000));
        assert_eq!(verify_for(Purpose::Admin, SECRET, 1, "admin", &login, 0), Err(SigError::WrongPurpose));
        assert_eq!(verify_for(Purpose::Login, SECRET, 1, "admin", &admin, 0), Err(SigError::WrongPurpose));
        // The version byte is bound by the MAC: relabelling a login signature fails.
        let mut raw = URL_SAFE_NO_PAD.decode(&login).unwrap();
        raw[0] = ADMIN_VERSION;
        let relabelled = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(verify_for(Purpose::Admin, SECRET, 1, "admin", &relabelled, 0), Err(SigError::Mismatch));
    }

    #[test]
    fn codes_are_documented_ones() {
        assert_eq!(SigError::Expired.code(), 60004);
        assert_eq!(SigError::Mismatch.code(), 60003);
    }
}
