"""Forgetting to await: what Python and the loop tell you.

1. Calling a coroutine function without awaiting the result does nothing
   but create a coroutine object. When that object is thrown away, Python
   warns "coroutine ... was never awaited", and the coroutine's body never
   ran.
2. A task that is started but never awaited does run; if it is still
   waiting when main() returns, asyncio.run cancels it during shutdown, and
   it can clean up in an `except CancelledError` / `finally`.
3. A task that fails while nobody awaits it: when the task is garbage
   collected the loop reports "Task exception was never retrieved" through
   its exception handler (a custom one here, so it can be printed).
"""

import asyncio
import gc
import warnings

story = []


async def send_email(to):
    story.append(f"email sent to {to}")  # never happens: nobody awaits this


async def background_job():
    story.append("background job started")
    try:
        await asyncio.sleep(3600)
        story.append("background job finished")  # never happens either
    except asyncio.CancelledError:
        story.append("background job cancelled at shutdown")
        raise


async def doomed():
    raise RuntimeError("nobody is listening")


def forgotten_coroutine():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        send_email("the boss")  # missing `await`: only creates a coroutine object
        gc.collect()  # the object is already gone on CPython; this makes sure
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    for message in messages:
        print(f"  RuntimeWarning: {message}")
    return messages


async def main():
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")

    print("1. a coroutine that is never awaited:")
    warned = forgotten_coroutine()

    print("2. a task that is never awaited (see after asyncio.run returns)")
    asyncio.create_task(background_job())

    print("3. a task that fails unobserved:")
    reports = []
    loop.set_exception_handler(lambda loop, context: reports.append(context))
    task = asyncio.create_task(doomed())
    await asyncio.sleep(0.01)  # the task runs and fails; nobody asks for its result
    del task
    gc.collect()
    for context in reports:
        print(f"  exception handler: {context['message']}: {context.get('exception')!r}")
    await asyncio.sleep(0.05)
    story.append("main returned")
    return warned, [(c["message"], repr(c.get("exception"))) for c in reports]


if __name__ == "__main__":
    warned, reports = asyncio.run(main())
    print("what happened, in order:")
    for line in story:
        print(f"  {line}")
    print(f"RESULT: never-awaited coroutine warnings: {warned}")
    print(f"RESULT: story {story}")
    print(f"RESULT: unobserved task failure reported: {reports}")
