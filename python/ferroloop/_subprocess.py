"""Subprocesses: subprocess_exec, subprocess_shell and child watching.

The process transport is the stdlib's own (asyncio's Unix subprocess
transport over ``subprocess.Popen``, with its pipes connected through
ferroloop's pipe transports), so every Popen option and every detail of
process/pipe teardown is the running Python's.  What ferroloop supplies is
how a child's exit is noticed: a pidfd registered with the poller, so exit
is an ordinary readiness event, no signal handler and no polling; where
pidfds are unavailable, a thread blocked in ``waitpid`` for that one child.
Either way only our own child is reaped, never someone else's.

A child watcher that the program installed itself with
``asyncio.set_child_watcher`` (3.10-3.13) is used instead, exactly as
asyncio uses it: such a program may reap children its own way (a
``waitpid(-1)`` watcher would otherwise steal our children's statuses).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from asyncio import events, unix_events

from ._log import logger


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


def _check_binary(bufsize, text, encoding, errors):
    # Pipes carry bytes: text mode is refused up front, as asyncio does.
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


_WATCHER_IS_ITSELF = sys.version_info >= (3, 12)


def _installed_child_watcher():
    """The watcher the program set on the current policy, if any."""
    if not hasattr(events.AbstractEventLoopPolicy, "get_child_watcher"):
        return None  # 3.14 has no child watchers
    return getattr(events.get_event_loop_policy(), "_watcher", None)


class SubprocessMixin:
    async def subprocess_shell(self, protocol_factory, cmd, *, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=False, shell=True, bufsize=0,
                               encoding=None, errors=None, text=None,
                               **kwargs):  # fmt: skip
        """Run ``cmd`` through the shell: returns (transport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_binary(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self._debug:
            # The command itself is not logged: it may hold secrets.
            debug_log = f"run shell command {cmd!r}"
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs
        )
        if self._debug and debug_log is not None:
            logger().info("%s: %r", debug_log, transport)
        return transport, protocol

    async def subprocess_exec(self, protocol_factory, program, *args, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=False, shell=False, bufsize=0,
                              encoding=None, errors=None, text=None,
                              **kwargs):  # fmt: skip
        """Run ``program`` with ``args``: returns (transport, protocol)."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_binary(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self._debug:
            debug_log = f"execute program {program!r}"
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, (program,) + args, False, stdin, stdout, stderr, bufsize, **kwargs
        )
        if self._debug and debug_log is not None:
            logger().info("%s: %r", debug_log, transport)
        return transport, protocol

    def _log_subprocess(self, msg, stdin, stdout, stderr):
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        logger().debug(" ".join(info))

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr,
                                         bufsize, extra=None, **kwargs):  # fmt: skip
        installed = _installed_child_watcher()
        if installed is not None:
            with installed as entered:
                # Up to 3.11 asyncio uses what __enter__ returns, from 3.12
                # the watcher itself (the same object for real watchers).
                watcher = installed if _WATCHER_IS_ITSELF else entered
                if not watcher.is_active():
                    # Before the process exists: nobody could reap it.
                    raise RuntimeError(
                        "asyncio.get_child_watcher() is not activated, "
                        "subprocess support is not installed."
                    )
                return await self._start_subprocess(
                    watcher, protocol, args, shell, stdin, stdout, stderr, bufsize, extra,
                    kwargs,
                )  # fmt: skip
        return await self._start_subprocess(
            None, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, kwargs
        )

    async def _start_subprocess(self, watcher, protocol, args, shell, stdin, stdout, stderr,
                                bufsize, extra, kwargs):  # fmt: skip
        waiter = self.create_future()
        transport = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )  # fmt: skip
        if watcher is not None:
            watcher.add_child_handler(transport.get_pid(), self._child_watcher_callback, transport)
        else:
            self._watch_child(transport.get_pid(), transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    # ---- child watching ----------------------------------------------------

    if sys.version_info >= (3, 12):

        def _child_watcher_callback(self, pid, returncode, transport):
            # Called by an installed watcher, possibly from another thread.
            self.call_soon_threadsafe(transport._process_exited, returncode)

    else:

        def _child_watcher_callback(self, pid, returncode, transport):
            # Called by an installed watcher, possibly from another thread.
            # 3.10/3.11's asyncio waits one more loop turn before reporting
            # the exit (callbacks already queued, such as the pipes' last
            # data, run first); 3.12 dropped that turn.  Each version's
            # order is kept.
            self.call_soon_threadsafe(self.call_soon, transport._process_exited, returncode)

    def _child_pidfds(self):
        pidfds = getattr(self, "_pidfds", None)
        if pidfds is None:
            pidfds = self._pidfds = {}
        return pidfds

    def _watch_child(self, pid, transport):
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            # No pidfds (an old kernel, another OS): one thread waits.
            threading.Thread(
                target=self._wait_child_in_thread,
                args=(pid, transport),
                name=f"ferroloop-waitpid-{pid}",
                daemon=True,
            ).start()
            return
        self._child_pidfds()[pidfd] = pid
        self._add_reader(pidfd, self._child_exited, pidfd, pid, transport)

    def _child_exited(self, pidfd, pid, transport):
        self._remove_reader(pidfd)
        self._child_pidfds().pop(pidfd, None)
        os.close(pidfd)
        self._report_exit(transport, self._reap(pid))

    def _wait_child_in_thread(self, pid, transport):
        returncode = self._reap(pid)
        try:
            self.call_soon_threadsafe(self._report_exit, transport, returncode)
        except RuntimeError:
            pass  # the loop was closed meanwhile: nobody is waiting

    @staticmethod
    def _reap(pid):
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            # Someone else reaped it (a waitpid(-1) elsewhere in the
            # process): the status is lost, as asyncio reports it.
            logger().warning("Unknown child process pid %d, will report returncode 255", pid)
            return 255
        return os.waitstatus_to_exitcode(status)

    def _report_exit(self, transport, returncode):
        if self._debug:
            logger().debug("process %s exited with returncode %s", transport.get_pid(), returncode)
        # One turn later, as asyncio's watchers report it: callbacks already
        # queued (the pipes' last data) run first.
        self.call_soon(transport._process_exited, returncode)

    def _close_child_watching(self):
        """At loop close: stop watching children (they are not reaped by
        this loop any more)."""
        for pidfd in list(self._child_pidfds()):
            os.close(pidfd)
        self._child_pidfds().clear()
