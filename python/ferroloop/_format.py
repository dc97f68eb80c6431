"""Text formatting shared with asyncio: handle reprs and callback sources.

The native core calls these on error and repr paths only. They use
asyncio's own formatting helpers so messages read exactly as the running
Python version's asyncio writes them.
"""

from __future__ import annotations

import inspect
from asyncio import format_helpers, tasks

# Python 3.13 added a ``debug`` flag that hides callback arguments outside
# debug mode; earlier versions always show them.
_SOURCE_TAKES_DEBUG = (
    "debug" in inspect.signature(format_helpers._format_callback_source).parameters
)


def callback_source(func, args, debug: bool) -> str:
    """How asyncio names a callback in messages: ``func(args) at file:line``."""
    if _SOURCE_TAKES_DEBUG:
        return format_helpers._format_callback_source(func, args, debug=debug)
    return format_helpers._format_callback_source(func, args)


def handle_repr(handle) -> str:
    """``<Handle cb() at file:line>`` / ``<TimerHandle when=... cb()>``."""
    return "<{}>".format(" ".join(handle_repr_info(handle)))


def handle_repr_info(handle) -> list:
    """The parts of a handle's repr, as asyncio's ``Handle._repr_info()``."""
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    when = getattr(handle, "_when", None)
    if when is not None:
        info.append(f"when={when}")
    callback = handle._callback
    if callback is not None:
        info.append(callback_source(callback, handle._args, handle._loop.get_debug()))
    traceback = handle._source_traceback
    if traceback:
        filename, lineno = traceback[-1][:2]
        info.append(f"created at {filename}:{lineno}")
    return info


def format_handle(handle) -> str:
    """A handle as the slow-callback warning names it: the task it steps,
    when it steps one, else the handle itself."""
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, tasks.Task):
        return repr(owner)
    return str(handle)
