//! Turning OS errors into the Python exceptions asyncio raises.

use std::ffi::CStr;
use std::io;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;

/// The text `strerror` gives, as CPython puts into `OSError.strerror`.
fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // The XSI variant (what the libc crate binds on glibc) fills `buf`.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `OSError(errno, strerror)`: Python picks the subclass from the errno
/// (ECONNRESET gives ConnectionResetError, ENOENT FileNotFoundError, ...),
/// exactly as when the stdlib raises it from a failed system call.
pub fn os_error(err: &io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}

pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_matches_libc_text() {
        assert_eq!(strerror(libc::EBADF), "Bad file descriptor");
        assert_eq!(strerror(libc::ECONNRESET), "Connection reset by peer");
    }
}
