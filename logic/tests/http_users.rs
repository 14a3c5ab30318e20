//! The user calls of the HTTP management API, driven through the real router over a
//! real embedded store (no sockets: `tower::ServiceExt::oneshot`). Most cases go
//! through one helper, `check`, so a new case is one line.

mod support;

use std::sync::{Arc, OnceLock};

use axum::http::Method;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tern_logic::LogicConfig;
use tern_schema::client::{KickReason, SyncKind as WireKind};
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tern_schema::sig;
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

use support::{admin_query, far_future, user_query, Answer, APP, SECRET};

const MAX_BATCH: usize = 3;
const MAX_BODY: usize = 16 * 1024;

/// The process-wide recorder (a global can be installed once per test binary).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another test binary's recorder cannot interfere: each binary is a process.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

struct Harness(support::Harness);

impl std::ops::Deref for Harness {
    type Target = support::Harness;
    fn deref(&self) -> &support::Harness {
        &self.0
    }
}

/// One HTTP call.
struct Call {
    method: Method,
    uri: String,
    body: Vec<u8>,
}

impl Call {
    /// A call by the app's admin with a valid admin signature.
    fn admin(path: &str, body: Value) -> Self {
        Self::raw(path, &admin_query(APP), body.to_string().into_bytes())
    }

    fn raw(path: &str, query: &str, body: Vec<u8>) -> Self {
        let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        Self { method: Method::POST, uri, body }
    }

    fn get(path: &str) -> Self {
        Self { method: Method::GET, uri: path.to_string(), body: Vec::new() }
    }

    /// A login of `user` with its own signature.
    fn login(user: &str, body: Value) -> Self {
        Self::raw("/v1/user/login", &user_query(APP, user), body.to_string().into_bytes())
    }
}

impl Harness {
    fn new() -> Self {
        let mut config = LogicConfig::default();
        config.http.max_batch = MAX_BATCH;
        config.http.max_body_bytes = MAX_BODY;
        Self(support::Harness::new(config, vec![support::app_config(APP, json!({}))], Some(metrics_handle())))
    }

    /// Sends a call.
    async fn send(&self, call: Call) -> Answer {
        support::send(&self.router, call.method, &call.uri, call.body).await
    }

    /// Sends a call and checks the envelope: `code`, the HTTP status the code implies,
    /// and that `msg` contains `msg_part`. Returns `data`.
    async fn check(&self, call: Call, code: u32, msg_part: &str) -> Value {
        let what = call.uri.clone();
        self.send(call).await.check(&what, code, msg_part)
    }

    async fn ok(&self, call: Call) -> Value {
        self.check(call, 200, "success").await
    }

    async fn import(&self, users: Value) -> Value {
        self.ok(Call::admin("/v1/user/importUser", json!({ "userData": users }))).await
    }

    async fn sync(&self, user: &str, last: u64, limit: u64) -> Value {
        self.ok(Call::admin(
            "/v1/user/data/syncUserData",
            json!({"userId": user, "lastSequence": last, "maxLimit": limit}),
        ))
        .await
    }

    /// Registers a gateway link and an online session of `user`; returns the link's queue.
    fn online(&self, user: &str, device: &str) -> mpsc::Receiver<Vec<u8>> {
        self.0.online(&[(user, device)], 64)
    }
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------- envelope and auth

#[tokio::test]
async fn auth_failures_have_their_codes() {
    let h = Harness::new();
    let path = "/v1/user/data/getSingleUserInfo";
    let body = || br#"{"userId":"u1"}"#.to_vec();
    let good = sig::sign_admin(SECRET.as_bytes(), APP, "admin", far_future());
    let expired = sig::sign_admin(SECRET.as_bytes(), APP, "admin", far_future() - 7200);
    let wrong = sig::sign_admin(b"another-secret-xxxxxxx", APP, "admin", far_future());
    let user_sig = sig::sign(SECRET.as_bytes(), APP, "u1", far_future());
    // A login signature minted for the admin's identifier (as a business server signing
    // whatever id a client claims would) is not an admin credential.
    let login_sig_of_admin = sig::sign(SECRET.as_bytes(), APP, "admin", far_future());
    let cases: Vec<(String, u32, &str)> = vec![
        (format!("appId={APP}&identifier=admin"), 60000, "userSign"),
        (format!("appId={APP}&identifier=admin&userSign="), 60000, "userSign"),
        (format!("identifier=admin&userSign={good}"), 60001, "appId: missing"),
        (format!("appId=99&identifier=admin&userSign={good}"), 60001, "no app 99"),
        (format!("appId=abc&identifier=admin&userSign={good}"), 60001, "not an app id"),
        (format!("appId={APP}&userSign={good}"), 60002, "identifier"),
        (format!("appId={APP}&identifier=u1&userSign={user_sig}"), 60005, "not an admin"),
        (format!("appId={APP}&identifier=admin&userSign={wrong}"), 60003, "does not match"),
        (format!("appId={APP}&identifier=admin&userSign={expired}"), 60004, "expired"),
        (format!("appId={APP}&identifier=admin&userSign=short"), 60006, "encoding"),
        (format!("appId={APP}&identifier=admin&userSign={login_sig_of_admin}"), 60003, "not for this purpose"),
    ];
    for (query, code, msg) in cases {
        h.check(Call::raw(path, &query, body()), code, msg).await;
    }
    // appId may come from the body; given in both, they must agree (the original's
    // RequestBase.appId names the same app as the query).
    let q = format!("identifier=admin&userSign={good}");
    h.check(Call::raw(path, &q, format!(r#"{{"appId":{APP},"userId":"u1"}}"#).into_bytes()), 20001, "u1").await;
    let q = format!("appId={APP}&identifier=admin&userSign={good}");
    h.check(Call::raw(path, &q, format!(r#"{{"appId":"{APP}","userId":"u1"}}"#).into_bytes()), 20001, "u1").await;
    h.check(Call::raw(path, &q, br#"{"appId":99,"userId":"u1"}"#.to_vec()), 90001, "appId: 99 differs").await;
}

#[tokio::test]
async fn bad_bodies_and_routes_answer_the_envelope() {
    let h = Harness::new();
    let p = "/v1/user/data/getSingleUserInfo";
    h.check(Call::admin(p, json!({})), 90001, "userId: missing").await;
    h.check(Call::admin(p, json!({"userId": 5})), 90001, "userId: invalid type: integer `5`").await;
    h.check(Call::admin(p, json!({"userId": "a b"})), 90001, "userId: user id contains").await;
    h.check(Call::admin(p, json!({"userId": "u1", "usrId": "x"})), 90001, "usrId: unknown field").await;
    h.check(Call::admin(p, json!([1])), 90001, "body: expected a JSON object").await;
    let q = admin_query(APP);
    h.check(Call::raw(p, &q, b"{\"userId\": ".to_vec()), 90001, "body: invalid JSON").await;
    h.check(Call::raw(p, &q, vec![b' '; MAX_BODY + 1]), 90002, "larger than").await;
    h.check(Call::admin("/v1/user/nope", json!({})), 90004, "/v1/user/nope").await;
    h.check(Call::get(p), 90003, "GET").await;
    h.check(Call::admin("/v1/user/importUser", json!({})), 90001, "userData: missing").await;
    h.check(Call::admin("/v1/user/importUser", json!({"userData": {}})), 90001, "userData: expected an array").await;
}

// ---------------------------------------------------------------- import

#[tokio::test]
async fn import_is_per_item_and_idempotent() {
    let h = Harness::new();
    let data = h.import(json!([{"userId": "u1", "nickName": "One"}, {"userId": "u2"}])).await;
    assert_eq!(ids(&data["successId"]), ["u1", "u2"]);
    assert_eq!(data["errorId"], json!([]));

    let profile = h.ok(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "u2"}))).await;
    assert_eq!(profile["friendAllowType"], json!(1), "default friendAllowType");
    assert_eq!(profile["deleted"], json!(false));

    // Re-import: same data changes nothing (no seq bump); new data updates only what it names.
    h.import(json!([{"userId": "u1", "nickName": "One"}])).await;
    assert_eq!(h.sync("u1", 0, 10).await["maxSequence"], json!(1));
    h.import(json!([{"userId": "u1", "photo": "p.png"}])).await;
    let profile = h.ok(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "u1"}))).await;
    assert_eq!((profile["nickName"].as_str(), profile["photo"].as_str()), (Some("One"), Some("p.png")));
    assert_eq!(h.sync("u1", 0, 10).await["maxSequence"], json!(2));

    // One bad item never fails the others; errors name the field by its path.
    let long = "x".repeat(65);
    let data = h
        .import(json!([
            {"userId": "ok1", "userSex": 2},
            {"userId": "bad1", "nickName": long},
            {"userId": "bad2", "userSex": "m"},
        ]))
        .await;
    assert_eq!(ids(&data["successId"]), ["ok1"]);
    let errors = data["errorId"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["userId"], json!("bad1"));
    assert_eq!(errors[0]["code"], json!(90001));
    assert_eq!(errors[0]["msg"], json!("userData[1].nickName: longer than 64 characters"));
    assert_eq!(errors[1]["msg"].as_str().unwrap(), "userData[2].userSex: invalid type: string \"m\", expected u8");

    let data =
        h.import(json!([{"userId": "a b"}, {"userId": "ok2", "friendAllowType": 4}, {"nickName": "no id"}])).await;
    let msgs: Vec<&str> = data["errorId"].as_array().unwrap().iter().map(|e| e["msg"].as_str().unwrap()).collect();
    assert!(msgs[0].starts_with("userData[0].userId: user id contains"), "{msgs:?}");
    assert!(msgs[1].starts_with("userData[1].friendAllowType: must be 1"), "{msgs:?}");
    assert_eq!(msgs[2], "userData[2].userId: missing");

    let data = h.import(json!([{"userId": "d1"}, {"userId": "d1"}, 7])).await;
    assert_eq!(ids(&data["successId"]), ["d1"]);
    let msgs: Vec<&str> = data["errorId"].as_array().unwrap().iter().map(|e| e["msg"].as_str().unwrap()).collect();
    assert_eq!(
        msgs,
        ["userData[1].userId: duplicate of userData[0]", "userData[2]: expected an object, found a number"]
    );

    // An app admin's identifier is never a user: its login signature would double as an
    // admin credential (both have one format and key).
    let data = h.import(json!([{"userId": "admin"}, {"userId": "ok3"}])).await;
    assert_eq!(ids(&data["successId"]), ["ok3"]);
    assert_eq!(data["errorId"][0]["userId"], json!("admin"));
    assert_eq!(data["errorId"][0]["code"], json!(90001));
    assert_eq!(
        data["errorId"][0]["msg"],
        json!("userData[0].userId: is an admin identifier of this app; admins cannot be users")
    );

    let four: Vec<Value> = (0..=MAX_BATCH).map(|i| json!({"userId": format!("b{i}")})).collect();
    h.check(Call::admin("/v1/user/importUser", json!({"userData": four})), 20000, "userData: 4 items").await;
}

// ---------------------------------------------------------------- reads

#[tokio::test]
async fn get_user_info_filters_fields() {
    let h = Harness::new();
    h.import(json!([{"userId": "u1", "nickName": "N", "photo": "P", "extra": "E"}])).await;
    let p = "/v1/user/data/getUserInfo";
    let data = h.ok(Call::admin(p, json!({"userIds": ["u1", "ghost", "a b"], "fields": ["nickName"]}))).await;
    assert_eq!(data["userDataItem"], json!([{"userId": "u1", "nickName": "N"}]));
    let errors = data["errorId"].as_array().unwrap();
    assert_eq!((errors[0]["userId"].as_str(), errors[0]["code"].as_u64()), (Some("ghost"), Some(20001)));
    assert_eq!((errors[1]["userId"].as_str(), errors[1]["code"].as_u64()), (Some("a b"), Some(90001)));

    let all = h.ok(Call::admin(p, json!({"userIds": ["u1"]}))).await;
    let item = all["userDataItem"][0].as_object().unwrap();
    assert_eq!(item.len(), 15, "every field without a filter: {item:?}");
    h.check(
        Call::admin(p, json!({"userIds": ["u1"], "fields": ["nickName", "pwd"]})),
        90001,
        "fields[1]: unknown field `pwd`",
    )
    .await;
    h.check(Call::admin(p, json!({"userIds": ["a", "b", "c", "d"]})), 20000, "userIds: 4 items").await;
    h.check(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "ghost"})), 20001, "ghost").await;
}

// ---------------------------------------------------------------- modify + sync

#[tokio::test]
async fn modify_bumps_the_profile_seq_and_sync_pages_in_order() {
    let h = Harness::new();
    h.import(json!([{"userId": "u1", "nickName": "n0"}])).await;
    let mut link = h.online("u1", "phone");
    let m = "/v1/user/data/modifyUserInfo";
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        let data = h.ok(Call::admin(m, json!({"userId": "u1", "nickName": name}))).await;
        assert_eq!(data["sequence"], json!(i as u64 + 2));
        assert_eq!(data["changedFields"], json!(["nickName"]));
    }
    let data = h.ok(Call::admin(m, json!({"userId": "u1", "nickName": "n3", "location": "Oslo"}))).await;
    assert_eq!((data["sequence"].clone(), data["changedFields"].clone()), (json!(5), json!(["location"])));
    // Nothing changes: no write, no seq.
    let data = h.ok(Call::admin(m, json!({"userId": "u1", "location": "Oslo"}))).await;
    assert_eq!((data["sequence"].clone(), data["changedFields"].clone()), (json!(5), json!([])));

    // Every change notified the online device with a Profile sync-notify at its seq.
    let mut seen = Vec::new();
    while let Ok(f) = link.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let deliver = lf.body_as_deliver().expect("a deliver");
        let inner = deliver.frame().expect("frame").bytes();
        let cf = parse_client_framed(inner, 1 << 16).expect("client frame");
        let n = cf.body_as_sync_notify().expect("sync notify");
        assert_eq!(n.kind(), WireKind::Profile);
        seen.push(n.seq());
    }
    assert_eq!(seen, [2, 3, 4, 5]);

    // Paging: 2 at a time, in order, completed only on the last page.
    let page = h.sync("u1", 0, 2).await;
    assert_eq!(page["maxSequence"], json!(5));
    assert_eq!(page["completed"], json!(false));
    let first = page["dataList"].as_array().unwrap();
    assert_eq!(first[0]["sequence"], json!(1));
    assert_eq!(first[0]["userId"], json!("u1"));
    assert_eq!(first[0]["nickName"], json!("n0"), "a new user's first entry carries the whole profile");
    assert_eq!(first[0]["friendAllowType"], json!(1));
    assert_eq!(first[1], json!({"sequence": 2, "time": first[1]["time"], "userId": "u1", "nickName": "n1"}));
    let page = h.sync("u1", 2, 2).await;
    assert_eq!(page["completed"], json!(false));
    let seqs: Vec<u64> = page["dataList"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4]);
    let page = h.sync("u1", 4, 2).await;
    assert_eq!(page["completed"], json!(true));
    assert_eq!(page["dataList"][0]["location"], json!("Oslo"));
    let past = h.sync("u1", 99, 2).await;
    assert_eq!((past["dataList"].clone(), past["completed"].clone()), (json!([]), json!(true)));

    h.check(Call::admin(m, json!({"userId": "u1"})), 90001, "no profile field given").await;
    h.check(Call::admin(m, json!({"userId": "u1", "selfSignature": "s".repeat(257)})), 90001, "selfSignature: longer")
        .await;
    h.check(Call::admin(m, json!({"userId": "ghost", "nickName": "x"})), 20001, "ghost").await;
    h.check(Call::admin("/v1/user/data/syncUserData", json!({"userId": "ghost"})), 20001, "ghost").await;
    h.check(Call::admin("/v1/user/data/syncUserData", json!({"userId": "u1", "lastSeq": 1})), 90001, "lastSeq").await;
}

#[tokio::test]
async fn concurrent_modifies_lose_no_update() {
    let h = Arc::new(Harness::new());
    h.import(json!([{"userId": "u1"}])).await;
    let fields = ["nickName", "photo", "location", "selfSignature", "birthDay", "extra"];
    let tasks: Vec<_> = fields
        .iter()
        .map(|f| {
            let h = h.clone();
            let body = json!({"userId": "u1", *f: format!("v-{f}")});
            tokio::spawn(async move { h.ok(Call::admin("/v1/user/data/modifyUserInfo", body)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let p = h.ok(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "u1"}))).await;
    for f in fields {
        assert_eq!(p[f], json!(format!("v-{f}")), "{f} was lost");
    }
    assert_eq!(h.sync("u1", 0, 100).await["maxSequence"], json!(1 + fields.len()));
}

// ---------------------------------------------------------------- delete, login, online

#[tokio::test]
async fn delete_stops_login_but_keeps_data() {
    let h = Harness::new();
    h.import(json!([{"userId": "u1", "nickName": "Keep"}, {"userId": "u2"}])).await;
    let data = h.ok(Call::login("u1", json!({}))).await;
    assert_eq!(data["userId"], json!("u1"));
    assert_eq!(data["tcp"], json!(LogicConfig::default().advertise_tcp));
    assert_eq!(data["ws"], json!(LogicConfig::default().advertise_ws));
    h.check(Call::login("u1", json!({"userId": "u2"})), 60005, "may not log in as").await;
    h.check(Call::login("ghost", json!({})), 20001, "ghost").await;

    let mut link = h.online("u1", "phone");
    let data = h.ok(Call::admin("/v1/user/deleteUser", json!({"userIds": ["u1", "ghost", "u1"]}))).await;
    assert_eq!(ids(&data["successId"]), ["u1", "u1"]);
    assert_eq!(data["errorId"][0]["code"], json!(20001));

    // The online session was kicked with the reason "user deleted" and forgotten.
    let f = link.try_recv().expect("a close frame");
    let close = parse_link(&f[HEADER_LEN..]).unwrap().body_as_close().expect("close");
    let kick = parse_client_framed(close.frame().unwrap().bytes(), 1 << 16).unwrap();
    assert_eq!(kick.body_as_kick().unwrap().reason(), KickReason::UserDeleted);
    assert!(h.logic.sessions.devices(AppId(APP), &UserId::new("u1").unwrap()).is_empty());

    h.check(Call::login("u1", json!({})), 20002, "deleted").await;
    let profile = h.ok(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "u1"}))).await;
    assert_eq!((profile["nickName"].as_str(), profile["deleted"].as_bool()), (Some("Keep"), Some(true)));
    h.check(Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "u1", "nickName": "x"})), 20002, "deleted")
        .await;
    let data = h.import(json!([{"userId": "u1"}])).await;
    assert_eq!(data["errorId"][0]["code"], json!(20002), "a deleted id is not revived by import");
    let tomb = h.sync("u1", 1, 10).await;
    assert_eq!(tomb["dataList"][0]["deleted"], json!(true));
    // Deleting again succeeds (idempotent).
    let data = h.ok(Call::admin("/v1/user/deleteUser", json!({"userIds": ["u1"]}))).await;
    assert_eq!(ids(&data["successId"]), ["u1"]);
}

#[tokio::test]
async fn online_status_lists_devices() {
    let h = Harness::new();
    let _link = h.online("u1", "phone-1");
    let data = h.ok(Call::admin("/v1/user/queryOnlineStatus", json!({"userIds": ["u1", "nobody", "a b"]}))).await;
    assert_eq!(
        data["statusList"],
        json!([
            {"userId": "u1", "online": true, "devices": [{"clientType": 1, "deviceId": "phone-1", "since": 1234}]},
            {"userId": "nobody", "online": false, "devices": []},
        ])
    );
    assert_eq!(data["errorId"][0]["code"], json!(90001));
}

// ---------------------------------------------------------------- operations endpoints

#[tokio::test]
async fn operations_endpoints() {
    let h = Harness::new();
    let data = h.check(Call::get("/healthz"), 200, "success").await;
    assert_eq!(data, json!({"status": "ready", "sessionsOnline": 0}));

    let Answer { status, content_type: ctype, body } = h.send(Call::get("/openapi.json")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_slice(&body).expect("openapi parses");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    let v1 = [
        "/v1/user/importUser",
        "/v1/user/deleteUser",
        "/v1/user/login",
        "/v1/user/data/getUserInfo",
        "/v1/user/data/getSingleUserInfo",
        "/v1/user/data/modifyUserInfo",
        "/v1/user/data/syncUserData",
        "/v1/user/queryOnlineStatus",
    ];
    for p in v1 {
        assert!(paths.iter().any(|k| k.as_str() == p), "{p} missing from openapi.json");
        assert!(doc["paths"][p]["post"]["summary"].is_string(), "{p} has no summary");
    }

    let Answer { status, content_type: ctype, body } = h.send(Call::get("/docs")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let html = String::from_utf8(body).unwrap();
    for p in v1 {
        assert!(html.contains(p), "{p} missing from /docs");
    }
    assert!(html.contains("userData[3].nickName") && html.contains("60004"), "error codes are documented");
    assert!(!html.contains("<script"), "docs work offline");

    // A counted request, then the metrics text shows it.
    h.ok(Call::get("/healthz")).await;
    let Answer { status, content_type: ctype, body } = h.send(Call::get("/metrics")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("tern_http_requests_total"), "{text}");
    assert!(text.contains("path=\"/healthz\""), "{text}");
}

// ---------------------------------------------------------------- passwords and disabling

#[tokio::test]
async fn passwords_are_stored_hashed_and_never_answered() {
    let h = Harness::new();
    let data = h.import(json!([{"userId": "p1", "nickName": "P", "password": "hunter2"}, {"userId": "p2"}])).await;
    assert_eq!(ids(&data["successId"]), ["p1", "p2"]);
    let stored = |id: &'static str| {
        let store = h.store.clone();
        async move {
            store
                .get_users(AppId(APP), &[UserId::new(id).unwrap()])
                .await
                .unwrap()
                .pop()
                .flatten()
                .unwrap()
                .password_hash
        }
    };
    let first = stored("p1").await;
    assert!(first.starts_with("$argon2id$") && !first.contains("hunter2"), "{first}");
    assert!(tern_logic::password::verify("hunter2", &first));
    assert_eq!(stored("p2").await, "", "no password given, none stored");
    let seq = h.sync("p1", 0, 10).await["maxSequence"].clone();

    // A password alone is a change of the record only: no profile seq, no sync entry.
    let m =
        h.ok(Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "p1", "password": "correct horse"}))).await;
    assert_eq!(m["changedFields"], json!(["password"]), "{m}");
    assert_eq!(m["sequence"], seq);
    let second = stored("p1").await;
    assert!(
        tern_logic::password::verify("correct horse", &second) && !tern_logic::password::verify("hunter2", &second)
    );
    // With a profile field too, both change; re-import with a password replaces it.
    let m = h
        .ok(Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "p1", "nickName": "Q", "password": "x"})))
        .await;
    assert_eq!(m["changedFields"], json!(["nickName", "password"]), "{m}");
    h.import(json!([{"userId": "p1", "password": "y"}])).await;
    assert!(tern_logic::password::verify("y", &stored("p1").await));

    // Nothing answers it: profiles, the filtered view, the profile sync.
    for body in [
        h.ok(Call::admin("/v1/user/data/getSingleUserInfo", json!({"userId": "p1"}))).await,
        h.ok(Call::admin("/v1/user/data/getUserInfo", json!({"userIds": ["p1"]}))).await,
        h.sync("p1", 0, 10).await,
    ] {
        let text = body.to_string();
        assert!(!text.contains("assword") && !text.contains("argon2"), "{text}");
    }
    // Limits: 128 characters.
    h.check(
        Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "p1", "password": "x".repeat(129)})),
        90001,
        "password",
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_kicks_its_sessions() {
    let h = Harness::new();
    h.import(json!([{"userId": "d1"}, {"userId": "d2"}])).await;
    let mut link = h.online("d1", "phone");
    // Another change does not kick.
    h.ok(Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "d1", "nickName": "n"}))).await;
    h.ok(Call::admin("/v1/user/data/modifyUserInfo", json!({"userId": "d1", "forbiddenFlag": true}))).await;
    let mut kicked = None;
    while let Ok(f) = link.try_recv() {
        if let Some(close) = parse_link(&f[HEADER_LEN..]).unwrap().body_as_close() {
            let kick = parse_client_framed(close.frame().unwrap().bytes(), 1 << 16).unwrap();
            kicked = Some(kick.body_as_kick().unwrap().reason());
        }
    }
    assert_eq!(kicked, Some(KickReason::UserDisabled));
    assert!(h.logic.sessions.devices(AppId(APP), &UserId::new("d1").unwrap()).is_empty());
    h.check(Call::login("d1", json!({})), 50003, "disabled").await;

    // Disabling through a re-import kicks too.
    let mut link = h.online("d2", "pad");
    h.import(json!([{"userId": "d2", "forbiddenFlag": true}])).await;
    let reasons: Vec<KickReason> = std::iter::from_fn(|| link.try_recv().ok())
        .filter_map(|f| {
            let close = parse_link(&f[HEADER_LEN..]).unwrap().body_as_close()?;
            Some(parse_client_framed(close.frame().unwrap().bytes(), 1 << 16).unwrap().body_as_kick().unwrap().reason())
        })
        .collect();
    assert_eq!(reasons, [KickReason::UserDisabled]);
}
