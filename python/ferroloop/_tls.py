"""TLS for ferroloop's stream transports.

Like asyncio's selector loop, ferroloop puts the stdlib's
``asyncio.sslproto.SSLProtocol`` between a plain socket transport and the
application's protocol, so handshake, shutdown and timeout behaviour are
exactly the running Python's. From 3.11 (whose SSL layer reads into a lent
buffer) the steps run for every record -- feeding received bytes to the TLS
object, reading plaintext out, encrypting writes, passing records to the
socket -- are native (``_core.TlsPump``, see ``src/tls_pump.rs``); 3.10's
older SSL layer is used as it is.
"""

from __future__ import annotations

import ssl
import sys
from asyncio import constants, sslproto

from ._core import TlsPump

# 3.10's SSL layer predates the shutdown timeout.
_HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)
_DEFAULT_SHUTDOWN_TIMEOUT = getattr(constants, "SSL_SHUTDOWN_TIMEOUT", None)
# From 3.12 a socket that a live transport still uses is refused.
_CHECKS_FD_OWNER = sys.version_info >= (3, 12)


if sys.version_info >= (3, 11):

    class SSLProtocol(sslproto.SSLProtocol):
        """asyncio's SSL layer with its per-record methods in native code."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pump = TlsPump(self)
            # Instance attributes are found before the class's methods, so
            # the socket transport, the stdlib's state machine and the
            # application's writes reach native code with no Python frame
            # in between. The names and meanings are the stdlib's.
            self.get_buffer = pump.get_buffer
            self.buffer_updated = pump.buffer_updated
            self._do_read = pump.do_read
            self._do_write = pump.do_write
            self._process_outgoing = pump.process_outgoing
            self._app_transport.write = pump.app_write

        def connection_lost(self, exc):
            app_transport = self._app_transport
            try:
                super().connection_lost(exc)
            finally:
                if app_transport is not None:
                    # The application may keep its transport for as long as
                    # it likes; from now on it must hold no more than the
                    # stdlib's does (asyncio's tests check that the SSL
                    # context is freed). Later writes take the stdlib's path.
                    app_transport.__dict__.pop("write", None)

else:
    SSLProtocol = sslproto.SSLProtocol


class TLSMixin:
    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=_DEFAULT_SHUTDOWN_TIMEOUT,
    ):
        """A TLS transport for ``protocol`` over the connected ``rawsock``.

        ``waiter`` gets its result once the handshake is done (or the
        handshake's error); ``sslcontext`` None means a default context.
        """
        if _CHECKS_FD_OWNER:
            # Before the SSL layer exists, so a refused socket leaves nothing
            # half-built.
            self._ensure_fd_no_transport(rawsock)
        timeouts = {"ssl_handshake_timeout": ssl_handshake_timeout}
        if _HAS_SHUTDOWN_TIMEOUT:
            timeouts["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        ssl_protocol = SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname, **timeouts
        )
        # The plain transport reports to the SSL layer; the application only
        # ever sees the SSL layer's transport.
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def _upgrade_to_tls(
        self, transport, protocol, sslcontext, server_side, server_hostname, timeouts
    ):
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=False,
            **timeouts,
        )
        # Bytes that arrive before the SSL layer has seen connection_made
        # must wait for it: stop reading until that callback has run.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    if _HAS_SHUTDOWN_TIMEOUT:

        async def start_tls(
            self,
            transport,
            protocol,
            sslcontext,
            *,
            server_side=False,
            server_hostname=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
        ):
            """Put TLS over ``transport`` and return the new transport that
            ``protocol`` must use from now on (after the handshake)."""
            return await self._upgrade_to_tls(
                transport,
                protocol,
                sslcontext,
                server_side,
                server_hostname,
                {
                    "ssl_handshake_timeout": ssl_handshake_timeout,
                    "ssl_shutdown_timeout": ssl_shutdown_timeout,
                },
            )

    else:

        async def start_tls(
            self,
            transport,
            protocol,
            sslcontext,
            *,
            server_side=False,
            server_hostname=None,
            ssl_handshake_timeout=None,
        ):
            """Put TLS over ``transport`` and return the new transport that
            ``protocol`` must use from now on (after the handshake)."""
            return await self._upgrade_to_tls(
                transport,
                protocol,
                sslcontext,
                server_side,
                server_hostname,
                {"ssl_handshake_timeout": ssl_handshake_timeout},
            )
