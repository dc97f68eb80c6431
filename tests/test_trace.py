"""``python -m ferroloop trace``: the timeline of a real run, its Chrome
trace JSON, and the HTML checked in a real headless browser."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("ferroloop")

DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "10_trace_demo.py")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    html_path, json_path = out / "t.html", out / "t.json"
    run = subprocess.run([sys.executable, "-m", "ferroloop", "trace", "-o", str(html_path),
                          "--json", str(json_path), DEMO],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return html_path, json.loads(json_path.read_text())


def lanes(trace):
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}


def events_on(trace, lane_name):
    tid = next(t for t, n in lanes(trace).items() if n == lane_name)
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == tid]


def test_one_lane_per_task_plus_the_loop(traced):
    _, trace = traced
    assert sorted(lanes(traced[1]).values()) == sorted([
        "event loop", "Task-1 (main)", "cook burger (cook)", "cook fries (cook)",
        "cook pasta (cook)", "fetch (fetch_in_thread)", "careless (careless)",
    ])  # fmt: skip


def test_waits_are_labelled_by_what_ended_them(traced):
    _, trace = traced
    for name, seconds in (("burger", 0.3), ("fries", 0.1), ("pasta", 0.4)):
        waits = [e for e in events_on(trace, f"cook {name} (cook)") if e["name"].startswith("wait")]
        assert [w["name"] for w in waits] == ["wait (timer)"]
        assert waits[0]["dur"] >= seconds * 1e6 * 0.95
    fetch = [e["name"] for e in events_on(trace, "fetch (fetch_in_thread)")
             if e["name"].startswith("wait")]  # fmt: skip
    assert fetch == ["wait (thread)"]


def test_the_blocking_step_is_marked_and_delays_the_others(traced):
    _, trace = traced
    blocking = [e for e in trace["traceEvents"] if e["name"].startswith("BLOCKING")]
    assert len(blocking) == 1
    careless = events_on(trace, "careless (careless)")
    assert blocking[0] in careless
    assert blocking[0]["dur"] >= 0.09e6
    # fries wanted 0.1 s but could only run after the 0.05 s + 0.1 s block.
    fries_wait = next(e for e in events_on(trace, "cook fries (cook)") if e["name"] == "wait (timer)")
    assert fries_wait["ts"] + fries_wait["dur"] >= blocking[0]["ts"] + blocking[0]["dur"] - 1e3


def test_the_html_renders_in_headless_chromium(traced):
    html_path, _ = traced
    text = html_path.read_text()
    assert text.count('class="run blocked"') == 1
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("FERROLOOP_REQUIRED") == "1":
            pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          html_path.as_uri()],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert 'data-rendered="ok"' in dom.stdout, dom.stderr[-2000:]
    assert "6 tasks, " in dom.stdout and "1 blocking the loop" in dom.stdout
