"""TUF for packs and gateway software: keys, signed metadata, the gateway's updater (the only python-tuf import).

Why one long module: it is the one adapter of python-tuf and securesystemslib (tests/test_architecture.py), so
everything that touches their types lives here — keys, the offline signing steps, the server's online
re-signing (python-tuf's ``tuf.repository.Repository``), the gateway's ``ngclient.Updater`` with our fetcher,
and the desired state's signature — and every exception they raise becomes a
:class:`~bmsgate.packs.errors.PackError` here. The disk layout of the server's repository is
:mod:`bmsgate.packs.repository`; the HTTPS transfer is :mod:`bmsgate.packs.fetch`.

The roles (TUF's four top-level roles, Ed25519 keys, threshold 1 unless given)::

    root       offline  signs root.json: which keys hold which role            default expiry 365 days
    targets    offline  signs targets.json: every authentic file (path, length, sha256, custom)   90 days
    snapshot   online   signs snapshot.json: the targets.json version in force                      7 days
    timestamp  online   signs timestamp.json: the snapshot version in force (re-signed daily)       1 day
                        and each gateway's desired state (see :func:`sign_desired`)

Consistent snapshots: metadata is published as ``N.root.json``, ``N.targets.json``, ``N.snapshot.json`` and
``timestamp.json``; a target ``packs/x.pack`` as ``packs/<sha256>.x.pack``.

The gateway's API (the fleet agent calls these; blocking, each failure a ``PackError`` with its reason)::

    repo = TrustedRepository(metadata_dir, artifacts_dir, base_url, ca_pem=..., bootstrap_root=root_json)
    repo.refresh()                                   # root → timestamp → snapshot → targets, persisted
    state = repo.verify_desired(envelope)            # timestamp-role signature (threshold) and expiry
    path = repo.download(target, length=..., sha256=..., progress=cb)   # verified file in artifacts_dir

``metadata_dir`` keeps the trusted metadata (so rollback and freeze protection survive a restart) and the
partial downloads; ``artifacts_dir`` receives only verified files. ``bootstrap_root`` (the root.json from
the credentials file) is the trust anchor on the first start; once ``metadata_dir`` holds a trusted root,
that one is (it may be newer: the gateway followed a root rotation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import IO, Any, Final, TypeAlias, TypeVar

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from securesystemslib.signer import Signature as TufSignature
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig
from tuf.repository import Repository

from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason, Signature, signing_bytes
from bmsgate.packs.errors import PackError
from bmsgate.packs.fetch import HttpsDownloader, HttpStatusError, Progress, TooLargeError

__all__ = [
    "DEFAULT_EXPIRY_DAYS",
    "ROLES",
    "KeySigner",
    "OnlineMetadata",
    "OnlineSigner",
    "TargetEntry",
    "TargetSpec",
    "TrustedRepository",
    "create_root",
    "generate_key",
    "load_signer",
    "read_root",
    "read_targets",
    "rotate_root",
    "sign_desired",
    "sign_targets",
]

ROLES: Final = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRY_DAYS: Final = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
_MAX_METADATA_BYTES: Final = 4 * 1024 * 1024
_PRIVATE: Final = stat.S_IRUSR | stat.S_IWUSR
_T = TypeVar("_T", Root, Targets)
# The target paths a desired state can name (bmsgate.fleet.updates' _TargetPath): kind/file, one level.
_TARGET_PATH = re.compile(r"[a-z]+/[A-Za-z0-9][A-Za-z0-9._+-]*")
_MAX_TARGET_PATH = 200


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (a temporary sibling, then rename); ``private``: readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    mode = _PRIVATE if private else 0o644
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(descriptor, mode)  # O_CREAT's mode does not apply to a leftover file
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    partial.replace(path)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn python-tuf's and securesystemslib's exceptions into PackError with the gateway's reason."""
    try:
        yield
    except PackError:
        raise
    except tuf_errors.DownloadError as exc:
        if isinstance(exc.__cause__, PackError):
            raise exc.__cause__ from None
        reason = FailureReason.MISMATCH if isinstance(exc, tuf_errors.DownloadLengthMismatchError) else None
        raise PackError(reason or FailureReason.DOWNLOAD, f"{what}: {exc}") from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise PackError(FailureReason.SIGNATURE, f"{what}: signature check failed: {exc}") from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise PackError(FailureReason.EXPIRED, f"{what}: {exc}") from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise PackError(FailureReason.REPLAY, f"{what}: older metadata than already trusted: {exc}") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise PackError(FailureReason.MISMATCH, f"{what}: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise PackError(FailureReason.SIGNATURE, f"{what}: invalid metadata: {exc}") from exc
    except (ValueError, TypeError, KeyError, UnverifiedSignatureError) as exc:
        raise PackError(FailureReason.SIGNATURE, f"{what}: invalid metadata or key: {exc}") from exc
    except OSError as exc:
        raise PackError(FailureReason.INTERNAL, f"{what}: {exc.strerror or exc}") from exc


# -- keys ----------------------------------------------------------------------------------------------------


class KeySigner:
    """An Ed25519 key pair that signs as one role (its private half loaded from a PEM file)."""

    def __init__(self, signer: Signer, public: Key) -> None:
        self._signer = signer
        self.public = public

    @property
    def keyid(self) -> str:
        """The key's TUF key id (hex sha256 of its canonical public form)."""
        return self.public.keyid

    def sign(self, data: bytes) -> str:
        """An Ed25519 signature over ``data``, as hex."""
        return self._signer.sign(data).signature

    def sign_metadata(self, metadata: Metadata[Any], *, append: bool = False) -> None:
        """Add this key's signature to ``metadata`` (replacing the others unless ``append``)."""
        metadata.sign(self._signer, append=append)


OnlineSigner: TypeAlias = KeySigner
"""A server-held (snapshot or timestamp) key; the timestamp key also signs desired states."""


def generate_key(directory: Path, name: str) -> KeySigner:
    """Make a new Ed25519 key pair: ``<name>.key`` (private, PEM, mode 0600) and ``<name>.pub.json``.

    Raises:
        PackError: (internal) the files exist already or cannot be written.
    """
    private, public = directory / f"{name}.key", directory / f"{name}.pub.json"
    if private.exists() or public.exists():
        raise PackError(
            FailureReason.INTERNAL, "a key of this name exists already (not overwritten)", source=str(private)
        )
    signer = CryptoSigner.generate_ed25519()
    with _translated(f"writing key {name}"):
        directory.mkdir(parents=True, exist_ok=True)
        _write_file(private, signer.private_bytes, private=True)
        document = {"keyid": signer.public_key.keyid, "key": signer.public_key.to_dict()}
        _write_file(public, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return KeySigner(signer, signer.public_key)


def load_signer(directory: Path, name: str) -> KeySigner:
    """Load the key pair ``<name>.key`` / ``<name>.pub.json`` of ``directory``.

    Raises:
        PackError: (internal) missing or unreadable; (signature) the halves do not belong together.
    """
    private, public = directory / f"{name}.key", directory / f"{name}.pub.json"
    try:
        document = json.loads(public.read_bytes()[:65536])
        key = SSlibKey.from_dict(str(document["keyid"]), dict(document["key"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackError(FailureReason.INTERNAL, f"cannot read the public key: {exc}", source=str(public)) from exc
    if not private.is_file():
        raise PackError(FailureReason.INTERNAL, "no private key file", source=str(private))
    with _translated(f"loading key {private}"):
        signer = Signer.from_priv_key_uri(f"file2:{private.resolve()}", key)
    return KeySigner(signer, key)


# -- reading metadata ----------------------------------------------------------------------------------------


def _parse(data: bytes, kind: type[_T], what: str) -> Metadata[_T]:
    if len(data) > _MAX_METADATA_BYTES:
        raise PackError(FailureReason.SIGNATURE, f"{what}: larger than {_MAX_METADATA_BYTES} bytes")
    with _translated(what):
        metadata: Metadata[Any] = Metadata.from_bytes(data)
    if not isinstance(metadata.signed, kind):
        raise PackError(FailureReason.SIGNATURE, f"{what}: a {metadata.signed.type} file, not {kind.type}")
    return metadata


def _serialized(metadata: Metadata[Any]) -> bytes:
    return metadata.to_bytes(JSONSerializer(compact=False)) + b"\n"


def _in_days(days: float, now: datetime.datetime | None = None) -> datetime.datetime:
    return (now or _utcnow()) + datetime.timedelta(days=days)


def _verify_by(delegator: Root, role: str, metadata: Metadata[Any], what: str) -> None:
    with _translated(what):
        delegator.verify_delegate(role, metadata.signed_bytes, metadata.signatures)


def read_root(data: bytes, *, what: str = "root.json") -> Metadata[Root]:
    """Parse a root.json and check it is signed by its own root keys (threshold).

    Raises:
        PackError: (signature) malformed or not self-signed.
    """
    root = _parse(data, Root, what)
    _verify_by(root.signed, "root", root, what)
    return root


@dataclasses.dataclass(frozen=True, slots=True)
class TargetSpec:
    """A file to add to targets.json: its target path, where it is, and the custom fields to sign with it."""

    path: str
    file: Path
    custom: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class TargetEntry:
    """One target as the signed metadata lists it."""

    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any]

    @property
    def stored_name(self) -> str:
        """Its file name under a consistent snapshot: ``<dir>/<sha256>.<name>``."""
        directory, slash, name = self.path.rpartition("/")
        return f"{directory}{slash}{self.sha256}.{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class TargetsInfo:
    """What a verified targets.json says."""

    version: int
    expires: datetime.datetime
    targets: tuple[TargetEntry, ...]


def _entry(target: TargetFile) -> TargetEntry:
    sha256 = target.hashes.get("sha256")
    if sha256 is None:
        raise PackError(FailureReason.SIGNATURE, f"target {target.path}: no sha256 hash")
    custom = target.custom if isinstance(target.custom, dict) else {}
    return TargetEntry(path=target.path, length=target.length, sha256=sha256, custom=custom)


def read_targets(data: bytes, root: Metadata[Root], *, what: str = "targets.json") -> TargetsInfo:
    """Parse a targets.json and check it is signed by the root's targets keys (threshold).

    Raises:
        PackError: (signature) malformed or not signed by the targets role.
    """
    targets = _parse(data, Targets, what)
    _verify_by(root.signed, "targets", targets, what)
    entries = tuple(_entry(target) for target in targets.signed.targets.values())
    return TargetsInfo(version=targets.signed.version, expires=targets.signed.expires, targets=entries)


# -- offline: root and targets -------------------------------------------------------------------------------


def create_root(
    keys: Mapping[str, Sequence[KeySigner]],
    *,
    expires_days: float = DEFAULT_EXPIRY_DAYS["root"],
    thresholds: Mapping[str, int] | None = None,
) -> bytes:
    """root.json version 1 naming the keys of each role, signed by the root keys.

    Raises:
        PackError: (signature) a role without keys, or a threshold above its number of keys.
    """
    root = Metadata(Root(expires=_in_days(expires_days), consistent_snapshot=True))
    _assign_keys(root.signed, keys, thresholds or {})
    for signer in keys["root"]:
        signer.sign_metadata(root, append=True)
    _verify_by(root.signed, "root", root, "the new root")
    return _serialized(root)


def _assign_keys(root: Root, keys: Mapping[str, Sequence[KeySigner]], thresholds: Mapping[str, int]) -> None:
    for role in ROLES:
        if role not in keys:
            continue
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for signer in keys[role]:
            root.add_key(signer.public, role)
    for role in ROLES:
        threshold = thresholds.get(role, root.roles[role].threshold)
        if not 1 <= threshold <= len(root.roles[role].keyids):
            raise PackError(FailureReason.SIGNATURE, f"role {role}: threshold {threshold} with its keys unmet")
        root.roles[role].threshold = threshold


def rotate_root(
    current: bytes,
    *,
    new_keys: Mapping[str, Sequence[KeySigner]],
    signers: Sequence[KeySigner],
    expires_days: float = DEFAULT_EXPIRY_DAYS["root"],
) -> bytes:
    """The next root version: ``new_keys`` replace the keys of their roles; signed by ``signers``.

    Gateways accept it only when it is signed by a threshold of the *current* root keys and of the *new*
    root keys, so ``signers`` are the old root keys and the new ones (the same when the root key stays).

    Raises:
        PackError: (signature) the current root is invalid, or the signers meet neither threshold.
    """
    old = read_root(current, what="the current root")
    new = Metadata(deepcopy(old.signed))
    new.signed.version = old.signed.version + 1
    new.signed.expires = _in_days(expires_days)
    _assign_keys(new.signed, new_keys, {})
    for signer in signers:
        signer.sign_metadata(new, append=True)
    _verify_by(old.signed, "root", new, "the new root, by the current root keys")
    _verify_by(new.signed, "root", new, "the new root, by its own root keys")
    return _serialized(new)


def sign_targets(
    root: bytes,
    current: bytes | None,
    add: Sequence[TargetSpec],
    *,
    signer: KeySigner,
    remove: Sequence[str] = (),
    expires_days: float = DEFAULT_EXPIRY_DAYS["targets"],
    current_root: bytes | None = None,
) -> bytes:
    """The next targets.json: the current one (None: none yet) with ``add`` added or replaced, ``remove`` gone.

    The current targets.json is checked against ``current_root`` (default ``root``): after a rotation of
    the targets key it is the previous root that signed it.

    Raises:
        PackError: (signature) the current targets.json is not this root's, or ``signer`` holds no targets
            key of it; (unknown_target) a path to remove is not listed, or a path to add is not of the form
            ``kind/file``; (internal) a file cannot be read.
    """
    trusted_root = read_root(root)
    if current is None:
        targets = Metadata(Targets())
        version = 1
    else:
        targets = _parse(current, Targets, "the current targets.json")
        previous = trusted_root if current_root is None else read_root(current_root, what="the previous root")
        _verify_by(previous.signed, "targets", targets, "the current targets.json")
        version = targets.signed.version + 1
    for path in remove:
        if targets.signed.targets.pop(path, None) is None:
            raise PackError(FailureReason.UNKNOWN_TARGET, f"no target {path!r} to remove")
    for spec in add:
        if len(spec.path) > _MAX_TARGET_PATH or not _TARGET_PATH.fullmatch(spec.path):
            raise PackError(FailureReason.UNKNOWN_TARGET, f"{spec.path!r} is not a target path (kind/file)")
        with _translated(f"hashing {spec.file}"):
            target = TargetFile.from_file(spec.path, str(spec.file), ["sha256"])
        if spec.custom:
            target.unrecognized_fields["custom"] = dict(spec.custom)
        targets.signed.targets[spec.path] = target
    targets.signed.version = version
    targets.signed.expires = _in_days(expires_days)
    signer.sign_metadata(targets)
    _verify_by(trusted_root.signed, "targets", targets, f"the new targets.json signed by key {signer.keyid[:12]}")
    return _serialized(targets)


# -- online: the server's snapshot and timestamp -------------------------------------------------------------


class OnlineMetadata(Repository):
    """The server's metadata directory, re-signed with the online snapshot and timestamp keys.

    Built on python-tuf's ``Repository`` (its ``do_snapshot`` / ``do_timestamp``); writes consistent-snapshot
    file names (``N.snapshot.json``, ``N.targets.json``, ``N.root.json``) beside the plain ones. Not safe
    for two writers at once: :mod:`bmsgate.packs.repository` holds a lock around it.
    """

    def __init__(
        self, directory: Path, signers: Mapping[str, KeySigner], *, expiry_days: Mapping[str, float] | None = None
    ) -> None:
        self._dir = directory
        self._signers = signers
        self._expiry = {**DEFAULT_EXPIRY_DAYS, **(expiry_days or {})}

    def open(self, role: str) -> Metadata:  # type: ignore[type-arg] # python-tuf's own signature
        """The stored metadata of ``role`` (a fresh one for snapshot and timestamp on the first publish)."""
        path = self._dir / f"{role}.json"
        if path.is_file():
            with _translated(str(path)):
                return Metadata.from_bytes(path.read_bytes())
        if role == Snapshot.type:
            return Metadata(Snapshot())
        if role == Timestamp.type:
            return Metadata(Timestamp())
        raise PackError(FailureReason.UNKNOWN_TARGET, f"no {role}.json in the repository yet", source=str(path))

    def close(self, role: str, md: Metadata) -> None:  # type: ignore[type-arg]
        """Store a new version of an online role: version + 1, fresh expiry, signed by the online key."""
        signer = self._signers.get(role)
        if signer is None:
            raise PackError(FailureReason.SIGNATURE, f"no online key for the {role} role")
        md.signed.version = self._stored_version(role) + 1
        md.signed.expires = _in_days(self._expiry[role])
        signer.sign_metadata(md)
        _verify_by(self.root(), role, md, f"the new {role}.json")
        self.write(role, _serialized(md), version=md.signed.version)

    def write(self, role: str, data: bytes, *, version: int) -> None:
        """Store one role's file (and its versioned copy, except for timestamp)."""
        if role != Timestamp.type:
            _write_file(self._dir / f"{version}.{role}.json", data)
        _write_file(self._dir / f"{role}.json", data)

    def _stored_version(self, role: str) -> int:
        path = self._dir / f"{role}.json"
        if not path.is_file():
            return 0
        version: int = self.open(role).signed.version
        return version

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        """The targets.json version in force (python-tuf's do_snapshot puts it into snapshot.json)."""
        return {"targets.json": MetaFile(version=self.targets().version)}

    @property
    def snapshot_info(self) -> MetaFile:
        """The snapshot.json version in force (python-tuf's do_timestamp puts it into timestamp.json)."""
        return MetaFile(version=self.snapshot().version)

    def trusted_root(self) -> Metadata[Root]:
        """The root in force, checked."""
        return read_root((self._dir / "root.json").read_bytes())

    def install_root(self, data: bytes) -> Metadata[Root]:
        """Put a root in force: the first one, or the next version signed by the current root keys.

        Raises:
            PackError: (signature) not self-signed, not signed by the current root, or the online keys
                given are not the new root's snapshot/timestamp keys; (replay) not the next version.
        """
        new = read_root(data)
        if (self._dir / "root.json").is_file():
            current = self.trusted_root()
            if new.signed.version != current.signed.version + 1:
                raise PackError(
                    FailureReason.REPLAY,
                    f"root version {new.signed.version} does not follow the current {current.signed.version}",
                )
            _verify_by(current.signed, "root", new, "the new root, by the current root keys")
        for role in (Snapshot.type, Timestamp.type):
            signer = self._signers.get(role)
            if signer is None or signer.keyid not in new.signed.roles[role].keyids:
                raise PackError(FailureReason.SIGNATURE, f"the online {role} key given is not the root's {role} key")
        self.write(Root.type, data, version=new.signed.version)
        return new

    def install_targets(self, data: bytes) -> TargetsInfo:
        """Put an offline-signed targets.json in force and re-sign snapshot and timestamp.

        Raises:
            PackError: (signature) not signed by the targets key(s); (replay) not newer than the one in
                force; (expired) expired already.
        """
        info = read_targets(data, self.trusted_root())
        current = self._stored_version(Targets.type)
        if info.version <= current:
            raise PackError(FailureReason.REPLAY, f"targets version {info.version} is not above {current}")
        if info.expires <= _utcnow():
            raise PackError(FailureReason.EXPIRED, f"targets.json expired at {info.expires:%Y-%m-%d %H:%M}Z")
        self.write(Targets.type, data, version=info.version)
        self.resign(force=True)
        return info

    def current_targets(self) -> TargetsInfo | None:
        """The targets.json in force (None before the first publish)."""
        path = self._dir / "targets.json"
        if not path.is_file():
            return None
        return read_targets(path.read_bytes(), self.trusted_root())

    def resign(self, *, force: bool = False, margin: Mapping[str, float] | None = None) -> bool:
        """New snapshot/timestamp when ``force``, when targets changed, or when one expires within ``margin``.

        ``margin`` (days per role; default half of each role's lifetime) is how early an expiring
        snapshot or timestamp is re-signed. Returns whether anything was signed.
        """
        if not (self._dir / "targets.json").is_file():
            return False
        margin = margin or {role: days / 2 for role, days in self._expiry.items()}
        soon = _utcnow()
        with _translated("re-signing snapshot and timestamp"):
            snapshot_due = force or self._expires_within(Snapshot.type, margin[Snapshot.type], soon)
            snapshot_made, _ = self.do_snapshot(force=snapshot_due)
            timestamp_due = snapshot_made or self._expires_within(Timestamp.type, margin[Timestamp.type], soon)
            timestamp_made, _ = self.do_timestamp(force=timestamp_due)
        return snapshot_made or timestamp_made

    def _expires_within(self, role: str, days: float, now: datetime.datetime) -> bool:
        path = self._dir / f"{role}.json"
        return not path.is_file() or self.open(role).signed.expires <= _in_days(days, now)

    def expiries(self) -> dict[str, datetime.datetime]:
        """When each role's metadata in force expires."""
        return {role: self.open(role).signed.expires for role in ROLES if (self._dir / f"{role}.json").is_file()}


# -- the desired state's signature ---------------------------------------------------------------------------


def sign_desired(state: DesiredState, signer: OnlineSigner) -> DesiredEnvelope:
    """The envelope of ``state`` signed by the server's online timestamp key (server side)."""
    signature = Signature(keyid=signer.keyid, sig=signer.sign(signing_bytes(state)))
    return DesiredEnvelope(signed=state, signatures=(signature,))


# -- the gateway's updater -----------------------------------------------------------------------------------


class _Fetcher(FetcherInterface):
    """python-tuf's network hook, over our own downloader; artifacts resume from a partial file."""

    def __init__(self, downloader: HttpsDownloader, targets_url: str, partial_dir: Path) -> None:
        self._downloader = downloader
        self._targets_url = targets_url
        self._partial_dir = partial_dir
        self.progress: Progress | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        yield self.download_bytes(url, _MAX_METADATA_BYTES)

    def download_bytes(self, url: str, max_length: int) -> bytes:
        """A metadata file, at most ``max_length`` bytes."""
        data: bytes = self._call(lambda: self._downloader.fetch(url, max_length))
        return data

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """An artifact (resumable) or a metadata file, as an open file for python-tuf to verify."""
        if not url.startswith(self._targets_url):
            yield io.BytesIO(self.download_bytes(url, max_length))
            return
        partial = self._partial_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
        # One artifact at a time: what another, abandoned download left is dropped (bounded disk use).
        if self._partial_dir.is_dir():
            for other in self._partial_dir.glob("*.part"):
                if other != partial:
                    other.unlink(missing_ok=True)
        path = self._call(lambda: self._downloader.fetch_to(url, partial, max_length, self.progress))
        try:
            with path.open("rb") as file:
                yield file
        finally:
            # Used or refused (hash mismatch): either way these bytes are done with; a cut transfer
            # never reaches this point and keeps its partial file for the next attempt.
            partial.unlink(missing_ok=True)

    @staticmethod
    def _call(transfer: Callable[[], Any]) -> Any:
        try:
            return transfer()
        except HttpStatusError as exc:
            raise tuf_errors.DownloadHTTPError(str(exc), exc.status) from exc
        except TooLargeError as exc:
            raise tuf_errors.DownloadLengthMismatchError(str(exc)) from exc
        except PackError as exc:
            raise tuf_errors.DownloadError(str(exc)) from exc


class TrustedRepository:
    """The gateway's view of the fleet's TUF repository (see the module docstring for the API).

    Args:
        metadata_dir: where the trusted metadata persists (and partial downloads wait).
        artifacts_dir: where verified artifacts go (``<artifacts_dir>/<target path>``); nothing else.
        base_url: the repository's base URL, e.g. ``https://fleet.example:8443/tuf`` (``/metadata/`` and
            ``/targets/`` below it).
        ca_pem: the fleet CA the server's certificate must chain to (None: the system's store).
        bootstrap_root: root.json to trust on the first start (the credentials file's ``tuf_root``).

    Not for two threads at once (one instance per gateway, used by its update agent).

    Raises:
        PackError: (signature) no usable trusted root.
    """

    def __init__(
        self,
        metadata_dir: Path,
        artifacts_dir: Path,
        base_url: str,
        *,
        ca_pem: str | None,
        bootstrap_root: bytes | None = None,
    ) -> None:
        self._metadata_dir = metadata_dir
        self._artifacts_dir = artifacts_dir
        base = base_url.rstrip("/")
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"
        self._bootstrap = bootstrap_root
        with _translated("preparing the trust directories"):
            metadata_dir.mkdir(parents=True, exist_ok=True)
            artifacts_dir.mkdir(parents=True, exist_ok=True)
        self._fetcher = _Fetcher(HttpsDownloader(ca_pem=ca_pem), self._targets_url, metadata_dir / "partial")
        self._updater = self._new_updater()
        self._refreshed = False

    def _new_updater(self) -> Updater:
        cached = self._metadata_dir / "root.json"
        if not cached.exists() and self._bootstrap is None:
            raise PackError(FailureReason.SIGNATURE, "no trusted root: neither a cached root.json nor a bootstrap root")
        with _translated("the trusted root"):
            updater = Updater(
                str(self._metadata_dir),
                self._metadata_url,
                str(self._artifacts_dir),
                self._targets_url,
                self._fetcher,
                UpdaterConfig(max_root_rotations=32),
                bootstrap=None if cached.exists() else self._bootstrap,
            )
            self._root = read_root(cached.read_bytes(), what="the trusted root")
        return updater

    @property
    def root_version(self) -> int:
        """The version of the root this gateway trusts now."""
        return self._root.signed.version

    def refresh(self) -> None:
        """Fetch and verify root (following rotations), timestamp, snapshot and targets; persist them.

        Raises:
            PackError: signature, expired, replay (older than trusted), mismatch, or download.
        """
        updater = self._new_updater()
        with _translated("refreshing the trust metadata"):
            updater.refresh()
            self._root = read_root((self._metadata_dir / "root.json").read_bytes(), what="the trusted root")
        self._updater = updater
        self._refreshed = True

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        """The verified artifact ``target`` in ``artifacts_dir`` (downloaded unless already there).

        ``length`` and ``sha256`` are what the desired state names: they must be what the signed targets
        metadata says, and the bytes must match both. Refreshes first if this instance has not.

        Raises:
            PackError: unknown_target (not in the signed metadata), mismatch (the desired state names other
                bytes, or the download is not those bytes), download (resumable), or a refresh failure.
        """
        if not self._refreshed:
            self.refresh()
        destination = self._destination(target)
        with _translated(f"target {target}"):
            info = self._updater.get_targetinfo(target)
        if info is None:
            raise PackError(FailureReason.UNKNOWN_TARGET, f"{target} is not in the signed targets metadata")
        signed = _entry(info)
        if (signed.length, signed.sha256) != (length, sha256):
            raise PackError(
                FailureReason.MISMATCH,
                f"{target}: the desired state names {length} bytes sha256 {sha256[:12]}…, the signed metadata "
                f"{signed.length} bytes sha256 {signed.sha256[:12]}…",
            )
        if self._updater.find_cached_target(info, str(destination)) is not None:
            return destination
        incoming = destination.with_name(f".{destination.name}.incoming")
        self._fetcher.progress = progress
        try:
            with _translated(f"target {target}"):
                self._updater.download_target(info, str(incoming))
            incoming.replace(destination)
        finally:
            self._fetcher.progress = None
            incoming.unlink(missing_ok=True)
        return destination

    def _destination(self, target: str) -> Path:
        parts = target.split("/")
        if len(parts) != 2 or any(not part or part.startswith(".") for part in parts):
            raise PackError(FailureReason.UNKNOWN_TARGET, f"{target!r} is not a target path (kind/file)")
        return self._artifacts_dir.joinpath(*parts)

    def verify_desired(self, envelope: DesiredEnvelope, *, now: float | None = None) -> DesiredState:
        """The desired state, if signed by the trusted root's timestamp key(s) (threshold) and not expired.

        The generation (replay) check is the agent's: it knows the last generation it took.

        Raises:
            PackError: (signature) not signed by a threshold of timestamp keys; (expired) past ``expires_at``.
        """
        state = envelope.signed
        signatures = {item.keyid: TufSignature(item.keyid, item.sig) for item in envelope.signatures}
        try:
            self._root.signed.verify_delegate(Timestamp.type, signing_bytes(state), signatures)
        except (tuf_errors.UnsignedMetadataError, ValueError) as exc:
            raise PackError(
                FailureReason.SIGNATURE,
                f"desired state generation {state.generation}: not signed by the fleet's timestamp key ({exc})",
            ) from exc
        moment = time.time() if now is None else now
        if state.expires_at <= moment:
            raise PackError(
                FailureReason.EXPIRED,
                f"desired state generation {state.generation} expired {moment - state.expires_at:.0f} s ago",
            )
        return state
