"""In-process micro-benchmarks of an event loop's hot paths.

    python benches/micro.py --loop ferroloop [--only call_soon,tasks] [--json]

Each benchmark runs a fixed amount of work on a fresh loop and reports
operations per second; it also checks that the work was done (a benchmark
that silently skipped work would look fast).  Run by benches/run.py in a
separate process per loop and repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

CALL_SOON = 500_000
TIMERS = 100_000
TASKS, YIELDS = 1_000, 200
FUTURES = 200_000
THREADSAFE = 200_000
EXECUTOR = 20_000
SLEEPERS = 20_000
TLS_ROUNDS, TLS_SIZE = 5_000, 1024
UDP_ROUNDS, UDP_SIZE = 20_000, 100
ECHO_ROUNDS, ECHO_SIZE = 20_000, 1024


def make_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    return importlib.import_module(name).new_event_loop()


async def call_soon():
    """Callbacks queued by callbacks: the ready queue and Handle cost."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = CALL_SOON

    def step():
        nonlocal left
        left -= 1
        if left:
            loop.call_soon(step)
        else:
            done.set_result(None)

    loop.call_soon(step)
    await done
    assert left == 0
    return CALL_SOON


async def call_later():
    """Timers with spread deadlines, half of them cancelled: the timer heap."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fired = 0
    expected = TIMERS // 2

    def ring():
        nonlocal fired
        fired += 1
        if fired == expected:
            done.set_result(None)

    handles = [loop.call_later((i * 7919 % TIMERS) * (0.02 / TIMERS), ring) for i in range(TIMERS)]
    for handle in handles[1::2]:
        handle.cancel()
    await done
    await asyncio.sleep(0.03)
    assert fired == expected, fired
    return TIMERS


async def tasks():
    """Many tasks yielding with sleep(0): Task steps through the loop."""
    steps = 0

    async def yielder():
        nonlocal steps
        for _ in range(YIELDS):
            await asyncio.sleep(0)
        steps += YIELDS

    await asyncio.gather(*(yielder() for _ in range(TASKS)))
    assert steps == TASKS * YIELDS
    return steps


async def futures():
    """A future resolved by a loop callback, awaited by a coroutine."""
    loop = asyncio.get_running_loop()
    total = 0
    for i in range(FUTURES):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, i)
        total += await fut
    assert total == FUTURES * (FUTURES - 1) // 2
    return FUTURES


async def call_soon_threadsafe():
    """Callbacks sent from another thread, each waking the loop if it sleeps."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    received = 0

    def bump():
        nonlocal received
        received += 1
        if received == THREADSAFE:
            done.set_result(None)

    def producer():
        for _ in range(THREADSAFE):
            loop.call_soon_threadsafe(bump)

    thread = threading.Thread(target=producer)
    thread.start()
    await done
    thread.join()
    return THREADSAFE


async def run_in_executor():
    """Round trips to the default thread pool and back."""
    loop = asyncio.get_running_loop()
    total = 0
    for i in range(EXECUTOR):
        total += await loop.run_in_executor(None, int, i)
    assert total == EXECUTOR * (EXECUTOR - 1) // 2
    return EXECUTOR


async def gather_sleeps():
    """Many tasks sleeping a millisecond each, gathered."""
    results = await asyncio.gather(*(asyncio.sleep(0.001, result=i) for i in range(SLEEPERS)))
    assert results == list(range(SLEEPERS))
    return SLEEPERS


@functools.cache
def _tls_contexts():
    """A self-signed certificate and the two contexts, made once per process:
    the warm-up run makes them, so the timed run never includes the RSA key
    generation (0.09-0.28 s here, against 0.2-0.3 s for the 5,000 rounds)."""
    directory = tempfile.mkdtemp(prefix="flbench")
    cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=cert)
    return server, client


def _stream_echo_handler():
    """A start_server handler echoing until end of stream, and a future
    set once its end of the connection has closed (so a benchmark can
    wait for it before its loop closes)."""
    served = asyncio.get_running_loop().create_future()

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        served.set_result(None)

    return echo, served


async def tls_echo():
    """1 KiB messages echoed over TLS through streams, one connection."""
    server_ctx, client_ctx = _tls_contexts()
    echo, served = _stream_echo_handler()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
    )
    message = os.urandom(TLS_SIZE)
    for _ in range(TLS_ROUNDS):
        writer.write(message)
        assert await reader.readexactly(TLS_SIZE) == message
    writer.close()
    await writer.wait_closed()
    await served  # the server's end closed too, before the loop is
    server.close()
    await server.wait_closed()
    return TLS_ROUNDS


async def udp_echo():
    """100-byte datagrams between two endpoints of the loop, one in flight:
    a DatagramProtocol echo server and a connected client."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    message = os.urandom(UDP_SIZE)

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    class Client(Echo):
        rounds = 0

        def datagram_received(self, data, addr):
            assert data == message
            self.rounds += 1
            if self.rounds == UDP_ROUNDS:
                done.set_result(None)
            else:
                self.transport.sendto(data)

        def error_received(self, exc):
            if not done.done():
                done.set_exception(exc)

    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=server.get_extra_info("sockname")
    )
    client.sendto(message)
    # A datagram lost on loopback would stall the exchange: fail instead.
    await asyncio.wait_for(done, 120)
    client.close()
    server.close()
    return UDP_ROUNDS


async def sock_echo():
    """1 KiB round trips over loopback TCP with loop.sock_recv and
    loop.sock_sendall on both ends, one message in flight: the sock_* echo
    rows' work in one process (no kernel or client time is counted apart)."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def echo():
        while data := await loop.sock_recv(server, 65536):
            await loop.sock_sendall(server, data)

    echoing = loop.create_task(echo())
    message = os.urandom(ECHO_SIZE)
    for _ in range(ECHO_ROUNDS):
        await loop.sock_sendall(client, message)
        got = 0
        while got < ECHO_SIZE:
            got += len(await loop.sock_recv(client, 65536))
    client.close()
    await echoing
    server.close()
    return ECHO_ROUNDS


async def stream_echo():
    """1 KiB round trips over loopback TCP through asyncio's streams
    (start_server, open_connection, read, write, drain), one in flight."""
    echo, served = _stream_echo_handler()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    message = os.urandom(ECHO_SIZE)
    for _ in range(ECHO_ROUNDS):
        writer.write(message)
        await writer.drain()
        got = 0
        while got < ECHO_SIZE:
            got += len(await reader.read(65536))
    writer.close()
    await writer.wait_closed()
    await served  # the server's end closed too, before the loop is
    server.close()
    await server.wait_closed()
    return ECHO_ROUNDS


async def protocol_echo():
    """1 KiB round trips over loopback TCP between two asyncio.Protocols
    (create_server, create_connection), one in flight."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server_lost = loop.create_future()
    message = os.urandom(ECHO_SIZE)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            server_lost.set_result(None)

    class Client(Echo):
        rounds = got = 0

        def connection_made(self, transport):
            self.transport = transport
            transport.write(message)

        def connection_lost(self, exc):
            pass

        def data_received(self, data):
            self.got += len(data)
            if self.got < ECHO_SIZE:
                return
            self.got = 0
            self.rounds += 1
            if self.rounds == ECHO_ROUNDS:
                done.set_result(None)
            else:
                self.transport.write(message)

    server = await loop.create_server(Echo, "127.0.0.1", 0)
    transport, _ = await loop.create_connection(Client, *server.sockets[0].getsockname()[:2])
    await done
    transport.close()
    await server_lost  # the server's end closed too, before the loop is
    server.close()
    await server.wait_closed()
    return ECHO_ROUNDS


BENCHMARKS = {
    f.__name__: f
    for f in (call_soon, call_later, tasks, futures, call_soon_threadsafe, run_in_executor,
              gather_sleeps, tls_echo, udp_echo, sock_echo, stream_echo, protocol_echo)  # fmt: skip
}


def run_one(loop_name, name, measured=True):
    """Operations per second of one measured run after a warm-up run; with
    ``measured`` false, the warm-up only (benches/instructions.py counts a
    process that measures minus one that does not)."""
    loop = make_loop(loop_name)
    try:
        loop.run_until_complete(BENCHMARKS[name]())  # warm-up: imports, pools, caches
        if not measured:
            return 0.0
        start = time.perf_counter()
        ops = loop.run_until_complete(BENCHMARKS[name]())
        elapsed = time.perf_counter() - start
    finally:
        loop.close()
    return ops / elapsed


def scale_work(factor):
    """Multiplies the fixed amounts of work by ``factor`` (at least 1 each)."""
    global CALL_SOON, TIMERS, TASKS, FUTURES, THREADSAFE, EXECUTOR, SLEEPERS, TLS_ROUNDS
    global UDP_ROUNDS, ECHO_ROUNDS
    (CALL_SOON, TIMERS, TASKS, FUTURES, THREADSAFE, EXECUTOR, SLEEPERS, TLS_ROUNDS,
     UDP_ROUNDS, ECHO_ROUNDS) = (
        max(1, int(n * factor))
        for n in (CALL_SOON, TIMERS, TASKS, FUTURES, THREADSAFE, EXECUTOR, SLEEPERS, TLS_ROUNDS,
                  UDP_ROUNDS, ECHO_ROUNDS)
    )  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", default="asyncio")
    p.add_argument("--only", default=",".join(BENCHMARKS))
    p.add_argument("--json", action="store_true")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every benchmark's amount of work by this")
    p.add_argument("--warm-up-only", action="store_true",
                   help="run each benchmark's warm-up and skip its measured run")
    args = p.parse_args()
    scale_work(args.scale)
    results = {name: run_one(args.loop, name, measured=not args.warm_up_only)
               for name in args.only.split(",")}
    if args.json:
        print(json.dumps(results))
    else:
        for name, rate in results.items():
            print(f"{name:<22} {rate:>14,.0f} ops/s")


if __name__ == "__main__":
    sys.exit(main())
