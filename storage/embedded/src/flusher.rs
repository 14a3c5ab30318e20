//! Bounded recovery: what a restart must replay is kept small by writing memtables out
//! to table files in the background, and a graceful close writes out all of them.
//!
//! fjall keeps every write in an in-memory memtable and in the journal; the journal
//! entries of a memtable are only obsolete once that memtable is flushed to a table
//! file. Left alone, fjall flushes a keyspace when its memtable reaches 64 MiB, so a
//! restart could replay up to 64 MiB *per keyspace* into memory (seconds). The flusher
//! thread here seals every non-empty memtable as soon as the memtables together hold
//! [`FlushPolicy::max_unflushed_bytes`], or when the oldest unflushed write is
//! [`FlushPolicy::max_unflushed_secs`] old; fjall's own workers then write them out.
//! [`flush_all`] does the same synchronously and waits, for a clean shutdown.
//!
//! The journal is bounded too. fjall recovery reads the whole active journal, skipping
//! what is already in table files (about 15 ms per MB), and upstream fjall starts a new
//! journal file only every 64 MB; with the patched fjall in `vendor/fjall` the flusher
//! starts a new one once this process wrote `max_unflushed_bytes` to it, or as soon as
//! everything is flushed, and fjall deletes sealed journals whose data is all in table
//! files. A crash therefore reads about twice `max_unflushed_bytes` of journal at most,
//! and [`flush_all`] ends with an empty journal: a clean restart reads nothing. Writes
//! that land between sealing the memtables and sealing the journal keep that journal
//! alive until they are flushed too; a store that goes quiet with such writes flushes
//! them at once (reason "journal") rather than waiting for the age bound.
//!
//! This module must never run on the write path: sealing a memtable takes fjall's
//! journal lock for a moment, but the table files are written by fjall's workers, so
//! the group-commit writer never waits for disk here. It relies on fjall APIs that are
//! public but hidden from fjall's docs (`rotate_memtable`, `write_buffer_size`,
//! `outstanding_flushes`, `sealed_memtable_count`) and on Tern's `rotate_journal`
//! patch; the tests in this module and in `tests/embedded_reopen.rs` break if an fjall
//! upgrade changes them.

use super::io_err;
use crate::StoreError;
use fjall::{Database, Keyspace};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Default of [`FlushPolicy::max_unflushed_bytes`]: replaying 8 MiB of memtable data
/// takes about 100 ms on a small machine (measured: 41 MB in ~0.5 s), and flushing at
/// that size makes table files large enough that compaction stays cheap.
pub const DEFAULT_MAX_UNFLUSHED_BYTES: u64 = 8 << 20;
/// Default of [`FlushPolicy::max_unflushed_secs`]: a quiet node has everything in table
/// files within seconds, so even a crash after a burst replays (almost) nothing, while
/// a busy node is bounded by size long before this.
pub const DEFAULT_MAX_UNFLUSHED_SECS: u64 = 10;

/// Default of [`crate::EmbeddedConfig::background_nice`]. On a machine whose cores are
/// busy, a background flush or compaction that runs at the priority of the write path
/// takes the core from the group-commit writer and the network threads: at 5,000 msgs/s
/// on 2 cores, p2p p99 was 23 ms with background flushing and 14.5 ms without. At nice
/// 10 the scheduler gives such a thread about a tenth of a contended core's share, and
/// all of an idle one, so background work still keeps up whenever there is slack; if it
/// falls far behind, fjall's own backpressure slows writes.
pub const DEFAULT_BACKGROUND_NICE: i32 = 10;

/// How often the flusher looks at the memtables. One atomic read per look.
const TICK: Duration = Duration::from_millis(100);
/// A clean close waits at most this long for fjall to write the memtables out; past
/// it, the journal still holds everything (nothing is lost, the next start replays).
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// When memtables are written to table files in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPolicy {
    /// Seal and flush all memtables once they hold this many bytes together; bounds
    /// what a crash leaves to replay. 0 disables the size trigger.
    pub max_unflushed_bytes: u64,
    /// Seal and flush all memtables once the oldest unflushed write is this old (in
    /// seconds). 0 disables the age trigger.
    pub max_unflushed_secs: u64,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self { max_unflushed_bytes: DEFAULT_MAX_UNFLUSHED_BYTES, max_unflushed_secs: DEFAULT_MAX_UNFLUSHED_SECS }
    }
}

/// The background flusher thread; stops (and is joined) when dropped.
pub(crate) struct Flusher {
    /// Dropping it wakes the thread and tells it to stop.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(
        db: Database,
        keyspaces: Vec<Keyspace>,
        policy: FlushPolicy,
        nice: i32,
    ) -> Result<Self, StoreError> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("tern-store-flusher".into())
            .spawn(move || {
                lower_priority(0, nice);
                let mut dirty_since: Option<Instant> = None;
                let mut unflushed_before = 0;
                // fjall poisons itself on I/O errors and the writer reports them to every
                // caller: warn once per run of failures, not every tick.
                let mut failing = false;
                // Anything but a timeout (the sender dropped) means stop.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    let unflushed = db.write_buffer_size();
                    // Sealed memtables count as unflushed until fjall has written them:
                    // sealing again meanwhile would only pile up tiny memtables, and
                    // fjall halts writes at four sealed ones per keyspace.
                    let flushing = keyspaces.iter().any(|ks| ks.sealed_memtable_count() > 0);
                    // A sealed journal is deleted once every keyspace has written out what
                    // it holds; writes that raced its rotation sit in the new memtables
                    // and pin it. Under load the next flush frees it; a store that went
                    // quiet flushes them now instead of keeping the old journal (which a
                    // crash would read) until the age bound, or for ever without one.
                    let pinned = unflushed == unflushed_before && db.journal_count() > 1;
                    unflushed_before = unflushed;
                    let mut result = Ok(());
                    let started = Instant::now();
                    if let Some(reason) = due(policy, unflushed, flushing, pinned, &mut dirty_since, started) {
                        result = seal_all(&keyspaces).map(|sealed| {
                            tracing::debug!(reason, unflushed, sealed, "embedded store: flushing memtables")
                        });
                    }
                    // A new journal file once this one holds the bound, or at once when
                    // all of it is in table files (it is then deleted).
                    let min = match (unflushed, policy.max_unflushed_bytes) {
                        (0, _) => 1,
                        (_, 0) => u64::MAX,
                        (_, bound) => bound,
                    };
                    let result = result.and_then(|()| db.rotate_journal(min).map(drop).map_err(io_err));
                    // What a pass cost (the journal's bulk fsync, outside its lock, included).
                    tracing::trace!(took_us = started.elapsed().as_micros() as u64, "embedded store: flusher pass");
                    match result {
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "embedded store: background flush failed; will retry");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store flusher thread: {e}")))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("embedded store: flusher thread panicked");
            }
        }
    }
}

/// Sets the nice value of thread `tid` (0: the calling thread). Linux applies
/// `setpriority(PRIO_PROCESS, tid)` to that one thread. Failing is harmless (the thread
/// keeps the default priority), so it is only logged.
fn lower_priority(tid: libc::pid_t, nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice.min(19)) };
    if rc != 0 {
        tracing::debug!(tid, nice, error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
    }
}

/// Lowers the priority of this process's threads called `name` (fjall names its worker
/// threads and offers no hook to run code on them, so they are found in
/// `/proc/self/task`). Threads started later are not affected: fjall starts its workers
/// when the database opens.
pub(crate) fn lower_priority_of_threads_named(name: &str, nice: i32) {
    if nice <= 0 {
        return;
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                lower_priority(tid, nice);
            }
        }
    }
}

/// Whether the memtables must be flushed now, and why. `dirty_since` is when unflushed
/// data was first seen since the last flush this function asked for; `flushing` says
/// that a flush is still being written (then nothing is due yet); `quiet_and_pinned`
/// that nothing was written since the last look while a sealed journal waits for the
/// unflushed data (flushed then, whatever the policy).
fn due(
    policy: FlushPolicy,
    unflushed: u64,
    flushing: bool,
    quiet_and_pinned: bool,
    dirty_since: &mut Option<Instant>,
    now: Instant,
) -> Option<&'static str> {
    if unflushed == 0 {
        *dirty_since = None;
        return None;
    }
    let since = *dirty_since.get_or_insert(now);
    if flushing {
        return None;
    }
    let reason = if policy.max_unflushed_bytes > 0 && unflushed >= policy.max_unflushed_bytes {
        "size"
    } else if policy.max_unflushed_secs > 0
        && now.duration_since(since) >= Duration::from_secs(policy.max_unflushed_secs)
    {
        "age"
    } else if quiet_and_pinned && (policy.max_unflushed_bytes > 0 || policy.max_unflushed_secs > 0) {
        "journal"
    } else {
        return None;
    };
    // Sealed memtables still count until fjall has written them; start the clock again
    // so they are not sealed twice while the first flush runs.
    *dirty_since = Some(now);
    Some(reason)
}

/// Seals every non-empty memtable (fjall's workers flush them); returns how many.
fn seal_all(keyspaces: &[Keyspace]) -> Result<usize, StoreError> {
    let mut sealed = 0;
    for ks in keyspaces {
        sealed += usize::from(ks.rotate_memtable().map_err(io_err)?);
    }
    Ok(sealed)
}

/// Writes every memtable to table files and waits until fjall has done so, so the
/// next open replays nothing into memory. Blocking; for a clean close.
pub(crate) fn flush_all(db: &Database, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
    flush_and_rotate(db, keyspaces, 0)
}

/// [`flush_all`] again at close, for writes that landed after it: only starts a new
/// journal file if this process wrote to the current one since.
pub(crate) fn flush_late(db: &Database, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
    flush_and_rotate(db, keyspaces, 1)
}

fn flush_and_rotate(db: &Database, keyspaces: &[Keyspace], rotate_min_bytes: u64) -> Result<(), StoreError> {
    seal_all(keyspaces)?;
    let deadline = Instant::now() + CLOSE_WAIT;
    while db.outstanding_flushes() > 0 || keyspaces.iter().any(|ks| ks.sealed_memtable_count() > 0) {
        if Instant::now() > deadline {
            return Err(StoreError::Backend(format!(
                "memtables not written out within {} s; the journal still holds them",
                CLOSE_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Everything is in table files: a new, empty journal, and the old ones deleted.
    db.rotate_journal(rotate_min_bytes).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per case: policy (bytes, secs), unflushed bytes, seconds since first
    /// seen dirty (None = clean so far) -> reason.
    #[test]
    fn flush_is_due_by_size_or_age() {
        let check = |bytes, secs, unflushed, dirty_for: Option<u64>, expect: Option<&str>| {
            let now = Instant::now() + Duration::from_secs(3600);
            let mut since = dirty_for.map(|s| now - Duration::from_secs(s));
            let policy = FlushPolicy { max_unflushed_bytes: bytes, max_unflushed_secs: secs };
            assert_eq!(
                due(policy, unflushed, false, false, &mut since, now),
                expect,
                "{bytes} {secs} {unflushed} {dirty_for:?}"
            );
            // Never while a flush is still being written.
            let mut since = dirty_for.map(|s| now - Duration::from_secs(s));
            assert_eq!(due(policy, unflushed, true, false, &mut since, now), None);
            assert_eq!(due(policy, unflushed, true, true, &mut since, now), None);
        };
        check(100, 10, 0, Some(20), None);
        check(100, 10, 99, None, None);
        check(100, 10, 100, None, Some("size"));
        check(100, 10, 1, Some(9), None);
        check(100, 10, 1, Some(10), Some("age"));
        check(0, 10, u64::MAX, Some(1), None);
        check(100, 0, 1, Some(1_000_000), None);
        check(0, 0, u64::MAX, Some(1_000_000), None);
    }

    /// A quiet store whose unflushed writes pin a sealed journal flushes them once
    /// nothing is being written out, under any policy that flushes at all; with
    /// nothing unflushed there is nothing to do.
    #[test]
    fn a_pinned_journal_is_freed_when_quiet() {
        let now = Instant::now();
        let off = FlushPolicy { max_unflushed_bytes: 0, max_unflushed_secs: 0 };
        assert_eq!(due(off, 10, false, true, &mut None, now), None, "flushing off stays off");
        let size_only = FlushPolicy { max_unflushed_secs: 0, ..FlushPolicy::default() };
        for policy in [FlushPolicy::default(), size_only] {
            let mut since = None;
            assert_eq!(due(policy, 10, false, true, &mut since, now), Some("journal"));
            assert_eq!(due(policy, 10, true, true, &mut since, now), None);
            assert_eq!(due(policy, 0, false, true, &mut None, now), None);
            assert_eq!(due(policy, 10, false, false, &mut None, now), None);
        }
    }

    #[test]
    fn the_clock_restarts_after_a_flush_and_when_clean() {
        let policy = FlushPolicy { max_unflushed_bytes: 0, max_unflushed_secs: 10 };
        let t0 = Instant::now();
        let mut since = None;
        assert_eq!(due(policy, 5, false, false, &mut since, t0), None);
        assert_eq!(since, Some(t0));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(due(policy, 5, false, false, &mut since, t1), Some("age"));
        assert_eq!(due(policy, 5, false, false, &mut since, t1 + Duration::from_secs(9)), None);
        assert_eq!(due(policy, 0, false, false, &mut since, t1 + Duration::from_secs(9)), None);
        assert_eq!(since, None);
    }
}
