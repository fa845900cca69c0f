"""The key ceremony through the command line, served by a real ``fleet serve``, fetched by a real gateway.

keygen → fleet pack init → pack sign → fleet pack publish → fleet enroll (credentials with the root and the
artifacts URL) → the gateway downloads over the server's HTTPS listener → pack rotate-root → fleet pack
init (rotation) → the gateway follows and verifies desired states with the new timestamp key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from bmsgate.catalog import BUILTIN_DIR
from bmsgate.fleet.credentials import read_credentials
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.updates import DesiredState, FailureReason
from bmsgate.mqtt.broker import free_port
from bmsgate.packs.errors import PackError
from bmsgate.packs.trust import TrustedRepository, load_signer, sign_desired


def _cli(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _built_pack(tmp_path: Path, name: str = "demo", version: str = "1.0") -> Path:
    """``bmsgate pack build`` of a one-register-map pack; returns the pack file."""
    source = tmp_path / f"{name}-src"
    (source / "modbus").mkdir(parents=True)
    text = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
    (source / "modbus" / "site.yaml").write_text(text.replace("name: generic", "name: site", 1), encoding="utf-8")
    (source / "pack.yaml").write_text(f'name: {name}\nversion: "{version}"\nhardware: ["*"]\n', encoding="utf-8")
    out = tmp_path / f"{name}-{version}.pack.json"
    assert _cli("pack", "build", source, "--out", out) == 0
    return out


def test_keygen_sign_publish_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, data = tmp_path / "keys", tmp_path / "data"
    assert _cli("pack", "keygen", "--keys", keys) == 0
    for role in ("root", "targets"):
        assert (keys / f"{role}.key").stat().st_mode & 0o777 == 0o600
    for role in ("snapshot", "timestamp"):
        assert (keys / "online" / f"{role}.key").stat().st_mode & 0o777 == 0o600
    assert _cli("pack", "keygen", "--keys", keys) == 2  # never overwrites a key ceremony
    assert _cli("fleet", "pack", "list", "--data", data) == 0
    assert "no pack repository yet" in capsys.readouterr().out
    assert (
        _cli("fleet", "pack", "init", "--root", keys / "root.json", "--online-keys", keys / "online", "--data", data)
        == 0
    )
    assert not (data / "tuf" / "keys" / "root.key").exists()  # the server never holds the offline keys
    assert (data / "tuf" / "keys" / "timestamp.key").stat().st_mode & 0o777 == 0o600
    artifact = _built_pack(tmp_path)
    assert _cli("pack", "sign", artifact, "--keys", keys, "--version", "2.0", "--out", tmp_path / "t0.json") == 2
    assert "is demo@1.0" in capsys.readouterr().err
    garbage = tmp_path / "garbage-1.0.pack"
    garbage.write_bytes(b"not a pack")
    assert _cli("pack", "sign", garbage, "--keys", keys, "--out", tmp_path / "t0.json") == 1
    assert "not a pack file" in capsys.readouterr().err
    assert _cli("pack", "sign", artifact, "--keys", keys, "--out", tmp_path / "t1.json") == 0
    other = tmp_path / "other-2.0.pack"
    other.write_bytes(b"other")
    # publishing a file the targets.json does not name is refused, and nothing is published
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", artifact, other, "--data", data) == 1
    assert "names no file" in capsys.readouterr().err
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", "--data", data) == 1
    assert "its file was not given" in capsys.readouterr().err
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", artifact, "--data", data) == 0
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", artifact, "--data", data) == 1
    assert "not above" in capsys.readouterr().err  # the same version again: a replay
    capsys.readouterr()
    assert _cli("fleet", "pack", "list", "--json", "--data", data) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["targets_version"] == 1
    assert listed["targets"] == [
        {
            "target": "packs/demo-1.0.pack.json",
            "length": artifact.stat().st_size,
            "sha256": _sha(artifact.read_bytes()),
            "kind": "pack",
            "name": "demo",
            "version": "1.0",
        }
    ]
    assert set(listed["expires"]) == {"root", "targets", "snapshot", "timestamp"}
    wheel = tmp_path / "bmsgate-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    assert (
        _cli(
            "pack",
            "sign",
            wheel,
            "--kind",
            "software",
            "--keys",
            keys,
            "--targets",
            data / "tuf" / "metadata" / "targets.json",
            "--out",
            tmp_path / "t2.json",
        )
        == 0
    )
    signed = json.loads((tmp_path / "t2.json").read_bytes())["signed"]
    assert signed["version"] == 2
    assert signed["targets"]["software/bmsgate-0.2.0-py3-none-any.whl"]["custom"]["bmsgate"] == {
        "kind": "software",
        "name": "bmsgate",
        "version": "0.2.0",
    }
    assert "packs/demo-1.0.pack.json" in signed["targets"]
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t2.json", wheel, "--data", data) == 0
    capsys.readouterr()
    assert _cli("fleet", "pack", "list", "--data", data) == 0
    assert "warning: targets.json expires" not in capsys.readouterr().out
    current = data / "tuf" / "metadata" / "targets.json"
    assert (
        _cli("pack", "sign", "--keys", keys, "--targets", current, "--expires-days", "3", "--out", tmp_path / "t3.json")
        == 0
    )
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t3.json", "--data", data) == 0
    capsys.readouterr()
    assert _cli("fleet", "pack", "list", "--data", data) == 0
    shown = capsys.readouterr().out
    assert "warning: targets.json expires" in shown
    assert "software/bmsgate-0.2.0-py3-none-any.whl" in shown
    unnamed = tmp_path / "notes.txt"
    unnamed.write_bytes(b"x")
    assert _cli("pack", "sign", unnamed, "--kind", "software", "--keys", keys, "--out", tmp_path / "t3.json") == 2
    assert "--name and --version" in capsys.readouterr().err


async def test_fleet_serve_gives_enrolled_gateways_the_root_and_follows_a_rotation(tmp_path: Path) -> None:
    keys, data = tmp_path / "keys", tmp_path / "data"

    def ceremony() -> Path:
        artifact = _built_pack(tmp_path)
        assert _cli("pack", "keygen", "--keys", keys) == 0
        assert (
            _cli(
                "fleet", "pack", "init", "--root", keys / "root.json", "--online-keys", keys / "online", "--data", data
            )
            == 0
        )
        assert _cli("pack", "sign", artifact, "--keys", keys, "--out", tmp_path / "t1.json") == 0
        assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", artifact, "--data", data) == 0
        return artifact

    artifact = await asyncio.to_thread(ceremony)
    settings = FleetServerSettings(
        data_dir=data,
        http_port=0,
        gateway_port=free_port(),
        cert_port=None,
        public_host="localhost",
        gateway_host="127.0.0.1",
        artifacts_port=0,
    )
    async with FleetServer(settings) as running:
        assert running.artifacts_url is not None
        assert running.artifacts_url.startswith("https://localhost:")
        credentials_file = tmp_path / "gw1.credentials.json"
        assert await asyncio.to_thread(_cli, "fleet", "enroll", "gw1", "--data", data, "--out", credentials_file) == 0
        credentials = read_credentials(credentials_file)
        assert credentials.artifacts_url == running.artifacts_url
        assert credentials.tuf_root is not None

        def gateway() -> TrustedRepository:
            assert credentials.artifacts_url is not None and credentials.tuf_root is not None
            return TrustedRepository(
                tmp_path / "gw1" / "metadata",
                tmp_path / "gw1" / "artifacts",
                credentials.artifacts_url,
                ca_pem=credentials.ca_pem,
                bootstrap_root=credentials.tuf_root.encode(),
            )

        content = artifact.read_bytes()
        repo = await asyncio.to_thread(gateway)
        path = await asyncio.to_thread(
            lambda: repo.download("packs/demo-1.0.pack.json", length=len(content), sha256=_sha(content))
        )
        assert path.read_bytes() == content
        now = time.time()
        state = DesiredState(v=1, gateway="gw1", generation=1, issued_at=now, expires_at=now + 600)
        assert running.packs is not None
        assert repo.verify_desired(running.packs.sign_desired(state)) == state

        # The rotation: new root and timestamp keys, installed on the running server.
        def rotate() -> None:
            assert _cli("pack", "rotate-root", "--keys", keys, "--rotate", "root", "timestamp") == 0
            assert (
                _cli(
                    "fleet",
                    "pack",
                    "init",
                    "--root",
                    keys / "root.json",
                    "--online-keys",
                    keys / "online",
                    "--data",
                    data,
                )
                == 0
            )

        await asyncio.to_thread(rotate)
        assert len(list((keys / "retired").glob("*.key"))) == 2
        restarted = await asyncio.to_thread(gateway)
        assert restarted.root_version == 1
        await asyncio.to_thread(restarted.refresh)
        assert restarted.root_version == 2
        new_timestamp = load_signer(keys / "online", "timestamp")
        assert restarted.verify_desired(sign_desired(state, new_timestamp)) == state
        assert restarted.verify_desired(running.packs.sign_desired(state)) == state
        retired = next((keys / "retired").glob("timestamp-*.key")).name.removesuffix(".key")
        old_timestamp = load_signer(keys / "retired", retired)
        with pytest.raises(PackError) as excinfo:
            restarted.verify_desired(sign_desired(state, old_timestamp))
        assert excinfo.value.reason is FailureReason.SIGNATURE


def test_rotating_the_targets_key_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, data = tmp_path / "keys", tmp_path / "data"
    artifact = _built_pack(tmp_path)
    assert _cli("pack", "keygen", "--keys", keys) == 0
    assert (
        _cli("fleet", "pack", "init", "--root", keys / "root.json", "--online-keys", keys / "online", "--data", data)
        == 0
    )
    assert _cli("pack", "sign", artifact, "--keys", keys, "--out", tmp_path / "t1.json") == 0
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "t1.json", artifact, "--data", data) == 0
    assert _cli("pack", "rotate-root", "--keys", keys, "--rotate", "targets") == 0
    assert "--targets" in capsys.readouterr().out  # it says the targets need re-signing
    assert _cli("fleet", "pack", "init", "--root", keys / "root.json", "--data", data) == 1
    assert "targets" in capsys.readouterr().err
    # re-sign only: the current targets.json verifies under the previous root (from KEYDIR's history)
    assert _cli("pack", "sign", "--keys", keys, "--targets", tmp_path / "t1.json", "--out", tmp_path / "t2.json") == 0
    assert (
        _cli("fleet", "pack", "init", "--root", keys / "root.json", "--targets", tmp_path / "t2.json", "--data", data)
        == 0
    )
    capsys.readouterr()
    assert _cli("fleet", "pack", "list", "--json", "--data", data) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["targets_version"] == 2
    assert [row["target"] for row in listed["targets"]] == ["packs/demo-1.0.pack.json"]
