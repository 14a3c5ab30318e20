//! The bound on one core's Sends in flight to logic: forwarded on the link and not yet
//! answered. Logic's link writer reports its running total of answered Sends
//! (`SendsAnswered`); the core counts what it forwarded; the difference is what waits
//! in the core's link buffer, the link socket, logic's reader, the store and logic's
//! queue back. Past the bound the core answers a new Send itself with SendAck 80009
//! (see `conn`): when logic is behind, a refusal costs one client write here instead of
//! a round trip through a link and a logic that are already the bottleneck, and what is
//! accepted waits behind at most the bound.
//!
//! Single-threaded (one per core, in `Cell`s): read and bumped on the frame path
//! without locks. Until logic has reported once on the current link (an older logic
//! never does), nothing is bounded.

use std::cell::Cell;

/// Sends in flight on one core's link, against its bound.
#[derive(Debug)]
pub struct SendWindow {
    /// 0 = unbounded.
    max: u64,
    forwarded: Cell<u64>,
    answered: Cell<u64>,
    /// Logic reported on this link at least once.
    reported: Cell<bool>,
    refused: metrics::Counter,
    /// Sends refused because an earlier send of their connection was (see `conn`).
    held: metrics::Counter,
}

impl SendWindow {
    pub fn new(max: u32, refused: metrics::Counter, held: metrics::Counter) -> Self {
        SendWindow {
            max: u64::from(max),
            forwarded: Cell::new(0),
            answered: Cell::new(0),
            reported: Cell::new(false),
            refused,
            held,
        }
    }

    /// Counts a Send refused because an earlier one of its connection was.
    pub fn count_held(&self) {
        self.held.increment(1);
    }

    /// A new link: logic counts from zero again, and has not reported yet.
    pub fn reset(&self) {
        self.forwarded.set(0);
        self.answered.set(0);
        self.reported.set(false);
    }

    /// Takes a place for one Send about to be forwarded; `false` (counted as refused)
    /// when the window is full.
    pub fn try_take(&self) -> bool {
        if self.max > 0 && self.reported.get() && self.in_flight() >= self.max {
            self.refused.increment(1);
            return false;
        }
        self.forwarded.set(self.forwarded.get() + 1);
        true
    }

    /// Logic's running total of the link's answered Sends. Totals never go down; one
    /// counted a batch early (logic's writer may count an answer still in its queue)
    /// only lets one more Send through.
    pub fn answered(&self, total: u64) {
        self.answered.set(self.answered.get().max(total));
        self.reported.set(true);
    }

    /// Sends forwarded and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.forwarded.get().saturating_sub(self.answered.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(max: u32) -> SendWindow {
        SendWindow::new(max, metrics::Counter::noop(), metrics::Counter::noop())
    }

    #[test]
    fn bounds_sends_in_flight_once_logic_reports() {
        let w = window(3);
        // An older logic never reports: nothing is bounded.
        assert!((0..10).all(|_| w.try_take()));
        assert_eq!(w.in_flight(), 10);
        w.answered(8);
        assert_eq!(w.in_flight(), 2);
        assert!(w.try_take());
        assert!(!w.try_take(), "3 in flight: full");
        assert_eq!(w.in_flight(), 3, "a refusal takes no place");
        w.answered(9);
        assert!(w.try_take());
        assert!(!w.try_take());
        // A total from before (reordered, or a batch early) never lowers what is known.
        w.answered(5);
        assert_eq!(w.in_flight(), 3);
        // Logic may count an answer before the core counted its send: never negative.
        w.answered(20);
        assert_eq!(w.in_flight(), 0);
        assert!(w.try_take());
    }

    #[test]
    fn a_new_link_starts_unbounded_from_zero() {
        let w = window(1);
        w.answered(0);
        assert!(w.try_take());
        assert!(!w.try_take());
        w.reset();
        assert_eq!(w.in_flight(), 0);
        assert!((0..5).all(|_| w.try_take()), "unbounded until the new link's logic reports");
        w.answered(4);
        assert!(!w.try_take());
    }

    #[test]
    fn zero_means_unbounded() {
        let w = window(0);
        w.answered(0);
        assert!((0..1000).all(|_| w.try_take()));
    }
}
