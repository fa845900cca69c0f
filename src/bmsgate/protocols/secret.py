"""The battery's configured secret in a connect-time request (``secret``; pure, engine 7).

123\\SmartBMS gen3 modules accept nothing but ``PW<pin>!\\r`` until the PIN was right. A definition holds only
the bytes around the secret (`SecretSpec`: where it goes); the secret itself comes from the battery's
configuration (``batteries[N].secret``) through `ClientOptions.secret` into the session. It never appears in a
message, a log line or a snapshot: errors here say which request and why, never what was sent. The BMS
refusing such a request is an `AuthenticationError` (the secret is wrong: retrying will not help).

A secret that goes into a frame must be one line of printable ASCII without the bytes that end it or frame the
conversation (`secret_form_problem`: ``12\r34`` would put a line break into the login). The gateway checks that
when it is built, the session again before it writes.

A definition decides what is done with the secret, so the secret is bound to the use the configured definition
makes of it (`secret_use`: a fingerprint of its ``secret`` requests and ``gatt.authenticate`` steps): a definition
swapped in live that would use it otherwise does not get it (see docs/protocol-definitions.md). And whatever a
definition says, a received chunk holding the login as written (a link that echoes it) is dropped before it is
framed (`SecretScreen`), so no reply field can decode it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from bmsgate.errors import AuthenticationError, ProtocolError
from bmsgate.protocols.encode import fill_checksum

if TYPE_CHECKING:
    from bmsgate.protocols.compiled import CompiledProtocol
    from bmsgate.protocols.framing import Frame
    from bmsgate.protocols.framingspec import FramingSpec
    from bmsgate.protocols.requestspec import RequestSpec
    from bmsgate.protocols.session import PollSession

__all__ = [
    "NO_SECRET_USE",
    "SCREEN_MIN_LENGTH",
    "SecretScreen",
    "refusal_error",
    "secret_form_problem",
    "secret_use",
    "with_secret",
]

SCREEN_MIN_LENGTH: Final = 4
"""A written form shorter than this is not screened for: 1-3 bytes turn up in ordinary data."""


def with_secret(frame: bytes | None, request: RequestSpec, session: PollSession) -> bytes | AuthenticationError | None:
    """`frame` with the session's secret inserted where `request.secret` says (as it is without one).

    An `AuthenticationError` (to give up with) when no secret is configured or it is longer than allowed.
    """
    spec = request.secret
    if spec is None or frame is None:
        return frame
    secret, battery_id = session._secret, session.battery_id  # the session's own credential, read here only
    framing = session.protocol.definition.framing
    problem = secret_form_problem(request, framing, secret)
    if problem is not None:
        return AuthenticationError(f"{request.name}: {problem}", battery_id=battery_id)
    assert secret is not None  # no problem: there is one
    filled = bytearray(frame[: spec.at] + secret + frame[spec.at :])
    fill_checksum(filled, framing.request_checksum or framing.checksum)
    return bytes(filled)


def refusal_error(request: RequestSpec, *, battery_id: str) -> ProtocolError | AuthenticationError:
    """What a refused `request` means: a wrong secret for a ``secret`` request, else a protocol error."""
    if request.secret is not None:
        return AuthenticationError(
            f"{request.name}: the BMS refused the configured secret (wrong PIN or key?)", battery_id=battery_id
        )
    return ProtocolError(f"{request.name}: the BMS answered with an error status", battery_id=battery_id)


def secret_form_problem(request: RequestSpec, framing: FramingSpec, secret: bytes | None) -> str | None:
    """What is wrong with `secret` for `request` (None: it can be sent), never quoting the secret itself.

    It must be 1 to ``max_length`` bytes of printable ASCII without a leading or trailing blank (a stray space
    from a file or a variable), none of the bytes the frame has after it (``!\r``: they would end it early) and
    none of the framing's end or line separator.
    """
    spec = request.secret
    if spec is None:
        return None
    if secret is None:
        return "this protocol needs the battery's secret (its 'secret' key), and none is configured"
    if not secret:
        return "the configured secret is empty"
    if len(secret) > spec.max_length:
        return f"the configured secret is longer than the {spec.max_length} bytes this protocol takes"
    if not all(0x20 <= byte <= 0x7E for byte in secret):
        return "the configured secret may only hold printable ASCII characters (no line breaks, tabs or accents)"
    if secret != secret.strip():
        return "the configured secret begins or ends with a blank"
    reserved = set(request.frame[spec.at :]) | set(framing.end or b"")
    if framing.lines is not None:
        reserved.add(ord(framing.lines.separator))
    if reserved.intersection(secret):
        shown = " ".join(repr(chr(byte)) for byte in sorted(reserved) if 0x20 <= byte <= 0x7E)
        return f"the configured secret holds a character this protocol uses to frame it ({shown} or a control)"
    return None


def secret_use(protocol: CompiledProtocol) -> str:
    """A fingerprint of how `protocol` uses the battery's secret: its ``secret`` requests and authenticate steps.

    Covered: each such request's frame template, where the secret goes and its longest length, and the
    characteristics it is written to; each profile's challenge-response. Not covered: how replies are decoded
    (the screen guards those) and anything else of the definition, so an update that leaves the login alone
    keeps the secret. The same for a definition that uses no secret at all (then nothing is handed over).
    """
    requests = [
        {"frame": request.frame.hex(), "secret": request.secret.model_dump(mode="json")}
        for request in protocol.definition.requests
        if request.secret is not None
    ]
    profiles = [
        {
            "service": profile.service,
            "write": profile.write,
            "authenticate": profile.authenticate.model_dump(mode="json"),
        }
        if profile.authenticate is not None
        else {"service": profile.service, "write": profile.write}
        for profile in protocol.gatt_profiles
    ]
    uses = any(profile.authenticate is not None for profile in protocol.gatt_profiles)
    return _fingerprint(requests, profiles if requests or uses else [])


def _fingerprint(requests: Sequence[Mapping[str, object]], profiles: Sequence[Mapping[str, object]]) -> str:
    used = {"requests": requests, "profiles": profiles}
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()


NO_SECRET_USE: Final = _fingerprint([], [])
"""`secret_use` of a definition that uses no secret."""


_Bytes = bytes | bytearray | memoryview


class _Assembler(Protocol):
    """What the screen needs of a frame assembler (every framing has one)."""

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]: ...

    def reset(self) -> None: ...


class SecretScreen:
    """Drops what arrives holding a frame that carried the secret, as written (an echo of the login).

    The patterns are the written ``secret`` frames, before and after the wire form (``PW1234!\r``), not the
    bare secret: a PIN such as ``0000`` turns up in ordinary hex columns, the whole login does not. A chunk is
    checked together with the end of the previous one (a login split over two notifications); the chunk that
    completes a pattern is dropped and the caller resets its assembler, so the frame the first part went into
    never completes. An assembled frame is checked again after the framing undid the wire form (a hex text).
    """

    __slots__ = ("_keep", "_patterns", "_tail", "dropped")

    def __init__(self) -> None:
        self._patterns: tuple[bytes, ...] = ()
        self._keep = 0
        self._tail = b""
        self.dropped = 0
        """Chunks and frames dropped for holding the secret."""

    def watch(self, request: RequestSpec, *written: bytes) -> None:
        """After a write of `request`: if it carried the secret, screen for these forms of it from now on.

        A form shorter than `SCREEN_MIN_LENGTH` is not kept.
        """
        if request.secret is None:
            return
        patterns = set(self._patterns) | {form for form in written if len(form) >= SCREEN_MIN_LENGTH}
        self._patterns = tuple(sorted(patterns))
        self._keep = max((len(pattern) for pattern in self._patterns), default=1) - 1

    def reset(self) -> None:
        """A new connection: the previous one's last bytes do not continue."""
        self._tail = b""

    def passes(self, chunk: bytes | bytearray | memoryview) -> bool:
        """Whether `chunk` may be framed (False: it holds a pattern, alone or with the previous chunk's end)."""
        if not self._patterns:
            return True
        seen = self._tail + bytes(chunk)
        self._tail = seen[-self._keep :] if self._keep else b""
        if any(pattern in seen for pattern in self._patterns):
            self._tail = b""
            self.dropped += 1
            return False
        return True

    def assemble(self, assembler: _Assembler, chunk: _Bytes, data: _Bytes) -> list[Frame]:
        """The frames `assembler` completes with `data` (`chunk` as received), without any that hold a pattern.

        A chunk that holds one is not fed, and the assembler is reset: the frame its first part went into is lost.
        """
        if not self.passes(chunk):
            assembler.reset()
            return []
        return self.frames(assembler.feed(data))

    def frames(self, frames: list[Frame]) -> list[Frame]:
        """`frames` without those holding a pattern."""
        if not self._patterns or not frames:
            return frames
        kept = [frame for frame in frames if not any(pattern in frame.raw for pattern in self._patterns)]
        self.dropped += len(frames) - len(kept)
        return kept
