"""The ``outputs.fleet`` section: validation (all problems at once, by key), `config check`, the wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsgate.app.cli.main import main
from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.errors import ConfigError
from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.location import GpsdLocation
from bmsgate.fleet.agent.wiring import rediscover_hook
from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from bmsgate.homeassistant.settings import MqttSettings
from bmsgate.homeassistant.sink import HomeAssistantSink

_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _credentials(tmp_path: Path, *, tls: bool = False) -> Path:
    path = tmp_path / "site-7.json"
    write_credentials(
        GatewayCredentials(
            gateway="site-7",
            broker_url="mqtts://fleet.example:8883" if tls else "mqtt://127.0.0.1:1883",
            username="site-7",
            password="pw",  # type: ignore[arg-type]
            ca_pem=_CA if tls else None,
        ),
        path,
    )
    return path


def _config(tmp_path: Path, fleet: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "farm",
        "state_dir": str(tmp_path / "state"),
        "batteries": [
            {"id": "house", "protocol": "jbd", "transport": {"type": "simulator"}},
            {"id": "shed", "protocol": "jbd", "transport": {"type": "simulator", "cells": 4}},
        ],
        "outputs": {"console": {"enabled": False}, "fleet": fleet},
    }


def test_a_valid_section_builds_an_agent(tmp_path: Path) -> None:
    credentials = _credentials(tmp_path)
    config = config_from_mapping(
        _config(
            tmp_path,
            {
                "credentials": str(credentials),
                "site": "Karoo",
                "tags": ["pilot"],
                "location": {"type": "gpsd", "port": 2948},
                "buffer": {"max_bytes": 1_000_000},
            },
        )
    )
    fleet = config.outputs.fleet
    assert fleet is not None
    assert (fleet.interval, fleet.site, fleet.tags) == (10.0, "Karoo", ("pilot",))
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    agents = [sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent)]
    assert len(agents) == 1
    agent = agents[0]
    assert agent.gateway_id == "site-7"
    assert agent.options.name == "farm"
    assert agent.options.buffer_path == tmp_path / "state" / "fleet-buffer.sqlite"
    assert agent.options.buffer_max_bytes == 1_000_000
    assert agent.options.broker.username == "site-7"
    assert agent.options.broker.client_id == "site-7"
    assert [battery.id for battery in agent.options.batteries] == ["house", "shed"]
    assert isinstance(agent._location_source, GpsdLocation)
    assert agent._location_source.port == 2948
    assert not (tmp_path / "state").exists(), "building creates nothing; the buffer opens when the agent runs"


def test_a_tls_credentials_file_gives_a_tls_connection_with_its_ca(tmp_path: Path) -> None:
    config = config_from_mapping(_config(tmp_path, {"credentials": str(_credentials(tmp_path, tls=True))}))
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    agent = next(sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent))
    assert agent.options.broker.tls is not None
    assert agent.options.broker.tls.ca_pem == _CA
    assert agent.options.broker.port == 8883


def test_every_problem_at_once_with_its_key(tmp_path: Path) -> None:
    credentials = _credentials(tmp_path, tls=True)
    data = _config(
        tmp_path,
        {
            "credentials": str(credentials),
            "broker": "mqtt://tunnel.local:1883",
            "interval": 0,
            "location": {"type": "fixed", "lat": 95, "lon": 18},
            "colour": "blue",
            "buffer": {"path": str(tmp_path)},
        },
    )
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    found = {problem.key_path: problem.reason for problem in caught.value.problems}
    assert "does not match the credentials file" in found["outputs.fleet.broker"]
    assert "outputs.fleet.interval" in found
    assert "outputs.fleet.location.fixed.lat" in found or "outputs.fleet.location.lat" in found
    assert "outputs.fleet.colour" in found
    assert "is a directory" in found["outputs.fleet.buffer.path"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the credentials file"),
        ("{not json", "Invalid JSON"),
        ('{"v":1,"gateway":"site-7","broker_url":"mqtts://x:8883","username":"site-7","password":"p"}', "ca_pem"),
        ('{"v":1,"gateway":"site-7","broker_url":"http://x","username":"site-7","password":"p"}', "scheme"),
    ],
)
def test_config_check_reports_a_bad_credentials_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    credentials = tmp_path / "creds.json"
    if content is not None:
        credentials.write_text(content)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, {"credentials": str(credentials)})))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "outputs.fleet.credentials" in err
    assert message in err
    assert "Traceback" not in err


def test_config_check_accepts_a_good_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, {"credentials": str(_credentials(tmp_path))})))
    assert main(["config", "check", str(path)]) == 0
    assert "fleet" in capsys.readouterr().out


def test_rediscovery_reaches_the_home_assistant_output(tmp_path: Path) -> None:
    sink = HomeAssistantSink(MqttSettings(url="mqtt://127.0.0.1:1", state_dir=tmp_path))
    hook = rediscover_hook(lambda: [sink, object()])
    assert hook() == ["homeassistant"]
    assert sink.stats.republishes == 1
