"""Pipe transports: connect_read_pipe and connect_write_pipe.

They carry pipes, FIFOs, sockets and character devices (PTYs, /dev/null)
through the loop's native fd callbacks, with asyncio's Unix semantics: the
read side reports EOF as eof_received then connection_lost(None); the write
side queues what the pipe does not take, applies flow control to that
queue, and learns that the reader went away by watching its own end for
readability (the kernel reports the hang-up there).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import warnings
from asyncio import constants, transports

from ._log import logger
from ._futures import set_result_unless_cancelled as _set_result_unless_cancelled

# 3.10's read pipe transport inherits ReadTransport.is_reading, which raises.
_HAS_IS_READING = sys.version_info >= (3, 11)


def _log_fatal(transport, exc, message, quiet_errors):
    # Errors the peer causes (a PTY's EIO when its other side closes; any
    # OSError on the write side, such as EPIPE) are only logged in debug mode.
    if quiet_errors(exc):
        if transport._loop.get_debug():
            logger().debug("%r: %s", transport, message, exc_info=True)
    else:
        transport._loop.call_exception_handler(
            {
                "message": message,
                "exception": exc,
                "transport": transport,
                "protocol": transport._protocol,
            }
        )


class ReadPipeTransport(transports.ReadTransport):
    """Reads a pipe, FIFO, socket or character device."""

    max_size = 256 * 1024  # the most read per readiness event
    _pipe = None  # read by __del__ even if __init__ failed

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._loop = loop
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        self._pipe = pipe
        self._fileno = fileno
        self._read_view = loop._read_buffer()
        self._protocol = protocol
        self._closing = False
        self._paused = False
        # Whether the fd is registered with the poller right now (repr's
        # "polling"): asyncio's repr asks its selector, so an fd the poller
        # refused (epoll and /dev/null: EPERM) shows as "idle" there.
        self._polling = False
        os.set_blocking(fileno, False)
        loop.call_soon(protocol.connection_made, self)
        # Data reaches the protocol only after connection_made, and not at
        # all if it paused reading there.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [type(self).__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append("polling" if self._polling else "idle")
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def _add_reader(self):
        self._loop._add_reader(self._fileno, self._read_ready)
        self._polling = True  # not reached if the poller refused the fd

    def _remove_reader(self):
        self._polling = False
        self._loop._remove_reader(self._fileno)

    def _reading(self):
        return not self._paused and not self._closing

    if _HAS_IS_READING:

        def is_reading(self):
            return self._reading()

    def _start_reading(self):
        if self._reading():
            self._add_reader()

    def _read_ready(self):
        view = self._read_view
        try:
            # Not os.read(fd, max_size): see _read_buffer.py.
            if self.max_size == len(view):
                data = bytes(view[: os.readv(self._fileno, (view,))])
            else:
                data = os.read(self._fileno, self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if data:
            self._protocol.data_received(data)
            return
        if self._loop.get_debug():
            logger().info("%r was closed by peer", self)
        self._closing = True
        self._remove_reader()
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def pause_reading(self):
        if not self._reading():
            return
        self._paused = True
        self._remove_reader()
        if self._loop.get_debug():
            logger().debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._add_reader()
        if self._loop.get_debug():
            logger().debug("%r resumes reading", self)

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def close(self):
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        _log_fatal(self, exc, message, lambda e: isinstance(e, OSError) and e.errno == errno.EIO)
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._remove_reader()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class WritePipeTransport(transports._FlowControlMixin, transports.WriteTransport):
    """Writes a pipe, FIFO, socket or character device."""

    _pipe = None  # read by __del__ even if __init__ failed

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._extra["pipe"] = pipe
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        is_fifo, is_socket = stat.S_ISFIFO(mode), stat.S_ISSOCK(mode)
        if not (is_fifo or is_socket or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        self._pipe = pipe
        self._fileno = fileno
        self._protocol = protocol
        self._buffer = bytearray()
        self._conn_lost = 0
        self._closing = False  # close() or write_eof() was called
        self._writing = False
        os.set_blocking(fileno, False)
        loop.call_soon(protocol.connection_made, self)
        if is_fifo or is_socket:
            # The write end turns readable when the read end is closed.
            loop.call_soon(loop._add_reader, fileno, self._read_ready)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [type(self).__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append("polling" if self._writing else "idle")
            info.append(f"bufsize={self.get_write_buffer_size()}")
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def get_write_buffer_size(self):
        return len(self._buffer)

    def _read_ready(self):
        # Only ever readable because the reader hung up.
        if self._loop.get_debug():
            logger().info("%r was closed by peer", self)
        if self._buffer:
            self._close(BrokenPipeError())
        else:
            self._close()

    def write(self, data):
        """Write without blocking; queue what the pipe does not take now."""
        # asyncio checks the type with an assert (AssertionError, where its
        # socket transports raise TypeError); kept so that programs see the
        # same exception on both loops, also under -O.
        assert isinstance(data, (bytes, bytearray, memoryview)), repr(data)
        if isinstance(data, bytearray):
            data = memoryview(data)
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger().warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = os.write(self._fileno, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._conn_lost += 1
                self._fatal_error(exc, "Fatal write error on pipe transport")
                return
            if n == len(data):
                return
            if n > 0:
                data = memoryview(data)[n:]
            self._loop._add_writer(self._fileno, self._write_ready)
            self._writing = True
        self._buffer += data
        self._maybe_pause_protocol()

    def _write_ready(self):
        try:
            n = os.write(self._fileno, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._buffer.clear()
            self._conn_lost += 1
            self._stop_writing()
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if n < len(self._buffer):
            del self._buffer[:n]
            return
        self._buffer.clear()
        self._stop_writing()
        self._maybe_resume_protocol()  # may write again
        if self._closing and not self._buffer:
            self._loop._remove_reader(self._fileno)
            self._call_connection_lost(None)

    def _stop_writing(self):
        self._writing = False
        self._loop._remove_writer(self._fileno)

    def can_write_eof(self):
        return True

    def write_eof(self):
        """Close the pipe once the queue is written."""
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._loop._remove_reader(self._fileno)
            self._loop.call_soon(self._call_connection_lost, None)

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def close(self):
        if self._pipe is not None and not self._closing:
            # A pipe has no half-close: closing is ending the write side.
            self.write_eof()

    def abort(self):
        self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        _log_fatal(self, exc, message, lambda e: isinstance(e, OSError))
        self._close(exc)

    def _close(self, exc=None):
        self._closing = True
        if self._buffer:
            self._stop_writing()
        self._buffer.clear()
        self._loop._remove_reader(self._fileno)
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class PipesMixin:
    async def connect_read_pipe(self, protocol_factory, pipe):
        """Read ``pipe`` (a file-like object with fileno()) into a protocol:
        returns (transport, protocol)."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_read_pipe_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self._debug:
            logger().debug("Read pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
        return transport, protocol

    async def connect_write_pipe(self, protocol_factory, pipe):
        """A write transport over ``pipe``: returns (transport, protocol)."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_write_pipe_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self._debug:
            logger().debug(
                "Write pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol
            )
        return transport, protocol

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)
