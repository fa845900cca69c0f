"""``bmsgate fleet enroll | revoke | devices | broker-files | token``: files, exit codes, a running broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from bmsgate.errors import SinkError
from bmsgate.fleet.credentials import read_credentials
from bmsgate.fleet.server.auth import Role, TokenStore
from bmsgate.fleet.server.broker import BrokerOptions, FleetBroker
from bmsgate.fleet.server.datadir import DataDir
from bmsgate.mqtt.broker import find_mosquitto, free_port
from bmsgate.mqtt.client import connect
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings


def test_enroll_writes_one_credentials_file_and_records_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "out" / "gw-1.json"
    code = main(
        ["fleet", "enroll", "gw-1", "--data", str(data), "--out", str(out), "--broker-url", "mqtts://f.example:8883"]
    )
    assert code == 0
    said = capsys.readouterr().out
    assert "enrolled gw-1" in said and "next start" in said
    credentials = read_credentials(out)
    assert credentials.gateway == "gw-1" and credentials.broker_url == "mqtts://f.example:8883"
    assert credentials.password is not None and credentials.ca_pem is not None
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert main(["fleet", "devices", "--data", str(data), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["id"] == "gw-1" and row["revoked"] is False and row["auth"] == "password"
    acl = (data / "broker" / "acl").read_text()
    assert "user gw-1\n" in acl


def test_client_certificate_enrolment_and_the_default_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "gw-2.json"
    assert main(["fleet", "enroll", "gw-2", "--data", str(data), "--out", str(out), "--client-cert"]) == 0
    credentials = read_credentials(out)
    assert credentials.cert_pem is not None and credentials.password is None
    assert credentials.broker_url.startswith("mqtts://") and credentials.broker_url.endswith(":8884")
    assert main(["fleet", "devices", "--data", str(data)]) == 0
    assert "certificate" in capsys.readouterr().out


def test_user_mistakes_are_one_line_and_a_usage_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    with pytest.raises(SystemExit) as exited:
        main(["fleet", "enroll", "Not/An/Id", "--data", data])
    assert exited.value.code == 2
    assert "is not a gateway id" in capsys.readouterr().err
    assert main(["fleet", "revoke", "gw-never", "--data", data]) == 1
    assert capsys.readouterr().err.strip() == "bmsgate: error: gateway 'gw-never' is not enrolled"
    assert main(["fleet", "token", "revoke", "deadbeef", "--data", data]) == 2
    assert "no token with id" in capsys.readouterr().err
    assert main(["fleet", "enroll", "gw-3", "--data", data, "--client-cert", "--broker-url", "mqtt://h:1883"]) == 1
    assert "mqtts" in capsys.readouterr().err
    assert not (Path.cwd() / "gw-3.credentials.json").exists()


def test_tokens_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["fleet", "token", "create", "--role", "viewer", "--label", "customer", "--data", data]) == 0
    token = capsys.readouterr().out.strip()
    info = TokenStore(tmp_path / "data").verify(token)
    assert info is not None and info.role is Role.VIEWER and info.label == "customer"
    assert main(["fleet", "token", "list", "--json", "--data", data]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row == {"id": info.token_id, "role": "viewer", "label": "customer", "created_at": row["created_at"]}
    assert token not in json.dumps(row)
    assert main(["fleet", "token", "revoke", info.token_id, "--data", data]) == 0
    assert TokenStore(tmp_path / "data").verify(token) is None
    with pytest.raises(SystemExit):
        main(["fleet", "token", "create", "--role", "root", "--data", data])


def test_broker_files_for_an_existing_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["fleet", "enroll", "gw-1", "--data", data, "--out", str(tmp_path / "c.json")]) == 0
    assert main(["fleet", "broker-files", "--data", data, "--out", str(tmp_path / "export")]) == 0
    assert "_fleet-server" in capsys.readouterr().out
    assert (tmp_path / "export" / "passwd").read_text().count("\n") == 2
    assert "user gw-1" in (tmp_path / "export" / "acl").read_text()


@contextlib.contextmanager
def broker_in_thread(data_dir: Path) -> Iterator[FleetBroker]:
    """A running fleet broker owned by another thread (the CLI calls asyncio.run itself)."""
    started = threading.Event()
    stopping: list[asyncio.Event] = []
    holder: list[FleetBroker] = []
    failure: list[BaseException] = []

    async def run() -> None:
        options = BrokerOptions(gateway_host="127.0.0.1", gateway_port=free_port(), cert_port=None)
        stop = asyncio.Event()
        stopping.append(stop)
        try:
            async with FleetBroker(DataDir.open(data_dir), options) as broker:
                holder.append(broker)
                started.set()
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            started.set()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(run(),))
    thread.start()
    try:
        assert started.wait(10)
        assert not failure, failure
        yield holder[0]
    finally:
        if stopping:
            loop.call_soon_threadsafe(stopping[0].set)
        thread.join(10)
        loop.close()


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")
def test_enrol_then_revoke_take_effect_on_a_running_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "gw-1.json"
    with broker_in_thread(data) as broker:
        assert main(["fleet", "enroll", "gw-1", "--data", str(data), "--out", str(out)]) == 0
        assert "reloaded" in capsys.readouterr().out
        credentials = read_credentials(out)
        assert credentials.broker_url == broker.endpoints.password_url
        assert credentials.ca_pem is not None and credentials.password is not None
        ca = tmp_path / "ca.pem"
        ca.write_text(credentials.ca_pem)
        settings = BrokerSettings(
            host="127.0.0.1",
            port=broker.options.gateway_port,
            username="gw-1",
            password=credentials.password,
            tls=TlsSettings(ca_file=ca),
        )

        async def attempt() -> None:
            async with connect(settings, will_topic="fleet/v1/gw-1/availability", will_payload="offline"):
                pass

        asyncio.run(attempt())
        assert main(["fleet", "revoke", "gw-1", "--data", str(data)]) == 0
        assert "in effect now" in capsys.readouterr().out
        with pytest.raises(SinkError, match=r"[Nn]ot authori[sz]ed"):
            asyncio.run(attempt())
