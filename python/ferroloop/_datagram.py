"""UDP and Unix datagram endpoints: create_datagram_endpoint and the
datagram transport.

The transport is driven by the loop's native fd callbacks; what it adds is
asyncio's contract: one datagram per recvfrom, errors of individual sends
(ICMP port unreachable and the like) go to ``error_received`` without ending
the transport, a queue for datagrams the kernel refuses for now, flow
control over that queue, and ``connection_lost`` exactly once. For IPv4
and IPv6 sockets of the plain class, the per-datagram work (receiving,
delivering, and sending what goes out at once) is native
(``src/datagram_io.rs``) and reads this state where asyncio's methods do.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import warnings
from asyncio import base_events, constants, transports

from . import _core
from ._fd_transport import FdTransport, ReadControl
from ._log import logger
from ._resolve import ensure_resolved
from ._server import _set_reuseport
from ._futures import set_result_unless_cancelled as _set_result_unless_cancelled

PY_VERSION = sys.version_info[:2]
# 3.13 counts a per-datagram header in the buffer size, so that a flood of
# empty datagrams still pauses the protocol; it also sends empty datagrams.
_HEADER = 8 if PY_VERSION >= (3, 13) else 0
_SENDS_EMPTY = PY_VERSION >= (3, 13)
# 3.10's reuse_address default. asyncio's own sentinel, not a lookalike:
# 3.10 names the argument among the offending ones whenever sock= comes
# with other options, and its message shows this object's repr.
_UNSET = getattr(base_events, "_unset", None)
# 3.10's datagram transport cannot pause reading: is_reading(),
# pause_reading() and resume_reading() are the base class's, which raise
# NotImplementedError. 3.11 gave all its socket transports the real ones.
_BASES = (ReadControl, FdTransport) if PY_VERSION >= (3, 11) else (FdTransport,)
# asyncio's datagram transport became an asyncio.DatagramTransport in 3.12;
# before, it is an asyncio.Transport only, and isinstance checks see that.
if PY_VERSION >= (3, 12):
    _BASES += (transports.DatagramTransport,)
# From 3.12 a socket that a live transport still uses is refused.
_CHECKS_FD_OWNER = PY_VERSION >= (3, 12)
# Datagrams read in a row when nothing else is ready (see _read_ready).
_READS_PER_EVENT = 16


class DatagramTransport(*_BASES):
    """A transport over a (possibly connected) datagram socket."""

    max_size = 256 * 1024  # the largest datagram read
    _io = None  # the native helper, for IP sockets of the plain class

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(loop, sock, protocol, extra)
        self._address = address
        # IP sockets of the plain class receive and send through native
        # code (datagram_io.rs), which reads this transport's state where
        # _read_one and sendto do. Other sockets' own methods are called.
        self._io = None
        self._receive_view = None
        cls = type(sock)
        plain = (cls.recvfrom is socket.socket.recvfrom
                 and cls.recvfrom_into is socket.socket.recvfrom_into)  # fmt: skip
        if (plain and cls.send is socket.socket.send and cls.sendto is socket.socket.sendto
                and sock.family in (socket.AF_INET, socket.AF_INET6)):  # fmt: skip
            connected = bool(self._extra["peername"])
            io = _core.DatagramIo(loop, sock, connected, address, self._buffer, protocol)
            self._io = io
            # Shadows the method of that name until the socket is closed.
            self._send_now = io.send
        elif plain:
            # Datagrams are received into the loop's read buffer and copied
            # out at their size.
            self._receive_view = loop._read_buffer()
        loop.call_soon(protocol.connection_made, self)
        # Datagrams are delivered only once the protocol knows its transport.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    # ---- reading -----------------------------------------------------------

    def _watch_readable(self):
        if self._io is None:
            super()._watch_readable()
        else:
            self._io.start_reading(self)

    def _read_ready(self):
        # asyncio reads one datagram per readiness callback and polls before
        # the next. When nothing at all is ready once a datagram has been
        # handled (its handler scheduled nothing, no other callback waits),
        # that poll would find this socket readable and run this callback
        # first: reading on at once changes no order, it only saves the
        # poll. Other sockets' data and timers falling due meanwhile wait
        # for the batch, as they would for a slower handler. At most
        # _READS_PER_EVENT in a row; one in debug mode, whose slow-callback
        # report times each callback as asyncio's does.
        loop = self._loop
        reads = 1 if loop.get_debug() else _READS_PER_EVENT
        while self._read_one():
            reads -= 1
            if not reads or self._closing or self._paused or loop._has_ready():
                return

    def _read_one(self):
        """Receives and delivers one datagram; False once there is none (or
        the endpoint stopped reading)."""
        if self._conn_lost:
            return False
        view = self._receive_view
        try:
            # Not recvfrom(max_size): see _read_buffer.py.
            if view is not None and self.max_size <= len(view):
                nbytes, addr = self._sock.recvfrom_into(view, self.max_size)
                data = bytes(view[:nbytes])
            else:
                data, addr = self._sock.recvfrom(self.max_size)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            # An earlier send's failure reported by the kernel (e.g.
            # ECONNREFUSED): the endpoint itself is still usable.
            self._protocol.error_received(exc)
            return False
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return False
        self._protocol.datagram_received(data, addr)
        return True

    # ---- writing -----------------------------------------------------------

    def sendto(self, data, addr=None):
        """Send one datagram to ``addr`` (or to the connected peer)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data and not _SENDS_EMPTY:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger().warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                self._send_now(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop._add_writer(self._sock_fd, self._sendto_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._queue(data, addr)

    def _queue(self, data, addr):
        # The caller may reuse a mutable buffer once sendto returns.
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + _HEADER
        self._maybe_pause_protocol()

    def _send_failed(self, exc, data, addr):
        """What sendto does when its send raised ``exc``; for the native
        sendto, which made the send (sendto's own except clauses, in
        order)."""
        if isinstance(exc, (BlockingIOError, InterruptedError)):
            self._loop._add_writer(self._sock_fd, self._sendto_ready)
            self._queue(data, addr)
        elif isinstance(exc, OSError):
            self._protocol.error_received(exc)
        elif isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise exc
        else:
            self._fatal_error(exc, "Fatal write error on datagram transport")

    def _sendto_ready(self):
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data) + _HEADER
            try:
                self._send_now(data, addr)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, addr))
                self._buffer_size += len(data) + _HEADER
                break
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._closing:
                self._call_connection_lost(None)

    def _send_now(self, data, addr):
        """One datagram to the kernel, by the socket's own methods."""
        if self._extra["peername"]:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def set_protocol(self, protocol):
        super().set_protocol(protocol)
        if self._io is not None:
            self._io.set_protocol(protocol)

    def _call_connection_lost(self, exc):
        # The native helper uses the socket's fd number, soon free for
        # reuse by another socket.
        if self._io is not None:
            self._io.detach()
            self._io = None
            del self._send_now
        super()._call_connection_lost(exc)


# A method descriptor (datagram_sendto.rs) that sends natively what goes out
# at once and calls the method above for the rest.
DatagramTransport.sendto = _core.datagram_sendto(DatagramTransport.sendto)


def _check_sock_args(sock, local_addr, remote_addr, family, proto, flags, reuse_port,
                     allow_broadcast, **named_only):  # fmt: skip
    if PY_VERSION >= (3, 13):
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")
    opts = dict(
        local_addr=local_addr,
        remote_addr=remote_addr,
        family=family,
        proto=proto,
        flags=flags,
        **named_only,
        reuse_port=reuse_port,
        allow_broadcast=allow_broadcast,
    )
    if any(v for k, v in opts.items() if k not in named_only):
        problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
        raise ValueError(
            f"socket modifier keyword arguments can not be used "
            f"when sock is specified. ({problems})"
        )


def _remove_stale_unix_socket(path):
    if path[0] in (0, "\x00"):  # abstract namespace: nothing on disk
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger().error("Unable to check or remove stale UNIX socket %r: %r", path, err)


def _check_reuse_address(reuse_address):
    if reuse_address is _UNSET:
        return
    if reuse_address:
        raise ValueError(
            "Passing `reuse_address=True` is no longer supported, as the "
            "usage of SO_REUSEPORT in UDP poses a significant security concern."
        )
    # stacklevel: past this helper and _datagram_endpoint, to the caller of
    # create_datagram_endpoint as far as a coroutine's stack allows.
    warnings.warn(
        "The *reuse_address* parameter has been deprecated as of 3.5.10 and is "
        "scheduled for removal in 3.11.",
        DeprecationWarning,
        stacklevel=4,
    )


class DatagramMixin:
    async def _datagram_endpoint(self, protocol_factory, local_addr, remote_addr, family,
                                 proto, flags, reuse_port, allow_broadcast, sock,
                                 **named_only):  # fmt: skip
        r_addr = None
        if sock is not None:
            _check_sock_args(sock, local_addr, remote_addr, family, proto, flags, reuse_port,
                             allow_broadcast, **named_only)  # fmt: skip
            sock.setblocking(False)
        else:
            candidates = await self._datagram_candidates(local_addr, remote_addr, family,
                                                         proto, flags)  # fmt: skip
            if "reuse_address" in named_only:
                # 3.10 looks at reuse_address only once the addresses are
                # checked (and a stale Unix socket file is gone).
                _check_reuse_address(named_only["reuse_address"])
            errors = []
            for (family, proto), (local_address, remote_address) in candidates:
                try:
                    sock, r_addr = await self._open_datagram_socket(
                        family, proto, local_addr and local_address,
                        remote_addr and remote_address, reuse_port, allow_broadcast,
                    )  # fmt: skip
                except OSError as exc:
                    errors.append(exc)
                else:
                    break
            else:
                raise errors[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        if self._debug:
            if local_addr:
                logger().info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr, remote_addr, transport, protocol,
                )  # fmt: skip
            else:
                logger().debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr, transport, protocol,
                )  # fmt: skip
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_candidates(self, local_addr, remote_addr, family, proto, flags):
        """[((family, proto), (local address, remote address)), ...] to try
        in order: every pair of families both addresses resolve to."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr:
                _remove_stale_unix_socket(local_addr)
            return [((family, proto), (local_addr, remote_addr))]
        by_family = {}  # insertion-ordered, as asyncio tries them
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                if PY_VERSION >= (3, 11):
                    raise TypeError("2-tuple is expected")
                raise AssertionError("2-tuple is expected")
            infos = await ensure_resolved(
                self, addr, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_family.setdefault((fam, pro), [None, None])[index] = address
        candidates = [
            (key, pair)
            for key, pair in by_family.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not candidates:
            raise ValueError("can not get address information")
        return candidates

    async def _open_datagram_socket(self, family, proto, local_address, remote_address,
                                    reuse_port, allow_broadcast):  # fmt: skip
        sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
        try:
            if reuse_port:
                _set_reuseport(sock)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            if local_address:
                sock.bind(local_address)
            if remote_address:
                # A broadcast endpoint is not connected: it sends to the
                # remote address explicitly.
                if not allow_broadcast:
                    await self.sock_connect(sock, remote_address)
                return sock, remote_address
            return sock, None
        except BaseException:
            sock.close()
            raise

    if PY_VERSION >= (3, 11):

        async def create_datagram_endpoint(
            self, protocol_factory, local_addr=None, remote_addr=None, *, family=0,
            proto=0, flags=0, reuse_port=None, allow_broadcast=None, sock=None,
        ):  # fmt: skip
            """A datagram endpoint: (transport, protocol).  Binds to
            ``local_addr`` and/or connects to ``remote_addr`` (resolved as
            asyncio does), or wraps ``sock``."""
            return await self._datagram_endpoint(
                protocol_factory, local_addr, remote_addr, family, proto, flags,
                reuse_port, allow_broadcast, sock,
            )  # fmt: skip

    else:

        async def create_datagram_endpoint(
            self, protocol_factory, local_addr=None, remote_addr=None, *, family=0,
            proto=0, flags=0, reuse_address=_UNSET, reuse_port=None, allow_broadcast=None,
            sock=None,
        ):  # fmt: skip
            """A datagram endpoint: (transport, protocol).  Binds to
            ``local_addr`` and/or connects to ``remote_addr`` (resolved as
            asyncio does), or wraps ``sock``."""
            # With sock=, 3.10 ignores reuse_address but names it among the
            # offending arguments when others are given (even when it was
            # not passed: the default is truthy).
            return await self._datagram_endpoint(
                protocol_factory, local_addr, remote_addr, family, proto, flags,
                reuse_port, allow_broadcast, sock, reuse_address=reuse_address,
            )  # fmt: skip

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        if _CHECKS_FD_OWNER:
            # A socket still served by a live transport (sock= given twice).
            self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)
