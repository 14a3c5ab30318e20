//! The embedded engine (crate `tern-storage-embedded`): a [`Store`] on the fjall LSM
//! engine, for one-machine deployments (the default).
//!
//! Writes go to one dedicated writer thread that group-commits everything queued into
//! one atomic fjall batch (see `writer.rs`); reads run on tokio's blocking pool. fjall
//! is a blocking library, so no fjall call may ever run on an async executor thread.
//! This module is the only place in Tern that knows fjall exists; nothing fjall-typed
//! may leak out of it. The key layout is in `codec.rs`.
//!
//! Expired dedup records are ignored by reads and dropped by a compaction filter when
//! compaction reaches them; there is no periodic sweep.
//!
//! Recovery is bounded: a background thread (`flusher.rs`) writes memtables to table
//! files by size and age and keeps the journal short, and [`Store::flush`] (called at
//! shutdown) writes all of them and empties the journal, so a clean restart reads and
//! replays nothing and a crash replays at most about
//! [`FlushPolicy::max_unflushed_bytes`]. [`EmbeddedStore::recovery`] says what the
//! open had to read and replay.

mod codec;
mod flusher;
mod slow;
mod ttl;
mod writer;

pub use flusher::{FlushPolicy, DEFAULT_BACKGROUND_NICE, DEFAULT_MAX_UNFLUSHED_BYTES, DEFAULT_MAX_UNFLUSHED_SECS};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tern_storage::{
    check_dedup_key, check_device_id, AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck,
    GroupId, GroupMemberRecord, GroupRecord, GuardOutcome, GuardedBatch, LastMessage, LogEntry, MessageCopy,
    MessageLocator, Owner, Read, ReadAnswer, Seq, Store, StoreError, SyncKind, UserId, UserRecord, WriteBatch, WriteOp,
};
use tokio::sync::oneshot;
use writer::Command;

/// When a write counts as durable, i.e. when [`Store::write`] may return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The batch is in the journal in OS buffers: survives a crash of the process, not
    /// of the machine. The default, because it costs no fsync per batch and a
    /// one-machine chat server's usual failure is a process restart.
    #[default]
    Process,
    /// The journal is fsync'd before the write returns: survives power loss. Group
    /// commit shares one fsync among all batches queued at that moment.
    Fsync,
}

/// How to open an [`EmbeddedStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Directory of the database; created if missing. One process at a time.
    pub path: PathBuf,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// When memtables are written to table files in the background (bounds what a
    /// restart replays).
    pub flush: FlushPolicy,
    /// Nice value of the threads that write memtables and compact table files in the
    /// background (fjall's workers and the flusher), 0..=19; 0 leaves them as they are.
    /// See [`DEFAULT_BACKGROUND_NICE`].
    pub background_nice: i32,
}

impl EmbeddedConfig {
    /// A config for `path` with the default durability and flush policy.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            flush: FlushPolicy::default(),
            background_nice: DEFAULT_BACKGROUND_NICE,
        }
    }
}

/// What opening the store had to recover, for the start-up banner and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// How long opening the store took.
    pub took: Duration,
    /// Journal files found at open (0 for a new store).
    pub journal_files: usize,
    /// Journal bytes read at open.
    pub journal_bytes: u64,
    /// Of those, bytes of data that were not yet in table files and were replayed into
    /// memory (fjall memtable size). 0 after a clean shutdown; a crash leaves at most
    /// about [`FlushPolicy::max_unflushed_bytes`] (plus what arrived in the last tick).
    pub replayed_bytes: u64,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.journal_files == 0 {
            return write!(f, "new store, created in {} ms", self.took.as_millis());
        }
        write!(
            f,
            "recovered in {} ms: read {} of journal in {} file{}, replayed {} into memory",
            self.took.as_millis(),
            human_bytes(self.journal_bytes),
            self.journal_files,
            if self.journal_files == 1 { "" } else { "s" },
            human_bytes(self.replayed_bytes),
        )
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// The journal files of the database at `path`: (count, total bytes).
fn journal_files(path: &Path) -> (usize, u64) {
    let Ok(dir) = std::fs::read_dir(path) else { return (0, 0) };
    dir.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.metadata().map_or(0, |m| m.len())))
}

const KS_USERS: &str = "users";
const KS_LOG: &str = "log";
const KS_BOUNDS: &str = "seq_bounds";
const KS_DEDUP: &str = "dedup";
const KS_APPS: &str = "apps";
const KS_DEVICE_ACKS: &str = "device_acks";
const KS_MSG_INDEX: &str = "msg_index";
const KS_CONV_INDEX: &str = "conv_index";
const KS_READ_MARKS: &str = "read_marks";
const KS_CONVERSATIONS: &str = "conversations";
const KS_GROUPS: &str = "groups";
const KS_GROUP_MEMBERS: &str = "group_members";
const KS_META: &str = "meta";

/// Key in `meta` holding the on-disk layout number.
const FORMAT_KEY: &[u8] = b"format";
/// The on-disk layout this code reads and writes, written at creation. Bump it (and
/// teach [`Engine::check_format`] the upgrade) when the layout in [`codec`] changes so
/// that an older build would misread it. Adding a keyspace alone is compatible: an
/// older directory simply gets the new keyspace, empty, on open.
///
/// Format 2 (owners): group owners and group conversations in keys (a tag bit in the
/// id's length byte), device acks of other owners' logs, v2 (owner-based) message
/// locators, the `conversations` keyspace (and, added compatibly later, `groups` and
/// `group_members`: new keyspaces only). Every format-1 key and value still means the
/// same, so a format-1 directory is upgraded in place by rewriting the marker alone;
/// format-1 builds refuse a format-2 directory (they would misread group keys).
const FORMAT: u8 = 2;
/// The oldest format this code upgrades in place.
const OLDEST_UPGRADABLE_FORMAT: u8 = 1;

/// The fjall handles, shared by the writer thread and the read tasks.
struct Engine {
    db: Database,
    users: Keyspace,
    log: Keyspace,
    bounds: Keyspace,
    dedup: Keyspace,
    apps: Keyspace,
    device_acks: Keyspace,
    msg_index: Keyspace,
    conv_index: Keyspace,
    read_marks: Keyspace,
    conversations: Keyspace,
    groups: Keyspace,
    group_members: Keyspace,
    /// Every keyspace above plus `meta`: what the flusher and a clean close flush.
    all: Vec<Keyspace>,
}

/// Maps an engine error to the backend-neutral one.
fn io_err(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Io(e) => StoreError::Io(e.to_string()),
        other => StoreError::Backend(other.to_string()),
    }
}

impl Engine {
    #[cfg(test)]
    fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_reporting(path).map(|(engine, _)| engine)
    }

    /// Opens the database and reports what recovery replayed.
    fn open_reporting(path: &Path) -> Result<(Self, RecoveryReport), StoreError> {
        let started = Instant::now();
        // A new database's journal is created pre-allocated: only count journals that
        // were there before. After the open, fjall has cut each to the data it read.
        let existed = journal_files(path).0 > 0;
        let db = Database::builder(path)
            .with_compaction_filter_factories(Arc::new(|name: &str| {
                (name == KS_DEDUP).then(|| Arc::new(ttl::DedupExpiryFactory) as _)
            }))
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => {
                    StoreError::Backend(format!("database at {} is in use by another process", path.display()))
                }
                e => io_err(e),
            })?;
        let (journal_files, journal_bytes) = if existed { journal_files(path) } else { (0, 0) };
        // Before anything is written: what recovery put back into memtables.
        let replayed_bytes = db.write_buffer_size();
        let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default).map_err(io_err);
        let meta = ks(KS_META)?;
        let mut engine = Engine {
            users: ks(KS_USERS)?,
            log: ks(KS_LOG)?,
            bounds: ks(KS_BOUNDS)?,
            dedup: ks(KS_DEDUP)?,
            apps: ks(KS_APPS)?,
            device_acks: ks(KS_DEVICE_ACKS)?,
            msg_index: ks(KS_MSG_INDEX)?,
            conv_index: ks(KS_CONV_INDEX)?,
            read_marks: ks(KS_READ_MARKS)?,
            conversations: ks(KS_CONVERSATIONS)?,
            groups: ks(KS_GROUPS)?,
            group_members: ks(KS_GROUP_MEMBERS)?,
            db: db.clone(),
            all: Vec::new(),
        };
        engine.all = vec![
            engine.users.clone(),
            engine.log.clone(),
            engine.bounds.clone(),
            engine.dedup.clone(),
            engine.apps.clone(),
            engine.device_acks.clone(),
            engine.msg_index.clone(),
            engine.conv_index.clone(),
            engine.read_marks.clone(),
            engine.conversations.clone(),
            engine.groups.clone(),
            engine.group_members.clone(),
            meta.clone(),
        ];
        engine.check_format(path, &meta)?;
        let report = RecoveryReport { took: started.elapsed(), journal_files, journal_bytes, replayed_bytes };
        Ok((engine, report))
    }

    /// Writes the format marker into a new directory, upgrades an older one in place,
    /// or refuses one this code cannot read, saying what to do.
    fn check_format(&self, path: &Path, meta: &Keyspace) -> Result<(), StoreError> {
        let stored = match meta.get(FORMAT_KEY).map_err(io_err)? {
            Some(v) if v.len() == 1 => Some(v[0]),
            Some(v) => {
                return Err(StoreError::Schema(format!(
                    "database at {} has an unreadable format marker ({} bytes): it was not written by tern, or is \
                     damaged; restore it from a backup or start with an empty directory",
                    path.display(),
                    v.len()
                )))
            }
            // Every build since the first wrote a marker at creation, so no marker means
            // a new directory — unless it already holds data, which only a build that
            // crashed between creating keyspaces and writing the marker leaves: that data
            // is format 1 (the first layout).
            None if self.users.is_empty().map_err(io_err)? && self.log.is_empty().map_err(io_err)? => None,
            None => Some(OLDEST_UPGRADABLE_FORMAT),
        };
        match stored {
            Some(FORMAT) => return Ok(()),
            None => {}
            Some(old) if (OLDEST_UPGRADABLE_FORMAT..FORMAT).contains(&old) => {
                // 1 → 2 changes no stored byte (see FORMAT): the marker is the upgrade.
                tracing::info!(path = %path.display(), from = old, to = FORMAT, "embedded store: upgrading the on-disk format in place");
            }
            Some(newer) if newer > FORMAT => {
                return Err(StoreError::Schema(format!(
                    "database at {} has on-disk format {newer}, newer than this build's {FORMAT}: it was written by a \
                     newer tern; run that version (or newer) on it",
                    path.display()
                )))
            }
            Some(old) => {
                return Err(StoreError::Schema(format!(
                    "database at {} has on-disk format {old}, which this build (format {FORMAT}) cannot upgrade: \
                     open it once with a tern that reads format {old} and {OLDEST_UPGRADABLE_FORMAT}, or start with \
                     an empty directory",
                    path.display()
                )))
            }
        }
        meta.insert(FORMAT_KEY, [FORMAT]).map_err(io_err)?;
        self.db.persist(PersistMode::SyncAll).map_err(io_err)
    }

    /// One read of [`Store::read_many`].
    fn read_one(&self, r: &Read) -> Result<ReadAnswer, StoreError> {
        match r {
            Read::Users { app, ids } => self.get_users(*app, ids).map(ReadAnswer::Users),
            Read::SeqBounds { app, owner } => self.seq_bounds(*app, owner).map(ReadAnswer::SeqBounds),
            Read::DeviceAcks { app, user, device_id } => {
                self.get_device_acks(*app, user, device_id).map(ReadAnswer::DeviceAcks)
            }
            Read::Log { app, owner, kind, after, limit } => {
                if *limit == 0 {
                    return Ok(ReadAnswer::Log(Vec::new()));
                }
                self.read_log(*app, owner, *kind, *after, *limit).map(ReadAnswer::Log)
            }
        }
    }

    fn get_users(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        ids.iter()
            .map(|id| {
                let Some(v) = self.db.snapshot().get(&self.users, codec::user_key(app, id)).map_err(io_err)? else {
                    return Ok(None);
                };
                let rec = codec::decode_user(&v)?;
                if rec.user_id != *id {
                    return Err(StoreError::corrupt(format!(
                        "user record under {app}/{id} names user {}",
                        rec.user_id
                    )));
                }
                Ok(Some(rec))
            })
            .collect()
    }

    fn read_log(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let Some(first) = after.checked_next() else {
            return Ok(Vec::new());
        };
        let prefix = codec::log_prefix(app, owner, kind);
        let range = codec::seq_key(&prefix, first)..=codec::seq_key(&prefix, Seq::MAX);
        self.db.snapshot().range(&self.log, range).take(limit).map(|guard| decode_entry(&prefix, guard)).collect()
    }

    fn read_log_back(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let prefix = codec::log_prefix(app, owner, kind);
        let range = codec::seq_key(&prefix, Seq::ZERO)..codec::seq_key(&prefix, before);
        self.db.snapshot().range(&self.log, range).rev().take(limit).map(|guard| decode_entry(&prefix, guard)).collect()
    }

    fn get_log_entry(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> Result<Option<LogEntry>, StoreError> {
        let Some(v) = self.db.snapshot().get(&self.log, codec::log_key(app, owner, kind, seq)).map_err(io_err)? else {
            return Ok(None);
        };
        let (time_ms, payload) = codec::decode_log_value(&v)?;
        Ok(Some(LogEntry { seq, time_ms, payload: Bytes::copy_from_slice(payload) }))
    }

    fn seq_bounds(&self, app: AppId, owner: &Owner) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        let prefix = codec::owner_prefix(app, owner);
        let mut out = Vec::new();
        for guard in self.db.snapshot().prefix(&self.bounds, &prefix) {
            let (key, value) = guard.into_inner().map_err(io_err)?;
            let kind = match key.strip_prefix(prefix.as_slice()) {
                Some(&[n]) => n,
                _ => return Err(StoreError::corrupt(format!("seq bound key of {} bytes", key.len()))),
            };
            let Some(kind) = SyncKind::from_u8(kind) else {
                // Written by a newer build that knows more kinds; this build cannot use
                // it, and failing the whole user over it would be worse.
                tracing::warn!(%app, %owner, kind, "embedded store: skipping seq bound of unknown kind");
                continue;
            };
            out.push((kind, codec::decode_seq_value("seq bound", &value)?));
        }
        Ok(out)
    }

    fn get_dedup(&self, key: &str, now_ms: u64) -> Result<Option<DedupRecord>, StoreError> {
        check_dedup_key(key)?;
        let Some(v) = self.db.snapshot().get(&self.dedup, key.as_bytes()).map_err(io_err)? else {
            return Ok(None);
        };
        let (expires_ms, value) = codec::decode_dedup_value(&v)?;
        if now_ms >= expires_ms {
            return Ok(None);
        }
        Ok(Some(DedupRecord { key: key.to_owned(), value: Bytes::copy_from_slice(value), expires_ms }))
    }

    fn get_app(&self, app: AppId) -> Result<Option<AppRecord>, StoreError> {
        let Some(v) = self.db.snapshot().get(&self.apps, codec::app_key(app)).map_err(io_err)? else {
            return Ok(None);
        };
        let rec = codec::decode_app(&v)?;
        if rec.app_id != app {
            return Err(StoreError::corrupt(format!("app record under {app} names app {}", rec.app_id)));
        }
        Ok(Some(rec))
    }

    fn get_device_acks(&self, app: AppId, user: &UserId, device_id: &str) -> Result<Vec<DeviceAck>, StoreError> {
        check_device_id(device_id)?;
        let prefix = codec::device_prefix(app, user, device_id);
        let mut out = Vec::new();
        // Key order puts the own acks (one kind byte, < 0xFF) before other owners'.
        for guard in self.db.snapshot().prefix(&self.device_acks, &prefix) {
            let (key, value) = guard.into_inner().map_err(io_err)?;
            let (owner, kind) = codec::log_of_device_ack_key(user, &prefix, &key)?;
            let Some(kind) = SyncKind::from_u8(kind) else {
                // As for seq bounds: a newer build's kind, useless here but harmless.
                tracing::warn!(%app, %user, device_id, kind, "embedded store: skipping device ack of unknown kind");
                continue;
            };
            out.push(DeviceAck { owner, kind, seq: codec::decode_seq_value("device ack", &value)? });
        }
        Ok(out)
    }

    fn get_message_index(&self, app: AppId, message_key: u64) -> Result<Option<MessageLocator>, StoreError> {
        let Some(v) =
            self.db.snapshot().get(&self.msg_index, codec::message_index_key(app, message_key)).map_err(io_err)?
        else {
            return Ok(None);
        };
        codec::decode_locator(&v).map(Some)
    }

    fn read_conv_back(
        &self,
        app: AppId,
        user: &UserId,
        conv: &Conversation,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StoreError> {
        let prefix = codec::conv_prefix(app, user, conv);
        let range = codec::seq_key(&prefix, Seq::ZERO)..codec::seq_key(&prefix, before);
        self.db
            .snapshot()
            .range(&self.conv_index, range)
            .rev()
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(io_err)?;
                codec::check_conv_value(&value)?;
                codec::seq_of_key("conv index", &prefix, &key)
            })
            .collect()
    }

    fn get_read_marks(&self, app: AppId, user: &UserId) -> Result<Vec<(Conversation, Seq)>, StoreError> {
        let prefix = codec::user_prefix(app, user);
        self.db
            .snapshot()
            .prefix(&self.read_marks, &prefix)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(io_err)?;
                let conv = codec::conv_of_key("read mark", &prefix, &key)?;
                Ok((conv, codec::decode_seq_value("read mark", &value)?))
            })
            .collect()
    }

    fn get_conversation(
        &self,
        app: AppId,
        user: &UserId,
        conv: &Conversation,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let Some(v) =
            self.db.snapshot().get(&self.conversations, codec::conversation_key(app, user, conv)).map_err(io_err)?
        else {
            return Ok(None);
        };
        codec::decode_conversation(conv.clone(), &v).map(Some)
    }

    fn list_conversations(
        &self,
        app: AppId,
        user: &UserId,
        after: Option<&Conversation>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let prefix = codec::user_prefix(app, user);
        // Key order: the records of one user are contiguous; "after" is exclusive.
        let start = match after {
            Some(c) => std::ops::Bound::Excluded(codec::conversation_key(app, user, c)),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut end = prefix.clone();
        // Just past every key with this prefix: its last byte is an ASCII id byte, so
        // adding one never carries.
        *end.last_mut().expect("prefix is never empty") += 1;
        self.db
            .snapshot()
            .range(&self.conversations, (start, std::ops::Bound::Excluded(end)))
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(io_err)?;
                let conv = codec::conv_of_key("conversation record", &prefix, &key)?;
                codec::decode_conversation(conv, &value)
            })
            .collect()
    }
}

impl Engine {
    fn get_group(&self, app: AppId, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        let Some(v) = self.db.snapshot().get(&self.groups, codec::group_key(app, group)).map_err(io_err)? else {
            return Ok(None);
        };
        let rec = codec::decode_group(&v)?;
        if rec.group_id != *group {
            return Err(StoreError::corrupt(format!("group record under {app}/{group} names group {}", rec.group_id)));
        }
        Ok(Some(rec))
    }

    fn list_groups(&self, app: AppId, after: Option<&GroupId>, limit: usize) -> Result<Vec<GroupRecord>, StoreError> {
        let prefix = app.0.to_be_bytes().to_vec();
        let start = match after {
            Some(g) => std::ops::Bound::Excluded(codec::group_key(app, g)),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let end = match app.0.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded(next.to_be_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        self.db
            .snapshot()
            .range(&self.groups, (start, end))
            .take(limit)
            .map(|guard| {
                let (_, value) = guard.into_inner().map_err(io_err)?;
                codec::decode_group(&value)
            })
            .collect()
    }

    fn get_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        members: &[UserId],
    ) -> Result<Vec<Option<GroupMemberRecord>>, StoreError> {
        members
            .iter()
            .map(|m| {
                let Some(v) = self
                    .db
                    .snapshot()
                    .get(&self.group_members, codec::group_member_key(app, group, m))
                    .map_err(io_err)?
                else {
                    return Ok(None);
                };
                let rec = codec::decode_group_member(&v)?;
                if rec.member_id != *m {
                    return Err(StoreError::corrupt(format!(
                        "member record under {app}/{group}/{m} names {}",
                        rec.member_id
                    )));
                }
                Ok(Some(rec))
            })
            .collect()
    }

    fn list_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<GroupMemberRecord>, StoreError> {
        let prefix = codec::group_key(app, group);
        let start = match after {
            Some(m) => std::ops::Bound::Excluded(codec::group_member_key(app, group, m)),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut end = prefix;
        // Just past every key with this prefix: its last byte is an ASCII id byte, so
        // adding one never carries.
        *end.last_mut().expect("prefix is never empty") += 1;
        self.db
            .snapshot()
            .range(&self.group_members, (start, std::ops::Bound::Excluded(end)))
            .take(limit)
            .map(|guard| {
                let (_, value) = guard.into_inner().map_err(io_err)?;
                codec::decode_group_member(&value)
            })
            .collect()
    }
}

fn decode_entry(prefix: &[u8], guard: fjall::Guard) -> Result<LogEntry, StoreError> {
    let (key, value) = guard.into_inner().map_err(io_err)?;
    let seq = codec::seq_of_key("log", prefix, &key)?;
    let (time_ms, payload) = codec::decode_log_value(&value)?;
    Ok(LogEntry { seq, time_ms, payload: Bytes::copy_from_slice(payload) })
}

/// The fjall-backed [`Store`].
///
/// Dropping it stops the flusher and then the writer thread after it has committed
/// everything queued and synced the journal (memtables not yet flushed stay in the
/// journal: call [`Store::flush`] first for a restart that replays nothing); the
/// database directory is unlocked once in-flight reads finish.
pub struct EmbeddedStore {
    engine: Arc<Engine>,
    /// `None` only during drop: dropping the sender is what stops the writer.
    tx: Option<crossbeam_channel::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// `None` only during drop: stopped before the writer.
    flusher: Option<flusher::Flusher>,
    recovery: RecoveryReport,
    /// Set by [`Store::flush`] (a graceful shutdown): the drop then flushes again, so
    /// writes that still land after the shutdown's flush are not left to the journal.
    flushed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `config.path` and starts the writer
    /// thread. Blocking (it may replay the journal): call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(config: EmbeddedConfig) -> Result<Self, StoreError> {
        let (engine, recovery) = Engine::open_reporting(&config.path)?;
        let engine = Arc::new(engine);
        let flusher =
            flusher::Flusher::start(engine.db.clone(), engine.all.clone(), config.flush, config.background_nice)?;
        flusher::lower_priority_of_threads_named("fjall:worker", config.background_nice);
        let durability = match config.durability {
            Durability::Process => PersistMode::Buffer,
            Durability::Fsync => PersistMode::SyncAll,
        };
        // Unbounded: every request has a caller awaiting its reply, so the queue is
        // bounded by the number of concurrent callers, and a bounded send could block
        // an executor thread.
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer_engine = Arc::clone(&engine);
        let writer = std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || writer::run(&writer_engine, &rx, durability))
            .map_err(|e| StoreError::Io(format!("cannot start the store writer thread: {e}")))?;
        Ok(Self {
            engine,
            tx: Some(tx),
            writer: Some(writer),
            flusher: Some(flusher),
            recovery,
            flushed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// What opening this store had to recover.
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// Sends a command to the writer thread and waits for its answer.
    async fn ask(&self, cmd: impl FnOnce(writer::Reply) -> Command) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(cmd(reply)).map_err(|_| StoreError::Closed)?;
        // A dropped reply means the writer thread died before answering.
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, StoreError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| StoreError::Backend(format!("store read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        drop(self.flusher.take());
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("embedded store: writer thread panicked");
            }
        }
        // After a graceful flush, late writes (requests still in flight at shutdown)
        // are flushed too; without one, the drop is what a crash would leave.
        if self.flushed.load(std::sync::atomic::Ordering::Acquire) {
            if let Err(e) = flusher::flush_late(&self.engine.db, &self.engine.all) {
                tracing::error!(error = %e, "embedded store: final flush failed; the journal keeps the data");
            }
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Validate on the caller's thread: the writer thread is the serial bottleneck.
        batch.validate()?;
        self.ask(|reply| Command::Write(batch, reply)).await
    }

    async fn write_guarded(&self, writes: Vec<GuardedBatch>, now_ms: u64) -> Result<Vec<GuardOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        for w in &writes {
            check_dedup_key(&w.guard.key)?;
            w.batch.validate()?;
        }
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(Command::WriteGuarded { writes, now_ms, reply }).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_many(&self, reads: Vec<Read>) -> Result<Vec<Result<ReadAnswer, StoreError>>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        // One blocking-pool job for all of them: the hop to the pool and back (a thread
        // wake-up each way) costs far more than a point lookup in the engine.
        self.read(move |e| Ok(reads.iter().map(|r| e.read_one(r)).collect())).await
    }

    async fn get_users(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |e| e.get_users(app, &ids)).await
    }

    async fn read_log(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.clone();
        self.read(move |e| e.read_log(app, &owner, kind, after, limit)).await
    }

    async fn read_log_back(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if limit == 0 || before == Seq::ZERO {
            return Ok(Vec::new());
        }
        let owner = owner.clone();
        self.read(move |e| e.read_log_back(app, &owner, kind, before, limit)).await
    }

    async fn get_log_entry(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> Result<Option<LogEntry>, StoreError> {
        let owner = owner.clone();
        self.read(move |e| e.get_log_entry(app, &owner, kind, seq)).await
    }

    async fn seq_bounds(&self, app: AppId, owner: &Owner) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        let owner = owner.clone();
        self.read(move |e| e.seq_bounds(app, &owner)).await
    }

    async fn get_dedup(&self, key: &str, now_ms: u64) -> Result<Option<DedupRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |e| e.get_dedup(&key, now_ms)).await
    }

    async fn get_app(&self, app: AppId) -> Result<Option<AppRecord>, StoreError> {
        self.read(move |e| e.get_app(app)).await
    }

    async fn get_device_acks(&self, app: AppId, user: &UserId, device_id: &str) -> Result<Vec<DeviceAck>, StoreError> {
        let (user, device_id) = (user.clone(), device_id.to_owned());
        self.read(move |e| e.get_device_acks(app, &user, &device_id)).await
    }

    async fn get_message_index(&self, app: AppId, message_key: u64) -> Result<Option<MessageLocator>, StoreError> {
        self.read(move |e| e.get_message_index(app, message_key)).await
    }

    async fn read_conv_back(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StoreError> {
        if limit == 0 || before == Seq::ZERO {
            return Ok(Vec::new());
        }
        let (user, conv) = (user.clone(), conversation.clone());
        self.read(move |e| e.read_conv_back(app, &user, &conv, before, limit)).await
    }

    async fn get_read_marks(&self, app: AppId, user: &UserId) -> Result<Vec<(Conversation, Seq)>, StoreError> {
        let user = user.clone();
        self.read(move |e| e.get_read_marks(app, &user)).await
    }

    async fn get_conversation(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let (user, conv) = (user.clone(), conversation.clone());
        self.read(move |e| e.get_conversation(app, &user, &conv)).await
    }

    async fn list_conversations(
        &self,
        app: AppId,
        user: &UserId,
        after: Option<&Conversation>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (user, after) = (user.clone(), after.cloned());
        self.read(move |e| e.list_conversations(app, &user, after.as_ref(), limit)).await
    }

    async fn get_group(&self, app: AppId, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        let group = group.clone();
        self.read(move |e| e.get_group(app, &group)).await
    }

    async fn list_groups(
        &self,
        app: AppId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<GroupRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.cloned();
        self.read(move |e| e.list_groups(app, after.as_ref(), limit)).await
    }

    async fn get_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        members: &[UserId],
    ) -> Result<Vec<Option<GroupMemberRecord>>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let (group, members) = (group.clone(), members.to_vec());
        self.read(move |e| e.get_group_members(app, &group, &members)).await
    }

    async fn list_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<GroupMemberRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (group, after) = (group.clone(), after.cloned());
        self.read(move |e| e.list_group_members(app, &group, after.as_ref(), limit)).await
    }

    /// Syncs the journal, then writes every memtable to table files and waits for
    /// it: after this, reopening replays nothing into memory.
    async fn flush(&self) -> Result<(), StoreError> {
        self.flushed.store(true, std::sync::atomic::Ordering::Release);
        self.ask(Command::Flush).await?;
        self.read(|e| flusher::flush_all(&e.db, &e.all)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// The compaction filter drops expired dedup records (and only those). Uses fjall's
    /// hidden flush/compact hooks because nothing public forces a compaction.
    #[test]
    fn compaction_drops_expired_dedup_records() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        engine.dedup.insert("expired", codec::encode_dedup_value(now_ms - 1, b"old")).unwrap();
        engine.dedup.insert("live", codec::encode_dedup_value(now_ms + 3_600_000, b"new")).unwrap();
        engine.dedup.insert("garbage", [9u8, 9]).unwrap();
        engine.dedup.rotate_memtable_and_wait().unwrap();
        engine.dedup.major_compact().unwrap();
        assert_eq!(engine.dedup.get("expired").unwrap(), None);
        assert!(engine.dedup.get("live").unwrap().is_some());
        // Undecodable records are kept for a human to look at, not silently dropped.
        assert!(engine.dedup.get("garbage").unwrap().is_some());
    }

    /// A format-1 directory (users only, v1 locators, no `conversations` keyspace;
    /// written here byte for byte as format 1 wrote it) is upgraded in place on open:
    /// its data reads back through the owner vocabulary and it takes the new ops.
    #[test]
    fn format_1_directories_are_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (app, u, p) = (AppId(1), UserId::new("old").unwrap(), UserId::new("p").unwrap());
        let owner = Owner::User(u.clone());
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = |name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            // Format 1 keys: app · len · id · kind · seq (and the other families).
            let mut log_key = app.0.to_be_bytes().to_vec();
            log_key.extend_from_slice(&[3, b'o', b'l', b'd', 0]);
            let bound_key = log_key.clone();
            log_key.extend_from_slice(&1u64.to_be_bytes());
            ks(KS_LOG).insert(&log_key, codec::encode_log_value(5, b"hi")).unwrap();
            ks(KS_BOUNDS).insert(&bound_key, codec::encode_seq_value(Seq(100))).unwrap();
            let mut ack_key = app.0.to_be_bytes().to_vec();
            ack_key.extend_from_slice(&[3, b'o', b'l', b'd', 1, b'd', 0]);
            ks(KS_DEVICE_ACKS).insert(&ack_key, codec::encode_seq_value(Seq(1))).unwrap();
            let mut mark_key = app.0.to_be_bytes().to_vec();
            mark_key.extend_from_slice(&[3, b'o', b'l', b'd', 1, b'p']);
            ks(KS_READ_MARKS).insert(&mark_key, codec::encode_seq_value(Seq(1))).unwrap();
            let mut conv_key = mark_key.clone();
            conv_key.extend_from_slice(&1u64.to_be_bytes());
            ks(KS_CONV_INDEX).insert(&conv_key, []).unwrap();
            let mut v1_locator = vec![1u8];
            for n in [1u64, 7, 5] {
                v1_locator.extend_from_slice(&n.to_be_bytes());
            }
            v1_locator.extend_from_slice(&[3, b'o', b'l', b'd', 1, b'p']);
            ks(KS_MSG_INDEX).insert(codec::message_index_key(app, 9), v1_locator).unwrap();
            ks(KS_META).insert(FORMAT_KEY, [1u8]).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let got = store.get_log_entry(app, &owner, SyncKind::Message, Seq(1)).await.unwrap();
            assert_eq!(got.map(|e| e.payload), Some(Bytes::from_static(b"hi")));
            assert_eq!(store.seq_bounds(app, &owner).await.unwrap(), vec![(SyncKind::Message, Seq(100))]);
            let acks = store.get_device_acks(app, &u, "d").await.unwrap();
            assert_eq!(acks, vec![DeviceAck { owner: owner.clone(), kind: SyncKind::Message, seq: Seq(1) }]);
            let single = Conversation::Single(p.clone());
            assert_eq!(store.get_read_marks(app, &u).await.unwrap(), vec![(single.clone(), Seq(1))]);
            assert_eq!(store.read_conv_back(app, &u, &single, Seq::MAX, 10).await.unwrap(), vec![Seq(1)]);
            let loc = store.get_message_index(app, 9).await.unwrap();
            assert_eq!(loc, Some(MessageLocator::single(u.clone(), Seq(1), p.clone(), Seq(7), 5)));
            let mut b = WriteBatch::new();
            b.put_conversation(app, u.clone(), ConversationRecord::new(single.clone()));
            store.write(b).await.unwrap();
            assert!(store.get_conversation(app, &u, &single).await.unwrap().is_some());
        });
        drop(store);
        let db = Database::builder(dir.path()).open().unwrap();
        let meta = db.keyspace(KS_META, KeyspaceCreateOptions::default).unwrap();
        assert_eq!(meta.get(FORMAT_KEY).unwrap().as_deref(), Some(&[FORMAT][..]));
    }

    /// A directory of a newer format, or of a format too old to upgrade, or with a
    /// damaged marker is refused with a message saying what to do; nothing is changed.
    #[test]
    fn other_formats_are_refused_with_what_to_do() {
        for (marker, says) in [
            (vec![FORMAT + 1], "newer tern"),
            (vec![0u8], "start with an empty directory"),
            (vec![1u8, 2], "unreadable format marker"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = Database::builder(dir.path()).open().unwrap();
                let meta = db.keyspace(KS_META, KeyspaceCreateOptions::default).unwrap();
                meta.insert(FORMAT_KEY, marker.clone()).unwrap();
                db.persist(PersistMode::SyncAll).unwrap();
            }
            let err = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap_err();
            assert!(matches!(&err, StoreError::Schema(m) if m.contains(says)), "{marker:?}: {err}");
            let db = Database::builder(dir.path()).open().unwrap();
            let meta = db.keyspace(KS_META, KeyspaceCreateOptions::default).unwrap();
            assert_eq!(meta.get(FORMAT_KEY).unwrap().as_deref(), Some(&marker[..]), "marker left as it was");
        }
        // A new directory gets the current marker.
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let db = Database::builder(dir.path()).open().unwrap();
        let meta = db.keyspace(KS_META, KeyspaceCreateOptions::default).unwrap();
        assert_eq!(meta.get(FORMAT_KEY).unwrap().as_deref(), Some(&[FORMAT][..]));
    }

    /// Undecodable index data is reported as corrupt, never panics or is skipped.
    #[test]
    fn bad_index_bytes_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let (app, user, peer) = (AppId(1), UserId::new("u").unwrap(), UserId::new("p").unwrap());
        let conv = Conversation::Single(peer.clone());
        let corrupt = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Corrupt { .. }));
        engine.conv_index.insert(codec::conv_key(app, &user, &conv, Seq(3)), [1u8]).unwrap();
        assert!(corrupt(engine.read_conv_back(app, &user, &conv, Seq::MAX, 10).map(|_| ())));
        engine.msg_index.insert(codec::message_index_key(app, 9), [1u8, 0]).unwrap();
        assert!(corrupt(engine.get_message_index(app, 9).map(|_| ())));
        engine.read_marks.insert(codec::read_mark_key(app, &user, &conv), [2u8]).unwrap();
        assert!(corrupt(engine.get_read_marks(app, &user).map(|_| ())));
        engine.conversations.insert(codec::conversation_key(app, &user, &conv), [1u8, 0]).unwrap();
        assert!(corrupt(engine.get_conversation(app, &user, &conv).map(|_| ())));
        assert!(corrupt(engine.list_conversations(app, &user, None, 10).map(|_| ())));
        let other = UserId::new("v").unwrap();
        engine.read_marks.insert(codec::read_mark_key(app, &other, &conv), codec::encode_seq_value(Seq(1))).unwrap();
        assert_eq!(engine.get_read_marks(app, &other).unwrap(), vec![(conv.clone(), Seq(1))]);
        let broken = UserId::new("w").unwrap();
        let mut bad_peer = codec::user_prefix(app, &broken);
        bad_peer.extend_from_slice(&[3, b'a']); // says 3 bytes, holds 1
        engine.read_marks.insert(bad_peer, codec::encode_seq_value(Seq(1))).unwrap();
        assert!(corrupt(engine.get_read_marks(app, &broken).map(|_| ())));
        let own = Owner::User(user.clone());
        let mut long_ack = codec::device_ack_key(app, &user, "d", &own, SyncKind::Message);
        long_ack.push(0);
        engine.device_acks.insert(long_ack, codec::encode_seq_value(Seq(1))).unwrap();
        assert!(corrupt(engine.get_device_acks(app, &user, "d").map(|_| ())));
        // An unknown kind (a newer build's) is skipped, not an error.
        let mut future_kind = codec::device_prefix(app, &other, "d");
        future_kind.push(100);
        engine.device_acks.insert(future_kind, codec::encode_seq_value(Seq(1))).unwrap();
        assert_eq!(engine.get_device_acks(app, &other, "d").unwrap(), vec![]);
    }
}
