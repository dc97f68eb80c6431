"""Seeing inside a running loop: the blocking detector and loop.stats().

Both read figures the native loop keeps anyway (callback and iteration
counters, time spent polling, how late timers ran), so leaving them on
costs next to nothing.  ``FERROLOOP_SLOW_CALLBACK=<seconds>`` in the
environment turns the detector on for every ferroloop loop, which is how
``python -m ferroloop script.py`` gets it without editing the script.
"""

from __future__ import annotations

import os

import weakref
from typing import Any, Callable, Dict, Optional

from . import _inspect_server, _trace
from ._log import logger
from ._watchdog import BlockingReport, Watchdog

ENV_THRESHOLD = "FERROLOOP_SLOW_CALLBACK"


def _threshold_from_env():
    value = os.environ.get(ENV_THRESHOLD, "").strip()
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        logger().warning("ignoring %s=%r: not a number of seconds", ENV_THRESHOLD, value)
        return None
    return threshold if threshold > 0 else None


class IntrospectMixin:
    _watchdog = None
    _blocking_threshold = None
    _blocking_handler = None
    _task_births = None  # task -> creation time, while inspection is on

    def _init_introspection(self):
        self._blocking_threshold = _threshold_from_env()
        if _inspect_server.inspection_requested():
            self.enable_inspection()
        recorder = _trace.active()
        if recorder is not None:
            recorder.attach(self)

    def enable_inspection(self) -> None:
        """Let ``python -m ferroloop ps|pstree PID`` list this loop's tasks,
        through a Unix socket only this user can open (0600, peer uid
        checked).  Task ages count from this call for existing tasks."""
        if self._task_births is None:
            self._task_births = weakref.WeakKeyDictionary()
        _inspect_server.register(self)

    def watch_blocking(
        self,
        threshold: Optional[float] = 0.1,
        handler: Optional[Callable[[BlockingReport], object]] = None,
    ) -> None:
        """Report every callback or task step that runs longer than
        ``threshold`` seconds: which task, the coroutine chain, and the
        file:line where the loop thread was stuck, sampled while it was.

        Reports (``ferroloop.BlockingReport``) are logged as warnings on the
        ``ferroloop`` logger and passed to ``handler(report)`` if given.
        ``threshold=None`` turns the detector off.
        """
        self._check_closed()
        if threshold is not None and not threshold > 0:
            raise ValueError(f"threshold must be a positive number of seconds, got {threshold!r}")
        self._blocking_threshold = threshold
        if handler is not None:
            self._blocking_handler = handler
        self._stop_watchdog()
        if threshold is not None and self.is_running():
            self._start_watchdog()

    def set_blocking_handler(self, handler: Optional[Callable[[BlockingReport], object]]) -> None:
        """Call ``handler(report)`` for each blocking report (None: only log)."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._blocking_handler = handler
        if self._watchdog is not None:
            self._watchdog.handler = handler

    def _start_watchdog(self):
        if self._blocking_threshold is not None and self._watchdog is None:
            self._watchdog = Watchdog(self, self._blocking_threshold, self._blocking_handler)

    def _stop_watchdog(self):
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            # Its last look reports a callback that just ended.
            watchdog.stop()
            self._slowest = watchdog.reports

    def stats(self) -> Dict[str, Any]:
        """What the loop has done so far, as a dict:

        ``iterations``, ``callbacks`` (callbacks and task steps run),
        ``polls`` (calls to the poller) and ``sleeps`` (those that could
        block, giving up the GIL; the others had callbacks to run or only
        looked for I/O, see the README's Benchmarks),
        ``poll_seconds`` (waiting in the poller) and ``callback_seconds``
        (everything else while running), ``lag_histogram`` (how late timers
        ran: ``[(upper bound in seconds or None, count), ...]``), ``ready``
        callbacks, pending ``timers``, registered ``fds``, open
        ``transports``, and ``slowest``: the longest blocking reports (with
        the detector on).
        """
        raw = self._native_stats()
        bounds = list(raw.pop("lag_bounds")) + [None]
        raw["lag_histogram"] = list(zip(bounds, raw["lag_histogram"]))
        run_seconds = raw.pop("run_seconds")
        raw["callback_seconds"] = max(0.0, run_seconds - raw["poll_seconds"])
        watchdog = self._watchdog
        raw["slowest"] = list(watchdog.reports if watchdog else getattr(self, "_slowest", []))
        return raw
