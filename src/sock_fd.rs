//! The fd of a `socket.socket`, read where CPython keeps it.
//!
//! `sock.fileno()` is a method call (about 350 instructions with the
//! conversion); the datagram path asks before every system call whether
//! the socket still has its fd (the program may have closed it, and the
//! number may then be another socket's). CPython's socket object keeps the
//! fd right after the object header (`PySocketSockObject.sock_fd`, an
//! `int` on POSIX); that layout is not API, so it is checked once against
//! `fileno()`, open and closed, before it is relied on.

use std::mem::size_of;
use std::os::fd::RawFd;
use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `_socket.socket`, if its layout was checked to be the expected one.
static CHECKED_TYPE: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

/// Reads the `sock_fd` field.
///
/// # Safety
/// `sock` must be an instance of `_socket.socket` (or a subclass), and the
/// layout must have been checked (`checked_type`).
unsafe fn read_field(sock: &Bound<'_, PyAny>) -> RawFd {
    // SAFETY: per the contract, the object starts with a PyObject header
    // followed by the fd.
    unsafe {
        *sock
            .as_ptr()
            .cast::<u8>()
            .add(size_of::<ffi::PyObject>())
            .cast::<c_int>()
    }
}

fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(intern!(sock.py(), "fileno"))?.extract()
}

/// `_socket.socket`, once a socket of it showed its fd in the expected
/// place while open and -1 there once closed; None otherwise.
fn checked_type(py: Python<'_>) -> Option<&Bound<'_, PyAny>> {
    let checked = CHECKED_TYPE.get_or_init(py, || {
        let check = || -> PyResult<Option<Py<PyAny>>> {
            let ty = py
                .import(intern!(py, "_socket"))?
                .getattr(intern!(py, "socket"))?;
            let socket = py.import(intern!(py, "socket"))?;
            let sock = socket.getattr(intern!(py, "socket"))?.call1((
                socket.getattr(intern!(py, "AF_INET"))?,
                socket.getattr(intern!(py, "SOCK_DGRAM"))?,
            ))?;
            // SAFETY: `sock` is a socket.socket, a subclass of `ty`; the
            // field is read, not trusted, until both checks pass.
            let open_ok = sock.is_instance(&ty)? && unsafe { read_field(&sock) } == fileno(&sock)?;
            sock.call_method0(intern!(py, "close"))?;
            let closed_ok = unsafe { read_field(&sock) } == -1;
            Ok((open_ok && closed_ok).then(|| ty.unbind()))
        };
        check().unwrap_or(None)
    });
    checked.as_ref().map(|ty| ty.bind(py))
}

/// How to learn a socket's current fd cheaply.
pub(crate) struct SockFd {
    /// The object is a `_socket.socket` of the checked layout.
    direct: bool,
}

impl SockFd {
    pub(crate) fn for_socket(sock: &Bound<'_, PyAny>) -> PyResult<SockFd> {
        let direct = match checked_type(sock.py()) {
            Some(ty) => sock.is_instance(ty)?,
            None => false,
        };
        Ok(SockFd { direct })
    }

    /// The socket's fd now (-1 once closed or detached).
    pub(crate) fn get(&self, sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        if self.direct {
            // SAFETY: checked by `for_socket` for this very object.
            return Ok(unsafe { read_field(sock) });
        }
        fileno(sock)
    }
}

/// Whether this interpreter's sockets have the checked layout; for the
/// test suite, so a CPython change cannot silently take the slow path.
#[pyfunction]
pub(crate) fn _sock_fd_read_directly(py: Python<'_>) -> bool {
    checked_type(py).is_some()
}
