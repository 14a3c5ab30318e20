//! Backend-neutral value types that cross the [`Store`](crate::Store) boundary.
//!
//! These are the nouns every caller of storage speaks: apps, users, groups, owners,
//! conversations, sequences, log entries, dedup records, message locators, conversation
//! records. They carry preconditions in their types (a [`UserId`] is always valid, a
//! [`Seq`] is never confused with a timestamp) so that backends never re-validate.
//!
//! The two keys of the owner model: an [`Owner`] (a user or a group) owns sequences,
//! logs (timelines) and their bounds — a group has a message timeline and seq of its
//! own; a [`Conversation`] (a peer user or a group) is what one user's conversation
//! index, read marks and conversation records are kept per. This module must never mention a storage engine
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
        check_id(id, Self::MAX_LEN)
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

/// The id rules shared by users and groups: 1..=`max` bytes of ASCII letters, digits
/// and `_-.@`.
fn check_id(id: &str, max: usize) -> Result<(), InvalidUserId> {
    if id.is_empty() {
        return Err(InvalidUserId::Empty);
    }
    if id.len() > max {
        return Err(InvalidUserId::TooLong { len: id.len() });
    }
    if let Some((at, found)) =
        id.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        return Err(InvalidUserId::BadChar { found, at });
    }
    Ok(())
}

/// Why a string was refused as a [`GroupId`] (the rules of [`UserId`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group id: {0}")]
pub struct InvalidGroupId(pub InvalidUserId);

/// A group's id inside an app, with the rules of [`UserId`]: 1..=64 bytes of ASCII
/// letters, digits and `_-.@` (so it fits a one-byte length in keys and is safe in
/// logs and URLs). A group is an [`Owner`] with its own timeline and seq.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupId(String);

impl GroupId {
    /// Longest accepted id in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidGroupId> {
        let id = id.into();
        check_id(&id, Self::MAX_LEN).map_err(InvalidGroupId)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as bytes (ASCII, 1..=64 of them).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for GroupId {
    type Err = InvalidGroupId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for GroupId {
    type Error = InvalidGroupId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<GroupId> for String {
    fn from(id: GroupId) -> Self {
        id.0
    }
}

/// Who owns a sequence and its logs: a user (inbox timeline, friendship log, …) or a
/// group (the group's one message timeline: read fan-out, every member pulls it by the
/// group's seq). Seq bounds and logs are per (app, owner, [`SyncKind`]); only the
/// owner's slot owner writes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A user's own logs.
    User(UserId),
    /// A group's logs.
    Group(GroupId),
}

impl Owner {
    /// The user, if this owner is one.
    pub fn as_user(&self) -> Option<&UserId> {
        match self {
            Owner::User(u) => Some(u),
            Owner::Group(_) => None,
        }
    }

    /// The group, if this owner is one.
    pub fn as_group(&self) -> Option<&GroupId> {
        match self {
            Owner::Group(g) => Some(g),
            Owner::User(_) => None,
        }
    }

    /// The owner's id as text (users and groups may share an id: compare owners, not ids).
    pub fn id(&self) -> &str {
        match self {
            Owner::User(u) => u.as_str(),
            Owner::Group(g) => g.as_str(),
        }
    }
}

impl From<UserId> for Owner {
    fn from(u: UserId) -> Self {
        Owner::User(u)
    }
}

impl From<GroupId> for Owner {
    fn from(g: GroupId) -> Self {
        Owner::Group(g)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(u) => write!(f, "user {u}"),
            Owner::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// One conversation as one user sees it: with a peer (1:1) or in a group. A user's
/// conversation index, read marks and conversation records are kept per conversation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Conversation {
    /// The 1:1 conversation with this peer (the peer may be the user: notes to self).
    Single(UserId),
    /// The conversation of this group.
    Group(GroupId),
}

impl Conversation {
    /// The conversation type number of the original system's API (1 = single,
    /// 2 = group). Stable: it is in stored records.
    pub fn type_number(&self) -> u8 {
        match self {
            Conversation::Single(_) => 1,
            Conversation::Group(_) => 2,
        }
    }

    /// The peer of a 1:1 conversation.
    pub fn as_peer(&self) -> Option<&UserId> {
        match self {
            Conversation::Single(u) => Some(u),
            Conversation::Group(_) => None,
        }
    }

    /// Whose timeline holds this conversation's messages, seen from `user`: the user's
    /// own inbox for a 1:1 conversation, the group's timeline for a group.
    pub fn timeline_owner(&self, user: &UserId) -> Owner {
        match self {
            Conversation::Single(_) => Owner::User(user.clone()),
            Conversation::Group(g) => Owner::Group(g.clone()),
        }
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::Single(u) => write!(f, "single {u}"),
            Conversation::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A position in one per-owner, per-kind sequence. Strictly increasing, may skip.
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

/// The kinds of per-owner synced data, each with its own sequence (a group uses
/// [`SyncKind::Message`] for its timeline; the other kinds are per user).
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
    /// Server-internal, never synced to clients: who lists this user as a friend (each
    /// entry: one peer started or stopped listing the owner), the index of the profile
    /// fan-out. Written in the same batch as the peer's friend-list change.
    ListedBy = 7,
    /// Server-internal, never synced to clients: the user's conversation flags the push
    /// and pull paths need without the conversation view (muted conversations, cleared
    /// group history), as ONE entry at seq 1 rewritten on every change (no seq is
    /// allocated in this log). Read at login with the user's other state.
    ConversationFlags = 8,
    /// Server-internal, never synced to clients: the user's conversation list as last
    /// derived (records, last messages, unread counts, how far each timeline was
    /// folded), in parts at seqs 1, 2, … rewritten in place (no seq is allocated in
    /// this log). A cache: a list read after a restart starts from it and folds only
    /// what came after; without it the list is rebuilt from the conversation log.
    ConversationSnapshot = 9,
}

impl SyncKind {
    /// Every kind, in number order.
    pub const ALL: [SyncKind; 10] = [
        SyncKind::Message,
        SyncKind::Profile,
        SyncKind::Friendship,
        SyncKind::Blacklist,
        SyncKind::FriendRequest,
        SyncKind::GroupList,
        SyncKind::Conversation,
        SyncKind::ListedBy,
        SyncKind::ConversationFlags,
        SyncKind::ConversationSnapshot,
    ];

    /// Whether clients sync this kind (login watermarks, Pull, sync calls); the others are
    /// the server's own bookkeeping.
    pub fn client_visible(self) -> bool {
        !matches!(self, SyncKind::ListedBy | SyncKind::ConversationFlags | SyncKind::ConversationSnapshot)
    }

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
    /// Whether the user is disabled: may neither log in nor send (opaque to storage).
    #[serde(default)]
    pub forbidden_flag: bool,
    /// Business-defined extra data.
    #[serde(default)]
    pub extra: String,
    /// The original system's login password as a PHC-format hash (Argon2id, salted);
    /// empty when none was given. Never the password itself, never returned by the API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_hash: String,
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
            forbidden_flag: false,
            extra: String::new(),
            password_hash: String::new(),
            deleted: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// One entry of a per-owner, per-kind, seq-ordered log (inbox timeline, group
/// timeline, profile changes, friendship changes, …). The payload is encoded by logic
/// and opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the log; unique per (app, owner, kind).
    pub seq: Seq,
    /// When the entry was made, milliseconds since the Unix epoch (for retention).
    pub time_ms: u64,
    /// Logic's encoding of the entry.
    pub payload: Bytes,
}

/// How far one device of a user has received one log (see
/// [`WriteOp::PutDeviceAck`](crate::WriteOp::PutDeviceAck)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceAck {
    /// Whose log: the user's own, or a group's timeline the user reads.
    pub owner: Owner,
    /// Which log.
    pub kind: SyncKind,
    /// Received up to here.
    pub seq: Seq,
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

/// One stored copy of a message: the seq it has in its owner's [`SyncKind::Message`] log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageCopy {
    /// Whose timeline holds the copy.
    pub owner: Owner,
    /// Its seq there.
    pub seq: Seq,
}

/// Where the stored copies of a message live, kept under logic's message key (to
/// recall a message, or fetch it by key).
///
/// A 1:1 message is stored twice (write fan-out): in the sender's timeline, then in
/// the recipient's ([`MessageLocator::single`]); a message to oneself once. A group
/// message is stored once, in the group's timeline ([`MessageLocator::group`]). The
/// copies are listed in that order; no owner appears twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLocator {
    /// Who sent the message.
    pub sender: UserId,
    /// When it was sent, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Every stored copy, at least one.
    pub copies: Vec<MessageCopy>,
}

impl MessageLocator {
    /// A 1:1 message from `from` (copy at `from_seq`) to `to` (copy at `to_seq`); to
    /// oneself, one copy at `from_seq`.
    pub fn single(from: UserId, from_seq: Seq, to: UserId, to_seq: Seq, time_ms: u64) -> Self {
        let mut copies = vec![MessageCopy { owner: Owner::User(from.clone()), seq: from_seq }];
        if to != from {
            copies.push(MessageCopy { owner: Owner::User(to), seq: to_seq });
        }
        Self { sender: from, time_ms, copies }
    }

    /// A group message, stored once in the group's timeline at `seq`.
    pub fn group(sender: UserId, group: GroupId, seq: Seq, time_ms: u64) -> Self {
        Self { sender, time_ms, copies: vec![MessageCopy { owner: Owner::Group(group), seq }] }
    }

    /// The seq of `owner`'s copy, if it has one.
    pub fn seq_of(&self, owner: &Owner) -> Option<Seq> {
        self.copies.iter().find(|c| c.owner == *owner).map(|c| c.seq)
    }

    /// The recipient of a 1:1 message (the sender for a message to oneself); `None`
    /// for a group message.
    pub fn recipient(&self) -> Option<&UserId> {
        match self.copies.as_slice() {
            [MessageCopy { owner: Owner::User(only), .. }] => Some(only),
            [_, MessageCopy { owner: Owner::User(to), .. }] => Some(to),
            _ => None,
        }
    }

    /// The group of a group message.
    pub fn group_id(&self) -> Option<&GroupId> {
        self.copies.iter().find_map(|c| c.owner.as_group())
    }
}

/// The newest message of a conversation, as a conversation record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastMessage {
    /// Logic's message key.
    pub message_key: u64,
    /// Its seq in the conversation's timeline as the record's user reads it (their
    /// inbox for 1:1, the group's timeline for a group).
    pub seq: Seq,
    /// When it was sent, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who sent it.
    pub sender: UserId,
    /// A short preview of its content (logic decides how short; storage caps it at
    /// [`ConversationRecord::MAX_TEXT_LEN`] bytes).
    pub preview: String,
}

/// One user's record of one conversation (issue 12's conversation list): what the list
/// shows and what the user set. Unread counts are not stored: they are the conversation
/// index entries above `read_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// Which conversation (its type is [`Conversation::type_number`]).
    pub conversation: Conversation,
    /// The newest message, if the record tracks one.
    pub last: Option<LastMessage>,
    /// Read up to here (same seq space as [`LastMessage::seq`]).
    pub read_seq: Seq,
    /// Pinned to the top of the list.
    pub is_top: bool,
    /// Muted: pushes carry a flag so clients do not alert.
    pub is_mute: bool,
    /// Business-defined extra data, at most [`ConversationRecord::MAX_TEXT_LEN`] bytes.
    pub extra: String,
    /// The record's position in the user's [`SyncKind::Conversation`] log (the entry
    /// that last changed it).
    pub sync_seq: Seq,
    /// When the record last changed, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

impl ConversationRecord {
    /// Longest accepted `extra` and `last.preview`, in bytes: a record is read in bulk
    /// (a whole conversation list), so it must stay small.
    pub const MAX_TEXT_LEN: usize = 4096;

    /// A fresh record of `conversation` with nothing set.
    pub fn new(conversation: Conversation) -> Self {
        Self {
            conversation,
            last: None,
            read_seq: Seq::ZERO,
            is_top: false,
            is_mute: false,
            extra: String::new(),
            sync_seq: Seq::ZERO,
            updated_ms: 0,
        }
    }
}

/// A group's profile and state as stored (issue 11). Field names follow the original
/// system's group API. Stored as a whole (last write wins); logic orders changes of one
/// group under that group's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Which group.
    pub group_id: GroupId,
    // Every other field defaults when absent so records written before a field was
    // added still decode.
    /// 1 private/work, 2 public, 3 meeting/chat room, 4 community (opaque to storage).
    #[serde(default)]
    pub group_type: u8,
    /// Display name.
    #[serde(default)]
    pub group_name: String,
    /// The owner, if the group has one (a group made by an app admin may not).
    #[serde(default)]
    pub owner_id: Option<UserId>,
    /// The whole group is muted: only the owner and admins may send.
    #[serde(default)]
    pub mute: bool,
    /// How users may join (opaque to storage).
    #[serde(default)]
    pub apply_join_type: u8,
    /// Free-form introduction.
    #[serde(default)]
    pub introduction: String,
    /// Free-form notice.
    #[serde(default)]
    pub notification: String,
    /// Avatar URL.
    #[serde(default)]
    pub photo: String,
    /// Most members (0: the app's default).
    #[serde(default)]
    pub max_member_count: u32,
    /// Members now (kept by logic with every membership change, so a full check
    /// needs no scan).
    #[serde(default)]
    pub member_count: u32,
    /// Business-defined extra data.
    #[serde(default)]
    pub extra: String,
    /// Dissolved: kept so a destroyed group can be told apart from an unknown one.
    #[serde(default)]
    pub destroyed: bool,
    /// When the group was created, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
    /// When the record last changed, milliseconds since the Unix epoch.
    #[serde(default)]
    pub updated_ms: u64,
}

impl GroupRecord {
    /// A fresh, empty group created at `now_ms`.
    pub fn new(group_id: GroupId, now_ms: u64) -> Self {
        Self {
            group_id,
            group_type: 0,
            group_name: String::new(),
            owner_id: None,
            mute: false,
            apply_join_type: 0,
            introduction: String::new(),
            notification: String::new(),
            photo: String::new(),
            max_member_count: 0,
            member_count: 0,
            extra: String::new(),
            destroyed: false,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// One member of a group as stored, keyed by (app, group, member) and paged by member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberRecord {
    /// Who.
    pub member_id: UserId,
    // Every other field defaults when absent (see GroupRecord).
    /// 0 member, 1 admin, 2 owner (opaque to storage).
    #[serde(default)]
    pub role: u8,
    /// The member's name card in this group.
    #[serde(default)]
    pub alias: String,
    /// How the member joined (opaque to storage).
    #[serde(default)]
    pub join_type: String,
    /// When the member joined, milliseconds since the Unix epoch.
    #[serde(default)]
    pub join_time_ms: u64,
    /// The group timeline's seq when the member joined: the member sees messages
    /// above it (join-time visibility).
    #[serde(default)]
    pub join_seq: Seq,
    /// Muted until then, milliseconds since the Unix epoch (0: not muted).
    #[serde(default)]
    pub mute_until_ms: u64,
    /// Business-defined extra data.
    #[serde(default)]
    pub extra: String,
    /// The member read the group's timeline up to this group seq (group read
    /// receipts: "who read message S" is the members whose `read_seq >= S`).
    #[serde(default)]
    pub read_seq: Seq,
}

impl GroupMemberRecord {
    /// A plain member joined at `now_ms`, above group seq `join_seq`.
    pub fn new(member_id: UserId, now_ms: u64, join_seq: Seq) -> Self {
        Self {
            member_id,
            role: 0,
            alias: String::new(),
            join_type: String::new(),
            join_time_ms: now_ms,
            join_seq,
            mute_until_ms: 0,
            extra: String::new(),
            read_seq: Seq::ZERO,
        }
    }
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
            (SyncKind::ListedBy, 7),
            (SyncKind::ConversationFlags, 8),
            (SyncKind::ConversationSnapshot, 9),
        ];
        for (kind, n) in expected {
            assert_eq!(kind.as_u8(), n);
            assert_eq!(SyncKind::from_u8(n), Some(kind));
        }
        assert_eq!(SyncKind::ALL.len(), expected.len());
        assert_eq!(SyncKind::from_u8(10), None);
        let internal = [SyncKind::ListedBy, SyncKind::ConversationFlags, SyncKind::ConversationSnapshot];
        assert!(SyncKind::ALL.iter().all(|k| k.client_visible() != internal.contains(k)));
        assert_eq!(SyncKind::from_u8(255), None);
    }

    #[test]
    fn user_record_tolerates_missing_fields() {
        let rec: UserRecord = serde_json::from_str(r#"{"user_id":"u1","nick_name":"n"}"#).unwrap();
        assert_eq!(rec.nick_name, "n");
        assert!(!rec.deleted);
    }
}
