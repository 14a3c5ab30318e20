//! End-to-end friendships, blacklist and friend requests against the real `tern` binary:
//! every relation endpoint over HTTP, every `friendAllowType` with its refusals, and the
//! long-connection side — sync-notify frames to every device of each affected user
//! (HTTP calls have no acting device, so the acting user's devices all get one), the
//! profile fan-out to friends, and a blocked sender's TCP send refused with 30007.

mod common;

use std::time::Duration;

use common::{Mode, Options, Tern};
use serde_json::{json, Value};
use tern_loadtest::client::{Client, Transport};
use tern_schema::client::{Body, ClientType, ElemType, SyncKind};
use tern_schema::codes;
use tern_schema::message::{self, ElemParts};

const APP: u32 = 10_000;
/// An app with tiny relation limits, configured by the test.
const SMALL: u32 = 20_000;
const WAIT: Duration = Duration::from_secs(5);

/// Imports users with the given `friendAllowType`.
fn import(t: &Tern, users: &[(&str, u8)]) {
    let data: Vec<Value> = users.iter().map(|(u, a)| json!({"userId": u, "friendAllowType": a})).collect();
    let r = t.api(APP, "/user/importUser", json!({ "userData": data }));
    assert_eq!(r["data"]["errorId"], json!([]), "{r}");
}

/// Calls and expects success; returns `data`.
fn ok(t: &Tern, path: &str, body: Value) -> Value {
    let r = t.api(APP, path, body.clone());
    assert_eq!(r["code"], json!(200), "{path} {body}: {r}");
    r["data"].clone()
}

/// Calls and expects `code`; returns `msg`.
fn refused(t: &Tern, path: &str, body: Value, code: u32) -> String {
    let r = t.api(APP, path, body.clone());
    assert_eq!(r["code"], json!(code), "{path} {body}: {r}");
    assert!(r["data"].is_null(), "{r}");
    r["msg"].as_str().unwrap_or_default().to_string()
}

fn notify_of(f: &tern_loadtest::client::OwnedFrame) -> Option<(SyncKind, u64)> {
    (f.body_type() == Body::SyncNotify).then(|| {
        let n = f.frame().body_as_sync_notify().expect("sync notify");
        (n.kind(), n.seq())
    })
}

/// Waits until `c` has received every `(kind, seq)` sync-notify of `want` (in any
/// order; other frames are ignored).
async fn expect_notifies(c: &mut Client, want: &[(SyncKind, u64)]) {
    let mut missing: Vec<(SyncKind, u64)> = want.to_vec();
    while !missing.is_empty() {
        let (f, _) = c
            .recv_until(|f| notify_of(f).is_some_and(|n| missing.contains(&n)), WAIT)
            .await
            .unwrap_or_else(|e| panic!("no sync-notify among {missing:?}: {e}"));
        let n = notify_of(&f).expect("a sync notify");
        missing.retain(|m| *m != n);
    }
}

/// Asserts that no sync-notify arrives within a short while.
async fn no_notify(c: &mut Client) {
    while let Ok(Some(f)) = c.recv_timeout(Duration::from_millis(300)).await {
        assert!(notify_of(&f).is_none(), "unexpected {}", f.describe());
    }
}

/// Sends a text over the long connection; answers the send-ack code.
async fn send_text(c: &mut Client, id: &str, to: &str) -> u32 {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text: "hi", ..Default::default() }];
    c.send(&message::send(rid, id, to, &elems, 1)).await.unwrap();
    let (f, _) =
        c.recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT).await.expect("send ack");
    f.frame().body_as_send_ack().unwrap().code()
}

fn statuses(d: &Value) -> Vec<u64> {
    d["resultList"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_http_and_long_connections() {
    let t = Tern::start(Mode::AllInOne);
    import(&t, &[("a", 1), ("b", 1), ("ask", 2), ("nobody", 3)]);
    let mut a_phone = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    let mut a_web = t.device(Transport::Ws, APP, "a", ClientType::Web, "aw").await;
    let mut b_phone = t.device(Transport::Tcp, APP, "b", ClientType::Android, "bp").await;
    let mut k_phone = t.device(Transport::Tcp, APP, "ask", ClientType::Ios, "kp").await;
    const F: SyncKind = SyncKind::Friendship;
    const B: SyncKind = SyncKind::Blacklist;
    const R: SyncKind = SyncKind::FriendRequest;
    const P: SyncKind = SyncKind::Profile;

    // friendAllowType 3: nobody may add (unless the target already lists the adder).
    assert!(
        refused(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "nobody"}}), 30017).contains("nobody")
    );

    // friendAllowType 1: friends at once, both sides written, every device told.
    let d =
        ok(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b", "remark": "Bee", "addSource": "qr"}}));
    assert_eq!(d, json!({"result": 1, "sequence": 1}));
    // Each also gets the other's current profile in its profile sync (Profile seq 2).
    expect_notifies(&mut a_phone, &[(F, 1), (P, 2)]).await;
    expect_notifies(&mut a_web, &[(F, 1), (P, 2)]).await;
    expect_notifies(&mut b_phone, &[(F, 1), (P, 2)]).await;
    let p = ok(&t, "/user/data/syncUserData", json!({"userId": "a", "lastSequence": 1}));
    assert_eq!(p["dataList"][0]["userId"], json!("b"), "{p}");
    assert_eq!(ok(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b"}})), json!({"result": 3}));

    // update: the owner's devices only.
    let d = ok(&t, "/friendship/update", json!({"fromId": "a", "toItem": {"toId": "b", "extra": "{\"x\":1}"}}));
    assert_eq!(d, json!({"sequence": 2, "changed": true}));
    expect_notifies(&mut a_phone, &[(F, 2)]).await;
    expect_notifies(&mut a_web, &[(F, 2)]).await;
    no_notify(&mut b_phone).await;
    refused(&t, "/friendship/update", json!({"fromId": "b", "toItem": {"toId": "ask", "remark": "x"}}), 30003);

    // check, getRelation, get, sync.
    let d = ok(&t, "/friendship/check", json!({"fromId": "a", "toIds": ["b", "ask"]}));
    assert_eq!(statuses(&d), [1, 0]);
    ok(&t, "/friendship/add", json!({"fromId": "nobody", "toItem": {"toId": "a"}, "addType": 1}));
    let d = ok(&t, "/friendship/check", json!({"fromId": "a", "toIds": ["b", "nobody", "ask"], "checkType": 2}));
    assert_eq!(statuses(&d), [1, 3, 4]);
    let r = ok(&t, "/friendship/getRelation", json!({"fromId": "a", "toId": "b"}));
    assert_eq!(
        (r["relation"].clone(), r["friend"]["remark"].clone(), r["friend"]["extra"].clone()),
        (json!(3), json!("Bee"), json!("{\"x\":1}"))
    );
    let g = ok(&t, "/friendship/get", json!({"fromId": "a"}));
    assert_eq!(
        (g["dataList"][0]["toId"].clone(), g["completed"].clone(), g["maxSequence"].clone()),
        (json!("b"), json!(true), json!(2))
    );
    let s = ok(&t, "/friendship/sync", json!({"fromId": "a", "lastSequence": 1}));
    assert_eq!((s["dataList"][0]["sequence"].clone(), s["dataList"][0]["addSource"].clone()), (json!(2), json!("qr")));

    // Profile changes reach friends' syncUserData and devices.
    ok(&t, "/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "B!"}));
    expect_notifies(&mut a_phone, &[(P, 3)]).await;
    let p = ok(&t, "/user/data/syncUserData", json!({"userId": "a", "lastSequence": 2}));
    assert_eq!((p["dataList"][0]["userId"].clone(), p["dataList"][0]["nickName"].clone()), (json!("b"), json!("B!")));

    // friendAllowType 2: a request, decided by its recipient.
    let d = ok(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "ask", "addWording": "hello"}}));
    assert_eq!(d["result"], json!(2));
    let id = d["requestId"].as_str().expect("request id").to_string();
    expect_notifies(&mut k_phone, &[(R, 1)]).await;
    expect_notifies(&mut a_web, &[(R, 1)]).await;
    let inbox = ok(&t, "/friendshipRequest/getFriendRequest", json!({"fromId": "ask"}));
    assert_eq!((inbox["unreadCount"].clone(), inbox["dataList"][0]["addWording"].clone()), (json!(1), json!("hello")));
    assert_eq!(
        ok(&t, "/friendshipRequest/readAllFriendRequest", json!({"fromId": "ask"})),
        json!({"count": 1, "sequence": 2})
    );
    expect_notifies(&mut k_phone, &[(R, 2)]).await;
    let ap = "/friendshipRequest/approve";
    refused(&t, ap, json!({"fromId": "a", "id": id, "status": 1}), 30011);
    refused(&t, ap, json!({"fromId": "ask", "id": "99", "status": 1}), 30012);
    assert_eq!(ok(&t, ap, json!({"fromId": "ask", "id": id, "status": 1})), json!({"id": id, "status": 1}));
    expect_notifies(&mut a_phone, &[(F, 3), (R, 2)]).await;
    expect_notifies(&mut k_phone, &[(F, 1), (R, 3)]).await;
    refused(&t, ap, json!({"fromId": "ask", "id": id, "status": 2}), 30013);
    assert_eq!(ok(&t, "/friendship/getRelation", json!({"fromId": "ask", "toId": "a"}))["relation"], json!(3));
    // ...or rejected.
    let id = ok(&t, "/friendship/add", json!({"fromId": "b", "toItem": {"toId": "ask"}}))["requestId"].clone();
    expect_notifies(&mut b_phone, &[(R, 1)]).await;
    assert_eq!(ok(&t, ap, json!({"fromId": "ask", "id": id, "status": 2}))["status"], json!(2));
    expect_notifies(&mut b_phone, &[(R, 2)]).await;
    expect_notifies(&mut k_phone, &[(R, 5)]).await;
    let sent = ok(&t, "/friendshipRequest/getFriendRequest", json!({"fromId": "b", "sent": true}));
    assert_eq!((sent["dataList"][0]["status"].clone(), sent["dataList"][0]["read"].clone()), (json!(2), json!(false)));
    assert_eq!(ok(&t, "/friendship/getRelation", json!({"fromId": "ask", "toId": "b"}))["relation"], json!(0));

    // Blacklist: the blocked user cannot message (send-ack 30007) or add the blocker.
    assert_eq!(send_text(&mut a_phone, "m1", "b").await, codes::OK);
    assert_eq!(ok(&t, "/blackList/add", json!({"fromId": "b", "toId": "a"})), json!({"sequence": 1, "changed": true}));
    expect_notifies(&mut b_phone, &[(B, 1)]).await;
    assert_eq!(send_text(&mut a_phone, "m2", "b").await, 30007);
    assert!(refused(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b"}}), 30007).contains("blocked"));
    refused(&t, "/friendship/add", json!({"fromId": "b", "toItem": {"toId": "a"}}), 30006);
    let r = ok(&t, "/friendship/getRelation", json!({"fromId": "a", "toId": "b"}));
    assert_eq!((r["blocked"].clone(), r["blockedBy"].clone()), (json!(false), json!(true)));
    let s = ok(&t, "/blackList/sync", json!({"fromId": "b"}));
    assert_eq!((s["dataList"][0]["toId"].clone(), s["maxSequence"].clone()), (json!("a"), json!(1)));
    ok(&t, "/blackList/delete", json!({"fromId": "b", "toId": "a"}));
    expect_notifies(&mut b_phone, &[(B, 2)]).await;
    refused(&t, "/blackList/delete", json!({"fromId": "b", "toId": "a"}), 30010);
    assert_eq!(send_text(&mut a_phone, "m3", "b").await, codes::OK);
    let s = ok(&t, "/blackList/sync", json!({"fromId": "b", "lastSequence": 1}));
    assert_eq!(s["dataList"], json!([{"sequence": 2, "toId": "a", "deleted": true}]));

    // delete: two-way by default, both users told; the sync shows a tombstone.
    assert_eq!(
        ok(&t, "/friendship/delete", json!({"fromId": "a", "toId": "b"})),
        json!({"successId": ["b"], "errorId": []})
    );
    expect_notifies(&mut a_web, &[(F, 4)]).await;
    expect_notifies(&mut b_phone, &[(F, 2)]).await;
    let s = ok(&t, "/friendship/sync", json!({"fromId": "b", "lastSequence": 1}));
    assert_eq!(s["dataList"][0]["deleted"], json!(true));
    refused(&t, "/friendship/delete", json!({"fromId": "a", "toId": "b"}), 30008);
    let d = ok(&t, "/friendship/delete", json!({"fromId": "a", "deleteAll": true}));
    assert_eq!(d["successId"], json!(["ask"]));
    assert_eq!(ok(&t, "/friendship/get", json!({"fromId": "a"}))["dataList"], json!([]));
}

/// The same over the split deployment (logic and gateway in two processes), and the
/// per-app limits read from the configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_limits_and_notifies_across_the_link() {
    let small =
        format!("[[apps]]\nid = {SMALL}\nsecret = \"{}\"\nmax_friends = 1\nmax_blacklist = 1\n", common::SECRET);
    let t = Tern::start_with(Mode::Split, Options::default().with_apps(small));
    let r = t.api(SMALL, "/user/importUser", json!({"userData": [{"userId": "x"}, {"userId": "y"}, {"userId": "z"}]}));
    assert_eq!(r["data"]["errorId"], json!([]), "{r}");
    let add = |from: &str, to: &str| t.api(SMALL, "/friendship/add", json!({"fromId": from, "toItem": {"toId": to}}));
    assert_eq!(add("x", "y")["code"], json!(200));
    assert_eq!(add("x", "z")["code"], json!(30018));
    let block = |to: &str| t.api(SMALL, "/blackList/add", json!({"fromId": "z", "toId": to}));
    assert_eq!(block("x")["code"], json!(200));
    assert_eq!(block("y")["code"], json!(30019));

    import(&t, &[("a", 1), ("b", 1)]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "ap").await;
    let mut b = t.device(Transport::Ws, APP, "b", ClientType::Web, "bw").await;
    ok(&t, "/blackList/add", json!({"fromId": "b", "toId": "a"}));
    expect_notifies(&mut b, &[(SyncKind::Blacklist, 1)]).await;
    assert_eq!(send_text(&mut a, "m1", "b").await, 30007);
    refused(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b"}}), 30007);
    ok(&t, "/blackList/delete", json!({"fromId": "b", "toId": "a"}));
    assert_eq!(ok(&t, "/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b"}}))["result"], json!(1));
    expect_notifies(&mut a, &[(SyncKind::Friendship, 1)]).await;
    expect_notifies(&mut b, &[(SyncKind::Blacklist, 2), (SyncKind::Friendship, 1)]).await;
    assert_eq!(send_text(&mut a, "m2", "b").await, codes::OK);
}
