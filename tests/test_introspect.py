"""ferroloop's own view into a running loop: the blocking detector and
loop.stats().  These are ferroloop features (asyncio has no equivalent), so
the tests run on ferroloop only; each pins the content of what is reported.
"""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

ferroloop = pytest.importorskip("ferroloop")

THIS_FILE = os.path.abspath(__file__)


def line_of(marker):
    with open(THIS_FILE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return number
    raise AssertionError(marker)


async def cook():
    await asyncio.sleep(0.01)
    time.sleep(0.3)  # BLOCKING-LINE
    return "dish"


async def waiter():
    return await asyncio.create_task(cook(), name="cook-task")


def test_a_blocking_task_is_reported_with_its_name_chain_and_line(caplog):
    reports = []
    with caplog.at_level(logging.WARNING, logger="ferroloop"):
        assert ferroloop.run(waiter(), slow_callback=0.1, on_blocked=reports.append) == "dish"
    finished = [r for r in reports if r.finished]
    assert len(finished) == 1, [r.format() for r in reports]
    report = finished[0]
    assert report.name == "cook-task"
    assert isinstance(report.task, asyncio.Task)
    assert report.task.get_name() == "cook-task"
    assert report.where == f"{THIS_FILE}:{line_of('BLOCKING-LINE')}"
    assert report.stack[-1].line == "time.sleep(0.3)  # BLOCKING-LINE"
    assert report.coroutines[-1] == "cook"
    assert 0.2 <= report.duration < 1.0
    assert report.threshold == 0.1
    # While it was still blocked it was reported too, as not finished.
    assert [r.finished for r in reports] == [False, True]
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "ferroloop"]
    assert len(logged) == 2
    assert "Task 'cook-task' blocked the event loop for" in logged[1]
    assert f"{THIS_FILE}:{line_of('BLOCKING-LINE')}" in logged[1]
    assert "coroutine chain: waiter" not in logged[1]  # waiter awaits; cook runs
    assert "coroutine chain: cook" in logged[1]


def test_a_blocking_plain_callback_is_reported_without_a_task():
    reports = []

    def slow_callback():
        time.sleep(0.25)  # CALLBACK-LINE

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(slow_callback)
        await asyncio.sleep(0.4)

    ferroloop.run(main(), slow_callback=0.1, on_blocked=reports.append)
    finished = [r for r in reports if r.finished]
    assert len(finished) == 1
    assert finished[0].task is None
    assert "slow_callback" in finished[0].name
    assert finished[0].where == f"{THIS_FILE}:{line_of('CALLBACK-LINE')}"


def test_fast_callbacks_are_not_reported():
    reports = []

    async def main():
        for _ in range(2000):
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)  # the loop idles in the poller: not blocked

    ferroloop.run(main(), slow_callback=0.05, on_blocked=reports.append)
    assert reports == []


def test_the_detector_can_be_switched_off_and_validates_its_arguments():
    loop = ferroloop.new_event_loop()
    try:
        reports = []
        loop.watch_blocking(0.05, reports.append)
        loop.watch_blocking(None)

        async def block():
            time.sleep(0.2)

        loop.run_until_complete(block())
        assert reports == []
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError):
                loop.watch_blocking(bad)
        with pytest.raises(TypeError):
            loop.set_blocking_handler(42)
    finally:
        loop.close()


def test_the_environment_variable_turns_it_on_for_python_m_ferroloop(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import asyncio, time

        async def slow():
            time.sleep(0.3)

        async def main():
            await asyncio.create_task(slow(), name="env-task")

        asyncio.run(main())
    """))
    env = dict(os.environ, FERROLOOP_SLOW_CALLBACK="0.1")
    out = subprocess.run([sys.executable, "-m", "ferroloop", str(script)], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Task 'env-task' blocked the event loop for" in out.stderr
    assert f"{script}:5" in out.stderr


def test_stats_count_what_the_loop_did():
    loop = ferroloop.new_event_loop()
    try:
        before = loop.stats()
        assert before["iterations"] == 0 and before["callbacks"] == 0

        async def main():
            for _ in range(10):
                await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            for i in range(5):
                loop.call_later(0.001 * i, lambda: None)
            await asyncio.sleep(0.05)
            listener = socket.create_server(("127.0.0.1", 0))
            with listener:
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, *listener.getsockname()
                )
                loop.call_later(100, lambda: None)
                during = loop.stats()
                transport.close()
            return during

        during = loop.run_until_complete(main())
        after = loop.stats()
    finally:
        loop.close()
    assert during["transports"] == 1
    assert during["fds"] >= 1
    assert during["timers"] >= 1
    assert after["transports"] == 0
    assert after["iterations"] > 10
    assert after["callbacks"] >= 10
    # Most of the time was spent waiting in the poller, not in callbacks.
    assert after["poll_seconds"] >= 0.2
    assert after["poll_seconds"] > after["callback_seconds"]
    # Every timer that fired is in the lateness histogram: the 0.2 s and
    # 0.05 s sleeps and the five call_later callbacks, nearly all on time.
    histogram = dict(after["lag_histogram"])
    assert sum(histogram.values()) >= 7
    assert list(histogram)[-1] is None
    assert histogram[0.001] + histogram[0.002] + histogram[0.005] >= 6


def test_stats_list_the_slowest_blocking_reports():
    async def main():
        await asyncio.create_task(cook(), name="slow-one")
        await asyncio.sleep(0.1)  # let the watchdog see it finish
        return asyncio.get_running_loop().stats()

    stats = ferroloop.run(main(), slow_callback=0.1)
    assert [r.name for r in stats["slowest"]] == ["slow-one"]


PS_SCRIPT = textwrap.dedent("""
    import asyncio, sys, time

    async def worker():
        await asyncio.sleep(100)  # WORKER-LINE

    async def group():
        await asyncio.gather(*(asyncio.create_task(worker(), name=f"worker-{i}")
                               for i in range(2)))

    async def main():
        task = asyncio.create_task(group(), name="group")
        await asyncio.sleep(0.2)
        print("ready", flush=True)
        time.sleep(30)  # the loop is blocked while ps asks
        await task

    asyncio.run(main())
""")


@pytest.fixture
def inspected(tmp_path):
    script = tmp_path / "served.py"
    script.write_text(PS_SCRIPT)
    env = dict(os.environ, FERROLOOP_INSPECT="1")
    proc = subprocess.Popen([sys.executable, "-m", "ferroloop", str(script)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc, script
    finally:
        proc.kill()
        proc.wait()


def ferroloop_cli(*args):
    return subprocess.run([sys.executable, "-m", "ferroloop", *args], capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_ps_lists_tasks_with_their_suspension_points_while_the_loop_is_blocked(inspected):
    proc, script = inspected
    out = ferroloop_cli("ps", str(proc.pid))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "4 tasks" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"worker-0", "worker-1", "group", "Task-1"}
    worker_line = PS_SCRIPT.splitlines().index("    await asyncio.sleep(100)  # WORKER-LINE") + 1
    for name in ("worker-0", "worker-1"):
        assert "waiting" in rows[name]
        assert f"{script}:{worker_line}" in rows[name]
        assert "<Future pending" in rows[name]
    assert "_GatheringFuture pending" in rows["group"]
    assert "running" in rows["Task-1"]  # the blocked step


def test_pstree_shows_which_task_awaits_which(inspected):
    proc, _ = inspected
    out = ferroloop_cli("pstree", str(proc.pid))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    group = next(i for i, line in enumerate(lines) if "group [group]" in line)
    assert lines[group].startswith(("├── ", "└── "))
    children = lines[group + 1 : group + 3]
    assert all("worker-" in line and "[worker]" in line for line in children)
    assert all(line.startswith(("│   ", "    ")) for line in children)


def test_the_channel_is_private_to_the_user(inspected):
    proc, _ = inspected
    from ferroloop import _inspect_server

    path = _inspect_server.socket_path(proc.pid)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    if os.getuid() != 0:
        return
    # Another user cannot even reach the socket. (A forked child, since this
    # interpreter may not be executable by that user; it only connects.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        child = os.fork()
    if child == 0:
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_ps_without_the_channel_says_how_to_open_it():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        try:
            out = ferroloop_cli("ps", str(proc.pid))
        finally:
            proc.kill()
    assert out.returncode == 1
    assert "FERROLOOP_INSPECT=1" in out.stderr
