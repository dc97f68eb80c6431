"""loop.sock_recv / sock_sendall: the registrations they leave behind.

ferroloop serves plain sockets natively and keeps a finished receive's
poller registration parked for the socket's next receive (sock_ops.rs).
These tests pin what a program can observe of that, on both loops: no
callback seems registered afterwards, a closed socket's fd number can be
reused by anything, a parked registration never makes the loop spin, and a
dropped socket is really closed.
"""

import asyncio
import gc
import os
import socket
import time

import pytest

TIMEOUT = 5


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


def test_finished_recv_leaves_no_reader(loop):
    a, b = pair()
    with a, b:

        async def main():
            b.send(b"x")
            first = await loop.sock_recv(a, 10)  # answered at once
            later = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)  # now it has to wait
            b.send(b"y")
            return first, await later

        assert run(loop, main()) == (b"x", b"y")
        assert loop.remove_reader(a.fileno()) is False
        assert loop.remove_writer(a.fileno()) is False


def test_recv_after_many_rounds_still_sees_every_byte(loop):
    a, b = pair()
    with a, b:

        async def main():
            got = bytearray()
            for i in range(200):
                reply = loop.create_task(loop.sock_recv(a, 100))
                await asyncio.sleep(0)
                b.send(b"%d," % i)
                got += await reply
            return bytes(got)

        assert run(loop, main()) == b"".join(b"%d," % i for i in range(200))


def test_closed_socket_fd_number_reused_by_a_new_socket(loop):
    """The parked registration belongs to the old socket: a new socket with
    the same fd number must still be watched (no hang)."""

    async def main():
        a, b = pair()
        b.send(b"1")
        assert await loop.sock_recv(a, 10) == b"1"
        pending = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        b.send(b"2")
        assert await pending == b"2"
        fd = a.fileno()
        a.close()
        b.close()
        for _ in range(20):
            c, d = pair()
            if c.fileno() == fd:
                break
            c.close()
            d.close()
        else:
            pytest.skip("the fd number was not reused")
        with c, d:
            waiting = loop.create_task(loop.sock_recv(c, 10))
            await asyncio.sleep(0.01)
            d.send(b"new")
            assert await waiting == b"new"
        return fd

    run(loop, main())


def test_closed_socket_fd_number_reused_by_add_reader(loop):
    async def main():
        a, b = pair()
        waiting = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        b.send(b"1")
        assert await waiting == b"1"
        fd = a.fileno()
        a.close()
        b.close()
        c, d = pair()
        if fd not in (c.fileno(), d.fileno()):
            c.close()
            d.close()
            pytest.skip("the fd number was not reused")
        reused, other = (c, d) if c.fileno() == fd else (d, c)
        with c, d:
            readable = loop.create_future()
            loop.add_reader(fd, readable.set_result, "readable")
            other.send(b"ping")
            assert await asyncio.wait_for(readable, TIMEOUT) == "readable"
            assert loop.remove_reader(fd) is True
            assert reused.recv(10) == b"ping"

    run(loop, main())


def test_data_arriving_with_no_recv_pending_does_not_spin(loop):
    a, b = pair()
    with a, b:

        async def main():
            waiting = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            b.send(b"1")
            assert await waiting == b"1"
            b.send(b"unread")  # readable from now on; nobody asks
            start = time.thread_time()
            await asyncio.sleep(0.3)
            busy = time.thread_time() - start
            assert await loop.sock_recv(a, 10) == b"unread"
            return busy

        assert run(loop, main()) < 0.1


def test_dropped_socket_is_closed_after_recv(loop):
    """A parked waiter holds its socket weakly: dropping the socket closes
    the fd, as on asyncio."""
    a, b = pair()
    with b:

        async def main():
            waiting = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            b.send(b"1")
            return await waiting

        assert run(loop, main()) == b"1"
        fd = a.fileno()
        a_ref = a.detach()  # the fd number only; the object no longer owns it
        assert a_ref == fd
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)

        async def again():
            waiting = loop.create_task(loop.sock_recv(sock, 10))
            await asyncio.sleep(0.01)
            b.send(b"2")
            return await waiting

        assert run(loop, again()) == b"2"
        del sock
        gc.collect()
        with pytest.raises(OSError):
            os.fstat(fd)


def test_transport_takes_over_a_socket_used_by_sock_recv(loop):
    a, b = pair()
    with b:

        async def main():
            waiting = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            b.send(b"hello")
            assert await waiting == b"hello"
            received = loop.create_future()

            class Proto(asyncio.Protocol):
                def data_received(self, data):
                    received.set_result(data)

            transport, _ = await loop.create_connection(Proto, sock=a)
            b.send(b"via transport")
            try:
                return await received
            finally:
                transport.close()

        assert run(loop, main()) == b"via transport"


def test_cancelled_sendall_stops_sending(loop):
    a, b = pair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        async def main():
            big = b"x" * (4 * 1024 * 1024)
            task = loop.create_task(loop.sock_sendall(a, big))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            drained = 0
            while True:  # what was sent before the cancel
                try:
                    chunk = b.recv(1 << 20)
                except BlockingIOError:
                    break
                drained += len(chunk)
            await asyncio.sleep(0.05)  # a zombie writer would send more now
            try:
                more = len(b.recv(1 << 20))
            except BlockingIOError:
                more = 0
            await loop.sock_sendall(a, b"after")
            await asyncio.sleep(0.01)
            return drained, more, b.recv(100)

        drained, more, after = run(loop, main())
        assert 0 < drained < 4 * 1024 * 1024
        assert more == 0
        assert after == b"after"
        assert loop.remove_writer(a.fileno()) is False


def test_recv_on_a_socket_subclass_calls_its_method(loop):
    calls = []

    class Recording(socket.socket):
        def recv(self, n, *args):
            calls.append(n)
            return super().recv(n, *args)

    a, b = pair()
    with a, b:
        sub = Recording(fileno=os.dup(a.fileno()))
        sub.setblocking(False)
        with sub:

            async def main():
                waiting = loop.create_task(loop.sock_recv(sub, 7))
                await asyncio.sleep(0.01)
                b.send(b"sub")
                return await waiting

            assert run(loop, main()) == b"sub"
    assert calls and set(calls) == {7}


def test_blocking_mode_is_judged_at_every_call(loop):
    """In debug mode asyncio refuses a blocking socket on every sock_recv
    and sock_sendall; a socket switched between blocking and non-blocking
    between calls is judged as it is at each call (ferroloop reads the
    mode from the socket object rather than calling gettimeout())."""
    loop.set_debug(True)
    a, b = pair()
    refused = "the socket must be non-blocking"
    with a, b:

        async def main():
            seen = []
            for timeout in (0.0, None, 0.0, 2.5, 0.0):
                a.settimeout(timeout)
                b.send(b"x")
                try:
                    seen.append(await loop.sock_recv(a, 10))
                except ValueError as exc:
                    seen.append(str(exc))
                    a.settimeout(0.0)
                    a.recv(10)  # what the refused call left unread
                    a.settimeout(timeout)
                try:
                    await loop.sock_sendall(a, b"y")
                    seen.append(b.recv(10))
                except ValueError as exc:
                    seen.append(str(exc))
            return seen

        assert run(loop, main()) == [
            b"x", b"y", refused, refused, b"x", b"y", refused, refused, b"x", b"y",
        ]  # fmt: skip


def test_an_object_passing_for_a_socket_is_not_read_as_one(loop_factory):
    """ferroloop reads a socket's fd and timeout from the socket object's
    memory; an object whose ``__class__`` says socket.socket (a mock, a
    proxy) has another layout and must be asked through its methods."""
    if loop_factory.name != "ferroloop":
        pytest.skip("ferroloop's native path")

    class PassesForASocket:
        __slots__ = ("a", "b", "c", "d")  # zeros where a socket keeps fd and timeout

        @property
        def __class__(self):
            return socket.socket

        def fileno(self):
            return -1

        def gettimeout(self):
            return None  # blocking: the native path must decline it

    fake = PassesForASocket()
    assert isinstance(fake, socket.socket)
    lp = loop_factory()
    try:
        assert lp._sock_recv_native(fake, 10) is None
    finally:
        lp.close()
