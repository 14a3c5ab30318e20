//! The payloads of the Friendship, Blacklist and FriendRequest log entries: each entry
//! carries the *full new state* of one relation of the log's owner (or a tombstone), so
//! the current state is the last entry per peer and a reader needs nothing but the log.
//!
//! Encoding: JSON, camelCase, with a version number `v`. Fields may be added (readers
//! ignore unknown keys and default missing ones); an incompatible change bumps `v`, and a
//! reader refuses versions newer than [`VERSION`] rather than misread them.
//!
//! This module must never be used for anything but these three logs; the API's shapes
//! live in `crate::http::friendship` and are mapped from the service's types.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tern_storage::{AppId, LogEntry, StoreError, SyncKind, UserId};

/// The encoding version written today.
pub const VERSION: u8 = 1;

fn version() -> u8 {
    VERSION
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The owner's friend-list entry for `to_id` (`deleted`: the entry was removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FriendRecord {
    #[serde(default = "version")]
    pub v: u8,
    pub to_id: UserId,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub add_source: String,
    #[serde(default)]
    pub add_wording: String,
    #[serde(default)]
    pub extra: String,
    /// When the friendship was made, ms since the Unix epoch (kept across updates).
    #[serde(default)]
    pub add_time: u64,
    /// When this state was written, ms since the Unix epoch.
    #[serde(default)]
    pub update_time: u64,
}

/// The owner's blacklist entry for `to_id` (`deleted`: unblocked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockRecord {
    #[serde(default = "version")]
    pub v: u8,
    pub to_id: UserId,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// When the block was made, ms since the Unix epoch.
    #[serde(default)]
    pub add_time: u64,
}

/// A friend request as one of its two parties holds it. Both parties' logs get a copy
/// on every change; `read` is kept in the recipient's copy only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    #[serde(default = "version")]
    pub v: u8,
    /// Unique in the app (time-ordered, 64 bits).
    pub id: u64,
    pub from_id: UserId,
    pub to_id: UserId,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub add_source: String,
    #[serde(default)]
    pub add_wording: String,
    #[serde(default)]
    pub extra: String,
    /// Whether approval makes both users friends (else only `from_id` → `to_id`).
    #[serde(default)]
    pub two_way: bool,
    /// 0 pending, 1 approved, 2 rejected.
    #[serde(default)]
    pub status: u8,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read: bool,
    #[serde(default)]
    pub create_time: u64,
    #[serde(default)]
    pub update_time: u64,
}

/// An entry of the owner's server-internal `ListedBy` log: `peer` started (`listed`) or
/// stopped listing the owner as a friend. Written by [`super::commit`] beside the peer's
/// friend-list entry, in the same batch; read only by the profile fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedByRecord {
    #[serde(default = "version")]
    pub v: u8,
    pub peer: UserId,
    pub listed: bool,
}

/// A decoded entry of one of the relation logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Friend(FriendRecord),
    Block(BlockRecord),
    Request(RequestRecord),
    ListedBy(ListedByRecord),
}

impl Record {
    /// The log this record belongs in.
    pub fn kind(&self) -> SyncKind {
        match self {
            Record::Friend(_) => SyncKind::Friendship,
            Record::Block(_) => SyncKind::Blacklist,
            Record::Request(_) => SyncKind::FriendRequest,
            Record::ListedBy(_) => SyncKind::ListedBy,
        }
    }

    /// The entry payload.
    pub fn encode(&self) -> Result<Bytes, StoreError> {
        let bytes = match self {
            Record::Friend(r) => serde_json::to_vec(r),
            Record::Block(r) => serde_json::to_vec(r),
            Record::Request(r) => serde_json::to_vec(r),
            Record::ListedBy(r) => serde_json::to_vec(r),
        };
        // Plain strings and numbers always serialize; map it anyway rather than panic.
        bytes.map(Bytes::from).map_err(|e| StoreError::Backend(format!("encoding a {:?} record: {e}", self.kind())))
    }

    /// Decodes an entry of `kind` read from `user`'s log.
    pub fn decode(app: AppId, user: &UserId, kind: SyncKind, entry: &LogEntry) -> Result<Record, StoreError> {
        let ctx = || format!("{kind:?} log entry {} of user {user} in app {app}", entry.seq);
        match kind {
            SyncKind::Friendship => parse::<FriendRecord>(&entry.payload, ctx, |r| r.v).map(Record::Friend),
            SyncKind::Blacklist => parse::<BlockRecord>(&entry.payload, ctx, |r| r.v).map(Record::Block),
            SyncKind::FriendRequest => parse::<RequestRecord>(&entry.payload, ctx, |r| r.v).map(Record::Request),
            SyncKind::ListedBy => parse::<ListedByRecord>(&entry.payload, ctx, |r| r.v).map(Record::ListedBy),
            other => Err(StoreError::corrupt(format!("{}: not a relation log ({other:?})", ctx()))),
        }
    }
}

fn parse<T: DeserializeOwned>(
    payload: &[u8],
    ctx: impl Fn() -> String,
    version_of: impl Fn(&T) -> u8,
) -> Result<T, StoreError> {
    let r: T = serde_json::from_slice(payload).map_err(|e| StoreError::corrupt(format!("{}: {e}", ctx())))?;
    let v = version_of(&r);
    if v > VERSION {
        return Err(StoreError::corrupt(format!(
            "{}: encoding version {v} is newer than this server's {VERSION}",
            ctx()
        )));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_storage::Seq;

    fn entry(payload: &str) -> LogEntry {
        LogEntry { seq: Seq(3), time_ms: 0, payload: Bytes::from(payload.to_string()) }
    }

    fn b() -> UserId {
        UserId::new("b").unwrap()
    }

    fn decode(kind: SyncKind, payload: &str) -> Result<Record, StoreError> {
        Record::decode(AppId(1), &UserId::new("u").unwrap(), kind, &entry(payload))
    }

    #[test]
    fn round_trips_and_tolerates_additions() {
        let f = Record::Friend(FriendRecord {
            v: 1,
            to_id: b(),
            deleted: false,
            remark: "r".into(),
            add_source: "s".into(),
            add_wording: String::new(),
            extra: "{}".into(),
            add_time: 5,
            update_time: 6,
        });
        let bytes = f.encode().unwrap();
        assert_eq!(decode(SyncKind::Friendship, std::str::from_utf8(&bytes).unwrap()).unwrap(), f);
        let tomb = decode(SyncKind::Blacklist, r#"{"v":1,"toId":"b","deleted":true,"future":[1]}"#).unwrap();
        assert_eq!(tomb, Record::Block(BlockRecord { v: 1, to_id: b(), deleted: true, add_time: 0 }));
        let r = decode(SyncKind::FriendRequest, r#"{"id":7,"fromId":"a","toId":"b"}"#).unwrap();
        assert!(matches!(r, Record::Request(RequestRecord { id: 7, v: 1, status: 0, .. })));
    }

    #[test]
    fn refuses_newer_versions_and_garbage() {
        let e = decode(SyncKind::Friendship, r#"{"v":2,"toId":"b"}"#).unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
        assert!(decode(SyncKind::Friendship, "{").is_err());
        assert!(decode(SyncKind::Friendship, r#"{"toId":"not an id"}"#).is_err());
        assert!(decode(SyncKind::Message, r#"{"toId":"b"}"#).is_err());
    }
}
