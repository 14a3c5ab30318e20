//! Single-threaded wake-up primitives for tasks of one core runtime: [`Notify`] (one
//! waiter, auto-reset; wakes the link writer) and [`Latch`] (set once, any number of
//! waiters; shutdown stages).
//!
//! Not `Send`, no atomics, no locks: they must never cross a thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Auto-reset event with a single waiter.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once notified (immediately if already), consuming the notification.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// Set-once flag that any number of tasks can await.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait { latch: self, idx: None }
    }
}

pub struct LatchWait<'a> {
    latch: &'a Latch,
    idx: Option<usize>,
}

impl Future for LatchWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let latch = self.latch;
        if latch.set.get() {
            return Poll::Ready(());
        }
        let mut waiters = latch.waiters.borrow_mut();
        let waker = Some(cx.waker().clone());
        match self.idx {
            Some(i) if i < waiters.len() => waiters[i] = waker,
            _ => {
                let i = match waiters.iter().position(Option::is_none) {
                    Some(i) => {
                        waiters[i] = waker;
                        i
                    }
                    None => {
                        waiters.push(waker);
                        waiters.len() - 1
                    }
                };
                drop(waiters);
                self.idx = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.idx {
            if let Some(slot) = self.latch.waiters.borrow_mut().get_mut(i) {
                *slot = None;
            }
        }
    }
}

/// Lets every other ready task of the core run before continuing. Needed where a loop
/// may find its I/O ready every time (epoll driver, busy peer) and would otherwise keep
/// the core to itself.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
