//! One core of the gateway: a monoio runtime on its own OS thread that owns its
//! listeners, its connection table, its link to logic and its timers.
//!
//! Reading the code top-down follows the events of a core: accept (admission, per-core
//! cap), readable connection (scratch-buffer reads, framing, the conn state machine,
//! actions), writable connection, link frames (SessionOpened, Deliver, Close), the
//! periodic sweep (login deadlines, heartbeats, lingering closes) and shutdown.
//!
//! Parked connections (design.md §5): a connection has no task of its own. Its socket
//! sits in the core's level-triggered epoll set ([`sys::Epoll`]), keyed by its table
//! reference (slot, generation); one task per core (`io_loop`) awaits the set's own
//! descriptor through the runtime (an io_uring poll, or monoio's epoll) and handles
//! every ready socket in place: readable → reads into the per-core scratch buffer and
//! runs the state machine; writable → flushes the queue. A connection with nothing to
//! read, nothing queued and no partial frame is *parked*: its table entry (`Entry`: the
//! descriptor, identity, state-machine fields and deadlines as plain integers) and its
//! user/device id strings are all it holds — no task, no waker, no buffer. Only a
//! partial frame is copied into the connection's own `inbuf` (freed once consumed), and
//! only a queue the socket refuses keeps `EPOLLOUT` armed until it drains. A push from
//! logic or inbound bytes are handled on the spot; nothing is woken per message.
//!
//! Timers: one periodic sweep over the table (every quarter of the shortest timeout,
//! at most 1 s) instead of a timer wheel. Deadlines here are seconds long and tolerate
//! up to one period of lateness; the sweep costs no memory per connection (two
//! timestamps already in `Conn`) and a linear pass over a contiguous slab, which is
//! microseconds per thousand connections.
//!
//! Invariants: no locks and no cross-core hops (state is `Rc<RefCell<..>>` owned by this
//! thread; the only shared things are the connection counter and the stop socket); a
//! `RefCell` borrow is never held across an `.await`; nothing here blocks the thread or
//! panics on network input.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use std::os::fd::OwnedFd;

use monoio::net::TcpStream;
use tern_schema::link::{self, ConnRef, LinkBody};
use tern_schema::{codes, encode, frame};
use tracing::{debug, field, warn};

use crate::config::GatewayConfig;
use crate::conn::{Action, Actions, Apps, CloseCause, Conn, Env, Limits};
use crate::outq::{OutFrame, OutQueue, RingPool};
use crate::slab::Slab;
use crate::stats::Stats;
use crate::sync::{Latch, Notify};
use crate::target::LinkTarget;
use crate::window::SendWindow;
use crate::wire::{Framing, Step, Wire};
use crate::{link as linkio, sys, ws};

/// Per-core receive buffer shared by all connections of the core.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Reads per readiness wake-up before yielding to other connections (fairness).
const READS_PER_WAKE: usize = 4;
/// How long a closing connection may take to read our last frames and close its side
/// before it is cut off.
const LINGER_MS: u64 = 2_000;
/// Outgoing link bytes buffered while logic is slow; past it upstream frames are
/// refused at once with SERVICE_UNAVAILABLE (80009). It bounds latency, not only
/// memory: 1 MiB is ~7,000 sends, a few hundred milliseconds of work for logic; more
/// would only make the sends behind it wait seconds for an answer. (It was 32 MiB:
/// under overload sends queued here for 2 s and more.)
pub(crate) const LINK_BUF_CAP: usize = 1024 * 1024;
/// Whole shutdown budget of a core (the handle's `shutdown` is bounded by it).
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(2_500);
/// io_uring submission queue size. Connections need no submissions of their own (they
/// live in the core's epoll set); the link, timers and refusals need a few.
const URING_ENTRIES: u32 = 256;
/// Readiness events taken from the epoll set per turn; between turns the link and the
/// timers run, so this bounds how long they wait behind connection I/O.
const EVENTS_PER_TURN: usize = 256;
/// Connections accepted per listener readiness before other events get their turn.
const ACCEPTS_PER_WAKE: usize = 64;
/// After an accept error (out of descriptors or memory) the listener rests this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Epoll keys of the listeners. Connection keys are `slot << 32 | generation`, and slot
/// `u32::MAX` is never reached (a core's table is bounded by its connection cap).
const KEY_TCP_LISTENER: u64 = u64::MAX;
const KEY_WS_LISTENER: u64 = u64::MAX - 1;

fn conn_key((slot, generation): (u32, u32)) -> u64 {
    u64::from(slot) << 32 | u64::from(generation)
}

/// What a core thread is started with.
pub(crate) struct Boot {
    pub core: u16,
    pub cores: u16,
    pub gateway_id: u32,
    pub cfg: Arc<GatewayConfig>,
    pub link: LinkTarget,
    pub apps: Arc<Apps>,
    pub tcp: std::net::TcpListener,
    pub ws: std::net::TcpListener,
    pub count: Arc<[crate::PaddedCount]>,
    pub stop: std::os::unix::net::UnixStream,
    /// Pin this core's thread to that CPU (`pin_cores`).
    pub cpu: Option<usize>,
}

enum AnyRuntime {
    Uring(monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>),
    Legacy(monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>),
}

/// io_uring when the kernel has what monoio needs (and `MONOIO_FORCE_LEGACY_DRIVER` is
/// unset) and the ring can be created; epoll otherwise.
fn build_runtime() -> io::Result<AnyRuntime> {
    if monoio::utils::detect_uring() {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(URING_ENTRIES).enable_timer().build()
        {
            Ok(rt) => return Ok(AnyRuntime::Uring(rt)),
            Err(e) => warn!(error = %e, "io_uring runtime failed to start; using epoll"),
        }
    }
    Ok(AnyRuntime::Legacy(monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()?))
}

/// Body of a core thread: reports startup on `ready`, then runs until told to stop.
pub(crate) fn run(boot: Boot, ready: std::sync::mpsc::Sender<io::Result<()>>) {
    if let Some(cpu) = boot.cpu {
        // Before the runtime exists, so its ring and buffers are allocated on this CPU's
        // memory node. A failure (e.g. a CPU set changed meanwhile) only costs locality.
        match sys::pin_current_thread(cpu) {
            Ok(()) => debug!(core = boot.core, cpu, "core thread pinned"),
            Err(e) => warn!(core = boot.core, cpu, error = %e, "cannot pin core thread; running unpinned"),
        }
    }
    let rt = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    match rt {
        AnyRuntime::Uring(mut rt) => rt.block_on(core_main(boot, true, ready)),
        AnyRuntime::Legacy(mut rt) => rt.block_on(core_main(boot, false, ready)),
    }
}

async fn core_main(boot: Boot, uring: bool, ready: std::sync::mpsc::Sender<io::Result<()>>) {
    let setup = || -> io::Result<_> {
        // The listeners are accepted from by this core itself when its epoll set says
        // so: they must not block.
        boot.tcp.set_nonblocking(true)?;
        boot.ws.set_nonblocking(true)?;
        let listeners = [boot.tcp.try_clone()?, boot.ws.try_clone()?];
        boot.stop.set_nonblocking(true)?;
        let stop = monoio::net::UnixStream::from_std(boot.stop.try_clone()?)?;
        let ep = sys::Epoll::new()?;
        ep.add(listeners[0].as_raw_fd(), sys::EV_READ, KEY_TCP_LISTENER)?;
        ep.add(listeners[1].as_raw_fd(), sys::EV_READ, KEY_WS_LISTENER)?;
        // The runtime only ever polls this descriptor for readability (an epoll set is
        // readable while it holds a ready event); `UnixStream` is merely monoio's
        // handle for "a descriptor to poll", no socket call is ever made on it.
        let watch = monoio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(ep.watch_fd()?))?;
        Ok((listeners, stop, ep, watch))
    };
    let (listeners, stop, ep, watch) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let core = Rc::new(Core::new(&boot, ep, listeners));
    drop(boot);
    debug!(core = core.id, uring, "core started");
    let _ = ready.send(Ok(()));

    monoio::spawn(io_loop(core.clone(), watch));
    monoio::spawn(sweeper(core.clone()));
    let link = monoio::spawn(linkio::run(core.clone()));

    // A byte from the handle, or its end of stream when the handle is gone.
    let _ = stop.readable(false).await;
    core.shutdown().await;
    link.await;
}

/// State of one core, shared by its tasks.
pub(crate) struct Core {
    pub id: u16,
    pub cores: u16,
    pub gateway_id: u32,
    pub cfg: Arc<GatewayConfig>,
    pub link: LinkTarget,
    apps: Arc<Apps>,
    limits: Limits,
    /// Connections this core admits.
    cap: usize,
    counts: Arc<[crate::PaddedCount]>,
    epoch: Instant,
    /// Readiness of every connection and listener of this core.
    ep: sys::Epoll,
    /// TCP and WebSocket listeners (indexed by `ws as usize`).
    listeners: [std::net::TcpListener; 2],
    st: RefCell<State>,
    /// Wakes the link writer when frames are queued.
    pub link_wake: Notify,
    /// Shutdown has begun: stop accepting.
    pub stopping: Latch,
    /// Close the link for good (after the shutdown drained it).
    pub link_stop: Latch,
    pub stats: Stats,
    /// Sends forwarded to logic and not yet answered, against their bound.
    sends: SendWindow,
    /// Empty outbound rings, reused by connections that get a frame now and then.
    /// Borrowed only inside a queue's push or flush.
    rings: RefCell<RingPool>,
}

struct State {
    conns: Slab<Entry>,
    scratch: Box<[u8]>,
    actions: Actions,
    link: LinkOut,
    /// Connections with frames queued by link traffic, flushed at the end of the batch.
    dirty: Vec<(u32, u32)>,
}

/// The outgoing half of the link as the rest of the core sees it.
struct LinkOut {
    up: bool,
    /// Frames waiting for the link writer (one write per turn).
    buf: Vec<u8>,
    /// The writer holds a buffer it has not finished writing.
    writing: bool,
}

struct Entry {
    wire: Wire,
    io: ConnIo,
}

/// Everything of a connection besides its framing state.
struct ConnIo {
    conn: Conn,
    /// The socket; closing it (dropping the entry) also takes it out of the epoll set.
    fd: OwnedFd,
    /// A partial frame carried over between reads; empty (unallocated) otherwise.
    inbuf: Vec<u8>,
    outq: OutQueue,
    /// The socket refused part of `outq`: `EPOLLOUT` is armed until it drains.
    want_write: bool,
    dirty: bool,
    wr_shut: bool,
    /// Closing: when the linger ends (monotonic ms).
    linger_until: Option<u64>,
    /// Teardown requested (linger over, write failed, shutdown): the reader finishes.
    doomed: bool,
    /// WebSocket close status to send when closing (0 = derived from the cause).
    ws_close: u16,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Ends a connection: the shutdown makes the socket readable (end of stream), and the
/// next turn of `io_loop` finishes it and drops it from the table.
fn doom(io: &mut ConnIo) {
    if !io.doomed {
        io.doomed = true;
        sys::shutdown_both(io.fd.as_raw_fd());
    }
}

impl ConnIo {
    /// Parked: nothing to read half-done, nothing queued. Such a connection holds no
    /// heap memory besides its id strings (the WebSocket decoder's buffer lives in
    /// `Wire`: see [`Wire::is_idle`]).
    fn is_parked(&self) -> bool {
        self.inbuf.capacity() == 0 && self.outq.is_idle() && !self.want_write
    }
}

fn push_link(link: &mut LinkOut, wake: &Notify, frame: &[u8]) {
    if link.up {
        link.buf.extend_from_slice(frame);
        wake.notify();
    }
}

impl Core {
    fn new(boot: &Boot, ep: sys::Epoll, listeners: [std::net::TcpListener; 2]) -> Core {
        let cfg = boot.cfg.clone();
        let cores = usize::from(boot.cores.max(1));
        let cap = (cfg.max_connections / cores).max(1);
        let stats = Stats::new(boot.core);
        let cfg_max_sends = cfg.max_sends_in_flight_per_core;
        Core {
            id: boot.core,
            cores: boot.cores,
            gateway_id: boot.gateway_id,
            link: boot.link.clone(),
            limits: Limits {
                login_timeout_ms: cfg.login_timeout_ms,
                heartbeat_timeout_ms: u64::from(cfg.heartbeat_timeout_ms),
                max_payload: cfg.max_frame_bytes,
                frames_per_sec: cfg.inbound_frames_per_sec,
                link_wait_ms: cfg.login_link_wait_ms,
            },
            cap,
            cfg,
            apps: boot.apps.clone(),
            counts: boot.count.clone(),
            epoch: Instant::now(),
            ep,
            listeners,
            st: RefCell::new(State {
                conns: Slab::default(),
                scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
                actions: Actions::new(),
                link: LinkOut { up: false, buf: Vec::new(), writing: false },
                dirty: Vec::new(),
            }),
            link_wake: Notify::default(),
            stopping: Latch::default(),
            link_stop: Latch::default(),
            sends: SendWindow::new(cfg_max_sends, stats.sends_refused.clone(), stats.sends_held.clone()),
            rings: RefCell::new(RingPool::default()),
            stats,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn env(&self, link_up: bool) -> Env<'_> {
        Env {
            now_ms: self.now_ms(),
            unix_ms: unix_ms(),
            link_up,
            apps: &self.apps,
            limits: &self.limits,
            sends: &self.sends,
        }
    }

    fn conn_ref(&self, (slot, generation): (u32, u32)) -> ConnRef {
        ConnRef::new(self.gateway_id, self.id, slot, generation)
    }

    fn set_count(&self, n: usize) {
        if let Some(c) = self.counts.get(usize::from(self.id)) {
            c.open.store(n, Ordering::Relaxed);
        }
        self.stats.connections.set(n as f64);
    }

    // ------------------------------------------------------------------ accept

    /// Accepts what a listener has waiting (at most [`ACCEPTS_PER_WAKE`]; the rest is
    /// still ready on the next turn).
    fn on_acceptable(self: &Rc<Self>, ws: bool) {
        if self.stopping.is_set() {
            return;
        }
        for _ in 0..ACCEPTS_PER_WAKE {
            match self.listeners[usize::from(ws)].accept() {
                Ok((stream, peer)) => self.admit(stream, peer, ws),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory: the listener stays ready, so rest it
                    // instead of spinning on it.
                    warn!(core = self.id, error = %e, "accept failed");
                    let fd = self.listeners[usize::from(ws)].as_raw_fd();
                    if self.ep.delete(fd).is_ok() {
                        monoio::spawn(rest_listener(self.clone(), ws));
                    }
                    return;
                }
            }
        }
    }

    fn admit(self: &Rc<Self>, stream: std::net::TcpStream, peer: SocketAddr, ws: bool) {
        let mut g = self.st.borrow_mut();
        if g.conns.len() >= self.cap {
            drop(g);
            debug!(core = self.id, %peer, "connection refused: core at its connection cap");
            self.stats.closed(CloseCause::ServerFull);
            refuse_full(stream, ws);
            return;
        }
        // TCP_NODELAY comes from the listener (`bind_one`): no setsockopt per login.
        // Every call on the socket passes MSG_DONTWAIT, so its blocking mode is moot.
        let fd = OwnedFd::from(stream);
        let raw = fd.as_raw_fd();
        let io = ConnIo {
            conn: Conn::new(self.now_ms(), &self.limits),
            fd,
            inbuf: Vec::new(),
            outq: OutQueue::default(),
            want_write: false,
            dirty: false,
            wr_shut: false,
            linger_until: None,
            doomed: false,
            ws_close: 0,
        };
        let key = g.conns.insert(Entry { wire: Wire::new(ws), io });
        if let Err(e) = self.ep.add(raw, sys::EV_READ, conn_key(key)) {
            warn!(core = self.id, error = %e, "cannot watch a new connection; closing it");
            g.conns.remove(key.0, key.1);
            return;
        }
        let n = g.conns.len();
        drop(g);
        self.set_count(n);
    }

    /// The span a connection's events are handled in (disabled, and free, unless the
    /// log level is debug).
    fn span(&self, key: (u32, u32), io: &ConnIo) -> tracing::Span {
        let span =
            tracing::debug_span!("conn", core = self.id, slot = key.0, app_id = field::Empty, user_id = field::Empty);
        let c = &io.conn;
        if !span.is_disabled() && !c.user_id().is_empty() {
            span.record("app_id", c.app_id());
            span.record("user_id", c.user_id());
        }
        span
    }

    /// One readiness event of the epoll set.
    fn on_event(self: &Rc<Self>, key: u64, events: u32) {
        match key {
            KEY_TCP_LISTENER => return self.on_acceptable(false),
            KEY_WS_LISTENER => return self.on_acceptable(true),
            _ => {}
        }
        let key = ((key >> 32) as u32, key as u32);
        if events & libc::EPOLLOUT as u32 != 0 {
            self.on_writable(key);
        }
        if events & !(libc::EPOLLOUT as u32) != 0 {
            match self.on_readable(key) {
                // Level-triggered: bytes left unread make the socket ready again on the
                // next turn, after every other ready connection had its turn.
                Flow::Idle | Flow::Busy => {}
                Flow::Stop => self.finish(key),
            }
        }
    }

    // ------------------------------------------------------------------ connection input

    /// The socket reported readable (or failed). Returns whether to keep reading, and
    /// whether the read budget ran out (more bytes are likely waiting).
    fn on_readable(self: &Rc<Self>, key: (u32, u32)) -> Flow {
        let mut g = self.st.borrow_mut();
        let State { conns, scratch, actions, link, .. } = &mut *g;
        // A stale key (the connection ended earlier in this turn): nothing to do.
        let Some(Entry { wire, io }) = conns.get_mut(key.0, key.1) else { return Flow::Idle };
        let span = self.span(key, io);
        let _entered = span.enter();
        if io.doomed {
            io.conn.on_peer_closed(actions);
            self.apply(io, wire.framing(), key, actions, link, None);
            return Flow::Stop;
        }
        let env = self.env(link.up && link.buf.len() < LINK_BUF_CAP);
        let mut budget_spent = true;
        for _ in 0..READS_PER_WAKE {
            let n = match sys::recv(io.fd.as_raw_fd(), scratch) {
                Ok(0) => {
                    io.conn.on_peer_closed(actions);
                    self.apply(io, wire.framing(), key, actions, link, None);
                    return Flow::Stop;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget_spent = false;
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "connection read failed");
                    io.conn.on_peer_closed(actions);
                    self.apply(io, wire.framing(), key, actions, link, None);
                    return Flow::Stop;
                }
            };
            if io.linger_until.is_none() {
                self.feed(wire, io, &mut scratch[..n], key, actions, link, &env);
            }
            if n < scratch.len() {
                budget_spent = false;
                break;
            }
        }
        wire.release();
        self.flush(io, key);
        match (io.doomed, budget_spent) {
            (true, _) => Flow::Stop,
            (false, true) => Flow::Busy,
            (false, false) => Flow::Idle,
        }
    }

    /// New bytes of a connection: process whole frames, keep a partial one.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        self: &Rc<Self>,
        wire: &mut Wire,
        io: &mut ConnIo,
        data: &mut [u8],
        key: (u32, u32),
        actions: &mut Actions,
        link: &mut LinkOut,
        env: &Env<'_>,
    ) {
        if io.inbuf.is_empty() {
            let used = self.process(wire, io, data, key, actions, link, env);
            if used < data.len() && !io.conn.is_closed() {
                io.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut io.inbuf);
            buf.extend_from_slice(data);
            let used = self.process(wire, io, &mut buf, key, actions, link, env);
            if used < buf.len() && !io.conn.is_closed() {
                buf.drain(..used);
                io.inbuf = buf;
            }
        }
    }

    /// Decodes and handles every whole unit in `data`; returns the bytes consumed.
    #[allow(clippy::too_many_arguments)]
    fn process(
        self: &Rc<Self>,
        wire: &mut Wire,
        io: &mut ConnIo,
        data: &mut [u8],
        key: (u32, u32),
        actions: &mut Actions,
        link: &mut LinkOut,
        env: &Env<'_>,
    ) -> usize {
        let mut off = 0;
        while off < data.len() {
            if io.conn.is_closed() {
                return data.len();
            }
            let framing = wire.framing();
            let (n, step) = wire.step(&mut data[off..], self.limits.max_payload);
            match step {
                Step::NeedMore => break,
                Step::Frame(f) => {
                    self.stats.frames_in.increment(1);
                    io.conn.on_frame(f, env, actions);
                    self.apply(io, framing, key, actions, link, Some(f));
                }
                Step::Raw(bytes) => {
                    self.enqueue(io, OutFrame::raw(bytes), actions);
                    self.apply(io, framing, key, actions, link, None);
                }
                Step::Skip => {}
                Step::BadFrame(e, ws_close) => {
                    debug!(error = %e, "bad frame from client");
                    io.ws_close = ws_close;
                    io.conn.on_frame_error(&e, actions);
                    self.apply(io, framing, key, actions, link, None);
                }
                Step::PeerClose => {
                    io.conn.on_peer_closed(actions);
                    self.apply(io, framing, key, actions, link, None);
                }
                Step::Reject(response) => {
                    self.enqueue(io, OutFrame::raw(response), actions);
                    io.conn.on_transport_error(actions);
                    self.apply(io, Framing::None, key, actions, link, None);
                }
            }
            off += n;
        }
        off
    }

    // ------------------------------------------------------------------ actions

    /// Carries out the state machine's actions for one connection. `frame` is the client
    /// frame the actions answer (for `Forward`).
    fn apply(
        self: &Rc<Self>,
        io: &mut ConnIo,
        framing: Framing,
        key: (u32, u32),
        actions: &mut Actions,
        link: &mut LinkOut,
        frame: Option<&[u8]>,
    ) {
        while let Some(a) = actions.pop_front() {
            match a {
                Action::Reply(body) => {
                    let f = match framing {
                        Framing::Tcp => OutFrame::raw(body),
                        Framing::Ws => OutFrame::ws_binary(body),
                        Framing::None => continue,
                    };
                    self.stats.frames_out.increment(1);
                    self.enqueue(io, f, actions);
                }
                Action::Forward => {
                    if let (Some(f), true) = (frame, link.up) {
                        // Encoded straight into the batch buffer: no allocation per frame.
                        encode::link_upstream_into(&mut link.buf, &self.conn_ref(key), f);
                        self.link_wake.notify();
                    }
                }
                Action::Dropped => self.stats.group_acks_dropped.increment(1),
                Action::OpenSession { resume } => {
                    let c = &io.conn;
                    // Asked of the socket, not kept per connection (32 B each): this
                    // runs once per login and once per session on a link reconnect.
                    let peer = socket2::SockRef::from(&io.fd)
                        .peer_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .map_or_else(String::new, |a| a.to_string());
                    if !resume {
                        debug!(app_id = c.app_id(), user_id = c.user_id(), %peer, "login verified; opening session");
                    }
                    let open = encode::link_session_open(&encode::SessionOpenParts {
                        conn: self.conn_ref(key),
                        app_id: c.app_id(),
                        user_id: c.user_id(),
                        client_type: c.client_type(),
                        device_id: c.device_id(),
                        request_id: c.login_request_id(),
                        resume,
                        remote_addr: &peer,
                    });
                    push_link(link, &self.link_wake, &open);
                    if !resume {
                        io.conn.mark_session_open_sent(self.now_us());
                    }
                }
                Action::SessionClosed(reason) => {
                    if link.up {
                        encode::link_session_closed_into(&mut link.buf, &self.conn_ref(key), reason);
                        self.link_wake.notify();
                    }
                }
                Action::Close(cause) => self.begin_close(io, framing, cause),
            }
        }
    }

    /// Queues a frame; past the bound the connection is a slow consumer.
    fn enqueue(&self, io: &mut ConnIo, f: OutFrame, actions: &mut Actions) {
        if io.linger_until.is_some() {
            return;
        }
        if io.outq.len() >= self.cfg.outbound_queue_frames {
            debug!(queued = io.outq.len(), "slow consumer");
            io.outq.drop_unstarted();
            io.conn.on_slow_consumer(actions);
            return;
        }
        io.outq.push(f, &mut self.rings.borrow_mut());
    }

    fn begin_close(&self, io: &mut ConnIo, framing: Framing, cause: CloseCause) {
        if io.linger_until.is_some() {
            return;
        }
        debug!(reason = cause.as_str(), "closing connection");
        self.stats.closed(cause);
        if framing == Framing::Ws {
            let code = match cause {
                _ if io.ws_close != 0 => io.ws_close,
                CloseCause::Protocol => ws::CLOSE_PROTOCOL_ERROR,
                CloseCause::Shutdown => ws::CLOSE_GOING_AWAY,
                _ => ws::CLOSE_NORMAL,
            };
            io.outq.push(OutFrame::raw(ws::close_frame(code).into()), &mut self.rings.borrow_mut());
        }
        io.linger_until = Some(self.now_ms() + LINGER_MS);
    }

    /// Writes what the socket takes now; if it pushes back, arms `EPOLLOUT` and the
    /// rest goes out on writable events ([`Core::on_writable`]).
    fn flush(&self, io: &mut ConnIo, key: (u32, u32)) {
        if io.want_write || io.doomed {
            return;
        }
        match self.write_out(io) {
            Ok(true) => {}
            Ok(false) => {
                io.want_write = true;
                if let Err(e) = self.ep.modify(io.fd.as_raw_fd(), sys::EV_READ_WRITE, conn_key(key)) {
                    debug!(error = %e, "cannot watch a connection for writability");
                    doom(io);
                }
            }
            Err(e) => {
                debug!(error = %e, "connection write failed");
                doom(io);
            }
        }
    }

    /// Writes queued frames; `Ok(true)` once the queue is empty (and, when closing,
    /// our side is shut down so the client sees the end after our last frame).
    fn write_out(&self, io: &mut ConnIo) -> io::Result<bool> {
        let fd = io.fd.as_raw_fd();
        let done = io.outq.flush(&mut self.rings.borrow_mut(), |iov| sys::sendv(fd, iov))?;
        if done && io.linger_until.is_some() && !io.wr_shut {
            io.wr_shut = true;
            sys::shutdown_write(fd);
        }
        Ok(done)
    }

    /// The socket takes bytes again: write on, and disarm `EPOLLOUT` once drained.
    fn on_writable(&self, key: (u32, u32)) {
        let mut g = self.st.borrow_mut();
        let Some(e) = g.conns.get_mut(key.0, key.1) else { return };
        let io = &mut e.io;
        if !io.want_write || io.doomed {
            return;
        }
        match self.write_out(io) {
            Ok(true) => {
                io.want_write = false;
                if self.ep.modify(io.fd.as_raw_fd(), sys::EV_READ, conn_key(key)).is_err() {
                    doom(io);
                }
            }
            Ok(false) => {}
            Err(e) => {
                debug!(error = %e, "connection write failed");
                doom(io);
            }
        }
    }

    /// A connection is done: drop it from the table (closing its socket also removes
    /// it from the epoll set).
    fn finish(self: &Rc<Self>, key: (u32, u32)) {
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, .. } = &mut *g;
        let Some(Entry { wire, mut io }) = conns.remove(key.0, key.1) else { return };
        if !io.conn.is_closed() {
            io.conn.on_peer_closed(actions);
            self.apply(&mut io, wire.framing(), key, actions, link, None);
        }
        let n = conns.len();
        drop(g);
        self.set_count(n);
    }

    /// Flushes connections that link traffic queued frames for.
    pub fn flush_dirty(self: &Rc<Self>) {
        let mut g = self.st.borrow_mut();
        let State { conns, dirty, .. } = &mut *g;
        for (slot, generation) in dirty.drain(..) {
            if let Some(e) = conns.get_mut(slot, generation) {
                e.io.dirty = false;
                self.flush(&mut e.io, (slot, generation));
            }
        }
    }

    // ------------------------------------------------------------------ link events

    /// The link connected: `Hello` first, then re-register every live session.
    pub fn link_connected(self: &Rc<Self>) {
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, .. } = &mut *g;
        link.up = true;
        link.buf.clear();
        link.writing = false;
        // Logic counts the new link's answers from zero.
        self.sends.reset();
        push_link(link, &self.link_wake, &encode::link_hello(self.gateway_id, self.id, self.cores));
        for (slot, generation, e) in conns.iter_mut() {
            e.io.conn.on_link_up(actions);
            self.apply(&mut e.io, e.wire.framing(), (slot, generation), actions, link, None);
        }
    }

    /// The link dropped: logic lost this core's sessions; logins in flight fail.
    pub fn link_lost(self: &Rc<Self>) {
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, dirty, .. } = &mut *g;
        link.up = false;
        link.buf = Vec::new();
        for (slot, generation, e) in conns.iter_mut() {
            e.io.conn.on_link_down(actions);
            if !actions.is_empty() {
                self.apply(&mut e.io, e.wire.framing(), (slot, generation), actions, link, None);
                if !e.io.dirty {
                    e.io.dirty = true;
                    dirty.push((slot, generation));
                }
            }
        }
        drop(g);
        self.flush_dirty();
    }

    /// Hands the queued link bytes to the writer (swapping in its spare buffer).
    /// `None` once the link is down: the writer must stop.
    pub fn take_link_out(&self, spare: Vec<u8>) -> Option<Vec<u8>> {
        let mut g = self.st.borrow_mut();
        if !g.link.up {
            return None;
        }
        let out = std::mem::replace(&mut g.link.buf, spare);
        g.link.writing = !out.is_empty();
        Some(out)
    }

    pub fn link_write_done(&self) {
        self.st.borrow_mut().link.writing = false;
    }

    fn link_drained(&self) -> bool {
        let g = self.st.borrow();
        !g.link.up || (g.link.buf.is_empty() && !g.link.writing)
    }

    pub fn push_link_frame(&self, frame: &[u8]) {
        let mut g = self.st.borrow_mut();
        push_link(&mut g.link, &self.link_wake, frame);
    }

    /// One frame from logic (payload, header stripped).
    pub fn on_link_frame(self: &Rc<Self>, payload: &[u8]) {
        let f = match frame::parse_link(payload) {
            Ok(f) => f,
            Err(e) => {
                warn!(core = self.id, error = %e, "malformed frame from logic dropped");
                return;
            }
        };
        match f.body_type() {
            LinkBody::Deliver => {
                if let Some(d) = f.body_as_deliver() {
                    self.deliver(d);
                }
            }
            LinkBody::SessionOpened => {
                if let Some(s) = f.body_as_session_opened() {
                    let frame = s.frame().map_or(&[][..], |v| v.bytes());
                    let stats = &self.stats;
                    let now_us = self.now_us();
                    self.with_conn(s.conn(), |c, env, out| {
                        if let Some((accepted_ms, sent_us)) = c.login_timing() {
                            stats.login_seconds.record(env.now_ms.saturating_sub(accepted_ms) as f64 / 1e3);
                            if sent_us > 0 {
                                stats.login_link_seconds.record(now_us.saturating_sub(sent_us) as f64 / 1e6);
                            }
                        }
                        c.on_session_opened(s.ok(), frame, env, out)
                    });
                }
            }
            LinkBody::Close => {
                if let Some(c) = f.body_as_close() {
                    let frame = c.frame().map_or(&[][..], |v| v.bytes());
                    self.with_conn(c.conn(), |c, _, out| c.on_logic_close(frame, out));
                }
            }
            LinkBody::LinkPing => {
                let t = f.body_as_link_ping().map_or(0, |p| p.time_ms());
                self.push_link_frame(&encode::link_pong(t));
            }
            LinkBody::LinkPong => {}
            LinkBody::SendsAnswered => {
                if let Some(a) = f.body_as_sends_answered() {
                    self.sends.answered(a.total());
                }
            }
            other => debug!(core = self.id, kind = ?other, "unexpected link frame ignored"),
        }
    }

    fn owns(&self, c: &ConnRef) -> bool {
        c.gateway_id() == self.gateway_id && c.core() == self.id
    }

    /// Feeds a link event to one connection's state machine.
    fn with_conn(self: &Rc<Self>, conn: Option<&ConnRef>, f: impl FnOnce(&mut Conn, &Env<'_>, &mut Actions)) {
        let Some(c) = conn.filter(|c| self.owns(c)) else {
            self.stats.stale_deliveries.increment(1);
            return;
        };
        let key = (c.slot(), c.generation());
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, dirty, .. } = &mut *g;
        let Some(e) = conns.get_mut(key.0, key.1) else {
            self.stats.stale_deliveries.increment(1);
            return;
        };
        let env = self.env(link.up);
        f(&mut e.io.conn, &env, actions);
        self.apply(&mut e.io, e.wire.framing(), key, actions, link, None);
        if !e.io.dirty {
            e.io.dirty = true;
            dirty.push(key);
        }
    }

    /// One encoded frame for every listed connection of this core (one shared buffer).
    fn deliver(self: &Rc<Self>, d: link::Deliver<'_>) {
        let (Some(frame), Some(targets)) = (d.frame(), d.conns()) else { return };
        let body = Bytes::copy_from_slice(frame.bytes());
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, dirty, .. } = &mut *g;
        for c in targets.iter() {
            let key = (c.slot(), c.generation());
            let entry = if self.owns(c) { conns.get_mut(key.0, key.1) } else { None };
            let Some(e) = entry.filter(|e| e.io.conn.is_open()) else {
                self.stats.stale_deliveries.increment(1);
                continue;
            };
            let framing = e.wire.framing();
            let f =
                if framing == Framing::Ws { OutFrame::ws_binary(body.clone()) } else { OutFrame::raw(body.clone()) };
            self.stats.frames_out.increment(1);
            self.enqueue(&mut e.io, f, actions);
            self.apply(&mut e.io, framing, key, actions, link, None);
            if !e.io.dirty {
                e.io.dirty = true;
                dirty.push(key);
            }
        }
    }

    // ------------------------------------------------------------------ timers

    /// Login deadlines, heartbeat timeouts and lingering closes.
    fn sweep(self: &Rc<Self>) {
        let mut g = self.st.borrow_mut();
        let State { conns, actions, link, .. } = &mut *g;
        let env = self.env(link.up && link.buf.len() < LINK_BUF_CAP);
        let mut parked = 0;
        for (slot, generation, e) in conns.iter_mut() {
            let io = &mut e.io;
            if let Some(until) = io.linger_until {
                if env.now_ms >= until {
                    doom(io);
                }
                continue;
            }
            io.conn.on_tick(&env, actions);
            if !actions.is_empty() {
                self.apply(io, e.wire.framing(), (slot, generation), actions, link, None);
                self.flush(io, (slot, generation));
            }
            parked += usize::from(io.is_parked() && e.wire.is_idle());
        }
        if let Some(c) = self.counts.get(usize::from(self.id)) {
            c.parked.store(parked, Ordering::Relaxed);
        }
        self.stats.parked.set(parked as f64);
        self.stats.sends_in_flight.set(self.sends.in_flight() as f64);
    }

    // ------------------------------------------------------------------ shutdown

    /// Graceful stop, bounded by [`SHUTDOWN_BUDGET`]: stop accepting, kick every client
    /// (logic hears `SessionClosed(GatewayShutdown)`), give clients a moment to close,
    /// cut the rest, drain the link, close it.
    async fn shutdown(self: &Rc<Self>) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        self.stopping.set();
        for l in &self.listeners {
            // Not yet accepted connections are reset when the listeners close.
            let _ = self.ep.delete(l.as_raw_fd());
        }
        {
            let mut g = self.st.borrow_mut();
            let State { conns, actions, link, .. } = &mut *g;
            for (slot, generation, e) in conns.iter_mut() {
                e.io.conn.on_shutdown(actions);
                self.apply(&mut e.io, e.wire.framing(), (slot, generation), actions, link, None);
                self.flush(&mut e.io, (slot, generation));
            }
        }
        let cut_at = deadline - Duration::from_millis(700);
        while !self.st.borrow().conns.is_empty() && Instant::now() < cut_at {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, _, e) in self.st.borrow_mut().conns.iter_mut() {
            doom(&mut e.io);
        }
        while !(self.st.borrow().conns.is_empty() && self.link_drained()) && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        self.link_stop.set();
    }
}

// ---------------------------------------------------------------------- tasks

/// The core's connection I/O: takes the ready events of the epoll set and handles them
/// in place, a bounded batch per turn; when none is ready, waits for the set's
/// descriptor through the runtime. Runs until the link is closed for good (after the
/// shutdown drained the connections).
async fn io_loop(core: Rc<Core>, watch: monoio::net::UnixStream) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_TURN];
    loop {
        if core.link_stop.is_set() {
            return;
        }
        let n = match core.ep.poll_now(&mut events) {
            Ok(n) => n,
            Err(e) => {
                warn!(core = core.id, error = %e, "epoll_wait failed");
                0
            }
        };
        if n == 0 {
            monoio::select! {
                _ = watch.readable(false) => {},
                _ = core.link_stop.wait() => return,
            }
            continue;
        }
        for ev in &events[..n] {
            // Copies: the struct is packed on x86_64.
            let (key, bits) = (ev.u64, ev.events);
            core.on_event(key, bits);
        }
        // Let the link reader/writer and the timers run between batches.
        crate::sync::yield_now().await;
    }
}

/// Puts a listener back into the epoll set after an accept error's pause.
async fn rest_listener(core: Rc<Core>, ws: bool) {
    monoio::time::sleep(ACCEPT_BACKOFF).await;
    if !core.stopping.is_set() {
        let key = if ws { KEY_WS_LISTENER } else { KEY_TCP_LISTENER };
        if let Err(e) = core.ep.add(core.listeners[usize::from(ws)].as_raw_fd(), sys::EV_READ, key) {
            warn!(core = core.id, error = %e, "cannot watch a listener again; it stops accepting");
        }
    }
}

/// What a connection's read handler says after a readiness event.
enum Flow {
    /// Drained: wait for the next readiness.
    Idle,
    /// The read budget ran out: more bytes wait; the next turn reads on.
    Busy,
    /// The connection is over: drop it from the table.
    Stop,
}

/// Answers a connection over the cap and closes it after a short drain (so the refusal
/// is not lost to a reset caused by unread request bytes). The drain is a small task:
/// refusals are rare and short-lived, unlike parked connections.
fn refuse_full(stream: std::net::TcpStream, ws: bool) {
    let fd = stream.as_raw_fd();
    let msg = if ws {
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec()
    } else {
        encode::error(0, codes::SERVER_FULL, "server full; retry later")
    };
    let _ = sys::sendv(fd, &[IoSlice::new(&msg)]);
    sys::shutdown_write(fd);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(stream) = TcpStream::from_std(stream) else { return };
    monoio::spawn(async move {
        let fd = stream.as_raw_fd();
        let drain = async {
            let mut buf = [0u8; 512];
            while stream.readable(false).await.is_ok() {
                match sys::recv(fd, &mut buf) {
                    Ok(0) => return,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
                    _ => {}
                }
            }
        };
        let _ = monoio::time::timeout(Duration::from_millis(500), drain).await;
    });
}

/// How often the sweep runs: timeouts fire up to one period late. A quarter of the
/// shortest timeout, between 10 ms (tests) and 1 s (production: 5 s and 90 s timeouts).
fn sweep_period(cfg: &GatewayConfig) -> Duration {
    let shortest = cfg.login_timeout_ms.min(u64::from(cfg.heartbeat_timeout_ms));
    Duration::from_millis((shortest / 4).clamp(10, 1_000))
}

async fn sweeper(core: Rc<Core>) {
    let period = sweep_period(&core.cfg);
    loop {
        monoio::select! {
            _ = monoio::time::sleep(period) => {},
            _ = core.link_stop.wait() => return,
        }
        core.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_period_tracks_the_shortest_timeout() {
        let c = GatewayConfig::default();
        assert_eq!(sweep_period(&c), Duration::from_secs(1));
        let c = GatewayConfig { login_timeout_ms: 200, ..GatewayConfig::default() };
        assert_eq!(sweep_period(&c), Duration::from_millis(50));
        let c = GatewayConfig { login_timeout_ms: 1, ..GatewayConfig::default() };
        assert_eq!(sweep_period(&c), Duration::from_millis(10));
    }

    #[test]
    fn idle_entry_size() {
        // Budget check: the table entry of a connection (without heap strings).
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 208, "Entry grew to {size} bytes");
    }
}
