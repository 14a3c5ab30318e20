//! The per-core connection table: a slab whose slots carry a generation, so that a
//! reference (slot, generation) held by logic goes stale when the slot is reused.
//!
//! Single-threaded by construction (owned by one core); it must never hand out an entry
//! for a stale generation.
//!
//! Memory grows with the number of slots ever used, in fixed chunks of [`CHUNK`]
//! slots that never move: no doubling (which would copy every entry and, with the
//! allocator keeping the old block, leave up to half the table's size unused) and no
//! table reserved up front (a fixed cost that would hide inside "per connection").

/// Slots per chunk: 256 × ~210 B ≈ 53 KiB, so at most one partly used chunk per core.
const CHUNK: usize = 256;

/// A slab with generation-checked access.
#[derive(Debug)]
pub struct Slab<T> {
    /// Every chunk but the last is full (`CHUNK` slots); none ever reallocates.
    chunks: Vec<Vec<Slot<T>>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { chunks: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    fn slot_mut(&mut self, idx: u32) -> Option<&mut Slot<T>> {
        let i = idx as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value`; returns its (slot, generation).
    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(idx) = self.free.pop() {
            if let Some(slot) = self.slot_mut(idx) {
                slot.value = Some(value);
                return (idx, slot.generation);
            }
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let used = (self.chunks.len() - 1) * CHUNK;
        let last = self.chunks.last_mut().unwrap_or_else(|| unreachable!("a chunk was just ensured"));
        let idx = (used + last.len()) as u32;
        last.push(Slot { generation: 1, value: Some(value) });
        (idx, 1)
    }

    pub fn get_mut(&mut self, idx: u32, generation: u32) -> Option<&mut T> {
        match self.slot_mut(idx) {
            Some(s) if s.generation == generation => s.value.as_mut(),
            _ => None,
        }
    }

    /// Removes the entry; the slot's generation moves on so old references go stale.
    pub fn remove(&mut self, idx: u32, generation: u32) -> Option<T> {
        let s = self.slot_mut(idx)?;
        if s.generation != generation {
            return None;
        }
        let v = s.value.take()?;
        s.generation = s.generation.wrapping_add(1).max(1);
        self.free.push(idx);
        self.len -= 1;
        Some(v)
    }

    /// Every live entry with its (slot, generation).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut T)> {
        self.chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_mut().map(|v| (i as u32, s.generation, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_references_miss() {
        let mut s = Slab::default();
        let (a, ga) = s.insert("a");
        let (b, gb) = s.insert("b");
        assert_eq!(s.remove(a, ga), Some("a"));
        assert_eq!(s.remove(a, ga), None);
        let (c, gc) = s.insert("c");
        assert_eq!(c, a, "slot reused");
        assert_ne!(gc, ga);
        assert_eq!(s.get_mut(a, ga), None);
        assert_eq!(s.get_mut(c, gc), Some(&mut "c"));
        assert_eq!(s.get_mut(b, gb), Some(&mut "b"));
        assert_eq!(s.get_mut(99, 1), None);
        assert_eq!(s.len(), 2);
        let keys: Vec<_> = s.iter_mut().map(|(i, g, _)| (i, g)).collect();
        assert_eq!(keys, vec![(a, gc), (b, gb)]);
        assert_eq!(s.iter_mut().count(), 2);
    }

    #[test]
    fn chunks_fill_in_order_and_never_move() {
        let mut s = Slab::default();
        let keys: Vec<_> = (0..(3 * CHUNK + 5)).map(|i| s.insert(i)).collect();
        assert_eq!(s.chunks.len(), 4);
        assert!(s.chunks.iter().all(|c| c.capacity() == CHUNK));
        for (i, &(slot, generation)) in keys.iter().enumerate() {
            assert_eq!(slot as usize, i);
            assert_eq!(s.get_mut(slot, generation), Some(&mut i.clone()));
        }
        let order: Vec<usize> = s
            .iter_mut()
            .map(|(i, _, v)| {
                assert_eq!(i as usize, *v);
                *v
            })
            .collect();
        assert_eq!(order.len(), 3 * CHUNK + 5);
        let (slot, generation) = keys[CHUNK + 1];
        assert_eq!(s.remove(slot, generation), Some(CHUNK + 1));
        assert_eq!(s.insert(7).0, slot, "a freed slot is reused before a new one");
    }
}
