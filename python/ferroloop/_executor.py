"""Executors, and the resolver calls that run in them."""

from __future__ import annotations

import concurrent.futures
import socket
import sys
import threading
import warnings
from asyncio import futures, tasks
from ._log import logger

from ._resolve import numeric_addrinfo
from ._futures import (
    set_result_unless_cancelled as _set_result_unless_cancelled,
    set_exception_unless_cancelled as _set_exception_unless_cancelled,
)

# 3.10 only warns about a default executor that is not a thread pool;
# 3.11 and later refuse it.
_DEFAULT_EXECUTOR_MUST_BE_THREADS = sys.version_info >= (3, 11)
# From 3.13 the shutdown timeout bounds the wait for the executor itself.
_SHUTDOWN_TIMEOUT_BOUNDS_WAIT = sys.version_info >= (3, 13)


class ExecutorMixin:
    _default_executor = None
    _executor_shutdown_called = False

    def run_in_executor(self, executor, func, *args):
        """Run ``func(*args)`` in ``executor`` (None: the default thread
        pool) and return an asyncio future for its result."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        """Use ``executor`` (a ThreadPoolExecutor) for ``run_in_executor(None, ...)``."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            if _DEFAULT_EXECUTOR_MUST_BE_THREADS:
                raise TypeError("executor must be ThreadPoolExecutor instance")
            warnings.warn(
                "Using the default executor that is not an instance of "
                "ThreadPoolExecutor is deprecated and will be prohibited "
                "in Python 3.9",
                DeprecationWarning,
                2,
            )
        self._default_executor = executor

    if sys.version_info >= (3, 12):

        async def shutdown_default_executor(self, timeout=None):
            """Shut the default executor down, joining its threads from a
            helper thread so the loop keeps running. With ``timeout``, stop
            waiting after that many seconds and warn."""
            await self._shutdown_default_executor(timeout)

    else:
        # asyncio added ``timeout`` in 3.12; before, passing one is an error.

        async def shutdown_default_executor(self):
            """Shut the default executor down, joining its threads from a
            helper thread so the loop keeps running."""
            await self._shutdown_default_executor(None)

    async def _shutdown_default_executor(self, timeout):
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        finished = self.create_future()
        thread = threading.Thread(target=self._join_executor, args=(executor, finished))
        thread.start()
        if timeout is None or not _SHUTDOWN_TIMEOUT_BOUNDS_WAIT:
            # 3.12 applies the timeout only to joining the helper thread,
            # after the executor has already shut down.
            try:
                await finished
            finally:
                thread.join(timeout)
            if thread.is_alive():
                self._warn_executor_not_joined(executor, timeout)
            return
        done, _ = await tasks.wait([finished], timeout=timeout)
        if not done:
            self._warn_executor_not_joined(executor, timeout)
        else:
            thread.join()
            finished.result()

    @staticmethod
    def _warn_executor_not_joined(executor, timeout):
        warnings.warn(
            "The executor did not finishing joining its threads within "
            f"{timeout} seconds.",
            RuntimeWarning,
            stacklevel=3,
        )
        executor.shutdown(wait=False)

    def _join_executor(self, executor, finished):
        # Runs in a helper thread.
        try:
            executor.shutdown(wait=True)
        except Exception as exc:
            if not self.is_closed():
                self.call_soon_threadsafe(_set_exception_unless_cancelled, finished, exc)
        else:
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, finished, None)

    # ---- name resolution ------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """``socket.getaddrinfo`` without blocking the loop. Numeric
        addresses are answered at once; names are resolved in the default
        executor."""
        resolve = self._getaddrinfo_logged if self._debug else socket.getaddrinfo
        try:
            # Only a name can be numeric; anything else goes to the resolver,
            # whose error is asyncio's (numeric_addrinfo's checks would
            # fail differently, as create_connection's do on asyncio).
            numeric = isinstance(host, (str, bytes)) and numeric_addrinfo(
                host, port, family, type or socket.SOCK_STREAM, proto
            )
        except UnicodeError:
            # asyncio's getaddrinfo has no shortcut that decodes the name:
            # one Python's IDNA 2003 codec rejects (an IDNA 2008 name given
            # as bytes) goes to the resolver as it is.
            numeric = None
        if numeric:
            self._check_closed()
            # No lookup happens for a numeric host and port, so the call
            # cannot block.
            return resolve(host, port, family, type, proto, flags)
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        """``socket.getnameinfo`` in the default executor."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    def _getaddrinfo_logged(self, host, port, family, type, proto, flags):
        """Debug mode: log each lookup and how long it took."""
        parts = [f"{host}:{port!r}"]
        for name, value in (("family", family), ("type", type), ("proto", proto), ("flags", flags)):
            if value:
                parts.append(f"{name}={value!r}")
        query = ", ".join(parts)
        logger().debug("Get address info %s", query)
        started = self.time()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        elapsed = self.time() - started
        message = f"Getting address info {query} took {elapsed * 1e3:.3f}ms: {addrinfo!r}"
        if elapsed >= self.slow_callback_duration:
            logger().info(message)
        else:
            logger().debug(message)
        return addrinfo
