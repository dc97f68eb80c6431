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

import collections
import itertools
import socket
import sys
import warnings
from asyncio import base_events, constants, protocols, transports, trsock

from ._futures import set_result_unless_cancelled as _set_result_unless_cancelled
from ._log import logger

# From 3.12 asyncio sends a queue of buffers with one sendmsg; before, it
# joins them and calls send.
_USES_SENDMSG = sys.version_info >= (3, 12) and hasattr(socket.socket, "sendmsg")
_NATIVE_WRITELINES = sys.version_info >= (3, 12)
# Buffers per sendmsg: the kernel refuses more than IOV_MAX (1024 on Linux).
_IOV_MAX = 1024
_PASS_THROUGH = (SystemExit, KeyboardInterrupt)


class PythonSocketTransport(transports._FlowControlMixin, transports.Transport):
    """A transport over a connected stream socket whose methods it calls."""

    max_size = 256 * 1024  # the most one recv() asks for
    _sock = None  # read by __del__ even if __init__ failed

    # loop.sendfile may use os.sendfile on the socket (as asyncio's does);
    # loop.start_tls may put a TLS layer over it.
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol_connected = False
        self._read_ready_cb = None
        self.set_protocol(protocol)
        self._server = server
        # Unsent data, oldest first; every entry is the transport's own
        # copy, so callers may reuse their buffers once write() returns.
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0  # > 0 once connection_lost is scheduled
        self._closing = False
        self._paused = False  # pause_reading() in effect
        self._eof = False  # write_eof() called
        self._empty_waiter = None  # sendfile waits for the queue to drain
        # Whether the loop watches the socket for reading: what the repr
        # shows as read=polling/idle (asyncio asks its selector).
        self._reader_on = False
        if server is not None:
            server._attach(self)
        loop._set_fd_transport(self._sock_fd, self)
        base_events._set_nodelay(sock)
        # The same order as asyncio: the protocol hears of the connection
        # before any data, and the waiter completes after both.
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed() and self._sock is not None:
            info.append("read=polling" if self._reader_on else "read=idle")
            state = "polling" if self._buffer else "idle"
            info.append(f"write=<{state}, bufsize={self._buffer_size}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            if self._server is not None:
                self._server._detach(self)

    # ---- BaseTransport / ReadTransport -----------------------------------

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol):
        # Decided once per protocol, as asyncio does.
        if isinstance(protocol, protocols.BufferedProtocol):
            self._read_ready_cb = self._read_into_buffer
        else:
            self._read_ready_cb = self._read_data
        self._protocol = protocol
        self._protocol_connected = True

    def is_closing(self):
        return self._closing

    def is_reading(self):
        return not self._closing and not self._paused

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger().debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger().debug("%r resumes reading", self)

    def get_write_buffer_size(self):
        return self._buffer_size

    def close(self):
        """Close after sending queued data; connection_lost(None) follows."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._sock_fd)
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        """Close at once, dropping queued data."""
        self._force_close(None)

    # ---- reading -----------------------------------------------------------

    def _start_reading(self):
        if self.is_reading():
            self._loop._add_reader(self._sock_fd, self._read_ready)
            self._reader_on = True

    def _stop_reading(self):
        self._loop._remove_reader(self._sock_fd)
        self._reader_on = False

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

    def _fatal_error(self, exc, message="Fatal error on transport"):
        """OSErrors (resets, broken pipes) are the peer's doing and only
        logged in debug mode; anything else goes to the exception handler.
        connection_lost(exc) follows."""
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger().debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop._remove_writer(self._sock_fd)
        if not self._closing:
            self._closing = True
            self._stop_reading()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            loop = self._loop
            # Free the fd for plain callbacks before the number can be reused.
            if not loop.is_closed():
                loop._set_fd_transport(self._sock_fd, None)
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
