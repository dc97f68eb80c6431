"""asyncio's debug mode: where handles were created, callback checks, and
the slow-callback warning. Called from the native core only when the loop
is in debug mode."""

from __future__ import annotations

import sys
from asyncio import coroutines, format_helpers
from ._log import logger

from ._format import format_handle


def source_traceback():
    """The stack of the Python code that called into the loop, innermost
    frame last (the native method itself has no frame)."""
    return format_helpers.extract_stack(sys._getframe(1))


def check_callback(callback, method: str) -> None:
    if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(
            f"a callable object was expected by {method}(), got {callback!r}"
        )


def log_slow_callback(handle, seconds: float) -> None:
    logger().warning("Executing %s took %.3f seconds", format_handle(handle), seconds)


def debug_requested() -> bool:
    """Whether a new loop starts in debug mode: ``-X dev`` or
    ``PYTHONASYNCIODEBUG`` (unless ``-E``), as for asyncio's loops."""
    return coroutines._is_debug_mode()
