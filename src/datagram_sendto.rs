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
//! name, docstring and signature through the attributes the descriptor
//! forwards (`method_descriptor.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::datagram_io::send_fast;
use crate::method_descriptor::{new_method_descriptor, wrapped};

extern "C" {
    // CPython's C API (every version), not exported by PyO3: a bound
    // method object, `types.MethodType(func, obj)`.
    fn PyMethod_New(func: *mut ffi::PyObject, obj: *mut ffi::PyObject) -> *mut ffi::PyObject;
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
        ffi::PyObject_Vectorcall(wrapped(slf), args, nargsf, kwnames)
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

/// The descriptor over `method` (the transport class's Python `sendto`).
#[pyfunction]
pub(crate) fn datagram_sendto<'py>(method: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    new_method_descriptor(
        method,
        c"ferroloop._core.datagram_sendto",
        vectorcall,
        descr_get,
    )
}
