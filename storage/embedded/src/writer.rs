//! The group-commit writer thread: the only code that writes to the fjall database.
//!
//! Callers hand `(WriteBatch, reply)` over a channel. The thread takes the first
//! request, drains whatever else is queued (up to a bound), merges it all into ONE
//! fjall batch, commits it with the configured durability and then answers every
//! waiter. Many concurrent message sends therefore cost one journal write and, in
//! fsync mode, one fsync. Being the only writer also makes the read-modify-write of
//! the max-keeping values (seq bounds, device acks, read marks) safe without locks,
//! and lets the thread remember the values it last committed ([`MaxCache`]) instead of
//! reading them back: under load every device's ack is rewritten about once a second
//! (10,000 a second at 5,000 msgs/s), and each such read was a memtable search.
//!
//! This thread must never run on an async executor and must never answer a waiter
//! before that waiter's ops are committed with the configured durability.

use super::slow::SlowEvents;
use super::{codec, io_err, Engine};
use crate::{GuardOutcome, GuardedBatch, Seq, StoreError, WriteBatch, WriteOp};
use bytes::Bytes;
use crossbeam_channel::Receiver;
use fjall::PersistMode;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a waiter is answered.
pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;
/// Where a guarded write is answered, per batch.
pub(crate) type GuardReply = oneshot::Sender<Result<Vec<GuardOutcome>, StoreError>>;

/// What the writer thread is asked to do.
pub(crate) enum Command {
    /// Apply a (validated, non-empty) batch.
    Write(WriteBatch, Reply),
    /// Apply each (validated) batch whose dedup guard has no live record at `now_ms`.
    WriteGuarded { writes: Vec<GuardedBatch>, now_ms: u64, reply: GuardReply },
    /// Fsync the journal once everything queued before it is committed.
    Flush(Reply),
}

/// Stop draining the queue once a group holds this many ops, so the first waiter of
/// a burst is not held back indefinitely and one fjall batch stays a sane size.
const MAX_GROUP_OPS: usize = 4096;
/// The same bound in approximate payload bytes.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// A group commit at least this slow is logged: every write of the node waited for it,
/// so it shows as a latency stall and, past the send admission target, as refused sends.
const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// Max-keeping values the writer remembers (two generations of half this each): ~100
/// bytes apiece, so ~13 MB at most. Enough for every device ack, seq bound and read
/// mark a busy node rewrites within seconds; colder keys are read from the store.
const MAX_CACHE_ENTRIES: usize = 1 << 17;

/// Runs until every sender is dropped, then syncs the journal and returns.
pub(crate) fn run(engine: &Engine, rx: &Receiver<Command>, durability: PersistMode) {
    let mut slow = SlowEvents::default();
    let mut cache = MaxCache::new(MAX_CACHE_ENTRIES);
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut group = Group::default();
        group.take(engine, &cache, first);
        while group.ops < MAX_GROUP_OPS && group.bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(cmd) => group.take(engine, &cache, cmd),
                Err(_) => break,
            }
        }
        let ops = group.ops;
        group.commit(engine, &mut cache, durability);
        // What one group commit costs and holds: every waiter of the group waited this.
        let took = started.elapsed();
        metrics::histogram!("tern_store_group_commit_seconds").record(took.as_secs_f64());
        metrics::histogram!("tern_store_group_ops").record(ops as f64);
        if took >= SLOW_COMMIT {
            metrics::counter!("tern_store_slow_commits_total").increment(1);
        }
        if let Some((worst, count)) = slow.note(took, SLOW_COMMIT, Instant::now()) {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                ops,
                slowest_ms = worst.as_millis() as u64,
                slow_commits = count,
                "embedded store: slow group commit; every write waited for it (slowest and count since the last such warning)"
            );
        }
    }
    // Shutdown: whatever durability was configured, leave nothing in OS buffers.
    if let Err(e) = engine.db.persist(PersistMode::SyncAll) {
        tracing::error!(error = %e, "embedded store: final journal sync failed");
    }
}

/// Keyspaces that take plain puts (last write wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ks {
    Users,
    Log,
    Dedup,
    Apps,
    MsgIndex,
    ConvIndex,
    Conversations,
    Groups,
    GroupMembers,
}

/// Keyspaces whose values are one seq that never goes down (merged separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MaxKs {
    Bounds,
    DeviceAcks,
    ReadMarks,
}

impl MaxKs {
    fn keyspace(self, engine: &Engine) -> &fjall::Keyspace {
        match self {
            MaxKs::Bounds => &engine.bounds,
            MaxKs::DeviceAcks => &engine.device_acks,
            MaxKs::ReadMarks => &engine.read_marks,
        }
    }

    /// What a value is called in errors.
    fn what(self) -> &'static str {
        match self {
            MaxKs::Bounds => "seq bound",
            MaxKs::DeviceAcks => "device ack",
            MaxKs::ReadMarks => "read mark",
        }
    }
}

/// The max-keeping values this thread committed last, by key: what the store holds for
/// them, since nothing else writes the database. Two generations, so it stays bounded
/// and keeps what was written recently; a key in neither is read from the store.
struct MaxCache {
    young: HashMap<(MaxKs, Vec<u8>), Seq>,
    old: HashMap<(MaxKs, Vec<u8>), Seq>,
    /// Entries per generation.
    generation: usize,
}

impl MaxCache {
    fn new(entries: usize) -> Self {
        Self { young: HashMap::new(), old: HashMap::new(), generation: (entries / 2).max(1) }
    }

    fn get(&self, key: &(MaxKs, Vec<u8>)) -> Option<Seq> {
        self.young.get(key).or_else(|| self.old.get(key)).copied()
    }

    /// Records values just committed.
    fn committed(&mut self, key: (MaxKs, Vec<u8>), seq: Seq) {
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, seq);
    }

    /// After a failed commit nothing it held can be trusted to match the store.
    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

/// One op of one request, encoded but not yet merged into the group.
enum Staged {
    /// A put, or (`None`) a delete.
    Put(Ks, Vec<u8>, Option<Vec<u8>>),
    /// A max-keeping value. `stored` is what the database held when staged, if the
    /// group had no newer value.
    Max { ks: MaxKs, key: Vec<u8>, stored: Option<Seq>, seq: Seq },
}

/// Everything one commit will write, and who is waiting for it.
#[derive(Default)]
struct Group {
    /// Last value wins: two writes of one key in a group must become one batch item.
    /// `None` is a delete.
    puts: HashMap<(Ks, Vec<u8>), Option<Vec<u8>>>,
    /// Max-keeping values that this group raises, already maxed against storage.
    maxes: HashMap<(MaxKs, Vec<u8>), Seq>,
    writers: Vec<Reply>,
    guarded: Vec<(GuardReply, Vec<GuardOutcome>)>,
    flushers: Vec<Reply>,
    ops: usize,
    bytes: usize,
}

impl Group {
    fn take(&mut self, engine: &Engine, cache: &MaxCache, cmd: Command) {
        match cmd {
            Command::Flush(reply) => self.flushers.push(reply),
            Command::Write(batch, reply) => {
                // Stage the whole request before merging any of it, so a request that
                // fails (e.g. a corrupt stored bound) leaves no partial writes behind.
                match self.stage(engine, cache, batch) {
                    Ok(staged) => {
                        self.merge(staged);
                        self.writers.push(reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::WriteGuarded { writes, now_ms, reply } => match self.take_guarded(engine, cache, writes, now_ms) {
                Ok(outcomes) => self.guarded.push((reply, outcomes)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    /// Stages every guarded batch whose key is neither in this group, nor earlier in
    /// this request, nor live in the store. All or nothing: a batch that fails to stage
    /// fails the request and none of its batches join the group.
    fn take_guarded(
        &mut self,
        engine: &Engine,
        cache: &MaxCache,
        writes: Vec<GuardedBatch>,
        now_ms: u64,
    ) -> Result<Vec<GuardOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut staged = Vec::new();
        let mut here: HashMap<String, Bytes> = HashMap::new();
        for GuardedBatch { guard, mut batch } in writes {
            let earlier = match here.get(&guard.key) {
                Some(v) => Some(v.clone()),
                None => self.live_dedup(engine, guard.key.as_bytes(), now_ms)?,
            };
            if let Some(value) = earlier {
                outcomes.push(GuardOutcome::Duplicate(value));
                continue;
            }
            here.insert(guard.key.clone(), guard.value.clone());
            batch.put_dedup(guard);
            staged.extend(self.stage(engine, cache, batch)?);
            outcomes.push(GuardOutcome::Applied);
        }
        self.merge(staged);
        Ok(outcomes)
    }

    /// The value of a live dedup record, from this group's pending puts or the store.
    fn live_dedup(&self, engine: &Engine, key: &[u8], now_ms: u64) -> Result<Option<Bytes>, StoreError> {
        // The lookup key must be owned for the map; only this path pays that copy.
        let pending = self.puts.get(&(Ks::Dedup, key.to_vec()));
        let stored;
        let raw = match pending {
            Some(Some(v)) => v.as_slice(),
            Some(None) => return Ok(None),
            None => {
                stored = engine.dedup.get(key).map_err(io_err)?;
                match &stored {
                    Some(v) => v.as_ref(),
                    None => return Ok(None),
                }
            }
        };
        let (expires_ms, value) = codec::decode_dedup_value(raw)?;
        Ok((now_ms < expires_ms).then(|| Bytes::copy_from_slice(value)))
    }

    fn stage(&mut self, engine: &Engine, cache: &MaxCache, batch: WriteBatch) -> Result<Vec<Staged>, StoreError> {
        let mut staged = Vec::with_capacity(batch.len());
        for op in batch {
            self.ops += 1;
            staged.push(match op {
                WriteOp::PutUser(app, rec) => {
                    Staged::Put(Ks::Users, codec::user_key(app, &rec.user_id), Some(codec::encode_user(&rec)?))
                }
                WriteOp::AppendLog { app, owner, kind, entry } => {
                    self.bytes += entry.payload.len();
                    Staged::Put(
                        Ks::Log,
                        codec::log_key(app, &owner, kind, entry.seq),
                        Some(codec::encode_log_value(entry.time_ms, &entry.payload)),
                    )
                }
                WriteOp::DeleteLogEntry { app, owner, kind, seq } => {
                    Staged::Put(Ks::Log, codec::log_key(app, &owner, kind, seq), None)
                }
                WriteOp::SetSeqBound { app, owner, kind, bound } => {
                    self.stage_max(engine, cache, MaxKs::Bounds, codec::bound_key(app, &owner, kind), bound)?
                }
                WriteOp::PutDedup(rec) => {
                    self.bytes += rec.value.len();
                    let value = codec::encode_dedup_value(rec.expires_ms, &rec.value);
                    Staged::Put(Ks::Dedup, rec.key.into_bytes(), Some(value))
                }
                WriteOp::PutApp(rec) => {
                    Staged::Put(Ks::Apps, codec::app_key(rec.app_id).to_vec(), Some(codec::encode_app(&rec)?))
                }
                WriteOp::PutDeviceAck { app, user, device_id, owner, kind, seq } => {
                    let key = codec::device_ack_key(app, &user, &device_id, &owner, kind);
                    self.stage_max(engine, cache, MaxKs::DeviceAcks, key, seq)?
                }
                WriteOp::PutMessageIndex { app, message_key, loc } => Staged::Put(
                    Ks::MsgIndex,
                    codec::message_index_key(app, message_key).to_vec(),
                    Some(codec::encode_locator(&loc)),
                ),
                WriteOp::AppendConvIndex { app, user, conversation, seq } => Staged::Put(
                    Ks::ConvIndex,
                    codec::conv_key(app, &user, &conversation, seq),
                    Some(codec::CONV_VALUE.to_vec()),
                ),
                WriteOp::PutReadMark { app, user, conversation, seq } => self.stage_max(
                    engine,
                    cache,
                    MaxKs::ReadMarks,
                    codec::read_mark_key(app, &user, &conversation),
                    seq,
                )?,
                WriteOp::PutConversation { app, user, record } => {
                    let value = codec::encode_conversation(&record);
                    self.bytes += value.len();
                    Staged::Put(
                        Ks::Conversations,
                        codec::conversation_key(app, &user, &record.conversation),
                        Some(value),
                    )
                }
                WriteOp::DeleteConversation { app, user, conversation } => {
                    Staged::Put(Ks::Conversations, codec::conversation_key(app, &user, &conversation), None)
                }
                WriteOp::PutGroup(app, rec) => {
                    let value = codec::encode_group(&rec)?;
                    self.bytes += value.len();
                    Staged::Put(Ks::Groups, codec::group_key(app, &rec.group_id), Some(value))
                }
                WriteOp::PutGroupMember { app, group, member } => {
                    let value = codec::encode_group_member(&member)?;
                    self.bytes += value.len();
                    Staged::Put(Ks::GroupMembers, codec::group_member_key(app, &group, &member.member_id), Some(value))
                }
                WriteOp::DeleteGroupMember { app, group, member } => {
                    Staged::Put(Ks::GroupMembers, codec::group_member_key(app, &group, &member), None)
                }
            });
        }
        Ok(staged)
    }

    /// Stages a max-keeping write with the stored value: none needed if the group
    /// already holds a newer one, else from the cache or, failing that, the store.
    fn stage_max(
        &self,
        engine: &Engine,
        cache: &MaxCache,
        ks: MaxKs,
        key: Vec<u8>,
        seq: Seq,
    ) -> Result<Staged, StoreError> {
        let key = (ks, key);
        let stored = if self.maxes.contains_key(&key) {
            None
        } else if let Some(cached) = cache.get(&key) {
            Some(cached)
        } else {
            ks.keyspace(engine)
                .get(&key.1)
                .map_err(io_err)?
                .map(|v| codec::decode_seq_value(ks.what(), &v))
                .transpose()?
        };
        let (ks, key) = key;
        Ok(Staged::Max { ks, key, stored, seq })
    }

    fn merge(&mut self, staged: Vec<Staged>) {
        for s in staged {
            match s {
                Staged::Put(ks, key, value) => {
                    self.puts.insert((ks, key), value);
                }
                Staged::Max { ks, key, stored, seq } => {
                    // `stored` is None when this group already holds the key (or the
                    // store never had it); either way the group's value is the newest.
                    let key = (ks, key);
                    let current = self.maxes.get(&key).copied().or(stored);
                    if current.is_none_or(|c| seq > c) {
                        self.maxes.insert(key, seq);
                    }
                }
            }
        }
    }

    fn commit(self, engine: &Engine, cache: &mut MaxCache, durability: PersistMode) {
        let Group { puts, maxes, writers, guarded, flushers, ops, .. } = self;
        let result = if puts.is_empty() && maxes.is_empty() {
            // Only no-op max-keeping writes (or nothing): durable already.
            Ok(())
        } else {
            let mut batch = engine.db.batch().durability(Some(durability));
            for ((ks, key), value) in puts {
                let keyspace = match ks {
                    Ks::Users => &engine.users,
                    Ks::Log => &engine.log,
                    Ks::Dedup => &engine.dedup,
                    Ks::Apps => &engine.apps,
                    Ks::MsgIndex => &engine.msg_index,
                    Ks::ConvIndex => &engine.conv_index,
                    Ks::Conversations => &engine.conversations,
                    Ks::Groups => &engine.groups,
                    Ks::GroupMembers => &engine.group_members,
                };
                match value {
                    Some(value) => batch.insert(keyspace, key, value),
                    None => batch.remove(keyspace, key),
                }
            }
            for ((ks, key), seq) in &maxes {
                batch.insert(ks.keyspace(engine), key.as_slice(), codec::encode_seq_value(*seq));
            }
            batch.commit().map_err(io_err)
        };
        match &result {
            Ok(()) => maxes.into_iter().for_each(|(key, seq)| cache.committed(key, seq)),
            Err(_) => cache.clear(),
        }
        if let Err(e) = &result {
            // Fatal for the engine (fjall poisons itself); every waiter gets the error.
            tracing::error!(error = %e, waiters = writers.len() + guarded.len(), "embedded store: group commit failed");
        } else {
            tracing::trace!(waiters = writers.len(), ops, "embedded store: group committed");
        }
        for reply in writers {
            // A waiter that gave up (dropped its future) still had its write applied.
            let _ = reply.send(result.clone());
        }
        for (reply, outcomes) in guarded {
            let _ = reply.send(result.clone().map(|()| outcomes));
        }
        if !flushers.is_empty() {
            let flushed = engine.db.persist(PersistMode::SyncAll).map_err(io_err);
            for reply in flushers {
                let _ = reply.send(flushed.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppId, Conversation, DeviceAck, Owner, SyncKind, UserId};

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// Max-keeping values merged from several requests of ONE group keep the maximum
    /// whatever the request order, against stored values too. (The conformance suite
    /// can only hope concurrent writers land in one group; this makes it certain.)
    #[test]
    fn max_values_are_maxed_across_requests_of_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let (app, a, b) = (AppId(1), uid("a"), uid("b"));
        let batch = |seq: u64| {
            let mut w = WriteBatch::new();
            w.set_seq_bound(app, a.clone(), SyncKind::Message, Seq(seq))
                .put_device_ack(app, a.clone(), "d".into(), SyncKind::Message, Seq(seq))
                .put_read_mark(app, a.clone(), Conversation::Single(b.clone()), Seq(seq));
            w
        };
        let mut cache = MaxCache::new(MAX_CACHE_ENTRIES);
        let mut run_group = |seqs: &[u64]| {
            let mut group = Group::default();
            let mut answers = Vec::new();
            for &seq in seqs {
                let (reply, answer) = oneshot::channel();
                group.take(&engine, &cache, Command::Write(batch(seq), reply));
                answers.push(answer);
            }
            group.commit(&engine, &mut cache, PersistMode::Buffer);
            for mut answer in answers {
                answer.try_recv().unwrap().unwrap();
            }
        };
        let stored = || {
            (
                engine.seq_bounds(app, &Owner::User(a.clone())).unwrap(),
                engine.get_device_acks(app, &a, "d").unwrap(),
                engine.get_read_marks(app, &a).unwrap(),
            )
        };
        let expect = |n: u64| {
            let ack = DeviceAck { owner: Owner::User(a.clone()), kind: SyncKind::Message, seq: Seq(n) };
            (vec![(SyncKind::Message, Seq(n))], vec![ack], vec![(Conversation::Single(b.clone()), Seq(n))])
        };
        run_group(&[5, 9, 7]);
        assert_eq!(stored(), expect(9));
        // Lower than stored in every request: nothing changes.
        run_group(&[3, 8]);
        assert_eq!(stored(), expect(9));
        // Higher, then lower within the group.
        run_group(&[12, 10, 11]);
        assert_eq!(stored(), expect(12));
    }

    /// With a cache far smaller than the keys written, values come from the cache for
    /// some keys and from the store for others (rotated out): every stored value must
    /// still be the maximum ever written for its key.
    #[test]
    fn max_values_stay_maxed_when_the_cache_rotates_keys_out() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let app = AppId(1);
        let users: Vec<UserId> = (0..6).map(|i| uid(&format!("u{i}"))).collect();
        let mut cache = MaxCache::new(4);
        let mut model = std::collections::HashMap::new();
        // A fixed pseudo-random schedule: rises and falls per user, several per group.
        let mut x = 0x9e37_79b9_u64;
        for _ in 0..60 {
            let mut group = Group::default();
            let mut answers = Vec::new();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let user = &users[(x % 6) as usize];
                let seq = (x >> 8) % 50;
                let mut w = WriteBatch::new();
                w.put_device_ack(app, user.clone(), "d".into(), SyncKind::Message, Seq(seq));
                let (reply, answer) = oneshot::channel();
                group.take(&engine, &cache, Command::Write(w, reply));
                answers.push(answer);
                let m = model.entry(user.clone()).or_insert(0);
                *m = seq.max(*m);
            }
            group.commit(&engine, &mut cache, PersistMode::Buffer);
            for mut answer in answers {
                answer.try_recv().unwrap().unwrap();
            }
            for (user, want) in &model {
                let acks = engine.get_device_acks(app, user, "d").unwrap();
                assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![Seq(*want)], "{user:?}");
            }
        }
        assert!(cache.young.len() + cache.old.len() <= 4);
    }
}
