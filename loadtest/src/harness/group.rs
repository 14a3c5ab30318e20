//! `group`: G groups of M members, every member online (D devices each), group messages
//! sent open-loop at a fixed total rate, measured send→ack and send→delivered (to every
//! online device of every other member), with loss and duplicates counted exactly.
//!
//! Setup goes through the HTTP API: the users are imported, then each group is imported
//! (`/v1/group/import` with its first members, `/v1/group/importMember` for the rest, at
//! most 100 per call; imports notify nobody, so setup does not flood the devices). The
//! run itself is the p2p machinery with a group schedule ([`crate::harness::schedule`]:
//! message `i` goes to group `i mod G` from a hashed member of it): the same worker
//! processes, the same open loop, the same drain and loss accounting. A device tracks
//! its group's timeline (group seqs), pulls it by `group_id` after a reconnect and acks
//! it with group PushAcks.
//!
//! With `--max-rate`, the run steps the rate up from `--rate` by `--step-rate` over the
//! same connections until p99 passes `--p99-bound-ms` (or a message is lost), and
//! reports the highest rate that held. Any loss or duplicate fails the command.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::harness::config::{
    finite_in, LoadPlan, OutputArgs, Problems, TargetArgs, TargetSpec, WorkerArgs, WorkerPlan, MAX_CONNS,
    MAX_DURATION_SECS, MAX_PAYLOAD, MAX_RATE,
};
use crate::harness::coord::{connect_phase, plan_workers, ConnectSummary, Workers};
use crate::harness::net::post_json;
use crate::harness::p2p::{judge, p2p_result, run_once};
use crate::harness::report::{fmt_us, P2pResult, RampStep, RunResult};
use crate::harness::schedule::MIN_PAYLOAD;
use crate::harness::setup::SetupError;
use crate::harness::{bar, finish, prepare, HarnessError};

/// Members per import call (the API's default `max_batch`).
const MEMBER_BATCH: u32 = 100;
/// Import calls in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 8;
/// Largest group the scenario builds (the server's default `maxMemberCount`).
pub const MAX_MEMBERS: u32 = 100_000;

/// `group`: group messages, open loop at a fixed total rate.
#[derive(clap::Args, Debug, Clone)]
pub struct GroupArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub workers: WorkerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Groups (G).
    #[arg(long, default_value_t = 10)]
    pub groups: u32,
    /// Members per group (M); users are G × M, each in one group.
    #[arg(long, default_value_t = 50)]
    pub members: u32,
    /// Devices online per member.
    #[arg(long, default_value_t = 1)]
    pub devices: u32,
    /// Group messages per second, all groups together.
    #[arg(long)]
    pub rate: f64,
    /// Seconds of sending (per step when ramping).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Message text size in bytes (at least 48: the stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// A device acknowledges its group timeline (group PushAck) at most this often, ms;
    /// 0 = never (the default: gateways drop group PushAcks, so they only cost the
    /// client's writes and the gateway's reads — at 1,000 × 50 and 1,000 msgs/s, p99
    /// 88 ms with them every second against 4 ms without).
    #[arg(long, default_value_t = 0)]
    pub push_ack_ms: u64,
    /// After the last send, seconds to wait for missing acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Ramp: step the rate up from --rate to this (msgs/s) until p99 passes the bound.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Ramp: added to the rate per step.
    #[arg(long, default_value_t = 1_000.0)]
    pub step_rate: f64,
    /// send→delivered p99 bound of a ramp step, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound_ms: f64,
}

/// A validated `group` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub target: TargetSpec,
    pub workers: WorkerPlan,
    pub load: LoadPlan,
    pub groups: u32,
    pub rate: f64,
    pub duration_secs: f64,
    /// Ramp steps' rates (one entry: a single run).
    pub rates: Vec<f64>,
    pub p99_bound_us: u64,
}

impl GroupArgs {
    pub fn validate(&self) -> Result<GroupPlan, crate::harness::config::ConfigError> {
        let mut p = Problems::default();
        let target = self.target.validate(&mut p);
        p.check(target.kind == crate::harness::config::TargetKind::Tern, || "group runs against Tern only".into());
        p.check(self.groups >= 1, || "--groups must be ≥ 1".into());
        p.check((2..=MAX_MEMBERS).contains(&self.members), || {
            format!("--members must be 2..={MAX_MEMBERS} (got {})", self.members)
        });
        p.check((1..=16).contains(&self.devices), || format!("--devices must be 1..=16 (got {})", self.devices));
        let users = u64::from(self.groups) * u64::from(self.members);
        let conns = users * u64::from(self.devices);
        p.check(conns <= MAX_CONNS, || format!("groups × members × devices must be ≤ {MAX_CONNS}"));
        p.check((MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload), || {
            format!("--payload must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes (got {})", self.payload)
        });
        finite_in(&mut p, "--rate", self.rate, 0.0, MAX_RATE);
        finite_in(&mut p, "--duration", self.duration, 0.0, MAX_DURATION_SECS);
        finite_in(&mut p, "--drain", self.drain, 0.0, MAX_DURATION_SECS);
        finite_in(&mut p, "--p99-bound-ms", self.p99_bound_ms, 0.0, 600_000.0);
        p.check(self.rate * self.duration >= 1.0, || "--rate × --duration must be at least one message".into());
        let mut rates = vec![self.rate];
        if let Some(max) = self.max_rate {
            finite_in(&mut p, "--max-rate", max, 0.0, MAX_RATE);
            finite_in(&mut p, "--step-rate", self.step_rate, 0.0, MAX_RATE);
            p.check(max >= self.rate, || "--max-rate must be ≥ --rate".into());
            let mut r = self.rate + self.step_rate;
            while r <= max + 1e-9 && rates.len() < 100 && self.step_rate > 0.0 {
                rates.push(r);
                r += self.step_rate;
            }
        }
        let total = rates.len() as f64 * (self.duration + self.drain.min(10.0));
        p.check(total <= MAX_DURATION_SECS * 2.0, || format!("the run could take {total:.0} s; use fewer steps"));
        let workers = self.workers.validate(&mut p, conns);
        let load = LoadPlan {
            users: u32::try_from(users).unwrap_or(u32::MAX),
            members: self.members,
            devices: self.devices,
            payload: self.payload,
            push_ack_ms: self.push_ack_ms,
            retry_busy: 0,
            drain_secs: self.drain,
            server_pids: Vec::new(),
        };
        p.finish(GroupPlan {
            target,
            workers,
            load,
            groups: self.groups,
            rate: self.rate,
            duration_secs: self.duration,
            rates,
            p99_bound_us: (self.p99_bound_ms * 1_000.0) as u64,
        })
    }
}

/// The group section of a result: the population, setup time, and the ramp if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupResult {
    pub groups: u32,
    pub members: u32,
    /// Seconds to import the groups and their members over HTTP.
    pub setup_secs: f64,
    /// Deliveries offered per second at the (last) rate: rate × (M − 1) × D.
    pub deliveries_offered_per_s: f64,
    pub p99_bound_us: u64,
    /// Every step of a ramp (a single run is one step).
    pub steps: Vec<RampStep>,
    /// Highest rate whose step held: no loss, p99 within the bound, the offered
    /// deliveries delivered.
    pub best_rate: Option<f64>,
}

impl GroupResult {
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "groups".to_owned(),
            format!("{} × {} members, set up over HTTP in {:.2} s", self.groups, self.members, self.setup_secs),
        )];
        if self.steps.len() > 1 {
            for s in &self.steps {
                rows.push((
                    format!("{:.0}/s", s.rate),
                    format!(
                        "delivered {:.0}/s  p50 {}  p99 {}  p99.9 {}  ack p99 {}  lost {}  dup {}  {}",
                        s.delivered_per_s,
                        fmt_us(s.p50_us),
                        fmt_us(s.p99_us),
                        fmt_us(s.p999_us),
                        fmt_us(s.ack_p99_us),
                        s.lost,
                        s.duplicates,
                        s.verdict
                    ),
                ));
            }
        }
        rows.push((
            "best held".to_owned(),
            match self.best_rate {
                Some(b) => format!(
                    "{b:.0} msgs/s ({:.0} deliveries/s) with p99 ≤ {}",
                    b * self.deliveries_offered_per_s / self.steps.last().map_or(1.0, |s| s.rate.max(1e-9)),
                    fmt_us(self.p99_bound_us)
                ),
                None => format!("no step kept p99 ≤ {} without loss", fmt_us(self.p99_bound_us)),
            },
        ));
        rows
    }
}

/// Imports `groups` groups of `members` consecutive users each; `progress` is told how
/// many groups are done.
pub async fn import_groups(
    t: &TargetSpec,
    groups: u32,
    members: u32,
    progress: impl Fn(u64),
) -> Result<(), SetupError> {
    let expiry = crate::harness::schedule::wall_ms() / 1000 + 24 * 3600;
    let admin_sign = tern_schema::sig::sign_admin(t.secret.as_bytes(), t.app_id, &t.admin, expiry);
    let query = format!("appId={}&identifier={}&userSign={}", t.app_id, t.admin, admin_sign);
    let member_list =
        |lo: u32, hi: u32| -> Vec<Value> { (lo..hi).map(|u| json!({ "memberId": t.user_id(u) })).collect() };
    // Per group: one import with the first batch, then its other batches (in order
    // within a group; groups in parallel).
    let calls = (0..groups).map(|g| {
        let query = &query;
        async move {
            let first = g * members;
            let end = first + members;
            let mut lo = first;
            while lo < end {
                let hi = (lo + MEMBER_BATCH).min(end);
                let (path, body) = if lo == first {
                    let body = json!({
                        "groupId": t.group_id(g),
                        "groupType": 1,
                        "groupName": format!("load test group {g}"),
                        "maxMemberCount": members.max(2),
                        "memberList": member_list(lo, hi),
                    });
                    ("/v1/group/import", body)
                } else {
                    ("/v1/group/importMember", json!({ "groupId": t.group_id(g), "members": member_list(lo, hi) }))
                };
                let (status, text) = post_json(&t.http, &format!("{path}?{query}"), &body.to_string()).await?;
                let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if status != 200 || parsed["code"] != 200 || !all_ok(&parsed["data"], hi - lo) {
                    return Err(SetupError::Refused { status, body: text.chars().take(500).collect() });
                }
                lo = hi;
            }
            Ok(())
        }
    });
    let mut done = 0u64;
    let mut results = stream::iter(calls).buffer_unordered(SETUP_CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
        done += 1;
        progress(done);
    }
    Ok(())
}

/// Whether a batch answer (`successId`, `errorId`) accepted all `n` members.
fn all_ok(data: &Value, n: u32) -> bool {
    let errors = data.get("errorId").and_then(Value::as_array).map_or(0, Vec::len);
    let ok = data.get("successId").and_then(Value::as_array).map_or(0, Vec::len);
    errors == 0 && ok == n as usize
}

async fn populate(plan: &GroupPlan, quiet: bool) -> Result<(Workers, ConnectSummary, f64), HarnessError> {
    let load = &plan.load;
    prepare(&plan.target, load.users, quiet).await?;
    let started = Instant::now();
    let pb = bar(quiet, "groups");
    pb.set_length(u64::from(plan.groups));
    import_groups(&plan.target, plan.groups, load.members, |n| pb.set_position(n)).await?;
    pb.finish_and_clear();
    let setup_secs = started.elapsed().as_secs_f64();
    let mut inits = plan_workers(&plan.target, &plan.workers, load.users, load.devices, load.push_ack_ms, true);
    for i in &mut inits {
        i.members = load.members;
    }
    let mut w = Workers::spawn(&inits).await?;
    let pb = bar(quiet, "connecting");
    let total = u64::from(load.users) * u64::from(load.devices);
    let c = connect_phase(&mut w, total, &pb).await?;
    pb.finish_and_clear();
    if c.failed > 0 {
        w.stop().await;
        return Err(HarnessError::Failed(format!("{} of {total} logins failed: {:?}", c.failed, c.reasons)));
    }
    Ok((w, c, setup_secs))
}

pub async fn run_group(plan: GroupPlan, out: &OutputArgs) -> Result<(), HarnessError> {
    let (mut workers, c, setup_secs) = populate(&plan, out.quiet).await?;
    let receivers = f64::from(plan.load.members - 1) * f64::from(plan.load.devices);
    let mut g = GroupResult {
        groups: plan.groups,
        members: plan.load.members,
        setup_secs,
        p99_bound_us: plan.p99_bound_us,
        ..Default::default()
    };
    let mut last: Option<P2pResult> = None;
    let mut failure = None;
    let mut dirty = None;
    for (k, &rate) in plan.rates.iter().enumerate() {
        let pb = bar(out.quiet, &format!("{rate:.0}/s"));
        let res = run_once(&mut workers, &plan.load, k as u32 + 1, rate, plan.duration_secs, &pb).await;
        pb.finish_and_clear();
        let o = match res {
            Ok(o) => o,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let p = p2p_result(&plan.load, rate, plan.duration_secs, &c, &o);
        let (held, verdict) = judge(&p, plan.p99_bound_us, receivers);
        if !out.quiet && plan.rates.len() > 1 {
            eprintln!("step {rate:.0}/s: p99 {} — {verdict}", fmt_us(p.p99_us));
        }
        g.steps.push(RampStep {
            rate,
            delivered_per_s: p.delivered_per_s,
            p50_us: p.p50_us,
            p99_us: p.p99_us,
            p999_us: p.p999_us,
            ack_p99_us: p.ack_p99_us,
            refusal_p99_us: p.refusal_p99_us,
            refusal_wire_p99_us: p.refusal_wire_p99_us,
            lag_p99_us: p.lag_p99_us,
            lost: p.lost,
            duplicates: p.duplicates,
            failed: p.failed,
            sustained: held,
            verdict,
        });
        g.deliveries_offered_per_s = rate * receivers;
        if p.lost > 0 || p.duplicates > 0 || p.failed > 0 {
            dirty = Some(format!(
                "at {rate:.0}/s: {} deliveries lost, {} duplicated, {} sends failed",
                p.lost, p.duplicates, p.failed
            ));
        }
        last = Some(p);
        if !held {
            break;
        }
        g.best_rate = Some(rate);
        if k + 1 < plan.rates.len() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    workers.stop().await;
    if let Some(e) = failure {
        if last.is_none() {
            return Err(e);
        }
        eprintln!("group run stopped early: {e}");
    }
    let result = RunResult::new("group", &plan.target, &plan, |r| {
        r.p2p = last;
        r.group = Some(g);
    });
    finish(&result, out)?;
    match dirty {
        Some(why) => Err(HarnessError::Failed(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        a: GroupArgs,
    }

    fn plan(line: &str) -> Result<GroupPlan, Vec<String>> {
        let mut argv = vec!["x", "--secret", "s3cret"];
        argv.extend(line.split_whitespace());
        Cmd::try_parse_from(argv).map_err(|e| vec![e.to_string()])?.a.validate().map_err(|e| e.0)
    }

    #[test]
    fn plans_and_refusals() {
        let p = plan("--groups 1000 --members 50 --rate 5000 --duration 5").unwrap();
        assert_eq!((p.load.users, p.load.members, p.rates), (50_000, 50, vec![5000.0]));
        let p = plan("--groups 2 --members 3 --rate 100 --max-rate 300 --step-rate 100").unwrap();
        assert_eq!(p.rates, vec![100.0, 200.0, 300.0]);
        let e = plan("--groups 0 --members 1 --rate 0 --devices 0").unwrap_err();
        assert!(e.len() >= 4, "{e:?}");
        assert!(plan("--groups 10 --members 200000 --rate 1").is_err());
        assert!(plan("--groups 100 --members 10000 --devices 2 --rate 1").is_err(), "over MAX_CONNS");
        assert!(plan("--rate 10 --max-rate 5").is_err());
        assert!(plan("--rate 10 --addr 10.0.0.1:9000").is_err());
    }

    #[test]
    fn batch_answers() {
        assert!(all_ok(&json!({"successId": ["a", "b"], "errorId": []}), 2));
        assert!(!all_ok(&json!({"successId": ["a"], "errorId": [{"id": "b"}]}), 2));
        assert!(!all_ok(&json!({"successId": ["a"]}), 2));
        assert!(!all_ok(&json!(null), 1));
    }
}
