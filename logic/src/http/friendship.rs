//! `/v1/friendship/...`, `/v1/blackList/...` and `/v1/friendshipRequest/...`: the
//! relation calls of the management API. Each handler parses its body, calls
//! [`crate::friends`] and shapes the answer; field names are the original system's
//! camelCase ones (`fromId`, `toItem`, `toIds`, `checkType`, `lastSequence`, ...).
//!
//! Shapes shared by every call: `fromId` is the user whose relations are read or
//! changed (the acting user); a friend request `id` is answered as a decimal string
//! (64 bits, like `messageKey`) and accepted as a string or a number.
//!
//! This module must never hold business rules (who may add whom, limits, what a
//! change writes or notifies): those live in `crate::friends`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use tern_schema::codes;
use tern_storage::{Seq, UserId};
use utoipa::ToSchema;

use super::auth::{AdminCall, AuthQuery};
use super::error::{ApiError, ApiOk, Envelope};
use super::extract::{item_object, Fields, FromBody};
use super::users::{BatchResult, ItemError};
use super::ApiState;
use crate::config::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::friends::{
    self, errors, records, AddFriend, AddOutcome, BlockOutcome, DeleteTarget, Friend, FriendError, Request,
};
use crate::users::BATCH_TOO_LARGE;

type ApiResult<T> = Result<ApiOk<T>, ApiError>;

// ---------------------------------------------------------------- request types

/// The friend of an add (`toItem`). Lengths are in characters.
#[derive(Debug, Clone, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ToItem {
    /// The user to add (must exist and not be deleted).
    pub to_id: String,
    /// `fromId`'s name for the friend, at most 64 characters.
    pub remark: Option<String>,
    /// Where the add came from (e.g. "search", "qr"), at most 32 characters.
    pub add_source: Option<String>,
    /// The greeting shown with a friend request, at most 256 characters.
    pub add_wording: Option<String>,
    /// Business data of the friend entry, at most 4096 characters.
    pub extra: Option<String>,
}

impl FromBody for ToItem {
    const FIELDS: &'static [&'static str] = &["toId", "remark", "addSource", "addWording", "extra"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self {
            to_id: f.req("toId")?,
            remark: f.opt("remark")?,
            add_source: f.opt("addSource")?,
            add_wording: f.opt("addWording")?,
            extra: f.opt("extra")?,
        })
    }
}

/// The friend of an update (`toItem`): only `remark` and `extra` change.
#[derive(Debug, Clone, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UpdateItem {
    /// The friend (must be in `fromId`'s list).
    pub to_id: String,
    /// New remark, at most 64 characters; absent: unchanged.
    pub remark: Option<String>,
    /// New extra, at most 4096 characters; absent: unchanged.
    pub extra: Option<String>,
}

impl FromBody for UpdateItem {
    const FIELDS: &'static [&'static str] = &["toId", "remark", "extra"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { to_id: f.req("toId")?, remark: f.opt("remark")?, extra: f.opt("extra")? })
    }
}

/// Parses the object field `toItem` as `T`, with `toItem.`-prefixed error paths.
fn to_item<T: FromBody>(f: &Fields<'_>) -> Result<T, ApiError> {
    let raw = f.raw("toItem").ok_or_else(|| ApiError::bad("toItem", "missing"))?;
    let item = Fields::new(item_object(raw, "toItem")?, "toItem.");
    item.only(T::FIELDS, false)?;
    T::from_body(&item)
}

/// Body of /friendship/add.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AddFriendReq {
    /// Who adds.
    pub from_id: String,
    pub to_item: ToItem,
    /// 1 one-way (only `fromId` lists `toId`), 2 two-way (both list each other; the
    /// default).
    pub add_type: Option<u8>,
}

impl FromBody for AddFriendReq {
    const FIELDS: &'static [&'static str] = &["fromId", "toItem", "addType"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, to_item: to_item(f)?, add_type: f.opt("addType")? })
    }
}

/// Body of /friendship/update.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UpdateFriendReq {
    /// Whose friend entry.
    pub from_id: String,
    pub to_item: UpdateItem,
}

impl FromBody for UpdateFriendReq {
    const FIELDS: &'static [&'static str] = &["fromId", "toItem"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, to_item: to_item(f)? })
    }
}

/// Body of /friendship/delete: exactly one of `toId`, `toIds` or `deleteAll: true`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DeleteFriendReq {
    /// Whose friends.
    pub from_id: String,
    /// One friend: a failure fails the call.
    pub to_id: Option<String>,
    /// Several friends, at most `http.max_batch`: answered per item.
    pub to_ids: Option<Vec<String>>,
    /// Every friend of `fromId`.
    pub delete_all: Option<bool>,
    /// 1 one-way (only `fromId`'s entries), 2 two-way (the other user's entries too;
    /// the default).
    pub delete_type: Option<u8>,
}

impl FromBody for DeleteFriendReq {
    const FIELDS: &'static [&'static str] = &["fromId", "toId", "toIds", "deleteAll", "deleteType"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self {
            from_id: f.req("fromId")?,
            to_id: f.opt("toId")?,
            to_ids: f.opt("toIds")?,
            delete_all: f.opt("deleteAll")?,
            delete_type: f.opt("deleteType")?,
        })
    }
}

/// Body of the sync calls.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SyncReq {
    /// Whose log.
    pub from_id: String,
    /// Answer changes with a sequence above this (0 or absent: from the start).
    pub last_sequence: Option<u64>,
    /// Most changes to answer: default 100, capped at 1000; 0 means the default.
    pub max_limit: Option<u64>,
}

impl FromBody for SyncReq {
    const FIELDS: &'static [&'static str] = &["fromId", "lastSequence", "maxLimit"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, last_sequence: f.opt("lastSequence")?, max_limit: f.opt("maxLimit")? })
    }
}

/// A body naming two users.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FromToReq {
    /// The acting user.
    pub from_id: String,
    /// The other user.
    pub to_id: String,
}

impl FromBody for FromToReq {
    const FIELDS: &'static [&'static str] = &["fromId", "toId"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, to_id: f.req("toId")? })
    }
}

/// Body of /friendship/check.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CheckFriendReq {
    pub from_id: String,
    /// The users to check, at most `http.max_batch`.
    pub to_ids: Vec<String>,
    /// 1 one-way (does `fromId` list them; the default), 2 two-way (and do they list
    /// `fromId`).
    pub check_type: Option<u8>,
}

impl FromBody for CheckFriendReq {
    const FIELDS: &'static [&'static str] = &["fromId", "toIds", "checkType"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, to_ids: f.req("toIds")?, check_type: f.opt("checkType")? })
    }
}

/// Body of /friendship/get.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct GetFriendsReq {
    pub from_id: String,
    /// The previous page's `nextAfterSequence`; absent or 0: the first page.
    pub after_sequence: Option<u64>,
    /// Most friends per page: default 100, capped at 1000; 0 means the default.
    pub limit: Option<u64>,
}

impl FromBody for GetFriendsReq {
    const FIELDS: &'static [&'static str] = &["fromId", "afterSequence", "limit"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, after_sequence: f.opt("afterSequence")?, limit: f.opt("limit")? })
    }
}

/// Body of /friendshipRequest/getFriendRequest.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct GetFriendRequestReq {
    /// Whose requests.
    pub from_id: String,
    /// true: the requests `fromId` sent; false or absent: those it received.
    pub sent: Option<bool>,
}

impl FromBody for GetFriendRequestReq {
    const FIELDS: &'static [&'static str] = &["fromId", "sent"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")?, sent: f.opt("sent")? })
    }
}

/// A body naming one user.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FromIdReq {
    pub from_id: String,
}

impl FromBody for FromIdReq {
    const FIELDS: &'static [&'static str] = &["fromId"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { from_id: f.req("fromId")? })
    }
}

/// Body of /friendshipRequest/approve.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApproveReq {
    /// The approver: the request's recipient.
    pub from_id: String,
    /// The request (a decimal string, or a number up to 2^53).
    #[schema(value_type = String)]
    pub id: u64,
    /// 1 agree (the users become friends as requested), 2 reject.
    pub status: u8,
}

impl FromBody for ApproveReq {
    const FIELDS: &'static [&'static str] = &["fromId", "id", "status"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        let raw = f.raw("id").ok_or_else(|| ApiError::bad("id", "missing"))?;
        let id = match raw {
            Value::String(s) => s.trim().parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .filter(|id| *id != 0)
        .ok_or_else(|| ApiError::bad("id", format!("{raw} is not a request id (a decimal string)")))?;
        Ok(Self { from_id: f.req("fromId")?, id, status: f.req("status")? })
    }
}

// ---------------------------------------------------------------- response types

/// A friend entry as `fromId` holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FriendItem {
    pub to_id: String,
    pub remark: String,
    pub add_source: String,
    pub add_wording: String,
    pub extra: String,
    /// When the friendship was made, milliseconds since the Unix epoch.
    pub add_time: u64,
    /// When the entry last changed, milliseconds since the Unix epoch.
    pub update_time: u64,
    /// The sequence (in `fromId`'s friendship log) of the entry's last change.
    pub sequence: u64,
}

impl FriendItem {
    fn new(to: UserId, f: Friend) -> Self {
        Self {
            to_id: to.into_string(),
            remark: f.remark,
            add_source: f.add_source,
            add_wording: f.add_wording,
            extra: f.extra,
            add_time: f.add_time,
            update_time: f.update_time,
            sequence: f.seq.0,
        }
    }
}

/// Answer of /friendship/add.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddFriendResp {
    /// 1 friends now; 2 `toId` must approve: a friend request is pending (`requestId`);
    /// 3 nothing to do: the relation asked for exists already.
    pub result: u8,
    /// The pending request (result 2), a decimal string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `fromId`'s friendship sequence after the add (result 1, when its list changed)
    /// or its friend-request sequence (result 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
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

/// One change in a friendship sync answer: the entry's full new state, or a deletion.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FriendChangeItem {
    pub sequence: u64,
    pub to_id: String,
    /// The entry was deleted (a tombstone: only `sequence`, `toId` and `updateTime`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_wording: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_time: Option<u64>,
    /// When the change was made, milliseconds since the Unix epoch.
    pub update_time: u64,
}

impl FriendChangeItem {
    fn new(seq: Seq, r: records::FriendRecord) -> Self {
        let live = |s: String| (!r.deleted).then_some(s);
        Self {
            sequence: seq.0,
            to_id: r.to_id.into_string(),
            deleted: r.deleted,
            remark: live(r.remark),
            add_source: live(r.add_source),
            add_wording: live(r.add_wording),
            extra: live(r.extra),
            add_time: (!r.deleted).then_some(r.add_time),
            update_time: r.update_time,
        }
    }
}

/// Answer of /friendship/sync.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncFriendsResp {
    /// `fromId`'s committed friendship sequence: nothing at or below it can appear later.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`. When false, call again with
    /// `lastSequence` = the last item's `sequence`.
    pub completed: bool,
    /// Changes with `sequence > lastSequence`, ascending.
    pub data_list: Vec<FriendChangeItem>,
}

/// One change in a blacklist sync answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlackChangeItem {
    pub sequence: u64,
    pub to_id: String,
    /// Unblocked (a tombstone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the block was made, milliseconds since the Unix epoch (blocks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_time: Option<u64>,
}

/// Answer of /blackList/sync.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncBlackListResp {
    /// `fromId`'s committed blacklist sequence.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`.
    pub completed: bool,
    /// Changes with `sequence > lastSequence`, ascending.
    pub data_list: Vec<BlackChangeItem>,
}

/// Answer of /friendship/getRelation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationResp {
    pub from_id: String,
    pub to_id: String,
    /// 0 none; 1 only `fromId` lists `toId`; 2 only `toId` lists `fromId`; 3 both.
    pub relation: u8,
    /// `fromId` blocked `toId`.
    pub blocked: bool,
    /// `toId` blocked `fromId`.
    pub blocked_by: bool,
    /// `fromId`'s entry for `toId` (relation 1 or 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friend: Option<FriendItem>,
}

/// One result of /friendship/check.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub from_id: String,
    pub to_id: String,
    /// checkType 1: 1 `fromId` lists `toId`, 0 not. checkType 2: 1 both list each
    /// other, 2 only `fromId` lists `toId`, 3 only `toId` lists `fromId`, 4 neither.
    pub status: u8,
}

/// Answer of /friendship/check.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckFriendResp {
    /// One result per valid id, in request order (unknown users: no relation).
    pub result_list: Vec<CheckResult>,
    /// Invalid ids (90001).
    pub error_id: Vec<ItemError>,
}

/// Answer of /friendship/get.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetFriendsResp {
    /// `fromId`'s friendship sequence when this page was read: the list equals the
    /// sync log's state at it, so after reading every page, sync from the first
    /// page's `maxSequence`.
    pub max_sequence: u64,
    /// True when there are no more friends after this page.
    pub completed: bool,
    /// The `afterSequence` of the next page; null when `completed`.
    pub next_after_sequence: Option<u64>,
    /// Friends ordered by the sequence of their entry's last change.
    pub data_list: Vec<FriendItem>,
}

/// A friend request as one of its parties holds it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FriendRequestItem {
    /// The request id, a decimal string.
    pub id: String,
    /// Who asked.
    pub from_id: String,
    /// Who decides.
    pub to_id: String,
    pub remark: String,
    pub add_source: String,
    pub add_wording: String,
    pub extra: String,
    /// 1 one-way, 2 two-way (what approval makes).
    pub add_type: u8,
    /// 0 pending, 1 approved, 2 rejected.
    pub status: u8,
    /// The recipient marked it read (always false in sent lists).
    pub read: bool,
    pub create_time: u64,
    pub update_time: u64,
    /// The sequence (in `fromId`'s friend-request log) of its last change.
    pub sequence: u64,
}

impl From<Request> for FriendRequestItem {
    fn from(r: Request) -> Self {
        let rec = r.record;
        Self {
            id: rec.id.to_string(),
            from_id: rec.from_id.into_string(),
            to_id: rec.to_id.into_string(),
            remark: rec.remark,
            add_source: rec.add_source,
            add_wording: rec.add_wording,
            extra: rec.extra,
            add_type: if rec.two_way { 2 } else { 1 },
            status: rec.status,
            read: rec.read,
            create_time: rec.create_time,
            update_time: rec.update_time,
            sequence: r.seq.0,
        }
    }
}

/// Answer of /friendshipRequest/getFriendRequest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetFriendRequestResp {
    /// Received requests not yet marked read.
    pub unread_count: usize,
    /// Pending and handled requests, the latest per peer, newest change first.
    pub data_list: Vec<FriendRequestItem>,
}

/// Answer of /friendshipRequest/readAllFriendRequest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadAllResp {
    /// Requests marked read by this call.
    pub count: usize,
    /// `fromId`'s friend-request sequence afterwards.
    pub sequence: u64,
}

/// Answer of /friendshipRequest/approve.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveResp {
    pub id: String,
    /// 1 approved, 2 rejected.
    pub status: u8,
}

// ---------------------------------------------------------------- helpers

impl ApiError {
    /// Converts a relation error, prefixing invalid-field messages with `prefix`.
    fn from_friend(e: FriendError, prefix: &str) -> Self {
        match e {
            FriendError::Invalid { field, reason } => ApiError::BadParameter(format!("{prefix}{field}: {reason}")),
            FriendError::NotFound(id) => ApiError::UserNotFound(id.into_string()),
            FriendError::Deleted(id) => ApiError::UserDeleted(id.into_string()),
            FriendError::Refused { code, message } => ApiError::Refused { code, message },
            FriendError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<FriendError> for ApiError {
    fn from(e: FriendError) -> Self {
        ApiError::from_friend(e, "")
    }
}

fn user_id(raw: String, field: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(|e| ApiError::bad(field, e))
}

/// The acting user's id (`fromId`), recorded on the request span.
fn from_id(raw: String) -> Result<UserId, ApiError> {
    let id = user_id(raw, "fromId")?;
    tracing::Span::current().record("user_id", id.as_str());
    Ok(id)
}

/// `limit`/`maxLimit`: absent or 0 is the default; capped.
fn page_limit(n: Option<u64>) -> usize {
    match n {
        None | Some(0) => DEFAULT_PAGE_LIMIT,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PAGE_LIMIT),
    }
}

/// A 1-or-2 choice field (`addType`, `deleteType`, `checkType`): is it 2?
fn two_way(v: Option<u8>, field: &str, default_two_way: bool) -> Result<bool, ApiError> {
    match v {
        None => Ok(default_two_way),
        Some(1) => Ok(false),
        Some(2) => Ok(true),
        Some(n) => Err(ApiError::bad(field, format!("must be 1 (one-way) or 2 (two-way), not {n}"))),
    }
}

/// Validates a list of ids against the batch limit: the valid ones, and per-item errors.
fn parse_ids(state: &ApiState, raw: &[String], field: &str) -> Result<(Vec<UserId>, Vec<ItemError>), ApiError> {
    let max = state.logic.config.http.max_batch;
    if raw.len() > max {
        return Err(ApiError::BatchTooLarge { field: field.into(), len: raw.len(), max });
    }
    let mut ok = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match UserId::new(s.as_str()) {
            Ok(id) => ok.push(id),
            Err(e) => errors.push(item_error(s, &ApiError::bad(format!("{field}[{i}]"), e))),
        }
    }
    Ok((ok, errors))
}

fn item_error(user_id: &str, e: &ApiError) -> ItemError {
    ItemError { user_id: user_id.to_string(), code: e.code(), msg: e.to_string() }
}

// ---------------------------------------------------------------- handlers

/// Add a friend.
///
/// Obeys `toId`'s `friendAllowType`: 1 (anyone) → friends at once (`result: 1`); 2
/// (needs approval) → a friend request that `toId` approves or rejects with
/// /friendshipRequest/approve (`result: 2`, `requestId`; adding again while it is
/// pending refreshes it); 3 (nobody) or `disableAddFriend` → 30017. If `toId` already
/// lists `fromId`, no approval is needed. `addType` 2 (default) makes both users list
/// each other, 1 only `fromId` → `toId`. Re-adding is idempotent (`result: 3`). Refused
/// if `fromId` blocked `toId` (30006) or `toId` blocked `fromId` (30007), or if a list
/// would pass the app's `max_friends` (30018). Every online device of each user whose
/// lists changed gets a sync notification.
#[utoipa::path(post, path = "/v1/friendship/add", tag = "friendship", params(AuthQuery), request_body = AddFriendReq,
    responses((status = 200, description = "Added, requested, or already friends", body = Envelope<AddFriendResp>)))]
pub async fn add(State(state): State<Arc<ApiState>>, call: AdminCall<AddFriendReq>) -> ApiResult<AddFriendResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let item = req.to_item;
    let add = AddFriend {
        from,
        to: user_id(item.to_id, "toItem.toId")?,
        remark: item.remark.unwrap_or_default(),
        add_source: item.add_source.unwrap_or_default(),
        add_wording: item.add_wording.unwrap_or_default(),
        extra: item.extra.unwrap_or_default(),
        two_way: two_way(req.add_type, "addType", true)?,
    };
    let out = friends::add(&state.logic, call.app, add).await.map_err(|e| ApiError::from_friend(e, "toItem."))?;
    Ok(ApiOk(match out {
        AddOutcome::Added { seq } => AddFriendResp { result: 1, request_id: None, sequence: seq.map(|s| s.0) },
        AddOutcome::Requested { id, seq } => {
            AddFriendResp { result: 2, request_id: Some(id.to_string()), sequence: Some(seq.0) }
        }
        AddOutcome::AlreadyFriends => AddFriendResp { result: 3, request_id: None, sequence: None },
    }))
}

/// Delete friends: one (`toId`), several (`toIds`) or all (`deleteAll: true`).
///
/// `deleteType` 2 (default) removes both users' entries, 1 only `fromId`'s. With
/// `toId`, a failure fails the call (30003 not a friend for one-way, 30008 no relation
/// either way for two-way); with `toIds` or `deleteAll` the answer is per item. Every
/// online device of each user whose list changed gets a sync notification; the
/// deletions appear in /friendship/sync as tombstones.
#[utoipa::path(post, path = "/v1/friendship/delete", tag = "friendship", params(AuthQuery),
    request_body = DeleteFriendReq,
    responses((status = 200, description = "Per-item results", body = Envelope<BatchResult>)))]
pub async fn delete(State(state): State<Arc<ApiState>>, call: AdminCall<DeleteFriendReq>) -> ApiResult<BatchResult> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let two = two_way(req.delete_type, "deleteType", true)?;
    let all = req.delete_all.unwrap_or(false);
    let given = usize::from(req.to_id.is_some()) + usize::from(req.to_ids.is_some()) + usize::from(all);
    if given != 1 {
        return Err(ApiError::bad("toId", "give exactly one of toId, toIds or deleteAll: true"));
    }
    let mut out = BatchResult::default();
    if let Some(one) = req.to_id {
        let id = user_id(one, "toId")?;
        let mut results = friends::delete(&state.logic, call.app, &from, DeleteTarget::Ids(vec![id]), two).await?;
        let (id, r) = results.pop().ok_or_else(|| ApiError::Internal("delete answered no result".into()))?;
        r?;
        out.success_id.push(id.into_string());
        return Ok(ApiOk(out));
    }
    let (target, errors) = match req.to_ids {
        Some(raw) => {
            let (ids, errors) = parse_ids(&state, &raw, "toIds")?;
            (DeleteTarget::Ids(ids), errors)
        }
        None => (DeleteTarget::All, Vec::new()),
    };
    out.error_id = errors;
    for (id, r) in friends::delete(&state.logic, call.app, &from, target, two).await? {
        match r {
            Ok(()) => out.success_id.push(id.into_string()),
            Err(FriendError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => out.error_id.push(item_error(id.as_str(), &e.into())),
        }
    }
    Ok(ApiOk(out))
}

/// Incremental friend list sync.
///
/// The changes of `fromId`'s friend list with `sequence > lastSequence`, ascending, at
/// most `maxLimit`: each item is the entry's full new state, or a deletion
/// (`deleted: true`). Applying every page in order from 0 yields exactly the list
/// /friendship/get answers. Page with `lastSequence` = the last item's `sequence` while
/// `completed` is false.
#[utoipa::path(post, path = "/v1/friendship/sync", tag = "friendship", params(AuthQuery), request_body = SyncReq,
    responses((status = 200, description = "A page of changes", body = Envelope<SyncFriendsResp>)))]
pub async fn sync(State(state): State<Arc<ApiState>>, call: AdminCall<SyncReq>) -> ApiResult<SyncFriendsResp> {
    let req = call.body;
    let user = from_id(req.from_id)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let page = friends::sync_friends(&state.logic, call.app, &user, after, page_limit(req.max_limit)).await?;
    Ok(ApiOk(SyncFriendsResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        data_list: page.entries.into_iter().map(|(s, r)| FriendChangeItem::new(s, r)).collect(),
    }))
}

/// Change a friend's remark and/or extra.
///
/// `toItem.toId` must be in `fromId`'s list (30003). Values equal to the stored ones
/// are not changes (`changed: false`, nothing written). A change notifies every online
/// device of `fromId`.
#[utoipa::path(post, path = "/v1/friendship/update", tag = "friendship", params(AuthQuery),
    request_body = UpdateFriendReq,
    responses((status = 200, description = "Updated", body = Envelope<ChangeResp>)))]
pub async fn update(State(state): State<Arc<ApiState>>, call: AdminCall<UpdateFriendReq>) -> ApiResult<ChangeResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let item = req.to_item;
    let to = user_id(item.to_id, "toItem.toId")?;
    let u = friends::update(&state.logic, call.app, &from, &to, item.remark, item.extra)
        .await
        .map_err(|e| ApiError::from_friend(e, "toItem."))?;
    Ok(ApiOk(ChangeResp { sequence: u.seq.0, changed: u.changed }))
}

/// The relation between two users.
///
/// `relation`: 0 none, 1 only `fromId` lists `toId`, 2 only `toId` lists `fromId`, 3
/// both; `blocked` / `blockedBy`: the blacklist both ways; `friend`: `fromId`'s entry
/// for `toId`. Both users must exist (20001).
#[utoipa::path(post, path = "/v1/friendship/getRelation", tag = "friendship", params(AuthQuery),
    request_body = FromToReq,
    responses((status = 200, description = "The relation", body = Envelope<RelationResp>)))]
pub async fn get_relation(State(state): State<Arc<ApiState>>, call: AdminCall<FromToReq>) -> ApiResult<RelationResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let to = user_id(req.to_id, "toId")?;
    let r = friends::get_relation(&state.logic, call.app, &from, &to).await?;
    let relation = match (r.from_entry.is_some(), r.to_has) {
        (false, false) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (true, true) => 3,
    };
    Ok(ApiOk(RelationResp {
        friend: r.from_entry.map(|f| FriendItem::new(to.clone(), f)),
        from_id: from.into_string(),
        to_id: to.into_string(),
        relation,
        blocked: r.from_blocked,
        blocked_by: r.to_blocked,
    }))
}

/// Are these users my friends (batch).
///
/// `checkType` 1 (default): `status` 1 if `fromId` lists the user, else 0. `checkType`
/// 2: 1 both list each other, 2 only `fromId` lists the user, 3 only the user lists
/// `fromId`, 4 neither. Unknown users simply have no relation; invalid ids are listed
/// in `errorId` (90001).
#[utoipa::path(post, path = "/v1/friendship/check", tag = "friendship", params(AuthQuery),
    request_body = CheckFriendReq,
    responses((status = 200, description = "Per-user results", body = Envelope<CheckFriendResp>)))]
pub async fn check(State(state): State<Arc<ApiState>>, call: AdminCall<CheckFriendReq>) -> ApiResult<CheckFriendResp> {
    let req = call.body;
    let (ids, error_id) = parse_ids(&state, &req.to_ids, "toIds")?;
    let from = from_id(req.from_id)?;
    let two = two_way(req.check_type, "checkType", false)?;
    let statuses = friends::check(&state.logic, call.app, &from, &ids, two).await?;
    let result_list = ids
        .into_iter()
        .zip(statuses)
        .map(|(id, s)| CheckResult { from_id: from.to_string(), to_id: id.into_string(), status: s.code() })
        .collect();
    Ok(ApiOk(CheckFriendResp { result_list, error_id }))
}

/// The whole friend list, paged by sequence.
///
/// Friends ordered by the sequence of their entry's last change, after
/// `afterSequence`, at most `limit` per page; page with `afterSequence` =
/// `nextAfterSequence` until `completed`. To follow changes afterwards, sync from the
/// first page's `maxSequence`.
#[utoipa::path(post, path = "/v1/friendship/get", tag = "friendship", params(AuthQuery), request_body = GetFriendsReq,
    responses((status = 200, description = "A page of friends", body = Envelope<GetFriendsResp>)))]
pub async fn get(State(state): State<Arc<ApiState>>, call: AdminCall<GetFriendsReq>) -> ApiResult<GetFriendsResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let after = Seq(req.after_sequence.unwrap_or(0));
    let page = friends::list(&state.logic, call.app, &from, after, page_limit(req.limit)).await?;
    let data_list: Vec<FriendItem> = page.items.into_iter().map(|(id, f)| FriendItem::new(id, f)).collect();
    Ok(ApiOk(GetFriendsResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        next_after_sequence: if page.completed { None } else { data_list.last().map(|f| f.sequence) },
        data_list,
    }))
}

/// Block a user.
///
/// `toId` can then no longer message `fromId` (send-ack / 30007) or add `fromId`
/// (30007); friend lists are left as they are. Blocking a blocked user changes nothing
/// (`changed: false`). Over the app's `max_blacklist` is 30019. Notifies every online
/// device of `fromId`.
#[utoipa::path(post, path = "/v1/blackList/add", tag = "friendship", params(AuthQuery), request_body = FromToReq,
    responses((status = 200, description = "Blocked", body = Envelope<ChangeResp>)))]
pub async fn black_list_add(State(state): State<Arc<ApiState>>, call: AdminCall<FromToReq>) -> ApiResult<ChangeResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let to = user_id(req.to_id, "toId")?;
    Ok(ApiOk(match friends::block(&state.logic, call.app, &from, &to).await? {
        BlockOutcome::Blocked(seq) => ChangeResp { sequence: seq.0, changed: true },
        BlockOutcome::AlreadyBlocked(seq) => ChangeResp { sequence: seq.0, changed: false },
    }))
}

/// Unblock a user.
///
/// 30010 if `toId` is not blocked. Notifies every online device of `fromId`; the
/// unblock appears in /blackList/sync as a tombstone.
#[utoipa::path(post, path = "/v1/blackList/delete", tag = "friendship", params(AuthQuery), request_body = FromToReq,
    responses((status = 200, description = "Unblocked", body = Envelope<ChangeResp>)))]
pub async fn black_list_delete(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<FromToReq>,
) -> ApiResult<ChangeResp> {
    let req = call.body;
    let from = from_id(req.from_id)?;
    let to = user_id(req.to_id, "toId")?;
    let seq = friends::unblock(&state.logic, call.app, &from, &to).await?;
    Ok(ApiOk(ChangeResp { sequence: seq.0, changed: true }))
}

/// Incremental blacklist sync.
///
/// The changes of `fromId`'s blacklist with `sequence > lastSequence`, ascending, at
/// most `maxLimit`: blocks, and unblocks as `deleted: true`.
#[utoipa::path(post, path = "/v1/blackList/sync", tag = "friendship", params(AuthQuery), request_body = SyncReq,
    responses((status = 200, description = "A page of changes", body = Envelope<SyncBlackListResp>)))]
pub async fn black_list_sync(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<SyncReq>,
) -> ApiResult<SyncBlackListResp> {
    let req = call.body;
    let user = from_id(req.from_id)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let page = friends::sync_blacklist(&state.logic, call.app, &user, after, page_limit(req.max_limit)).await?;
    Ok(ApiOk(SyncBlackListResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        data_list: page
            .entries
            .into_iter()
            .map(|(s, r)| BlackChangeItem {
                sequence: s.0,
                to_id: r.to_id.into_string(),
                deleted: r.deleted,
                add_time: (!r.deleted).then_some(r.add_time),
            })
            .collect(),
    }))
}

/// Friend requests of a user.
///
/// The requests `fromId` received (or, with `sent: true`, sent): pending and handled,
/// the latest per peer, newest change first; and how many received ones are unread.
#[utoipa::path(post, path = "/v1/friendshipRequest/getFriendRequest", tag = "friendship", params(AuthQuery),
    request_body = GetFriendRequestReq,
    responses((status = 200, description = "Requests", body = Envelope<GetFriendRequestResp>)))]
pub async fn get_friend_request(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetFriendRequestReq>,
) -> ApiResult<GetFriendRequestResp> {
    let req = call.body;
    let user = from_id(req.from_id)?;
    let list = friends::list_requests(&state.logic, call.app, &user, req.sent.unwrap_or(false)).await?;
    Ok(ApiOk(GetFriendRequestResp {
        unread_count: list.unread,
        data_list: list.requests.into_iter().map(FriendRequestItem::from).collect(),
    }))
}

/// Mark every received friend request read.
///
/// Notifies every online device of `fromId` when anything changed.
#[utoipa::path(post, path = "/v1/friendshipRequest/readAllFriendRequest", tag = "friendship", params(AuthQuery),
    request_body = FromIdReq,
    responses((status = 200, description = "Marked read", body = Envelope<ReadAllResp>)))]
pub async fn read_all_friend_request(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<FromIdReq>,
) -> ApiResult<ReadAllResp> {
    let user = from_id(call.body.from_id)?;
    let (count, seq) = friends::read_all(&state.logic, call.app, &user).await?;
    Ok(ApiOk(ReadAllResp { count, sequence: seq.0 }))
}

/// Approve or reject a friend request.
///
/// `fromId` must be the request's recipient (30011 if it sent it, 30012 if it has no
/// such request); a request is decided once (30013). `status` 1 makes the users
/// friends as the request asked (its `addType`), under the same checks as an add
/// (30006, 30007, 30018); 2 rejects it. Both users' devices are notified.
#[utoipa::path(post, path = "/v1/friendshipRequest/approve", tag = "friendship", params(AuthQuery),
    request_body = ApproveReq,
    responses((status = 200, description = "Decided", body = Envelope<ApproveResp>)))]
pub async fn approve(State(state): State<Arc<ApiState>>, call: AdminCall<ApproveReq>) -> ApiResult<ApproveResp> {
    let req = call.body;
    let user = from_id(req.from_id)?;
    let agree = match req.status {
        1 => true,
        2 => false,
        n => return Err(ApiError::bad("status", format!("must be 1 (agree) or 2 (reject), not {n}"))),
    };
    friends::approve(&state.logic, call.app, &user, req.id, agree).await?;
    Ok(ApiOk(ApproveResp { id: req.id.to_string(), status: req.status }))
}

/// Error codes of each relation call besides the ones every call can answer: (path,
/// codes failing the whole call, codes of single items). See `users::PATH_ERRORS`.
pub const PATH_ERRORS: &[(&str, &[u32], &[u32])] = &[
    (
        "/v1/friendship/add",
        &[
            codes::USER_NOT_FOUND,
            codes::USER_DELETED,
            errors::YOU_BLOCKED_THEM,
            errors::THEY_BLOCKED_YOU,
            errors::ADD_FORBIDDEN,
            errors::FRIEND_LIMIT,
        ],
        &[],
    ),
    (
        "/v1/friendship/delete",
        &[codes::USER_NOT_FOUND, BATCH_TOO_LARGE, errors::NOT_FRIENDS, errors::NO_RELATION],
        &[codes::BAD_PARAMETER, errors::NOT_FRIENDS, errors::NO_RELATION],
    ),
    ("/v1/friendship/sync", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/friendship/update", &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::NOT_FRIENDS], &[]),
    ("/v1/friendship/getRelation", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/friendship/check", &[codes::USER_NOT_FOUND, BATCH_TOO_LARGE], &[codes::BAD_PARAMETER]),
    ("/v1/friendship/get", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/blackList/add", &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::BLACKLIST_LIMIT], &[]),
    ("/v1/blackList/delete", &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::NOT_BLOCKED], &[]),
    ("/v1/blackList/sync", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/friendshipRequest/getFriendRequest", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/friendshipRequest/readAllFriendRequest", &[codes::USER_NOT_FOUND, codes::USER_DELETED], &[]),
    (
        "/v1/friendshipRequest/approve",
        &[
            codes::USER_NOT_FOUND,
            codes::USER_DELETED,
            errors::NOT_YOUR_REQUEST,
            errors::NO_SUCH_REQUEST,
            errors::REQUEST_HANDLED,
            errors::YOU_BLOCKED_THEM,
            errors::THEY_BLOCKED_YOU,
            errors::FRIEND_LIMIT,
        ],
        &[],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::code_info;
    use crate::http::extract::check_fields;

    #[test]
    fn parsers_accept_exactly_the_documented_fields() {
        check_fields::<ToItem>(ToItem::FIELDS);
        check_fields::<UpdateItem>(UpdateItem::FIELDS);
        check_fields::<AddFriendReq>(AddFriendReq::FIELDS);
        check_fields::<UpdateFriendReq>(UpdateFriendReq::FIELDS);
        check_fields::<DeleteFriendReq>(DeleteFriendReq::FIELDS);
        check_fields::<SyncReq>(SyncReq::FIELDS);
        check_fields::<FromToReq>(FromToReq::FIELDS);
        check_fields::<CheckFriendReq>(CheckFriendReq::FIELDS);
        check_fields::<GetFriendsReq>(GetFriendsReq::FIELDS);
        check_fields::<GetFriendRequestReq>(GetFriendRequestReq::FIELDS);
        check_fields::<FromIdReq>(FromIdReq::FIELDS);
        check_fields::<ApproveReq>(ApproveReq::FIELDS);
    }

    #[test]
    fn every_relation_code_is_in_the_table() {
        let expect = [
            (errors::ALREADY_FRIENDS, 409),
            (errors::NOT_FRIENDS, 404),
            (errors::YOU_BLOCKED_THEM, 403),
            (errors::THEY_BLOCKED_YOU, 403),
            (errors::NO_RELATION, 404),
            (errors::NOT_BLOCKED, 404),
            (errors::NOT_YOUR_REQUEST, 403),
            (errors::NO_SUCH_REQUEST, 404),
            (errors::REQUEST_HANDLED, 409),
            (errors::ADD_FORBIDDEN, 403),
            (errors::FRIEND_LIMIT, 409),
            (errors::BLACKLIST_LIMIT, 409),
        ];
        for (code, status) in expect {
            assert_eq!(code_info(code).map(|c| c.status), Some(status), "{code}");
            let e = ApiError::from(FriendError::Refused { code, message: "m".into() });
            assert_eq!((e.code(), e.status().as_u16(), e.to_string()), (code, status, "m".to_string()));
        }
        for (_, whole, items) in PATH_ERRORS {
            for c in whole.iter().chain(*items) {
                assert!(code_info(*c).is_some(), "{c} is not in CODES");
            }
        }
    }

    #[test]
    fn service_errors_keep_their_codes_and_paths() {
        let e =
            ApiError::from_friend(FriendError::Invalid { field: "remark".into(), reason: "long".into() }, "toItem.");
        assert_eq!((e.code(), e.to_string()), (codes::BAD_PARAMETER, "toItem.remark: long".to_string()));
        let u = UserId::new("u").unwrap();
        assert_eq!(ApiError::from(FriendError::NotFound(u.clone())).code(), codes::USER_NOT_FOUND);
        assert_eq!(ApiError::from(FriendError::Deleted(u)).code(), codes::USER_DELETED);
        let internal = ApiError::from(FriendError::Store(tern_storage::StoreError::Io("disk".into())));
        assert_eq!(internal.to_string(), "internal error");
    }

    #[test]
    fn choices_and_limits() {
        assert_eq!(two_way(None, "addType", true), Ok(true));
        assert_eq!(two_way(Some(1), "addType", true), Ok(false));
        assert!(two_way(Some(3), "checkType", false).unwrap_err().to_string().starts_with("checkType: must be 1"));
        assert_eq!(page_limit(None), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(Some(0)), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(Some(u64::MAX)), MAX_PAGE_LIMIT);
    }
}
