//! The ScyllaDB backend against a real CQL node: the shared conformance suite, schema
//! migrations, bucket edges and retention TTLs.
//!
//! The node is `TERN_CQL_NODES` (comma-separated `host:port`, default `127.0.0.1:9042`):
//! `scripts/cassandra start` runs one. If it does not answer, every test here FAILS and
//! says so — unless `TERN_SKIP_CQL=1` is set, which skips them with a loud line (for a
//! developer without Java; CI never sets it).
//!
//! Isolation: the conformance cases use fixed app ids and global dedup keys, so every store
//! gets a namespace of its own (a hidden layout parameter that moves its app ids and dedup
//! keys apart) in one keyspace migrated once per run — creating a keyspace per case costs
//! Cassandra ≈ 5 s. The migration tests create (and drop) keyspaces of their own.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};
use tern_storage::{
    conformance::{collect_conv_back, collect_log, collect_log_back, StoreUnderTest},
    AppId, Conversation, GroupId, LogEntry, MessageLocator, Owner, Seq, Store, StoreError, SyncKind, UserId,
    WriteBatch,
};
use tern_storage_scylla::{BucketBits, ScyllaConfig, ScyllaStore, TestLayout, SCHEMA_VERSION};

const DEFAULT_NODES: &str = "127.0.0.1:9042";

fn nodes() -> Vec<String> {
    std::env::var("TERN_CQL_NODES")
        .unwrap_or_else(|_| DEFAULT_NODES.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The nodes to test against; `None` (after a loud message) only when the developer set
/// `TERN_SKIP_CQL=1`. Panics when no node answers.
async fn node_or_skip(test: &str) -> Option<Vec<String>> {
    if std::env::var("TERN_SKIP_CQL").is_ok_and(|v| v == "1") {
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        use std::io::Write;
        let name = std::thread::current().name().map_or_else(|| test.to_owned(), str::to_owned);
        let _ = writeln!(
            std::io::stderr(),
            "!!!!! SKIPPED {name} ({test}): TERN_SKIP_CQL=1, the ScyllaDB backend is NOT being tested !!!!!"
        );
        return None;
    }
    let nodes = nodes();
    let first = nodes.first().cloned().unwrap_or_else(|| DEFAULT_NODES.to_owned());
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&first)).await {
        Ok(Ok(_)) => Some(nodes),
        Ok(Err(e)) => panic!(
            "no CQL node answers at {first} ({e}): run `scripts/cassandra start` (or point TERN_CQL_NODES at a \
             node; TERN_SKIP_CQL=1 skips these tests explicitly)"
        ),
        Err(_) => panic!(
            "connecting to the CQL node at {first} timed out: run `scripts/cassandra start` (or point \
             TERN_CQL_NODES at a node; TERN_SKIP_CQL=1 skips these tests explicitly)"
        ),
    }
}

/// Prefix of every keyspace these tests create; the rest of the name is the creation
/// time (unix seconds), so a later run can drop what a killed run left behind.
const KEYSPACE_PREFIX: &str = "tern_test_";
/// Test keyspaces older than this are leftovers of dead runs.
const STALE_KEYSPACE_SECS: u64 = 3_600;

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A keyspace name no other test or concurrent run uses (≤ 48 characters).
fn unique_keyspace(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{KEYSPACE_PREFIX}{}_{}_{tag}{n}", unix_secs(), std::process::id())
}

async fn raw_session(config: &ScyllaConfig) -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .build()
        .await
        .expect("raw CQL session")
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own: for drop and
/// one-time set-up, which cannot await on the test's runtime.
fn on_own_runtime<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    })
    .join()
    .expect("set-up thread")
}

/// Drops its keyspace when dropped.
struct DropKeyspace(ScyllaConfig);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let config = self.0.clone();
        let dropped = on_own_runtime(async move {
            raw_session(&config)
                .await
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), ())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = dropped {
            eprintln!("warning: could not drop test keyspace {}: {e}", self.0.keyspace);
        }
    }
}

/// Drops test keyspaces that killed runs left behind.
async fn drop_stale_keyspaces(config: &ScyllaConfig) {
    let session = raw_session(config).await;
    let rows = session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await
        .expect("list keyspaces")
        .into_rows_result()
        .expect("keyspace rows");
    let names: Vec<String> = rows.rows::<(String,)>().expect("keyspace names").map(|r| r.expect("name").0).collect();
    for name in names {
        let Some(rest) = name.strip_prefix(KEYSPACE_PREFIX) else { continue };
        let created = rest.split('_').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if created + STALE_KEYSPACE_SECS < unix_secs() {
            let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {name}"), ()).await;
        }
    }
}

/// A config for a new, unmigrated keyspace of its own (dropped with the guard).
async fn fresh_config(test: &str) -> Option<(ScyllaConfig, DropKeyspace)> {
    let nodes = node_or_skip(test).await?;
    let config = ScyllaConfig { nodes, keyspace: unique_keyspace("m"), ..ScyllaConfig::default() };
    Some((config.clone(), DropKeyspace(config)))
}

/// The keyspace shared by every store test of this process, migrated once. Creating a
/// keyspace costs seconds on Cassandra, so stores share it, each in a namespace of its
/// own (`TestLayout::namespace`). It is left behind on exit (a test binary has no exit
/// hook) and dropped as stale by a later run, or wiped by `scripts/cassandra stop`.
fn shared_keyspace(nodes: Vec<String>) -> ScyllaConfig {
    static SHARED: OnceLock<Result<ScyllaConfig, String>> = OnceLock::new();
    let made = SHARED.get_or_init(|| {
        let config = ScyllaConfig { nodes, keyspace: unique_keyspace("s"), ..ScyllaConfig::default() };
        on_own_runtime(async move {
            drop_stale_keyspaces(&config).await;
            ScyllaStore::migrate(&config).await.map_err(|e| e.to_string())?;
            Ok(config)
        })
    });
    made.clone().expect("migrating the shared test keyspace")
}

/// A store with a namespace of its own in the shared keyspace.
async fn fresh_store_with(test: &str, bits: BucketBits, ttl: u64) -> Option<(ScyllaStore, ScyllaConfig, u32)> {
    static NAMESPACE: AtomicU32 = AtomicU32::new(1);
    let nodes = node_or_skip(test).await?;
    let mut config = shared_keyspace(nodes);
    config.message_ttl_secs = ttl;
    let namespace = NAMESPACE.fetch_add(1, Ordering::Relaxed);
    let store = ScyllaStore::connect_with_layout(&config, TestLayout { bits, namespace })
        .await
        .expect("connect to the shared test keyspace");
    Some((store, config, namespace))
}

async fn fresh_store() -> Option<StoreUnderTest> {
    let (store, _, _) = fresh_store_with("scylla conformance case", BucketBits::DEFAULT, 0).await?;
    Some((Arc::new(store), Box::new(())))
}

mod conformance {
    tern_storage::conformance_tests!(optional: super::fresh_store());
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn own(s: &str) -> Owner {
    Owner::User(uid(s))
}

fn gid(s: &str) -> GroupId {
    GroupId::new(s).unwrap()
}

fn entry(seq: u64) -> LogEntry {
    LogEntry { seq: Seq(seq), time_ms: seq.wrapping_mul(3), payload: bytes::Bytes::from(format!("e{seq}")) }
}

const APP: AppId = AppId(7);
const KIND: SyncKind = SyncKind::Message;

/// A timeline spanning many tiny buckets (4 seqs each), with empty buckets between and
/// more non-empty buckets than one directory query returns, reads back in order, and
/// paging across bucket edges, forwards and backwards, neither skips nor repeats. The
/// timeline is a group's and the conversation a group conversation, so the group keys
/// of the bucket directories are covered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_edges_neither_skip_nor_repeat() {
    let Some((store, _, _)) = fresh_store_with("bucket edges", BucketBits { log: 2, conv: 2 }, 0).await else {
        return;
    };
    let (user, conv) = (Owner::Group(gid("edge")), Conversation::Group(gid("peer")));
    let member = uid("edge");
    let mut seqs: Vec<u64> = (1..=90).collect(); // 23 buckets, edges at 4, 8, …
    seqs.retain(|s| !(40..56).contains(s)); // four empty buckets in the middle
    seqs.extend([1_000, 1_003, 1_004, 5_000, 1 << 40, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX]);
    let written: Vec<LogEntry> = seqs.iter().map(|&s| entry(s)).collect();
    // Out of order, over several batches.
    for chunk in written.rchunks(17) {
        let mut b = WriteBatch::new();
        for e in chunk {
            b.append_log(APP, user.clone(), KIND, e.clone());
            b.append_conv_index(APP, member.clone(), conv.clone(), e.seq);
        }
        store.write(b).await.unwrap();
    }
    // Backwards reads are below `before`, so u64::MAX itself is never read backwards.
    let mut backwards: Vec<LogEntry> = written.iter().filter(|e| e.seq != Seq::MAX).cloned().collect();
    backwards.reverse();
    let conv_backwards: Vec<Seq> = backwards.iter().map(|e| e.seq).collect();
    for page in [1, 2, 3, 4, 5, 7, 8, 16, 17, 33, 200] {
        assert_eq!(collect_log(&store, APP, &user, KIND, page).await, written, "forward, page {page}");
        assert_eq!(collect_log_back(&store, APP, &user, KIND, page).await, backwards, "backward, page {page}");
        let got = collect_conv_back(&store, APP, &member, &conv, page).await;
        assert_eq!(got, conv_backwards, "conversation, page {page}");
    }
    // From every position, including bucket edges, gaps and positions not stored.
    for after in [0u64, 3, 4, 5, 39, 40, 55, 56, 90, 999, 1_003, 1 << 40, u64::MAX - 1] {
        let want: Vec<LogEntry> = written.iter().filter(|e| e.seq.0 > after).take(6).cloned().collect();
        assert_eq!(store.read_log(APP, &user, KIND, Seq(after), 6).await.unwrap(), want, "after {after}");
        let want: Vec<LogEntry> = backwards.iter().filter(|e| e.seq.0 < after).take(6).cloned().collect();
        assert_eq!(store.read_log_back(APP, &user, KIND, Seq(after), 6).await.unwrap(), want, "before {after}");
    }
    for e in &written {
        assert_eq!(store.get_log_entry(APP, &user, KIND, e.seq).await.unwrap().as_ref(), Some(e));
    }
}

/// One bucket holding more entries than one query fetches: paging inside a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_within_one_bucket() {
    let Some((store, _, _)) = fresh_store_with("pages within a bucket", BucketBits::DEFAULT, 0).await else {
        return;
    };
    let user = own("dense");
    let written: Vec<LogEntry> = (1..=700).map(entry).collect();
    let mut b = WriteBatch::new();
    for e in &written {
        b.append_log(APP, user.clone(), KIND, e.clone());
    }
    store.write(b).await.unwrap();
    assert_eq!(store.read_log(APP, &user, KIND, Seq(0), 600).await.unwrap(), written[..600]);
    assert_eq!(store.read_log(APP, &user, KIND, Seq(0), 10_000).await.unwrap(), written);
    let newest: Vec<LogEntry> = written.iter().rev().take(513).cloned().collect();
    assert_eq!(store.read_log_back(APP, &user, KIND, Seq::MAX, 513).await.unwrap(), newest);
    assert_eq!(collect_log(&store, APP, &user, KIND, 300).await, written);
}

/// `message_ttl_secs` puts a TTL on message timelines (entries, conversation index and
/// their directory markers, the markers longer), on nothing else; dedup records always
/// get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_ttls() {
    let Some((store, config, namespace)) = fresh_store_with("retention TTLs", BucketBits::DEFAULT, 3_600).await else {
        return;
    };
    let u = uid("ttl");
    let mut b = WriteBatch::new();
    b.append_log(APP, u.clone(), SyncKind::Message, entry(1))
        .append_log(APP, u.clone(), SyncKind::Profile, entry(1))
        .append_conv_index(APP, u.clone(), Conversation::Single(uid("p")), Seq(1))
        .put_dedup(tern_storage::DedupRecord {
            key: "ttl/1".into(),
            value: bytes::Bytes::new(),
            expires_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
                + 60_000,
        });
    store.write(b).await.unwrap();
    let session = raw_session(&config).await;
    let ks = &config.keyspace;
    let app = (i64::from(namespace) << 32) | i64::from(APP.0);
    let ttl = |cql: String| {
        let session = &session;
        async move {
            let rows = session.query_unpaged(cql, ()).await.unwrap().into_rows_result().unwrap();
            rows.rows::<(Option<i32>,)>().unwrap().map(|r| r.unwrap().0).collect::<Vec<_>>()
        }
    };
    let msg = ttl(format!(
        "SELECT TTL(payload) FROM {ks}.log_entries WHERE app_id = {app} AND user_id = 'ttl' AND kind = 0 AND bucket = 0"
    ))
    .await;
    assert!(matches!(msg[..], [Some(t)] if t > 3_500 && t <= 3_600), "{msg:?}");
    let profile = ttl(format!(
        "SELECT TTL(payload) FROM {ks}.log_entries WHERE app_id = {app} AND user_id = 'ttl' AND kind = 1 AND bucket = 0"
    ))
    .await;
    assert_eq!(profile, vec![None]);
    let rows = session
        .query_unpaged(
            format!("SELECT TTL(seq) FROM {ks}.conv_index WHERE app_id = {app} AND user_id = 'ttl' AND peer_id = 'p' AND bucket = 0"),
            (),
        )
        .await;
    // A table of key columns only has no cell to ask TTL of; the row must exist.
    assert!(rows.is_err() || rows.unwrap().into_rows_result().unwrap().rows_num() == 1);
    let dedup = ttl(format!("SELECT TTL(value) FROM {ks}.dedup WHERE key = '{namespace}/ttl/1'")).await;
    assert!(matches!(dedup[..], [Some(t)] if t > 600 && t <= 660), "{dedup:?}");
    assert_eq!(
        store.read_conv_back(APP, &u, &Conversation::Single(uid("p")), Seq::MAX, 10).await.unwrap(),
        vec![Seq(1)]
    );
}

fn is_schema_error(e: &StoreError, needle: &str) -> bool {
    matches!(e, StoreError::Schema(m) if m.contains(needle))
}

/// `migrate` creates, is re-runnable, and keeps data; `connect` refuses a missing, older
/// or newer schema with a message saying what to do; an edited migration is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_rerunnable_and_connect_refuses_other_schemas() {
    let Some((config, _guard)) = fresh_config("migrations").await else { return };
    let ks = config.keyspace.clone();

    let err = ScyllaStore::connect(&config).await.err().expect("no keyspace yet");
    assert!(is_schema_error(&err, "tern migrate"), "{err}");

    let first = ScyllaStore::migrate(&config).await.unwrap();
    assert!(first.created_keyspace);
    assert_eq!(first.applied.len(), SCHEMA_VERSION as usize);
    assert_eq!(first.version, SCHEMA_VERSION);
    let store = ScyllaStore::connect(&config).await.unwrap();
    let mut b = WriteBatch::new();
    b.append_log(APP, uid("keep"), KIND, entry(1));
    store.write(b).await.unwrap();

    let again = ScyllaStore::migrate(&config).await.unwrap();
    assert!(!again.created_keyspace);
    assert!(again.applied.is_empty(), "{again:?}");
    assert!(again.to_string().contains("nothing to do"), "{again}");

    let session = raw_session(&config).await;
    let cql = |q: String| {
        let session = &session;
        async move { session.query_unpaged(q, ()).await.unwrap() }
    };
    // An older recorded schema (here: none of this build's migrations) is refused…
    cql(format!("DELETE FROM {ks}.schema_migrations WHERE version = {SCHEMA_VERSION}")).await;
    let err = ScyllaStore::connect(&config).await.err().expect("older schema");
    assert!(is_schema_error(&err, "older") && is_schema_error(&err, "run `tern migrate"), "{err}");
    // A group written by schema-3 code (into 003's one-partition-per-app `groups`) is
    // copied into its bucket when 004 is applied.
    cql(format!(
        "INSERT INTO {ks}.groups (app_id, group_id, record) VALUES ({}, 'g003', \
         '{{\"group_id\":\"g003\",\"group_type\":1,\"group_name\":\"schema 3\"}}')",
        APP.0
    ))
    .await;
    // …until migrate brings it up to date again, data untouched.
    let redo = ScyllaStore::migrate(&config).await.unwrap();
    assert_eq!(redo.applied.last().map(|a| a.0), Some(SCHEMA_VERSION));
    let store = ScyllaStore::connect(&config).await.unwrap();
    assert_eq!(store.read_log(APP, &own("keep"), KIND, Seq(0), 10).await.unwrap(), vec![entry(1)]);
    let old = store.get_group(APP, &gid("g003")).await.unwrap().expect("the schema-3 group was copied");
    assert_eq!((old.group_type, old.group_name.as_str()), (1, "schema 3"));
    let listed = store.list_groups(APP, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), ["g003"]);
    // Rows written by schema-1 code (a 1:1 locator in message_index, a read mark keyed
    // by the bare peer id) read through the owner vocabulary after the upgrade.
    cql(format!(
        "INSERT INTO {ks}.message_index (app_id, message_key, from_user, to_user, from_seq, to_seq, time_ms) \
         VALUES ({}, 5, 'keep', 'peer', 1, 2, 3)",
        APP.0
    ))
    .await;
    cql(format!("INSERT INTO {ks}.read_marks (app_id, user_id, peer_id, seq) VALUES ({}, 'keep', 'peer', 4)", APP.0))
        .await;
    assert_eq!(
        store.get_message_index(APP, 5).await.unwrap(),
        Some(MessageLocator::single(uid("keep"), Seq(1), uid("peer"), Seq(2), 3))
    );
    assert_eq!(
        store.get_read_marks(APP, &uid("keep")).await.unwrap(),
        vec![(Conversation::Single(uid("peer")), Seq(4))]
    );

    // A newer schema (written by a later tern) is refused by connect and by migrate.
    cql(format!("INSERT INTO {ks}.schema_migrations (version, name) VALUES (999, '999_future')")).await;
    let err = ScyllaStore::connect(&config).await.err().expect("newer schema");
    assert!(is_schema_error(&err, "newer"), "{err}");
    let err = ScyllaStore::migrate(&config).await.unwrap_err();
    assert!(is_schema_error(&err, "newer"), "{err}");
    cql(format!("DELETE FROM {ks}.schema_migrations WHERE version = 999")).await;

    // A released migration edited after it was applied is caught.
    cql(format!("UPDATE {ks}.schema_migrations SET checksum = 1 WHERE version = 1")).await;
    let err = ScyllaStore::migrate(&config).await.unwrap_err();
    assert!(is_schema_error(&err, "changed"), "{err}");
}

/// A bad config is refused before any connection, with every problem listed.
#[tokio::test]
async fn invalid_config_is_refused_up_front() {
    let config = ScyllaConfig { keyspace: "No-Such".into(), nodes: vec![], ..ScyllaConfig::default() };
    let err = ScyllaStore::connect(&config).await.err().expect("invalid config");
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::InvalidArgument(_)) && msg.contains("keyspace") && msg.contains("nodes"),
        "{msg}"
    );
}
