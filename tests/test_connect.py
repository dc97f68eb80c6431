"""Client connections: create_connection, create_unix_connection,
connect_accepted_socket and the streams built on them.

Every test runs on both loops (see conftest.py). The peers are plain
blocking sockets served from threads, so nothing here depends on a loop's
create_server. Where asyncio's exact behaviour matters (messages, error
aggregation, the order of attempts), the test runs the same calls on a
stdlib loop (``stdlib_loop``) and requires the same outcome, and also
hard-codes the key expectations so that both loops being wrong still fails.
"""

import asyncio
import contextlib
import gc
import logging
import os
import pathlib
import re
import select
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import warnings

import pytest

PY_VERSION = sys.version_info[:2]
TIMEOUT = 10  # seconds any single connection scenario may take

# A self-signed certificate for "localhost", 127.0.0.1 and ::1, valid from
# 2000 to 2100.
CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDDAlsb2NhbGhv
c3QwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBQxEjAQBgNVBAMM
CWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDNFv0W+Tpm56Bg5
rqjol9CYWhBGcvAvhU6HXy2m0mGl9TeMi40NPbgqi64JwkkMKQ4dvHmFwIvnBOHD
PC36wZijWjBYMCwGA1UdEQQlMCOCCWxvY2FsaG9zdIcEfwAAAYcQAAAAAAAAAAAA
AAAAAAAAATAJBgNVHRMEAjAAMB0GA1UdDgQWBBTRk4eH3qljD6B50UuqUac5DSD1
1TAKBggqhkjOPQQDAgNIADBFAiBeQMsy64LSwD1SixdkCJQzx0rXpjxQT2psAKhJ
nrRWfAIhAOWJ/W/84cxfEMPpp1fvUISNW45F1YC2+ojbxhT8hERV
-----END CERTIFICATE-----
"""
KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+MlMu58SKnjfeMjK
hTDDx+hC5r+zzAdDlm/758Pz7LehRANCAAQzRb9Fvk6ZuegYOa6o6JfQmFoQRnLw
L4VOh18tptJhpfU3jIuNDT24KouuCcJJDCkOHbx5hcCL5wThwzwt+sGY
-----END PRIVATE KEY-----
"""


def _ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_available()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
needs_all_errors = pytest.mark.skipif(PY_VERSION < (3, 12), reason="all_errors is 3.12+")
needs_shutdown_timeout = pytest.mark.skipif(
    PY_VERSION < (3, 11), reason="ssl_shutdown_timeout is 3.11+"
)


# ---- peers: blocking sockets served from threads ---------------------------


class EchoServer:
    """Echoes every connection on ``listener`` back to its sender, one
    thread per connection; with ``tls``, each connection is wrapped in TLS
    first. No event loop is involved."""

    def __init__(self, listener, tls=None):
        self.listener = listener
        self.tls = tls
        self.address = listener.getsockname()
        self._conns = []
        self._echoers = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self):
        while not self._stopping.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.05)
            if not ready:
                continue
            conn, _ = self.listener.accept()
            conn.settimeout(TIMEOUT)
            self._conns.append(conn)
            echoer = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._echoers.append(echoer)
            echoer.start()

    def _echo(self, conn):
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass  # the client went away, or failed the TLS handshake on purpose
        finally:
            conn.close()

    def close(self):
        self._stopping.set()
        self._acceptor.join(TIMEOUT)
        self.listener.close()
        for conn in self._conns:
            # Wakes an echo thread blocked in recv(); close() alone does not.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for echoer in self._echoers:
            echoer.join(TIMEOUT)


@contextlib.contextmanager
def echo_server(family=socket.AF_INET, host="127.0.0.1", tls=None):
    listener = socket.create_server((host, 0), family=family)
    server = EchoServer(listener, tls)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server():
    with echo_server() as srv:
        yield srv


@pytest.fixture
def server6():
    if not HAS_IPV6:
        pytest.skip("no IPv6 loopback")
    with echo_server(socket.AF_INET6, "::1") as srv:
        yield srv


@pytest.fixture
def short_tmp():
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="flc")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unix_server(short_tmp):
    path = os.path.join(short_tmp, "echo.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    srv = EchoServer(listener)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def certfile(short_tmp):
    path = os.path.join(short_tmp, "cert.pem")
    with open(path, "w") as f:
        f.write(CERT_PEM + KEY_PEM)
    return path


@pytest.fixture
def server_tls(certfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile)
    return ctx


@pytest.fixture
def client_tls(certfile):
    return ssl.create_default_context(cafile=certfile)


@pytest.fixture
def tls_server(server_tls):
    with echo_server(tls=server_tls) as srv:
        yield srv


def unused_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port nothing listens on (connecting to it is refused)."""
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def blackhole(family=socket.AF_INET, host="127.0.0.1"):
    """An address whose connection attempts hang: a listener with a full
    accept queue (backlog 0, one connection already queued) makes the
    kernel drop further SYNs."""
    listener = socket.socket(family)
    listener.bind((host, 0))
    listener.listen(0)
    filler = socket.socket(family)
    filler.connect(listener.getsockname())
    try:
        yield listener.getsockname()
    finally:
        filler.close()
        listener.close()


# ---- helpers ------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records the protocol callbacks and the data received."""

    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.changed = asyncio.Event()

    def connection_made(self, transport):
        self.events.append("connection_made")
        self.transport = transport

    def data_received(self, data):
        if "data_received" not in self.events:
            self.events.append("data_received")
        self.data += data
        self.changed.set()

    def eof_received(self):
        self.events.append("eof_received")
        self.changed.set()

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.changed.set()

    async def wait_for_data(self, size):
        while len(self.data) < size:
            self.changed.clear()
            await self.changed.wait()
        return bytes(self.data)

    async def wait_for_event(self, name):
        while name not in self.events:
            self.changed.clear()
            await self.changed.wait()


def run_on(lp, coro, timeout=TIMEOUT):
    return lp.run_until_complete(asyncio.wait_for(coro, timeout))


def outcome_on(lp, make_coro):
    """("returned", None) or (exception type, str(exception)) of running
    ``make_coro(lp)`` on ``lp``; a returned transport is closed."""
    try:
        result = run_on(lp, make_coro(lp))
    except Exception as exc:
        return type(exc), str(exc)
    if isinstance(result, tuple) and result and isinstance(result[0], asyncio.BaseTransport):
        result[0].close()
        run_on(lp, asyncio.sleep(0.01))
    return "returned", None


async def echo_roundtrip(transport, protocol, payload=b"ping"):
    transport.write(payload)
    return await protocol.wait_for_data(len(payload))


async def close_transport(transport, protocol):
    transport.close()
    await protocol.wait_for_event("connection_lost")


def patch_getaddrinfo(lp, answers, calls=None):
    """Make ``lp.getaddrinfo`` answer from ``answers`` (host -> list of
    addrinfo tuples, or an exception to raise), recording each call."""

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if calls is not None:
            calls.append((host, port, family, type, proto, flags))
        answer = answers[host]
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)

    lp.getaddrinfo = getaddrinfo


def forbid_getaddrinfo(lp):
    async def getaddrinfo(*args, **kwargs):
        raise AssertionError(f"getaddrinfo{args} called for a numeric address")

    lp.getaddrinfo = getaddrinfo


def record_connects(lp):
    """Wrap ``lp.sock_connect``: returns the list of (socket, address) of
    every connection attempt."""
    attempts = []
    original = lp.sock_connect

    async def sock_connect(sock, address):
        attempts.append((sock, address))
        return await original(sock, address)

    lp.sock_connect = sock_connect
    return attempts


def v4(port):
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def v6(port):
    return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", port, 0, 0))


@contextlib.contextmanager
def no_resource_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked


def settle(lp, rounds=5):
    """Let callbacks scheduled by cancellations and closes run."""
    for _ in range(rounds):
        run_on(lp, asyncio.sleep(0))


# ---- connecting over TCP ------------------------------------------------------


def test_connects_to_a_numeric_ipv4_address_and_exchanges_data(loop, server):
    forbid_getaddrinfo(loop)

    async def main():
        transport, protocol = await loop.create_connection(Recorder, *server.address)
        # The protocol has heard of the connection before the call returns.
        assert protocol.events == ["connection_made"]
        assert protocol.transport is transport
        assert isinstance(transport, asyncio.Transport)
        assert transport.get_protocol() is protocol
        assert transport.get_extra_info("peername") == server.address
        assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
        sock = transport.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
        assert sock.gettimeout() == 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert await echo_roundtrip(transport, protocol, b"hello") == b"hello"
        await close_transport(transport, protocol)
        return protocol.events

    with no_resource_warnings():
        assert run_on(loop, main()) == ["connection_made", "data_received", "connection_lost"]


@needs_ipv6
def test_connects_to_a_numeric_ipv6_address(loop, server6):
    forbid_getaddrinfo(loop)

    async def main():
        transport, protocol = await loop.create_connection(Recorder, "::1", server6.address[1])
        assert transport.get_extra_info("peername")[:2] == ("::1", server6.address[1])
        assert transport.get_extra_info("socket").family == socket.AF_INET6
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    run_on(loop, main())


def test_port_as_a_string_and_host_as_bytes_are_numeric_too(loop, server):
    forbid_getaddrinfo(loop)

    async def main():
        transport, protocol = await loop.create_connection(
            Recorder, b"127.0.0.1", str(server.address[1])
        )
        assert transport.get_extra_info("peername") == server.address
        await close_transport(transport, protocol)

    run_on(loop, main())


def test_localhost_is_resolved_through_loop_getaddrinfo(loop, stdlib_loop, server):
    def scenario(lp):
        calls = []
        original = lp.getaddrinfo

        async def getaddrinfo(*args, **kwargs):
            calls.append((args, kwargs))
            infos = await original(*args, **kwargs)
            # Only the IPv4 answer: the server listens there.
            return [info for info in infos if info[0] == socket.AF_INET]

        lp.getaddrinfo = getaddrinfo

        async def main():
            transport, protocol = await lp.create_connection(
                Recorder, "localhost", server.address[1]
            )
            peer = transport.get_extra_info("peername")
            assert await echo_roundtrip(transport, protocol) == b"ping"
            await close_transport(transport, protocol)
            return peer

        return run_on(lp, main()), calls

    peer, calls = scenario(loop)
    assert peer == server.address
    assert calls == [
        (
            ("localhost", server.address[1]),
            {"family": 0, "type": socket.SOCK_STREAM, "proto": 0, "flags": 0},
        )
    ]
    assert (peer, calls) == scenario(stdlib_loop)


def test_family_proto_and_flags_are_passed_to_getaddrinfo(loop, stdlib_loop, server):
    def scenario(lp):
        calls = []
        patch_getaddrinfo(lp, {"peer.test": [v4(server.address[1])], "me.test": [v4(0)]}, calls)
        transport, protocol = run_on(
            lp,
            lp.create_connection(
                Recorder, "peer.test", server.address[1], family=socket.AF_INET,
                proto=socket.IPPROTO_TCP, flags=socket.AI_CANONNAME, local_addr=("me.test", 0),
            ),
        )
        transport.close()
        settle(lp)
        return calls

    calls = scenario(loop)
    expected_rest = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_CANONNAME)
    assert calls == [("peer.test", server.address[1]) + expected_rest, ("me.test", 0) + expected_rest]
    assert calls == scenario(stdlib_loop)


def test_resolver_errors_propagate_unchanged(loop):
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    patch_getaddrinfo(loop, {"nowhere.test": error})
    with pytest.raises(socket.gaierror) as info:
        run_on(loop, loop.create_connection(Recorder, "nowhere.test", 80))
    assert info.value is error


def test_an_empty_resolver_answer_raises_oserror(loop, stdlib_loop, server):
    def scenario(lp, local_addr):
        patch_getaddrinfo(lp, {"empty.test": [], "peer.test": [v4(server.address[1])]})
        host = "peer.test" if local_addr else "empty.test"
        return outcome_on(
            lp, lambda lp: lp.create_connection(Recorder, host, server.address[1], local_addr=local_addr)
        )

    for local_addr in (None, ("empty.test", 0)):
        got = scenario(loop, local_addr)
        assert got == (OSError, "getaddrinfo() returned empty list")
        assert got == scenario(stdlib_loop, local_addr)


# ---- local_addr ------------------------------------------------------------------


def test_local_addr_binds_the_socket_before_connecting(loop, server):
    port = unused_port()

    async def main():
        transport, protocol = await loop.create_connection(
            Recorder, *server.address, local_addr=("127.0.0.1", port)
        )
        assert transport.get_extra_info("sockname") == ("127.0.0.1", port)
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    run_on(loop, main())


@needs_ipv6
def test_local_addresses_of_another_family_are_skipped(loop, stdlib_loop, server):
    def scenario(lp):
        port = unused_port()
        # The IPv6 address comes first and must be passed over: the peer is IPv4.
        patch_getaddrinfo(lp, {"me.test": [v6(port), v4(port)]})
        transport, protocol = run_on(
            lp, lp.create_connection(Recorder, *server.address, local_addr=("me.test", port))
        )
        sockname = transport.get_extra_info("sockname")
        transport.close()
        settle(lp)
        return sockname == ("127.0.0.1", port)

    assert scenario(loop)
    assert scenario(stdlib_loop)


@needs_ipv6
def test_no_local_address_of_the_right_family_is_an_error(loop, stdlib_loop, server):
    def scenario(lp):
        with no_resource_warnings():
            return outcome_on(
                lp, lambda lp: lp.create_connection(Recorder, *server.address, local_addr=("::1", 0))
            )

    got = scenario(loop)
    assert got == (OSError, f"no matching local address with family={socket.AF_INET!r} found")
    assert got == scenario(stdlib_loop)


def test_a_local_address_in_use_reports_the_bind_error(loop, stdlib_loop, server):
    taken = socket.create_server(("127.0.0.1", 0), reuse_port=False)
    address = taken.getsockname()

    def scenario(lp):
        with no_resource_warnings():
            try:
                run_on(lp, lp.create_connection(Recorder, *server.address, local_addr=address))
            except OSError as exc:
                return type(exc), exc.errno, str(exc)

    try:
        got = scenario(loop)
        reason = "[errno 98] address already in use" if PY_VERSION >= (3, 13) else "address already in use"
        assert got == (
            OSError,
            98,
            f"[Errno 98] error while attempting to bind on address {address!r}: {reason}",
        )
        assert got == scenario(stdlib_loop)
    finally:
        taken.close()


# ---- sock= ---------------------------------------------------------------------


def test_an_already_connected_socket_can_be_passed(loop, server):
    sock = socket.create_connection(server.address)

    async def main():
        transport, protocol = await loop.create_connection(Recorder, sock=sock)
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        # The loop makes the socket non-blocking.
        assert sock.gettimeout() == 0
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    run_on(loop, main())
    assert sock.fileno() == -1  # the transport owned it


def test_create_connection_accepts_a_unix_stream_socket(loop):
    ours, theirs = socket.socketpair()

    async def main():
        transport, protocol = await loop.create_connection(Recorder, sock=ours)
        theirs.sendall(b"over unix")
        assert await protocol.wait_for_data(9) == b"over unix"
        await close_transport(transport, protocol)

    try:
        run_on(loop, main())
    finally:
        theirs.close()


@pytest.mark.skipif(PY_VERSION < (3, 12), reason="3.12+ refuses a socket a transport uses")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_socket_a_live_transport_uses_is_refused(loop, client_tls, tls):
    ours, theirs = socket.socketpair()

    async def main():
        first, _ = await loop.create_connection(Recorder, sock=ours)
        kwargs = {"ssl": client_tls, "server_hostname": "localhost"} if tls else {}
        try:
            second, _ = await loop.create_connection(Recorder, sock=ours, **kwargs)
        except RuntimeError as exc:
            return str(exc)
        else:
            second.close()
            return None
        finally:
            first.close()
            await asyncio.sleep(0)

    try:
        message = run_on(loop, main())
    finally:
        theirs.close()
    assert message is not None, "a second transport was made"
    assert re.fullmatch(r"File descriptor <socket\.socket .*> is used by transport <.*>", message)


# ---- happy eyeballs --------------------------------------------------------------


def test_happy_eyeballs_moves_on_as_soon_as_an_address_is_refused(loop, server):
    refused = unused_port()
    patch_getaddrinfo(loop, {"dual.test": [v4(refused), v4(server.address[1])]})
    attempts = record_connects(loop)

    async def main():
        started = loop.time()
        transport, protocol = await loop.create_connection(
            Recorder, "dual.test", 0, happy_eyeballs_delay=5.0
        )
        elapsed = loop.time() - started
        peer = transport.get_extra_info("peername")
        await close_transport(transport, protocol)
        return elapsed, peer

    with no_resource_warnings():
        elapsed, peer = run_on(loop, main())
    # A failed attempt starts the next one at once, not after the delay.
    assert elapsed < 1.0
    assert peer == server.address
    assert [address[1] for _, address in attempts] == [refused, server.address[1]]


def test_happy_eyeballs_starts_the_next_address_after_the_delay(loop, server):
    delay = 0.3
    with blackhole() as dead:
        patch_getaddrinfo(loop, {"dual.test": [v4(dead[1]), v4(server.address[1])]})
        attempts = record_connects(loop)

        async def main():
            started = loop.time()
            transport, protocol = await loop.create_connection(
                Recorder, "dual.test", 0, happy_eyeballs_delay=delay
            )
            elapsed = loop.time() - started
            peer = transport.get_extra_info("peername")
            await close_transport(transport, protocol)
            return elapsed, peer

        with no_resource_warnings():
            elapsed, peer = run_on(loop, main())
            settle(loop)
    assert delay - 0.05 <= elapsed < delay + 1.0
    assert peer == server.address
    assert [address[1] for _, address in attempts] == [dead[1], server.address[1]]
    # The attempt that lost the race was cancelled and its socket closed.
    assert attempts[0][0].fileno() == -1


@needs_ipv6
@pytest.mark.parametrize(
    "delay, interleave, expected",
    [
        (None, None, "abcde"),
        (None, 1, "adbec"),  # interleave works without happy eyeballs too
        (0.5, None, "adbec"),  # happy eyeballs interleaves by default
        (0.5, 0, "abcde"),
        (0.5, 2, "abdce"),
        (0.5, 3, "abcde"),
    ],
)
def test_addresses_are_tried_in_interleaved_order(loop, stdlib_loop, delay, interleave, expected):
    # a, b, c are IPv6 and d, e IPv4; all are refused.
    ports = {}
    while len(set(ports.values())) < 5:
        ports = {name: unused_port() for name in "abcde"}
    infos = [v6(ports[name]) for name in "abc"] + [v4(ports[name]) for name in "de"]
    name_of = {port: name for name, port in ports.items()}

    def scenario(lp):
        patch_getaddrinfo(lp, {"many.test": infos})
        attempts = record_connects(lp)
        with no_resource_warnings():
            with pytest.raises(OSError) as info:
                run_on(
                    lp,
                    lp.create_connection(
                        Recorder, "many.test", 0, happy_eyeballs_delay=delay, interleave=interleave
                    ),
                )
        order = "".join(name_of[address[1]] for _, address in attempts)
        return order, type(info.value), str(info.value)

    got = scenario(loop)
    assert got[0] == expected
    assert got[1] is OSError
    assert got[2].startswith("Multiple exceptions: [Errno 111] Connect call failed (")
    assert got == scenario(stdlib_loop)


# ---- when every address fails ---------------------------------------------------


def test_every_address_refused_raises_one_combined_oserror(loop, stdlib_loop):
    first, second = unused_port(), unused_port()
    while second == first:
        second = unused_port()

    def scenario(lp):
        patch_getaddrinfo(lp, {"two.test": [v4(first), v4(second)]})
        with no_resource_warnings(), pytest.raises(OSError) as info:
            run_on(lp, lp.create_connection(Recorder, "two.test", 0))
        return type(info.value), info.value.errno, str(info.value)

    got = scenario(loop)
    assert got == (
        OSError,
        None,
        f"Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', {first}), "
        f"[Errno 111] Connect call failed ('127.0.0.1', {second})",
    )
    assert got == scenario(stdlib_loop)


def test_a_single_failure_is_raised_as_it_is(loop, stdlib_loop):
    port = unused_port()

    def scenario(lp):
        with no_resource_warnings(), pytest.raises(OSError) as info:
            run_on(lp, lp.create_connection(Recorder, "127.0.0.1", port))
        return type(info.value), info.value.errno, str(info.value)

    got = scenario(loop)
    assert got == (
        ConnectionRefusedError,
        111,
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})",
    )
    assert got == scenario(stdlib_loop)


@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.5])
def test_failures_that_read_the_same_raise_the_first_of_them(loop, stdlib_loop, happy_eyeballs_delay):
    def scenario(lp):
        raised = []

        async def sock_connect(sock, address):
            raised.append(OSError(113, "No route to host"))
            raise raised[-1]

        lp.sock_connect = sock_connect
        patch_getaddrinfo(lp, {"three.test": [v4(1), v4(2), v4(3)]})
        with no_resource_warnings(), pytest.raises(OSError) as info:
            run_on(
                lp,
                lp.create_connection(
                    Recorder, "three.test", 0, happy_eyeballs_delay=happy_eyeballs_delay
                ),
            )
        return len(raised), info.value is raised[0]

    assert scenario(loop) == (3, True)
    assert scenario(stdlib_loop) == (3, True)


def test_non_oserror_failures_propagate_without_trying_other_addresses(loop, stdlib_loop):
    def scenario(lp):
        calls = []

        async def sock_connect(sock, address):
            calls.append(address)
            raise ZeroDivisionError("not an OSError")

        lp.sock_connect = sock_connect
        patch_getaddrinfo(lp, {"two.test": [v4(1), v4(2)]})
        with no_resource_warnings():
            return outcome_on(lp, lambda lp: lp.create_connection(Recorder, "two.test", 0)), calls

    got = scenario(loop)
    assert got == ((ZeroDivisionError, "not an OSError"), [("127.0.0.1", 1)])
    assert got == scenario(stdlib_loop)


@needs_all_errors
@pytest.mark.parametrize("count", [1, 2])
def test_all_errors_raises_an_exception_group(loop, stdlib_loop, count):
    ports = [unused_port() for _ in range(count)]

    def scenario(lp):
        patch_getaddrinfo(lp, {"some.test": [v4(port) for port in ports]})
        with no_resource_warnings(), pytest.raises(ExceptionGroup) as info:  # noqa: F821
            run_on(lp, lp.create_connection(Recorder, "some.test", 0, all_errors=True))
        group = info.value
        return str(group), [(type(exc), str(exc)) for exc in group.exceptions]

    got = scenario(loop)
    plural = "s" if count > 1 else ""
    assert got == (
        f"create_connection failed ({count} sub-exception{plural})",
        [
            (ConnectionRefusedError, f"[Errno 111] Connect call failed ('127.0.0.1', {port})")
            for port in ports
        ],
    )
    assert got == scenario(stdlib_loop)


def test_all_errors_false_is_the_default_behaviour(loop):
    port = unused_port()
    kwargs = {"all_errors": False} if PY_VERSION >= (3, 12) else {}
    with no_resource_warnings(), pytest.raises(ConnectionRefusedError):
        run_on(loop, loop.create_connection(Recorder, "127.0.0.1", port, **kwargs))


def test_a_failed_connection_leaves_no_reference_cycles(loop):
    # asyncio lets go of everything that would tie the raised errors to the
    # frames they passed through, so the garbage collector is not needed.
    first, second = unused_port(), unused_port()
    patch_getaddrinfo(loop, {"two.test": [v4(first), v4(second)]})

    async def connect():
        # The error is caught here: a task ending with it, pytest.raises or
        # wait_for would all make cycles of their own.
        try:
            await loop.create_connection(Recorder, "two.test", 0)
        except OSError:
            return
        raise AssertionError("connected")

    def fail_to_connect():
        loop.run_until_complete(connect())

    fail_to_connect()  # warm up: first-use caches are not garbage
    gc.collect()
    gc.disable()
    try:
        fail_to_connect()
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0


def test_numeric_host_of_another_family_goes_to_the_resolver(loop, stdlib_loop):
    def scenario(lp):
        try:
            run_on(lp, lp.create_connection(Recorder, "127.0.0.1", 1, family=socket.AF_INET6))
        except socket.gaierror as exc:
            return type(exc), exc.errno
        return None

    got = scenario(loop)
    assert got is not None and got[0] is socket.gaierror
    assert got == scenario(stdlib_loop)


# ---- cancellation ----------------------------------------------------------------


def test_cancelling_a_pending_connect_closes_its_socket(loop):
    with blackhole() as dead:
        attempts = record_connects(loop)

        async def main():
            task = loop.create_task(loop.create_connection(Recorder, *dead))
            await asyncio.sleep(0.1)
            assert len(attempts) == 1 and not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        with no_resource_warnings():
            run_on(loop, main())
            settle(loop)
    assert attempts[0][0].fileno() == -1


def test_cancelling_happy_eyeballs_closes_every_attempt(loop):
    with blackhole() as dead:
        patch_getaddrinfo(loop, {"dead.test": [v4(dead[1])] * 3})
        attempts = record_connects(loop)

        async def main():
            task = loop.create_task(
                loop.create_connection(Recorder, "dead.test", 0, happy_eyeballs_delay=0.05)
            )
            await asyncio.sleep(0.3)
            assert len(attempts) == 3 and not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        with no_resource_warnings():
            run_on(loop, main())
            settle(loop)
    assert [sock.fileno() for sock, _ in attempts] == [-1, -1, -1]


def test_cancelling_during_the_tls_handshake_closes_the_transport(loop, client_tls):
    # Accepted by the kernel, never answered: the handshake hangs.
    silent = socket.create_server(("127.0.0.1", 0))
    attempts = record_connects(loop)

    async def main():
        task = loop.create_task(
            loop.create_connection(Recorder, *silent.getsockname(), ssl=client_tls,
                                   server_hostname="localhost")
        )
        await asyncio.sleep(0.2)
        assert len(attempts) == 1 and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        with no_resource_warnings():
            run_on(loop, main())
            settle(loop)
    finally:
        silent.close()
    assert attempts[0][0].fileno() == -1


def test_tls_handshake_timeout(loop, stdlib_loop, client_tls):
    silent = socket.create_server(("127.0.0.1", 0))

    def scenario(lp):
        attempts = record_connects(lp)
        with no_resource_warnings():
            got = outcome_on(
                lp,
                lambda lp: lp.create_connection(
                    Recorder, *silent.getsockname(), ssl=client_tls,
                    server_hostname="localhost", ssl_handshake_timeout=0.2,
                ),
            )
            settle(lp)
        return got, attempts[0][0].fileno()

    try:
        got = scenario(loop)
        assert got == (
            (
                ConnectionAbortedError,
                "SSL handshake is taking longer than 0.2 seconds: aborting the connection",
            ),
            -1,
        )
        assert got == scenario(stdlib_loop)
    finally:
        silent.close()


# ---- TLS ---------------------------------------------------------------------------


def test_tls_connection_checks_the_certificate_against_the_host(loop, tls_server, client_tls):
    port = tls_server.address[1]

    async def main():
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", port, ssl=client_tls
        )
        assert isinstance(transport, asyncio.Transport)
        assert protocol.events == ["connection_made"]
        ssl_object = transport.get_extra_info("ssl_object")
        assert ssl_object.server_hostname == "localhost"
        assert dict(transport.get_extra_info("peercert")["subject"][0])["commonName"] == "localhost"
        assert transport.get_extra_info("peername") == tls_server.address
        assert await echo_roundtrip(transport, protocol, b"secret" * 1000) == b"secret" * 1000
        await close_transport(transport, protocol)

    with no_resource_warnings():
        run_on(loop, main())


def test_tls_with_a_numeric_host_and_an_explicit_server_hostname(loop, tls_server, client_tls):
    async def main():
        transport, protocol = await loop.create_connection(
            Recorder, *tls_server.address, ssl=client_tls, server_hostname="localhost"
        )
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    run_on(loop, main())


@pytest.mark.parametrize("server_hostname", ["wrong.example", None])
def test_tls_certificate_errors_match(loop, stdlib_loop, tls_server, client_tls, server_hostname):
    def scenario(lp):
        kwargs = {"ssl": client_tls, "server_hostname": server_hostname}
        if server_hostname is None:
            kwargs["ssl"] = True  # the default context does not trust our certificate
            kwargs["server_hostname"] = "localhost"
        with no_resource_warnings():
            got = outcome_on(lp, lambda lp: lp.create_connection(Recorder, *tls_server.address, **kwargs))
            settle(lp)
        return got

    got = scenario(loop)
    assert got[0] is ssl.SSLCertVerificationError
    assert got == scenario(stdlib_loop)


# ---- Unix sockets ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_unix_connection_accepts_str_bytes_and_path_objects(loop, unix_server, kind):
    path = unix_server.address
    given = {"str": path, "bytes": os.fsencode(path), "pathlib": pathlib.Path(path)}[kind]

    async def main():
        transport, protocol = await loop.create_unix_connection(Recorder, given)
        assert protocol.events == ["connection_made"]
        sock = transport.get_extra_info("socket")
        assert sock.family == socket.AF_UNIX
        assert transport.get_extra_info("peername") == path
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    with no_resource_warnings():
        run_on(loop, main())


def test_unix_connection_over_a_connected_socket(loop, unix_server):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(unix_server.address)

    async def main():
        transport, protocol = await loop.create_unix_connection(Recorder, sock=sock)
        assert sock.gettimeout() == 0
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)

    run_on(loop, main())


def test_unix_connection_to_a_missing_path(loop, stdlib_loop, short_tmp):
    path = os.path.join(short_tmp, "missing.sock")

    def scenario(lp):
        with no_resource_warnings():
            try:
                run_on(lp, lp.create_unix_connection(Recorder, path))
            except OSError as exc:
                return type(exc), exc.errno, str(exc)

    got = scenario(loop)
    assert got[:2] == (FileNotFoundError, 2)
    assert got == scenario(stdlib_loop)


# ---- connect_accepted_socket ------------------------------------------------------


@pytest.fixture
def accepted():
    """(server side, client side) of a fresh TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
    client.settimeout(TIMEOUT)
    try:
        yield conn, client
    finally:
        conn.close()
        client.close()


def test_connect_accepted_socket_wraps_the_connection(loop, accepted):
    conn, client = accepted

    async def main():
        transport, protocol = await loop.connect_accepted_socket(Recorder, conn)
        assert protocol.events == ["connection_made"]
        assert transport.get_extra_info("peername") == client.getsockname()
        client.sendall(b"from client")
        assert await protocol.wait_for_data(11) == b"from client"
        transport.write(b"from server")
        assert await loop.run_in_executor(None, client.recv, 100) == b"from server"
        client.close()
        await protocol.wait_for_event("connection_lost")
        return protocol.events

    with no_resource_warnings():
        events = run_on(loop, main())
    assert events == ["connection_made", "data_received", "eof_received", "connection_lost"]


def test_connect_accepted_socket_runs_the_tls_server_side(loop, accepted, server_tls, client_tls):
    conn, client = accepted
    outcome = {}

    def client_side():
        with client_tls.wrap_socket(client, server_hostname="localhost") as tls:
            tls.sendall(b"hello tls")
            outcome["reply"] = tls.recv(100)

    async def main():
        thread = threading.Thread(target=client_side)
        thread.start()
        try:
            transport, protocol = await loop.connect_accepted_socket(Recorder, conn, ssl=server_tls)
            assert transport.get_extra_info("ssl_object").server_side
            data = await protocol.wait_for_data(9)
            transport.write(data.upper())
            await loop.run_in_executor(None, thread.join, TIMEOUT)
            transport.close()
            await protocol.wait_for_event("connection_lost")
        finally:
            thread.join(TIMEOUT)

    run_on(loop, main())
    assert outcome["reply"] == b"HELLO TLS"


# ---- streams -----------------------------------------------------------------------


def test_open_connection_streams(run, server, tls_server, client_tls, unix_server):
    async def exchange(reader, writer, line):
        writer.write(line)
        await writer.drain()
        reply = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return reply

    async def main():
        replies = []
        for host in ("127.0.0.1", "localhost"):
            replies.append(await exchange(*await asyncio.open_connection(host, server.address[1]), b"plain\n"))
        replies.append(
            await exchange(
                *await asyncio.open_connection("localhost", tls_server.address[1], ssl=client_tls),
                b"tls\n",
            )
        )
        replies.append(
            await exchange(
                *await asyncio.open_unix_connection(pathlib.Path(unix_server.address)), b"unix\n"
            )
        )
        return replies

    assert run(asyncio.wait_for(main(), TIMEOUT)) == [b"plain\n", b"plain\n", b"tls\n", b"unix\n"]


# ---- debug mode --------------------------------------------------------------------


class _MessageLog(logging.Handler):
    """Formats records as they are logged (their arguments change later)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_debug_mode_logs_each_connection(loop, server, accepted):
    loop.set_debug(True)
    conn, _ = accepted
    log = _MessageLog()
    asyncio_logger = logging.getLogger("asyncio")
    saved_level = asyncio_logger.level
    asyncio_logger.setLevel(logging.DEBUG)
    asyncio_logger.addHandler(log)

    async def main():
        transport, protocol = await loop.create_connection(Recorder, *server.address)
        transport.close()
        transport2, _ = await loop.connect_accepted_socket(Recorder, conn)
        transport2.close()
        await asyncio.sleep(0.01)

    try:
        run_on(loop, main())
    finally:
        asyncio_logger.removeHandler(log)
        asyncio_logger.setLevel(saved_level)
    messages = log.messages
    port = server.address[1]
    sock_repr = (
        # 3.10 shows the family and type as enum members.
        r"<asyncio\.TransportSocket fd=\d+, family=(2|AddressFamily\.AF_INET), "
        r"type=(1|SocketKind\.SOCK_STREAM), proto=\d+, "
        r"laddr=\('127\.0\.0\.1', \d+\), raddr=\('127\.0\.0\.1', \d+\)>"
    )
    assert any(
        re.fullmatch(rf"{sock_repr} connected to 127\.0\.0\.1:{port}: \(<.+>, <.+Recorder object at .+>\)", m)
        for m in messages
    ), messages
    assert any(
        re.fullmatch(rf"{sock_repr} handled: \(<.+>, <.+Recorder object at .+>\)", m) for m in messages
    ), messages


# ---- argument validation -----------------------------------------------------------


def _normalized(outcome):
    # Unknown keywords are reported with the method's qualified name, which
    # names the defining class (BaseEventLoop.create_connection() ...).
    kind, message = outcome
    if kind is TypeError and "unexpected keyword argument" in message:
        message = re.sub(r"^\S+\(\) ", "", message)
    return kind, message


class _Objects:
    """Sockets and contexts the validation cases are called with."""

    def __init__(self, certfile):
        self.stream = socket.socket()
        self.dgram = socket.socket(type=socket.SOCK_DGRAM)
        self.unix_dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.unix_stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.tls = ssl.create_default_context(cafile=certfile)
        self.ssl_sock = self.tls.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)

    def close(self):
        for sock in (self.stream, self.dgram, self.unix_dgram, self.unix_stream, self.ssl_sock):
            sock.close()


def _failing_factory():
    raise ZeroDivisionError("factory failed")


# name -> ((Python version, keyword) when the case uses a keyword added
# later, else None; the call;
# the expected (type, message), or a function of the objects giving it).
# Before that version the keyword does not exist, and the call must fail
# with asyncio's TypeError instead.
VALIDATION_CASES = {
    "server_hostname without ssl": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, server_hostname="x"),
        (ValueError, "server_hostname is only meaningful with ssl"),
    ),
    "ssl with neither host nor server_hostname": (
        None,
        lambda lp, o: lp.create_connection(Recorder, port=1, ssl=o.tls),
        (ValueError, "You must set server_hostname when using ssl without a host"),
    ),
    "ssl with an empty host": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "", 1, ssl=o.tls),
        (ValueError, "You must set server_hostname when using ssl without a host"),
    ),
    "ssl over sock without server_hostname": (
        None,
        lambda lp, o: lp.create_connection(Recorder, sock=o.stream, ssl=True),
        (ValueError, "You must set server_hostname when using ssl without a host"),
    ),
    "ssl_handshake_timeout without ssl": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, ssl_handshake_timeout=1),
        (ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ),
    "ssl_shutdown_timeout without ssl": (
        ((3, 11), "ssl_shutdown_timeout"),
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, ssl_shutdown_timeout=1),
        (ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ),
    "server_hostname checked before the timeouts": (
        None,
        lambda lp, o: lp.create_connection(
            Recorder, "127.0.0.1", 1, server_hostname="x", ssl_handshake_timeout=1
        ),
        (ValueError, "server_hostname is only meaningful with ssl"),
    ),
    "an SSLSocket as sock": (
        None,
        lambda lp, o: lp.create_connection(Recorder, sock=o.ssl_sock),
        (TypeError, "Socket cannot be of type SSLSocket"),
    ),
    "an SSLSocket checked before host/port": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, sock=o.ssl_sock),
        (TypeError, "Socket cannot be of type SSLSocket"),
    ),
    "host and sock": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, sock=o.stream),
        (ValueError, "host/port and sock can not be specified at the same time"),
    ),
    "port and sock": (
        None,
        lambda lp, o: lp.create_connection(Recorder, port=1, sock=o.stream),
        (ValueError, "host/port and sock can not be specified at the same time"),
    ),
    "no host, port or sock": (
        None,
        lambda lp, o: lp.create_connection(Recorder),
        (ValueError, "host and port was not specified and no sock specified"),
    ),
    "a datagram sock": (
        None,
        lambda lp, o: lp.create_connection(Recorder, sock=o.dgram),
        lambda o: (ValueError, f"A Stream Socket was expected, got {o.dgram!r}"),
    ),
    "a non-positive ssl_handshake_timeout": (
        None,
        lambda lp, o: lp.create_connection(
            Recorder, sock=o.stream, ssl=o.tls, server_hostname="x", ssl_handshake_timeout=-1
        ),
        (ValueError, "ssl_handshake_timeout should be a positive number, got -1"),
    ),
    "a non-positive ssl_shutdown_timeout": (
        ((3, 11), "ssl_shutdown_timeout"),
        lambda lp, o: lp.create_connection(
            Recorder, sock=o.stream, ssl=o.tls, server_hostname="x", ssl_shutdown_timeout=0
        ),
        (ValueError, "ssl_shutdown_timeout should be a positive number, got 0"),
    ),
    "all_errors is checked after the other arguments": (
        ((3, 12), "all_errors"),
        lambda lp, o: lp.create_connection(Recorder, all_errors=True),
        (ValueError, "host and port was not specified and no sock specified"),
    ),
    "an unknown keyword": (
        None,
        lambda lp, o: lp.create_connection(Recorder, "127.0.0.1", 1, bogus=1),
        (TypeError, "got an unexpected keyword argument 'bogus'"),
    ),
    "a failing protocol factory": (
        None,
        lambda lp, o: lp.create_connection(_failing_factory, sock=o.stream),
        (ZeroDivisionError, "factory failed"),
    ),
    "unix: ssl without server_hostname": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", ssl=o.tls),
        (ValueError, "you have to pass server_hostname when using ssl"),
    ),
    "unix: server_hostname without ssl": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", server_hostname="x"),
        (ValueError, "server_hostname is only meaningful with ssl"),
    ),
    "unix: a server_hostname that is not a str": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", server_hostname=b"x"),
        (AssertionError, ""),
    ),
    "unix: ssl_handshake_timeout without ssl": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", ssl_handshake_timeout=1),
        (ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ),
    "unix: ssl_shutdown_timeout without ssl": (
        ((3, 11), "ssl_shutdown_timeout"),
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", ssl_shutdown_timeout=1),
        (ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ),
    "unix: path and sock": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, "/nonexistent", sock=o.unix_stream),
        (ValueError, "path and sock can not be specified at the same time"),
    ),
    "unix: neither path nor sock": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder),
        (ValueError, "no path and sock were specified"),
    ),
    "unix: an inet sock": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, sock=o.stream),
        lambda o: (ValueError, f"A UNIX Domain Stream Socket was expected, got {o.stream!r}"),
    ),
    "unix: a datagram sock": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, sock=o.unix_dgram),
        lambda o: (ValueError, f"A UNIX Domain Stream Socket was expected, got {o.unix_dgram!r}"),
    ),
    "unix: a path that is not path-like": (
        None,
        lambda lp, o: lp.create_unix_connection(Recorder, 42),
        (TypeError, "expected str, bytes or os.PathLike object, not int"),
    ),
    "accepted: a datagram sock": (
        None,
        lambda lp, o: lp.connect_accepted_socket(Recorder, o.dgram),
        lambda o: (ValueError, f"A Stream Socket was expected, got {o.dgram!r}"),
    ),
    "accepted: ssl_handshake_timeout without ssl": (
        None,
        lambda lp, o: lp.connect_accepted_socket(Recorder, o.stream, ssl_handshake_timeout=1),
        (ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ),
    "accepted: ssl_shutdown_timeout without ssl": (
        ((3, 11), "ssl_shutdown_timeout"),
        lambda lp, o: lp.connect_accepted_socket(Recorder, o.stream, ssl_shutdown_timeout=1),
        (ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ),
    "accepted: an SSLSocket": (
        None,
        lambda lp, o: lp.connect_accepted_socket(Recorder, o.ssl_sock),
        (TypeError, "Socket cannot be of type SSLSocket"),
    ),
    "accepted: ssl=True has no server certificate": (
        None,
        lambda lp, o: lp.connect_accepted_socket(Recorder, o.stream, ssl=True),
        (ValueError, "Server side SSL needs a valid SSLContext"),
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_argument_errors_match_asyncio(loop, stdlib_loop, certfile, case):
    since, call, expected = VALIDATION_CASES[case]
    if expected == (AssertionError, "") and sys.flags.optimize:
        pytest.skip("asserts are off")
    objects = _Objects(certfile)
    try:
        if not callable(expected):
            expected_outcome = expected
        else:
            expected_outcome = expected(objects)
        if since is not None and PY_VERSION < since[0]:
            expected_outcome = (TypeError, f"got an unexpected keyword argument '{since[1]}'")
        with no_resource_warnings():
            got = _normalized(outcome_on(loop, lambda lp: call(lp, objects)))
            reference = _normalized(outcome_on(stdlib_loop, lambda lp: call(lp, objects)))
    finally:
        objects.close()
    assert got == expected_outcome
    assert got == reference
