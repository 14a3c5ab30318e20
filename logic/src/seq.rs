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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tern_storage::{AppId, Owner, Seq, Store, StoreError, SyncKind, UserId, WriteBatch};

use crate::slots::{slot_of, SlotOwnership};
use crate::user_key::{UserKeyRef, UserMap};

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

/// A user's seq state: an entry per kind that has any. A kind never used and without
/// a stored bound is absent and reads as zero — most users use one or two of the ten
/// kinds, and a full array of them cost ~560 B per user in memory.
#[derive(Default)]
struct UserState {
    kinds: Vec<(SyncKind, KindState)>,
}

impl UserState {
    /// The state as persisted bounds leave it (kinds at zero stay absent).
    fn from_bounds<'a>(bounds: impl IntoIterator<Item = &'a (SyncKind, Seq)>) -> Self {
        let mut state = Self::default();
        for (kind, bound) in bounds.into_iter().filter(|(_, b)| b.0 > 0) {
            let k = state.kind_mut(*kind);
            k.last = bound.0;
            k.bound = bound.0;
        }
        state
    }

    fn kind(&self, kind: SyncKind) -> Option<&KindState> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, st)| st)
    }

    /// The kind's state, added (at zero) on first use.
    fn kind_mut(&mut self, kind: SyncKind) -> &mut KindState {
        let at = match self.kinds.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                // One more entry, not the four a growing Vec would take: kinds are
                // added a few times in a user's life and the states stay in memory.
                self.kinds.reserve_exact(1);
                self.kinds.push((kind, KindState::default()));
                self.kinds.len() - 1
            }
        };
        &mut self.kinds[at].1
    }

    fn committed(&self, kind: SyncKind) -> u64 {
        self.kind(kind).map_or(0, KindState::committed)
    }
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

fn shard_of<'a>(shards: &'a Shards, app: AppId, user: &UserId) -> &'a Mutex<UserMap<UserState>> {
    // Shards follow slots, so a slot's users share locks and move together.
    &shards[slot_of(app, user).0 as usize % SHARDS]
}

/// A background bound raise ended: clears `raising`, and records the bound if written.
fn end_raise_in(shards: &Shards, app: AppId, user: &UserId, kind: SyncKind, raised_to: Option<Seq>) {
    let mut g = shard_of(shards, app, user).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(st) = g.get_mut(&UserKeyRef::new(app, user)) {
        let k = st.kind_mut(kind);
        k.raising = false;
        if let Some(t) = raised_to {
            k.bound = k.bound.max(t.0);
        }
    }
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

type Shards = Vec<Mutex<UserMap<UserState>>>;

impl SeqAllocator {
    /// An allocator owning every slot (single-node deployment).
    pub fn new(store: Arc<dyn Store>, step: u64) -> Self {
        Self::with_ownership(store, step, SlotOwnership::all())
    }

    pub fn with_ownership(store: Arc<dyn Store>, step: u64, ownership: SlotOwnership) -> Self {
        Self { store, step: step.max(1), ownership, shards: Arc::new((0..SHARDS).map(|_| Mutex::default()).collect()) }
    }

    fn shard(&self, app: AppId, user: &UserId) -> &Mutex<UserMap<UserState>> {
        shard_of(&self.shards, app, user)
    }

    fn lock(m: &Mutex<UserMap<UserState>>) -> std::sync::MutexGuard<'_, UserMap<UserState>> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a user's persisted bounds unless they are in memory already.
    async fn ensure_loaded(&self, app: AppId, user: &UserId) -> Result<(), StoreError> {
        let shard = self.shard(app, user);
        if Self::lock(shard).contains_key(&UserKeyRef::new(app, user)) {
            return Ok(());
        }
        // A user owns these sequences (groups will own theirs through the same calls).
        let bounds = self.store.seq_bounds(app, &Owner::User(user.clone())).await?;
        let state = UserState::from_bounds(&bounds);
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
                let st = g.get_mut(&UserKeyRef::new(app, user)).expect("loaded above; users are never evicted");
                let k = st.kind_mut(kind);
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
            if let Some(st) = g.get_mut(&UserKeyRef::new(app, user)) {
                let k = st.kind_mut(kind);
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
            if let Some(st) = g.get_mut(&UserKeyRef::new(app, &user)) {
                let k = st.kind_mut(kind);
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
        if let Some(st) = g.get_mut(&UserKeyRef::new(app, user)) {
            self.raise_ahead(st.kind_mut(kind), app, user, kind);
        }
        Ok(())
    }

    /// Whether a user's seq state is in memory (a login then need not read it).
    pub fn is_loaded(&self, app: AppId, user: &UserId) -> bool {
        Self::lock(self.shard(app, user)).contains_key(&UserKeyRef::new(app, user))
    }

    /// Installs persisted bounds read by the caller (batched logins read them with
    /// their other reads in one store trip). A state already in memory wins: it may
    /// have allocated since.
    pub fn install(&self, app: AppId, user: &UserId, bounds: &[(SyncKind, Seq)]) {
        let state = UserState::from_bounds(bounds);
        Self::lock(self.shard(app, user)).entry((app, user.clone())).or_insert(state);
    }

    /// [`prefetch`](Self::prefetch) for many users already in memory: the bound raises
    /// they need go out as ONE write in the background, not one per user.
    pub fn prefetch_loaded(&self, users: &[(AppId, &UserId)], kind: SyncKind) {
        let mut raises: Vec<(AppId, UserId, Seq)> = Vec::new();
        for &(app, user) in users {
            if !self.ownership.owns_user(app, user) {
                continue;
            }
            let mut g = Self::lock(self.shard(app, user));
            let Some(st) = g.get_mut(&UserKeyRef::new(app, user)) else { continue };
            let k = st.kind_mut(kind);
            if k.raising || k.bound.saturating_sub(k.last) >= self.step.div_ceil(2) {
                continue;
            }
            k.raising = true;
            raises.push((app, user.clone(), Seq(k.bound.max(k.last) + self.step)));
        }
        if raises.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime to write from: leave the raises to the first allocation.
            for (app, user, _) in &raises {
                self.end_raise(app, user, kind, None);
            }
            return;
        };
        let (store, shards) = (self.store.clone(), self.shards.clone());
        rt.spawn(async move {
            let mut batch = WriteBatch::with_capacity(raises.len());
            for (app, user, target) in &raises {
                batch.set_seq_bound(*app, user.clone(), kind, *target);
            }
            let written = store.write(batch).await;
            match &written {
                Ok(()) => metrics::counter!("tern_seq_bound_writes_total").increment(raises.len() as u64),
                Err(e) => tracing::warn!(error = %e, "raising seq bounds at login failed; the next allocation retries"),
            }
            for (app, user, target) in &raises {
                end_raise_in(&shards, *app, user, kind, written.is_ok().then_some(*target));
            }
        });
    }

    fn end_raise(&self, app: &AppId, user: &UserId, kind: SyncKind, raised_to: Option<Seq>) {
        end_raise_in(&self.shards, *app, user, kind, raised_to);
    }

    /// Marks an allocation's seqs as no longer in flight: `durable` when its batch was
    /// acknowledged by the store, otherwise abandoned (the seqs stay unused forever).
    pub fn complete(&self, alloc: &Allocation, durable: bool) {
        // Both outcomes end the seqs' flight; a failed one is skipped forever.
        if !durable {
            metrics::counter!("tern_seqs_abandoned_total").increment(alloc.last.0 - alloc.first.0 + 1);
        }
        let mut g = Self::lock(self.shard(alloc.app, &alloc.user));
        let Some(st) = g.get_mut(&UserKeyRef::new(alloc.app, &alloc.user)) else { return };
        let k = st.kind_mut(alloc.kind);
        k.in_flight.retain(|s| *s < alloc.first.0 || *s > alloc.last.0);
    }

    /// The committed watermark of one kind.
    pub async fn committed(&self, app: AppId, user: &UserId, kind: SyncKind) -> Result<Seq, StoreError> {
        self.ensure_loaded(app, user).await?;
        let g = Self::lock(self.shard(app, user));
        Ok(g.get(&UserKeyRef::new(app, user)).map_or(Seq::ZERO, |st| Seq(st.committed(kind))))
    }

    /// The committed watermark of a user already in memory (zero if not loaded: then
    /// nothing of theirs is in flight either).
    pub fn committed_now(&self, app: AppId, user: &UserId, kind: SyncKind) -> Seq {
        let g = Self::lock(self.shard(app, user));
        g.get(&UserKeyRef::new(app, user)).map_or(Seq::ZERO, |st| Seq(st.committed(kind)))
    }

    /// [`committed_all`](Self::committed_all) of a user already in memory (zeros if not).
    pub fn committed_all_now(&self, app: AppId, user: &UserId) -> Vec<(SyncKind, Seq)> {
        let g = Self::lock(self.shard(app, user));
        let st = g.get(&UserKeyRef::new(app, user));
        SyncKind::ALL
            .iter()
            .filter(|k| k.client_visible())
            .map(|k| (*k, Seq(st.map_or(0, |st| st.committed(*k)))))
            .collect()
    }

    /// The committed watermark of every client-visible kind (kinds at zero included).
    pub async fn committed_all(&self, app: AppId, user: &UserId) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        self.ensure_loaded(app, user).await?;
        let g = Self::lock(self.shard(app, user));
        let st = g.get(&UserKeyRef::new(app, user));
        Ok(SyncKind::ALL
            .iter()
            .filter(|k| k.client_visible())
            .map(|k| (*k, Seq(st.map_or(0, |st| st.committed(*k)))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only kinds with a stored bound or in use take memory, one entry each (no spare
    /// capacity); an absent kind reads as zero.
    #[test]
    fn a_user_holds_only_the_kinds_it_uses() {
        let bounds = [(SyncKind::Message, Seq(1_000)), (SyncKind::Profile, Seq::ZERO)];
        let mut st = UserState::from_bounds(&bounds);
        assert_eq!(st.kinds.len(), 1, "a zero bound is not stored");
        assert_eq!((st.committed(SyncKind::Message), st.committed(SyncKind::Friendship)), (1_000, 0));
        assert_eq!(st.kinds.capacity(), 1);
        let k = st.kind_mut(SyncKind::Friendship);
        k.last = 3;
        k.in_flight.push_back(3);
        assert_eq!(st.committed(SyncKind::Friendship), 2, "below the seq in flight");
        assert_eq!((st.kinds.len(), st.kinds.capacity()), (2, 2));
        st.kind_mut(SyncKind::Message).last += 1;
        assert_eq!((st.committed(SyncKind::Message), st.kinds.len()), (1_001, 2));
    }
}
