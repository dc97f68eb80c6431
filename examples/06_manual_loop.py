"""Driving an event loop by hand, without asyncio.run.

This is what asyncio.run does for you: create a loop, make it the current
one, run something on it, clean up and close it, even when something fails.
Along the way: callbacks queued with call_soon run in the order they were
queued, before the coroutine's first step; call_later fires after a delay;
call_soon_threadsafe lets another thread hand work to the loop; and
run_forever runs until a callback calls loop.stop().
"""

import asyncio
import threading
import time

events = []


def note(what):
    events.append(what)
    print(f"  {what}")


async def brew(kind):
    note(f"coroutine: start brewing {kind}")
    await asyncio.sleep(0.1)
    note(f"coroutine: {kind} ready")
    return f"a cup of {kind}"


def from_another_thread(loop):
    time.sleep(0.05)
    loop.call_soon_threadsafe(note, "call_soon_threadsafe: hello from a thread")
    loop.call_soon_threadsafe(loop.stop)


def main():
    loop = asyncio.new_event_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")
    asyncio.set_event_loop(loop)
    try:
        print("run_until_complete:")
        loop.call_soon(note, "call_soon: first")
        loop.call_soon(note, "call_soon: second")
        loop.call_later(0.05, note, "call_later(0.05): fired while brewing")
        cup = loop.run_until_complete(brew("tea"))
        note(f"run_until_complete returned {cup!r}")

        print("run_forever, until a thread stops the loop:")
        thread = threading.Thread(target=from_another_thread, args=(loop,))
        thread.start()
        loop.run_forever()
        thread.join()
        note(f"run_forever returned; running now? {loop.is_running()}")
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
    print(f"loop closed: {loop.is_closed()}")
    try:
        loop.call_soon(note, "too late")
        after_close = "accepted a callback"
    except RuntimeError as error:
        after_close = f"RuntimeError: {error}"
    print(f"call_soon after close -> {after_close}")

    print(f"RESULT: events in order {events}")
    print(f"RESULT: closed={loop.is_closed()}, call_soon after close -> {after_close}")


if __name__ == "__main__":
    main()
