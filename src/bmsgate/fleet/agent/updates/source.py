"""Where an update's artifacts come from: the signed repository (TUF) or a local directory.

Two shapes, on purpose. An :class:`ArtifactSource` only fetches files that it checks against a length and a
sha256 it was given. An :class:`UpdateSource` is an artifact source that also verifies a signed desired state
(the gateway's TUF client, :class:`bmsgate.packs.trust.TrustedRepository`). The engine takes a desired state
from MQTT only through an :class:`UpdateSource`, so no path leads from a broker payload to an installed pack
without the signature check; :class:`LocalArtifacts` has no ``verify_desired`` and serves the installer's
own desired state (built on site from files on a USB stick).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason
from bmsgate.packs.errors import PackError

__all__ = ["ArtifactSource", "LocalArtifacts", "Progress", "UpdateSource"]

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a download runs (from the downloading thread)."""

_CHUNK: Final = 64 * 1024


@runtime_checkable
class ArtifactSource(Protocol):
    """Fetches artifacts by target name, each checked against its length and sha256 (blocking calls)."""

    def refresh(self) -> None:
        """Bring the source's view up to date (TUF: new metadata).

        Raises:
            PackError: the metadata cannot be fetched or trusted.
        """
        ...

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        """The local file holding `target`, verified.

        Raises:
            PackError: reason ``mismatch`` (length or hash), ``unknown_target`` or ``download``.
        """
        ...


@runtime_checkable
class UpdateSource(ArtifactSource, Protocol):
    """An artifact source that also verifies the server's signed desired state."""

    def verify_desired(self, envelope: DesiredEnvelope, *, now: float | None = None) -> DesiredState:
        """The desired state, once its signature and expiry check out.

        Raises:
            PackError: reason ``signature`` or ``expired``.
        """
        ...


class LocalArtifacts:
    """Artifacts in a local directory (``<directory>/<target>``), each checked for length and sha256.

    For an installer on site without a server: the desired state is built by the installer's own command,
    so there is no signature to check here (and no ``verify_desired``: see the module docstring).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def refresh(self) -> None:
        """Nothing to refresh: the directory is what it is."""

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        """The file of `target` in the directory, after checking its length and sha256.

        Raises:
            PackError: reason ``unknown_target`` (no such file, or a name leaving the directory) or
                ``mismatch`` (length or hash differ).
        """
        root = self.directory.resolve()
        path = (root / target).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise PackError(FailureReason.UNKNOWN_TARGET, f"no file {target} in {root}", source=target)
        size = path.stat().st_size
        if size != length:
            raise PackError(FailureReason.MISMATCH, f"{size} bytes, the desired state says {length}", source=target)
        digest = hashlib.sha256()
        done = 0
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, length)
        if digest.hexdigest() != sha256:
            raise PackError(
                FailureReason.MISMATCH, f"sha256 {digest.hexdigest()[:12]}..., expected {sha256[:12]}...", source=target
            )
        return path
