//! `/v1/user/...`: the user calls of the management API. Each handler parses its body
//! (per item for batches, so one bad item never fails the others), calls
//! [`crate::users::Users`] and shapes the answer. Field names are the original system's
//! camelCase ones.
//!
//! This module must never hold business rules (limits, deletion semantics, seqs,
//! notifications): those live in `crate::users`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use tern_schema::codes;
use tern_storage::{Seq, UserId, UserRecord};
use utoipa::ToSchema;

use super::auth::{AdminCall, AuthQuery, UserCall};
use super::error::{ApiError, ApiOk, Envelope};
use super::extract::{item_object, Fields, FromBody};
use super::ApiState;
use crate::users::{ImportItem, ProfilePatch, ProfileSyncEntry, UserError, BATCH_TOO_LARGE};

type ApiResult<T> = Result<ApiOk<T>, ApiError>;

// ---------------------------------------------------------------- request types

/// A user's profile fields as given to importUser (one item of `userData`) and
/// modifyUserInfo (the body). Absent or null fields are not changed (import: a new
/// user gets the defaults). Lengths are in characters.
#[derive(Debug, Clone, Default, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UserData {
    /// 1..=64 of ASCII letters, digits and `_-.@`.
    pub user_id: String,
    /// Display name, at most 64 characters.
    pub nick_name: Option<String>,
    /// Avatar URL, at most 512 characters.
    pub photo: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    pub user_sex: Option<u8>,
    /// Birthday, at most 32 characters, any notation.
    pub birth_day: Option<String>,
    /// At most 128 characters.
    pub location: Option<String>,
    /// Signature line, at most 256 characters.
    pub self_signature: Option<String>,
    /// Who may add this user: 1 anyone (default), 2 needs approval, 3 nobody.
    pub friend_allow_type: Option<u8>,
    /// Adding this user as a friend is disabled.
    pub disable_add_friend: Option<bool>,
    /// The user is muted.
    pub silent_flag: Option<bool>,
    /// Business data, at most 4096 characters.
    pub extra: Option<String>,
}

impl FromBody for UserData {
    const FIELDS: &'static [&'static str] = &[
        "userId",
        "nickName",
        "photo",
        "userSex",
        "birthDay",
        "location",
        "selfSignature",
        "friendAllowType",
        "disableAddFriend",
        "silentFlag",
        "extra",
    ];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self {
            user_id: f.req("userId")?,
            nick_name: f.opt("nickName")?,
            photo: f.opt("photo")?,
            user_sex: f.opt("userSex")?,
            birth_day: f.opt("birthDay")?,
            location: f.opt("location")?,
            self_signature: f.opt("selfSignature")?,
            friend_allow_type: f.opt("friendAllowType")?,
            disable_add_friend: f.opt("disableAddFriend")?,
            silent_flag: f.opt("silentFlag")?,
            extra: f.opt("extra")?,
        })
    }
}

impl UserData {
    /// Splits into the validated id and the fields; `prefix` is the item's path.
    fn into_parts(self, prefix: &str) -> Result<(UserId, ProfilePatch), ApiError> {
        let id = UserId::new(self.user_id).map_err(|e| ApiError::bad(format!("{prefix}userId"), e))?;
        let patch = ProfilePatch {
            nick_name: self.nick_name,
            photo: self.photo,
            user_sex: self.user_sex,
            birth_day: self.birth_day,
            location: self.location,
            self_signature: self.self_signature,
            friend_allow_type: self.friend_allow_type,
            disable_add_friend: self.disable_add_friend,
            silent_flag: self.silent_flag,
            extra: self.extra,
        };
        Ok((id, patch))
    }
}

/// Body of importUser.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ImportUserReq {
    /// The users, at most `http.max_batch` (default 100).
    #[schema(value_type = Vec<UserData>)]
    pub user_data: Vec<Value>,
}

impl FromBody for ImportUserReq {
    const FIELDS: &'static [&'static str] = &["userData"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_data: f.array("userData")?.to_vec() })
    }
}

/// A body that is a list of user ids.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UserIdsReq {
    /// The users, at most `http.max_batch` (default 100).
    pub user_ids: Vec<String>,
}

impl FromBody for UserIdsReq {
    const FIELDS: &'static [&'static str] = &["userIds"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_ids: f.req("userIds")? })
    }
}

/// Body of getUserInfo.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct GetUserInfoReq {
    /// The users, at most `http.max_batch` (default 100).
    pub user_ids: Vec<String>,
    /// Only these profile fields are returned (plus `userId`); absent: all. Names as
    /// in `UserProfile`, e.g. `["nickName", "photo"]`.
    pub fields: Option<Vec<String>>,
}

impl FromBody for GetUserInfoReq {
    const FIELDS: &'static [&'static str] = &["userIds", "fields"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_ids: f.req("userIds")?, fields: f.opt("fields")? })
    }
}

/// A body naming one user.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UserIdReq {
    pub user_id: String,
}

impl FromBody for UserIdReq {
    const FIELDS: &'static [&'static str] = &["userId"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_id: f.req("userId")? })
    }
}

/// Body of syncUserData.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SyncUserDataReq {
    /// Whose profile log to read.
    pub user_id: String,
    /// Answer changes with a sequence above this (0 or absent: from the start).
    pub last_sequence: Option<u64>,
    /// Most changes to answer: default 100, capped at 1000; 0 means the default.
    pub max_limit: Option<u64>,
}

impl FromBody for SyncUserDataReq {
    const FIELDS: &'static [&'static str] = &["userId", "lastSequence", "maxLimit"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_id: f.req("userId")?, last_sequence: f.opt("lastSequence")?, max_limit: f.opt("maxLimit")? })
    }
}

/// Body of login (optional: the user is the query's `identifier`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct LoginReq {
    /// If given, must equal `identifier` (60005 otherwise).
    pub user_id: Option<String>,
    /// The client type that will connect (1 iOS, 2 Android, 3 Web, 4 Windows, 5 Mac,
    /// 6 Linux). Accepted for compatibility; every client gets every address today.
    pub client_type: Option<u8>,
}

impl FromBody for LoginReq {
    const FIELDS: &'static [&'static str] = &["userId", "clientType"];

    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError> {
        Ok(Self { user_id: f.opt("userId")?, client_type: f.opt("clientType")? })
    }
}

// ---------------------------------------------------------------- response types

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
    fn new(user_id: impl Into<String>, e: &ApiError) -> Self {
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

/// A user's profile as answered by the read calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    pub user_id: String,
    pub nick_name: String,
    pub photo: String,
    /// 0 unknown, 1 male, 2 female.
    pub user_sex: u8,
    pub birth_day: String,
    pub location: String,
    pub self_signature: String,
    /// 1 anyone, 2 needs approval, 3 nobody.
    pub friend_allow_type: u8,
    pub disable_add_friend: bool,
    pub silent_flag: bool,
    pub extra: String,
    /// The user was deleted (its profile stays readable).
    pub deleted: bool,
    /// Created, milliseconds since the Unix epoch.
    pub create_time: u64,
    /// Last changed, milliseconds since the Unix epoch.
    pub update_time: u64,
}

/// Fields a `fields` filter of getUserInfo may name (`userId` is always returned).
pub const PROFILE_VIEW_FIELDS: [&str; 13] = [
    "nickName",
    "photo",
    "userSex",
    "birthDay",
    "location",
    "selfSignature",
    "friendAllowType",
    "disableAddFriend",
    "silentFlag",
    "extra",
    "deleted",
    "createTime",
    "updateTime",
];

impl From<UserRecord> for UserProfile {
    fn from(r: UserRecord) -> Self {
        Self {
            user_id: r.user_id.into_string(),
            nick_name: r.nick_name,
            photo: r.photo,
            user_sex: r.user_sex,
            birth_day: r.birth_day,
            location: r.location,
            self_signature: r.self_signature,
            friend_allow_type: r.friend_allow_type,
            disable_add_friend: r.disable_add_friend,
            silent_flag: r.silent_flag,
            extra: r.extra,
            deleted: r.deleted,
            create_time: r.created_ms,
            update_time: r.updated_ms,
        }
    }
}

/// Answer of getUserInfo.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetUserInfoResp {
    /// The found users, in request order; with `fields`, only those fields and `userId`.
    #[schema(value_type = Vec<UserProfile>)]
    pub user_data_item: Vec<Value>,
    /// Users not found (20001) or ids that are invalid (90001).
    pub error_id: Vec<ItemError>,
}

/// Answer of modifyUserInfo.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModifyUserInfoResp {
    pub user_id: String,
    /// The user's profile sequence after this call (unchanged if nothing changed).
    pub sequence: u64,
    /// The fields whose value actually changed; empty means nothing was written.
    pub changed_fields: Vec<String>,
}

/// One profile change in a sync answer: whose profile, and only the fields that
/// changed (a new user's first entry carries them all; a deletion carries
/// `deleted: true`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileChangeItem {
    pub sequence: u64,
    /// When the change was made, milliseconds since the Unix epoch.
    pub time: u64,
    /// Whose profile changed (the user's own, or later a friend's).
    pub user_id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_sex: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_signature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friend_allow_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_add_friend: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_flag: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
}

impl From<ProfileSyncEntry> for ProfileChangeItem {
    fn from(e: ProfileSyncEntry) -> Self {
        let f = e.change.fields;
        Self {
            sequence: e.seq.0,
            time: e.time_ms,
            user_id: e.change.user_id.into_string(),
            deleted: e.change.deleted,
            nick_name: f.nick_name,
            photo: f.photo,
            user_sex: f.user_sex,
            birth_day: f.birth_day,
            location: f.location,
            self_signature: f.self_signature,
            friend_allow_type: f.friend_allow_type,
            disable_add_friend: f.disable_add_friend,
            silent_flag: f.silent_flag,
            extra: f.extra,
        }
    }
}

/// Answer of syncUserData.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncUserDataResp {
    /// The user's committed profile sequence: nothing at or below it can appear later.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`: the next call would be empty. When
    /// false, call again with `lastSequence` = the last item's `sequence`.
    pub completed: bool,
    /// Changes with `sequence > lastSequence`, ascending.
    pub data_list: Vec<ProfileChangeItem>,
}

/// One online device.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDevice {
    /// 1 iOS, 2 Android, 3 Web, 4 Windows, 5 Mac, 6 Linux, 0 unknown.
    pub client_type: u8,
    pub device_id: String,
    /// Logged in since, milliseconds since the Unix epoch.
    pub since: u64,
}

/// One user's online status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOnlineStatus {
    pub user_id: String,
    /// At least one device is connected.
    pub online: bool,
    pub devices: Vec<OnlineDevice>,
}

/// Answer of queryOnlineStatus.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryOnlineStatusResp {
    /// In request order; users that do not exist are simply offline.
    pub status_list: Vec<UserOnlineStatus>,
    /// Invalid ids (90001).
    pub error_id: Vec<ItemError>,
}

/// Answer of login.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResp {
    pub user_id: String,
    /// Gateway TCP addresses (`host:port`, length-prefixed frames).
    pub tcp: Vec<String>,
    /// Gateway WebSocket URLs.
    pub ws: Vec<String>,
}

// ---------------------------------------------------------------- helpers

/// Refuses a batch over the limit before any item is looked at (20000).
fn check_batch(state: &ApiState, len: usize, field: &str) -> Result<(), ApiError> {
    state.users.check_batch(len).map_err(|e| ApiError::from_user(e, "", field))
}

/// Per-item errors of a batch, kept with their index so the answer lists them in
/// request order whatever stage found them.
#[derive(Default)]
struct ItemErrors(Vec<(usize, ItemError)>);

impl ItemErrors {
    fn push(&mut self, index: usize, e: ItemError) {
        self.0.push((index, e));
    }

    fn into_sorted(mut self) -> Vec<ItemError> {
        self.0.sort_by_key(|(i, _)| *i);
        self.0.into_iter().map(|(_, e)| e).collect()
    }
}

/// Validates a list of user ids: the valid ones with their index, and per-item errors.
fn parse_ids(raw: &[String], field: &str) -> (Vec<(usize, UserId)>, ItemErrors) {
    let mut ok = Vec::with_capacity(raw.len());
    let mut errors = ItemErrors::default();
    for (i, s) in raw.iter().enumerate() {
        match UserId::new(s.as_str()) {
            Ok(id) => ok.push((i, id)),
            Err(e) => errors.push(i, ItemError::new(s.as_str(), &ApiError::bad(format!("{field}[{i}]"), e))),
        }
    }
    (ok, errors)
}

fn one_id(raw: String) -> Result<UserId, ApiError> {
    let id = UserId::new(raw).map_err(|e| ApiError::bad("userId", e))?;
    tracing::Span::current().record("user_id", id.as_str());
    Ok(id)
}

// ---------------------------------------------------------------- handlers

/// Import users (batch create or update).
///
/// Creates each user of `userData`, or updates the fields given for a user that
/// exists (absent fields keep their value), so re-importing is idempotent: an item
/// that changes nothing writes nothing. Every change bumps the user's profile
/// sequence and notifies its online devices. Answers per item: a bad item lands in
/// `errorId` (90001 naming the field, 20002 for a deleted user, whose id cannot be
/// reused) and never fails the others. The whole call fails only if `userData` is
/// missing (90001) or longer than `http.max_batch` (20000).
#[utoipa::path(post, path = "/v1/user/importUser", tag = "users", params(AuthQuery), request_body = ImportUserReq,
    responses((status = 200, description = "Per-item results", body = Envelope<BatchResult>)))]
pub async fn import_user(State(state): State<Arc<ApiState>>, call: AdminCall<ImportUserReq>) -> ApiResult<BatchResult> {
    let items = call.body.user_data;
    check_batch(&state, items.len(), "userData")?;
    let mut errors = ItemErrors::default();
    let mut parsed: Vec<(usize, ImportItem)> = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let prefix = format!("userData[{i}].");
        let given_id = raw.get("userId").and_then(Value::as_str).unwrap_or_default();
        let item = item_object(raw, &format!("userData[{i}]")).and_then(|m| {
            let f = Fields::new(m, prefix.as_str());
            f.only(UserData::FIELDS, false)?;
            UserData::from_body(&f)?.into_parts(&prefix)
        });
        // Duplicates are refused here rather than by the service so the message cites
        // request indices (the service never sees the items that failed to parse).
        let item = item.and_then(|(user_id, fields)| match parsed.iter().find(|(_, it)| it.user_id == user_id) {
            Some((first, _)) => {
                Err(ApiError::bad(format!("{prefix}userId"), format!("duplicate of userData[{first}]")))
            }
            None => Ok(ImportItem { user_id, fields }),
        });
        match item {
            Ok(it) => parsed.push((i, it)),
            Err(e) => errors.push(i, ItemError::new(given_id, &e)),
        }
    }
    let (index, service_items): (Vec<usize>, Vec<ImportItem>) = parsed.into_iter().unzip();
    let ids: Vec<String> = service_items.iter().map(|it| it.user_id.to_string()).collect();
    let results =
        state.users.import(call.app, service_items).await.map_err(|e| ApiError::from_user(e, "", "userData"))?;
    let mut out = BatchResult::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(results) {
        match r {
            Ok(()) => out.success_id.push(id),
            Err(UserError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => errors.push(i, ItemError::new(id, &ApiError::from_user(e, &format!("userData[{i}]."), ""))),
        }
    }
    out.error_id = errors.into_sorted();
    Ok(ApiOk(out))
}

/// Delete users (batch).
///
/// Marks each user deleted: it can no longer log in or be changed, its online
/// sessions are kicked (reason: user deleted), and a deletion entry is added to its
/// profile log. Its data stays readable (others' history still names it). Deleting a
/// deleted user succeeds; an unknown user is a per-item 20001.
#[utoipa::path(post, path = "/v1/user/deleteUser", tag = "users", params(AuthQuery), request_body = UserIdsReq,
    responses((status = 200, description = "Per-item results", body = Envelope<BatchResult>)))]
pub async fn delete_user(State(state): State<Arc<ApiState>>, call: AdminCall<UserIdsReq>) -> ApiResult<BatchResult> {
    check_batch(&state, call.body.user_ids.len(), "userIds")?;
    let (ids, mut errors) = parse_ids(&call.body.user_ids, "userIds");
    let (index, ids): (Vec<usize>, Vec<UserId>) = ids.into_iter().unzip();
    let results = state.users.delete(call.app, &ids).await?;
    let mut out = BatchResult::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(results) {
        match r {
            Ok(()) => out.success_id.push(id.into_string()),
            Err(UserError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => errors.push(i, ItemError::new(id.into_string(), &e.into())),
        }
    }
    out.error_id = errors.into_sorted();
    Ok(ApiOk(out))
}

/// Client login: where to connect.
///
/// Authenticated by the user's own signature: `identifier` is the user id and
/// `userSign` its signature (no admin involved). Answers the gateway addresses the
/// client should connect to. An unknown user gets 20001, a deleted one 20002.
#[utoipa::path(post, path = "/v1/user/login", tag = "users", params(AuthQuery), request_body = LoginReq,
    responses((status = 200, description = "Gateway addresses", body = Envelope<LoginResp>)))]
pub async fn login(State(state): State<Arc<ApiState>>, call: UserCall<LoginReq>) -> ApiResult<LoginResp> {
    if let Some(named) = call.body.user_id.as_deref().filter(|n| *n != call.user.as_str()) {
        return Err(ApiError::OperatorMismatch(format!("`{}` may not log in as userId `{named}`", call.user)));
    }
    state.users.check_login(call.app, &call.user).await?;
    let cfg = &state.logic.config;
    Ok(ApiOk(LoginResp {
        user_id: call.user.into_string(),
        tcp: cfg.advertise_tcp.clone(),
        ws: cfg.advertise_ws.clone(),
    }))
}

/// Get profiles (batch), optionally only some fields.
///
/// Deleted users are returned with `deleted: true`. Unknown users (20001) and invalid
/// ids (90001) are listed in `errorId`. An unknown name in `fields` fails the call
/// with 90001 naming it.
#[utoipa::path(post, path = "/v1/user/data/getUserInfo", tag = "users", params(AuthQuery), request_body = GetUserInfoReq,
    responses((status = 200, description = "Profiles", body = Envelope<GetUserInfoResp>)))]
pub async fn get_user_info(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetUserInfoReq>,
) -> ApiResult<GetUserInfoResp> {
    let req = call.body;
    check_batch(&state, req.user_ids.len(), "userIds")?;
    if let Some(fields) = &req.fields {
        for (i, name) in fields.iter().enumerate() {
            if name != "userId" && !PROFILE_VIEW_FIELDS.contains(&name.as_str()) {
                return Err(ApiError::bad(
                    format!("fields[{i}]"),
                    format!("unknown field `{name}` (expected one of: {})", PROFILE_VIEW_FIELDS.join(", ")),
                ));
            }
        }
    }
    let (ids, mut errors) = parse_ids(&req.user_ids, "userIds");
    let (index, ids): (Vec<usize>, Vec<UserId>) = ids.into_iter().unzip();
    let found = state.users.get(call.app, &ids).await?;
    let mut out = GetUserInfoResp::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(found) {
        match r {
            Ok(rec) => {
                let mut v =
                    serde_json::to_value(UserProfile::from(rec)).map_err(|e| ApiError::Internal(e.to_string()))?;
                if let (Some(fields), Value::Object(map)) = (&req.fields, &mut v) {
                    map.retain(|k, _| k == "userId" || fields.iter().any(|f| f == k));
                }
                out.user_data_item.push(v);
            }
            Err(UserError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => errors.push(i, ItemError::new(id.into_string(), &e.into())),
        }
    }
    out.error_id = errors.into_sorted();
    Ok(ApiOk(out))
}

/// Get one user's full profile.
///
/// Deleted users are returned with `deleted: true`; an unknown user is 20001.
#[utoipa::path(post, path = "/v1/user/data/getSingleUserInfo", tag = "users", params(AuthQuery), request_body = UserIdReq,
    responses((status = 200, description = "The profile", body = Envelope<UserProfile>)))]
pub async fn get_single_user_info(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<UserIdReq>,
) -> ApiResult<UserProfile> {
    let id = one_id(call.body.user_id)?;
    Ok(ApiOk(state.users.get_one(call.app, &id).await?.into()))
}

/// Change profile fields.
///
/// Changes only the fields given (at least one); a field equal to its stored value is
/// not a change. If anything changed, the user's profile sequence is bumped, the change
/// is logged for syncUserData, and every online device of the user gets a sync
/// notification. A deleted user is 20002, an unknown one 20001.
#[utoipa::path(post, path = "/v1/user/data/modifyUserInfo", tag = "users", params(AuthQuery), request_body = UserData,
    responses((status = 200, description = "What changed", body = Envelope<ModifyUserInfoResp>)))]
pub async fn modify_user_info(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<UserData>,
) -> ApiResult<ModifyUserInfoResp> {
    let (id, patch) = call.body.into_parts("")?;
    tracing::Span::current().record("user_id", id.as_str());
    let m = state.users.modify(call.app, &id, patch).await?;
    Ok(ApiOk(ModifyUserInfoResp {
        user_id: id.into_string(),
        sequence: m.seq.0,
        changed_fields: m.changed.into_iter().map(String::from).collect(),
    }))
}

/// Incremental profile sync.
///
/// The profile changes with `sequence > lastSequence`, ascending, at most `maxLimit`.
/// Page with `lastSequence` = the last item's `sequence` while `completed` is false.
/// Each item names whose profile changed (`userId`): the user's own changes and those of
/// the users in their friend list (a friend's change is appended to the profile log of
/// everyone in that friend's list).
#[utoipa::path(post, path = "/v1/user/data/syncUserData", tag = "users", params(AuthQuery), request_body = SyncUserDataReq,
    responses((status = 200, description = "A page of changes", body = Envelope<SyncUserDataResp>)))]
pub async fn sync_user_data(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<SyncUserDataReq>,
) -> ApiResult<SyncUserDataResp> {
    let req = call.body;
    let id = one_id(req.user_id)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let limit = req.max_limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let page = state.users.sync(call.app, &id, after, limit).await?;
    Ok(ApiOk(SyncUserDataResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        data_list: page.entries.into_iter().map(ProfileChangeItem::from).collect(),
    }))
}

/// Online status (batch).
///
/// For each user: online or not, and each connected device (client type, device id,
/// since when). Users that do not exist are simply offline.
#[utoipa::path(post, path = "/v1/user/queryOnlineStatus", tag = "users", params(AuthQuery), request_body = UserIdsReq,
    responses((status = 200, description = "Per-user status", body = Envelope<QueryOnlineStatusResp>)))]
pub async fn query_online_status(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<UserIdsReq>,
) -> ApiResult<QueryOnlineStatusResp> {
    check_batch(&state, call.body.user_ids.len(), "userIds")?;
    let (ids, errors) = parse_ids(&call.body.user_ids, "userIds");
    let ids: Vec<UserId> = ids.into_iter().map(|(_, id)| id).collect();
    let sessions = state.users.online_status(call.app, &ids)?;
    let status_list = ids
        .into_iter()
        .zip(sessions)
        .map(|(id, devices)| UserOnlineStatus {
            user_id: id.into_string(),
            online: !devices.is_empty(),
            devices: devices
                .into_iter()
                .map(|s| OnlineDevice { client_type: s.client_type, device_id: s.device_id, since: s.since_ms })
                .collect(),
        })
        .collect();
    Ok(ApiOk(QueryOnlineStatusResp { status_list, error_id: errors.into_sorted() }))
}

/// Error codes of each user call besides the ones every call can answer
/// (authentication, 90000, 90001, 90002): (path, codes failing the whole call, codes
/// of single items in `errorId`). The OpenAPI document and `/docs` are built from it.
pub const PATH_ERRORS: &[(&str, &[u32], &[u32])] = &[
    ("/v1/user/importUser", &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_DELETED]),
    ("/v1/user/deleteUser", &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_NOT_FOUND]),
    ("/v1/user/login", &[codes::USER_NOT_FOUND, codes::USER_DELETED], &[]),
    ("/v1/user/data/getUserInfo", &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_NOT_FOUND]),
    ("/v1/user/data/getSingleUserInfo", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/user/data/modifyUserInfo", &[codes::USER_NOT_FOUND, codes::USER_DELETED], &[]),
    ("/v1/user/data/syncUserData", &[codes::USER_NOT_FOUND], &[]),
    ("/v1/user/queryOnlineStatus", &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::check_fields;
    use crate::users::PROFILE_FIELDS;

    /// Property names of a schema (its JSON form).

    #[test]
    fn parsers_accept_exactly_the_documented_fields() {
        check_fields::<UserData>(UserData::FIELDS);
        check_fields::<ImportUserReq>(ImportUserReq::FIELDS);
        check_fields::<UserIdsReq>(UserIdsReq::FIELDS);
        check_fields::<GetUserInfoReq>(GetUserInfoReq::FIELDS);
        check_fields::<UserIdReq>(UserIdReq::FIELDS);
        check_fields::<SyncUserDataReq>(SyncUserDataReq::FIELDS);
        check_fields::<LoginReq>(LoginReq::FIELDS);
    }

    #[test]
    fn profile_field_lists_agree() {
        let mut view: Vec<&str> = PROFILE_VIEW_FIELDS.to_vec();
        view.push("userId");
        check_fields::<UserProfile>(&view);
        assert_eq!(&UserData::FIELDS[1..], &PROFILE_FIELDS[..]);
    }
}
