"""How fast the kernel copies a TCP receive into a buffer, by where the buffer starts.

    python benches/align_probe.py [--size 102400] [--rounds 2000]

A thread on CPU 1 sends ``--size`` bytes over loopback TCP; CPU 0 receives
them with ``recv_into`` into one page-aligned buffer at several offsets
and prints the time per message. On the AMD EPYC VM this project is
measured on, a buffer starting a few bytes past a page boundary (as a
malloc'd block of 256 KiB does: 16 bytes in) is received into 2-3x more
slowly than one starting on the boundary or well inside the page. That is
why ferroloop's receive scratch buffer is page-aligned (src/py_bytes.rs)
and why the buffered echo server's buffer is an mmap.
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import threading
import time

OFFSETS = (0, 8, 16, 24, 32, 64, 1024, 2048 + 16, 4096 + 16, 0, 16)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100 * 1024)
    p.add_argument("--rounds", type=int, default=2000)
    args = p.parse_args()
    two_cpus = (os.cpu_count() or 1) > 1

    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    listener.close()
    payload = b"x" * args.size
    done = threading.Event()

    def send_on_request():
        if two_cpus:
            os.sched_setaffinity(0, {1})
        while sender.recv(1) == b"k" and not done.is_set():
            sender.sendall(payload)

    threading.Thread(target=send_on_request, daemon=True).start()
    if two_cpus:
        os.sched_setaffinity(0, {0})
    area = mmap.mmap(-1, 2 * 4096 + 2 * args.size)
    view = memoryview(area)

    for offset in OFFSETS:
        target = view[offset : offset + args.size]
        spent = 0.0
        for _ in range(args.rounds):
            receiver.send(b"k")
            got = 0
            while got < args.size:
                start = time.perf_counter()
                got += receiver.recv_into(target[got:])
                spent += time.perf_counter() - start
        per_message = spent / args.rounds * 1e6
        print(f"buffer at page offset {offset % 4096:5} (+{offset:5}): {per_message:7.1f} us per message")
    done.set()
    sender.close()
    receiver.close()


if __name__ == "__main__":
    main()
