//! The ceiling: a single-threaded epoll echo server in plain Rust. No event
//! loop can echo faster on the same core, so its figure bounds the others.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use crate::Args;

fn epoll_add(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn run(args: &Args) -> io::Result<()> {
    let listener = TcpListener::bind(&args.addr)?;
    listener.set_nonblocking(true)?;
    println!("{}", listener.local_addr()?);
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    epoll_add(epfd, listener.as_raw_fd())?;
    let mut conns: HashMap<RawFd, TcpStream> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == listener.as_raw_fd() {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    // Blocking writes keep the ceiling simple: an echo never
                    // exceeds what the client is waiting to read.
                    stream.set_nonblocking(true)?;
                    epoll_add(epfd, stream.as_raw_fd())?;
                    conns.insert(stream.as_raw_fd(), stream);
                }
                continue;
            }
            let Some(stream) = conns.get_mut(&fd) else { continue };
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    conns.remove(&fd);
                }
                Ok(n) => {
                    let mut sent = 0;
                    while sent < n {
                        match stream.write(&buf[sent..n]) {
                            Ok(k) => sent += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}
