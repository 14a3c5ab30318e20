//! Backend-neutral value types that cross the [`Store`](crate::Store) boundary.
//!
//! These are the nouns every caller of storage speaks: apps, users, sequences, log
//! entries, dedup records, message locators. They carry preconditions in their types
//! (a [`UserId`] is always valid, a [`Seq`] is never confused with a timestamp) so
//! that backends never re-validate. This module must never mention a storage engine
//! or a query language: how a record is laid out on disk is each backend's private
//! business.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::{borrow::Borrow, fmt, str::FromStr};

/// A tenant. Every user, log and sequence lives inside exactly one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(pub u32);

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string was refused as a [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// The id is empty.
    #[error("user id is empty")]
    Empty,
    /// The id is longer than [`UserId::MAX_LEN`] bytes.
    #[error("user id is {len} bytes, more than the {max} allowed", max = UserId::MAX_LEN)]
    TooLong {
        /// Length of the refused id in bytes.
        len: usize,
    },
    /// The id contains a byte outside ASCII letters, digits and `_-.@`.
    #[error("user id contains the forbidden character {found:?} at byte {at}")]
    BadChar {
        /// The first offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

/// A user's id inside an app: 1..=64 bytes of ASCII letters, digits and `_-.@`.
///
/// The length limit lets backends prefix keys with a one-byte length, and the
/// restricted alphabet keeps ids safe in logs, URLs and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Longest accepted id in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidUserId> {
        let id = id.into();
        Self::check(&id)?;
        Ok(Self(id))
    }

    fn check(id: &str) -> Result<(), InvalidUserId> {
        if id.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(InvalidUserId::TooLong { len: id.len() });
        }
        if let Some((at, found)) =
            id.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
        {
            return Err(InvalidUserId::BadChar { found, at });
        }
        Ok(())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as bytes (ASCII, 1..=64 of them).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Unwraps the id.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserId {
    type Err = InvalidUserId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidUserId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for UserId {
    type Error = InvalidUserId;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

/// A position in one per-user, per-kind sequence. Strictly increasing, may skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first item: `read_log(.., after: Seq::ZERO, ..)` reads from the start.
    pub const ZERO: Seq = Seq(0);
    /// After every item: `read_log_back(.., before: Seq::MAX, ..)` reads the newest page.
    pub const MAX: Seq = Seq(u64::MAX);

    /// The following sequence, or `None` at the end of the range.
    pub fn checked_next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of per-user synced data, each with its own sequence.
///
/// The numbers are stable forever: they are on the wire and in stored keys. Add new
/// kinds at the end; never renumber or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum SyncKind {
    /// The message inbox timeline.
    Message = 0,
    /// Profile changes.
    Profile = 1,
    /// Friendship changes.
    Friendship = 2,
    /// Blacklist changes.
    Blacklist = 3,
    /// Friend requests.
    FriendRequest = 4,
    /// Groups joined / left.
    GroupList = 5,
    /// Conversation list changes.
    Conversation = 6,
}

impl SyncKind {
    /// Every kind, in number order.
    pub const ALL: [SyncKind; 7] = [
        SyncKind::Message,
        SyncKind::Profile,
        SyncKind::Friendship,
        SyncKind::Blacklist,
        SyncKind::FriendRequest,
        SyncKind::GroupList,
        SyncKind::Conversation,
    ];

    /// The kind with wire number `n`, if there is one.
    pub fn from_u8(n: u8) -> Option<SyncKind> {
        Self::ALL.get(usize::from(n)).copied()
    }

    /// The stable wire number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A user's profile as stored. Field names follow the original system's profile API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Whose profile this is.
    pub user_id: UserId,
    // Every other field defaults when absent so records written before a field was
    // added still decode.
    /// Display name.
    #[serde(default)]
    pub nick_name: String,
    /// Avatar URL.
    #[serde(default)]
    pub photo: String,
    /// 0 unknown, 1 male, 2 female (opaque to storage).
    #[serde(default)]
    pub user_sex: u8,
    /// Birthday as given by the business server (opaque to storage).
    #[serde(default)]
    pub birth_day: String,
    /// Free-form location.
    #[serde(default)]
    pub location: String,
    /// Free-form signature line.
    #[serde(default)]
    pub self_signature: String,
    /// Who may add this user as a friend (opaque to storage).
    #[serde(default)]
    pub friend_allow_type: u8,
    /// Whether adding this user as a friend is disabled.
    #[serde(default)]
    pub disable_add_friend: bool,
    /// Whether the user is muted (opaque to storage).
    #[serde(default)]
    pub silent_flag: bool,
    /// Business-defined extra data.
    #[serde(default)]
    pub extra: String,
    /// Soft-deleted: kept so deleted users can be told apart from unknown ones.
    #[serde(default)]
    pub deleted: bool,
    /// When the user was created, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
    /// When the profile last changed, milliseconds since the Unix epoch.
    #[serde(default)]
    pub updated_ms: u64,
}

impl UserRecord {
    /// A fresh, empty profile created at `now_ms`.
    pub fn new(user_id: UserId, now_ms: u64) -> Self {
        Self {
            user_id,
            nick_name: String::new(),
            photo: String::new(),
            user_sex: 0,
            birth_day: String::new(),
            location: String::new(),
            self_signature: String::new(),
            friend_allow_type: 0,
            disable_add_friend: false,
            silent_flag: false,
            extra: String::new(),
            deleted: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// One entry of a per-user, per-kind, seq-ordered log (inbox timeline, profile
/// changes, friendship changes, …). The payload is encoded by logic and opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the log; unique per (app, user, kind).
    pub seq: Seq,
    /// When the entry was made, milliseconds since the Unix epoch (for retention).
    pub time_ms: u64,
    /// Logic's encoding of the entry.
    pub payload: Bytes,
}

/// A dedup-window record: a retried client send finds the original answer here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRecord {
    /// Sender + client message id, composed by logic (storage treats it as opaque).
    pub key: String,
    /// What to answer a retry with (logic's encoding, e.g. the server message id).
    pub value: Bytes,
    /// The record is gone from `now_ms >= expires_ms` on.
    pub expires_ms: u64,
}

/// Where the two stored copies of a 1:1 message live.
///
/// A message is stored once in the sender's inbox timeline and once in the
/// recipient's; the locator, kept under logic's message key, finds both (e.g. to
/// recall the message). For a message to oneself both copies may be the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageLocator {
    /// The sender.
    pub from: UserId,
    /// The recipient.
    pub to: UserId,
    /// Seq of the sender's copy in the sender's [`SyncKind::Message`] log.
    pub from_seq: Seq,
    /// Seq of the recipient's copy in the recipient's [`SyncKind::Message`] log.
    pub to_seq: Seq,
    /// When the message was sent, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// A persisted app (used for the auto-generated development app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// The app.
    pub app_id: AppId,
    /// Its signing secret.
    pub secret: String,
    /// When it was created, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_validation() {
        for ok in ["a", "A-z_0.9@x", &"x".repeat(64)] {
            assert_eq!(UserId::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(UserId::new(""), Err(InvalidUserId::Empty));
        assert_eq!(UserId::new("x".repeat(65)), Err(InvalidUserId::TooLong { len: 65 }));
        assert_eq!(UserId::new("ab c"), Err(InvalidUserId::BadChar { found: ' ', at: 2 }));
        assert!(UserId::new("é").is_err());
        assert!(UserId::new("a/b").is_err());
    }

    #[test]
    fn user_id_serde_validates() {
        let id: UserId = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(id.as_str(), "bob");
        assert!(serde_json::from_str::<UserId>("\"b b\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"bob\"");
    }

    #[test]
    fn sync_kind_numbers_are_stable() {
        let expected = [
            (SyncKind::Message, 0),
            (SyncKind::Profile, 1),
            (SyncKind::Friendship, 2),
            (SyncKind::Blacklist, 3),
            (SyncKind::FriendRequest, 4),
            (SyncKind::GroupList, 5),
            (SyncKind::Conversation, 6),
        ];
        for (kind, n) in expected {
            assert_eq!(kind.as_u8(), n);
            assert_eq!(SyncKind::from_u8(n), Some(kind));
        }
        assert_eq!(SyncKind::ALL.len(), expected.len());
        assert_eq!(SyncKind::from_u8(7), None);
        assert_eq!(SyncKind::from_u8(255), None);
    }

    #[test]
    fn user_record_tolerates_missing_fields() {
        let rec: UserRecord = serde_json::from_str(r#"{"user_id":"u1","nick_name":"n"}"#).unwrap();
        assert_eq!(rec.nick_name, "n");
        assert!(!rec.deleted);
    }
}
