//! Callbacks to a business server (issue 14), against a real HTTP server started by
//! each test (axum on 127.0.0.1:0): before-send refusal, rewrite, timeouts failing open
//! and closed, the in-flight bound, after-send retries and drops (with the metric),
//! request signatures, relation and group events, and one slow business server not
//! slowing another app's sends.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use support::{app_config, Harness, SECRET};
use tern_logic::callbacks::sign;
use tern_logic::LogicConfig;

/// One request the business server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: HashMap<String, String>,
    body: Value,
    /// Whether `X-Tern-Signature` verified over `X-Tern-Timestamp` and the body, with a
    /// timestamp within a minute of now.
    signed: bool,
}

/// The business server: `/allow`, `/reject/{code}`, `/rewrite`, `/slow/{ms}`,
/// `/flaky/{n}` (HTTP 500 for the first `n` requests, then 200), `/down` (always 500),
/// `/garbage` (200, not JSON), `/events` (200). It records every request.
#[derive(Clone, Default)]
struct Biz {
    seen: Arc<Mutex<Vec<Seen>>>,
    flaky_count: Arc<Mutex<u32>>,
}

impl Biz {
    async fn start() -> (Self, String) {
        let biz = Biz::default();
        let app = Router::new().route("/{*rest}", post(handle)).with_state(biz.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (biz, base)
    }

    fn seen(&self, path_prefix: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path.starts_with(path_prefix)).cloned().collect()
    }

    async fn wait_for(&self, path_prefix: &str, n: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.seen(path_prefix);
            if s.len() >= n {
                return s;
            }
            assert!(Instant::now() < deadline, "only {} of {n} requests to {path_prefix}: {s:?}", s.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(biz): State<Biz>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let ts: u64 = header("x-tern-timestamp").parse().unwrap_or(0);
    let now = tern_logic::now_ms() / 1000;
    let signed = sign::verify(SECRET.as_bytes(), ts, &body, &header("x-tern-signature")) && now.abs_diff(ts) <= 60;
    let path = format!("/{rest}");
    biz.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed,
    });
    let mut parts = rest.split('/');
    match (parts.next().unwrap_or(""), parts.next()) {
        ("allow", _) | ("events", _) => (StatusCode::OK, json!({"code": 0}).to_string()),
        ("reject", Some(code)) => {
            (StatusCode::OK, json!({"code": code.parse::<i64>().unwrap(), "msg": "no swearing here"}).to_string())
        }
        ("rewrite", _) => (
            StatusCode::OK,
            json!({"code": 200, "msg": "ok", "data": {"messageBody": [{"type": "text", "text": "***"}]}}).to_string(),
        ),
        ("rewrite-too-big", _) => (
            StatusCode::OK,
            json!({"code": 0, "data": {"messageBody": [{"type": "text", "text": "x".repeat(20_000)}]}}).to_string(),
        ),
        ("slow", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            (StatusCode::OK, json!({"code": 0}).to_string())
        }
        ("flaky", Some(n)) => {
            let mut c = biz.flaky_count.lock().unwrap();
            *c += 1;
            if *c <= n.parse().unwrap() {
                (StatusCode::INTERNAL_SERVER_ERROR, "try later".into())
            } else {
                (StatusCode::OK, json!({"code": 0}).to_string())
            }
        }
        ("garbage", _) => (StatusCode::OK, "<html>".into()),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "down".into()),
    }
}

/// The process-wide Prometheus recorder (installed before any node is built, so the
/// series each node registers at start land in it).
fn recorder() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let r = PrometheusBuilder::new().build_recorder();
        let h = r.handle();
        metrics::set_global_recorder(r).expect("one recorder per test binary");
        h
    })
}

/// The value of one series of `/metrics` (0 when absent).
fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = recorder().render();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A node whose app `app` has `callbacks`, with users a, b, c imported.
async fn node(app: u32, callbacks: Value) -> Harness {
    recorder();
    let h = Harness::new(LogicConfig::default(), vec![app_config(app, json!({"callbacks": callbacks}))], None);
    let data: Vec<Value> = ["a", "b", "c"].iter().map(|u| json!({"userId": u, "nickName": u})).collect();
    h.check_in(app, "/user/importUser", json!({ "userData": data }), 200, "success").await;
    h
}

async fn send(h: &Harness, app: u32, from: &str, to: &str, id: &str, text: &str) -> Value {
    let body = json!({"fromId": from, "toId": to, "messageId": id, "messageBody": text});
    h.admin(app, "/message/sendMsg", &body).await.json("sendMsg")
}

/// The texts of `user`'s inbox.
async fn inbox(h: &Harness, app: u32, user: &str) -> Vec<String> {
    let d = h.check_in(app, "/message/getOfflineMessage", json!({"fromId": user}), 200, "success").await;
    d["dataList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageBody"][0]["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn before_send_refuses_with_the_apps_code_and_nothing_is_stored() {
    let (biz, base) = Biz::start().await;
    let app = 20_001;
    let h = node(app, json!({"before_send_url": format!("{base}/reject/120123")})).await;
    let r = h
        .admin(app, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "m1", "messageBody": "hi"}))
        .await;
    r.check("refused send", 120_123, "no swearing here");
    assert!(inbox(&h, app, "b").await.is_empty());
    // The request: the documented envelope and data, command in the query, signed.
    let seen = biz.seen("/reject");
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.signed, "{s:?}");
    assert_eq!(s.query.get("command").map(String::as_str), Some("message.send.before"));
    assert_eq!(s.query.get("appId").map(String::as_str), Some("20001"));
    assert_eq!(s.body["command"], json!("message.send.before"));
    assert_eq!(s.body["appId"], json!(app));
    assert!(s.body["eventId"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()), "{s:?}");
    let d = &s.body["data"];
    assert_eq!((d["fromId"].as_str(), d["toId"].as_str(), d["messageId"].as_str()), (Some("a"), Some("b"), Some("m1")));
    assert_eq!(d["messageBody"], json!([{"type": "text", "text": "hi"}]));
    assert_eq!(d["conversationType"], json!("single"));
    assert_eq!(metric("tern_callback_before_send_total", &[("app", "20001"), ("decision", "reject")]), 1.0);

    // A code outside the app range is answered as 50009 naming it.
    let (biz2, base2) = Biz::start().await;
    let app2 = 20_002;
    let h2 = node(app2, json!({"before_send_url": format!("{base2}/reject/80009")})).await;
    let r = h2
        .admin(app2, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "m1", "messageBody": "hi"}))
        .await;
    r.check("odd code", 50_009, "(code 80009): no swearing here");
    assert_eq!(biz2.seen("/").len(), 1);
    // An invalid message is refused by Tern itself without asking the business server.
    let r = h2
        .admin(app2, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "", "messageBody": "hi"}))
        .await;
    r.check("invalid", 50_000, "messageId");
    assert_eq!(biz2.seen("/").len(), 1);
}

#[tokio::test]
async fn before_send_may_rewrite_the_body_within_the_limits() {
    let (_biz, base) = Biz::start().await;
    let app = 20_003;
    let h = node(app, json!({"before_send_url": format!("{base}/rewrite")})).await;
    assert_eq!(send(&h, app, "a", "b", "m1", "a bad word").await["code"], json!(200));
    assert_eq!(inbox(&h, app, "b").await, vec!["***".to_string()]);
    assert_eq!(inbox(&h, app, "a").await, vec!["***".to_string()]);
    assert_eq!(metric("tern_callback_before_send_total", &[("app", "20003"), ("decision", "rewrite")]), 1.0);

    // A rewrite past the body limit is not a usable answer: the failure policy decides
    // (closed here), and nothing is stored.
    let (_biz, base) = Biz::start().await;
    let app = 20_004;
    let h = node(app, json!({"before_send_url": format!("{base}/rewrite-too-big"), "failure_policy": "closed"})).await;
    let r = h
        .admin(app, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "m1", "messageBody": "x"}))
        .await;
    r.check("oversized rewrite", 50_010, "rewritten messageBody");
    assert!(inbox(&h, app, "b").await.is_empty());
}

#[tokio::test]
async fn timeouts_fail_open_or_closed_per_app() {
    let (_biz, base) = Biz::start().await;
    let open = 20_005;
    let h = node(open, json!({"before_send_url": format!("{base}/slow/2000"), "timeout_ms": 200})).await;
    let t0 = Instant::now();
    assert_eq!(send(&h, open, "a", "b", "m1", "hi").await["code"], json!(200));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(inbox(&h, open, "b").await, vec!["hi".to_string()]);
    assert_eq!(metric("tern_callback_before_send_total", &[("app", "20005"), ("decision", "fail_open")]), 1.0);
    assert_eq!(
        metric("tern_callback_requests_total", &[("app", "20005"), ("event", "before_send"), ("result", "timeout")]),
        1.0
    );

    let closed = 20_006;
    let h = node(
        closed,
        json!({"before_send_url": format!("{base}/slow/2000"), "timeout_ms": 200, "failure_policy": "closed"}),
    )
    .await;
    let r = h
        .admin(closed, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "m1", "messageBody": "hi"}))
        .await;
    r.check("fail closed", 50_010, "no answer within 200 ms");
    assert!(inbox(&h, closed, "b").await.is_empty());
    assert_eq!(metric("tern_callback_before_send_total", &[("app", "20006"), ("decision", "fail_closed")]), 1.0);

    // A 200 that is not the documented JSON is a failure too, and so is a refused
    // connection.
    let garbage = 20_007;
    let h = node(garbage, json!({"before_send_url": format!("{base}/garbage"), "failure_policy": "closed"})).await;
    let r = h
        .admin(
            garbage,
            "/message/sendMsg",
            &json!({"fromId": "a", "toId": "b", "messageId": "m1", "messageBody": "hi"}),
        )
        .await;
    r.check("garbage", 50_010, "documented JSON");
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = 20_008;
    let h = node(refused, json!({"before_send_url": format!("http://{nobody}/x")})).await;
    assert_eq!(send(&h, refused, "a", "b", "m1", "hi").await["code"], json!(200));
    assert_eq!(
        metric("tern_callback_requests_total", &[("app", "20008"), ("event", "before_send"), ("result", "error")]),
        1.0
    );
}

#[tokio::test]
async fn past_the_in_flight_bound_the_policy_answers_at_once() {
    let (_biz, base) = Biz::start().await;
    let app = 20_009;
    let h = Arc::new(
        node(
            app,
            json!({"before_send_url": format!("{base}/slow/3000"), "timeout_ms": 5000, "max_in_flight": 2,
                "failure_policy": "closed"}),
        )
        .await,
    );
    // Two sends hold the two slots for 3 s...
    let mut held = Vec::new();
    for i in 0..2 {
        let h = h.clone();
        held.push(tokio::spawn(async move { send(&h, app, "a", "b", &format!("held{i}"), "hi").await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a third is refused fast, without waiting for the business server.
    let t0 = Instant::now();
    let r = h
        .admin(app, "/message/sendMsg", &json!({"fromId": "a", "toId": "b", "messageId": "m3", "messageBody": "hi"}))
        .await;
    assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());
    r.check("overloaded", 50_010, "too many requests in flight");
    for t in held {
        assert_eq!(t.await.unwrap()["code"], json!(200));
    }
    assert_eq!(
        metric("tern_callback_requests_total", &[("app", "20009"), ("event", "before_send"), ("result", "overloaded")]),
        1.0
    );
}

#[tokio::test]
async fn after_send_is_retried_until_it_succeeds() {
    let (biz, base) = Biz::start().await;
    let app = 20_010;
    let h = node(app, json!({"after_send_url": format!("{base}/flaky/2"), "retry_backoff_ms": 20})).await;
    let t0 = Instant::now();
    let r = send(&h, app, "a", "b", "m1", "hello").await;
    assert_eq!(r["code"], json!(200));
    // The send did not wait for the event.
    assert!(t0.elapsed() < Duration::from_millis(1000));
    let seen = biz.wait_for("/flaky", 3).await;
    // Three attempts of the same event: the same eventId, signed each time.
    let ids: Vec<&Value> = seen.iter().map(|s| &s.body["eventId"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(seen.iter().all(|s| s.signed));
    let d = &seen[2].body["data"];
    assert_eq!(seen[2].body["command"], json!("message.send.after"));
    assert_eq!(d["messageKey"], r["data"]["messageKey"]);
    assert_eq!(d["messageBody"], json!([{"type": "text", "text": "hello"}]));
    assert_eq!((d["fromId"].as_str(), d["toId"].as_str()), (Some("a"), Some("b")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(biz.seen("/flaky").len(), 3, "no attempt after the success");
    assert_eq!(metric("tern_callback_retries_total", &[("app", "20010"), ("event", "after_send")]), 2.0);
    assert_eq!(
        metric("tern_callback_requests_total", &[("app", "20010"), ("event", "after_send"), ("result", "ok")]),
        1.0
    );
    assert_eq!(metric("tern_callback_dropped_total", &[("app", "20010"), ("reason", "retries_exhausted")]), 0.0);
}

#[tokio::test]
async fn after_events_are_dropped_past_their_bounds_and_counted() {
    let (biz, base) = Biz::start().await;
    let app = 20_011;
    let h =
        node(app, json!({"after_send_url": format!("{base}/down"), "max_attempts": 3, "retry_backoff_ms": 10})).await;
    // Registered at zero before anything happened.
    assert!(recorder().render().contains("tern_callback_dropped_total{app=\"20011\",reason=\"retries_exhausted\"} 0"));
    assert_eq!(send(&h, app, "a", "b", "m1", "hi").await["code"], json!(200));
    biz.wait_for("/down", 3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric("tern_callback_dropped_total", &[("app", "20011"), ("reason", "retries_exhausted")]) < 1.0 {
        assert!(Instant::now() < deadline, "never counted the drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(biz.seen("/down").len(), 3, "exactly max_attempts attempts");

    // A full queue drops new events at once (one delivery at a time, each hanging for
    // 3 s; a queue of 2): the sends are all accepted without waiting for them.
    let (_biz2, base2) = Biz::start().await;
    let app2 = 20_012;
    let h2 = node(
        app2,
        json!({"after_send_url": format!("{base2}/slow/3000"), "queue_capacity": 2, "after_in_flight": 1,
            "timeout_ms": 4000}),
    )
    .await;
    let t0 = Instant::now();
    for i in 0..8 {
        assert_eq!(send(&h2, app2, "a", "b", &format!("m{i}"), "hi").await["code"], json!(200));
    }
    assert!(t0.elapsed() < Duration::from_millis(2500), "sends waited for the queue: {:?}", t0.elapsed());
    let dropped = metric("tern_callback_dropped_total", &[("app", "20012"), ("reason", "queue_full")]);
    // 8 events: one in delivery, two queued (the dispatcher may hold one more), the rest dropped.
    assert!((4.0..=5.0).contains(&dropped), "{dropped}");
    assert_eq!(inbox(&h2, app2, "b").await.len(), 8);
}

#[tokio::test]
async fn relation_and_group_changes_are_reported() {
    let (biz, base) = Biz::start().await;
    let app = 20_013;
    let h = node(
        app,
        json!({"friendship_url": format!("{base}/events"), "group_url": format!("{base}/events"),
            "after_send_url": format!("{base}/events"), "before_send_url": format!("{base}/allow")}),
    )
    .await;
    h.check_in(
        app,
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "b", "remark": "Bee"}}),
        200,
        "success",
    )
    .await;
    let ev = biz.wait_for("/events", 1).await;
    assert_eq!(ev[0].body["command"], json!("friendship.change.after"));
    let changes = ev[0].body["data"]["changes"].as_array().unwrap().clone();
    assert!(
        changes.iter().any(|c| c["userId"] == json!("a")
            && c["kind"] == json!("friend")
            && c["record"]["toId"] == json!("b")
            && c["record"]["remark"] == json!("Bee")),
        "{changes:?}"
    );
    assert!(changes.iter().all(|c| c["sequence"].as_u64().is_some_and(|s| s > 0)), "{changes:?}");

    h.check_in(
        app,
        "/group/createGroup",
        json!({"groupId": "g1", "groupType": 2, "groupName": "one", "ownerId": "a", "memberList": [{"memberId": "b"}]}),
        200,
        "success",
    )
    .await;
    let ev = biz.wait_for("/events", 2).await;
    let g = ev.iter().find(|s| s.body["command"] == json!("group.change.after")).expect("group event");
    assert_eq!(g.body["data"]["groupId"], json!("g1"));
    assert_eq!(g.body["data"]["group"]["group_name"], json!("one"));
    let members: Vec<&str> =
        g.body["data"]["membersPut"].as_array().unwrap().iter().map(|m| m["member_id"].as_str().unwrap()).collect();
    assert!(members.contains(&"a") && members.contains(&"b"), "{members:?}");

    // Group messages go through before-send (asked as a group message) and after-send.
    let body = json!({"groupId": "g1", "fromId": "b", "messageId": "gm1", "messageBody": "to all"});
    h.check_in(app, "/group/sendMessage", body, 200, "success").await;
    let asked = biz.wait_for("/allow", 1).await;
    assert_eq!(asked[0].body["command"], json!("group.message.send.before"));
    assert_eq!(asked[0].body["data"]["toId"], json!("g1"));
    let ev = biz.wait_for("/events", 3).await;
    let m = ev.iter().find(|s| s.body["command"] == json!("group.message.send.after")).expect("group after-send");
    assert_eq!(m.body["data"]["conversationType"], json!("group"));
    assert_eq!(m.body["data"]["messageBody"], json!([{"type": "text", "text": "to all"}]));
    assert!(ev.iter().all(|s| s.signed));
}

#[tokio::test]
async fn a_group_send_refused_by_the_app_is_not_stored() {
    let (_biz, base) = Biz::start().await;
    let app = 20_014;
    let h = node(app, json!({"before_send_url": format!("{base}/reject/120500")})).await;
    h.check_in(app, "/group/createGroup", json!({"groupId": "g1", "groupType": 2, "ownerId": "a"}), 200, "success")
        .await;
    let body = json!({"groupId": "g1", "fromId": "a", "messageId": "gm1", "messageBody": "to all"});
    h.check_in(app, "/group/sendMessage", body, 120_500, "no swearing here").await;
    let d = h.check_in(app, "/group/pullMessage", json!({"groupId": "g1", "memberId": "a"}), 200, "success").await;
    assert_eq!(d["dataList"], json!([]), "{d}");
}

#[tokio::test]
async fn a_slow_business_server_does_not_slow_another_apps_sends() {
    let (_biz, base) = Biz::start().await;
    let (slow, fast) = (20_015, 20_016);
    recorder();
    let h = Arc::new(Harness::new(
        LogicConfig::default(),
        vec![
            app_config(
                slow,
                json!({"callbacks": {"before_send_url": format!("{base}/slow/3000"), "timeout_ms": 5000}}),
            ),
            app_config(fast, json!({"callbacks": {"before_send_url": format!("{base}/allow")}})),
        ],
        None,
    ));
    for app in [slow, fast] {
        let data: Vec<Value> = ["a", "b"].iter().map(|u| json!({"userId": u, "nickName": u})).collect();
        h.check_in(app, "/user/importUser", json!({ "userData": data }), 200, "success").await;
    }
    let mut waiting = Vec::new();
    for i in 0..50 {
        let h = h.clone();
        waiting.push(tokio::spawn(async move { send(&h, slow, "a", "b", &format!("s{i}"), "slow").await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t0 = Instant::now();
        assert_eq!(send(&h, fast, "a", "b", &format!("f{i}"), "fast").await["code"], json!(200));
        worst = worst.max(t0.elapsed());
    }
    assert!(worst < Duration::from_millis(1000), "a fast app's send took {worst:?} behind a slow app");
    // The slow app's sends were all still waiting for their business server meanwhile.
    assert!(waiting.iter().all(|t| !t.is_finished()));
    for t in waiting {
        assert_eq!(t.await.unwrap()["code"], json!(200));
    }
    assert_eq!(inbox(&h, fast, "b").await.len(), 20);
}
