//! End-to-end groups over real sockets, in both deployments (and on the CQL backend with
//! `TERN_E2E_BACKEND=scylla`): every group endpoint and its refusal codes over HTTP,
//! group sends over TCP and WebSocket with read fan-out (every online member's devices
//! get the push, the sender's own connection only the ack), mutes refusing TCP sends,
//! join-time visibility, and an offline member pulling the group timeline by group seq
//! over TCP and HTTP.

mod common;

use std::time::Duration;

use common::{Mode, Tern};
use serde_json::{json, Value};
use tern_loadtest::client::{Client, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, ConversationType, ElemType};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

const APP: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(5);

/// The envelope's code, or for a successful batch its first item's.
fn code(r: &Value) -> u64 {
    match (r["code"].as_u64().unwrap(), r["data"]["errorId"].as_array()) {
        (200, Some(e)) if !e.is_empty() => e[0]["code"].as_u64().unwrap(),
        (c, _) => c,
    }
}

async fn group_send(c: &mut Client, id: &str, group: &str, text: &str) -> (u32, u64) {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text, ..Default::default() }];
    c.send(&message::send_to_group(rid, id, group, &elems, 1)).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT).await.expect("ack");
    let a = f.frame().body_as_send_ack().unwrap();
    (a.code(), a.seq())
}

/// The next push: (group seq, conversation type, to, text).
async fn next_push(c: &mut Client) -> (u64, ConversationType, String, String) {
    let (f, _) = c.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("push");
    first(&f)
}

fn first(f: &OwnedFrame) -> (u64, ConversationType, String, String) {
    let m = f.frame().body_as_push().unwrap().messages().unwrap().get(0);
    let text = m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default();
    (m.seq(), m.conversation_type(), m.to_id().unwrap_or_default().to_string(), text)
}

async fn no_push(c: &mut Client) {
    if let Ok(Some(f)) = c.recv_timeout(Duration::from_millis(400)).await {
        assert_ne!(f.body_type(), Body::Push, "unexpected push: {}", f.describe());
    }
}

/// Pulls a group's timeline over TCP after `after`: (seq, text) of every message.
async fn tcp_pull(c: &mut Client, group: &str, after: u64) -> Result<Vec<(u64, String)>, u32> {
    let rid = c.next_request_id();
    c.send(&encode::pull_group(rid, group, after, 50)).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid, WAIT).await.expect("pull answer");
    if f.body_type() == Body::Error {
        return Err(f.frame().body_as_error().unwrap().code());
    }
    let p = f.frame().body_as_pull_result().expect("pull result");
    Ok(p.messages()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (m.seq(), m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default())
}

async fn endpoints_and_refusals(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["o", "adm", "m", "x"]);
    let api = |path: &str, body: Value| t.api(APP, path, body);
    let r = api(
        "/group/createGroup",
        json!({"groupId": "g", "groupType": 2, "groupName": "G", "ownerId": "o",
            "memberList": [{"memberId": "adm", "role": 1}, {"memberId": "m"}, {"memberId": "ghost"}]}),
    );
    assert_eq!((r["code"].clone(), r["data"]["successId"].clone()), (json!(200), json!(["adm", "m"])), "{r}");
    assert_eq!(r["data"]["errorId"][0]["code"], json!(20001));
    assert_eq!(code(&api("/group/createGroup", json!({"groupId": "g", "groupType": 1}))), 40001);
    assert_eq!(code(&api("/group/createGroup", json!({"groupType": 2}))), 40016);
    assert_eq!(code(&api("/group/get", json!({"groupId": "none"}))), 40000);
    let g = api("/group/getGroupInfo", json!({"groupId": "g"}));
    assert_eq!(g["data"]["group"]["memberCount"], json!(3), "{g}");
    assert_eq!(api("/group/getAll", json!({"groupType": [2]}))["data"]["groupList"][0]["groupId"], json!("g"));
    assert_eq!(api("/group/getGroupMember", json!({"groupId": "g", "limit": 2}))["data"]["completed"], json!(false));
    let roles = api("/group/getRoleInGroup", json!({"groupId": "g", "memberIds": ["o", "adm", "m", "x"]}));
    let got: Vec<Value> = roles["data"]["list"].as_array().unwrap().iter().map(|i| i["role"].clone()).collect();
    assert_eq!(got, [json!(2), json!(1), json!(0), Value::Null]);

    let as_user = |op: &str, mut body: Value| {
        body["operater"] = json!(op);
        body
    };
    assert_eq!(
        code(&api("/group/addMember", as_user("m", json!({"groupId": "g", "members": [{"memberId": "x"}]})))),
        40007
    );
    assert_eq!(
        code(&api("/group/addMember", as_user("x", json!({"groupId": "g", "members": [{"memberId": "x"}]})))),
        40006
    );
    assert_eq!(code(&api("/group/addMember", json!({"groupId": "g", "members": [{"memberId": "m"}]}))), 40003);
    assert_eq!(code(&api("/group/deleteMember", json!({"groupId": "g", "memberIds": ["o"]}))), 40010);
    assert_eq!(
        code(&api("/group/updateMember", as_user("adm", json!({"groupId": "g", "memberId": "m", "role": 1})))),
        40009
    );
    assert_eq!(code(&api("/group/update", as_user("m", json!({"groupId": "g", "groupName": "n"})))), 40007);
    assert_eq!(code(&api("/group/changeGroupOwner", json!({"groupId": "g", "ownerId": "x"}))), 40006);
    let r = api(
        "/group/createGroup",
        json!({"groupId": "tiny", "groupType": 1, "ownerId": "o", "maxMemberCount": 1,
        "memberList": [{"memberId": "m"}]}),
    );
    assert_eq!(code(&r), 40005);

    // Mutes refuse sends (HTTP here, TCP in the next case); owner and admins may send.
    assert_eq!(code(&api("/group/forbidSendMsg", json!({"groupId": "g", "memberIds": ["m"], "shutUpTime": 60}))), 200);
    let shut = api("/group/getGroupShuttedUin", json!({"groupId": "g"}));
    assert_eq!(shut["data"]["list"][0]["memberId"], json!("m"));
    let send = |from: &str, id: &str| {
        api("/group/sendMessage", json!({"groupId": "g", "fromId": from, "messageId": id, "messageBody": id}))
    };
    assert_eq!(code(&send("m", "1")), 40017);
    assert_eq!(code(&send("x", "2")), 40006);
    assert_eq!(code(&api("/group/update", json!({"groupId": "g", "mute": true}))), 200);
    assert_eq!(code(&api("/group/forbidSendMsg", json!({"groupId": "g", "memberIds": ["m"], "shutUpTime": 0}))), 200);
    assert_eq!(code(&send("m", "3")), 40012);
    assert_eq!(code(&send("adm", "4")), 200);

    // Joined groups and their sync log; ownership; import; dissolving.
    let j = api("/group/getJoinedGroup", json!({"memberId": "m"}));
    assert_eq!(j["data"]["totalCount"], json!(1), "{j}"); // tiny refused m (full)
    assert_eq!(code(&api("/group/transferGroup", json!({"groupId": "g", "ownerId": "adm"}))), 200);
    let r = api("/group/import", json!({"groupId": "imp", "groupType": 1, "ownerId": "o", "createTime": 5}));
    assert_eq!(code(&r), 200);
    let r = api("/group/importMember", json!({"groupId": "imp", "members": [{"memberId": "x", "joinTime": 7}]}));
    assert_eq!(r["data"]["successId"], json!(["x"]));
    assert_eq!(code(&api("/group/destroyGroup", as_user("o", json!({"groupId": "g"})))), 40009);
    assert_eq!(code(&api("/group/destroyGroup", json!({"groupId": "g"}))), 200);
    assert_eq!(code(&send("adm", "5")), 40018);
    let sync = api("/group/syncJoinedGroup", json!({"fromId": "m", "lastSequence": 0}));
    let last = sync["data"]["dataList"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last["groupId"].clone(), last["deleted"].clone(), last["destroyed"].clone()),
        (json!("g"), json!(true), json!(true))
    );
}

async fn tcp_sends_fan_out_and_offline_members_pull(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b", "c", "late", "out"]);
    let r = t.api(
        APP,
        "/group/createGroup",
        json!({"groupId": "team", "groupType": 1, "ownerId": "a",
        "memberList": [{"memberId": "b"}, {"memberId": "c"}]}),
    );
    assert_eq!(r["code"], json!(200), "{r}");
    let mut a_tcp = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a1").await;
    let mut a_ws = t.device(Transport::Ws, APP, "a", ClientType::Web, "a2").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b1").await;
    let mut out = t.device(Transport::Tcp, APP, "out", ClientType::Android, "o1").await;
    // c is offline.

    let (code1, seq1) = group_send(&mut a_tcp, "m1", "team", "hello").await;
    assert_eq!(code1, codes::OK);
    assert_eq!(seq1, 1, "the group's first seq");
    for c in [&mut a_ws, &mut b] {
        assert_eq!(next_push(c).await, (1, ConversationType::Group, "team".into(), "hello".into()));
    }
    no_push(&mut a_tcp).await;
    no_push(&mut out).await;
    // A resend answers the same seq and pushes nothing new.
    assert_eq!(group_send(&mut a_tcp, "m1", "team", "hello").await, (codes::OK, 1));
    no_push(&mut b).await;
    // Non-members and unknown groups are refused.
    assert_eq!(group_send(&mut out, "o1", "team", "let me in").await.0, 40006);
    assert_eq!(group_send(&mut out, "o2", "nope", "?").await.0, 40000);
    // Muted member over TCP.
    t.api(APP, "/group/forbidSendMsg", json!({"groupId": "team", "memberIds": ["b"], "shutUpTime": 60}));
    assert_eq!(group_send(&mut b, "b1", "team", "shh").await.0, 40017);
    t.api(APP, "/group/forbidSendMsg", json!({"groupId": "team", "memberIds": ["b"], "shutUpTime": 0}));
    assert_eq!(group_send(&mut b, "b2", "team", "back").await.0, codes::OK);
    assert_eq!(next_push(&mut a_tcp).await.3, "back");

    // A member who joins later sees messages from their join on.
    t.api(APP, "/group/addMember", json!({"groupId": "team", "members": [{"memberId": "late"}]}));
    let (ok, seq3) = group_send(&mut a_tcp, "m3", "team", "welcome").await;
    assert_eq!(ok, codes::OK);

    // c comes online and pulls everything by group seq; late only from their join.
    let mut c = t.device(Transport::Ws, APP, "c", ClientType::Web, "c1").await;
    let all = tcp_pull(&mut c, "team", 0).await.unwrap();
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["hello", "back", "welcome"]);
    assert_eq!(all.last().unwrap().0, seq3);
    assert_eq!(tcp_pull(&mut c, "team", seq3).await.unwrap(), vec![]);
    let mut late = t.device(Transport::Tcp, APP, "late", ClientType::Ios, "l1").await;
    let mine = tcp_pull(&mut late, "team", 0).await.unwrap();
    assert_eq!(mine, vec![(seq3, "welcome".to_string())]);
    assert_eq!(tcp_pull(&mut out, "team", 0).await, Err(40006));
    let http = t.api(APP, "/group/pullMessage", json!({"groupId": "team", "memberId": "late", "lastSequence": 0}));
    assert_eq!(http["data"]["dataList"].as_array().unwrap().len(), 1, "{http}");
    // A group read receipt over TCP: the reader's other devices are told; the sender
    // asks who read.
    let mut late2 = t.device(Transport::Ws, APP, "late", ClientType::Web, "l2").await;
    late.send(&message::read_receipt_group(0, "team", seq3)).await.unwrap();
    let (f, _) = late2.recv_until(|f| f.body_type() == Body::ReadReceiptNotify, WAIT).await.expect("notify");
    let n = f.frame().body_as_read_receipt_notify().unwrap();
    assert_eq!((n.conversation_type(), n.peer_id(), n.read_seq()), (ConversationType::Group, Some("team"), seq3));
    let key = http["data"]["dataList"][0]["messageKey"].clone();
    let r = t.api(APP, "/group/getReadReceipt", json!({"groupId": "team", "messageKey": key}));
    assert_eq!((r["data"]["readList"].clone(), r["data"]["unreadCount"].clone()), (json!(["late"]), json!(2)), "{r}");
    // A group PushAck is accepted and leaves the inbox alone.
    late.send(&encode::push_ack_group(0, "team", seq3)).await.unwrap();
    no_push(&mut late).await;
}

in_both_modes!(endpoints_and_refusals, tcp_sends_fan_out_and_offline_members_pull);
