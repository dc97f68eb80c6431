//! The per-datagram work of the datagram transport, in native code:
//! receiving into the thread's scratch buffer, the sender's address built
//! as the socket module builds it, the `datagram_received` call, and sends.
//!
//! The transport itself stays in Python (`_datagram.py`): its queue, flow
//! control and closing are asyncio's state machine, touched once per
//! transport rather than per datagram. It uses this for AF_INET and
//! AF_INET6 sockets of the plain `socket.socket` class only; for any other
//! socket, the socket's own methods are what asyncio calls and what the
//! program may have overridden.
//!
//! A UDP server replies to the address `datagram_received` gave it. That
//! address object is remembered with the raw address it was built from, so
//! a `sendto` to it skips parsing the tuple back (and resolving its host).

use std::os::fd::RawFd;
use std::os::raw::{c_char, c_int};

use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::call::{copy_current_context, take_raised};
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::fd_registry::Direction;
use crate::gil_cell::GilCell;
use crate::handles::{Handle, NativeSpec};
use crate::py_bytes::{recvfrom_scratch, SCRATCH_LEN};
use crate::sys::net::{self, SockAddr};

extern "C" {
    // CPython's C API (3.8+), not exported by PyO3: raises the audit event
    // the socket module raises for the same call.
    fn PySys_Audit(event: *const c_char, format: *const c_char, ...) -> c_int;
}

static ON_READABLE: NativeSpec = NativeSpec {
    call: DatagramIo::on_readable,
    name: "_read_ready",
};

/// Datagrams read in a row while nothing else is queued (see
/// `on_readable`).
const READS_PER_EVENT: u32 = 16;

/// The address object last handed to `datagram_received`, and the raw
/// address it was made from.
struct Peer {
    addr: Py<PyAny>,
    raw: SockAddr,
}

/// A datagram transport's socket, as the transport's native helper (its
/// `_io`).
///
/// The fd callback's target is the Python transport, not this: the loop's
/// registration keeps the transport alive as asyncio's does, and this
/// object holds no reference back to it, so a transport dropped unclosed
/// is freed (and warns) at once, as asyncio's is.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct DatagramIo {
    loop_: Py<LoopCore>,
    /// Held weakly: the transport keeps this object (and its bound
    /// `sendto`) in its attributes.
    transport: Py<PyWeakrefReference>,
    sock: Py<PyAny>,
    /// The transport's `_address` (a connected or broadcast endpoint's
    /// remote address) and its queue of unsent datagrams (a deque).
    address: Option<Py<PyAny>>,
    queue: Py<PyAny>,
    fd: RawFd,
    /// Sends go to the peer the socket is connected to (`send`, not
    /// `sendto`), as the transport decided from its peer name.
    connected: bool,
    last_peer: GilCell<Option<Peer>>,
}

/// The socket module's form of an IPv4 or IPv6 address: `(host, port)` or
/// `(host, port, flowinfo, scope_id)`; None for an empty address.
fn address_object<'py>(py: Python<'py>, raw: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    if let Some(v4) = raw.as_v4() {
        let mut text = [0u8; 15];
        let host = net::ipv4_text(&v4.sin_addr, &mut text);
        let port = u16::from_be(v4.sin_port);
        return Ok((host, port).into_pyobject(py)?.into_any());
    }
    if let Some(v6) = raw.as_v6() {
        let addr = &v6.sin6_addr as *const _ as *const libc::c_void;
        let host = net::ip_text(libc::AF_INET6, addr).map_err(|e| os_error(&e))?;
        let port = u16::from_be(v6.sin6_port);
        let flowinfo = u32::from_be(v6.sin6_flowinfo);
        let tuple = (host, port, flowinfo, v6.sin6_scope_id).into_pyobject(py)?;
        return Ok(tuple.into_any());
    }
    if raw.family() == libc::AF_UNSPEC {
        return Ok(py.None().into_bound(py));
    }
    Err(pyo3::exceptions::PyOSError::new_err(format!(
        "unexpected address family {}",
        raw.family()
    )))
}

/// Whether `raw` can be sent to without parsing its address object again:
/// the socket module would refuse an IPv6 flow label of more than 20 bits
/// in the tuple, so such an address goes through it for its error.
fn reusable(raw: &SockAddr) -> bool {
    raw.as_v6()
        .is_none_or(|v6| u32::from_be(v6.sin6_flowinfo) <= 0xfffff)
}

impl DatagramIo {
    /// Readiness callback on the transport: asyncio's `_read_ready`, which
    /// receives one datagram, plus reading on while nothing else is queued
    /// (see `_datagram.py`).
    fn on_readable(transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = transport.py();
        let io = transport.getattr(intern!(py, "_io"))?;
        let Ok(io) = io.cast::<DatagramIo>() else {
            // Closed since the report was queued.
            return Ok(());
        };
        let this = io.get();
        let core = this.loop_.bind(py).get();
        // A max_size the scratch buffer cannot hold (or that is no size at
        // all) is the Python path's to deal with, as asyncio would.
        let limit = transport
            .getattr(intern!(py, "max_size"))?
            .extract::<usize>()
            .ok()
            .filter(|&n| n <= SCRATCH_LEN);
        let Some(limit) = limit else {
            return transport.call_method0(intern!(py, "_read_ready")).map(drop);
        };
        let mut reads = if core.debug() { 1 } else { READS_PER_EVENT };
        // The transport stops reading (pause_reading, close, a fatal error)
        // by removing this callback, which cancels it: that it runs, and
        // is still registered after each datagram, says what asyncio's
        // checks of `_conn_lost`, `_closing` and `_paused` say.
        loop {
            let received = recvfrom_scratch(this.fd, limit, |data, from| {
                Ok((PyBytes::new(py, data), address_object(py, from)?, *from))
            })?;
            let (data, addr, raw) = match received {
                Ok(received) => received,
                Err(err) if net::would_block(&err) => return Ok(()),
                Err(err) => {
                    let protocol = transport.getattr(intern!(py, "_protocol"))?;
                    // An earlier send's failure reported by the kernel (an
                    // ICMP port unreachable): the endpoint is still usable.
                    let exc = os_error(&err).into_value(py);
                    protocol.call_method1(intern!(py, "error_received"), (exc,))?;
                    return Ok(());
                }
            };
            if reusable(&raw) {
                let peer = Peer {
                    addr: addr.clone().unbind(),
                    raw,
                };
                let old = this.last_peer.with(py, |p| p.replace(peer));
                drop(old);
            }
            let protocol = transport.getattr(intern!(py, "_protocol"))?;
            protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
            reads -= 1;
            if reads == 0 || !core.reads_for(py, this.fd, transport) || core.has_ready(py) {
                return Ok(());
            }
        }
    }

    /// Sends `data` now if asyncio's `sendto` would (see `sendto`): None
    /// when it is not such a datagram, else how the send went.
    fn send_at_once(
        &self,
        transport: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Result<(), PyErr>>> {
        let py = data.py();
        let Some(bytes) = plain_bytes(data).filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        if let Some(address) = &self.address {
            if !(addr.is_none() || addr.is(address.bind(py))) {
                return Ok(None);
            }
            if transport.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
                return Ok(None);
            }
        }
        if self.queue.bind(py).len()? != 0 {
            return Ok(None);
        }
        let sent = if self.connected {
            net::send(self.fd, bytes)
                .map(drop)
                .map_err(|e| os_error(&e))
        } else if self.address.is_some() {
            return Ok(None);
        } else {
            let Some(raw) = self.known_peer(py, addr) else {
                return Ok(None);
            };
            self.send_to_known(py, bytes, addr, &raw)
        };
        Ok(Some(sent))
    }

    /// `sendto` to an address already parsed, raising the audit event the
    /// socket module raises.
    fn send_to_known(
        &self,
        py: Python<'_>,
        bytes: &[u8],
        addr: &Bound<'_, PyAny>,
        raw: &SockAddr,
    ) -> PyResult<()> {
        // SAFETY: both strings are NUL-terminated; "OO" takes two borrowed
        // object pointers, both alive for the call.
        let audited = unsafe {
            PySys_Audit(
                c"socket.sendto".as_ptr(),
                c"OO".as_ptr(),
                self.sock.as_ptr(),
                addr.as_ptr(),
            )
        };
        if audited < 0 {
            return Err(take_raised(py));
        }
        net::send_to(self.fd, bytes, raw)
            .map(drop)
            .map_err(|e| os_error(&e))
    }

    /// The raw address behind `addr`, if it is the object last delivered.
    fn known_peer(&self, py: Python<'_>, addr: &Bound<'_, PyAny>) -> Option<SockAddr> {
        self.last_peer.with(py, |p| {
            p.as_ref()
                .filter(|p| p.addr.bind(py).is(addr))
                .map(|p| p.raw)
        })
    }
}

/// The bytes of `data` if it is a `bytes` or `bytearray` (whose buffer
/// cannot move while the GIL is held and no Python code runs).
fn plain_bytes<'a>(data: &'a Bound<'_, PyAny>) -> Option<&'a [u8]> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Some(bytes.as_bytes());
    }
    // SAFETY: the slice is used only for the system call that follows,
    // before any Python code can resize the bytearray.
    data.cast::<PyByteArray>()
        .ok()
        .map(|array| unsafe { array.as_bytes() })
}

#[pymethods]
impl DatagramIo {
    #[new]
    fn new(
        lp: &Bound<'_, PyAny>,
        transport: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        connected: bool,
        address: &Bound<'_, PyAny>,
        queue: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let py = lp.py();
        let fd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        Ok(DatagramIo {
            loop_: lp.cast::<LoopCore>()?.clone().unbind(),
            transport: PyWeakrefReference::new(transport)?.unbind(),
            sock: sock.clone().unbind(),
            address: address.is_truthy()?.then(|| address.clone().unbind()),
            queue: queue.clone().unbind(),
            fd,
            connected,
            last_peer: GilCell::new(None),
        })
    }

    /// Watches the socket for `transport` (whose `_io` this is) with the
    /// native callback: asyncio's `_add_reader(fd, self._read_ready)`, and
    /// named so in reprs and reports.
    fn start_reading(&self, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = transport.py();
        let lp = self.loop_.bind(py);
        let context = copy_current_context(py)?;
        let handle = Handle::native(py, transport, &ON_READABLE, &context, lp.as_any())?;
        lp.get().watch(py, self.fd, Direction::Read, &handle)
    }

    /// Sends one datagram now, as the transport's `sock.send(data)` or
    /// `sock.sendto(data, addr)` would, raising what they raise (a
    /// `BlockingIOError` when the kernel has no room).
    fn send(&self, data: &Bound<'_, PyAny>, addr: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        let sock = self.sock.bind(py);
        if self.connected {
            return match plain_bytes(data) {
                Some(bytes) => net::send(self.fd, bytes)
                    .map(drop)
                    .map_err(|e| os_error(&e)),
                None => sock.call_method1(intern!(py, "send"), (data,)).map(drop),
            };
        }
        let (Some(bytes), Some(raw)) = (plain_bytes(data), self.known_peer(py, addr)) else {
            return sock
                .call_method1(intern!(py, "sendto"), (data, addr))
                .map(drop);
        };
        self.send_to_known(py, bytes, addr, &raw)
    }

    /// The transport's `sendto` (bound to it as an attribute): the checks
    /// and the send of asyncio's method for a datagram in `bytes` or a
    /// `bytearray` that goes out at once, to the connected peer or to the
    /// address `datagram_received` was just given. Anything else (other
    /// types, empty datagrams, other addresses, a queue to wait behind,
    /// a closed connected endpoint) goes to the method itself.
    #[pyo3(signature = (data, addr=None))]
    fn sendto(&self, data: &Bound<'_, PyAny>, addr: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = data.py();
        let Some(transport) = self.transport.bind(py).upgrade() else {
            return Err(PyRuntimeError::new_err(
                "sendto() on a datagram transport that no longer exists",
            ));
        };
        let none = py.None().into_bound(py);
        let addr = addr.unwrap_or(&none);
        match self.send_at_once(&transport, data, addr)? {
            Some(Ok(())) => Ok(()),
            Some(Err(exc)) => {
                let queued_addr = match &self.address {
                    Some(address) => address.bind(py).clone(),
                    None => addr.clone(),
                };
                let exc = exc.into_value(py);
                transport
                    .call_method1(intern!(py, "_send_failed"), (exc, data, queued_addr))
                    .map(drop)
            }
            None => {
                let method = transport.get_type().getattr(intern!(py, "sendto"))?;
                method.call1((transport, data, addr)).map(drop)
            }
        }
    }

    fn __repr__(&self) -> String {
        format!("<datagram io fd={}>", self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.transport)?;
        visit.call(&self.sock)?;
        visit.call(&self.address)?;
        visit.call(&self.queue)?;
        self.last_peer
            .try_with(|p| match p {
                Some(peer) => visit.call(&peer.addr),
                None => Ok(()),
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        if let Some(taken) = self.last_peer.try_take() {
            drop(taken);
        }
    }
}
