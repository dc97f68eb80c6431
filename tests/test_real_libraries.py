"""Real third-party libraries driven on both loops (issue 3).

* aiohttp: a web.Application server and a ClientSession client in one loop.
* uvicorn (plain, h11, loop="none"): a small ASGI app served by
  uvicorn.Server started as a task inside the loop under test.
* asyncpg: queries against a throwaway PostgreSQL server that this module
  starts on a free loopback port (see the ``pg`` fixture).

The libraries are pinned in tests/requirements-real.txt and installed into
every test venv by scripts/_common.sh.  Every test runs on asyncio and on
ferroloop (the ``run`` fixture of conftest.py) and checks that it really ran
on the loop under test.  A library that works on asyncio but fails on
ferroloop is a ferroloop bug: such a test is left failing, never skipped.

Timing bounds only check concurrency (N slow operations take about the time
of one, not the sum); they are loose on purpose and are not benchmarks.
"""

import asyncio
import glob
import hashlib
import importlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

# Set by CI: then a missing library or PostgreSQL server fails the tests
# instead of skipping them (the same switch as in conftest.py).
FERROLOOP_REQUIRED = os.environ.get("FERROLOOP_REQUIRED", "") == "1"

# Upper bound for the coroutine of one test (the pytest-timeout of 60 s in
# pytest.ini is the hard limit behind it).
BUDGET = 30


def _require(name):
    """Import a real library or fail (CI) / skip (local run without it)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = (f"{name} is not installed ({exc}); install "
               f"tests/requirements-real.txt into this venv "
               f"(scripts/_common.sh does it)")
        if FERROLOOP_REQUIRED:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.fixture
def aiohttp():
    return _require("aiohttp")


@pytest.fixture
def uvicorn():
    return _require("uvicorn")


@pytest.fixture
def asyncpg():
    return _require("asyncpg")


def _run_checked(run, loop_factory, main, budget=BUDGET):
    """run(main()) on the loop under test, bounded by ``budget`` seconds.

    Checks that it really runs on that loop, and that nothing reached the
    loop's exception handler (an error a library logged and survived), up to
    and including the loop's shutdown.
    """
    handled = []

    async def checked():
        loop = asyncio.get_running_loop()
        assert type(loop) is loop_factory.loop_class, (
            f"running on {type(loop)!r}, expected {loop_factory.loop_class!r}")
        loop.set_exception_handler(lambda _loop, context: handled.append(context))
        return await asyncio.wait_for(main(), budget)

    result = run(checked())
    assert handled == [], handled
    return result


def _sha(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# aiohttp
# ---------------------------------------------------------------------------


class _AiohttpServer:
    """An aiohttp web.Application on 127.0.0.1:<free port>."""

    def __init__(self, aiohttp, file_path=None):
        from aiohttp import web

        self.web = web
        self.file_path = file_path
        self.stream_gate = asyncio.Event()
        self.stream_chunks = 10
        self.endless_outcome = asyncio.get_running_loop().create_future()
        app = web.Application(client_max_size=4 << 20)
        app.router.add_get("/slow", self.slow)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/file", self.file)
        app.router.add_get("/endless", self.endless)
        self.runner = web.AppRunner(app)

    async def __aenter__(self):
        await self.runner.setup()
        site = self.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()

    async def slow(self, request):
        await asyncio.sleep(0.5)
        n = int(request.query["n"])
        return self.web.Response(
            text=f"slow {n} {n * n} {request.headers['X-Tag']}")

    async def echo(self, request):
        body = await request.read()
        return self.web.Response(
            body=body[::-1],
            headers={"X-Body-Sha256": _sha(body), "X-Body-Length": str(len(body))})

    async def stream(self, request):
        resp = self.web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"line 0\n")
        # The client sets the gate only after it has read line 0: a response
        # that is buffered instead of streamed deadlocks here (and times out).
        await asyncio.wait_for(self.stream_gate.wait(), 5)
        for i in range(1, self.stream_chunks):
            await resp.write(f"line {i}\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def file(self, request):
        # Served with loop.sendfile() when the loop supports it.
        return self.web.FileResponse(self.file_path, chunk_size=64 * 1024)

    async def endless(self, request):
        resp = self.web.StreamResponse()
        await resp.prepare(request)
        block = b"z" * 65536
        try:
            for _ in range(100_000):  # at most ~6.5 GB: bounded
                await resp.write(block)
        except BaseException as exc:
            self.endless_outcome.set_result(type(exc))
            raise
        self.endless_outcome.set_result(None)
        return resp

    async def ws(self, request):
        web = self.web
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=4001, message=b"done")
                else:
                    await ws.send_str(f"echo:{msg.data}")
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws


def test_aiohttp_concurrent_requests_to_slow_endpoint(run, loop_factory, aiohttp):
    n_requests = 100

    async def main():
        async with _AiohttpServer(aiohttp) as server:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i):
                    async with session.get(f"{server.url}/slow", params={"n": str(i)},
                                           headers={"X-Tag": f"t{i}"}) as resp:
                        assert resp.status == 200
                        return await resp.text()

                start = time.monotonic()
                bodies = await asyncio.gather(*(one(i) for i in range(n_requests)))
                elapsed = time.monotonic() - start
        assert bodies == [f"slow {i} {i * i} t{i}" for i in range(n_requests)]
        # Each request sleeps 0.5 s on the server: the sum is 50 s.
        assert 0.5 <= elapsed < 2.0, elapsed
        return elapsed

    elapsed = _run_checked(run, loop_factory, main)
    print(f"{n_requests} concurrent /slow requests: {elapsed:.3f}s")


def test_aiohttp_post_one_mebibyte_echoed(run, loop_factory, aiohttp):
    payload = os.urandom(1 << 20)

    async def main():
        async with _AiohttpServer(aiohttp) as server:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{server.url}/echo", data=payload) as resp:
                    assert resp.status == 200
                    assert resp.headers["X-Body-Length"] == str(len(payload))
                    assert resp.headers["X-Body-Sha256"] == _sha(payload)
                    body = await resp.read()
                assert len(body) == len(payload)
                assert _sha(body) == _sha(payload[::-1])

                # The same body again, sent chunked from an async generator
                # in uneven pieces, on the kept-alive connection.
                async def pieces():
                    pos, step = 0, 1
                    while pos < len(payload):
                        step = step * 7 % 65521 + 1
                        yield payload[pos:pos + step]
                        pos += step

                async with session.post(f"{server.url}/echo", data=pieces()) as resp:
                    assert resp.status == 200
                    assert resp.headers["X-Body-Sha256"] == _sha(payload)
                    assert _sha(await resp.read()) == _sha(payload[::-1])

    _run_checked(run, loop_factory, main)


def test_aiohttp_streaming_response(run, loop_factory, aiohttp):
    async def main():
        async with _AiohttpServer(aiohttp) as server:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/stream") as resp:
                    assert resp.status == 200
                    assert resp.headers.get("Transfer-Encoding") == "chunked"
                    first = await asyncio.wait_for(resp.content.readline(), 5)
                    assert first == b"line 0\n"
                    assert not server.stream_gate.is_set()
                    server.stream_gate.set()
                    rest = [line async for line in resp.content]
        assert rest == [f"line {i}\n".encode() for i in range(1, server.stream_chunks)]

    _run_checked(run, loop_factory, main)


def test_aiohttp_websocket_echo(run, loop_factory, aiohttp):
    async def main():
        async with _AiohttpServer(aiohttp) as server:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{server.url}/ws") as ws:
                    for i in range(20):
                        await ws.send_str(f"msg {i}")
                        assert await ws.receive_str(timeout=5) == f"echo:msg {i}"
                    blob = os.urandom(200_000)
                    await ws.send_bytes(blob)
                    assert await ws.receive_bytes(timeout=5) == blob[::-1]
                    await ws.send_str("bye")
                    msg = await ws.receive(timeout=5)
                    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                    assert msg.data == 4001 and msg.extra == "done", msg
                assert ws.closed
                assert ws.close_code == 4001

    _run_checked(run, loop_factory, main)


def test_aiohttp_handler_cancelled_when_client_disconnects(run, loop_factory, aiohttp):
    from aiohttp import web

    async def main():
        outcome = asyncio.get_running_loop().create_future()

        async def waits(request):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                outcome.set_result("cancelled")
                raise
            outcome.set_result("not cancelled")
            return web.Response(text="late")

        app = web.Application()
        app.router.add_get("/", waits)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            start = time.monotonic()
            writer.close()  # connection_lost on the server cancels the handler
            assert await asyncio.wait_for(outcome, 5) == "cancelled"
            assert time.monotonic() - start < 1.0
        finally:
            await runner.cleanup()

    _run_checked(run, loop_factory, main)


def test_aiohttp_file_response_sendfile(run, loop_factory, aiohttp, tmp_path):
    content = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "blob.bin"
    path.write_bytes(content)

    async def main():
        async with _AiohttpServer(aiohttp, file_path=path) as server:
            async with aiohttp.ClientSession() as session:

                async def get(headers=None):
                    async with session.get(f"{server.url}/file", headers=headers) as resp:
                        return resp.status, resp.headers, await resp.read()

                status, headers, body = await get()
                assert status == 200
                assert int(headers["Content-Length"]) == len(content)
                assert _sha(body) == _sha(content)

                status, headers, body = await get({"Range": "bytes=1000000-1999999"})
                assert status == 206
                assert headers["Content-Range"] == f"bytes 1000000-1999999/{len(content)}"
                assert body == content[1000000:2000000]

                results = await asyncio.gather(*(get() for _ in range(5)))
                assert [(st, _sha(b)) for st, _, b in results] == [(200, _sha(content))] * 5

    _run_checked(run, loop_factory, main)


def test_aiohttp_client_abort_mid_response(run, loop_factory, aiohttp):
    async def main():
        async with _AiohttpServer(aiohttp) as server:
            async with aiohttp.ClientSession() as session:
                resp = await session.get(f"{server.url}/endless")
                assert resp.status == 200
                assert len(await resp.content.readexactly(200_000)) == 200_000
                resp.close()  # drops the connection with the body unread
                outcome = await asyncio.wait_for(server.endless_outcome, 5)
                # The handler's write (or its drain) fails once the peer is
                # gone: ConnectionResetError or aiohttp's "Connection lost".
                assert outcome is not None and issubclass(outcome, ConnectionError), outcome
                # The server carries on serving.
                async with session.get(f"{server.url}/slow?n=3",
                                       headers={"X-Tag": "after"}) as resp:
                    assert await resp.text() == "slow 3 9 after"

    _run_checked(run, loop_factory, main)


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make a test certificate",
                    pytrace=False)
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_aiohttp_tls_unix_and_localhost(run, loop_factory, aiohttp, tls_cert, tmp_path):
    import ssl
    from aiohttp import web

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*tls_cert)
    client_ctx = ssl.create_default_context(cafile=tls_cert[0])
    unix_path = str(tmp_path / "aiohttp.sock")

    async def hello(request):
        body = await request.read()
        peer = request.transport.get_extra_info("peername")
        return web.json_response({
            "secure": request.secure, "len": len(body), "sha": _sha(body),
            "unix": isinstance(peer, str) or not peer,
            "tls": tls.version() if (tls := request.transport.get_extra_info("ssl_object")) else None,
        })

    async def main():
        app = web.Application(client_max_size=4 << 20)
        app.router.add_post("/hello", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            tls_site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
            await tls_site.start()
            tls_port = runner.addresses[0][1]
            unix_site = web.UnixSite(runner, unix_path)
            await unix_site.start()
            payload = os.urandom(1 << 20)

            # TLS, with the certificate verified against "localhost", which
            # is resolved by the loop (getaddrinfo) and connected with happy
            # eyeballs (::1 may be tried first and refused).
            connector = aiohttp.TCPConnector(ssl=client_ctx)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def tls_post(i):
                    data = payload[i * 1000:]
                    async with session.post(f"https://localhost:{tls_port}/hello",
                                            data=data) as resp:
                        assert resp.status == 200
                        assert await resp.json() == {"secure": True, "len": len(data),
                                                     "sha": _sha(data), "unix": False,
                                                     "tls": "TLSv1.3"}
                    return i

                assert await asyncio.gather(*(tls_post(i) for i in range(8))) == list(range(8))

            # Plain HTTP over a Unix socket.
            connector = aiohttp.UnixConnector(path=unix_path)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.post("http://unix/hello", data=payload) as resp:
                    assert await resp.json() == {"secure": False, "len": len(payload),
                                                 "sha": _sha(payload), "unix": True,
                                                 "tls": None}
        finally:
            await runner.cleanup()

    _run_checked(run, loop_factory, main)


def test_aiohttp_concurrent_large_bodies(run, loop_factory, aiohttp):
    payloads = [os.urandom((1 << 20) + i * 4099) for i in range(10)]

    async def main():
        async with _AiohttpServer(aiohttp) as server:
            async with aiohttp.ClientSession() as session:

                async def echo(data):
                    async with session.post(f"{server.url}/echo", data=data) as resp:
                        assert resp.headers["X-Body-Sha256"] == _sha(data)
                        # Read slowly, in small pieces.
                        got = bytearray()
                        async for piece in resp.content.iter_chunked(8192):
                            got += piece
                            if len(got) % (1 << 18) < 8192:
                                await asyncio.sleep(0.005)
                        return bytes(got)

                results = await asyncio.gather(*(echo(p) for p in payloads))
        assert [_sha(r) for r in results] == [_sha(p[::-1]) for p in payloads]

    _run_checked(run, loop_factory, main)


# ---------------------------------------------------------------------------
# uvicorn
# ---------------------------------------------------------------------------


class _AsgiApp:
    """A small ASGI 3 application with lifespan support."""

    def __init__(self):
        self.lifespan_events = []
        self.big_done = False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.lifespan_events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.lifespan_events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        path = scope["path"]
        if path == "/hello":
            query = scope["query_string"].decode()
            await self._respond(send, 200, f"hello {query}".encode())
        elif path == "/slow":
            await asyncio.sleep(0.3)
            await self._respond(send, 200, scope["query_string"])
        elif path == "/echo":
            chunks = []
            while True:
                message = await receive()
                assert message["type"] == "http.request"
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            await self._respond(send, 200, f"{len(body)} {_sha(body)}".encode())
        elif path == "/big":
            # 8 MiB in 64 KiB pieces: a client that does not read makes
            # uvicorn wait for the transport to resume writing.
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(128 * 65536).encode())]})
            for i in range(128):
                await send({"type": "http.response.body",
                            "body": bytes([i]) * 65536, "more_body": i < 127})
            self.big_done = True
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            for i in range(5):
                await send({"type": "http.response.body",
                            "body": f"part {i};".encode(), "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await self._respond(send, 404, b"not found")

    @staticmethod
    async def _respond(send, status, body):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _read_http_response(reader):
    """Read one HTTP/1.1 response (Content-Length or chunked)."""
    status_line = await reader.readline()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", status_line)
    assert match, status_line
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            assert data.endswith(b"\r\n")
            if size == 0:
                break
            chunks.append(data[:-2])
        return int(match.group(1)), headers, chunks
    body = await reader.readexactly(int(headers["content-length"]))
    return int(match.group(1)), headers, [body]


async def _start_uvicorn(uvicorn, app, **options):
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none",
                            http="h11", ws="none", lifespan="on",
                            log_level="warning", log_config=None, **options)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), task
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, port


async def _stop_uvicorn(server, task):
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def test_uvicorn_serves_asgi_app_keep_alive(run, loop_factory, uvicorn):
    app = _AsgiApp()
    body = os.urandom(256 * 1024)

    async def main():
        server, task, port = await _start_uvicorn(uvicorn, app)
        try:
            assert app.lifespan_events == ["startup"]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            host = f"Host: 127.0.0.1:{port}\r\n"

            # Several requests one after another on one kept-alive connection.
            writer.write(f"GET /hello?name=ferro HTTP/1.1\r\n{host}\r\n".encode())
            status, headers, chunks = await _read_http_response(reader)
            assert (status, chunks) == (200, [b"hello name=ferro"])
            assert headers["content-length"] == "16"
            assert headers["server"] == "uvicorn"

            writer.write(f"POST /echo HTTP/1.1\r\n{host}"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status, _, chunks = await _read_http_response(reader)
            assert (status, chunks) == (200, [f"{len(body)} {_sha(body)}".encode()])

            writer.write(f"POST /echo HTTP/1.1\r\n{host}"
                         f"Transfer-Encoding: chunked\r\n\r\n".encode())
            for pos in range(0, len(body), 100_000):
                piece = body[pos:pos + 100_000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            status, _, chunks = await _read_http_response(reader)
            assert (status, chunks) == (200, [f"{len(body)} {_sha(body)}".encode()])

            writer.write(f"GET /stream HTTP/1.1\r\n{host}\r\n".encode())
            status, headers, chunks = await _read_http_response(reader)
            assert status == 200
            assert headers["transfer-encoding"] == "chunked"
            assert chunks == [f"part {i};".encode() for i in range(5)]

            writer.write(f"GET /missing HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
            status, _, chunks = await _read_http_response(reader)
            assert (status, chunks) == (404, [b"not found"])
            # Connection: close is honoured: the server closes its side.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
        finally:
            await _stop_uvicorn(server, task)
        assert task.result() is None
        assert app.lifespan_events == ["startup", "shutdown"]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    _run_checked(run, loop_factory, main)


def test_uvicorn_concurrent_clients(run, loop_factory, uvicorn, aiohttp):
    app = _AsgiApp()
    n_requests = 20

    async def main():
        server, task, port = await _start_uvicorn(uvicorn, app)
        try:
            async with aiohttp.ClientSession() as session:

                async def one(i):
                    async with session.get(f"http://127.0.0.1:{port}/slow?i={i}") as resp:
                        assert resp.status == 200
                        return await resp.text()

                start = time.monotonic()
                bodies = await asyncio.gather(*(one(i) for i in range(n_requests)))
                elapsed = time.monotonic() - start
        finally:
            await _stop_uvicorn(server, task)
        assert bodies == [f"i={i}" for i in range(n_requests)]
        # Each request sleeps 0.3 s in the app: the sum is 6 s.
        assert 0.3 <= elapsed < 1.5, elapsed
        assert app.lifespan_events == ["startup", "shutdown"]
        return elapsed

    elapsed = _run_checked(run, loop_factory, main)
    print(f"{n_requests} concurrent uvicorn /slow requests: {elapsed:.3f}s")


def test_uvicorn_pipelined_requests_and_slow_reader(run, loop_factory, uvicorn):
    app = _AsgiApp()
    expected_big = b"".join(bytes([i]) * 65536 for i in range(128))

    async def main():
        server, task, port = await _start_uvicorn(uvicorn, app)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            host = f"Host: 127.0.0.1:{port}\r\n"
            # Pipelined: uvicorn pauses reading while a request is handled
            # and resumes for the next one; the answers keep their order.
            writer.write(b"".join(
                f"GET /hello?n={i} HTTP/1.1\r\n{host}\r\n".encode() for i in range(10)))
            for i in range(10):
                status, _, chunks = await asyncio.wait_for(_read_http_response(reader), 5)
                assert (status, chunks) == (200, [f"hello n={i}".encode()])

            # A slow reader: the app cannot finish sending 8 MiB until the
            # client reads (uvicorn waits for resume_writing).
            writer.write(f"GET /big HTTP/1.1\r\n{host}\r\n".encode())
            await asyncio.sleep(0.5)
            assert not app.big_done
            status, headers, chunks = await asyncio.wait_for(_read_http_response(reader), 10)
            assert status == 200
            assert b"".join(chunks) == expected_big
            assert app.big_done
            writer.close()
            await writer.wait_closed()
        finally:
            await _stop_uvicorn(server, task)

    _run_checked(run, loop_factory, main)


def test_uvicorn_keep_alive_timeout_closes_idle_connection(run, loop_factory, uvicorn):
    app = _AsgiApp()

    async def main():
        server, task, port = await _start_uvicorn(uvicorn, app, timeout_keep_alive=1)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /hello?idle HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            status, _, chunks = await asyncio.wait_for(_read_http_response(reader), 5)
            assert (status, chunks) == (200, [b"hello idle"])
            start = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            idle = time.monotonic() - start
            assert 0.7 <= idle < 3.0, idle
            writer.close()
        finally:
            await _stop_uvicorn(server, task)

    _run_checked(run, loop_factory, main)


def test_uvicorn_tls_slow_readers(run, loop_factory, uvicorn, aiohttp, tls_cert):
    import ssl

    app = _AsgiApp()
    expected = _sha(b"".join(bytes([i]) * 65536 for i in range(128)))

    async def main():
        server, task, port = await _start_uvicorn(
            uvicorn, app, ssl_certfile=tls_cert[0], ssl_keyfile=tls_cert[1])
        try:
            context = ssl.create_default_context(cafile=tls_cert[0])
            async with aiohttp.ClientSession() as session:

                async def download():
                    async with session.get(f"https://localhost:{port}/big",
                                           ssl=context) as resp:
                        assert resp.status == 200
                        digest, pieces = hashlib.sha256(), 0
                        async for piece in resp.content.iter_chunked(32768):
                            digest.update(piece)
                            pieces += 1
                            if pieces % 16 == 0:
                                await asyncio.sleep(0.01)  # a slow reader
                        return digest.hexdigest()

                assert await asyncio.gather(*(download() for _ in range(4))) == [expected] * 4
        finally:
            await _stop_uvicorn(server, task)

    _run_checked(run, loop_factory, main)


def test_uvicorn_graceful_shutdown_finishes_in_flight_request(run, loop_factory, uvicorn):
    app = _AsgiApp()

    async def main():
        server, task, port = await _start_uvicorn(uvicorn, app)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /slow?inflight HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.1)  # the app is now sleeping in /slow
            server.should_exit = True
            status, headers, chunks = await asyncio.wait_for(_read_http_response(reader), 5)
            assert (status, chunks) == (200, [b"inflight"])
            # uvicorn closes the kept-alive connection when shutting down.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        finally:
            await _stop_uvicorn(server, task)
        assert app.lifespan_events == ["startup", "shutdown"]

    _run_checked(run, loop_factory, main)


# ---------------------------------------------------------------------------
# asyncpg against a real PostgreSQL server
# ---------------------------------------------------------------------------

PG_USER = "postgres"


def _pg_version_key(bindir):
    match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin$", bindir)
    return float(match.group(1)) if match else 0.0


def _find_pg_bindir():
    """Directory holding initdb, pg_ctl and postgres (newest version first)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=_pg_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK)
               for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


# Installing the server from the pytest fixture (when scripts/test.sh did not
# do it up front) can take minutes; only then do the asyncpg tests get more
# than pytest.ini's 60 s.
_PG_TIMEOUT = pytest.mark.timeout(60 if _find_pg_bindir() else 600)


def _apt_install_postgresql():
    """Install the Debian package; returns a description of what failed."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "postgresql"]

    def attempt(cmd, timeout):
        try:
            proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd)}: {exc}"
        if proc.returncode:
            tail = proc.stdout.decode(errors="replace")[-1500:]
            return f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}"
        return None

    if attempt(install, 240) is None:
        return None
    error = attempt(["apt-get", "update", "-q"], 120)
    return error or attempt(install, 240)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _PostgresUnavailable(Exception):
    pass


class _PostgresServer:
    """A throwaway cluster in a temporary directory, trust auth, fsync off.

    PostgreSQL refuses to run as root, so as root every server command runs
    as the ``postgres`` user that the Debian package creates, and the
    directory belongs to it.
    """

    def __init__(self, bindir):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="ferroloop-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.socket_dir = self.dir
        self.port = None
        self.started = False
        self.prefix = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise _PostgresUnavailable(
                    "running as root but there is no 'postgres' user to run "
                    "the server as") from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser")
            self.prefix = ([runuser, "-u", "postgres", "--"] if runuser
                           else None)
        os.chmod(self.dir, 0o700)

    def _cmd(self, tool, *args, timeout=60):
        argv = [os.path.join(self.bindir, tool), *args]
        if self.prefix is None:  # root without runuser: su
            argv = ["su", "postgres", "-s", "/bin/sh", "-c",
                    " ".join(f"'{a}'" for a in argv)]
        else:
            argv = self.prefix + argv
        return subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)

    def _log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no server log)"

    def _make_certificate(self):
        """A self-signed certificate so that clients can ask for TLS."""
        cert = os.path.join(self.dir, "server.crt")
        key = os.path.join(self.dir, "server.key")
        proc = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60)
        if proc.returncode:
            raise _PostgresUnavailable(
                "openssl could not make a certificate:\n"
                + proc.stdout.decode(errors="replace")[-1000:])
        os.chmod(key, 0o600)
        if os.geteuid() == 0:
            owner = os.stat(self.dir)
            for path in (cert, key):
                os.chown(path, owner.st_uid, owner.st_gid)
        return cert, key

    def start(self):
        proc = self._cmd("initdb", "-D", self.data, "-A", "trust", "-U", PG_USER,
                         "-E", "UTF8", "--locale=C", "--no-sync")
        if proc.returncode:
            raise _PostgresUnavailable(
                f"initdb failed ({proc.returncode}):\n"
                + proc.stdout.decode(errors="replace")[-2000:])
        if shutil.which("openssl") is None:
            raise _PostgresUnavailable("the openssl command is needed to make "
                                       "the server's TLS certificate")
        cert, key = self._make_certificate()
        for _ in range(3):  # the free port can be taken in between
            self.port = _free_port()
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                       f"-c unix_socket_directories={self.socket_dir} "
                       "-c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=100 "
                       f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}")
            proc = self._cmd("pg_ctl", "-D", self.data, "-l", self.log, "-w",
                             "-t", "30", "-o", options, "start")
            if proc.returncode == 0:
                self.started = True
                return
        raise _PostgresUnavailable(
            f"pg_ctl start failed ({proc.returncode}):\n"
            + proc.stdout.decode(errors="replace")[-1000:] + "\n" + self._log_tail())

    def stop(self):
        try:
            if self.started:
                proc = self._cmd("pg_ctl", "-D", self.data, "-m", "fast", "-w",
                                 "-t", "30", "stop")
                if proc.returncode:
                    self._cmd("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    """A running PostgreSQL server: host/port for TCP, socket_dir for Unix."""

    def unavailable(msg):
        msg = f"PostgreSQL server unavailable: {msg}"
        if FERROLOOP_REQUIRED:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg + " (set FERROLOOP_REQUIRED=1 to make this an error)")

    bindir = _find_pg_bindir()
    if bindir is None:
        if os.geteuid() != 0:
            unavailable("no /usr/lib/postgresql/*/bin/initdb and not root; "
                        "install the Debian package 'postgresql' "
                        "(scripts/test.sh does it when run as root)")
        error = _apt_install_postgresql()
        bindir = _find_pg_bindir()
        if bindir is None:
            unavailable(f"apt-get install postgresql did not provide initdb: {error}")
    try:
        server = _PostgresServer(bindir)
    except _PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        try:
            server.start()
        except (_PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
            unavailable(f"{bindir}: {exc}")
        yield {"host": "127.0.0.1", "port": server.port,
               "socket_dir": server.socket_dir, "user": PG_USER,
               "database": "postgres"}
    finally:
        server.stop()


async def _pg_connect(asyncpg, pg, *, unix=False, ssl=False, **kwargs):
    # The server accepts TLS, so asyncpg's default (sslmode "prefer") would
    # use it: plain TCP is asked for explicitly, TLS only where tested.
    host = pg["socket_dir"] if unix else pg["host"]
    return await asyncpg.connect(host=host, port=pg["port"], user=pg["user"],
                                 database=pg["database"], timeout=10,
                                 ssl=ssl, **kwargs)


@_PG_TIMEOUT
def test_asyncpg_queries_transactions_prepared(run, loop_factory, asyncpg, pg):
    import datetime
    import decimal

    base = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    rows = [(i, f"item-{i}", decimal.Decimal(i) / 4, [f"t{i % 3}", "x"],
             base + datetime.timedelta(minutes=i)) for i in range(300)]

    async def main():
        conn = await _pg_connect(asyncpg, pg)
        try:
            assert await conn.fetchval("select 1 + 1") == 2
            await conn.execute(
                "create temp table items (id int primary key, name text not null, "
                "price numeric, tags text[], created timestamptz)")
            await conn.executemany(
                "insert into items values ($1, $2, $3, $4, $5)", rows)
            fetched = await conn.fetch("select * from items order by id")
            assert [tuple(r.values()) for r in fetched] == rows
            assert fetched[7]["name"] == "item-7"

            # A transaction rolled back by an exception leaves nothing behind.
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("delete from items where id < 100")
                    await conn.execute("insert into items (id, name) values (1000, 'z')")
                    assert await conn.fetchval("select count(*) from items") == 201
                    1 / 0
            assert await conn.fetchval("select count(*) from items") == 300
            # ... and so does an explicit rollback.
            tr = conn.transaction()
            await tr.start()
            await conn.execute("update items set name = 'changed'")
            await tr.rollback()
            assert await conn.fetchval(
                "select count(*) from items where name = 'changed'") == 0
            # A committed one sticks.
            async with conn.transaction():
                await conn.execute("delete from items where id >= 200")
            assert await conn.fetchval("select count(*) from items") == 200

            # A prepared statement, executed many times.
            stmt = await conn.prepare(
                "select id, name, price from items where id = $1")
            assert [a.name for a in stmt.get_attributes()] == ["id", "name", "price"]
            for i in (0, 5, 199, 77):
                assert tuple(await stmt.fetchrow(i)) == rows[i][:3]
            assert await stmt.fetchrow(250) is None

            # A server-side cursor (many round trips) inside a transaction.
            seen = []
            async with conn.transaction():
                async for record in conn.cursor(
                        "select id from items where id % $1 = 0 order by id", 3,
                        prefetch=7):
                    seen.append(record["id"])
            assert seen == list(range(0, 200, 3))

            # COPY FROM STDIN with binary records.
            await conn.execute("create temp table copied (a int, b text)")
            result = await conn.copy_records_to_table(
                "copied", records=[(i, str(i) * 3) for i in range(5000)])
            assert result == "COPY 5000"
            assert await conn.fetchval("select sum(a) from copied") == sum(range(5000))
            # COPY TO STDOUT, streamed into a file object.
            import io
            out = io.BytesIO()
            result = await conn.copy_from_query(
                "select a, b from copied where a < 1000 order by a", output=out)
            assert result == "COPY 1000"
            assert out.getvalue() == b"".join(
                b"%d\t%s\n" % (i, str(i).encode() * 3) for i in range(1000))
        finally:
            await conn.close()
        assert conn.is_closed()

    _run_checked(run, loop_factory, main)


@_PG_TIMEOUT
def test_asyncpg_pool_concurrent_queries(run, loop_factory, asyncpg, pg):
    n_queries = 20

    async def main():
        async with asyncpg.create_pool(host=pg["host"], port=pg["port"],
                                       user=pg["user"], database=pg["database"],
                                       min_size=n_queries, max_size=n_queries,
                                       timeout=10, ssl=False) as pool:

            async def one(i):
                return await pool.fetchrow(
                    "select pg_sleep(0.2), $1::int * 3 as v, pg_backend_pid() as pid", i)

            await asyncio.gather(*(one(i) for i in range(n_queries)))  # warm up
            start = time.monotonic()
            results = await asyncio.gather(*(one(i) for i in range(n_queries)))
            elapsed = time.monotonic() - start
        assert [r["v"] for r in results] == [i * 3 for i in range(n_queries)]
        # Really ran on n_queries server backends at once.
        assert len({r["pid"] for r in results}) == n_queries
        # One query sleeps 0.2 s: the sum is 4 s.
        assert 0.2 <= elapsed < 1.0, elapsed
        return elapsed

    elapsed = _run_checked(run, loop_factory, main)
    print(f"{n_queries} concurrent pg_sleep(0.2) queries: {elapsed:.3f}s")


@_PG_TIMEOUT
def test_asyncpg_listen_notify(run, loop_factory, asyncpg, pg):
    async def main():
        listener = await _pg_connect(asyncpg, pg)
        sender = await _pg_connect(asyncpg, pg)
        try:
            received = asyncio.Queue()
            loop = asyncio.get_running_loop()

            def on_notify(connection, pid, channel, payload):
                # Called on the loop under test (a failing assertion here
                # reaches the loop's exception handler: see _run_checked).
                assert asyncio.get_running_loop() is loop
                received.put_nowait((connection is listener, pid, channel, payload))

            await listener.add_listener("ferro_chan", on_notify)
            sender_pid = sender.get_server_pid()
            for i in range(5):
                await sender.execute(f"notify ferro_chan, 'payload {i}'")
            # Notifications sent in a transaction are delivered on commit.
            async with sender.transaction():
                await sender.execute("select pg_notify('ferro_chan', 'in tx 1')")
                await sender.execute("select pg_notify('ferro_chan', 'in tx 2')")
                await sender.execute("select pg_notify('other_chan', 'ignored')")
            got = [await asyncio.wait_for(received.get(), 5) for _ in range(7)]
            expected = [f"payload {i}" for i in range(5)] + ["in tx 1", "in tx 2"]
            assert got == [(True, sender_pid, "ferro_chan", p) for p in expected]

            # Delivered while the listener is idle (no query of its own
            # running): a notification must wake up the reading side.
            await asyncio.sleep(0.1)
            await sender.execute("notify ferro_chan, 'late'")
            assert await asyncio.wait_for(received.get(), 5) == (
                True, sender_pid, "ferro_chan", "late")

            await listener.remove_listener("ferro_chan", on_notify)
            await sender.execute("notify ferro_chan, 'after remove'")
            assert await listener.fetchval("select 7") == 7
            await asyncio.sleep(0.1)
            assert received.empty()
        finally:
            await listener.close()
            await sender.close()

    _run_checked(run, loop_factory, main)


@_PG_TIMEOUT
def test_asyncpg_cancelled_query_leaves_connection_usable(run, loop_factory, asyncpg, pg):
    async def main():
        conn = await _pg_connect(asyncpg, pg)
        try:
            pid = conn.get_server_pid()
            start = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.fetchval("select pg_sleep(5)"), 0.3)
            # asyncpg sends a CancelRequest on a second connection and waits
            # for the server to abort the query.
            assert await asyncio.wait_for(conn.fetchval("select 42"), 5) == 42
            elapsed = time.monotonic() - start
            assert elapsed < 2.0, elapsed
            assert not conn.is_closed()
            assert conn.get_server_pid() == pid
            assert await conn.fetchval("select $1::text || '!'", "still usable") == "still usable!"
            # The same through a task cancelled by hand.
            task = asyncio.ensure_future(conn.fetchval("select pg_sleep(5)"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.wait_for(conn.fetchval("select 43"), 5) == 43
            assert time.monotonic() - start < 3.0
        finally:
            await conn.close()
        return elapsed

    _run_checked(run, loop_factory, main)


@_PG_TIMEOUT
def test_asyncpg_unix_socket(run, loop_factory, asyncpg, pg):
    async def main():
        unix_conn = await _pg_connect(asyncpg, pg, unix=True)
        tcp_conn = await _pg_connect(asyncpg, pg)
        try:
            # inet_server_addr() is NULL on a Unix-domain connection.
            assert await unix_conn.fetchval("select inet_server_addr()") is None
            assert str(await tcp_conn.fetchval("select inet_server_addr()")) == "127.0.0.1"
            peer = unix_conn._transport.get_extra_info("peername")
            assert peer == os.path.join(pg["socket_dir"], f".s.PGSQL.{pg['port']}")
            values = await unix_conn.fetch(
                "select g, repeat('x', g) from generate_series(1, 2000) g")
            assert [(r[0], len(r[1])) for r in values] == [(g, g) for g in range(1, 2001)]
            assert await unix_conn.fetchval(
                "select count(*) from pg_stat_activity where backend_type = 'client backend'"
            ) >= 2
        finally:
            await unix_conn.close()
            await tcp_conn.close()

    _run_checked(run, loop_factory, main)


@_PG_TIMEOUT
def test_asyncpg_tls(run, loop_factory, asyncpg, pg):
    """asyncpg upgrades the connection with loop.start_tls()."""
    import ssl

    async def main():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = await _pg_connect(asyncpg, pg, ssl=context)
        plain = await _pg_connect(asyncpg, pg)
        try:
            query = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
            assert await conn.fetchval(query) is True
            assert await plain.fetchval(query) is False
            assert conn._transport.get_extra_info("ssl_object") is not None
            assert plain._transport.get_extra_info("ssl_object") is None
            # Several MB through TLS in both directions.
            big = await conn.fetchval("select repeat('ab', 1500000)")
            assert big == "ab" * 1500000
            payload = os.urandom(2 * 1024 * 1024)
            assert await conn.fetchval("select sha256($1)", payload) == hashlib.sha256(payload).digest()
            # Cancelling a query on a TLS connection.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.fetchval("select pg_sleep(5)"), 0.3)
            assert await asyncio.wait_for(conn.fetchval("select 5"), 5) == 5
        finally:
            await conn.close()
            await plain.close()
        assert conn.is_closed()

    _run_checked(run, loop_factory, main)


@_PG_TIMEOUT
def test_asyncpg_connection_terminated_by_server(run, loop_factory, asyncpg, pg):
    async def main():
        victim = await _pg_connect(asyncpg, pg)
        admin = await _pg_connect(asyncpg, pg)
        try:
            terminated = []
            victim.add_termination_listener(lambda conn: terminated.append(conn))
            pid = victim.get_server_pid()
            assert await admin.fetchval("select pg_terminate_backend($1)", pid) is True
            # The idle victim notices the server closing the connection
            # without doing anything itself (connection_lost is delivered).
            deadline = time.monotonic() + 5
            while not victim.is_closed():
                assert time.monotonic() < deadline, "connection loss not noticed"
                await asyncio.sleep(0.01)
            with pytest.raises(asyncpg.exceptions.InterfaceError):
                await victim.fetchval("select 1")
            await asyncio.sleep(0)  # termination listeners run as callbacks
            assert terminated == [victim]
            assert await admin.fetchval(
                "select count(*) from pg_stat_activity where pid = $1", pid) == 0

            # A query in flight when its backend is terminated fails with a
            # server error, not a hang.
            victim = await _pg_connect(asyncpg, pg)
            pid = victim.get_server_pid()
            query = asyncio.ensure_future(victim.fetchval("select pg_sleep(5)"))
            await asyncio.sleep(0.2)
            await admin.fetchval("select pg_terminate_backend($1)", pid)
            with pytest.raises((asyncpg.exceptions.AdminShutdownError,
                                asyncpg.exceptions.ConnectionDoesNotExistError)):
                await asyncio.wait_for(query, 5)
            assert await admin.fetchval("select 1") == 1
        finally:
            await victim.close()
            await admin.close()

    _run_checked(run, loop_factory, main)


# ---------------------------------------------------------------------------
# Whole programs: the libraries' own entry points (aiohttp's web.run_app,
# uvicorn.run) in a child process, stopped by a signal.  On the ferroloop
# parametrization the unchanged script runs under ``python -m ferroloop``.
# ---------------------------------------------------------------------------

_RUN_APP_SCRIPT = '''
import asyncio, sys
from aiohttp import web

async def hello(request):
    return web.Response(text=type(asyncio.get_running_loop()).__module__)

async def on_cleanup(app):
    print("cleanup", flush=True)

app = web.Application()
app.router.add_get("/", hello)
app.on_cleanup.append(on_cleanup)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
print("returned", flush=True)
'''

_UVICORN_RUN_SCRIPT = '''
import asyncio, sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                print("startup", flush=True)
                await send({"type": "lifespan.startup.complete"})
            else:
                print("shutdown", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = type(asyncio.get_running_loop()).__module__.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="none",
            http="h11", ws="none", lifespan="on", log_level="warning")
print("returned", flush=True)
'''


def _get_until_up(port, deadline):
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("program, sig, returncode, output", [
    ("run_app", "SIGTERM", 0, ["cleanup", "returned"]),
    ("run_app", "SIGINT", 0, ["cleanup", "returned"]),
    ("uvicorn_run", "SIGINT", 0, ["startup", "shutdown", "returned"]),
    # uvicorn re-raises a captured SIGTERM once its handlers are restored.
    ("uvicorn_run", "SIGTERM", -15, ["startup", "shutdown"]),
])
def test_library_program_stopped_by_signal(loop_factory, aiohttp, uvicorn, tmp_path,
                                           program, sig, returncode, output):
    import signal

    script = tmp_path / f"{program}.py"
    script.write_text(_RUN_APP_SCRIPT if program == "run_app" else _UVICORN_RUN_SCRIPT)
    port = _free_port()
    argv = [sys.executable, str(script), str(port)]
    if loop_factory.name == "ferroloop":
        argv[1:1] = ["-m", "ferroloop"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        body = _get_until_up(port, time.monotonic() + 20)
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # The script's requests were served by the loop under test.
    assert body == loop_factory.loop_class.__module__
    assert (proc.returncode, out.decode().split()) == (returncode, output), out.decode()
