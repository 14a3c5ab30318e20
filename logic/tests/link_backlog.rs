//! A link whose outbound queue is backed up takes no new sends: each is refused at once
//! with 80009 (and nothing of it is stored) until the gateway core has written what is
//! queued; then sends are accepted again, the refused one first (a connection's later
//! sends are held behind a refused one until it comes again). Driven through `upstream::handle`, the link
//! reader's entry point, with the link queue held by the test.

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use support::{app_config, Harness, APP};
use tern_logic::upstream::{self, SendTurn};
use tern_logic::LogicConfig;
use tern_schema::client::ElemType;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tern_schema::message::{self, ElemParts};
use tern_storage::{AppId, Owner, Seq, SyncKind, UserId};
use tokio::sync::mpsc;

/// The link queue's bound (`link::LINK_QUEUE_FRAMES`) and the backlog past which sends
/// are refused (a sixteenth of it).
const QUEUE: usize = 65_536;
const BACKLOG: usize = QUEUE / 16;

/// (code, message) of every SendAck the queue holds; other frames are skipped.
fn send_acks(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let Ok(lf) = parse_link(&f[HEADER_LEN..]) else { continue };
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
        if let Some(a) = cf.body_as_send_ack() {
            out.push((a.code(), a.message().unwrap_or_default().to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backed_up_link_refuses_sends_until_it_drains() {
    let h = Harness::new(LogicConfig::default(), vec![app_config(APP, json!({}))], None);
    let users: Vec<Value> = ["a", "b"].iter().map(|u| json!({"userId": u})).collect();
    h.ok("/user/importUser", json!({ "userData": users })).await;
    // Device "a/d" online on link (1, 0) at slot 10; then the link's queue is ours.
    let _first_queue = support::online(&h.logic, APP, &[("a", "d")], 16);
    let (tx, mut rx) = mpsc::channel(QUEUE);
    h.logic.sessions.register_link((1, 0), tx.clone());
    let conn = tern_schema::link::ConnRef::new(1, 0, 10, 1);
    let logic = Arc::clone(&h.logic);
    let mut turn = SendTurn::new(1024);
    let send = |rid: u32, id: &str| {
        let elems = [ElemParts { elem_type: ElemType::Text, text: id, ..Default::default() }];
        message::send(rid, id, "b", &elems, 1)
    };

    // The gateway core is behind: more than BACKLOG frames wait on its link.
    for _ in 0..=BACKLOG {
        tx.try_send(vec![0]).unwrap();
    }
    upstream::handle(&logic, &tx, &mut turn, conn, &send(1, "while-behind")).await;
    turn.flush(&logic, &tx);
    for _ in 0..=BACKLOG {
        assert_eq!(rx.try_recv().unwrap(), vec![0]);
    }
    let acks = send_acks(&mut rx);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].0, tern_schema::codes::SERVICE_UNAVAILABLE, "{acks:?}");
    assert!(acks[0].1.contains("behind"), "{acks:?}");

    // Drained, but the refused send was not sent again: a new one is held behind it.
    let b = Owner::User(UserId::new("b").unwrap());
    let stored = || async {
        let log = h.store.read_log(AppId(APP), &b, SyncKind::Message, Seq::ZERO, 10).await.unwrap();
        log.iter()
            .map(|e| message::decode_stored(&e.payload).unwrap().client_msg_id().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    upstream::handle(&logic, &tx, &mut turn, conn, &send(2, "after")).await;
    turn.flush(&logic, &tx);
    let acks = send_acks(&mut rx);
    assert_eq!(acks, [(tern_schema::codes::SERVICE_UNAVAILABLE, tern_schema::codes::SEND_HELD.to_owned())]);
    assert!(stored().await.is_empty(), "the refused sends left nothing behind");

    // The refused send again, then the new one: both accepted, stored in send order.
    let mut acks = Vec::new();
    for (rid, id) in [(3, "while-behind"), (4, "after")] {
        upstream::handle(&logic, &tx, &mut turn, conn, &send(rid, id)).await;
        turn.flush(&logic, &tx);
        for _ in 0..200 {
            let got = send_acks(&mut rx);
            if !got.is_empty() {
                acks.extend(got);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), [tern_schema::codes::OK; 2], "{acks:?}");
    assert_eq!(stored().await, ["while-behind", "after"]);
}
