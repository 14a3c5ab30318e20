//! The group calls of the HTTP management API, driven through the real router over a
//! real embedded store: every endpoint, every refusal code of issue 11, join-time
//! visibility, pull and history, pushes to online members (one Deliver per core), and a
//! model test of roles and permissions against a reference model (proptest).

mod support;

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use tern_logic::LogicConfig;
use tern_schema::client::Body as FrameBody;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};

use support::{app_config, APP};

fn harness() -> support::Harness {
    let mut config = LogicConfig::default();
    config.http.max_batch = 8;
    support::Harness::new(config, vec![app_config(APP, json!({}))], None)
}

async fn users(h: &support::Harness, ids: &[&str]) {
    let data: Vec<Value> = ids.iter().map(|u| json!({"userId": u})).collect();
    let r = h.ok("/user/importUser", json!({ "userData": data })).await;
    assert_eq!(r["errorId"], json!([]), "{r}");
}

/// The code of a call: the envelope's, or, for a successful batch, its first item's.
async fn code(h: &support::Harness, path: &str, body: Value) -> u32 {
    let a = h.admin(APP, path, &body).await.json(path);
    let c = a["code"].as_u64().unwrap() as u32;
    if c != 200 {
        return c;
    }
    match a["data"]["errorId"].as_array() {
        Some(e) if !e.is_empty() => e[0]["code"].as_u64().unwrap() as u32,
        _ => 200,
    }
}

fn with_op(mut body: Value, op: Option<&str>) -> Value {
    if let Some(op) = op {
        body["operater"] = json!(op);
    }
    body
}

async fn roles(h: &support::Harness, group: &str, ids: &[&str]) -> Vec<Value> {
    let r = h.ok("/group/getRoleInGroup", json!({"groupId": group, "memberIds": ids})).await;
    r["list"].as_array().unwrap().iter().map(|i| i["role"].clone()).collect()
}

async fn send(h: &support::Harness, group: &str, from: &str, id: &str) -> Value {
    h.admin(APP, "/group/sendMessage", &json!({"groupId": group, "fromId": from, "messageId": id, "messageBody": id}))
        .await
        .json("sendMessage")
}

fn texts(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["messageBody"][0]["text"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn lifecycle_rights_and_every_refusal() {
    let h = harness();
    users(&h, &["a", "b", "c", "d", "e", "f", "gone"]).await;
    h.ok("/user/deleteUser", json!({"userIds": ["gone"]})).await;

    // Create: owner a, admin b, member c; an unknown and a deleted member answered per item.
    let r = h
        .ok(
            "/group/createGroup",
            json!({"groupId": "g1", "groupType": 2, "groupName": "one", "ownerId": "a",
                "memberList": [{"memberId": "b", "role": 1}, {"memberId": "c"}, {"memberId": "ghost"},
                    {"memberId": "gone"}, {"memberId": "c"}, {"memberId": "bad id"}]}),
        )
        .await;
    assert_eq!(r["groupId"], json!("g1"));
    assert_eq!(r["successId"], json!(["b", "c"]));
    let codes: Vec<u64> = r["errorId"].as_array().unwrap().iter().map(|e| e["code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [20001, 20002, 40003, 90001], "{r}");
    assert_eq!(code(&h, "/group/createGroup", json!({"groupId": "g1", "groupType": 1})).await, 40001);
    assert_eq!(code(&h, "/group/createGroup", json!({"groupType": 2})).await, 40016);
    assert_eq!(code(&h, "/group/createGroup", json!({"groupType": 9})).await, 90001);
    assert_eq!(code(&h, "/group/createGroup", json!({"groupType": 1, "nope": 1})).await, 90001);
    // A generated id.
    let gen = h.ok("/group/createGroup", json!({"groupType": 1})).await;
    assert!(gen["groupId"].as_str().unwrap().starts_with('g'));

    let g = h.ok("/group/get", json!({"groupId": "g1"})).await;
    assert_eq!(g["group"]["memberCount"], json!(3));
    assert_eq!(g["group"]["ownerId"], json!("a"));
    assert_eq!(g["group"]["status"], json!(1));
    assert_eq!(g["memberList"].as_array().unwrap().len(), 3);
    // The original's path is an alias.
    assert_eq!(h.ok("/group/getGroupInfo", json!({"groupId": "g1"})).await["group"]["groupName"], json!("one"));
    assert_eq!(code(&h, "/group/get", json!({"groupId": "nope"})).await, 40000);
    assert_eq!(roles(&h, "g1", &["a", "b", "c", "d"]).await, [json!(2), json!(1), json!(0), Value::Null]);

    // Adding: a public group takes an admin (40007); only the owner makes admins (40009);
    // a non-member actor is 40006; twice is 40003.
    let add = |who: &'static str, op: Option<&'static str>, role: u8| {
        with_op(json!({"groupId": "g1", "members": [{"memberId": who, "role": role}]}), op)
    };
    assert_eq!(code(&h, "/group/addMember", add("d", Some("c"), 0)).await, 40007);
    assert_eq!(code(&h, "/group/addMember", add("d", Some("f"), 0)).await, 40006);
    assert_eq!(code(&h, "/group/addMember", add("e", Some("b"), 1)).await, 40009);
    assert_eq!(code(&h, "/group/addMember", add("d", Some("b"), 0)).await, 200);
    assert_eq!(code(&h, "/group/addMember", add("d", None, 0)).await, 40003);
    // The admin calling named as operater is the app admin.
    assert_eq!(code(&h, "/group/member/add", add("e", Some("admin"), 1)).await, 200);

    // Removing: the owner never (40010), members not others (40007), admins not admins.
    let del = |who: &'static str, op: Option<&'static str>| with_op(json!({"groupId": "g1", "memberIds": [who]}), op);
    assert_eq!(code(&h, "/group/deleteMember", del("a", None)).await, 40010);
    assert_eq!(code(&h, "/group/deleteMember", del("d", Some("c"))).await, 40007);
    assert_eq!(code(&h, "/group/deleteMember", del("e", Some("b"))).await, 40007);
    assert_eq!(code(&h, "/group/deleteMember", del("f", None)).await, 40006);
    assert_eq!(code(&h, "/group/deleteMember", del("e", Some("e"))).await, 200, "leaving");
    assert_eq!(code(&h, "/group/member/remove", json!({"groupId": "g1", "memberId": "d"})).await, 200);

    // Roles and name cards.
    let upd = |op: Option<&'static str>, body: Value| with_op(body, op);
    assert_eq!(
        code(&h, "/group/updateMember", upd(Some("b"), json!({"groupId": "g1", "memberId": "c", "role": 1}))).await,
        40009
    );
    assert_eq!(
        code(&h, "/group/updateMember", upd(None, json!({"groupId": "g1", "memberId": "a", "role": 0}))).await,
        90001
    );
    assert_eq!(
        code(&h, "/group/updateMember", upd(Some("c"), json!({"groupId": "g1", "memberId": "b", "alias": "x"}))).await,
        40007
    );
    assert_eq!(
        code(&h, "/group/updateMember", upd(Some("c"), json!({"groupId": "g1", "memberId": "c", "alias": "me"}))).await,
        200
    );
    assert_eq!(
        code(&h, "/group/updateMember", upd(None, json!({"groupId": "g1", "memberId": "f", "alias": "x"}))).await,
        40006
    );

    // Mutes: owner/admin only; not the owner; muted members cannot send (40017).
    let mute = |who: &'static str, op: Option<&'static str>, secs: u64| {
        with_op(json!({"groupId": "g1", "memberIds": [who], "shutUpTime": secs}), op)
    };
    assert_eq!(code(&h, "/group/forbidSendMsg", mute("b", Some("c"), 60)).await, 40007);
    assert_eq!(code(&h, "/group/forbidSendMsg", mute("a", Some("b"), 60)).await, 40007);
    assert_eq!(code(&h, "/group/forbidSendMsg", mute("f", None, 60)).await, 40006);
    assert_eq!(code(&h, "/group/forbidSendMsg", mute("c", Some("b"), 60)).await, 200);
    let shut = h.ok("/group/getGroupShuttedUin", json!({"groupId": "g1"})).await;
    assert_eq!(shut["list"].as_array().unwrap().len(), 1);
    assert_eq!(shut["list"][0]["memberId"], json!("c"));
    assert_eq!(send(&h, "g1", "c", "m1").await["code"], json!(40017));
    assert_eq!(code(&h, "/group/forbidSendMsg", mute("c", None, 0)).await, 200);
    assert_eq!(send(&h, "g1", "c", "m2").await["code"], json!(200));
    assert_eq!(send(&h, "g1", "f", "m3").await["code"], json!(40006));
    assert_eq!(send(&h, "nope", "a", "m3").await["code"], json!(40000));

    // A muted group: members no (40012), admins and the owner yes; rights to update.
    let up = |op: Option<&'static str>, mute: bool| with_op(json!({"groupId": "g1", "mute": mute}), op);
    assert_eq!(code(&h, "/group/update", up(Some("c"), true)).await, 40007);
    assert_eq!(code(&h, "/group/update", up(Some("b"), true)).await, 200);
    assert_eq!(send(&h, "g1", "c", "m4").await["code"], json!(40012));
    assert_eq!(send(&h, "g1", "b", "m5").await["code"], json!(200));
    assert_eq!(send(&h, "g1", "a", "m6").await["code"], json!(200));
    assert_eq!(code(&h, "/group/update", up(None, false)).await, 200);
    // A resend answers the original.
    let first = send(&h, "g1", "a", "m6").await;
    assert_eq!(first["data"]["messageSequence"], json!(3));

    // Ownership: owner only (40009), to a member (40006); the old owner becomes a member.
    let tr = |to: &'static str, op: Option<&'static str>| with_op(json!({"groupId": "g1", "ownerId": to}), op);
    assert_eq!(code(&h, "/group/changeGroupOwner", tr("c", Some("b"))).await, 40009);
    assert_eq!(code(&h, "/group/changeGroupOwner", tr("f", Some("a"))).await, 40006);
    assert_eq!(code(&h, "/group/transferGroup", tr("c", Some("a"))).await, 200);
    assert_eq!(roles(&h, "g1", &["a", "c"]).await, [json!(0), json!(2)]);

    // Dissolving: owner only; afterwards 40018 everywhere but get.
    assert_eq!(code(&h, "/group/destroyGroup", with_op(json!({"groupId": "g1"}), Some("a"))).await, 40009);
    assert_eq!(code(&h, "/group/destroyGroup", with_op(json!({"groupId": "g1"}), Some("c"))).await, 200);
    assert_eq!(h.ok("/group/get", json!({"groupId": "g1"})).await["group"]["status"], json!(2));
    assert_eq!(code(&h, "/group/addMember", add("f", None, 0)).await, 40018);
    assert_eq!(send(&h, "g1", "c", "m7").await["code"], json!(40018));
    assert_eq!(code(&h, "/group/destroyGroup", json!({"groupId": "g1"})).await, 40018);

    // Full groups.
    let r = h
        .ok(
            "/group/createGroup",
            json!({"groupId": "small", "groupType": 1, "ownerId": "a", "maxMemberCount": 2,
            "memberList": [{"memberId": "b"}, {"memberId": "c"}]}),
        )
        .await;
    assert_eq!(r["errorId"][0]["code"], json!(40005), "{r}");
    assert_eq!(code(&h, "/group/addMember", json!({"groupId": "small", "members": [{"memberId": "d"}]})).await, 40005);
    // In a private group any member may add (here: refused only because it is full).
    assert_eq!(
        code(&h, "/group/addMember", with_op(json!({"groupId": "small", "members": [{"memberId": "d"}]}), Some("b")))
            .await,
        40005
    );
}

#[tokio::test]
async fn lists_pages_imports_and_the_joined_groups_log() {
    let h = harness();
    users(&h, &["a", "b", "c"]).await;
    for (id, t) in [("p1", 1), ("p2", 1), ("pub1", 2), ("m1", 3)] {
        h.ok(
            "/group/createGroup",
            json!({"groupId": id, "groupType": t, "ownerId": "a", "memberList": [{"memberId": "b"}]}),
        )
        .await;
    }
    // getAll: paged, by type.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut body = json!({"limit": 3});
        if let Some(a) = &after {
            body["afterGroupId"] = json!(a);
        }
        let page = h.ok("/group/getAll", body).await;
        for g in page["groupList"].as_array().unwrap() {
            seen.push(g["groupId"].as_str().unwrap().to_string());
        }
        if page["completed"] == json!(true) {
            break;
        }
        after = page["nextGroupId"].as_str().map(str::to_string);
    }
    seen.sort();
    assert_eq!(seen, ["m1", "p1", "p2", "pub1"]);
    let private = h.ok("/group/getAll", json!({"groupType": [1]})).await;
    assert_eq!(private["groupList"].as_array().unwrap().len(), 2);

    // getJoinedGroup: type filter, offset paging.
    let j = h.ok("/group/getJoinedGroup", json!({"memberId": "b"})).await;
    assert_eq!(j["totalCount"], json!(4));
    assert_eq!(j["groupList"][0]["role"], json!(0));
    let j = h.ok("/group/getJoinedGroup", json!({"memberId": "b", "groupType": [1, 3], "limit": 1, "offset": 1})).await;
    assert_eq!((j["totalCount"].clone(), j["groupList"].as_array().unwrap().len()), (json!(3), 1));
    assert_eq!(code(&h, "/group/getJoinedGroup", json!({"memberId": "ghost"})).await, 20001);

    // Import: kept times, then importMember with join times; the sync log has them all,
    // and a removal is a tombstone.
    h.ok("/group/importGroup", json!({"groupId": "old", "groupType": 1, "ownerId": "a", "createTime": 1000})).await;
    let r = h
        .ok(
            "/group/member/importGroupMember",
            json!({"groupId": "old", "members": [
            {"memberId": "c", "joinTime": 2000, "speakDate": 9_999_999_999_999_u64}, {"memberId": "a"}]}),
        )
        .await;
    assert_eq!(r["successId"], json!(["c"]));
    assert_eq!(r["errorId"][0]["code"], json!(40003));
    let g = h.ok("/group/get", json!({"groupId": "old"})).await;
    assert_eq!(g["group"]["createTime"], json!(1000));
    let page = h.ok("/group/getGroupMember", json!({"groupId": "old", "limit": 1})).await;
    assert_eq!(page["completed"], json!(false));
    let next = page["nextMemberId"].as_str().unwrap();
    let rest = h.ok("/group/getGroupMember", json!({"groupId": "old", "afterMemberId": next})).await;
    assert_eq!(rest["completed"], json!(true));
    let c = rest["memberList"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page["memberList"].as_array().unwrap())
        .find(|m| m["memberId"] == json!("c"))
        .cloned()
        .unwrap();
    assert_eq!((c["joinTime"].clone(), c["speakDate"].clone()), (json!(2000), json!(9_999_999_999_999_u64)));
    assert_eq!(
        code(&h, "/group/addMember", json!({"groupId": "old", "members": [{"memberId": "b", "joinTime": 5}]})).await,
        90001
    );

    h.ok("/group/deleteMember", json!({"groupId": "p1", "memberIds": ["b"]})).await;
    let sync = h.ok("/group/syncJoinedGroup", json!({"fromId": "b", "lastSequence": 0})).await;
    let list = sync["dataList"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{sync}");
    let last = list.last().unwrap();
    assert_eq!((last["groupId"].clone(), last["deleted"].clone()), (json!("p1"), json!(true)));
    assert_eq!(sync["maxSequence"], last["sequence"]);
    let after = h.ok("/group/syncJoinedGroup", json!({"fromId": "b", "lastSequence": last["sequence"]})).await;
    assert_eq!(after["dataList"], json!([]));
    assert_eq!(h.ok("/group/getJoinedGroup", json!({"memberId": "b"})).await["totalCount"], json!(3));

    // A restarted node rebuilds groups and joined views from the store.
    let (_, router) = h.restarted();
    let uri = format!("/v1/group/getJoinedGroup?{}", support::admin_query(APP));
    let a = support::send(&router, axum::http::Method::POST, &uri, json!({"memberId": "b"}).to_string().into_bytes())
        .await
        .json("joined");
    assert_eq!(a["data"]["totalCount"], json!(3));
}

#[tokio::test]
async fn members_see_messages_from_their_join_and_online_members_get_one_push() {
    let h = harness();
    users(&h, &["a", "b", "c", "d"]).await;
    h.ok(
        "/group/createGroup",
        json!({"groupId": "g", "groupType": 1, "ownerId": "a", "memberList": [{"memberId": "b"}]}),
    )
    .await;
    for i in 0..3 {
        assert_eq!(send(&h, "g", "a", &format!("before{i}")).await["code"], json!(200));
    }
    h.ok("/group/addMember", json!({"groupId": "g", "members": [{"memberId": "c"}]})).await;
    // c and b online (two devices of b), d (not a member) online too: one Deliver for all.
    let mut rx = h.online(&[("b", "b1"), ("b", "b2"), ("c", "c1"), ("d", "d1")], 64);
    let r = send(&h, "g", "b", "after0").await;
    assert_eq!(r["data"]["messageSequence"], json!(4), "{r}");
    let mut delivers = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
        let mut slots: Vec<u32> = d.conns().unwrap().iter().map(|c| c.slot()).collect();
        slots.sort();
        delivers.push((cf.body_type(), slots));
    }
    assert_eq!(delivers, vec![(FrameBody::Push, vec![10, 11, 12])], "one Deliver to every online member");
    send(&h, "g", "a", "after1").await;

    let pull = |who: &'static str, last: u64| json!({"groupId": "g", "memberId": who, "lastSequence": last});
    let c = h.ok("/group/pullMessage", pull("c", 0)).await;
    assert_eq!(texts(&c["dataList"]), ["after0", "after1"]);
    assert_eq!((c["maxSequence"].clone(), c["completed"].clone()), (json!(5), json!(true)));
    let b = h.ok("/group/pullMessage", pull("b", 2)).await;
    assert_eq!(texts(&b["dataList"]), ["before2", "after0", "after1"]);
    assert_eq!(b["dataList"][0]["toId"], json!("g"));
    let hist = h.ok("/group/getHistoryMessage", json!({"groupId": "g", "memberId": "c", "limit": 1})).await;
    assert_eq!(texts(&hist["dataList"]), ["after1"]);
    let more = h
        .ok(
            "/group/getHistoryMessage",
            json!({"groupId": "g", "memberId": "c", "beforeSequence": hist["nextSequence"]}),
        )
        .await;
    assert_eq!(texts(&more["dataList"]), ["after0"]);
    assert_eq!(more["nextSequence"], Value::Null);
    assert_eq!(code(&h, "/group/pullMessage", pull("d", 0)).await, 40006);

    // Read receipts: counts over members who could see the message, not its sender.
    let key4 = h.ok("/group/pullMessage", pull("c", 3)).await["dataList"][0]["messageKey"].clone();
    let rr = |key: Value| json!({"groupId": "g", "messageKey": key});
    let r = h.ok("/group/getReadReceipt", rr(key4.clone())).await;
    assert_eq!((r["readCount"].clone(), r["unreadCount"].clone()), (json!(0), json!(2)), "{r}");
    h.ok("/group/readMessage", json!({"groupId": "g", "memberId": "a", "messageSequence": 5})).await;
    h.ok("/group/readMessage", json!({"groupId": "g", "memberId": "c", "messageSequence": 4})).await;
    let r = h.ok("/group/getReadReceipt", rr(key4)).await;
    assert_eq!((r["readList"].clone(), r["unreadList"].clone()), (json!(["a", "c"]), json!([])), "{r}");
    assert_eq!(
        code(&h, "/group/readMessage", json!({"groupId": "g", "memberId": "a", "messageSequence": 99})).await,
        50000
    );
    assert_eq!(
        code(&h, "/group/readMessage", json!({"groupId": "g", "memberId": "d", "messageSequence": 1})).await,
        40006
    );

    // A member who left sees nothing more.
    h.ok("/group/deleteMember", json!({"groupId": "g", "memberIds": ["c"]})).await;
    assert_eq!(code(&h, "/group/pullMessage", pull("c", 0)).await, 40006);

    // Recall by the sender: marked in place, an event appended.
    let key = send(&h, "g", "a", "oops").await["data"]["messageKey"].clone();
    assert_eq!(
        code(&h, "/group/withdrawMessage", json!({"groupId": "g", "messageKey": key, "fromId": "b"})).await,
        50008
    );
    assert_eq!(
        code(&h, "/group/withdrawMessage", json!({"groupId": "p", "messageKey": key, "fromId": "a"})).await,
        50007
    );
    h.ok("/group/withdrawMessage", json!({"groupId": "g", "messageKey": key, "fromId": "a"})).await;
    assert_eq!(
        code(&h, "/group/withdrawMessage", json!({"groupId": "g", "messageKey": key, "asAdmin": true})).await,
        50005
    );
    let b = h.ok("/group/pullMessage", pull("b", 5)).await;
    let list = b["dataList"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{b}");
    assert_eq!((list[0]["recalled"].clone(), list[1]["entryType"].clone()), (json!(true), json!("recall")));

    // After a restart the group continues above its durable seqs.
    let (logic, router) = h.restarted();
    drop(logic);
    let uri = format!("/v1/group/sendMessage?{}", support::admin_query(APP));
    let body = json!({"groupId": "g", "fromId": "a", "messageId": "post-restart", "messageBody": "x"});
    let a = support::send(&router, axum::http::Method::POST, &uri, body.to_string().into_bytes()).await.json("send");
    assert!(a["data"]["messageSequence"].as_u64().unwrap() > 7, "{a}");
}

// ---------------------------------------------------------------- model test of roles

#[derive(Debug, Clone)]
enum Op {
    Add(Option<usize>, usize),
    Remove(Option<usize>, usize),
    SetRole(Option<usize>, usize, u8),
    Transfer(Option<usize>, usize),
    Mute(Option<usize>, usize),
}

const N: usize = 5;

fn name(i: usize) -> String {
    format!("u{i}")
}

fn op() -> impl Strategy<Value = Op> {
    let actor = prop_oneof![1 => Just(None), 4 => (0..N).prop_map(Some)];
    prop_oneof![
        (actor.clone(), 0..N).prop_map(|(a, t)| Op::Add(a, t)),
        (actor.clone(), 0..N).prop_map(|(a, t)| Op::Remove(a, t)),
        (actor.clone(), 0..N, 0u8..2).prop_map(|(a, t, r)| Op::SetRole(a, t, r)),
        (actor.clone(), 0..N).prop_map(|(a, t)| Op::Transfer(a, t)),
        (actor, 0..N).prop_map(|(a, t)| Op::Mute(a, t)),
    ]
}

/// The reference model: who holds which role; the expected code of each op.
struct Model {
    roles: HashMap<usize, u8>,
}

impl Model {
    /// `Err(code)` when the actor may not act at all with at least `min`.
    fn actor(&self, a: Option<usize>, min: u8) -> Result<Option<u8>, u32> {
        let Some(a) = a else { return Ok(None) };
        let r = *self.roles.get(&a).ok_or(40006u32)?;
        if r < min {
            return Err(if min == 2 { 40009 } else { 40007 });
        }
        Ok(Some(r))
    }

    fn apply(&mut self, op: &Op) -> u32 {
        match *op {
            Op::Add(a, t) => {
                if let Err(c) = self.actor(a, 1) {
                    return c;
                }
                if self.roles.contains_key(&t) {
                    return 40003;
                }
                self.roles.insert(t, 0);
                200
            }
            Op::Remove(a, t) => {
                let ar = match self.actor(a, 0) {
                    Ok(r) => r,
                    Err(c) => return c,
                };
                let Some(&tr) = self.roles.get(&t) else { return 40006 };
                if tr == 2 {
                    return 40010;
                }
                let ok = a == Some(t) || matches!(ar, None | Some(2)) || (ar == Some(1) && tr == 0);
                if !ok {
                    return 40007;
                }
                self.roles.remove(&t);
                200
            }
            Op::SetRole(a, t, r) => {
                let ar = match self.actor(a, 0) {
                    Ok(r) => r,
                    Err(c) => return c,
                };
                let Some(&tr) = self.roles.get(&t) else { return 40006 };
                if ar.is_some_and(|x| x < 2) {
                    return 40009;
                }
                if tr == 2 {
                    return 90001;
                }
                self.roles.insert(t, r);
                200
            }
            Op::Transfer(a, t) => {
                if let Err(c) = self.actor(a, 2) {
                    return c;
                }
                let Some(&tr) = self.roles.get(&t) else { return 40006 };
                if tr != 2 {
                    for r in self.roles.values_mut() {
                        if *r == 2 {
                            *r = 0;
                        }
                    }
                    self.roles.insert(t, 2);
                }
                200
            }
            Op::Mute(a, t) => {
                let ar = match self.actor(a, 1) {
                    Ok(r) => r,
                    Err(c) => return c,
                };
                let Some(&tr) = self.roles.get(&t) else { return 40006 };
                if tr == 2 || (tr == 1 && ar == Some(1)) {
                    return 40007;
                }
                200
            }
        }
    }
}

async fn run_model(ops: Vec<Op>) {
    let h = harness();
    let ids: Vec<String> = (0..N).map(name).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    users(&h, &refs).await;
    h.ok("/group/createGroup", json!({"groupId": "m", "groupType": 2, "ownerId": "u0"})).await;
    let mut model = Model { roles: HashMap::from([(0, 2)]) };
    for op in &ops {
        let (path, body, actor) = match *op {
            Op::Add(a, t) => ("/group/addMember", json!({"groupId": "m", "members": [{"memberId": name(t)}]}), a),
            Op::Remove(a, t) => ("/group/deleteMember", json!({"groupId": "m", "memberIds": [name(t)]}), a),
            Op::SetRole(a, t, r) => ("/group/updateMember", json!({"groupId": "m", "memberId": name(t), "role": r}), a),
            Op::Transfer(a, t) => ("/group/changeGroupOwner", json!({"groupId": "m", "ownerId": name(t)}), a),
            Op::Mute(a, t) => {
                ("/group/forbidSendMsg", json!({"groupId": "m", "memberIds": [name(t)], "shutUpTime": 60}), a)
            }
        };
        let body = with_op(body, actor.map(name).as_deref());
        let got = code(&h, path, body).await;
        let want = model.apply(op);
        assert_eq!(got, want, "{op:?} after {:?}", model.roles);
        let now = roles(&h, "m", &refs).await;
        let expect: Vec<Value> = (0..N).map(|i| model.roles.get(&i).map_or(Value::Null, |r| json!(r))).collect();
        assert_eq!(now, expect, "roles after {op:?}");
    }
}

proptest! {
    // Each case is a fresh node with an fsyncing store: few, longer cases.
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random sequences of owner / admin / member / app-admin actions answer exactly
    /// what the reference model says, and leave exactly its roles.
    #[test]
    fn roles_and_permissions_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_model(ops));
    }
}
