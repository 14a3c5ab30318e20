//! The HTTP listener's limits: a connection cap and per-connection timeouts, so idle or
//! slow clients cannot take the process's descriptors or memory (20,000 idle
//! connections once used up the descriptors the gateway in the same process needed).
//!
//! - At most [`HttpLimits::max_connections`] connections are open; one more is accepted
//!   and closed at once (counted in `tern_http_connections_refused_total`), so the
//!   kernel backlog never holds it either. The binary derives the cap from the
//!   process's descriptor limit, less what the gateway in the same process may use and a
//!   reserve ([`connection_cap`]).
//! - A connection that has sent part of a request's headers must complete them within
//!   `header_timeout`; one with no request in flight and nothing sent is closed after
//!   `idle_timeout` (this also bounds a new connection that never sends anything). A
//!   body is bounded by the body timeout where it is read (`http::extract`).
//!
//! Each connection is one task: hyper's HTTP/1 connection, polled together with a
//! quarter-second check of the connection's [`Activity`]. This module must never keep a
//! connection open past its limits, and never leave the accept loop on an accept error
//! (a full descriptor table is waited out, not fatal).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// How often a connection checks its timeouts.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a shutdown waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// The limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl HttpLimits {
    /// The configured limits with `max_connections` as the connection cap.
    pub fn new(c: &HttpConfig, max_connections: usize) -> Self {
        Self {
            max_connections: max_connections.max(1),
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        let c = HttpConfig::default();
        Self::new(&c, c.max_connections)
    }
}

/// The connection cap: `http.max_connections`, but never more than the descriptors left
/// after `others` (what the rest of the process may open, e.g. the gateway's
/// `max_connections` in `tern all`) and `http.fd_reserve` (store files, links, logs).
pub fn connection_cap(c: &HttpConfig, others: usize) -> usize {
    let left = descriptor_limit().saturating_sub(others).saturating_sub(c.fd_reserve);
    let cap = c.max_connections.min(left);
    if cap < c.max_connections {
        tracing::warn!(
            configured = c.max_connections,
            cap,
            "http.max_connections cut to what the descriptor limit leaves (raise `ulimit -n`)"
        );
    }
    cap.max(1)
}

/// The soft limit of open descriptors of this process.
fn descriptor_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// What a connection is doing, for its timeouts. Times are milliseconds since `start`.
struct Activity {
    start: Instant,
    /// Requests dispatched and not yet answered.
    in_flight: AtomicU32,
    /// When the first byte of the next request's head arrived (`u64::MAX`: none yet).
    head_since: AtomicU64,
    /// When the connection last became idle (accepted, or a response was produced).
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_since: AtomicU64::new(u64::MAX),
            idle_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let now = self.now();
            let _ = self.head_since.compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(u64::MAX, Ordering::Relaxed);
    }

    fn end(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a limit has passed: headers too slow, or idle too long.
    fn expired(&self, limits: &HttpLimits) -> bool {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let now = self.now();
        match self.head_since.load(Ordering::Relaxed) {
            u64::MAX => {
                now.saturating_sub(self.idle_since.load(Ordering::Relaxed)) > limits.idle_timeout.as_millis() as u64
            }
            since => now.saturating_sub(since) > limits.header_timeout.as_millis() as u64,
        }
    }
}

/// A socket that reports reads to its connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` within `limits` until `stop` fires; then stops accepting,
/// lets requests in flight finish (at most [`DRAIN`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (shutdown, shutting_down) = watch::channel(false);
    let open = metrics::gauge!("tern_http_connections");
    let refused = metrics::counter!("tern_http_connections_refused_total");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.increment(1.0);
        let (app, open, shutting_down) = (app.clone(), open.clone(), shutting_down.clone());
        tokio::spawn(async move {
            connection(stream, app, limits, shutting_down).await;
            open.decrement(1.0);
            drop(permit);
        });
    }
    let _ = shutdown.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN + CHECK_EVERY * 4, permits.acquire_many(all)).await;
    Ok(())
}

/// One connection: hyper's HTTP/1 state machine, closed when a limit passes.
async fn connection(stream: TcpStream, app: Router, limits: HttpLimits, mut shutting_down: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (app, activity) = (app.clone(), activity.clone());
            async move {
                activity.begin();
                let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                activity.end();
                Ok::<_, Infallible>(resp.unwrap_or_else(|never| match never {}))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut draining: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = check.tick() => {
                if activity.expired(&limits) || draining.is_some_and(|d| d.elapsed() > DRAIN) {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            changed = shutting_down.changed(), if draining.is_none() => {
                if changed.is_err() || *shutting_down.borrow() {
                    conn.as_mut().graceful_shutdown();
                    draining = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, app, limits, stopped));
        (addr, stop)
    }

    /// Reads until the peer closes (`true`) or `within` passes (`false`).
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    fn limits(max: usize) -> HttpLimits {
        HttpLimits {
            max_connections: max,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        }
    }

    #[tokio::test]
    async fn slow_headers_and_idle_connections_are_closed() {
        let (addr, _stop) = start(limits(8)).await;
        // Half a request line, then nothing: closed after the header timeout.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HT").await.unwrap();
        assert!(closed_within(&mut slow, Duration::from_millis(1500)).await, "slow headers kept");
        // Nothing at all: closed after the idle timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(!closed_within(&mut silent, Duration::from_millis(300)).await, "closed before the idle timeout");
        assert!(closed_within(&mut silent, Duration::from_millis(1500)).await, "idle connection kept");
        // A keep-alive connection is answered, then closed once idle.
        let mut ka = TcpStream::connect(addr).await.unwrap();
        ka.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = ka.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut ka, Duration::from_millis(1500)).await, "idle keep-alive kept");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let (addr, _stop) = start(limits(2)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 256];
            assert!(s.read(&mut buf).await.unwrap() > 0);
            held.push(s);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_millis(200)).await, "a third connection was kept");
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        assert!(again.read(&mut buf).await.unwrap() > 0, "a freed slot is reused");
    }

    #[test]
    fn the_cap_leaves_the_reserve() {
        let c = HttpConfig { max_connections: usize::MAX / 2, ..HttpConfig::default() };
        let cap = connection_cap(&c, 1000);
        assert!(cap <= descriptor_limit().saturating_sub(1000 + c.fd_reserve).max(1), "{cap}");
    }
}
