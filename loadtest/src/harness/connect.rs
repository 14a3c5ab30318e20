//! `connect`: open N authenticated connections at a target rate from many loopback
//! source addresses, hold them (heartbeating) for a while, and measure what they cost:
//! login rate and latency, failures by reason, the gateway processes' RSS before and
//! after (→ bytes per idle connection) and the kernel's socket memory.
//!
//! Ramp mode (`--ramp-p99-ms`) measures login capacity instead of the harness's own
//! pacing: steps of `--conns` logins at a rising offered rate, each on fresh worker
//! processes (so every step's connections are closed before the next), until p99 login
//! latency passes the bound or a login fails; the answer is the highest *measured*
//! rate of a step within the bound.

use std::time::Duration;

use crate::harness::config::{ConnectPlan, LoginRampPlan, OutputArgs};
use crate::harness::coord::{connect_phase, plan_workers, Workers};
use crate::harness::hist::per_second;
use crate::harness::proto::{Command, Event, Reasons};
use crate::harness::report::{ConnectResult, LoginRampStep, RunResult};
use crate::harness::sysinfo::{pid_from_file, rss_bytes, KernelMem};
use crate::harness::{bar, finish, prepare, HarnessError};

/// Pause after the last login before the "after" figures, so lazily grown buffers and
/// allocator caches settle.
const SETTLE: Duration = Duration::from_secs(1);

fn total_rss(pids: &[u32]) -> Result<u64, HarnessError> {
    let mut sum = 0;
    for &pid in pids {
        sum += rss_bytes(pid).ok_or_else(|| HarnessError::Failed(format!("cannot read /proc/{pid}/status")))?;
    }
    Ok(sum)
}

pub async fn run_connect(plan: ConnectPlan, out: &OutputArgs) -> Result<(), HarnessError> {
    let mut pids = plan.gateway_pids.clone();
    for f in &plan.gateway_pid_files {
        pids.push(pid_from_file(f).ok_or_else(|| HarnessError::Failed(format!("no pid in {}", f.display())))?);
    }
    prepare(&plan.target, plan.users, out.quiet).await?;
    if let Some(ramp) = plan.ramp.clone() {
        return run_ramp(&plan, &ramp, pids, out).await;
    }
    let rss_before = total_rss(&pids)?;
    let kernel_before = KernelMem::read();

    let inits = plan_workers(&plan.target, &plan.workers, plan.users, plan.devices, 0, false);
    let mut workers = Workers::spawn(&inits).await?;
    let pb = bar(out.quiet, "connecting");
    let res = connect_and_hold(&mut workers, &plan, &pb).await;
    pb.finish_and_clear();
    let rss_after = total_rss(&pids);
    let kernel_after = KernelMem::read();
    workers.stop().await;
    let (c, alive, closed) = res?;
    let rss_after = rss_after?;

    let r = ConnectResult::build(
        plan.users as u64 * u64::from(plan.devices),
        &c,
        plan.hold_secs,
        alive,
        closed,
        pids,
        (rss_before, rss_after),
        (kernel_before, kernel_after),
    );
    let failed = r.failed;
    let result = RunResult::new("connect", &plan.target, &plan, |x| x.connect = Some(r));
    finish(&result, out)?;
    if failed > 0 || alive < c.ok {
        return Err(HarnessError::Failed(format!(
            "{failed} logins failed, {} connections dropped",
            c.ok - alive.min(c.ok)
        )));
    }
    Ok(())
}

async fn connect_and_hold(
    workers: &mut Workers,
    plan: &ConnectPlan,
    pb: &indicatif::ProgressBar,
) -> Result<(crate::harness::coord::ConnectSummary, u64, Reasons), HarnessError> {
    let total = plan.users as u64 * u64::from(plan.devices);
    let c = connect_phase(workers, total, pb).await?;
    tokio::time::sleep(SETTLE).await;
    pb.set_message(format!("holding {} connections", c.ok));
    let hold = Duration::from_secs_f64(plan.hold_secs);
    pb.set_length(hold.as_secs().max(1));
    pb.set_position(0);
    let end = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < end {
        // Events still arrive (progress lines); a dead worker fails the run here.
        let _ = workers.next(Duration::from_millis(500).min(end - tokio::time::Instant::now())).await?;
        pb.set_position((hold - (end - tokio::time::Instant::now())).as_secs());
    }
    workers.broadcast(&Command::Status).await?;
    let (mut alive, mut closed, mut answers) = (0, Reasons::new(), 0);
    let limit = tokio::time::Instant::now() + Duration::from_secs(30);
    while answers < workers.len() && tokio::time::Instant::now() < limit {
        if let Some((_, Event::Status { alive: a, closed: c })) = workers.next(Duration::from_secs(1)).await? {
            answers += 1;
            alive += a;
            for (k, v) in c {
                *closed.entry(k).or_default() += v;
            }
        }
    }
    Ok((c, alive, closed))
}

/// Pause between ramp steps, so the server has closed one step's sessions before the
/// next step's logins arrive.
const RAMP_PAUSE: Duration = Duration::from_secs(1);

async fn run_ramp(
    plan: &ConnectPlan,
    ramp: &LoginRampPlan,
    pids: Vec<u32>,
    out: &OutputArgs,
) -> Result<(), HarnessError> {
    let total = plan.users as u64 * u64::from(plan.devices);
    let bound_us = ramp.p99_bound_ms * 1_000.0;
    let (mut steps, mut best) = (Vec::new(), None::<f64>);
    let mut rate = ramp.start;
    while rate <= ramp.max * (1.0 + 1e-9) {
        let mut step = plan.clone();
        step.workers.connect_rate = rate;
        let inits = plan_workers(&step.target, &step.workers, plan.users, plan.devices, 0, false);
        let mut workers = Workers::spawn(&inits).await?;
        let pb = bar(out.quiet, &format!("ramp: {rate:.0} logins/s offered"));
        let c = connect_phase(&mut workers, total, &pb).await;
        pb.finish_and_clear();
        workers.stop().await;
        let c = c?;
        let (p50, p99) = (c.login.quantile(0.5), c.login.quantile(0.99));
        let measured = per_second(c.ok, c.secs);
        let within = c.failed == 0 && p99 as f64 <= bound_us;
        if !out.quiet {
            eprintln!(
                "ramp: offered {rate:.0}/s → {measured:.0} logins/s, p99 {:.1} ms, {} failed{}",
                p99 as f64 / 1e3,
                c.failed,
                if within { "" } else { " — past the bound" }
            );
        }
        steps.push(LoginRampStep {
            offered_per_s: rate,
            logins_per_s: measured,
            ok: c.ok,
            failed: c.failed,
            p50_us: p50,
            p99_us: p99,
            handshake_p99_us: c.handshake.quantile(0.99),
            answer_p99_us: c.answer.quantile(0.99),
            pace_p99_us: c.pace.quantile(0.99),
            within_bound: within,
        });
        if !within {
            break;
        }
        best = Some(best.map_or(measured, |b| b.max(measured)));
        rate += ramp.step;
        tokio::time::sleep(RAMP_PAUSE).await;
    }
    let r = ConnectResult {
        conns: total,
        ramp: steps,
        ramp_max_logins_per_s: best,
        ramp_p99_bound_ms: Some(ramp.p99_bound_ms),
        gateway_pids: pids,
        ..ConnectResult::default()
    };
    let result = RunResult::new("connect", &plan.target, plan, |x| x.connect = Some(r));
    finish(&result, out)
}
