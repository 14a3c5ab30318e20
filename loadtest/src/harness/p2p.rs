//! `p2p` and `ramp`: U users × D devices online, 1:1 messages sent open-loop at a fixed
//! total rate by the workers, measured send→ack and send→delivered (to every device of
//! the recipient), with loss and duplicates counted exactly. `ramp` repeats the run at
//! rising rates over the same connections until p99 passes the bound.

use std::time::Duration;

use indicatif::ProgressBar;

use crate::harness::config::{LoadPlan, OutputArgs, P2pPlan, RampPlan, TargetSpec, WorkerPlan};
use crate::harness::coord::{connect_phase, plan_workers, ConnectSummary, Workers};
use crate::harness::hist::per_second;
use crate::harness::proto::{Command, Event, Reasons, RunSpec};
use crate::harness::report::{P2pResult, RampResult, RampStep, RunResult, Series};
use crate::harness::schedule::mono_us;
use crate::harness::sysinfo::{own_cpu_secs, process_cpu_secs};
use crate::harness::{bar, finish, prepare, HarnessError};

/// Time between the Run command and the first message, so every worker is ready.
const LEAD: Duration = Duration::from_millis(500);

/// What one run measured, before it becomes a report.
pub struct RunOutcome {
    pub series: Series,
    pub sent: u64,
    pub failed: Vec<u64>,
    pub errors: Reasons,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub stray: u64,
    /// CPU seconds the worker processes spent on the run.
    pub worker_cpu_secs: f64,
    /// CPU seconds the coordinator (this process) spent on the run.
    pub coordinator_cpu_secs: f64,
    /// CPU seconds the server processes (`--server-pid`) used over the same window as
    /// the generator's; `None` without pids or when one could not be read.
    pub server_cpu_secs: Option<f64>,
    pub workers: usize,
    pub kicks: Reasons,
    pub drops: Reasons,
    pub reconnects: u64,
    pub reconnect_failures: Reasons,
    pub resent: u64,
    pub pulls: u64,
    /// Sending window, or first due time → last delivery if that was longer.
    pub effective_secs: f64,
}

/// Connects the population and returns the workers holding it.
pub async fn populate(
    target: &TargetSpec,
    workers: &WorkerPlan,
    load: &LoadPlan,
    quiet: bool,
) -> Result<(Workers, ConnectSummary), HarnessError> {
    prepare(target, load.users, quiet).await?;
    #[cfg(feature = "nats")]
    crate::harness::nats::prepare_stream(target).await?;
    let mut inits = plan_workers(target, workers, load.users, load.devices, load.push_ack_ms, true);
    for init in &mut inits {
        init.retry_busy = load.retry_busy;
    }
    let mut w = Workers::spawn(&inits).await?;
    let pb = bar(quiet, "connecting");
    let total = u64::from(load.users) * u64::from(load.devices);
    let c = connect_phase(&mut w, total, &pb).await?;
    pb.finish_and_clear();
    if c.ok == 0 {
        w.stop().await;
        return Err(HarnessError::Failed(format!("no connection logged in: {:?}", c.reasons)));
    }
    if c.failed > 0 {
        eprintln!("warning: {} of {total} logins failed: {:?}", c.failed, c.reasons);
    }
    Ok((w, c))
}

/// One open-loop run over the connected workers.
pub async fn run_once(
    workers: &mut Workers,
    load: &LoadPlan,
    run: u32,
    rate: f64,
    duration_secs: f64,
    pb: &ProgressBar,
) -> Result<RunOutcome, HarnessError> {
    let cpu_at_start = own_cpu_secs();
    let server_at_start = servers_cpu_secs(&load.server_pids);
    let count = (rate * duration_secs).round().max(1.0) as u64;
    let t0 = mono_us() + LEAD.as_micros() as u64;
    let spec = RunSpec {
        run,
        t0_us: t0,
        rate,
        count,
        users: load.users,
        devices: load.devices,
        payload: load.payload,
        ack_timeout_ms: (load.drain_secs * 1e3) as u64,
        members: load.members,
    };
    workers.broadcast(&Command::Run(spec)).await?;
    let n = workers.len();
    let secs = duration_secs.ceil() as u64;
    pb.set_length(secs);
    let mut series = Series::default();
    let mut out = RunOutcome {
        series: Series::default(),
        sent: 0,
        failed: Vec::new(),
        errors: Reasons::new(),
        expected: 0,
        received: 0,
        lost: 0,
        duplicates: 0,
        unexpected: 0,
        stray: 0,
        worker_cpu_secs: 0.0,
        coordinator_cpu_secs: 0.0,
        server_cpu_secs: None,
        workers: n,
        kicks: Reasons::new(),
        drops: Reasons::new(),
        reconnects: 0,
        reconnect_failures: Reasons::new(),
        resent: 0,
        pulls: 0,
        effective_secs: duration_secs,
    };
    // Generous bound on the whole run: sending, the ack timeout and the drain.
    let limit = t0 + ((duration_secs + 3.0 * load.drain_secs + 30.0) * 1e6) as u64;
    let mut sent_done = 0;
    while sent_done < n {
        let ev = next_event(workers, limit).await?;
        match ev {
            Event::Tick(t) if t.run == run => {
                series.add(&t)?;
                pb.set_position(u64::from(t.sec).min(secs));
                if let Some(p) = series.last(t.sec) {
                    pb.set_message(format!(
                        "{}/s sent, {}/s delivered, p99 {}",
                        p.sent,
                        p.delivered,
                        crate::harness::report::fmt_us(p.delivery.p99_us)
                    ));
                }
            }
            Event::Sent { run: r, sent, failed, errors } if r == run => {
                sent_done += 1;
                out.sent += sent;
                out.failed.extend(failed);
                for (k, v) in errors {
                    *out.errors.entry(k).or_default() += v;
                }
            }
            _ => {}
        }
    }
    pb.set_message("draining");
    let deadline = mono_us() + (load.drain_secs * 1e6) as u64;
    workers.broadcast(&Command::Drain { run, failed: out.failed.clone(), deadline_us: deadline }).await?;
    let mut drained = 0;
    let mut last_delivery = 0;
    while drained < n {
        match next_event(workers, limit).await? {
            Event::Tick(t) if t.run == run => series.add(&t)?,
            Event::Drained(d) if d.run == run => {
                drained += 1;
                series.add(&d.tail)?;
                out.expected += d.expected;
                out.received += d.received;
                out.lost += d.lost;
                out.duplicates += d.duplicates;
                out.unexpected += d.unexpected;
                out.stray += d.stray;
                out.worker_cpu_secs += d.cpu_secs;
                merge(&mut out.kicks, d.kicks);
                merge(&mut out.drops, d.drops);
                merge(&mut out.reconnect_failures, d.reconnect_failures);
                out.reconnects += d.reconnects;
                out.resent += d.resent;
                out.pulls += d.pulls;
                last_delivery = last_delivery.max(d.last_delivery_us);
            }
            _ => {}
        }
    }
    out.effective_secs = duration_secs.max(last_delivery.saturating_sub(t0) as f64 / 1e6);
    out.series = series;
    out.coordinator_cpu_secs = own_cpu_secs() - cpu_at_start;
    out.server_cpu_secs = match (server_at_start, servers_cpu_secs(&load.server_pids)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(out)
}

/// CPU seconds used so far by every process in `pids` together; `None` for no pids or
/// if one cannot be read (the figure would be partial).
fn servers_cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| process_cpu_secs(pid)).sum()
}

fn merge(into: &mut Reasons, from: Reasons) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

async fn next_event(workers: &mut Workers, limit_us: u64) -> Result<Event, HarnessError> {
    loop {
        if mono_us() > limit_us {
            return Err(HarnessError::Worker("run did not finish in time (a worker hangs?)".into()));
        }
        if let Some((_, ev)) = workers.next(Duration::from_secs(1)).await? {
            return Ok(ev);
        }
    }
}

pub(crate) fn p2p_result(load: &LoadPlan, rate: f64, duration: f64, c: &ConnectSummary, o: &RunOutcome) -> P2pResult {
    let d = o.series.delivery.summary();
    let a = o.series.ack.summary();
    let r = o.series.refusal.summary();
    let rw = o.series.refusal_wire.summary();
    let lag = o.series.lag.summary();
    P2pResult {
        users: load.users,
        devices: load.devices,
        rate,
        duration_secs: duration,
        payload: load.payload,
        logins_ok: c.ok,
        logins_failed: c.failed,
        sent: o.sent,
        acked: o.series.acked,
        failed: o.failed.len() as u64,
        errors: o.errors.clone(),
        expected_deliveries: o.expected,
        delivered: o.received,
        lost: o.lost,
        duplicates: o.duplicates,
        unexpected: o.unexpected,
        stray: o.stray,
        echoes: o.series.echoes,
        generator_cpu_secs: o.worker_cpu_secs + o.coordinator_cpu_secs,
        generator_worker_cpu_secs: o.worker_cpu_secs,
        generator_cpu_us_per_msg: if o.sent > 0 {
            (o.worker_cpu_secs + o.coordinator_cpu_secs) * 1e6 / o.sent as f64
        } else {
            0.0
        },
        server_cpu_secs: o.server_cpu_secs,
        // Per accepted message: under overload the refused sends cost the server little,
        // and dividing by them would flatter an overloaded system.
        server_cpu_us_per_msg: o
            .server_cpu_secs
            .filter(|_| o.series.acked > 0)
            .map(|s| s * 1e6 / o.series.acked as f64),
        workers: o.workers as u32,
        conns: u64::from(load.users) * u64::from(load.devices),
        kicks: o.kicks.clone(),
        drops: o.drops.clone(),
        reconnects: o.reconnects,
        reconnect_failures: o.reconnect_failures.clone(),
        resent: o.resent,
        pulls: o.pulls,
        sent_per_s: per_second(o.sent, duration),
        delivered_per_s: per_second(o.received, o.effective_secs),
        p50_us: d.p50_us,
        p90_us: d.p90_us,
        p99_us: d.p99_us,
        p999_us: d.p999_us,
        max_us: d.max_us,
        ack_p50_us: a.p50_us,
        ack_p99_us: a.p99_us,
        ack_p999_us: a.p999_us,
        ack_max_us: a.max_us,
        refusal_p50_us: r.p50_us,
        refusal_p99_us: r.p99_us,
        refusal_max_us: r.max_us,
        refusal_wire_p50_us: rw.p50_us,
        refusal_wire_p99_us: rw.p99_us,
        refusal_wire_max_us: rw.max_us,
        lag_p50_us: lag.p50_us,
        lag_p99_us: lag.p99_us,
        lag_max_us: lag.max_us,
        series: o.series.points(),
        delivery_hist: o.series.delivery.to_data(),
        ack_hist: o.series.ack.to_data(),
    }
}

pub async fn run_p2p(plan: P2pPlan, out: &OutputArgs) -> Result<(), HarnessError> {
    let (mut workers, c) = populate(&plan.target, &plan.workers, &plan.load, out.quiet).await?;
    let pb = bar(out.quiet, "sending");
    let res = run_once(&mut workers, &plan.load, 1, plan.rate, plan.duration_secs, &pb).await;
    pb.finish_and_clear();
    workers.stop().await;
    #[cfg(feature = "nats")]
    crate::harness::nats::drop_stream(&plan.target).await;
    let o = res?;
    let p = p2p_result(&plan.load, plan.rate, plan.duration_secs, &c, &o);
    let (lost, dups, failed) = (p.lost, p.duplicates, p.failed);
    let result = RunResult::new("p2p", &plan.target, &plan, |r| r.p2p = Some(p));
    finish(&result, out)?;
    if lost > 0 || dups > 0 || failed > 0 {
        return Err(HarnessError::Failed(format!("{lost} deliveries lost, {dups} duplicated, {failed} sends failed")));
    }
    Ok(())
}

pub async fn run_ramp(plan: RampPlan, out: &OutputArgs) -> Result<(), HarnessError> {
    let (mut workers, c) = populate(&plan.target, &plan.workers, &plan.load, out.quiet).await?;
    let mut ramp = RampResult { p99_bound_us: plan.p99_bound_us, ..Default::default() };
    let mut results = Vec::new();
    let mut failure = None;
    for (k, rate) in plan.rates().into_iter().enumerate() {
        let pb = bar(out.quiet, &format!("step {} at {rate:.0}/s", k + 1));
        let res = run_once(&mut workers, &plan.load, k as u32 + 1, rate, plan.step_secs, &pb).await;
        pb.finish_and_clear();
        let o = match res {
            Ok(o) => o,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let p = p2p_result(&plan.load, rate, plan.step_secs, &c, &o);
        let (sustained, verdict) = judge(&p, plan.p99_bound_us, f64::from(plan.load.devices));
        ramp.steps.push(RampStep {
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
            sustained,
            verdict: verdict.clone(),
        });
        if !out.quiet {
            eprintln!("step {:.0}/s: p99 {} — {verdict}", rate, crate::harness::report::fmt_us(p.p99_us));
        }
        results.push(p);
        if !sustained {
            if plan.runs_every_step() {
                continue;
            }
            break;
        }
        ramp.best_rate = Some(ramp.best_rate.map_or(rate, |b: f64| b.max(rate)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    workers.stop().await;
    #[cfg(feature = "nats")]
    crate::harness::nats::drop_stream(&plan.target).await;
    if let Some(e) = failure {
        if ramp.steps.is_empty() {
            return Err(e);
        }
        eprintln!("ramp stopped early: {e}");
    }
    // The report's charts show the last step's run in full.
    let last = results.pop();
    let result = RunResult::new("ramp", &plan.target, &plan, |r| {
        r.ramp = Some(ramp);
        r.p2p = last;
    });
    finish(&result, out)
}

/// Whether a step held: no loss, no duplicates, p99 within the bound, and the offered
/// load was actually delivered (≥ 90 % of rate × devices per second).
pub fn judge(p: &P2pResult, bound_us: u64, devices: f64) -> (bool, String) {
    if p.lost > 0 || p.duplicates > 0 || p.failed > 0 {
        return (false, format!("lost {} / duplicated {} / failed {}", p.lost, p.duplicates, p.failed));
    }
    if p.p99_us > bound_us {
        return (false, "p99 over the bound".into());
    }
    let want = p.rate * devices * 0.9;
    if p.delivered_per_s < want {
        return (false, format!("delivered {:.0}/s < 90% of offered", p.delivered_per_s));
    }
    (true, "sustained".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_verdicts() {
        let ok = P2pResult { rate: 1000.0, delivered_per_s: 2000.0, p99_us: 900, ..Default::default() };
        assert_eq!(judge(&ok, 1_000, 2.0), (true, "sustained".into()));
        assert!(!judge(&P2pResult { p99_us: 1_001, ..ok.clone() }, 1_000, 2.0).0);
        assert!(!judge(&P2pResult { lost: 1, ..ok.clone() }, 1_000, 2.0).0);
        assert!(!judge(&P2pResult { duplicates: 1, ..ok.clone() }, 1_000, 2.0).0);
        assert!(!judge(&P2pResult { failed: 1, ..ok.clone() }, 1_000, 2.0).0);
        assert!(!judge(&P2pResult { delivered_per_s: 1700.0, ..ok }, 1_000, 2.0).0);
    }
}
