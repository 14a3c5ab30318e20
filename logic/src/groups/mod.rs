//! Groups: the business rules behind `/v1/group/...` (issue 11) and group messages.
//!
//! # State
//!
//! The source of truth is the store: a [`GroupRecord`] per group, a
//! [`GroupMemberRecord`] per (group, member), and each user's `GroupList` sync log
//! (the joined-groups log: every entry is the full new state of the user's membership
//! of one group — or a tombstone when they left or the group was dissolved — see
//! [`JoinedRecord`]). Group messages live in the group's own `Message` timeline
//! (`Owner::Group`): written once, read by every member (read fan-out).
//!
//! In memory, the slot owner (this node) keeps per group a [`GroupState`] — the record,
//! every member, the timeline's seq allocator and the sends in flight — loaded on first
//! touch and updated in place after each durable write, all under the group's async
//! lock. Every change of a group runs under that lock, and every group send takes it
//! twice, briefly: to be checked and handed its seq, and after its write to be pushed
//! in seq order (the write itself runs outside: see `send.rs`). So the state is
//! coherent, a member's `join_seq` (the timeline's last seq when they joined) is exact,
//! and group sends get seqs in lock order. A write that fails drops the state (and the
//! joined views it touched); the next access reloads from the store — unless sends are
//! in flight: then the state stays for them, marked stale, and the next lock reloads only
//! its record and members ([`write_failed`]). A new group's first seq bound is written
//! with it, and busy groups raise theirs ahead in the background, so a send's seq never
//! waits for a bound write in steady use. At most
//! `messages.max_loaded_groups` groups stay loaded ([`Groups::evict`]). Per user, a joined-groups
//! view (group id → membership) is folded from the user's `GroupList` log on first
//! access, like the friend views, and kept the same way.
//!
//! Lock order: a group's lock, then joined views in user id order. Joined views are
//! leaves: nothing waits for a group lock while holding one.
//!
//! # Rules
//!
//! - Roles: 0 member, 1 admin, 2 owner. An app admin (a management call that names no
//!   acting user) may do everything; a call that names one (`operater`) is held to
//!   that user's role: profile changes, removing members, muting: owner or admin
//!   (40007); role changes, dissolving, transferring: owner only (40009); the owner
//!   cannot be removed (40010) and admins cannot remove or mute admins (40007).
//! - Unknown group 40000, existing id on create 40001, already a member 40003, full
//!   40005, not a member 40006, group muted 40012, member muted 40017, dissolved
//!   40018; a public group needs an owner (40016).
//! - Every membership or profile change appends to each affected user's joined-groups
//!   log and notifies their online devices (SyncNotify of `GroupList`); imports notify
//!   nobody.
//!
//! Per user, joined views are bounded like group states (`messages.max_joined_views`,
//! least recently used idle views dropped and folded again on their next use).
//!
//! No per-device position in a group timeline is kept: gateways drop group PushAcks
//! (the client keeps its group sync points; read receipts come from ReadReceipts).
//!
//! Not yet (see ARCHITECTURE.md): a profile change of a very large group appends to
//! every member's log (O(members), off the send path), and read receipts pushed to
//! senders (they ask: `receipts`).
//!
//! This module must never know about HTTP (no status codes, request JSON paths or axum
//! types) and never encode wire frames beyond `tern_schema`.

mod ops;
mod send;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_schema::{client, encode};
use tern_storage::{
    AppId, GroupId, GroupMemberRecord, GroupRecord, Owner, Seq, StoreError, SyncKind, UserId, WriteBatch,
};
use tokio::sync::OwnedMutexGuard;

use crate::error::ServiceError;
use crate::Logic;

pub use ops::*;
pub use send::{
    finish, history, prepare, pull, read, recall, receipts, send, GroupPending, GroupPrepared, GroupSend, Receipts,
};

/// Group error codes (40000s), as the original system numbered them.
pub mod errors {
    /// No such group.
    pub const NO_SUCH_GROUP: u32 = 40000;
    /// A group with this id exists already (create / import).
    pub const GROUP_EXISTS: u32 = 40001;
    /// The user is a member already.
    pub const ALREADY_MEMBER: u32 = 40003;
    /// The group is full (`maxMemberCount`).
    pub const GROUP_FULL: u32 = 40005;
    /// The user is not a member of the group.
    pub const NOT_MEMBER: u32 = 40006;
    /// Only the owner or an admin may do this.
    pub const ADMIN_ONLY: u32 = 40007;
    /// Only the owner may do this.
    pub const OWNER_ONLY: u32 = 40009;
    /// The owner cannot be removed (transfer the group first).
    pub const OWNER_NOT_REMOVABLE: u32 = 40010;
    /// The whole group is muted: only the owner and admins may send.
    pub const GROUP_MUTED: u32 = 40012;
    /// A public group must have an owner.
    pub const PUBLIC_NEEDS_OWNER: u32 = 40016;
    /// The member is muted (until `speakDate`).
    pub const MEMBER_MUTED: u32 = 40017;
    /// The group was dissolved.
    pub const DESTROYED: u32 = 40018;
}

/// Member roles.
pub mod roles {
    pub const MEMBER: u8 = 0;
    pub const ADMIN: u8 = 1;
    pub const OWNER: u8 = 2;
}

/// Group types (`groupType`).
pub mod types {
    /// Private / work group.
    pub const PRIVATE: u8 = 1;
    /// Public group: needs an owner.
    pub const PUBLIC: u8 = 2;
    /// Meeting / chat room.
    pub const MEETING: u8 = 3;
    /// Community: very large groups.
    pub const COMMUNITY: u8 = 4;
}

/// `maxMemberCount` when a group gives none.
pub const DEFAULT_MAX_MEMBERS: u32 = 100_000;
/// The largest `maxMemberCount` accepted.
pub const MAX_MEMBERS: u32 = 1_000_000;
/// Longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest introduction / notification / extra, in characters (the store caps bytes).
pub const MAX_TEXT_CHARS: usize = 2048;
/// Longest photo URL, in characters.
pub const MAX_PHOTO_CHARS: usize = 512;
/// Longest alias (name card) and join type, in characters.
pub const MAX_ALIAS_CHARS: usize = 64;
/// Members read per store page when a group is loaded.
const LOAD_PAGE: usize = 1_000;
/// Most log entries per store batch when a change touches many users.
const MAX_BATCH_ENTRIES: usize = 512;

/// Who acts: an app admin (every right) or a user held to their role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin,
    User(UserId),
}

/// One user's membership of one group, as their joined-groups log holds it (versioned
/// JSON; `left` makes it a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedRecord {
    #[serde(rename = "v")]
    pub version: u8,
    pub group_id: GroupId,
    #[serde(default)]
    pub group_type: u8,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub role: u8,
    #[serde(default)]
    pub join_time_ms: u64,
    /// The user is no longer a member (removed, left, or the group was dissolved).
    #[serde(default)]
    pub left: bool,
    /// The group was dissolved.
    #[serde(default)]
    pub destroyed: bool,
    /// When the change was made.
    #[serde(default)]
    pub time_ms: u64,
}

impl JoinedRecord {
    const VERSION: u8 = 1;

    /// The live membership of `m` in `g`.
    pub fn member(g: &GroupRecord, m: &GroupMemberRecord, now: u64) -> Self {
        Self {
            version: Self::VERSION,
            group_id: g.group_id.clone(),
            group_type: g.group_type,
            group_name: g.group_name.clone(),
            role: m.role,
            join_time_ms: m.join_time_ms,
            left: false,
            destroyed: g.destroyed,
            time_ms: now,
        }
    }

    /// The tombstone of a membership of `g` that ended.
    pub fn left(g: &GroupRecord, now: u64) -> Self {
        Self {
            version: Self::VERSION,
            group_id: g.group_id.clone(),
            group_type: g.group_type,
            group_name: g.group_name.clone(),
            role: roles::MEMBER,
            join_time_ms: 0,
            left: true,
            destroyed: g.destroyed,
            time_ms: now,
        }
    }

    fn encode(&self) -> Result<Bytes, ServiceError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| ServiceError::Store(StoreError::Backend(format!("encoding a joined-group record: {e}"))))
    }

    fn decode(payload: &[u8]) -> Result<Self, StoreError> {
        let r: Self = serde_json::from_slice(payload)
            .map_err(|e| StoreError::corrupt(format!("joined-group log entry does not decode: {e}")))?;
        if r.version != Self::VERSION {
            return Err(StoreError::corrupt(format!("joined-group log entry of version {}", r.version)));
        }
        Ok(r)
    }
}

/// A group in memory: its record, every member, its timeline's seq allocator and the
/// sends in flight (pipelined: a seq is handed out under the lock, the write happens
/// outside it, and pushes wait here until every lower seq is settled).
#[derive(Debug)]
pub struct GroupState {
    pub rec: GroupRecord,
    pub members: HashMap<UserId, GroupMemberRecord>,
    /// The highest seq handed out in the group's timeline (durable or in flight).
    pub last_seq: Seq,
    /// The durable reserved bound of the timeline's seqs.
    bound: Seq,
    /// Seqs of sends whose write has not finished.
    in_flight: BTreeSet<Seq>,
    /// Durable messages waiting for a lower in-flight seq before they are pushed:
    /// (stored payload, the sending connection).
    parked: BTreeMap<Seq, (Bytes, Option<tern_schema::link::ConnRef>)>,
    /// No member joined above this seq: a message above it is visible to every member
    /// (a member who joined while a lower send was in flight must not get it).
    max_join_seq: Seq,
    /// When it was last locked (the node's group clock): eviction drops the oldest.
    touched: u64,
    /// A background write is raising `bound` (see `send::raise_ahead`).
    raising: bool,
    /// A change's write failed while sends were in flight: the record and members may
    /// not be what the store holds. The next lock reloads them, keeping the sends'
    /// pipeline (seqs, in flight, parked), so those sends are still pushed in order.
    stale: bool,
}

impl GroupState {
    fn new(rec: GroupRecord, members: HashMap<UserId, GroupMemberRecord>, last_seq: Seq, bound: Seq) -> Self {
        let max_join_seq = members.values().map(|m| m.join_seq).max().unwrap_or(Seq::ZERO);
        Self {
            rec,
            members,
            last_seq,
            bound,
            in_flight: BTreeSet::new(),
            parked: BTreeMap::new(),
            max_join_seq,
            touched: 0,
            raising: false,
            stale: false,
        }
    }

    /// The newest seq below which every send is settled (written or failed): pulls and
    /// history read up to here, never past a message still being written.
    pub fn committed(&self) -> Seq {
        match self.in_flight.first() {
            Some(s) => Seq(s.0 - 1),
            None => self.last_seq,
        }
    }

    /// Whether sends are in flight or waiting to be pushed (the state must stay).
    pub(crate) fn busy(&self) -> bool {
        !self.in_flight.is_empty() || !self.parked.is_empty() || self.raising
    }

    /// Takes the record and members of `fresh` (just read from the store), keeping
    /// this state's send pipeline.
    fn refresh(&mut self, fresh: GroupState) {
        self.rec = fresh.rec;
        self.members = fresh.members;
        self.max_join_seq = self.max_join_seq.max(fresh.max_join_seq);
        self.bound = self.bound.max(fresh.bound);
        self.stale = false;
    }

    fn role_of(&self, user: &UserId) -> Option<u8> {
        self.members.get(user).map(|m| m.role)
    }

    /// The actor's role; `None` for an app admin. A user who is not a member: 40006.
    fn actor_role(&self, actor: &Actor) -> Result<Option<u8>, ServiceError> {
        match actor {
            Actor::Admin => Ok(None),
            Actor::User(u) => self
                .role_of(u)
                .map(Some)
                .ok_or_else(|| ServiceError::refused(errors::NOT_MEMBER, format!("{u} is not a member of the group"))),
        }
    }

    /// Requires the actor to be an app admin, or a member with at least `min` role.
    fn require(&self, actor: &Actor, min: u8) -> Result<Option<u8>, ServiceError> {
        let role = self.actor_role(actor)?;
        match role {
            Some(r) if r < min && min == roles::OWNER => {
                Err(ServiceError::refused(errors::OWNER_ONLY, "only the group's owner may do this"))
            }
            Some(r) if r < min => {
                Err(ServiceError::refused(errors::ADMIN_ONLY, "only the group's owner or an admin may do this"))
            }
            _ => Ok(role),
        }
    }

    fn live(&self) -> Result<(), ServiceError> {
        if self.rec.destroyed {
            return Err(ServiceError::refused(errors::DESTROYED, format!("group {} was dissolved", self.rec.group_id)));
        }
        Ok(())
    }

    fn max_members(&self) -> u32 {
        match self.rec.max_member_count {
            0 => DEFAULT_MAX_MEMBERS,
            n => n,
        }
    }
}

/// A lazily loaded value behind its own async lock (`None`: not loaded).
type Lazy<T> = Arc<tokio::sync::Mutex<Option<T>>>;
/// One shard of a map of lazily loaded values.
type LazyShard<K, T> = Mutex<HashMap<K, Lazy<T>>>;
type Slot = Lazy<GroupState>;
type ViewSlot = Lazy<JoinedView>;
type GroupShard = LazyShard<(AppId, GroupId), GroupState>;
type ViewShard = LazyShard<(AppId, UserId), JoinedView>;
const SHARDS: usize = 64;

/// One user's joined groups, folded from their `GroupList` log: group → (record, seq).
#[derive(Debug, Default)]
pub struct JoinedView {
    pub groups: BTreeMap<GroupId, (JoinedRecord, Seq)>,
    /// When it was last locked (the node's group clock): eviction drops the oldest.
    touched: u64,
}

impl JoinedView {
    fn apply(&mut self, seq: Seq, r: JoinedRecord) {
        if r.left {
            self.groups.remove(&r.group_id);
        } else {
            self.groups.insert(r.group_id.clone(), (r, seq));
        }
    }

    async fn load(logic: &Logic, app: AppId, user: &UserId) -> Result<Self, StoreError> {
        let mut view = JoinedView::default();
        let mut after = Seq::ZERO;
        loop {
            let (entries, _, completed) = logic.read_synced(app, user, SyncKind::GroupList, after, LOAD_PAGE).await?;
            for e in &entries {
                view.apply(e.seq, JoinedRecord::decode(&e.payload)?);
            }
            match entries.last() {
                Some(last) if !completed => after = last.seq,
                _ => return Ok(view),
            }
        }
    }
}

/// The group state of the logic node: lazily loaded groups and joined views, each
/// behind its own lock. At most `messages.max_loaded_groups` groups stay loaded: past
/// it, [`Groups::evict`] drops the least recently used idle ones.
pub struct Groups {
    groups: Box<[GroupShard]>,
    views: Box<[ViewShard]>,
    /// Groups with state in memory (raised on every load; made exact by each eviction
    /// pass, so a state dropped elsewhere only brings the next pass sooner).
    loaded: AtomicUsize,
    /// Joined views in memory, counted the same way.
    views_loaded: AtomicUsize,
    /// The group clock: ticks on every lock of a loaded group or view.
    clock: AtomicU64,
    /// Groups being read from the store right now (their lock is held meanwhile), and
    /// how many: lets a link reader tell a cold group from a busy one without waiting
    /// ([`Groups::is_cold`]).
    loading: Mutex<HashSet<(AppId, GroupId)>>,
    loads: AtomicUsize,
}

/// Marks a group as loading while it lives (also when the load fails or is dropped).
struct LoadMark<'a> {
    groups: &'a Groups,
    key: (AppId, GroupId),
}

impl<'a> LoadMark<'a> {
    fn new(groups: &'a Groups, app: AppId, group: &GroupId) -> Self {
        let key = (app, group.clone());
        groups.loading.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        groups.loads.fetch_add(1, Ordering::Relaxed);
        LoadMark { groups, key }
    }
}

impl Drop for LoadMark<'_> {
    fn drop(&mut self) {
        self.groups.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
        self.groups.loads.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Groups {
    fn default() -> Self {
        Self {
            groups: (0..SHARDS).map(|_| Mutex::default()).collect(),
            views: (0..SHARDS).map(|_| Mutex::default()).collect(),
            loaded: AtomicUsize::new(0),
            views_loaded: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            loading: Mutex::default(),
            loads: AtomicUsize::new(0),
        }
    }
}

/// Drops idle entries of `shards`, least recently touched first, until at most `keep`
/// hold a value. Idle: nobody holds or waits for the entry's lock (the map's is the
/// only reference, so nobody can get one while the shard is locked) and `idle` says so
/// of the value. Also drops the free entries that hold nothing (ids that named no group,
/// views a change held without loading). Returns (entries holding a value, dropped).
fn evict_lru<K: Clone + Eq + std::hash::Hash, T>(
    shards: &[LazyShard<K, T>],
    keep: usize,
    touched: impl Fn(&T) -> u64,
    idle: impl Fn(&T) -> bool,
) -> (usize, usize) {
    // (touched, shard, key) of every idle entry with a value.
    let mut candidates: Vec<(u64, usize, K)> = Vec::new();
    let mut loaded = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|key, slot| {
            let free = Arc::strong_count(slot) == 1;
            match slot.try_lock() {
                Ok(g) => match g.as_ref() {
                    None => !free,
                    Some(v) => {
                        loaded += 1;
                        if free && idle(v) {
                            candidates.push((touched(v), i, key.clone()));
                        }
                        true
                    }
                },
                Err(_) => {
                    loaded += 1;
                    true
                }
            }
        });
    }
    let excess = loaded.saturating_sub(keep);
    candidates.sort_unstable_by_key(|(t, _, _)| *t);
    let mut dropped = 0;
    for (_, i, key) in candidates.into_iter().take(excess) {
        let mut m = shards[i].lock().unwrap_or_else(|p| p.into_inner());
        // Still idle? (It may have been touched since the scan.)
        let still = m.get(&key).is_some_and(|slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|g| g.as_ref().is_some_and(&idle))
        });
        if still {
            m.remove(&key);
            dropped += 1;
        }
    }
    (loaded, dropped)
}

fn shard_of(app: AppId, id: &str) -> usize {
    crate::slots::shard_of_id(app, id, SHARDS)
}

impl Groups {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, app: AppId, group: &GroupId) -> Slot {
        let mut g = self.groups[shard_of(app, group.as_str())].lock().unwrap_or_else(|p| p.into_inner());
        g.entry((app, group.clone())).or_default().clone()
    }

    fn view_slot(&self, app: AppId, user: &UserId) -> ViewSlot {
        let mut g = self.views[shard_of(app, user.as_str())].lock().unwrap_or_else(|p| p.into_inner());
        g.entry((app, user.clone())).or_default().clone()
    }

    /// Locks a group and loads its state if it exists (the guard holds `None` for a
    /// group that was never created).
    pub(crate) async fn lock(
        &self,
        logic: &Logic,
        app: AppId,
        group: &GroupId,
    ) -> Result<OwnedMutexGuard<Option<GroupState>>, StoreError> {
        self.lock_with(logic, app, group, true).await
    }

    /// [`Groups::lock`]; unless `strict`, a stale state whose reload failed is handed out
    /// as it is (completing a send needs only the pipeline and the members as they were).
    pub(crate) async fn lock_with(
        &self,
        logic: &Logic,
        app: AppId,
        group: &GroupId,
        strict: bool,
    ) -> Result<OwnedMutexGuard<Option<GroupState>>, StoreError> {
        let mut g = self.slot(app, group).lock_owned().await;
        if g.as_ref().is_some_and(|s| s.stale) {
            let _loading = LoadMark::new(self, app, group);
            match load_group(logic, app, group).await {
                Ok(Some(fresh)) => g.as_mut().expect("checked").refresh(fresh),
                // Group records are never deleted; if it is gone, so is the state.
                Ok(None) => *g = None,
                Err(e) if strict => return Err(e),
                Err(e) => tracing::warn!(error = %e, %group, "reloading a stale group failed; going on with it"),
            }
        }
        if g.is_none() {
            let loading = LoadMark::new(self, app, group);
            *g = load_group(logic, app, group).await?;
            drop(loading);
            if g.is_some() {
                self.loaded_one(logic);
            }
        }
        if let Some(s) = g.as_mut() {
            s.touched = self.clock.fetch_add(1, Ordering::Relaxed);
        }
        Ok(g)
    }

    /// Whether locking the group now would wait for the store: its state is not in
    /// memory (never touched, evicted, or to be reloaded), or another task is loading
    /// it. A group whose lock is merely held (a send or a change under way) is not cold:
    /// its holder does not wait for a read. A link reader asks this to keep cold groups'
    /// loads off its own task (`upstream`).
    pub(crate) fn is_cold(&self, app: AppId, group: &GroupId) -> bool {
        let key = (app, group.clone());
        let slot = {
            let g = self.groups[shard_of(app, group.as_str())].lock().unwrap_or_else(|p| p.into_inner());
            g.get(&key).cloned()
        };
        let Some(slot) = slot else { return true };
        let cold = match slot.try_lock() {
            Ok(g) => g.as_ref().is_none_or(|s| s.stale),
            Err(_) => {
                self.loads.load(Ordering::Relaxed) > 0
                    && self.loading.lock().unwrap_or_else(|p| p.into_inner()).contains(&key)
            }
        };
        cold
    }

    /// `group`'s [`GroupState::committed`] if its state is loaded here; `None` if it is
    /// not, and then no send of it is in flight on this node (only idle groups are
    /// dropped), so every stored entry is settled. Loads nothing.
    pub(crate) async fn committed_if_loaded(&self, app: AppId, group: &GroupId) -> Option<Seq> {
        let slot = {
            let g = self.groups[shard_of(app, group.as_str())].lock().unwrap_or_else(|p| p.into_inner());
            g.get(&(app, group.clone())).cloned()?
        };
        let g = slot.lock().await;
        g.as_ref().map(GroupState::committed)
    }

    /// Counts a group just loaded (or created) and evicts if that passes the bound.
    fn loaded_one(&self, logic: &Logic) {
        let max = logic.config.messages.max_loaded_groups.max(1);
        if self.loaded.fetch_add(1, Ordering::Relaxed) + 1 > max {
            self.evict(max - max / 10);
        }
        metrics::gauge!("tern_groups_loaded").set(self.loaded.load(Ordering::Relaxed) as f64);
    }

    /// Drops idle groups, least recently used first, until at most `keep` stay loaded.
    /// Idle: nobody holds or waits for the group's lock and no send of it is in flight.
    /// A dropped group is reloaded from the store on its next touch. Also drops the
    /// empty slots of ids that named no group. Returns how many were dropped.
    pub fn evict(&self, keep: usize) -> usize {
        let (loaded, dropped) = evict_lru(&self.groups, keep, |s| s.touched, |s| !s.busy());
        self.loaded.store(loaded - dropped, Ordering::Relaxed);
        metrics::counter!("tern_groups_evicted_total").increment(dropped as u64);
        metrics::gauge!("tern_groups_loaded").set((loaded - dropped) as f64);
        dropped
    }

    /// Counts a joined view just loaded and evicts views if that passes the bound.
    fn view_loaded(&self, logic: &Logic) {
        let max = logic.config.messages.max_joined_views.max(1);
        if self.views_loaded.fetch_add(1, Ordering::Relaxed) + 1 > max {
            self.evict_views(max - max / 10);
        }
        metrics::gauge!("tern_group_joined_views_loaded").set(self.views_loaded.load(Ordering::Relaxed) as f64);
    }

    /// Drops idle joined views (nobody holds or waits for them), least recently used
    /// first, until at most `keep` stay loaded; a dropped view is folded again from the
    /// user's `GroupList` log on its next use. Returns how many were dropped.
    pub fn evict_views(&self, keep: usize) -> usize {
        let (loaded, dropped) = evict_lru(&self.views, keep, |v| v.touched, |_| true);
        self.views_loaded.store(loaded - dropped, Ordering::Relaxed);
        metrics::counter!("tern_group_joined_views_evicted_total").increment(dropped as u64);
        metrics::gauge!("tern_group_joined_views_loaded").set((loaded - dropped) as f64);
        dropped
    }

    /// Drops the joined views of `slot`'s users, waiting for the ones held (a slot
    /// move). Returns how many entries went.
    pub async fn drop_views_of_slot(&self, slot: crate::slots::Slot) -> usize {
        let removed = crate::owners::drop_slot_in_shard(
            &self.views[crate::slots::shard_of_slot(slot, SHARDS)],
            |(app, user)| crate::slots::slot_of(*app, user) == slot,
            |v| Arc::strong_count(v) == 1 && v.try_lock().is_ok(),
        )
        .await;
        // The count is made exact by the next eviction pass; this keeps it an upper bound.
        let _ =
            self.views_loaded.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(removed)));
        removed
    }

    /// Drops the states of `slot`'s groups (a slot move; the caller has released the
    /// slot, so no new send or change of them starts), waiting for the ones held or
    /// with sends in flight. Returns how many entries went.
    pub async fn drop_slot(&self, slot: crate::slots::Slot) -> usize {
        let removed = crate::owners::drop_slot_in_shard(
            &self.groups[crate::slots::shard_of_slot(slot, SHARDS)],
            |(app, group)| crate::slots::slot_of_id(*app, group.as_str()) == slot,
            |s| Arc::strong_count(s) == 1 && s.try_lock().is_ok_and(|g| g.as_ref().is_none_or(|s| !s.busy())),
        )
        .await;
        let _ = self.loaded.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(removed)));
        removed
    }

    /// Refuses a write of `group` while this node does not own its slot (checked under
    /// the group's lock, which [`Groups::drop_slot`] waits for).
    pub(crate) fn check_owned(logic: &Logic, app: AppId, group: &GroupId) -> Result<(), StoreError> {
        let slot = crate::slots::slot_of_id(app, group.as_str());
        if logic.seqs.ownership().owns(slot) {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!("this node does not own slot {} (group {group}) now", slot.0)))
    }

    /// Joined views in memory (as of the last count).
    pub fn views_loaded(&self) -> usize {
        self.views_loaded.load(Ordering::Relaxed)
    }

    /// Groups with state in memory (as of the last count).
    pub fn loaded(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Locks the joined views of `users` (each once, in id order), loading them if
    /// `load`. Without `load` a view not in memory stays unloaded, but its slot is held:
    /// a later load (under the same lock) folds the log with this change in it, so a
    /// change of a large group costs no view load per member.
    async fn lock_views(
        &self,
        logic: &Logic,
        app: AppId,
        users: &[UserId],
        load: bool,
    ) -> Result<LockedViews, StoreError> {
        let mut ids: Vec<UserId> = users.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut guards = Vec::with_capacity(ids.len());
        let mut loads = 0;
        for id in ids {
            let mut g = self.view_slot(app, &id).lock_owned().await;
            if load && g.is_none() {
                *g = Some(JoinedView::load(logic, app, &id).await?);
                loads += 1;
            }
            if let Some(v) = g.as_mut() {
                v.touched = self.clock.fetch_add(1, Ordering::Relaxed);
            }
            guards.push((id, g));
        }
        // Counted (and maybe evicted) with every guard still held: none of these goes.
        for _ in 0..loads {
            self.view_loaded(logic);
        }
        Ok(LockedViews { guards })
    }
}

struct LockedViews {
    guards: Vec<(UserId, OwnedMutexGuard<Option<JoinedView>>)>,
}

impl LockedViews {
    fn view_mut(&mut self, user: &UserId) -> Option<&mut JoinedView> {
        let i = self.guards.binary_search_by(|(id, _)| id.cmp(user)).ok()?;
        self.guards[i].1.as_mut()
    }

    fn invalidate(&mut self) {
        for (_, g) in &mut self.guards {
            **g = None;
        }
    }
}

/// Reads a group's record, members and timeline bound; `None` if it was never created.
async fn load_group(logic: &Logic, app: AppId, group: &GroupId) -> Result<Option<GroupState>, StoreError> {
    let Some(rec) = logic.store.get_group(app, group).await? else { return Ok(None) };
    let mut members = HashMap::new();
    let mut after: Option<UserId> = None;
    loop {
        let page = logic.store.list_group_members(app, group, after.as_ref(), LOAD_PAGE).await?;
        let done = page.len() < LOAD_PAGE;
        after = page.last().map(|m| m.member_id.clone());
        for m in page {
            members.insert(m.member_id.clone(), m);
        }
        if done {
            break;
        }
    }
    let owner = Owner::Group(group.clone());
    let bound = logic
        .store
        .seq_bounds(app, &owner)
        .await?
        .into_iter()
        .find(|(k, _)| *k == SyncKind::Message)
        .map_or(Seq::ZERO, |(_, s)| s);
    // After a restart nothing below the durable bound is handed out again: continue
    // above it (seqs skip, never repeat). The newest stored entry is at most the bound.
    let last_seq = bound;
    Ok(Some(GroupState::new(rec, members, last_seq, bound)))
}

/// A write of the group's records failed (it may have been applied in part): an idle
/// state is dropped (reloaded on the next touch); one with sends in flight or waiting
/// is kept for them and marked stale, so they are still pushed, in seq order, and pulls
/// still stop below them — its record and members are reloaded on the next lock.
pub(crate) fn write_failed(slot: &mut Option<GroupState>) {
    match slot.as_mut() {
        Some(s) if s.busy() => s.stale = true,
        _ => *slot = None,
    }
}

/// One change of a group: what to write, and which users' joined logs move.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub group: Option<GroupRecord>,
    pub puts: Vec<GroupMemberRecord>,
    pub dels: Vec<UserId>,
    pub joined: Vec<(UserId, JoinedRecord)>,
    /// Tell the users whose logs moved (imports do not).
    pub notify: bool,
}

/// Writes `ch` durably (the group's records with the first entries of the joined logs
/// in one batch; very many entries continue in further batches), then applies it to
/// the group's state and the joined views and notifies. A failure drops the group state
/// and the views touched, so they are reloaded from the store.
pub(crate) async fn commit(
    logic: &Logic,
    app: AppId,
    slot: &mut Option<GroupState>,
    ch: Change,
) -> Result<(), ServiceError> {
    let users: Vec<UserId> = ch.joined.iter().map(|(u, _)| u.clone()).collect();
    let mut views = logic.groups.lock_views(logic, app, &users, false).await?;
    let mut batch = WriteBatch::with_capacity(1 + ch.puts.len() + ch.dels.len());
    let group_id = match (&ch.group, slot.as_ref()) {
        (Some(g), _) => g.group_id.clone(),
        (None, Some(s)) => s.rec.group_id.clone(),
        (None, None) => return Err(ServiceError::Store(StoreError::Backend("a change of no group".into()))),
    };
    // Under the group's lock, held by the caller until this write is done.
    Groups::check_owned(logic, app, &group_id)?;
    // A group being created gets its timeline's first seq bound in the same batch, so
    // its first send hands out a seq from memory (no bound write on the link reader).
    let first_bound = Seq(logic.config.seq_step.max(1));
    let creating = slot.is_none() && ch.group.is_some();
    if let Some(g) = &ch.group {
        batch.put_group(app, g.clone());
        if creating {
            batch.set_seq_bound(app, Owner::Group(g.group_id.clone()), SyncKind::Message, first_bound);
        }
    }
    for m in &ch.puts {
        batch.put_group_member(app, group_id.clone(), m.clone());
    }
    for m in &ch.dels {
        batch.delete_group_member(app, group_id.clone(), m.clone());
    }
    let mut entries = Vec::with_capacity(ch.joined.len());
    for (u, r) in &ch.joined {
        entries.push((u.clone(), SyncKind::GroupList, r.encode()?));
    }
    let mut seqs = Vec::with_capacity(entries.len());
    let mut rest = entries.into_iter();
    let mut first = true;
    loop {
        let chunk: Vec<_> = rest.by_ref().take(MAX_BATCH_ENTRIES).collect();
        if chunk.is_empty() && !first {
            break;
        }
        let extra = if first { std::mem::take(&mut batch) } else { WriteBatch::new() };
        first = false;
        match logic.append_many(app, chunk, extra).await {
            Ok(s) => seqs.extend(s),
            Err(e) => {
                views.invalidate();
                write_failed(slot);
                return Err(e.into());
            }
        }
    }
    crate::callbacks::group_changed(logic, app, &group_id, &ch);
    // Durable: apply in memory.
    match (slot.as_mut(), ch.group) {
        (Some(s), Some(g)) => s.rec = g,
        (Some(_), None) => {}
        (None, Some(g)) => {
            *slot = Some(GroupState::new(g, HashMap::new(), Seq::ZERO, first_bound));
            logic.groups.loaded_one(logic);
        }
        (None, None) => {}
    }
    if let Some(s) = slot.as_mut() {
        for m in ch.dels {
            s.members.remove(&m);
        }
        for m in ch.puts {
            s.max_join_seq = s.max_join_seq.max(m.join_seq);
            s.members.insert(m.member_id.clone(), m);
        }
    }
    for ((user, rec), seq) in ch.joined.into_iter().zip(seqs) {
        if let Some(v) = views.view_mut(&user) {
            v.apply(seq, rec);
        }
        if ch.notify {
            let frame = encode::sync_notify(client::SyncKind(SyncKind::GroupList.as_u8()), seq.0);
            logic.sessions.send_to_user(app, &user, &frame, None);
        }
    }
    metrics::counter!("tern_group_changes_total").increment(1);
    Ok(())
}

/// The joined groups of `user` as (group id, record, seq), in group id order.
pub async fn joined(logic: &Logic, app: AppId, user: &UserId) -> Result<Vec<(GroupId, JoinedRecord, Seq)>, StoreError> {
    let views = logic.groups.lock_views(logic, app, std::slice::from_ref(user), true).await?;
    let v = views.guards[0].1.as_ref().map(|v| &v.groups);
    Ok(v.into_iter().flatten().map(|(g, (r, s))| (g.clone(), r.clone(), *s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(members: &[&str]) -> GroupState {
        let rec = GroupRecord::new(GroupId::new("g").unwrap(), 1);
        let members = members
            .iter()
            .map(|m| (UserId::new(*m).unwrap(), GroupMemberRecord::new(UserId::new(*m).unwrap(), 1, Seq::ZERO)))
            .collect();
        GroupState::new(rec, members, Seq(5), Seq(1000))
    }

    #[test]
    fn a_failed_change_keeps_the_pipeline_of_sends_in_flight() {
        // Idle: dropped, reloaded on the next touch.
        let mut slot = Some(state(&["a"]));
        write_failed(&mut slot);
        assert!(slot.is_none());

        // Seq 6 in flight, 7 durable and parked behind it: kept, marked stale.
        let mut s = state(&["a", "b"]);
        s.last_seq = Seq(7);
        s.in_flight.insert(Seq(6));
        s.parked.insert(Seq(7), (Bytes::from_static(b"m7"), None));
        let mut slot = Some(s);
        write_failed(&mut slot);
        let s = slot.as_mut().expect("a busy state stays");
        assert!(s.stale);
        assert_eq!(s.committed(), Seq(5), "pulls still stop below the send in flight");

        // The reload takes the store's record and members, and keeps the pipeline.
        let mut fresh = state(&["a", "c"]);
        fresh.rec.group_name = "renamed".into();
        fresh.bound = Seq(2000);
        s.refresh(fresh);
        assert!(!s.stale);
        assert_eq!(s.rec.group_name, "renamed");
        assert_eq!(s.members.keys().map(UserId::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(["a", "c"]));
        assert_eq!((s.last_seq, s.bound), (Seq(7), Seq(2000)));
        assert_eq!(s.in_flight.iter().copied().collect::<Vec<_>>(), [Seq(6)]);
        assert_eq!(s.parked.keys().copied().collect::<Vec<_>>(), [Seq(7)]);
    }
}
