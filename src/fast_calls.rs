//! Hand-written C entry points for the loop's hottest methods: the
//! scheduling methods `call_soon` (every Task step and Future callback goes
//! through it), `call_soon_threadsafe`, `call_later` and `call_at`; and the
//! no-argument `get_debug`, `create_future`, `time`, `is_running`,
//! `is_closed` and `stop`, which skip PyO3's argument parsing the same
//! way. The fd-callback methods (`add_reader` & co) and the handles'
//! methods (`cancel`, `cancelled`, `when` & co) share the parser. Every one
//! fails a wrong call with the message of asyncio's Python method.
//!
//! PyO3's generated wrappers parse `(..., callback, *args, context=None)`
//! with its generic argument parser and enter through its trampoline. These
//! entries read the vectorcall arguments directly and then run the very
//! same method bodies, so behaviour stays that of the PyO3 methods they
//! replace in the class's dict (which keep their docstrings and
//! signatures). Measured on call_soon, pinned, best of 6:
//! 6.4-6.5 M/s through PyO3's wrapper, 7.0-7.3 M/s through this one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyString, PyTuple};
use pyo3::PyTypeInfo;

use crate::event_loop::LoopCore;
use crate::handles::{Handle, TimerHandle};

/// A method's parameters: `leading` positional ones (which may also be
/// given by name), then, for the scheduling methods, `*args` and the
/// keyword-only `context`; for the fd-callback ones `*args` only.
struct Signature {
    /// The class Python names in the messages: asyncio's method lives in
    /// `BaseEventLoop`, but a wrong call names the class whose dict holds
    /// the function, here the native one.
    class: &'static str,
    name: &'static str,
    leading: &'static [&'static str],
    star_args: bool,
    context: bool,
}

impl Signature {
    /// `(..., *args, context=None)`, the scheduling methods' shape.
    const fn scheduling(name: &'static str, leading: &'static [&'static str]) -> Signature {
        Signature {
            class: "LoopCore",
            name,
            leading,
            star_args: true,
            context: true,
        }
    }

    /// Positional parameters only, then `*args` if `star_args`.
    const fn positional(
        name: &'static str,
        leading: &'static [&'static str],
        star_args: bool,
    ) -> Signature {
        Signature {
            class: "LoopCore",
            name,
            leading,
            star_args,
            context: false,
        }
    }

    /// A method of `class` without parameters (besides `self`).
    const fn no_arguments(class: &'static str, name: &'static str) -> Signature {
        Signature {
            class,
            name,
            leading: &[],
            star_args: false,
            context: false,
        }
    }

    #[cold]
    #[inline(never)]
    fn error(&self, what: String) -> PyErr {
        PyTypeError::new_err(format!("{}.{}() {what}", self.class, self.name))
    }

    /// Built as a Python string, so any name (even one that is not valid
    /// UTF-8) appears as Python would show it. Python names `self` among
    /// a method's parameters, so that one is a duplicate, not unknown.
    /// (asyncio's methods are Python functions, whose messages these are.)
    #[cold]
    #[inline(never)]
    fn unexpected(&self, name: &Bound<'_, PyString>) -> PyErr {
        let py = name.py();
        if *name == *"self" {
            return self.error("got multiple values for argument 'self'".into());
        }
        let message = PyString::new(
            py,
            &format!(
                "{}.{}() got an unexpected keyword argument '",
                self.class, self.name
            ),
        )
        .add(name)
        .and_then(|m| m.add("'"))
        .and_then(|m| match self.suggestion(name) {
            Some(close) => m.add(". Did you mean '")?.add(close)?.add("'?"),
            None => Ok(m),
        });
        match message {
            Ok(message) => PyTypeError::new_err(message.unbind()),
            Err(err) => err,
        }
    }

    /// The parameter Python 3.13+ would suggest for a mistyped keyword
    /// ("Did you mean 'context'?"), found by the interpreter's own
    /// algorithm among the names a Python method of this signature accepts
    /// by keyword: `self`, the leading ones and `context`.
    fn suggestion<'py>(&self, name: &Bound<'py, PyString>) -> Option<Bound<'py, PyString>> {
        let py = name.py();
        if py.version_info() < (3, 13) {
            return None;
        }
        let context: &[&str] = if self.context { &["context"] } else { &[] };
        let names = ["self"].iter().chain(self.leading).chain(context);
        let candidates = pyo3::types::PyList::new(py, names).ok()?;
        py.import("_suggestions")
            .and_then(|m| m.call_method1("_generate_suggestions", (candidates, name)))
            .ok()?
            .cast_into::<PyString>()
            .ok()
    }

    /// `nargs` positional arguments where `leading` has fewer names, and no
    /// `*args` takes the rest (counting `self`, as Python does).
    #[cold]
    #[inline(never)]
    fn too_many(&self, nargs: usize) -> PyErr {
        let takes = self.leading.len() + 1;
        let plural = if takes == 1 { "argument" } else { "arguments" };
        self.error(format!(
            "takes {takes} positional {plural} but {} were given",
            nargs + 1
        ))
    }

    /// Python's wording: 'a'; 'a' and 'b'; 'a', 'b', and 'c'.
    #[cold]
    #[inline(never)]
    fn missing(&self, names: &[&str]) -> PyErr {
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let list = match quoted.as_slice() {
            [one] => one.clone(),
            [a, b] => format!("{a} and {b}"),
            [init @ .., last] => format!("{}, and {last}", init.join(", ")),
            [] => String::new(),
        };
        let plural = if names.len() == 1 {
            "argument"
        } else {
            "arguments"
        };
        self.error(format!(
            "missing {} required positional {plural}: {list}",
            names.len()
        ))
    }
}

/// One call's arguments, borrowed from the caller's vector.
struct Parsed<'py, const N: usize> {
    leading: [Bound<'py, PyAny>; N],
    args: Bound<'py, PyTuple>,
    context: Option<Bound<'py, PyAny>>,
}

/// The last keyword-name tuple seen that is exactly `("context",)`, kept
/// alive (so its address cannot be reused by another tuple). Every Task
/// step calls `call_soon(step, context=ctx)` with the same tuple (a
/// constant of `_asyncio`, as a call site's names are constants of its
/// code), so one pointer comparison replaces reading the names.
static CONTEXT_ONLY: std::sync::atomic::AtomicPtr<ffi::PyObject> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// # Safety
/// `kwnames` is a live tuple of keyword names; GIL held.
#[inline(always)]
unsafe fn is_context_only(py: Python<'_>, kwnames: *mut ffi::PyObject) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if CONTEXT_ONLY.load(Relaxed) == kwnames {
        return true;
    }
    // SAFETY: by the contract.
    let names = unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
    let matches = names.len() == 1
        && names.get_item(0).is_ok_and(|name| {
            name.cast::<PyString>()
                .is_ok_and(|name| *name == *"context")
        });
    if matches {
        let previous = CONTEXT_ONLY.swap(names.unbind().into_ptr(), Relaxed);
        if !previous.is_null() {
            // SAFETY: the reference the cache held; GIL held.
            unsafe { ffi::Py_DECREF(previous) };
        }
    }
    matches
}

/// # Safety
/// `args` holds `nargs` positional then `len(kwnames)` keyword values, all
/// borrowed for the call, as in any METH_FASTCALL | METH_KEYWORDS call; and
/// `sig.leading` has N names.
unsafe fn parse<'py, const N: usize>(
    py: Python<'py>,
    sig: &Signature,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Parsed<'py, N>> {
    let nargs = nargs.max(0) as usize;
    // SAFETY: in bounds by the contract above.
    let arg = |i: usize| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) };
    let mut leading: [Option<Bound<'py, PyAny>>; N] =
        std::array::from_fn(|i| (i < nargs).then(|| arg(i)));
    let mut context = None;
    if !kwnames.is_null() && sig.context && is_context_only(py, kwnames) {
        context = Some(arg(nargs));
    } else if !kwnames.is_null() {
        // SAFETY: CPython passes a tuple of keyword names, or NULL.
        let names =
            unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
        for (i, name) in names.iter().enumerate() {
            let value = arg(nargs + i);
            let Ok(name) = name.cast::<PyString>() else {
                return Err(sig.error("keywords must be strings".into()));
            };
            // Compared without converting to UTF-8, which a name with lone
            // surrogates would fail.
            if sig.context && *name == *"context" {
                context = Some(value);
                continue;
            }
            let Some(slot) = sig.leading.iter().position(|p| *name == **p) else {
                return Err(sig.unexpected(name));
            };
            let name = name.to_string_lossy();
            if leading[slot].is_some() {
                return Err(sig.error(format!("got multiple values for argument '{name}'")));
            }
            leading[slot] = Some(value);
        }
    }
    if nargs > N && !sig.star_args {
        return Err(sig.too_many(nargs));
    }
    if leading.iter().any(Option::is_none) {
        let missing: Vec<&str> = sig
            .leading
            .iter()
            .zip(&leading)
            .filter(|(_, value)| value.is_none())
            .map(|(&name, _)| name)
            .collect();
        return Err(sig.missing(&missing));
    }
    let args = if nargs > N {
        // SAFETY: the caller's positional arguments after the leading ones;
        // the tuple takes its own references.
        let rest = unsafe { std::slice::from_raw_parts(args.add(N), nargs - N) };
        PyTuple::new(
            py,
            rest.iter()
                .map(|&p| unsafe { Bound::from_borrowed_ptr(py, p) }),
        )?
    } else {
        PyTuple::empty(py)
    };
    Ok(Parsed {
        leading: leading.map(|value| value.unwrap_or_else(|| py.None().into_bound(py))),
        args,
        context: context.filter(|c| !c.is_none()),
    })
}

/// Defines `$name`, the C function CPython calls for `$class`'s method
/// whose body is `$body`, in one of two ways:
///
/// * `attached`: through PyO3's own trampoline for METH_FASTCALL |
///   METH_KEYWORDS methods, the one its generated wrappers use minus their
///   argument parsing. It counts the thread as attached for the call, as
///   every PyO3 method does, so a `Py` the body drops (the callback a
///   `cancel()` releases, the handle a `remove_reader()` unregisters) is
///   freed at once. Without that count, a method called from outside any
///   PyO3 method (a script's top level, another thread) sends such drops to
///   PyO3's deferred pool, and the objects outlive the call. (PyO3's
///   `impl_` module is hidden API; Cargo.lock pins the version this was
///   written against, as for `handle_alloc`.)
/// * `unattached`: straight into the body (see `run_unattached`), without
///   the count: two thread-local accesses less per call, about 56 of ~2,300
///   instructions per `call_soon` and run (callgrind). Only for bodies that
///   release no `Py`: they create, queue and return objects, and whatever
///   they let go of is a `Bound`, released on the spot. The scheduling
///   methods and the loop's no-argument getters are such bodies. (A Python
///   error discarded on a cold path, such as the 3.13 keyword suggestion
///   that found none, may wait in the pool until the next PyO3 call.)
///
/// Either way a Rust panic becomes a `PanicException` instead of unwinding
/// into CPython.
macro_rules! c_entry {
    ($name:ident, $class:ty, $mode:ident, |$py:ident, $slf:ident, $args:ident, $nargs:ident, $kwnames:ident| $body:expr) => {
        #[allow(non_upper_case_globals)]
        const $name: FastMethod = {
            /// # Safety
            /// CPython's calling convention for a METH_FASTCALL |
            /// METH_KEYWORDS method of `$class`, GIL held.
            unsafe fn body(
                $py: Python<'_>,
                slf: *mut ffi::PyObject,
                $args: *const *mut ffi::PyObject,
                $nargs: ffi::Py_ssize_t,
                $kwnames: *mut ffi::PyObject,
            ) -> PyResult<*mut ffi::PyObject> {
                // SAFETY: the method descriptor checked that `slf` is a
                // `$class` (or a subclass) before calling.
                let $slf =
                    unsafe { Bound::from_borrowed_ptr($py, slf).cast_into_unchecked::<$class>() };
                let $slf = &$slf;
                $body
            }
            $mode!(body)
        };
    };
}

/// `c_entry!`'s `attached` way: PyO3's trampoline around `$body`.
macro_rules! attached {
    ($body:ident) => {
        pyo3::get_trampoline_function!(fastcall_cfunction_with_keywords, $body)
    };
}

/// `c_entry!`'s `unattached` way: `run_unattached` around `$body`.
macro_rules! unattached {
    ($body:ident) => {{
        unsafe extern "C" fn direct(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython's calling convention, passed on unchanged.
            unsafe { run_unattached(|py| $body(py, slf, args, nargs, kwnames)) }
        }
        direct
    }};
}

/// Runs an `unattached` entry's body: Python errors are raised, and a Rust
/// panic becomes a `PanicException` (a BaseException, so `except Exception`
/// does not swallow it) carrying the panic's message, as PyO3 reports one.
///
/// # Safety
/// GIL held.
unsafe fn run_unattached(
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held.
    let py = unsafe { Python::assume_attached() };
    match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(obj)) => obj,
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic from Rust code".to_string());
            PanicException::new_err((message,)).restore(py);
            std::ptr::null_mut()
        }
    }
}

const CALL_SOON: Signature = Signature::scheduling("call_soon", &["callback"]);
const CALL_SOON_THREADSAFE: Signature =
    Signature::scheduling("call_soon_threadsafe", &["callback"]);
const CALL_LATER: Signature = Signature::scheduling("call_later", &["delay", "callback"]);
const CALL_AT: Signature = Signature::scheduling("call_at", &["when", "callback"]);

/// The C signature of a METH_FASTCALL | METH_KEYWORDS method.
type FastMethod = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// Defines the C entry `$name`: parses the call by `$sig` into the leading
/// arguments `[$arg, ...]`, `$args` and `$context`, then returns `$body`'s
/// object.
macro_rules! entry {
    ($name:ident, $mode:ident, $sig:expr, [$($arg:ident),+], $args:ident, $context:ident, |$slf:ident| $body:expr) => {
        c_entry!($name, LoopCore, $mode, |py, $slf, args, nargs, kwnames| {
            // SAFETY: CPython's vectorcall arguments (see `parse`).
            let Parsed {
                leading: [$($arg),+],
                args: $args,
                context: $context,
            } = unsafe { parse(py, &$sig, args, nargs, kwnames)? };
            Ok($body?.into_ptr())
        });
    };
}

entry!(
    call_soon,
    unattached,
    CALL_SOON,
    [callback],
    args,
    context,
    |slf| { LoopCore::call_soon(slf, callback, args, context) }
);
entry!(
    call_soon_threadsafe,
    unattached,
    CALL_SOON_THREADSAFE,
    [callback],
    args,
    context,
    |slf| { LoopCore::call_soon_threadsafe(slf, callback, args, context) }
);
entry!(
    call_later,
    unattached,
    CALL_LATER,
    [delay, callback],
    args,
    context,
    |slf| { LoopCore::call_later(slf, &delay, callback, args, context) }
);
entry!(
    call_at,
    unattached,
    CALL_AT,
    [when, callback],
    args,
    context,
    |slf| { LoopCore::call_at(slf, &when, callback, args, context) }
);

const ADD_READER: Signature = Signature::positional("add_reader", &["fd", "callback"], true);
const ADD_WRITER: Signature = Signature::positional("add_writer", &["fd", "callback"], true);
const REMOVE_READER: Signature = Signature::positional("remove_reader", &["fd"], false);
const REMOVE_WRITER: Signature = Signature::positional("remove_writer", &["fd"], false);

// Not hot: these take the same entries as the scheduling methods so that a
// wrong call fails with asyncio's message rather than PyO3's ("takes 1
// positional arguments but 2 were given", not counting `self`).
entry!(
    add_reader,
    attached,
    ADD_READER,
    [fd, callback],
    args,
    _context,
    |slf| { LoopCore::add_reader(slf, &fd, callback, args).map(|()| slf.py().None()) }
);
entry!(
    add_writer,
    attached,
    ADD_WRITER,
    [fd, callback],
    args,
    _context,
    |slf| { LoopCore::add_writer(slf, &fd, callback, args).map(|()| slf.py().None()) }
);
entry!(
    remove_reader,
    attached,
    REMOVE_READER,
    [fd],
    _args,
    _context,
    |slf| {
        LoopCore::remove_reader(slf, &fd).map(|removed| PyBool::new(slf.py(), removed).to_owned())
    }
);
entry!(
    remove_writer,
    attached,
    REMOVE_WRITER,
    [fd],
    _args,
    _context,
    |slf| {
        LoopCore::remove_writer(slf, &fd).map(|removed| PyBool::new(slf.py(), removed).to_owned())
    }
);

/// Defines the entry `$name` of `$class`'s method `$method`, which has no
/// parameters, returning `$body`'s object. A METH_FASTCALL | METH_KEYWORDS
/// entry rather than METH_NOARGS, so that a wrong call fails with the
/// message of asyncio's Python method ("takes 1 positional argument but 2
/// were given", "got an unexpected keyword argument"), not CPython's
/// "takes no arguments".
macro_rules! noargs_entry {
    ($name:ident, $mode:ident, $class:ident . $method:ident, |$py:ident, $slf:ident| $body:expr) => {
        c_entry!($name, $class, $mode, |$py, $slf, args, nargs, kwnames| {
            // SAFETY: CPython's vectorcall arguments (see `parse`).
            if nargs != 0 || unsafe { has_keywords(kwnames) } {
                const SIG: Signature =
                    Signature::no_arguments(stringify!($class), stringify!($method));
                return Err(wrong_call(unsafe {
                    parse::<0>($py, &SIG, args, nargs, kwnames)
                }));
            }
            let obj: PyResult<_> = $body;
            Ok(obj?.into_ptr())
        });
    };
}

/// Whether a vectorcall passed keywords: a caller may pass an empty tuple
/// of names rather than NULL.
///
/// # Safety
/// `kwnames` is NULL or a tuple; GIL held.
unsafe fn has_keywords(kwnames: *mut ffi::PyObject) -> bool {
    // SAFETY: by the contract.
    !kwnames.is_null() && unsafe { ffi::PyTuple_GET_SIZE(kwnames) } != 0
}

/// The error `parse` found in a call that passed arguments to a method
/// taking none (it reports keywords first, as CPython does); it always
/// finds one there, given a signature with no parameters.
#[cold]
#[inline(never)]
fn wrong_call(parsed: PyResult<Parsed<'_, 0>>) -> PyErr {
    match parsed {
        Err(err) => err,
        Ok(_) => PySystemError::new_err("arguments passed to a method that takes none"),
    }
}

// get_debug is called once per Future and Task made (CPython's C Future
// asks its loop for the debug flag); create_future once per future awaited.
noargs_entry!(get_debug, unattached, LoopCore.get_debug, |py, slf| {
    Ok(slf.get().debug_value(py))
});
noargs_entry!(
    create_future,
    unattached,
    LoopCore.create_future,
    |_py, slf| { LoopCore::create_future(slf) }
);
noargs_entry!(time, unattached, LoopCore.time, |py, slf| {
    let now = LoopCore::time(slf.get());
    Ok(PyFloat::new(py, now))
});
noargs_entry!(is_running, unattached, LoopCore.is_running, |py, slf| {
    Ok(PyBool::new(py, slf.get().is_running()).to_owned())
});
noargs_entry!(is_closed, unattached, LoopCore.is_closed, |py, slf| {
    Ok(PyBool::new(py, slf.get().is_closed()).to_owned())
});
noargs_entry!(stop, unattached, LoopCore.stop, |py, slf| {
    slf.get().stop();
    Ok(py.None())
});

// The handles' methods: `cancel` runs for every timeout that finishes in
// time, and all of them fail a wrong call as asyncio's Python methods do.
// TimerHandle inherits `cancelled`, `get_context` and `_run`, so a wrong
// call names `Handle`, as asyncio's inherited methods do.
noargs_entry!(handle_cancel, attached, Handle.cancel, |py, slf| {
    Handle::cancel(slf).map(|()| py.None())
});
noargs_entry!(handle_cancelled, attached, Handle.cancelled, |py, slf| {
    Ok(PyBool::new(py, slf.get().cancelled()).to_owned())
});
noargs_entry!(
    handle_get_context,
    attached,
    Handle.get_context,
    |py, slf| { Ok(slf.get().get_context(py)) }
);
noargs_entry!(handle_run, attached, Handle._run, |py, slf| {
    Handle::_run(slf).map(|()| py.None())
});
noargs_entry!(handle_repr_info, attached, Handle._repr_info, |_py, slf| {
    Handle::_repr_info(slf)
});
noargs_entry!(timer_cancel, attached, TimerHandle.cancel, |py, slf| {
    TimerHandle::cancel(slf).map(|()| py.None())
});
noargs_entry!(
    timer_repr_info,
    attached,
    TimerHandle._repr_info,
    |_py, slf| { TimerHandle::_repr_info(slf) }
);
noargs_entry!(timer_when, attached, TimerHandle.when, |py, slf| {
    Ok(slf.get().when(py))
});

/// Replaces the PyO3 method `name` in `T`'s dict with `entry`, keeping the
/// PyO3 method's docstring and text signature (`inspect.signature`).
fn replace<T: pyo3::PyClass>(
    py: Python<'_>,
    name: &'static std::ffi::CStr,
    entry: ffi::PyMethodDefPointer,
    flags: std::ffi::c_int,
) -> PyResult<()> {
    let tp = T::type_object(py);
    let key = name
        .to_str()
        .map_err(|e| PySystemError::new_err(e.to_string()))?;
    let generated = tp.getattr("__dict__")?.get_item(key)?;
    // SAFETY: GIL held; the object is read as a method descriptor only
    // after the type check, and its definition is a static PyO3 made.
    let doc = unsafe {
        let obj = generated.as_ptr();
        if ffi::PyObject_TypeCheck(obj, std::ptr::addr_of_mut!(ffi::PyMethodDescr_Type)) == 0 {
            return Err(PySystemError::new_err(format!(
                "{}.{key} is not a method",
                T::NAME
            )));
        }
        (*(*obj.cast::<ffi::PyMethodDescrObject>()).d_method).ml_doc
    };
    // Method descriptors keep a pointer to their definition for good; there
    // are a score of them, made once per process.
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: entry,
        ml_flags: flags,
        ml_doc: doc,
    }));
    // SAFETY: a live type object, GIL held; `def` lives for the process.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(T::type_object_raw(py), def))?
    };
    tp.setattr(key, descr)
}

/// Installs the entries; called once from module init.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let fast = |entry: FastMethod| ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: entry,
    };
    let flags = ffi::METH_FASTCALL | ffi::METH_KEYWORDS;
    for (name, entry) in [
        (c"call_soon", call_soon as FastMethod),
        (c"call_soon_threadsafe", call_soon_threadsafe),
        (c"call_later", call_later),
        (c"call_at", call_at),
        (c"add_reader", add_reader),
        (c"add_writer", add_writer),
        (c"remove_reader", remove_reader),
        (c"remove_writer", remove_writer),
        (c"get_debug", get_debug),
        (c"create_future", create_future),
        (c"time", time),
        (c"is_running", is_running),
        (c"is_closed", is_closed),
        (c"stop", stop),
    ] {
        replace::<LoopCore>(py, name, fast(entry), flags)?;
    }
    for (name, entry) in [
        (c"cancel", handle_cancel as FastMethod),
        (c"cancelled", handle_cancelled),
        (c"get_context", handle_get_context),
        (c"_run", handle_run),
        (c"_repr_info", handle_repr_info),
    ] {
        replace::<Handle>(py, name, fast(entry), flags)?;
    }
    for (name, entry) in [
        (c"cancel", timer_cancel as FastMethod),
        (c"when", timer_when),
        (c"_repr_info", timer_repr_info),
    ] {
        replace::<TimerHandle>(py, name, fast(entry), flags)?;
    }
    if py.version_info() < (3, 12) {
        // asyncio's handles gained get_context() in 3.12; before that, code
        // that probes for it must find it missing, as on asyncio.
        Handle::type_object(py).delattr("get_context")?;
    }
    Ok(())
}
