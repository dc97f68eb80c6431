//! The timer heap: TimerHandles ordered by deadline, then by the order they
//! were scheduled in.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::prelude::*;

use crate::handles::TimerHandle;

/// Below this many timers, cancelled ones are only dropped from the head.
const MIN_TIMERS_FOR_PURGE: usize = 100;
/// Above this share of cancelled timers the whole heap is rebuilt, so a
/// program that schedules and cancels many long timeouts stays bounded.
const PURGE_CANCELLED_FRACTION: f64 = 0.5;

struct Entry {
    when: f64,
    seq: u64,
    handle: Py<TimerHandle>,
}

impl Entry {
    fn is_cancelled(&self, py: Python<'_>) -> bool {
        self.handle.bind(py).as_super().get().is_cancelled()
    }

    /// See `prefetch`: the next timer's handle is read right after the
    /// heap has been reordered.
    #[inline]
    fn prefetch(&self) {
        crate::prefetch::object(self.handle.as_ptr());
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the std max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    /// Cancelled timers still in the heap.
    cancelled: usize,
}

impl TimerHeap {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn push(&mut self, handle: Py<TimerHandle>, when: f64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, handle });
    }

    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Drops cancelled timers: all of them when they dominate the heap,
    /// otherwise those at the head (so the next deadline is a live one).
    /// The dropped handles are handed to `garbage`, to be released outside
    /// the loop state's borrow.
    pub fn purge_cancelled(&mut self, py: Python<'_>, garbage: &mut Vec<Py<TimerHandle>>) {
        let len = self.heap.len();
        if len > MIN_TIMERS_FOR_PURGE
            && self.cancelled as f64 / len as f64 > PURGE_CANCELLED_FRACTION
        {
            let entries = std::mem::take(&mut self.heap).into_vec();
            let mut live = Vec::with_capacity(len - self.cancelled.min(len));
            for entry in entries {
                if entry.is_cancelled(py) {
                    entry.handle.get().set_scheduled(false);
                    garbage.push(entry.handle);
                } else {
                    live.push(entry);
                }
            }
            self.heap = BinaryHeap::from(live);
            self.cancelled = 0;
            return;
        }
        while let Some(head) = self.heap.peek() {
            if !head.is_cancelled(py) {
                break;
            }
            if let Some(entry) = self.heap.pop() {
                if let Some(next) = self.heap.peek() {
                    next.prefetch();
                }
                entry.handle.get().set_scheduled(false);
                self.cancelled = self.cancelled.saturating_sub(1);
                garbage.push(entry.handle);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pops the earliest timer if it is due before `end_time`.
    pub fn pop_due(&mut self, end_time: f64) -> Option<Py<TimerHandle>> {
        if self.heap.peek()?.when >= end_time {
            return None;
        }
        let entry = self.heap.pop()?;
        if let Some(next) = self.heap.peek() {
            next.prefetch();
        }
        entry.handle.get().set_scheduled(false);
        Some(entry.handle)
    }

    pub fn note_popped_cancelled(&mut self) {
        self.cancelled = self.cancelled.saturating_sub(1);
    }

    pub fn drain(&mut self) -> Vec<Py<TimerHandle>> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }

    pub fn for_each_handle(&self, mut f: impl FnMut(&Py<TimerHandle>)) {
        for entry in self.heap.iter() {
            f(&entry.handle);
        }
    }
}
