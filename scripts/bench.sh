#!/usr/bin/env bash
# The benchmark suite: sets up .venv-bench (CPython 3.11) with the peer loops
# from PyPI and ferroloop built in release mode, builds the native load
# client, then runs benches/run.py (every loop side by side, round-robin,
# median of 5) and writes benches/results/latest.{md,svg,json}.
#
# Usage: scripts/bench.sh [benches/run.py options, e.g. --quick, --sections micro]
# The machine must be idle (the run refuses to start otherwise; --force).
source "$(dirname "$0")/_common.sh"
cd "$ROOT"

# The peers, pinned. rsloop publishes no Linux wheel (only an sdist that
# needs a Rust toolchain at install time), so it is tried wheel-only and
# left out when that fails.
PEERS=("uvloop==0.23.0" "rloop==0.5.0")
RSLOOP="rsloop==0.1.66"

venv="$ROOT/.venv-bench"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$(find_python 3.11)" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${PIP_TOOLS[@]}" "${PEERS[@]}" \
  --only-binary=:all: -r "$REAL_LIBS_REQUIREMENTS" >&2
loops="asyncio,uvloop,rloop"
if "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$RSLOOP" >/dev/null 2>&1; then
  loops="$loops,rsloop"
else
  echo "note: $RSLOOP has no wheel for this machine; it is left out of the run" >&2
fi
loops="$loops,ferroloop"
build_into "$venv" release
log "building the native load client (benches/loadgen)"
(cd benches/loadgen && CARGO_TARGET_DIR="$ROOT/target/loadgen" cargo build --release -q)
log "running the benchmarks"
exec "$venv/bin/python" benches/run.py --loops "$loops" "$@" </dev/null
