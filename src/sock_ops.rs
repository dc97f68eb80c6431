//! Native `loop.sock_recv` and `loop.sock_sendall` for plain sockets
//! (`socket.socket` exactly; subclasses and wrappers keep the Python path in
//! `_sock_ops.py`, which looks their methods up on every attempt).
//!
//! Both make their first attempt at once, as asyncio does, and only then
//! wait. The wait is a `SockWaiter`: a native fd callback that retries the
//! call on each readiness report and completes the future itself, with no
//! Python frame, closure or done-callback per call. A finished receive
//! leaves its waiter registered but parked (see `FdRegistry`), so a task
//! that reads a socket in a loop re-arms it without an `epoll_ctl`.
//!
//! Cancellation needs no hook: a waiter whose future is already done when a
//! report arrives stands down as if it had finished, and the next operation
//! on the socket may re-arm it.

use std::io;
use std::os::fd::RawFd;

use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::call::copy_current_context;
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::fd_registry::Direction;
use crate::gil_cell::GilCell;
use crate::handles::{Handle, NativeSpec};
use crate::py_bytes::recv_new_bytes;
use crate::sock_object::SockFields;
use crate::sys::net;

/// The waiter's fd callback; `_ready` is its Python-visible twin.
static ON_READY: NativeSpec = NativeSpec {
    call: SockWaiter::on_ready,
    name: "_ready",
};

#[derive(Default)]
enum Op {
    #[default]
    Idle,
    Recv {
        limit: usize,
    },
    Send {
        data: Py<PyBytes>,
        sent: usize,
    },
}

#[derive(Default)]
struct WaitState {
    fut: Option<Py<PyAny>>,
    op: Op,
}

/// One socket's pending `sock_recv` or `sock_sendall`, as the fd's native
/// reader or writer callback.
#[pyclass(module = "ferroloop._core", frozen)]
pub struct SockWaiter {
    loop_: Py<LoopCore>,
    fd: RawFd,
    direction: Direction,
    /// Held weakly: a parked waiter must not keep a dropped socket (and so
    /// its fd) open. Only the same socket object may re-arm the waiter.
    sock: Py<PyWeakrefReference>,
    state: GilCell<WaitState>,
}

fn is_done(fut: &Bound<'_, PyAny>) -> PyResult<bool> {
    fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()
}

impl SockWaiter {
    /// The fd's waiter, if it belongs to `sock` and is free for a new
    /// operation (finished, parked, or its future cancelled).
    fn reusable<'py>(
        core: &LoopCore,
        sock: &Bound<'py, PyAny>,
        fd: RawFd,
        direction: Direction,
    ) -> PyResult<Option<Bound<'py, SockWaiter>>> {
        let py = sock.py();
        let Some(target) = core.fd_callback_target(py, fd, direction) else {
            return Ok(None);
        };
        let Ok(waiter) = target.cast_into::<SockWaiter>() else {
            return Ok(None);
        };
        let this = waiter.get();
        let same_sock = this
            .sock
            .bind(py)
            .upgrade()
            .is_some_and(|owner| owner.is(sock));
        if !same_sock {
            return Ok(None);
        }
        Ok(is_idle_waiter(waiter.as_any())?.then_some(waiter))
    }

    /// Starts waiting: the waiter already registered for `sock` is re-armed,
    /// or a new one is registered (replacing any other callback, as
    /// asyncio's `_add_reader`/`_add_writer` do).
    fn wait<'py>(
        lp: &Bound<'py, LoopCore>,
        sock: &Bound<'py, PyAny>,
        fd: RawFd,
        direction: Direction,
        reusable: Option<Bound<'py, SockWaiter>>,
        op: Op,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = lp.py();
        let core = lp.get();
        core.ensure_fd_no_transport(py, &fd.into_pyobject(py)?.into_any())?;
        let fut = LoopCore::create_future(lp)?;
        let arm = |waiter: &SockWaiter| {
            let fut = fut.clone().unbind();
            waiter.state.with(py, |st| {
                let old_fut = st.fut.replace(fut);
                let old_op = std::mem::replace(&mut st.op, op);
                (old_fut, old_op)
            })
        };
        if let Some(waiter) = reusable {
            let old = arm(waiter.get());
            if direction == Direction::Read {
                core.set_reader_parked(py, fd, false);
            }
            drop(old);
            return Ok(fut);
        }
        let waiter = Bound::new(
            py,
            SockWaiter {
                loop_: lp.clone().unbind(),
                fd,
                direction,
                sock: PyWeakrefReference::new(sock)?.unbind(),
                state: GilCell::new(WaitState::default()),
            },
        )?;
        drop(arm(waiter.get()));
        let handle = Handle::native(
            py,
            waiter.as_any(),
            &ON_READY,
            &copy_current_context(py)?,
            lp.as_any(),
        )?;
        core.watch(py, fd, direction, &handle)?;
        Ok(fut)
    }

    /// Readiness callback: retry the operation, complete the future when
    /// it is over.
    fn on_ready(target: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = target.py();
        let waiter = target.cast::<SockWaiter>()?;
        let this = waiter.get();
        let Some(fut) = this
            .state
            .with(py, |st| st.fut.as_ref().map(|f| f.clone_ref(py)))
        else {
            // Finished earlier in this iteration; a parked reader's next
            // report ends its registration in the registry.
            return Ok(());
        };
        let fut = fut.into_bound(py);
        if is_done(&fut)? {
            return this.stand_down(py, true);
        }
        enum Step {
            Recv(usize),
            Send(Py<PyBytes>, usize),
        }
        let step = this.state.with(py, |st| match &st.op {
            Op::Recv { limit } => Some(Step::Recv(*limit)),
            Op::Send { data, sent } => Some(Step::Send(data.clone_ref(py), *sent)),
            Op::Idle => None,
        });
        match step {
            None => Ok(()),
            Some(Step::Recv(limit)) => match recv_new_bytes(py, this.fd, limit)? {
                Ok(data) => {
                    this.stand_down(py, true)?;
                    fut.call_method1(intern!(py, "set_result"), (data,))?;
                    Ok(())
                }
                Err(err) => this.fail(py, &fut, err),
            },
            Some(Step::Send(data, sent)) => {
                let bytes = data.bind(py).as_bytes();
                match net::send(this.fd, &bytes[sent..]) {
                    Ok(n) if sent + n == bytes.len() => {
                        this.stand_down(py, false)?;
                        fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
                        Ok(())
                    }
                    Ok(n) => {
                        this.state.with(py, |st| {
                            if let Op::Send { sent, .. } = &mut st.op {
                                *sent += n;
                            }
                        });
                        Ok(())
                    }
                    Err(err) => this.fail(py, &fut, err),
                }
            }
        }
    }

    /// A would-block is not final; any other error ends the operation.
    fn fail(&self, py: Python<'_>, fut: &Bound<'_, PyAny>, err: io::Error) -> PyResult<()> {
        if net::would_block(&err) {
            return Ok(());
        }
        self.stand_down(py, false)?;
        fut.call_method1(intern!(py, "set_exception"), (os_error(&err).value(py),))?;
        Ok(())
    }

    /// Ends the current operation. A reader that may be reused parks; a
    /// writer (sockets are nearly always writable) or a failed reader
    /// unregisters.
    fn stand_down(&self, py: Python<'_>, park: bool) -> PyResult<()> {
        let old = self
            .state
            .with(py, |st| (st.fut.take(), std::mem::take(&mut st.op)));
        let core = self.loop_.bind(py).get();
        let result = if park && self.direction == Direction::Read {
            core.set_reader_parked(py, self.fd, true);
            Ok(())
        } else {
            core.unwatch(py, self.fd, self.direction)
        };
        drop(old);
        result
    }
}

#[pymethods]
impl SockWaiter {
    /// What the native readiness callback does, for reprs and reports.
    fn _ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::on_ready(slf.as_any())
    }

    fn __repr__(&self) -> String {
        let what = match self.direction {
            Direction::Read => "sock_recv",
            Direction::Write => "sock_sendall",
        };
        format!("<{what} waiter fd={}>", self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.sock)?;
        self.state
            .try_with(|st| {
                visit.call(&st.fut)?;
                if let Op::Send { data, .. } = &st.op {
                    visit.call(data)?;
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        if let Some(taken) = self.state.try_take() {
            drop(taken);
        }
    }
}

/// True for a waiter with no operation in progress (finished, parked, or
/// its future cancelled).
pub(crate) fn is_idle_waiter(target: &Bound<'_, PyAny>) -> PyResult<bool> {
    let Ok(waiter) = target.cast::<SockWaiter>() else {
        return Ok(false);
    };
    let py = target.py();
    let fut = waiter
        .get()
        .state
        .with(py, |st| st.fut.as_ref().map(|f| f.clone_ref(py)));
    match fut {
        Some(fut) => is_done(fut.bind(py)),
        None => Ok(true),
    }
}

/// `loop.sock_recv(sock, n)` for a plain socket: the bytes received at
/// once, or a future the waiter completes. None when `n` is not a size,
/// so the Python path raises the error the socket module gives.
pub(crate) fn sock_recv<'py>(
    lp: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = lp.py();
    let Ok(limit) = n.extract::<usize>() else {
        return Ok(None);
    };
    // Blocking sockets take the Python path, which treats them as asyncio
    // does: refused in debug mode, otherwise used as they are (and the
    // call may block the loop, as on asyncio).
    let fields = SockFields::for_socket(sock)?;
    if !fields.is_nonblocking(sock)? {
        return Ok(None);
    }
    let fd = fields.fd(sock)?;
    let reusable = SockWaiter::reusable(lp.get(), sock, fd, Direction::Read)?;
    match recv_new_bytes(py, fd, limit)? {
        Ok(data) => Ok(Some(data.into_any())),
        Err(err) if net::would_block(&err) => {
            let op = Op::Recv { limit };
            SockWaiter::wait(lp, sock, fd, Direction::Read, reusable, op).map(Some)
        }
        Err(err) => Err(os_error(&err)),
    }
}

/// `loop.sock_sendall(sock, data)` for a plain socket and bytes: None when
/// the kernel took everything at once, a future the waiter completes, or
/// `NotImplemented` for a blocking socket (the Python path's to handle).
pub(crate) fn sock_sendall<'py>(
    lp: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let fields = SockFields::for_socket(sock)?;
    if !fields.is_nonblocking(sock)? {
        return Ok(py.NotImplemented().into_bound(py));
    }
    let fd = fields.fd(sock)?;
    let bytes = data.as_bytes();
    let sent = match net::send(fd, bytes) {
        Ok(n) => n,
        Err(err) if net::would_block(&err) => 0,
        Err(err) => return Err(os_error(&err)),
    };
    if sent == bytes.len() {
        return Ok(py.None().into_bound(py));
    }
    let reusable = SockWaiter::reusable(lp.get(), sock, fd, Direction::Write)?;
    let op = Op::Send {
        data: data.clone().unbind(),
        sent,
    };
    SockWaiter::wait(lp, sock, fd, Direction::Write, reusable, op)
}
