"""The classic asyncio tutorial programs, as behaviour tests.

Each test runs on the stdlib loop and on ferroloop (see conftest.py); the
programs are the ones every asyncio tutorial walks through, rewritten here, and
each asserts what the program is meant to show rather than only that it ran.
"""

import asyncio
import concurrent.futures
import functools
import gc
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

PY_VERSION = sys.version_info[:2]

# Small slack for float arithmetic when comparing a measured duration with the
# time that was slept; a loop must never wake a sleeper early.
EPS = 0.001

# ---------------------------------------------------------------------------
# a. The waiter and the cook
# ---------------------------------------------------------------------------

UNIT = 0.01  # one unit of cooking time, in seconds
ORDERS = [("burger", 8), ("fries", 3), ("pasta", 16)]
SUM_OF_ORDERS = sum(units for _, units in ORDERS) * UNIT  # 0.27 s
LONGEST_ORDER = max(units for _, units in ORDERS) * UNIT  # 0.16 s


async def cook(dish, units, finished):
    await asyncio.sleep(units * UNIT)
    finished.append(dish)
    return f"{dish} is ready"


def test_waiter_awaiting_each_order_in_turn_takes_the_sum_of_cooking_times(run):
    async def waiter():
        finished = []
        start = time.monotonic()
        served = []
        for dish, units in ORDERS:
            served.append(await cook(dish, units, finished))
        return time.monotonic() - start, finished, served

    elapsed, finished, served = run(waiter())
    assert finished == ["burger", "fries", "pasta"]
    assert served == ["burger is ready", "fries is ready", "pasta is ready"]
    assert elapsed >= SUM_OF_ORDERS - EPS


def test_waiter_with_tasks_takes_the_longest_cooking_time_and_dishes_finish_by_duration(run):
    async def waiter():
        finished = []
        start = time.monotonic()
        tasks = [asyncio.create_task(cook(dish, units, finished))
                 for dish, units in ORDERS]
        served = [await task for task in tasks]
        return time.monotonic() - start, finished, served

    elapsed, finished, served = run(waiter())
    # Dishes come out of the kitchen in order of preparation time 3, 8, 16 ...
    assert finished == ["fries", "burger", "pasta"]
    # ... but the waiter collects them in the order they were ordered.
    assert served == ["burger is ready", "fries is ready", "pasta is ready"]
    assert elapsed >= LONGEST_ORDER - EPS
    assert elapsed < SUM_OF_ORDERS


# ---------------------------------------------------------------------------
# b. Tasks, gather, as_completed, TaskGroup, wait_for, shield, cancel
# ---------------------------------------------------------------------------

def test_create_task_schedules_the_coroutine_to_run_when_the_creator_yields(run):
    async def main():
        events = []

        async def child():
            events.append("child ran")
            return "child result"

        task = asyncio.create_task(child())
        events.append("task created")
        assert not task.done()
        await asyncio.sleep(0)
        events.append("creator resumed")
        return events, await task, task

    events, result, task = run(main())
    assert events == ["task created", "child ran", "creator resumed"]
    assert result == "child result"
    assert task.done() and task.result() == "child result"


def test_gather_returns_results_in_argument_order_not_completion_order(run):
    async def after(delay, value, done_order):
        await asyncio.sleep(delay)
        done_order.append(value)
        return value

    async def main():
        done_order = []
        results = await asyncio.gather(
            after(0.03, "slow", done_order),
            after(0.0, "fast", done_order),
            after(0.015, "medium", done_order),
        )
        return results, done_order

    results, done_order = run(main())
    assert results == ["slow", "fast", "medium"]
    assert done_order == ["fast", "medium", "slow"]


def test_gather_with_return_exceptions_puts_exceptions_in_the_result_list(run):
    async def fail(exc):
        await asyncio.sleep(0)
        raise exc

    async def ok(value):
        await asyncio.sleep(0.01)
        return value

    async def main():
        error = ValueError("bad order")
        results = await asyncio.gather(ok(1), fail(error), ok(3),
                                       return_exceptions=True)
        return results, error

    results, error = run(main())
    assert results[0] == 1 and results[2] == 3
    assert results[1] is error


def test_gather_without_return_exceptions_raises_first_error_and_leaves_others_running(run):
    async def main():
        finished = []

        async def fail():
            await asyncio.sleep(0)
            raise KeyError("missing")

        async def slow():
            await asyncio.sleep(0.02)
            finished.append("slow")
            return "slow"

        slow_task = asyncio.create_task(slow())
        with pytest.raises(KeyError):
            await asyncio.gather(fail(), slow_task)
        # gather() does not cancel the other awaitables when one fails.
        assert not slow_task.cancelled()
        assert await slow_task == "slow"
        return finished

    assert run(main()) == ["slow"]


def test_as_completed_yields_results_in_completion_order(run):
    async def after(delay, value):
        await asyncio.sleep(delay)
        return value

    async def main():
        aws = [after(0.04, "c"), after(0.0, "a"), after(0.02, "b")]
        return [await fut for fut in asyncio.as_completed(aws)]

    assert run(main()) == ["a", "b", "c"]


@pytest.mark.skipif(PY_VERSION < (3, 11), reason="asyncio.TaskGroup is 3.11+")
def test_taskgroup_error_cancels_siblings_and_raises_exception_group(run):
    import builtins
    exception_group = builtins.ExceptionGroup  # a NameError to spell on 3.10

    async def main():
        seen = []

        async def sibling(name):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append(f"{name} cancelled")
                raise

        async def failing():
            await asyncio.sleep(0.01)
            raise ValueError("kitchen fire")

        start = time.monotonic()
        with pytest.raises(exception_group) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sibling("a"))
                tg.create_task(sibling("b"))
                tg.create_task(failing())
        return sorted(seen), info.value, time.monotonic() - start

    seen, group, elapsed = run(main())
    assert seen == ["a cancelled", "b cancelled"]
    assert len(group.exceptions) == 1
    assert isinstance(group.exceptions[0], ValueError)
    assert str(group.exceptions[0]) == "kitchen fire"
    assert elapsed < 5


def test_wait_for_timeout_cancels_the_inner_task(run):
    async def main():
        seen = []

        async def slow():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("inner cancelled")
                raise
            seen.append("inner finished")  # pragma: no cover - must not happen

        inner = asyncio.create_task(slow())
        start = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(inner, timeout=0.02)
        return seen, inner, time.monotonic() - start

    seen, inner, elapsed = run(main())
    assert seen == ["inner cancelled"]
    assert inner.cancelled()
    assert 0.02 - EPS <= elapsed < 5


def test_wait_for_returns_the_result_when_it_arrives_in_time(run):
    async def quick():
        await asyncio.sleep(0.005)
        return "in time"

    async def main():
        return await asyncio.wait_for(quick(), timeout=5)

    assert run(main()) == "in time"


def test_shield_keeps_the_inner_task_running_when_the_outer_is_cancelled(run):
    async def main():
        events = []

        async def important():
            await asyncio.sleep(0.03)
            events.append("important work done")
            return "saved"

        inner = asyncio.create_task(important())

        async def caller():
            return await asyncio.shield(inner)

        outer = asyncio.create_task(caller())
        await asyncio.sleep(0.005)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        events.append("outer cancelled")
        assert not inner.cancelled()
        result = await inner
        return events, result, outer

    events, result, outer = run(main())
    assert events == ["outer cancelled", "important work done"]
    assert result == "saved"
    assert outer.cancelled()


def test_task_cancel_raises_cancelled_error_at_the_await_point_in_the_coroutine(run):
    async def main():
        seen = []

        async def worker():
            seen.append("started")
            try:
                await asyncio.sleep(10)
                seen.append("after sleep")  # pragma: no cover - must not happen
            except asyncio.CancelledError as exc:
                seen.append(("cancelled with", exc.args))
                raise
            finally:
                seen.append("cleanup")

        task = asyncio.create_task(worker())
        await asyncio.sleep(0.005)
        assert task.cancel(msg="closing time") is True
        with pytest.raises(asyncio.CancelledError):
            await task
        # cancel() on a finished task is a no-op that returns False.
        assert task.cancel() is False
        return seen, task

    seen, task = run(main())
    assert seen == ["started", ("cancelled with", ("closing time",)), "cleanup"]
    assert task.cancelled()


# ---------------------------------------------------------------------------
# c. Futures and a timing decorator
# ---------------------------------------------------------------------------

def test_future_is_resolved_later_by_another_task(run):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        callback_calls = []

        async def resolver():
            await asyncio.sleep(0.02)
            fut.set_result("the answer")
            # Done callbacks are scheduled with call_soon, never called
            # synchronously from set_result().
            assert callback_calls == []

        fut.add_done_callback(lambda f: callback_calls.append(f.result()))
        start = time.monotonic()
        task = asyncio.create_task(resolver())
        value = await fut
        elapsed = time.monotonic() - start
        await task
        return value, elapsed, callback_calls

    value, elapsed, callback_calls = run(main())
    assert value == "the answer"
    assert elapsed >= 0.02 - EPS
    assert callback_calls == ["the answer"]


def test_future_set_exception_is_raised_to_the_awaiter(run):
    async def main():
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(
            0.005, fut.set_exception, LookupError("no such dish"))
        with pytest.raises(LookupError, match="no such dish"):
            await fut
        return fut

    fut = run(main())
    assert isinstance(fut.exception(), LookupError)


def async_timed(durations):
    """Record how long each call of the decorated coroutine function takes."""
    def decorator(func):
        @functools.wraps(func)
        async def wrapper(*args, **kwargs):
            start = time.monotonic()
            try:
                return await func(*args, **kwargs)
            finally:
                durations.append((func.__name__, args, time.monotonic() - start))
        return wrapper
    return decorator


def test_async_timed_decorator_measures_each_coroutine(run):
    durations = []

    @async_timed(durations)
    async def delay(seconds):
        await asyncio.sleep(seconds)
        return seconds

    @async_timed(durations)
    async def main():
        return await asyncio.gather(delay(0.1), delay(0.2))

    assert run(main()) == [0.1, 0.2]
    by_call = {(name, args): elapsed for name, args, elapsed in durations}
    assert set(by_call) == {("delay", (0.1,)), ("delay", (0.2,)), ("main", ())}
    assert by_call[("delay", (0.1,))] >= 0.1 - EPS
    assert by_call[("delay", (0.2,))] >= 0.2 - EPS
    # The two delays ran concurrently: main took about the longer one.
    assert 0.2 - EPS <= by_call[("main", ())] < 0.3
    # The shorter delay finished first.
    assert [args for _, args, _ in durations] == [(0.1,), (0.2,), ()]


# ---------------------------------------------------------------------------
# d. Blocking calls stall the loop; debug mode reports them
# ---------------------------------------------------------------------------

async def _ticker(ticks, interval):
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(interval)


def test_blocking_sleep_inside_a_coroutine_stalls_every_other_task(run):
    async def main():
        ticks = []
        ticker = asyncio.create_task(_ticker(ticks, 0.005))
        await asyncio.sleep(0.03)
        block_start = time.monotonic()
        time.sleep(0.2)  # the mistake the tutorial warns about
        block_end = time.monotonic()
        await asyncio.sleep(0.03)
        ticker.cancel()
        return ticks, block_start, block_end

    ticks, block_start, block_end = run(main())
    before = [t for t in ticks if t < block_start]
    during = [t for t in ticks if block_start <= t <= block_end]
    after = [t for t in ticks if t > block_end]
    assert during == []
    assert len(before) >= 2
    assert len(after) >= 1


def test_debug_mode_logs_the_slow_task_step_by_name(run, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")

    async def slowpoke():
        time.sleep(0.15)

    async def main():
        loop = asyncio.get_running_loop()
        assert loop.get_debug() is True
        loop.slow_callback_duration = 0.05
        await asyncio.create_task(slowpoke(), name="slowpoke-task")

    run(main(), debug=True)
    slow = [r for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING
            and r.getMessage().startswith("Executing <Task")]
    assert len(slow) == 1, [r.getMessage() for r in caplog.records]
    message = slow[0].getMessage()
    assert "name='slowpoke-task'" in message
    assert "slowpoke()" in message
    took = float(message.rsplit("took ", 1)[1].split(" seconds")[0])
    assert took >= 0.15 - EPS


def test_debug_mode_logs_a_slow_plain_callback_with_its_handle(run, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")

    def blocking_callback():
        time.sleep(0.1)

    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.05
        loop.call_soon(blocking_callback)
        await asyncio.sleep(0.01)

    run(main(), debug=True)
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING]
    slow = [m for m in messages if m.startswith("Executing <Handle")]
    assert len(slow) == 1, messages
    assert "blocking_callback()" in slow[0]
    assert " took " in slow[0] and slow[0].endswith(" seconds")


def test_no_slow_callback_warning_without_debug_mode(run, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.01
        time.sleep(0.05)

    run(main(), debug=False)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


# ---------------------------------------------------------------------------
# e. Executors: CPU-bound work in processes, blocking calls in threads
# ---------------------------------------------------------------------------

def sum_of_squares(n):
    """CPU-bound work (module level so that a worker process can import it)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def timed_sum_of_squares(n):
    """``sum_of_squares`` plus when the worker started and ended it, on the
    system-wide monotonic clock (the same clock in every process)."""
    start = time.monotonic()
    total = sum_of_squares(n)
    return total, start, time.monotonic()


def closed_form_sum_of_squares(n):
    return (n - 1) * n * (2 * n - 1) // 6


def blocking_io(seconds, value):
    time.sleep(seconds)
    return value


async def _run_while_ticking(make_work, interval=0.005):
    """Start a ticker task, then ``await make_work()``; return the result,
    the ticks that happened while the work ran, and the work's duration."""
    ticks = []
    ticker = asyncio.create_task(_ticker(ticks, interval))
    await asyncio.sleep(0)
    start = time.monotonic()
    result = await make_work()
    end = time.monotonic()
    ticker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ticker
    return result, [t for t in ticks if start <= t <= end], end - start


def test_cpu_bound_work_in_process_pool_keeps_the_loop_responsive(run):
    sizes = [2_000_000, 1_500_000]

    async def main():
        loop = asyncio.get_running_loop()
        # spawn: forking a process that may have threads is unsafe.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            return await _run_while_ticking(lambda: asyncio.gather(
                *(loop.run_in_executor(pool, timed_sum_of_squares, n) for n in sizes)))

    results, ticks_during, elapsed = run(main())
    assert [total for total, _, _ in results] == [
        closed_form_sum_of_squares(n) for n in sizes]
    # The window is the time the workers spent computing, as they measured it
    # themselves: starting two interpreters on a busy 2-core machine takes an
    # unpredictable share of ``elapsed``, computing does not depend on the loop.
    # A loop that ran the work itself, or stalled until it came back, would
    # tick zero times in that window; one that keeps running ticks every 5 ms,
    # so even a quarter of that rate is a clear pass.
    start = min(s for _, s, _ in results)
    end = max(e for _, _, e in results)
    window = end - start
    assert window > 0.05, window  # long enough to count ticks in
    in_window = [t for t in ticks_during if start <= t <= end]
    assert len(in_window) >= max(3, window / 0.005 / 4), (len(in_window), window, elapsed)


def test_blocking_call_in_thread_pool_keeps_the_loop_responsive(run):
    async def main():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return await _run_while_ticking(lambda: asyncio.gather(
                loop.run_in_executor(pool, blocking_io, 0.2, "first"),
                loop.run_in_executor(pool, blocking_io, 0.2, "second")))

    results, ticks_during, elapsed = run(main())
    assert results == ["first", "second"]
    assert elapsed >= 0.2 - EPS
    assert elapsed < 0.4  # both ran at the same time in two threads
    assert len(ticks_during) >= 10, (len(ticks_during), elapsed)


def test_blocking_call_in_default_executor_keeps_the_loop_responsive(run):
    async def main():
        loop = asyncio.get_running_loop()
        return await _run_while_ticking(
            lambda: loop.run_in_executor(None, blocking_io, 0.2, "from default"))

    result, ticks_during, elapsed = run(main())
    assert result == "from default"
    assert elapsed >= 0.2 - EPS
    assert len(ticks_during) >= 10, (len(ticks_during), elapsed)


def test_to_thread_runs_in_another_thread_with_the_callers_context(run):
    import contextvars
    import threading

    request_id = contextvars.ContextVar("request_id")

    def where():
        return threading.get_ident(), request_id.get("unset")

    async def main():
        request_id.set("r-42")
        return threading.get_ident(), await asyncio.to_thread(where)

    loop_thread, (worker_thread, seen_id) = run(main())
    assert worker_thread != loop_thread
    assert seen_id == "r-42"


# ---------------------------------------------------------------------------
# f. Managing a loop by hand
# ---------------------------------------------------------------------------

def test_manual_loop_management_run_until_complete_call_soon_and_close(loop_factory):
    seen = []

    async def main(loop):
        seen.append(("running loop is ours", asyncio.get_running_loop() is loop))
        await asyncio.sleep(0)
        return 42

    loop = loop_factory()
    try:
        assert not loop.is_running() and not loop.is_closed()
        loop.call_soon(seen.append, "call_soon callback")
        assert loop.run_until_complete(main(loop)) == 42
        assert not loop.is_running()
    finally:
        loop.close()
        asyncio.set_event_loop(None)

    assert seen == ["call_soon callback", ("running loop is ours", True)]
    assert loop.is_closed()
    loop.close()  # closing twice is allowed
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.call_soon(seen.append, "too late")
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.call_later(0.01, seen.append, "too late")
    coro = main(loop)
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            loop.run_until_complete(coro)
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            loop.create_task(coro)
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            loop.run_forever()
    finally:
        coro.close()
    assert seen == ["call_soon callback", ("running loop is ours", True)]


def test_get_running_loop_outside_a_loop_raises_runtime_error(loop):
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()

    def inside():
        return asyncio.get_running_loop()

    async def main():
        return inside()

    assert loop.run_until_complete(main()) is loop
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


# ---------------------------------------------------------------------------
# g. Forgotten awaits and forgotten tasks
# ---------------------------------------------------------------------------

def test_coroutine_that_is_never_awaited_warns_runtime_warning(run):
    async def forgotten_coroutine():
        return "never"  # pragma: no cover

    async def main():
        forgotten_coroutine()  # the classic mistake: no await
        await asyncio.sleep(0)
        return "done"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(main()) == "done"
        gc.collect()
    messages = [str(w.message) for w in caught
                if issubclass(w.category, RuntimeWarning)]
    assert any("forgotten_coroutine' was never awaited" in m for m in messages), \
        messages


def test_task_never_awaited_is_cancelled_at_shutdown_like_asyncio_run(run):
    events = []
    tasks = []

    async def background():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("received CancelledError")
            raise
        finally:
            # Shutdown waits for the cancelled task's cleanup, awaits included.
            await asyncio.sleep(0.005)
            events.append("cleanup finished")

    async def main():
        tasks.append(asyncio.create_task(background()))
        await asyncio.sleep(0.01)
        return "main done"

    start = time.monotonic()
    assert run(main()) == "main done"
    assert time.monotonic() - start < 5
    assert events == ["received CancelledError", "cleanup finished"]
    assert tasks[0].cancelled()


def test_run_finalizes_async_generators_left_open(run):
    events = []
    holders = []

    async def numbers():
        try:
            for i in range(10):
                yield i
        finally:
            events.append("generator closed")

    async def main():
        agen = numbers()
        holders.append(agen)  # keep it alive: only shutdown can close it
        assert await agen.__anext__() == 0
        return "main done"

    assert run(main()) == "main done"
    assert events == ["generator closed"]


# ---------------------------------------------------------------------------
# h. Echo server with the low-level sock_* API
# ---------------------------------------------------------------------------

def _payloads():
    return [
        b"hello",
        b"x" * 1,
        bytes(range(256)) * 64,                       # 16 KiB
        os.urandom(1024 * 1024),                      # 1 MiB
        b"".join(i.to_bytes(4, "big") for i in range(256 * 1024)),  # 1 MiB
        b"line\n" * 1000,
    ]


async def _echo_handler(loop, conn, served):
    with conn:
        total = 0
        while True:
            data = await loop.sock_recv(conn, 65536)
            if not data:
                break
            total += len(data)
            await loop.sock_sendall(conn, data)
    served.append(total)


async def _echo_server(loop, listener, clients, served):
    handlers = []
    for _ in range(clients):
        conn, _addr = await loop.sock_accept(listener)
        assert conn.gettimeout() == 0  # accepted sockets are non-blocking
        handlers.append(asyncio.create_task(_echo_handler(loop, conn, served)))
    await asyncio.gather(*handlers)


async def _echo_client(loop, address, payload):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    with sock:
        await loop.sock_connect(sock, address)

        async def send():
            await loop.sock_sendall(sock, payload)
            sock.shutdown(socket.SHUT_WR)

        async def receive():
            chunks = []
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)

        _, echoed = await asyncio.gather(send(), receive())
        return echoed


def test_echo_server_with_sock_api_serves_concurrent_clients_exactly(run):
    payloads = _payloads()

    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(len(payloads))
            listener.setblocking(False)
            address = listener.getsockname()
            served = []
            server = asyncio.create_task(
                _echo_server(loop, listener, len(payloads), served))
            echoed = await asyncio.wait_for(
                asyncio.gather(*(_echo_client(loop, address, p)
                                 for p in payloads)),
                timeout=30)
            await asyncio.wait_for(server, timeout=30)
            return echoed, served

    echoed, served = run(main())
    assert len(echoed) == len(payloads)
    for sent, got in zip(payloads, echoed):
        assert len(got) == len(sent)
        assert got == sent
    assert sorted(served) == sorted(len(p) for p in payloads)


# ---------------------------------------------------------------------------
# `python -m ferroloop script.py ...` runs an unmodified asyncio script
# ---------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""\
    import asyncio
    import json
    import sys

    import sibling_helper  # a module next to the script

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return [[c.__module__, c.__qualname__] for c in type(loop).__mro__]

    info = {"run_mro": asyncio.run(main())}
    loop = asyncio.new_event_loop()
    try:
        info["new_event_loop_mro"] = [[c.__module__, c.__qualname__]
                                      for c in type(loop).__mro__]
        info["run_until_complete"] = loop.run_until_complete(
            sibling_helper.answer())
    finally:
        loop.close()
    info["argv"] = sys.argv
    info["name"] = __name__
    print(json.dumps(info))
    sys.exit(7)
""")

SIBLING = textwrap.dedent("""\
    async def answer():
        return 42
""")


def _run_script(loop_factory, tmp_path, args):
    script_dir = tmp_path / "scripts"
    script_dir.mkdir()
    script = script_dir / "tutorial_script.py"
    script.write_text(SCRIPT)
    (script_dir / "sibling_helper.py").write_text(SIBLING)
    if loop_factory.name == "ferroloop":
        cmd = [sys.executable, "-m", "ferroloop", str(script), *args]
    else:
        cmd = [sys.executable, str(script), *args]
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=30)
    return script, proc


def test_script_runs_unmodified_with_the_loop_under_test_and_gets_its_argv(loop_factory, tmp_path):
    script, proc = _run_script(loop_factory, tmp_path, ["arg1", "--flag", "x y"])
    assert proc.stdout, proc.stderr
    info = json.loads(proc.stdout.splitlines()[-1])
    expected = [loop_factory.loop_class.__module__,
                loop_factory.loop_class.__qualname__]
    assert expected in info["run_mro"], info
    assert expected in info["new_event_loop_mro"], info
    if loop_factory.name == "ferroloop":
        assert info["run_mro"][0][0].split(".")[0] == "ferroloop", info
    else:
        assert info["run_mro"][0] == ["asyncio.unix_events",
                                      "_UnixSelectorEventLoop"]
    assert info["argv"][1:] == ["arg1", "--flag", "x y"]
    assert os.path.basename(info["argv"][0]) == script.name


def test_script_runs_as_main_imports_its_siblings_and_keeps_its_exit_code(loop_factory, tmp_path):
    _script, proc = _run_script(loop_factory, tmp_path, [])
    assert proc.returncode == 7, proc.stderr
    info = json.loads(proc.stdout.splitlines()[-1])
    assert info["name"] == "__main__"
    assert info["run_until_complete"] == 42
