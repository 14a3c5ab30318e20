//! Rate-limited reporting of slow events of the store's threads (a group commit): the
//! first one is logged at once, later ones at most once per [`SLOW_LOG_EVERY`], each
//! warning carrying the slowest and the count of those since the previous one, so a
//! disk that stays slow does not flood the log.

use std::time::{Duration, Instant};

/// At most one warning per this interval per kind of event.
pub(crate) const SLOW_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct SlowEvents {
    last_logged: Option<Instant>,
    /// Slow events since the last warning, and the slowest of them.
    unlogged: u64,
    worst_unlogged: Duration,
}

impl SlowEvents {
    /// Notes an event that took `took` (slow from `threshold` on); answers (slowest
    /// since the last warning, how many slow events that covers) when a warning is due.
    pub(crate) fn note(&mut self, took: Duration, threshold: Duration, now: Instant) -> Option<(Duration, u64)> {
        if took < threshold {
            return None;
        }
        self.unlogged += 1;
        self.worst_unlogged = self.worst_unlogged.max(took);
        if self.last_logged.is_some_and(|at| now.duration_since(at) < SLOW_LOG_EVERY) {
            return None;
        }
        self.last_logged = Some(now);
        let report = (self.worst_unlogged, self.unlogged);
        (self.unlogged, self.worst_unlogged) = (0, Duration::ZERO);
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fast events are never reported; the first slow one at once; later ones at most
    /// once per interval, with the slowest and the count of those in between.
    #[test]
    fn slow_events_are_reported_rate_limited() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut slow = SlowEvents::default();
        assert_eq!(slow.note(ms(99), ms(100), t0), None);
        assert_eq!(slow.note(ms(150), ms(100), t0), Some((ms(150), 1)));
        assert_eq!(slow.note(ms(400), ms(100), t0 + ms(1)), None);
        assert_eq!(slow.note(ms(120), ms(100), t0 + ms(2)), None);
        assert_eq!(slow.note(ms(50), ms(100), t0 + SLOW_LOG_EVERY), None, "a fast one is not a report");
        assert_eq!(slow.note(ms(101), ms(100), t0 + SLOW_LOG_EVERY), Some((ms(400), 3)));
        assert_eq!(slow.note(ms(101), ms(100), t0 + SLOW_LOG_EVERY + ms(1)), None);
    }
}
