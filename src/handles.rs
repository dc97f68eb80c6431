//! `Handle` and `TimerHandle`: what `call_soon`/`call_later` return, and what
//! the ready queue and timer heap hold.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyTuple};
use pyo3::PyTraverseError;

use crate::call::{call_in_context, copy_current_context, while_handling};
use crate::event_loop::LoopCore;
use crate::gil_cell::GilCell;
use crate::py_helpers;

/// A callback implemented in Rust: called with the object it belongs to
/// (a transport, a server), without building Python arguments.
pub(crate) type NativeFn = fn(&Bound<'_, PyAny>) -> PyResult<()>;

/// A native callback and the Python-visible method of its target that does
/// the same work; the name stands in for the callback in reprs and error
/// messages. Kept in a static so a handle holds one pointer to it.
pub(crate) struct NativeSpec {
    pub(crate) call: NativeFn,
    pub(crate) name: &'static str,
}

enum Callback {
    Python {
        func: Py<PyAny>,
        args: Py<PyTuple>,
    },
    Native {
        target: Py<PyAny>,
        spec: &'static NativeSpec,
    },
}

impl Callback {
    /// Drops the references with the GIL token in hand: a plain drop of a
    /// `Py` asks a thread-local whether the thread is attached, on every
    /// callback the loop runs.
    fn release(self, py: Python<'_>) {
        match self {
            Callback::Python { func, args } => {
                func.drop_ref(py);
                args.drop_ref(py);
            }
            Callback::Native { target, .. } => target.drop_ref(py),
        }
    }

    fn clone_ref(&self, py: Python<'_>) -> Callback {
        match self {
            Callback::Python { func, args } => Callback::Python {
                func: func.clone_ref(py),
                args: args.clone_ref(py),
            },
            Callback::Native { target, spec } => Callback::Native {
                target: target.clone_ref(py),
                spec,
            },
        }
    }

    /// The callable and arguments as Python sees them (asyncio's
    /// `Handle._callback` / `_args`).
    fn python_view<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        match self {
            Callback::Python { func, args } => Ok((func.bind(py).clone(), args.bind(py).clone())),
            Callback::Native { target, spec } => {
                Ok((target.bind(py).getattr(spec.name)?, PyTuple::empty(py)))
            }
        }
    }
}

/// A scheduled callback, as asyncio.Handle: cancellable, run once from the
/// ready queue (or once per readiness report, for fd readers and writers).
#[pyclass(module = "ferroloop._core", subclass, frozen, weakref)]
pub struct Handle {
    /// Cleared on cancel so a cancelled handle stops keeping its callback
    /// (and whatever the callback references) alive.
    callback: GilCell<Option<Callback>>,
    /// Released by hand in `Drop` (see there).
    context: ManuallyDrop<Py<PyAny>>,
    loop_: ManuallyDrop<Py<PyAny>>,
    cancelled: AtomicBool,
    /// Set only in debug mode; boxed so other handles pay one pointer.
    debug_info: GilCell<Option<Box<DebugInfo>>>,
    /// Made by call_soon/call_later & co: runs at most once. Such handles
    /// are kept out of the cyclic garbage collector (see `into_object`).
    one_shot: bool,
    /// `context` is a copy this handle made and took out of the collector.
    context_untracked: bool,
}

/// What debug mode keeps about a handle.
#[derive(Default)]
struct DebugInfo {
    /// Where the handle was made (asyncio's `_source_traceback`).
    source_traceback: Option<Py<PyAny>>,
    /// The repr frozen at cancel time, as asyncio does, so a slow-callback
    /// report can still name the callback.
    repr: Option<Py<PyAny>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY (whole function): a handle is dropped from its tp_dealloc,
        // or when making its object failed, with the GIL held either way;
        // each field is taken exactly once, here.
        unsafe {
            let context = ManuallyDrop::take(&mut self.context).into_ptr();
            if self.context_untracked && ffi::PyObject_GC_IsTracked(context) == 0 {
                // CPython's Context dealloc unlinks the object from the
                // collector's list without checking it is on one; it must be
                // tracked again before the last reference goes.
                ffi::PyObject_GC_Track(context.cast());
            }
            // Plain decrefs: dropping a `Py` would first ask a thread-local
            // whether the thread is attached, for every handle freed.
            ffi::Py_DECREF(context);
            ffi::Py_DECREF(ManuallyDrop::take(&mut self.loop_).into_ptr());
        }
    }
}

fn loop_debug(loop_: &Bound<'_, PyAny>) -> bool {
    match loop_.cast::<LoopCore>() {
        Ok(core) => core.get().debug(),
        Err(_) => false,
    }
}

impl Handle {
    /// `context=None` means a copy of the current context, as in asyncio.
    /// Inlined so the value is built where the new object takes it, not
    /// copied there through the stack (which stalled on every handle).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        py: Python<'_>,
        func: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        loop_: &Bound<'_, PyAny>,
        debug: bool,
        one_shot: bool,
        untrack_context: bool,
    ) -> PyResult<Handle> {
        let (context, copied) = match context {
            Some(ctx) if !ctx.is_none() => (ctx, false),
            _ => (copy_current_context(py)?, true),
        };
        let debug_info = if debug {
            Some(Box::new(DebugInfo {
                source_traceback: Some(py_helpers::source_traceback(py)?),
                repr: None,
            }))
        } else {
            None
        };
        // The copy is this handle's alone. A handle that will wait long (a
        // timer, a backlog of callbacks) takes it out of the collector's
        // sight like itself (see `into_object`), and tracks it again before
        // releasing it (see `Drop`). Done after the last step that can fail:
        // an untracked context must not be released any other way.
        let context_untracked = copied && one_shot && untrack_context;
        if context_untracked {
            Self::untrack(&context);
        }
        Ok(Handle {
            callback: GilCell::new(Some(Callback::Python {
                func: func.unbind(),
                args: args.unbind(),
            })),
            context: ManuallyDrop::new(context.unbind()),
            loop_: ManuallyDrop::new(loop_.clone().unbind()),
            cancelled: AtomicBool::new(false),
            debug_info: GilCell::new(debug_info),
            one_shot,
            context_untracked,
        })
    }

    /// A handle with nothing to run, for `handle_alloc::install` to find
    /// where PyO3 keeps a handle inside its object.
    pub(crate) fn probe(py: Python<'_>) -> Handle {
        Handle {
            callback: GilCell::new(None),
            context: ManuallyDrop::new(py.None()),
            loop_: ManuallyDrop::new(py.None()),
            cancelled: AtomicBool::new(false),
            debug_info: GilCell::new(None),
            one_shot: false,
            context_untracked: false,
        }
    }

    /// Makes a Python object of `handle`, visible to the cyclic garbage
    /// collector only if it must be.
    ///
    /// The loop makes a one-shot handle per call_soon, task step and timer;
    /// with the collector tracking each, a backlog of queued callbacks (a
    /// thread feeding call_soon_threadsafe) made collections rescan them all,
    /// costing more than the callbacks. Cycles through such a handle are
    /// broken by hand instead: its callback is dropped once it has run
    /// (`release_after_run`), when it is cancelled, and when the loop closes
    /// with it still pending. Persistent handles (fd callbacks, transports,
    /// signal handlers) and debug-mode handles stay collectable.
    pub(crate) fn into_object(py: Python<'_>, handle: Handle) -> PyResult<Py<Handle>> {
        let collectable = !handle.one_shot;
        let obj = crate::handle_alloc::new_handle(py, handle)?;
        Self::settle_tracking(obj.bind(py).as_any(), collectable);
        Ok(obj)
    }

    /// Tracks or untracks a new handle object. Handles are born untracked
    /// when `handle_alloc` made them, tracked otherwise.
    fn settle_tracking(obj: &Bound<'_, PyAny>, collectable: bool) {
        // The common case, a one-shot handle from our allocator, needs no
        // call into CPython at all.
        if !collectable && crate::handle_alloc::born_untracked(obj) {
            return;
        }
        // SAFETY: a live object of a GC type, GIL held; each call is made
        // only in the state that allows it.
        unsafe {
            let tracked = ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 1;
            if collectable && !tracked {
                ffi::PyObject_GC_Track(obj.as_ptr().cast());
            } else if !collectable && tracked {
                ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
            }
        }
    }

    /// Takes an object this handle owns alone (its context copy) out of the
    /// collector's sight.
    pub(crate) fn untrack(handle: &Bound<'_, PyAny>) {
        // SAFETY: a live object of a GC-enabled type, GIL held; untracking
        // a tracked object is always allowed.
        unsafe {
            if ffi::PyObject_GC_IsTracked(handle.as_ptr()) == 1 {
                ffi::PyObject_GC_UnTrack(handle.as_ptr().cast());
            }
        }
    }

    /// Visits every object this handle references, for the collector.
    fn visit_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&*self.context)?;
        self.visit_others(visit)
    }

    /// Everything `visit_contents` visits but the context.
    fn visit_others(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&*self.loop_)?;
        self.debug_info
            .try_with(|info| match info {
                Some(info) => {
                    visit.call(&info.source_traceback)?;
                    visit.call(&info.repr)
                }
                None => Ok(()),
            })
            .unwrap_or(Ok(()))?;
        self.callback
            .try_with(|cb| match cb {
                Some(Callback::Python { func, args }) => {
                    visit.call(func)?;
                    visit.call(args)
                }
                Some(Callback::Native { target, .. }) => visit.call(target),
                None => Ok(()),
            })
            .unwrap_or(Ok(()))
    }

    /// For `visit_owned`: a context copy this handle took out of the
    /// collector and holds alone is seen through, like the handle, so a
    /// context variable whose value refers back to the loop does not keep an
    /// abandoned loop alive.
    fn visit_owned_context(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        let ctx = self.context.as_ptr();
        // SAFETY: a live object we hold; GIL held during traverse.
        let sole_untracked =
            self.context_untracked && unsafe { crate::gc_visit::owned_alone_and_untracked(ctx) };
        if sole_untracked {
            crate::gc_visit::traverse_with(ctx, visit)
        } else {
            visit.call(&*self.context)
        }
    }

    /// Visits `handle` for an owner's `__traverse__`: the handle itself if
    /// the collector tracks it, or if anything besides this owner holds it;
    /// otherwise what it references, as if it were tracked.
    ///
    /// A queued one-shot handle is untracked (see `into_object`) and holds
    /// its loop, so visiting it alone would count that reference as coming
    /// from outside and keep an abandoned loop alive with all it queued.
    /// Seen through its only owner, the cycle is visible again. A handle
    /// someone else also holds (a timer the program kept), or one with a
    /// weak reference to it, is visited as is, which keeps it and what it
    /// references alive (see `gc_visit::owned_alone_and_untracked`).
    pub(crate) fn visit_owned(
        handle: &Bound<'_, Handle>,
        visit: &PyVisit<'_>,
    ) -> Result<(), PyTraverseError> {
        // SAFETY: the collector calls traverse with the GIL held, on live
        // objects.
        let sole_untracked = unsafe { crate::gc_visit::owned_alone_and_untracked(handle.as_ptr()) };
        if sole_untracked {
            let handle = handle.get();
            handle.visit_owned_context(visit)?;
            handle.visit_others(visit)
        } else {
            visit.call(handle.as_unbound())
        }
    }

    /// Drops the callback of a one-shot handle that has run (keeping
    /// `_callback`/`_args` would keep them alive, and an untracked handle
    /// in a cycle would never be collected).
    pub(crate) fn release_after_run(&self, py: Python<'_>) {
        if self.one_shot {
            if let Some(callback) = self.callback.take(py) {
                callback.release(py);
            }
        }
    }

    /// From the handle's tp_dealloc (`handle_alloc::dealloc`), which runs
    /// without PyO3's trampoline: releases what is still held through `Py`
    /// fields with the GIL token in hand. A plain `Py` drop outside any PyO3
    /// entry would only queue the decref in PyO3's pool, delaying the
    /// callback's finalization to some later call.
    pub(crate) fn release_held(&self, py: Python<'_>) {
        if let Some(Some(callback)) = self.callback.try_take() {
            callback.release(py);
        }
        if let Some(Some(info)) = self.debug_info.try_take() {
            let DebugInfo {
                source_traceback,
                repr,
            } = *info;
            for obj in [source_traceback, repr].into_iter().flatten() {
                obj.drop_ref(py);
            }
        }
    }

    /// At loop close: drops the callback of a handle that will never run.
    pub(crate) fn release_unrun(&self, py: Python<'_>) {
        if let Some(callback) = self.callback.take(py) {
            callback.release(py);
        }
    }

    /// A handle whose callback is `call(target)`, run in `context` (a
    /// Context object). Transports keep one per direction and queue it on
    /// every readiness report.
    pub(crate) fn native(
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        spec: &'static NativeSpec,
        context: &Bound<'_, PyAny>,
        loop_: &Bound<'_, PyAny>,
    ) -> PyResult<Py<Handle>> {
        Self::into_object(
            py,
            Handle {
                callback: GilCell::new(Some(Callback::Native {
                    target: target.clone().unbind(),
                    spec,
                })),
                context: ManuallyDrop::new(context.clone().unbind()),
                loop_: ManuallyDrop::new(loop_.clone().unbind()),
                cancelled: AtomicBool::new(false),
                debug_info: GilCell::new(None),
                one_shot: false,
                context_untracked: false,
            },
        )
    }

    /// The object a native callback belongs to (a transport, a socket
    /// waiter); None for Python callbacks and cancelled handles.
    pub(crate) fn native_target<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.callback.with(py, |cb| match cb {
            Some(Callback::Native { target, .. }) => Some(target.bind(py).clone()),
            _ => None,
        })
    }

    /// Whether this is the native callback of `target` (and not cancelled).
    pub(crate) fn is_native_for(&self, py: Python<'_>, target: &Bound<'_, PyAny>) -> bool {
        self.callback.with(
            py,
            |cb| matches!(cb, Some(Callback::Native { target: t, .. }) if t.is(target)),
        )
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    /// Starts loading this handle's context object, the first thing `run`
    /// reads through a pointer (see `prefetch`).
    #[inline]
    pub(crate) fn prefetch_context(&self) {
        crate::prefetch::object(self.context.as_ptr());
    }

    fn source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.debug_info.with(py, |info| {
            info.as_ref()
                .and_then(|i| i.source_traceback.as_ref().map(|t| t.clone_ref(py)))
        })
    }

    fn frozen_repr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.debug_info.with(py, |info| {
            info.as_ref()
                .and_then(|i| i.repr.as_ref().map(|r| r.clone_ref(py)))
        })
    }

    fn callback(&self, py: Python<'_>) -> Option<Callback> {
        self.callback
            .with(py, |cb| cb.as_ref().map(|c| c.clone_ref(py)))
    }

    fn callback_parts<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyTuple>)>> {
        self.callback(py).map(|c| c.python_view(py)).transpose()
    }

    pub(crate) fn cancel_base(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.cancelled.swap(true, Relaxed) {
            return Ok(());
        }
        if loop_debug(this.loop_.bind(py)) {
            let repr = slf.repr()?.into_any().unbind();
            let old = this.debug_info.with(py, |info| {
                info.get_or_insert_with(Box::default).repr.replace(repr)
            });
            drop(old);
        }
        // Dropped here, outside the cell: may run arbitrary finalizers.
        drop(this.callback.take(py));
        Ok(())
    }

    /// Runs the callback in its context, as asyncio's `Handle._run`: an
    /// exception goes to the loop's exception handler, except SystemExit and
    /// KeyboardInterrupt, which are returned so they stop the loop.
    pub(crate) fn run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match this.callback(py) {
            None => Ok(()),
            Some(Callback::Python { func, args }) => {
                let (func, args) = (func.into_bound(py), args.into_bound(py));
                match call_in_context(py, this.context.bind(py), &func, &args) {
                    Ok(()) => Ok(()),
                    Err(err) => Self::report(slf, err, &func, &args),
                }
            }
            Some(native @ Callback::Native { .. }) => {
                let Callback::Native { target, spec } = &native else {
                    return Ok(());
                };
                let context = this.context.bind(py);
                let outcome = crate::call::in_context(py, context, || (spec.call)(target.bind(py)));
                match outcome {
                    Ok(()) => Ok(()),
                    Err(err) => {
                        let (func, args) = native.python_view(py)?;
                        Self::report(slf, err, &func, &args)
                    }
                }
            }
        }
    }

    fn report(
        slf: &Bound<'_, Handle>,
        err: PyErr,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let this = slf.get();
        let loop_ = this.loop_.bind(py);
        let source = py_helpers::callback_source(py, func, args, loop_debug(loop_))?;
        let context = PyDict::new(py);
        context.set_item("message", format!("Exception in callback {source}"))?;
        let exc = err.into_value(py).into_bound(py).into_any();
        context.set_item("exception", &exc)?;
        context.set_item("handle", slf)?;
        if let Some(tb) = this.source_traceback(py) {
            if tb.bind(py).is_truthy()? {
                context.set_item("source_traceback", tb)?;
            }
        }
        while_handling(py, &exc, || {
            loop_.call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))
        })?;
        Ok(())
    }
}

#[pymethods]
impl Handle {
    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::cancel_base(slf)
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    pub(crate) fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    pub(crate) fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run(slf)
    }

    #[getter]
    fn _callback<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.callback_parts(py)?.map(|(f, _)| f))
    }

    #[getter]
    fn _args<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        Ok(self.callback_parts(py)?.map(|(_, a)| a))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback(py)
    }

    #[getter]
    fn _repr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.frozen_repr(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(frozen) = slf.get().frozen_repr(py) {
            return Ok(frozen);
        }
        Ok(py_helpers::handle_repr_fn(py)?.call1((slf,))?.unbind())
    }

    /// The parts of the repr, as asyncio's `Handle._repr_info()`.
    pub(crate) fn _repr_info(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Ok(py_helpers::handle_repr_info_fn(py)?.call1((slf,))?.unbind())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.visit_contents(&visit)
    }

    fn __clear__(&self) {
        // Only the callback can close a cycle through user objects; the
        // other references are to the loop and immutable values.
        if let Some(taken) = self.callback.try_take() {
            drop(taken);
        }
    }
}

/// A callback due at a point of the loop clock, as asyncio.TimerHandle.
#[pyclass(module = "ferroloop._core", extends = Handle, frozen)]
pub struct TimerHandle {
    when: f64,
    /// True while the timer sits in the loop's heap; only then does a
    /// cancellation count towards the heap clean-up threshold.
    scheduled: AtomicBool,
    /// The deadline as `call_at` was given it (or `call_later`'s sum), when
    /// it is not a float: asyncio keeps that object, so `when()` and the
    /// repr show `10`, not `10.0`. Released by hand in `Drop`.
    given: Option<Py<PyAny>>,
    /// Scheduling order, set when the timer enters the heap: timers due at
    /// the same time run in the order they were scheduled.
    seq: AtomicU64,
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        if let Some(given) = self.given.take() {
            // SAFETY: dropped from tp_dealloc (or a failed creation) with the
            // GIL held. A plain decref, as for the handle's own fields: a
            // dropped `Py` would ask PyO3's thread-local first.
            unsafe { ffi::Py_DECREF(given.into_ptr()) };
        }
    }
}

impl TimerHandle {
    /// A timer over `base`, collectable as `Handle::into_object` decides.
    pub(crate) fn create(
        py: Python<'_>,
        when: f64,
        given: Option<Bound<'_, PyAny>>,
        base: Handle,
    ) -> PyResult<Py<TimerHandle>> {
        let collectable = !base.one_shot;
        // Kept as a `Bound` until here: an error before this point (a closed
        // loop) releases it at once, not through PyO3's deferred pool.
        let mut value = Self::new(when);
        value.given = given.map(Bound::unbind);
        let obj = crate::handle_alloc::new_timer(py, base, value)?;
        Handle::settle_tracking(obj.bind(py).as_any(), collectable);
        Ok(obj)
    }

    pub(crate) fn new(when: f64) -> TimerHandle {
        TimerHandle {
            when,
            scheduled: AtomicBool::new(false),
            given: None,
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Relaxed)
    }

    pub(crate) fn set_seq(&self, seq: u64) {
        self.seq.store(seq, Relaxed);
    }

    pub(crate) fn deadline(&self) -> f64 {
        self.when
    }

    pub(crate) fn set_scheduled(&self, value: bool) {
        self.scheduled.store(value, Relaxed);
    }

    fn same_as(slf: &Bound<'_, Self>, other: &Bound<'_, TimerHandle>) -> PyResult<bool> {
        let (a, b) = (slf.as_super().get(), other.as_super().get());
        if slf.get().when != other.get().when || a.is_cancelled() != b.is_cancelled() {
            return Ok(false);
        }
        let py = slf.py();
        match (a.callback_parts(py)?, b.callback_parts(py)?) {
            (None, None) => Ok(true),
            (Some((fa, aa)), Some((fb, ab))) => Ok(fa.eq(fb)? && aa.eq(ab)?),
            _ => Ok(false),
        }
    }
}

#[pymethods]
impl TimerHandle {
    pub(crate) fn when<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.given {
            Some(given) => given.bind(py).clone(),
            None => PyFloat::new(py, self.when).into_any(),
        }
    }

    #[getter]
    fn _when<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.when(py)
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Relaxed)
    }

    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let base = slf.as_super();
        if !base.get().is_cancelled() && slf.get().scheduled.load(Relaxed) {
            if let Ok(core) = base.get().loop_.bind(py).cast::<LoopCore>() {
                core.get().timer_cancelled(py);
            }
        }
        Handle::cancel_base(base)
    }

    /// The parts of the repr. asyncio's TimerHandle overrides this method
    /// (to add the deadline), so a wrong call to it names TimerHandle.
    pub(crate) fn _repr_info(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Handle::_repr_info(slf.as_super())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.when(py).hash()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when, other.get().when);
        let result = match op {
            CompareOp::Lt => a < b,
            CompareOp::Gt => a > b,
            CompareOp::Le => a < b || Self::same_as(slf, other)?,
            CompareOp::Ge => a > b || Self::same_as(slf, other)?,
            CompareOp::Eq => Self::same_as(slf, other)?,
            CompareOp::Ne => !Self::same_as(slf, other)?,
        };
        Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
    }
}
