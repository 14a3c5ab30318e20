//! The conformance suite every [`Store`] backend must pass, written once against
//! `&dyn Store`.
//!
//! A backend's test file gets every case as its own `#[tokio::test]` with one line:
//!
//! ```text
//! tern_storage::conformance_tests!(fresh_store());
//! ```
//!
//! where `fresh_store()` is an async expression yielding a [`StoreUnderTest`]: an
//! isolated, empty store plus a guard that keeps its resources (a temp dir, a keyspace)
//! alive until the store has been dropped. The calling crate needs `tokio` with the
//! `macros` and `rt-multi-thread` features.
//!
//! A backend that needs an outside service (a CQL node) uses the `optional:` form, whose
//! factory yields `Option<StoreUnderTest>`: `None` ends the case early, and the factory
//! must only return it when the developer opted out explicitly (it prints why), never
//! because the service happens to be down.
//!
//! Cases assert behaviour callers rely on, never a backend's internals. They must not
//! depend on each other, on wall-clock time, or on data left by another case.

use crate::{
    AppId, AppRecord, Conversation, ConversationRecord, DedupRecord, DeviceAck, GroupId, GroupMemberRecord,
    GroupRecord, GuardOutcome, GuardedBatch, LastMessage, LogEntry, MessageCopy, MessageLocator, Owner, Read,
    ReadAnswer, Seq, Store, StoreError, SyncKind, UserId, UserRecord, WriteBatch,
};
use bytes::Bytes;
use std::{any::Any, future::Future, pin::Pin, sync::Arc, task::Poll};

/// A fresh store and whatever must outlive it. The macro drops the store first.
pub type StoreUnderTest = (Arc<dyn Store>, Box<dyn Any + Send>);

/// Expands into one `#[tokio::test]` per conformance case. The argument is an async
/// expression (evaluated once per case) yielding a [`StoreUnderTest`], or, after
/// `optional:`, an `Option<StoreUnderTest>` (see the module doc).
#[macro_export]
macro_rules! conformance_tests {
    (@cases $mode:ident $factory:expr) => {
        $crate::__conformance_cases!(
            $mode $factory;
            users_roundtrip,
            log_read_forward_paging,
            log_read_back_paging,
            log_isolation,
            log_get_entry,
            log_append_is_idempotent,
            log_entries_delete,
            seq_bounds_never_go_down,
            dedup_roundtrip_and_expiry,
            apps_roundtrip,
            mixed_batch,
            invalid_batch_writes_nothing,
            concurrent_writers,
            empty_batch,
            large_payload,
            flush_ok,
            device_acks_keep_max,
            device_acks_of_group_timelines,
            read_many_answers_like_single_reads,
            group_owner_logs_and_bounds,
            message_index_roundtrip,
            conv_index_paging,
            conv_index_isolation,
            read_marks_keep_max,
            conversation_records,
            index_ops_with_log_in_one_batch,
            guarded_write_applies_new_and_refuses_duplicates,
            guarded_write_respects_expiry_and_invalid_input,
            groups_roundtrip_and_paging,
            group_members_roundtrip_paging_and_delete,
            group_records_refuse_oversized_text,
        );
    };
    (optional: $factory:expr) => {
        $crate::conformance_tests!(@cases optional $factory);
    };
    ($factory:expr) => {
        $crate::conformance_tests!(@cases required $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (required $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, guard): $crate::conformance::StoreUnderTest = $factory.await;
                $crate::conformance::$case(&*store).await;
                // The store first: its guard may own the directory it writes to.
                drop(store);
                drop(guard);
            }
        )*
    };
    (optional $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let made: ::std::option::Option<$crate::conformance::StoreUnderTest> = $factory.await;
                let ::std::option::Option::Some((store, guard)) = made else { return };
                $crate::conformance::$case(&*store).await;
                // The store first: its guard may own the directory it writes to.
                drop(store);
                drop(guard);
            }
        )*
    };
}

const APP: AppId = AppId(1);
const KIND: SyncKind = SyncKind::Message;

fn uid(s: &str) -> UserId {
    UserId::new(s).expect("test user ids are valid")
}

fn gid(s: &str) -> GroupId {
    GroupId::new(s).expect("test group ids are valid")
}

/// The user `s` as an owner (a user's own logs).
fn user(s: &str) -> Owner {
    Owner::User(uid(s))
}

/// The 1:1 conversation with `s`.
fn peer(s: &str) -> Conversation {
    Conversation::Single(uid(s))
}

fn entry(seq: u64, payload: &str) -> LogEntry {
    LogEntry { seq: Seq(seq), time_ms: seq.wrapping_add(1_000), payload: Bytes::copy_from_slice(payload.as_bytes()) }
}

fn seqs(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq.0).collect()
}

async fn write(store: &dyn Store, batch: WriteBatch) {
    store.write(batch).await.expect("write");
}

async fn append(store: &dyn Store, app: AppId, user: &str, kind: SyncKind, entries: &[LogEntry]) {
    let mut b = WriteBatch::new();
    for e in entries {
        b.append_log(app, uid(user), kind, e.clone());
    }
    write(store, b).await;
}

async fn read(store: &dyn Store, app: AppId, user: &str, kind: SyncKind, after: u64, limit: usize) -> Vec<LogEntry> {
    store.read_log(app, &self::user(user), kind, Seq(after), limit).await.expect("read_log")
}

/// Reads a whole log forwards in pages of `page`, checking every page on the way.
pub async fn collect_log(store: &dyn Store, app: AppId, owner: &Owner, kind: SyncKind, page: usize) -> Vec<LogEntry> {
    assert!(page > 0);
    let mut all: Vec<LogEntry> = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let got = store.read_log(app, owner, kind, after, page).await.expect("read_log");
        assert!(got.len() <= page, "page of {} for limit {page}", got.len());
        if got.is_empty() {
            return all;
        }
        for e in &got {
            assert!(e.seq > after, "seq {} not after {after}", e.seq);
            after = e.seq;
        }
        all.extend(got);
    }
}

/// Reads a whole log backwards in pages of `page`, checking every page on the way.
pub async fn collect_log_back(
    store: &dyn Store,
    app: AppId,
    owner: &Owner,
    kind: SyncKind,
    page: usize,
) -> Vec<LogEntry> {
    assert!(page > 0);
    let mut all: Vec<LogEntry> = Vec::new();
    let mut before = Seq::MAX;
    loop {
        let got = store.read_log_back(app, owner, kind, before, page).await.expect("read_log_back");
        assert!(got.len() <= page, "page of {} for limit {page}", got.len());
        if got.is_empty() {
            return all;
        }
        for e in &got {
            assert!(e.seq < before, "seq {} not before {before}", e.seq);
            before = e.seq;
        }
        all.extend(got);
    }
}

/// Reads a whole conversation index backwards in pages of `page`, checking every page
/// on the way (descending, below `before`, no repeats).
pub async fn collect_conv_back(
    store: &dyn Store,
    app: AppId,
    user: &UserId,
    conversation: &Conversation,
    page: usize,
) -> Vec<Seq> {
    assert!(page > 0);
    let mut all = Vec::new();
    let mut before = Seq::MAX;
    loop {
        let got = store.read_conv_back(app, user, conversation, before, page).await.expect("read_conv_back");
        assert!(got.len() <= page, "page of {} for limit {page}", got.len());
        if got.is_empty() {
            return all;
        }
        for &seq in &got {
            assert!(seq < before, "seq {seq} not before {before}");
            before = seq;
        }
        all.extend(got);
    }
}

/// Polls all futures concurrently on the current task (the cases only get a borrowed
/// store, so they cannot spawn).
async fn join_all<F: Future<Output = ()>>(futs: impl IntoIterator<Item = F>) {
    let mut futs: Vec<Option<Pin<Box<F>>>> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futs {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

/// Users: missing is `None`, order follows the request, updates overwrite, the deleted
/// flag round-trips, and apps do not share users.
pub async fn users_roundtrip(store: &dyn Store) {
    let (a, b, c) = (uid("alice"), uid("bob"), uid("carol"));
    assert_eq!(store.get_users(APP, std::slice::from_ref(&a)).await.unwrap(), vec![None]);
    assert_eq!(store.get_users(APP, &[]).await.unwrap(), vec![]);

    let mut alice = UserRecord::new(a.clone(), 10);
    alice.nick_name = "Alice".into();
    alice.extra = "{\"k\":1}".into();
    let mut bob = UserRecord::new(b.clone(), 11);
    bob.deleted = true;
    bob.user_sex = 2;
    bob.silent_flag = true;
    let mut other_app_alice = UserRecord::new(a.clone(), 12);
    other_app_alice.nick_name = "Other".into();
    let mut batch = WriteBatch::new();
    batch.put_user(APP, alice.clone()).put_user(APP, bob.clone()).put_user(AppId(2), other_app_alice.clone());
    write(store, batch).await;

    let got = store.get_users(APP, &[b.clone(), c.clone(), a.clone(), b.clone()]).await.unwrap();
    assert_eq!(got, vec![Some(bob.clone()), None, Some(alice.clone()), Some(bob.clone())]);
    assert_eq!(store.get_users(AppId(2), &[a.clone(), b.clone()]).await.unwrap(), vec![Some(other_app_alice), None]);

    // Overwrite, including un-deleting.
    alice.nick_name = "Alice 2".into();
    alice.updated_ms = 20;
    bob.deleted = false;
    let mut batch = WriteBatch::new();
    batch.put_user(APP, alice.clone()).put_user(APP, bob.clone());
    write(store, batch).await;
    assert_eq!(store.get_users(APP, &[a, b]).await.unwrap(), vec![Some(alice), Some(bob)]);
}

/// `read_log` pages ascending with `after`/`limit`, with no skip and no repeat, over
/// seqs that are not dense.
pub async fn log_read_forward_paging(store: &dyn Store) {
    let user = "u1";
    let written: Vec<LogEntry> = (1..=40u64).map(|i| entry(i * 3, &format!("m{i}"))).collect();
    // Out of order and split over batches: storage orders by seq, not by arrival.
    append(store, APP, user, KIND, &written[20..]).await;
    append(store, APP, user, KIND, &written[..20]).await;

    assert_eq!(read(store, APP, user, KIND, 0, 1000).await, written);
    assert_eq!(read(store, APP, user, KIND, 0, 0).await, vec![]);
    assert_eq!(seqs(&read(store, APP, user, KIND, 0, 2).await), vec![3, 6]);
    // `after` need not be a stored seq.
    assert_eq!(seqs(&read(store, APP, user, KIND, 4, 2).await), vec![6, 9]);
    assert_eq!(seqs(&read(store, APP, user, KIND, 6, 2).await), vec![9, 12]);
    assert_eq!(seqs(&read(store, APP, user, KIND, 117, 5).await), vec![120]);
    assert_eq!(read(store, APP, user, KIND, 120, 5).await, vec![]);
    assert_eq!(read(store, APP, user, KIND, u64::MAX, 5).await, vec![]);
    for page in [1, 3, 7, 40, 41] {
        assert_eq!(collect_log(store, APP, &self::user(user), KIND, page).await, written, "page {page}");
    }
    // Extreme seqs are ordinary positions.
    append(store, APP, "edge", KIND, &[entry(u64::MAX, "max"), entry(1, "one")]).await;
    assert_eq!(seqs(&read(store, APP, "edge", KIND, 0, 10).await), vec![1, u64::MAX]);
    assert_eq!(seqs(&read(store, APP, "edge", KIND, 1, 10).await), vec![u64::MAX]);
}

/// `read_log_back` pages descending with `before`/`limit`.
pub async fn log_read_back_paging(store: &dyn Store) {
    let user = uid("u1");
    let written: Vec<LogEntry> = (1..=25u64).map(|i| entry(i * 2, &format!("m{i}"))).collect();
    append(store, APP, user.as_str(), KIND, &written).await;
    let back = |before: u64, limit: usize| {
        let user = user.clone();
        async move { store.read_log_back(APP, &Owner::User(user), KIND, Seq(before), limit).await.unwrap() }
    };
    assert_eq!(seqs(&back(u64::MAX, 3).await), vec![50, 48, 46]);
    assert_eq!(seqs(&back(46, 2).await), vec![44, 42]);
    assert_eq!(seqs(&back(45, 2).await), vec![44, 42]);
    assert_eq!(seqs(&back(3, 10).await), vec![2]);
    assert_eq!(back(2, 10).await, vec![]);
    assert!(back(0, 10).await.is_empty());
    assert!(back(u64::MAX, 0).await.is_empty());
    let mut expected = written.clone();
    expected.reverse();
    for page in [1, 4, 25, 26] {
        assert_eq!(collect_log_back(store, APP, &Owner::User(user.clone()), KIND, page).await, expected, "page {page}");
    }
    assert_eq!(back(u64::MAX, 100).await, expected);
}

/// Logs of different apps, users (including ids that are prefixes of each other) and
/// kinds never see each other's entries.
pub async fn log_isolation(store: &dyn Store) {
    let cases: [(AppId, &str, SyncKind); 8] = [
        (APP, "a", SyncKind::Message),
        (APP, "ab", SyncKind::Message),
        (APP, "a", SyncKind::Profile),
        (APP, "a", SyncKind::Conversation),
        (APP, "b", SyncKind::Message),
        (AppId(2), "a", SyncKind::Message),
        (AppId(256), "a", SyncKind::Message),
        (AppId(u32::MAX), "ab", SyncKind::Profile),
    ];
    let mut batch = WriteBatch::new();
    for (i, (app, user, kind)) in cases.iter().enumerate() {
        for seq in 1..=3u64 {
            batch.append_log(*app, uid(user), *kind, entry(seq, &format!("{i}/{seq}")));
        }
    }
    write(store, batch).await;
    for (i, (app, user, kind)) in cases.iter().enumerate() {
        let expected: Vec<LogEntry> = (1..=3u64).map(|seq| entry(seq, &format!("{i}/{seq}"))).collect();
        assert_eq!(read(store, *app, user, *kind, 0, 100).await, expected, "log {i}");
        let mut rev = expected.clone();
        rev.reverse();
        assert_eq!(
            store.read_log_back(*app, &self::user(user), *kind, Seq::MAX, 100).await.unwrap(),
            rev,
            "log {i} backwards"
        );
    }
    assert_eq!(read(store, APP, "a", SyncKind::Friendship, 0, 100).await, vec![]);
    assert_eq!(read(store, APP, "aa", KIND, 0, 100).await, vec![]);
    assert_eq!(read(store, AppId(3), "a", KIND, 0, 100).await, vec![]);
}

/// `get_log_entry` finds exactly one seq of one log.
pub async fn log_get_entry(store: &dyn Store) {
    let u = uid("u");
    append(store, APP, "u", KIND, &[entry(5, "five"), entry(7, "seven")]).await;
    let get = |user: &'static str, kind: SyncKind, seq: u64| async move {
        store.get_log_entry(APP, &self::user(user), kind, Seq(seq)).await.unwrap()
    };
    assert_eq!(get("u", KIND, 5).await, Some(entry(5, "five")));
    assert_eq!(get("u", KIND, 7).await, Some(entry(7, "seven")));
    assert_eq!(get("u", KIND, 6).await, None);
    assert_eq!(get("u", SyncKind::Profile, 5).await, None);
    assert_eq!(get("uu", KIND, 5).await, None);
    assert_eq!(store.get_log_entry(AppId(2), &Owner::User(u), KIND, Seq(5)).await.unwrap(), None);
}

/// Writing a seq twice leaves one entry holding the latest write (retries are
/// harmless; recall rewrites in place).
pub async fn log_append_is_idempotent(store: &dyn Store) {
    append(store, APP, "u", KIND, &[entry(1, "a"), entry(2, "b")]).await;
    append(store, APP, "u", KIND, &[entry(2, "b")]).await;
    assert_eq!(read(store, APP, "u", KIND, 0, 10).await, vec![entry(1, "a"), entry(2, "b")]);

    let mut recalled = entry(2, "recalled");
    recalled.time_ms = 9_999;
    let mut batch = WriteBatch::new();
    batch.replace_log_entry(APP, uid("u"), KIND, recalled.clone());
    write(store, batch).await;
    assert_eq!(read(store, APP, "u", KIND, 0, 10).await, vec![entry(1, "a"), recalled.clone()]);
    assert_eq!(store.get_log_entry(APP, &user("u"), KIND, Seq(2)).await.unwrap(), Some(recalled));

    // Within one batch the later op wins.
    let mut batch = WriteBatch::new();
    batch.append_log(APP, uid("u"), KIND, entry(3, "first")).append_log(APP, uid("u"), KIND, entry(3, "second"));
    write(store, batch).await;
    assert_eq!(read(store, APP, "u", KIND, 2, 10).await, vec![entry(3, "second")]);
}

/// Deleted log entries are gone from every read (forward, back, by seq, across
/// buckets) and only from their own log; deleting an absent entry is no error; within
/// one batch the later op on an entry wins.
pub async fn log_entries_delete(store: &dyn Store) {
    let far = (1u64 << 20) + 3;
    let all = [entry(1, "a"), entry(2, "b"), entry(3, "c"), entry(4, "d"), entry(far, "far")];
    append(store, APP, "u", KIND, &all).await;
    append(store, APP, "v", KIND, &all).await;
    append(store, APP, "u", SyncKind::Conversation, &all).await;
    let mut b = WriteBatch::new();
    for seq in [2, 4, far, 99] {
        b.delete_log_entry(APP, uid("u"), KIND, Seq(seq));
    }
    // Appended then deleted: absent; deleted then appended: present.
    b.append_log(APP, uid("u"), KIND, entry(6, "gone")).delete_log_entry(APP, uid("u"), KIND, Seq(6));
    b.delete_log_entry(APP, uid("u"), KIND, Seq(7)).append_log(APP, uid("u"), KIND, entry(7, "kept"));
    write(store, b).await;
    let kept = vec![entry(1, "a"), entry(3, "c"), entry(7, "kept")];
    assert_eq!(collect_log(store, APP, &user("u"), KIND, 1).await, kept);
    assert_eq!(read(store, APP, "u", KIND, 1, 10).await, kept[1..].to_vec());
    let mut back = kept.clone();
    back.reverse();
    assert_eq!(collect_log_back(store, APP, &user("u"), KIND, 1).await, back);
    for seq in [2, 4, far, 6] {
        assert_eq!(store.get_log_entry(APP, &user("u"), KIND, Seq(seq)).await.unwrap(), None, "seq {seq}");
    }
    // Other logs keep theirs.
    assert_eq!(read(store, APP, "v", KIND, 0, 10).await, all.to_vec());
    assert_eq!(read(store, APP, "u", SyncKind::Conversation, 0, 10).await, all.to_vec());
}

/// Seq bounds are per (app, user, kind), absent until set, and never go down —
/// neither across writes nor within one batch.
pub async fn seq_bounds_never_go_down(store: &dyn Store) {
    let (a, ab) = (uid("a"), uid("ab"));
    let bounds = |user: UserId| async move { store.seq_bounds(APP, &Owner::User(user)).await.unwrap() };
    assert_eq!(bounds(a.clone()).await, vec![]);

    let set = |user: &UserId, kind: SyncKind, bound: u64| {
        let mut b = WriteBatch::new();
        b.set_seq_bound(APP, user.clone(), kind, Seq(bound));
        b
    };
    write(store, set(&a, SyncKind::Message, 100)).await;
    write(store, set(&a, SyncKind::Profile, 10)).await;
    assert_eq!(bounds(a.clone()).await, vec![(SyncKind::Message, Seq(100)), (SyncKind::Profile, Seq(10))]);
    write(store, set(&a, SyncKind::Message, 50)).await;
    assert_eq!(bounds(a.clone()).await[0], (SyncKind::Message, Seq(100)));
    write(store, set(&a, SyncKind::Message, 200)).await;
    assert_eq!(bounds(a.clone()).await[0], (SyncKind::Message, Seq(200)));

    // Within one batch, and with a lower value after a higher one.
    let mut batch = set(&a, SyncKind::Profile, 300);
    batch.extend(set(&a, SyncKind::Profile, 250));
    batch.extend(set(&ab, SyncKind::Conversation, 7));
    write(store, batch).await;
    assert_eq!(bounds(a.clone()).await, vec![(SyncKind::Message, Seq(200)), (SyncKind::Profile, Seq(300))]);
    // "ab" is not "a" with more data, and vice versa.
    assert_eq!(bounds(ab.clone()).await, vec![(SyncKind::Conversation, Seq(7))]);
    assert_eq!(store.seq_bounds(AppId(2), &Owner::User(a.clone())).await.unwrap(), vec![]);

    // Concurrent lower writes cannot undo a higher one.
    join_all((0..20u64).map(|i| {
        let a = a.clone();
        async move {
            let mut b = WriteBatch::new();
            b.set_seq_bound(APP, a, SyncKind::Message, Seq(150 + i * 5));
            store.write(b).await.unwrap();
        }
    }))
    .await;
    assert_eq!(bounds(a).await[0], (SyncKind::Message, Seq(245)));
}

/// Dedup records round-trip, expire at `expires_ms`, and can be overwritten.
pub async fn dedup_roundtrip_and_expiry(store: &dyn Store) {
    let rec =
        DedupRecord { key: "alice/client-1".into(), value: Bytes::from_static(b"server-id-1"), expires_ms: 10_000 };
    assert_eq!(store.get_dedup(&rec.key, 0).await.unwrap(), None);
    let mut batch = WriteBatch::new();
    batch.put_dedup(rec.clone());
    write(store, batch).await;
    assert_eq!(store.get_dedup(&rec.key, 0).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.get_dedup(&rec.key, 9_999).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.get_dedup(&rec.key, 10_000).await.unwrap(), None);
    assert_eq!(store.get_dedup(&rec.key, u64::MAX).await.unwrap(), None);
    assert_eq!(store.get_dedup("alice/client-", 0).await.unwrap(), None);
    assert_eq!(store.get_dedup("alice/client-10", 0).await.unwrap(), None);

    let renewed = DedupRecord { value: Bytes::from_static(b"server-id-2"), expires_ms: 20_000, ..rec.clone() };
    let mut batch = WriteBatch::new();
    batch.put_dedup(renewed.clone());
    write(store, batch).await;
    assert_eq!(store.get_dedup(&rec.key, 15_000).await.unwrap(), Some(renewed));
}

fn guarded(key: &str, value: &'static str, user: &UserId, seq: u64) -> GuardedBatch {
    let mut batch = WriteBatch::new();
    batch.append_log(APP, user.clone(), KIND, entry(seq, value));
    GuardedBatch {
        guard: DedupRecord { key: key.into(), value: Bytes::from_static(value.as_bytes()), expires_ms: 10_000 },
        batch,
    }
}

/// A guarded write applies batches whose key is new (writing the guard too), answers
/// `Duplicate` with the stored value for keys already stored or earlier in the same
/// call, and writes nothing of a duplicate's batch.
pub async fn guarded_write_applies_new_and_refuses_duplicates(store: &dyn Store) {
    let u = uid("guarded");
    let out = store.write_guarded(vec![guarded("g/1", "first", &u, 1)], 0).await.unwrap();
    assert_eq!(out, vec![GuardOutcome::Applied]);
    assert_eq!(store.get_dedup("g/1", 0).await.unwrap().map(|r| r.value), Some(Bytes::from_static(b"first")));
    let out = store
        .write_guarded(
            vec![
                guarded("g/1", "again", &u, 2),
                guarded("g/2", "second", &u, 3),
                guarded("g/2", "second-dup", &u, 4),
                guarded("g/3", "third", &u, 5),
            ],
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            GuardOutcome::Duplicate(Bytes::from_static(b"first")),
            GuardOutcome::Applied,
            GuardOutcome::Duplicate(Bytes::from_static(b"second")),
            GuardOutcome::Applied,
        ]
    );
    let seqs: Vec<u64> = store
        .read_log(APP, &Owner::User(u.clone()), KIND, Seq::ZERO, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(seqs, vec![1, 3, 5], "duplicates' batches are not written");
    assert_eq!(store.write_guarded(Vec::new(), 0).await.unwrap(), Vec::new());
}

/// An expired guard record does not count; an invalid key fails the call and writes
/// nothing.
pub async fn guarded_write_respects_expiry_and_invalid_input(store: &dyn Store) {
    let u = uid("guarded-exp");
    store.write_guarded(vec![guarded("e/1", "old", &u, 1)], 0).await.unwrap();
    // At 10_000 the record (expires_ms 10_000) is gone: the same key applies again.
    let out = store.write_guarded(vec![guarded("e/1", "new", &u, 2)], 10_000).await.unwrap();
    assert_eq!(out, vec![GuardOutcome::Applied]);
    let bad = guarded(&"k".repeat(crate::MAX_DEDUP_KEY_LEN + 1), "bad", &u, 3);
    assert!(store.write_guarded(vec![guarded("e/2", "ok", &u, 4), bad], 0).await.is_err());
    let seqs: Vec<u64> = store
        .read_log(APP, &Owner::User(u.clone()), KIND, Seq::ZERO, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(seqs, vec![1, 2], "a failed guarded write writes nothing");
}

/// Apps round-trip and overwrite.
pub async fn apps_roundtrip(store: &dyn Store) {
    assert_eq!(store.get_app(APP).await.unwrap(), None);
    let app = AppRecord { app_id: APP, secret: "s3cret".into(), created_ms: 42 };
    let other = AppRecord { app_id: AppId(u32::MAX), secret: "other".into(), created_ms: 43 };
    let mut batch = WriteBatch::new();
    batch.put_app(app.clone()).put_app(other.clone());
    write(store, batch).await;
    assert_eq!(store.get_app(APP).await.unwrap(), Some(app.clone()));
    assert_eq!(store.get_app(AppId(u32::MAX)).await.unwrap(), Some(other));
    assert_eq!(store.get_app(AppId(2)).await.unwrap(), None);
    let rotated = AppRecord { secret: "rotated".into(), ..app };
    let mut batch = WriteBatch::new();
    batch.put_app(rotated.clone());
    write(store, batch).await;
    assert_eq!(store.get_app(APP).await.unwrap(), Some(rotated));
}

/// One batch carrying every kind of op makes all of them visible.
pub async fn mixed_batch(store: &dyn Store) {
    let u = uid("mixed");
    let user = UserRecord::new(u.clone(), 1);
    let dedup = DedupRecord { key: "mixed/1".into(), value: Bytes::from_static(b"x"), expires_ms: u64::MAX };
    let app = AppRecord { app_id: APP, secret: "s".into(), created_ms: 1 };
    let mut batch = WriteBatch::with_capacity(5);
    batch
        .put_user(APP, user.clone())
        .append_log(APP, u.clone(), SyncKind::Profile, entry(1, "p"))
        .set_seq_bound(APP, u.clone(), SyncKind::Profile, Seq(1000))
        .put_dedup(dedup.clone())
        .put_app(app.clone());
    assert_eq!(batch.len(), 5);
    write(store, batch).await;
    assert_eq!(store.get_users(APP, std::slice::from_ref(&u)).await.unwrap(), vec![Some(user)]);
    assert_eq!(read(store, APP, "mixed", SyncKind::Profile, 0, 10).await, vec![entry(1, "p")]);
    assert_eq!(store.seq_bounds(APP, &Owner::User(u.clone())).await.unwrap(), vec![(SyncKind::Profile, Seq(1000))]);
    assert_eq!(store.get_dedup("mixed/1", 0).await.unwrap(), Some(dedup));
    assert_eq!(store.get_app(APP).await.unwrap(), Some(app));
}

/// A batch with an invalid op is refused as a whole, and the store keeps working.
pub async fn invalid_batch_writes_nothing(store: &dyn Store) {
    let bad_dedup = |key: String| {
        let mut b = WriteBatch::new();
        b.append_log(APP, uid("inv"), KIND, entry(1, "must not land"));
        b.put_dedup(DedupRecord { key, value: Bytes::new(), expires_ms: u64::MAX });
        b
    };
    for key in [String::new(), "k".repeat(crate::MAX_DEDUP_KEY_LEN + 1)] {
        let err = store.write(bad_dedup(key)).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    }
    let mut huge = WriteBatch::new();
    huge.append_log(
        APP,
        uid("inv"),
        KIND,
        LogEntry { seq: Seq(2), time_ms: 0, payload: Bytes::from(vec![0u8; crate::MAX_VALUE_LEN + 1]) },
    );
    let err = store.write(huge).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    assert!(matches!(store.get_dedup("", 0).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(read(store, APP, "inv", KIND, 0, 10).await, vec![]);

    append(store, APP, "inv", KIND, &[entry(3, "ok")]).await;
    assert_eq!(read(store, APP, "inv", KIND, 0, 10).await, vec![entry(3, "ok")]);
}

/// Many concurrent writers (64 × 50 batches): every write is visible afterwards, in
/// seq order, with the right payload.
pub async fn concurrent_writers(store: &dyn Store) {
    const WRITERS: u64 = 64;
    const BATCHES: u64 = 50;
    join_all((0..WRITERS).map(|w| async move {
        let user = uid(&format!("w{w}"));
        for i in 1..=BATCHES {
            let mut b = WriteBatch::new();
            b.append_log(APP, user.clone(), KIND, entry(i, &format!("{w}:{i}"))).set_seq_bound(
                APP,
                user.clone(),
                KIND,
                Seq(i),
            );
            store.write(b).await.expect("concurrent write");
        }
    }))
    .await;
    for w in 0..WRITERS {
        let user = uid(&format!("w{w}"));
        let expected: Vec<LogEntry> = (1..=BATCHES).map(|i| entry(i, &format!("{w}:{i}"))).collect();
        assert_eq!(collect_log(store, APP, &Owner::User(user.clone()), KIND, 17).await, expected, "writer {w}");
        assert_eq!(store.seq_bounds(APP, &Owner::User(user.clone())).await.unwrap(), vec![(KIND, Seq(BATCHES))]);
    }
}

/// An empty batch is accepted and changes nothing.
pub async fn empty_batch(store: &dyn Store) {
    let batch = WriteBatch::new();
    assert!(batch.is_empty());
    store.write(batch).await.expect("empty batch");
    store.write(WriteBatch::from(vec![])).await.expect("empty batch");
    assert_eq!(read(store, APP, "u", KIND, 0, 10).await, vec![]);
}

/// 64 KiB payloads (and binary ones) round-trip exactly.
pub async fn large_payload(store: &dyn Store) {
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big = LogEntry { seq: Seq(1), time_ms: 7, payload: Bytes::from(payload) };
    let mut batch = WriteBatch::new();
    batch.append_log(APP, uid("big"), KIND, big.clone());
    batch.put_dedup(DedupRecord { key: "big".into(), value: big.payload.clone(), expires_ms: u64::MAX });
    write(store, batch).await;
    assert_eq!(read(store, APP, "big", KIND, 0, 10).await, vec![big.clone()]);
    assert_eq!(store.get_dedup("big", 0).await.unwrap().map(|r| r.value), Some(big.payload));
}

/// `flush` succeeds with and without pending data.
pub async fn flush_ok(store: &dyn Store) {
    store.flush().await.expect("flush of an empty store");
    append(store, APP, "f", KIND, &[entry(1, "x")]).await;
    store.flush().await.expect("flush");
    assert_eq!(read(store, APP, "f", KIND, 0, 10).await, vec![entry(1, "x")]);
}

fn sorted_marks(mut marks: Vec<(Conversation, Seq)>) -> Vec<(Conversation, Seq)> {
    marks.sort();
    marks
}

fn marks(list: &[(&str, u64)]) -> Vec<(Conversation, Seq)> {
    sorted_marks(list.iter().map(|&(p, seq)| (peer(p), Seq(seq))).collect())
}

/// The acks of `user`'s own logs as (kind, seq), checking that own acks come first.
fn own_acks(user: &UserId, acks: Vec<DeviceAck>) -> Vec<(SyncKind, Seq)> {
    let own = Owner::User(user.clone());
    let n = acks.iter().take_while(|a| a.owner == own).count();
    assert!(acks[n..].iter().all(|a| a.owner != own), "own acks are listed first: {acks:?}");
    acks[..n].iter().map(|a| (a.kind, a.seq)).collect()
}

/// Device acks are per (app, user, device, log), absent until put, never go down —
/// across writes, within one batch and under concurrent writers — and an empty or
/// over-long device id is refused (on write, failing the whole batch, and on read).
pub async fn device_acks_keep_max(store: &dyn Store) {
    let (a, ab) = (uid("a"), uid("ab"));
    let acks = |user: &UserId, device: &str| {
        let (user, device) = (user.clone(), device.to_owned());
        async move { own_acks(&user, store.get_device_acks(APP, &user, &device).await.unwrap()) }
    };
    let ack = |user: &UserId, device: &str, kind: SyncKind, seq: u64| {
        let mut b = WriteBatch::new();
        b.put_device_ack(APP, user.clone(), device.to_owned(), kind, Seq(seq));
        b
    };
    assert_eq!(acks(&a, "phone").await, vec![]);

    write(store, ack(&a, "phone", SyncKind::Message, 10)).await;
    write(store, ack(&a, "phone", SyncKind::Profile, 5)).await;
    write(store, ack(&a, "tablet", SyncKind::Message, 3)).await;
    assert_eq!(acks(&a, "phone").await, vec![(SyncKind::Message, Seq(10)), (SyncKind::Profile, Seq(5))]);
    assert_eq!(acks(&a, "tablet").await, vec![(SyncKind::Message, Seq(3))]);
    write(store, ack(&a, "phone", SyncKind::Message, 7)).await;
    assert_eq!(acks(&a, "phone").await[0], (SyncKind::Message, Seq(10)));
    write(store, ack(&a, "phone", SyncKind::Message, 12)).await;
    assert_eq!(acks(&a, "phone").await[0], (SyncKind::Message, Seq(12)));

    // Within one batch, a lower value after a higher one.
    let mut batch = ack(&a, "tablet", SyncKind::Message, 30);
    batch.extend(ack(&a, "tablet", SyncKind::Message, 20));
    write(store, batch).await;
    assert_eq!(acks(&a, "tablet").await, vec![(SyncKind::Message, Seq(30))]);

    // Length-prefixed ids: user "a" device "bc" is not user "ab" device "c", and a
    // device id that extends another is a different device.
    let mut batch = ack(&a, "bc", SyncKind::Message, 1);
    batch.extend(ack(&ab, "c", SyncKind::Message, 2));
    batch.extend(ack(&a, "phone2", SyncKind::Message, 99));
    write(store, batch).await;
    assert_eq!(acks(&a, "bc").await, vec![(SyncKind::Message, Seq(1))]);
    assert_eq!(acks(&ab, "c").await, vec![(SyncKind::Message, Seq(2))]);
    assert_eq!(acks(&a, "b").await, vec![]);
    assert_eq!(acks(&a, "phone").await, vec![(SyncKind::Message, Seq(12)), (SyncKind::Profile, Seq(5))]);
    assert_eq!(acks(&ab, "phone").await, vec![]);
    assert_eq!(store.get_device_acks(AppId(2), &a, "phone").await.unwrap(), vec![]);
    // Any UTF-8 of 1..=64 bytes is a device id.
    let odd = "Ä/ \u{1F600}".to_owned() + &"d".repeat(64 - "Ä/ \u{1F600}".len());
    write(store, ack(&a, &odd, SyncKind::Conversation, 4)).await;
    assert_eq!(acks(&a, &odd).await, vec![(SyncKind::Conversation, Seq(4))]);

    // Concurrent lower writes cannot undo a higher one.
    join_all((0..20u64).map(|i| {
        let a = a.clone();
        async move { store.write(ack(&a, "phone", SyncKind::Message, 50 + i * 5)).await.unwrap() }
    }))
    .await;
    assert_eq!(acks(&a, "phone").await[0], (SyncKind::Message, Seq(145)));

    // Invalid device ids.
    for bad in [String::new(), "d".repeat(crate::MAX_DEVICE_ID_LEN + 1)] {
        let mut batch = WriteBatch::new();
        batch.append_log(APP, uid("inv"), KIND, entry(1, "must not land"));
        batch.put_device_ack(APP, a.clone(), bad.clone(), KIND, Seq(1));
        let err = store.write(batch).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
        let err = store.get_device_acks(APP, &a, &bad).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    }
    assert_eq!(read(store, APP, "inv", KIND, 0, 10).await, vec![]);
}

/// `read_many` answers every read as the single-call method would, in input order, and
/// one bad read (an invalid device id) fails only itself.
pub async fn read_many_answers_like_single_reads(store: &dyn Store) {
    let (a, b) = (uid("rm-a"), uid("rm-b"));
    let mut batch = WriteBatch::new();
    batch.put_user(APP, UserRecord::new(a.clone(), 7));
    batch.set_seq_bound(APP, a.clone(), KIND, Seq(1_000));
    batch.put_device_ack(APP, a.clone(), "phone".into(), KIND, Seq(4));
    batch.append_log(APP, a.clone(), SyncKind::Friendship, entry(1, "f1"));
    batch.append_log(APP, a.clone(), SyncKind::Friendship, entry(2, "f2"));
    write(store, batch).await;
    assert_eq!(store.read_many(Vec::new()).await.unwrap(), vec![]);
    let answers = store
        .read_many(vec![
            Read::Users { app: APP, ids: vec![a.clone(), b.clone()] },
            Read::SeqBounds { app: APP, owner: user("rm-a") },
            Read::SeqBounds { app: APP, owner: user("rm-b") },
            Read::DeviceAcks { app: APP, user: a.clone(), device_id: "phone".into() },
            Read::DeviceAcks { app: APP, user: a.clone(), device_id: String::new() },
            Read::Log { app: APP, owner: user("rm-a"), kind: SyncKind::Friendship, after: Seq::ZERO, limit: 1 },
            Read::Log { app: APP, owner: user("rm-a"), kind: SyncKind::Friendship, after: Seq::ZERO, limit: 0 },
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 7);
    let users = store.get_users(APP, &[a.clone(), b.clone()]).await.unwrap();
    assert!(users[0].is_some() && users[1].is_none());
    assert_eq!(answers[0], Ok(ReadAnswer::Users(users)));
    assert_eq!(answers[1], Ok(ReadAnswer::SeqBounds(vec![(KIND, Seq(1_000))])));
    assert_eq!(answers[2], Ok(ReadAnswer::SeqBounds(vec![])));
    let acks = store.get_device_acks(APP, &a, "phone").await.unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!(answers[3], Ok(ReadAnswer::DeviceAcks(acks)));
    assert!(matches!(answers[4], Err(StoreError::InvalidArgument(_))), "{:?}", answers[4]);
    assert_eq!(answers[5], Ok(ReadAnswer::Log(vec![entry(1, "f1")])));
    assert_eq!(answers[6], Ok(ReadAnswer::Log(vec![])));
}

/// A device's acks of other owners' logs (the groups its user reads) are kept per
/// (device, owner, kind) beside its own, keep the max, and never mix with the own
/// acks — even for a group whose id equals a user's.
pub async fn device_acks_of_group_timelines(store: &dyn Store) {
    let a = uid("a");
    let put = |device: &str, owner: Owner, seq: u64| {
        let mut b = WriteBatch::new();
        b.put_device_ack_of(APP, a.clone(), device.to_owned(), owner, KIND, Seq(seq));
        b
    };
    let sorted = |mut v: Vec<DeviceAck>| {
        v.sort_by(|x, y| (&x.owner, x.kind).cmp(&(&y.owner, y.kind)));
        v
    };
    let da = |owner: Owner, kind: SyncKind, seq: u64| DeviceAck { owner, kind, seq: Seq(seq) };
    let g = |s: &str| Owner::Group(gid(s));

    let mut batch = put("phone", g("g1"), 5);
    batch.extend(put("phone", g("a"), 6)).extend(put("phone", g("g1"), 3)).extend(put("tablet", g("g1"), 9));
    batch.put_device_ack(APP, a.clone(), "phone".into(), KIND, Seq(2));
    // Another user's own log acked by a's device is a different log from a's own.
    batch.extend(put("phone", user("b"), 8));
    write(store, batch).await;
    let got = store.get_device_acks(APP, &a, "phone").await.unwrap();
    assert_eq!(own_acks(&a, got.clone()), vec![(KIND, Seq(2))]);
    assert_eq!(
        sorted(got),
        sorted(vec![da(user("a"), KIND, 2), da(user("b"), KIND, 8), da(g("a"), KIND, 6), da(g("g1"), KIND, 5)])
    );
    assert_eq!(store.get_device_acks(APP, &a, "tablet").await.unwrap(), vec![da(g("g1"), KIND, 9)]);

    // Keep the max, across writes and concurrent writers.
    write(store, put("phone", g("g1"), 4)).await;
    join_all((0..10u64).map(|i| async move { store.write(put("phone", g("g1"), 10 + i)).await.unwrap() })).await;
    let got = store.get_device_acks(APP, &a, "phone").await.unwrap();
    assert!(got.contains(&da(g("g1"), KIND, 19)), "{got:?}");
    assert_eq!(got.len(), 4, "{got:?}");
    // The group's own device acks (there are none: a group has no devices) and other
    // users' are untouched.
    assert_eq!(store.get_device_acks(APP, &uid("g1"), "phone").await.unwrap(), vec![]);
    assert_eq!(store.get_device_acks(APP, &uid("b"), "phone").await.unwrap(), vec![]);
}

/// A group owns logs and seq bounds of its own: appends, paging both ways, point reads
/// and bounds work as for users, and a group never sees the logs of a user with the
/// same id (or of a group whose id extends its own).
pub async fn group_owner_logs_and_bounds(store: &dyn Store) {
    let (g, ga, u) = (Owner::Group(gid("a")), Owner::Group(gid("ab")), user("a"));
    let written: Vec<LogEntry> = (1..=20u64).map(|i| entry(i * 7, &format!("g{i}"))).collect();
    let mut batch = WriteBatch::new();
    for e in written.iter().rev() {
        batch.append_log(APP, g.clone(), KIND, e.clone());
    }
    batch.append_log(APP, u.clone(), KIND, entry(7, "user a"));
    batch.append_log(APP, ga.clone(), KIND, entry(7, "group ab"));
    batch.append_log(APP, g.clone(), SyncKind::Profile, entry(1, "group profile"));
    batch.set_seq_bound(APP, g.clone(), KIND, Seq(1000)).set_seq_bound(APP, g.clone(), KIND, Seq(500));
    batch.set_seq_bound(APP, u.clone(), KIND, Seq(10));
    write(store, batch).await;

    for page in [1, 6, 20, 21] {
        assert_eq!(collect_log(store, APP, &g, KIND, page).await, written, "page {page}");
    }
    let mut back = written.clone();
    back.reverse();
    assert_eq!(collect_log_back(store, APP, &g, KIND, 4).await, back);
    assert_eq!(store.get_log_entry(APP, &g, KIND, Seq(14)).await.unwrap(), Some(entry(14, "g2")));
    assert_eq!(store.get_log_entry(APP, &g, KIND, Seq(15)).await.unwrap(), None);
    assert_eq!(store.read_log(APP, &u, KIND, Seq::ZERO, 100).await.unwrap(), vec![entry(7, "user a")]);
    assert_eq!(store.read_log(APP, &ga, KIND, Seq::ZERO, 100).await.unwrap(), vec![entry(7, "group ab")]);
    assert_eq!(
        store.read_log(APP, &g, SyncKind::Profile, Seq::ZERO, 100).await.unwrap(),
        vec![entry(1, "group profile")]
    );
    assert_eq!(store.read_log(AppId(2), &g, KIND, Seq::ZERO, 100).await.unwrap(), vec![]);
    assert_eq!(store.seq_bounds(APP, &g).await.unwrap(), vec![(KIND, Seq(1000))]);
    assert_eq!(store.seq_bounds(APP, &u).await.unwrap(), vec![(KIND, Seq(10))]);
    assert_eq!(store.seq_bounds(APP, &ga).await.unwrap(), vec![]);
    assert_eq!(store.seq_bounds(APP, &Owner::Group(gid("b"))).await.unwrap(), vec![]);
    // Extreme seqs and a recall-style rewrite in place.
    let mut batch = WriteBatch::new();
    batch.append_log(APP, g.clone(), KIND, entry(u64::MAX, "last")).replace_log_entry(
        APP,
        g.clone(),
        KIND,
        entry(7, "recalled"),
    );
    write(store, batch).await;
    let all = collect_log(store, APP, &g, KIND, 50).await;
    assert_eq!(all.first(), Some(&entry(7, "recalled")));
    assert_eq!(all.last(), Some(&entry(u64::MAX, "last")));
}

/// Message locators round-trip under their key — 1:1 (two copies), to oneself (one),
/// group (one, in the group's timeline) and many copies — missing keys give `None`, a
/// put overwrites, apps do not share keys, and a locator without copies or naming an
/// owner twice is refused.
pub async fn message_index_roundtrip(store: &dyn Store) {
    let loc = |from: &str, to: &str, n: u64| {
        MessageLocator::single(uid(from), Seq(n), uid(to), Seq(n.wrapping_add(100)), n.wrapping_mul(1_000))
    };
    assert_eq!(store.get_message_index(APP, 1).await.unwrap(), None);
    let long = "x".repeat(UserId::MAX_LEN);
    let group = MessageLocator::group(uid("alice"), gid(&long), Seq(77), 5);
    let many = MessageLocator {
        sender: uid("s"),
        time_ms: 9,
        copies: (0..40u64)
            .map(|i| MessageCopy {
                owner: if i.is_multiple_of(2) { user(&format!("m{i}")) } else { Owner::Group(gid(&format!("m{i}"))) },
                seq: Seq(i * 3),
            })
            .collect(),
    };
    let mut batch = WriteBatch::new();
    batch
        .put_message_index(APP, 1, loc("alice", "bob", 1))
        .put_message_index(APP, 0, loc("a", &long, 0))
        .put_message_index(APP, u64::MAX, loc(&long, "a", u64::MAX - 100))
        .put_message_index(AppId(2), 1, loc("carol", "dave", 2))
        .put_message_index(APP, 256, loc("self", "self", 3))
        .put_message_index(APP, 257, group.clone())
        .put_message_index(APP, 258, many.clone());
    write(store, batch).await;
    assert_eq!(store.get_message_index(APP, 1).await.unwrap(), Some(loc("alice", "bob", 1)));
    assert_eq!(store.get_message_index(APP, 0).await.unwrap(), Some(loc("a", &long, 0)));
    assert_eq!(store.get_message_index(APP, u64::MAX).await.unwrap(), Some(loc(&long, "a", u64::MAX - 100)));
    let to_self = store.get_message_index(APP, 256).await.unwrap().expect("self locator");
    assert_eq!(to_self, loc("self", "self", 3));
    assert_eq!(to_self.copies.len(), 1);
    assert_eq!(to_self.recipient(), Some(&uid("self")));
    let got = store.get_message_index(APP, 257).await.unwrap().expect("group locator");
    assert_eq!(got, group);
    assert_eq!((got.group_id(), got.recipient()), (Some(&gid(&long)), None));
    assert_eq!(store.get_message_index(APP, 258).await.unwrap(), Some(many));
    let one = store.get_message_index(APP, 1).await.unwrap().unwrap();
    assert_eq!((one.seq_of(&user("alice")), one.seq_of(&user("bob"))), (Some(Seq(1)), Some(Seq(101))));
    assert_eq!(one.recipient(), Some(&uid("bob")));
    assert_eq!(store.get_message_index(AppId(2), 1).await.unwrap(), Some(loc("carol", "dave", 2)));
    for missing in [2, 255, 259, u64::MAX - 1] {
        assert_eq!(store.get_message_index(APP, missing).await.unwrap(), None, "key {missing}");
    }
    assert_eq!(store.get_message_index(AppId(3), 1).await.unwrap(), None);

    // Overwrite, across batches and within one (the later op wins).
    let mut batch = WriteBatch::new();
    batch.put_message_index(APP, 1, loc("alice", "bob", 7)).put_message_index(APP, 1, loc("alice", "bob", 8));
    write(store, batch).await;
    assert_eq!(store.get_message_index(APP, 1).await.unwrap(), Some(loc("alice", "bob", 8)));

    // Invalid locators fail the whole batch.
    let twice = MessageLocator {
        sender: uid("a"),
        time_ms: 1,
        copies: vec![MessageCopy { owner: user("a"), seq: Seq(1) }, MessageCopy { owner: user("a"), seq: Seq(2) }],
    };
    let none = MessageLocator { sender: uid("a"), time_ms: 1, copies: vec![] };
    for bad in [twice, none] {
        let mut batch = WriteBatch::new();
        batch.append_log(APP, uid("inv-loc"), KIND, entry(1, "must not land")).put_message_index(APP, 999, bad);
        let err = store.write(batch).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    }
    assert_eq!(store.get_message_index(APP, 999).await.unwrap(), None);
    assert_eq!(read(store, APP, "inv-loc", KIND, 0, 10).await, vec![]);
}

/// `read_conv_back` pages descending with `before`/`limit` over sparse seqs, with no
/// skip and no repeat; appending a seq again keeps one.
pub async fn conv_index_paging(store: &dyn Store) {
    let (u, p) = (uid("u1"), peer("p1"));
    let written: Vec<u64> = (1..=30u64).map(|i| i * 3).collect();
    // Out of order, split over batches, with duplicates.
    for chunk in [&written[15..], &written[..15], &written[10..20]] {
        let mut batch = WriteBatch::new();
        for &seq in chunk {
            batch.append_conv_index(APP, u.clone(), p.clone(), Seq(seq));
        }
        write(store, batch).await;
    }
    let back = |before: u64, limit: usize| {
        let (u, p) = (u.clone(), p.clone());
        async move {
            let got = store.read_conv_back(APP, &u, &p, Seq(before), limit).await.unwrap();
            got.into_iter().map(|s| s.0).collect::<Vec<u64>>()
        }
    };
    assert_eq!(back(u64::MAX, 3).await, vec![90, 87, 84]);
    assert_eq!(back(84, 2).await, vec![81, 78]);
    // `before` need not be a stored seq.
    assert_eq!(back(83, 2).await, vec![81, 78]);
    assert_eq!(back(4, 10).await, vec![3]);
    assert!(back(3, 10).await.is_empty());
    assert!(back(0, 10).await.is_empty());
    assert!(back(u64::MAX, 0).await.is_empty());
    let mut expected = written.clone();
    expected.reverse();
    assert_eq!(back(u64::MAX, 100).await, expected);
    for page in [1, 4, 29, 30, 31] {
        let got: Vec<u64> = collect_conv_back(store, APP, &u, &p, page).await.into_iter().map(|s| s.0).collect();
        assert_eq!(got, expected, "page {page}");
    }

    // Extreme seqs are ordinary positions (`before` is exclusive, so Seq::MAX itself
    // is never returned by a read that must pass a larger `before`).
    let mut batch = WriteBatch::new();
    batch
        .append_conv_index(APP, uid("edge"), p.clone(), Seq(0))
        .append_conv_index(APP, uid("edge"), p.clone(), Seq(u64::MAX - 1))
        .append_conv_index(APP, uid("edge"), p.clone(), Seq(1));
    write(store, batch).await;
    let edge = store.read_conv_back(APP, &uid("edge"), &p, Seq::MAX, 10).await.unwrap();
    assert_eq!(edge, vec![Seq(u64::MAX - 1), Seq(1), Seq(0)]);
    assert_eq!(store.read_conv_back(APP, &uid("edge"), &p, Seq(1), 10).await.unwrap(), vec![Seq(0)]);
}

/// Conversation indexes of different apps, users and conversations never mix —
/// including user "a" with peer "bc" against user "ab" with peer "c", and the 1:1
/// conversation with "g" against group "g" — and a conversation is directional
/// (user's view, not peer's).
pub async fn conv_index_isolation(store: &dyn Store) {
    let group = |s: &str| Conversation::Group(gid(s));
    let cases: [(AppId, &str, Conversation); 12] = [
        (APP, "a", peer("bc")),
        (APP, "ab", peer("c")),
        (APP, "a", peer("b")),
        (APP, "a", peer("bcd")),
        (APP, "bc", peer("a")),
        (APP, "a", peer("a")),
        (APP, "a", group("bc")),
        (APP, "a", group("b")),
        (APP, "ab", group("c")),
        (AppId(2), "a", peer("bc")),
        (AppId(256), "a", peer("bc")),
        (AppId(u32::MAX), "ab", peer("c")),
    ];
    let mut batch = WriteBatch::new();
    for (i, (app, user, conv)) in cases.iter().enumerate() {
        for k in 0..3u64 {
            batch.append_conv_index(*app, uid(user), conv.clone(), Seq(10 * k + i as u64));
        }
    }
    write(store, batch).await;
    for (i, (app, user, conv)) in cases.iter().enumerate() {
        let expected: Vec<Seq> = (0..3u64).rev().map(|k| Seq(10 * k + i as u64)).collect();
        assert_eq!(
            store.read_conv_back(*app, &uid(user), conv, Seq::MAX, 100).await.unwrap(),
            expected,
            "conversation {i}"
        );
    }
    for (app, user, conv) in [
        (APP, "ab", peer("bc")),
        (APP, "a", peer("c")),
        (APP, "abc", peer("a")),
        (APP, "b", peer("a")),
        (AppId(3), "a", peer("bc")),
        (APP, "a", group("a")),
        (APP, "a", group("bcd")),
        (APP, "bc", group("a")),
    ] {
        assert_eq!(
            store.read_conv_back(app, &uid(user), &conv, Seq::MAX, 100).await.unwrap(),
            vec![],
            "{app}/{user}/{conv}"
        );
    }
}

/// Read marks are per (app, user, conversation) — 1:1 and group conversations apart —
/// never go down (across writes, within one batch, under concurrent writers), and
/// `get_read_marks` lists exactly the user's.
pub async fn read_marks_keep_max(store: &dyn Store) {
    let (a, ab) = (uid("a"), uid("ab"));
    let list = |user: &UserId| {
        let user = user.clone();
        async move { sorted_marks(store.get_read_marks(APP, &user).await.unwrap()) }
    };
    let mark = |user: &UserId, conv: Conversation, seq: u64| {
        let mut b = WriteBatch::new();
        b.put_read_mark(APP, user.clone(), conv, Seq(seq));
        b
    };
    assert_eq!(list(&a).await, vec![]);

    write(store, mark(&a, peer("bc"), 10)).await;
    write(store, mark(&a, peer("b"), 5)).await;
    write(store, mark(&ab, peer("c"), 7)).await;
    assert_eq!(list(&a).await, marks(&[("bc", 10), ("b", 5)]));
    assert_eq!(list(&ab).await, marks(&[("c", 7)]));
    write(store, mark(&a, peer("bc"), 8)).await;
    assert_eq!(list(&a).await, marks(&[("bc", 10), ("b", 5)]));
    write(store, mark(&a, peer("bc"), 11)).await;
    assert_eq!(list(&a).await, marks(&[("bc", 11), ("b", 5)]));

    // Within one batch, a lower value after a higher one; a mark on oneself is a mark.
    let mut batch = mark(&a, peer("b"), 40);
    batch.extend(mark(&a, peer("b"), 30)).extend(mark(&a, peer("a"), 1));
    write(store, batch).await;
    assert_eq!(list(&a).await, marks(&[("bc", 11), ("b", 40), ("a", 1)]));
    assert_eq!(list(&ab).await, marks(&[("c", 7)]));
    assert_eq!(list(&uid("abc")).await, vec![]);
    assert_eq!(store.get_read_marks(AppId(2), &a).await.unwrap(), vec![]);

    // Group conversations: their own marks, apart from a peer with the same id.
    let g = |s: &str| Conversation::Group(gid(s));
    let mut batch = mark(&ab, g("b"), 3);
    batch.extend(mark(&ab, g("b"), 2)).extend(mark(&ab, g("c"), 9));
    write(store, batch).await;
    let mut want = marks(&[("c", 7)]);
    want.extend([(g("b"), Seq(3)), (g("c"), Seq(9))]);
    assert_eq!(list(&ab).await, sorted_marks(want));
    assert_eq!(list(&a).await, marks(&[("bc", 11), ("b", 40), ("a", 1)]));

    // A long peer id and many peers.
    let long = "p".repeat(UserId::MAX_LEN);
    let mut batch = WriteBatch::new();
    for i in 0..50u64 {
        batch.put_read_mark(APP, uid("many"), peer(&format!("peer{i}")), Seq(i));
    }
    batch.put_read_mark(APP, uid("many"), peer(&long), Seq(u64::MAX));
    batch.put_read_mark(APP, uid("many"), g(&long), Seq(u64::MAX - 1));
    write(store, batch).await;
    let mut want: Vec<(Conversation, Seq)> = (0..50u64).map(|i| (peer(&format!("peer{i}")), Seq(i))).collect();
    want.push((peer(&long), Seq::MAX));
    want.push((g(&long), Seq(u64::MAX - 1)));
    assert_eq!(list(&uid("many")).await, sorted_marks(want));

    // Concurrent lower writes cannot undo a higher one.
    join_all((0..20u64).map(|i| {
        let a = a.clone();
        async move { store.write(mark(&a, peer("bc"), 50 + i * 5)).await.unwrap() }
    }))
    .await;
    assert_eq!(list(&a).await, marks(&[("bc", 145), ("b", 40), ("a", 1)]));
}

fn conv_record(conv: Conversation, n: u64) -> ConversationRecord {
    ConversationRecord {
        last: (!n.is_multiple_of(3)).then(|| LastMessage {
            message_key: n.wrapping_mul(0x9e37_79b9),
            seq: Seq(n * 10),
            time_ms: 1_000 + n,
            sender: uid(&format!("s{n}")),
            preview: format!("préview {n} ✓"),
        }),
        read_seq: Seq(n * 7),
        is_top: n.is_multiple_of(2),
        is_mute: n.is_multiple_of(5),
        extra: if n.is_multiple_of(4) { String::new() } else { format!("{{\"n\":{n}}}") },
        sync_seq: Seq(n + 1),
        updated_ms: 2_000 + n,
        ..ConversationRecord::new(conv)
    }
}

/// Reads every conversation record of `user` in pages of `page`, checking that pages
/// never repeat a conversation.
pub async fn collect_conversations(
    store: &dyn Store,
    app: AppId,
    user: &UserId,
    page: usize,
) -> Vec<ConversationRecord> {
    assert!(page > 0);
    let mut all: Vec<ConversationRecord> = Vec::new();
    loop {
        let after = all.last().map(|r| r.conversation.clone());
        let got = store.list_conversations(app, user, after.as_ref(), page).await.expect("list_conversations");
        assert!(got.len() <= page, "page of {} for limit {page}", got.len());
        if got.is_empty() {
            return all;
        }
        for r in &got {
            assert!(all.iter().all(|x| x.conversation != r.conversation), "{} listed twice", r.conversation);
        }
        all.extend(got);
    }
}

/// Conversation records: absent until put, round-trip every field, overwrite, delete
/// (deleting an absent one is fine), list every record of exactly one user in stable
/// pages, keep 1:1 and group conversations with equal ids apart, and refuse oversized
/// text without writing anything.
pub async fn conversation_records(store: &dyn Store) {
    let (a, ab) = (uid("a"), uid("ab"));
    let g = |s: &str| Conversation::Group(gid(s));
    assert_eq!(store.get_conversation(APP, &a, &peer("b")).await.unwrap(), None);
    assert_eq!(store.list_conversations(APP, &a, None, 10).await.unwrap(), vec![]);

    let long = "z".repeat(UserId::MAX_LEN);
    let convs: Vec<Conversation> = vec![peer("b"), g("b"), peer("bc"), g("c"), peer("a"), peer(&long), g(&long)];
    let mut batch = WriteBatch::new();
    for (n, c) in convs.iter().enumerate() {
        batch.put_conversation(APP, a.clone(), conv_record(c.clone(), n as u64));
    }
    batch.put_conversation(APP, ab.clone(), conv_record(peer("c"), 100));
    batch.put_conversation(AppId(2), a.clone(), conv_record(peer("b"), 200));
    write(store, batch).await;

    for (n, c) in convs.iter().enumerate() {
        assert_eq!(store.get_conversation(APP, &a, c).await.unwrap(), Some(conv_record(c.clone(), n as u64)), "{c}");
    }
    assert_eq!(store.get_conversation(APP, &a, &peer("c")).await.unwrap(), None);
    assert_eq!(store.get_conversation(APP, &a, &g("a")).await.unwrap(), None);
    assert_eq!(store.get_conversation(APP, &ab, &peer("c")).await.unwrap(), Some(conv_record(peer("c"), 100)));
    assert_eq!(store.get_conversation(AppId(2), &a, &peer("b")).await.unwrap(), Some(conv_record(peer("b"), 200)));

    let mut want: Vec<ConversationRecord> =
        convs.iter().enumerate().map(|(n, c)| conv_record(c.clone(), n as u64)).collect();
    want.sort_by(|x, y| x.conversation.cmp(&y.conversation));
    let sorted = |mut v: Vec<ConversationRecord>| {
        v.sort_by(|x, y| x.conversation.cmp(&y.conversation));
        v
    };
    let first = collect_conversations(store, APP, &a, 100).await;
    assert_eq!(sorted(first.clone()), want);
    for page in [1, 2, 3, 6, 7, 8] {
        // The same order on every call, whatever the page size.
        assert_eq!(collect_conversations(store, APP, &a, page).await, first, "page {page}");
    }
    assert_eq!(store.list_conversations(APP, &a, None, 0).await.unwrap(), vec![]);
    assert_eq!(collect_conversations(store, APP, &ab, 3).await, vec![conv_record(peer("c"), 100)]);
    assert_eq!(collect_conversations(store, APP, &uid("abc"), 3).await, vec![]);

    // Overwrite (within a batch the later op wins) and delete.
    let mut changed = conv_record(peer("b"), 9);
    changed.is_top = true;
    let mut batch = WriteBatch::new();
    batch
        .put_conversation(APP, a.clone(), conv_record(peer("b"), 8))
        .put_conversation(APP, a.clone(), changed.clone())
        .delete_conversation(APP, a.clone(), g("b"))
        .delete_conversation(APP, a.clone(), g("never"));
    write(store, batch).await;
    assert_eq!(store.get_conversation(APP, &a, &peer("b")).await.unwrap(), Some(changed));
    assert_eq!(store.get_conversation(APP, &a, &g("b")).await.unwrap(), None);
    assert_eq!(collect_conversations(store, APP, &a, 2).await.len(), convs.len() - 1);
    // Delete then put again in one batch: the put wins.
    let mut batch = WriteBatch::new();
    batch.delete_conversation(APP, a.clone(), g("b")).put_conversation(APP, a.clone(), conv_record(g("b"), 1));
    write(store, batch).await;
    assert_eq!(store.get_conversation(APP, &a, &g("b")).await.unwrap(), Some(conv_record(g("b"), 1)));

    // Oversized text fails the whole batch.
    let mut big = conv_record(peer("big"), 1);
    big.extra = "x".repeat(ConversationRecord::MAX_TEXT_LEN + 1);
    let mut batch = WriteBatch::new();
    batch.put_conversation(APP, a.clone(), conv_record(peer("zz"), 1)).put_conversation(APP, a.clone(), big);
    let err = store.write(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    assert_eq!(store.get_conversation(APP, &a, &peer("zz")).await.unwrap(), None);
}

/// A message's whole fan-out — log appends, seq bounds, conversation index, message
/// index, read mark and device ack — goes in one batch and is visible together once
/// `write` returns; a concurrent reader that sees the batch's ack sees all the rest.
pub async fn index_ops_with_log_in_one_batch(store: &dyn Store) {
    let (from, to) = (uid("from"), uid("to"));
    let (from_owner, to_owner) = (Owner::User(from.clone()), Owner::User(to.clone()));
    let (with_to, with_from) = (Conversation::Single(to.clone()), Conversation::Single(from.clone()));
    let fan_out = |n: u64| {
        let mut b = WriteBatch::new();
        b.append_log(APP, from.clone(), KIND, entry(n, &format!("out {n}")))
            .append_log(APP, to.clone(), KIND, entry(n + 1_000, &format!("in {n}")))
            .set_seq_bound(APP, from.clone(), KIND, Seq(n + 10))
            .append_conv_index(APP, from.clone(), with_to.clone(), Seq(n))
            .append_conv_index(APP, to.clone(), with_from.clone(), Seq(n + 1_000))
            .put_message_index(APP, n, MessageLocator::single(from.clone(), Seq(n), to.clone(), Seq(n + 1_000), n))
            .put_read_mark(APP, from.clone(), with_to.clone(), Seq(n))
            .put_device_ack(APP, from.clone(), "dev".into(), KIND, Seq(n));
        b
    };
    let check = |n: u64| {
        let (from, from_owner, to_owner) = (from.clone(), from_owner.clone(), to_owner.clone());
        let (with_to, with_from) = (with_to.clone(), with_from.clone());
        async move {
            assert_eq!(
                store.get_log_entry(APP, &from_owner, KIND, Seq(n)).await.unwrap(),
                Some(entry(n, &format!("out {n}")))
            );
            assert_eq!(
                store.get_log_entry(APP, &to_owner, KIND, Seq(n + 1_000)).await.unwrap(),
                Some(entry(n + 1_000, &format!("in {n}")))
            );
            assert!(store.seq_bounds(APP, &from_owner).await.unwrap()[0].1 >= Seq(n + 10), "bound of {n}");
            assert_eq!(store.read_conv_back(APP, &from, &with_to, Seq(n + 1), 1).await.unwrap(), vec![Seq(n)]);
            let to = to_owner.as_user().expect("a user");
            assert_eq!(
                store.read_conv_back(APP, to, &with_from, Seq(n + 1_001), 1).await.unwrap(),
                vec![Seq(n + 1_000)]
            );
            let loc = store.get_message_index(APP, n).await.unwrap().expect("locator");
            assert_eq!((loc.seq_of(&from_owner), loc.seq_of(&to_owner)), (Some(Seq(n)), Some(Seq(n + 1_000))));
            let marks = store.get_read_marks(APP, &from).await.unwrap();
            assert!(marks.len() == 1 && marks[0].0 == with_to && marks[0].1 >= Seq(n), "read mark of {n}: {marks:?}");
        }
    };

    write(store, fan_out(1)).await;
    check(1).await;
    assert_eq!(own_acks(&from, store.get_device_acks(APP, &from, "dev").await.unwrap()), vec![(KIND, Seq(1))]);

    // Writer and reader interleaved: whatever ack the reader sees, that batch is whole.
    const BATCHES: u64 = 40;
    let writer = async {
        for n in 2..=BATCHES {
            store.write(fan_out(n)).await.expect("fan-out write");
        }
    };
    let reader = async {
        loop {
            let acks = store.get_device_acks(APP, &from, "dev").await.unwrap();
            let n = acks[0].seq.0;
            check(n).await;
            if n == BATCHES {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    let writer: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(writer);
    let reader: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(reader);
    join_all([writer, reader]).await;
    let conv: Vec<u64> = collect_conv_back(store, APP, &from, &with_to, 7).await.into_iter().map(|s| s.0).collect();
    assert_eq!(conv, (1..=BATCHES).rev().collect::<Vec<_>>());
}

fn group_record(id: &str, n: u64) -> GroupRecord {
    let mut g = GroupRecord::new(gid(id), n);
    g.group_type = (n % 4) as u8 + 1;
    g.group_name = format!("group {id} v{n}");
    g.owner_id = Some(uid("owner"));
    g.mute = n.is_multiple_of(2);
    g.introduction = "intro".into();
    g.notification = "notice".into();
    g.max_member_count = 200;
    g.member_count = n as u32;
    g.extra = format!("{{\"n\":{n}}}");
    g
}

fn member_record(id: &str, n: u64) -> GroupMemberRecord {
    let mut m = GroupMemberRecord::new(uid(id), n, Seq(n * 10));
    m.role = (n % 3) as u8;
    m.alias = format!("alias {id}");
    m.join_type = "invite".into();
    m.mute_until_ms = n * 1000;
    m.extra = "x".into();
    m
}

/// Reads every group of `app` in pages of `page`, checking paging on the way.
pub async fn collect_groups(store: &dyn Store, app: AppId, page: usize) -> Vec<GroupRecord> {
    let mut all: Vec<GroupRecord> = Vec::new();
    loop {
        let after = all.last().map(|g| g.group_id.clone());
        let got = store.list_groups(app, after.as_ref(), page).await.expect("list_groups");
        assert!(got.len() <= page, "page of {} > {page}", got.len());
        let done = got.len() < page;
        for g in got {
            assert!(all.iter().all(|h| h.group_id != g.group_id), "{} listed twice", g.group_id);
            all.push(g);
        }
        if done {
            return all;
        }
    }
}

/// Groups: missing is `None`, a put round-trips every field, overwrites win (also
/// within one batch), destroyed groups stay readable, listing pages through every group
/// of the app exactly once (a group "a" and a group "ab" included) and apps do not share
/// groups. Groups and users with one id are distinct.
pub async fn groups_roundtrip_and_paging(store: &dyn Store) {
    assert_eq!(store.get_group(APP, &gid("g1")).await.unwrap(), None);
    assert!(store.list_groups(APP, None, 10).await.unwrap().is_empty());

    let ids = ["a", "ab", "b", "g1", "g2", "zz", "a.b", "A"];
    let mut batch = WriteBatch::new();
    for (i, id) in ids.iter().enumerate() {
        batch.put_group(APP, group_record(id, i as u64));
    }
    // A later op on the same key wins.
    batch.put_group(APP, group_record("g1", 42));
    batch.put_group(AppId(2), group_record("other-app", 1));
    // A user with a group's id is another thing.
    batch.put_user(APP, UserRecord::new(uid("g1"), 1));
    write(store, batch).await;

    assert_eq!(store.get_group(APP, &gid("g1")).await.unwrap(), Some(group_record("g1", 42)));
    assert_eq!(store.get_group(APP, &gid("a")).await.unwrap(), Some(group_record("a", 0)));
    assert_eq!(store.get_group(APP, &gid("other-app")).await.unwrap(), None);
    assert_eq!(store.get_group(AppId(2), &gid("other-app")).await.unwrap(), Some(group_record("other-app", 1)));

    let mut destroyed = group_record("g2", 5);
    destroyed.destroyed = true;
    destroyed.owner_id = None;
    let mut b = WriteBatch::new();
    b.put_group(APP, destroyed.clone());
    write(store, b).await;
    assert_eq!(store.get_group(APP, &gid("g2")).await.unwrap(), Some(destroyed));

    for page in [1, 3, 100] {
        let all = collect_groups(store, APP, page).await;
        let mut got: Vec<&str> = all.iter().map(|g| g.group_id.as_str()).collect();
        got.sort_unstable();
        let mut want = ids.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "page size {page}");
    }
    assert_eq!(collect_groups(store, AppId(2), 2).await.len(), 1);
    assert!(store.list_groups(APP, None, 0).await.unwrap().is_empty());
    assert!(store.list_groups(AppId(3), None, 10).await.unwrap().is_empty());
}

/// Members: looked up in request order (`None` for non-members), listed in pages
/// exactly once, removed by delete (deleting an absent member is a no-op), a put after
/// a delete in one batch wins, and groups with prefix ids ("a", "ab") or in other apps
/// do not share members.
pub async fn group_members_roundtrip_paging_and_delete(store: &dyn Store) {
    let (a, ab) = (gid("a"), gid("ab"));
    let names: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    let mut batch = WriteBatch::new();
    for (i, n) in names.iter().enumerate() {
        batch.put_group_member(APP, a.clone(), member_record(n, i as u64));
    }
    batch.put_group_member(APP, ab.clone(), member_record("only-ab", 1));
    batch.put_group_member(AppId(2), a.clone(), member_record("other-app", 1));
    write(store, batch).await;

    let asked = [uid("m03"), uid("nobody"), uid("only-ab"), uid("m00")];
    let got = store.get_group_members(APP, &a, &asked).await.unwrap();
    assert_eq!(got, vec![Some(member_record("m03", 3)), None, None, Some(member_record("m00", 0))]);
    assert!(store.get_group_members(APP, &a, &[]).await.unwrap().is_empty());
    assert_eq!(
        store.get_group_members(APP, &ab, &[uid("only-ab")]).await.unwrap(),
        vec![Some(member_record("only-ab", 1))]
    );

    let collect = |group: GroupId, app: AppId, page: usize| async move {
        let mut all: Vec<GroupMemberRecord> = Vec::new();
        loop {
            let after = all.last().map(|m| m.member_id.clone());
            let got = store.list_group_members(app, &group, after.as_ref(), page).await.expect("list members");
            assert!(got.len() <= page);
            let done = got.len() < page;
            for m in got {
                assert!(all.iter().all(|x| x.member_id != m.member_id), "{} twice", m.member_id);
                all.push(m);
            }
            if done {
                return all;
            }
        }
    };
    for page in [1, 7, 25, 100] {
        let all = collect(a.clone(), APP, page).await;
        let mut got: Vec<String> = all.iter().map(|m| m.member_id.to_string()).collect();
        got.sort_unstable();
        assert_eq!(got, names, "page size {page}");
    }
    assert_eq!(collect(ab.clone(), APP, 10).await, vec![member_record("only-ab", 1)]);
    assert_eq!(collect(a.clone(), AppId(2), 10).await, vec![member_record("other-app", 1)]);
    assert!(collect(gid("none"), APP, 10).await.is_empty());

    // Delete, delete-absent, and delete-then-put in one batch.
    let mut batch = WriteBatch::new();
    batch
        .delete_group_member(APP, a.clone(), uid("m01"))
        .delete_group_member(APP, a.clone(), uid("never"))
        .delete_group_member(APP, a.clone(), uid("m02"))
        .put_group_member(APP, a.clone(), member_record("m02", 99));
    write(store, batch).await;
    let got = store.get_group_members(APP, &a, &[uid("m01"), uid("m02")]).await.unwrap();
    assert_eq!(got, vec![None, Some(member_record("m02", 99))]);
    assert_eq!(collect(a.clone(), APP, 4).await.len(), names.len() - 1);
    // Put then delete in one batch: the delete wins.
    let mut batch = WriteBatch::new();
    batch.put_group_member(APP, ab.clone(), member_record("gone", 1)).delete_group_member(APP, ab.clone(), uid("gone"));
    write(store, batch).await;
    assert_eq!(store.get_group_members(APP, &ab, &[uid("gone")]).await.unwrap(), vec![None]);
}

/// Oversized text in a group or member record fails the whole batch.
pub async fn group_records_refuse_oversized_text(store: &dyn Store) {
    let mut big = group_record("big", 1);
    big.notification = "x".repeat(crate::MAX_GROUP_TEXT_LEN + 1);
    let mut batch = WriteBatch::new();
    batch.put_group(APP, group_record("ok", 1)).put_group(APP, big);
    let err = store.write(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    assert_eq!(store.get_group(APP, &gid("ok")).await.unwrap(), None);

    let mut m = member_record("m", 1);
    m.extra = "x".repeat(crate::MAX_GROUP_TEXT_LEN + 1);
    let mut batch = WriteBatch::new();
    batch.put_group_member(APP, gid("ok"), m);
    assert!(matches!(store.write(batch).await.unwrap_err(), StoreError::InvalidArgument(_)));
    let at_limit = {
        let mut g = group_record("limit", 1);
        g.extra = "x".repeat(crate::MAX_GROUP_TEXT_LEN);
        g
    };
    let mut batch = WriteBatch::new();
    batch.put_group(APP, at_limit.clone());
    write(store, batch).await;
    assert_eq!(store.get_group(APP, &gid("limit")).await.unwrap(), Some(at_limit));
}
