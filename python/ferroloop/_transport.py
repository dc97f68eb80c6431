"""Socket transports: ``asyncio.Transport`` objects whose I/O runs in
ferroloop's native stream transport (``_core.StreamTransport``).

The Python class exists so that ``isinstance(transport, asyncio.Transport)``
holds and ``get_extra_info`` behaves as asyncio's; reading, writing, buffering
and flow control happen in the native object.
"""

from __future__ import annotations

import socket
import sys
import warnings
from asyncio import base_events, constants, transports

from ._core import StreamTransport
from ._fd_transport import add_socket_info
from ._log import logger
from ._python_transport import PythonSocketTransport
from ._futures import set_result_unless_cancelled as _set_result_unless_cancelled


# 3.12 gave socket transports a writelines that sends the buffers as they
# are (asyncio's own messages differ accordingly).
_NATIVE_WRITELINES = sys.version_info >= (3, 12)
# From 3.12 a socket that a live transport still uses is refused.
_REFUSES_USED_FDS = sys.version_info >= (3, 12)


class SocketTransport(transports.Transport):
    """A transport over a connected TCP or Unix stream socket."""

    # "__dict__": asyncio's transports take instance attributes, and tests
    # rely on it (mock.patch.object(transport, "write", ...) in aiohttp's).
    __slots__ = ("_core", "_loop", "__weakref__", "__dict__")

    # asyncio's: the most one read delivers. The native reads use this
    # fixed size; the attribute is for code that sizes its buffers after it.
    max_size = 256 * 1024

    # loop.sendfile may use os.sendfile on the socket; loop.start_tls may
    # put a TLS layer over it.
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        super().__init__(extra)
        add_socket_info(self._extra, sock)
        self._loop = loop
        self._core = StreamTransport.create(loop, sock, protocol, self, server)
        if server is not None:
            server._attach(self)
        base_events._set_nodelay(sock)
        # The same order as asyncio: the protocol hears of the connection
        # before any data, and the waiter completes after both.
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._core._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        closed, closing, reading, writing, bufsize = self._core._repr_state()
        info = [type(self).__name__]
        if closed:
            info.append("closed")
        elif closing:
            info.append("closing")
        info.append(f"fd={self._core._sock_fd}")
        if not closed and not self._loop.is_closed():
            info.append("read=polling" if reading else "read=idle")
            info.append(f"write=<{'polling' if writing else 'idle'}, bufsize={bufsize}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        core = getattr(self, "_core", None)
        sock = core._sock if core is not None else None
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()
            server = core._server
            if server is not None:
                server._detach(self)

    # ---- the asyncio.Transport interface ---------------------------------

    def write(self, data):
        """Send ``data`` (bytes-like) without blocking; queue what the
        kernel does not take now."""
        self._core.write(data)

    if _NATIVE_WRITELINES:

        def writelines(self, list_of_data):
            """Send every buffer in order, with one system call when the
            kernel takes them all."""
            self._core.writelines(list_of_data)

    else:

        def writelines(self, list_of_data):
            """Send every buffer in order (joined first, as asyncio does
            before 3.12, so its errors and messages are the same)."""
            self._core.write(b"".join(list_of_data))

    def write_eof(self):
        """Close the write side once queued data is sent."""
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def close(self):
        """Close after sending queued data; connection_lost(None) follows."""
        self._core.close()

    def abort(self):
        """Close at once, dropping queued data."""
        self._core.abort()

    def is_closing(self):
        return self._core.is_closing()

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        if self._core.pause_reading() and self._loop.get_debug():
            logger().debug("%r pauses reading", self)

    def resume_reading(self):
        if self._core.resume_reading() and self._loop.get_debug():
            logger().debug("%r resumes reading", self)

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_protocol(self):
        return self._core.get_protocol()

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    # ---- used by the native core and by the loop -------------------------

    @property
    def _sock(self):
        return self._core._sock

    @property
    def _sock_fd(self):
        return self._core._sock_fd

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    @property
    def _paused(self):
        # Reading paused by pause_reading(): 3.10's SSL layer reads the
        # selector transport's attribute of this name.
        return self._core._paused

    @property
    def _protocol(self):
        return self._core.get_protocol()

    def _fatal_error(self, exc, message="Fatal error on transport"):
        """An error ended the connection: OSErrors (resets, broken pipes)
        are the peer's doing and only logged in debug mode; anything else
        goes to the exception handler. connection_lost(exc) follows."""
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger().debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._core.get_protocol(),
                }
            )
        self._core._force_close(exc)

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _log_debug(self, fmt):
        logger().debug(fmt, self)

    def _make_empty_waiter(self):
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self):
        self._core._reset_empty_waiter()

    def _set_fd_owned(self, owned):
        self._core._set_fd_owned(owned)


class TransportMixin:
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        """A stream transport over the connected, non-blocking ``sock``."""
        if _REFUSES_USED_FDS:
            # As asyncio 3.12+: one socket, one transport.
            self._ensure_fd_no_transport(sock)
        if type(sock) is not socket.socket:
            # A subclass may override recv/send, and asyncio's transport
            # calls them; the native one would read the fd behind their back.
            return PythonSocketTransport(self, sock, protocol, waiter, extra, server)
        return SocketTransport(self, sock, protocol, waiter, extra, server)
