//! `/v1/conversation/...`: a user's conversation list (1:1 and group) with exact unread
//! counts, its incremental sync, pin / mute / extra, and delete. Each handler parses its
//! body, calls [`crate::conversations`] and shapes the answer; the original system's
//! controller paths are aliases.
//!
//! This module must never hold business rules (what counts as unread, what a delete
//! does): those live in `crate::conversations`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tern_storage::{Conversation, Seq, UserId};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{acting_user, page_limit, ApiResult, SyncReq};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::ApiState;
use crate::config::MAX_PAGE_LIMIT;
use crate::conversations::record::{conversation_id, parse_conversation_id, target_of, Op};
use crate::conversations::{self, errors, DeleteMode, Item, Update, MAX_EXTRA_LEN};

/// The conversation endpoints, each with its own error codes (besides the common ones)
/// and the original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(routes!(conversation_get), &[], &[])
        .add(routes!(conversation_sync), &[], &[])
        .alias("/v1/conversation/syncConversationList")
        .add(routes!(conversation_update), &[errors::NO_SUCH_CONVERSATION, errors::TOO_MANY_MUTED], &[])
        .alias("/v1/conversation/updateConversation")
        .add(routes!(conversation_delete), &[errors::NO_SUCH_CONVERSATION], &[])
        .alias("/v1/conversation/deleteConversation")
}

// ---------------------------------------------------------------- request types

/// Body of /conversation/get.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetReq {
    /// Whose list. (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// Conversations to skip (the previous page's `nextOffset`); default 0.
    pub offset: Option<u64>,
    /// Most conversations to answer: default 100, capped at 1000; 0 means the default.
    pub limit: Option<u64>,
}

/// Body of /conversation/update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateReq {
    /// Whose conversation. (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// `{type}_{fromId}_{toId}`: type 1 (1:1, toId the peer) or 2 (group, toId the group).
    pub conversation_id: String,
    /// Pin to the top of the list (absent: unchanged).
    pub is_top: Option<bool>,
    /// Do not disturb: pushes of the conversation carry `silent` (absent: unchanged).
    pub is_mute: Option<bool>,
    /// Business-defined data, at most 4096 bytes (absent: unchanged).
    #[schema(max_length = 4096)]
    pub extra: Option<String>,
}

/// Body of /conversation/delete.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteReq {
    /// Whose conversation. (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// `{type}_{fromId}_{toId}` (see /conversation/update).
    pub conversation_id: String,
    /// Also clear the user's history of the conversation up to now (default false:
    /// history is kept).
    pub clear_history: Option<bool>,
    /// Only tell the user's devices to remove it locally; the server's record stays
    /// (default false).
    pub only_notify: Option<bool>,
}

// ---------------------------------------------------------------- response types

/// The newest message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastMessageResp {
    /// Server message id, as a decimal string.
    pub message_key: String,
    /// Its seq in the timeline the user reads (their inbox for 1:1, the group's).
    pub message_sequence: u64,
    pub message_time: u64,
    /// The sender.
    pub from_id: String,
    /// The start of the text, or `[image]`, `[file]`...; empty once recalled.
    pub preview: String,
    /// The message was recalled.
    pub recalled: bool,
}

/// One conversation of the list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationResp {
    pub conversation_id: String,
    /// 1 single, 2 group.
    pub conversation_type: u8,
    pub from_id: String,
    /// The peer (1:1) or the group.
    pub to_id: String,
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: String,
    /// Read up to this seq (the original's `readedSequence`).
    pub readed_sequence: u64,
    /// Messages above the read mark: exact.
    pub unread_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<LastMessageResp>,
    /// The record's position in the user's conversation sync log (0: never changed).
    pub sequence: u64,
    /// When the record last changed (ms).
    pub update_time: u64,
}

/// Answer of /conversation/get.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetResp {
    /// Conversations in the whole list.
    pub total_count: u64,
    /// True when this page is the last.
    pub completed: bool,
    /// The offset of the next page (absent on the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    /// The user's committed conversation sync sequence (sync from here).
    pub max_sequence: u64,
    /// Pinned first, then newest activity first.
    pub conversation_list: Vec<ConversationResp>,
}

/// One change in a conversation sync answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationChange {
    pub sequence: u64,
    pub conversation_id: String,
    pub conversation_type: u8,
    pub from_id: String,
    pub to_id: String,
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: String,
    pub readed_sequence: u64,
    /// History up to this seq was cleared (0: never).
    pub cleared_sequence: u64,
    /// Deleted on the server (a tombstone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Remove it on the device only; the server's record is unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_delete: bool,
    pub update_time: u64,
}

/// Answer of /conversation/sync.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResp {
    /// `fromId`'s committed conversation sequence.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`.
    pub completed: bool,
    /// Changes with `sequence > lastSequence`, ascending.
    pub data_list: Vec<ConversationChange>,
}

/// Answer of /conversation/update and /conversation/delete.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSeqResp {
    /// The change's position in the user's conversation sync log.
    pub sequence: u64,
}

fn item(user: &UserId, i: Item) -> ConversationResp {
    ConversationResp {
        conversation_id: conversation_id(user, &i.conversation),
        conversation_type: i.conversation.type_number(),
        from_id: user.to_string(),
        to_id: target_of(&i.conversation).to_string(),
        is_top: i.is_top,
        is_mute: i.is_mute,
        extra: i.extra,
        readed_sequence: i.read_seq.0,
        unread_count: i.unread,
        last_message: i.last.map(|l| LastMessageResp {
            message_key: l.message_key.to_string(),
            message_sequence: l.seq.0,
            message_time: l.time_ms,
            from_id: l.sender,
            preview: l.preview,
            recalled: l.recalled,
        }),
        sequence: i.sync_seq.0,
        update_time: i.updated_ms,
    }
}

fn conversation(user: &UserId, raw: &str) -> Result<Conversation, ApiError> {
    parse_conversation_id(user, raw).map_err(|e| ApiError::bad("conversationId", e))
}

// ---------------------------------------------------------------- handlers

/// A user's conversation list.
///
/// 1:1 and group conversations, pinned first, then newest activity first, paged by
/// `offset` / `limit`. Each has its last message and its exact unread count (the
/// messages above the read mark; recalled messages still count, recall events do not).
/// Deleted conversations are left out until a newer message brings them back.
#[utoipa::path(post, path = "/v1/conversation/get", tag = "conversations", params(AuthQuery), request_body = GetReq,
    responses((status = 200, description = "A page of the list", body = Envelope<GetResp>)))]
pub async fn conversation_get(State(state): State<Arc<ApiState>>, call: AdminCall<GetReq>) -> ApiResult<GetResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let offset = usize::try_from(req.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let limit = page_limit(req.limit, MAX_PAGE_LIMIT);
    let page = conversations::get(&state.logic, call.app, &user, offset, limit).await?;
    Ok(ApiOk(GetResp {
        total_count: page.total as u64,
        completed: page.next.is_none(),
        next_offset: page.next.map(|n| n as u64),
        max_sequence: page.max_seq.0,
        conversation_list: page.items.into_iter().map(|i| item(&user, i)).collect(),
    }))
}

/// Incremental conversation sync.
///
/// The changes of `fromId`'s conversation records with `sequence > lastSequence`,
/// ascending, at most `maxLimit`: a conversation appearing, pin / mute / extra, read
/// marks, deletes (`deleted: true`, a tombstone) and device-only deletes
/// (`clientDelete: true`). Last messages and unread counts are not logged per message:
/// /conversation/get answers them.
#[utoipa::path(post, path = "/v1/conversation/sync", tag = "conversations", params(AuthQuery), request_body = SyncReq,
    responses((status = 200, description = "A page of changes", body = Envelope<SyncResp>)))]
pub async fn conversation_sync(State(state): State<Arc<ApiState>>, call: AdminCall<SyncReq>) -> ApiResult<SyncResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let limit = page_limit(req.max_limit, MAX_PAGE_LIMIT);
    let page = conversations::sync(&state.logic, call.app, &user, after, limit).await?;
    Ok(ApiOk(SyncResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        data_list: page
            .changes
            .into_iter()
            .map(|c| ConversationChange {
                sequence: c.seq.0,
                conversation_id: conversation_id(&user, &c.conversation),
                conversation_type: c.conversation.type_number(),
                from_id: user.to_string(),
                to_id: target_of(&c.conversation).to_string(),
                is_top: c.is_top,
                is_mute: c.is_mute,
                extra: c.extra,
                readed_sequence: c.read_seq.0,
                cleared_sequence: c.cleared_seq.0,
                deleted: c.op == Op::Delete,
                client_delete: c.op == Op::NotifyDelete,
                update_time: c.time_ms,
            })
            .collect(),
    }))
}

/// Pin / mute a conversation, or set its extra.
///
/// 50011 if the user has no such conversation (no message yet, or deleted). Changing
/// nothing answers the current sequence. Notifies every online device of `fromId`
/// (SyncNotify, kind Conversation).
#[utoipa::path(post, path = "/v1/conversation/update", tag = "conversations", params(AuthQuery),
    request_body = UpdateReq,
    responses((status = 200, description = "Updated", body = Envelope<ConversationSeqResp>)))]
pub async fn conversation_update(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<UpdateReq>,
) -> ApiResult<ConversationSeqResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let conv = conversation(&user, &req.conversation_id)?;
    if req.extra.as_ref().is_some_and(|e| e.len() > MAX_EXTRA_LEN) {
        return Err(ApiError::bad("extra", format!("more than {MAX_EXTRA_LEN} bytes")));
    }
    let u = Update { is_top: req.is_top, is_mute: req.is_mute, extra: req.extra };
    let seq = conversations::update(&state.logic, call.app, &user, &conv, u).await?;
    Ok(ApiOk(ConversationSeqResp { sequence: seq.0 }))
}

/// Delete a conversation.
///
/// On the server (default): the record is removed (a tombstone in /conversation/sync)
/// and everything up to now counts as read; with `clearHistory` the user's history of
/// it up to now is cleared too (/message/getHistoryMessage no longer shows it to them;
/// the peer keeps theirs). A newer message brings the conversation back. With
/// `onlyNotify` nothing changes on the server: the user's devices are told to remove it
/// locally. 50011 if there is no such conversation. Notifies every online device of
/// `fromId`.
#[utoipa::path(post, path = "/v1/conversation/delete", tag = "conversations", params(AuthQuery),
    request_body = DeleteReq,
    responses((status = 200, description = "Deleted", body = Envelope<ConversationSeqResp>)))]
pub async fn conversation_delete(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<DeleteReq>,
) -> ApiResult<ConversationSeqResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let conv = conversation(&user, &req.conversation_id)?;
    let mode = match (req.only_notify.unwrap_or(false), req.clear_history.unwrap_or(false)) {
        (true, true) => return Err(ApiError::bad("clearHistory", "cannot be set with onlyNotify")),
        (true, false) => DeleteMode::NotifyOnly,
        (false, true) => DeleteMode::ClearHistory,
        (false, false) => DeleteMode::KeepHistory,
    };
    let seq = conversations::delete(&state.logic, call.app, &user, &conv, mode).await?;
    Ok(ApiOk(ConversationSeqResp { sequence: seq.0 }))
}
