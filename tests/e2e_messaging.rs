//! End-to-end 1:1 messaging over real sockets: fan-out to every device of both users,
//! offline pull, dedup of resends, recall in and out of the window, history paging, and
//! the rule that nobody reads a pair's messages they are not part of.

mod common;

use std::time::Duration;

use common::{Mode, Options, Tern};
use serde_json::json;
use tern_loadtest::client::{Client, LoginOutcome, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, ElemType, EntryKind, SyncKind};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

const APP: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(5);

struct Ack {
    code: u32,
    key: u64,
    seq: u64,
}

async fn send_text(c: &mut Client, client_msg_id: &str, to: &str, text: &str) -> Ack {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text, ..Default::default() }];
    c.send(&message::send(rid, client_msg_id, to, &elems, 1)).await.unwrap();
    let (f, _) =
        c.recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT).await.expect("send ack");
    let a = f.frame().body_as_send_ack().unwrap();
    Ack { code: a.code(), key: a.message_key(), seq: a.seq() }
}

/// Next pushed message: (seq, key, text, entry).
async fn next_push(c: &mut Client) -> (u64, u64, String, EntryKind) {
    let (f, _) = c.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("push");
    first_message(&f)
}

fn first_message(f: &OwnedFrame) -> (u64, u64, String, EntryKind) {
    let p = f.frame().body_as_push().unwrap();
    let m = p.messages().unwrap().get(0);
    let text = m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default();
    (m.seq(), m.message_key(), text, m.entry())
}

async fn no_push(c: &mut Client) {
    if let Ok(Some(f)) = c.recv_timeout(Duration::from_millis(400)).await {
        assert_ne!(f.body_type(), Body::Push, "unexpected push: {}", f.describe());
    }
}

/// Pulls the whole Message timeline after `after` in pages of 2 (paging exercised).
async fn pull_all(c: &mut Client, after: u64) -> Vec<(u64, String, bool)> {
    common::pull_timeline(c, after, 2).await
}

async fn fan_out_to_every_device(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b"]);
    let mut a_phone = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    let mut a_web = t.device(Transport::Ws, APP, "a", ClientType::Web, "aw").await;
    let mut b_phone = t.device(Transport::Tcp, APP, "b", ClientType::Android, "bp").await;
    let mut b_web = t.device(Transport::Ws, APP, "b", ClientType::Web, "bw").await;
    let ack = send_text(&mut a_phone, "m1", "b", "hello").await;
    assert_eq!(ack.code, codes::OK);
    for c in [&mut b_phone, &mut b_web] {
        let (seq, key, text, _) = next_push(c).await;
        assert_eq!((key, text.as_str()), (ack.key, "hello"));
        assert!(seq >= 1);
    }
    let (seq, key, _, _) = next_push(&mut a_web).await;
    assert_eq!((seq, key), (ack.seq, ack.key), "the sender's other device gets the sender's seq");
    no_push(&mut a_phone).await;
    // Ordered: a burst arrives in seq order on every device.
    for i in 0..20 {
        assert_eq!(send_text(&mut a_phone, &format!("burst{i}"), "b", &format!("n{i}")).await.code, codes::OK);
    }
    let mut last = 0;
    let mut texts = Vec::new();
    while texts.len() < 20 {
        let (f, _) = b_web.recv_until(|f| f.body_type() == Body::Push, WAIT).await.unwrap();
        for m in f.frame().body_as_push().unwrap().messages().unwrap() {
            assert!(m.seq() > last, "push out of order");
            last = m.seq();
            texts.push(m.elems().unwrap().get(0).text().unwrap().to_string());
        }
    }
    assert_eq!(texts, (0..20).map(|i| format!("n{i}")).collect::<Vec<_>>());
}

async fn offline_device_pulls_on_login(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    for i in 0..5 {
        assert_eq!(send_text(&mut a, &format!("m{i}"), "b", &format!("offline {i}")).await.code, codes::OK);
    }
    let (mut b, outcome) = t.login(Transport::Ws, APP, "b", &common::sign(APP, "b", 60), ClientType::Web, "bw").await;
    let LoginOutcome::Ok(ack) = outcome else { panic!("{outcome:?}") };
    assert_eq!(ack.acked_seq(SyncKind::Message), 0);
    let max = ack.max_seq(SyncKind::Message);
    let got = pull_all(&mut b, 0).await;
    assert_eq!(
        got.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        (0..5).map(|i| format!("offline {i}")).collect::<Vec<_>>()
    );
    assert!(got.last().unwrap().0 <= max);
    // Acknowledge, reconnect: the server remembers what this device has.
    b.send(&encode::push_ack(0, SyncKind::Message, got.last().unwrap().0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(b);
    let (_b2, outcome) = t.login(Transport::Tcp, APP, "b", &common::sign(APP, "b", 60), ClientType::Web, "bw").await;
    let LoginOutcome::Ok(ack) = outcome else { panic!("{outcome:?}") };
    assert_eq!(ack.acked_seq(SyncKind::Message), got.last().unwrap().0);
}

async fn resend_is_deduplicated(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Ios, "bp").await;
    let first = send_text(&mut a, "same-id", "b", "once").await;
    let again = send_text(&mut a, "same-id", "b", "once").await;
    assert_eq!((first.key, first.seq), (again.key, again.seq));
    next_push(&mut b).await;
    no_push(&mut b).await;
    assert_eq!(pull_all(&mut b, 0).await.len(), 1);
}

async fn recall_inside_and_outside_the_window(mode: Mode) {
    let extra = "[[apps]]\nid = 20000\nsecret = \"e2e-secret-0123456789\"\nrecall_window_secs = 1\n".to_string();
    let t = Tern::start_with(mode, Options { extra_toml: String::new(), ..Options::default() }.with_apps(extra));
    for app in [APP, 20_000] {
        t.import(app, &["a", "b"]);
    }
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Ios, "bp").await;
    let ack = send_text(&mut a, "r1", "b", "oops").await;
    next_push(&mut b).await;
    let rid = a.next_request_id();
    a.send(&message::recall(rid, ack.key, "b")).await.unwrap();
    let (f, skipped) = a.recv_reply(rid, WAIT).await.unwrap();
    assert_eq!(f.frame().body_as_error().map(|e| e.code()), Some(codes::OK), "{}", f.describe());
    let (n, _) = b.recv_until(|f| f.body_type() == Body::RecallNotify, WAIT).await.unwrap();
    assert_eq!(n.frame().body_as_recall_notify().unwrap().message_key(), ack.key);
    // The sender's devices are notified too (possibly before the reply arrived).
    let n = match skipped.into_iter().find(|f| f.body_type() == Body::RecallNotify) {
        Some(n) => n,
        None => a.recv_until(|f| f.body_type() == Body::RecallNotify, WAIT).await.unwrap().0,
    };
    assert_eq!(n.frame().body_as_recall_notify().unwrap().message_key(), ack.key);
    // Both timelines: the message is marked recalled (body gone) and an event follows.
    let pulled = pull_all(&mut b, 0).await;
    assert!(pulled[0].2 && pulled[0].1.is_empty(), "{pulled:?}");
    assert_eq!(pulled.len(), 2, "message + recall event: {pulled:?}");
    let r = t.api(APP, "/message/getMessage", json!({"fromId": "b", "messageKeys": [ack.key.to_string()]}));
    assert!(r.to_string().contains("\"recalled\":true"), "{r}");
    // Twice: already recalled.
    let rid = a.next_request_id();
    a.send(&message::recall(rid, ack.key, "b")).await.unwrap();
    let (f, _) = a.recv_reply(rid, WAIT).await.unwrap();
    assert_eq!(f.frame().body_as_error().map(|e| e.code()), Some(50005));
    // Outside the window (app 20000 allows 1 s).
    let mut a2 = t.device(Transport::Tcp, 20_000, "a", ClientType::Ios, "ap").await;
    let late = send_text(&mut a2, "r2", "b", "too late").await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let rid = a2.next_request_id();
    a2.send(&message::recall(rid, late.key, "b")).await.unwrap();
    let (f, _) = a2.recv_reply(rid, WAIT).await.unwrap();
    assert_eq!(f.frame().body_as_error().map(|e| e.code()), Some(50004));
    // An admin may still recall it over HTTP.
    let r = t.api(
        20_000,
        "/message/withdrawMessage",
        json!({"fromId": "a", "toId": "b", "messageKey": late.key.to_string(), "asAdmin": true}),
    );
    assert_eq!(r["code"], 200, "{r}");
}

async fn history_paging_and_privacy(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b", "c"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    for i in 0..7 {
        send_text(&mut a, &format!("h{i}"), "b", &format!("to b {i}")).await;
    }
    let other = send_text(&mut a, "hc", "c", "to c").await;
    let mut texts = Vec::new();
    let mut cursor = serde_json::Value::Null;
    loop {
        let mut body = json!({"fromId": "b", "toId": "a", "limit": 3});
        if !cursor.is_null() {
            body["beforeSequence"] = cursor.clone();
        }
        let r = t.api(APP, "/message/getHistoryMessage", body);
        assert_eq!(r["code"], 200, "{r}");
        for m in r["data"]["dataList"].as_array().unwrap() {
            texts.push(m.to_string());
        }
        cursor = r["data"]["nextBeforeSequence"].clone();
        if r["data"]["completed"] == true {
            break;
        }
    }
    assert_eq!(texts.len(), 7, "{texts:?}");
    assert!(texts[0].contains("to b 6") && texts[6].contains("to b 0"), "newest first: {texts:?}");
    // Jump by time: only messages sent strictly before the newest one's time.
    let newest: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
    let t_newest = newest["messageTime"].as_u64().unwrap();
    let r = t.api(
        APP,
        "/message/getHistoryMessage",
        json!({"fromId": "b", "toId": "a", "beforeTime": t_newest, "limit": 10}),
    );
    assert_eq!(r["code"], 200, "{r}");
    for m in r["data"]["dataList"].as_array().unwrap() {
        assert!(m["messageTime"].as_u64().unwrap() < t_newest, "{m}");
    }
    // b is not a party to a→c.
    let r = t.api(APP, "/message/getMessage", json!({"fromId": "b", "messageKeys": [other.key.to_string()]}));
    assert!(r.to_string().contains("50008"), "{r}");
    let r = t.api(APP, "/message/getHistoryMessage", json!({"fromId": "b", "toId": "c", "limit": 10}));
    assert_eq!(r["data"]["dataList"].as_array().map(|a| a.len()), Some(0), "{r}");
}

async fn http_send_and_offline(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b"]);
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Ios, "bp").await;
    let r = t.api(
        APP,
        "/message/sendMsg",
        json!({"fromId": "a", "toId": "b", "messageId": "http-1", "messageBody": "from a server"}),
    );
    assert_eq!(r["code"], 200, "{r}");
    let seq = r["data"]["messageSequence"].as_u64().unwrap();
    let again = t.api(
        APP,
        "/message/sendMsg",
        json!({"fromId": "a", "toId": "b", "messageId": "http-1", "messageBody": "from a server"}),
    );
    assert_eq!(again["data"]["messageKey"], r["data"]["messageKey"], "{again}");
    assert_eq!(again["data"]["messageSequence"].as_u64(), Some(seq));
    let (_, _, text, _) = next_push(&mut b).await;
    assert_eq!(text, "from a server");
    let off = t.api(APP, "/message/getOfflineMessage", json!({"fromId": "b", "lastSequence": 0, "maxLimit": 10}));
    assert_eq!(off["data"]["dataList"].as_array().unwrap().len(), 1, "{off}");
    assert_eq!(off["data"]["completed"], true);
    let missing =
        t.api(APP, "/message/sendMsg", json!({"fromId": "a", "toId": "ghost", "messageId": "x", "messageBody": "?"}));
    assert_eq!(missing["code"], 20001, "{missing}");
}

in_both_modes!(
    fan_out_to_every_device,
    offline_device_pulls_on_login,
    resend_is_deduplicated,
    recall_inside_and_outside_the_window,
    history_paging_and_privacy,
    http_send_and_offline,
);
