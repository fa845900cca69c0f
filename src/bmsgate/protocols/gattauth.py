"""A GATT profile's challenge–response (``gatt.authenticate``, engine 7), as pure computations.

The BLE transport runs the exchange on every connection (read the challenge, write the response, await the
verdict) because it happens on a characteristic of its own and before anything is subscribed; what is read,
hashed and compared is decided here, without I/O, so it is tested without a radio and a port to another
runtime has one place to read it from. The key is the battery's configured ``secret``: it is never logged
and never part of an error message (a message names what is wrong with it, not what it is).
"""

from __future__ import annotations

import hashlib
import string
from typing import TYPE_CHECKING

from bmsgate.errors import AuthenticationError, ProtocolError

if TYPE_CHECKING:
    from bmsgate.protocols.gattspec import ChallengeResponse

__all__ = ["challenge_response", "configured_key", "is_accepted"]

_HEX_DIGITS = frozenset(string.hexdigits)


def configured_key(spec: ChallengeResponse, secret: bytes | None, *, battery_id: str | None = None) -> bytes:
    """The key `spec` needs, from the battery's configured `secret` (its hex text, as UTF-8 bytes).

    Raises:
        AuthenticationError: no secret, or one that is not ``2 × secret_length`` hex digits (retrying with
            the same configuration cannot help, so it is not a connection error).
    """
    digits = 2 * spec.secret_length
    wanted = f"the battery's 'secret' must be the {spec.secret_length}-byte key as {digits} hex digits"
    if secret is None:
        raise AuthenticationError(f"this protocol authenticates with a key: {wanted}", battery_id=battery_id)
    text = secret.strip()
    if len(text) != digits or not all(chr(byte) in _HEX_DIGITS for byte in text):
        # Only the length is said: the text itself is a secret even when it is malformed.
        raise AuthenticationError(f"{wanted} (it has {len(text)} characters)", battery_id=battery_id)
    return bytes.fromhex(text.decode("ascii"))


def challenge_response(
    spec: ChallengeResponse, key: bytes, challenge: bytes, *, battery_id: str | None = None
) -> bytes:
    """What is written back for `challenge`: the prefix, then the digest over the parts `spec.over` names.

    Raises:
        ProtocolError: the challenge does not have the length the protocol says (nothing is hashed).
    """
    if len(challenge) != spec.challenge_length:
        raise ProtocolError(
            f"the device's authentication challenge has {len(challenge)} bytes, expected {spec.challenge_length}",
            battery_id=battery_id,
        )
    parts = {"secret": key, "prefix": spec.prefix, "challenge": challenge}
    digest = hashlib.new(spec.digest)
    for part in spec.over:
        digest.update(parts[part])
    return spec.prefix + digest.digest()


def is_accepted(spec: ChallengeResponse, verdict: bytes) -> bool:
    """Whether the device's verdict notification accepts the response."""
    return verdict.startswith(spec.accepted)
