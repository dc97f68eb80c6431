#!/usr/bin/env bash
# Builds a release wheel into dist/ for one CPython version (default 3.11).
# Usage: scripts/wheel.sh [3.X]
source "$(dirname "$0")/_common.sh"
cd "$ROOT"
version="${1:-$DEFAULT_PYTHON_VERSION}"
venv="$(ensure_venv "$version")"
log "building a release wheel for Python $version"
CARGO_TARGET_DIR="$ROOT/target/py$version-release" \
  "$venv/bin/maturin" build --release --interpreter "$venv/bin/python" --out "$ROOT/dist"
ls -1 "$ROOT"/dist/*.whl
