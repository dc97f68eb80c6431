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

# The peers, pinned. rsloop publishes no Linux wheel, only an sdist whose
# rust-toolchain.toml names a nightly toolchain; see install_rsloop.
PEERS=("uvloop==0.23.0" "rloop==0.5.0")
RSLOOP_VERSION="0.1.66"

# Installs rsloop into the bench venv: its wheel if there is one, else its
# sdist built with the toolchain the sdist pins (fetched by rustup, which
# does not install a pinned toolchain on its own). Fails when neither works.
install_rsloop() {
  local pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('rsloop') == '$RSLOOP_VERSION'" \
    2>/dev/null && return 0
  "${pip[@]}" --only-binary=:all: "rsloop==$RSLOOP_VERSION" 2>/dev/null && return 0
  command -v rustup >/dev/null || return 1
  local dir url toolchain
  dir="$(mktemp -d)"
  url="$(curl -fsS https://pypi.org/simple/rsloop/ |
    grep -o "https://[^\"#]*/rsloop-$RSLOOP_VERSION\.tar\.gz" | head -n 1)" || return 1
  curl -fsSL "$url" -o "$dir/rsloop.tar.gz" &&
    tar -xzf "$dir/rsloop.tar.gz" -C "$dir" || return 1
  toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$dir"/rsloop-*/rust-toolchain.toml)"
  if [ -n "$toolchain" ]; then
    log "installing Rust $toolchain to build rsloop from its sdist"
    rustup toolchain install "$toolchain" --profile minimal >&2 || return 1
  fi
  log "building rsloop $RSLOOP_VERSION from its sdist"
  "${pip[@]}" "$dir/rsloop.tar.gz" >&2 || return 1
  rm -rf "$dir"
}

venv="$ROOT/.venv-bench"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$(find_python 3.11)" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${PIP_TOOLS[@]}" "${PEERS[@]}" \
  --only-binary=:all: -r "$REAL_LIBS_REQUIREMENTS" >&2
loops="asyncio,uvloop,rloop"
if install_rsloop; then
  loops="$loops,rsloop"
else
  echo "note: rsloop $RSLOOP_VERSION did not install (no wheel, and its sdist did not build); it is left out of the run" >&2
fi
loops="$loops,ferroloop"
build_into "$venv" release
log "building the native load client (benches/loadgen)"
(cd benches/loadgen && CARGO_TARGET_DIR="$ROOT/target/loadgen" cargo build --release -q)
log "running the benchmarks"
exec "$venv/bin/python" benches/run.py --loops "$loops" "$@" </dev/null
