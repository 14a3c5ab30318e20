//! `compare`: folds result files of the same workload against different systems into
//! one table (with Tern/peer ratios), one `compare.json` and one HTML page. Used by
//! `loadtest/bench/compare.sh`; reads only the JSON the scenarios wrote.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::harness::report::{fmt_us, refusal_p99s, table, RunResult};
use crate::harness::HarnessError;

/// Arguments of `tern loadtest compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Result files (`p2p` runs of tern / nats_core / jetstream, and optionally
    /// `connect` runs whose memory figures go beside each other).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for `<name>.json` and `<name>.html`.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    #[arg(long, default_value = "compare")]
    pub name: String,
}

/// One system's line of `compare.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemFigures {
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Sessions the server kicked during the p2p run (the devices reconnected and pulled).
    pub kicks: u64,
    /// The generator's own CPU per message: comparable figures need it well below the
    /// server's.
    pub generator_cpu_us_per_msg: f64,
    /// The generator's own lateness p99 (due time → its write), part of every latency:
    /// a system is only measured as far as this is small beside its p99.
    #[serde(default)]
    pub generator_lag_p99_us: u64,
    /// Sends the server refused in the p2p run, and due time → refusal p99 (and from
    /// the generator's write, without its lateness).
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub refusal_p99_us: u64,
    #[serde(default)]
    pub refusal_wire_p99_us: u64,
    /// The server's own CPU per message (its processes named with `--server-pid`): the
    /// systems' cost side by side, on the same workload and machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_msg: Option<f64>,
    /// The connection shape: must be the same for every system compared.
    pub conns: u64,
    pub workers: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_p99_us: Option<u64>,
    /// Gateway (or nats-server) user-space bytes per idle connection, from a `connect` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_idle_conn: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_conns: Option<u64>,
    /// Highest login rate with p99 within the bound, from a `connect --ramp-p99-ms` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_logins_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_p99_bound_ms: Option<f64>,
    /// Highest message rate sustained with p99 within the bound, from a `ramp` run
    /// (`None` with a bound set: not even the first step held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_msgs_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_p99_bound_ms: Option<f64>,
    /// The first step past the bound: its rate, p99 and verdict (what stopped the ramp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp_stopped_at: Option<String>,
}

/// Figures per system name, from p2p and connect results.
pub fn figures(results: &[RunResult]) -> BTreeMap<String, SystemFigures> {
    let mut out: BTreeMap<String, SystemFigures> = BTreeMap::new();
    for r in results {
        let f = out.entry(r.target.clone()).or_default();
        if let Some(ramp) = &r.ramp {
            // A ramp result also carries its last step as `p2p` (for its charts); the
            // system's p2p figures come from its own p2p run, not from that step.
            f.ramp_msgs_per_s = ramp.best_rate;
            f.ramp_p99_bound_ms = Some(ramp.p99_bound_us as f64 / 1000.0);
            f.ramp_stopped_at = ramp
                .steps
                .iter()
                .find(|s| !s.sustained)
                .map(|s| format!("{:.0}/s: p99 {}, {}", s.rate, fmt_us(s.p99_us), s.verdict));
            continue;
        }
        if let Some(p) = &r.p2p {
            f.delivered_per_s = p.delivered_per_s;
            f.p50_us = p.p50_us;
            f.p99_us = p.p99_us;
            f.p999_us = p.p999_us;
            f.lost = p.lost;
            f.duplicates = p.duplicates;
            f.kicks = p.kicks.values().sum();
            f.generator_cpu_us_per_msg = p.generator_cpu_us_per_msg;
            f.generator_lag_p99_us = p.lag_p99_us;
            f.refused = p.failed;
            f.refusal_p99_us = p.refusal_p99_us;
            f.refusal_wire_p99_us = p.refusal_wire_p99_us;
            f.server_cpu_us_per_msg = p.server_cpu_us_per_msg;
            f.conns = p.conns;
            f.workers = p.workers;
            f.ack_p99_us = (!p.ack_hist.buckets.is_empty()).then_some(p.ack_p99_us);
        }
        if let Some(c) = &r.connect {
            if c.ramp_p99_bound_ms.is_some() {
                f.max_logins_per_s = c.ramp_max_logins_per_s;
                f.login_p99_bound_ms = c.ramp_p99_bound_ms;
            } else {
                f.bytes_per_idle_conn = c.bytes_per_idle_conn;
                f.idle_conns = Some(c.alive_after_hold);
            }
        }
    }
    out
}

/// Why the p2p runs are not comparable, if their connection shapes differ.
pub fn shape_mismatch(f: &BTreeMap<String, SystemFigures>) -> Option<String> {
    let shapes: Vec<(&String, u64, u32)> =
        f.iter().filter(|(_, s)| s.conns > 0).map(|(n, s)| (n, s.conns, s.workers)).collect();
    let first = shapes.first()?;
    shapes.iter().any(|s| (s.1, s.2) != (first.1, first.2)).then(|| {
        let list: Vec<String> = shapes.iter().map(|(n, c, w)| format!("{n}: {c} conns / {w} workers")).collect();
        format!("connection shapes differ: {}", list.join(", "))
    })
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}×"))
}

/// The comparison table printed by the benchmark script.
pub fn render_table(f: &BTreeMap<String, SystemFigures>) -> String {
    let mut rows = Vec::new();
    let tern = f.get("tern");
    for (name, s) in f {
        let mut v = format!(
            "{:>10.0} delivered/s  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  lost {}  dup {}",
            s.delivered_per_s,
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            fmt_us(s.p999_us),
            s.lost,
            s.duplicates
        );
        if let Some(a) = s.ack_p99_us {
            v.push_str(&format!("  ack p99 {}", fmt_us(a)));
        }
        if s.refused > 0 {
            v.push_str(&format!("  refused {} {}", s.refused, refusal_p99s(s.refusal_p99_us, s.refusal_wire_p99_us)));
        }
        if s.conns > 0 {
            v.push_str(&format!(
                "  kicks {}  gen {:.1} µs/msg, lag p99 {}  {} conns/{} workers",
                s.kicks,
                s.generator_cpu_us_per_msg,
                fmt_us(s.generator_lag_p99_us),
                s.conns,
                s.workers
            ));
        }
        if let Some(c) = s.server_cpu_us_per_msg {
            v.push_str(&format!("  server {c:.1} µs/msg"));
        }
        if let Some(b) = s.bytes_per_idle_conn {
            v.push_str(&format!("  {b:.0} B/idle conn ({} conns)", s.idle_conns.unwrap_or(0)));
        }
        if let Some(bound) = s.ramp_p99_bound_ms {
            match s.ramp_msgs_per_s {
                Some(r) => v.push_str(&format!("  sustains {r:.0} msgs/s (p99 ≤ {bound} ms)")),
                None => v.push_str(&format!("  no message rate within p99 {bound} ms")),
            }
            if let Some(stop) = &s.ramp_stopped_at {
                v.push_str(&format!(" [next {stop}]"));
            }
        }
        if let Some(bound) = s.login_p99_bound_ms {
            match s.max_logins_per_s {
                Some(r) => v.push_str(&format!("  {r:.0} logins/s (p99 ≤ {bound} ms)")),
                None => v.push_str(&format!("  no login rate within p99 {bound} ms")),
            }
        }
        rows.push((name.clone(), v));
    }
    if let Some(t) = tern {
        for (name, s) in f.iter().filter(|(n, _)| n.as_str() != "tern") {
            rows.push((
                format!("tern/{name}"),
                format!(
                    "delivered/s {}   p99 {}{}{}{}",
                    fmt_ratio(ratio(t.delivered_per_s, s.delivered_per_s)),
                    fmt_ratio(ratio(t.p99_us as f64, s.p99_us as f64)),
                    match (t.server_cpu_us_per_msg, s.server_cpu_us_per_msg) {
                        (Some(a), Some(b)) => format!("   server CPU/msg {}", fmt_ratio(ratio(a, b))),
                        _ => String::new(),
                    },
                    match (t.bytes_per_idle_conn, s.bytes_per_idle_conn) {
                        (Some(a), Some(b)) => format!("   memory/conn {}", fmt_ratio(ratio(a, b))),
                        _ => String::new(),
                    },
                    match (t.ramp_msgs_per_s, s.ramp_msgs_per_s) {
                        (Some(a), Some(b)) => format!("   sustained msgs/s {}", fmt_ratio(ratio(a, b))),
                        _ => String::new(),
                    }
                ),
            ));
        }
    }
    table("Tern vs peers (same workload, same machine, back to back)", &rows)
}

pub fn run_compare(args: CompareArgs) -> Result<(), HarnessError> {
    let mut results = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f).map_err(|e| HarnessError::Output(format!("{}: {e}", f.display())))?;
        let r: RunResult =
            serde_json::from_str(&text).map_err(|e| HarnessError::Output(format!("{}: {e}", f.display())))?;
        results.push(r);
    }
    let figs = figures(&results);
    println!("{}", render_table(&figs));
    println!(
        "gen µs/msg: user + system CPU of every load-generator process (workers and coordinator) \
         from a run's start to its drain, over messages sent — sends, acks, deliveries, echoes, \
         PushAcks, pings, wake-ups and the kernel's loopback TCP work done in its syscalls; \
         server µs/msg: the same for the server's processes (every thread), same window, over \
         messages accepted (refused sends are not counted as messages)"
    );
    if let Some(why) = shape_mismatch(&figs) {
        eprintln!("warning: {why}");
    }
    let mut json = serde_json::to_value(&figs).map_err(|e| HarnessError::Output(e.to_string()))?;
    if let (Some(t), Some(obj)) = (figs.get("tern"), json.as_object_mut()) {
        let mut ratios = serde_json::Map::new();
        for (name, s) in figs.iter().filter(|(n, _)| n.as_str() != "tern") {
            ratios.insert(
                name.clone(),
                serde_json::json!({
                    "delivered_per_s": ratio(t.delivered_per_s, s.delivered_per_s),
                    "p99": ratio(t.p99_us as f64, s.p99_us as f64),
                    "server_cpu_per_msg": t.server_cpu_us_per_msg.zip(s.server_cpu_us_per_msg).and_then(|(a, b)| ratio(a, b)),
                    "bytes_per_idle_conn": t.bytes_per_idle_conn.zip(s.bytes_per_idle_conn).and_then(|(a, b)| ratio(a, b)),
                    "ramp_msgs_per_s": t.ramp_msgs_per_s.zip(s.ramp_msgs_per_s).and_then(|(a, b)| ratio(a, b)),
                }),
            );
        }
        obj.insert("ratios_tern_over_peer".into(), serde_json::Value::Object(ratios));
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| HarnessError::Output(format!("{}: {e}", args.out_dir.display())))?;
    let json_path = args.out_dir.join(format!("{}.json", args.name));
    let html_path = args.out_dir.join(format!("{}.html", args.name));
    let text = serde_json::to_string_pretty(&json).map_err(|e| HarnessError::Output(e.to_string()))?;
    std::fs::write(&json_path, text).map_err(|e| HarnessError::Output(format!("{}: {e}", json_path.display())))?;
    let html = crate::harness::html::render("Tern vs NATS core vs NATS JetStream", &results);
    std::fs::write(&html_path, html).map_err(|e| HarnessError::Output(format!("{}: {e}", html_path.display())))?;
    println!("wrote {} and {}", json_path.display(), html_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::report::{ConnectResult, P2pResult};

    fn run(target: &str, delivered: f64, p99: u64, acks: bool) -> RunResult {
        run_costing(target, delivered, p99, acks, None)
    }

    fn run_costing(target: &str, delivered: f64, p99: u64, acks: bool, server_cpu: Option<f64>) -> RunResult {
        let mut ack = crate::harness::hist::Latency::new();
        if acks {
            ack.record(500);
        }
        RunResult {
            scenario: "p2p".into(),
            target: target.into(),
            started_unix: 0,
            config: serde_json::Value::Null,
            connect: None,
            p2p: Some(P2pResult {
                delivered_per_s: delivered,
                p99_us: p99,
                ack_p99_us: 500,
                ack_hist: ack.to_data(),
                server_cpu_us_per_msg: server_cpu,
                ..Default::default()
            }),
            sync: None,
            ramp: None,
            group: None,
        }
    }

    #[test]
    fn figures_ratios_and_table() {
        let mut conn = run("tern", 0.0, 0, false);
        conn.scenario = "connect".into();
        conn.p2p = None;
        conn.connect =
            Some(ConnectResult { bytes_per_idle_conn: Some(400.0), alive_after_hold: 1000, ..Default::default() });
        let rs = vec![
            run("tern", 150_000.0, 8_000, true),
            run("nats_core", 300_000.0, 4_000, false),
            run("jetstream", 100_000.0, 16_000, true),
            conn,
        ];
        let f = figures(&rs);
        assert_eq!(f["tern"].delivered_per_s, 150_000.0);
        assert_eq!(f["tern"].bytes_per_idle_conn, Some(400.0));
        assert_eq!(f["tern"].ack_p99_us, Some(500));
        assert_eq!(f["nats_core"].ack_p99_us, None);
        assert_eq!(ratio(f["tern"].delivered_per_s, f["jetstream"].delivered_per_s), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(shape_mismatch(&f), None);
        let mut odd = f.clone();
        if let Some(j) = odd.get_mut("jetstream") {
            j.conns = 10;
        }
        odd.get_mut("tern").unwrap().conns = 20;
        assert!(shape_mismatch(&odd).is_some_and(|w| w.contains("jetstream: 10 conns")));
        let t = render_table(&f);
        assert!(t.contains("tern/jetstream") && t.contains("delivered/s 1.50×") && t.contains("p99 0.50×"), "{t}");
        assert!(!t.contains("server CPU/msg"), "no server CPU measured, no ratio: {t}");
        let json = serde_json::to_value(&f).unwrap();
        for k in [
            "delivered_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
            "lost",
            "duplicates",
            "ack_p99_us",
            "bytes_per_idle_conn",
        ] {
            assert!(json["tern"].get(k).is_some(), "tern lacks {k}");
        }
    }

    /// Server CPU per message goes beside each system and into the Tern/peer ratio
    /// only when both sides measured it.
    #[test]
    fn server_cpu_side_by_side() {
        let rs = vec![
            run_costing("tern", 10_000.0, 2_000, true, Some(120.0)),
            run_costing("jetstream", 10_000.0, 3_000, true, Some(40.0)),
            run("nats_core", 10_000.0, 1_000, false),
        ];
        let f = figures(&rs);
        assert_eq!(f["tern"].server_cpu_us_per_msg, Some(120.0));
        assert_eq!(f["nats_core"].server_cpu_us_per_msg, None);
        let t = render_table(&f);
        assert!(t.contains("server 120.0 µs/msg") && t.contains("server 40.0 µs/msg"), "{t}");
        let jet = t.lines().find(|l| l.contains("tern/jetstream")).expect("ratio row");
        assert!(jet.contains("server CPU/msg 3.00×"), "{jet}");
        let core = t.lines().find(|l| l.contains("tern/nats_core")).expect("ratio row");
        assert!(!core.contains("server CPU/msg"), "{core}");
    }

    fn ramp(target: &str, best: Option<f64>) -> RunResult {
        use crate::harness::report::{RampResult, RampStep};
        let step = |rate: f64, p99_us: u64, sustained: bool| RampStep {
            rate,
            p99_us,
            sustained,
            verdict: if sustained { "sustained".into() } else { "p99 over the bound".into() },
            ..Default::default()
        };
        let mut steps: Vec<RampStep> = best.map(|b| vec![step(b, 9_000, true)]).unwrap_or_default();
        steps.push(step(best.unwrap_or(0.0) + 2_000.0, 31_900, false));
        let mut r = run(target, 1.0, 99_999_000, true);
        r.scenario = "ramp".into();
        r.ramp = Some(RampResult { p99_bound_us: 10_000, steps, best_rate: best });
        r
    }

    /// Refusals (count and how fast) and the generator's own lag go beside each system.
    #[test]
    fn refusals_and_generator_lag_side_by_side() {
        let mut tern = run("tern", 10_000.0, 2_000, true);
        let p = tern.p2p.as_mut().unwrap();
        (p.failed, p.refusal_p99_us, p.refusal_wire_p99_us, p.lag_p99_us, p.conns, p.workers) =
            (7, 3_000, 2_100, 1_500, 10, 2);
        let mut core = run("nats_core", 10_000.0, 1_000, false);
        let p = core.p2p.as_mut().unwrap();
        (p.lag_p99_us, p.conns, p.workers) = (900, 10, 2);
        let t = render_table(&figures(&[tern, core]));
        let row = |name: &str| t.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
        assert!(
            row("tern ").contains("refused 7 (p99 3000 µs; from the write 2100 µs)")
                && row("tern ").contains("lag p99 1500 µs"),
            "{t}"
        );
        assert!(!row("nats_core").contains("refused") && row("nats_core").contains("lag p99 900 µs"), "{t}");
    }

    /// A ramp run gives the sustained rate and where it stopped, and leaves the
    /// system's p2p figures (from its own p2p run) alone, whatever the file order.
    #[test]
    fn ramp_figures_beside_p2p() {
        let rs = vec![
            run("tern", 10_000.0, 2_000, true),
            ramp("tern", Some(2_000.0)),
            ramp("jetstream", Some(4_000.0)),
            run("jetstream", 10_000.0, 3_000, true),
            ramp("tern_cql", None),
        ];
        let f = figures(&rs);
        assert_eq!((f["tern"].delivered_per_s, f["tern"].p99_us), (10_000.0, 2_000));
        assert_eq!(f["tern"].ramp_msgs_per_s, Some(2_000.0));
        assert_eq!(f["tern"].ramp_p99_bound_ms, Some(10.0));
        assert_eq!(f["jetstream"].p99_us, 3_000);
        assert_eq!(f["tern_cql"].ramp_msgs_per_s, None);
        let t = render_table(&f);
        assert!(
            t.contains("sustains 2000 msgs/s (p99 ≤ 10 ms) [next 4000/s: p99 31.90 ms, p99 over the bound]"),
            "{t}"
        );
        assert!(t.contains("no message rate within p99 10 ms"), "{t}");
        let jet = t.lines().find(|l| l.contains("tern/jetstream")).expect("ratio row");
        assert!(jet.contains("sustained msgs/s 0.50×"), "{jet}");
        let cql = t.lines().find(|l| l.contains("tern/tern_cql")).expect("a variant of Tern gets a ratio row too");
        assert!(!cql.contains("sustained msgs/s"), "{cql}");
    }
}
