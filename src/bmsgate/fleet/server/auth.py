"""API bearer tokens and their roles.

A token is 32 random bytes (URL-safe base64), shown once when created; the server keeps only its
SHA-256, so a copy of the data directory does not leak working tokens. Roles nest: a ``technician`` may do
everything a ``viewer`` may, and act (acknowledge alarms, send commands, start rollouts) but not delete;
an ``admin`` may also delete and manage tokens and gateways.

The tokens live in ``tokens.json`` in the server's data directory, rewritten atomically on change and read
again when its modification time changes (so ``bmsgate fleet token create`` takes effect on a running
server without a restart).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Any, Final

from bmsgate.errors import BmsgateError

__all__ = ["TOKENS_FILE", "Role", "TokenError", "TokenInfo", "TokenStore"]

TOKENS_FILE: Final = "tokens.json"
_TOKEN_BYTES: Final = 32
_MAX_LABEL: Final = 128


class TokenError(BmsgateError):
    """The token file is unreadable or damaged, or a token operation is not possible."""


class Role(enum.StrEnum):
    """What a token may do (each role includes the ones before it)."""

    VIEWER = "viewer"
    TECHNICIAN = "technician"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the order viewer < technician < admin."""
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        return self.rank >= needed.rank


_RANKS: Final = {Role.VIEWER: 0, Role.TECHNICIAN: 1, Role.ADMIN: 2}


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """One token as stored (without the token itself)."""

    token_id: str
    """Short public id (the first 8 hex digits of the hash): for listing and revoking."""
    role: Role
    label: str
    created_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The token file of one data directory (thread-safe; cheap to call per request)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / TOKENS_FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, TokenInfo] = {}

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    def create(self, role: Role, label: str = "") -> str:
        """Create a token; returns it (the only time it is ever seen in full)."""
        if len(label) > _MAX_LABEL:
            raise TokenError(f"label longer than {_MAX_LABEL} characters")
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        digest = _digest(token)
        with self._lock:
            self._reload()
            self._by_digest[digest] = TokenInfo(digest[:8], role, label, time.time())
            self._save()
        return token

    def verify(self, token: str) -> TokenInfo | None:
        """The token's info, or None when it is unknown or revoked."""
        if not token or len(token) > 256:
            return None
        digest = _digest(token)
        with self._lock:
            self._reload()
            for known, info in self._by_digest.items():
                if hmac.compare_digest(known, digest):
                    return info
        return None

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        with self._lock:
            self._reload()
            return sorted(self._by_digest.values(), key=lambda info: info.created_at)

    def revoke(self, token_id: str) -> bool:
        """Revoke the token(s) with this public id; False when none has it."""
        with self._lock:
            self._reload()
            doomed = [digest for digest, info in self._by_digest.items() if info.token_id == token_id]
            for digest in doomed:
                del self._by_digest[digest]
            if doomed:
                self._save()
            return bool(doomed)

    def _reload(self) -> None:
        try:
            status = self._path.stat()
        except FileNotFoundError:
            self._by_digest, self._stamp = {}, None
            return
        except OSError as exc:
            raise TokenError(f"{self._path}: {exc.strerror or exc}") from exc
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return
        try:
            raw: Any = json.loads(self._path.read_text(encoding="utf-8"))
            loaded = {
                digest: TokenInfo(digest[:8], Role(entry["role"]), str(entry.get("label", "")), float(entry["created"]))
                for digest, entry in raw["tokens"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TokenError(f"{self._path}: damaged token file ({exc})") from exc
        self._by_digest, self._stamp = loaded, stamp

    def _save(self) -> None:
        data = {
            "v": 1,
            "tokens": {
                digest: {"role": info.role.value, "label": info.label, "created": info.created_at}
                for digest, info in self._by_digest.items()
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_name(self._path.name + ".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2, sort_keys=True)
        partial.replace(self._path)
        status = self._path.stat()
        self._stamp = (status.st_mtime_ns, status.st_size)
