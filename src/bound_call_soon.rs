//! `call_soon` on the loop's class: a method descriptor that hands out the
//! running loop's one bound method instead of binding a new one per lookup.
//!
//! On CPython 3.10 and 3.11, C Futures and Tasks schedule with a context by
//! `getattr(loop, "call_soon")` and a call, so every Task step and Future
//! callback bound a fresh method object (an allocation the collector
//! counts). Putting a bound method in the loop's instance dict avoided that
//! (tasks doing sleep(0): +7-10%), but an instance attribute named
//! `call_soon` stops CPython from specializing the program's own
//! `loop.call_soon(...)` (and materializes the dict, which slows every other
//! attribute of the loop): the generic method lookup was 7% of the call_soon
//! row.
//!
//! So the class attribute is this descriptor. Python code calling
//! `loop.call_soon(...)` sees a method descriptor (the interpreter
//! specializes the lookup, then calls it with the loop first); `getattr`
//! gets the bound method cached while the loop runs (`LoopCore::
//! bound_call_soon`). Everything else (name, docstring, signature) is the
//! wrapped PyO3 method's.

use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use crate::event_loop::LoopCore;
use crate::method_descriptor::{new_method_descriptor, wrapped};

/// The wrapped descriptor, for binding a method to cache.
static WRAPPED: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// Calls are the wrapped descriptor's: `descr(loop, callback, ...)`.
unsafe extern "C" fn vectorcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: forwards CPython's own vectorcall arguments unchanged.
    unsafe { ffi::PyObject_Vectorcall(wrapped(slf), args, nargsf, kwnames) }
}

unsafe extern "C" fn descr_get(
    slf: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
    tp: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY (whole function): CPython calls tp_descr_get with the GIL held
    // and live (or null) arguments.
    unsafe {
        if obj.is_null() || obj == ffi::Py_None() {
            // Looked up on the class: the descriptor itself, as for a method.
            ffi::Py_INCREF(slf);
            return slf;
        }
        let py = Python::assume_attached();
        if let Ok(core) = Bound::from_borrowed_ptr(py, obj).cast_into::<LoopCore>() {
            if let Some(bound) = core.get().bound_call_soon(py) {
                return bound.into_ptr();
            }
        }
        let method = wrapped(slf);
        match (*ffi::Py_TYPE(method)).tp_descr_get {
            Some(get) => get(method, obj, tp),
            None => {
                PySystemError::new_err("call_soon is not a method").restore(py);
                std::ptr::null_mut()
            }
        }
    }
}

/// Wraps LoopCore's `call_soon` (after `fast_calls::install`); called once
/// from module init.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let core = LoopCore::type_object(py);
    let method = core.getattr("__dict__")?.get_item("call_soon")?;
    // Attributes (`__name__`, `__doc__`, `__text_signature__`, ...) are the
    // wrapped method's, so `inspect` sees the same method as before.
    let descriptor = new_method_descriptor(
        &method,
        c"ferroloop._core.cached_method",
        vectorcall,
        descr_get,
    )?;
    WRAPPED.store(method.as_ptr(), Relaxed);
    core.setattr("call_soon", descriptor)
}

/// The loop's `call_soon` bound to `core`, made with the wrapped method.
pub(crate) fn bind<'py>(core: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyAny>> {
    let method = WRAPPED.load(Relaxed);
    if method.is_null() {
        return Err(PySystemError::new_err("call_soon descriptor not installed"));
    }
    // SAFETY: set once by `install`, kept alive by the descriptor that the
    // class holds for the process.
    let method = unsafe { Bound::from_borrowed_ptr(core.py(), method) };
    method.call_method1("__get__", (core,))
}
