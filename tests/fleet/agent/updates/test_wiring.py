"""The ``outputs.fleet.updates`` section and the wiring that hands the update engine the running gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.catalog import BUILTIN_DIR, Kind
from bmsgate.errors import ConfigError
from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.updates.engine import UpdateEngine
from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from tests.inverter.modbus.helpers import free_port


def _config(tmp_path: Path, updates: dict[str, Any] | None) -> dict[str, Any]:
    credentials = tmp_path / "gw.json"
    write_credentials(
        GatewayCredentials(gateway="gw-9", broker_url="mqtt://127.0.0.1:1883", username="gw-9", password="pw"),  # type: ignore[arg-type]
        credentials,
    )
    fleet: dict[str, Any] = {"credentials": str(credentials)}
    if updates is not None:
        fleet["updates"] = updates
    return {
        "name": "farm",
        "state_dir": str(tmp_path / "state"),
        "batteries": [
            {"id": "house", "protocol": "jbd", "transport": {"type": "simulator"}},
            {
                "id": "shed",
                "protocol_file": str(BUILTIN_DIR / "protocols" / "jbd.yaml"),
                "transport": {"type": "simulator", "cells": 4},
            },
        ],
        "inverter": {"batteries": ["house"]},
        "outputs": {
            "console": {"enabled": False},
            "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": free_port()},
            "fleet": fleet,
        },
    }


def _engine(tmp_path: Path, updates: dict[str, Any] | None) -> UpdateEngine | None:
    config = config_from_mapping(_config(tmp_path, updates))
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    agent = next(sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent))
    handler = agent.desired_handler
    assert handler is None or isinstance(handler, UpdateEngine)
    if handler is not None:
        assert handler.supervisor is gateway.supervisor
    return handler


def test_the_agent_gets_an_engine_for_the_running_gateway(tmp_path: Path) -> None:
    engine = _engine(tmp_path, {"health_polls": 8, "precondition_timeout": 60})
    assert engine is not None
    assert engine.settings.directory == tmp_path / "state" / "packs"
    assert engine.settings.gateway_id == "gw-9"
    assert engine.settings.health.polls == 8
    assert engine.settings.precondition_timeout == 60
    # A battery configured by file path cannot be changed by a pack (the file layer wins): not in the site.
    assert dict(engine.site.protocols) == {"house": "jbd"}
    assert dict(engine.site.outputs) == {"modbus": (Kind.REGISTER_MAP, "generic")}
    assert engine.site.inverter_bank == frozenset({"house"})
    assert engine.source is None, "no trusted repository yet: desired states from the broker are refused"


def test_updates_can_be_switched_off(tmp_path: Path) -> None:
    assert _engine(tmp_path, {"enabled": False}) is None


def test_bad_update_settings_are_named_by_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_config(tmp_path, {"health_polls": 0, "health_timeout": 2, "health_min_duration": 5}))
    keys = {problem.key_path for problem in caught.value.problems}
    assert any(key.startswith("outputs.fleet.updates") for key in keys), keys
    assert "health_polls" in str(caught.value)
