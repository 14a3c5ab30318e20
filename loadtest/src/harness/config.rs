//! Scenario arguments (clap) and their validation into plans.
//!
//! Validation collects every problem before failing, and refuses anything that would
//! send traffic off this machine: every target address must resolve to loopback
//! (127.0.0.0/8 or ::1). Every run is bounded: durations are positive and capped.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::client::Transport;
use crate::harness::schedule::MIN_PAYLOAD;

/// Longest any phase of a run may be (seconds).
pub const MAX_DURATION_SECS: f64 = 3_600.0;
/// Highest message or login rate accepted (per second, all workers together).
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most connections one run may open.
pub const MAX_CONNS: u64 = 1_000_000;
/// Sockets one worker process may hold: the hard open-file limit here is 20,000 and a
/// worker needs a few descriptors of its own.
pub const MAX_CONNS_PER_WORKER: u32 = 19_000;
/// Default connections per worker: clear of the limit above, with room for reconnects.
pub const DEFAULT_CONNS_PER_WORKER: u32 = 15_000;
/// Largest message body Tern accepts by default (`messages.max_body_bytes`).
pub const MAX_PAYLOAD: usize = 12_288;

/// Scenario arguments that do not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid load-test arguments:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Tern over its client protocol (TCP or WebSocket).
    Tern,
    /// NATS core: one subject per user, one subscriber per device (needs feature `nats`).
    NatsCore,
    /// NATS JetStream, file storage: PubAck is the ack (needs feature `nats`).
    Jetstream,
}

impl TargetKind {
    /// The name used in file names and result JSON.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Tern => "tern",
            TargetKind::NatsCore => "nats_core",
            TargetKind::Jetstream => "jetstream",
        }
    }

    pub fn is_nats(self) -> bool {
        self != TargetKind::Tern
    }
}

/// Where the load goes.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// System under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Tern)]
    pub target: TargetKind,
    /// Client address of a gateway (or of nats-server); repeat it to spread connections
    /// over several gateway processes [default: 127.0.0.1:9000 tcp, 127.0.0.1:19000 ws,
    /// 127.0.0.1:4222 NATS]. Loopback only.
    #[arg(long = "addr")]
    pub addrs: Vec<String>,
    /// `tcp` or `ws` (Tern only).
    #[arg(long, default_value = "tcp")]
    pub transport: Transport,
    /// Tern's HTTP API, used to import the test users. Loopback only.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http: String,
    /// App id of the test users.
    #[arg(long, env = "TERN_APP_ID", default_value_t = 10_000)]
    pub app_id: u32,
    /// The app's secret: signs the users' logins and the admin's API calls.
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Admin identifier of the app (for importUser).
    #[arg(long, default_value = "admin")]
    pub admin: String,
    /// Prefix of the test users' ids [default: `lt<random>-`, fresh users every run].
    #[arg(long)]
    pub user_prefix: Option<String>,
    /// Do not import the users (they exist already).
    #[arg(long)]
    pub no_import: bool,
}

/// How connections are spread.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Most connections per worker process (a process here cannot hold 20,000 fds).
    #[arg(long, default_value_t = DEFAULT_CONNS_PER_WORKER)]
    pub conns_per_worker: u32,
    /// Worker processes (one event loop each) [default: one per core, or more if
    /// --conns-per-worker needs more].
    #[arg(long)]
    pub workers: Option<u32>,
    /// Loopback source addresses to spread connections over (127.1.0.1 upward).
    #[arg(long, default_value_t = 64)]
    pub source_ips: u32,
    /// Logins per second while connecting (all workers together; open loop).
    #[arg(long, default_value_t = 5_000.0)]
    pub connect_rate: f64,
    /// The worker's tick, µs: a busy worker wakes once per tick and handles the frames and
    /// due sends of that time in one go (fewer wake-ups of the worker and of the server).
    /// Sends wait at most this long past their due time and frames at most this long
    /// after they arrived, and both waits are part of the measured latency. 0 = a turn
    /// per event.
    #[arg(long, default_value_t = DEFAULT_COALESCE_US)]
    pub coalesce_us: u64,
}

/// Default `--coalesce-us` (the worker's tick). On the 2-core Firecracker VM the harness
/// is tuned on, a timer wake-up costs the worker ~13–20 µs of CPU (a bare `nanosleep`
/// loop under `perf stat`; a syscall costs ~0.2 µs), so wake-ups, not messages, were
/// most of the generator's CPU: at 5,000 msgs/s, ticks of 200 µs cost 57–68 µs of
/// generator CPU per message, ticks of 1,000 µs 28–42 µs, of 2,000 µs 24–34 µs (compare.sh,
/// NATS core … Tern). The price: a send goes out up to one tick (on average half) after its
/// due time and a frame is read up to one tick after it arrived, both inside the measured
/// latency — so p50s read ~1 ms higher than the server's own; fine for the 10 ms bounds
/// this harness judges, too coarse for sub-ms p50s (use `--coalesce-us 200` or 0 there,
/// and expect the generator to cost two to three times as much).
pub const DEFAULT_COALESCE_US: u64 = 1_000;

/// Where results go.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Directory for the JSON result and the HTML report.
    #[arg(long, default_value = "target/loadtest")]
    pub out_dir: PathBuf,
    /// Base name of the two files [default: `<scenario>-<system>`].
    #[arg(long)]
    pub name: Option<String>,
    /// The system's name in the result and in `compare` [default: the target: tern,
    /// nats_core, jetstream]. Names a variant of one target, e.g. `tern_cql` for Tern on
    /// its CQL backend beside `tern` on the embedded store. Lower-case letters, digits
    /// and `_`, at most 32.
    #[arg(long, value_parser = parse_system_name)]
    pub system: Option<String>,
    /// No progress bar (scripts, CI logs).
    #[arg(long)]
    pub quiet: bool,
}

/// `--system`: a name that is safe in a file name, a JSON key and a table row.
pub fn parse_system_name(s: &str) -> Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: use 1 to 32 lower-case letters, digits or '_' (e.g. tern_cql)"))
    }
}

/// `connect`: open N authenticated connections and hold them.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workers: WorkerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Connections to open.
    #[arg(long)]
    pub conns: u64,
    /// Devices per user (connections are users × devices).
    #[arg(long, default_value_t = 1)]
    pub devices: u32,
    /// Seconds to hold the connections (heartbeating) once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// PID of a gateway (or nats-server) process whose RSS to measure; repeatable.
    #[arg(long = "gateway-pid")]
    pub gateway_pids: Vec<u32>,
    /// File holding such a PID; repeatable.
    #[arg(long = "gateway-pid-file")]
    pub gateway_pid_files: Vec<PathBuf>,
    /// Ramp mode: instead of one run at `--connect-rate`, log `--conns` connections in
    /// at a rising rate (`--ramp-start`, then `--ramp-step` more each step, up to
    /// `--ramp-max`), closing them between steps, until p99 login latency passes this
    /// many milliseconds or a login fails; reports the highest rate that stayed within
    /// the bound, measured (logins answered per second), not offered.
    #[arg(long)]
    pub ramp_p99_ms: Option<f64>,
    /// First offered login rate of a ramp (logins/s).
    #[arg(long, default_value_t = 5_000.0)]
    pub ramp_start: f64,
    /// Rate added per ramp step (logins/s).
    #[arg(long, default_value_t = 5_000.0)]
    pub ramp_step: f64,
    /// Highest offered rate a ramp tries (logins/s).
    #[arg(long, default_value_t = 100_000.0)]
    pub ramp_max: f64,
}

/// A ramp of login rates (`connect --ramp-p99-ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginRampPlan {
    pub p99_bound_ms: f64,
    pub start: f64,
    pub step: f64,
    pub max: f64,
}

/// `p2p`: 1:1 messages, open loop at a fixed total rate.
#[derive(clap::Args, Debug, Clone)]
pub struct P2pArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workers: WorkerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Messages per second, all senders together.
    #[arg(long)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// The shape of the p2p population (shared by `p2p` and `ramp`).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Users.
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Devices online per user.
    #[arg(long, default_value_t = 2)]
    pub devices: u32,
    /// Message text size in bytes (at least 48: the stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// A device acknowledges received messages (PushAck) at most this often, ms; 0 = never.
    /// Each PushAck is a frame the server handles, so this is part of the load.
    #[arg(long, default_value_t = 1_000)]
    pub push_ack_ms: u64,
    /// A send the server answers with 80009 (busy) is written again, as a client does
    /// (after 100-150 ms, the device's later sends waiting behind it), up to this many
    /// times before it counts as failed; 0 = never (every refusal is a failure: what an
    /// overload measurement wants). Retries are counted with the resent sends.
    #[arg(long, default_value_t = 0)]
    pub retry_busy: u32,
    /// After the last send, seconds to wait for missing acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// PID of a server process (Tern, nats-server) whose CPU (user + system, all
    /// threads) over each run is reported per message beside the generator's;
    /// repeatable (every process of a split deployment).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

/// `sync`: a new device pulls K stored messages across C conversations.
#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Messages stored for the syncing user (K).
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Conversations they are spread over (C peers).
    #[arg(long, default_value_t = 10)]
    pub conversations: u32,
    /// Pull page size (the server caps it at `messages.max_pull`).
    #[arg(long, default_value_t = 500)]
    pub page: u32,
    /// Sends in flight per peer while storing the messages.
    #[arg(long, default_value_t = 64)]
    pub fill_window: u32,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Upper bound on the whole run (storing + syncing), seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
}

/// `ramp`: step the p2p rate up until p99 passes a bound.
#[derive(clap::Args, Debug, Clone)]
pub struct RampArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workers: WorkerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Rate of the first step (messages/s).
    #[arg(long, default_value_t = 10_000.0)]
    pub start_rate: f64,
    /// Added to the rate at each step.
    #[arg(long, default_value_t = 10_000.0)]
    pub step_rate: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 500_000.0)]
    pub max_rate: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub step_duration: f64,
    /// send→delivered p99 bound, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub p99_bound_ms: f64,
    /// Explicit step rates, run in this order and every one of them whatever the
    /// verdicts (replaces --start-rate/--step-rate/--max-rate). `--rates 10000,2500`
    /// measures overload, then whether the next step recovers at once.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
}

/// A validated target, as workers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub kind: TargetKind,
    pub addrs: Vec<String>,
    pub transport: Transport,
    pub http: String,
    pub app_id: u32,
    pub secret: String,
    pub admin: String,
    pub user_prefix: String,
    pub import: bool,
}

impl TargetSpec {
    pub fn user_id(&self, idx: u32) -> String {
        format!("{}{idx}", self.user_prefix)
    }

    /// The id of test group `idx` (`group` scenario).
    pub fn group_id(&self, idx: u32) -> String {
        format!("{}g{idx}", self.user_prefix)
    }

    /// The NATS subject of user `idx` (tokens may not hold `.`, `*`, `>` or spaces).
    pub fn subject(&self, idx: u32) -> String {
        let clean: String =
            self.user_prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("ternlt.{clean}.u{idx}")
    }
}

/// Worker layout after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub workers: u32,
    pub source_ips: u32,
    pub connect_rate: f64,
    #[serde(default)]
    pub coalesce_us: u64,
}

/// Collects problems; `finish` fails with all of them.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    pub fn push(&mut self, msg: String) {
        self.0.push(msg);
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.0))
        }
    }
}

/// `Err(reason)` unless `addr` (`host:port`) resolves only to loopback addresses.
pub fn check_loopback(addr: &str) -> Result<(), String> {
    let refuse = |what: &str| {
        Err(format!(
            "refusing target {addr:?}: {what}; the load test only sends to this machine (127.0.0.0/8 or [::1])"
        ))
    };
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return if sa.ip().is_loopback() { Ok(()) } else { refuse("not a loopback address") };
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return refuse("expected host:port");
    };
    if port.parse::<u16>().is_err() {
        return refuse("bad port");
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return if ip.is_loopback() { Ok(()) } else { refuse("not a loopback address") };
    }
    // Only names that are loopback by definition are looked up; anything else could
    // resolve anywhere and is refused without asking DNS.
    if !host.eq_ignore_ascii_case("localhost") {
        return refuse("only IP literals and `localhost` are accepted");
    }
    match addr.to_socket_addrs() {
        Ok(list) => {
            let list: Vec<_> = list.collect();
            if !list.is_empty() && list.iter().all(|a| a.ip().is_loopback()) {
                Ok(())
            } else {
                refuse("does not resolve to loopback only")
            }
        }
        Err(e) => refuse(&format!("cannot resolve: {e}")),
    }
}

pub(crate) fn finite_in(p: &mut Problems, name: &str, v: f64, lo_exclusive: f64, hi: f64) {
    p.check(v.is_finite() && v > lo_exclusive && v <= hi, || {
        format!("{name} must be > {lo_exclusive} and ≤ {hi} (got {v})")
    });
}

impl TargetArgs {
    pub fn validate(&self, p: &mut Problems) -> TargetSpec {
        let addrs = if self.addrs.is_empty() {
            let default = match (self.target, self.transport) {
                (TargetKind::Tern, t) => t.default_addr(),
                _ => "127.0.0.1:4222",
            };
            vec![default.to_owned()]
        } else {
            self.addrs.clone()
        };
        for a in &addrs {
            if let Err(e) = check_loopback(a) {
                p.push(e);
            }
        }
        if self.target == TargetKind::Tern {
            if let Err(e) = check_loopback(&self.http) {
                p.push(format!("--http: {e}"));
            }
            p.check(self.secret.as_deref().is_some_and(|s| !s.is_empty()), || {
                "--secret (or TERN_SECRET) is needed to sign the test users' logins".into()
            });
        } else {
            p.check(self.transport == Transport::Tcp, || "NATS targets speak TCP only".into());
            p.check(cfg!(feature = "nats"), || {
                "this build has no NATS client: build with `--features tern-loadtest/nats`".into()
            });
        }
        let user_prefix = self.user_prefix.clone().unwrap_or_else(|| format!("lt{:06x}-", rand::random::<u32>() >> 8));
        p.check(!user_prefix.is_empty() && user_prefix.len() <= 40, || "--user-prefix must be 1..=40 bytes".into());
        TargetSpec {
            kind: self.target,
            addrs,
            transport: self.transport,
            http: self.http.clone(),
            app_id: self.app_id,
            secret: self.secret.clone().unwrap_or_default(),
            admin: self.admin.clone(),
            user_prefix,
            import: !self.no_import && self.target == TargetKind::Tern,
        }
    }
}

impl WorkerArgs {
    pub fn validate(&self, p: &mut Problems, conns: u64) -> WorkerPlan {
        p.check((1..=MAX_CONNS_PER_WORKER).contains(&self.conns_per_worker), || {
            format!("--conns-per-worker must be 1..={MAX_CONNS_PER_WORKER} (hard fd limit 20,000 per process)")
        });
        let per = u64::from(self.conns_per_worker.max(1));
        let needed = conns.div_ceil(per).max(1);
        let workers = match self.workers {
            Some(w) => {
                p.check(w >= 1 && u64::from(w) >= needed, || {
                    format!("--workers {w} cannot hold {conns} connections at ≤ {per} each (need ≥ {needed})")
                });
                w
            }
            None => u32::try_from(needed.max(cores())).unwrap_or(u32::MAX),
        };
        p.check((1..=65_000).contains(&self.source_ips), || "--source-ips must be 1..=65000".into());
        finite_in(p, "--connect-rate", self.connect_rate, 0.0, MAX_RATE);
        p.check(self.coalesce_us <= 100_000, || "--coalesce-us must be ≤ 100000".into());
        WorkerPlan {
            workers: workers.max(1),
            source_ips: self.source_ips.max(1),
            connect_rate: self.connect_rate,
            coalesce_us: self.coalesce_us,
        }
    }
}

/// Cores this process may run on: the default number of worker processes, so the
/// generator spreads over the machine as the server does.
pub fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Most `--retry-busy` tries: a client backs off after a few.
pub const MAX_RETRY_BUSY: u32 = 100;

/// A validated p2p population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPlan {
    pub users: u32,
    /// Group size (`group` scenario: users are `groups × members`); 0 = 1:1 messages.
    #[serde(default)]
    pub members: u32,
    pub devices: u32,
    pub payload: usize,
    pub push_ack_ms: u64,
    /// Times a send refused with 80009 is written again (`--retry-busy`).
    #[serde(default)]
    pub retry_busy: u32,
    pub drain_secs: f64,
    /// Server processes whose CPU each run measures (`--server-pid`).
    #[serde(default)]
    pub server_pids: Vec<u32>,
}

impl LoadArgs {
    pub fn validate(&self, p: &mut Problems) -> LoadPlan {
        p.check(self.users >= 2, || format!("--users must be ≥ 2 (1:1 messages need a peer; got {})", self.users));
        p.check((1..=16).contains(&self.devices), || format!("--devices must be 1..=16 (got {})", self.devices));
        p.check(u64::from(self.users) * u64::from(self.devices) <= MAX_CONNS, || {
            format!("users × devices must be ≤ {MAX_CONNS}")
        });
        p.check((MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload), || {
            format!("--payload must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes (got {})", self.payload)
        });
        finite_in(p, "--drain", self.drain, 0.0, MAX_DURATION_SECS);
        p.check(self.retry_busy <= MAX_RETRY_BUSY, || {
            format!("--retry-busy must be ≤ {MAX_RETRY_BUSY} (got {})", self.retry_busy)
        });
        LoadPlan {
            users: self.users,
            members: 0,
            devices: self.devices,
            payload: self.payload,
            push_ack_ms: self.push_ack_ms,
            retry_busy: self.retry_busy,
            drain_secs: self.drain,
            server_pids: self.server_pids.clone(),
        }
    }

    pub fn conns(&self) -> u64 {
        u64::from(self.users) * u64::from(self.devices)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectPlan {
    pub target: TargetSpec,
    pub workers: WorkerPlan,
    pub conns: u64,
    pub users: u32,
    pub devices: u32,
    pub hold_secs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<LoginRampPlan>,
    #[serde(skip)]
    pub gateway_pids: Vec<u32>,
    #[serde(skip)]
    pub gateway_pid_files: Vec<PathBuf>,
}

impl ConnectArgs {
    pub fn validate(&self) -> Result<ConnectPlan, ConfigError> {
        let mut p = Problems::default();
        let target = self.target.validate(&mut p);
        p.check((1..=MAX_CONNS).contains(&self.conns), || format!("--conns must be 1..={MAX_CONNS}"));
        p.check((1..=16).contains(&self.devices), || "--devices must be 1..=16".into());
        finite_in(&mut p, "--hold", self.hold, 0.0, MAX_DURATION_SECS);
        let workers = self.workers.validate(&mut p, self.conns);
        let users = u32::try_from(self.conns.div_ceil(u64::from(self.devices.max(1)))).unwrap_or(u32::MAX);
        let ramp = self.ramp_p99_ms.map(|bound| {
            finite_in(&mut p, "--ramp-p99-ms", bound, 0.001, 60_000.0);
            finite_in(&mut p, "--ramp-start", self.ramp_start, 1.0, MAX_RATE);
            finite_in(&mut p, "--ramp-step", self.ramp_step, 1.0, MAX_RATE);
            finite_in(&mut p, "--ramp-max", self.ramp_max, self.ramp_start, MAX_RATE);
            LoginRampPlan { p99_bound_ms: bound, start: self.ramp_start, step: self.ramp_step, max: self.ramp_max }
        });
        p.finish(ConnectPlan {
            target,
            workers,
            conns: self.conns,
            users,
            devices: self.devices,
            hold_secs: self.hold,
            ramp,
            gateway_pids: self.gateway_pids.clone(),
            gateway_pid_files: self.gateway_pid_files.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct P2pPlan {
    pub target: TargetSpec,
    pub workers: WorkerPlan,
    pub load: LoadPlan,
    pub rate: f64,
    pub duration_secs: f64,
}

impl P2pArgs {
    pub fn validate(&self) -> Result<P2pPlan, ConfigError> {
        let mut p = Problems::default();
        let target = self.target.validate(&mut p);
        let load = self.load.validate(&mut p);
        finite_in(&mut p, "--rate", self.rate, 0.0, MAX_RATE);
        finite_in(&mut p, "--duration", self.duration, 0.0, MAX_DURATION_SECS);
        p.check(self.rate * self.duration >= 1.0, || "--rate × --duration must be at least one message".into());
        let workers = self.workers.validate(&mut p, self.load.conns());
        p.finish(P2pPlan { target, workers, load, rate: self.rate, duration_secs: self.duration })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncPlan {
    pub target: TargetSpec,
    pub messages: u64,
    pub conversations: u32,
    pub page: u32,
    pub fill_window: u32,
    pub payload: usize,
    pub timeout_secs: f64,
}

impl SyncArgs {
    pub fn validate(&self) -> Result<SyncPlan, ConfigError> {
        let mut p = Problems::default();
        let target = self.target.validate(&mut p);
        p.check(target.kind == TargetKind::Tern, || "sync runs against Tern only".into());
        p.check((1..=10_000_000).contains(&self.messages), || "--messages must be 1..=10,000,000".into());
        p.check((1..=10_000).contains(&self.conversations), || "--conversations must be 1..=10,000".into());
        p.check((1..=10_000).contains(&self.page), || "--page must be 1..=10,000".into());
        p.check((1..=4_096).contains(&self.fill_window), || "--fill-window must be 1..=4096".into());
        p.check((MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload), || {
            format!("--payload must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes")
        });
        finite_in(&mut p, "--timeout", self.timeout, 0.0, MAX_DURATION_SECS);
        p.finish(SyncPlan {
            target,
            messages: self.messages,
            conversations: self.conversations,
            page: self.page,
            fill_window: self.fill_window,
            payload: self.payload,
            timeout_secs: self.timeout,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampPlan {
    pub target: TargetSpec,
    pub workers: WorkerPlan,
    pub load: LoadPlan,
    pub start_rate: f64,
    pub step_rate: f64,
    pub max_rate: f64,
    pub step_secs: f64,
    pub p99_bound_us: u64,
    /// `--rates`: these steps, in order, each run whatever the previous verdict.
    pub explicit: Vec<f64>,
}

impl RampPlan {
    /// Whether every step runs (explicit rates) rather than stopping at the first
    /// step that is not sustained.
    pub fn runs_every_step(&self) -> bool {
        !self.explicit.is_empty()
    }

    /// The rates of every step: the explicit ones, or lowest first.
    pub fn rates(&self) -> Vec<f64> {
        if self.runs_every_step() {
            return self.explicit.clone();
        }
        let mut out = Vec::new();
        let mut r = self.start_rate;
        while r <= self.max_rate + 1e-9 && out.len() < 1_000 {
            out.push(r);
            r += self.step_rate;
        }
        out
    }
}

impl RampArgs {
    pub fn validate(&self) -> Result<RampPlan, ConfigError> {
        let mut p = Problems::default();
        let target = self.target.validate(&mut p);
        let load = self.load.validate(&mut p);
        finite_in(&mut p, "--start-rate", self.start_rate, 0.0, MAX_RATE);
        finite_in(&mut p, "--step-rate", self.step_rate, 0.0, MAX_RATE);
        finite_in(&mut p, "--max-rate", self.max_rate, 0.0, MAX_RATE);
        p.check(self.max_rate >= self.start_rate, || "--max-rate must be ≥ --start-rate".into());
        finite_in(&mut p, "--step-duration", self.step_duration, 0.0, MAX_DURATION_SECS);
        finite_in(&mut p, "--p99-bound-ms", self.p99_bound_ms, 0.0, 600_000.0);
        for &r in &self.rates {
            finite_in(&mut p, "--rates", r, 1.0, MAX_RATE);
        }
        p.check(self.rates.len() <= 100, || format!("--rates lists {} steps; at most 100", self.rates.len()));
        let workers = self.workers.validate(&mut p, self.load.conns());
        let plan = RampPlan {
            target,
            workers,
            load,
            start_rate: self.start_rate,
            step_rate: self.step_rate,
            max_rate: self.max_rate,
            step_secs: self.step_duration,
            p99_bound_us: (self.p99_bound_ms * 1_000.0) as u64,
            explicit: self.rates.clone(),
        };
        let total = plan.rates().len() as f64 * (self.step_duration + self.load.drain.min(10.0));
        p.check(total <= MAX_DURATION_SECS * 2.0, || {
            format!("the ramp could take {total:.0} s; use fewer or shorter steps")
        });
        p.finish(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    enum Cmd {
        P2p(P2pArgs),
        Connect(ConnectArgs),
        Sync(SyncArgs),
        Ramp(RampArgs),
    }

    /// Parses and validates one command line; `Ok(())` or the list of problems.
    fn check(line: &str) -> Result<(), Vec<String>> {
        let mut argv = vec!["x"];
        argv.extend(line.split_whitespace());
        let cmd = Cmd::try_parse_from(argv).map_err(|e| vec![e.to_string()])?;
        let r = match cmd {
            Cmd::P2p(a) => a.validate().map(drop),
            Cmd::Connect(a) => a.validate().map(drop),
            Cmd::Sync(a) => a.validate().map(drop),
            Cmd::Ramp(a) => a.validate().map(drop),
        };
        r.map_err(|e| e.0)
    }

    #[track_caller]
    fn ok(line: &str) {
        if let Err(e) = check(line) {
            panic!("{line}: {e:?}");
        }
    }

    #[track_caller]
    fn bad(line: &str, needle: &str) {
        match check(line) {
            Ok(()) => panic!("{line}: accepted"),
            Err(e) => assert!(e.iter().any(|m| m.contains(needle)), "{line}: {e:?} lacks {needle:?}"),
        }
    }

    const S: &str = "--secret s3cret-s3cret-s3cret";

    #[test]
    fn good_command_lines() {
        ok(&format!("p2p {S} --rate 1000 --duration 5"));
        ok(&format!("p2p {S} --rate 1000 --addr 127.0.0.1:9000 --addr 127.0.0.2:9001 --http localhost:8000"));
        ok(&format!("connect {S} --conns 40000 --addr [::1]:9000"));
        ok(&format!("sync {S} --messages 100000 --conversations 20"));
        ok(&format!("ramp {S} --start-rate 1000 --step-rate 1000 --max-rate 5000 --step-duration 2"));
    }

    #[test]
    fn bad_rates_and_durations() {
        bad(&format!("p2p {S} --rate 0"), "--rate");
        bad(&format!("p2p {S} --rate -5"), "--rate");
        bad(&format!("p2p {S} --rate NaN"), "--rate");
        bad(&format!("p2p {S} --rate 1e9"), "--rate");
        bad(&format!("p2p {S} --rate 100 --duration 0"), "--duration");
        bad(&format!("p2p {S} --rate 100 --duration 100000"), "--duration");
        bad(&format!("p2p {S} --rate 0.1 --duration 1"), "at least one message");
        bad(&format!("connect {S} --conns 10 --hold 0"), "--hold");
        bad(&format!("ramp {S} --start-rate 5000 --max-rate 1000"), "--max-rate");
        bad(&format!("ramp {S} --p99-bound-ms 0"), "--p99-bound-ms");
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        bad(&format!("p2p {S} --rate 10 --addr 10.0.0.1:9000"), "not a loopback");
        bad(&format!("p2p {S} --rate 10 --addr 192.168.1.2:9000"), "not a loopback");
        bad(&format!("p2p {S} --rate 10 --addr [2001:db8::1]:9000"), "not a loopback");
        bad(&format!("p2p {S} --rate 10 --addr example.com:9000"), "only IP literals");
        bad(&format!("p2p {S} --rate 10 --http 8.8.8.8:80"), "--http");
        bad(&format!("connect {S} --conns 1 --addr 127.0.0.1"), "host:port");
    }

    #[test]
    fn population_limits() {
        bad(&format!("p2p {S} --rate 10 --users 1"), "--users");
        bad(&format!("p2p {S} --rate 10 --devices 0"), "--devices");
        bad(&format!("p2p {S} --rate 10 --payload 8"), "--payload");
        bad(&format!("p2p {S} --rate 10 --payload 20000"), "--payload");
        bad(&format!("connect {S} --conns 0"), "--conns");
        bad(&format!("connect {S} --conns 10 --conns-per-worker 20000"), "--conns-per-worker");
        bad(&format!("connect {S} --conns 40000 --workers 2"), "need ≥ 3");
        bad("connect --conns 10", "--secret");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = check(&format!("p2p {S} --rate 0 --duration 0 --users 1 --addr 10.1.1.1:1")).unwrap_err();
        assert!(e.len() >= 4, "{e:?}");
    }

    #[test]
    fn workers_follow_the_per_worker_cap() {
        let a = Cmd::try_parse_from(["x", "connect", "--secret", "s", "--conns", "40000"]).unwrap();
        let Cmd::Connect(a) = a else { unreachable!() };
        let plan = a.validate().unwrap();
        assert_eq!((plan.workers.workers, plan.users), (3.max(cores() as u32), 40_000));
        let a = Cmd::try_parse_from(["x", "connect", "--secret", "s", "--conns", "10", "--workers", "1"]).unwrap();
        let Cmd::Connect(a) = a else { unreachable!() };
        assert_eq!(a.validate().unwrap().workers.workers, 1);
    }

    #[test]
    fn ramp_steps() {
        let a = Cmd::try_parse_from([
            "x",
            "ramp",
            "--secret",
            "s",
            "--start-rate",
            "100",
            "--step-rate",
            "50",
            "--max-rate",
            "260",
        ])
        .unwrap();
        let Cmd::Ramp(a) = a else { unreachable!() };
        assert_eq!(a.validate().unwrap().rates(), vec![100.0, 150.0, 200.0, 250.0]);
    }

    #[test]
    fn loopback_check() {
        for a in ["127.0.0.1:1", "127.9.8.7:65535", "[::1]:80", "localhost:9000"] {
            assert_eq!(check_loopback(a), Ok(()), "{a}");
        }
        for a in ["0.0.0.0:9000", "1.2.3.4:5", "localhost", "127.0.0.1:x", "nats:4222"] {
            assert!(check_loopback(a).is_err(), "{a}");
        }
    }

    #[test]
    fn system_names() {
        assert_eq!(parse_system_name("tern_cql"), Ok("tern_cql".to_owned()));
        for bad in ["", "Tern", "tern-cql", "tern cql", "../x", &"a".repeat(33)] {
            let err = parse_system_name(bad).expect_err(bad);
            assert!(err.contains("lower-case"), "{err}");
        }
    }
}
