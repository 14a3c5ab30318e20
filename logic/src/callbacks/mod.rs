//! Callbacks to the business server (issue 14): per app, a before-send request that may
//! allow, rewrite or refuse a message, and after-events — a message was sent, a device
//! came online or went offline, a relation or a group changed — delivered from a
//! bounded queue with retries. Configured per app (`[apps.callbacks]`, [`CallbackConfig`]);
//! every request is signed with the app's secret ([`sign`]).
//!
//! Where it sits on the message path:
//! - before-send runs before the send's seqs are allocated and before any lock of the
//!   send path (user delivery lock, group lock) is taken, in the task of the send: an
//!   HTTP request's, a group send's, or — for TCP 1:1 sends of an app that has a
//!   before-send URL — a task of its own ([`send_in_order`]), so the link reader, which
//!   carries every app's sends of one gateway core, never waits for a business server.
//!   Those sends still get seqs in their connection's order ([`order`]).
//! - each app has its own client, connection pool, bound on before-send requests in
//!   flight and after-event queue: a slow business server delays only its own app's
//!   sends, by at most `timeout_ms`, and past `max_in_flight` not at all (the failure
//!   policy answers at once).
//! - after-events are a `try_send` of a few words into the app's queue (the JSON is
//!   built by the delivery task); a full queue drops the event, never the send.
//! - an app with no URL for an event pays one hash lookup for it.
//!
//! Must never: hold a lock of the send path across a callback, let a callback failure
//! lose an accepted message, or wait on a business server without a deadline.

mod after;
pub mod client;
pub mod config;
pub mod events;
pub mod order;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ServiceError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tern_schema::codes;
use tern_storage::{AppId, GroupId, GuardOutcome, Seq, UserId};
use tokio::sync::Semaphore;

pub use config::{CallbackConfig, CallbackUrl, FailurePolicy};
use events::{commands, Outgoing, StateChange, StateReason};

use crate::apps::AppRegistry;
use crate::friends::records::Record;
use crate::groups::GroupSend;
use crate::http::messages::OwnedElem;
use crate::messages::{self, Prepared, SendRequest};
use crate::sessions::Session;
use crate::Logic;

/// Send-refusal codes of the callbacks (SendAck and HTTP).
pub mod errors {
    use std::ops::RangeInclusive;

    /// The business server refused the message with a code outside [`APP_CODES`]; the
    /// message carries its code and reason.
    pub const REFUSED_BY_APP: u32 = 50009;
    /// The app's callbacks fail closed and its business server did not decide in time
    /// (timeout, error, unreadable answer, or too many requests in flight). Retryable.
    pub const APP_UNAVAILABLE: u32 = 50010;
    /// Codes a business server may refuse a message with, passed to the client as they
    /// are (Tencent IM's range for callback-defined refusals).
    pub const APP_CODES: RangeInclusive<u32> = APP_CODE_FIRST..=130_000;
    /// The first of [`APP_CODES`] (the row of the HTTP code table that stands for all).
    pub const APP_CODE_FIRST: u32 = 120_001;
}

/// The event kinds (the `event` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    BeforeSend,
    AfterSend,
    StateChange,
    Friendship,
    Group,
}

impl EventKind {
    fn label(self) -> &'static str {
        match self {
            EventKind::BeforeSend => "before_send",
            EventKind::AfterSend => "after_send",
            EventKind::StateChange => "state_change",
            EventKind::Friendship => "friendship",
            EventKind::Group => "group",
        }
    }
}

/// One app's callbacks: its settings, client, before-send bound and after queue.
pub struct AppCallbacks {
    app: u32,
    /// The app id as the metrics' `app` label.
    label: String,
    cfg: CallbackConfig,
    client: client::CallbackClient,
    before_permits: Semaphore,
    after: after::AfterQueue,
    /// `tern_callback_queue_depth{app}` and `tern_callback_dropped_total{app, reason =
    /// queue_full}`: handles kept, so queueing an event allocates nothing.
    queue_depth: metrics::Gauge,
    dropped_full: metrics::Counter,
}

impl AppCallbacks {
    fn new(app: u32, secret: &str, cfg: CallbackConfig) -> Arc<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let label = app.to_string();
        // Registered at zero, so dashboards and alerts see the series before the first event.
        for reason in after::DROP_REASONS {
            metrics::counter!("tern_callback_dropped_total", "app" => label.clone(), "reason" => reason).absolute(0);
        }
        if cfg.before_send_url.is_some() {
            for decision in ["allow", "rewrite", "reject", "fail_open", "fail_closed"] {
                metrics::counter!("tern_callback_before_send_total", "app" => label.clone(), "decision" => decision)
                    .absolute(0);
            }
        }
        let queue_depth = metrics::gauge!("tern_callback_queue_depth", "app" => label.clone());
        queue_depth.set(0.0);
        let dropped_full =
            metrics::counter!("tern_callback_dropped_total", "app" => label.clone(), "reason" => "queue_full");
        Arc::new(Self {
            queue_depth,
            dropped_full,
            app,
            client: client::CallbackClient::new(app, secret, timeout),
            before_permits: Semaphore::new(cfg.max_in_flight.max(1)),
            after: after::AfterQueue::new(cfg.queue_capacity.max(1)),
            label,
            cfg,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms.max(1))
    }

    fn count_request(&self, kind: EventKind, result: &'static str) {
        metrics::counter!("tern_callback_requests_total", "app" => self.label.clone(), "event" => kind.label(), "result" => result)
            .increment(1);
    }

    fn count_decision(&self, decision: &'static str) {
        metrics::counter!("tern_callback_before_send_total", "app" => self.label.clone(), "decision" => decision)
            .increment(1);
    }

    /// The failure policy's answer when the business server did not decide.
    fn undecided(&self, why: &str) -> Result<Option<Vec<OwnedElem>>, ServiceError> {
        match self.cfg.failure_policy {
            FailurePolicy::Open => {
                self.count_decision("fail_open");
                Ok(None)
            }
            FailurePolicy::Closed => {
                self.count_decision("fail_closed");
                Err(ServiceError::refused(
                    errors::APP_UNAVAILABLE,
                    format!("the app's business server did not decide on the message ({why}); retry later"),
                ))
            }
        }
    }
}

/// Every app's callbacks, built from the app registry at start.
#[derive(Default)]
pub struct Callbacks {
    apps: HashMap<u32, Arc<AppCallbacks>>,
    order: Arc<order::ConnOrder>,
    /// Whether any app has a state-change URL (a closing session looks no further).
    any_state_change: bool,
}

impl Callbacks {
    pub fn new(apps: &AppRegistry) -> Self {
        let apps: HashMap<u32, Arc<AppCallbacks>> = apps
            .iter()
            .filter_map(|a| {
                let cfg = a.callbacks.clone().filter(CallbackConfig::any)?;
                Some((a.id, AppCallbacks::new(a.id, &a.secret, cfg)))
            })
            .collect();
        let any_state_change = apps.values().any(|a| a.cfg.state_change_url.is_some());
        Self { apps, order: Arc::default(), any_state_change }
    }

    fn get(&self, app: AppId) -> Option<&Arc<AppCallbacks>> {
        if self.apps.is_empty() {
            return None;
        }
        self.apps.get(&app.0)
    }

    /// Whether `app` has a before-send URL (TCP 1:1 sends of such an app leave the link
    /// reader's turn for [`send_in_order`]).
    pub fn has_before_send(&self, app: AppId) -> bool {
        self.get(app).is_some_and(|a| a.cfg.before_send_url.is_some())
    }

    /// The next place in `conn`'s order of hooked sends; take it in arrival order and
    /// hand it to [`send_in_order`].
    pub fn enter_order(&self, conn: &tern_schema::link::ConnRef) -> order::Ticket {
        self.order.enter(conn)
    }

    /// Whether `app` has a state-change URL (logins then keep what the event needs).
    pub fn has_state_change(&self, app: AppId) -> bool {
        self.get(app).is_some_and(|a| a.cfg.state_change_url.is_some())
    }

    /// After-events of `app` queued and not yet taken by a delivery (tests, `/metrics`).
    pub fn queued(&self, app: AppId) -> usize {
        self.get(app).map_or(0, |a| a.after.len())
    }
}

/// What a before-send decided for one message: go on as sent, or with this body.
#[derive(Default)]
pub struct Hooked(Option<Vec<OwnedElem>>);

impl Hooked {
    /// The send as the business server allowed it.
    pub fn apply<'b>(&'b self, mut req: SendRequest<'b>) -> SendRequest<'b> {
        if let Some(elems) = &self.0 {
            req.elems = elems.iter().map(OwnedElem::parts).collect();
        }
        req
    }

    /// The group send as the business server allowed it.
    pub fn apply_group<'b>(&'b self, mut req: GroupSend<'b>) -> GroupSend<'b> {
        if let Some(elems) = &self.0 {
            req.elems = elems.iter().map(OwnedElem::parts).collect();
        }
        req
    }
}

/// Asks `app`'s business server about a 1:1 message (nothing if it has no before-send
/// URL): refused, allowed, or allowed with a new body (already checked against the
/// message limits).
pub async fn before_send(logic: &Logic, req: &SendRequest<'_>) -> Result<Hooked, ServiceError> {
    let Some(cb) = logic.callbacks.get(req.app).filter(|a| a.cfg.before_send_url.is_some()) else {
        return Ok(Hooked(None));
    };
    messages::validate_body(logic, req.client_msg_id, &req.elems)?;
    let out = Outgoing {
        group: false,
        from: &req.from,
        to: req.to.as_str(),
        client_msg_id: req.client_msg_id,
        elems: &req.elems,
        client_time_ms: req.client_time_ms,
        from_device: req.from_device,
    };
    decide(logic, cb, &out).await.map(Hooked)
}

/// [`before_send`] for a group message.
pub async fn before_group_send(logic: &Logic, req: &GroupSend<'_>) -> Result<Hooked, ServiceError> {
    let Some(cb) = logic.callbacks.get(req.app).filter(|a| a.cfg.before_send_url.is_some()) else {
        return Ok(Hooked(None));
    };
    let out = Outgoing {
        group: true,
        from: &req.from,
        to: req.group.as_str(),
        client_msg_id: req.client_msg_id,
        elems: &req.elems,
        client_time_ms: req.client_time_ms,
        from_device: req.from_device,
    };
    decide(logic, cb, &out).await.map(Hooked)
}

/// The before-send answer, as documented (README "Callbacks").
#[derive(Deserialize)]
struct RawAnswer {
    code: i64,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

/// Longest refusal reason passed on to the client.
const MAX_REASON_CHARS: usize = 256;

async fn decide(logic: &Logic, cb: &AppCallbacks, out: &Outgoing<'_>) -> Result<Option<Vec<OwnedElem>>, ServiceError> {
    let Some(url) = &cb.cfg.before_send_url else { return Ok(None) };
    let kind = EventKind::BeforeSend;
    // Past the app's bound the failure policy answers at once: a hanging business
    // server must not collect an unbounded crowd of waiting sends.
    let Ok(_permit) = cb.before_permits.try_acquire() else {
        cb.count_request(kind, "overloaded");
        return cb.undecided("too many requests in flight");
    };
    let command = if out.group { commands::GROUP_BEFORE_SEND } else { commands::BEFORE_SEND };
    let body = events::envelope(command, cb.app, events::next_event_id(), crate::now_ms(), events::before_send(out));
    let started = Instant::now();
    let answer = cb.client.post(url.as_str(), command, body, cb.timeout()).await;
    metrics::histogram!("tern_callback_seconds", "event" => kind.label()).record(started.elapsed().as_secs_f64());
    let bytes = match answer {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(app = cb.app, error = %e, "before-send callback failed");
            cb.count_request(kind, e.label());
            return cb.undecided(&e.to_string());
        }
    };
    let parsed: RawAnswer = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => {
            cb.count_request(kind, "bad_answer");
            return cb.undecided(&format!("answer is not the documented JSON: {e}"));
        }
    };
    if parsed.code != 0 && parsed.code != i64::from(codes::OK) {
        cb.count_request(kind, "ok");
        cb.count_decision("reject");
        let reason: String = parsed.msg.unwrap_or_default().chars().take(MAX_REASON_CHARS).collect();
        let code = u32::try_from(parsed.code).ok().filter(|c| errors::APP_CODES.contains(c));
        return Err(match code {
            Some(c) => {
                ServiceError::refused(c, if reason.is_empty() { "refused by the app".to_string() } else { reason })
            }
            None => ServiceError::refused(
                errors::REFUSED_BY_APP,
                format!("refused by the app's business server (code {}): {reason}", parsed.code),
            ),
        });
    }
    let new_body = parsed.data.as_ref().and_then(|d| d.get("messageBody")).filter(|b| !b.is_null());
    let Some(new_body) = new_body else {
        cb.count_request(kind, "ok");
        cb.count_decision("allow");
        return Ok(None);
    };
    let elems = match crate::http::messages::parse_message_body(Some(new_body)) {
        Ok(e) => e,
        Err(e) => {
            cb.count_request(kind, "bad_answer");
            return cb.undecided(&format!("rewritten messageBody: {e}"));
        }
    };
    let parts: Vec<_> = elems.iter().map(OwnedElem::parts).collect();
    if let Err(r) = messages::validate_body(logic, out.client_msg_id, &parts) {
        cb.count_request(kind, "bad_answer");
        return cb.undecided(&format!("rewritten messageBody: {}", r.message()));
    }
    cb.count_request(kind, "ok");
    cb.count_decision("rewrite");
    Ok(Some(elems))
}

/// A TCP 1:1 send of an app with a before-send URL, run in a task of its own: asks the
/// business server (concurrently with the connection's other sends), then prepares the
/// send only once every earlier send of the same connection was prepared (or refused),
/// so seqs follow the connection's order as on the link reader's path; writes it and
/// answers.
pub async fn send_in_order(
    logic: &Logic,
    req: SendRequest<'_>,
    mut ticket: order::Ticket,
) -> Result<messages::Accepted, ServiceError> {
    let hooked = before_send(logic, &req).await;
    ticket.wait_turn().await;
    let hooked = hooked?;
    let req = hooked.apply(req);
    let prepared = messages::prepare(logic, req).await;
    // Prepared (seqs allocated) or refused: the connection's next send may go on.
    drop(ticket);
    match prepared? {
        Prepared::Waiting(rx) => {
            rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")))
        }
        Prepared::Done(accepted) => Ok(accepted),
        Prepared::Ready(pending, write) => {
            logic.admission.submitted(1);
            let started = Instant::now();
            let outcome: Result<GuardOutcome, _> =
                logic.write_guarded_retrying(vec![write]).await.map(|mut o| o.remove(0));
            logic.admission.completed(1, started.elapsed());
            messages::finish(logic, pending, outcome)
        }
    }
}

/// [`send_in_order`] for a group message of a connection: the business server is asked
/// in parallel with the connection's other sends, the group seq is handed out in the
/// connection's order.
pub async fn group_send_in_order(
    logic: &Logic,
    req: GroupSend<'_>,
    mut ticket: order::Ticket,
) -> Result<messages::Accepted, ServiceError> {
    let hooked = before_group_send(logic, &req).await;
    ticket.wait_turn().await;
    let hooked = hooked?;
    let req = hooked.apply_group(req);
    let prepared = crate::groups::prepare(logic, req).await;
    drop(ticket);
    match prepared? {
        crate::groups::GroupPrepared::Waiting(rx) => {
            rx.await.unwrap_or_else(|_| Err(ServiceError::refused(codes::INTERNAL, "internal error")))
        }
        crate::groups::GroupPrepared::Done(accepted) => Ok(accepted),
        crate::groups::GroupPrepared::Ready(pending, write) => {
            logic.admission.submitted(1);
            let started = Instant::now();
            let outcome: Result<GuardOutcome, _> =
                logic.write_guarded_retrying(vec![write]).await.map(|mut o| o.remove(0));
            logic.admission.completed(1, started.elapsed());
            crate::groups::finish(logic, pending, outcome).await
        }
    }
}

/// A message became durable (1:1 or group): queue its after-send event. `stored` is
/// the stored message (a reference-counted buffer: nothing is copied here).
pub fn after_send(logic: &Logic, app: AppId, stored: &Bytes) {
    let Some(cb) = logic.callbacks.get(app) else { return };
    if cb.cfg.after_send_url.is_some() {
        cb.after.push(cb, after::Job::new(after::Payload::Message(stored.clone())));
    }
}

/// A device's session was admitted (`kicked`: the sessions the login replaced).
pub fn session_opened(logic: &Logic, app: AppId, user: &UserId, session: &Session, kicked: &[Session]) {
    let Some(cb) = logic.callbacks.get(app).filter(|a| a.cfg.state_change_url.is_some()) else { return };
    let change = |s: &Session, reason| StateChange {
        user: user.clone(),
        client_type: s.client_type,
        device_id: s.device_id.to_string(),
        reason,
    };
    for k in kicked {
        cb.after.push(cb, after::Job::new(after::Payload::State(change(k, StateReason::Replaced))));
    }
    cb.after.push(cb, after::Job::new(after::Payload::State(change(session, StateReason::Login))));
}

/// The session on `conn` is about to be closed (logout, disconnect, timeout, kick).
pub fn session_closing(logic: &Logic, conn: &tern_schema::link::ConnRef) {
    if !logic.callbacks.any_state_change {
        return;
    }
    let Some((app, user, s)) = logic.sessions.session_of(conn) else { return };
    let Some(cb) = logic.callbacks.get(app).filter(|a| a.cfg.state_change_url.is_some()) else { return };
    let change = StateChange {
        user,
        client_type: s.client_type,
        device_id: s.device_id.to_string(),
        reason: StateReason::Logout,
    };
    cb.after.push(cb, after::Job::new(after::Payload::State(change)));
}

/// Relation entries were written durably (`changes` with their `seqs`, in order).
pub(crate) fn relations_changed(logic: &Logic, app: AppId, changes: &[(UserId, Record)], seqs: &[Seq]) {
    let Some(cb) = logic.callbacks.get(app).filter(|a| a.cfg.friendship_url.is_some()) else { return };
    let items = changes.iter().zip(seqs).map(|((u, r), s)| (u.clone(), r.clone(), *s)).collect();
    cb.after.push(cb, after::Job::new(after::Payload::Relations(items)));
}

/// A group change was written durably (imports, `notify` false, are not reported).
pub(crate) fn group_changed(logic: &Logic, app: AppId, group_id: &GroupId, ch: &crate::groups::Change) {
    if !ch.notify {
        return;
    }
    let Some(cb) = logic.callbacks.get(app).filter(|a| a.cfg.group_url.is_some()) else { return };
    let max = events::MAX_MEMBERS_PER_EVENT;
    let change = events::GroupChange {
        group_id: group_id.clone(),
        group: ch.group.clone(),
        members_put: ch.puts.iter().take(max).cloned().collect(),
        members_removed: ch.dels.iter().take(max).cloned().collect(),
        truncated: ch.puts.len() > max || ch.dels.len() > max,
    };
    cb.after.push(cb, after::Job::new(after::Payload::Group(Box::new(change))));
}
