//! A worker process (`tern loadtest worker`, spawned by the coordinator): holds up to
//! ~15,000 devices' connections, sends its share of each run's schedule on time, and
//! records what its devices receive.
//!
//! Single-threaded by design (a tokio current-thread runtime and a `LocalSet`): the
//! state is plain `RefCell`s, and more cores mean more worker processes. The only other
//! thread is each run's scheduler, which wakes at the due time of every message this
//! worker sends (microsecond sleeps, not the runtime's 1 ms timer) and hands it to the
//! sending device's task. Latencies are measured from that due time, so a late
//! scheduler, a full socket or a slow server all show up in the figures (no coordinated
//! omission). Talks to the coordinator only through [`crate::harness::proto`] lines;
//! never panics on what a server sends.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_schema::client::{Body, ClientType, ElemType, SyncKind};
use tern_schema::encode;
use tern_schema::message::{self, ElemParts};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::client::{Client, ClientError, LoginOutcome, LoginRequest, OwnedFrame, Transport};
use crate::harness::config::TargetKind;
use crate::harness::hist::Latency;
use crate::harness::net::{connect_from, raise_fd_limit, resolve};
use crate::harness::proto::{
    decode, encode as encode_line, Command, ConnectReport, DrainReport, Event, ProtoError, Reasons, RunSpec, Tick,
    WorkerInit,
};
use crate::harness::schedule::{encode_payload, mono_us, parse_payload, wall_ms, Bits, Schedule, Stamp};
use crate::harness::setup::user_sign;

/// Connects (and logins) in flight at once per worker: beyond the schedule's rate this
/// bounds descriptors and memory when the server is slow.
const MAX_CONNECTS_IN_FLIGHT: usize = 2_048;
/// One connection attempt (TCP + WebSocket upgrade + Login) must finish in this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Ping interval if the server names none.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(30);
/// Frames a device writes in one go (one syscall on TCP).
const SEND_BATCH: usize = 64;
/// How often waiting loops look again.
const POLL: Duration = Duration::from_millis(10);

/// A worker that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("stdin: {0}")]
    Stdin(#[from] std::io::Error),
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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let res = local.block_on(&rt, worker_main());
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

/// One send handed from the scheduler thread to a device task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendCmd {
    pub run: u32,
    pub index: u64,
    pub due_us: u64,
    pub to: u32,
}

/// A send waiting for its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub run: u32,
    pub index: u64,
    pub due_us: u64,
}

/// Per local device.
pub(crate) struct Dev {
    pub user: u32,
    pub bits: Bits,
    pub pending: HashMap<u32, Pending>,
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
        }
    }
}

pub(crate) struct RunState {
    pub sched: Schedule,
    pub run: u32,
    payload: usize,
    tick: TickAcc,
    failed: Vec<u64>,
    errors: Reasons,
    answered: u64,
    dispatched: Arc<AtomicU64>,
    duplicates: u64,
    stray: u64,
    last_delivery_us: u64,
    finished: bool,
    /// This process's CPU seconds when the run started.
    cpu_at_start: f64,
}

#[derive(Default)]
pub(crate) struct State {
    pub devs: Vec<Dev>,
    pub run: Option<RunState>,
    alive: u64,
    closed: Reasons,
    connect: ConnectReport,
    login: Latency,
    attempts_done: u64,
}

pub(crate) struct Ctx {
    pub init: WorkerInit,
    pub st: RefCell<State>,
    pub txs: Vec<mpsc::UnboundedSender<SendCmd>>,
    pub stop: watch::Receiver<bool>,
}

impl Ctx {
    /// The user and device number of local device `local`.
    pub fn who(&self, local: usize) -> (u32, u32) {
        let d = self.init.devices.max(1) as usize;
        (self.init.first_user + (local / d) as u32, (local % d) as u32)
    }

    /// A send was written; `key` identifies its answer.
    pub fn on_sent(&self, local: usize, key: u32, cmd: &SendCmd) {
        let mut st = self.st.borrow_mut();
        let State { devs, run, .. } = &mut *st;
        if let Some(r) = run.as_mut().filter(|r| r.run == cmd.run) {
            r.tick.sent += 1;
            if let Some(d) = devs.get_mut(local) {
                d.pending.insert(key, Pending { run: cmd.run, index: cmd.index, due_us: cmd.due_us });
            }
        }
    }

    /// A send counts as answered without waiting (NATS core has no ack).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub fn on_sent_unacked(&self, cmd: &SendCmd) {
        let mut st = self.st.borrow_mut();
        if let Some(r) = st.run.as_mut().filter(|r| r.run == cmd.run) {
            r.tick.sent += 1;
            r.tick.acked += 1;
            r.answered += 1;
        }
    }

    /// The answer to send `key`: `Ok(())` or the failure reason.
    pub fn on_answer(&self, local: usize, key: u32, outcome: Result<(), String>) {
        let now = mono_us();
        let mut st = self.st.borrow_mut();
        let State { devs, run, .. } = &mut *st;
        let Some(p) = devs.get_mut(local).and_then(|d| d.pending.remove(&key)) else {
            return;
        };
        let Some(r) = run.as_mut().filter(|r| r.run == p.run) else { return };
        r.answered += 1;
        match outcome {
            Ok(()) => {
                r.tick.acked += 1;
                r.tick.ack.record(now.saturating_sub(p.due_us));
            }
            Err(reason) => {
                r.tick.failed += 1;
                r.failed.push(p.index);
                *r.errors.entry(reason).or_default() += 1;
            }
        }
    }

    /// A send that was never written (its device is gone).
    pub fn on_unsent(&self, cmd: &SendCmd, reason: &str) {
        let mut st = self.st.borrow_mut();
        if let Some(r) = st.run.as_mut().filter(|r| r.run == cmd.run) {
            r.answered += 1;
            r.tick.failed += 1;
            r.failed.push(cmd.index);
            *r.errors.entry(reason.to_owned()).or_default() += 1;
        }
    }

    /// A message delivered to local device `local`, whose text starts with `text`;
    /// `from_self` for a copy of the user's own send (to its other devices).
    pub fn on_delivery(&self, local: usize, text: &[u8], from_self: bool, now: u64) {
        let mut st = self.st.borrow_mut();
        let State { devs, run, .. } = &mut *st;
        let Some(r) = run.as_mut() else { return };
        if from_self {
            r.tick.echoes += 1;
            return;
        }
        let Some(Stamp { run: id, index, due_us }) = parse_payload(text) else {
            r.stray += 1;
            return;
        };
        let Some(dev) = devs.get_mut(local) else { return };
        if id != r.run || index >= r.sched.count || r.sched.recipient(index) != dev.user {
            r.stray += 1;
            return;
        }
        match dev.bits.insert(r.sched.slot(index)) {
            Some(true) => {
                r.tick.delivered += 1;
                r.tick.delivery.record(now.saturating_sub(due_us));
                r.last_delivery_us = r.last_delivery_us.max(now);
            }
            Some(false) => r.duplicates += 1,
            None => r.stray += 1,
        }
    }

    /// The text of message `cmd`.
    pub fn payload(&self, cmd: &SendCmd) -> String {
        let size = self.st.borrow().run.as_ref().map_or(0, |r| r.payload);
        encode_payload(Stamp { run: cmd.run, index: cmd.index, due_us: cmd.due_us }, size)
    }

    /// A connection ended (after a successful login).
    pub fn on_closed(&self, reason: &str) {
        let mut st = self.st.borrow_mut();
        st.alive = st.alive.saturating_sub(1);
        *st.closed.entry(reason.to_owned()).or_default() += 1;
    }

    /// Outcome of one connection attempt.
    pub fn on_connect(&self, started_us: u64, outcome: Result<(), String>) {
        let now = mono_us();
        let mut st = self.st.borrow_mut();
        st.attempts_done += 1;
        let c = &mut st.connect;
        c.first_start_us = if c.first_start_us == 0 { started_us } else { c.first_start_us.min(started_us) };
        c.last_done_us = c.last_done_us.max(now);
        match outcome {
            Ok(()) => {
                c.ok += 1;
                st.alive += 1;
                st.login.record(now.saturating_sub(started_us));
            }
            Err(reason) => {
                c.failed += 1;
                *c.reasons.entry(reason).or_default() += 1;
            }
        }
    }

    /// Drains what is queued for a device that has gone, failing it.
    pub fn fail_queue(&self, local: usize, rx: &mut mpsc::UnboundedReceiver<SendCmd>, reason: &str) {
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.on_unsent(&cmd, reason);
        }
        let pending: Vec<u32> =
            self.st.borrow().devs.get(local).map(|d| d.pending.keys().copied().collect()).unwrap_or_default();
        for key in pending {
            self.on_answer(local, key, Err(reason.to_owned()));
        }
    }
}

async fn worker_main() -> Result<(), WorkerError> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.ok_or(WorkerError::NoInit)?;
    let init: WorkerInit = decode(&first)?;
    if init.target.kind.is_nats() && !cfg!(feature = "nats") {
        return Err(WorkerError::NoNats(init.target.kind));
    }
    let mut addrs = Vec::new();
    for a in &init.target.addrs {
        addrs.push(resolve(a).await.map_err(|source| WorkerError::Resolve { addr: a.clone(), source })?);
    }
    let n = (init.end_user - init.first_user) as usize * init.devices as usize;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut rxs = Vec::with_capacity(n);
    let mut txs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        rxs.push(rx);
    }
    let ctx = Rc::new(Ctx { init, st: RefCell::new(State::default()), txs, stop: stop_rx });
    {
        let mut st = ctx.st.borrow_mut();
        st.devs = (0..n).map(|k| Dev { user: ctx.who(k).0, bits: Bits::default(), pending: HashMap::new() }).collect();
    }
    tokio::task::spawn_local(connect_all(ctx.clone(), addrs, rxs));

    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match decode::<Command>(&line)? {
            Command::Run(spec) => start_run(&ctx, spec),
            Command::Drain { run, failed, deadline_us } => {
                tokio::task::spawn_local(drain(ctx.clone(), run, failed, deadline_us));
            }
            Command::Status => {
                let st = ctx.st.borrow();
                emit(&Event::Status { alive: st.alive, closed: st.closed.clone() });
            }
            Command::Stop => break,
        }
    }
    let _ = stop_tx.send(true);
    let deadline = mono_us() + 3_000_000;
    while ctx.st.borrow().alive > 0 && mono_us() < deadline {
        tokio::time::sleep(POLL).await;
    }
    emit(&Event::Stopped);
    Ok(())
}

/// Opens every device's connection on the connect schedule, then reports.
async fn connect_all(ctx: Rc<Ctx>, addrs: Vec<SocketAddr>, rxs: Vec<mpsc::UnboundedReceiver<SendCmd>>) {
    let n = rxs.len() as u64;
    let gate = Arc::new(Semaphore::new(MAX_CONNECTS_IN_FLIGHT));
    let progress = tokio::task::spawn_local(report_progress(ctx.clone(), n));
    let worker = ctx.init.worker as usize;
    for (k, rx) in rxs.into_iter().enumerate() {
        let due = ctx.init.connect_start_us + (k as f64 * 1e6 / ctx.init.connect_rate) as u64;
        sleep_until_us(due).await;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let src = ctx.init.source_ips[k % ctx.init.source_ips.len().max(1)];
        // Spread over gateways by global device number, so every worker uses all of them.
        let addr = addrs[(worker + k) % addrs.len()];
        let ctx2 = ctx.clone();
        tokio::task::spawn_local(async move {
            match ctx2.init.target.kind {
                TargetKind::Tern => tern_device(ctx2, k, src, addr, rx, permit).await,
                #[cfg(feature = "nats")]
                _ => crate::harness::nats::nats_device(ctx2, k, addr, rx, permit).await,
                #[cfg(not(feature = "nats"))]
                _ => {
                    drop(permit);
                    ctx2.on_connect(mono_us(), Err("nats not built in".into()));
                }
            }
        });
    }
    let _ = progress.await;
}

async fn report_progress(ctx: Rc<Ctx>, n: u64) {
    loop {
        let (done, ok, failed) = {
            let st = ctx.st.borrow();
            (st.attempts_done, st.connect.ok, st.connect.failed)
        };
        emit(&Event::Progress { connected: ok, failed });
        if done >= n {
            let mut report = ctx.st.borrow().connect.clone();
            report.login = ctx.st.borrow().login.to_data();
            emit(&Event::Connected(report));
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn sleep_until_us(due: u64) {
    let now = mono_us();
    if due > now {
        tokio::time::sleep(Duration::from_micros(due - now)).await;
    }
}

fn client_type(device: u32) -> ClientType {
    match device {
        0 => ClientType::Android,
        2 => ClientType::Web,
        _ => ClientType::Linux,
    }
}

fn close_reason(e: &ClientError) -> String {
    match e {
        ClientError::Closed { reason: Some(r) } => format!("closed: {}", r.chars().take(60).collect::<String>()),
        ClientError::Closed { reason: None } => "closed".into(),
        ClientError::Io(e) => format!("io: {:?}", e.kind()),
        ClientError::Timeout => "timeout".into(),
        ClientError::Frame(_) => "bad frame".into(),
        ClientError::WebSocket(_) => "websocket error".into(),
        ClientError::Protocol(_) => "protocol violation".into(),
    }
}

/// Connects and logs in one Tern device.
async fn tern_login(ctx: &Ctx, local: usize, src: Ipv4Addr, addr: SocketAddr) -> Result<(Client, Duration), String> {
    let (user, device) = ctx.who(local);
    let t = &ctx.init.target;
    let user_id = t.user_id(user);
    let stream = connect_from(src, addr).await.map_err(|e| format!("connect: {:?}", e.kind()))?;
    let mut client = Client::from_stream(t.transport, &addr.to_string(), stream)
        .await
        .map_err(|e| format!("handshake: {}", close_reason(&e)))?;
    let req = LoginRequest {
        app_id: t.app_id,
        user_sign: user_sign(t, &user_id),
        user_id,
        client_type: client_type(device),
        device_id: format!("d{device}"),
        request_id: client.next_request_id(),
    };
    match client.login(&req).await.map_err(|e| format!("login: {}", close_reason(&e)))? {
        LoginOutcome::Ok(info) => {
            let hb = match info.heartbeat_interval_ms {
                0 => FALLBACK_HEARTBEAT,
                ms => Duration::from_millis(u64::from(ms)),
            };
            Ok((client, hb))
        }
        LoginOutcome::Rejected { code, .. } => Err(format!("login rejected {code}")),
        LoginOutcome::Kicked { reason, .. } => Err(format!("kicked at login: {reason:?}")),
    }
}

/// One Tern device: connect, log in, then send what the scheduler hands over and record
/// what arrives, heartbeating, until stopped or disconnected.
async fn tern_device(
    ctx: Rc<Ctx>,
    local: usize,
    src: Ipv4Addr,
    addr: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<SendCmd>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = mono_us();
    let login = tokio::time::timeout(CONNECT_TIMEOUT, tern_login(&ctx, local, src, addr)).await;
    drop(permit);
    let (mut client, hb) = match login {
        Ok(Ok(ok)) => {
            ctx.on_connect(started, Ok(()));
            ok
        }
        Ok(Err(reason)) => return ctx.on_connect(started, Err(reason)),
        Err(_) => return ctx.on_connect(started, Err("timeout".into())),
    };
    let reason = DeviceLoop::new(&ctx, local, hb).run(&mut client, &mut rx).await;
    ctx.fail_queue(local, &mut rx, &reason);
    ctx.on_closed(&reason);
}

struct DeviceLoop<'a> {
    ctx: &'a Ctx,
    local: usize,
    user_id: String,
    hb: Duration,
    max_seq: u64,
    acked_seq: u64,
    /// Request id of the Pull in flight after a SyncNotify.
    pulling: Option<u32>,
    /// The newest seq a SyncNotify named.
    notified: u64,
}

impl<'a> DeviceLoop<'a> {
    fn new(ctx: &'a Ctx, local: usize, hb: Duration) -> Self {
        let user_id = ctx.init.target.user_id(ctx.who(local).0);
        DeviceLoop { ctx, local, user_id, hb, max_seq: 0, acked_seq: 0, pulling: None, notified: 0 }
    }

    async fn run(&mut self, client: &mut Client, rx: &mut mpsc::UnboundedReceiver<SendCmd>) -> String {
        let mut stop = self.ctx.stop.clone();
        // A random phase, so thousands of devices do not ping in step.
        let phase = Duration::from_millis(rand::random::<u64>() % self.hb.as_millis().max(1) as u64);
        let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + phase, self.hb);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ack_ms = self.ctx.init.push_ack_ms;
        let mut ack = tokio::time::interval(Duration::from_millis(ack_ms.max(1)));
        ack.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(SEND_BATCH);
        let mut out = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let rid = client.next_request_id();
                    let _ = client.send(&encode::logout(rid)).await;
                    let _ = client.close().await;
                    return "stopped".into();
                }
                r = client.recv() => match r {
                    Ok(f) => {
                        if let Err(reason) = self.on_frame(client, &f).await {
                            return reason;
                        }
                    }
                    Err(e) => return close_reason(&e),
                },
                n = rx.recv_many(&mut batch, SEND_BATCH) => {
                    if n == 0 {
                        return "queue closed".into();
                    }
                    if let Err(e) = self.send_batch(client, &mut batch, &mut out).await {
                        return close_reason(&e);
                    }
                }
                _ = hb.tick() => {
                    let rid = client.next_request_id();
                    if let Err(e) = client.send(&encode::ping(rid, wall_ms())).await {
                        return close_reason(&e);
                    }
                }
                _ = ack.tick(), if ack_ms > 0 && self.max_seq > self.acked_seq => {
                    let rid = client.next_request_id();
                    if let Err(e) = client.send(&encode::push_ack(rid, SyncKind::Message, self.max_seq)).await {
                        return close_reason(&e);
                    }
                    self.acked_seq = self.max_seq;
                }
            }
        }
    }

    async fn send_batch(
        &mut self,
        client: &mut Client,
        batch: &mut Vec<SendCmd>,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        out.clear();
        let tcp = client.transport() == Transport::Tcp;
        for cmd in batch.drain(..) {
            let rid = client.next_request_id();
            let text = self.ctx.payload(&cmd);
            let to = self.ctx.init.target.user_id(cmd.to);
            let elems = [ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }];
            let frame = message::send(rid, &format!("{}-{}", cmd.run, cmd.index), &to, &elems, wall_ms());
            self.ctx.on_sent(self.local, rid, &cmd);
            if tcp {
                out.extend_from_slice(&frame);
            } else {
                client.send(&frame).await?;
            }
        }
        if tcp && !out.is_empty() {
            client.send(out).await?;
        }
        Ok(())
    }

    /// Handles one frame; `Err(reason)` ends the session.
    async fn on_frame(&mut self, client: &mut Client, f: &OwnedFrame) -> Result<(), String> {
        let frame = f.frame();
        match f.body_type() {
            Body::Push => {
                let msgs = frame.body_as_push().and_then(|p| p.messages());
                self.on_messages(msgs);
            }
            Body::PullResult if Some(f.request_id()) == self.pulling => {
                self.pulling = None;
                let Some(r) = frame.body_as_pull_result() else { return Ok(()) };
                self.on_messages(r.messages());
                if !r.completed() || self.notified > self.max_seq {
                    self.pull(client).await.map_err(|e| close_reason(&e))?;
                }
            }
            Body::SendAck => {
                let code = frame.body_as_send_ack().map_or(0, |a| a.code());
                let outcome = if code == tern_schema::codes::OK { Ok(()) } else { Err(format!("SendAck {code}")) };
                self.ctx.on_answer(self.local, f.request_id(), outcome);
            }
            Body::Error => {
                let code = frame.body_as_error().map_or(0, |e| e.code());
                if f.request_id() != 0 && Some(f.request_id()) == self.pulling {
                    self.pulling = None;
                }
                self.ctx.on_answer(self.local, f.request_id(), Err(format!("Error {code}")));
            }
            Body::SyncNotify => {
                let Some(n) = frame.body_as_sync_notify() else { return Ok(()) };
                if n.kind() == SyncKind::Message && n.seq() > self.max_seq {
                    self.notified = self.notified.max(n.seq());
                    if self.pulling.is_none() {
                        self.pull(client).await.map_err(|e| close_reason(&e))?;
                    }
                }
            }
            Body::Kick => {
                let reason = frame.body_as_kick().map(|k| k.reason());
                return Err(format!("kicked: {reason:?}"));
            }
            _ => {}
        }
        Ok(())
    }

    async fn pull(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let rid = client.next_request_id();
        self.pulling = Some(rid);
        client.send(&encode::pull(rid, SyncKind::Message, self.max_seq, 500)).await
    }

    fn on_messages<'m>(
        &mut self,
        msgs: Option<
            tern_schema::flatbuffers::Vector<
                'm,
                tern_schema::flatbuffers::ForwardsUOffset<tern_schema::client::Message<'m>>,
            >,
        >,
    ) {
        let now = mono_us();
        for m in msgs.iter().flatten() {
            self.max_seq = self.max_seq.max(m.seq());
            let text = m.elems().and_then(|e| e.iter().next()).and_then(|e| e.text()).unwrap_or("");
            let from_self = m.from_id() == Some(self.user_id.as_str());
            self.ctx.on_delivery(self.local, text.as_bytes(), from_self, now);
        }
    }
}

/// Starts a run: fresh receive sets, the scheduler thread, the tick reporter and the
/// task that reports `Sent` once every send is answered.
fn start_run(ctx: &Rc<Ctx>, spec: RunSpec) {
    let sched =
        Schedule { users: spec.users, devices: spec.devices, rate: spec.rate, count: spec.count, t0_us: spec.t0_us };
    let dispatched = Arc::new(AtomicU64::new(0));
    {
        let mut st = ctx.st.borrow_mut();
        for d in &mut st.devs {
            d.bits = Bits::new(sched.slots_for(d.user));
            d.pending.clear();
        }
        st.run = Some(RunState {
            sched,
            run: spec.run,
            payload: spec.payload,
            tick: TickAcc::default(),
            failed: Vec::new(),
            errors: Reasons::new(),
            answered: 0,
            dispatched: dispatched.clone(),
            duplicates: 0,
            stray: 0,
            last_delivery_us: 0,
            finished: false,
            cpu_at_start: crate::harness::sysinfo::own_cpu_secs(),
        });
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let txs = ctx.txs.clone();
    let (first, end, devices, run) = (ctx.init.first_user, ctx.init.end_user, ctx.init.devices, spec.run);
    std::thread::spawn(move || {
        let unsent = schedule_thread(&sched, run, first, end, devices, &txs, &dispatched);
        let _ = done_tx.send(unsent);
    });
    tokio::task::spawn_local(ticks(ctx.clone(), spec.run, spec.t0_us));
    tokio::task::spawn_local(finish_sending(ctx.clone(), spec, done_rx));
}

/// The scheduler: hands each of this worker's messages to its device when due.
/// Returns the indices it could not hand over (device gone).
fn schedule_thread(
    sched: &Schedule,
    run: u32,
    first: u32,
    end: u32,
    devices: u32,
    txs: &[mpsc::UnboundedSender<SendCmd>],
    dispatched: &AtomicU64,
) -> Vec<u64> {
    let mut unsent = Vec::new();
    for i in 0..sched.count {
        let s = sched.sender(i);
        if s < first || s >= end {
            continue;
        }
        let due = sched.due_us(i);
        loop {
            let now = mono_us();
            if now >= due {
                break;
            }
            std::thread::sleep(Duration::from_micros(due - now));
        }
        let local = (s - first) as usize * devices as usize + sched.sender_device(i) as usize;
        let cmd = SendCmd { run, index: i, due_us: due, to: sched.recipient(i) };
        match txs.get(local).map(|tx| tx.send(cmd)) {
            Some(Ok(())) => {
                dispatched.fetch_add(1, Ordering::Relaxed);
            }
            _ => unsent.push(i),
        }
    }
    unsent
}

/// Emits a Tick at every whole second after t0 until the run is drained.
async fn ticks(ctx: Rc<Ctx>, run: u32, t0_us: u64) {
    for sec in 1u32.. {
        sleep_until_us(t0_us + u64::from(sec) * 1_000_000).await;
        let tick = {
            let mut st = ctx.st.borrow_mut();
            match st.run.as_mut() {
                Some(r) if r.run == run && !r.finished => r.tick.take(run, sec),
                _ => return,
            }
        };
        emit(&Event::Tick(tick));
    }
}

/// Waits for the scheduler and for every answer (or the ack timeout), then says `Sent`.
async fn finish_sending(ctx: Rc<Ctx>, spec: RunSpec, done: tokio::sync::oneshot::Receiver<Vec<u64>>) {
    let unsent = done.await.unwrap_or_default();
    let end = spec.t0_us + (spec.count as f64 * 1e6 / spec.rate) as u64;
    let deadline = end + spec.ack_timeout_ms * 1_000;
    loop {
        let settled = ctx.st.borrow().run.as_ref().is_none_or(|r| r.answered >= r.dispatched.load(Ordering::Relaxed));
        if settled || mono_us() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Whatever is still unanswered has timed out.
    let stale: Vec<(usize, u32)> = {
        let st = ctx.st.borrow();
        st.devs
            .iter()
            .enumerate()
            .flat_map(|(k, d)| d.pending.iter().filter(|(_, p)| p.run == spec.run).map(move |(key, _)| (k, *key)))
            .collect()
    };
    for (local, key) in stale {
        ctx.on_answer(local, key, Err("ack timeout".into()));
    }
    let mut st = ctx.st.borrow_mut();
    let Some(r) = st.run.as_mut().filter(|r| r.run == spec.run) else { return };
    let mut failed = std::mem::take(&mut r.failed);
    if !unsent.is_empty() {
        *r.errors.entry("device gone before send".into()).or_default() += unsent.len() as u64;
        failed.extend_from_slice(&unsent);
    }
    let sent = r.dispatched.load(Ordering::Relaxed);
    r.failed = failed.clone();
    emit(&Event::Sent { run: spec.run, sent, failed, errors: r.errors.clone() });
}

/// Waits until this worker's devices hold every message addressed to them (except the
/// failed sends), or the deadline; then reports loss and duplicates.
async fn drain(ctx: Rc<Ctx>, run: u32, failed: Vec<u64>, deadline_us: u64) {
    let failed: HashSet<u64> = failed.into_iter().collect();
    let (first, end) = (ctx.init.first_user, ctx.init.end_user);
    let expected_for = |st: &State| -> Option<(u64, Vec<u64>)> {
        let r = st.run.as_ref().filter(|r| r.run == run)?;
        let mut failed_per_user: HashMap<u32, u64> = HashMap::new();
        for &i in &failed {
            let u = r.sched.recipient(i);
            if u >= first && u < end && i < r.sched.count {
                *failed_per_user.entry(u).or_default() += 1;
            }
        }
        let per_dev: Vec<u64> = st
            .devs
            .iter()
            .map(|d| r.sched.slots_for(d.user) - failed_per_user.get(&d.user).copied().unwrap_or(0))
            .collect();
        Some((per_dev.iter().sum(), per_dev))
    };
    let Some((expected, per_dev)) = expected_for(&ctx.st.borrow()) else { return };
    loop {
        let received: u64 = ctx.st.borrow().devs.iter().map(|d| d.bits.ones()).sum();
        if received >= expected || mono_us() >= deadline_us {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut st = ctx.st.borrow_mut();
    let State { devs, run: run_state, .. } = &mut *st;
    let Some(r) = run_state.as_mut().filter(|r| r.run == run) else { return };
    let mut report = DrainReport { run, expected, ..Default::default() };
    for (d, want) in devs.iter().zip(&per_dev) {
        let n = r.sched.slots_for(d.user);
        let mut unexpected = 0;
        for &i in &failed {
            if r.sched.recipient(i) == d.user && i < r.sched.count && d.bits.contains(r.sched.slot(i)) {
                unexpected += 1;
            }
        }
        let got = d.bits.ones() - unexpected;
        report.received += got;
        report.unexpected += unexpected;
        report.lost += want.saturating_sub(got);
        debug_assert!(d.bits.len() == n);
    }
    report.duplicates = r.duplicates;
    report.stray = r.stray;
    report.last_delivery_us = r.last_delivery_us;
    report.cpu_secs = crate::harness::sysinfo::own_cpu_secs() - r.cpu_at_start;
    let sec = ((mono_us().saturating_sub(r.sched.t0_us)) / 1_000_000) as u32 + 1;
    report.tail = r.tick.take(run, sec);
    r.finished = true;
    emit(&Event::Drained(report));
}
