"""Runs one CPython asyncio test module on one side; started by run.py.

    python worker.py JOB.json

The job file says which module, which side (baseline / candidate), which loop,
which tests to skip or run alone, and where to append events (JSON lines):

    hello       process started; carries the candidate loop type
    collected   the tests this process is going to run
    start       a test's run() starts (also marked on stderr, to cut crash logs)
    result      its run() returned: outcome, detail, loops it created
    fixture     setUpModule/setUpClass/tearDown* failed outside any test
    skipped     the whole module raised SkipTest on import
    fatal       the module could not be imported or planned
    done        the suite finished normally

A test that hangs is stopped by faulthandler, which dumps every thread's stack
to stderr and exits; supervise.py reads the last `start` event to know which test it
was and starts a new worker for the tests that are left.
"""

import asyncio
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import time
import traceback
import unittest

import candidate as plugin
import collect
from specs import BY_NAME, PACKAGE

MAX_DETAIL = 6000


class Events:
    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8")
        # Tests fork (multiprocessing, subprocess fallbacks); a child that
        # returns into this code must not write into the parent's stream.
        self._pid = os.getpid()

    def emit(self, ev, **fields):
        if os.getpid() != self._pid:
            return
        fields["ev"] = ev
        self._file.write(json.dumps(fields) + "\n")
        self._file.flush()


def _stderr_marker(text):
    # Straight to fd 2: sys.stderr may be swapped by the test, and the marker
    # must sit in the same stream as faulthandler's dump.
    os.write(2, f"\n##conformance {text}\n".encode("utf-8", "replace"))


class HangGuard:
    """One faulthandler timer, re-armed at every test boundary.

    Armed between tests too, so a hang in a class or module fixture is caught
    with the same budget.
    """

    def __init__(self, seconds):
        self.seconds = seconds

    def arm(self):
        if self.seconds:
            faulthandler.dump_traceback_later(self.seconds, exit=True)

    def disarm(self):
        faulthandler.cancel_dump_traceback_later()


class EventResult(unittest.TestResult):
    """Reports each test as one `result` event instead of printing."""

    def __init__(self, events, planned, counter, guard, policy_cls):
        super().__init__()
        self._events = events
        # Keyed by unittest id, not by test object: holding on to the tests
        # would keep every finished test's loops and frames alive, and slow
        # each gc.collect() of later tests down a lot (test_tasks calls it often).
        self._by_test = {p.test.id(): p for p in planned}
        self._counter = counter
        self._guard = guard
        self._policy_cls = policy_cls
        self._current = {}

    def _planned(self, test):
        return self._by_test.get(test.id()) if isinstance(test, unittest.TestCase) else None

    # A test's span is its whole TestCase.run(), wider than startTest/stopTest:
    # IsolatedAsyncioTestCase makes its loop before startTest on 3.10 and
    # closes it after stopTest on 3.11+, and those steps hang or raise too.

    def enter(self, test):
        p = self._planned(test)
        self._current = {"outcome": "pass", "detail": "", "t0": time.monotonic()}
        self._events.emit("start", id=p.id, key=p.key)
        _stderr_marker(f"start {p.id}")
        self._guard.arm()

    def late_error(self, test, err):
        # Escaped TestCase.run(); left alone it would end the whole suite.
        self._set("error", "raised after the test had finished (loop teardown?):\n"
                  + "".join(traceback.format_exception(*err)))

    def leave(self, test):
        self._guard.arm()  # covers the class/module fixtures up to the next test
        p = self._planned(test)
        cur = self._current
        fields = dict(
            id=p.id, key=p.key, comparable=p.comparable,
            outcome=cur["outcome"], detail=cur["detail"][-MAX_DETAIL:],
            duration=round(time.monotonic() - cur["t0"], 3),
            loops=self._counter.take(),
        )
        if self._policy_cls and plugin.policy_is_foreign(self._policy_cls):
            fields["policy_leak"] = repr(asyncio.events._event_loop_policy)
            asyncio.set_event_loop_policy(None)
        self._events.emit("result", **fields)

    def guard_run(self, test):
        """Route `test`'s run() through enter/leave (TestCase.__call__ calls self.run)."""
        inner = test.run

        def run(*args, **kwargs):
            self.enter(test)
            try:
                return inner(*args, **kwargs)
            except Exception:
                self.late_error(test, sys.exc_info())
            finally:
                self.leave(test)

        test.run = run

    def _set(self, outcome, detail):
        # The first problem wins: a later subtest failure or a tearDown error
        # must not hide the one that explains the test.
        if self._current.get("outcome", "pass") in ("pass", "skip"):
            self._current["outcome"] = outcome
            self._current["detail"] = detail

    def _fixture_error(self, holder, err):
        # setUpModule/setUpClass/tearDownClass/tearDownModule: unittest hands
        # an _ErrorHolder that never went through startTest.
        self._events.emit("fixture", id=collect.short_id(holder.id()),
                          detail=self._exc_info_to_string(err, holder)[-MAX_DETAIL:])

    def addError(self, test, err):
        super().addError(test, err)
        if self._planned(test) is None:
            self._fixture_error(test, err)
        else:
            self._set("error", self._exc_info_to_string(err, test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set("fail", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._set(kind, f"{subtest.id()}\n" + self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if self._planned(test) is not None:
            self._set("skip", reason)

    def addExpectedFailure(self, test, err):
        # CPython's own @expectedFailure: behaves as designed, counts as a pass.
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set("fail", "unexpected success of a test marked @expectedFailure")


def _matches(patterns, *names):
    return any(fnmatch.fnmatchcase(n, pat) for pat in patterns for n in names)


def _select(planned, job):
    only = set(job.get("only") or ())
    skip = set(job.get("skip") or ())
    selected = []
    for p in planned:
        if only and p.id not in only:
            continue
        if p.id in skip or _matches(job.get("not_run") or (), p.key):
            continue
        k = job.get("k") or ()
        if k and not _matches(k, p.key, p.id):
            continue
        selected.append(p)
    return selected


def main(job_path):
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    events = Events(job["events"])
    faulthandler.enable(all_threads=True)
    # run.py sends SIGUSR1 before killing a module that ran out of time.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    counter = plugin.LoopCounter()
    plugin.count_stdlib_loops(counter)
    policy_cls = None
    make_loop = None
    try:
        if job["side"] == "candidate":
            cand = plugin.load(job["loop"])
            policy_cls = plugin.install(cand, counter)
            make_loop = counter.tracked(cand.make_loop, cand.loop_type)
            events.emit("hello", pid=os.getpid(), loop_type=f"{cand.loop_type.__module__}."
                        f"{cand.loop_type.__qualname__}")
        else:
            events.emit("hello", pid=os.getpid(), loop_type=None)

        spec = BY_NAME[job["module"]]
        try:
            module = importlib.import_module(f"{PACKAGE}.{spec.name}")
        except unittest.SkipTest as exc:
            events.emit("skipped", reason=str(exc))
            return 0
        selected = _select(collect.plan(module, spec, job["side"], make_loop), job)
    except Exception:
        events.emit("fatal", detail=traceback.format_exc()[-MAX_DETAIL:])
        return 3

    events.emit("collected", tests=[
        {"id": p.id, "key": p.key, "comparable": p.comparable} for p in selected])
    counter.take()  # loops made while importing belong to no test

    guard = HangGuard(job.get("per_test_timeout"))
    result = EventResult(events, selected, counter, guard, policy_cls)
    # From here on only the suite holds the tests; it drops each one once run.
    suite = unittest.TestSuite([p.test for p in selected])
    for p in selected:
        result.guard_run(p.test)
        p.test = None
    guard.arm()
    suite.run(result)
    guard.disarm()

    done = {"outside_loops": counter.take()}
    if policy_cls is not None:
        try:
            plugin.check_policy(policy_cls)
            done["policy_reset_ok"] = True
        except plugin.PluginError as exc:
            done["policy_reset_ok"] = False
            done["policy_reset_error"] = str(exc)
    events.emit("done", **done)
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
