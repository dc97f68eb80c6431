//! Level-triggered epoll.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use super::{Event, Interest};

/// How many readiness reports one `wait` collects; the rest stay pending in
/// the kernel (level-triggered) and come back on the next iteration.
const MAX_EVENTS: usize = 256;

pub struct Poller {
    /// -1 once closed. Atomic only so the struct is `Sync`; it is written by
    /// `close`, which asyncio forbids while the loop runs.
    epfd: AtomicI32,
}

/// Stack-allocated event buffer, filled by [`Poller::wait`].
pub struct Events {
    buf: [MaybeUninit<libc::epoll_event>; MAX_EVENTS],
    len: usize,
}

impl Events {
    pub fn new() -> Self {
        Events {
            // SAFETY: an array of MaybeUninit needs no initialisation.
            buf: unsafe { MaybeUninit::uninit().assume_init() },
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|slot| {
            // SAFETY: the kernel initialised the first `len` entries.
            let ev = unsafe { slot.assume_init() };
            let bits = ev.events;
            Event {
                token: ev.u64,
                // Same mapping as the stdlib EpollSelector: any bit other than
                // EPOLLOUT counts as readable, any other than EPOLLIN as writable.
                readable: bits & !(libc::EPOLLOUT as u32) != 0,
                writable: bits & !(libc::EPOLLIN as u32) != 0,
            }
        })
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn epoll_bits(interest: Interest) -> u32 {
    let mut bits = 0u32;
    if interest.read {
        bits |= libc::EPOLLIN as u32;
    }
    if interest.write {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Poller {
            epfd: AtomicI32::new(fd),
        })
    }

    fn fd(&self) -> io::Result<RawFd> {
        match self.epfd.load(Ordering::Relaxed) {
            -1 => Err(io::Error::from_raw_os_error(libc::EBADF)),
            fd => Ok(fd),
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: epoll_bits(interest),
            u64: token,
        };
        cvt(unsafe { libc::epoll_ctl(self.fd()?, op, fd, &mut ev) }).map(drop)
    }

    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Watches `fd` for input edge-triggered: reported once per wake-up of
    /// its wait queue, whether or not it was read in between (for the
    /// waker's eventfd, see `waker.rs`).
    pub fn add_edge_triggered_read(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token,
        };
        cvt(unsafe { libc::epoll_ctl(self.fd()?, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::default())
    }

    /// Waits up to `timeout_ms` (-1: forever). EINTR is returned to the
    /// caller, which must give Python's signal handlers a chance to run.
    pub fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.len = 0;
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.fd()?,
                events.buf.as_mut_ptr().cast(),
                MAX_EVENTS as libc::c_int,
                timeout_ms,
            )
        })?;
        events.len = n as usize;
        Ok(())
    }

    pub fn close(&self) {
        let fd = self.epfd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn reports_readable_until_drained() {
        let poller = Poller::new().unwrap();
        let (r, w) = pipe();
        poller.add(r, 7, Interest::READ).unwrap();
        let mut events = Events::new();
        poller.wait(&mut events, 0).unwrap();
        assert_eq!(events.iter().count(), 0);

        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
        for _ in 0..2 {
            // Level-triggered: still reported while the byte is unread.
            poller.wait(&mut events, 100).unwrap();
            let got: Vec<_> = events.iter().collect();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].token, 7);
            assert!(got[0].readable);
        }
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    #[test]
    fn hangup_counts_as_readable_and_writable() {
        let poller = Poller::new().unwrap();
        let (r, w) = pipe();
        poller.add(r, 1, Interest::READ).unwrap();
        unsafe { libc::close(w) };
        let mut events = Events::new();
        poller.wait(&mut events, 100).unwrap();
        let got: Vec<_> = events.iter().collect();
        assert!(got[0].readable && got[0].writable);
        unsafe { libc::close(r) };
    }

    #[test]
    fn closed_poller_reports_ebadf() {
        let poller = Poller::new().unwrap();
        poller.close();
        let err = poller.add(0, 1, Interest::READ).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
