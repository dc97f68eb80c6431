//! What the epoll-driven tools share: waiting for events, and the JSON line
//! a closed-loop client prints.

use std::io;
use std::os::fd::RawFd;

/// `epoll_wait` into `events`; how many are ready (0 when a signal
/// interrupted the wait).
pub fn wait(epfd: RawFd, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
    let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// Prints a client's results as one JSON line: the rate, the throughput
/// for messages of `size` bytes, latency percentiles, then `extra` (more
/// `, "key": value` pairs, or nothing).
pub fn print_result(messages: u64, elapsed: f64, size: usize, latencies: &mut [u32], extra: &str) {
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * p) as usize]
    };
    println!(
        "{{\"messages\": {messages}, \"seconds\": {elapsed:.3}, \"msgs_per_sec\": {:.1}, \
         \"mib_per_sec\": {:.2}, \"p50_us\": {}, \"p99_us\": {}{extra}}}",
        messages as f64 / elapsed,
        messages as f64 * size as f64 / elapsed / (1024.0 * 1024.0),
        pct(0.5),
        pct(0.99)
    );
}
