//! Logic reports on each link how many of the Sends it carried it has answered
//! (`SendsAnswered`, the gateway core's window of sends in flight): every Send counted
//! exactly once whatever its fate — accepted, refused, a resend, or from a connection
//! whose session is gone — and nothing else counted. Driven as a gateway core would,
//! over a real in-process link to logic.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{app_config, Harness, APP};
use tern_logic::link::InProcessLinks;
use tern_logic::LogicConfig;
use tern_schema::client::{Body, ElemType, SyncKind};
use tern_schema::encode::{self, SessionOpenParts};
use tern_schema::frame::{parse_client_framed, parse_header, parse_link, HEADER_LEN};
use tern_schema::link::{ConnRef, LinkBody};
use tern_schema::message::{self, ElemParts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What came back on the link, in order: client frames by (kind, request id, code),
/// and the reported totals.
#[derive(Debug, Default)]
struct Seen {
    answers: Vec<(Body, u32, u32)>,
    totals: Vec<u64>,
}

async fn read_link_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).await.unwrap();
    let len = parse_header(h, 16 << 20).unwrap();
    let mut f = vec![0; len];
    s.read_exact(&mut f).await.unwrap();
    f
}

/// Reads until `done` says the link has said enough (bounded in time).
async fn read_until(s: &mut UnixStream, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(seen) {
        let f = tokio::time::timeout_at(deadline, read_link_frame(s)).await.unwrap_or_else(|_| panic!("{seen:?}"));
        let lf = parse_link(&f).unwrap();
        match lf.body_type() {
            LinkBody::SendsAnswered => seen.totals.push(lf.body_as_sends_answered().unwrap().total()),
            LinkBody::Deliver | LinkBody::SessionOpened => {
                let inner = lf
                    .body_as_deliver()
                    .and_then(|d| d.frame())
                    .or_else(|| lf.body_as_session_opened().and_then(|o| o.frame()))
                    .unwrap();
                let cf = parse_client_framed(inner.bytes(), 1 << 20).unwrap();
                let code = match cf.body_type() {
                    Body::SendAck => cf.body_as_send_ack().unwrap().code(),
                    Body::Error => cf.body_as_error().unwrap().code(),
                    _ => 0,
                };
                seen.answers.push((cf.body_type(), cf.request_id(), code));
            }
            _ => {}
        }
    }
}

fn send(rid: u32, client_msg_id: &str, to: &str) -> Vec<u8> {
    let elems = [ElemParts { elem_type: ElemType::Text, text: "hi", ..Default::default() }];
    message::send(rid, client_msg_id, to, &elems, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_is_counted_once_in_the_links_answered_total() {
    let h = Harness::new(LogicConfig::default(), vec![app_config(APP, json!({}))], None);
    let users: Vec<Value> = ["a", "b"].iter().map(|u| json!({"userId": u})).collect();
    h.ok("/user/importUser", json!({ "userData": users })).await;
    let links = InProcessLinks::new();
    let dial = links.dialer();
    tokio::spawn(links.accept_loop(h.logic.clone()));
    let gw = dial().unwrap();
    gw.set_nonblocking(true).unwrap();
    let mut gw = UnixStream::from_std(gw).unwrap();

    gw.write_all(&encode::link_hello(1, 0, 1)).await.unwrap();
    let conn = ConnRef::new(1, 0, 10, 1);
    let open = SessionOpenParts {
        conn,
        app_id: APP,
        user_id: "a",
        client_type: 3,
        device_id: "d",
        request_id: 1,
        resume: false,
        remote_addr: "",
    };
    gw.write_all(&encode::link_session_open(&open)).await.unwrap();
    let mut seen = Seen::default();
    read_until(&mut gw, &mut seen, |s| s.answers.iter().any(|a| a.1 == 1)).await;
    assert_eq!(seen.answers, [(Body::LoginAck, 1, 0)]);
    assert_eq!(seen.totals, [0], "the total comes first, before any Send: {seen:?}");

    // Five Sends with different fates, and one frame that is not a Send.
    let no_session = ConnRef::new(1, 0, 11, 1);
    let mut frames = Vec::new();
    for (from, frame) in [
        (conn, send(2, "m-1", "b")),                       // accepted
        (conn, send(3, "m-bad", "")),                      // refused: no to_id
        (conn, send(4, "m-1", "b")),                       // the same message again
        (conn, encode::pull(5, SyncKind::Message, 0, 10)), // not a Send
        (no_session, send(6, "m-2", "b")),                 // no session on it
        (conn, send(7, "m-3", "b")),                       // accepted
    ] {
        encode::link_upstream_into(&mut frames, &from, &frame);
    }
    gw.write_all(&frames).await.unwrap();
    read_until(&mut gw, &mut seen, |s| s.totals.last() == Some(&5) && s.answers.len() == 7).await;

    let mut answers = seen.answers.split_off(1);
    answers.sort_by_key(|a| a.1);
    assert_eq!(
        answers,
        [
            (Body::SendAck, 2, 200),
            (Body::SendAck, 3, 50000),
            (Body::SendAck, 4, 200),
            (Body::PullResult, 5, 0),
            (Body::Error, 6, tern_schema::codes::LOGIN_REQUIRED),
            (Body::SendAck, 7, 200),
        ]
    );
    assert!(seen.totals.windows(2).all(|w| w[0] < w[1]), "totals rise, sent only when they move: {seen:?}");
    // One more Send moves the total by exactly one.
    gw.write_all(&encode::link_upstream(&conn, &send(8, "m-4", "b"))).await.unwrap();
    read_until(&mut gw, &mut seen, |s| s.answers.iter().any(|a| a.1 == 8) && s.totals.last() >= Some(&6)).await;
    assert_eq!(seen.totals.last(), Some(&6), "{seen:?}");
}
