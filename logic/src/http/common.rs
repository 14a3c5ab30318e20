//! Helpers every endpoint module shares: reading user ids (and the acting user, from
//! `fromId` or the original system's `operater`), page limits, 64-bit ids written as
//! strings or numbers, the 1-or-2 choice fields, and the per-item answer of batch calls.
//!
//! This module must never hold business rules: it only turns request fields into typed
//! values and errors that name the field.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tern_storage::UserId;
use utoipa::ToSchema;

use super::error::{ApiError, ApiOk};
use super::extract::Common;
use super::ApiState;

/// What a handler answers.
pub type ApiResult<T> = Result<ApiOk<T>, ApiError>;

/// A user id field, validated; errors name `field`.
pub fn user_id(raw: String, field: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(|e| ApiError::bad(field, e))
}

/// A user id that names the user the call is about, recorded on the request span.
pub fn subject(raw: String, field: &str) -> Result<UserId, ApiError> {
    let id = user_id(raw, field)?;
    tracing::Span::current().record("user_id", id.as_str());
    Ok(id)
}

/// The acting user: `fromId`, or else the original system's `operater` (a business
/// server written for it names the acting user there). Neither is `fromId: missing`.
pub fn acting_user(from_id: Option<String>, common: &Common) -> Result<UserId, ApiError> {
    match (from_id, &common.operater) {
        (Some(id), _) => subject(id, "fromId"),
        (None, Some(op)) => subject(op.clone(), "operater"),
        (None, None) => Err(ApiError::bad("fromId", "missing (or give operater)")),
    }
}

/// `limit` / `maxLimit`: absent or 0 is the default page; larger values are cut to
/// `cap` (the service may cut further).
pub fn page_limit(n: Option<u64>, cap: usize) -> usize {
    match n {
        None | Some(0) => crate::config::DEFAULT_PAGE_LIMIT,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(cap),
    }
}

/// A 1-or-2 choice field (`addType`, `deleteType`, `checkType`): is it 2?
pub fn two_way(v: Option<u8>, field: &str, default_two_way: bool) -> Result<bool, ApiError> {
    match v {
        None => Ok(default_two_way),
        Some(1) => Ok(false),
        Some(2) => Ok(true),
        Some(n) => Err(ApiError::bad(field, format!("must be 1 (one-way) or 2 (two-way), not {n}"))),
    }
}

/// A non-zero 64-bit id given as a decimal string or a JSON number; `what` names it in
/// errors ("message key", "request id").
pub fn parse_id(v: &Value, what: &str) -> Result<u64, String> {
    let id = match v {
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    id.filter(|k| *k != 0).ok_or_else(|| format!("{v} is not a {what} (a decimal string)"))
}

/// A message key field (`messageKey`): a decimal string or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageKey(pub u64);

impl<'de> Deserialize<'de> for MessageKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_id(&Value::deserialize(d)?, "message key").map(MessageKey).map_err(serde::de::Error::custom)
    }
}

/// A friend request id field (`id`): a decimal string or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_id(&Value::deserialize(d)?, "request id").map(RequestId).map_err(serde::de::Error::custom)
    }
}

/// A per-item failure of a batch call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    /// The item's user id as given (empty if it had none).
    pub user_id: String,
    /// The error code (see the error table).
    pub code: u32,
    /// What went wrong; for 90001 it names the field, e.g. `userData[3].nickName`.
    pub msg: String,
}

impl ItemError {
    pub fn new(user_id: impl Into<String>, e: &ApiError) -> Self {
        Self { user_id: user_id.into(), code: e.code(), msg: e.to_string() }
    }
}

/// Answer of batch writes: which items succeeded and why the others failed.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// Ids of the items that succeeded, in request order.
    pub success_id: Vec<String>,
    /// The items that failed and why, in request order.
    pub error_id: Vec<ItemError>,
}

/// Per-item errors of a batch, kept with their index so the answer lists them in
/// request order whatever stage found them.
#[derive(Default)]
pub struct ItemErrors(Vec<(usize, ItemError)>);

impl ItemErrors {
    pub fn push(&mut self, index: usize, e: ItemError) {
        self.0.push((index, e));
    }

    pub fn into_sorted(mut self) -> Vec<ItemError> {
        self.0.sort_by_key(|(i, _)| *i);
        self.0.into_iter().map(|(_, e)| e).collect()
    }
}

/// Refuses a batch over `http.max_batch` before any item is looked at (20000).
pub fn check_batch(state: &ApiState, len: usize, field: &str) -> Result<(), ApiError> {
    let max = state.logic.config.http.max_batch;
    if len > max {
        return Err(ApiError::BatchTooLarge { field: field.into(), len, max });
    }
    Ok(())
}

/// Validates a list of user ids within the batch limit: the valid ones with their
/// index, and per-item errors (90001 naming `field[i]`).
pub fn parse_ids(
    state: &ApiState,
    raw: &[String],
    field: &str,
) -> Result<(Vec<(usize, UserId)>, ItemErrors), ApiError> {
    check_batch(state, raw.len(), field)?;
    let mut ok = Vec::with_capacity(raw.len());
    let mut errors = ItemErrors::default();
    for (i, s) in raw.iter().enumerate() {
        match UserId::new(s.as_str()) {
            Ok(id) => ok.push((i, id)),
            Err(e) => errors.push(i, ItemError::new(s.as_str(), &ApiError::bad(format!("{field}[{i}]"), e))),
        }
    }
    Ok((ok, errors))
}

// ---------------------------------------------------------------- shapes several modules share

/// Body of the sync calls (friend list, blacklist).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncReq {
    /// Whose log.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// Answer changes with a sequence above this (0 or absent: from the start).
    pub last_sequence: Option<u64>,
    /// Most changes to answer: default 100, capped at 1000; 0 means the default.
    pub max_limit: Option<u64>,
}

/// A body naming two users.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromToReq {
    /// The acting user.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The other user.
    pub to_id: String,
}

/// A body naming one user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromIdReq {
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
}

/// Answer of /friendship/update and /blackList/add and /blackList/delete.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeResp {
    /// The sequence of the entry now holding the state (in `fromId`'s friendship or
    /// blacklist log).
    pub sequence: u64,
    /// false: the state was already as asked; nothing was written.
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
    use serde_json::json;

    #[test]
    fn choices_and_limits() {
        assert_eq!(two_way(None, "addType", true), Ok(true));
        assert_eq!(two_way(Some(1), "addType", true), Ok(false));
        assert!(two_way(Some(3), "checkType", false).unwrap_err().to_string().starts_with("checkType: must be 1"));
        assert_eq!(page_limit(None, MAX_PAGE_LIMIT), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(Some(0), MAX_PAGE_LIMIT), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(Some(u64::MAX), MAX_PAGE_LIMIT), MAX_PAGE_LIMIT);
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(parse_id(&json!("18446744073709551615"), "k"), Ok(u64::MAX));
        assert_eq!(parse_id(&json!(42), "k"), Ok(42));
        for bad in [json!("x"), json!(-1), json!(1.5), json!(0), json!(null), json!([1])] {
            assert!(parse_id(&bad, "k").unwrap_err().ends_with("is not a k (a decimal string)"), "{bad}");
        }
    }

    #[test]
    fn the_acting_user_falls_back_to_operater() {
        let op = Common { operater: Some("u9".into()), ..Common::default() };
        assert_eq!(acting_user(Some("u1".into()), &op).unwrap().as_str(), "u1");
        assert_eq!(acting_user(None, &op).unwrap().as_str(), "u9");
        let e = acting_user(None, &Common::default()).unwrap_err().to_string();
        assert!(e.starts_with("fromId: missing"), "{e}");
    }
}
