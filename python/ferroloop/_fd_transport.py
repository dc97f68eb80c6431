"""What ferroloop's transports written in Python share: the datagram
transport (``_datagram.py``) and the stream transport for socket
subclasses (``_python_transport.py``).

Both are driven by the loop's fd callbacks and keep asyncio's contract for
a socket transport: extra info, a queue of unsent data with flow control,
close() after the queue drains, abort() at once, errors of the peer's
making logged only in debug mode, and ``connection_lost`` exactly once,
after which the socket is closed and its fd number freed.
"""

from __future__ import annotations

import collections
import warnings
from asyncio import transports, trsock

from ._log import logger


def add_socket_info(extra, sock):
    """The extra info every socket transport gives: the socket (wrapped as
    asyncio does), its address, and its peer's unless the caller knew it."""
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None


class FdTransport(transports._FlowControlMixin):
    """Socket, queue and ending of a transport over a non-blocking socket.

    A subclass defines ``_read_ready`` and the writing side, and schedules
    ``connection_made`` and ``_start_reading`` itself (in asyncio's order).
    """

    # Read by __del__ even if __init__ failed.
    _sock = None
    _server = None

    def __init__(self, loop, sock, protocol, extra=None, server=None):
        super().__init__(extra, loop)
        add_socket_info(self._extra, sock)
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        # Unsent data, oldest first, and its size in bytes.
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0  # > 0 once connection_lost is scheduled
        self._closing = False
        self._paused = False  # pause_reading() in effect
        # Whether the loop watches the socket for reading: what the repr
        # shows as read=polling/idle (asyncio asks its selector).
        self._reader_on = False
        if server is not None:
            server._attach(self)
        loop._set_fd_transport(self._sock_fd, self)

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

    # ---- BaseTransport -------------------------------------------------------

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True

    def is_closing(self):
        return self._closing

    def get_write_buffer_size(self):
        return self._buffer_size

    def close(self):
        """Close once queued data is sent; connection_lost(None) follows."""
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

    # ---- reading ---------------------------------------------------------------

    def _start_reading(self):
        if not self._closing and not self._paused:
            self._watch_readable()
            self._reader_on = True

    def _watch_readable(self):
        self._loop._add_reader(self._sock_fd, self._read_ready)

    def _stop_reading(self):
        self._loop._remove_reader(self._sock_fd)
        self._reader_on = False

    # ---- ending ------------------------------------------------------------------

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


class ReadControl:
    """pause_reading/resume_reading/is_reading, as asyncio's socket
    transports have them (datagram ones only from 3.11)."""

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
