//! The loop clock: the same monotonic clock, and the same float conversion,
//! as Python's `time.monotonic()`, so `loop.time()` can be compared with it.

const NS_PER_SEC: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // CLOCK_MONOTONIC cannot fail on Linux with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i64 * NS_PER_SEC + ts.tv_nsec as i64
}

/// Seconds as a float, rounded exactly as CPython converts its nanosecond
/// timestamps (whole seconds exactly, otherwise nanoseconds divided by 1e9).
pub fn monotonic() -> f64 {
    let ns = now_ns();
    if ns % NS_PER_SEC == 0 {
        (ns / NS_PER_SEC) as f64
    } else {
        ns as f64 / 1e9
    }
}

/// `time.get_clock_info('monotonic').resolution`.
pub fn resolution() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 1e-9;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
    }

    #[test]
    fn resolution_is_positive_and_small() {
        let r = resolution();
        assert!(r > 0.0 && r < 0.01, "{r}");
    }
}
