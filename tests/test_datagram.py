"""UDP and Unix datagram endpoints (loop.create_datagram_endpoint and the
datagram transport), pinned against the stdlib asyncio loop.

Every test runs on both loops (see conftest.py).  Peers are plain
non-blocking or timed-out sockets, so what is checked is exactly what went
over the wire.  Where asyncio's behaviour depends on the Python version
(argument checks and their messages, empty datagrams, the transport's class
and buffer accounting) the expectation is spelled out per version, and the
tests that compare error messages also run the same calls on a stdlib loop
and require the same outcome.
"""

import array
import asyncio
import contextlib
import errno
import gc
import hashlib
import inspect
import logging
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import time
import tracemalloc
import warnings
import weakref

import pytest

PY_VERSION = sys.version_info[:2]
TIMEOUT = 10  # seconds any single scenario may take


def _ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_available()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
# 3.10's datagram transport has no is_reading/pause_reading/resume_reading
# of its own: the base class's raise NotImplementedError.
CAN_PAUSE_READING = PY_VERSION >= (3, 11)


def is_reading(transport):
    """transport.is_reading(), or None where the version has none."""
    if CAN_PAUSE_READING:
        return transport.is_reading()
    with pytest.raises(NotImplementedError):
        transport.is_reading()
    return None


# ---- helpers -------------------------------------------------------------------


class Recorder(asyncio.DatagramProtocol):
    """Records every protocol callback, in order."""

    def __init__(self):
        self.events = []
        self.transport = None
        self.datagrams = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()
        self.lost_calls = 0

    def connection_made(self, transport):
        self.events.append("connection_made")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.events.append("datagram_received")
        self.datagrams.put_nowait((data, addr))

    def error_received(self, exc):
        self.events.append("error_received")
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    async def next_datagram(self):
        return await asyncio.wait_for(self.datagrams.get(), TIMEOUT)

    async def next_error(self):
        return await asyncio.wait_for(self.errors.get(), TIMEOUT)


class Quiet(asyncio.DatagramProtocol):
    """A protocol for outcome comparisons: no loop needed to build it."""


def udp_peer(host="127.0.0.1", family=socket.AF_INET):
    """A plain bound UDP socket with a timeout, to talk to an endpoint."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((host, 0))
    return sock


async def recv_in_thread(sock, size=65536):
    return await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, size)


def nothing_arrives(sock, wait=0.2):
    """True if no datagram reaches ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        sock.recvfrom(65536)
    except socket.timeout:
        return True
    finally:
        sock.settimeout(TIMEOUT)
    return False


def closed_udp_port(host="127.0.0.1"):
    """A port nothing is bound to: datagrams to it draw ICMP port
    unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def wait_until(predicate):
    """Polls ``predicate`` every millisecond, for up to TIMEOUT seconds (the
    test's assertions then say what did not happen)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


async def endpoint_heard_from(peer):
    """(transport, protocol, address): an endpoint on 127.0.0.1 that
    received one datagram from ``peer``, and the address it was given."""
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Recorder, local_addr=("127.0.0.1", 0)
    )
    peer.sendto(b"hello", transport.get_extra_info("sockname"))
    _, addr = await protocol.next_datagram()
    return transport, protocol, addr


async def close_endpoint(transport, protocol):
    transport.close()
    assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None


def run_on(lp, coro, timeout=TIMEOUT):
    return lp.run_until_complete(asyncio.wait_for(coro, timeout))


def outcome_of(exc):
    return type(exc), str(exc)


def settle_on(lp, rounds=5):
    """Let callbacks scheduled by closes run."""
    for _ in range(rounds):
        run_on(lp, asyncio.sleep(0))


def outcome_on(lp, make_coro):
    """("returned", None) or (exception type, str(exception)) of running
    ``make_coro()`` on ``lp``; a returned transport is closed."""
    try:
        result = run_on(lp, make_coro())
    except Exception as exc:
        return type(exc), str(exc)
    result[0].close()
    run_on(lp, asyncio.sleep(0.01))
    return "returned", None


@contextlib.contextmanager
def no_resource_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked


@pytest.fixture
def sock_dir():
    # Short: AF_UNIX paths are limited to 107 bytes.
    path = tempfile.mkdtemp(prefix="fl-dg-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- endpoints -------------------------------------------------------------------


def test_local_addr_endpoint_receives_and_answers(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        assert protocol.events == ["connection_made"]
        assert protocol.transport is transport
        host, port = transport.get_extra_info("sockname")
        assert host == "127.0.0.1" and port > 0
        assert transport.get_extra_info("peername") is None
        with udp_peer() as peer:
            peer.sendto(b"query", ("127.0.0.1", port))
            assert await protocol.next_datagram() == (b"query", peer.getsockname())
            transport.sendto(b"answer", peer.getsockname())
            assert await recv_in_thread(peer) == (b"answer", ("127.0.0.1", port))
        await close_endpoint(transport, protocol)
        assert protocol.events == ["connection_made", "datagram_received", "connection_lost"]

    with no_resource_warnings():
        run(main())


def test_one_datagram_per_datagram_received_call(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        sizes = [1, 100, 1400, 9000, 65507]
        with udp_peer() as peer:
            for size in sizes:
                peer.sendto(bytes([size % 251]) * size, address)
            got = [await protocol.next_datagram() for _ in sizes]
        assert [data for data, _ in got] == [bytes([s % 251]) * s for s in sizes]
        assert all(type(data) is bytes for data, _ in got)
        await close_endpoint(transport, protocol)

    run(main())


def test_ferroloop_receives_datagrams_without_allocating_max_size():
    """asyncio's transport calls recvfrom(max_size) for every datagram,
    allocating 256 KiB each time (an mmap, mremap and munmap whenever
    malloc maps it afresh). ferroloop receives into one buffer per loop
    and copies out only the datagram, so small datagrams allocate little."""
    ferroloop = pytest.importorskip("ferroloop")
    loop = ferroloop.new_event_loop()

    async def main():
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        with udp_peer() as peer:
            peer.sendto(b"first", address)
            assert (await protocol.next_datagram())[0] == b"first"
            tracemalloc.start()
            try:
                for i in range(50):
                    peer.sendto(b"%d" % i, address)
                    assert (await protocol.next_datagram())[0] == b"%d" % i
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        await close_endpoint(transport, protocol)
        return transport.max_size, peak

    try:
        max_size, peak = run_on(loop, main())
    finally:
        loop.close()
    assert peak < max_size // 4, (peak, max_size)


class RecordingSocket(socket.socket):
    """A socket class with its own recvfrom, which the transport must call."""

    received = 0

    def recvfrom(self, bufsize, flags=0):
        self.received += 1
        return super().recvfrom(bufsize, flags)


def test_a_socket_class_with_its_own_recvfrom_has_it_called(run):
    async def main():
        loop = asyncio.get_running_loop()
        sock = RecordingSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
        with udp_peer() as peer:
            peer.sendto(b"one", sock.getsockname())
            assert await protocol.next_datagram() == (b"one", peer.getsockname())
            peer.sendto(b"two" * 1000, sock.getsockname())
            assert await protocol.next_datagram() == (b"two" * 1000, peer.getsockname())
        assert sock.received == 2
        await close_endpoint(transport, protocol)

    run(main())


def test_remote_addr_connects_the_socket(run, loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            remote = peer.getsockname()
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=remote
            )
            assert transport.get_extra_info("peername") == remote
            sockname = transport.get_extra_info("sockname")
            assert sockname[0] == "127.0.0.1" and sockname[1] > 0
            sock = transport.get_extra_info("socket")
            assert sock.getpeername() == remote

            transport.sendto(b"no address")
            assert await recv_in_thread(peer) == (b"no address", sockname)
            transport.sendto(b"same address", remote)
            assert await recv_in_thread(peer) == (b"same address", sockname)
            with pytest.raises(ValueError) as info:
                transport.sendto(b"elsewhere", ("127.0.0.1", remote[1] + 1))
            assert str(info.value) == f"Invalid address: must be None or {remote}"
            assert nothing_arrives(peer)

            peer.sendto(b"reply", sockname)
            assert await protocol.next_datagram() == (b"reply", remote)
            # A connected socket hears only its peer.
            with udp_peer() as stranger:
                stranger.sendto(b"stranger", sockname)
                peer.sendto(b"peer again", sockname)
                assert await protocol.next_datagram() == (b"peer again", remote)
            await close_endpoint(transport, protocol)

    run(main())


def test_remote_addr_given_as_a_name(run):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=("localhost", peer.getsockname()[1]), family=socket.AF_INET
            )
            assert transport.get_extra_info("peername") == peer.getsockname()
            transport.sendto(b"by name")
            assert (await recv_in_thread(peer))[0] == b"by name"
            await close_endpoint(transport, protocol)

    run(main())


def test_local_and_remote_addr_together(run):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer, udp_peer() as spare:
            local = spare.getsockname()
            spare.close()  # frees the port for the endpoint
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, local_addr=local, remote_addr=peer.getsockname()
            )
            assert transport.get_extra_info("sockname") == local
            assert transport.get_extra_info("peername") == peer.getsockname()
            transport.sendto(b"both")
            assert await recv_in_thread(peer) == (b"both", local)
            await close_endpoint(transport, protocol)

    run(main())


@needs_ipv6
def test_ipv6_endpoint(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("::1", 0), family=socket.AF_INET6
        )
        sockname = transport.get_extra_info("sockname")
        assert sockname[0] == "::1" and len(sockname) == 4
        assert transport.get_extra_info("socket").family == socket.AF_INET6
        with udp_peer("::1", socket.AF_INET6) as peer:
            peer.sendto(b"six", sockname[:2])
            data, addr = await protocol.next_datagram()
            assert data == b"six" and addr == peer.getsockname()
            transport.sendto(b"back", addr)
            assert (await recv_in_thread(peer))[0] == b"back"

            connected, cprotocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=("::1", peer.getsockname()[1]), family=socket.AF_INET6
            )
            assert connected.get_extra_info("peername") == peer.getsockname()
            connected.sendto(b"connected six")
            assert (await recv_in_thread(peer))[0] == b"connected six"
            await close_endpoint(connected, cprotocol)
        await close_endpoint(transport, protocol)

    run(main())


def test_reuse_port_lets_two_endpoints_share_a_port(run):
    async def main():
        loop = asyncio.get_running_loop()
        first, p1 = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), reuse_port=True
        )
        address = first.get_extra_info("sockname")
        second, p2 = await loop.create_datagram_endpoint(
            Recorder, local_addr=address, reuse_port=True
        )
        assert second.get_extra_info("sockname") == address
        for transport in (first, second):
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # Without reuse_port the port is taken.
        with pytest.raises(OSError) as info:
            await loop.create_datagram_endpoint(Recorder, local_addr=address)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == "[Errno 98] Address already in use"
        # The kernel spreads datagrams from many sources over both sockets.
        peers = [udp_peer() for _ in range(32)]
        try:
            for peer in peers:
                peer.sendto(b"spread", address)
            got = 0
            deadline = time.monotonic() + TIMEOUT
            while got < len(peers) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                got = p1.datagrams.qsize() + p2.datagrams.qsize()
            assert got == len(peers)
            assert p1.datagrams.qsize() and p2.datagrams.qsize()
        finally:
            for peer in peers:
                peer.close()
        await close_endpoint(first, p1)
        await close_endpoint(second, p2)

    run(main())


def test_allow_broadcast(run):
    async def main():
        loop = asyncio.get_running_loop()
        plain, pp = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        sock = plain.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        # Without SO_BROADCAST the kernel refuses a broadcast destination;
        # the error goes to error_received and the endpoint stays open.
        plain.sendto(b"x", ("127.255.255.255", 9))
        exc = await pp.next_error()
        assert type(exc) is PermissionError and exc.errno == errno.EACCES
        assert not plain.is_closing()
        await close_endpoint(plain, pp)

        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver:
            receiver.settimeout(TIMEOUT)
            receiver.bind(("127.255.255.255", 0))
            target = ("127.255.255.255", receiver.getsockname()[1])
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=target, allow_broadcast=True
            )
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
            # A broadcast endpoint is not connected: it sends each datagram
            # to remote_addr explicitly.
            assert transport.get_extra_info("peername") is None
            with pytest.raises(OSError):
                sock.getpeername()
            transport.sendto(b"to all")
            assert (await recv_in_thread(receiver))[0] == b"to all"
            with pytest.raises(ValueError) as info:
                transport.sendto(b"x", ("127.0.0.1", 9))
            assert str(info.value) == f"Invalid address: must be None or {target}"
            await close_endpoint(transport, protocol)

    run(main())


def test_given_socket(run):
    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        assert sock.gettimeout() is None
        transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
        assert sock.gettimeout() == 0  # made non-blocking
        tsock = transport.get_extra_info("socket")
        assert isinstance(tsock, asyncio.trsock.TransportSocket)
        assert tsock.fileno() == sock.fileno()
        assert transport.get_extra_info("sockname") == sock.getsockname()
        assert transport.get_extra_info("peername") is None
        with udp_peer() as peer:
            peer.sendto(b"via sock", sock.getsockname())
            assert await protocol.next_datagram() == (b"via sock", peer.getsockname())
        await close_endpoint(transport, protocol)
        assert sock.fileno() == -1  # the transport closed it

    run(main())


def test_given_connected_socket(run):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(peer.getsockname())
            transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
            # The peer is read from the socket, but the transport has no
            # remote_addr: sendto with any address is accepted.
            assert transport.get_extra_info("peername") == peer.getsockname()
            transport.sendto(b"to the peer")
            assert (await recv_in_thread(peer))[0] == b"to the peer"
            await close_endpoint(transport, protocol)

    run(main())


def test_family_only_gives_an_unbound_socket(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(Recorder, family=socket.AF_INET)
        assert transport.get_extra_info("sockname") == ("0.0.0.0", 0)
        assert transport.get_extra_info("peername") is None
        with udp_peer() as peer:
            transport.sendto(b"autobind", peer.getsockname())
            data, addr = await recv_in_thread(peer)
            assert data == b"autobind" and addr[1] > 0
            peer.sendto(b"answer", addr)
            assert await protocol.next_datagram() == (b"answer", peer.getsockname())
        await close_endpoint(transport, protocol)

    run(main())


# ---- Unix datagram sockets ---------------------------------------------------------


def test_unix_datagram_endpoint_with_local_and_remote_paths(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        local = os.path.join(sock_dir, "local.sock")
        remote = os.path.join(sock_dir, "remote.sock")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            peer.settimeout(TIMEOUT)
            peer.bind(remote)
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, local_addr=local, remote_addr=remote, family=socket.AF_UNIX
            )
            assert transport.get_extra_info("sockname") == local
            assert transport.get_extra_info("peername") == remote
            assert transport.get_extra_info("socket").family == socket.AF_UNIX
            transport.sendto(b"over unix")
            assert await recv_in_thread(peer) == (b"over unix", local)
            peer.sendto(b"back", local)
            assert await protocol.next_datagram() == (b"back", remote)
            with pytest.raises(ValueError) as info:
                transport.sendto(b"x", os.path.join(sock_dir, "other.sock"))
            assert str(info.value) == f"Invalid address: must be None or {remote}"
            await close_endpoint(transport, protocol)
        # The socket file stays behind, as asyncio leaves it.
        assert os.path.exists(local)

    run(main())


def test_unix_datagram_from_an_unbound_sender(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        local = os.path.join(sock_dir, "local.sock")
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=local, family=socket.AF_UNIX
        )
        assert transport.get_extra_info("peername") is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"anonymous", local)
        assert await protocol.next_datagram() == (b"anonymous", None)
        await close_endpoint(transport, protocol)

    run(main())


def test_unix_datagram_stale_socket_file_is_replaced(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        local = os.path.join(sock_dir, "stale.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as old:
            old.bind(local)
        # A second link keeps the old inode alive, so that the new file
        # cannot reuse its number.
        os.link(local, local + ".old")
        old_inode = os.stat(local).st_ino
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=local, family=socket.AF_UNIX
        )
        assert os.stat(local).st_ino != old_inode
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"fresh", local)
        assert (await protocol.next_datagram())[0] == b"fresh"
        await close_endpoint(transport, protocol)

    run(main())


def test_unix_datagram_other_files_are_left_alone(loop, stdlib_loop, sock_dir):
    def scenario(lp, name):
        path = os.path.join(sock_dir, name)
        with open(path, "w") as f:
            f.write("not a socket")
        got = outcome_on(
            lp,
            lambda: lp.create_datagram_endpoint(Quiet, local_addr=path, family=socket.AF_UNIX),
        )
        with open(path) as f:
            return got, f.read()

    got = scenario(loop, "ours")
    assert got == ((OSError, "[Errno 98] Address already in use"), "not a socket")
    assert got == scenario(stdlib_loop, "theirs")


def test_unix_datagram_abstract_namespace(run):
    async def main():
        loop = asyncio.get_running_loop()
        name = f"\0ferroloop-dg-{os.getpid()}-{random.random()}"
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=name, family=socket.AF_UNIX
        )
        assert transport.get_extra_info("sockname") == name.encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"abstract", name)
        assert (await protocol.next_datagram())[0] == b"abstract"
        await close_endpoint(transport, protocol)

    run(main())


def test_unix_datagram_given_socketpair(run):
    """A socketpair's peer has no name (getpeername() gives ''), so the
    transport counts as unconnected: it receives, and a sendto without an
    address is a fatal error, as on asyncio."""

    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with b:
            transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=a)
            assert transport.get_extra_info("peername") == ""
            b.send(b"pair")
            assert await protocol.next_datagram() == (b"pair", None)
            transport.sendto(b"nowhere")
            exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert type(exc) is TypeError
        assert str(exc) == "a bytes-like object is required, not 'NoneType'"
        assert [ctx["message"] for ctx in contexts] == ["Fatal write error on datagram transport"]
        assert contexts[0]["exception"] is exc
        assert contexts[0]["transport"] is transport
        assert contexts[0]["protocol"] is protocol
        assert protocol.events[-1] == "connection_lost" and protocol.lost_calls == 1
        assert a.fileno() == -1

    run(main())


# ---- argument errors ---------------------------------------------------------------


class Sockets:
    """The sockets the argument-error cases pass as ``sock``."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.seqpacket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def close(self):
        for sock in (self.udp, self.tcp, self.seqpacket):
            sock.close()


def _argument_cases():
    """(id, kwargs(sockets), expected(sockets) or None, min version, max version)."""
    sock_msg = "socket modifier keyword arguments can not be used when sock is specified. ({})"
    # 3.10 always names reuse_address (its default is a private sentinel
    # object, which is truthy) when it lists the offending arguments.
    unset = "" if PY_VERSION >= (3, 11) else (
        f", reuse_address={asyncio.base_events._unset}"
    )
    wrong_type = (
        "A datagram socket was expected, got {!r}" if PY_VERSION >= (3, 13)
        else "A UDP Socket was expected, got {!r}"
    )  # fmt: skip
    tuple_error = TypeError if PY_VERSION >= (3, 11) else AssertionError
    return [
        ("sock and local_addr",
         lambda s: dict(sock=s.udp, local_addr=("127.0.0.1", 0)),
         lambda s: (ValueError, sock_msg.format(f"local_addr=('127.0.0.1', 0){unset}"))),
        ("sock and remote_addr",
         lambda s: dict(sock=s.udp, remote_addr=("127.0.0.1", 9)),
         lambda s: (ValueError, sock_msg.format(f"remote_addr=('127.0.0.1', 9){unset}"))),
        ("sock, family, proto, flags, reuse_port and allow_broadcast",
         lambda s: dict(sock=s.udp, family=socket.AF_INET, proto=17, flags=1,
                        reuse_port=True, allow_broadcast=True),
         lambda s: (ValueError, sock_msg.format(
             f"family=2, proto=17, flags=1{unset}, reuse_port=True, allow_broadcast=True"))),
        ("sock with falsy options",
         lambda s: dict(sock=s.udp, family=0, reuse_port=False, allow_broadcast=None),
         lambda s: ("returned", None)),
        ("a stream socket as sock",
         lambda s: dict(sock=s.tcp),
         lambda s: (ValueError, wrong_type.format(s.tcp))),
        ("a stream socket as sock, with local_addr",
         lambda s: dict(sock=s.tcp, local_addr=("127.0.0.1", 0)),
         lambda s: (ValueError, wrong_type.format(s.tcp))),
        ("a seqpacket socket as sock",
         lambda s: dict(sock=s.seqpacket),
         lambda s: ("returned", None) if PY_VERSION >= (3, 13)
         else (ValueError, wrong_type.format(s.seqpacket))),
        ("no addresses and no family",
         lambda s: dict(),
         lambda s: (ValueError, "unexpected address family")),
        ("no addresses, proto only",
         lambda s: dict(proto=socket.IPPROTO_UDP),
         lambda s: (ValueError, "unexpected address family")),
        ("a string local_addr",
         lambda s: dict(local_addr="127.0.0.1"),
         lambda s: (tuple_error, "2-tuple is expected")),
        ("a list remote_addr",
         lambda s: dict(remote_addr=["127.0.0.1", 9]),
         lambda s: (tuple_error, "2-tuple is expected")),
        ("a 4-tuple local_addr",
         lambda s: dict(local_addr=("::1", 0, 0, 0), family=socket.AF_INET6),
         lambda s: (tuple_error, "2-tuple is expected")),
        ("a unix address that is not a str",
         lambda s: dict(local_addr=b"/tmp/x.sock", family=socket.AF_UNIX),
         lambda s: (TypeError, "string is expected")),
        ("a unix remote address that is a tuple",
         lambda s: dict(remote_addr=("127.0.0.1", 9), family=socket.AF_UNIX),
         lambda s: (TypeError, "string is expected")),
        ("addresses of different families",
         lambda s: dict(local_addr=("127.0.0.1", 0), remote_addr=("::1", 9)),
         lambda s: (ValueError, "can not get address information")),
        ("an address of another family than family=",
         lambda s: dict(local_addr=("127.0.0.1", 0), family=socket.AF_INET6),
         lambda s: (socket.gaierror, "[Errno -9] Address family for hostname not supported")),
    ]


ARGUMENT_CASES = _argument_cases()


@pytest.mark.parametrize(
    "make_kwargs, expected", [case[1:] for case in ARGUMENT_CASES],
    ids=[case[0] for case in ARGUMENT_CASES],
)  # fmt: skip
def test_argument_errors(loop, stdlib_loop, make_kwargs, expected):
    def scenario(lp):
        sockets = Sockets()
        try:
            kwargs = make_kwargs(sockets)
            with no_resource_warnings():
                got = outcome_on(lp, lambda: lp.create_datagram_endpoint(Quiet, **kwargs))
            return got, expected(sockets)
        finally:
            sockets.close()

    got, want = scenario(loop)
    assert got == want
    theirs, want = scenario(stdlib_loop)
    assert theirs == want


@pytest.mark.skipif(PY_VERSION >= (3, 11), reason="reuse_address was removed in 3.11")
def test_reuse_address_on_310(loop, stdlib_loop, sock_dir):
    refused = (
        "Passing `reuse_address=True` is no longer supported, as the usage of "
        "SO_REUSEPORT in UDP poses a significant security concern."
    )
    deprecated = (
        "The *reuse_address* parameter has been deprecated as of 3.5.10 and is "
        "scheduled for removal in 3.11."
    )

    def scenario(lp, tag):
        stale = os.path.join(sock_dir, f"{tag}.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as old:
            old.bind(stale)
        results = []
        for kwargs in (
            dict(local_addr=("127.0.0.1", 0), reuse_address=True),
            dict(local_addr=("127.0.0.1", 0), reuse_address=False),
            # The address checks come first...
            dict(reuse_address=True),
            dict(local_addr="127.0.0.1", reuse_address=True),
            # ...and so does the removal of a stale Unix socket file.
            dict(local_addr=stale, family=socket.AF_UNIX, reuse_address=True),
        ):
            async def attempt():
                return await lp.create_datagram_endpoint(Quiet, **kwargs)

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = outcome_on(lp, attempt)
            # The warning points at the code awaiting create_datagram_endpoint,
            # as asyncio's does.
            results.append(
                (got, [(w.category, str(w.message), os.path.basename(w.filename))
                       for w in caught if not issubclass(w.category, ResourceWarning)])
            )  # fmt: skip
        results.append(os.path.exists(stale))
        return results

    got = scenario(loop, "ours")
    assert got == [
        ((ValueError, refused), []),
        (("returned", None), [(DeprecationWarning, deprecated, "test_datagram.py")]),
        ((ValueError, "unexpected address family"), []),
        ((AssertionError, "2-tuple is expected"), []),
        ((ValueError, refused), []),
        False,
    ]
    assert got == scenario(stdlib_loop, "theirs")


def _patch_getaddrinfo(lp, answers, calls):
    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        calls.append((host, port, family, type, proto, flags))
        return list(answers[host])

    lp.getaddrinfo = getaddrinfo


def test_names_go_through_loop_getaddrinfo(loop, stdlib_loop):
    def scenario(lp):
        with udp_peer() as peer:
            port = peer.getsockname()[1]
            calls = []
            _patch_getaddrinfo(lp, {"peer.test": [
                (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("127.0.0.1", port)),
            ]}, calls)  # fmt: skip

            async def main():
                transport, protocol = await lp.create_datagram_endpoint(
                    Recorder, local_addr=("127.0.0.1", 0), remote_addr=("peer.test", port),
                    flags=socket.AI_ADDRCONFIG,
                )  # fmt: skip
                peername = transport.get_extra_info("peername")
                transport.sendto(b"resolved")
                data = (await recv_in_thread(peer))[0]
                await close_endpoint(transport, protocol)
                return peername, data

            return run_on(lp, main()), calls, port

    (peername, data), calls, port = scenario(loop)
    assert peername == ("127.0.0.1", port) and data == b"resolved"
    # Only the name is resolved; the numeric local address is not.
    assert calls == [("peer.test", port, 0, socket.SOCK_DGRAM, 0, socket.AI_ADDRCONFIG)]
    (_, their_data), their_calls, their_port = scenario(stdlib_loop)
    assert their_data == data
    assert their_calls == [
        ("peer.test", their_port, 0, socket.SOCK_DGRAM, 0, socket.AI_ADDRCONFIG)
    ]


def test_getaddrinfo_returning_nothing(loop, stdlib_loop):
    def scenario(lp):
        _patch_getaddrinfo(lp, {"nothing.test": []}, [])
        try:
            run_on(lp, lp.create_datagram_endpoint(Quiet, remote_addr=("nothing.test", 53)))
        except OSError as exc:
            return outcome_of(exc)

    got = scenario(loop)
    assert got == (OSError, "getaddrinfo() returned empty list")
    assert got == scenario(stdlib_loop)


@needs_ipv6
def test_each_family_is_tried_in_turn(loop, stdlib_loop):
    """A name with an IPv6 and an IPv4 address: the IPv6 port is taken, so
    the endpoint is made on IPv4; with both taken, the first error is
    raised."""

    def free_on_both():
        while True:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
                probe.bind(("::1", 0))
                port = probe.getsockname()[1]
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                        other.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port

    def scenario(lp):
        port = free_on_both()
        answers = {"dual.test": [
            (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("127.0.0.1", port)),
        ]}  # fmt: skip
        _patch_getaddrinfo(lp, answers, [])
        taken6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with taken6:
            taken6.bind(("::1", port))
            transport, _ = run_on(
                lp, lp.create_datagram_endpoint(Quiet, local_addr=("dual.test", port))
            )
            first = transport.get_extra_info("sockname")
            transport.close()
            settle_on(lp)
            taken4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with taken4:
                taken4.bind(("127.0.0.1", port))
                try:
                    run_on(lp, lp.create_datagram_endpoint(Quiet, local_addr=("dual.test", port)))
                except OSError as exc:
                    second = outcome_of(exc), exc.errno
        return first == ("127.0.0.1", port), second

    got = scenario(loop)
    assert got == (True, ((OSError, "[Errno 98] Address already in use"), errno.EADDRINUSE))
    assert got == scenario(stdlib_loop)


def test_debug_mode_logs_the_endpoint(loop, stdlib_loop, caplog):
    def scenario(lp):
        lp.set_debug(True)
        lp.slow_callback_duration = 60
        caplog.clear()
        with udp_peer() as peer, caplog.at_level(logging.DEBUG, logger="asyncio"):
            for kwargs in (dict(local_addr=("127.0.0.1", 0)),
                           dict(remote_addr=peer.getsockname())):  # fmt: skip
                transport, _ = run_on(lp, lp.create_datagram_endpoint(Quiet, **kwargs))
                transport.close()
                settle_on(lp)
        lp.set_debug(False)
        return [
            (r.levelname, r.getMessage().split(" created: ")[0])
            for r in caplog.records if r.getMessage().startswith("Datagram endpoint")
        ]  # fmt: skip

    got = scenario(loop)
    assert got[0] == ("INFO", "Datagram endpoint local_addr=('127.0.0.1', 0) remote_addr=None")
    assert got[1][0] == "DEBUG" and got[1][1].startswith("Datagram endpoint remote_addr=(")
    assert len(got) == 2
    assert [level for level, _ in got] == [level for level, _ in scenario(stdlib_loop)]


def test_signature_matches_asyncio(loop, stdlib_loop):
    ours = inspect.signature(loop.create_datagram_endpoint)
    theirs = inspect.signature(stdlib_loop.create_datagram_endpoint)
    assert ours == theirs
    assert inspect.iscoroutinefunction(loop.create_datagram_endpoint)
    assert ("reuse_address" in ours.parameters) == (PY_VERSION < (3, 11))


def test_a_failing_bind_closes_the_socket(run):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as taken:
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(20):
                with pytest.raises(OSError) as info:
                    await loop.create_datagram_endpoint(Quiet, local_addr=taken.getsockname())
                assert info.value.errno == errno.EADDRINUSE
            assert len(os.listdir("/proc/self/fd")) == before

    with no_resource_warnings():
        run(main())


# ---- the transport -------------------------------------------------------------


def test_transport_class_and_extra_info(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        # asyncio's datagram transport became an asyncio.DatagramTransport
        # in 3.12; before, it is only an asyncio.Transport.
        assert isinstance(transport, asyncio.DatagramTransport) == (PY_VERSION >= (3, 12))
        assert isinstance(transport, asyncio.BaseTransport)
        assert transport.get_protocol() is protocol
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
        assert sock.gettimeout() == 0
        assert transport.get_extra_info("sockname") == sock.getsockname()
        assert transport.get_extra_info("peername") is None
        assert transport.get_extra_info("nonexistent") is None
        assert transport.get_extra_info("nonexistent", "default") == "default"
        assert transport.get_write_buffer_size() == 0
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        assert is_reading(transport) in (True, None) and not transport.is_closing()
        other = Recorder()
        transport.set_protocol(other)
        assert transport.get_protocol() is other
        transport.set_protocol(protocol)
        await close_endpoint(transport, protocol)
        assert transport.is_closing()
        assert sock.fileno() == -1

    run(main())


def test_the_transports_socket_is_off_limits_to_fd_callbacks(run):
    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
        fd = sock.fileno()
        for call, shown in (
            (lambda: loop.add_reader(fd, print), fd),
            (lambda: loop.add_writer(sock, print), sock),
            (lambda: loop.remove_reader(fd), fd),
            (lambda: loop.remove_writer(sock), sock),
        ):
            with pytest.raises(RuntimeError) as info:
                call()
            assert str(info.value) == (
                f"File descriptor {shown!r} is used by transport {transport!r}"
            )
        # 3.12 also refuses a second transport on the same socket; before,
        # asyncio lets one be made.
        if PY_VERSION >= (3, 12):
            made = []
            with pytest.raises(RuntimeError) as info:
                await loop.create_datagram_endpoint(lambda: made.append(1) or Recorder(), sock=sock)
            assert str(info.value) == f"File descriptor {sock!r} is used by transport {transport!r}"
            assert made == [1]  # the protocol was made first, as on asyncio
            assert sock.fileno() == fd  # the socket was left alone
        with udp_peer() as peer:
            peer.sendto(b"still mine", sock.getsockname())
            assert (await protocol.next_datagram())[0] == b"still mine"
        await close_endpoint(transport, protocol)
        # Once the transport is gone the number is free again.
        r, w = socket.socketpair()
        with r, w:
            loop.add_reader(r.fileno(), lambda: None)
            assert loop.remove_reader(r.fileno())

    run(main())


def test_close_calls_connection_lost_exactly_once(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        transport.close()
        assert transport.is_closing()
        assert is_reading(transport) in (False, None)
        transport.close()
        transport.abort()
        assert protocol.events == ["connection_made"]  # not called synchronously
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        await asyncio.sleep(0.05)
        transport.close()
        transport.abort()
        await asyncio.sleep(0.05)
        assert protocol.lost_calls == 1
        assert protocol.events == ["connection_made", "connection_lost"]

    with no_resource_warnings():
        run(main())


def test_abort_calls_connection_lost_exactly_once(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        sock = transport.get_extra_info("socket")
        transport.abort()
        assert transport.is_closing()
        transport.abort()
        transport.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        await asyncio.sleep(0.05)
        assert protocol.lost_calls == 1
        assert sock.fileno() == -1

    with no_resource_warnings():
        run(main())


def test_close_before_connection_made_runs(run):
    async def main():
        loop = asyncio.get_running_loop()
        made = []

        class CloseAtOnce(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                made.append(transport)
                transport.close()

        transport, protocol = await loop.create_datagram_endpoint(
            CloseAtOnce, local_addr=("127.0.0.1", 0)
        )
        assert made == [transport]
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["connection_made", "connection_lost"]

    run(main())


def test_no_datagrams_after_close(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        with udp_peer() as peer:
            transport.close()
            peer.sendto(b"too late", address)
            await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert protocol.events == ["connection_made", "connection_lost"]

    run(main())


def test_sendto_on_a_closed_connected_endpoint_is_dropped_and_logged(run, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname()
            )
            await close_endpoint(transport, protocol)
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(7):
                    transport.sendto(b"dropped")
            assert nothing_arrives(peer)
            # asyncio logs from the threshold'th dropped write on.
            warned = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
            assert warned == ["socket.send() raised exception."] * 3

    run(main())


def test_pause_and_resume_reading(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        if not CAN_PAUSE_READING:
            for method in (transport.is_reading, transport.pause_reading,
                           transport.resume_reading):  # fmt: skip
                with pytest.raises(NotImplementedError):
                    method()
            with udp_peer() as peer:
                peer.sendto(b"still read", address)
                assert (await protocol.next_datagram())[0] == b"still read"
            await close_endpoint(transport, protocol)
            return
        with udp_peer() as peer:
            transport.pause_reading()
            assert not transport.is_reading()
            transport.pause_reading()  # idempotent
            for i in range(3):
                peer.sendto(b"%d" % i, address)
            await asyncio.sleep(0.1)
            assert protocol.datagrams.empty()
            transport.resume_reading()
            assert transport.is_reading()
            transport.resume_reading()
            got = [(await protocol.next_datagram())[0] for _ in range(3)]
            assert got == [b"0", b"1", b"2"]
            transport.pause_reading()
        transport.close()
        transport.resume_reading()  # no effect once closing
        assert not transport.is_reading()
        await asyncio.wait_for(protocol.lost, TIMEOUT)

    run(main())


class Scheduling(asyncio.DatagramProtocol):
    """Records each datagram and, with ``schedule``, a callback it
    schedules, in order; pauses reading after ``pause_after`` datagrams."""

    def __init__(self, schedule=True, pause_after=None):
        self.log = []
        self.received = 0
        self.schedule = schedule
        self.pause_after = pause_after

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received += 1
        self.log.append(("datagram", data))
        if self.schedule:
            asyncio.get_running_loop().call_soon(self.log.append, ("callback", data))
        if self.received == self.pause_after:
            self.transport.pause_reading()


def test_callbacks_a_datagram_schedules_run_before_the_next_datagram(run):
    """Five datagrams already waiting: asyncio delivers one per iteration, so
    what each handler schedules runs before the next is delivered."""

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Scheduling, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        with udp_peer() as peer:
            if CAN_PAUSE_READING:  # so that all five wait when reading starts
                transport.pause_reading()
            for i in range(5):
                peer.sendto(b"%d" % i, address)
            await asyncio.sleep(0.05)
            if CAN_PAUSE_READING:
                transport.resume_reading()
            await wait_until(lambda: len(protocol.log) >= 10)
        transport.close()
        expected = []
        for i in range(5):
            expected += [("datagram", b"%d" % i), ("callback", b"%d" % i)]
        assert protocol.log == expected

    run(main())


@pytest.mark.skipif(not CAN_PAUSE_READING, reason="3.10's datagram transport cannot pause")
def test_pausing_inside_datagram_received_stops_delivery_at_once(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: Scheduling(schedule=False, pause_after=2), local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        with udp_peer() as peer:
            transport.pause_reading()
            for i in range(5):
                peer.sendto(b"%d" % i, address)
            await asyncio.sleep(0.05)
            transport.resume_reading()
            await asyncio.sleep(0.1)
            datagrams = [data for kind, data in protocol.log if kind == "datagram"]
            assert datagrams == [b"0", b"1"]
            assert not transport.is_reading()
            protocol.pause_after = None
            transport.resume_reading()
            await wait_until(lambda: protocol.received >= 5)
        transport.close()
        assert [data for kind, data in protocol.log if kind == "datagram"] == [
            b"0", b"1", b"2", b"3", b"4"]  # fmt: skip

    run(main())


def _repr_state(transport):
    """The transport's repr without its class name and fd number."""
    text = repr(transport)
    assert text.startswith("<") and text.endswith(">")
    words = text[1:-1].split(" ")[1:]
    return " ".join("fd=N" if w.startswith("fd=") else w for w in words)


def test_repr_follows_the_state(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        remote = os.path.join(sock_dir, "slow.sock")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            peer.bind(remote)
            seen_at_connection_made = []

            class Watch(Recorder):
                def connection_made(self, transport):
                    super().connection_made(transport)
                    seen_at_connection_made.append(_repr_state(transport))

            transport, protocol = await loop.create_datagram_endpoint(
                Watch, remote_addr=remote, family=socket.AF_UNIX
            )
            # Reading starts only after connection_made.
            states = seen_at_connection_made + [_repr_state(transport)]
            if CAN_PAUSE_READING:
                transport.pause_reading()
                states.append(_repr_state(transport))
                transport.resume_reading()
            while transport.get_write_buffer_size() == 0:
                transport.sendto(b"1234")
            states.append(_repr_state(transport))
            transport.close()
            states.append(_repr_state(transport))
            peer.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    peer.recv(64)
            await asyncio.wait_for(protocol.lost, TIMEOUT)
            states.append(_repr_state(transport))
        return states

    header = 8 if PY_VERSION >= (3, 13) else 0
    expected = [
        "fd=N read=idle write=<idle, bufsize=0>",  # in connection_made
        "fd=N read=polling write=<idle, bufsize=0>",
    ]
    if CAN_PAUSE_READING:
        expected.append("fd=N read=idle write=<idle, bufsize=0>")
    expected += [
        f"fd=N read=polling write=<polling, bufsize={4 + header}>",
        f"closing fd=N read=idle write=<polling, bufsize={4 + header}>",
        "closed fd=N",
    ]
    assert run(main()) == expected


def test_icmp_port_unreachable_goes_to_error_received(run):
    async def main():
        loop = asyncio.get_running_loop()
        port = closed_udp_port()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, remote_addr=("127.0.0.1", port)
        )
        transport.sendto(b"anyone there?")
        exc = await protocol.next_error()
        assert type(exc) is ConnectionRefusedError
        assert exc.errno == errno.ECONNREFUSED
        assert str(exc) == "[Errno 111] Connection refused"
        # The endpoint stays usable: once something listens there, the
        # next datagram gets through.
        assert not transport.is_closing()
        assert is_reading(transport) in (True, None)
        assert not protocol.lost.done()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.settimeout(TIMEOUT)
            listener.bind(("127.0.0.1", port))
            transport.sendto(b"now?")
            assert (await recv_in_thread(listener))[0] == b"now?"
            listener.sendto(b"yes", transport.get_extra_info("sockname"))
            assert await protocol.next_datagram() == (b"yes", ("127.0.0.1", port))
        assert "connection_lost" not in protocol.events
        await close_endpoint(transport, protocol)
        assert protocol.lost_calls == 1

    run(main())


def test_send_errors_go_to_error_received(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        # Too big for a UDP datagram: the kernel refuses the send.
        transport.sendto(b"x" * 70000, ("127.0.0.1", 9))
        exc = await protocol.next_error()
        assert type(exc) is OSError and exc.errno == errno.EMSGSIZE
        assert str(exc) == "[Errno 90] Message too long"
        assert not transport.is_closing()
        with udp_peer() as peer:
            transport.sendto(b"still fine", peer.getsockname())
            assert (await recv_in_thread(peer))[0] == b"still fine"
        await close_endpoint(transport, protocol)

    run(main())


def test_a_malformed_address_is_a_fatal_error(run):
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        sock = transport.get_extra_info("socket")
        # Not an OSError: asyncio treats it as a bug, not a send failure.
        transport.sendto(b"x", ("::1", 9, 0, 0))
        assert transport.is_closing()
        exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert type(exc) is TypeError
        assert str(exc) == "AF_INET address must be a pair (host, port)"
        assert len(contexts) == 1
        assert contexts[0]["message"] == "Fatal write error on datagram transport"
        assert contexts[0]["exception"] is exc
        assert protocol.errors.empty()
        assert protocol.events == ["connection_made", "connection_lost"]
        assert sock.fileno() == -1

    run(main())


def test_sendto_accepts_bytes_like_objects(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        with udp_peer() as peer:
            target = peer.getsockname()
            buffer = bytearray(b"bytearray")
            transport.sendto(b"bytes", target)
            transport.sendto(buffer, target)
            buffer[:] = b"changed"  # the datagram already left
            transport.sendto(memoryview(b"memoryview"), target)
            transport.sendto(memoryview(b"..slice..")[2:7], target)
            got = [(await recv_in_thread(peer))[0] for _ in range(4)]
            assert got == [b"bytes", b"bytearray", b"memoryview", b"slice"]
            for bad, name in (("text", "str"), (42, "int"), (array.array("b", b"ab"), "array"),
                              (None, "NoneType")):  # fmt: skip
                with pytest.raises(TypeError) as info:
                    transport.sendto(bad, target)
                assert str(info.value) == (
                    f"data argument must be a bytes-like object, not {name!r}"
                )
            assert nothing_arrives(peer)
        assert protocol.errors.empty()
        await close_endpoint(transport, protocol)

    run(main())


def test_empty_datagrams(run):
    """3.13 sends an empty datagram; earlier versions drop it silently.
    Receiving one works on every version."""

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        with udp_peer() as peer:
            target = peer.getsockname()
            transport.sendto(b"", target)
            transport.sendto(bytearray(), target)
            transport.sendto(memoryview(b""), target)
            transport.sendto(b"marker", target)
            got = []
            while not got or got[-1] != b"marker":
                got.append((await recv_in_thread(peer))[0])
            assert got == ([b""] * 3 if PY_VERSION >= (3, 13) else []) + [b"marker"]
            # The type check comes first on every version.
            with pytest.raises(TypeError):
                transport.sendto("", target)

            peer.sendto(b"", transport.get_extra_info("sockname"))
            assert await protocol.next_datagram() == (b"", target)
        await close_endpoint(transport, protocol)

    run(main())


def test_empty_datagram_address_check_per_version(run):
    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname()
            )
            # Before 3.13 an empty datagram is dropped before its address is
            # looked at; 3.13 checks the address.
            if PY_VERSION >= (3, 13):
                with pytest.raises(ValueError):
                    transport.sendto(b"", ("127.0.0.1", 9))
            else:
                transport.sendto(b"", ("127.0.0.1", 9))
            await close_endpoint(transport, protocol)

    run(main())


def test_write_buffering_and_flow_control(run, sock_dir):
    """A Unix datagram peer that does not read makes the kernel refuse
    sends (EAGAIN): datagrams queue in the transport, the protocol is
    paused above the high-water mark, and everything is delivered in order
    once the peer reads."""

    header = 8 if PY_VERSION >= (3, 13) else 0

    async def main():
        loop = asyncio.get_running_loop()
        remote = os.path.join(sock_dir, "slow.sock")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            peer.bind(remote)
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=remote, family=socket.AF_UNIX
            )
            transport.set_write_buffer_limits(high=4000, low=1000)
            size = 1000
            sent = 0
            while transport.get_write_buffer_size() == 0:
                transport.sendto(struct.pack("!I", sent) + bytes(size - 4))
                sent += 1
                assert sent < 100_000, "the kernel never refused a datagram"
            assert protocol.events == ["connection_made"]
            assert transport.get_write_buffer_size() == size + header
            queued = 1
            while "pause_writing" not in protocol.events:
                transport.sendto(struct.pack("!I", sent) + bytes(size - 4))
                sent += 1
                queued += 1
            assert transport.get_write_buffer_size() == queued * (size + header)
            assert queued * (size + header) > 4000
            assert protocol.events == ["connection_made", "pause_writing"]
            # Sending still works while paused; it only queues.
            transport.sendto(struct.pack("!I", sent) + bytes(size - 4))
            sent += 1
            queued += 1
            assert transport.get_write_buffer_size() == queued * (size + header)

            peer.setblocking(False)
            received = []
            deadline = time.monotonic() + TIMEOUT
            while len(received) < sent and time.monotonic() < deadline:
                try:
                    received.append(peer.recv(65536))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert [struct.unpack("!I", d[:4])[0] for d in received] == list(range(sent))
            assert all(len(d) == size for d in received)
            assert protocol.events == ["connection_made", "pause_writing", "resume_writing"]
            if PY_VERSION != (3, 13):
                # 3.13.0 counts the header in but not out (fixed later), so
                # its size never returns to 0; every other version's does.
                assert transport.get_write_buffer_size() == 0
            await close_endpoint(transport, protocol)

    run(main())


def test_close_with_queued_datagrams_sends_them_first(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        remote = os.path.join(sock_dir, "slow.sock")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            peer.bind(remote)
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=remote, family=socket.AF_UNIX
            )
            sent = 0
            while transport.get_write_buffer_size() == 0:
                transport.sendto(struct.pack("!I", sent))
                sent += 1
            for _ in range(10):
                transport.sendto(struct.pack("!I", sent))
                sent += 1
            transport.close()
            await asyncio.sleep(0.1)
            # Not lost until the queue has gone out.
            assert not protocol.lost.done()
            peer.setblocking(False)
            received = []
            deadline = time.monotonic() + TIMEOUT
            while len(received) < sent and time.monotonic() < deadline:
                try:
                    received.append(struct.unpack("!I", peer.recv(64))[0])
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert received == list(range(sent))
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert protocol.lost_calls == 1

    run(main())


def test_abort_drops_queued_datagrams(run, sock_dir):
    async def main():
        loop = asyncio.get_running_loop()
        remote = os.path.join(sock_dir, "slow.sock")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            peer.bind(remote)
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=remote, family=socket.AF_UNIX
            )
            sent = 0
            while transport.get_write_buffer_size() == 0:
                transport.sendto(struct.pack("!I", sent))
                sent += 1
            transport.abort()
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            peer.setblocking(False)
            received = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    received.append(struct.unpack("!I", peer.recv(64))[0])
            # The one queued datagram never went out.
            assert received == list(range(sent - 1))

    run(main())


def test_connection_lost_closes_the_socket_and_frees_the_fd(run):
    async def main():
        loop = asyncio.get_running_loop()
        before = len(os.listdir("/proc/self/fd"))
        endpoints = []
        for _ in range(50):
            endpoints.append(
                await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            )
        assert len(os.listdir("/proc/self/fd")) == before + 50
        for transport, protocol in endpoints:
            transport.close()
        for transport, protocol in endpoints:
            await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert len(os.listdir("/proc/self/fd")) == before

    with no_resource_warnings():
        run(main())


def test_unclosed_transport_warns(loop_factory):
    def scenario():
        lp = loop_factory()
        try:
            async def make():
                return await asyncio.get_running_loop().create_datagram_endpoint(
                    Quiet, local_addr=("127.0.0.1", 0)
                )

            transport, _ = lp.run_until_complete(make())
            sock = transport.get_extra_info("socket")
            fd = sock.fileno()
        finally:
            lp.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del transport, sock
            gc.collect()
        return fd, [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]

    fd, messages = scenario()
    assert len(messages) == 1 and messages[0].startswith("unclosed transport <")
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the warning transport


def test_protocol_errors_in_datagram_received_go_to_the_exception_handler(run):
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        class Failing(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                if data == b"boom":
                    raise RuntimeError("boom")

        transport, protocol = await loop.create_datagram_endpoint(
            Failing, local_addr=("127.0.0.1", 0)
        )
        address = transport.get_extra_info("sockname")
        with udp_peer() as peer:
            peer.sendto(b"boom", address)
            peer.sendto(b"after", address)
            got = [(await protocol.next_datagram())[0] for _ in range(2)]
        assert got == [b"boom", b"after"]
        assert len(contexts) == 1
        assert isinstance(contexts[0]["exception"], RuntimeError)
        assert contexts[0]["message"] == (
            f"Exception in callback {type(transport).__name__}._read_ready()"
        )
        assert not transport.is_closing()
        await close_endpoint(transport, protocol)

    run(main())


# ---- a DNS-style request/response exchange ------------------------------------------


def _answer_for(name):
    return hashlib.sha256(name).digest()[:16]


class Resolver(asyncio.DatagramProtocol):
    """Answers ``id(2) + name`` with ``id(2) + name_len(1) + name +
    sha256(name)[:16]``; ignores the first attempt of every 97th query so
    that clients have to retry."""

    def __init__(self):
        self.transport = None
        self.seen = set()
        self.queries = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.queries += 1
        qid, name = struct.unpack("!H", data[:2])[0], data[2:]
        if qid % 97 == 0 and qid not in self.seen:
            self.seen.add(qid)
            return
        self.transport.sendto(data[:2] + bytes([len(name)]) + name + _answer_for(name), addr)


class Client(asyncio.DatagramProtocol):
    """Matches answers to pending queries by id."""

    def __init__(self):
        self.transport = None
        self.pending = {}
        self.stray = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        qid = struct.unpack("!H", data[:2])[0]
        future = self.pending.get(qid)
        if future is None or future.done():
            self.stray += 1  # a late answer to a query already answered
            return
        length = data[2]
        future.set_result((data[3:3 + length], data[3 + length:]))

    def error_received(self, exc):
        raise AssertionError(f"unexpected error_received({exc!r})")

    async def query(self, qid, name, timeout=0.5, attempts=20):
        loop = asyncio.get_running_loop()
        for _ in range(attempts):
            future = loop.create_future()
            self.pending[qid] = future
            self.transport.sendto(struct.pack("!H", qid) + name)
            try:
                return await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                continue
            finally:
                del self.pending[qid]
        raise AssertionError(f"query {qid} never answered")


def test_dns_style_two_thousand_concurrent_queries(run):
    async def main():
        loop = asyncio.get_running_loop()
        server, resolver = await loop.create_datagram_endpoint(
            Resolver, local_addr=("127.0.0.1", 0)
        )
        transport, client = await loop.create_datagram_endpoint(
            Client, remote_addr=server.get_extra_info("sockname")
        )
        names = [b"host-%d.example.test" % i for i in range(2000)]
        started = time.monotonic()
        answers = await asyncio.wait_for(
            asyncio.gather(*(client.query(qid, name) for qid, name in enumerate(names))),
            30,
        )
        elapsed = time.monotonic() - started
        assert [name for name, _ in answers] == names
        assert all(value == _answer_for(name) for name, value in answers)
        assert elapsed < 20
        assert not client.pending
        # Every query got at least one try, the deliberately dropped ones two.
        assert resolver.queries >= 2000 + len(resolver.seen)
        assert len(resolver.seen) == len([q for q in range(2000) if q % 97 == 0])
        transport.close()
        server.close()
        await asyncio.sleep(0.01)

    with no_resource_warnings():
        run(main())


# ---- the per-datagram path: addresses, replies, audit events ------------------


def _link_local_address():
    """(address, scope id) of an IPv6 link-local address on this host, or
    None."""
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return None
    for hexaddr, index, _, scope, _, name in rows:
        if scope == "20":  # link scope
            packed = bytes.fromhex(hexaddr)
            return socket.inet_ntop(socket.AF_INET6, packed), int(index, 16), name
    return None


def _address_cases():
    cases = [pytest.param(socket.AF_INET, "127.0.0.1", socket.AF_INET, "127.0.0.1", id="ipv4")]
    if HAS_IPV6:
        cases.append(pytest.param(socket.AF_INET6, "::1", socket.AF_INET6, "::1", id="ipv6"))
        # An IPv4 datagram reaching a dual-stack socket: an IPv4-mapped
        # address.
        cases.append(pytest.param(socket.AF_INET6, "::", socket.AF_INET, "127.0.0.1", id="mapped"))
        link = _link_local_address()
        if link is not None:
            address, index, _ = link
            cases.append(
                pytest.param(
                    socket.AF_INET6, (address, 0, 0, index), socket.AF_INET6,
                    (address, 0, 0, index), id="link-local",
                )  # fmt: skip
            )
    return cases


@pytest.mark.parametrize("family, host, peer_family, peer_host", _address_cases())
def test_sender_addresses_are_the_socket_modules_and_replies_reach_them(
    run, family, host, peer_family, peer_host
):
    """datagram_received gets the address recvfrom would give (the
    flowinfo and scope id of IPv6 included), and sendto to that object
    reaches the sender."""

    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(host if isinstance(host, tuple) else (host, 0))
        transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
        port = sock.getsockname()[1]
        with socket.socket(peer_family, socket.SOCK_DGRAM) as peer:
            peer.settimeout(TIMEOUT)
            peer.bind(peer_host if isinstance(peer_host, tuple) else (peer_host, 0))
            target = (peer_host[0], port, 0, peer_host[3]) if isinstance(peer_host, tuple) else (peer_host, port)
            with socket.socket(family, socket.SOCK_DGRAM) as reference:
                # What the socket module itself reports for this sender.
                if family == socket.AF_INET6 and host == "::":
                    reference.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                reference.bind(host if isinstance(host, tuple) else (host, 0))
                reference.settimeout(TIMEOUT)
                ref_port = reference.getsockname()[1]
                ref_target = target[:1] + (ref_port,) + target[2:]
                peer.sendto(b"reference", ref_target)
                _, expected = reference.recvfrom(100)
            for round_ in range(3):
                payload = b"ping %d" % round_
                peer.sendto(payload, target)
                data, addr = await protocol.next_datagram()
                assert (data, addr) == (payload, expected)
                assert type(addr) is tuple and [type(x) for x in addr] == [type(x) for x in expected]
                transport.sendto(b"reply to " + payload, addr)
                reply, source = await recv_in_thread(peer)
                assert (reply, source[1]) == (b"reply to " + payload, port)
        await close_endpoint(transport, protocol)

    run(main())


_audited = None  # a list while a test records socket.sendto events


def _audit_hook(event, args):
    if _audited is not None and event == "socket.sendto":
        _audited.append(args)


_hook_installed = False


def _install_audit_hook():
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit_hook)  # cannot be removed: a no-op when idle
        _hook_installed = True


def test_replies_raise_the_sendto_audit_event(run):
    """Every sendto raises the socket module's audit event, with the socket
    and the address, also when it goes to the address just received."""
    _install_audit_hook()

    async def main():
        global _audited
        with udp_peer() as peer:
            transport, protocol, addr = await endpoint_heard_from(peer)
            sock = transport.get_extra_info("socket")
            _audited = []
            try:
                transport.sendto(b"reply", addr)
                transport.sendto(b"again", peer.getsockname())
            finally:
                recorded, _audited = _audited, None
            assert [a[1] for a in recorded] == [addr, peer.getsockname()]
            assert all(a[0].fileno() == sock.fileno() for a in recorded)
            assert await recv_in_thread(peer) == (b"reply", sock.getsockname())
            assert await recv_in_thread(peer) == (b"again", sock.getsockname())
        await close_endpoint(transport, protocol)

    run(main())


def test_max_size_is_read_for_every_datagram(run):
    """Lowering max_size inside datagram_received truncates the datagrams
    read after it, also those waiting already."""

    async def main():
        loop = asyncio.get_running_loop()
        lengths = []

        class Shrink(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                lengths.append(len(data))
                self.transport.max_size = 2

        transport, protocol = await loop.create_datagram_endpoint(
            Shrink, local_addr=("127.0.0.1", 0)
        )
        with udp_peer() as peer:
            for _ in range(3):
                peer.sendto(b"0123456789", transport.get_extra_info("sockname"))
            await wait_until(lambda: len(lengths) == 3)
        assert lengths == [10, 2, 2]
        await close_endpoint(transport, protocol)

    run(main())


def test_a_max_size_above_256_kib_still_receives(run):
    """A transport whose max_size was raised reads as asyncio does
    (ferroloop's scratch buffer holds 256 KiB)."""

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        transport.max_size = 512 * 1024
        with udp_peer() as peer:
            for size in (1, 65507):
                payload = os.urandom(size)
                peer.sendto(payload, transport.get_extra_info("sockname"))
                assert await protocol.next_datagram() == (payload, peer.getsockname())
        await close_endpoint(transport, protocol)

    run(main())


def test_ferroloop_sends_and_receives_ip_datagrams_natively(loop_factory):
    """The plain socket class over IPv4/IPv6 takes the native path;
    anything else (a subclass, a Unix socket) the socket's own methods.
    A silent fall back to Python would only show in benchmarks."""
    lp = loop_factory()
    if isinstance(lp, asyncio.BaseEventLoop):
        lp.close()
        pytest.skip("ferroloop's own path")

    async def kinds():
        loop = asyncio.get_running_loop()
        found = {}
        plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        plain.bind(("127.0.0.1", 0))
        sub = RecordingSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sub.bind(("127.0.0.1", 0))
        unix, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        _.close()
        for name, sock in (("plain", plain), ("subclass", sub), ("unix", unix)):
            transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
            found[name] = type(transport._io).__name__
            transport.close()
            await protocol.lost
        return found

    try:
        assert lp.run_until_complete(kinds()) == {
            "plain": "DatagramIo", "subclass": "NoneType", "unix": "NoneType",
        }  # fmt: skip
    finally:
        lp.close()
    # Whether the socket still owns its fd is read from the socket object
    # (checked against fileno() first) rather than by calling fileno().
    from ferroloop import _core

    assert _core._sock_fields_read_directly()


def test_sendto_between_close_and_connection_lost(run):
    """asyncio drops a connected endpoint's datagrams once close() is
    called, but an unconnected endpoint still sends until connection_lost
    (its checks look at the remote address, not at closing)."""

    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            connected, cprotocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname()
            )
            connected.close()
            connected.sendto(b"dropped")
            assert await asyncio.wait_for(cprotocol.lost, TIMEOUT) is None
            assert nothing_arrives(peer)

            transport, protocol, addr = await endpoint_heard_from(peer)
            transport.close()
            transport.sendto(b"still sent", addr)
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert (await recv_in_thread(peer))[0] == b"still sent"

    run(main())


def test_an_audit_hook_refusing_sendto_is_a_fatal_error(run):
    """The socket module's audit event runs before the send; a hook that
    raises makes the send fail as any non-OSError does: a fatal error."""
    _install_audit_hook()

    async def main():
        global _audited
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        with udp_peer() as peer:
            transport, protocol, addr = await endpoint_heard_from(peer)
            _audited = _Refuse()
            try:
                transport.sendto(b"refused", addr)
            finally:
                _audited = None
            exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            assert type(exc) is LookupError and str(exc) == "no sendto here"
            assert [c["message"] for c in contexts] == ["Fatal write error on datagram transport"]
            assert nothing_arrives(peer)

    run(main())


class _Refuse(list):
    """An audit record that refuses the event it is given."""

    def append(self, args):
        raise LookupError("no sendto here")


def test_a_saved_sendto_is_a_bound_method_of_the_transport(run):
    """transport.sendto behaves as a bound method: bound to the transport,
    equal each time it is looked up, weakly referenceable as a WeakMethod,
    keeping the transport alive, and taking asyncio's arguments."""

    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname()
            )
            send = transport.sendto
            assert send.__self__ is transport and send == transport.sendto
            assert hash(send) == hash(transport.sendto)
            assert send.__func__ is type(transport).sendto
            with pytest.raises(TypeError) as info:
                send(b"a", None, 1)
            assert str(info.value).endswith(
                "sendto() takes from 2 to 3 positional arguments but 4 were given"
            )
            send(data=b"by keyword")
            assert (await recv_in_thread(peer))[0] == b"by keyword"
            weak_send = weakref.WeakMethod(send)
            assert weak_send() == send
            if CAN_PAUSE_READING:
                # Not reading, so the loop holds nothing of the transport:
                # only the saved method keeps it alive, as on asyncio.
                transport.pause_reading()
            sockname = transport.get_extra_info("sockname")
            ref = weakref.ref(transport)
            protocol.transport = None
            del transport
            gc.collect()
            assert ref() is not None
            send(b"still alive")
            assert await recv_in_thread(peer) == (b"still alive", sockname)
            ref().close()
            await asyncio.wait_for(protocol.lost, TIMEOUT)

    run(main())


def test_a_saved_sendto_after_connection_lost_sends_nothing(run):
    """A sendto kept past connection_lost fails as asyncio's does, and never
    sends from another socket that got the same fd number."""

    async def main():
        with udp_peer() as peer, udp_peer() as victim:
            transport, protocol, addr = await endpoint_heard_from(peer)
            send = transport.sendto
            old_fd = transport.get_extra_info("socket").fileno()
            await close_endpoint(transport, protocol)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.connect(victim.getsockname())
                assert other.fileno() == old_fd  # the lowest free number
                with pytest.raises(AttributeError):
                    send(b"leak", addr)
                with pytest.raises(AttributeError):
                    send(b"leak")
            assert nothing_arrives(peer) and nothing_arrives(victim)

    run(main())


def test_a_bytearray_resized_by_an_audit_hook_is_not_sent(run):
    """The data is held (as a buffer export) across the audit event: a hook
    that resizes a bytearray fails, and the send is a fatal error."""
    _install_audit_hook()

    async def main():
        global _audited
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        data = bytearray(b"A" * 60000)
        with udp_peer() as peer:
            transport, protocol, addr = await endpoint_heard_from(peer)
            _audited = _Shrink(data)
            try:
                transport.sendto(data, addr)
            finally:
                _audited = None
            exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
            assert type(exc) is BufferError
            assert [c["message"] for c in contexts] == ["Fatal write error on datagram transport"]
            assert nothing_arrives(peer)

    run(main())


class _Shrink(list):
    """An audit record that empties a bytearray when the event comes."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def append(self, args):
        self.target[:] = b""


def test_sendto_after_the_program_closed_the_socket(run):
    """A socket given with sock= and closed by the program: sendto reports
    EBADF to error_received, and nothing leaves from another socket that
    got the same fd number."""

    async def main():
        loop = asyncio.get_running_loop()
        with udp_peer() as peer, udp_peer() as victim:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(peer.getsockname())
            transport, protocol = await loop.create_datagram_endpoint(Recorder, sock=sock)
            fd = sock.fileno()
            if CAN_PAUSE_READING:
                transport.pause_reading()  # the loop no longer watches it
            else:
                loop._remove_reader(fd)  # what pausing does, on 3.10
            sock.close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.connect(victim.getsockname())
                assert other.fileno() == fd
                transport.sendto(b"leak")
                exc = await protocol.next_error()
                assert type(exc) is OSError and exc.errno == errno.EBADF
            assert nothing_arrives(peer) and nothing_arrives(victim)
            transport.abort()
            await asyncio.wait_for(protocol.lost, TIMEOUT)

    run(main())
