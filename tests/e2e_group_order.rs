//! Pipelined group sends over real sockets (issue 11): one connection writes many group
//! sends back to back without waiting for their acks; the server must keep their
//! order — group seqs rising in send order, every member's pushes in that order, and a
//! pull of the group timeline listing them in that order — in both deployments.

mod common;

use std::time::Duration;

use common::{Mode, Options, Tern};
use serde_json::json;
use tern_loadtest::client::Transport;
use tern_schema::client::{Body, ClientType, ConversationType, ElemType};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

const APP: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(10);
/// Sends written in one go (two turns' worth and more on a busy link).
const N: usize = 600;

async fn pipelined_group_sends_keep_send_order(mode: Mode) {
    burst_keeps_send_order(mode, false).await;
}

/// After a restart the group is not in memory: the link reader hands its sends to a
/// task that loads it (so the link's other sends do not wait for the load), and they
/// must still keep their order.
async fn pipelined_sends_to_a_cold_group_keep_send_order(mode: Mode) {
    burst_keeps_send_order(mode, true).await;
}

async fn burst_keeps_send_order(mode: Mode, cold: bool) {
    // Per-connection limits above the burst, no bound on a core's sends in flight, and a
    // fixed send limit (no refusals).
    let extra_toml: String =
        "inbound_frames_per_sec = 100000\nmax_sends_in_flight_per_core = 0\n[messages]\nsends_per_sec = 100000\nsend_latency_target_ms = 0\n".into();
    let options = || Options { extra_toml: extra_toml.clone(), ..Options::default() };
    let mut t = Tern::start_with(mode, options());
    t.import(APP, &["s", "r1", "r2"]);
    let r = t.api(
        APP,
        "/group/createGroup",
        json!({"groupId": "order", "groupType": 1, "ownerId": "s",
        "memberList": [{"memberId": "r1"}, {"memberId": "r2"}]}),
    );
    assert_eq!(r["code"], json!(200), "{r}");
    if cold {
        let dir = t.crash();
        t = Tern::start_in(mode, options(), dir);
    }
    let mut s = t.device(Transport::Tcp, APP, "s", ClientType::Ios, "s1").await;
    let mut s2 = t.device(Transport::Ws, APP, "s", ClientType::Web, "s2").await;
    let mut r1 = t.device(Transport::Tcp, APP, "r1", ClientType::Android, "r1").await;
    let mut r2 = t.device(Transport::Ws, APP, "r2", ClientType::Web, "r2").await;

    // Every send in one write: they reach the server together and are handled as
    // pipelined sends of one connection.
    let mut burst = Vec::new();
    let mut rids = Vec::new();
    for i in 0..N {
        let rid = s.next_request_id();
        rids.push(rid);
        let text = format!("m{i}");
        let elems = [ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }];
        burst.extend_from_slice(&message::send_to_group(rid, &format!("c{i}"), "order", &elems, 1));
    }
    s.send(&burst).await.unwrap();

    let mut seq_of = std::collections::HashMap::new();
    while seq_of.len() < N {
        let f = s.recv_timeout(WAIT).await.unwrap().expect("every send is acked");
        if f.body_type() != Body::SendAck {
            assert_ne!(f.body_type(), Body::Push, "the sending connection gets acks only");
            continue;
        }
        let a = f.frame().body_as_send_ack().unwrap();
        assert_eq!(a.code(), codes::OK, "send {} refused: {:?}", f.request_id(), a.message());
        seq_of.insert(f.request_id(), a.seq());
    }
    let seqs: Vec<u64> = rids.iter().map(|r| seq_of[r]).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "group seqs follow send order: {seqs:?}");

    // Every other device of every member gets all of them, in send (= seq) order.
    let want: Vec<(u64, String)> = seqs.iter().enumerate().map(|(i, s)| (*s, format!("m{i}"))).collect();
    for (who, c) in [("r1", &mut r1), ("r2", &mut r2), ("s2", &mut s2)] {
        let mut got = Vec::new();
        while got.len() < N {
            let f = c.recv_timeout(WAIT).await.unwrap().unwrap_or_else(|| panic!("{who}: {} of {N} pushed", got.len()));
            if f.body_type() != Body::Push {
                continue;
            }
            for m in f.frame().body_as_push().unwrap().messages().unwrap().iter() {
                assert_eq!(m.conversation_type(), ConversationType::Group);
                let text = m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default();
                got.push((m.seq(), text));
            }
        }
        assert_eq!(got, want, "{who}: pushes in send order");
    }

    // The timeline lists them in the same order.
    let mut pulled = Vec::new();
    let mut after = 0;
    loop {
        let rid = r1.next_request_id();
        r1.send(&encode::pull_group(rid, "order", after, 500)).await.unwrap();
        let (f, _) = r1.recv_until(|f| f.request_id() == rid, WAIT).await.expect("pull answer");
        let p = f.frame().body_as_pull_result().expect("pull result");
        for m in p.messages().unwrap().iter() {
            let text = m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default();
            pulled.push((m.seq(), text));
            after = m.seq();
        }
        if p.completed() {
            break;
        }
    }
    assert_eq!(pulled, want, "the pulled timeline is in send order");

    if cold {
        let (status, text) = common::http(&t.http, "GET", "/metrics", "");
        assert_eq!(status, 200);
        let deferred: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tern_group_sends_deferred_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(deferred >= 1.0, "the first send to the cold group went off the link reader:\n{text}");
    }
}

in_both_modes!(pipelined_group_sends_keep_send_order, pipelined_sends_to_a_cold_group_keep_send_order);
