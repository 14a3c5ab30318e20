//! The logic end of the gateway link: accepts one connection per gateway core, admits
//! sessions, and carries client frames both ways.
//!
//! A link arrives over TCP, a Unix-domain socket (`[link] addr = "unix:PATH"`, gateways
//! on the same host), or, in `tern all`, a socket pair made in-process for each core
//! ([`InProcessLinks`]); the same [`serve_link`] runs each.
//!
//! Each link has a reader (this task, handling frames in arrival order so a session's
//! open and close can never be reordered) and a writer task that drains the link's
//! bounded queue and writes whatever has accumulated in one `write_all` (batched writes).
//!
//! Logins are batched per read turn ([`crate::login`]): the reader collects the
//! `SessionOpen`s it finds and admits them together when it would wait on its socket,
//! when the batch is full, or before a frame that must see them admitted first (a
//! `SessionClosed`, or any frame while a resume waits: a resumed connection is live at
//! the gateway and may already send).
//! This module never encodes business payloads itself beyond login answers; upstream
//! client frames are handed to [`crate::upstream`]-style handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::path::PathBuf;
use tern_schema::encode;
use tern_schema::frame::{self, HEADER_LEN};
use tern_schema::link;
use tern_schema::FrameError;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::login::{LoginBatch, LoginRequest};
use crate::sessions::LinkKey;
use crate::upstream::SendTurn;
use crate::Logic;

/// Largest link frame payload (a Deliver to many connections of one core can be large).
pub const MAX_LINK_PAYLOAD: usize = 16 << 20;
/// Frames queued towards one gateway core before new ones are dropped.
pub(crate) const LINK_QUEUE_FRAMES: usize = 65_536;
/// Bytes the writer gathers before one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Kernel receive buffer of a link socket (see `serve_link`).
const LINK_SOCKET_BUF: usize = 256 * 1024;
/// The reader's buffer: one read takes whatever a gateway core batched meanwhile.
const READ_BUF_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad link frame: {0}")]
    Frame(#[from] FrameError),
    #[error("link protocol: {0}")]
    Protocol(String),
}

/// Prefix of a Unix-domain link address (`unix:/run/tern/link.sock`), as the gateway's
/// `link_addr` spells it too.
pub const UNIX_PREFIX: &str = "unix:";

/// Where gateway links arrive.
pub enum LinkListener {
    Tcp(TcpListener),
    Unix { listener: UnixListener, path: PathBuf },
}

impl LinkListener {
    /// Binds `host:port` or `unix:PATH`. A socket file left by a logic that is gone is
    /// replaced; one that still answers is "address in use".
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let Some(path) = addr.strip_prefix(UNIX_PREFIX) else {
            return Ok(LinkListener::Tcp(TcpListener::bind(addr).await?));
        };
        let path = PathBuf::from(path);
        if path.as_os_str().is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a Unix link address needs a path"));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another process serves this socket"));
        }
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(LinkListener::Unix { listener: UnixListener::bind(&path)?, path })
    }

    /// The bound address as a gateway's `link_addr` would name it.
    pub fn describe(&self) -> String {
        match self {
            LinkListener::Tcp(l) => l.local_addr().map_or_else(|e| format!("? ({e})"), |a| a.to_string()),
            LinkListener::Unix { path, .. } => format!("{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// Accepts gateway links until the listener fails.
pub async fn accept_loop(logic: Arc<Logic>, listener: LinkListener) {
    loop {
        let accepted = match &listener {
            LinkListener::Tcp(l) => l.accept().await.map(|(stream, peer)| {
                let logic = logic.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_tcp(logic, stream).await {
                        tracing::info!(%peer, error = %e, "gateway link ended");
                    }
                });
            }),
            LinkListener::Unix { listener, .. } => listener.accept().await.map(|(stream, _)| {
                let (r, w) = stream.into_split();
                spawn_link(logic.clone(), r, w);
            }),
        };
        if let Err(e) = accepted {
            tracing::warn!(error = %e, "accepting a gateway link failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Links of gateway cores in this process: each connect is a socket pair whose far end
/// arrives here. No listener, so nothing else on the host can connect to it.
pub struct InProcessLinks {
    tx: mpsc::UnboundedSender<std::os::unix::net::UnixStream>,
    rx: mpsc::UnboundedReceiver<std::os::unix::net::UnixStream>,
}

impl InProcessLinks {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { tx, rx }
    }

    /// What a gateway core calls to connect: returns its end of a fresh pair. Pairs
    /// made before logic serves wait in the channel (one per core's connect attempt).
    pub fn dialer(&self) -> impl Fn() -> std::io::Result<std::os::unix::net::UnixStream> + Send + Sync + 'static {
        let tx = self.tx.clone();
        move || {
            let (gateway_end, logic_end) = std::os::unix::net::UnixStream::pair()?;
            tx.send(logic_end)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "logic has stopped"))?;
            Ok(gateway_end)
        }
    }

    /// Serves every pair that arrives.
    pub async fn accept_loop(self, logic: Arc<Logic>) {
        let Self { tx, mut rx } = self;
        drop(tx);
        while let Some(stream) = rx.recv().await {
            let adopted = stream.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(stream));
            match adopted {
                Ok(stream) => {
                    let (r, w) = stream.into_split();
                    spawn_link(logic.clone(), r, w);
                }
                Err(e) => tracing::warn!(error = %e, "adopting an in-process gateway link failed"),
            }
        }
    }
}

impl Default for InProcessLinks {
    fn default() -> Self {
        Self::new()
    }
}

fn spawn_link<R, W>(logic: Arc<Logic>, r: R, w: W)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = serve_link(logic, r, w).await {
            tracing::info!(error = %e, "gateway link ended");
        }
    });
}

async fn serve_tcp(logic: Arc<Logic>, stream: tokio::net::TcpStream) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    // Autotuned, the receive buffer grows to megabytes: seconds of sends queued in front
    // of the reader under overload. Bounded, the gateway's own bounded buffer fills
    // instead and refuses the excess at once (80009). (On a Unix socket the gateway's
    // bounded send buffer is the whole queue.)
    if let Err(e) = socket2::SockRef::from(&stream).set_recv_buffer_size(LINK_SOCKET_BUF) {
        tracing::debug!(error = %e, "cannot bound the link's receive buffer");
    }
    let (r, w) = stream.into_split();
    serve_link(logic, r, w).await
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

/// Writes the link's queued frames, batched, and after each batch the link's running
/// total of answered Sends when it moved (`SendsAnswered`): the answers counted so far
/// were queued before it was read, so the gateway core never hears of an answer it
/// will not get (it may hear of one a batch early). The total is first sent at once
/// (0), so the core bounds its Sends in flight from the link's first frame on.
async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Vec<u8>>, answered: Arc<AtomicU64>) {
    let mut out = Vec::with_capacity(WRITE_BATCH_BYTES);
    encode::link_sends_answered_into(&mut out, 0);
    if let Err(e) = w.write_all(&out).await {
        tracing::info!(error = %e, "gateway link write failed");
        return;
    }
    let mut reported = 0;
    while let Some(first) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&first);
        while out.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let total = answered.load(Ordering::Relaxed);
        if total != reported {
            encode::link_sends_answered_into(&mut out, total);
            reported = total;
        }
        if let Err(e) = w.write_all(&out).await {
            tracing::info!(error = %e, "gateway link write failed");
            return;
        }
        metrics::counter!("tern_link_bytes_out_total").increment(out.len() as u64);
    }
}

async fn serve_link<R, W>(logic: Arc<Logic>, mut r: R, w: W) -> Result<(), LinkError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
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
    let mut turn = SendTurn::new(logic.config.messages.max_sends_in_flight_per_link);
    let (tx, rx) = mpsc::channel(LINK_QUEUE_FRAMES);
    let writer = tokio::spawn(write_loop(w, rx, turn.answered()));
    let epoch = logic.sessions.register_link(key, tx.clone());
    tracing::info!(gateway = key.0, core = key.1, "gateway link up");
    metrics::gauge!("tern_links_up").increment(1.0);

    let mut r = tokio::io::BufReader::with_capacity(READ_BUF_BYTES, r);
    let mut logins = LoginBatch::new();
    let result = async {
        loop {
            // A turn ends when the reader would wait on its socket: write what it holds,
            // admit the logins it collected.
            if !frame_buffered(r.buffer()) {
                if !turn.is_empty() {
                    turn.flush(&logic, &tx);
                }
                logins.run(&logic, &tx).await;
            }
            if !read_frame(&mut r, &mut buf).await? {
                break;
            }
            handle_frame(&logic, &tx, &mut turn, &mut logins, &buf).await?;
        }
        Ok(())
    }
    .await;
    turn.flush(&logic, &tx);
    logins.run(&logic, &tx).await;

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
    logins: &mut LoginBatch,
    payload: &[u8],
) -> Result<(), LinkError> {
    let f = frame::parse_link(payload)?;
    let body = f.body_type();
    if body == link::LinkBody::SessionOpen {
        let open = f.body_as_session_open().expect("checked type");
        let req =
            LoginRequest::from_open(&open).ok_or_else(|| LinkError::Protocol("SessionOpen without conn".into()))?;
        logins.push(req);
        if logins.len() >= logic.config.link.max_logins_per_batch {
            logins.run(logic, tx).await;
        }
        return Ok(());
    }
    // A close of a connection whose login waits must not overtake it; nor may frames
    // of a resumed connection overtake its resume.
    if body == link::LinkBody::SessionClosed || logins.has_resume() {
        logins.run(logic, tx).await;
    }
    match body {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unix_link_address_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.sock");
        let addr = format!("{UNIX_PREFIX}{}", path.display());

        let first = LinkListener::bind(&addr).await.unwrap();
        assert_eq!(first.describe(), addr);
        let err = LinkListener::bind(&addr).await.err().expect("a live socket must not be taken over");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

        // The listener is gone but its file stays (as after a crash): the next bind takes it.
        drop(first);
        assert!(path.exists());
        let second = LinkListener::bind(&addr).await.unwrap();
        drop(second);

        // Whatever is not a socket is never removed.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(LinkListener::bind(&addr).await.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

        assert_eq!(LinkListener::bind(UNIX_PREFIX).await.err().unwrap().kind(), std::io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn in_process_pairs_wait_until_logic_serves_them() {
        let links = InProcessLinks::new();
        let dial = links.dialer();
        let mut gateway_end = dial().unwrap();
        let InProcessLinks { tx, mut rx } = links;
        drop(tx);
        let logic_end = rx.recv().await.expect("the far end is queued for logic");
        use std::io::{Read, Write};
        gateway_end.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        (&logic_end).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Logic gone: a connect fails instead of hanging.
        drop(rx);
        assert_eq!(dial().err().unwrap().kind(), std::io::ErrorKind::ConnectionRefused);
        gateway_end.flush().unwrap();
    }
}
