//! The original system's user passwords, kept only as salted Argon2id hashes.
//!
//! Tern authenticates clients by signature, never by password; the field exists so that a
//! business server migrating from the original system can keep sending `password` in
//! importUser / modifyUserInfo and find it stored safely (a later version may verify it).
//! Hashing costs tens of milliseconds of CPU on purpose, so callers run it on the blocking
//! pool, once per request, never under a user lock.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Longest password accepted, in characters (the HTTP layer refuses longer ones with 90001).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The PHC string (`$argon2id$v=19$m=…`) of `password` with a fresh random salt, using the
/// argon2 crate's defaults (Argon2id, 19 MiB, 2 passes: OWASP's recommendation). An empty
/// password yields an empty string: "no password stored".
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    if password.is_empty() {
        return Ok(String::new());
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Hashes every password of a batch on the blocking pool (one job for the whole batch, so a
/// 100-user import takes one pool thread, not a hundred).
pub async fn hash_all(passwords: Vec<Option<String>>) -> Result<Vec<Option<String>>, String> {
    if passwords.iter().all(Option::is_none) {
        return Ok(passwords);
    }
    tokio::task::spawn_blocking(move || {
        passwords
            .into_iter()
            .map(|p| p.map(|p| hash(&p).map_err(|e| format!("hashing a password: {e}"))).transpose())
            .collect()
    })
    .await
    .map_err(|e| format!("the password hashing task failed: {e}"))?
}

/// Whether `password` matches the stored PHC string `stored` (false for an empty or
/// malformed `stored`).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_salted_phc_and_verifies_only_its_password() {
        let a = hash("s3cret").unwrap();
        let b = hash("s3cret").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("s3cret"));
        assert!(verify("s3cret", &a) && verify("s3cret", &b));
        assert!(!verify("s3cret!", &a));
        assert!(!verify("s3cret", ""));
        assert_eq!(hash("").unwrap(), "");
    }

    #[tokio::test]
    async fn a_batch_hashes_what_is_given() {
        let out = hash_all(vec![None, Some("x".into()), Some(String::new())]).await.unwrap();
        assert_eq!(out[0], None);
        assert!(verify("x", out[1].as_deref().unwrap()));
        assert_eq!(out[2].as_deref(), Some(""));
    }
}
