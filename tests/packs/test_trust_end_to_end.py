"""The gateway's TrustedRepository against a real repository over real HTTPS: what it accepts and refuses.

Every refusal names its FailureReason and leaves artifacts_dir empty (nothing half-written, nothing unverified).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Timestamp

from bmsgate.fleet.updates import DesiredState, FailureReason, PackTarget
from bmsgate.packs.errors import PackError
from bmsgate.packs.trust import (
    OnlineMetadata,
    TargetSpec,
    create_root,
    generate_key,
    load_signer,
    rotate_root,
    sign_desired,
    sign_targets,
)

from .conftest import Fleet

PACK = b"pack content " * 1000
TARGET = "packs/demo-1.0.pack"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def _refused(excinfo: pytest.ExceptionInfo[PackError], reason: FailureReason) -> None:
    assert excinfo.value.reason is reason, (excinfo.value.reason, str(excinfo.value))
    assert str(excinfo.value)


def _state(gateway: str = "gw", *, expires_in: float = 3600.0, generation: int = 1) -> DesiredState:
    now = time.time()
    pack = PackTarget(pack="demo", version="1.0", target=TARGET, length=len(PACK), sha256=_sha(PACK))
    return DesiredState(
        v=1, gateway=gateway, generation=generation, issued_at=now, expires_at=now + expires_in, packs=(pack,)
    )


def test_a_published_artifact_downloads_verified_with_its_custom_fields(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK}, custom={"bmsgate": {"kind": "pack", "name": "demo", "version": "1.0"}})
    gateway = fleet.gateway()
    seen: list[tuple[int, int]] = []
    path = gateway.download(
        TARGET, length=len(PACK), sha256=_sha(PACK), progress=lambda done, total: seen.append((done, total))
    )
    assert path.read_bytes() == PACK
    assert path == fleet.tmp / "gw" / "artifacts" / "packs" / "demo-1.0.pack"
    assert seen[-1] == (len(PACK), len(PACK))
    # consistent snapshots: the file was fetched by its hash-prefixed name
    assert any(request.endswith(f"/packs/{_sha(PACK)}.demo-1.0.pack") for request, _ in fleet.tap.requests)
    listed = fleet.server.targets()
    assert listed is not None
    assert listed.targets[0].custom == {"bmsgate": {"kind": "pack", "name": "demo", "version": "1.0"}}
    # a second download is the cached, re-verified file: no new transfer
    before = len(fleet.tap.requests)
    assert gateway.download(TARGET, length=len(PACK), sha256=_sha(PACK)) == path
    assert not any("/targets/" in request for request, _ in fleet.tap.requests[before:])


def test_a_tampered_artifact_is_refused_as_mismatch(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    stored = fleet.server.targets_dir / "packs" / f"{_sha(PACK)}.demo-1.0.pack"
    stored.write_bytes(PACK.replace(b"pack", b"evil"))
    gateway = fleet.gateway()
    with pytest.raises(PackError) as excinfo:
        gateway.download(TARGET, length=len(PACK), sha256=_sha(PACK))
    _refused(excinfo, FailureReason.MISMATCH)
    assert _files(fleet.tmp / "gw" / "artifacts") == []
    assert _files(fleet.tmp / "gw" / "metadata" / "partial") == []


def test_a_longer_tampered_artifact_is_cut_off_and_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    stored = fleet.server.targets_dir / "packs" / f"{_sha(PACK)}.demo-1.0.pack"
    stored.write_bytes(PACK + b"x" * 100_000)
    with pytest.raises(PackError) as excinfo:
        fleet.gateway().download(TARGET, length=len(PACK), sha256=_sha(PACK))
    _refused(excinfo, FailureReason.MISMATCH)
    assert _files(fleet.tmp / "gw" / "artifacts") == []


def test_a_desired_state_naming_other_bytes_than_the_metadata_is_a_mismatch(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    with pytest.raises(PackError) as excinfo:
        fleet.gateway().download(TARGET, length=len(PACK), sha256="0" * 64)
    _refused(excinfo, FailureReason.MISMATCH)
    assert _files(fleet.tmp / "gw" / "artifacts") == []


def test_an_unknown_target_is_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    with pytest.raises(PackError) as excinfo:
        fleet.gateway().download("packs/other-1.0.pack", length=10, sha256="0" * 64)
    _refused(excinfo, FailureReason.UNKNOWN_TARGET)
    assert _files(fleet.tmp / "gw" / "artifacts") == []


def test_targets_signed_by_a_wrong_key_are_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    gateway = fleet.gateway()
    gateway.refresh()
    # A compromised server (it holds the online keys) publishes targets signed by a key of its own.
    rogue_dir = fleet.tmp / "rogue"
    rogue = {role: generate_key(rogue_dir, role) for role in ("root", "targets")}
    rogue_root = create_root(
        {
            "root": [rogue["root"]],
            "targets": [rogue["targets"]],
            "snapshot": [fleet.signers["snapshot"]],
            "timestamp": [fleet.signers["timestamp"]],
        }
    )
    evil = rogue_dir / "evil.pack"
    evil.write_bytes(b"evil")
    forged = json.loads(sign_targets(rogue_root, None, [TargetSpec("packs/evil.pack", evil)], signer=rogue["targets"]))
    forged["signed"]["version"] = 5  # above the version in force; the signature no longer matters
    forged_bytes = json.dumps(forged).encode()
    metadata = fleet.server.metadata_dir
    (metadata / "5.targets.json").write_bytes(forged_bytes)
    (metadata / "targets.json").write_bytes(forged_bytes)
    OnlineMetadata(metadata, {role: fleet.signers[role] for role in ("snapshot", "timestamp")}).resign(force=True)
    with pytest.raises(PackError) as excinfo:
        fleet.gateway("gw").refresh()
    _refused(excinfo, FailureReason.SIGNATURE)
    with pytest.raises(PackError) as excinfo:
        fleet.gateway("fresh").download("packs/evil.pack", length=4, sha256=_sha(b"evil"))
    _refused(excinfo, FailureReason.SIGNATURE)
    assert _files(fleet.tmp / "fresh" / "artifacts") == []


def test_a_replayed_old_timestamp_is_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    old_timestamp = (fleet.server.metadata_dir / "timestamp.json").read_bytes()
    fleet.publish({"packs/demo-1.1.pack": PACK + b"1.1"})
    gateway = fleet.gateway()
    gateway.refresh()
    (fleet.server.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(PackError) as excinfo:
        gateway.refresh()
    _refused(excinfo, FailureReason.REPLAY)


def test_a_timestamp_pointing_at_an_older_snapshot_is_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    fleet.publish({"packs/demo-1.1.pack": PACK + b"1.1"})
    gateway = fleet.gateway()
    gateway.refresh()
    # A stolen timestamp key signs a fresh timestamp that names the previous snapshot (a rollback).
    path = fleet.server.metadata_dir / "timestamp.json"
    timestamp = Metadata[Timestamp].from_bytes(path.read_bytes())
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta.version -= 1
    fleet.signers["timestamp"].sign_metadata(timestamp)
    path.write_bytes(timestamp.to_bytes())
    with pytest.raises(PackError) as excinfo:
        gateway.refresh()
    _refused(excinfo, FailureReason.REPLAY)


def test_expired_metadata_is_refused(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    online = {role: fleet.signers[role] for role in ("snapshot", "timestamp")}
    OnlineMetadata(fleet.server.metadata_dir, online, expiry_days={"timestamp": -1}).resign(force=True)
    with pytest.raises(PackError) as excinfo:
        fleet.gateway().download(TARGET, length=len(PACK), sha256=_sha(PACK))
    _refused(excinfo, FailureReason.EXPIRED)
    assert _files(fleet.tmp / "gw" / "artifacts") == []


def test_a_cut_download_resumes_with_a_range_request(fleet: Fleet) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    fleet.publish({"software/bmsgate-2.0.whl": big})
    name = f"{_sha(big)}.bmsgate-2.0.whl"
    fleet.tap.cut_after[name] = 300_000
    gateway = fleet.gateway()
    with pytest.raises(PackError) as excinfo:
        gateway.download("software/bmsgate-2.0.whl", length=len(big), sha256=_sha(big))
    _refused(excinfo, FailureReason.DOWNLOAD)
    partials = _files(fleet.tmp / "gw" / "metadata" / "partial")
    assert len(partials) == 1
    assert 0 < partials[0].stat().st_size <= 300_000
    assert _files(fleet.tmp / "gw" / "artifacts") == []
    resumed_from = partials[0].stat().st_size
    path = gateway.download("software/bmsgate-2.0.whl", length=len(big), sha256=_sha(big))
    assert path.read_bytes() == big
    ranges = [ranged for request, ranged in fleet.tap.requests if request.endswith(name)]
    assert ranges == ["", f"bytes={resumed_from}-"]
    assert _files(fleet.tmp / "gw" / "metadata" / "partial") == []


def test_the_gateway_follows_a_root_rotation(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    gateway = fleet.gateway()
    gateway.refresh()
    assert gateway.root_version == 1
    # Offline: new root and timestamp keys; the new root is signed by the old and the new root keys.
    new_dir = fleet.tmp / "rotated"
    new_root_key, new_timestamp = generate_key(new_dir, "root"), generate_key(new_dir, "timestamp")
    (new_dir / "snapshot.key").write_bytes((fleet.keys / "snapshot.key").read_bytes())
    (new_dir / "snapshot.pub.json").write_bytes((fleet.keys / "snapshot.pub.json").read_bytes())
    root_v2 = rotate_root(
        fleet.root_json,
        new_keys={"root": [new_root_key], "timestamp": [new_timestamp]},
        signers=[fleet.signers["root"], new_root_key],
    )
    (new_dir / "root.json").write_bytes(root_v2)
    assert fleet.server.install_root(new_dir / "root.json", online_keys=new_dir) == 2
    gateway.refresh()
    assert gateway.root_version == 2
    assert gateway.download(TARGET, length=len(PACK), sha256=_sha(PACK)).read_bytes() == PACK
    # Desired states now verify with the new timestamp key only.
    assert gateway.verify_desired(sign_desired(_state(), new_timestamp)).generation == 1
    with pytest.raises(PackError) as excinfo:
        gateway.verify_desired(sign_desired(_state(), fleet.signers["timestamp"]))
    _refused(excinfo, FailureReason.SIGNATURE)
    # A gateway enrolled with the old root follows the chain too; after a restart, the cached root counts.
    late = fleet.gateway("late")
    late.refresh()
    assert late.root_version == 2
    assert fleet.gateway("late").root_version == 2


def test_a_root_signed_only_by_the_new_key_is_refused_by_the_server(fleet: Fleet) -> None:
    new_dir = fleet.tmp / "rotated"
    new_root_key = generate_key(new_dir, "root")
    with pytest.raises(PackError) as excinfo:
        rotate_root(fleet.root_json, new_keys={"root": [new_root_key]}, signers=[new_root_key])
    _refused(excinfo, FailureReason.SIGNATURE)


def test_rollback_protection_survives_a_restart(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    old = {name: (fleet.server.metadata_dir / name).read_bytes() for name in ("timestamp.json",)}
    fleet.publish({"packs/demo-1.1.pack": PACK + b"1.1"})
    fleet.gateway().refresh()
    for name, data in old.items():
        (fleet.server.metadata_dir / name).write_bytes(data)
    # A new instance (the gateway restarted) with the same metadata directory and the enrolment's root.
    restarted = fleet.gateway()
    with pytest.raises(PackError) as excinfo:
        restarted.refresh()
    _refused(excinfo, FailureReason.REPLAY)
    # A gateway without that memory would have taken it: the protection is the persisted metadata.
    fleet.gateway("amnesiac").refresh()


def test_the_desired_state_must_be_signed_by_the_timestamp_key_and_not_expired(fleet: Fleet) -> None:
    fleet.publish({TARGET: PACK})
    gateway = fleet.gateway()
    envelope = fleet.server.sign_desired(_state())
    assert gateway.verify_desired(envelope) == envelope.signed
    with pytest.raises(PackError) as excinfo:
        gateway.verify_desired(sign_desired(_state(), fleet.signers["snapshot"]))
    _refused(excinfo, FailureReason.SIGNATURE)
    tampered = envelope.model_copy(update={"signed": _state(generation=2)})
    with pytest.raises(PackError) as excinfo:
        gateway.verify_desired(tampered)
    _refused(excinfo, FailureReason.SIGNATURE)
    with pytest.raises(PackError) as excinfo:
        gateway.verify_desired(fleet.server.sign_desired(_state(expires_in=-1)))
    _refused(excinfo, FailureReason.EXPIRED)
    later = envelope.signed.expires_at + 1
    with pytest.raises(PackError) as excinfo:
        gateway.verify_desired(envelope, now=later)
    _refused(excinfo, FailureReason.EXPIRED)


def test_no_trusted_root_at_all_is_refused(tmp_path: Path) -> None:
    from bmsgate.packs.trust import TrustedRepository

    with pytest.raises(PackError) as excinfo:
        TrustedRepository(tmp_path / "m", tmp_path / "a", "https://localhost:1/tuf", ca_pem=None)
    _refused(excinfo, FailureReason.SIGNATURE)
    with pytest.raises(PackError) as excinfo:
        TrustedRepository(tmp_path / "m", tmp_path / "a", "https://localhost:1/tuf", ca_pem=None, bootstrap_root=b"{}")
    _refused(excinfo, FailureReason.SIGNATURE)


def test_an_unreachable_server_is_a_download_failure(fleet: Fleet, tmp_path: Path) -> None:
    from bmsgate.packs.trust import TrustedRepository

    gateway = TrustedRepository(
        tmp_path / "m", tmp_path / "a", "https://127.0.0.1:9/tuf", ca_pem=fleet.ca_pem, bootstrap_root=fleet.root_json
    )
    with pytest.raises(PackError) as excinfo:
        gateway.refresh()
    _refused(excinfo, FailureReason.DOWNLOAD)


def test_a_server_with_a_certificate_of_another_ca_is_a_download_failure(fleet: Fleet, tmp_path: Path) -> None:
    from bmsgate.fleet.server.tls import FleetPki
    from bmsgate.packs.trust import TrustedRepository

    other = FleetPki(tmp_path / "other-ca")
    other.ensure_ca()
    gateway = TrustedRepository(
        tmp_path / "m", tmp_path / "a", fleet.base_url + "/tuf", ca_pem=other.ca_pem, bootstrap_root=fleet.root_json
    )
    with pytest.raises(PackError) as excinfo:
        gateway.refresh()
    _refused(excinfo, FailureReason.DOWNLOAD)
    assert "certificate" in str(excinfo.value).lower()


def test_key_files_are_private_and_load_back(tmp_path: Path) -> None:
    signer = generate_key(tmp_path, "timestamp")
    assert (tmp_path / "timestamp.key").stat().st_mode & 0o777 == 0o600
    assert load_signer(tmp_path, "timestamp").keyid == signer.keyid
    with pytest.raises(PackError):
        generate_key(tmp_path, "timestamp")
    (tmp_path / "timestamp.pub.json").write_text(json.dumps({"keyid": "x", "key": {}}))
    with pytest.raises(PackError):
        load_signer(tmp_path, "timestamp")


def test_a_missing_artifact_is_a_download_failure_and_an_abandoned_partial_is_dropped(fleet: Fleet) -> None:
    big = bytes(range(256)) * 1024
    fleet.publish({"software/a-1.whl": big, "software/b-1.whl": big[::-1]})
    gateway = fleet.gateway()
    fleet.tap.cut_after[f"{_sha(big)}.a-1.whl"] = 100_000
    with pytest.raises(PackError):
        gateway.download("software/a-1.whl", length=len(big), sha256=_sha(big))
    assert len(_files(fleet.tmp / "gw" / "metadata" / "partial")) == 1
    (fleet.server.targets_dir / "software" / f"{_sha(big[::-1])}.b-1.whl").unlink()
    with pytest.raises(PackError) as excinfo:
        gateway.download("software/b-1.whl", length=len(big), sha256=_sha(big[::-1]))
    _refused(excinfo, FailureReason.DOWNLOAD)
    assert "404" in str(excinfo.value)
    # the desired state moved on to b: a's partial is gone, and nothing reached artifacts_dir
    assert _files(fleet.tmp / "gw" / "metadata" / "partial") == []
    assert _files(fleet.tmp / "gw" / "artifacts") == []
