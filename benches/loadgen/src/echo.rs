//! Closed-loop echo client: one thread per connection, each sending a
//! message and reading the full echo before the next. Every echo is
//! compared with what was sent, so a loop that loses or mixes data fails
//! the run instead of looking fast.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::Args;

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub fn connect(addr: &str) -> io::Result<Box<dyn Stream>> {
    if let Some(path) = addr.strip_prefix("unix:") {
        Ok(Box::new(UnixStream::connect(path)?))
    } else {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

struct ConnResult {
    messages: u64,
    latencies_us: Vec<u32>,
}

fn one_connection(
    addr: &str,
    index: usize,
    size: usize,
    start: &Barrier,
    stop: &AtomicBool,
) -> io::Result<ConnResult> {
    let mut stream = connect(addr)?;
    // A message pattern unique to this connection and changing per message,
    // so crossed or stale data is caught.
    let mut message: Vec<u8> = (0..size).map(|i| (i * 31 + index * 7) as u8).collect();
    let mut echo = vec![0u8; size];
    let mut result = ConnResult {
        messages: 0,
        latencies_us: Vec::new(),
    };
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        message[0] = result.messages as u8;
        let sent_at = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut echo)?;
        if echo != message {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("connection {index}: echo differs from message {}", result.messages),
            ));
        }
        result.messages += 1;
        if result.latencies_us.len() < 1_000_000 {
            result.latencies_us.push(sent_at.elapsed().as_micros() as u32);
        }
    }
    Ok(result)
}

pub fn run(args: &Args) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.conns + 1));
    let workers: Vec<_> = (0..args.conns)
        .map(|index| {
            let (addr, stop, start, size) = (args.addr.clone(), stop.clone(), start.clone(), args.size);
            thread::spawn(move || one_connection(&addr, index, size, &start, &stop))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    let mut messages = 0u64;
    let mut latencies = Vec::new();
    for worker in workers {
        let result = worker
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))??;
        messages += result.messages;
        latencies.extend(result.latencies_us);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * p) as usize]
    };
    println!(
        "{{\"messages\": {messages}, \"seconds\": {elapsed:.3}, \"msgs_per_sec\": {:.1}, \
         \"mib_per_sec\": {:.2}, \"p50_us\": {}, \"p99_us\": {}}}",
        messages as f64 / elapsed,
        messages as f64 * args.size as f64 / elapsed / (1024.0 * 1024.0),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
