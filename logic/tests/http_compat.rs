//! Compatibility with the original system and the API's strictness, through the real
//! router: every documented path (aliases included) is served, the original's common
//! body fields and names, integral floats for integer fields, `operater` standing in
//! for `fromId`, sendMsg's extra fields (stored, answered, and `messageLifeTime`
//! honoured by offline sync), UserSig signatures, and typos still refused.

mod support;

use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};
use tern_logic::LogicConfig;
use tern_schema::{sig, usersig};

use support::{admin_query, app_config, Harness, APP, SECRET};

fn harness() -> Harness {
    Harness::new(LogicConfig::default(), vec![app_config(APP, json!({}))], None)
}

async fn with_users(users: &[&str]) -> Harness {
    let h = harness();
    let data: Vec<Value> = users.iter().map(|u| json!({"userId": u})).collect();
    let d = h.ok("/user/importUser", json!({ "userData": data })).await;
    assert_eq!(d["errorId"], json!([]), "{d}");
    h
}

#[tokio::test]
async fn every_documented_path_is_served() {
    let h = harness();
    let doc = support::send(&h.router, Method::GET, "/openapi.json", Vec::new()).await.json("openapi");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 40, "{}", paths.len());
    for (path, item) in paths {
        let method = if item.get("get").is_some() { Method::GET } else { Method::POST };
        let uri = format!("{path}?{}", admin_query(APP));
        let a = support::send(&h.router, method, &uri, b"{}".to_vec()).await;
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(json!({}));
        let unrouted = v["msg"].as_str().is_some_and(|m| m.starts_with("no such endpoint") && !m.contains("recorder"));
        assert!(!unrouted, "{path} is documented but not served: {v}");
        assert_ne!(a.status, 405, "{path}");
    }
    let a = support::send(&h.router, Method::POST, &format!("/v1/user/qeury?{}", admin_query(APP)), vec![]).await;
    a.check("undocumented", 90004, "no such endpoint");
}

#[tokio::test]
async fn request_schemas_are_strict_and_typed() {
    let doc = tern_logic::http::openapi();
    let op = &doc["paths"]["/v1/message/getOfflineMessage"]["post"];
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["additionalProperties"], json!(false), "{body}");
    for common in ["appId", "operater", "clientType", "imei"] {
        assert!(body["properties"][common].is_object(), "{common} not in {body}");
    }
    assert_eq!(body["properties"]["lastSequence"]["format"], json!("uint64"), "{body}");
    assert_eq!(doc["components"]["securitySchemes"]["userSign"]["in"], json!("query"));
    assert_eq!(op["security"], json!([{"appId": [], "identifier": [], "userSign": []}]));
    let alias = &doc["paths"]["/v1/message/syncOfflineMessage"]["post"];
    assert_eq!(alias["x-alias-of"], json!("/v1/message/getOfflineMessage"));
}

#[tokio::test]
async fn common_fields_names_and_floats_of_the_original() {
    let h = with_users(&["a", "b"]).await;
    let common = json!({"appId": APP, "operater": "a", "clientType": 2, "imei": "dev-1"});
    let mut body = json!({"lastSequence": 0.0, "maxLimit": 50.0});
    body.as_object_mut().unwrap().extend(common.as_object().unwrap().clone());
    // No fromId: `operater` names the user, as the original's sync calls do.
    let d = h.ok("/message/getOfflineMessage", body.clone()).await;
    assert_eq!(d["completed"], json!(true));
    h.check_in(APP, "/message/getOfflineMessage", json!({"maxLimit": 50.5, "fromId": "a"}), 90001, "maxLimit").await;
    h.check_in(APP, "/message/getOfflineMessage", json!({}), 90001, "fromId: missing").await;
    h.check_in(APP, "/friendship/sync", json!({"operater": "a b"}), 90001, "operater").await;
    h.check_in(APP, "/friendship/sync", json!({"fromId": "a", "clientType": 9}), 90001, "clientType").await;
    h.check_in(APP, "/friendship/sync", json!({"fromId": "a", "lastSeq": 1}), 90001, "lastSeq: unknown field").await;
    h.check_in(APP, "/friendship/sync", json!({"fromId": "a", "appId": 1}), 90001, "appId: 1 differs").await;

    // The original's list names and paths.
    let d = h.ok("/user/qeuryOnlineStatus", json!({"userList": ["a", "b"]})).await;
    assert_eq!(d["statusList"].as_array().map(Vec::len), Some(2), "{d}");
    let d = h.ok("/user/queryUserOnlineStatus", json!({"userList": ["a"]})).await;
    assert_eq!(d["statusList"][0]["userId"], json!("a"));
    h.check_in(APP, "/user/queryOnlineStatus", json!({"userList": ["a"], "userIds": ["b"]}), 90001, "not both").await;
    let d = h.ok("/user/deleteUser", json!({"userId": ["b"]})).await;
    assert_eq!(d["successId"], json!(["b"]));

    // password: accepted on import and modify, never answered.
    h.ok("/user/importUser", json!({"userData": [{"userId": "c", "password": "secret-pw"}]})).await;
    h.ok("/user/data/modifyUserInfo", json!({"userId": "c", "nickName": "C", "password": "other-pw"})).await;
    let d = h.ok("/user/data/getSingleUserInfo", json!({"userId": "c"})).await;
    assert!(!d.to_string().contains("pw"), "{d}");
}

#[tokio::test]
async fn send_msg_keeps_the_originals_fields_and_honours_message_life_time() {
    let h = with_users(&["a", "b"]).await;
    let send = |id: &str, life: u32| {
        json!({"fromId": "a", "toId": "b", "messageId": id, "messageBody": id, "messageRandom": -7,
               "messageTime": 1_700_000_000_000u64, "badgeMode": 1, "messageLifeTime": life})
    };
    h.ok("/message/send", send("short", 1)).await;
    h.ok("/message/sendMsg", send("long", 3600)).await;
    let d = h.ok("/message/syncOfflineMessage", json!({"fromId": "b"})).await;
    let first = &d["dataList"][0];
    assert_eq!(
        (&first["messageRandom"], &first["clientTime"], &first["badgeMode"], &first["messageLifeTime"]),
        (&json!(-7), &json!(1_700_000_000_000u64), &json!(1), &json!(1)),
        "{first}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The expired message has left offline sync (for both parties); history keeps it.
    for user in ["a", "b"] {
        let d = h.ok("/message/getOfflineMessage", json!({"fromId": user})).await;
        let ids: Vec<&str> = d["dataList"].as_array().unwrap().iter().filter_map(|m| m["messageId"].as_str()).collect();
        assert_eq!(ids, ["long"], "{user}: {d}");
    }
    let d = h.ok("/message/getHistoryMessage", json!({"fromId": "b", "toId": "a"})).await;
    assert_eq!(d["dataList"].as_array().map(Vec::len), Some(2), "{d}");
    h.check_in(
        APP,
        "/message/sendMsg",
        json!({"fromId": "a", "toId": "b", "messageId": "x", "messageBody": "x",
        "badgeMode": 2}),
        90001,
        "badgeMode",
    )
    .await;
}

#[tokio::test]
async fn usersig_signatures_are_accepted_with_the_same_rules() {
    let h = with_users(&["u1"]).await;
    let now = tern_logic::now_ms() / 1000;
    let call = |identifier: &str, sign: String, path: &str| {
        format!("/v1{path}?appId={APP}&identifier={identifier}&userSign={sign}")
    };
    let body = json!({"userId": "u1"}).to_string().into_bytes();
    let admin = usersig::sign(SECRET.as_bytes(), APP, "admin", now, 600);
    let uri = call("admin", admin, "/user/data/getSingleUserInfo");
    let a = support::send(&h.router, Method::POST, &uri, body.clone());
    a.await.check("admin UserSig", 200, "success");
    let expired = usersig::sign(SECRET.as_bytes(), APP, "admin", now - 700, 600);
    let uri = call("admin", expired, "/user/data/getSingleUserInfo");
    let a = support::send(&h.router, Method::POST, &uri, body.clone());
    a.await.check("expired UserSig", 60004, "expired");
    // A user's UserSig is no admin credential: the identifier must be an admin.
    let user = usersig::sign(SECRET.as_bytes(), APP, "u1", now, 600);
    let uri = call("u1", user.clone(), "/user/data/getSingleUserInfo");
    let a = support::send(&h.router, Method::POST, &uri, body);
    a.await.check("user UserSig on an admin call", 60005, "not an admin");
    let uri = call("u1", user, "/user/login");
    let a = support::send(&h.router, Method::POST, &uri, b"{\"clientType\": 1}".to_vec());
    let d = a.await.check("login with a UserSig", 200, "success");
    assert_eq!(
        (d["ip"].as_str(), d["port"].as_u64()),
        (Some("127.0.0.1"), Some(19000)),
        "web routes to WebSocket: {d}"
    );
    // Tern's admin signature never logs in.
    let admin_sig = sig::sign_admin(SECRET.as_bytes(), APP, "u1", now + 600);
    let uri = call("u1", admin_sig, "/user/login");
    let a = support::send(&h.router, Method::POST, &uri, vec![]);
    a.await.check("admin signature at login", 60003, "purpose");
}
