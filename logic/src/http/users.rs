//! `/v1/user/...`: the user calls of the management API. Each handler parses its body
//! (per item for batches, so one bad item never fails the others), calls
//! [`crate::users::Users`] and shapes the answer. Field names are the original system's
//! camelCase ones.
//!
//! This module must never hold business rules (limits, deletion semantics, seqs,
//! notifications): those live in `crate::users`. It only translates.

use std::sync::Arc;

use crate::error::ServiceError;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tern_schema::codes;
use tern_storage::{Seq, UserId, UserRecord};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery, UserCall};
use super::common::{check_batch, parse_ids, subject, ApiResult, BatchResult, ItemError, ItemErrors};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::extract::parse_value;
use super::ApiState;
use crate::users::{ImportItem, ProfilePatch, ProfileSyncEntry, BATCH_TOO_LARGE};

/// The user endpoints, each with its own error codes (besides the common ones) and the
/// original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(routes!(import_user), &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_DELETED])
        .add(routes!(delete_user), &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_NOT_FOUND])
        .add(
            routes!(login),
            &[codes::USER_NOT_FOUND, codes::USER_DELETED, crate::messages::errors::SENDER_DISABLED],
            &[],
        )
        .add(routes!(get_user_info), &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER, codes::USER_NOT_FOUND])
        .add(routes!(get_single_user_info), &[codes::USER_NOT_FOUND], &[])
        .add(routes!(modify_user_info), &[codes::USER_NOT_FOUND, codes::USER_DELETED], &[])
        .add(routes!(sync_user_data), &[codes::USER_NOT_FOUND], &[])
        .add(routes!(query_online_status), &[BATCH_TOO_LARGE], &[codes::BAD_PARAMETER])
        .alias("/v1/user/queryUserOnlineStatus")
        .alias("/v1/user/qeuryOnlineStatus")
}

// ---------------------------------------------------------------- request types

/// A user's profile fields as given to importUser (one item of `userData`) and
/// modifyUserInfo (the body). Absent or null fields are not changed (import: a new
/// user gets the defaults). Lengths are in characters.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserData {
    /// 1..=64 of ASCII letters, digits and `_-.@`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub user_id: String,
    /// Display name, at most 64 characters.
    pub nick_name: Option<String>,
    /// Avatar URL, at most 512 characters.
    pub photo: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    #[schema(minimum = 0, maximum = 2)]
    pub user_sex: Option<u8>,
    /// Birthday, at most 32 characters, any notation.
    pub birth_day: Option<String>,
    /// At most 128 characters.
    pub location: Option<String>,
    /// Signature line, at most 256 characters.
    pub self_signature: Option<String>,
    /// Who may add this user: 1 anyone (default), 2 needs approval, 3 nobody.
    #[schema(minimum = 1, maximum = 3)]
    pub friend_allow_type: Option<u8>,
    /// Adding this user as a friend is disabled.
    pub disable_add_friend: Option<bool>,
    /// The user is muted: it may not send (50002).
    pub silent_flag: Option<bool>,
    /// The user is disabled: it may neither log in nor send (50003).
    pub forbidden_flag: Option<bool>,
    /// Business data, at most 4096 characters.
    pub extra: Option<String>,
    /// The original system's login password, accepted so its requests work unchanged.
    /// Stored only as a salted Argon2id hash (an empty string clears it), never returned
    /// nor synced; Tern itself authenticates clients by signature.
    #[schema(max_length = 128, write_only)]
    pub password: Option<String>,
}

impl UserData {
    /// Splits into the validated id and the fields; `prefix` is the item's path.
    fn into_parts(self, prefix: &str) -> Result<(UserId, ProfilePatch, Option<String>), ApiError> {
        let id = UserId::new(self.user_id).map_err(|e| ApiError::bad(format!("{prefix}userId"), e))?;
        let max = crate::password::MAX_PASSWORD_CHARS;
        if self.password.as_ref().is_some_and(|p| p.chars().count() > max) {
            return Err(ApiError::bad(format!("{prefix}password"), format!("longer than {max} characters")));
        }
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
            forbidden_flag: self.forbidden_flag,
            extra: self.extra,
        };
        Ok((id, patch, self.password))
    }
}

/// Body of importUser.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportUserReq {
    /// The users, at most `http.max_batch` (default 100).
    #[schema(value_type = Vec<UserData>)]
    pub user_data: Vec<Value>,
}

/// Body of deleteUser: the users as `userIds`, or as `userId` (the original system's
/// name for the same list); exactly one of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteUserReq {
    /// The users, at most `http.max_batch` (default 100).
    #[schema(max_items = 1000)]
    pub user_ids: Option<Vec<String>>,
    /// The same list under the original system's name.
    #[schema(max_items = 1000)]
    pub user_id: Option<Vec<String>>,
}

/// Body of queryOnlineStatus: the users as `userIds`, or as `userList` (the original
/// system's name); exactly one of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryOnlineStatusReq {
    /// The users, at most `http.max_batch` (default 100).
    #[schema(max_items = 1000)]
    pub user_ids: Option<Vec<String>>,
    /// The same list under the original system's name.
    #[schema(max_items = 1000)]
    pub user_list: Option<Vec<String>>,
}

/// One list given under either of two names (Tern's and the original system's).
fn either_list(
    ours: Option<Vec<String>>,
    theirs: Option<Vec<String>>,
    ours_name: &'static str,
    theirs_name: &'static str,
) -> Result<(Vec<String>, &'static str), ApiError> {
    match (ours, theirs) {
        (Some(l), None) => Ok((l, ours_name)),
        (None, Some(l)) => Ok((l, theirs_name)),
        (None, None) => Err(ApiError::bad(ours_name, format!("missing (or give {theirs_name})"))),
        (Some(_), Some(_)) => Err(ApiError::bad(theirs_name, format!("give {ours_name} or {theirs_name}, not both"))),
    }
}

/// Body of getUserInfo.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetUserInfoReq {
    /// The users, at most `http.max_batch` (default 100).
    pub user_ids: Vec<String>,
    /// Only these profile fields are returned (plus `userId`); absent: all. Names as
    /// in `UserProfile`, e.g. `["nickName", "photo"]`.
    pub fields: Option<Vec<String>>,
}

/// A body naming one user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserIdReq {
    pub user_id: String,
}

/// Body of syncUserData.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncUserDataReq {
    /// Whose profile log to read.
    pub user_id: String,
    /// Answer changes with a sequence above this (0 or absent: from the start).
    pub last_sequence: Option<u64>,
    /// Most changes to answer: default 100, capped at 1000; 0 means the default.
    pub max_limit: Option<u64>,
}

/// Body of login (optional: the user is the query's `identifier`). The common field
/// `clientType` picks `ip`/`port` of the answer (1 web: WebSocket, else TCP).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginReq {
    /// If given, must equal `identifier` (60005 otherwise).
    pub user_id: Option<String>,
}

// ---------------------------------------------------------------- response types

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
    pub forbidden_flag: bool,
    pub extra: String,
    /// The user was deleted (its profile stays readable).
    pub deleted: bool,
    /// Created, milliseconds since the Unix epoch.
    pub create_time: u64,
    /// Last changed, milliseconds since the Unix epoch.
    pub update_time: u64,
}

/// A profile as getUserInfo answers it: `userId`, and the fields its `fields` filter
/// names (all of them without a filter). The same fields as `UserProfile`, each one
/// present only if asked for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserProfileView {
    pub user_id: String,
    pub nick_name: Option<String>,
    pub photo: Option<String>,
    pub user_sex: Option<u8>,
    pub birth_day: Option<String>,
    pub location: Option<String>,
    pub self_signature: Option<String>,
    pub friend_allow_type: Option<u8>,
    pub disable_add_friend: Option<bool>,
    pub silent_flag: Option<bool>,
    pub forbidden_flag: Option<bool>,
    pub extra: Option<String>,
    pub deleted: Option<bool>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

/// Fields a `fields` filter of getUserInfo may name (`userId` is always returned).
pub const PROFILE_VIEW_FIELDS: [&str; 14] = [
    "nickName",
    "photo",
    "userSex",
    "birthDay",
    "location",
    "selfSignature",
    "friendAllowType",
    "disableAddFriend",
    "silentFlag",
    "forbiddenFlag",
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
            forbidden_flag: r.forbidden_flag,
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
    /// The found users, in request order; with `fields`, only those fields and `userId`
    /// (without it, every field).
    #[schema(value_type = Vec<UserProfileView>)]
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
    pub forbidden_flag: Option<bool>,
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
            forbidden_flag: f.forbidden_flag,
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
    /// As the original numbered it: 0 webApi, 1 web, 2 ios, 3 android, 4 windows, 5 mac (6 linux).
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
    /// The original system's RouteInfo: the host of the first gateway address for the
    /// caller's `clientType` (1 web: WebSocket, otherwise TCP); absent if none is
    /// configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `host` and `port` of `host:port` or of a `ws://host:port/path` URL.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?))
}

// ---------------------------------------------------------------- helpers

fn one_id(raw: String) -> Result<UserId, ApiError> {
    subject(raw, "userId")
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
        let item =
            parse_value::<UserData>(raw.clone(), &format!("userData[{i}]")).and_then(|data| data.into_parts(&prefix));
        // Duplicates are refused here rather than by the service so the message cites
        // request indices (the service never sees the items that failed to parse).
        let item =
            item.and_then(|(user_id, fields, password)| match parsed.iter().find(|(_, it)| it.user_id == user_id) {
                Some((first, _)) => {
                    Err(ApiError::bad(format!("{prefix}userId"), format!("duplicate of userData[{first}]")))
                }
                None => Ok(ImportItem { user_id, fields, password }),
            });
        match item {
            Ok(it) => parsed.push((i, it)),
            Err(e) => errors.push(i, ItemError::new(given_id, &e)),
        }
    }
    let (index, service_items): (Vec<usize>, Vec<ImportItem>) = parsed.into_iter().unzip();
    let ids: Vec<String> = service_items.iter().map(|it| it.user_id.to_string()).collect();
    let results =
        state.users.import(call.app, service_items).await.map_err(|e| ApiError::from_service(e, "", "userData"))?;
    let mut out = BatchResult::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(results) {
        match r {
            Ok(()) => out.success_id.push(id),
            Err(ServiceError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
            Err(e) => errors.push(i, ItemError::new(id, &ApiError::from_service(e, &format!("userData[{i}]."), ""))),
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
#[utoipa::path(post, path = "/v1/user/deleteUser", tag = "users", params(AuthQuery), request_body = DeleteUserReq,
    responses((status = 200, description = "Per-item results", body = Envelope<BatchResult>)))]
pub async fn delete_user(State(state): State<Arc<ApiState>>, call: AdminCall<DeleteUserReq>) -> ApiResult<BatchResult> {
    let (list, field) = either_list(call.body.user_ids, call.body.user_id, "userIds", "userId")?;
    let (ids, mut errors) = parse_ids(&state, &list, field)?;
    let (index, ids): (Vec<usize>, Vec<UserId>) = ids.into_iter().unzip();
    let results = state.users.delete(call.app, &ids).await?;
    let mut out = BatchResult::default();
    for ((i, id), r) in index.into_iter().zip(ids).zip(results) {
        match r {
            Ok(()) => out.success_id.push(id.into_string()),
            Err(ServiceError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
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
/// client should connect to. An unknown user gets 20001, a deleted one 20002, a disabled
/// one (`forbiddenFlag`) 50003.
#[utoipa::path(post, path = "/v1/user/login", tag = "users", params(AuthQuery), request_body = LoginReq,
    responses((status = 200, description = "Gateway addresses", body = Envelope<LoginResp>)))]
pub async fn login(State(state): State<Arc<ApiState>>, call: UserCall<LoginReq>) -> ApiResult<LoginResp> {
    if let Some(named) = call.body.user_id.as_deref().filter(|n| *n != call.user.as_str()) {
        return Err(ApiError::OperatorMismatch(format!("`{}` may not log in as userId `{named}`", call.user)));
    }
    state.users.check_login(call.app, &call.user).await?;
    let cfg = &state.logic.config;
    let web = call.common.client_type == Some(tern_schema::client::ClientType::Web.0);
    let route = if web { cfg.advertise_ws.first() } else { cfg.advertise_tcp.first() }.and_then(|a| host_port(a));
    let (ip, port) = route.map_or((None, None), |(h, p)| (Some(h), Some(p)));
    Ok(ApiOk(LoginResp {
        user_id: call.user.into_string(),
        tcp: cfg.advertise_tcp.clone(),
        ws: cfg.advertise_ws.clone(),
        ip,
        port,
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
    let (ids, mut errors) = parse_ids(&state, &req.user_ids, "userIds")?;
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
            Err(ServiceError::Store(e)) => return Err(ApiError::Internal(e.to_string())),
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
    let (id, patch, password) = call.body.into_parts("")?;
    tracing::Span::current().record("user_id", id.as_str());
    let m = state.users.modify(call.app, &id, patch, password).await?;
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
#[utoipa::path(post, path = "/v1/user/queryOnlineStatus", tag = "users", params(AuthQuery),
    request_body = QueryOnlineStatusReq,
    responses((status = 200, description = "Per-user status", body = Envelope<QueryOnlineStatusResp>)))]
pub async fn query_online_status(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<QueryOnlineStatusReq>,
) -> ApiResult<QueryOnlineStatusResp> {
    let (list, field) = either_list(call.body.user_ids, call.body.user_list, "userIds", "userList")?;
    let (ids, errors) = parse_ids(&state, &list, field)?;
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
                .map(|s| OnlineDevice {
                    client_type: s.client_type,
                    device_id: s.device_id.to_string(),
                    since: s.since_ms,
                })
                .collect(),
        })
        .collect();
    Ok(ApiOk(QueryOnlineStatusResp { status_list, error_id: errors.into_sorted() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::PROFILE_FIELDS;
    use utoipa::PartialSchema;

    /// Property names of a schema, in declaration order.
    fn schema_fields<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).expect("schemas serialize");
        schema["properties"].as_object().expect("an object schema").keys().cloned().collect()
    }

    #[test]
    fn profile_field_lists_agree() {
        let mut view: Vec<String> = PROFILE_VIEW_FIELDS.iter().map(|s| s.to_string()).collect();
        view.push("userId".into());
        let mut documented = schema_fields::<UserProfile>();
        view.sort();
        documented.sort();
        assert_eq!(documented, view);
        let mut settable = schema_fields::<UserData>();
        settable.retain(|f| f != "userId" && f != "password");
        let mut profile: Vec<String> = PROFILE_FIELDS.iter().map(|s| s.to_string()).collect();
        settable.sort();
        profile.sort();
        assert_eq!(settable, profile);
    }

    #[test]
    fn the_filtered_view_has_the_profiles_fields() {
        let mut view = schema_fields::<UserProfileView>();
        let mut full = schema_fields::<UserProfile>();
        view.sort();
        full.sort();
        assert_eq!(view, full);
        let schema = serde_json::to_value(UserProfileView::schema()).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["userId"]), "{schema}");
    }

    #[test]
    fn routes_of_the_original_login() {
        assert_eq!(host_port("127.0.0.1:9000"), Some(("127.0.0.1".into(), 9000)));
        assert_eq!(host_port("ws://gw.example:19000/ws"), Some(("gw.example".into(), 19000)));
        assert_eq!(host_port("[::1]:9000"), Some(("::1".into(), 9000)));
        assert_eq!(host_port("nope"), None);
    }
}
