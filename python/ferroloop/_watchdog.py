"""The blocking detector: which callback blocked the loop, where, how long.

The loop counts callbacks natively as it runs them (two counter updates per
callback, no clock read), so the detector costs the loop nothing measurable.
A watchdog thread looks at the counters a few times per threshold; when the
same callback is still running after the threshold, it samples the loop
thread's Python stack *while it is blocked*, which finds the line that
blocks (the ``time.sleep`` inside ``cook()``), and reports once the callback
ends, with the total time.  A callback that never ends is reported while it
runs, then every ten thresholds.

Reports are ``BlockingReport`` objects, logged as warnings on the
``ferroloop`` logger and passed to the handler set with
``loop.set_blocking_handler()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import threading
import time
import traceback
from typing import Callable, Optional

logger = logging.getLogger("ferroloop")

# Code flags of coroutine functions' frames (CO_COROUTINE, CO_ITERABLE_COROUTINE).
_COROUTINE_FLAGS = 0x80 | 0x100


@dataclasses.dataclass
class BlockingReport:
    """One callback or task step that held the loop longer than allowed."""

    #: Seconds the callback ran (so far, when ``finished`` is false).
    duration: float
    #: Whether the callback had returned when this report was made.
    finished: bool
    #: The task whose step it was, or None for a plain callback.
    task: Optional[asyncio.Task]
    #: The task's name, or the callback's description.
    name: str
    #: The coroutines on the stack, outermost first (e.g. ["main", "cook"]).
    coroutines: list
    #: The stack where the loop was blocked, innermost last.
    stack: traceback.StackSummary
    #: "file:line" of the innermost frame: where it was stuck.
    where: str
    #: The threshold that was exceeded.
    threshold: float

    def format(self) -> str:
        state = "blocked" if self.finished else "is blocking"
        who = f"Task {self.name!r}" if self.task is not None else f"Callback {self.name}"
        lines = [
            f"{who} {state} the event loop for {self.duration:.3f} s "
            f"(threshold {self.threshold:g} s) at {self.where}"
        ]
        if self.coroutines:
            lines.append("  coroutine chain: " + " -> ".join(self.coroutines))
        lines.append("  stack while blocked (most recent call last):")
        lines.extend("  " + line.rstrip("\n") for line in self.stack.format())
        return "\n".join(lines)


def _describe(handle):
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return owner, owner.get_name()
    return None, repr(handle)


def _coroutine_chain(stack_frames):
    return [
        getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
        for frame in stack_frames
        if frame.f_code.co_flags & _COROUTINE_FLAGS
    ]


class Watchdog:
    """Watches one loop from its own daemon thread."""

    def __init__(self, loop, threshold: float, handler: Optional[Callable] = None):
        if not threshold > 0:
            raise ValueError(f"threshold must be a positive number of seconds, got {threshold!r}")
        self.loop = loop
        self.threshold = float(threshold)
        self.handler = handler
        self.reports: list = []  # the slowest, for loop.stats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ferroloop-watchdog", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _run(self):
        # Durations are measured from when the watchdog first saw the
        # callback running: at most one interval short.
        interval = min(self.threshold / 4, 0.05)
        seen = None  # [callback number, first seen at, sample, next interim report]
        while True:
            stopping = self._stop.wait(interval)
            started, finished = self.loop._progress()
            now = time.monotonic()
            if seen is not None and (seen[0] != started or started == finished):
                if seen[2] is not None:
                    # It ended: report with the whole duration.
                    self._emit(seen[2], now - seen[1], finished=True)
                seen = None
            if stopping:
                return
            if started == finished:
                continue
            if seen is None:
                seen = [started, now, None, None]
                continue
            blocked = now - seen[1]
            if blocked >= self.threshold and seen[2] is None:
                seen[2] = self._sample()
                seen[3] = now + 10 * self.threshold
                if seen[2] is not None:
                    # Not finished yet: say so now, in case it never does.
                    self._emit(seen[2], blocked, finished=False)
            elif seen[2] is not None and now >= seen[3]:
                seen[2] = self._sample() or seen[2]
                seen[3] = now + 10 * self.threshold
                self._emit(seen[2], blocked, finished=False)

    def _sample(self):
        """The loop thread's stack and the running handle, taken now."""
        thread_id = self.loop._thread_id
        if not thread_id:
            return None
        frame = sys._current_frames().get(thread_id)
        handle = self.loop._running_handle()
        if frame is None or handle is None:
            return None
        frames = []
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        frames.reverse()
        # Only the frames under the loop's own machinery: from the first
        # coroutine frame, or the callback's, down.
        first = next((i for i, f in enumerate(frames) if f.f_code.co_flags & _COROUTINE_FLAGS), None)
        if first is not None:
            frames = frames[first:]
        stack = traceback.StackSummary.extract(
            ((f, f.f_lineno) for f in frames), lookup_lines=True, capture_locals=False
        )
        task, name = _describe(handle)
        return task, name, _coroutine_chain(frames), stack

    def _emit(self, sample, duration, finished):
        task, name, chain, stack = sample
        where = f"{stack[-1].filename}:{stack[-1].lineno}" if len(stack) else "?"
        report = BlockingReport(duration, finished, task, name, chain, stack, where, self.threshold)
        if finished:
            self.reports.append(report)
            self.reports.sort(key=lambda r: r.duration, reverse=True)
            del self.reports[10:]
        logger.warning("%s", report.format())
        if self.handler is not None:
            try:
                self.handler(report)
            except Exception:
                logger.exception("blocking handler %r failed", self.handler)
