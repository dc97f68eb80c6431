//! `LoopCore`: the native half of ferroloop's event loop. It owns the ready
//! queue, the timer heap, the fd registry and the poller, and runs
//! iterations; the Python class `ferroloop.EventLoop` derives from it and
//! adds the orchestration asyncio writes in Python (lifecycle, executors,
//! exception handling, signals, socket coroutines).
//!
//! One iteration (`run_once`) reads top-down like asyncio's `_run_once`:
//! drop cancelled timers, compute the poll timeout, poll, queue the I/O
//! callbacks, queue the due timers, then run exactly the callbacks that were
//! ready when the batch began. Right after a poll that found events, one
//! iteration runs the queued callbacks alone (`runs_ready_only`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst,
};

use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyTuple};
use pyo3::PyTraverseError;

use crate::clock;
use crate::errors::{loop_closed, os_error};
use crate::fd_registry::{Direction, FdRegistry, THREAD_WAKE_TOKEN, WAKER_TOKEN};
use crate::gil_cell::GilCell;
use crate::handles::{Handle, TimerHandle};
use crate::loop_stats::{LoopStats, Progress, LAG_BOUNDS};
use crate::py_helpers;
use crate::sock_ops;
use crate::sys::{cpu, Events, Interest, Poller, Waker};
use crate::timers::TimerHeap;

/// asyncio's cap on one poll's timeout (a day), so a far-away timer never
/// overflows the poller's millisecond argument.
const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;

/// How many callbacks another thread may queue ahead of the loop before it
/// hands the GIL over, when the two share one CPU (see `let_the_loop_catch_up`).
const YIELD_EVERY_QUEUED: usize = 2048;

#[derive(Default)]
struct LoopState {
    ready: VecDeque<Py<Handle>>,
    timers: TimerHeap,
    fds: FdRegistry,
    stats: LoopStats,
}

#[pyclass(module = "ferroloop._core", subclass, frozen)]
pub struct LoopCore {
    state: GilCell<LoopState>,
    poller: Poller,
    waker: Waker,
    closed: AtomicBool,
    stopping: AtomicBool,
    debug: AtomicBool,
    /// What `set_debug` was given when it was not a bool: asyncio's
    /// `get_debug` returns the value itself. None for a bool.
    debug_value: GilCell<Option<Py<PyAny>>>,
    /// Set while the loop may block in the poller; `call_soon_threadsafe`
    /// writes to the waker only then, so a busy loop is never woken.
    sleeping: AtomicBool,
    /// `threading.get_ident()` of the thread running the loop, 0 when idle.
    thread_id: AtomicU64,
    /// The one CPU the loop's thread was confined to when the loop started
    /// running, -1 if none (see `let_the_loop_catch_up`).
    loop_cpu: AtomicI64,
    /// The last poll returned events, and no iteration has skipped its
    /// poll since (see `runs_ready_only`).
    poll_found_events: AtomicBool,
    /// Polls that may block still to go straight to sleep before one
    /// looks without blocking first (see `wait_for_events`); 0: look.
    sleeps_before_looking: AtomicU32,
    /// Iterations run so far; lets tests and stats check the loop never
    /// spins (a timer is not polled for before its deadline).
    iterations: AtomicU64,
    /// The handle being run, in debug mode (asyncio's `_current_handle`).
    current_handle: GilCell<Option<Py<Handle>>>,
    /// Which callback runs now, for the blocking detector's watchdog.
    progress: Progress,
    /// `tracer(handle_or_None, start, end)` after every callback (a handle)
    /// and every poll (None), while `python -m ferroloop trace` records.
    tracer: GilCell<Option<Py<PyAny>>>,
    /// `{"loop": self}`, made once: `create_future` passes it to every
    /// `Future(loop=...)` call (the constructor only reads it).
    future_kwargs: GilCell<Option<Py<pyo3::types::PyDict>>>,
    /// `self.call_soon` bound once, while the loop runs (see
    /// `bound_call_soon.rs`; the loop <-> method cycle ends with the run).
    bound_call_soon: GilCell<Option<Py<PyAny>>>,
    tracing: AtomicBool,
    clock_resolution: f64,
    /// The loop's `time` is not the native one: a subclass overrides it, or
    /// a program (a test's `mock.patch.object(loop, "time")`) set it on the
    /// instance. asyncio reads `self.time()` to decide which timers are due
    /// and to compute `call_later`'s deadline, so such a clock is then read
    /// through Python for those decisions too.
    python_clock: AtomicBool,
}

/// `threading.get_ident()`.
fn current_thread_ident() -> u64 {
    unsafe { libc::pthread_self() as u64 }
}

/// Drops Python references after the state borrow has ended: releasing the
/// last reference runs finalizers, which may call back into the loop.
fn release<T>(garbage: Vec<T>) {
    drop(garbage);
}

impl LoopCore {
    /// The bound `call_soon` cached for this run, if any.
    pub(crate) fn bound_call_soon<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.bound_call_soon
            .try_with(|m| m.as_ref().map(|m| m.bind(py).clone()))
            .flatten()
    }

    /// Whether any callback is queued to run.
    pub(crate) fn has_ready(&self, py: Python<'_>) -> bool {
        self.state.with(py, |st| !st.ready.is_empty())
    }

    #[inline]
    pub(crate) fn debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    /// What `set_debug` was given (`get_debug()`, `loop._debug`).
    pub(crate) fn debug_value<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self
            .debug_value
            .with(py, |value| value.as_ref().map(|v| v.clone_ref(py)))
        {
            Some(value) => value.into_bound(py),
            None => PyBool::new(py, self.debug()).to_owned().into_any(),
        }
    }

    pub(crate) fn timer_cancelled(&self, py: Python<'_>) {
        self.state.with(py, |st| st.timers.note_cancelled());
    }

    #[inline]
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            Err(loop_closed())
        } else {
            Ok(())
        }
    }

    fn check_thread(&self) -> PyResult<()> {
        let owner = self.thread_id.load(Relaxed);
        if owner != 0 && owner != current_thread_ident() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        Ok(())
    }

    #[inline(always)]
    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        one_shot: bool,
        untrack_context: bool,
    ) -> PyResult<Handle> {
        Handle::new(
            slf.py(),
            callback,
            args,
            context,
            slf.as_any(),
            slf.get().debug(),
            one_shot,
            untrack_context,
        )
    }

    /// A handle for call_soon & co, out of the garbage collector's sight
    /// (not in debug mode, which keeps callbacks for its reports).
    fn new_one_shot(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        // Below this many queued callbacks, a context copy dies young and
        // costs the collector nothing; above it, copies pile up in the
        // generations the collector rescans (a thread feeding the loop).
        const BACKLOG: usize = 256;
        let this = slf.get();
        let debug = this.debug();
        let backlog = this.state.with(slf.py(), |st| st.ready.len() >= BACKLOG);
        Handle::into_object(
            slf.py(),
            Self::new_handle(slf, callback, args, context, !debug, backlog)?,
        )
    }

    /// Queues `handle`; returns how many callbacks are queued now.
    fn push_ready(&self, py: Python<'_>, handle: &Py<Handle>) -> usize {
        let handle = handle.clone_ref(py);
        self.state.with(py, |st| {
            st.ready.push_back(handle);
            st.ready.len()
        })
    }

    /// Called by a thread that has queued YIELD_EVERY_QUEUED callbacks the
    /// loop has not run yet. If that thread and the loop's are confined to
    /// the same single CPU, it hands the GIL over until the loop has started
    /// on them (at most a millisecond, in case the loop thread is busy
    /// without the GIL).
    ///
    /// On one CPU, a producer thread otherwise keeps the GIL for the whole
    /// switch interval (5 ms), queueing tens of thousands of handles and
    /// context copies; their memory is then freed in one go, and the
    /// allocator returns it to the system only to fault it in again in the
    /// next interval (13% of the time of call_soon_threadsafe, in the
    /// kernel). Releasing the GIL is not enough by itself: the producer
    /// takes it straight back, and only delays the loop thread's own switch
    /// request.
    ///
    /// On two CPUs the same hand-over costs more than it saves: each one
    /// wakes the other thread across CPUs. With the benchmark's producer,
    /// best of 6: 4.8 M callbacks/s with it against 5.2 M without, while on
    /// one CPU it gives 6.7-6.8 M against 5.1-5.6 M.
    fn let_the_loop_catch_up(&self, py: Python<'_>) {
        let owner = self.thread_id.load(Relaxed);
        if owner == 0 || owner == current_thread_ident() {
            return;
        }
        let loop_cpu = self.loop_cpu.load(Relaxed);
        if loop_cpu < 0 || cpu::sole_cpu() != Some(loop_cpu as usize) {
            return;
        }
        let progress = &self.progress;
        let (started, _) = progress.counts();
        py.detach(|| {
            let give_up = std::time::Instant::now() + std::time::Duration::from_millis(1);
            while progress.counts().0 == started && std::time::Instant::now() < give_up {
                std::thread::yield_now();
            }
        });
    }

    fn wake_if_sleeping(&self) {
        // The plain load first: a busy loop is not sleeping, and then no
        // locked instruction is paid per call.
        if self.sleeping.load(SeqCst) && self.sleeping.swap(false, SeqCst) {
            self.waker.wake();
        }
    }

    fn schedule_at(
        slf: &Bound<'_, Self>,
        (when, given): (f64, Option<Bound<'_, PyAny>>),
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            this.check_thread()?;
            // asyncio routes call_later through call_at, so both report call_at.
            py_helpers::check_callback(py, &callback, "call_at")?;
        }
        let debug = this.debug();
        let base = Self::new_handle(slf, callback, args, context, !debug, true)?;
        let timer = TimerHandle::create(py, when, given, base)?;
        timer.get().set_scheduled(true);
        let queued = timer.clone_ref(py);
        this.state.with(py, |st| st.timers.push(queued, when));
        Ok(timer)
    }

    // ---- one iteration -------------------------------------------------

    fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // Only the thread running the loop counts iterations.
        crate::loop_stats::bump(&this.iterations);

        let mut timer_garbage = Vec::new();
        this.state
            .with(py, |st| st.timers.purge_cancelled(py, &mut timer_garbage));
        release(timer_garbage);

        if !this.runs_ready_only(py) {
            let timeout_ms = Self::poll_timeout(slf)?;
            let woken = if timeout_ms != 0 || this.must_poll_while_busy(py) {
                this.poll_and_dispatch(py, timeout_ms)?
            } else {
                false
            };
            if woken {
                // A signal byte means Python's C handler ran, perhaps on
                // another thread: run the Python-level handlers now (a
                // Ctrl-C raises here, as it would out of asyncio's select()).
                // SAFETY: plain C call; the GIL is held.
                if unsafe { ffi::PyErr_CheckSignals() } != 0 {
                    return Err(crate::call::take_raised(py));
                }
                for signum in this.waker.drain() {
                    slf.call_method1(intern!(py, "_handle_signal"), (signum,))?;
                }
            }
            Self::queue_due_timers(slf)?;
        }
        Self::run_ready(slf)
    }

    /// Whether this iteration only runs the callbacks already queued, with
    /// neither a poll nor due timers: right after a poll that returned
    /// events, when callbacks are queued, once.
    ///
    /// What is queued then is mostly what those events caused (the task a
    /// read woke, the future a thread resolved), and a ping-pong connection
    /// would otherwise pay an empty `epoll_wait` per message. Such an
    /// iteration is one of asyncio's in which the poll found nothing and no
    /// timer had fallen due yet: I/O and timers are seen one iteration
    /// later, in asyncio's order. Due timers must wait too: asyncio queues
    /// the I/O a poll finds before the timers that are due, and code that
    /// races a reader against `call_later(0)` each round (psycopg's wait
    /// functions) must see the reader win once the fd is readable; running
    /// the timers without the poll let the timer win every round. The next
    /// iteration always polls, so a loop kept busy by callbacks still sees
    /// I/O every other iteration, and the first iteration of a run always
    /// polls (a test's `call_soon(loop.stop); run_forever()` is meant to
    /// process I/O).
    fn runs_ready_only(&self, py: Python<'_>) -> bool {
        self.poll_found_events.swap(false, Relaxed)
            && self.state.with(py, |st| !st.ready.is_empty())
    }

    /// Polls, then queues the callbacks of the fds that are ready; true if
    /// the signal channel had something (other threads' wake-ups need no
    /// handling: the poll returning was their purpose).
    /// Out of line: the event buffer lives only in this frame, so an
    /// iteration that does not poll never pays for it.
    #[inline(never)]
    fn poll_and_dispatch(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<bool> {
        let mut events = Events::new();
        self.poll(py, &mut events, timeout_ms)?;
        self.poll_found_events.store(!events.is_empty(), Relaxed);
        let mut garbage = Vec::new();
        let woken = self.state.with(py, |st| {
            let mut woken = false;
            for event in events.iter() {
                if event.token == THREAD_WAKE_TOKEN {
                    // Returning from the poll was the whole message.
                } else if event.token == WAKER_TOKEN {
                    woken = true;
                } else {
                    st.fds
                        .dispatch(py, &self.poller, event, &mut st.ready, &mut garbage);
                }
            }
            woken
        });
        release(garbage);
        Ok(woken)
    }

    /// With callbacks ready the poll cannot wait, so it only looks for I/O.
    /// With no fd registered there is none to find, only the wake-up
    /// channel (signals; threads queue callbacks directly and wake only a
    /// sleeping loop): that is looked at every 256 iterations, a few
    /// microseconds of a busy loop. Every 16 cost call_soon 15%: the
    /// system call outweighed the callbacks between two checks.
    fn must_poll_while_busy(&self, py: Python<'_>) -> bool {
        const WAKER_CHECK_EVERY: u64 = 256;
        self.state.with(py, |st| st.fds.registered() > 0)
            || self.iterations.load(Relaxed) % WAKER_CHECK_EVERY == 0
    }

    /// Now, on the loop's clock: the native monotonic clock, or the
    /// loop's own `time()` when Python code replaced it (`python_clock`).
    fn loop_time(slf: &Bound<'_, Self>) -> PyResult<f64> {
        if slf.get().python_clock.load(Relaxed) {
            slf.call_method0(intern!(slf.py(), "time"))?.extract()
        } else {
            Ok(clock::monotonic())
        }
    }

    /// The poll timeout in milliseconds (-1: no timer, wait for I/O), and
    /// the `sleeping` flag raised when the poll may block. Python signal
    /// handlers get their chance first, so a Ctrl-C that arrived while
    /// native code ran is not left waiting behind a long poll.
    fn poll_timeout(slf: &Bound<'_, Self>) -> PyResult<i32> {
        let (py, this) = (slf.py(), slf.get());
        let busy = this.state.with(py, |st| !st.ready.is_empty()) || this.stopping.load(Relaxed);
        if !busy {
            // SAFETY: plain C call; the GIL is held.
            if unsafe { ffi::PyErr_CheckSignals() } != 0 {
                return Err(crate::call::take_raised(py));
            }
        }
        if busy {
            return Ok(0);
        }
        let now = Self::loop_time(slf)?;
        Ok(this.state.with(py, |st| {
            if !st.ready.is_empty() || this.stopping.load(Relaxed) {
                return 0;
            }
            // From here on a thread that queues a callback must wake us.
            this.sleeping.store(true, SeqCst);
            match st.timers.next_deadline() {
                None => -1,
                Some(when) => {
                    let seconds = (when - now).clamp(0.0, MAXIMUM_SELECT_TIMEOUT);
                    // Round up, as the stdlib selector does, so we never wake
                    // before the deadline and spin.
                    (seconds * 1e3).ceil() as i32
                }
            }
        }))
    }

    fn poll(&self, py: Python<'_>, events: &mut Events, timeout_ms: i32) -> PyResult<()> {
        let started = clock::monotonic();
        let result = self.poll_timed(py, events, timeout_ms);
        let waited = clock::monotonic() - started;
        self.state.with(py, |st| st.stats.poll_seconds += waited);
        if self.tracing.load(Relaxed) {
            self.trace(py, &py.None().into_bound(py), started)?;
        }
        result
    }

    fn trace(&self, py: Python<'_>, what: &Bound<'_, PyAny>, started: f64) -> PyResult<()> {
        let ended = clock::monotonic();
        let tracer = self
            .tracer
            .with(py, |t| t.as_ref().map(|t| t.clone_ref(py)));
        if let Some(tracer) = tracer {
            tracer.bind(py).call1((what, started, ended))?;
        }
        Ok(())
    }

    fn poll_timed(&self, py: Python<'_>, events: &mut Events, timeout_ms: i32) -> PyResult<()> {
        let result = if timeout_ms == 0 {
            self.state.with(py, |st| st.stats.polls += 1);
            let result = self.poller.wait(events, 0);
            if !events.is_empty() {
                self.sleeps_before_looking.store(0, Relaxed);
            }
            result
        } else {
            self.wait_for_events(py, events, timeout_ms)
        };
        match result {
            Ok(()) => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => {
                events.clear();
                // Run Python-level signal handlers now; KeyboardInterrupt
                // leaves the loop as it leaves asyncio's select().
                // SAFETY: plain C call; the GIL is held.
                if unsafe { ffi::PyErr_CheckSignals() } != 0 {
                    return Err(crate::call::take_raised(py));
                }
                Ok(())
            }
            Err(err) => Err(os_error(&err)),
        }
    }

    /// A poll that may block. Blocking gives up the GIL, and giving it up
    /// and taking it back costs about 400 instructions, more than the rest
    /// of the poll; so while I/O keeps arriving, and no other thread could
    /// want the GIL, look first without blocking, keeping it. (With
    /// another thread about, a loop that kept the GIL while busy would
    /// hand it over only at the interpreter's switch interval: an executor
    /// round trip took 10 ms instead of 0.2.) An empty look costs a system
    /// call, so after one the loop sleeps straight away for the next polls
    /// (a lone client that answers in its own time pays one look in 17),
    /// and looks again sooner once a poll shows I/O queueing up: found
    /// without blocking, or several fds ready at once.
    fn wait_for_events(
        &self,
        py: Python<'_>,
        events: &mut Events,
        timeout_ms: i32,
    ) -> io::Result<()> {
        const SLEEPS_AFTER_AN_EMPTY_LOOK: u32 = 16;
        let sleeps_to_go = self.sleeps_before_looking.load(Relaxed);
        if sleeps_to_go == 0 && alone_in_interpreter(py) {
            self.state.with(py, |st| st.stats.polls += 1);
            let looked = self.poller.wait(events, 0);
            if looked.is_err() || !events.is_empty() {
                self.sleeping.store(false, SeqCst);
                return looked;
            }
            self.sleeps_before_looking
                .store(SLEEPS_AFTER_AN_EMPTY_LOOK, Relaxed);
        } else if sleeps_to_go > 0 {
            self.sleeps_before_looking.store(sleeps_to_go - 1, Relaxed);
        }
        self.state.with(py, |st| {
            st.stats.polls += 1;
            st.stats.sleeps += 1;
        });
        let poller = &self.poller;
        let result = py.detach(|| poller.wait(events, timeout_ms));
        self.sleeping.store(false, SeqCst);
        if events.len() > 1 {
            self.sleeps_before_looking.store(0, Relaxed);
        }
        result
    }

    fn queue_due_timers(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (py, this) = (slf.py(), slf.get());
        if this.state.with(py, |st| st.timers.len() == 0) {
            return Ok(()); // and no clock read
        }
        let end_time = Self::loop_time(slf)? + this.clock_resolution;
        let mut garbage = Vec::new();
        this.state.with(py, |st| {
            while let Some(timer) = st.timers.pop_due(end_time) {
                let timer = timer.into_bound(py);
                if timer.as_super().get().is_cancelled() {
                    st.timers.note_popped_cancelled();
                    garbage.push(timer.unbind());
                } else {
                    // Its context is what running it reads first (see prefetch.rs).
                    timer.as_super().get().prefetch_context();
                    st.stats
                        .note_timer_lag(end_time - this.clock_resolution - timer.get().deadline());
                    st.ready.push_back(timer.into_super().unbind());
                }
            }
        });
        release(garbage);
        Ok(())
    }

    /// Runs the callbacks that are ready now; those they schedule wait for
    /// the next iteration.
    fn run_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let ntodo = this.state.with(py, |st| st.ready.len());
        for _ in 0..ntodo {
            // Two steps ahead: the handle after next, and the context of the
            // next one (whose object the previous turn asked for already).
            let Some(handle) = this.state.with(py, |st| {
                let handle = st.ready.pop_front();
                if let Some(next) = st.ready.front() {
                    next.get().prefetch_context();
                }
                if let Some(after) = st.ready.get(1) {
                    crate::prefetch::object(after.as_ptr());
                }
                handle
            }) else {
                break;
            };
            let handle = handle.into_bound(py);
            if handle.get().is_cancelled() {
                continue;
            }
            this.progress.enter(handle.as_ptr());
            let started = if this.tracing.load(Relaxed) {
                clock::monotonic()
            } else {
                0.0
            };
            let outcome = if this.debug() {
                Self::run_handle_debug(slf, &handle)
            } else {
                Handle::run(&handle)
            };
            this.progress.leave();
            outcome?;
            if this.tracing.load(Relaxed) {
                this.trace(py, handle.as_any(), started)?;
            }
            if !this.debug() {
                handle.get().release_after_run(py);
            }
        }
        Ok(())
    }

    /// Debug mode: remember the running handle and report it when it takes
    /// longer than `slow_callback_duration`, as asyncio does.
    fn run_handle_debug(slf: &Bound<'_, Self>, handle: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        drop(
            this.current_handle
                .replace(py, Some(handle.clone().unbind())),
        );
        let started = clock::monotonic();
        let outcome = Handle::run(handle);
        let elapsed = clock::monotonic() - started;
        drop(this.current_handle.replace(py, None));
        outcome?;
        let threshold: f64 = slf
            .getattr(intern!(py, "slow_callback_duration"))?
            .extract()?;
        if elapsed >= threshold {
            py_helpers::log_slow_callback_fn(py)?.call1((handle, elapsed))?;
        }
        Ok(())
    }

    // ---- transports ----------------------------------------------------

    /// Registers a native handle (a transport's, a socket waiter's) for
    /// `fd`, cancelling the one it replaces, as `add_reader` does; re-adding
    /// the same handle does not cancel it. A registration left stale by an
    /// fd closed behind the registry's back is replaced, as the new fd is
    /// live.
    pub(crate) fn watch(
        &self,
        py: Python<'_>,
        fd: RawFd,
        direction: Direction,
        handle: &Py<Handle>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let mut garbage = Vec::new();
        let result = self.state.with(py, |st| {
            st.fds.add_replacing_stale(
                &self.poller,
                fd,
                direction,
                handle.clone_ref(py),
                &mut garbage,
            )
        });
        release(garbage);
        match result {
            Ok(Some(replaced)) if !replaced.is(handle) => Handle::cancel_base(replaced.bind(py)),
            Ok(_) => Ok(()),
            Err(err) => Err(os_error(&err)),
        }
    }

    /// Stops watching `fd` in one direction, leaving the handle usable.
    pub(crate) fn unwatch(&self, py: Python<'_>, fd: RawFd, direction: Direction) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            return Ok(());
        }
        let mut garbage = Vec::new();
        let result = self.state.with(py, |st| {
            st.fds.remove(&self.poller, fd, direction, &mut garbage)
        });
        release(garbage);
        result.map(drop).map_err(|err| os_error(&err))
    }

    /// Marks `fd` as used by `transport` (held weakly), or frees it.
    pub(crate) fn set_fd_transport(
        &self,
        py: Python<'_>,
        fd: RawFd,
        transport: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let weak = match transport {
            Some(t) => Some(pyo3::types::PyWeakrefReference::new(t)?.into_any().unbind()),
            None => None,
        };
        let previous = self.state.with(py, |st| st.fds.set_transport(fd, weak));
        drop(previous);
        Ok(())
    }

    /// Frees `fd` if `owner` (or a transport already gone) holds it; a
    /// newer transport on the same fd number keeps it.
    pub(crate) fn release_fd_transport(&self, py: Python<'_>, fd: RawFd, owner: &Bound<'_, PyAny>) {
        let previous = self.state.with(py, |st| {
            st.fds.remove_transport_if(fd, |weak| {
                // Upgrading a weak reference runs no Python code.
                match weak.bind(py).cast::<pyo3::types::PyWeakrefReference>() {
                    Ok(weak) => weak.upgrade().is_none_or(|target| target.is(owner)),
                    Err(_) => true,
                }
            })
        });
        drop(previous);
    }

    /// The native object behind the fd's reader or writer, if any.
    pub(crate) fn fd_callback_target<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        direction: Direction,
    ) -> Option<Bound<'py, PyAny>> {
        let handle = self.state.with(py, |st| {
            st.fds.handle(fd, direction).map(|h| h.clone_ref(py))
        })?;
        handle.get().native_target(py)
    }

    /// Whether `fd`'s reader is still `target`'s native callback: not
    /// removed (by pausing or closing) or replaced since it was queued.
    pub(crate) fn reads_for(&self, py: Python<'_>, fd: RawFd, target: &Bound<'_, PyAny>) -> bool {
        self.state.with(py, |st| {
            st.fds
                .handle(fd, Direction::Read)
                .is_some_and(|h| h.get().is_native_for(py, target))
        })
    }

    /// Parks the fd's reader (see `FdRegistry`), or makes it active again.
    pub(crate) fn set_reader_parked(&self, py: Python<'_>, fd: RawFd, parked: bool) {
        self.state.with(py, |st| st.fds.set_parked(fd, parked));
    }

    /// asyncio's `_ensure_fd_no_transport`: a live transport's fd cannot
    /// take plain reader/writer callbacks.
    pub(crate) fn ensure_fd_no_transport(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let raw = Self::raw_fd(fileobj)?;
        let Ok(fd) = raw.extract::<RawFd>() else {
            return Ok(());
        };
        let Some(weak) = self.state.with(py, |st| st.fds.transport(py, fd)) else {
            return Ok(());
        };
        let transport = weak.bind(py).call0()?;
        if transport.is_none()
            || transport
                .call_method0(intern!(py, "is_closing"))?
                .is_truthy()?
        {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "File descriptor {} is used by transport {}",
            fileobj.repr()?,
            transport.repr()?
        )))
    }

    // ---- fd callbacks --------------------------------------------------

    /// The fd number the way asyncio's `_ensure_fd_no_transport` reads it:
    /// an int as is, otherwise `int(obj.fileno())`. Range checks come
    /// later, where asyncio makes them.
    fn raw_fd<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if obj.is_instance_of::<PyInt>() {
            return Ok(obj.clone());
        }
        let py = obj.py();
        let number = obj
            .call_method0(intern!(py, "fileno"))
            .and_then(|n| py.get_type::<PyInt>().call1((n,)));
        number.map_err(|err| {
            let wrong_type = err.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                || err.is_instance_of::<PyTypeError>(py)
                || err.is_instance_of::<PyValueError>(py);
            if wrong_type {
                let shown = obj.repr().map(|r| r.to_string()).unwrap_or_default();
                PyValueError::new_err(format!("Invalid file object: {shown}"))
            } else {
                err
            }
        })
    }

    /// Splits an fd int into "negative" (asyncio's ValueError) and the fd
    /// as a C int, if it fits one.
    fn classify_fd(raw: &Bound<'_, PyAny>) -> PyResult<(bool, Option<RawFd>)> {
        Ok(match raw.extract::<i64>() {
            Ok(value) => (value < 0, RawFd::try_from(value).ok()),
            Err(_) => (raw.lt(0)?, None),
        })
    }

    fn invalid_fd(raw: &Bound<'_, PyAny>) -> PyErr {
        let shown = raw.str().map(|s| s.to_string()).unwrap_or_default();
        PyValueError::new_err(format!("Invalid file descriptor: {shown}"))
    }

    /// The fd to register: non-negative, and small enough for the poller
    /// (asyncio's epoll.register raises the same OverflowError).
    fn fd_to_register(raw: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        match Self::classify_fd(raw)? {
            (true, _) => Err(Self::invalid_fd(raw)),
            (false, Some(fd)) => Ok(fd),
            (false, None) => Err(PyOverflowError::new_err(
                "Python int too large to convert to C int",
            )),
        }
    }

    fn add_fd_callback(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        direction: Direction,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        let raw = Self::raw_fd(fileobj)?;
        this.check_closed()?;
        let fd = Self::fd_to_register(&raw)?;
        let handle = Handle::into_object(
            py,
            Self::new_handle(slf, callback, args, None, false, false)?,
        )?;
        let registered_obj = (!fileobj.is_instance_of::<PyInt>()).then(|| fileobj.clone().unbind());
        let mut garbage = Vec::new();
        let result = this.state.with(py, |st| {
            st.fds.add(
                &this.poller,
                fd,
                direction,
                handle.clone_ref(py),
                registered_obj,
                &mut garbage,
            )
        });
        release(garbage);
        match result {
            Ok(Some(replaced)) => Handle::cancel_base(replaced.bind(py))?,
            Ok(None) => {}
            Err(err) => return Err(os_error(&err)),
        }
        Ok(handle)
    }

    fn remove_fd_callback(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        direction: Direction,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let raw = Self::raw_fd(fileobj)?;
        if this.closed.load(Relaxed) {
            return Ok(false);
        }
        let fd = match Self::classify_fd(&raw)? {
            (false, Some(fd)) => fd,
            // Too large for an fd: it cannot be registered.
            (false, None) => return Ok(false),
            (true, _) => match this.state.with(py, |st| st.fds.find_fileobj(fileobj)) {
                Some(fd) => fd,
                None => return Err(Self::invalid_fd(&raw)),
            },
        };
        // A sock_recv/sock_sendall waiter left behind by a finished or
        // cancelled call is no callback as far as the program knows.
        let idle_waiter = match this.fd_callback_target(py, fd, direction) {
            Some(target) => sock_ops::is_idle_waiter(&target)?,
            None => false,
        };
        let mut garbage = Vec::new();
        let result = this.state.with(py, |st| {
            st.fds.remove(&this.poller, fd, direction, &mut garbage)
        });
        release(garbage);
        match result {
            Ok(Some(removed)) => {
                Handle::cancel_base(removed.bind(py))?;
                Ok(!idle_waiter)
            }
            Ok(None) => Ok(false),
            Err(err) => Err(os_error(&err)),
        }
    }
}

/// `call_later`'s `self.time() + delay`, with asyncio's TypeError for
/// values that cannot be added to a float. The sum is computed in Python
/// for any delay but a float or an int, and kept as the timer's `when()`
/// when it is not a float either (a numpy float64 delay gives a float64
/// deadline on asyncio, which `when()` returns).
fn deadline_after<'py>(
    py: Python<'py>,
    now: f64,
    delay: &Bound<'py, PyAny>,
) -> PyResult<(f64, Option<Bound<'py, PyAny>>)> {
    // 3.10 has no explicit check: adding None to the clock fails instead.
    if delay.is_none() && py.version_info() >= (3, 11) {
        return Err(PyTypeError::new_err("delay must not be None"));
    }
    if delay.is_exact_instance_of::<PyFloat>() || delay.is_exact_instance_of::<pyo3::types::PyInt>()
    {
        if let Ok(seconds) = delay.extract::<f64>() {
            return Ok((now + seconds, None));
        }
    }
    let sum = PyFloat::new(py, now).add(delay)?;
    let at: f64 = sum.extract()?;
    let given = (!sum.is_exact_instance_of::<PyFloat>()).then_some(sum);
    Ok((at, given))
}

/// The deadline `call_at` was given: as a float for the timer heap, and the
/// object itself unless it is a float, which asyncio keeps and `when()`
/// returns (`10`, not `10.0`; a Fraction or Decimal as it was given).
fn deadline_at<'py>(when: &Bound<'py, PyAny>) -> PyResult<(f64, Option<Bound<'py, PyAny>>)> {
    if when.is_none() {
        // 3.10's TimerHandle asserts instead of raising TypeError.
        if when.py().version_info() < (3, 11) {
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        return Err(PyTypeError::new_err("when cannot be None"));
    }
    let at: f64 = when.extract()?;
    let given = (!when.is_exact_instance_of::<PyFloat>()).then(|| when.clone());
    Ok((at, given))
}

#[pymethods]
impl LoopCore {
    #[new]
    fn new() -> PyResult<Self> {
        let poller = Poller::new().map_err(|e| os_error(&e))?;
        let waker = Waker::new().map_err(|e| os_error(&e))?;
        poller
            .add(waker.read_fd(), WAKER_TOKEN, Interest::READ)
            .map_err(|e| os_error(&e))?;
        poller
            .add_edge_triggered_read(waker.event_fd(), THREAD_WAKE_TOKEN)
            .map_err(|e| os_error(&e))?;
        Ok(LoopCore {
            state: GilCell::new(LoopState::default()),
            poller,
            waker,
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            debug_value: GilCell::new(None),
            sleeping: AtomicBool::new(false),
            thread_id: AtomicU64::new(0),
            loop_cpu: AtomicI64::new(-1),
            poll_found_events: AtomicBool::new(false),
            sleeps_before_looking: AtomicU32::new(0),
            iterations: AtomicU64::new(0),
            current_handle: GilCell::new(None),
            progress: Progress::default(),
            tracer: GilCell::new(None),
            future_kwargs: GilCell::new(None),
            bound_call_soon: GilCell::new(None),
            tracing: AtomicBool::new(false),
            clock_resolution: clock::resolution(),
            python_clock: AtomicBool::new(false),
        })
    }

    // ---- scheduling ----------------------------------------------------

    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            this.check_thread()?;
            py_helpers::check_callback(py, &callback, "call_soon")?;
        }
        let handle = Self::new_one_shot(slf, callback, args, context)?;
        this.push_ready(py, &handle);
        Ok(handle)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    pub(crate) fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            py_helpers::check_callback(py, &callback, "call_soon_threadsafe")?;
        }
        let handle = Self::new_one_shot(slf, callback, args, context)?;
        let queued = this.push_ready(py, &handle);
        this.wake_if_sleeping();
        if queued % YIELD_EVERY_QUEUED == 0 {
            this.let_the_loop_catch_up(py);
        }
        Ok(handle)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    pub(crate) fn call_later(
        slf: &Bound<'_, Self>,
        delay: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = deadline_after(slf.py(), Self::loop_time(slf)?, delay)?;
        Self::schedule_at(slf, when, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    pub(crate) fn call_at(
        slf: &Bound<'_, Self>,
        when: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = deadline_at(when)?;
        Self::schedule_at(slf, when, callback, args, context)
    }

    /// A handle that is not queued; `_add_callback` queues it, as many
    /// times as needed (signal handlers re-queue the same handle).
    #[pyo3(signature = (callback, *args))]
    fn _make_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Handle::into_object(
            slf.py(),
            Self::new_handle(slf, callback, args, None, false, false)?,
        )
    }

    fn _add_callback(&self, py: Python<'_>, handle: &Bound<'_, Handle>) {
        if !handle.get().is_cancelled() {
            self.push_ready(py, &handle.clone().unbind());
        }
    }

    /// A new asyncio.Future bound to this loop (CPython's C Future; made
    /// here rather than in Python to save a Python-level call per future).
    pub(crate) fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cached = this
            .future_kwargs
            .with(py, |k| k.as_ref().map(|k| k.clone_ref(py)));
        let kwargs = match cached {
            Some(kwargs) => kwargs.into_bound(py),
            None => {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item(intern!(py, "loop"), slf)?;
                drop(
                    this.future_kwargs
                        .replace(py, Some(kwargs.clone().unbind())),
                );
                kwargs
            }
        };
        py_helpers::future_type(py)?.call((), Some(&kwargs))
    }

    /// Binds `call_soon` once for this run (`run_forever` calls it first).
    fn _cache_call_soon(slf: &Bound<'_, Self>) -> PyResult<()> {
        let bound = crate::bound_call_soon::bind(slf)?;
        let old = slf
            .get()
            .bound_call_soon
            .replace(slf.py(), Some(bound.unbind()));
        drop(old);
        Ok(())
    }

    /// Drops the cached bound method (`run_forever` calls it last).
    fn _uncache_call_soon(&self, py: Python<'_>) {
        drop(self.bound_call_soon.take(py));
    }

    pub(crate) fn time(&self) -> f64 {
        clock::monotonic()
    }

    /// Whether timers follow `self.time()` read through Python (see
    /// `python_clock`); EventLoop sets it when `time` is replaced.
    fn _set_python_clock(&self, on: bool) {
        self.python_clock.store(on, Relaxed);
    }

    // ---- socket operations (plain sockets; see sock_ops.rs) -------------

    /// bytes received at once, a future, or None for the Python path.
    fn _sock_recv_native<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        n: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        sock_ops::sock_recv(slf, sock, n)
    }

    /// None once everything is sent, a future, or NotImplemented for the
    /// Python path.
    fn _sock_sendall_native<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        data: &Bound<'py, PyBytes>,
    ) -> PyResult<Bound<'py, PyAny>> {
        sock_ops::sock_sendall(slf, sock, data)
    }

    /// Wakes the loop if it sleeps in the poller (asyncio's internal
    /// `_write_to_self`, which some libraries call directly).
    fn _write_to_self(&self) {
        self.waker.wake();
    }

    // ---- state ---------------------------------------------------------

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.thread_id.load(Relaxed) != 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    pub(crate) fn get_debug<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.debug_value(py)
    }

    #[getter(_debug)]
    fn debug_attr<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.debug_value(py)
    }

    /// Any truth value, as asyncio stores whatever `set_debug` is given.
    #[setter(_debug)]
    fn set_debug_attr(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = enabled.py();
        let truth = enabled.is_truthy()?;
        let kept = (!enabled.is_instance_of::<PyBool>()).then(|| enabled.clone().unbind());
        let previous = self
            .debug_value
            .with(py, |value| std::mem::replace(value, kept));
        self.debug.store(truth, Relaxed);
        drop(previous);
        Ok(())
    }

    #[getter(_stopping)]
    fn stopping_flag(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping_flag(&self, value: bool) {
        self.stopping.store(value, Relaxed);
    }

    #[getter(_thread_id)]
    fn thread_id_attr(&self) -> Option<u64> {
        match self.thread_id.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    #[setter(_thread_id)]
    fn set_thread_id_attr(&self, value: Option<u64>) {
        // Set by the thread that runs the loop, as it starts (asyncio's
        // run_forever), so its CPU affinity is the loop thread's.
        let cpu = match value {
            Some(_) => cpu::sole_cpu().map_or(-1, |cpu| cpu as i64),
            None => -1,
        };
        self.loop_cpu.store(cpu, Relaxed);
        self.thread_id.store(value.unwrap_or(0), Relaxed);
    }

    #[getter(_current_handle)]
    fn current_handle_attr(&self, py: Python<'_>) -> Option<Py<Handle>> {
        self.current_handle
            .with(py, |h| h.as_ref().map(|h| h.clone_ref(py)))
    }

    #[getter(_clock_resolution)]
    fn clock_resolution_attr(&self) -> f64 {
        self.clock_resolution
    }

    /// The write end of the self-pipe, for `signal.set_wakeup_fd`.
    fn _wakeup_fd(&self) -> RawFd {
        self.waker.write_fd()
    }

    /// Counts for introspection and tests: (ready callbacks, timers,
    /// registered fds, iterations run).
    fn _native_counts(&self, py: Python<'_>) -> (usize, usize, usize, u64) {
        let (ready, timers, fds) = self.state.with(py, |st| {
            (st.ready.len(), st.timers.len(), st.fds.registered())
        });
        (ready, timers, fds, self.iterations.load(Relaxed))
    }

    /// Whether any callback is queued: the datagram transport reads on
    /// only while none is (see `_datagram.py`).
    fn _has_ready(&self, py: Python<'_>) -> bool {
        self.has_ready(py)
    }

    // ---- running -------------------------------------------------------

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once(slf)
    }

    /// Iterates until `stop()`; the Python `run_forever` wraps it with the
    /// bookkeeping (running-loop registration, asyncgen hooks).
    fn _run_forever_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let started = clock::monotonic();
        this.poll_found_events.store(false, Relaxed);
        this.state
            .with(slf.py(), |st| st.stats.running_since = Some(started));
        let outcome = loop {
            if let Err(err) = Self::run_once(slf) {
                break Err(err);
            }
            if this.stopping.load(Relaxed) {
                break Ok(());
            }
        };
        let ran = clock::monotonic() - started;
        this.state.with(slf.py(), |st| {
            st.stats.run_seconds += ran;
            st.stats.running_since = None;
        });
        outcome
    }

    /// (callbacks started, callbacks finished): they differ while a callback
    /// runs. Cheap enough for a watchdog thread to poll.
    fn _progress(&self) -> (u64, u64) {
        self.progress.counts()
    }

    /// Installs (or with None removes) the tracer: `tracer(handle, start,
    /// end)` after each callback, `tracer(None, start, end)` after each poll.
    fn _set_tracer(&self, py: Python<'_>, tracer: Option<Py<PyAny>>) {
        let tracer = tracer.filter(|t| !t.is_none(py));
        self.tracing.store(tracer.is_some(), Relaxed);
        drop(self.tracer.replace(py, tracer));
    }

    /// The handle running now, or None (for the blocking detector, which
    /// calls this from its own thread while the loop thread is blocked).
    fn _running_handle(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let ptr = self.progress.running()?;
        // SAFETY: the pointer is a live handle: the loop thread holds a
        // reference while it runs, and cannot finish it while we hold the
        // GIL.
        Some(unsafe { Bound::from_borrowed_ptr(py, ptr) }.unbind())
    }

    /// Raw figures for `loop.stats()`: iterations, callbacks run, polls
    /// and those that could block, seconds polling, seconds in
    /// run_forever, the timer-lag histogram (bounds and counts), callbacks
    /// ready, timers pending, fds registered.
    fn _native_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (ready, timers, fds, transports, poll, polls, run, hist) = self.state.with(py, |st| {
            (
                st.ready.len(),
                st.timers.len(),
                st.fds.registered(),
                st.fds.live_transports(py),
                st.stats.poll_seconds,
                (st.stats.polls, st.stats.sleeps),
                st.stats.run_seconds
                    + st.stats
                        .running_since
                        .map_or(0.0, |since| clock::monotonic() - since),
                st.stats.lag_histogram,
            )
        });
        let dict = pyo3::types::PyDict::new(py);
        dict.set_item("iterations", self.iterations.load(Relaxed))?;
        dict.set_item("callbacks", self.progress.counts().1)?;
        dict.set_item("poll_seconds", poll)?;
        dict.set_item("polls", polls.0)?;
        dict.set_item("sleeps", polls.1)?;
        dict.set_item("run_seconds", run)?;
        dict.set_item("lag_bounds", LAG_BOUNDS.to_vec())?;
        dict.set_item("lag_histogram", hist.to_vec())?;
        dict.set_item("ready", ready)?;
        dict.set_item("timers", timers)?;
        dict.set_item("fds", fds)?;
        dict.set_item("transports", transports)?;
        Ok(dict.into_any())
    }

    /// Releases the native resources; the Python `close` does the checks
    /// and the rest. Pending callbacks are dropped without running, as in
    /// asyncio.
    fn _close_native(&self, py: Python<'_>) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        let mut pending: Vec<Py<Handle>> = Vec::new();
        let mut garbage: Vec<Py<PyAny>> = Vec::new();
        self.state.with(py, |st| {
            pending.extend(st.ready.drain(..));
            pending.extend(
                st.timers
                    .drain()
                    .into_iter()
                    .map(|t| t.into_bound(py).into_super().unbind()),
            );
            st.fds.drain(&mut garbage);
        });
        // Handles kept out of the collector must not leave cycles behind.
        for handle in &pending {
            handle.get().release_unrun(py);
        }
        release(pending);
        release(garbage);
        self.poller.close();
        self.waker.close();
    }

    // ---- fd callbacks --------------------------------------------------

    /// Registers `callback(*args)` to run whenever `fd` is readable.
    #[pyo3(signature = (fd, callback, *args))]
    pub(crate) fn add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::add_fd_callback(slf, fd, Direction::Read, callback, args).map(drop)
    }

    /// Registers `callback(*args)` to run whenever `fd` is writable.
    #[pyo3(signature = (fd, callback, *args))]
    pub(crate) fn add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::add_fd_callback(slf, fd, Direction::Write, callback, args).map(drop)
    }

    /// `add_reader` returning the handle, for the loop's own socket
    /// operations (which check for transports themselves).
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, fd, Direction::Read, callback, args)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, fd, Direction::Write, callback, args)
    }

    /// Marks `fd` as used by a transport written in Python (held weakly),
    /// or frees it with None: plain fd callbacks are then refused on it.
    fn _set_fd_transport(
        &self,
        py: Python<'_>,
        fd: RawFd,
        transport: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.set_fd_transport(py, fd, transport.as_ref().filter(|t| !t.is_none()))
    }

    /// Refuses fds that a live transport of this loop uses.
    fn _ensure_fd_no_transport(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ensure_fd_no_transport(py, fd)
    }

    pub(crate) fn remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::remove_fd_callback(slf, fd, Direction::Read)
    }

    pub(crate) fn remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::remove_fd_callback(slf, fd, Direction::Write)
    }

    /// `remove_reader` without the transport check, as asyncio's own.
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_fd_callback(slf, fd, Direction::Read)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_fd_callback(slf, fd, Direction::Write)
    }

    // ---- garbage collection --------------------------------------------

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The visitor is the collector's C callback: it runs no Python code,
        // so visiting inside the borrow is safe.
        // SAFETY: the collector traverses with the GIL held; the token is
        // used only to reach the handles' Rust fields, never to call Python.
        let py = unsafe { Python::assume_attached() };
        self.state
            .try_with(|st| {
                for handle in st.ready.iter() {
                    Handle::visit_owned(handle.bind(py), &visit)?;
                }
                let mut outcome = Ok(());
                st.timers.for_each_handle(|h| {
                    if outcome.is_ok() {
                        outcome = Handle::visit_owned(h.bind(py).as_super(), &visit);
                    }
                });
                st.fds.for_each_object(|o| {
                    if outcome.is_ok() {
                        outcome = visit.call(o);
                    }
                });
                outcome
            })
            .unwrap_or(Ok(()))?;
        self.current_handle
            .try_with(|h| visit.call(h.as_ref()))
            .unwrap_or(Ok(()))?;
        self.tracer
            .try_with(|t| visit.call(t.as_ref()))
            .unwrap_or(Ok(()))?;
        self.future_kwargs
            .try_with(|k| visit.call(k.as_ref()))
            .unwrap_or(Ok(()))?;
        self.debug_value
            .try_with(|v| visit.call(v.as_ref()))
            .unwrap_or(Ok(()))?;
        self.bound_call_soon
            .try_with(|m| visit.call(m.as_ref()))
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.state.try_take() {
            let mut garbage: Vec<Py<PyAny>> = Vec::new();
            st.fds.drain(&mut garbage);
            drop(garbage);
            drop(st);
        }
        drop(self.current_handle.try_take());
        drop(self.tracer.try_take());
        drop(self.future_kwargs.try_take());
        drop(self.bound_call_soon.try_take());
        drop(self.debug_value.try_take());
    }
}

/// Whether the calling thread's state is the only thread state of the
/// only interpreter. A thread that waits for the GIL has one (a thread of
/// C code gets one before it asks), so then no other thread can be kept
/// waiting. Idle threads count too (an executor's workers), which errs on
/// the side of giving the GIL up. Other interpreters count too: before
/// 3.13 a thread of one sharing the GIL asks its own interpreter to drop
/// it, a request this loop's thread would never see while it kept finding
/// I/O (from 3.13 it would be served at the switch interval, as another
/// thread's is); ones with their own GIL are counted as well, to be safe.
fn alone_in_interpreter(_py: Python<'_>) -> bool {
    if cfg!(Py_GIL_DISABLED) {
        // A free-threaded build keeps the GIL on for this module (it is
        // declared gil_used), but other threads are not its only users
        // there: never keep it.
        return false;
    }
    // SAFETY: the GIL is held (the token), so the interpreter and the
    // caller's thread state exist. The lists are read without CPython's
    // internal lock: a thread state or an interpreter joining concurrently
    // may be missed for this one poll. CPython's threads (and C threads
    // through PyGILState_Release) leave the list holding the GIL; only
    // `PyThreadState_Delete` of another thread's cleared state may run
    // without it, and then the one pointer read from the head could come
    // from a just-freed block: it is compared, never followed.
    unsafe {
        let interp = ffi::PyInterpreterState_Get();
        if ffi::PyInterpreterState_Head() != interp
            || !ffi::PyInterpreterState_Next(interp).is_null()
        {
            return false;
        }
        let head = ffi::PyInterpreterState_ThreadHead(interp);
        !head.is_null() && ffi::PyThreadState_Next(head).is_null()
    }
}
