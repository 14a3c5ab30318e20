//! End-to-end tests of the send path's promises over real sockets: one sender's order
//! (sends pipelined on one connection get seqs in send order, in the sender's and the
//! recipient's timelines alike), and overload (past the in-flight bound a send is
//! refused at once with 80009, the connection's later sends are held behind it — refused
//! too until it is sent again — so what is accepted is a prefix of the burst, nothing
//! acked is lost, nothing refused is stored, and a client that sends the refused ones
//! again in order gets the whole burst stored in send order).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Mode, Options, Tern};
use tern_loadtest::client::{Client, Transport};
use tern_schema::client::{Body, ClientType, ElemType};
use tern_schema::codes;
use tern_schema::message::{self, ElemParts};

const APP: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(20);

/// Logic's per-link bound `max_in_flight`, the gateway core's `core_window` (0 = none:
/// these tests pipeline more than its default allows).
fn options(max_in_flight: usize, core_window: u32) -> Options {
    Options {
        extra_toml: format!("max_sends_in_flight_per_core = {core_window}\n{}", options_toml(max_in_flight)),
        ..Options::default()
    }
}

// A fixed send limit (send_latency_target_ms = 0): these tests pipeline sends and expect
// every one accepted, and on a loaded test machine store turns pass the latency target
// that would shrink the adaptive limit (logic/src/admission.rs has its own tests).
fn options_toml(max_in_flight: usize) -> String {
    format!(
        "inbound_frames_per_sec = 1000000\n[messages]\nsends_per_sec = 1000000\nsend_latency_target_ms = 0\nmax_sends_in_flight_per_link = {max_in_flight}\n"
    )
}

/// Writes `n` sends to `to` back to back (no waiting for acks) with texts `{tag}{i}`;
/// returns request id → index.
async fn pipeline(c: &mut Client, to: &str, tag: &str, n: usize) -> HashMap<u32, usize> {
    let mut rids = HashMap::new();
    for i in 0..n {
        let rid = c.next_request_id();
        let text = format!("{tag}{i}");
        let elems = [ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }];
        c.send(&message::send(rid, &text, to, &elems, 1)).await.unwrap();
        rids.insert(rid, i);
    }
    rids
}

/// Collects one SendAck per request: index → (code, seq, message).
async fn acks(c: &mut Client, mut rids: HashMap<u32, usize>) -> Vec<(u32, u64, String)> {
    let mut out = vec![(u32::MAX, 0, String::new()); rids.len()];
    while !rids.is_empty() {
        let (f, _) = c.recv_until(|f| f.body_type() == Body::SendAck, WAIT).await.expect("a SendAck for every send");
        let i = rids.remove(&f.request_id()).expect("an ack for a request of ours");
        let a = f.frame().body_as_send_ack().unwrap();
        out[i] = (a.code(), a.seq(), a.message().unwrap_or_default().to_owned());
    }
    out
}

/// What a client that keeps its order does after a burst was refused in part: sends the
/// refused ones of `tag` (indices `from..n`) again, one at a time, each once the one before
/// is acked. Nothing else is in flight, so each is accepted.
async fn resend_in_order(c: &mut Client, to: &str, tag: &str, from: usize, n: usize) {
    for i in from..n {
        let rid = c.next_request_id();
        let text = format!("{tag}{i}");
        let elems = [ElemParts { elem_type: ElemType::Text, text: &text, ..Default::default() }];
        c.send(&message::send(rid, &text, to, &elems, 1)).await.unwrap();
        let got = acks(c, HashMap::from([(rid, 0)])).await;
        assert_eq!(got[0].0, codes::OK, "{text} sent again alone is accepted: {got:?}");
    }
}

/// A burst refused in part: the accepted sends are a prefix of it (the first refusal
/// holds every later send of the connection), the rest refused as busy; returns the
/// prefix's length.
fn accepted_prefix(got: &[(u32, u64, String)]) -> usize {
    let k = got.iter().take_while(|(code, ..)| *code == codes::OK).count();
    assert!(
        got[k..].iter().all(|(code, ..)| *code == codes::SERVICE_UNAVAILABLE),
        "after the first refusal every send is refused as busy: {got:?}"
    );
    assert!(
        got[k..].iter().skip(1).all(|(_, _, m)| m == codes::SEND_HELD),
        "the later ones as held behind it: {got:?}"
    );
    k
}

/// The texts of `c`'s user's Message timeline, in seq order.
async fn timeline(c: &mut Client) -> Vec<String> {
    common::pull_timeline(c, 0, 500).await.into_iter().map(|(_, text, _)| text).collect()
}

async fn one_senders_order_is_kept(mode: Mode) {
    let t = Tern::start_with(mode, options(100_000, 0));
    t.import(APP, &["a", "b"]);
    for transport in [Transport::Tcp, Transport::Ws] {
        let tag = format!("{transport:?}-");
        let mut a = t.device(transport, APP, "a", ClientType::Ios, "a-phone").await;
        let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b-phone").await;
        let n = 200;
        let rids = pipeline(&mut a, "b", &tag, n).await;
        let got = acks(&mut a, rids).await;
        assert!(got.iter().all(|(code, ..)| *code == codes::OK), "all accepted: {got:?}");
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "the sender's seqs follow the send order: {got:?}");
        let want: Vec<String> = (0..n).map(|i| format!("{tag}{i}")).collect();
        let mine = |all: Vec<String>| all.into_iter().filter(|s| s.starts_with(&tag)).collect::<Vec<_>>();
        assert_eq!(mine(timeline(&mut a).await), want, "the sender's timeline is in send order");
        assert_eq!(mine(timeline(&mut b).await), want, "the recipient's timeline is in send order");
    }
}

async fn overload_refuses_fast_and_loses_nothing(mode: Mode) {
    // One send in flight per link: a pipelined burst must overflow it.
    let t = Tern::start_with(mode, options(1, 0));
    t.import(APP, &["a", "b"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a-phone").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b-phone").await;
    let n = 500;
    let started = Instant::now();
    let rids = pipeline(&mut a, "b", "burst", n).await;
    let got = acks(&mut a, rids).await;
    let elapsed = started.elapsed();
    let k = accepted_prefix(&got);
    assert!(k < n, "a burst of {n} past a bound of 1 in flight is partly refused");
    assert!(k > 0, "some of the burst is accepted");
    assert!(elapsed < Duration::from_secs(10), "answers came fast ({elapsed:?})");
    // Nothing acked is lost, nothing refused is stored, order kept.
    let want: Vec<String> = (0..k).map(|i| format!("burst{i}")).collect();
    assert_eq!(timeline(&mut b).await, want);
    // A new send while the refused ones are not sent again: held.
    let rids = pipeline(&mut a, "b", "after", 1).await;
    let held = acks(&mut a, rids).await;
    assert_eq!((held[0].0, held[0].2.as_str()), (codes::SERVICE_UNAVAILABLE, codes::SEND_HELD));
    // Recovery: the refused ones sent again in order, then the new one; the whole
    // burst is stored in send order.
    resend_in_order(&mut a, "b", "burst", k, n).await;
    resend_in_order(&mut a, "b", "after", 0, 1).await;
    let mut want: Vec<String> = (0..n).map(|i| format!("burst{i}")).collect();
    want.push("after0".into());
    assert_eq!(timeline(&mut b).await, want);
    assert_eq!(timeline(&mut a).await, want, "the sender's timeline too");
}

/// A gateway core keeps at most `max_sends_in_flight_per_core` Sends in flight to logic
/// and answers the rest of a pipelined burst itself (80009, its own text), however much
/// logic would take; nothing acked is lost, nothing refused is stored, order is kept.
async fn a_cores_sends_in_flight_are_bounded_at_the_gateway(mode: Mode) {
    let t = Tern::start_with(mode, options(100_000, 2));
    t.import(APP, &["a", "b"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a-phone").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b-phone").await;
    let n = 300;
    let rids = pipeline(&mut a, "b", "burst", n).await;
    let got = acks(&mut a, rids).await;
    let k = accepted_prefix(&got);
    assert!(k > 0, "some of the burst is accepted");
    assert!(
        k < n && got[k].2.contains("waiting for logic"),
        "a burst of {n} past a core's bound of 2 is partly refused there: {got:?}"
    );
    let want: Vec<String> = (0..k).map(|i| format!("burst{i}")).collect();
    assert_eq!(timeline(&mut b).await, want);
    resend_in_order(&mut a, "b", "burst", k, n).await;
    let want: Vec<String> = (0..n).map(|i| format!("burst{i}")).collect();
    assert_eq!(timeline(&mut b).await, want, "the whole burst, in send order");
}

in_both_modes!(
    one_senders_order_is_kept,
    overload_refuses_fast_and_loses_nothing,
    a_cores_sends_in_flight_are_bounded_at_the_gateway
);
