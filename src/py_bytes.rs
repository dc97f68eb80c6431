//! Filling Python bytes objects, and reading Python buffers, without
//! intermediate copies.

use std::io;
use std::os::fd::RawFd;
use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::call::take_raised;
use crate::sys::net;

extern "C" {
    // Part of CPython's C API in every supported version, though PyO3 does
    // not export it: shrinks a fresh bytes object in place.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// Allocates a bytes object of `capacity`, lets `fill` write into it and
/// report how much it wrote, then trims it to that length. The kernel copies
/// straight into the object that the protocol receives.
pub fn bytes_filled_by<'py, E>(
    py: Python<'py>,
    capacity: usize,
    fill: impl FnOnce(*mut u8, usize) -> Result<usize, E>,
) -> PyResult<Result<Bound<'py, PyBytes>, E>> {
    // SAFETY: a bytes object created with a NULL source is writable until
    // it is shared; it is shared only after being trimmed below.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), capacity as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(take_raised(py));
        }
        let data = ffi::PyBytes_AsString(obj) as *mut u8;
        match fill(data, capacity) {
            Err(e) => {
                ffi::Py_DECREF(obj);
                Ok(Err(e))
            }
            Ok(n) => {
                if n != capacity && _PyBytes_Resize(&mut obj, n as ffi::Py_ssize_t) != 0 {
                    return Err(take_raised(py));
                }
                Ok(Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked()))
            }
        }
    }
}

/// Reads up to this much go through the scratch buffer.
pub const SCRATCH_LEN: usize = 256 * 1024;

/// The scratch buffer, starting on a page boundary.
///
/// Where it starts matters to the kernel's copy into it: on this project's
/// AMD EPYC VM, a buffer starting a few bytes past a page boundary is
/// received into 2-3x more slowly (`benches/align_probe.py`). A plain
/// allocation of this size starts 16 bytes into a page when malloc maps it
/// afresh, and elsewhere when malloc takes it from the heap, which depends
/// on what the process allocated before: a change anywhere could halve
/// the 100 KiB echo rows.
#[repr(C, align(4096))]
struct ScratchBytes([u8; SCRATCH_LEN]);

fn new_scratch() -> Box<ScratchBytes> {
    // SAFETY: all zero bytes is a valid byte array. Built in place on the
    // heap: a 256 KiB value must not pass through the stack.
    unsafe { Box::<ScratchBytes>::new_zeroed().assume_init() }
}

thread_local! {
    /// Reused by every read on this thread (the loop's thread).
    static SCRATCH: std::cell::RefCell<Box<ScratchBytes>> = std::cell::RefCell::new(new_scratch());
}

/// One `recv` of up to `limit` bytes from `fd`, as a bytes object of
/// exactly what arrived (empty at end of stream).
///
/// The read goes into a reused buffer and is then copied. Reading straight
/// into a fresh object of `limit` bytes (typically 256 KiB) costs more:
/// malloc maps such a block with mmap, trims it with mremap and unmaps it
/// on free, every read, and the kernel faults in and zeroes its pages (a
/// 100 KiB echo ran 3x slower that way, and slowed down over time). Sizing
/// the object first with FIONREAD was tried too: heap trimming then faults
/// the pages in again on every read, and it lost 7% to the copy.
pub fn recv_new_bytes(
    py: Python<'_>,
    fd: RawFd,
    limit: usize,
) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    if limit > SCRATCH_LEN {
        // SAFETY: `recv` writes at most `len` bytes into the object.
        return bytes_filled_by(py, limit, |buf, len| unsafe { net::recv(fd, buf, len) });
    }
    recv_scratch(fd, limit, |data| Ok(PyBytes::new(py, data)))
}

/// One `recv` of up to `limit` (at most 256 KiB) bytes from `fd` into the
/// thread's reused buffer, handed to `take` (empty at end of stream).
/// `take` must not run Python code: that code could read another socket
/// on this thread, into the same buffer.
pub fn recv_scratch<R>(
    fd: RawFd,
    limit: usize,
    take: impl FnOnce(&[u8]) -> PyResult<R>,
) -> PyResult<io::Result<R>> {
    // SAFETY: `recv` writes at most `len` bytes at `buf`.
    with_scratch(
        limit,
        |buf, len| unsafe { net::recv(fd, buf, len) }.map(|n| (n, ())),
        |data, _| take(data),
    )
}

/// One datagram of up to `limit` (at most 256 KiB) bytes from `fd` into the
/// thread's reused buffer, handed to `take` with its sender's address. The
/// same rule as for `recv_scratch` holds for `take`.
pub fn recvfrom_scratch<R>(
    fd: RawFd,
    limit: usize,
    take: impl FnOnce(&[u8], &net::SockAddr) -> PyResult<R>,
) -> PyResult<io::Result<R>> {
    // SAFETY: `recv_from` writes at most `len` bytes at `buf`.
    with_scratch(
        limit,
        |buf, len| unsafe { net::recv_from(fd, buf, len) },
        |data, from| take(data, from),
    )
}

/// Runs `read` on the scratch buffer (given its start and `limit`, capped
/// at its size); `read` reports how many bytes it wrote, and what else it
/// learned, which `take` then gets with those bytes.
fn with_scratch<T, R>(
    limit: usize,
    read: impl FnOnce(*mut u8, usize) -> io::Result<(usize, T)>,
    take: impl FnOnce(&[u8], &T) -> PyResult<R>,
) -> PyResult<io::Result<R>> {
    let limit = limit.min(SCRATCH_LEN);
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        match read(buf.0.as_mut_ptr(), limit) {
            Ok((n, extra)) => take(&buf.0[..n], &extra).map(Ok),
            Err(err) => Ok(Err(err)),
        }
    })
}

/// A contiguous byte view of any buffer-protocol object, released on drop.
pub struct ByteView {
    inner: View,
}

enum View {
    /// An exact `bytes` object's own storage, which cannot change while
    /// the object lives (the reference held here): no buffer to request
    /// and release, and no `Py_buffer` to allocate, on every write.
    Bytes {
        _owner: Py<PyAny>,
        ptr: *const u8,
        len: usize,
    },
    /// Boxed so it never moves between the request and its release.
    Buffer(Box<ffi::Py_buffer>),
}

impl ByteView {
    /// Read-only view (`bytes`, `bytearray`, `memoryview`, ...).
    pub fn read(obj: &Bound<'_, PyAny>) -> PyResult<ByteView> {
        if let Ok(bytes) = obj.cast_exact::<PyBytes>() {
            let data = bytes.as_bytes();
            return Ok(ByteView {
                inner: View::Bytes {
                    _owner: obj.clone().unbind(),
                    ptr: data.as_ptr(),
                    len: data.len(),
                },
            });
        }
        Self::get(obj, ffi::PyBUF_SIMPLE)
    }

    /// Writable view, for `BufferedProtocol.get_buffer()` results.
    pub fn write(obj: &Bound<'_, PyAny>) -> PyResult<ByteView> {
        Self::get(obj, ffi::PyBUF_WRITABLE)
    }

    fn get(obj: &Bound<'_, PyAny>, flags: c_int) -> PyResult<ByteView> {
        // SAFETY: Py_buffer is plain data filled by PyObject_GetBuffer; it is
        // released exactly once, in Drop, only if the call succeeded.
        unsafe {
            let mut view: Box<ffi::Py_buffer> = Box::new(std::mem::zeroed());
            if ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) != 0 {
                return Err(take_raised(obj.py()));
            }
            Ok(ByteView {
                inner: View::Buffer(view),
            })
        }
    }

    pub fn len(&self) -> usize {
        match &self.inner {
            View::Bytes { len, .. } => *len,
            View::Buffer(view) => view.len as usize,
        }
    }

    /// The first byte; writable only for a view made by [`ByteView::write`].
    pub fn as_ptr(&self) -> *mut u8 {
        match &self.inner {
            View::Bytes { ptr, .. } => ptr.cast_mut(),
            View::Buffer(view) => view.buf.cast::<u8>(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the object guarantees `len` readable bytes at the pointer
        // while the view (and so the object) is held.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        if let View::Buffer(view) = &mut self.inner {
            // SAFETY: the view was filled by a successful
            // PyObject_GetBuffer; views are only created and dropped with
            // the GIL held.
            unsafe { ffi::PyBuffer_Release(&mut **view) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_starts_on_a_page_boundary() {
        // Asserted rather than assumed: the 100 KiB echo rows halve when
        // the buffer starts a few bytes past a page boundary.
        SCRATCH.with(|s| assert_eq!(s.borrow().0.as_ptr() as usize % 4096, 0));
        // And in a second thread, whose buffer is its own.
        std::thread::spawn(|| {
            SCRATCH.with(|s| assert_eq!(s.borrow().0.as_ptr() as usize % 4096, 0))
        })
        .join()
        .unwrap();
    }
}
