//! The entries of a user's conversation sync log (`SyncKind::Conversation`): each is
//! the full new state of one conversation record, a tombstone, a "delete on your
//! devices only" instruction, or a checkpoint of how far the user's inbox was folded.
//! JSON, versioned, every field but the op defaulted, so a field added later needs no
//! migration.
//!
//! Must never: hold derived values (last message, unread count): those are computed
//! from the timelines when read, so the log changes only when the user's record does.

use serde::{Deserialize, Serialize};
use tern_storage::{Conversation, GroupId, Seq, UserId};

/// What one log entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    /// The record's new state.
    Put,
    /// The record was removed on the server (a tombstone).
    Delete,
    /// The user's devices should remove the conversation locally; the server's record
    /// is unchanged (the entry carries its state as it is).
    NotifyDelete,
    /// No record changed: the inbox was folded up to `inbox_seq` (see the module docs
    /// of `conversations`).
    Checkpoint,
}

/// One conversation log entry (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    #[serde(rename = "v")]
    pub version: u8,
    pub op: Op,
    /// 1 single, 2 group (`Conversation::type_number`); 0 for a checkpoint.
    #[serde(default)]
    pub conversation_type: u8,
    /// The peer (single) or the group.
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub is_top: bool,
    #[serde(default)]
    pub is_mute: bool,
    #[serde(default)]
    pub extra: String,
    /// Read up to here (the user's inbox seq for single, the group seq for group).
    #[serde(default)]
    pub read_seq: u64,
    /// History up to here was cleared for this user (same seq space as `read_seq`).
    #[serde(default)]
    pub cleared_seq: u64,
    /// The user's inbox was folded up to here when the entry was written.
    #[serde(default)]
    pub inbox_seq: u64,
    /// When the change was made, milliseconds since the Unix epoch.
    #[serde(default)]
    pub time_ms: u64,
}

impl LogRecord {
    pub const VERSION: u8 = 1;

    /// The conversation the entry is about (`None` for a checkpoint or an entry whose
    /// target is not a valid id).
    pub fn conversation(&self) -> Option<Conversation> {
        match self.conversation_type {
            1 => UserId::new(self.target.clone()).ok().map(Conversation::Single),
            2 => GroupId::new(self.target.clone()).ok().map(Conversation::Group),
            _ => None,
        }
    }

    /// A checkpoint at `inbox_seq`.
    pub fn checkpoint(inbox_seq: Seq, time_ms: u64) -> Self {
        Self {
            version: Self::VERSION,
            op: Op::Checkpoint,
            conversation_type: 0,
            target: String::new(),
            is_top: false,
            is_mute: false,
            extra: String::new(),
            read_seq: 0,
            cleared_seq: 0,
            inbox_seq: inbox_seq.0,
            time_ms,
        }
    }

    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }
}

/// The target id of a conversation (peer or group) as a string.
pub fn target_of(conv: &Conversation) -> &str {
    match conv {
        Conversation::Single(u) => u.as_str(),
        Conversation::Group(g) => g.as_str(),
    }
}

/// The original system's conversation id of `user`'s conversation:
/// `{type}_{user}_{peer or group}`.
pub fn conversation_id(user: &UserId, conv: &Conversation) -> String {
    format!("{}_{}_{}", conv.type_number(), user, target_of(conv))
}

/// Reads a conversation id of `user` (see [`conversation_id`]). Ids may contain `_`, so
/// the user's own id (known from the call) is stripped as a whole.
pub fn parse_conversation_id(user: &UserId, id: &str) -> Result<Conversation, String> {
    let bad = || format!("{id:?} is not a conversation id of {user} ({{type}}_{{fromId}}_{{toId}}, type 1 or 2)");
    let (ty, rest) = id.split_once('_').ok_or_else(bad)?;
    let target = rest.strip_prefix(user.as_str()).and_then(|r| r.strip_prefix('_')).ok_or_else(bad)?;
    match ty {
        "1" => UserId::new(target.to_string()).map(Conversation::Single).map_err(|e| format!("{id:?}: {e}")),
        "2" => GroupId::new(target.to_string()).map(Conversation::Group).map_err(|e| format!("{id:?}: {e}")),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s.to_string()).unwrap()
    }

    #[test]
    fn conversation_ids_round_trip_with_underscores() {
        let u = uid("a_b");
        for conv in [
            Conversation::Single(uid("c_d")),
            Conversation::Single(uid("a_b")),
            Conversation::Group(GroupId::new("g_1").unwrap()),
        ] {
            let id = conversation_id(&u, &conv);
            assert_eq!(parse_conversation_id(&u, &id).unwrap(), conv, "{id}");
        }
        for bad in ["", "1", "3_a_b_c", "1_a_c", "1_a_b_", "1_a_b", "x_a_b_c"] {
            assert!(parse_conversation_id(&u, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_tolerate_missing_fields() {
        let r = LogRecord::checkpoint(Seq(9), 5);
        assert_eq!(LogRecord::decode(&r.encode()).unwrap(), r);
        let min = LogRecord::decode(br#"{"v":1,"op":"put","conversationType":1,"target":"p"}"#).unwrap();
        assert_eq!(min.conversation(), Some(Conversation::Single(uid("p"))));
        assert!(LogRecord::decode(b"{").is_none());
    }
}
