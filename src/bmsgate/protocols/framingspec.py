"""The framing section of a protocol definition: how replies are delimited and checked.

Re-exported by `definition`, the format's one public home.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.datatypes import STRICT, Endian, HexBytes
from bmsgate.protocols.fields import is_var
from bmsgate.protocols.jsonspec import JsonMember, JsonSpec
from bmsgate.protocols.linespec import LineColumn, LineKind, LinesSpec

__all__ = [
    "ChecksumSpec",
    "FramingSpec",
    "JsonMember",
    "JsonSpec",
    "KeySpec",
    "LengthSpec",
    "LineColumn",
    "LineKind",
    "LinesSpec",
    "PagesSpec",
    "PrefixSpec",
    "ScrambleSpec",
    "StatusSpec",
    "WireKeySpec",
]


class _Strict(BaseModel):
    model_config = STRICT


class LengthSpec(_Strict):
    """Where the length field sits; total frame length = field value + `add`."""

    offset: int = Field(ge=0)
    size: Literal[1, 2] = 1
    endian: Endian = "big"
    add: int = 0
    counts: Literal["frame", "text"] = "frame"
    """``text`` (hex-text framing only): the value + `add` counts the characters on the wire, markers included."""


class KeySpec(_Strict):
    """Bytes that say which reply a frame is (register echo, frame type, function code)."""

    offset: int = Field(ge=0)
    size: Literal[1, 2] = 1
    in_replies: bool = True
    """``false`` (engine 5): only requests carry the key; a reply is the answer to the request just sent
    (CBT Power VB replies hold a return code where the request held its command)."""


class StatusSpec(_Strict):
    """A status byte; values outside `ok` mean the BMS refused the request."""

    offset: int = Field(ge=0)
    ok: list[int] = Field(default=[0], min_length=1)


class ChecksumSpec(_Strict):
    """Checksum algorithm, covered span [start, end) and position; negative offsets count from the end."""

    algorithm: str
    start: int = 0
    end: int
    at: int
    endian: Endian = "big"
    over: Literal["bytes", "text"] = "bytes"
    """``text`` (hex-text framing only): computed over the covered bytes' upper-case hex characters, as sent."""

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in CHECKSUMS:
            raise ValueError(f"unknown checksum algorithm {value!r}; choose one of {sorted(CHECKSUMS)}")
        return value

    @property
    def size(self) -> int:
        """Width of the checksum in bytes."""
        return CHECKSUMS[self.algorithm].size


class PrefixSpec(_Strict):
    """Bytes a frame may carry in front of its start marker (ECO-WORTHY protocol version 2: the pack's address).

    A received frame whose start marker is not at byte 0 but at byte `size` is prefixed: its key is read
    `size` bytes further on, and `var` is 1 for it (0 for a frame without the prefix) before its fields
    decode, so the definition's ``variants`` can choose its layout. Checksum spans count on the whole frame.
    """

    size: int = Field(ge=1, le=16)
    var: str
    """``var.NAME``: 1 while a prefixed frame decodes, 0 for an unprefixed one."""

    @field_validator("var")
    @classmethod
    def _var_form(cls, value: str) -> str:
        if not is_var(value):
            raise ValueError("expected 'var.NAME'")
        return value


class ScrambleSpec(_Strict):
    """A frame's bytes XOR-ed with a key byte the frame itself carries (WS Nova; engine 6).

    Every byte in [`start`, `end`) except the one at `key_at` is XOR-ed with the byte at `key_at`; the key
    byte stays as it is, so descrambling and scrambling are one operation. Offsets count in the frame
    (the start marker at 0, decoded bytes for hex text); negative ones from its end.
    """

    key_at: int = Field(ge=0)
    """Where the key byte is; a frame too short to hold it is refused."""
    start: int = 0
    end: int


class WireKeySpec(_Strict):
    """One XOR key per device, computed from its advertised name, over every byte on the wire (engine 6).

    Offgridtec ``SmartBat-<type><digits>`` packs XOR every byte they receive and send with one key: the
    name's decimal number (the characters from `digits_from` on) written as upper-case hex of at least
    `hex_digits` digits, each hex digit looked up in `table`, summed, plus `add` of the type character at
    `type_at`, modulo 256 (`bmsgate.protocols.wirekey`). A device whose name does not match the glob
    `names`, has another type character or no such number has no key: the session refuses to poll it.
    """

    names: str
    """Glob of the names the key is computed for (case-sensitive, as advertised), e.g. ``SmartBat-[AB]*``."""
    type_at: int = Field(ge=0)
    add: dict[str, int] = Field(min_length=1)
    """What each type character adds to the sum (``{A: 5, B: 8}``); other characters give no key."""
    digits_from: int = Field(ge=0)
    max_digits: int = Field(default=9, ge=1, le=18)
    """At most this many decimal digits are read (a longer name gives no key: bounded work)."""
    hex_digits: int = Field(default=4, ge=1, le=16)
    table: list[int] = Field(min_length=16, max_length=16)
    """The value of each hex digit 0-F in the sum."""

    @field_validator("add")
    @classmethod
    def _one_character_types(cls, value: dict[str, int]) -> dict[str, int]:
        if any(len(kind) != 1 for kind in value):
            raise ValueError("'add' maps single type characters (such as 'A') to what they add")
        return value


class PagesSpec(_Strict):
    """Frames carried in fixed-size pages, each acknowledged by writing it back (D-powercore; engine 6).

    A page is `size` bytes: a length byte (the data bytes in this page), a byte whose high nibble numbers the
    page (from 1) and whose low nibble is the page count, the data, padding. The data of pages 1..count is one
    frame, checked by the rest of the framing. Every received page is acknowledged by writing it back with
    `ack_flag` set in its length byte; a received page with that flag is the BMS's acknowledgement of ours.
    """

    size: int = Field(ge=3, le=512)
    ack_flag: int = Field(default=0x80, ge=1, le=0xFF)
    request_length_add: int = Field(default=0, ge=0, le=0xFF)
    """Added to the length byte of pages *written* (D-powercore requests count the two page-header bytes
    too; its replies do not)."""

    @model_validator(mode="after")
    def _length_fits_a_byte(self) -> Self:
        lowest_flag_bit = self.ack_flag & -self.ack_flag  # every data length must leave the flag's bits clear
        if self.size - 2 + self.request_length_add > 0xFF or self.size - 2 >= lowest_flag_bit:
            raise ValueError("'pages': a page's length byte (size - 2 + request_length_add) must fit below ack_flag")
        return self

    @property
    def capacity(self) -> int:
        """The most frame bytes a page sequence carries (15 pages)."""
        return 15 * (self.size - 2)


class FramingSpec(_Strict):
    """How replies are delimited and checked. Exactly one of `length` and `fixed_length` is given."""

    start: HexBytes
    end: HexBytes | None = None
    length: LengthSpec | None = None
    fixed_length: int | None = Field(default=None, ge=2)
    min_length: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=2, le=65536)
    key: KeySpec | None = None
    status: StatusSpec | None = None
    checksum: ChecksumSpec | None = None
    request_checksum: ChecksumSpec | None = None
    """Checksum of request frames when it differs from replies' (defaults to `checksum`)."""
    payload_offset: int = Field(default=0, ge=0)
    """Where field offsets count from, in frame bytes."""
    ignore_chunks: list[HexBytes] = []
    """Received chunks dropped as a whole (e.g. ``AT\\r\\n`` that some BLE modules interleave)."""
    excess: Literal["error", "ignore"] = "error"
    """``ignore``: bytes after a frame's announced end are noise, also when a whole frame is checked
    (JK firmware that sends 320 bytes for a 300-byte frame, or glues an ack onto its end)."""
    check_end: bool = True
    """``false``: the end marker is written (encoding, trailer size) but not required on received frames,
    for firmware that announces a wrong length for one reply (ANT's device info); the checksum still holds."""
    text: Literal["hex", "json", "lines"] | None = None
    """``hex``: between the start and end markers the wire carries text, two hex digits per byte (E&J, AG,
    Topband). Frames are the markers around the decoded bytes, so every offset counts in bytes; the end
    marker delimits a frame, the length field (if any) is a check. Without an end marker a ``fixed_length``
    delimits it (Topband).

    ``json`` (engine 5): a reply is one JSON object; `json_object` names the members read, which become the
    slots of a frame ``{`` + slots + ``}`` of ``fixed_length`` bytes (see `bmsgate.protocols.jsonspec`);
    `max_length` bounds the object's text. Requests are sent as written.

    ``lines`` (engine 5): the wire carries text lines ended by `end` (``\r\n``); `lines` says how a line is
    split and which kinds of line are read, each into a frame `start` + key + one 4-byte slot per column +
    `end` (see `bmsgate.protocols.linespec`); `max_length` bounds a line. Lines of no kind are noise."""
    json_object: JsonSpec | None = None
    """``text: json`` only: the members of the reply object and its nesting bound."""
    lines: LinesSpec | None = None
    """``text: lines`` only: the separator and the kinds of line read."""
    frame_per_chunk: bool = False
    """Every received chunk (one BLE notification) is one whole frame: no length field, no end marker
    needed, nothing carried over between chunks (ECO-WORTHY)."""
    strip_bytes: list[HexBytes] = []
    """Hex-text framing only: single bytes removed from everything received before framing (PowerBoozt
    modules pad their text with NULs, also between the last digit and the end marker)."""
    starts: list[HexBytes] = []
    """Hex-text framing only: every start marker a reply may begin with, `start` among them (Topband's
    one-byte frame types ``5E``/``83``/``B0``/``E8`` in front of the text); requests use `start`."""
    prefix: PrefixSpec | None = None
    """``frame_per_chunk`` only: bytes a frame may carry before its start marker (engine 5)."""
    escape: HexBytes | None = None
    """Engine 5 (binary framing with an `end` marker): byte stuffing between the markers (MyVolta's DLE
    ``05``): on the wire this byte makes the next one a literal data byte; frames are checked and decoded
    with the escapes removed (`bmsgate.protocols.stuffedframing`)."""
    pages: PagesSpec | None = None
    """Engine 6, binary framing: frames travel in numbered fixed-size pages, each acknowledged by writing it
    back (`bmsgate.protocols.pagedframing`); frames are checked and decoded as the pages' data joined."""
    scramble: ScrambleSpec | None = None
    """Engine 6, hex-text framing only: the decoded bytes are XOR-scrambled with a key byte of the frame
    (`bmsgate.protocols.scrambling`); frames are checked and decoded descrambled, the key byte kept."""
    requests_as_written: bool = False
    """Engine 6, hex-text framing only: requests are written exactly as given (Offgridtec's ASCII
    ``+RAA0201``, without markers or line end), not as hex text between the markers."""
    refusal: HexBytes | None = None
    """Engine 6, hex-text framing only: the exact text a BMS sends instead of a reply when it refuses a request
    (Offgridtec's ``+RD,Erro`` + NUL); it becomes a frame without key whose status is not ok."""
    wire_key: WireKeySpec | None = None
    """Engine 6: every byte written and received is XOR-ed with a key computed from the device's advertised
    name (Offgridtec); frames, requests and the simulator stay in the clear, the session applies the key."""
    marker_on_wire: bool = True
    """``false`` (engine 5, with ``frame_per_chunk``): the BMS sends frames without a start marker (Super-B);
    the assembler puts `start` in front of every received chunk and the wire form leaves it out
    (`bmsgate.protocols.unmarkedframing`). Engine 6, with ``fixed_length`` and a ``checksum`` instead: the
    frames are found in a byte stream where their checksum holds (123\\SmartBMS;
    `bmsgate.protocols.unmarkedstream`)."""

    @field_validator("start")
    @classmethod
    def _start_not_empty(cls, value: bytes) -> bytes:
        if not value:
            raise ValueError("the start marker needs at least one byte")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.text == "json":
            self._check_json()
        elif self.text == "lines":
            self._check_lines()
        elif self.text is not None:
            self._check_text()
            if self.frame_per_chunk:
                raise ValueError("'frame_per_chunk' is for binary frames (hex text has its own delimiters)")
        elif self.frame_per_chunk:
            if self.length is not None or self.fixed_length is not None:
                raise ValueError("'frame_per_chunk' frames carry no 'length' and no 'fixed_length'")
        elif (self.length is None) == (self.fixed_length is None):
            raise ValueError("give exactly one of 'length' and 'fixed_length'")
        if self.escape is not None and (
            len(self.escape) != 1 or self.end is None or self.text is not None or self.frame_per_chunk or self.starts
        ):
            raise ValueError("'escape' is one byte, for binary framing with an 'end' marker (not 'frame_per_chunk')")
        if self.pages is not None and (
            self.text is not None
            or self.frame_per_chunk
            or self.escape is not None
            or not self.marker_on_wire
            or self.max_length > self.pages.capacity
        ):
            raise ValueError(
                "'pages' is for binary framing (not 'text', 'frame_per_chunk', 'escape' or 'marker_on_wire: "
                "false') with a 'max_length' that 15 pages hold"
            )
        if self.scramble is not None and self.text != "hex":
            raise ValueError("'scramble' needs hex-text framing (text: hex)")
        if (self.refusal is not None or self.requests_as_written) and self.text != "hex":
            raise ValueError("'refusal' and 'requests_as_written' need hex-text framing (text: hex)")
        if not self.marker_on_wire:
            self._check_unmarked()
        if self.prefix is not None and not self.frame_per_chunk:
            raise ValueError("'prefix' needs 'frame_per_chunk' (a prefixed frame is one whole chunk)")
        if self.text is None and self.strip_bytes:
            raise ValueError("'starts' and 'strip_bytes' need hex-text framing (text: hex)")
        if self.text is None and self.starts and not self.frame_per_chunk:
            raise ValueError("'starts' and 'strip_bytes' need hex-text framing (text: hex) or 'frame_per_chunk'")
        if self.starts and (self.start not in self.starts or any(len(m) != len(self.start) for m in self.starts)):
            raise ValueError("'starts' must include 'start' (the marker requests are sent with), all of its length")
        if self.text is None and (
            (self.length is not None and self.length.counts == "text")
            or any(spec is not None and spec.over == "text" for spec in (self.checksum, self.request_checksum))
        ):
            raise ValueError("'counts: text' and 'over: text' need hex-text framing (text: hex)")
        if self.fixed_length is not None and self.fixed_length > self.max_length:
            raise ValueError("fixed_length is larger than max_length")
        if self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        return self

    def _check_unmarked(self) -> None:
        if self.text is not None or self.prefix is not None or self.starts:
            raise ValueError("'marker_on_wire: false' is for binary framing without 'prefix'/'starts'")
        if self.frame_per_chunk:
            return
        # Engine 6: a byte stream, cut where a fixed-length window's checksum holds.
        if self.fixed_length is None or self.checksum is None or self.end is not None or self.escape is not None:
            raise ValueError(
                "'marker_on_wire: false' needs 'frame_per_chunk', or a 'fixed_length' and a 'checksum' "
                "(no 'end', no 'escape') to find the frames in a stream"
            )

    def _check_json(self) -> None:
        if self.json_object is None:
            raise ValueError("'text: json' needs 'json_object' (the members a reply is read by)")
        if self.start != b"{" or self.end != b"}":
            raise ValueError("'text: json' frames start with '{' (7B) and end with '}' (7D)")
        needed = 2 + self.json_object.layout_size
        if self.fixed_length != needed:
            raise ValueError(f"'text: json' needs fixed_length: {needed} ('{{' + the members' slots + '}}')")
        if self.length is not None or self.checksum is not None or self.request_checksum is not None:
            raise ValueError("'text: json' frames carry no 'length' and no 'checksum' (the object delimits itself)")
        if self.starts or self.strip_bytes or self.frame_per_chunk or self.prefix is not None:
            raise ValueError("'starts', 'strip_bytes', 'frame_per_chunk' and 'prefix' are not for 'text: json'")

    def _check_lines(self) -> None:
        if self.lines is None:
            raise ValueError("'text: lines' needs 'lines' (the separator and the kinds of line read)")
        if not self.end:
            raise ValueError("'text: lines' needs 'end': the line terminator, e.g. '0D 0A'")
        if len(self.start) != 1 or self.key is None or self.key.offset != 1 or self.key.size != 1:
            raise ValueError(
                "'text: lines' frames are a one-byte 'start', the kind's key at 1 (key: {offset: 1}), slots"
            )
        if not self.key.in_replies:
            raise ValueError("'text: lines' frames carry their kind's key ('key.in_replies' stays true)")
        if self.length is not None or self.fixed_length is not None or self.checksum is not None:
            raise ValueError(
                "'text: lines' frames carry no 'length', 'fixed_length' or 'checksum' (the terminator ends a line)"
            )
        if self.request_checksum is not None or self.status is not None:
            raise ValueError("'text: lines' frames carry no 'request_checksum' or 'status'")
        if self.starts or self.strip_bytes or self.frame_per_chunk or self.prefix is not None:
            raise ValueError("'starts', 'strip_bytes', 'frame_per_chunk' and 'prefix' are not for 'text: lines'")

    def _check_text(self) -> None:
        if not self.end and self.fixed_length is None:
            raise ValueError("hex-text framing needs an end marker or a fixed_length (they delimit the frames)")
        if self.length is not None and self.fixed_length is not None:
            raise ValueError("give at most one of 'length' and 'fixed_length'")
        if self.starts and self.start not in self.starts:
            raise ValueError("'starts' must include 'start' (the marker requests are sent with)")
        if any(len(marker) != len(self.start) for marker in self.starts):
            raise ValueError("every marker in 'starts' needs the length of 'start'")
        hex_digits = frozenset(b"0123456789abcdefABCDEF")
        markers = b"".join([self.start, self.end or b"", *self.starts])
        # A marker with one byte that is no hex digit never occurs inside hex text (Offgridtec's '+RD,').
        if any(marker and set(marker) <= hex_digits for marker in (self.start, self.end, *self.starts)):
            raise ValueError(
                "a hex-text marker needs a byte that is no hex digit (a frame's text could not be told from it)"
            )
        if self.refusal is not None and (
            not self.refusal.startswith(self.start) or self.starts or self.end is None or self.end in self.refusal
        ):
            raise ValueError("'refusal' begins with 'start' and holds no 'end' marker (one start marker, with 'end')")
        stripped = b"".join(self.strip_bytes)
        if any(len(value) != 1 for value in self.strip_bytes) or any(
            byte in hex_digits or byte in markers for byte in stripped
        ):
            raise ValueError("'strip_bytes' takes single bytes that are neither hex digits nor markers")

    @model_validator(mode="after")
    def _json_object_only_for_json(self) -> Self:
        if self.json_object is not None and self.text != "json":
            raise ValueError("'json_object' needs 'text: json'")
        if self.lines is not None and self.text != "lines":
            raise ValueError("'lines' needs 'text: lines'")
        return self

    @property
    def header_size(self) -> int:
        """Bytes needed before the total frame length is known."""
        needed = len(self.start)
        if self.length is not None:
            needed = max(needed, self.length.offset + self.length.size)
        if self.key is not None:
            needed = max(needed, self.key.offset + self.key.size)
        if self.status is not None:
            needed = max(needed, self.status.offset + 1)
        return needed

    @property
    def trailer_size(self) -> int:
        """Checksum and end marker bytes after the payload."""
        checksum = self.checksum.size if self.checksum and self.checksum.at < 0 else 0
        return checksum + (len(self.end) if self.end else 0)
