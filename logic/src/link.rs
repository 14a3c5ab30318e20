//! The logic end of the gateway link: accepts one TCP connection per gateway core,
//! admits sessions, and carries client frames both ways.
//!
//! Each link has a reader (this task, handling frames in arrival order so a session's
//! open and close can never be reordered) and a writer task that drains the link's
//! bounded queue and writes whatever has accumulated in one `write_all` (batched writes).
//! This module never encodes business payloads itself beyond login answers; upstream
//! client frames are handed to [`crate::upstream`]-style handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tern_schema::client::{self, SyncKind as WireKind};
use tern_schema::encode::{self, LoginAckParts};
use tern_schema::frame::{self, HEADER_LEN};
use tern_schema::link::{self, ConnRef};
use tern_schema::{codes, FrameError};
use tern_storage::{AppId, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::sessions::{LinkKey, Session};
use crate::upstream::SendTurn;
use crate::{now_ms, Logic};

/// Largest link frame payload (a Deliver to many connections of one core can be large).
pub const MAX_LINK_PAYLOAD: usize = 16 << 20;
/// Frames queued towards one gateway core before new ones are dropped.
const LINK_QUEUE_FRAMES: usize = 65_536;
/// Bytes the writer gathers before one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Kernel receive buffer of a link socket (see `serve_link`).
const LINK_SOCKET_BUF: usize = 256 * 1024;
/// The reader's buffer: one read takes whatever a gateway core batched meanwhile.
const READ_BUF_BYTES: usize = 256 * 1024;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad link frame: {0}")]
    Frame(#[from] FrameError),
    #[error("link protocol: {0}")]
    Protocol(String),
}

/// Accepts gateway links until the listener fails.
pub async fn accept_loop(logic: Arc<Logic>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let logic = logic.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_link(logic, stream).await {
                        tracing::info!(%peer, error = %e, "gateway link ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a gateway link failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads one frame's payload into `buf` (reusing it).
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Result<bool, LinkError> {
    let mut h = [0u8; HEADER_LEN];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let len = frame::parse_header(h, MAX_LINK_PAYLOAD)?;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

async fn write_loop(mut w: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(first) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&first);
        while out.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = w.write_all(&out).await {
            tracing::info!(error = %e, "gateway link write failed");
            return;
        }
        metrics::counter!("tern_link_bytes_out_total").increment(out.len() as u64);
    }
}

async fn serve_link(logic: Arc<Logic>, stream: TcpStream) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    // Autotuned, the receive buffer grows to megabytes: seconds of sends queued in front
    // of the reader under overload. Bounded, the gateway's own bounded buffer fills
    // instead and refuses the excess at once (80009).
    if let Err(e) = socket2::SockRef::from(&stream).set_recv_buffer_size(LINK_SOCKET_BUF) {
        tracing::debug!(error = %e, "cannot bound the link's receive buffer");
    }
    let (mut r, w) = stream.into_split();
    let mut buf = Vec::with_capacity(4096);
    if !read_frame(&mut r, &mut buf).await? {
        return Ok(());
    }
    let hello = frame::parse_link(&buf)?
        .body_as_hello()
        .ok_or_else(|| LinkError::Protocol("first link frame must be Hello".into()))?;
    if hello.version() != encode::LINK_VERSION {
        return Err(LinkError::Protocol(format!("unsupported link version {}", hello.version())));
    }
    let key: LinkKey = (hello.gateway_id(), hello.core());
    let (tx, rx) = mpsc::channel(LINK_QUEUE_FRAMES);
    let writer = tokio::spawn(write_loop(w, rx));
    let epoch = logic.sessions.register_link(key, tx.clone());
    tracing::info!(gateway = key.0, core = key.1, "gateway link up");
    metrics::gauge!("tern_links_up").increment(1.0);

    let mut r = tokio::io::BufReader::with_capacity(READ_BUF_BYTES, r);
    let mut turn = SendTurn::new(logic.config.messages.max_sends_in_flight_per_link);
    let result = async {
        loop {
            // A turn ends when the reader would wait on its socket: write what it holds.
            if !turn.is_empty() && !frame_buffered(r.buffer()) {
                turn.flush(&logic, &tx);
            }
            if !read_frame(&mut r, &mut buf).await? {
                break;
            }
            handle_frame(&logic, &tx, &mut turn, &buf).await?;
        }
        Ok(())
    }
    .await;
    turn.flush(&logic, &tx);

    let dropped = logic.sessions.unregister_link(key, epoch);
    metrics::gauge!("tern_links_up").decrement(1.0);
    tracing::info!(gateway = key.0, core = key.1, sessions = dropped, "gateway link down");
    drop(tx);
    writer.abort();
    result
}

/// Whether `buffered` holds a whole link frame (or a bad header, which the next read
/// reports without waiting).
fn frame_buffered(buffered: &[u8]) -> bool {
    let Some(h) = buffered.get(..HEADER_LEN) else { return false };
    match frame::parse_header(h.try_into().expect("HEADER_LEN bytes"), MAX_LINK_PAYLOAD) {
        Ok(len) => buffered.len() >= HEADER_LEN + len,
        Err(_) => true,
    }
}

async fn handle_frame(
    logic: &Arc<Logic>,
    tx: &mpsc::Sender<Vec<u8>>,
    turn: &mut SendTurn,
    payload: &[u8],
) -> Result<(), LinkError> {
    let f = frame::parse_link(payload)?;
    match f.body_type() {
        link::LinkBody::SessionOpen => {
            let open = f.body_as_session_open().expect("checked type");
            let conn = *open.conn().ok_or_else(|| LinkError::Protocol("SessionOpen without conn".into()))?;
            let answer = open_session(logic, tx, &open, conn).await;
            if let Some(frame) = answer {
                send(tx, frame).await;
            }
        }
        link::LinkBody::SessionClosed => {
            let closed = f.body_as_session_closed().expect("checked type");
            if let Some(conn) = closed.conn() {
                logic.messaging.forget_conn(conn);
                crate::callbacks::session_closing(logic, conn);
                if let Some((app, user)) = logic.sessions.close(conn) {
                    tracing::debug!(app = app.0, user = user.as_str(), reason = ?closed.reason(), "session closed");
                }
            }
        }
        link::LinkBody::Upstream => {
            let up = f.body_as_upstream().expect("checked type");
            let (Some(conn), Some(bytes)) = (up.conn(), up.frame()) else {
                return Err(LinkError::Protocol("Upstream without conn or frame".into()));
            };
            crate::upstream::handle(logic, tx, turn, *conn, bytes.bytes()).await;
        }
        link::LinkBody::LinkPing => {
            let ping = f.body_as_link_ping().expect("checked type");
            send(tx, encode::link_pong(ping.time_ms())).await;
        }
        link::LinkBody::LinkPong => {}
        other => {
            return Err(LinkError::Protocol(format!("unexpected link frame {other:?} from a gateway")));
        }
    }
    Ok(())
}

/// Queues a frame on this link, waiting if the queue is full (the reader then stops
/// reading: backpressure onto the gateway rather than unbounded memory).
pub(crate) async fn send(tx: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>) {
    if tx.send(frame).await.is_err() {
        tracing::debug!("link writer gone; frame dropped");
    }
}

/// Loads in the background what the send path reads for a user who just logged in (the
/// user cache entry and the friend view the blacklist check uses), so their first sends
/// and the first sends to them take the no-I/O path of the link reader.
fn warm_for_sends(logic: &Arc<Logic>, app: AppId, user: &UserId) {
    let (logic, user) = (logic.clone(), user.clone());
    tokio::spawn(async move {
        let cached = logic.user_cache.states(&*logic.store, app, std::slice::from_ref(&user)).await;
        let viewed = crate::friends::warm(&logic, app, &user).await;
        if let Err(e) = cached.and(viewed) {
            tracing::debug!(error = %e, "warming a user's send state failed; the first send loads it");
        }
    });
}

/// Admits a session; returns the link frame to answer with (None for a clean resume).
/// Admits a session. Queues its answer on `tx` itself (see the delivery lock below), or
/// returns a frame the caller must still send: a refusal, or an answer that did not fit.
async fn open_session(
    logic: &Arc<Logic>,
    tx: &mpsc::Sender<Vec<u8>>,
    open: &link::SessionOpen<'_>,
    conn: ConnRef,
) -> Option<Vec<u8>> {
    let request_id = open.request_id();
    let resume = open.resume();
    let refuse = |code: u32, msg: &str| {
        let err = encode::error(request_id, code, msg);
        if resume {
            let kick = encode::kick(client::KickReason::UserDeleted, msg);
            Some(encode::link_close(&conn, &kick))
        } else {
            Some(encode::link_session_opened(&conn, false, &err))
        }
    };
    let app = AppId(open.app_id());
    let Some(app_cfg) = logic.apps.get(app) else {
        return refuse(codes::SIGN_BAD_APP, "unknown app");
    };
    let Ok(user) = UserId::new(open.user_id().unwrap_or_default()) else {
        return refuse(codes::INVALID_FIELD, "user_id: invalid");
    };
    if app_cfg.admins.iter().any(|a| a == user.as_str()) {
        // Admin identifiers are never users (import refuses them); one imported before
        // that rule must not log in: its signature doubles as an admin credential.
        return refuse(codes::INVALID_FIELD, "user_id: an admin identifier of this app cannot log in");
    }
    let device_id = open.device_id().unwrap_or_default().to_string();
    let span = tracing::debug_span!("session_open", app = app.0, user = user.as_str());
    let _enter = span.enter();
    match logic.store.get_users(app, std::slice::from_ref(&user)).await {
        Ok(found) => match found.into_iter().next().flatten() {
            None => return refuse(codes::USER_NOT_FOUND, "no such user; import it first"),
            Some(u) if u.deleted => return refuse(codes::USER_DELETED, "user was deleted"),
            Some(u) if u.forbidden_flag => {
                return refuse(crate::messages::errors::SENDER_DISABLED, "user is disabled (forbiddenFlag)")
            }
            Some(_) => {}
        },
        Err(e) => {
            tracing::error!(error = %e, "store read failed during login");
            return refuse(codes::INTERNAL, "internal error");
        }
    }
    // Loads the user's seq state (the watermarks read below come from memory) and starts
    // a bound raise, so the device's first send does not wait for one.
    if let Err(e) = logic.seqs.prefetch(app, &user, tern_storage::SyncKind::Message).await {
        tracing::error!(error = %e, "loading seqs failed during login");
        return refuse(codes::INTERNAL, "internal error");
    }
    warm_for_sends(logic, app, &user);
    let acked = match crate::messages::device_acks(logic, app, &user, &device_id).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "loading device acks failed during login");
            return refuse(codes::INTERNAL, "internal error");
        }
    };
    let session_id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let session = Session { conn, client_type: open.client_type(), device_id, session_id, since_ms: now_ms() };
    // Admission, the watermarks the LoginAck reports and queueing the LoginAck happen
    // under the user's delivery lock, which every push of the user's messages holds: a
    // message that completes before is within `max_seqs` (the device pulls it), one that
    // completes after is pushed behind the LoginAck on this link. Otherwise a message
    // completing in between was neither reported nor pushed (the gateway drops pushes to
    // a connection whose session is not open yet) until the device's next sync.
    logic.messaging.delivery.locked(app, &user, || {
        let announce = (!resume && logic.callbacks.has_state_change(app)).then(|| session.clone());
        let admission = logic.sessions.admit(app, &user, session, app_cfg.login_model, resume);
        if let Some(s) = &announce {
            crate::callbacks::session_opened(logic, app, &user, s, &admission.kicked);
        }
        for k in &admission.kicked {
            tracing::info!(device = k.device_id, "session replaced by a new login");
            metrics::counter!("tern_kicks_total", "reason" => "replaced").increment(1);
        }
        if resume {
            return None;
        }
        let max_seqs = logic.seqs.committed_all_now(app, &user);
        let wire: Vec<(WireKind, u64)> = max_seqs.iter().map(|(k, s)| (WireKind(k.as_u8()), s.0)).collect();
        let acked: Vec<(WireKind, u64)> = acked.iter().map(|(k, s)| (WireKind(k.as_u8()), s.0)).collect();
        let ack = encode::login_ack(
            request_id,
            &LoginAckParts {
                session_id,
                server_time_ms: now_ms(),
                heartbeat_interval_ms: logic.config.heartbeat_interval_ms,
                heartbeat_timeout_ms: logic.config.heartbeat_timeout_ms,
                max_seqs: &wire,
                acked_seqs: &acked,
                max_frame_bytes: logic.config.max_frame_bytes,
            },
        );
        metrics::counter!("tern_logins_total").increment(1);
        match tx.try_send(encode::link_session_opened(&conn, true, &ack)) {
            Ok(()) => None,
            // A full link queue already drops pushes (and kicks their devices): send the
            // answer when there is room, outside the lock.
            Err(mpsc::error::TrySendError::Full(frame)) => Some(frame),
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    })
}
