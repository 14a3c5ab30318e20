//! The per-core connection table: a slab whose slots carry a generation, so that a
//! reference (slot, generation) held by logic goes stale when the slot is reused.
//!
//! Single-threaded by construction (owned by one core); it must never hand out an entry
//! for a stale generation.

/// A slab with generation-checked access.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
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
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// A slab with room for `n` entries reserved up front (virtual memory: untouched
    /// pages cost no RSS).
    pub fn with_capacity(n: usize) -> Self {
        Slab { slots: Vec::with_capacity(n), free: Vec::new(), len: 0 }
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
            let slot = &mut self.slots[idx as usize];
            slot.value = Some(value);
            return (idx, slot.generation);
        }
        let idx = self.slots.len() as u32;
        self.slots.push(Slot { generation: 1, value: Some(value) });
        (idx, 1)
    }

    pub fn get_mut(&mut self, idx: u32, generation: u32) -> Option<&mut T> {
        match self.slots.get_mut(idx as usize) {
            Some(s) if s.generation == generation => s.value.as_mut(),
            _ => None,
        }
    }

    /// Removes the entry; the slot's generation moves on so old references go stale.
    pub fn remove(&mut self, idx: u32, generation: u32) -> Option<T> {
        let s = self.slots.get_mut(idx as usize)?;
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
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| s.value.as_mut().map(|v| (i as u32, s.generation, v)))
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
}
