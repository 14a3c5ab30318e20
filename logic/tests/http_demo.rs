//! The web chat page's routes through the real router: served by default, gone with
//! `[demo] enabled = false`, and `/demo/session` only for the development app (it creates
//! the user and answers a login signature that verifies, and the user's groups).

mod support;

use axum::http::Method;
use serde_json::json;
use tern_logic::config::DemoConfig;
use tern_logic::LogicConfig;
use tern_schema::sig;

use support::{app_config, send, Harness, APP, SECRET};

fn harness(enabled: bool, dev_app: bool) -> Harness {
    let config =
        LogicConfig { demo: DemoConfig { enabled }, dev_app_id: dev_app.then_some(APP), ..LogicConfig::default() };
    Harness::new(config, vec![app_config(APP, json!({}))], None)
}

async fn session(h: &Harness, body: serde_json::Value) -> support::Answer {
    send(&h.router, Method::POST, "/demo/session", serde_json::to_vec(&body).unwrap()).await
}

#[tokio::test]
async fn page_is_served_by_default_and_gone_when_disabled() {
    let h = harness(true, false);
    let page = send(&h.router, Method::GET, "/demo", vec![]).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
    assert!(String::from_utf8_lossy(&page.body).contains("/demo/demo.js"));
    let js = send(&h.router, Method::GET, "/demo/demo.js", vec![]).await;
    assert_eq!(js.status, 200);
    assert!(js.content_type.starts_with("text/javascript"), "{}", js.content_type);
    assert!(js.body.len() > 1_000, "the bundle is embedded");

    let off = harness(false, true);
    for path in ["/demo", "/demo/demo.js"] {
        send(&off.router, Method::GET, path, vec![]).await.check(path, 90_004, "no such endpoint");
    }
    session(&off, json!({"userId": "alice"})).await.check("session when off", 90_004, "no such endpoint");
}

#[tokio::test]
async fn session_exists_only_for_the_development_app() {
    let h = harness(true, false);
    session(&h, json!({"userId": "alice"})).await.check("configured apps", 90_004, "no such endpoint");
}

#[tokio::test]
async fn session_creates_the_user_and_signs_it_in() {
    let h = harness(true, true);
    let d = session(&h, json!({"userId": "alice"})).await.check("session", 200, "success");
    assert_eq!(d["appId"], json!(APP));
    assert_eq!(d["userId"], json!("alice"));
    let sign = d["userSign"].as_str().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry = sig::verify(SECRET.as_bytes(), APP, "alice", sign, now).expect("a login signature for alice");
    assert_eq!(json!(expiry), d["expiresAt"]);
    assert!(expiry > now + 3_000 && expiry <= now + 3_600, "about an hour: {expiry} vs {now}");
    assert_eq!(d["wsUrls"], json!(LogicConfig::default().advertise_ws));
    assert_eq!(d["groups"], json!([]));
    // The user exists now.
    let info = h.ok("/user/data/getSingleUserInfo", json!({"userId": "alice"})).await;
    assert_eq!(info["userId"], json!("alice"), "{info}");
    // A second session keeps the user as it is, and lists the groups it joined since.
    h.ok("/group/createGroup", json!({"groupId": "team", "groupType": 3, "memberList": [{"memberId": "alice"}]})).await;
    let again = session(&h, json!({"userId": "alice"})).await.check("again", 200, "success");
    assert_eq!(again["groups"], json!(["team"]));

    session(&h, json!({"userId": "no spaces"})).await.check("bad id", 90_001, "userId");
    session(&h, json!({"user": "alice"})).await.check("unknown field", 90_001, "body");
    // An admin identifier is never a user (its login signature would be an admin's).
    let admin = session(&h, json!({"userId": "admin"})).await;
    assert_ne!(admin.json("admin")["code"], json!(200));
}
