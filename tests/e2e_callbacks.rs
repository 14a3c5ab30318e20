//! Business callbacks end to end over TCP against the real binary and a business server
//! started by the test: a before-send refusal reaches the client's SendAck with the
//! app's code, a rewrite reaches the recipient, pipelined sends of one connection keep
//! their order while their callbacks take different times, a slow business server does
//! not slow another app's sends, and logins and logouts are reported.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{Mode, Options, Tern, SECRET};
use serde_json::{json, Value};
use tern_loadtest::client::{Client, Transport};
use tern_schema::client::{Body, ClientType, ElemType};
use tern_schema::codes;
use tern_schema::message::{self, ElemParts};

const HOOKED: u32 = 30_001;
const PLAIN: u32 = 30_002;
const WAIT: Duration = Duration::from_secs(10);

/// Every signed request the business server received (unsigned ones are refused 401).
type Seen = Arc<Mutex<Vec<Value>>>;

/// Before-send: text containing "bad" is refused with 120001, "rewrite" becomes "***",
/// "slow" is answered after 3 s; everything else is allowed. `/events` records.
async fn biz(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let ts: u64 = h("x-tern-timestamp").parse().unwrap_or(0);
    if !tern_logic::callbacks::sign::verify(SECRET.as_bytes(), ts, &body, &h("x-tern-signature")) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push(v.clone());
    if v["command"] != json!("message.send.before") {
        return (StatusCode::OK, "{}".into());
    }
    let text = v["data"]["messageBody"][0]["text"].as_str().unwrap_or("").to_string();
    let answer = if text.contains("bad") {
        json!({"code": 120_001, "msg": "not on this app"})
    } else if text.contains("rewrite") {
        json!({"code": 0, "data": {"messageBody": [{"type": "text", "text": "***"}]}})
    } else {
        if text.contains("slow") {
            tokio::time::sleep(Duration::from_millis(3000)).await;
        }
        json!({"code": 0})
    };
    (StatusCode::OK, answer.to_string())
}

async fn start_biz() -> (Seen, String) {
    let seen = Seen::default();
    let app = Router::new().route("/{*rest}", post(biz)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, base)
}

/// Sends without waiting; returns the request id.
async fn send_text(c: &mut Client, id: &str, to: &str, text: &str) -> u32 {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text, ..Default::default() }];
    c.send(&message::send(rid, id, to, &elems, 1)).await.unwrap();
    rid
}

/// (code, message) of the SendAck answering `rid`.
async fn ack(c: &mut Client, rid: u32) -> (u32, String) {
    let (f, _) = c
        .recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT)
        .await
        .unwrap_or_else(|e| panic!("send ack of {rid}: {e}"));
    let a = f.frame().body_as_send_ack().unwrap();
    (a.code(), a.message().unwrap_or_default().to_string())
}

/// The codes of the SendAcks answering `rids`, in `rids` order (they may arrive in
/// any order: each send is answered once durable).
async fn acks(c: &mut Client, rids: &[u32]) -> Vec<u32> {
    let mut got = std::collections::HashMap::new();
    while got.len() < rids.len() {
        let (f, _) = c
            .recv_until(|f| rids.contains(&f.request_id()) && f.body_type() == Body::SendAck, WAIT)
            .await
            .unwrap_or_else(|e| panic!("send acks of {rids:?} (have {got:?}): {e}"));
        got.insert(f.request_id(), f.frame().body_as_send_ack().unwrap().code());
    }
    rids.iter().map(|r| got[r]).collect()
}

/// The next `n` pushed messages' (seq, text), in arrival order (one Push may carry several).
async fn pushes(c: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let (f, _) = c.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("push");
        for m in f.frame().body_as_push().unwrap().messages().unwrap() {
            out.push((m.seq(), m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default()));
        }
    }
    out
}

async fn push(c: &mut Client) -> (u64, String) {
    pushes(c, 1).await.remove(0)
}

async fn wait_seen(seen: &Seen, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = seen.lock().unwrap().iter().find(|v| pred(v)).cloned() {
            return v;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn callbacks_over_tcp(mode: Mode) {
    let (seen, base) = start_biz().await;
    let apps = format!(
        "[[apps]]\nid = {HOOKED}\nsecret = \"{SECRET}\"\n[apps.callbacks]\nbefore_send_url = \"{base}/before\"\n\
         after_send_url = \"{base}/events\"\nstate_change_url = \"{base}/events\"\ntimeout_ms = 5000\n\
         [[apps]]\nid = {PLAIN}\nsecret = \"{SECRET}\"\n"
    );
    let t = Tern::start_with(mode, Options::default().with_apps(apps));
    t.import(HOOKED, &["alice", "bob"]);
    t.import(PLAIN, &["carol", "dave"]);
    let mut alice = t.device(Transport::Tcp, HOOKED, "alice", ClientType::Ios, "a1").await;
    let mut bob = t.device(Transport::Tcp, HOOKED, "bob", ClientType::Android, "b1").await;
    let mut carol = t.device(Transport::Tcp, PLAIN, "carol", ClientType::Ios, "c1").await;
    let mut dave = t.device(Transport::Tcp, PLAIN, "dave", ClientType::Ios, "d1").await;
    let online = wait_seen(&seen, "alice online", |v| {
        v["command"] == json!("user.online.status.change") && v["data"]["userId"] == json!("alice")
    })
    .await;
    assert_eq!(online["data"]["status"], json!("online"));
    assert_eq!(online["data"]["deviceId"], json!("a1"));

    // Refused by the business server: its code and reason in the SendAck, nothing pushed.
    let rid = send_text(&mut alice, "m1", "bob", "a bad word").await;
    assert_eq!(ack(&mut alice, rid).await, (120_001, "not on this app".to_string()));
    // Rewritten: the recipient gets the new body.
    let rid = send_text(&mut alice, "m2", "bob", "please rewrite").await;
    assert_eq!(ack(&mut alice, rid).await.0, codes::OK);
    assert_eq!(push(&mut bob).await.1, "***");

    // Pipelined: the first send's callback takes 3 s, the next two answer at once;
    // the connection's order is kept in bob's timeline. Meanwhile another app's sends
    // are answered at once.
    let r1 = send_text(&mut alice, "o1", "bob", "slow one").await;
    let r2 = send_text(&mut alice, "o2", "bob", "two").await;
    let r3 = send_text(&mut alice, "o3", "bob", "three").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t0 = Instant::now();
        let rid = send_text(&mut carol, &format!("c{i}"), "dave", "hello").await;
        assert_eq!(ack(&mut carol, rid).await.0, codes::OK);
        worst = worst.max(t0.elapsed());
        assert_eq!(push(&mut dave).await.1, "hello");
    }
    assert!(worst < Duration::from_millis(1500), "another app's send took {worst:?} behind a slow business server");
    assert_eq!(acks(&mut alice, &[r1, r2, r3]).await, [codes::OK; 3]);
    let got = pushes(&mut bob, 3).await;
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["slow one", "two", "three"]);
    assert!(got[0].0 < got[1].0 && got[1].0 < got[2].0, "{got:?}");

    // After-send events for the accepted messages; none for the refused one.
    let after = wait_seen(&seen, "after-send of o3", |v| {
        v["command"] == json!("message.send.after") && v["data"]["messageId"] == json!("o3")
    })
    .await;
    assert_eq!(after["data"]["toId"], json!("bob"));
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|v| v["command"] == json!("message.send.after") && v["data"]["messageId"] == json!("m1")));
    // The plain app never reached the business server.
    assert!(!seen.lock().unwrap().iter().any(|v| v["appId"] == json!(PLAIN)));

    // Logout: the session's end is reported.
    alice.close().await.unwrap();
    let offline = wait_seen(&seen, "alice offline", |v| {
        v["command"] == json!("user.online.status.change")
            && v["data"]["userId"] == json!("alice")
            && v["data"]["status"] == json!("offline")
    })
    .await;
    assert_eq!(offline["data"]["reason"], json!("logout"));
}

in_both_modes!(callbacks_over_tcp);
