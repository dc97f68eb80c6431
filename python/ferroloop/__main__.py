"""``python -m ferroloop script.py [args...]``: run an unmodified asyncio
program on ferroloop.

The script runs as ``__main__`` with ``sys.argv`` set to the script and its
arguments, after ``ferroloop.install()``, so its ``asyncio.run()`` and
``asyncio.new_event_loop()`` create ferroloop loops. ``-m module`` runs a
module the same way.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

from ._policy import install

USAGE = """\
usage: python -m ferroloop script.py [args...]
       python -m ferroloop -m module [args...]
       python -m ferroloop ps PID
       python -m ferroloop pstree PID
       python -m ferroloop trace [-o trace.html] [--json trace.json] script.py [args...]

Runs an asyncio program with ferroloop as its event loop.
ps/pstree list the tasks of a running ferroloop program started with
FERROLOOP_INSPECT=1 (name, coroutine, where it is suspended, what it
awaits, age); pstree shows which task awaits which.
trace runs the script and writes a timeline of its tasks (HTML; --json
also writes Chrome trace JSON for Perfetto).
Set FERROLOOP_SLOW_CALLBACK=<seconds> to report callbacks and task steps
that block the loop longer than that."""


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 0 if args else 2
    if args[0] in ("ps", "pstree"):
        if len(args) != 2 or not args[1].isdigit():
            print(USAGE, file=sys.stderr)
            return 2
        from ._ps import main as ps_main

        try:
            return ps_main(args[0], int(args[1]))
        except (RuntimeError, OSError) as exc:
            print(f"ferroloop {args[0]}: {exc}", file=sys.stderr)
            return 1
    if args[0] == "trace":
        return _trace_main(args[1:])
    install()
    if args[0] == "-m":
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    script = args[0]
    sys.argv = args
    # As `python script.py` does: imports resolve next to the script.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    return 0


def _trace_main(args):
    from . import _trace

    html_out, json_out = "trace.html", None
    while args and args[0] in ("-o", "--json"):
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        if args[0] == "-o":
            html_out = args[1]
        else:
            json_out = args[1]
        args = args[2:]
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    recorder = _trace.start()
    try:
        return main(args)
    finally:
        script = args[1] if args[0] == "-m" and len(args) > 1 else args[0]
        with open(html_out, "w") as f:
            f.write(recorder.html(f"ferroloop trace of {script}"))
        if json_out:
            with open(json_out, "w") as f:
                json.dump(recorder.chrome_trace(), f)
        print(f"ferroloop trace: wrote {html_out}" + (f" and {json_out}" if json_out else ""),
              file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
