//! What Tern tells the business server: the JSON of every callback request, built from
//! what the event kept (see [`Event`]) by the delivery task, never on the send path.
//!
//! Every request body is an envelope `{"command", "appId", "eventId", "eventTime",
//! "data"}`; `eventId` (a decimal string, unique per node and event) lets the business
//! server drop the duplicates that retries can cause. Message bodies use the HTTP API's
//! `messageBody` element shape, message keys are decimal strings, times are ms since the
//! Unix epoch.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tern_schema::client::ConversationType;
use tern_schema::message::{self, ElemParts, MessageParts};
use tern_storage::{GroupId, GroupMemberRecord, GroupRecord, Seq, UserId};

use crate::friends::records::Record;
use crate::http::messages::MessageElem;

/// Commands, in the original system's naming (`command` field and query parameter).
pub mod commands {
    pub const BEFORE_SEND: &str = "message.send.before";
    pub const AFTER_SEND: &str = "message.send.after";
    pub const GROUP_BEFORE_SEND: &str = "group.message.send.before";
    pub const GROUP_AFTER_SEND: &str = "group.message.send.after";
    pub const STATE_CHANGE: &str = "user.online.status.change";
    pub const FRIENDSHIP_CHANGE: &str = "friendship.change.after";
    pub const GROUP_CHANGE: &str = "group.change.after";
}

/// Most members listed in one group-change event (a group created with 100,000 members
/// is reported with the first of them and `membersTruncated`).
pub const MAX_MEMBERS_PER_EVENT: usize = 1_000;

static NEXT_EVENT: AtomicU64 = AtomicU64::new(0);

/// A node-unique event id: the start time's milliseconds in the high bits, a counter in
/// the low 20, so ids of one node increase and two nodes rarely collide.
pub fn next_event_id() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| crate::now_ms() << 20);
    base + NEXT_EVENT.fetch_add(1, Ordering::Relaxed)
}

/// The envelope of every request.
pub fn envelope(command: &str, app: u32, event_id: u64, time_ms: u64, data: Value) -> Bytes {
    let v = json!({
        "command": command,
        "appId": app,
        "eventId": event_id.to_string(),
        "eventTime": time_ms,
        "data": data,
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

fn conversation(t: ConversationType) -> &'static str {
    if t == ConversationType::Group {
        "group"
    } else {
        "single"
    }
}

fn body_json(elems: &[ElemParts<'_>]) -> Vec<MessageElem> {
    elems.iter().filter_map(MessageElem::from_parts).collect()
}

/// What a before-send request describes.
pub struct Outgoing<'a> {
    pub group: bool,
    pub from: &'a UserId,
    /// The recipient user, or the group.
    pub to: &'a str,
    pub client_msg_id: &'a str,
    pub elems: &'a [ElemParts<'a>],
    pub client_time_ms: u64,
    pub from_device: &'a str,
}

/// The `data` of a before-send request.
pub fn before_send(m: &Outgoing<'_>) -> Value {
    json!({
        "conversationType": if m.group { "group" } else { "single" },
        "fromId": m.from.as_str(),
        "toId": m.to,
        "messageId": m.client_msg_id,
        "messageBody": body_json(m.elems),
        "clientTime": m.client_time_ms,
        "fromDevice": m.from_device,
    })
}

/// The `data` of an after-send event, from the stored message (None if it does not
/// decode, which the store's own checks make impossible).
pub fn after_send(stored: &[u8]) -> Option<(bool, Value)> {
    let m = message::decode_stored(stored).ok()?;
    let p = MessageParts::from_table(&m);
    let group = p.conversation_type == ConversationType::Group;
    Some((
        group,
        json!({
            "conversationType": conversation(p.conversation_type),
            "messageKey": p.message_key.to_string(),
            "fromId": p.from_id,
            "toId": p.to_id,
            "messageId": p.client_msg_id,
            "messageBody": body_json(&p.elems),
            "messageTime": p.server_time_ms,
            "clientTime": p.client_time_ms,
            "fromDevice": p.from_device,
            "messageRandom": p.random,
            "badgeMode": p.badge_mode,
            "messageLifeTime": p.life_time_secs,
        }),
    ))
}

/// Why a session began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateReason {
    /// A device logged in (online).
    Login,
    /// The session ended: logout, disconnect, heartbeat timeout, kick (offline).
    Logout,
    /// A new login of the same user replaced this device (offline).
    Replaced,
}

/// One device's session change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub user: UserId,
    pub client_type: u8,
    pub device_id: String,
    pub reason: StateReason,
}

pub fn state_change(s: &StateChange) -> Value {
    json!({
        "userId": s.user.as_str(),
        "clientType": s.client_type,
        "deviceId": s.device_id,
        "status": if s.reason == StateReason::Login { "online" } else { "offline" },
        "reason": s.reason,
    })
}

/// The `data` of a friendship event: every relation entry one change wrote, as the
/// owner's sync log holds it.
pub fn relations(changes: &[(UserId, Record, Seq)]) -> Value {
    let items: Vec<Value> = changes
        .iter()
        .filter_map(|(owner, rec, seq)| {
            let (kind, record) = match rec {
                Record::Friend(r) => ("friend", serde_json::to_value(r)),
                Record::Block(r) => ("blacklist", serde_json::to_value(r)),
                Record::Request(r) => ("friendRequest", serde_json::to_value(r)),
                // The server's own who-lists-me bookkeeping: not a relation change.
                Record::ListedBy(_) => return None,
            };
            Some(
                json!({"userId": owner.as_str(), "kind": kind, "sequence": seq.0, "record": record.unwrap_or(Value::Null)}),
            )
        })
        .collect();
    json!({ "changes": items })
}

/// What one group change wrote.
#[derive(Debug, Clone)]
pub struct GroupChange {
    pub group_id: GroupId,
    /// The group's record after the change, when the change wrote it.
    pub group: Option<GroupRecord>,
    pub members_put: Vec<GroupMemberRecord>,
    pub members_removed: Vec<UserId>,
    pub truncated: bool,
}

pub fn group_change(c: &GroupChange) -> Value {
    json!({
        "groupId": c.group_id.as_str(),
        "group": c.group,
        "membersPut": c.members_put,
        "membersRemoved": c.members_removed.iter().map(UserId::as_str).collect::<Vec<_>>(),
        "membersTruncated": c.truncated,
    })
}
