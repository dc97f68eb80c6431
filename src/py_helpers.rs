//! The few places the native core calls back into the package's Python
//! modules: formatting (reprs, messages) and debug-mode bookkeeping. None of
//! them is on a hot path in non-debug mode.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

fn helper<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py).clone())
}

macro_rules! helper_fn {
    ($fn_name:ident, $module:literal, $attr:literal) => {
        pub fn $fn_name(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
            static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            helper(py, &CELL, $module, $attr)
        }
    };
}

helper_fn!(callback_source_fn, "ferroloop._format", "callback_source");
helper_fn!(future_type, "asyncio.futures", "Future");
helper_fn!(handle_repr_fn, "ferroloop._format", "handle_repr");
helper_fn!(handle_repr_info_fn, "ferroloop._format", "handle_repr_info");
helper_fn!(source_traceback_fn, "ferroloop._debug", "source_traceback");
helper_fn!(check_callback_fn, "ferroloop._debug", "check_callback");
helper_fn!(
    log_slow_callback_fn,
    "ferroloop._debug",
    "log_slow_callback"
);

/// `format_helpers._format_callback_source(func, args)`: the text asyncio
/// puts in "Exception in callback ..." messages.
pub fn callback_source(
    py: Python<'_>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    debug: bool,
) -> PyResult<String> {
    callback_source_fn(py)?
        .call1((func, args, debug))?
        .extract()
}

/// Where the Python caller of a loop method is, for `_source_traceback`.
pub fn source_traceback(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(source_traceback_fn(py)?.call0()?.unbind())
}

/// Debug-mode validation of a callback (coroutines and non-callables).
pub fn check_callback(py: Python<'_>, func: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
    check_callback_fn(py)?.call1((func, method)).map(drop)
}
