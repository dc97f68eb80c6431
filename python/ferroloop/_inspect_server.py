"""The opt-in inspection channel: ``python -m ferroloop ps PID`` asks a
running program for its tasks through it.

Off by default.  ``FERROLOOP_INSPECT=1`` in the environment (or
``loop.enable_inspection()``) opens a Unix socket at
``<runtime dir>/ferroloop-<uid>/<pid>.sock``: the directory is created 0700
and the socket 0600, and every connection's peer credentials are checked
(SO_PEERCRED) against our own uid, so nobody else on the machine can ask.
A daemon thread answers, so a dump works while the loop thread is blocked
(as long as it lets the GIL go, as sleeping or Python code does).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import weakref

ENV_INSPECT = "FERROLOOP_INSPECT"

_loops = weakref.WeakSet()
_server_lock = threading.Lock()
_server = None


def socket_dir():
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"ferroloop-{os.getuid()}")


def socket_path(pid):
    return os.path.join(socket_dir(), f"{pid}.sock")


def inspection_requested():
    return os.environ.get(ENV_INSPECT, "").strip() not in ("", "0")


def register(loop):
    """Make ``loop``'s tasks visible on this process's channel (opened on
    first use)."""
    _loops.add(loop)
    _ensure_server()


def _ensure_server():
    global _server
    with _server_lock:
        if _server is not None and _server.pid == os.getpid():
            return
        _server = _Server()


def _remove_stale_sockets(directory):
    # Left by processes that were killed before their exit handler ran.
    for entry in os.listdir(directory):
        pid = entry.removesuffix(".sock")
        if entry.endswith(".sock") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass


class _Server:
    def __init__(self):
        self.pid = os.getpid()
        directory = socket_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{directory} must be a directory only this user can use")
        self.path = socket_path(self.pid)
        _remove_stale_sockets(directory)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old_umask)
        self.sock.listen(4)
        thread = threading.Thread(target=self._serve, name="ferroloop-inspect", daemon=True)
        thread.start()
        import atexit

        atexit.register(self._remove)

    def _remove(self):
        try:
            if os.getpid() == self.pid:
                os.unlink(self.path)
        except OSError:
            pass

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            struct.calcsize("3i"))  # fmt: skip
                    _, uid, _ = struct.unpack("3i", creds)
                    if uid != os.getuid():
                        continue
                    conn.settimeout(5)
                    request = conn.recv(64).strip()
                    if request == b"tasks":
                        conn.sendall(json.dumps(snapshot()).encode() + b"\n")
                except OSError:
                    continue


# ---- the snapshot ----------------------------------------------------------


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


def _where(coro):
    """(file:line, function) where a coroutine chain is suspended: follow
    what each frame awaits down to the innermost frame of the program's own
    code (asyncio.sleep's insides say little)."""
    frames = []
    while coro is not None and len(frames) < 100:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) \
            or getattr(coro, "ag_frame", None)  # fmt: skip
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if not frames:
        return None, None
    own = [f for f in frames if not f.f_code.co_filename.startswith(_ASYNCIO_DIR)]
    last = (own or frames)[-1]
    code = last.f_code
    return f"{code.co_filename}:{last.f_lineno}", getattr(code, "co_qualname", code.co_name)


def _awaited_tasks(fut):
    if isinstance(fut, asyncio.Task):
        return [fut]
    children = getattr(fut, "_children", None)  # gather's future
    if children:
        return [c for c in children if isinstance(c, asyncio.Task)]
    return []


def _describe_task(task, births, now):
    coro = task.get_coro()
    where, function = _where(coro)
    waiter = getattr(task, "_fut_waiter", None)
    born = births.get(task) if births is not None else None
    return {
        "id": id(task),
        "name": task.get_name(),
        "coro": getattr(coro, "__qualname__", repr(coro)),
        "where": where,
        "function": function,
        "awaiting": None if waiter is None else repr(waiter)[:200],
        "awaits_tasks": [id(t) for t in _awaited_tasks(waiter)],
        "age": None if born is None else round(now - born, 3),
        "state": "done" if task.done() else ("running" if waiter is None else "waiting"),
    }


def snapshot():
    """Every task of every registered loop, as plain data."""
    now = time.monotonic()
    loops = []
    for loop in list(_loops):
        if loop.is_closed():
            continue
        births = getattr(loop, "_task_births", None)
        tasks = [_describe_task(t, births, now) for t in asyncio.all_tasks(loop)]
        tasks.sort(key=lambda t: (t["age"] is None, -(t["age"] or 0)))
        loops.append({"loop": repr(loop), "thread": loop._thread_id, "tasks": tasks})
    return {"pid": os.getpid(), "python": sys.version.split()[0], "loops": loops}


def request(pid, timeout=10.0):
    """Ask process ``pid`` for its tasks (the client side of ``ps``)."""
    path = socket_path(pid)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise RuntimeError(
                f"process {pid} has no ferroloop inspection channel at {path} "
                f"(start it with {ENV_INSPECT}=1)"
            ) from None
        sock.sendall(b"tasks\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
