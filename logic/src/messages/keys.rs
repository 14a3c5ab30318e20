//! Server message ids (`messageKey`): 64-bit, time-ordered, unique per logic node.
//!
//! Layout: milliseconds since 2024-01-01 in the high 42 bits (good for 139 years), a
//! 22-bit counter below. When more than 4M keys are needed in one millisecond, or the
//! clock steps back, the generator borrows from the next millisecond: keys never repeat
//! and never go back within a process. Across restarts the clock must not step back by
//! more than the restart takes (documented operational assumption).

use std::sync::atomic::{AtomicU64, Ordering};

const EPOCH_MS: u64 = 1_704_067_200_000;
const COUNTER_BITS: u32 = 22;

#[derive(Debug, Default)]
pub struct MessageKeys {
    last: AtomicU64,
}

impl MessageKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next key for a message created at `now_ms`.
    pub fn next(&self, now_ms: u64) -> u64 {
        let floor = now_ms.saturating_sub(EPOCH_MS) << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// The creation time encoded in a key.
    pub fn time_ms(key: u64) -> u64 {
        (key >> COUNTER_BITS) + EPOCH_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_clock_steps_back() {
        let k = MessageKeys::new();
        let a = k.next(1_800_000_000_000);
        let b = k.next(1_800_000_000_000);
        let c = k.next(1_700_000_000_000);
        assert!(a < b && b < c);
        assert_eq!(MessageKeys::time_ms(a), 1_800_000_000_000);
    }

    #[test]
    fn concurrent_keys_are_unique() {
        let k = std::sync::Arc::new(MessageKeys::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let k = k.clone();
                std::thread::spawn(move || (0..10_000).map(|_| k.next(1_800_000_000_000)).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
