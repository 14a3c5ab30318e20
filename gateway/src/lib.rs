//! Tern's gateway: the edge that holds clients' long-lived TCP and WebSocket
//! connections, authenticates them locally (user signatures), answers heartbeats, and
//! moves frames between clients and logic over one link per core.
//!
//! Thread-per-core: [`start`] binds one `SO_REUSEPORT` listener per core and protocol,
//! then runs one monoio runtime per core thread (io_uring, or epoll where io_uring is
//! unavailable). A core owns its connections, its link and its timers; nothing on the
//! frame path is shared between cores.
//!
//! Module map: [`config`] (settings and defaults), `conn` (sans-IO protocol state
//! machine of a connection), `ws` (sans-IO WebSocket codec), `wire` (TCP/WebSocket
//! framing), `outq` (bounded outbound queue), `worker` (a core: accept, I/O, timers,
//! shutdown), `link` (the core's link to logic), `scrape` (optional metrics endpoint on
//! its own thread), `slab`, `sync`, `stats`, `sys`; `fuzzing` holds the fuzz harnesses
//! (hidden, not API).
//!
//! Invariants: the gateway never touches storage and never interprets message bodies;
//! it decodes only what routing needs. It never panics on network input and never
//! blocks a core.

pub mod config;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod outq;
mod scrape;
mod slab;
mod stats;
mod sync;
mod sys;
mod target;
mod window;
mod wire;
mod worker;
mod ws;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::GatewayConfig;
pub use target::{LinkDialer, LinkTarget};

/// Optional hooks of [`start_with`], beyond the config.
#[derive(Default)]
pub struct GatewayExtras {
    /// Renders this process's metrics in the Prometheus text format, e.g.
    /// `Box::new(move || prometheus_handle.render())`. Served on `GET /metrics` at
    /// [`GatewayConfig::metrics_addr`]; required when that is set.
    pub metrics_render: Option<Box<dyn Fn() -> String + Send + Sync>>,
    /// Links the cores to a logic tier in this process through socket pairs made by this
    /// dialer, instead of connecting to [`GatewayConfig::link_addr`] (`tern all`).
    pub in_process_link: Option<LinkDialer>,
}

impl std::fmt::Debug for GatewayExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayExtras")
            .field("metrics_render", &self.metrics_render.is_some())
            .field("in_process_link", &self.in_process_link.is_some())
            .finish()
    }
}

/// App id -> HMAC secret of each app; the gateway verifies user signatures locally.
#[derive(Debug, Clone, Default)]
pub struct AppSecrets(pub Vec<(u32, String)>);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway config: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start gateway core {core}: {source}")]
    Core {
        core: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the gateway metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
}

/// One core's connection counts, alone on their cache line (cores update theirs often).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct PaddedCount {
    /// Open connections (updated on every accept and close).
    pub(crate) open: AtomicUsize,
    /// Parked connections, as counted by the core's last sweep.
    pub(crate) parked: AtomicUsize,
}

/// A running gateway. Dropping it shuts the gateway down like [`GatewayHandle::shutdown`].
#[derive(Debug)]
pub struct GatewayHandle {
    tcp_addr: SocketAddr,
    ws_addr: SocketAddr,
    gateway_id: u32,
    metrics_addr: Option<SocketAddr>,
    counts: Arc<[PaddedCount]>,
    stops: Vec<UnixStream>,
    threads: Vec<JoinHandle<()>>,
}

impl GatewayHandle {
    /// The bound client TCP address (concrete port even if the config said 0).
    pub fn local_tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound client WebSocket address.
    pub fn local_ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The bound metrics endpoint, when `metrics_addr` is set.
    pub fn local_metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This gateway's id on the link.
    pub fn gateway_id(&self) -> u32 {
        self.gateway_id
    }

    /// Open client connections (sum of the cores' counters; approximate while changing).
    pub fn connection_count(&self) -> usize {
        self.counts.iter().map(|c| c.open.load(Ordering::Relaxed)).sum()
    }

    /// Parked connections (nothing to read, nothing queued, no partial frame: no buffer
    /// held), as counted by each core's last timer sweep — so up to one sweep period old.
    pub fn parked_count(&self) -> usize {
        self.counts.iter().map(|c| c.parked.load(Ordering::Relaxed)).sum()
    }

    /// Graceful stop: stop accepting, kick every authenticated client with
    /// `Kick(ServerShutdown)`, tell logic `SessionClosed(GatewayShutdown)`, close
    /// everything and join the core threads. Takes about 3 s at most.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        for s in self.stops.drain(..) {
            let _ = (&s).write_all(&[1]);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Resolves a configured address (synchronously, before any core runs).
fn resolve(name: &str, addr: &str) -> Result<SocketAddr, GatewayError> {
    addr.to_socket_addrs()
        .map_err(|e| GatewayError::Config(format!("{name} {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| GatewayError::Config(format!("{name} {addr:?} resolves to no address")))
}

/// Backlog of each listener: absorbs reconnect storms (many clients at once after an
/// outage) without SYN drops.
const LISTEN_BACKLOG: i32 = 4_096;

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the option
    // into every child): one setsockopt per listener instead of one per connection.
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

/// The metrics endpoint's listener (blocking accept is never used: the thread polls).
fn bind_metrics(addr: &str) -> Result<std::net::TcpListener, GatewayError> {
    let at = resolve("metrics_addr", addr)?;
    let err = |source| GatewayError::Bind { addr: addr.to_owned(), source };
    let l = std::net::TcpListener::bind(at).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// One `SO_REUSEPORT` listener per core, all on the same concrete port (the first
/// bind picks it when the config says port 0).
fn bind_all(name: &str, addr: &str, cores: usize) -> Result<(SocketAddr, Vec<std::net::TcpListener>), GatewayError> {
    let mut at = resolve(name, addr)?;
    let err = |source| GatewayError::Bind { addr: addr.to_owned(), source };
    let mut listeners = Vec::with_capacity(cores);
    for _ in 0..cores {
        let l = bind_one(at).map_err(err)?;
        at = l.local_addr().map_err(err)?;
        listeners.push(l);
    }
    Ok((at, listeners))
}

/// Binds the listeners (errors such as "address in use" come back here), then starts
/// one core thread per configured core and waits until every core runs.
///
/// Same as [`start_with`] without extras: `metrics_addr` must then be empty.
pub fn start(config: GatewayConfig, apps: AppSecrets) -> Result<GatewayHandle, GatewayError> {
    start_with(config, apps, GatewayExtras::default())
}

/// [`start`] with optional hooks: with `metrics_addr` set, the gateway serves
/// `extras.metrics_render` there from a dedicated thread.
pub fn start_with(
    config: GatewayConfig,
    apps: AppSecrets,
    extras: GatewayExtras,
) -> Result<GatewayHandle, GatewayError> {
    let mut problems = config.problems();
    let metrics_on = !config.metrics_addr.trim().is_empty();
    if metrics_on && extras.metrics_render.is_none() {
        problems.push("metrics_addr is set but no metrics renderer was given (start_with)".into());
    }
    if !problems.is_empty() {
        return Err(GatewayError::Config(problems.join("; ")));
    }
    let cores = match config.cores {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(config::MAX_CORES);
    let gateway_id = match config.gateway_id {
        0 => loop {
            let id: u32 = rand::random();
            if id != 0 {
                break id;
            }
        },
        id => id,
    };
    let link = match extras.in_process_link {
        Some(dialer) => LinkTarget::InProcess(dialer),
        None => LinkTarget::parse(&config.link_addr).map_err(|e| GatewayError::Config(format!("link_addr {e}")))?,
    };
    let (tcp_addr, tcp) = bind_all("tcp_addr", &config.tcp_addr, cores)?;
    let (ws_addr, ws) = bind_all("ws_addr", &config.ws_addr, cores)?;
    let metrics = match (metrics_on, extras.metrics_render) {
        (true, Some(render)) => Some((bind_metrics(&config.metrics_addr)?, render)),
        _ => None,
    };
    // CPU of each core when pinning: the cores take the allowed CPUs in order, wrapping.
    let cpus = match config.pin_cores.then(sys::allowed_cpus) {
        Some(Ok(cpus)) => cpus,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the CPU affinity; core threads are not pinned");
            Vec::new()
        }
        None => Vec::new(),
    };

    let cfg = Arc::new(config);
    let apps = Arc::new(conn::Apps::new(apps.0));
    let counts: Arc<[PaddedCount]> = (0..cores).map(|_| PaddedCount::default()).collect();
    let mut handle = GatewayHandle {
        tcp_addr,
        ws_addr,
        gateway_id,
        metrics_addr: None,
        counts: counts.clone(),
        stops: Vec::new(),
        threads: Vec::new(),
    };
    if let Some((listener, render)) = metrics {
        let addr = listener.local_addr().map_err(GatewayError::Metrics)?;
        let started = (|| -> std::io::Result<()> {
            let (stop_tx, stop_rx) = UnixStream::pair()?;
            let t = std::thread::Builder::new()
                .name("tern-gw-metrics".into())
                .spawn(move || scrape::serve(listener, stop_rx, render))?;
            handle.stops.push(stop_tx);
            handle.threads.push(t);
            Ok(())
        })();
        started.map_err(GatewayError::Metrics)?;
        handle.metrics_addr = Some(addr);
        tracing::info!(%addr, "gateway metrics endpoint listening");
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (core, (tcp, ws)) in tcp.into_iter().zip(ws).enumerate() {
        let started = (|| -> std::io::Result<()> {
            let (stop_tx, stop_rx) = UnixStream::pair()?;
            let boot = worker::Boot {
                core: core as u16,
                cores: cores as u16,
                gateway_id,
                cfg: cfg.clone(),
                link: link.clone(),
                apps: apps.clone(),
                tcp,
                ws,
                count: counts.clone(),
                stop: stop_rx,
                cpu: (!cpus.is_empty()).then(|| cpus[core % cpus.len()]),
            };
            let ready = ready_tx.clone();
            let t =
                std::thread::Builder::new().name(format!("tern-gw-{core}")).spawn(move || worker::run(boot, ready))?;
            handle.stops.push(stop_tx);
            handle.threads.push(t);
            Ok(())
        })();
        started.map_err(|source| GatewayError::Core { core, source })?;
    }
    drop(ready_tx);
    for core in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(GatewayError::Core { core, source }),
            Err(_) => {
                return Err(GatewayError::Core { core, source: std::io::Error::other("core did not start in time") })
            }
        }
    }
    tracing::info!(gateway_id, cores, %tcp_addr, %ws_addr, "gateway started");
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        // The core no longer sets TCP_NODELAY per connection: this is what it relies on.
        let l = bind_one("127.0.0.1:0".parse().unwrap()).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        l.set_nonblocking(false).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap(), "an accepted socket must have TCP_NODELAY");
    }
}
