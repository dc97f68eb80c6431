"""``python -m ferroloop script.py [args...]``: run an unmodified asyncio
program on ferroloop.

The script runs as ``__main__`` with ``sys.argv`` set to the script and its
arguments, after ``ferroloop.install()``, so its ``asyncio.run()`` and
``asyncio.new_event_loop()`` create ferroloop loops. ``-m module`` runs a
module the same way.
"""

from __future__ import annotations

import os
import runpy
import sys

from ._policy import install

USAGE = """\
usage: python -m ferroloop script.py [args...]
       python -m ferroloop -m module [args...]
       python -m ferroloop ps PID
       python -m ferroloop pstree PID

Runs an asyncio program with ferroloop as its event loop.
ps/pstree list the tasks of a running ferroloop program started with
FERROLOOP_INSPECT=1 (name, coroutine, where it is suspended, what it
awaits, age); pstree shows which task awaits which.
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


if __name__ == "__main__":
    sys.exit(main())
