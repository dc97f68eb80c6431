//! HTTP/1.1 keep-alive GET load: one thread per connection, each request
//! waiting for its full response (Content-Length framed) before the next.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::echo::{connect, Stream};
use crate::Args;

/// Reads one response; returns its total size.
fn read_response(stream: &mut dyn Stream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 headers"))?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status: {head}"),
                ));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(total);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn run(args: &Args) -> io::Result<()> {
    let host = args
        .addr
        .strip_prefix("unix:")
        .map(|_| "localhost")
        .unwrap_or(&args.addr)
        .to_string();
    let request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", args.path).into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.conns + 1));
    let workers: Vec<_> = (0..args.conns)
        .map(|_| {
            let (addr, stop, start, request) = (
                args.addr.clone(),
                stop.clone(),
                start.clone(),
                request.clone(),
            );
            thread::spawn(move || -> io::Result<u64> {
                let mut stream = connect(&addr)?;
                let mut buf = Vec::with_capacity(4096);
                let mut done = 0;
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&request)?;
                    read_response(stream.as_mut(), &mut buf)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))??;
    }
    println!(
        "{{\"requests\": {total}, \"seconds\": {elapsed:.3}, \"requests_per_sec\": {:.1}}}",
        total as f64 / elapsed
    );
    Ok(())
}
