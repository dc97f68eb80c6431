//! ferroloop's native core: Python's asyncio event loop in Rust.
//!
//! The Python package (`python/ferroloop`) builds the public loop class on
//! top of [`event_loop::LoopCore`].

mod bound_call_soon;
mod call;
mod clock;
mod datagram_io;
mod datagram_sendto;
mod errors;
mod event_loop;
mod fast_calls;
mod fd_registry;
mod gc_visit;
mod gil_cell;
mod handle_alloc;
mod handles;
mod loop_stats;
mod method_descriptor;
mod prefetch;
mod py_bytes;
mod py_helpers;
mod sock_object;
mod sock_ops;
mod stream_feed;
mod stream_transport;
mod sys;
mod timers;
mod tls_pump;
mod write_buffer;

use pyo3::prelude::*;

/// Panics on purpose, so the test suite can check that a Rust panic reaches
/// Python as an exception instead of aborting the interpreter.
#[pyfunction]
fn _panic_for_tests(message: &str) {
    panic!("{message}");
}

/// Whether this build recognized PyO3's object layout and makes handles
/// without its initializer (see `handle_alloc`); checked by the test suite
/// so a PyO3 upgrade cannot silently take the slow path.
#[pyfunction]
fn _handles_built_directly() -> bool {
    handle_alloc::builds_directly()
}

// Declared GIL-using: the loop's state (GilCell, the handle free list)
// is shared on the strength of the GIL, so a free-threaded CPython must
// keep it on while this module is loaded.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    fast_calls::install(m.py())?;
    bound_call_soon::install(m.py())?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    handle_alloc::install(m.py());
    m.add_class::<stream_transport::StreamTransport>()?;
    m.add_class::<sock_ops::SockWaiter>()?;
    m.add_class::<datagram_io::DatagramIo>()?;
    m.add_function(wrap_pyfunction!(datagram_sendto::datagram_sendto, m)?)?;
    m.add_class::<tls_pump::TlsPump>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(_handles_built_directly, m)?)?;
    m.add_function(wrap_pyfunction!(
        sock_object::_sock_fields_read_directly,
        m
    )?)?;
    Ok(())
}
