//! Slots: every user hashes to one of [`SLOTS`] slots, and each slot is owned by exactly
//! one logic node — the only writer of that slot's users' sequences and logs
//! (design.md §2). This node owns every slot today; the multi-node work moves slots
//! between nodes through [`SlotOwnership`] without touching the code that writes.
//!
//! The hash is FNV-1a over (app id, user id): stable across processes, builds and Rust
//! versions, which a cluster needs (std's `DefaultHasher` promises none of that).

use std::sync::atomic::{AtomicBool, Ordering};

use tern_storage::{AppId, UserId};

/// Number of slots. Fixed: changing it re-homes every user.
pub const SLOTS: u16 = 4096;

/// One slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u16);

/// The slot of a user.
pub fn slot_of(app: AppId, user: &UserId) -> Slot {
    slot_of_id(app, user.as_str())
}

/// The slot of an owner id: a user's, or a group's (groups hash by their id in the same
/// space, so a slot holds users and groups alike).
pub fn slot_of_id(app: AppId, id: &str) -> Slot {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in app.0.to_be_bytes().iter().chain([0u8].iter()).chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    Slot((h % u64::from(SLOTS)) as u16)
}

/// The shard (of `shards`) holding an owner's entries in a per-owner structure. Every
/// such structure (seq states, parked deliveries, friend views, user locks, groups and
/// joined-groups views) shards by slot, so a slot's entries sit in one shard of each:
/// a slot drop scans that one, and a slot's owners share locks and move together.
pub fn shard_of_id(app: AppId, id: &str, shards: usize) -> usize {
    shard_of_slot(slot_of_id(app, id), shards)
}

/// The shard (of `shards`) holding `slot`'s entries (see [`shard_of_id`]).
pub fn shard_of_slot(slot: Slot, shards: usize) -> usize {
    slot.0 as usize % shards
}

/// Which slots this node owns. Ownership changes at run time (a slot given up to move
/// it, taken again), so the flags are atomics: every allocation reads one, a move
/// writes one.
#[derive(Debug)]
pub struct SlotOwnership {
    owned: Box<[AtomicBool]>,
}

impl SlotOwnership {
    /// A single-node deployment: every slot.
    pub fn all() -> Self {
        Self { owned: (0..SLOTS).map(|_| AtomicBool::new(true)).collect() }
    }

    /// Exactly these slots.
    pub fn only(slots: impl IntoIterator<Item = Slot>) -> Self {
        let owned: Box<[AtomicBool]> = (0..SLOTS).map(|_| AtomicBool::new(false)).collect();
        for s in slots {
            owned[s.0 as usize].store(true, Ordering::Relaxed);
        }
        Self { owned }
    }

    pub fn owns(&self, slot: Slot) -> bool {
        self.owned[slot.0 as usize].load(Ordering::Acquire)
    }

    /// Whether this node may write `user`'s sequences and logs.
    pub fn owns_user(&self, app: AppId, user: &UserId) -> bool {
        self.owns(slot_of(app, user))
    }

    /// Stops owning `slot`: from now on nothing of it is written here.
    pub fn release(&self, slot: Slot) {
        self.owned[slot.0 as usize].store(false, Ordering::Release);
    }

    /// Owns `slot` (again).
    pub fn take(&self, slot: Slot) {
        self.owned[slot.0 as usize].store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn stable_and_in_range() {
        assert_eq!(slot_of(AppId(10_000), &u("alice")), slot_of(AppId(10_000), &u("alice")));
        let a = slot_of(AppId(1), &u("alice"));
        let b = slot_of(AppId(2), &u("alice"));
        assert!(a.0 < SLOTS && b.0 < SLOTS);
    }

    #[test]
    fn spreads_users_over_slots() {
        let mut used = std::collections::HashSet::new();
        for i in 0..20_000 {
            used.insert(slot_of(AppId(1), &u(&format!("user{i}"))));
        }
        assert!(used.len() > 4_000, "only {} of 4096 slots used", used.len());
    }

    #[test]
    fn ownership() {
        let alice = u("alice");
        let s = slot_of(AppId(1), &alice);
        assert!(SlotOwnership::all().owns_user(AppId(1), &alice));
        assert!(SlotOwnership::only([s]).owns_user(AppId(1), &alice));
        assert!(!SlotOwnership::only([Slot((s.0 + 1) % SLOTS)]).owns_user(AppId(1), &alice));
    }
}
