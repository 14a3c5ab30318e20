//! Owner state in memory, kept within a bound, and slots given up and taken as units.
//!
//! Per-user state that grows with the users a node has *ever* touched — the seq
//! states (`seq.rs`) and the friend views (`friends`) — is a cache of the store: each
//! entry loads on first touch and can be dropped whenever it is idle (nothing in
//! flight, nobody holding it), to be loaded again on its next touch. Once a second
//! (every ten while below half the bound) the sweeper measures both; while together
//! they hold more than `logic.owner_state_max_bytes`, it drops idle entries until they
//! are back under 90 % of it, each structure in proportion to its share, least recently used first (a
//! second-chance clock: an entry touched since the clock's last pass is spared once).
//! Gauges `tern_owner_state_bytes` / `tern_owner_states` and counter
//! `tern_owner_evictions_total`, each by `state` (`seq`, `friend_view`).
//!
//! Bounded elsewhere, by count: groups and joined-groups views (`groups`:
//! `messages.max_loaded_groups`, `messages.max_joined_views`), conversation lists
//! (`conversations.max_held`), the user cache (`user_cache.rs`), recent sends
//! (`messages/recent.rs`). Sessions, parked deliveries and in-flight sends are bounded
//! by connections and the send admission limits.
//!
//! Slots: [`drop_slot`] is what a slot move does on the node it leaves — stop writing
//! the slot (allocation for its users is refused with `StoreError::Unavailable`, 80009
//! to a client), wait for what is in flight, drop its users' seq states, friend views,
//! joined-groups views, conversation lists and cached user states (each waited for
//! while someone holds it). [`take_slot`] owns it again; its users' state loads on
//! first touch. Groups hash by id into the same slots: a group's sends and changes are
//! refused while its slot is not owned, and its state is dropped with the slot. Not
//! dropped by slot: conversation flags (read at login only, so an online user's must
//! stay; they go with the sessions when a slot moves).
//!
//! Writes of a slot given up are refused for every service by the write router
//! (`router.rs`), not only the seq allocations checked here.
//!
//! Must never drop state that is in use: both structures decide idleness under the
//! lock their users take (see `SeqAllocator::evict` and `Friends::evict`).

use std::sync::Arc;
use std::time::Duration;

use crate::slots::Slot;
use crate::Logic;

/// Default of `logic.owner_state_max_bytes`: 1 GiB holds the seq state of ~5 million
/// users (~170 B each) or the friend views of ~200,000 users with 20 friends.
pub const DEFAULT_OWNER_STATE_MAX_BYTES: u64 = 1 << 30;

/// What a structure's `measure` found: entries held and their approximate bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub states: usize,
    pub bytes: usize,
}

/// What an eviction pass dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub states: usize,
    pub bytes: usize,
}

/// How often the sweeper measures (and evicts if over the bound).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One sweep's findings and evictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub seqs: Held,
    pub views: Held,
    pub seqs_evicted: Evicted,
    pub views_evicted: Evicted,
}

impl Sweep {
    /// Bytes held after the sweep.
    pub fn bytes_after(&self) -> usize {
        (self.seqs.bytes + self.views.bytes).saturating_sub(self.seqs_evicted.bytes + self.views_evicted.bytes)
    }
}

/// Measures the owner state and, if it holds more than `max_bytes`, evicts idle
/// entries down to 90 % of it. Runs on the calling thread (O(entries): call it from a
/// blocking thread, as [`sweep_every`] does).
pub fn sweep(logic: &Logic, max_bytes: usize) -> Sweep {
    let mut s = Sweep { seqs: logic.seqs.measure(), views: logic.friends.measure(), ..Sweep::default() };
    let total = s.seqs.bytes + s.views.bytes;
    if total > max_bytes {
        let want = total - max_bytes / 10 * 9;
        // Each structure gives up its share of the excess.
        let from_seqs = (want as u128 * s.seqs.bytes as u128 / total as u128) as usize;
        s.seqs_evicted = logic.seqs.evict(from_seqs, true);
        s.views_evicted = logic.friends.evict(want.saturating_sub(s.seqs_evicted.bytes), true);
    }
    report(&s);
    s
}

fn report(s: &Sweep) {
    for (state, held, evicted) in [("seq", s.seqs, s.seqs_evicted), ("friend_view", s.views, s.views_evicted)] {
        metrics::gauge!("tern_owner_state_bytes", "state" => state)
            .set(held.bytes.saturating_sub(evicted.bytes) as f64);
        metrics::gauge!("tern_owner_states", "state" => state).set(held.states.saturating_sub(evicted.states) as f64);
        metrics::counter!("tern_owner_evictions_total", "state" => state).increment(evicted.states as u64);
    }
}

/// While the state holds less than half its bound, the sweeper measures only every this
/// many ticks: a measure costs ~35 ms per million states. The price: state may pass the
/// bound by up to ten seconds of loads (each a store read) before eviction starts.
const RELAXED_TICKS: u32 = 10;

/// Sweeps every [`SWEEP_INTERVAL`] (every [`RELAXED_TICKS`] while far below the bound)
/// for the life of the task.
pub async fn sweep_every(logic: Arc<Logic>) {
    let max = usize::try_from(logic.config.owner_state_max_bytes).unwrap_or(usize::MAX);
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut skip = 0u32;
    loop {
        tick.tick().await;
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let l = logic.clone();
        let Ok(s) = tokio::task::spawn_blocking(move || sweep(&l, max)).await else { continue };
        if s.seqs_evicted.states + s.views_evicted.states > 0 {
            tracing::debug!(?s, "owner state over its bound: idle entries evicted");
        }
        if s.bytes_after() < max / 2 {
            skip = RELAXED_TICKS - 1;
        }
    }
}

/// What [`drop_slot`] dropped (entries of each structure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotDropped {
    pub seq_states: usize,
    pub friend_views: usize,
    pub joined_views: usize,
    pub conversation_views: usize,
    pub cached_users: usize,
    /// Group states of the slot's groups (groups hash by id into the users' slots).
    pub groups: usize,
}

/// Removes the entries of `map` whose key `in_slot` picks and whose value nobody uses
/// (`free`). Returns (removed, picked but in use).
pub(crate) fn remove_free<K, V>(
    map: &mut std::collections::HashMap<K, V>,
    in_slot: impl Fn(&K) -> bool,
    mut free: impl FnMut(&V) -> bool,
) -> (usize, usize) {
    let (mut removed, mut busy) = (0, 0);
    map.retain(|k, v| {
        if !in_slot(k) {
            return true;
        }
        if free(v) {
            removed += 1;
            return false;
        }
        busy += 1;
        true
    });
    (removed, busy)
}

/// Removes the entries of one shard (the slot's: see `slots::shard_of_slot`) that
/// `in_slot` picks, waiting for those in use (`free` says whether nobody uses one).
/// Returns the entries removed.
pub(crate) async fn drop_slot_in_shard<K: Eq + std::hash::Hash, V>(
    shard: &std::sync::Mutex<std::collections::HashMap<K, V>>,
    in_slot: impl Fn(&K) -> bool,
    free: impl Fn(&V) -> bool,
) -> usize {
    remove_when_free(|| remove_free(&mut shard.lock().unwrap_or_else(|p| p.into_inner()), &in_slot, &free)).await
}

/// Runs `pass` (one [`remove_free`] over a structure: (removed, in use)) until nothing
/// it picks is in use, pausing briefly between passes. Returns the entries removed.
pub(crate) async fn remove_when_free(mut pass: impl FnMut() -> (usize, usize)) -> usize {
    let mut removed = 0;
    loop {
        let (r, busy) = pass();
        removed += r;
        if busy == 0 {
            return removed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Gives up `slot` on this node (see the module docs). Waits for the slot's writes in
/// flight to finish.
pub async fn drop_slot(logic: &Logic, slot: Slot) -> SlotDropped {
    // Acks coalesced so far are written while the slot is still ours (later ones for
    // its users are dropped at flush: the devices pull again).
    if let Err(e) = crate::messages::flush_acks(logic).await {
        tracing::warn!(error = %e, slot = slot.0, "flushing device acks before a slot drop failed");
    }
    // Seqs first: with allocation refused no new write of the slot starts, and a
    // friendship change holds its views until its write is done.
    let seq_states = logic.seqs.drop_slot(slot).await;
    let friend_views = logic.friends.drop_slot(slot).await;
    let joined_views = logic.groups.drop_views_of_slot(slot).await;
    let groups = logic.groups.drop_slot(slot).await;
    let conversation_views = logic.conversations.drop_slot(slot).await;
    let cached_users = logic.user_cache.forget_slot(slot);
    metrics::counter!("tern_slot_drops_total").increment(1);
    SlotDropped { seq_states, friend_views, joined_views, conversation_views, cached_users, groups }
}

/// Owns `slot` (again) on this node.
pub fn take_slot(logic: &Logic, slot: Slot) {
    logic.seqs.take_slot(slot);
}
