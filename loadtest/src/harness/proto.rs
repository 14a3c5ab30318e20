//! What the coordinator and its worker processes say to each other: one JSON object
//! per line, commands on the worker's stdin, events on its stdout.
//!
//! A worker's life: [`WorkerInit`] → connects its devices ([`Event::Progress`]…,
//! [`Event::Connected`]) → any number of runs ([`Command::Run`] → [`Event::Tick`]…,
//! [`Event::Sent`] → [`Command::Drain`] → [`Event::Drained`]) and [`Command::Status`]
//! queries → [`Command::Stop`] → [`Event::Stopped`] and exit. A worker that cannot go
//! on says [`Event::Fatal`] and exits non-zero.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::harness::config::TargetSpec;
use crate::harness::hist::HistData;

/// Failure counts by reason ("connect: Connection refused", "login 60003", ...).
pub type Reasons = BTreeMap<String, u64>;

/// The first line a worker reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    pub worker: u32,
    pub target: TargetSpec,
    /// Global user indices this worker owns: `[first, end)`; all devices of a user live
    /// in the same worker.
    pub first_user: u32,
    pub end_user: u32,
    pub devices: u32,
    /// Source addresses for this worker's connections.
    pub source_ips: Vec<Ipv4Addr>,
    /// Logins per second for this worker.
    pub connect_rate: f64,
    /// When the first connection is due ([`crate::harness::schedule::mono_us`]).
    pub connect_start_us: u64,
    /// PushAck at most this often (ms); 0 = never.
    pub push_ack_ms: u64,
    /// A device that loses its session after logging in reconnects, pulls and resends
    /// (p2p, ramp); `connect` keeps it off so a dropped connection stays visible.
    #[serde(default)]
    pub reconnect: bool,
    /// A busy worker's loop turns at most every this many µs (0 = per event).
    #[serde(default)]
    pub coalesce_us: u64,
    /// `group` scenario: users form groups of this many consecutive users, and devices
    /// send to, pull and ack their group's timeline; 0 = 1:1 messages.
    #[serde(default)]
    pub members: u32,
    /// A send refused with 80009 is written again up to this many times (`--retry-busy`).
    #[serde(default)]
    pub retry_busy: u32,
}

/// One p2p run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub run: u32,
    pub t0_us: u64,
    pub rate: f64,
    pub count: u64,
    pub users: u32,
    pub devices: u32,
    pub payload: usize,
    /// How long after its due time a send may stay unanswered before it counts as failed.
    pub ack_timeout_ms: u64,
    /// Group size (`group` scenario); 0 = 1:1 messages. See [`crate::harness::schedule`].
    #[serde(default)]
    pub members: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Run(RunSpec),
    /// Every send is answered or failed: wait until each device of this worker has every
    /// message addressed to it (except `failed` ones), or until `deadline_us`.
    Drain {
        run: u32,
        failed: Vec<u64>,
        deadline_us: u64,
    },
    /// Report how many connections are still up.
    Status,
    Stop,
}

/// Counters and histograms of one second (or the rest of a run at its end).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    pub run: u32,
    /// Seconds since the run's t0 at the end of this interval (1 = the first second).
    pub sec: u32,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    pub echoes: u64,
    pub ack: HistData,
    pub delivery: HistData,
    /// Due time → the server's refusal (a SendAck or Error with a failure code) of the
    /// sends refused in this interval: how fast the excess is turned away.
    #[serde(default)]
    pub refusal: HistData,
    /// The generator's write → the server's refusal, same sends: the refusal without
    /// the generator's own lateness (its loopback TCP and the server's reading and
    /// answering are in it).
    #[serde(default)]
    pub refusal_wire: HistData,
    /// Due time → the generator's first write of each send of this interval: how late
    /// the generator itself was (part of every latency measured from the due time).
    #[serde(default)]
    pub lag: HistData,
}

/// How a worker's connection phase went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub ok: u64,
    pub failed: u64,
    pub reasons: Reasons,
    /// Connect start → LoginAck.
    pub login: HistData,
    /// The login split in two: connect start → Login written (the TCP handshake runs
    /// inside `connect` on loopback) ...
    #[serde(default)]
    pub handshake: HistData,
    /// ... and Login written → LoginAck read (the server, plus up to one tick of the
    /// worker's own wait).
    #[serde(default)]
    pub answer: HistData,
    /// Due time → connect start: how late the worker's pacing started connects (not
    /// part of `login`; a large value means the generator, not the server, set the rate).
    #[serde(default)]
    pub pace: HistData,
    /// Connects still in progress when `connect` returned (the handshake finished later).
    #[serde(default)]
    pub slow_connects: u64,
    pub first_start_us: u64,
    pub last_done_us: u64,
}

/// After a run's drain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainReport {
    pub run: u32,
    /// Deliveries expected at this worker's devices (sends that were acked or pending).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Delivered although the sender counted the send as failed.
    pub unexpected: u64,
    /// Messages of another run, or not written by this harness.
    pub stray: u64,
    pub last_delivery_us: u64,
    /// CPU seconds (user + system) this worker process used since the run started.
    #[serde(default)]
    pub cpu_secs: f64,
    /// Sessions the server ended with a Kick during the run, by kick reason.
    #[serde(default)]
    pub kicks: Reasons,
    /// Sessions that ended otherwise (connection closed, reset, bad frame), by reason.
    #[serde(default)]
    pub drops: Reasons,
    /// Devices that logged in again after a kick or drop.
    #[serde(default)]
    pub reconnects: u64,
    /// Reconnect attempts that failed (retried with backoff), by reason.
    #[serde(default)]
    pub reconnect_failures: Reasons,
    /// Sends written again after a reconnect (same client_msg_id).
    #[serde(default)]
    pub resent: u64,
    /// Pull pages requested (catch-up after login, SyncNotify).
    #[serde(default)]
    pub pulls: u64,
    /// The rest of the run's counters since the last tick.
    pub tail: Tick,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress {
        connected: u64,
        failed: u64,
    },
    Connected(ConnectReport),
    Tick(Tick),
    Sent {
        run: u32,
        sent: u64,
        /// Global indices of sends that were refused, timed out or never written.
        failed: Vec<u64>,
        errors: Reasons,
    },
    Drained(DrainReport),
    Status {
        alive: u64,
        closed: Reasons,
    },
    Stopped,
    Fatal {
        message: String,
    },
}

/// A line that is not a command or event.
#[derive(Debug, thiserror::Error)]
#[error("bad worker protocol line: {0}")]
pub struct ProtoError(#[from] serde_json::Error);

pub fn encode<T: Serialize>(v: &T) -> String {
    // Plain data structs with string keys always serialize.
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"event\":\"fatal\",\"message\":\"encode: {e}\"}}"))
}

pub fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, ProtoError> {
    Ok(serde_json::from_str(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_round_trip() {
        let c = Command::Drain { run: 2, failed: vec![5, 9], deadline_us: 77 };
        let line = encode(&c);
        assert!(line.starts_with("{\"cmd\":\"drain\""), "{line}");
        let back: Command = decode(&line).unwrap();
        assert!(matches!(back, Command::Drain { run: 2, ref failed, deadline_us: 77 } if failed == &[5, 9]));
        let e = Event::Status { alive: 3, closed: Reasons::from([("kick".into(), 1)]) };
        let back: Event = decode(&encode(&e)).unwrap();
        assert!(matches!(back, Event::Status { alive: 3, .. }));
        assert!(decode::<Command>("{\"cmd\":\"explode\"}").is_err());
    }
}
