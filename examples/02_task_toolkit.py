"""The task toolkit: create_task, gather, as_completed, TaskGroup,
wait_for with a timeout, shield and cancel.

Every job below is a coroutine that sleeps for a while and returns a value,
so the interesting part is *when* each one finishes and what the caller
sees: results in argument order (gather), results in finishing order
(as_completed), a timeout that cancels the slow job (wait_for), a job that
survives its caller's timeout (shield), and a job that is cancelled and
cleans up after itself (cancel).
"""

import asyncio
import time

TICK = 0.05  # seconds


async def job(name, ticks, result=None):
    await asyncio.sleep(ticks * TICK)
    return result if result is not None else f"{name}:{ticks}"


async def failing_job(ticks):
    await asyncio.sleep(ticks * TICK)
    raise ValueError("the oven is broken")


async def demo_create_task():
    task = asyncio.create_task(job("toast", 2), name="toast")
    print(f"  create_task: {task.get_name()!r} scheduled, done yet? {task.done()}")
    result = await task
    print(f"  create_task: awaited -> {result!r}, done now? {task.done()}")
    return result


async def demo_gather():
    # Results come back in the order the jobs were passed, whatever order
    # they finish in; return_exceptions turns a failure into a value.
    results = await asyncio.gather(job("a", 3), job("b", 1), job("c", 2))
    print(f"  gather: {results}")
    mixed = await asyncio.gather(job("d", 1), failing_job(1), return_exceptions=True)
    mixed = [repr(r) if isinstance(r, Exception) else r for r in mixed]
    print(f"  gather(return_exceptions=True): {mixed}")
    return results, mixed


async def demo_as_completed():
    finished = []
    for next_done in asyncio.as_completed([job("slow", 4), job("quick", 1), job("medium", 2)]):
        finished.append(await next_done)
    print(f"  as_completed: {finished}")
    return finished


async def demo_task_group():
    if not hasattr(asyncio, "TaskGroup"):  # Python 3.10
        print("  TaskGroup: not available on this Python")
        return "unavailable"
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(job(name, n)) for name, n in [("x", 2), ("y", 1)]]
    results = [t.result() for t in tasks]
    print(f"  TaskGroup: all children done on exit: {results}")
    # One child fails: the group cancels its siblings and raises an ExceptionGroup.
    sibling = None
    try:
        async with asyncio.TaskGroup() as group:
            sibling = group.create_task(job("long", 20))
            group.create_task(failing_job(1))
    except Exception as group_error:  # an ExceptionGroup (`except*` would not parse on 3.10)
        caught = [str(e) for e in group_error.exceptions]
        print(f"  TaskGroup: failure {caught}, sibling cancelled? {sibling.cancelled()}")
    return f"{results}, failure {caught}, sibling cancelled {sibling.cancelled()}"


async def demo_wait_for():
    start = time.monotonic()
    try:
        await asyncio.wait_for(job("too slow", 40), timeout=3 * TICK)
        outcome = "finished"
    except asyncio.TimeoutError:
        outcome = "timed out"
    print(f"  wait_for(timeout={3 * TICK:.2f}s): {outcome} after {time.monotonic() - start:.2f} s")
    return outcome


async def demo_shield():
    inner = asyncio.create_task(job("precious", 4))
    try:
        await asyncio.wait_for(asyncio.shield(inner), timeout=1 * TICK)
        outer = "finished"
    except asyncio.TimeoutError:
        outer = "timed out"
    print(f"  shield: the caller {outer}; the shielded job still running? {not inner.done()}")
    result = await inner
    print(f"  shield: the shielded job finished anyway -> {result!r}")
    return outer, result


async def demo_cancel():
    log = []

    async def worker():
        try:
            log.append("started")
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cleaning up")
            raise
        finally:
            log.append("finally")

    task = asyncio.create_task(worker())
    await asyncio.sleep(TICK)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        log.append("caller saw CancelledError")
    print(f"  cancel: {log}; task.cancelled() = {task.cancelled()}")
    return log, task.cancelled()


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    start = time.monotonic()
    print(f"RESULT: create_task -> {await demo_create_task()!r}")
    print(f"RESULT: gather -> {await demo_gather()}")
    print(f"RESULT: as_completed -> {await demo_as_completed()}")
    print(f"RESULT: TaskGroup -> {await demo_task_group()}")
    print(f"RESULT: wait_for -> {await demo_wait_for()}")
    print(f"RESULT: shield -> {await demo_shield()}")
    print(f"RESULT: cancel -> {await demo_cancel()}")
    print(f"all demos took {time.monotonic() - start:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
