//! After-events: one bounded queue per app, drained by one dispatcher task that runs at
//! most `after_in_flight` deliveries at once; each delivery tries `max_attempts` times
//! with doubling pauses, then gives up. Losses are counted, by app and reason, in
//! `tern_callback_dropped_total` (`queue_full`: the queue was full when the event
//! happened; `retries_exhausted`: every attempt failed).
//!
//! Delivery is at least once while nothing is dropped (a business server that answered
//! too late may see an event twice; `eventId` tells them apart), in no promised order.
//!
//! Must never: block the caller (queueing is a `try_send`), or build JSON on the
//! caller's path (the delivery task builds it from what the event kept).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_storage::{Seq, UserId};
use tokio::sync::{mpsc, Semaphore};

use super::config::MAX_RETRY_BACKOFF_MS;
use super::events::{self, commands, GroupChange, StateChange};
use super::{AppCallbacks, EventKind};
use crate::friends::records::Record;

/// The `reason` label values of `tern_callback_dropped_total`.
pub(super) const DROP_REASONS: [&str; 2] = ["queue_full", "retries_exhausted"];

/// What happened (kept small: the JSON is built at delivery).
pub(super) enum Payload {
    /// A durable message, as stored.
    Message(Bytes),
    State(StateChange),
    Relations(Vec<(UserId, Record, Seq)>),
    Group(Box<GroupChange>),
}

pub(super) struct Job {
    payload: Payload,
    event_id: u64,
    time_ms: u64,
}

impl Job {
    pub(super) fn new(payload: Payload) -> Self {
        Self { payload, event_id: events::next_event_id(), time_ms: crate::now_ms() }
    }
}

/// One app's queue. Its dispatcher starts with the first event (inside the runtime).
pub(super) struct AfterQueue {
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    started: AtomicBool,
}

impl AfterQueue {
    pub(super) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        Self { tx, rx: Mutex::new(Some(rx)), started: AtomicBool::new(false) }
    }

    /// Events queued and not yet taken by a delivery.
    pub(super) fn len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues `job`, or drops it (counted) when the queue is full.
    pub(super) fn push(&self, cb: &Arc<AppCallbacks>, job: Job) {
        if !self.started.load(Ordering::Acquire) {
            self.start(cb);
        }
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(_) => cb.dropped_full.increment(1),
        }
        cb.queue_depth.set(self.len() as f64);
    }

    fn start(&self, cb: &Arc<AppCallbacks>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let mut g = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = g.take() {
            rt.spawn(dispatch(cb.clone(), rx));
            self.started.store(true, Ordering::Release);
        }
    }
}

async fn dispatch(cb: Arc<AppCallbacks>, mut rx: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(cb.cfg.after_in_flight.max(1)));
    while let Some(job) = rx.recv().await {
        cb.queue_depth.set(rx.len() as f64);
        // Waiting here (every delivery busy) lets the queue fill, and a full queue
        // drops new events: the bound on what a slow business server costs.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let cb = cb.clone();
        tokio::spawn(async move {
            deliver(&cb, job).await;
            drop(permit);
        });
    }
}

async fn deliver(cb: &AppCallbacks, job: Job) {
    let c = &cb.cfg;
    let (kind, url, command, data) = match &job.payload {
        Payload::Message(stored) => {
            let Some((group, data)) = events::after_send(stored) else {
                tracing::error!(app = cb.app, "an accepted message does not decode; no after-send event");
                return;
            };
            let command = if group { commands::GROUP_AFTER_SEND } else { commands::AFTER_SEND };
            (EventKind::AfterSend, &c.after_send_url, command, data)
        }
        Payload::State(s) => {
            (EventKind::StateChange, &c.state_change_url, commands::STATE_CHANGE, events::state_change(s))
        }
        Payload::Relations(r) => {
            (EventKind::Friendship, &c.friendship_url, commands::FRIENDSHIP_CHANGE, events::relations(r))
        }
        Payload::Group(g) => (EventKind::Group, &c.group_url, commands::GROUP_CHANGE, events::group_change(g)),
    };
    let Some(url) = url else { return };
    let body = events::envelope(command, cb.app, job.event_id, job.time_ms, data);
    let mut pause = c.retry_backoff_ms;
    let attempts = c.max_attempts.max(1);
    for attempt in 1..=attempts {
        let started = Instant::now();
        let result = cb.client.post(url.as_str(), command, body.clone(), cb.timeout()).await;
        metrics::histogram!("tern_callback_seconds", "event" => kind.label()).record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => {
                cb.count_request(kind, "ok");
                return;
            }
            Err(e) => {
                cb.count_request(kind, e.label());
                tracing::debug!(app = cb.app, command, attempt, error = %e, "after-event delivery failed");
            }
        }
        if attempt < attempts {
            metrics::counter!("tern_callback_retries_total", "app" => cb.label.clone(), "event" => kind.label())
                .increment(1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            pause = pause.saturating_mul(2).min(MAX_RETRY_BACKOFF_MS);
        }
    }
    tracing::warn!(
        app = cb.app,
        command,
        event_id = job.event_id,
        attempts,
        "after-event dropped: every attempt failed"
    );
    metrics::counter!("tern_callback_dropped_total", "app" => cb.label.clone(), "reason" => "retries_exhausted")
        .increment(1);
}
