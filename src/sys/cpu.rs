//! Which CPUs the calling thread may run on.

/// The one CPU the calling thread may run on, if it is confined to one
/// (`taskset -c 0`, a one-CPU cpuset). A thread feeding the loop and the
/// loop's own thread confined to the same CPU take turns on it; otherwise
/// they usually run side by side.
///
/// One system call, no allocation: cheap enough to ask every couple of
/// thousand callbacks, so a process re-pinned while it runs is noticed.
#[cfg(target_os = "linux")]
pub fn sole_cpu() -> Option<usize> {
    // Unknown (more than CPU_SETSIZE CPUs) means certainly not one.
    let set = this_threads_cpus()?;
    // SAFETY: reading bits of a filled set.
    unsafe {
        if libc::CPU_COUNT(&set) != 1 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).find(|&cpu| libc::CPU_ISSET(cpu, &set))
    }
}

/// The calling thread's CPU affinity set.
#[cfg(target_os = "linux")]
fn this_threads_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: `set` is a plain bit array that the call fills; its size is
    // passed along, and pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
    }
}

/// Elsewhere threads cannot be confined to a CPU this way.
#[cfg(not(target_os = "linux"))]
pub fn sole_cpu() -> Option<usize> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{sole_cpu, this_threads_cpus};

    fn set_affinity(set: &libc::cpu_set_t) {
        // SAFETY: a filled set of the size passed; pid 0 is this thread.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn tells_one_cpu_from_several() {
        // In a thread of its own, so other tests keep their CPUs.
        std::thread::spawn(|| {
            let all = this_threads_cpus().expect("the thread's CPUs");
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &all) })
                .expect("the thread may run somewhere");
            // SAFETY: plain bit operations on a zeroed set.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(first, &mut one) };
            set_affinity(&one);
            assert_eq!(sole_cpu(), Some(first));
            set_affinity(&all);
            // SAFETY: counting bits of a filled set.
            let several = unsafe { libc::CPU_COUNT(&all) } > 1;
            assert_eq!(sole_cpu(), (!several).then_some(first));
        })
        .join()
        .unwrap();
    }
}
