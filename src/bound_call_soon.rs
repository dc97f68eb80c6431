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

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use crate::event_loop::LoopCore;

#[repr(C)]
struct CachedMethod {
    ob_base: ffi::PyObject,
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The wrapped method descriptor (a new reference).
    method: *mut ffi::PyObject,
}

/// The wrapped descriptor, for binding a method to cache.
static WRAPPED: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

unsafe fn wrapped(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a CachedMethod (only its own slots call this), made
    // by `install` with `method` set.
    unsafe { (*slf.cast::<CachedMethod>()).method }
}

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

/// Attributes (`__name__`, `__doc__`, `__text_signature__`, ...) are the
/// wrapped method's, so `inspect` sees the same method as before.
unsafe extern "C" fn getattro(
    slf: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live arguments.
    unsafe { ffi::PyObject_GetAttr(wrapped(slf), name) }
}

unsafe extern "C" fn repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live argument.
    unsafe { ffi::PyObject_Repr(wrapped(slf)) }
}

unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: the last reference is gone; the type is a heap type, which
    // each instance holds a reference to.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        ffi::Py_XDECREF(wrapped(slf));
        ffi::PyObject_Free(slf.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Wraps LoopCore's `call_soon` (after `fast_calls::install`); called once
/// from module init.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let core = LoopCore::type_object(py);
    let method = core.getattr("__dict__")?.get_item("call_soon")?;
    let mut members = [
        ffi::PyMemberDef {
            name: c"__vectorcalloffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: std::mem::offset_of!(CachedMethod, vectorcall) as ffi::Py_ssize_t,
            flags: ffi::Py_READONLY,
            doc: std::ptr::null(),
        },
        // SAFETY: an all-zero PyMemberDef is the list's terminator.
        unsafe { std::mem::zeroed() },
    ];
    let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
    let mut slots = [
        slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        slot(ffi::Py_tp_descr_get, descr_get as *mut c_void),
        slot(ffi::Py_tp_call, ffi::PyVectorcall_Call as *mut c_void),
        slot(ffi::Py_tp_getattro, getattro as *mut c_void),
        slot(ffi::Py_tp_repr, repr as *mut c_void),
        slot(ffi::Py_tp_members, members.as_mut_ptr().cast()),
        slot(0, std::ptr::null_mut()),
    ];
    let mut spec = ffi::PyType_Spec {
        name: c"ferroloop._core.cached_method".as_ptr(),
        basicsize: std::mem::size_of::<CachedMethod>() as c_int,
        itemsize: 0,
        // A method descriptor (the interpreter calls it unbound, with the
        // loop first), immutable (required for that specialization), and
        // not instantiable from Python.
        flags: (ffi::Py_TPFLAGS_DEFAULT
            | ffi::Py_TPFLAGS_METHOD_DESCRIPTOR
            | ffi::Py_TPFLAGS_HAVE_VECTORCALL
            | ffi::Py_TPFLAGS_IMMUTABLETYPE
            | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: GIL held; CPython copies what it keeps of the spec, slots and
    // members into the new type. The object is written in full, then given
    // its header by PyObject_Init.
    unsafe {
        let tp = Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))?;
        let tp_ptr = tp.as_ptr().cast::<ffi::PyTypeObject>();
        let obj = ffi::PyObject_Malloc(std::mem::size_of::<CachedMethod>()).cast::<CachedMethod>();
        if obj.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        std::ptr::write(
            obj,
            CachedMethod {
                // SAFETY: overwritten by PyObject_Init just below.
                ob_base: std::mem::zeroed(),
                vectorcall: Some(vectorcall),
                method: method.clone().into_ptr(),
            },
        );
        let obj = ffi::PyObject_Init(obj.cast(), tp_ptr);
        let obj = Bound::from_owned_ptr(py, obj);
        WRAPPED.store(method.as_ptr(), Relaxed);
        core.setattr("call_soon", obj)
    }
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
