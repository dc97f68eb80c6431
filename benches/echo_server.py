"""Echo servers for the benchmarks, in the styles asyncio programs use.

    python benches/echo_server.py --loop ferroloop --style protocol [--port 0] [--unix PATH]

Prints the listening address on stdout, then serves until killed.
Styles: ``sock`` (one task per connection over loop.sock_recv/sock_sendall),
``streams`` (asyncio.start_server, read/write/drain), ``protocol``
(asyncio.Protocol), ``buffered`` (asyncio.BufferedProtocol) and
``datagram`` (UDP, asyncio.DatagramProtocol; not over --unix).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import mmap
import socket
import sys


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        # Page-aligned (anonymous mmap) rather than bytearray(256 KiB), whose
        # malloc'd block starts 16 bytes into a page: on this project's AMD
        # VM the kernel's copy into such a buffer runs 2-3x slower, for
        # every loop alike, and the 100 KiB rows measured that instead of
        # the loop. benches/align_probe.py shows the effect.
        self.buffer = mmap.mmap(-1, 256 * 1024)
        self.view = memoryview(self.buffer)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.view[:nbytes])


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def echo_stream(reader, writer):
    while True:
        data = await reader.read(256 * 1024)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def echo_sock(loop, conn):
    with conn:
        while True:
            data = await loop.sock_recv(conn, 256 * 1024)
            if not data:
                break
            await loop.sock_sendall(conn, data)


def make_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "rsloop":
        return importlib.import_module("rsloop").new_event_loop()
    return importlib.import_module(name).new_event_loop()


async def serve(style, host, port, unix_path):
    loop = asyncio.get_running_loop()
    if style == "datagram":
        transport, _ = await loop.create_datagram_endpoint(EchoDatagramProtocol,
                                                           local_addr=(host, port))  # fmt: skip
        print("%s:%d" % transport.get_extra_info("sockname")[:2], flush=True)
        await asyncio.Event().wait()  # serves until killed
    if style == "sock":
        family = socket.AF_UNIX if unix_path else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        if not unix_path:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(unix_path or (host, port))
        listener.listen(1024)
        listener.setblocking(False)
        print(unix_path or "%s:%d" % listener.getsockname()[:2], flush=True)
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            if not unix_path:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.create_task(echo_sock(loop, conn))
    if style == "streams":
        if unix_path:
            server = await asyncio.start_unix_server(echo_stream, unix_path, limit=256 * 1024)
        else:
            server = await asyncio.start_server(echo_stream, host, port, limit=256 * 1024)
    else:
        factory = EchoProtocol if style == "protocol" else EchoBufferedProtocol
        if unix_path:
            server = await loop.create_unix_server(factory, unix_path)
        else:
            server = await loop.create_server(factory, host, port)
    sockname = server.sockets[0].getsockname()
    print(unix_path or "%s:%d" % sockname[:2], flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--style", default="protocol", choices=["sock", "streams", "protocol", "buffered", "datagram"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix")
    args = parser.parse_args()
    loop = make_loop(args.loop)
    try:
        loop.run_until_complete(serve(args.style, args.host, args.port, args.unix))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
