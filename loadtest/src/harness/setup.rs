//! Preparing the system under test: importing the test users over Tern's HTTP API
//! (`importUser`, at most 100 per call) and minting their signatures.

use serde_json::{json, Value};

use crate::harness::config::TargetSpec;
use crate::harness::net::{post_json, HttpError};

/// Users per importUser call (the API's default `max_batch`).
const IMPORT_BATCH: u32 = 100;
/// Lifetime of the signatures minted for a run: longer than any bounded run.
const SIGN_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("importUser refused: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// A signature for `user` valid for a day.
pub fn user_sign(t: &TargetSpec, user: &str) -> String {
    let expiry = crate::harness::schedule::wall_ms() / 1000 + SIGN_TTL_SECS;
    tern_schema::sig::sign(t.secret.as_bytes(), t.app_id, user, expiry)
}

/// Imports users `first..end` (ids from [`TargetSpec::user_id`]); `progress` is told
/// how many are done after each call.
pub async fn import_users(
    t: &TargetSpec,
    first: u32,
    end: u32,
    mut progress: impl FnMut(u32),
) -> Result<(), SetupError> {
    let expiry = crate::harness::schedule::wall_ms() / 1000 + SIGN_TTL_SECS;
    let admin_sign = tern_schema::sig::sign_admin(t.secret.as_bytes(), t.app_id, &t.admin, expiry);
    let query = format!("appId={}&identifier={}&userSign={}", t.app_id, t.admin, admin_sign);
    let mut lo = first;
    while lo < end {
        let hi = (lo + IMPORT_BATCH).min(end);
        let data: Vec<Value> = (lo..hi).map(|i| json!({ "userId": t.user_id(i) })).collect();
        let body = json!({ "userData": data }).to_string();
        let (status, text) = post_json(&t.http, &format!("/v1/user/importUser?{query}"), &body).await?;
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = status == 200
            && parsed["code"] == 200
            && parsed["data"]["successId"].as_array().is_some_and(|a| a.len() == (hi - lo) as usize);
        if !ok {
            return Err(SetupError::Refused { status, body: text.chars().take(500).collect() });
        }
        progress(hi - first);
        lo = hi;
    }
    Ok(())
}
