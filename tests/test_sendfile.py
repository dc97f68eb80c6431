"""loop.sendfile and loop.sock_sendfile, pinned against the stdlib loop.

Each test runs on both loops (conftest.py).  The receiving side is a plain
blocking socket read in a thread, so what is checked is exactly the bytes
that reached the peer, and the file position the caller is left with.
"""

import asyncio
import ctypes
import hashlib
import io
import mmap
import socket
import ssl
import struct
import subprocess
import threading

import pytest
from counting_socket import CountingSocket

TIMEOUT = 10
DATA = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: more than one socket buffer


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


class Sink:
    """A peer that reads everything until EOF in a thread."""

    def __init__(self, sock):
        self.sock = sock
        self.received = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        self.sock.settimeout(TIMEOUT)
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.received += chunk

    async def result(self):
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, TIMEOUT)
        assert not self.thread.is_alive(), "peer never saw EOF"
        return bytes(self.received)


class Quiet(asyncio.Protocol):
    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()
        self.paused = 0

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.paused += 1


async def connected_transport(protocol_factory=Quiet, sock_type="plain", **kwargs):
    """A client transport on the loop, and a Sink on the accepted peer.

    With ``sock_type="subclass"`` the client socket is a CountingSocket
    given with sock= (ferroloop's transport in Python)."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        if sock_type == "subclass":
            sock = CountingSocket()
            sock.connect(listener.getsockname())
            kwargs["sock"] = sock
            address = ()
        else:
            address = listener.getsockname()
        transport, protocol = await loop.create_connection(protocol_factory, *address, **kwargs)
        peer, _ = listener.accept()
    return transport, protocol, peer


@pytest.mark.parametrize("sock_type", ["plain", "subclass"])
def test_sendfile_sends_the_whole_file_and_leaves_the_position_at_its_end(run, data_file, sock_type):
    async def main():
        transport, protocol, peer = await connected_transport(sock_type=sock_type)
        with peer:
            sink = Sink(peer)
            sent = await asyncio.wait_for(
                asyncio.get_running_loop().sendfile(transport, data_file), TIMEOUT
            )
            transport.close()
            assert sent == len(DATA)
            assert data_file.tell() == len(DATA)
            assert await sink.result() == DATA
            assert await protocol.lost is None

    run(main())


def test_sendfile_with_offset_and_count(run, data_file):
    async def main():
        transport, _, peer = await connected_transport()
        with peer:
            sink = Sink(peer)
            sent = await asyncio.get_running_loop().sendfile(
                transport, data_file, offset=1000, count=300_000
            )
            transport.close()
            assert sent == 300_000
            assert data_file.tell() == 301_000
            assert await sink.result() == DATA[1000:301_000]

    run(main())


@pytest.mark.parametrize("sock_type", ["plain", "subclass"])
def test_data_written_before_and_after_keeps_its_order(run, data_file, sock_type):
    async def main():
        transport, _, peer = await connected_transport(sock_type=sock_type)
        with peer:
            sink = Sink(peer)
            # More than the kernel takes at once, so sendfile must wait for
            # the queue to drain first.
            before = b"<" * (4 << 20)
            transport.write(before)
            sent = await asyncio.get_running_loop().sendfile(transport, data_file)
            transport.write(b">")
            transport.close()
            assert sent == len(DATA)
            assert await sink.result() == before + DATA + b">"

    run(main())


@pytest.mark.parametrize("sock_type", ["plain", "subclass"])
def test_writing_during_sendfile_is_refused(run, data_file, sock_type):
    async def main():
        transport, _, peer = await connected_transport(sock_type=sock_type)
        with peer:
            sink = Sink(peer)
            transport.write(b"x" * (4 << 20))
            task = asyncio.ensure_future(asyncio.get_running_loop().sendfile(transport, data_file))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                transport.write(b"no")
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                transport.writelines([b"no"])
            assert await task == len(DATA)
            transport.close()
            assert await sink.result() == b"x" * (4 << 20) + DATA

    run(main())


@pytest.mark.parametrize("sock_type", ["plain", "subclass"])
def test_reading_resumes_after_sendfile(run, data_file, sock_type):
    class Reader(Quiet):
        def __init__(self):
            super().__init__()
            self.data = bytearray()

        def data_received(self, data):
            self.data += data

    async def main():
        transport, protocol, peer = await connected_transport(Reader, sock_type=sock_type)
        with peer:
            sink = Sink(peer)
            assert transport.is_reading()
            await asyncio.get_running_loop().sendfile(transport, data_file, count=10)
            assert transport.is_reading()
            peer.sendall(b"after")
            for _ in range(100):
                if protocol.data == b"after":
                    break
                await asyncio.sleep(0.01)
            assert protocol.data == b"after"
            transport.close()
            assert await sink.result() == DATA[:10]

    run(main())


def test_a_file_object_without_fileno_uses_the_fallback(run):
    async def main():
        transport, _, peer = await connected_transport()
        with peer:
            sink = Sink(peer)
            source = io.BytesIO(DATA)
            sent = await asyncio.get_running_loop().sendfile(transport, source, offset=5)
            transport.close()
            assert sent == len(DATA) - 5
            assert source.tell() == len(DATA)
            assert await sink.result() == DATA[5:]

    run(main())


class AddressRecordingFile(io.BytesIO):
    """A file without a descriptor (so sendfile takes the fallback) that
    records where in memory each ``readinto`` is asked to write."""

    def __init__(self, data):
        super().__init__(data)
        self.starts = []

    def readinto(self, buffer):
        self.starts.append(ctypes.addressof(ctypes.c_char.from_buffer(buffer)))
        return super().readinto(buffer)


def test_ferroloop_fallbacks_read_into_page_aligned_buffers():
    # Not asyncio's behaviour (its fallbacks read into a bytearray, which
    # at 256 KiB starts 16 bytes into a page): ferroloop's own, because
    # the kernel's copy into such a buffer is several times slower on
    # some CPUs (see _read_buffer.page_aligned_buffer).
    import ferroloop

    async def main():
        loop = asyncio.get_running_loop()
        transport, _, peer = await connected_transport()
        with peer:
            sink = Sink(peer)
            through_transport = AddressRecordingFile(DATA)
            assert await loop.sendfile(transport, through_transport) == len(DATA)
            transport.close()
            assert await sink.result() == DATA
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            sink = Sink(b)
            through_socket = AddressRecordingFile(DATA)
            assert await loop.sock_sendfile(a, through_socket, 3) == len(DATA) - 3
            a.shutdown(socket.SHUT_WR)
            assert await sink.result() == DATA[3:]
        return through_transport.starts, through_socket.starts

    loop = ferroloop.new_event_loop()
    try:
        by_transport, by_socket = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.close()
    # 1 MiB in 16 KiB blocks through the transport, 256 KiB ones through
    # the socket, plus the read that finds the end of the file.
    assert len(by_transport) == len(DATA) // (16 * 1024) + 2
    assert len(by_socket) == len(DATA) // (256 * 1024) + 2
    assert [start % mmap.PAGESIZE for start in by_transport + by_socket] == [0] * (
        len(by_transport) + len(by_socket)
    )


def test_fallback_false_without_a_real_file_raises_sendfile_not_available(run):
    async def main():
        transport, _, peer = await connected_transport()
        with peer:
            source = io.BytesIO(DATA)
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await asyncio.get_running_loop().sendfile(transport, source, fallback=False)
            assert source.tell() == 0
            transport.close()

    run(main())


def test_sendfile_on_a_closing_transport_raises(run, data_file):
    async def main():
        transport, _, peer = await connected_transport()
        with peer:
            transport.close()
            with pytest.raises(RuntimeError, match="Transport is closing"):
                await asyncio.get_running_loop().sendfile(transport, data_file)

    run(main())


def test_bad_arguments_raise_like_asyncio(run, data_file, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _, peer = await connected_transport()
        text = open(tmp_path / "t.txt", "w+")
        with peer, text:
            cases = [
                (dict(file=text), ValueError, "binary mode"),
                (dict(file=data_file, count=0), ValueError, "count must be a positive integer"),
                (dict(file=data_file, count=1.5), TypeError, "count must be a positive integer"),
                (dict(file=data_file, offset=-1), ValueError, "offset must be a non-negative"),
                (dict(file=data_file, offset="0"), TypeError, "offset must be a non-negative"),
            ]
            for kwargs, exc, message in cases:
                with pytest.raises(exc, match=message):
                    await loop.sendfile(transport, **kwargs)
            transport.close()

    run(main())


def test_peer_closing_mid_transfer_raises_a_connection_error(run, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 << 20)

    async def main():
        transport, protocol, peer = await connected_transport()
        with open(big, "rb") as f:
            task = asyncio.ensure_future(asyncio.get_running_loop().sendfile(transport, f))
            await asyncio.sleep(0.05)  # the transfer fills the buffers, then the peer vanishes
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(task, TIMEOUT)
            # The position tells how far the transfer got.
            assert 0 < f.tell() < (256 << 20)
        transport.close()

    run(main())


def test_sock_sendfile(run, data_file):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            sink = Sink(b)
            assert await loop.sock_sendfile(a, data_file, 10, 100_000) == 100_000
            assert data_file.tell() == 100_010
            assert await loop.sock_sendfile(a, io.BytesIO(b"fallback")) == 8
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(a, io.BytesIO(b"x"), fallback=False)
            a.shutdown(socket.SHUT_WR)
            assert await sink.result() == DATA[10:100_010] + b"fallback"

    run(main())


def test_sock_sendfile_of_an_empty_file_sends_nothing(run, tmp_path):
    async def main():
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        a, b = socket.socketpair()
        with a, b, open(empty, "rb") as f:
            a.setblocking(False)
            assert await asyncio.get_running_loop().sock_sendfile(a, f) == 0

    run(main())


def test_sock_sendfile_rejects_datagram_sockets(run, data_file):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            with pytest.raises(ValueError, match="only SOCK_STREAM"):
                await asyncio.get_running_loop().sock_sendfile(s, data_file)

    run(main())


def test_cancelled_sock_sendfile_leaves_no_writer_and_a_usable_socket(run, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b, open(big, "rb") as f:
            a.setblocking(False)
            task = asyncio.ensure_future(loop.sock_sendfile(a, f))
            await asyncio.sleep(0.05)  # the peer reads nothing: blocked
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.remove_writer(a.fileno()) is False
            # As asyncio: os.sendfile works at an explicit offset, and a
            # cancelled transfer does not move the file position.
            assert f.tell() == 0
            b.setblocking(False)
            assert len(b.recv(1 << 20)) > 0  # some of it was sent
            await loop.sock_sendall(a, b"still usable")

    run(main())


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_sendfile_over_tls_uses_the_fallback_and_delivers_everything(run, data_file, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    class Collect(asyncio.Protocol):
        def __init__(self):
            self.digest = hashlib.sha256()
            self.size = 0
            self.done = asyncio.get_running_loop().create_future()

        def data_received(self, data):
            self.digest.update(data)
            self.size += len(data)

        def eof_received(self):
            self._finish()

        def connection_lost(self, exc):
            # 3.10's SSL layer may report a clean close without
            # eof_received; what matters is that every byte arrived.
            if exc is not None and not self.done.done():
                self.done.set_exception(exc)
            self._finish()

        def _finish(self):
            if not self.done.done():
                self.done.set_result((self.size, self.digest.hexdigest()))

    async def main():
        loop = asyncio.get_running_loop()
        collect = Collect()
        server = await loop.create_server(lambda: collect, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            transport, _ = await loop.create_connection(
                Quiet, *server.sockets[0].getsockname(), ssl=client_ctx,
                server_hostname="localhost",
            )  # fmt: skip
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await loop.sendfile(transport, data_file, fallback=False)
            sent = await asyncio.wait_for(loop.sendfile(transport, data_file), TIMEOUT)
            transport.close()
            size, digest = await asyncio.wait_for(collect.done, TIMEOUT)
            assert sent == size == len(DATA)
            assert digest == hashlib.sha256(DATA).hexdigest()
            assert data_file.tell() == len(DATA)

    run(main())
