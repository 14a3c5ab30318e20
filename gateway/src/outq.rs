//! The bounded outbound queue of one connection: frames waiting for the socket, each a
//! shared body (one buffer for every connection a delivery targets) plus a tiny inline
//! per-connection prefix (the WebSocket header, if any), written with vectored writes.
//!
//! Sans-IO: [`OutQueue::flush`] takes the write function, so the partial-write
//! bookkeeping is tested without sockets. It must never copy a body, and must hold no
//! heap memory while empty.
//!
//! An emptied queue hands its ring to the core's [`RingPool`] and the next frame for
//! any quiet connection takes one from there: most connections get a frame now and
//! then, so without the pool every frame to them allocated a ring and freed it again
//! (a malloc and a free per delivery), and idle connections still hold nothing.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

use crate::ws;

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;
/// A ring that grew past this many frames (a backlog) is freed, not kept for reuse.
const POOLED_RING_MAX_FRAMES: usize = 16;
/// Empty rings one core keeps (~200 B each): enough for every connection written to in
/// one batch, bounded whatever the traffic.
const POOLED_RINGS_MAX: usize = 1024;

/// Empty rings of one core's queues, reused by the next busy connection.
#[derive(Debug, Default)]
pub struct RingPool {
    rings: Vec<VecDeque<OutFrame>>,
}

impl RingPool {
    fn take(&mut self) -> VecDeque<OutFrame> {
        self.rings.pop().unwrap_or_default()
    }

    fn give(&mut self, ring: VecDeque<OutFrame>) {
        let cap = ring.capacity();
        if cap > 0 && cap <= POOLED_RING_MAX_FRAMES && self.rings.len() < POOLED_RINGS_MAX {
            debug_assert!(ring.is_empty());
            self.rings.push(ring);
        }
    }

    /// Rings kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.rings.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }
}

/// One queued frame: `prefix[..prefix_len]` then `body`.
#[derive(Debug, Clone)]
pub struct OutFrame {
    body: Bytes,
    prefix: [u8; ws::MAX_HEADER],
    prefix_len: u8,
}

impl OutFrame {
    /// Bytes written verbatim.
    pub fn raw(body: Bytes) -> Self {
        OutFrame { body, prefix: [0; ws::MAX_HEADER], prefix_len: 0 }
    }

    /// A Tern frame inside one binary WebSocket frame.
    pub fn ws_binary(body: Bytes) -> Self {
        let (prefix, n) = ws::server_header(ws::OP_BINARY, body.len());
        OutFrame { body, prefix, prefix_len: n as u8 }
    }

    fn len(&self) -> usize {
        usize::from(self.prefix_len) + self.body.len()
    }
}

#[derive(Debug, Default)]
pub struct OutQueue {
    q: VecDeque<OutFrame>,
    /// Bytes of the front frame already written.
    front_sent: usize,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Empty and holding no ring: what a parked connection's queue looks like.
    pub fn is_idle(&self) -> bool {
        self.q.capacity() == 0
    }

    /// Queues a frame; an idle queue takes its ring from `pool`.
    pub fn push(&mut self, f: OutFrame, pool: &mut RingPool) {
        if self.q.capacity() == 0 {
            self.q = pool.take();
        }
        self.q.push_back(f);
    }

    /// Drops every frame not yet started (a partly written front frame stays, or the
    /// peer would see a torn frame).
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.front_sent > 0);
        self.q.truncate(keep);
    }

    /// Writes as much as `write` takes. `Ok(true)`: queue empty (its ring given back to
    /// `pool`); `Ok(false)`: the writer would block with frames left.
    pub fn flush(
        &mut self,
        pool: &mut RingPool,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<bool> {
        while !self.q.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let mut skip = self.front_sent;
            for f in self.q.iter() {
                if n + 2 > MAX_IOV {
                    break;
                }
                let prefix = &f.prefix[..usize::from(f.prefix_len)];
                for part in [prefix, &f.body[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    iov[n] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    n += 1;
                }
            }
            let written = match write(&iov[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        // An idle connection holds no ring (~200 B kept by every idle connection would
        // cost more than the pool's bounded few).
        pool.give(std::mem::take(&mut self.q));
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        while let Some(f) = self.q.front() {
            let left = f.len() - self.front_sent;
            if written < left {
                self.front_sent += written;
                return;
            }
            written -= left;
            self.front_sent = 0;
            self.q.pop_front();
        }
    }

    /// Heap bytes held by the ring itself (bodies are shared and counted elsewhere).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.q.capacity() * std::mem::size_of::<OutFrame>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `take` bytes per call, then blocks after `calls`.
    fn sink(out: &mut Vec<u8>, take: usize, calls: usize) -> impl FnMut(&[IoSlice<'_>]) -> io::Result<usize> + '_ {
        let mut left = calls;
        move |iov| {
            if left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            left -= 1;
            let mut n = 0;
            for s in iov {
                let k = s.len().min(take - n);
                out.extend_from_slice(&s[..k]);
                n += k;
                if n == take {
                    break;
                }
            }
            Ok(n)
        }
    }

    #[test]
    fn partial_writes_resume_exactly() {
        let (mut q, mut pool) = (OutQueue::default(), RingPool::default());
        q.push(OutFrame::raw(Bytes::from_static(b"abc")), &mut pool);
        q.push(OutFrame::ws_binary(Bytes::from_static(b"defg")), &mut pool);
        q.push(OutFrame::raw(Bytes::from_static(b"hi")), &mut pool);
        let mut out = Vec::new();
        assert!(!q.flush(&mut pool, sink(&mut out, 4, 1)).unwrap());
        assert_eq!(q.len(), 2);
        assert!(!q.flush(&mut pool, sink(&mut out, 3, 1)).unwrap());
        assert!(q.flush(&mut pool, sink(&mut out, 3, 10)).unwrap());
        assert_eq!(out, b"abc\x82\x04defghi");
        assert_eq!(q.heap_bytes(), 0);
    }

    #[test]
    fn drop_unstarted_keeps_a_torn_front() {
        let (mut q, mut pool) = (OutQueue::default(), RingPool::default());
        for b in [&b"aaaa"[..], b"bbbb", b"cccc"] {
            q.push(OutFrame::raw(Bytes::copy_from_slice(b)), &mut pool);
        }
        let mut out = Vec::new();
        q.flush(&mut pool, sink(&mut out, 2, 1)).unwrap();
        q.drop_unstarted();
        q.push(OutFrame::raw(Bytes::from_static(b"K")), &mut pool);
        assert!(q.flush(&mut pool, sink(&mut out, 100, 10)).unwrap());
        assert_eq!(out, b"aaaaK");

        let (mut q, mut pool) = (OutQueue::default(), RingPool::default());
        q.push(OutFrame::raw(Bytes::from_static(b"x")), &mut pool);
        q.drop_unstarted();
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn many_frames_take_several_writes() {
        let (mut q, mut pool) = (OutQueue::default(), RingPool::default());
        for i in 0..200u8 {
            q.push(OutFrame::raw(Bytes::copy_from_slice(&[i])), &mut pool);
        }
        let mut out = Vec::new();
        assert!(q.flush(&mut pool, sink(&mut out, 1 << 20, 100)).unwrap());
        assert_eq!(out, (0..200u8).collect::<Vec<_>>());
    }

    /// An emptied queue's ring goes to the pool and the next busy queue reuses it: no
    /// allocation per frame for connections that get one now and then, none held idle.
    #[test]
    fn emptied_rings_are_reused_and_idle_queues_hold_none() {
        let mut pool = RingPool::default();
        let (mut a, mut b) = (OutQueue::default(), OutQueue::default());
        let mut out = Vec::new();
        a.push(OutFrame::raw(Bytes::from_static(b"1")), &mut pool);
        assert!(a.flush(&mut pool, sink(&mut out, 100, 1)).unwrap());
        assert!(a.is_idle() && a.heap_bytes() == 0, "an idle queue holds no ring");
        assert_eq!(pool.len(), 1);
        b.push(OutFrame::raw(Bytes::from_static(b"2")), &mut pool);
        assert!(pool.is_empty() && b.q.capacity() > 0, "the pooled ring was taken, not a new one");
        assert!(b.flush(&mut pool, sink(&mut out, 100, 1)).unwrap());
        assert_eq!(out, b"12");

        // A backlog's big ring is freed, not kept.
        for i in 0..100u8 {
            a.push(OutFrame::raw(Bytes::copy_from_slice(&[i])), &mut pool);
        }
        assert!(a.flush(&mut pool, sink(&mut out, 1 << 20, 10)).unwrap());
        assert_eq!(pool.len(), 0, "the small ring went to the backlog, the backlog's ring was freed");

        // Bounded however many queues empty at once.
        let mut queues: Vec<OutQueue> = (0..POOLED_RINGS_MAX + 10).map(|_| OutQueue::default()).collect();
        let mut spare = RingPool::default();
        for q in &mut queues {
            q.push(OutFrame::raw(Bytes::from_static(b"x")), &mut spare);
        }
        for q in &mut queues {
            assert!(q.flush(&mut pool, sink(&mut out, 100, 1)).unwrap());
        }
        assert_eq!(pool.len(), POOLED_RINGS_MAX);
    }

    #[test]
    fn errors_surface() {
        let (mut q, mut pool) = (OutQueue::default(), RingPool::default());
        q.push(OutFrame::raw(Bytes::from_static(b"x")), &mut pool);
        assert!(q.flush(&mut pool, |_| Err(io::ErrorKind::BrokenPipe.into())).is_err());
        assert!(q.flush(&mut pool, |_| Ok(0)).is_err());
    }
}
