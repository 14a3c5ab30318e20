//! The blacklist: block, unblock, list, sync, and the check the message path and
//! friend adds use. Blocking is one-sided state of the blocker (a Blacklist log entry);
//! it leaves friend lists alone.

use crate::error::ServiceError;
use tern_storage::{AppId, Seq, StoreError, SyncKind, UserId};

use super::errors::{BLACKLIST_LIMIT, NOT_BLOCKED};
use super::friendship::{CheckStatus, SyncPage};
use super::records::{BlockRecord, Record, VERSION};
use super::view::Blocked;
use super::{commit, limits, read_records, users};
use crate::user_cache::UserState;
use crate::{now_ms, Logic};

/// What a block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Blocked now; `from`'s Blacklist seq.
    Blocked(Seq),
    /// Was blocked already (nothing written); the seq of that entry.
    AlreadyBlocked(Seq),
}

/// `from` blocks `to`: `to` can no longer message `from` (30007) or add them.
pub async fn block(logic: &Logic, app: AppId, from: &UserId, to: &UserId) -> Result<BlockOutcome, ServiceError> {
    if from == to {
        return Err(ServiceError::invalid("toId", "cannot block yourself"));
    }
    users(logic, app, &[from], true).await?;
    // Deleted users may be blocked (harmless); unknown ids may not (typos).
    users(logic, app, &[to], false).await?;
    let (_, max) = limits(logic, app);
    let mut locked = logic.friends.lock(logic, app, [from]).await?;
    let v = locked.view(from);
    if let Some(b) = v.blocked(to) {
        return Ok(BlockOutcome::AlreadyBlocked(b.seq));
    }
    if v.blocked_count() >= max {
        return Err(ServiceError::refused(BLACKLIST_LIMIT, format!("the blacklist of `{from}` is full ({max} users)")));
    }
    let rec = Record::Block(BlockRecord { v: VERSION, to_id: to.clone(), deleted: false, add_time: now_ms() });
    let seqs = commit(logic, &mut locked, vec![(from.clone(), rec)]).await?;
    Ok(BlockOutcome::Blocked(seqs[0]))
}

/// `from` unblocks `to` (30010 if `to` is not blocked). Returns `from`'s Blacklist seq.
pub async fn unblock(logic: &Logic, app: AppId, from: &UserId, to: &UserId) -> Result<Seq, ServiceError> {
    users(logic, app, &[from], true).await?;
    let mut locked = logic.friends.lock(logic, app, [from]).await?;
    if locked.view(from).blocked(to).is_none() {
        return Err(ServiceError::refused(NOT_BLOCKED, format!("`{to}` is not in the blacklist of `{from}`")));
    }
    let rec = Record::Block(BlockRecord { v: VERSION, to_id: to.clone(), deleted: true, add_time: 0 });
    let seqs = commit(logic, &mut locked, vec![(from.clone(), rec)]).await?;
    Ok(seqs[0])
}

/// `user`'s blacklist, by entry seq.
pub async fn blacklist(logic: &Logic, app: AppId, user: &UserId) -> Result<Vec<(UserId, Blocked)>, ServiceError> {
    users(logic, app, &[user], false).await?;
    let locked = logic.friends.lock(logic, app, [user]).await?;
    Ok(locked.view(user).blacklist())
}

/// Whether `owner` blocked `peer` (the send path's check).
pub async fn is_blocked(logic: &Logic, app: AppId, owner: &UserId, peer: &UserId) -> Result<bool, StoreError> {
    let locked = logic.friends.lock(logic, app, [owner]).await?;
    Ok(locked.view(owner).blocked(peer).is_some())
}

/// Whether `from` blocked each of `ids` (and, two-way, whether each blocked `from`), in
/// input order, in the shape of a friend check. Ids never imported block nobody and get
/// no view.
pub async fn check_blocked(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    ids: &[UserId],
    two_way: bool,
) -> Result<Vec<CheckStatus>, ServiceError> {
    users(logic, app, &[from], false).await?;
    let from_blocked: Vec<bool> = {
        let locked = logic.friends.lock(logic, app, [from]).await?;
        let v = locked.view(from);
        ids.iter().map(|id| v.blocked(id).is_some()).collect()
    };
    if !two_way {
        return Ok(from_blocked.into_iter().map(CheckStatus::OneWay).collect());
    }
    let states = logic.user_cache.states(&*logic.store, app, ids).await?;
    let mut out = Vec::with_capacity(ids.len());
    for ((id, from_has), state) in ids.iter().zip(from_blocked).zip(states) {
        // One view at a time, as in the friend check.
        let to_has = id != from
            && state != UserState::Missing
            && logic.friends.lock(logic, app, [id]).await?.view(id).blocked(from).is_some();
        out.push(CheckStatus::TwoWay { from_has, to_has });
    }
    Ok(out)
}

/// Blacklist changes of `user` after `after` (unblocks as tombstones).
pub async fn sync_blacklist(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    after: Seq,
    limit: usize,
) -> Result<SyncPage<BlockRecord>, ServiceError> {
    let (records, max_seq, completed) = read_records(logic, app, user, SyncKind::Blacklist, after, limit).await?;
    let entries = records
        .into_iter()
        .filter_map(|(seq, r)| match r {
            Record::Block(b) => Some((seq, b)),
            _ => None,
        })
        .collect();
    Ok(SyncPage { max_seq, completed, entries })
}
