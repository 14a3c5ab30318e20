//! 1:1 messaging: accept checks, durable write fan-out to both inbox timelines with
//! dedup, ordered push, pull, push-acks, read receipts, recall, and the reads behind the
//! HTTP message API.
//!
//! The send path: validate → dedup (durable record, plus an in-memory table so
//! concurrent resends wait for the first) → allocate one seq in each user's Message
//! timeline → ONE store batch (both timeline entries, the conversation index of both
//! users, the message index, the dedup record, bound raises) that the store
//! group-commits with concurrent sends → ack only after it is durable → ordered push to
//! the recipient's devices and the sender's other devices.
//!
//! Must never: ack before durability, push above a user's committed watermark, or let
//! one user read a pair's messages they are not part of.

pub mod delivery;
pub mod keys;
pub mod recent;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tern_schema::client::{ConversationType, ElemType, EntryKind, SyncKind as WireKind};
use tern_schema::codes;
use tern_schema::link::ConnRef;
use tern_schema::message::{self, ElemParts, MessageParts};
use tern_storage::{
    AppId, Conversation, DedupRecord, GuardOutcome, GuardedBatch, LogEntry, MessageLocator, Owner, Seq, StoreError,
    SyncKind, UserId, WriteBatch,
};
use tokio::sync::oneshot;

use crate::error::ServiceError;
use crate::seq::Allocation;
use crate::{now_ms, Logic};
use delivery::Item;

/// Message error codes (50000s; users 20000s; blacklist 30007). Listed in PROTOCOL.md
/// and the HTTP docs.
pub mod errors {
    /// A field of the message is invalid (the message names it).
    pub const INVALID_MESSAGE: u32 = 50000;
    /// The body exceeds the configured size.
    pub const BODY_TOO_LARGE: u32 = 50001;
    /// The recall window has passed.
    pub const RECALL_WINDOW_PASSED: u32 = 50004;
    /// The sender is muted (`silentFlag` in the profile) and may not send.
    pub const SENDER_MUTED: u32 = 50002;
    /// The sender is disabled (`forbiddenFlag` in the profile): no login, no send.
    pub const SENDER_DISABLED: u32 = 50003;
    /// The message was already recalled.
    pub const ALREADY_RECALLED: u32 = 50005;
    /// The connection sends faster than its rate allows.
    pub const SEND_RATE_EXCEEDED: u32 = tern_schema::codes::SEND_RATE_EXCEEDED;
    /// No message with that key (in this app).
    pub const NO_SUCH_MESSAGE: u32 = 50007;
    /// The caller is not a party to the message (or not its sender, for a recall).
    pub const NOT_A_PARTY: u32 = 50008;
}

/// A message to send, from a device (TCP) or a business server (HTTP).
#[derive(Debug, Clone)]
pub struct SendRequest<'a> {
    pub app: AppId,
    pub from: UserId,
    pub to: UserId,
    pub client_msg_id: &'a str,
    pub elems: Vec<ElemParts<'a>>,
    pub client_time_ms: u64,
    /// The sending device, or empty for server-side sends.
    pub from_device: &'a str,
    /// The sending connection: it gets the ack, not a push.
    pub origin: Option<ConnRef>,
    /// The original system's per-message fields (HTTP sends only; zero otherwise).
    pub extras: MessageExtras,
}

/// The original system's per-message fields, stored with the message and answered with
/// it: `messageRandom` and `badgeMode` are opaque; `messageLifeTime` takes the message
/// out of offline sync once it has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageExtras {
    pub random: u64,
    pub badge_mode: u8,
    pub life_time_secs: u32,
}

/// An accepted message as the sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub message_key: u64,
    /// The sender's seq.
    pub seq: Seq,
    pub server_time_ms: u64,
}

impl Accepted {
    pub(crate) fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.message_key.to_be_bytes());
        v.extend_from_slice(&self.seq.0.to_be_bytes());
        v.extend_from_slice(&self.server_time_ms.to_be_bytes());
        Bytes::from(v)
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let n = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        Some(Self { message_key: n(0)?, seq: Seq(n(8)?), server_time_ms: n(16)? })
    }
}

type SendResult = Result<Accepted, ServiceError>;

/// Messaging state kept in memory by the slot owner.
#[derive(Default)]
pub struct Messaging {
    pub keys: keys::MessageKeys,
    pub delivery: delivery::Delivery,
    /// Durable sends of the last minutes, by dedup key: resends answered from memory.
    recent: recent::RecentSends,
    /// Sends being written, by dedup key: concurrent resends wait for the first.
    in_flight: Mutex<HashMap<String, Vec<oneshot::Sender<SendResult>>>>,
    /// Per-connection send token buckets.
    buckets: Mutex<HashMap<(u32, u16, u32, u32), Bucket>>,
    /// Device acks not yet written (coalesced; flushed by `flush_acks`).
    acks: Mutex<HashMap<(AppId, UserId, String), u64>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

fn dedup_key(app: AppId, from: &UserId, client_msg_id: &str) -> String {
    format!("m:{}:{}:{}", app.0, from.as_str(), client_msg_id)
}

fn validate(logic: &Logic, req: &SendRequest<'_>) -> Result<(), ServiceError> {
    validate_body(logic, req.client_msg_id, &req.elems)
}

/// Checks a message's client id and elements (1:1 and group sends alike).
pub(crate) fn validate_body(logic: &Logic, client_msg_id: &str, elems: &[ElemParts<'_>]) -> Result<(), ServiceError> {
    if client_msg_id.is_empty() || client_msg_id.len() > 64 {
        return Err(ServiceError::refused(errors::INVALID_MESSAGE, "client_msg_id: must be 1..=64 bytes"));
    }
    if elems.is_empty() {
        return Err(ServiceError::refused(errors::INVALID_MESSAGE, "elems: a message needs at least one element"));
    }
    if elems.len() > 32 {
        return Err(ServiceError::refused(errors::INVALID_MESSAGE, "elems: at most 32 elements"));
    }
    for (i, e) in elems.iter().enumerate() {
        let ok = match e.elem_type {
            ElemType::Text => !e.text.is_empty(),
            ElemType::Custom => !e.data.is_empty() || !e.text.is_empty(),
            ElemType::Image | ElemType::File | ElemType::Sound | ElemType::Video => !e.url.is_empty(),
            ElemType::Location => !e.extra.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(ServiceError::refused(
                errors::INVALID_MESSAGE,
                format!("elems[{i}]: empty or unknown element type"),
            ));
        }
    }
    let size: usize = elems.iter().map(ElemParts::size).sum();
    let max = logic.config.messages.max_body_bytes;
    if size > max {
        return Err(ServiceError::refused(errors::BODY_TOO_LARGE, format!("body is {size} bytes; the limit is {max}")));
    }
    Ok(())
}

impl Messaging {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one send token of a connection.
    pub(crate) fn take_token(&self, conn: &ConnRef, per_sec: u32) -> bool {
        let key = (conn.gateway_id(), conn.core(), conn.slot(), conn.generation());
        let mut g = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let cap = f64::from(per_sec.max(1)) * 2.0;
        let b = g.entry(key).or_insert(Bucket { tokens: cap, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * f64::from(per_sec)).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a closed connection's rate state.
    pub fn forget_conn(&self, conn: &ConnRef) {
        let key = (conn.gateway_id(), conn.core(), conn.slot(), conn.generation());
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
}

/// A send that passed its checks, with its seqs allocated and its writes built; the
/// store write is the caller's (alone, or merged with other sends of one turn into one
/// [`Store::write_guarded`](tern_storage::Store::write_guarded) request). Complete it
/// with [`finish`] whatever the write's outcome.
#[derive(Debug)]
pub struct Pending {
    key: String,
    accepted: Accepted,
    from_alloc: Allocation,
    to_alloc: Option<Allocation>,
    payload: Bytes,
    origin: Option<ConnRef>,
}

/// What [`prepare`] made of a send.
// Returned once and taken apart at once: boxing `Ready` would cost an allocation per send.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    /// Write this, then [`finish`] the pending send with the outcome.
    Ready(Pending, GuardedBatch),
    /// The same message (sender and client id) is being written already: this resolves
    /// with the first attempt's result.
    Waiting(oneshot::Receiver<SendResult>),
    /// A resend of a message accepted moments ago: its original answer.
    Done(Accepted),
}

/// Sends one message. Returns only once it is durable (or refused).
pub async fn send(logic: &Logic, req: SendRequest<'_>) -> SendResult {
    let hooked = crate::callbacks::before_send(logic, &req).await?;
    match prepare(logic, hooked.apply(req)).await? {
        Prepared::Waiting(rx) => {
            rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")))
        }
        Prepared::Done(accepted) => Ok(accepted),
        Prepared::Ready(pending, write) => {
            let outcome = logic.write_guarded_retrying(vec![write]).await.map(|mut o| o.remove(0));
            finish(logic, pending, outcome)
        }
    }
}

/// Runs every check of a send and allocates its seqs, in the caller's order: two sends
/// prepared one after the other get seqs in that order in both timelines. Does no I/O
/// when the users, their friend views and their seq bounds are in memory (the common
/// case); reads the store once per user otherwise.
pub async fn prepare(logic: &Logic, req: SendRequest<'_>) -> Result<Prepared, ServiceError> {
    validate(logic, &req)?;
    if let Some(conn) = &req.origin {
        if !logic.messaging.take_token(conn, logic.config.messages.sends_per_sec) {
            return Err(ServiceError::refused(errors::SEND_RATE_EXCEEDED, "sending too fast; slow down"));
        }
    }
    let key = dedup_key(req.app, &req.from, req.client_msg_id);
    // A resend of a message being written waits for the first attempt's outcome; a
    // resend of one already stored is answered by the store's dedup guard.
    {
        let mut g = logic.messaging.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(accepted) = logic.messaging.recent.get(&key) {
            metrics::counter!("tern_messages_deduplicated_total").increment(1);
            return Ok(Prepared::Done(accepted));
        }
        if let Some(waiters) = g.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Ok(Prepared::Waiting(rx));
        }
        g.insert(key.clone(), Vec::new());
    }
    match build(logic, &req, key.clone()).await {
        Ok((pending, write)) => Ok(Prepared::Ready(pending, write)),
        Err(r) => {
            release(logic, &key, &Err(r.clone()));
            Err(r)
        }
    }
}

/// Where a send with dedup key `key` stands (group sends use this; 1:1 sends do the
/// same inside [`prepare`]).
pub(crate) enum Flight {
    /// Nothing of it is known: the caller writes it and must [`land`] it.
    Start,
    /// The same message is being written: this resolves with that attempt's result.
    Waiting(oneshot::Receiver<SendResult>),
    /// Accepted moments ago: its original answer.
    Done(Accepted),
}

/// Looks `key` up in the recent and in-flight tables; registers it as in flight when
/// it is new.
pub(crate) fn take_off(logic: &Logic, key: &str) -> Flight {
    let mut g = logic.messaging.in_flight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(accepted) = logic.messaging.recent.get(key) {
        metrics::counter!("tern_messages_deduplicated_total").increment(1);
        return Flight::Done(accepted);
    }
    if let Some(waiters) = g.get_mut(key) {
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        return Flight::Waiting(rx);
    }
    g.insert(key.to_owned(), Vec::new());
    Flight::Start
}

/// Ends the flight of a send started with [`take_off`]: remembers an accepted answer
/// for resends and answers the resends that waited.
pub(crate) fn land(logic: &Logic, key: &str, result: &SendResult) {
    if let Ok(accepted) = result {
        logic.messaging.recent.insert(key.to_owned(), *accepted);
    }
    release(logic, key, result);
}

/// Ends a send's flight in the dedup table, answering concurrent resends.
fn release(logic: &Logic, key: &str, result: &SendResult) {
    let waiters = logic.messaging.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(key).unwrap_or_default();
    for w in waiters {
        let _ = w.send(result.clone());
    }
}

async fn build(logic: &Logic, req: &SendRequest<'_>, key: String) -> Result<(Pending, GuardedBatch), ServiceError> {
    check_parties(logic, req.app, &req.from, &req.to).await?;
    crate::hooks::check_send_allowed(logic, req.app, &req.from, &req.to).await?;

    let now = now_ms();
    let self_message = req.from == req.to;
    let from_alloc = logic.seqs.allocate(req.app, &req.from, SyncKind::Message, 1).await?;
    let to_alloc = if self_message {
        None
    } else {
        match logic.seqs.allocate(req.app, &req.to, SyncKind::Message, 1).await {
            Ok(a) => Some(a),
            Err(e) => {
                logic.messaging.delivery.complete(logic, &from_alloc, false, Vec::new());
                return Err(e.into());
            }
        }
    };
    let message_key = logic.messaging.keys.next(now);
    let stored = message::encode_stored(&MessageParts {
        message_key,
        conversation_type: ConversationType::Single,
        from_id: req.from.as_str(),
        to_id: req.to.as_str(),
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
    });
    let payload = Bytes::from(stored);
    let accepted = Accepted { message_key, seq: from_alloc.first, server_time_ms: now };

    let mut batch = WriteBatch::with_capacity(8);
    let entry = |seq: Seq| LogEntry { seq, time_ms: now, payload: payload.clone() };
    // Six keys per 1:1 message: two timeline entries (each user owns their inbox), two
    // conversation-index entries, the locator and (added by the store) the dedup record.
    batch.append_log(req.app, req.from.clone(), SyncKind::Message, entry(from_alloc.first));
    batch.append_conv_index(req.app, req.from.clone(), Conversation::Single(req.to.clone()), from_alloc.first);
    let to_seq = to_alloc.as_ref().map_or(from_alloc.first, |a| a.first);
    if let Some(a) = &to_alloc {
        batch.append_log(req.app, req.to.clone(), SyncKind::Message, entry(a.first));
        batch.append_conv_index(req.app, req.to.clone(), Conversation::Single(req.from.clone()), a.first);
    }
    batch.put_message_index(
        req.app,
        message_key,
        MessageLocator::single(req.from.clone(), from_alloc.first, req.to.clone(), to_seq, now),
    );
    let guard = DedupRecord {
        key: key.clone(),
        value: accepted.encode(),
        expires_ms: now + logic.config.messages.dedup_window_secs * 1000,
    };
    let pending = Pending { key, accepted, from_alloc, to_alloc, payload, origin: req.origin };
    Ok((pending, GuardedBatch { guard, batch }))
}

/// How a send's guarded write ended, judged once for 1:1 and group sends.
pub(crate) enum Written {
    /// Durable: this send's write (or a retry of it) applied.
    Applied,
    /// An earlier send with the same client message id was stored: its answer (`None`:
    /// the stored record is corrupt).
    Duplicate(Option<Accepted>),
    /// Nothing written; the send's seqs are skipped and this is the sender's answer.
    Failed(ServiceError),
}

impl Written {
    pub(crate) fn judge(outcome: Result<GuardOutcome, StoreError>, ours: Accepted, path: &str) -> Self {
        match outcome {
            // Our own guard seen by a retried write (it landed before the error): applied.
            Ok(GuardOutcome::Duplicate(v)) if Accepted::decode(&v) == Some(ours) => Written::Applied,
            Ok(GuardOutcome::Duplicate(v)) => Written::Duplicate(Accepted::decode(&v)),
            Ok(GuardOutcome::Applied) => Written::Applied,
            // A slot given up between allocation and write (the router refused the
            // write): 80009, retryable, not a failure of the store.
            Err(e @ StoreError::Unavailable(_)) => Written::Failed(ServiceError::Store(e)),
            Err(e) => {
                tracing::error!(error = %e, "store failure on the {path} path");
                Written::Failed(ServiceError::refused(codes::INTERNAL, "internal error"))
            }
        }
    }

    /// The sender's answer; counts accepted (`accepted_metric`) and deduplicated sends.
    pub(crate) fn answer(self, ours: Accepted, accepted_metric: &'static str) -> SendResult {
        match self {
            Written::Applied => {
                metrics::counter!(accepted_metric).increment(1);
                Ok(ours)
            }
            Written::Duplicate(Some(original)) => {
                metrics::counter!("tern_messages_deduplicated_total").increment(1);
                Ok(original)
            }
            Written::Duplicate(None) => Err(ServiceError::refused(codes::INTERNAL, "stored dedup record is corrupt")),
            Written::Failed(e) => Err(e),
        }
    }
}

/// Completes a prepared send with its write's outcome: on success the message is pushed
/// (in each user's seq order) and the sender's answer returned; otherwise its seqs are
/// skipped. Answers concurrent resends waiting for it.
pub fn finish(logic: &Logic, p: Pending, outcome: Result<GuardOutcome, StoreError>) -> SendResult {
    let written = Written::judge(outcome, p.accepted, "message");
    let durable = matches!(written, Written::Applied);
    let d = &logic.messaging.delivery;
    let item = || Item::Stored(p.payload.clone());
    d.complete(logic, &p.from_alloc, durable, vec![(p.from_alloc.first, item(), p.origin)]);
    if let Some(a) = &p.to_alloc {
        d.complete(logic, a, durable, vec![(a.first, item(), None)]);
    }
    if durable {
        crate::callbacks::after_send(logic, p.from_alloc.app, &p.payload);
    }
    let answer = written.answer(p.accepted, "tern_messages_accepted_total");
    if let Ok(accepted) = &answer {
        logic.messaging.recent.insert(p.key.clone(), *accepted);
    }
    release(logic, &p.key, &answer);
    answer
}

/// Both users exist and are not deleted.
async fn check_parties(logic: &Logic, app: AppId, from: &UserId, to: &UserId) -> Result<(), ServiceError> {
    use crate::user_cache::UserState;
    let states = logic.user_cache.states(&*logic.store, app, &[from.clone(), to.clone()]).await?;
    for (who, state) in [("sender", states[0]), ("recipient", states[1])] {
        match state {
            UserState::Missing => {
                return Err(ServiceError::refused(codes::USER_NOT_FOUND, format!("{who} does not exist")))
            }
            UserState::Deleted => return Err(ServiceError::refused(codes::USER_DELETED, format!("{who} was deleted"))),
            UserState::Muted if who == "sender" => {
                return Err(ServiceError::refused(
                    errors::SENDER_MUTED,
                    "the sender is muted (silentFlag) and may not send",
                ))
            }
            UserState::Disabled if who == "sender" => {
                return Err(ServiceError::refused(
                    errors::SENDER_DISABLED,
                    "the sender is disabled (forbiddenFlag) and may not send",
                ))
            }
            // A muted or disabled recipient still receives (stored for when it may log in).
            UserState::Active | UserState::Muted | UserState::Disabled => {}
        }
    }
    Ok(())
}

/// One stored timeline entry, decoded, with its owner's seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineItem {
    pub seq: Seq,
    pub time_ms: u64,
    pub payload: Bytes,
}

impl TimelineItem {
    /// The message view (borrowing `self`), with the owner's seq filled in.
    pub fn parts(&self) -> Option<MessageParts<'_>> {
        let m = message::decode_stored(&self.payload).ok()?;
        let mut p = MessageParts::from_table(&m);
        p.seq = self.seq.0;
        Some(p)
    }

    /// Whether the message's own lifetime (`messageLifeTime`) has passed at `now_ms`.
    /// Reads two scalars only: this runs for every entry a pull reads.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        message::decode_stored(&self.payload).is_ok_and(|m| {
            m.life_time_secs() != 0 && m.server_time_ms().saturating_add(u64::from(m.life_time_secs()) * 1000) <= now_ms
        })
    }
}

pub(crate) fn retention_floor_ms(logic: &Logic, app: AppId) -> u64 {
    let days = logic.apps.get(app).map_or(crate::apps::DEFAULT_RETENTION_DAYS, |a| a.retention_days);
    now_ms().saturating_sub(u64::from(days) * 86_400_000)
}

/// A page of a user's Message timeline after `after`: entries within retention, never
/// above the committed watermark. Returns (items, watermark, completed).
pub async fn pull(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    after: Seq,
    limit: usize,
) -> Result<(Vec<TimelineItem>, Seq, bool), ServiceError> {
    let limit = limit.clamp(1, logic.config.messages.max_pull);
    let floor = retention_floor_ms(logic, app);
    let now = now_ms();
    // Entries past retention or past their own lifetime are left out. A page that had
    // only such entries would leave the caller no cursor (it pages by the last item's
    // seq), so reading goes on past them, a bounded number of pages.
    let mut after = after;
    let mut pages = 0;
    loop {
        let (entries, watermark, completed) = logic.read_synced(app, user, SyncKind::Message, after, limit).await?;
        let last = entries.last().map(|e| e.seq);
        let items: Vec<TimelineItem> = entries
            .into_iter()
            .filter(|e| e.time_ms >= floor)
            .map(|e| TimelineItem { seq: e.seq, time_ms: e.time_ms, payload: e.payload })
            .filter(|item| !item.expired_at(now))
            .collect();
        pages += 1;
        match last {
            Some(last) if items.is_empty() && !completed && pages < MAX_SKIPPED_PAGES => after = last,
            _ => return Ok((items, watermark, completed)),
        }
    }
}

/// Most pages of only expired entries one pull reads past before answering empty.
const MAX_SKIPPED_PAGES: usize = 64;

/// Answers a TCP Pull with a PullResult frame.
pub async fn pull_frame(logic: &Logic, app: AppId, user: &UserId, request_id: u32, after: Seq, limit: u32) -> Vec<u8> {
    match pull(logic, app, user, after, limit as usize).await {
        Ok((items, watermark, completed)) => {
            let parts: Vec<MessageParts<'_>> = items.iter().filter_map(TimelineItem::parts).collect();
            message::pull_result(request_id, WireKind::Message, &parts, watermark.0, completed)
        }
        Err(r) => tern_schema::encode::error(request_id, r.code(), &r.message()),
    }
}

/// Records that `device` of `user` has received everything up to `seq`. Coalesced in
/// memory; [`flush_acks`] persists them (a crash loses at most one flush interval of
/// acks, which only makes the device pull a few messages again).
pub fn push_ack(logic: &Logic, app: AppId, user: &UserId, device: &str, seq: u64) {
    // The gateway admits only valid device ids; a bad one here must not poison the
    // whole coalesced batch.
    if tern_storage::check_device_id(device).is_err() {
        return;
    }
    let mut g = logic.messaging.acks.lock().unwrap_or_else(|p| p.into_inner());
    let e = g.entry((app, user.clone(), device.to_string())).or_insert(0);
    *e = (*e).max(seq);
}

/// Device acks per store write when flushing: the store reads each ack's stored value
/// to keep the maximum, so one write of every device's ack (10,000 at a few thousand
/// messages/s) held the group-commit writer for 50–100 ms and every send behind it;
/// small chunks written one after another let sends interleave.
const ACK_FLUSH_CHUNK: usize = 256;

/// Writes coalesced device acks, in chunks of [`ACK_FLUSH_CHUNK`]. Acks of users whose
/// slot this node no longer owns are dropped (counted in
/// `tern_device_acks_dropped_total`): their writes would be refused, and a lost ack only
/// makes the device pull again. `owners::drop_slot` flushes before it gives a slot up.
pub async fn flush_acks(logic: &Logic) -> Result<usize, StoreError> {
    let mut pending: Vec<_> =
        std::mem::take(&mut *logic.messaging.acks.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
    let before = pending.len();
    pending.retain(|((app, user, _), _)| logic.seqs.ownership().owns_user(*app, user));
    if pending.len() < before {
        metrics::counter!("tern_device_acks_dropped_total").increment((before - pending.len()) as u64);
    }
    let total = pending.len();
    let mut chunks = pending.chunks(ACK_FLUSH_CHUNK);
    while let Some(chunk) = chunks.next() {
        let mut batch = WriteBatch::with_capacity(chunk.len());
        for ((app, user, device), seq) in chunk {
            batch.put_device_ack(*app, user.clone(), device.clone(), SyncKind::Message, Seq(*seq));
        }
        if let Err(e) = logic.store.write(batch).await {
            // Put back what was not written (keeping any higher ack that arrived
            // meanwhile) for the next try.
            let mut g = logic.messaging.acks.lock().unwrap_or_else(|p| p.into_inner());
            for (k, seq) in chunk.iter().chain(chunks.flatten()) {
                let e = g.entry(k.clone()).or_insert(0);
                *e = (*e).max(*seq);
            }
            return Err(e);
        }
    }
    Ok(total)
}

/// The device's acked seqs: persisted ones, raised by any not yet flushed.
pub async fn device_acks(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    device: &str,
) -> Result<Vec<(SyncKind, Seq)>, StoreError> {
    let stored = logic.store.get_device_acks(app, user, device).await?;
    Ok(device_acks_from(logic, app, user, device, stored))
}

/// [`device_acks`] from acks the caller read itself (batched logins read them with
/// their other reads in one store trip).
pub fn device_acks_from(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    device: &str,
    stored: Vec<tern_storage::DeviceAck>,
) -> Vec<(SyncKind, Seq)> {
    // The device's acks of its user's own logs (acks of group timelines are for the
    // group work to use).
    let own = Owner::User(user.clone());
    let mut acks: Vec<(SyncKind, Seq)> =
        stored.into_iter().filter(|a| a.owner == own).map(|a| (a.kind, a.seq)).collect();
    let pending = logic
        .messaging
        .acks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(app, user.clone(), device.to_string()))
        .copied();
    if let Some(p) = pending {
        match acks.iter_mut().find(|(k, _)| *k == SyncKind::Message) {
            Some((_, s)) => s.0 = s.0.max(p),
            None => acks.push((SyncKind::Message, Seq(p))),
        }
    }
    acks
}

/// A device read its conversation with `peer` up to its own seq `read_seq`: persist the
/// read mark (unread counts derive from it) and tell the reader's other devices and the
/// peer's devices.
pub async fn read_receipt(
    logic: &Logic,
    app: AppId,
    reader: &UserId,
    peer: &UserId,
    read_seq: u64,
    origin: Option<&ConnRef>,
) -> Result<(), ServiceError> {
    let committed = logic.seqs.committed(app, reader, SyncKind::Message).await?;
    if read_seq > committed.0 {
        return Err(ServiceError::refused(errors::INVALID_MESSAGE, "read_seq: above the reader's newest message"));
    }
    // Conversations (issue 12): the read mark and the reader's record change are one
    // write; the reader's other devices get a SyncNotify of the conversation log.
    crate::conversations::mark_read(logic, app, reader, &Conversation::Single(peer.clone()), Seq(read_seq), origin)
        .await?;
    let frame = message::read_receipt_notify(reader.as_str(), peer.as_str(), read_seq);
    logic.sessions.send_to_user(app, reader, &frame, origin);
    if peer != reader {
        logic.sessions.send_to_user(app, peer, &frame, None);
    }
    Ok(())
}

/// Who asks for a recall.
#[derive(Debug, Clone)]
pub enum Recaller {
    /// The sender (the recall window applies).
    Sender(UserId),
    /// An app admin (any time).
    Admin,
}

/// Recalls a message: marks both stored copies recalled (body dropped), appends a
/// recall event to both timelines (offline devices learn it by sync) and notifies online
/// devices of both users, in timeline order.
pub async fn recall(logic: &Logic, app: AppId, message_key: u64, by: Recaller) -> Result<(), ServiceError> {
    let loc = logic
        .store
        .get_message_index(app, message_key)
        .await?
        .ok_or_else(|| ServiceError::refused(errors::NO_SUCH_MESSAGE, "no such message"))?;
    if let Some(group) = loc.group_id() {
        return crate::groups::recall(logic, app, group, &loc, message_key, &by).await;
    }
    let Some(to) = loc.recipient().cloned() else {
        return Err(ServiceError::refused(codes::INTERNAL, "stored message locator is not a 1:1 message's"));
    };
    let from = loc.sender.clone();
    if let Recaller::Sender(u) = &by {
        if *u != from {
            return Err(ServiceError::refused(errors::NOT_A_PARTY, "only the sender may recall a message"));
        }
        let window = logic.apps.get(app).map_or(crate::apps::DEFAULT_RECALL_WINDOW_SECS, |a| a.recall_window_secs);
        if now_ms() > loc.time_ms + window * 1000 {
            return Err(ServiceError::refused(
                errors::RECALL_WINDOW_PASSED,
                format!("the {window} s recall window has passed"),
            ));
        }
    }
    let owners: Vec<(UserId, Seq)> =
        loc.copies.iter().filter_map(|c| c.owner.as_user().map(|u| (u.clone(), c.seq))).collect();
    let now = now_ms();
    let mut batch = WriteBatch::with_capacity(8);
    let mut allocs = Vec::new();
    for (owner, seq) in &owners {
        let entry = logic
            .store
            .get_log_entry(app, &Owner::User(owner.clone()), SyncKind::Message, *seq)
            .await?
            .ok_or_else(|| ServiceError::refused(errors::NO_SUCH_MESSAGE, "message no longer stored"))?;
        let m = message::decode_stored(&entry.payload)
            .map_err(|_| ServiceError::refused(codes::INTERNAL, "stored message is corrupt"))?;
        let mut parts = MessageParts::from_table(&m);
        if parts.recalled {
            return Err(ServiceError::refused(errors::ALREADY_RECALLED, "the message was already recalled"));
        }
        parts.recalled = true;
        parts.elems.clear();
        let replaced = Bytes::from(message::encode_stored(&parts));
        batch.replace_log_entry(
            app,
            owner.clone(),
            SyncKind::Message,
            LogEntry { seq: *seq, time_ms: entry.time_ms, payload: replaced },
        );
        // The event: same key and parties, no body, entry = Recall.
        parts.entry = EntryKind::Recall;
        parts.server_time_ms = now;
        let event = message::encode_stored(&parts);
        let alloc = logic.seqs.allocate(app, owner, SyncKind::Message, 1).await?;
        batch.append_log(
            app,
            owner.clone(),
            SyncKind::Message,
            LogEntry { seq: alloc.first, time_ms: now, payload: Bytes::from(event) },
        );
        allocs.push(alloc);
    }
    let written = logic.write_retrying(batch).await;
    let durable = written.is_ok();
    for alloc in &allocs {
        let notify = message::recall_notify(message_key, from.as_str(), to.as_str(), alloc.first.0);
        logic.messaging.delivery.complete(logic, alloc, durable, vec![(alloc.first, Item::Frame(notify), None)]);
    }
    written?;
    metrics::counter!("tern_messages_recalled_total").increment(1);
    Ok(())
}

/// Messages by key, as `asker` sees them (their own copy); keys they are not party to
/// or that do not exist are reported per key.
pub async fn get_messages(
    logic: &Logic,
    app: AppId,
    asker: &UserId,
    keys: &[u64],
) -> Result<Vec<Result<TimelineItem, ServiceError>>, ServiceError> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let item = match logic.store.get_message_index(app, *key).await? {
            None => Err(ServiceError::refused(errors::NO_SUCH_MESSAGE, "no such message")),
            Some(loc) => {
                let own = Owner::User(asker.clone());
                match loc.seq_of(&own) {
                    None => Err(ServiceError::refused(errors::NOT_A_PARTY, "not a party to this message")),
                    Some(seq) => match logic.store.get_log_entry(app, &own, SyncKind::Message, seq).await? {
                        Some(e) => Ok(TimelineItem { seq: e.seq, time_ms: e.time_ms, payload: e.payload }),
                        None => Err(ServiceError::refused(errors::NO_SUCH_MESSAGE, "message no longer stored")),
                    },
                }
            }
        };
        out.push(item);
    }
    Ok(out)
}

/// The conversation of `user` with `peer`, newest first, strictly below `before` (None
/// = from the newest) and, if given, sent strictly before `before_time_ms`; at most
/// `limit`. Returns the items and the cursor for the next page (None when there is no
/// more).
pub async fn history(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    peer: &UserId,
    before: Option<Seq>,
    before_time_ms: Option<u64>,
    limit: usize,
) -> Result<(Vec<TimelineItem>, Option<Seq>), ServiceError> {
    let limit = limit.clamp(1, logic.config.messages.max_pull);
    let watermark = logic.seqs.committed(app, user, SyncKind::Message).await?;
    let mut cursor = before.map_or(Seq(watermark.0 + 1), |b| b.min(Seq(watermark.0 + 1)));
    let floor = retention_floor_ms(logic, app);
    let (conversation, own) = (Conversation::Single(peer.clone()), Owner::User(user.clone()));
    // Conversations (issue 12): history the user cleared (delete with clearHistory) is
    // not shown to them.
    let cleared = crate::conversations::cleared_seq(logic, app, user, &conversation).await?;
    let mut items = Vec::with_capacity(limit);
    // Scan backwards in index pages; time filters may skip entries, so keep going until
    // the page is full or the conversation is exhausted. Seq order is time order within
    // one timeline, so once an entry is older than retention, all below it are too.
    loop {
        let seqs = logic.store.read_conv_back(app, user, &conversation, cursor, limit + 1).await?;
        let exhausted = seqs.len() <= limit;
        for seq in seqs.iter().take(limit) {
            cursor = *seq;
            if *seq <= cleared {
                return Ok((items, None));
            }
            let Some(e) = logic.store.get_log_entry(app, &own, SyncKind::Message, *seq).await? else { continue };
            if e.time_ms < floor {
                return Ok((items, None));
            }
            if before_time_ms.is_some_and(|t| e.time_ms >= t) {
                continue;
            }
            items.push(TimelineItem { seq: e.seq, time_ms: e.time_ms, payload: e.payload });
            if items.len() == limit {
                let more = !exhausted || seqs[..seqs.len().min(limit)].last() != Some(seq);
                return Ok((items, more.then_some(cursor)));
            }
        }
        if exhausted {
            return Ok((items, None));
        }
    }
}
