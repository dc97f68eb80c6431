//! The ceiling: a single-threaded epoll echo server in plain Rust. No event
//! loop can echo faster on the same core, so its figure bounds the others.
//!
//! It must not be the slow side at any message size: what a write cannot take
//! at once waits in the connection's own buffer until the socket is writable
//! again, while the other connections are served (spinning on one blocked
//! socket made the 100 KiB rows measure the spin, and every loop beat it).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use crate::Args;

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, want_write: bool) -> io::Result<()> {
    let mut events = libc::EPOLLIN as u32;
    if want_write {
        events |= libc::EPOLLOUT as u32;
    }
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Conn {
    stream: TcpStream,
    /// Echo bytes the socket has not taken yet, in order.
    pending: Vec<u8>,
    want_write: bool,
}

impl Conn {
    /// Writes `data` after what is already pending; keeps what the socket
    /// refuses. Err: the connection is gone.
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        let sent = write_some(&mut self.stream, data)?;
        self.pending.extend_from_slice(&data[sent..]);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let sent = write_some(&mut self.stream, &self.pending)?;
        self.pending.drain(..sent);
        Ok(())
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

pub fn run(args: &Args) -> io::Result<()> {
    let listener = TcpListener::bind(&args.addr)?;
    listener.set_nonblocking(true)?;
    println!("{}", listener.local_addr()?);
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), false)?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = crate::poll::wait(epfd, &mut events, -1)?;
        for ev in &events[..n] {
            let fd = ev.u64 as RawFd;
            if fd == listener.as_raw_fd() {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    stream.set_nonblocking(true)?;
                    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), false)?;
                    let conn = Conn {
                        stream,
                        pending: Vec::new(),
                        want_write: false,
                    };
                    conns.insert(fd_of(&conn), conn);
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&fd) else {
                continue;
            };
            let mut alive = true;
            if ev.events & libc::EPOLLOUT as u32 != 0 && !conn.pending.is_empty() {
                alive = conn.flush().is_ok();
            }
            if alive && ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                alive = match conn.stream.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => conn.send(&buf[..n]).is_ok(),
                    Err(e) => matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ),
                };
            }
            let want_write = !conn.pending.is_empty();
            if alive && want_write != conn.want_write {
                conn.want_write = want_write;
                epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, want_write)?;
            }
            if !alive {
                // Dropping the stream closes it, which also unregisters it.
                conns.remove(&fd);
            }
        }
    }
}

fn fd_of(conn: &Conn) -> RawFd {
    conn.stream.as_raw_fd()
}
