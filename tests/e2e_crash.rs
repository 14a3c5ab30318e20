//! Crash safety: `tern` is killed with SIGKILL while clients send messages; after each
//! restart every message whose ack a client received is in both users' timelines, a
//! resend of an acked message gets the original ack, and new seqs continue above every
//! seq handed out before. CI runs 3 kill/restart cycles; `TERN_SLOW_TESTS=1` runs 15.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Mode, Options, Tern};
use rand::Rng;
use serde_json::json;
use tern_loadtest::client::Transport;
use tern_schema::client::{Body, ClientType, ElemType};
use tern_schema::codes;
use tern_schema::message::{self, ElemParts};

const APP: u32 = 10_000;
const SENDERS: usize = 6;

#[derive(Debug, Clone)]
struct Acked {
    from: String,
    to: String,
    client_id: String,
    key: u64,
    seq: u64,
}

fn options() -> Options {
    // No rate limits: the point is load at the moment of the kill.
    // A fixed send limit (send_latency_target_ms = 0): these tests pipeline sends and expect
    // every one accepted, and on a loaded test machine store turns pass the latency target
    // that would shrink the adaptive limit (logic/src/admission.rs has its own tests).
    // No bound on a gateway core's sends in flight either (its default refuses part
    // of a pipelined burst).
    let extra = "inbound_frames_per_sec = 1000000\nmax_sends_in_flight_per_core = 0\n[messages]\nsends_per_sec = 1000000\nsend_latency_target_ms = 0\n"
        .to_string();
    Options { extra_toml: extra, ..Options::default() }
}

/// Sends from every sender until the connection dies; records every ack.
async fn load(t: &Tern, cycle: usize, acked: Arc<Mutex<Vec<Acked>>>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let from = format!("s{s}");
        let to = format!("r{}", s % 3);
        let mut c = t.device(Transport::Tcp, APP, &from, ClientType::Ios, "p").await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let client_id = format!("c{cycle}-{i}");
                let rid = c.next_request_id();
                let elems = [ElemParts { elem_type: ElemType::Text, text: &client_id, ..Default::default() }];
                if c.send(&message::send(rid, &client_id, &to, &elems, 0)).await.is_err() {
                    return;
                }
                match c
                    .recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, Duration::from_secs(10))
                    .await
                {
                    Ok((f, _)) => {
                        let a = f.frame().body_as_send_ack().unwrap();
                        assert_eq!(a.code(), codes::OK, "send refused: {}", f.describe());
                        let rec =
                            Acked { from: from.clone(), to: to.clone(), client_id, key: a.message_key(), seq: a.seq() };
                        acked.lock().unwrap().push(rec);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tasks
}

fn check_all_present(t: &Tern, acked: &[Acked]) {
    for side in ["from", "to"] {
        for chunk in acked.chunks(100) {
            let mut by_user: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            for a in chunk {
                let owner = if side == "from" { a.from.as_str() } else { a.to.as_str() };
                by_user.entry(owner).or_default().push(a.key.to_string());
            }
            for (user, keys) in by_user {
                let r = t.api(APP, "/message/getMessage", json!({"fromId": user, "messageKeys": keys}));
                assert_eq!(r["code"], 200, "{r}");
                let items = r["data"]["resultList"].as_array().expect("per-key results");
                assert_eq!(items.len(), keys.len(), "{r}");
                for it in items {
                    assert_eq!(it["code"], 200, "acked message lost from {user}'s timeline ({side} side): {it}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_kill_9() {
    let cycles = if std::env::var("TERN_SLOW_TESTS").is_ok_and(|v| v == "1") { 15 } else { 3 };
    let mut t = Tern::start_with(Mode::AllInOne, options());
    let users: Vec<String> = (0..SENDERS).map(|s| format!("s{s}")).chain((0..3).map(|r| format!("r{r}"))).collect();
    t.import(APP, &users.iter().map(String::as_str).collect::<Vec<_>>());
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        let tasks = load(&t, cycle, acked.clone()).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1_200))).await;
        let dir = t.crash();
        for task in tasks {
            task.await.expect("sender task");
        }
        t = Tern::start_in(Mode::AllInOne, options(), dir);
        let all = acked.lock().unwrap().clone();
        assert!(!all.is_empty(), "no message was acked before the kill");
        check_all_present(&t, &all);
        // Resending acked messages returns the original ack, never a second message.
        let mut c = t.device(Transport::Tcp, APP, "s0", ClientType::Ios, "p").await;
        for a in all.iter().filter(|a| a.from == "s0").rev().take(3) {
            let rid = c.next_request_id();
            let elems = [ElemParts { elem_type: ElemType::Text, text: &a.client_id, ..Default::default() }];
            c.send(&message::send(rid, &a.client_id, &a.to, &elems, 0)).await.unwrap();
            let (f, _) = c.recv_until(|f| f.request_id() == rid, Duration::from_secs(10)).await.unwrap();
            let ack = f.frame().body_as_send_ack().unwrap();
            assert_eq!((ack.message_key(), ack.seq()), (a.key, a.seq), "resend after restart got a new message");
        }
        // New seqs continue above every seq handed out before the crash.
        let max_before = all.iter().filter(|a| a.from == "s0").map(|a| a.seq).max().unwrap_or(0);
        let rid = c.next_request_id();
        let elems = [ElemParts { elem_type: ElemType::Text, text: "after", ..Default::default() }];
        c.send(&message::send(rid, &format!("after-{cycle}"), "r0", &elems, 0)).await.unwrap();
        let (f, _) = c.recv_until(|f| f.request_id() == rid, Duration::from_secs(10)).await.unwrap();
        let seq = f.frame().body_as_send_ack().unwrap().seq();
        assert!(seq > max_before, "seq {seq} after restart is not above {max_before}");
        eprintln!("cycle {cycle}: {} acked messages so far, all present", all.len());
    }
}
