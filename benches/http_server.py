"""HTTP/1.1 keep-alive "hello world" servers for the benchmarks.

    python benches/http_server.py --loop ferroloop --style protocol|aiohttp|uvicorn

Prints HOST:PORT on stdout, then serves until killed.  ``protocol`` is a
minimal request parser on asyncio.Protocol (the loop's transport is most of
the work); ``aiohttp`` and ``uvicorn`` run the same response through a real
framework on the chosen loop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import socket
import sys

BODY = b"Hello, world!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class HelloProtocol(asyncio.Protocol):
    """Answers every complete request head (GET, no body) in the buffer."""

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        buffered = self.pending + data if self.pending else data
        count = buffered.count(b"\r\n\r\n")
        if count:
            self.transport.write(RESPONSE * count)
            self.pending = buffered[buffered.rfind(b"\r\n\r\n") + 4 :]
        else:
            self.pending = buffered


def make_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


async def serve_protocol(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, host, port, backlog=1024)
    print("%s:%d" % server.sockets[0].getsockname()[:2], flush=True)
    await server.serve_forever()


async def serve_aiohttp(host, port):
    from aiohttp import web

    async def hello(request):
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print("%s:%d" % site._server.sockets[0].getsockname()[:2], flush=True)
    await asyncio.Event().wait()


async def serve_uvicorn(host, port):
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(BODY)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": BODY})

    # proto=IPPROTO_TCP as getaddrinfo gives it: asyncio turns Nagle off only
    # for sockets that say they are TCP, and with Nagle on, h11's two writes
    # per response (head, then body) waited on the client's delayed ACK,
    # 40 ms per request, on every loop.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before the address is announced: clients queue in the
    # backlog until uvicorn accepts.
    sock.listen(1024)
    print("%s:%d" % sock.getsockname()[:2], flush=True)
    config = uvicorn.Config(app, loop="none", lifespan="off", log_level="error",
                            access_log=False, http="h11")  # fmt: skip
    await uvicorn.Server(config).serve(sockets=[sock])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--style", default="protocol", choices=["protocol", "aiohttp", "uvicorn"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve = {"protocol": serve_protocol, "aiohttp": serve_aiohttp, "uvicorn": serve_uvicorn}
    loop = make_loop(args.loop)
    try:
        loop.run_until_complete(serve[args.style](args.host, args.port))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
