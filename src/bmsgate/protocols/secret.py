"""The battery's configured secret in a connect-time request (``secret``; pure, engine 7).

123\\SmartBMS gen3 modules accept nothing but ``PW<pin>!\\r`` until the PIN was right. A definition holds only
the bytes around the secret (`SecretSpec`: where it goes); the secret itself comes from the battery's
configuration (``batteries[N].secret``) through `ClientOptions.secret` into the session. It never appears in a
message, a log line or a snapshot: errors here say which request and why, never what was sent. The BMS
refusing such a request is an `AuthenticationError` (the secret is wrong: retrying will not help).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bmsgate.errors import AuthenticationError, ProtocolError
from bmsgate.protocols.encode import fill_checksum

if TYPE_CHECKING:
    from bmsgate.protocols.requestspec import RequestSpec
    from bmsgate.protocols.session import PollSession

__all__ = ["refusal_error", "with_secret"]


def with_secret(frame: bytes | None, request: RequestSpec, session: PollSession) -> bytes | AuthenticationError | None:
    """`frame` with the session's secret inserted where `request.secret` says (as it is without one).

    An `AuthenticationError` (to give up with) when no secret is configured or it is longer than allowed.
    """
    spec = request.secret
    if spec is None or frame is None:
        return frame
    secret, battery_id = session._secret, session.battery_id  # the session's own credential, read here only
    if not secret:
        return AuthenticationError(
            f"{request.name}: this protocol needs the battery's secret (its 'secret' key), and none is configured",
            battery_id=battery_id,
        )
    if len(secret) > spec.max_length:
        return AuthenticationError(
            f"{request.name}: the configured secret is longer than the {spec.max_length} bytes this protocol takes",
            battery_id=battery_id,
        )
    filled = bytearray(frame[: spec.at] + secret + frame[spec.at :])
    framing = session.protocol.definition.framing
    fill_checksum(filled, framing.request_checksum or framing.checksum)
    return bytes(filled)


def refusal_error(request: RequestSpec, *, battery_id: str) -> ProtocolError | AuthenticationError:
    """What a refused `request` means: a wrong secret for a ``secret`` request, else a protocol error."""
    if request.secret is not None:
        return AuthenticationError(
            f"{request.name}: the BMS refused the configured secret (wrong PIN or key?)", battery_id=battery_id
        )
    return ProtocolError(f"{request.name}: the BMS answered with an error status", battery_id=battery_id)
