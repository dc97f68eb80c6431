"""A stream transport written in Python, for sockets that are not exactly
``socket.socket``.

The native transport (``_transport.SocketTransport``) reads and writes the
descriptor itself. A ``socket.socket`` subclass given with ``sock=`` may
override ``recv``/``send`` (to count bytes, to inject faults in a test, to
wrap another channel), and asyncio's transport calls those methods. This
one does too: it is driven by the loop's fd callbacks and calls the
socket's own ``recv``, ``recv_into``, ``send``, ``sendmsg`` (3.12+, as
asyncio) and ``shutdown``. It keeps asyncio's contract: the same callback
order, errors, messages and flow control as the native transport.
"""

from __future__ import annotations

import itertools
import socket
import sys
from asyncio import base_events, constants, protocols

from ._fd_transport import FdTransport, ReadControl
from ._futures import set_result_unless_cancelled as _set_result_unless_cancelled
from ._log import logger

# From 3.12 asyncio sends a queue of buffers with one sendmsg; before, it
# joins them and calls send.
_USES_SENDMSG = sys.version_info >= (3, 12) and hasattr(socket.socket, "sendmsg")
_NATIVE_WRITELINES = sys.version_info >= (3, 12)
# Buffers per sendmsg: the kernel refuses more than IOV_MAX (1024 on Linux).
_IOV_MAX = 1024
_PASS_THROUGH = (SystemExit, KeyboardInterrupt)


class PythonSocketTransport(ReadControl, FdTransport):
    """A transport over a connected stream socket whose methods it calls."""

    max_size = 256 * 1024  # the most one recv() asks for

    # loop.sendfile may use os.sendfile on the socket (as asyncio's does);
    # loop.start_tls may put a TLS layer over it.
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._read_ready_cb = None
        super().__init__(loop, sock, protocol, extra, server)
        self._eof = False  # write_eof() called
        self._empty_waiter = None  # sendfile waits for the queue to drain
        base_events._set_nodelay(sock)
        # The same order as asyncio: the protocol hears of the connection
        # before any data, and the waiter completes after both.
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def set_protocol(self, protocol):
        # Decided once per protocol, as asyncio does.
        if isinstance(protocol, protocols.BufferedProtocol):
            self._read_ready_cb = self._read_into_buffer
        else:
            self._read_ready_cb = self._read_data
        super().set_protocol(protocol)

    # ---- reading -----------------------------------------------------------

    def _read_ready(self):
        self._read_ready_cb()

    def _read_data(self):
        if self._conn_lost:
            return
        try:
            data = self._sock.recv(self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not data:
            self._eof_received()
            return
        try:
            self._protocol.data_received(data)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _read_into_buffer(self):
        if self._conn_lost:
            return
        try:
            buf = self._protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        try:
            nbytes = self._sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._eof_received()
            return
        try:
            self._protocol.buffer_updated(nbytes)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _eof_received(self):
        if self._loop.get_debug():
            logger().debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # The protocol may still write; there is nothing more to read.
            self._stop_reading()
        else:
            self.close()

    # ---- writing -----------------------------------------------------------

    def write(self, data):
        """Send ``data`` (bytes-like) without blocking; queue what the
        kernel does not take now."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger().warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except _PASS_THROUGH:
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            data = memoryview(data).cast("B")[n:]  # n counts bytes, not items
            if not data:
                return
            self._loop._add_writer(self._sock_fd, self._write_ready)
        self._queue(memoryview(data))
        self._maybe_pause_protocol()

    if _NATIVE_WRITELINES:

        def writelines(self, list_of_data):
            """Queue every buffer in order and send what the kernel takes
            now."""
            if self._eof:
                raise RuntimeError("Cannot call writelines() after write_eof()")
            if self._empty_waiter is not None:
                raise RuntimeError("unable to writelines; sendfile is in progress")
            if not list_of_data:
                return
            # Every item is checked before any is queued, as asyncio does.
            for view in [memoryview(data) for data in list_of_data]:
                self._queue(view)
            self._write_ready()
            if self._buffer:
                self._loop._add_writer(self._sock_fd, self._write_ready)
                # asyncio 3.12+ forgets this, so its protocol is never
                # paused by writelines; ferroloop's transports pause it.
                self._maybe_pause_protocol()

    def _queue(self, view):
        # A copy, so the caller may reuse its buffer. A view that is not
        # contiguous stays as it is and fails in the send, as on asyncio.
        self._buffer.append(bytes(view) if view.c_contiguous else view)
        self._buffer_size += view.nbytes

    def _write_ready(self):
        if self._conn_lost or not self._buffer:
            return
        try:
            if _USES_SENDMSG:
                sent = self._sock.sendmsg(itertools.islice(self._buffer, _IOV_MAX))
            else:
                if len(self._buffer) > 1:
                    # One send for everything queued, as asyncio's single
                    # bytearray buffer gives before 3.12.
                    joined = b"".join(self._buffer)
                    self._buffer.clear()
                    self._buffer.append(joined)
                sent = self._sock.send(self._buffer[0])
        except (BlockingIOError, InterruptedError):
            return
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            self._loop._remove_writer(self._sock_fd)
            self._buffer.clear()
            self._buffer_size = 0
            self._fatal_error(exc, "Fatal write error on socket transport")
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            return
        self._drop_sent(sent)
        self._maybe_resume_protocol()  # may queue more
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._sock.shutdown(socket.SHUT_WR)

    def _drop_sent(self, sent):
        self._buffer_size -= sent
        buffer = self._buffer
        while sent:
            head = buffer[0]
            if len(head) <= sent:
                sent -= len(head)
                buffer.popleft()
            else:
                buffer[0] = memoryview(head)[sent:]  # no copy of the rest
                break

    def write_eof(self):
        """Shut the write side once queued data is sent."""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._sock.shutdown(socket.SHUT_WR)

    def can_write_eof(self):
        return True

    # ---- sendfile ------------------------------------------------------------

    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if not self._buffer:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    def _set_fd_owned(self, owned):
        # While os.sendfile drives the socket, the loop's plain fd
        # callbacks may use the descriptor.
        self._loop._set_fd_transport(self._sock_fd, self if owned else None)

    # ---- ending --------------------------------------------------------------

    def _call_connection_lost(self, exc):
        super()._call_connection_lost(exc)
        if self._empty_waiter is not None:
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
