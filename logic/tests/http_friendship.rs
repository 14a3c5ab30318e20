//! The relation calls of the HTTP management API (`/v1/friendship/...`,
//! `/v1/blackList/...`, `/v1/friendshipRequest/...`), driven through the real router
//! over a real embedded store (no sockets: `tower::ServiceExt::oneshot`): every
//! `friendAllowType`, refusals with their codes, notifications, the profile fan-out,
//! views rebuilt from the logs, and the sync property (a client applying the sync
//! calls from any point ends with exactly the server's lists).
//!
//! `TERN_BENCH=1` also runs `bench_check_and_sync`, which prints p50/p99 latencies.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use axum::http::Method;
use axum::Router;
use proptest::prelude::*;
use serde_json::{json, Value};
use tern_logic::{Logic, LogicConfig};
use tern_schema::client::SyncKind as WireKind;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

use support::{admin_query, app_config, APP};

/// An app with tiny limits: 2 friends, 1 blocked user.
const SMALL_APP: u32 = 10_001;

struct Harness(support::Harness);

impl std::ops::Deref for Harness {
    type Target = support::Harness;
    fn deref(&self) -> &support::Harness {
        &self.0
    }
}

impl Harness {
    async fn new(max_batch: usize) -> Self {
        let mut config = LogicConfig::default();
        config.http.max_batch = max_batch;
        let apps =
            vec![app_config(APP, json!({})), app_config(SMALL_APP, json!({"max_friends": 2, "max_blacklist": 1}))];
        Self(support::Harness::new(config, apps, None))
    }

    /// Imports users (`{"userId": .., "friendAllowType": ..}` objects) into `app`.
    async fn import(&self, app: u32, users: Value) {
        let all = users.as_array().cloned().unwrap_or_default();
        for chunk in all.chunks(self.config.http.max_batch) {
            let d = self.ok_in(app, "/user/importUser", json!({ "userData": chunk })).await;
            assert_eq!(d["errorId"], json!([]), "{d}");
        }
    }

    /// POSTs to `/v1{path}` of `app`; answers (HTTP status, envelope).
    async fn send_to(router: &Router, app: u32, path: &str, body: &Value) -> (u16, Value) {
        let uri = format!("/v1{path}?{}", admin_query(app));
        let a = support::send(router, Method::POST, &uri, body.to_string().into_bytes()).await;
        (a.status, a.json(path))
    }

    async fn check(&self, path: &str, body: Value, code: u32, msg_part: &str) -> Value {
        self.check_in(APP, path, body, code, msg_part).await
    }

    async fn ok_in(&self, app: u32, path: &str, body: Value) -> Value {
        self.check_in(app, path, body, 200, "success").await
    }

    async fn add(&self, from: &str, to: &str, add_type: u8) -> Value {
        self.ok("/friendship/add", json!({"fromId": from, "toItem": {"toId": to}, "addType": add_type})).await
    }

    async fn relation(&self, from: &str, to: &str) -> Value {
        self.ok("/friendship/getRelation", json!({"fromId": from, "toId": to})).await
    }

    /// Registers a gateway link and online sessions (slot 10 + index); returns its queue.
    fn online(&self, devices: &[(&str, &str)]) -> mpsc::Receiver<Vec<u8>> {
        self.0.online(devices, 256)
    }
}

/// The sync-notify frames the link queue holds: (conn slot, kind, seq), sorted.
fn notifies(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(u32, WireKind, u64)> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().expect("frame").bytes(), 1 << 16).expect("client frame");
        let Some(n) = cf.body_as_sync_notify() else { continue };
        for c in d.conns().expect("conns").iter() {
            out.push((c.slot(), n.kind(), n.seq()));
        }
    }
    out.sort_by_key(|(s, k, q)| (*s, k.0, *q));
    out
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn users(ids: &[(&str, u8)]) -> Value {
    ids.iter().map(|(u, t)| json!({"userId": u, "friendAllowType": t})).collect()
}

// ---------------------------------------------------------------- add

#[tokio::test]
async fn add_obeys_friend_allow_type() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("anyone", 1), ("ask", 2), ("nobody", 3), ("one", 1)])).await;
    h.import(APP, json!([{"userId": "closed", "disableAddFriend": true}, {"userId": "gone"}])).await;
    h.ok("/user/deleteUser", json!({"userIds": ["gone"]})).await;

    // 1 anyone: friends at once, both ways by default.
    let d = h.ok("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "anyone", "remark": "Any", "addSource": "search", "addWording": "hi", "extra": "{}"}})).await;
    assert_eq!(d, json!({"result": 1, "sequence": 1}));
    let r = h.relation("a", "anyone").await;
    assert_eq!(
        (r["relation"].clone(), r["blocked"].clone(), r["blockedBy"].clone()),
        (json!(3), json!(false), json!(false))
    );
    assert_eq!(r["friend"]["remark"], json!("Any"));
    assert_eq!(r["friend"]["addSource"], json!("search"));
    let back = h.relation("anyone", "a").await;
    assert_eq!((back["friend"]["remark"].clone(), back["friend"]["addWording"].clone()), (json!(""), json!("hi")));
    // Re-adding is idempotent.
    assert_eq!(h.add("a", "anyone", 2).await, json!({"result": 3}));
    assert_eq!(h.ok("/friendship/sync", json!({"fromId": "a"})).await["maxSequence"], json!(1));

    // One-way: only the adder lists the target; adding two-way later writes the other side.
    assert_eq!(h.add("a", "one", 1).await["result"], json!(1));
    assert_eq!(h.relation("a", "one").await["relation"], json!(1));
    assert_eq!(h.relation("one", "a").await["relation"], json!(2));
    assert_eq!(h.add("a", "one", 1).await, json!({"result": 3}));
    assert_eq!(h.add("a", "one", 2).await, json!({"result": 1}), "only one's side was written");
    assert_eq!(h.relation("a", "one").await["relation"], json!(3));

    // 2 needs approval: a pending request; adding again refreshes it (same id).
    let d = h.add("a", "ask", 2).await;
    assert_eq!(d["result"], json!(2));
    let id = d["requestId"].as_str().expect("request id is a string").to_string();
    assert_eq!(h.relation("a", "ask").await["relation"], json!(0));
    let again = h.add("a", "ask", 2).await;
    assert_eq!(again, d, "an identical pending request changes nothing");
    let d2 = h.ok("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "ask", "addWording": "please"}})).await;
    assert_eq!((d2["requestId"].as_str(), d2["sequence"].as_u64()), (Some(id.as_str()), Some(2)));
    let inbox = h.ok("/friendshipRequest/getFriendRequest", json!({"fromId": "ask"})).await;
    assert_eq!(inbox["unreadCount"], json!(1));
    let req = &inbox["dataList"][0];
    assert_eq!(
        (req["id"].as_str(), req["fromId"].as_str(), req["toId"].as_str()),
        (Some(id.as_str()), Some("a"), Some("ask"))
    );
    assert_eq!(
        (req["status"].clone(), req["read"].clone(), req["addWording"].clone()),
        (json!(0), json!(false), json!("please"))
    );
    assert_eq!(req["addType"], json!(2));
    let sent = h.ok("/friendshipRequest/getFriendRequest", json!({"fromId": "a", "sent": true})).await;
    assert_eq!(sent["dataList"][0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(sent["unreadCount"], json!(0), "a received nothing");

    // 3 nobody (or disableAddFriend): refused.
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "nobody"}}),
        30017,
        "accepts no friend requests",
    )
    .await;
    h.check("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "closed"}}), 30017, "closed").await;
    // ...unless the target already lists the adder.
    assert_eq!(
        h.ok("/friendship/add", json!({"fromId": "nobody", "toItem": {"toId": "a"}, "addType": 1})).await["result"],
        json!(1)
    );
    assert_eq!(h.add("a", "nobody", 2).await["result"], json!(1));
    assert_eq!(h.relation("a", "nobody").await["relation"], json!(3));

    // Bad input and unknown users.
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "a"}}),
        90001,
        "toItem.toId: cannot add yourself",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "anyone", "remark": "r".repeat(65)}}),
        90001,
        "toItem.remark: longer than 64",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "anyone", "addSource": "s".repeat(33)}}),
        90001,
        "toItem.addSource",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "anyone", "addWording": "w".repeat(257)}}),
        90001,
        "toItem.addWording",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "anyone", "extra": "e".repeat(4097)}}),
        90001,
        "toItem.extra",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "x", "remarks": ""}}),
        90001,
        "toItem.remarks: unknown field",
    )
    .await;
    h.check(
        "/friendship/add",
        json!({"fromId": "a", "toItem": {"toId": "anyone"}, "addType": 3}),
        90001,
        "addType: must be 1",
    )
    .await;
    h.check("/friendship/add", json!({"fromId": "a"}), 90001, "toItem: missing").await;
    h.check("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "ghost"}}), 20001, "ghost").await;
    h.check("/friendship/add", json!({"fromId": "ghost", "toItem": {"toId": "a"}}), 20001, "ghost").await;
    h.check("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "gone"}}), 20002, "gone").await;
}

#[tokio::test]
async fn requests_are_approved_or_rejected_by_their_recipient() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("c", 1), ("ask", 2), ("one", 2)])).await;
    let id = h.add("a", "ask", 2).await["requestId"].as_str().unwrap().to_string();
    let c_id = h.add("c", "ask", 2).await["requestId"].as_str().unwrap().to_string();
    let one_id = h.add("a", "one", 1).await["requestId"].as_str().unwrap().to_string();
    assert_ne!(id, c_id);

    let d = h.ok("/friendshipRequest/readAllFriendRequest", json!({"fromId": "ask"})).await;
    assert_eq!(d["count"], json!(2));
    let d2 = h.ok("/friendshipRequest/readAllFriendRequest", json!({"fromId": "ask"})).await;
    assert_eq!(
        (d2["count"].clone(), d2["sequence"].clone()),
        (json!(0), d["sequence"].clone()),
        "nothing left to mark"
    );
    let inbox = h.ok("/friendshipRequest/getFriendRequest", json!({"fromId": "ask"})).await;
    assert_eq!(inbox["unreadCount"], json!(0));
    assert!(inbox["dataList"].as_array().unwrap().iter().all(|r| r["read"] == json!(true)));

    let ap = "/friendshipRequest/approve";
    h.check(ap, json!({"fromId": "a", "id": id, "status": 1}), 30011, "only its recipient").await;
    h.check(ap, json!({"fromId": "ask", "id": "12345", "status": 1}), 30012, "no friend request 12345").await;
    h.check(ap, json!({"fromId": "c", "id": id, "status": 1}), 30012, "").await;
    h.check(ap, json!({"fromId": "ask", "id": id, "status": 3}), 90001, "status: must be 1").await;
    h.check(ap, json!({"fromId": "ask", "id": "x", "status": 1}), 90001, "id: \"x\" is not a request id").await;
    h.check(ap, json!({"fromId": "ghost", "id": id, "status": 1}), 20001, "ghost").await;

    // Approve: friends both ways, as asked.
    assert_eq!(h.ok(ap, json!({"fromId": "ask", "id": id, "status": 1})).await, json!({"id": id, "status": 1}));
    assert_eq!(h.relation("a", "ask").await["relation"], json!(3));
    assert_eq!(h.relation("a", "ask").await["friend"]["addSource"], json!(""));
    h.check(ap, json!({"fromId": "ask", "id": id, "status": 2}), 30013, "already approved").await;

    // Reject: no friendship; both copies say rejected.
    assert_eq!(h.ok(ap, json!({"fromId": "ask", "id": c_id, "status": 2})).await, json!({"id": c_id, "status": 2}));
    assert_eq!(h.relation("c", "ask").await["relation"], json!(0));
    let sent = h.ok("/friendshipRequest/getFriendRequest", json!({"fromId": "c", "sent": true})).await;
    assert_eq!(sent["dataList"][0]["status"], json!(2));
    h.check(ap, json!({"fromId": "ask", "id": c_id, "status": 1}), 30013, "already rejected").await;
    // A new request after a rejection gets a new id and replaces the handled one.
    let c_again = h.add("c", "ask", 2).await["requestId"].as_str().unwrap().to_string();
    assert_ne!(c_again, c_id);
    let inbox = h.ok("/friendshipRequest/getFriendRequest", json!({"fromId": "ask"})).await;
    let ids: Vec<&str> = inbox["dataList"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [c_again.as_str(), id.as_str()], "newest change first, one per peer");
    h.check(ap, json!({"fromId": "ask", "id": c_id, "status": 1}), 30012, "").await;

    // A one-way request makes a one-way friendship.
    h.ok(ap, json!({"fromId": "one", "id": one_id, "status": 1})).await;
    assert_eq!(h.relation("a", "one").await["relation"], json!(1));
}

// ---------------------------------------------------------------- blacklist

#[tokio::test]
async fn blocks_stop_adds_requests_and_messages() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("b", 1), ("ask", 2)])).await;
    let d = h.ok("/blackList/add", json!({"fromId": "a", "toId": "b"})).await;
    assert_eq!(d, json!({"sequence": 1, "changed": true}));
    assert_eq!(
        h.ok("/blackList/add", json!({"fromId": "a", "toId": "b"})).await,
        json!({"sequence": 1, "changed": false})
    );
    h.check("/friendship/add", json!({"fromId": "b", "toItem": {"toId": "a"}}), 30007, "`a` blocked `b`").await;
    h.check("/friendship/add", json!({"fromId": "a", "toItem": {"toId": "b"}}), 30006, "unblock first").await;
    let r = h.relation("a", "b").await;
    assert_eq!(
        (r["blocked"].clone(), r["blockedBy"].clone(), r["relation"].clone()),
        (json!(true), json!(false), json!(0))
    );
    assert_eq!(h.relation("b", "a").await["blockedBy"], json!(true));

    // Messages: the blocked sender is refused; the blocker may still write.
    let send =
        |from: &str, to: &str, id: &str| json!({"fromId": from, "toId": to, "messageId": id, "messageBody": "hi"});
    h.check("/message/sendMsg", send("b", "a", "m1"), 30007, "toId: recipient has blocked the sender").await;
    h.ok("/message/sendMsg", send("a", "b", "m2")).await;

    h.check("/blackList/add", json!({"fromId": "a", "toId": "a"}), 90001, "toId: cannot block yourself").await;
    h.check("/blackList/add", json!({"fromId": "a", "toId": "ghost"}), 20001, "ghost").await;
    assert_eq!(
        h.ok("/blackList/delete", json!({"fromId": "a", "toId": "b"})).await,
        json!({"sequence": 2, "changed": true})
    );
    h.check("/blackList/delete", json!({"fromId": "a", "toId": "b"}), 30010, "not in the blacklist").await;
    h.ok("/message/sendMsg", send("b", "a", "m3")).await;
    assert_eq!(h.add("b", "a", 2).await["result"], json!(1));

    // Blocking leaves friend lists alone but stops approval.
    h.ok("/blackList/add", json!({"fromId": "a", "toId": "b"})).await;
    assert_eq!(h.relation("a", "b").await["relation"], json!(3));
    let id = h.add("b", "ask", 2).await["requestId"].clone();
    h.ok("/blackList/add", json!({"fromId": "ask", "toId": "b"})).await;
    h.check("/friendshipRequest/approve", json!({"fromId": "ask", "id": id, "status": 1}), 30006, "").await;
    h.check("/friendship/add", json!({"fromId": "b", "toItem": {"toId": "ask"}}), 30007, "").await;
    h.ok("/friendshipRequest/approve", json!({"fromId": "ask", "id": id, "status": 2})).await;

    let page = h.ok("/blackList/sync", json!({"fromId": "a", "lastSequence": 0, "maxLimit": 2})).await;
    assert_eq!(page["maxSequence"], json!(3));
    assert_eq!(page["completed"], json!(false));
    let list = page["dataList"].as_array().unwrap();
    assert_eq!(
        (list[0]["sequence"].clone(), list[0]["toId"].clone(), list[0]["deleted"].is_null()),
        (json!(1), json!("b"), true)
    );
    assert!(list[0]["addTime"].as_u64().unwrap() > 0);
    assert_eq!(list[1], json!({"sequence": 2, "toId": "b", "deleted": true}));
    let rest = h.ok("/blackList/sync", json!({"fromId": "a", "lastSequence": 2})).await;
    assert_eq!((rest["completed"].clone(), rest["dataList"].as_array().unwrap().len()), (json!(true), 1));
    h.check("/blackList/sync", json!({"fromId": "ghost"}), 20001, "ghost").await;
}

#[tokio::test]
async fn limits_are_per_app() {
    let h = Harness::new(4).await;
    h.import(SMALL_APP, users(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)])).await;
    let add = |to: &str| json!({"fromId": "a", "toItem": {"toId": to}});
    h.ok_in(SMALL_APP, "/friendship/add", add("b")).await;
    h.ok_in(SMALL_APP, "/friendship/add", add("c")).await;
    h.check_in(SMALL_APP, "/friendship/add", add("d"), 30018, "friend list of `a` is full (2 friends)").await;
    h.check_in(SMALL_APP, "/friendship/add", json!({"fromId": "d", "toItem": {"toId": "a"}}), 30018, "`a`").await;
    // One-way into a full list is fine: only d's list grows.
    h.ok_in(SMALL_APP, "/friendship/add", json!({"fromId": "d", "toItem": {"toId": "a"}, "addType": 1})).await;
    h.ok_in(SMALL_APP, "/blackList/add", json!({"fromId": "a", "toId": "d"})).await;
    h.check_in(SMALL_APP, "/blackList/add", json!({"fromId": "a", "toId": "c"}), 30019, "(1 users)").await;
}

// ---------------------------------------------------------------- delete, update, check, get

#[tokio::test]
async fn delete_update_check_and_get() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)])).await;
    for to in ["b", "c", "d", "e"] {
        h.add("a", to, 2).await;
    }
    // update
    let up = "/friendship/update";
    let d = h.ok(up, json!({"fromId": "a", "toItem": {"toId": "b", "remark": "Bee", "extra": "x"}})).await;
    assert_eq!(d, json!({"sequence": 5, "changed": true}));
    assert_eq!(
        h.ok(up, json!({"fromId": "a", "toItem": {"toId": "b", "remark": "Bee"}})).await,
        json!({"sequence": 5, "changed": false})
    );
    h.check(up, json!({"fromId": "b", "toItem": {"toId": "e", "remark": "x"}}), 30003, "`e` is not a friend of `b`")
        .await;
    h.check(up, json!({"fromId": "a", "toItem": {"toId": "b"}}), 90001, "toItem.remark: nothing to update").await;
    h.check(
        up,
        json!({"fromId": "a", "toItem": {"toId": "b", "addSource": "x"}}),
        90001,
        "toItem.addSource: unknown field",
    )
    .await;
    h.check(
        up,
        json!({"fromId": "a", "toItem": {"toId": "b", "remark": "r".repeat(65)}}),
        90001,
        "toItem.remark: longer",
    )
    .await;
    let r = h.relation("a", "b").await["friend"].clone();
    assert_eq!((r["remark"].clone(), r["extra"].clone(), r["sequence"].clone()), (json!("Bee"), json!("x"), json!(5)));

    // check: one-way, two-way, per-item errors
    let ck = "/friendship/check";
    h.ok("/friendship/add", json!({"fromId": "b", "toItem": {"toId": "c"}, "addType": 1})).await;
    let d = h.ok(ck, json!({"fromId": "b", "toIds": ["a", "c", "d", "bad id"]})).await;
    let st: Vec<u64> = d["resultList"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(st, [1, 1, 0]);
    assert_eq!(d["resultList"][0], json!({"fromId": "b", "toId": "a", "status": 1}));
    assert_eq!((d["errorId"][0]["userId"].clone(), d["errorId"][0]["code"].clone()), (json!("bad id"), json!(90001)));
    assert!(d["errorId"][0]["msg"].as_str().unwrap().starts_with("toIds[3]: "));
    let d = h.ok(ck, json!({"fromId": "c", "toIds": ["a", "b", "d", "ghost"], "checkType": 2})).await;
    let st: Vec<u64> = d["resultList"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(st, [1, 3, 4, 4], "both; only b lists c; neither; unknown");
    h.check(ck, json!({"fromId": "a", "toIds": ["a", "b", "c", "d", "e"]}), 20000, "toIds: 5 items").await;
    h.check(ck, json!({"fromId": "a", "toIds": ["b"], "checkType": 0}), 90001, "checkType").await;
    h.check(ck, json!({"fromId": "ghost", "toIds": ["b"]}), 20001, "ghost").await;

    // get, paged by seq: b was updated last, so it comes last.
    let page = h.ok("/friendship/get", json!({"fromId": "a", "limit": 2})).await;
    let names = |p: &Value| -> Vec<String> {
        p["dataList"].as_array().unwrap().iter().map(|f| f["toId"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&page), ["c", "d"]);
    assert_eq!(
        (page["completed"].clone(), page["nextAfterSequence"].clone(), page["maxSequence"].clone()),
        (json!(false), json!(3), json!(5))
    );
    let page2 = h.ok("/friendship/get", json!({"fromId": "a", "limit": 2, "afterSequence": 3})).await;
    assert_eq!(names(&page2), ["e", "b"]);
    assert_eq!((page2["completed"].clone(), page2["nextAfterSequence"].clone()), (json!(true), Value::Null));
    assert_eq!(page2["dataList"][1]["remark"], json!("Bee"));

    // delete one, two-way (default): both entries go.
    let del = "/friendship/delete";
    assert_eq!(h.ok(del, json!({"fromId": "a", "toId": "d"})).await, json!({"successId": ["d"], "errorId": []}));
    assert_eq!(h.relation("a", "d").await["relation"], json!(0));
    h.check(del, json!({"fromId": "a", "toId": "d"}), 30008, "neither").await;
    h.check(del, json!({"fromId": "a", "toId": "d", "deleteType": 1}), 30003, "not a friend").await;
    // one-way: only a's entry.
    h.ok(del, json!({"fromId": "a", "toId": "e", "deleteType": 1})).await;
    assert_eq!(h.relation("a", "e").await["relation"], json!(2));
    // several, per item (repeats succeed once deleted)
    let d = h.ok(del, json!({"fromId": "a", "toIds": ["e", "x y", "ghost", "e"]})).await;
    assert_eq!(strs(&d["successId"]), ["e", "e"]);
    let errs: Vec<(String, u64)> = d["errorId"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["userId"].as_str().unwrap().to_string(), e["code"].as_u64().unwrap()))
        .collect();
    assert_eq!(errs, [("x y".to_string(), 90001), ("ghost".to_string(), 30008)]);
    assert_eq!(h.relation("e", "a").await["relation"], json!(0));
    // all, one-way: b and c keep listing a.
    let d = h.ok(del, json!({"fromId": "a", "deleteAll": true, "deleteType": 1})).await;
    assert_eq!(strs(&d["successId"]), ["b", "c"]);
    assert_eq!(h.relation("b", "a").await["relation"], json!(1));
    assert_eq!(h.ok("/friendship/get", json!({"fromId": "a"})).await["dataList"], json!([]));
    // all, two-way.
    h.add("c", "d", 2).await;
    let d = h.ok(del, json!({"fromId": "c", "deleteAll": true})).await;
    assert_eq!(strs(&d["successId"]), ["a", "d"]);
    assert_eq!(h.relation("d", "c").await["relation"], json!(0));
    assert_eq!(h.relation("a", "c").await["relation"], json!(0));
    assert_eq!(h.ok(del, json!({"fromId": "c", "deleteAll": true})).await, json!({"successId": [], "errorId": []}));

    h.check(del, json!({"fromId": "a"}), 90001, "exactly one of").await;
    h.check(del, json!({"fromId": "a", "toId": "b", "deleteAll": true}), 90001, "exactly one of").await;
    h.check(del, json!({"fromId": "a", "toIds": ["a", "b", "c", "d", "e"]}), 20000, "toIds").await;
    h.check(del, json!({"fromId": "ghost", "toId": "b"}), 20001, "ghost").await;

    // The friendship log has every change, deletions as tombstones, in order.
    let sync = h.ok("/friendship/sync", json!({"fromId": "a", "maxLimit": 100})).await;
    let list = sync["dataList"].as_array().unwrap();
    let seqs: Vec<u64> = list.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=list.len() as u64).collect::<Vec<_>>());
    let last = list.last().unwrap();
    assert_eq!(
        (last["deleted"].clone(), last["remark"].is_null(), last["updateTime"].is_u64()),
        (json!(true), true, true)
    );
    assert_eq!(sync["completed"], json!(true));
    assert_eq!(sync["maxSequence"], json!(list.len()));
}

// ---------------------------------------------------------------- notifications

#[tokio::test]
async fn every_change_notifies_each_affected_users_devices() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("b", 1), ("ask", 2)])).await;
    let mut link = h.online(&[("a", "a-phone"), ("a", "a-web"), ("b", "b-phone"), ("ask", "ask-phone")]);
    let (a1, a2, b1, k1) = (10, 11, 12, 13);
    let f = WireKind::Friendship;

    // Two-way add: both users' devices, each with its own log's seq. HTTP has no acting
    // device, so all of a's devices get it. Each also gets the other's profile (Profile
    // seq 2: after its own import).
    let p = WireKind::Profile;
    h.add("a", "b", 2).await;
    assert_eq!(notifies(&mut link), [(a1, p, 2), (a1, f, 1), (a2, p, 2), (a2, f, 1), (b1, p, 2), (b1, f, 1)]);
    // One-way update: only a.
    h.ok("/friendship/update", json!({"fromId": "a", "toItem": {"toId": "b", "remark": "r"}})).await;
    assert_eq!(notifies(&mut link), [(a1, f, 2), (a2, f, 2)]);
    // No change, no notification.
    h.ok("/friendship/update", json!({"fromId": "a", "toItem": {"toId": "b", "remark": "r"}})).await;
    h.add("a", "b", 2).await;
    assert_eq!(notifies(&mut link), []);
    // Block: the blocker's Blacklist log only.
    h.ok("/blackList/add", json!({"fromId": "b", "toId": "a"})).await;
    assert_eq!(notifies(&mut link), [(b1, WireKind::Blacklist, 1)]);
    h.ok("/blackList/delete", json!({"fromId": "b", "toId": "a"})).await;
    assert_eq!(notifies(&mut link), [(b1, WireKind::Blacklist, 2)]);
    // Request: both parties' FriendRequest logs; approval: requests + friendships.
    let r = WireKind::FriendRequest;
    let id = h.add("a", "ask", 2).await["requestId"].clone();
    assert_eq!(notifies(&mut link), [(a1, r, 1), (a2, r, 1), (k1, r, 1)]);
    h.ok("/friendshipRequest/readAllFriendRequest", json!({"fromId": "ask"})).await;
    assert_eq!(notifies(&mut link), [(k1, r, 2)]);
    h.ok("/friendshipRequest/approve", json!({"fromId": "ask", "id": id, "status": 1})).await;
    assert_eq!(
        notifies(&mut link),
        [(a1, p, 3), (a1, f, 3), (a1, r, 2), (a2, p, 3), (a2, f, 3), (a2, r, 2), (k1, p, 2), (k1, f, 1), (k1, r, 3)]
    );
    // Two-way delete: both.
    h.ok("/friendship/delete", json!({"fromId": "a", "toId": "b"})).await;
    assert_eq!(notifies(&mut link), [(a1, f, 4), (a2, f, 4), (b1, f, 2)]);
}

#[tokio::test]
async fn profile_changes_reach_friends_sync_user_data() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("b", 1), ("c", 1)])).await;
    h.add("a", "b", 2).await;
    let mut link = h.online(&[("a", "a-phone"), ("b", "b-phone"), ("c", "c-phone")]);
    let before = h.ok("/user/data/syncUserData", json!({"userId": "a"})).await["maxSequence"].as_u64().unwrap();
    h.ok("/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "Bee"})).await;
    let page = h.ok("/user/data/syncUserData", json!({"userId": "a", "lastSequence": before})).await;
    let list = page["dataList"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{page}");
    assert_eq!((list[0]["userId"].clone(), list[0]["nickName"].clone()), (json!("b"), json!("Bee")));
    assert_eq!(list[0]["sequence"], json!(before + 1));
    let p = WireKind::Profile;
    // b's log: its import (1), a's profile when they became friends (2), its change (3).
    assert_eq!(notifies(&mut link), [(10, p, before + 1), (11, p, 3)], "a as b's friend, and b itself");
    // c is no friend of b: its log did not move.
    assert_eq!(h.ok("/user/data/syncUserData", json!({"userId": "c"})).await["maxSequence"], json!(1));
}

/// The profile entries of `user`'s syncUserData after `after`: (userId, nickName).
async fn profile_entries(h: &Harness, user: &str, after: u64) -> Vec<(String, String)> {
    let page = h.ok("/user/data/syncUserData", json!({"userId": user, "lastSequence": after})).await;
    page["dataList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["userId"].as_str().unwrap().to_string(), e["nickName"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[tokio::test]
async fn one_way_friends_get_profiles_through_the_who_lists_me_index() {
    let h = Harness::new(4).await;
    h.import(APP, users(&[("a", 1), ("b", 1), ("c", 1)])).await;
    h.ok("/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "Bee"})).await;
    let a0 = h.ok("/user/data/syncUserData", json!({"userId": "a"})).await["maxSequence"].as_u64().unwrap();
    // a lists b one-way: a's sync gets b's current profile at once.
    h.add("a", "b", 1).await;
    assert_eq!(profile_entries(&h, "a", a0).await, [("b".to_string(), "Bee".to_string())]);
    // b does not list a, yet a gets b's changes; b's own friends-of-nobody c does not.
    let mut link = h.online(&[("a", "a-phone")]);
    h.ok("/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "Bumble"})).await;
    assert_eq!(profile_entries(&h, "a", a0 + 1).await, [("b".to_string(), "Bumble".to_string())]);
    assert_eq!(notifies(&mut link), [(10, WireKind::Profile, a0 + 2)]);
    assert_eq!(h.ok("/user/data/syncUserData", json!({"userId": "c"})).await["maxSequence"], json!(1));
    // Once a stops listing b (a one-way delete), b's changes stop reaching a; the
    // importFriendShip path maintains the index too.
    h.ok("/friendship/delete", json!({"fromId": "a", "toId": "b", "deleteType": 1})).await;
    h.ok("/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "Gone"})).await;
    assert_eq!(profile_entries(&h, "a", a0 + 2).await, []);
    h.ok("/friendship/import", json!({"fromId": "c", "friendItem": [{"toId": "b"}]})).await;
    h.ok("/user/data/modifyUserInfo", json!({"userId": "b", "nickName": "Back"})).await;
    assert_eq!(
        profile_entries(&h, "c", 1).await,
        [("b".to_string(), "Gone".to_string()), ("b".to_string(), "Back".to_string())],
        "the import shared b's profile, then the change reached c"
    );
    // The index is in the store, not only in memory: a restarted node fans out the same.
    let (_, router) = h.restarted();
    let modify = json!({"userId": "b", "nickName": "B3"});
    assert_eq!(Harness::send_to(&router, APP, "/user/data/modifyUserInfo", &modify).await.0, 200);
    let (_, page) =
        Harness::send_to(&router, APP, "/user/data/syncUserData", &json!({"userId": "c", "lastSequence": 3})).await;
    assert_eq!(page["data"]["dataList"][0]["nickName"], "B3", "{page}");
    assert_eq!(page["data"]["dataList"].as_array().map(Vec::len), Some(1), "{page}");
}

// ---------------------------------------------------------------- views and sync

/// A client's copy of one user's lists, built only from the sync calls.
#[derive(Debug, Clone, Default, PartialEq)]
struct ClientState {
    friends: BTreeMap<String, Value>,
    blocked: BTreeSet<String>,
    friend_seq: u64,
    black_seq: u64,
}

/// The comparable part of a friend entry (sync items and /friendship/get items differ
/// in their `sequence` field only).
fn entry(v: &Value) -> Value {
    json!([v["remark"], v["addSource"], v["addWording"], v["extra"], v["addTime"], v["updateTime"]])
}

async fn sync_into(router: &Router, user: &str, state: &mut ClientState, page_sizes: &[u64]) {
    let mut i = 0;
    loop {
        let size = page_sizes[i % page_sizes.len()];
        i += 1;
        let body = json!({"fromId": user, "lastSequence": state.friend_seq, "maxLimit": size});
        let (_, v) = Harness::send_to(router, APP, "/friendship/sync", &body).await;
        let d = &v["data"];
        let list = d["dataList"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert!(list.len() as u64 <= size.clamp(1, 1000) || size == 0, "page larger than maxLimit");
        for e in list {
            let s = e["sequence"].as_u64().unwrap();
            assert!(s > state.friend_seq, "sync went backwards");
            state.friend_seq = s;
            let to = e["toId"].as_str().unwrap().to_string();
            if e["deleted"] == json!(true) {
                state.friends.remove(&to);
            } else {
                state.friends.insert(to, entry(e));
            }
        }
        if d["completed"] == json!(true) {
            state.friend_seq = state.friend_seq.max(d["maxSequence"].as_u64().unwrap());
            break;
        }
    }
    let mut i = 0;
    loop {
        let size = page_sizes[(i + 1) % page_sizes.len()];
        i += 1;
        let body = json!({"fromId": user, "lastSequence": state.black_seq, "maxLimit": size});
        let (_, v) = Harness::send_to(router, APP, "/blackList/sync", &body).await;
        let d = &v["data"];
        for e in d["dataList"].as_array().unwrap_or_else(|| panic!("{v}")) {
            let s = e["sequence"].as_u64().unwrap();
            assert!(s > state.black_seq, "sync went backwards");
            state.black_seq = s;
            let to = e["toId"].as_str().unwrap().to_string();
            if e["deleted"] == json!(true) {
                state.blocked.remove(&to);
            } else {
                state.blocked.insert(to);
            }
        }
        if d["completed"] == json!(true) {
            state.black_seq = state.black_seq.max(d["maxSequence"].as_u64().unwrap());
            break;
        }
    }
}

/// The server's lists of `user`: /friendship/get (every page) and the blacklist.
async fn server_state(router: &Router, logic: &Logic, user: &str) -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let mut friends = BTreeMap::new();
    let mut after = 0;
    loop {
        let body = json!({"fromId": user, "afterSequence": after, "limit": 3});
        let (_, v) = Harness::send_to(router, APP, "/friendship/get", &body).await;
        for f in v["data"]["dataList"].as_array().unwrap() {
            friends.insert(f["toId"].as_str().unwrap().to_string(), entry(f));
        }
        match v["data"]["nextAfterSequence"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let blocked = tern_logic::friends::blacklist(logic, AppId(APP), &UserId::new(user).unwrap())
        .await
        .expect("blacklist")
        .into_iter()
        .map(|(id, _)| id.into_string())
        .collect();
    (friends, blocked)
}

#[derive(Debug, Clone)]
enum Op {
    Add { from: usize, to: usize, two_way: bool },
    Update { from: usize, to: usize, remark: u8 },
    Delete { from: usize, to: usize, two_way: bool },
    DeleteAll { from: usize, two_way: bool },
    Block { from: usize, to: usize },
    Unblock { from: usize, to: usize },
}

const N_USERS: usize = 4;
const NAMES: [&str; N_USERS] = ["u0", "u1", "u2", "u3"];

fn op() -> impl Strategy<Value = Op> {
    let u = || 0..N_USERS;
    prop_oneof![
        4 => (u(), u(), any::<bool>()).prop_map(|(from, to, two_way)| Op::Add { from, to, two_way }),
        2 => (u(), u(), 0u8..3).prop_map(|(from, to, remark)| Op::Update { from, to, remark }),
        2 => (u(), u(), any::<bool>()).prop_map(|(from, to, two_way)| Op::Delete { from, to, two_way }),
        1 => (u(), any::<bool>()).prop_map(|(from, two_way)| Op::DeleteAll { from, two_way }),
        2 => (u(), u()).prop_map(|(from, to)| Op::Block { from, to }),
        1 => (u(), u()).prop_map(|(from, to)| Op::Unblock { from, to }),
    ]
}

/// Applies one op; refusals are fine (they are part of the behaviour under test), but
/// only documented ones.
async fn apply(h: &Harness, op: &Op) {
    let (path, body) = match op {
        Op::Add { from, to, two_way } => (
            "/friendship/add",
            json!({"fromId": NAMES[*from], "toItem": {"toId": NAMES[*to], "remark": format!("r{from}{to}")}, "addType": if *two_way { 2 } else { 1 }}),
        ),
        Op::Update { from, to, remark } => (
            "/friendship/update",
            json!({"fromId": NAMES[*from], "toItem": {"toId": NAMES[*to], "remark": format!("x{remark}"), "extra": format!("e{remark}")}}),
        ),
        Op::Delete { from, to, two_way } => (
            "/friendship/delete",
            json!({"fromId": NAMES[*from], "toId": NAMES[*to], "deleteType": if *two_way { 2 } else { 1 }}),
        ),
        Op::DeleteAll { from, two_way } => (
            "/friendship/delete",
            json!({"fromId": NAMES[*from], "deleteAll": true, "deleteType": if *two_way { 2 } else { 1 }}),
        ),
        Op::Block { from, to } => ("/blackList/add", json!({"fromId": NAMES[*from], "toId": NAMES[*to]})),
        Op::Unblock { from, to } => ("/blackList/delete", json!({"fromId": NAMES[*from], "toId": NAMES[*to]})),
    };
    let (_, v) = Harness::send_to(&h.router, APP, path, &body).await;
    let code = v["code"].as_u64().unwrap();
    assert!([200, 90001, 30003, 30006, 30007, 30008, 30010].contains(&code), "{op:?}: {v}");
}

fn cases() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var("PROPTEST_CASES").is_err() {
        c.cases = 16;
    }
    c
}

proptest! {
    #![proptest_config(cases())]

    /// After any sequence of changes, a client that applies /friendship/sync and
    /// /blackList/sync from 0 in any page sizes ends with exactly the server's lists;
    /// so does a client that synced at some earlier point and resumes from the
    /// `maxSequence` it had; and a restarted node (views rebuilt from the logs) answers
    /// the same lists.
    #[test]
    fn sync_reproduces_the_server_lists(
        ops in prop::collection::vec(op(), 1..40),
        checkpoints in prop::collection::btree_set(0usize..40, 0..4),
        page_sizes in prop::collection::vec(1u64..6, 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = Harness::new(100).await;
            h.import(APP, users(&NAMES.map(|n| (n, 1)))).await;
            let mut earlier: Vec<(usize, ClientState)> = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                if checkpoints.contains(&i) {
                    for (u, user) in NAMES.iter().enumerate() {
                        let mut s = ClientState::default();
                        sync_into(&h.router, user, &mut s, &page_sizes).await;
                        earlier.push((u, s));
                    }
                }
                apply(&h, op).await;
            }
            let (logic2, router2) = h.restarted();
            for (u, user) in NAMES.iter().copied().enumerate() {
                let (friends, blocked) = server_state(&h.router, &h.logic, user).await;
                let mut fresh = ClientState::default();
                sync_into(&h.router, user, &mut fresh, &page_sizes).await;
                assert_eq!(fresh.friends, friends, "{user}: friends from sync vs get");
                assert_eq!(fresh.blocked, blocked, "{user}: blacklist from sync vs server");
                for (_, mut s) in earlier.iter().filter(|(eu, _)| *eu == u).cloned() {
                    sync_into(&h.router, user, &mut s, &[2, 7]).await;
                    assert_eq!((&s.friends, &s.blocked), (&friends, &blocked), "{user}: resumed sync");
                }
                assert_eq!(server_state(&router2, &logic2, user).await, (friends, blocked), "{user}: after restart");
            }
        });
    }
}

// ---------------------------------------------------------------- bench

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `TERN_BENCH=1 cargo test --release -p tern-logic --test http_friendship bench -- --nocapture`
/// prints p50/p99 of /friendship/check for 100 ids (both check types) and of
/// /friendship/sync answering 1,000 changes, through the router in process (JSON,
/// signature check, service, embedded store; no sockets).
#[tokio::test]
async fn bench_check_and_sync() {
    if std::env::var("TERN_BENCH").as_deref() != Ok("1") {
        return;
    }
    let h = Harness::new(100).await;
    let ids: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let mut all = vec![json!({"userId": "me"})];
    all.extend(ids.iter().map(|i| json!({"userId": i})));
    h.import(APP, Value::Array(all)).await;
    for id in &ids {
        h.add("me", id, 2).await;
    }
    for round in 0..9 {
        for id in &ids {
            h.ok("/friendship/update", json!({"fromId": "me", "toItem": {"toId": id, "remark": format!("r{round}")}}))
                .await;
        }
    }
    let time = |n: usize, path: &'static str, body: Value| {
        let router = h.router.clone();
        async move {
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let (_, v) = Harness::send_to(&router, APP, path, &body).await;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(v["code"], json!(200));
            }
            ms.sort_by(f64::total_cmp);
            (percentile(&ms, 0.5), percentile(&ms, 0.99))
        }
    };
    let (p50, p99) = time(2000, "/friendship/check", json!({"fromId": "me", "toIds": ids, "checkType": 1})).await;
    println!("/friendship/check 100 ids, one-way: p50 {p50:.3} ms, p99 {p99:.3} ms");
    let (p50, p99) = time(2000, "/friendship/check", json!({"fromId": "me", "toIds": ids, "checkType": 2})).await;
    println!("/friendship/check 100 ids, two-way: p50 {p50:.3} ms, p99 {p99:.3} ms");
    let sync = json!({"fromId": "me", "lastSequence": 0, "maxLimit": 1000});
    let (_, v) = Harness::send_to(&h.router, APP, "/friendship/sync", &sync).await;
    assert_eq!(v["data"]["dataList"].as_array().unwrap().len(), 1000);
    let (p50, p99) = time(500, "/friendship/sync", sync).await;
    println!("/friendship/sync 1,000 changes: p50 {p50:.3} ms, p99 {p99:.3} ms");
}

// ---------------------------------------------------------------- import (the original's importFriendShip)

#[tokio::test]
async fn import_sets_one_sided_state_per_item() {
    let h = Harness::new(10).await;
    h.import(APP, users(&[("a", 1), ("b", 2), ("c", 3), ("d", 1), ("gone", 1)])).await;
    h.ok("/user/deleteUser", json!({"userId": ["gone"]})).await;
    let mut rx = h.online(&[("a", "phone"), ("b", "phone")]);
    // friendAllowType 2 and 3 do not matter: the relation existed where it comes from.
    let d = h
        .ok(
            "/friendship/importFriendShip",
            json!({"fromId": "a", "friendItem": [
                {"toId": "b", "remark": "bee", "addSource": "migrated", "status": 1},
                {"toId": "c"},
                {"toId": "d", "status": 1, "black": 2},
                {"toId": "nobody"},
                {"toId": "gone"},
                {"toId": "gone", "status": 0, "black": 2},
                {"toId": "b", "remark": "again"},
                {"toId": "a"},
                {"toId": "c", "status": 7},
            ]}),
        )
        .await;
    assert_eq!(strs(&d["successId"]), ["b", "c", "d"], "{d}");
    let errs: Vec<(String, u64)> = d["errorId"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["userId"].as_str().unwrap().to_string(), e["code"].as_u64().unwrap()))
        .collect();
    // `gone` only blocked is fine; listed it is 20002. The repeated `b`, self and a bad status: 90001.
    assert_eq!(
        errs,
        [
            ("nobody".into(), 20001),
            ("gone".into(), 20002),
            ("gone".into(), 90001),
            ("b".into(), 90001),
            ("a".into(), 90001),
            ("c".into(), 90001)
        ],
        "{d}"
    );
    assert!(d["errorId"][5]["msg"].as_str().unwrap().contains("friendItem[8].status"), "{d}");
    // One-way: a lists b, c, d; b lists nobody.
    assert_eq!(h.relation("a", "b").await["relation"], 1);
    assert_eq!(h.relation("a", "b").await["friend"]["remark"], "bee");
    assert_eq!(h.relation("b", "a").await["relation"], 2);
    assert_eq!(h.relation("a", "d").await["blocked"], true);
    // d is blocked by a: d's messages to a are refused as after /blackList/add.
    let friends = h.ok("/friendship/get", json!({"fromId": "a"})).await;
    assert_eq!(friends["dataList"].as_array().map(Vec::len), Some(3), "{friends}");
    // Only a's devices hear of it (Friendship and Blacklist logs moved), b's do not.
    let n = notifies(&mut rx);
    assert!(n.iter().all(|(slot, ..)| *slot == 10), "{n:?}");
    assert!(n.iter().any(|(_, k, _)| *k == WireKind::Friendship), "{n:?}");
    assert!(n.iter().any(|(_, k, _)| *k == WireKind::Blacklist), "{n:?}");

    // Importing the same state again writes nothing; a changed state is applied:
    // b unlisted, d unblocked, c's remark changed.
    let before = h.ok("/friendship/sync", json!({"fromId": "a", "lastSequence": 0})).await["maxSequence"].clone();
    h.ok(
        "/friendship/import",
        json!({"fromId": "a", "friendItem": [{"toId": "b", "remark": "bee", "addSource": "migrated"}]}),
    )
    .await;
    let after = h.ok("/friendship/sync", json!({"fromId": "a", "lastSequence": 0})).await["maxSequence"].clone();
    assert_eq!(before, after, "an import of the state already held wrote an entry");
    let d = h
        .ok(
            "/friendship/import",
            json!({"fromId": "a", "friendItem": [
                {"toId": "b", "status": 2}, {"toId": "d", "black": 1}, {"toId": "c", "remark": "sea"}]}),
        )
        .await;
    assert_eq!(strs(&d["successId"]), ["b", "d", "c"], "{d}");
    assert_eq!(h.relation("a", "b").await["relation"], 0);
    assert_eq!(h.relation("a", "d").await["blocked"], false);
    assert_eq!(h.relation("a", "c").await["friend"]["remark"], "sea");
    let sync = h.ok("/friendship/sync", json!({"fromId": "a", "lastSequence": before})).await;
    let tomb: Vec<&Value> = sync["dataList"].as_array().unwrap().iter().filter(|e| e["deleted"] == true).collect();
    assert_eq!(tomb.len(), 1, "{sync}");
    assert_eq!(tomb[0]["toId"], "b");

    // Whole-call failures: an unknown fromId, an over-long batch.
    h.check("/friendship/import", json!({"fromId": "zz", "friendItem": []}), 20001, "zz").await;
    let many: Vec<Value> = (0..11).map(|i| json!({"toId": format!("u{i}")})).collect();
    h.check("/friendship/import", json!({"fromId": "a", "friendItem": many}), 20000, "friendItem").await;
}

#[tokio::test]
async fn import_respects_the_apps_limits() {
    let h = Harness::new(8).await;
    h.import(SMALL_APP, users(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)])).await;
    let d = h
        .ok_in(
            SMALL_APP,
            "/friendship/import",
            json!({"fromId": "a", "friendItem": [
                {"toId": "b", "black": 2}, {"toId": "c", "black": 2}, {"toId": "d"}]}),
        )
        .await;
    // b listed and blocked; c's block would pass max_blacklist 1 (the whole item fails);
    // d listed (2 friends: the limit).
    assert_eq!(strs(&d["successId"]), ["b", "d"], "{d}");
    assert_eq!(d["errorId"][0]["code"], 30019, "{d}");
    assert_eq!(h.ok_in(SMALL_APP, "/friendship/getRelation", json!({"fromId": "a", "toId": "c"})).await["relation"], 0);
    let d = h.ok_in(SMALL_APP, "/friendship/import", json!({"fromId": "a", "friendItem": [{"toId": "c"}]})).await;
    assert_eq!(d["errorId"][0]["code"], 30018, "{d}");
}
