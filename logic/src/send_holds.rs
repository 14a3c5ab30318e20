//! One sender's order across a busy refusal, on a link reader.
//!
//! A link's reader prepares its sends in arrival order, so one connection's sends get
//! seqs in send order — but only the sends it accepts. When it refuses one as busy
//! (80009, 50006, 80005: nothing stored, the client retries), a later send of the same
//! connection, already written behind it, could be accepted and stored first, and the
//! retried one after it. So after such a refusal the reader holds the connection: its
//! later Sends with another `client_msg_id` are refused too (SendAck 80009,
//! [`codes::SEND_HELD`]) until the refused one comes again, or for
//! [`codes::SEND_HOLD_MS`] at most (a client that gave it up is not refused for ever).
//! A client that resends its refused sends in the order it first sent them thus gets the
//! whole burst stored in that order. The gateway core holds its connections the same
//! way for the refusals it makes itself (`tern_gateway::conn`).
//!
//! Owned by the link's reader (one task): no lock. Nothing is held in the common case,
//! where a Send costs one `is_empty` check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tern_schema::codes;
use tern_schema::link::ConnRef;

/// Holds start being swept for expiry once this many are kept (then at twice the
/// count left), so connections that closed while held cost nothing for long.
const SWEEP_FROM: usize = 1024;

/// The refused send a connection's later sends wait for.
struct Held {
    client_msg_id: Box<str>,
    until: Instant,
}

/// The connections of one link whose sends are held behind a refused one.
pub struct SendHolds {
    by_conn: HashMap<[u8; 16], Held>,
    sweep_at: usize,
}

impl Default for SendHolds {
    fn default() -> Self {
        Self { by_conn: HashMap::new(), sweep_at: SWEEP_FROM }
    }
}

impl SendHolds {
    /// Whether the Send `client_msg_id` of `conn` must be refused because an earlier
    /// send of the connection was refused as busy and has not come again. The refused
    /// send itself, or any send once the hold expired, ends the hold.
    pub fn holds_back(&mut self, conn: ConnRef, client_msg_id: &str) -> bool {
        self.holds_back_at(conn, client_msg_id, Instant::now())
    }

    fn holds_back_at(&mut self, conn: ConnRef, client_msg_id: &str, now: Instant) -> bool {
        if self.by_conn.is_empty() {
            return false;
        }
        let Some(held) = self.by_conn.get(&conn.0) else { return false };
        if &*held.client_msg_id == client_msg_id || now >= held.until {
            self.by_conn.remove(&conn.0);
            return false;
        }
        true
    }

    /// The Send `client_msg_id` of `conn` was refused with `code`: a busy refusal holds
    /// the connection's later sends behind it (renewed when the same send is refused
    /// again; a send refused while an earlier one is held leaves that one the one to
    /// wait for).
    pub fn refused(&mut self, conn: ConnRef, client_msg_id: &str, code: u32) {
        if codes::is_busy_send_refusal(code) {
            self.refused_at(conn, client_msg_id, Instant::now());
        }
    }

    fn refused_at(&mut self, conn: ConnRef, client_msg_id: &str, now: Instant) {
        let until = now + Duration::from_millis(codes::SEND_HOLD_MS);
        match self.by_conn.get_mut(&conn.0) {
            Some(held) if &*held.client_msg_id != client_msg_id && now < held.until => {}
            Some(held) => *held = Held { client_msg_id: client_msg_id.into(), until },
            None => {
                self.by_conn.insert(conn.0, Held { client_msg_id: client_msg_id.into(), until });
                if self.by_conn.len() >= self.sweep_at {
                    self.by_conn.retain(|_, h| now < h.until);
                    self.sweep_at = (self.by_conn.len() * 2).max(SWEEP_FROM);
                }
            }
        }
    }

    /// Connections held now (expired holds not yet swept included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_conn.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u8) -> ConnRef {
        ConnRef([n; 16])
    }

    #[test]
    fn a_busy_refusal_holds_later_sends_until_the_refused_one_comes_again() {
        let mut h = SendHolds::default();
        let t0 = Instant::now();
        assert!(!h.holds_back_at(conn(1), "a", t0), "nothing held");
        h.refused_at(conn(1), "a", t0);
        assert!(h.holds_back_at(conn(1), "b", t0), "b was written after the refused a");
        assert!(!h.holds_back_at(conn(2), "b", t0), "another connection is not held");
        assert!(!h.holds_back_at(conn(1), "a", t0), "a itself goes through and ends the hold");
        assert!(!h.holds_back_at(conn(1), "b", t0));
        assert!(h.is_empty());
    }

    #[test]
    fn only_busy_codes_hold() {
        let mut h = SendHolds::default();
        for code in [codes::INVALID_FIELD, codes::BLOCKED_BY_RECIPIENT, codes::USER_NOT_FOUND] {
            h.refused(conn(1), "a", code);
        }
        assert!(h.is_empty(), "a send refused for good is not retried: nothing to wait for");
        for (code, n) in
            [codes::SERVICE_UNAVAILABLE, codes::RATE_LIMITED, codes::SEND_RATE_EXCEEDED].into_iter().zip(1u8..)
        {
            h.refused(conn(n), "a", code);
        }
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn the_earliest_refused_send_stays_the_one_to_wait_for() {
        let mut h = SendHolds::default();
        let t0 = Instant::now();
        h.refused_at(conn(1), "a", t0);
        // "b" was refused too (e.g. rate-limited) while "a" was held: "a" still comes first.
        h.refused_at(conn(1), "b", t0 + Duration::from_millis(5));
        assert!(h.holds_back_at(conn(1), "b", t0 + Duration::from_millis(10)));
        // "a" refused again renews its own hold.
        h.refused_at(conn(1), "a", t0 + Duration::from_millis(codes::SEND_HOLD_MS - 1));
        assert!(h.holds_back_at(conn(1), "b", t0 + Duration::from_millis(codes::SEND_HOLD_MS + 1)));
        assert!(!h.holds_back_at(conn(1), "a", t0 + Duration::from_millis(codes::SEND_HOLD_MS + 2)));
    }

    #[test]
    fn a_hold_expires_and_expired_holds_are_swept() {
        let mut h = SendHolds::default();
        let t0 = Instant::now();
        h.refused_at(conn(1), "a", t0);
        let later = t0 + Duration::from_millis(codes::SEND_HOLD_MS);
        assert!(!h.holds_back_at(conn(1), "b", later), "a client that gave a up is held no longer");
        // Connections that closed while held: swept once enough holds are kept.
        for i in 0..SWEEP_FROM as u32 - 1 {
            let mut c = [0u8; 16];
            c[..4].copy_from_slice(&i.to_le_bytes());
            h.refused_at(ConnRef(c), "x", t0);
        }
        assert_eq!(h.len(), SWEEP_FROM - 1);
        h.refused_at(conn(9), "y", later);
        assert_eq!(h.len(), 1, "only the live hold is left");
    }
}
