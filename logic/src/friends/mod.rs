//! Friendships, the blacklist and friend requests: the business rules behind
//! `/v1/friendship/...`, `/v1/blackList/...` and `/v1/friendshipRequest/...`, and the
//! blacklist check of the message path.
//!
//! # Storage design
//!
//! The source of truth is three per-user sync logs of the existing `Store`:
//! `Friendship` (the owner's friend list), `Blacklist` (whom the owner blocked) and
//! `FriendRequest` (requests the owner sent or received). Every change appends, with
//! the next seq of that log, an entry holding the **full new state** of one relation of
//! the owner — or a tombstone when it is removed (see [`records`], versioned JSON). A
//! two-way change (a mutual add, a two-way delete, an approval, a request) appends to
//! both users' logs in ONE durable batch (`Logic::append_many`). Sync calls are
//! therefore plain range reads of one log up to the committed watermark: they return
//! exactly the changes after `lastSequence`, deletions included, in order.
//!
//! Reads of *current* state (check, getRelation, get, getFriendRequest, the send-path
//! blacklist check, the profile fan-out) use a **materialized view** per (app, user)
//! ([`view::View`]): built on first access by folding the user's three logs from seq 0,
//! then updated in place, with the same fold function, after each durable write. The
//! view is coherent because this logic node is the single writer of its users' logs and
//! every read-modify-write holds the per-user view lock for its whole duration — both
//! users' locks, taken in a stable (user id) order, for two-way changes. A write that
//! fails drops the views it touched (the store may or may not have applied it), so the
//! next access rebuilds them from the log; a view can never claim something the log
//! does not say.
//!
//! Who lists a user is indexed too: every change of "A lists B" appends, in the same
//! batch, an entry to B's server-internal `ListedBy` log ([`records::ListedByRecord`]);
//! the profile fan-out reads it ([`listed_by`]) so one-way friends get profile changes,
//! and a new friend's current profile is put into the lister's profile sync right after
//! the relation is durable.
//!
//! Views are owner state: the owner sweeper (`owners.rs`) drops idle ones (nobody holds
//! or waits for the view's lock), least recently used first, while the node's owner
//! state passes `logic.owner_state_max_bytes`; a dropped view is folded again on its next
//! access. A slot's views are dropped together by [`Friends::drop_slot`].
//!
//! Future work (not built): log compaction or snapshots (today a view load reads the
//! user's whole relation history, and logs grow with every change).
//!
//! # Rules kept here
//!
//! - `friendAllowType` of the target: 1 anyone → friends at once; 2 needs approval → a
//!   friend request; 3 nobody (or `disableAddFriend`) → refused (30017). If the target
//!   already lists the adder, no consent is needed.
//! - Blocks: adding someone you blocked is 30006, adding someone who blocked you is
//!   30007 (so is messaging them); approving applies the same checks.
//! - Adds are idempotent (re-adding a friend, re-blocking, re-sending an identical
//!   pending request change nothing and bump no seq); removing what is not there is an
//!   error (30003 / 30008 / 30010).
//! - Limits per app: `max_friends` (30018) and `max_blacklist` (30019); field lengths
//!   below, in characters.
//! - Every change notifies every online device of each user whose log moved with a
//!   sync-notify of (kind, seq); HTTP calls have no acting device, so all of them.
//!
//! This module must never know about HTTP (no status codes, JSON paths of a request or
//! axum types) and never encode wire frames itself beyond `tern_schema::encode`.

mod blacklist;
mod friendship;
mod import;
pub mod records;
mod requests;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tern_schema::client;
use tern_schema::encode;
use tern_storage::{AppId, Seq, StoreError, SyncKind, UserId, UserRecord};
use tokio::sync::OwnedMutexGuard;

pub use blacklist::{blacklist, block, check_blocked, is_blocked, sync_blacklist, unblock, BlockOutcome};
pub use friendship::{
    add, check, delete, friend_ids, get_relation, list, sync_friends, update, AddFriend, AddOutcome, CheckStatus,
    DeleteTarget, FriendPage, Relation, SyncPage, Updated,
};
pub use import::{import, ImportFriend};
pub use requests::{approve, list_requests, read_all, RequestList};
pub use view::{Blocked, Direction, Friend, Request, APPROVED, PENDING, REJECTED};

use crate::error::ServiceError;
use crate::messages::keys::MessageKeys;
use crate::{now_ms, Logic};
use records::Record;
use view::View;

/// Friendship error codes (30000s), listed in the HTTP docs.
pub mod errors {
    /// Reserved: already friends. Re-adding a friend is idempotent and answers 200
    /// with `result: 3`, so nothing answers this code today.
    pub const ALREADY_FRIENDS: u32 = 30002;
    /// The user named is not in `fromId`'s friend list.
    pub const NOT_FRIENDS: u32 = 30003;
    /// `fromId` blocked the other user (unblock first).
    pub const YOU_BLOCKED_THEM: u32 = 30006;
    /// The other user blocked `fromId`: no adding, no messages.
    pub const THEY_BLOCKED_YOU: u32 = 30007;
    /// Neither user lists the other (two-way delete).
    pub const NO_RELATION: u32 = 30008;
    /// The user is not in `fromId`'s blacklist.
    pub const NOT_BLOCKED: u32 = 30010;
    /// The request was sent by `fromId`, not to them: only its recipient decides.
    pub const NOT_YOUR_REQUEST: u32 = 30011;
    /// No such request among `fromId`'s requests.
    pub const NO_SUCH_REQUEST: u32 = 30012;
    /// The request was already approved or rejected (new to Tern).
    pub const REQUEST_HANDLED: u32 = 30013;
    /// The target accepts no friend requests: `friendAllowType` 3 or
    /// `disableAddFriend` (new to Tern).
    pub const ADD_FORBIDDEN: u32 = 30017;
    /// A friend list would pass the app's `max_friends` (new to Tern).
    pub const FRIEND_LIMIT: u32 = 30018;
    /// The blacklist would pass the app's `max_blacklist` (new to Tern).
    pub const BLACKLIST_LIMIT: u32 = 30019;
}

/// Longest `remark` (the owner's name for a friend), in characters.
pub const MAX_REMARK_CHARS: usize = 64;
/// Longest `addSource` (where the add came from, e.g. "search"), in characters.
pub const MAX_ADD_SOURCE_CHARS: usize = 32;
/// Longest `addWording` (the greeting of a request), in characters.
pub const MAX_ADD_WORDING_CHARS: usize = 256;
/// Longest `extra` (business data of one friend entry), in characters: as a profile's.
pub const MAX_EXTRA_CHARS: usize = 4096;
/// Most log entries written in one store batch by bulk changes (delete-all, read-all);
/// bigger changes are written as several batches.
const MAX_BATCH_ENTRIES: usize = 512;

type Slot = Arc<tokio::sync::Mutex<Option<View>>>;
type Shard = Mutex<HashMap<(AppId, UserId), Entry>>;

/// A user's view slot and its eviction mark.
#[derive(Default)]
struct Entry {
    slot: Slot,
    /// Looked up since the eviction clock last passed (its second chance).
    recent: bool,
}

const SHARDS: usize = 64;

/// The relation state of the logic node: one lazily loaded view per (app, user) behind
/// its own lock, and the generator of friend request ids.
pub struct Friends {
    shards: Box<[Shard]>,
    request_ids: MessageKeys,
    /// Where the eviction clock resumes (a shard index).
    hand: std::sync::atomic::AtomicUsize,
    /// Views dropped after a failed write (whose records may still have landed) or by
    /// eviction: a view folded from pages read before one of these must not be
    /// installed.
    invalidations: std::sync::atomic::AtomicU64,
}

impl Default for Friends {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            request_ids: MessageKeys::new(),
            hand: Default::default(),
            invalidations: Default::default(),
        }
    }
}

impl Friends {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, app: AppId, user: &UserId) -> Slot {
        let shard = &self.shards[crate::slots::shard_of_id(app, user.as_str(), SHARDS)];
        let mut g = shard.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.entry((app, user.clone())).or_default();
        e.recent = true;
        e.slot.clone()
    }

    /// Views in memory and the bytes they hold (a view locked right now is counted
    /// but not measured).
    pub fn measure(&self) -> crate::owners::Held {
        let mut held = crate::owners::Held::default();
        for shard in self.shards.iter() {
            let g = shard.lock().unwrap_or_else(|p| p.into_inner());
            for e in g.values() {
                match e.slot.try_lock() {
                    Ok(v) => {
                        if let Some(v) = v.as_ref() {
                            held.states += 1;
                            held.bytes += v.approx_bytes();
                        }
                    }
                    Err(_) => held.states += 1,
                }
            }
        }
        held
    }

    /// Drops idle views (nobody holds or waits for their lock) until `want` bytes are
    /// freed or every shard was passed once; with `second_chance` a view looked up
    /// since the last pass is spared (its mark cleared). Also drops empty slots nobody
    /// holds. Resumes where the previous pass stopped.
    pub fn evict(&self, want: usize, second_chance: bool) -> crate::owners::Evicted {
        // Before anything goes: a login folding pages read earlier must not install
        // them into a slot emptied here after a write had updated the view.
        self.invalidations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut out = crate::owners::Evicted::default();
        let start = self.hand.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..SHARDS {
            if out.bytes >= want {
                break;
            }
            let at = (start + i) % SHARDS;
            let mut g = self.shards[at].lock().unwrap_or_else(|p| p.into_inner());
            g.retain(|_, e| {
                // The map's is the only reference: nobody holds the slot or can get
                // it while the shard is locked.
                if Arc::strong_count(&e.slot) != 1 || out.bytes >= want {
                    return true;
                }
                let Ok(v) = e.slot.try_lock() else { return true };
                let Some(view) = v.as_ref() else { return false };
                if second_chance && std::mem::take(&mut e.recent) {
                    return true;
                }
                out.states += 1;
                out.bytes += view.approx_bytes();
                false
            });
            self.hand.store((at + 1) % SHARDS, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// Drops every view of `slot`'s users, waiting for the ones held to be released
    /// (a slot move; the caller has stopped this node writing the slot). Returns how
    /// many entries went.
    pub async fn drop_slot(&self, slot: crate::slots::Slot) -> usize {
        self.invalidations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::owners::drop_slot_in_shard(
            &self.shards[crate::slots::shard_of_slot(slot, SHARDS)],
            |(app, user)| crate::slots::slot_of(*app, user) == slot,
            |e| Arc::strong_count(&e.slot) == 1 && e.slot.try_lock().is_ok(),
        )
        .await
    }

    /// How many users' views (loaded or being loaded) this node holds.
    pub fn views_held(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// A new request id: unique in the app, time-ordered.
    fn next_request_id(&self) -> u64 {
        self.request_ids.next(now_ms())
    }

    /// Locks the views of `users` (each once, in user id order, so two callers never
    /// wait for each other in a cycle), loading any not yet in memory.
    pub(crate) async fn lock<'a>(
        &self,
        logic: &Logic,
        app: AppId,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> Result<Locked, StoreError> {
        let mut ids: Vec<UserId> = users.into_iter().cloned().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            let mut g = self.slot(app, &id).lock_owned().await;
            if g.is_none() {
                *g = Some(View::load(logic, app, &id).await?);
            }
            guards.push((id, g));
        }
        Ok(Locked { app, guards })
    }
}

impl Friends {
    /// Whether `user`'s view must still be loaded: not in memory and nobody loading or
    /// holding it now (a held view is loaded, or its holder loads it).
    pub(crate) fn needs_load(&self, app: AppId, user: &UserId) -> bool {
        self.slot(app, user).try_lock().is_ok_and(|g| g.is_none())
    }

    /// Whether `user`'s view is in memory now (false while someone holds it locked).
    pub fn is_view_loaded(&self, app: AppId, user: &UserId) -> bool {
        self.slot(app, user).try_lock().is_ok_and(|g| g.is_some())
    }

    /// Take before reading pages for [`install`](Self::install).
    pub(crate) fn install_epoch(&self) -> u64 {
        self.invalidations.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Installs a view folded from pages read since `epoch` (batched logins) unless one
    /// is in memory or being loaded meanwhile — a write loads the view itself before it
    /// folds its records in, so an empty slot has seen no write since — and unless a
    /// failed write dropped views since `epoch` (its records may have landed after the
    /// read).
    pub(crate) fn install(&self, app: AppId, user: &UserId, epoch: u64, view: view::View) {
        if let Ok(mut g) = self.slot(app, user).try_lock() {
            if g.is_none() && self.install_epoch() == epoch {
                *g = Some(view);
            }
        }
    }
}

/// Loads `user`'s view unless it is in memory (the send path's blacklist check reads
/// it; loading it at login keeps that read off the send path).
pub async fn warm(logic: &Logic, app: AppId, user: &UserId) -> Result<(), StoreError> {
    logic.friends.lock(logic, app, [user]).await.map(drop)
}

/// Locked views of some users (sorted by id).
pub(crate) struct Locked {
    app: AppId,
    guards: Vec<(UserId, OwnedMutexGuard<Option<View>>)>,
}

impl Locked {
    /// The view of a locked user. Callers only ask for users they locked.
    pub(crate) fn view(&self, user: &UserId) -> &View {
        let i = self.index(user);
        self.guards[i].1.as_ref().expect("locked views are loaded until a failed write drops them")
    }

    fn view_mut(&mut self, user: &UserId) -> &mut View {
        let i = self.index(user);
        self.guards[i].1.as_mut().expect("locked views are loaded until a failed write drops them")
    }

    fn index(&self, user: &UserId) -> usize {
        self.guards.binary_search_by(|(id, _)| id.cmp(user)).unwrap_or_else(|_| panic!("{user} is not locked"))
    }

    /// Drops every view held: the next access rebuilds them from the log.
    fn invalidate(&mut self) {
        for (_, g) in &mut self.guards {
            **g = None;
        }
    }
}

/// Writes `changes` (owner, record) in one durable batch, then folds them into the
/// owners' views and notifies the owners' devices. Returns the seqs in input order.
/// A failure drops every view held by `locked` (see the module docs). The owners must
/// all be locked.
pub(crate) async fn commit(
    logic: &Logic,
    locked: &mut Locked,
    changes: Vec<(UserId, Record)>,
) -> Result<Vec<Seq>, ServiceError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    // Who starts or stops listing whom: the peers' ListedBy entries ride in this batch.
    let flips = listing_flips(locked, &changes);
    let mut entries = Vec::with_capacity(changes.len() + flips.len());
    for (owner, rec) in &changes {
        entries.push((owner.clone(), rec.kind(), rec.encode()?));
    }
    for (owner, peer, listed) in &flips {
        let rec =
            Record::ListedBy(records::ListedByRecord { v: records::VERSION, peer: owner.clone(), listed: *listed });
        entries.push((peer.clone(), SyncKind::ListedBy, rec.encode()?));
    }
    let mut seqs = match logic.append_many(locked.app, entries, tern_storage::WriteBatch::new()).await {
        Ok(s) => s,
        Err(e) => {
            logic.friends.invalidations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            locked.invalidate();
            return Err(e.into());
        }
    };
    // The ListedBy seqs are the server's own bookkeeping.
    seqs.truncate(changes.len());
    crate::callbacks::relations_changed(logic, locked.app, &changes, &seqs);
    let mut latest: Vec<(UserId, SyncKind, Seq)> = Vec::new();
    for ((owner, rec), seq) in changes.into_iter().zip(&seqs) {
        let kind = rec.kind();
        locked.view_mut(&owner).apply(*seq, rec);
        match latest.iter_mut().find(|(u, k, _)| *u == owner && *k == kind) {
            Some(l) => l.2 = l.2.max(*seq),
            None => latest.push((owner, kind, *seq)),
        }
    }
    metrics::counter!("tern_friend_log_entries_total").increment(seqs.len() as u64);
    for (owner, kind, seq) in latest {
        notify(logic, locked.app, &owner, kind, seq);
    }
    // A new friend's current profile goes into the owner's profile sync. After the
    // relation is durable, so a profile change racing with it is either fanned out to the
    // owner (its fan-out read the new ListedBy entry) or read here (it committed before).
    let listed: Vec<(UserId, UserId)> = flips.into_iter().filter(|f| f.2).map(|(o, p, _)| (o, p)).collect();
    if !listed.is_empty() {
        if let Err(e) = crate::users::share_profiles(logic, locked.app, &listed).await {
            // The relation stands; the owner's sync shows the profile at its next change.
            metrics::counter!("tern_friend_profile_share_failures_total").increment(1);
            tracing::warn!(error = %e, app = locked.app.0, "could not put new friends' profiles into the profile sync");
        }
    }
    Ok(seqs)
}

/// The (owner, peer, listed) changes of "owner lists peer" that `changes` make, judged
/// against the owners' views (all locked) and the earlier changes of the same batch.
fn listing_flips(locked: &Locked, changes: &[(UserId, Record)]) -> Vec<(UserId, UserId, bool)> {
    let mut state: HashMap<(&UserId, &UserId), bool> = HashMap::new();
    let mut flips = Vec::new();
    for (owner, rec) in changes {
        let Record::Friend(r) = rec else { continue };
        let before = *state.entry((owner, &r.to_id)).or_insert_with(|| locked.view(owner).has_friend(&r.to_id));
        let after = !r.deleted;
        if before != after {
            flips.push((owner.clone(), r.to_id.clone(), after));
        }
        state.insert((owner, &r.to_id), after);
    }
    flips
}

/// Who lists `user` as a friend now, folded from `user`'s ListedBy log (read whole: the
/// profile fan-out is rare next to messages; compaction is future work, as for the
/// relation logs).
pub async fn listed_by(logic: &Logic, app: AppId, user: &UserId) -> Result<Vec<UserId>, StoreError> {
    const PAGE: usize = 1_000;
    let owner = tern_storage::Owner::User(user.clone());
    let mut listed = std::collections::BTreeSet::new();
    let mut after = Seq::ZERO;
    loop {
        let page = logic.store.read_log(app, &owner, SyncKind::ListedBy, after, PAGE).await?;
        for entry in &page {
            if let Record::ListedBy(r) = Record::decode(app, user, SyncKind::ListedBy, entry)? {
                if r.listed {
                    listed.insert(r.peer);
                } else {
                    listed.remove(&r.peer);
                }
            }
            after = entry.seq;
        }
        if page.len() < PAGE {
            return Ok(listed.into_iter().collect());
        }
    }
}

/// [`commit`] for bulk changes: groups of entries that must land together (e.g. both
/// sides of one two-way delete) are packed into batches of at most
/// [`MAX_BATCH_ENTRIES`] entries.
pub(crate) async fn commit_groups(
    logic: &Logic,
    locked: &mut Locked,
    groups: Vec<Vec<(UserId, Record)>>,
) -> Result<Vec<Seq>, ServiceError> {
    let mut seqs = Vec::new();
    let mut batch = Vec::new();
    for group in groups {
        if !batch.is_empty() && batch.len() + group.len() > MAX_BATCH_ENTRIES {
            seqs.extend(commit(logic, locked, std::mem::take(&mut batch)).await?);
        }
        batch.extend(group);
    }
    seqs.extend(commit(logic, locked, batch).await?);
    Ok(seqs)
}

/// Tells every online device of `user` that its `kind` log reached `seq`.
fn notify(logic: &Logic, app: AppId, user: &UserId, kind: SyncKind, seq: Seq) {
    let frame = encode::sync_notify(client::SyncKind(kind.as_u8()), seq.0);
    logic.sessions.send_to_user(app, user, &frame, None);
}

/// The app's limits: (max friends, max blacklist).
fn limits(logic: &Logic, app: AppId) -> (usize, usize) {
    logic.apps.get(app).map_or((crate::apps::DEFAULT_MAX_FRIENDS, crate::apps::DEFAULT_MAX_BLACKLIST), |a| {
        (a.max_friends, a.max_blacklist)
    })
}

/// The records of `ids`, requiring each to exist and, if `live`, not be deleted.
async fn users(logic: &Logic, app: AppId, ids: &[&UserId], live: bool) -> Result<Vec<UserRecord>, ServiceError> {
    let owned: Vec<UserId> = ids.iter().map(|u| (*u).clone()).collect();
    let found = logic.store.get_users(app, &owned).await?;
    let mut out = Vec::with_capacity(found.len());
    for (id, rec) in owned.into_iter().zip(found) {
        match rec {
            None => return Err(ServiceError::UserNotFound(id)),
            Some(r) if live && r.deleted => return Err(ServiceError::UserDeleted(id)),
            Some(r) => out.push(r),
        }
    }
    Ok(out)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("longer than {max} characters")));
    }
    Ok(())
}

/// A page of a sync log.
pub(crate) async fn read_records(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    kind: SyncKind,
    after: Seq,
    limit: usize,
) -> Result<(Vec<(Seq, Record)>, Seq, bool), ServiceError> {
    users(logic, app, &[user], false).await?;
    let (raw, max_seq, completed) = logic.read_synced(app, user, kind, after, limit).await?;
    let mut out = Vec::with_capacity(raw.len());
    for e in &raw {
        out.push((e.seq, Record::decode(app, user, kind, e)?));
    }
    Ok((out, max_seq, completed))
}
