"""TLS: ssl= on every connecting and serving call, loop.start_tls, streams
over TLS, and the failure modes (bad certificates, timeouts, peers that
misbehave during the handshake), pinned against the stdlib asyncio loop.

Every test runs on both loops (see conftest.py).  The certificates are made
once per module with the ``openssl`` command: a local CA, a server
certificate it signs for DNS:localhost and IP:127.0.0.1, and a client
certificate for mutual TLS.  Misbehaving peers are plain blocking sockets
served from threads, so they do exactly what the test says and nothing
else.  Where asyncio's exact outcome matters (exception type and message)
the test runs the same scenario on a stdlib loop (``stdlib_loop``) and
requires the same result, and also pins the key expectation directly.
"""

import asyncio
import contextlib
import functools
import gc
import hashlib
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref

import pytest
from counting_socket import CountingSocket

PY_VERSION = sys.version_info[:2]
TIMEOUT = 10  # seconds any single scenario may take
needs_shutdown_timeout = pytest.mark.skipif(
    PY_VERSION < (3, 11), reason="ssl_shutdown_timeout is 3.11+"
)
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
LINGER_ZERO = struct.pack("ii", 1, 0)


# ---- certificates ----------------------------------------------------------------

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


class PKI:
    def __init__(self, directory):
        self.dir = directory
        self.config = os.path.join(directory, "openssl.cnf")
        with open(self.config, "w") as f:
            f.write(OPENSSL_CONFIG)
        self.ca_cert, self.ca_key = self._path("ca")
        self._openssl(
            "req", "-x509", "-new", *self._new_key(self.ca_key), "-out", self.ca_cert,
            "-days", "2", "-subj", "/CN=ferroloop test CA", "-extensions", "v3_ca",
        )  # fmt: skip
        self.server_cert, self.server_key = self._issue("server", "/CN=localhost", "v3_server", 2)
        self.client_cert, self.client_key = self._issue("client", "/CN=client", "v3_client", 3)

    def _path(self, name):
        return os.path.join(self.dir, f"{name}.pem"), os.path.join(self.dir, f"{name}.key")

    @staticmethod
    def _new_key(key_path):
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key_path]  # fmt: skip

    def _openssl(self, *args):
        args = list(args)
        if args[0] == "req":
            args += ["-config", self.config]
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.dir)

    def _issue(self, name, subject, extensions, serial):
        cert, key = self._path(name)
        csr = os.path.join(self.dir, f"{name}.csr")
        self._openssl("req", "-new", *self._new_key(key), "-out", csr, "-subj", subject)
        self._openssl(
            "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
            "-set_serial", str(serial), "-days", "2", "-out", cert,
            "-extfile", self.config, "-extensions", extensions,
        )  # fmt: skip
        return cert, key


@pytest.fixture(scope="module")
def pki():
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    directory = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        yield PKI(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def server_ctx(pki):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


@pytest.fixture
def client_ctx(pki):
    return ssl.create_default_context(cafile=pki.ca_cert)


@pytest.fixture
def mtls_server_ctx(server_ctx, pki):
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(pki.ca_cert)
    return server_ctx


@pytest.fixture
def client_cert_ctx(client_ctx, pki):
    client_ctx.load_cert_chain(pki.client_cert, pki.client_key)
    return client_ctx


@pytest.fixture
def sock_dir():
    # Short: AF_UNIX paths are limited to 107 bytes.
    path = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- helpers -------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records the protocol callbacks and the data received."""

    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.changed = asyncio.Event()
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append("connection_made")
        self.transport = transport
        self.made.set_result(transport)

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
        self.lost.set_result(exc)

    async def wait_for_data(self, size):
        while len(self.data) < size:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), TIMEOUT)
        return bytes(self.data)


class Echo(Recorder):
    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        # 3.10's SSL transport only counts as closed once the application
        # has closed it, and warns about itself otherwise.
        self.transport.close()


class Servers:
    """A protocol factory that keeps every protocol it made."""

    def __init__(self, protocol=Echo):
        self.protocol = protocol
        self.made = []

    def __call__(self):
        protocol = self.protocol()
        self.made.append(protocol)
        return protocol

    async def first(self):
        while not self.made:
            await asyncio.sleep(0.005)
        return await asyncio.wait_for(self.made[0].made, TIMEOUT)


async def echo_roundtrip(transport, protocol, payload=b"ping"):
    transport.write(payload)
    return await protocol.wait_for_data(len(payload))


async def close_transport(transport, protocol):
    transport.close()
    return await asyncio.wait_for(protocol.lost, TIMEOUT)


async def in_thread(func, *args):
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def run_on(lp, coro, timeout=TIMEOUT):
    return lp.run_until_complete(asyncio.wait_for(coro, timeout))


def outcome(exc):
    return type(exc), str(exc)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def no_leaks():
    """No file descriptor left open and no ResourceWarning (an unclosed
    transport, socket or loop) once the block is done."""
    gc.collect()
    before = fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked
    assert fd_count() == before


def settle(lp, rounds=5):
    """Let callbacks scheduled by closes and aborts run."""
    for _ in range(rounds):
        run_on(lp, asyncio.sleep(0))


def collect_exceptions(lp):
    """Route the loop's exception handler into a list of
    (message, exception type, str(exception))."""
    seen = []
    lp.set_exception_handler(
        lambda _, ctx: seen.append(
            (ctx["message"], type(ctx.get("exception")), str(ctx.get("exception")))
        )
    )
    return seen


class ThreadPeer:
    """Runs ``handler(conn, peer)`` in a thread for the first connection
    accepted on a fresh listener at 127.0.0.1. ``result`` is what the
    handler returned (or raised); ``release`` is set when the peer closes,
    for handlers that wait."""

    def __init__(self, handler):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.address = self.listener.getsockname()
        self.handler = handler
        self.conn = None
        self.result = None
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.conn, _ = self.listener.accept()
            self.conn.settimeout(TIMEOUT)
            self.result = self.handler(self.conn, self)
        except Exception as exc:
            self.result = exc

    def close(self):
        self.release.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        self.listener.close()
        if self.conn is not None:
            self.conn.close()


@contextlib.contextmanager
def thread_peer(handler):
    peer = ThreadPeer(handler)
    try:
        yield peer
    finally:
        peer.close()


def read_until_eof(sock, limit=1 << 20):
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            break
        data += chunk
    return data


def client_hello(server_hostname="localhost"):
    """The bytes a TLS client sends first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


# ---- connecting and serving over TLS ---------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_create_server_and_create_connection(run, server_ctx, client_ctx, host):
    async def main():
        loop = asyncio.get_running_loop()
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, protocol = await loop.create_connection(
            Recorder, host, port, ssl=client_ctx, family=socket.AF_INET
        )
        # The stdlib's SSL layer is what the application sees, on both loops.
        assert type(transport) is asyncio.sslproto._SSLProtocolTransport
        assert isinstance(transport, asyncio.Transport)
        assert protocol.events == ["connection_made"]
        payload = bytes(range(256)) * 400
        assert await echo_roundtrip(transport, protocol, payload) == payload

        # Client side extra info.
        assert transport.get_extra_info("sslcontext") is client_ctx
        ssl_object = transport.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert not ssl_object.server_side
        assert ssl_object.server_hostname == host
        assert ssl_object.version() == "TLSv1.3"
        peercert = transport.get_extra_info("peercert")
        assert peercert == ssl_object.getpeercert()
        assert peercert["subject"] == ((("commonName", "localhost"),),)
        assert peercert["issuer"] == ((("commonName", "ferroloop test CA"),),)
        assert peercert["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
        cipher = transport.get_extra_info("cipher")
        assert cipher == ssl_object.cipher() and len(cipher) == 3
        assert cipher[1] == "TLSv1.3"
        assert transport.get_extra_info("compression") is None
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        assert transport.get_extra_info("sockname") == sock.getsockname()
        assert transport.get_extra_info("nonexistent", "default") == "default"

        # Server side.
        server_transport = await servers.first()
        assert type(server_transport) is asyncio.sslproto._SSLProtocolTransport
        assert server_transport.get_extra_info("sslcontext") is server_ctx
        server_object = server_transport.get_extra_info("ssl_object")
        assert server_object.server_side
        assert server_transport.get_extra_info("peercert") is None  # no client certificate
        assert server_transport.get_extra_info("cipher") == cipher
        assert server_transport.get_extra_info("peername") == sock.getsockname()
        assert server_transport.get_extra_info("sockname") == ("127.0.0.1", port)

        assert await close_transport(transport, protocol) is None
        assert await asyncio.wait_for(servers.made[0].lost, TIMEOUT) is None
        if PY_VERSION >= (3, 11):
            # The client's close_notify reaches the server as EOF; the
            # server's close_notify in answer ends the client's shutdown, so
            # the client hears EOF too.
            expected = ["connection_made", "data_received", "eof_received", "connection_lost"]
            assert servers.made[0].events == expected
            assert protocol.events == expected
        else:
            # 3.10's SSL layer reports no EOF for a close_notify (only, maybe,
            # the TCP FIN behind it, depending on timing).
            for events in (servers.made[0].events, protocol.events):
                assert events[:2] == ["connection_made", "data_received"]
                assert events[-1] == "connection_lost"
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_write_eof_is_not_supported_over_tls(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Servers(), "127.0.0.1", 0, ssl=server_ctx)
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", server.sockets[0].getsockname()[1], ssl=client_ctx
        )
        assert not transport.can_write_eof()
        with pytest.raises(NotImplementedError):
            transport.write_eof()
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())


def test_unix_server_and_connection(run, server_ctx, client_ctx, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        path = os.path.join(sock_dir, "tls.sock")
        servers = Servers()
        server = await loop.create_unix_server(servers, path, ssl=server_ctx)
        with pytest.raises(ValueError) as info:
            await loop.create_unix_connection(Recorder, path, ssl=client_ctx)
        assert str(info.value) == "you have to pass server_hostname when using ssl"
        transport, protocol = await loop.create_unix_connection(
            Recorder, path, ssl=client_ctx, server_hostname="localhost"
        )
        assert await echo_roundtrip(transport, protocol, b"unix" * 10000) == b"unix" * 10000
        assert transport.get_extra_info("ssl_object").server_hostname == "localhost"
        assert transport.get_extra_info("peername") == path
        assert transport.get_extra_info("socket").family == socket.AF_UNIX
        server_transport = await servers.first()
        assert server_transport.get_extra_info("ssl_object").server_side
        assert server_transport.get_extra_info("sockname") == path
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_unix_connection_with_wrong_server_hostname(loop, stdlib_loop, server_ctx, client_ctx,
                                                    sock_dir):  # fmt: skip
    def scenario(lp, name):
        path = os.path.join(sock_dir, name)

        async def main():
            server = await lp.create_unix_server(Servers(), path, ssl=server_ctx)
            try:
                await lp.create_unix_connection(
                    Recorder, path, ssl=client_ctx, server_hostname="wrong.example"
                )
            except ssl.SSLCertVerificationError as exc:
                return outcome(exc), exc.verify_code, exc.verify_message
            finally:
                server.close()
                await server.wait_closed()

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop, "ours.sock")
        settle(loop)
    assert got[0][0] is ssl.SSLCertVerificationError
    assert "Hostname mismatch, certificate is not valid for 'wrong.example'" in got[0][1]
    assert got[1:] == (62, "Hostname mismatch, certificate is not valid for 'wrong.example'.")
    assert got == scenario(stdlib_loop, "theirs.sock")


def test_connect_accepted_socket_as_the_tls_server(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        with listener:
            connecting = asyncio.ensure_future(
                loop.create_connection(
                    Recorder, "127.0.0.1", listener.getsockname()[1],
                    ssl=client_ctx, server_hostname="localhost",
                )
            )  # fmt: skip
            conn, _ = await loop.sock_accept(listener)
            accepted = asyncio.ensure_future(
                loop.connect_accepted_socket(Echo, conn, ssl=server_ctx)
            )
            (transport, protocol), (server_transport, server_protocol) = await asyncio.gather(
                connecting, accepted
            )
        ssl_object = server_transport.get_extra_info("ssl_object")
        assert ssl_object.server_side
        assert server_transport.get_extra_info("sslcontext") is server_ctx
        assert server_transport.get_extra_info("peername") == transport.get_extra_info(
            "sockname"
        )
        assert server_transport.get_extra_info("socket").fileno() == conn.fileno()
        assert await echo_roundtrip(transport, protocol, b"accepted") == b"accepted"
        await close_transport(transport, protocol)
        assert await asyncio.wait_for(server_protocol.lost, TIMEOUT) is None
        assert conn.fileno() == -1

    with no_leaks():
        run(main())


def test_tls_over_socket_subclasses_calls_their_methods(loop, stdlib_loop, server_ctx,
                                                       client_ctx):  # fmt: skip
    """Socket subclasses given with sock= carry TLS on both sides through
    their own methods, as on asyncio; the echo is intact."""
    payload = random.Random(5).randbytes(300_000)

    async def scenario():
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = CountingSocket()
            client.connect(listener.getsockname())
            conn, _ = listener.accept()
        server = CountingSocket(fileno=conn.detach())
        (transport, protocol), (_, server_protocol) = await asyncio.gather(
            loop.create_connection(
                Recorder, sock=client, ssl=client_ctx, server_hostname="localhost"
            ),
            loop.connect_accepted_socket(Echo, server, ssl=server_ctx),
        )
        assert await echo_roundtrip(transport, protocol, payload) == payload
        assert await close_transport(transport, protocol) is None
        assert await asyncio.wait_for(server_protocol.lost, TIMEOUT) is None
        return sorted(client.calls), sorted(server.calls)

    with no_leaks():
        expected = run_on(stdlib_loop, scenario())
        assert all("send" in calls for calls in expected)
        assert run_on(loop, scenario()) == expected


@pytest.mark.skipif(PY_VERSION < (3, 12), reason="3.12+ refuses a socket a transport uses")
def test_a_socket_in_use_by_a_transport_is_refused(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            client = socket.create_connection(listener.getsockname())
            conn, _ = listener.accept()
        with client:
            plain, protocol = await loop.connect_accepted_socket(Recorder, conn)
            made = []
            with pytest.raises(RuntimeError) as info:
                await loop.connect_accepted_socket(
                    lambda: made.append(1) or Echo(), conn, ssl=server_ctx
                )
            assert str(info.value) == f"File descriptor {conn!r} is used by transport {plain!r}"
            assert made == [1]
            # The plain transport is untouched and still works.
            assert plain.get_protocol() is protocol and not plain.is_closing()
            client.sendall(b"plain")
            assert await protocol.wait_for_data(5) == b"plain"
            await close_transport(plain, protocol)

    with no_leaks():
        run(main())


@pytest.mark.parametrize("server_hostname", ["wrong.example", "127.0.0.2"])
def test_wrong_server_hostname(loop, stdlib_loop, server_ctx, client_ctx, server_hostname):
    def scenario(lp):
        async def main():
            servers = Servers()
            server = await lp.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
            try:
                await lp.create_connection(
                    Recorder, *server.sockets[0].getsockname(), ssl=client_ctx,
                    server_hostname=server_hostname,
                )  # fmt: skip
            except ssl.SSLCertVerificationError as exc:
                result = outcome(exc), exc.verify_code, exc.verify_message
            else:
                raise AssertionError("connected despite the wrong host name")
            # The server never handed the connection to its protocol.
            await asyncio.sleep(0.05)
            assert all(p.events == [] for p in servers.made)
            server.close()
            await server.wait_closed()
            return result

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    (exc_type, message), code, reason = got
    assert exc_type is ssl.SSLCertVerificationError
    assert message.startswith("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ")
    kind = "IP address" if server_hostname[0].isdigit() else "Hostname"
    assert f"{kind} mismatch, certificate is not valid for '{server_hostname}'" in message
    assert code == (64 if kind == "IP address" else 62)
    assert reason == f"{kind} mismatch, certificate is not valid for '{server_hostname}'."
    assert got == scenario(stdlib_loop)


def test_untrusted_certificate_with_the_default_context(loop, stdlib_loop, server_ctx):
    def scenario(lp):
        async def main():
            server = await lp.create_server(Servers(), "127.0.0.1", 0, ssl=server_ctx)
            try:
                # ssl=True: a default context, which does not know our CA.
                await lp.create_connection(
                    Recorder, *server.sockets[0].getsockname(), ssl=True,
                    server_hostname="localhost",
                )  # fmt: skip
            except ssl.SSLCertVerificationError as exc:
                return outcome(exc), exc.verify_message
            finally:
                server.close()
                await server.wait_closed()

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    assert got[0][0] is ssl.SSLCertVerificationError
    assert got[1] == "unable to get local issuer certificate"
    assert got == scenario(stdlib_loop)


@pytest.mark.parametrize("trusted", [True, False])
def test_empty_server_hostname_turns_off_only_the_name_check(loop, stdlib_loop, client_ctx,
                                                             server_ctx, trusted):  # fmt: skip
    """server_hostname='' sends no name and skips host name matching (as
    asyncio documents), even with a context whose check_hostname is on; the
    certificate chain is still verified."""

    def scenario(lp):
        async def main():
            server = await lp.create_server(Servers(), "127.0.0.1", 0, ssl=server_ctx)
            try:
                transport, protocol = await lp.create_connection(
                    Recorder, *server.sockets[0].getsockname(),
                    ssl=client_ctx if trusted else True, server_hostname="",
                )  # fmt: skip
            except Exception as exc:
                return outcome(exc)
            finally:
                server.close()
            ssl_object = transport.get_extra_info("ssl_object")
            result = (
                ssl_object.server_hostname,
                ssl_object.context.check_hostname,
                transport.get_extra_info("peercert")["subject"],
                await echo_roundtrip(transport, protocol),
            )
            await close_transport(transport, protocol)
            await server.wait_closed()
            return result

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    if trusted:
        assert got == (None, True, ((("commonName", "localhost"),),), b"ping")
    else:
        assert got[0] is ssl.SSLCertVerificationError
        assert "unable to get local issuer certificate" in got[1]
    assert got == scenario(stdlib_loop)


# ---- mutual TLS ------------------------------------------------------------------------


def test_mutual_tls_with_a_client_certificate(run, mtls_server_ctx, client_cert_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=mtls_server_ctx)
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", server.sockets[0].getsockname()[1], ssl=client_cert_ctx
        )
        assert await echo_roundtrip(transport, protocol, b"mutual") == b"mutual"
        server_transport = await servers.first()
        peercert = server_transport.get_extra_info("peercert")
        assert peercert["subject"] == ((("commonName", "client"),),)
        assert peercert["issuer"] == ((("commonName", "ferroloop test CA"),),)
        assert transport.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


@pytest.mark.parametrize("tls_version", ["TLSv1_2", "TLSv1_3"])
def test_mutual_tls_without_a_client_certificate(loop, stdlib_loop, mtls_server_ctx, client_ctx,
                                                 tls_version):  # fmt: skip
    """The server's handshake fails with the reason.  asyncio's SSL layer
    drops the connection without flushing its alert, so the client sees the
    connection end: with TLS 1.2 inside its handshake (ConnectionResetError),
    with TLS 1.3 after it (the client's handshake is done before the server
    checks), as a plain EOF on a connection already made."""
    client_ctx.maximum_version = getattr(ssl.TLSVersion, tls_version)

    def scenario(lp):
        async def main():
            listener = socket.create_server(("127.0.0.1", 0))
            listener.setblocking(False)
            with listener:
                connecting = asyncio.ensure_future(
                    lp.create_connection(
                        Recorder, *listener.getsockname(), ssl=client_ctx,
                        server_hostname="localhost",
                    )
                )  # fmt: skip
                conn, _ = await lp.sock_accept(listener)
                server_side, client_side = await asyncio.gather(
                    lp.connect_accepted_socket(Echo, conn, ssl=mtls_server_ctx),
                    connecting,
                    return_exceptions=True,
                )
            assert isinstance(server_side, ssl.SSLError)
            server_result = outcome(server_side), server_side.reason
            if isinstance(client_side, Exception):
                return server_result, ("raised",) + outcome(client_side)
            transport, protocol = client_side
            exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            transport.close()  # 3.10 warns about an SSL transport never closed
            return server_result, ("lost", protocol.events) + outcome(exc)

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    (server_outcome, server_reason), client = got
    assert server_outcome[0] is ssl.SSLError
    assert server_reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    if tls_version == "TLSv1_2":
        assert client == ("raised", ConnectionResetError, "")
    else:
        assert client == (
            "lost", ["connection_made", "eof_received", "connection_lost"], type(None), "None"
        )
    assert got == scenario(stdlib_loop)


def test_mutual_tls_refusal_reported_by_a_debug_server(loop, stdlib_loop, mtls_server_ctx,
                                                       client_ctx):  # fmt: skip
    """create_server's own accept path: in debug mode a failed handshake is
    reported to the exception handler, and the server keeps serving."""
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def scenario(lp):
        seen = collect_exceptions(lp)
        lp.set_debug(True)
        # Debug mode's slow-callback warnings are not what this is about.
        lp.slow_callback_duration = 60

        async def main():
            servers = Servers()
            server = await lp.create_server(servers, "127.0.0.1", 0, ssl=mtls_server_ctx)
            try:
                await lp.create_connection(
                    Recorder, *server.sockets[0].getsockname(), ssl=client_ctx,
                    server_hostname="localhost",
                )  # fmt: skip
            except Exception as exc:
                client = outcome(exc)
            deadline = time.monotonic() + TIMEOUT
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert all(p.events == [] for p in servers.made)
            assert server.is_serving()
            server.close()
            await server.wait_closed()
            return client, [(m, t, s.split(" (_ssl.c")[0]) for m, t, s in seen]

        try:
            return run_on(lp, main())
        finally:
            lp.set_debug(False)

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    client, seen = got
    assert client == (ConnectionResetError, "")
    assert seen == [(
        "Error on transport creation for incoming connection",
        ssl.SSLError,
        "[SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE] peer did not return a certificate",
    )]  # fmt: skip
    assert got == scenario(stdlib_loop)


# ---- ALPN and SNI ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_protocols, client_protocols, expected",
    [
        (["h2", "http/1.1"], ["http/1.1", "spdy/3"], "http/1.1"),
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2"], ["http/1.1"], None),
        (None, ["h2"], None),
    ],
)
def test_alpn(run, server_ctx, client_ctx, server_protocols, client_protocols, expected):
    async def main():
        loop = asyncio.get_running_loop()
        if server_protocols:
            server_ctx.set_alpn_protocols(server_protocols)
        client_ctx.set_alpn_protocols(client_protocols)
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", server.sockets[0].getsockname()[1], ssl=client_ctx
        )
        server_transport = await servers.first()
        assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == expected
        assert server_transport.get_extra_info("ssl_object").selected_alpn_protocol() == expected
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.parametrize("host, expected", [("localhost", "localhost"), ("127.0.0.1", None)])
def test_sni_callback_sees_the_server_name(run, server_ctx, client_ctx, host, expected):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        def sni_callback(ssl_object, server_name, context):
            seen.append((type(ssl_object), server_name, context is server_ctx,
                         ssl_object.server_side))  # fmt: skip

        server_ctx.sni_callback = sni_callback
        server = await loop.create_server(Servers(), "127.0.0.1", 0, ssl=server_ctx)
        transport, protocol = await loop.create_connection(
            Recorder, host, server.sockets[0].getsockname()[1], ssl=client_ctx,
            family=socket.AF_INET,
        )  # fmt: skip
        assert seen == [(ssl.SSLObject, expected, True, True)]
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())


def test_sni_callback_can_switch_the_context(run, pki, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        # The listening context has no certificate at all; the callback
        # hands the connection to one that has.
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

        def sni_callback(ssl_object, server_name, context):
            assert context is bare
            ssl_object.context = server_ctx

        bare.sni_callback = sni_callback
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=bare)
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", server.sockets[0].getsockname()[1], ssl=client_ctx
        )
        assert await echo_roundtrip(transport, protocol, b"switched") == b"switched"
        # sslcontext is what the server was created with.
        assert (await servers.first()).get_extra_info("sslcontext") is bare
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())


def test_sni_callback_refusing_the_name(loop, stdlib_loop, pki, client_ctx):
    def scenario(lp):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        ctx.sni_callback = lambda obj, name, context: ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

        async def main():
            server = await lp.create_server(Servers(), "127.0.0.1", 0, ssl=ctx)
            try:
                await lp.create_connection(
                    Recorder, "localhost", server.sockets[0].getsockname()[1], ssl=client_ctx
                )
            except Exception as exc:
                return outcome(exc)
            finally:
                server.close()
                await server.wait_closed()

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    # The refusal ends the server's handshake; the alert is not flushed (as
    # with every failed server handshake in asyncio's SSL layer).
    assert got == (ConnectionResetError, "")
    assert got == scenario(stdlib_loop)


# ---- start_tls ---------------------------------------------------------------------------


class StartTLSServer(asyncio.Protocol):
    """Plain text until the client sends STARTTLS; then a TLS echo."""

    def __init__(self, context):
        self.context = context
        self.transport = None
        self.tls_transport = None
        self.data = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.made_calls = 0

    def connection_made(self, transport):
        self.made_calls += 1
        self.transport = transport

    def data_received(self, data):
        if self.tls_transport is not None:
            self.data += data
            self.tls_transport.write(data)
            return
        assert data == b"STARTTLS\r\n"
        self.transport.write(b"GO AHEAD\r\n")
        asyncio.ensure_future(self._upgrade())

    async def _upgrade(self):
        loop = asyncio.get_running_loop()
        try:
            self.tls_transport = await loop.start_tls(
                self.transport, self, self.context, server_side=True
            )
        except Exception as exc:
            self.upgraded.set_exception(exc)
        else:
            self.upgraded.set_result(self.tls_transport)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)
        if self.tls_transport is not None:
            self.tls_transport.close()  # for 3.10, as Echo does


def test_start_tls_on_both_sides(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        servers = []

        def factory():
            servers.append(StartTLSServer(server_ctx))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        transport, protocol = await loop.create_connection(
            Recorder, *server.sockets[0].getsockname()
        )
        transport.write(b"STARTTLS\r\n")
        assert await protocol.wait_for_data(10) == b"GO AHEAD\r\n"
        protocol.data.clear()
        tls_transport = await loop.start_tls(
            transport, protocol, client_ctx, server_hostname="localhost"
        )
        assert type(tls_transport) is asyncio.sslproto._SSLProtocolTransport
        server_tls = await asyncio.wait_for(servers[0].upgraded, TIMEOUT)
        # connection_made is not called again for the upgraded transport.
        assert protocol.events == ["connection_made", "data_received"]
        assert servers[0].made_calls == 1
        # The plain transports now carry TLS records for the SSL layer.
        assert transport.get_protocol() is not protocol
        assert isinstance(transport.get_protocol(), asyncio.sslproto.SSLProtocol)
        assert tls_transport.get_protocol() is protocol
        assert not transport.is_closing()

        client_object = tls_transport.get_extra_info("ssl_object")
        assert not client_object.server_side and client_object.server_hostname == "localhost"
        assert tls_transport.get_extra_info("sslcontext") is client_ctx
        assert tls_transport.get_extra_info("peercert")["subject"] == (
            (("commonName", "localhost"),),
        )
        assert tls_transport.get_extra_info("peername") == transport.get_extra_info("peername")
        assert tls_transport.get_extra_info("socket") is not None
        server_object = server_tls.get_extra_info("ssl_object")
        assert server_object.server_side
        assert server_tls.get_extra_info("cipher") == tls_transport.get_extra_info("cipher")

        payload = os.urandom(300_000)
        assert await echo_roundtrip(tls_transport, protocol, payload) == payload
        assert bytes(servers[0].data) == payload
        tls_transport.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert transport.is_closing()
        assert await asyncio.wait_for(servers[0].lost, TIMEOUT) is None
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_start_tls_data_sent_right_after_the_handshake_is_not_lost(run, server_ctx, client_ctx):
    """The server writes over TLS the moment its handshake is done, before
    the client's start_tls() has returned."""

    class Greeter(StartTLSServer):
        async def _upgrade(self):
            await super()._upgrade()
            self.tls_transport.write(b"welcome over TLS")

    async def main():
        loop = asyncio.get_running_loop()
        servers = []

        def factory():
            servers.append(Greeter(server_ctx))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        transport, protocol = await loop.create_connection(
            Recorder, *server.sockets[0].getsockname()
        )
        transport.write(b"STARTTLS\r\n")
        await protocol.wait_for_data(10)
        protocol.data.clear()
        tls_transport = await loop.start_tls(
            transport, protocol, client_ctx, server_hostname="localhost"
        )
        assert await protocol.wait_for_data(16) == b"welcome over TLS"
        await close_transport(tls_transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())


@pytest.mark.skipif(PY_VERSION < (3, 11), reason="StreamWriter.start_tls is 3.11+")
def test_start_tls_with_streams(run, server_ctx, client_ctx):
    async def main():
        async def handle(reader, writer):
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"GO\r\n")
            await writer.drain()
            # The server side: the stream knows it was accepted.
            await writer.start_tls(server_ctx)
            assert writer.get_extra_info("ssl_object").server_side
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"GO\r\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        ssl_object = writer.get_extra_info("ssl_object")
        assert not ssl_object.server_side and ssl_object.server_hostname == "localhost"
        writer.write(b"hello tls\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"HELLO TLS\n"
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_start_tls_handshake_failure_closes_the_transport(loop, stdlib_loop, server_ctx,
                                                          client_ctx):  # fmt: skip
    def scenario(lp):
        async def main():
            servers = []

            def factory():
                servers.append(StartTLSServer(server_ctx))
                return servers[-1]

            server = await lp.create_server(factory, "127.0.0.1", 0)
            transport, protocol = await lp.create_connection(
                Recorder, *server.sockets[0].getsockname()
            )
            transport.write(b"STARTTLS\r\n")
            await protocol.wait_for_data(10)
            try:
                await lp.start_tls(transport, protocol, client_ctx, server_hostname="wrong.example")
            except ssl.SSLCertVerificationError as exc:
                result = outcome(exc)
            assert transport.is_closing()
            # The server's start_tls fails as the client goes away.
            try:
                await asyncio.wait_for(servers[0].upgraded, TIMEOUT)
            except Exception as exc:
                server_result = outcome(exc)
            await asyncio.sleep(0.05)
            lost = servers[0].lost.done() and outcome(servers[0].lost.result())
            server.close()
            await server.wait_closed()
            return result, server_result, lost

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    assert got[0][0] is ssl.SSLCertVerificationError
    assert got[1] == (ConnectionResetError, "")
    # 3.11+ tell the protocol that start_tls was given that its connection
    # is lost (with the handshake's error); 3.10's SSL layer does not, as
    # the session never started.
    if PY_VERSION >= (3, 11):
        assert got[2] == (ConnectionResetError, "")
    else:
        assert got[2] is False
    assert got == scenario(stdlib_loop)


def test_start_tls_argument_errors(run, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            transport, protocol = await loop.create_connection(
                Recorder, *listener.getsockname()
            )
            for bad in (None, True, "context", object()):
                with pytest.raises(TypeError) as info:
                    await loop.start_tls(transport, protocol, bad)
                assert str(info.value) == (
                    f"sslcontext is expected to be an instance of ssl.SSLContext, got {bad!r}"
                )
            dgram, dprotocol = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            with pytest.raises(TypeError) as info:
                await loop.start_tls(dgram, dprotocol, client_ctx)
            assert str(info.value) == f"transport {dgram!r} is not supported by start_tls()"
            dgram.close()
            # Nothing happened to the plain transport.
            assert not transport.is_closing()
            assert transport.get_protocol() is protocol
            await close_transport(transport, protocol)
            await asyncio.sleep(0)

    with no_leaks():
        run(main())


# ---- timeouts ------------------------------------------------------------------------------


def test_client_handshake_timeout(loop, stdlib_loop, client_ctx):
    """A server that accepts and never speaks."""

    def scenario(lp):
        with thread_peer(lambda conn, peer: peer.release.wait(TIMEOUT)) as silent:
            started = time.monotonic()
            try:
                run_on(lp, lp.create_connection(
                    Recorder, *silent.address, ssl=client_ctx, server_hostname="localhost",
                    ssl_handshake_timeout=0.3,
                ))  # fmt: skip
            except Exception as exc:
                got = outcome(exc)
            elapsed = time.monotonic() - started
            settle(lp)
        return got, elapsed

    with no_leaks():
        got, elapsed = scenario(loop)
    assert got == (
        ConnectionAbortedError,
        "SSL handshake is taking longer than 0.3 seconds: aborting the connection",
    )
    assert 0.25 <= elapsed < 3
    assert got == scenario(stdlib_loop)[0]


def test_server_handshake_timeout(loop, stdlib_loop, server_ctx):
    """A client that connects and never speaks is dropped after
    ssl_handshake_timeout; in debug mode the exception handler hears why."""

    def scenario(lp):
        seen = collect_exceptions(lp)
        lp.set_debug(True)
        lp.slow_callback_duration = 60

        async def main():
            servers = Servers()
            server = await lp.create_server(
                servers, "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=0.3
            )
            client = socket.create_connection(server.sockets[0].getsockname())
            with client:
                client.settimeout(TIMEOUT)
                started = time.monotonic()
                data = await in_thread(read_until_eof, client)
                elapsed = time.monotonic() - started
            deadline = time.monotonic() + TIMEOUT
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert all(p.events == [] for p in servers.made)
            server.close()
            await server.wait_closed()
            return data, elapsed

        try:
            data, elapsed = run_on(lp, main())
        finally:
            lp.set_debug(False)
        return data, seen, elapsed

    with no_leaks():
        data, seen, elapsed = scenario(loop)
        settle(loop)
    assert data == b""
    assert seen == [(
        "Error on transport creation for incoming connection",
        ConnectionAbortedError,
        "SSL handshake is taking longer than 0.3 seconds: aborting the connection",
    )]  # fmt: skip
    assert 0.25 <= elapsed < 3
    assert scenario(stdlib_loop)[:2] == (data, seen)


@needs_shutdown_timeout
def test_shutdown_timeout(loop, stdlib_loop, server_ctx, client_ctx):
    """A TLS peer that never answers close_notify (and never closes): the
    connection is dropped after ssl_shutdown_timeout and the protocol's
    connection_lost gets asyncio's TimeoutError."""

    def handler(conn, peer):
        tls = server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hello")
        peer.release.wait(TIMEOUT)  # neither reads nor closes
        return tls

    def scenario(lp):
        with thread_peer(handler) as stubborn:
            async def main():
                transport, protocol = await lp.create_connection(
                    Recorder, *stubborn.address, ssl=client_ctx, server_hostname="localhost",
                    ssl_shutdown_timeout=0.3,
                )  # fmt: skip
                await protocol.wait_for_data(5)
                started = time.monotonic()
                transport.close()
                exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
                return outcome(exc), protocol.events, time.monotonic() - started

            got = run_on(lp, main())
            settle(lp)
            stubborn.release.set()
            stubborn.thread.join(TIMEOUT)
            stubborn.result.close()
        return got

    with no_leaks():
        got = scenario(loop)
    (exc, events, elapsed) = got
    assert exc == (asyncio.TimeoutError, "SSL shutdown timed out")
    assert events == ["connection_made", "data_received", "connection_lost"]
    assert 0.25 <= elapsed < 3
    assert scenario(stdlib_loop)[:2] == got[:2]


def _silent_unix_peer(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    return listener


@pytest.mark.parametrize(
    "entry", ["create_unix_connection", "connect_accepted_socket", "create_unix_server"]
)
def test_handshake_timeout_reaches_every_entry_point(loop, stdlib_loop, server_ctx, client_ctx,
                                                     sock_dir, entry):  # fmt: skip
    """ssl_handshake_timeout is honoured wherever it can be given: a peer
    that never speaks is dropped after 0.3 s, not after the default 60."""

    def scenario(lp, name):
        path = os.path.join(sock_dir, name)

        async def main():
            started = time.monotonic()
            if entry == "create_unix_connection":
                with _silent_unix_peer(path):
                    try:
                        await lp.create_unix_connection(
                            Recorder, path, ssl=client_ctx, server_hostname="localhost",
                            ssl_handshake_timeout=0.3,
                        )  # fmt: skip
                    except Exception as exc:
                        result = outcome(exc)
            elif entry == "connect_accepted_socket":
                a, b = socket.socketpair()
                with b:
                    try:
                        await lp.connect_accepted_socket(
                            Echo, a, ssl=server_ctx, ssl_handshake_timeout=0.3
                        )
                    except Exception as exc:
                        result = outcome(exc)
                    assert a.fileno() == -1
            else:
                servers = Servers()
                server = await lp.create_unix_server(
                    servers, path, ssl=server_ctx, ssl_handshake_timeout=0.3
                )
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with client:
                    client.settimeout(TIMEOUT)
                    client.connect(path)
                    result = await in_thread(read_until_eof, client)
                assert all(p.events == [] for p in servers.made)
                server.close()
                await server.wait_closed()
            return result, time.monotonic() - started

        got = run_on(lp, main())
        settle(lp)
        return got

    with no_leaks():
        got, elapsed = scenario(loop, "ours.sock")
    if entry == "create_unix_server":
        assert got == b""
    else:
        assert got == (
            ConnectionAbortedError,
            "SSL handshake is taking longer than 0.3 seconds: aborting the connection",
        )
    assert 0.25 <= elapsed < 3
    assert scenario(stdlib_loop, "theirs.sock")[0] == got


@needs_shutdown_timeout
@pytest.mark.parametrize("entry", ["create_server", "connect_accepted_socket",
                                   "create_unix_connection"])  # fmt: skip
def test_shutdown_timeout_reaches_every_entry_point(loop, stdlib_loop, server_ctx, client_ctx,
                                                    sock_dir, entry):  # fmt: skip
    """ssl_shutdown_timeout is honoured on the server side and over Unix
    sockets too: a peer that completes the handshake and then never answers
    close_notify (nor closes) is dropped after 0.3 s with asyncio's
    TimeoutError."""

    def scenario(lp, name):
        release = threading.Event()
        held = []

        def stubborn(sock, **wrap):
            """Handshake, then neither read nor close until released."""
            sock.settimeout(TIMEOUT)
            context = server_ctx if wrap.get("server_side") else client_ctx
            held.append(context.wrap_socket(sock, **wrap))
            release.wait(TIMEOUT)

        async def main():
            loop = asyncio.get_running_loop()
            listener = None
            if entry == "create_server":
                servers = Servers(Recorder)
                listener = await lp.create_server(
                    servers, "127.0.0.1", 0, ssl=server_ctx, ssl_shutdown_timeout=0.3
                )
                peer = socket.create_connection(listener.sockets[0].getsockname())
                peer_done = loop.run_in_executor(
                    None, lambda: stubborn(peer, server_hostname="localhost")
                )
                transport = await servers.first()
                protocol = servers.made[0]
            elif entry == "connect_accepted_socket":
                conn, peer = socket.socketpair()
                peer_done = loop.run_in_executor(
                    None, lambda: stubborn(peer, server_hostname="localhost")
                )
                transport, protocol = await lp.connect_accepted_socket(
                    Recorder, conn, ssl=server_ctx, ssl_shutdown_timeout=0.3
                )
            else:
                path = os.path.join(sock_dir, name)
                unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with unix_listener:
                    unix_listener.bind(path)
                    unix_listener.listen()
                    unix_listener.settimeout(TIMEOUT)
                    peer_done = loop.run_in_executor(
                        None, lambda: stubborn(unix_listener.accept()[0], server_side=True)
                    )
                    transport, protocol = await lp.create_unix_connection(
                        Recorder, path, ssl=client_ctx, server_hostname="localhost",
                        ssl_shutdown_timeout=0.3,
                    )  # fmt: skip
                    peer = None
            while not held:  # the peer's side of the handshake is done too
                await asyncio.sleep(0.005)
            started = time.monotonic()
            transport.close()
            exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            elapsed = time.monotonic() - started
            release.set()
            await peer_done
            for sock in held + ([peer] if peer is not None else []):
                sock.close()
            if listener is not None:
                listener.close()
                await listener.wait_closed()
            return outcome(exc), elapsed

        try:
            got = run_on(lp, main())
            settle(lp)
        finally:
            release.set()
        return got

    with no_leaks():
        got, elapsed = scenario(loop, "ours.sock")
    assert got == (asyncio.TimeoutError, "SSL shutdown timed out")
    assert 0.25 <= elapsed < 3
    assert scenario(stdlib_loop, "theirs.sock")[0] == got


# ---- peers that misbehave during the handshake ------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\x00" * 64, b"\x16\x03\x01\x00\x05hello"],
    ids=["http", "zeros", "truncated-record"],
)
def test_garbage_instead_of_a_client_hello(loop, stdlib_loop, server_ctx, garbage):
    def scenario(lp):
        async def main():
            listener = socket.create_server(("127.0.0.1", 0))
            listener.setblocking(False)
            with listener:
                client = socket.create_connection(listener.getsockname())
                conn, _ = await lp.sock_accept(listener)
            with client:
                client.settimeout(TIMEOUT)
                client.sendall(garbage)
                accepting = asyncio.ensure_future(
                    lp.connect_accepted_socket(Echo, conn, ssl=server_ctx,
                                               ssl_handshake_timeout=1)  # fmt: skip
                )
                reply = await in_thread(read_until_eof, client)
                try:
                    await accepting
                except Exception as exc:
                    error = outcome(exc)
                    reason = getattr(exc, "reason", None)
            assert conn.fileno() == -1
            return error, reason, reply

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    error, reason, reply = got
    # No answer at all: asyncio's SSL layer drops a connection whose server
    # handshake failed without flushing its alert.
    assert reply == b""
    if garbage.startswith(b"GET"):
        assert error[0] is ssl.SSLError and reason == "HTTP_REQUEST"
    else:
        assert error[0] is ssl.SSLError
    assert got == scenario(stdlib_loop)


def test_garbage_does_not_stop_a_tls_server(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
        address = server.sockets[0].getsockname()
        # Fixed bytes, not os.urandom: about one random buffer in 500 starts
        # like a TLS or SSLv2 record header announcing more than 5000 bytes,
        # and any server then rightly waits for the rest of that record.
        noise = b"B" + random.Random(6).randbytes(4999)
        for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 100, noise):
            with socket.create_connection(address) as raw:
                raw.settimeout(TIMEOUT)
                raw.sendall(garbage)
                reply = await in_thread(read_until_eof, raw)
                assert reply == b""
        assert all(p.events == [] for p in servers.made)
        transport, protocol = await loop.create_connection(
            Recorder, "localhost", address[1], ssl=client_ctx
        )
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


@pytest.mark.parametrize("how", ["close", "reset"])
def test_server_closes_mid_handshake(loop, stdlib_loop, client_ctx, how):
    """The server reads the ClientHello and goes away."""

    def handler(conn, peer):
        hello = conn.recv(65536)
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        conn.close()
        return hello

    def scenario(lp):
        with thread_peer(handler) as peer:
            try:
                run_on(lp, lp.create_connection(
                    Recorder, *peer.address, ssl=client_ctx, server_hostname="localhost"
                ))  # fmt: skip
            except Exception as exc:
                got = outcome(exc)
            settle(lp)
            peer.thread.join(TIMEOUT)
            assert peer.result[:1] == b"\x16"  # it was a TLS handshake record
        return got

    with no_leaks():
        got = scenario(loop)
    if how == "close":
        assert got == (ConnectionResetError, "")
    else:
        assert got == (ConnectionResetError, "[Errno 104] Connection reset by peer")
    assert got == scenario(stdlib_loop)


def test_client_closes_mid_handshake(loop, stdlib_loop, server_ctx):
    """The client sends half a ClientHello and goes away."""

    def scenario(lp):
        async def main():
            listener = socket.create_server(("127.0.0.1", 0))
            listener.setblocking(False)
            with listener:
                client = socket.create_connection(listener.getsockname())
                conn, _ = await lp.sock_accept(listener)
            hello = client_hello()
            client.sendall(hello[: len(hello) // 2])
            accepting = asyncio.ensure_future(
                lp.connect_accepted_socket(Echo, conn, ssl=server_ctx)
            )
            await asyncio.sleep(0.05)
            client.close()
            try:
                await accepting
            except Exception as exc:
                return outcome(exc)

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    assert got == (ConnectionResetError, "")
    assert got == scenario(stdlib_loop)


def test_cancelling_a_tls_connect_mid_handshake(run, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        with thread_peer(lambda conn, peer: peer.release.wait(TIMEOUT)) as silent:
            task = asyncio.ensure_future(
                loop.create_connection(
                    Recorder, *silent.address, ssl=client_ctx, server_hostname="localhost"
                )
            )
            await asyncio.sleep(0.2)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)

    with no_leaks():
        run(main())


def test_many_failed_handshakes_leak_nothing(run, server_ctx, client_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            Servers(), "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=0.5
        )
        address = server.sockets[0].getsockname()

        async def failing():
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.create_connection(
                    Recorder, *address, ssl=client_ctx, server_hostname="nope.example"
                )

        async def garbage():
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"HELO\r\n" * 10)
            # Dropped without an answer (asyncio's SSL layer does not flush
            # its alert when a server handshake fails).
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*[failing() for _ in range(20)], *[garbage() for _ in range(20)])
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)

    with no_leaks():
        run(main())


# ---- the TLS transport over time ----------------------------------------------------------------


async def tls_pair(server_ctx, client_ctx, server_protocol=Echo, client_protocol=Recorder):
    """(server, client transport, client protocol, server protocol)."""
    loop = asyncio.get_running_loop()
    servers = Servers(server_protocol)
    server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
    transport, protocol = await loop.create_connection(
        client_protocol, "localhost", server.sockets[0].getsockname()[1], ssl=client_ctx
    )
    await servers.first()
    return server, transport, protocol, servers.made[0]


def test_close_sends_everything_written_first(run, server_ctx, client_ctx):
    async def main():
        server, transport, protocol, sink = await tls_pair(server_ctx, client_ctx, Recorder)
        payload = random.Random(11).randbytes(6 << 20)
        transport.write(payload)
        transport.close()  # at once: the queued data still goes first
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert await asyncio.wait_for(sink.lost, TIMEOUT) is None
        assert hashlib.sha256(sink.data).digest() == hashlib.sha256(payload).digest()
        if PY_VERSION >= (3, 11):  # 3.10 reports no EOF for a close_notify
            assert "eof_received" in sink.events
        sink.transport.close()
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_abort_drops_the_connection_at_once(loop, stdlib_loop, server_ctx, client_ctx):
    def scenario(lp):
        async def main():
            server, transport, protocol, echo = await tls_pair(server_ctx, client_ctx)
            assert await echo_roundtrip(transport, protocol) == b"ping"
            transport.write(b"x" * (1 << 20))
            transport.abort()
            assert transport.is_closing()
            client_exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            server_exc = await asyncio.wait_for(echo.lost, TIMEOUT)
            server.close()
            await server.wait_closed()
            return (
                client_exc, protocol.events,
                server_exc if server_exc is None else outcome(server_exc),
            )  # fmt: skip

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    assert got[:2] == (None, ["connection_made", "data_received", "connection_lost"])
    assert got == scenario(stdlib_loop)


def test_peer_reset_after_the_handshake(loop, stdlib_loop, server_ctx, client_ctx):
    def handler(conn, peer):
        tls = server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hello")
        peer.release.wait(TIMEOUT)
        # An abortive close: RST instead of close_notify and FIN.
        raw = socket.socket(fileno=tls.detach())
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        raw.close()

    def scenario(lp):
        with thread_peer(handler) as peer:
            async def main():
                transport, protocol = await lp.create_connection(
                    Recorder, *peer.address, ssl=client_ctx, server_hostname="localhost"
                )
                await protocol.wait_for_data(5)
                peer.release.set()
                exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
                transport.close()
                return outcome(exc), protocol.events

            got = run_on(lp, main())
            settle(lp)
        return got

    with no_leaks():
        got = scenario(loop)
    assert got == (
        (ConnectionResetError, "[Errno 104] Connection reset by peer"),
        ["connection_made", "data_received", "connection_lost"],
    )
    assert got == scenario(stdlib_loop)


def test_peer_closes_without_close_notify(loop, stdlib_loop, server_ctx, client_ctx):
    """A TCP FIN with no close_notify after the handshake (an unclean TLS
    shutdown)."""

    def handler(conn, peer):
        tls = server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hello")
        peer.release.wait(TIMEOUT)
        raw = socket.socket(fileno=tls.detach())
        raw.settimeout(TIMEOUT)
        raw.shutdown(socket.SHUT_WR)
        read_until_eof(raw)
        raw.close()

    def scenario(lp):
        with thread_peer(handler) as peer:
            async def main():
                transport, protocol = await lp.create_connection(
                    Recorder, *peer.address, ssl=client_ctx, server_hostname="localhost"
                )
                await protocol.wait_for_data(5)
                peer.release.set()
                exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
                transport.close()
                return exc if exc is None else outcome(exc), protocol.events

            got = run_on(lp, main())
            settle(lp)
        return got

    with no_leaks():
        got = scenario(loop)
    assert got[1][:2] == ["connection_made", "data_received"]
    assert got == scenario(stdlib_loop)


def test_pause_reading_holds_the_peer_back(run, server_ctx, client_ctx):
    """The application pauses reading on its TLS transport: the SSL layer
    stops reading the socket once its own buffer is full, so the sender's
    drain() blocks; resuming delivers everything, in order."""
    total = 8 << 20

    async def main():
        loop = asyncio.get_running_loop()
        progress = {"written": 0}
        finished = loop.create_future()

        async def handle(reader, writer):
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                       64 << 10)  # fmt: skip
            data = random.Random(7).randbytes(total)
            for i in range(0, total, 128 << 10):
                writer.write(data[i:i + (128 << 10)])
                await writer.drain()
                progress["written"] = i + (128 << 10)
            writer.close()
            await writer.wait_closed()
            finished.set_result(None)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.setblocking(False)
        await loop.sock_connect(sock, server.sockets[0].getsockname())
        transport, protocol = await loop.create_connection(
            Recorder, sock=sock, ssl=client_ctx, server_hostname="localhost"
        )
        transport.pause_reading()
        assert not transport.is_reading()
        await asyncio.sleep(0.3)
        held = progress["written"]
        assert len(protocol.data) == 0
        assert held < total // 2, f"the writer got {held} bytes out while the reader was paused"
        assert not finished.done()
        transport.resume_reading()
        assert transport.is_reading()
        await asyncio.wait_for(finished, TIMEOUT)
        received = await protocol.wait_for_data(total)
        assert received == random.Random(7).randbytes(total)
        await asyncio.wait_for(protocol.lost, TIMEOUT)
        transport.close()
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_a_stream_reader_over_tls_is_bounded_by_its_limit(run, server_ctx, client_ctx):
    """asyncio's StreamReader pauses its transport once it holds more than
    twice its limit: over TLS too, a reader that does not read keeps a
    bounded buffer while the peer is held back, and reading delivers every
    byte in order, then the end of the stream."""
    total, limit = 4 << 20, 64 << 10

    async def main():
        loop = asyncio.get_running_loop()
        progress = {"written": 0}

        async def handle(reader, writer):
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                       64 << 10)  # fmt: skip
            data = random.Random(11).randbytes(total)
            for i in range(0, total, 32 << 10):
                writer.write(data[i:i + (32 << 10)])
                await writer.drain()
                progress["written"] = i + (32 << 10)
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.setblocking(False)
        await loop.sock_connect(sock, server.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_ctx, server_hostname="localhost", limit=limit)
        await asyncio.sleep(0.3)
        held = len(reader._buffer)
        assert reader._paused
        assert held <= 2 * limit + (256 << 10), held  # what one TLS read may add
        assert progress["written"] < total // 2
        received = bytearray()
        while chunk := await reader.read(1 << 16):
            received += chunk
        assert received == random.Random(11).randbytes(total)
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


async def stream_echo_connection(over, server_ctx, client_ctx):
    """(server, reader, writer): asyncio streams connected to an echo
    server, over plain TCP or TLS (``over`` is "tcp" or "tls")."""

    async def echo(reader, writer):
        while data := await reader.read(100):
            writer.write(data)
        writer.close()

    tls = over == "tls"
    server = await asyncio.start_server(echo, "127.0.0.1", 0,
                                        ssl=server_ctx if tls else None)  # fmt: skip
    reader, writer = await asyncio.open_connection(
        *server.sockets[0].getsockname()[:2], ssl=client_ctx if tls else None,
        server_hostname="localhost" if tls else None)  # fmt: skip
    return server, reader, writer


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "functools.wraps"])
@pytest.mark.parametrize("over", ["tcp", "tls"])
@pytest.mark.parametrize("method", ["StreamReader.feed_data",
                                    "StreamReaderProtocol.data_received"])  # fmt: skip
def test_stream_methods_patched_on_the_class_mid_connection_are_called(
    run, server_ctx, client_ctx, over, method, wrapped
):
    """asyncio's streams look their methods up at each read: a method
    patched on the class while the connection is open (as mock.patch does)
    is called from the next read on, on both ends, and the original again
    once the patch is undone; also a wrapper that carries the original's
    names (functools.wraps, as instrumentation libraries make)."""
    cls = getattr(asyncio, method.split(".")[0])
    name = method.split(".")[1]
    original = cls.__dict__[name]
    seen = []

    def patched(self, data):
        seen.append(bytes(data))
        return original(self, data)

    if wrapped:
        patched = functools.wraps(original)(patched)

    async def main():
        server, reader, writer = await stream_echo_connection(over, server_ctx, client_ctx)
        got = []
        for data, patch in ((b"d0", False), (b"d1", True), (b"d2", False)):
            if patch:
                setattr(cls, name, patched)
            try:
                writer.write(data)
                got.append(await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
            finally:
                setattr(cls, name, original)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert run(main()) == [b"d0", b"d1", b"d2"]
    assert seen == [b"d1", b"d1"]  # the server's read, then the client's


@pytest.mark.parametrize("over", ["tcp", "tls"])
def test_a_stream_protocol_given_another_class_mid_connection(run, server_ctx, client_ctx,
                                                              over):  # fmt: skip
    """A StreamReaderProtocol whose ``__class__`` is reassigned to a
    subclass while connected has the subclass's data_received called from
    the next read on, as asyncio's lookup finds it."""
    seen = []

    class Watched(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(bytes(data))
            super().data_received(data)

    async def main():
        server, reader, writer = await stream_echo_connection(over, server_ctx, client_ctx)
        writer.write(b"d0")
        got = [await asyncio.wait_for(reader.readexactly(2), TIMEOUT)]
        writer._protocol.__class__ = Watched
        writer.write(b"d1")
        got.append(await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert run(main()) == [b"d0", b"d1"]
    assert seen == [b"d1"]


class _RaisingWaiter:
    def cancelled(self):
        raise ValueError("waiter")


class _TransportWithoutPause:
    def pause_reading(self):
        raise NotImplementedError


STREAM_READER_STATES = {
    "at-eof": lambda reader: reader.feed_eof(),
    "buffer-replaced-by-bytes": lambda reader: setattr(reader, "_buffer", b""),
    "buffer-replaced-by-another": lambda reader: setattr(reader, "_buffer", bytearray(b"pre:")),
    "waiter-raising": lambda reader: setattr(reader, "_waiter", _RaisingWaiter()),
    "transport-without-pause": lambda reader: (setattr(reader, "_transport",
                                                       _TransportWithoutPause()),
                                               setattr(reader, "_limit", 0)),  # fmt: skip
}


@pytest.mark.parametrize("state", list(STREAM_READER_STATES))
def test_data_for_a_stream_reader_in_an_odd_state_over_tls(loop, stdlib_loop, server_ctx,
                                                           client_ctx, state):  # fmt: skip
    """Plaintext for asyncio's StreamReader goes through feed_data's steps
    (ferroloop takes them natively): a reader at end of stream, with its
    buffer or waiter replaced, or whose transport cannot pause, ends the
    same way as on asyncio, errors and all."""

    async def scenario():
        errors = []
        asyncio.get_running_loop().set_exception_handler(
            lambda lp, ctx: errors.append((ctx["message"], repr(ctx.get("exception")))))

        async def handle(reader, writer):
            for i in range(2):
                await reader.readexactly(1)
                writer.write(b"d%d" % i)
                await writer.drain()
            await reader.read()  # until the client closes: no end of stream before
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: protocol, *server.sockets[0].getsockname()[:2], ssl=client_ctx,
            server_hostname="localhost")  # fmt: skip
        transport.write(b"x")
        first = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        STREAM_READER_STATES[state](reader)
        transport.write(b"x")
        await asyncio.sleep(0.3)
        outcome = (first, bytes(reader._buffer), reader._eof, reader._paused,
                   type(reader._transport).__name__, repr(reader._exception),
                   transport.is_closing(), list(errors))  # fmt: skip
        transport.close()
        server.close()
        await server.wait_closed()
        return outcome

    expected = stdlib_loop.run_until_complete(scenario())
    assert expected[0] == b"d0"
    assert loop.run_until_complete(scenario()) == expected


def test_sendfile_over_tls_uses_the_fallback(run, server_ctx, client_ctx, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        server, transport, protocol, echo = await tls_pair(server_ctx, client_ctx)
        path = tmp_path / "data.bin"
        payload = random.Random(3).randbytes((1 << 20) + 17)
        path.write_bytes(payload)
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError) as info:
                await loop.sendfile(transport, f, fallback=False)
            assert str(info.value) == (
                "fallback is disabled and native sendfile is not supported for "
                f"transport {transport!r}"
            )
            sent = await loop.sendfile(transport, f, offset=17)
            assert sent == len(payload) - 17
            assert f.tell() == len(payload)
        assert await protocol.wait_for_data(len(payload) - 17) == payload[17:]
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def _resource_warnings(action):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        action()
        gc.collect()
    messages = []
    for w in caught:
        if issubclass(w.category, ResourceWarning):
            # The plain transport's class is each loop's own.
            text = re.sub(r"<(_Selector)?SocketTransport fd=\d+>", "<plain fd=N>", str(w.message))
            messages.append(re.sub(r" at 0x[0-9a-f]+", "", text))
    return sorted(messages)


def test_unclosed_tls_transport_warns(loop_factory, server_ctx, client_ctx):
    """A connection the application forgets: nothing is collected while the
    loop still watches its socket; closing the loop lets go of it, and
    both the SSL transports and the plain ones under them warn."""

    def scenario(factory):
        lp = factory()

        async def main():
            server, transport, protocol, echo = await tls_pair(server_ctx, client_ctx)
            server.close()
            return transport

        transport = run_on(lp, main())
        gc.collect()  # other tests' garbage must not count here

        def forget():
            nonlocal transport
            transport = None

        return _resource_warnings(forget), _resource_warnings(lp.close)

    while_open, after_close = scenario(loop_factory)
    assert while_open == []
    ssl_transport = (
        "asyncio._SSLProtocolTransport" if PY_VERSION >= (3, 11)
        else "asyncio.sslproto._SSLProtocolTransport"
    )  # fmt: skip
    assert after_close == sorted(
        ["unclosed transport <plain fd=N>"] * 2
        + [f"unclosed transport <{ssl_transport} object>"] * 2
    )
    assert (while_open, after_close) == scenario(asyncio.SelectorEventLoop)


@pytest.mark.parametrize("ssl_handshake_timeout", [None, 0.3])
def test_create_connection_over_a_given_socket(run, server_ctx, client_ctx,
                                              ssl_handshake_timeout):  # fmt: skip
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Servers(), "127.0.0.1", 0, ssl=server_ctx)
        sock = socket.create_connection(server.sockets[0].getsockname())
        transport, protocol = await loop.create_connection(
            Recorder, sock=sock, ssl=client_ctx, server_hostname="localhost",
            ssl_handshake_timeout=ssl_handshake_timeout,
        )  # fmt: skip
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        assert sock.gettimeout() == 0
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)
        assert sock.fileno() == -1
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


@pytest.mark.skipif(PY_VERSION < (3, 12), reason="wait_closed waits for connections from 3.12")
def test_wait_closed_waits_for_tls_connections(run, server_ctx, client_ctx):
    async def main():
        server, transport, protocol, echo = await tls_pair(server_ctx, client_ctx)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        assert await echo_roundtrip(transport, protocol) == b"ping"
        await close_transport(transport, protocol)
        await asyncio.wait_for(waiter, TIMEOUT)
        assert await asyncio.wait_for(echo.lost, TIMEOUT) is None

    with no_leaks():
        run(main())


@pytest.mark.skipif(PY_VERSION < (3, 13), reason="close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
def test_close_and_abort_clients_with_tls(loop, stdlib_loop, server_ctx, client_ctx, method):
    def scenario(lp):
        async def main():
            server, transport, protocol, echo = await tls_pair(server_ctx, client_ctx)
            assert await echo_roundtrip(transport, protocol) == b"ping"
            server.close()
            getattr(server, method)()
            client_exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            server_exc = await asyncio.wait_for(echo.lost, TIMEOUT)
            await asyncio.wait_for(server.wait_closed(), TIMEOUT)
            transport.close()
            return (
                client_exc if client_exc is None else outcome(client_exc), protocol.events,
                server_exc if server_exc is None else outcome(server_exc), echo.events,
            )  # fmt: skip

        return run_on(lp, main())

    with no_leaks():
        got = scenario(loop)
        settle(loop)
    assert got[1][-1] == "connection_lost" and got[3][-1] == "connection_lost"
    assert got == scenario(stdlib_loop)


# ---- streams over TLS ----------------------------------------------------------------------------


def test_streams_echo_four_mib(run, server_ctx, client_ctx):
    async def main():
        async def handle(reader, writer):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        payload = random.Random(4).randbytes(4 << 20)

        async def send():
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i:i + 100_000])
                await writer.drain()
            # TLS has no half-close: the count tells the reader when to stop.

        async def receive():
            digest = hashlib.sha256()
            received = 0
            while received < len(payload):
                chunk = await reader.read(1 << 20)
                assert chunk, "connection ended early"
                digest.update(chunk)
                received += len(chunk)
            return received, digest.hexdigest()

        _, (received, digest) = await asyncio.gather(send(), receive())
        assert received == len(payload)
        assert digest == hashlib.sha256(payload).hexdigest()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_streams_slow_reader_back_pressure(run, server_ctx, client_ctx):
    """20 MiB written with drain() to a client that reads slowly: drain()
    must hold the writer back, so neither the write buffer nor the
    process's memory grows with the amount written."""
    total = 20 << 20
    chunk = b"x" * (256 << 10)

    async def main():
        loop = asyncio.get_running_loop()
        stats = {"max_buffer": 0, "max_rss": 0, "max_ahead": 0, "received": 0}
        done = loop.create_future()

        async def handle(reader, writer):
            # Small kernel buffers (no autotuning): the back-pressure has to
            # come from the loop, not from megabytes of socket buffer.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                       64 << 10)  # fmt: skip
            written = 0
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                written += len(chunk)
                stats["max_buffer"] = max(stats["max_buffer"],
                                          writer.transport.get_write_buffer_size())  # fmt: skip
                stats["max_ahead"] = max(stats["max_ahead"], written - stats["received"])
                await writer.drain()
            writer.close()
            await writer.wait_closed()
            done.set_result(None)

        async def sample():
            while True:
                stats["max_rss"] = max(stats["max_rss"], _rss())
                await asyncio.sleep(0.01)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.setblocking(False)
        await loop.sock_connect(sock, server.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_ctx, server_hostname="localhost"
        )
        gc.collect()
        baseline = _rss()
        sampler = asyncio.ensure_future(sample())
        while stats["received"] < total:
            data = await reader.read(64 << 10)
            assert data
            stats["received"] += len(data)
            await asyncio.sleep(0.001)  # a slow consumer
        sampler.cancel()
        await asyncio.wait_for(done, TIMEOUT)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return stats, baseline

    stats, baseline = run(main())
    # The writer is never far ahead of the reader: what the kernel's socket
    # buffers, the SSL layer and the reader's buffer hold, not 20 MiB.
    assert stats["max_ahead"] < 3 << 20
    # The SSL layer's buffer stays around its high-water mark plus one
    # write.
    assert stats["max_buffer"] <= 1 << 20
    assert stats["max_rss"] - baseline < 12 << 20


# ---- never plaintext -----------------------------------------------------------------------------


@pytest.mark.parametrize("peer_kind", ["speaks-first", "echoes", "reads-and-closes"])
def test_tls_client_against_a_plaintext_server(loop, stdlib_loop, client_ctx, peer_kind):
    def handler(conn, peer):
        if peer_kind == "speaks-first":
            conn.sendall(b"220 smtp.example ESMTP ready\r\n")
            peer.release.wait(TIMEOUT)
        elif peer_kind == "echoes":
            conn.sendall(conn.recv(65536))
            peer.release.wait(TIMEOUT)
        else:
            conn.recv(65536)
            conn.close()

    def scenario(lp, ssl_arg):
        with thread_peer(handler) as peer:
            made = []

            class Watch(Recorder):
                def connection_made(self, transport):
                    made.append(transport)
                    super().connection_made(transport)

            try:
                run_on(lp, lp.create_connection(
                    Watch, *peer.address, ssl=ssl_arg, server_hostname="localhost"
                ))  # fmt: skip
            except Exception as exc:
                got = outcome(exc)
            settle(lp)
        assert made == []  # the protocol never saw a connection
        return got

    with no_leaks():
        got = [scenario(loop, client_ctx), scenario(loop, True)]
    for exc_type, message in got:
        if peer_kind == "reads-and-closes":
            assert (exc_type, message) == (ConnectionResetError, "")
        else:
            assert issubclass(exc_type, ssl.SSLError)
    if peer_kind == "speaks-first":
        assert "WRONG_VERSION_NUMBER" in got[0][1]
    assert got == [scenario(stdlib_loop, client_ctx), scenario(stdlib_loop, True)]


def test_tls_server_never_hands_plaintext_to_the_protocol(run, server_ctx):
    async def main():
        loop = asyncio.get_running_loop()
        servers = Servers()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
        with socket.create_connection(server.sockets[0].getsockname()) as raw:
            raw.settimeout(TIMEOUT)
            raw.sendall(b"USER plain\r\nPASS text\r\n")
            reply = await in_thread(read_until_eof, raw)
        assert reply == b""
        await asyncio.sleep(0.05)
        assert len(servers.made) == 1 and servers.made[0].events == []
        assert servers.made[0].data == b""
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_ssl_arguments_that_are_not_contexts(loop, stdlib_loop):
    """asyncio's own checks: a bool is refused by the servers with a
    TypeError; a client given a truthy non-context fails when the SSL layer
    tries to use it (never falling back to plaintext); a falsy one means no
    TLS at all."""

    def scenario(lp):
        results = []
        listener = socket.create_server(("127.0.0.1", 0))
        path = os.path.join(tempfile.mkdtemp(prefix="fl-tls-"), "s.sock")
        try:
            for call in (
                lambda: lp.create_server(Recorder, "127.0.0.1", 0, ssl=True),
                lambda: lp.create_server(Recorder, "127.0.0.1", 0, ssl=False),
                lambda: lp.create_unix_server(Recorder, path, ssl=True),
                lambda: lp.create_connection(Recorder, *listener.getsockname(), ssl="yes",
                                             server_hostname="localhost"),
                lambda: lp.create_connection(Recorder, *listener.getsockname(), ssl=1,
                                             server_hostname="localhost"),
                lambda: lp.create_connection(Recorder, *listener.getsockname(), ssl=0),
            ):  # fmt: skip
                made = []

                def attempt():
                    try:
                        result = run_on(lp, call())
                    except Exception as exc:
                        results.append(outcome(exc))
                    else:
                        if isinstance(result, tuple):
                            made.append(type(result[0]).__name__)
                            result[0].close()
                        else:
                            result.close()
                        results.append(("returned", made))
                    settle(lp)

                # The socket of a connection whose SSL layer could not be
                # built is left for the garbage collector, on asyncio too.
                leaked = _resource_warnings(attempt)
                results[-1] += (len(leaked),)
        finally:
            listener.close()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return results

    gc.collect()
    got = scenario(loop)
    assert got[:3] == [(TypeError, "ssl argument must be an SSLContext or None", 0)] * 3
    assert got[3][0] is AttributeError and got[4][0] is AttributeError
    assert got[5][0] == "returned" and got[5][2] == 0
    ours_plain = got[5]
    theirs = scenario(stdlib_loop)
    assert got[:5] == theirs[:5]
    # ssl=0 gives a plain transport: the class names differ between loops,
    # but neither is TLS.
    assert "SSL" not in ours_plain[1][0] and "SSL" not in theirs[5][1][0]


# ---- the per-record data path -------------------------------------------------------------------
# From 3.11 ferroloop runs the SSL layer's per-record steps in native code
# (src/tls_pump.rs) around the stdlib's state machine; these pin what those
# steps must keep of asyncio's behaviour.


class BufferedSink(asyncio.BufferedProtocol):
    """Lends a small buffer, so one TLS record fills it many times over."""

    def __init__(self):
        self.data = bytearray()
        self.buffer = bytearray(1000)
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        # A memoryview: the stdlib's SSL layer slices what it is lent, and
        # a slice of a bytearray would be a copy.
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.data += self.buffer[:nbytes]
        self.changed.set()

    def eof_received(self):
        self.changed.set()

    def connection_lost(self, exc):
        self.lost.set_result(exc)

    async def wait_for_data(self, size):
        while len(self.data) < size:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), TIMEOUT)
        return bytes(self.data)


def test_a_buffered_protocol_over_tls_gets_every_byte(run, server_ctx, client_ctx):
    payload = random.Random(5).randbytes(300_000)

    async def main():
        server, transport, protocol, _ = await tls_pair(
            server_ctx, client_ctx, client_protocol=BufferedSink
        )
        transport.write(payload)
        assert await protocol.wait_for_data(len(payload)) == payload
        assert await close_transport(transport, protocol) is None
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_writes_of_every_size_and_type_arrive_intact_and_in_order(run, server_ctx, client_ctx):
    """Writes that fill many records and writes far smaller than one,
    bytes, bytearray and memoryview, queued back to back without waiting:
    the echo carries them all back in order."""
    rng = random.Random(9)
    sizes = [1, 2, 1000, 16383, 16384, 16385, 70_000, 3, 250_000, 5] * 3
    chunks = [rng.randbytes(n) for n in sizes]

    async def main():
        server, transport, protocol, _ = await tls_pair(server_ctx, client_ctx)
        for i, chunk in enumerate(chunks):
            kind = (bytes, bytearray, memoryview)[i % 3]
            transport.write(kind(chunk))
        expected = b"".join(chunks)
        assert await protocol.wait_for_data(len(expected)) == expected
        assert await close_transport(transport, protocol) is None
        server.close()
        await server.wait_closed()

    with no_leaks():
        run(main())


def test_tls_write_argument_handling_matches_asyncio(loop, stdlib_loop, server_ctx, client_ctx):
    def scenario(lp):
        async def main():
            server, transport, protocol, _ = await tls_pair(server_ctx, client_ctx)
            results = []
            for data in ("text", 42, None, [b"x"]):
                try:
                    transport.write(data)
                except Exception as exc:
                    results.append(outcome(exc))
                else:
                    results.append("accepted")
            transport.write(b"")
            transport.write(bytearray())
            transport.write(memoryview(b""))
            transport.write(bytearray(b"ab"))
            transport.write(memoryview(b"cd"))
            results.append(await protocol.wait_for_data(4))
            await close_transport(transport, protocol)
            server.close()
            await server.wait_closed()
            return results

        return run_on(lp, main())

    got = scenario(loop)
    assert got[0] == (TypeError, "data: expecting a bytes-like instance, got str")
    assert got[-1] == b"abcd"
    assert got == scenario(stdlib_loop)


def test_writes_after_close_are_dropped_and_warned_about_as_asyncio_does(
    loop, stdlib_loop, server_ctx, client_ctx, caplog
):
    def scenario(lp):
        async def main():
            server, transport, protocol, sink = await tls_pair(server_ctx, client_ctx, Recorder)
            transport.write(b"before")
            transport.close()
            for _ in range(8):
                transport.write(b"after")
            await asyncio.wait_for(protocol.lost, TIMEOUT)
            received = await sink.wait_for_data(len(b"before"))
            await asyncio.wait_for(sink.lost, TIMEOUT)
            sink.transport.close()
            server.close()
            await server.wait_closed()
            return received

        caplog.clear()
        with caplog.at_level("WARNING", logger="asyncio"):
            received = run_on(lp, main())
        warned = sum("SSL connection is closed" in r.getMessage() for r in caplog.records)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        return received, warned, errors

    got = scenario(loop)
    assert got[0] == b"before"
    if PY_VERSION >= (3, 11):  # 3.10's SSL layer drops them silently
        assert got[1] > 0
    assert got[2] == []
    assert got == scenario(stdlib_loop)


@pytest.mark.parametrize("when", ["before connection_lost", "after connection_lost"])
def test_writing_to_a_twice_closed_tls_transport_fails_as_on_asyncio(
    loop, stdlib_loop, server_ctx, client_ctx, when
):
    """asyncio's TLS transport lets go of its SSL layer on a second close();
    a write after that raises AttributeError there."""

    def scenario(lp):
        async def main():
            server, transport, protocol, sink = await tls_pair(server_ctx, client_ctx, Recorder)
            transport.close()
            if when == "after connection_lost":
                await asyncio.wait_for(protocol.lost, TIMEOUT)
            transport.close()
            try:
                transport.write(b"late")
            except Exception as exc:
                result = outcome(exc)
            else:
                result = "accepted"
            await asyncio.wait_for(protocol.lost, TIMEOUT)
            await asyncio.wait_for(sink.lost, TIMEOUT)
            sink.transport.close()
            server.close()
            await server.wait_closed()
            return result

        return run_on(lp, main())

    got = scenario(loop)
    if PY_VERSION >= (3, 11):
        assert got[0] is AttributeError
    assert got == scenario(stdlib_loop)


class CountingSSLObject(ssl.SSLObject):
    """A context's ``sslobject_class``: the SSL layer must go through it."""

    calls = {"read": 0, "write": 0}

    def read(self, len=1024, buffer=None):
        CountingSSLObject.calls["read"] += 1
        return super().read(len, buffer)

    def write(self, data):
        CountingSSLObject.calls["write"] += 1
        return super().write(data)


def test_a_contexts_sslobject_class_is_used_for_every_record(run, server_ctx, client_ctx):
    CountingSSLObject.calls.update(read=0, write=0)
    client_ctx.sslobject_class = CountingSSLObject
    payload = random.Random(3).randbytes(50_000)

    async def main():
        server, transport, protocol, _ = await tls_pair(server_ctx, client_ctx)
        for i in range(0, len(payload), 5000):
            transport.write(payload[i:i + 5000])
        assert await protocol.wait_for_data(len(payload)) == payload
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())
    assert CountingSSLObject.calls["write"] >= 10
    assert CountingSSLObject.calls["read"] >= 1


@pytest.mark.skipif(
    PY_VERSION < (3, 11), reason="3.10's TLS transport keeps its SSL layer for as long as it lives"
)
def test_a_closed_tls_connection_is_freed_without_the_cycle_collector(loop, pki, server_ctx):
    """Closing is enough: nothing keeps the SSL layer (and so the client's
    context) alive until the collector runs, even while the application
    holds on to its transport."""
    client_ctx = ssl.create_default_context(cafile=pki.ca_cert)
    context_alive = weakref.ref(client_ctx)

    async def main(ctx):
        server, transport, protocol, _ = await tls_pair(server_ctx, ctx)
        assert await echo_roundtrip(transport, protocol, b"x" * 5000) == b"x" * 5000
        assert await close_transport(transport, protocol) is None
        # A second close lets asyncio's transport drop its SSL layer; the
        # application keeps its protocol, and the protocol its transport.
        transport.close()
        server.close()
        await server.wait_closed()
        return protocol

    gc.collect()
    gc.disable()
    try:
        protocol = run_on(loop, main(client_ctx))
        del client_ctx
        settle(loop)
        assert protocol.transport is not None
        assert context_alive() is None
    finally:
        gc.enable()


class HoardingSSLObject(ssl.SSLObject):
    """Hands out at most 100 bytes per read and keeps the rest itself, where
    the TLS object's pending() does not see it."""

    def read(self, len=1024, buffer=None):
        hoard = self.__dict__.setdefault("hoard", bytearray())
        if not hoard:
            hoard += super().read(len)
        chunk = bytes(hoard[:100])
        del hoard[:100]
        return chunk


def test_plaintext_a_custom_sslobject_keeps_back_is_still_read_at_once(
    run, server_ctx, client_ctx
):
    client_ctx.sslobject_class = HoardingSSLObject
    payload = random.Random(4).randbytes(5000)

    async def main():
        server, transport, protocol, _ = await tls_pair(server_ctx, client_ctx)
        transport.write(payload)
        # One record comes back; all of it must be delivered now, not when
        # the next bytes happen to arrive (none will).
        assert await protocol.wait_for_data(len(payload)) == payload
        await close_transport(transport, protocol)
        server.close()
        await server.wait_closed()

    run(main())
