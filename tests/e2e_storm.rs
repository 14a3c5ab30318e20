//! Reconnect storm (issue 13): every connection of a gateway process drops at once —
//! the gateway is killed with SIGKILL — and every client reconnects at once to its
//! restarted successor. Every client must be back in: no login refused, none timed
//! out, within a bound.
//!
//! Loopback only, bounded in time. `TERN_STORM_CONNS` sets the number of clients
//! (default 2,000); a test process holds < 20,000 descriptors here, which bounds it
//! at about 15,000.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sign, Mode, Options, Tern};
use tern_loadtest::client::{Client, LoginOutcome, LoginRequest, Transport};
use tern_schema::client::ClientType;

const APP: u32 = 10_000;

fn conns() -> usize {
    std::env::var("TERN_STORM_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// Every user logs in at once (one task each); returns the clients and how long the
/// last login took. Any failure is collected, not retried: a storm that needs client
/// retries is what this test must catch.
async fn login_all(addr: &str, users: &[String]) -> (Vec<Client>, Duration, Vec<String>) {
    let started = Instant::now();
    let addr: Arc<str> = addr.into();
    let tasks: Vec<_> = users
        .iter()
        .map(|u| {
            let (addr, user) = (addr.clone(), u.clone());
            tokio::spawn(async move {
                let mut c = Client::connect(Transport::Tcp, &addr).await.map_err(|e| format!("{user}: {e}"))?;
                let req = LoginRequest {
                    app_id: APP,
                    user_id: user.clone(),
                    user_sign: sign(APP, &user, 3_600),
                    client_type: ClientType::Android,
                    device_id: "phone".into(),
                    request_id: 1,
                };
                match c.login(&req).await {
                    Ok(LoginOutcome::Ok(_)) => Ok(c),
                    Ok(other) => Err(format!("{user}: {other:?}")),
                    Err(e) => Err(format!("{user}: {e}")),
                }
            })
        })
        .collect();
    let (mut clients, mut failures) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.expect("login task") {
            Ok(c) => clients.push(c),
            Err(e) => failures.push(e),
        }
    }
    (clients, started.elapsed(), failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_crash_reconnect_storm_recovers() {
    let n = conns();
    // The login deadline is the default's (5 s): a storm must fit in it, not in a
    // widened one.
    let mut t = Tern::start_with(Mode::Split, Options { login_timeout_ms: 5_000, ..Options::default() });
    let users: Vec<String> = (0..n).map(|i| format!("storm{i}")).collect();
    for chunk in users.chunks(100) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        t.import(APP, &refs);
    }
    let (clients, first, failures) = login_all(&t.tcp, &users).await;
    assert!(failures.is_empty(), "first wave: {} failed, e.g. {:?}", failures.len(), &failures[..1]);

    t.crash_and_restart_gateway();
    drop(clients);
    let (clients, storm, failures) = login_all(&t.tcp, &users).await;
    eprintln!("reconnect storm: {n} clients, first wave {first:?}, storm back in {storm:?}");
    assert!(failures.is_empty(), "storm: {} failed, e.g. {:?}", failures.len(), &failures[..1]);
    assert_eq!(clients.len(), n);
    // Bound for debug builds on a 2-core machine shared with other work; the release
    // target (issue 13) is ≤ 5 s for 15,000 connections.
    assert!(storm < Duration::from_secs(30), "storm took {storm:?}");
    // Logic counts every one of them online again.
    let last = users.last().unwrap();
    t.wait_online(APP, last, 1);
}
