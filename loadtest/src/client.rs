//! An async tokio client for Tern's long connection, over plain TCP or WebSocket.
//!
//! Used by `tern client`, by the project's end-to-end tests and by the load generator,
//! so it stays small: one socket, one read buffer, no background task and no hidden
//! heartbeat (callers send Pings themselves, at the interval the LoginAck names).
//! On TCP frames are length-prefixed by the 4-byte header; on WebSocket each Tern frame
//! (header included) is one binary message. Received frames are verified once, when
//! they are cut from the stream, and handed out as [`OwnedFrame`]s.
//!
//! [`Client::recv`] is cancel-safe (it may sit in a `select!` next to a timer): a frame
//! is either fully buffered or not consumed at all. This module never panics on what the
//! server sends; every problem is a [`ClientError`].

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tern_schema::client::{self, Body, ClientType, KickReason, SyncKind};
use tern_schema::frame::{parse_client, split_frame, HEADER_LEN, MAX_PAYLOAD_LEN};
use tern_schema::{encode, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame, Message};
use tokio_tungstenite::WebSocketStream;

/// Largest payload this client accepts from a server: everything the header can express
/// (16 MiB − 1). The server's own limit is what protects the server; the client only
/// needs to stop a corrupt header from making it buffer without end.
pub const MAX_RECV_PAYLOAD: usize = MAX_PAYLOAD_LEN;

/// How long [`Client::login`] waits for the LoginAck (or the rejection). Generous:
/// a loaded server in a load test may be slow, and a hung login must still end.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The client version string sent in Login.
pub const CLIENT_VERSION: &str = concat!("tern-loadtest/", env!("CARGO_PKG_VERSION"));

/// Read granularity: what one TCP read may add to the buffer. Small, because the load
/// generator holds very many connections and most frames are tiny.
const READ_CHUNK: usize = 4096;

/// Which listener to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Length-prefixed frames on plain TCP (default port 9000).
    Tcp,
    /// One binary WebSocket message per frame (default port 19000).
    Ws,
}

impl Transport {
    /// The server's default client address for this transport (design §10).
    pub fn default_addr(self) -> &'static str {
        match self {
            Transport::Tcp => "127.0.0.1:9000",
            Transport::Ws => "127.0.0.1:19000",
        }
    }
}

/// A transport name other than `tcp` or `ws`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (expected \"tcp\" or \"ws\")")]
pub struct ParseTransportError(String);

impl FromStr for Transport {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Transport::Tcp),
            "ws" => Ok(Transport::Ws),
            _ => Err(ParseTransportError(s.to_owned())),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        })
    }
}

/// Everything that can go wrong on the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket error: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// The server ended the connection: EOF, reset, or a WebSocket close (whose code and
    /// reason, if any, are in `reason`).
    #[error("connection closed{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    /// The server sent bytes that are not a valid frame. On TCP a bad header leaves the
    /// stream unusable; a bad payload only loses that frame.
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    #[error("timed out")]
    Timeout,
    /// The server broke the protocol in a way that is not a framing error.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A received, verified client frame that owns its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// The whole frame, header included.
    bytes: Bytes,
    body_type: Body,
    request_id: u32,
}

impl OwnedFrame {
    /// Verifies a whole frame (header + payload, nothing more) and takes ownership of it.
    pub fn parse(bytes: Bytes) -> Result<Self, FrameError> {
        match split_frame(&bytes, MAX_RECV_PAYLOAD)? {
            Some(total) if total == bytes.len() => {}
            _ => return Err(FrameError::Malformed("frame length does not match the header".into())),
        }
        let frame = parse_client(&bytes[HEADER_LEN..])?;
        let (body_type, request_id) = (frame.body_type(), frame.request_id());
        Ok(OwnedFrame { bytes, body_type, request_id })
    }

    /// The frame's FlatBuffers view.
    pub fn frame(&self) -> client::Frame<'_> {
        // SAFETY: `bytes` is immutable and its payload passed `parse_client` (the full
        // FlatBuffers verifier) in `parse`, the only constructor.
        unsafe { tern_schema::flatbuffers::root_unchecked::<client::Frame>(&self.bytes[HEADER_LEN..]) }
    }

    pub fn body_type(&self) -> Body {
        self.body_type
    }

    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// The whole frame as received (header included).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// One line describing the frame (see [`crate::describe`]).
    pub fn describe(&self) -> String {
        crate::describe::describe(&self.frame())
    }
}

impl fmt::Debug for OwnedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OwnedFrame").field(&self.describe()).finish()
    }
}

/// The read side of a byte stream carrying frames: append what the socket gave, take
/// out whole frames. Sans-IO, so the splitting is tested without sockets.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: BytesMut,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole frame (after [`Self::next_frame`] said `None`).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Cuts the next whole frame off the front, if one is there.
    ///
    /// A bad header is returned as an error every time it is asked (the stream cannot be
    /// resynchronised); a well-framed but malformed payload is consumed and reported
    /// once, and the frames after it are still readable.
    pub fn next_frame(&mut self) -> Result<Option<OwnedFrame>, FrameError> {
        let Some(total) = split_frame(&self.buf, MAX_RECV_PAYLOAD)? else {
            return Ok(None);
        };
        let bytes = self.buf.split_to(total).freeze();
        OwnedFrame::parse(bytes).map(Some)
    }

    /// Reads once from `r` into the buffer; returns the number of bytes read (0 = EOF).
    async fn read_from<R: tokio::io::AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        r.read_buf(&mut self.buf).await
    }
}

/// What `Client::login` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub app_id: u32,
    pub user_id: String,
    pub user_sign: String,
    pub client_type: ClientType,
    pub device_id: String,
    pub request_id: u32,
}

/// The useful parts of a LoginAck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAckInfo {
    pub session_id: u64,
    pub server_time_ms: u64,
    pub heartbeat_interval_ms: u32,
    pub heartbeat_timeout_ms: u32,
    pub max_seqs: Vec<(SyncKind, u64)>,
    pub acked_seqs: Vec<(SyncKind, u64)>,
    pub max_frame_bytes: u32,
    /// The LoginAck frame itself, for logging.
    pub frame: OwnedFrame,
}

impl LoginAckInfo {
    fn from_frame(frame: OwnedFrame) -> Option<Self> {
        let f = frame.frame();
        let ack = f.body_as_login_ack()?;
        let pairs = |v: Option<tern_schema::flatbuffers::Vector<'_, client::KindSeq>>| -> Vec<(SyncKind, u64)> {
            v.iter().flatten().map(|ks| (ks.kind(), ks.seq())).collect()
        };
        let info = LoginAckInfo {
            session_id: ack.session_id(),
            server_time_ms: ack.server_time_ms(),
            heartbeat_interval_ms: ack.heartbeat_interval_ms(),
            heartbeat_timeout_ms: ack.heartbeat_timeout_ms(),
            max_seqs: pairs(ack.max_seqs()),
            acked_seqs: pairs(ack.acked_seqs()),
            max_frame_bytes: ack.max_frame_bytes(),
            frame: frame.clone(),
        };
        Some(info)
    }

    /// The server's committed max seq of `kind` (0 if it sent none).
    pub fn max_seq(&self, kind: SyncKind) -> u64 {
        lookup(&self.max_seqs, kind)
    }

    /// What the server believes this device acknowledged of `kind` (0 if it sent none).
    pub fn acked_seq(&self, kind: SyncKind) -> u64 {
        lookup(&self.acked_seqs, kind)
    }
}

fn lookup(pairs: &[(SyncKind, u64)], kind: SyncKind) -> u64 {
    pairs.iter().find(|(k, _)| *k == kind).map_or(0, |(_, s)| *s)
}

/// How the server answered a Login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok(LoginAckInfo),
    /// The server answered with an Error (it usually closes the connection next).
    Rejected {
        code: u32,
        message: String,
    },
    /// The server sent a Kick instead of an answer (e.g. it is shutting down).
    Kicked {
        reason: KickReason,
        message: String,
    },
}

enum Conn {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// One long connection to a Tern gateway.
pub struct Client {
    conn: Conn,
    transport: Transport,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    read: FrameBuffer,
    /// Frames received while waiting for something else (during `login`, or skipped by
    /// a failed `recv_until`); `recv` hands them out first, in arrival order.
    pending: VecDeque<OwnedFrame>,
    /// Set once the server has closed; every later `recv` reports the same close.
    closed: Option<Option<String>>,
    next_request_id: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .field("local_addr", &self.local_addr)
            .field("peer_addr", &self.peer_addr)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` (`host:port`); for WebSocket, upgrades on `ws://{addr}/`.
    pub async fn connect(transport: Transport, addr: &str) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        Self::handshake(transport, addr, stream).await
    }

    /// Like [`Client::connect`], with the source address bound to `local_ip` (port chosen
    /// by the kernel). The load generator spreads connections over 127.0.0.0/8 sources
    /// to get past one source address's ephemeral port range.
    pub async fn connect_from(transport: Transport, addr: &str, local_ip: IpAddr) -> Result<Client, ClientError> {
        let mut last_err = None;
        for target in tokio::net::lookup_host(addr).await? {
            if target.is_ipv4() != local_ip.is_ipv4() {
                continue;
            }
            let socket = if local_ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(local_ip, 0))?;
            match socket.connect(target).await {
                Ok(stream) => return Self::handshake(transport, addr, stream).await,
                Err(e) => last_err = Some(e),
            }
        }
        Err(ClientError::Io(last_err.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("{addr} has no address of the same family as {local_ip}"),
            )
        })))
    }

    /// Wraps a stream the caller connected itself (the load generator binds its source
    /// addresses with options [`Client::connect_from`] does not set); for WebSocket,
    /// upgrades on `ws://{addr}/`.
    pub async fn from_stream(transport: Transport, addr: &str, stream: TcpStream) -> Result<Client, ClientError> {
        Self::handshake(transport, addr, stream).await
    }

    async fn handshake(transport: Transport, addr: &str, stream: TcpStream) -> Result<Client, ClientError> {
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        let peer_addr = stream.peer_addr()?;
        let conn = match transport {
            Transport::Tcp => Conn::Tcp(stream),
            Transport::Ws => {
                let (ws, _response) =
                    tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.map_err(Box::new)?;
                Conn::Ws(Box::new(ws))
            }
        };
        tracing::debug!(%transport, %local_addr, %peer_addr, "connected");
        Ok(Client {
            conn,
            transport,
            local_addr,
            peer_addr,
            read: FrameBuffer::new(),
            pending: VecDeque::new(),
            closed: None,
            next_request_id: 1,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// A fresh non-zero request id (0 means "unsolicited" on the wire).
    pub fn next_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.checked_add(1).unwrap_or(1);
        id
    }

    /// `Some(reason)` once the server has closed the connection (`reason` as in
    /// [`ClientError::Closed`]).
    pub fn closed(&self) -> Option<Option<&str>> {
        self.closed.as_ref().map(Option::as_deref)
    }

    /// Sends one whole frame (as built by `tern_schema::encode`, header included).
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let res = match &mut self.conn {
            Conn::Tcp(s) => s.write_all(frame).await.map_err(ClientError::from),
            Conn::Ws(ws) => ws.send(Message::Binary(Bytes::copy_from_slice(frame))).await.map_err(ws_error),
        };
        res.map_err(|e| self.note_close(e))
    }

    /// Receives the next frame. Cancel-safe.
    pub async fn recv(&mut self) -> Result<OwnedFrame, ClientError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        if let Some(reason) = &self.closed {
            return Err(ClientError::Closed { reason: reason.clone() });
        }
        let res = self.recv_from_socket().await;
        res.map_err(|e| self.note_close(e))
    }

    async fn recv_from_socket(&mut self) -> Result<OwnedFrame, ClientError> {
        match &mut self.conn {
            Conn::Tcp(s) => loop {
                if let Some(f) = self.read.next_frame()? {
                    return Ok(f);
                }
                if self.read.read_from(s).await? == 0 {
                    let reason = match self.read.pending() {
                        0 => None,
                        n => Some(format!("EOF inside a frame ({n} bytes of it received)")),
                    };
                    return Err(ClientError::Closed { reason });
                }
            },
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None => return Err(ClientError::Closed { reason: None }),
                    Some(Err(e)) => return Err(ws_error(e)),
                    Some(Ok(Message::Binary(b))) => return Ok(OwnedFrame::parse(b)?),
                    Some(Ok(Message::Close(cf))) => {
                        let reason = cf.map(close_reason);
                        // Recorded before the flush below, which may be cancelled.
                        self.closed = Some(reason.clone());
                        // tungstenite queued the close reply; send it now, or a server
                        // waiting for the close handshake waits until we drop the socket.
                        let _ = ws.flush().await;
                        return Err(ClientError::Closed { reason });
                    }
                    Some(Ok(Message::Text(t))) => {
                        return Err(ClientError::Protocol(format!("text WebSocket message ({} bytes)", t.len())))
                    }
                    // Pings are answered by tungstenite itself; pongs and raw frames carry nothing for us.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                }
            },
        }
    }

    /// Remembers a close so later calls report it too.
    fn note_close(&mut self, e: ClientError) -> ClientError {
        if let ClientError::Closed { reason } = &e {
            if self.closed.is_none() {
                tracing::debug!(?reason, "server closed the connection");
                self.closed = Some(reason.clone());
            }
            return ClientError::Closed { reason: self.closed.clone().flatten() };
        }
        e
    }

    /// Receives the next frame if one arrives within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedFrame>, ClientError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(res) => res.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Receives until a frame satisfies `pred`, within `timeout` overall. Returns that
    /// frame and the frames skipped on the way, in order. On any error (including
    /// [`ClientError::Timeout`]) the skipped frames are put back, so the next `recv`
    /// returns them first and nothing is lost.
    pub async fn recv_until<F>(
        &mut self,
        mut pred: F,
        timeout: Duration,
    ) -> Result<(OwnedFrame, Vec<OwnedFrame>), ClientError>
    where
        F: FnMut(&OwnedFrame) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let res = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(res) => res,
                Err(_) => Err(ClientError::Timeout),
            };
            match res {
                Ok(f) if pred(&f) => return Ok((f, skipped)),
                Ok(f) => skipped.push(f),
                Err(e) => {
                    for f in skipped.into_iter().rev() {
                        self.pending.push_front(f);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Waits for the answer to request `request_id` (any body type), as `recv_until`.
    pub async fn recv_reply(
        &mut self,
        request_id: u32,
        timeout: Duration,
    ) -> Result<(OwnedFrame, Vec<OwnedFrame>), ClientError> {
        self.recv_until(|f| f.request_id() == request_id, timeout).await
    }

    /// Logs in and waits (up to [`LOGIN_TIMEOUT`]) for the answer: a LoginAck, an Error
    /// answering the Login (or unsolicited, request id 0), or a Kick. Other frames that
    /// arrive first are kept for later `recv` calls. A close before the answer is
    /// `Err(ClientError::Closed)`.
    pub async fn login(&mut self, req: &LoginRequest) -> Result<LoginOutcome, ClientError> {
        let frame = encode::login(
            req.request_id,
            req.app_id,
            &req.user_id,
            &req.user_sign,
            req.client_type,
            &req.device_id,
            CLIENT_VERSION,
        );
        self.send(&frame).await?;
        let rid = req.request_id;
        let is_answer = |f: &OwnedFrame| match f.body_type() {
            Body::LoginAck => f.request_id() == rid,
            Body::Error => f.request_id() == rid || f.request_id() == 0,
            Body::Kick => true,
            _ => false,
        };
        let (answer, skipped) = self.recv_until(is_answer, LOGIN_TIMEOUT).await?;
        if !skipped.is_empty() {
            tracing::debug!(count = skipped.len(), "frames arrived before the login answer");
        }
        for f in skipped.into_iter().rev() {
            self.pending.push_front(f);
        }
        let f = answer.frame();
        let outcome = match answer.body_type() {
            Body::Error => {
                let e = f.body_as_error().ok_or_else(|| ClientError::Protocol("Error frame without a body".into()))?;
                LoginOutcome::Rejected { code: e.code(), message: e.message().unwrap_or("").to_owned() }
            }
            Body::Kick => {
                let k = f.body_as_kick().ok_or_else(|| ClientError::Protocol("Kick frame without a body".into()))?;
                LoginOutcome::Kicked { reason: k.reason(), message: k.message().unwrap_or("").to_owned() }
            }
            _ => LoginOutcome::Ok(
                LoginAckInfo::from_frame(answer.clone())
                    .ok_or_else(|| ClientError::Protocol("LoginAck frame without a body".into()))?,
            ),
        };
        Ok(outcome)
    }

    /// Closes our side: a WebSocket close handshake, or a TCP write shutdown. Errors are
    /// returned but the connection is unusable afterwards either way.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        match &mut self.conn {
            Conn::Tcp(s) => s.shutdown().await.map_err(ClientError::from),
            // Named explicitly: with futures' `alloc` feature on, `SinkExt::close` on the Box
            // would otherwise shadow the inherent method.
            Conn::Ws(ws) => match WebSocketStream::close(&mut **ws, None).await {
                Ok(()) => Ok(()),
                Err(e) => match ws_error(e) {
                    ClientError::Closed { .. } => Ok(()),
                    e => Err(e),
                },
            },
        }
    }
}

/// Folds the ways a WebSocket can end into `Closed`.
fn ws_error(e: tungstenite::Error) -> ClientError {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ClientError::Closed { reason: None }
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ClientError::Closed { reason: Some("closed without a WebSocket close handshake".into()) }
        }
        tungstenite::Error::Io(e) => io_error(e),
        e => ClientError::WebSocket(Box::new(e)),
    }
}

/// A reset is the server ending the connection, as far as a client is concerned.
fn io_error(e: std::io::Error) -> ClientError {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            ClientError::Closed { reason: Some(format!("connection {e}")) }
        }
        _ => ClientError::Io(e),
    }
}

fn close_reason(cf: CloseFrame) -> String {
    let code = u16::from(cf.code);
    if cf.reason.is_empty() {
        format!("{code}")
    } else {
        format!("{code} {}", cf.reason.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_schema::encode::LoginAckParts;

    /// Feeds `chunks` one after another and collects the descriptions of every whole
    /// frame as it appears (`|` marks a chunk boundary in `expect`).
    #[track_caller]
    fn check(chunks: &[&[u8]], expect: &[&str]) {
        let mut fb = FrameBuffer::new();
        let mut got = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                got.push("|".to_owned());
            }
            fb.extend(c);
            loop {
                match fb.next_frame() {
                    Ok(Some(f)) => got.push(f.describe()),
                    Ok(None) => break,
                    Err(e) => {
                        got.push(format!("error: {e}"));
                        break;
                    }
                }
            }
        }
        assert_eq!(got, expect);
    }

    fn cat(frames: &[&[u8]]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn several_frames_in_one_chunk() {
        let buf = cat(&[&encode::ping(1, 10), &encode::sync_notify(SyncKind::Message, 3), &encode::logout(2)]);
        check(&[&buf], &["Ping t=10 req=1", "SyncNotify kind=Message seq=3", "Logout req=2"]);
    }

    #[test]
    fn one_frame_across_three_chunks() {
        let f = encode::error(7, 60004, "signature has expired");
        let (a, rest) = f.split_at(2); // inside the header
        let (b, c) = rest.split_at(10);
        check(&[a, b, c], &["|", "|", r#"Error code=60004 "signature has expired" req=7"#]);
    }

    #[test]
    fn frame_boundary_inside_a_chunk() {
        let first = encode::ping(1, 10);
        let second = encode::pong(1, 10, 11);
        let all = cat(&[&first, &second]);
        let cut = first.len() + 3;
        check(&[&all[..cut], &all[cut..]], &["Ping t=10 req=1", "|", "Pong client_t=10 server_t=11 req=1"]);
    }

    #[test]
    fn bad_header_is_an_error_and_stays_one() {
        check(&[&[12, 0, 0, 2, 0, 0, 0, 0]], &["error: unsupported protocol version 2 (this server speaks 1)"]);
        let mut fb = FrameBuffer::new();
        fb.extend(&[3, 0, 0, 1]);
        assert_eq!(fb.next_frame(), Err(FrameError::TooShort(3)));
        assert_eq!(fb.next_frame(), Err(FrameError::TooShort(3)));
    }

    #[test]
    fn malformed_payload_is_skipped_and_the_stream_goes_on() {
        let mut garbage = tern_schema::frame::header(8).to_vec();
        garbage.extend_from_slice(&[0xff; 8]);
        let buf = cat(&[&garbage, &encode::ping(1, 5)]);
        let mut fb = FrameBuffer::new();
        fb.extend(&buf);
        assert!(matches!(fb.next_frame(), Err(FrameError::Malformed(_))));
        assert_eq!(fb.next_frame().map(|f| f.map(|f| f.describe())), Ok(Some("Ping t=5 req=1".to_owned())));
        assert_eq!(fb.next_frame(), Ok(None));
        assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn owned_frame_parse_requires_exact_length() {
        let f = encode::ping(1, 2);
        assert!(OwnedFrame::parse(Bytes::from(f.clone())).is_ok());
        assert!(OwnedFrame::parse(Bytes::copy_from_slice(&f[..f.len() - 1])).is_err());
        let two = cat(&[&f, &f]);
        assert!(OwnedFrame::parse(Bytes::from(two)).is_err());
    }

    #[test]
    fn login_ack_info_reads_every_field() {
        let f = encode::login_ack(
            4,
            &LoginAckParts {
                session_id: 9,
                server_time_ms: 1,
                heartbeat_interval_ms: 2,
                heartbeat_timeout_ms: 3,
                max_seqs: &[(SyncKind::Message, 7)],
                acked_seqs: &[(SyncKind::Message, 5)],
                max_frame_bytes: 4,
            },
        );
        let info = LoginAckInfo::from_frame(OwnedFrame::parse(Bytes::from(f)).unwrap()).unwrap();
        assert_eq!(
            (info.session_id, info.server_time_ms, info.heartbeat_interval_ms, info.heartbeat_timeout_ms),
            (9, 1, 2, 3)
        );
        assert_eq!((info.max_seq(SyncKind::Message), info.acked_seq(SyncKind::Message)), (7, 5));
        assert_eq!((info.max_seq(SyncKind::Profile), info.max_frame_bytes), (0, 4));
    }

    #[test]
    fn transport_names() {
        assert_eq!("tcp".parse::<Transport>(), Ok(Transport::Tcp));
        assert_eq!("WS".parse::<Transport>(), Ok(Transport::Ws));
        assert!("udp".parse::<Transport>().is_err());
        assert_eq!(Transport::Ws.to_string(), "ws");
    }
}
