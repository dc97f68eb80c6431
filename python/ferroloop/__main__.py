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

Runs an asyncio program with ferroloop as its event loop."""


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 0 if args else 2
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
