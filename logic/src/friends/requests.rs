//! Friend requests: listing, marking read, approving and rejecting. Requests are
//! created by `friendship::add` when the target needs to approve. Each party's
//! FriendRequest log holds its own copy; only the recipient decides.

use crate::error::ServiceError;
use tern_storage::{AppId, Seq, SyncKind, UserId};

use super::errors::{NOT_YOUR_REQUEST, NO_SUCH_REQUEST, REQUEST_HANDLED};
use super::friendship::{check_blocks, check_room, friend_record};
use super::records::Record;
use super::view::{Direction, Request, APPROVED, PENDING, REJECTED};
use super::{commit, commit_groups, limits, users};
use crate::{now_ms, Logic};

/// A user's requests in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestList {
    /// Newest change first.
    pub requests: Vec<Request>,
    /// Received requests not yet marked read (whatever the direction listed).
    pub unread: usize,
}

/// The requests `user` received (or, with `sent`, sent): pending and handled, the
/// latest per peer.
pub async fn list_requests(logic: &Logic, app: AppId, user: &UserId, sent: bool) -> Result<RequestList, ServiceError> {
    users(logic, app, &[user], false).await?;
    let locked = logic.friends.lock(logic, app, [user]).await?;
    let v = locked.view(user);
    let received = v.requests(Direction::Received);
    let unread = received.iter().filter(|r| !r.record.read).count();
    let requests = if sent { v.requests(Direction::Sent) } else { received };
    Ok(RequestList { requests, unread })
}

/// Marks every received request of `user` read. Returns how many changed and `user`'s
/// FriendRequest seq afterwards.
pub async fn read_all(logic: &Logic, app: AppId, user: &UserId) -> Result<(usize, Seq), ServiceError> {
    users(logic, app, &[user], true).await?;
    let mut locked = logic.friends.lock(logic, app, [user]).await?;
    let mut unread: Vec<Request> =
        locked.view(user).requests(Direction::Received).into_iter().filter(|r| !r.record.read).collect();
    unread.sort_by_key(|r| r.seq);
    let groups: Vec<Vec<(UserId, Record)>> = unread
        .iter()
        .map(|r| {
            let mut rec = r.record.clone();
            rec.read = true;
            vec![(user.clone(), Record::Request(rec))]
        })
        .collect();
    let seqs = commit_groups(logic, &mut locked, groups).await?;
    let seq = match seqs.last() {
        Some(s) => *s,
        None => logic.seqs.committed(app, user, SyncKind::FriendRequest).await?,
    };
    Ok((seqs.len(), seq))
}

/// `approver` approves (`agree`) or rejects the request `id` they received. Approval
/// makes the users friends as the request asked (one- or two-way), under the same
/// block and limit checks as a direct add; both request copies and the friend entries
/// are written in one batch.
pub async fn approve(logic: &Logic, app: AppId, approver: &UserId, id: u64, agree: bool) -> Result<(), ServiceError> {
    users(logic, app, &[approver], true).await?;
    // Find the requester under the approver's lock alone, then lock both in order and
    // look again: the request may have changed in between.
    let requester = {
        let locked = logic.friends.lock(logic, app, [approver]).await?;
        let found = locked.view(approver).request_by_id(id).map(|(d, r)| (d, r.clone()));
        let from = find(&found, id)?.record.from_id.clone();
        from
    };
    if agree {
        users(logic, app, &[&requester], true).await?;
    }
    let (max_friends, _) = limits(logic, app);
    let mut locked = logic.friends.lock(logic, app, [approver, &requester]).await?;
    let found = locked.view(approver).request_by_id(id).map(|(d, r)| (d, r.clone()));
    let req = find(&found, id)?.clone();
    if req.record.status != PENDING {
        let what = if req.record.status == APPROVED { "approved" } else { "rejected" };
        return Err(ServiceError::refused(REQUEST_HANDLED, format!("request {id} was already {what}")));
    }
    let now = now_ms();
    let mut rec = req.record;
    rec.status = if agree { APPROVED } else { REJECTED };
    rec.update_time = now;
    let mut mine = rec.clone();
    mine.read = true;
    let mut theirs = rec.clone();
    theirs.read = false;
    let mut changes = vec![(requester.clone(), Record::Request(theirs)), (approver.clone(), Record::Request(mine))];
    if agree {
        check_blocks(&locked, approver, &requester)?;
        let need_r = !locked.view(&requester).has_friend(approver);
        let need_a = rec.two_way && !locked.view(approver).has_friend(&requester);
        check_room(&locked, &requester, need_r, max_friends)?;
        check_room(&locked, approver, need_a, max_friends)?;
        if need_r {
            changes.push((
                requester.clone(),
                friend_record(approver, rec.remark, rec.add_source.clone(), rec.add_wording.clone(), rec.extra, now),
            ));
        }
        if need_a {
            changes.push((
                approver.clone(),
                friend_record(&requester, String::new(), rec.add_source, rec.add_wording, String::new(), now),
            ));
        }
    }
    commit(logic, &mut locked, changes).await?;
    Ok(())
}

/// The request if the owner received it: 30012 if unknown, 30011 if the owner sent it.
fn find(found: &Option<(Direction, Request)>, id: u64) -> Result<&Request, ServiceError> {
    match found {
        None => {
            Err(ServiceError::refused(NO_SUCH_REQUEST, format!("no friend request {id} among the requests of fromId")))
        }
        Some((Direction::Sent, _)) => Err(ServiceError::refused(
            NOT_YOUR_REQUEST,
            format!("request {id} was sent by fromId; only its recipient may approve or reject it"),
        )),
        Some((Direction::Received, r)) => Ok(r),
    }
}
