//! Answers recently accepted sends from memory, so a client's resend (after a lost ack
//! or a reconnect, usually within seconds) gets the original ack without allocating
//! seqs or asking the store. Older resends still reach the store's dedup guard
//! (`Store::write_guarded`), which answers them exactly but skips the seqs allocated
//! for the attempt.
//!
//! Bounded: two generations of at most `capacity` entries each; the older one is
//! dropped when the newer fills up or grows older than `max_age`. Must never answer
//! for a send that is not durable (entries are added only after the store said so).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Accepted;

/// Entries per generation: ≈ 100 B each, so both generations stay under ~15 MB.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// A generation is retired at this age even when not full.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(120);

pub struct RecentSends {
    inner: Mutex<Generations>,
    capacity: usize,
    max_age: Duration,
}

struct Generations {
    current: HashMap<String, Accepted>,
    previous: HashMap<String, Accepted>,
    started: Instant,
}

impl Default for RecentSends {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl RecentSends {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let inner = Generations { current: HashMap::new(), previous: HashMap::new(), started: Instant::now() };
        Self { inner: Mutex::new(inner), capacity: capacity.max(1), max_age }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ack of a durable send with this dedup key, if it is still remembered.
    pub fn get(&self, key: &str) -> Option<Accepted> {
        let g = self.lock();
        g.current.get(key).or_else(|| g.previous.get(key)).copied()
    }

    /// Remembers a durable send.
    pub fn insert(&self, key: String, accepted: Accepted) {
        let mut g = self.lock();
        if g.current.len() >= self.capacity || g.started.elapsed() >= self.max_age {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
        g.current.insert(key, accepted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_storage::Seq;

    fn acc(n: u64) -> Accepted {
        Accepted { message_key: n, seq: Seq(n), server_time_ms: n }
    }

    #[test]
    fn remembers_two_generations_then_forgets() {
        let r = RecentSends::new(2, Duration::from_secs(3600));
        r.insert("a".into(), acc(1));
        r.insert("b".into(), acc(2));
        // The third insert retires {a, b} to the previous generation: still answered.
        r.insert("c".into(), acc(3));
        assert_eq!(r.get("a"), Some(acc(1)));
        r.insert("d".into(), acc(4));
        // The fifth drops {a, b}.
        r.insert("e".into(), acc(5));
        assert_eq!(r.get("a"), None);
        assert_eq!(r.get("c"), Some(acc(3)));
        assert_eq!(r.get("e"), Some(acc(5)));
        assert_eq!(r.get("zz"), None);
    }

    #[test]
    fn old_generations_retire_by_age() {
        let r = RecentSends::new(1_000, Duration::ZERO);
        r.insert("a".into(), acc(1));
        r.insert("b".into(), acc(2));
        r.insert("c".into(), acc(3));
        assert_eq!(r.get("a"), None, "two rotations later, a is gone");
        assert_eq!(r.get("b"), Some(acc(2)));
    }
}
