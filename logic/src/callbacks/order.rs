//! Keeps one connection's sends in order while their before-send callbacks run
//! concurrently: each send takes a ticket on arrival (in the link reader, so in the
//! connection's order) and prepares itself — allocates its seqs — only once the ticket
//! before it was given back (prepared, refused, or its task gone). The business server
//! is asked about every send at once; only the cheap in-memory prepare is serialised.
//!
//! One map entry per connection with a hooked send in flight (removed by the last one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tern_schema::link::ConnRef;
use tokio::sync::oneshot;

type ConnKey = (u32, u16, u32, u32);

fn key(c: &ConnRef) -> ConnKey {
    (c.gateway_id(), c.core(), c.slot(), c.generation())
}

/// The newest ticket of every connection with hooked sends in flight.
#[derive(Default)]
pub struct ConnOrder {
    last: Mutex<HashMap<ConnKey, (u64, oneshot::Receiver<()>)>>,
    next_id: AtomicU64,
}

/// A send's place in its connection's order; giving it back (drop) lets the next go.
pub struct Ticket {
    order: Arc<ConnOrder>,
    key: ConnKey,
    id: u64,
    before: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl ConnOrder {
    /// Takes the next ticket of `conn`'s order.
    pub fn enter(self: &Arc<Self>, conn: &ConnRef) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let k = key(conn);
        let before = {
            let mut g = self.last.lock().unwrap_or_else(|p| p.into_inner());
            g.insert(k, (id, rx)).map(|(_, prev)| prev)
        };
        Ticket { order: self.clone(), key: k, id, before, done: Some(tx) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Ticket {
    /// Waits until every earlier ticket of the connection was given back.
    pub async fn wait_turn(&mut self) {
        if let Some(rx) = self.before.take() {
            // An error means the earlier send's task is gone: its turn is over too.
            let _ = rx.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        let mut g = self.order.last.lock().unwrap_or_else(|p| p.into_inner());
        if g.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            g.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn later_tickets_wait_for_earlier_ones_and_the_map_empties() {
        let order = Arc::new(ConnOrder::default());
        let conn = ConnRef::new(1, 0, 5, 1);
        let other = ConnRef::new(1, 0, 6, 1);
        let first = order.enter(&conn);
        let mut second = order.enter(&conn);
        let mut elsewhere = order.enter(&other);
        // Another connection's ticket does not wait.
        tokio::time::timeout(Duration::from_millis(100), elsewhere.wait_turn()).await.expect("independent");
        assert!(tokio::time::timeout(Duration::from_millis(50), second.wait_turn()).await.is_err(), "must wait");
        drop(first);
        tokio::time::timeout(Duration::from_millis(100), second.wait_turn()).await.expect("released");
        drop(second);
        drop(elsewhere);
        assert_eq!(order.len(), 0);
    }

    #[tokio::test]
    async fn a_refused_send_in_the_middle_releases_the_next() {
        let order = Arc::new(ConnOrder::default());
        let conn = ConnRef::new(1, 0, 5, 1);
        let a = order.enter(&conn);
        let b = order.enter(&conn);
        let mut c = order.enter(&conn);
        drop(a);
        drop(b); // refused before its turn came: still releases c
        tokio::time::timeout(Duration::from_millis(100), c.wait_turn()).await.expect("released");
    }
}
