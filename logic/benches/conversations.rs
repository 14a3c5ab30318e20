//! Conversation list benchmark (issue 12): one user with N conversations (default
//! 10,000; `CONV_BENCH_N`), one message from each peer, over a real embedded store in a
//! temporary directory. Prints the first read ever; the cold first page (a new node over
//! the same store, as after a restart or an eviction) `CONV_BENCH_COLD` times (default
//! 30) from the snapshot, then with 500 messages after it, then `CONV_BENCH_FULL` times
//! (default 5) without a snapshot (the full rebuild); then the first page (limit 100)
//! read `CONV_BENCH_READS` times (default 2,000) with the view in memory — alone, and
//! with a new message arriving before each read (the incremental inbox fold) — all as
//! p50 / p99 / max. Target: p99 ≤ 10 ms.
//!
//! `cargo bench -p tern-logic --bench conversations` (release).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tern_logic::messages::{self, MessageExtras, SendRequest};
use tern_logic::{Logic, LogicConfig};
use tern_schema::client::ElemType;
use tern_schema::message::ElemParts;
use tern_storage::{AppId, UserId};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn send(logic: &Logic, from: &UserId, to: &UserId, id: &str) {
    let elems = vec![ElemParts { elem_type: ElemType::Text, text: "hello there", ..Default::default() }];
    let req = SendRequest {
        app: AppId(support::APP),
        from: from.clone(),
        to: to.clone(),
        client_msg_id: id,
        elems,
        client_time_ms: 1,
        from_device: "",
        origin: None,
        extras: MessageExtras::default(),
    };
    messages::send(logic, req).await.expect("send");
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} reads)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn main() {
    let n = env("CONV_BENCH_N", 10_000);
    let reads = env("CONV_BENCH_READS", 2_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let h = support::Harness::new(LogicConfig::default(), vec![support::app_config(support::APP, json!({}))], None);
        let me = UserId::new("me").unwrap();
        let peers: Vec<UserId> = (0..n).map(|i| UserId::new(format!("p{i}")).unwrap()).collect();
        let t = Instant::now();
        let mut ids: Vec<serde_json::Value> = vec![json!({"userId": "me"})];
        ids.extend(peers.iter().map(|p| json!({"userId": p.as_str()})));
        for chunk in ids.chunks(100) {
            h.ok("/user/importUser", json!({"userData": chunk})).await;
        }
        // One message from each peer, 256 at a time (the store group-commits them).
        for (c, chunk) in peers.chunks(256).enumerate() {
            let mut tasks = Vec::new();
            for (i, p) in chunk.iter().enumerate() {
                let (logic, p, me) = (h.logic.clone(), p.clone(), me.clone());
                let id = format!("m{c}-{i}");
                tasks.push(tokio::spawn(async move { send(&logic, &p, &me, &id).await }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        println!("setup: {n} conversations of one user in {:.1} s", t.elapsed().as_secs_f64());
        let app = AppId(support::APP);

        // The first read logs every conversation (they appeared by messages only).
        let t = Instant::now();
        let page = tern_logic::conversations::get(&h.logic, app, &me, 0, 100).await.unwrap();
        assert_eq!(page.total, n);
        println!(
            "first read ever (fold {n} inbox entries, log {n} records): {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );

        // The first read saves the view as a snapshot, after its answer.
        let owner = tern_storage::Owner::User(me.clone());
        let kind = tern_storage::SyncKind::ConversationSnapshot;
        while h.store.read_log(app, &owner, kind, tern_storage::Seq::ZERO, 1).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let parts = h.store.read_log(app, &owner, kind, tern_storage::Seq::ZERO, 64).await.unwrap();
        let bytes: usize = parts.iter().map(|e| e.payload.len()).sum();
        println!("snapshot: {} parts, {:.2} MB", parts.len(), bytes as f64 / 1e6);

        // Cold loads: a new node over the same store (as after a restart, or a view
        // dropped under max_held), first page from the snapshot plus what came after.
        let cold_loads = env("CONV_BENCH_COLD", 30);
        let mut cold = Vec::with_capacity(cold_loads);
        let mut logic = None;
        for _ in 0..cold_loads {
            let (l, _) = h.restarted();
            let t = Instant::now();
            let page = tern_logic::conversations::get(&l, app, &me, 0, 100).await.unwrap();
            cold.push(t.elapsed());
            assert_eq!((page.total, page.items.len()), (n, 100.min(n)));
            assert!(page.items.iter().all(|i| i.unread == 1));
            logic = Some(l);
        }
        println!("cold first page (snapshot + tail), {cold_loads} restarts: {}", percentiles(cold));

        // The same with 500 messages after the snapshot (folded at the load).
        for i in 0..500 {
            send(&h.logic, &peers[i % n], &me, &format!("t{i}")).await;
        }
        let mut tail = Vec::with_capacity(cold_loads);
        for _ in 0..cold_loads {
            let (l, _) = h.restarted();
            let t = Instant::now();
            let page = tern_logic::conversations::get(&l, app, &me, 0, 100).await.unwrap();
            tail.push(t.elapsed());
            assert_eq!(page.items[0].unread, 2);
        }
        println!("cold first page, 500 messages after the snapshot, {cold_loads} restarts: {}", percentiles(tail));

        // Without a snapshot: the full rebuild (log fold + every conversation's index).
        let mut none = tern_storage::WriteBatch::new();
        for e in &parts {
            none.delete_log_entry(app, owner.clone(), kind, e.seq);
        }
        let full_loads = env("CONV_BENCH_FULL", 5);
        let mut full = Vec::with_capacity(full_loads);
        for _ in 0..full_loads {
            h.store.write(none.clone()).await.unwrap();
            let (l, _) = h.restarted();
            let t = Instant::now();
            let page = tern_logic::conversations::get(&l, app, &me, 0, 100).await.unwrap();
            full.push(t.elapsed());
            assert_eq!(page.total, n);
            // Let its snapshot save finish before the next round deletes it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        println!("cold first page without a snapshot (full rebuild), {full_loads} restarts: {}", percentiles(full));
        let logic = logic.expect("one cold load at least");
        // Its view folds the 500 messages sent since it loaded: not part of the warm figures.
        tern_logic::conversations::get(&logic, app, &me, 0, 100).await.unwrap();

        let logic: Arc<Logic> = logic;
        let mut warm = Vec::with_capacity(reads);
        for _ in 0..reads {
            let t = Instant::now();
            let page = tern_logic::conversations::get(&logic, app, &me, 0, 100).await.unwrap();
            warm.push(t.elapsed());
            std::hint::black_box(page);
        }
        println!("first page, view in memory: {}", percentiles(warm));

        let mut busy = Vec::with_capacity(reads);
        for i in 0..reads {
            send(&logic, &peers[i % n], &me, &format!("x{i}")).await;
            let t = Instant::now();
            let page = tern_logic::conversations::get(&logic, app, &me, 0, 100).await.unwrap();
            busy.push(t.elapsed());
            assert_eq!(page.items[0].conversation, tern_storage::Conversation::Single(peers[i % n].clone()));
        }
        println!("first page, a new message before each read: {}", percentiles(busy));
    });
}
