//! Non-blocking socket calls for transports. `EINTR` is retried here;
//! `EAGAIN` is returned for the caller to wait for readiness.

use std::io;
use std::os::fd::RawFd;

/// Most buffers one `sendmsg` takes; the rest go in the next call.
pub const MAX_IOVECS: usize = 64;

fn retry<T>(mut call: impl FnMut() -> isize, done: impl Fn(isize) -> T) -> io::Result<T> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(done(rc));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `send` that never raises SIGPIPE: a closed peer is an EPIPE error, even
/// if the program has restored the default SIGPIPE disposition.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    retry(
        || unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) },
        |n| n as usize,
    )
}

/// Gathers several buffers into one `sendmsg`.
pub fn send_vectored(fd: RawFd, bufs: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    retry(
        || unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) },
        |n| n as usize,
    )
}

/// Reads into `len` bytes at `buf`; 0 means end of stream.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    retry(
        || unsafe { libc::recv(fd, buf.cast(), len, 0) },
        |n| n as usize,
    )
}

pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    retry(
        || unsafe { libc::shutdown(fd, libc::SHUT_WR) } as isize,
        |_| (),
    )
}

pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        assert_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) },
            0
        );
        (fds[0], fds[1])
    }

    #[test]
    fn vectored_send_arrives_in_order() {
        let (a, b) = pair();
        let parts: [&[u8]; 3] = [b"ab", b"", b"cde"];
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        assert_eq!(send_vectored(a, &iov).unwrap(), 5);
        let mut buf = [0u8; 16];
        let n = unsafe { recv(b, buf.as_mut_ptr(), buf.len()) }.unwrap();
        assert_eq!(&buf[..n], b"abcde");
        unsafe {
            libc::close(a);
            libc::close(b);
        }
    }

    #[test]
    fn empty_socket_would_block_and_closed_peer_is_eof() {
        let (a, b) = pair();
        let mut buf = [0u8; 4];
        let err = unsafe { recv(b, buf.as_mut_ptr(), 4) }.unwrap_err();
        assert!(would_block(&err));
        unsafe { libc::close(a) };
        assert_eq!(unsafe { recv(b, buf.as_mut_ptr(), 4) }.unwrap(), 0);
        let err = send(b, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        unsafe { libc::close(b) };
    }
}
