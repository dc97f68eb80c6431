//! A protocol's methods as the stream transport calls them.
//!
//! asyncio looks `data_received` (or `get_buffer` and `buffer_updated`) up
//! on the protocol each time data arrives, so a protocol that lacks one is
//! accepted by `set_protocol` and fails only if data comes, as a fatal
//! error of that call. The native transport looks them up once, when the
//! protocol is set; a method that cannot be found then becomes a
//! `LateMethod`, which looks it up at each call, so the failure happens
//! where asyncio's does and is reported the same way.

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

/// `getattr(obj, name)` at each call, then the call.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct LateMethod {
    obj: Py<PyAny>,
    name: Py<PyString>,
}

#[pymethods]
impl LateMethod {
    #[pyo3(signature = (*args))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.obj.bind(py).getattr(self.name.bind(py))?.call1(args)
    }

    // It holds the protocol, which may hold the transport holding this:
    // the collector must see that reference (the transport's own clear
    // breaks such a cycle).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.obj)
    }
}

/// `protocol.name` bound now, or, if that fails, a callable that looks it
/// up at each call.
pub(crate) fn method(
    protocol: &Bound<'_, PyAny>,
    name: &Bound<'_, PyString>,
) -> PyResult<Py<PyAny>> {
    let py = protocol.py();
    match protocol.getattr(name) {
        Ok(method) => Ok(method.unbind()),
        Err(_) => Ok(Py::new(
            py,
            LateMethod {
                obj: protocol.clone().unbind(),
                name: name.clone().unbind(),
            },
        )?
        .into_any()),
    }
}
