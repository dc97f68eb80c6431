"""asyncio streams over the loop's transports: what StreamReaderProtocol and
StreamReader see of incoming data, including when their methods are
replaced, their reader is gone or at end of stream, and when the reader's
buffer passes its limit. Each test runs on both loops."""

import asyncio
import socket

import pytest

TIMEOUT = 10


async def connected_pair(protocol):
    """A transport for `protocol` on one end of a socket pair, and the
    other end as a blocking-free socket the test writes with."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(lambda: protocol, sock=ours)
    return transport, theirs


def record_errors(errors):
    """Collect what the running loop hands its exception handler."""
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))


async def until(predicate):
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_stream_reader_pauses_its_transport_past_twice_its_limit_and_resumes(run):
    async def main():
        reader = asyncio.StreamReader(limit=1024)
        transport, peer = await connected_pair(asyncio.StreamReaderProtocol(reader))
        peer.sendall(b"a" * 1500)
        await until(lambda: len(reader._buffer) == 1500)
        assert transport.is_reading() and not reader._paused  # 1500 <= 2 * 1024
        peer.sendall(b"b" * 1000)
        await until(lambda: len(reader._buffer) == 2500)
        assert reader._paused and not transport.is_reading()
        assert await reader.readexactly(2000) == b"a" * 1500 + b"b" * 500
        assert not reader._paused and transport.is_reading()  # 500 <= 1024
        peer.close()
        assert await reader.read() == b"b" * 500
        assert reader.at_eof()
        transport.close()

    run(main())


def test_a_read_waiting_for_data_is_woken_with_it(run):
    async def main():
        reader = asyncio.StreamReader()
        transport, peer = await connected_pair(asyncio.StreamReaderProtocol(reader))
        pending = asyncio.ensure_future(reader.read(100))
        await asyncio.sleep(0.01)
        assert not pending.done() and reader._waiter is not None
        peer.sendall(b"hello")
        assert await asyncio.wait_for(pending, TIMEOUT) == b"hello"
        assert reader._waiter is None
        peer.close()
        transport.close()

    run(main())


def test_a_subclass_of_stream_reader_protocol_gets_its_own_data_received(run):
    seen = []

    class Recording(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(bytes(data))
            super().data_received(data.upper())

    async def main():
        reader = asyncio.StreamReader()
        transport, peer = await connected_pair(Recording(reader))
        peer.sendall(b"abc")
        assert await asyncio.wait_for(reader.readexactly(3), TIMEOUT) == b"ABC"
        assert seen == [b"abc"]
        peer.close()
        transport.close()

    run(main())


def test_methods_replaced_on_the_protocol_or_the_reader_are_called(run):
    seen = []

    async def main():
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        original = protocol.data_received
        protocol.data_received = lambda data: (seen.append(("protocol", data)), original(data))
        transport, peer = await connected_pair(protocol)
        peer.sendall(b"one")
        assert await asyncio.wait_for(reader.readexactly(3), TIMEOUT) == b"one"

        reader2 = asyncio.StreamReader()
        feed = reader2.feed_data
        reader2.feed_data = lambda data: (seen.append(("reader", data)), feed(data[::-1]))
        transport2, peer2 = await connected_pair(asyncio.StreamReaderProtocol(reader2))
        peer2.sendall(b"two")
        assert await asyncio.wait_for(reader2.readexactly(3), TIMEOUT) == b"owt"
        assert seen == [("protocol", b"one"), ("reader", b"two")]
        for closable in (peer, peer2, transport, transport2):
            closable.close()

    run(main())


def test_data_for_a_protocol_without_a_reader_is_dropped_quietly(run):
    errors = []

    async def main():
        record_errors(errors)
        protocol = asyncio.StreamReaderProtocol(None)
        transport, peer = await connected_pair(protocol)
        peer.sendall(b"nobody reads this")
        await asyncio.sleep(0.05)
        assert not transport.is_closing()
        peer.sendall(b"still open")
        await asyncio.sleep(0.05)
        assert not transport.is_closing()
        peer.close()
        transport.close()
        assert errors == []

    run(main())


def test_data_for_a_reader_gone_away_is_dropped_quietly(run):
    errors = []

    async def main():
        record_errors(errors)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, peer = await connected_pair(protocol)
        del reader  # the protocol holds it only weakly
        assert protocol._stream_reader is None
        peer.sendall(b"nobody reads this")
        await asyncio.sleep(0.05)
        assert not transport.is_closing()
        peer.close()
        transport.close()
        assert errors == []

    run(main())


@pytest.mark.skipif(not __debug__, reason="feed_data asserts only without -O")
def test_data_after_the_reader_saw_end_of_stream_is_a_fatal_protocol_error(run):
    errors = []

    async def main():
        record_errors(errors)
        reader = asyncio.StreamReader()
        transport, peer = await connected_pair(asyncio.StreamReaderProtocol(reader))
        reader.feed_eof()
        peer.sendall(b"too late")
        await until(lambda: errors)
        assert transport.is_closing()
        [context] = errors
        assert context["message"] == "Fatal error: protocol.data_received() call failed."
        assert isinstance(context["exception"], AssertionError)
        assert str(context["exception"]) == "feed_data after feed_eof"
        peer.close()

    run(main())


def test_a_stream_echo_keeps_every_byte_in_order(run):
    async def main():
        async def echo(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, limit=4096)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname(), limit=4096)
        payload = bytes(range(256)) * 4096  # 1 MiB, far past both limits
        writer.write(payload)
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert received == payload
        writer.close()
        server.close()
        await server.wait_closed()

    run(main())
