//! Closed-loop UDP echo client: N connected datagram sockets, each with one
//! datagram in flight, all driven by one thread on epoll (the same shape as
//! the TCP client in `echo.rs`). Every echo is compared in full; its first
//! eight bytes carry the socket's message number, so a duplicate or a late
//! echo of an earlier message is told apart from the current one.
//!
//! UDP may drop: a socket whose echo has not come back within
//! `RESEND_AFTER` sends its message again, and the run reports how often
//! that happened (a loop that drops under load shows it there, and pays
//! the wait in its rate).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::Args;

const RESEND_AFTER: Duration = Duration::from_millis(200);
/// How often the sockets are checked for an echo overdue (not on every
/// wake-up: with 100 sockets that scan would cost the client more than
/// the datagrams).
const CHECK_EVERY: Duration = Duration::from_millis(50);

struct Peer {
    socket: UdpSocket,
    message: Vec<u8>,
    echo: Vec<u8>,
    number: u64,
    sent_at: Instant,
    messages: u64,
}

impl Peer {
    fn send(&mut self) -> io::Result<()> {
        self.message[..8].copy_from_slice(&self.number.to_le_bytes());
        self.sent_at = Instant::now();
        match self.socket.send(&self.message) {
            Ok(_) => Ok(()),
            // The kernel's send buffer is full: the resend timer retries.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads every datagram that has arrived; the latencies of the echoes
    /// that completed the current message (at most one), and how many late
    /// echoes of earlier messages were dropped.
    fn receive(&mut self, index: usize) -> io::Result<(Option<u32>, u64)> {
        let mut done = None;
        let mut late = 0;
        loop {
            let n = match self.socket.recv(&mut self.echo) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((done, late)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n < 8 {
                return Err(invalid(format!("socket {index}: echo of {n} bytes")));
            }
            let number = u64::from_le_bytes(self.echo[..8].try_into().unwrap_or([0; 8]));
            if number != self.number {
                late += 1;
                continue;
            }
            if self.echo[..n] != self.message[..] {
                return Err(invalid(format!(
                    "socket {index}: echo differs from message {number}"
                )));
            }
            done = Some(self.sent_at.elapsed().as_micros() as u32);
            self.messages += 1;
            self.number += 1;
            self.send()?;
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

pub fn run(args: &Args) -> io::Result<()> {
    if args.size < 8 || args.size > 65_507 {
        return Err(invalid("UDP messages are 8 to 65,507 bytes".into()));
    }
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut peers = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(&args.addr)?;
        socket.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: index as u64,
        };
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        peers.push(Peer {
            socket,
            message: (0..args.size).map(|i| (i * 31 + index * 7) as u8).collect(),
            echo: vec![0u8; 65_536],
            number: 0,
            sent_at: Instant::now(),
            messages: 0,
        });
    }
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.seconds);
    for peer in peers.iter_mut() {
        peer.send()?;
    }
    let mut latencies: Vec<u32> = Vec::new();
    let (mut resent, mut late) = (0u64, 0u64);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut next_check = began + CHECK_EVERY;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let n = crate::poll::wait(epfd, &mut events, 50)?;
        for ev in &events[..n] {
            let index = ev.u64 as usize;
            let (done, stale) = peers[index].receive(index)?;
            late += stale;
            if let Some(latency) = done {
                if latencies.len() < 5_000_000 {
                    latencies.push(latency);
                }
            }
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            for peer in peers.iter_mut() {
                if now.duration_since(peer.sent_at) > RESEND_AFTER {
                    resent += 1;
                    peer.send()?;
                }
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let messages: u64 = peers.iter().map(|p| p.messages).sum();
    unsafe { libc::close(epfd) };
    let extra = format!(", \"resent\": {resent}, \"late\": {late}");
    crate::poll::print_result(messages, elapsed, args.size, &mut latencies, &extra);
    Ok(())
}
