//! The loop's self-pipe: wakes a sleeping poll from another thread, and is
//! the fd Python's C signal handler writes signal numbers to
//! (`signal.set_wakeup_fd`), so signals arriving while the loop sleeps or is
//! not running are not lost.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

pub struct Waker {
    read_fd: AtomicI32,
    write_fd: AtomicI32,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        if unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            read_fd: AtomicI32::new(fds[0]),
            write_fd: AtomicI32::new(fds[1]),
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read_fd.load(Ordering::Relaxed)
    }

    pub fn write_fd(&self) -> RawFd {
        self.write_fd.load(Ordering::Relaxed)
    }

    /// Makes the read end readable. A full buffer already means "wake up",
    /// so EAGAIN is fine to ignore.
    pub fn wake(&self) {
        let fd = self.write_fd();
        if fd >= 0 {
            unsafe { libc::send(fd, b"\0".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
        }
    }

    /// Empties the channel and returns the signal numbers found in it
    /// (zero bytes are plain wake-ups).
    ///
    /// A read that does not fill the buffer took all there was, so the usual
    /// wake-up costs one call, not a second one that fails with EAGAIN.
    /// A byte written after that read leaves the (level-triggered) fd ready
    /// for the next poll.
    pub fn drain(&self) -> Vec<u8> {
        let fd = self.read_fd();
        let mut signals = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            signals.extend(buf[..n].iter().copied().filter(|&b| b != 0));
            if n < buf.len() {
                break;
            }
        }
        signals
    }

    pub fn close(&self) {
        for slot in [&self.read_fd, &self.write_fd] {
            let fd = slot.swap(-1, Ordering::Relaxed);
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_separates_signals_from_wakeups() {
        let w = Waker::new().unwrap();
        w.wake();
        w.wake();
        let sig = [10u8];
        assert_eq!(
            unsafe { libc::send(w.write_fd(), sig.as_ptr().cast(), 1, 0) },
            1
        );
        assert_eq!(w.drain(), vec![10]);
        assert!(w.drain().is_empty());
    }

    #[test]
    fn drain_empties_more_than_one_buffer() {
        let w = Waker::new().unwrap();
        let mut bytes = vec![0u8; 10_000];
        for i in (0..bytes.len()).step_by(1000) {
            bytes[i] = 7;
        }
        for chunk in bytes.chunks(2500) {
            let sent = unsafe { libc::send(w.write_fd(), chunk.as_ptr().cast(), chunk.len(), 0) };
            assert_eq!(sent, chunk.len() as isize);
        }
        assert_eq!(w.drain(), vec![7; 10]);
        let mut probe = [0u8; 1];
        let left = unsafe { libc::recv(w.read_fd(), probe.as_mut_ptr().cast(), 1, 0) };
        assert_eq!(left, -1, "bytes left after drain");
    }
}
