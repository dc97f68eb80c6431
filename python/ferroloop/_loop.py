"""``ferroloop.EventLoop``: the native core plus the parts of the loop that
asyncio itself writes in Python (lifecycle, futures and tasks, async
generator hooks, debug mode)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import warnings
import weakref
from asyncio import constants, events, futures, tasks

from . import _debug
from ._connect import ConnectMixin
from ._core import LoopCore
from ._datagram import DatagramMixin
from ._read_buffer import ReadBufferMixin
from ._exceptions import ExceptionHandlerMixin
from ._executor import ExecutorMixin
from ._introspect import IntrospectMixin
from ._log import logger
from ._sendfile import SendfileMixin
from ._server import ServerMixin
from ._subprocess import SubprocessMixin
from ._pipes import PipesMixin
from ._signals import SignalMixin
from ._sock_ops import SockOpsMixin
from ._transport import TransportMixin

_TASK_FACTORY_TAKES_CONTEXT = sys.version_info >= (3, 11)


def _stop_when_done(fut):
    """Done callback of run_until_complete's future."""
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # The loop is already unwinding with this exception.
            return
    futures._get_loop(fut).stop()


class EventLoop(
    LoopCore,
    ExceptionHandlerMixin,
    IntrospectMixin,
    ExecutorMixin,
    SignalMixin,
    ServerMixin,
    SendfileMixin,
    DatagramMixin,
    ReadBufferMixin,
    PipesMixin,
    SubprocessMixin,
    SockOpsMixin,
    TransportMixin,
    ConnectMixin,
    asyncio.AbstractEventLoop,
):
    """An asyncio event loop implemented in Rust.

    Use it wherever asyncio accepts a loop: ``ferroloop.run(main())``,
    ``asyncio.Runner(loop_factory=ferroloop.new_event_loop)``, or
    ``ferroloop.install()`` followed by ``asyncio.run(main())``.
    """

    def __init__(self):
        self.slow_callback_duration = 0.1
        self._task_factory = None
        self._exception_handler = None
        self._signal_handlers = {}
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._old_agen_hooks = None
        self.set_debug(_debug.debug_requested())
        self._init_introspection()
        self._follow_time()

    # asyncio decides which timers are due, and where call_later's deadline
    # falls, by calling self.time(). A subclass may override it and a test
    # may patch it on the instance (mock.patch.object(loop, "time")); the
    # native core then reads that clock instead of its own. Attributes are
    # set on a loop a handful of times per run, so this hook costs nothing
    # that matters.
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "time":
            self._follow_time()

    def __delattr__(self, name):
        super().__delattr__(name)
        if name == "time":
            self._follow_time()

    def _follow_time(self):
        """Tell the native core whether ``self.time`` is still its own."""
        replaced = "time" in self.__dict__ or type(self).time is not _NATIVE_TIME
        self._set_python_clock(replaced)

    def __repr__(self):
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # ---- checks ---------------------------------------------------------

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _check_callback(self, callback, method):
        _debug.check_callback(callback, method)

    # ---- running --------------------------------------------------------

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook,
        )
        events._set_running_loop(self)
        self._cache_call_soon()
        self._claim_wakeup_fd()
        self._start_watchdog()

    def _run_forever_cleanup(self):
        self._uncache_call_soon()
        self._unclaim_wakeup_fd()
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_forever(self):
        """Run until ``stop()`` is called."""
        self._run_forever_setup()
        try:
            self._run_forever_native()
        finally:
            self._run_forever_cleanup()

    def run_until_complete(self, future):
        """Run until ``future`` (a future, task or coroutine) is done and
        return its result or raise its exception."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller gets the exception raised; no "never retrieved" log.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # Mark the exception retrieved: it is propagating already.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: drop pending callbacks, release the poller, and
        shut the default executor down without waiting."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._debug:
            logger().debug("Close %r", self)
        self._remove_all_signal_handlers()
        self._stop_watchdog()
        self._close_child_watching()
        self._close_native()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ---- debug mode -----------------------------------------------------

    def set_debug(self, enabled):
        """Turn asyncio's debug mode on or off."""
        self._debug = enabled
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # ---- futures and tasks ----------------------------------------------

    if _TASK_FACTORY_TAKES_CONTEXT:

        def create_task(self, coro, *, name=None, context=None):
            """Wrap ``coro`` in a task (or what the task factory makes)."""
            self._check_closed()
            factory = self._task_factory
            if factory is None:
                task = tasks.Task(coro, loop=self, name=name, context=context)
                if task._source_traceback:
                    del task._source_traceback[-1]
            else:
                if context is None:
                    task = factory(self, coro)
                else:
                    task = factory(self, coro, context=context)
                _name_task(task, name)
            if self._task_births is not None:
                self._task_births[task] = time.monotonic()
            return task

    else:

        def create_task(self, coro, *, name=None):
            """Wrap ``coro`` in a task (or what the task factory makes)."""
            self._check_closed()
            factory = self._task_factory
            if factory is None:
                task = tasks.Task(coro, loop=self, name=name)
                if task._source_traceback:
                    del task._source_traceback[-1]
            else:
                task = factory(self, coro)
                _name_task(task, name)
            if self._task_births is not None:
                self._task_births[task] = time.monotonic()
            return task

    def set_task_factory(self, factory):
        """Use ``factory(loop, coro)`` to create tasks; None restores the
        default."""
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    # ---- async generators -----------------------------------------------

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Close every async generator still suspended on this loop."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[agen.aclose() for agen in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )


# The method `time` resolves to when nothing replaced it: LoopCore's.
_NATIVE_TIME = EventLoop.time


def _name_task(task, name):
    """Apply ``create_task(name=...)`` to a task made by a task factory."""
    if name is None:
        return
    try:
        set_name = task.set_name
    except AttributeError:
        warnings.warn(
            "Task.set_name() was added in Python 3.8, the method support will "
            "be mandatory for third-party task implementations since 3.13.",
            DeprecationWarning,
            stacklevel=3,
        )
    else:
        set_name(name)
