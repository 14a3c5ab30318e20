//! `/v1/message/...`: the 1:1 message calls of the management API. Each handler parses
//! its body, calls [`crate::messages`] and shapes the answer; field names are the
//! original system's camelCase ones (`messageKey`, `messageId`, `messageBody`, ...).
//!
//! Shapes shared by every call: a message body is a list of typed elements
//! ([`MessageElem`], `custom` bytes as base64) — `sendMsg` also takes a plain string as
//! one text element — and a `messageKey` is always answered as a decimal *string*: keys
//! use all 64 bits and JavaScript numbers lose precision above 2^53. Keys are accepted
//! as strings or numbers.
//!
//! This module must never hold business rules (limits, who may read or recall what,
//! the recall window, dedup): those live in `crate::messages`. It only translates,
//! including the service's field names (`elems`, `client_msg_id`) into the API's.

use std::sync::Arc;

use crate::error::ServiceError;
use axum::extract::State;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tern_schema::client::{ElemType, EntryKind};
use tern_schema::codes;
use tern_schema::message::ElemParts;
use tern_storage::{AppId, Seq, UserId};
use utoipa::ToSchema;

use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{acting_user, check_batch, page_limit, parse_id, user_id, ApiResult, MessageKey};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::extract::parse_value;
use super::ApiState;
use crate::messages::{self, errors, MessageExtras, Recaller, SendRequest, TimelineItem};
use crate::users::BATCH_TOO_LARGE;

/// The message endpoints, each with its own error codes (besides the common ones) and
/// the original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(
        routes!(send_msg),
        &[
            errors::INVALID_MESSAGE,
            errors::BODY_TOO_LARGE,
            codes::USER_NOT_FOUND,
            codes::USER_DELETED,
            codes::BLOCKED_BY_RECIPIENT,
            errors::SENDER_MUTED,
            crate::callbacks::errors::REFUSED_BY_APP,
            crate::callbacks::errors::APP_UNAVAILABLE,
            crate::callbacks::errors::APP_CODE_FIRST,
        ],
        &[],
    )
    .alias("/v1/message/send")
    .add(routes!(get_offline_message), &[codes::USER_NOT_FOUND], &[])
    .alias("/v1/message/syncOfflineMessage")
    .add(routes!(get_history_message), &[codes::USER_NOT_FOUND], &[])
    .add(
        routes!(get_message),
        &[BATCH_TOO_LARGE, codes::USER_NOT_FOUND],
        &[codes::BAD_PARAMETER, errors::NO_SUCH_MESSAGE, errors::NOT_A_PARTY],
    )
    .add(
        routes!(withdraw_message),
        &[errors::RECALL_WINDOW_PASSED, errors::ALREADY_RECALLED, errors::NO_SUCH_MESSAGE, errors::NOT_A_PARTY],
        &[],
    )
}

// ---------------------------------------------------------------- elements

/// The type of a body element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElemKind {
    /// `text`.
    Text,
    /// `data` (bytes, base64), optionally `text` as a description.
    Custom,
    /// `url`, optionally `extra` (JSON metadata such as size).
    Image,
    /// `url`, optionally `extra`.
    File,
    /// `extra` (JSON lat/lon), optionally `text` as a label.
    Location,
    /// `url`, optionally `extra`.
    Sound,
    /// `url`, optionally `extra`.
    Video,
}

impl ElemKind {
    fn wire(self) -> ElemType {
        match self {
            ElemKind::Text => ElemType::Text,
            ElemKind::Custom => ElemType::Custom,
            ElemKind::Image => ElemType::Image,
            ElemKind::File => ElemType::File,
            ElemKind::Location => ElemType::Location,
            ElemKind::Sound => ElemType::Sound,
            ElemKind::Video => ElemType::Video,
        }
    }

    fn from_wire(t: ElemType) -> Option<Self> {
        Some(match t {
            ElemType::Text => ElemKind::Text,
            ElemType::Custom => ElemKind::Custom,
            ElemType::Image => ElemKind::Image,
            ElemType::File => ElemKind::File,
            ElemType::Location => ElemKind::Location,
            ElemType::Sound => ElemKind::Sound,
            ElemType::Video => ElemKind::Video,
            _ => return None,
        })
    }
}

/// One element of a message body. Which fields are used depends on `type`; absent
/// fields are empty. The body's total size (text + data bytes + url + extra) is limited
/// by `messages.max_body_bytes` (default 12 KiB, 50001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageElem {
    #[serde(rename = "type")]
    pub elem_type: ElemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Bytes of a `custom` element, base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
}

/// An element with its bytes decoded, owning what [`ElemParts`] borrows.
pub(crate) struct OwnedElem {
    kind: ElemKind,
    text: String,
    data: Vec<u8>,
    url: String,
    extra: String,
}

impl OwnedElem {
    pub(crate) fn parts(&self) -> ElemParts<'_> {
        ElemParts {
            elem_type: self.kind.wire(),
            text: &self.text,
            data: &self.data,
            url: &self.url,
            extra: &self.extra,
        }
    }
}

impl MessageElem {
    pub(crate) fn from_parts(e: &ElemParts<'_>) -> Option<Self> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(Self {
            elem_type: ElemKind::from_wire(e.elem_type)?,
            text: some(e.text),
            data: (!e.data.is_empty()).then(|| BASE64.encode(e.data)),
            url: some(e.url),
            extra: some(e.extra),
        })
    }
}

/// Standard base64 that accepts non-zero bits after the last whole byte (as most
/// decoders do): they carry nothing, and refusing them rejects what JSON Schema and
/// other encoders call valid base64.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Parses `messageBody`: a string (one text element) or a list of elements.
pub(crate) fn parse_message_body(v: Option<&Value>) -> Result<Vec<OwnedElem>, ApiError> {
    let items = match v {
        None => return Err(ApiError::bad("messageBody", "missing")),
        Some(Value::String(s)) => {
            let text = s.clone();
            return Ok(vec![OwnedElem {
                kind: ElemKind::Text,
                text,
                data: Vec::new(),
                url: String::new(),
                extra: String::new(),
            }]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::bad("messageBody", "expected a string or an array of elements")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let path = format!("messageBody[{i}]");
        let e: MessageElem = parse_value(raw.clone(), &path)?;
        let data = match e.data {
            None => Vec::new(),
            Some(b64) => LENIENT_BASE64
                .decode(b64.as_bytes())
                .map_err(|err| ApiError::bad(format!("{path}.data"), format!("not base64: {err}")))?,
        };
        out.push(OwnedElem {
            kind: e.elem_type,
            text: e.text.unwrap_or_default(),
            data,
            url: e.url.unwrap_or_default(),
            extra: e.extra.unwrap_or_default(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- request types

/// `messageBody` of sendMsg: a text, or a list of typed elements.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageBody {
    /// One text element.
    Text(String),
    /// 1..=32 elements.
    Elems(Vec<MessageElem>),
}

/// Body of sendMsg.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMsgReq {
    /// The sender: any existing, not deleted user. An app sends "as the system" by
    /// modelling its system account as a user (import it like any other).
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The recipient: an existing, not deleted user (may equal `fromId`).
    pub to_id: String,
    /// The client message id, 1..=64 bytes: a resend with the same `fromId` and
    /// `messageId` within the dedup window (`messages.dedup_window_secs`, default 24 h)
    /// answers the original result and never creates a second message.
    pub message_id: String,
    /// A string (one text element) or a list of elements.
    #[schema(value_type = MessageBody)]
    pub message_body: Value,
    /// The original system's `messageRandom`: opaque, stored and answered with the
    /// message.
    pub message_random: Option<i64>,
    /// The sender's own time of the message (ms since the Unix epoch), stored and
    /// answered as `clientTime`; `messageTime` is always the server's.
    pub message_time: Option<u64>,
    /// The original system's `badgeMode` (0 counts toward the badge, 1 does not):
    /// stored and answered with the message.
    #[schema(minimum = 0, maximum = 1)]
    pub badge_mode: Option<u8>,
    /// Seconds after which the message leaves offline sync (getOfflineMessage, TCP
    /// Pull); 0 or absent: kept for the app's retention. History still shows it.
    pub message_life_time: Option<u32>,
}

/// Body of getOfflineMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetOfflineMessageReq {
    /// Whose inbox.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// Answer entries with a sequence above this (0 or absent: from the start).
    pub last_sequence: Option<u64>,
    /// Most entries to answer: default 100, capped at `messages.max_pull` (default 500);
    /// 0 means the default.
    pub max_limit: Option<u64>,
}

/// Body of getHistoryMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetHistoryMessageReq {
    /// Whose view of the conversation (sequences are this user's).
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The peer.
    pub to_id: String,
    /// Answer messages with a sequence strictly below this: the previous page's
    /// `nextBeforeSequence`. Absent or 0: from the newest.
    pub before_sequence: Option<u64>,
    /// Answer only messages sent strictly before this time (ms since the Unix epoch):
    /// jump to a date. Combines with `beforeSequence` for paging.
    pub before_time: Option<u64>,
    /// Most messages to answer: default 100, capped at `messages.max_pull`; 0 means
    /// the default.
    pub limit: Option<u64>,
}

/// Body of getMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetMessageReq {
    /// The party asking: only messages it sent or received are answered, as its own copy.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// Message keys (decimal strings, or numbers up to 2^53), at most `http.max_batch`.
    #[schema(value_type = Vec<String>)]
    pub message_keys: Vec<Value>,
}

/// Body of withdrawMessage.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WithdrawMessageReq {
    /// A party to the message; without `asAdmin`, it must be the sender.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The other party.
    pub to_id: String,
    /// The message (a decimal string, or a number up to 2^53).
    #[schema(value_type = String, pattern = "^(?:[1-9][0-9]{0,18}|1[0-7][0-9]{18})$")]
    pub message_key: MessageKey,
    /// Recall as the app's admin: any time, whichever party `fromId` is. Default false:
    /// the recall acts as the sender's, within the app's recall window.
    pub as_admin: Option<bool>,
}

// ---------------------------------------------------------------- response types

/// Answer of sendMsg (also of a deduplicated resend: the original's values).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMsgResp {
    /// The server message id, a decimal string (64 bits: JavaScript numbers would lose
    /// precision).
    pub message_key: String,
    /// The message's sequence in the *sender's* inbox.
    pub message_sequence: u64,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub message_time: u64,
}

/// What a timeline entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A message; `messageBody` is its body (empty once recalled).
    Message,
    /// An event: the message `messageKey` was recalled; drop its body.
    Recall,
}

/// A message (or recall event) as one user's timeline holds it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageItem {
    /// The server message id, a decimal string.
    pub message_key: String,
    /// The sender's client message id.
    pub message_id: String,
    /// The sender.
    pub from_id: String,
    /// The recipient.
    pub to_id: String,
    /// The body; empty for a recalled message and for recall events.
    pub message_body: Vec<MessageElem>,
    /// Milliseconds since the Unix epoch: when the message was accepted (for a recall
    /// event, when it was recalled).
    pub message_time: u64,
    /// The entry's sequence in the timeline owner's inbox.
    pub message_sequence: u64,
    /// The message was recalled.
    pub recalled: bool,
    pub entry_type: EntryType,
    /// The sender's own time of the message (sendMsg's `messageTime`; for device sends,
    /// the device clock), ms since the Unix epoch.
    pub client_time: u64,
    /// sendMsg's `messageRandom` (0 if not given).
    pub message_random: i64,
    /// sendMsg's `badgeMode` (0 if not given).
    pub badge_mode: u8,
    /// sendMsg's `messageLifeTime` in seconds (0: none).
    pub message_life_time: u32,
}

impl MessageItem {
    fn from_timeline(item: &TimelineItem) -> Result<Self, ApiError> {
        let p = item
            .parts()
            .ok_or_else(|| ApiError::Internal(format!("timeline entry {} does not decode as a message", item.seq)))?;
        Ok(Self {
            message_key: p.message_key.to_string(),
            message_id: p.client_msg_id.to_string(),
            from_id: p.from_id.to_string(),
            to_id: p.to_id.to_string(),
            // Element types newer than this API have no name here yet; they are left out.
            message_body: p.elems.iter().filter_map(MessageElem::from_parts).collect(),
            message_time: p.server_time_ms,
            message_sequence: p.seq,
            recalled: p.recalled,
            entry_type: if p.entry == EntryKind::Recall { EntryType::Recall } else { EntryType::Message },
            client_time: p.client_time_ms,
            message_random: p.random as i64,
            badge_mode: p.badge_mode,
            message_life_time: p.life_time_secs,
        })
    }

    pub(crate) fn list(items: &[TimelineItem]) -> Result<Vec<Self>, ApiError> {
        items.iter().map(Self::from_timeline).collect()
    }
}

/// Answer of getOfflineMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetOfflineMessageResp {
    /// The user's committed inbox sequence: nothing at or below it can appear later.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`. When false, call again with
    /// `lastSequence` = the last item's `messageSequence`.
    pub completed: bool,
    /// Entries with `messageSequence > lastSequence`, ascending, within the app's
    /// retention: messages (recalled ones marked, body gone) and recall events.
    pub data_list: Vec<MessageItem>,
}

/// Answer of getHistoryMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetHistoryMessageResp {
    /// Messages of the conversation, newest first (recall events never appear; recalled
    /// messages do, marked, body gone).
    pub data_list: Vec<MessageItem>,
    /// True when there is nothing older.
    pub completed: bool,
    /// The `beforeSequence` of the next (older) page; null when `completed`.
    pub next_before_sequence: Option<u64>,
}

/// The result for one key of getMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageResult {
    /// The key as given (a decimal string).
    pub message_key: String,
    /// 200, or why this key has no answer: 90001 not a key, 50007 no such message,
    /// 50008 `fromId` is not a party to it.
    pub code: u32,
    pub msg: String,
    /// The message as `fromId`'s copy (only when `code` is 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageItem>,
}

/// Answer of getMessage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetMessageResp {
    /// One result per requested key, in request order.
    pub result_list: Vec<MessageResult>,
}

/// An empty answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

// ---------------------------------------------------------------- helpers

/// A message key of a list, given as a decimal string or a JSON number.
fn parse_key(v: &Value, path: &str) -> Result<u64, ApiError> {
    parse_id(v, "message key").map_err(|m| ApiError::bad(path, m))
}

/// Refuses unknown users (deleted ones may still be read).
async fn require_exists(state: &ApiState, app: AppId, id: &UserId) -> Result<(), ApiError> {
    state.users.get_one(app, id).await?;
    Ok(())
}

/// A send refusal, with the service's field names turned into the API's.
pub(crate) fn send_refusal(r: ServiceError) -> ApiError {
    const RENAMES: [(&str, &str); 4] = [
        ("elems", "messageBody"),
        ("client_msg_id", "messageId"),
        ("sender ", "fromId: sender "),
        ("recipient ", "toId: recipient "),
    ];
    let ServiceError::Refused { code, message } = r else { return ApiError::from(r) };
    let message = RENAMES
        .iter()
        .find_map(|(from, to)| message.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        .unwrap_or(message);
    ApiError::from(ServiceError::Refused { code, message })
}

// ---------------------------------------------------------------- handlers

/// Send a 1:1 message (server-side).
///
/// Sends `messageBody` from `fromId` to `toId`, exactly as if `fromId` had sent it
/// from a device, except that no device originates it: every online device of the
/// sender and of the recipient gets the push. To send "as the system", import a user
/// that stands for the system account and send from it. Answers once the message is
/// durable in both inboxes. A resend with the same `fromId` and `messageId` within the
/// dedup window (default 24 h) answers the original `messageKey`, `messageSequence`
/// and `messageTime` and creates nothing. `messageKey` is a decimal string.
#[utoipa::path(post, path = "/v1/message/sendMsg", tag = "messages", params(AuthQuery), request_body = SendMsgReq,
    responses((status = 200, description = "Accepted", body = Envelope<SendMsgResp>)))]
pub async fn send_msg(State(state): State<Arc<ApiState>>, call: AdminCall<SendMsgReq>) -> ApiResult<SendMsgResp> {
    let req = call.body;
    let from = acting_user(req.from_id, &call.common)?;
    let to = user_id(req.to_id, "toId")?;
    let c = SendContent::parse(
        &req.message_body,
        req.message_random,
        req.message_time,
        req.badge_mode,
        req.message_life_time,
    )?;
    let accepted = messages::send(
        &state.logic,
        SendRequest {
            app: call.app,
            from,
            to,
            client_msg_id: &req.message_id,
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

/// What a server-side send (sendMsg, group/sendMessage) carries besides who sends it
/// and to whom, checked.
pub(super) struct SendContent {
    pub body: Vec<OwnedElem>,
    pub client_time_ms: u64,
    pub extras: MessageExtras,
}

impl SendContent {
    /// Checks the body (`messageBody`) and the optional fields of a send.
    pub(super) fn parse(
        body: &Value,
        random: Option<i64>,
        time: Option<u64>,
        badge_mode: Option<u8>,
        life_time: Option<u32>,
    ) -> Result<Self, ApiError> {
        let body = parse_message_body((!body.is_null()).then_some(body))?;
        if let Some(b) = badge_mode.filter(|b| *b > 1) {
            return Err(ApiError::bad("badgeMode", format!("must be 0 or 1, not {b}")));
        }
        Ok(Self {
            body,
            client_time_ms: time.unwrap_or_else(crate::now_ms),
            extras: MessageExtras {
                // Stored as its bits: the original's random is a signed number.
                random: random.unwrap_or(0) as u64,
                badge_mode: badge_mode.unwrap_or(0),
                life_time_secs: life_time.unwrap_or(0),
            },
        })
    }
}

impl From<messages::Accepted> for SendMsgResp {
    fn from(a: messages::Accepted) -> Self {
        Self { message_key: a.message_key.to_string(), message_sequence: a.seq.0, message_time: a.server_time_ms }
    }
}

/// Messages a user's devices may not have yet (incremental inbox sync).
///
/// The entries of `fromId`'s inbox with `messageSequence > lastSequence`, ascending,
/// at most `maxLimit`, within the app's retention (default 30 days): messages sent and
/// received (recalled ones marked, body gone) and recall events (`entryType: "recall"`),
/// so a syncing device learns of recalls. Page with `lastSequence` = the last item's
/// `messageSequence` while `completed` is false.
#[utoipa::path(post, path = "/v1/message/getOfflineMessage", tag = "messages", params(AuthQuery),
    request_body = GetOfflineMessageReq,
    responses((status = 200, description = "A page of the inbox", body = Envelope<GetOfflineMessageResp>)))]
pub async fn get_offline_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetOfflineMessageReq>,
) -> ApiResult<GetOfflineMessageResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    require_exists(&state, call.app, &user).await?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let (items, watermark, completed) =
        messages::pull(&state.logic, call.app, &user, after, page_limit(req.max_limit, usize::MAX)).await?;
    Ok(ApiOk(GetOfflineMessageResp { max_sequence: watermark.0, completed, data_list: MessageItem::list(&items)? }))
}

/// A conversation's history, newest first.
///
/// The messages between `fromId` and `toId` as `fromId` sees them (sequences are
/// `fromId`'s), newest first, strictly below `beforeSequence`, at most `limit`. Page
/// backwards with `beforeSequence` = the answer's `nextBeforeSequence` until
/// `completed`. Recalled messages appear marked (body gone); recall events do not.
#[utoipa::path(post, path = "/v1/message/getHistoryMessage", tag = "messages", params(AuthQuery),
    request_body = GetHistoryMessageReq,
    responses((status = 200, description = "A page of history", body = Envelope<GetHistoryMessageResp>)))]
pub async fn get_history_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetHistoryMessageReq>,
) -> ApiResult<GetHistoryMessageResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let peer = user_id(req.to_id, "toId")?;
    require_exists(&state, call.app, &user).await?;
    require_exists(&state, call.app, &peer).await?;
    let before = req.before_sequence.filter(|b| *b != 0).map(Seq);
    let (items, next) = messages::history(
        &state.logic,
        call.app,
        &user,
        &peer,
        before,
        req.before_time,
        page_limit(req.limit, usize::MAX),
    )
    .await?;
    Ok(ApiOk(GetHistoryMessageResp {
        data_list: MessageItem::list(&items)?,
        completed: next.is_none(),
        next_before_sequence: next.map(|s| s.0),
    }))
}

/// Messages by key (batch), as one party's copy.
///
/// Answers one result per key, in request order: the message as `fromId`'s copy
/// (its sequence is `fromId`'s; recalled messages are marked, body gone), or per-key
/// 90001 (not a key), 50007 (no such message) or 50008 (`fromId` is not its sender or
/// recipient — nobody reads a pair's messages they are not part of). Only an unknown
/// `fromId` (20001) or a list over `http.max_batch` (20000) fails the whole call.
#[utoipa::path(post, path = "/v1/message/getMessage", tag = "messages", params(AuthQuery),
    request_body = GetMessageReq,
    responses((status = 200, description = "Per-key results", body = Envelope<GetMessageResp>)))]
pub async fn get_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetMessageReq>,
) -> ApiResult<GetMessageResp> {
    let req = call.body;
    check_batch(&state, req.message_keys.len(), "messageKeys")?;
    let user = acting_user(req.from_id, &call.common)?;
    require_exists(&state, call.app, &user).await?;
    let parsed: Vec<Result<u64, ApiError>> =
        req.message_keys.iter().enumerate().map(|(i, v)| parse_key(v, &format!("messageKeys[{i}]"))).collect();
    let keys: Vec<u64> = parsed.iter().filter_map(|k| k.as_ref().ok().copied()).collect();
    let mut found = messages::get_messages(&state.logic, call.app, &user, &keys).await?.into_iter();
    let mut result_list = Vec::with_capacity(parsed.len());
    for (raw, key) in req.message_keys.iter().zip(parsed) {
        let given = raw.as_str().map_or_else(|| raw.to_string(), str::to_string);
        let outcome = match key {
            Err(e) => Err(e),
            Ok(_) => match found.next() {
                Some(Ok(item)) => MessageItem::from_timeline(&item),
                Some(Err(r)) => Err(ApiError::from(r)),
                None => Err(ApiError::Internal("getMessage: fewer results than keys".into())),
            },
        };
        result_list.push(match outcome {
            Ok(m) => MessageResult { message_key: given, code: codes::OK, msg: "success".into(), message: Some(m) },
            Err(e @ ApiError::Internal(_)) => return Err(e),
            Err(e) => MessageResult { message_key: given, code: e.code(), msg: e.to_string(), message: None },
        });
    }
    Ok(ApiOk(GetMessageResp { result_list }))
}

/// Recall (withdraw) a message.
///
/// `fromId` and `toId` must be the message's two parties (50008 otherwise). Without
/// `asAdmin` the recall acts as the sender's: `fromId` must be the sender (50008) and
/// the app's recall window (`recall_window_secs`, default 120 s) must not have passed
/// (50004). With `asAdmin: true` the app's admin recalls it at any time. Both stored
/// copies are marked recalled (body dropped), a recall event is appended to both
/// inboxes (offline devices learn it by sync) and every online device of both users
/// gets a recall notification. A second recall is 50005.
#[utoipa::path(post, path = "/v1/message/withdrawMessage", tag = "messages", params(AuthQuery),
    request_body = WithdrawMessageReq,
    responses((status = 200, description = "Recalled", body = Envelope<Empty>)))]
pub async fn withdraw_message(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<WithdrawMessageReq>,
) -> ApiResult<Empty> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let peer = user_id(req.to_id, "toId")?;
    let key = req.message_key.0;
    // The pair named must be the message's: read `fromId`'s copy (50007/50008 if none).
    let copy = messages::get_messages(&state.logic, call.app, &user, &[key])
        .await?
        .pop()
        .unwrap_or_else(|| Err(ServiceError::refused(errors::NO_SUCH_MESSAGE, "no such message")))?;
    let parts = copy.parts().ok_or_else(|| ApiError::Internal(format!("message {key} does not decode")))?;
    let other = if parts.from_id == user.as_str() { parts.to_id } else { parts.from_id };
    if other != peer.as_str() {
        return Err(ApiError::Refused {
            code: errors::NOT_A_PARTY,
            message: format!("toId: `{peer}` is not the other party of message {key}"),
        });
    }
    let by = if req.as_admin.unwrap_or(false) { Recaller::Admin } else { Recaller::Sender(user) };
    messages::recall(&state.logic, call.app, key, by).await?;
    Ok(ApiOk(Empty {}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_and_elements_round_trip() {
        let v = json!([{"type": "custom", "text": "t", "data": BASE64.encode([0u8, 255, 7])}, {"type": "image", "url": "u"}]);
        let elems = parse_message_body(Some(&v)).unwrap();
        let back: Vec<MessageElem> = elems.iter().map(|e| MessageElem::from_parts(&e.parts()).unwrap()).collect();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        assert_eq!(elems[0].data, [0, 255, 7]);
        let text = parse_message_body(Some(&json!("hi"))).unwrap();
        assert_eq!((text[0].kind, text[0].text.as_str()), (ElemKind::Text, "hi"));
        let err = |v: Value| parse_message_body(Some(&v)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(json!([{"type": "gif"}])).starts_with("messageBody[0].type: unknown variant `gif`"));
        assert!(err(json!([{"type": "custom", "data": "%%"}])).starts_with("messageBody[0].data: not base64"));
        assert!(err(json!([{"type": "text", "txt": "x"}])).starts_with("messageBody[0].txt: unknown field"));
        assert!(err(json!([3])).starts_with("messageBody[0]: expected an object"));
        assert!(err(json!(5)).starts_with("messageBody: expected a string or an array"));
        assert_eq!(parse_message_body(None).err().unwrap().to_string(), "messageBody: missing");
    }

    #[test]
    fn send_refusals_name_the_api_fields() {
        let r = |code, m: &str| send_refusal(ServiceError::refused(code, m)).to_string();
        assert_eq!(r(errors::INVALID_MESSAGE, "elems[2]: empty"), "messageBody[2]: empty");
        assert_eq!(r(errors::INVALID_MESSAGE, "client_msg_id: must be"), "messageId: must be");
        assert_eq!(r(codes::USER_NOT_FOUND, "recipient does not exist"), "toId: recipient does not exist");
        assert_eq!(r(errors::BODY_TOO_LARGE, "body is 9 bytes"), "body is 9 bytes");
    }
}
