"""Discovery in a protocol definition: GATT profiles, advertisement matchers, serial line settings.

Part of the definition format (`bmsgate.protocols.definition` re-exports every name here); kept apart so
that one module holds how a BMS is found and reached, the other how a conversation with it goes. A profile
may name characteristics beyond its ``notify`` and ``write`` (engine 6, constructs ``gatt.also_notify``
and ``gatt.connect_writes``): the BLE transport subscribes to them or writes to them once per connection,
so the poll session still sees one stream of chunks and writes its requests to one characteristic. A profile
may also name characteristics whose every notification the transport answers by itself (construct
``gatt.answer_notify``, Dometic's keep-alive): those notifications never reach the frame stream. Engine 7 adds
``tags`` (construct ``gatt.tags``: bytes the transport puts in front of each notification of a characteristic,
so that blocks without a type byte still carry their key, Stark Varg) and ``authenticate`` (construct
``gatt.authenticate``: a challenge–response with the battery's configured secret before anything is
subscribed; the computation lives in `bmsgate.protocols.gattauth`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Final, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from bmsgate.protocols.datatypes import STRICT, HexBytes, Uuid, normalize_uuid

__all__ = [
    "AdvertisementMatcher",
    "ChallengeResponse",
    "CharacteristicTag",
    "CharacteristicWrite",
    "GattProfile",
    "GattSpec",
    "NotificationAnswer",
    "SerialSpec",
]


class _Strict(BaseModel):
    model_config = STRICT


_MAX_EXTRA_CHARACTERISTICS: Final = 8
"""Further characteristics one profile may name (a real board has two or three; more is a mistake)."""
_MAX_CONNECT_WRITE: Final = 512
"""Bytes of one connect-time write (one ATT value at most)."""


class CharacteristicWrite(_Strict):
    """Bytes written once per connection to a characteristic other than the profile's ``write``."""

    characteristic: Uuid
    frame: HexBytes = Field(min_length=1, max_length=_MAX_CONNECT_WRITE)
    """The exact bytes (hex), sent as written: no framing, checksum or text form is applied."""


_MAX_TOGGLE_ANSWER: Final = 16
"""Bytes of a toggled answer (Dometic's is one byte; a longer one is a mistake)."""
_MAX_FIRST_WAIT: Final = 30.0
"""Seconds a connection set-up may wait for an answered characteristic's first notification."""


class NotificationAnswer(_Strict):
    """A notify characteristic whose every notification is answered on another characteristic (engine 6).

    Dometic's boards keep a connection only while each notification on two keep-alive characteristics is
    answered: one echoed, the other answered with a byte that toggles between two values. The transport
    writes the answers by itself; these notifications are not frames and never reach the frame stream.
    """

    characteristic: Uuid
    """The characteristic whose notifications are answered (subscribed before ``notify``)."""
    write_to: Uuid
    """Where the answers are written (with response when the characteristic allows it)."""
    answer: Literal["echo", "toggle"]
    """``echo``: the notification's bytes, unchanged; ``toggle``: `first`, then each answer is the previous one
    XOR-ed with `flip` (FF, DF, FF, ... for Dometic's first FF and flip 20)."""
    first: HexBytes | None = Field(default=None, min_length=1, max_length=_MAX_TOGGLE_ANSWER)
    """``toggle`` only: the first answer of every connection."""
    flip: HexBytes | None = Field(default=None, min_length=1, max_length=_MAX_TOGGLE_ANSWER)
    """``toggle`` only: the bits that change from one answer to the next (as long as `first`)."""
    first_within: float | None = Field(default=5.0, gt=0, le=_MAX_FIRST_WAIT)
    """Seconds the connection set-up waits for this characteristic's first notification to be answered before
    it goes on (Dometic's order: each keep-alive answered once, then the frame stream); None: no wait."""

    @model_validator(mode="after")
    def _toggle_has_its_bytes(self) -> Self:
        if self.answer == "toggle":
            if self.first is None or self.flip is None:
                raise ValueError("answer 'toggle' needs 'first' and 'flip'")
            if len(self.first) != len(self.flip):
                raise ValueError("'first' and 'flip' of a toggled answer must be equally long")
            if not any(self.flip):
                raise ValueError("'flip' of a toggled answer must change at least one bit")
        elif self.first is not None or self.flip is not None:
            raise ValueError("'first' and 'flip' belong to answer 'toggle' only (an echo sends what arrived)")
        return self


_MAX_TAG: Final = 4
"""Bytes of a characteristic's tag (a 16-bit characteristic number is the natural one)."""
_MAX_CHALLENGE: Final = 512
"""Bytes of a challenge (one ATT value at most)."""
_MAX_SECRET: Final = 64
_MAX_PREFIX: Final = 16
_MAX_AUTH_WAIT: Final = 30.0


class CharacteristicTag(_Strict):
    """The bytes put in front of every notification of one characteristic (engine 7, ``gatt.tags``).

    Stark Varg bikes send six blocks, one per characteristic, none with a byte saying what it is: the
    characteristic it came on is its type. The transport prepends the tag, so the frame stream carries the
    type like any other and the framing's ``starts`` and ``key`` read it; the tag is not on the air.
    """

    characteristic: Uuid
    tag: HexBytes = Field(min_length=1, max_length=_MAX_TAG)


class ChallengeResponse(_Strict):
    """An authentication step the transport runs on every connection before it subscribes (engine 7).

    Stark Varg bikes hand out their telemetry only after the central proved it knows the bike's key: it reads
    a random challenge from `characteristic`, writes `prefix` + digest(the parts of `over`, in order) back to
    it, and the bike notifies a verdict there. The secret is the battery's configured ``secret`` (hex text),
    never part of a definition; `bmsgate.protocols.gattauth` computes the response.
    """

    characteristic: Uuid
    """Read for the challenge, written with the response (with response), notifies the verdict."""
    challenge_length: int = Field(ge=1, le=_MAX_CHALLENGE)
    """Bytes the challenge must have (another length is refused before anything is hashed)."""
    secret_length: int = Field(ge=1, le=_MAX_SECRET)
    """Bytes of the key; the configured secret is its hex text (2 digits per byte)."""
    digest: Literal["sha256"] = "sha256"
    prefix: HexBytes = Field(default=b"", max_length=_MAX_PREFIX)
    """Written in front of the digest (Stark Varg's ``02 01``: message type and version)."""
    over: list[Literal["secret", "prefix", "challenge"]] = Field(min_length=2, max_length=3)
    """What the digest covers, in this order (each part at most once; the secret and the challenge always)."""
    accepted: HexBytes = Field(min_length=1, max_length=_MAX_PREFIX)
    """A verdict notification beginning with these bytes accepts the key; any other refuses it."""
    timeout: float = Field(default=5.0, gt=0, le=_MAX_AUTH_WAIT)
    """Seconds the read, the write and the verdict may take together."""

    @model_validator(mode="after")
    def _covers_secret_and_challenge(self) -> Self:
        if len(set(self.over)) != len(self.over) or not {"secret", "challenge"} <= set(self.over):
            raise ValueError("'over' must name 'secret' and 'challenge' (and may name 'prefix'), each once")
        if "prefix" in self.over and not self.prefix:
            raise ValueError("'over' names 'prefix', but the prefix is empty")
        return self


class GattProfile(_Strict):
    """One service with its notify and write characteristics (several profiles = board variants)."""

    service: Uuid
    notify: Uuid
    write: Uuid | None = None
    """None: the BMS only notifies (a protocol whose requests are all ``listen``, e.g. Topband): no write
    characteristic is looked for or used."""
    also_notify: list[Uuid] = Field(default=[], max_length=_MAX_EXTRA_CHARACTERISTICS)
    """Engine 6: further characteristics subscribed to; their notifications join the ``notify``
    characteristic's chunks (Super-B v2 sends one frame type on a second characteristic)."""
    connect_writes: list[CharacteristicWrite] = Field(default=[], max_length=_MAX_EXTRA_CHARACTERISTICS)
    """Engine 6: written in order on every new connection, before notifications are switched on and before
    the first request (Dyness's unlock frame to ``fed5``). Only this profile's boards get them."""

    answer_notify: list[NotificationAnswer] = Field(default=[], max_length=_MAX_EXTRA_CHARACTERISTICS)
    """Engine 6: characteristics whose every notification the transport answers by itself (keep-alives), in
    the order they are subscribed; their notifications are kept out of the frame stream."""
    tags: list[CharacteristicTag] = Field(default=[], max_length=_MAX_EXTRA_CHARACTERISTICS + 1)
    """Engine 7: one tag for ``notify`` and each ``also_notify`` characteristic, put in front of its
    notifications by the transport (the frame's type when the block carries none)."""
    authenticate: ChallengeResponse | None = None
    """Engine 7: the challenge–response run on every connection, before anything is subscribed."""

    @model_validator(mode="after")
    def _tags_cover_the_stream(self) -> Self:
        auth = self.authenticate
        answered = {answer.characteristic for answer in self.answer_notify}
        if auth is not None and auth.characteristic in {self.notify, *self.also_notify, *answered}:
            raise ValueError("the authenticate characteristic's notifications are verdicts: it cannot carry frames")
        if not self.tags:
            return self
        tagged = [entry.characteristic for entry in self.tags]
        if sorted(tagged) != sorted({self.notify, *self.also_notify}) or len(set(tagged)) != len(tagged):
            raise ValueError("tags must name notify and every also_notify characteristic, each exactly once")
        tags = [entry.tag for entry in self.tags]
        if len(set(tags)) != len(tags) or len({len(tag) for tag in tags}) != 1:
            raise ValueError("tags must be distinct and equally long (the frame's key is read from them)")
        return self

    @property
    def tag_of(self) -> dict[str, bytes]:
        """Characteristic UUID → the tag its notifications get (empty: untagged)."""
        return {entry.characteristic: entry.tag for entry in self.tags}

    @model_validator(mode="after")
    def _extras_distinct(self) -> Self:
        if self.notify in self.also_notify or len(set(self.also_notify)) != len(self.also_notify):
            raise ValueError("also_notify repeats the notify characteristic or another entry")
        answered = [answer.characteristic for answer in self.answer_notify]
        if len(set(answered)) != len(answered) or not {self.notify, *self.also_notify}.isdisjoint(answered):
            raise ValueError(
                "answer_notify repeats a characteristic, or names one whose notifications are frames "
                "(notify, also_notify)"
            )
        return self

    @property
    def extra_characteristics(self) -> frozenset[str]:
        """The UUIDs this profile needs beyond ``notify`` and ``write`` (the board must offer each)."""
        answers = {uuid for answer in self.answer_notify for uuid in (answer.characteristic, answer.write_to)}
        if self.authenticate is not None:
            answers.add(self.authenticate.characteristic)
        return frozenset(self.also_notify) | {write.characteristic for write in self.connect_writes} | answers


class GattSpec(_Strict):
    """How to talk to the BMS over GATT."""

    profiles: list[GattProfile] = Field(min_length=1)
    write_mode: Literal["auto", "with_response", "without_response"] = "auto"
    pairing: Literal["none", "optional", "required"] = "none"
    notification_size: int = Field(default=20, ge=1, le=512)
    """Payload bytes per notification the real BMS sends (the simulator splits replies like this)."""


class AdvertisementMatcher(_Strict):
    """All given conditions must hold; a definition matches when any of its matchers does."""

    local_name: str | None = None
    """Glob, case-insensitive, e.g. ``JBD-*``."""
    service_uuid: Uuid | None = None
    manufacturer_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    address_prefix: str | None = None
    """Leading octets of the MAC address, e.g. ``A4:C1:37``."""
    service_data_uuid: Uuid | None = None
    """A UUID the advertisement carries service data for (engine 5; Epoch Pro advertises no name, only this)."""

    @field_validator("address_prefix")
    @classmethod
    def _check_prefix(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){0,5}", value):
            raise ValueError("expected octets like 'A4:C1:37'")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if all(
            value is None
            for value in (
                self.local_name,
                self.service_uuid,
                self.manufacturer_id,
                self.address_prefix,
                self.service_data_uuid,
            )
        ):
            raise ValueError(
                "a matcher needs at least one of local_name, service_uuid, manufacturer_id, address_prefix, "
                "service_data_uuid"
            )
        return self

    def matches(
        self,
        *,
        name: str | None,
        address: str | None,
        service_uuids: list[str],
        manufacturer_ids: list[int],
        service_data_uuids: Sequence[str] = (),
    ) -> bool:
        """True when every condition of this matcher holds for the advertisement."""
        if self.local_name is not None and not (name and fnmatch.fnmatchcase(name.lower(), self.local_name.lower())):
            return False
        if self.service_uuid is not None and self.service_uuid not in {normalize_uuid(uuid) for uuid in service_uuids}:
            return False
        if self.manufacturer_id is not None and self.manufacturer_id not in manufacturer_ids:
            return False
        if self.service_data_uuid is not None and self.service_data_uuid not in {
            normalize_uuid(uuid) for uuid in service_data_uuids
        }:
            return False
        return self.address_prefix is None or bool(address and address.upper().startswith(self.address_prefix))


class SerialSpec(_Strict):
    """UART/RS485 line settings."""

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
