"""An echo server on raw sockets, with the loop's sock_* coroutines.

The server accepts connections with loop.sock_accept and serves each client
in its own task, reading with loop.sock_recv and answering with
loop.sock_sendall. Several clients (each a task using loop.sock_connect,
sock_sendall and sock_recv) talk to it at the same time; each sends a few
lines, reads the echoes back and checks they match what it sent. Messages
end with a newline because TCP is a byte stream, not a sequence of
messages: one recv may return part of a line or several lines.
"""

import asyncio
import socket
import time

CLIENTS = 8
MESSAGES_PER_CLIENT = 5


async def serve_client(loop, conn, stats):
    with conn:
        while True:
            data = await loop.sock_recv(conn, 4096)
            if not data:  # the client closed its end
                break
            stats["bytes"] += len(data)
            await loop.sock_sendall(conn, data)
    stats["closed"] += 1


async def server(loop, listener, stats):
    handlers = []
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            stats["accepted"] += 1
            handlers.append(asyncio.create_task(serve_client(loop, conn, stats)))
    finally:
        # Cancelled once all clients are done; let the handlers finish first.
        await asyncio.gather(*handlers)


async def read_line(loop, sock, buffer):
    while b"\n" not in buffer:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("server closed the connection early")
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line.decode(), rest


async def client(loop, address, number):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    with sock:
        await loop.sock_connect(sock, address)
        matched = 0
        buffer = b""
        for i in range(MESSAGES_PER_CLIENT):
            message = f"client {number} says hello #{i} " + "x" * (number * 300)
            await loop.sock_sendall(sock, message.encode() + b"\n")
            echo, buffer = await read_line(loop, sock, buffer)
            matched += echo == message
            await asyncio.sleep(0.01 * ((number + i) % 3))  # interleave the clients
    return matched


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(CLIENTS)
    listener.setblocking(False)
    address = listener.getsockname()
    print(f"echo server listening on {address[0]}:{address[1]}; {CLIENTS} clients connecting")

    stats = {"accepted": 0, "closed": 0, "bytes": 0}
    start = time.monotonic()
    with listener:
        server_task = asyncio.create_task(server(loop, listener, stats))
        matched = await asyncio.gather(*(client(loop, address, n) for n in range(CLIENTS)))
        server_task.cancel()
        try:
            await server_task
        except asyncio.CancelledError:
            pass
    elapsed = time.monotonic() - start

    print(f"echoes matched per client: {matched}")
    print(f"server: accepted {stats['accepted']}, closed {stats['closed']}, "
          f"echoed {stats['bytes']} bytes in {elapsed:.2f} s")
    print(f"RESULT: echoes matched per client {matched} of {MESSAGES_PER_CLIENT} each")
    print(f"RESULT: server accepted {stats['accepted']}, closed {stats['closed']}, "
          f"echoed {stats['bytes']} bytes")


if __name__ == "__main__":
    asyncio.run(main())
