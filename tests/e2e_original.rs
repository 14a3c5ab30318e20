//! A business server written for the original system, against the real `tern` binary:
//! `scripts/original-client.py` sends requests shaped from the original's API (its
//! controller paths, RequestBase fields, names and UserSig signatures, minted with
//! Python's standard library: an implementation independent of Tern's), and a device
//! logs in over TCP with such a UserSig.

mod common;

use std::process::Command;

use common::{Mode, Tern, SECRET};
use tern_loadtest::client::{LoginOutcome, Transport};
use tern_schema::client::ClientType;
use tern_schema::codes;

const APP: u32 = 10_000;

fn script() -> String {
    format!("{}/scripts/original-client.py", env!("CARGO_MANIFEST_DIR"))
}

/// A UserSig for `user` minted by the Python script.
fn python_usersig(user: &str, issued: u64, ttl: u64) -> String {
    let out = Command::new("python3")
        .args([&script(), "usersig", SECRET, &APP.to_string(), user, &issued.to_string(), &ttl.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

#[test]
fn an_original_business_server_works_unchanged() {
    let t = Tern::start(Mode::AllInOne);
    let out = Command::new("python3")
        .args([&script(), "run", &t.http, &APP.to_string(), SECRET, "admin"])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every call answered as expected"), "{stdout}");
}

#[tokio::test]
async fn a_device_logs_in_with_a_usersig() {
    let t = Tern::start(Mode::AllInOne);
    t.import(APP, &["alice"]);
    let now = common::now_secs();
    let good = python_usersig("alice", now, 600);
    let (_c, outcome) = t.login(Transport::Tcp, APP, "alice", &good, ClientType::Ios, "p1").await;
    assert!(matches!(outcome, LoginOutcome::Ok(_)), "{outcome:?}");
    let expired = python_usersig("alice", now - 700, 600);
    let (_c, outcome) = t.login(Transport::Tcp, APP, "alice", &expired, ClientType::Ios, "p2").await;
    assert!(matches!(outcome, LoginOutcome::Rejected { code, .. } if code == codes::SIGN_EXPIRED), "{outcome:?}");
    let other = python_usersig("bob", now, 600);
    let (_c, outcome) = t.login(Transport::Tcp, APP, "alice", &other, ClientType::Ios, "p3").await;
    assert!(matches!(outcome, LoginOutcome::Rejected { code, .. } if code == codes::SIGN_WRONG), "{outcome:?}");
}
