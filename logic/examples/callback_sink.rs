//! A minimal business server for measuring callbacks: answers every POST with
//! `{"code": 0}` (allow) after an optional delay. Usage:
//! `callback_sink ADDR [DELAY_MS]`, e.g. `callback_sink 127.0.0.1:18080 0`.

use std::time::Duration;

use axum::routing::post;
use axum::Router;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let delay = Duration::from_millis(args.next().and_then(|d| d.parse().ok()).unwrap_or(0));
    let app = Router::new().route(
        "/{*rest}",
        post(move || async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            r#"{"code": 0}"#
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("callback sink on http://{addr}/ (delay {delay:?})");
    axum::serve(listener, app).await.expect("serve");
}
