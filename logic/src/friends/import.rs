//! Importing a user's relations from another system (the original system's
//! `importFriendShip`): each item sets `from`'s entry for one peer to the state given —
//! listed or not, blocked or not — one-way, without consent rules or requests, because
//! the relation already existed where it comes from. Only `from`'s logs are written, in
//! one durable batch per call (split at the bulk-batch bound); items that already hold the
//! state asked for write nothing.

use std::collections::HashSet;

use crate::error::ServiceError;
use tern_storage::{AppId, UserId};

use super::errors::{BLACKLIST_LIMIT, FRIEND_LIMIT};
use super::friendship::{friend_record, tombstone};
use super::records::{BlockRecord, Record, VERSION};
use super::{check_len, commit_groups, limits, users, MAX_ADD_SOURCE_CHARS, MAX_EXTRA_CHARS, MAX_REMARK_CHARS};
use crate::{now_ms, Logic};

/// The state `from` ends up in towards `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFriend {
    pub to: UserId,
    /// `from` lists `to` (with these details) or not.
    pub listed: bool,
    pub remark: String,
    pub add_source: String,
    pub extra: String,
    /// `from` blocks `to` or not.
    pub blocked: bool,
}

impl ImportFriend {
    fn validate(&self, from: &UserId) -> Result<(), ServiceError> {
        if self.to == *from {
            return Err(ServiceError::invalid("toId", "cannot import a relation with yourself"));
        }
        check_len("remark", &self.remark, MAX_REMARK_CHARS)?;
        check_len("addSource", &self.add_source, MAX_ADD_SOURCE_CHARS)?;
        check_len("extra", &self.extra, MAX_EXTRA_CHARS)
    }
}

/// Sets `from`'s relations per item. Answers per item, in order: a bad item (invalid
/// field, repeated peer, unknown or deleted peer, a full list) never fails the others;
/// only an unknown or deleted `from` and store failures fail the call.
pub async fn import(
    logic: &Logic,
    app: AppId,
    from: &UserId,
    items: Vec<ImportFriend>,
) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
    users(logic, app, &[from], true).await?;
    let mut results: Vec<Result<(), ServiceError>> = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for item in &items {
        let r = item.validate(from).and_then(|()| match seen.insert(item.to.clone()) {
            true => Ok(()),
            false => Err(ServiceError::invalid("toId", "appears more than once in this batch")),
        });
        results.push(r);
    }
    // Peers must exist; a deleted peer may still be blocked but not listed.
    let peers: Vec<UserId> = items.iter().map(|i| i.to.clone()).collect();
    let found = logic.store.get_users(app, &peers).await?;
    for ((item, rec), r) in items.iter().zip(&found).zip(results.iter_mut()) {
        if r.is_err() {
            continue;
        }
        *r = match rec {
            None => Err(ServiceError::UserNotFound(item.to.clone())),
            Some(rec) if rec.deleted && item.listed => Err(ServiceError::UserDeleted(item.to.clone())),
            Some(_) => Ok(()),
        };
    }

    let (max_friends, max_blocked) = limits(logic, app);
    let mut locked = logic.friends.lock(logic, app, [from]).await?;
    let view = locked.view(from);
    let mut friends = view.friend_count();
    let mut blocked = view.blocked_count();
    let now = now_ms();
    let mut changes = Vec::new();
    for (item, r) in items.into_iter().zip(results.iter_mut()) {
        if r.is_err() {
            continue;
        }
        let friend = view.friend(&item.to);
        let mut writes = Vec::new();
        // Counted only once the whole item is accepted.
        let (mut friend_delta, mut block_delta) = (0isize, 0isize);
        match (item.listed, friend) {
            (true, Some(f)) if f.remark == item.remark && f.add_source == item.add_source && f.extra == item.extra => {}
            (true, existing) => {
                if existing.is_none() && friends >= max_friends {
                    *r = Err(ServiceError::refused(
                        FRIEND_LIMIT,
                        format!("the friend list of `{from}` is full ({max_friends} friends)"),
                    ));
                    continue;
                }
                let mut rec = friend_record(&item.to, item.remark, item.add_source, String::new(), item.extra, now);
                if let (Record::Friend(fr), Some(old)) = (&mut rec, existing) {
                    fr.add_time = old.add_time;
                    fr.add_wording = old.add_wording.clone();
                }
                friend_delta = isize::from(existing.is_none());
                writes.push((from.clone(), rec));
            }
            (false, Some(_)) => {
                friend_delta = -1;
                writes.push((from.clone(), tombstone(&item.to, now)));
            }
            (false, None) => {}
        }
        match (item.blocked, view.blocked(&item.to).is_some()) {
            (true, false) => {
                if blocked >= max_blocked {
                    *r = Err(ServiceError::refused(
                        BLACKLIST_LIMIT,
                        format!("the blacklist of `{from}` is full ({max_blocked} users)"),
                    ));
                    continue;
                }
                block_delta = 1;
                let rec = BlockRecord { v: VERSION, to_id: item.to.clone(), deleted: false, add_time: now };
                writes.push((from.clone(), Record::Block(rec)));
            }
            (false, true) => {
                block_delta = -1;
                let rec = BlockRecord { v: VERSION, to_id: item.to.clone(), deleted: true, add_time: 0 };
                writes.push((from.clone(), Record::Block(rec)));
            }
            _ => {}
        }
        friends = friends.saturating_add_signed(friend_delta);
        blocked = blocked.saturating_add_signed(block_delta);
        if !writes.is_empty() {
            changes.push(writes);
        }
    }
    commit_groups(logic, &mut locked, changes).await?;
    Ok(results)
}
