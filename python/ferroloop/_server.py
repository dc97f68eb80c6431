"""Listening servers: ``loop.create_server``, ``loop.create_unix_server`` and
the ``Server`` objects they return, with the running Python version's asyncio
semantics.

Accepting differs from asyncio in one respect: a new connection gets its
protocol and transport right in the listening socket's readiness callback
instead of in a task per connection. The protocol still hears
``connection_made`` from a ``call_soon``, so the order of events is the same.
"""

from __future__ import annotations

import collections.abc
import errno
import functools
import itertools
import os
import socket
import stat
import sys
import weakref
from asyncio import constants, events, exceptions, tasks, trsock

from ._log import logger
from ._resolve import ensure_resolved

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - Python built without OpenSSL
    _ssl = None

_PY = sys.version_info[:2]
# 3.12 made wait_closed() wait for the server's connections to end.
_WAIT_CLOSED_WAITS_FOR_CLIENTS = _PY >= (3, 12)
_HAS_IPV6 = hasattr(socket, "AF_INET6")

# accept() errors that say "not now" rather than "broken": the listening
# socket stays readable, so accepting pauses for a while instead of spinning.
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class Server(events.AbstractServer):
    """A listening server, as returned by ``create_server`` and
    ``create_unix_server``.

    It keeps the transports of its live connections in a weak set on every
    Python version: ``wait_closed`` (3.12+) and ``close_clients`` (3.13)
    need them, and a weak set still lets an abandoned transport be collected
    and warn about itself.
    """

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        ssl_context,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout=None,
    ):
        self._loop = loop
        self._sockets = sockets  # None once closed
        self._clients = weakref.WeakSet()
        self._uncounted = 0  # connections attached without their transport
        self._waiters = []  # None once closed with no connection left
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None

    def __repr__(self):
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    # ---- connection tracking (called by transports) ----------------------

    # The transport argument is optional because asyncio before 3.13 took
    # none, and its own tests (and anything written against them) count
    # connections that way; such connections are only counted.

    def _attach(self, transport=None):
        if self._sockets is None and self._waiters is None:
            # A protocol factory closed the server while its connection was
            # being set up. The connection is served (asyncio's assertion
            # here drops it), and later wait_closed() calls wait for it.
            self._waiters = []
        if transport is None:
            self._uncounted += 1
        else:
            self._clients.add(transport)

    def _detach(self, transport=None):
        if transport is None:
            self._uncounted -= 1
        else:
            self._clients.discard(transport)
        if not self._active_count and self._sockets is None:
            self._wakeup()

    @property
    def _active_count(self):
        # The name asyncio up to 3.12 gave its connection counter.
        return len(self._clients) + self._uncounted

    def _wakeup(self):
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # ---- serving ---------------------------------------------------------

    def _start_serving(self):
        if self._serving:
            return
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(
                self._protocol_factory,
                sock,
                self._ssl_context,
                self,
                self._backlog,
                self._ssl_handshake_timeout,
                self._ssl_shutdown_timeout,
            )

    def get_loop(self):
        """The event loop the server belongs to."""
        return self._loop

    def is_serving(self):
        """True while the server accepts connections."""
        return self._serving

    @property
    def sockets(self):
        """The listening sockets (as ``asyncio.trsock.TransportSocket``
        wrappers); an empty tuple once the server is closed."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(sock) for sock in self._sockets)

    def close(self):
        """Stop listening and close the listening sockets. Connections
        already accepted stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._loop._stop_serving(sock)
        self._serving = False
        forever = self._serving_forever_fut
        if forever is not None and not forever.done():
            # serve_forever() ends, by cancellation, when the server closes.
            forever.cancel()
            self._serving_forever_fut = None
        if not self._active_count:
            self._wakeup()

    if _PY >= (3, 13):

        def close_clients(self):
            """Close every connection of this server (after its pending
            writes are sent)."""
            for transport in list(self._clients):
                transport.close()

        def abort_clients(self):
            """Close every connection of this server at once, dropping
            pending writes."""
            for transport in list(self._clients):
                transport.abort()

    async def start_serving(self):
        """Start accepting connections; does nothing if already serving."""
        self._start_serving()
        # Give the loop one iteration, as asyncio does, so that code running
        # after this await sees the server fully set up.
        await tasks.sleep(0)

    async def serve_forever(self):
        """Accept connections until cancelled. Cancellation (or ``close()``)
        closes the server and waits for ``wait_closed()`` before the
        CancelledError propagates."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        """Wait for the server to be closed.

        3.12+: returns once the server is closed *and* every connection it
        accepted has ended, whichever happens last. 3.10/3.11: returns at
        once if the server is already closed, even with connections still
        open; called before ``close()``, it waits for both.
        """
        if self._waiters is None:
            return
        if self._sockets is None and not _WAIT_CLOSED_WAITS_FOR_CLIENTS:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


def _check_ssl_socket(sock):
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, *, have_ssl):
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    if ssl_handshake_timeout is not None and not have_ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not have_ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _is_abstract(path):
    """A Linux abstract-namespace address (str or bytes, leading NUL)?"""
    # asyncio indexes path[0] unguarded and raises IndexError for an empty
    # path (an unbound or autobound socket); that is no kind of answer.
    return bool(path) and path[0] in (0, "\0")


def _bind_error_message(sa, err):
    # 3.13 changed the wording (errno included).
    reason = str(err) if _PY >= (3, 13) else err.strerror
    return f"error while attempting to bind on address {sa!r}: {reason.lower()}"


class ServerMixin:
    # {listening unix socket: inode of its file}: files that 3.13's
    # cleanup_socket removes when the server closes. Created on first use.
    _unix_server_sockets = None

    # ---- create_server ---------------------------------------------------

    if _PY >= (3, 13):

        async def create_server(
            self,
            protocol_factory,
            host=None,
            port=None,
            *,
            family=socket.AF_UNSPEC,
            flags=socket.AI_PASSIVE,
            sock=None,
            backlog=100,
            ssl=None,
            reuse_address=None,
            reuse_port=None,
            keep_alive=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
            start_serving=True,
        ):
            """Listen on ``host`` (a name, an address, a sequence of them,
            or None/'' for all interfaces) and ``port``, or on the listening
            ``sock``; each connection gets ``protocol_factory()``. Returns a
            Server."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog, ssl,
                reuse_address, reuse_port, keep_alive, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving,
            )  # fmt: skip

    elif _PY >= (3, 11):

        async def create_server(
            self,
            protocol_factory,
            host=None,
            port=None,
            *,
            family=socket.AF_UNSPEC,
            flags=socket.AI_PASSIVE,
            sock=None,
            backlog=100,
            ssl=None,
            reuse_address=None,
            reuse_port=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
            start_serving=True,
        ):
            """Listen on ``host`` (a name, an address, a sequence of them,
            or None/'' for all interfaces) and ``port``, or on the listening
            ``sock``; each connection gets ``protocol_factory()``. Returns a
            Server."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog, ssl,
                reuse_address, reuse_port, None, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving,
            )  # fmt: skip

    else:

        async def create_server(
            self,
            protocol_factory,
            host=None,
            port=None,
            *,
            family=socket.AF_UNSPEC,
            flags=socket.AI_PASSIVE,
            sock=None,
            backlog=100,
            ssl=None,
            reuse_address=None,
            reuse_port=None,
            ssl_handshake_timeout=None,
            start_serving=True,
        ):
            """Listen on ``host`` (a name, an address, a sequence of them,
            or None/'' for all interfaces) and ``port``, or on the listening
            ``sock``; each connection gets ``protocol_factory()``. Returns a
            Server."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog, ssl,
                reuse_address, reuse_port, None, ssl_handshake_timeout,
                None, start_serving,
            )  # fmt: skip

    async def _create_server(
        self,
        protocol_factory,
        host,
        port,
        family,
        flags,
        sock,
        backlog,
        ssl,
        reuse_address,
        reuse_port,
        keep_alive,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        start_serving,
    ):
        _check_ssl_args(
            ssl, ssl_handshake_timeout, ssl_shutdown_timeout, have_ssl=ssl is not None
        )
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            per_host = await tasks.gather(
                *[self._server_addrinfo(h, port, family, flags) for h in hosts]
            )
            # A host listed twice, or two names for one address: bind once.
            infos = set(itertools.chain.from_iterable(per_host))
            sockets = self._bind_listeners(infos, reuse_address, reuse_port, keep_alive)
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        for listener in sockets:
            listener.setblocking(False)
        server = Server(
            self, sockets, protocol_factory, ssl, backlog,
            ssl_handshake_timeout, ssl_shutdown_timeout,
        )  # fmt: skip
        if start_serving:
            await server.start_serving()
        if self._debug:
            logger().info("%r is serving", server)
        return server

    async def _server_addrinfo(self, host, port, family, flags):
        infos = await ensure_resolved(
            self, (host, port), family=family, type=socket.SOCK_STREAM, flags=flags
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    def _bind_listeners(self, infos, reuse_address, reuse_port, keep_alive):
        """One bound socket per address of ``infos``; all or nothing."""
        sockets = []
        try:
            for af, socktype, proto, _canonname, sa in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    # An address family the host does not support: skip it.
                    if self._debug:
                        logger().warning(
                            "create_server() failed to create socket.socket(%r, %r, %r)",
                            af, socktype, proto, exc_info=True,
                        )  # fmt: skip
                    continue
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    _set_reuseport(sock)
                if keep_alive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    # Linux lets an IPv6 socket accept IPv4 too; the IPv4
                    # address has its own socket, which would then clash.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    sock.bind(sa)
                except OSError as err:
                    msg = _bind_error_message(sa, err)
                    if _PY >= (3, 13) and err.errno == errno.EADDRNOTAVAIL:
                        # Typically IPv6 configured off: serve on the rest.
                        sockets.pop().close()
                        if self._debug:
                            logger().warning(msg)
                        continue
                    raise OSError(err.errno, msg) from None
            if not sockets and _PY >= (3, 13):
                addresses = [info[4] for info in infos]
                raise OSError(f"could not bind on any address out of {addresses!r}")
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    # ---- create_unix_server ----------------------------------------------

    if _PY >= (3, 13):

        async def create_unix_server(
            self,
            protocol_factory,
            path=None,
            *,
            sock=None,
            backlog=100,
            ssl=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
            start_serving=True,
            cleanup_socket=True,
        ):
            """Listen on the Unix socket ``path`` (str, bytes or path-like;
            a leading NUL means the abstract namespace) or on ``sock``.
            A stale socket file at ``path`` is replaced. With
            ``cleanup_socket`` the file is removed when the server closes.
            Returns a Server."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving, cleanup_socket,
            )  # fmt: skip

    elif _PY >= (3, 11):

        async def create_unix_server(
            self,
            protocol_factory,
            path=None,
            *,
            sock=None,
            backlog=100,
            ssl=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
            start_serving=True,
        ):
            """Listen on the Unix socket ``path`` (str, bytes or path-like;
            a leading NUL means the abstract namespace) or on ``sock``.
            A stale socket file at ``path`` is replaced. Returns a Server."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving, False,
            )  # fmt: skip

    else:

        async def create_unix_server(
            self,
            protocol_factory,
            path=None,
            *,
            sock=None,
            backlog=100,
            ssl=None,
            ssl_handshake_timeout=None,
            start_serving=True,
        ):
            """Listen on the Unix socket ``path`` (str, bytes or path-like;
            a leading NUL means the abstract namespace) or on ``sock``.
            A stale socket file at ``path`` is replaced. Returns a Server."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl, ssl_handshake_timeout,
                None, start_serving, False,
            )  # fmt: skip

    async def _create_unix_server(
        self,
        protocol_factory,
        path,
        sock,
        backlog,
        ssl,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        start_serving,
        cleanup_socket,
    ):
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, have_ssl=bool(ssl))
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = _bind_unix(path)
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        if cleanup_socket:
            self._remember_socket_file(sock)
        sock.setblocking(False)
        server = Server(
            self, [sock], protocol_factory, ssl, backlog,
            ssl_handshake_timeout, ssl_shutdown_timeout,
        )  # fmt: skip
        if start_serving:
            await server.start_serving()
        return server

    def _remember_socket_file(self, sock):
        path = sock.getsockname()
        if not path or _is_abstract(path):
            return
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return
        if self._unix_server_sockets is None:
            self._unix_server_sockets = {}
        self._unix_server_sockets[sock] = inode

    # ---- accepting -------------------------------------------------------

    def _start_serving(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Accept connections on the listening ``sock`` from now on."""
        self._add_reader(
            sock.fileno(), self._accept_connection, protocol_factory, sock, sslcontext,
            server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout,
        )  # fmt: skip

    def _accept_connection(
        self,
        protocol_factory,
        sock,
        sslcontext,
        server,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
    ):
        # One readiness report may stand for many queued connections; taking
        # up to `backlog` of them per report keeps a burst from costing one
        # loop iteration per connection.
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                if self._debug:
                    logger().debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the loop reports it as an error in this callback
                self._pause_accepting(
                    exc, protocol_factory, sock, sslcontext, server, backlog,
                    ssl_handshake_timeout, ssl_shutdown_timeout,
                )  # fmt: skip
                return
            self._serve_connection(
                conn, addr, protocol_factory, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout,
            )  # fmt: skip
            if sock.fileno() == -1:
                return  # the protocol factory closed the server

    def _pause_accepting(self, exc, protocol_factory, sock, *args):
        """accept() ran out of fds or memory. Level-triggered readiness
        would report the socket again at once, so stop watching it and try
        again after a delay. (asyncio keeps calling accept() for the rest of
        the batch, reporting and scheduling a retry on each failure; one of
        each is enough.)"""
        self.call_exception_handler(
            {
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": trsock.TransportSocket(sock),
            }
        )
        self.remove_reader(sock.fileno())
        self.call_later(
            constants.ACCEPT_RETRY_DELAY, self._resume_accepting, protocol_factory, sock, *args
        )

    def _resume_accepting(self, protocol_factory, sock, *args):
        # A server closed during the pause has closed its socket too.
        if sock.fileno() != -1:
            self._start_serving(protocol_factory, sock, *args)

    def _serve_connection(
        self,
        conn,
        addr,
        protocol_factory,
        sslcontext,
        server,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
    ):
        """Give the accepted ``conn`` its protocol and transport."""
        protocol = None
        extra = {"peername": addr}
        try:
            protocol = protocol_factory()
            if sslcontext:
                waiter = self.create_future()
                timeouts = {"ssl_handshake_timeout": ssl_handshake_timeout}
                if ssl_shutdown_timeout is not None:
                    # Not passed otherwise: 3.10's signature has no such argument.
                    timeouts["ssl_shutdown_timeout"] = ssl_shutdown_timeout
                transport = self._make_ssl_transport(
                    conn, protocol, sslcontext, waiter,
                    server_side=True, extra=extra, server=server, **timeouts,
                )  # fmt: skip
            else:
                transport = self._make_socket_transport(
                    conn, protocol, extra=extra, server=server
                )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            self._report_accept_error(exc, protocol, None)
            return
        if sslcontext:
            waiter.add_done_callback(functools.partial(self._tls_accepted, protocol, transport))

    def _tls_accepted(self, protocol, transport, waiter):
        """The TLS handshake of an accepted connection ended."""
        if waiter.cancelled():
            exc = exceptions.CancelledError()
        else:
            exc = waiter.exception()
            if exc is None:
                return
        transport.close()
        self._report_accept_error(exc, protocol, transport)

    def _report_accept_error(self, exc, protocol, transport):
        # asyncio reports these only in debug mode; a failing protocol
        # factory is otherwise silent there, and so it is here.
        if not self._debug:
            return
        context = {
            "message": "Error on transport creation for incoming connection",
            "exception": exc,
        }
        if protocol is not None:
            context["protocol"] = protocol
        if transport is not None:
            context["transport"] = transport
        self.call_exception_handler(context)

    def _stop_serving(self, sock):
        """Stop accepting on ``sock`` and close it; remove its socket file
        if ``create_unix_server(cleanup_socket=True)`` made it (3.13)."""
        files = self._unix_server_sockets
        inode = files.pop(sock, None) if files else None
        path = sock.getsockname() if inode is not None else None
        super()._stop_serving(sock)
        if path is None:
            return
        try:
            # Another server may have replaced the file since: leave theirs.
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger().error("Unable to clean up listening UNIX socket %r: %r", path, err)


def _bind_unix(path):
    """A Unix stream socket bound to ``path``, replacing a stale socket
    file left by an earlier server (never any other kind of file)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not _is_abstract(path):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            # The directory may allow creating the socket but not stat().
            logger().error("Unable to check or remove stale UNIX socket %r: %r", path, err)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock
