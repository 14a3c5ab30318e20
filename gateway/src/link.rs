//! The link of one core to logic: connect (with exponential backoff and jitter), `Hello`,
//! re-register live sessions, then frames both ways with the 4-byte framing. Outgoing
//! frames are batched: every frame queued during a turn of the runtime goes out in one
//! write when the writer task runs next.
//!
//! The link runs over TCP, a Unix-domain socket, or a socket pair made in-process
//! ([`LinkTarget`]); everything after the connect is the same code for each.
//!
//! This module moves link bytes and reconnects; what a frame means is decided by the
//! core (`worker`). It must never block the core (the address is resolved at start),
//! never hold a `RefCell` borrow across an await, and never give up reconnecting while
//! the gateway runs.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Split, Splitable};
use monoio::net::{TcpStream, UnixStream};
use rand::Rng;
use tern_schema::frame::{self, MAX_PAYLOAD_LEN};
use tern_schema::{encode, HEADER_LEN};
use tracing::{debug, info, warn};

use crate::sys;
use crate::target::LinkTarget;
use crate::worker::Core;

/// First reconnect delay; doubles up to `link_reconnect_max_ms`.
const INITIAL_BACKOFF_MS: u64 = 100;
/// A connect that takes longer than this is abandoned and retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `LinkPing` period.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Read buffer of the link (grows for larger frames, shrinks back when idle).
const READ_BUF: usize = 64 * 1024;
/// Kernel send buffer of the link socket (see `serve`).
const LINK_SOCKET_BUF: usize = 256 * 1024;
/// A write buffer that grew past this is not kept for reuse.
const KEEP_WRITE_BUF: usize = 4 * 1024 * 1024;

/// Keeps this core linked to logic until the gateway stops.
pub(crate) async fn run(core: Rc<Core>) {
    let max_backoff = core.cfg.link_reconnect_max_ms.max(INITIAL_BACKOFF_MS);
    let mut backoff = INITIAL_BACKOFF_MS;
    let mut connected_before = false;
    let mut failures = 0u32;
    loop {
        if core.link_stop.is_set() {
            return;
        }
        let attempt = monoio::time::timeout(CONNECT_TIMEOUT, dial(&core.link));
        let connected = monoio::select! {
            r = attempt => r,
            _ = core.link_stop.wait() => return,
        };
        match connected {
            Ok(Ok(stream)) => {
                if connected_before {
                    core.stats.link_reconnects.increment(1);
                }
                connected_before = true;
                failures = 0;
                backoff = INITIAL_BACKOFF_MS;
                info!(core = core.id, addr = %core.link, "link to logic up");
                let why = match stream {
                    Dialed::Tcp(s) => {
                        let _ = s.set_nodelay(true);
                        let _ =
                            s.set_tcp_keepalive(Some(Duration::from_secs(10)), Some(Duration::from_secs(5)), Some(3));
                        serve(&core, s).await
                    }
                    Dialed::Unix(s) => serve(&core, s).await,
                };
                if core.link_stop.is_set() {
                    return;
                }
                warn!(core = core.id, reason = %why, "link to logic down; reconnecting");
            }
            failed => {
                failures += 1;
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                // One warning per outage, then quiet retries.
                if failures == 1 {
                    warn!(core = core.id, addr = %core.link, %error, "cannot reach logic; retrying");
                } else {
                    debug!(core = core.id, %error, failures, "link connect failed");
                }
            }
        }
        let delay = rand::thread_rng().gen_range(backoff / 2..=backoff);
        monoio::select! {
            _ = monoio::time::sleep(Duration::from_millis(delay)) => {},
            _ = core.link_stop.wait() => return,
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// A connected link socket.
enum Dialed {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn dial(target: &LinkTarget) -> io::Result<Dialed> {
    match target {
        LinkTarget::Tcp(addr) => TcpStream::connect_addr(*addr).await.map(Dialed::Tcp),
        LinkTarget::Unix(path) => UnixStream::connect(path).await.map(Dialed::Unix),
        LinkTarget::InProcess(dialer) => {
            let ours = dialer.dial()?;
            ours.set_nonblocking(true)?;
            UnixStream::from_std(ours).map(Dialed::Unix)
        }
    }
}

/// Runs one link connection until it fails or the gateway stops; returns why it ended.
async fn serve<S>(core: &Rc<Core>, stream: S) -> String
where
    S: Split + AsyncReadRent + AsyncWriteRent + AsRawFd + 'static,
{
    let fd = stream.as_raw_fd();
    // The kernel's send buffer is a queue in front of logic too: autotuned it grows to
    // megabytes, seconds of sends under overload. Bounded, a slow logic fills the
    // core's own buffer instead, where LINK_BUF_CAP refuses the excess at once.
    if let Err(e) = sys::set_send_buffer(fd, LINK_SOCKET_BUF) {
        debug!(core = core.id, error = %e, "cannot bound the link's send buffer");
    }
    let (rd, wr) = stream.into_split();
    core.link_connected();
    let writer = monoio::spawn(write_loop(core.clone(), wr));
    let why = monoio::select! {
        r = read_loop(core, rd) => match r {
            Ok(()) => "closed by logic".to_owned(),
            Err(e) => e.to_string(),
        },
        _ = ping_loop(core) => "ping loop ended".to_owned(),
        _ = core.link_stop.wait() => "gateway stopping".to_owned(),
    };
    core.link_lost();
    // Unblock a write in flight and wake an idle writer: both see the link down and stop.
    sys::shutdown_both(fd);
    core.link_wake.notify();
    writer.await;
    why
}

async fn read_loop<S: AsyncReadRent>(core: &Rc<Core>, mut rd: OwnedReadHalf<S>) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    loop {
        if buf.capacity() - buf.len() < READ_BUF / 4 {
            buf.reserve(READ_BUF);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        if res? == 0 {
            return Ok(());
        }
        let mut off = 0;
        loop {
            match frame::split_frame(&buf[off..], MAX_PAYLOAD_LEN) {
                Ok(Some(total)) => {
                    core.on_link_frame(&buf[off + HEADER_LEN..off + total]);
                    off += total;
                }
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        // Everything this batch queued for clients goes out now, one write per client.
        core.flush_dirty();
        buf.drain(..off);
        // Logic may keep the socket readable for long: let the link writer and the
        // connections run between batches.
        crate::sync::yield_now().await;
        if let Some(h) = buf.first_chunk::<HEADER_LEN>() {
            if let Ok(len) = frame::parse_header(*h, MAX_PAYLOAD_LEN) {
                buf.reserve((HEADER_LEN + len).saturating_sub(buf.len()));
            }
        } else if buf.capacity() > 4 * READ_BUF {
            buf = Vec::with_capacity(READ_BUF);
        }
    }
}

async fn write_loop<S: AsyncWriteRent>(core: Rc<Core>, mut wr: OwnedWriteHalf<S>) {
    let mut spare = Vec::new();
    loop {
        core.link_wake.wait().await;
        loop {
            let Some(buf) = core.take_link_out(spare) else { return };
            if buf.is_empty() {
                spare = buf;
                break;
            }
            let (res, mut buf) = wr.write_all(buf).await;
            core.link_write_done();
            if let Err(e) = res {
                debug!(core = core.id, error = %e, "link write failed");
                return;
            }
            buf.clear();
            spare = if buf.capacity() > KEEP_WRITE_BUF { Vec::new() } else { buf };
        }
    }
}

/// `LinkPing` every few seconds. Liveness itself is left to TCP keepalive and write
/// errors, so a logic build that does not answer pings does not flap the link.
async fn ping_loop(core: &Rc<Core>) {
    loop {
        monoio::time::sleep(PING_INTERVAL).await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        core.push_link_frame(&encode::link_ping(now));
    }
}
