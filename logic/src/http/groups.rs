//! `/v1/group/...`: groups. Each handler parses its body, calls [`crate::groups`] and
//! shapes the answer; field names are the original system's camelCase ones (`groupId`,
//! `groupType`, `memberId`, `role`, `alias`, `speakDate`, ...), and its controller
//! paths (`getGroupInfo`, `transferGroup`, `member/add`, ...) are aliases.
//!
//! Who acts: an app admin may do everything. A call whose common field `operater`
//! names a user other than the admin calling acts as that user, held to their role in
//! the group (owner / admin / member).
//!
//! This module must never hold business rules (roles, limits, what a change writes or
//! notifies): those live in `crate::groups`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tern_schema::codes;
use tern_storage::{GroupId, GroupMemberRecord, GroupRecord, Seq, UserId};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{check_batch, page_limit, subject, user_id, ApiResult, BatchResult, ItemError, SyncReq};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::extract::Common;
use super::messages::{send_refusal, MessageItem, OwnedElem, SendContent, SendMsgResp};
use super::ApiState;
use crate::config::MAX_PAGE_LIMIT;
use crate::groups::{self, errors as g, Actor, GroupInput, GroupPatch, ItemResults, MemberInput};
use crate::users::BATCH_TOO_LARGE;

const U_NF: u32 = codes::USER_NOT_FOUND;
const U_DEL: u32 = codes::USER_DELETED;

/// The group endpoints, each with its own error codes (besides the common ones) and the
/// original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(
        routes!(create_group),
        &[g::GROUP_EXISTS, g::PUBLIC_NEEDS_OWNER, U_NF, U_DEL, BATCH_TOO_LARGE],
        &[U_NF, U_DEL, g::ALREADY_MEMBER, g::GROUP_FULL],
    )
    .add(routes!(get), &[g::NO_SUCH_GROUP], &[])
    .alias("/v1/group/getGroupInfo")
    .add(routes!(get_all), &[], &[])
    .add(routes!(get_group_member), &[g::NO_SUCH_GROUP], &[])
    .add(routes!(update), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::ADMIN_ONLY], &[])
    .add(
        routes!(add_member),
        &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::ADMIN_ONLY, BATCH_TOO_LARGE],
        &[codes::BAD_PARAMETER, U_NF, U_DEL, g::ALREADY_MEMBER, g::GROUP_FULL, g::OWNER_ONLY],
    )
    .alias("/v1/group/member/add")
    .add(
        routes!(delete_member),
        &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, BATCH_TOO_LARGE],
        &[codes::BAD_PARAMETER, g::NOT_MEMBER, g::ADMIN_ONLY, g::OWNER_NOT_REMOVABLE],
    )
    .alias("/v1/group/member/remove")
    .add(routes!(update_member), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::ADMIN_ONLY, g::OWNER_ONLY], &[])
    .alias("/v1/group/member/update")
    .add(routes!(destroy_group), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::OWNER_ONLY], &[])
    .add(routes!(get_joined_group), &[U_NF, U_DEL], &[])
    .add(routes!(sync_joined_group), &[U_NF, U_DEL], &[])
    .add(routes!(get_role_in_group), &[g::NO_SUCH_GROUP, BATCH_TOO_LARGE], &[codes::BAD_PARAMETER])
    .add(
        routes!(forbid_send_msg),
        &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::ADMIN_ONLY, BATCH_TOO_LARGE],
        &[codes::BAD_PARAMETER, g::NOT_MEMBER, g::ADMIN_ONLY],
    )
    .alias("/v1/group/member/speak")
    .add(routes!(get_group_shutted_uin), &[g::NO_SUCH_GROUP], &[])
    // The original API's member exit and whole-group mute (issue 11).
    .add(routes!(quit_group), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::OWNER_NOT_REMOVABLE], &[])
    .alias("/v1/group/member/exit")
    .add(routes!(forbid_send_message), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::ADMIN_ONLY], &[])
    .add(routes!(change_group_owner), &[g::NO_SUCH_GROUP, g::DESTROYED, g::NOT_MEMBER, g::OWNER_ONLY], &[])
    .alias("/v1/group/transferGroup")
    .add(
        routes!(import_group),
        &[g::GROUP_EXISTS, g::PUBLIC_NEEDS_OWNER, U_NF, U_DEL, BATCH_TOO_LARGE],
        &[U_NF, U_DEL, g::ALREADY_MEMBER, g::GROUP_FULL],
    )
    .alias("/v1/group/importGroup")
    .add(
        routes!(import_member),
        &[g::NO_SUCH_GROUP, g::DESTROYED, BATCH_TOO_LARGE],
        &[codes::BAD_PARAMETER, U_NF, U_DEL, g::ALREADY_MEMBER, g::GROUP_FULL],
    )
    .alias("/v1/group/member/importGroupMember")
    .add(
        routes!(send_message),
        &[
            g::NO_SUCH_GROUP,
            g::DESTROYED,
            g::NOT_MEMBER,
            g::GROUP_MUTED,
            g::MEMBER_MUTED,
            U_NF,
            U_DEL,
            crate::messages::errors::SENDER_MUTED,
            crate::messages::errors::INVALID_MESSAGE,
            crate::messages::errors::BODY_TOO_LARGE,
            crate::callbacks::errors::REFUSED_BY_APP,
            crate::callbacks::errors::APP_UNAVAILABLE,
            crate::callbacks::errors::APP_CODE_FIRST,
        ],
        &[],
    )
    .add(routes!(pull_message), &[g::NO_SUCH_GROUP, g::NOT_MEMBER], &[])
    .add(routes!(get_history_message), &[g::NO_SUCH_GROUP, g::NOT_MEMBER], &[])
    .add(routes!(read_message), &[g::NO_SUCH_GROUP, g::NOT_MEMBER, crate::messages::errors::INVALID_MESSAGE], &[])
    .add(routes!(get_read_receipt), &[g::NO_SUCH_GROUP, crate::messages::errors::NO_SUCH_MESSAGE], &[])
    .add(
        routes!(withdraw_message),
        &[
            g::NO_SUCH_GROUP,
            crate::messages::errors::NO_SUCH_MESSAGE,
            crate::messages::errors::NOT_A_PARTY,
            crate::messages::errors::RECALL_WINDOW_PASSED,
            crate::messages::errors::ALREADY_RECALLED,
        ],
        &[],
    )
}

// ---------------------------------------------------------------- helpers

fn group_id(raw: &str, field: &str) -> Result<GroupId, ApiError> {
    GroupId::new(raw).map_err(|e| ApiError::bad(field, e))
}

/// The actor: the user `operater` names (unless it is the admin calling), else the
/// app admin.
fn actor(call_identifier: &str, common: &Common) -> Result<Actor, ApiError> {
    match &common.operater {
        Some(op) if op != call_identifier => Ok(Actor::User(subject(op.clone(), "operater")?)),
        _ => Ok(Actor::Admin),
    }
}

/// Per-item results as `{successId, errorId}` in request order: `idx` are the request
/// indices of the items the service answered (in its order), `pre` the items refused
/// before (with their indices).
fn batch(results: ItemResults, idx: Vec<usize>, pre: Vec<(usize, ItemError)>) -> BatchResult {
    let mut out = BatchResult::default();
    let mut errors = pre;
    for ((id, r), i) in results.into_iter().zip(idx) {
        match r {
            Ok(()) => out.success_id.push(id.into_string()),
            Err(e) => errors.push((i, ItemError::new(id.as_str(), &ApiError::from(e)))),
        }
    }
    errors.sort_by_key(|(i, _)| *i);
    out.error_id = errors.into_iter().map(|(_, e)| e).collect();
    out
}

/// Valid items with their request indices, and the refused ones.
type Parsed<T> = (Vec<T>, Vec<usize>, Vec<(usize, ItemError)>);

/// Parses member items: the valid ones and per-item errors (by index).
fn parse_members(
    state: &ApiState,
    items: Vec<MemberItem>,
    field: &str,
    import: bool,
) -> Result<Parsed<MemberInput>, ApiError> {
    check_batch(state, items.len(), field)?;
    let (mut ok, mut idx, mut errors) = (Vec::with_capacity(items.len()), Vec::new(), Vec::new());
    for (i, m) in items.into_iter().enumerate() {
        let raw = m.member_id.clone();
        match m.into_input(import) {
            Ok(input) => {
                ok.push(input);
                idx.push(i);
            }
            Err(reason) => {
                errors.push((i, ItemError::new(raw, &ApiError::BadParameter(format!("{field}[{i}].{reason}")))))
            }
        }
    }
    Ok((ok, idx, errors))
}

fn parse_member_ids(state: &ApiState, raw: Vec<String>, field: &str) -> Result<Parsed<UserId>, ApiError> {
    check_batch(state, raw.len(), field)?;
    let (mut ok, mut idx, mut errors) = (Vec::with_capacity(raw.len()), Vec::new(), Vec::new());
    for (i, s) in raw.into_iter().enumerate() {
        match UserId::new(s.as_str()) {
            Ok(id) => {
                ok.push(id);
                idx.push(i);
            }
            Err(e) => errors.push((i, ItemError::new(s, &ApiError::bad(format!("{field}[{i}]"), e)))),
        }
    }
    Ok((ok, idx, errors))
}

// ---------------------------------------------------------------- request types

/// A member as given to createGroup / addMember / importMember. Lengths in characters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberItem {
    /// The user (must exist and not be deleted).
    pub member_id: String,
    /// 0 member (default), 1 admin. The owner is the group's `ownerId`.
    #[schema(minimum = 0, maximum = 1)]
    pub role: Option<u8>,
    /// The member's name card, at most 64 characters.
    pub alias: Option<String>,
    /// How the member joined (free text), at most 64 characters.
    pub join_type: Option<String>,
    /// importMember only: the original join time (ms since the Unix epoch).
    pub join_time: Option<u64>,
    /// importMember only: muted until (ms since the Unix epoch).
    pub speak_date: Option<u64>,
    /// Business data, at most 2048 characters.
    pub extra: Option<String>,
}

impl MemberItem {
    /// The service's input; on error the failing field (and why).
    fn into_input(self, import: bool) -> Result<MemberInput, String> {
        let member_id = UserId::new(self.member_id).map_err(|e| format!("memberId: {e}"))?;
        if !import && (self.join_time.is_some() || self.speak_date.is_some()) {
            return Err("joinTime: only importMember keeps given join times and mutes".into());
        }
        Ok(MemberInput {
            member_id,
            role: self.role.unwrap_or(0),
            alias: self.alias.unwrap_or_default(),
            join_type: self.join_type.unwrap_or_default(),
            join_time_ms: self.join_time,
            mute_until_ms: self.speak_date.unwrap_or(0),
            extra: self.extra.unwrap_or_default(),
        })
    }
}

/// Body of /group/createGroup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroupReq {
    /// The group's id (1..=64 of ASCII letters, digits and `_-.@`); absent: generated.
    pub group_id: Option<String>,
    /// 1 private/work, 2 public (needs an owner), 3 meeting/chat room, 4 community.
    #[schema(minimum = 1, maximum = 4)]
    pub group_type: u8,
    /// At most 64 characters.
    pub group_name: Option<String>,
    /// The owner (a member with role 2); absent: a group without owner (not public).
    pub owner_id: Option<String>,
    /// The whole group is muted: only the owner and admins may send.
    pub mute: Option<bool>,
    /// How users may join (opaque).
    pub apply_join_type: Option<u8>,
    /// At most 2048 characters.
    pub introduction: Option<String>,
    /// At most 2048 characters.
    pub notification: Option<String>,
    /// Avatar URL, at most 512 characters.
    pub photo: Option<String>,
    /// Most members; absent or 0: 100,000.
    pub max_member_count: Option<u32>,
    /// Business data, at most 2048 characters.
    pub extra: Option<String>,
    /// Initial members, at most `http.max_batch` (the original's `member`).
    #[serde(alias = "member")]
    pub member_list: Option<Vec<MemberItem>>,
}

/// Body of /group/import: createGroup's fields plus the original create time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportGroupReq {
    pub group_id: Option<String>,
    #[schema(minimum = 1, maximum = 4)]
    pub group_type: u8,
    pub group_name: Option<String>,
    pub owner_id: Option<String>,
    pub mute: Option<bool>,
    pub apply_join_type: Option<u8>,
    pub introduction: Option<String>,
    pub notification: Option<String>,
    pub photo: Option<String>,
    pub max_member_count: Option<u32>,
    pub extra: Option<String>,
    /// When the group was created (ms since the Unix epoch); absent: now.
    pub create_time: Option<u64>,
    /// Members with their join times, at most `http.max_batch`.
    #[serde(alias = "member")]
    pub member_list: Option<Vec<MemberItem>>,
}

/// A body naming one group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupIdReq {
    pub group_id: String,
}

/// Body of /group/get.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetGroupReq {
    pub group_id: String,
    /// Most members to list with the profile: default 100, capped at 1000 (page the
    /// rest with /group/getGroupMember).
    pub member_limit: Option<u64>,
}

/// Body of /group/getAll.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetAllReq {
    /// Only groups of these types; absent or empty: every type.
    pub group_type: Option<Vec<u8>>,
    /// The previous page's `nextGroupId`; absent: the first page.
    pub after_group_id: Option<String>,
    /// Most groups per page: default 100, capped at 1000.
    pub limit: Option<u64>,
}

/// Body of /group/getGroupMember.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetGroupMemberReq {
    pub group_id: String,
    /// The previous page's `nextMemberId`; absent: the first page.
    pub after_member_id: Option<String>,
    /// Most members per page: default 100, capped at 1000.
    pub limit: Option<u64>,
}

/// Body of /group/update: absent fields are not changed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateGroupReq {
    pub group_id: String,
    pub group_name: Option<String>,
    pub introduction: Option<String>,
    pub notification: Option<String>,
    pub photo: Option<String>,
    pub apply_join_type: Option<u8>,
    /// Mute or unmute the whole group.
    pub mute: Option<bool>,
    pub max_member_count: Option<u32>,
    pub extra: Option<String>,
}

/// Body of /group/addMember and /group/importMember.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMemberReq {
    pub group_id: String,
    /// At most `http.max_batch`.
    pub members: Vec<MemberItem>,
    /// addMember: add without notifying anyone.
    pub silent: Option<bool>,
}

/// Body of /group/deleteMember: `memberIds`, or one `memberId` (the original's
/// `member/remove`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteMemberReq {
    pub group_id: String,
    pub member_ids: Option<Vec<String>>,
    pub member_id: Option<String>,
}

/// Body of /group/updateMember: absent fields are not changed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMemberReq {
    pub group_id: String,
    pub member_id: String,
    /// 0 member, 1 admin (owner only).
    #[schema(minimum = 0, maximum = 1)]
    pub role: Option<u8>,
    pub alias: Option<String>,
    pub extra: Option<String>,
}

/// Body of /group/getJoinedGroup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetJoinedGroupReq {
    /// Whose groups.
    pub member_id: String,
    /// Only groups of these types; absent or empty: every type.
    pub group_type: Option<Vec<u8>>,
    /// Most groups per page: default 100, capped at 1000.
    pub limit: Option<u64>,
    /// Groups to skip (in group id order).
    pub offset: Option<u64>,
}

/// Body of /group/getRoleInGroup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetRoleInGroupReq {
    pub group_id: String,
    /// At most `http.max_batch`.
    pub member_ids: Vec<String>,
}

/// Body of /group/forbidSendMsg: `memberIds` muted for `shutUpTime` seconds (0
/// unmutes), or the original's `member/speak`: one `memberId` muted until `speakDate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForbidSendMsgReq {
    pub group_id: String,
    pub member_ids: Option<Vec<String>>,
    pub member_id: Option<String>,
    /// Seconds from now; 0 unmutes.
    pub shut_up_time: Option<u64>,
    /// Muted until (ms since the Unix epoch); 0 unmutes.
    pub speak_date: Option<u64>,
}

/// Body of /group/quitGroup (the original's `member/exit`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuitGroupReq {
    pub group_id: String,
    /// The member who leaves.
    pub member_id: String,
}

/// Body of /group/forbidSendMessage (the original's whole-group mute).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForbidSendMessageReq {
    pub group_id: String,
    /// true mutes the whole group (only the owner and admins may send), false unmutes.
    pub mute: bool,
}

/// Body of /group/changeGroupOwner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeOwnerReq {
    pub group_id: String,
    /// The new owner: a member.
    pub owner_id: String,
}

/// Body of /group/sendMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendGroupMessageReq {
    pub group_id: String,
    /// The sender: a member. (Absent: the common field `operater` names the user.)
    pub from_id: Option<String>,
    /// The client message id, 1..=64 bytes (dedup as for sendMsg).
    pub message_id: String,
    /// A string (one text element) or a list of elements.
    #[schema(value_type = super::messages::MessageBody)]
    pub message_body: Value,
    pub message_random: Option<i64>,
    pub message_time: Option<u64>,
    #[schema(minimum = 0, maximum = 1)]
    pub badge_mode: Option<u8>,
    pub message_life_time: Option<u32>,
}

/// Body of /group/pullMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullMessageReq {
    pub group_id: String,
    /// The member reading (sees messages from their join on).
    pub member_id: String,
    /// Answer messages with a group sequence above this.
    pub last_sequence: Option<u64>,
    /// Most messages: default 100, capped at `messages.max_pull`.
    pub max_limit: Option<u64>,
}

/// Body of /group/getHistoryMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupHistoryReq {
    pub group_id: String,
    pub member_id: String,
    /// The previous page's `nextSequence`; absent: the newest.
    pub before_sequence: Option<u64>,
    pub limit: Option<u64>,
}

/// Body of /group/readMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadMessageReq {
    pub group_id: String,
    /// The member who read.
    pub member_id: String,
    /// Read up to this group sequence.
    pub message_sequence: u64,
}

/// Body of /group/getReadReceipt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetReadReceiptReq {
    pub group_id: String,
    /// The message (a decimal string, or a number up to 2^53).
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,19}$")]
    pub message_key: super::common::MessageKey,
    /// Most ids listed on each side: default 100, capped at 1000 (counts are exact
    /// for any group size).
    pub limit: Option<u64>,
}

/// Answer of /group/getReadReceipt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadReceiptResp {
    /// The message's group sequence.
    pub message_sequence: u64,
    /// Members (not the sender, joined before the message) who read it.
    pub read_count: usize,
    /// Members who could see it and have not read it.
    pub unread_count: usize,
    /// Up to `limit` readers, by id.
    pub read_list: Vec<String>,
    /// Up to `limit` of the others, by id.
    pub unread_list: Vec<String>,
}

/// Body of /group/withdrawMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupWithdrawReq {
    pub group_id: String,
    /// The sender (without `asAdmin`). (Absent: the common field `operater`.)
    pub from_id: Option<String>,
    /// The message (a decimal string, or a number up to 2^53).
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,19}$")]
    pub message_key: super::common::MessageKey,
    /// Recall as the app's admin: any time. Default false: the sender, within the
    /// app's recall window.
    pub as_admin: Option<bool>,
}

// ---------------------------------------------------------------- response types

/// A group's profile.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    pub group_id: String,
    pub group_type: u8,
    pub group_name: String,
    pub owner_id: Option<String>,
    pub mute: bool,
    pub apply_join_type: u8,
    pub introduction: String,
    pub notification: String,
    pub photo: String,
    pub max_member_count: u32,
    pub member_count: u32,
    pub extra: String,
    /// ms since the Unix epoch.
    pub create_time: u64,
    pub update_time: u64,
    /// 1 normal, 2 dissolved (as the original).
    pub status: u8,
    /// The group timeline's newest sequence (0: no message yet); only /group/get
    /// answers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl GroupInfo {
    fn new(g: GroupRecord, seq: Option<Seq>) -> Self {
        Self {
            group_id: g.group_id.to_string(),
            group_type: g.group_type,
            group_name: g.group_name,
            owner_id: g.owner_id.map(UserId::into_string),
            mute: g.mute,
            apply_join_type: g.apply_join_type,
            introduction: g.introduction,
            notification: g.notification,
            photo: g.photo,
            max_member_count: g.max_member_count,
            member_count: g.member_count,
            extra: g.extra,
            create_time: g.created_ms,
            update_time: g.updated_ms,
            status: if g.destroyed { 2 } else { 1 },
            sequence: seq.map(|s| s.0),
        }
    }
}

/// A member.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub member_id: String,
    /// 0 member, 1 admin, 2 owner.
    pub role: u8,
    pub alias: String,
    pub join_type: String,
    /// ms since the Unix epoch.
    pub join_time: u64,
    /// Muted until (ms since the Unix epoch); 0 or past: not muted.
    pub speak_date: u64,
    pub extra: String,
}

impl From<GroupMemberRecord> for MemberInfo {
    fn from(m: GroupMemberRecord) -> Self {
        Self {
            member_id: m.member_id.into_string(),
            role: m.role,
            alias: m.alias,
            join_type: m.join_type,
            join_time: m.join_time_ms,
            speak_date: m.mute_until_ms,
            extra: m.extra,
        }
    }
}

/// Answer of createGroup / import: the group's id and the initial members' results.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateGroupResp {
    pub group_id: String,
    /// Members added, in request order (the owner is not listed).
    pub success_id: Vec<String>,
    /// Members refused and why.
    pub error_id: Vec<ItemError>,
}

/// Answer of /group/get.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetGroupResp {
    pub group: GroupInfo,
    /// The first members (see `memberLimit`).
    pub member_list: Vec<MemberInfo>,
    /// True when `memberList` holds every member.
    pub completed: bool,
    /// The `afterMemberId` for /group/getGroupMember; null when `completed`.
    pub next_member_id: Option<String>,
}

/// A page of members.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPage {
    pub member_list: Vec<MemberInfo>,
    pub completed: bool,
    pub next_member_id: Option<String>,
}

/// Answer of /group/getAll.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetAllResp {
    pub group_list: Vec<GroupInfo>,
    /// True when there are no more groups.
    pub completed: bool,
    /// The next page's `afterGroupId`; null when `completed`.
    pub next_group_id: Option<String>,
}

/// One joined group: its profile and the user's membership.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinedGroupItem {
    #[serde(flatten)]
    pub group: GroupInfo,
    /// The user's role there.
    pub role: u8,
    /// When the user joined.
    pub join_time: u64,
}

/// Answer of /group/getJoinedGroup.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetJoinedGroupResp {
    /// Groups of the asked types the user belongs to.
    pub total_count: usize,
    pub group_list: Vec<JoinedGroupItem>,
}

/// One change of a user's joined groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinedChangeItem {
    pub sequence: u64,
    pub group_id: String,
    pub group_type: u8,
    pub group_name: String,
    pub role: u8,
    pub join_time: u64,
    /// The user is no longer a member (a tombstone).
    pub deleted: bool,
    /// The group was dissolved.
    pub destroyed: bool,
    pub update_time: u64,
}

/// Answer of /group/syncJoinedGroup.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncJoinedResp {
    pub max_sequence: u64,
    pub completed: bool,
    pub data_list: Vec<JoinedChangeItem>,
}

/// One user's role.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleItem {
    pub member_id: String,
    /// 0 member, 1 admin, 2 owner; null when not a member.
    pub role: Option<u8>,
    pub is_member: bool,
}

/// Answer of /group/getRoleInGroup.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesResp {
    pub list: Vec<RoleItem>,
    /// Ids that are not user ids.
    pub error_id: Vec<ItemError>,
}

/// One muted member.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShuttedItem {
    pub member_id: String,
    /// Muted until (ms since the Unix epoch).
    pub speak_date: u64,
}

/// Answer of /group/getGroupShuttedUin.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShuttedResp {
    pub list: Vec<ShuttedItem>,
}

/// An empty answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {}

/// Answer of /group/pullMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullMessageResp {
    /// The group timeline's newest durable sequence.
    pub max_sequence: u64,
    pub completed: bool,
    /// Messages (and recall events) with a sequence above `lastSequence` and the
    /// member's join, ascending; `messageSequence` is the group's sequence.
    pub data_list: Vec<MessageItem>,
}

/// Answer of /group/getHistoryMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupHistoryResp {
    /// Newest first.
    pub data_list: Vec<MessageItem>,
    /// The next page's `beforeSequence`; null at the member's join.
    pub next_sequence: Option<u64>,
}

// ---------------------------------------------------------------- handlers

impl CreateGroupReq {
    /// The service's input and the initial members.
    fn into_input(self) -> Result<(GroupInput, Option<Vec<MemberItem>>), ApiError> {
        let input = GroupInput {
            group_id: self.group_id.filter(|s| !s.is_empty()).map(|s| group_id_of(&s)).transpose()?,
            group_type: self.group_type,
            group_name: self.group_name.unwrap_or_default(),
            owner_id: self.owner_id.filter(|s| !s.is_empty()).map(|s| user_id(s, "ownerId")).transpose()?,
            mute: self.mute.unwrap_or(false),
            apply_join_type: self.apply_join_type.unwrap_or(0),
            introduction: self.introduction.unwrap_or_default(),
            notification: self.notification.unwrap_or_default(),
            photo: self.photo.unwrap_or_default(),
            max_member_count: self.max_member_count.unwrap_or(0),
            extra: self.extra.unwrap_or_default(),
            create_time_ms: None,
        };
        Ok((input, self.member_list))
    }
}

impl ImportGroupReq {
    /// createGroup's body, and the create time.
    fn split(self) -> (CreateGroupReq, Option<u64>) {
        let create = CreateGroupReq {
            group_id: self.group_id,
            group_type: self.group_type,
            group_name: self.group_name,
            owner_id: self.owner_id,
            mute: self.mute,
            apply_join_type: self.apply_join_type,
            introduction: self.introduction,
            notification: self.notification,
            photo: self.photo,
            max_member_count: self.max_member_count,
            extra: self.extra,
            member_list: self.member_list,
        };
        (create, self.create_time)
    }
}

fn group_id_of(s: &str) -> Result<GroupId, ApiError> {
    group_id(s, "groupId")
}

async fn create_common(
    state: &ApiState,
    app: tern_storage::AppId,
    input: GroupInput,
    members: Option<Vec<MemberItem>>,
    import: bool,
) -> ApiResult<CreateGroupResp> {
    let (members, idx, pre) = parse_members(state, members.unwrap_or_default(), "memberList", import)?;
    let (id, results) = groups::create(&state.logic, app, input, members, import).await?;
    let b = batch(results, idx, pre);
    Ok(ApiOk(CreateGroupResp { group_id: id.to_string(), success_id: b.success_id, error_id: b.error_id }))
}

/// Create a group.
///
/// With its owner (`ownerId`, role 2; a public group needs one: 40016) and initial
/// members (`memberList`, answered per item: 20001/20002 unknown or deleted users,
/// 40003 listed twice, 40005 over `maxMemberCount`). An existing `groupId` is 40001;
/// without one an id is generated. Every member's joined-groups log gets the group and
/// their online devices a sync notification.
#[utoipa::path(post, path = "/v1/group/createGroup", tag = "groups", params(AuthQuery), request_body = CreateGroupReq,
    responses((status = 200, description = "Created", body = Envelope<CreateGroupResp>)))]
pub async fn create_group(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<CreateGroupReq>,
) -> ApiResult<CreateGroupResp> {
    let (input, members) = call.body.into_input()?;
    create_common(&state, call.app, input, members, false).await
}

/// Import a group (from another system).
///
/// As createGroup, but the group keeps `createTime` and its members their `joinTime`
/// and `speakDate`, and nobody is notified (their joined-groups logs still get it).
#[utoipa::path(post, path = "/v1/group/import", tag = "groups", params(AuthQuery), request_body = ImportGroupReq,
    responses((status = 200, description = "Imported", body = Envelope<CreateGroupResp>)))]
pub async fn import_group(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<ImportGroupReq>,
) -> ApiResult<CreateGroupResp> {
    let (create, create_time) = call.body.split();
    let (mut input, members) = create.into_input()?;
    input.create_time_ms = create_time;
    create_common(&state, call.app, input, members, true).await
}

/// A group's profile plus its first members.
///
/// Dissolved groups are answered too (`status: 2`). `sequence` is the group
/// timeline's newest sequence.
#[utoipa::path(post, path = "/v1/group/get", tag = "groups", params(AuthQuery), request_body = GetGroupReq,
    responses((status = 200, description = "The group", body = Envelope<GetGroupResp>)))]
pub async fn get(State(state): State<Arc<ApiState>>, call: AdminCall<GetGroupReq>) -> ApiResult<GetGroupResp> {
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let (rec, seq) = groups::get(&state.logic, call.app, &id).await?;
    let limit = page_limit(r.member_limit, MAX_PAGE_LIMIT);
    let (members, completed) = groups::members_page(&state.logic, call.app, &id, None, limit).await?;
    let next = if completed { None } else { members.last().map(|m| m.member_id.to_string()) };
    Ok(ApiOk(GetGroupResp {
        group: GroupInfo::new(rec, Some(seq)),
        member_list: members.into_iter().map(MemberInfo::from).collect(),
        completed,
        next_member_id: next,
    }))
}

/// The app's groups, optionally of some types, paged (dissolved groups left out).
#[utoipa::path(post, path = "/v1/group/getAll", tag = "groups", params(AuthQuery), request_body = GetAllReq,
    responses((status = 200, description = "A page of groups", body = Envelope<GetAllResp>)))]
pub async fn get_all(State(state): State<Arc<ApiState>>, call: AdminCall<GetAllReq>) -> ApiResult<GetAllResp> {
    let r = call.body;
    let after = r.after_group_id.map(|s| group_id(&s, "afterGroupId")).transpose()?;
    let limit = page_limit(r.limit, MAX_PAGE_LIMIT);
    let types = r.group_type.unwrap_or_default();
    let (list, next) = groups::get_all(&state.logic, call.app, &types, after, limit).await?;
    Ok(ApiOk(GetAllResp {
        group_list: list.into_iter().map(|g| GroupInfo::new(g, None)).collect(),
        completed: next.is_none(),
        next_group_id: next.map(|g| g.to_string()),
    }))
}

/// A group's members, paged.
#[utoipa::path(post, path = "/v1/group/getGroupMember", tag = "groups", params(AuthQuery),
    request_body = GetGroupMemberReq,
    responses((status = 200, description = "A page of members", body = Envelope<MemberPage>)))]
pub async fn get_group_member(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetGroupMemberReq>,
) -> ApiResult<MemberPage> {
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let after = r.after_member_id.map(|s| user_id(s, "afterMemberId")).transpose()?;
    let limit = page_limit(r.limit, MAX_PAGE_LIMIT);
    let (members, completed) = groups::members_page(&state.logic, call.app, &id, after.as_ref(), limit).await?;
    let next = if completed { None } else { members.last().map(|m| m.member_id.to_string()) };
    Ok(ApiOk(MemberPage {
        member_list: members.into_iter().map(MemberInfo::from).collect(),
        completed,
        next_member_id: next,
    }))
}

/// Change a group's profile (owner or admin; 40007), including muting the whole group.
/// Every member's joined-groups log gets the change and their devices a notification.
#[utoipa::path(post, path = "/v1/group/update", tag = "groups", params(AuthQuery), request_body = UpdateGroupReq,
    responses((status = 200, description = "Changed", body = Envelope<Done>)))]
pub async fn update(State(state): State<Arc<ApiState>>, call: AdminCall<UpdateGroupReq>) -> ApiResult<Done> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let patch = GroupPatch {
        group_name: r.group_name,
        introduction: r.introduction,
        notification: r.notification,
        photo: r.photo,
        apply_join_type: r.apply_join_type,
        mute: r.mute,
        max_member_count: r.max_member_count,
        extra: r.extra,
    };
    groups::update(&state.logic, call.app, &who, &id, patch).await?;
    Ok(ApiOk(Done {}))
}

/// Add members, answered per member.
///
/// In a private group any member may add; otherwise the owner or an admin (40007);
/// only the owner makes admins (40009). `silent: true` notifies nobody.
#[utoipa::path(post, path = "/v1/group/addMember", tag = "groups", params(AuthQuery), request_body = AddMemberReq,
    responses((status = 200, description = "Per-member results", body = Envelope<BatchResult>)))]
pub async fn add_member(State(state): State<Arc<ApiState>>, call: AdminCall<AddMemberReq>) -> ApiResult<BatchResult> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let (members, idx, pre) = parse_members(&state, r.members, "members", false)?;
    let results =
        groups::add_members(&state.logic, call.app, &who, &id, members, r.silent.unwrap_or(false), false).await?;
    Ok(ApiOk(batch(results, idx, pre)))
}

/// Import members with their join times and mutes; nobody is notified.
#[utoipa::path(post, path = "/v1/group/importMember", tag = "groups", params(AuthQuery), request_body = AddMemberReq,
    responses((status = 200, description = "Per-member results", body = Envelope<BatchResult>)))]
pub async fn import_member(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<AddMemberReq>,
) -> ApiResult<BatchResult> {
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    if r.silent.is_some() {
        return Err(ApiError::bad("silent", "importMember never notifies; leave it out"));
    }
    let (members, idx, pre) = parse_members(&state, r.members, "members", true)?;
    let results = groups::add_members(&state.logic, call.app, &Actor::Admin, &id, members, true, true).await?;
    Ok(ApiOk(batch(results, idx, pre)))
}

/// Remove members, answered per member.
///
/// The owner removes anyone but themselves (40010), admins remove plain members
/// (40007); a member acting on themselves leaves.
#[utoipa::path(post, path = "/v1/group/deleteMember", tag = "groups", params(AuthQuery),
    request_body = DeleteMemberReq,
    responses((status = 200, description = "Per-member results", body = Envelope<BatchResult>)))]
pub async fn delete_member(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<DeleteMemberReq>,
) -> ApiResult<BatchResult> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let raw = match (r.member_ids, r.member_id) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        _ => return Err(ApiError::bad("memberIds", "give exactly one of memberIds or memberId")),
    };
    let (ids, idx, pre) = parse_member_ids(&state, raw, "memberIds")?;
    let results = groups::remove_members(&state.logic, call.app, &who, &id, ids).await?;
    Ok(ApiOk(batch(results, idx, pre)))
}

/// Change one member's role (owner only, 40009), alias or extra (the member, or the
/// owner / an admin).
#[utoipa::path(post, path = "/v1/group/updateMember", tag = "groups", params(AuthQuery),
    request_body = UpdateMemberReq,
    responses((status = 200, description = "Changed", body = Envelope<Done>)))]
pub async fn update_member(State(state): State<Arc<ApiState>>, call: AdminCall<UpdateMemberReq>) -> ApiResult<Done> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let member = user_id(r.member_id, "memberId")?;
    let change = groups::MemberChange { role: r.role, alias: r.alias, extra: r.extra };
    groups::update_member(&state.logic, call.app, &who, &id, &member, change).await?;
    Ok(ApiOk(Done {}))
}

/// Dissolve a group (owner only, 40009): every member is removed and notified; the
/// group answers 40018 from then on (and /group/get shows `status: 2`).
#[utoipa::path(post, path = "/v1/group/destroyGroup", tag = "groups", params(AuthQuery), request_body = GroupIdReq,
    responses((status = 200, description = "Dissolved", body = Envelope<Done>)))]
pub async fn destroy_group(State(state): State<Arc<ApiState>>, call: AdminCall<GroupIdReq>) -> ApiResult<Done> {
    let who = actor(&call.identifier, &call.common)?;
    let id = group_id_of(&call.body.group_id)?;
    groups::destroy(&state.logic, call.app, &who, &id).await?;
    Ok(ApiOk(Done {}))
}

/// The groups a user belongs to, optionally of some types, in group id order, paged
/// by `offset`.
#[utoipa::path(post, path = "/v1/group/getJoinedGroup", tag = "groups", params(AuthQuery),
    request_body = GetJoinedGroupReq,
    responses((status = 200, description = "The user's groups", body = Envelope<GetJoinedGroupResp>)))]
pub async fn get_joined_group(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetJoinedGroupReq>,
) -> ApiResult<GetJoinedGroupResp> {
    let r = call.body;
    let user = subject(r.member_id, "memberId")?;
    let limit = page_limit(r.limit, MAX_PAGE_LIMIT);
    let offset = usize::try_from(r.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let types = r.group_type.unwrap_or_default();
    let (total, list) = groups::joined_groups(&state.logic, call.app, &user, &types, offset, limit).await?;
    Ok(ApiOk(GetJoinedGroupResp {
        total_count: total,
        group_list: list
            .into_iter()
            .map(|(g, j)| JoinedGroupItem { group: GroupInfo::new(g, None), role: j.role, join_time: j.join_time_ms })
            .collect(),
    }))
}

/// Incremental changes of a user's joined groups since `lastSequence` (tombstones for
/// groups left or dissolved).
#[utoipa::path(post, path = "/v1/group/syncJoinedGroup", tag = "groups", params(AuthQuery), request_body = SyncReq,
    responses((status = 200, description = "Changes", body = Envelope<SyncJoinedResp>)))]
pub async fn sync_joined_group(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<SyncReq>,
) -> ApiResult<SyncJoinedResp> {
    let r = call.body;
    let user = super::common::acting_user(r.from_id, &call.common)?;
    let limit = page_limit(r.max_limit, MAX_PAGE_LIMIT);
    let (entries, max, completed) =
        groups::sync_joined(&state.logic, call.app, &user, Seq(r.last_sequence.unwrap_or(0)), limit).await?;
    Ok(ApiOk(SyncJoinedResp {
        max_sequence: max.0,
        completed,
        data_list: entries
            .into_iter()
            .map(|(seq, j)| JoinedChangeItem {
                sequence: seq.0,
                group_id: j.group_id.to_string(),
                group_type: j.group_type,
                group_name: j.group_name,
                role: j.role,
                join_time: j.join_time_ms,
                deleted: j.left,
                destroyed: j.destroyed,
                update_time: j.time_ms,
            })
            .collect(),
    }))
}

/// Each user's role in a group (owner / admin / member, or not a member).
#[utoipa::path(post, path = "/v1/group/getRoleInGroup", tag = "groups", params(AuthQuery),
    request_body = GetRoleInGroupReq,
    responses((status = 200, description = "Roles", body = Envelope<RolesResp>)))]
pub async fn get_role_in_group(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetRoleInGroupReq>,
) -> ApiResult<RolesResp> {
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let (ids, _, pre) = parse_member_ids(&state, r.member_ids, "memberIds")?;
    let found = groups::roles_of(&state.logic, call.app, &id, &ids).await?;
    Ok(ApiOk(RolesResp {
        list: ids
            .into_iter()
            .zip(found)
            .map(|(u, role)| RoleItem { member_id: u.into_string(), role, is_member: role.is_some() })
            .collect(),
        error_id: pre.into_iter().map(|(_, e)| e).collect(),
    }))
}

/// Mute members for `shutUpTime` seconds (0 unmutes), answered per member: owner or
/// admin (40007); the owner cannot be muted, admins do not mute admins (40007). The
/// original's `member/speak` gives one `memberId` and `speakDate` (mute until, ms).
#[utoipa::path(post, path = "/v1/group/forbidSendMsg", tag = "groups", params(AuthQuery),
    request_body = ForbidSendMsgReq,
    responses((status = 200, description = "Per-member results", body = Envelope<BatchResult>)))]
pub async fn forbid_send_msg(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<ForbidSendMsgReq>,
) -> ApiResult<BatchResult> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let raw = match (r.member_ids, r.member_id) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        _ => return Err(ApiError::bad("memberIds", "give exactly one of memberIds or memberId")),
    };
    let until = match (r.shut_up_time, r.speak_date) {
        (Some(0), None) | (None, Some(0)) => 0,
        (Some(secs), None) => crate::now_ms().saturating_add(secs.saturating_mul(1000)),
        (None, Some(at)) => at,
        _ => return Err(ApiError::bad("shutUpTime", "give exactly one of shutUpTime or speakDate")),
    };
    let (ids, idx, pre) = parse_member_ids(&state, raw, "memberIds")?;
    let results = groups::forbid(&state.logic, call.app, &who, &id, ids, until).await?;
    Ok(ApiOk(batch(results, idx, pre)))
}

/// A member leaves the group (the original's `member/exit`). The owner cannot leave
/// (40010: transfer the group first); not a member: 40006. The member's joined-groups
/// log gets a tombstone and their devices a notification.
#[utoipa::path(post, path = "/v1/group/quitGroup", tag = "groups", params(AuthQuery), request_body = QuitGroupReq,
    responses((status = 200, description = "Left", body = Envelope<Done>)))]
pub async fn quit_group(State(state): State<Arc<ApiState>>, call: AdminCall<QuitGroupReq>) -> ApiResult<Done> {
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let member = subject(r.member_id, "memberId")?;
    // A member acting on themselves: removing oneself is leaving.
    let who = Actor::User(member.clone());
    let results = groups::remove_members(&state.logic, call.app, &who, &id, vec![member]).await?;
    match results.into_iter().next() {
        Some((_, Err(e))) => Err(e.into()),
        _ => Ok(ApiOk(Done {})),
    }
}

/// Mute (`mute: true`) or unmute the whole group (the original's `forbidSendMessage`):
/// while muted only the owner and admins may send (others get 40012). Owner or admin
/// (40007) when `operater` names a member; notifies every member like /group/update.
#[utoipa::path(post, path = "/v1/group/forbidSendMessage", tag = "groups", params(AuthQuery),
    request_body = ForbidSendMessageReq,
    responses((status = 200, description = "Changed", body = Envelope<Done>)))]
pub async fn forbid_send_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<ForbidSendMessageReq>,
) -> ApiResult<Done> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let patch = GroupPatch { mute: Some(r.mute), ..Default::default() };
    groups::update(&state.logic, call.app, &who, &id, patch).await?;
    Ok(ApiOk(Done {}))
}

/// The members muted now, with the time their mute ends.
#[utoipa::path(post, path = "/v1/group/getGroupShuttedUin", tag = "groups", params(AuthQuery),
    request_body = GroupIdReq,
    responses((status = 200, description = "Muted members", body = Envelope<ShuttedResp>)))]
pub async fn get_group_shutted_uin(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GroupIdReq>,
) -> ApiResult<ShuttedResp> {
    let id = group_id_of(&call.body.group_id)?;
    let list = groups::muted(&state.logic, call.app, &id).await?;
    Ok(ApiOk(ShuttedResp {
        list: list.into_iter().map(|(u, t)| ShuttedItem { member_id: u.into_string(), speak_date: t }).collect(),
    }))
}

/// Transfer ownership (owner only, 40009) to a member (40006 otherwise); the old owner
/// becomes a member.
#[utoipa::path(post, path = "/v1/group/changeGroupOwner", tag = "groups", params(AuthQuery),
    request_body = ChangeOwnerReq,
    responses((status = 200, description = "Transferred", body = Envelope<Done>)))]
pub async fn change_group_owner(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<ChangeOwnerReq>,
) -> ApiResult<Done> {
    let who = actor(&call.identifier, &call.common)?;
    let r = call.body;
    let id = group_id_of(&r.group_id)?;
    let owner = user_id(r.owner_id, "ownerId")?;
    groups::change_owner(&state.logic, call.app, &who, &id, &owner).await?;
    Ok(ApiOk(Done {}))
}

/// Send a message to a group (server-side, as the member `fromId`).
///
/// Written once in the group's timeline; answered once durable; every online member
/// (the sender's devices included) gets the push. Members only (40006); a muted group
/// (40012) or member (40017) may not send unless the sender is the owner or an admin.
/// `messageSequence` is the group timeline's sequence. Dedup as for sendMsg.
#[utoipa::path(post, path = "/v1/group/sendMessage", tag = "groups", params(AuthQuery),
    request_body = SendGroupMessageReq,
    responses((status = 200, description = "Accepted", body = Envelope<SendMsgResp>)))]
pub async fn send_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<SendGroupMessageReq>,
) -> ApiResult<SendMsgResp> {
    let r = call.body;
    let from = super::common::acting_user(r.from_id, &call.common)?;
    let group = group_id_of(&r.group_id)?;
    let c = SendContent::parse(&r.message_body, r.message_random, r.message_time, r.badge_mode, r.message_life_time)?;
    let accepted = groups::send(
        &state.logic,
        groups::GroupSend {
            app: call.app,
            group,
            from,
            client_msg_id: &r.message_id,
            elems: c.body.iter().map(OwnedElem::parts).collect(),
            client_time_ms: c.client_time_ms,
            from_device: "",
            origin: None,
            extras: c.extras,
        },
    )
    .await
    .map_err(send_refusal)?;
    Ok(ApiOk(accepted.into()))
}

/// A member's messages of the group timeline above `lastSequence` and their join
/// (offline sync of a group), ascending. Members only (40006).
#[utoipa::path(post, path = "/v1/group/pullMessage", tag = "groups", params(AuthQuery),
    request_body = PullMessageReq,
    responses((status = 200, description = "A page of the group timeline", body = Envelope<PullMessageResp>)))]
pub async fn pull_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<PullMessageReq>,
) -> ApiResult<PullMessageResp> {
    let r = call.body;
    let group = group_id_of(&r.group_id)?;
    let member = subject(r.member_id, "memberId")?;
    let limit = page_limit(r.max_limit, state.logic.config.messages.max_pull);
    let (items, max, completed) =
        groups::pull(&state.logic, call.app, &group, &member, Seq(r.last_sequence.unwrap_or(0)), limit)
            .await
            .map_err(ApiError::from)?;
    Ok(ApiOk(PullMessageResp { max_sequence: max.0, completed, data_list: MessageItem::list(&items)? }))
}

/// A group's history as a member sees it (from their join on), newest first, paged by
/// `beforeSequence`. Members only (40006).
#[utoipa::path(post, path = "/v1/group/getHistoryMessage", tag = "groups", params(AuthQuery),
    request_body = GroupHistoryReq,
    responses((status = 200, description = "A page of history", body = Envelope<GroupHistoryResp>)))]
pub async fn get_history_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GroupHistoryReq>,
) -> ApiResult<GroupHistoryResp> {
    let r = call.body;
    let group = group_id_of(&r.group_id)?;
    let member = subject(r.member_id, "memberId")?;
    let limit = page_limit(r.limit, state.logic.config.messages.max_pull);
    let (items, next) = groups::history(&state.logic, call.app, &group, &member, r.before_sequence.map(Seq), limit)
        .await
        .map_err(ApiError::from)?;
    Ok(ApiOk(GroupHistoryResp { data_list: MessageItem::list(&items)?, next_sequence: next.map(|s| s.0) }))
}

/// Recall a group message: the sender within the app's recall window, or the app's
/// admin (`asAdmin`) any time. The message is marked recalled (body dropped) in the
/// group timeline and a recall event appended; online members are told.
#[utoipa::path(post, path = "/v1/group/withdrawMessage", tag = "groups", params(AuthQuery),
    request_body = GroupWithdrawReq,
    responses((status = 200, description = "Recalled", body = Envelope<Done>)))]
pub async fn withdraw_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GroupWithdrawReq>,
) -> ApiResult<Done> {
    let r = call.body;
    let group = group_id_of(&r.group_id)?;
    let as_admin = r.as_admin.unwrap_or(false);
    let by = if as_admin {
        crate::messages::Recaller::Admin
    } else {
        crate::messages::Recaller::Sender(super::common::acting_user(r.from_id, &call.common)?)
    };
    let key = r.message_key.0;
    let loc = state
        .logic
        .store
        .get_message_index(call.app, key)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .filter(|l| l.group_id() == Some(&group))
        .ok_or_else(|| ApiError::Refused {
            code: crate::messages::errors::NO_SUCH_MESSAGE,
            message: format!("no message {key} in group {group}"),
        })?;
    groups::recall(&state.logic, call.app, &group, &loc, key, &by).await.map_err(ApiError::from)?;
    Ok(ApiOk(Done {}))
}

/// A member read the group up to `messageSequence` (the HTTP twin of a TCP ReadReceipt
/// of a group): kept for read receipts and as the member's read mark of the group
/// conversation; their devices are told.
#[utoipa::path(post, path = "/v1/group/readMessage", tag = "groups", params(AuthQuery), request_body = ReadMessageReq,
    responses((status = 200, description = "Recorded", body = Envelope<Done>)))]
pub async fn read_message(State(state): State<Arc<ApiState>>, call: AdminCall<ReadMessageReq>) -> ApiResult<Done> {
    let r = call.body;
    let group = group_id_of(&r.group_id)?;
    let member = subject(r.member_id, "memberId")?;
    groups::read(&state.logic, call.app, &group, &member, Seq(r.message_sequence), None)
        .await
        .map_err(ApiError::from)?;
    Ok(ApiOk(Done {}))
}

/// Who read a group message: exact counts for any group size, and bounded lists.
#[utoipa::path(post, path = "/v1/group/getReadReceipt", tag = "groups", params(AuthQuery),
    request_body = GetReadReceiptReq,
    responses((status = 200, description = "Receipts", body = Envelope<ReadReceiptResp>)))]
pub async fn get_read_receipt(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetReadReceiptReq>,
) -> ApiResult<ReadReceiptResp> {
    let r = call.body;
    let group = group_id_of(&r.group_id)?;
    let limit = page_limit(r.limit, MAX_PAGE_LIMIT);
    let got = groups::receipts(&state.logic, call.app, &group, r.message_key.0, limit).await.map_err(ApiError::from)?;
    Ok(ApiOk(ReadReceiptResp {
        message_sequence: got.seq.0,
        read_count: got.read_count,
        unread_count: got.unread_count,
        read_list: got.read.into_iter().map(UserId::into_string).collect(),
        unread_list: got.unread.into_iter().map(UserId::into_string).collect(),
    }))
}
