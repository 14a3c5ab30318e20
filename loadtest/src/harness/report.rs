//! What a run produces: the result structure (written as JSON), the human summary table
//! printed at the end, and the file names. The HTML report is drawn from the same
//! structure by [`crate::harness::html`], so the JSON alone can rebuild any report
//! (`tern loadtest compare` does).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::harness::coord::ConnectSummary;
use crate::harness::hist::{per_second, HistData, Latency, Percentiles};
use crate::harness::proto::{Reasons, Tick};
use crate::harness::sysinfo::KernelMem;
use crate::harness::HarnessError;

/// One run's result: exactly one of the scenario sections is present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    pub target: String,
    pub started_unix: u64,
    pub config: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p: Option<P2pResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampResult>,
    /// `group` runs: the groups and the steps (the last step's run is in `p2p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::harness::group::GroupResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectResult {
    pub conns: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: Reasons,
    pub connect_secs: f64,
    pub logins_per_s: f64,
    pub login: Percentiles,
    pub login_hist: HistData,
    /// Connect start → Login written (the loopback handshake runs inside `connect`).
    #[serde(default)]
    pub handshake: Percentiles,
    /// Login written → LoginAck read.
    #[serde(default)]
    pub answer: Percentiles,
    /// Due time → connect start: the generator's own lateness (not in `login`).
    #[serde(default)]
    pub pace: Percentiles,
    /// Connects not done when `connect` returned.
    #[serde(default)]
    pub slow_connects: u64,
    pub hold_secs: f64,
    pub alive_after_hold: u64,
    pub closed_during_hold: Reasons,
    pub gateway_pids: Vec<u32>,
    pub gateway_rss_before: u64,
    pub gateway_rss_after: u64,
    /// Growth of the gateways' RSS per connection alive after the hold.
    pub bytes_per_idle_conn: Option<f64>,
    pub kernel_before: KernelMem,
    pub kernel_after: KernelMem,
    /// Growth of kernel TCP buffer memory + slab per connection (both ends of each
    /// loopback connection live in this kernel).
    pub kernel_bytes_per_conn: Option<f64>,
    /// Ramp mode: every step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<LoginRampStep>,
    /// Ramp mode: the highest measured login rate of a step within the p99 bound with
    /// no failed login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_max_logins_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_p99_bound_ms: Option<f64>,
}

/// One step of a login-rate ramp.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoginRampStep {
    pub offered_per_s: f64,
    pub logins_per_s: f64,
    pub ok: u64,
    pub failed: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// p99 of the login's parts and of the pacing lateness (see [`ConnectResult`]).
    #[serde(default)]
    pub handshake_p99_us: u64,
    #[serde(default)]
    pub answer_p99_us: u64,
    #[serde(default)]
    pub pace_p99_us: u64,
    pub within_bound: bool,
}

/// One point of the over-time series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t_s: u32,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    pub delivery: Percentiles,
    pub ack: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct P2pResult {
    pub users: u32,
    pub devices: u32,
    pub rate: f64,
    pub duration_secs: f64,
    pub payload: usize,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: Reasons,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub stray: u64,
    pub echoes: u64,
    /// CPU seconds (user + system) the load generator used for the run — worker
    /// processes and coordinator together: on a small machine the generator competes
    /// with the server, and this says how hard.
    #[serde(default)]
    pub generator_cpu_secs: f64,
    /// The workers' share of `generator_cpu_secs`.
    #[serde(default)]
    pub generator_worker_cpu_secs: f64,
    /// `generator_cpu_secs` per message sent, µs: everything the generator did for one
    /// message (the send, its ack, every delivery and echo, heartbeats and PushAcks
    /// spread over the messages). Near the server's own cost per message, the run
    /// measured the generator, not the server.
    #[serde(default)]
    pub generator_cpu_us_per_msg: f64,
    /// CPU seconds (user + system, every thread) of the server processes named with
    /// `--server-pid`, over the same window as the generator's: what the system under
    /// test spent on the run, comparable between systems on the same workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs: Option<f64>,
    /// `server_cpu_secs` per message accepted (acked without an error), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_msg: Option<f64>,
    /// Worker processes and connections (users × devices): the connection shape, the
    /// same for every system compared.
    #[serde(default)]
    pub workers: u32,
    #[serde(default)]
    pub conns: u64,
    /// Sessions the server ended with a Kick, by reason (the device reconnected and
    /// pulled, as a real client does).
    #[serde(default)]
    pub kicks: Reasons,
    /// Sessions that ended without a Kick (closed, reset), by reason.
    #[serde(default)]
    pub drops: Reasons,
    /// Devices that logged in again after a kick or drop.
    #[serde(default)]
    pub reconnects: u64,
    #[serde(default)]
    pub reconnect_failures: Reasons,
    /// Unanswered sends written again after a reconnect (same client_msg_id).
    #[serde(default)]
    pub resent: u64,
    /// Pull pages requested (catch-up after a login, SyncNotify).
    #[serde(default)]
    pub pulls: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub ack_p999_us: u64,
    pub ack_max_us: u64,
    /// Due time → the server's refusal, over the refused sends (0 when none was):
    /// whether the excess is turned away fast.
    #[serde(default)]
    pub refusal_p50_us: u64,
    #[serde(default)]
    pub refusal_p99_us: u64,
    #[serde(default)]
    pub refusal_max_us: u64,
    /// The generator's write → the server's refusal, same sends: the refusal without
    /// the generator's lateness.
    #[serde(default)]
    pub refusal_wire_p50_us: u64,
    #[serde(default)]
    pub refusal_wire_p99_us: u64,
    #[serde(default)]
    pub refusal_wire_max_us: u64,
    /// Due time → the generator's first write of a send: the generator's own lateness,
    /// included in every latency above (a tick is up to 1 ms; more means it lacked CPU).
    #[serde(default)]
    pub lag_p50_us: u64,
    #[serde(default)]
    pub lag_p99_us: u64,
    #[serde(default)]
    pub lag_max_us: u64,
    pub series: Vec<SeriesPoint>,
    pub delivery_hist: HistData,
    pub ack_hist: HistData,
}

impl P2pResult {
    /// Whether every message reached every target device exactly once.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncResult {
    pub messages: u64,
    pub conversations: u32,
    pub page: u32,
    pub fill_secs: f64,
    pub fill_msgs_per_s: f64,
    pub fill_failed: u64,
    pub login_ms: f64,
    /// Connect start → last page, seconds.
    pub sync_secs: f64,
    pub msgs_per_s: f64,
    pub pulled: u64,
    pub distinct: u64,
    pub pages: u64,
    pub complete: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RampStep {
    pub rate: f64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub ack_p99_us: u64,
    /// Due time → refusal p99 of the step's refused sends (0: none refused).
    #[serde(default)]
    pub refusal_p99_us: u64,
    /// The generator's write → refusal p99, same sends.
    #[serde(default)]
    pub refusal_wire_p99_us: u64,
    /// The generator's own lateness p99 (see `P2pResult::lag_p99_us`).
    #[serde(default)]
    pub lag_p99_us: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub failed: u64,
    pub sustained: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RampResult {
    pub p99_bound_us: u64,
    pub steps: Vec<RampStep>,
    /// Highest rate sustained with p99 under the bound.
    pub best_rate: Option<f64>,
}

/// Accumulates worker ticks into the series and the totals.
#[derive(Default)]
pub struct Series {
    points: BTreeMap<u32, (SeriesPoint, Latency, Latency)>,
    pub delivery: Latency,
    pub ack: Latency,
    /// Due time → refusal, of the sends the server refused.
    pub refusal: Latency,
    /// The generator's write → refusal, same sends.
    pub refusal_wire: Latency,
    /// Due time → the generator's first write.
    pub lag: Latency,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub delivered: u64,
    pub echoes: u64,
}

impl Series {
    pub fn add(&mut self, t: &Tick) -> Result<(), HarnessError> {
        let d = crate::harness::coord::hist(&t.delivery)?;
        let a = crate::harness::coord::hist(&t.ack)?;
        self.delivery.add(&d);
        self.ack.add(&a);
        self.refusal.add(&crate::harness::coord::hist(&t.refusal)?);
        self.refusal_wire.add(&crate::harness::coord::hist(&t.refusal_wire)?);
        self.lag.add(&crate::harness::coord::hist(&t.lag)?);
        self.sent += t.sent;
        self.acked += t.acked;
        self.failed += t.failed;
        self.delivered += t.delivered;
        self.echoes += t.echoes;
        let e = self
            .points
            .entry(t.sec)
            .or_insert_with(|| (SeriesPoint { t_s: t.sec, ..Default::default() }, Latency::new(), Latency::new()));
        e.0.sent += t.sent;
        e.0.acked += t.acked;
        e.0.failed += t.failed;
        e.0.delivered += t.delivered;
        e.1.add(&d);
        e.2.add(&a);
        Ok(())
    }

    /// The latest complete point (for the progress line).
    pub fn last(&self, before: u32) -> Option<SeriesPoint> {
        self.points.range(..before).next_back().map(|(_, (p, d, a))| {
            let mut p = p.clone();
            p.delivery = d.summary();
            p.ack = a.summary();
            p
        })
    }

    /// The series, without intervals in which nothing happened (the drain's tail).
    pub fn points(&self) -> Vec<SeriesPoint> {
        self.points
            .values()
            .filter(|(p, _, _)| p.sent + p.acked + p.failed + p.delivered > 0)
            .map(|(p, d, a)| {
                let mut p = p.clone();
                p.delivery = d.summary();
                p.ack = a.summary();
                p
            })
            .collect()
    }
}

impl ConnectResult {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        conns: u64,
        c: &ConnectSummary,
        hold_secs: f64,
        alive: u64,
        closed: Reasons,
        pids: Vec<u32>,
        rss: (u64, u64),
        kernel: (KernelMem, KernelMem),
    ) -> ConnectResult {
        let per_conn = |delta: i128| (alive > 0).then(|| delta as f64 / alive as f64);
        let kdelta = |k: &KernelMem| i128::from(k.tcp_mem_bytes) + i128::from(k.slab_bytes);
        ConnectResult {
            conns,
            ok: c.ok,
            failed: c.failed,
            failures: c.reasons.clone(),
            connect_secs: c.secs,
            logins_per_s: per_second(c.ok, c.secs),
            login: c.login.summary(),
            login_hist: c.login.to_data(),
            handshake: c.handshake.summary(),
            answer: c.answer.summary(),
            pace: c.pace.summary(),
            slow_connects: c.slow_connects,
            hold_secs,
            alive_after_hold: alive,
            closed_during_hold: closed,
            bytes_per_idle_conn: if pids.is_empty() { None } else { per_conn(i128::from(rss.1) - i128::from(rss.0)) },
            gateway_pids: pids,
            gateway_rss_before: rss.0,
            gateway_rss_after: rss.1,
            kernel_before: kernel.0,
            kernel_after: kernel.1,
            kernel_bytes_per_conn: per_conn(kdelta(&kernel.1) - kdelta(&kernel.0)),
            ramp: Vec::new(),
            ramp_max_logins_per_s: None,
            ramp_p99_bound_ms: None,
        }
    }
}

/// Formats microseconds for people.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us} µs"),
        10_000..=9_999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// A latency distribution on one line: p50, p90, p99, p99.9 and max.
fn fmt_spread([p50, p90, p99, p999, max]: [u64; 5]) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        fmt_us(p50),
        fmt_us(p90),
        fmt_us(p99),
        fmt_us(p999),
        fmt_us(max)
    )
}

fn fmt_bytes(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn fmt_reasons(r: &Reasons) -> String {
    if r.is_empty() {
        return "none".into();
    }
    r.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

/// Rows of `(label, value)` as an aligned table.
pub fn table(title: &str, rows: &[(String, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut s = format!("{title}\n{}\n", "─".repeat(title.chars().count().max(20)));
    for (k, v) in rows {
        let _ = writeln!(s, "  {k:<w$}  {v}");
    }
    s
}

fn row(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

impl RunResult {
    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let title = format!("tern loadtest {} — target {}", self.scenario, self.target);
        let mut rows = Vec::new();
        if let Some(c) = &self.connect {
            rows.push(row("connections", format!("{} ok / {} asked, {} failed", c.ok, c.conns, c.failed)));
            rows.push(row("failures", fmt_reasons(&c.failures)));
            rows.push(row("connect rate", format!("{:.0} logins/s over {:.2} s", c.logins_per_s, c.connect_secs)));
            rows.push(row(
                "login latency",
                fmt_spread([c.login.p50_us, c.login.p90_us, c.login.p99_us, c.login.p999_us, c.login.max_us]),
            ));
            if c.handshake.count > 0 {
                rows.push(row(
                    "login split",
                    format!(
                        "connect+write p50 {} p99 {}  write→ack p50 {} p99 {}  ({} connects finished late)",
                        fmt_us(c.handshake.p50_us),
                        fmt_us(c.handshake.p99_us),
                        fmt_us(c.answer.p50_us),
                        fmt_us(c.answer.p99_us),
                        c.slow_connects
                    ),
                ));
                rows.push(row(
                    "generator pacing",
                    format!("connects started late by p50 {} p99 {}", fmt_us(c.pace.p50_us), fmt_us(c.pace.p99_us)),
                ));
            }
            rows.push(row(
                "alive after hold",
                format!(
                    "{} ({:.0} s), closed: {}",
                    c.alive_after_hold,
                    c.hold_secs,
                    fmt_reasons(&c.closed_during_hold)
                ),
            ));
            if c.gateway_pids.is_empty() {
                rows.push(row("gateway RSS", "not measured (pass --gateway-pid)"));
            } else {
                rows.push(row(
                    "gateway RSS",
                    format!(
                        "{} → {} (pids {:?})",
                        fmt_bytes(c.gateway_rss_before),
                        fmt_bytes(c.gateway_rss_after),
                        c.gateway_pids
                    ),
                ));
            }
            if let Some(b) = c.bytes_per_idle_conn {
                rows.push(row("bytes per idle conn", format!("{b:.0} B (gateway user space)")));
            }
            for st in &c.ramp {
                rows.push(row(
                    "ramp step",
                    format!(
                        "offered {:>7.0}/s  measured {:>7.0} logins/s  p50 {:>9}  p99 {:>9}  failed {}  \
                         (p99 connect+write {}, write→ack {}, pacing late {}){}",
                        st.offered_per_s,
                        st.logins_per_s,
                        fmt_us(st.p50_us),
                        fmt_us(st.p99_us),
                        st.failed,
                        fmt_us(st.handshake_p99_us),
                        fmt_us(st.answer_p99_us),
                        fmt_us(st.pace_p99_us),
                        if st.within_bound { "" } else { "  (past the bound)" }
                    ),
                ));
            }
            if let Some(bound) = c.ramp_p99_bound_ms {
                rows.push(row(
                    "max login rate",
                    match c.ramp_max_logins_per_s {
                        Some(r) => format!("{r:.0} logins/s with p99 ≤ {bound} ms"),
                        None => format!("none: the first step already passed p99 {bound} ms"),
                    },
                ));
            }
            rows.push(row(
                "kernel TCP mem / slab",
                format!(
                    "{} → {} / {} → {}",
                    fmt_bytes(c.kernel_before.tcp_mem_bytes),
                    fmt_bytes(c.kernel_after.tcp_mem_bytes),
                    fmt_bytes(c.kernel_before.slab_bytes),
                    fmt_bytes(c.kernel_after.slab_bytes)
                ),
            ));
            if let Some(k) = c.kernel_bytes_per_conn {
                rows.push(row("kernel bytes per conn", format!("{k:.0} B (both socket ends)")));
            }
        }
        if let Some(g) = &self.group {
            rows.extend(g.rows());
        }
        if let Some(p) = &self.p2p {
            rows.extend(p2p_rows(p));
        }
        if let Some(s) = &self.sync {
            rows.push(row("stored", format!("{} messages over {} conversations", s.messages, s.conversations)));
            rows.push(row(
                "fill",
                format!("{:.2} s ({:.0} msgs/s, {} failed)", s.fill_secs, s.fill_msgs_per_s, s.fill_failed),
            ));
            rows.push(row("login (new device)", format!("{:.2} ms", s.login_ms)));
            rows.push(row(
                "sync",
                format!(
                    "{} messages in {:.3} s = {:.0} msgs/s ({} pages)",
                    s.distinct, s.sync_secs, s.msgs_per_s, s.pages
                ),
            ));
            rows.push(row("complete", if s.complete { "yes" } else { "NO" }));
        }
        if let Some(r) = &self.ramp {
            for s in &r.steps {
                rows.push(row(
                    &format!("{:.0}/s", s.rate),
                    format!(
                        "delivered {:.0}/s  p50 {}  p99 {}  p99.9 {}  lost {}  dup {}  refused {}{}  generator lag p99 {}  {}",
                        s.delivered_per_s,
                        fmt_us(s.p50_us),
                        fmt_us(s.p99_us),
                        fmt_us(s.p999_us),
                        s.lost,
                        s.duplicates,
                        s.failed,
                        if s.failed > 0 {
                            format!(" {}", refusal_p99s(s.refusal_p99_us, s.refusal_wire_p99_us))
                        } else {
                            String::new()
                        },
                        fmt_us(s.lag_p99_us),
                        s.verdict
                    ),
                ));
            }
            rows.push(row(
                "best sustained",
                match r.best_rate {
                    Some(b) => format!("{b:.0} msgs/s with p99 ≤ {}", fmt_us(r.p99_bound_us)),
                    None => format!("no step kept p99 ≤ {}", fmt_us(r.p99_bound_us)),
                },
            ));
        }
        table(&title, &rows)
    }

    /// Writes `<dir>/<name>.json` and `<dir>/<name>.html`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), HarnessError> {
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::Output(format!("{}: {e}", dir.display())))?;
        let json_path = dir.join(format!("{name}.json"));
        let html_path = dir.join(format!("{name}.html"));
        let json = serde_json::to_string_pretty(self).map_err(|e| HarnessError::Output(e.to_string()))?;
        std::fs::write(&json_path, json).map_err(|e| HarnessError::Output(format!("{}: {e}", json_path.display())))?;
        let html = crate::harness::html::render(
            &format!("tern loadtest {} — {}", self.scenario, self.target),
            std::slice::from_ref(self),
        );
        std::fs::write(&html_path, html).map_err(|e| HarnessError::Output(format!("{}: {e}", html_path.display())))?;
        Ok((json_path, html_path))
    }
}

fn p2p_rows(p: &P2pResult) -> Vec<(String, String)> {
    vec![
        row(
            "population",
            format!(
                "{} users × {} devices ({} logged in, {} failed)",
                p.users, p.devices, p.logins_ok, p.logins_failed
            ),
        ),
        row("offered", format!("{:.0} msgs/s for {:.1} s, {} B payload", p.rate, p.duration_secs, p.payload)),
        row("sent / acked / failed", format!("{} / {} / {} ({:.0} sent/s)", p.sent, p.acked, p.failed, p.sent_per_s)),
        row("send errors", fmt_reasons(&p.errors)),
        row("delivered", format!("{} of {} expected ({:.0}/s)", p.delivered, p.expected_deliveries, p.delivered_per_s)),
        row(
            "lost / duplicates",
            format!("{} / {}{}", p.lost, p.duplicates, if p.clean() { "" } else { "   ← NOT ZERO" }),
        ),
        row("unexpected / stray / echoes", format!("{} / {} / {}", p.unexpected, p.stray, p.echoes)),
        row("kicks / drops", format!("{} / {}", fmt_reasons(&p.kicks), fmt_reasons(&p.drops))),
        row(
            "reconnects",
            format!(
                "{} (failed attempts: {}), {} sends resent, {} pull pages",
                p.reconnects,
                fmt_reasons(&p.reconnect_failures),
                p.resent,
                p.pulls
            ),
        ),
        row(
            "generator CPU",
            format!(
                "{:.2} µs/msg — {:.2} s ({:.2} s workers), {:.2} cores over the sending window; \
                 {} workers, {} connections (user + system CPU of every worker process and the \
                 coordinator from the run's start to its drain, over messages sent: sends, acks, \
                 deliveries, echoes, PushAcks, pings, wake-ups and the kernel's loopback TCP work \
                 done in the generator's syscalls)",
                p.generator_cpu_us_per_msg,
                p.generator_cpu_secs,
                p.generator_worker_cpu_secs,
                p.generator_cpu_secs / p.duration_secs.max(1e-9),
                p.workers,
                p.conns
            ),
        ),
        row(
            "server CPU",
            match (p.server_cpu_us_per_msg, p.server_cpu_secs) {
                (Some(per_msg), Some(secs)) => format!(
                    "{per_msg:.2} µs/msg — {secs:.2} s, {:.2} cores over the sending window \
                     (user + system CPU of every --server-pid process, same window as the \
                     generator's, over messages accepted)",
                    secs / p.duration_secs.max(1e-9)
                ),
                _ => "not measured (no --server-pid)".into(),
            },
        ),
        row("send→delivered", fmt_spread([p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us])),
        row(
            "send→ack",
            if p.acked > 0 && !p.ack_hist.buckets.is_empty() {
                format!(
                    "p50 {}  p99 {}  p99.9 {}  max {}",
                    fmt_us(p.ack_p50_us),
                    fmt_us(p.ack_p99_us),
                    fmt_us(p.ack_p999_us),
                    fmt_us(p.ack_max_us)
                )
            } else {
                "n/a (no acks)".into()
            },
        ),
        percentile_row(
            "generator lag",
            [p.lag_p50_us, p.lag_p99_us, p.lag_max_us],
            "due time to the generator's write: included in the latencies above",
            "n/a",
        ),
        percentile_row(
            "send→refused",
            [p.refusal_p50_us, p.refusal_p99_us, p.refusal_max_us],
            "due time to the server's refusal, over the refused sends",
            "none refused",
        ),
        percentile_row(
            "write→refused",
            [p.refusal_wire_p50_us, p.refusal_wire_p99_us, p.refusal_wire_max_us],
            "the generator's write to the refusal, same sends: without the generator's lateness",
            "none refused",
        ),
    ]
}

/// A row "p50 …  p99 …  max … (what)", or `none` when nothing was recorded (max 0).
fn percentile_row(name: &str, [p50, p99, max]: [u64; 3], what: &str, none: &str) -> (String, String) {
    let value = if max > 0 {
        format!("p50 {}  p99 {}  max {} ({what})", fmt_us(p50), fmt_us(p99), fmt_us(max))
    } else {
        none.to_owned()
    };
    row(name, value)
}

/// "(p99 …; from the write …)": a run's or step's refusal time from the due time and
/// from the generator's write, as the ramp steps and the compare table print it.
pub fn refusal_p99s(due_us: u64, wire_us: u64) -> String {
    format!("(p99 {}; from the write {})", fmt_us(due_us), fmt_us(wire_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(sec: u32, delivered: &[u64]) -> Tick {
        let mut l = Latency::new();
        for &v in delivered {
            l.record(v);
        }
        Tick {
            run: 1,
            sec,
            sent: delivered.len() as u64,
            delivered: delivered.len() as u64,
            delivery: l.to_data(),
            ..Default::default()
        }
    }

    #[test]
    fn series_merges_workers_per_second() {
        let mut s = Series::default();
        s.add(&tick(1, &[100, 200])).unwrap();
        s.add(&tick(1, &[300])).unwrap();
        s.add(&tick(2, &[1_000])).unwrap();
        s.add(&tick(3, &[])).unwrap();
        let pts = s.points();
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].t_s, pts[0].delivered, pts[0].delivery.max_us), (1, 3, 300));
        assert_eq!((pts[1].t_s, pts[1].delivered), (2, 1));
        assert_eq!((s.delivered, s.delivery.count()), (4, 4));
        assert_eq!(s.last(2).map(|p| p.t_s), Some(1));
    }

    #[test]
    fn connect_figures_per_connection() {
        let c = ConnectSummary { ok: 1000, secs: 0.5, ..Default::default() };
        let k0 = KernelMem { tcp_inuse: 0, tcp_mem_bytes: 1_000, slab_bytes: 10_000 };
        let k1 = KernelMem { tcp_inuse: 2000, tcp_mem_bytes: 2_000, slab_bytes: 1_010_000 };
        let r = ConnectResult::build(1000, &c, 5.0, 1000, Reasons::new(), vec![42], (10_000_000, 10_512_000), (k0, k1));
        assert_eq!(r.logins_per_s, 2000.0);
        assert_eq!(r.bytes_per_idle_conn, Some(512.0));
        assert_eq!(r.kernel_bytes_per_conn, Some(1001.0));
        let none = ConnectResult::build(10, &c, 5.0, 0, Reasons::new(), vec![], (0, 0), (k0, k0));
        assert_eq!((none.bytes_per_idle_conn, none.kernel_bytes_per_conn), (None, None));
    }

    #[test]
    fn human_units() {
        assert_eq!(fmt_us(950), "950 µs");
        assert_eq!(fmt_us(12_345), "12.35 ms");
        assert_eq!(fmt_us(12_345_678), "12.35 s");
        let t = table("T", &[row("a", "1"), row("long key", "2")]);
        assert!(t.contains("  a         1\n") && t.contains("  long key  2\n"), "{t}");
    }
}
