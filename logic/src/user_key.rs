//! Maps keyed by user, looked up without copying the user id.
//!
//! The hot paths look users up many times per message (the seq state at allocation,
//! completion and watermark reads, the sessions of every push). Keyed by the owned
//! `(AppId, UserId)`, each lookup would clone the id's `String`: an allocation and a
//! free per lookup. [`UserKeyRef`] borrows it instead and hashes and compares like the
//! owned key, so `map.get(&UserKeyRef(app, user.as_str()))` finds the same entry.

use tern_storage::{AppId, UserId};

/// A user's key borrowed from a lookup's arguments.
#[derive(Hash)]
pub(crate) struct UserKeyRef<'a>(pub AppId, pub &'a str);

impl hashbrown::Equivalent<(AppId, UserId)> for UserKeyRef<'_> {
    fn equivalent(&self, key: &(AppId, UserId)) -> bool {
        self.0 == key.0 && self.1 == key.1.as_str()
    }
}

impl<'a> UserKeyRef<'a> {
    pub(crate) fn new(app: AppId, user: &'a UserId) -> Self {
        Self(app, user.as_str())
    }
}

/// A map keyed by user. std's SipHash (`RandomState`), as for every other map here:
/// user ids come from outside.
pub(crate) type UserMap<V> = hashbrown::HashMap<(AppId, UserId), V, std::hash::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A borrowed key finds exactly the entries of its owned twin (same app and id),
    /// whatever the ids: the derived hashes of `(AppId, UserId)` and `UserKeyRef` must
    /// agree, or every lookup would miss.
    #[test]
    fn borrowed_user_keys_find_owned_entries() {
        let mut map = UserMap::<u64>::default();
        let ids = ["a", "alice", "bob_2", "x-y.z", "0123456789012345678901234567890123456789"];
        for (i, id) in ids.iter().enumerate() {
            map.insert((AppId(i as u32 % 2), UserId::new(*id).unwrap()), i as u64);
        }
        for (i, id) in ids.iter().enumerate() {
            let app = AppId(i as u32 % 2);
            let found = map.get(&UserKeyRef(app, id)).expect("owned entry found by a borrowed key");
            assert_eq!(*found, i as u64);
            assert!(map.get(&UserKeyRef(AppId(app.0 + 1), id)).is_none(), "another app's user is another key");
        }
        assert!(map.get(&UserKeyRef(AppId(0), "nobody")).is_none());
    }
}
