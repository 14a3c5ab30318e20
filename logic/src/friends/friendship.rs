//! Friend lists: add (directly or as a request), delete, update, check, relation, list
//! and sync. See the module docs of `crate::friends` for the rules and the storage
//! design.

use crate::error::ServiceError;
use crate::user_cache::UserState;
use std::collections::HashSet;

use tern_storage::{AppId, Seq, StoreError, SyncKind, UserId};

use super::errors::*;
use super::records::{FriendRecord, Record, RequestRecord, VERSION};
use super::view::{Direction, Friend, PENDING};
use super::{
    check_len, commit, commit_groups, limits, read_records, users, Locked, MAX_ADD_SOURCE_CHARS, MAX_ADD_WORDING_CHARS,
    MAX_EXTRA_CHARS, MAX_REMARK_CHARS,
};
use crate::{now_ms, Logic};

/// An add: `from` adds `to` with these details of `from`'s entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFriend {
    pub from: UserId,
    pub to: UserId,
    pub remark: String,
    pub add_source: String,
    pub add_wording: String,
    pub extra: String,
    /// Both users list each other (the default), or only `from` lists `to`.
    pub two_way: bool,
}

impl AddFriend {
    /// Checks the lengths and that nobody adds themselves. Field names are the API's,
    /// relative to `toItem`.
    pub fn validate(&self) -> Result<(), ServiceError> {
        if self.from == self.to {
            return Err(ServiceError::invalid("toId", "cannot add yourself"));
        }
        check_len("remark", &self.remark, MAX_REMARK_CHARS)?;
        check_len("addSource", &self.add_source, MAX_ADD_SOURCE_CHARS)?;
        check_len("addWording", &self.add_wording, MAX_ADD_WORDING_CHARS)?;
        check_len("extra", &self.extra, MAX_EXTRA_CHARS)
    }
}

/// What an add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The users are friends now. `seq`: `from`'s Friendship seq, if its list changed
    /// (a two-way add of someone already listed only writes the other side).
    Added { seq: Option<Seq> },
    /// The target needs to approve: a pending request with this id exists (created,
    /// refreshed, or already there unchanged). `seq`: `from`'s FriendRequest seq.
    Requested { id: u64, seq: Seq },
    /// Nothing to do: the relation asked for exists already.
    AlreadyFriends,
}

/// Adds a friend per the target's `friendAllowType` (see the module docs).
pub async fn add(logic: &Logic, app: AppId, req: AddFriend) -> Result<AddOutcome, ServiceError> {
    req.validate()?;
    let recs = users(logic, app, &[&req.from, &req.to], true).await?;
    let target = &recs[1];
    let (max_friends, _) = limits(logic, app);
    let mut locked = logic.friends.lock(logic, app, [&req.from, &req.to]).await?;
    check_blocks(&locked, &req.from, &req.to)?;
    let (a, b) = (locked.view(&req.from), locked.view(&req.to));
    let need_a = !a.has_friend(&req.to);
    let need_b = req.two_way && !b.has_friend(&req.from);
    if !need_a && !need_b {
        return Ok(AddOutcome::AlreadyFriends);
    }
    // A target that already lists the adder has consented.
    if !b.has_friend(&req.from) {
        if target.disable_add_friend || target.friend_allow_type == 3 {
            return Err(ServiceError::refused(ADD_FORBIDDEN, format!("`{}` accepts no friend requests", req.to)));
        }
        if target.friend_allow_type == 2 {
            return request(logic, &mut locked, req).await;
        }
    }
    check_room(&locked, &req.from, need_a, max_friends)?;
    check_room(&locked, &req.to, need_b, max_friends)?;
    let now = now_ms();
    let mut changes = Vec::new();
    if need_a {
        changes.push((
            req.from.clone(),
            friend_record(&req.to, req.remark, req.add_source.clone(), req.add_wording.clone(), req.extra, now),
        ));
    }
    if need_b {
        changes.push((
            req.to.clone(),
            friend_record(&req.from, String::new(), req.add_source, req.add_wording, String::new(), now),
        ));
    }
    let seqs = commit(logic, &mut locked, changes).await?;
    Ok(AddOutcome::Added { seq: need_a.then(|| seqs[0]) })
}

/// Creates or refreshes the pending request `req.from` → `req.to` (both locked).
async fn request(logic: &Logic, locked: &mut Locked, req: AddFriend) -> Result<AddOutcome, ServiceError> {
    let existing =
        locked.view(&req.from).request(Direction::Sent, &req.to).filter(|r| r.record.status == PENDING).cloned();
    let now = now_ms();
    let record = RequestRecord {
        v: VERSION,
        id: existing.as_ref().map_or_else(|| logic.friends.next_request_id(), |r| r.record.id),
        from_id: req.from.clone(),
        to_id: req.to.clone(),
        remark: req.remark,
        add_source: req.add_source,
        add_wording: req.add_wording,
        extra: req.extra,
        two_way: req.two_way,
        status: PENDING,
        read: false,
        create_time: existing.as_ref().map_or(now, |r| r.record.create_time),
        update_time: now,
    };
    if let Some(old) = &existing {
        let unread = locked.view(&req.to).request(Direction::Received, &req.from).is_some_and(|r| !r.record.read);
        let same = RequestRecord { update_time: old.record.update_time, read: old.record.read, ..record.clone() };
        if unread && same == old.record {
            return Ok(AddOutcome::Requested { id: old.record.id, seq: old.seq });
        }
    }
    let id = record.id;
    let changes = vec![(req.from, Record::Request(record.clone())), (req.to, Record::Request(record))];
    let seqs = commit(logic, locked, changes).await?;
    Ok(AddOutcome::Requested { id, seq: seqs[0] })
}

pub(super) fn friend_record(
    to: &UserId,
    remark: String,
    add_source: String,
    add_wording: String,
    extra: String,
    now: u64,
) -> Record {
    Record::Friend(FriendRecord {
        v: VERSION,
        to_id: to.clone(),
        deleted: false,
        remark,
        add_source,
        add_wording,
        extra,
        add_time: now,
        update_time: now,
    })
}

pub(super) fn tombstone(to: &UserId, now: u64) -> Record {
    Record::Friend(FriendRecord {
        v: VERSION,
        to_id: to.clone(),
        deleted: true,
        remark: String::new(),
        add_source: String::new(),
        add_wording: String::new(),
        extra: String::new(),
        add_time: 0,
        update_time: now,
    })
}

/// 30006 if `a` blocked `b`, 30007 if `b` blocked `a` (both locked).
pub(super) fn check_blocks(locked: &Locked, a: &UserId, b: &UserId) -> Result<(), ServiceError> {
    if locked.view(a).blocked(b).is_some() {
        return Err(ServiceError::refused(YOU_BLOCKED_THEM, format!("`{a}` blocked `{b}`; unblock first")));
    }
    if locked.view(b).blocked(a).is_some() {
        return Err(ServiceError::refused(THEY_BLOCKED_YOU, format!("`{b}` blocked `{a}`")));
    }
    Ok(())
}

/// 30018 if one more friend (when `adding`) would pass `max` for `user`.
pub(super) fn check_room(locked: &Locked, user: &UserId, adding: bool, max: usize) -> Result<(), ServiceError> {
    if adding && locked.view(user).friend_count() >= max {
        return Err(ServiceError::refused(
            FRIEND_LIMIT,
            format!("the friend list of `{user}` is full ({max} friends)"),
        ));
    }
    Ok(())
}

/// Which friends to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTarget {
    /// These users (answered per item, in order; a repeated id succeeds once deleted).
    Ids(Vec<UserId>),
    /// Every friend of `from`.
    All,
}

/// Deletes friends: one-way removes `from`'s entry (30003 if there is none); two-way
/// removes both users' entries that exist (30008 if neither does). Answers per user.
pub async fn delete(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    target: DeleteTarget,
    two_way: bool,
) -> Result<Vec<(UserId, Result<(), ServiceError>)>, ServiceError> {
    users(logic, app, &[from], false).await?;
    let all = target == DeleteTarget::All;
    let mut ids = match target {
        DeleteTarget::Ids(ids) => ids,
        DeleteTarget::All => friend_ids(logic, app, from).await?,
    };
    // Delete-all reads the list under the lock; if it grew since the snapshot, a
    // two-way delete must lock the newcomers too, so retry with the new list.
    let mut locked = loop {
        let others: &[UserId] = if two_way { &ids } else { &[] };
        let locked = logic.friends.lock(logic, app, std::iter::once(from).chain(others)).await?;
        if !all {
            break locked;
        }
        let mut current: Vec<UserId> = locked.view(from).friend_ids().cloned().collect();
        current.sort_unstable();
        let covered = !two_way || current.iter().all(|c| ids.binary_search(c).is_ok());
        ids = current;
        if covered {
            break locked;
        }
    };
    let now = now_ms();
    let mut done: HashSet<UserId> = HashSet::new();
    let mut results = Vec::with_capacity(ids.len());
    let mut groups = Vec::new();
    for id in ids {
        if done.contains(&id) {
            results.push((id, Ok(())));
            continue;
        }
        let a_has = locked.view(from).has_friend(&id);
        let b_has = two_way && id != *from && locked.view(&id).has_friend(from);
        let r = if !two_way && !a_has {
            Err(ServiceError::refused(NOT_FRIENDS, format!("`{id}` is not a friend of `{from}`")))
        } else if !a_has && !b_has {
            Err(ServiceError::refused(NO_RELATION, format!("neither `{from}` nor `{id}` lists the other")))
        } else {
            let mut group = Vec::with_capacity(2);
            if a_has {
                group.push((from.clone(), tombstone(&id, now)));
            }
            if b_has {
                group.push((id.clone(), tombstone(from, now)));
            }
            groups.push(group);
            done.insert(id.clone());
            Ok(())
        };
        results.push((id, r));
    }
    commit_groups(logic, &mut locked, groups).await?;
    Ok(results)
}

/// Result of [`update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// The seq of the entry now holding the friend's state (unchanged if nothing
    /// changed).
    pub seq: Seq,
    pub changed: bool,
}

/// Changes `from`'s remark and/or extra of friend `to` (30003 if not a friend). Equal
/// values are not changes: nothing is written.
pub async fn update(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    to: &UserId,
    remark: Option<String>,
    extra: Option<String>,
) -> Result<Updated, ServiceError> {
    if remark.is_none() && extra.is_none() {
        return Err(ServiceError::invalid("remark", "nothing to update (give remark and/or extra)"));
    }
    if let Some(r) = &remark {
        check_len("remark", r, MAX_REMARK_CHARS)?;
    }
    if let Some(e) = &extra {
        check_len("extra", e, MAX_EXTRA_CHARS)?;
    }
    users(logic, app, &[from], true).await?;
    let mut locked = logic.friends.lock(logic, app, [from]).await?;
    let Some(f) = locked.view(from).friend(to).cloned() else {
        return Err(ServiceError::refused(NOT_FRIENDS, format!("`{to}` is not a friend of `{from}`")));
    };
    let new_remark = remark.unwrap_or_else(|| f.remark.clone());
    let new_extra = extra.unwrap_or_else(|| f.extra.clone());
    if new_remark == f.remark && new_extra == f.extra {
        return Ok(Updated { seq: f.seq, changed: false });
    }
    let rec = Record::Friend(FriendRecord {
        v: VERSION,
        to_id: to.clone(),
        deleted: false,
        remark: new_remark,
        add_source: f.add_source,
        add_wording: f.add_wording,
        extra: new_extra,
        add_time: f.add_time,
        update_time: now_ms(),
    });
    let seqs = commit(logic, &mut locked, vec![(from.clone(), rec)]).await?;
    Ok(Updated { seq: seqs[0], changed: true })
}

/// One result of [`check`] (the original system's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// One-way check: `from` lists the user (1) or not (0).
    OneWay(bool),
    /// Two-way check: 1 both list each other, 2 only `from` lists the user, 3 only the
    /// user lists `from`, 4 neither.
    TwoWay { from_has: bool, to_has: bool },
}

impl CheckStatus {
    pub fn code(self) -> u8 {
        match self {
            CheckStatus::OneWay(has) => u8::from(has),
            CheckStatus::TwoWay { from_has: true, to_has: true } => 1,
            CheckStatus::TwoWay { from_has: true, to_has: false } => 2,
            CheckStatus::TwoWay { from_has: false, to_has: true } => 3,
            CheckStatus::TwoWay { from_has: false, to_has: false } => 4,
        }
    }
}

/// Whether `from` and each of `ids` are friends, one- or two-way, in input order.
/// Unknown ids simply have no relation.
pub async fn check(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    ids: &[UserId],
    two_way: bool,
) -> Result<Vec<CheckStatus>, ServiceError> {
    users(logic, app, &[from], false).await?;
    let from_has: Vec<bool> = {
        let locked = logic.friends.lock(logic, app, [from]).await?;
        let v = locked.view(from);
        ids.iter().map(|id| v.has_friend(id)).collect()
    };
    if !two_way {
        return Ok(from_has.into_iter().map(CheckStatus::OneWay).collect());
    }
    // Ids never imported have no relations and get no view: a check of made-up ids
    // must not grow memory (each view is ~600 B and stays until evicted).
    let states = logic.user_cache.states(&*logic.store, app, ids).await?;
    let mut out = Vec::with_capacity(ids.len());
    for ((id, from_has), state) in ids.iter().zip(from_has).zip(states) {
        // One view at a time: a check never holds more than one lock.
        let to_has = id != from
            && state != UserState::Missing
            && logic.friends.lock(logic, app, [id]).await?.view(id).has_friend(from);
        out.push(CheckStatus::TwoWay { from_has, to_has });
    }
    Ok(out)
}

/// The relation between two users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `from`'s entry for `to`, if `from` lists `to`.
    pub from_entry: Option<Friend>,
    /// `to` lists `from`.
    pub to_has: bool,
    /// `from` blocked `to`.
    pub from_blocked: bool,
    /// `to` blocked `from`.
    pub to_blocked: bool,
}

/// The relation between `from` and `to`, read under both locks (one consistent
/// snapshot). Both must exist.
pub async fn get_relation(logic: &Logic, app: AppId, from: &UserId, to: &UserId) -> Result<Relation, ServiceError> {
    users(logic, app, &[from, to], false).await?;
    let locked = logic.friends.lock(logic, app, [from, to]).await?;
    let (a, b) = (locked.view(from), locked.view(to));
    let same = from == to;
    Ok(Relation {
        from_entry: a.friend(to).cloned(),
        to_has: !same && b.has_friend(from),
        from_blocked: a.blocked(to).is_some(),
        to_blocked: !same && b.blocked(from).is_some(),
    })
}

/// A page of a friend list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendPage {
    /// Friends whose entry seq is above the cursor, by seq.
    pub items: Vec<(UserId, Friend)>,
    /// The user's Friendship seq when the page was read: the list is exactly the log's
    /// state at this seq, so a client that reads every page and then syncs from the
    /// first page's `max_seq` misses nothing.
    pub max_seq: Seq,
    pub completed: bool,
}

/// `from`'s friends with an entry seq above `after`, by seq, at most `limit`.
pub async fn list(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    after: Seq,
    limit: usize,
) -> Result<FriendPage, ServiceError> {
    users(logic, app, &[from], false).await?;
    let locked = logic.friends.lock(logic, app, [from]).await?;
    // Every writer of this log holds this lock: nothing is in flight, so the committed
    // watermark is the last seq the view folded.
    let max_seq = logic.seqs.committed(app, from, SyncKind::Friendship).await?;
    let (items, completed) = locked.view(from).friends_after(after, limit);
    Ok(FriendPage { items, max_seq, completed })
}

/// The ids of `user`'s friends, sorted (with [`super::listed_by`], the targets of the
/// profile fan-out).
pub async fn friend_ids(logic: &Logic, app: AppId, user: &UserId) -> Result<Vec<UserId>, StoreError> {
    let locked = logic.friends.lock(logic, app, [user]).await?;
    let mut ids: Vec<UserId> = locked.view(user).friend_ids().cloned().collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A page of a sync log: entries with seq above the cursor, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPage<T> {
    pub max_seq: Seq,
    pub completed: bool,
    pub entries: Vec<(Seq, T)>,
}

/// Friend list changes of `user` after `after` (tombstones included).
pub async fn sync_friends(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    after: Seq,
    limit: usize,
) -> Result<SyncPage<FriendRecord>, ServiceError> {
    let (records, max_seq, completed) = read_records(logic, app, user, SyncKind::Friendship, after, limit).await?;
    let entries = records
        .into_iter()
        .filter_map(|(seq, r)| match r {
            Record::Friend(f) => Some((seq, f)),
            _ => None,
        })
        .collect();
    Ok(SyncPage { max_seq, completed, entries })
}
