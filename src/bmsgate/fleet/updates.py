"""The rollout channels of the fleet protocol: the signed ``desired`` state and the gateway's ``reported`` answer.

Shared by the server's rollouts (which write ``desired``), the gateway's update agent (which applies it and
writes ``reported``) and ingest (which stores what gateways report). Both are retained per gateway, so a
gateway that was offline during a rollout finds its desired state when it comes back, and the server sees
the last state of every gateway's update after a restart.

``desired`` (Uptane's "director", one per gateway) says *what* the gateway should run: packs and optionally a
gateway software version, each named as a TUF target by path, length and sha256. *Whether a file is authentic*
is TUF's answer (the targets metadata signed offline, see :mod:`bmsgate.packs`); the desired state only picks
among authentic files. It is signed too — by the server's online timestamp key, verified against the timestamp
role of the gateway's trusted TUF root — and carries a per-gateway ``generation`` (monotonic: a replayed,
older desired state is refused) and an ``expires_at``. So neither a broker ACL mistake nor a replayed retained
message can make a gateway install something.

Envelope on the wire (compact JSON)::

    {"signed": {<DesiredState>}, "signatures": [{"keyid": "<hex>", "sig": "<hex>"}]}

The signature covers :func:`signing_bytes` of ``signed`` (the canonical JSON form of :mod:`bmsgate.canonical`).

``reported`` is one :class:`ReportedState` per change of phase; the phases follow the update's life:

    waiting → downloading → verified → staged → active-pending → committed
                                                               ↘ reverted   (health check failed: previous back)
    any step → failed  (nothing changed; ``reason`` says why: signature, expired, replay, hardware, engine, ...)
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmsgate.canonical import canonical_bytes
from bmsgate.fleet.protocol import GATEWAY_ID_PATTERN, MAX_PAYLOAD_BYTES, Channel, FleetMessageError, PackVersion

__all__ = [
    "MAX_DESIRED_PACKS",
    "TERMINAL_PHASES",
    "DesiredEnvelope",
    "DesiredState",
    "FailureReason",
    "PackTarget",
    "ReportedState",
    "RunningVersions",
    "Signature",
    "SoftwareTarget",
    "UpdatePhase",
    "UpdateProgress",
    "decode_desired",
    "decode_reported",
    "signing_bytes",
]

MAX_DESIRED_PACKS: Final = 16

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=4096)
_GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_UnixTime = Annotated[float, Field(ge=0, le=32503680000)]
_Version = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")]
_PackName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
_TargetPath = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[a-z]+/[A-Za-z0-9][A-Za-z0-9._+-]*$")]
"""A TUF target path: ``packs/<file>`` or ``software/<file>`` (one level; no ``..``, no absolute path)."""
_RolloutId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_Text = Annotated[str, Field(max_length=1024)]
_Length = Annotated[int, Field(ge=1, le=256 * 1024 * 1024)]


class PackTarget(BaseModel):
    """One pack the gateway should run, as a TUF target."""

    model_config = _STRICT

    pack: _PackName
    version: _Version
    target: _TargetPath
    length: _Length
    sha256: _Sha256


class SoftwareTarget(BaseModel):
    """The gateway software (a bmsgate wheel) the gateway should run, as a TUF target."""

    model_config = _STRICT

    version: _Version
    target: _TargetPath
    length: _Length
    sha256: _Sha256


class DesiredState(BaseModel):
    """What one gateway should run (the ``signed`` part of the envelope)."""

    model_config = _STRICT

    v: Literal[1]
    gateway: _GatewayId
    generation: Annotated[int, Field(ge=1, le=2**63 - 1)]
    """Raised by the server at every change for this gateway; a gateway refuses one not above the last it took."""
    issued_at: _UnixTime
    expires_at: _UnixTime
    """A desired state found after this (a gateway offline for months) is refused as expired until re-issued."""
    rollout: _RolloutId | None = None
    packs: Annotated[tuple[PackTarget, ...], Field(max_length=MAX_DESIRED_PACKS)] = ()
    """The whole set of packs to run (empty: the built-in definitions only). Not a delta."""
    software: SoftwareTarget | None = None
    """None: keep the software that runs."""


class Signature(BaseModel):
    """One signature over :func:`signing_bytes` of the desired state."""

    model_config = _STRICT

    keyid: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    sig: Annotated[str, Field(min_length=2, max_length=1024, pattern=r"^[0-9a-f]+$")]


class DesiredEnvelope(BaseModel):
    """The ``desired`` payload: the state and its signatures."""

    model_config = _STRICT

    signed: DesiredState
    signatures: Annotated[tuple[Signature, ...], Field(min_length=1, max_length=8)]


class UpdatePhase(enum.StrEnum):
    """Where a gateway's update stands (see the module docstring)."""

    IDLE = "idle"
    """Nothing to do: what runs is what is desired."""
    WAITING = "waiting"
    """Preconditions not met yet (active alarms, stale data): the update waits, nothing changed."""
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    STAGED = "staged"
    ACTIVE_PENDING = "active-pending"
    """Activated; the health check runs. A restart now rolls back to the previous slot."""
    COMMITTED = "committed"
    REVERTED = "reverted"
    """Activated, failed its health check, the previous slot runs again."""
    FAILED = "failed"
    """Not applied (``reason`` says why); the previous packs and software still run."""


TERMINAL_PHASES: Final = frozenset({UpdatePhase.IDLE, UpdatePhase.COMMITTED, UpdatePhase.REVERTED, UpdatePhase.FAILED})


class FailureReason(enum.StrEnum):
    """Why an update failed or was reverted (counted per rollout by the server)."""

    SIGNATURE = "signature"
    """The desired state's signature, or the TUF metadata's, does not check out (wrong or unknown key)."""
    EXPIRED = "expired"
    """The desired state or the TUF metadata has expired."""
    REPLAY = "replay"
    """An older desired state or older TUF metadata than the gateway already trusts."""
    MISMATCH = "mismatch"
    """The downloaded artifact's length or hash differs from what the metadata names (tampered)."""
    UNKNOWN_TARGET = "unknown_target"
    """The desired state names a target the signed metadata does not list."""
    DOWNLOAD = "download"
    """The artifact could not be fetched (retried; reported once the retries are used up)."""
    HARDWARE = "hardware"
    """The pack is not made for this gateway's hardware."""
    ENGINE = "engine"
    """The pack needs an engine level or construct this gateway lacks."""
    DEFINITION = "definition"
    """An item of the pack fails validation exactly as the gateway loads it."""
    PRECONDITION = "precondition"
    """The preconditions (no active alarms, fresh data) did not hold within the waiting limit."""
    HEALTH = "health"
    """Activated, but the health check failed (implausible values, an output not serving): reverted."""
    INSTALL = "install"
    """The software could not be installed into the idle environment."""
    INTERNAL = "internal"


class UpdateProgress(BaseModel):
    """How far a download is."""

    model_config = _STRICT

    done: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=0)]


class RunningVersions(BaseModel):
    """What the gateway runs at the moment of the report."""

    model_config = _STRICT

    packs: Annotated[tuple[PackVersion, ...], Field(max_length=MAX_DESIRED_PACKS * 64)] = ()
    software: _Version
    pack_names: Annotated[tuple[Annotated[str, Field(max_length=100)], ...], Field(max_length=MAX_DESIRED_PACKS)] = ()
    """The active packs as ``name@version``."""


class ReportedState(BaseModel):
    """The ``reported`` payload: the phase of the gateway's update for one desired generation."""

    model_config = _STRICT

    v: Literal[1]
    gateway: _GatewayId
    at: _UnixTime
    phase: UpdatePhase
    generation: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    """The desired generation this is about (0: none received yet)."""
    rollout: _RolloutId | None = None
    desired_sha256: _Sha256 | None = None
    """sha256 of the desired payload as received."""
    reason: FailureReason | None = None
    detail: _Text = ""
    progress: UpdateProgress | None = None
    running: RunningVersions


def signing_bytes(state: DesiredState) -> bytes:
    """The bytes a desired state's signatures cover (canonical JSON, defaults included)."""
    return canonical_bytes(state.model_dump(mode="json"))


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def _decode(model: type[_ModelT], channel: Channel, payload: bytes, topic: str, gateway: str) -> _ModelT:
    limit = MAX_PAYLOAD_BYTES[channel]
    if len(payload) > limit:
        raise FleetMessageError("too_large", f"{len(payload)} bytes, at most {limit}", topic=topic)
    try:
        parsed = model.model_validate_json(payload)
    except ValidationError as exc:
        reason = "json" if any(error["type"] == "json_invalid" for error in exc.errors()) else "schema"
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise FleetMessageError(reason, f"{where}: {first['msg']}", topic=topic) from None
    named = parsed.signed.gateway if isinstance(parsed, DesiredEnvelope) else getattr(parsed, "gateway", gateway)
    if named != gateway:
        raise FleetMessageError("gateway_mismatch", f"payload names gateway {named!r}, topic {gateway!r}", topic=topic)
    return parsed


def decode_desired(payload: bytes, *, topic: str, gateway: str) -> DesiredEnvelope:
    """Parse a ``desired`` payload (its signatures are checked by the gateway's trust store, not here).

    Raises:
        FleetMessageError: too large, not JSON, not the schema, or naming another gateway.
    """
    return _decode(DesiredEnvelope, Channel.DESIRED, payload, topic, gateway)


def decode_reported(payload: bytes, *, topic: str, gateway: str) -> ReportedState:
    """Parse a ``reported`` payload.

    Raises:
        FleetMessageError: too large, not JSON, not the schema, or naming another gateway.
    """
    return _decode(ReportedState, Channel.REPORTED, payload, topic, gateway)
