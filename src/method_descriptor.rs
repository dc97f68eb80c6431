//! Method descriptors written against CPython's C API: an object on a
//! class that the interpreter calls unbound, with the instance first
//! (`Py_TPFLAGS_METHOD_DESCRIPTOR`), through a vectorcall entry of the
//! caller's choosing, around a wrapped callable whose attributes (name,
//! docstring, signature, ...) and repr it shows as its own.
//!
//! `bound_call_soon.rs` (the loop's `call_soon`) and `datagram_sendto.rs`
//! (the datagram transport's `sendto`) are the two; each brings its
//! vectorcall and `__get__`, and this builds the type and the object.

use std::ffi::{c_int, c_void, CStr};

use pyo3::ffi;
use pyo3::prelude::*;

#[repr(C)]
struct MethodDescriptor {
    ob_base: ffi::PyObject,
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The wrapped callable (a new reference).
    wrapped: *mut ffi::PyObject,
    /// Weak references to the descriptor, as functions take them
    /// (`WeakMethod` of a bound method needs one).
    weaklist: *mut ffi::PyObject,
}

/// The callable `slf` wraps (a borrowed reference).
///
/// # Safety
/// `slf` must be an object made by `new_method_descriptor`.
pub(crate) unsafe fn wrapped(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the contract, `slf` is a MethodDescriptor with `wrapped`
    // set.
    unsafe { (*slf.cast::<MethodDescriptor>()).wrapped }
}

/// Attributes are the wrapped callable's.
unsafe extern "C" fn getattro(
    slf: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live arguments; only this type's objects get here.
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
        if !(*slf.cast::<MethodDescriptor>()).weaklist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        ffi::Py_XDECREF(wrapped(slf));
        ffi::PyObject_Free(slf.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// A new descriptor type named `name` with one object of it, wrapping
/// `callable`: calls go to `vectorcall`, lookups to `descr_get`.
pub(crate) fn new_method_descriptor<'py>(
    callable: &Bound<'py, PyAny>,
    name: &'static CStr,
    vectorcall: ffi::vectorcallfunc,
    descr_get: ffi::descrgetfunc,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let member = |name: &'static CStr, offset: usize| ffi::PyMemberDef {
        name: name.as_ptr(),
        type_code: ffi::Py_T_PYSSIZET,
        offset: offset as ffi::Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: std::ptr::null(),
    };
    let mut members = [
        member(
            c"__vectorcalloffset__",
            std::mem::offset_of!(MethodDescriptor, vectorcall),
        ),
        member(
            c"__weaklistoffset__",
            std::mem::offset_of!(MethodDescriptor, weaklist),
        ),
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
        name: name.as_ptr(),
        basicsize: std::mem::size_of::<MethodDescriptor>() as c_int,
        itemsize: 0,
        // A method descriptor (called unbound, with the instance first),
        // immutable (required for that specialization), and not
        // instantiable from Python.
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
        let obj = ffi::PyObject_Malloc(std::mem::size_of::<MethodDescriptor>())
            .cast::<MethodDescriptor>();
        if obj.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        std::ptr::write(
            obj,
            MethodDescriptor {
                // SAFETY: overwritten by PyObject_Init just below.
                ob_base: std::mem::zeroed(),
                vectorcall: Some(vectorcall),
                wrapped: callable.clone().into_ptr(),
                weaklist: std::ptr::null_mut(),
            },
        );
        let obj = ffi::PyObject_Init(obj.cast(), tp.as_ptr().cast());
        Ok(Bound::from_owned_ptr(py, obj))
    }
}
