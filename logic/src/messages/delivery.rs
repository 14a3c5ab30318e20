//! Ordered delivery: pushes reach a user's devices in that user's seq order, and never
//! above the committed watermark.
//!
//! Sends to one user complete out of order (group commit, concurrent senders). Each
//! durable timeline entry is parked here with its seq; whenever the user's watermark
//! moves, every parked entry at or below it is pushed, lowest seq first, under the
//! user's lock so two completions cannot interleave their pushes. An entry whose write
//! failed is never parked, and its seq is no longer in flight, so the watermark passes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tern_schema::link::ConnRef;
use tern_schema::message::{self, MessageParts};
use tern_storage::{AppId, Seq, UserId};

use crate::seq::Allocation;
use crate::Logic;

const SHARDS: usize = 64;

/// What to deliver for one timeline entry.
#[derive(Debug, Clone)]
pub enum Item {
    /// A stored message or event (bare FlatBuffers `Message` without seq); pushed in a
    /// Push frame with the entry's seq filled in.
    Stored(bytes::Bytes),
    /// A ready client frame (e.g. RecallNotify).
    Frame(Vec<u8>),
}

#[derive(Debug)]
struct Parked {
    item: Item,
    /// The device that caused it (the sender's own device does not get its own send).
    except: Option<ConnRef>,
}

type Key = (AppId, UserId);

pub struct Delivery {
    shards: Vec<Mutex<HashMap<Key, BTreeMap<u64, Parked>>>>,
}

// Not derived: a derived Default would have no shards (and `shard` would index out of
// bounds); `Messaging` is built by `Default`.
impl Default for Delivery {
    fn default() -> Self {
        Self::new()
    }
}

impl Delivery {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    fn shard(&self, app: AppId, user: &UserId) -> &Mutex<HashMap<Key, BTreeMap<u64, Parked>>> {
        &self.shards[crate::slots::shard_of_id(app, user.as_str(), SHARDS)]
    }

    /// Runs `f` under `user`'s delivery lock: no push of the user's messages happens
    /// meanwhile, and every completion before it is in the watermark.
    pub fn locked<R>(&self, app: AppId, user: &UserId, f: impl FnOnce() -> R) -> R {
        let _g = self.shard(app, user).lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Completes a Message-kind allocation of `user` and parks its entries (if the write
    /// was durable), then pushes everything now at or below the watermark.
    ///
    /// Completion, parking and the watermark read happen under the user's delivery lock:
    /// otherwise a completed seq could be counted in the watermark before its entry is
    /// parked, and a higher seq would be pushed first.
    pub fn complete(&self, logic: &Logic, alloc: &Allocation, durable: bool, items: Vec<(Seq, Item, Option<ConnRef>)>) {
        let (app, user) = (alloc.app, &alloc.user);
        let shard = self.shard(app, user);
        let mut g = shard.lock().unwrap_or_else(|p| p.into_inner());
        let watermark = logic.seqs.complete_then_committed(alloc, durable).0;
        let key = (app, user.clone());
        let parked = g.entry(key.clone()).or_default();
        if durable {
            for (seq, item, except) in items {
                parked.insert(seq.0, Parked { item, except });
            }
        }
        let later = parked.split_off(&(watermark + 1));
        let due = std::mem::replace(parked, later);
        if parked.is_empty() {
            g.remove(&key);
        }
        if !due.is_empty() {
            // Pushed while holding the user's lock: the link queues preserve this order.
            push_in_order(logic, app, user, due);
        }
    }
}

/// Sends due entries in seq order, batching consecutive stored messages with the same
/// `except` into one Push frame.
fn push_in_order(logic: &Logic, app: AppId, user: &UserId, due: BTreeMap<u64, Parked>) {
    let mut batch: Vec<(u64, bytes::Bytes)> = Vec::new();
    let mut batch_except: Option<ConnRef> = None;
    let flush = |batch: &mut Vec<(u64, bytes::Bytes)>, except: &Option<ConnRef>| {
        if batch.is_empty() {
            return;
        }
        let mut parts = Vec::with_capacity(batch.len());
        for (seq, bytes) in batch.iter() {
            match message::decode_stored(bytes) {
                Ok(m) => {
                    let mut p = MessageParts::from_table(&m);
                    p.seq = *seq;
                    parts.push(p);
                }
                Err(e) => tracing::error!(error = %e, seq, "undecodable stored message skipped in push"),
            }
        }
        // Conversations (issue 12): a push whose every message is from a conversation the
        // recipient muted is silent (from memory; no store read here).
        let silent = logic.conversations.all_muted(
            app,
            user,
            parts.iter().map(|p| if p.from_id == user.as_str() { p.to_id } else { p.from_id }),
        );
        let frame = message::push_with(&parts, silent);
        let n = logic.sessions.send_to_user(app, user, &frame, except.as_ref());
        // One sample per Push frame: its oldest message's time from accepted to pushed.
        if let Some(first) = parts.first().filter(|_| n > 0) {
            let delay_ms = crate::now_ms().saturating_sub(first.server_time_ms);
            metrics::histogram!("tern_push_delay_seconds").record(delay_ms as f64 / 1000.0);
        }
        metrics::counter!("tern_messages_pushed_total").increment((n * parts.len()) as u64);
        batch.clear();
    };
    for (seq, p) in due {
        match p.item {
            Item::Stored(bytes) => {
                if !batch.is_empty() && !same(&batch_except, &p.except) {
                    flush(&mut batch, &batch_except);
                }
                batch_except = p.except;
                batch.push((seq, bytes));
            }
            Item::Frame(frame) => {
                flush(&mut batch, &batch_except);
                logic.sessions.send_to_user(app, user, &frame, p.except.as_ref());
            }
        }
    }
    flush(&mut batch, &batch_except);
}

fn same(a: &Option<ConnRef>, b: &Option<ConnRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.gateway_id() == b.gateway_id()
                && a.core() == b.core()
                && a.slot() == b.slot()
                && a.generation() == b.generation()
        }
        _ => false,
    }
}
