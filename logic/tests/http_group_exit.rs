//! The original API's member exit (`/group/quitGroup`, alias `member/exit`) and
//! whole-group mute (`/group/forbidSendMessage`), through the real router over a real
//! embedded store (issue 11).

mod support;

use serde_json::{json, Value};
use tern_logic::LogicConfig;

use support::{app_config, APP};

async fn code(h: &support::Harness, path: &str, body: Value) -> u64 {
    h.admin(APP, path, &body).await.json(path)["code"].as_u64().unwrap()
}

async fn send(h: &support::Harness, from: &str, id: &str) -> u64 {
    let body = json!({"groupId": "g", "fromId": from, "messageId": id, "messageBody": id});
    code(h, "/group/sendMessage", body).await
}

#[tokio::test]
async fn members_quit_and_the_whole_group_is_muted() {
    let h = support::Harness::new(LogicConfig::default(), vec![app_config(APP, json!({}))], None);
    let data: Vec<Value> = ["o", "a", "b", "x"].iter().map(|u| json!({"userId": u})).collect();
    h.ok("/user/importUser", json!({ "userData": data })).await;
    h.ok(
        "/group/createGroup",
        json!({"groupId": "g", "groupType": 1, "ownerId": "o",
        "memberList": [{"memberId": "a", "role": 1}, {"memberId": "b"}]}),
    )
    .await;

    // Whole-group mute: members 40012, the owner and admins still send.
    h.ok("/group/forbidSendMessage", json!({"groupId": "g", "mute": true})).await;
    assert_eq!(send(&h, "b", "b1").await, 40012);
    assert_eq!(send(&h, "a", "a1").await, 200);
    assert_eq!(send(&h, "o", "o1").await, 200);
    let info = h.ok("/group/get", json!({"groupId": "g"})).await;
    assert_eq!(info["group"]["mute"], json!(true), "{info}");
    // A plain member may not mute or unmute; an admin may.
    let as_b = json!({"groupId": "g", "mute": false, "operater": "b"});
    assert_eq!(code(&h, "/group/forbidSendMessage", as_b).await, 40007);
    h.ok("/group/forbidSendMessage", json!({"groupId": "g", "mute": false, "operater": "a"})).await;
    assert_eq!(send(&h, "b", "b2").await, 200);
    assert_eq!(code(&h, "/group/forbidSendMessage", json!({"groupId": "nope", "mute": true})).await, 40000);

    // Exit: the member leaves (its joined list forgets the group); the owner cannot;
    // a non-member gets 40006; the original's path works too.
    h.ok("/group/quitGroup", json!({"groupId": "g", "memberId": "b"})).await;
    assert_eq!(send(&h, "b", "b3").await, 40006);
    let joined = h.ok("/group/getJoinedGroup", json!({"memberId": "b"})).await;
    assert_eq!(joined["totalCount"], json!(0), "{joined}");
    assert_eq!(code(&h, "/group/quitGroup", json!({"groupId": "g", "memberId": "o"})).await, 40010);
    assert_eq!(code(&h, "/group/quitGroup", json!({"groupId": "g", "memberId": "x"})).await, 40006);
    h.ok("/group/member/exit", json!({"groupId": "g", "memberId": "a"})).await;
    let roles = h.ok("/group/getRoleInGroup", json!({"groupId": "g", "memberIds": ["o", "a", "b"]})).await;
    let members: Vec<Value> = roles["list"].as_array().unwrap().iter().map(|i| i["isMember"].clone()).collect();
    assert_eq!(members, [json!(true), json!(false), json!(false)], "{roles}");
}
