"""A desired-state verifier for the tests of the broker path: Ed25519 over the contract's signing bytes.

It stands in for :class:`bmsgate.packs.trust.TrustedRepository` (the TUF client, built elsewhere) with the
same three methods; its artifacts come from a local directory, checked like the real ones.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bmsgate.fleet.agent.updates.source import LocalArtifacts, Progress
from bmsgate.fleet.updates import DesiredEnvelope, DesiredState, FailureReason, Signature, signing_bytes
from bmsgate.packs.errors import PackError


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


def sign(state: DesiredState, key: Ed25519PrivateKey) -> bytes:
    """The ``desired`` payload: `state` signed by `key`."""
    signature = Signature(keyid=key_id(key.public_key()), sig=key.sign(signing_bytes(state)).hex())
    return DesiredEnvelope(signed=state, signatures=(signature,)).model_dump_json().encode()


class SignedDirectory:
    """Verifies desired states against one trusted key; serves artifacts from a directory."""

    def __init__(self, directory: Path, trusted: Ed25519PublicKey) -> None:
        self.artifacts = LocalArtifacts(directory)
        self.trusted = trusted
        self.refreshes = 0

    def refresh(self) -> None:
        self.refreshes += 1

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        return self.artifacts.download(target, length=length, sha256=sha256, progress=progress)

    def verify_desired(self, envelope: DesiredEnvelope, *, now: float | None = None) -> DesiredState:
        wanted = key_id(self.trusted)
        for signature in envelope.signatures:
            if signature.keyid != wanted:
                continue
            try:
                self.trusted.verify(bytes.fromhex(signature.sig), signing_bytes(envelope.signed))
            except (InvalidSignature, ValueError):
                break
            if envelope.signed.expires_at < (time.time() if now is None else now):
                raise PackError(FailureReason.EXPIRED, "the desired state has expired")
            return envelope.signed
        raise PackError(FailureReason.SIGNATURE, "no valid signature by the trusted key")
