//! Client frames that gateways forward to logic: Send, Pull, PushAck, ReadReceipt,
//! Recall, ConversationGet, ConversationSync. Each is answered (SendAck, PullResult, Error) on the originating connection;
//! nothing a client sends can leave it waiting without an answer or an error.
//!
//! Sends — 1:1 and group — take the fast path of the link they arrive on ([`SendTurn`]):
//! the link's reader prepares each send as it reads it (checks from memory, seqs allocated in arrival
//! order, so one connection's sends keep their order in every timeline), gathers the
//! sends of one *turn* (every frame already read when the reader would next wait on its
//! socket) and hands them to the store as ONE guarded write (dedup checked in the same
//! trip). A task per turn awaits durability, then pushes and acks. No task, copy or
//! store read per send. At most `messages.max_sends_in_flight_per_link` sends of a link,
//! and at most the node's adaptive limit ([`crate::admission`]) of all links together,
//! wait for the store: past either a send is refused at once with 80009. A group send
//! whose group is not in memory is the exception: loading it (every member page) would
//! stall the reader, so it is prepared and written in a task of its own, and the link's
//! later sends to that group follow it there until it has its seq (order per group kept).
//! A send refused as busy on the reader holds its connection's later sends behind it
//! until it comes again ([`crate::send_holds`]), so a refusal cannot reorder a burst.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tern_schema::client::Frame;
use tern_schema::client::{Body, SyncKind as WireKind};
use tern_schema::link::ConnRef;
use tern_schema::message::{self, elems_of, SendAckParts};
use tern_schema::{codes, encode, frame};
use tern_storage::{AppId, GroupId, GuardedBatch, Seq, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::error::ServiceError;
use crate::messages::{self as msg, Pending, Prepared, Recaller, SendRequest};
use crate::send_holds::SendHolds;
use crate::Logic;

fn reply(tx: &mpsc::Sender<Vec<u8>>, conn: ConnRef, frame: &[u8]) {
    if tx.try_send(encode::link_deliver(&[conn], frame)).is_err() {
        metrics::counter!("tern_link_frames_dropped_total").increment(1);
    }
}

/// Queues the answer to one Send (SendAck, or an Error) and counts it in the link's
/// running total of answered Sends, which the link writer reports to the gateway core
/// (`SendsAnswered`): what bounds the core's sends in flight. Every Send the link
/// carries is counted exactly once, whatever its fate — a Send never counted would
/// shrink that core's window for good.
fn answer(tx: &mpsc::Sender<Vec<u8>>, answered: &AtomicU64, conn: ConnRef, frame: &[u8]) {
    reply(tx, conn, frame);
    answered.fetch_add(1, Ordering::Relaxed);
}

/// Handles one forwarded client frame (header included) from `conn`. Sends join the
/// link's [`SendTurn`] (prepared here, in arrival order); other work that waits for
/// storage runs in its own task so it never stalls the link reader.
pub async fn handle(logic: &Arc<Logic>, tx: &mpsc::Sender<Vec<u8>>, turn: &mut SendTurn, conn: ConnRef, bytes: &[u8]) {
    let f = match frame::parse_client_framed(bytes, crate::link::MAX_LINK_PAYLOAD) {
        Ok(f) => f,
        // The gateway forwards only frames it verified the same way, so this is not
        // expected; it may have been a Send, and counting one that was not only lets
        // the core forward one more.
        Err(e) => {
            let frame = encode::error(0, codes::MALFORMED_FRAME, &e.to_string());
            return answer(tx, &turn.answered, conn, &frame);
        }
    };
    let rid = f.request_id();
    let Some((app, user, session)) = logic.sessions.session_of(&conn) else {
        // The session ended (kicked, logged out) while the frame was in flight.
        let frame = encode::error(rid, codes::LOGIN_REQUIRED, "no session on this connection");
        return if f.body_type() == Body::Send {
            answer(tx, &turn.answered, conn, &frame)
        } else {
            reply(tx, conn, &frame)
        };
    };
    match f.body_type() {
        Body::Send => {
            let s = f.body_as_send().expect("checked type");
            let client_msg_id = s.client_msg_id().unwrap_or_default();
            if turn.held_back(tx, conn, rid, client_msg_id) {
                return;
            }
            let device_id = &session.device_id;
            // An app with a before-send callback: off the reader, in connection order (1:1
            // and group sends alike).
            let refused = if logic.callbacks.has_before_send(app) {
                turn.push_hooked(logic, tx, conn, rid, bytes, app, user, device_id)
            } else if s.conversation_type() == tern_schema::client::ConversationType::Group {
                turn.push_group(logic, tx, conn, rid, &f, bytes, app, user, device_id).await
            } else {
                turn.push(logic, tx, conn, rid, &f, app, user, device_id).await
            };
            // A busy refusal on the reader holds the connection's later sends behind it.
            if let Some(code) = refused {
                turn.holds.refused(conn, client_msg_id, code);
            }
        }
        Body::Pull if f.body_as_pull().and_then(|p| p.group_id()).is_some_and(|g| !g.is_empty()) => {
            let p = f.body_as_pull().expect("checked type");
            let group = match GroupId::new(p.group_id().unwrap_or_default()) {
                Ok(g) => g,
                Err(e) => return reply(tx, conn, &encode::error(rid, codes::INVALID_FIELD, &format!("group_id: {e}"))),
            };
            let (after, limit) = (Seq(p.after_seq()), p.limit() as usize);
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = match crate::groups::pull(&logic, app, &group, &user, after, limit).await {
                    Ok((items, max, completed)) => {
                        let parts: Vec<_> = items.iter().filter_map(msg::TimelineItem::parts).collect();
                        message::pull_result(rid, WireKind::Message, &parts, max.0, completed)
                    }
                    Err(r) => encode::error(rid, r.code(), &r.message()),
                };
                reply(&tx, conn, &frame);
            });
        }
        Body::Pull => {
            let p = f.body_as_pull().expect("checked type");
            if p.kind() != WireKind::Message {
                return reply(
                    tx,
                    conn,
                    &encode::error(
                        rid,
                        codes::INVALID_FIELD,
                        "kind: only Message can be pulled over TCP; use the HTTP sync calls",
                    ),
                );
            }
            let (after, limit) = (Seq(p.after_seq()), p.limit());
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = msg::pull_frame(&logic, app, &user, rid, after, limit).await;
                reply(&tx, conn, &frame);
            });
        }
        Body::PushAck => {
            let a = f.body_as_push_ack().expect("checked type");
            metrics::counter!("tern_push_acks_total").increment(1);
            // An ack of a group timeline (group seqs) must never move the inbox ack.
            // Gateways drop group acks (nothing keeps per-device group positions: the
            // client does); one may still come from an older gateway.
            if a.kind() == WireKind::Message && a.group_id().is_none_or(str::is_empty) {
                msg::push_ack(logic, app, &user, &session.device_id, a.seq());
            }
        }
        Body::ReadReceipt
            if f.body_as_read_receipt()
                .is_some_and(|r| r.conversation_type() == tern_schema::client::ConversationType::Group) =>
        {
            let r = f.body_as_read_receipt().expect("checked type");
            let group = match GroupId::new(r.peer_id().unwrap_or_default()) {
                Ok(g) => g,
                Err(e) => return reply(tx, conn, &encode::error(rid, codes::INVALID_FIELD, &format!("peer_id: {e}"))),
            };
            let read_seq = Seq(r.read_seq());
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err(r) = crate::groups::read(&logic, app, &group, &user, read_seq, Some(&conn)).await {
                    reply(&tx, conn, &encode::error(rid, r.code(), &r.message()));
                }
            });
        }
        Body::ReadReceipt => {
            let r = f.body_as_read_receipt().expect("checked type");
            let peer = match UserId::new(r.peer_id().unwrap_or_default()) {
                Ok(p) => p,
                Err(e) => return reply(tx, conn, &encode::error(rid, codes::INVALID_FIELD, &format!("peer_id: {e}"))),
            };
            let read_seq = r.read_seq();
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err(r) = msg::read_receipt(&logic, app, &user, &peer, read_seq, Some(&conn)).await {
                    reply(&tx, conn, &encode::error(rid, r.code(), &r.message()));
                }
            });
        }
        Body::Recall => {
            let key = f.body_as_recall().expect("checked type").message_key();
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = match msg::recall(&logic, app, key, Recaller::Sender(user)).await {
                    Ok(()) => encode::error(rid, codes::OK, "recalled"),
                    Err(r) => encode::error(rid, r.code(), &r.message()),
                };
                reply(&tx, conn, &frame);
            });
        }
        // Conversations (issue 12): the list and its sync over TCP (reads are ReadReceipt).
        Body::ConversationGet => {
            let g = f.body_as_conversation_get().expect("checked type");
            let (offset, limit) = (g.offset(), g.limit());
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = crate::conversations::get_frame(&logic, app, &user, rid, offset, limit).await;
                reply(&tx, conn, &frame);
            });
        }
        Body::ConversationSync => {
            let s = f.body_as_conversation_sync().expect("checked type");
            let (after, limit) = (Seq(s.after_seq()), s.limit());
            let (logic, tx) = (logic.clone(), tx.clone());
            tokio::spawn(async move {
                let frame = crate::conversations::sync_frame(&logic, app, &user, rid, after, limit).await;
                reply(&tx, conn, &frame);
            });
        }
        other => reply(
            tx,
            conn,
            &encode::error(rid, codes::UNEXPECTED_FRAME, &format!("{other:?} is not accepted from a client")),
        ),
    }
}

/// A client's 1:1 Send as logic's request (no server-side extras).
fn one_send<'a>(
    s: &tern_schema::client::Send<'a>,
    app: AppId,
    from: UserId,
    to: UserId,
    device: &'a str,
    conn: ConnRef,
) -> SendRequest<'a> {
    SendRequest {
        app,
        from,
        to,
        client_msg_id: s.client_msg_id().unwrap_or_default(),
        elems: elems_of(s.elems()),
        client_time_ms: s.client_time_ms(),
        from_device: device,
        origin: Some(conn),
        extras: Default::default(),
    }
}

/// A client's group Send as logic's request (no server-side extras).
fn group_send<'a>(
    s: &tern_schema::client::Send<'a>,
    app: AppId,
    group: GroupId,
    from: UserId,
    device: &'a str,
    conn: ConnRef,
) -> crate::groups::GroupSend<'a> {
    crate::groups::GroupSend {
        app,
        group,
        from,
        client_msg_id: s.client_msg_id().unwrap_or_default(),
        elems: elems_of(s.elems()),
        client_time_ms: s.client_time_ms(),
        from_device: device,
        origin: Some(conn),
        extras: Default::default(),
    }
}

/// Sends in one turn before it is written regardless: bounds one store request and the
/// first send's wait in a long burst.
const MAX_TURN_SENDS: usize = 512;
/// Groups a link remembers a deferred send for before it forgets the settled ones.
const MAX_DEFERRED_GROUPS: usize = 64;

/// Whether a deferred group send has yet to get its seq (its task neither signalled
/// nor ended).
fn pending(prepared: &mut oneshot::Receiver<()>) -> bool {
    matches!(prepared.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

/// Where a send's answer goes.
struct AckTo {
    conn: ConnRef,
    request_id: u32,
    client_msg_id: String,
    /// When the link reader took the send: `tern_send_logic_seconds` measures from here
    /// to its SendAck queued on the link.
    read_at: std::time::Instant,
}

/// A prepared send of a turn: 1:1 or group.
enum TurnSend {
    One(Pending),
    Group(crate::groups::GroupPending),
}

/// The sends of one link prepared since its last write (see the module docs).
pub struct SendTurn {
    pending: Vec<(TurnSend, AckTo)>,
    writes: Vec<GuardedBatch>,
    /// Groups with a send of this link prepared off the reader (the group was cold):
    /// the last such send's "seq handed out" signal. Later sends of the link to that
    /// group follow it off the reader until it fires, so they keep their order.
    deferred: HashMap<(AppId, GroupId), oneshot::Receiver<()>>,
    /// Sends of this link handed to the store and not yet answered.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    /// Sends of this link answered since it came up (see [`answer`]).
    answered: Arc<AtomicU64>,
    /// Connections whose sends wait for one refused as busy ([`crate::send_holds`]).
    holds: SendHolds,
}

impl SendTurn {
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            pending: Vec::new(),
            writes: Vec::new(),
            deferred: HashMap::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: max_in_flight.max(1),
            answered: Arc::new(AtomicU64::new(0)),
            holds: SendHolds::default(),
        }
    }

    /// The link's running total of answered Sends, for its writer to report.
    pub fn answered(&self) -> Arc<AtomicU64> {
        self.answered.clone()
    }

    /// Whether sends are waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Why this link takes no more sends now, if so: its sends in flight or the node's
    /// admission limit leave no room, or its outbound queue is backed up (the send is
    /// then refused at once with 80009, never queued).
    fn busy(&self, logic: &Logic, tx: &mpsc::Sender<Vec<u8>>) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) + self.pending.len() >= self.max_in_flight
            || !logic.admission.admits(self.pending.len())
        {
            metrics::counter!("tern_sends_refused_busy_total").increment(1);
            return Some(BUSY);
        }
        if tx.max_capacity() - tx.capacity() > LINK_BACKLOG_REFUSE {
            metrics::counter!("tern_sends_refused_link_backlog_total").increment(1);
            return Some(BACKLOG);
        }
        None
    }

    /// Answers a Send of `conn` with 80009 at once if an earlier send of the connection
    /// was refused as busy and has not come again ([`crate::send_holds`]); `true` if so.
    fn held_back(&mut self, tx: &mpsc::Sender<Vec<u8>>, conn: ConnRef, rid: u32, client_msg_id: &str) -> bool {
        if !self.holds.holds_back(conn, client_msg_id) {
            return false;
        }
        metrics::counter!("tern_sends_held_total").increment(1);
        refuse_send(tx, &self.answered, conn, rid, client_msg_id, codes::SERVICE_UNAVAILABLE, codes::SEND_HELD);
        true
    }

    /// Prepares one Send frame and adds it to the turn, or answers it at once (refused,
    /// or a resend of a message being written). Returns the code of a refusal made here.
    #[allow(clippy::too_many_arguments)]
    async fn push(
        &mut self,
        logic: &Arc<Logic>,
        tx: &mpsc::Sender<Vec<u8>>,
        conn: ConnRef,
        rid: u32,
        f: &Frame<'_>,
        app: AppId,
        user: UserId,
        device_id: &str,
    ) -> Option<u32> {
        let read_at = std::time::Instant::now();
        let s = f.body_as_send().expect("checked type");
        let client_msg_id = s.client_msg_id().unwrap_or_default();
        let answered = &*self.answered;
        let refuse = |code: u32, message: &str| {
            refuse_send(tx, answered, conn, rid, client_msg_id, code, message);
            Some(code)
        };
        let to = match UserId::new(s.to_id().unwrap_or_default()) {
            Ok(u) => u,
            Err(e) => return refuse(msg::errors::INVALID_MESSAGE, &format!("to_id: {e}")),
        };
        if let Some(why) = self.busy(logic, tx) {
            return refuse(codes::SERVICE_UNAVAILABLE, why);
        }
        let req = one_send(&s, app, user, to, device_id, conn);
        match msg::prepare(logic, req).await {
            Ok(Prepared::Ready(pending, write)) => {
                let to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
                self.pending.push((TurnSend::One(pending), to));
                self.writes.push(write);
                if self.pending.len() >= MAX_TURN_SENDS {
                    self.flush(logic, tx);
                }
                None
            }
            Ok(Prepared::Waiting(rx)) => {
                let to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
                let (tx, answered) = (tx.clone(), self.answered.clone());
                tokio::spawn(async move {
                    let result =
                        rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")));
                    answer(&tx, &answered, to.conn, &send_ack(&to, &result));
                });
                None
            }
            Ok(Prepared::Done(accepted)) => {
                let to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
                answer(tx, &self.answered, conn, &send_ack(&to, &Ok(accepted)));
                None
            }
            Err(r) => refuse(r.code(), &r.message()),
        }
    }

    /// Prepares one group Send (conversation type Group, `to_id` the group) and adds it
    /// to the turn like a 1:1 send: its group seq is handed out now, in arrival order
    /// (so one connection's pipelined group sends keep their order), and its write goes
    /// with the turn's. A send to a cold group (its state must be read from the store
    /// first) goes off the reader instead ([`SendTurn::defer_group`]), so the link's
    /// other sends are not held behind that read. Returns the code of a refusal made here.
    #[allow(clippy::too_many_arguments)]
    async fn push_group(
        &mut self,
        logic: &Arc<Logic>,
        tx: &mpsc::Sender<Vec<u8>>,
        conn: ConnRef,
        rid: u32,
        f: &Frame<'_>,
        bytes: &[u8],
        app: AppId,
        user: UserId,
        device_id: &str,
    ) -> Option<u32> {
        let read_at = std::time::Instant::now();
        let s = f.body_as_send().expect("checked type");
        let client_msg_id = s.client_msg_id().unwrap_or_default();
        let answered = &*self.answered;
        let refuse = |code: u32, message: &str| {
            refuse_send(tx, answered, conn, rid, client_msg_id, code, message);
            Some(code)
        };
        let group = match GroupId::new(s.to_id().unwrap_or_default()) {
            Ok(g) => g,
            Err(e) => return refuse(msg::errors::INVALID_MESSAGE, &format!("to_id: {e}")),
        };
        if let Some(why) = self.busy(logic, tx) {
            return refuse(codes::SERVICE_UNAVAILABLE, why);
        }
        // A send of this link to the group still waits off the reader: this one follows it.
        let ahead = if self.deferred.is_empty() {
            None
        } else {
            self.deferred.remove(&(app, group.clone())).and_then(|mut rx| pending(&mut rx).then_some(rx))
        };
        if ahead.is_some() || logic.groups.is_cold(app, &group) {
            self.defer_group(logic, tx, conn, rid, bytes, app, group, user, device_id, ahead);
            return None;
        }
        let req = group_send(&s, app, group, user, device_id, conn);
        let to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
        match crate::groups::prepare(logic, req).await {
            Ok(crate::groups::GroupPrepared::Ready(pending, write)) => {
                self.pending.push((TurnSend::Group(pending), to));
                self.writes.push(write);
                if self.pending.len() >= MAX_TURN_SENDS {
                    self.flush(logic, tx);
                }
                None
            }
            Ok(crate::groups::GroupPrepared::Waiting(rx)) => {
                let (tx, answered) = (tx.clone(), self.answered.clone());
                tokio::spawn(async move {
                    let result =
                        rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")));
                    answer(&tx, &answered, to.conn, &send_ack(&to, &result));
                });
                None
            }
            Ok(crate::groups::GroupPrepared::Done(accepted)) => {
                answer(tx, &self.answered, conn, &send_ack(&to, &Ok(accepted)));
                None
            }
            Err(r) => refuse(r.code(), &r.message()),
        }
    }

    /// Runs one group Send in a task of its own, counted in this link's sends in flight:
    /// its group is cold, and loading it must not stall the link reader (every other
    /// send of the link waits behind it). The send is prepared after `ahead` (this
    /// link's previous deferred send to the group) has its seq, and signals its own
    /// once handed out, so one connection's sends to a group keep their order; it is
    /// then written alone. Sends to other groups and 1:1 sends go on meanwhile (they
    /// promise no order with it: PROTOCOL.md).
    #[allow(clippy::too_many_arguments)]
    fn defer_group(
        &mut self,
        logic: &Arc<Logic>,
        tx: &mpsc::Sender<Vec<u8>>,
        conn: ConnRef,
        rid: u32,
        bytes: &[u8],
        app: AppId,
        group: GroupId,
        user: UserId,
        device_id: &str,
        ahead: Option<oneshot::Receiver<()>>,
    ) {
        let read_at = std::time::Instant::now();
        metrics::counter!("tern_group_sends_deferred_total").increment(1);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let (prepared_tx, prepared_rx) = oneshot::channel();
        if self.deferred.len() >= MAX_DEFERRED_GROUPS {
            // Bounded by the link's sends in flight; forget the chains that are done.
            self.deferred.retain(|_, rx| pending(rx));
        }
        self.deferred.insert((app, group.clone()), prepared_rx);
        let (bytes, device) = (bytes.to_vec(), device_id.to_owned());
        let (logic, tx, in_flight, answered) =
            (logic.clone(), tx.clone(), self.in_flight.clone(), self.answered.clone());
        tokio::spawn(async move {
            if let Some(ahead) = ahead {
                // An error only means that send's task ended early: its seq is settled.
                let _ = ahead.await;
            }
            let f = frame::parse_client_framed(&bytes, crate::link::MAX_LINK_PAYLOAD).expect("parsed before");
            let s = f.body_as_send().expect("checked type");
            let client_msg_id = s.client_msg_id().unwrap_or_default();
            let to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
            let req = group_send(&s, app, group, user, &device, conn);
            let prepared = crate::groups::prepare(&logic, req).await;
            // Its seq is handed out (or it was refused): the next send may be prepared.
            let _ = prepared_tx.send(());
            let result = match prepared {
                Ok(crate::groups::GroupPrepared::Ready(pending, write)) => {
                    let outcome = logic.write_guarded_retrying(vec![write]).await.map(|mut o| o.remove(0));
                    crate::groups::finish(&logic, pending, outcome).await
                }
                Ok(crate::groups::GroupPrepared::Waiting(rx)) => {
                    rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")))
                }
                Ok(crate::groups::GroupPrepared::Done(accepted)) => Ok(accepted),
                Err(r) => Err(r),
            };
            answer(&tx, &answered, conn, &send_ack(&to, &result));
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Runs one Send (1:1 or group) of an app with a before-send callback in a task of its own,
    /// counted in this link's sends in flight (the business server's answer must not
    /// stall the link reader, which carries every app's sends): see
    /// [`crate::callbacks::send_in_order`], which keeps the connection's order. Returns
    /// the code of a refusal made here (on the reader, not the task's).
    #[allow(clippy::too_many_arguments)]
    fn push_hooked(
        &mut self,
        logic: &Arc<Logic>,
        tx: &mpsc::Sender<Vec<u8>>,
        conn: ConnRef,
        rid: u32,
        bytes: &[u8],
        app: AppId,
        user: UserId,
        device_id: &str,
    ) -> Option<u32> {
        let read_at = std::time::Instant::now();
        let f = frame::parse_client_framed(bytes, crate::link::MAX_LINK_PAYLOAD).expect("parsed before");
        let s = f.body_as_send().expect("checked type");
        let client_msg_id = s.client_msg_id().unwrap_or_default();
        let answered = &*self.answered;
        let refuse = |code: u32, message: &str| {
            refuse_send(tx, answered, conn, rid, client_msg_id, code, message);
            Some(code)
        };
        let group = s.conversation_type() == tern_schema::client::ConversationType::Group;
        let to_id = s.to_id().unwrap_or_default();
        let checked = if group {
            GroupId::new(to_id).err().map(|e| e.to_string())
        } else {
            UserId::new(to_id).err().map(|e| e.to_string())
        };
        if let Some(e) = checked {
            return refuse(msg::errors::INVALID_MESSAGE, &format!("to_id: {e}"));
        }
        if let Some(why) = self.busy(logic, tx) {
            return refuse(codes::SERVICE_UNAVAILABLE, why);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let (bytes, device) = (bytes.to_vec(), device_id.to_owned());
        let (logic, tx, in_flight, answered) =
            (logic.clone(), tx.clone(), self.in_flight.clone(), self.answered.clone());
        // The ticket of the connection's order is taken here, in arrival order.
        let ticket = logic.callbacks.enter_order(&conn);
        tokio::spawn(async move {
            let f = frame::parse_client_framed(&bytes, crate::link::MAX_LINK_PAYLOAD).expect("parsed before");
            let s = f.body_as_send().expect("checked type");
            let client_msg_id = s.client_msg_id().unwrap_or_default();
            let ack_to = AckTo { conn, request_id: rid, client_msg_id: client_msg_id.to_owned(), read_at };
            let to_id = s.to_id().unwrap_or_default();
            let result = match (group, GroupId::new(to_id), UserId::new(to_id)) {
                (true, Ok(group), _) => {
                    let req = group_send(&s, app, group, user, &device, conn);
                    crate::callbacks::group_send_in_order(&logic, req, ticket).await
                }
                (false, _, Ok(to)) => {
                    let req = one_send(&s, app, user, to, &device, conn);
                    crate::callbacks::send_in_order(&logic, req, ticket).await
                }
                // Checked above, before the task.
                _ => Err(ServiceError::refused(msg::errors::INVALID_MESSAGE, "to_id: invalid")),
            };
            answer(&tx, &answered, conn, &send_ack(&ack_to, &result));
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        None
    }

    /// Hands the turn's sends to the store in one request; a task completes them.
    pub fn flush(&mut self, logic: &Arc<Logic>, tx: &mpsc::Sender<Vec<u8>>) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let writes = std::mem::take(&mut self.writes);
        let n = pending.len();
        self.in_flight.fetch_add(n, Ordering::Relaxed);
        logic.admission.submitted(n);
        metrics::histogram!("tern_send_turn_size").record(n as f64);
        let (logic, tx, in_flight, answered) =
            (logic.clone(), tx.clone(), self.in_flight.clone(), self.answered.clone());
        let submitted = std::time::Instant::now();
        tokio::spawn(async move {
            let outcomes = logic.write_guarded_retrying(writes).await;
            let took = submitted.elapsed();
            logic.admission.completed(n, took);
            metrics::histogram!("tern_send_turn_seconds").record(took.as_secs_f64());
            for (i, (p, to)) in pending.into_iter().enumerate() {
                let outcome = match &outcomes {
                    Ok(o) => o.get(i).cloned().ok_or(tern_storage::StoreError::Backend("missing guard outcome".into())),
                    Err(e) => Err(e.clone()),
                };
                let result = match p {
                    TurnSend::One(p) => msg::finish(&logic, p, outcome),
                    TurnSend::Group(p) => crate::groups::finish(&logic, p, outcome).await,
                };
                answer(&tx, &answered, to.conn, &send_ack(&to, &result));
                metrics::histogram!("tern_send_logic_seconds").record(to.read_at.elapsed().as_secs_f64());
            }
            in_flight.fetch_sub(n, Ordering::Relaxed);
        });
    }
}

fn send_ack(to: &AckTo, result: &Result<msg::Accepted, ServiceError>) -> Vec<u8> {
    let parts = match result {
        Ok(a) => SendAckParts {
            client_msg_id: &to.client_msg_id,
            code: codes::OK,
            message: "",
            message_key: a.message_key,
            seq: a.seq.0,
            server_time_ms: a.server_time_ms,
        },
        Err(r) => {
            count_refusal(r.code());
            SendAckParts {
                client_msg_id: &to.client_msg_id,
                code: r.code(),
                message: &r.message(),
                ..Default::default()
            }
        }
    };
    message::send_ack(to.request_id, &parts)
}

/// The refusal of a send the link reader answers itself.
const BUSY: &str = "server busy: too many sends in flight; retry in 100 ms";
/// ... and when the gateway core's link is behind.
const BACKLOG: &str = "server busy: the gateway is behind on delivering; retry in 100 ms";

/// A link whose outbound queue holds more frames than this takes no new sends (80009)
/// until the gateway core has written some: what is queued already waits for that core,
/// and each new send adds its ack and pushes behind it. The queue's own bound (65,536
/// frames) was seconds of waiting when a gateway core fell behind at 50,000 msgs/s, and
/// past it devices are kicked (SlowConsumer) and pull, which costs more than a refusal.
/// Only the sender's own link is looked at: with one gateway per machine the recipients'
/// links share its cores' fate.
const LINK_BACKLOG_REFUSE: usize = crate::link::LINK_QUEUE_FRAMES / 16;

/// Answers a Send with a refusal (counted by code).
fn refuse_send(
    tx: &mpsc::Sender<Vec<u8>>,
    answered: &AtomicU64,
    conn: ConnRef,
    rid: u32,
    client_msg_id: &str,
    code: u32,
    message: &str,
) {
    count_refusal(code);
    let parts = SendAckParts { client_msg_id, code, message, ..Default::default() };
    answer(tx, answered, conn, &message::send_ack(rid, &parts));
}

/// Counts a refused TCP send by its code (`tern_send_refusals_total{code}`).
fn count_refusal(code: u32) {
    metrics::counter!("tern_send_refusals_total", "code" => code.to_string()).increment(1);
}
