"""loop.connect_read_pipe / loop.connect_write_pipe, pinned against the
stdlib loop.

Every test runs on both loops (conftest.py) with the same assertions, and
the key expectation is written out as well, so a test can fail even if both
loops got it wrong.  The far end of each pipe is a plain file descriptor
used with os.read/os.write (in a thread where it has to block), so what is
checked is exactly what crossed the pipe.

Covered: os.pipe, a FIFO, a socketpair, a PTY (EIO at hang-up ends the
transport quietly, as asyncio), /dev/null (a character device), regular
files refused with asyncio's messages; get_extra_info('pipe'); the order
made -> data -> eof -> lost; pause_reading/resume_reading/is_reading; write
flow control with a reader that does not read (buffer bounded, pause and
resume alternate); the reader closing its end (BrokenPipeError only if data
was still queued, EPIPE from write() itself when it happens in between);
write_eof/close/abort; writes after closing and of non-bytes; a queued
bytearray is copied; a cancelled connect; repr, including after the loop is
closed.
"""

import asyncio
import errno
import gc
import hashlib
import logging
import os
import random
import socket
import sys
import time
import tracemalloc
import tty

import pytest

PY_VERSION = sys.version_info[:2]
TIMEOUT = 10
MiB = 1 << 20
# Linux pipes hold 64 KiB by default: this much always leaves a queue in the
# transport when nobody reads.
BIG = 4 * MiB
# How long "nothing happens" is watched for.
SETTLE = 0.15


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def payload(size, seed=0):
    return random.Random(seed).randbytes(size)


async def wait_until(predicate, timeout=TIMEOUT, what="a condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def in_thread(func, *args):
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def read_to_eof(fd, limit=None):
    """Blocking read of ``fd`` until EOF (or until ``limit`` bytes)."""
    chunks = []
    total = 0
    while limit is None or total < limit:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def capture_errors():
    contexts = []
    asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


class Recorder(asyncio.Protocol):
    """Records the callbacks in order (consecutive data_received calls as
    one "data" entry) and resolves ``lost`` with connection_lost's arg."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = bytearray()
        self.chunks = 0
        self.largest_chunk = 0
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self.chunks += 1
        self.largest_chunk = max(self.largest_chunk, len(data))

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


def pipe_files():
    """(read file, write file) of a fresh os.pipe, unbuffered."""
    r, w = os.pipe()
    return open(r, "rb", buffering=0), open(w, "wb", buffering=0)


async def read_pipe(pipe):
    return await asyncio.get_running_loop().connect_read_pipe(Recorder, pipe)


async def write_pipe(pipe):
    return await asyncio.get_running_loop().connect_write_pipe(Recorder, pipe)


# ---------------------------------------------------------------------------
# the read side
# ---------------------------------------------------------------------------


def test_read_pipe_made_data_eof_lost_in_order_and_the_pipe_is_closed(run):
    async def main():
        errors = capture_errors()
        rfile, wfile = pipe_files()
        transport, protocol = await read_pipe(rfile)
        assert protocol.events == ["made"]  # made before connect_read_pipe returns
        assert protocol.transport is transport
        with wfile:
            wfile.write(b"hello ")
            await wait_until(lambda: protocol.data == b"hello ", what="first data")
            wfile.write(b"world")
            await wait_until(lambda: protocol.data == b"hello world", what="second data")
        assert not transport.is_closing()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["made", "data", "eof", "lost"]
        assert transport.is_closing()
        assert rfile.closed  # the transport owns the pipe object
        assert errors == []

    run(main())


def test_read_pipe_carries_a_large_stream_in_order_in_bounded_chunks(run):
    data = payload(8 * MiB, seed=1)

    async def main():
        rfile, wfile = pipe_files()
        transport, protocol = await read_pipe(rfile)

        def produce():
            with wfile:
                wfile.write(data)

        await in_thread(produce)
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert hashlib.sha256(protocol.data).digest() == hashlib.sha256(data).digest()
        assert len(protocol.data) == len(data)
        # asyncio reads at most 256 KiB per readiness event.
        assert protocol.largest_chunk <= 256 * 1024
        assert protocol.events == ["made", "data", "eof", "lost"]

    run(main())


def test_ferroloop_read_pipe_reads_without_allocating_max_size():
    """asyncio's read-pipe transport calls os.read(fd, 256 KiB) for every
    read, allocating that much each time (an mmap, mremap and munmap
    whenever malloc maps it afresh); ferroloop reads into one buffer per
    loop and copies out what arrived."""
    ferroloop = pytest.importorskip("ferroloop")
    loop = ferroloop.new_event_loop()

    async def main():
        rfile, wfile = pipe_files()
        transport, protocol = await read_pipe(rfile)
        with wfile:
            wfile.write(b"first")
            await wait_until(lambda: protocol.data == b"first", what="first data")
            expected = bytearray(b"first")
            tracemalloc.start()
            try:
                for i in range(50):
                    wfile.write(b"%d," % i)
                    expected += b"%d," % i
                    await wait_until(lambda: protocol.data == expected, what=f"chunk {i}")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        return transport.max_size, peak

    try:
        max_size, peak = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.close()
    assert peak < max_size // 4, (peak, max_size)


def test_read_pipe_close_reports_lost_none_without_eof(run):
    async def main():
        rfile, wfile = pipe_files()
        with wfile:
            transport, protocol = await read_pipe(rfile)
            wfile.write(b"x")
            await wait_until(lambda: protocol.data == b"x", what="data")
            transport.close()
            assert transport.is_closing()
            transport.close()  # a second close is a no-op
            wfile.write(b"not read")
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert protocol.events == ["made", "data", "lost"]
            assert protocol.data == b"x"
            assert rfile.closed
            # The reader is gone: the writer sees EPIPE now.
            with pytest.raises(BrokenPipeError):
                wfile.write(b"y")

    run(main())


def test_read_pipe_pause_and_resume_reading(run):
    async def main():
        rfile, wfile = pipe_files()
        transport, protocol = await read_pipe(rfile)
        with wfile:
            if PY_VERSION >= (3, 11):
                assert transport.is_reading()
            wfile.write(b"a")
            await wait_until(lambda: protocol.data == b"a", what="first byte")
            transport.pause_reading()
            transport.pause_reading()  # no-op
            if PY_VERSION >= (3, 11):
                assert not transport.is_reading()
            wfile.write(b"b")
            await asyncio.sleep(SETTLE)
            assert protocol.data == b"a"  # nothing read while paused
            transport.resume_reading()
            transport.resume_reading()  # no-op
            if PY_VERSION >= (3, 11):
                assert transport.is_reading()
            await wait_until(lambda: protocol.data == b"ab", what="data after resume")
            transport.pause_reading()
        # EOF is not noticed while paused either.
        await asyncio.sleep(SETTLE)
        assert protocol.events == ["made", "data"]
        assert not transport.is_closing()
        transport.resume_reading()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["made", "data", "eof", "lost"]
        if PY_VERSION >= (3, 11):
            assert not transport.is_reading()
        # Both are no-ops once the transport is closed.
        transport.pause_reading()
        transport.resume_reading()

    run(main())


def test_read_pipe_is_reading_on_310_is_the_abstract_method(run):
    # 3.10's read pipe transport has no is_reading of its own: the
    # ReadTransport one raises NotImplementedError.  3.11+ answer.
    async def main():
        rfile, wfile = pipe_files()
        with wfile:
            transport, _ = await read_pipe(rfile)
            if PY_VERSION >= (3, 11):
                assert transport.is_reading() is True
            else:
                with pytest.raises(NotImplementedError):
                    transport.is_reading()
            transport.close()
            await asyncio.sleep(0)

    run(main())


def test_get_extra_info_pipe_and_protocol_accessors(run):
    async def main():
        rfile, wfile = pipe_files()
        rt, rp = await read_pipe(rfile)
        wt, wp = await write_pipe(wfile)
        assert rt.get_extra_info("pipe") is rfile
        assert wt.get_extra_info("pipe") is wfile
        assert rt.get_extra_info("nope") is None
        assert wt.get_extra_info("nope", "dflt") == "dflt"
        assert rt.get_protocol() is rp and wt.get_protocol() is wp
        other = Recorder()
        rt.set_protocol(other)
        assert rt.get_protocol() is other
        wt.write(b"to the new protocol")
        wt.close()
        assert await asyncio.wait_for(wp.lost, TIMEOUT) is None
        assert await asyncio.wait_for(other.lost, TIMEOUT) is None
        assert other.data == b"to the new protocol"
        assert other.events == ["data", "eof", "lost"]
        assert not rp.lost.done() and rp.data == b""

    run(main())


# ---------------------------------------------------------------------------
# the write side
# ---------------------------------------------------------------------------


def test_write_pipe_close_flushes_the_queue_then_reports_lost_none(run):
    data = payload(BIG, seed=2)

    async def main():
        errors = capture_errors()
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            assert protocol.events == ["made"]
            assert transport.can_write_eof()
            transport.write(data[:MiB])
            transport.write(bytearray(data[MiB : 2 * MiB]))
            transport.writelines([memoryview(data)[2 * MiB : 3 * MiB], data[3 * MiB :]])
            queued = transport.get_write_buffer_size()
            assert 0 < queued < len(data)  # the pipe took some, the rest waits
            transport.close()
            assert transport.is_closing()
            await asyncio.sleep(SETTLE)
            assert not protocol.lost.done()  # still queued: nobody reads
            received = await in_thread(read_to_eof, rfile.fileno())
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert received == data
            assert wfile.closed
            assert transport.get_write_buffer_size() == 0
            assert "pause" in protocol.events  # 4 MiB queued is over the 64 KiB mark
            assert protocol.events[-1] == "lost"
            assert errors == []

    run(main())


def test_write_pipe_write_eof_then_writes_are_dropped_and_warned_about(run, caplog):
    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            transport.write(b"before")
            transport.write_eof()
            assert transport.is_closing()
            transport.write_eof()  # no-op
            transport.close()  # no-op
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(7):
                    transport.write(b"after")
            warned = [
                r.getMessage()
                for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING
            ]
            # The first LOG_THRESHOLD_FOR_CONNLOST_WRITES (5) are silent.
            assert warned == ["pipe closed by peer or os.write(pipe, data) raised exception."] * 2
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert await in_thread(read_to_eof, rfile.fileno()) == b"before"

    run(main())


def test_write_pipe_abort_drops_the_queue(run):
    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            transport.write(payload(BIG, seed=3))
            assert transport.get_write_buffer_size() > 0
            transport.abort()
            assert transport.is_closing()
            assert transport.get_write_buffer_size() == 0
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            received = await in_thread(read_to_eof, rfile.fileno())
            assert 0 < len(received) < BIG  # what the pipe held, then EOF
            assert protocol.events == ["made", "pause", "lost"]

    run(main())


def test_write_pipe_rejects_non_bytes_like_asyncio(run):
    # asyncio's pipe write() checks the type with an assert (its socket
    # transports raise TypeError; the pipe one does not).
    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            for bad in ("text", 42, None, [b"list"]):
                with pytest.raises(AssertionError):
                    transport.write(bad)
            assert not transport.is_closing()
            transport.write(b"still fine")
            transport.close()
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert await in_thread(read_to_eof, rfile.fileno()) == b"still fine"

    run(main())


def test_write_pipe_empty_write_does_nothing(run):
    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            transport.write(b"")
            transport.write(bytearray())
            transport.write(memoryview(b""))
            assert transport.get_write_buffer_size() == 0
            transport.close()
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert await in_thread(read_to_eof, rfile.fileno()) == b""

    run(main())


def test_write_flow_control_with_a_reader_that_does_not_read(run):
    high, low = 256 * 1024, 64 * 1024
    chunk = 32 * 1024
    total = 16 * MiB
    data = payload(total, seed=4)

    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            transport.set_write_buffer_limits(high=high, low=low)
            assert transport.get_write_buffer_limits() == (low, high)
            writer_paused = asyncio.Event()
            writer_paused.set()  # set = may write
            largest_queue = 0

            orig_pause, orig_resume = protocol.pause_writing, protocol.resume_writing

            def pause():
                orig_pause()
                writer_paused.clear()

            def resume():
                orig_resume()
                writer_paused.set()

            protocol.pause_writing, protocol.resume_writing = pause, resume

            offset = 0
            # Nobody reads: write until the transport says stop.
            while writer_paused.is_set():
                transport.write(data[offset : offset + chunk])
                offset += chunk
                largest_queue = max(largest_queue, transport.get_write_buffer_size())
            assert protocol.events == ["made", "pause"]
            queued = transport.get_write_buffer_size()
            assert high < queued <= high + chunk
            await asyncio.sleep(SETTLE)
            assert protocol.events == ["made", "pause"]  # still nobody reads
            assert transport.get_write_buffer_size() == queued

            # Now a reader drains it; the producer follows the signals.
            reader = asyncio.ensure_future(in_thread(read_to_eof, rfile.fileno()))
            while offset < total:
                await asyncio.wait_for(writer_paused.wait(), TIMEOUT)
                transport.write(data[offset : offset + chunk])
                offset += chunk
                largest_queue = max(largest_queue, transport.get_write_buffer_size())
            transport.close()
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            received = await asyncio.wait_for(reader, TIMEOUT)
            assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
            assert largest_queue <= high + chunk  # the buffer stayed bounded
            flow = [e for e in protocol.events if e in ("pause", "resume")]
            assert flow[0] == "pause"
            assert all(a != b for a, b in zip(flow, flow[1:]))  # they alternate
            assert "resume" in flow

    run(main())


def test_reader_closing_with_nothing_queued_ends_the_writer_with_none(run):
    async def main():
        errors = capture_errors()
        rfile, wfile = pipe_files()
        transport, protocol = await write_pipe(wfile)
        transport.write(b"small")
        assert transport.get_write_buffer_size() == 0
        assert os.read(rfile.fileno(), 100) == b"small"
        rfile.close()
        # The kernel reports the hang-up on the write end; nothing is written.
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["made", "lost"]
        assert transport.is_closing()
        assert wfile.closed
        assert errors == []

    run(main())


def test_reader_closing_with_data_queued_ends_the_writer_with_broken_pipe(run):
    async def main():
        errors = capture_errors()
        rfile, wfile = pipe_files()
        transport, protocol = await write_pipe(wfile)
        transport.write(payload(BIG, seed=5))
        assert transport.get_write_buffer_size() > 0
        rfile.close()
        exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
        # asyncio notices the hang-up through the read-side watch first and
        # reports a bare BrokenPipeError(), not the EPIPE of a failed write.
        assert type(exc) is BrokenPipeError
        assert exc.args == ()
        assert transport.get_write_buffer_size() == 0
        assert protocol.events == ["made", "pause", "lost"]
        assert wfile.closed
        assert errors == []  # a peer going away is not an error to log
        # Later writes are dropped.
        transport.write(b"dropped")
        assert transport.get_write_buffer_size() == 0

    run(main())


def test_write_right_after_the_reader_closed_fails_with_epipe_quietly(run):
    async def main():
        errors = capture_errors()
        rfile, wfile = pipe_files()
        transport, protocol = await write_pipe(wfile)
        rfile.close()
        # No loop iteration in between: write() itself meets EPIPE.
        transport.write(b"too late")
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert type(exc) is BrokenPipeError and exc.errno == errno.EPIPE
        assert protocol.events == ["made", "lost"]
        assert errors == []  # OSErrors on the write side are only debug-logged
        assert wfile.closed

    run(main())


def test_a_queued_bytearray_is_copied(run):
    async def main():
        rfile, wfile = pipe_files()
        with rfile:
            transport, protocol = await write_pipe(wfile)
            buf = bytearray(b"a" * BIG)
            transport.write(buf)
            assert transport.get_write_buffer_size() > 0
            buf[:] = b"b" * BIG  # the caller reuses its buffer
            transport.close()
            received = await in_thread(read_to_eof, rfile.fileno())
            assert received == b"a" * BIG
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None

    run(main())


def test_cancelled_connect_closes_the_new_transport(run):
    async def main():
        loop = asyncio.get_running_loop()
        protocols = []

        def factory():
            protocols.append(Recorder())
            return protocols[-1]

        rfile, wfile = pipe_files()
        with wfile:
            task = asyncio.ensure_future(loop.connect_read_pipe(factory, rfile))
            await asyncio.sleep(0)  # now awaiting its waiter
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            (protocol,) = protocols
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert protocol.events == ["made", "lost"]
            assert rfile.closed

    run(main())


def test_eof_received_returning_true_does_not_keep_a_pipe_open(run):
    class KeepOpen(Recorder):
        def eof_received(self):
            super().eof_received()
            return True  # for a pipe there is no half-open state to keep

    async def main():
        rfile, wfile = pipe_files()
        _, protocol = await asyncio.get_running_loop().connect_read_pipe(KeepOpen, rfile)
        wfile.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["made", "eof", "lost"]

    run(main())


def test_a_socket_write_side_treats_incoming_data_as_the_reader_leaving(run):
    # The write transport watches its fd for readability only to learn
    # that the reader went away, so data arriving on a socket ends it too.
    async def main():
        a, b = socket.socketpair()
        with b:
            transport, protocol = await write_pipe(a)
            b.sendall(b"unexpected")
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert protocol.events == ["made", "lost"]
            assert a.fileno() == -1

    run(main())


# ---------------------------------------------------------------------------
# other kinds of file
# ---------------------------------------------------------------------------


def test_fifo_both_ends(run, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    data = payload(2 * MiB, seed=6)

    async def main():
        # O_NONBLOCK lets the read end open before there is a writer.
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(path, os.O_WRONLY)
        rt, rp = await read_pipe(open(rfd, "rb", buffering=0))
        wt, wp = await write_pipe(open(wfd, "wb", buffering=0))
        wt.write(data)
        wt.write_eof()
        assert await asyncio.wait_for(rp.lost, TIMEOUT) is None
        assert await asyncio.wait_for(wp.lost, TIMEOUT) is None
        assert rp.data == data
        assert rp.events == ["made", "data", "eof", "lost"]
        assert wp.events[0] == "made" and wp.events[-1] == "lost"

    run(main())


def test_fifo_reader_closing_ends_the_writer(run, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)

    async def main():
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(path, os.O_WRONLY)
        wt, wp = await write_pipe(open(wfd, "wb", buffering=0))
        wt.write(b"abc")
        assert os.read(rfd, 10) == b"abc"
        os.close(rfd)
        assert await asyncio.wait_for(wp.lost, TIMEOUT) is None

    run(main())


def test_socketpair_both_directions_and_peer_close(run):
    async def main():
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        with b, c:
            rt, rp = await read_pipe(a)
            wt, wp = await write_pipe(d)
            assert rt.get_extra_info("pipe") is a
            b.sendall(b"from b")
            await wait_until(lambda: rp.data == b"from b", what="socket data")
            b.shutdown(socket.SHUT_WR)
            assert await asyncio.wait_for(rp.lost, TIMEOUT) is None
            assert rp.events == ["made", "data", "eof", "lost"]
            assert a.fileno() == -1  # the transport closed the socket

            wt.write(b"to c")
            assert c.recv(100) == b"to c"
            c.close()  # the peer goes away with nothing queued
            assert await asyncio.wait_for(wp.lost, TIMEOUT) is None
            assert wp.events == ["made", "lost"]
            assert d.fileno() == -1

    run(main())


def test_pty_read_side_ends_with_eio_quietly(run):
    async def main():
        errors = capture_errors()
        master, slave = os.openpty()
        tty.setraw(slave)
        transport, protocol = await read_pipe(open(master, "rb", buffering=0))
        os.write(slave, b"hello from the tty")
        await wait_until(lambda: protocol.data == b"hello from the tty", what="pty data")
        os.close(slave)
        exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
        # The master reads EIO once the slave is closed: connection_lost
        # gets that OSError, there is no eof_received, and nothing is logged.
        assert type(exc) is OSError and exc.errno == errno.EIO
        assert protocol.events == ["made", "data", "lost"]
        assert errors == []
        assert transport.is_closing()

    run(main())


def test_pty_write_side(run):
    data = payload(256 * 1024, seed=7)

    async def main():
        master, slave = os.openpty()
        tty.setraw(slave)
        try:
            transport, protocol = await write_pipe(open(master, "wb", buffering=0))
            transport.write(data)
            received = await in_thread(read_to_eof, slave, len(data))
            assert received == data
            await wait_until(lambda: transport.get_write_buffer_size() == 0, what="drained")
            transport.close()
            assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
            assert protocol.events[0] == "made" and protocol.events[-1] == "lost"
        finally:
            os.close(slave)

    run(main())


def test_dev_null_write_side_takes_everything(run):
    async def main():
        errors = capture_errors()
        transport, protocol = await write_pipe(open(os.devnull, "wb", buffering=0))
        transport.write(b"x" * BIG)
        assert transport.get_write_buffer_size() == 0
        transport.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["made", "lost"]
        assert errors == []

    run(main())


def test_dev_null_read_side_cannot_be_polled(run):
    # epoll refuses /dev/null (EPERM): asyncio reports that through the
    # exception handler and leaves the transport open and idle.
    async def main():
        errors = capture_errors()
        transport, protocol = await read_pipe(open(os.devnull, "rb", buffering=0))
        await asyncio.sleep(SETTLE)
        assert [type(ctx.get("exception")) for ctx in errors] == [PermissionError]
        assert errors[0]["exception"].errno == errno.EPERM
        assert protocol.events == ["made"]
        assert not transport.is_closing()
        assert "idle" in repr(transport) and "polling" not in repr(transport)
        transport.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert len(errors) == 1

    run(main())


@pytest.mark.parametrize("connect", ["connect_read_pipe", "connect_write_pipe"])
def test_regular_file_is_refused_with_asyncios_message(run, tmp_path, connect):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    expected = {
        "connect_read_pipe": "Pipe transport is for pipes/sockets only.",
        "connect_write_pipe": "Pipe transport is only for pipes, sockets and character devices",
    }[connect]

    async def main():
        made = []

        class P(Recorder):
            def connection_made(self, transport):
                made.append(transport)

        with open(path, "rb" if connect == "connect_read_pipe" else "ab", buffering=0) as f:
            with pytest.raises(ValueError) as info:
                await getattr(asyncio.get_running_loop(), connect)(P, f)
            assert str(info.value) == expected
            assert not f.closed  # the caller still owns it
            assert os.get_blocking(f.fileno())  # untouched
            await asyncio.sleep(0)
            assert made == []

    run(main())


# ---------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------


def test_repr_through_the_life_of_the_transports(loop):
    async def main():
        rfile, wfile = pipe_files()
        rt, rp = await read_pipe(rfile)
        wt, wp = await write_pipe(wfile)
        rfd, wfd = rfile.fileno(), wfile.fileno()
        assert f"fd={rfd} polling" in repr(rt)
        assert f"fd={wfd} idle bufsize=0" in repr(wt)
        rt.pause_reading()
        assert f"fd={rfd} idle" in repr(rt)
        rt.resume_reading()
        wt.write(b"z" * BIG)
        size = wt.get_write_buffer_size()
        assert f"fd={wfd} polling bufsize={size}" in repr(wt)
        wt.abort()
        assert repr(wt).split()[1] == "closing"
        await wp.lost
        assert repr(wt).endswith(f"closed fd={wfd} closed>")
        await rp.lost
        assert repr(rt).endswith(f"closed fd={rfd} closed>")
        return repr(rt).split()[0], repr(wt).split()[0]

    names = loop.run_until_complete(main())
    # The class names differ (asyncio's are private); the rest is the same.
    assert names[0].startswith("<") and names[0].endswith("ReadPipeTransport")
    assert names[1].startswith("<") and names[1].endswith("WritePipeTransport")


def test_repr_after_the_loop_is_closed_says_open(loop):
    async def main():
        rfile, wfile = pipe_files()
        rt, _ = await read_pipe(rfile)
        wt, _ = await write_pipe(wfile)
        return rt, wt, rfile, wfile

    rt, wt, rfile, wfile = loop.run_until_complete(main())
    loop.close()
    assert repr(rt).endswith(f"fd={rfile.fileno()} open>")
    assert repr(wt).endswith(f"fd={wfile.fileno()} open>")
    # The transports still own their pipes: dropping them warns and closes.
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del rt
        gc.collect()
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del wt
        gc.collect()
    assert rfile.closed and wfile.closed
