"""``python -m ferroloop trace script.py -o trace.html``: a timeline of a
real run, one lane per task.

The native loop calls the recorder after every callback and every poll
(only while tracing).  A task's step is a "run" segment on its lane; the
gap until its next step is a "wait", labelled by what ended it: a timer, I/O
(a reader/writer or transport callback), another thread (executor results,
call_soon_threadsafe) or some other callback.  A step longer than the block
threshold is drawn red: the loop was blocked.  The top lane is the loop
itself: time in the poller (idle) and time running callbacks.

The same events export as Chrome trace JSON (``--json``), which Perfetto
and chrome://tracing open.
"""

from __future__ import annotations

import asyncio
import html

from ._core import TimerHandle

BLOCK_THRESHOLD = 0.05  # a step longer than this is drawn as blocking
MAX_EVENTS = 2_000_000

_active = None


def active():
    return _active


def start(block_threshold=BLOCK_THRESHOLD):
    """Record every ferroloop loop created from now on."""
    global _active
    _active = Recorder(block_threshold)
    return _active


def _kind_of(handle):
    if isinstance(handle, TimerHandle):
        return "timer"
    text = repr(handle)
    if "_read_ready" in text or "_write_ready" in text or "_accept" in text:
        return "I/O"
    if "_call_set_state" in text or "_chain_future" in text or "threadsafe" in text:
        return "thread"
    return "callback"


class Recorder:
    def __init__(self, block_threshold):
        self.block_threshold = block_threshold
        self.origin = None
        self.lanes = {}  # task id -> lane index (0 is the loop)
        self.names = ["event loop"]
        self.runs = []  # (lane, start, end, label)
        self.waits = []  # (lane, start, end, kind, what)
        self.polls = []  # (start, end)
        self.suspended = {}  # lane -> (task, since, future repr)
        self.count = 0

    def attach(self, loop):
        loop._set_tracer(self.on_event)

    def _lane(self, task):
        lane = self.lanes.get(id(task))
        if lane is None:
            lane = self.lanes[id(task)] = len(self.names)
            self.names.append(task.get_name() + " (" + getattr(
                task.get_coro(), "__qualname__", "?") + ")")  # fmt: skip
        return lane

    def on_event(self, handle, start, end):
        if self.origin is None:
            self.origin = start
        self.count += 1
        if self.count > MAX_EVENTS:
            return
        if handle is None:
            self.polls.append((start, end))
            return
        owner = getattr(getattr(handle, "_callback", None), "__self__", None)
        if isinstance(owner, asyncio.Task):
            lane = self._lane(owner)
            waited = self.suspended.pop(lane, None)
            if waited is not None:
                _, since, what, kind = waited
                self.waits.append((lane, since, start, kind or "callback", what))
            self.runs.append((lane, start, end, owner.get_name()))
            waiter = getattr(owner, "_fut_waiter", None)
            if not owner.done():
                self.suspended[lane] = [owner, end, repr(waiter)[:160] if waiter else "", None]
            return
        # A plain callback: it may be what resolves a suspended task's future.
        kind = _kind_of(handle)
        for state in self.suspended.values():
            task = state[0]
            waiter = getattr(task, "_fut_waiter", None)
            if state[3] is None and (waiter is None or waiter.done()):
                state[3] = kind
        self.runs.append((0, start, end, repr(handle)[:160]))

    # ---- output ------------------------------------------------------------

    def chrome_trace(self):
        events = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": n}}
                  for i, n in enumerate(self.names)]  # fmt: skip
        t0 = self.origin or 0.0
        for start, end in self.polls:
            events.append({"name": "poll (idle)", "ph": "X", "pid": 1, "tid": 0,
                           "ts": (start - t0) * 1e6, "dur": (end - start) * 1e6})  # fmt: skip
        for lane, start, end, label in self.runs:
            blocked = end - start >= self.block_threshold
            events.append({"name": ("BLOCKING " if blocked else "") + ("run" if lane else label),
                           "ph": "X", "pid": 1, "tid": lane, "ts": (start - t0) * 1e6,
                           "dur": (end - start) * 1e6, "args": {"what": label}})  # fmt: skip
        for lane, start, end, kind, what in self.waits:
            events.append({"name": f"wait ({kind})", "ph": "X", "pid": 1, "tid": lane,
                           "ts": (start - t0) * 1e6, "dur": (end - start) * 1e6,
                           "args": {"awaiting": what}})  # fmt: skip
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def html(self, title="ferroloop trace"):
        return _render_html(self, title)


_COLORS = {"run": "#1c7ed6", "blocked": "#e03131", "timer": "#f59f00", "I/O": "#7048e8",
           "thread": "#0ca678", "callback": "#adb5bd", "poll": "#d3f9d8"}  # fmt: skip
LANE_H, LEFT, WIDTH = 26, 260, 1100


def _render_html(rec, title):
    t0 = rec.origin or 0.0
    ends = [e for _, _, e, _ in rec.runs] + [e for _, e in rec.polls] + [0.0]
    total = max(max(ends) - t0, 1e-6)

    def x(t):
        return LEFT + (t - t0) / total * WIDTH

    def w(a, b):
        return max((b - a) / total * WIDTH, 0.8)

    shapes = []
    for start, end in rec.polls:
        shapes.append(f'<rect class="poll" x="{x(start):.1f}" y="4" width="{w(start, end):.1f}" '
                      f'height="{LANE_H - 8}" fill="{_COLORS["poll"]}"><title>poll: idle '
                      f'{(end - start) * 1e3:.2f} ms</title></rect>')  # fmt: skip
    for lane, start, end, kind, what in rec.waits:
        y = lane * LANE_H
        shapes.append(f'<rect class="wait" x="{x(start):.1f}" y="{y + 10}" width="{w(start, end):.1f}" '
                      f'height="6" fill="{_COLORS.get(kind, "#adb5bd")}"><title>waiting ({kind}) '
                      f'{(end - start) * 1e3:.2f} ms: {html.escape(what)}</title></rect>')  # fmt: skip
    for lane, start, end, label in rec.runs:
        y = lane * LANE_H
        blocked = end - start >= rec.block_threshold
        color = _COLORS["blocked" if blocked else "run"]
        cls = "run blocked" if blocked else "run"
        shapes.append(f'<rect class="{cls}" x="{x(start):.1f}" y="{y + 4}" width="{w(start, end):.1f}" '
                      f'height="{LANE_H - 8}" fill="{color}"><title>{"BLOCKED the loop: " if blocked else ""}'
                      f'ran {(end - start) * 1e3:.2f} ms: {html.escape(label)}</title></rect>')  # fmt: skip
    labels = "".join(f'<text class="lane" x="{LEFT - 8}" y="{i * LANE_H + LANE_H / 2 + 4}" '
                     f'text-anchor="end">{html.escape(name)}</text>'
                     for i, name in enumerate(rec.names))  # fmt: skip
    ticks = []
    for i in range(11):
        t = total * i / 10
        ticks.append(f'<line x1="{LEFT + WIDTH * i / 10:.1f}" y1="0" x2="{LEFT + WIDTH * i / 10:.1f}" '
                     f'y2="{len(rec.names) * LANE_H}" stroke="#eee"/>'
                     f'<text x="{LEFT + WIDTH * i / 10:.1f}" y="{len(rec.names) * LANE_H + 14}" '
                     f'text-anchor="middle">{t * 1e3:.0f} ms</text>')  # fmt: skip
    height = len(rec.names) * LANE_H + 24
    legend = " ".join(f'<span style="background:{c};padding:0 8px;margin-right:4px">&nbsp;</span>{k}'
                      for k, c in (("running", _COLORS["run"]), ("blocking the loop", _COLORS["blocked"]),
                                   ("waiting: timer", _COLORS["timer"]), ("waiting: I/O", _COLORS["I/O"]),
                                   ("waiting: thread", _COLORS["thread"]),
                                   ("waiting: other", _COLORS["callback"]),
                                   ("loop idle in poll", _COLORS["poll"])))  # fmt: skip
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;font-size:12px;margin:16px}} svg text{{font-size:11px}}
#summary{{margin:8px 0;font-weight:bold}}</style></head>
<body>
<h2>{html.escape(title)}</h2>
<div>{legend}</div>
<div id="summary">rendering...</div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 40}" height="{height}">
{''.join(ticks)}{labels}{''.join(shapes)}
</svg>
<script>
(function () {{
  var svg = document.getElementById("timeline");
  var lanes = svg.querySelectorAll("text.lane").length - 1;
  var runs = svg.querySelectorAll("rect.run").length;
  var blocked = svg.querySelectorAll("rect.blocked").length;
  document.getElementById("summary").textContent =
    lanes + " tasks, " + runs + " steps, " + blocked + " blocking the loop, " +
    "{total * 1e3:.0f} ms in all. Hover a bar for details.";
  document.body.dataset.rendered = "ok";
}})();
</script>
</body></html>
"""
