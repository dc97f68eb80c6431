"""Unix signal handlers on the loop, with asyncio's validation and errors.

Python's C-level handler writes each caught signal's number to the loop's
self-pipe (``signal.set_wakeup_fd``); the native core reads it in its next
iteration and calls ``_handle_signal``. A signal that arrives while the
loop is not running waits in the pipe until the loop runs again.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
import warnings
from asyncio import coroutines
from ._log import logger


def _ignore_signal(signum, frame):
    """The Python-level handler: the work happens on the loop."""


class SignalMixin:
    def add_signal_handler(self, sig, callback, *args):
        """Run ``callback(*args)`` on the loop whenever signal ``sig`` arrives.

        Raises ValueError for an invalid signal number and RuntimeError for
        a signal that cannot be caught or outside the main thread.
        """
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Fails outside the main thread, which is how asyncio refuses
            # signal handlers on loops running in other threads.
            signal.set_wakeup_fd(self._wakeup_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))

        self._signal_handlers[sig] = self._make_handle(callback, *args)
        try:
            signal.signal(sig, _ignore_signal)
            # Keep blocking system calls in other code from failing with EINTR.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._release_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler for ``sig``; True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers:
            self._release_wakeup_fd()
        return True

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _handle_signal(self, sig):
        """Called by the native core for each signal number read from the
        self-pipe."""
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # removed after the signal was caught
        if handle.cancelled():
            self.remove_signal_handler(sig)
        else:
            # The same handle is queued again each time the signal arrives.
            self._add_callback(handle)

    # ---- the signal wakeup fd while the loop runs --------------------------

    _claimed_wakeup_fd = False

    def _claim_wakeup_fd(self):
        """While running in the main thread, make Python's C signal handler
        wake the loop, unless someone else already owns the wakeup fd.

        Without it, a Ctrl-C whose signal lands on another thread (an
        executor worker, say) would only be noticed when the loop next
        wakes up for some other reason."""
        if threading.current_thread() is not threading.main_thread():
            return
        ours = self._wakeup_fd()
        try:
            previous = signal.set_wakeup_fd(ours)
        except (ValueError, OSError):
            return
        if previous not in (-1, ours):
            signal.set_wakeup_fd(previous)  # not ours to take
        elif previous == -1:
            self._claimed_wakeup_fd = True

    def _unclaim_wakeup_fd(self):
        if self._claimed_wakeup_fd:
            self._claimed_wakeup_fd = False
            if not self._signal_handlers:
                self._release_wakeup_fd()

    def _release_wakeup_fd(self):
        if self._claimed_wakeup_fd:
            return  # still needed while the loop runs
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger().info("set_wakeup_fd(-1) failed: %s", exc)

    def _remove_all_signal_handlers(self):
        if not self._signal_handlers:
            return
        if sys.is_finalizing():
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, "
                "skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
            return
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
