#!/usr/bin/env bash
# The showcase: sets up .venv (CPython 3.11), builds ferroloop in release
# mode into it, then runs every program in examples/ twice -- on asyncio's
# own loop and, unmodified, on ferroloop (`python -m ferroloop x.py`) -- and
# prints their output and a side-by-side table of results and timings.
#
# Usage: scripts/showcase.sh [showcase.py options, e.g. --repeat 3 --quiet]
source "$(dirname "$0")/_common.sh"
cd "$ROOT"

# ensure_venv prints the venv's path last; anything pip says comes before it.
venv="$(ensure_venv 3.11 | tail -n 1)"
build_into "$venv" release
log "running examples/ on asyncio and on ferroloop"
exec "$venv/bin/python" examples/showcase.py "$@" </dev/null
