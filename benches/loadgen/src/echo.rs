//! Closed-loop echo client: every connection sends a message, reads the
//! full echo, checks it, and sends the next. All connections are driven by
//! one thread on epoll, so the client costs little per message and is
//! never the slower side (a thread per connection spent most of a core on
//! context switches, and flattered slow servers that batch replies).
//! Echoes are checked, so a loop that loses or mixes data fails the run
//! instead of looking fast: every byte count exactly, and every byte of
//! messages below 32 KiB. Of larger ones, every eighth message of a
//! connection is compared in full and the others by their last bytes, which
//! carry the connection's pattern and the message's number.
//!
//! Over TCP, the unchecked bytes are dropped in the kernel (`MSG_TRUNC`)
//! instead of copied out. At 100 KiB the client otherwise spent as much CPU
//! per message as the ceiling server (a copy in, a copy out and a compare)
//! and was the limit for every server, so those rows measured the client.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::Args;

pub trait Stream: Read + Write + Send + AsRawFd {}
impl<T: Read + Write + Send + AsRawFd> Stream for T {}

pub fn connect(addr: &str) -> io::Result<Box<dyn Stream>> {
    if let Some(path) = addr.strip_prefix("unix:") {
        Ok(Box::new(UnixStream::connect(path)?))
    } else {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// One message in this many is read and compared in full.
const CHECK_EVERY: u64 = 8;
/// Bytes at the end of every message that are always read and compared.
const TAIL: usize = 64;
/// Below this size, dropping bytes saves less than the extra receive call
/// it takes (one to drop, one for the tail) costs, so all is read.
const DISCARD_FROM: usize = 32 * 1024;

struct Conn {
    stream: Box<dyn Stream>,
    /// The kernel may drop the unchecked bytes of an echo (TCP only).
    can_discard: bool,
    index: usize,
    message: Vec<u8>,
    written: usize,
    echo: Vec<u8>,
    read: usize,
    sent_at: Instant,
    messages: u64,
    want_write: bool,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, token: usize, write: bool) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | if write { libc::EPOLLOUT } else { 0 }) as u32,
        u64: token as u64,
    };
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Conn {
    /// Starts the next message: a pattern unique to this connection and
    /// changing per message, so crossed or stale data is caught.
    fn start_message(&mut self) {
        let last = self.message.len() - 1;
        self.message[0] = self.messages as u8;
        self.message[last] = self.messages as u8;
        self.written = 0;
        self.read = 0;
        self.sent_at = Instant::now();
    }

    /// Writes what the socket takes; true if some of the message is left.
    fn write_some(&mut self) -> io::Result<bool> {
        while self.written < self.message.len() {
            match self.stream.write(&self.message[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// How many leading bytes of the current echo need not be copied out.
    fn discardable(&self) -> usize {
        if !self.can_discard
            || self.message.len() < DISCARD_FROM
            || self.messages % CHECK_EVERY == 0
        {
            0
        } else {
            self.message.len().saturating_sub(TAIL)
        }
    }

    /// Reads what has arrived; Some(latency) once the whole echo is in.
    fn read_some(&mut self) -> io::Result<Option<u32>> {
        let skip = self.discardable();
        loop {
            let got = if self.read < skip {
                discard(self.stream.as_raw_fd(), skip - self.read)
            } else {
                self.stream.read(&mut self.echo[self.read..])
            };
            match got {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection {}: server closed", self.index),
                    ))
                }
                Ok(n) => self.read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.read > self.written {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("connection {}: more echoed than sent", self.index),
                ));
            }
            if self.read == self.message.len() {
                if self.echo[skip..] != self.message[skip..] {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "connection {}: echo differs from message {}",
                            self.index, self.messages
                        ),
                    ));
                }
                self.messages += 1;
                return Ok(Some(self.sent_at.elapsed().as_micros() as u32));
            }
        }
    }
}

/// Drops up to `len` received bytes without copying them (TCP's MSG_TRUNC).
fn discard(fd: RawFd, len: usize) -> io::Result<usize> {
    let n = unsafe { libc::recv(fd, std::ptr::null_mut(), len, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

pub fn run(args: &Args) -> io::Result<()> {
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut conns = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        let stream = connect(&args.addr)?;
        let can_discard = !args.addr.starts_with("unix:");
        set_nonblocking(stream.as_raw_fd())?;
        epoll_ctl(epfd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), index, false)?;
        conns.push(Conn {
            stream,
            can_discard,
            index,
            message: (0..args.size).map(|i| (i * 31 + index * 7) as u8).collect(),
            written: 0,
            echo: vec![0u8; args.size],
            read: 0,
            sent_at: Instant::now(),
            messages: 0,
            want_write: false,
        });
    }
    let mut latencies: Vec<u32> = Vec::new();
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.seconds);
    for conn in conns.iter_mut() {
        conn.start_message();
        if conn.write_some()? {
            conn.want_write = true;
            epoll_ctl(
                epfd,
                libc::EPOLL_CTL_MOD,
                conn.stream.as_raw_fd(),
                conn.index,
                true,
            )?;
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while Instant::now() < deadline {
        let n = crate::poll::wait(epfd, &mut events, 100)?;
        for ev in &events[..n] {
            let conn = &mut conns[ev.u64 as usize];
            if ev.events & libc::EPOLLOUT as u32 != 0 && conn.want_write && !conn.write_some()? {
                conn.want_write = false;
                epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_MOD,
                    conn.stream.as_raw_fd(),
                    conn.index,
                    false,
                )?;
            }
            if ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                if let Some(latency) = conn.read_some()? {
                    if latencies.len() < 5_000_000 {
                        latencies.push(latency);
                    }
                    conn.start_message();
                    let pending = conn.write_some()?;
                    if pending != conn.want_write {
                        conn.want_write = pending;
                        epoll_ctl(
                            epfd,
                            libc::EPOLL_CTL_MOD,
                            conn.stream.as_raw_fd(),
                            conn.index,
                            pending,
                        )?;
                    }
                }
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let messages: u64 = conns.iter().map(|c| c.messages).sum();
    unsafe { libc::close(epfd) };
    crate::poll::print_result(messages, elapsed, args.size, &mut latencies, "");
    Ok(())
}
