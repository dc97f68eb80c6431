"""Futures and an @async_timed decorator.

A future is a placeholder for a result that does not exist yet. Here one
task waits on a future while another task (a "courier") resolves it later;
a second future is resolved by a plain callback scheduled with call_later,
and a third one receives an exception instead of a result.

The @async_timed decorator wraps a coroutine function and reports how long
each call took, which shows that waiting on two things concurrently costs
the longer of the two waits, not their sum.
"""

import asyncio
import functools
import time

LOG = []  # every timed call, in the order the calls finished


def async_timed(func):
    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        shown = ", ".join("<future>" if isinstance(a, asyncio.Future) else repr(a) for a in args)
        call = f"{func.__name__}({shown})"
        start = time.monotonic()
        try:
            return await func(*args, **kwargs)
        finally:
            LOG.append(call)
            print(f"  @async_timed: {call} took {time.monotonic() - start:.3f} s")
    return wrapper


@async_timed
async def courier(future, parcel, seconds):
    await asyncio.sleep(seconds)
    future.set_result(parcel)


@async_timed
async def wait_for_parcel(future):
    return await future


@async_timed
async def pause(seconds):
    await asyncio.sleep(seconds)
    return seconds


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")

    # 1. A future resolved by another task.
    parcel = loop.create_future()
    print(f"future before: done={parcel.done()}")
    courier_task = asyncio.create_task(courier(parcel, "a box of books", 0.2))
    received = await wait_for_parcel(parcel)
    await courier_task
    print(f"future after: done={parcel.done()}, result={received!r}")

    # 2. A future resolved by a plain callback.
    alarm = loop.create_future()
    loop.call_later(0.1, alarm.set_result, "ring!")
    rung = await alarm

    # 3. A future that receives an exception.
    broken = loop.create_future()
    loop.call_soon(broken.set_exception, LookupError("parcel lost"))
    try:
        await broken
        outcome = "no error"
    except LookupError as error:
        outcome = f"LookupError({error})"
    print(f"callback future -> {rung!r}; failed future -> {outcome}")

    # 4. Two timed pauses awaited together take about as long as the longer one.
    start = time.monotonic()
    both = await asyncio.gather(pause(0.3), pause(0.1))
    together = time.monotonic() - start
    print(f"gather(pause(0.3), pause(0.1)) took {together:.3f} s")

    print(f"RESULT: future resolved by another task -> {received!r}")
    print(f"RESULT: future resolved by call_later -> {rung!r}; by set_exception -> {outcome}")
    print(f"RESULT: timed calls finished in order {LOG}, results {both}")
    print(f"RESULT: concurrent pauses took at least the longer pause: {together >= 0.3 - 1e-3}")


if __name__ == "__main__":
    asyncio.run(main())
