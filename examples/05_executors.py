"""Keeping the loop free: CPU-bound work in processes, blocking calls in threads.

Counting primes is pure computation: run on the loop's thread it would stall
every other task. Here it is split into chunks that run in a
ProcessPoolExecutor (separate processes, so separate GILs). At the same time
a blocking call (time.sleep standing in for a slow library call) runs in the
loop's default thread pool via asyncio.to_thread. Meanwhile a ticker task
keeps ticking every 0.05 s, because the loop itself is never blocked.
"""

import asyncio
import concurrent.futures
import os
import time

LIMIT = 600_000
CHUNKS = 4
TICK = 0.05


def count_primes(lo, hi):
    """Primes in [lo, hi), by trial division: deliberately CPU-heavy."""
    count = 0
    for n in range(max(lo, 2), hi):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count, os.getpid()


def slow_library_call(seconds):
    time.sleep(seconds)
    return f"slept {seconds} s in a thread"


async def ticker(stop, ticks):
    while not stop.is_set():
        await asyncio.sleep(TICK)
        ticks.append(time.monotonic())


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    stop = asyncio.Event()
    ticks = []
    tick_task = asyncio.create_task(ticker(stop, ticks))

    start = time.monotonic()
    bounds = [(LIMIT * i // CHUNKS, LIMIT * (i + 1) // CHUNKS) for i in range(CHUNKS)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        chunk_futures = [loop.run_in_executor(pool, count_primes, lo, hi) for lo, hi in bounds]
        thread_result, *chunks = await asyncio.gather(
            asyncio.to_thread(slow_library_call, 0.5), *chunk_futures)
    elapsed = time.monotonic() - start
    stop.set()
    await tick_task

    total = sum(count for count, _ in chunks)
    workers = {pid for _, pid in chunks}
    print(f"primes below {LIMIT}: {total} (chunks {[c for c, _ in chunks]}, "
          f"computed by {len(workers)} worker process(es), main pid not among them: "
          f"{os.getpid() not in workers})")
    print(f"thread pool: {thread_result}")
    print(f"everything took {elapsed:.2f} s; the ticker ticked {len(ticks)} times meanwhile")

    print(f"RESULT: primes below {LIMIT} = {total}, per chunk {[c for c, _ in chunks]}")
    print(f"RESULT: computed outside the loop's process: {os.getpid() not in workers}")
    print(f"RESULT: thread pool -> {thread_result!r}")
    # Sanity: the work lasts at least 0.5 s, so a free loop ticks several times.
    print(f"RESULT: the ticker kept ticking during the work: {len(ticks) >= 3}")


if __name__ == "__main__":
    asyncio.run(main())
