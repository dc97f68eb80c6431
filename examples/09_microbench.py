"""A small, unscientific benchmark of the loop's hot paths.

Each section stresses one thing an event loop does all the time:

  sleep(0)         many tasks yielding to each other: task steps, ready queue
  call_soon chain  a callback that schedules the next one: bare callback cost
  call_soon batch  many callbacks queued at once, then run
  timers           many call_at timers with shuffled deadlines, a quarter
                   cancelled: timer heap, cancellation, firing order
  gather sleeps    many tasks sleeping a millisecond each, gathered
  queue ping-pong  two tasks passing items through a pair of asyncio.Queues:
                   futures being resolved and waiters woken

Timings are wall-clock for one run on whatever machine this is; they vary
from run to run. The RESULT lines only check that the work was done right.
"""

import asyncio
import time

TASKS, YIELDS = 1_000, 100
CHAIN = 200_000
BATCH = 200_000
TIMERS = 20_000
SLEEPERS = 5_000
PINGS = 20_000

timings = []


def report(name, ops, seconds):
    timings.append((name, seconds))
    print(f"  {name:<16} {ops:>8} ops  {seconds:7.3f} s  {seconds / ops * 1e6:6.2f} us/op")


async def bench_sleep0():
    steps = 0

    async def yielder():
        nonlocal steps
        for _ in range(YIELDS):
            await asyncio.sleep(0)
            steps += 1

    start = time.perf_counter()
    await asyncio.gather(*(yielder() for _ in range(TASKS)))
    report("sleep(0)", TASKS * YIELDS, time.perf_counter() - start)
    return steps


async def bench_call_soon_chain():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = CHAIN

    def step():
        nonlocal remaining
        remaining -= 1
        if remaining:
            loop.call_soon(step)
        else:
            done.set_result(CHAIN)

    start = time.perf_counter()
    loop.call_soon(step)
    count = await done
    report("call_soon chain", CHAIN, time.perf_counter() - start)
    return count


async def bench_call_soon_batch():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    counter = [0]

    def bump():
        counter[0] += 1
        if counter[0] == BATCH:
            done.set_result(BATCH)

    start = time.perf_counter()
    for _ in range(BATCH):
        loop.call_soon(bump)
    count = await done
    report("call_soon batch", BATCH, time.perf_counter() - start)
    return count


async def bench_timers():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fired = []
    expected = TIMERS - len(range(0, TIMERS, 4))

    def ring(when):
        fired.append(when)
        if len(fired) == expected:
            done.set_result(None)

    start = time.perf_counter()
    base = loop.time() + 0.005
    handles = []
    for i in range(TIMERS):
        # 7919 is prime, so i * 7919 % TIMERS visits every slot once: distinct,
        # shuffled deadlines spread over 10 ms.
        when = base + (i * 7919 % TIMERS) * (0.010 / TIMERS)
        handles.append(loop.call_at(when, ring, when))
    for handle in handles[::4]:
        handle.cancel()
    await done
    report("timers", TIMERS, time.perf_counter() - start)
    await asyncio.sleep(0.02)  # (untimed) a cancelled timer must not fire late either
    return len(fired), fired == sorted(fired)


async def bench_gather_sleeps():
    start = time.perf_counter()
    results = await asyncio.gather(*(asyncio.sleep(0.001, result=i) for i in range(SLEEPERS)))
    report("gather sleeps", SLEEPERS, time.perf_counter() - start)
    return results == list(range(SLEEPERS))


async def bench_queue_ping_pong():
    there, back = asyncio.Queue(), asyncio.Queue()

    async def echo():
        while (item := await there.get()) is not None:
            await back.put(item + 1)

    echo_task = asyncio.create_task(echo())
    start = time.perf_counter()
    total = 0
    for i in range(PINGS):
        await there.put(i)
        total += await back.get() - i
    await there.put(None)
    await echo_task
    report("queue ping-pong", PINGS, time.perf_counter() - start)
    return total


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    results = [
        ("sleep(0) steps", await bench_sleep0()),
        ("call_soon chain", await bench_call_soon_chain()),
        ("call_soon batch", await bench_call_soon_batch()),
        ("timers (fired, in deadline order)", await bench_timers()),
        ("gather sleeps in order", await bench_gather_sleeps()),
        ("queue round trips", await bench_queue_ping_pong()),
    ]
    for name, value in results:
        print(f"RESULT: {name}: {value}")
    for name, seconds in timings:
        print(f"BENCH: {name}: {seconds:.6f}")


if __name__ == "__main__":
    asyncio.run(main())
