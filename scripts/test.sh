#!/usr/bin/env bash
# Sets up everything and runs the whole test suite:
#   1. Rust unit tests (cargo test)
#   2. the project's pytest suite, every test on both asyncio and ferroloop
#   3. the CPython conformance run (test.test_asyncio against ferroloop)
# for every supported CPython (3.10-3.13) found on the machine.
#
# Usage: scripts/test.sh [3.11 3.12 ...]   (default: all supported versions)
source "$(dirname "$0")/_common.sh"
cd "$ROOT"

versions=("$@")
[ ${#versions[@]} -eq 0 ] && read -r -a versions <<<"$SUPPORTED_PYTHON_VERSIONS"

failures=()
step() {
  local name="$1"
  shift
  if "$@"; then
    echo "PASS  $name" >>"$summary"
  else
    echo "FAIL  $name" >>"$summary"
    failures+=("$name")
  fi
}
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT

# For tests/test_real_libraries.py (asyncpg); without it those tests fail.
ensure_postgresql_server || echo "FAIL  PostgreSQL server install" >>"$summary"
# For tests/test_trace.py (the timeline checked in a headless browser).
ensure_chromium || echo "FAIL  chromium install" >>"$summary"

default_python="$(find_python "$DEFAULT_PYTHON_VERSION")"
log "Rust unit tests"
step "cargo test" env PYO3_PYTHON="$default_python" \
  LD_LIBRARY_PATH="$("$default_python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')" \
  CARGO_TARGET_DIR="$ROOT/target/cargo-test" timeout 900 cargo test -q

for version in "${versions[@]}"; do
  if ! find_python "$version" >/dev/null; then
    echo "SKIP  Python $version (not installed)" >>"$summary"
    continue
  fi
  venv="$(ensure_venv "$version")"
  if ! build_into "$venv" debug; then
    echo "FAIL  build for Python $version" >>"$summary"
    failures+=("build $version")
    continue
  fi
  log "pytest on Python $version"
  step "pytest (Python $version)" env FERROLOOP_REQUIRED=1 \
    timeout 1200 "$venv/bin/python" -m pytest tests -q -p no:cacheprovider --ignore=tests/conformance
  log "CPython conformance on Python $version"
  step "conformance (Python $version)" \
    timeout 2400 "$venv/bin/python" tests/conformance/run.py --loop ferroloop
done

log "summary"
cat "$summary"
echo "total time: $((SECONDS / 60)) min $((SECONDS % 60)) s"
[ ${#failures[@]} -eq 0 ]
