//! Properties:
//! - whatever is appended (any seqs, any order, any batching, overwrites included)
//!   across several owners (users, and groups with the same ids) and kinds, paging through a log with any page size —
//!   forwards or backwards — yields exactly that log's latest entries in seq order;
//! - likewise for conversation indexes across users and conversations (peers, and
//!   groups with the same ids) chosen so that their ids run into each other without
//!   length prefixes, paging backwards from any starting point; and read marks
//!   written in any order end at the maximum.

use bytes::Bytes;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tern_storage::{
    conformance::{collect_conv_back, collect_log, collect_log_back},
    AppId, Conversation, GroupId, LogEntry, Owner, Seq, Store, SyncKind, UserId, WriteBatch,
};
use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};

const USERS: [&str; 3] = ["a", "ab", "b"];
/// With [`USERS`]: "a"+"bc" and "ab"+"c" are the same bytes without length prefixes.
const PEERS: [&str; 4] = ["bc", "c", "b", "a"];
/// Owner `i`: the users of [`USERS`], then groups with the same ids.
fn owner(i: usize) -> Owner {
    match USERS.get(i) {
        Some(u) => Owner::User(UserId::new(*u).unwrap()),
        None => Owner::Group(GroupId::new(USERS[i - USERS.len()]).unwrap()),
    }
}

/// Conversation `i`: with the peers of [`PEERS`], then in groups with the same ids.
fn conversation(i: usize) -> Conversation {
    match PEERS.get(i) {
        Some(p) => Conversation::Single(UserId::new(*p).unwrap()),
        None => Conversation::Group(GroupId::new(PEERS[i - PEERS.len()]).unwrap()),
    }
}

const KINDS: [SyncKind; 2] = [SyncKind::Message, SyncKind::Friendship];
const APP: AppId = AppId(1);

#[derive(Debug, Clone)]
struct Append {
    user: usize,
    kind: usize,
    seq: u64,
    payload: u8,
}

fn append() -> impl Strategy<Value = Append> {
    (0..2 * USERS.len(), 0..KINDS.len(), 1u64..200, any::<u8>()).prop_map(|(user, kind, seq, payload)| Append {
        user,
        kind,
        seq,
        payload,
    })
}

fn entry(a: &Append) -> LogEntry {
    LogEntry { seq: Seq(a.seq), time_ms: a.seq, payload: Bytes::from(vec![a.payload; usize::from(a.payload % 5)]) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn paging_reconstructs_every_log(
        appends in prop::collection::vec(append(), 0..300),
        batch_size in 1usize..40,
        page_sizes in prop::collection::vec(1usize..25, 6),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
            let mut expected: BTreeMap<(usize, usize), BTreeMap<u64, LogEntry>> = BTreeMap::new();
            for chunk in appends.chunks(batch_size) {
                let mut batch = WriteBatch::new();
                for a in chunk {
                    batch.append_log(APP, owner(a.user), KINDS[a.kind], entry(a));
                    expected.entry((a.user, a.kind)).or_default().insert(a.seq, entry(a));
                }
                store.write(batch).await.unwrap();
            }
            let mut page = page_sizes.iter().cycle();
            for u in 0..2 * USERS.len() {
                let user = owner(u);
                for (k, kind) in KINDS.iter().enumerate() {
                    let want: Vec<LogEntry> =
                        expected.get(&(u, k)).map(|m| m.values().cloned().collect()).unwrap_or_default();
                    let forward = collect_log(&store, APP, &user, *kind, *page.next().unwrap()).await;
                    assert_eq!(forward, want, "{user} {kind:?} forwards");
                    let mut backward = collect_log_back(&store, APP, &user, *kind, *page.next().unwrap()).await;
                    backward.reverse();
                    assert_eq!(backward, want, "{user} {kind:?} backwards");
                }
            }
        });
    }
}

#[derive(Debug, Clone)]
struct ConvOp {
    user: usize,
    peer: usize,
    seq: u64,
    /// Also put a read mark of `seq`.
    mark: bool,
}

fn conv_op() -> impl Strategy<Value = ConvOp> {
    (0..USERS.len(), 0..2 * PEERS.len(), 0u64..300, any::<bool>()).prop_map(|(user, peer, seq, mark)| ConvOp {
        user,
        peer,
        seq,
        mark,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv_index_paging_and_read_marks(
        ops in prop::collection::vec(conv_op(), 0..300),
        batch_size in 1usize..40,
        page_sizes in prop::collection::vec(1usize..25, 6),
        start in 0u64..320,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
            let mut convs: BTreeMap<(usize, usize), BTreeSet<u64>> = BTreeMap::new();
            let mut marks: BTreeMap<usize, BTreeMap<Conversation, Seq>> = BTreeMap::new();
            for chunk in ops.chunks(batch_size) {
                let mut batch = WriteBatch::new();
                for op in chunk {
                    let (user, peer) = (UserId::new(USERS[op.user]).unwrap(), conversation(op.peer));
                    batch.append_conv_index(APP, user.clone(), peer.clone(), Seq(op.seq));
                    convs.entry((op.user, op.peer)).or_default().insert(op.seq);
                    if op.mark {
                        batch.put_read_mark(APP, user, peer.clone(), Seq(op.seq));
                        let m = marks.entry(op.user).or_default().entry(peer).or_default();
                        *m = (*m).max(Seq(op.seq));
                    }
                }
                store.write(batch).await.unwrap();
            }
            let mut page = page_sizes.iter().cycle();
            for (u, user) in USERS.iter().enumerate() {
                let user = UserId::new(*user).unwrap();
                for p in 0..2 * PEERS.len() {
                    let peer = conversation(p);
                    let want: Vec<Seq> =
                        convs.get(&(u, p)).map(|s| s.iter().rev().map(|&n| Seq(n)).collect()).unwrap_or_default();
                    let got = collect_conv_back(&store, APP, &user, &peer, *page.next().unwrap()).await;
                    assert_eq!(got, want, "{user} with {peer}");
                    // Paging from an arbitrary `before` yields exactly the seqs below it.
                    let limit = *page.next().unwrap();
                    let mut before = Seq(start);
                    let mut from_start = Vec::new();
                    loop {
                        let got = store.read_conv_back(APP, &user, &peer, before, limit).await.unwrap();
                        let Some(&last) = got.last() else { break };
                        assert!(got.len() <= limit && got.iter().all(|&s| s < before));
                        from_start.extend(got);
                        before = last;
                    }
                    let want_below: Vec<Seq> = want.iter().copied().filter(|&s| s < Seq(start)).collect();
                    assert_eq!(from_start, want_below, "{user} with {peer} before {start}");
                }
                let mut got = store.get_read_marks(APP, &user).await.unwrap();
                got.sort();
                let want: Vec<(Conversation, Seq)> = marks.get(&u).map(|m| m.clone().into_iter().collect()).unwrap_or_default();
                assert_eq!(got, want, "read marks of {user}");
            }
        });
    }
}
