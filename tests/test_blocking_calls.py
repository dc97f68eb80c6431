"""The blocking calls ferroloop makes on the loop thread, as asyncio does.

Starting a child (Popen's read of its error pipe), ``os.sendfile`` and the
checks of a Unix server's socket file block the loop for a moment on both
loops. Tools that raise on blocking calls inside a running loop
(blockbuster, used by anyio's and aiohttp's suites) let asyncio's pass by
the file and name of the asyncio function they happen in. The README gives
the same allowances for ferroloop's functions; these tests keep them true:
every such call happens inside one of the functions named there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile

import pytest

TIMEOUT = 10

# (file suffix, function names): asyncio's, as blockbuster allows them, and
# ferroloop's, as the README names them.
ALLOWED = {
    "asyncio": {
        "read": [("asyncio/base_events.py", {"subprocess_exec"})],
        "sendfile": [("asyncio/base_events.py", {"sendfile"}),
                     ("asyncio/unix_events.py", {"_sock_sendfile_native_impl"})],
        "stat": [("asyncio/unix_events.py", {"create_unix_server", "_stop_serving"})],
        "unlink": [("asyncio/unix_events.py", {"_stop_serving"})],
    },
    "ferroloop": {
        "read": [("ferroloop/_subprocess.py", {"_start_subprocess"})],
        "sendfile": [("ferroloop/_sendfile.py", {"step"})],
        "stat": [("ferroloop/_server.py", {"_bind_unix", "_remember_socket_file", "_stop_serving"})],
        "unlink": [("ferroloop/_server.py", {"_stop_serving"})],
    },
}


@pytest.fixture
def watch(monkeypatch, loop_factory):
    """watch(name): from now on, each call of ``os.<name>`` made while a
    loop runs is recorded as True if it happened inside an allowed
    function, else False; returns the list of records."""
    def start(name, only_blocking_fds=False):
        real = getattr(os, name)
        allowed = ALLOWED[loop_factory.name][name]
        seen = []

        def watching(*args, **kwargs):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return real(*args, **kwargs)
            if not only_blocking_fds or os.get_blocking(args[0]):
                frame, inside = sys._getframe(1), False
                while frame is not None and not inside:
                    path = frame.f_code.co_filename.replace("\\", "/")
                    inside = any(path.endswith(suffix) and frame.f_code.co_name in names
                                 for suffix, names in allowed)
                    frame = frame.f_back
                seen.append(inside)
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, watching)
        return seen

    return start


def test_starting_a_child_reads_its_error_pipe_inside_the_named_function(run, watch):
    seen = watch("read", only_blocking_fds=True)

    async def main():
        # cwd= keeps Popen off its posix_spawn path (3.13 takes it for
        # plain calls), which makes no read.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "pass", cwd=os.getcwd())
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0

    run(main())
    assert seen and all(seen), seen


def test_sendfile_calls_os_sendfile_inside_the_named_function(run, watch, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(256 * 1024))
    seen = watch("sendfile")

    async def main():
        loop = asyncio.get_running_loop()
        got = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)

            def connection_lost(self, exc):
                done.set_result(None)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(
            asyncio.Protocol, *server.sockets[0].getsockname())
        with open(path, "rb") as f:
            assert await loop.sendfile(transport, f) == 256 * 1024
        transport.close()
        await asyncio.wait_for(done, TIMEOUT)
        server.close()
        await server.wait_closed()
        return bytes(got)

    assert run(main()) == path.read_bytes()
    assert seen and all(seen), seen


def test_unix_servers_check_their_socket_file_inside_the_named_functions(run, watch):
    directory = tempfile.mkdtemp(prefix="fl-bb-")  # short: AF_UNIX paths are limited
    path = os.path.join(directory, "s.sock")
    stats, unlinks = watch("stat"), watch("unlink")

    async def main():
        # A stale file from an earlier server is replaced; from 3.13 on the
        # file is removed when the server closes (cleanup_socket=True).
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        server = await asyncio.get_running_loop().create_unix_server(asyncio.Protocol, path)
        server.close()
        await server.wait_closed()

    try:
        run(main())
        removes_the_file = sys.version_info >= (3, 13)
        # Outside the loop, so not a watched call.
        assert os.path.exists(path) is not removes_the_file
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert stats and all(stats), stats
    assert all(unlinks) and bool(unlinks) is removes_the_file, unlinks
