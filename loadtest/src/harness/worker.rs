//! A worker process (`tern loadtest worker`, spawned by the coordinator): holds its share
//! of the devices' connections, writes its share of each run's schedule on time, and
//! records what its devices receive.
//!
//! One thread, one level-triggered epoll loop, no async runtime, no task, channel or
//! timer per device. Why: the generator's own CPU per message says whether a run
//! measured the server or the generator, and the async design before this one (a task
//! and a channel per device, a scheduler thread waking per message, a frame allocation
//! per read) spent ~100 µs per message — the whole budget of a 2-core machine at
//! 20,000 msgs/s. Here a message costs what a client must pay: one write for the Send,
//! one read per arriving batch of frames, a FlatBuffers verification per frame. More
//! cores mean more worker processes (the coordinator starts one per core).
//!
//! Ticks, not events, drive a busy worker. What a message costs the generator was
//! measured (perf, strace, compare.sh at 5,000 msgs/s): the syscalls are already what a
//! client must make — one `write` per Send, one `read` per socket with frames, no read
//! that returns `EAGAIN` — and ~80% of the worker's CPU is kernel time: the loopback TCP
//! work of those syscalls (a write also wakes the server) and the worker's own
//! wake-ups, which on this Firecracker VM cost ~13–20 µs each (timer interrupt, context
//! switch), against ~0.2 µs for a plain syscall. So a busy worker wakes once per tick
//! (`--coalesce-us`, 1 ms by default): it sleeps the tick out in `clock_nanosleep`,
//! which no socket interrupts, takes every ready socket in one `epoll_wait(0)`, and
//! writes every send due by then, one `write` per device. An idle worker blocks in
//! `epoll_pwait2` until a socket is ready or the next due time (rounded up to the
//! tick). Wake-ups per second are then bounded by the tick whatever the rate: at 5,000
//! msgs/s generator CPU fell from ~60 to ~30–40 µs per message (see ARCHITECTURE.md).
//! Every send is stamped with its *due* time and latencies are measured from it, so
//! the tick (up to 1 ms late per send, and per read), a full socket or a slow server
//! all show up in the figures (no coordinated omission).
//!
//! Devices behave as real clients do ([`Dev`]): a device whose connection is kicked
//! (e.g. `SlowConsumer`) or dropped after it had logged in reconnects with backoff, logs
//! in, pulls its timeline from its sync point until caught up (PROTOCOL.md "Sync"), and
//! resends the sends that were never answered with the same `client_msg_id` (the server
//! dedups them); sends due while it is away wait in its outbox. So `lost` counts acked
//! messages that never arrived, and kicks and reconnects are reported per reason.
//!
//! Talks to the coordinator only through [`crate::harness::proto`] lines; never panics
//! on what a server sends.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use socket2::Socket;
use tern_schema::client::{Body, ClientType, ConversationType, ElemType, SyncKind};
use tern_schema::encode;
use tern_schema::frame::{parse_client, split_frame, HEADER_LEN, MAX_PAYLOAD_LEN};
use tern_schema::message::{self, ElemParts};

use crate::client::{Transport, CLIENT_VERSION};
use crate::harness::config::TargetKind;
use crate::harness::hist::Latency;
use crate::harness::net::raise_fd_limit;
use crate::harness::os::{self, Epoll};
use crate::harness::proto::{
    decode, encode as encode_line, Command, ConnectReport, DrainReport, Event, ProtoError, Reasons, RunSpec, Tick,
    WorkerInit,
};
use crate::harness::schedule::{mono_us, parse_payload, wall_ms, Bits, Schedule, Stamp};
use crate::harness::setup::user_sign;
use crate::harness::wsc;

/// Connects (and logins) in flight at once per worker: beyond the schedule's rate this
/// bounds descriptors and memory when the server is slow.
const MAX_CONNECTS_IN_FLIGHT: usize = 2_048;
/// One connection attempt (TCP + WebSocket upgrade + Login) must finish in this.
const CONNECT_TIMEOUT_US: u64 = 15_000_000;
/// Ping interval if the server names none.
const FALLBACK_HEARTBEAT_US: u64 = 30_000_000;
/// How often the loop looks at every device (heartbeats, PushAcks, timeouts, reconnects)
/// and at the run's progress. Per-device timers would cost a syscall or a heap entry
/// per event; one sweep over 15,000 devices costs microseconds.
const SWEEP_US: u64 = 50_000;
/// Progress lines during the connection phase.
const PROGRESS_US: u64 = 250_000;
/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX_US`], with
/// jitter so a mass kick does not come back in step.
const BACKOFF_MIN_US: u64 = 50_000;
const BACKOFF_MAX_US: u64 = 2_000_000;
/// A device writes its outbox (sends due while it was away, and unanswered ones) with
/// at most this many sends unanswered, as a client with a bounded in-flight window does:
/// hundreds written at once after a reconnect would be answered in one burst that
/// overflows the server's outbound queue and gets the device kicked again, in a loop.
/// Sends due while the outbox is empty are written at once (open loop).
const OUTBOX_WINDOW: usize = 32;
/// A send refused as busy (80009) is written again after this long (the refusal's own
/// hint, PROTOCOL.md), doubled for each further refusal of it up to
/// [`BUSY_RETRY_MAX_DOUBLINGS`] times ...
const BUSY_RETRY_US: u64 = 100_000;
const BUSY_RETRY_MAX_DOUBLINGS: u32 = 4;
/// ... plus up to this much, at random.
const BUSY_RETRY_JITTER_US: u64 = 50_000;
/// Pull page size (the server caps it at its own limit).
const PULL_LIMIT: u32 = 500;
/// One read takes at most this much (the loop is level-triggered: the rest comes next).
const READ_CHUNK: usize = 64 * 1024;
/// Epoll events taken per wake-up.
const EVENTS: usize = 1_024;
/// Token of stdin in the epoll set (devices use their index).
const STDIN: u64 = u64::MAX;

/// A worker that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("stdin closed before the init line")]
    NoInit,
    #[error("target {0:?} is not built into this binary (feature `nats`)")]
    NoNats(TargetKind),
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: std::io::Error },
}

/// Entry point of `tern loadtest worker`.
pub fn run_worker() -> Result<(), WorkerError> {
    raise_fd_limit();
    os::tighten_timer_slack();
    let res = Worker::from_stdin().and_then(|mut w| w.run());
    if let Err(e) = &res {
        emit(&Event::Fatal { message: e.to_string() });
    }
    res
}

/// Writes one event line to stdout (the coordinator reads it).
pub(crate) fn emit(e: &Event) {
    let mut out = std::io::stdout().lock();
    // A coordinator that went away cannot be told anything; the worker ends on Stop or
    // stdin EOF either way.
    let _ = writeln!(out, "{}", encode_line(e));
    let _ = out.flush();
}

/// One message of the schedule that a local device sends: written, waiting for its
/// answer, or waiting in the outbox for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub run: u32,
    pub index: u64,
    pub due_us: u64,
    /// Recipient user.
    pub to: u32,
    /// Times it was written (a resend after a reconnect keeps its client_msg_id).
    pub tries: u32,
    /// When it was last written (0: not yet): a refusal is also timed from here, which
    /// leaves the generator's own lateness out.
    pub written_us: u64,
}

/// Which protocol the devices speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tern {
        ws: bool,
    },
    #[cfg(feature = "nats")]
    Nats {
        jetstream: bool,
    },
}

/// Where a device's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No connection; the next attempt is due at `at_us` (`u64::MAX`: never).
    Idle {
        at_us: u64,
    },
    /// TCP connect in progress.
    Connecting,
    /// WebSocket upgrade sent, answer pending.
    Upgrading,
    /// Login sent (Tern: its request id; NATS: CONNECT + PING sent, PONG pending).
    LoggingIn {
        rid: u32,
    },
    Online,
}

/// One device: its connection, its protocol state as a client, and what it received.
pub(crate) struct Dev {
    pub user: u32,
    pub device: u32,
    sock: Option<Socket>,
    pub phase: Phase,
    /// Start of the current connection attempt.
    since_us: u64,
    /// When the current attempt's Login was written.
    sent_us: u64,
    /// Logged in at least once: a later loss of the connection is a reconnect, not a
    /// failed login.
    ever_online: bool,
    /// Failed reconnect attempts in a row (backoff exponent).
    attempt: u32,
    /// Bytes of a partial frame.
    rbuf: Vec<u8>,
    /// Bytes the socket did not take yet.
    wbuf: Vec<u8>,
    /// EPOLLOUT is registered (wbuf is waiting for room).
    writing: bool,
    /// In the worker's dirty list (wbuf has bytes to write this turn).
    dirty: bool,
    rid: u32,
    /// Everything of the Message timeline up to here is held (PROTOCOL.md "Sync"); it
    /// survives reconnects, as a client's store does.
    pub sync_seq: u64,
    /// Seqs above `sync_seq` that are held too (pushed while catching up), sorted. With
    /// `sync_seq` this is the client's dedup by seq: an entry held already — pulled
    /// again after a reconnect, or both pushed and pulled — is dropped, not counted.
    held_above: Vec<u64>,
    /// The highest seq a SyncNotify or LoginAck named.
    notified: u64,
    /// Pull in flight: its request id.
    pulling: Option<u32>,
    /// Catching up by Pull on this connection: pushes are not yet contiguous with
    /// `sync_seq`, so they go to `held_above`.
    catching_up: bool,
    acked_seq: u64,
    /// Sends written and not answered yet: (request id / PubAck key, send).
    pending: Vec<(u32, Pending)>,
    /// Sends due while the device had no session, and unanswered sends of a lost
    /// session, oldest first.
    outbox: VecDeque<Pending>,
    /// The in-flight window for the outbox (at most [`OUTBOX_WINDOW`]): halved when the
    /// server kicks the device as a slow consumer, grown by one per window of acks, as
    /// a client backs off when its own burst of answers overflowed the server's queue.
    window: usize,
    /// Acks since the window last grew.
    window_acks: usize,
    /// A send refused as busy (80009) waits at the outbox's head until then, and the
    /// device's later sends behind it (0: no backoff).
    retry_at_us: u64,
    hb_us: u64,
    next_hb_us: u64,
    next_ack_us: u64,
    pub bits: Bits,
}

impl Dev {
    pub(crate) fn new(user: u32, device: u32) -> Dev {
        Dev {
            user,
            device,
            sock: None,
            phase: Phase::Idle { at_us: u64::MAX },
            since_us: 0,
            sent_us: 0,
            ever_online: false,
            attempt: 0,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            writing: false,
            dirty: false,
            rid: 1,
            sync_seq: 0,
            notified: 0,
            pulling: None,
            held_above: Vec::new(),
            catching_up: false,
            acked_seq: 0,
            pending: Vec::new(),
            outbox: VecDeque::new(),
            window: OUTBOX_WINDOW,
            window_acks: 0,
            retry_at_us: 0,
            hb_us: FALLBACK_HEARTBEAT_US,
            next_hb_us: u64::MAX,
            next_ack_us: 0,
            bits: Bits::default(),
        }
    }

    fn next_rid(&mut self) -> u32 {
        let id = self.rid;
        self.rid = self.rid.checked_add(1).unwrap_or(1);
        id
    }

    fn take_pending(&mut self, key: u32) -> Option<Pending> {
        let at = self.pending.iter().position(|(k, _)| *k == key)?;
        Some(self.pending.swap_remove(at).1)
    }

    /// Whether the timeline entry `seq` is held already.
    fn holds(&self, seq: u64) -> bool {
        seq <= self.sync_seq || self.held_above.binary_search(&seq).is_ok()
    }

    fn hold_above(&mut self, seq: u64) {
        if let Err(at) = self.held_above.binary_search(&seq) {
            self.held_above.insert(at, seq);
        }
    }

    /// Everything up to `seq` is held.
    fn advance(&mut self, seq: u64) {
        self.sync_seq = self.sync_seq.max(seq);
        let n = self.held_above.partition_point(|s| *s <= self.sync_seq);
        self.held_above.drain(..n);
    }

    /// Forgets the state of the connection that ended (what was received stays).
    /// One more send answered: the window grows by one per window's worth of answers.
    fn grow_window(&mut self) {
        self.window_acks += 1;
        if self.window_acks >= self.window {
            self.window_acks = 0;
            self.window = (self.window + 1).min(OUTBOX_WINDOW);
        }
    }

    fn reset_connection(&mut self) {
        self.sock = None;
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.writing = false;
        self.pulling = None;
        self.catching_up = false;
        self.next_hb_us = u64::MAX;
        self.retry_at_us = 0;
    }
}

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct End {
    pub reason: String,
    /// The server said Kick (with this reason) rather than just closing.
    pub kick: bool,
}

impl End {
    pub(crate) fn closed(reason: impl Into<String>) -> End {
        End { reason: reason.into(), kick: false }
    }

    pub(crate) fn kick(reason: impl Into<String>) -> End {
        End { reason: reason.into(), kick: true }
    }
}

/// Counters of the current second.
#[derive(Default)]
struct TickAcc {
    sent: u64,
    acked: u64,
    failed: u64,
    delivered: u64,
    echoes: u64,
    ack: Latency,
    delivery: Latency,
    refusal: Latency,
    refusal_wire: Latency,
    lag: Latency,
}

impl TickAcc {
    fn take(&mut self, run: u32, sec: u32) -> Tick {
        let t = std::mem::take(self);
        Tick {
            run,
            sec,
            sent: t.sent,
            acked: t.acked,
            failed: t.failed,
            delivered: t.delivered,
            echoes: t.echoes,
            ack: t.ack.to_data(),
            delivery: t.delivery.to_data(),
            refusal: t.refusal.to_data(),
            refusal_wire: t.refusal_wire.to_data(),
            lag: t.lag.to_data(),
        }
    }
}

/// A run's drain in progress.
struct Drain {
    failed: HashSet<u64>,
    deadline_us: u64,
    expected: u64,
    per_dev: Vec<u64>,
}

/// The current run's accounting.
pub(crate) struct Book {
    pub sched: Schedule,
    pub run: u32,
    payload: usize,
    ack_deadline_us: u64,
    /// Next global message index to look at; `next_local` is the first index at or
    /// after it that a local device sends.
    cursor: u64,
    tick: TickAcc,
    next_tick_sec: u32,
    failed: Vec<u64>,
    errors: Reasons,
    dispatched: u64,
    answered: u64,
    duplicates: u64,
    stray: u64,
    last_delivery_us: u64,
    sent_reported: bool,
    drain: Option<Drain>,
    finished: bool,
    kicks: Reasons,
    drops: Reasons,
    reconnects: u64,
    reconnect_failures: Reasons,
    resent: u64,
    pulls: u64,
    /// This process's CPU seconds when the run started.
    cpu_at_start: f64,
}

impl Book {
    fn new(spec: &RunSpec) -> Book {
        let sched = Schedule {
            users: spec.users,
            devices: spec.devices,
            rate: spec.rate,
            count: spec.count,
            t0_us: spec.t0_us,
            members: spec.members,
        };
        let end = spec.t0_us + (spec.count as f64 * 1e6 / spec.rate) as u64;
        Book {
            sched,
            run: spec.run,
            payload: spec.payload,
            ack_deadline_us: end + spec.ack_timeout_ms * 1_000,
            cursor: 0,
            tick: TickAcc::default(),
            next_tick_sec: 1,
            failed: Vec::new(),
            errors: Reasons::new(),
            dispatched: 0,
            answered: 0,
            duplicates: 0,
            stray: 0,
            last_delivery_us: 0,
            sent_reported: false,
            drain: None,
            finished: false,
            kicks: Reasons::new(),
            drops: Reasons::new(),
            reconnects: 0,
            reconnect_failures: Reasons::new(),
            resent: 0,
            pulls: 0,
            cpu_at_start: crate::harness::sysinfo::own_cpu_secs(),
        }
    }

    fn answer(&mut self, p: &Pending, outcome: Result<(), String>, now: u64) {
        if p.run != self.run {
            return;
        }
        self.answered += 1;
        match outcome {
            Ok(()) => {
                self.tick.acked += 1;
                self.tick.ack.record(now.saturating_sub(p.due_us));
            }
            Err(reason) => {
                // An answer that refuses (timeouts fail elsewhere, unanswered).
                self.tick.refusal.record(now.saturating_sub(p.due_us));
                if p.written_us > 0 {
                    self.tick.refusal_wire.record(now.saturating_sub(p.written_us));
                }
                self.fail(p.index, reason)
            }
        }
    }

    fn fail(&mut self, index: u64, reason: String) {
        self.tick.failed += 1;
        self.failed.push(index);
        *self.errors.entry(reason).or_default() += 1;
    }

    /// A message whose text starts with `text` arrived at device `dev`.
    pub(crate) fn deliver(&mut self, dev: &mut Dev, text: &[u8], now: u64) {
        let Some(Stamp { run, index, due_us }) = parse_payload(text) else {
            self.stray += 1;
            return;
        };
        if run != self.run || !self.sched.receives(dev.user, index) {
            self.stray += 1;
            return;
        }
        match dev.bits.insert(self.sched.slot(index)) {
            Some(true) => {
                self.tick.delivered += 1;
                self.tick.delivery.record(now.saturating_sub(due_us));
                self.last_delivery_us = self.last_delivery_us.max(now);
            }
            Some(false) => self.duplicates += 1,
            None => self.stray += 1,
        }
    }
}

/// Connection-level figures of the worker's whole life.
#[derive(Default)]
struct Stats {
    alive: u64,
    closed: Reasons,
    connect: ConnectReport,
    login: Latency,
    handshake: Latency,
    answer: Latency,
    pace: Latency,
    attempts_done: u64,
    connected_reported: bool,
}

/// The worker: its devices, its run, its loop.
pub(crate) struct Worker {
    init: WorkerInit,
    proto: Proto,
    addrs: Vec<SocketAddr>,
    ep: Epoll,
    pub devs: Vec<Dev>,
    pub book: Option<Book>,
    stats: Stats,
    /// Next device of the initial connect schedule.
    connect_next: usize,
    in_flight: usize,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    stdin: Vec<u8>,
    stopping: bool,
    next_sweep_us: u64,
    next_progress_us: u64,
    /// Reused text buffers for building sends.
    text: String,
    ids: String,
    to: String,
    rng: u64,
}

impl Worker {
    /// Reads the init line from stdin and sets everything up.
    fn from_stdin() -> Result<Worker, WorkerError> {
        let mut stdin = Vec::new();
        let mut chunk = [0u8; 4096];
        // Blocking until the first line: the coordinator writes it at once.
        let line_end = loop {
            if let Some(p) = stdin.iter().position(|b| *b == b'\n') {
                break p;
            }
            let n = os::read_stdin(&mut chunk)?;
            if n == 0 {
                return Err(WorkerError::NoInit);
            }
            stdin.extend_from_slice(&chunk[..n]);
        };
        let init: WorkerInit = decode(&String::from_utf8_lossy(&stdin[..line_end]))?;
        stdin.drain(..=line_end);
        let proto = match init.target.kind {
            TargetKind::Tern => Proto::Tern { ws: init.target.transport == Transport::Ws },
            #[cfg(feature = "nats")]
            k => Proto::Nats { jetstream: k == TargetKind::Jetstream },
            #[cfg(not(feature = "nats"))]
            k => return Err(WorkerError::NoNats(k)),
        };
        let mut addrs = Vec::new();
        for a in &init.target.addrs {
            let sa = a.to_socket_addrs().and_then(|mut i| {
                i.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to nothing"))
            });
            addrs.push(sa.map_err(|source| WorkerError::Resolve { addr: a.clone(), source })?);
        }
        let ep = Epoll::new()?;
        os::set_nonblocking(0)?;
        ep.add(0, STDIN, os::IN)?;
        let n = (init.end_user - init.first_user) as usize * init.devices as usize;
        let d = init.devices.max(1) as usize;
        let devs = (0..n).map(|k| Dev::new(init.first_user + (k / d) as u32, (k % d) as u32)).collect();
        let rng = u64::from(init.worker).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mono_us();
        Ok(Worker::with(init, proto, addrs, ep, devs, stdin, rng))
    }

    pub(crate) fn with(
        init: WorkerInit,
        proto: Proto,
        addrs: Vec<SocketAddr>,
        ep: Epoll,
        devs: Vec<Dev>,
        stdin: Vec<u8>,
        rng: u64,
    ) -> Worker {
        Worker {
            init,
            proto,
            addrs,
            ep,
            devs,
            book: None,
            stats: Stats::default(),
            connect_next: 0,
            in_flight: 0,
            dirty: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            stdin,
            stopping: false,
            next_sweep_us: 0,
            next_progress_us: 0,
            text: String::new(),
            ids: String::new(),
            to: String::new(),
            rng: rng | 1,
        }
    }

    /// The loop: due connects and sends, the sweep, reports, writes; then wait for work.
    ///
    /// Ticks: a wake-up is the worker's dearest event (on the 2-core Firecracker VM a
    /// timer wake-up costs a process ~13–20 µs of CPU, measured with a bare
    /// `nanosleep` loop under `perf stat`, where a syscall costs ~0.2 µs), so a busy worker wakes once per tick of
    /// `--coalesce-us`: it sleeps the tick out in `clock_nanosleep`, which no socket
    /// interrupts, then takes every ready socket in one `epoll_wait(0)` and writes every
    /// send that fell due. An idle worker (the last wait found nothing) blocks in
    /// `epoll_pwait2` until the first ready socket or the next due time, a due time
    /// inside the tick rounded up to its end ([`idle_wait_until`]).
    /// Either way no turn starts less than a tick after the previous one, so the wake-ups
    /// per second are bounded by `1e6 / coalesce_us` whatever the rate, and a send is
    /// written at most one tick after it fell due (inside the measured latency).
    fn run(&mut self) -> Result<(), WorkerError> {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // Commands that came with the init line.
        self.commands()?;
        let tick = self.init.coalesce_us;
        // The last wait found sockets ready (more are likely within the tick).
        let mut busy = false;
        // It filled the event array: more are ready now, no sleep.
        let mut full = false;
        loop {
            let now = mono_us();
            self.turn(now);
            if self.stopping {
                self.stop();
                emit(&Event::Stopped);
                return Ok(());
            }
            let n = if full {
                self.ep.wait(&mut evs, 0)?
            } else if busy && tick > 0 {
                os::sleep_until(now + tick);
                self.ep.wait(&mut evs, 0)?
            } else {
                let until = idle_wait_until(self.next_wake(now), now, tick);
                self.ep.wait(&mut evs, until.saturating_sub(mono_us()))?
            };
            busy = n > 0;
            full = n == evs.len();
            for (i, ev) in evs[..n].iter().enumerate() {
                // Read per event: a frame's arrival time must not be the batch's start.
                let now = mono_us();
                let (token, events) = (ev.u64, ev.events);
                if token == STDIN {
                    self.read_stdin()?;
                } else {
                    self.on_ready(token as usize, events, now);
                }
                if i % 64 == 63 {
                    // A long batch must not hold back sends that fell due meanwhile.
                    self.sends_due(now);
                    self.flush(now);
                }
            }
        }
    }

    /// Everything that is due at `now`, then the writes.
    pub(crate) fn turn(&mut self, now: u64) {
        self.connects_due(now);
        self.sends_due(now);
        if now >= self.next_sweep_us {
            self.sweep(now);
            self.next_sweep_us = now + SWEEP_US;
        }
        self.report(now);
        self.flush(now);
    }

    fn next_wake(&self, now: u64) -> u64 {
        let mut wake = self.next_sweep_us;
        if let Some(b) = &self.book {
            if b.cursor < b.sched.count {
                wake = wake.min(b.sched.due_us(b.cursor));
            }
            if !b.finished {
                wake = wake.min(b.sched.t0_us + u64::from(b.next_tick_sec) * 1_000_000);
            }
        }
        if self.connect_next < self.devs.len() && self.in_flight < MAX_CONNECTS_IN_FLIGHT {
            wake = wake.min(self.connect_due_us(self.connect_next));
        }
        if !self.stats.connected_reported {
            wake = wake.min(self.next_progress_us);
        }
        wake.max(now)
    }

    fn connect_due_us(&self, k: usize) -> u64 {
        self.init.connect_start_us + (k as f64 * 1e6 / self.init.connect_rate.max(1e-6)) as u64
    }

    // ---- coordinator commands ----

    fn read_stdin(&mut self) -> Result<(), WorkerError> {
        let mut chunk = [0u8; 4096];
        loop {
            match os::read_stdin(&mut chunk) {
                Ok(0) => {
                    self.stopping = true;
                    break;
                }
                Ok(n) => self.stdin.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.commands()
    }

    fn commands(&mut self) -> Result<(), WorkerError> {
        while let Some(p) = self.stdin.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.stdin.drain(..=p).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            match decode::<Command>(&line)? {
                Command::Run(spec) => self.start_run(&spec),
                Command::Drain { run, failed, deadline_us } => self.start_drain(run, failed, deadline_us),
                Command::Status => emit(&Event::Status { alive: self.stats.alive, closed: self.stats.closed.clone() }),
                Command::Stop => self.stopping = true,
            }
        }
        Ok(())
    }

    pub(crate) fn start_run(&mut self, spec: &RunSpec) {
        let mut b = Book::new(spec);
        for d in &mut self.devs {
            d.bits = Bits::new(b.sched.slots_for(b.sched.unit_of(d.user)));
            d.pending.clear();
            d.outbox.clear();
        }
        skip_remote(self.init.first_user, self.init.end_user, &mut b);
        self.book = Some(b);
    }

    fn start_drain(&mut self, run: u32, failed: Vec<u64>, deadline_us: u64) {
        let (first, end) = (self.init.first_user, self.init.end_user);
        let Some(b) = self.book.as_mut().filter(|b| b.run == run) else { return };
        let failed: HashSet<u64> = failed.into_iter().collect();
        let mut failed_per_user = std::collections::HashMap::<u32, u64>::new();
        for &i in &failed {
            let u = b.sched.recipient(i);
            if u >= first && u < end && i < b.sched.count {
                *failed_per_user.entry(u).or_default() += 1;
            }
        }
        let per_dev: Vec<u64> = if b.sched.members > 0 {
            // A group's member gets its group's messages but its own, and none that failed.
            let s = b.sched;
            self.devs
                .iter()
                .map(|d| {
                    let g = s.unit_of(d.user);
                    (0..s.slots_for(g))
                        .map(|j| s.index_of(g, j))
                        .filter(|&i| s.sender(i) != d.user && !failed.contains(&i))
                        .count() as u64
                })
                .collect()
        } else {
            self.devs
                .iter()
                .map(|d| b.sched.slots_for(d.user) - failed_per_user.get(&d.user).copied().unwrap_or(0))
                .collect()
        };
        let expected = per_dev.iter().sum();
        b.drain = Some(Drain { failed, deadline_us, expected, per_dev });
    }

    // ---- scheduling ----

    fn connects_due(&mut self, now: u64) {
        while self.connect_next < self.devs.len()
            && self.in_flight < MAX_CONNECTS_IN_FLIGHT
            && self.connect_due_us(self.connect_next) <= now
        {
            let k = self.connect_next;
            self.connect_next += 1;
            // The clock again: connects of one turn go out one after another, and the
            // login latency starts at each one's own start.
            let start = mono_us();
            self.stats.pace.record(start.saturating_sub(self.connect_due_us(k)));
            self.connect(k, start);
        }
    }

    fn sends_due(&mut self, now: u64) {
        let (first, devices) = (self.init.first_user, self.init.devices.max(1));
        loop {
            let Some(b) = self.book.as_mut() else { return };
            if b.cursor >= b.sched.count {
                return;
            }
            let i = b.cursor;
            let due = b.sched.due_us(i);
            if due > now {
                return;
            }
            let s = b.sched.sender(i);
            let k = (s - first) as usize * devices as usize + b.sched.sender_device(i) as usize;
            let p = Pending { run: b.run, index: i, due_us: due, to: b.sched.recipient(i), tries: 0, written_us: 0 };
            b.dispatched += 1;
            b.cursor += 1;
            skip_remote(self.init.first_user, self.init.end_user, b);
            self.dispatch(k, p, now);
        }
    }

    /// Hands a due send to device `k`: written now, queued for its next session, or
    /// failed if the device never logged in.
    fn dispatch(&mut self, k: usize, p: Pending, now: u64) {
        let Some(dev) = self.devs.get_mut(k) else { return };
        match dev.phase {
            Phase::Online if dev.outbox.is_empty() => self.write_send(k, p, now),
            _ if dev.ever_online => {
                dev.outbox.push_back(p);
                self.write_outbox(k, now);
            }
            _ => {
                if let Some(b) = self.book.as_mut() {
                    b.answered += 1;
                    b.fail(p.index, "device not connected".into());
                }
            }
        }
    }

    // ---- connections ----

    fn connect(&mut self, k: usize, now: u64) {
        let src = self.init.source_ips[k % self.init.source_ips.len().max(1)];
        // Spread over gateways by global device number, so every worker uses all of them.
        let addr = self.addrs[(self.init.worker as usize + k) % self.addrs.len().max(1)];
        self.in_flight += 1;
        let dev = &mut self.devs[k];
        dev.phase = Phase::Connecting;
        dev.since_us = now;
        let s = match os::start_connect(src, addr) {
            Ok(s) => s,
            Err(e) => return self.end(k, End::closed(format!("connect: {:?}", e.kind())), now),
        };
        if self.proto == (Proto::Tern { ws: false }) {
            // On loopback the handshake is done when `connect` returns: the Login goes
            // out at once, and the socket is watched for its answer only — no wake-up,
            // SO_ERROR query and epoll change for the connect's own completion.
            match self.login_now(k, &s) {
                Ok(true) => {
                    let ev = if self.devs[k].writing { os::IN | os::OUT } else { os::IN };
                    if let Err(e) = self.ep.add(s.as_raw_fd(), k as u64, ev) {
                        return self.end(k, End::closed(format!("epoll: {:?}", e.kind())), now);
                    }
                    self.devs[k].sock = Some(s);
                    return;
                }
                Ok(false) => self.stats.connect.slow_connects += 1, // still connecting: wait as below
                Err(e) => return self.end(k, End::closed(format!("connect: {:?}", e.kind())), now),
            }
        }
        if let Err(e) = self.ep.add(s.as_raw_fd(), k as u64, os::OUT) {
            return self.end(k, End::closed(format!("epoll: {:?}", e.kind())), now);
        }
        self.devs[k].sock = Some(s);
    }

    /// Writes the Tern Login on a socket whose connect may still be in progress.
    /// `Ok(false)`: not connected yet (nothing written, nothing queued); `Ok(true)`: the
    /// Login is written, or its rest queued with `writing` set.
    fn login_now(&mut self, k: usize, s: &Socket) -> std::io::Result<bool> {
        // Written here, not by the turn's flush: `writing` keeps `mark` from listing it.
        self.devs[k].writing = true;
        self.login(k);
        let dev = &mut self.devs[k];
        let mut w: &Socket = s;
        let mut done = 0;
        while done < dev.wbuf.len() {
            match w.write(&dev.wbuf[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOTCONN)) => {
                    dev.wbuf.clear();
                    dev.writing = false;
                    dev.phase = Phase::Connecting;
                    return Ok(false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        dev.wbuf.drain(..done);
        dev.writing = !dev.wbuf.is_empty();
        Ok(true)
    }

    fn on_ready(&mut self, k: usize, events: u32, now: u64) {
        let Some(dev) = self.devs.get(k) else { return };
        if dev.sock.is_none() {
            return;
        }
        if dev.phase == Phase::Connecting {
            let err = dev.sock.as_ref().map(|s| s.take_error());
            match err {
                Some(Ok(None)) => self.on_connected(k, now),
                Some(Ok(Some(e)) | Err(e)) => self.end(k, End::closed(format!("connect: {:?}", e.kind())), now),
                None => {}
            }
            return;
        }
        if events & os::OUT != 0 && dev.writing {
            self.write_out(k, now);
        }
        if events & !os::OUT != 0 {
            self.read_in(k, now);
        }
    }

    fn on_connected(&mut self, k: usize, now: u64) {
        let dev = &mut self.devs[k];
        if let Some(s) = &dev.sock {
            if let Err(e) = self.ep.modify(s.as_raw_fd(), k as u64, os::IN) {
                return self.end(k, End::closed(format!("epoll: {:?}", e.kind())), now);
            }
        }
        match self.proto {
            Proto::Tern { ws: true } => {
                let host = self.addrs[(self.init.worker as usize + k) % self.addrs.len().max(1)].to_string();
                dev.phase = Phase::Upgrading;
                dev.wbuf.extend_from_slice(&wsc::upgrade_request(&host));
                self.mark(k);
            }
            Proto::Tern { ws: false } => self.login(k),
            #[cfg(feature = "nats")]
            Proto::Nats { jetstream } => {
                let subject = self.init.target.subject(dev.user);
                let inbox = jetstream.then(|| inbox(self.init.worker, k));
                crate::harness::nats::hello(&mut self.devs[k].wbuf, &subject, inbox.as_deref());
                let dev = &mut self.devs[k];
                dev.phase = Phase::LoggingIn { rid: 0 };
                self.mark(k);
            }
        }
    }

    /// Writes the Tern Login.
    fn login(&mut self, k: usize) {
        let t = &self.init.target;
        let dev = &mut self.devs[k];
        let user_id = t.user_id(dev.user);
        let rid = dev.next_rid();
        let frame = encode::login(
            rid,
            t.app_id,
            &user_id,
            &user_sign(t, &user_id),
            client_type(dev.device),
            &format!("d{}", dev.device),
            CLIENT_VERSION,
        );
        dev.phase = Phase::LoggingIn { rid };
        dev.sent_us = mono_us();
        self.put_frame(k, &frame);
    }

    /// The session is up (LoginAck, or NATS's PONG): count it, then catch up and send
    /// what waited.
    pub(crate) fn on_online(&mut self, k: usize, now: u64, hb_us: u64, server_max_seq: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.alive += 1;
        let dev = &mut self.devs[k];
        // A group's member catches up on its group after a reconnect (the LoginAck names
        // the inbox's newest seq only, and a group pull from the sync point is cheap).
        let group_catch_up = self.init.members > 0 && dev.ever_online;
        if dev.ever_online {
            if let Some(b) = self.book.as_mut() {
                b.reconnects += 1;
            }
        } else {
            dev.ever_online = true;
            self.stats.attempts_done += 1;
            let c = &mut self.stats.connect;
            c.ok += 1;
            c.first_start_us = if c.first_start_us == 0 { dev.since_us } else { c.first_start_us.min(dev.since_us) };
            c.last_done_us = c.last_done_us.max(now);
            self.stats.login.record(now.saturating_sub(dev.since_us));
            self.stats.handshake.record(dev.sent_us.saturating_sub(dev.since_us));
            self.stats.answer.record(now.saturating_sub(dev.sent_us));
        }
        dev.phase = Phase::Online;
        dev.attempt = 0;
        dev.hb_us = hb_us;
        // A random phase, so thousands of devices do not ping in step.
        let r = self.next_rand();
        let dev = &mut self.devs[k];
        dev.next_hb_us = now + r % hb_us.max(1);
        // The first PushAck at a random phase too (see `push_ack`).
        let every = self.init.push_ack_ms * 1_000;
        if every > 0 {
            dev.next_ack_us = now + (r >> 20) % every;
        }
        if group_catch_up {
            self.pull(k);
        } else if server_max_seq > dev.sync_seq && self.init.members == 0 {
            dev.notified = dev.notified.max(server_max_seq);
            self.pull(k);
        }
        let run = self.book.as_ref().map(|b| b.run);
        self.devs[k].outbox.retain(|p| Some(p.run) == run);
        self.write_outbox(k, now);
    }

    /// The worker's xorshift generator, one step (jitter only: no quality needed).
    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A send the server refused with `code`: written again later if it was busy
    /// (80009) and `--retry-busy` allows another try, as a client backs off and retries
    /// (`None`: back in the outbox, in send order); else it is handed back, refused.
    fn retry_if_busy(&mut self, k: usize, p: Pending, code: u32, now: u64) -> Option<Pending> {
        if code != tern_schema::codes::SERVICE_UNAVAILABLE || p.tries > self.init.retry_busy {
            return Some(p);
        }
        let jitter = self.next_rand() % BUSY_RETRY_JITTER_US;
        let dev = &mut self.devs[k];
        // 100 ms as the refusal says, doubling while it is refused again (up to 1.6 s:
        // fixed-delay retries against a full server come back as a storm), plus jitter
        // so refused devices do not come back in step; and a smaller window, as after
        // a slow-consumer kick.
        let backoff = BUSY_RETRY_US << p.tries.saturating_sub(1).min(BUSY_RETRY_MAX_DOUBLINGS);
        dev.retry_at_us = now + backoff + jitter;
        dev.window = (dev.window / 2).max(1);
        dev.window_acks = 0;
        // Back in send order, not at the head: when several sends of a burst are
        // refused (the server holds a connection's later sends behind a refused one,
        // PROTOCOL.md), the first refused must be written first again.
        let at = dev.outbox.partition_point(|q| (q.run, q.index) < (p.run, p.index));
        dev.outbox.insert(at, p);
        None
    }

    /// Writes from the outbox while the device is online, its window has room and it
    /// is not backing off after a busy refusal.
    fn write_outbox(&mut self, k: usize, now: u64) {
        loop {
            let dev = &mut self.devs[k];
            if dev.phase != Phase::Online || dev.pending.len() >= dev.window || now < dev.retry_at_us {
                return;
            }
            let Some(p) = dev.outbox.pop_front() else { return };
            self.write_send(k, p, now);
        }
    }

    /// Ends device `k`'s connection (or connection attempt) and decides what next.
    pub(crate) fn end(&mut self, k: usize, why: End, now: u64) {
        let Some(dev) = self.devs.get_mut(k) else { return };
        let was = dev.phase;
        dev.reset_connection();
        if why.kick && why.reason == "SlowConsumer" {
            dev.window = (dev.window / 2).max(1);
            dev.window_acks = 0;
        }
        let reconnect = self.init.reconnect && !self.stopping;
        match was {
            Phase::Idle { .. } => return,
            Phase::Online => {
                self.stats.alive = self.stats.alive.saturating_sub(1);
                *self.stats.closed.entry(why.reason.clone()).or_default() += 1;
                if let Some(b) = self.book.as_mut() {
                    let m = if why.kick { &mut b.kicks } else { &mut b.drops };
                    *m.entry(why.reason.clone()).or_default() += 1;
                }
            }
            Phase::Connecting | Phase::Upgrading | Phase::LoggingIn { .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if !dev.ever_online {
                    // The first login failed: a failed connection, not retried.
                    self.stats.attempts_done += 1;
                    let c = &mut self.stats.connect;
                    c.failed += 1;
                    c.first_start_us =
                        if c.first_start_us == 0 { dev.since_us } else { c.first_start_us.min(dev.since_us) };
                    c.last_done_us = c.last_done_us.max(now);
                    *c.reasons.entry(why.reason).or_default() += 1;
                    dev.phase = Phase::Idle { at_us: u64::MAX };
                    return;
                }
                if let Some(b) = self.book.as_mut() {
                    *b.reconnect_failures.entry(why.reason.clone()).or_default() += 1;
                }
                dev.attempt = dev.attempt.saturating_add(1);
            }
        }
        // Unanswered sends go back to the outbox, oldest first, to be resent.
        let mut back: Vec<Pending> = dev.pending.drain(..).map(|(_, p)| p).collect();
        back.extend(dev.outbox.drain(..));
        back.sort_by_key(|p| p.index);
        if reconnect {
            dev.outbox = back.into();
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let base = (BACKOFF_MIN_US << dev.attempt.min(10)).min(BACKOFF_MAX_US);
            dev.phase = Phase::Idle { at_us: now + base / 2 + self.rng % base.max(1) };
        } else {
            dev.phase = Phase::Idle { at_us: u64::MAX };
            if let Some(b) = self.book.as_mut() {
                let run = b.run;
                for p in back.iter().filter(|p| p.run == run) {
                    b.answered += 1;
                    b.fail(p.index, why.reason.clone());
                }
            }
        }
    }

    // ---- reading ----

    fn read_in(&mut self, k: usize, now: u64) {
        let n = {
            let Some(s) = self.devs[k].sock.as_ref() else { return };
            let mut s: &Socket = s;
            match s.read(&mut self.scratch) {
                Ok(0) => {
                    let pending = self.devs[k].rbuf.len();
                    let why = if pending == 0 {
                        "closed".to_owned()
                    } else {
                        format!("closed inside a frame ({pending} bytes)")
                    };
                    return self.end(k, End::closed(why), now);
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                    return
                }
                Err(e) => return self.end(k, End::closed(format!("io: {:?}", e.kind())), now),
            }
        };
        let scratch = std::mem::take(&mut self.scratch);
        let mut buf = std::mem::take(&mut self.devs[k].rbuf);
        let res = if buf.is_empty() {
            // The common case: whole frames straight from the scratch buffer, no copy.
            let r = self.consume(k, &scratch[..n], now);
            if let Ok(used) = r {
                buf.extend_from_slice(&scratch[used..n]);
            }
            r.map(drop)
        } else {
            buf.extend_from_slice(&scratch[..n]);
            let r = self.consume(k, &buf, now);
            if let Ok(used) = r {
                buf.drain(..used);
            }
            r.map(drop)
        };
        self.scratch = scratch;
        match res {
            Ok(()) if self.devs[k].sock.is_some() => {
                if buf.capacity() > 4 * READ_CHUNK && buf.len() < READ_CHUNK {
                    buf.shrink_to(READ_CHUNK);
                }
                self.devs[k].rbuf = buf;
            }
            Ok(()) => {}
            Err(why) => self.end(k, why, now),
        }
    }

    /// Handles every whole unit (frame, WebSocket message, NATS line) at the start of
    /// `buf`; returns the bytes used, or why the connection must end (nothing in here
    /// ends it: the caller does, so the unit loop never runs on a closed device).
    fn consume(&mut self, k: usize, buf: &[u8], now: u64) -> Result<usize, End> {
        match self.proto {
            Proto::Tern { ws: false } => {
                let mut pos = 0;
                loop {
                    match split_frame(&buf[pos..], MAX_PAYLOAD_LEN) {
                        Ok(Some(total)) => {
                            self.on_tern_frame(k, &buf[pos..pos + total], now)?;
                            pos += total;
                        }
                        Ok(None) => break,
                        Err(e) => return Err(End::closed(format!("bad frame: {e}"))),
                    }
                }
                Ok(pos)
            }
            Proto::Tern { ws: true } => {
                let mut pos = 0;
                if self.devs[k].phase == Phase::Upgrading {
                    match wsc::upgrade_answer(buf) {
                        None => return Ok(0),
                        Some(Err(status)) => return Err(End::closed(format!("handshake: {status}"))),
                        Some(Ok(n)) => {
                            pos = n;
                            self.login(k);
                        }
                    }
                }
                loop {
                    match wsc::next(&buf[pos..], MAX_PAYLOAD_LEN + HEADER_LEN) {
                        Ok(Some((item, used))) => {
                            pos += used;
                            match item {
                                wsc::WsIn::Binary(f) => match split_frame(f, MAX_PAYLOAD_LEN) {
                                    Ok(Some(n)) if n == f.len() => self.on_tern_frame(k, f, now)?,
                                    _ => {} // one bad message: skipped, as the client library does
                                },
                                wsc::WsIn::Close(code) => {
                                    return Err(End::closed(match code {
                                        Some(c) => format!("closed: {c}"),
                                        None => "closed".into(),
                                    }))
                                }
                                wsc::WsIn::Ping(p) => {
                                    let mask = self.mask();
                                    wsc::encode_pong(&mut self.devs[k].wbuf, p, mask);
                                    self.mark(k);
                                }
                                wsc::WsIn::Ignored => {}
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Err(End::closed(e.to_string())),
                    }
                }
                Ok(pos)
            }
            #[cfg(feature = "nats")]
            Proto::Nats { .. } => self.consume_nats(k, buf, now),
        }
    }

    /// One whole Tern frame (header included) from device `k`'s connection.
    fn on_tern_frame(&mut self, k: usize, bytes: &[u8], now: u64) -> Result<(), End> {
        // A malformed payload loses that frame only, as in the client library.
        let Ok(f) = parse_client(&bytes[HEADER_LEN..]) else { return Ok(()) };
        let rid = f.request_id();
        let phase = self.devs[k].phase;
        match f.body_type() {
            Body::LoginAck if phase == (Phase::LoggingIn { rid }) => {
                let ack = f.body_as_login_ack();
                let hb = ack.map_or(0, |a| u64::from(a.heartbeat_interval_ms())) * 1_000;
                let hb = if hb == 0 { FALLBACK_HEARTBEAT_US } else { hb };
                let max = ack
                    .and_then(|a| a.max_seqs())
                    .and_then(|v| v.iter().find(|ks| ks.kind() == SyncKind::Message))
                    .map_or(0, |ks| ks.seq());
                self.on_online(k, now, hb, max);
            }
            Body::Error => {
                let code = f.body_as_error().map_or(0, |e| e.code());
                if let Phase::LoggingIn { rid: want } = phase {
                    if rid == want || rid == 0 {
                        return Err(End::closed(format!("login rejected {code}")));
                    }
                }
                let dev = &mut self.devs[k];
                if rid != 0 && Some(rid) == dev.pulling {
                    // Tried again at the next sweep (notified is still ahead).
                    dev.pulling = None;
                } else if let Some(p) = dev.take_pending(rid) {
                    if let Some(p) = self.retry_if_busy(k, p, code, now) {
                        if let Some(b) = self.book.as_mut() {
                            b.answer(&p, Err(format!("Error {code}")), now);
                        }
                    }
                    self.write_outbox(k, now);
                }
            }
            Body::Kick => {
                let reason = f.body_as_kick().map(|k| k.reason());
                return Err(End::kick(match reason {
                    Some(r) => format!("{r:?}"),
                    None => "Kick".into(),
                }));
            }
            Body::SendAck => {
                let code = f.body_as_send_ack().map_or(0, |a| a.code());
                if let Some(p) = self.devs[k].take_pending(rid) {
                    let answer = if code == tern_schema::codes::OK {
                        self.devs[k].grow_window();
                        Some((p, Ok(())))
                    } else {
                        self.retry_if_busy(k, p, code, now).map(|p| (p, Err(format!("SendAck {code}"))))
                    };
                    if let (Some((p, outcome)), Some(b)) = (answer, self.book.as_mut()) {
                        b.answer(&p, outcome, now);
                    }
                    self.write_outbox(k, now);
                }
            }
            Body::Push => {
                let Some(msgs) = f.body_as_push().and_then(|p| p.messages()) else { return Ok(()) };
                let prefix = self.init.target.user_prefix.as_str();
                let group = self.init.members > 0;
                let dev = &mut self.devs[k];
                for m in msgs.iter() {
                    // Group members track their group's timeline only (each test user is
                    // in one group); 1:1 devices their inbox.
                    if group != (m.conversation_type() == ConversationType::Group) {
                        continue;
                    }
                    let seq = m.seq();
                    if dev.holds(seq) {
                        continue;
                    }
                    // Pushes come in seq order without gaps while the connection lives:
                    // once caught up, each one moves the sync point.
                    if dev.catching_up {
                        dev.hold_above(seq);
                    } else {
                        dev.advance(seq);
                    }
                    deliver_entry(self.book.as_mut(), dev, prefix, &m, now);
                }
            }
            Body::PullResult if Some(rid) == self.devs[k].pulling => {
                let Some(r) = f.body_as_pull_result() else { return Ok(()) };
                let prefix = self.init.target.user_prefix.as_str();
                let dev = &mut self.devs[k];
                dev.pulling = None;
                let mut page_max = 0;
                for m in r.messages().iter().flatten() {
                    let seq = m.seq();
                    page_max = page_max.max(seq);
                    if dev.holds(seq) {
                        continue;
                    }
                    deliver_entry(self.book.as_mut(), dev, prefix, &m, now);
                }
                // A page is every entry in (after, page_max]: held now, even if the
                // connection is lost before the next page.
                dev.advance(page_max);
                if r.completed() || page_max == 0 {
                    // Caught up: everything up to the server's max is held, and the seqs
                    // pushed meanwhile continue it without a gap (entries committed after
                    // the page was read are pushed to this session).
                    dev.advance(r.max_seq());
                    if let Some(&last) = dev.held_above.last() {
                        dev.advance(last);
                    }
                    dev.catching_up = false;
                    if dev.notified > dev.sync_seq {
                        self.pull(k);
                    }
                } else {
                    self.pull(k);
                }
            }
            Body::SyncNotify => {
                let Some(n) = f.body_as_sync_notify() else { return Ok(()) };
                let dev = &mut self.devs[k];
                if self.init.members == 0 && n.kind() == SyncKind::Message && n.seq() > dev.sync_seq {
                    dev.notified = dev.notified.max(n.seq());
                    if dev.pulling.is_none() && dev.phase == Phase::Online {
                        self.pull(k);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes a PushAck of the sync point if one is due `late` µs ago (Tern).
    fn push_ack(&mut self, k: usize, now: u64, late: u64) {
        let every = self.init.push_ack_ms * 1_000;
        if every == 0 || now < self.devs[k].next_ack_us + late || self.devs[k].sync_seq <= self.devs[k].acked_seq {
            return;
        }
        // The next ack after a random half to one and a half intervals, so devices that
        // receive together (a group's members) do not ack in step: tens of thousands
        // of PushAcks in one burst are not what a client population sends.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let dev = &mut self.devs[k];
        dev.next_ack_us = now + every / 2 + self.rng % every;
        dev.acked_seq = dev.sync_seq;
        let (rid, seq) = (dev.next_rid(), dev.sync_seq);
        let frame = match self.group_of(k) {
            Some(g) => encode::push_ack_group(rid, &g, seq),
            None => encode::push_ack(rid, SyncKind::Message, seq),
        };
        self.put_frame(k, &frame);
    }

    /// Writes a Pull from the sync point.
    fn pull(&mut self, k: usize) {
        let dev = &mut self.devs[k];
        let after = dev.sync_seq;
        let rid = dev.next_rid();
        dev.pulling = Some(rid);
        dev.catching_up = true;
        if let Some(b) = self.book.as_mut() {
            b.pulls += 1;
        }
        let frame = match self.group_of(k) {
            Some(g) => encode::pull_group(rid, &g, after, PULL_LIMIT),
            None => encode::pull(rid, SyncKind::Message, after, PULL_LIMIT),
        };
        self.put_frame(k, &frame);
    }

    /// The id of device `k`'s group (`group` scenario), or `None` for 1:1 runs.
    fn group_of(&self, k: usize) -> Option<String> {
        let m = self.init.members;
        (m > 0).then(|| self.init.target.group_id(self.devs[k].user / m))
    }

    // ---- writing ----

    /// Writes send `p` from device `k` (online).
    fn write_send(&mut self, k: usize, mut p: Pending, now: u64) {
        let size = self.book.as_ref().map_or(0, |b| b.payload);
        self.text.clear();
        let _ = write!(self.text, "{}:{}:{}:", p.run, p.index, p.due_us);
        while self.text.len() < size {
            self.text.push('x');
        }
        if let Some(b) = self.book.as_mut().filter(|b| b.run == p.run) {
            if p.tries == 0 {
                b.tick.sent += 1;
                b.tick.lag.record(now.saturating_sub(p.due_us));
            } else {
                b.resent += 1;
            }
        }
        p.tries += 1;
        p.written_us = now;
        match self.proto {
            Proto::Tern { .. } => {
                // Any frame is a heartbeat, and a due PushAck rides along with the Send
                // in the same write (as clients batch acks with what they send anyway).
                let dev = &mut self.devs[k];
                dev.next_hb_us = now + dev.hb_us;
                self.push_ack(k, now, 0);
                self.ids.clear();
                let _ = write!(self.ids, "{}-{}", p.run, p.index);
                self.to.clear();
                let group = self.init.members > 0;
                // A group's id is the user prefix, `g` and its number (TargetSpec::group_id).
                let _ = write!(self.to, "{}{}{}", self.init.target.user_prefix, if group { "g" } else { "" }, p.to);
                let dev = &mut self.devs[k];
                let rid = dev.next_rid();
                let elems = [ElemParts { elem_type: ElemType::Text, text: &self.text, ..Default::default() }];
                let frame = if group {
                    message::send_to_group(rid, &self.ids, &self.to, &elems, wall_ms())
                } else {
                    message::send(rid, &self.ids, &self.to, &elems, wall_ms())
                };
                dev.pending.push((rid, p));
                self.put_frame(k, &frame);
            }
            #[cfg(feature = "nats")]
            Proto::Nats { jetstream } => {
                let subject = self.init.target.subject(p.to);
                let dev = &mut self.devs[k];
                if jetstream {
                    let key = dev.next_rid();
                    let reply = format!("{}.{key}", inbox(self.init.worker, k));
                    let dev = &mut self.devs[k];
                    crate::harness::nats::publish(&mut dev.wbuf, &subject, Some(&reply), self.text.as_bytes());
                    dev.pending.push((key, p));
                } else {
                    crate::harness::nats::publish(&mut dev.wbuf, &subject, None, self.text.as_bytes());
                    // NATS core has no ack: written is answered, with no ack latency.
                    if let Some(b) = self.book.as_mut().filter(|b| b.run == p.run) {
                        b.answered += 1;
                        b.tick.acked += 1;
                    }
                }
                self.mark(k);
            }
        }
    }

    /// Appends one Tern frame to device `k`'s output (in a WebSocket message if need be).
    fn put_frame(&mut self, k: usize, frame: &[u8]) {
        if let Proto::Tern { ws: true } = self.proto {
            let mask = self.mask();
            wsc::encode_binary(&mut self.devs[k].wbuf, frame, mask);
        } else {
            self.devs[k].wbuf.extend_from_slice(frame);
        }
        self.mark(k);
    }

    fn mark(&mut self, k: usize) {
        let dev = &mut self.devs[k];
        if !dev.dirty && !dev.writing {
            dev.dirty = true;
            self.dirty.push(k);
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_le_bytes()
    }

    /// Writes what every device queued this turn: one `write` per device.
    fn flush(&mut self, now: u64) {
        while let Some(k) = self.dirty.pop() {
            self.devs[k].dirty = false;
            self.write_out(k, now);
        }
    }

    fn write_out(&mut self, k: usize, now: u64) {
        let dev = &mut self.devs[k];
        let Some(s) = dev.sock.as_ref() else {
            dev.wbuf.clear();
            return;
        };
        if dev.phase == Phase::Connecting {
            return; // written once the connect is done
        }
        let mut s: &Socket = s;
        let mut done = 0;
        let res = loop {
            if done == dev.wbuf.len() {
                break Ok(());
            }
            match s.write(&dev.wbuf[done..]) {
                Ok(0) => break Err(End::closed("closed")),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(End::closed(format!("io: {:?}", e.kind()))),
            }
        };
        if let Err(why) = res {
            return self.end(k, why, now);
        }
        dev.wbuf.drain(..done);
        let want_out = !dev.wbuf.is_empty();
        if want_out != dev.writing {
            dev.writing = want_out;
            let ev = if want_out { os::IN | os::OUT } else { os::IN };
            if let Err(e) = self.ep.modify(s.as_raw_fd(), k as u64, ev) {
                return self.end(k, End::closed(format!("epoll: {:?}", e.kind())), now);
            }
        }
        if dev.wbuf.is_empty() && dev.wbuf.capacity() > READ_CHUNK {
            dev.wbuf = Vec::new();
        }
    }

    // ---- time-driven ----

    /// Heartbeats, PushAcks, stalled pulls, connect timeouts and due reconnects.
    fn sweep(&mut self, now: u64) {
        let ack_every = self.init.push_ack_ms * 1_000;
        for k in 0..self.devs.len() {
            let dev = &mut self.devs[k];
            match dev.phase {
                Phase::Online => {
                    if now >= dev.next_hb_us {
                        dev.next_hb_us = now + dev.hb_us;
                        match self.proto {
                            Proto::Tern { .. } => {
                                let rid = dev.next_rid();
                                self.put_frame(k, &encode::ping(rid, wall_ms()));
                            }
                            #[cfg(feature = "nats")]
                            Proto::Nats { .. } => {
                                dev.wbuf.extend_from_slice(b"PING\r\n");
                                self.mark(k);
                            }
                        }
                    }
                    if !matches!(self.proto, Proto::Tern { .. }) {
                        continue;
                    }
                    // A busy refusal's backoff is over: the held sends go out.
                    let dev = &mut self.devs[k];
                    if dev.retry_at_us != 0 && now >= dev.retry_at_us {
                        dev.retry_at_us = 0;
                        self.write_outbox(k, now);
                    }
                    // On its own only one interval late: a device that sends acks with
                    // its next Send; one that only receives still acks.
                    self.push_ack(k, now, ack_every);
                    let dev = &self.devs[k];
                    if dev.pulling.is_none() && (dev.notified > dev.sync_seq || dev.catching_up) {
                        self.pull(k);
                    }
                }
                Phase::Connecting | Phase::Upgrading | Phase::LoggingIn { .. } => {
                    if now >= dev.since_us + CONNECT_TIMEOUT_US {
                        self.end(k, End::closed("timeout"), now);
                    }
                }
                Phase::Idle { at_us } => {
                    if at_us <= now && self.in_flight < MAX_CONNECTS_IN_FLIGHT && !self.stopping {
                        self.connect(k, now);
                    }
                }
            }
        }
    }

    /// Progress during the connection phase, ticks, `Sent` and `Drained`.
    fn report(&mut self, now: u64) {
        if !self.stats.connected_reported && now >= self.next_progress_us {
            self.next_progress_us = now + PROGRESS_US;
            let c = &self.stats.connect;
            emit(&Event::Progress { connected: c.ok, failed: c.failed });
            if self.stats.attempts_done >= self.devs.len() as u64 {
                self.stats.connected_reported = true;
                let mut report = self.stats.connect.clone();
                report.login = self.stats.login.to_data();
                report.handshake = self.stats.handshake.to_data();
                report.answer = self.stats.answer.to_data();
                report.pace = self.stats.pace.to_data();
                emit(&Event::Connected(report));
            }
        }
        let Some(b) = self.book.as_mut() else { return };
        if b.finished {
            return;
        }
        while now >= b.sched.t0_us + u64::from(b.next_tick_sec) * 1_000_000 {
            let sec = b.next_tick_sec;
            b.next_tick_sec += 1;
            emit(&Event::Tick(b.tick.take(b.run, sec)));
        }
        let scheduled = b.cursor >= b.sched.count;
        if scheduled && !b.sent_reported && (b.answered >= b.dispatched || now >= b.ack_deadline_us) {
            self.report_sent(now);
        }
        let due = self.book.as_ref().and_then(|b| b.drain.as_ref()).map(|d| (d.expected, d.deadline_us));
        if let Some((expected, deadline)) = due {
            // Checked at sweep pace (the sweep just ran when `next_sweep_us` is a full
            // interval away): summing 15,000 counters per turn would cost more than
            // the turn.
            if self.next_sweep_us >= now + SWEEP_US {
                let received: u64 = self.devs.iter().map(|d| d.bits.ones()).sum();
                if received >= expected || now >= deadline {
                    self.report_drained(now);
                }
            }
        }
    }

    /// Whatever is still unanswered has timed out (or was never written); says `Sent`.
    fn report_sent(&mut self, _now: u64) {
        let Some(b) = self.book.as_mut() else { return };
        let run = b.run;
        for d in &mut self.devs {
            for (_, p) in d.pending.iter().filter(|(_, p)| p.run == run) {
                b.answered += 1;
                b.fail(p.index, "ack timeout".into());
            }
            d.pending.retain(|(_, p)| p.run != run);
            for p in d.outbox.iter().filter(|p| p.run == run) {
                b.answered += 1;
                b.fail(p.index, "not sent: device offline".into());
            }
            d.outbox.retain(|p| p.run != run);
        }
        b.sent_reported = true;
        emit(&Event::Sent { run, sent: b.dispatched, failed: b.failed.clone(), errors: b.errors.clone() });
    }

    fn report_drained(&mut self, now: u64) {
        let Some(b) = self.book.as_mut() else { return };
        let Some(d) = b.drain.take() else { return };
        let mut report = DrainReport { run: b.run, expected: d.expected, ..Default::default() };
        for (dev, want) in self.devs.iter().zip(&d.per_dev) {
            let mut unexpected = 0;
            for &i in &d.failed {
                if b.sched.receives(dev.user, i) && dev.bits.contains(b.sched.slot(i)) {
                    unexpected += 1;
                }
            }
            let got = dev.bits.ones() - unexpected;
            report.received += got;
            report.unexpected += unexpected;
            report.lost += want.saturating_sub(got);
        }
        report.duplicates = b.duplicates;
        report.stray = b.stray;
        report.last_delivery_us = b.last_delivery_us;
        report.cpu_secs = crate::harness::sysinfo::own_cpu_secs() - b.cpu_at_start;
        report.kicks = std::mem::take(&mut b.kicks);
        report.drops = std::mem::take(&mut b.drops);
        report.reconnects = b.reconnects;
        report.reconnect_failures = std::mem::take(&mut b.reconnect_failures);
        report.resent = b.resent;
        report.pulls = b.pulls;
        let sec = ((now.saturating_sub(b.sched.t0_us)) / 1_000_000) as u32 + 1;
        report.tail = b.tick.take(b.run, sec.max(b.next_tick_sec));
        b.finished = true;
        emit(&Event::Drained(report));
    }

    /// Logs every Tern device out and closes every connection.
    fn stop(&mut self) {
        for k in 0..self.devs.len() {
            if self.devs[k].phase == Phase::Online && matches!(self.proto, Proto::Tern { .. }) {
                let rid = self.devs[k].next_rid();
                self.put_frame(k, &encode::logout(rid));
            }
        }
        self.flush(mono_us());
        for d in &mut self.devs {
            d.reset_connection();
            d.phase = Phase::Idle { at_us: u64::MAX };
        }
        self.stats.alive = 0;
    }

    #[cfg(feature = "nats")]
    fn consume_nats(&mut self, k: usize, buf: &[u8], now: u64) -> Result<usize, End> {
        use crate::harness::nats::{next, NatsIn};
        let mut pos = 0;
        while let Some((item, used)) = next(&buf[pos..]).map_err(End::closed)? {
            pos += used;
            match item {
                NatsIn::Pong => {
                    if let Phase::LoggingIn { .. } = self.devs[k].phase {
                        self.on_online(k, now, FALLBACK_HEARTBEAT_US, 0);
                    }
                }
                NatsIn::Ping => {
                    self.devs[k].wbuf.extend_from_slice(b"PONG\r\n");
                    self.mark(k);
                }
                NatsIn::Err(e) => return Err(End::closed(format!("-ERR {e}"))),
                NatsIn::Msg { sid, subject, payload } => {
                    if sid == b"2" {
                        // A PubAck on the device's inbox: `<inbox>.<key>`.
                        let key = subject.rsplit(|b| *b == b'.').next().unwrap_or_default();
                        let key = std::str::from_utf8(key).ok().and_then(|s| s.parse::<u32>().ok());
                        let Some(p) = key.and_then(|key| self.devs[k].take_pending(key)) else { continue };
                        let failed = payload.windows(7).any(|w| w == b"\"error\"");
                        let outcome = if failed { Err("PubAck error".to_owned()) } else { Ok(()) };
                        if let Some(b) = self.book.as_mut() {
                            b.answer(&p, outcome, now);
                        }
                        self.write_outbox(k, now);
                    } else if let Some(b) = self.book.as_mut() {
                        b.deliver(&mut self.devs[k], payload, now);
                    }
                }
                NatsIn::Other => {}
            }
        }
        Ok(pos)
    }
}

/// One timeline entry for device `dev`: a copy of the user's own send (an echo) or a
/// message to count.
fn deliver_entry(book: Option<&mut Book>, dev: &mut Dev, prefix: &str, m: &tern_schema::client::Message<'_>, now: u64) {
    let Some(b) = book else { return };
    let from_self = m
        .from_id()
        .and_then(|f| f.strip_prefix(prefix))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|u| u == dev.user);
    if from_self {
        b.tick.echoes += 1;
        return;
    }
    let text = m.elems().and_then(|e| e.iter().next()).and_then(|e| e.text()).unwrap_or("");
    b.deliver(dev, text.as_bytes(), now);
}

/// The NATS JetStream reply prefix of device `k` of `worker`; PubAcks come to
/// `<prefix>.<key>`.
#[cfg(feature = "nats")]
fn inbox(worker: u32, k: usize) -> String {
    format!("_INBOX.ternlt.{worker}.{k}")
}

/// Until when an idle worker (its last wait found no socket ready) may block after a
/// turn at `now`: the next due time `wake`, but a due time inside the current tick
/// waits for the tick's end, so due sends are gathered too; a ready socket ends the
/// wait at once either way.
fn idle_wait_until(wake: u64, now: u64, tick: u64) -> u64 {
    if wake <= now {
        now
    } else {
        wake.max(now + tick)
    }
}

/// Moves the cursor to the next message a local device (users `[first, end)`) sends.
fn skip_remote(first: u32, end: u32, b: &mut Book) {
    while b.cursor < b.sched.count {
        let s = b.sched.sender(b.cursor);
        if s >= first && s < end {
            break;
        }
        b.cursor += 1;
    }
}

fn client_type(device: u32) -> ClientType {
    match device {
        0 => ClientType::Android,
        2 => ClientType::Web,
        _ => ClientType::Linux,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use tern_schema::client::KickReason;
    use tern_schema::encode::LoginAckParts;
    use tern_schema::message::MessageParts;

    use crate::harness::config::TargetSpec;
    use crate::harness::schedule::{encode_payload, Stamp};

    /// Users 0 and 1, one device each, both in this worker; no sockets (frames are fed
    /// straight in, what the devices write stays in their buffers).
    fn worker() -> Worker {
        let target = TargetSpec {
            kind: TargetKind::Tern,
            addrs: vec!["127.0.0.1:9".into()],
            transport: Transport::Tcp,
            http: "127.0.0.1:8".into(),
            app_id: 1,
            secret: "s".into(),
            admin: "a".into(),
            user_prefix: "u".into(),
            import: false,
        };
        let init = WorkerInit {
            worker: 0,
            target,
            first_user: 0,
            end_user: 2,
            devices: 1,
            source_ips: vec![Ipv4Addr::LOCALHOST],
            connect_rate: 1.0,
            connect_start_us: u64::MAX / 2,
            push_ack_ms: 0,
            reconnect: true,
            coalesce_us: 0,
            members: 0,
            retry_busy: 0,
        };
        let devs = vec![Dev::new(0, 0), Dev::new(1, 0)];
        let addrs = vec!["127.0.0.1:9".parse().unwrap()];
        let mut w = Worker::with(init, Proto::Tern { ws: false }, addrs, Epoll::new().unwrap(), devs, Vec::new(), 7);
        let spec = RunSpec {
            run: 1,
            t0_us: 0,
            rate: 1000.0,
            count: 10,
            users: 2,
            devices: 1,
            payload: 48,
            ack_timeout_ms: 1_000,
            members: 0,
        };
        w.start_run(&spec);
        w
    }

    /// Message `index` of run 1 from user 1 to user 0, at seq `seq` of user 0.
    fn entries(list: &[(u64, u64)]) -> Vec<(u64, String)> {
        list.iter().map(|&(seq, i)| (seq, encode_payload(Stamp { run: 1, index: i, due_us: 0 }, 48))).collect()
    }

    fn parts(e: &[(u64, String)]) -> Vec<MessageParts<'_>> {
        e.iter()
            .map(|(seq, text)| MessageParts {
                from_id: "u1",
                to_id: "u0",
                seq: *seq,
                elems: vec![ElemParts { elem_type: ElemType::Text, text, ..Default::default() }],
                ..Default::default()
            })
            .collect()
    }

    fn feed(w: &mut Worker, k: usize, frame: &[u8]) -> Result<(), End> {
        assert_eq!(w.consume(k, frame, 1_000)?, frame.len());
        Ok(())
    }

    fn login_ack(rid: u32, max: u64) -> Vec<u8> {
        let p = LoginAckParts {
            session_id: 1,
            server_time_ms: 0,
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 3_000,
            max_seqs: &[(SyncKind::Message, max)],
            acked_seqs: &[],
            max_frame_bytes: 1 << 20,
        };
        encode::login_ack(rid, &p)
    }

    /// The frames device `k` wrote, described; its buffer is emptied.
    fn written(w: &mut Worker, k: usize) -> Vec<String> {
        let buf = std::mem::take(&mut w.devs[k].wbuf);
        let mut out = Vec::new();
        let mut pos = 0;
        while let Ok(Some(n)) = split_frame(&buf[pos..], MAX_PAYLOAD_LEN) {
            let f = parse_client(&buf[pos + HEADER_LEN..pos + n]).unwrap();
            out.push(crate::describe::describe(&f));
            pos += n;
        }
        out
    }

    #[test]
    fn an_idle_wait_ends_at_the_due_time_but_not_inside_the_tick() {
        // Due after the tick: woken when due.
        assert_eq!(idle_wait_until(5_000, 1_000, 1_000), 5_000);
        // Due inside the tick: gathered with whatever else falls due until its end.
        assert_eq!(idle_wait_until(1_300, 1_000, 1_000), 2_000);
        // Due now (or overdue): no wait at all.
        assert_eq!(idle_wait_until(1_000, 1_000, 1_000), 1_000);
        assert_eq!(idle_wait_until(900, 1_000, 1_000), 1_000);
        // No ticks: exactly when due.
        assert_eq!(idle_wait_until(1_300, 1_000, 0), 1_300);
    }

    #[test]
    fn a_kicked_device_reconnects_pulls_from_its_sync_point_and_counts_each_message_once() {
        let mut w = worker();
        w.devs[0].phase = Phase::LoggingIn { rid: 1 };
        feed(&mut w, 0, &login_ack(1, 0)).unwrap();
        assert_eq!(w.devs[0].phase, Phase::Online);
        assert!(written(&mut w, 0).is_empty(), "nothing to pull at the first login");

        let first = entries(&[(1, 0), (2, 2)]);
        feed(&mut w, 0, &message::push(&parts(&first))).unwrap();
        let why = feed(&mut w, 0, &encode::kick(KickReason::SlowConsumer, "slow")).unwrap_err();
        assert_eq!(why, End::kick("SlowConsumer"));
        w.end(0, why, 2_000);
        assert!(matches!(w.devs[0].phase, Phase::Idle { at_us } if at_us < u64::MAX));

        // The reconnect's login: the server holds up to seq 5, so the device pulls from 2.
        w.devs[0].phase = Phase::LoggingIn { rid: 9 };
        feed(&mut w, 0, &login_ack(9, 5)).unwrap();
        let pull = written(&mut w, 0);
        assert_eq!(pull.len(), 1, "{pull:?}");
        assert!(pull[0].starts_with("Pull kind=Message after=2"), "{pull:?}");
        let rid = w.devs[0].pulling.unwrap();

        // Seq 5 is pushed while the pull is in flight, and the page holds it again.
        feed(&mut w, 0, &message::push(&parts(&entries(&[(5, 8)])))).unwrap();
        let page = entries(&[(3, 4), (4, 6), (5, 8)]);
        feed(&mut w, 0, &message::pull_result(rid, SyncKind::Message, &parts(&page), 5, true)).unwrap();
        // A push the page already held is dropped, as a client dedups by seq.
        feed(&mut w, 0, &message::push(&parts(&entries(&[(4, 6)])))).unwrap();

        let b = w.book.as_ref().unwrap();
        assert_eq!((w.devs[0].bits.ones(), b.duplicates, b.stray), (5, 0, 0));
        assert_eq!(w.devs[0].sync_seq, 5);
        assert_eq!(b.kicks, Reasons::from([("SlowConsumer".to_owned(), 1)]));
        assert_eq!((b.reconnects, b.pulls), (1, 1));
        assert!(!w.devs[0].catching_up && w.devs[0].pulling.is_none());
    }

    /// A SendAck(80009) for request `rid`: busy, nothing stored.
    fn busy_ack(rid: u32) -> Vec<u8> {
        message::send_ack(
            rid,
            &message::SendAckParts { code: tern_schema::codes::SERVICE_UNAVAILABLE, ..Default::default() },
        )
    }

    /// With `--retry-busy 2`, a send refused 80009 is held (with the device's later
    /// sends behind it) for the backoff, written again with the same id, held twice as
    /// long when refused again, and counted as failed only when its retries are spent;
    /// without the flag, the first refusal fails it.
    #[test]
    fn busy_refusals_are_retried_after_a_backoff_when_asked() {
        let sends =
            |w: &mut Worker| -> Vec<String> { written(w, 1).into_iter().filter(|f| f.starts_with("Send")).collect() };
        let mut w = worker();
        w.init.retry_busy = 2;
        w.devs[1].phase = Phase::LoggingIn { rid: 1 };
        feed(&mut w, 1, &login_ack(1, 0)).unwrap();
        w.dispatch(1, Pending { run: 1, index: 1, due_us: 0, to: 0, tries: 0, written_us: 0 }, 10);
        assert_eq!(sends(&mut w).len(), 1);
        let rid = w.devs[1].pending[0].0;
        feed(&mut w, 1, &busy_ack(rid)).unwrap();
        // Refused (at 1 ms), so held: a later send waits behind it, nothing is failed.
        w.dispatch(1, Pending { run: 1, index: 2, due_us: 1_500, to: 0, tries: 0, written_us: 0 }, 1_500);
        w.sweep(90_000);
        assert!(sends(&mut w).is_empty(), "backing off");
        assert_eq!((w.devs[1].outbox.len(), w.book.as_ref().unwrap().failed.len()), (2, 0));
        w.sweep(1_000 + BUSY_RETRY_US + BUSY_RETRY_JITTER_US);
        let again = sends(&mut w);
        assert!(again.len() == 2 && again[0].contains("1-1") && again[1].contains("1-2"), "in order: {again:?}");
        assert_eq!(w.book.as_ref().unwrap().resent, 1);
        // Refused again (the other is accepted): held for twice as long.
        let (first, second) = (w.devs[1].pending[0].0, w.devs[1].pending[1].0);
        feed(&mut w, 1, &busy_ack(first)).unwrap();
        feed(&mut w, 1, &message::send_ack(second, &message::SendAckParts { code: 200, ..Default::default() }))
            .unwrap();
        assert!(w.devs[1].retry_at_us >= 1_000 + 2 * BUSY_RETRY_US, "doubled: {}", w.devs[1].retry_at_us);
        w.sweep(1_000 + BUSY_RETRY_US + BUSY_RETRY_JITTER_US);
        assert!(sends(&mut w).is_empty(), "still backing off");
        w.sweep(1_000 + 2 * BUSY_RETRY_US + BUSY_RETRY_JITTER_US);
        assert_eq!(sends(&mut w).len(), 1);
        // A third refusal: its two retries are spent, it fails.
        let rid = w.devs[1].pending[0].0;
        feed(&mut w, 1, &busy_ack(rid)).unwrap();
        let b = w.book.as_ref().unwrap();
        assert_eq!((b.answered, b.tick.acked, b.failed.clone(), b.resent), (2, 1, vec![1], 2));

        // Without --retry-busy the first refusal is the answer.
        let mut w = worker();
        w.devs[1].phase = Phase::LoggingIn { rid: 1 };
        feed(&mut w, 1, &login_ack(1, 0)).unwrap();
        w.dispatch(1, Pending { run: 1, index: 1, due_us: 0, to: 0, tries: 0, written_us: 0 }, 10);
        let rid = w.devs[1].pending[0].0;
        feed(&mut w, 1, &busy_ack(rid)).unwrap();
        assert_eq!(w.book.as_ref().unwrap().failed, vec![1]);
        assert!(w.devs[1].outbox.is_empty());
    }

    /// Two sends of a burst refused (the later one held behind the first, as the server
    /// does): written again in send order, whatever order the refusals came in.
    #[test]
    fn refused_sends_of_a_burst_are_written_again_in_send_order() {
        let mut w = worker();
        w.init.retry_busy = 2;
        w.devs[1].phase = Phase::LoggingIn { rid: 1 };
        feed(&mut w, 1, &login_ack(1, 0)).unwrap();
        w.dispatch(1, Pending { run: 1, index: 1, due_us: 0, to: 0, tries: 0, written_us: 0 }, 10);
        w.dispatch(1, Pending { run: 1, index: 2, due_us: 0, to: 0, tries: 0, written_us: 0 }, 20);
        w.dispatch(1, Pending { run: 1, index: 3, due_us: 0, to: 0, tries: 0, written_us: 0 }, 30);
        assert_eq!(written(&mut w, 1).iter().filter(|f| f.starts_with("Send")).count(), 3);
        let rids: Vec<u32> = w.devs[1].pending.iter().map(|p| p.0).collect();
        feed(&mut w, 1, &busy_ack(rids[0])).unwrap();
        feed(&mut w, 1, &busy_ack(rids[1])).unwrap();
        feed(&mut w, 1, &busy_ack(rids[2])).unwrap();
        w.sweep(1_000 + 4 * BUSY_RETRY_US + BUSY_RETRY_JITTER_US);
        let again: Vec<String> = written(&mut w, 1).into_iter().filter(|f| f.starts_with("Send")).collect();
        assert!(!again.is_empty() && again[0].contains("1-1"), "the first refused goes first: {again:?}");
        let order: Vec<usize> =
            ["1-1", "1-2", "1-3"].iter().filter_map(|id| again.iter().position(|f| f.contains(id))).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "in send order: {again:?}");
    }

    #[test]
    fn unanswered_sends_are_resent_with_the_same_id_after_a_reconnect() {
        let mut w = worker();
        w.devs[1].phase = Phase::LoggingIn { rid: 1 };
        feed(&mut w, 1, &login_ack(1, 0)).unwrap();
        w.dispatch(1, Pending { run: 1, index: 1, due_us: 0, to: 0, tries: 0, written_us: 0 }, 10);
        let sent = written(&mut w, 1);
        assert!(sent[0].contains("1-1"), "{sent:?}");
        w.end(1, End::closed("closed"), 20);
        // Due while away: waits in the outbox.
        w.dispatch(1, Pending { run: 1, index: 3, due_us: 5, to: 0, tries: 0, written_us: 0 }, 30);
        assert_eq!(w.devs[1].outbox.len(), 2);

        w.devs[1].phase = Phase::LoggingIn { rid: 7 };
        feed(&mut w, 1, &login_ack(7, 0)).unwrap();
        let again = written(&mut w, 1);
        assert_eq!(again.len(), 2, "{again:?}");
        assert!(again[0].contains("1-1") && again[1].contains("1-3"), "{again:?}");
        let b = w.book.as_ref().unwrap();
        assert_eq!((b.tick.sent, b.resent, b.reconnects), (2, 1, 1));
        assert_eq!(b.drops, Reasons::from([("closed".to_owned(), 1)]));
        let rids: Vec<u32> = w.devs[1].pending.iter().map(|(r, _)| *r).collect();
        for rid in rids {
            let ack = message::send_ack(rid, &message::SendAckParts { code: 200, ..Default::default() });
            feed(&mut w, 1, &ack).unwrap();
        }
        let b = w.book.as_ref().unwrap();
        assert_eq!((b.answered, b.tick.acked, b.failed.len()), (2, 2, 0));
    }
}
