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
//!
//! `sendto` itself is a method descriptor on the transport's class
//! (`datagram_sendto.rs`) that calls `send_fast` here first.

use std::io;
use std::os::fd::RawFd;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;

use crate::call::{copy_current_context, take_raised};
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::fd_registry::Direction;
use crate::gil_cell::GilCell;
use crate::handles::{Handle, NativeSpec};
use crate::py_bytes::{recvfrom_scratch, SCRATCH_LEN};
use crate::sock_object::SockFields;
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
/// Nothing here refers to the transport: the fd callback's target is the
/// transport itself (the loop's registration keeps it alive, as asyncio's
/// does), and a transport dropped unclosed is freed, and warns, at once.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct DatagramIo {
    loop_: Py<LoopCore>,
    sock: Py<PyAny>,
    sock_fields: SockFields,
    /// The transport's `_address` (a connected or broadcast endpoint's
    /// remote address) and its queue of unsent datagrams (a deque).
    address: Option<Py<PyAny>>,
    queue: Py<PyAny>,
    fd: RawFd,
    /// Sends go to the peer the socket is connected to (`send`, not
    /// `sendto`), as the transport decided from its peer name.
    connected: bool,
    /// Set before the transport closes the socket: from then on the fd
    /// number may belong to another socket, and nothing here touches it.
    detached: AtomicBool,
    /// The transport's `_protocol`, kept up to date by its `set_protocol`.
    protocol: GilCell<Py<PyAny>>,
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
/// an IPv4 or IPv6 address, except an IPv6 flow label of more than 20 bits,
/// which the socket module refuses in a tuple (it gets to say so).
fn reusable(raw: &SockAddr) -> bool {
    raw.as_v4().is_some()
        || raw
            .as_v6()
            .is_some_and(|v6| u32::from_be(v6.sin6_flowinfo) <= 0xfffff)
}

/// The transport's `max_size`, if the scratch buffer can take a read of
/// it (else the Python path reads, as asyncio would, or raises what
/// asyncio raises for a `max_size` that is no size).
fn read_limit(transport: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    let size = transport.getattr(intern!(transport.py(), "max_size"))?;
    Ok(size.extract::<usize>().ok().filter(|&n| n <= SCRATCH_LEN))
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
        if !this.owns_fd(py)? {
            // The program closed the socket: asyncio's recvfrom would fail
            // with EBADF, which the Python path reports as asyncio does.
            return transport.call_method0(intern!(py, "_read_ready")).map(drop);
        }
        let core = this.loop_.bind(py).get();
        let mut reads = if core.debug() { 1 } else { READS_PER_EVENT };
        // The transport stops reading (pause_reading, close, a fatal error)
        // by removing this callback, which cancels it: that it runs, and
        // is still registered after each datagram, says what asyncio's
        // checks of `_conn_lost`, `_closing` and `_paused` say.
        loop {
            // Read for every datagram, as asyncio's method reads it.
            let Some(limit) = read_limit(transport)? else {
                return transport.call_method0(intern!(py, "_read_ready")).map(drop);
            };
            // Only the bytes are made while the scratch buffer is in use:
            // the address is a tuple, whose allocation may run the
            // garbage collector (and so finalizers, which may read).
            let received = recvfrom_scratch(this.fd, limit, |data, from| {
                Ok((PyBytes::new(py, data), *from))
            })?;
            let protocol = this.protocol.with(py, |p| p.clone_ref(py)).into_bound(py);
            let (data, raw) = match received {
                Ok(received) => received,
                Err(err) if net::would_block(&err) => return Ok(()),
                Err(err) => {
                    // An earlier send's failure reported by the kernel (an
                    // ICMP port unreachable): the endpoint is still usable.
                    let exc = os_error(&err).into_value(py);
                    protocol.call_method1(intern!(py, "error_received"), (exc,))?;
                    return Ok(());
                }
            };
            let addr = address_object(py, &raw)?;
            if reusable(&raw) {
                let peer = Peer {
                    addr: addr.clone().unbind(),
                    raw,
                };
                let old = this.last_peer.with(py, |p| p.replace(peer));
                drop(old);
            }
            protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
            reads -= 1;
            if reads == 0 || !core.reads_for(py, this.fd, transport) || core.has_ready(py) {
                return Ok(());
            }
        }
    }

    /// Sends `data` now if asyncio's `sendto` would (see `DatagramSendto`):
    /// None when it is not such a datagram, else how the send went.
    fn send_at_once(
        &self,
        transport: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PyResult<()>>> {
        let py = data.py();
        // Exact bytes only: immutable, so neither an audit hook nor
        // anything else can free them before the system call, and their
        // length is their size (a subclass may say otherwise).
        let Some(bytes) = data
            .cast_exact::<PyBytes>()
            .ok()
            .map(|b| b.as_bytes())
            .filter(|b| !b.is_empty())
        else {
            return Ok(None);
        };
        if !self.owns_fd(py)? {
            return Ok(None);
        }
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
        if self.connected {
            return Ok(Some(
                net::send(self.fd, bytes)
                    .map(drop)
                    .map_err(|e| os_error(&e)),
            ));
        }
        if self.address.is_some() {
            return Ok(None);
        }
        let Some(raw) = self.known_peer(py, addr) else {
            return Ok(None);
        };
        Ok(Some(self.send_to_known(py, bytes, addr, &raw)))
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
        // The hook may have closed the socket, as the socket module's own
        // send would then find.
        if !self.owns_fd(py)? {
            return Err(os_error(&io::Error::from_raw_os_error(libc::EBADF)));
        }
        net::send_to(self.fd, bytes, raw)
            .map(drop)
            .map_err(|e| os_error(&e))
    }

    /// Whether the fd is still the socket's: not once the transport let go
    /// of it, nor once the program closed the socket itself (the number may
    /// then be another socket's). Checked before every system call.
    fn owns_fd(&self, py: Python<'_>) -> PyResult<bool> {
        if self.detached.load(Relaxed) {
            return Ok(false);
        }
        Ok(self.sock_fields.fd(self.sock.bind(py))? == self.fd)
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

#[pymethods]
impl DatagramIo {
    #[new]
    fn new(
        lp: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        connected: bool,
        address: &Bound<'_, PyAny>,
        queue: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let py = lp.py();
        let fd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        Ok(DatagramIo {
            loop_: lp.cast::<LoopCore>()?.clone().unbind(),
            sock_fields: SockFields::for_socket(sock)?,
            sock: sock.clone().unbind(),
            address: address.is_truthy()?.then(|| address.clone().unbind()),
            queue: queue.clone().unbind(),
            fd,
            connected,
            detached: AtomicBool::new(false),
            protocol: GilCell::new(protocol.clone().unbind()),
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

    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) {
        let old = self.protocol.with(protocol.py(), |p| {
            std::mem::replace(p, protocol.clone().unbind())
        });
        drop(old);
    }

    /// Called before the transport closes its socket.
    fn detach(&self) {
        self.detached.store(true, Relaxed);
    }

    /// Sends one datagram now, as the transport's `sock.send(data)` or
    /// `sock.sendto(data, addr)` would, raising what they raise (a
    /// `BlockingIOError` when the kernel has no room).
    fn send(&self, data: &Bound<'_, PyAny>, addr: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        let sock = self.sock.bind(py);
        // On a socket no longer ours, the socket's own methods raise what
        // they raise (EBADF).
        let bytes = match self.owns_fd(py)? {
            true => data.cast_exact::<PyBytes>().ok().map(|b| b.as_bytes()),
            false => None,
        };
        if self.connected {
            return match bytes {
                Some(bytes) => net::send(self.fd, bytes)
                    .map(drop)
                    .map_err(|e| os_error(&e)),
                None => sock.call_method1(intern!(py, "send"), (data,)).map(drop),
            };
        }
        let (Some(bytes), Some(raw)) = (bytes, self.known_peer(py, addr)) else {
            return sock
                .call_method1(intern!(py, "sendto"), (data, addr))
                .map(drop);
        };
        self.send_to_known(py, bytes, addr, &raw)
    }

    fn __repr__(&self) -> String {
        format!("<datagram io fd={}>", self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.sock)?;
        visit.call(&self.address)?;
        visit.call(&self.queue)?;
        if let Some(result) = self.protocol.try_with(|p| visit.call(&*p)) {
            result?;
        }
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

/// The transport's `sendto` for what asyncio's method would send at once
/// (handling a failed send as the method does): false for anything else,
/// which the method itself must take. See `datagram_sendto.rs`.
pub(crate) fn send_fast(
    transport: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
    addr: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = transport.py();
    // Anything but a transport with a native helper (even a stranger
    // passed to the unbound method) is the Python method's.
    let Some(io) = transport.getattr_opt(intern!(py, "_io"))? else {
        return Ok(false);
    };
    let Ok(io) = io.cast::<DatagramIo>() else {
        return Ok(false);
    };
    let io = io.get();
    match io.send_at_once(transport, data, addr)? {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(exc)) => {
            let queued_addr = match &io.address {
                Some(address) => address.bind(py).clone(),
                None => addr.clone(),
            };
            let exc = exc.into_value(py);
            transport.call_method1(intern!(py, "_send_failed"), (exc, data, queued_addr))?;
            Ok(true)
        }
    }
}
