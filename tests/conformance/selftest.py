#!/usr/bin/env python3
"""Checks run.py itself, with a stand-in `ferroloop` that misbehaves on purpose.

    python tests/conformance/selftest.py

The stand-in (written to a temporary directory and put on PYTHONPATH) is the
stdlib selector loop behind ferroloop's API, with faults injected into
run_forever() for chosen tests: hang, segfault, raise, or raise only the first
time (a flake).  Each scenario runs run.py on test_locks and checks its JSON
and exit status.  No Rust build is involved; takes about a minute.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run.py")

FAKE_FERROLOOP = '''
import asyncio, ctypes, os, sys, time, unittest

def _fault():
    spec = os.environ.get("FAKE_FAULTS", "")
    faults = dict(item.split("=") for item in spec.split(",") if item)
    frame = sys._getframe(2)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, unittest.TestCase):
            return faults.get(f"{type(obj).__name__}.{obj._testMethodName}")
        frame = frame.f_back
    return None

class Loop(asyncio.SelectorEventLoop):
    def run_forever(self):
        fault = _fault()
        if fault == "hang":
            time.sleep(3600)
        elif fault == "crash":
            ctypes.string_at(0)
        elif fault == "fail":
            raise RuntimeError("injected failure")
        elif fault == "flaky":
            marker = os.path.join(os.environ["FAKE_STATE"], "flaked")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("injected one-off failure")
        return super().run_forever()

def new_event_loop():
    return Loop()

class EventLoopPolicy(asyncio.events.BaseDefaultEventLoopPolicy):
    if os.environ.get("FAKE_POLICY") == "stdlib":
        _loop_factory = asyncio.SelectorEventLoop   # plumbing bug on purpose
    else:
        _loop_factory = Loop
'''

DATA_EXCLUSIONS = 'EXCLUSIONS = {"test_locks.LockTests.test_repr": "selftest exclusion"}\n'
DATA_EXPECTED = textwrap.dedent('''
    GROUPS = {"selftest": dict(delivered=False, feature="selftest group", tests={
        "test_locks.EventTests.test_wait": "fails on purpose",
        "test_locks.EventTests.test_clear": "passes, so must be reported",
    })}
''')


def run(tmp, *args, modules=("test_locks",), **fake_env):
    out = os.path.join(tmp, "out.json")
    environ = dict(os.environ, PYTHONPATH=os.path.join(tmp, "fake"),
                   FAKE_STATE=tmp, **fake_env)
    proc = subprocess.run([sys.executable, RUN, "--loop", "ferroloop", "--json", out,
                           "--modules", *modules, *args],
                          capture_output=True, text=True, env=environ)
    data = None
    if os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            data = json.load(f)
        os.unlink(out)
    return proc, data


def test(key, data):
    return data["modules"]["test_locks"]["tests"][key]


def scenario_clean(tmp):
    # test_sock_lowlevel: its mixin tests must run on the stand-in's loops.
    proc, data = run(tmp, modules=("test_locks", "test_sock_lowlevel"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    for name in ("test_locks", "test_sock_lowlevel"):
        m = data["modules"][name]
        assert m["counts"]["regressions"] == 0 and m["status"] == "ok", (name, m["status"])
        assert m["candidate"]["loop_type"] == "ferroloop.Loop", m["candidate"]["loop_type"]
        assert m["candidate"]["loops"]["candidate"] > 0, (name, m["candidate"]["loops"])
        assert m["candidate"]["loops"]["stdlib"] == 0, (name, m["candidate"]["loops"])


def scenario_faults(tmp):
    proc, data = run(tmp, "--timeout-per-test", "3", FAKE_FAULTS=",".join([
        "LockTests.test_lock=hang", "LockTests.test_acquire=crash",
        "EventTests.test_repr=fail", "SemaphoreTests.test_repr=flaky"]))
    m = data["modules"]["test_locks"]
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert m["status"] == "crashed", m["status"]
    hang = test("test_locks.LockTests.test_lock", data)
    assert (hang["category"], hang["candidate"]) == ("regression", "timeout"), hang
    assert "most recent call first" in hang["detail"], hang["detail"]
    crash = test("test_locks.LockTests.test_acquire", data)
    assert (crash["category"], crash["candidate"]) == ("regression", "crash"), crash
    assert "SIGSEGV" in crash["detail"], crash["detail"]
    fail = test("test_locks.EventTests.test_repr", data)
    assert (fail["category"], fail["candidate"]) == ("regression", "error"), fail
    assert "injected failure" in fail["detail"]
    flaky = test("test_locks.SemaphoreTests.test_repr", data)
    assert flaky["category"] == "flaky", flaky
    # Every other test still ran: the worker was restarted after each death.
    assert m["counts"]["regressions"] == 3, m["counts"]
    assert m["candidate"]["attempts"] == 3, m["candidate"]["attempts"]
    # (a flaky test does not count as passing in the score)
    assert m["counts"]["candidate_pass"] == m["counts"]["scored"] - 4, m["counts"]


def scenario_module_budget(tmp):
    proc, data = run(tmp, "--timeout-per-test", "0", "--timeout-per-module", "8",
                     FAKE_FAULTS="LockTests.test_lock=hang")
    m = data["modules"]["test_locks"]
    assert proc.returncode == 1 and m["status"] == "timeout", (proc.returncode, m["status"])
    hang = test("test_locks.LockTests.test_lock", data)
    assert hang["candidate"] == "timeout" and "most recent call first" in hang["detail"], hang


def scenario_broken_plumbing(tmp):
    proc, data = run(tmp, FAKE_POLICY="stdlib")
    m = data["modules"]["test_locks"]
    assert proc.returncode == 1 and m["status"] == "fatal", (proc.returncode, m["status"])
    assert "expected" in json.dumps(m["candidate"]["fixtures"]), m["candidate"]["fixtures"]


def scenario_expectations(tmp):
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir, exist_ok=True)
    for name, text in (("exclusions.py", DATA_EXCLUSIONS), ("expected_failures.py", DATA_EXPECTED)):
        with open(os.path.join(data_dir, name), "w") as f:
            f.write(text)
    proc, data = run(tmp, "--data-dir", data_dir, FAKE_FAULTS="EventTests.test_wait=fail")
    assert proc.returncode == 1, proc.stdout[-3000:]   # because of the unexpected pass
    assert test("test_locks.LockTests.test_repr", data)["category"] == "excluded"
    assert test("test_locks.LockTests.test_repr", data)["candidate"] is None  # not run
    assert test("test_locks.EventTests.test_wait", data)["category"] == "xfail"
    assert test("test_locks.EventTests.test_clear", data)["category"] == "unexpected-pass"
    # Delivering the group turns the expected failure into a regression.
    proc, data = run(tmp, "--data-dir", data_dir, "--delivered", "selftest",
                     FAKE_FAULTS="EventTests.test_wait=fail")
    assert test("test_locks.EventTests.test_wait", data)["category"] == "regression"
    assert test("test_locks.EventTests.test_clear", data)["category"] == "pass"


SCENARIOS = [scenario_clean, scenario_faults, scenario_module_budget,
             scenario_broken_plumbing, scenario_expectations]


def main():
    failed = 0
    with tempfile.TemporaryDirectory(prefix="conformance-selftest-") as tmp:
        os.makedirs(os.path.join(tmp, "fake", "ferroloop"))
        with open(os.path.join(tmp, "fake", "ferroloop", "__init__.py"), "w") as f:
            f.write(FAKE_FERROLOOP)
        for scenario in SCENARIOS:
            for leftover in ("flaked",):
                path = os.path.join(tmp, leftover)
                if os.path.exists(path):
                    os.unlink(path)
            try:
                scenario(tmp)
            except AssertionError as exc:
                failed += 1
                print(f"FAIL {scenario.__name__}: {str(exc)[:3000]}")
            else:
                print(f"ok   {scenario.__name__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
