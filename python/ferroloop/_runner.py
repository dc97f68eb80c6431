"""``ferroloop.run``: asyncio.run on a ferroloop loop, for every supported
Python version."""

from __future__ import annotations

import asyncio
import sys
from asyncio import coroutines, events, tasks

from typing import TYPE_CHECKING, Any, Callable, Coroutine, Optional, TypeVar

from ._policy import new_event_loop

if TYPE_CHECKING:
    from ._watchdog import BlockingReport

T = TypeVar("T")


def run(
    main: Coroutine[Any, Any, T],
    *,
    debug: Optional[bool] = None,
    slow_callback: Optional[float] = None,
    on_blocked: Optional[Callable[["BlockingReport"], object]] = None,
) -> T:
    """Run the coroutine ``main`` on a new ferroloop loop and return its
    result, exactly as ``asyncio.run(main, debug=debug)`` does on this
    Python version: remaining tasks are cancelled, async generators and the
    default executor are shut down, and the loop is closed. On 3.11 and
    later, Ctrl-C cancels ``main`` and then raises KeyboardInterrupt.

    ``slow_callback=seconds`` turns on the blocking detector
    (``loop.watch_blocking``): each callback or task step that holds the
    loop longer is reported with its task and the line it was stuck on, to
    the ``ferroloop`` logger and to ``on_blocked(report)`` if given."""
    if events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")

    def loop_factory():
        loop = new_event_loop()
        if slow_callback is not None:
            loop.watch_blocking(slow_callback, on_blocked)
        elif on_blocked is not None:
            loop.set_blocking_handler(on_blocked)
        return loop

    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(main)
    return _run_310(main, debug, loop_factory)


def _run_310(main, debug, loop_factory):
    """asyncio.run as Python 3.10 defines it (no Runner yet)."""
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = loop_factory()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_remaining_tasks(loop):
    pending = tasks.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(tasks.gather(*pending, return_exceptions=True))
    for task in pending:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
