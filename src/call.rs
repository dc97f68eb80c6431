//! Calling a Python callable inside a contextvars Context, without the
//! `Context.run` method call asyncio's Handle pays for.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `context.run(func, *args)`, with the result discarded.
///
/// Entering an already-entered context fails with the same RuntimeError
/// `Context.run` raises.
pub fn call_in_context(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    // SAFETY: all pointers are live for the duration of the call (the caller
    // holds references to `context`, `func` and `args`); the tuple's item
    // array is valid for its length.
    unsafe {
        if ffi::PyContext_Enter(context.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        let nargs = ffi::PyTuple_GET_SIZE(args.as_ptr()) as usize;
        let items = (*args.as_ptr().cast::<ffi::PyTupleObject>())
            .ob_item
            .as_ptr();
        let result = ffi::PyObject_Vectorcall(func.as_ptr(), items, nargs, std::ptr::null_mut());
        let outcome = if result.is_null() {
            Err(PyErr::fetch(py))
        } else {
            ffi::Py_DECREF(result);
            Ok(())
        };
        if ffi::PyContext_Exit(context.as_ptr()) != 0 {
            let exit_err = PyErr::fetch(py);
            return outcome.and(Err(exit_err));
        }
        outcome
    }
}

/// `contextvars.copy_context()`.
pub fn copy_current_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }
}
