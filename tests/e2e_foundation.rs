//! End-to-end tests of the foundation: users over HTTP, login over TCP and WebSocket,
//! signature and deadline refusals, multi-device policies, heartbeats, profile sync
//! notifications and user deletion — against the real `tern` binary, both as one process
//! and as `tern logic` + `tern gateway`.

mod common;

use std::time::Duration;

use common::{sign, Mode, Options, Tern};
use serde_json::json;
use tern_loadtest::client::{Client, ClientError, LoginOutcome, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, KickReason, SyncKind};
use tern_schema::{codes, encode};

const APP: u32 = 10_000;
const QUIET: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(5);

/// Waits for the server to close the connection; returns the frames received first.
async fn expect_closed(c: &mut Client) -> Vec<OwnedFrame> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, c.recv()).await {
            Ok(Ok(f)) => frames.push(f),
            Ok(Err(ClientError::Closed { .. })) | Ok(Err(ClientError::Io(_))) => return frames,
            Ok(Err(e)) => panic!("unexpected error while waiting for close: {e}"),
            Err(_) => {
                panic!("connection not closed; got {:?}", frames.iter().map(|f| f.describe()).collect::<Vec<_>>())
            }
        }
    }
}

async fn expect_kicked(c: &mut Client, reason: KickReason) {
    let frames = expect_closed(c).await;
    let kick = frames.iter().find_map(|f| f.frame().body_as_kick().map(|k| k.reason()));
    assert_eq!(kick, Some(reason), "frames: {:?}", frames.iter().map(|f| f.describe()).collect::<Vec<_>>());
}

async fn expect_error_then_close(c: &mut Client, code: u32) {
    let frames = expect_closed(c).await;
    let got = frames.iter().find_map(|f| f.frame().body_as_error().map(|e| e.code()));
    assert_eq!(got, Some(code), "frames: {:?}", frames.iter().map(|f| f.describe()).collect::<Vec<_>>());
}

/// Asserts the connection stays open and quiet for a moment.
async fn expect_alive(c: &mut Client) {
    match c.recv_timeout(QUIET).await {
        Ok(None) => {}
        other => panic!("expected a quiet open connection, got {other:?}"),
    }
    let req = c.next_request_id();
    c.send(&encode::ping(req, 1)).await.expect("ping");
    let (pong, _) = c.recv_reply(req, WAIT).await.expect("pong");
    assert_eq!(pong.body_type(), Body::Pong);
}

async fn import_and_login_over_tcp_and_ws(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["alice"]);
    let (mut phone, outcome) =
        t.login(Transport::Tcp, APP, "alice", &sign(APP, "alice", 60), ClientType::Ios, "p1").await;
    let LoginOutcome::Ok(ack) = outcome else { panic!("{outcome:?}") };
    assert!(ack.heartbeat_timeout_ms > 0);
    assert!(ack.max_seqs.iter().any(|(k, _)| *k == SyncKind::Message), "{:?}", ack.max_seqs);
    let mut web = t.device(Transport::Ws, APP, "alice", ClientType::Web, "w1").await;
    let status = t.wait_online(APP, "alice", 2);
    assert_eq!(status["online"], true, "{status}");
    let mut kinds: Vec<i64> =
        status["devices"].as_array().unwrap().iter().map(|d| d["clientType"].as_i64().unwrap()).collect();
    kinds.sort();
    // The original system's clientType numbers: 1 web, 2 ios.
    assert_eq!(kinds, vec![1, 2], "{status}");
    expect_alive(&mut phone).await;
    expect_alive(&mut web).await;
}

async fn bad_signatures_and_unknown_users_are_refused(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["alice"]);
    let wrong = tern_schema::sig::sign(b"not-the-secret-at-all", APP, "alice", common::now_secs() + 60);
    let expired = tern_schema::sig::sign(common::SECRET.as_bytes(), APP, "alice", common::now_secs() - 1);
    for (transport, user, app, signature, code) in [
        (Transport::Tcp, "alice", APP, wrong.clone(), codes::SIGN_WRONG),
        (Transport::Ws, "alice", APP, wrong, codes::SIGN_WRONG),
        (Transport::Tcp, "alice", APP, expired.clone(), codes::SIGN_EXPIRED),
        (Transport::Ws, "alice", APP, expired, codes::SIGN_EXPIRED),
        (Transport::Tcp, "alice", APP, "garbage".to_string(), codes::SIGN_MALFORMED),
        (Transport::Tcp, "nobody", APP, sign(APP, "nobody", 60), codes::USER_NOT_FOUND),
        (Transport::Tcp, "alice", 4242, sign(4242, "alice", 60), codes::SIGN_BAD_APP),
    ] {
        let (mut c, outcome) = t.login(transport, app, user, &signature, ClientType::Ios, "p1").await;
        match outcome {
            LoginOutcome::Rejected { code: got, .. } => assert_eq!(got, code, "{transport:?} {user} {app}"),
            other => panic!("expected rejection {code}, got {other:?}"),
        }
        expect_closed(&mut c).await;
    }
}

/// A user named like an app admin holds a signature that works as an admin credential:
/// one imported before admins were refused as users (here: before `boss` became an admin)
/// must not log in.
async fn admin_identifiers_cannot_log_in(mode: Mode) {
    let app = |admins: &str| {
        format!("[[apps]]\nid = 10009\nsecret = \"{}\"\nadmins = [{admins}]\nlogin_model = 4\n", common::SECRET)
    };
    let t = Tern::start_with(mode, Options::default().with_apps(app("\"admin\"")));
    t.import(10_009, &["boss"]);
    let (_, dir) = t.terminate();
    let t = Tern::start_in(mode, Options::default().with_apps(app("\"admin\", \"boss\"")), dir);
    let (mut c, outcome) =
        t.login(Transport::Tcp, 10_009, "boss", &sign(10_009, "boss", 60), ClientType::Ios, "p").await;
    match outcome {
        LoginOutcome::Rejected { code, .. } => assert_eq!(code, codes::INVALID_FIELD),
        other => panic!("an admin identifier logged in: {other:?}"),
    }
    expect_closed(&mut c).await;
}

async fn login_deadline_and_first_frame_rules(mode: Mode) {
    let t = Tern::start_with(mode, Options { login_timeout_ms: 500, ..Options::default() });
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut silent = Client::connect(transport, t.addr(transport)).await.unwrap();
        expect_error_then_close(&mut silent, codes::LOGIN_TIMEOUT).await;
        let mut rude = Client::connect(transport, t.addr(transport)).await.unwrap();
        rude.send(&encode::ping(1, 1)).await.unwrap();
        expect_error_then_close(&mut rude, codes::LOGIN_REQUIRED).await;
    }
}

/// Logs `device` in and returns the client.
async fn dev(t: &Tern, app: u32, ct: ClientType, device: &str) -> Client {
    t.device(Transport::Tcp, app, "u", ct, device).await
}

async fn login_models_kick_exactly_the_replaced_sessions(mode: Mode) {
    let t = Tern::start(mode);
    for app in [10_000, 10_001, 10_002, 10_003] {
        t.import(app, &["u"]);
    }
    // loginModel 1: one device in all.
    let mut phone = dev(&t, 10_001, ClientType::Ios, "p").await;
    let mut web = dev(&t, 10_001, ClientType::Web, "w").await;
    expect_kicked(&mut phone, KickReason::ReplacedByNewLogin).await;
    expect_alive(&mut web).await;

    // loginModel 2: one app-or-desktop plus web.
    let mut ios = dev(&t, 10_002, ClientType::Ios, "p").await;
    let mut web = dev(&t, 10_002, ClientType::Web, "w").await;
    expect_alive(&mut ios).await;
    let mut mac = dev(&t, 10_002, ClientType::Mac, "m").await;
    expect_kicked(&mut ios, KickReason::ReplacedByNewLogin).await;
    expect_alive(&mut web).await;
    let mut web2 = dev(&t, 10_002, ClientType::Web, "w2").await;
    expect_kicked(&mut web, KickReason::ReplacedByNewLogin).await;
    expect_alive(&mut mac).await;
    expect_alive(&mut web2).await;

    // loginModel 3: one phone, one desktop, one web.
    let mut ios = dev(&t, 10_003, ClientType::Ios, "p").await;
    let mut mac = dev(&t, 10_003, ClientType::Mac, "m").await;
    let mut web = dev(&t, 10_003, ClientType::Web, "w").await;
    let mut android = dev(&t, 10_003, ClientType::Android, "a").await;
    expect_kicked(&mut ios, KickReason::ReplacedByNewLogin).await;
    for c in [&mut mac, &mut web, &mut android] {
        expect_alive(c).await;
    }
    let mut linux = dev(&t, 10_003, ClientType::Linux, "l").await;
    expect_kicked(&mut mac, KickReason::ReplacedByNewLogin).await;
    expect_alive(&mut linux).await;

    // loginModel 4: no limit, but the same device replaces itself.
    let mut p1 = dev(&t, 10_000, ClientType::Ios, "p1").await;
    let mut p2 = dev(&t, 10_000, ClientType::Ios, "p2").await;
    expect_alive(&mut p1).await;
    let mut p1_again = dev(&t, 10_000, ClientType::Ios, "p1").await;
    expect_kicked(&mut p1, KickReason::ReplacedByNewLogin).await;
    expect_alive(&mut p2).await;
    expect_alive(&mut p1_again).await;
    assert_eq!(t.wait_online(10_000, "u", 2)["online"], true);
}

async fn silent_connection_is_dropped_and_goes_offline(mode: Mode) {
    let t = Tern::start_with(mode, Options { heartbeat_timeout_ms: 1_000, ..Options::default() });
    t.import(APP, &["alice"]);
    let mut silent = t.device(Transport::Tcp, APP, "alice", ClientType::Ios, "silent").await;
    let mut lively = t.device(Transport::Ws, APP, "alice", ClientType::Web, "lively").await;
    let pinger = tokio::spawn(async move {
        for i in 0..8 {
            lively.send(&encode::ping(100 + i, 0)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        lively
    });
    let frames = expect_closed(&mut silent).await;
    assert!(
        frames.iter().any(|f| f.frame().body_as_kick().is_some_and(|k| k.reason() == KickReason::HeartbeatTimeout)),
        "{:?}",
        frames.iter().map(|f| f.describe()).collect::<Vec<_>>()
    );
    let status = t.wait_online(APP, "alice", 1);
    assert_eq!(status["devices"][0]["deviceId"], "lively", "{status}");
    let mut lively = pinger.await.unwrap();
    // Drain the pongs its pings earned, then check it is still served. Draining and the
    // quiet check take about as long as the 1 s heartbeat timeout, so one more ping
    // first keeps the device within it (as a real client's heartbeat would).
    lively.send(&encode::ping(200, 0)).await.unwrap();
    while let Ok(Some(f)) = lively.recv_timeout(Duration::from_millis(300)).await {
        assert_eq!(f.body_type(), Body::Pong, "{}", f.describe());
    }
    expect_alive(&mut lively).await;
    drop(lively);
    let status = t.wait_online(APP, "alice", 0);
    assert_eq!(status["online"], false, "{status}");
}

async fn profile_change_reaches_devices_and_sync(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["alice"]);
    let mut phone = t.device(Transport::Tcp, APP, "alice", ClientType::Ios, "p").await;
    let mut web = t.device(Transport::Ws, APP, "alice", ClientType::Web, "w").await;
    let r = t.api(APP, "/user/data/modifyUserInfo", json!({"userId": "alice", "nickName": "Alice A."}));
    assert_eq!(r["code"], 200, "{r}");
    let mut seqs = Vec::new();
    for c in [&mut phone, &mut web] {
        let (f, _) = c.recv_until(|f| f.body_type() == Body::SyncNotify, WAIT).await.expect("sync notify");
        let n = f.frame().body_as_sync_notify().unwrap();
        assert_eq!(n.kind(), SyncKind::Profile);
        seqs.push(n.seq());
    }
    assert_eq!(seqs[0], seqs[1]);
    let sync = t.api(APP, "/user/data/syncUserData", json!({"userId": "alice", "lastSequence": 0, "maxLimit": 10}));
    assert_eq!(sync["code"], 200, "{sync}");
    assert_eq!(sync["data"]["maxSequence"].as_u64(), Some(seqs[0]), "{sync}");
    assert_eq!(sync["data"]["completed"], true, "{sync}");
    // The import wrote the first profile entry; the change is the newest one.
    let items = sync["data"]["dataList"].as_array().unwrap();
    assert_eq!(items.last().unwrap()["sequence"].as_u64(), Some(seqs[0]), "{sync}");
    assert_eq!(items.last().unwrap()["nickName"], "Alice A.", "{sync}");
    let newer =
        t.api(APP, "/user/data/syncUserData", json!({"userId": "alice", "lastSequence": seqs[0], "maxLimit": 10}));
    assert_eq!(newer["data"]["dataList"].as_array().map(|a| a.len()), Some(0), "{newer}");
    let info = t.api(APP, "/user/data/getSingleUserInfo", json!({"userId": "alice"}));
    assert_eq!(info["data"]["nickName"], "Alice A.", "{info}");
    // A new login reports the profile seq as the server's max.
    let (_c, outcome) = t.login(Transport::Tcp, APP, "alice", &sign(APP, "alice", 60), ClientType::Mac, "m").await;
    let LoginOutcome::Ok(ack) = outcome else { panic!("{outcome:?}") };
    assert_eq!(ack.max_seq(SyncKind::Profile), seqs[0]);
}

async fn deleted_user_is_kicked_and_cannot_log_in(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["alice", "bob"]);
    let mut phone = t.device(Transport::Tcp, APP, "alice", ClientType::Ios, "p").await;
    let mut bob = t.device(Transport::Tcp, APP, "bob", ClientType::Ios, "p").await;
    // A message before the deletion warms every cache on the send path.
    let send = |id: &str| json!({"fromId": "bob", "toId": "alice", "messageId": id, "messageBody": "hi"});
    assert_eq!(t.api(APP, "/message/sendMsg", send("before"))["code"], 200);
    // A server-side send is pushed to every device of the sender too.
    let (push, _) = bob.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("bob's copy");
    assert_eq!(push.body_type(), Body::Push);
    let r = t.api(APP, "/user/deleteUser", json!({"userIds": ["alice"]}));
    assert_eq!(r["code"], 200, "{r}");
    let refused = t.api(APP, "/message/sendMsg", send("after"));
    assert_eq!(refused["code"], codes::USER_DELETED, "a deleted user still receives messages: {refused}");
    expect_kicked(&mut phone, KickReason::UserDeleted).await;
    let (mut c, outcome) = t.login(Transport::Ws, APP, "alice", &sign(APP, "alice", 60), ClientType::Web, "w").await;
    assert!(matches!(outcome, LoginOutcome::Rejected { code: codes::USER_DELETED, .. }), "{outcome:?}");
    expect_closed(&mut c).await;
    expect_alive(&mut bob).await;
    let info = t.api(APP, "/user/data/getSingleUserInfo", json!({"userId": "alice"}));
    assert_eq!(info["code"], 200, "a deleted user's profile stays readable: {info}");
}

async fn sigterm_tells_clients_and_keeps_data(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["alice"]);
    let mut phone = t.device(Transport::Tcp, APP, "alice", ClientType::Ios, "p").await;
    let mut web = t.device(Transport::Ws, APP, "alice", ClientType::Web, "w").await;
    let (clean, dir) = tokio::task::spawn_blocking(move || t.terminate()).await.unwrap();
    expect_kicked(&mut phone, KickReason::ServerShutdown).await;
    expect_kicked(&mut web, KickReason::ServerShutdown).await;
    assert!(clean, "tern did not exit cleanly on SIGTERM");
    // Everything written before the stop is there after a restart.
    let t = Tern::start_in(mode, Options::default(), dir);
    let _again = t.device(Transport::Tcp, APP, "alice", ClientType::Ios, "p").await;
}

in_both_modes!(
    import_and_login_over_tcp_and_ws,
    bad_signatures_and_unknown_users_are_refused,
    admin_identifiers_cannot_log_in,
    login_deadline_and_first_frame_rules,
    login_models_kick_exactly_the_replaced_sessions,
    silent_connection_is_dropped_and_goes_offline,
    profile_change_reaches_devices_and_sync,
    deleted_user_is_kicked_and_cannot_log_in,
    sigterm_tells_clients_and_keeps_data,
);
