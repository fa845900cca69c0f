"""Enrolment: the data directory, the device registry, credentials, Mosquitto's password hash format."""

from __future__ import annotations

import concurrent.futures
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import ConfigError
from bmsgate.fleet.credentials import read_credentials, write_credentials
from bmsgate.fleet.server.auth import Role
from bmsgate.fleet.server.broker import render_password_file, server_account
from bmsgate.fleet.server.datadir import ADMIN_MARKER, DataDir, default_data_dir
from bmsgate.fleet.server.devices import DeviceError, DeviceRegistry, enroll_gateway
from bmsgate.fleet.server.passwords import PasswordFormatError, hash_password, new_password, verify_password
from bmsgate.fleet.server.tls import FleetPki


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_data_dir() == tmp_path / "state" / "bmsgate" / "fleet"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "state" / "bmsgate" / "fleet"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_data_dir() == tmp_path / "home" / ".local" / "state" / "bmsgate" / "fleet"


def test_the_data_directory_is_private_and_the_admin_token_made_once(tmp_path: Path) -> None:
    (tmp_path / "loose").mkdir(mode=0o755)
    data = DataDir.open(tmp_path / "loose")
    for directory in (data.root, data.broker_dir, data.tls_dir, data.persistence_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    token = data.ensure_admin_token()
    assert token is not None
    info = data.tokens.verify(token)
    assert info is not None and info.role is Role.ADMIN
    assert (data.root / ADMIN_MARKER).exists()
    assert data.ensure_admin_token() is None
    # Revoking it on purpose does not bring a new one at the next start.
    assert data.tokens.revoke(info.token_id)
    assert data.ensure_admin_token() is None
    assert data.tokens.list() == []


def test_an_impossible_data_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the data directory"):
        DataDir.open(tmp_path / "file" / "data")


def test_a_stale_pid_file_is_no_running_broker(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path)
    assert data.running_broker_pid() is None
    data.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a mosquitto with our config
    assert data.running_broker_pid() is None
    data.pid_file.write_text("garbage")
    assert data.running_broker_pid() is None


def test_our_hash_is_mosquitto_passwd_s_format() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("$7$101$")
    assert verify_password("s3cret", stored) and not verify_password("s3cret!", stored)


def test_mosquitto_passwd_hashes_verify_with_our_code(tmp_path: Path) -> None:
    binary = "/usr/bin/mosquitto_passwd"
    if not Path(binary).exists():
        pytest.skip("mosquitto_passwd not installed")
    passwords = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(passwords), "gw", "from-mosquitto"], check=True)
    stored = passwords.read_text().strip().split(":", 1)[1]
    assert verify_password("from-mosquitto", stored)
    assert not verify_password("other", stored)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600) | st.from_regex(r"\$7\$[0-9]{1,9}\$[A-Za-z0-9+/=]{0,40}\$[A-Za-z0-9+/=]{0,120}"))
def test_fuzz_hash_parser_raises_only_our_error(stored: str) -> None:
    try:
        verify_password("x", stored)
    except PasswordFormatError:
        pass


def test_enrolment_records_a_hash_writes_credentials_and_rotates(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    first = enroll_gateway(
        data, "site-042", broker_url="mqtts://fleet.example:8883", server_url="https://fleet.example"
    )
    assert first.password is not None and first.ca_pem == FleetPki(data.tls_dir).ca_pem
    out = tmp_path / "site-042.json"
    write_credentials(first, out)
    assert read_credentials(out) == first
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    device = DeviceRegistry(data.devices_file).get("site-042")
    assert device is not None and device.active and device.password_hash is not None
    assert verify_password(first.password.get_secret_value(), device.password_hash)
    assert first.password.get_secret_value() not in data.devices_file.read_text()

    second = enroll_gateway(data, "site-042", broker_url="mqtts://fleet.example:8883")
    assert second.password is not None and second.password != first.password
    device = DeviceRegistry(data.devices_file).get("site-042")
    assert device is not None and device.password_hash is not None
    assert not verify_password(first.password.get_secret_value(), device.password_hash)
    assert [d.gateway_id for d in DeviceRegistry(data.devices_file).list()] == ["site-042"]


def test_certificate_enrolment_rotation_and_revocation_feed_the_crl(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    first = enroll_gateway(data, "gw-c", broker_url="mqtts://h:8884", client_cert=True)
    assert first.password is None and first.cert_pem is not None and first.key_pem is not None
    registry = DeviceRegistry(data.devices_file)
    device = registry.get("gw-c")
    assert device is not None and device.cert_serial is not None
    first_serial = device.cert_serial
    enroll_gateway(data, "gw-c", broker_url="mqtts://h:8884", client_cert=True)
    assert registry.revoked_serials() == {first_serial}
    revoked = registry.revoke("gw-c")
    assert revoked.revoked and revoked.cert_serial is None and len(registry.revoked_serials()) == 2
    with pytest.raises(DeviceError, match="mqtts"):
        enroll_gateway(data, "gw-c", broker_url="mqtt://h:1883", client_cert=True)


def test_revocation_removes_the_password_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    enroll_gateway(data, "gw-a", broker_url="mqtts://h:8883")
    enroll_gateway(data, "gw-b", broker_url="mqtt://h:1883")
    registry = DeviceRegistry(data.devices_file)
    registry.revoke("gw-a")
    passwd = render_password_file(registry.list(), server_account(data))
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["_fleet-server", "gw-b"]
    with pytest.raises(DeviceError, match="not enrolled"):
        registry.revoke("gw-zzz")
    with pytest.raises(DeviceError, match="not a gateway id"):
        registry.revoke("../etc")
    with pytest.raises(DeviceError, match="not a gateway id"):
        enroll_gateway(data, "Upper", broker_url="mqtts://h:8883")


def test_the_server_account_is_made_once_and_kept_private(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    account = server_account(data)
    assert account == server_account(data)
    assert account.username == "_fleet-server" and len(account.password) >= 40
    assert stat.S_IMODE((data.broker_dir / "server-user.json").stat().st_mode) == 0o600
    for damage in ('{"username": "gw-1", "password": "x"}', "[]", "{", '{"username": "_fleet-server", "password": 5}'):
        (data.broker_dir / "server-user.json").write_text(damage)
        fresh = server_account(data)
        assert fresh.username == "_fleet-server" and len(fresh.password) >= 40
        assert server_account(data) == fresh


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    ).map(lambda value: json.dumps({"v": 1, "devices": {"gw": value}}).encode())
)
def test_fuzz_a_damaged_device_file_raises_only_our_error(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("devices") / "devices.json"
    path.write_bytes(raw)
    try:
        DeviceRegistry(path).load()
    except DeviceError:
        pass


def test_new_passwords_are_long_and_distinct() -> None:
    passwords = {new_password() for _ in range(50)}
    assert len(passwords) == 50
    assert min(map(len, passwords)) >= 40


def test_concurrent_enrolments_are_all_kept(tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "data")
    ids = [f"gw-{number:02d}" for number in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        # A registry object per call, as separate processes would have.
        list(
            pool.map(
                lambda gateway_id: DeviceRegistry(data.devices_file).enroll(
                    gateway_id, password_hash=None, cert_serial=None
                ),
                ids,
            )
        )
    assert sorted(DeviceRegistry(data.devices_file).load()) == ids
