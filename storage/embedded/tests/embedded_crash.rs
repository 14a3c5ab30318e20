//! Process-crash durability of the default policy: every write acknowledged before the
//! process is SIGKILLed is there after reopening. The test re-runs its own binary as
//! the child that writes and then waits to be killed.

use bytes::Bytes;
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};
use tern_storage::{AppId, LogEntry, Owner, Seq, Store, SyncKind, UserId, WriteBatch};
use tern_storage_embedded::{Durability, EmbeddedConfig, EmbeddedStore};

const CHILD_ENV: &str = "TERN_STORAGE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
const APP: AppId = AppId(1);
const WRITES: u64 = 500;

fn user() -> UserId {
    UserId::new("crash").unwrap()
}

fn entry(seq: u64) -> LogEntry {
    LogEntry { seq: Seq(seq), time_ms: seq, payload: Bytes::from(seq.to_string()) }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Child: write, report, then hang until killed (never dropping the store).
fn child(dir: &str) -> ! {
    let store =
        EmbeddedStore::open(EmbeddedConfig { durability: Durability::Process, ..EmbeddedConfig::new(dir) }).unwrap();
    let writes = async {
        for seq in 1..=WRITES {
            let mut b = WriteBatch::new();
            b.append_log(APP, user(), SyncKind::Message, entry(seq)).set_seq_bound(
                APP,
                user(),
                SyncKind::Message,
                Seq(seq * 100),
            );
            store.write(b).await.unwrap();
        }
    };
    // Bounded, so a hung child fails the parent instead of hanging it.
    runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), writes).await })
        .expect("child writes timed out");
    println!("ACKED {WRITES}");
    // Wait to be killed; exit on our own if the parent is gone, leaving no orphan.
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(1);
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest may print "test <name> ... " on the same line first.
        .any(|line| line.trim_end().ends_with(&format!("ACKED {WRITES}")));
    child.kill().unwrap(); // SIGKILL: no destructors, no final sync.
    child.wait().unwrap();
    assert!(acked, "child did not finish writing");

    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    runtime().block_on(async {
        let log = store.read_log(APP, &Owner::User(user()), SyncKind::Message, Seq::ZERO, 10_000).await.unwrap();
        // Count first: a failure should say how much was lost, not print 500 entries.
        assert_eq!(log.len() as u64, WRITES, "acknowledged writes lost");
        assert_eq!(log, (1..=WRITES).map(entry).collect::<Vec<_>>());
        assert_eq!(
            store.seq_bounds(APP, &Owner::User(user())).await.unwrap(),
            vec![(SyncKind::Message, Seq(WRITES * 100))]
        );
    });
}
