//! The timer heap: TimerHandles ordered by deadline, then by the order they
//! were scheduled in.

use pyo3::prelude::*;

use crate::handles::TimerHandle;

/// Below this many timers, cancelled ones are only dropped from the head.
const MIN_TIMERS_FOR_PURGE: usize = 100;
/// Above this share of cancelled timers the whole heap is rebuilt, so a
/// program that schedules and cancels many long timeouts stays bounded.
const PURGE_CANCELLED_FRACTION: f64 = 0.5;

/// Sixteen bytes (the scheduling order, needed only to break ties, is read
/// from the handle). Measured alone, shrinking the entry from 24 bytes
/// gained nothing; it lets four children span fewer cache lines for the
/// prefetch in `sift_down`, which did. Moving the scheduling order back into
/// a 24-byte entry (so ties never read a handle) was measured with the
/// prefetch in place: call_later at 0.97x, median of 11 alternations.
struct Entry {
    /// The deadline as an integer of the same order (`order_key`): the
    /// heap compares integers, which the compiler selects without branches.
    key: u64,
    handle: Py<TimerHandle>,
}

/// Maps a deadline to an integer in `f64::total_cmp` order (a NaN deadline,
/// `call_at(nan)`, must not break the heap's invariant).
fn order_key(when: f64) -> u64 {
    let bits = when.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn deadline_of(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
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

    /// Deadline order, ties in scheduling order.
    #[inline(always)]
    fn is_before(&self, other: &Entry) -> bool {
        self.key < other.key
            || (self.key == other.key && self.handle.get().seq() < other.handle.get().seq())
    }
}

/// Children per node. With 100,000 pending timers, popping the head was a
/// quarter of the call_later row with std's binary heap, stalled on memory
/// at each level. Four children halve the levels and keep a node's
/// grandchildren contiguous, so `sift_down` can prefetch them; the arity
/// alone measured no faster, the prefetch and integer keys gave 3-5%.
const ARITY: usize = 4;

/// A min-heap of timer entries.
#[derive(Default)]
struct Heap(Vec<Entry>);

impl Heap {
    fn push(&mut self, entry: Entry) {
        self.0.push(entry);
        self.sift_up(self.0.len() - 1);
    }

    fn peek(&self) -> Option<&Entry> {
        self.0.first()
    }

    fn pop(&mut self) -> Option<Entry> {
        let last = self.0.pop()?;
        if self.0.is_empty() {
            return Some(last);
        }
        let head = std::mem::replace(&mut self.0[0], last);
        self.sift_down(0);
        Some(head)
    }

    fn from_vec(entries: Vec<Entry>) -> Heap {
        let mut heap = Heap(entries);
        let len = heap.0.len();
        if len > 1 {
            for pos in (0..=(len - 2) / ARITY).rev() {
                heap.sift_down(pos);
            }
        }
        heap
    }

    fn sift_up(&mut self, mut pos: usize) {
        let v = &mut self.0;
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if !v[pos].is_before(&v[parent]) {
                break;
            }
            v.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let v = &mut self.0;
        let len = v.len();
        loop {
            let first = pos * ARITY + 1;
            if first >= len {
                return;
            }
            // The grandchildren are contiguous: ask for all of them while
            // the children are compared, hiding one level's memory latency.
            let grandchildren = first * ARITY + 1;
            if grandchildren < len {
                // One line more than they fill: they rarely start on one.
                let bytes = ARITY * ARITY * std::mem::size_of::<Entry>();
                let lines = bytes.div_ceil(64) + 1;
                crate::prefetch::lines(v.as_ptr().wrapping_add(grandchildren), lines);
            }
            let mut best = first;
            for child in first + 1..(first + ARITY).min(len) {
                best = if v[child].is_before(&v[best]) {
                    child
                } else {
                    best
                };
            }
            if !v[best].is_before(&v[pos]) {
                return;
            }
            v.swap(pos, best);
            pos = best;
        }
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: Heap,
    next_seq: u64,
    /// Cancelled timers still in the heap.
    cancelled: usize,
}

impl TimerHeap {
    pub fn len(&self) -> usize {
        self.heap.0.len()
    }

    pub fn push(&mut self, handle: Py<TimerHandle>, when: f64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        handle.get().set_seq(seq);
        self.heap.push(Entry {
            key: order_key(when),
            handle,
        });
    }

    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Drops cancelled timers: all of them when they dominate the heap,
    /// otherwise those at the head (so the next deadline is a live one).
    /// The dropped handles are handed to `garbage`, to be released outside
    /// the loop state's borrow.
    pub fn purge_cancelled(&mut self, py: Python<'_>, garbage: &mut Vec<Py<TimerHandle>>) {
        let len = self.heap.0.len();
        if len > MIN_TIMERS_FOR_PURGE
            && self.cancelled as f64 / len as f64 > PURGE_CANCELLED_FRACTION
        {
            let entries = std::mem::take(&mut self.heap.0);
            let mut live = Vec::with_capacity(len - self.cancelled.min(len));
            for entry in entries {
                if entry.is_cancelled(py) {
                    entry.handle.get().set_scheduled(false);
                    garbage.push(entry.handle);
                } else {
                    live.push(entry);
                }
            }
            self.heap = Heap::from_vec(live);
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
        self.heap.peek().map(|e| deadline_of(e.key))
    }

    /// Pops the earliest timer if it is due before `end_time`.
    pub fn pop_due(&mut self, end_time: f64) -> Option<Py<TimerHandle>> {
        if deadline_of(self.heap.peek()?.key) >= end_time {
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
        std::mem::take(&mut self.heap.0)
            .into_iter()
            .map(|e| e.handle)
            .collect()
    }

    pub fn for_each_handle(&self, mut f: impl FnMut(&Py<TimerHandle>)) {
        for entry in &self.heap.0 {
            f(&entry.handle);
        }
    }
}
