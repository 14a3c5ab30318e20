//! Wiring the tiers into processes: `tern all` (gateway + logic + embedded store),
//! `tern gateway` and `tern logic`. Nothing here implements behaviour of its own; it
//! opens, binds, starts, prints where it listens, and shuts down in order on SIGINT /
//! SIGTERM (stop accepting, tell clients, flush the store).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tern_gateway::{AppSecrets, GatewayConfig, GatewayExtras, LinkDialer};
use tern_logic::http::{Ready, StoreRecovery};
use tern_logic::server::{BoundLogic, HttpFront, HttpLimits, Startup};
use tern_logic::{AppConfig, AppRegistry, Logic, LogicConfig};
use tern_storage::Store;
use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore, FlushPolicy, RecoveryReport};
use tern_storage_scylla::ScyllaStore;

use crate::config::{Backend, TernConfig};
use crate::devapp;

/// Tern's own crates.
const TERN_CRATES: &[&str] = &[
    "tern",
    "tern_gateway",
    "tern_logic",
    "tern_storage",
    "tern_storage_embedded",
    "tern_storage_scylla",
    "tern_schema",
    "tern_loadtest",
];

/// The tracing filter for the configured `log`: a bare level applies to Tern's crates,
/// while dependencies log at WARN at most (their INFO lines are engine internals, e.g.
/// fjall's recovery steps, that drown Tern's own start-up lines). A `log` with
/// directives ("tern_gateway=debug,info") is used as written.
fn log_filter(log: &str) -> String {
    let log = log.trim();
    if log.contains('=') || log.contains(',') {
        return log.to_owned();
    }
    let deps = if matches!(log, "error" | "off") { log } else { "warn" };
    std::iter::once(deps.to_owned())
        .chain(TERN_CRATES.iter().map(|c| format!("{c}={log}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// `RUST_LOG`, when set, wins over the configured `log`.
fn init_tracing(log: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(log_filter(log)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter("info")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    crate::metrics_help::describe();
    Ok(handle)
}

/// Apps from config, or the development app (created by processes that own data).
fn resolve_apps(c: &TernConfig, create_dev_app: bool) -> anyhow::Result<(Vec<AppConfig>, bool)> {
    if !c.apps.is_empty() {
        return Ok((c.apps.clone(), false));
    }
    Ok((vec![devapp::load_or_create(&c.data_dir, create_dev_app)?], true))
}

/// Opens the configured store, and says what the embedded store had to recover. Runs
/// inside the tokio runtime: the CQL driver needs it.
async fn open_store(c: &TernConfig) -> anyhow::Result<(Arc<dyn Store>, Option<RecoveryReport>)> {
    match c.storage.backend {
        Backend::Embedded => {
            let path = c.data_dir.join("store");
            let flush = FlushPolicy {
                max_unflushed_bytes: c.storage.max_unflushed_bytes,
                max_unflushed_secs: c.storage.max_unflushed_secs,
            };
            let cfg = EmbeddedConfig {
                durability: c.storage.durability,
                flush,
                background_nice: c.storage.background_nice,
                ..EmbeddedConfig::new(&path)
            };
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(cfg))
                .await?
                .with_context(|| format!("opening the embedded store in {}", path.display()))?;
            let recovery = store.recovery();
            Ok((Arc::new(store), Some(recovery)))
        }
        Backend::Scylla => {
            let s = &c.storage.scylla;
            let store = ScyllaStore::connect(s)
                .await
                .with_context(|| format!("connecting to ScyllaDB {:?} keyspace {}", s.nodes, s.keyspace))?;
            Ok((Arc::new(store), None))
        }
    }
}

/// Binds HTTP first, so `/healthz` answers "starting" while the store is recovered.
/// `others` is what the rest of the process may hold in descriptors (the gateway's
/// connections in `tern all`), left out of the HTTP connection cap.
async fn start_front(c: &TernConfig, startup: &Arc<Startup>, others: usize) -> anyhow::Result<HttpFront> {
    let cap = tern_logic::listener::connection_cap(&c.http, others);
    let front = HttpFront::bind(&c.http.addr, startup.clone(), HttpLimits::new(&c.http, cap)).await?;
    tracing::info!(
        healthz = %format!("http://{}/healthz", front.addr()),
        store = %describe_store(c),
        "starting: opening the store"
    );
    Ok(front)
}

fn ready_report(startup: &Startup, recovery: Option<RecoveryReport>) -> Ready {
    let store_recovery = recovery.map(|r| StoreRecovery {
        took_ms: r.took.as_millis() as u64,
        journal_files: r.journal_files as u64,
        journal_bytes: r.journal_bytes,
        replayed_bytes: r.replayed_bytes,
        summary: r.to_string(),
    });
    Ready { ready_after_ms: Some(startup.elapsed_ms()), store_recovery }
}

fn print_recovery(recovery: Option<RecoveryReport>) {
    if let Some(r) = recovery {
        println!("  recovery  {r}");
    }
}

fn describe_store(c: &TernConfig) -> String {
    match c.storage.backend {
        Backend::Embedded => {
            format!("{} (embedded, durability {:?})", c.data_dir.join("store").display(), c.storage.durability)
        }
        Backend::Scylla => format!("scylla {:?} keyspace {}", c.storage.scylla.nodes, c.storage.scylla.keyspace),
    }
}

/// `tern migrate`: create or upgrade the ScyllaDB schema.
pub fn migrate(c: TernConfig) -> anyhow::Result<()> {
    init_tracing(&c.log);
    anyhow::ensure!(
        c.storage.backend == Backend::Scylla,
        "`tern migrate` applies the ScyllaDB schema; set [storage] backend = \"scylla\" (the embedded store needs no migration)"
    );
    c.storage.scylla.validate().context("invalid [storage.scylla]")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(ScyllaStore::migrate(&c.storage.scylla)).context("migrating the schema")?;
    println!("{report}");
    Ok(())
}

fn logic_config(c: &TernConfig, gateway: Option<(SocketAddr, SocketAddr)>, dev: bool) -> LogicConfig {
    let mut l = LogicConfig {
        http: c.http.clone(),
        link: c.link.clone(),
        seq_step: c.logic.seq_step,
        owner_state_max_bytes: c.logic.owner_state_max_bytes,
        advertise_tcp: c.logic.advertise_tcp.clone(),
        advertise_ws: c.logic.advertise_ws.clone(),
        heartbeat_interval_ms: c.gateway.heartbeat_interval_ms,
        heartbeat_timeout_ms: c.gateway.heartbeat_timeout_ms,
        max_frame_bytes: c.gateway.max_frame_bytes as u32,
        messages: c.messages.clone(),
        conversations: c.conversations.clone(),
        demo: c.demo.clone(),
        dev_app_id: dev.then_some(devapp::DEV_APP_ID),
    };
    if let Some((tcp, ws)) = gateway {
        if l.advertise_tcp.is_empty() {
            l.advertise_tcp = vec![reachable(tcp).to_string()];
        }
        if l.advertise_ws.is_empty() {
            l.advertise_ws = vec![format!("ws://{}/", reachable(ws))];
        }
    }
    l
}

/// A wildcard listen address is advertised as loopback: the only address sure to work.
fn reachable(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a
}

fn secrets(apps: &[AppConfig]) -> AppSecrets {
    AppSecrets(apps.iter().map(|a| (a.id, a.secret.clone())).collect())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when it is first awaited: call it before printing the banner, or a SIGTERM sent
/// right after the banner would meet the default action and kill the process
/// without the shutdown (no store flush).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    })
}

fn print_apps(apps: &[AppConfig], dev: bool, c: &TernConfig) {
    for a in apps {
        if dev {
            println!(
                "  app       {} (development app, secret in {}): secret {}",
                a.id,
                devapp::path(&c.data_dir).display(),
                a.secret
            );
            println!("  sign      tern sig --app-id {} --secret {} --user alice", a.id, a.secret);
            if let Some(admin) = a.admins.first() {
                println!("  admin     tern sig --app-id {} --secret {} --admin {admin}", a.id, a.secret);
            }
        } else {
            println!("  app       {} (admins: {})", a.id, a.admins.join(", "));
        }
    }
}

/// Logic's runtime; `beside_gateway` in `tern all` (see
/// [`crate::config::LogicTuning::runtime_threads`]).
fn runtime(c: &TernConfig, beside_gateway: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.logic.runtime_threads(cpus, beside_gateway))
        .thread_name("tern-logic")
        .enable_all()
        .build()
        .context("starting tokio")
}

/// `tern all`.
pub fn all(c: TernConfig) -> anyhow::Result<()> {
    let startup = Startup::new("opening the store");
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, dev) = resolve_apps(&c, true)?;
    let rt = runtime(&c, true)?;
    rt.block_on(async move {
        let front = start_front(&c, &startup, c.gateway.max_connections).await?;
        let (store, recovery) = open_store(&c).await?;
        startup.set_step("starting the gateway");
        let mut bound = BoundLogic::with_front(front, &c.link.addr).await?;
        let gw_config = GatewayConfig { link_addr: bound.link_addr(), ..c.gateway.clone() };
        let in_process_link = c.link.in_process.then(|| LinkDialer::new(bound.in_process_dialer()));
        let extras = GatewayExtras { in_process_link, ..GatewayExtras::default() };
        let gateway = tern_gateway::start_with(gw_config, secrets(&apps), extras).context("starting the gateway")?;
        let (tcp, ws) = (gateway.local_tcp_addr(), gateway.local_ws_addr());
        let logic = Logic::new(logic_config(&c, Some((tcp, ws)), dev), store, AppRegistry::new(apps.clone()));
        let (http_addr, link_addr) = (bound.http_addr(), bound.link_addr());
        // The API is installed before the banner: whoever reads it finds `/healthz` ready.
        let serving = bound.serve(logic, Some(metrics), ready_report(&startup, recovery));
        let stop = shutdown_signal()?;
        println!("tern listening http={http_addr} tcp={tcp} ws={ws} link={link_addr}");
        println!("  http      http://{http_addr}/  (API docs: /docs, metrics: /metrics)");
        println!("  tcp       {tcp}");
        println!("  websocket ws://{ws}/");
        if c.demo.enabled {
            println!("  demo      http://{http_addr}/demo  (web chat; [demo] enabled = false turns it off)");
        }
        println!("  store     {}", describe_store(&c));
        print_recovery(recovery);
        print_apps(&apps, dev, &c);
        println!("  started in {} ms", startup.elapsed_ms());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serving.until(async move {
            let _ = stop_rx.await;
        }));
        stop.await;
        tracing::info!("shutting down: closing client connections");
        tokio::task::spawn_blocking(move || gateway.shutdown()).await.ok();
        let _ = stop_tx.send(());
        server.await.context("logic task")??;
        tracing::info!("store flushed; bye");
        anyhow::Ok(())
    })
}

/// `tern logic`.
pub fn logic(c: TernConfig) -> anyhow::Result<()> {
    let startup = Startup::new("opening the store");
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, dev) = resolve_apps(&c, true)?;
    runtime(&c, false)?.block_on(async move {
        let front = start_front(&c, &startup, 0).await?;
        let (store, recovery) = open_store(&c).await?;
        startup.set_step("binding the link");
        let bound = BoundLogic::with_front(front, &c.link.addr).await?;
        let logic = Logic::new(logic_config(&c, None, dev), store, AppRegistry::new(apps.clone()));
        let (http_addr, link_addr) = (bound.http_addr(), bound.link_addr());
        let serving = bound.serve(logic, Some(metrics), ready_report(&startup, recovery));
        let stop = shutdown_signal()?;
        println!("tern logic listening http={http_addr} link={link_addr}");
        println!("  store     {}", describe_store(&c));
        print_recovery(recovery);
        print_apps(&apps, dev, &c);
        println!("  started in {} ms", startup.elapsed_ms());
        serving.until(stop).await?;
        anyhow::Ok(())
    })
}

/// `tern gateway`.
pub fn gateway(c: TernConfig) -> anyhow::Result<()> {
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, _) = resolve_apps(&c, false)?;
    let extras = GatewayExtras { metrics_render: Some(Box::new(move || metrics.render())), ..GatewayExtras::default() };
    let gateway =
        tern_gateway::start_with(c.gateway.clone(), secrets(&apps), extras).context("starting the gateway")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stop = {
        let _in_runtime = rt.enter();
        shutdown_signal()?
    };
    println!(
        "tern gateway listening tcp={} ws={} link={} id={}",
        gateway.local_tcp_addr(),
        gateway.local_ws_addr(),
        c.gateway.link_addr,
        gateway.gateway_id()
    );
    if let Some(m) = gateway.local_metrics_addr() {
        println!("  metrics   http://{m}/metrics");
    }
    rt.block_on(stop);
    gateway.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_log_at_warn_unless_told_otherwise() {
        let f = log_filter("info");
        assert!(f.starts_with("warn,tern=info,tern_gateway=info,"), "{f}");
        assert!(log_filter("debug").contains("tern_storage=debug"));
        assert!(log_filter("error").starts_with("error,"));
        assert_eq!(log_filter("tern_gateway=debug,info"), "tern_gateway=debug,info");
        for level in ["info", "debug", "warn", "error", "trace", "off"] {
            assert!(tracing_subscriber::EnvFilter::try_new(log_filter(level)).is_ok(), "{level}");
        }
    }
}
