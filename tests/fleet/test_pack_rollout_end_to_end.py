"""Issue 17, the whole path for real: offline keys → signed packs on `fleet serve` → a staged rollout → three
`bmsgate run` gateway processes that verify through TUF, download over HTTPS, switch live, health-check, and
commit or revert on their own.

1. A pack that changes the Modbus register map (the SoC register in 0.1 %) reaches the canary first; Debian's
   `mbpoll` reads the new value from the canary's Modbus server; then the other two follow.
2. A broken pack (a JBD edit whose pack voltage is ten times the cells' sum: it decodes, but is implausible)
   is reverted by the canary on its own; the rollout stops at its error threshold and the other gateways
   never see it: their desired generation stays where it was and their Modbus servers keep the good map.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.app.cli.main import main
from bmsgate.catalog import BUILTIN_DIR
from bmsgate.fleet.server.auth import Role
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.mqtt.broker import find_mosquitto, free_port

MBPOLL = shutil.which("mbpoll")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
    pytest.mark.skipif(MBPOLL is None, reason="needs Debian's mbpoll (CI installs it)"),
]

GATEWAYS = ("gw-a", "gw-b", "gw-c")
SOC_REGISTER = 0x0100
INITIAL_SOC = 76


def _percent(register: int | None) -> bool:
    """The built-in map's SoC register (whole percent: the simulated pack drifts around 76)."""
    return register is not None and 60 <= register <= 90


def _tenths(register: int | None) -> bool:
    """The pack's map: the same SoC in 0.1 %."""
    return register is not None and 600 <= register <= 900


def _cli(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


async def _until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout:.0f} s")
        await asyncio.sleep(0.3)


def _pack_source(root: Path, name: str, files: dict[str, str]) -> Path:
    source = root / f"{name}-src"
    for relative, text in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text, encoding="utf-8")
    (source / "pack.yaml").write_text(f'name: {name}\nversion: "1.0"\nhardware: ["*"]\n', encoding="utf-8")
    return source


def _site_map() -> str:
    """The built-in generic map with the SoC register in 0.1 % (76 % reads 760)."""
    text = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
    old = "{name: soc, address: 0x0100, source: soc, type: u16, scale: 1, min: 0, max: 100,"
    assert old in text
    return text.replace(old, "{name: soc, address: 0x0100, source: soc, type: u16, scale: 0.1, min: 0, max: 100,")


def _broken_jbd() -> str:
    text = (BUILTIN_DIR / "protocols" / "jbd.yaml").read_text(encoding="utf-8")
    old = "{target: voltage, at: 0, type: u16, scale: 0.01}"
    assert old in text
    return text.replace(old, "{target: voltage, at: 0, type: u16, scale: 0.1}")


def _ceremony(tmp: Path, keys: Path, data: Path) -> dict[str, Path]:
    """Offline keys, two packs built and signed, the server's repository initialised and published."""
    artifacts = {
        "site-maps": _pack_source(tmp, "site-maps", {"modbus/generic.yaml": _site_map()}),
        "jbd-fix": _pack_source(tmp, "jbd-fix", {"protocols/jbd.yaml": _broken_jbd()}),
    }
    built = {}
    for name, source in artifacts.items():
        built[name] = tmp / f"{name}-1.0.pack.json"
        assert _cli("pack", "build", source, "--out", built[name]) == 0
    assert _cli("pack", "keygen", "--keys", keys) == 0
    assert (
        _cli("fleet", "pack", "init", "--root", keys / "root.json", "--online-keys", keys / "online", "--data", data)
        == 0
    )
    assert _cli("pack", "sign", *built.values(), "--keys", keys, "--out", tmp / "targets.json") == 0
    assert _cli("fleet", "pack", "publish", "--targets", tmp / "targets.json", *built.values(), "--data", data) == 0
    return built


def _target(path: Path, name: str) -> dict[str, Any]:
    content = path.read_bytes()
    return {
        "pack": name,
        "version": "1.0",
        "target": f"packs/{path.name}",
        "length": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def _gateway_config(directory: Path, credentials: Path, modbus_port: int) -> Path:
    config = {
        "name": directory.name,
        "state_dir": str(directory / "state"),
        "batteries": [
            {
                "id": "house",
                "protocol": "jbd",
                "poll_interval": 0.2,
                "stale_after": 5.0,
                "transport": {"type": "simulator", "cells": 16, "initial_soc": INITIAL_SOC, "seed": 3},
            }
        ],
        "inverter": {"refresh_interval": 0.1},
        "outputs": {
            "console": {"enabled": False},
            "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": modbus_port},
            "fleet": {
                "credentials": str(credentials),
                "interval": 1.0,
                "reconnect_max": 1.0,
                "updates": {
                    "health_polls": 10,
                    "health_min_duration": 2.0,
                    "health_timeout": 60.0,
                    "precondition_interval": 0.5,
                },
            },
        },
    }
    path = directory / "gateway.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def _enroll(tmp: Path, data: Path) -> None:
    for gateway in GATEWAYS:
        (tmp / gateway).mkdir()
        assert _cli("fleet", "enroll", gateway, "--data", data, "--out", tmp / gateway / "credentials.json") == 0


@contextlib.contextmanager
def _gateways(tmp: Path) -> Iterator[dict[str, int]]:
    """Start one `bmsgate run` process per enrolled gateway; yields each one's Modbus port."""
    ports: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for gateway in GATEWAYS:
            directory = tmp / gateway
            credentials = directory / "credentials.json"
            ports[gateway] = free_port()
            config = _gateway_config(directory, credentials, ports[gateway])
            with (directory / "gateway.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bmsgate", "run", "-c", str(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                    )
                )
        yield ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _mbpoll_soc(port: int) -> int | None:
    """The SoC register as Debian's mbpoll reads it (None: no answer yet)."""
    assert MBPOLL is not None
    process = await asyncio.create_subprocess_exec(
        MBPOLL, "-0", "-1", "-t", "4", "-m", "tcp", "-p", str(port), "-a", "1", "-r", str(SOC_REGISTER), "-c", "1",
        "127.0.0.1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    out, _err = await asyncio.wait_for(process.communicate(), 10)
    found = re.search(rf"^\[{SOC_REGISTER}\]:\s+(\d+)", out.decode(), re.MULTILINE)
    return int(found[1]) if process.returncode == 0 and found else None


@contextlib.asynccontextmanager
async def _fleet(tmp: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, int], dict[str, Path]]]:
    keys, data = tmp / "keys", tmp / "data"
    built = await asyncio.to_thread(_ceremony, tmp, keys, data)
    settings = FleetServerSettings(
        data_dir=data,
        http_port=0,
        gateway_port=free_port(),
        cert_port=None,
        public_host="localhost",
        gateway_host="127.0.0.1",
        artifacts_port=free_port(),
    )
    async with FleetServer(settings) as running:
        token = running.admin_token or running.data.tokens.create(Role.ADMIN, "e2e")
        await asyncio.to_thread(_enroll, tmp, data)
        with _gateways(tmp) as ports:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=15) as client:
                yield client, ports, built


async def _rollout(client: httpx.AsyncClient, name: str, packs: list[dict[str, Any]]) -> str:
    body = {
        "name": name,
        "target": {"packs": packs},
        "selection": {"gateways": list(GATEWAYS)},
        # A canary of one, then the rest; the first failure stops it.
        "options": {"groups": [{"percent": 1, "at_least": 1, "at_most": 1}], "jitter_s": 0, "success_threshold": 1.0},
    }
    created = await client.post("/api/v1/rollouts", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _shown(client: httpx.AsyncClient, rollout_id: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/rollouts/{rollout_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_staged_rollout_reaches_the_canary_first_and_a_broken_pack_stops_at_it(tmp_path: Path) -> None:
    async with _fleet(tmp_path) as (client, ports, built):

        async def all_online() -> bool:
            rows = (await client.get("/api/v1/gateways")).json()["gateways"]
            online = {row["id"] for row in rows if row["online"] and row["batteries"]}
            return online >= set(GATEWAYS)

        await _until(all_online, what="three gateways online with their battery")
        for port in ports.values():
            soc = await _until(functools.partial(_mbpoll_soc, port), what=f"Modbus on port {port}")
            assert _percent(soc), soc

        # 1. The register-map pack: the canary first, read back by mbpoll, then the rest.
        site_maps = _target(built["site-maps"], "site-maps")
        good = await _rollout(client, "site maps 1.0", [site_maps])

        async def canary_committed() -> str | None:
            shown = await _shown(client, good)
            committed = [m["gateway"] for m in shown["members"] if m["group"] == 0 and m["phase"] == "committed"]
            return committed[0] if committed else None

        canary = await _until(canary_committed, timeout=90, what="the canary committed")
        assert _tenths(await _mbpoll_soc(ports[canary])), "the canary serves the new register map"

        async def completed() -> dict[str, Any] | None:
            shown = await _shown(client, good)
            return shown if shown["state"] in ("completed", "stopped") else None

        shown = await _until(completed, timeout=120, what="the first rollout finished")
        assert (shown["state"], shown["succeeded"], shown["failed"]) == ("completed", 3, 0), shown
        for gateway in GATEWAYS:
            assert _tenths(await _mbpoll_soc(ports[gateway])), gateway
        generations = {m["gateway"]: m["generation"] for m in shown["members"]}

        # 2. The broken pack (with the good one: a desired state is the whole set) stops at its canary.
        broken = await _rollout(client, "jbd fix 1.0", [site_maps, _target(built["jbd-fix"], "jbd-fix")])

        async def stopped() -> dict[str, Any] | None:
            shown = await _shown(client, broken)
            return shown if shown["state"] in ("stopped", "completed") else None

        shown = await _until(stopped, timeout=120, what="the broken rollout stopped")
        assert shown["state"] == "stopped", shown
        (reverted,) = [m for m in shown["members"] if m["phase"] == "reverted"]
        assert reverted["reason"] == "health", reverted
        untouched = [m for m in shown["members"] if m["gateway"] != reverted["gateway"]]
        assert all(m["published_at"] is None for m in untouched), untouched
        assert all(m["phase"] in (None, "pending") or m["generation"] is None for m in untouched), untouched
        # The canary put its previous slot back on its own: the good map serves everywhere, and the other
        # gateways' desired generation is the first rollout's.
        for gateway in GATEWAYS:
            assert _tenths(await _mbpoll_soc(ports[gateway])), gateway
        for member in untouched:
            assert generations[member["gateway"]] is not None

        async def installed_everywhere() -> bool:
            # Each gateway's retained state names the pack it runs (kind "pack"), never the reverted one.
            rows = (await client.get("/api/v1/gateways")).json()["gateways"]
            installed = {
                row["id"]: sorted(pack["name"] for pack in row["packs"] if pack["kind"] == "pack") for row in rows
            }
            return all(installed.get(gateway) == ["site-maps"] for gateway in GATEWAYS)

        await _until(installed_everywhere, timeout=30, what="every gateway's state naming site-maps only")
