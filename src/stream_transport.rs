//! Stream transports over connected sockets (TCP and Unix): the native half
//! of `ferroloop._transport.SocketTransport`, following the state machine of
//! asyncio's `_SelectorSocketTransport`.
//!
//! Reads go from the kernel into the `bytes` object handed to
//! `data_received`, into the buffer a `BufferedProtocol` lends, or, for
//! asyncio's own streams, onto the StreamReader's buffer (`stream_feed`). Writes
//! are tried at once when nothing is queued; what the kernel does not take
//! is queued and flushed with one `sendmsg` per writable report.
//!
//! Every call into Python (protocol callbacks, the exception handler)
//! happens outside the state borrow; the state is only read and updated
//! between them.

use std::os::fd::RawFd;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyKeyboardInterrupt, PyRuntimeError, PySystemExit,
    PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::PyTraverseError;

use crate::call::{self, copy_current_context, while_handling};
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::fd_registry::Direction;
use crate::gil_cell::GilCell;
use crate::handles::{Handle, NativeSpec};
use crate::py_bytes::{recv_new_bytes, recv_scratch, ByteView};
use crate::stream_feed;
use crate::sys::net;
use crate::tls_pump::TlsPump;
use crate::write_buffer::WriteBuffer;

/// The transport's fd callbacks, and the Python-visible methods that do the
/// same work (named in reprs and error reports).
static ON_READABLE: NativeSpec = NativeSpec {
    call: StreamTransport::on_readable,
    name: "_read_ready",
};
static ON_WRITABLE: NativeSpec = NativeSpec {
    call: StreamTransport::on_writable,
    name: "_write_ready",
};

/// Largest read handed to `data_received` (asyncio's `max_size`).
const MAX_READ: usize = 256 * 1024;
const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// asyncio warns once a closed transport has been written to this often.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// How the protocol takes incoming data. Its methods are looked up at each
/// read, as asyncio does: a protocol may lack them until data comes, and a
/// program (or a test's mock) may replace them on the instance or class.
enum Reader {
    /// `data_received(data)`.
    Data { protocol: Py<PyAny> },
    /// asyncio's own StreamReaderProtocol: data goes straight into its
    /// StreamReader (see `stream_feed`), or to `data_received` when that
    /// does not apply.
    Stream { protocol: Py<PyAny> },
    /// `get_buffer(-1)`, then `buffer_updated(nbytes)`.
    Buffered { protocol: Py<PyAny> },
    /// ferroloop's TLS layer: received straight into its buffer.
    Tls { pump: Py<TlsPump> },
}

impl Reader {
    fn clone_ref(&self, py: Python<'_>) -> Reader {
        match self {
            Reader::Data { protocol } => Reader::Data {
                protocol: protocol.clone_ref(py),
            },
            Reader::Stream { protocol } => Reader::Stream {
                protocol: protocol.clone_ref(py),
            },
            Reader::Buffered { protocol } => Reader::Buffered {
                protocol: protocol.clone_ref(py),
            },
            Reader::Tls { pump } => Reader::Tls {
                pump: pump.clone_ref(py),
            },
        }
    }
}

#[derive(Default)]
struct State {
    /// The Python transport object protocols see; dropped with the
    /// connection so the two objects do not keep each other alive.
    wrapper: Option<Py<PyAny>>,
    sock: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    reader: Option<Reader>,
    server: Option<Py<PyAny>>,
    /// The persistent read and write handles queued on readiness.
    handles: Option<(Py<Handle>, Py<Handle>)>,
    buffer: WriteBuffer,
    high_water: usize,
    low_water: usize,
    /// The limits as the user gave them, returned by
    /// get_write_buffer_limits (asyncio keeps floats and huge ints as is).
    limits: Option<(Py<PyAny>, Py<PyAny>)>,
    /// Non-zero once connection_lost is scheduled; counts later writes.
    conn_lost: u32,
    /// connection_lost has run: the fd number may belong to someone else.
    lost: bool,
    closing: bool,
    eof: bool,
    paused: bool,
    protocol_paused: bool,
    reading: bool,
    writing: bool,
    /// Future that completes when the write buffer drains (sendfile).
    empty_waiter: Option<Py<PyAny>>,
}

#[pyclass(module = "ferroloop._core", frozen)]
pub struct StreamTransport {
    fd: RawFd,
    loop_: Py<PyAny>,
    state: GilCell<State>,
}

fn buffered_protocol_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.import(py, "asyncio.protocols", "BufferedProtocol")
        .map(|t| t.as_any())
}

/// A water mark for comparisons with byte counts: `n > x` is `n > floor(x)`
/// for any real x >= 0, and anything beyond usize is as good as infinite.
fn saturating_usize(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if value.ge(usize::MAX)? {
        return Ok(usize::MAX);
    }
    let floor = value
        .py()
        .import(intern!(value.py(), "math"))?
        .getattr(intern!(value.py(), "floor"))?;
    floor.call1((value,))?.extract()
}

fn is_fatal_for_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

impl StreamTransport {
    fn core<'a>(&'a self, py: Python<'a>) -> PyResult<&'a LoopCore> {
        let bound: &'a Bound<'a, PyAny> = self.loop_.bind(py);
        Ok(bound.cast::<LoopCore>()?.get())
    }

    fn handle(&self, py: Python<'_>, direction: Direction) -> Option<Py<Handle>> {
        self.state.with(py, |st| {
            st.handles.as_ref().map(|(r, w)| match direction {
                Direction::Read => r.clone_ref(py),
                Direction::Write => w.clone_ref(py),
            })
        })
    }

    fn watch(&self, py: Python<'_>, direction: Direction) -> PyResult<()> {
        let Some(handle) = self.handle(py, direction) else {
            return Ok(());
        };
        self.core(py)?.watch(py, self.fd, direction, &handle)?;
        self.state.with(py, |st| match direction {
            Direction::Read => st.reading = true,
            Direction::Write => st.writing = true,
        });
        Ok(())
    }

    fn unwatch(&self, py: Python<'_>, direction: Direction) -> PyResult<()> {
        let was = self.state.with(py, |st| {
            let flag = match direction {
                Direction::Read => &mut st.reading,
                Direction::Write => &mut st.writing,
            };
            std::mem::replace(flag, false)
        });
        if was {
            self.core(py)?.unwatch(py, self.fd, direction)?;
        }
        Ok(())
    }

    pub(crate) fn wrapper<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.state
            .with(py, |st| st.wrapper.as_ref().map(|w| w.clone_ref(py)))
            .map(|w| w.into_bound(py))
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.state
            .with(py, |st| st.protocol.as_ref().map(|p| p.clone_ref(py)))
            .map(|p| p.into_bound(py))
    }

    /// asyncio's `_fatal_error`: reported through the Python transport
    /// (which logs or calls the exception handler as asyncio does), then the
    /// connection is force-closed. SystemExit and KeyboardInterrupt are
    /// returned to stop the loop instead.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if is_fatal_for_loop(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        match slf.get().wrapper(py) {
            Some(wrapper) => {
                let message = pyo3::types::PyString::new(py, message);
                while_handling(py, &exc, || {
                    call::call_method(
                        py,
                        &wrapper,
                        intern!(py, "_fatal_error"),
                        &[&exc, message.as_any()],
                    )
                })
                .map(drop)
            }
            None => Self::force_close(slf, Some(&exc)),
        }
    }

    /// asyncio's `_force_close`: drop queued data, stop both directions and
    /// schedule connection_lost (once).
    fn force_close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let step = this.state.with(py, |st| {
            if st.conn_lost > 0 {
                return None;
            }
            let had_buffer = !st.buffer.is_empty();
            st.buffer.clear();
            Some((had_buffer, std::mem::replace(&mut st.closing, true)))
        });
        let Some((had_buffer, was_closing)) = step else {
            return Ok(());
        };
        if had_buffer {
            this.unwatch(py, Direction::Write)?;
        }
        if !was_closing {
            this.unwatch(py, Direction::Read)?;
        }
        this.state.with(py, |st| st.conn_lost += 1);
        Self::schedule_connection_lost(slf, exc)
    }

    fn schedule_connection_lost(
        slf: &Bound<'_, Self>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let exc = exc.cloned().unwrap_or_else(|| py.None().into_bound(py));
        slf.get()
            .loop_
            .bind(py)
            .call_method1(intern!(py, "call_soon"), (callback, exc))?;
        Ok(())
    }

    // ---- reading ---------------------------------------------------------

    fn on_readable(target: &Bound<'_, PyAny>) -> PyResult<()> {
        let slf = target.cast::<StreamTransport>()?;
        let py = slf.py();
        let reader = slf.get().state.with(py, |st| {
            if st.conn_lost > 0 {
                None
            } else {
                st.reader.as_ref().map(|r| r.clone_ref(py))
            }
        });
        match reader {
            None => Ok(()),
            Some(Reader::Data { protocol }) => Self::read_data(slf, protocol.bind(py)),
            Some(Reader::Stream { protocol }) => Self::read_stream(slf, protocol.bind(py)),
            Some(Reader::Buffered { protocol }) => Self::read_into_buffer(slf, protocol.bind(py)),
            Some(Reader::Tls { pump }) => Self::read_into_tls(slf, pump.bind(py)),
        }
    }

    /// `read_into_buffer` for ferroloop's TLS layer, whose buffer is known
    /// and always lent whole: the same steps without the two Python calls.
    fn read_into_tls(slf: &Bound<'_, Self>, pump: &Bound<'_, TlsPump>) -> PyResult<()> {
        let py = slf.py();
        let pump = pump.get();
        let (buf, len) = pump.receive_buffer();
        // SAFETY: the pump keeps its buffer exported, so it is writable for
        // `len` bytes and cannot move while the pump lives.
        let received = unsafe { net::recv(slf.get().fd, buf, len) };
        let Some(nbytes) = Self::received_into_buffer(slf, received)? else {
            return Ok(());
        };
        // recv never returns more than `len`, which fits an isize.
        let nbytes = isize::try_from(nbytes).unwrap_or(isize::MAX);
        Self::after_buffer_updated(slf, pump.buffer_updated(py, nbytes))
    }

    /// `sock.recv_into(buf)` through the socket object, for a buffer the
    /// native receive cannot take; would-block as an io error, as the
    /// native receive gives it.
    fn recv_into_by_socket(
        slf: &Bound<'_, Self>,
        buf: &Bound<'_, PyAny>,
    ) -> PyResult<std::io::Result<usize>> {
        let py = slf.py();
        let Some(sock) = slf.get()._sock(py) else {
            return Ok(Err(std::io::Error::from_raw_os_error(libc::EBADF)));
        };
        match sock.bind(py).call_method1(intern!(py, "recv_into"), (buf,)) {
            Ok(n) => Ok(Ok(n.extract()?)),
            Err(err)
                if err.is_instance_of::<PyBlockingIOError>(py)
                    || err.is_instance_of::<PyInterruptedError>(py) =>
            {
                Ok(Err(std::io::ErrorKind::WouldBlock.into()))
            }
            Err(err) => Err(err),
        }
    }

    /// A receive into a lent buffer (or a stream's): `Some(n)` bytes
    /// received, or `None` once end of stream, a would-block or a read error
    /// has been dealt with.
    fn received_into_buffer(
        slf: &Bound<'_, Self>,
        received: std::io::Result<usize>,
    ) -> PyResult<Option<usize>> {
        match received {
            Ok(0) => Self::on_eof(slf).map(|()| None),
            Ok(n) => Ok(Some(n)),
            Err(err) if net::would_block(&err) => Ok(None),
            Err(err) => {
                Self::fatal_error(slf, os_error(&err), "Fatal read error on socket transport")
                    .map(|()| None)
            }
        }
    }

    /// What `buffer_updated` returned: an error ends the connection.
    fn after_buffer_updated(slf: &Bound<'_, Self>, outcome: PyResult<()>) -> PyResult<()> {
        outcome.or_else(|err| {
            Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.buffer_updated() call failed.",
            )
        })
    }

    fn read_data(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let fd = this.fd;
        let received = recv_new_bytes(py, fd, MAX_READ)?;
        let data = match received {
            Ok(data) => data,
            Err(err) if net::would_block(&err) => return Ok(()),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    os_error(&err),
                    "Fatal read error on socket transport",
                )
            }
        };
        if data.as_bytes().is_empty() {
            return Self::on_eof(slf);
        }
        let data_received = intern!(py, "data_received");
        match call::call_method(py, protocol, data_received, &[data.as_any()]) {
            Ok(_) => Ok(()),
            Err(err) => Self::fatal_error(
                slf,
                err,
                "Fatal error: protocol.data_received() call failed.",
            ),
        }
    }

    /// `read_data` for asyncio's streams: the data is appended to the
    /// StreamReader's buffer from the read buffer, with no bytes object and
    /// no Python frame, when `stream_feed` can stand in for the protocol.
    fn read_stream(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let fed = stream_feed::target(protocol).and_then(|target| match target {
            stream_feed::Target::DataReceived => Ok(None),
            stream_feed::Target::Nowhere => {
                recv_scratch(slf.get().fd, MAX_READ, |data| Ok(data.len())).map(Some)
            }
            stream_feed::Target::Reader { reader, buffer } => {
                let received = recv_scratch(slf.get().fd, MAX_READ, |data| {
                    stream_feed::append(&buffer, data).map(|()| data.len())
                })?;
                if matches!(received, Ok(n) if n > 0) {
                    stream_feed::after_append(&reader, &buffer)?;
                }
                Ok(Some(received))
            }
        });
        let received = match fed {
            Ok(None) => return Self::read_data(slf, protocol),
            Ok(Some(received)) => received,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.data_received() call failed.",
                )
            }
        };
        Self::received_into_buffer(slf, received).map(drop)
    }

    fn read_into_buffer(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let minus_one = (-1i32).into_pyobject(py)?.into_any();
        let get_buffer = intern!(py, "get_buffer");
        let lent = call::call_method(py, protocol, get_buffer, &[&minus_one]).and_then(|buf| {
            if buf.len()? == 0 {
                return Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ));
            }
            Ok(buf)
        });
        let buf = match lent {
            Ok(buf) => buf,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        let received = match ByteView::write(&buf) {
            Ok(view) => {
                // SAFETY: the view is writable for `len` bytes while held.
                let received = unsafe { net::recv(slf.get().fd, view.as_ptr(), view.len()) };
                drop(view);
                received
            }
            // Not a buffer this can receive into: the socket's own
            // recv_into() receives, or raises what asyncio's transport gets
            // from it (a read-only buffer's TypeError, say).
            Err(_) => match Self::recv_into_by_socket(slf, &buf) {
                Ok(received) => received,
                Err(err) => {
                    return Self::fatal_error(slf, err, "Fatal read error on socket transport")
                }
            },
        };
        let Some(nbytes) = Self::received_into_buffer(slf, received)? else {
            return Ok(());
        };
        let nbytes = nbytes.into_pyobject(py)?.into_any();
        let buffer_updated = intern!(py, "buffer_updated");
        let updated = call::call_method(py, protocol, buffer_updated, &[&nbytes]);
        Self::after_buffer_updated(slf, updated.map(drop))
    }

    /// The peer finished sending: `eof_received()` decides whether the
    /// transport stays open for writing.
    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.core(py)?.debug() {
            if let Some(wrapper) = this.wrapper(py) {
                wrapper.call_method1(intern!(py, "_log_debug"), ("%r received EOF",))?;
            }
        }
        let Some(protocol) = this.protocol(py) else {
            return Ok(());
        };
        let keep_open = match call::call_method(py, &protocol, intern!(py, "eof_received"), &[])
            .and_then(|r| r.is_truthy())
        {
            Ok(keep_open) => keep_open,
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open {
            // The protocol may still write; there is nothing left to read.
            this.unwatch(py, Direction::Read)
        } else {
            Self::close_impl(slf)
        }
    }

    // ---- writing ---------------------------------------------------------

    fn on_writable(target: &Bound<'_, PyAny>) -> PyResult<()> {
        let slf = target.cast::<StreamTransport>()?;
        let py = slf.py();
        let this = slf.get();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; net::MAX_IOVECS];
        let sent = this.state.with(py, |st| {
            if st.conn_lost > 0 {
                return None;
            }
            let count = st.buffer.fill_iovecs(py, &mut iov);
            let result = net::send_vectored(this.fd, &iov[..count]);
            if let Ok(n) = result {
                st.buffer.consume(py, n);
            }
            Some(result)
        });
        match sent {
            None => Ok(()),
            Some(Err(err)) if net::would_block(&err) => Ok(()),
            Some(Err(err)) => {
                this.unwatch(py, Direction::Write)?;
                this.state.with(py, |st| st.buffer.clear());
                let exc = os_error(&err);
                let waiter_exc = exc.clone_ref(py).into_value(py);
                Self::fatal_error(slf, exc, "Fatal write error on socket transport")?;
                if let Some(waiter) = this
                    .state
                    .with(py, |st| st.empty_waiter.as_ref().map(|w| w.clone_ref(py)))
                {
                    waiter
                        .bind(py)
                        .call_method1(intern!(py, "set_exception"), (waiter_exc,))?;
                }
                Ok(())
            }
            Some(Ok(_)) => Self::after_flush(slf),
        }
    }

    /// Progress was made on the buffer: resume a paused protocol below the
    /// low-water mark, and finish what waited for an empty buffer.
    fn after_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        Self::maybe_resume_protocol(slf)?;
        let (empty, closing, eof) = this
            .state
            .with(py, |st| (st.buffer.is_empty(), st.closing, st.eof));
        if !empty {
            return Ok(());
        }
        this.unwatch(py, Direction::Write)?;
        if let Some(waiter) = this
            .state
            .with(py, |st| st.empty_waiter.as_ref().map(|w| w.clone_ref(py)))
        {
            waiter
                .bind(py)
                .call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            Self::call_connection_lost(slf, None)
        } else if eof {
            net::shutdown_write(this.fd).map_err(|e| os_error(&e))
        } else {
            Ok(())
        }
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pause = slf.get().state.with(py, |st| {
            let over = st.buffer.len() > st.high_water && !st.protocol_paused;
            if over {
                st.protocol_paused = true;
            }
            over
        });
        if pause {
            Self::notify_protocol(slf, "pause_writing")?;
        }
        Ok(())
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let resume = slf.get().state.with(py, |st| {
            let under = st.protocol_paused && st.buffer.len() <= st.low_water;
            if under {
                st.protocol_paused = false;
            }
            under
        });
        if resume {
            Self::notify_protocol(slf, "resume_writing")?;
        }
        Ok(())
    }

    /// Flow-control callbacks: their errors go to the exception handler and
    /// the connection stays up, as in asyncio.
    fn notify_protocol(slf: &Bound<'_, Self>, method: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(protocol) = this.protocol(py) else {
            return Ok(());
        };
        let name = pyo3::types::PyString::new(py, method);
        let Err(err) = call::call_method(py, &protocol, &name, &[]) else {
            return Ok(());
        };
        if is_fatal_for_loop(py, &err) {
            return Err(err);
        }
        let exc = err.into_value(py).into_bound(py).into_any();
        let context = PyDict::new(py);
        context.set_item("message", format!("protocol.{method}() failed"))?;
        context.set_item("exception", &exc)?;
        context.set_item("transport", this.wrapper(py))?;
        context.set_item("protocol", &protocol)?;
        let loop_ = this.loop_.bind(py);
        while_handling(py, &exc, || {
            loop_.call_method1(intern!(py, "call_exception_handler"), (context,))
        })?;
        Ok(())
    }

    fn close_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (was_closing, empty) = this.state.with(py, |st| {
            (
                std::mem::replace(&mut st.closing, true),
                st.buffer.is_empty(),
            )
        });
        if was_closing {
            return Ok(());
        }
        this.unwatch(py, Direction::Read)?;
        if empty {
            this.state.with(py, |st| st.conn_lost += 1);
            this.unwatch(py, Direction::Write)?;
            Self::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    /// The protocol's last callback, then the socket is closed and every
    /// reference between transport, protocol, server and loop is dropped.
    fn call_connection_lost(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let first = this.state.with(py, |st| {
            let first = !std::mem::replace(&mut st.lost, true);
            // Later writes are dropped, never sent to a reused fd number.
            st.conn_lost = st.conn_lost.max(1);
            first
        });
        if !first {
            return Ok(());
        }
        // While the fd number is still ours.
        this.unwatch(py, Direction::Read)?;
        this.unwatch(py, Direction::Write)?;
        let (protocol, sock, server, wrapper, handles) = this.state.with(py, |st| {
            st.reader = None;
            (
                st.protocol.take(),
                st.sock.take(),
                st.server.take(),
                st.wrapper.take(),
                st.handles.take(),
            )
        });
        let exc = exc.cloned().unwrap_or_else(|| py.None().into_bound(py));
        let outcome = match &protocol {
            Some(protocol) => call::call_method(
                py,
                protocol.bind(py),
                intern!(py, "connection_lost"),
                &[&exc],
            )
            .map(drop),
            None => Ok(()),
        };
        let mut cleanup = Ok(());
        if let Some(sock) = sock {
            cleanup = sock.bind(py).call_method0(intern!(py, "close")).map(drop);
        }
        if let (Ok(core), Some(wrapper)) = (this.core(py), &wrapper) {
            core.release_fd_transport(py, this.fd, wrapper.bind(py));
        }
        if let (Some(server), Some(wrapper)) = (server, &wrapper) {
            server
                .bind(py)
                .call_method1(intern!(py, "_detach"), (wrapper,))?;
        }
        drop((protocol, wrapper, handles));
        outcome.and(cleanup)
    }

    fn set_protocol_impl(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let owned = protocol.clone().unbind();
        let reader = if protocol.is_instance(buffered_protocol_type(py)?)? {
            match Self::tls_pump_of(protocol) {
                Some(pump) => Reader::Tls {
                    pump: pump.unbind(),
                },
                None => Reader::Buffered { protocol: owned },
            }
        } else if stream_feed::applies(protocol) {
            Reader::Stream { protocol: owned }
        } else {
            Reader::Data { protocol: owned }
        };
        let protocol = protocol.clone().unbind();
        let previous = self.state.with(py, |st| {
            (st.protocol.replace(protocol), st.reader.replace(reader))
        });
        drop(previous);
        Ok(())
    }

    /// The TLS layer's pump, if `protocol`'s buffer methods are the TLS
    /// layer's own (looked up now: it never replaces them).
    fn tls_pump_of<'py>(protocol: &Bound<'py, PyAny>) -> Option<Bound<'py, TlsPump>> {
        let py = protocol.py();
        let get_buffer = protocol.getattr(intern!(py, "get_buffer")).ok()?;
        let buffer_updated = protocol.getattr(intern!(py, "buffer_updated")).ok()?;
        TlsPump::owning(&get_buffer, &buffer_updated)
    }

    /// `write()`'s data as bytes the transport can send: `bytes` shared,
    /// other buffers viewed (and copied only if they must be queued).
    fn check_write_data(data: &Bound<'_, PyAny>) -> PyResult<()> {
        if data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>()
        {
            return Ok(());
        }
        let name = data.get_type().name()?;
        Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {}",
            name.repr()?
        )))
    }

    /// Queues `data[offset..]`.
    fn enqueue(&self, py: Python<'_>, data: &Bound<'_, PyAny>, view: &ByteView, offset: usize) {
        let shared = data.cast::<PyBytes>().ok().map(|b| b.clone().unbind());
        self.state.with(py, |st| match shared {
            Some(bytes) => st.buffer.push_shared(py, bytes, offset),
            None => st.buffer.push_copy(&view.as_slice()[offset..]),
        });
    }

    fn write_checks(&self, py: Python<'_>, what: &str) -> PyResult<Option<u32>> {
        let (eof, sendfile, conn_lost) = self
            .state
            .with(py, |st| (st.eof, st.empty_waiter.is_some(), st.conn_lost));
        if eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        if sendfile {
            let verb = if what == "write" {
                "write"
            } else {
                "writelines"
            };
            return Err(PyRuntimeError::new_err(format!(
                "unable to {verb}; sendfile is in progress"
            )));
        }
        Ok((conn_lost > 0).then_some(conn_lost))
    }

    /// A write after the connection was lost is dropped; asyncio warns once
    /// there have been a few.
    fn note_write_after_loss(&self, py: Python<'_>, conn_lost: u32) -> PyResult<()> {
        if conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            let logger = py.import("asyncio.base_events")?.getattr("logger")?;
            logger.call_method1("warning", ("socket.send() raised exception.",))?;
        }
        self.state.with(py, |st| st.conn_lost += 1);
        Ok(())
    }
}

#[pymethods]
impl StreamTransport {
    /// Builds the native transport for `sock` (connected, non-blocking).
    /// `wrapper` is the asyncio.Transport object protocols will see.
    #[staticmethod]
    fn create(
        py: Python<'_>,
        loop_: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        wrapper: &Bound<'_, PyAny>,
        server: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<StreamTransport>> {
        let core = loop_.cast::<LoopCore>()?.get();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        if fd < 0 {
            return Err(PyValueError::new_err("the socket is closed"));
        }
        let transport = Py::new(
            py,
            StreamTransport {
                fd,
                loop_: loop_.clone().unbind(),
                state: GilCell::new(State {
                    wrapper: Some(wrapper.clone().unbind()),
                    sock: Some(sock.clone().unbind()),
                    server: server.map(|s| s.clone().unbind()),
                    high_water: DEFAULT_HIGH_WATER,
                    low_water: DEFAULT_HIGH_WATER / 4,
                    ..State::default()
                }),
            },
        )?;
        let bound = transport.bind(py);
        // Callbacks run in the context current when the transport was made,
        // as asyncio's reader handles copy it when they are registered.
        let context = copy_current_context(py)?;
        let read = Handle::native(py, bound.as_any(), &ON_READABLE, &context, loop_)?;
        let write = Handle::native(py, bound.as_any(), &ON_WRITABLE, &context, loop_)?;
        bound
            .get()
            .state
            .with(py, |st| st.handles = Some((read, write)));
        bound.get().set_protocol_impl(py, protocol)?;
        core.set_fd_transport(py, fd, Some(wrapper))?;
        Ok(transport)
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    /// The socket, until the connection is lost.
    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .with(py, |st| st.sock.as_ref().map(|s| s.clone_ref(py)))
    }

    /// Whether the protocol was told to pause writing (sendfile's fallback
    /// must not write until it resumes).
    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.state.with(py, |st| st.protocol_paused)
    }

    /// Reading paused by `pause_reading()` (the selector transport's
    /// `_paused`, which 3.10's SSL layer reads).
    #[getter]
    fn _paused(&self, py: Python<'_>) -> bool {
        self.state.with(py, |st| st.paused)
    }

    #[getter]
    fn _server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .with(py, |st| st.server.as_ref().map(|s| s.clone_ref(py)))
    }

    /// Starts reading, unless the protocol paused reading (or closed) in
    /// connection_made.
    fn _start_reading(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.with(py, |st| !st.paused && !st.closing) {
            self.watch(py, Direction::Read)?;
        }
        Ok(())
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::on_readable(slf.as_any())
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::on_writable(slf.as_any())
    }

    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        Self::check_write_data(data)?;
        let lost = this.write_checks(py, "write")?;
        let view = match ByteView::read(data) {
            Ok(view) => view,
            Err(err) => {
                // asyncio's `if not data: return` comes first: a released
                // memoryview raises there, an empty one returns.
                if data.len()? == 0 {
                    return Ok(());
                }
                return match lost {
                    Some(conn_lost) => this.note_write_after_loss(py, conn_lost),
                    // asyncio fails in send(): the connection ends with
                    // the error (a non-contiguous memoryview, say), and
                    // write() itself returns.
                    None => Self::fatal_error(slf, err, "Fatal write error on socket transport"),
                };
            }
        };
        if view.len() == 0 {
            return Ok(());
        }
        if let Some(conn_lost) = lost {
            return this.note_write_after_loss(py, conn_lost);
        }
        let mut offset = 0;
        if this.state.with(py, |st| st.buffer.is_empty()) {
            match net::send(this.fd, view.as_slice()) {
                Ok(n) if n == view.len() => return Ok(()),
                Ok(n) => offset = n,
                Err(err) if net::would_block(&err) => {}
                Err(err) => {
                    drop(view);
                    return Self::fatal_error(
                        slf,
                        os_error(&err),
                        "Fatal write error on socket transport",
                    );
                }
            }
            this.watch(py, Direction::Write)?;
        }
        this.enqueue(py, data, &view, offset);
        drop(view);
        Self::maybe_pause_protocol(slf)
    }

    /// All buffers in order, sent with as few system calls as possible.
    /// (asyncio 3.12+'s writelines; before 3.12 the Python transport joins
    /// the buffers and calls write(), as asyncio does.)
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lost = this.write_checks(py, "writelines")?;
        if !list_of_data.is_truthy()? {
            return Ok(());
        }
        let items: Vec<Bound<'_, PyAny>> = list_of_data.try_iter()?.collect::<PyResult<_>>()?;
        for item in &items {
            // asyncio takes memoryview(data) of each: anything that is not
            // a buffer, or a released memoryview, raises there.
            if Self::check_write_data(item).is_err() || item.is_instance_of::<PyMemoryView>() {
                PyMemoryView::from(item)?;
            }
        }
        if let Some(conn_lost) = lost {
            return this.note_write_after_loss(py, conn_lost);
        }
        let mut views = Vec::with_capacity(items.len());
        for item in &items {
            match ByteView::read(item) {
                Ok(view) => views.push(view),
                Err(err) => {
                    drop(views);
                    return Self::fatal_error(slf, err, "Fatal write error on socket transport");
                }
            }
        }
        let was_empty = this.state.with(py, |st| st.buffer.is_empty());
        for (item, view) in items.iter().zip(&views) {
            this.enqueue(py, item, view, 0);
        }
        drop(views);
        if was_empty {
            // Same as a writable report: one sendmsg for all of it.
            Self::on_writable(slf.as_any())?;
            let pending = this
                .state
                .with(py, |st| !st.buffer.is_empty() && st.conn_lost == 0);
            if pending {
                this.watch(py, Direction::Write)?;
            }
        }
        Self::maybe_pause_protocol(slf)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let shut_now = self.state.with(py, |st| {
            if st.closing || st.eof {
                return None;
            }
            st.eof = true;
            Some(st.buffer.is_empty())
        });
        if shut_now == Some(true) {
            net::shutdown_write(self.fd).map_err(|e| os_error(&e))?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_impl(slf)
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    #[pyo3(signature = (exc=None))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::force_close(slf, exc.filter(|e| !e.is_none()))
    }

    #[pyo3(signature = (exc=None))]
    fn _call_connection_lost(
        slf: &Bound<'_, Self>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::call_connection_lost(slf, exc.filter(|e| !e.is_none()))
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.with(py, |st| st.closing)
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.state.with(py, |st| !st.paused && !st.closing)
    }

    /// Returns whether reading was actually paused (for debug logging).
    fn pause_reading(&self, py: Python<'_>) -> PyResult<bool> {
        let paused = self.state.with(py, |st| {
            let reading = !st.paused && !st.closing;
            if reading {
                st.paused = true;
            }
            reading
        });
        if paused {
            self.unwatch(py, Direction::Read)?;
        }
        Ok(paused)
    }

    /// Returns whether reading was actually resumed (for debug logging).
    fn resume_reading(&self, py: Python<'_>) -> PyResult<bool> {
        let resumed = self.state.with(py, |st| {
            let resume = st.paused && !st.closing;
            if resume {
                st.paused = false;
            }
            resume
        });
        if resumed {
            self.watch(py, Direction::Read)?;
        }
        Ok(resumed)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let high = high.filter(|v| !v.is_none());
        let low = low.filter(|v| !v.is_none());
        let four = 4i32.into_pyobject(py)?;
        let high = match (high, low) {
            (Some(h), _) => h.clone(),
            (None, Some(l)) => l.mul(&four)?,
            (None, None) => DEFAULT_HIGH_WATER.into_pyobject(py)?.into_any(),
        };
        let low = match low {
            Some(l) => l.clone(),
            None => high.floor_div(&four)?,
        };
        if !(high.ge(&low)? && low.ge(0)?) {
            return Err(PyValueError::new_err(format!(
                "high ({}) must be >= low ({}) must be >= 0",
                high.repr()?,
                low.repr()?
            )));
        }
        let (high_water, low_water) = (saturating_usize(&high)?, saturating_usize(&low)?);
        let limits = (low.unbind(), high.unbind());
        let previous = slf.get().state.with(py, |st| {
            st.high_water = high_water;
            st.low_water = low_water;
            st.limits.replace(limits)
        });
        drop(previous);
        Self::maybe_pause_protocol(slf)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let given = self.state.with(py, |st| {
            st.limits
                .as_ref()
                .map(|(l, h)| (l.clone_ref(py), h.clone_ref(py)))
        });
        match given {
            Some(limits) => Ok(limits),
            None => {
                let (low, high) = self.state.with(py, |st| (st.low_water, st.high_water));
                Ok((
                    low.into_pyobject(py)?.into_any().unbind(),
                    high.into_pyobject(py)?.into_any().unbind(),
                ))
            }
        }
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state.with(py, |st| st.buffer.len())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py).map(Bound::unbind)
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_impl(py, protocol)
    }

    /// A future done once everything queued has been sent (sendfile waits
    /// on it before using the socket directly).
    fn _make_empty_waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.state.with(py, |st| st.empty_waiter.is_some()) {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = self
            .loop_
            .bind(py)
            .call_method0(intern!(py, "create_future"))?;
        if self.state.with(py, |st| st.buffer.is_empty()) {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        let stored = waiter.clone().unbind();
        self.state.with(py, |st| st.empty_waiter = Some(stored));
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        drop(self.state.with(py, |st| st.empty_waiter.take()));
    }

    /// Hands the fd to, or takes it back from, the loop's plain fd
    /// callbacks (sendfile drives the socket itself meanwhile).
    fn _set_fd_owned(&self, py: Python<'_>, owned: bool) -> PyResult<()> {
        let wrapper = if owned { self.wrapper(py) } else { None };
        self.core(py)?
            .set_fd_transport(py, self.fd, wrapper.as_ref())
    }

    /// (socket closed, closing, reading registered, writing registered,
    /// buffered bytes), for the transport's repr.
    fn _repr_state(&self, py: Python<'_>) -> (bool, bool, bool, bool, usize) {
        self.state.with(py, |st| {
            (
                st.sock.is_none(),
                st.closing,
                st.reading,
                st.writing,
                st.buffer.len(),
            )
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        self.state
            .try_with(|st| {
                for obj in [
                    &st.wrapper,
                    &st.sock,
                    &st.protocol,
                    &st.server,
                    &st.empty_waiter,
                ] {
                    visit.call(obj)?;
                }
                if let Some((low, high)) = &st.limits {
                    visit.call(low)?;
                    visit.call(high)?;
                }
                match &st.reader {
                    Some(
                        Reader::Data { protocol }
                        | Reader::Stream { protocol }
                        | Reader::Buffered { protocol },
                    ) => visit.call(protocol)?,
                    Some(Reader::Tls { pump }) => visit.call(pump)?,
                    None => {}
                }
                if let Some((read, write)) = &st.handles {
                    visit.call(read)?;
                    visit.call(write)?;
                }
                let mut outcome = Ok(());
                st.buffer.for_each_object(|b| {
                    if outcome.is_ok() {
                        outcome = visit.call(b);
                    }
                });
                outcome
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.state.try_take() {
            st.buffer.clear();
            drop(st);
        }
    }
}
