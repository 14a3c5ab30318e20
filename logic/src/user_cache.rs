//! A cache of user existence and deletion state for the message path, so a send does not
//! read two user records from the store. Only this node writes users of the slots it
//! owns, and every write of a user record goes through [`crate::users`], which updates
//! this cache after the write is durable; reads fill it only when no user write happened
//! while they were reading (an epoch check), so a concurrent import or delete can never
//! leave a stale entry behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tern_storage::{AppId, Store, StoreError, UserId};

/// Entries kept before the cache starts over (≈ 100 B each).
const MAX_ENTRIES: usize = 1 << 20;

/// What the message path needs to know about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Missing,
    Active,
    /// Active, but may not send (`silentFlag`): 50002.
    Muted,
    /// May neither log in nor send (`forbiddenFlag`): 50003.
    Disabled,
    Deleted,
}

impl UserState {
    /// The state a stored record puts its user in.
    pub fn of(rec: &tern_storage::UserRecord) -> Self {
        if rec.deleted {
            UserState::Deleted
        } else if rec.forbidden_flag {
            UserState::Disabled
        } else if rec.silent_flag {
            UserState::Muted
        } else {
            UserState::Active
        }
    }
}

#[derive(Default)]
pub struct UserCache {
    epoch: AtomicU64,
    /// Never `Missing`: a missing user could be imported behind a cached answer.
    map: Mutex<HashMap<(AppId, UserId), UserState>>,
}

impl UserCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AppId, UserId), UserState>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records durable user writes: (user, its new state).
    pub fn written(&self, app: AppId, users: impl IntoIterator<Item = (UserId, UserState)>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut g = self.lock();
        for (u, state) in users {
            if state == UserState::Missing {
                g.remove(&(app, u));
            } else {
                g.insert((app, u), state);
            }
        }
    }

    /// The cached state of a user, if any (never `Missing`).
    pub fn get(&self, app: AppId, user: &UserId) -> Option<UserState> {
        self.lock().get(&(app, user.clone())).copied()
    }

    /// Take before reading users from the store; pass to [`fill`](Self::fill) after.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches states read from the store since `epoch`, unless a user write happened
    /// meanwhile (the read may then predate it). Missing users are never cached: an
    /// import would have to race with the entry.
    pub fn fill<'a>(&self, app: AppId, epoch: u64, read: impl IntoIterator<Item = (&'a UserId, UserState)>) {
        let mut g = self.lock();
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if g.len() > MAX_ENTRIES {
            g.clear();
        }
        for (u, s) in read {
            if s != UserState::Missing {
                g.insert((app, u.clone()), s);
            }
        }
    }

    /// Forgets the users of `slot`, given up by this node (another node may write them
    /// before it comes back). Reads begun before are not cached either (the epoch
    /// moves). Returns how many entries went.
    pub fn forget_slot(&self, slot: crate::slots::Slot) -> usize {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut g = self.lock();
        let before = g.len();
        g.retain(|(app, user), _| crate::slots::slot_of(*app, user) != slot);
        before - g.len()
    }

    /// The state of each user, from the cache or the store.
    pub async fn states(&self, store: &dyn Store, app: AppId, users: &[UserId]) -> Result<Vec<UserState>, StoreError> {
        let cached: Vec<Option<UserState>> = {
            let g = self.lock();
            users.iter().map(|u| g.get(&(app, u.clone())).copied()).collect()
        };
        if cached.iter().all(Option::is_some) {
            return Ok(cached.into_iter().flatten().collect());
        }
        let epoch = self.epoch();
        let found = store.get_users(app, users).await?;
        let states: Vec<UserState> =
            found.iter().map(|r| r.as_ref().map_or(UserState::Missing, UserState::of)).collect();
        self.fill(app, epoch, users.iter().zip(states.iter().copied()));
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tern_storage::{UserRecord, WriteBatch};
    use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};

    #[tokio::test]
    async fn follows_writes_and_never_caches_missing_users() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let cache = UserCache::new();
        let app = AppId(1);
        let a = UserId::new("a").unwrap();
        assert_eq!(cache.states(&*store, app, std::slice::from_ref(&a)).await.unwrap(), vec![UserState::Missing]);
        let mut b = WriteBatch::new();
        b.put_user(app, UserRecord::new(a.clone(), 1));
        store.write(b).await.unwrap();
        // Not cached as missing: the store is read again.
        assert_eq!(cache.states(&*store, app, std::slice::from_ref(&a)).await.unwrap(), vec![UserState::Active]);
        cache.written(app, [(a.clone(), UserState::Deleted)]);
        assert_eq!(cache.states(&*store, app, std::slice::from_ref(&a)).await.unwrap(), vec![UserState::Deleted]);
    }

    #[test]
    fn fill_skips_reads_that_raced_a_write() {
        let cache = UserCache::new();
        let app = AppId(1);
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        let before = cache.epoch();
        cache.written(app, [(b.clone(), UserState::Deleted)]);
        // Read before the write: it may be older than the write, so it is not kept.
        cache.fill(app, before, [(&a, UserState::Active)]);
        assert_eq!(cache.get(app, &a), None);
        let now = cache.epoch();
        cache.fill(app, now, [(&a, UserState::Disabled), (&b, UserState::Missing)]);
        assert_eq!(cache.get(app, &a), Some(UserState::Disabled));
        assert_eq!(cache.get(app, &b), Some(UserState::Deleted), "a missing read never replaces an entry");
    }

    /// A slot given up leaves nothing of its users behind, not even a read begun before.
    #[test]
    fn forgetting_a_slot_drops_its_users_and_earlier_reads() {
        use crate::slots::slot_of;
        let cache = UserCache::new();
        let app = AppId(1);
        let a = UserId::new("a").unwrap();
        let other =
            (0..100).map(|i| UserId::new(format!("o{i}")).unwrap()).find(|o| slot_of(app, o) != slot_of(app, &a));
        let other = other.expect("some id hashes to another slot");
        let epoch = cache.epoch();
        cache.fill(app, epoch, [(&a, UserState::Active), (&other, UserState::Muted)]);
        let before_drop = cache.epoch();
        assert_eq!(cache.forget_slot(slot_of(app, &a)), 1);
        assert_eq!((cache.get(app, &a), cache.get(app, &other)), (None, Some(UserState::Muted)));
        cache.fill(app, before_drop, [(&a, UserState::Active)]);
        assert_eq!(cache.get(app, &a), None, "a read begun before the drop may predate the other node's writes");
    }
}
