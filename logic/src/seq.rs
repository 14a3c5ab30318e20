//! Per-user, per-kind sequence allocation in the seqsvr style, and the committed
//! watermark that keeps the sync invariant.
//!
//! Seqs are handed out from memory. Each (app, user, kind) has a persisted *reserved
//! upper bound*; a seq is handed out only when it is at or below a bound that is already
//! durable. When an allocation would pass the bound, the allocator first writes a bound
//! one step higher (one small write per `step` seqs, group-committed with everything
//! else), then hands out seqs from memory again. After a restart allocation resumes
//! above the persisted bound, so no seq is ever handed out twice, even when the process
//! died between handing it out and writing the data that used it: seqs may skip, they
//! never repeat and never go back.
//!
//! Watermark: a seq is *in flight* from allocation until its batch is durable (or has
//! failed). `committed` is the highest seq below every in-flight one; pushes and sync
//! serve only up to it, so once a client was told `maxSequence = S` nothing ≤ S can
//! appear later. After a restart everything at or below the persisted bound that exists
//! is already durable, so the bound is a valid watermark.
//!
//! Bounds are raised ahead: once less than half a step is left, a background write
//! raises the bound by another step while allocation goes on from memory, so only a
//! burst of more than half a step between two group commits ever waits for I/O.
//!
//! This module must never be used for a user by anything but that user's slot owner.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tern_storage::{AppId, Owner, Seq, Store, StoreError, SyncKind, UserId, WriteBatch};

use crate::slots::{slot_of, SlotOwnership};

/// Default distance between reserved bounds: one bound write per this many seqs.
pub const DEFAULT_SEQ_STEP: u64 = 1_000;

const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct KindState {
    /// Last seq handed out.
    last: u64,
    /// Highest reserved bound known durable (≥ last).
    bound: u64,
    /// Allocated, not yet durable, ascending.
    in_flight: VecDeque<u64>,
    /// A background bound raise is being written.
    raising: bool,
}

impl KindState {
    fn committed(&self) -> u64 {
        self.in_flight.front().map_or(self.last, |first| first - 1)
    }
}

type UserKey = (AppId, UserId);

#[derive(Default)]
struct UserState {
    kinds: [KindState; SyncKind::ALL.len()],
}

/// A run of freshly allocated seqs of one (app, user, kind). Complete it with
/// [`SeqAllocator::complete`] once the batch using it is durable or has failed.
#[derive(Debug)]
pub struct Allocation {
    pub app: AppId,
    pub user: UserId,
    pub kind: SyncKind,
    pub first: Seq,
    pub last: Seq,
}

impl Allocation {
    pub fn seqs(&self) -> impl Iterator<Item = Seq> {
        (self.first.0..=self.last.0).map(Seq)
    }
}

fn shard_of<'a>(shards: &'a Shards, app: AppId, user: &UserId) -> &'a Mutex<HashMap<UserKey, UserState>> {
    // Shards follow slots, so a slot's users share locks and move together.
    &shards[slot_of(app, user).0 as usize % SHARDS]
}

/// The allocator. Shared by all tasks of the logic node; sharded mutexes, held only for
/// in-memory bookkeeping (never across I/O).
pub struct SeqAllocator {
    store: Arc<dyn Store>,
    step: u64,
    /// Slots this node owns: allocation for anyone else's user is refused, so a node
    /// that lost a slot can never write behind the new owner's back.
    ownership: SlotOwnership,
    shards: Arc<Shards>,
}

type Shards = Vec<Mutex<HashMap<UserKey, UserState>>>;

impl SeqAllocator {
    /// An allocator owning every slot (single-node deployment).
    pub fn new(store: Arc<dyn Store>, step: u64) -> Self {
        Self::with_ownership(store, step, SlotOwnership::all())
    }

    pub fn with_ownership(store: Arc<dyn Store>, step: u64, ownership: SlotOwnership) -> Self {
        Self { store, step: step.max(1), ownership, shards: Arc::new((0..SHARDS).map(|_| Mutex::default()).collect()) }
    }

    fn shard(&self, app: AppId, user: &UserId) -> &Mutex<HashMap<UserKey, UserState>> {
        shard_of(&self.shards, app, user)
    }

    fn lock(m: &Mutex<HashMap<UserKey, UserState>>) -> std::sync::MutexGuard<'_, HashMap<UserKey, UserState>> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a user's persisted bounds unless they are in memory already.
    async fn ensure_loaded(&self, app: AppId, user: &UserId) -> Result<(), StoreError> {
        let shard = self.shard(app, user);
        if Self::lock(shard).contains_key(&(app, user.clone())) {
            return Ok(());
        }
        // A user owns these sequences (groups will own theirs through the same calls).
        let bounds = self.store.seq_bounds(app, &Owner::User(user.clone())).await?;
        let mut state = UserState::default();
        for (kind, bound) in bounds {
            let k = &mut state.kinds[kind.as_u8() as usize];
            k.last = bound.0;
            k.bound = bound.0;
        }
        // Another task may have loaded it meanwhile; theirs wins (it may have allocated).
        Self::lock(shard).entry((app, user.clone())).or_insert(state);
        Ok(())
    }

    /// Allocates `n ≥ 1` consecutive seqs. Pair with [`complete`](Self::complete).
    /// Does I/O only when the reserved bound must be raised (once per `step` seqs).
    pub async fn allocate(&self, app: AppId, user: &UserId, kind: SyncKind, n: u64) -> Result<Allocation, StoreError> {
        let n = n.max(1);
        if !self.ownership.owns_user(app, user) {
            return Err(StoreError::InvalidArgument(format!(
                "this node does not own slot {} (user {})",
                slot_of(app, user).0,
                user.as_str()
            )));
        }
        self.ensure_loaded(app, user).await?;
        loop {
            let target = {
                let mut g = Self::lock(self.shard(app, user));
                let st = g.get_mut(&(app, user.clone())).expect("loaded above; users are never evicted");
                let k = &mut st.kinds[kind.as_u8() as usize];
                let (first, last) = (k.last + 1, k.last + n);
                if last <= k.bound {
                    k.last = last;
                    k.in_flight.extend(first..=last);
                    self.raise_ahead(k, app, user, kind);
                    return Ok(Allocation { app, user: user.clone(), kind, first: Seq(first), last: Seq(last) });
                }
                last + self.step
            };
            // Concurrent raisers may each write a bound; the store keeps the maximum.
            let mut batch = WriteBatch::with_capacity(1);
            batch.set_seq_bound(app, user.clone(), kind, Seq(target));
            self.store.write(batch).await?;
            metrics::counter!("tern_seq_bound_writes_total").increment(1);
            let mut g = Self::lock(self.shard(app, user));
            if let Some(st) = g.get_mut(&(app, user.clone())) {
                let k = &mut st.kinds[kind.as_u8() as usize];
                k.bound = k.bound.max(target);
            }
        }
    }

    /// Starts writing the next bound in the background once less than half a step is
    /// left below the current one, so allocation in steady use never waits for I/O.
    fn raise_ahead(&self, k: &mut KindState, app: AppId, user: &UserId, kind: SyncKind) {
        if k.raising || k.bound.saturating_sub(k.last) >= self.step.div_ceil(2) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        k.raising = true;
        let target = k.bound.max(k.last) + self.step;
        let (store, shards, user) = (self.store.clone(), self.shards.clone(), user.clone());
        rt.spawn(async move {
            let mut batch = WriteBatch::with_capacity(1);
            batch.set_seq_bound(app, user.clone(), kind, Seq(target));
            let written = store.write(batch).await;
            if let Err(e) = &written {
                tracing::warn!(error = %e, "raising a seq bound ahead failed; the next allocation retries");
            } else {
                metrics::counter!("tern_seq_bound_writes_total").increment(1);
            }
            let mut g = Self::lock(shard_of(&shards, app, &user));
            if let Some(st) = g.get_mut(&(app, user.clone())) {
                let k = &mut st.kinds[kind.as_u8() as usize];
                k.raising = false;
                if written.is_ok() {
                    k.bound = k.bound.max(target);
                }
            }
        });
    }

    /// Makes sure `kind` of a user can be allocated without waiting: loads the user and
    /// starts a bound raise if the reserved room is short (as it is right after a load).
    /// Called at login, so a device's first send does not wait for a bound write.
    pub async fn prefetch(&self, app: AppId, user: &UserId, kind: SyncKind) -> Result<(), StoreError> {
        self.ensure_loaded(app, user).await?;
        if !self.ownership.owns_user(app, user) {
            return Ok(());
        }
        let mut g = Self::lock(self.shard(app, user));
        if let Some(st) = g.get_mut(&(app, user.clone())) {
            self.raise_ahead(&mut st.kinds[kind.as_u8() as usize], app, user, kind);
        }
        Ok(())
    }

    /// Marks an allocation's seqs as no longer in flight: `durable` when its batch was
    /// acknowledged by the store, otherwise abandoned (the seqs stay unused forever).
    pub fn complete(&self, alloc: &Allocation, durable: bool) {
        // Both outcomes end the seqs' flight; a failed one is skipped forever.
        if !durable {
            metrics::counter!("tern_seqs_abandoned_total").increment(alloc.last.0 - alloc.first.0 + 1);
        }
        let mut g = Self::lock(self.shard(alloc.app, &alloc.user));
        let Some(st) = g.get_mut(&(alloc.app, alloc.user.clone())) else { return };
        let k = &mut st.kinds[alloc.kind.as_u8() as usize];
        k.in_flight.retain(|s| *s < alloc.first.0 || *s > alloc.last.0);
    }

    /// The committed watermark of one kind.
    pub async fn committed(&self, app: AppId, user: &UserId, kind: SyncKind) -> Result<Seq, StoreError> {
        self.ensure_loaded(app, user).await?;
        let g = Self::lock(self.shard(app, user));
        Ok(g.get(&(app, user.clone())).map_or(Seq::ZERO, |st| Seq(st.kinds[kind.as_u8() as usize].committed())))
    }

    /// The committed watermark of a user already in memory (zero if not loaded: then
    /// nothing of theirs is in flight either).
    pub fn committed_now(&self, app: AppId, user: &UserId, kind: SyncKind) -> Seq {
        let g = Self::lock(self.shard(app, user));
        g.get(&(app, user.clone())).map_or(Seq::ZERO, |st| Seq(st.kinds[kind.as_u8() as usize].committed()))
    }

    /// [`committed_all`](Self::committed_all) of a user already in memory (zeros if not).
    pub fn committed_all_now(&self, app: AppId, user: &UserId) -> Vec<(SyncKind, Seq)> {
        let g = Self::lock(self.shard(app, user));
        let st = g.get(&(app, user.clone()));
        SyncKind::ALL
            .iter()
            .filter(|k| k.client_visible())
            .map(|k| (*k, Seq(st.map_or(0, |st| st.kinds[k.as_u8() as usize].committed()))))
            .collect()
    }

    /// The committed watermark of every client-visible kind (kinds at zero included).
    pub async fn committed_all(&self, app: AppId, user: &UserId) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        self.ensure_loaded(app, user).await?;
        let g = Self::lock(self.shard(app, user));
        let st = g.get(&(app, user.clone()));
        Ok(SyncKind::ALL
            .iter()
            .filter(|k| k.client_visible())
            .map(|k| (*k, Seq(st.map_or(0, |st| st.kinds[k.as_u8() as usize].committed()))))
            .collect())
    }
}
