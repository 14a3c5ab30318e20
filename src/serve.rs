//! Wiring the tiers into processes: `tern all` (gateway + logic + embedded store),
//! `tern gateway` and `tern logic`. Nothing here implements behaviour of its own; it
//! opens, binds, starts, prints where it listens, and shuts down in order on SIGINT /
//! SIGTERM (stop accepting, tell clients, flush the store).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tern_gateway::{AppSecrets, GatewayConfig, GatewayExtras};
use tern_logic::server::BoundLogic;
use tern_logic::{AppConfig, AppRegistry, Logic, LogicConfig};
use tern_storage::{EmbeddedConfig, EmbeddedStore, ScyllaStore, Store};

use crate::config::{Backend, TernConfig};
use crate::devapp;

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    Ok(handle)
}

/// Apps from config, or the development app (created by processes that own data).
fn resolve_apps(c: &TernConfig, create_dev_app: bool) -> anyhow::Result<(Vec<AppConfig>, bool)> {
    if !c.apps.is_empty() {
        return Ok((c.apps.clone(), false));
    }
    Ok((vec![devapp::load_or_create(&c.data_dir, create_dev_app)?], true))
}

/// Opens the configured store. Runs inside the tokio runtime: the CQL driver needs it.
async fn open_store(c: &TernConfig) -> anyhow::Result<Arc<dyn Store>> {
    match c.storage.backend {
        Backend::Embedded => {
            let path = c.data_dir.join("store");
            let mut cfg = EmbeddedConfig::new(&path);
            cfg.durability = c.storage.durability;
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(cfg))
                .await?
                .with_context(|| format!("opening the embedded store in {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Backend::Scylla => {
            let s = &c.storage.scylla;
            let store = ScyllaStore::connect(s)
                .await
                .with_context(|| format!("connecting to ScyllaDB {:?} keyspace {}", s.nodes, s.keyspace))?;
            Ok(Arc::new(store))
        }
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

fn logic_config(c: &TernConfig, gateway: Option<(SocketAddr, SocketAddr)>) -> LogicConfig {
    let mut l = LogicConfig {
        http: c.http.clone(),
        link: c.link.clone(),
        seq_step: c.logic.seq_step,
        advertise_tcp: c.logic.advertise_tcp.clone(),
        advertise_ws: c.logic.advertise_ws.clone(),
        heartbeat_interval_ms: c.gateway.heartbeat_interval_ms,
        heartbeat_timeout_ms: c.gateway.heartbeat_timeout_ms,
        max_frame_bytes: c.gateway.max_frame_bytes as u32,
        messages: c.messages.clone(),
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
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
        } else {
            println!("  app       {} (admins: {})", a.id, a.admins.join(", "));
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().thread_name("tern-logic").enable_all().build().context("starting tokio")
}

/// `tern all`.
pub fn all(c: TernConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, dev) = resolve_apps(&c, true)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let store = open_store(&c).await?;
        let bound = BoundLogic::bind(&c.http.addr, &c.link.addr).await?;
        let gw_config = GatewayConfig { link_addr: bound.link_addr().to_string(), ..c.gateway.clone() };
        let gateway = tern_gateway::start(gw_config, secrets(&apps)).context("starting the gateway")?;
        let (tcp, ws) = (gateway.local_tcp_addr(), gateway.local_ws_addr());
        let logic = Logic::new(logic_config(&c, Some((tcp, ws))), store, AppRegistry::new(apps.clone()));
        println!("tern listening http={} tcp={} ws={} link={}", bound.http_addr(), tcp, ws, bound.link_addr());
        println!("  http      http://{}/  (API docs: /docs, metrics: /metrics)", bound.http_addr());
        println!("  tcp       {tcp}");
        println!("  websocket ws://{ws}/");
        println!("  store     {}", describe_store(&c));
        print_apps(&apps, dev, &c);
        println!("  started in {} ms", started.elapsed().as_millis());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.run(logic, Some(metrics), async move {
            let _ = stop_rx.await;
        }));
        shutdown_signal().await;
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
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, dev) = resolve_apps(&c, true)?;
    runtime()?.block_on(async move {
        let store = open_store(&c).await?;
        let bound = BoundLogic::bind(&c.http.addr, &c.link.addr).await?;
        let logic = Logic::new(logic_config(&c, None), store, AppRegistry::new(apps.clone()));
        println!("tern logic listening http={} link={}", bound.http_addr(), bound.link_addr());
        print_apps(&apps, dev, &c);
        bound.run(logic, Some(metrics), shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// `tern gateway`.
pub fn gateway(c: TernConfig) -> anyhow::Result<()> {
    init_tracing(&c.log);
    let metrics = install_metrics()?;
    let (apps, _) = resolve_apps(&c, false)?;
    let extras = GatewayExtras { metrics_render: Some(Box::new(move || metrics.render())) };
    let gateway =
        tern_gateway::start_with(c.gateway.clone(), secrets(&apps), extras).context("starting the gateway")?;
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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(shutdown_signal());
    gateway.shutdown();
    Ok(())
}
