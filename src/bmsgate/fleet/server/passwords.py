"""Broker passwords: random secrets and Mosquitto's own ``$7$`` hash format (PBKDF2-HMAC-SHA512).

A line of Mosquitto's password file is ``user:$7$<iterations>$<salt base64>$<hash base64>``; this module
writes that format itself, so the server needs no ``mosquitto_passwd`` binary (and the same hash is what
``devices.json`` keeps: the plain password exists only in the gateway's credentials file).

The secrets are 32 random bytes, so the hash's iteration count protects nothing a brute force could
reach; it stays at Mosquitto's own default (101) because the broker pays it on every connect, and a fleet
reconnecting after an outage connects thousands of gateways at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

from bmsgate.errors import BmsgateError

__all__ = ["PasswordFormatError", "check_hash", "hash_password", "new_password", "verify_password"]

_PREFIX: Final = "$7$"
_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12
_HASH_BYTES: Final = 64
_SECRET_BYTES: Final = 32
_MAX_ITERATIONS: Final = 100_000
"""Bounds the work a damaged or hostile stored hash can ask for (PBKDF2 time grows with it)."""
_MAX_HASH_TEXT: Final = 512


class PasswordFormatError(BmsgateError):
    """A stored password hash is not in Mosquitto's ``$7$`` format."""


def new_password() -> str:
    """A fresh random password (URL-safe text, 43 characters)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def hash_password(password: str, *, iterations: int = _ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` hash of `password` as Mosquitto's password file holds it."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"{_PREFIX}{iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _parse(stored: str) -> tuple[int, bytes, bytes]:
    if len(stored) > _MAX_HASH_TEXT or not stored.startswith(_PREFIX):
        raise PasswordFormatError("not a $7$ (PBKDF2-SHA512) password hash")
    parts = stored[len(_PREFIX) :].split("$")
    if len(parts) != 3 or not parts[0].isdigit():
        raise PasswordFormatError("expected $7$<iterations>$<salt>$<hash>")
    iterations = int(parts[0])
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise PasswordFormatError(f"iteration count {iterations} out of range")
    try:
        salt = base64.b64decode(parts[1], validate=True)
        digest = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PasswordFormatError(f"bad base64 in the hash: {exc}") from None
    if not salt or len(digest) != _HASH_BYTES:
        raise PasswordFormatError("salt empty or hash not 64 bytes")
    return iterations, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches the ``$7$`` hash `stored`.

    Raises:
        PasswordFormatError: `stored` is not a ``$7$`` hash.
    """
    iterations, salt, digest = _parse(stored)
    candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return hmac.compare_digest(candidate, digest)


def check_hash(stored: str) -> str:
    """`stored` when it is a well-formed ``$7$`` hash.

    Raises:
        PasswordFormatError: it is not.
    """
    _parse(stored)
    return stored
