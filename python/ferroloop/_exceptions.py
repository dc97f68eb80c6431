"""The loop's exception handler API, with asyncio's semantics and log format."""

from __future__ import annotations

import sys
import traceback
from ._log import logger

# From 3.12 on, a custom handler runs inside the context of the task,
# future or handle the error came from.
_HANDLER_RUNS_IN_CONTEXT = sys.version_info >= (3, 12)


class ExceptionHandlerMixin:
    _exception_handler = None

    def get_exception_handler(self):
        """The custom exception handler, or None for the default one."""
        return self._exception_handler

    def set_exception_handler(self, handler):
        """Use ``handler(loop, context)`` for errors the loop cannot raise
        to anyone; None restores the default handler."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log ``context`` to the ``asyncio`` logger, as asyncio does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (
            (type(exception), exception, exception.__traceback__)
            if exception is not None
            else False
        )
        current = self._current_handle
        if (
            "source_traceback" not in context
            and current is not None
            and current._source_traceback
        ):
            context["handle_traceback"] = current._source_traceback

        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                value = _format_origin("Object created at", value)
            elif key == "handle_traceback":
                value = _format_origin("Handle created at", value)
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger().error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Hand ``context`` (a dict with 'message', 'exception', 'handle',
        'future', 'task', ...) to the configured exception handler. Errors
        in the handler itself are logged, never raised, except SystemExit
        and KeyboardInterrupt."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger().error("Exception in default exception handler", exc_info=True)
            return
        try:
            run_in = _origin_context(context) if _HANDLER_RUNS_IN_CONTEXT else None
            if run_in is not None:
                run_in.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger().error("Error in exception handler", exc_info=True)


def _format_origin(title, frames):
    text = "".join(traceback.format_list(frames)).rstrip()
    return f"{title} (most recent call last):\n{text}"


def _origin_context(context):
    """The contextvars Context of whatever the error came from, if any."""
    for key in ("task", "future", "handle"):
        origin = context.get(key)
        if origin is not None:
            break
    else:
        return None
    get_context = getattr(origin, "get_context", None)
    if get_context is None:
        return None
    ctx = get_context()
    return ctx if ctx is not None and hasattr(ctx, "run") else None
