//! The conversation calls of the HTTP management API (issue 12), through the real
//! router over a real embedded store: the list (order, last message, exact unread
//! counts), sync with tombstones, pin / mute / extra, the three kinds of delete, group
//! conversations, every refusal, the original's aliases, multi-device notifications and
//! a restart.

mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tern_logic::LogicConfig;
use tern_schema::client::Body as FrameBody;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tern_schema::link::ConnRef;
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

use support::{app_config, APP};

fn harness() -> support::Harness {
    support::Harness::new(LogicConfig::default(), vec![app_config(APP, json!({}))], None)
}

async fn users(h: &support::Harness, ids: &[&str]) {
    let data: Vec<Value> = ids.iter().map(|u| json!({"userId": u})).collect();
    let r = h.ok("/user/importUser", json!({"userData": data})).await;
    assert_eq!(r["errorId"], json!([]), "{r}");
}

/// Sends a 1:1 message; answers the sender's seq.
async fn send(h: &support::Harness, from: &str, to: &str, id: &str) -> Value {
    h.ok("/message/sendMsg", json!({"fromId": from, "toId": to, "messageId": id, "messageBody": id})).await
}

/// Creates group "g" owned by "a" with `members` in it.
async fn group_g(h: &support::Harness, members: &[&str]) {
    let list: Vec<Value> = members.iter().map(|m| json!({"memberId": m})).collect();
    h.ok("/group/createGroup", json!({"groupId": "g", "groupType": 1, "ownerId": "a", "memberList": list})).await;
}

/// A server-side send to group "g"; answers the group seq.
async fn gsend(h: &support::Harness, from: &str, id: &str) -> Value {
    h.ok("/group/sendMessage", json!({"groupId": "g", "fromId": from, "messageId": id, "messageBody": id})).await
}

/// `user`'s list as (toId, unreadCount, isTop, preview).
async fn list(h: &support::Harness, user: &str) -> Vec<(String, u64, bool, String)> {
    let r = h.ok("/conversation/get", json!({"fromId": user})).await;
    r["conversationList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["toId"].as_str().unwrap().to_string(),
                c["unreadCount"].as_u64().unwrap(),
                c["isTop"].as_bool().unwrap(),
                c["lastMessage"]["preview"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn row(to: &str, unread: u64, top: bool, preview: &str) -> (String, u64, bool, String) {
    (to.to_string(), unread, top, preview.to_string())
}

/// The inbox seq of `user`'s copy of their newest message with `peer`.
async fn newest_seq(h: &support::Harness, user: &str, peer: &str) -> u64 {
    let r = h.ok("/message/getHistoryMessage", json!({"fromId": user, "toId": peer, "limit": 1})).await;
    r["dataList"][0]["messageSequence"].as_u64().unwrap()
}

async fn read(h: &support::Harness, reader: &str, peer: &str, seq: u64, origin: Option<&ConnRef>) {
    let (r, p) = (UserId::new(reader).unwrap(), UserId::new(peer).unwrap());
    tern_logic::messages::read_receipt(&h.logic, AppId(APP), &r, &p, seq, origin).await.unwrap();
}

#[tokio::test]
async fn the_list_orders_counts_pins_and_deletes() {
    let h = harness();
    users(&h, &["a", "b", "c"]).await;
    for i in 0..3 {
        send(&h, "a", "b", &format!("a{i}")).await;
    }
    send(&h, "c", "b", "c0").await;
    // Newest activity first; unread counts exact.
    assert_eq!(list(&h, "b").await, [row("c", 1, false, "c0"), row("a", 3, false, "a2")]);
    // The sender's own messages are not unread for them.
    assert_eq!(list(&h, "a").await, [row("b", 0, false, "a2")]);

    // b reads a's conversation up to the second message: one left.
    let seqs = h.ok("/message/getHistoryMessage", json!({"fromId": "b", "toId": "a"})).await;
    let second = seqs["dataList"][1]["messageSequence"].as_u64().unwrap();
    read(&h, "b", "a", second, None).await;
    assert_eq!(list(&h, "b").await, [row("c", 1, false, "c0"), row("a", 1, false, "a2")]);

    // Pin and mute: pinned first whatever its age.
    let upd = h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isTop": true})).await;
    assert!(upd["sequence"].as_u64().unwrap() > 0, "{upd}");
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true, "extra": "x"})).await;
    assert_eq!(list(&h, "b").await, [row("a", 1, true, "a2"), row("c", 1, false, "c0")]);
    let got = h.ok("/conversation/get", json!({"fromId": "b", "limit": 1})).await;
    assert_eq!(got["totalCount"], json!(2));
    assert_eq!(got["nextOffset"], json!(1));
    assert_eq!(got["completed"], json!(false));
    let first = &got["conversationList"][0];
    assert_eq!((first["conversationId"].clone(), first["isMute"].clone()), (json!("1_b_a"), json!(true)));
    assert_eq!((first["extra"].clone(), first["conversationType"].clone()), (json!("x"), json!(1)));
    let page2 = h.ok("/conversation/get", json!({"fromId": "b", "limit": 1, "offset": 1})).await;
    assert_eq!(page2["conversationList"][0]["toId"], json!("c"));
    assert_eq!(page2["completed"], json!(true));
    // The same update again changes nothing (same sequence).
    let again = h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true})).await;
    assert_eq!(again["sequence"], got["maxSequence"]);

    // Delete with history kept: gone from the list; a newer message brings it back,
    // with only that message unread.
    h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_c"})).await;
    assert_eq!(list(&h, "b").await, [row("a", 1, true, "a2")]);
    send(&h, "c", "b", "c1").await;
    assert_eq!(list(&h, "b").await, [row("a", 1, true, "a2"), row("c", 1, false, "c1")]);
    let hist = h.ok("/message/getHistoryMessage", json!({"fromId": "b", "toId": "c"})).await;
    assert_eq!(hist["dataList"].as_array().unwrap().len(), 2, "history kept: {hist}");

    // Delete with history cleared: b's history is empty, c keeps theirs.
    h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_c", "clearHistory": true})).await;
    let hist = h.ok("/message/getHistoryMessage", json!({"fromId": "b", "toId": "c"})).await;
    assert_eq!(hist["dataList"], json!([]), "{hist}");
    let theirs = h.ok("/message/getHistoryMessage", json!({"fromId": "c", "toId": "b"})).await;
    assert_eq!(theirs["dataList"].as_array().unwrap().len(), 2);
    send(&h, "c", "b", "c2").await;
    let hist = h.ok("/message/getHistoryMessage", json!({"fromId": "b", "toId": "c"})).await;
    assert_eq!(hist["dataList"].as_array().unwrap().len(), 1, "only after the clear: {hist}");

    // Only notify: the record stays; sync carries a clientDelete entry.
    h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_c", "onlyNotify": true})).await;
    assert_eq!(list(&h, "b").await, [row("a", 1, true, "a2"), row("c", 1, false, "c2")]);

    // Sync from 0 and from every point: folding the changes gives the records.
    let all = h.ok("/conversation/sync", json!({"fromId": "b", "lastSequence": 0, "maxLimit": 1000})).await;
    let changes = all["dataList"].as_array().unwrap().clone();
    assert_eq!(all["completed"], json!(true));
    assert_eq!(all["maxSequence"], changes.last().unwrap()["sequence"]);
    assert!(changes.iter().any(|c| c["deleted"] == json!(true) && c["toId"] == json!("c")), "{all}");
    assert!(changes.last().unwrap()["clientDelete"] == json!(true), "{all}");
    for (i, c) in changes.iter().enumerate() {
        let rest = h.ok("/conversation/sync", json!({"fromId": "b", "lastSequence": c["sequence"]})).await;
        assert_eq!(rest["dataList"].as_array().unwrap()[..], changes[i + 1..], "resumed after {c}");
    }
    let a_rec = changes.iter().rev().find(|c| c["toId"] == json!("a")).unwrap();
    assert_eq!((a_rec["isTop"].clone(), a_rec["isMute"].clone()), (json!(true), json!(true)));
    assert_eq!(a_rec["readedSequence"], json!(second));

    // The original's aliases answer the same.
    let alias = h.ok("/conversation/syncConversationList", json!({"fromId": "b", "maxLimit": 1000})).await;
    assert_eq!(alias["dataList"].as_array().unwrap()[..], changes[..]);
    h.ok("/conversation/updateConversation", json!({"fromId": "b", "conversationId": "1_b_a", "isTop": false})).await;
    assert_eq!(list(&h, "b").await, [row("c", 1, false, "c2"), row("a", 1, false, "a2")]);
    h.ok("/conversation/deleteConversation", json!({"operater": "b", "conversationId": "1_b_a"})).await;
    assert_eq!(list(&h, "b").await, [row("c", 1, false, "c2")]);

    // A restarted node rebuilds the same list from the store.
    let before = h.ok("/conversation/get", json!({"fromId": "b"})).await;
    let (_, router) = h.restarted();
    let uri = format!("/v1/conversation/get?{}", support::admin_query(APP));
    let after = support::send(&router, axum::http::Method::POST, &uri, json!({"fromId": "b"}).to_string().into_bytes())
        .await
        .check("get after restart", 200, "success");
    assert_eq!(after, before);
}

#[tokio::test]
async fn group_conversations_count_from_the_join_and_follow_group_reads() {
    let h = harness();
    users(&h, &["a", "b", "c"]).await;
    group_g(&h, &["b"]).await;
    gsend(&h, "a", "g0").await;
    gsend(&h, "a", "g1").await;
    h.ok("/group/addMember", json!({"groupId": "g", "members": [{"memberId": "c"}]})).await;
    let g2 = gsend(&h, "b", "g2").await;
    assert_eq!(list(&h, "b").await, [row("g", 2, false, "g2")]);
    // c joined after g0 and g1: only g2 is theirs.
    assert_eq!(list(&h, "c").await, [row("g", 1, false, "g2")]);
    let conv = h.ok("/conversation/get", json!({"fromId": "c"})).await["conversationList"][0].clone();
    assert_eq!((conv["conversationId"].clone(), conv["conversationType"].clone()), (json!("2_c_g"), json!(2)));
    assert_eq!(conv["lastMessage"]["fromId"], json!("b"));
    // A group read moves the count.
    let seq = g2["messageSequence"].as_u64().unwrap();
    h.ok("/group/readMessage", json!({"groupId": "g", "memberId": "c", "messageSequence": seq})).await;
    assert_eq!(list(&h, "c").await, [row("g", 0, false, "g2")]);
    h.ok("/conversation/update", json!({"fromId": "c", "conversationId": "2_c_g", "isTop": true})).await;
    // One 1:1 message, newer: the pinned group stays first.
    send(&h, "a", "c", "hi").await;
    assert_eq!(list(&h, "c").await, [row("g", 0, true, "g2"), row("a", 1, false, "hi")]);
}

/// conversationId → (isTop, isMute), as a device folds the sync log.
type Records = BTreeMap<String, (bool, bool)>;

/// Every change logs an entry; superseded ones are deleted once there are enough
/// (`[conversations] compact_after`, and at least as many as conversations), so the log
/// stays small, and a device that synced at ANY earlier point, before or after a
/// compaction, still ends with the list; so does a restarted node.
#[tokio::test]
async fn the_conversation_log_is_compacted_and_sync_from_any_point_stays_exact() {
    let mut config = LogicConfig::default();
    config.conversations.compact_after = 4;
    let h = support::Harness::new(config, vec![app_config(APP, json!({}))], None);
    users(&h, &["a", "b", "c"]).await;
    send(&h, "a", "b", "a0").await;
    send(&h, "c", "b", "c0").await;
    let sync = |after: u64| {
        let h = &h;
        async move {
            let r = h.ok("/conversation/sync", json!({"fromId": "b", "lastSequence": after, "maxLimit": 1000})).await;
            assert_eq!(r["completed"], json!(true));
            (r["dataList"].as_array().unwrap().clone(), r["maxSequence"].as_u64().unwrap())
        }
    };
    // (top, mute) of b's records after folding `changes` onto `state`.
    let fold = |state: &mut Records, changes: &[Value]| {
        for c in changes {
            let id = c["conversationId"].as_str().unwrap().to_string();
            if c["deleted"] == json!(true) {
                state.remove(&id);
            } else if c["clientDelete"] != json!(true) {
                state.insert(id, (c["isTop"].as_bool().unwrap(), c["isMute"].as_bool().unwrap()));
            }
        }
    };
    let listed = || async {
        let r = h.ok("/conversation/get", json!({"fromId": "b"})).await;
        let l = r["conversationList"].as_array().unwrap().clone();
        l.iter()
            .map(|c| {
                let v = (c["isTop"].as_bool().unwrap(), c["isMute"].as_bool().unwrap());
                (c["conversationId"].as_str().unwrap().to_string(), v)
            })
            .collect::<Records>()
    };
    // A device's state at each point it synced.
    let mut points: Vec<(Records, u64)> = vec![(BTreeMap::new(), 0)];
    for i in 0..40u32 {
        let conv = if i % 3 == 0 { "1_b_c" } else { "1_b_a" };
        match i % 7 {
            6 => {
                h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": conv})).await;
                send(&h, if conv == "1_b_c" { "c" } else { "a" }, "b", &format!("back{i}")).await;
            }
            5 => {
                h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": conv, "onlyNotify": true})).await;
            }
            k => {
                let body = json!({"fromId": "b", "conversationId": conv, "isTop": k % 2 == 0, "isMute": i % 4 == 0});
                h.ok("/conversation/update", body).await;
            }
        }
        let (mut state, at) = points.last().cloned().unwrap();
        let (changes, max) = sync(at).await;
        fold(&mut state, &changes);
        points.push((state, max));
    }
    let want = listed().await;
    assert_eq!(want.len(), 2, "{want:?}");
    // Every earlier sync point, resumed, ends in the list.
    for (state, at) in &points {
        let mut state = state.clone();
        fold(&mut state, &sync(*at).await.0);
        assert_eq!(state, want, "resumed from {at}");
    }
    // Compacted: 40 changes (and the reads they logged), a handful of entries stored.
    let owner = tern_storage::Owner::User(UserId::new("b").unwrap());
    let stored =
        h.store.read_log(AppId(APP), &owner, tern_storage::SyncKind::Conversation, tern_storage::Seq::ZERO, 1000);
    let stored = stored.await.unwrap().len();
    assert!(stored <= 2 * 2 + 4 + 2, "{stored} entries stored");
    // A restarted node folds the compacted log to the same list.
    let (logic, _) = h.restarted();
    let page = tern_logic::conversations::get(&logic, AppId(APP), &UserId::new("b").unwrap(), 0, 10).await.unwrap();
    let after: Records = page
        .items
        .iter()
        .map(|i| {
            (
                tern_logic::conversations::record::conversation_id(&UserId::new("b").unwrap(), &i.conversation),
                (i.is_top, i.is_mute),
            )
        })
        .collect();
    assert_eq!(after, want);
}

/// Texts of a group pull / history answer, in order.
fn group_texts(r: &Value) -> Vec<String> {
    r["dataList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageBody"][0]["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// "Clear history" of a group conversation hides the group's messages up to the clear
/// point from that member only (pull, history, the list's last message and unread),
/// and still after a restart.
#[tokio::test]
async fn clearing_a_group_conversation_hides_its_history_from_that_member_only() {
    let h = harness();
    users(&h, &["a", "b", "c"]).await;
    group_g(&h, &["b", "c"]).await;
    gsend(&h, "a", "g0").await;
    gsend(&h, "a", "g1").await;
    assert_eq!(list(&h, "b").await, [row("g", 2, false, "g1")]);
    h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "2_b_g", "clearHistory": true})).await;
    assert_eq!(list(&h, "b").await, []);
    gsend(&h, "a", "g2").await;

    check_cleared(&h.router).await;
    // After a restart (b offline: the clear point is read from b's flags entry).
    let (_, router) = h.restarted();
    check_cleared(&router).await;
}

async fn check_cleared(router: &axum::Router) {
    let ok = |path: &'static str, body: Value| async move {
        let uri = format!("/v1{path}?{}", support::admin_query(APP));
        support::send(router, axum::http::Method::POST, &uri, body.to_string().into_bytes())
            .await
            .check(path, 200, "success")
    };
    let pull = |who: &str| json!({"groupId": "g", "memberId": who, "lastSequence": 0});
    let hist = |who: &str| json!({"groupId": "g", "memberId": who});
    assert_eq!(group_texts(&ok("/group/pullMessage", pull("b")).await), ["g2"]);
    assert_eq!(group_texts(&ok("/group/getHistoryMessage", hist("b")).await), ["g2"]);
    assert_eq!(group_texts(&ok("/group/pullMessage", pull("c")).await), ["g0", "g1", "g2"]);
    assert_eq!(group_texts(&ok("/group/getHistoryMessage", hist("c")).await), ["g2", "g1", "g0"]);
    let conv = |who: &str| json!({"fromId": who});
    let b = ok("/conversation/get", conv("b")).await["conversationList"].clone();
    assert_eq!((b[0]["unreadCount"].clone(), b[0]["lastMessage"]["preview"].clone()), (json!(1), json!("g2")), "{b}");
    let c = ok("/conversation/get", conv("c")).await["conversationList"].clone();
    assert_eq!((c[0]["unreadCount"].clone(), c[0]["lastMessage"]["preview"].clone()), (json!(3), json!("g2")), "{c}");
}

/// A read that reaches the server before the list folded the message: the message is
/// read (no unread) but still the conversation's last message.
#[tokio::test]
async fn a_group_message_read_before_the_list_is_read_is_still_the_last_message() {
    let h = harness();
    users(&h, &["a", "b"]).await;
    group_g(&h, &["b"]).await;
    let sent = gsend(&h, "a", "welcome").await;
    let seq = sent["messageSequence"].as_u64().unwrap();
    h.ok("/group/readMessage", json!({"groupId": "g", "memberId": "b", "messageSequence": seq})).await;
    assert_eq!(list(&h, "b").await, [row("g", 0, false, "welcome")]);
}

#[tokio::test]
async fn refusals() {
    let h = harness();
    users(&h, &["a", "b"]).await;
    send(&h, "a", "b", "m").await;
    let code = |path: &'static str, body: Value| {
        let h = &h;
        async move { h.admin(APP, path, &body).await.json(path)["code"].clone() }
    };
    let upd = "/conversation/update";
    let del = "/conversation/delete";
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_b_zz", "isTop": true})).await, json!(50011));
    assert_eq!(code(del, json!({"fromId": "b", "conversationId": "2_b_g", "isTop": true})).await, json!(90001));
    assert_eq!(code(del, json!({"fromId": "b", "conversationId": "2_b_g"})).await, json!(50011));
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_a_b"})).await, json!(90001));
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "3_b_a"})).await, json!(90001));
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_b_"})).await, json!(90001));
    assert_eq!(code(upd, json!({"conversationId": "1_b_a"})).await, json!(90001));
    assert_eq!(code(upd, json!({"fromId": "b"})).await, json!(90001));
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_b_a", "isTop": 1})).await, json!(90001));
    let long = "x".repeat(4097);
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_b_a", "extra": long})).await, json!(90001));
    let both = json!({"fromId": "b", "conversationId": "1_b_a", "clearHistory": true, "onlyNotify": true});
    assert_eq!(code(del, both).await, json!(90001));
    assert_eq!(code("/conversation/get", json!({"fromId": "b", "nope": 1})).await, json!(90001));
    assert_eq!(code("/conversation/get", json!({"fromId": ""})).await, json!(90001));
    assert_eq!(code("/conversation/sync", json!({"fromId": "b", "lastSequence": -1})).await, json!(90001));
    // Deleted: no longer updatable.
    h.ok(del, json!({"fromId": "b", "conversationId": "1_b_a"})).await;
    assert_eq!(code(upd, json!({"fromId": "b", "conversationId": "1_b_a", "isTop": true})).await, json!(50011));
    assert_eq!(code(del, json!({"fromId": "b", "conversationId": "1_b_a"})).await, json!(50011));
    // An unknown user simply has no conversations.
    let none = h.ok("/conversation/get", json!({"fromId": "nobody"})).await;
    assert_eq!((none["totalCount"].clone(), none["conversationList"].clone()), (json!(0), json!([])));
}

/// Conversation SyncNotify frames in the link queue: (slot, seq).
fn notifies(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
        if cf.body_type() != FrameBody::SyncNotify {
            continue;
        }
        let n = cf.body_as_sync_notify().unwrap();
        if n.kind().0 != tern_storage::SyncKind::Conversation.as_u8() {
            continue;
        }
        for c in d.conns().unwrap().iter() {
            out.push((c.slot(), n.seq()));
        }
    }
    out.sort_unstable();
    out
}

#[tokio::test]
async fn every_change_notifies_the_users_other_devices() {
    let h = harness();
    users(&h, &["a", "b"]).await;
    send(&h, "a", "b", "m0").await;
    // b has two devices (slots 10, 11); a one (slot 12).
    let mut rx = h.online(&[("b", "b1"), ("b", "b2"), ("a", "a1")], 256);
    // The first read of the list logs the new conversation: both devices hear of it.
    let got = h.ok("/conversation/get", json!({"fromId": "b"})).await;
    let s1 = got["maxSequence"].as_u64().unwrap();
    assert_eq!(notifies(&mut rx), [(10, s1), (11, s1)]);
    // An HTTP change: every device of b.
    let u = h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true})).await;
    let s2 = u["sequence"].as_u64().unwrap();
    assert!(s2 > s1);
    assert_eq!(notifies(&mut rx), [(10, s2), (11, s2)]);
    // A read from device b1: only b2 is told (b1 knows).
    let seq = newest_seq(&h, "b", "a").await;
    read(&h, "b", "a", seq, Some(&ConnRef::new(1, 0, 10, 1))).await;
    let after = h.ok("/conversation/get", json!({"fromId": "b"})).await;
    assert_eq!(after["conversationList"][0]["unreadCount"], json!(0));
    let s3 = after["maxSequence"].as_u64().unwrap();
    assert_eq!(notifies(&mut rx), [(11, s3)]);
    // A delete, server-side: both devices; nothing for a.
    let d = h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_a", "onlyNotify": true})).await;
    let s4 = d["sequence"].as_u64().unwrap();
    assert_eq!(notifies(&mut rx), [(10, s4), (11, s4)]);
}

/// Push frames to b's devices in the link queue: (first message's sender, silent).
fn pushes(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
        let Some(p) = cf.body_as_push() else { continue };
        let from = p.messages().unwrap().get(0).from_id().unwrap().to_string();
        out.push((from, p.silent()));
    }
    out
}

#[tokio::test]
async fn pushes_of_muted_conversations_are_silent() {
    let h = harness();
    users(&h, &["a", "b", "c"]).await;
    send(&h, "a", "b", "m0").await;
    send(&h, "c", "b", "m1").await;
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true})).await;
    let mut rx = h.online(&[("b", "b1")], 256);
    send(&h, "a", "b", "m2").await;
    send(&h, "c", "b", "m3").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(pushes(&mut rx), [("a".to_string(), true), ("c".to_string(), false)]);
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": false})).await;
    send(&h, "a", "b", "m4").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(pushes(&mut rx), [("a".to_string(), false)]);
}

/// A user mutes at most `MAX_MUTED` (1,000) conversations: the next mute is refused with
/// 50012 and changes nothing; unmuting one makes room again; pins are not limited.
#[tokio::test]
async fn mutes_are_capped_per_user() {
    const MAX_MUTED: usize = 1_000;
    let h = harness();
    let peers: Vec<String> = (0..=MAX_MUTED).map(|i| format!("p{i}")).collect();
    users(&h, &["b"]).await;
    for chunk in peers.chunks(100) {
        users(&h, &chunk.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    for p in &peers {
        send(&h, p, "b", &format!("m-{p}")).await;
    }
    let upd = |peer: &str, mute: bool| json!({"fromId": "b", "conversationId": format!("1_b_{peer}"), "isMute": mute});
    for p in &peers[..MAX_MUTED] {
        h.ok("/conversation/update", upd(p, true)).await;
    }
    let last = &peers[MAX_MUTED];
    let refused = h.admin(APP, "/conversation/update", &upd(last, true)).await.json("/conversation/update");
    assert_eq!(refused["code"], json!(50012), "{refused}");
    // Re-muting a muted one and pinning the last one are fine at the cap.
    h.ok("/conversation/update", upd(&peers[0], true)).await;
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": format!("1_b_{last}"), "isTop": true})).await;
    // Muted conversations over every page of the list.
    async fn muted(h: &support::Harness) -> usize {
        let mut n = 0;
        for offset in [0, 1_000] {
            let r = h.ok("/conversation/get", json!({"fromId": "b", "offset": offset, "limit": 1000})).await;
            n += r["conversationList"].as_array().unwrap().iter().filter(|c| c["isMute"] == json!(true)).count();
        }
        n
    }
    assert_eq!(muted(&h).await, MAX_MUTED, "the refused mute changed nothing");
    h.ok("/conversation/update", upd(&peers[0], false)).await;
    h.ok("/conversation/update", upd(last, true)).await;
    assert_eq!(muted(&h).await, MAX_MUTED);
}

/// Mutes set by a build before the flags entry existed (records with isMute, no
/// `ConversationFlags` entry): the first login after the upgrade rebuilds the entry
/// from the records, so pushes are silent without the user muting again; a user with
/// nothing muted gets an empty entry (the rebuild runs once).
#[tokio::test]
async fn mutes_without_a_flags_entry_take_effect_after_login() {
    use tern_logic::login::{LoginBatch, LoginRequest};
    use tern_storage::{Seq, SyncKind, WriteBatch};
    let h = harness();
    users(&h, &["a", "b", "c", "d"]).await;
    send(&h, "a", "b", "m0").await;
    send(&h, "c", "b", "m1").await;
    send(&h, "a", "c", "m2").await;
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true})).await;
    // As the older build left the store: the record says muted, there is no flags entry.
    let (app, b, c) = (AppId(APP), UserId::new("b").unwrap(), UserId::new("c").unwrap());
    let mut del = WriteBatch::new();
    del.delete_log_entry(app, b.clone(), SyncKind::ConversationFlags, Seq(1));
    h.store.write(del).await.unwrap();
    let flags_of = |u: &UserId| {
        let (store, u) = (h.store.clone(), u.clone());
        async move { store.read_log(app, &tern_storage::Owner::User(u), SyncKind::ConversationFlags, Seq::ZERO, 1).await }
    };
    assert!(flags_of(&b).await.unwrap().is_empty());

    let (logic, router) = h.restarted();
    let (tx, mut rx) = mpsc::channel(256);
    logic.sessions.register_link((1, 0), tx.clone());
    let mut batch = LoginBatch::new();
    for (slot, user) in [(10, "b"), (11, "c")] {
        batch.push(LoginRequest {
            conn: ConnRef::new(1, 0, slot, 1),
            app,
            user_id: user.into(),
            device_id: "phone".into(),
            client_type: 3,
            request_id: slot,
            resume: false,
        });
    }
    batch.run(&logic, &tx).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while flags_of(&b).await.unwrap().is_empty() || flags_of(&c).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "flags entries not rebuilt after the logins");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let stored = |e: Vec<tern_storage::LogEntry>| serde_json::from_slice::<Value>(&e[0].payload).unwrap();
    assert_eq!(stored(flags_of(&b).await.unwrap())["mutedUsers"], json!(["a"]));
    assert_eq!(stored(flags_of(&c).await.unwrap())["mutedUsers"], json!([]));
    while !logic.conversations.flags.has(app, &b) {
        assert!(std::time::Instant::now() < deadline, "rebuilt flags not installed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let uri = format!("/v1/message/sendMsg?{}", support::admin_query(APP));
    // (d is not online: c would also get a push of its own message.)
    for (from, id) in [("a", "m3"), ("d", "m4")] {
        let body = json!({"fromId": from, "toId": "b", "messageId": id, "messageBody": id});
        support::send(&router, axum::http::Method::POST, &uri, body.to_string().into_bytes()).await.json(&uri);
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(pushes(&mut rx), [("a".to_string(), true), ("d".to_string(), false)]);
}

/// The whole list of `user` through `router` (every field a client sees).
async fn full_list(router: &axum::Router, user: &str) -> Value {
    let uri = format!("/v1/conversation/get?{}", support::admin_query(APP));
    let body = json!({"fromId": user, "limit": 100}).to_string().into_bytes();
    support::send(router, axum::http::Method::POST, &uri, body).await.check(&uri, 200, "success")
}

/// A list read saves the user's view as a snapshot; a node restarted after more changes
/// (messages, a read, a delete with history cleared, a pin, a new conversation, group
/// messages and a group read) loads from it plus what came after, and shows exactly the
/// list of the node that saw it all — and of a node rebuilding from the log alone.
#[tokio::test]
async fn a_list_loaded_from_its_snapshot_and_what_came_after_is_exact() {
    use tern_storage::{Owner, Seq, SyncKind, WriteBatch};
    let h = harness();
    users(&h, &["a", "b", "c", "d", "e"]).await;
    group_g(&h, &["b"]).await;
    for (i, from) in ["a", "c", "d", "a", "c"].iter().enumerate() {
        send(&h, from, "b", &format!("m{i}")).await;
    }
    gsend(&h, "a", "g0").await;
    let (app, b) = (AppId(APP), UserId::new("b").unwrap());
    let owner = Owner::User(b.clone());
    let snap = || async { h.store.read_log(app, &owner, SyncKind::ConversationSnapshot, Seq::ZERO, 64).await.unwrap() };
    assert!(snap().await.is_empty());
    full_list(&h.router, "b").await;
    // Saved after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while snap().await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no snapshot saved");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let saved = snap().await;
    assert!(tern_logic::conversations::snapshot::decode(&saved).unwrap().is_some());

    // After the snapshot: a read of a, a delete of c with history cleared, a pin of d,
    // new messages (one from a new peer e, one to the deleted c), group messages and a
    // group read.
    read(&h, "b", "a", newest_seq(&h, "b", "a").await, None).await;
    h.ok("/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_c", "clearHistory": true})).await;
    h.ok("/conversation/update", json!({"fromId": "b", "conversationId": "1_b_d", "isTop": true})).await;
    send(&h, "e", "b", "m5").await;
    send(&h, "a", "b", "m6").await;
    gsend(&h, "a", "g1").await;
    let g2 = gsend(&h, "a", "g2").await;
    h.ok("/group/readMessage", json!({"groupId": "g", "memberId": "b", "messageSequence": g2["messageSequence"]}))
        .await;
    gsend(&h, "a", "g3").await;
    send(&h, "c", "b", "m7").await;
    let want = full_list(&h.router, "b").await;
    assert_eq!(want["conversationList"].as_array().unwrap().len(), 5, "{want}");

    // A restart with the snapshot as saved before those changes (a later save may have
    // run since: put the first one back).
    let mut put_back = WriteBatch::new();
    for e in saved {
        put_back.replace_log_entry(app, owner.clone(), SyncKind::ConversationSnapshot, e);
    }
    for seq in 2..=64 {
        put_back.delete_log_entry(app, owner.clone(), SyncKind::ConversationSnapshot, Seq(seq));
    }
    h.store.write(put_back).await.unwrap();
    let (_, router) = h.restarted();
    assert_eq!(full_list(&router, "b").await, want);
    // And without any snapshot: rebuilt from the log, the same.
    let mut none = WriteBatch::new();
    for seq in 1..=64 {
        none.delete_log_entry(app, owner.clone(), SyncKind::ConversationSnapshot, Seq(seq));
    }
    h.store.write(none).await.unwrap();
    let (_, router) = h.restarted();
    assert_eq!(full_list(&router, "b").await, want);
}
