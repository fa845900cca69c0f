"""The fleet server's TUF repository on disk: installed roots, published targets, online re-signing.

Layout under the server's data directory (directories 0700, keys 0600)::

    tuf/
      metadata/    root.json N.root.json, targets.json N.targets.json, snapshot.json N.snapshot.json,
                   timestamp.json          (served at /tuf/metadata/)
      targets/     packs/<sha256>.<file>, software/<sha256>.<file>   (served at /tuf/targets/)
      keys/        snapshot.key snapshot.pub.json timestamp.key timestamp.pub.json   (the online keys)
      endpoint.json  the artifacts base URL gateways use (written by ``fleet serve``)
      lock           held while anything here changes (the CLI and the running server)

The server holds only the online keys: it can re-sign snapshot and timestamp (and desired states), never
change which files are authentic (targets.json is signed offline) nor who holds which role (root.json).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason
from bmsgate.packs.errors import PackError
from bmsgate.packs.trust import (
    KeySigner,
    OnlineMetadata,
    OnlineSigner,
    TargetsInfo,
    load_signer,
    read_root,
    read_targets,
    sign_desired,
)

__all__ = ["DEFAULT_ARTIFACTS_PORT", "ONLINE_ROLES", "PackRepository", "file_digest"]

ONLINE_ROLES: Final = ("snapshot", "timestamp")
DEFAULT_ARTIFACTS_PORT: Final = 8443
"""The fleet server's HTTPS port for the repository (``fleet serve --artifacts-port``)."""
_MAX_METADATA_FILE: Final = 4 * 1024 * 1024


def file_digest(path: Path) -> tuple[int, str]:
    """``(length, sha256 hex)`` of a file.

    Raises:
        PackError: (internal) it cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            length = 0
            while chunk := file.read(1 << 20):
                digest.update(chunk)
                length += len(chunk)
    except OSError as exc:
        raise PackError(FailureReason.INTERNAL, f"cannot read: {exc.strerror or exc}", source=str(path)) from exc
    return length, digest.hexdigest()


def _read_small(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_METADATA_FILE + 1)
    except OSError as exc:
        raise PackError(FailureReason.INTERNAL, f"cannot read {what}: {exc.strerror or exc}", source=str(path)) from exc
    if len(data) > _MAX_METADATA_FILE:
        raise PackError(FailureReason.INTERNAL, f"{what} larger than {_MAX_METADATA_FILE} bytes", source=str(path))
    return data


class PackRepository:
    """The ``tuf/`` directory of a fleet server's data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.metadata_dir = directory / "metadata"
        self.targets_dir = directory / "targets"
        self.keys_dir = directory / "keys"
        self.endpoint_file = directory / "endpoint.json"

    @property
    def initialised(self) -> bool:
        """Whether a root is installed."""
        return (self.metadata_dir / "root.json").is_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        for path in (self.directory, self.metadata_dir, self.targets_dir, self.keys_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(stat.S_IRWXU)
        with (self.directory / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _signers(self) -> dict[str, KeySigner]:
        return {role: load_signer(self.keys_dir, role) for role in ONLINE_ROLES}

    def _online(self) -> OnlineMetadata:
        if not self.initialised:
            raise PackError(FailureReason.INTERNAL, "the pack repository has no root yet (bmsgate fleet pack init)")
        return OnlineMetadata(self.metadata_dir, self._signers())

    def install_root(
        self, root_file: Path, *, online_keys: Path | None = None, targets_file: Path | None = None
    ) -> int:
        """Install the first root, or the next one (a rotation); returns its version.

        ``online_keys``: a directory with the snapshot and timestamp key pairs (``<role>.key`` and
        ``<role>.pub.json``) to use from now on; needed at the first install and when the root names
        new online keys. ``targets_file``: a targets.json to publish with it (needed when the root names a
        new targets key: the one in force would no longer verify).

        Raises:
            PackError: the root is invalid or not the next version, the online keys are not the root's, or
                the targets in force do not verify under the new root and no new targets.json is given.
        """
        data = _read_small(root_file, "root.json")
        new_root = read_root(data)
        if online_keys is None and not self.initialised:
            raise PackError(FailureReason.INTERNAL, "the first root needs the online keys (--online-keys DIR)")
        with self._locked():
            signers = (
                {role: load_signer(online_keys, role) for role in ONLINE_ROLES}
                if online_keys is not None
                else self._signers()
            )
            online = OnlineMetadata(self.metadata_dir, signers)
            targets = _read_small(targets_file, "targets.json") if targets_file is not None else None
            current = self.metadata_dir / "targets.json"
            if targets is None and current.is_file():
                read_targets(current.read_bytes(), new_root, what="the targets.json in force, under the new root")
            online.install_root(data)
            if online_keys is not None:
                for role in ONLINE_ROLES:
                    for suffix in (".key", ".pub.json"):
                        copy = self.keys_dir / f"{role}{suffix}"
                        shutil.copyfile(online_keys / f"{role}{suffix}", copy)
                        copy.chmod(stat.S_IRUSR | stat.S_IWUSR)
            if targets is not None:
                online.install_targets(targets)
            else:
                online.resign(force=True)
        return int(new_root.signed.version)

    def publish(self, targets_file: Path, artifacts: Sequence[Path]) -> TargetsInfo:
        """Publish an offline-signed targets.json with the files it adds; snapshot and timestamp re-signed.

        Each artifact must be one of the targets (same length and sha256); each target must have its file
        here already or among ``artifacts``. Nothing is published when anything does not match.

        Raises:
            PackError: (signature) not signed by the targets key; (replay) not newer; (mismatch) an artifact
                the metadata does not name; (unknown_target) a target whose file is missing; (expired).
        """
        data = _read_small(targets_file, "targets.json")
        with self._locked():
            online = self._online()
            info = read_targets(data, online.trusted_root())
            current = online.current_targets()
            if current is not None and info.version <= current.version:
                raise PackError(FailureReason.REPLAY, f"targets version {info.version} is not above {current.version}")
            if info.expires <= datetime.datetime.now(datetime.UTC):
                raise PackError(FailureReason.EXPIRED, f"targets.json expired at {info.expires:%Y-%m-%d %H:%M}Z")
            given = {file_digest(path): path for path in artifacts}
            named = {(entry.length, entry.sha256) for entry in info.targets}
            for (length, sha256), path in given.items():
                if (length, sha256) not in named:
                    raise PackError(
                        FailureReason.MISMATCH,
                        f"targets.json names no file of {length} bytes with sha256 {sha256[:12]}…",
                        source=str(path),
                    )
            for entry in info.targets:
                stored = self.targets_dir / entry.stored_name
                source = given.get((entry.length, entry.sha256))
                if source is not None and not stored.is_file():
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    incoming = stored.with_name(f".{stored.name}.incoming")
                    shutil.copyfile(source, incoming)
                    os.replace(incoming, stored)
                if not stored.is_file():
                    raise PackError(FailureReason.UNKNOWN_TARGET, f"{entry.path}: its file was not given (ARTIFACT...)")
            return online.install_targets(data)

    def refresh(self) -> bool:
        """Re-sign snapshot/timestamp if they expire within half their lifetime; whether anything was signed.

        The server calls this periodically (a no-op while the repository has no root or no targets).
        """
        if not self.initialised:
            return False
        with self._locked():
            return self._online().resign()

    def targets(self) -> TargetsInfo | None:
        """The targets in force (None before the first publish)."""
        return self._online().current_targets()

    def expiries(self) -> dict[str, str]:
        """When each role's metadata in force expires (ISO 8601, UTC)."""
        return {role: when.isoformat() for role, when in self._online().expiries().items()}

    def trusted_root(self) -> bytes:
        """The root.json in force (what ``fleet enroll`` gives new gateways)."""
        return _read_small(self.metadata_dir / "root.json", "root.json")

    def timestamp_signer(self) -> OnlineSigner:
        """The online timestamp key (it signs the desired states)."""
        return load_signer(self.keys_dir, "timestamp")

    def sign_desired(self, state: DesiredState) -> DesiredEnvelope:
        """``state`` signed with the online timestamp key."""
        return sign_desired(state, self.timestamp_signer())

    def write_endpoint(self, artifacts_url: str) -> None:
        """Record the base URL gateways fetch from (``fleet enroll`` puts it into credentials files)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.endpoint_file.write_text(json.dumps({"artifacts_url": artifacts_url}) + "\n", encoding="utf-8")

    def read_endpoint(self) -> str | None:
        """The base URL the last ``fleet serve`` recorded (None: never started with the artifacts listener)."""
        try:
            value = json.loads(self.endpoint_file.read_text(encoding="utf-8")).get("artifacts_url")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
