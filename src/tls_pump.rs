//! The per-record steps of the TLS layer.
//!
//! ferroloop's TLS layer is asyncio's own `sslproto.SSLProtocol` (3.11+,
//! subclassed in `_tls.py`): its state machine -- handshake, shutdown,
//! timeouts, the flow-control decisions -- stays the running Python's. What
//! happens for every record runs here instead: handing received bytes to
//! the TLS object, reading the plaintext out for the application,
//! encrypting the application's writes and giving the records to the socket
//! transport. Each step reads and updates the same attributes as the stdlib
//! method it replaces, so the state machine cannot tell the difference;
//! anything off the steady path (a state other than wrapped, an application
//! protocol that lends its own buffer, a flow-control switch, writes after
//! the close) is handed to the stdlib method written for it.
//!
//! Two differences in how, not in what:
//! * With the stdlib's own `ssl.SSLObject`, the plaintext loop stops once
//!   neither the incoming BIO nor the TLS object holds a byte, where the
//!   stdlib reads on until OpenSSL raises `SSLWantReadError`. Python never
//!   turns on OpenSSL's read-ahead, so every unprocessed record (data,
//!   alerts, post-handshake messages) is still in the BIO and a partial one
//!   needs more input; the read skipped could only have raised, and
//!   building that exception took a sixth of a TLS echo's time. A context's
//!   own `sslobject_class` may keep plaintext the TLS object does not count,
//!   so with one the loop reads until the error, as the stdlib does.
//! * The buffer sizes are computed here, and `_control_app_writing` /
//!   `_control_ssl_reading` are called only when they have something to
//!   switch. The subclass is ferroloop's own and never handed out to be
//!   subclassed, so no override of those methods is skipped.

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyWeakrefMethods,
    PyWeakrefReference,
};
use pyo3::{ffi, PyTraverseError};

use crate::call::{self, take_raised};
use crate::gil_cell::GilCell;
use crate::py_bytes::ByteView;
use crate::stream_feed;
use crate::stream_transport::StreamTransport;

/// The stdlib objects the data path compares against, looked up once.
struct Stdlib {
    do_handshake: Py<PyAny>,
    wrapped: Py<PyAny>,
    flushing: Py<PyAny>,
    shutdown: Py<PyAny>,
    unwrapped: Py<PyAny>,
    /// `sslproto.SSLAgainErrors`: the errors that mean "no more for now".
    again_errors: Py<PyAny>,
    ssl_object: Py<PyAny>,
    /// `SocketTransport.write`: a transport whose class still uses it can
    /// be written to natively.
    socket_transport_write: Py<PyAny>,
}

fn stdlib(py: Python<'_>) -> PyResult<&Stdlib> {
    static CELL: PyOnceLock<Stdlib> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let states = sslproto.getattr("SSLProtocolState")?;
        let state = |name: &str| states.getattr(name).map(Bound::unbind);
        Ok::<_, PyErr>(Stdlib {
            do_handshake: state("DO_HANDSHAKE")?,
            wrapped: state("WRAPPED")?,
            flushing: state("FLUSHING")?,
            shutdown: state("SHUTDOWN")?,
            unwrapped: state("UNWRAPPED")?,
            again_errors: sslproto.getattr("SSLAgainErrors")?.unbind(),
            ssl_object: py.import("ssl")?.getattr("SSLObject")?.unbind(),
            socket_transport_write: py
                .import("ferroloop._transport")?
                .getattr("SocketTransport")?
                .getattr("write")?
                .unbind(),
        })
    })
}

/// The methods used on the protocol's `SSLObject`: those of the C object
/// inside it when it is a plain `ssl.SSLObject` (its Python methods only
/// forward), its own otherwise (a context's `sslobject_class`).
struct TlsObject {
    outer: Py<PyAny>,
    read: Py<PyAny>,
    write: Py<PyAny>,
    /// Set only when reading may stop once nothing is pending (see the
    /// module docs): for the stdlib's own `SSLObject`.
    pending: Option<Py<PyAny>>,
}

struct TlsCalls<'py> {
    read: Bound<'py, PyAny>,
    write: Bound<'py, PyAny>,
    pending: Option<Bound<'py, PyAny>>,
}

/// The native data path of one `SSLProtocol`; see the module docs.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct TlsPump {
    /// Weak: the protocol holds this object's bound methods in its instance
    /// dict, and asyncio's tests require a closed TLS connection to be
    /// freed by reference counting alone, without the cycle collector.
    proto: Py<PyWeakrefReference>,
    /// The application's transport, weakly (it holds this object's
    /// `app_write` as its `write`).
    app_transport: Py<PyWeakrefReference>,
    tls: GilCell<Option<TlsObject>>,
    /// The native half of the socket transport last written to, if that
    /// transport's `write` is the native one.
    sink: GilCell<Option<Py<StreamTransport>>>,
    incoming: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    /// The protocol's receive buffer (`_ssl_buffer_view`), lent to the
    /// socket transport.
    view: Py<PyAny>,
    pinned: PinnedBuffer,
    max_size: Py<PyAny>,
    /// The application protocol last given plaintext, weakly (it refers to
    /// the TLS protocol, which holds this pump), and whether it is asyncio's
    /// StreamReaderProtocol whose reader takes the data directly
    /// (`stream_feed::applies`, checked once per protocol).
    app_feed: GilCell<Option<(Py<PyWeakrefReference>, bool)>>,
}

/// An export of the receive buffer, held for the pump's lifetime: while it
/// is held the buffer can be neither resized nor released, so the socket
/// transport may receive into it directly.
struct PinnedBuffer(ByteView);

// SAFETY: the view is only read, and released (in Drop), with the GIL held:
// the pump is a Python object, used and freed under the GIL.
unsafe impl Send for PinnedBuffer {}
// SAFETY: as above; no access happens without the GIL.
unsafe impl Sync for PinnedBuffer {}

fn is_again(py: Python<'_>, err: &PyErr, again: &Bound<'_, PyAny>) -> bool {
    // SAFETY: both pointers are live objects; the call only compares types.
    unsafe { ffi::PyErr_GivenExceptionMatches(err.value(py).as_ptr(), again.as_ptr()) != 0 }
}

fn method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    args: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    call::call_method(obj.py(), obj, name, args)
}

/// The protocol and its instance dict: every attribute the data path
/// touches is an instance attribute the stdlib's `__init__` sets, read and
/// written in the dict without the class lookup `getattr` makes first.
struct Proto<'py> {
    obj: Bound<'py, PyAny>,
    dict: Option<Bound<'py, PyDict>>,
}

impl<'py> Proto<'py> {
    fn new(obj: Bound<'py, PyAny>) -> Self {
        let py = obj.py();
        // SAFETY: obj is live; the result is a new reference or null with
        // an exception set (an object without a dict), which is cleared.
        let dict = unsafe {
            let ptr = ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut());
            if ptr.is_null() {
                drop(take_raised(py));
                None
            } else {
                Bound::from_owned_ptr(py, ptr).cast_into::<PyDict>().ok()
            }
        };
        Proto { obj, dict }
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(dict) = &self.dict {
            if let Some(value) = dict.get_item(name)? {
                return Ok(value);
            }
        }
        self.obj.getattr(name)
    }

    fn set(&self, name: &Bound<'py, PyString>, value: Bound<'py, PyAny>) -> PyResult<()> {
        match &self.dict {
            Some(dict) if dict.contains(name)? => dict.set_item(name, value),
            _ => self.obj.setattr(name, value),
        }
    }
}

/// `obj[start:stop]` with Python's slice rules.
fn slice<'py>(obj: &Bound<'py, PyAny>, start: isize, stop: isize) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: obj is live; the result is a new reference or null with an
    // exception set.
    unsafe {
        call::owned_or_raised(
            obj.py(),
            ffi::PySequence_GetSlice(obj.as_ptr(), start, stop),
        )
    }
}

impl TlsPump {
    /// The pump whose `get_buffer` and `buffer_updated` these two are, so a
    /// socket transport can receive into its buffer and hand it the count
    /// without the two calls through Python.
    pub(crate) fn owning<'py>(
        get_buffer: &Bound<'py, PyAny>,
        buffer_updated: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, TlsPump>> {
        let py = get_buffer.py();
        let owner = |bound: &Bound<'py, PyAny>, name: &str| {
            let named = bound
                .getattr(intern!(py, "__name__"))
                .ok()?
                .extract::<String>()
                .ok()?
                == name;
            let pump = bound.getattr(intern!(py, "__self__")).ok()?;
            named.then(|| pump.cast_into::<TlsPump>().ok()).flatten()
        };
        // An empty buffer takes the generic path, which reports it.
        let pump = owner(get_buffer, "get_buffer").filter(|p| p.get().pinned.0.len() > 0)?;
        owner(buffer_updated, "buffer_updated")
            .filter(|other| other.is(&pump))
            .map(|_| pump)
    }

    /// Where the socket transport may receive: the protocol's buffer,
    /// exported for the pump's lifetime so it cannot move.
    pub(crate) fn receive_buffer(&self) -> (*mut u8, usize) {
        (self.pinned.0.as_ptr(), self.pinned.0.len())
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Option<Proto<'py>> {
        self.proto.bind(py).upgrade().map(Proto::new)
    }

    /// (read, write, pending) of the protocol's current `_sslobj`.
    fn tls_methods<'py>(&self, proto: &Proto<'py>) -> PyResult<TlsCalls<'py>> {
        let py = proto.obj.py();
        let outer = proto.get(intern!(py, "_sslobj"))?;
        let cached = self.tls.with(py, |t| match t {
            Some(t) if t.outer.is(&outer) => Some(TlsCalls {
                read: t.read.clone_ref(py).into_bound(py),
                write: t.write.clone_ref(py).into_bound(py),
                pending: t.pending.as_ref().map(|p| p.clone_ref(py).into_bound(py)),
            }),
            _ => None,
        });
        if let Some(calls) = cached {
            return Ok(calls);
        }
        // Only the stdlib's own class is known to keep nothing of its own
        // beyond what the TLS object reports as pending.
        let calls = if outer.get_type().is(stdlib(py)?.ssl_object.bind(py)) {
            let inner = outer.getattr(intern!(py, "_sslobj"))?;
            TlsCalls {
                read: inner.getattr(intern!(py, "read"))?,
                write: inner.getattr(intern!(py, "write"))?,
                pending: Some(inner.getattr(intern!(py, "pending"))?),
            }
        } else {
            TlsCalls {
                read: outer.getattr(intern!(py, "read"))?,
                write: outer.getattr(intern!(py, "write"))?,
                pending: None,
            }
        };
        let fresh = TlsObject {
            outer: outer.unbind(),
            read: calls.read.clone().unbind(),
            write: calls.write.clone().unbind(),
            pending: calls.pending.as_ref().map(|p| p.clone().unbind()),
        };
        let previous = self.tls.replace(py, Some(fresh));
        drop(previous);
        Ok(calls)
    }

    /// `_do_read`: plaintext to the application, then whatever the reads
    /// made the TLS object want to send.
    fn do_read_impl(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        let lib = stdlib(py)?;
        let state = proto.get(intern!(py, "_state"))?;
        if !state.is(lib.wrapped.bind(py)) && !state.is(lib.flushing.bind(py)) {
            return Ok(());
        }
        let result = (|| {
            if !proto.get(intern!(py, "_app_reading_paused"))?.is_truthy()? {
                if proto
                    .get(intern!(py, "_app_protocol_is_buffer"))?
                    .is_truthy()?
                {
                    method(&proto.obj, intern!(py, "_do_read__buffered"), &[])?;
                } else {
                    self.read_copied(proto)?;
                }
                if proto.get(intern!(py, "_write_backlog"))?.is_truthy()? {
                    self.do_write_impl(proto)?;
                } else {
                    self.process_outgoing_impl(proto)?;
                }
            }
            self.control_ssl_reading(proto)
        })();
        Self::fatal_unless_base(proto, result)
    }

    /// `_fatal_error` for an `Exception`, as the stdlib's `except
    /// Exception`; KeyboardInterrupt and the like go on up.
    fn fatal_unless_base(proto: &Proto<'_>, result: PyResult<()>) -> PyResult<()> {
        let py = proto.obj.py();
        match result {
            Err(err) if err.is_instance_of::<PyException>(py) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                let message = PyString::new(py, "Fatal error on SSL protocol").into_any();
                // Inside the stdlib's `except Exception` block, as there.
                call::while_handling(py, &exc, || {
                    method(&proto.obj, intern!(py, "_fatal_error"), &[&exc, &message])
                })
                .map(drop)
            }
            other => other,
        }
    }

    /// `_do_read__copied`: every record's plaintext, joined, in one
    /// `data_received`; close_notify starts the shutdown.
    fn read_copied(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        let TlsCalls { read, pending, .. } = self.tls_methods(proto)?;
        let again = stdlib(py)?.again_errors.bind(py);
        let incoming = self.incoming.bind(py);
        let max_size = self.max_size.bind(py);
        let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut close_notify = false;
        loop {
            if let (false, Some(pending)) = (chunks.is_empty(), &pending) {
                let buffered = incoming.getattr(intern!(py, "pending"))?.is_truthy()?
                    || call::call(py, pending, &[])?.is_truthy()?;
                if !buffered {
                    break;
                }
            }
            match call::call(py, &read, &[max_size]) {
                Ok(chunk) if !chunk.is_truthy()? => {
                    close_notify = true;
                    break;
                }
                Ok(chunk) => chunks.push(chunk),
                Err(err) if is_again(py, &err, again) => break,
                Err(err) => return Err(err),
            }
        }
        if !chunks.is_empty() {
            let data = if chunks.len() == 1 {
                chunks.swap_remove(0)
            } else {
                let parts = PyList::new(py, chunks)?.into_any();
                method(
                    PyBytes::new(py, b"").as_any(),
                    intern!(py, "join"),
                    &[&parts],
                )?
            };
            let app = proto.get(intern!(py, "_app_protocol"))?;
            self.deliver(&app, &data)?;
        }
        if close_notify {
            method(&proto.obj, intern!(py, "_call_eof_received"), &[])?;
            method(&proto.obj, intern!(py, "_start_shutdown"), &[])?;
        }
        Ok(())
    }

    /// `app.data_received(data)`; for asyncio's streams, what it would do,
    /// done by `stream_feed` (the data appended to the StreamReader's
    /// buffer) without the two Python calls.
    fn deliver(&self, app: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = app.py();
        if let (true, Ok(bytes)) = (self.feeds_streams(app), data.cast::<PyBytes>()) {
            match stream_feed::target(app)? {
                stream_feed::Target::Nowhere => return Ok(()),
                stream_feed::Target::Reader { reader, buffer } => {
                    stream_feed::append(&buffer, bytes.as_bytes())?;
                    return stream_feed::after_append(&reader, &buffer);
                }
                stream_feed::Target::DataReceived => {}
            }
        }
        method(app, intern!(py, "data_received"), &[data]).map(drop)
    }

    /// `stream_feed::applies(app)`, remembered for the last protocol.
    fn feeds_streams(&self, app: &Bound<'_, PyAny>) -> bool {
        let py = app.py();
        let known = self.app_feed.with(py, |cached| {
            cached.as_ref().and_then(|(weak, feeds)| {
                let same = weak.bind(py).upgrade().is_some_and(|known| known.is(app));
                same.then_some(*feeds)
            })
        });
        if let Some(feeds) = known {
            return feeds;
        }
        let feeds = stream_feed::applies(app);
        if let Ok(weak) = PyWeakrefReference::new(app) {
            let previous = self
                .app_feed
                .with(py, |cached| cached.replace((weak.unbind(), feeds)));
            drop(previous);
        }
        feeds
    }

    /// `_do_write`: the backlog through the TLS object, as far as it goes.
    fn do_write_impl(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        let write = self.tls_methods(proto)?.write;
        let again = stdlib(py)?.again_errors.bind(py);
        let backlog = proto.get(intern!(py, "_write_backlog"))?;
        let size_name = intern!(py, "_write_buffer_size");
        while backlog.len()? > 0 {
            let data = backlog.get_item(0)?;
            let count = match call::call(py, &write, &[&data]) {
                Ok(count) => count,
                Err(err) if is_again(py, &err, again) => break,
                Err(err) => return Err(err),
            };
            let written: isize = count.extract()?;
            let data_len = data.len()? as isize;
            let taken = if written < data_len {
                backlog.set_item(0, slice(&data, written, isize::MAX)?)?;
                count
            } else {
                backlog.del_item(0)?;
                data_len.into_pyobject(py)?.into_any()
            };
            let size = proto.get(size_name)?.sub(taken)?;
            proto.set(size_name, size)?;
        }
        self.process_outgoing_impl(proto)
    }

    /// `_process_outgoing`: the records made so far to the socket.
    fn process_outgoing_impl(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        if !proto.get(intern!(py, "_ssl_writing_paused"))?.is_truthy()? {
            let data = call::call(py, self.outgoing_read.bind(py), &[])?;
            if data.len()? > 0 {
                let transport = proto.get(intern!(py, "_transport"))?;
                self.transport_write(&transport, &data)?;
            }
        }
        self.control_app_writing(proto)
    }

    /// `transport.write(data)`, straight into the native transport when
    /// the transport's class has not replaced `write` (checked once per
    /// transport: a class is not expected to change under a connection).
    fn transport_write(
        &self,
        transport: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = transport.py();
        // The native half names its Python transport until the connection
        // is lost, which also tells a stale cache entry apart.
        let cached = self
            .sink
            .with(py, |sink| sink.as_ref().map(|core| core.clone_ref(py)))
            .filter(|core| {
                core.get()
                    .wrapper(py)
                    .is_some_and(|wrapper| wrapper.is(transport))
            });
        let core = match cached {
            Some(core) => Some(core),
            None => {
                let core = Self::native_core(transport)?;
                let fresh = core.as_ref().map(|c| c.clone_ref(py));
                drop(self.sink.replace(py, fresh));
                core
            }
        };
        match core {
            Some(core) => StreamTransport::write(core.bind(py), data),
            None => method(transport, intern!(py, "write"), &[data]).map(drop),
        }
    }

    fn native_core(transport: &Bound<'_, PyAny>) -> PyResult<Option<Py<StreamTransport>>> {
        let py = transport.py();
        let native_write = stdlib(py)?.socket_transport_write.bind(py);
        let class_write = transport.get_type().getattr(intern!(py, "write"));
        if !matches!(&class_write, Ok(w) if w.is(native_write)) {
            return Ok(None);
        }
        Ok(transport
            .getattr(intern!(py, "_core"))
            .ok()
            .and_then(|core| core.cast_into::<StreamTransport>().ok())
            .map(Bound::unbind))
    }

    /// `data` at the end of the write backlog, counted in its size.
    fn queue(
        proto: &Proto<'_>,
        backlog: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = proto.obj.py();
        method(backlog, intern!(py, "append"), &[data])?;
        let size_name = intern!(py, "_write_buffer_size");
        let size = proto.get(size_name)?.add(data.len()?)?;
        proto.set(size_name, size)
    }

    /// `_control_app_writing`, called only when it has something to switch.
    fn control_app_writing(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        let size = self
            .outgoing
            .bind(py)
            .getattr(intern!(py, "pending"))?
            .add(proto.get(intern!(py, "_write_buffer_size"))?)?;
        let names = FlowControl {
            paused: intern!(py, "_app_writing_paused"),
            low: intern!(py, "_outgoing_low_water"),
            high: intern!(py, "_outgoing_high_water"),
            control: intern!(py, "_control_app_writing"),
        };
        names.switch_if_crossed(proto, &size)
    }

    /// `_control_ssl_reading`, called only when it has something to switch.
    fn control_ssl_reading(&self, proto: &Proto<'_>) -> PyResult<()> {
        let py = proto.obj.py();
        let size = self.incoming.bind(py).getattr(intern!(py, "pending"))?;
        let names = FlowControl {
            paused: intern!(py, "_ssl_reading_paused"),
            low: intern!(py, "_incoming_low_water"),
            high: intern!(py, "_incoming_high_water"),
            control: intern!(py, "_control_ssl_reading"),
        };
        names.switch_if_crossed(proto, &size)
    }
}

/// One direction of the SSL layer's flow control, by attribute names.
struct FlowControl<'a, 'py> {
    paused: &'a Bound<'py, PyString>,
    low: &'a Bound<'py, PyString>,
    high: &'a Bound<'py, PyString>,
    control: &'a Bound<'py, PyString>,
}

impl<'py> FlowControl<'_, 'py> {
    /// Calls the stdlib's control method when `size` has crossed the water
    /// mark it would act on: the low one while paused, the high one if not.
    fn switch_if_crossed(&self, proto: &Proto<'py>, size: &Bound<'py, PyAny>) -> PyResult<()> {
        let switch = if proto.get(self.paused)?.is_truthy()? {
            size.le(proto.get(self.low)?)?
        } else {
            size.ge(proto.get(self.high)?)?
        };
        if switch {
            method(&proto.obj, self.control, &[])?;
        }
        Ok(())
    }
}

#[pymethods]
impl TlsPump {
    #[new]
    fn new(proto: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = proto.py();
        let incoming = proto.getattr(intern!(py, "_incoming"))?;
        let outgoing = proto.getattr(intern!(py, "_outgoing"))?;
        let view = proto.getattr(intern!(py, "_ssl_buffer_view"))?;
        if !view.is_instance_of::<PyMemoryView>() {
            return Err(PyTypeError::new_err(
                "_ssl_buffer_view must be a memoryview",
            ));
        }
        let pinned = PinnedBuffer(ByteView::write(&view)?);
        Ok(TlsPump {
            pinned,
            proto: PyWeakrefReference::new(proto)?.unbind(),
            app_transport: PyWeakrefReference::new(&proto.getattr(intern!(py, "_app_transport"))?)?
                .unbind(),
            tls: GilCell::new(None),
            sink: GilCell::new(None),
            incoming_write: incoming.getattr(intern!(py, "write"))?.unbind(),
            incoming: incoming.unbind(),
            outgoing_read: outgoing.getattr(intern!(py, "read"))?.unbind(),
            outgoing: outgoing.unbind(),
            view: view.unbind(),
            max_size: proto.getattr(intern!(py, "max_size"))?.unbind(),
            app_feed: GilCell::new(None),
        })
    }

    /// `SSLProtocol.get_buffer`: the protocol's receive buffer, which is
    /// always `max_size` long (the largest the stdlib would make it).
    fn get_buffer(&self, py: Python<'_>, n: &Bound<'_, PyAny>) -> Py<PyAny> {
        let _ = n;
        self.view.clone_ref(py)
    }

    /// `SSLProtocol.buffer_updated`: `nbytes` received into the buffer.
    pub(crate) fn buffer_updated(&self, py: Python<'_>, nbytes: isize) -> PyResult<()> {
        let Some(proto) = self.protocol(py) else {
            return Ok(());
        };
        let received = slice(self.view.bind(py), 0, nbytes)?;
        call::call(py, self.incoming_write.bind(py), &[&received])?;
        drop(received);
        let lib = stdlib(py)?;
        let state = proto.get(intern!(py, "_state"))?;
        if state.is(lib.do_handshake.bind(py)) {
            method(&proto.obj, intern!(py, "_do_handshake"), &[])?;
        } else if state.is(lib.wrapped.bind(py)) {
            self.do_read_impl(&proto)?;
        } else if state.is(lib.flushing.bind(py)) {
            method(&proto.obj, intern!(py, "_do_flush"), &[])?;
        } else if state.is(lib.shutdown.bind(py)) {
            method(&proto.obj, intern!(py, "_do_shutdown"), &[])?;
        }
        Ok(())
    }

    /// `SSLProtocol._do_read`.
    fn do_read(&self, py: Python<'_>) -> PyResult<()> {
        match self.protocol(py) {
            Some(proto) => self.do_read_impl(&proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._do_write`.
    fn do_write(&self, py: Python<'_>) -> PyResult<()> {
        match self.protocol(py) {
            Some(proto) => self.do_write_impl(&proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._process_outgoing`.
    fn process_outgoing(&self, py: Python<'_>) -> PyResult<()> {
        match self.protocol(py) {
            Some(proto) => self.process_outgoing_impl(&proto),
            None => Ok(()),
        }
    }

    /// The application transport's `write(data)`.
    fn app_write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        // asyncio's transport forgets its SSL layer on a second close(),
        // and a write then fails on the missing layer.
        if let Some(transport) = self.app_transport.bind(py).upgrade() {
            if transport.getattr(intern!(py, "_ssl_protocol"))?.is_none() {
                let missing = py
                    .None()
                    .into_bound(py)
                    .getattr(intern!(py, "_write_appdata"));
                return missing.map(drop);
            }
        }
        // Gone only if this method outlived both the transport and the
        // layer (kept by the program after the connection was lost): the
        // write is dropped, as writes after the close are.
        let Some(proto) = self.protocol(py) else {
            return Ok(());
        };
        let lib = stdlib(py)?;
        let state = proto.get(intern!(py, "_state"))?;
        if state.is(lib.flushing.bind(py))
            || state.is(lib.shutdown.bind(py))
            || state.is(lib.unwrapped.bind(py))
        {
            // Counting and warning about writes after the close is the
            // stdlib's business.
            let batch = pyo3::types::PyTuple::new(py, [data])?.into_any();
            return method(&proto.obj, intern!(py, "_write_appdata"), &[&batch]).map(drop);
        }
        let backlog = proto.get(intern!(py, "_write_backlog"))?;
        if !state.is(lib.wrapped.bind(py)) {
            // Still in the handshake: queued for when it completes.
            return Self::queue(&proto, &backlog, data);
        }
        if backlog.len()? > 0 {
            Self::queue(&proto, &backlog, data)?;
            let result = self.do_write_impl(&proto);
            return Self::fatal_unless_base(&proto, result);
        }
        // Nothing queued: the stdlib would queue `data` and write it out at
        // once; writing it first leaves the same state behind without
        // touching the queue.
        let result = (|| {
            let write = self.tls_methods(&proto)?.write;
            match call::call(py, &write, &[data]) {
                Ok(count) => {
                    let written: isize = count.extract()?;
                    if written < data.len()? as isize {
                        Self::queue(&proto, &backlog, &slice(data, written, isize::MAX)?)?;
                        return self.do_write_impl(&proto);
                    }
                }
                Err(err) => {
                    Self::queue(&proto, &backlog, data)?;
                    if !is_again(py, &err, lib.again_errors.bind(py)) {
                        return Err(err);
                    }
                }
            }
            self.process_outgoing_impl(&proto)
        })();
        Self::fatal_unless_base(&proto, result)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for obj in [
            &self.incoming,
            &self.incoming_write,
            &self.outgoing,
            &self.outgoing_read,
            &self.view,
            &self.max_size,
        ] {
            visit.call(obj)?;
        }
        visit.call(&self.proto)?;
        visit.call(&self.app_transport)?;
        self.app_feed
            .try_with(|cached| visit.call(cached.as_ref().map(|(weak, _)| weak)))
            .unwrap_or(Ok(()))?;
        self.tls
            .try_with(|t| match t {
                Some(t) => {
                    visit.call(&t.outer)?;
                    visit.call(&t.read)?;
                    visit.call(&t.write)?;
                    visit.call(&t.pending)
                }
                None => Ok(()),
            })
            .unwrap_or(Ok(()))?;
        self.sink.try_with(|s| visit.call(s)).unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        drop(self.tls.try_take());
        drop(self.sink.try_take());
        drop(self.app_feed.try_take());
    }
}
