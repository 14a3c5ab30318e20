//! Embedded-backend behaviour the shared suite cannot express: data survives closing
//! and reopening the directory, the directory is exclusive, and group commit holds up
//! under writers on many threads.

use bytes::Bytes;
use std::sync::Arc;
use tern_storage::{
    AppId, AppRecord, Conversation, DedupRecord, DeviceAck, LogEntry, MessageLocator, Owner, Seq, Store, StoreError,
    SyncKind, UserId, UserRecord, WriteBatch,
};
use tern_storage_embedded::{Durability, EmbeddedConfig, EmbeddedStore, FlushPolicy};

const APP: AppId = AppId(7);

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn own(s: &str) -> Owner {
    Owner::User(uid(s))
}

fn with(s: &str) -> Conversation {
    Conversation::Single(uid(s))
}

fn ack(user: &str, kind: SyncKind, seq: u64) -> Vec<DeviceAck> {
    vec![DeviceAck { owner: own(user), kind, seq: Seq(seq) }]
}

fn entry(seq: u64) -> LogEntry {
    LogEntry { seq: Seq(seq), time_ms: seq * 10, payload: Bytes::from(format!("payload {seq}")) }
}

async fn reopen_keeps_data(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig { durability, ..EmbeddedConfig::new(dir.path()) };
    let user = UserRecord::new(uid("alice"), 5);
    let dedup = DedupRecord { key: "alice/1".into(), value: Bytes::from_static(b"sid"), expires_ms: u64::MAX };
    let app = AppRecord { app_id: APP, secret: "dev".into(), created_ms: 1 };
    let loc = MessageLocator::single(uid("alice"), Seq(1), uid("bob"), Seq(2), 3);
    {
        let store = EmbeddedStore::open(config.clone()).unwrap();
        let mut batch = WriteBatch::new();
        batch
            .put_user(APP, user.clone())
            .set_seq_bound(APP, uid("alice"), SyncKind::Message, Seq(10_000))
            .set_seq_bound(APP, uid("alice"), SyncKind::Friendship, Seq(20))
            .put_dedup(dedup.clone())
            .put_app(app.clone())
            .put_device_ack(APP, uid("alice"), "phone".into(), SyncKind::Message, Seq(50))
            .put_message_index(APP, 77, loc.clone())
            .append_conv_index(APP, uid("alice"), with("bob"), Seq(1))
            .append_conv_index(APP, uid("alice"), with("bob"), Seq(4))
            .put_read_mark(APP, uid("alice"), with("bob"), Seq(4));
        store.write(batch).await.unwrap();
        for seq in 1..=100 {
            let mut b = WriteBatch::new();
            b.append_log(APP, uid("alice"), SyncKind::Message, entry(seq));
            store.write(b).await.unwrap();
        }
        // No flush: drop alone must leave everything acknowledged on disk.
    }
    let store = EmbeddedStore::open(config.clone()).unwrap();
    assert_eq!(store.get_users(APP, &[uid("alice")]).await.unwrap(), vec![Some(user)]);
    let log = store.read_log(APP, &own("alice"), SyncKind::Message, Seq::ZERO, 1000).await.unwrap();
    assert_eq!(log, (1..=100).map(entry).collect::<Vec<_>>());
    assert_eq!(
        store.seq_bounds(APP, &own("alice")).await.unwrap(),
        vec![(SyncKind::Message, Seq(10_000)), (SyncKind::Friendship, Seq(20))]
    );
    assert_eq!(store.get_dedup("alice/1", 0).await.unwrap(), Some(dedup));
    assert_eq!(store.get_app(APP).await.unwrap(), Some(app));
    assert_eq!(store.get_device_acks(APP, &uid("alice"), "phone").await.unwrap(), ack("alice", SyncKind::Message, 50));
    assert_eq!(store.get_message_index(APP, 77).await.unwrap(), Some(loc));
    assert_eq!(
        store.read_conv_back(APP, &uid("alice"), &with("bob"), Seq::MAX, 10).await.unwrap(),
        vec![Seq(4), Seq(1)]
    );
    assert_eq!(store.get_read_marks(APP, &uid("alice")).await.unwrap(), vec![(with("bob"), Seq(4))]);

    // Max-keeping values still never go down after a restart (the writer re-reads
    // them from disk).
    let mut b = WriteBatch::new();
    b.set_seq_bound(APP, uid("alice"), SyncKind::Message, Seq(5))
        .put_device_ack(APP, uid("alice"), "phone".into(), SyncKind::Message, Seq(5))
        .put_read_mark(APP, uid("alice"), with("bob"), Seq(2));
    store.write(b).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    assert_eq!(store.seq_bounds(APP, &own("alice")).await.unwrap()[0], (SyncKind::Message, Seq(10_000)));
    assert_eq!(store.get_device_acks(APP, &uid("alice"), "phone").await.unwrap(), ack("alice", SyncKind::Message, 50));
    assert_eq!(store.get_read_marks(APP, &uid("alice")).await.unwrap(), vec![(with("bob"), Seq(4))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_process() {
    reopen_keeps_data(Durability::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_fsync() {
    reopen_keeps_data(Durability::Fsync).await;
}

#[tokio::test]
async fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::new(dir.path());
    let first = EmbeddedStore::open(config.clone()).unwrap();
    let err = EmbeddedStore::open(config.clone()).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    drop(first);
    EmbeddedStore::open(config).unwrap();
}

/// Writers spawned on every executor thread (not just interleaved on one task) while
/// readers run: nothing is lost, and flush at the end succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32u64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let user = uid(&format!("p{w}"));
            for seq in 1..=40 {
                let mut b = WriteBatch::new();
                b.append_log(APP, user.clone(), SyncKind::Message, entry(seq));
                store.write(b).await.unwrap();
                // Read-your-writes: an acknowledged write is visible at once.
                let got =
                    store.get_log_entry(APP, &Owner::User(user.clone()), SyncKind::Message, Seq(seq)).await.unwrap();
                assert_eq!(got, Some(entry(seq)));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    store.flush().await.unwrap();
    for w in 0..32u64 {
        let log =
            store.read_log(APP, &Owner::User(uid(&format!("p{w}"))), SyncKind::Message, Seq::ZERO, 100).await.unwrap();
        assert_eq!(log.len(), 40);
    }
}

/// Bytes written to the journal files (`*.jnl`) of the open store at `path`. An open
/// journal is pre-sized (sparse) and truncated to its contents at close, so its length
/// says nothing while the store is open; the blocks it holds do.
fn journal_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(path)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
                .map(|e| e.metadata().map_or(0, |m| m.blocks() * 512))
                .sum()
        })
        .unwrap_or(0)
}

/// Writes `n` log entries of ~1 kB for `user`.
async fn fill(store: &EmbeddedStore, user: &str, n: u64) {
    for seq in 1..=n {
        let mut b = WriteBatch::new();
        let payload = Bytes::from(vec![b'x'; 1_000]);
        b.append_log(APP, uid(user), SyncKind::Message, LogEntry { seq: Seq(seq), time_ms: seq, payload });
        store.write(b).await.unwrap();
    }
}

/// Bounded recovery: a clean close (`flush`, then drop) leaves nothing to replay into
/// memory; a close without it leaves the memtables to the journal, and the next open
/// replays them (and reports so); the data is there either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_store_reopens_without_replay() {
    let dir = tempfile::tempdir().unwrap();
    // Background flushing off, so the unflushed case is certain.
    let flush = FlushPolicy { max_unflushed_bytes: 0, max_unflushed_secs: 0 };
    let config = EmbeddedConfig { flush, ..EmbeddedConfig::new(dir.path()) };
    let store = EmbeddedStore::open(config.clone()).unwrap();
    assert_eq!(store.recovery().journal_files, 0, "a new store has nothing to recover");
    fill(&store, "a", 500).await;
    drop(store);

    let store = EmbeddedStore::open(config.clone()).unwrap();
    let r = store.recovery();
    assert!(r.replayed_bytes > 500_000, "dropped without flush: the journal is replayed ({r})");
    assert!(r.journal_bytes > 500_000 && r.journal_files >= 1, "{r}");
    store.flush().await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(config.clone()).unwrap();
    let r = store.recovery();
    assert_eq!(r.replayed_bytes, 0, "flushed at close: nothing to replay ({r})");
    assert_eq!(r.journal_bytes, 0, "flushed at close: an empty journal ({r})");
    let log = store.read_log(APP, &own("a"), SyncKind::Message, Seq::ZERO, 1_000).await.unwrap();
    assert_eq!(log.len(), 500);

    // Writes that land after the shutdown's flush (requests still in flight) are
    // flushed by the drop that follows it.
    store.flush().await.unwrap();
    fill(&store, "late", 100).await;
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    let r = store.recovery();
    assert_eq!((r.replayed_bytes, r.journal_bytes), (0, 0), "late writes after a flush: {r}");
    assert_eq!(store.read_log(APP, &own("late"), SyncKind::Message, Seq::ZERO, 1_000).await.unwrap().len(), 100);
}

/// The background flusher bounds what a crash (here: a drop without flush) leaves to
/// replay, by size and by age, and a store gone quiet keeps no sealed journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flushing_bounds_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushPolicy { max_unflushed_bytes: 256 << 10, max_unflushed_secs: 0 };
    let config = EmbeddedConfig { flush, ..EmbeddedConfig::new(dir.path()) };
    let store = EmbeddedStore::open(config.clone()).unwrap();
    fill(&store, "a", 3_000).await; // ~3 MB, 12 times the bound
                                    // The flusher and fjall's workers run at nice 10: on a busy machine (other tests,
                                    // builds) they catch up later, not never. Wait for it, within a generous bound.
    let waited = std::time::Instant::now();
    while journal_bytes(dir.path()) >= 1_500_000 && waited.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    let r = store.recovery();
    // The bound, plus what arrived during the last tick and the flush in progress.
    assert!(r.replayed_bytes < 1_500_000, "size-bounded replay: {r}");
    // A new journal file every ~256 KiB; old ones deleted once in table files.
    assert!(r.journal_bytes < 1_500_000, "size-bounded journal: {r}");
    assert_eq!(store.read_log(APP, &own("a"), SyncKind::Message, Seq::ZERO, 5_000).await.unwrap().len(), 3_000);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let flush = FlushPolicy { max_unflushed_bytes: 0, max_unflushed_secs: 1 };
    let config = EmbeddedConfig { flush, ..EmbeddedConfig::new(dir.path()) };
    let store = EmbeddedStore::open(config.clone()).unwrap();
    fill(&store, "b", 50).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_800)).await;
    drop(store);
    let r = EmbeddedStore::open(config).unwrap().recovery();
    assert_eq!(r.replayed_bytes, 0, "age-bounded: a quiet store is flushed within the age ({r})");
    assert_eq!(r.journal_bytes, 0, "a fully flushed store starts a new journal ({r})");
}
