"""``loop.sock_*`` coroutines: one attempt right away, then one retry per
readiness report of the socket's fd, until the operation completes.

sock_recv and sock_sendall on a plain ``socket.socket`` run natively
(``src/sock_ops.rs``); everything else runs here. Whatever way the awaiting
task ends (result, error, cancellation), no callback the program can see is
left registered (the native receive keeps a parked registration that
``remove_reader`` and ``add_reader`` treat as absent).
"""

from __future__ import annotations

import socket
import sys

from ._resolve import ensure_resolved

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without OpenSSL
    ssl = None

_RETRY = (BlockingIOError, InterruptedError)
# Exactly this type takes the native sock_recv/sock_sendall (sock_ops.rs);
# subclasses and wrappers may override recv/send, so they get the Python
# path, which calls their methods.
_PLAIN_SOCKET = socket.socket


def _check_sock(sock, debug) -> None:
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    # As asyncio: a blocking socket is refused in debug mode only. Outside
    # it, the call is made as it is and may block the loop (programs rely
    # on it, e.g. a blocking sock_connect before handing the socket over).
    if debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


class _SendAllState:
    """Progress of one sock_sendall that could not finish at once."""

    __slots__ = ("view", "sent")

    def __init__(self, data, sent):
        self.view = memoryview(data).cast("B")
        self.sent = sent


class SockOpsMixin:
    # ---- plumbing -------------------------------------------------------

    def _retry_when_ready(self, fut, target, method, args):
        """Readiness callback: try ``target.<method>(*args)`` again; a
        would-block is not final. The method is looked up on every attempt,
        as asyncio does, so socket wrappers and mocks see each call."""
        if fut.done():
            return
        try:
            result = getattr(target, method)(*args)
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def _wait_for(self, sock, writable, callback, *args):
        """A future completed by ``callback`` (run on each readiness report)
        with the fd's registration removed when the future is done."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        if writable:
            handle = self._add_writer(fd, callback, fut, *args)
            remove = self.remove_writer
        else:
            handle = self._add_reader(fd, callback, fut, *args)
            remove = self.remove_reader

        def unregister(_fut):
            # A cancelled handle means someone else has since registered a
            # callback on this fd; theirs must stay.
            if not handle.cancelled():
                remove(fd)

        fut.add_done_callback(unregister)
        return fut

    # ---- receiving ------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receive up to ``n`` bytes from a connected non-blocking socket."""
        if type(sock) is _PLAIN_SOCKET:
            # The native path: bytes received at once, or a future.
            got = self._sock_recv_native(sock, n)
            if type(got) is bytes:
                return got
            if got is not None:
                return await got
        _check_sock(sock, self._debug)
        try:
            return sock.recv(n)
        except _RETRY:
            pass
        return await self._wait_for(sock, False, self._retry_when_ready, sock, "recv", (n,))

    async def sock_recv_into(self, sock, buf):
        """Receive into the writable buffer ``buf``; returns the byte count."""
        _check_sock(sock, self._debug)
        try:
            return sock.recv_into(buf)
        except _RETRY:
            pass
        return await self._wait_for(sock, False, self._retry_when_ready, sock, "recv_into", (buf,))

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram: ``(data, address)``."""
        _check_sock(sock, self._debug)
        try:
            return sock.recvfrom(bufsize)
        except _RETRY:
            pass
        return await self._wait_for(
            sock, False, self._retry_when_ready, sock, "recvfrom", (bufsize,)
        )

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into ``buf``: ``(byte count, address)``."""
        _check_sock(sock, self._debug)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except _RETRY:
            pass
        return await self._wait_for(
            sock, False, self._retry_when_ready, sock, "recvfrom_into", (buf, nbytes)
        )

    # ---- sending --------------------------------------------------------

    async def sock_sendall(self, sock, data):
        """Send all of ``data``; returns None once the kernel has taken it."""
        if type(sock) is _PLAIN_SOCKET and type(data) is bytes:
            pending = self._sock_sendall_native(sock, data)
            if pending is None:
                return None
            if pending is not NotImplemented:  # else: a blocking socket
                return await pending
        _check_sock(sock, self._debug)
        try:
            sent = sock.send(data)
        except _RETRY:
            sent = 0
        if sent == len(data):
            return None
        state = _SendAllState(data, sent)
        return await self._wait_for(sock, True, self._send_more, sock, state)

    def _send_more(self, fut, sock, state):
        if fut.done():
            return
        try:
            state.sent += sock.send(state.view[state.sent :])
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            return
        if state.sent == len(state.view):
            fut.set_result(None)

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to ``address``; returns the byte count."""
        _check_sock(sock, self._debug)
        try:
            return sock.sendto(data, address)
        except _RETRY:
            pass
        return await self._wait_for(
            sock, True, self._retry_when_ready, sock, "sendto", (data, 0, address)
        )

    # ---- connecting and accepting ---------------------------------------

    async def sock_connect(self, sock, address):
        """Connect to ``address``, resolving a host name first for IP
        sockets (numeric addresses skip the resolver)."""
        _check_sock(sock, self._debug)
        if sock.family == socket.AF_INET or (
            hasattr(socket, "AF_INET6") and sock.family == socket.AF_INET6
        ):
            resolved = await ensure_resolved(
                self, address, family=sock.family, type=sock.type, proto=sock.proto
            )
            address = resolved[0][4]
        try:
            sock.connect(address)
        except _RETRY:
            pass
        else:
            return None
        fut = self._wait_for(sock, True, self._connect_done, sock, address)
        try:
            return await fut
        finally:
            fut = None  # break the exception -> frame -> future cycle

    def _connect_done(self, fut, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            # The raised error's traceback holds this frame: drop the
            # future so error -> frame -> future -> error is not a cycle.
            fut = None

    async def sock_accept(self, sock):
        """Accept a connection: ``(conn, address)``, ``conn`` non-blocking."""
        _check_sock(sock, self._debug)
        try:
            return self._accept_now(sock)
        except _RETRY:
            pass
        return await self._wait_for(
            sock, False, self._retry_when_ready, self, "_accept_now", (sock,)
        )

    def _stop_serving(self, sock):
        """Stop accepting on a listening socket and close it."""
        self.remove_reader(sock.fileno())
        sock.close()

    @staticmethod
    def _accept_now(sock):
        conn, address = sock.accept()
        conn.setblocking(False)
        return conn, address


if sys.version_info < (3, 11):
    # asyncio's loops gained the datagram coroutines in 3.11; a 3.10 loop
    # without them is what code probing with hasattr() expects.
    del SockOpsMixin.sock_recvfrom, SockOpsMixin.sock_recvfrom_into, SockOpsMixin.sock_sendto
