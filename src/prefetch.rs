//! Cache prefetch hints for the objects the loop is about to touch.
//!
//! With many timers or a long ready queue, a handle object is cold by the
//! time the loop reaches it, and reading its first field (the cancelled
//! flag) stalls on memory: a third of the time of a heap of 100,000 timers.
//! Asking for the next object while the current one is handled lets the two
//! overlap. A hint never changes behaviour; elsewhere than x86-64 it is a
//! no-op.

use pyo3::ffi;

/// Starts loading the first two cache lines of `object` (where a handle's
/// header and flags are).
#[inline(always)]
pub(crate) fn object(object: *mut ffi::PyObject) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = object.cast::<i8>().cast_const();
        _mm_prefetch::<_MM_HINT_T0>(start);
        _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(64));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = object;
}

/// Starts loading `lines` cache lines from `start`.
#[inline(always)]
pub(crate) fn lines<T>(start: *const T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as above; `wrapping_add` keeps the address arithmetic defined
    // even past the end of an allocation.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = start.cast::<i8>();
        for line in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * 64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, lines);
}
