//! The load-test harness (`tern loadtest ...`, or the `tern-loadtest` binary): scenarios
//! that speak Tern's real protocol over real sockets, spread over worker processes,
//! measured with HdrHistogram and reported as a table, JSON and an offline HTML page.
//!
//! Layout: [`config`] (arguments, validation: loopback only, bounded) → [`coord`]
//! (worker processes, the connection phase) → the scenarios ([`connect`], [`p2p`]
//! (also `ramp`), [`sync`]) → [`report`] / [`html`] / [`compare`]. A worker
//! ([`worker`]) is this same executable run as `loadtest worker`; it speaks to the
//! coordinator in JSON lines ([`proto`]). The message schedule is a pure function of the
//! message index ([`schedule`]), so workers never coordinate during a run. NATS peers
//! live in `nats` behind the `nats` feature.
//!
//! This module never sends traffic off the machine: validation refuses non-loopback
//! targets before anything is opened.

pub mod compare;
pub mod config;
pub mod connect;
pub mod coord;
pub mod group;
pub mod hist;
pub mod html;
#[cfg(feature = "nats")]
pub mod nats;
pub mod net;
pub mod os;
pub mod p2p;
pub mod proto;
pub mod report;
pub mod schedule;
pub mod setup;
pub mod sync;
pub mod sysinfo;
pub mod worker;
pub mod wsc;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::harness::config::{ConfigError, OutputArgs, TargetSpec};
use crate::harness::report::RunResult;

const HELP: &str = "\
Load tests against a running Tern (or, for comparison, nats-server) on this machine.

Every run is bounded (a duration, then it stops by itself) and targets loopback only
(127.0.0.0/8 or ::1): other addresses are refused. Test users are imported through the
HTTP API (--http, --secret: the app's secret) with fresh ids per run.

Processes and limits: a process here cannot hold 20,000 sockets (hard open-file limit
20,000). The harness therefore spreads connections over worker processes by itself
(--conns-per-worker, default 15,000; workers are this executable run as
`loadtest worker`), and over many loopback source addresses (--source-ips, from
127.1.0.1). Tern's side has the same limit: a gateway process takes at most
`gateway.max_connections` (19,000) connections, so for runs above ~19k connections start
several gateways sharing one logic tier and pass each with --addr:

  tern logic   --config F --http-addr 127.0.0.1:8000 --link-addr 127.0.0.1:9100
  tern gateway --config F --tcp-addr 127.0.0.1:9001 --ws-addr 127.0.0.1:19001 --link-addr 127.0.0.1:9100
  tern gateway --config F --tcp-addr 127.0.0.1:9002 --ws-addr 127.0.0.1:19002 --link-addr 127.0.0.1:9100
  tern loadtest connect --conns 30000 --addr 127.0.0.1:9001 --addr 127.0.0.1:9002 \\
       --gateway-pid <pid1> --gateway-pid <pid2> --secret ...

The server's per-connection limits (messages.sends_per_sec, gateway.inbound_frames_per_sec)
must allow the per-device rate of a p2p run; raise them in the server's config for
high-rate runs. Results: a table on stdout, <out-dir>/<name>.json and <name>.html.";

/// `tern loadtest`: the harness's command line.
#[derive(clap::Args, Debug, Clone)]
#[command(about = "Load tests: connect, p2p, sync, ramp, group (loopback only, bounded)", long_about = HELP)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    pub command: LoadtestCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum LoadtestCommand {
    /// Open N authenticated connections, hold them; connect rate, login latency, memory.
    Connect(config::ConnectArgs),
    /// 1:1 messages open-loop at a fixed rate; send→ack and send→delivered latency, loss.
    P2p(config::P2pArgs),
    /// A new device pulls K stored messages; time and messages/s.
    Sync(config::SyncArgs),
    /// Step the p2p rate up until p99 passes a bound; the highest sustained rate.
    Ramp(config::RampArgs),
    /// G groups × M members online; group messages open-loop at a fixed rate; fan-out
    /// latency to every member, loss.
    Group(group::GroupArgs),
    /// Combine result files into one table, compare.json and an HTML report.
    Compare(compare::CompareArgs),
    /// A worker process (started by the harness itself).
    #[command(hide = true)]
    Worker,
}

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("setup: {0}")]
    Setup(#[from] setup::SetupError),
    #[error("worker: {0}")]
    Worker(String),
    #[error("worker process: {0}")]
    WorkerProcess(#[from] worker::WorkerError),
    #[error("output: {0}")]
    Output(String),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The run completed but its result is a failure (loss, duplicates, failed logins).
    #[error("{0}")]
    Failed(String),
    #[cfg(feature = "nats")]
    #[error("nats: {0}")]
    Nats(String),
}

/// Runs `tern loadtest <command>`; builds its own tokio runtime.
pub fn run_loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    run(args.command).map_err(anyhow::Error::from)
}

fn run(cmd: LoadtestCommand) -> Result<(), HarnessError> {
    if let LoadtestCommand::Worker = cmd {
        return Ok(worker::run_worker()?);
    }
    if let LoadtestCommand::Compare(a) = cmd {
        return compare::run_compare(a);
    }
    net::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            LoadtestCommand::Connect(a) => connect::run_connect(a.validate()?, &a.output).await,
            LoadtestCommand::P2p(a) => p2p::run_p2p(a.validate()?, &a.output).await,
            LoadtestCommand::Sync(a) => sync::run_sync(a.validate()?, &a.output).await,
            LoadtestCommand::Ramp(a) => p2p::run_ramp(a.validate()?, &a.output).await,
            LoadtestCommand::Group(a) => group::run_group(a.validate()?, &a.output).await,
            LoadtestCommand::Compare(_) | LoadtestCommand::Worker => Ok(()),
        }
    })
}

/// A progress bar on stderr (hidden with --quiet or when stderr is not a terminal).
pub(crate) fn bar(quiet: bool, prefix: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(prefix.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Imports users `0..users` unless told not to (or the target is not Tern).
pub(crate) async fn prepare(t: &TargetSpec, users: u32, quiet: bool) -> Result<(), HarnessError> {
    if !t.import {
        return Ok(());
    }
    let pb = bar(quiet, "users");
    pb.set_length(u64::from(users));
    setup::import_users(t, 0, users, |n| pb.set_position(u64::from(n))).await?;
    pb.finish_and_clear();
    Ok(())
}

impl RunResult {
    /// A result with the plan as its `config`; `fill` sets the scenario section.
    pub fn new<P: Serialize>(
        scenario: &str,
        target: &TargetSpec,
        plan: &P,
        fill: impl FnOnce(&mut RunResult),
    ) -> RunResult {
        let mut config = serde_json::to_value(plan).unwrap_or(serde_json::Value::Null);
        // The secret signs logins; it has no place in a result file.
        if let Some(t) = config.get_mut("target").and_then(|t| t.as_object_mut()) {
            t.remove("secret");
        }
        let mut r = RunResult {
            scenario: scenario.to_owned(),
            target: target.kind.name().to_owned(),
            started_unix: schedule::wall_ms() / 1000,
            config,
            connect: None,
            p2p: None,
            sync: None,
            ramp: None,
            group: None,
        };
        fill(&mut r);
        r
    }
}

/// Prints the summary and writes the JSON and HTML files.
pub(crate) fn finish(r: &RunResult, out: &OutputArgs) -> Result<(), HarnessError> {
    let labelled;
    let r = match &out.system {
        Some(system) => {
            labelled = RunResult { target: system.clone(), ..r.clone() };
            &labelled
        }
        None => r,
    };
    println!("{}", r.summary());
    let name = out.name.clone().unwrap_or_else(|| format!("{}-{}", r.scenario, r.target));
    let (json, html) = r.write(&out.out_dir, &name)?;
    println!("wrote {} and {}", json.display(), html.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Loadtest(LoadtestArgs),
    }

    #[test]
    fn command_line_shape() {
        let t = Top::try_parse_from(["tern", "loadtest", "worker"]).unwrap();
        let Sub::Loadtest(a) = t.cmd;
        assert!(matches!(a.command, LoadtestCommand::Worker));
        let t = Top::try_parse_from(["tern", "loadtest", "p2p", "--rate", "10", "--secret", "x"]).unwrap();
        let Sub::Loadtest(a) = t.cmd;
        assert!(matches!(a.command, LoadtestCommand::P2p(_)));
        use clap::CommandFactory;
        Top::command().debug_assert();
    }

    #[derive(Parser)]
    struct SyncCmd {
        #[command(flatten)]
        a: config::SyncArgs,
    }

    #[test]
    fn results_never_carry_the_secret() {
        let a = SyncCmd::try_parse_from(["x", "--secret", "very-secret-value"]).unwrap().a;
        let plan = a.validate().unwrap();
        let r = RunResult::new("sync", &plan.target, &plan, |_| {});
        assert!(!serde_json::to_string(&r).unwrap().contains("very-secret-value"));
    }

    /// `--system` renames the system in the written result and in the default file
    /// name, so `compare` shows a variant (Tern on CQL) beside the plain target.
    #[test]
    fn system_label_names_the_result() {
        let a = SyncCmd::try_parse_from(["x", "--secret", "s", "--system", "tern_cql", "--quiet"]).unwrap().a;
        let dir = tempfile::tempdir().unwrap();
        let out = OutputArgs { out_dir: dir.path().to_owned(), ..a.output.clone() };
        let plan = a.validate().unwrap();
        let r = RunResult::new("sync", &plan.target, &plan, |_| {});
        assert_eq!(r.target, "tern");
        finish(&r, &out).unwrap();
        let text = std::fs::read_to_string(dir.path().join("sync-tern_cql.json")).unwrap();
        let back: RunResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back.target, "tern_cql");
        assert!(SyncCmd::try_parse_from(["x", "--secret", "s", "--system", "Tern CQL"]).is_err());
    }
}
