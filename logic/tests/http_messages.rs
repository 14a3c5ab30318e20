//! The message calls of the HTTP management API, driven through the real router over a
//! real embedded store (no sockets: `tower::ServiceExt::oneshot`). Most cases go
//! through one helper, `check`, so a new case is one line.

mod support;

use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};
use tern_logic::LogicConfig;
use tern_schema::client::Body as FrameBody;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tokio::sync::mpsc;

use support::{admin_query, app_config, Answer, APP};

/// An app whose recall window is 1 s, for recalls outside the window.
const FAST_APP: u32 = 10_001;
const MAX_BATCH: usize = 4;
const MAX_BODY: usize = 64 * 1024;
const MAX_MESSAGE: usize = 1024;

struct Harness(support::Harness);

impl std::ops::Deref for Harness {
    type Target = support::Harness;
    fn deref(&self) -> &support::Harness {
        &self.0
    }
}

/// One admin call of `app`.
struct Call {
    uri: String,
    body: Vec<u8>,
}

impl Call {
    fn new(app: u32, path: &str, body: Value) -> Self {
        Self::raw(app, path, body.to_string().into_bytes())
    }

    fn raw(app: u32, path: &str, body: Vec<u8>) -> Self {
        Self { uri: format!("/v1/message/{path}?{}", admin_query(app)), body }
    }
}

impl Harness {
    /// A node with users `a`, `b`, `c` and a deleted `gone` in both apps.
    async fn new() -> Self {
        let mut config = LogicConfig::default();
        config.http.max_batch = MAX_BATCH;
        config.http.max_body_bytes = MAX_BODY;
        config.messages.max_body_bytes = MAX_MESSAGE;
        config.messages.max_pull = 50;
        let apps = vec![
            app_config(APP, json!({"recall_window_secs": 120})),
            app_config(FAST_APP, json!({"recall_window_secs": 1})),
        ];
        let h = Self(support::Harness::new(config, apps, None));
        for app in [APP, FAST_APP] {
            let users = json!({"userData": [{"userId": "a"}, {"userId": "b"}, {"userId": "c"}, {"userId": "gone"}]});
            let r = h.post(app, "/v1/user/importUser", users).await;
            assert_eq!(r["data"]["errorId"], json!([]), "{r}");
            h.post(app, "/v1/user/deleteUser", json!({"userIds": ["gone"]})).await;
        }
        h
    }

    async fn post(&self, app: u32, path: &str, body: Value) -> Value {
        let uri = format!("{path}?{}", admin_query(app));
        support::send(&self.router, Method::POST, &uri, body.to_string().into_bytes()).await.json(path)
    }

    async fn raw_send(&self, call: Call) -> Answer {
        support::send(&self.router, Method::POST, &call.uri, call.body).await
    }

    /// Sends a call and checks the envelope: `code`, the HTTP status the code implies,
    /// and that `msg` contains `msg_part`. Returns `data`.
    async fn check(&self, call: Call, code: u32, msg_part: &str) -> Value {
        let what = call.uri.split('?').next().unwrap_or_default().to_string();
        self.raw_send(call).await.check(&what, code, msg_part)
    }

    async fn ok(&self, app: u32, path: &str, body: Value) -> Value {
        self.check(Call::new(app, path, body), 200, "success").await
    }

    /// Sends a text from `from` to `to` in APP; answers `data`.
    async fn text(&self, from: &str, to: &str, id: &str, text: &str) -> Value {
        self.ok(APP, "sendMsg", json!({"fromId": from, "toId": to, "messageId": id, "messageBody": text})).await
    }

    async fn offline(&self, user: &str, last: u64, limit: u64) -> Value {
        self.ok(APP, "getOfflineMessage", json!({"fromId": user, "lastSequence": last, "maxLimit": limit})).await
    }

    /// Registers a gateway link and online sessions; returns the link's queue.
    fn online(&self, devices: &[(&str, &str)]) -> mpsc::Receiver<Vec<u8>> {
        self.0.online(devices, 64)
    }
}

/// Texts of a list of message items (first element of each body, "" if none).
fn texts(list: &Value) -> Vec<String> {
    let items = list.as_array().unwrap_or_else(|| panic!("not a list: {list}"));
    items.iter().map(|m| m["messageBody"][0]["text"].as_str().unwrap_or_default().to_string()).collect()
}

fn seqs(list: &Value) -> Vec<u64> {
    list.as_array().unwrap().iter().map(|m| m["messageSequence"].as_u64().unwrap()).collect()
}

/// The client-frame body types the link queue holds, with the conn slot each is for.
fn drain_pushes(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(u32, FrameBody)> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().expect("frame").bytes(), 1 << 16).expect("client frame");
        let slots: Vec<u32> = d.conns().map(|c| c.iter().map(|c| c.slot()).collect()).unwrap_or_default();
        for s in slots {
            out.push((s, cf.body_type()));
        }
    }
    out.sort_by_key(|(s, _)| *s);
    out
}

// ---------------------------------------------------------------- sendMsg

#[tokio::test]
async fn send_answers_the_envelope_pushes_every_device_and_dedups() {
    let h = Harness::new().await;
    let mut link = h.online(&[("a", "a-phone"), ("a", "a-web"), ("b", "b-phone")]);
    let first = h.text("a", "b", "m-1", "hello").await;
    let key = first["messageKey"].as_str().expect("messageKey is a string");
    assert!(key.parse::<u64>().is_ok(), "{first}");
    assert_eq!(first["messageSequence"], json!(1), "the sender's seq");
    assert!(first["messageTime"].as_u64().unwrap() > 1_700_000_000_000);
    // No origin connection: every device of both users got the push.
    assert_eq!(drain_pushes(&mut link), [(10, FrameBody::Push), (11, FrameBody::Push), (12, FrameBody::Push)]);

    // A resend with the same messageId answers the original and creates nothing.
    let again = h.text("a", "b", "m-1", "hello").await;
    assert_eq!(again, first);
    assert!(drain_pushes(&mut link).is_empty());
    let second = h.text("a", "b", "m-2", "again").await;
    assert_eq!(second["messageSequence"], json!(2));
    assert_ne!(second["messageKey"], first["messageKey"]);
    assert_eq!(seqs(&h.offline("b", 0, 10).await["dataList"]), [1, 2]);

    // Typed elements round-trip; custom bytes travel as base64.
    let body = json!([
        {"type": "text", "text": "see"},
        {"type": "custom", "data": "AAEC/w==", "text": "bytes"},
        {"type": "image", "url": "https://x/i.png", "extra": "{\"w\":1}"},
        {"type": "location", "text": "here", "extra": "{\"lat\":1}"},
    ]);
    let sent = h.ok(APP, "sendMsg", json!({"fromId": "a", "toId": "b", "messageId": "m-3", "messageBody": body})).await;
    let got = h.ok(APP, "getMessage", json!({"fromId": "a", "messageKeys": [sent["messageKey"]]})).await;
    assert_eq!(got["resultList"][0]["message"]["messageBody"], body);
    // A message to oneself is one timeline entry.
    assert_eq!(h.text("c", "c", "self", "note").await["messageSequence"], json!(1));
    assert_eq!(seqs(&h.offline("c", 0, 10).await["dataList"]), [1]);
}

#[tokio::test]
async fn send_refusals_name_the_field() {
    let h = Harness::new().await;
    let send = |body: Value| Call::new(APP, "sendMsg", body);
    let ok = json!({"fromId": "a", "toId": "b", "messageId": "x", "messageBody": "hi"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        send(b)
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        send(b)
    };
    for f in ["fromId", "toId", "messageId", "messageBody"] {
        h.check(without(f), 90001, &format!("{f}: missing")).await;
    }
    h.check(with("toId", json!("a b")), 90001, "toId: user id contains").await;
    h.check(with("fromId", json!(7)), 90001, "fromId: invalid type").await;
    h.check(with("msgBody", json!("x")), 90001, "msgBody: unknown field").await;
    h.check(with("messageId", json!("")), 50000, "messageId: must be 1..=64").await;
    h.check(with("messageId", json!("x".repeat(65))), 50000, "messageId: must be 1..=64").await;
    h.check(with("messageBody", json!(5)), 90001, "messageBody: expected a string or an array").await;
    h.check(with("messageBody", json!("")), 50000, "messageBody[0]: empty").await;
    h.check(with("messageBody", json!([])), 50000, "messageBody: a message needs at least one element").await;
    h.check(with("messageBody", json!([{"type": "gif"}])), 90001, "messageBody[0].type: unknown variant `gif`").await;
    h.check(with("messageBody", json!([{"text": "x"}])), 90001, "messageBody[0].type: missing").await;
    h.check(with("messageBody", json!([{"type": "text", "text": "a"}, {"type": "image"}])), 50000, "messageBody[1]")
        .await;
    h.check(with("messageBody", json!([{"type": "custom", "data": "!!"}])), 90001, "messageBody[0].data: not base64")
        .await;
    // Body size: the message limit (50001), then the HTTP body limit (90002).
    h.check(with("messageBody", json!("x".repeat(MAX_MESSAGE + 1))), 50001, "the limit is 1024").await;
    h.check(with("messageBody", json!("x".repeat(MAX_BODY))), 90002, "larger than").await;
    // Unknown and deleted users.
    h.check(with("toId", json!("ghost")), 20001, "toId").await;
    h.check(with("fromId", json!("ghost")), 20001, "fromId").await;
    h.check(with("toId", json!("gone")), 20002, "toId").await;
    // A muted sender (silentFlag) may not send; messages to a muted user still arrive.
    let r = h.post(APP, "/v1/user/data/modifyUserInfo", json!({"userId": "c", "silentFlag": true})).await;
    assert_eq!(r["code"], json!(200), "{r}");
    h.check(with("fromId", json!("c")), 50002, "muted").await;
    // Nothing of the above was written.
    assert_eq!(h.offline("b", 0, 10).await["maxSequence"], json!(0));
    assert_eq!(h.text("a", "c", "to-muted", "hi").await["messageSequence"], json!(1));
    h.post(APP, "/v1/user/data/modifyUserInfo", json!({"userId": "c", "silentFlag": false})).await;
    assert_eq!(h.text("c", "b", "unmuted", "hi").await["messageSequence"], json!(2), "c's second entry");
}

// ---------------------------------------------------------------- offline + history

#[tokio::test]
async fn offline_pages_in_seq_order_until_completed() {
    let h = Harness::new().await;
    for i in 0..5 {
        h.text("a", "b", &format!("m{i}"), &format!("t{i}")).await;
    }
    let page = h.offline("b", 0, 2).await;
    assert_eq!((page["maxSequence"].clone(), page["completed"].clone()), (json!(5), json!(false)));
    let item = &page["dataList"][0];
    let key = item["messageKey"].as_str().expect("messageKey is a string").to_string();
    assert_eq!(
        *item,
        json!({
            "messageKey": key, "messageId": "m0", "fromId": "a", "toId": "b",
            "messageBody": [{"type": "text", "text": "t0"}], "messageTime": item["messageTime"],
            "messageSequence": 1, "recalled": false, "entryType": "message",
            "clientTime": item["clientTime"], "messageRandom": 0, "badgeMode": 0, "messageLifeTime": 0,
        })
    );
    assert_eq!(texts(&page["dataList"]), ["t0", "t1"]);
    let page = h.offline("b", 2, 2).await;
    assert_eq!((seqs(&page["dataList"]), page["completed"].clone()), (vec![3, 4], json!(false)));
    let page = h.offline("b", 4, 2).await;
    assert_eq!((seqs(&page["dataList"]), page["completed"].clone()), (vec![5], json!(true)));
    let past = h.offline("b", 9, 2).await;
    assert_eq!((past["dataList"].clone(), past["completed"].clone()), (json!([]), json!(true)));
    // Default and capped limits; the sender's inbox holds its sends with its own seqs.
    let all = h.ok(APP, "getOfflineMessage", json!({"fromId": "a", "maxLimit": 0})).await;
    assert_eq!((seqs(&all["dataList"]), all["completed"].clone()), (vec![1, 2, 3, 4, 5], json!(true)));
    h.ok(APP, "getOfflineMessage", json!({"fromId": "a", "maxLimit": 1_000_000})).await;
    h.check(Call::new(APP, "getOfflineMessage", json!({"fromId": "ghost"})), 20001, "ghost").await;
    h.check(Call::new(APP, "getOfflineMessage", json!({"fromId": "a", "lastSeq": 1})), 90001, "lastSeq").await;
    h.check(Call::new(APP, "getOfflineMessage", json!({"fromId": "a", "maxLimit": -1})), 90001, "maxLimit").await;
}

#[tokio::test]
async fn history_pages_newest_first_with_a_cursor() {
    let h = Harness::new().await;
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        h.text(from, to, &format!("h{i}"), &format!("t{i}")).await;
    }
    h.text("a", "c", "other", "to c").await;
    let history = |before: Value| json!({"fromId": "b", "toId": "a", "limit": 2, "beforeSequence": before});
    let mut got = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let page = h.ok(APP, "getHistoryMessage", history(cursor)).await;
        got.extend(texts(&page["dataList"]));
        pages += 1;
        cursor = page["nextBeforeSequence"].clone();
        if page["completed"] == json!(true) {
            assert!(cursor.is_null(), "{page}");
            break;
        }
        assert!(cursor.is_u64(), "{page}");
    }
    assert_eq!(got, ["t4", "t3", "t2", "t1", "t0"]);
    assert_eq!(pages, 3);
    // a's view has the a→c message in its own conversation only; b and c share nothing.
    let ac = h.ok(APP, "getHistoryMessage", json!({"fromId": "a", "toId": "c"})).await;
    assert_eq!((texts(&ac["dataList"]), ac["completed"].clone()), (vec!["to c".to_string()], json!(true)));
    let bc = h.ok(APP, "getHistoryMessage", json!({"fromId": "b", "toId": "c", "beforeSequence": 0})).await;
    assert_eq!((bc["dataList"].clone(), bc["nextBeforeSequence"].clone()), (json!([]), Value::Null));
    let page = h.ok(APP, "getHistoryMessage", json!({"fromId": "b", "toId": "a", "beforeSequence": 3})).await;
    assert_eq!(seqs(&page["dataList"]), [2, 1], "strictly below beforeSequence, newest first");
    h.check(Call::new(APP, "getHistoryMessage", json!({"fromId": "b"})), 90001, "toId: missing").await;
    h.check(Call::new(APP, "getHistoryMessage", json!({"fromId": "b", "toId": "ghost"})), 20001, "ghost").await;
}

// ---------------------------------------------------------------- getMessage

#[tokio::test]
async fn get_message_answers_per_key_and_only_to_parties() {
    let h = Harness::new().await;
    let ab = h.text("a", "b", "1", "for b").await["messageKey"].as_str().unwrap().to_string();
    let ac = h.text("a", "c", "2", "for c").await["messageKey"].as_str().unwrap().to_string();
    let ac_number: u64 = ac.parse().unwrap();
    let data = h.ok(APP, "getMessage", json!({"fromId": "b", "messageKeys": [ab, ac_number, "x", "999"]})).await;
    let r = data["resultList"].as_array().unwrap();
    let codes: Vec<u64> = r.iter().map(|x| x["code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [200, 50008, 90001, 50007]);
    assert_eq!((r[0]["messageKey"].as_str(), r[0]["msg"].as_str()), (Some(ab.as_str()), Some("success")));
    assert_eq!(r[0]["message"]["messageBody"][0]["text"], json!("for b"));
    assert_eq!(r[0]["message"]["messageSequence"], json!(1), "b's own copy and seq");
    assert_eq!(r[1]["messageKey"], json!(ac), "a numeric key is echoed as a string");
    assert!(r[1].get("message").is_none(), "nothing of a→c leaks to b: {}", r[1]);
    assert!(r[2]["msg"].as_str().unwrap().starts_with("messageKeys[2]: "), "{}", r[2]);
    // The sender reads both, with its own seqs.
    let data = h.ok(APP, "getMessage", json!({"fromId": "a", "messageKeys": [ab, ac]})).await;
    let own: Vec<&Value> =
        data["resultList"].as_array().unwrap().iter().map(|x| &x["message"]["messageSequence"]).collect();
    assert_eq!(own, [&json!(1), &json!(2)]);

    let five = json!(["1", "2", "3", "4", "5"]);
    h.check(Call::new(APP, "getMessage", json!({"fromId": "a", "messageKeys": five})), 20000, "messageKeys: 5 items")
        .await;
    h.check(Call::new(APP, "getMessage", json!({"fromId": "ghost", "messageKeys": []})), 20001, "ghost").await;
    h.check(
        Call::new(APP, "getMessage", json!({"fromId": "a", "messageKeys": "1"})),
        90001,
        "messageKeys: expected an array",
    )
    .await;
}

// ---------------------------------------------------------------- withdrawMessage

#[tokio::test]
async fn withdraw_inside_the_window_marks_both_sides() {
    let h = Harness::new().await;
    let key = h.text("a", "b", "r", "oops").await["messageKey"].clone();
    let w = |body: Value| Call::new(APP, "withdrawMessage", body);
    h.check(w(json!({"fromId": "b", "toId": "a", "messageKey": key})), 50008, "only the sender").await;
    h.check(w(json!({"fromId": "a", "toId": "c", "messageKey": key})), 50008, "toId").await;
    h.check(w(json!({"fromId": "c", "toId": "a", "messageKey": key})), 50008, "not a party").await;
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": "12345"})), 50007, "no such message").await;
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": "k"})), 90001, "messageKey: ").await;
    h.check(w(json!({"fromId": "a", "toId": "b"})), 90001, "messageKey: missing").await;
    let data = h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": key})), 200, "success").await;
    assert_eq!(data, json!({}));
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": key})), 50005, "already recalled").await;

    for (user, peer) in [("a", "b"), ("b", "a")] {
        // The message is marked recalled, body gone, and a recall event follows it.
        let page = h.offline(user, 0, 10).await;
        let list = page["dataList"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{page}");
        assert_eq!((list[0]["recalled"].clone(), list[0]["messageBody"].clone()), (json!(true), json!([])));
        assert_eq!((list[1]["entryType"].clone(), list[1]["messageKey"].clone()), (json!("recall"), key.clone()));
        // History shows the recalled message, never the event.
        let hist = h.ok(APP, "getHistoryMessage", json!({"fromId": user, "toId": peer})).await;
        assert_eq!(seqs(&hist["dataList"]), [1], "{hist}");
        let got = h.ok(APP, "getMessage", json!({"fromId": user, "messageKeys": [key]})).await;
        assert!(got.to_string().contains("\"recalled\":true"), "{got}");
    }
}

#[tokio::test]
async fn withdraw_outside_the_window_needs_the_admin() {
    let h = Harness::new().await;
    let send = |id: &str| {
        Call::new(FAST_APP, "sendMsg", json!({"fromId": "a", "toId": "b", "messageId": id, "messageBody": "late"}))
    };
    let k1 = h.check(send("1"), 200, "success").await["messageKey"].clone();
    let k2 = h.check(send("2"), 200, "success").await["messageKey"].clone();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let w = |body: Value| Call::new(FAST_APP, "withdrawMessage", body);
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": k1, "asAdmin": false})), 50004, "recall window").await;
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": k1, "asAdmin": true})), 200, "success").await;
    // As admin, either party may be named as fromId.
    h.check(w(json!({"fromId": "b", "toId": "a", "messageKey": k2, "asAdmin": true})), 200, "success").await;
    h.check(w(json!({"fromId": "b", "toId": "a", "messageKey": k2, "asAdmin": true})), 50005, "already").await;
    h.check(w(json!({"fromId": "a", "toId": "b", "messageKey": k1, "asAdmin": "yes"})), 90001, "asAdmin").await;
}

// ---------------------------------------------------------------- docs

#[tokio::test]
async fn message_calls_are_documented() {
    let h = Harness::new().await;
    let doc = support::send(&h.router, Method::GET, "/openapi.json", Vec::new()).await.json("/openapi.json");
    for p in ["sendMsg", "getOfflineMessage", "getHistoryMessage", "getMessage", "withdrawMessage"] {
        let op = &doc["paths"][format!("/v1/message/{p}")]["post"];
        assert!(op["summary"].is_string(), "{p} undocumented");
        assert!(op["x-error-codes"].to_string().contains("60003"), "{p}");
    }
    let get = &doc["paths"]["/v1/message/getMessage"]["post"];
    assert!(get["x-item-error-codes"].to_string().contains("50008"));
    let table = doc["info"]["description"].as_str().unwrap();
    for code in ["50000", "50001", "50004", "50005", "50006", "50007", "50008"] {
        assert!(table.contains(&format!("| {code} |")), "{code} missing from the error table");
    }
}
