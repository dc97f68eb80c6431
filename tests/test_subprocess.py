"""Subprocesses (asyncio.create_subprocess_exec/_shell, loop.subprocess_exec/
_shell), pinned against the stdlib loop.

Every test runs on both loops (conftest.py) with the same assertions, and
the key expectation is written out as well, so a test can fail even if both
loops got it wrong.  Where asyncio changed between versions (3.10's wait()
returns when the process exits; 3.11+ wait for its pipes to close too) the
expectation is written per version.

Each test starts from a fresh event loop policy: the stdlib loop creates
and stores a child watcher in the policy the first time it starts a
process, and ferroloop uses a watcher found there (it must: the program may
have installed it), so without this ferroloop's own child watching (a
pidfd) would only be exercised by whichever test ran first.

Covered: pipes on all three streams, communicate() with 10 MB, wait,
returncode, signals, every Popen option that matters to the loop (STDOUT,
DEVNULL, pass_fds, cwd, env, executable, start_new_session,
process_group, umask, restore_signals, preexec_fn, user/group), argument
checks; 200 concurrent processes; 100 MB through stdout with bounded
memory; killing a process group; a forking program; output written just
before exit; stopped children; zombies; descriptors leaking into
children; signal handlers (SIGUSR1, the program's own SIGCHLD) with
children coming and going; cancellation (of communicate, wait, process
creation); a child on a PTY; debug logging; no pidfds (missing or refused);
every stdlib child watcher installed by the program, and the loop turn on
which an installed watcher's report arrives.
"""

import asyncio
import errno
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

PY_VERSION = sys.version_info[:2]
PY = sys.executable
PIPE = asyncio.subprocess.PIPE
STDOUT = asyncio.subprocess.STDOUT
DEVNULL = asyncio.subprocess.DEVNULL
TIMEOUT = 30
MiB = 1 << 20
SETTLE = 0.15


@pytest.fixture(autouse=True)
def fresh_policy():
    asyncio.set_event_loop_policy(None)
    yield
    asyncio.set_event_loop_policy(None)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def code(src):
    return textwrap.dedent(src).strip()


async def python(src, *args, **kwargs):
    return await asyncio.create_subprocess_exec(PY, "-c", code(src), *args, **kwargs)


async def wait_until(predicate, timeout=TIMEOUT, what="a condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def proc_stat(pid):
    """The fields of /proc/<pid>/stat after the command name (state first),
    or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()


def proc_state(pid):
    """The state letter of process ``pid``, or None if there is none."""
    fields = proc_stat(pid)
    return None if fields is None else fields[0]


def proc_start(pid):
    """When process ``pid`` started (tells a reused pid apart)."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[19])


def assert_reaped(pid):
    """``pid`` was our child and it is gone: no zombie, nothing to wait for.
    (The pid may already belong to some other process on a busy machine:
    then it is not ours.)"""
    fields = proc_stat(pid)
    if fields is not None:
        assert int(fields[1]) != os.getpid(), f"our child {pid} is still there ({fields[0]})"
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def capture_errors():
    contexts = []
    asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


def open_fds():
    """{fd: link target} of this process."""
    result = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            result[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            pass  # the listing's own directory descriptor
    return result


# A child that reports its open descriptors (not the one listdir used).
LIST_FDS = """
    import json, os
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink("/proc/self/fd/" + name)
        except FileNotFoundError:
            pass
    print(json.dumps(fds))
"""


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def pipe_data_received(self, fd, data):
        if not self.events or self.events[-1] != ("data", fd):
            self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


# ---------------------------------------------------------------------------
# the basics
# ---------------------------------------------------------------------------


def test_three_pipes_and_communicate(run):
    async def main():
        errors = capture_errors()
        proc = await python(
            """
            import sys
            data = sys.stdin.buffer.read()
            sys.stdout.buffer.write(data.upper())
            sys.stderr.buffer.write(b"err:" + data)
            sys.exit(7)
            """,
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        assert proc.returncode is None
        assert isinstance(proc.pid, int) and proc.pid > 0
        out, err = await asyncio.wait_for(proc.communicate(b"hello"), TIMEOUT)
        assert (out, err) == (b"HELLO", b"err:hello")
        assert proc.returncode == 7
        assert await proc.wait() == 7  # again: the same answer at once
        assert_reaped(proc.pid)
        assert errors == []

    run(main())


def test_communicate_with_10_mb_each_way(run):
    data = random.Random(1).randbytes(10 * MiB)

    async def main():
        proc = await python(
            """
            import hashlib, sys
            data = sys.stdin.buffer.read()
            sys.stderr.write(hashlib.sha256(data).hexdigest())
            sys.stdout.buffer.write(data[::-1])
            """,
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(data), TIMEOUT)
        assert err.decode() == hashlib.sha256(data).hexdigest()
        assert out == data[::-1]
        assert proc.returncode == 0

    run(main())


def test_stream_api_line_by_line(run):
    async def main():
        proc = await python(
            """
            import sys
            for line in sys.stdin:
                print(line.strip()[::-1], flush=True)
            """,
            stdin=PIPE, stdout=PIPE,
        )  # fmt: skip
        for word in (b"abc", b"hello", b"xyz"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            assert await asyncio.wait_for(proc.stdout.readline(), TIMEOUT) == word[::-1] + b"\n"
        proc.stdin.close()
        await proc.stdin.wait_closed()
        assert await proc.stdout.read() == b""
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0

    run(main())


def test_communicate_survives_a_child_that_stops_reading(run):
    # communicate() ignores BrokenPipeError/ConnectionResetError on stdin.
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "head", "-c", "10", stdin=PIPE, stdout=PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(b"z" * (10 * MiB)), TIMEOUT)
        assert (out, err) == (b"z" * 10, None)
        assert proc.returncode == 0
        # The stdin pipe itself ended with the error (data was still queued
        # when the reader left).
        with pytest.raises(BrokenPipeError):
            await proc.stdin.wait_closed()

    run(main())


def test_writing_to_the_stdin_of_a_child_that_has_exited(run):
    # The stdin transport sees the reader hang up with nothing queued and
    # ends quietly; later writes are dropped and drain() reports the loss.
    async def main():
        proc = await asyncio.create_subprocess_exec("true", stdin=PIPE)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        # Ended cleanly.  (Awaited first: wait() may return before the pipes
        # are reported closed if the exit was seen before wait() was called.)
        await asyncio.wait_for(proc.stdin.wait_closed(), TIMEOUT)
        assert proc.stdin.transport.is_closing()
        proc.stdin.write(b"x" * MiB)
        assert proc.stdin.transport.get_write_buffer_size() == 0
        for _ in range(2):
            with pytest.raises(ConnectionResetError, match="Connection lost"):
                await proc.stdin.drain()

    run(main())


def test_shell(run):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            'echo "$GREETING, $0"; echo to-err >&2; exit 3',
            stdout=PIPE, stderr=PIPE, env={"GREETING": "hi", "PATH": os.defpath},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out == b"hi, /bin/sh\n"
        assert err == b"to-err\n"
        assert proc.returncode == 3

    run(main())


def test_wait_and_returncode(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.2")
        assert proc.returncode is None
        waiters = [asyncio.ensure_future(proc.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        assert await asyncio.wait_for(asyncio.gather(*waiters), TIMEOUT) == [0, 0, 0]
        assert proc.returncode == 0
        assert repr(proc) == f"<Process {proc.pid}>"
        assert_reaped(proc.pid)

    run(main())


@pytest.mark.parametrize(
    "how, expected",
    [
        ("send_signal", -signal.SIGUSR1),
        ("terminate", -signal.SIGTERM),
        ("kill", -signal.SIGKILL),
    ],
)
def test_signals(run, how, expected):
    async def main():
        proc = await python(
            """
            import sys, time
            print("ready", flush=True)
            time.sleep(60)
            """,
            stdout=PIPE,
        )  # fmt: skip
        assert await asyncio.wait_for(proc.stdout.readline(), TIMEOUT) == b"ready\n"
        if how == "send_signal":
            proc.send_signal(signal.SIGUSR1)
        else:
            getattr(proc, how)()
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == expected
        assert proc.returncode == expected
        assert_reaped(proc.pid)

    run(main())


def test_a_stopped_and_continued_child_is_not_taken_for_dead(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        proc.send_signal(signal.SIGSTOP)
        await wait_until(lambda: proc_state(proc.pid) == "T", what="the child to stop")
        await asyncio.sleep(SETTLE)
        assert proc.returncode is None
        proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: proc_state(proc.pid) != "T", what="the child to continue")
        await asyncio.sleep(SETTLE)
        assert proc.returncode is None
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGTERM
        assert_reaped(proc.pid)

    run(main())


def test_signalling_a_finished_process_raises_process_lookup_error(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(Recorder, "true")
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        for call in (
            lambda: transport.send_signal(signal.SIGTERM),
            transport.terminate,
            transport.kill,
        ):
            with pytest.raises(ProcessLookupError):
                call()
        transport.close()

    run(main())


def test_exit_codes_and_death_by_own_signal(run):
    async def main():
        cases = {
            "import sys; sys.exit(0)": 0,
            "import sys; sys.exit(255)": 255,
            "import os; os._exit(1)": 1,
            "import os, signal; os.kill(os.getpid(), signal.SIGABRT)": -signal.SIGABRT,
        }
        procs = [await python(src) for src in cases]
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), TIMEOUT)
        assert codes == list(cases.values())

    run(main())


def test_missing_program_raises_and_leaves_nothing_behind(run):
    async def main():
        before = set(open_fds())
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(
                "/nonexistent/program", stdin=PIPE, stdout=PIPE, stderr=PIPE
            )
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec("/etc/passwd", stdout=PIPE)
        await asyncio.sleep(0)
        assert set(open_fds()) == before

    run(main())


@pytest.mark.parametrize(
    "api, kwargs, message",
    [
        ("exec", dict(text=True), "text must be False"),
        ("exec", dict(bufsize=1), "bufsize must be 0"),
        ("exec", dict(encoding="utf-8"), "encoding must be None"),
        ("exec", dict(errors="strict"), "errors must be None"),
        ("exec", dict(universal_newlines=True), "universal_newlines must be False"),
        ("exec", dict(shell=True), "shell must be False"),
        ("shell", dict(shell=False), "shell must be True"),
        ("shell", dict(cmd=["echo", "x"]), "cmd must be a string"),
    ],
)
def test_argument_checks(run, api, kwargs, message):
    async def main():
        loop = asyncio.get_running_loop()
        made = []
        options = dict(kwargs)
        if api == "exec":
            coro = loop.subprocess_exec(lambda: made.append(1), "true", **options)
        else:
            cmd = options.pop("cmd", "true")
            coro = loop.subprocess_shell(lambda: made.append(1), cmd, **options)
        with pytest.raises(ValueError) as info:
            await coro
        assert str(info.value) == message
        assert made == []  # refused before the protocol is made

    run(main())


# ---------------------------------------------------------------------------
# Popen options
# ---------------------------------------------------------------------------


def test_stderr_to_stdout(run):
    async def main():
        proc = await python(
            """
            import sys
            sys.stdout.write("out1 "); sys.stdout.flush()
            sys.stderr.write("err "); sys.stderr.flush()
            sys.stdout.write("out2")
            """,
            stdout=PIPE, stderr=STDOUT,
        )  # fmt: skip
        assert proc.stderr is None
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert (out, err) == (b"out1 err out2", None)

    run(main())


def test_devnull(run):
    async def main():
        proc = await python(
            """
            import sys
            print(repr(sys.stdin.read()), flush=True)
            print("discarded", file=sys.stderr)
            """,
            stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL,
        )  # fmt: skip
        assert proc.stdin is None and proc.stderr is None
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert (out, err) == (b"''\n", None)
        proc = await asyncio.create_subprocess_exec("echo", "x", stdout=DEVNULL)
        assert proc.stdout is None
        assert await asyncio.wait_for(proc.communicate(), TIMEOUT) == (None, None)

    run(main())


def test_pass_fds(run):
    async def main():
        r, w = os.pipe()
        try:
            proc = await python(
                f"import os; os.write({w}, b'through the passed fd')",
                pass_fds=(w,),
            )  # fmt: skip
            os.close(w)
            w = None
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
            assert os.read(r, 100) == b"through the passed fd"
        finally:
            os.close(r)
            if w is not None:
                os.close(w)

    run(main())


def test_cwd_env_and_executable(run, tmp_path):
    async def main():
        proc = await python(
            "import os; print(os.getcwd(), os.environ.get('ONLY'), 'PATH' in os.environ)",
            stdout=PIPE, cwd=tmp_path, env={"ONLY": "this"},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out.split() == [str(tmp_path).encode(), b"this", b"False"]

        # executable= runs another program with argv[0] as given.
        proc = await asyncio.create_subprocess_exec(
            "not-a-shell", "-c", 'echo "$0"', executable="/bin/sh", stdout=PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out == b"not-a-shell\n"

    run(main())


def test_start_new_session(run):
    async def main():
        proc = await python(
            "import os; print(os.getsid(0), os.getpgid(0), os.getpid())",
            stdout=PIPE, start_new_session=True,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        sid, pgid, pid = map(int, out.split())
        assert sid == pgid == pid == proc.pid
        assert sid != os.getsid(0)

    run(main())


def test_process_group(run):
    async def main():
        if PY_VERSION < (3, 11):
            # Popen has no process_group before 3.11: the TypeError passes
            # through and no process is left behind.
            with pytest.raises(TypeError, match="process_group"):
                await asyncio.create_subprocess_exec("true", process_group=0)
            return
        proc = await python(
            "import os; print(os.getsid(0), os.getpgid(0), os.getpid())",
            stdout=PIPE, process_group=0,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        sid, pgid, pid = map(int, out.split())
        assert pgid == pid == proc.pid
        assert pgid != os.getpgid(0)
        assert sid == os.getsid(0)  # a new group, not a new session

    run(main())


def test_umask(run):
    async def main():
        proc = await python(
            "import os; print(oct(os.umask(0)))", stdout=PIPE, umask=0o037
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out == b"0o37\n"

    run(main())


@pytest.mark.parametrize("restore", [True, False])
def test_restore_signals(run, restore):
    # Python ignores SIGPIPE and SIGXFSZ; restore_signals (the default)
    # gives the child their default dispositions back.  grep reads its own
    # ignored-signal mask, as exec left it.
    async def main():
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        proc = await asyncio.create_subprocess_exec(
            "grep", "SigIgn", "/proc/self/status", stdout=PIPE, restore_signals=restore
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        mask = int(out.split()[1], 16)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            assert bool(mask & (1 << (sig - 1))) is (not restore)

    run(main())


def test_preexec_fn(run):
    # A preexec_fn that only makes a system call; no warning is expected
    # from the loop's side (warnings are recorded and must be none).
    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            proc = await python(
                "import os; print(os.nice(0))",
                stdout=PIPE, preexec_fn=lambda: os.nice(3),
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert int(out) == os.nice(0) + 3
        assert [str(w.message) for w in caught] == []

    run(main())


def test_preexec_fn_raising_is_reported_like_popen(run):
    async def main():
        def fail():
            raise ValueError("nope")

        with pytest.raises(subprocess.SubprocessError, match="preexec_fn"):
            await asyncio.create_subprocess_exec("true", stdout=PIPE, preexec_fn=fail)

    run(main())


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user/group needs root")
def test_user_and_group_as_nobody(run):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "id -u; id -g; id -G", stdout=PIPE, user=65534, group=65534, extra_groups=[]
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out == b"65534\n65534\n65534\n"
        assert proc.returncode == 0

    run(main())


def test_a_child_on_a_pty_read_through_connect_read_pipe(run):
    # The usual way to run a program under a terminal: its stdio is the
    # slave, the parent reads the master until the EIO at hang-up.
    async def main():
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", "echo from-the-tty; test -t 1 && echo is-a-tty",
                stdin=slave, stdout=slave, stderr=slave,
            )  # fmt: skip
        finally:
            os.close(slave)
        got = bytearray()
        ended = loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)

            def eof_received(self):
                ended.set_result("eof")

            def connection_lost(self, exc):
                if not ended.done():
                    ended.set_result(exc)

        await loop.connect_read_pipe(Reader, open(master, "rb", buffering=0))
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        exc = await asyncio.wait_for(ended, TIMEOUT)
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert bytes(got) == b"from-the-tty\r\nis-a-tty\r\n"

    run(main())


def test_debug_mode_logs_the_program_and_its_pipes(run, caplog):
    async def main():
        proc = await asyncio.create_subprocess_exec("true", stdout=PIPE, stderr=STDOUT)
        await asyncio.wait_for(proc.communicate(), TIMEOUT)
        proc = await asyncio.create_subprocess_shell("exit 0", stdin=PIPE)
        await asyncio.wait_for(proc.communicate(b""), TIMEOUT)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main(), debug=True)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.getMessage().startswith(("execute program", "run shell"))
    ]
    assert lines[0] == "execute program 'true' stdout=stderr=<pipe>"
    assert lines[1].startswith("execute program 'true': <_UnixSubprocessTransport ")
    assert lines[2] == "run shell command 'exit 0' stdin=<pipe>"
    assert lines[3].startswith("run shell command 'exit 0': <_UnixSubprocessTransport ")
    assert len(lines) == 4


# ---------------------------------------------------------------------------
# the transport and protocol level
# ---------------------------------------------------------------------------


def test_protocol_callbacks_and_transport_accessors(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            Recorder, PY, "-c",
            "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d);"
            " sys.stderr.buffer.write(d[::-1])",
        )  # fmt: skip
        assert protocol.events == ["made"]
        pid = transport.get_pid()
        assert transport.get_returncode() is None
        assert transport.get_extra_info("subprocess").pid == pid
        r = repr(transport)
        assert f"pid={pid} running stdin=" in r and " stdout=" in r and " stderr=" in r
        stdin = transport.get_pipe_transport(0)
        assert transport.get_pipe_transport(1) is not None
        assert transport.get_pipe_transport(2) is not None
        assert transport.get_pipe_transport(3) is None
        stdin.write(b"abc")
        stdin.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert transport.get_returncode() == 0
        assert bytes(protocol.data[1]) == b"abc" and bytes(protocol.data[2]) == b"cba"
        ev = protocol.events
        assert ev[0] == "made" and ev[-1] == ("lost", None)
        assert sorted(e[1] for e in ev if e[0] == "pipe_lost") == [0, 1, 2]
        for fd in (1, 2):  # each pipe's data comes before its end
            assert ev.index(("data", fd)) < ev.index(("pipe_lost", fd, None))
        assert ev.count("exited") == 1
        assert f"pid={pid} returncode=0" in repr(transport)
        assert not transport.is_closing()
        transport.close()
        assert transport.is_closing()
        assert repr(transport).split()[1] == "closed"

    run(main())


def test_transport_close_kills_a_running_process(run):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(Recorder, "sleep", "60")
        pid = transport.get_pid()
        transport.close()
        assert await asyncio.wait_for(protocol.exited, TIMEOUT) == -signal.SIGKILL
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert_reaped(pid)

    run(main())


def test_output_written_just_before_exit_is_not_lost(run):
    # The child fills its stdout pipe and exits while the parent is not
    # reading: its exit is noticed first, the data must still all arrive,
    # and connection_lost waits for it.
    size = 60_000  # fits in the pipe, so the child can exit at once

    async def main():
        errors = capture_errors()
        loop = asyncio.get_running_loop()

        class Paused(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.get_pipe_transport(1).pause_reading()

        transport, protocol = await loop.subprocess_exec(
            Paused, PY, "-c",
            f"import os; os.read(0, 1); os.write(1, b'q' * {size}); os._exit(0)",
            stderr=DEVNULL,
        )  # fmt: skip
        transport.get_pipe_transport(0).write(b"go")  # stdout is paused by now
        assert await asyncio.wait_for(protocol.exited, TIMEOUT) == 0
        await asyncio.sleep(SETTLE)
        assert protocol.data[1] == b""
        assert not protocol.lost.done()
        transport.get_pipe_transport(1).resume_reading()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.data[1] == b"q" * size
        assert protocol.events[-2:] == [("pipe_lost", 1, None), ("lost", None)]
        transport.close()
        assert errors == []

    run(main())


def test_5_mb_written_right_before_exit(run):
    async def main():
        proc = await python(
            """
            import os
            block = bytes(range(256)) * 4096
            for _ in range(5):
                view = memoryview(block)
                while view:
                    view = view[os.write(1, view):]
            os._exit(0)
            """,
            stdout=PIPE,
        )  # fmt: skip
        out = await asyncio.wait_for(proc.stdout.read(), TIMEOUT)
        assert out == bytes(range(256)) * 4096 * 5
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0

    run(main())


# ---------------------------------------------------------------------------
# scale and faults
# ---------------------------------------------------------------------------


def test_200_concurrent_processes(run):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", 'read x; echo "$x-$1"; echo "e$1" >&2', "sh", str(i),
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        out, err = await proc.communicate(f"in{i}\n".encode())
        return proc.pid, proc.returncode, out, err

    async def main():
        errors = capture_errors()
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 50)
        for i, (pid, rc, out, err) in enumerate(results):
            assert (rc, out, err) == (0, f"in{i}-{i}\n".encode(), f"e{i}\n".encode())
        assert len({pid for pid, *_ in results}) == 200
        for pid, *_ in results:
            assert_reaped(pid)
        assert errors == []

    run(main())


def vm_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_100_mb_through_stdout_with_bounded_memory(run):
    async def main():
        errors = capture_errors()
        proc = await python(
            """
            import hashlib, os, random, sys
            rnd = random.Random(5)
            digest = hashlib.sha256()
            for _ in range(100):
                block = rnd.randbytes(1 << 20)
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(1, view):]
            sys.stderr.write(digest.hexdigest())
            """,
            stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        base = vm_rss()
        peak = base
        digest = hashlib.sha256()
        total = 0
        start = time.monotonic()
        while True:
            chunk = await asyncio.wait_for(proc.stdout.read(1 << 20), TIMEOUT)
            if not chunk:
                break
            total += len(chunk)
            digest.update(chunk)
            peak = max(peak, vm_rss())
        elapsed = time.monotonic() - start
        err = await asyncio.wait_for(proc.stderr.read(), TIMEOUT)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        assert total == 100 * MiB
        assert digest.hexdigest() == err.decode()
        # The reader pauses the pipe when its buffer is full: memory does
        # not grow with the amount read.
        assert peak - base < 32 * MiB, f"RSS grew by {(peak - base) / MiB:.1f} MiB"
        assert elapsed < 45, f"100 MiB took {elapsed:.1f}s"
        assert errors == []

    run(main())


def test_killing_a_process_group_ends_all_grandchildren(run):
    async def main():
        errors = capture_errors()
        proc = await asyncio.create_subprocess_shell(
            "for i in 1 2 3; do sleep 60 >/dev/null 2>&1 & echo $!; done; wait",
            stdout=PIPE, start_new_session=True,
        )  # fmt: skip
        grandchildren = []
        for _ in range(3):
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            grandchildren.append(int(line))
        started = {pid: proc_start(pid) for pid in grandchildren}
        for pid in grandchildren:
            assert proc_state(pid) not in (None, "Z")
            assert os.getpgid(pid) == proc.pid

        def dead(pid):
            return proc_state(pid) in (None, "Z", "X") or proc_start(pid) != started[pid]

        os.killpg(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL
        assert await proc.stdout.read() == b""
        # They are not our children (init reaps them): dead is enough.
        await wait_until(lambda: all(map(dead, grandchildren)), what="grandchildren to die")
        assert_reaped(proc.pid)
        assert errors == []

    run(main())


def test_a_forking_program(run):
    # The child forks and exits; the grandchild keeps stdout open and
    # writes later.  The exit status is known when the child exits; stdout
    # ends when the grandchild exits.  wait() returns at the child's exit
    # on 3.10 and only once the pipes are closed too on 3.11+ (when it was
    # called before the exit was seen, as here).
    async def main():
        errors = capture_errors()
        r, w = os.pipe()  # each process waits for a byte from us
        try:
            proc = await python(
                f"""
                import os
                os.read({r}, 1)
                if os.fork() == 0:
                    os.read({r}, 1)
                    os.write(1, b"grandchild")
                    os._exit(0)
                os.write(1, b"child ")
                os._exit(3)
                """,
                stdout=PIPE, pass_fds=(r,),
            )  # fmt: skip
            waiter = asyncio.ensure_future(proc.wait())
            await asyncio.sleep(0)
            os.write(w, b"c")
            assert await asyncio.wait_for(proc.stdout.readexactly(6), TIMEOUT) == b"child "
            await wait_until(lambda: proc.returncode is not None, what="the child's exit")
            assert proc.returncode == 3
            await asyncio.sleep(SETTLE)
            if PY_VERSION >= (3, 11):
                assert not waiter.done()  # stdout is still open
            else:
                assert waiter.done() and waiter.result() == 3
            os.write(w, b"g")
            assert await asyncio.wait_for(proc.stdout.read(), TIMEOUT) == b"grandchild"
            assert await asyncio.wait_for(waiter, TIMEOUT) == 3
            assert_reaped(proc.pid)
        finally:
            os.close(r)
            os.close(w)
        assert errors == []

    run(main())


def test_no_zombie_after_wait_or_communicate(run):
    async def main():
        pids = []
        for _ in range(5):
            proc = await asyncio.create_subprocess_exec("true")
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
            pids.append(proc.pid)
            proc = await asyncio.create_subprocess_exec("echo", "x", stdout=PIPE)
            await asyncio.wait_for(proc.communicate(), TIMEOUT)
            pids.append(proc.pid)
        for pid in pids:
            assert_reaped(pid)

    run(main())


@pytest.mark.parametrize("close_fds", [True, False])
def test_no_loop_descriptor_leaks_into_a_child(run, close_fds):
    # What this process had before the loop existed; whatever appears after
    # is the loop's (poller, wake-up, child watching) or the test's own.
    before = open_fds()
    inherited_before = {fd for fd in before if os.get_inheritable(fd)}

    async def main():
        # Another child still running, so the loop holds whatever it uses
        # to watch children too.
        sleeper = await asyncio.create_subprocess_exec("sleep", "60", stdin=PIPE)
        r, w = os.pipe()
        try:
            kwargs = dict(pass_fds=(w,)) if close_fds else dict(close_fds=False)
            proc = await python(LIST_FDS, stdout=PIPE, **kwargs)
            out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            child = {int(fd): target for fd, target in json.loads(out).items()}
            new = {fd: t for fd, t in open_fds().items() if before.get(fd) != t}
            assert any("eventpoll" in t for t in new.values())  # the loop is in there
            # None of the loop's descriptors can reach a child.
            assert [(fd, t) for fd, t in new.items() if os.get_inheritable(fd)] == []
            if close_fds:
                assert set(child) == {0, 1, 2, w}
            else:
                # Only what this process had made inheritable on purpose
                # before (the test runner's own descriptors).
                assert set(child) == {0, 1, 2} | inherited_before
            for fd in set(child) - {0, 1, 2, w}:
                assert fd not in new, (fd, child[fd])
            assert child[1].startswith("pipe:")
        finally:
            os.close(r)
            os.close(w)
            sleeper.kill()
            await asyncio.wait_for(sleeper.wait(), TIMEOUT)

    run(main())


def test_a_signal_handler_keeps_working_while_50_processes_come_and_go(run):
    async def main():
        loop = asyncio.get_running_loop()
        got = []
        event = asyncio.Event()

        def handler():
            got.append(1)
            event.set()

        loop.add_signal_handler(signal.SIGUSR1, handler)
        try:
            me = os.getpid()
            for batch in range(5):
                procs = [
                    await asyncio.create_subprocess_exec("/bin/sh", "-c", f"kill -USR1 {me}")
                    for _ in range(10)
                ]
                codes = await asyncio.wait_for(
                    asyncio.gather(*(p.wait() for p in procs)), TIMEOUT
                )
                assert codes == [0] * 10
                await asyncio.wait_for(event.wait(), TIMEOUT)
                event.clear()
                # And our own signal after the batch is still handled.
                count = len(got)
                os.kill(me, signal.SIGUSR1)
                await asyncio.wait_for(event.wait(), TIMEOUT)
                event.clear()
                assert len(got) > count
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    run(main())


def test_cancelling_communicate_then_killing_leaves_no_zombie(run):
    async def main():
        errors = capture_errors()
        proc = await asyncio.create_subprocess_exec("sleep", "60", stdin=PIPE, stdout=PIPE)
        task = asyncio.ensure_future(proc.communicate(b"ignored"))
        await asyncio.sleep(SETTLE)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proc.kill()
        await wait_until(lambda: proc.returncode is not None, what="exit after kill")
        assert proc.returncode == -signal.SIGKILL
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL
        assert_reaped(proc.pid)
        assert errors == []

    run(main())


def our_children():
    """The pids whose parent is this process (zombies included)."""
    pids = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            pids.update(int(pid) for pid in f.read().split())
    return pids


@pytest.mark.parametrize("turns", [1, 2, 5])
def test_cancelling_process_creation_kills_and_reaps_the_process(run, turns):
    # Cancelled while its pipes are being connected: the process is killed
    # and waited for before CancelledError comes out.
    async def main():
        before = our_children()
        task = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                "sleep", "60", stdin=PIPE, stdout=PIPE, stderr=PIPE
            )
        )
        for _ in range(turns):
            await asyncio.sleep(0)
        assert not task.done()
        assert len(our_children() - before) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
        await wait_until(lambda: our_children() == before, what="the child to be reaped")

    run(main())


def test_a_programs_own_sigchld_handler_does_not_disturb_child_watching(run):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.add_signal_handler(signal.SIGCHLD, seen.append, "chld")
        try:
            procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}") for i in range(10)]
            codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), TIMEOUT)
            assert codes == list(range(10))
            await wait_until(lambda: seen, what="the SIGCHLD handler")
            for p in procs:
                assert_reaped(p.pid)
        finally:
            assert loop.remove_signal_handler(signal.SIGCHLD)

    run(main())


def test_cancelling_wait_does_not_lose_the_exit(run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sh", "-c", "read x; exit 4", stdin=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.05)  # it waits for its stdin
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 4
        assert_reaped(proc.pid)

    run(main())


@pytest.mark.parametrize("pidfd", ["missing", "refused"])
def test_without_pidfds(run, monkeypatch, pidfd):
    # No os.pidfd_open (an old kernel or libc) or one that a seccomp policy
    # refuses: both loops fall back to a thread blocked in waitpid.
    if pidfd == "missing":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    else:

        def refused(*args):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "pidfd_open", refused)

    async def main():
        procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}") for i in range(20)]
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), TIMEOUT)
        assert codes == list(range(20))
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        assert await asyncio.wait_for(proc.communicate(b"echo"), TIMEOUT) == (b"echo", None)
        proc2 = await asyncio.create_subprocess_exec("sleep", "60")
        proc2.kill()
        assert await asyncio.wait_for(proc2.wait(), TIMEOUT) == -signal.SIGKILL
        for p in procs + [proc, proc2]:
            assert_reaped(p.pid)

    run(main())


# ---------------------------------------------------------------------------
# a child watcher installed by the program (3.10-3.13)
# ---------------------------------------------------------------------------


def _quiet_deprecations():
    cm = warnings.catch_warnings()
    cm.__enter__()
    warnings.simplefilter("ignore", DeprecationWarning)
    return cm


def test_an_installed_child_watcher_is_used(run):
    async def main():
        added = []

        cm = _quiet_deprecations()
        try:

            class Recording(asyncio.ThreadedChildWatcher):
                def add_child_handler(self, pid, callback, *args):
                    added.append(pid)
                    super().add_child_handler(pid, callback, *args)

            watcher = Recording()
            asyncio.set_child_watcher(watcher)
        finally:
            cm.__exit__(None, None, None)
        proc = await asyncio.create_subprocess_exec("echo", "watched", stdout=PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert out == b"watched\n" and proc.returncode == 0
        assert added == [proc.pid]
        assert_reaped(proc.pid)

    run(main())


def test_an_inactive_installed_watcher_refuses_before_starting(run):
    async def main():
        started = []
        cm = _quiet_deprecations()
        try:

            class Inactive(asyncio.ThreadedChildWatcher):
                def is_active(self):
                    return False

            asyncio.set_child_watcher(Inactive())
        finally:
            cm.__exit__(None, None, None)
        with pytest.raises(RuntimeError) as info:
            await asyncio.create_subprocess_exec(
                PY, "-c", "open('/dev/null')", preexec_fn=lambda: started.append(1)
            )
        assert str(info.value) == (
            "asyncio.get_child_watcher() is not activated, subprocess support is not installed."
        )

    run(main())


WATCHERS = [
    name
    for name in (
        "SafeChildWatcher",  # SIGCHLD through loop.add_signal_handler
        "FastChildWatcher",  # the same, waitpid(-1)
        # Not MultiLoopChildWatcher: its Python-level SIGCHLD handler can
        # re-enter its own waitpid() call (a stdlib race: "Child watcher got
        # an unexpected pid", then returncode 255), on the stdlib loop too,
        # so its outcome is not deterministic on either loop.
        "ThreadedChildWatcher",  # a thread per child
        "PidfdChildWatcher",  # loop._add_reader on a pidfd
    )
    if hasattr(asyncio, name)
]


@pytest.mark.parametrize("kind", WATCHERS)
def test_each_stdlib_child_watcher_installed_by_the_program(run, kind):
    async def main():
        loop = asyncio.get_running_loop()
        cm = _quiet_deprecations()
        try:
            watcher = getattr(asyncio, kind)()
            watcher.attach_loop(loop)
            asyncio.set_child_watcher(watcher)
        finally:
            cm.__exit__(None, None, None)
        try:
            procs = [
                await asyncio.create_subprocess_exec(
                    "sh", "-c", f"echo {i}; exit {i}", stdout=PIPE
                )
                for i in range(5)
            ]
            outs = await asyncio.wait_for(
                asyncio.gather(*(p.communicate() for p in procs)), TIMEOUT
            )
            assert [p.returncode for p in procs] == [0, 1, 2, 3, 4]
            assert [out for out, _ in outs] == [f"{i}\n".encode() for i in range(5)]
            for p in procs:
                assert_reaped(p.pid)
        finally:
            cm = _quiet_deprecations()
            try:
                watcher.close()
            finally:
                cm.__exit__(None, None, None)

    run(main())


def test_when_an_installed_watcher_reports_the_exit(run):
    # A watcher that the test drives by hand: the exit is reported from the
    # loop's thread at a known point, and the loop turn on which
    # process_exited() runs is compared with a two-turn marker.  3.10/3.11
    # wait one more turn than 3.12+.
    cm = _quiet_deprecations()
    try:

        class Manual(asyncio.AbstractChildWatcher):
            def __init__(self):
                self.handlers = {}

            def add_child_handler(self, pid, callback, *args):
                self.handlers[pid] = (callback, args)

            def remove_child_handler(self, pid):
                return self.handlers.pop(pid, None) is not None

            def attach_loop(self, loop):
                pass

            def close(self):
                pass

            def is_active(self):
                return True

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                pass

    finally:
        cm.__exit__(None, None, None)

    async def main():
        loop = asyncio.get_running_loop()
        watcher = Manual()
        cm = _quiet_deprecations()
        try:
            asyncio.set_child_watcher(watcher)
        finally:
            cm.__exit__(None, None, None)
        order = []

        class Protocol(asyncio.SubprocessProtocol):
            def process_exited(self):
                order.append("process_exited")

            def connection_lost(self, exc):
                order.append("lost")

        transport, _ = await loop.subprocess_exec(
            Protocol, "sh", "-c", "exit 6", stdin=None, stdout=None, stderr=None
        )
        pid = transport.get_pid()
        assert list(watcher.handlers) == [pid]
        _, status = os.waitpid(pid, 0)  # the "watcher" reaps it
        callback, args = watcher.handlers.pop(pid)
        callback(pid, os.waitstatus_to_exitcode(status), *args)
        loop.call_soon(loop.call_soon, order.append, "marker")
        for _ in range(6):
            await asyncio.sleep(0)
        if PY_VERSION >= (3, 12):
            assert order == ["process_exited", "lost", "marker"]
        else:
            assert order == ["marker", "process_exited", "lost"]
        assert transport.get_returncode() == 6
        transport.close()
        assert_reaped(pid)

    run(main())
