//! The coordinator's side of the worker processes: spawning them (`<exe> loadtest
//! worker`), splitting users over them, sending commands and gathering events, and the
//! connection phase every scenario starts with.
//!
//! Workers are the same binary, so `tern loadtest` and `tern-loadtest` both work; the
//! executable can be overridden with `TERN_LOADTEST_WORKER_EXE` (tests that run the
//! harness from a test binary). A worker that dies or reports `Fatal` fails the run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::harness::config::{TargetSpec, WorkerPlan};
use crate::harness::hist::{HistData, Latency};
use crate::harness::net::source_ips;
use crate::harness::proto::{decode, encode, Command, ConnectReport, Event, Reasons, WorkerInit};
use crate::harness::schedule::mono_us;
use crate::harness::HarnessError;

/// Environment variable naming the worker executable (default: this executable).
pub const WORKER_EXE_ENV: &str = "TERN_LOADTEST_WORKER_EXE";
/// How long a stopping worker may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The running worker processes.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Result<Event, String>)>,
    /// Workers that said `Stopped`.
    stopped: usize,
}

fn worker_command() -> Result<(PathBuf, Vec<&'static str>), HarnessError> {
    let exe = match std::env::var_os(WORKER_EXE_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            std::env::current_exe().map_err(|e| HarnessError::Worker(format!("cannot find own executable: {e}")))?
        }
    };
    Ok((exe, vec!["loadtest", "worker"]))
}

impl Workers {
    /// Spawns one worker per init line.
    pub async fn spawn(inits: &[WorkerInit]) -> Result<Workers, HarnessError> {
        let (exe, args) = worker_command()?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (w, init) in inits.iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| HarnessError::Worker(format!("cannot start worker {}: {e}", exe.display())))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(HarnessError::Worker("worker pipes missing".into()));
            };
            stdin
                .write_all(format!("{}\n", encode(init)).as_bytes())
                .await
                .map_err(|e| HarnessError::Worker(format!("worker {w} stdin: {e}")))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                loop {
                    let msg = match lines.next_line().await {
                        Ok(Some(line)) => decode::<Event>(&line).map_err(|e| e.to_string()),
                        Ok(None) => Err("worker exited".to_owned()),
                        Err(e) => Err(format!("worker stdout: {e}")),
                    };
                    let end = msg.is_err();
                    if tx.send((w, msg)).is_err() || end {
                        return;
                    }
                }
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Workers { children, stdins, events, stopped: 0 })
    }

    pub fn len(&self) -> usize {
        self.stdins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stdins.is_empty()
    }

    pub async fn send(&mut self, w: usize, cmd: &Command) -> Result<(), HarnessError> {
        let stdin = self.stdins.get_mut(w).ok_or_else(|| HarnessError::Worker(format!("no worker {w}")))?;
        stdin
            .write_all(format!("{}\n", encode(cmd)).as_bytes())
            .await
            .map_err(|e| HarnessError::Worker(format!("worker {w} stdin: {e}")))
    }

    pub async fn broadcast(&mut self, cmd: &Command) -> Result<(), HarnessError> {
        for w in 0..self.len() {
            self.send(w, cmd).await?;
        }
        Ok(())
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` on timeout. A worker that
    /// died or failed is an error.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<(usize, Event)>, HarnessError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(HarnessError::Worker("all workers are gone".into())),
            Ok(Some((w, Ok(Event::Fatal { message })))) => Err(HarnessError::Worker(format!("worker {w}: {message}"))),
            Ok(Some((w, Ok(ev)))) => Ok(Some((w, ev))),
            Ok(Some((w, Err(e)))) => Err(HarnessError::Worker(format!("worker {w}: {e}"))),
        }
    }

    /// Asks every worker to stop and waits for them (killing stragglers).
    pub async fn stop(mut self) {
        let _ = self.broadcast(&Command::Stop).await;
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while self.stopped < self.len() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((_, Ok(Event::Stopped)))) => self.stopped += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for mut c in self.children.drain(..) {
            if tokio::time::timeout(Duration::from_secs(2), c.wait()).await.is_err() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }
}

/// Splits users `0..users` over `workers` in contiguous ranges.
pub fn split_users(users: u32, workers: u32) -> Vec<(u32, u32)> {
    let w = u64::from(workers.max(1));
    (0..w).map(|k| ((u64::from(users) * k / w) as u32, (u64::from(users) * (k + 1) / w) as u32)).collect()
}

/// The init lines for a population of `users` × `devices`.
pub fn plan_workers(
    target: &TargetSpec,
    plan: &WorkerPlan,
    users: u32,
    devices: u32,
    push_ack_ms: u64,
    reconnect: bool,
) -> Vec<WorkerInit> {
    let ranges = split_users(users, plan.workers);
    let start = mono_us() + 200_000;
    let per_worker_ips = plan.source_ips.div_ceil(plan.workers).max(1);
    ranges
        .into_iter()
        .enumerate()
        .filter(|(_, (a, b))| b > a)
        .map(|(w, (first_user, end_user))| WorkerInit {
            worker: w as u32,
            target: target.clone(),
            first_user,
            end_user,
            devices,
            source_ips: source_ips(w as u32 * per_worker_ips, per_worker_ips),
            connect_rate: plan.connect_rate * f64::from(end_user - first_user) / f64::from(users.max(1)),
            connect_start_us: start,
            push_ack_ms,
            reconnect,
            coalesce_us: plan.coalesce_us,
            members: 0,
            retry_busy: 0,
        })
        .collect()
}

/// The connection phase, merged over workers.
#[derive(Debug, Clone, Default)]
pub struct ConnectSummary {
    pub ok: u64,
    pub failed: u64,
    pub reasons: Reasons,
    pub login: Latency,
    /// The login's two parts and the pacing lateness (see [`ConnectReport`]).
    pub handshake: Latency,
    pub answer: Latency,
    pub pace: Latency,
    pub slow_connects: u64,
    /// First connect start → last login answer, seconds.
    pub secs: f64,
}

impl ConnectSummary {
    fn add(&mut self, r: &ConnectReport, first: &mut u64, last: &mut u64) -> Result<(), HarnessError> {
        self.ok += r.ok;
        self.failed += r.failed;
        for (k, v) in &r.reasons {
            *self.reasons.entry(k.clone()).or_default() += v;
        }
        self.login.add(&hist(&r.login)?);
        self.handshake.add(&hist(&r.handshake)?);
        self.answer.add(&hist(&r.answer)?);
        self.pace.add(&hist(&r.pace)?);
        self.slow_connects += r.slow_connects;
        if r.first_start_us > 0 {
            *first = if *first == 0 { r.first_start_us } else { (*first).min(r.first_start_us) };
        }
        *last = (*last).max(r.last_done_us);
        Ok(())
    }
}

pub fn hist(d: &HistData) -> Result<Latency, HarnessError> {
    Latency::from_data(d).map_err(|e| HarnessError::Worker(e.to_string()))
}

/// Waits for every worker's `Connected`, moving `pb` along.
pub async fn connect_phase(
    workers: &mut Workers,
    total: u64,
    pb: &ProgressBar,
) -> Result<ConnectSummary, HarnessError> {
    let n = workers.len();
    let mut progress = vec![(0u64, 0u64); n];
    let mut done = vec![false; n];
    let mut sum = ConnectSummary::default();
    let (mut first, mut last) = (0u64, 0u64);
    // Bounded: at the slowest each connection has its own timeout, so a generous limit
    // on the whole phase only catches a hung worker.
    let limit = tokio::time::Instant::now() + Duration::from_secs(600);
    pb.set_length(total);
    while done.iter().any(|d| !d) {
        if tokio::time::Instant::now() > limit {
            return Err(HarnessError::Worker("connection phase did not finish in 10 minutes".into()));
        }
        let Some((w, ev)) = workers.next(Duration::from_secs(1)).await? else { continue };
        match ev {
            Event::Progress { connected, failed } => progress[w] = (connected, failed),
            Event::Connected(r) => {
                progress[w] = (r.ok, r.failed);
                done[w] = true;
                sum.add(&r, &mut first, &mut last)?;
            }
            _ => {}
        }
        let (ok, bad): (u64, u64) = progress.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
        pb.set_position(ok + bad);
        pb.set_message(format!("{ok} logged in, {bad} failed"));
    }
    sum.secs = last.saturating_sub(first) as f64 / 1e6;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_evenly_and_completely() {
        assert_eq!(split_users(10, 3), vec![(0, 3), (3, 6), (6, 10)]);
        assert_eq!(split_users(2, 1), vec![(0, 2)]);
        let s = split_users(40_000, 3);
        assert_eq!((s[0].0, s[2].1), (0, 40_000));
        assert!(s.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
