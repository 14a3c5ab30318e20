//! Starting and stopping the logic tier's listeners: the HTTP management API and the
//! gateway link endpoint. Binding is separate from serving so callers learn the real
//! addresses (port 0 in tests) and bind errors before anything runs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::Logic;

/// Listeners bound and ready to serve.
pub struct BoundLogic {
    http: TcpListener,
    link: TcpListener,
}

async fn bind_one(what: &str, addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("binding {what} on {addr}: {e}")))
}

impl BoundLogic {
    /// Binds the HTTP and link listeners (port 0 picks a free port).
    pub async fn bind(http_addr: &str, link_addr: &str) -> std::io::Result<Self> {
        Ok(Self { http: bind_one("HTTP", http_addr).await?, link: bind_one("link", link_addr).await? })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener has an address")
    }

    pub fn link_addr(&self) -> SocketAddr {
        self.link.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and flushes the store.
    pub async fn run(
        self,
        logic: Arc<Logic>,
        metrics: Option<PrometheusHandle>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self { http, link } = self;
        let link_task = tokio::spawn(crate::link::accept_loop(logic.clone(), link));
        let acks_task = tokio::spawn(flush_acks_every(logic.clone(), ACK_FLUSH_INTERVAL));
        let repair_task = tokio::spawn(repair_stale_every(logic.clone()));
        let router = crate::http::router(logic.clone(), metrics);
        let served = axum::serve(http, router).with_graceful_shutdown(shutdown).await;
        link_task.abort();
        acks_task.abort();
        repair_task.abort();
        if let Err(e) = crate::messages::flush_acks(&logic).await {
            tracing::error!(error = %e, "flushing device acks at shutdown failed");
        }
        if let Err(e) = logic.store.flush().await {
            tracing::error!(error = %e, "flushing the store at shutdown failed");
        }
        served
    }
}

/// How often coalesced device acks are written: a crash forgets at most this much of
/// them, which only makes devices pull a few messages twice.
pub const ACK_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn flush_acks_every(logic: Arc<Logic>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = crate::messages::flush_acks(&logic).await {
            tracing::warn!(error = %e, "writing device acks failed; will retry");
        }
    }
}

/// Kicks devices that missed frames on a full link queue once there is room again.
async fn repair_stale_every(logic: Arc<Logic>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tick.tick().await;
        logic.sessions.repair_stale();
    }
}
