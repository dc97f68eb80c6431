//! Incoming data for asyncio's own streams, appended to the `StreamReader`
//! by the transport instead of through three Python functions.
//!
//! `asyncio.start_server` and `open_connection` give the transport a
//! `StreamReaderProtocol`. Its `data_received` only finds the reader (through
//! the `_stream_reader` property) and calls `StreamReader.feed_data`, which
//! appends to the reader's bytearray, wakes a pending `read*()` through
//! `_wakeup_waiter`, and pauses reading once the buffer holds more than
//! twice the reader's limit. Entering those functions from the transport
//! cost more than the work they do, on every read of every stream.
//!
//! When the protocol and its reader are exactly asyncio's classes, with
//! asyncio's own methods, the transport does the same steps here, in the
//! same order, through the same attributes. The classes' methods are
//! checked at every read, cheaply (CPython changes a class's version tag
//! whenever the class or a base is modified, so a patch made mid-connection
//! is seen as asyncio's own lookups would see it); methods replaced on the
//! protocol or reader object itself are checked once, when the protocol is
//! set (a known gap: the README lists it). Anything
//! else takes the ordinary `data_received` call: a subclass, a patched or
//! overridden method, a reader that is not a `StreamReader`, a reader at
//! end of stream (whose `feed_data` raises), a buffer that is not a
//! `bytearray`. These methods read and write the same on CPython 3.10-3.13.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pyo3::exceptions::PyNotImplementedError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyType};

use crate::call::{call_method, owned_or_raised, take_raised};

fn stream_reader_protocol_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "asyncio.streams", "StreamReaderProtocol")
}

fn stream_reader_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CELL.import(py, "asyncio.streams", "StreamReader")
}

/// Whether `func` is the function asyncio.streams defines as `qualname`
/// (not a replacement patched onto the class or the instance). A wrapper
/// made with `functools.wraps` copies the module and qualified names, so
/// the function must also have been defined in that module: its globals
/// are the module's.
fn is_asyncio_streams_function(func: &Bound<'_, PyAny>, qualname: &str) -> bool {
    let py = func.py();
    let Ok(module_dict) = py
        .import(intern!(py, "asyncio.streams"))
        .map(|module| module.dict())
    else {
        return false;
    };
    let defined_there = func
        .getattr(intern!(py, "__globals__"))
        .is_ok_and(|globals| globals.is(&module_dict));
    defined_there
        && func
            .getattr(intern!(py, "__qualname__"))
            .and_then(|value| value.extract::<String>())
            .is_ok_and(|value| value == qualname)
}

/// Whether `obj.name` is asyncio's own method `qualname`, bound to `obj`.
fn has_asyncio_method(obj: &Bound<'_, PyAny>, name: &str, qualname: &str) -> bool {
    let py = obj.py();
    obj.getattr(name)
        .and_then(|method| method.getattr(intern!(py, "__func__")))
        .is_ok_and(|func| is_asyncio_streams_function(&func, qualname))
}

/// The version tags of StreamReaderProtocol and StreamReader (high and low
/// half) when their methods were last found to be asyncio's; 0 otherwise.
static VERIFIED_TAGS: AtomicU64 = AtomicU64::new(0);

/// CPython's version tag of `ty`: set when a lookup caches the class's
/// attributes, reset to 0 by any change to the class or its bases, then
/// given a new value by the next lookup (while the class may still have
/// one: 3.12+ stop after 1,000 changes of a class, leaving 0, and every
/// read then checks the functions again).
fn version_tag(ty: &Bound<'_, PyType>) -> u32 {
    // SAFETY: a field of a live type object, read with the GIL held.
    unsafe { (*ty.as_type_ptr()).tp_version_tag }
}

fn version_tags(protocol_type: &Bound<'_, PyType>, reader_type: &Bound<'_, PyType>) -> u64 {
    let (p, r) = (version_tag(protocol_type), version_tag(reader_type));
    if p == 0 || r == 0 {
        return 0;
    }
    (u64::from(p) << 32) | u64::from(r)
}

/// Whether StreamReaderProtocol's `_stream_reader` and `data_received`,
/// and StreamReader's `feed_data` and `_wakeup_waiter`, are asyncio's own:
/// looked up only when either class changed since the last time they were.
fn classes_are_asyncios(py: Python<'_>) -> bool {
    let (Ok(protocol_type), Ok(reader_type)) =
        (stream_reader_protocol_type(py), stream_reader_type(py))
    else {
        return false;
    };
    let tags = version_tags(protocol_type, reader_type);
    if tags != 0 && tags == VERIFIED_TAGS.load(Relaxed) {
        return true;
    }
    let class_function = |ty: &Bound<'_, PyType>, name: &str, qualname: &str| {
        ty.getattr(name)
            .is_ok_and(|func| is_asyncio_streams_function(&func, qualname))
    };
    let property_is_asyncios = protocol_type
        .getattr(intern!(py, "_stream_reader"))
        .and_then(|prop| prop.getattr(intern!(py, "fget")))
        .is_ok_and(|fget| {
            is_asyncio_streams_function(&fget, "StreamReaderProtocol._stream_reader")
        });
    let asyncios = property_is_asyncios
        && class_function(
            protocol_type,
            "data_received",
            "StreamReaderProtocol.data_received",
        )
        && class_function(reader_type, "feed_data", "StreamReader.feed_data")
        && class_function(reader_type, "_wakeup_waiter", "StreamReader._wakeup_waiter");
    // The lookups gave both classes a tag again, if they can have one.
    let verified = if asyncios {
        version_tags(protocol_type, reader_type)
    } else {
        0
    };
    VERIFIED_TAGS.store(verified, Relaxed);
    asyncios
}

/// Whether data for `protocol` can be appended here rather than through its
/// `data_received`: the protocol is exactly asyncio's StreamReaderProtocol
/// and its reader exactly asyncio's StreamReader, neither with a method
/// replaced. A protocol without a reader yet qualifies (data is dropped, as
/// its `data_received` does). Anything unexpected while checking (an
/// attribute deleted, say) means no: the ordinary path then meets it, or
/// not, exactly as asyncio would.
pub(crate) fn applies(protocol: &Bound<'_, PyAny>) -> bool {
    let py = protocol.py();
    let Ok(protocol_type) = stream_reader_protocol_type(py) else {
        return false;
    };
    if !protocol.get_type().is(protocol_type) {
        return false;
    }
    if !classes_are_asyncios(py)
        || !has_asyncio_method(
            protocol,
            "data_received",
            "StreamReaderProtocol.data_received",
        )
    {
        return false;
    }
    match reader_of(protocol) {
        Ok(None) => true,
        Ok(Some(reader)) => {
            stream_reader_type(py).is_ok_and(|reader_type| reader.get_type().is(reader_type))
                && has_asyncio_method(&reader, "feed_data", "StreamReader.feed_data")
                && has_asyncio_method(&reader, "_wakeup_waiter", "StreamReader._wakeup_waiter")
        }
        Err(_) => false,
    }
}

/// The protocol's reader, as its `_stream_reader` property finds it: the
/// referent of `_stream_reader_wr`, or None (no reader, or connection lost).
fn reader_of<'py>(protocol: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = protocol.py();
    let weak = protocol.getattr(intern!(py, "_stream_reader_wr"))?;
    if weak.is_none() {
        return Ok(None);
    }
    // SAFETY: calling the weak reference (a new reference or NULL with an
    // exception set), as the property does.
    let reader = unsafe { owned_or_raised(py, ffi::PyObject_CallNoArgs(weak.as_ptr()))? };
    Ok((!reader.is_none()).then_some(reader))
}

/// Where the next read for a stream goes.
pub(crate) enum Target<'py> {
    /// No reader: the data is read and dropped, as `data_received` does.
    Nowhere,
    /// Appended to this reader's buffer by [`append`], then [`after_append`].
    Reader {
        reader: Bound<'py, PyAny>,
        buffer: Bound<'py, PyByteArray>,
    },
    /// Not a case handled here: the protocol's `data_received` takes it.
    DataReceived,
}

/// Looks up where data for `protocol` (for which [`applies`] held) goes,
/// before reading it.
pub(crate) fn target<'py>(protocol: &Bound<'py, PyAny>) -> PyResult<Target<'py>> {
    let py = protocol.py();
    // The protocol's class too: `__class__` may be reassigned.
    if !protocol.get_type().is(stream_reader_protocol_type(py)?) || !classes_are_asyncios(py) {
        return Ok(Target::DataReceived);
    }
    let Some(reader) = reader_of(protocol)? else {
        return Ok(Target::Nowhere);
    };
    if !reader.get_type().is(stream_reader_type(py)?) {
        return Ok(Target::DataReceived);
    }
    // feed_data asserts that the reader is not at end of stream; an
    // exact False here leaves that assertion (and -O's lack of it) to it.
    let at_eof = reader.getattr(intern!(py, "_eof"))?;
    if !at_eof.is(PyBool::new(py, false)) {
        return Ok(Target::DataReceived);
    }
    let buffer = reader.getattr(intern!(py, "_buffer"))?;
    match buffer.cast_into_exact::<PyByteArray>() {
        Ok(buffer) => Ok(Target::Reader { reader, buffer }),
        Err(_) => Ok(Target::DataReceived),
    }
}

/// `self._buffer.extend(data)`. Runs no Python code, so it may be called
/// with the loop's read buffer borrowed.
pub(crate) fn append(buffer: &Bound<'_, PyByteArray>, data: &[u8]) -> PyResult<()> {
    let py = buffer.py();
    let old_len = buffer.len();
    let new_len = old_len
        .checked_add(data.len())
        .and_then(|len| ffi::Py_ssize_t::try_from(len).ok())
        .ok_or_else(|| pyo3::exceptions::PyMemoryError::new_err(()))?;
    // SAFETY: the buffer is a bytearray (checked by the cast); after a
    // successful resize it holds `new_len` bytes, the last `data.len()` of
    // which are written here before any Python code can see them.
    unsafe {
        if ffi::PyByteArray_Resize(buffer.as_ptr(), new_len) != 0 {
            return Err(take_raised(py));
        }
        let start = ffi::PyByteArray_AsString(buffer.as_ptr())
            .cast::<u8>()
            .add(old_len);
        std::ptr::copy_nonoverlapping(data.as_ptr(), start, data.len());
    }
    Ok(())
}

/// The rest of `feed_data` after the append: wake a waiting `read*()`,
/// then pause the transport once the buffer holds more than twice the
/// limit.
pub(crate) fn after_append(
    reader: &Bound<'_, PyAny>,
    buffer: &Bound<'_, PyByteArray>,
) -> PyResult<()> {
    let py = reader.py();
    let waiter = reader.getattr(intern!(py, "_waiter"))?;
    if !waiter.is_none() {
        reader.setattr(intern!(py, "_waiter"), py.None())?;
        if !call_method(py, &waiter, intern!(py, "cancelled"), &[])?.is_truthy()? {
            let none = py.None().into_bound(py);
            call_method(py, &waiter, intern!(py, "set_result"), &[&none])?;
        }
    }
    let transport = reader.getattr(intern!(py, "_transport"))?;
    if transport.is_none() || reader.getattr(intern!(py, "_paused"))?.is_truthy()? {
        return Ok(());
    }
    let limit = reader.getattr(intern!(py, "_limit"))?;
    let over_limit = match limit.extract::<u64>() {
        Ok(limit) => buffer.len() as u128 > 2 * u128::from(limit),
        // Not a machine-sized int: Python's own comparison.
        Err(_) => buffer.len().into_pyobject(py)?.gt(limit.mul(2)?)?,
    };
    if !over_limit {
        return Ok(());
    }
    match call_method(py, &transport, intern!(py, "pause_reading"), &[]) {
        Ok(_) => reader.setattr(intern!(py, "_paused"), true),
        Err(err) if err.is_instance_of::<PyNotImplementedError>(py) => {
            reader.setattr(intern!(py, "_transport"), py.None())
        }
        Err(err) => Err(err),
    }
}
