//! Fuzz harnesses of every decoder that reads bytes from the network, shared by the
//! cargo-fuzz targets in `fuzz/` (one line each, run on nightly) and by this crate's
//! tests, which replay the checked-in corpus `fuzz/corpus/<target>/` and run proptests
//! over the same functions on stable, so CI exercises exactly what the fuzzers run.
//!
//! Not part of the gateway's API (hidden, unstable): it exists so the targets can reach
//! the crate-private sans-IO pieces (`ws`, `wire`, `conn`) without making them public.
//! Each harness panics only when an invariant is broken; any input is otherwise fine.

use tern_schema::client::{Body, ClientType, KickReason, SyncKind};
use tern_schema::frame::{self, FrameError, MAX_PAYLOAD_LEN, MIN_PAYLOAD_LEN};
use tern_schema::{encode, message, sig, HEADER_LEN};

use crate::conn::{Action, Actions, Apps, CloseCause, Conn, Env, Limits, MAX_ID_BYTES};
use crate::window::SendWindow;
use crate::wire::{Step, Wire};
use crate::ws::{self, Handshake, WsDecoder};

/// Reads harness parameters off the front of a fuzz input; past the end it yields zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------- client_frame

/// Client frames: header splitting, verification, and reading every field of whatever
/// verified (the generated `Debug` walks the whole table, union body included).
pub fn client_frame(data: &[u8]) {
    for max in [MAX_PAYLOAD_LEN, 64] {
        let split = frame::split_frame(data, max);
        if let Ok(Some(total)) = split {
            assert!((HEADER_LEN + MIN_PAYLOAD_LEN..=HEADER_LEN + max).contains(&total) && total <= data.len());
            touch_client(frame::parse_client(&data[HEADER_LEN..total]));
        }
        let framed = frame::parse_client_framed(data, max);
        let whole = split == Ok(Some(data.len())) && frame::parse_client(&data[HEADER_LEN..]).is_ok();
        assert_eq!(framed.is_ok(), whole, "parse_client_framed disagrees with split_frame + parse_client");
        touch_client(framed);
    }
    touch_client(frame::parse_client(data));
}

fn touch_client(f: Result<tern_schema::client::Frame<'_>, FrameError>) {
    match f {
        Ok(f) => {
            assert_ne!(f.body_type(), Body::NONE, "a verified frame has a body");
            std::hint::black_box(format!("{f:?}"));
            if let Some(s) = f.body_as_send() {
                std::hint::black_box(message::elems_of(s.elems()));
            }
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

// ---------------------------------------------------------------- link_frame

/// Link frames as the gateway's link reader sees them (a stream of frames), and the
/// client frames they carry.
pub fn link_frame(data: &[u8]) {
    if let Ok(f) = frame::parse_link(data) {
        std::hint::black_box(format!("{f:?}"));
    }
    let mut off = 0;
    while let Ok(Some(total)) = frame::split_frame(&data[off..], MAX_PAYLOAD_LEN) {
        let Ok(f) = frame::parse_link(&data[off + HEADER_LEN..off + total]) else { break };
        std::hint::black_box(format!("{f:?}"));
        let inner = [
            f.body_as_deliver().and_then(|d| d.frame()),
            f.body_as_session_opened().and_then(|s| s.frame()),
            f.body_as_close().and_then(|c| c.frame()),
            f.body_as_upstream().and_then(|u| u.frame()),
        ];
        for v in inner.into_iter().flatten() {
            client_frame(v.bytes());
        }
        if let Some(d) = f.body_as_deliver() {
            for c in d.conns().iter().flatten() {
                std::hint::black_box((c.gateway_id(), c.core(), c.slot(), c.generation()));
            }
        }
        off += total;
    }
}

// ---------------------------------------------------------------- ws_codec

/// The WebSocket handshake parser and frame decoder. Checks that decoding never
/// depends on where the bytes were cut: a prefix of a frame yields "need more" (or the
/// same error the whole frame does), never a different frame.
pub fn ws_codec(data: &[u8]) {
    let mut input = Input(data);
    let max_message = usize::from(input.u16());
    let cut_seed = usize::from(input.byte());
    let rest = input.0;

    match ws::handshake(rest) {
        Handshake::Partial => assert!(rest.len() < ws::MAX_HANDSHAKE_BYTES),
        Handshake::Accept { consumed, response } => {
            assert!(consumed <= rest.len() && consumed <= ws::MAX_HANDSHAKE_BYTES);
            assert!(response.starts_with(b"HTTP/1.1 101 "));
        }
        Handshake::Reject { response, .. } => assert!(response.starts_with(b"HTTP/1.1 4")),
    }

    let mut buf = rest.to_vec();
    let mut dec = WsDecoder::default();
    let mut off = 0;
    for i in 1.. {
        let left = buf.len() - off;
        let cut = (cut_seed * i * 31) % (left + 1);
        let prefix = dec.decode(&mut buf[off..off + cut], max_message).map(|r| r.map(|(n, e)| (n, describe_ws(&e))));
        let result = match prefix {
            Ok(None) => {
                let whole = dec.decode(&mut buf[off..], max_message).map(|r| r.map(|(n, e)| (n, describe_ws(&e))));
                if let Ok(Some((n, _))) = &whole {
                    assert!(*n > cut, "a {cut}-byte prefix of a {n}-byte frame was not enough, yet it was");
                }
                whole
            }
            Ok(Some((n, ev))) => {
                assert!(n <= cut);
                Ok(Some((n, ev)))
            }
            Err(e) => {
                // Errors come from the header alone: the whole input must agree.
                assert_eq!(dec.decode(&mut buf[off..], max_message).err(), Some(e));
                Err(e)
            }
        };
        match result {
            Ok(Some((n, ev))) => {
                assert!(n > 0 && n <= left);
                if let WsDesc::Message(len) = ev {
                    assert!(len <= max_message);
                }
                off += n;
            }
            Ok(None) | Err(_) => break,
        }
    }
    dec.release();
}

#[derive(Debug, PartialEq, Eq)]
enum WsDesc {
    Message(usize),
    Fragment,
    Ping(usize),
    Pong,
    Close(Option<u16>),
}

fn describe_ws(e: &ws::WsEvent<'_>) -> WsDesc {
    match e {
        ws::WsEvent::Message(m) => WsDesc::Message(m.len()),
        ws::WsEvent::Fragment => WsDesc::Fragment,
        ws::WsEvent::Ping(p) => {
            assert!(p.len() <= 125);
            WsDesc::Ping(p.len())
        }
        ws::WsEvent::Pong => WsDesc::Pong,
        ws::WsEvent::Close(c) => WsDesc::Close(*c),
    }
}

// ---------------------------------------------------------------- wire

/// What one wire step produced, owned, for comparing two runs.
#[derive(Debug, PartialEq, Eq)]
enum WireDesc {
    Frame(Vec<u8>),
    Raw(Vec<u8>),
    Skip,
    BadFrame(String, u16),
    PeerClose,
    Reject(Vec<u8>),
}

/// The TCP and WebSocket framing of a connection, fed the way the core feeds it (whole
/// units from each read, a partial one carried over). Checks that the units decoded do
/// not depend on how the stream was cut into reads.
pub fn wire(data: &[u8]) {
    let mut input = Input(data);
    let ws = input.byte() & 1 == 1;
    let max_payload = MIN_PAYLOAD_LEN + usize::from(input.u16()) % 4_096;
    let chunk_seed = usize::from(input.byte());
    let stream = input.0;
    let whole = run_wire(ws, max_payload, stream, &mut |_| usize::MAX);
    let chunked = run_wire(ws, max_payload, stream, &mut |i| 1 + (chunk_seed * 7 + i * 13) % (chunk_seed + 1));
    assert_eq!(whole, chunked, "framing depends on how the stream was cut into reads");
}

/// Runs `stream` through a fresh [`Wire`] in reads of `chunk(i)` bytes; returns the
/// units decoded (up to the first that ends the connection) and the bytes left over.
fn run_wire(
    ws: bool,
    max_payload: usize,
    stream: &[u8],
    chunk: &mut dyn FnMut(usize) -> usize,
) -> (Vec<WireDesc>, usize) {
    let mut wire = Wire::new(ws);
    let mut out = Vec::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut read = 0;
    while pos < stream.len() {
        let n = chunk(read).min(stream.len() - pos);
        read += 1;
        inbuf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        let mut off = 0;
        while off < inbuf.len() {
            let left = inbuf.len() - off;
            let (n, step) = wire.step(&mut inbuf[off..], max_payload);
            assert!(n <= left);
            let (desc, end) = match step {
                Step::NeedMore => {
                    assert_eq!(n, 0);
                    break;
                }
                Step::Frame(f) => {
                    if ws {
                        assert!(f.len() <= max_payload + HEADER_LEN);
                    } else {
                        assert_eq!(frame::split_frame(f, max_payload), Ok(Some(f.len())));
                    }
                    (WireDesc::Frame(f.to_vec()), false)
                }
                Step::Raw(b) => (WireDesc::Raw(b.to_vec()), false),
                Step::Skip => (WireDesc::Skip, false),
                Step::BadFrame(e, code) => {
                    assert_eq!(code == 0, !ws);
                    (WireDesc::BadFrame(e.to_string(), code), true)
                }
                Step::PeerClose => (WireDesc::PeerClose, true),
                Step::Reject(b) => (WireDesc::Reject(b.to_vec()), true),
            };
            assert!(n > 0, "a step that is not NeedMore consumed nothing: {desc:?}");
            out.push(desc);
            off += n;
            if end {
                return (out, 0);
            }
        }
        inbuf.drain(..off);
        wire.release();
    }
    (out, inbuf.len())
}

// ---------------------------------------------------------------- conn

const APP: u32 = 7;
const SECRET: &str = "fuzz-secret";
const UNIX_BASE_MS: u64 = 1_700_000_000_000;

/// The connection state machine driven by an arbitrary sequence of client frames and
/// events (ops, see [`conn_op`]). Checks, after every event, that only actions allowed
/// for that event and state came out: nothing after `Close`; `SessionClosed` exactly
/// when logic holds a session, right before the `Close`; sessions opened only by a
/// verified Login (or a resume) with the link up; `Forward` only of valid client
/// frames of an authenticated connection; timeouts only when due; replies that are
/// valid client frames.
pub fn conn(data: &[u8]) {
    run_conn(data, None);
}

/// Runs the `conn` harness; with `log`, also describes each event's actions there.
fn run_conn(data: &[u8], log: Option<&mut Vec<String>>) {
    let mut input = Input(data);
    let limits = Limits {
        login_timeout_ms: 1 + u64::from(input.u16()),
        heartbeat_timeout_ms: 1 + u64::from(input.u16()) * 4,
        max_payload: MIN_PAYLOAD_LEN + usize::from(input.u16()) % 2_048,
        frames_per_sec: 1 + u32::from(input.byte()),
        link_wait_ms: 0,
    };
    // Derived, not read, so existing corpus inputs keep their meaning; an odd login
    // timeout exercises logins that wait for the link.
    let limits = Limits { link_wait_ms: (limits.login_timeout_ms % 2) * limits.login_timeout_ms / 2, ..limits };
    let apps = Apps::new([(APP, SECRET.to_owned())]);
    let mut h = ConnHarness {
        conn: Conn::new(0, &limits),
        limits,
        apps,
        now_ms: 0,
        link: true,
        congested: false,
        sends: SendWindow::new(0, metrics::Counter::noop(), metrics::Counter::noop()),
        m: Model::default(),
        out: Actions::new(),
        log,
    };
    while !input.is_empty() {
        h.step(&mut input);
    }
}

/// Client frame kinds logic handles (everything but what the gateway answers itself
/// and what only servers send), including kinds this build does not know.
fn forwardable(b: Body) -> bool {
    !matches!(
        b,
        Body::Login
            | Body::Ping
            | Body::Logout
            | Body::LoginAck
            | Body::Pong
            | Body::SendAck
            | Body::Push
            | Body::PullResult
            | Body::ReadReceiptNotify
            | Body::SyncNotify
            | Body::RecallNotify
            | Body::Kick
            | Body::Error
    )
}

/// What the harness knows independently of the state machine.
#[derive(Debug, Default)]
struct Model {
    closed: bool,
    /// Logic holds (or is opening) a session of this connection.
    held: bool,
    /// Logic accepted the login at some point.
    accepted: bool,
    /// Last time a valid frame arrived on the authenticated connection.
    last_seen_ms: u64,
    /// A valid Login arrived while the link was unusable and is waiting for it.
    waiting: bool,
}

struct ConnHarness<'l> {
    conn: Conn,
    limits: Limits,
    apps: Apps,
    now_ms: u64,
    link: bool,
    /// The link is up but its buffer is full: the core reports it as down to `Conn`.
    congested: bool,
    /// Unbounded: the window's own behaviour is unit-tested in `window`; here every Send
    /// the model expects forwarded is.
    sends: SendWindow,
    m: Model,
    out: Actions,
    log: Option<&'l mut Vec<String>>,
}

/// Which kind of event produced the actions being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Frame,
    FrameError,
    Tick,
    SessionOpened { ok: bool },
    LogicClose,
    SlowConsumer,
    Shutdown,
    PeerClosed,
    TransportError,
    LinkDown,
    LinkUp,
}

/// Number of distinct ops of the `conn` harness input.
pub const CONN_OPS: u8 = 16;

/// Ops of the `conn` input, one byte each followed by its parameters. Public so the
/// corpus generator writes the same encoding the harness reads.
#[derive(Debug, Clone, Copy)]
pub enum ConnOp<'a> {
    /// Arbitrary bytes as one client frame (`u16` length, then the bytes).
    RawFrame(&'a [u8]),
    Ping,
    /// A correctly signed Login (user/device lengths, app choice, expiry choice).
    Login {
        user_len: u8,
        device_len: u8,
        other_app: bool,
        expired: bool,
    },
    /// Another well-formed client frame (0..=11 selects the kind).
    Valid(u8),
    FrameError(u8),
    /// Advance the clock by `ms` then tick.
    Tick(u16),
    /// Advance the clock without ticking.
    Wait(u16),
    /// Logic answers the login; the frame is a valid LoginAck/Error or empty.
    SessionOpened {
        ok: bool,
        frame: u8,
    },
    LogicClose(u8),
    SlowConsumer,
    Shutdown,
    PeerClosed,
    TransportError,
    LinkDown,
    LinkUp,
    /// Toggle link congestion.
    Congest,
}

impl ConnOp<'_> {
    /// Appends this op in the harness's input encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            ConnOp::RawFrame(b) => {
                out.push(0);
                let n = b.len().min(usize::from(u16::MAX));
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.extend_from_slice(&b[..n]);
            }
            ConnOp::Ping => out.push(1),
            ConnOp::Login { user_len, device_len, other_app, expired } => {
                out.extend_from_slice(&[2, user_len, device_len, u8::from(other_app) | (u8::from(expired) << 1)])
            }
            ConnOp::Valid(k) => out.extend_from_slice(&[3, k]),
            ConnOp::FrameError(k) => out.extend_from_slice(&[4, k]),
            ConnOp::Tick(ms) => {
                out.push(5);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            ConnOp::Wait(ms) => {
                out.push(6);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            ConnOp::SessionOpened { ok, frame } => out.extend_from_slice(&[7, u8::from(ok), frame]),
            ConnOp::LogicClose(f) => out.extend_from_slice(&[8, f]),
            ConnOp::SlowConsumer => out.push(9),
            ConnOp::Shutdown => out.push(10),
            ConnOp::PeerClosed => out.push(11),
            ConnOp::TransportError => out.push(12),
            ConnOp::LinkDown => out.push(13),
            ConnOp::LinkUp => out.push(14),
            ConnOp::Congest => out.push(15),
        }
    }
}

fn conn_op<'a>(input: &mut Input<'a>) -> ConnOp<'a> {
    match input.byte() % CONN_OPS {
        0 => {
            let n = usize::from(input.u16());
            ConnOp::RawFrame(input.bytes(n))
        }
        1 => ConnOp::Ping,
        2 => {
            let (user_len, device_len, flags) = (input.byte(), input.byte(), input.byte());
            ConnOp::Login { user_len, device_len, other_app: flags & 1 != 0, expired: flags & 2 != 0 }
        }
        3 => ConnOp::Valid(input.byte()),
        4 => ConnOp::FrameError(input.byte()),
        5 => ConnOp::Tick(input.u16()),
        6 => ConnOp::Wait(input.u16()),
        7 => ConnOp::SessionOpened { ok: input.byte() & 1 != 0, frame: input.byte() },
        8 => ConnOp::LogicClose(input.byte()),
        9 => ConnOp::SlowConsumer,
        10 => ConnOp::Shutdown,
        11 => ConnOp::PeerClosed,
        12 => ConnOp::TransportError,
        13 => ConnOp::LinkDown,
        14 => ConnOp::LinkUp,
        _ => ConnOp::Congest,
    }
}

/// `n` bytes of an id (printable, deterministic).
fn id(prefix: u8, n: u8) -> String {
    (0..n).map(|i| char::from(b'a' + (prefix + i) % 26)).collect()
}

/// A frame logic might send with SessionOpened / Close.
fn logic_frame(k: u8) -> Vec<u8> {
    match k % 4 {
        0 => Vec::new(),
        1 => encode::login_ack(3, &encode::LoginAckParts { session_id: 1, ..Default::default() }),
        2 => encode::error(3, tern_schema::codes::USER_DELETED, "refused"),
        _ => encode::kick(KickReason::ReplacedByNewLogin, "other device"),
    }
}

fn valid_frame(k: u8) -> Vec<u8> {
    match k % 12 {
        0 => encode::pull(1, SyncKind::Message, 0, 10),
        1 if k >= 128 => encode::push_ack_group(2, "g1", 5),
        1 => encode::push_ack(2, SyncKind::Message, 5),
        2 => encode::logout(3),
        3 => message::send(4, "cm-1", "bob", &[message::ElemParts { text: "hi", ..Default::default() }], 1),
        4 => message::read_receipt(5, "bob", 9),
        5 => message::recall(6, 42, "bob"),
        6 => encode::kick(KickReason::AdminKick, "x"),
        7 => encode::pong(7, 1, 2),
        8 => encode::sync_notify(SyncKind::Profile, 1),
        9 => encode::error(8, 1, "x"),
        10 => encode::login(9, APP, "mallory", "forged", ClientType::Web, "d", "1"),
        _ => {
            // A body kind this build does not know (forwarded unchanged when open).
            let mut fbb = tern_schema::flatbuffers::FlatBufferBuilder::new();
            let body =
                tern_schema::client::Ping::create(&mut fbb, &tern_schema::client::PingArgs { client_time_ms: 1 });
            encode::finish_client(fbb, 10, Body(200), body.as_union_value())
        }
    }
}

fn env<'a>(now_ms: u64, link_up: bool, apps: &'a Apps, limits: &'a Limits, sends: &'a SendWindow) -> Env<'a> {
    Env { now_ms, unix_ms: UNIX_BASE_MS + now_ms, link_up, apps, limits, sends }
}

impl ConnHarness<'_> {
    fn step(&mut self, input: &mut Input<'_>) {
        let op = conn_op(input);
        let mut out = std::mem::take(&mut self.out);
        let was_open = self.conn.is_open();
        let env_link_up = self.link && !self.congested;
        let mut fed: Option<Vec<u8>> = None;
        let ev = match op {
            ConnOp::RawFrame(b) => {
                fed = Some(b.to_vec());
                Ev::Frame
            }
            ConnOp::Ping => {
                fed = Some(encode::ping(1, 2));
                Ev::Frame
            }
            ConnOp::Login { user_len, device_len, other_app, expired } => {
                let user = id(1, user_len % (MAX_ID_BYTES as u8 + 3));
                let device = id(2, device_len % (MAX_ID_BYTES as u8 + 3));
                let app = if other_app { APP + 1 } else { APP };
                let now_s = (UNIX_BASE_MS + self.now_ms) / 1000;
                let expiry = if expired { now_s.saturating_sub(1) } else { now_s + 3_600 };
                let sign = sig::sign(SECRET.as_bytes(), app, &user, expiry);
                fed = Some(encode::login(3, app, &user, &sign, ClientType::Android, &device, "1.0"));
                Ev::Frame
            }
            ConnOp::Valid(k) => {
                fed = Some(valid_frame(k));
                Ev::Frame
            }
            ConnOp::FrameError(k) => {
                let e = match k % 4 {
                    0 => FrameError::BadVersion(k),
                    1 => FrameError::TooLarge { len: usize::from(k) << 16, max: self.limits.max_payload },
                    2 => FrameError::TooShort(usize::from(k)),
                    _ => FrameError::Malformed("fuzz".into()),
                };
                self.conn.on_frame_error(&e, &mut out);
                Ev::FrameError
            }
            ConnOp::Tick(ms) => {
                self.now_ms += u64::from(ms);
                self.conn.on_tick(&env(self.now_ms, env_link_up, &self.apps, &self.limits, &self.sends), &mut out);
                Ev::Tick
            }
            ConnOp::Wait(ms) => {
                self.now_ms += u64::from(ms);
                self.out = out;
                return;
            }
            ConnOp::SessionOpened { ok, frame } => {
                let f = logic_frame(frame);
                let e = env(self.now_ms, env_link_up, &self.apps, &self.limits, &self.sends);
                self.conn.on_session_opened(ok, &f, &e, &mut out);
                Ev::SessionOpened { ok }
            }
            ConnOp::LogicClose(frame) => {
                self.conn.on_logic_close(&logic_frame(frame), &mut out);
                Ev::LogicClose
            }
            ConnOp::SlowConsumer => {
                self.conn.on_slow_consumer(&mut out);
                Ev::SlowConsumer
            }
            ConnOp::Shutdown => {
                self.conn.on_shutdown(&mut out);
                Ev::Shutdown
            }
            ConnOp::PeerClosed => {
                self.conn.on_peer_closed(&mut out);
                Ev::PeerClosed
            }
            ConnOp::TransportError => {
                self.conn.on_transport_error(&mut out);
                Ev::TransportError
            }
            // Like the core: the link only goes down when up, and up when down.
            ConnOp::LinkDown if self.link => {
                self.link = false;
                self.conn.on_link_down(&mut out);
                Ev::LinkDown
            }
            ConnOp::LinkUp if !self.link => {
                self.link = true;
                self.conn.on_link_up(&mut out);
                Ev::LinkUp
            }
            ConnOp::LinkDown | ConnOp::LinkUp => {
                self.out = out;
                return;
            }
            ConnOp::Congest => {
                self.congested = !self.congested;
                self.out = out;
                return;
            }
        };
        if let Some(f) = &fed {
            self.conn.on_frame(f, &env(self.now_ms, env_link_up, &self.apps, &self.limits, &self.sends), &mut out);
        }
        self.check(ev, was_open, env_link_up, fed.as_deref(), &out);
        if let Some(log) = self.log.as_deref_mut() {
            let acts: Vec<String> = out
                .iter()
                .map(|a| match a {
                    Action::Reply(b) => match frame::parse_client_framed(b, MAX_PAYLOAD_LEN) {
                        Ok(f) => format!("Reply({})", f.body_type().variant_name().unwrap_or("?")),
                        Err(_) => "Reply(?)".to_owned(),
                    },
                    other => format!("{other:?}"),
                })
                .collect();
            log.push(format!("{ev:?}: {}", acts.join(", ")));
        }
        out.clear();
        self.out = out;
    }

    /// The invariants of one event's actions (see [`conn`]).
    fn check(&mut self, ev: Ev, was_open: bool, link_up: bool, fed: Option<&[u8]>, out: &Actions) {
        macro_rules! ctx {
            () => {
                format!("event {ev:?}, actions {out:?}, model {:?}", self.m)
            };
        }
        if self.m.closed {
            assert!(out.is_empty(), "actions after Close: {}", ctx!());
            return;
        }
        // Model updates that come from logic's side of the link, not from actions.
        match ev {
            Ev::LinkDown | Ev::LogicClose => self.m.held = false,
            Ev::SessionOpened { ok: false } => self.m.held = false,
            Ev::SessionOpened { ok: true } if self.m.held && !was_open => self.m.accepted = true,
            _ => {}
        }
        let valid = fed.and_then(|f| frame::parse_client_framed(f, self.limits.max_payload).ok());
        if was_open && valid.is_some() {
            self.m.last_seen_ms = self.now_ms;
        }
        let mut forwards = 0;
        for (i, a) in out.iter().enumerate() {
            let last = i + 1 == out.len();
            match a {
                Action::Reply(b) => {
                    let f = frame::parse_client_framed(b, MAX_PAYLOAD_LEN);
                    assert!(f.is_ok(), "reply is not a valid client frame: {}", ctx!());
                    let kind = f.map(|f| f.body_type()).unwrap_or_default();
                    if kind == Body::Kick && ev != Ev::LogicClose && !matches!(ev, Ev::SessionOpened { .. }) {
                        assert!(was_open, "the gateway kicked a connection that was not logged in: {}", ctx!());
                    }
                }
                Action::Forward => {
                    forwards += 1;
                    assert!(ev == Ev::Frame && forwards == 1, "Forward outside a frame: {}", ctx!());
                    assert!(was_open && link_up, "Forward of an unauthenticated connection or down link: {}", ctx!());
                    let body = valid.as_ref().map(|f| f.body_type());
                    assert!(
                        body.is_some_and(forwardable),
                        "Forward of an invalid or gateway-handled frame: {}",
                        ctx!()
                    );
                }
                Action::Dropped => {
                    assert!(ev == Ev::Frame && was_open, "Dropped outside an open connection's frame: {}", ctx!());
                    let group_ack = valid
                        .as_ref()
                        .and_then(|f| f.body_as_push_ack())
                        .and_then(|a| a.group_id())
                        .is_some_and(|g| !g.is_empty());
                    assert!(group_ack, "Dropped a frame that is not a group PushAck: {}", ctx!());
                }
                Action::OpenSession { resume: false } => {
                    let waited = self.m.waiting && matches!(ev, Ev::LinkUp | Ev::Tick);
                    // A login held for a down link is opened when the link comes back even
                    // if the core's link buffer is over its bound: the held logins are few
                    // and already counted, unlike new frames the bound refuses.
                    let link_ok = if ev == Ev::LinkUp { self.link } else { link_up };
                    assert!(
                        (ev == Ev::Frame || waited) && link_ok && !self.m.held,
                        "unexpected SessionOpen: {}",
                        ctx!()
                    );
                    let login = valid.as_ref().and_then(|f| f.body_as_login());
                    assert!(waited || login.is_some(), "SessionOpen without a valid Login: {}", ctx!());
                    self.m.waiting = false;
                    let (u, d) = (self.conn.user_id().len(), self.conn.device_id().len());
                    assert!((1..=MAX_ID_BYTES).contains(&u) && (1..=MAX_ID_BYTES).contains(&d), "{}", ctx!());
                    assert_eq!(self.conn.app_id(), APP, "{}", ctx!());
                    self.m.held = true;
                }
                Action::OpenSession { resume: true } => {
                    assert!(ev == Ev::LinkUp && was_open && !self.m.held, "unexpected resume: {}", ctx!());
                    self.m.held = true;
                }
                Action::SessionClosed(reason) => {
                    assert!(self.m.held, "SessionClosed for a session logic does not hold: {}", ctx!());
                    self.m.held = false;
                    match out.get(i + 1) {
                        Some(Action::Close(cause)) => {
                            assert_eq!(*reason, cause.link_reason(), "{}", ctx!())
                        }
                        _ => panic!("SessionClosed not followed by Close: {}", ctx!()),
                    }
                }
                Action::Close(cause) => {
                    assert!(last, "actions after Close: {}", ctx!());
                    assert!(!self.m.held, "closed without telling logic: {}", ctx!());
                    assert!(self.cause_allowed(ev, *cause, was_open), "close cause not allowed here: {}", ctx!());
                    self.m.closed = true;
                }
            }
        }
        if !was_open && self.conn.is_open() {
            self.m.last_seen_ms = self.now_ms;
        }
        // A verified login the state machine held instead of opening or refusing.
        let login = valid.as_ref().and_then(|f| f.body_as_login()).is_some();
        if ev == Ev::Frame && login && !link_up && out.is_empty() && !self.m.closed && !was_open {
            self.m.waiting = true;
        }
        assert_eq!(self.conn.is_closed(), self.m.closed, "closed state and Close action disagree: {}", ctx!());
        if self.conn.is_open() {
            assert!(self.m.accepted, "authenticated without logic's acceptance: {}", ctx!());
        }
        // Due timeouts fire on the tick.
        if ev == Ev::Tick && !self.m.closed {
            if was_open {
                assert!(self.now_ms - self.m.last_seen_ms < self.limits.heartbeat_timeout_ms, "{}", ctx!());
            } else {
                assert!(self.now_ms < self.limits.login_timeout_ms, "login deadline missed: {}", ctx!());
            }
        }
    }

    fn cause_allowed(&self, ev: Ev, cause: CloseCause, was_open: bool) -> bool {
        match cause {
            CloseCause::Logout => ev == Ev::Frame,
            CloseCause::LoginFailed => matches!(ev, Ev::Frame | Ev::SessionOpened { ok: false }),
            CloseCause::Protocol => matches!(ev, Ev::Frame | Ev::FrameError | Ev::TransportError),
            CloseCause::ClientClosed => ev == Ev::PeerClosed,
            CloseCause::HeartbeatTimeout => {
                ev == Ev::Tick && was_open && self.now_ms - self.m.last_seen_ms >= self.limits.heartbeat_timeout_ms
            }
            CloseCause::LoginTimeout => ev == Ev::Tick && !was_open && self.now_ms >= self.limits.login_timeout_ms,
            CloseCause::Kicked => matches!(ev, Ev::LogicClose | Ev::SessionOpened { ok: false }),
            CloseCause::SlowConsumer => ev == Ev::SlowConsumer,
            CloseCause::Shutdown => ev == Ev::Shutdown,
            // The link dropped during a login, or a login's wait for it ended.
            CloseCause::LinkLost => {
                !was_open && (ev == Ev::LinkDown || (ev == Ev::Tick && self.limits.link_wait_ms > 0))
            }
            CloseCause::ServerFull => false,
        }
    }
}

#[cfg(test)]
mod tests;
