//! End-to-end conversations (issue 12) over real sockets, in both deployments (and on
//! the CQL backend with `TERN_E2E_BACKEND=scylla`): the list and its sync over TCP
//! (ConversationGet / ConversationSync → ConversationList) and WebSocket, exact unread
//! counts moved by a TCP ReadReceipt, the reader's other device told (SyncNotify of the
//! Conversation log), an HTTP mute making the next push silent, a group conversation,
//! and a client-sent ConversationList refused by the gateway.

mod common;

use std::time::Duration;

use common::{Mode, Tern};
use serde_json::json;
use tern_loadtest::client::{Client, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, ConversationOp, ConversationType, ElemType, SyncKind};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, conversation};

const APP: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(5);

async fn send(c: &mut Client, id: &str, to: &str, text: &str) {
    let rid = c.next_request_id();
    let elems = [ElemParts { elem_type: ElemType::Text, text, ..Default::default() }];
    c.send(&message::send(rid, id, to, &elems, 1)).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT).await.expect("ack");
    assert_eq!(f.frame().body_as_send_ack().unwrap().code(), codes::OK);
}

/// The next push: (seq of its first message, sender, silent).
async fn next_push(c: &mut Client) -> (u64, String, bool) {
    let (f, _) = c.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("push");
    let p = f.frame().body_as_push().unwrap();
    let m = p.messages().unwrap().get(0);
    (m.seq(), m.from_id().unwrap_or_default().to_string(), p.silent())
}

/// One row of a ConversationList: (type, target, unread, top, mute, preview, op).
type Row = (ConversationType, String, u64, bool, bool, String, ConversationOp);

fn rows(f: &OwnedFrame) -> (Vec<Row>, u64, bool) {
    let l = f.frame().body_as_conversation_list().expect("a ConversationList");
    let rows = l
        .conversations()
        .map(|v| {
            v.iter()
                .map(|c| {
                    (
                        c.conversation_type(),
                        c.target_id().unwrap_or_default().to_string(),
                        c.unread(),
                        c.is_top(),
                        c.is_mute(),
                        c.last_preview().unwrap_or_default().to_string(),
                        c.op(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (rows, l.max_seq(), l.completed())
}

async fn get(c: &mut Client) -> (Vec<Row>, u64, bool) {
    let rid = c.next_request_id();
    c.send(&conversation::get(rid, 0, 0)).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid, WAIT).await.expect("list");
    rows(&f)
}

async fn sync(c: &mut Client, after: u64) -> (Vec<Row>, u64, bool) {
    let rid = c.next_request_id();
    c.send(&conversation::sync(rid, after, 0)).await.unwrap();
    let (f, _) = c.recv_until(|f| f.request_id() == rid, WAIT).await.expect("sync");
    rows(&f)
}

fn row(ty: ConversationType, to: &str, unread: u64, top: bool, mute: bool, preview: &str) -> Row {
    (ty, to.into(), unread, top, mute, preview.into(), ConversationOp::Put)
}

/// Waits for a SyncNotify of the Conversation log; answers its seq.
async fn conversation_notify(c: &mut Client) -> u64 {
    let is = |f: &OwnedFrame| {
        f.body_type() == Body::SyncNotify
            && f.frame().body_as_sync_notify().is_some_and(|n| n.kind() == SyncKind::Conversation)
    };
    let (f, _) = c.recv_until(is, WAIT).await.expect("conversation SyncNotify");
    f.frame().body_as_sync_notify().unwrap().seq()
}

async fn list_sync_reads_and_mutes(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b", "c"]);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a1").await;
    let mut b1 = t.device(Transport::Tcp, APP, "b", ClientType::Android, "b1").await;
    let mut b2 = t.device(Transport::Ws, APP, "b", ClientType::Web, "b2").await;
    let single = ConversationType::Single;

    for i in 0..3 {
        send(&mut a, &format!("m{i}"), "b", &format!("hi {i}")).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(next_push(&mut b1).await.0);
    }
    let r = t.api(APP, "/message/sendMsg", json!({"fromId": "c", "toId": "b", "messageId": "c0", "messageBody": "yo"}));
    assert_eq!(r["code"], json!(200), "{r}");

    let (list, max, completed) = get(&mut b1).await;
    assert_eq!(list, [row(single, "c", 1, false, false, "yo"), row(single, "a", 3, false, false, "hi 2")]);
    assert!(completed);
    // The first read logged both conversations; b2 is told.
    assert_eq!(conversation_notify(&mut b2).await, max);

    // A read over TCP from b1 up to the second message: one unread left; b2 is told.
    b1.send(&message::read_receipt(0, "a", seqs[1])).await.unwrap();
    let s = conversation_notify(&mut b2).await;
    assert!(s > max);
    let (list, max2, _) = get(&mut b2).await;
    assert_eq!(list, [row(single, "c", 1, false, false, "yo"), row(single, "a", 1, false, false, "hi 2")]);
    assert_eq!(max2, s);

    // Sync from 0 and from the middle, over WebSocket.
    let (all, smax, done) = sync(&mut b2, 0).await;
    assert!(done);
    assert_eq!(smax, max2);
    assert_eq!(all.len(), 3, "two appeared, one read: {all:?}");
    let (rest, _, _) = sync(&mut b2, max).await;
    assert_eq!(rest[..], all[2..]);

    // Mute a over HTTP: both devices told; a's next message arrives silent, c's not.
    let r = t.api(APP, "/conversation/update", json!({"fromId": "b", "conversationId": "1_b_a", "isMute": true}));
    assert_eq!(r["code"], json!(200), "{r}");
    let s = r["data"]["sequence"].as_u64().unwrap();
    assert_eq!(conversation_notify(&mut b1).await, s);
    assert_eq!(conversation_notify(&mut b2).await, s);
    send(&mut a, "m3", "b", "psst").await;
    assert_eq!(next_push(&mut b1).await.1, "a");
    let (_, from, silent) = next_push(&mut b2).await;
    assert_eq!((from.as_str(), silent), ("a", true));
    t.api(APP, "/message/sendMsg", json!({"fromId": "c", "toId": "b", "messageId": "c1", "messageBody": "loud"}));
    let p1 = next_push(&mut b1).await;
    assert_eq!((p1.1.as_str(), p1.2), ("c", false));
    assert_eq!(next_push(&mut b2).await, p1, "both devices of b get the same push");

    // A delete over HTTP shows as a tombstone in the TCP sync.
    let r = t.api(APP, "/conversation/delete", json!({"fromId": "b", "conversationId": "1_b_c"}));
    assert_eq!(r["code"], json!(200), "{r}");
    let (tail, _, _) = sync(&mut b1, s).await;
    assert_eq!(tail.last().map(|r| (r.1.as_str(), r.6)), Some(("c", ConversationOp::Delete)), "{tail:?}");
    let (list, _, _) = get(&mut b1).await;
    assert_eq!(list.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["a"]);

    // A group conversation appears with its unread count.
    t.api(
        APP,
        "/group/createGroup",
        json!({"groupId": "team", "groupType": 1, "ownerId": "a", "memberList": [{"memberId": "b"}]}),
    );
    t.api(
        APP,
        "/group/sendMessage",
        json!({"groupId": "team", "fromId": "a", "messageId": "g0", "messageBody": "all"}),
    );
    let (list, _, _) = get(&mut b1).await;
    assert_eq!(list[0], row(ConversationType::Group, "team", 1, false, false, "all"));

    // A client may not send the server's answer.
    b1.send(&conversation::list(77, &[], 0, true, 0)).await.unwrap();
    let (f, _) = b1.recv_until(|f| f.request_id() == 77, WAIT).await.expect("refusal");
    assert_eq!(f.body_type(), Body::Error, "{}", f.describe());
}

/// The next Push of a group message: (group, text id, silent).
async fn next_group_push(c: &mut Client) -> (String, bool) {
    let (f, _) = c.recv_until(|f| f.body_type() == Body::Push, WAIT).await.expect("group push");
    let p = f.frame().body_as_push().unwrap();
    let m = p.messages().unwrap().get(0);
    assert_eq!(m.conversation_type(), ConversationType::Group, "{}", f.describe());
    (m.to_id().unwrap_or_default().to_string(), p.silent())
}

fn group_send(t: &Tern, from: &str, id: &str) {
    let r = t.api(
        APP,
        "/group/sendMessage",
        json!({"groupId": "team", "fromId": from, "messageId": id, "messageBody": id}),
    );
    assert_eq!(r["code"], json!(200), "{r}");
}

fn mute(t: &Tern, user: &str, conversation: &str, on: bool) {
    let r = t.api(APP, "/conversation/update", json!({"fromId": user, "conversationId": conversation, "isMute": on}));
    assert_eq!(r["code"], json!(200), "{r}");
}

/// Mutes silence 1:1 and group pushes from the first push after the mute, with no list
/// read, and still after a restart (the flags are loaded at login); others' pushes of
/// the same group are not silent; an unmute makes them loud again.
async fn mutes_silence_pushes_from_the_first_and_after_restarts(mode: Mode) {
    let t = Tern::start(mode);
    t.import(APP, &["a", "b", "c"]);
    let r = t.api(
        APP,
        "/group/createGroup",
        json!({"groupId": "team", "groupType": 1, "ownerId": "a", "memberList": [{"memberId": "b"}, {"memberId": "c"}]}),
    );
    assert_eq!(r["code"], json!(200), "{r}");
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a1").await;
    let mut b = t.device(Transport::Tcp, APP, "b", ClientType::Ios, "b1").await;
    let mut c = t.device(Transport::Ws, APP, "c", ClientType::Web, "c1").await;
    send(&mut a, "m0", "b", "hi").await;
    assert!(!next_push(&mut b).await.2);
    group_send(&t, "a", "g0");
    assert_eq!(next_group_push(&mut b).await, ("team".into(), false));
    assert_eq!(next_group_push(&mut c).await, ("team".into(), false));

    mute(&t, "b", "1_b_a", true);
    mute(&t, "b", "2_b_team", true);
    send(&mut a, "m1", "b", "psst").await;
    assert!(next_push(&mut b).await.2, "the first 1:1 push after the mute");
    group_send(&t, "a", "g1");
    assert_eq!(next_group_push(&mut b).await, ("team".into(), true), "the first group push after the mute");
    assert_eq!(next_group_push(&mut c).await, ("team".into(), false), "c did not mute the group");

    // The whole server restarts; the devices log in again and read no list.
    drop((a, b, c));
    let (clean, dir) = tokio::task::spawn_blocking(move || t.terminate()).await.unwrap();
    assert!(clean, "tern did not exit cleanly");
    let mut t = Tern::start_in(mode, common::Options::default(), dir);
    let mut a = t.device(Transport::Tcp, APP, "a", ClientType::Ios, "a1").await;
    let mut b = t.device(Transport::Ws, APP, "b", ClientType::Web, "b2").await;
    let mut c = t.device(Transport::Tcp, APP, "c", ClientType::Ios, "c2").await;
    send(&mut a, "m2", "b", "after").await;
    assert!(next_push(&mut b).await.2, "1:1 after a restart");
    group_send(&t, "a", "g2");
    assert_eq!(next_group_push(&mut b).await, ("team".into(), true), "group after a restart");
    assert_eq!(next_group_push(&mut c).await, ("team".into(), false));

    if mode == Mode::Split {
        // Logic alone restarts: the devices stay connected and their sessions resume
        // (the flags are loaded by the resume).
        assert!(t.stop_logic(), "logic did not exit cleanly");
        t.start_logic();
        t.wait_online(APP, "b", 1);
        t.wait_online(APP, "a", 1);
        send(&mut a, "m3", "b", "resumed").await;
        assert!(next_push(&mut b).await.2, "1:1 after a logic restart");
        group_send(&t, "c", "g3");
        assert_eq!(next_group_push(&mut b).await, ("team".into(), true), "group after a logic restart");
    }

    // Unmuted: loud again, at once.
    mute(&t, "b", "2_b_team", false);
    mute(&t, "b", "1_b_a", false);
    group_send(&t, "a", "g4");
    assert_eq!(next_group_push(&mut b).await, ("team".into(), false));
    send(&mut a, "m4", "b", "loud").await;
    assert!(!next_push(&mut b).await.2);
}

in_both_modes!(list_sync_reads_and_mutes, mutes_silence_pushes_from_the_first_and_after_restarts);
