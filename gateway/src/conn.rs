//! The protocol state machine of one client connection, sans-IO: a plain struct fed
//! whole client frames and events (timer ticks, link up/down, logic's answers) that
//! pushes [`Action`]s (reply to the client, forward upstream, open/close the session on
//! the link, close the connection) into a caller-owned queue.
//!
//! It decides everything about a connection's protocol life (login, signatures, rate
//! limit, heartbeats, which frames a client may send, when logic must hear that a
//! session ended) and nothing about sockets, WebSocket, buffers or the link encoding.
//! It must never do I/O, read the clock, allocate per frame on the steady-state path
//! (beyond the reply frames it builds) or panic on any input.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tern_schema::client::{Body, KickReason};
use tern_schema::frame::{self, FrameError};
use tern_schema::link::CloseReason;
use tern_schema::message::{self, SendAckParts};
use tern_schema::{codes, encode, sig, HEADER_LEN};

use crate::window::SendWindow;

/// User and device ids are 1..=64 bytes (PROTOCOL.md).
pub const MAX_ID_BYTES: usize = 64;

/// Per-connection limits, the same for every connection of a process.
#[derive(Debug, Clone)]
pub struct Limits {
    pub login_timeout_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// Largest client frame payload (header excluded).
    pub max_payload: usize,
    /// Sustained frames per second; the bucket holds twice as many.
    pub frames_per_sec: u32,
    /// A verified Login that arrives while the link to logic is down waits this long
    /// for it (never past the login timeout), then gets 80009; 0 = answer 80009 at once.
    pub link_wait_ms: u64,
}

/// App id -> HMAC secret, read-only after start.
#[derive(Debug, Default)]
pub struct Apps(HashMap<u32, Box<[u8]>>);

impl Apps {
    pub fn new(apps: impl IntoIterator<Item = (u32, String)>) -> Self {
        Apps(apps.into_iter().map(|(id, secret)| (id, secret.into_bytes().into_boxed_slice())).collect())
    }

    pub fn secret(&self, app_id: u32) -> Option<&[u8]> {
        self.0.get(&app_id).map(|s| &s[..])
    }
}

/// What the state machine needs to know about the world for one event.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// Monotonic milliseconds (any epoch, the same for every call on a connection).
    pub now_ms: u64,
    /// Wall clock in Unix milliseconds (signature expiry, Pong server time).
    pub unix_ms: u64,
    /// Whether the link to logic can take frames right now.
    pub link_up: bool,
    pub apps: &'a Apps,
    pub limits: &'a Limits,
    /// The core's Sends in flight to logic; a Send forwarded takes a place in it.
    pub sends: &'a SendWindow,
}

/// Why a connection is closed: the metrics label, and what logic is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Client sent Logout.
    Logout,
    /// Peer closed or reset the connection.
    ClientClosed,
    HeartbeatTimeout,
    /// Bad header, undecodable frame, non-login first frame, WebSocket violation.
    Protocol,
    LoginTimeout,
    /// Login refused by the gateway (fields, app, signature) or by logic.
    LoginFailed,
    /// Logic closed the session (Close frame, or a refused resume).
    Kicked,
    SlowConsumer,
    /// The gateway is shutting down.
    Shutdown,
    /// The link dropped while logic was deciding the login.
    LinkLost,
    /// The core was at its connection cap.
    ServerFull,
}

impl CloseCause {
    pub const ALL: [CloseCause; 11] = [
        CloseCause::Logout,
        CloseCause::ClientClosed,
        CloseCause::HeartbeatTimeout,
        CloseCause::Protocol,
        CloseCause::LoginTimeout,
        CloseCause::LoginFailed,
        CloseCause::Kicked,
        CloseCause::SlowConsumer,
        CloseCause::Shutdown,
        CloseCause::LinkLost,
        CloseCause::ServerFull,
    ];

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Logout => "logout",
            CloseCause::ClientClosed => "client_closed",
            CloseCause::HeartbeatTimeout => "heartbeat_timeout",
            CloseCause::Protocol => "protocol_error",
            CloseCause::LoginTimeout => "login_timeout",
            CloseCause::LoginFailed => "login_failed",
            CloseCause::Kicked => "kicked",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::Shutdown => "shutdown",
            CloseCause::LinkLost => "link_lost",
            CloseCause::ServerFull => "server_full",
        }
    }

    /// Index into per-cause metric handles.
    pub fn index(self) -> usize {
        CloseCause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// What `SessionClosed` says when logic holds the session.
    pub(crate) fn link_reason(self) -> CloseReason {
        match self {
            CloseCause::Logout => CloseReason::ClientLogout,
            CloseCause::ClientClosed => CloseReason::ClientClosed,
            CloseCause::HeartbeatTimeout => CloseReason::HeartbeatTimeout,
            CloseCause::Kicked => CloseReason::Kicked,
            CloseCause::SlowConsumer => CloseReason::SlowConsumer,
            CloseCause::Shutdown => CloseReason::GatewayShutdown,
            // A login that timed out while logic was deciding it.
            CloseCause::LoginTimeout => CloseReason::LoginTimeout,
            // A protocol violation while logic was deciding the login; the rest never
            // reach a session logic holds, but map somewhere sensible rather than panic.
            CloseCause::Protocol | CloseCause::LoginFailed | CloseCause::LinkLost | CloseCause::ServerFull => {
                CloseReason::ProtocolError
            }
        }
    }
}

/// One thing the I/O layer must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this complete client frame to the client.
    Reply(Bytes),
    /// Forward the frame just fed to [`Conn::on_frame`] to logic, unchanged (`Upstream`).
    Forward,
    /// The frame just fed was accepted and needs nothing more (a group PushAck): counted.
    Dropped,
    /// Send `SessionOpen` for this connection (identity from the accessors).
    OpenSession { resume: bool },
    /// Tell logic the session ended.
    SessionClosed(CloseReason),
    /// Flush what is queued, then close the connection. Always the last action of a
    /// connection; nothing follows it.
    Close(CloseCause),
}

/// The caller-owned action queue (reused across calls: no allocation per frame).
pub type Actions = VecDeque<Action>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the first frame must be a Login.
    AwaitLogin,
    /// Login verified locally while the link to logic is down: waiting for the link
    /// (until `wait_until_ms`) to send `SessionOpen`.
    AwaitLink,
    /// Login verified locally, `SessionOpen` sent, waiting for logic's `SessionOpened`.
    AwaitOpened,
    /// Authenticated.
    Open,
    /// Closing or closed: every further input is ignored.
    Closed,
}

/// Protocol state of one connection. Kept small: it is most of what an idle
/// connection costs.
#[derive(Debug)]
pub struct Conn {
    phase: Phase,
    /// Logic holds (or is opening) a session for this connection on the current link.
    session_on_link: bool,
    client_type: u8,
    app_id: u32,
    login_request_id: u32,
    /// Before login: accept time (login deadline). After: last frame received.
    since_ms: u64,
    /// In `AwaitLink`: when the wait for the link ends with 80009. In `AwaitOpened`:
    /// when the `SessionOpen` went to the link, in µs of the core's clock (the login
    /// latency metric; a field of its own would cost every idle connection 8 B). In
    /// `Open`: until when Sends are held behind `held_send`.
    wait_until_ms: u64,
    /// In `Open`: a hash of the `client_msg_id` of a Send this core refused as busy, 0
    /// when none. Later Sends with another id are refused too (`codes::SEND_HELD`) until
    /// it is sent again or `wait_until_ms` passes, so a refusal cannot let a later send
    /// of the connection overtake it. (Fits the struct's padding: no byte per idle
    /// connection.)
    held_send: u32,
    /// Token bucket in milli-frames; refilled lazily on each frame.
    tokens: u64,
    refill_ms: u64,
    user_id: Box<str>,
    device_id: Box<str>,
}

fn is_client_only_server_kind(b: Body) -> bool {
    matches!(
        b,
        Body::LoginAck
            | Body::Pong
            | Body::SendAck
            | Body::Push
            | Body::PullResult
            | Body::ReadReceiptNotify
            | Body::SyncNotify
            | Body::RecallNotify
            | Body::Kick
            | Body::Error
            | Body::ConversationList
    )
}

/// A PushAck of a group's timeline (`group_id` set), not of the user's own logs.
fn is_group_ack(f: &tern_schema::client::Frame<'_>) -> bool {
    f.body_as_push_ack().and_then(|a| a.group_id()).is_some_and(|g| !g.is_empty())
}

fn error(request_id: u32, code: u32, message: &str) -> Action {
    Action::Reply(encode::error(request_id, code, message).into())
}

/// SendAck 80009 text when the core's Sends in flight to logic are at their bound.
pub const SENDS_IN_FLIGHT_FULL: &str = "server busy: too many sends waiting for logic; retry in 100 ms";

/// SendAck(80009) for a Send refused here: nothing stored, retry.
fn send_refused(rid: u32, client_msg_id: &str, text: &str) -> Action {
    let parts = SendAckParts { client_msg_id, code: codes::SERVICE_UNAVAILABLE, message: text, ..Default::default() };
    Action::Reply(message::send_ack(rid, &parts).into())
}

/// A Send frame's `client_msg_id` ("" when absent: logic refuses that send).
fn send_id<'a>(f: &tern_schema::client::Frame<'a>) -> &'a str {
    f.body_as_send().and_then(|s| s.client_msg_id()).unwrap_or_default()
}

/// 32-bit FNV-1a of a `client_msg_id`, never 0 (0 means "nothing held"). A collision
/// only lets one send through a hold early: an order slip, never a loss.
fn send_id_hash(id: &str) -> u32 {
    let h = id.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    h.max(1)
}

/// The client-facing error for a header/decoding failure.
/// Error(80000) text for a WebSocket message whose length is not its frame header's.
pub const WS_LENGTH_MISMATCH: &str = "the frame header's length does not match the WebSocket message";
/// Error(80000) text for a payload that is not a verifiable `tern.client.Frame`.
pub const NOT_A_FRAME: &str = "frame payload is not a valid tern.client.Frame";

pub fn frame_error_code(e: &FrameError) -> u32 {
    match e {
        FrameError::BadVersion(_) => codes::BAD_VERSION,
        FrameError::TooLarge { .. } => codes::FRAME_TOO_LARGE,
        FrameError::TooShort(_) | FrameError::Malformed(_) | FrameError::NoBody => codes::MALFORMED_FRAME,
    }
}

impl Conn {
    /// A freshly accepted connection at `now_ms`.
    pub fn new(now_ms: u64, limits: &Limits) -> Self {
        Conn {
            phase: Phase::AwaitLogin,
            session_on_link: false,
            client_type: 0,
            app_id: 0,
            login_request_id: 0,
            since_ms: now_ms,
            wait_until_ms: 0,
            held_send: 0,
            tokens: bucket_capacity(limits),
            refill_ms: now_ms,
            user_id: Box::from(""),
            device_id: Box::from(""),
        }
    }

    /// Notes when the `SessionOpen` of a login waiting for its answer went to the link
    /// (µs, the core's clock); see [`Conn::login_timing`].
    pub fn mark_session_open_sent(&mut self, now_us: u64) {
        if self.phase == Phase::AwaitOpened {
            self.wait_until_ms = now_us;
        }
    }

    /// For a login waiting for logic's answer: (accepted at, ms; `SessionOpen` sent at,
    /// µs, 0 if unknown) — what the login latency metrics are measured from.
    pub fn login_timing(&self) -> Option<(u64, u64)> {
        (self.phase == Phase::AwaitOpened).then_some((self.since_ms, self.wait_until_ms))
    }

    /// Authenticated and not closing: may receive deliveries.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    pub fn app_id(&self) -> u32 {
        self.app_id
    }
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
    pub fn device_id(&self) -> &str {
        &self.device_id
    }
    pub fn client_type(&self) -> u8 {
        self.client_type
    }
    pub fn login_request_id(&self) -> u32 {
        self.login_request_id
    }

    /// One whole client frame (4-byte header included) arrived.
    pub fn on_frame(&mut self, bytes: &[u8], env: &Env<'_>, out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        let parsed = match frame::split_frame(bytes, env.limits.max_payload) {
            Ok(Some(total)) if total == bytes.len() => frame::parse_client(&bytes[HEADER_LEN..]),
            // Only a WebSocket message can disagree with the header it carries.
            Ok(_) => return self.malformed(WS_LENGTH_MISMATCH, out),
            Err(e) => Err(e),
        };
        let f = match parsed {
            Ok(f) => f,
            Err(FrameError::Malformed(detail)) => {
                // The verifier's text names its internals (offsets, depths): no contract,
                // nothing a client can act on. The log keeps it.
                tracing::debug!(detail, "client frame failed FlatBuffers verification");
                return self.malformed(NOT_A_FRAME, out);
            }
            Err(e) => return self.on_frame_error(&e, out),
        };
        let rid = f.request_id();
        if self.phase == Phase::Open {
            self.since_ms = env.now_ms;
        }
        let body = f.body_type();
        if !self.take_token(env) {
            if self.phase == Phase::Open && body == Body::Send {
                self.hold_sends(send_id(&f), env);
            }
            out.push_back(error(rid, codes::RATE_LIMITED, "inbound frame rate exceeded; frame dropped"));
            return;
        }
        match self.phase {
            Phase::AwaitLogin => match f.body_as_login() {
                Some(login) => self.login(rid, login, env, out),
                None => {
                    out.push_back(error(rid, codes::LOGIN_REQUIRED, "the first frame must be a Login"));
                    self.close(CloseCause::Protocol, out);
                }
            },
            Phase::AwaitLink | Phase::AwaitOpened => match body {
                Body::Login => out.push_back(error(rid, codes::ALREADY_LOGGED_IN, "a login is already in progress")),
                Body::Ping => self.pong(rid, &f, env, out),
                Body::Logout => self.close(CloseCause::Logout, out),
                _ => {
                    out.push_back(error(rid, codes::LOGIN_REQUIRED, "wait for the LoginAck before sending"));
                    self.close(CloseCause::Protocol, out);
                }
            },
            Phase::Open => match body {
                Body::Login => out.push_back(error(rid, codes::ALREADY_LOGGED_IN, "already logged in")),
                Body::Ping => self.pong(rid, &f, env, out),
                Body::Logout => self.close(CloseCause::Logout, out),
                b if is_client_only_server_kind(b) => {
                    out.push_back(error(rid, codes::UNEXPECTED_FRAME, "clients may not send this frame kind"))
                }
                // A group PushAck ends here: it has no answer, and nothing on the server
                // keeps a device's position in a group timeline (the client keeps its
                // group sync points; receipts come from ReadReceipts). Forwarding one
                // per push cost logic's link reader as much as the sends (see
                // ARCHITECTURE.md, "Group messages").
                Body::PushAck if is_group_ack(&f) => out.push_back(Action::Dropped),
                Body::Send => self.send(rid, &f, env, out),
                _ if env.link_up => out.push_back(Action::Forward),
                _ => out.push_back(error(rid, codes::SERVICE_UNAVAILABLE, "service unavailable, retry later")),
            },
            Phase::Closed => {}
        }
    }

    /// An authenticated Send: refused if it would overtake a send refused before it (see
    /// `held_send`) or the link cannot take it now, else forwarded.
    /// The `client_msg_id` is decoded only when a hold is met or made: a Send forwarded
    /// with nothing held costs one integer test.
    fn send(&mut self, rid: u32, f: &tern_schema::client::Frame<'_>, env: &Env<'_>, out: &mut Actions) {
        if self.held_send != 0 {
            let client_msg_id = send_id(f);
            if self.held_send == send_id_hash(client_msg_id) || env.now_ms >= self.wait_until_ms {
                self.held_send = 0;
            } else {
                env.sends.count_held();
                return out.push_back(send_refused(rid, client_msg_id, codes::SEND_HELD));
            }
        }
        if !env.link_up {
            self.hold_sends(send_id(f), env);
            return out.push_back(error(rid, codes::SERVICE_UNAVAILABLE, "service unavailable, retry later"));
        }
        if !env.sends.try_take() {
            let client_msg_id = send_id(f);
            self.hold_sends(client_msg_id, env);
            return out.push_back(send_refused(rid, client_msg_id, SENDS_IN_FLIGHT_FULL));
        }
        out.push_back(Action::Forward);
    }

    /// The Send `client_msg_id` was refused as busy: hold the connection's later Sends
    /// behind it (renewed when the same send is refused again). An earlier send still
    /// held stays the one to wait for: this one was written after it.
    fn hold_sends(&mut self, client_msg_id: &str, env: &Env<'_>) {
        let id = send_id_hash(client_msg_id);
        if self.held_send != 0 && self.held_send != id && env.now_ms < self.wait_until_ms {
            return;
        }
        self.held_send = id;
        self.wait_until_ms = env.now_ms.saturating_add(codes::SEND_HOLD_MS);
    }

    /// The bytes could not be cut into a frame (bad header, oversize, not a frame).
    pub fn on_frame_error(&mut self, e: &FrameError, out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        out.push_back(error(0, frame_error_code(e), &e.to_string()));
        self.close(CloseCause::Protocol, out);
    }

    /// A frame that cannot be read: Error(80000) with `msg`, then close.
    fn malformed(&mut self, msg: &str, out: &mut Actions) {
        out.push_back(error(0, codes::MALFORMED_FRAME, msg));
        self.close(CloseCause::Protocol, out);
    }

    fn pong(&mut self, rid: u32, f: &tern_schema::client::Frame<'_>, env: &Env<'_>, out: &mut Actions) {
        let client_time = f.body_as_ping().map_or(0, |p| p.client_time_ms());
        out.push_back(Action::Reply(encode::pong(rid, client_time, env.unix_ms).into()));
    }

    fn login(&mut self, rid: u32, l: tern_schema::client::Login<'_>, env: &Env<'_>, out: &mut Actions) {
        let user_id = l.user_id().unwrap_or("");
        let device_id = l.device_id().unwrap_or("");
        let fail = |this: &mut Self, code, msg: &str, out: &mut Actions| {
            out.push_back(error(rid, code, msg));
            this.close(CloseCause::LoginFailed, out);
        };
        if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
            return fail(self, codes::INVALID_FIELD, "user_id must be 1..=64 bytes", out);
        }
        if device_id.is_empty() || device_id.len() > MAX_ID_BYTES {
            return fail(self, codes::INVALID_FIELD, "device_id must be 1..=64 bytes", out);
        }
        let Some(secret) = env.apps.secret(l.app_id()) else {
            return fail(self, codes::SIGN_BAD_APP, "unknown app id", out);
        };
        if let Err(e) = sig::verify(secret, l.app_id(), user_id, l.user_sign().unwrap_or(""), env.unix_ms / 1000) {
            return fail(self, e.code(), &e.to_string(), out);
        }
        if !env.link_up && env.limits.link_wait_ms == 0 {
            return fail(self, codes::SERVICE_UNAVAILABLE, "service unavailable, retry later", out);
        }
        self.app_id = l.app_id();
        self.user_id = user_id.into();
        self.device_id = device_id.into();
        self.client_type = l.client_type().0;
        self.login_request_id = rid;
        if env.link_up {
            self.open_session(out);
        } else {
            // Logic is restarting (or unreachable): hold the login rather than fail it,
            // within the link wait and the login deadline, whichever ends first.
            let login_deadline = self.since_ms.saturating_add(env.limits.login_timeout_ms);
            self.wait_until_ms = env.now_ms.saturating_add(env.limits.link_wait_ms).min(login_deadline);
            self.phase = Phase::AwaitLink;
        }
    }

    fn open_session(&mut self, out: &mut Actions) {
        self.phase = Phase::AwaitOpened;
        self.session_on_link = true;
        out.push_back(Action::OpenSession { resume: false });
    }

    /// Logic answered `SessionOpen` (`frame` is a LoginAck or an Error).
    pub fn on_session_opened(&mut self, ok: bool, frame: &[u8], env: &Env<'_>, out: &mut Actions) {
        match (self.phase, ok) {
            (Phase::AwaitOpened, true) => {
                if !frame.is_empty() {
                    out.push_back(Action::Reply(Bytes::copy_from_slice(frame)));
                }
                self.phase = Phase::Open;
                self.since_ms = env.now_ms;
            }
            (Phase::AwaitOpened, false) => {
                self.session_on_link = false;
                if !frame.is_empty() {
                    out.push_back(Action::Reply(Bytes::copy_from_slice(frame)));
                }
                self.close(CloseCause::LoginFailed, out);
            }
            // Logic refused a resumed session (e.g. the user was deleted meanwhile).
            (Phase::Open, false) => {
                self.session_on_link = false;
                if !frame.is_empty() {
                    out.push_back(Action::Reply(Bytes::copy_from_slice(frame)));
                }
                self.close(CloseCause::Kicked, out);
            }
            // Answer to a resume, or late: nothing to do.
            _ => {}
        }
    }

    /// Logic closes the session: write `frame` (typically a Kick), then close. Logic
    /// already forgot the session, so no `SessionClosed` is sent back.
    pub fn on_logic_close(&mut self, frame: &[u8], out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        self.session_on_link = false;
        if !frame.is_empty() {
            out.push_back(Action::Reply(Bytes::copy_from_slice(frame)));
        }
        self.close(CloseCause::Kicked, out);
    }

    /// Periodic check of the login deadline and the heartbeat timeout.
    pub fn on_tick(&mut self, env: &Env<'_>, out: &mut Actions) {
        let elapsed = env.now_ms.saturating_sub(self.since_ms);
        match self.phase {
            // The wait is over first: the login deadline must hold whatever the link does.
            Phase::AwaitLink if env.now_ms >= self.wait_until_ms => {
                out.push_back(error(
                    self.login_request_id,
                    codes::SERVICE_UNAVAILABLE,
                    "service unavailable (logic unreachable), retry later",
                ));
                self.close(CloseCause::LinkLost, out);
            }
            // The link came back (or its queue drained) since the login arrived.
            Phase::AwaitLink if env.link_up => self.open_session(out),
            Phase::AwaitLogin | Phase::AwaitOpened if elapsed >= env.limits.login_timeout_ms => {
                out.push_back(error(0, codes::LOGIN_TIMEOUT, "no login within the deadline"));
                self.close(CloseCause::LoginTimeout, out);
            }
            Phase::Open if elapsed >= env.limits.heartbeat_timeout_ms => {
                self.kick(KickReason::HeartbeatTimeout, "no heartbeat within the timeout", out);
                self.close(CloseCause::HeartbeatTimeout, out);
            }
            _ => {}
        }
    }

    /// The outbound queue overflowed. The caller drops what it had not started
    /// writing before applying these actions.
    pub fn on_slow_consumer(&mut self, out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        self.kick(KickReason::SlowConsumer, "too slow reading; reconnect and pull", out);
        self.close(CloseCause::SlowConsumer, out);
    }

    /// The gateway is shutting down.
    pub fn on_shutdown(&mut self, out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        self.kick(KickReason::ServerShutdown, "server shutting down; reconnect later", out);
        self.close(CloseCause::Shutdown, out);
    }

    /// The peer closed or reset the connection (or writing to it failed).
    pub fn on_peer_closed(&mut self, out: &mut Actions) {
        self.close(CloseCause::ClientClosed, out);
    }

    /// The transport broke its own rules (e.g. a WebSocket violation the caller reports
    /// with its own close frame).
    pub fn on_transport_error(&mut self, out: &mut Actions) {
        self.close(CloseCause::Protocol, out);
    }

    /// The link went down: logic lost every session of this core.
    pub fn on_link_down(&mut self, out: &mut Actions) {
        match self.phase {
            Phase::AwaitOpened => {
                self.session_on_link = false;
                out.push_back(error(self.login_request_id, codes::SERVICE_UNAVAILABLE, "service unavailable"));
                self.close(CloseCause::LinkLost, out);
            }
            Phase::Open => self.session_on_link = false,
            _ => {}
        }
    }

    /// The link is back: re-register the session, or open the one that waited.
    pub fn on_link_up(&mut self, out: &mut Actions) {
        match self.phase {
            Phase::Open => {
                self.session_on_link = true;
                out.push_back(Action::OpenSession { resume: true });
            }
            Phase::AwaitLink => self.open_session(out),
            _ => {}
        }
    }

    fn kick(&mut self, reason: KickReason, msg: &str, out: &mut Actions) {
        if self.phase == Phase::Open {
            out.push_back(Action::Reply(encode::kick(reason, msg).into()));
        }
    }

    fn close(&mut self, cause: CloseCause, out: &mut Actions) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.session_on_link {
            out.push_back(Action::SessionClosed(cause.link_reason()));
            self.session_on_link = false;
        }
        self.phase = Phase::Closed;
        out.push_back(Action::Close(cause));
    }

    fn take_token(&mut self, env: &Env<'_>) -> bool {
        let rate = u64::from(env.limits.frames_per_sec);
        let elapsed = env.now_ms.saturating_sub(self.refill_ms);
        // `rate` frames/s is `rate` milli-frames per ms.
        self.tokens = (self.tokens + elapsed.saturating_mul(rate)).min(bucket_capacity(env.limits));
        self.refill_ms = env.now_ms;
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

fn bucket_capacity(l: &Limits) -> u64 {
    u64::from(l.frames_per_sec) * 2 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_schema::client::{ClientType, SyncKind};

    const APP: u32 = 7;
    const SECRET: &str = "s3cret";
    const NOW_UNIX_MS: u64 = 1_700_000_000_000;

    struct T {
        conn: Conn,
        apps: Apps,
        limits: Limits,
        now_ms: u64,
        link_up: bool,
        sends: SendWindow,
    }

    impl T {
        fn new() -> T {
            let limits = Limits {
                login_timeout_ms: 5_000,
                heartbeat_timeout_ms: 90_000,
                max_payload: 1024,
                frames_per_sec: 5,
                link_wait_ms: 0,
            };
            T {
                conn: Conn::new(1_000, &limits),
                apps: Apps::new([(APP, SECRET.to_owned())]),
                limits,
                now_ms: 1_000,
                link_up: true,
                sends: SendWindow::new(2, metrics::Counter::noop(), metrics::Counter::noop()),
            }
        }
        fn env(&self) -> Env<'_> {
            Env {
                now_ms: self.now_ms,
                unix_ms: NOW_UNIX_MS,
                link_up: self.link_up,
                apps: &self.apps,
                limits: &self.limits,
                sends: &self.sends,
            }
        }
        fn feed(&mut self, frame: &[u8]) -> String {
            self.with(|c, e, o| c.on_frame(frame, e, o))
        }
        fn with(&mut self, f: impl FnOnce(&mut Conn, &Env<'_>, &mut Actions)) -> String {
            let mut out = Actions::new();
            let env = Env {
                now_ms: self.now_ms,
                unix_ms: NOW_UNIX_MS,
                link_up: self.link_up,
                apps: &self.apps,
                limits: &self.limits,
                sends: &self.sends,
            };
            f(&mut self.conn, &env, &mut out);
            describe(&out)
        }
        fn logged_in() -> T {
            let mut t = T::new();
            assert_eq!(t.feed(&good_login()), "open");
            assert_eq!(t.with(|c, e, o| c.on_session_opened(true, &ack(), e, o)), "reply LoginAck");
            assert!(t.conn.is_open());
            t
        }
    }

    fn describe(out: &Actions) -> String {
        out.iter()
            .map(|a| match a {
                Action::Reply(b) => {
                    let f = frame::parse_client_framed(b, 1 << 20).expect("replies are valid frames");
                    match f.body_type() {
                        Body::Error => format!("reply Error({})", f.body_as_error().unwrap().code()),
                        Body::Kick => format!("reply Kick({:?})", f.body_as_kick().unwrap().reason()),
                        Body::Pong => format!("reply Pong({})", f.request_id()),
                        Body::SendAck => {
                            let ack = f.body_as_send_ack().unwrap();
                            let held = if ack.message() == Some(codes::SEND_HELD) { " held" } else { "" };
                            format!("reply SendAck({}{held})", ack.code())
                        }
                        other => format!("reply {}", other.variant_name().unwrap_or("?")),
                    }
                }
                Action::Forward => "forward".to_owned(),
                Action::Dropped => "dropped".to_owned(),
                Action::OpenSession { resume: false } => "open".to_owned(),
                Action::OpenSession { resume: true } => "resume".to_owned(),
                Action::SessionClosed(r) => format!("session-closed {r:?}"),
                Action::Close(c) => format!("close {}", c.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn sign(user: &str, expiry_secs: u64) -> String {
        sig::sign(SECRET.as_bytes(), APP, user, expiry_secs)
    }
    fn login_with(app: u32, user: &str, sign: &str, device: &str) -> Vec<u8> {
        encode::login(3, app, user, sign, ClientType::Android, device, "1.0")
    }
    fn good_login() -> Vec<u8> {
        login_with(APP, "alice", &sign("alice", NOW_UNIX_MS / 1000 + 3600), "phone")
    }
    fn ack() -> Vec<u8> {
        encode::login_ack(3, &encode::LoginAckParts { session_id: 1, ..Default::default() })
    }

    /// One line per case: frames fed to a fresh connection, expected actions of the last.
    fn check_first_frame(frame: &[u8], expect: &str) {
        let mut t = T::new();
        assert_eq!(t.feed(frame), expect, "frame {frame:?}");
    }

    #[test]
    fn bad_shapes_close_with_the_right_code() {
        let ping = encode::ping(1, 2);
        let mut bad_version = ping.clone();
        bad_version[3] = 2;
        let mut too_large = ping.clone();
        too_large[..3].copy_from_slice(&[0x01, 0x04, 0]); // 1025 > 1024
        let mut too_short = ping.clone();
        too_short[..3].copy_from_slice(&[4, 0, 0]);
        let mut garbage = vec![12, 0, 0, 1];
        garbage.extend_from_slice(&[0xff; 12]);
        let mut truncated = ping.clone();
        truncated.pop();

        check_first_frame(&bad_version, "reply Error(80001), close protocol_error");
        check_first_frame(&too_large, "reply Error(80002), close protocol_error");
        check_first_frame(&too_short, "reply Error(80000), close protocol_error");
        check_first_frame(&garbage, "reply Error(80000), close protocol_error");
        check_first_frame(&truncated, "reply Error(80000), close protocol_error");
        check_first_frame(&[1, 2], "reply Error(80000), close protocol_error");
        check_first_frame(&ping, "reply Error(80003), close protocol_error");
        check_first_frame(&encode::pull(1, SyncKind::Message, 0, 10), "reply Error(80003), close protocol_error");
    }

    /// The texts PROTOCOL.md promises: a fixed one for a payload that fails
    /// verification (no verifier internals), and one naming a WebSocket message whose
    /// length disagrees with its frame header.
    #[test]
    fn malformed_frame_messages_name_no_verifier_internals() {
        let message = |frame: &[u8]| {
            let t = T::new();
            let mut out = Actions::new();
            let env = t.env();
            let mut conn = Conn::new(t.now_ms, &t.limits);
            conn.on_frame(frame, &env, &mut out);
            match out.front() {
                Some(Action::Reply(b)) => {
                    let f = frame::parse_client_framed(b, 1 << 20).unwrap();
                    let e = f.body_as_error().unwrap();
                    (e.code(), e.message().unwrap_or_default().to_owned())
                }
                other => panic!("expected an Error reply, got {other:?}"),
            }
        };
        let mut garbage = vec![12, 0, 0, 1];
        garbage.extend_from_slice(&[0xff; 12]);
        assert_eq!(message(&garbage), (codes::MALFORMED_FRAME, NOT_A_FRAME.to_owned()));
        // A WebSocket message carrying a whole frame plus one byte more.
        let mut longer = encode::ping(1, 2);
        longer.push(0);
        assert_eq!(message(&longer), (codes::MALFORMED_FRAME, WS_LENGTH_MISMATCH.to_owned()));
        let doc = include_str!("../../schema/PROTOCOL.md");
        assert!(doc.contains(NOT_A_FRAME) && doc.contains(WS_LENGTH_MISMATCH), "PROTOCOL.md names both texts");
    }

    #[test]
    fn login_failures() {
        let later = NOW_UNIX_MS / 1000 + 60;
        let long = "x".repeat(65);
        check_first_frame(&good_login(), "open");
        check_first_frame(
            &login_with(99, "alice", &sign("alice", later), "d"),
            "reply Error(60001), close login_failed",
        );
        check_first_frame(
            &login_with(APP, "alice", &sign("bob", later), "d"),
            "reply Error(60003), close login_failed",
        );
        check_first_frame(
            &login_with(APP, "alice", &sign("alice", NOW_UNIX_MS / 1000 - 1), "d"),
            "reply Error(60004), close login_failed",
        );
        check_first_frame(&login_with(APP, "alice", "", "d"), "reply Error(60000), close login_failed");
        check_first_frame(&login_with(APP, "alice", "not-a-sig", "d"), "reply Error(60006), close login_failed");
        check_first_frame(&login_with(APP, "", &sign("", later), "d"), "reply Error(80010), close login_failed");
        check_first_frame(&login_with(APP, &long, &sign(&long, later), "d"), "reply Error(80010), close login_failed");
        check_first_frame(
            &login_with(APP, "alice", &sign("alice", later), ""),
            "reply Error(80010), close login_failed",
        );
        check_first_frame(
            &login_with(APP, "alice", &sign("alice", later), &long),
            "reply Error(80010), close login_failed",
        );
        let mut t = T::new();
        t.link_up = false;
        assert_eq!(t.feed(&good_login()), "reply Error(80009), close login_failed");
    }

    /// With a link wait, a login that arrives while logic is unreachable is held: sent
    /// when the link comes back, answered 80009 when the wait (or the login deadline)
    /// ends first.
    #[test]
    fn logins_wait_for_the_link_within_a_bound() {
        let waiting = |wait_ms| {
            let mut t = T::new();
            t.limits.link_wait_ms = wait_ms;
            t.link_up = false;
            assert_eq!(t.feed(&good_login()), "");
            t
        };
        // The link comes back: the session opens, the login completes as usual.
        let mut t = waiting(3_000);
        t.now_ms += 2_000;
        assert_eq!(t.with(|c, _, o| c.on_link_down(o)), "");
        assert_eq!(t.feed(&encode::ping(4, 1)), "reply Pong(4)");
        assert_eq!(t.feed(&good_login()), "reply Error(80007)");
        assert_eq!(t.with(|c, _, o| c.on_link_up(o)), "open");
        assert_eq!(t.with(|c, e, o| c.on_session_opened(true, &ack(), e, o)), "reply LoginAck");
        assert!(t.conn.is_open());
        // A tick that sees the link usable again (e.g. its queue drained) opens too.
        let mut t = waiting(3_000);
        t.link_up = true;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "open");
        // The wait ends: 80009, retryable.
        let mut t = waiting(3_000);
        t.now_ms += 2_999;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "");
        t.now_ms += 1;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "reply Error(80009), close link_lost");
        // Never past the login deadline (5 s from accept), and still 80009 there.
        let mut t = waiting(60_000);
        t.now_ms = 5_999;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "");
        t.now_ms = 6_000;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "reply Error(80009), close link_lost");
        // Logout while waiting: nothing to tell logic.
        let mut t = waiting(3_000);
        assert_eq!(t.feed(&encode::logout(6)), "close logout");
    }

    #[test]
    fn login_is_decided_by_logic() {
        let mut t = T::new();
        assert_eq!(t.feed(&good_login()), "open");
        assert_eq!((t.conn.app_id(), t.conn.user_id(), t.conn.device_id()), (APP, "alice", "phone"));
        assert_eq!((t.conn.client_type(), t.conn.login_request_id()), (ClientType::Android.0, 3));
        assert_eq!(t.feed(&good_login()), "reply Error(80007)");
        assert_eq!(t.feed(&encode::ping(4, 1)), "reply Pong(4)");
        let refusal = encode::error(3, codes::USER_DELETED, "deleted");
        assert_eq!(
            t.with(|c, e, o| c.on_session_opened(false, &refusal, e, o)),
            "reply Error(20002), close login_failed"
        );
        // Nothing after close.
        assert_eq!(t.feed(&encode::ping(5, 1)), "");

        let mut t = T::new();
        t.feed(&good_login());
        assert_eq!(
            t.feed(&encode::pull(5, SyncKind::Message, 0, 1)),
            "reply Error(80003), session-closed ProtocolError, close protocol_error"
        );
        let mut t = T::new();
        t.feed(&good_login());
        assert_eq!(t.feed(&encode::logout(6)), "session-closed ClientLogout, close logout");
    }

    #[test]
    fn login_timeout_covers_waiting_for_logic() {
        let mut t = T::new();
        t.now_ms = 5_999;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "");
        t.now_ms = 6_000;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "reply Error(80004), close login_timeout");

        let mut t = T::new();
        t.feed(&good_login());
        t.now_ms = 6_000;
        assert_eq!(
            t.with(|c, e, o| c.on_tick(e, o)),
            "reply Error(80004), session-closed LoginTimeout, close login_timeout"
        );
    }

    #[test]
    fn sends_past_the_cores_window_are_refused_here() {
        let mut t = T::logged_in();
        let send = |rid, id: &str| {
            message::send(rid, id, "bob", &[message::ElemParts { text: "hi", ..Default::default() }], 1)
        };
        // Logic has not reported on this link yet: nothing is bounded.
        for i in 0..3 {
            assert_eq!(t.feed(&send(i, "early")), "forward");
        }
        // (The frame-rate bucket refills meanwhile.)
        t.now_ms += 2_000;
        // It has answered one of three: two in flight, the bound.
        t.sends.answered(1);
        let mut out = Actions::new();
        let env = Env {
            now_ms: t.now_ms,
            unix_ms: NOW_UNIX_MS,
            link_up: true,
            apps: &t.apps,
            limits: &t.limits,
            sends: &t.sends,
        };
        t.conn.on_frame(&send(7, "cm-7"), &env, &mut out);
        let Some(Action::Reply(b)) = out.front() else { panic!("{}", describe(&out)) };
        let f = frame::parse_client_framed(b, 1 << 20).unwrap();
        let ack = f.body_as_send_ack().unwrap();
        assert_eq!((f.request_id(), ack.code(), ack.client_msg_id()), (7, codes::SERVICE_UNAVAILABLE, Some("cm-7")));
        assert_eq!(ack.message(), Some(SENDS_IN_FLIGHT_FULL));
        // Only Sends are bounded: the rest still goes to logic.
        assert_eq!(t.feed(&encode::pull(1, SyncKind::Message, 0, 10)), "forward");
        t.sends.answered(2);
        assert_eq!(t.feed(&send(8, "cm-7")), "forward");
        assert_eq!(t.feed(&send(9, "cm-9")), "reply SendAck(80009)");
        // Link down: the usual Error, and no place taken.
        t.link_up = false;
        assert_eq!(t.feed(&send(10, "cm-9")), "reply Error(80009)");
        assert_eq!(t.sends.in_flight(), 2);
    }

    /// One sender's order across a busy refusal: once a Send is refused (window full,
    /// link down or frame rate), the connection's later Sends with other ids are refused
    /// too until it comes again, so none of them is stored before it; a client that
    /// gave it up is held for `SEND_HOLD_MS` at most.
    #[test]
    fn a_refused_send_holds_the_connections_later_sends() {
        let mut t = T::logged_in();
        let send = |rid, id: &str| {
            message::send(rid, id, "bob", &[message::ElemParts { text: "hi", ..Default::default() }], 1)
        };
        t.sends.answered(0);
        assert_eq!(t.feed(&send(1, "a")), "forward");
        assert_eq!(t.feed(&send(2, "b")), "forward");
        assert_eq!(t.feed(&send(3, "c")), "reply SendAck(80009)", "window full");
        t.sends.answered(2);
        // Room again, but "c" was refused first: "d" may not overtake it.
        assert_eq!(t.feed(&send(4, "d")), "reply SendAck(80009 held)");
        assert_eq!(t.feed(&encode::pull(5, SyncKind::Message, 0, 10)), "forward", "only Sends are held");
        t.now_ms += 2_000; // the frame-rate bucket refills
        assert_eq!(t.feed(&send(6, "c")), "forward", "the refused send itself ends the hold");
        assert_eq!(t.feed(&send(7, "d")), "forward");
        assert_eq!(t.sends.in_flight(), 2);

        // Refused again while held: still the same send to wait for.
        assert_eq!(t.feed(&send(8, "e")), "reply SendAck(80009)");
        assert_eq!(t.feed(&send(9, "e")), "reply SendAck(80009)");
        t.sends.answered(4);
        assert_eq!(t.feed(&send(10, "f")), "reply SendAck(80009 held)");
        // A client that never sends "e" again is held for SEND_HOLD_MS at most.
        t.now_ms += codes::SEND_HOLD_MS;
        assert_eq!(t.feed(&send(11, "f")), "forward");

        // Link down refuses as busy too; a later send written meanwhile waits for it.
        t.link_up = false;
        assert_eq!(t.feed(&send(12, "g")), "reply Error(80009)");
        t.link_up = true;
        assert_eq!(t.feed(&send(13, "h")), "reply SendAck(80009 held)");
        t.now_ms += 2_000;
        // A later send refused by the frame rate does not take the hold from "g".
        let mut refused_by_rate = false;
        for rid in 14..40 {
            let r = t.feed(&send(rid, "h"));
            if r == "reply Error(80005)" {
                refused_by_rate = true;
                break;
            }
            assert_eq!(r, "reply SendAck(80009 held)");
        }
        assert!(refused_by_rate, "the bucket runs dry");
        t.now_ms += 2_000;
        assert_eq!(t.feed(&send(50, "h")), "reply SendAck(80009 held)", "still held behind g");
        assert_eq!(t.feed(&send(51, "g")), "forward");
        t.sends.answered(6);
        assert_eq!(t.feed(&send(52, "h")), "forward");
    }

    #[test]
    fn authenticated_traffic() {
        let mut t = T::logged_in();
        assert_eq!(t.feed(&encode::ping(9, 5)), "reply Pong(9)");
        assert_eq!(t.feed(&encode::pull(1, SyncKind::Message, 0, 10)), "forward");
        assert_eq!(t.feed(&encode::push_ack(1, SyncKind::Message, 3)), "forward");
        // A group's PushAck stays on the gateway, even with the link down.
        assert_eq!(t.feed(&encode::push_ack_group(1, "g1", 3)), "dropped");
        t.link_up = false;
        assert_eq!(t.feed(&encode::push_ack_group(1, "g1", 4)), "dropped");
        t.link_up = true;
        assert_eq!(t.feed(&good_login()), "reply Error(80007)");
        for f in [
            ack(),
            encode::pong(1, 1, 1),
            encode::kick(KickReason::AdminKick, "x"),
            encode::error(1, 1, "x"),
            encode::sync_notify(SyncKind::Message, 1),
        ] {
            t.now_ms += 1_000; // keep the bucket full
            assert_eq!(t.feed(&f), "reply Error(80008)");
        }
        t.link_up = false;
        assert_eq!(t.feed(&encode::pull(1, SyncKind::Message, 0, 10)), "reply Error(80009)");
        assert!(t.conn.is_open());
        assert_eq!(t.feed(&encode::logout(2)), "session-closed ClientLogout, close logout");
    }

    #[test]
    fn garbage_after_login_closes() {
        let mut t = T::logged_in();
        let mut garbage = vec![12, 0, 0, 1];
        garbage.extend_from_slice(&[0xff; 12]);
        assert_eq!(t.feed(&garbage), "reply Error(80000), session-closed ProtocolError, close protocol_error");
    }

    #[test]
    fn rate_limit_drops_frames() {
        let mut t = T::logged_in(); // login used 1 of 10 tokens
        for i in 0..9 {
            assert_eq!(t.feed(&encode::ping(i, 0)), format!("reply Pong({i})"));
        }
        assert_eq!(t.feed(&encode::ping(10, 0)), "reply Error(80005)");
        t.now_ms += 200; // 5/s: one token per 200 ms
        assert_eq!(t.feed(&encode::ping(11, 0)), "reply Pong(11)");
        assert_eq!(t.feed(&encode::ping(12, 0)), "reply Error(80005)");
        assert!(t.conn.is_open());
    }

    #[test]
    fn heartbeat_timeout_resets_on_frames() {
        let mut t = T::logged_in();
        t.now_ms += 80_000;
        t.feed(&encode::ping(1, 0));
        t.now_ms += 89_999;
        assert_eq!(t.with(|c, e, o| c.on_tick(e, o)), "");
        t.now_ms += 1;
        assert_eq!(
            t.with(|c, e, o| c.on_tick(e, o)),
            "reply Kick(HeartbeatTimeout), session-closed HeartbeatTimeout, close heartbeat_timeout"
        );
    }

    #[test]
    fn link_events() {
        let mut t = T::logged_in();
        assert_eq!(t.with(|c, _, o| c.on_link_down(o)), "");
        assert_eq!(t.with(|c, _, o| c.on_link_up(o)), "resume");
        // Resume answered ok: nothing; refused: close without SessionClosed.
        assert_eq!(t.with(|c, e, o| c.on_session_opened(true, &ack(), e, o)), "");
        let kick = encode::kick(KickReason::UserDeleted, "bye");
        assert_eq!(t.with(|c, e, o| c.on_session_opened(false, &kick, e, o)), "reply Kick(UserDeleted), close kicked");

        let mut t = T::new();
        t.feed(&good_login());
        assert_eq!(t.with(|c, _, o| c.on_link_down(o)), "reply Error(80009), close link_lost");

        let mut t = T::logged_in();
        t.with(|c, _, o| c.on_link_down(o));
        assert_eq!(t.with(|c, _, o| c.on_peer_closed(o)), "close client_closed");
    }

    #[test]
    fn closes_initiated_by_the_gateway_or_logic() {
        let mut t = T::logged_in();
        let kick = encode::kick(KickReason::ReplacedByNewLogin, "other device");
        assert_eq!(t.with(|c, _, o| c.on_logic_close(&kick, o)), "reply Kick(ReplacedByNewLogin), close kicked");
        let mut t = T::logged_in();
        assert_eq!(
            t.with(|c, _, o| c.on_slow_consumer(o)),
            "reply Kick(SlowConsumer), session-closed SlowConsumer, close slow_consumer"
        );
        let mut t = T::logged_in();
        assert_eq!(
            t.with(|c, _, o| c.on_shutdown(o)),
            "reply Kick(ServerShutdown), session-closed GatewayShutdown, close shutdown"
        );
        let mut t = T::new();
        assert_eq!(t.with(|c, _, o| c.on_shutdown(o)), "close shutdown");
        let mut t = T::logged_in();
        assert_eq!(t.with(|c, _, o| c.on_peer_closed(o)), "session-closed ClientClosed, close client_closed");
        assert_eq!(t.with(|c, _, o| c.on_peer_closed(o)), "");
    }

    #[test]
    fn unknown_future_kinds_are_forwarded() {
        // A frame whose union type this build does not know: forwarded unchanged.
        let mut fbb = tern_schema::flatbuffers::FlatBufferBuilder::new();
        let body = tern_schema::client::Ping::create(&mut fbb, &tern_schema::client::PingArgs { client_time_ms: 1 });
        let f = encode::finish_client(fbb, 1, Body(200), body.as_union_value());
        let mut t = T::logged_in();
        assert_eq!(t.feed(&f), "forward");
    }
}
