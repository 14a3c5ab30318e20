//! A user's conversation flags that the push and pull paths need without the
//! conversation view: which conversations they muted (pushes carry `Push.silent`) and
//! up to where they cleared a group's history (group pull and history hide it).
//!
//! Stored as ONE entry (seq 1) of the user's server-internal `ConversationFlags` log,
//! rewritten in the same batch as the conversation-log entry that changes a flag; read
//! at login in the login batch's one store trip (`login.rs`), so from a user's first
//! push after a restart the flags are in memory. The in-memory [`FlagIndex`] holds the
//! flags of users that have any, by user and, for the group fan-out, by group (who
//! muted it); users without flags cost nothing. Entries of users with no session are
//! swept once the index doubles (they are read again at the next login), so it holds
//! about the online users that have flags.
//!
//! Must never: be read from the store on the push path, or lose a flag of an online
//! user (a login read older than the entry in memory does not replace it: entries carry
//! a version, the write time made monotonic).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tern_storage::{AppId, Conversation, GroupId, LogEntry, Seq, UserId};

use super::record::target_of;

/// Most conversations one user may mute (a mute beyond is refused): bounds the entry
/// and the memory the push path reads.
pub const MAX_MUTED: usize = 1000;

/// The seq the one entry lives at.
pub const FLAGS_SEQ: Seq = Seq(1);

/// A user's flags (stored as JSON; every field defaulted, so a field added later needs
/// no migration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flags {
    #[serde(default)]
    pub v: u8,
    /// Monotonic per user: a stale read never replaces a newer entry in memory.
    #[serde(default)]
    pub version: u64,
    /// Muted 1:1 peers.
    #[serde(default)]
    pub muted_users: Vec<String>,
    /// Muted groups.
    #[serde(default)]
    pub muted_groups: Vec<String>,
    /// Groups whose history the user cleared, with the group seq cleared up to.
    #[serde(default)]
    pub cleared_groups: Vec<(String, u64)>,
}

impl Flags {
    pub const VERSION: u8 = 1;

    pub fn is_empty(&self) -> bool {
        self.muted_users.is_empty() && self.muted_groups.is_empty() && self.cleared_groups.is_empty()
    }

    pub fn entry(&self, time_ms: u64) -> LogEntry {
        LogEntry { seq: FLAGS_SEQ, time_ms, payload: bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default()) }
    }

    /// Whether a read of the user's `ConversationFlags` log found the entry (users of
    /// a build before it existed may have mutes only in their conversation records).
    pub fn stored_in(entries: &[LogEntry]) -> bool {
        entries.iter().any(|e| e.seq == FLAGS_SEQ)
    }

    /// The flags of a read of the user's `ConversationFlags` log (empty if none).
    pub fn from_entries(entries: &[LogEntry]) -> Result<Self, String> {
        match entries.iter().find(|e| e.seq == FLAGS_SEQ) {
            None => Ok(Self::default()),
            Some(e) => serde_json::from_slice(&e.payload).map_err(|err| format!("conversation flags: {err}")),
        }
    }
}

/// The flags of one user as the hot paths read them.
#[derive(Debug, Default)]
pub struct Held {
    pub version: u64,
    pub muted: HashSet<Conversation>,
    /// The muted 1:1 peers again, looked up by `&str` (no allocation per push).
    pub peers: HashSet<String>,
    pub cleared: HashMap<GroupId, Seq>,
    /// When it was put here (a sweep spares entries younger than a login takes).
    pub since_ms: u64,
}

impl Held {
    fn of(f: &Flags, now_ms: u64) -> Self {
        let mut muted = HashSet::with_capacity(f.muted_users.len() + f.muted_groups.len());
        muted.extend(f.muted_users.iter().filter_map(|u| UserId::new(u.clone()).ok()).map(Conversation::Single));
        muted.extend(f.muted_groups.iter().filter_map(|g| GroupId::new(g.clone()).ok()).map(Conversation::Group));
        let cleared =
            f.cleared_groups.iter().filter_map(|(g, s)| GroupId::new(g.clone()).ok().map(|g| (g, Seq(*s)))).collect();
        let peers = f.muted_users.iter().cloned().collect();
        Self { version: f.version, muted, peers, cleared, since_ms: now_ms }
    }
}

#[derive(Default)]
struct Inner {
    users: HashMap<(AppId, UserId), Arc<Held>>,
    /// Who muted each group (copy-on-write: a fan-out clones the `Arc`, not the set).
    group_muters: HashMap<(AppId, GroupId), Arc<HashSet<UserId>>>,
    /// Sweep when `users` grows past this.
    sweep_at: usize,
}

/// The flags of users that have any (see the module docs).
#[derive(Default)]
pub struct FlagIndex {
    inner: RwLock<Inner>,
    /// Users with a muted 1:1 conversation, groups with a muter: while 0 the push
    /// paths take no lock.
    single_muters: AtomicUsize,
    groups_muted: AtomicUsize,
}

/// Users held before the first sweep.
const FIRST_SWEEP: usize = 1024;
/// A login reads the flags, then admits the session: an entry this young is spared.
const SPARE_MS: u64 = 60_000;

impl FlagIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `user`'s flags are in memory.
    pub fn has(&self, app: AppId, user: &UserId) -> bool {
        self.read().users.contains_key(&(app, user.clone()))
    }

    /// The flags of `user` if in memory.
    pub fn get(&self, app: AppId, user: &UserId) -> Option<Arc<Held>> {
        self.read().users.get(&(app, user.clone())).cloned()
    }

    /// Whether every peer in `peers` is a 1:1 conversation `user` muted (false for an
    /// empty list).
    pub fn all_muted<'a>(&self, app: AppId, user: &UserId, mut peers: impl Iterator<Item = &'a str>) -> bool {
        if self.single_muters.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let g = self.read();
        let Some(h) = g.users.get(&(app, user.clone())) else { return false };
        let mut any = false;
        let all = peers.all(|p| {
            any = true;
            h.peers.contains(p)
        });
        any && all
    }

    /// The members who muted `group` (`None`: nobody; the common case costs one atomic
    /// load).
    pub fn muters(&self, app: AppId, group: &GroupId) -> Option<Arc<HashSet<UserId>>> {
        if self.groups_muted.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.read().group_muters.get(&(app, group.clone())).cloned()
    }

    /// Puts `user`'s flags in memory unless a newer version is there. `online` says
    /// whether a user has a session (for the sweep).
    pub fn install(&self, app: AppId, user: &UserId, f: &Flags, now_ms: u64, online: impl Fn(AppId, &UserId) -> bool) {
        let key = (app, user.clone());
        let mut g = self.write();
        let old = g.users.get(&key).cloned();
        if old.as_ref().is_some_and(|o| o.version > f.version) {
            return;
        }
        if f.is_empty() && old.is_none() {
            // Nothing to hold (a user without flags costs nothing).
            return;
        }
        // Emptied flags stay as an entry until swept: a login read still in flight
        // (older version) must not bring the old flags back.
        let new = Some(Arc::new(Held::of(f, now_ms)));
        let groups_of = |h: &Option<Arc<Held>>| -> HashSet<GroupId> {
            h.iter()
                .flat_map(|h| h.muted.iter())
                .filter_map(|c| match c {
                    Conversation::Group(g) => Some(g.clone()),
                    Conversation::Single(_) => None,
                })
                .collect()
        };
        let (before, after) = (groups_of(&old), groups_of(&new));
        for gid in before.difference(&after) {
            let k = (app, gid.clone());
            if let Some(set) = g.group_muters.get_mut(&k) {
                let mut s = (**set).clone();
                s.remove(user);
                if s.is_empty() {
                    g.group_muters.remove(&k);
                } else {
                    *set = Arc::new(s);
                }
            }
        }
        for gid in after.difference(&before) {
            let set = g.group_muters.entry((app, gid.clone())).or_default();
            let mut s = (**set).clone();
            s.insert(user.clone());
            *set = Arc::new(s);
        }
        let single = |h: &Option<Arc<Held>>| {
            h.as_ref().is_some_and(|h| h.muted.iter().any(|c| matches!(c, Conversation::Single(_))))
        };
        let delta = (single(&new) as isize) - (single(&old) as isize);
        if let Some(h) = new {
            g.users.insert(key, h);
        }
        if delta > 0 {
            self.single_muters.fetch_add(1, Ordering::Relaxed);
        } else if delta < 0 {
            self.single_muters.fetch_sub(1, Ordering::Relaxed);
        }
        self.groups_muted.store(g.group_muters.len(), Ordering::Relaxed);
        if g.users.len() > g.sweep_at.max(FIRST_SWEEP) {
            self.sweep(&mut g, now_ms, online);
        }
    }

    /// Drops the flags of users without a session (read again at their next login).
    fn sweep(&self, g: &mut Inner, now_ms: u64, online: impl Fn(AppId, &UserId) -> bool) {
        let gone: Vec<(AppId, UserId)> = g
            .users
            .iter()
            .filter(|((a, u), h)| now_ms.saturating_sub(h.since_ms) > SPARE_MS && !online(*a, u))
            .map(|(k, _)| k.clone())
            .collect();
        for (app, user) in gone {
            let Some(h) = g.users.remove(&(app, user.clone())) else { continue };
            if h.muted.iter().any(|c| matches!(c, Conversation::Single(_))) {
                self.single_muters.fetch_sub(1, Ordering::Relaxed);
            }
            for c in &h.muted {
                if let Conversation::Group(gid) = c {
                    let k = (app, gid.clone());
                    if let Some(set) = g.group_muters.get_mut(&k) {
                        let mut s = (**set).clone();
                        s.remove(&user);
                        if s.is_empty() {
                            g.group_muters.remove(&k);
                        } else {
                            *set = Arc::new(s);
                        }
                    }
                }
            }
        }
        self.groups_muted.store(g.group_muters.len(), Ordering::Relaxed);
        g.sweep_at = g.users.len().saturating_mul(2);
    }

    /// Users whose flags are held.
    pub fn len(&self) -> usize {
        self.read().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The flags a view says (muted conversations, group clear floors above the join).
pub fn of_view<'a>(convs: impl Iterator<Item = (&'a Conversation, &'a super::view::Conv)>, version: u64) -> Flags {
    let mut f = Flags { v: Flags::VERSION, version, ..Flags::default() };
    for (conv, c) in convs {
        if c.is_mute {
            match conv {
                Conversation::Single(_) => f.muted_users.push(target_of(conv).to_string()),
                Conversation::Group(_) => f.muted_groups.push(target_of(conv).to_string()),
            }
        }
        if let Conversation::Group(g) = conv {
            if c.cleared_seq > c.join_seq {
                f.cleared_groups.push((g.as_str().to_string(), c.cleared_seq.0));
            }
        }
    }
    // A stable order: the same flags encode the same bytes.
    f.muted_users.sort_unstable();
    f.muted_groups.sort_unstable();
    f.cleared_groups.sort_unstable();
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn gid(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    fn flags(version: u64, users: &[&str], groups: &[&str]) -> Flags {
        Flags {
            v: 1,
            version,
            muted_users: users.iter().map(|s| s.to_string()).collect(),
            muted_groups: groups.iter().map(|s| s.to_string()).collect(),
            cleared_groups: vec![],
        }
    }

    #[test]
    fn mutes_are_indexed_by_user_and_group_and_stale_versions_lose() {
        let ix = FlagIndex::default();
        let (app, a, b) = (AppId(1), uid("a"), uid("b"));
        assert!(!ix.all_muted(app, &a, ["p"].into_iter()));
        assert!(ix.muters(app, &gid("g")).is_none());
        ix.install(app, &a, &flags(5, &["p"], &["g"]), 0, |_, _| true);
        ix.install(app, &b, &flags(1, &[], &["g"]), 0, |_, _| true);
        assert!(ix.all_muted(app, &a, ["p"].into_iter()));
        assert!(!ix.all_muted(app, &a, ["p", "q"].into_iter()));
        assert!(!ix.all_muted(app, &a, std::iter::empty()));
        assert!(!ix.all_muted(AppId(2), &a, ["p"].into_iter()));
        assert_eq!(ix.muters(app, &gid("g")).unwrap().len(), 2);
        // An older read (a login racing a mute) does not win.
        ix.install(app, &a, &flags(4, &[], &[]), 0, |_, _| true);
        assert!(ix.all_muted(app, &a, ["p"].into_iter()));
        // Unmuting everything empties the user's entry (kept against stale reads) and
        // their group entries.
        ix.install(app, &a, &flags(6, &[], &[]), 0, |_, _| true);
        assert!(ix.get(app, &a).unwrap().muted.is_empty());
        assert!(!ix.all_muted(app, &a, ["p"].into_iter()));
        ix.install(app, &a, &flags(5, &["p"], &["g"]), 0, |_, _| true);
        assert!(!ix.all_muted(app, &a, ["p"].into_iter()), "a stale read brought a mute back");
        assert_eq!(*ix.muters(app, &gid("g")).unwrap(), HashSet::from([b.clone()]));
        ix.install(app, &b, &flags(2, &[], &[]), 0, |_, _| true);
        assert!(ix.muters(app, &gid("g")).is_none());
        // A user without flags is not held.
        ix.install(app, &uid("c"), &flags(1, &[], &[]), 0, |_, _| true);
        assert!(!ix.has(app, &uid("c")));
    }

    #[test]
    fn a_sweep_drops_offline_users_only() {
        let ix = FlagIndex::default();
        let app = AppId(1);
        for i in 0..FIRST_SWEEP {
            ix.install(app, &uid(&format!("u{i}")), &flags(1, &["p"], &["g"]), 0, |_, _| true);
        }
        // The next user makes it sweep: only even users are online.
        let online = |_: AppId, u: &UserId| u.as_str().trim_start_matches('u').parse::<usize>().unwrap() % 2 == 0;
        let last = uid(&format!("u{FIRST_SWEEP}"));
        ix.install(app, &last, &flags(2, &["p"], &["g"]), SPARE_MS + 1, online);
        assert_eq!(ix.len(), FIRST_SWEEP / 2 + 1);
        assert!(ix.all_muted(app, &uid("u2"), ["p"].into_iter()));
        assert!(!ix.all_muted(app, &uid("u1"), ["p"].into_iter()));
        assert_eq!(ix.muters(app, &gid("g")).unwrap().len(), FIRST_SWEEP / 2 + 1);
    }

    #[test]
    fn flags_round_trip_and_an_absent_entry_is_empty() {
        let f = flags(3, &["p"], &["g"]);
        assert_eq!(Flags::from_entries(&[f.entry(9)]).unwrap(), f);
        assert!(Flags::from_entries(&[]).unwrap().is_empty());
    }
}
