"""Client connections: ``create_connection``, ``create_unix_connection`` and
``connect_accepted_socket``.

Arguments are checked in asyncio's order with asyncio's messages, host
names go through ``loop.getaddrinfo`` (numeric hosts skip it), happy
eyeballs is the stdlib's ``staggered_race``, and a connection that fails on
every address raises what asyncio raises. The signatures follow the running
Python: ``ssl_shutdown_timeout`` exists from 3.11, ``all_errors`` from 3.12.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import sys
from asyncio import staggered

from ._log import logger
from ._resolve import ensure_resolved
from ._tls import TLSMixin

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - Python built without OpenSSL
    _ssl = None

# 3.13 words bind errors with their errno: "[errno 98] address already in use".
_BIND_ERROR_SHOWS_ERRNO = sys.version_info >= (3, 13)


def _check_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout):
    """asyncio's errors for TLS-only options passed without ``ssl``."""
    if ssl:
        return
    for name, value in (
        ("server_hostname", server_hostname),
        ("ssl_handshake_timeout", ssl_handshake_timeout),
        ("ssl_shutdown_timeout", ssl_shutdown_timeout),
    ):
        if value is not None:
            raise ValueError(f"{name} is only meaningful with ssl")


def _check_not_ssl_socket(sock):
    # An ssl.SSLSocket does its own (blocking) TLS I/O behind the transport's
    # back; TLS has to come from the ssl= argument instead.
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _interleave_by_family(infos, first_family_count):
    """Alternate address families (RFC 8305), keeping each family's order.
    The family of the first address opens with ``first_family_count`` of its
    addresses before the alternation starts."""
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    lead = first_family_count - 1 if first_family_count > 1 else 0
    ordered = queues[0][:lead]
    queues[0] = queues[0][lead:]
    for row in itertools.zip_longest(*queues):
        ordered.extend(info for info in row if info is not None)
    return ordered


def _bind_local(sock, family, local_infos, errors):
    """Bind ``sock`` to the first usable local address of its family."""
    for local_family, _, _, _, local_address in local_infos:
        if local_family != family:
            # An address of another family cannot be bound to this socket.
            continue
        try:
            sock.bind(local_address)
            return
        except OSError as exc:
            text = str(exc) if _BIND_ERROR_SHOWS_ERRNO else exc.strerror
            errors.append(
                OSError(
                    exc.errno,
                    f"error while attempting to bind on address {local_address!r}: "
                    f"{text.lower()}",
                )
            )
    if errors:
        raise errors.pop()  # the caller records it again, as the attempt's error
    raise OSError(f"no matching local address with {family=} found")


def _all_failed(failures, all_errors):
    """The exception for a connection that failed on every address.

    ``failures`` holds one list of errors per attempt, in the order the
    attempts started. A lone error is raised as it is, and so is the first
    of several that all read the same; otherwise the messages are joined
    into one OSError (or, with ``all_errors``, every error goes into a
    group)."""
    errors = [exc for attempt in failures for exc in attempt]
    if all_errors:
        return ExceptionGroup("create_connection failed", errors)  # noqa: F821 (3.11+)
    first = str(errors[0])
    if all(str(exc) == first for exc in errors):
        return errors[0]
    return OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in errors)))


class _ConnectMixin(TLSMixin):
    """The 3.12+ API; older Pythons get narrower signatures below."""

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        """Open a TCP connection to ``host``:``port`` (or wrap the connected
        stream socket ``sock``) and return ``(transport, protocol)``.

        Each resolved address is tried in turn, or, with
        ``happy_eyeballs_delay``, a new attempt starts whenever the previous
        one has not succeeded within that many seconds. With ``ssl`` (True
        or an SSLContext) the connection is wrapped in TLS.
        """
        _check_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if ssl and server_hostname is None:
            # The certificate is checked against the host connected to;
            # server_hostname='' is how a caller turns the check off.
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if sock is not None:
            _check_not_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            sock = await self._connect_tcp_socket(
                host,
                port,
                family,
                proto,
                flags,
                local_addr,
                happy_eyeballs_delay,
                interleave,
                all_errors,
            )
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            # Any stream socket will do, AF_UNIX included.
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self._debug:
            # A TLS transport's socket is not the one connected above.
            sock = transport.get_extra_info("socket")
            logger().debug(
                "%r connected to %s:%r: (%r, %r)", sock, host, port, transport, protocol
            )
        return transport, protocol

    async def _connect_tcp_socket(
        self, host, port, family, proto, flags, local_addr, happy_eyeballs_delay, interleave,
        all_errors,
    ):
        """A connected non-blocking socket to one of ``host``'s addresses."""
        infos = await ensure_resolved(
            self, (host, port), family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        local_infos = None
        if local_addr is not None:
            local_infos = await ensure_resolved(
                self, local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not local_infos:
                raise OSError("getaddrinfo() returned empty list")
        if interleave:
            infos = _interleave_by_family(infos, interleave)

        failures = []
        try:
            sock = None
            if happy_eyeballs_delay is None:
                for info in infos:
                    try:
                        sock = await self._connect_one(failures, info, local_infos)
                        break
                    except OSError:
                        continue
            else:
                attempts = (
                    functools.partial(self._connect_one, failures, info, local_infos)
                    for info in infos
                )
                sock = (await staggered.staggered_race(attempts, happy_eyeballs_delay, loop=self))[0]
            if sock is None:
                raise _all_failed(failures, all_errors)
            return sock
        finally:
            # The errors' tracebacks hold this frame: drop the list they are in.
            failures = None

    async def _connect_one(self, failures, addr_info, local_infos):
        """Create, bind and connect one socket for ``addr_info``.

        The attempt's errors go to a list of their own in ``failures``, so
        that they stay in attempt order however happy eyeballs overlaps the
        attempts. The socket is closed on any failure, cancellation included.
        """
        errors = []
        failures.append(errors)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None:
                _bind_local(sock, family, local_infos, errors)
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            failures = errors = None

    async def _create_connection_transport(
        self,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        server_side=False,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Build the protocol and its (TLS or plain) transport over the
        connected ``sock`` and wait until the transport is ready; a transport
        that never becomes ready (error, cancellation) is closed again."""
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            # ssl=True: the SSL layer makes a default context.
            context = None if isinstance(ssl, bool) else ssl
            transport = self._make_ssl_transport(
                sock,
                protocol,
                context,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = self._make_socket_transport(sock, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Connect to the Unix stream socket at ``path`` (str, bytes or
        path-like), or wrap the connected AF_UNIX socket ``sock``, and return
        ``(transport, protocol)``. With ``ssl``, ``server_hostname`` is
        required."""
        # asyncio asserts this rather than raising a ValueError.
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl and server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
        _check_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)

        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self, protocol_factory, sock, *, ssl=None, ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wrap ``sock``, a connection accepted outside asyncio, in a
        transport and return ``(transport, protocol)``. With ``ssl`` (an
        SSLContext) this side runs the TLS handshake as the server."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_not_ssl_socket(sock)

        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self._debug:
            sock = transport.get_extra_info("socket")
            logger().debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol


if sys.version_info >= (3, 12):
    ConnectMixin = _ConnectMixin

elif sys.version_info >= (3, 11):

    class ConnectMixin(_ConnectMixin):
        # 3.11: no all_errors.
        async def create_connection(
            self, protocol_factory, host=None, port=None, *, ssl=None, family=0, proto=0,
            flags=0, sock=None, local_addr=None, server_hostname=None,
            ssl_handshake_timeout=None, ssl_shutdown_timeout=None, happy_eyeballs_delay=None,
            interleave=None,
        ):
            return await super().create_connection(
                protocol_factory, host, port, ssl=ssl, family=family, proto=proto, flags=flags,
                sock=sock, local_addr=local_addr, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
                happy_eyeballs_delay=happy_eyeballs_delay, interleave=interleave,
            )

else:

    class ConnectMixin(_ConnectMixin):
        # 3.10: no ssl_shutdown_timeout and no all_errors.
        async def create_connection(
            self, protocol_factory, host=None, port=None, *, ssl=None, family=0, proto=0,
            flags=0, sock=None, local_addr=None, server_hostname=None,
            ssl_handshake_timeout=None, happy_eyeballs_delay=None, interleave=None,
        ):
            return await super().create_connection(
                protocol_factory, host, port, ssl=ssl, family=family, proto=proto, flags=flags,
                sock=sock, local_addr=local_addr, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                happy_eyeballs_delay=happy_eyeballs_delay, interleave=interleave,
            )

        async def create_unix_connection(
            self, protocol_factory, path=None, *, ssl=None, sock=None, server_hostname=None,
            ssl_handshake_timeout=None,
        ):
            return await super().create_unix_connection(
                protocol_factory, path, ssl=ssl, sock=sock, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
            )

        async def connect_accepted_socket(
            self, protocol_factory, sock, *, ssl=None, ssl_handshake_timeout=None,
        ):
            return await super().connect_accepted_socket(
                protocol_factory, sock, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout,
            )
