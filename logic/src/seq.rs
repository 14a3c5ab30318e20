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
//! Eviction: a user's state is only a cache of the persisted bounds plus what is in
//! flight, so an *idle* state (nothing in flight, no raise being written, no login
//! between reading and answering with it) can be dropped at any time and is loaded
//! again on its next touch — allocation then continues above the stored bound (seqs
//! skip, as after a restart), and the watermark is that bound (everything at or below
//! it that exists is durable: nothing was in flight). [`SeqAllocator::evict`] drops
//! idle states the owner sweeper (`owners.rs`) picks, least recently used first (a
//! second-chance clock); [`SeqAllocator::drop_slot`] drops a whole slot's.
//!
//! This module must never be used for a user by anything but that user's slot owner.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tern_storage::{AppId, Owner, Seq, Store, StoreError, SyncKind, UserId, WriteBatch};

use crate::owners::{Evicted, Held};
use crate::slots::{slot_of, Slot, SlotOwnership};
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
    /// Touched since the eviction clock last passed (its second chance).
    recent: bool,
    /// Logins that read this state and have not answered with it yet: the LoginAck's
    /// max seqs must come from the state they loaded, so it stays.
    pins: u16,
}

impl UserState {
    /// Droppable now: reloading it from the stored bounds gives back the same
    /// watermark and allocation continues above it.
    fn idle(&self) -> bool {
        self.pins == 0 && self.kinds.iter().all(|(_, k)| k.in_flight.is_empty() && !k.raising)
    }

    /// Memory held for this state and its map entry (approximate: the map's own
    /// spare capacity is not counted).
    fn bytes(&self, user: &UserId) -> usize {
        let kinds = self.kinds.capacity() * std::mem::size_of::<(SyncKind, KindState)>();
        let in_flight: usize = self.kinds.iter().map(|(_, k)| k.in_flight.capacity() * 8).sum();
        std::mem::size_of::<((AppId, UserId), UserState)>() + 1 + user.as_str().len() + kinds + in_flight
    }

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
    &shards[crate::slots::shard_of_id(app, user.as_str(), SHARDS)]
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
    ownership: Arc<SlotOwnership>,
    shards: Arc<Shards>,
    /// Where the eviction clock resumes (a shard index).
    hand: std::sync::atomic::AtomicUsize,
}

type Shards = Vec<Mutex<UserMap<UserState>>>;

impl SeqAllocator {
    /// An allocator owning every slot (single-node deployment).
    pub fn new(store: Arc<dyn Store>, step: u64) -> Self {
        Self::with_ownership(store, step, SlotOwnership::all())
    }

    pub fn with_ownership(store: Arc<dyn Store>, step: u64, ownership: SlotOwnership) -> Self {
        Self::sharing_ownership(store, step, Arc::new(ownership))
    }

    /// An allocator deciding by `ownership`, which the node's write router
    /// (`router::Routed`) reads too: one set of flags says what this node writes.
    pub fn sharing_ownership(store: Arc<dyn Store>, step: u64, ownership: Arc<SlotOwnership>) -> Self {
        Self {
            store,
            step: step.max(1),
            ownership,
            shards: Arc::new((0..SHARDS).map(|_| Mutex::default()).collect()),
            hand: Default::default(),
        }
    }

    fn shard(&self, app: AppId, user: &UserId) -> &Mutex<UserMap<UserState>> {
        shard_of(&self.shards, app, user)
    }

    fn lock(m: &Mutex<UserMap<UserState>>) -> std::sync::MutexGuard<'_, UserMap<UserState>> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a user's persisted bounds (the state to install when it is not in memory).
    async fn load(&self, app: AppId, user: &UserId) -> Result<UserState, StoreError> {
        // A user owns these sequences (groups own theirs in `groups`).
        let bounds = self.store.seq_bounds(app, &Owner::User(user.clone())).await?;
        Ok(UserState::from_bounds(&bounds))
    }

    /// Runs `f` on a user's state, loading it first if it is not in memory. A state
    /// already there (or installed by another task meanwhile) wins over the one read:
    /// it may have allocated since. `f` runs under the shard lock, so an eviction
    /// cannot come between the load and `f`.
    async fn with_state<R>(
        &self,
        app: AppId,
        user: &UserId,
        f: impl FnOnce(&mut UserState) -> R,
    ) -> Result<R, StoreError> {
        if let Some(st) = Self::lock(self.shard(app, user)).get_mut(&UserKeyRef::new(app, user)) {
            st.recent = true;
            return Ok(f(st));
        }
        let loaded = self.load(app, user).await?;
        let mut g = Self::lock(self.shard(app, user));
        let st = g.entry((app, user.clone())).or_insert(loaded);
        st.recent = true;
        Ok(f(st))
    }

    fn refuse_unowned(&self, app: AppId, user: &UserId) -> Result<(), StoreError> {
        if self.ownership.owns_user(app, user) {
            return Ok(());
        }
        Err(unowned(app, user))
    }

    /// The slots this node owns (groups check theirs here too).
    pub fn ownership(&self) -> &SlotOwnership {
        &self.ownership
    }

    /// Allocates `n ≥ 1` consecutive seqs. Pair with [`complete`](Self::complete).
    /// Does I/O only when the state is not in memory or the reserved bound must be
    /// raised (once per `step` seqs). Refused with [`StoreError::Unavailable`] while
    /// this node does not own the user's slot.
    pub async fn allocate(&self, app: AppId, user: &UserId, kind: SyncKind, n: u64) -> Result<Allocation, StoreError> {
        let n = n.max(1);
        self.refuse_unowned(app, user)?;
        loop {
            let step = self.step;
            let handed = self
                .with_state(app, user, |st| {
                    // Checked again under the shard lock, which `drop_slot` takes after
                    // releasing the slot: either it sees this allocation in flight and
                    // waits for it, or this sees the slot released.
                    if !self.ownership.owns_user(app, user) {
                        return None;
                    }
                    let k = st.kind_mut(kind);
                    let (first, last) = (k.last + 1, k.last + n);
                    if last <= k.bound {
                        k.last = last;
                        k.in_flight.extend(first..=last);
                        self.raise_ahead(k, app, user, kind);
                        Some(Ok((first, last)))
                    } else {
                        Some(Err(last + step))
                    }
                })
                .await?;
            // A bound written after the slot was given up is harmless: bounds only
            // ever rise (the store keeps the maximum), so the new owner's seqs skip.
            let target = match handed {
                None => return Err(unowned(app, user)),
                Some(Ok((first, last))) => {
                    return Ok(Allocation { app, user: user.clone(), kind, first: Seq(first), last: Seq(last) })
                }
                Some(Err(target)) => target,
            };
            // Concurrent raisers may each write a bound; the store keeps the maximum.
            let mut batch = WriteBatch::with_capacity(1);
            batch.set_seq_bound(app, user.clone(), kind, Seq(target));
            self.store.write(batch).await?;
            metrics::counter!("tern_seq_bound_writes_total").increment(1);
            // Evicted meanwhile? Then the reload reads the bound just written.
            if let Some(st) = Self::lock(self.shard(app, user)).get_mut(&UserKeyRef::new(app, user)) {
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
            end_raise_in(&shards, app, &user, kind, written.is_ok().then_some(Seq(target)));
        });
    }

    /// Makes sure `kind` of a user can be allocated without waiting: loads the user and
    /// starts a bound raise if the reserved room is short (as it is right after a load).
    pub async fn prefetch(&self, app: AppId, user: &UserId, kind: SyncKind) -> Result<(), StoreError> {
        let owned = self.ownership.owns_user(app, user);
        self.with_state(app, user, |st| {
            if owned {
                self.raise_ahead(st.kind_mut(kind), app, user, kind);
            }
        })
        .await
    }

    /// Whether a user's seq state is in memory (an inspection: tests and diagnostics;
    /// the answer may change as soon as the lock is released).
    pub fn is_loaded(&self, app: AppId, user: &UserId) -> bool {
        Self::lock(self.shard(app, user)).contains_key(&UserKeyRef::new(app, user))
    }

    /// Pins a user's state if it is in memory (see [`SeqPins`]); false if it is not:
    /// then read its bounds and [`SeqPins::install`] them.
    fn pin(&self, app: AppId, user: &UserId) -> bool {
        let mut g = Self::lock(self.shard(app, user));
        let Some(st) = g.get_mut(&UserKeyRef::new(app, user)) else { return false };
        st.pins += 1;
        st.recent = true;
        true
    }

    /// Pins held by one batch of logins: from reading a user's state (or finding it in
    /// memory) to answering with its watermarks, eviction leaves it alone.
    pub fn pins(&self) -> SeqPins {
        SeqPins { shards: self.shards.clone(), pinned: Vec::new() }
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
                end_raise_in(&self.shards, *app, user, kind, None);
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

    /// Marks an allocation's seqs as no longer in flight: `durable` when its batch was
    /// acknowledged by the store, otherwise abandoned (the seqs stay unused forever).
    pub fn complete(&self, alloc: &Allocation, durable: bool) {
        self.complete_then_committed(alloc, durable);
    }

    /// [`complete`](Self::complete), and the allocation kind's watermark right after
    /// it, under one lock: the state cannot be evicted between the two (the push path
    /// reads the watermark it must push up to).
    pub fn complete_then_committed(&self, alloc: &Allocation, durable: bool) -> Seq {
        // Both outcomes end the seqs' flight; a failed one is skipped forever.
        if !durable {
            metrics::counter!("tern_seqs_abandoned_total").increment(alloc.last.0 - alloc.first.0 + 1);
        }
        let mut g = Self::lock(self.shard(alloc.app, &alloc.user));
        // In flight means not idle: the state is still here.
        let Some(st) = g.get_mut(&UserKeyRef::new(alloc.app, &alloc.user)) else { return Seq::ZERO };
        let k = st.kind_mut(alloc.kind);
        k.in_flight.retain(|s| *s < alloc.first.0 || *s > alloc.last.0);
        Seq(k.committed())
    }

    /// The committed watermark of one kind.
    pub async fn committed(&self, app: AppId, user: &UserId, kind: SyncKind) -> Result<Seq, StoreError> {
        self.with_state(app, user, |st| Seq(st.committed(kind))).await
    }

    /// The committed watermark of a user already in memory (zero if not loaded). An
    /// inspection for tests and diagnostics: the send path reads the watermark with its
    /// allocation (`complete_then_committed`), never through this.
    pub fn committed_now(&self, app: AppId, user: &UserId, kind: SyncKind) -> Seq {
        let g = Self::lock(self.shard(app, user));
        g.get(&UserKeyRef::new(app, user)).map_or(Seq::ZERO, |st| Seq(st.committed(kind)))
    }

    /// [`committed_all`](Self::committed_all) of a user in memory, `None` if not. A
    /// login holds a [`SeqPins`] pin on the user, so theirs is in memory.
    pub fn committed_all_now(&self, app: AppId, user: &UserId) -> Option<Vec<(SyncKind, Seq)>> {
        let g = Self::lock(self.shard(app, user));
        g.get(&UserKeyRef::new(app, user)).map(client_visible_watermarks)
    }

    /// The committed watermark of every client-visible kind (kinds at zero included).
    pub async fn committed_all(&self, app: AppId, user: &UserId) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
        self.with_state(app, user, |st| client_visible_watermarks(st)).await
    }

    /// Seq states in memory and the bytes they hold.
    pub fn measure(&self) -> Held {
        let mut held = Held::default();
        for shard in self.shards.iter() {
            let g = Self::lock(shard);
            held.states += g.len();
            held.bytes += g.iter().map(|((_, user), st)| st.bytes(user)).sum::<usize>();
        }
        held
    }

    /// Drops idle states until `want` bytes are freed or every shard was passed once.
    /// With `second_chance`, a state touched since the last pass is spared (and its
    /// mark cleared), so the least recently used go first; without, every idle state
    /// is fair game. Resumes where the previous pass stopped.
    pub fn evict(&self, want: usize, second_chance: bool) -> Evicted {
        let mut out = Evicted::default();
        let start = self.hand.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..SHARDS {
            if out.bytes >= want {
                break;
            }
            let at = (start + i) % SHARDS;
            let mut g = Self::lock(&self.shards[at]);
            g.retain(|(_, user), st| {
                if out.bytes >= want || !st.idle() {
                    return true;
                }
                if second_chance && std::mem::take(&mut st.recent) {
                    return true;
                }
                out.states += 1;
                out.bytes += st.bytes(user);
                false
            });
            self.hand.store((at + 1) % SHARDS, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// Gives up `slot`: allocation for its users is refused from now on (80009 to a
    /// client, retryable), the allocations in flight are waited for, and then every
    /// state of the slot is dropped — what a slot move does on the node it leaves.
    /// Returns the states dropped. [`take_slot`](Self::take_slot) owns it again; its
    /// states load on first touch.
    pub async fn drop_slot(&self, slot: Slot) -> usize {
        self.ownership.release(slot);
        let shard = &self.shards[crate::slots::shard_of_slot(slot, SHARDS)];
        let mut dropped = 0;
        loop {
            let mut busy = 0;
            Self::lock(shard).retain(|(app, user), st| {
                if slot_of(*app, user) != slot {
                    return true;
                }
                if st.idle() {
                    dropped += 1;
                    return false;
                }
                busy += 1;
                true
            });
            if busy == 0 {
                return dropped;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Owns `slot` (again).
    pub fn take_slot(&self, slot: Slot) {
        self.ownership.take(slot);
    }
}

/// Why a user's seqs are not allocated here now.
fn unowned(app: AppId, user: &UserId) -> StoreError {
    StoreError::Unavailable(format!(
        "this node does not own slot {} (user {}) now",
        slot_of(app, user).0,
        user.as_str()
    ))
}

fn client_visible_watermarks(st: &UserState) -> Vec<(SyncKind, Seq)> {
    SyncKind::ALL.iter().filter(|k| k.client_visible()).map(|k| (*k, Seq(st.committed(*k)))).collect()
}

/// Pins on users' seq states taken by one login batch ([`SeqAllocator::pins`]),
/// released when dropped.
pub struct SeqPins {
    shards: Arc<Shards>,
    pinned: Vec<(AppId, UserId)>,
}

impl SeqPins {
    /// Pins `user`'s state if it is in memory; false if it is not (read its bounds and
    /// [`install`](Self::install) them).
    pub fn pin(&mut self, seqs: &SeqAllocator, app: AppId, user: &UserId) -> bool {
        let pinned = seqs.pin(app, user);
        if pinned {
            self.pinned.push((app, user.clone()));
        }
        pinned
    }

    /// Installs persisted bounds read by the caller and pins the state. A state
    /// already in memory wins: it may have allocated since.
    pub fn install(&mut self, app: AppId, user: &UserId, bounds: &[(SyncKind, Seq)]) {
        let mut g = shard_of(&self.shards, app, user).lock().unwrap_or_else(|p| p.into_inner());
        let st = g.entry((app, user.clone())).or_insert_with(|| UserState::from_bounds(bounds));
        st.pins += 1;
        st.recent = true;
        self.pinned.push((app, user.clone()));
    }
}

impl Drop for SeqPins {
    fn drop(&mut self) {
        for (app, user) in &self.pinned {
            let mut g = shard_of(&self.shards, *app, user).lock().unwrap_or_else(|p| p.into_inner());
            if let Some(st) = g.get_mut(&UserKeyRef::new(*app, user)) {
                st.pins = st.pins.saturating_sub(1);
            }
        }
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
