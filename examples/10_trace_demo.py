"""A small program to look at with ``python -m ferroloop trace``.

Three cooks work at once (their waits overlap), a fetch runs in a thread,
and one careless step blocks the loop with ``time.sleep``: the timeline
shows each task's lane, what it waited for, and the red bar where the
whole loop stood still.
"""

import asyncio
import time


FINISHED = []


async def cook(dish, seconds):
    await asyncio.sleep(seconds)
    FINISHED.append(dish)
    return dish


async def fetch_in_thread():
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, time.sleep, 0.15)


async def careless():
    await asyncio.sleep(0.05)
    time.sleep(0.1)  # blocks every task on the loop


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    cooks = [asyncio.create_task(cook(d, s), name=f"cook {d}")
             for d, s in (("burger", 0.3), ("fries", 0.1), ("pasta", 0.4))]
    helper = asyncio.create_task(fetch_in_thread(), name="fetch")
    oops = asyncio.create_task(careless(), name="careless")
    dishes = await asyncio.gather(*cooks)
    await asyncio.gather(helper, oops)
    print(f"RESULT: served {dishes}, ready in the order {FINISHED}")


asyncio.run(main())
