# Shared helpers for the project scripts (sourced, not run).
#
# Everything is installed into local virtual environments next to the
# checkout: .venv (CPython 3.11, the default) and .venv-3.X for the other
# supported versions. Nothing outside the checkout is modified.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_PYTHON_VERSION=3.11
SUPPORTED_PYTHON_VERSIONS="3.10 3.11 3.12 3.13"

# Tools the scripts install into each venv; pinned so a run is repeatable.
PIP_TOOLS=(
  "maturin==1.16.0"
  "pytest==9.2.0"
  "pytest-timeout==2.4.0"
)

# Real libraries driven by tests/test_real_libraries.py (aiohttp, uvicorn,
# asyncpg and their dependencies), pinned there; wheels only.
REAL_LIBS_REQUIREMENTS="$ROOT/tests/requirements-real.txt"

log() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# Prints the path of a CPython X.Y interpreter, or fails.
find_python() {
  local version="$1" candidate
  for candidate in \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version" \
    "$(command -v "python$version" 2>/dev/null || true)"; do
    if [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

venv_dir() {
  if [ "$1" = "$DEFAULT_PYTHON_VERSION" ]; then
    echo "$ROOT/.venv"
  else
    echo "$ROOT/.venv-$1"
  fi
}

# Creates (once) the venv for Python X.Y with the build and test tools.
ensure_venv() {
  local version="$1" python venv
  python="$(find_python "$version")" || { echo "CPython $version not found" >&2; return 1; }
  venv="$(venv_dir "$version")"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $python"
    "$python" -m venv "$venv"
  fi
  if ! "$venv/bin/python" -m pip show -q maturin pytest pytest-timeout >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PIP_TOOLS[@]}"
  fi
  # A no-op (no download) once the pinned versions are installed. On failure
  # the run goes on: tests/test_real_libraries.py then fails, naming the
  # missing library.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --only-binary=:all: -r "$REAL_LIBS_REQUIREMENTS" >&2 \
    || echo "WARNING: could not install $REAL_LIBS_REQUIREMENTS into $venv" >&2
  echo "$venv"
}

# apt_install PACKAGE WHAT: installs a Debian package as root, without
# stdin, refreshing the package lists only if the first try fails (a fresh
# machine may have none). Not root: says what to run and fails.
apt_install() {
  local package="$1" what="$2"
  if [ "$(id -u)" -ne 0 ]; then
    echo "$what missing; run: apt-get install $package" >&2
    return 1
  fi
  log "installing $what (Debian package $package)"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -y)
  timeout 600 "${apt[@]}" install "$package" </dev/null >&2 \
    || { timeout 300 "${apt[@]}" update </dev/null >&2 \
         && timeout 600 "${apt[@]}" install "$package" </dev/null >&2; }
}

# The asyncpg tests start a throwaway PostgreSQL server (initdb + pg_ctl from
# /usr/lib/postgresql/*/bin). Installs Debian's "postgresql" when missing.
ensure_postgresql_server() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  apt_install postgresql "the PostgreSQL server"
}

# tests/test_trace.py opens the trace HTML in a real headless browser.
# Installs Debian's "chromium" when missing.
ensure_chromium() {
  command -v chromium >/dev/null && return 0
  apt_install chromium "chromium, for the trace test"
}

# Builds ferroloop into the venv (editable). $2: "release" or "debug".
build_into() {
  local venv="$1" profile="${2:-debug}" version flags=()
  version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ "$profile" = release ] && flags+=(--release)
  log "building ferroloop ($profile) for Python $version"
  # One target dir per interpreter: switching interpreters otherwise
  # rebuilds PyO3 from scratch every time.
  (cd "$ROOT" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
    CARGO_TARGET_DIR="$ROOT/target/py$version-$profile" \
    "$venv/bin/maturin" develop -q "${flags[@]}")
}
