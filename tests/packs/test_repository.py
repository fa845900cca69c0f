"""The server's repository: what it installs, what it refuses, when it re-signs; rotating the targets key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bmsgate.errors import ConfigError
from bmsgate.fleet.credentials import GatewayCredentials, read_credentials, write_credentials
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.errors import PackError
from bmsgate.packs.trust import OnlineMetadata, TargetSpec, create_root, generate_key, rotate_root, sign_targets

from .conftest import Fleet


def _version(fleet: Fleet, role: str) -> int:
    version: int = json.loads((fleet.server.metadata_dir / f"{role}.json").read_bytes())["signed"]["version"]
    return version


def test_fresh_metadata_is_left_alone_and_expiring_metadata_is_re_signed(fleet: Fleet) -> None:
    assert fleet.server.refresh() is False  # no targets yet: nothing to sign
    fleet.publish({"packs/a.pack": b"a"})
    versions = _version(fleet, "snapshot"), _version(fleet, "timestamp")
    assert fleet.server.refresh() is False
    online = {role: fleet.signers[role] for role in ("snapshot", "timestamp")}
    OnlineMetadata(fleet.server.metadata_dir, online, expiry_days={"timestamp": 0.2}).resign(force=True)
    assert fleet.server.refresh() is True  # less than half a day left
    assert _version(fleet, "snapshot") == versions[0] + 1  # the forced one above
    assert _version(fleet, "timestamp") == versions[1] + 2
    assert fleet.server.refresh() is False
    fleet.gateway().refresh()


def test_the_server_refuses_roots_that_do_not_chain(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(PackError) as excinfo:
        fleet.server.install_root(fleet.keys / "root.json")
    assert excinfo.value.reason is FailureReason.REPLAY
    rogue = generate_key(tmp_path / "rogue", "root")
    keys = {"root": [rogue], **{role: [fleet.signers[role]] for role in ("targets", "snapshot", "timestamp")}}
    rogue_root = json.loads(create_root(keys))
    rogue_root["signed"]["version"] = 2
    rogue_file = tmp_path / "rogue.json"
    rogue_file.write_text(json.dumps(rogue_root))
    with pytest.raises(PackError) as excinfo:
        fleet.server.install_root(rogue_file)
    assert excinfo.value.reason is FailureReason.SIGNATURE
    other_online = tmp_path / "other-online"
    for role in ("snapshot", "timestamp"):
        generate_key(other_online, role)
    next_root = tmp_path / "2.root.json"
    next_root.write_bytes(rotate_root(fleet.root_json, new_keys={}, signers=[fleet.signers["root"]]))
    with pytest.raises(PackError) as excinfo:
        fleet.server.install_root(next_root, online_keys=other_online)
    assert excinfo.value.reason is FailureReason.SIGNATURE
    assert fleet.server.install_root(next_root) == 2


def test_the_server_refuses_targets_it_cannot_trust(fleet: Fleet, tmp_path: Path) -> None:
    artifact = tmp_path / "a.pack"
    artifact.write_bytes(b"a")
    spec = [TargetSpec("packs/a.pack", artifact)]
    expired = tmp_path / "expired.json"
    expired.write_bytes(sign_targets(fleet.root_json, None, spec, signer=fleet.signers["targets"], expires_days=-1))
    with pytest.raises(PackError) as excinfo:
        fleet.server.publish(expired, [artifact])
    assert excinfo.value.reason is FailureReason.EXPIRED
    by_timestamp_key = json.loads(sign_targets(fleet.root_json, None, spec, signer=fleet.signers["targets"]))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**by_timestamp_key, "signatures": []}))
    with pytest.raises(PackError) as excinfo:
        fleet.server.publish(wrong, [artifact])
    assert excinfo.value.reason is FailureReason.SIGNATURE
    with pytest.raises(PackError) as excinfo:
        sign_targets(fleet.root_json, None, spec, signer=fleet.signers["timestamp"])
    assert excinfo.value.reason is FailureReason.SIGNATURE
    assert fleet.server.targets() is None
    assert not any(path.is_file() for path in fleet.server.targets_dir.rglob("*"))


def test_rotating_the_targets_key_needs_re_signed_targets(fleet: Fleet, tmp_path: Path) -> None:
    content = b"pack"
    fleet.publish({"packs/a.pack": content})
    gateway = fleet.gateway()
    gateway.refresh()
    new_targets = generate_key(tmp_path / "new", "targets")
    root_v2 = rotate_root(fleet.root_json, new_keys={"targets": [new_targets]}, signers=[fleet.signers["root"]])
    root_file = tmp_path / "root-v2.json"
    root_file.write_bytes(root_v2)
    with pytest.raises(PackError) as excinfo:
        fleet.server.install_root(root_file)
    assert excinfo.value.reason is FailureReason.SIGNATURE  # the targets in force would not verify any more
    assert fleet.targets_json is not None
    resigned = tmp_path / "targets-v2.json"
    resigned.write_bytes(
        sign_targets(root_v2, fleet.targets_json, [], signer=new_targets, current_root=fleet.root_json)
    )
    assert fleet.server.install_root(root_file, targets_file=resigned) == 2
    gateway.refresh()
    assert gateway.root_version == 2
    path = gateway.download("packs/a.pack", length=len(content), sha256=hashlib.sha256(content).hexdigest())
    assert path.read_bytes() == content


def _credentials(**extra: object) -> dict[str, object]:
    return {
        "gateway": "gw1",
        "broker_url": "mqtts://fleet.example:8883",
        "username": "gw1",
        "password": "secret",
        "ca_pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        **extra,
    }


def test_credentials_carry_the_root_and_the_artifacts_url(fleet: Fleet, tmp_path: Path) -> None:
    root_text = fleet.root_json.decode()
    credentials = GatewayCredentials.model_validate(
        _credentials(tuf_root=root_text, artifacts_url="https://fleet.example:8443/tuf")
    )
    write_credentials(credentials, tmp_path / "c.json")
    again = read_credentials(tmp_path / "c.json")
    assert again.tuf_root == root_text
    assert again.artifacts_url == "https://fleet.example:8443/tuf"
    for bad in (
        {"tuf_root": root_text},
        {"artifacts_url": "https://fleet.example:8443/tuf"},
        {"tuf_root": root_text, "artifacts_url": "ftp://fleet.example/tuf"},
        {"tuf_root": "{not json", "artifacts_url": "https://fleet.example:8443/tuf"},
        {"tuf_root": '{"signed": {"_type": "targets"}}', "artifacts_url": "https://fleet.example:8443/tuf"},
        {"tuf_root": '{"signed": 5}', "artifacts_url": "https://fleet.example:8443/tuf"},
    ):
        (tmp_path / "bad.json").write_text(json.dumps(_credentials(**bad)))
        with pytest.raises(ConfigError):
            read_credentials(tmp_path / "bad.json")
