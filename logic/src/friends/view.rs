//! One user's materialized relation state: friend list, blacklist and friend requests,
//! folded from that user's Friendship, Blacklist and FriendRequest logs.
//!
//! [`View::apply`] is the only way state changes, whether the record comes from reading
//! the log at load time or from a write that has just become durable, so a view rebuilt
//! from the log always equals the view that was updated in place.
//!
//! This module must never write: it folds records and answers questions about them.

use std::collections::{BTreeMap, HashMap};

use tern_storage::{AppId, LogEntry, Owner, Seq, StoreError, SyncKind, UserId};

use super::records::{Record, RequestRecord};
use crate::Logic;

/// Entries read per `read_log` call while loading a view.
pub(crate) const LOAD_PAGE: usize = 1_000;

/// The three logs a view folds, in load order.
pub(crate) const VIEW_KINDS: [SyncKind; 3] = [SyncKind::Friendship, SyncKind::Blacklist, SyncKind::FriendRequest];

/// Request statuses (the API's numbers).
pub const PENDING: u8 = 0;
pub const APPROVED: u8 = 1;
pub const REJECTED: u8 = 2;

/// The owner's entry for one friend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    pub remark: String,
    pub add_source: String,
    pub add_wording: String,
    pub extra: String,
    pub add_time: u64,
    pub update_time: u64,
    /// The seq of the Friendship log entry that wrote this state.
    pub seq: Seq,
}

/// The owner's entry for one blocked user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub add_time: u64,
    /// The seq of the Blacklist log entry that wrote it.
    pub seq: Seq,
}

/// Which side of a request the owner is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Received,
    Sent,
}

/// The owner's copy of a friend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub record: RequestRecord,
    /// The seq of the FriendRequest log entry that wrote this state.
    pub seq: Seq,
}

/// One user's relations. Requests are kept per (direction, peer): a new request to or
/// from the same peer replaces the previous, handled one, so the list stays bounded by
/// the number of peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    owner: UserId,
    friends: HashMap<UserId, Friend>,
    /// The friends by the seq of their entry (paging of `/friendship/get`).
    by_seq: BTreeMap<Seq, UserId>,
    blocked: HashMap<UserId, Blocked>,
    requests: HashMap<(Direction, UserId), Request>,
    request_ids: HashMap<u64, (Direction, UserId)>,
}

impl View {
    pub fn new(owner: UserId) -> Self {
        Self {
            owner,
            friends: HashMap::new(),
            by_seq: BTreeMap::new(),
            blocked: HashMap::new(),
            requests: HashMap::new(),
            request_ids: HashMap::new(),
        }
    }

    /// Folds first pages of the owner's three logs (in [`VIEW_KINDS`] order) read by
    /// the caller; `None` if a page was full, so the log may go on (then [`load`]
    /// reads it all). Logins read these pages with their other reads in one trip.
    ///
    /// [`load`]: Self::load
    pub fn from_first_pages(app: AppId, owner: &UserId, pages: [&[LogEntry]; 3]) -> Result<Option<View>, StoreError> {
        if pages.iter().any(|p| p.len() >= LOAD_PAGE) {
            return Ok(None);
        }
        let mut view = View::new(owner.clone());
        for (kind, page) in VIEW_KINDS.into_iter().zip(pages) {
            for entry in page {
                view.apply(entry.seq, Record::decode(app, owner, kind, entry)?);
            }
        }
        metrics::counter!("tern_friend_views_loaded_total").increment(1);
        Ok(Some(view))
    }

    /// Folds the owner's three logs from the start.
    pub async fn load(logic: &Logic, app: AppId, owner: &UserId) -> Result<View, StoreError> {
        let mut view = View::new(owner.clone());
        for kind in VIEW_KINDS {
            let mut after = Seq::ZERO;
            loop {
                let page = logic.store.read_log(app, &Owner::User(owner.clone()), kind, after, LOAD_PAGE).await?;
                for entry in &page {
                    view.apply(entry.seq, Record::decode(app, owner, kind, entry)?);
                    after = entry.seq;
                }
                if page.len() < LOAD_PAGE {
                    break;
                }
            }
        }
        metrics::counter!("tern_friend_views_loaded_total").increment(1);
        Ok(view)
    }

    /// Applies one record written at `seq` of its log.
    pub fn apply(&mut self, seq: Seq, record: Record) {
        match record {
            Record::Friend(r) => {
                if let Some(old) = self.friends.remove(&r.to_id) {
                    self.by_seq.remove(&old.seq);
                }
                if !r.deleted {
                    self.by_seq.insert(seq, r.to_id.clone());
                    self.friends.insert(
                        r.to_id,
                        Friend {
                            remark: r.remark,
                            add_source: r.add_source,
                            add_wording: r.add_wording,
                            extra: r.extra,
                            add_time: r.add_time,
                            update_time: r.update_time,
                            seq,
                        },
                    );
                }
            }
            Record::Block(r) => {
                if r.deleted {
                    self.blocked.remove(&r.to_id);
                } else {
                    self.blocked.insert(r.to_id, Blocked { add_time: r.add_time, seq });
                }
            }
            Record::Request(r) => {
                let key = if r.to_id == self.owner {
                    (Direction::Received, r.from_id.clone())
                } else if r.from_id == self.owner {
                    (Direction::Sent, r.to_id.clone())
                } else {
                    // Not a party: cannot be written by this server; ignore rather than
                    // fail every later read of the owner's relations.
                    tracing::warn!(owner = %self.owner, id = r.id, "friend request log holds a request of others");
                    return;
                };
                let id = r.id;
                if let Some(old) = self.requests.insert(key.clone(), Request { record: r, seq }) {
                    if old.record.id != id {
                        self.request_ids.remove(&old.record.id);
                    }
                }
                self.request_ids.insert(id, key);
            }
            // Not part of the view: the fan-out reads that log itself (`listed_by`).
            Record::ListedBy(_) => {}
        }
    }

    /// Memory the view holds, estimated in O(1) from its maps' capacities and an
    /// average of the strings each entry owns (ids, remarks: not walked, so the owner
    /// sweeper can measure every view each second).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        /// Heap bytes of the strings one entry owns, on average (an id of ~16 bytes,
        /// short remarks and sources).
        const STRINGS: usize = 48;
        const ID: usize = 16;
        size_of::<View>()
            + self.owner.as_str().len()
            + self.friends.capacity() * (size_of::<(UserId, Friend)>() + 1 + STRINGS)
            + self.by_seq.len() * (size_of::<(Seq, UserId)>() + ID + 8)
            + self.blocked.capacity() * (size_of::<(UserId, Blocked)>() + 1 + ID)
            + self.requests.capacity() * (size_of::<((Direction, UserId), Request)>() + 1 + STRINGS)
            + self.request_ids.capacity() * (size_of::<(u64, (Direction, UserId))>() + 1 + ID)
    }

    pub fn friend(&self, peer: &UserId) -> Option<&Friend> {
        self.friends.get(peer)
    }

    pub fn has_friend(&self, peer: &UserId) -> bool {
        self.friends.contains_key(peer)
    }

    pub fn friend_count(&self) -> usize {
        self.friends.len()
    }

    /// Friend ids, in no particular order.
    pub fn friend_ids(&self) -> impl Iterator<Item = &UserId> {
        self.friends.keys()
    }

    /// Up to `limit` friends whose entry seq is above `after`, by seq; and whether
    /// there are no more.
    pub fn friends_after(&self, after: Seq, limit: usize) -> (Vec<(UserId, Friend)>, bool) {
        let mut out = Vec::with_capacity(limit.min(self.friends.len()));
        let mut range = self.by_seq.range(Seq(after.0.saturating_add(1))..);
        for (_, id) in range.by_ref().take(limit) {
            if let Some(f) = self.friends.get(id) {
                out.push((id.clone(), f.clone()));
            }
        }
        let completed = range.next().is_none();
        (out, completed)
    }

    pub fn blocked(&self, peer: &UserId) -> Option<Blocked> {
        self.blocked.get(peer).copied()
    }

    pub fn blocked_count(&self) -> usize {
        self.blocked.len()
    }

    /// The blacklist, by entry seq.
    pub fn blacklist(&self) -> Vec<(UserId, Blocked)> {
        let mut v: Vec<(UserId, Blocked)> = self.blocked.iter().map(|(k, b)| (k.clone(), *b)).collect();
        v.sort_by_key(|(_, b)| b.seq);
        v
    }

    /// The current request with `peer` in `dir`, if any (pending or handled).
    pub fn request(&self, dir: Direction, peer: &UserId) -> Option<&Request> {
        self.requests.get(&(dir, peer.clone()))
    }

    /// The request with this id, with the owner's side of it.
    pub fn request_by_id(&self, id: u64) -> Option<(Direction, &Request)> {
        let key = self.request_ids.get(&id)?;
        self.requests.get(key).map(|r| (key.0, r))
    }

    /// Requests in `dir`, newest change first.
    pub fn requests(&self, dir: Direction) -> Vec<Request> {
        let mut v: Vec<Request> =
            self.requests.iter().filter(|((d, _), _)| *d == dir).map(|(_, r)| r.clone()).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.seq));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{BlockRecord, FriendRecord};
    use super::*;

    fn id(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn friend(to: &str, deleted: bool, remark: &str) -> Record {
        Record::Friend(FriendRecord {
            v: 1,
            to_id: id(to),
            deleted,
            remark: remark.into(),
            add_source: String::new(),
            add_wording: String::new(),
            extra: String::new(),
            add_time: 1,
            update_time: 1,
        })
    }

    fn request(id_: u64, from: &str, to: &str, status: u8) -> Record {
        Record::Request(RequestRecord {
            v: 1,
            id: id_,
            from_id: id(from),
            to_id: id(to),
            remark: String::new(),
            add_source: String::new(),
            add_wording: String::new(),
            extra: String::new(),
            two_way: true,
            status,
            read: false,
            create_time: 0,
            update_time: 0,
        })
    }

    #[test]
    fn friends_fold_with_tombstones_and_page_by_seq() {
        let mut v = View::new(id("a"));
        v.apply(Seq(1), friend("b", false, "x"));
        v.apply(Seq(2), friend("c", false, ""));
        v.apply(Seq(3), friend("b", false, "y"));
        v.apply(Seq(4), friend("d", false, ""));
        v.apply(Seq(5), friend("c", true, ""));
        assert_eq!(v.friend_count(), 2);
        assert_eq!(v.friend(&id("b")).unwrap().remark, "y");
        let (page, completed) = v.friends_after(Seq::ZERO, 1);
        assert_eq!((page[0].0.as_str(), page[0].1.seq, completed), ("b", Seq(3), false));
        let (page, completed) = v.friends_after(Seq(3), 1);
        assert_eq!((page[0].0.as_str(), completed), ("d", true));
        assert_eq!(v.friends_after(Seq(4), 5), (vec![], true));
    }

    #[test]
    fn blocks_and_requests() {
        let mut v = View::new(id("a"));
        v.apply(Seq(1), Record::Block(BlockRecord { v: 1, to_id: id("b"), deleted: false, add_time: 9 }));
        assert_eq!(v.blocked(&id("b")).map(|b| b.add_time), Some(9));
        v.apply(Seq(2), Record::Block(BlockRecord { v: 1, to_id: id("b"), deleted: true, add_time: 0 }));
        assert_eq!(v.blocked_count(), 0);

        v.apply(Seq(1), request(10, "b", "a", PENDING));
        v.apply(Seq(2), request(11, "a", "c", PENDING));
        assert_eq!(v.request_by_id(10).map(|(d, _)| d), Some(Direction::Received));
        assert_eq!(v.request_by_id(11).map(|(d, _)| d), Some(Direction::Sent));
        v.apply(Seq(3), request(10, "b", "a", REJECTED));
        assert_eq!(v.request_by_id(10).unwrap().1.record.status, REJECTED);
        // A new request from the same peer replaces the handled one.
        v.apply(Seq(4), request(12, "b", "a", PENDING));
        assert!(v.request_by_id(10).is_none());
        assert_eq!(v.requests(Direction::Received).len(), 1);
        // Not a party: ignored.
        v.apply(Seq(5), request(13, "x", "y", PENDING));
        assert!(v.request_by_id(13).is_none());
    }
}
