//! The operator files name only metrics Tern exports: starts `tern logic` + `tern
//! gateway` (gateway metrics on their own port), exercises them a little — logins, a
//! replaced login, 1:1 and group sends, push-acks, refusals over TCP and HTTP, business
//! callbacks that succeed and fail — scrapes both live `/metrics`, and checks every metric
//! name in `deploy/grafana/tern.json` and `deploy/prometheus/tern-alerts.yml` against
//! them.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use common::{Mode, Options, Tern, SECRET};
use serde_json::{json, Value};
use tern_loadtest::client::{Client, Transport};
use tern_schema::client::{Body, ClientType, ElemType, SyncKind};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

const APP: u32 = 31_001;
/// An app without callbacks: its sends take the link reader's turn path.
const PLAIN: u32 = 31_002;
const WAIT: Duration = Duration::from_secs(10);

/// The metric names of a Prometheus text exposition (samples, so `_sum`/`_count` too).
fn names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The metric names a PromQL expression reads: identifiers outside label matchers,
/// ranges, strings and grouping lists that are neither functions nor keywords.
fn promql_metrics(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] =
        &["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"];
    // Drop strings, {...}, [...] and the (...) after by/without/on/ignoring.
    let mut s = String::new();
    let chars = expr.chars();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_str: Option<char> = None;
    for c in chars {
        if let Some(q) = in_str {
            if c == q {
                in_str = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' if depth_brace == 0 => in_str = Some(c),
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => s.push(c),
        }
    }
    let mut out = Vec::new();
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let mut j = i;
            while j < bytes.len() && bytes[j] == ' ' {
                j += 1;
            }
            let next: String = bytes[j..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
            // `sum by (x) (...)`: an aggregation with its grouping before the parenthesis.
            let is_call = (j < bytes.len() && bytes[j] == '(') || next == "by" || next == "without";
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
                skip_group = true;
            } else if !is_call && !KEYWORDS.contains(&word.as_str()) {
                out.push(word);
            }
            continue;
        }
        if c == '(' && skip_group {
            // A label list: skip to its closing parenthesis.
            while i < bytes.len() && bytes[i] != ')' {
                i += 1;
            }
            skip_group = false;
        } else if !c.is_whitespace() {
            skip_group = false;
        }
        i += 1;
    }
    out
}

#[test]
fn the_promql_scanner_finds_metrics_only() {
    assert_eq!(
        promql_metrics(r#"sum by (code, app) (rate(tern_a_total{code!="200",x=~"a|b"}[5m])) / clamp_min(tern_b, 1)"#),
        ["tern_a_total", "tern_b"]
    );
    assert_eq!(promql_metrics(r#"max(tern_c{quantile="0.99"}) > 0.1 and on (app) up"#), ["tern_c", "up"]);
}

/// Every `expr` of the alert rules (inline or a folded `>` block).
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(rest) = l.trim_start().strip_prefix("expr:") {
            let indent = l.len() - l.trim_start().len();
            let rest = rest.trim();
            if rest == ">" || rest == "|" {
                let mut block = String::new();
                i += 1;
                while i < lines.len() && (lines[i].len() - lines[i].trim_start().len()) > indent {
                    block.push_str(lines[i].trim());
                    block.push(' ');
                    i += 1;
                }
                out.push(block);
                continue;
            }
            out.push(rest.to_string());
        }
        i += 1;
    }
    out
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(e)) = o.get("expr") {
                out.push(e.clone());
            }
            o.values().for_each(|x| dashboard_exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

async fn send(c: &mut Client, id: &str, to: &str, group: bool) -> u32 {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text: "hello", ..Default::default() }];
    let frame =
        if group { message::send_to_group(rid, id, to, &elems, 1) } else { message::send(rid, id, to, &elems, 1) };
    c.send(&frame).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT).await.unwrap();
    f.frame().body_as_send_ack().unwrap().code()
}

fn scrape(addr: &str) -> String {
    let (status, text) = common::http(addr, "GET", "/metrics", "");
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    // The business server: allows every message; after-events go to a closed port.
    let app = Router::new().route("/{*rest}", post(|| async { r#"{"code": 0}"# }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let biz = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw_metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let apps = format!(
        "[[apps]]\nid = {APP}\nsecret = \"{SECRET}\"\nlogin_model = 1\n[apps.callbacks]\n\
         before_send_url = \"{biz}/before\"\nstate_change_url = \"{biz}/events\"\n\
         after_send_url = \"http://{closed}/events\"\nmax_attempts = 2\nretry_backoff_ms = 10\n\
         [[apps]]\nid = {PLAIN}\nsecret = \"{SECRET}\"\n"
    );
    let options =
        Options { extra_toml: format!("metrics_addr = \"{gw_metrics}\""), ..Options::default() }.with_apps(apps);
    let t = Tern::start_with(Mode::Split, options);

    t.import(APP, &["a", "b"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a1").await;
    // Login model 1: a second device of b replaces the first (a kick).
    let _b_old = t.device(Transport::Tcp, APP, "b", ClientType::Ios, "b0").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b1").await;
    assert_eq!(send(&mut a, "m1", "b", false).await, codes::OK);
    let (f, _) = b.recv_until(|f| f.body_type() == Body::Push, WAIT).await.unwrap();
    let seq = f.frame().body_as_push().unwrap().messages().unwrap().get(0).seq();
    b.send(&encode::push_ack(0, SyncKind::Message, seq)).await.unwrap();
    // The plain app: a send, and its resend answered from dedup.
    t.import(PLAIN, &["c", "d"]);
    let mut c = t.device(Transport::Tcp, PLAIN, "c", ClientType::Ios, "c1").await;
    assert_eq!(send(&mut c, "p1", "d", false).await, codes::OK);
    assert_eq!(send(&mut c, "p1", "d", false).await, codes::OK);
    // A refusal over TCP and one over HTTP.
    assert_eq!(send(&mut a, "m2", "nobody", false).await, codes::USER_NOT_FOUND);
    assert_eq!(t.api(APP, "/user/importUser", json!({"userData": "not a list"}))["code"], json!(90001));
    // A group message.
    let r = t.api(
        APP,
        "/group/createGroup",
        json!({"groupId": "g1", "groupType": 2, "ownerId": "a",
        "memberList": [{"memberId": "b"}]}),
    );
    assert_eq!(r["code"], json!(200), "{r}");
    assert_eq!(send(&mut a, "g1m1", "g1", true).await, codes::OK);

    // Wait until the after-send events were given up on (retries, then drops).
    let deadline = Instant::now() + WAIT;
    let logic = loop {
        let text = scrape(&t.http);
        if text.contains("tern_callback_dropped_total{app=\"31001\",reason=\"retries_exhausted\"} 2") {
            break text;
        }
        assert!(Instant::now() < deadline, "after-send drops never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let gateway = scrape(&gw_metrics);
    let exported: BTreeSet<String> = names(&logic).into_iter().chain(names(&gateway)).collect();
    assert!(exported.contains("tern_gateway_connections") && exported.contains("tern_messages_accepted_total"));

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/deploy/grafana/tern.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let alerts = alert_exprs(&std::fs::read_to_string(format!("{root}/deploy/prometheus/tern-alerts.yml")).unwrap());
    assert_eq!(alerts.len(), 10, "{alerts:?}");

    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, e) in exprs.iter().map(|e| ("tern.json", e)).chain(alerts.iter().map(|e| ("tern-alerts.yml", e))) {
        let found = promql_metrics(e);
        assert!(!found.is_empty(), "{file}: no metric in {e:?}");
        for m in found {
            if !exported.contains(&m) {
                missing.push(format!("{file}: {m} (in {e})"));
            }
            used.insert(m);
        }
    }
    assert!(missing.is_empty(), "metrics not exported by a live tern:\n{}", missing.join("\n"));
    // The panels the issue asks for are there.
    for m in [
        "tern_gateway_connections",
        "tern_logins_total",
        "tern_messages_accepted_total",
        "tern_push_acks_total",
        "tern_push_delay_seconds",
        "tern_store_group_commit_seconds",
        "tern_sends_in_flight",
        "tern_send_admission_limit",
        "tern_send_refusals_total",
        "tern_callback_requests_total",
        "tern_callback_dropped_total",
    ] {
        assert!(used.contains(m), "the operator files do not chart {m}");
    }
}
