//! What the loop records about itself for `loop.stats()` and the blocking
//! detector, kept cheap enough to be always on: a few counters per
//! iteration and per callback, no allocation, no Python object.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed};

use pyo3::ffi;

/// Upper bounds (seconds) of the loop-lag histogram's buckets: how late a
/// timer callback was queued after its deadline. The last bucket is open.
pub const LAG_BOUNDS: [f64; 10] = [
    0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100, 0.200, 0.500, 1.0,
];

/// Counters only the loop thread writes, under the GIL.
#[derive(Default)]
pub struct LoopStats {
    /// Seconds spent inside the poller (waiting for I/O or a timer).
    pub poll_seconds: f64,
    /// Calls to the poller, and those of them that could block (and so
    /// gave up the GIL): a loop fed faster than it runs polls without
    /// sleeping.
    pub polls: u64,
    pub sleeps: u64,
    /// Timers per lateness bucket (LAG_BOUNDS, then "more").
    pub lag_histogram: [u64; LAG_BOUNDS.len() + 1],
    /// Seconds inside `run_forever` in total, runs that ended.
    pub run_seconds: f64,
    /// When the current `run_forever` began.
    pub running_since: Option<f64>,
}

impl LoopStats {
    pub fn note_timer_lag(&mut self, lag: f64) {
        let bucket = LAG_BOUNDS
            .iter()
            .position(|&bound| lag < bound)
            .unwrap_or(LAG_BOUNDS.len());
        self.lag_histogram[bucket] += 1;
    }
}

/// Which callback runs now, readable from a watchdog thread: `started` and
/// `finished` count callbacks, and differ while one runs; `running` points
/// at its handle (borrowed, not owned: the loop holds a reference for as
/// long as it runs, and readers hold the GIL, which the loop thread needs
/// to finish the callback).
pub struct Progress {
    started: AtomicU64,
    finished: AtomicU64,
    running: AtomicPtr<ffi::PyObject>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            running: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// `counter += 1` for a counter only one thread writes: a plain load and
/// store, where `fetch_add` would be a locked read-modify-write (a full
/// barrier on x86, paid twice per callback).
#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
}

impl Progress {
    /// Called by the loop thread only (as `leave`).
    #[inline]
    pub fn enter(&self, handle: *mut ffi::PyObject) {
        self.running.store(handle, Relaxed);
        bump(&self.started);
    }

    #[inline]
    pub fn leave(&self) {
        bump(&self.finished);
        self.running.store(std::ptr::null_mut(), Relaxed);
    }

    /// (callbacks started, callbacks finished).
    pub fn counts(&self) -> (u64, u64) {
        (self.started.load(Relaxed), self.finished.load(Relaxed))
    }

    /// The handle being run, if any. Callers hold the GIL.
    pub fn running(&self) -> Option<*mut ffi::PyObject> {
        let (started, finished) = self.counts();
        let ptr = self.running.load(Relaxed);
        (started != finished && !ptr.is_null()).then_some(ptr)
    }
}
