"""A blocking call stalls everything, and debug mode says where.

A ticker task wants to tick every 0.1 s. Another task, "blocker", calls
time.sleep(0.5) instead of awaiting asyncio.sleep: the whole event loop
thread sleeps, so the ticker misses its ticks and the gap between two ticks
grows to about half a second.

The program runs with asyncio.run(..., debug=True). In debug mode the loop
times every callback it runs and logs a warning for any that takes longer
than loop.slow_callback_duration (0.1 s by default), naming the task whose
step was slow. The warnings are caught here with a logging handler so they
can be printed and checked.
"""

import asyncio
import logging
import re
import time

TICK = 0.1
BLOCK = 0.5


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def ticker(stop, ticks):
    while not stop.is_set():
        ticks.append(time.monotonic())
        await asyncio.sleep(TICK)


async def blocker():
    await asyncio.sleep(2.5 * TICK)  # let a few ticks happen first
    time.sleep(BLOCK)  # the mistake: this blocks the whole loop
    return "done blocking"


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    print(f"debug mode: {loop.get_debug()}, slow_callback_duration: {loop.slow_callback_duration} s")

    stop = asyncio.Event()
    ticks = []
    tick_task = asyncio.create_task(ticker(stop, ticks), name="ticker")
    await asyncio.create_task(blocker(), name="blocker")
    await asyncio.sleep(2.5 * TICK)  # a few more ticks after the stall
    stop.set()
    await tick_task

    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    print("gaps between ticks: " + " ".join(f"{gap:.2f}" for gap in gaps))
    return max(gaps)


if __name__ == "__main__":
    collector = Collect()
    logging.getLogger("asyncio").addHandler(collector)
    longest_gap = asyncio.run(main(), debug=True)

    slow_steps = [m for m in collector.messages if m.startswith("Executing") and "took" in m]
    for message in slow_steps:
        # Drop directories from the file names in the message to keep it short.
        print(f"loop warned: {re.sub(r'[^ =<>]*/', '', message)}")
    named = [m for m in slow_steps if "name='blocker'" in m]
    print(f"RESULT: the longest gap between ticks covered the blocking call: {longest_gap >= BLOCK}")
    print(f"RESULT: the loop warned about a slow step of task 'blocker': {len(named) >= 1}")
