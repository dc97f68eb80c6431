"""The waiter and the cook.

A waiter takes three orders. The kitchen needs 8, 3 and 16 time units for
them (one unit is 0.1 s here).

First the waiter passes on one order and waits at the counter until it is
ready before passing on the next: the meal takes the *sum* of the cooking
times. Then the waiter passes on all three orders at once (one task each)
and collects them afterwards: the meal takes only as long as the *longest*
dish, and the dishes leave the kitchen in order of how long they take to
prepare, not in the order they were taken.
"""

import asyncio
import time

UNIT = 0.1  # seconds per unit of cooking time
ORDERS = [("burger", 8), ("fries", 3), ("pasta", 16)]


async def cook(dish, units, kitchen_log, start):
    await asyncio.sleep(units * UNIT)
    kitchen_log.append(dish)
    print(f"    {dish:<6} ready after {(time.monotonic() - start) / UNIT:4.1f} units")
    return dish


async def one_order_at_a_time():
    kitchen_log, served = [], []
    start = time.monotonic()
    for dish, units in ORDERS:
        served.append(await cook(dish, units, kitchen_log, start))
    return time.monotonic() - start, kitchen_log, served


async def all_orders_at_once():
    kitchen_log = []
    start = time.monotonic()
    tasks = [asyncio.create_task(cook(dish, units, kitchen_log, start))
             for dish, units in ORDERS]
    served = [await task for task in tasks]
    return time.monotonic() - start, kitchen_log, served


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    total = sum(units for _, units in ORDERS)
    longest = max(units for _, units in ORDERS)

    print("one order at a time:")
    seq_time, seq_kitchen, seq_served = await one_order_at_a_time()
    print(f"  meal took {seq_time / UNIT:4.1f} units ({seq_time:.2f} s); "
          f"sum of cooking times is {total}")

    print("all orders at once:")
    conc_time, conc_kitchen, conc_served = await all_orders_at_once()
    print(f"  meal took {conc_time / UNIT:4.1f} units ({conc_time:.2f} s); "
          f"longest cooking time is {longest}")
    print(f"  the waiter still served them in the order taken: {conc_served}")

    print(f"RESULT: one at a time: kitchen order {seq_kitchen}, served {seq_served}")
    print(f"RESULT: all at once: kitchen order {conc_kitchen}, served {conc_served}")
    # Sanity checks only: a sleep never ends early, and cooking everything
    # together must beat cooking one dish after another (by 11 units).
    print(f"RESULT: one at a time took at least {total} units: {seq_time >= total * UNIT - 1e-3}")
    print(f"RESULT: all at once took at least {longest} units: {conc_time >= longest * UNIT - 1e-3}")
    print(f"RESULT: all at once was quicker: {conc_time < seq_time}")


if __name__ == "__main__":
    asyncio.run(main())
