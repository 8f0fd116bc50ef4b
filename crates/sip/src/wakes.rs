//! When the endpoint's transactions and dialogs next need the clock: one deadline per key, in
//! a heap, so the core finds its next wake-up and the keys that are due without looking at
//! every transaction (before, each event scanned all of them, and the scans were 28% of the
//! server's CPU under load).
//!
//! A key has at most one deadline. Setting a new one leaves the old heap entry behind as
//! stale; stale entries are skipped when they surface, and the heap is rebuilt from the live
//! deadlines whenever stale ones outnumber them, so its size stays within twice the number of
//! keys that have a deadline (plus a small constant).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines by key.
#[derive(Debug)]
pub(crate) struct Wakes<K> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The live entries: heap sequence number to key.
    entries: HashMap<u64, K>,
    /// Each key's deadline and the sequence number of its live heap entry.
    current: HashMap<K, (Instant, u64)>,
    next_seq: u64,
}

/// Stale heap entries tolerated beyond the live ones before the heap is rebuilt.
const SLACK: usize = 1024;

impl<K: Clone + Eq + Hash> Default for Wakes<K> {
    fn default() -> Self {
        Wakes {
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            current: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Wakes<K> {
    /// Sets `key`'s deadline to `at`, or clears it (`None`).
    pub(crate) fn set(&mut self, key: &K, at: Option<Instant>) {
        match (self.current.get(key).copied(), at) {
            (Some((old, _)), Some(at)) if old == at => {}
            (old, at) => {
                if let Some((_, seq)) = old {
                    self.entries.remove(&seq);
                    self.current.remove(key);
                }
                if let Some(at) = at {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.heap.push(Reverse((at, seq)));
                    self.entries.insert(seq, key.clone());
                    self.current.insert(key.clone(), (at, seq));
                }
                self.compact();
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes every key whose deadline is at or before `now`, earliest first. Their deadlines
    /// are cleared: whoever handles them sets the next one.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(key) = self.entries.remove(&seq) {
                self.current.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Keys with a deadline.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len()
    }

    /// Entries in the heap, stale ones included (for tests of the bound).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq))) = self.heap.peek() {
            if self.entries.contains_key(seq) {
                break;
            }
            self.heap.pop();
        }
    }

    fn compact(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + SLACK {
            self.heap = self
                .current
                .values()
                .map(|&(at, seq)| Reverse((at, seq)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let mut wakes = Wakes::default();
        wakes.set(&"b", Some(ms(t0, 20)));
        wakes.set(&"a", Some(ms(t0, 10)));
        wakes.set(&"c", Some(ms(t0, 30)));
        assert_eq!(wakes.next(), Some(ms(t0, 10)));
        assert_eq!(wakes.take_due(ms(t0, 5)), Vec::<&str>::new());
        assert_eq!(wakes.take_due(ms(t0, 20)), vec!["a", "b"]);
        assert_eq!(wakes.next(), Some(ms(t0, 30)));
        assert_eq!(wakes.len(), 1);
    }

    #[test]
    fn a_new_deadline_replaces_the_old_and_none_clears_it() {
        let t0 = Instant::now();
        let mut wakes = Wakes::default();
        wakes.set(&1, Some(ms(t0, 10)));
        wakes.set(&1, Some(ms(t0, 50)));
        wakes.set(&2, Some(ms(t0, 20)));
        wakes.set(&2, None);
        assert_eq!(wakes.next(), Some(ms(t0, 50)));
        assert_eq!(wakes.take_due(ms(t0, 40)), Vec::<i32>::new());
        assert_eq!(wakes.take_due(ms(t0, 50)), vec![1]);
        assert_eq!(wakes.next(), None);
        assert_eq!(wakes.len(), 0);
    }

    #[test]
    fn the_heap_stays_bounded_however_often_deadlines_move() {
        let t0 = Instant::now();
        let mut wakes = Wakes::default();
        for round in 0..200u64 {
            for key in 0..100u64 {
                wakes.set(&key, Some(ms(t0, 1_000 + round * 7 + key)));
            }
        }
        assert_eq!(wakes.len(), 100);
        assert!(
            wakes.heap_len() <= 2 * 100 + SLACK + 1,
            "{}",
            wakes.heap_len()
        );
        let due = wakes.take_due(ms(t0, 1_000_000));
        assert_eq!(due.len(), 100);
        assert_eq!(wakes.next(), None);
    }
}
