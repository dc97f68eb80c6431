//! A `socket.socket`'s fd and blocking mode, read where CPython keeps them.
//!
//! `sock.fileno()` and `sock.gettimeout()` are method calls (about 300
//! instructions each with the conversion). The datagram path asks before
//! every system call whether the socket still has its fd (the program may
//! have closed it, and the number may then be another socket's), and
//! `sock_recv`/`sock_sendall` ask for the fd and whether the socket is
//! non-blocking on every call. CPython's socket object keeps both right
//! after the object header (`PySocketSockObject`: the fd, an `int` on
//! POSIX; three more `int`s and a function pointer; then the timeout, a
//! 64-bit count of nanoseconds, negative for "blocking", 0 for
//! "non-blocking"). That layout is not API, so it is checked once against
//! `fileno()` and `gettimeout()` (open and closed; timeouts of 0, 2.5 s and
//! none) before it is relied on; otherwise the methods are called.

use std::mem::{align_of, size_of};
use std::os::fd::RawFd;
use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `_socket.socket`, if its layout was checked to be the expected one.
static CHECKED_TYPE: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

/// `offset` rounded up to a multiple of `align`, as a C compiler lays out
/// the next field.
const fn aligned(offset: usize, align: usize) -> usize {
    offset.div_ceil(align) * align
}

/// Byte offsets of the two fields: the fd right after the object header;
/// the timeout after three more `int`s and the error handler's pointer.
const FD_OFFSET: usize = size_of::<ffi::PyObject>();
const HANDLER_OFFSET: usize = aligned(FD_OFFSET + 4 * size_of::<c_int>(), align_of::<*const ()>());
const TIMEOUT_OFFSET: usize = aligned(HANDLER_OFFSET + size_of::<*const ()>(), align_of::<i64>());

/// Reads the `sock_fd` field.
///
/// # Safety
/// `sock` must be an instance of `_socket.socket` (or a subclass), and the
/// layout must have been checked (`checked_type`).
unsafe fn read_fd(sock: &Bound<'_, PyAny>) -> RawFd {
    // SAFETY: per the contract, the fd is at this offset.
    unsafe { *sock.as_ptr().cast::<u8>().add(FD_OFFSET).cast::<c_int>() }
}

/// Reads the `sock_timeout` field (nanoseconds; negative: blocking).
///
/// # Safety
/// As `read_fd`.
unsafe fn read_timeout(sock: &Bound<'_, PyAny>) -> i64 {
    // SAFETY: per the contract, the timeout is at this offset (read
    // unaligned: the check reads it before the layout is known).
    unsafe {
        sock.as_ptr()
            .cast::<u8>()
            .add(TIMEOUT_OFFSET)
            .cast::<i64>()
            .read_unaligned()
    }
}

fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(intern!(sock.py(), "fileno"))?.extract()
}

/// What `gettimeout()` says: is the socket non-blocking (a timeout of 0)?
fn nonblocking_by_method(sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    let timeout = sock.call_method0(intern!(sock.py(), "gettimeout"))?;
    Ok(!timeout.is_none() && timeout.extract::<f64>()? == 0.0)
}

/// `_socket.socket`, once a socket of it showed its fd and timeout in the
/// expected places, as its methods report them; None otherwise.
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
            if !sock.is_instance(&ty)? {
                return Ok(None);
            }
            // SAFETY (the reads below): `sock` is a socket.socket, a
            // subclass of `ty`; the fields are read, not trusted, until
            // every check passes.
            let timeout_is = |value: Option<f64>, expected: fn(i64) -> bool| -> PyResult<bool> {
                sock.call_method1(intern!(py, "settimeout"), (value,))?;
                Ok(expected(unsafe { read_timeout(&sock) }))
            };
            let open_ok = unsafe { read_fd(&sock) } == fileno(&sock)?
                && timeout_is(Some(0.0), |ns| ns == 0)?
                && timeout_is(Some(2.5), |ns| ns == 2_500_000_000)?
                && timeout_is(None, |ns| ns < 0)?;
            sock.call_method0(intern!(py, "close"))?;
            let closed_ok = unsafe { read_fd(&sock) } == -1;
            Ok((open_ok && closed_ok).then(|| ty.unbind()))
        };
        check().unwrap_or(None)
    });
    checked.as_ref().map(|ty| ty.bind(py))
}

/// How to read a socket's fd and blocking mode cheaply.
pub(crate) struct SockFields {
    /// The object is a `_socket.socket` of the checked layout.
    direct: bool,
}

impl SockFields {
    pub(crate) fn for_socket(sock: &Bound<'_, PyAny>) -> PyResult<SockFields> {
        // The object's real type, not isinstance(), which a `__class__`
        // property (a mock, a proxy) can answer for an object of another
        // layout.
        let direct = match checked_type(sock.py()) {
            Some(ty) => sock.get_type().is_subclass(ty)?,
            None => false,
        };
        Ok(SockFields { direct })
    }

    /// The socket's fd now (-1 once closed or detached).
    pub(crate) fn fd(&self, sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
        if self.direct {
            // SAFETY: checked by `for_socket` for this very object.
            return Ok(unsafe { read_fd(sock) });
        }
        fileno(sock)
    }

    /// Whether the socket is non-blocking (`gettimeout() == 0.0`).
    pub(crate) fn is_nonblocking(&self, sock: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.direct {
            // SAFETY: checked by `for_socket` for this very object.
            return Ok(unsafe { read_timeout(sock) } == 0);
        }
        nonblocking_by_method(sock)
    }
}

/// Whether this interpreter's sockets have the checked layout; for the
/// test suite, so a CPython change cannot silently take the slow path.
#[pyfunction]
pub(crate) fn _sock_fields_read_directly(py: Python<'_>) -> bool {
    checked_type(py).is_some()
}
