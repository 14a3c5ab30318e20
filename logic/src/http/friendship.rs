//! `/v1/friendship/...`: friend lists. Each handler parses its body, calls
//! [`crate::friends`] and shapes the answer; field names are the original system's
//! camelCase ones (`fromId`, `toItem`, `toIds`, `checkType`, `lastSequence`, ...). The
//! blacklist and friend requests have their own modules (`blacklist`,
//! `friend_requests`), as in the service.
//!
//! `fromId` is the user whose relations are read or changed (the acting user); without
//! it the common field `operater` names that user, as in the original system.
//!
//! This module must never hold business rules (who may add whom, limits, what a
//! change writes or notifies): those live in `crate::friends`. It only translates.

use std::sync::Arc;

use crate::error::ServiceError;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tern_schema::codes;
use tern_storage::{Seq, UserId};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{
    acting_user, check_batch, page_limit, parse_ids, two_way, user_id, ApiResult, BatchResult, ChangeResp, FromToReq,
    ItemError, ItemErrors, SyncReq,
};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::ApiState;
use crate::config::MAX_PAGE_LIMIT;
use crate::friends::{self, errors, records, AddFriend, AddOutcome, DeleteTarget, Friend};
use crate::users::BATCH_TOO_LARGE;

/// The friendship endpoints, each with its own error codes (besides the common ones)
/// and the original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(
        routes!(add),
        &[
            codes::USER_NOT_FOUND,
            codes::USER_DELETED,
            errors::YOU_BLOCKED_THEM,
            errors::THEY_BLOCKED_YOU,
            errors::ADD_FORBIDDEN,
            errors::FRIEND_LIMIT,
        ],
        &[],
    )
    .alias("/v1/friendship/addFriend")
    .add(
        routes!(delete),
        &[codes::USER_NOT_FOUND, BATCH_TOO_LARGE, errors::NOT_FRIENDS, errors::NO_RELATION],
        &[codes::BAD_PARAMETER, errors::NOT_FRIENDS, errors::NO_RELATION],
    )
    .alias("/v1/friendship/deleteFriend")
    .add(routes!(delete_all), &[codes::USER_NOT_FOUND], &[errors::NOT_FRIENDS, errors::NO_RELATION])
    .add(routes!(sync), &[codes::USER_NOT_FOUND], &[])
    .alias("/v1/friendship/syncFriendshipList")
    .add(routes!(update), &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::NOT_FRIENDS], &[])
    .alias("/v1/friendship/updateFriend")
    .add(routes!(get_relation), &[codes::USER_NOT_FOUND], &[])
    .add(routes!(check), &[codes::USER_NOT_FOUND, BATCH_TOO_LARGE], &[codes::BAD_PARAMETER])
    .alias("/v1/friendship/checkFriend")
    .add(routes!(get), &[codes::USER_NOT_FOUND], &[])
    .alias("/v1/friendship/getAllFriendShip")
    .add(
        routes!(import),
        &[codes::USER_NOT_FOUND, codes::USER_DELETED, BATCH_TOO_LARGE],
        &[
            codes::BAD_PARAMETER,
            codes::USER_NOT_FOUND,
            codes::USER_DELETED,
            errors::FRIEND_LIMIT,
            errors::BLACKLIST_LIMIT,
        ],
    )
    .alias("/v1/friendship/importFriendShip")
}

// ---------------------------------------------------------------- request types

/// The friend of an add (`toItem`). Lengths are in characters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

/// The friend of an update (`toItem`): only `remark` and `extra` change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateItem {
    /// The friend (must be in `fromId`'s list).
    pub to_id: String,
    /// New remark, at most 64 characters; absent: unchanged.
    pub remark: Option<String>,
    /// New extra, at most 4096 characters; absent: unchanged.
    pub extra: Option<String>,
}

/// Parses the object field `toItem` as `T`, with `toItem.`-prefixed error paths.
/// Body of /friendship/add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddFriendReq {
    /// Who adds.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    pub to_item: ToItem,
    /// 1 one-way (only `fromId` lists `toId`), 2 two-way (both list each other; the
    /// default).
    #[schema(minimum = 1, maximum = 2)]
    pub add_type: Option<u8>,
}

/// Body of /friendship/update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFriendReq {
    /// Whose friend entry.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    pub to_item: UpdateItem,
}

/// Body of /friendship/delete: exactly one of `toId`, `toIds` or `deleteAll: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteFriendReq {
    /// Whose friends.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// One friend: a failure fails the call.
    pub to_id: Option<String>,
    /// Several friends, at most `http.max_batch`: answered per item.
    pub to_ids: Option<Vec<String>>,
    /// Every friend of `fromId`.
    pub delete_all: Option<bool>,
    /// 1 one-way (only `fromId`'s entries), 2 two-way (the other user's entries too;
    /// the default).
    #[schema(minimum = 1, maximum = 2)]
    pub delete_type: Option<u8>,
}

/// One relation of an import (`friendItem`): the state `fromId` ends up in towards `toId`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportFriendItem {
    /// The peer (must exist; must not be deleted unless only blocked).
    pub to_id: String,
    /// `fromId`'s name for the friend, at most 64 characters.
    pub remark: Option<String>,
    /// Where the friendship came from, at most 32 characters.
    pub add_source: Option<String>,
    /// Business data of the friend entry, at most 4096 characters.
    pub extra: Option<String>,
    /// 1 `fromId` lists `toId` (the default); 0 or 2 it does not (an existing entry is
    /// removed), as the original system's friendship status.
    #[schema(minimum = 0, maximum = 2)]
    pub status: Option<u8>,
    /// 1 not blocked (the default; an existing block is lifted); 2 `fromId` blocks `toId`.
    #[schema(minimum = 1, maximum = 2)]
    pub black: Option<u8>,
}

/// Body of /friendship/import (the original system's importFriendShip).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportFriendShipReq {
    /// Whose relations. (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The relations, at most `http.max_batch`.
    pub friend_item: Vec<ImportFriendItem>,
}

/// Body of /friendship/check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckFriendReq {
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The users to check, at most `http.max_batch`.
    pub to_ids: Vec<String>,
    /// 1 one-way (does `fromId` list them; the default), 2 two-way (and do they list
    /// `fromId`).
    #[schema(minimum = 1, maximum = 2)]
    pub check_type: Option<u8>,
}

/// Body of /friendship/get.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetFriendsReq {
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The previous page's `nextAfterSequence`; absent or 0: the first page.
    pub after_sequence: Option<u64>,
    /// Most friends per page: default 100, capped at 1000; 0 means the default.
    pub limit: Option<u64>,
}

/// Body of /friendship/deleteAllFriend (the original system's call): every friend of
/// `fromId`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteAllFriendReq {
    /// Whose friends. (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// 1 one-way (only `fromId`'s entries), 2 two-way (the default).
    #[schema(minimum = 1, maximum = 2)]
    pub delete_type: Option<u8>,
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
    let from = acting_user(req.from_id, &call.common)?;
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
    let out = friends::add(&state.logic, call.app, add).await.map_err(|e| ApiError::from_service(e, "toItem.", ""))?;
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
    let from = acting_user(req.from_id, &call.common)?;
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
            (DeleteTarget::Ids(ids.into_iter().map(|(_, id)| id).collect()), errors.into_sorted())
        }
        None => (DeleteTarget::All, Vec::new()),
    };
    delete_each(&state, call.app, &from, target, two, errors).await
}

/// Deletes per item; `errors` are the items refused before (listed first).
async fn delete_each(
    state: &ApiState,
    app: tern_storage::AppId,
    from: &UserId,
    target: DeleteTarget,
    two: bool,
    errors: Vec<ItemError>,
) -> ApiResult<BatchResult> {
    let mut out = BatchResult { success_id: Vec::new(), error_id: errors };
    for (id, r) in friends::delete(&state.logic, app, from, target, two).await? {
        match r {
            Ok(()) => out.success_id.push(id.into_string()),
            Err(ServiceError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => out.error_id.push(ItemError::new(id.as_str(), &e.into())),
        }
    }
    Ok(ApiOk(out))
}

/// Import relations (the original system's importFriendShip).
///
/// Sets `fromId`'s entry for each `toId` to the state given — listed or not (`status`),
/// blocked or not (`black`) — one-way and without friend requests or consent rules: the
/// relation already existed in the system it comes from. Only `fromId`'s lists change
/// (the peers' lists are imported with their own calls); items already in the state given
/// write nothing. Answered per item: 90001 names the field, 20001 / 20002 an unknown or
/// deleted peer, 30018 / 30019 a full friend list or blacklist. `fromId`'s online devices
/// get a sync notification; the changes appear in /friendship/sync and /blackList/sync.
#[utoipa::path(post, path = "/v1/friendship/import", tag = "friendship", params(AuthQuery),
    request_body = ImportFriendShipReq,
    responses((status = 200, description = "Per-item results (ids are the toIds)", body = Envelope<BatchResult>)))]
pub async fn import(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<ImportFriendShipReq>,
) -> ApiResult<BatchResult> {
    let req = call.body;
    let from = acting_user(req.from_id, &call.common)?;
    check_batch(&state, req.friend_item.len(), "friendItem")?;
    let mut errors = ItemErrors::default();
    let mut parsed = Vec::with_capacity(req.friend_item.len());
    for (i, it) in req.friend_item.into_iter().enumerate() {
        let given = it.to_id.clone();
        match import_item(it, i) {
            Ok(item) => parsed.push((i, item)),
            Err(e) => errors.push(i, ItemError::new(given, &e)),
        }
    }
    let (index, items): (Vec<usize>, Vec<friends::ImportFriend>) = parsed.into_iter().unzip();
    let ids: Vec<String> = items.iter().map(|it| it.to.to_string()).collect();
    let results = friends::import(&state.logic, call.app, &from, items).await?;
    let mut out = BatchResult::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(results) {
        match r {
            Ok(()) => out.success_id.push(id),
            Err(ServiceError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(ServiceError::Invalid { field, reason }) => {
                errors.push(i, ItemError::new(id, &ApiError::bad(format!("friendItem[{i}].{field}"), reason)))
            }
            Err(e) => errors.push(i, ItemError::new(id, &e.into())),
        }
    }
    out.error_id = errors.into_sorted();
    Ok(ApiOk(out))
}

/// Checks one `friendItem` entry (`i`: its index, for error paths).
fn import_item(it: ImportFriendItem, i: usize) -> Result<friends::ImportFriend, ApiError> {
    let field = |name: &str| format!("friendItem[{i}].{name}");
    let to = UserId::new(it.to_id).map_err(|e| ApiError::bad(field("toId"), e))?;
    let listed = match it.status.unwrap_or(1) {
        1 => true,
        0 | 2 => false,
        s => return Err(ApiError::bad(field("status"), format!("must be 0, 1 or 2, not {s}"))),
    };
    let blocked = match it.black.unwrap_or(1) {
        1 => false,
        2 => true,
        b => return Err(ApiError::bad(field("black"), format!("must be 1 (not blocked) or 2 (blocked), not {b}"))),
    };
    Ok(friends::ImportFriend {
        to,
        listed,
        remark: it.remark.unwrap_or_default(),
        add_source: it.add_source.unwrap_or_default(),
        extra: it.extra.unwrap_or_default(),
        blocked,
    })
}

/// Delete every friend (the original system's deleteAllFriend).
///
/// The same as /friendship/delete with `deleteAll: true`: `deleteType` 2 (default)
/// removes both users' entries, 1 only `fromId`'s; answered per friend.
#[utoipa::path(post, path = "/v1/friendship/deleteAllFriend", tag = "friendship", params(AuthQuery),
    request_body = DeleteAllFriendReq,
    responses((status = 200, description = "Per-item results", body = Envelope<BatchResult>)))]
pub async fn delete_all(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<DeleteAllFriendReq>,
) -> ApiResult<BatchResult> {
    let req = call.body;
    let from = acting_user(req.from_id, &call.common)?;
    let two = two_way(req.delete_type, "deleteType", true)?;
    delete_each(&state, call.app, &from, DeleteTarget::All, two, Vec::new()).await
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
    let user = acting_user(req.from_id, &call.common)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let page =
        friends::sync_friends(&state.logic, call.app, &user, after, page_limit(req.max_limit, MAX_PAGE_LIMIT)).await?;
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
    let from = acting_user(req.from_id, &call.common)?;
    let item = req.to_item;
    let to = user_id(item.to_id, "toItem.toId")?;
    let u = friends::update(&state.logic, call.app, &from, &to, item.remark, item.extra)
        .await
        .map_err(|e| ApiError::from_service(e, "toItem.", ""))?;
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
    let from = acting_user(req.from_id, &call.common)?;
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
    let (ids, error_id): (Vec<UserId>, _) = (ids.into_iter().map(|(_, id)| id).collect(), error_id.into_sorted());
    let from = acting_user(req.from_id, &call.common)?;
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
    let from = acting_user(req.from_id, &call.common)?;
    let after = Seq(req.after_sequence.unwrap_or(0));
    let page = friends::list(&state.logic, call.app, &from, after, page_limit(req.limit, MAX_PAGE_LIMIT)).await?;
    let data_list: Vec<FriendItem> = page.items.into_iter().map(|(id, f)| FriendItem::new(id, f)).collect();
    Ok(ApiOk(GetFriendsResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        next_after_sequence: if page.completed { None } else { data_list.last().map(|f| f.sequence) },
        data_list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::code_info;

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
            let e = ApiError::from(ServiceError::Refused { code, message: "m".into() });
            assert_eq!((e.code(), e.status().as_u16(), e.to_string()), (code, status, "m".to_string()));
        }
    }

    #[test]
    fn service_errors_keep_their_codes_and_paths() {
        let e = ApiError::from_service(
            ServiceError::Invalid { field: "remark".into(), reason: "long".into() },
            "toItem.",
            "",
        );
        assert_eq!((e.code(), e.to_string()), (codes::BAD_PARAMETER, "toItem.remark: long".to_string()));
        let u = UserId::new("u").unwrap();
        assert_eq!(ApiError::from(ServiceError::UserNotFound(u.clone())).code(), codes::USER_NOT_FOUND);
        assert_eq!(ApiError::from(ServiceError::UserDeleted(u)).code(), codes::USER_DELETED);
        let internal = ApiError::from(ServiceError::Store(tern_storage::StoreError::Io("disk".into())));
        assert_eq!(internal.to_string(), "internal error");
    }
}
