//! Tern's logic tier: the business rules, the owner of every user's sequences, the HTTP
//! management API and the endpoint gateways link to.
//!
//! Entry point: [`Logic`] is the shared context (store, apps, sessions, seqs); [`serve`]
//! starts the HTTP API and the link listener on a tokio runtime.
//!
//! Invariants: logic never speaks to clients directly (everything goes through a gateway
//! link as pre-encoded client frames); only the slot owner (this node, for now every
//! slot) allocates a user's seqs and writes that user's logs; HTTP handlers never touch
//! storage types' encodings directly but go through services in this crate.

pub mod admission;
pub mod apps;
pub mod callbacks;
pub mod config;
pub mod conversations;
pub mod error;
pub mod friends;
pub mod groups;
pub mod hooks;
pub mod http;
pub mod link;
pub mod listener;
pub mod login;
pub mod messages;
pub mod owners;
pub mod password;
pub mod router;
pub mod send_holds;
pub mod seq;
pub mod server;
pub mod sessions;
pub mod slots;
pub mod upstream;
pub mod user_cache;
mod user_key;
pub mod users;

/// The adaptive send limit never goes below this many sends in flight (node-wide): a
/// floor that keeps a loaded node's group commits full enough to stay efficient.
const MIN_SENDS_IN_FLIGHT: usize = 64;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tern_storage::{
    AppId, GuardOutcome, GuardedBatch, LogEntry, Owner, Seq, Store, StoreError, SyncKind, UserId, WriteBatch,
};

pub use apps::{AppConfig, AppRegistry, LoginModel};
pub use config::LogicConfig;
use seq::SeqAllocator;
use sessions::Sessions;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs a store write up to three times with growing pauses, until it succeeds or fails
/// with an invalid argument (which no retry can fix).
async fn with_retries<T, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    const ATTEMPTS: u32 = 3;
    let mut delay = std::time::Duration::from_millis(20);
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if n < ATTEMPTS && !matches!(e, StoreError::InvalidArgument(_) | StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, attempt = n, "{what} failed; retrying the same writes");
                metrics::counter!("tern_store_write_retries_total").increment(1);
                tokio::time::sleep(delay).await;
                delay *= 4;
                n += 1;
            }
            done => return done,
        }
    }
}

/// The logic node's shared state. One per process; handlers hold an `Arc<Logic>`.
pub struct Logic {
    pub config: LogicConfig,
    pub store: Arc<dyn Store>,
    pub apps: AppRegistry,
    pub sessions: Sessions,
    pub seqs: SeqAllocator,
    pub messaging: messages::Messaging,
    /// Friend lists, blacklists and friend requests (materialized views of their logs).
    pub friends: friends::Friends,
    /// Groups and joined-group views (loaded on first touch).
    pub groups: groups::Groups,
    /// User existence/deletion for the message path (filled from the store, updated by users.rs).
    pub user_cache: user_cache::UserCache,
    /// The node-wide, latency-steered bound on sends waiting for the store.
    pub admission: admission::SendAdmission,
    /// The node-wide bound on new logins being admitted (batched per link).
    pub logins: login::LoginLimit,
    /// Callbacks to the apps' business servers (issue 14).
    pub callbacks: callbacks::Callbacks,
    /// Conversation views (issue 12; loaded on first read).
    pub conversations: conversations::Conversations,
    /// Serializes read-modify-write of one user's record (`users.rs`).
    pub user_locks: users::UserLocks,
}

impl Logic {
    pub fn new(config: LogicConfig, store: Arc<dyn Store>, apps: AppRegistry) -> Arc<Self> {
        // Every write goes through the router, which refuses slots this node does not
        // own; the seq allocator decides by the same flags.
        let ownership = Arc::new(slots::SlotOwnership::all());
        let store: Arc<dyn Store> = Arc::new(router::Routed::new(store, ownership.clone()));
        let seqs = SeqAllocator::sharing_ownership(store.clone(), config.seq_step, ownership);
        let m = &config.messages;
        let admission = admission::SendAdmission::new(
            MIN_SENDS_IN_FLIGHT,
            m.max_sends_in_flight,
            std::time::Duration::from_millis(m.send_latency_target_ms),
        );
        let logins = login::LoginLimit::new(config.link.max_logins_in_flight);
        Arc::new(Self {
            config,
            store,
            sessions: Sessions::new(),
            seqs,
            messaging: messages::Messaging::new(),
            friends: friends::Friends::new(),
            groups: groups::Groups::new(),
            user_cache: user_cache::UserCache::new(),
            logins,
            admission,
            callbacks: callbacks::Callbacks::new(&apps),
            apps,
            conversations: conversations::Conversations::new(),
            user_locks: users::UserLocks::default(),
        })
    }

    /// Appends one entry to a user's `kind` log with the next seq, together with `extra`
    /// writes, in one durable batch. Returns the seq once durable (and so visible to
    /// sync and pushes).
    pub async fn append(
        &self,
        app: AppId,
        user: &UserId,
        kind: SyncKind,
        payload: Bytes,
        mut extra: WriteBatch,
    ) -> Result<Seq, StoreError> {
        let alloc = self.seqs.allocate(app, user, kind, 1).await?;
        let entry = LogEntry { seq: alloc.first, time_ms: now_ms(), payload };
        extra.append_log(app, user.clone(), kind, entry);
        let result = self.store.write(extra).await;
        self.seqs.complete(&alloc, result.is_ok());
        result.map(|()| alloc.first)
    }

    /// [`append`](Self::append) for several logs at once: appends each `(user, kind,
    /// payload)` with that log's next seq, together with `extra`, in ONE durable batch.
    /// Returns the seqs in input order once durable. Every allocation is completed
    /// whatever happens (an allocation failure part-way fails the whole call and writes
    /// nothing).
    pub async fn append_many(
        &self,
        app: AppId,
        entries: Vec<(UserId, SyncKind, Bytes)>,
        mut extra: WriteBatch,
    ) -> Result<Vec<Seq>, StoreError> {
        let now = now_ms();
        let mut allocs = Vec::with_capacity(entries.len());
        for (user, kind, payload) in entries {
            let alloc = match self.seqs.allocate(app, &user, kind, 1).await {
                Ok(a) => a,
                Err(e) => {
                    for a in &allocs {
                        self.seqs.complete(a, false);
                    }
                    return Err(e);
                }
            };
            extra.append_log(app, user, kind, LogEntry { seq: alloc.first, time_ms: now, payload });
            allocs.push(alloc);
        }
        let result = self.store.write(extra).await;
        for a in &allocs {
            self.seqs.complete(a, result.is_ok());
        }
        result.map(|()| allocs.iter().map(|a| a.first).collect())
    }

    /// Writes a batch, retrying a failed write of the same (idempotent) batch a few times
    /// before giving up. On a backend whose multi-statement writes are not atomic (CQL),
    /// a retry completes a partially applied batch instead of leaving half of it behind.
    pub async fn write_retrying(&self, batch: WriteBatch) -> Result<(), StoreError> {
        with_retries("store write", || self.store.write(batch.clone())).await
    }

    /// [`Store::write_guarded`] with [`write_retrying`](Self::write_retrying)'s retries.
    /// A retry may find a guard written by the failed attempt: callers recognise their
    /// own guard value in a `Duplicate` answer (see `messages::finish`).
    pub async fn write_guarded_retrying(&self, writes: Vec<GuardedBatch>) -> Result<Vec<GuardOutcome>, StoreError> {
        with_retries("guarded store write", || self.store.write_guarded(writes.clone(), now_ms())).await
    }

    /// Reads a user's `kind` log after `after`, at most `limit` entries, never past the
    /// committed watermark. Returns (entries, watermark, completed).
    pub async fn read_synced(
        &self,
        app: AppId,
        user: &UserId,
        kind: SyncKind,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<LogEntry>, Seq, bool), StoreError> {
        let watermark = self.seqs.committed(app, user, kind).await?;
        if after >= watermark || limit == 0 {
            return Ok((Vec::new(), watermark, after >= watermark));
        }
        let mut entries = self.store.read_log(app, &Owner::User(user.clone()), kind, after, limit).await?;
        entries.retain(|e| e.seq <= watermark);
        let completed = entries.len() < limit || entries.last().is_some_and(|e| e.seq >= watermark);
        Ok((entries, watermark, completed))
    }
}
