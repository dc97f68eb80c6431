//! Calling a Python callable inside a contextvars Context, without the
//! `Context.run` method call asyncio's Handle pays for, and taking the
//! resulting exception as a plain Python error.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `context.run(func, *args)`, with the result discarded.
///
/// A real Context is entered through the C API; anything else is asked to
/// `run` the callback, as asyncio's Handle does (so a foreign object fails,
/// or works, exactly as it would there). Entering an already-entered context
/// fails with the RuntimeError `Context.run` raises.
pub fn call_in_context(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    // SAFETY: the pointers are live for the duration of the call (the caller
    // holds references to `context`, `func` and `args`), and the tuple's item
    // array is valid for its length.
    unsafe {
        if ffi::PyContext_CheckExact(context.as_ptr()) == 0 {
            return call_foreign_context(py, context, func, args);
        }
        if ffi::PyContext_Enter(context.as_ptr()) != 0 {
            return Err(take_raised(py));
        }
        let nargs = ffi::PyTuple_GET_SIZE(args.as_ptr()) as usize;
        let items = (*args.as_ptr().cast::<ffi::PyTupleObject>())
            .ob_item
            .as_ptr();
        let result = ffi::PyObject_Vectorcall(func.as_ptr(), items, nargs, std::ptr::null_mut());
        let outcome = if result.is_null() {
            Err(take_raised(py))
        } else {
            ffi::Py_DECREF(result);
            Ok(())
        };
        if ffi::PyContext_Exit(context.as_ptr()) != 0 {
            let exit_err = take_raised(py);
            return outcome.and(Err(exit_err));
        }
        outcome
    }
}

fn call_foreign_context(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    let mut call_args = Vec::with_capacity(args.len() + 1);
    call_args.push(func.clone());
    call_args.extend(args.iter());
    let run = context
        .getattr(pyo3::intern!(py, "run"))
        .map_err(|e| reraised(py, e))?;
    run.call1(PyTuple::new(py, call_args)?)
        .map(drop)
        .map_err(|e| reraised(py, e))
}

/// The argument vector of a vectorcall, on the stack for the usual few
/// arguments (protocol callbacks take at most two).
enum ArgPointers {
    Few([*mut ffi::PyObject; 4], usize),
    Many(Vec<*mut ffi::PyObject>),
}

impl ArgPointers {
    fn new(first: Option<&Bound<'_, PyAny>>, args: &[&Bound<'_, PyAny>]) -> Self {
        let all = first
            .into_iter()
            .chain(args.iter().copied())
            .map(|a| a.as_ptr());
        let count = usize::from(first.is_some()) + args.len();
        if count <= 4 {
            let mut few = [std::ptr::null_mut(); 4];
            for (slot, ptr) in few.iter_mut().zip(all) {
                *slot = ptr;
            }
            ArgPointers::Few(few, count)
        } else {
            ArgPointers::Many(all.collect())
        }
    }

    fn as_ptr(&self) -> *const *mut ffi::PyObject {
        match self {
            ArgPointers::Few(few, _) => few.as_ptr(),
            ArgPointers::Many(many) => many.as_ptr(),
        }
    }

    fn len(&self) -> usize {
        match self {
            ArgPointers::Few(_, count) => *count,
            ArgPointers::Many(many) => many.len(),
        }
    }
}

/// `func(*args)` for callbacks into user code (protocols), with errors taken
/// by [`take_raised`].
pub fn call<'py>(
    py: Python<'py>,
    func: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let ptrs = ArgPointers::new(None, args);
    // SAFETY: every pointer is borrowed from a live Bound for the call; the
    // result is a new reference or null with an exception set.
    unsafe {
        let result = ffi::PyObject_Vectorcall(
            func.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            std::ptr::null_mut(),
        );
        owned_or_raised(py, result)
    }
}

/// `obj.name(*args)`, as [`call`], without making a bound method.
pub fn call_method<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, pyo3::types::PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let ptrs = ArgPointers::new(Some(obj), args);
    // SAFETY: every pointer is borrowed from a live Bound for the call (the
    // first is the object the method is looked up on); the result is a new
    // reference or null with an exception set.
    unsafe {
        let result = ffi::PyObject_VectorcallMethod(
            name.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            std::ptr::null_mut(),
        );
        owned_or_raised(py, result)
    }
}

/// The result of a C API call that returns a new reference, or NULL with
/// an exception set (taken by [`take_raised`]).
///
/// # Safety
/// `result` must be such a result, obtained with the GIL held.
pub unsafe fn owned_or_raised(
    py: Python<'_>,
    result: *mut ffi::PyObject,
) -> PyResult<Bound<'_, PyAny>> {
    if result.is_null() {
        Err(take_raised(py))
    } else {
        // SAFETY: a new reference, per the caller's contract.
        Ok(unsafe { Bound::from_owned_ptr(py, result) })
    }
}

/// Routes an error PyO3 produced through [`take_raised`], so a
/// PanicException from another extension stays a Python error here too.
fn reraised(py: Python<'_>, err: PyErr) -> PyErr {
    err.restore(py);
    take_raised(py)
}

/// The exception currently raised, taken as an ordinary error.
///
/// PyO3's own `PyErr::fetch` resumes unwinding when it finds a
/// PanicException (the trace of a panic in some PyO3 extension). A callback
/// that triggers one has failed like any other callback, and asyncio hands
/// that to the exception handler; letting the panic unwind through the run
/// loop would stop it instead.
pub fn take_raised(py: Python<'_>) -> PyErr {
    // SAFETY: plain C calls with the GIL held; each returns a new (or null)
    // reference that is wrapped immediately.
    unsafe {
        #[cfg(Py_3_12)]
        let value = ffi::PyErr_GetRaisedException();
        #[cfg(not(Py_3_12))]
        let value = {
            let (mut ptype, mut pvalue, mut ptb) = (
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            ffi::PyErr_Fetch(&mut ptype, &mut pvalue, &mut ptb);
            ffi::PyErr_NormalizeException(&mut ptype, &mut pvalue, &mut ptb);
            if !pvalue.is_null() && !ptb.is_null() {
                ffi::PyException_SetTraceback(pvalue, ptb);
            }
            ffi::Py_XDECREF(ptype);
            ffi::Py_XDECREF(ptb);
            pvalue
        };
        match Bound::from_owned_ptr_or_opt(py, value) {
            Some(value) => PyErr::from_value(value),
            None => pyo3::exceptions::PySystemError::new_err("error return without exception set"),
        }
    }
}

/// Runs `f` with `exc` as the exception being handled (`sys.exc_info()`),
/// as asyncio calls its exception handler from inside an `except` block:
/// `logger.exception()` in a handler then logs the callback's error, and an
/// error raised by the handler is chained to it.
pub fn while_handling<R>(py: Python<'_>, exc: &Bound<'_, PyAny>, f: impl FnOnce() -> R) -> R {
    // SAFETY: PyErr_GetExcInfo returns new references that PyErr_SetExcInfo
    // steals back; the exception's own references are taken before being
    // handed over.
    unsafe {
        let (mut ptype, mut pvalue, mut ptb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        ffi::PyErr_GetExcInfo(&mut ptype, &mut pvalue, &mut ptb);
        let exc_type = ffi::Py_TYPE(exc.as_ptr()).cast::<ffi::PyObject>();
        let exc_tb = ffi::PyException_GetTraceback(exc.as_ptr());
        ffi::Py_INCREF(exc_type);
        ffi::Py_INCREF(exc.as_ptr());
        ffi::PyErr_SetExcInfo(exc_type, exc.as_ptr(), exc_tb);
        let result = f();
        ffi::PyErr_SetExcInfo(ptype, pvalue, ptb);
        let _ = py;
        result
    }
}

/// Runs native code inside `context`, as a Python callback would run.
pub fn in_context<R>(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    f: impl FnOnce() -> PyResult<R>,
) -> PyResult<R> {
    // SAFETY: `context` is a live Context object (native handles are only
    // built with one); enter and exit are paired on every path.
    unsafe {
        if ffi::PyContext_Enter(context.as_ptr()) != 0 {
            return Err(take_raised(py));
        }
        let outcome = f();
        if ffi::PyContext_Exit(context.as_ptr()) != 0 {
            let exit_err = take_raised(py);
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
