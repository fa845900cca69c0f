#!/bin/sh
# One-time set-up of bmsgate's A/B software layout on a gateway (Raspberry Pi OS / Debian), as root:
#
#   sudo sh deploy/install.sh WHEEL [EXTRAS]      e.g. bmsgate-0.1.0-py3-none-any.whl "ble,modbus,fleet"
#
# Creates $BMSGATE_ROOT (default /opt/bmsgate) with venvs/a holding bmsgate and its dependencies (from the
# package index, or from a local wheelhouse: PIP_FIND_LINKS=/media/usb/wheels PIP_NO_INDEX=1), the symlink
# current -> venvs/a, the start guard in bin/, the user bmsgate owning it all, and the systemd unit.
# venvs/b is made by the first software update (a copy of the running one). Re-running it is harmless for
# the layout; it reinstalls venvs/a only while venvs/a is what runs.
set -eu
wheel="${1:?usage: install.sh WHEEL [EXTRAS]}"
extras="${2:-ble,serial,mqtt,modbus,fleet}"
root="${BMSGATE_ROOT:-/opt/bmsgate}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
user="${BMSGATE_USER:-bmsgate}"

mkdir -p "$root/venvs" "$root/bin"
active="venvs/a"
if [ -L "$root/current" ]; then
    active="$(readlink "$root/current")"
fi
if [ "$active" = "venvs/a" ]; then
    [ -x "$root/venvs/a/bin/python" ] || "$python" -m venv "$root/venvs/a"
    "$root/venvs/a/bin/python" -m pip install --disable-pip-version-check "$wheel[$extras]"
    "$root/venvs/a/bin/python" -m pip check
fi
[ -L "$root/current" ] || ln -s venvs/a "$root/current"
install -m 0755 "$here/bmsgate-guard" "$root/bin/bmsgate-guard"
if [ "${BMSGATE_NO_SYSTEM:-0}" != 1 ]; then
    id "$user" >/dev/null 2>&1 || useradd --system --home-dir /var/lib/bmsgate --shell /usr/sbin/nologin "$user"
    chown -R "$user:$user" "$root"
    install -m 0644 "$here/bmsgate.service" /etc/systemd/system/bmsgate.service
    systemctl daemon-reload
    echo "bmsgate: installed in $root; enable with: systemctl enable --now bmsgate"
fi
