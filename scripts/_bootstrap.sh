# Shared set-up for scripts/demo and scripts/test: sourced, not run.
# Creates .venv next to the project and installs bmsgate into it (editable) with the given extras.
# Debian packages are installed with apt-get only when something is missing.
set -euo pipefail

BMSGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BMSGATE_VENV:-$BMSGATE_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "bmsgate: need root (or sudo) to run: $*" >&2; return 1; fi
}

_apt_updated=0
apt_install_missing() {
    # Usage: apt_install_missing PACKAGE:COMMAND ...  (installs PACKAGE when COMMAND is not found)
    local wanted=()
    for pair in "$@"; do
        local package="${pair%%:*}" command="${pair#*:}"
        if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then wanted+=("$package"); fi
    done
    [ "${#wanted[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "bmsgate: please install ${wanted[*]} (no apt-get on this system)" >&2; return 1
    fi
    echo "bmsgate: installing Debian packages: ${wanted[*]}" >&2
    # Another apt-get or unattended-upgrades may hold the dpkg lock for a while (right after boot,
    # typically): wait for it, bounded, instead of failing at once.
    local lock_wait="${BMSGATE_APT_LOCK_TIMEOUT:-300}"
    local lock=(-o "DPkg::Lock::Timeout=$lock_wait")
    echo "bmsgate: (if another package manager is running, apt-get waits up to ${lock_wait} s for its lock)" >&2
    if [ "$_apt_updated" -eq 0 ]; then _as_root apt-get "${lock[@]}" update -qq; _apt_updated=1; fi
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends \
        "${wanted[@]}" >/dev/null
}

apt_install_postgresql() {
    # The server binaries (initdb, postgres), not only the psql client: tests start throwaway clusters.
    if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then return 0; fi
    apt_install_missing postgresql:__none__
}

ensure_venv() {
    # Usage: ensure_venv EXTRAS   e.g. ensure_venv "dev"
    local extras="$1"
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "bmsgate: Python 3.11 or newer is required (found: $("$PYTHON" --version 2>&1))" >&2; return 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            local version; version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install_missing "python3-venv:__none__" "python${version}-venv:__none__" || true
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    local stamp="$VENV/.bmsgate-installed-$extras"
    if [ ! -f "$stamp" ] || [ "$BMSGATE_ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "bmsgate: installing Python packages into $VENV (extras: $extras)" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$BMSGATE_ROOT[$extras]"
        touch "$stamp"
    fi
}

ensure_web_assets() {
    # The fleet dashboard's third-party front-end files (Leaflet, uPlot, world-atlas, topojson-client) come from
    # the npm registry, pinned by web/package-lock.json, into web/node_modules (never committed). `npm ci` runs
    # when node_modules is missing or the lockfile is newer than the last install.
    local web="$BMSGATE_ROOT/web" stamp="$BMSGATE_ROOT/web/node_modules/.bmsgate-installed"
    [ -f "$web/package-lock.json" ] || return 0
    if [ -f "$stamp" ] && [ ! "$web/package-lock.json" -nt "$stamp" ]; then return 0; fi
    apt_install_missing npm:npm
    echo "bmsgate: installing the dashboard's front-end files into $web/node_modules (npm ci)" >&2
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$stamp"
}
