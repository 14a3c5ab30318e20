//! How many sends may wait for the store at once, adapted to how long they wait.
//!
//! A fixed bound on sends in flight is a bound on queue *length*; what a sender feels is
//! queue *time*, and the same length costs 10 ms on a quiet node and 150 ms on a node
//! whose cores are saturated (measured: 2,048 sends in flight at 14,000 msgs/s accepted
//! waited 144 ms at p50). So the node keeps one limit for every link together and steers
//! it by the latency of the store turns it completes (submitted → durable):
//!
//! - a turn slower than the target shrinks the limit by a quarter, at most once per
//!   target interval (one slow moment must not collapse it: the turns completing in the
//!   same moment all saw the same queue);
//! - a turn within the target grows it by one, up to the configured maximum.
//!
//! Past the limit a send is refused at once with 80009 (the caller's job), so under
//! overload the excess is refused in microseconds and the accepted sends wait about the
//! target, instead of everything waiting behind a long queue. Per send this costs two
//! relaxed atomic loads; per turn a few atomic updates. No lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The adaptive, node-wide limit of sends handed to the store and not yet answered.
#[derive(Debug)]
pub struct SendAdmission {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    min: usize,
    max: usize,
    target: Duration,
    /// When the limit last shrank, in nanoseconds since `epoch`.
    last_decrease_ns: AtomicU64,
    epoch: Instant,
}

impl SendAdmission {
    /// A limit that starts at `max` and moves between `min` and `max`, steering turns
    /// towards `target` (a zero target never shrinks it: a fixed bound).
    pub fn new(min: usize, max: usize, target: Duration) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(max),
            min,
            max,
            target,
            last_decrease_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether `more` sends (besides those already in flight) may still be handed to
    /// the store.
    pub fn admits(&self, more: usize) -> bool {
        self.in_flight.load(Ordering::Relaxed) + more < self.limit.load(Ordering::Relaxed)
    }

    /// `n` sends were handed to the store.
    pub fn submitted(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` sends handed to the store together came back after `took`.
    pub fn completed(&self, n: usize, took: Duration) {
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        self.observe(took, Instant::now());
        metrics::gauge!("tern_send_admission_limit").set(self.limit() as f64);
        metrics::gauge!("tern_sends_in_flight").set(self.in_flight() as f64);
    }

    /// The current limit (a gauge for operators; tests).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn observe(&self, took: Duration, now: Instant) {
        if self.target.is_zero() {
            return;
        }
        if took > self.target {
            let now_ns = now.duration_since(self.epoch).as_nanos() as u64;
            let last = self.last_decrease_ns.load(Ordering::Relaxed);
            let interval = self.target.as_nanos() as u64;
            // One decrease per interval; whoever wins the exchange applies it.
            if (last == 0 || now_ns.saturating_sub(last) >= interval)
                && self
                    .last_decrease_ns
                    .compare_exchange(last, now_ns.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let _ =
                    self.limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some((l - l / 4).max(self.min)));
            }
        } else {
            let _ = self.limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| (l < self.max).then_some(l + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(20);

    #[test]
    fn admits_below_the_limit_only() {
        let a = SendAdmission::new(1, 3, TARGET);
        assert!(a.admits(2));
        assert!(!a.admits(3));
        a.submitted(2);
        assert!(a.admits(0));
        assert!(!a.admits(1));
        a.completed(2, Duration::from_millis(1));
        assert!(a.admits(2));
    }

    #[test]
    fn slow_turns_shrink_it_once_per_interval_down_to_the_minimum() {
        let a = SendAdmission::new(10, 1000, TARGET);
        let t0 = a.epoch + Duration::from_secs(1);
        a.observe(Duration::from_millis(50), t0);
        assert_eq!(a.limit(), 750);
        // Turns completing in the same interval saw the same queue: no further decrease.
        a.observe(Duration::from_millis(50), t0 + Duration::from_millis(5));
        assert_eq!(a.limit(), 750);
        for i in 1..100 {
            a.observe(Duration::from_millis(50), t0 + TARGET * i);
        }
        assert_eq!(a.limit(), 10);
    }

    #[test]
    fn fast_turns_grow_it_back_up_to_the_maximum() {
        let a = SendAdmission::new(10, 20, TARGET);
        a.observe(Duration::from_millis(50), a.epoch + Duration::from_secs(1));
        assert_eq!(a.limit(), 15);
        for _ in 0..100 {
            a.observe(Duration::from_millis(1), Instant::now());
        }
        assert_eq!(a.limit(), 20);
    }

    #[test]
    fn a_zero_target_is_a_fixed_bound() {
        let a = SendAdmission::new(1, 8, Duration::ZERO);
        a.observe(Duration::from_secs(5), Instant::now());
        assert_eq!(a.limit(), 8);
    }
}
