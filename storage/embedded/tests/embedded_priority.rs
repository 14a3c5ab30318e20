//! Thread priorities of the embedded store's background work, in a test binary of its
//! own: fjall names every store's workers alike, so the threads of stores opened by
//! other tests in the same process could not be told apart.

use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};

/// The background threads (fjall's workers, the flusher) run at the configured nice
/// value, so a busy core goes to the write path first.
#[test]
fn background_threads_run_at_the_configured_priority() {
    let dir = tempfile::tempdir().unwrap();
    // This file holds this one test, so the process holds only this store's threads
    // (another store opening beside it would renice every thread with the same name).
    let config = EmbeddedConfig { background_nice: 7, ..EmbeddedConfig::new(dir.path()) };
    let _store = EmbeddedStore::open(config).unwrap();
    let nice_of = |name: &str| -> Vec<i32> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                // Field 19 of /proc/<pid>/task/<tid>/stat is the nice value; the command
                // name (field 2) is in parentheses and may contain spaces, so split after it.
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
                if let Some(n) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
                    found.push(n);
                }
            }
        }
        found
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (workers, flusher) = (nice_of("fjall:worker"), nice_of("tern-store-flus"));
        if workers.contains(&7) && flusher.contains(&7) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fjall workers {workers:?}, flushers {flusher:?}: none at nice 7"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
