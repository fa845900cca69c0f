"""The agent over TLS with the credentials file's CA (and with a client certificate instead of a password)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import Channel
from bmsgate.mqtt.broker import free_port
from bmsgate.runtime.hub import SnapshotHub
from tests.fleet.agent.conftest import MOSQUITTO, FleetBroker, Recorder, agent_options, password, running


def _pki(directory: Path) -> Path:
    directory.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=fleet test CA")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    for name, subject in (("server", "/CN=fleet broker"), ("gw-2", "/CN=gw-2")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extra)  # fmt: skip
    return directory


@pytest.mark.slow
async def test_tls_with_the_fleet_ca_and_with_a_client_certificate(tmp_path: Path) -> None:
    if MOSQUITTO is None or shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto, mosquitto_passwd and openssl are needed")
    pki = _pki(tmp_path / "pki")
    password_port, certificate_port = free_port(), free_port()
    tls = f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
    extra = (
        f"listener {password_port} 127.0.0.1\n{tls}"
        f"listener {certificate_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n"
    )
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = FleetBroker(directory, extra=extra)
    broker.start()
    try:
        ca_pem = (pki / "ca.crt").read_text()
        by_password = GatewayCredentials(
            gateway="gw-1",
            broker_url=f"mqtts://127.0.0.1:{password_port}",
            username="gw-1",
            password=password("gw-1"),  # type: ignore[arg-type]
            ca_pem=ca_pem,
        )
        by_certificate = GatewayCredentials(
            gateway="gw-2",
            broker_url=f"mqtts://127.0.0.1:{certificate_port}",
            username="gw-2",
            ca_pem=ca_pem,
            cert_pem=(pki / "gw-2.crt").read_text(),
            key_pem=(pki / "gw-2.key").read_text(),  # type: ignore[arg-type]
        )
        async with Recorder(broker) as recorder:
            agents = [
                FleetAgent(agent_options(broker, tmp_path, gateway, broker=broker_settings(credentials)))
                for gateway, credentials in (("gw-1", by_password), ("gw-2", by_certificate))
            ]
            async with running(agents[0], SnapshotHub()), running(agents[1], SnapshotHub()):
                async with asyncio.timeout(10):
                    await asyncio.gather(*(agent.connected.wait() for agent in agents))
                await recorder.wait_for(
                    lambda: recorder.of(Channel.TELEMETRY, "gw-1") and recorder.of(Channel.TELEMETRY, "gw-2")
                )
        assert not list(Path(tempfile.gettempdir()).glob("bmsgate-tls-*/key.pem")), "the temporary key file is gone"
    finally:
        broker.stop()
