//! Group messages: read fan-out. A message is written ONCE, in the group's own
//! `Message` timeline under the group's seq (plus its locator and the dedup record: 3
//! keys, whatever the group's size); the sender is answered after the write is durable;
//! online members get one Push, encoded once and wrapped once per gateway core
//! (`Sessions::send_to_members`). Offline members pull the group timeline by group seq.
//!
//! Visibility: a member sees the group's messages above their `join_seq` (the
//! timeline's newest seq when they joined) and nothing once they left (they are no
//! longer a member: pushes skip them, pulls and history refuse them with 40006).
//!
//! On the send path: no store read (the group, its members and the seq bound are in
//! memory once the group was touched; the sender's state comes from the user cache),
//! and nothing O(members) but the push to online members. Sends are pipelined like 1:1
//! sends: [`prepare`] checks and hands out the group seq under the group's lock (so one
//! connection's sends get seqs in send order) and registers it in flight; the write
//! happens outside the lock, merged with the other sends of the link's turn; [`finish`]
//! parks the durable message and pushes every parked one below the lowest seq still in
//! flight, in seq order. Pulls and history read up to that same point
//! ([`GroupState::committed`]), never past a message still being written.

use crate::error::ServiceError;
use bytes::Bytes;
use tern_schema::client::{ConversationType, EntryKind};
use tern_schema::codes;
use tern_schema::link::ConnRef;
use tern_schema::message::{self, ElemParts, MessageParts};
use tern_storage::{
    AppId, DedupRecord, GroupId, GroupMemberRecord, GuardOutcome, GuardedBatch, LogEntry, MessageLocator, Owner, Seq,
    StoreError, SyncKind, UserId, WriteBatch,
};

use tokio::sync::OwnedMutexGuard;

use super::{errors, roles, GroupState};
use crate::messages::{self, errors as msg, Accepted, Flight, MessageExtras, Recaller, TimelineItem};
use crate::user_cache::UserState;
use crate::{now_ms, Logic};
use tern_storage::Conversation;

/// A message to a group, from a device (TCP) or a business server (HTTP).
#[derive(Debug, Clone)]
pub struct GroupSend<'a> {
    pub app: AppId,
    pub group: GroupId,
    pub from: UserId,
    pub client_msg_id: &'a str,
    pub elems: Vec<ElemParts<'a>>,
    pub client_time_ms: u64,
    /// The sending device, or empty for server-side sends.
    pub from_device: &'a str,
    /// The sending connection: it gets the ack, not the push.
    pub origin: Option<ConnRef>,
    pub extras: MessageExtras,
}

fn refused(code: u32, message: impl Into<String>) -> ServiceError {
    ServiceError::refused(code, message)
}

fn dedup_key(app: AppId, from: &UserId, client_msg_id: &str) -> String {
    // Its own namespace: a client may reuse an id between a 1:1 and a group send.
    format!("g:{}:{}:{}", app.0, from.as_str(), client_msg_id)
}

/// The state of a live group, or its refusal.
fn live<'a>(slot: &'a mut Option<GroupState>, group: &GroupId) -> Result<&'a mut GroupState, ServiceError> {
    let s = slot.as_mut().ok_or_else(|| refused(errors::NO_SUCH_GROUP, format!("no such group: {group}")))?;
    if s.rec.destroyed {
        return Err(refused(errors::DESTROYED, format!("group {group} was dissolved")));
    }
    Ok(s)
}

/// The next seq of the group's timeline, reserving a new durable bound (one write per
/// `seq_step` seqs) before handing out a seq above the old one.
async fn next_seq(logic: &Logic, app: AppId, s: &mut GroupState) -> Result<Seq, StoreError> {
    super::Groups::check_owned(logic, app, &s.rec.group_id)?;
    let next = Seq(s.last_seq.0 + 1);
    if next > s.bound {
        let bound = Seq(s.last_seq.0 + logic.config.seq_step.max(1));
        let mut b = WriteBatch::with_capacity(1);
        b.set_seq_bound(app, Owner::Group(s.rec.group_id.clone()), SyncKind::Message, bound);
        logic.write_retrying(b).await?;
        s.bound = bound;
    }
    // Handed out whatever becomes of its write: a seq is never used twice.
    s.last_seq = next;
    Ok(next)
}

/// Starts writing the group's next seq bound in the background once less than half a
/// step is left below the current one, so a busy group's sends never wait for a bound
/// write on the link reader. The task holds the group's slot, so the group is not
/// evicted meanwhile; a failed raise only leaves the next allocation to write inline.
fn raise_ahead(logic: &Logic, slot: &mut OwnedMutexGuard<Option<GroupState>>, app: AppId) {
    let step = logic.config.seq_step.max(1);
    let Some(s) = slot.as_mut() else { return };
    if s.raising || s.bound.0.saturating_sub(s.last_seq.0) >= step.div_ceil(2) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    s.raising = true;
    let target = Seq(s.bound.0.max(s.last_seq.0) + step);
    let group = s.rec.group_id.clone();
    let (store, arc) = (logic.store.clone(), OwnedMutexGuard::mutex(slot).clone());
    rt.spawn(async move {
        let mut batch = WriteBatch::with_capacity(1);
        batch.set_seq_bound(app, Owner::Group(group), SyncKind::Message, target);
        let written = store.write(batch).await;
        if let Err(e) = &written {
            tracing::warn!(error = %e, "raising a group's seq bound ahead failed; the next allocation retries");
        }
        if let Some(s) = arc.lock().await.as_mut() {
            s.raising = false;
            if written.is_ok() {
                s.bound = s.bound.max(target);
            }
        }
    });
}

/// Pushes one stored entry (at `seq`) to the group's online members who may see it
/// (joined below `seq`), except `origin`.
fn push(logic: &Logic, app: AppId, s: &GroupState, seq: Seq, payload: &[u8], origin: Option<&ConnRef>) {
    let Ok(m) = message::decode_stored(payload) else {
        tracing::error!(group = %s.rec.group_id, seq = seq.0, "undecodable group message not pushed");
        return;
    };
    let mut p = MessageParts::from_table(&m);
    p.seq = seq.0;
    let parts = [p];
    let frame = message::push(&parts);
    // Members who muted the conversation get the same Push with `silent` set (issue
    // 12): encoded only when one of them exists, in one more Deliver per core.
    let muters = logic.conversations.flags.muters(app, &s.rec.group_id);
    let quiet = muters.as_ref().map(|_| message::push_with(&parts, true));
    let is_muted = |u: &UserId| muters.as_ref().is_some_and(|m| m.contains(u));
    let muted = quiet.as_deref().map(|q| (&is_muted as &dyn Fn(&UserId) -> bool, q));
    let members = &s.members;
    let n = if seq > s.max_join_seq {
        // The common case: every member joined below this message.
        let targets = |u: &UserId| members.contains_key(u);
        logic.sessions.send_to_members_muted(app, members.keys(), targets, &frame, muted, origin)
    } else {
        // Someone joined while this message was in flight: only those who joined below it.
        let visible = |u: &UserId| members.get(u).is_some_and(|m| m.join_seq < seq);
        let list: Vec<&UserId> = members.keys().filter(|u| visible(u)).collect();
        logic.sessions.send_to_members_muted(app, list.into_iter(), visible, &frame, muted, origin)
    };
    metrics::counter!("tern_group_messages_pushed_total").increment(n as u64);
}

/// A group send that passed its checks, with its group seq handed out and its write
/// built; the write is the caller's (alone, or in a link's turn with other sends).
/// Complete it with [`finish`] whatever the write's outcome.
#[derive(Debug)]
pub struct GroupPending {
    app: AppId,
    group: GroupId,
    key: String,
    seq: Seq,
    accepted: Accepted,
    payload: Bytes,
    origin: Option<ConnRef>,
}

/// What [`prepare`] made of a group send.
// Returned once and taken apart at once: boxing `Ready` would cost an allocation per send.
#[allow(clippy::large_enum_variant)]
pub enum GroupPrepared {
    /// Write this, then [`finish`] the pending send with the outcome.
    Ready(GroupPending, GuardedBatch),
    /// The same message (sender and client id) is being written already.
    Waiting(tokio::sync::oneshot::Receiver<Result<Accepted, ServiceError>>),
    /// A resend of a message accepted moments ago: its original answer.
    Done(Accepted),
}

/// Sends one message to a group. Returns once it is durable (or refused): members
/// only (40006); a muted group (40012) or member (40017) may not send unless the
/// sender is the owner or an admin.
pub async fn send(logic: &Logic, req: GroupSend<'_>) -> Result<Accepted, ServiceError> {
    // The app's business server first (nothing when it has no before-send URL).
    let hooked = crate::callbacks::before_group_send(logic, &req).await?;
    let req = hooked.apply_group(req);
    match prepare(logic, req).await? {
        GroupPrepared::Waiting(rx) => rx.await.unwrap_or_else(|_| Err(refused(codes::INTERNAL, "internal error"))),
        GroupPrepared::Done(accepted) => Ok(accepted),
        GroupPrepared::Ready(pending, write) => {
            let outcome = logic.write_guarded_retrying(vec![write]).await.map(|mut o| o.remove(0));
            finish(logic, pending, outcome).await
        }
    }
}

/// Runs every check of a group send and hands out its group seq, under the group's
/// lock but without writing: sends prepared one after the other (one connection's
/// pipelined sends) get seqs in that order, and their writes go to the store together
/// (no write per send under the lock). No store read once the group is in memory.
pub async fn prepare(logic: &Logic, req: GroupSend<'_>) -> Result<GroupPrepared, ServiceError> {
    messages::validate_body(logic, req.client_msg_id, &req.elems)?;
    if let Some(conn) = &req.origin {
        if !logic.messaging.take_token(conn, logic.config.messages.sends_per_sec) {
            return Err(refused(msg::SEND_RATE_EXCEEDED, "sending too fast; slow down"));
        }
    }
    match logic.user_cache.states(&*logic.store, req.app, std::slice::from_ref(&req.from)).await?[0] {
        UserState::Missing => return Err(refused(codes::USER_NOT_FOUND, "sender does not exist")),
        UserState::Deleted => return Err(refused(codes::USER_DELETED, "sender was deleted")),
        UserState::Muted => {
            return Err(refused(msg::SENDER_MUTED, "the sender is muted (silentFlag) and may not send"))
        }
        UserState::Disabled => {
            return Err(refused(msg::SENDER_DISABLED, "the sender is disabled (forbiddenFlag) and may not send"))
        }
        UserState::Active => {}
    }
    let key = dedup_key(req.app, &req.from, req.client_msg_id);
    match messages::take_off(logic, &key) {
        Flight::Done(a) => return Ok(GroupPrepared::Done(a)),
        Flight::Waiting(rx) => return Ok(GroupPrepared::Waiting(rx)),
        Flight::Start => {}
    }
    match build(logic, &req, &key).await {
        Ok((seq, accepted, payload, guarded)) => {
            let p = GroupPending { app: req.app, group: req.group, key, seq, accepted, payload, origin: req.origin };
            Ok(GroupPrepared::Ready(p, guarded))
        }
        Err(r) => {
            messages::land(logic, &key, &Err(r.clone()));
            Err(r)
        }
    }
}

/// Checks the sender's rights and hands out the seq (registered in flight) under the
/// group's lock; builds the write.
async fn build(
    logic: &Logic,
    req: &GroupSend<'_>,
    key: &str,
) -> Result<(Seq, Accepted, Bytes, GuardedBatch), ServiceError> {
    let app = req.app;
    let mut slot = logic.groups.lock(logic, app, &req.group).await?;
    let s = live(&mut slot, &req.group)?;
    let now = now_ms();
    let Some(member) = s.members.get(&req.from) else {
        return Err(refused(errors::NOT_MEMBER, format!("sender {} is not a member of the group", req.from)));
    };
    if member.role == roles::MEMBER {
        if s.rec.mute {
            return Err(refused(errors::GROUP_MUTED, "the group is muted: only the owner and admins may send"));
        }
        if member.mute_until_ms > now {
            return Err(refused(errors::MEMBER_MUTED, format!("sender is muted until {} ms", member.mute_until_ms)));
        }
    }
    let seq = next_seq(logic, app, s).await?;
    s.in_flight.insert(seq);
    raise_ahead(logic, &mut slot, app);
    drop(slot);
    let message_key = logic.messaging.keys.next(now);
    let payload = Bytes::from(message::encode_stored(&MessageParts {
        message_key,
        conversation_type: ConversationType::Group,
        from_id: req.from.as_str(),
        to_id: req.group.as_str(),
        seq: 0,
        server_time_ms: now,
        client_time_ms: req.client_time_ms,
        client_msg_id: req.client_msg_id,
        elems: req.elems.clone(),
        recalled: false,
        from_device: req.from_device,
        entry: EntryKind::Message,
        random: req.extras.random,
        badge_mode: req.extras.badge_mode,
        life_time_secs: req.extras.life_time_secs,
    }));
    let accepted = Accepted { message_key, seq, server_time_ms: now };
    let mut batch = WriteBatch::with_capacity(2);
    // Three keys per group message, whatever the group's size: the timeline entry, the
    // locator and (added by the store) the dedup record.
    batch.append_log(
        app,
        Owner::Group(req.group.clone()),
        SyncKind::Message,
        LogEntry { seq, time_ms: now, payload: payload.clone() },
    );
    batch.put_message_index(app, message_key, MessageLocator::group(req.from.clone(), req.group.clone(), seq, now));
    let guard = DedupRecord {
        key: key.to_owned(),
        value: accepted.encode(),
        expires_ms: now + logic.config.messages.dedup_window_secs * 1000,
    };
    Ok((seq, accepted, payload, GuardedBatch { guard, batch }))
}

/// Completes a prepared group send with its write's outcome: its seq leaves the
/// in-flight set, and every durable message now below the lowest seq still in flight
/// is pushed, in seq order (so pushes of one group never overtake each other and never
/// run ahead of the store). Answers resends that waited for it.
pub async fn finish(
    logic: &Logic,
    p: GroupPending,
    outcome: Result<GuardOutcome, StoreError>,
) -> Result<Accepted, ServiceError> {
    let written = messages::Written::judge(outcome, p.accepted, "group message");
    let durable = matches!(written, messages::Written::Applied);
    match logic.groups.lock_with(logic, p.app, &p.group, false).await {
        Ok(mut slot) => {
            if let Some(s) = slot.as_mut() {
                s.in_flight.remove(&p.seq);
                if durable {
                    s.parked.insert(p.seq, (p.payload.clone(), p.origin));
                }
                let upto = s.committed();
                while let Some(e) = s.parked.first_entry() {
                    if *e.key() > upto {
                        break;
                    }
                    let (seq, (payload, origin)) = e.remove_entry();
                    push(logic, p.app, s, seq, &payload, origin.as_ref());
                }
            }
        }
        // The group could not be reloaded: members catch up by pulling.
        Err(e) => tracing::error!(error = %e, group = %p.group, "group state unavailable; message not pushed"),
    }
    if durable {
        crate::callbacks::after_send(logic, p.app, &p.payload);
    }
    let answer = written.answer(p.accepted, "tern_group_messages_accepted_total");
    messages::land(logic, &p.key, &answer);
    answer
}

/// A group's state and `member`'s record in it, or the refusal: 40000 when there is no
/// such group, 40006 when they are not (or no longer) a member.
fn member_of<'a>(
    state: Option<&'a GroupState>,
    group: &GroupId,
    member: &UserId,
) -> Result<(&'a GroupState, &'a GroupMemberRecord), ServiceError> {
    let s = state.ok_or_else(|| refused(errors::NO_SUCH_GROUP, format!("no such group: {group}")))?;
    let m = s
        .members
        .get(member)
        .ok_or_else(|| refused(errors::NOT_MEMBER, format!("{member} is not a member of the group")))?;
    Ok((s, m))
}

/// `member`'s window of the group timeline: (floor, newest seq), the floor being their
/// join seq or, above it, where they cleared the group's history (issue 12). 40006 for
/// non-members (and former members: nothing after they left).
async fn window(logic: &Logic, app: AppId, group: &GroupId, member: &UserId) -> Result<(Seq, Seq), ServiceError> {
    let (join, newest) = {
        let slot = logic.groups.lock(logic, app, group).await?;
        let (s, m) = member_of(slot.as_ref(), group, member)?;
        (m.join_seq, s.committed())
    };
    let cleared = crate::conversations::group_cleared(logic, app, member, group).await?;
    Ok((join.max(cleared), newest))
}

/// A page of the group timeline after `after` as `member` may see it (above their
/// join, within retention, not past the newest durable seq). Returns (items, newest
/// seq, completed).
pub async fn pull(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    member: &UserId,
    after: Seq,
    limit: usize,
) -> Result<(Vec<TimelineItem>, Seq, bool), ServiceError> {
    let (floor, newest) = window(logic, app, group, member).await?;
    let limit = limit.clamp(1, logic.config.messages.max_pull);
    let after = after.max(floor);
    if after >= newest {
        return Ok((Vec::new(), newest, true));
    }
    let mut entries = logic.store.read_log(app, &Owner::Group(group.clone()), SyncKind::Message, after, limit).await?;
    entries.retain(|e| e.seq <= newest);
    let completed = entries.len() < limit || entries.last().is_some_and(|e| e.seq >= newest);
    let floor = messages::retention_floor_ms(logic, app);
    let now = now_ms();
    let items = entries
        .into_iter()
        .filter(|e| e.time_ms >= floor)
        .map(|e| TimelineItem { seq: e.seq, time_ms: e.time_ms, payload: e.payload })
        .filter(|i| !i.expired_at(now))
        .collect();
    Ok((items, newest, completed))
}

/// The group's messages as `member` may see them, newest first, strictly below
/// `before` (None: from the newest), at most `limit`; with the next page's cursor.
pub async fn history(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    member: &UserId,
    before: Option<Seq>,
    limit: usize,
) -> Result<(Vec<TimelineItem>, Option<Seq>), ServiceError> {
    let (below, newest) = window(logic, app, group, member).await?;
    let limit = limit.clamp(1, logic.config.messages.max_pull);
    let before = before.map_or(Seq(newest.0 + 1), |b| b.min(Seq(newest.0 + 1)));
    let owner = Owner::Group(group.clone());
    let entries = logic.store.read_log_back(app, &owner, SyncKind::Message, before, limit + 1).await?;
    let floor = messages::retention_floor_ms(logic, app);
    let mut items = Vec::with_capacity(limit);
    let mut more = false;
    for e in entries {
        if e.seq <= below || e.time_ms < floor {
            break;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(TimelineItem { seq: e.seq, time_ms: e.time_ms, payload: e.payload });
    }
    let cursor = if more { items.last().map(|i: &TimelineItem| i.seq) } else { None };
    Ok((items, cursor))
}

/// Recalls a group message: the stored entry is marked recalled (body dropped) in
/// place and a recall event is appended to the group timeline (members learn it by
/// pull); online members are told. The sender within the window, or an app admin.
pub async fn recall(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    loc: &MessageLocator,
    message_key: u64,
    by: &Recaller,
) -> Result<(), ServiceError> {
    if let Recaller::Sender(u) = by {
        if *u != loc.sender {
            return Err(refused(msg::NOT_A_PARTY, "only the sender may recall a message"));
        }
        let window = logic.apps.get(app).map_or(crate::apps::DEFAULT_RECALL_WINDOW_SECS, |a| a.recall_window_secs);
        if now_ms() > loc.time_ms + window * 1000 {
            return Err(refused(msg::RECALL_WINDOW_PASSED, format!("the {window} s recall window has passed")));
        }
    }
    let Some(seq) = loc.seq_of(&Owner::Group(group.clone())) else {
        return Err(refused(codes::INTERNAL, "group message locator without the group's copy"));
    };
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = slot.as_mut().ok_or_else(|| refused(errors::NO_SUCH_GROUP, format!("no such group: {group}")))?;
    let owner = Owner::Group(group.clone());
    let entry = logic
        .store
        .get_log_entry(app, &owner, SyncKind::Message, seq)
        .await?
        .ok_or_else(|| refused(msg::NO_SUCH_MESSAGE, "message no longer stored"))?;
    let m =
        message::decode_stored(&entry.payload).map_err(|_| refused(codes::INTERNAL, "stored message is corrupt"))?;
    let mut parts = MessageParts::from_table(&m);
    if parts.recalled {
        return Err(refused(msg::ALREADY_RECALLED, "the message was already recalled"));
    }
    parts.recalled = true;
    parts.elems.clear();
    let now = now_ms();
    let mut batch = WriteBatch::with_capacity(2);
    batch.replace_log_entry(
        app,
        owner.clone(),
        SyncKind::Message,
        LogEntry { seq, time_ms: entry.time_ms, payload: Bytes::from(message::encode_stored(&parts)) },
    );
    parts.entry = EntryKind::Recall;
    parts.server_time_ms = now;
    let event_seq = next_seq(logic, app, s).await?;
    batch.append_log(
        app,
        owner,
        SyncKind::Message,
        LogEntry { seq: event_seq, time_ms: now, payload: Bytes::from(message::encode_stored(&parts)) },
    );
    logic.write_retrying(batch).await?;
    let frame = message::recall_notify(message_key, loc.sender.as_str(), group.as_str(), event_seq.0);
    let members = &s.members;
    logic.sessions.send_to_members(app, members.keys(), |u| members.contains_key(u), &frame, None);
    metrics::counter!("tern_messages_recalled_total").increment(1);
    Ok(())
}

/// `member` read the group up to group seq `seq`: kept in their member record (for
/// receipts) and as their read mark of the group conversation, in one write; their
/// other devices are told. Lower than what they read already: nothing changes.
pub async fn read(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    member: &UserId,
    seq: Seq,
    origin: Option<&ConnRef>,
) -> Result<(), ServiceError> {
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let (s, m) = member_of(slot.as_ref(), group, member)?;
    if seq > s.committed() {
        return Err(refused(msg::INVALID_MESSAGE, "read_seq: above the group's newest message"));
    }
    if seq <= m.read_seq {
        return Ok(());
    }
    let mut m = m.clone();
    m.read_seq = seq;
    let mut batch = WriteBatch::with_capacity(2);
    batch.put_group_member(app, group.clone(), m.clone());
    batch.put_read_mark(app, member.clone(), Conversation::Group(group.clone()), seq);
    if let Err(e) = logic.write_retrying(batch).await {
        super::write_failed(&mut slot);
        return Err(e.into());
    }
    if let Some(s) = slot.as_mut() {
        s.members.insert(member.clone(), m);
    }
    let frame = message::read_receipt_notify_group(member.as_str(), group.as_str(), seq.0);
    logic.sessions.send_to_user(app, member, &frame, origin);
    Ok(())
}

/// Who read a group message: counts over every member who could see it (joined
/// before it, not its sender), and up to `limit` ids of each side, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    pub seq: Seq,
    pub read_count: usize,
    pub unread_count: usize,
    pub read: Vec<UserId>,
    pub unread: Vec<UserId>,
}

/// The read receipts of the group message `message_key` (O(members), off the send
/// path: one pass over the in-memory member list).
pub async fn receipts(
    logic: &Logic,
    app: AppId,
    group: &GroupId,
    message_key: u64,
    limit: usize,
) -> Result<Receipts, ServiceError> {
    let loc = logic
        .store
        .get_message_index(app, message_key)
        .await?
        .filter(|l| l.group_id() == Some(group))
        .ok_or_else(|| refused(msg::NO_SUCH_MESSAGE, format!("no message {message_key} in group {group}")))?;
    let seq = loc.seq_of(&Owner::Group(group.clone())).unwrap_or_default();
    let mut slot = logic.groups.lock(logic, app, group).await?;
    let s = slot.as_mut().ok_or_else(|| refused(errors::NO_SUCH_GROUP, format!("no such group: {group}")))?;
    let (mut read, mut unread) = (Vec::new(), Vec::new());
    for m in s.members.values() {
        if m.member_id == loc.sender || m.join_seq >= seq {
            continue;
        }
        if m.read_seq >= seq {
            read.push(m.member_id.clone());
        } else {
            unread.push(m.member_id.clone());
        }
    }
    let (read_count, unread_count) = (read.len(), unread.len());
    for list in [&mut read, &mut unread] {
        if list.len() > limit {
            list.select_nth_unstable(limit);
            list.truncate(limit);
        }
        list.sort_unstable();
    }
    Ok(Receipts { seq, read_count, unread_count, read, unread })
}
