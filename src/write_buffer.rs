//! A transport's queue of bytes not yet accepted by the kernel.
//!
//! `bytes` objects are queued by reference (they are immutable); anything
//! else (bytearray, memoryview) is copied, because the caller may change it
//! after `write()` returns.

use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::sys::net::MAX_IOVECS;

enum Chunk {
    Shared { bytes: Py<PyBytes>, start: usize },
    Owned { data: Vec<u8>, start: usize },
}

impl Chunk {
    fn remaining<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Chunk::Shared { bytes, start } => &bytes.bind(py).as_bytes()[*start..],
            Chunk::Owned { data, start } => &data[*start..],
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Shared { start, .. } | Chunk::Owned { start, .. } => *start += n,
        }
    }
}

#[derive(Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl WriteBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `bytes[start..]` without copying.
    pub fn push_shared(&mut self, py: Python<'_>, bytes: Py<PyBytes>, start: usize) {
        let total = bytes.bind(py).as_bytes().len();
        if start < total {
            self.len += total - start;
            self.chunks.push_back(Chunk::Shared { bytes, start });
        }
    }

    pub fn push_copy(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.len += data.len();
            self.chunks.push_back(Chunk::Owned {
                data: data.to_vec(),
                start: 0,
            });
        }
    }

    /// Points `out` at the queued bytes, for one `sendmsg`; returns how
    /// many entries it filled.
    pub fn fill_iovecs(&self, py: Python<'_>, out: &mut [libc::iovec; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for (slot, chunk) in out.iter_mut().zip(self.chunks.iter()) {
            let part = chunk.remaining(py);
            *slot = libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            };
            count += 1;
        }
        count
    }

    /// Drops `n` sent bytes from the front. Dropping a `bytes` object runs
    /// no Python code, so this is safe inside the transport's state borrow.
    pub fn consume(&mut self, py: Python<'_>, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let available = front.remaining(py).len();
            if n < available {
                front.advance(n);
                break;
            }
            n -= available;
            self.chunks.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    pub fn for_each_object(&self, mut f: impl FnMut(&Py<PyBytes>)) {
        for chunk in &self.chunks {
            if let Chunk::Shared { bytes, .. } = chunk {
                f(bytes);
            }
        }
    }
}
