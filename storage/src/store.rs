//! The storage trait and the write batch every backend applies.
//!
//! Logic talks to storage only through [`Store`] (as `Arc<dyn Store>`), so the
//! embedded engine and a cluster database are interchangeable and are held to the same
//! conformance suite. Writes are batches of [`WriteOp`]s so that one durable write can
//! carry many messages (group commit) and a message's fan-out lands atomically.
//!
//! This module must never mention a particular engine or query language, and must never
//! promise more than every backend can keep (e.g. no cross-batch transactions, no
//! conditional writes on the hot path).

use crate::{
    AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck, GroupId, GroupMemberRecord,
    GroupRecord, LogEntry, MessageLocator, Owner, Seq, StoreError, SyncKind, UserId, UserRecord,
};
use async_trait::async_trait;
use bytes::Bytes;

/// Longest accepted [`DedupRecord::key`] in bytes. A sender id is at most 64 bytes;
/// the rest is room for the client's message id and logic's separators.
pub const MAX_DEDUP_KEY_LEN: usize = 512;

/// Largest accepted [`LogEntry::payload`] / [`DedupRecord::value`] in bytes. Messages
/// are small; anything bigger belongs in object storage, and cluster databases degrade
/// badly with multi-megabyte cells.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Longest accepted device id in bytes (devices are named by their clients; the limit
/// lets backends prefix keys with a one-byte length, as for [`UserId`]).
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Most copies one [`MessageLocator`] may list: a 1:1 message has two, a group message
/// one; the room above is for small groups stored by write fan-out.
pub const MAX_LOCATOR_COPIES: usize = 1024;

/// Longest accepted text field of a [`GroupRecord`] or [`GroupMemberRecord`], in bytes:
/// records are read in pages (a member list), so they must stay small.
pub const MAX_GROUP_TEXT_LEN: usize = 8192;

/// One write. Add variants here as features need them (friendship records, group
/// members, …); every backend then fails to compile until it handles the new op, which
/// is the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or overwrite a user's profile (keyed by app and `user_id`).
    PutUser(AppId, UserRecord),
    /// Put `entry` into the (app, owner, kind) log at `entry.seq`, overwriting any entry
    /// already at that seq: appends are idempotent, and a recall rewrites an entry in
    /// place with the same op.
    AppendLog {
        /// Tenant.
        app: AppId,
        /// Whose log: a user's, or a group's timeline.
        owner: Owner,
        /// Which log.
        kind: SyncKind,
        /// The entry; its seq is the position.
        entry: LogEntry,
    },
    /// Remove the entry at `seq` of the (app, owner, kind) log, if there is one: log
    /// compaction drops entries a later entry supersedes. Seq bounds do not move and
    /// reads skip the gap like any other (seqs skip anyway). Later ops of the batch on
    /// the same entry win, as for every key.
    DeleteLogEntry {
        /// Tenant.
        app: AppId,
        /// Whose log.
        owner: Owner,
        /// Which log.
        kind: SyncKind,
        /// The entry's position.
        seq: Seq,
    },
    /// Persist a reserved upper bound of the (app, owner, kind) sequence. The stored
    /// bound becomes `max(stored, bound)`: it never goes down, whatever the order of
    /// writes.
    SetSeqBound {
        /// Tenant.
        app: AppId,
        /// Whose sequence.
        owner: Owner,
        /// Which sequence.
        kind: SyncKind,
        /// The new reserved upper bound.
        bound: Seq,
    },
    /// Insert or overwrite a dedup-window record.
    PutDedup(DedupRecord),
    /// Insert or overwrite an app.
    PutApp(AppRecord),
    /// Device `device_id` of `user` received `owner`'s `kind` log up to `seq` (its own
    /// logs, or the timeline of a group it reads). The stored value becomes
    /// `max(stored, seq)`, like [`WriteOp::SetSeqBound`].
    PutDeviceAck {
        /// Tenant.
        app: AppId,
        /// Whose device.
        user: UserId,
        /// The device, 1..=[`MAX_DEVICE_ID_LEN`] bytes.
        device_id: String,
        /// Whose log was received: `Owner::User(user)` for the user's own.
        owner: Owner,
        /// Which log.
        kind: SyncKind,
        /// Received up to here.
        seq: Seq,
    },
    /// Insert or overwrite the locator stored under logic's `message_key`. Its copies
    /// must number 1..=[`MAX_LOCATOR_COPIES`], each owner once.
    PutMessageIndex {
        /// Tenant.
        app: AppId,
        /// Logic's key of the message (opaque here).
        message_key: u64,
        /// Where its copies live.
        loc: MessageLocator,
    },
    /// `user`'s view of `conversation` contains the message at seq `seq` of the
    /// conversation's timeline as `user` reads it (their inbox for a 1:1 conversation).
    /// Idempotent: adding a seq twice keeps one.
    AppendConvIndex {
        /// Tenant.
        app: AppId,
        /// Whose view of the conversation.
        user: UserId,
        /// Which conversation.
        conversation: Conversation,
        /// A seq of the conversation's timeline.
        seq: Seq,
    },
    /// `user` read `conversation` up to `seq`. The stored mark becomes
    /// `max(stored, seq)`.
    PutReadMark {
        /// Tenant.
        app: AppId,
        /// Who read.
        user: UserId,
        /// Which conversation.
        conversation: Conversation,
        /// Read up to here.
        seq: Seq,
    },
    /// Insert or overwrite `user`'s record of `record.conversation` (last write wins;
    /// logic orders changes through the user's conversation sync log).
    PutConversation {
        /// Tenant.
        app: AppId,
        /// Whose record.
        user: UserId,
        /// The whole record.
        record: ConversationRecord,
    },
    /// Remove `user`'s record of `conversation` (absent already: nothing happens). The
    /// conversation index and read mark are kept: deleting history is separate.
    DeleteConversation {
        /// Tenant.
        app: AppId,
        /// Whose record.
        user: UserId,
        /// Which conversation.
        conversation: Conversation,
    },
    /// Insert or overwrite a group's record (keyed by app and `group_id`).
    PutGroup(AppId, GroupRecord),
    /// Insert or overwrite one member of `group` (keyed by app, group, member id).
    PutGroupMember {
        /// Tenant.
        app: AppId,
        /// Which group.
        group: GroupId,
        /// The member's whole record.
        member: GroupMemberRecord,
    },
    /// Remove one member of `group` (absent already: nothing happens).
    DeleteGroupMember {
        /// Tenant.
        app: AppId,
        /// Which group.
        group: GroupId,
        /// Who.
        member: UserId,
    },
}

impl WriteOp {
    /// Whose data this op writes: the (app, user or group id) whose slot holds it, so
    /// that only that slot's node writes it. `None` for ops keyed by something else —
    /// app records, dedup records and message locators, which always travel in a batch
    /// with their owners' ops. (Users and groups hash into one slot space by id.)
    pub fn owner_id(&self) -> Option<(AppId, &str)> {
        match self {
            WriteOp::PutUser(app, rec) => Some((*app, rec.user_id.as_str())),
            WriteOp::AppendLog { app, owner, .. }
            | WriteOp::DeleteLogEntry { app, owner, .. }
            | WriteOp::SetSeqBound { app, owner, .. } => Some((*app, owner.id())),
            WriteOp::PutDeviceAck { app, user, .. }
            | WriteOp::AppendConvIndex { app, user, .. }
            | WriteOp::PutReadMark { app, user, .. }
            | WriteOp::PutConversation { app, user, .. }
            | WriteOp::DeleteConversation { app, user, .. } => Some((*app, user.as_str())),
            WriteOp::PutGroup(app, rec) => Some((*app, rec.group_id.as_str())),
            WriteOp::PutGroupMember { app, group, .. } | WriteOp::DeleteGroupMember { app, group, .. } => {
                Some((*app, group.as_str()))
            }
            WriteOp::PutDedup(_) | WriteOp::PutApp(_) | WriteOp::PutMessageIndex { .. } => None,
        }
    }

    /// Checks the limits every backend enforces, so backends refuse the same requests.
    pub fn validate(&self) -> Result<(), StoreError> {
        match self {
            WriteOp::PutUser(..)
            | WriteOp::SetSeqBound { .. }
            | WriteOp::PutApp(_)
            | WriteOp::AppendConvIndex { .. }
            | WriteOp::PutReadMark { .. }
            | WriteOp::DeleteConversation { .. }
            | WriteOp::DeleteGroupMember { .. }
            | WriteOp::DeleteLogEntry { .. } => Ok(()),
            WriteOp::PutGroup(_, g) => {
                check_group_text(&[&g.group_name, &g.introduction, &g.notification, &g.photo, &g.extra])
            }
            WriteOp::PutGroupMember { member, .. } => {
                check_group_text(&[&member.alias, &member.join_type, &member.extra])
            }
            WriteOp::PutMessageIndex { loc, .. } => check_locator(loc),
            WriteOp::PutConversation { record, .. } => check_conversation_record(record),
            WriteOp::AppendLog { entry, .. } => check_value_len("log payload", entry.payload.len()),
            WriteOp::PutDedup(rec) => {
                check_dedup_key(&rec.key)?;
                check_value_len("dedup value", rec.value.len())
            }
            WriteOp::PutDeviceAck { device_id, .. } => check_device_id(device_id),
        }
    }
}

/// Checks a locator's copies: 1..=[`MAX_LOCATOR_COPIES`], no owner twice.
fn check_locator(loc: &MessageLocator) -> Result<(), StoreError> {
    let n = loc.copies.len();
    if n == 0 || n > MAX_LOCATOR_COPIES {
        return Err(StoreError::InvalidArgument(format!(
            "message locator with {n} copies (1..={MAX_LOCATOR_COPIES} allowed)"
        )));
    }
    // Small n (1 or 2 on every hot path): a quadratic scan beats a hash set.
    for (i, c) in loc.copies.iter().enumerate() {
        if loc.copies[..i].iter().any(|d| d.owner == c.owner) {
            return Err(StoreError::InvalidArgument(format!("message locator lists {} twice", c.owner)));
        }
    }
    Ok(())
}

/// Checks a conversation record's text fields against
/// [`ConversationRecord::MAX_TEXT_LEN`].
fn check_conversation_record(rec: &ConversationRecord) -> Result<(), StoreError> {
    let max = ConversationRecord::MAX_TEXT_LEN;
    let preview = rec.last.as_ref().map_or(0, |l| l.preview.len());
    if rec.extra.len() > max || preview > max {
        return Err(StoreError::InvalidArgument(format!(
            "conversation record text of {} bytes, more than {max}",
            rec.extra.len().max(preview)
        )));
    }
    Ok(())
}

/// Checks group text fields against [`MAX_GROUP_TEXT_LEN`].
fn check_group_text(fields: &[&str]) -> Result<(), StoreError> {
    match fields.iter().map(|f| f.len()).max() {
        Some(n) if n > MAX_GROUP_TEXT_LEN => {
            Err(StoreError::InvalidArgument(format!("group text field of {n} bytes, more than {MAX_GROUP_TEXT_LEN}")))
        }
        _ => Ok(()),
    }
}

/// Checks a device id against the shared limits.
pub fn check_device_id(device_id: &str) -> Result<(), StoreError> {
    if device_id.is_empty() {
        return Err(StoreError::InvalidArgument("empty device id".into()));
    }
    if device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "device id is {} bytes, more than {MAX_DEVICE_ID_LEN}",
            device_id.len()
        )));
    }
    Ok(())
}

/// Checks a dedup key against the shared limits.
pub fn check_dedup_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty dedup key".into()));
    }
    if key.len() > MAX_DEDUP_KEY_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "dedup key is {} bytes, more than {MAX_DEDUP_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value_len(what: &str, len: usize) -> Result<(), StoreError> {
    if len > MAX_VALUE_LEN {
        return Err(StoreError::InvalidArgument(format!("{what} is {len} bytes, more than {MAX_VALUE_LEN}")));
    }
    Ok(())
}

/// An ordered list of [`WriteOp`]s applied together by [`Store::write`]. Later ops win
/// over earlier ones on the same key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `n` ops.
    pub fn with_capacity(n: usize) -> Self {
        Self { ops: Vec::with_capacity(n) }
    }

    /// Adds any op.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Adds [`WriteOp::PutUser`].
    pub fn put_user(&mut self, app: AppId, user: UserRecord) -> &mut Self {
        self.push(WriteOp::PutUser(app, user))
    }

    /// Adds [`WriteOp::AppendLog`].
    pub fn append_log(&mut self, app: AppId, owner: impl Into<Owner>, kind: SyncKind, entry: LogEntry) -> &mut Self {
        self.push(WriteOp::AppendLog { app, owner: owner.into(), kind, entry })
    }

    /// Rewrites the entry at `entry.seq` (e.g. marks a message recalled). The same op as
    /// [`WriteBatch::append_log`]; the separate name says what the caller means.
    pub fn replace_log_entry(
        &mut self,
        app: AppId,
        owner: impl Into<Owner>,
        kind: SyncKind,
        entry: LogEntry,
    ) -> &mut Self {
        self.append_log(app, owner, kind, entry)
    }

    /// Adds [`WriteOp::DeleteLogEntry`].
    pub fn delete_log_entry(&mut self, app: AppId, owner: impl Into<Owner>, kind: SyncKind, seq: Seq) -> &mut Self {
        self.push(WriteOp::DeleteLogEntry { app, owner: owner.into(), kind, seq })
    }

    /// Adds [`WriteOp::SetSeqBound`].
    pub fn set_seq_bound(&mut self, app: AppId, owner: impl Into<Owner>, kind: SyncKind, bound: Seq) -> &mut Self {
        self.push(WriteOp::SetSeqBound { app, owner: owner.into(), kind, bound })
    }

    /// Adds [`WriteOp::PutDedup`].
    pub fn put_dedup(&mut self, rec: DedupRecord) -> &mut Self {
        self.push(WriteOp::PutDedup(rec))
    }

    /// Adds [`WriteOp::PutApp`].
    pub fn put_app(&mut self, rec: AppRecord) -> &mut Self {
        self.push(WriteOp::PutApp(rec))
    }

    /// Adds [`WriteOp::PutDeviceAck`] for one of the user's own logs.
    pub fn put_device_ack(
        &mut self,
        app: AppId,
        user: UserId,
        device_id: String,
        kind: SyncKind,
        seq: Seq,
    ) -> &mut Self {
        let owner = Owner::User(user.clone());
        self.push(WriteOp::PutDeviceAck { app, user, device_id, owner, kind, seq })
    }

    /// Adds [`WriteOp::PutDeviceAck`] for another owner's log (a group's timeline).
    pub fn put_device_ack_of(
        &mut self,
        app: AppId,
        user: UserId,
        device_id: String,
        owner: Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> &mut Self {
        self.push(WriteOp::PutDeviceAck { app, user, device_id, owner, kind, seq })
    }

    /// Adds [`WriteOp::PutMessageIndex`].
    pub fn put_message_index(&mut self, app: AppId, message_key: u64, loc: MessageLocator) -> &mut Self {
        self.push(WriteOp::PutMessageIndex { app, message_key, loc })
    }

    /// Adds [`WriteOp::AppendConvIndex`].
    pub fn append_conv_index(&mut self, app: AppId, user: UserId, conversation: Conversation, seq: Seq) -> &mut Self {
        self.push(WriteOp::AppendConvIndex { app, user, conversation, seq })
    }

    /// Adds [`WriteOp::PutReadMark`].
    pub fn put_read_mark(&mut self, app: AppId, user: UserId, conversation: Conversation, seq: Seq) -> &mut Self {
        self.push(WriteOp::PutReadMark { app, user, conversation, seq })
    }

    /// Adds [`WriteOp::PutConversation`].
    pub fn put_conversation(&mut self, app: AppId, user: UserId, record: ConversationRecord) -> &mut Self {
        self.push(WriteOp::PutConversation { app, user, record })
    }

    /// Adds [`WriteOp::DeleteConversation`].
    pub fn delete_conversation(&mut self, app: AppId, user: UserId, conversation: Conversation) -> &mut Self {
        self.push(WriteOp::DeleteConversation { app, user, conversation })
    }

    /// Adds [`WriteOp::PutGroup`].
    pub fn put_group(&mut self, app: AppId, group: GroupRecord) -> &mut Self {
        self.push(WriteOp::PutGroup(app, group))
    }

    /// Adds [`WriteOp::PutGroupMember`].
    pub fn put_group_member(&mut self, app: AppId, group: GroupId, member: GroupMemberRecord) -> &mut Self {
        self.push(WriteOp::PutGroupMember { app, group, member })
    }

    /// Adds [`WriteOp::DeleteGroupMember`].
    pub fn delete_group_member(&mut self, app: AppId, group: GroupId, member: UserId) -> &mut Self {
        self.push(WriteOp::DeleteGroupMember { app, group, member })
    }

    /// Appends every op of `other`, after this batch's ops.
    pub fn extend(&mut self, other: WriteBatch) -> &mut Self {
        self.ops.extend(other.ops);
        self
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Takes the ops out, in order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Validates every op (see [`WriteOp::validate`]).
    pub fn validate(&self) -> Result<(), StoreError> {
        self.ops.iter().try_for_each(WriteOp::validate)
    }
}

impl From<Vec<WriteOp>> for WriteBatch {
    fn from(ops: Vec<WriteOp>) -> Self {
        Self { ops }
    }
}

impl FromIterator<WriteOp> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = WriteOp>>(iter: I) -> Self {
        Self { ops: iter.into_iter().collect() }
    }
}

impl IntoIterator for WriteBatch {
    type Item = WriteOp;
    type IntoIter = std::vec::IntoIter<WriteOp>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

/// One send's writes, applied only if no live dedup record with `guard.key` exists
/// (the guard record itself is written with them). Lets a caller check its dedup window
/// and write in one trip to the store instead of a read, then a write.
#[derive(Debug, Clone)]
pub struct GuardedBatch {
    pub guard: DedupRecord,
    pub batch: WriteBatch,
}

/// What became of one [`GuardedBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOutcome {
    /// Its writes and its guard record are durable.
    Applied,
    /// A live record with the guard's key already existed (stored earlier, or by an
    /// earlier batch of the same call): nothing of this batch was written; this is the
    /// stored record's value.
    Duplicate(Bytes),
}

/// One point read of [`Store::read_many`]: the same reads as the single-call methods
/// of the same names, so many of them go to the store in one trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// [`Store::get_users`].
    Users { app: AppId, ids: Vec<UserId> },
    /// [`Store::seq_bounds`].
    SeqBounds { app: AppId, owner: Owner },
    /// [`Store::get_device_acks`].
    DeviceAcks { app: AppId, user: UserId, device_id: String },
    /// [`Store::read_log`].
    Log { app: AppId, owner: Owner, kind: SyncKind, after: Seq, limit: usize },
}

/// The answer to one [`Read`], of the matching variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    Users(Vec<Option<UserRecord>>),
    SeqBounds(Vec<(SyncKind, Seq)>),
    DeviceAcks(Vec<DeviceAck>),
    Log(Vec<LogEntry>),
}

/// A storage backend. Object safe: logic holds an `Arc<dyn Store>`.
///
/// Reads see every write whose [`Store::write`] has returned. Nothing here is
/// transactional across calls; the single-writer-per-user rule in logic makes that
/// unnecessary.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies all ops of `batch` together (the embedded backend: one atomic batch) and
    /// returns only once they are durable per the configured policy. An invalid op
    /// fails the whole batch with [`StoreError::InvalidArgument`] and writes nothing.
    /// If the returned future is dropped before it completes, the batch may or may not
    /// be applied; callers that need to know must re-read (appends are idempotent).
    async fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Applies each of `writes` whose guard key has no live record at `now_ms` (see
    /// [`GuardedBatch`]), durably, and answers per batch in input order. Batches are
    /// checked in order, so of two with the same key only the first applies. The
    /// embedded backend checks and writes in its writer thread (one trip, one group
    /// commit); this default reads each guard, then writes what passed in one batch,
    /// which is exact as long as one writer owns each key (the slot owner does).
    async fn write_guarded(&self, writes: Vec<GuardedBatch>, now_ms: u64) -> Result<Vec<GuardOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut merged = WriteBatch::new();
        let mut seen: std::collections::HashMap<String, Bytes> = std::collections::HashMap::new();
        for w in writes {
            if let Some(v) = seen.get(&w.guard.key) {
                outcomes.push(GuardOutcome::Duplicate(v.clone()));
                continue;
            }
            if let Some(rec) = self.get_dedup(&w.guard.key, now_ms).await? {
                outcomes.push(GuardOutcome::Duplicate(rec.value));
                continue;
            }
            seen.insert(w.guard.key.clone(), w.guard.value.clone());
            merged.extend(w.batch);
            merged.put_dedup(w.guard);
            outcomes.push(GuardOutcome::Applied);
        }
        self.write(merged).await?;
        Ok(outcomes)
    }

    /// Many point reads in one trip, answered in input order, each on its own (one
    /// read's error, e.g. an invalid device id, fails only that read). Logins use it:
    /// a batch of logins costs one trip, not three per login. The embedded backend runs
    /// them all in one blocking-pool job; this default issues them concurrently.
    async fn read_many(&self, reads: Vec<Read>) -> Result<Vec<Result<ReadAnswer, StoreError>>, StoreError> {
        let answers = reads.iter().map(|r| async move {
            match r {
                Read::Users { app, ids } => self.get_users(*app, ids).await.map(ReadAnswer::Users),
                Read::SeqBounds { app, owner } => self.seq_bounds(*app, owner).await.map(ReadAnswer::SeqBounds),
                Read::DeviceAcks { app, user, device_id } => {
                    self.get_device_acks(*app, user, device_id).await.map(ReadAnswer::DeviceAcks)
                }
                Read::Log { app, owner, kind, after, limit } => {
                    self.read_log(*app, owner, *kind, *after, *limit).await.map(ReadAnswer::Log)
                }
            }
        });
        Ok(futures_util::future::join_all(answers).await)
    }

    /// Profiles of `ids`, in the same order (`None` for unknown users; deleted users
    /// are returned with `deleted` set).
    async fn get_users(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Option<UserRecord>>, StoreError>;

    /// Up to `limit` entries of the (owner, kind) log with `seq > after`, ascending
    /// (sync / catch-up paging).
    async fn read_log(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Up to `limit` entries with `seq < before`, descending (history paging; pass
    /// [`Seq::MAX`] for the newest page).
    async fn read_log_back(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// The entry at exactly `seq`, if any.
    async fn get_log_entry(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> Result<Option<LogEntry>, StoreError>;

    /// The persisted reserved upper bounds (seqsvr `max_seq`) of the owner's sequences,
    /// in kind order. Kinds never set are absent.
    async fn seq_bounds(&self, app: AppId, owner: &Owner) -> Result<Vec<(SyncKind, Seq)>, StoreError>;

    /// The dedup record under `key`, or `None` if there is none or it has expired at
    /// `now_ms` (milliseconds since the Unix epoch).
    async fn get_dedup(&self, key: &str, now_ms: u64) -> Result<Option<DedupRecord>, StoreError>;

    /// The app, if it was ever put.
    async fn get_app(&self, app: AppId) -> Result<Option<AppRecord>, StoreError>;

    /// What `device_id` of `user` acknowledged (see [`WriteOp::PutDeviceAck`]): acks of
    /// the user's own logs first, in kind order; then those of other owners' logs, in
    /// no particular order. An empty or over-long device id is refused with
    /// [`StoreError::InvalidArgument`], as it is on write.
    async fn get_device_acks(&self, app: AppId, user: &UserId, device_id: &str) -> Result<Vec<DeviceAck>, StoreError>;

    /// The locator stored under `message_key`, if any.
    async fn get_message_index(&self, app: AppId, message_key: u64) -> Result<Option<MessageLocator>, StoreError>;

    /// Up to `limit` seqs of `user`'s view of `conversation` (see
    /// [`WriteOp::AppendConvIndex`]) that are `< before`, descending (history paging;
    /// pass [`Seq::MAX`] for the newest page).
    async fn read_conv_back(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StoreError>;

    /// Every read mark of `user` (see [`WriteOp::PutReadMark`]) as
    /// `(conversation, seq)`, one per conversation, in no particular order.
    async fn get_read_marks(&self, app: AppId, user: &UserId) -> Result<Vec<(Conversation, Seq)>, StoreError>;

    /// `user`'s record of `conversation`, if there is one.
    async fn get_conversation(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
    ) -> Result<Option<ConversationRecord>, StoreError>;

    /// Up to `limit` of `user`'s conversation records that come after `after` (`None`:
    /// from the first) in the backend's order of conversations — stable, but not
    /// specified, so page with the last record's conversation as the next `after`.
    /// Logic sorts a list (pinned, newest) itself.
    async fn list_conversations(
        &self,
        app: AppId,
        user: &UserId,
        after: Option<&Conversation>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// The group's record, if it was ever put (destroyed groups included).
    async fn get_group(&self, app: AppId, group: &GroupId) -> Result<Option<GroupRecord>, StoreError>;

    /// Up to `limit` of the app's groups that come after `after` (`None`: from the
    /// first) in the backend's order of group ids — stable, but not specified, so page
    /// with the last record's id as the next `after`.
    async fn list_groups(
        &self,
        app: AppId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<GroupRecord>, StoreError>;

    /// The member records of `members` in `group`, in the same order (`None` for
    /// non-members).
    async fn get_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        members: &[UserId],
    ) -> Result<Vec<Option<GroupMemberRecord>>, StoreError>;

    /// Up to `limit` members of `group` after member `after` (`None`: from the first),
    /// in the backend's order of member ids (stable; page with the last member's id).
    async fn list_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<GroupMemberRecord>, StoreError>;

    /// Makes every acknowledged write durable on disk regardless of the durability
    /// policy (called at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}
