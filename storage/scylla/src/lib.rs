//! The CQL engine (crate `tern-storage-scylla`): a [`Store`] on a CQL cluster (ScyllaDB, or Apache Cassandra,
//! which speaks the same protocol and runs the tests), through the `scylla` driver.
//!
//! It runs on tokio (the driver's runtime), never on the gateway's monoio cores, and is
//! the only place in Tern that speaks CQL; the tables are in `storage/scylla/cql/*.cql` and
//! [`schema`] applies them. It must never use lightweight transactions (LWT) or logged
//! batches on the write path, and every statement it sends must be safe to retry.
//!
//! # Data model
//! Timelines (the per-kind logs and the conversation index) are partitioned by user and
//! *bucket*, clustered by seq, as Discord partitions messages by `(channel, bucket)`:
//! `log_entries ((app_id, user_id, kind, bucket), seq)` with `bucket = seq >> 14`, so a
//! partition holds at most [`LOG_BUCKET_SEQS`] = 16 384 entries. At a typical stored
//! message of ≈ 300 B (FlatBuffers message: ids, times, a short text) plus ≈ 40 B of row
//! overhead that is ≈ 5.5 MiB; even if every message were at logic's default 12 KiB body
//! limit it is ≈ 200 MiB, inside what ScyllaDB handles well (it warns at 1 GiB,
//! Cassandra at 100 MiB), and seqs skip (seqsvr steps), so real buckets are smaller still.
//! A heavy user (1 000 messages a day) fills a bucket in about two weeks, so the bucket
//! directory stays small (≈ 600 rows for 10 million messages).
//! A sync or history page (≤ 500 entries) touches one or two partitions. The conversation
//! index `conv_index ((app_id, user_id, peer_id, bucket), seq)` holds bare seqs (≈ 30 B a
//! row) and is bucketed by `seq >> 20` ([`CONV_BUCKET_SEQS`]: ≤ 30 MiB), because one
//! conversation is sparse in its user's inbox and small buckets would make a history page
//! visit many partitions. The bucket sizes are constants, not settings: changing them
//! would make every stored row unreachable.
//!
//! Seqs may skip far (a restart skips a seqsvr step, tests write `u64::MAX`), so a reader
//! cannot walk buckets one by one: each timeline has a bucket directory
//! (`log_buckets` / `conv_buckets ((…), bucket)`), written before the first entry of a
//! bucket, and reads page through the directory, then the buckets it lists. A bounded
//! in-process cache remembers which markers this process has written, so a marker costs
//! one write per bucket per process, not one per entry.
//!
//! Everything else is one partition per key: users `((app_id, user_id))` (the profile as
//! the same JSON as the embedded store, so adding a profile field needs no migration),
//! apps, message locators `((app_id, message_key))`, dedup records `(key)` with a TTL,
//! and per-user small tables (seq bounds, device acks, read marks) partitioned by
//! `(app_id, user_id)`.
//!
//! # Writes: what a [`WriteBatch`] becomes
//! A batch is validated first (an invalid op writes nothing), then collapsed per key
//! (later op wins; max-ops keep the max, as the trait says), then sent as individual
//! prepared, idempotent statements, token- and shard-aware routed by the driver's default
//! policy, executed concurrently within each of four ordered phases:
//!
//! 0. bucket-directory markers not yet known to be written;
//! 1. content: log entries, conversation index, message locators, users, apps, seq bounds;
//! 2. progress pointers: device acks, read marks;
//! 3. dedup records (the "this send is done" answer to a retry).
//!
//! No multi-partition batch is used: a logged batch would cost a batchlog write per
//! message and an unlogged multi-partition batch saves nothing but a round trip while
//! giving up token-aware routing. Max-registers (seq bounds, device acks, read marks) need
//! no read-before-write and no LWT: each is one cell written `USING TIMESTAMP f(value)`
//! with `f` monotonic in the value, so the cell with the highest value has the highest
//! write timestamp and wins reconciliation on every replica, in any arrival order, under
//! concurrent writers and retries. `f(v) = i64::MIN + 1 + v / 2` lies in the past (at or
//! before 1970): ScyllaDB refuses timestamps more than 3 days ahead
//! (`restrict_future_timestamp`), and `i64::MIN` is reserved. It maps two values onto
//! each timestamp; on equal timestamps both ScyllaDB and Cassandra keep the cell with the
//! larger value (bytes compared unsigned: the u64 order), so the maximum still wins.
//! Because these cells are "older" than any wall-clock write, they must never be deleted
//! without an explicit `USING TIMESTAMP` (a plain DELETE would hide every later update
//! until compaction purges the tombstone); Tern never deletes them.
//! Ordinary overwrites (a recall rewriting an entry, a profile update) use client-side
//! monotonic timestamps, so a later write from this process wins even if another
//! coordinator with a slower clock applies it.
//!
//! # Atomicity: what a failed write leaves behind, and why logic is still correct
//! `write` returning `Ok` means every op is acknowledged at the configured consistency
//! (default LOCAL_QUORUM), and a LOCAL_QUORUM read sees all of it — the same visibility
//! the embedded store gives. A write that fails (or whose process dies) is *not atomic*:
//! any subset of the phase that failed may have been applied, possibly later (a
//! statement that timed out may still reach a replica and be read-repaired), while every
//! earlier phase is complete. The phase order gives these invariants:
//! * a directory marker exists for every visible entry's bucket, so an entry that landed
//!   is never hidden and then revealed by a later write in its bucket;
//! * a device ack or read mark is never visible before the entries of its batch;
//! * a dedup record exists only if everything else in its batch is durable, so a retried
//!   send that finds it answers with a message that really is stored in full.
//!
//! Logic's seq allocation stays safe: a seq is handed out only below a seq bound that is
//! already durable (its own earlier `write` returned `Ok`), bounds never decrease, and
//! after a restart allocation resumes above the stored bound — so no seq is reused even
//! when a dead write left entries behind. Acknowledged messages are never lost. Partial
//! writes of *unacknowledged* sends are possible, with the embedded store they are not:
//! they sit at seqs at or below the bound, and logic moves its committed watermark past a
//! failed seq (and, after a restart, starts at the bound), so such an entry can be served
//! by sync. Its sender never got an ack and finds no dedup record, so a retry stores the
//! message again: a recipient may see that message twice, or see only one side's copy.
//! That is at-least-once for failed sends, where the embedded store gives exactly-once; it
//! never loses, reorders or reuses a seq. A late-landing statement (timeout, then applied)
//! can also make such an entry appear below a `maxSequence` already served: a client
//! that synced past it will see it only in history. Closing that gap needs logic to keep a
//! failed seq in flight and retry the same batch (every statement is idempotent) before
//! giving up on it.
//!
//! # Retention
//! Dedup records carry a TTL of their remaining window plus [`DEDUP_TTL_GRACE_SECS`]
//! (reads still compare `expires_ms` with the caller's clock, so the TTL only collects
//! garbage). `message_ttl_secs` puts a TTL on the message timeline and conversation index
//! (not on other logs); directory markers of those timelines live twice as long and are
//! rewritten every half TTL while their bucket is written, so a marker always outlives
//! its entries and an expired bucket costs a reader one empty query until its marker
//! expires too. [`Store::flush`] has nothing to do: an acknowledged write is already on the
//! replicas' commit logs (whose fsync policy is the cluster's, e.g. ScyllaDB's periodic
//! 10 s by default — replication, not fsync, is what protects it).

mod config;
pub mod schema;

pub use config::{
    check_keyspace_name, Consistency, Replication, ScyllaConfig, ScyllaTlsConfig, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_KEYSPACE, DEFAULT_MESSAGE_TTL_SECS, DEFAULT_NODES, DEFAULT_REPLICATION_FACTOR, DEFAULT_REQUEST_TIMEOUT_MS,
    MAX_MESSAGE_TTL_SECS,
};
pub use schema::{MigrationReport, SCHEMA_VERSION};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{future::BoxFuture, stream, FutureExt, StreamExt};
use scylla::{
    client::{execution_profile::ExecutionProfile, session::Session, session_builder::SessionBuilder},
    policies::{load_balancing::DefaultPolicy, timestamp_generator::MonotonicTimestampGenerator},
    statement::prepared::PreparedStatement,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tern_storage::{
    check_dedup_key, check_device_id, AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck,
    GroupId, GroupMemberRecord, GroupRecord, LastMessage, LogEntry, MessageCopy, MessageLocator, Owner, Seq, Store,
    StoreError, SyncKind, UserId, UserRecord, WriteBatch, WriteOp,
};

/// log2 of the seqs per timeline bucket (see the module doc for the size math).
pub const LOG_BUCKET_BITS: u8 = 14;
/// Seqs per timeline bucket: 16 384.
pub const LOG_BUCKET_SEQS: u64 = 1 << LOG_BUCKET_BITS;
/// log2 of the seqs per conversation-index bucket.
pub const CONV_BUCKET_BITS: u8 = 20;
/// Seqs per conversation-index bucket: 1 048 576.
pub const CONV_BUCKET_SEQS: u64 = 1 << CONV_BUCKET_BITS;
/// Added to a dedup record's remaining window to form its TTL, so that a clock a little
/// behind the writer's still finds the record until `expires_ms` (reads filter exactly).
pub const DEDUP_TTL_GRACE_SECS: u64 = 600;

/// Largest TTL CQL accepts (20 years). A dedup window longer than that gets no TTL.
const MAX_CQL_TTL_SECS: u64 = 630_720_000;
/// Rows asked for per query when paging a timeline: a sync page (≤ 500) costs one or two
/// queries, and a response stays a few MiB even with large payloads.
const ROWS_PER_QUERY: usize = 256;
/// Directory entries fetched per query.
const BUCKETS_PER_QUERY: usize = 16;
/// Statements of one phase in flight at once (the driver multiplexes them over its
/// per-shard connections).
const MAX_IN_FLIGHT: usize = 256;
/// Directory markers remembered as written; past this the cache starts over (costing one
/// redundant marker write per active timeline).
const MARKER_CACHE_CAPACITY: usize = 200_000;

/// Bucket sizes, as log2 of seqs per bucket. Only tests pass anything but
/// [`BucketBits::DEFAULT`]: a keyspace must always be read with the bits it was written
/// with.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketBits {
    /// Timelines (`log_entries`).
    pub log: u8,
    /// Conversation index.
    pub conv: u8,
}

impl BucketBits {
    /// The production sizes.
    pub const DEFAULT: BucketBits = BucketBits { log: LOG_BUCKET_BITS, conv: CONV_BUCKET_BITS };
}

/// How a store lays out its rows, for tests only: bucket sizes (to reach bucket edges
/// with few rows) and a namespace that lets many test stores share one keyspace (creating
/// a keyspace per test costs seconds). Production always uses [`TestLayout::DEFAULT`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestLayout {
    /// Bucket sizes.
    pub bits: BucketBits,
    /// Stored in the upper half of every `app_id` and as a prefix of dedup keys; 0 (the
    /// default) stores both unchanged.
    pub namespace: u32,
}

impl TestLayout {
    /// The production layout.
    pub const DEFAULT: TestLayout = TestLayout { bits: BucketBits::DEFAULT, namespace: 0 };
}

/// The CQL store. Cheap to share (`Arc<dyn Store>`); one driver session inside.
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    bits: BucketBits,
    namespace: u32,
    message_ttl: i32,
    marker_ttl: i32,
    markers: MarkerCache,
    /// Requests in flight to the cluster (see `request_permit`).
    requests: tokio::sync::Semaphore,
}

impl ScyllaStore {
    /// Creates the keyspace (with the configured replication) if it is missing and applies
    /// every schema migration not yet applied. Idempotent; run it before
    /// [`ScyllaStore::connect`] on a new cluster and after upgrading Tern (`tern migrate`).
    pub async fn migrate(config: &ScyllaConfig) -> Result<MigrationReport, StoreError> {
        let session = open_session(config).await?;
        schema::migrate(&session, config).await
    }

    /// Connects and prepares every statement. Refuses (with [`StoreError::Schema`], whose
    /// message says to run `tern migrate`) a keyspace whose schema is missing or older than
    /// this code's, and one newer than it.
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        Self::connect_with_layout(config, TestLayout::DEFAULT).await
    }

    /// [`ScyllaStore::connect`] with another row layout: for tests only.
    #[doc(hidden)]
    pub async fn connect_with_layout(config: &ScyllaConfig, layout: TestLayout) -> Result<ScyllaStore, StoreError> {
        let bits = layout.bits;
        assert!((1..=62).contains(&bits.log) && (1..=62).contains(&bits.conv), "bucket bits {bits:?}");
        let session = open_session(config).await?;
        schema::check_current(&session, &config.keyspace).await?;
        let st = Statements::prepare(&session, &config.keyspace).await?;
        let ttl = config.message_ttl_secs;
        let refresh = (ttl > 0).then(|| Duration::from_secs(ttl / 2));
        Ok(ScyllaStore {
            session,
            st,
            bits,
            namespace: layout.namespace,
            // Validated ≤ 5 years: both fit an i32 of seconds.
            message_ttl: ttl as i32,
            marker_ttl: (ttl * 2) as i32,
            markers: MarkerCache::new(refresh),
            requests: tokio::sync::Semaphore::new(config.max_in_flight_requests.max(1)),
        })
    }

    /// The stored `app_id` (see [`TestLayout::namespace`]).
    fn app(&self, app: AppId) -> i64 {
        (i64::from(self.namespace) << 32) | i64::from(app.0)
    }

    /// The stored dedup key (see [`TestLayout::namespace`]).
    fn dedup_key<'a>(&self, key: &'a str) -> std::borrow::Cow<'a, str> {
        if self.namespace == 0 {
            key.into()
        } else {
            format!("{}/{key}", self.namespace).into()
        }
    }

    fn ttl_for(&self, kind: SyncKind) -> i32 {
        if kind == SyncKind::Message {
            self.message_ttl
        } else {
            0
        }
    }
}

async fn open_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    config.validate()?;
    // The default policy is token-aware (and shard-aware on ScyllaDB); a local DC only
    // narrows which coordinators it picks.
    let mut policy = DefaultPolicy::builder();
    if let Some(dc) = &config.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.to_driver())
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_context(Some(Arc::new(tls.client_config()?)));
    }
    builder.build().await.map_err(|e| StoreError::Io(format!("connecting to CQL nodes {:?}: {e}", config.nodes)))
}

/// A driver failure while talking to the cluster: retryable from the caller's view.
pub(crate) fn driver_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// Rows that do not have the shape the schema promises.
fn decode_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("{what}: {e}"))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A seq, bound or message key as stored (bigint holding the u64 bit pattern).
fn to_cql(v: u64) -> i64 {
    v as i64
}

fn from_cql(v: i64) -> u64 {
    v as u64
}

fn kind_cql(kind: SyncKind) -> i8 {
    kind.as_u8() as i8
}

fn kind_from_cql(v: i8, table: &str) -> Result<SyncKind, StoreError> {
    SyncKind::from_u8(v as u8).ok_or_else(|| StoreError::corrupt(format!("{table}: unknown kind {v}")))
}

fn user_from_cql(s: String, what: &str) -> Result<UserId, StoreError> {
    UserId::new(s).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

/// Marks a group in an owner or conversation key (see `cql/002_owners.cql`): no user
/// id starts with it, so user keys are the bare ids migration 001 stored.
const GROUP_KEY_PREFIX: char = '#';

fn group_key(g: &GroupId) -> String {
    let mut key = String::with_capacity(1 + g.as_str().len());
    key.push(GROUP_KEY_PREFIX);
    key.push_str(g.as_str());
    key
}

/// The stored key of an owner: a user's id, or `#` and a group's id.
fn owner_key(owner: &Owner) -> String {
    match owner {
        Owner::User(u) => u.as_str().to_owned(),
        Owner::Group(g) => group_key(g),
    }
}

/// The stored key of a conversation: the peer's id, or `#` and the group's id.
fn conv_key(conv: &Conversation) -> String {
    match conv {
        Conversation::Single(u) => u.as_str().to_owned(),
        Conversation::Group(g) => group_key(g),
    }
}

fn owner_from_cql(s: String, what: &str) -> Result<Owner, StoreError> {
    match s.strip_prefix(GROUP_KEY_PREFIX) {
        Some(g) => GroupId::new(g).map(Owner::Group).map_err(|e| StoreError::corrupt(format!("{what}: {e}"))),
        None => user_from_cql(s, what).map(Owner::User),
    }
}

fn conv_from_cql(s: String, what: &str) -> Result<Conversation, StoreError> {
    Ok(match owner_from_cql(s, what)? {
        Owner::User(u) => Conversation::Single(u),
        Owner::Group(g) => Conversation::Group(g),
    })
}

/// The write timestamp of a max-register holding `v` (see the module doc): a higher value
/// never gets an earlier timestamp, equal timestamps are broken by value, and every
/// timestamp lies in `[i64::MIN + 1, 0]`, in the past and clear of the reserved `i64::MIN`.
fn max_register_ts(v: u64) -> i64 {
    i64::MIN + 1 + (v >> 1) as i64
}

fn bucket_of(seq: u64, bits: u8) -> i64 {
    (seq >> bits) as i64
}

/// First and last seq of bucket `b`.
fn bucket_span(b: i64, bits: u8) -> (u64, u64) {
    let first = (b as u64) << bits;
    (first, first | ((1u64 << bits) - 1))
}

/// Dedup TTL: remaining window (by this process's clock) plus grace; none if beyond what
/// CQL accepts.
fn dedup_ttl(expires_ms: u64, now_ms: u64) -> i32 {
    let secs = expires_ms.saturating_sub(now_ms).div_ceil(1000).saturating_add(DEDUP_TTL_GRACE_SECS);
    if secs > MAX_CQL_TTL_SECS {
        0
    } else {
        secs as i32
    }
}

/// The columns of a conversation record after its key, in statement order.
const CONVERSATION_COLUMNS: &str = "last_key, last_seq, last_time_ms, last_sender, last_preview, read_seq, is_top, \
                                    is_mute, extra, sync_seq, updated_ms";

/// A conversation row as read: `conversation` then [`CONVERSATION_COLUMNS`].
type ConversationRow = (
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn conversation_from_row(row: ConversationRow) -> Result<ConversationRecord, StoreError> {
    let (conv, key, seq, time, sender, preview, read_seq, top, mute, extra, sync_seq, updated) = row;
    let conversation = conv_from_cql(conv, "conversations.conversation")?;
    let last = match sender {
        None => None,
        Some(sender) => Some(LastMessage {
            message_key: key.map_or(0, from_cql),
            seq: Seq(seq.map_or(0, from_cql)),
            time_ms: time.map_or(0, from_cql),
            sender: user_from_cql(sender, "conversations.last_sender")?,
            preview: preview.unwrap_or_default(),
        }),
    };
    Ok(ConversationRecord {
        conversation,
        last,
        read_seq: Seq(read_seq.map_or(0, from_cql)),
        is_top: top.unwrap_or(false),
        is_mute: mute.unwrap_or(false),
        extra: extra.unwrap_or_default(),
        sync_seq: Seq(sync_seq.map_or(0, from_cql)),
        updated_ms: updated.map_or(0, from_cql),
    })
}

/// Every prepared statement, by purpose.
struct Statements {
    put_user: PreparedStatement,
    get_user: PreparedStatement,
    put_app: PreparedStatement,
    get_app: PreparedStatement,
    put_log: PreparedStatement,
    delete_log: PreparedStatement,
    get_log: PreparedStatement,
    log_fwd: PreparedStatement,
    log_back: PreparedStatement,
    put_log_bucket: PreparedStatement,
    log_dir_fwd: PreparedStatement,
    log_dir_back: PreparedStatement,
    set_bound: PreparedStatement,
    get_bounds: PreparedStatement,
    put_dedup: PreparedStatement,
    get_dedup: PreparedStatement,
    put_ack: PreparedStatement,
    get_acks: PreparedStatement,
    get_msg_index: PreparedStatement,
    put_conv: PreparedStatement,
    conv_back: PreparedStatement,
    put_conv_bucket: PreparedStatement,
    conv_dir_back: PreparedStatement,
    put_mark: PreparedStatement,
    get_marks: PreparedStatement,
    put_log_ack: PreparedStatement,
    get_log_acks: PreparedStatement,
    put_locator: PreparedStatement,
    get_locator: PreparedStatement,
    put_conversation: PreparedStatement,
    delete_conversation: PreparedStatement,
    get_conversation: PreparedStatement,
    list_conversations: PreparedStatement,
    list_conversations_after: PreparedStatement,
    put_group: PreparedStatement,
    get_group: PreparedStatement,
    list_groups: PreparedStatement,
    list_groups_after: PreparedStatement,
    put_member: PreparedStatement,
    delete_member: PreparedStatement,
    get_member: PreparedStatement,
    list_members: PreparedStatement,
    list_members_after: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Statements, StoreError> {
        let p = |cql: String| async move {
            let mut s = session.prepare(cql.as_str()).await.map_err(|e| {
                StoreError::Backend(format!("preparing {cql:?} (is the schema current? run `tern migrate`): {e}"))
            })?;
            // Every statement here writes fixed values (max-registers: a value-derived
            // timestamp), so the driver may retry or speculate freely.
            s.set_is_idempotent(true);
            Ok::<_, StoreError>(s)
        };
        let log_key = "app_id = ? AND user_id = ? AND kind = ? AND bucket = ?";
        let conv_key = "app_id = ? AND user_id = ? AND peer_id = ? AND bucket = ?";
        Ok(Statements {
            put_user: p(format!("INSERT INTO {ks}.users (app_id, user_id, record) VALUES (?, ?, ?)")).await?,
            get_user: p(format!("SELECT record FROM {ks}.users WHERE app_id = ? AND user_id = ?")).await?,
            put_app: p(format!("INSERT INTO {ks}.apps (app_id, secret, created_ms) VALUES (?, ?, ?)")).await?,
            get_app: p(format!("SELECT secret, created_ms FROM {ks}.apps WHERE app_id = ?")).await?,
            put_log: p(format!(
                "INSERT INTO {ks}.log_entries (app_id, user_id, kind, bucket, seq, time_ms, payload) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            delete_log: p(format!(
                "DELETE FROM {ks}.log_entries WHERE app_id = ? AND user_id = ? AND kind = ? AND bucket = ? AND seq = ?"
            ))
            .await?,
            get_log: p(format!("SELECT seq, time_ms, payload FROM {ks}.log_entries WHERE {log_key} AND seq = ?"))
                .await?,
            log_fwd: p(format!(
                "SELECT seq, time_ms, payload FROM {ks}.log_entries WHERE {log_key} AND seq >= ? LIMIT ?"
            ))
            .await?,
            log_back: p(format!(
                "SELECT seq, time_ms, payload FROM {ks}.log_entries WHERE {log_key} AND seq <= ? \
                 ORDER BY seq DESC LIMIT ?"
            ))
            .await?,
            put_log_bucket: p(format!(
                "INSERT INTO {ks}.log_buckets (app_id, user_id, kind, bucket) VALUES (?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            log_dir_fwd: p(format!(
                "SELECT bucket FROM {ks}.log_buckets WHERE app_id = ? AND user_id = ? AND kind = ? AND bucket >= ? \
                 LIMIT ?"
            ))
            .await?,
            log_dir_back: p(format!(
                "SELECT bucket FROM {ks}.log_buckets WHERE app_id = ? AND user_id = ? AND kind = ? AND bucket <= ? \
                 ORDER BY bucket DESC LIMIT ?"
            ))
            .await?,
            set_bound: p(format!(
                "UPDATE {ks}.seq_bounds USING TIMESTAMP ? SET bound = ? WHERE app_id = ? AND user_id = ? AND kind = ?"
            ))
            .await?,
            get_bounds: p(format!("SELECT kind, bound FROM {ks}.seq_bounds WHERE app_id = ? AND user_id = ?")).await?,
            put_dedup: p(format!("INSERT INTO {ks}.dedup (key, value, expires_ms) VALUES (?, ?, ?) USING TTL ?"))
                .await?,
            get_dedup: p(format!("SELECT value, expires_ms FROM {ks}.dedup WHERE key = ?")).await?,
            put_ack: p(format!(
                "UPDATE {ks}.device_acks USING TIMESTAMP ? SET seq = ? \
                 WHERE app_id = ? AND user_id = ? AND device_id = ? AND kind = ?"
            ))
            .await?,
            get_acks: p(format!(
                "SELECT kind, seq FROM {ks}.device_acks WHERE app_id = ? AND user_id = ? AND device_id = ?"
            ))
            .await?,
            get_msg_index: p(format!(
                "SELECT from_user, to_user, from_seq, to_seq, time_ms FROM {ks}.message_index \
                 WHERE app_id = ? AND message_key = ?"
            ))
            .await?,
            put_conv: p(format!(
                "INSERT INTO {ks}.conv_index (app_id, user_id, peer_id, bucket, seq) VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            conv_back: p(format!(
                "SELECT seq FROM {ks}.conv_index WHERE {conv_key} AND seq <= ? ORDER BY seq DESC LIMIT ?"
            ))
            .await?,
            put_conv_bucket: p(format!(
                "INSERT INTO {ks}.conv_buckets (app_id, user_id, peer_id, bucket) VALUES (?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            conv_dir_back: p(format!(
                "SELECT bucket FROM {ks}.conv_buckets WHERE app_id = ? AND user_id = ? AND peer_id = ? \
                 AND bucket <= ? ORDER BY bucket DESC LIMIT ?"
            ))
            .await?,
            put_mark: p(format!(
                "UPDATE {ks}.read_marks USING TIMESTAMP ? SET seq = ? WHERE app_id = ? AND user_id = ? AND peer_id = ?"
            ))
            .await?,
            get_marks: p(format!("SELECT peer_id, seq FROM {ks}.read_marks WHERE app_id = ? AND user_id = ?")).await?,
            put_log_ack: p(format!(
                "UPDATE {ks}.device_log_acks USING TIMESTAMP ? SET seq = ? \
                 WHERE app_id = ? AND user_id = ? AND device_id = ? AND owner = ? AND kind = ?"
            ))
            .await?,
            get_log_acks: p(format!(
                "SELECT owner, kind, seq FROM {ks}.device_log_acks WHERE app_id = ? AND user_id = ? AND device_id = ?"
            ))
            .await?,
            put_locator: p(format!(
                "INSERT INTO {ks}.message_locators (app_id, message_key, sender, time_ms, copies) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            get_locator: p(format!(
                "SELECT sender, time_ms, copies FROM {ks}.message_locators WHERE app_id = ? AND message_key = ?"
            ))
            .await?,
            put_conversation: p(format!(
                "INSERT INTO {ks}.conversations (app_id, user_id, conversation, {CONVERSATION_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            delete_conversation: p(format!(
                "DELETE FROM {ks}.conversations WHERE app_id = ? AND user_id = ? AND conversation = ?"
            ))
            .await?,
            get_conversation: p(format!(
                "SELECT conversation, {CONVERSATION_COLUMNS} FROM {ks}.conversations \
                 WHERE app_id = ? AND user_id = ? AND conversation = ?"
            ))
            .await?,
            list_conversations: p(format!(
                "SELECT conversation, {CONVERSATION_COLUMNS} FROM {ks}.conversations \
                 WHERE app_id = ? AND user_id = ? LIMIT ?"
            ))
            .await?,
            list_conversations_after: p(format!(
                "SELECT conversation, {CONVERSATION_COLUMNS} FROM {ks}.conversations \
                 WHERE app_id = ? AND user_id = ? AND conversation > ? LIMIT ?"
            ))
            .await?,
            put_group: p(format!(
                "INSERT INTO {ks}.group_records (app_id, bucket, group_id, record) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            get_group: p(format!(
                "SELECT record FROM {ks}.group_records WHERE app_id = ? AND bucket = ? AND group_id = ?"
            ))
            .await?,
            list_groups: p(format!("SELECT record FROM {ks}.group_records WHERE app_id = ? AND bucket = ? LIMIT ?"))
                .await?,
            list_groups_after: p(format!(
                "SELECT record FROM {ks}.group_records WHERE app_id = ? AND bucket = ? AND group_id > ? LIMIT ?"
            ))
            .await?,
            put_member: p(format!(
                "INSERT INTO {ks}.group_members (app_id, group_id, member_id, record) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            delete_member: p(format!(
                "DELETE FROM {ks}.group_members WHERE app_id = ? AND group_id = ? AND member_id = ?"
            ))
            .await?,
            get_member: p(format!(
                "SELECT record FROM {ks}.group_members WHERE app_id = ? AND group_id = ? AND member_id = ?"
            ))
            .await?,
            list_members: p(format!("SELECT record FROM {ks}.group_members WHERE app_id = ? AND group_id = ? LIMIT ?"))
                .await?,
            list_members_after: p(format!(
                "SELECT record FROM {ks}.group_members WHERE app_id = ? AND group_id = ? AND member_id > ? LIMIT ?"
            ))
            .await?,
        })
    }
}

/// A bucket-directory row: which timeline, which bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Marker {
    Log(AppId, Owner, SyncKind, i64),
    Conv(AppId, UserId, Conversation, i64),
}

/// Markers this process has written (and when), so each costs one write per bucket.
struct MarkerCache {
    written: Mutex<HashMap<Marker, Instant>>,
    /// With a TTL, markers are rewritten after this long so they outlive their entries.
    refresh: Option<Duration>,
}

impl MarkerCache {
    fn new(refresh: Option<Duration>) -> Self {
        Self { written: Mutex::new(HashMap::new()), refresh }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Marker, Instant>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self, markers: HashSet<Marker>, now: Instant) -> Vec<Marker> {
        let written = self.lock();
        markers
            .into_iter()
            .filter(|m| match (written.get(m), self.refresh) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(at), Some(refresh)) => now.duration_since(*at) >= refresh,
            })
            .collect()
    }

    fn record(&self, markers: &[Marker], at: Instant) {
        let mut written = self.lock();
        if written.len() + markers.len() > MARKER_CACHE_CAPACITY {
            written.clear();
        }
        for m in markers {
            written.insert(m.clone(), at);
        }
    }
}

/// A batch collapsed per key: later ops win, max-ops keep the max. Every CQL statement
/// of a batch may run concurrently, so two writes of one cell must never be sent.
#[derive(Default)]
struct Plan {
    users: HashMap<(AppId, UserId), UserRecord>,
    apps: HashMap<AppId, AppRecord>,
    /// `None`: delete the entry.
    logs: HashMap<(AppId, Owner, SyncKind, Seq), Option<LogEntry>>,
    bounds: HashMap<(AppId, Owner, SyncKind), Seq>,
    dedup: HashMap<String, DedupRecord>,
    acks: HashMap<(AppId, UserId, String, Owner, SyncKind), Seq>,
    msg_index: HashMap<(AppId, u64), MessageLocator>,
    conv: HashSet<(AppId, UserId, Conversation, Seq)>,
    marks: HashMap<(AppId, UserId, Conversation), Seq>,
    /// `None`: delete the record.
    conversations: HashMap<(AppId, UserId, Conversation), Option<ConversationRecord>>,
    groups: HashMap<(AppId, GroupId), GroupRecord>,
    /// `None`: delete the member.
    members: HashMap<(AppId, GroupId, UserId), Option<GroupMemberRecord>>,
}

impl Plan {
    fn new(batch: WriteBatch) -> Plan {
        fn keep_max<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Seq>, k: K, v: Seq) {
            let slot = map.entry(k).or_insert(v);
            *slot = (*slot).max(v);
        }
        let mut plan = Plan::default();
        for op in batch {
            match op {
                WriteOp::PutUser(app, rec) => {
                    plan.users.insert((app, rec.user_id.clone()), rec);
                }
                WriteOp::AppendLog { app, owner, kind, entry } => {
                    plan.logs.insert((app, owner, kind, entry.seq), Some(entry));
                }
                WriteOp::DeleteLogEntry { app, owner, kind, seq } => {
                    plan.logs.insert((app, owner, kind, seq), None);
                }
                WriteOp::SetSeqBound { app, owner, kind, bound } => {
                    keep_max(&mut plan.bounds, (app, owner, kind), bound)
                }
                WriteOp::PutDedup(rec) => {
                    plan.dedup.insert(rec.key.clone(), rec);
                }
                WriteOp::PutApp(rec) => {
                    plan.apps.insert(rec.app_id, rec);
                }
                WriteOp::PutDeviceAck { app, user, device_id, owner, kind, seq } => {
                    keep_max(&mut plan.acks, (app, user, device_id, owner, kind), seq)
                }
                WriteOp::PutMessageIndex { app, message_key, loc } => {
                    plan.msg_index.insert((app, message_key), loc);
                }
                WriteOp::AppendConvIndex { app, user, conversation, seq } => {
                    plan.conv.insert((app, user, conversation, seq));
                }
                WriteOp::PutReadMark { app, user, conversation, seq } => {
                    keep_max(&mut plan.marks, (app, user, conversation), seq)
                }
                WriteOp::PutConversation { app, user, record } => {
                    plan.conversations.insert((app, user, record.conversation.clone()), Some(record));
                }
                WriteOp::DeleteConversation { app, user, conversation } => {
                    plan.conversations.insert((app, user, conversation), None);
                }
                WriteOp::PutGroup(app, rec) => {
                    plan.groups.insert((app, rec.group_id.clone()), rec);
                }
                WriteOp::PutGroupMember { app, group, member } => {
                    plan.members.insert((app, group, member.member_id.clone()), Some(member));
                }
                WriteOp::DeleteGroupMember { app, group, member } => {
                    plan.members.insert((app, group, member), None);
                }
            }
        }
        plan
    }

    fn markers(&self, bits: BucketBits) -> HashSet<Marker> {
        // A delete needs no bucket marker (an absent bucket reads as empty).
        let logs = self
            .logs
            .iter()
            .filter(|(_, e)| e.is_some())
            .map(|(k, _)| k)
            .map(|(app, owner, kind, seq)| Marker::Log(*app, owner.clone(), *kind, bucket_of(seq.0, bits.log)));
        let convs = self
            .conv
            .iter()
            .map(|(app, user, conv, seq)| Marker::Conv(*app, user.clone(), conv.clone(), bucket_of(seq.0, bits.conv)));
        logs.chain(convs).collect()
    }
}

type Pending<'a> = BoxFuture<'a, Result<(), StoreError>>;

/// Runs one phase: every statement concurrently (bounded), all to completion; the first
/// error, if any.
async fn run_phase(statements: Vec<Pending<'_>>) -> Result<(), StoreError> {
    if statements.is_empty() {
        return Ok(());
    }
    let results: Vec<Result<(), StoreError>> = stream::iter(statements).buffer_unordered(MAX_IN_FLIGHT).collect().await;
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// One timeline to page through: a per-kind log or a conversation index.
#[derive(Clone, Copy)]
enum Timeline<'a> {
    Log(AppId, &'a Owner, SyncKind),
    Conv(AppId, &'a UserId, &'a Conversation),
}

/// One row of a timeline (a conversation index row has only its seq).
struct Row {
    seq: u64,
    time_ms: u64,
    payload: Bytes,
}

/// The group and member records of a plan, encoded (before anything is sent, so an
/// encoding failure writes nothing).
struct GroupJson<'a> {
    groups: Vec<(AppId, &'a str, String)>,
    /// `None`: delete.
    members: Vec<(AppId, &'a str, &'a str, Option<String>)>,
}

impl<'a> GroupJson<'a> {
    fn new(plan: &'a Plan) -> Result<Self, StoreError> {
        fn json<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
            serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("encoding {what}: {e}")))
        }
        let mut groups = Vec::with_capacity(plan.groups.len());
        for ((app, g), rec) in &plan.groups {
            groups.push((*app, g.as_str(), json("a group record", rec)?));
        }
        let mut members = Vec::with_capacity(plan.members.len());
        for ((app, g, m), rec) in &plan.members {
            let encoded = rec.as_ref().map(|r| json("a member record", r)).transpose()?;
            members.push((*app, g.as_str(), m.as_str(), encoded));
        }
        Ok(Self { groups, members })
    }
}

type UserLookup<'a> = Result<(&'a UserId, Option<UserRecord>), StoreError>;

impl ScyllaStore {
    /// Waits for a slot among the `max_in_flight_requests` requests this store may have
    /// outstanding. Without the bound, overload made the driver fail requests with
    /// "Unable to allocate stream id" (a connection carries at most 32,768 streams)
    /// instead of slowing down; with it, excess requests wait here, and logic's own
    /// bounds (in-flight sends per link) turn lasting overload into fast refusals.
    async fn request_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed, so acquiring cannot fail.
        self.requests.acquire().await.expect("request semaphore is never closed")
    }

    fn get_user<'a>(&'a self, app: AppId, id: &'a UserId) -> BoxFuture<'a, UserLookup<'a>> {
        async move {
            let _permit = self.request_permit().await;
            let rows = self
                .session
                .execute_unpaged(&self.st.get_user, (self.app(app), id.as_str()))
                .await
                .map_err(|e| driver_error("reading a user", e))?
                .into_rows_result()
                .map_err(|e| decode_error("users", e))?;
            let rec = match rows.maybe_first_row::<(String,)>().map_err(|e| decode_error("users", e))? {
                None => None,
                Some((json,)) => Some(
                    serde_json::from_str::<UserRecord>(&json)
                        .map_err(|e| StoreError::corrupt(format!("user {id} of app {app}: {e}")))?,
                ),
            };
            Ok((id, rec))
        }
        .boxed()
    }

    fn get_member<'a>(
        &'a self,
        app: AppId,
        group: &'a GroupId,
        m: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<GroupMemberRecord>, StoreError>> {
        let values = (self.app(app), group.as_str(), m.as_str());
        self.json_row(&self.st.get_member, values, "group_members", move || format!("member {m} of group {group}"))
            .boxed()
    }

    /// The JSON `record` of the one row `st` selects, decoded (`None`: no row); `what`
    /// names the row in errors.
    async fn json_row<T: serde::de::DeserializeOwned>(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        table: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Option<T>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| driver_error(&format!("reading {table}"), e))?
            .into_rows_result()
            .map_err(|e| decode_error(table, e))?;
        match rows.maybe_first_row::<(String,)>().map_err(|e| decode_error(table, e))? {
            None => Ok(None),
            Some((json,)) => {
                serde_json::from_str(&json).map(Some).map_err(|e| StoreError::corrupt(format!("{}: {e}", what())))
            }
        }
    }

    /// Up to `limit` groups of one bucket, after `after` (which must be in it).
    async fn list_group_bucket(
        &self,
        app: AppId,
        bucket: i32,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<GroupRecord>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let (what, table) = ("listing groups", "group_records");
        match after {
            None => self.json_page(&self.st.list_groups, (self.app(app), bucket, limit), what, table).await,
            Some(g) => {
                let values = (self.app(app), bucket, g.as_str(), limit);
                self.json_page(&self.st.list_groups_after, values, what, table).await
            }
        }
    }

    /// Every row of a paged one-column JSON query (`st` selects `record` only), decoded.
    /// The one shape of the group and member listings: the first page's statement or
    /// the one starting after a key, both read to the end of their `LIMIT`.
    async fn json_page<T: serde::de::DeserializeOwned>(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        what: &'static str,
        table: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let _permit = self.request_permit().await;
        let pager = self.session.execute_iter(st.clone(), values).await.map_err(|e| driver_error(what, e))?;
        let mut rows = pager.rows_stream::<(String,)>().map_err(|e| decode_error(table, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            let (json,) = row.map_err(|e| driver_error(table, e))?;
            out.push(serde_json::from_str(&json).map_err(|e| StoreError::corrupt(format!("{table}: {e}")))?);
        }
        Ok(out)
    }

    fn exec<'a>(
        &'a self,
        what: &'static str,
        st: &'a PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow + Send + 'a,
    ) -> Pending<'a> {
        async move {
            let _permit = self.request_permit().await;
            self.session.execute_unpaged(st, values).await.map_err(|e| driver_error(what, e))?;
            Ok(())
        }
        .boxed()
    }

    fn marker_write<'a>(&'a self, m: &'a Marker) -> Pending<'a> {
        match m {
            Marker::Log(app, owner, kind, bucket) => {
                let ttl = if *kind == SyncKind::Message { self.marker_ttl } else { 0 };
                self.exec(
                    "writing a timeline bucket marker",
                    &self.st.put_log_bucket,
                    (self.app(*app), owner_key(owner), kind_cql(*kind), *bucket, ttl),
                )
            }
            Marker::Conv(app, user, conv, bucket) => self.exec(
                "writing a conversation bucket marker",
                &self.st.put_conv_bucket,
                (self.app(*app), user.as_str(), conv_key(conv), *bucket, self.marker_ttl),
            ),
        }
    }

    fn content_writes<'a>(
        &'a self,
        plan: &'a Plan,
        users: &'a [(AppId, &'a str, String)],
        groups: &'a GroupJson<'a>,
    ) -> Vec<Pending<'a>> {
        let bits = self.bits;
        let mut out: Vec<Pending<'a>> = Vec::new();
        for (app, group, json) in &groups.groups {
            let values = (self.app(*app), group_bucket(group), *group, json.as_str());
            out.push(self.exec("writing a group", &self.st.put_group, values));
        }
        for (app, group, member, json) in &groups.members {
            let (app, group, member) = (self.app(*app), *group, *member);
            out.push(match json {
                Some(json) => {
                    self.exec("writing a group member", &self.st.put_member, (app, group, member, json.as_str()))
                }
                None => self.exec("deleting a group member", &self.st.delete_member, (app, group, member)),
            });
        }
        for (app, user, json) in users {
            out.push(self.exec("writing a user", &self.st.put_user, (self.app(*app), *user, json.as_str())));
        }
        for rec in plan.apps.values() {
            out.push(self.exec(
                "writing an app",
                &self.st.put_app,
                (self.app(rec.app_id), rec.secret.as_str(), to_cql(rec.created_ms)),
            ));
        }
        for ((app, owner, kind, seq), e) in &plan.logs {
            let Some(e) = e else {
                out.push(self.exec(
                    "deleting a log entry",
                    &self.st.delete_log,
                    (self.app(*app), owner_key(owner), kind_cql(*kind), bucket_of(seq.0, bits.log), to_cql(seq.0)),
                ));
                continue;
            };
            out.push(self.exec(
                "writing a log entry",
                &self.st.put_log,
                (
                    self.app(*app),
                    owner_key(owner),
                    kind_cql(*kind),
                    bucket_of(seq.0, bits.log),
                    to_cql(seq.0),
                    to_cql(e.time_ms),
                    e.payload.as_ref(),
                    self.ttl_for(*kind),
                ),
            ));
        }
        for (app, user, conv, seq) in &plan.conv {
            out.push(self.exec(
                "writing the conversation index",
                &self.st.put_conv,
                (
                    self.app(*app),
                    user.as_str(),
                    conv_key(conv),
                    bucket_of(seq.0, bits.conv),
                    to_cql(seq.0),
                    self.message_ttl,
                ),
            ));
        }
        for ((app, key), loc) in &plan.msg_index {
            let copies: Vec<(String, i64)> =
                loc.copies.iter().map(|c| (owner_key(&c.owner), to_cql(c.seq.0))).collect();
            out.push(self.exec(
                "writing a message locator",
                &self.st.put_locator,
                (self.app(*app), to_cql(*key), loc.sender.as_str(), to_cql(loc.time_ms), copies),
            ));
        }
        for ((app, owner, kind), bound) in &plan.bounds {
            out.push(self.exec(
                "writing a seq bound",
                &self.st.set_bound,
                (max_register_ts(bound.0), to_cql(bound.0), self.app(*app), owner_key(owner), kind_cql(*kind)),
            ));
        }
        for ((app, user, conv), rec) in &plan.conversations {
            let (app, user, conv) = (self.app(*app), user.as_str(), conv_key(conv));
            out.push(match rec {
                None => self.exec("deleting a conversation record", &self.st.delete_conversation, (app, user, conv)),
                Some(r) => {
                    let last = r.last.as_ref();
                    self.exec(
                        "writing a conversation record",
                        &self.st.put_conversation,
                        (
                            app,
                            user,
                            conv,
                            last.map(|l| to_cql(l.message_key)),
                            last.map(|l| to_cql(l.seq.0)),
                            last.map(|l| to_cql(l.time_ms)),
                            last.map(|l| l.sender.as_str()),
                            last.map(|l| l.preview.as_str()),
                            to_cql(r.read_seq.0),
                            r.is_top,
                            r.is_mute,
                            r.extra.as_str(),
                            to_cql(r.sync_seq.0),
                            to_cql(r.updated_ms),
                        ),
                    )
                }
            });
        }
        out
    }

    fn progress_writes<'a>(&'a self, plan: &'a Plan) -> Vec<Pending<'a>> {
        let mut out: Vec<Pending<'a>> = Vec::new();
        for ((app, user, device, owner, kind), seq) in &plan.acks {
            let (ts, value, app) = (max_register_ts(seq.0), to_cql(seq.0), self.app(*app));
            out.push(if owner.as_user() == Some(user) {
                self.exec(
                    "writing a device ack",
                    &self.st.put_ack,
                    (ts, value, app, user.as_str(), device.as_str(), kind_cql(*kind)),
                )
            } else {
                self.exec(
                    "writing a device ack of another owner's log",
                    &self.st.put_log_ack,
                    (ts, value, app, user.as_str(), device.as_str(), owner_key(owner), kind_cql(*kind)),
                )
            });
        }
        for ((app, user, conv), seq) in &plan.marks {
            out.push(self.exec(
                "writing a read mark",
                &self.st.put_mark,
                (max_register_ts(seq.0), to_cql(seq.0), self.app(*app), user.as_str(), conv_key(conv)),
            ));
        }
        out
    }

    fn dedup_writes<'a>(&'a self, plan: &'a Plan, now: u64) -> Vec<Pending<'a>> {
        plan.dedup
            .values()
            .map(|rec| {
                self.exec(
                    "writing a dedup record",
                    &self.st.put_dedup,
                    (
                        self.dedup_key(&rec.key).into_owned(),
                        rec.value.as_ref(),
                        to_cql(rec.expires_ms),
                        dedup_ttl(rec.expires_ms, now),
                    ),
                )
            })
            .collect()
    }

    /// Up to `n` non-empty buckets of `t` from bucket `from` on, in scan order.
    async fn buckets(&self, t: Timeline<'_>, from: i64, forward: bool, n: usize) -> Result<Vec<i64>, StoreError> {
        let n = n as i32;
        let result = match (t, forward) {
            (Timeline::Log(app, owner, kind), true) => {
                let _permit = self.request_permit().await;
                self.session
                    .execute_unpaged(&self.st.log_dir_fwd, (self.app(app), owner_key(owner), kind_cql(kind), from, n))
                    .await
            }
            (Timeline::Log(app, owner, kind), false) => {
                let _permit = self.request_permit().await;
                self.session
                    .execute_unpaged(&self.st.log_dir_back, (self.app(app), owner_key(owner), kind_cql(kind), from, n))
                    .await
            }
            (Timeline::Conv(app, user, conv), false) => {
                let _permit = self.request_permit().await;
                self.session
                    .execute_unpaged(&self.st.conv_dir_back, (self.app(app), user.as_str(), conv_key(conv), from, n))
                    .await
            }
            (Timeline::Conv(..), true) => unreachable!("the conversation index is only read backwards"),
        };
        let rows = result
            .map_err(|e| driver_error("reading a bucket directory", e))?
            .into_rows_result()
            .map_err(|e| decode_error("bucket directory", e))?;
        let rows = rows.rows::<(i64,)>().map_err(|e| decode_error("bucket directory", e))?;
        rows.map(|r| r.map(|(b,)| b).map_err(|e| decode_error("bucket directory", e))).collect()
    }

    /// Up to `n` rows of bucket `b` of `t` at or beyond `bound` in scan order.
    async fn bucket_rows(
        &self,
        t: Timeline<'_>,
        b: i64,
        bound: u64,
        forward: bool,
        n: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let n = n as i32;
        match t {
            Timeline::Log(app, owner, kind) => {
                let st = if forward { &self.st.log_fwd } else { &self.st.log_back };
                let _permit = self.request_permit().await;
                let rows = self
                    .session
                    .execute_unpaged(st, (self.app(app), owner_key(owner), kind_cql(kind), b, to_cql(bound), n))
                    .await
                    .map_err(|e| driver_error("reading a log", e))?
                    .into_rows_result()
                    .map_err(|e| decode_error("log_entries", e))?;
                let typed = rows.rows::<(i64, i64, &[u8])>().map_err(|e| decode_error("log_entries", e))?;
                typed
                    .map(|r| {
                        let (seq, time_ms, payload) = r.map_err(|e| decode_error("log_entries", e))?;
                        Ok(Row {
                            seq: from_cql(seq),
                            time_ms: from_cql(time_ms),
                            payload: Bytes::copy_from_slice(payload),
                        })
                    })
                    .collect()
            }
            Timeline::Conv(app, user, conv) => {
                assert!(!forward, "the conversation index is only read backwards");
                let _permit = self.request_permit().await;
                let rows = self
                    .session
                    .execute_unpaged(
                        &self.st.conv_back,
                        (self.app(app), user.as_str(), conv_key(conv), b, to_cql(bound), n),
                    )
                    .await
                    .map_err(|e| driver_error("reading a conversation index", e))?
                    .into_rows_result()
                    .map_err(|e| decode_error("conv_index", e))?;
                let typed = rows.rows::<(i64,)>().map_err(|e| decode_error("conv_index", e))?;
                typed
                    .map(|r| {
                        let (seq,) = r.map_err(|e| decode_error("conv_index", e))?;
                        Ok(Row { seq: from_cql(seq), time_ms: 0, payload: Bytes::new() })
                    })
                    .collect()
            }
        }
    }

    /// Up to `limit` rows of `t` from seq `start` (inclusive) on, ascending when
    /// `forward`, else descending: directory page by directory page, bucket by bucket,
    /// query by query, never past `limit`.
    async fn scan(&self, t: Timeline<'_>, start: u64, forward: bool, limit: usize) -> Result<Vec<Row>, StoreError> {
        let bits = match t {
            Timeline::Log(..) => self.bits.log,
            Timeline::Conv(..) => self.bits.conv,
        };
        let mut out: Vec<Row> = Vec::new();
        let mut dir_from = Some(bucket_of(start, bits));
        while out.len() < limit {
            let Some(from) = dir_from else { break };
            let buckets = self.buckets(t, from, forward, BUCKETS_PER_QUERY).await?;
            dir_from = match buckets.last() {
                Some(&last) if buckets.len() == BUCKETS_PER_QUERY => {
                    if forward {
                        last.checked_add(1)
                    } else {
                        last.checked_sub(1).filter(|b| *b >= 0)
                    }
                }
                _ => None,
            };
            for b in buckets {
                let (first, last) = bucket_span(b, bits);
                // The bound inside this bucket: `start` if it falls here, else the edge.
                let mut bound = if forward { start.max(first) } else { start.min(last) };
                loop {
                    let want = (limit - out.len()).min(ROWS_PER_QUERY);
                    let rows = self.bucket_rows(t, b, bound, forward, want).await?;
                    let got = rows.len();
                    let next = rows.last().map(|r| r.seq);
                    out.extend(rows);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    match next {
                        Some(seq) if got == want => {
                            let step = if forward { seq.checked_add(1) } else { seq.checked_sub(1) };
                            match step.filter(|s| (first..=last).contains(s)) {
                                Some(s) => bound = s,
                                None => break,
                            }
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        let plan = Plan::new(batch);
        // Encode before sending anything, so an encoding failure writes nothing.
        let users: Vec<(AppId, &str, String)> = plan
            .users
            .iter()
            .map(|((app, user), rec)| {
                serde_json::to_string(rec)
                    .map(|json| (*app, user.as_str(), json))
                    .map_err(|e| StoreError::Backend(format!("encoding user {user}: {e}")))
            })
            .collect::<Result<_, _>>()?;

        let groups = GroupJson::new(&plan)?;

        let now = Instant::now();
        let markers = self.markers.missing(plan.markers(self.bits), now);
        run_phase(markers.iter().map(|m| self.marker_write(m)).collect()).await?;
        self.markers.record(&markers, now);

        run_phase(self.content_writes(&plan, &users, &groups)).await?;
        run_phase(self.progress_writes(&plan)).await?;
        run_phase(self.dedup_writes(&plan, now_ms())).await
    }

    async fn get_users(&self, app: AppId, ids: &[UserId]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        let unique: HashSet<&UserId> = ids.iter().collect();
        let lookups: Vec<BoxFuture<'_, UserLookup<'_>>> = unique.into_iter().map(|id| self.get_user(app, id)).collect();
        let fetched: Vec<UserLookup<'_>> = stream::iter(lookups).buffer_unordered(MAX_IN_FLIGHT).collect().await;
        let mut found: HashMap<&UserId, Option<UserRecord>> = HashMap::with_capacity(fetched.len());
        for r in fetched {
            let (id, rec) = r?;
            found.insert(id, rec);
        }
        Ok(ids.iter().map(|id| found.get(id).cloned().flatten()).collect())
    }

    async fn read_log(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let Some(start) = after.checked_next() else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self.scan(Timeline::Log(app, owner, kind), start.0, true, limit).await?;
        Ok(rows.into_iter().map(|r| LogEntry { seq: Seq(r.seq), time_ms: r.time_ms, payload: r.payload }).collect())
    }

    async fn read_log_back(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let Some(start) = before.0.checked_sub(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self.scan(Timeline::Log(app, owner, kind), start, false, limit).await?;
        Ok(rows.into_iter().map(|r| LogEntry { seq: Seq(r.seq), time_ms: r.time_ms, payload: r.payload }).collect())
    }

    async fn get_log_entry(
        &self,
        app: AppId,
        owner: &Owner,
        kind: SyncKind,
        seq: Seq,
    ) -> Result<Option<LogEntry>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(
                &self.st.get_log,
                (self.app(app), owner_key(owner), kind_cql(kind), bucket_of(seq.0, self.bits.log), to_cql(seq.0)),
            )
            .await
            .map_err(|e| driver_error("reading a log entry", e))?
            .into_rows_result()
            .map_err(|e| decode_error("log_entries", e))?;
        let row = rows.maybe_first_row::<(i64, i64, &[u8])>().map_err(|e| decode_error("log_entries", e))?;
        Ok(row.map(|(s, time_ms, payload)| LogEntry {
            seq: Seq(from_cql(s)),
            time_ms: from_cql(time_ms),
            payload: Bytes::copy_from_slice(payload),
        }))
    }

    async fn seq_bounds(&self, app: AppId, owner: &Owner) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(&self.st.get_bounds, (self.app(app), owner_key(owner)))
            .await
            .map_err(|e| driver_error("reading seq bounds", e))?
            .into_rows_result()
            .map_err(|e| decode_error("seq_bounds", e))?;
        let typed = rows.rows::<(i8, Option<i64>)>().map_err(|e| decode_error("seq_bounds", e))?;
        let mut out = Vec::new();
        for r in typed {
            let (kind, bound) = r.map_err(|e| decode_error("seq_bounds", e))?;
            if let Some(bound) = bound {
                out.push((kind_from_cql(kind, "seq_bounds")?, Seq(from_cql(bound))));
            }
        }
        out.sort_unstable_by_key(|(k, _)| *k);
        Ok(out)
    }

    async fn get_dedup(&self, key: &str, now_ms: u64) -> Result<Option<DedupRecord>, StoreError> {
        check_dedup_key(key)?;
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(&self.st.get_dedup, (self.dedup_key(key).as_ref(),))
            .await
            .map_err(|e| driver_error("reading a dedup record", e))?
            .into_rows_result()
            .map_err(|e| decode_error("dedup", e))?;
        let row = rows.maybe_first_row::<(Option<&[u8]>, Option<i64>)>().map_err(|e| decode_error("dedup", e))?;
        Ok(match row {
            Some((value, Some(expires))) if from_cql(expires) > now_ms => Some(DedupRecord {
                key: key.to_owned(),
                value: value.map(Bytes::copy_from_slice).unwrap_or_default(),
                expires_ms: from_cql(expires),
            }),
            _ => None,
        })
    }

    async fn get_app(&self, app: AppId) -> Result<Option<AppRecord>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(&self.st.get_app, (self.app(app),))
            .await
            .map_err(|e| driver_error("reading an app", e))?
            .into_rows_result()
            .map_err(|e| decode_error("apps", e))?;
        let row = rows.maybe_first_row::<(Option<String>, Option<i64>)>().map_err(|e| decode_error("apps", e))?;
        Ok(row.map(|(secret, created_ms)| AppRecord {
            app_id: app,
            secret: secret.unwrap_or_default(),
            created_ms: created_ms.map_or(0, from_cql),
        }))
    }

    async fn get_device_acks(&self, app: AppId, user: &UserId, device_id: &str) -> Result<Vec<DeviceAck>, StoreError> {
        check_device_id(device_id)?;
        let own = Owner::User(user.clone());
        let mut out = Vec::new();
        {
            let _permit = self.request_permit().await;
            let rows = self
                .session
                .execute_unpaged(&self.st.get_acks, (self.app(app), user.as_str(), device_id))
                .await
                .map_err(|e| driver_error("reading device acks", e))?
                .into_rows_result()
                .map_err(|e| decode_error("device_acks", e))?;
            for r in rows.rows::<(i8, Option<i64>)>().map_err(|e| decode_error("device_acks", e))? {
                let (kind, seq) = r.map_err(|e| decode_error("device_acks", e))?;
                if let Some(seq) = seq {
                    out.push(DeviceAck {
                        owner: own.clone(),
                        kind: kind_from_cql(kind, "device_acks")?,
                        seq: Seq(from_cql(seq)),
                    });
                }
            }
        }
        out.sort_unstable_by_key(|a| a.kind);
        // Other owners' logs (group timelines): paged, a user may read very many groups.
        let _permit = self.request_permit().await;
        let mut rows = self
            .session
            .execute_iter(self.st.get_log_acks.clone(), (self.app(app), user.as_str(), device_id))
            .await
            .map_err(|e| driver_error("reading device acks", e))?
            .rows_stream::<(String, i8, Option<i64>)>()
            .map_err(|e| decode_error("device_log_acks", e))?;
        while let Some(row) = rows.next().await {
            let (owner, kind, seq) = row.map_err(|e| driver_error("reading device acks", e))?;
            if let Some(seq) = seq {
                out.push(DeviceAck {
                    owner: owner_from_cql(owner, "device_log_acks.owner")?,
                    kind: kind_from_cql(kind, "device_log_acks")?,
                    seq: Seq(from_cql(seq)),
                });
            }
        }
        Ok(out)
    }

    async fn get_message_index(&self, app: AppId, message_key: u64) -> Result<Option<MessageLocator>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(&self.st.get_locator, (self.app(app), to_cql(message_key)))
            .await
            .map_err(|e| driver_error("reading a message locator", e))?
            .into_rows_result()
            .map_err(|e| decode_error("message_locators", e))?;
        type LocatorRow = (Option<String>, Option<i64>, Option<Vec<(String, i64)>>);
        let row = rows.maybe_first_row::<LocatorRow>().map_err(|e| decode_error("message_locators", e))?;
        if let Some((sender, time_ms, copies)) = row {
            let sender = sender.ok_or_else(|| StoreError::corrupt("message_locators: no sender"))?;
            let copies = copies
                .unwrap_or_default()
                .into_iter()
                .map(|(owner, seq)| {
                    Ok(MessageCopy {
                        owner: owner_from_cql(owner, "message_locators.copies")?,
                        seq: Seq(from_cql(seq)),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            if copies.is_empty() {
                return Err(StoreError::corrupt("message_locators: no copies"));
            }
            return Ok(Some(MessageLocator {
                sender: user_from_cql(sender, "message_locators.sender")?,
                time_ms: time_ms.map_or(0, from_cql),
                copies,
            }));
        }
        // Not there: a 1:1 message stored before migration 002 may be in message_index.
        let rows = self
            .session
            .execute_unpaged(&self.st.get_msg_index, (self.app(app), to_cql(message_key)))
            .await
            .map_err(|e| driver_error("reading a message locator", e))?
            .into_rows_result()
            .map_err(|e| decode_error("message_index", e))?;
        let row =
            rows.maybe_first_row::<(String, String, i64, i64, i64)>().map_err(|e| decode_error("message_index", e))?;
        let Some((from, to, from_seq, to_seq, time_ms)) = row else { return Ok(None) };
        Ok(Some(MessageLocator::single(
            user_from_cql(from, "message_index.from_user")?,
            Seq(from_cql(from_seq)),
            user_from_cql(to, "message_index.to_user")?,
            Seq(from_cql(to_seq)),
            from_cql(time_ms),
        )))
    }

    async fn read_conv_back(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StoreError> {
        let Some(start) = before.0.checked_sub(1) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self.scan(Timeline::Conv(app, user, conversation), start, false, limit).await?;
        Ok(rows.into_iter().map(|r| Seq(r.seq)).collect())
    }

    async fn get_read_marks(&self, app: AppId, user: &UserId) -> Result<Vec<(Conversation, Seq)>, StoreError> {
        // Paged: a user may have read marks on very many conversations.
        let _permit = self.request_permit().await;
        let mut rows = self
            .session
            .execute_iter(self.st.get_marks.clone(), (self.app(app), user.as_str()))
            .await
            .map_err(|e| driver_error("reading read marks", e))?
            .rows_stream::<(String, Option<i64>)>()
            .map_err(|e| decode_error("read_marks", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            let (conv, seq) = row.map_err(|e| driver_error("reading read marks", e))?;
            if let Some(seq) = seq {
                out.push((conv_from_cql(conv, "read_marks.peer_id")?, Seq(from_cql(seq))));
            }
        }
        Ok(out)
    }

    async fn get_conversation(
        &self,
        app: AppId,
        user: &UserId,
        conversation: &Conversation,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let _permit = self.request_permit().await;
        let rows = self
            .session
            .execute_unpaged(&self.st.get_conversation, (self.app(app), user.as_str(), conv_key(conversation)))
            .await
            .map_err(|e| driver_error("reading a conversation record", e))?
            .into_rows_result()
            .map_err(|e| decode_error("conversations", e))?;
        let row = rows.maybe_first_row::<ConversationRow>().map_err(|e| decode_error("conversations", e))?;
        row.map(conversation_from_row).transpose()
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
        // CQL's LIMIT is an int; a page is far smaller anyway.
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let _permit = self.request_permit().await;
        let result = match after {
            None => {
                self.session
                    .execute_iter(self.st.list_conversations.clone(), (self.app(app), user.as_str(), limit))
                    .await
            }
            Some(c) => {
                self.session
                    .execute_iter(
                        self.st.list_conversations_after.clone(),
                        (self.app(app), user.as_str(), conv_key(c), limit),
                    )
                    .await
            }
        };
        let mut rows = result
            .map_err(|e| driver_error("listing conversation records", e))?
            .rows_stream::<ConversationRow>()
            .map_err(|e| decode_error("conversations", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(conversation_from_row(row.map_err(|e| driver_error("listing conversation records", e))?)?);
        }
        Ok(out)
    }

    async fn get_group(&self, app: AppId, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        let values = (self.app(app), group_bucket(group.as_str()), group.as_str());
        self.json_row(&self.st.get_group, values, "group_records", || format!("group {group} of app {app}")).await
    }

    async fn list_groups(
        &self,
        app: AppId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<GroupRecord>, StoreError> {
        // The order is (bucket, group id): from `after`'s bucket on, the buckets in order,
        // a few read at once (a page of a small app spans many nearly empty buckets).
        let mut out = Vec::new();
        let mut bucket = after.map_or(0, |g| group_bucket(g.as_str()));
        let mut after = after;
        while out.len() < limit && bucket < GROUP_BUCKETS {
            let want = limit - out.len();
            let wave = (bucket..(bucket + GROUP_BUCKET_WAVE).min(GROUP_BUCKETS))
                .map(|b| self.list_group_bucket(app, b, if b == bucket { after } else { None }, want));
            for page in futures_util::future::join_all(wave).await {
                out.extend(page?);
            }
            bucket += GROUP_BUCKET_WAVE;
            after = None;
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn get_group_members(
        &self,
        app: AppId,
        group: &GroupId,
        members: &[UserId],
    ) -> Result<Vec<Option<GroupMemberRecord>>, StoreError> {
        let lookups: Vec<BoxFuture<'_, Result<Option<GroupMemberRecord>, StoreError>>> =
            members.iter().map(|m| self.get_member(app, group, m)).collect();
        // `buffered` keeps the input order.
        stream::iter(lookups).buffered(MAX_IN_FLIGHT).collect::<Vec<_>>().await.into_iter().collect()
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
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let (what, table) = ("listing group members", "group_members");
        match after {
            None => self.json_page(&self.st.list_members, (self.app(app), group.as_str(), limit), what, table).await,
            Some(m) => {
                let values = (self.app(app), group.as_str(), m.as_str(), limit);
                self.json_page(&self.st.list_members_after, values, what, table).await
            }
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // An acknowledged write is already in the replicas' commit logs; see the module doc.
        Ok(())
    }
}

/// Buckets of an app's groups (migration 004): fixed, as rows are placed by it.
const GROUP_BUCKETS: i32 = 64;
/// Buckets read at once while listing groups.
const GROUP_BUCKET_WAVE: i32 = 8;

/// A group's bucket: FNV-1a of its id modulo [`GROUP_BUCKETS`] (stable across builds
/// and platforms, unlike std's hasher).
pub(crate) fn group_bucket(group: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % GROUP_BUCKETS as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_buckets_never_change() {
        // Rows are placed by these values: a change of the function strands every group.
        assert_eq!(group_bucket(""), 5);
        assert_eq!(group_bucket("a"), 44);
        assert_eq!(group_bucket("g1"), 21);
        let all: std::collections::HashSet<i32> = (0..10_000).map(|i| group_bucket(&format!("g{i}"))).collect();
        assert_eq!(all.len(), GROUP_BUCKETS as usize, "ids spread over every bucket");
    }

    #[test]
    fn max_register_timestamps_follow_value_order() {
        let values = [0, 1, 2, 1000, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, u64::MAX - 1, u64::MAX];
        for w in values.windows(2) {
            assert!(max_register_ts(w[0]) <= max_register_ts(w[1]), "{w:?}");
        }
        // Never in the future (ScyllaDB refuses > 3 days ahead), never the reserved MIN.
        assert!(values.iter().all(|&v| (i64::MIN + 1..=0).contains(&max_register_ts(v))));
        assert_eq!(max_register_ts(u64::MAX), 0);
        assert_eq!(max_register_ts(0), max_register_ts(1));
        assert!(max_register_ts(1) < max_register_ts(2));
    }

    #[test]
    fn buckets_cover_the_u64_range_and_keep_one_sign() {
        for bits in [1u8, 4, 16, 20, 62] {
            for seq in [0, 1, 65_535, 65_536, 1 << 40, (1 << 63) - 1, 1 << 63, u64::MAX] {
                let b = bucket_of(seq, bits);
                assert!(b >= 0);
                let (first, last) = bucket_span(b, bits);
                assert!((first..=last).contains(&seq), "{seq} in {b} with {bits} bits");
                // Every seq of a bucket has one sign as i64, so CQL bigint order is seq order.
                assert_eq!(to_cql(first) < 0, to_cql(last) < 0);
            }
        }
        assert_eq!(bucket_span(1, 16), (65_536, 131_071));
        assert_eq!(LOG_BUCKET_SEQS, 16_384);
    }

    #[test]
    fn owner_and_conversation_keys_roundtrip_and_keep_users_bare() {
        let (u, g) = (UserId::new("ab").unwrap(), GroupId::new("ab").unwrap());
        assert_eq!(owner_key(&Owner::User(u.clone())), "ab");
        assert_eq!(owner_key(&Owner::Group(g.clone())), "#ab");
        assert_eq!(conv_key(&Conversation::Single(u.clone())), "ab");
        assert_eq!(conv_key(&Conversation::Group(g.clone())), "#ab");
        assert_eq!(owner_from_cql("#ab".into(), "t").unwrap(), Owner::Group(g.clone()));
        assert_eq!(conv_from_cql("ab".into(), "t").unwrap(), Conversation::Single(u));
        for bad in ["", "#", "##a", "a b", "#a b"] {
            assert!(owner_from_cql(bad.into(), "t").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dedup_ttl_covers_the_window_and_grace() {
        assert_eq!(dedup_ttl(10_000, 20_000), DEDUP_TTL_GRACE_SECS as i32);
        assert_eq!(dedup_ttl(20_001, 10_000), 11 + DEDUP_TTL_GRACE_SECS as i32);
        assert_eq!(dedup_ttl(u64::MAX, 0), 0);
    }

    #[test]
    fn plan_keeps_the_last_overwrite_and_the_max() {
        let u = UserId::new("u").unwrap();
        let entry = |p: &'static str| LogEntry { seq: Seq(3), time_ms: 0, payload: Bytes::from_static(p.as_bytes()) };
        let mut b = WriteBatch::new();
        let conv = Conversation::Single(u.clone());
        b.append_log(AppId(1), u.clone(), SyncKind::Message, entry("first"))
            .append_log(AppId(1), u.clone(), SyncKind::Message, entry("second"))
            .set_seq_bound(AppId(1), u.clone(), SyncKind::Message, Seq(9))
            .set_seq_bound(AppId(1), u.clone(), SyncKind::Message, Seq(4))
            .append_conv_index(AppId(1), u.clone(), conv.clone(), Seq(3))
            .append_conv_index(AppId(1), u.clone(), conv, Seq(3));
        let plan = Plan::new(b);
        assert_eq!(plan.logs.len(), 1);
        assert_eq!(plan.logs.values().next().unwrap().as_ref().unwrap().payload, Bytes::from_static(b"second"));
        assert_eq!(plan.bounds.values().copied().collect::<Vec<_>>(), vec![Seq(9)]);
        assert_eq!(plan.conv.len(), 1);
        assert_eq!(plan.markers(BucketBits::DEFAULT).len(), 2);
    }

    #[test]
    fn marker_cache_forgets_when_full_and_refreshes_with_ttl() {
        let m = Marker::Log(AppId(1), Owner::User(UserId::new("u").unwrap()), SyncKind::Message, 0);
        let t0 = Instant::now();
        let cache = MarkerCache::new(None);
        assert_eq!(cache.missing(HashSet::from([m.clone()]), t0).len(), 1);
        cache.record(std::slice::from_ref(&m), t0);
        assert!(cache.missing(HashSet::from([m.clone()]), t0 + Duration::from_secs(3600)).is_empty());
        let ttl = MarkerCache::new(Some(Duration::from_secs(10)));
        ttl.record(std::slice::from_ref(&m), t0);
        assert!(ttl.missing(HashSet::from([m.clone()]), t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(ttl.missing(HashSet::from([m]), t0 + Duration::from_secs(10)).len(), 1);
    }
}
