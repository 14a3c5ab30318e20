//! Property test of conversations (issue 12) against a reference model: for any
//! interleaving of 1:1 and group sends, reads (up to any message), recalls, the three
//! kinds of delete, pins, mutes and restarts, every user's list shows exactly the
//! model's conversations with unread counts equal to the others' messages above their
//! read marks; sync from any point, folded onto the state a device had there,
//! reproduces the list; and every change of user b's records reached both of b's
//! devices (SyncNotify of the conversation log at its newest seq). Lists loaded after a
//! restart start from the user's snapshot (saved every few entries here). Runs on the
//! embedded store, and on CQL with `TERN_LOGIC_BACKEND=scylla` (`scripts/test` does both).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use axum::Router;
use proptest::prelude::*;
use serde_json::{json, Value};
use tern_logic::{Logic, LogicConfig};
use tern_schema::client::Body as FrameBody;
use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

use support::{admin_query, app_config, APP};

const USERS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Send(usize, usize),
    GroupSend(usize),
    /// Read the conversation (peer index, or 3 for the group) up to its `k`-th newest message.
    Read(usize, usize, usize),
    Recall(usize),
    /// 0 keep history, 1 clear history, 2 only notify.
    Delete(usize, usize, u8),
    Pin(usize, usize, bool),
    Mute(usize, usize, bool),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..3usize;
    let conv = 0..4usize;
    prop_oneof![
        6 => (u.clone(), u.clone()).prop_map(|(a, b)| Op::Send(a, b)),
        3 => u.clone().prop_map(Op::GroupSend),
        4 => (u.clone(), conv.clone(), 0..4usize).prop_map(|(a, c, k)| Op::Read(a, c, k)),
        1 => u.clone().prop_map(Op::Recall),
        2 => (u.clone(), conv.clone(), 0..3u8).prop_map(|(a, c, m)| Op::Delete(a, c, m)),
        2 => (u.clone(), conv.clone(), any::<bool>()).prop_map(|(a, c, t)| Op::Pin(a, c, t)),
        1 => (u.clone(), conv.clone(), any::<bool>()).prop_map(|(a, c, t)| Op::Mute(a, c, t)),
        1 => Just(Op::Restart),
    ]
}

/// The model of one user's conversation: its messages' senders in order, how many of
/// them are read, whether it exists / is deleted, its settings.
#[derive(Debug, Clone, Default)]
struct MConv {
    senders: Vec<usize>,
    read: usize,
    exists: bool,
    deleted: bool,
    top: bool,
    mute: bool,
}

impl MConv {
    fn unread(&self, me: usize) -> u64 {
        self.senders[self.read..].iter().filter(|s| **s != me).count() as u64
    }
}

/// A node that can restart over its store, with b's two devices online.
struct Node {
    h: support::Harness,
    logic: Arc<Logic>,
    router: Router,
    rx: mpsc::Receiver<Vec<u8>>,
    /// b's conversation log seq at the last check.
    b_max: u64,
    /// b's notifications from a node since restarted that no check has seen yet.
    told_before_restart: BTreeMap<u32, u64>,
    /// Per user, a device that synced at every check: its state and `maxSequence`
    /// (it resumes from there however the log was compacted meanwhile).
    devices: Vec<(Synced, u64)>,
}

impl Node {
    fn online(logic: &Logic) -> mpsc::Receiver<Vec<u8>> {
        support::online(logic, APP, &[("b", "b1"), ("b", "b2")], 100_000)
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let uri = format!("/v1{path}?{}", admin_query(APP));
        let a = support::send(&self.router, Method::POST, &uri, body.to_string().into_bytes()).await;
        a.check(&format!("{path} {body}"), 200, "success")
    }

    fn restart(&mut self) {
        // What the old node told b's devices and no check has looked at yet (a refused
        // op skips its check) still counts.
        let told = self.b_notified();
        self.told_before_restart.extend(told);
        let (logic, router) = self.h.restarted();
        self.rx = Self::online(&logic);
        self.logic = logic;
        self.router = router;
    }

    /// The highest conversation-log SyncNotify seq each of b's devices got since last asked.
    fn b_notified(&mut self) -> BTreeMap<u32, u64> {
        let mut out = std::mem::take(&mut self.told_before_restart);
        while let Ok(f) = self.rx.try_recv() {
            let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
            let Some(d) = lf.body_as_deliver() else { continue };
            let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
            if cf.body_type() != FrameBody::SyncNotify {
                continue;
            }
            let n = cf.body_as_sync_notify().unwrap();
            if n.kind().0 != tern_storage::SyncKind::Conversation.as_u8() {
                continue;
            }
            for c in d.conns().unwrap().iter() {
                let e = out.entry(c.slot()).or_insert(0);
                *e = (*e).max(n.seq());
            }
        }
        out
    }
}

fn conv_id(me: usize, c: usize) -> String {
    if c == 3 {
        format!("2_{}_g", USERS[me])
    } else {
        format!("1_{}_{}", USERS[me], USERS[c])
    }
}

/// The device-side state a sync log folds to: conversationId → (top, mute, readedSequence).
type Synced = BTreeMap<String, (bool, bool, u64)>;

fn fold(state: &mut Synced, changes: &[Value]) {
    for c in changes {
        let id = c["conversationId"].as_str().unwrap().to_string();
        if c["clientDelete"] == json!(true) {
            continue;
        }
        if c["deleted"] == json!(true) {
            state.remove(&id);
        } else {
            let r =
                (c["isTop"].as_bool().unwrap(), c["isMute"].as_bool().unwrap(), c["readedSequence"].as_u64().unwrap());
            state.insert(id, r);
        }
    }
}

async fn run(ops: Vec<Op>, cut: usize) {
    // Compaction at every chance and frequent checkpoints: sync from any point, and
    // devices that synced before a compaction, must still reproduce the list.
    let mut config = LogicConfig::default();
    config.conversations.compact_after = 1;
    config.conversations.checkpoint_every = 2;
    // Snapshots after nearly every read: a restart loads from one (or, if the last
    // save is still being written, from an older one or the log) and must be exact.
    config.conversations.snapshot_every = 2;
    let h = support::Harness::on_test_backend(config, vec![app_config(APP, json!({}))]).await;
    let rx = Node::online(&h.logic);
    let mut n = Node {
        logic: h.logic.clone(),
        router: h.router.clone(),
        h,
        rx,
        b_max: 0,
        devices: Vec::new(),
        told_before_restart: BTreeMap::new(),
    };
    let users: Vec<Value> = USERS.iter().map(|u| json!({"userId": u})).collect();
    n.call("/user/importUser", json!({"userData": users})).await;
    n.call(
        "/group/createGroup",
        json!({"groupId": "g", "groupType": 1, "ownerId": "a",
        "memberList": [{"memberId": "b"}, {"memberId": "c"}]}),
    )
    .await;
    // model[user][conv]: conv = peer index, or 3 for the group.
    let mut model = vec![vec![MConv::default(); 4]; 3];
    // Each user's sent keys, newest last (for recalls).
    let mut sent: Vec<Vec<(String, usize)>> = vec![Vec::new(); 3];
    // Group seqs of the group's messages, in order.
    let mut group_seqs: Vec<u64> = Vec::new();
    let mut msg_no = 0;
    for op in ops {
        match op {
            Op::Send(f, t) => {
                msg_no += 1;
                let r = n
                    .call(
                        "/message/sendMsg",
                        json!({"fromId": USERS[f], "toId": USERS[t],
                        "messageId": format!("m{msg_no}"), "messageBody": format!("m{msg_no}")}),
                    )
                    .await;
                sent[f].push((r["messageKey"].as_str().unwrap().to_string(), t));
                for (me, other) in [(f, t), (t, f)] {
                    let c = &mut model[me][other];
                    c.senders.push(f);
                    c.exists = true;
                    c.deleted = false;
                    if f == t {
                        break;
                    }
                }
            }
            Op::GroupSend(f) => {
                msg_no += 1;
                let r = n
                    .call(
                        "/group/sendMessage",
                        json!({"groupId": "g", "fromId": USERS[f],
                        "messageId": format!("m{msg_no}"), "messageBody": format!("m{msg_no}")}),
                    )
                    .await;
                group_seqs.push(r["messageSequence"].as_u64().unwrap());
                for user in model.iter_mut() {
                    let c = &mut user[3];
                    c.senders.push(f);
                    c.deleted = false;
                }
            }
            Op::Read(me, conv, k) => {
                let len = model[me][conv].senders.len();
                if len == 0 || (conv < 3 && !model[me][conv].exists) {
                    continue;
                }
                let idx = len.saturating_sub(1 + k);
                if conv == 3 {
                    n.call(
                        "/group/readMessage",
                        json!({"groupId": "g", "memberId": USERS[me],
                        "messageSequence": group_seqs[idx]}),
                    )
                    .await;
                } else {
                    // The user's own seq of that message: from their history, newest first.
                    let hist = n
                        .call(
                            "/message/getHistoryMessage",
                            json!({"fromId": USERS[me], "toId": USERS[conv],
                            "limit": 100}),
                        )
                        .await;
                    let list = hist["dataList"].as_array().unwrap();
                    // Cleared history hides old messages; reads of those are not made.
                    let Some(m) = list.get(k) else { continue };
                    let seq = m["messageSequence"].as_u64().unwrap();
                    let (u, p) = (UserId::new(USERS[me]).unwrap(), UserId::new(USERS[conv]).unwrap());
                    tern_logic::messages::read_receipt(&n.logic, AppId(APP), &u, &p, seq, None).await.unwrap();
                }
                let c = &mut model[me][conv];
                c.read = c.read.max(idx + 1);
            }
            Op::Recall(f) => {
                if let Some((key, t)) = sent[f].pop() {
                    n.call(
                        "/message/withdrawMessage",
                        json!({"fromId": USERS[f], "toId": USERS[t], "messageKey": key}),
                    )
                    .await;
                }
            }
            Op::Delete(me, conv, mode) => {
                let c = &mut model[me][conv];
                let present = if conv == 3 { true } else { c.exists };
                let uri = format!("/v1/conversation/delete?{}", admin_query(APP));
                let body = json!({"fromId": USERS[me], "conversationId": conv_id(me, conv),
                    "clearHistory": mode == 1, "onlyNotify": mode == 2});
                let a = support::send(&n.router, Method::POST, &uri, body.to_string().into_bytes()).await;
                if !present || c.deleted {
                    a.check("delete of none", 50011, "no such conversation");
                    continue;
                }
                a.check(&format!("delete {body}"), 200, "success");
                if mode != 2 {
                    c.deleted = true;
                    c.read = c.senders.len();
                }
            }
            Op::Pin(me, conv, on) | Op::Mute(me, conv, on) => {
                let c = &mut model[me][conv];
                let present = if conv == 3 { true } else { c.exists };
                let field = if matches!(op, Op::Pin(..)) { "isTop" } else { "isMute" };
                let uri = format!("/v1/conversation/update?{}", admin_query(APP));
                let body = json!({"fromId": USERS[me], "conversationId": conv_id(me, conv), field: on});
                let a = support::send(&n.router, Method::POST, &uri, body.to_string().into_bytes()).await;
                if !present || c.deleted {
                    a.check("update of none", 50011, "no such conversation");
                    continue;
                }
                a.check(&format!("update {body}"), 200, "success");
                if field == "isTop" {
                    c.top = on;
                } else {
                    c.mute = on;
                }
            }
            Op::Restart => n.restart(),
        }
        check(&mut n, &model, cut).await;
    }
}

/// Every user's list against the model; sync from 0 and from `cut` against the list;
/// b's devices told of b's newest conversation log seq.
async fn check(n: &mut Node, model: &[Vec<MConv>], cut: usize) {
    for me in 0..3 {
        let got = n.call("/conversation/get", json!({"fromId": USERS[me], "limit": 1000})).await;
        let list = got["conversationList"].as_array().unwrap();
        let mut want: BTreeMap<String, (u64, bool, bool)> = BTreeMap::new();
        for (conv, c) in model[me].iter().enumerate() {
            if (conv == 3 || c.exists) && !c.deleted {
                want.insert(conv_id(me, conv), (c.unread(me), c.top, c.mute));
            }
        }
        let have: BTreeMap<String, (u64, bool, bool)> = list
            .iter()
            .map(|c| {
                let v =
                    (c["unreadCount"].as_u64().unwrap(), c["isTop"].as_bool().unwrap(), c["isMute"].as_bool().unwrap());
                (c["conversationId"].as_str().unwrap().to_string(), v)
            })
            .collect();
        assert_eq!(have, want, "{} list: {got}", USERS[me]);
        // Pinned first.
        let tops: Vec<bool> = list.iter().map(|c| c["isTop"].as_bool().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]), "pinned first: {tops:?}");

        // Sync: all of it, and resumed from `cut` onto the state at `cut`.
        let listed: Synced = list
            .iter()
            .map(|c| {
                let v = (
                    c["isTop"].as_bool().unwrap(),
                    c["isMute"].as_bool().unwrap(),
                    c["readedSequence"].as_u64().unwrap(),
                );
                (c["conversationId"].as_str().unwrap().to_string(), v)
            })
            .collect();
        let all = n.call("/conversation/sync", json!({"fromId": USERS[me], "maxLimit": 1000})).await;
        let changes = all["dataList"].as_array().unwrap().clone();
        let mut full = Synced::new();
        fold(&mut full, &changes);
        assert_eq!(full, listed, "{}: sync from 0", USERS[me]);
        let at = changes.get(cut.min(changes.len().saturating_sub(1))).map_or(0, |c| c["sequence"].as_u64().unwrap());
        let mut resumed = Synced::new();
        fold(
            &mut resumed,
            &changes.iter().filter(|c| c["sequence"].as_u64().unwrap() <= at).cloned().collect::<Vec<_>>(),
        );
        let rest =
            n.call("/conversation/sync", json!({"fromId": USERS[me], "lastSequence": at, "maxLimit": 1000})).await;
        fold(&mut resumed, rest["dataList"].as_array().unwrap());
        assert_eq!(resumed, listed, "{}: sync resumed after {at}", USERS[me]);
        // The device that synced at the previous check resumes from its maxSequence.
        if n.devices.len() <= me {
            n.devices.push((Synced::new(), 0));
        }
        let (mut state, last) = n.devices[me].clone();
        let rest =
            n.call("/conversation/sync", json!({"fromId": USERS[me], "lastSequence": last, "maxLimit": 1000})).await;
        assert_eq!(rest["completed"], json!(true));
        fold(&mut state, rest["dataList"].as_array().unwrap());
        assert_eq!(state, listed, "{}: a device resumed from its last sync at {last}", USERS[me]);
        n.devices[me] = (state, rest["maxSequence"].as_u64().unwrap());
        // Compacted: at most 4 conversations' state and client-delete entries, a
        // checkpoint, and fewer superseded entries than conversations (+ this read's).
        let owner = tern_storage::Owner::User(UserId::new(USERS[me]).unwrap());
        let stored =
            n.h.store.read_log(AppId(APP), &owner, tern_storage::SyncKind::Conversation, tern_storage::Seq::ZERO, 1000);
        let stored = stored.await.unwrap().len();
        assert!(stored <= 16, "{}: {stored} conversation log entries stored", USERS[me]);

        if me == 1 {
            let max = got["maxSequence"].as_u64().unwrap();
            let told = n.b_notified();
            if max > n.b_max {
                // b's records changed: both devices (slots 10 and 11) heard of the newest.
                assert_eq!(told.values().copied().collect::<Vec<_>>(), [max, max], "b's devices: {told:?}");
            } else {
                assert!(told.is_empty(), "nothing changed for b, yet: {told:?}");
            }
            n.b_max = max;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn unread_counts_and_sync_follow_the_model(ops in prop::collection::vec(op(), 1..40), cut in 0..20usize) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops, cut));
    }
}

/// A refused op skips its check; a restart right after it must not lose what b's devices
/// were told before the node went away (found by the proptest).
#[test]
fn notifications_before_a_restart_still_count() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run(vec![Op::Delete(1, 0, 0), Op::Restart], 0));
}
