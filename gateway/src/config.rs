//! Gateway configuration: every setting with its default, the reason for that default,
//! and validation that collects every problem before failing.
//!
//! This module must never do I/O or read the environment; the binary decides where a
//! config comes from (file < environment < flags) and hands the result to [`crate::start`].

use serde::{Deserialize, Serialize};

/// Client TCP port 9000: the original system's default, kept so clients need no change.
pub const DEFAULT_TCP_ADDR: &str = "0.0.0.0:9000";
/// Client WebSocket port 19000: the original system's default.
pub const DEFAULT_WS_ADDR: &str = "0.0.0.0:19000";
/// 0 = one core thread per CPU: thread-per-core wants exactly as many runtimes as CPUs.
pub const DEFAULT_CORES: usize = 0;
/// 0 = pick a random id at start: ids only need to be unique among live gateways, and a
/// restarted gateway should not be mistaken for its previous incarnation.
pub const DEFAULT_GATEWAY_ID: u32 = 0;
/// 5 s to log in: a mobile client on a slow network completes TCP + Login in well under
/// that, and a connection that says nothing should not hold a slot any longer.
pub const DEFAULT_LOGIN_TIMEOUT_MS: u64 = 5_000;
/// 30 s between client pings: below common NAT/carrier idle timeouts (often 60 s+), and
/// cheap on battery.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 30_000;
/// 90 s = three missed pings: one lost ping on a flaky network does not cost a session.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u32 = 90_000;
/// 64 KiB per client frame: a large text message with elements fits easily; anything
/// bigger (files, images) goes through URLs, not the long connection.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 65_536;
/// 19,000 connections: leaves about 1,000 descriptors of the 20,000 hard fd limit of the
/// reference machine for listeners, links, logs and the store.
pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;
/// 50 frames/s per connection (burst 100): far above what a human-driven client sends,
/// low enough that one abusive connection cannot monopolise a core.
pub const DEFAULT_INBOUND_FRAMES_PER_SEC: u32 = 50;
/// 1024 queued frames per connection: absorbs a burst (e.g. an offline backlog pushed at
/// login) while bounding a stuck client's memory to about 1024 shared frame references.
pub const DEFAULT_OUTBOUND_QUEUE_FRAMES: usize = 1_024;
/// 128 Sends in flight per core (forwarded to logic, not yet answered): what waits in
/// the link in front of logic's reader is at most this, 25-50 ms at the 2,500-5,000
/// sends/s a core carries at saturation on a 2-core machine (less on faster ones). In
/// normal running a core has a few in flight; at twice saturation a bound of 128 refused
/// 0.08 % of sends, at five times it kept accepted sends' p99 at 62 ms and refusals' at
/// 30 ms (1,024: 222-234 ms and 135-174 ms; 64 refused 1 % at twice saturation).
/// Measured with `tern loadtest ramp --rates 10000,3000,20000,3000` (ARCHITECTURE.md).
pub const DEFAULT_MAX_SENDS_IN_FLIGHT_PER_CORE: u32 = 128;
/// Logic's link port 9100 on the same machine: the one-process default (`tern all`).
pub const DEFAULT_LINK_ADDR: &str = "127.0.0.1:9100";
/// Reconnect backoff capped at 5 s: logic restarts are noticed within seconds, yet a
/// down logic tier is not hammered by every core of every gateway.
pub const DEFAULT_LINK_RECONNECT_MAX_MS: u64 = 5_000;
/// 3 s: a login that arrives while logic restarts waits for the link instead of failing;
/// logic is back within about a second after a clean stop or a crash (the embedded store
/// replays a bounded journal), and 3 s also covers a few reconnect attempts. Waits never
/// pass `login_timeout_ms`; 0 answers 80009 (retryable) at once.
pub const DEFAULT_LOGIN_LINK_WAIT_MS: u64 = 3_000;
/// "" = no metrics endpoint: in `tern all` the HTTP API already serves `/metrics`, and
/// a separate `tern gateway` should not open a port nobody asked for. Set it (e.g.
/// "127.0.0.1:9091") to have a separate gateway serve its Prometheus text itself.
pub const DEFAULT_METRICS_ADDR: &str = "";
/// Core threads are not pinned by default: on small shared machines (2-CPU CI runners,
/// containers with CPU quotas) pinning fights the scheduler and hurts tail latency.
/// Dedicated gateway hosts gain cache locality and steadier latency by turning it on.
pub const DEFAULT_PIN_CORES: bool = false;

/// Settings of one gateway process. Unknown fields are refused so typos surface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the plain-TCP client listener (length-prefixed frames). Port 0 = any.
    pub tcp_addr: String,
    /// Address of the WebSocket client listener (one binary message per frame). Port 0 = any.
    pub ws_addr: String,
    /// Number of core threads (one monoio runtime each); 0 = number of CPUs.
    pub cores: usize,
    /// This gateway's id on the link (part of every connection reference); 0 = random.
    pub gateway_id: u32,
    /// A connection must complete Login (including logic's answer) within this time.
    pub login_timeout_ms: u64,
    /// How often clients should ping; meant for the LoginAck (which logic builds).
    pub heartbeat_interval_ms: u32,
    /// An authenticated connection silent for this long is kicked and closed.
    pub heartbeat_timeout_ms: u32,
    /// Largest client frame payload (header excluded) the gateway accepts.
    pub max_frame_bytes: usize,
    /// Connections per process; each core admits `max_connections / cores` (at least 1).
    pub max_connections: usize,
    /// Sustained inbound frames per second per connection (token bucket, burst = 2x).
    pub inbound_frames_per_sec: u32,
    /// Frames queued for one connection beyond which it is kicked as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Sends one core keeps in flight to logic (forwarded, not yet answered); past it
    /// the core answers new Sends itself with SendAck 80009. 0 = no bound.
    pub max_sends_in_flight_per_core: u32,
    /// Address of the logic link endpoint each core connects to: `host:port`, or
    /// `unix:PATH` for a logic tier on the same host (no TCP stack on the link).
    pub link_addr: String,
    /// Cap of the link reconnect backoff (which starts at 100 ms and doubles).
    pub link_reconnect_max_ms: u64,
    /// How long a verified Login waits for a down link to logic before it is answered
    /// 80009 (never past `login_timeout_ms`); 0 = answer 80009 at once.
    pub login_link_wait_ms: u64,
    /// Address of the gateway's own plain-HTTP metrics endpoint (`GET /metrics`, served
    /// by a dedicated thread from the render callback given to [`crate::start_with`]);
    /// empty = off.
    pub metrics_addr: String,
    /// Pin core thread `i` to the `i`-th CPU the process may run on (wrapping around).
    pub pin_cores: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            tcp_addr: DEFAULT_TCP_ADDR.to_owned(),
            ws_addr: DEFAULT_WS_ADDR.to_owned(),
            cores: DEFAULT_CORES,
            gateway_id: DEFAULT_GATEWAY_ID,
            login_timeout_ms: DEFAULT_LOGIN_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            heartbeat_timeout_ms: DEFAULT_HEARTBEAT_TIMEOUT_MS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            inbound_frames_per_sec: DEFAULT_INBOUND_FRAMES_PER_SEC,
            outbound_queue_frames: DEFAULT_OUTBOUND_QUEUE_FRAMES,
            max_sends_in_flight_per_core: DEFAULT_MAX_SENDS_IN_FLIGHT_PER_CORE,
            link_addr: DEFAULT_LINK_ADDR.to_owned(),
            link_reconnect_max_ms: DEFAULT_LINK_RECONNECT_MAX_MS,
            login_link_wait_ms: DEFAULT_LOGIN_LINK_WAIT_MS,
            metrics_addr: DEFAULT_METRICS_ADDR.to_owned(),
            pin_cores: DEFAULT_PIN_CORES,
        }
    }
}

/// Largest accepted `max_frame_bytes`: a client frame must still fit, with the
/// `Upstream` envelope around it, in one link frame (24-bit length).
pub const MAX_FRAME_BYTES_LIMIT: usize = tern_schema::frame::MAX_PAYLOAD_LEN - 4_096;

/// Most core threads one gateway runs: `ConnRef.core` is a `u16`, and more than this many
/// runtimes in one process would be a configuration mistake anyway.
pub const MAX_CORES: usize = 1_024;

impl GatewayConfig {
    /// Checks every field and returns all problems at once (empty = valid).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, addr) in [("tcp_addr", &self.tcp_addr), ("ws_addr", &self.ws_addr), ("link_addr", &self.link_addr)] {
            if addr.trim().is_empty() {
                p.push(format!("{name} must not be empty"));
            }
        }
        if self.cores > MAX_CORES {
            p.push(format!("cores must be at most {MAX_CORES} (got {})", self.cores));
        }
        if self.login_timeout_ms == 0 {
            p.push("login_timeout_ms must be > 0".into());
        }
        if self.heartbeat_timeout_ms == 0 {
            p.push("heartbeat_timeout_ms must be > 0".into());
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.heartbeat_timeout_ms {
            p.push(format!(
                "heartbeat_interval_ms ({}) must be > 0 and below heartbeat_timeout_ms ({})",
                self.heartbeat_interval_ms, self.heartbeat_timeout_ms
            ));
        }
        let min = tern_schema::frame::MIN_PAYLOAD_LEN;
        let max = MAX_FRAME_BYTES_LIMIT;
        if !(min..=max).contains(&self.max_frame_bytes) {
            p.push(format!("max_frame_bytes must be in {min}..={max} (got {})", self.max_frame_bytes));
        }
        if self.max_connections == 0 {
            p.push("max_connections must be > 0".into());
        }
        if self.inbound_frames_per_sec == 0 {
            p.push("inbound_frames_per_sec must be > 0".into());
        }
        if self.outbound_queue_frames == 0 {
            p.push("outbound_queue_frames must be > 0".into());
        }
        if self.link_reconnect_max_ms < 100 {
            p.push("link_reconnect_max_ms must be at least 100 (the first backoff step)".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(GatewayConfig::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn all_problems_are_reported_together() {
        let c = GatewayConfig {
            tcp_addr: String::new(),
            login_timeout_ms: 0,
            max_frame_bytes: 1,
            outbound_queue_frames: 0,
            ..GatewayConfig::default()
        };
        assert_eq!(c.problems().len(), 4, "{:?}", c.problems());
    }
}
