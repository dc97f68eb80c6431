//! The datagram transport's `sendto`: a method descriptor over the Python
//! method, set on the transport's class by `_datagram.py`.
//!
//! A call `transport.sendto(data, addr)` reaches it as a method call (the
//! interpreter passes the transport first, binding nothing): what asyncio's
//! method would send at once goes out natively (`datagram_io::send_fast`),
//! anything else goes to the Python method with the same arguments.
//! Looked up without a call, it gives a real bound method, whose calls come
//! back here; so `transport.sendto` keeps the transport alive, compares and
//! hashes as a bound method does, and `inspect` finds the Python method's
//! name, docstring and signature through the attributes this forwards.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::datagram_io::send_fast;

extern "C" {
    // CPython's C API (every version), not exported by PyO3: a bound
    // method object, `types.MethodType(func, obj)`.
    fn PyMethod_New(func: *mut ffi::PyObject, obj: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

#[repr(C)]
struct SendtoDescriptor {
    ob_base: ffi::PyObject,
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The Python method (a new reference).
    method: *mut ffi::PyObject,
    /// Weak references to it, as functions take them (`WeakMethod` of a
    /// bound `sendto` needs one).
    weaklist: *mut ffi::PyObject,
}

unsafe fn method_of(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a SendtoDescriptor (only its own slots call this),
    // made by `datagram_sendto` with `method` set.
    unsafe { (*slf.cast::<SendtoDescriptor>()).method }
}

/// `descriptor(transport, data[, addr])`.
unsafe extern "C" fn vectorcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY (whole function): CPython calls with the GIL held and `nargs`
    // live arguments at `args`.
    unsafe {
        let nargs = ffi::PyVectorcall_NARGS(nargsf);
        if kwnames.is_null() && (nargs == 2 || nargs == 3) {
            let py = Python::assume_attached();
            let arg = |i: usize| Bound::from_borrowed_ptr(py, *args.add(i));
            let transport = arg(0);
            let data = arg(1);
            let addr = if nargs == 3 {
                arg(2)
            } else {
                py.None().into_bound(py)
            };
            // A panic must not unwind into the interpreter.
            let sent = catch_unwind(AssertUnwindSafe(|| send_fast(&transport, &data, &addr)))
                .unwrap_or_else(|_| Err(PyRuntimeError::new_err("panic in sendto")));
            match sent {
                Ok(true) => return py.None().into_ptr(),
                Ok(false) => {}
                Err(err) => {
                    err.restore(py);
                    return std::ptr::null_mut();
                }
            }
        }
        ffi::PyObject_Vectorcall(method_of(slf), args, nargsf, kwnames)
    }
}

unsafe extern "C" fn descr_get(
    slf: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
    _tp: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live (or null) arguments.
    unsafe {
        if obj.is_null() || obj == ffi::Py_None() {
            // Looked up on the class: the descriptor itself, as for a
            // method (and what a bound method's `__func__` is).
            ffi::Py_INCREF(slf);
            return slf;
        }
        PyMethod_New(slf, obj)
    }
}

/// Attributes are the Python method's (`__name__`, `__doc__`, `__code__`,
/// `__class__`, ...): `inspect` sees the function, signature included.
unsafe extern "C" fn getattro(
    slf: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live arguments.
    unsafe { ffi::PyObject_GetAttr(method_of(slf), name) }
}

unsafe extern "C" fn repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: GIL held, live argument.
    unsafe { ffi::PyObject_Repr(method_of(slf)) }
}

unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: the last reference is gone; the type is a heap type, which
    // each instance holds a reference to.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        if !(*slf.cast::<SendtoDescriptor>()).weaklist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        ffi::Py_XDECREF(method_of(slf));
        ffi::PyObject_Free(slf.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// The descriptor over `method` (the transport class's Python `sendto`).
#[pyfunction]
pub(crate) fn datagram_sendto<'py>(method: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = method.py();
    let mut members = [
        ffi::PyMemberDef {
            name: c"__vectorcalloffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: std::mem::offset_of!(SendtoDescriptor, vectorcall) as ffi::Py_ssize_t,
            flags: ffi::Py_READONLY,
            doc: std::ptr::null(),
        },
        ffi::PyMemberDef {
            name: c"__weaklistoffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: std::mem::offset_of!(SendtoDescriptor, weaklist) as ffi::Py_ssize_t,
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
        name: c"ferroloop._core.datagram_sendto".as_ptr(),
        basicsize: std::mem::size_of::<SendtoDescriptor>() as c_int,
        itemsize: 0,
        // A method descriptor (called unbound, with the transport first),
        // immutable (required for that), not instantiable from Python.
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
        let obj = ffi::PyObject_Malloc(std::mem::size_of::<SendtoDescriptor>())
            .cast::<SendtoDescriptor>();
        if obj.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        std::ptr::write(
            obj,
            SendtoDescriptor {
                // SAFETY: overwritten by PyObject_Init just below.
                ob_base: std::mem::zeroed(),
                vectorcall: Some(vectorcall),
                method: method.clone().into_ptr(),
                weaklist: std::ptr::null_mut(),
            },
        );
        let obj = ffi::PyObject_Init(obj.cast(), tp.as_ptr().cast());
        Ok(Bound::from_owned_ptr(py, obj))
    }
}
