//! Non-blocking socket calls for transports. `EINTR` is retried here;
//! `EAGAIN` is returned for the caller to wait for readiness.

use std::io;
use std::mem::size_of;
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

/// An IPv4 or IPv6 socket address as the kernel gives and takes it.
/// Room for no other family: a larger address (of another family) is
/// reported truncated, and is neither `as_v4` nor `as_v6`.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl SockAddr {
    /// The address family, or `AF_UNSPEC` for the empty address a
    /// connection-less receive may report.
    pub fn family(&self) -> i32 {
        if self.len == 0 {
            libc::AF_UNSPEC
        } else {
            i32::from(self.storage.sin6_family)
        }
    }

    pub fn as_v4(&self) -> Option<&libc::sockaddr_in> {
        (self.family() == libc::AF_INET && self.len as usize == size_of::<libc::sockaddr_in>())
            // SAFETY: sockaddr_in6 is larger than, and aligned for, a
            // sockaddr_in, which the kernel filled.
            .then(|| unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) })
    }

    pub fn as_v6(&self) -> Option<&libc::sockaddr_in6> {
        (self.family() == libc::AF_INET6 && self.len as usize == size_of::<libc::sockaddr_in6>())
            // SAFETY: as in `as_v4`.
            .then(|| unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) })
    }
}

/// One datagram into `len` bytes at `buf`, with its sender's address.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn recv_from(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<(usize, SockAddr)> {
    // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
    let mut from = SockAddr {
        storage: unsafe { std::mem::zeroed() },
        len: 0,
    };
    let n = retry(
        || {
            from.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let addr = &mut from.storage as *mut _ as *mut libc::sockaddr;
            unsafe { libc::recvfrom(fd, buf.cast(), len, 0, addr, &mut from.len) }
        },
        |n| n as usize,
    )?;
    Ok((n, from))
}

/// `sendto` a datagram, without SIGPIPE (see `send`).
pub fn send_to(fd: RawFd, data: &[u8], to: &SockAddr) -> io::Result<usize> {
    let addr = &to.storage as *const _ as *const libc::sockaddr;
    retry(
        || unsafe {
            libc::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
                addr,
                to.len,
            )
        },
        |n| n as usize,
    )
}

extern "C" {
    // POSIX, in every libc; the libc crate does not bind it on Linux.
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// The text form of an IPv4 or IPv6 address, as `inet_ntop` writes it
/// (what the socket module puts in the addresses it returns).
pub fn ip_text(family: i32, addr: *const libc::c_void) -> io::Result<String> {
    // INET6_ADDRSTRLEN, which the libc crate leaves out on Linux.
    let mut buf = [0 as libc::c_char; 46];
    // SAFETY: `addr` points at an in_addr/in6_addr matching `family`, and
    // `buf` holds the longest text form of either.
    let text = unsafe { inet_ntop(family, addr, buf.as_mut_ptr(), buf.len() as _) };
    if text.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `buf`.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// An IPv4 address in dotted decimal, as `inet_ntop` writes it (through
/// sprintf, which took 2.5% of a UDP echo server's time).
pub fn ipv4_text<'a>(addr: &libc::in_addr, out: &'a mut [u8; 15]) -> &'a str {
    let mut len = 0;
    for (i, octet) in addr.s_addr.to_ne_bytes().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for digit in &digits[skip..] {
            out[len] = b'0' + digit;
            len += 1;
        }
    }
    // SAFETY: only ASCII digits and dots were written.
    unsafe { std::str::from_utf8_unchecked(&out[..len]) }
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
    fn ipv4_text_is_inet_ntops() {
        let mut octets = vec![
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [127, 0, 0, 1],
            [10, 0, 100, 9],
        ];
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            octets.push(x.to_be_bytes());
        }
        for o in octets {
            let addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(o),
            };
            let expected =
                ip_text(libc::AF_INET, &addr as *const _ as *const libc::c_void).unwrap();
            let mut out = [0u8; 15];
            assert_eq!(ipv4_text(&addr, &mut out), expected, "{o:?}");
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
