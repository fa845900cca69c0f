"""Requests and write commands of a protocol definition (part of the format `bmsgate.protocols.definition`).

A request is one exchange of a poll (the frame written, the reply key awaited, when and how often); a command
is a write frame template with placeholders the MOSFET switching fills in. Both are pure data, validated here;
the poll session (`bmsgate.protocols.session`) runs the requests, `bmsgate.protocols.encode` renders commands.
A request's bytes are literal, except the bytes a ``from_name`` fills in from the device's advertised name
(engine 6: D-powercore's unlock password), see `bmsgate.protocols.devicename`, and the battery's configured
secret that a ``secret`` request carries (engine 7: the 123\\SmartBMS PIN), see `bmsgate.protocols.secret`.
A ``keep_alive`` (engine 7) is no request: bytes the session writes every ``period`` seconds while connected.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from bmsgate.canonical import Real
from bmsgate.protocols.datatypes import STRICT, Endian, HexBytes, parse_hex
from bmsgate.protocols.fields import FieldCondition

__all__ = [
    "PLACEHOLDER_SIZES",
    "CommandSpec",
    "KeepAliveSpec",
    "MosfetBits",
    "NameBytesSpec",
    "RequestSpec",
    "SecretSpec",
]


class _Strict(BaseModel):
    model_config = STRICT


class NameBytesSpec(_Strict):
    """Request bytes taken from the device's advertised name (a per-device request; engine 6).

    The name's last `chars` characters are read as a number in `base` and written as `size` bytes at `at` of
    the request frame; the request checksum is then computed anew. The request is written only to a device
    whose name matches the glob `names` (case-insensitive) and whose characters read as such a number; to any
    other device (or when the name is not known) nothing is written.
    """

    at: int = Field(ge=0)
    size: Literal[1, 2, 4] = 2
    endian: Endian = "big"
    chars: int = Field(ge=1, le=16)
    base: Literal[10, 16] = 16
    names: str = "*"
    """Glob of the names the request is for, e.g. ``DXB-*``."""

    @field_validator("names")
    @classmethod
    def _glob_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("'names' needs a glob such as 'DXB-*' ('*' for every name)")
        return value


class SecretSpec(_Strict):
    """Where a request carries the battery's configured secret (a PIN, a key; engine 7).

    The secret's bytes are inserted at byte `at` of the literal frame (which holds the bytes around it:
    ``PW`` and ``!\\r`` for 123\\SmartBMS's ``PW<pin>!\\r``) and the request checksum, if any, is computed
    anew. A refusal of such a request is an authentication error: the secret is wrong.
    """

    at: int = Field(ge=0, le=512)
    max_length: int = Field(default=64, ge=1, le=256)
    """Longest secret accepted (longer: an authentication error before anything is written)."""


class KeepAliveSpec(_Strict):
    """Bytes written every `period` seconds while the link is open, during and between polls (engine 7).

    123\\SmartBMS gen3 modules only send what they buffered while the central keeps writing ``$`` (its app:
    every 330 ms). Written as given (no checksum, no text form), to the protocol's write characteristic.
    """

    frame: HexBytes = Field(min_length=1, max_length=64)
    period: Real = Field(ge=0.05, le=60)
    warm_up: Real = Field(default=0, ge=0, le=10)
    """Seconds of keep-alive alone after connecting before the first request is written (aiobmsble: 1.5 s
    for 123\\SmartBMS, whose module may not take a command at once)."""


class RequestSpec(_Strict):
    """One request of a poll and the reply it expects."""

    name: str
    frame: HexBytes
    reply: int | None = None
    """Key of the expected reply (framing.key); None when the BMS does not answer."""
    when: Literal["always", "connect"] = "always"
    """``connect``: only once per connection (device information)."""
    required: bool = True
    """A poll fails without this reply; optional replies are skipped on timeout."""
    timeout: Real | None = Field(default=None, gt=0)
    streaming: bool = False
    """The BMS keeps sending this reply after one request; re-send only when no fresh frame came."""
    follows: bool = False
    """Engine 5: no request of its own but a further reply of the request before it (ABC answers one request
    with several frame types): nothing is written, and frames that arrived since that request are kept."""
    from_name: NameBytesSpec | None = None
    """Engine 6: bytes of `frame` filled in from the device's name (an unlock password); such a request has
    no reply and is skipped for a device whose name does not fit."""
    only_if: FieldCondition | None = None
    """Engine 6: sent only while a variable the replies before it in this poll decoded lies in ``[min, max]``
    (Epoch Pro: pack 2's request while the system reply's pack count is at least 2); else skipped, as is a
    request whose variable no reply decoded."""
    until_refused: bool = False
    """Engine 6: one of a run of consecutive such requests that ends at the first refusal (a status that is not
    ok, e.g. a ``refusal`` text): the refused request and the rest of the run are skipped, the poll goes on
    (Offgridtec type B probes its cells from register 63 down). A timeout counts as for any request."""
    variants: list[str] | None = Field(default=None, min_length=1)
    """Engine 6 (with ``variants.by_name``): sent only to devices whose name chooses one of these layouts
    (Offgridtec's type A and B register sets); None = to every device."""
    secret: SecretSpec | None = None
    """Engine 7: the battery's configured secret goes into `frame` (a connect-time login: the PIN)."""

    @model_validator(mode="after")
    def _listen_streams(self) -> Self:
        if self.secret is not None and (
            self.when != "connect" or self.from_name is not None or self.secret.at > len(self.frame)
        ):
            raise ValueError(
                "a 'secret' request is sent once per connection (when: connect), without 'from_name', "
                "and its secret goes inside or right after 'frame' (secret.at at most the frame's length)"
            )
        named = self.from_name
        if named is not None and (
            self.reply is not None or self.follows or self.streaming or named.at + named.size > len(self.frame)
        ):
            raise ValueError("a 'from_name' request is a write without a reply whose name bytes lie inside 'frame'")
        if self.until_refused and (self.reply is None or self.follows or self.streaming or self.when != "always"):
            raise ValueError("an 'until_refused' request is a polled request with a reply (no follows/streaming)")
        if self.follows:
            if self.frame or self.streaming or self.reply is None or self.when != "always":
                raise ValueError(
                    "a 'follows' request writes nothing (frame: ''), needs a reply, and neither streams "
                    "nor waits for the connection (when: connect)"
                )
            return self
        if self.only_if is not None and (self.streaming or self.when != "always"):
            raise ValueError("an 'only_if' request is asked in every poll (when: always) and does not stream")
        if not self.frame and not (self.streaming and self.reply is not None):
            raise ValueError("an empty frame (listen: nothing is written) needs streaming: true and a reply")
        return self


_PLACEHOLDER: Final = re.compile(r"\{(?P<name>[a-z][a-z0-9_]*):(?P<type>u8|u16be|u16le|u32be|u32le)\}")
PLACEHOLDER_SIZES: Final = {"u8": 1, "u16be": 2, "u16le": 2, "u32be": 4, "u32le": 4}


class MosfetBits(_Strict):
    """Value of one command parameter as the OR of bits chosen by the desired MOSFET states."""

    charge_on: int = 0
    charge_off: int = 0
    discharge_on: int = 0
    discharge_off: int = 0


class CommandSpec(_Strict):
    """A write frame template with ``{name:type}`` placeholders (types u8, u16be/le, u32be/le).

    The checksum (if the framing has one) is computed and filled in; write zero bytes where it goes.
    """

    frame: str
    reply: int | None = None
    params: dict[str, MosfetBits] = {}
    affects: list[Literal["charge", "discharge"]] = []

    @model_validator(mode="after")
    def _placeholders_known(self) -> Self:
        names = [match["name"] for match in _PLACEHOLDER.finditer(self.frame)]
        unknown = set(names) - set(self.params)
        if unknown:
            raise ValueError(f"placeholders without params: {sorted(unknown)}")
        remainder = _PLACEHOLDER.sub("", self.frame)
        parse_hex(remainder)  # raises ValueError naming the bad text
        return self

    def template(self) -> list[bytes | tuple[str, str]]:
        """The frame as literal byte runs and (name, type) placeholders."""
        parts: list[bytes | tuple[str, str]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(self.frame):
            parts.append(parse_hex(self.frame[position : match.start()]))
            parts.append((match["name"], match["type"]))
            position = match.end()
        parts.append(parse_hex(self.frame[position:]))
        return [part for part in parts if part != b""]
