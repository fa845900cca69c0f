"""The fleet protocol: topics, message models and their limits, shared by the gateway agent and the server.

Gateways speak MQTT 3.1.1 only (QoS 1, retained, last will), so the same agent talks to Mosquitto and to a
NATS cluster unchanged. Everything of one gateway lives under ``fleet/v1/<gateway>/``:

============  ==========  =========  =================================================================
channel       written by  retained   payload
============  ==========  =========  =================================================================
availability  gateway     yes        ``online`` / ``offline`` (the last will says ``offline``)
state         gateway     yes        :class:`StateMessage`: versions, packs, hardware, location, uptime
telemetry     gateway     no         :class:`TelemetryMessage`: every battery and the inverter, per interval
event         gateway     no         :class:`EventMessage`: battery offline/online, alarms, applied config
reported      gateway     yes        what the gateway reports about its desired state (rollouts)
desired       server      yes        the signed desired state of this gateway (rollouts)
command       server      no         :class:`CommandMessage`: refresh state, re-run output discovery
============  ==========  =========  =================================================================

The broker's ACL follows the "written by" column: a gateway may publish only its own gateway channels and
read only its own server channels. The payload also names the gateway, and a message whose payload names
another gateway than its topic is refused: a misconfigured ACL cannot let one site speak for another.

Every payload is compact JSON (no spaces). Its ``v`` is :data:`PROTOCOL_VERSION`; a receiver refuses a
version it does not know rather than guess what the keys mean. Sizes are checked before parsing
(:data:`MAX_PAYLOAD_BYTES`), and a bad message raises :class:`FleetMessageError` with a short ``reason``
code that the receiver counts and logs. Telemetry and events carry a per-gateway sequence number and their
sampling time: ``(gateway, battery, at)`` identifies a sample, so a re-sent or backfilled one is stored once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bmsgate.errors import BmsgateError
from bmsgate.fleet.ids import GATEWAY_ID_PATTERN
from bmsgate.model import DERIVED_JSON_KEYS, BatterySnapshot

__all__ = [
    "GATEWAY_CHANNELS",
    "GATEWAY_ID_PATTERN",
    "MAX_PAYLOAD_BYTES",
    "OFFLINE",
    "ONLINE",
    "PROTOCOL_VERSION",
    "SERVER_CHANNELS",
    "TOPIC_ROOT",
    "BatteryDescriptor",
    "BatteryReading",
    "BufferStatus",
    "Channel",
    "CommandKind",
    "CommandMessage",
    "EventKind",
    "EventMessage",
    "FleetMessageError",
    "GatewayMessage",
    "Location",
    "LocationFix",
    "PackVersion",
    "StateMessage",
    "TelemetryMessage",
    "compact_snapshot",
    "decode",
    "encode",
    "gateway_filter",
    "is_gateway_id",
    "parse_topic",
    "topic",
]

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "fleet/v1"
_GATEWAY_ID: Final = re.compile(GATEWAY_ID_PATTERN)
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"


class Channel(enum.StrEnum):
    """The last topic level under a gateway's prefix."""

    AVAILABILITY = "availability"
    STATE = "state"
    TELEMETRY = "telemetry"
    EVENT = "event"
    REPORTED = "reported"
    DESIRED = "desired"
    COMMAND = "command"


GATEWAY_CHANNELS: Final = frozenset(
    {Channel.AVAILABILITY, Channel.STATE, Channel.TELEMETRY, Channel.EVENT, Channel.REPORTED}
)
"""Channels a gateway publishes (and only under its own prefix)."""
SERVER_CHANNELS: Final = frozenset({Channel.DESIRED, Channel.COMMAND})
"""Channels only the server publishes; a gateway reads its own."""

MAX_PAYLOAD_BYTES: Final[Mapping[Channel, int]] = {
    Channel.AVAILABILITY: 16,
    Channel.STATE: 32 * 1024,
    # 16 batteries x 32 cells with every field is ~40 KB; the bound leaves room, not a door.
    Channel.TELEMETRY: 256 * 1024,
    Channel.EVENT: 8 * 1024,
    Channel.REPORTED: 32 * 1024,
    Channel.DESIRED: 64 * 1024,
    Channel.COMMAND: 4 * 1024,
}
"""Largest payload accepted per channel (checked before parsing)."""


class FleetMessageError(BmsgateError):
    """A fleet message (topic or payload) that cannot be accepted.

    Attributes:
        reason: a short code for counting (``topic``, ``too_large``, ``json``, ``schema``, ``version``,
            ``gateway_mismatch``, ``snapshot``).
        topic: the topic it came on.
    """

    def __init__(self, reason: str, detail: str, *, topic: str = "") -> None:
        self.reason = reason
        self.topic = topic
        self.detail = detail
        super().__init__(f"{topic or '<fleet message>'}: {reason}: {detail}")


def is_gateway_id(value: str) -> bool:
    """Whether `value` is a valid gateway id (see :data:`GATEWAY_ID_PATTERN`; a trailing newline is not allowed)."""
    return bool(_GATEWAY_ID.fullmatch(value))


def topic(gateway_id: str, channel: Channel) -> str:
    """The topic of one channel of one gateway.

    Raises:
        ValueError: the gateway id is not valid.
    """
    if not is_gateway_id(gateway_id):
        raise ValueError(f"not a gateway id: {gateway_id!r} (expected {GATEWAY_ID_PATTERN})")
    return f"{TOPIC_ROOT}/{gateway_id}/{channel.value}"


def gateway_filter(channel: Channel) -> str:
    """The subscription filter for one channel of every gateway (the server's view)."""
    return f"{TOPIC_ROOT}/+/{channel.value}"


def parse_topic(topic_name: str) -> tuple[str, Channel]:
    """Split a fleet topic into gateway id and channel.

    Raises:
        FleetMessageError: not a topic of this protocol version (reason ``topic``).
    """
    prefix = TOPIC_ROOT + "/"
    if not topic_name.startswith(prefix):
        raise FleetMessageError("topic", f"not under {TOPIC_ROOT}/", topic=topic_name)
    parts = topic_name[len(prefix) :].split("/")
    if len(parts) != 2 or not is_gateway_id(parts[0]):
        raise FleetMessageError("topic", "expected fleet/v1/<gateway>/<channel>", topic=topic_name)
    try:
        return parts[0], Channel(parts[1])
    except ValueError:
        raise FleetMessageError("topic", f"unknown channel {parts[1]!r}", topic=topic_name) from None


# -- message models ----------------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=4096)
_Name = Annotated[str, Field(min_length=1, max_length=128)]
_Text = Annotated[str, Field(max_length=1024)]
_GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
_BatteryId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s/#+]+$")]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_UnixTime = Annotated[float, Field(ge=0, le=32503680000)]
"""Seconds since 1970 (up to the year 3000: a garbage clock is refused, not stored)."""


class _Message(BaseModel):
    model_config = _STRICT

    v: Literal[1]
    """Always :data:`PROTOCOL_VERSION` (required: a payload without it is not of this protocol)."""
    gateway: _GatewayId


class PackVersion(BaseModel):
    """One data file or software artifact a gateway runs: the identity that rollouts compare."""

    model_config = _STRICT

    kind: Literal["protocol", "register-map", "can-profile", "software", "pack"]
    """``pack``: an installed pack (a signed bundle) by its file's sha256; the others are single data files."""
    name: _Name
    version: Annotated[str, Field(max_length=64)] | None = None
    sha256: _Sha256


class LocationFix(enum.StrEnum):
    """How good a position is. ``none``: the receiver has no fix (GPS lost) — no coordinates then."""

    NONE = "none"
    FIX_2D = "2d"
    FIX_3D = "3d"
    FIXED = "fixed"
    """Coordinates from the configuration, not measured."""


class Location(BaseModel):
    """Where the installation is, and how that is known."""

    model_config = _STRICT

    source: Literal["gpsd", "nmea", "config"]
    fix: LocationFix
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    alt_m: Annotated[float, Field(ge=-1000, le=20000)] | None = None
    accuracy_m: Annotated[float, Field(ge=0)] | None = None
    """Horizontal error estimate (gpsd's ``eph``), when the receiver gives one."""
    time: _UnixTime | None = None
    """When the position was measured (receiver time); None for configured coordinates."""

    @model_validator(mode="after")
    def _check_fix(self) -> Self:
        """A position without a fix is not a position; a fix without one is not a fix."""
        has_position = self.lat is not None and self.lon is not None
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon come together")
        if self.fix is LocationFix.NONE and has_position:
            raise ValueError("fix 'none' carries no coordinates")
        if self.fix is not LocationFix.NONE and not has_position:
            raise ValueError(f"fix {self.fix.value!r} needs lat and lon")
        return self


class BufferStatus(BaseModel):
    """The gateway's offline buffer, as reported in its state."""

    model_config = _STRICT

    queued: Annotated[int, Field(ge=0)] = 0
    """Messages waiting to be sent (backlog)."""
    dropped: Annotated[int, Field(ge=0)] = 0
    """Messages dropped, oldest first, because the buffer was full (since the buffer was created)."""


class BatteryDescriptor(BaseModel):
    """One configured battery, as the state names it."""

    model_config = _STRICT

    id: _BatteryId
    name: _Name | None = None
    protocol: _Name | None = None


class StateMessage(_Message):
    """Retained: what the gateway is. Republished on change and at start."""

    sent_at: _UnixTime
    software_version: Annotated[str, Field(min_length=1, max_length=64)]
    hardware: _Text = ""
    uptime_s: Annotated[float, Field(ge=0)]
    name: _Name | None = None
    site: _Name | None = None
    tags: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=32)] = []
    interval_s: Annotated[float, Field(gt=0, le=86400)]
    """Telemetry interval: the server's "no data" alarm is a multiple of it."""
    packs: Annotated[list[PackVersion], Field(max_length=256)] = []
    location: Location | None = None
    """None: no location source configured."""
    batteries: Annotated[list[BatteryDescriptor], Field(max_length=64)] = []
    buffer: BufferStatus = BufferStatus()


class BatteryReading(BaseModel):
    """One battery in a telemetry message."""

    model_config = _STRICT

    id: _BatteryId
    age_s: Annotated[float, Field(ge=0)] | None
    """Seconds since the battery last reported, at the message's ``at`` (None: never reported)."""
    stale: bool
    """The gateway considers the data stale (it never presents stale data as fresh; neither does the server)."""
    snapshot: dict[str, Any] | None = None
    """The compact snapshot JSON form (:func:`compact_snapshot`), None when the battery never reported."""

    def to_snapshot(self) -> BatterySnapshot | None:
        """The snapshot, validated.

        Raises:
            FleetMessageError: the snapshot is not a valid snapshot JSON form (reason ``snapshot``).
        """
        if self.snapshot is None:
            return None
        try:
            return BatterySnapshot.from_dict(self.snapshot)
        except (ValueError, TypeError, ArithmeticError) as exc:  # a 400-digit number overflows float()
            raise FleetMessageError("snapshot", f"battery {self.id}: {exc}") from exc


_Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A sequence number; bounded so every store can keep it (a 64-bit signed integer)."""


class TelemetryMessage(_Message):
    """One per interval: every battery and the inverter status at ``at``."""

    seq: _Seq
    """Per-gateway message counter (telemetry and events share it); survives restarts."""
    at: _UnixTime
    backfill: bool = False
    """Sent from the offline buffer after an outage (not live)."""
    batteries: Annotated[list[BatteryReading], Field(max_length=64)]
    inverter: dict[str, Any] | None = None
    """The inverter status JSON form (``InverterStatus.to_dict``), None without an inverter output."""


class EventKind(enum.StrEnum):
    """What an event reports."""

    BATTERY_ONLINE = "battery_online"
    BATTERY_OFFLINE = "battery_offline"
    ALARM_RAISED = "alarm_raised"
    ALARM_CLEARED = "alarm_cleared"
    CONFIG_APPLIED = "config_applied"
    COMMAND_DONE = "command_done"
    COMMAND_REJECTED = "command_rejected"
    BUFFER_DROPPED = "buffer_dropped"
    LOCATION_LOST = "location_lost"
    LOCATION_FIXED = "location_fixed"


_DataValue = str | int | float | bool | None


class EventMessage(_Message):
    """Something changed on the gateway."""

    seq: _Seq
    at: _UnixTime
    backfill: bool = False
    kind: EventKind
    battery: _BatteryId | None = None
    alarm: Annotated[str, Field(max_length=64)] | None = None
    """The alarm name (``bmsgate.model.Alarm`` value) for alarm events."""
    detail: _Text = ""
    data: Annotated[dict[Annotated[str, Field(max_length=64)], _DataValue], Field(max_length=32)] = {}


class CommandKind(enum.StrEnum):
    """What the server may ask a gateway to do. There is no remote shell: this is the whole list."""

    REFRESH_STATE = "refresh_state"
    """Republish the retained state now."""
    REDISCOVER_OUTPUTS = "rediscover_outputs"
    """Re-run discovery of the outputs (republish Home Assistant discovery, re-probe the inverter link)."""


class CommandMessage(BaseModel):
    """A command from the server to one gateway (answered by a ``command_done`` / ``command_rejected`` event)."""

    model_config = _STRICT

    v: Literal[1]
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    kind: CommandKind
    issued_at: _UnixTime
    expires_at: _UnixTime
    """A command that arrives later (e.g. after the gateway was offline) is rejected as expired."""


class GatewayMessage(BaseModel):
    """A decoded message with where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    gateway: str
    channel: Channel
    message: StateMessage | TelemetryMessage | EventMessage | CommandMessage | None
    """None for ``availability`` (see :attr:`online`) and for the rollout channels, decoded by the rollout code."""
    online: bool | None = None
    raw: bytes = b""
    """The payload, for the channels this module does not model (``desired``, ``reported``)."""


_MODELS: Final[Mapping[Channel, type[BaseModel]]] = {
    Channel.STATE: StateMessage,
    Channel.TELEMETRY: TelemetryMessage,
    Channel.EVENT: EventMessage,
    Channel.COMMAND: CommandMessage,
}


_JSON_NUL: Final = b"\\u0000"


def decode(topic_name: str, payload: bytes) -> GatewayMessage:
    """Check and parse one message as received from the broker.

    Raises:
        FleetMessageError: anything wrong with the topic or the payload; ``reason`` says what.
    """
    gateway, channel = parse_topic(topic_name)
    if len(payload) > MAX_PAYLOAD_BYTES[channel]:
        raise FleetMessageError(
            "too_large", f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES[channel]}", topic=topic_name
        )
    if channel is Channel.AVAILABILITY:
        if payload not in (ONLINE, OFFLINE):
            raise FleetMessageError("schema", "availability must be 'online' or 'offline'", topic=topic_name)
        return GatewayMessage(gateway=gateway, channel=channel, message=None, online=payload == ONLINE)
    model = _MODELS.get(channel)
    if model is None:
        return GatewayMessage(gateway=gateway, channel=channel, message=None, raw=payload)
    if _JSON_NUL in payload:
        # No store keeps NUL in text (PostgreSQL text and jsonb refuse it): refused here, it would poison a batch.
        raise FleetMessageError("schema", "NUL character in a string", topic=topic_name)
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        reason = "json" if any(error["type"] == "json_invalid" for error in exc.errors()) else "schema"
        if reason == "schema" and _version_of(exc):
            reason = "version"
        raise FleetMessageError(reason, _summary(exc), topic=topic_name) from None
    if isinstance(message, _Message) and message.gateway != gateway:
        raise FleetMessageError(
            "gateway_mismatch", f"payload names gateway {message.gateway!r}, topic {gateway!r}", topic=topic_name
        )
    assert isinstance(message, StateMessage | TelemetryMessage | EventMessage | CommandMessage)
    # Every part is validated already; validating the wrapper again cost a third of decoding a telemetry message.
    return GatewayMessage.model_construct(gateway=gateway, channel=channel, message=message)


def _version_of(exc: ValidationError) -> bool:
    return any(error["loc"] == ("v",) for error in exc.errors())


def _summary(exc: ValidationError, limit: int = 3) -> str:
    """The first few validation problems, one line (the payload itself is never echoed)."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}" for error in errors[:limit]]
    more = len(errors) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def encode(message: BaseModel) -> bytes:
    """The compact JSON payload of a message (defaults left out: smaller, and identical for equal messages)."""
    return message.model_dump_json(exclude_defaults=True).encode()


def compact_snapshot(snapshot: BatterySnapshot) -> dict[str, Any]:
    """The snapshot JSON form without unreported (None) fields and derived values.

    Empty lists stay: for some fields (balancing cells) "none" and "not reported" differ.

    ``BatterySnapshot.from_dict`` reads it back to the same snapshot; the derived values are recomputed on
    the other side. A 16-cell JBD snapshot shrinks from ~1.3 KB to ~0.6 KB.
    """
    full = snapshot.to_dict()
    return {key: value for key, value in full.items() if key not in DERIVED_JSON_KEYS and value is not None}
