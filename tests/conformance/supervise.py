"""Runs one side of one module in worker processes, surviving hangs and crashes.

A worker that dies in the middle of a test (segfault, abort, faulthandler's
per-test timeout) costs only that test: its outcome becomes "crash" or
"timeout" with the end of the worker's log as detail, and a fresh worker runs
the tests that are left.  The module's wall-clock budget covers all attempts.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
MARKER = "##conformance start "  # written by worker._stderr_marker
LOG_LINES = 80


@dataclass
class Options:
    loop: str
    per_test_timeout: float
    max_attempts: int = 30
    k: tuple = ()
    not_run: tuple = ()       # candidate side only
    log_dir: str = None       # keep worker logs here (else a temporary dir)


@dataclass
class TestRecord:
    id: str
    key: str
    comparable: bool = True
    outcome: str = "not-run"  # pass | fail | error | skip | timeout | crash | not-run
    detail: str = ""
    duration: float = 0.0
    loops: dict = None
    policy_leak: str = None


@dataclass
class SideRun:
    module: str
    side: str
    status: str = "ok"        # ok | skipped | fatal | crashed | timeout
    note: str = ""
    tests: dict = field(default_factory=dict)    # id -> TestRecord, run order
    fixtures: list = field(default_factory=list)  # [{"id", "detail"}]
    problems: list = field(default_factory=list)  # one-line summaries, details in `fixtures`
    attempts: int = 0
    duration: float = 0.0
    loop_type: str = None
    outside_loops: dict = field(default_factory=dict)

    def loops_total(self, kind):
        n = self.outside_loops.get(kind, 0)
        return n + sum((t.loops or {}).get(kind, 0) for t in self.tests.values())

    def escalate(self, status):
        order = ("ok", "skipped", "crashed", "fatal", "timeout")
        if order.index(status) > order.index(self.status):
            self.status = status


def _tail(text, lines=LOG_LINES):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _signal_name(rc):
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _read_events(path):
    if not os.path.exists(path):
        return []
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break  # torn last line of a killed worker
    return events


def _spawn(job_path, log_path, cwd, deadline):
    """Run a worker until it exits or the deadline passes; return (rc, killed)."""
    with open(log_path, "wb") as log:
        # Own session: the tests start subprocesses, and on a kill the whole
        # group has to go, not just the worker.
        proc = subprocess.Popen([sys.executable, WORKER, job_path], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
            proc.send_signal(signal.SIGUSR1)  # faulthandler: dump all stacks
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = proc.wait()
    return rc, killed


def run_side(module, side, opts, budget, only=None):
    run = SideRun(module, side)
    started = time.monotonic()
    deadline = started + budget
    scratch = tempfile.mkdtemp(prefix=f"conformance-{module}-{side}-")
    log_dir = opts.log_dir or scratch
    os.makedirs(log_dir, exist_ok=True)
    try:
        _attempts(run, module, side, opts, deadline, scratch, log_dir, only)
    finally:
        run.duration = round(time.monotonic() - started, 2)
        shutil.rmtree(scratch, ignore_errors=True)
    return run


def _attempts(run, module, side, opts, deadline, scratch, log_dir, only):
    done_ids = set()
    while True:
        if run.attempts and time.monotonic() >= deadline:
            run.escalate("timeout")
            run.problems.append("module time budget ran out before the remaining tests ran")
            return
        run.attempts += 1
        n = run.attempts
        tag = f"{module}.{side}{'.rerun' if only else ''}.{n}"
        events_path = os.path.join(scratch, f"{tag}.events")
        log_path = os.path.join(log_dir, f"{tag}.log")
        job_path = os.path.join(scratch, f"{tag}.job.json")
        cwd = os.path.join(scratch, f"cwd{n}")
        os.makedirs(cwd)
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(dict(module=module, side=side, loop=opts.loop, events=events_path,
                           per_test_timeout=opts.per_test_timeout, skip=sorted(done_ids),
                           only=list(only or ()), k=list(opts.k),
                           not_run=list(opts.not_run) if side == "candidate" else []), f)

        rc, killed = _spawn(job_path, log_path, cwd, deadline)
        state = _apply_events(run, _read_events(events_path))
        if state["terminal"]:
            return
        if state["finished"]:
            if rc != 0:
                run.escalate("crashed")
                run.problems.append(f"worker exited with {_exit_text(rc)} after the last test")
                run.fixtures.append({"id": "<interpreter exit>", "detail": _tail(_read(log_path))})
            return

        # Each abnormal end marks one test (or ends the loop), so this terminates.
        _record_abnormal_end(run, state["in_progress"], rc, killed, _read(log_path))
        done_ids = {tid for tid, rec in run.tests.items() if rec.outcome != "not-run"}
        if killed or len(done_ids) == len(run.tests):
            return
        if n >= opts.max_attempts:
            run.problems.append(f"gave up after {n} worker restarts")
            return


def _apply_events(run, events):
    state = dict(terminal=False, finished=False, new_results=0, in_progress=None)
    for ev in events:
        kind = ev["ev"]
        if kind == "hello":
            run.loop_type = ev.get("loop_type")
        elif kind == "skipped":
            run.status, run.note = "skipped", ev["reason"]
            state["terminal"] = True
        elif kind == "fatal":
            run.escalate("fatal")
            run.problems.append("worker could not import or plan the module")
            run.fixtures.append({"id": "<import>", "detail": ev["detail"]})
            state["terminal"] = True
        elif kind == "collected":
            for t in ev["tests"]:
                run.tests.setdefault(t["id"], TestRecord(t["id"], t["key"], t["comparable"]))
        elif kind == "start":
            state["in_progress"] = ev["id"]
        elif kind == "result":
            rec = run.tests.setdefault(ev["id"], TestRecord(ev["id"], ev["key"]))
            for name in ("comparable", "outcome", "detail", "duration", "loops", "policy_leak"):
                if name in ev:
                    setattr(rec, name, ev[name])
            state["new_results"] += 1
            state["in_progress"] = None
        elif kind == "fixture":
            run.fixtures.append({"id": ev["id"], "detail": ev["detail"]})
            run.problems.append(f"fixture error: {ev['id']}")
        elif kind == "done":
            run.outside_loops = ev.get("outside_loops", {})
            if ev.get("policy_reset_ok") is False:
                run.escalate("fatal")
                run.problems.append(ev.get("policy_reset_error", "policy reset check failed"))
            state["finished"] = True
    return state


def _record_abnormal_end(run, in_progress, rc, killed, log_text):
    """Blame the test that was running for the worker's death.

    A worker that died between tests is blamed on the next test due: a class
    or module fixture that crashes would take that test down with it anyway.
    """
    culprit, excerpt, note = in_progress, None, ""
    if culprit is not None:
        excerpt = log_text.rsplit(MARKER + culprit, 1)[-1]
    else:
        # Between two tests' run() calls, i.e. in class/module fixtures.
        culprit = next((tid for tid, rec in run.tests.items() if rec.outcome == "not-run"), None)
        excerpt = log_text.rsplit(MARKER, 1)[-1].split("\n", 1)[-1]
        note = "(died before this test started: in a class/module fixture)\n"
    what = _exit_text(rc)
    if culprit is None:
        # After the last test (tearDownModule, interpreter exit) or before any.
        where = "between tests (class/module fixture)" if run.tests else "before collecting tests"
        run.escalate("timeout" if killed else "crashed")
        run.problems.append(f"{'time budget ran out' if killed else 'worker died with ' + what}"
                            f" {where}")
        run.fixtures.append({"id": f"<{where}>", "detail": _tail(log_text)})
        return

    rec = run.tests[culprit]
    if killed:
        rec.outcome = "timeout"
        rec.detail = note + "module time budget ran out during this test\n" + _tail(excerpt)
        run.escalate("timeout")
        run.problems.append(f"module time budget ran out in {culprit}")
    elif rc == 1 and "Timeout (" in excerpt:
        rec.outcome = "timeout"
        rec.detail = note + "per-test timeout; stacks at that moment:\n" + _tail(excerpt)
    else:
        rec.outcome = "crash"
        rec.detail = note + f"worker died with {what}\n" + _tail(excerpt)
        run.escalate("crashed")
        run.problems.append(f"crash in {culprit}: {what}")


def _exit_text(rc):
    return _signal_name(rc) if rc < 0 else f"exit code {rc}"


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
