//! Reads and writes racing the store's background work. Tern patches lsm-tree so that
//! memtable flushes and compactions write their files and fsync *before* taking the
//! tree's version lock, and install the new version only briefly under it (see
//! `vendor/lsm-tree/TERN-PATCH.md`); a memtable rotation may land in between. This test
//! makes those races frequent — a flush every few kilobytes, so memtables rotate and
//! tables compact all the time — while writers on several threads append, guard with
//! dedup records and raise max-keeping device acks, and check read-your-writes. Then
//! the store is dropped without a flush (what a crash leaves) and reopened: every
//! acknowledged write must be there, exactly once and in order.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_storage::{
    AppId, DedupRecord, DeviceAck, GuardOutcome, GuardedBatch, LogEntry, Owner, Seq, Store, SyncKind, UserId,
    WriteBatch,
};
use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore, FlushPolicy};

const APP: AppId = AppId(9);
const WRITERS: u64 = 6;
const PER_WRITER: u64 = 1_500;

fn uid(w: u64) -> UserId {
    UserId::new(format!("c{w}")).unwrap()
}

fn entry(seq: u64) -> LogEntry {
    // ~300 B per entry: ~2.7 MB of log in all.
    LogEntry { seq: Seq(seq), time_ms: seq, payload: Bytes::from(format!("{seq:0>300}")) }
}

/// Table files of the store keyspace that holds the most (what flushes create and
/// compactions merge). Keyspace 0 is fjall's own registry of keyspaces, not Tern's.
fn most_table_files(path: &std::path::Path) -> usize {
    let Ok(keyspaces) = std::fs::read_dir(path.join("keyspaces")) else { return 0 };
    keyspaces
        .filter_map(Result::ok)
        .filter(|ks| ks.file_name() != "0")
        .filter_map(|ks| std::fs::read_dir(ks.path().join("tables")).ok())
        .map(|tables| tables.count())
        .max()
        .unwrap_or(0)
}

async fn write_and_check(store: Arc<EmbeddedStore>, w: u64) {
    let user = uid(w);
    let owner = Owner::User(user.clone());
    for seq in 1..=PER_WRITER {
        let mut batch = WriteBatch::new();
        batch.append_log(APP, user.clone(), SyncKind::Message, entry(seq)).put_device_ack(
            APP,
            user.clone(),
            "d".into(),
            SyncKind::Message,
            Seq(seq),
        );
        let guard =
            DedupRecord { key: format!("{w}/{seq}"), value: Bytes::from(seq.to_string()), expires_ms: u64::MAX };
        let outcome = store.write_guarded(vec![GuardedBatch { guard: guard.clone(), batch }], 0).await.unwrap();
        assert_eq!(outcome, vec![GuardOutcome::Applied], "writer {w} seq {seq}");
        // Read-your-writes while tables come and go under the reader.
        assert_eq!(store.get_log_entry(APP, &owner, SyncKind::Message, Seq(seq)).await.unwrap(), Some(entry(seq)));
        if seq % 100 == 0 {
            // The guard holds: a retry is answered from the stored record, not applied.
            let retry = store.write_guarded(vec![GuardedBatch { guard, batch: WriteBatch::new() }], 0).await.unwrap();
            assert!(
                matches!(&retry[..], [GuardOutcome::Duplicate(v)] if v == &Bytes::from(seq.to_string())),
                "{retry:?}"
            );
        }
    }
}

fn assert_complete(store: &EmbeddedStore, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        for w in 0..WRITERS {
            let owner = Owner::User(uid(w));
            let log =
                store.read_log(APP, &owner, SyncKind::Message, Seq::ZERO, PER_WRITER as usize + 10).await.unwrap();
            let seqs: Vec<u64> = log.iter().map(|e| e.seq.0).collect();
            assert_eq!(
                seqs,
                (1..=PER_WRITER).collect::<Vec<_>>(),
                "writer {w}: every acknowledged entry, once, in order"
            );
            assert!(log.iter().all(|e| *e == entry(e.seq.0)), "writer {w}: payloads intact");
            let acks = store.get_device_acks(APP, &uid(w), "d").await.unwrap();
            assert_eq!(acks, vec![DeviceAck { owner, kind: SyncKind::Message, seq: Seq(PER_WRITER) }]);
        }
    });
}

#[test]
fn writes_and_reads_race_flushes_and_compactions() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A flush every 16 KiB: memtables rotate while writes land, and L0 fills and
    // compacts over and over. No nice: the background work must keep pace here.
    let flush = FlushPolicy { max_unflushed_bytes: 16 << 10, max_unflushed_secs: 0 };
    let config = EmbeddedConfig { flush, background_nice: 0, ..EmbeddedConfig::new(dir.path()) };
    let store = Arc::new(EmbeddedStore::open(config.clone()).unwrap());

    let started = Instant::now();
    let flushes = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            tasks.spawn(write_and_check(Arc::clone(&store), w));
        }
        // The flusher looks every 100 ms; forced flushes in a loop make rotations,
        // flushes and compactions land between the writes far more often.
        let flusher = {
            let (store, flushes) = (Arc::clone(&store), Arc::clone(&flushes));
            tokio::spawn(async move {
                loop {
                    store.flush().await.unwrap();
                    flushes.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        flusher.abort();
        assert!(flusher.await.unwrap_err().is_cancelled(), "the flush loop failed");
    });
    let flushes = flushes.load(Ordering::Relaxed);
    eprintln!("{flushes} forced flushes in {:?}", started.elapsed());
    assert!(flushes >= 20, "only {flushes} flushes raced the writes");
    assert!(started.elapsed() < Duration::from_secs(120), "writes took {:?}", started.elapsed());
    // The background work really ran: memtables were flushed to tables, and compaction
    // merged them. Writers append all through the flush loop, so every forced flush
    // writes a table of the log keyspace: without compaction that keyspace would hold
    // at least as many tables as there were flushes.
    let tables = most_table_files(dir.path());
    eprintln!("table files in the fullest keyspace: {tables}");
    assert!(tables > 0, "no memtable was flushed");
    assert!(
        tables < flushes as usize * 2 / 3,
        "{tables} table files after {flushes} flushes: compaction did not keep up"
    );
    assert_complete(&store, &rt);

    // A crash leaves the journal to replay on top of whatever the last installed
    // versions reference.
    drop(Arc::into_inner(store).expect("no other handle"));
    let store = EmbeddedStore::open(config.clone()).unwrap();
    assert_complete(&store, &rt);

    // And a clean close leaves everything in table files.
    rt.block_on(store.flush()).unwrap();
    drop(store);
    let store = EmbeddedStore::open(config).unwrap();
    assert_eq!(store.recovery().replayed_bytes, 0, "{}", store.recovery());
    assert_complete(&store, &rt);
}
