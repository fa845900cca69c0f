"""The engine constructs a protocol definition can need, and which of them a definition uses.

Format 1 has a small core every engine runs (GATT/serial discovery, start/end/length framing with a key,
requests, integer fields with scale/add, fixed counts). Everything beyond it is a named *construct*. A
definition's ``requires`` lists the constructs it uses; the loader refuses a file that needs one this engine
lacks, naming it (before the strict schema would say "extra key"), and refuses a ``requires`` that differs
from what the file actually uses, so the list cannot lie. The canonical IR always carries the exact list,
which lets a fleet server decide "can this gateway run this file" from the IR and the gateway's
:data:`ENGINE_VERSION` / :data:`CONSTRUCTS` alone.

A construct is named after the key (or ``key: value``) that turns it on; checksum algorithms are
``checksum.NAME``. Adding a construct means: a row here, the engine code, and a bump of ENGINE_VERSION.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from bmsgate.protocols.checksums import CHECKSUMS

if TYPE_CHECKING:
    from bmsgate.protocols.definition import ChecksumSpec, FieldSpec, ProtocolDefinition

__all__ = ["CONSTRUCTS", "ENGINE_VERSION", "constructs_used", "rotating_reply", "unknown_constructs"]

ENGINE_VERSION: Final = 7
"""The protocol engine's level: raised whenever a construct is added to :data:`CONSTRUCTS`.

Level 2 added ``sign_magnitude`` (TDT / Wattcycle currents); level 3 ``text`` (hex-text framing: E&J, AG,
Topband), ``difference``, ``derive.voltage_from_cells`` and the ``sum8_not`` checksum; level 4 ``aliases`` (family ids
that are one protocol), ``starts`` (several one-byte frame types in front of hex text, Topband), ``listen``
(a streaming request that writes nothing), ``strip_bytes`` (NULs in hex text, PowerBoozt),
``frame_per_chunk`` (a notification is a frame, ECO-WORTHY) and the ``crc16_xmodem`` checksum (Seplos V2);
level 5 ``match.service_data_uuid`` (an advertisement matcher on a service-data UUID, Epoch Pro), ``prefix``
(the pack's address in front of a frame, ECO-WORTHY protocol version 2), ``reply_of_request`` (replies without
a key answer the request just sent, CBT Power VB), and for ABC ``follows`` (one request answered by several
frame types), ``index_items`` (frames numbered by their first item), ``s24`` and lists of 3-byte items or with
a ``stride``, ``text_json`` (JSON text replies whose named members are read, Felicity),
``text_lines`` (CSV text lines read by column, Lithionics), ``unmarked`` (frames without a start marker on
the wire, one per notification, Super-B), ``stuffing`` (an escape byte between the markers, MyVolta); from
level 5 a non-finite ``f32`` is no value
instead of a refused frame (NEEY); level 6 ``gatt.also_notify`` (further notify characteristics joining one
stream, Super-B V2), ``gatt.connect_writes`` (bytes written once per connection to another characteristic,
Dyness), the ``sum8_xor44`` checksum (ATORCH CW20), ``scramble`` (hex text whose decoded bytes are XOR-ed with
a key byte the frame carries, WS Nova), ``pages`` (frames in numbered fixed-size pages, each acknowledged by
writing it back, D-powercore), ``from_name`` (request bytes from the device's advertised name, D-powercore's
unlock password), for 123\\SmartBMS ``unmarked_stream`` (fixed-length frames without a marker, found in a byte
stream by their checksum), ``sign_char`` (an ASCII sign character and a magnitude) and ``rotation`` (a streamed
reply of numbered frames, one cell each, kept per connection), and ``only_if`` (a request sent only while a
decoded variable is in range: Epoch Pro's packs 2 and later), ``gatt.answer_notify`` (keep-alive notifications
the transport answers itself, an echo or a toggled byte, Dometic) and ``sign_magnitude.complement`` (a negative
value stored as the complement of its magnitude, Dometic's current); for Offgridtec ``wire_key`` (every byte on
the wire XOR-ed with a key computed from the device's advertised name), ``variants.by_name`` (layouts and
requests chosen by that name: types A and B), ``requests_as_written`` (ASCII requests), ``refusal`` (a fixed
text refusing a request), ``until_refused`` (a cell probe that ends at the first refusal) and ``multiplier`` (a
signed 16-bit number times a multiplier byte); level 7, for Stark Varg, ``gatt.tags`` (bytes the transport puts
in front of a characteristic's notifications: the frame type of blocks that carry none) and
``gatt.authenticate`` (a challenge–response with the battery's configured secret before anything is
subscribed), and for the 123\\SmartBMS gen3 module (``x123smart``) ``keep_alive`` (bytes written periodically
while connected, during and between polls), ``secret`` (a connect-time request carrying the battery's configured
secret, its PIN; refused: an authentication error), and in text lines ``lines.signed`` (hex columns with a
``+``/``-`` sign), ``lines.no_value`` (a character meaning "no reading", ``X``), ``lines.no_columns`` (a kind of
line that reads no column, ``OK``) and ``lines.refusal`` (a kind of line that refuses the request just sent,
``NA``)."""

_FIELD_CONSTRUCTS: Final[Mapping[str, str]] = {
    "absent": "raw values that mean 'not present'",
    "bit": "one bit of an integer",
    "cells": "a bitmask of balancing cells",
    "codes": "an enumerated status value that raises one alarm",
    "count_rest": "a list as long as the payload allows (count: rest)",
    "count_var": "a list whose length another field decodes (count: var.NAME)",
    "date": "a date packed into bit ranges of an integer",
    "difference": "a number stored as two halves, high minus low (charge − discharge current; engine 3)",
    "date_format": "a date string parsed with a strptime format",
    "flags": "alarm bits (bit -> alarm name)",
    "invert": "a boolean read inverted",
    "limit": "keep at most var.NAME list items",
    "map": "a table from raw values to output values",
    "multiplier": "a signed 16-bit number times a multiplier byte (0 counts as 1) in a u24 (engine 6)",
    "one_of": "a boolean that is true for any of several raw values",
    "popcount": "the number of set bits",
    "shift": "a field whose offset moves by decoded list lengths",
    "sign_magnitude": "a signed number stored as a sign bit and a magnitude (engine 2)",
    "sign_char": "a signed number stored as an ASCII sign character and a magnitude (engine 6)",
    "sign_magnitude.complement": "a set sign bit meaning -(magnitude + 1), the complement (Dometic; engine 6)",
    "stride": "list items further apart than their size (read from engine 5)",
    "version": "a version number packed into an integer (nibbles, byte_tenths, major_minor)",
    "when": "a field decoded only while a variable lies in a range",
}
_TYPE_CONSTRUCTS: Final[Mapping[str, str]] = {
    "f32": "IEEE 754 single-precision fields",
    "s24": "signed 24-bit fields (engine 5)",
    "s64": "signed 64-bit fields",
    "str": "string fields",
    "u24": "unsigned 24-bit fields",
    "u64": "unsigned 64-bit fields",
}
_DEFINITION_CONSTRUCTS: Final[Mapping[str, str]] = {
    "aliases": "other family ids that are this protocol with other discovery data (engine 4)",
    "check_end": "an end marker written but not required on received frames (check_end: false)",
    "commands": "write commands (MOSFET switching)",
    "connect": "requests sent once per connection (when: connect)",
    "derive.voltage_from_cells": "the pack voltage as the sum of the cell voltages, for frames without it (engine 3)",
    "excess": "bytes after a frame's announced end are ignored (excess: ignore)",
    "fixed_length": "frames of a fixed length instead of a length field",
    "from_name": "request bytes taken from the device's advertised name (an unlock password; engine 6)",
    "frame_per_chunk": "every received chunk (one notification) is one whole frame, no length field (engine 4)",
    "gatt.also_notify": "further notify characteristics of a GATT profile, joining one stream (engine 6)",
    "gatt.connect_writes": "bytes a GATT profile writes once per connection to another characteristic (engine 6)",
    "gatt.answer_notify": "notifications answered by the transport (echo / toggle), kept out of the frames (engine 6)",
    "gatt.authenticate": "a challenge–response with the battery's configured secret on connecting (engine 7)",
    "gatt.tags": "bytes put in front of each notification of a characteristic: its frame type (engine 7)",
    "ignore_chunks": "received chunks dropped as a whole",
    "follows": "a further reply of the request before it: nothing written, what arrived kept (engine 5)",
    "index": "one reply spread over numbered frames",
    "keep_alive": "bytes written every 'period' seconds while connected, during and between polls (engine 7)",
    "lines.no_columns": "a kind of text line that reads no column, told by its first text (OK; engine 7)",
    "lines.no_value": "a text-line column made of one character (X) reads as no value (engine 7)",
    "lines.refusal": "a kind of text line that refuses the request just sent (NA; engine 7)",
    "lines.signed": "hex text-line columns with a leading + or - sign (engine 7)",
    "index_items": "numbered frames whose number is that of their first item (index.numbers: items; engine 5)",
    "match.service_data_uuid": "an advertisement matcher on a service-data UUID (engine 5)",
    "listen": "a streaming request that writes nothing: the BMS sends on its own (frame: ''; engine 4)",
    "only_if": "a request sent only while a variable decoded earlier in the poll lies in a range (engine 6)",
    "pages": "frames in numbered fixed-size pages, each acknowledged by writing it back (framing.pages; engine 6)",
    "prefix": "bytes a frame may carry before its start marker, which select its layout (engine 5)",
    "rotation": (
        "a streamed reply of numbered frames: the newest frame of each number kept per connection "
        "(streaming request, indexed reply; engine 6)"
    ),
    "reply_of_request": "replies carry no key: each answers the request just sent (key.in_replies: false; engine 5)",
    "refusal": "a fixed text a BMS sends instead of a reply to refuse a request (hex-text framing; engine 6)",
    "request_checksum": "requests checked differently from replies",
    "requests_as_written": "requests written exactly as given, not as hex text (hex-text framing; engine 6)",
    "secret": (
        "a connect-time request carrying the battery's configured secret (a PIN); refused: an authentication "
        "error (engine 7)"
    ),
    "scramble": "decoded bytes XOR-ed with a key byte the frame carries (framing.scramble; engine 6)",
    "starts": "several start markers, one per frame type, in front of hex text (engine 4)",
    "strip_bytes": "single bytes removed from received hex text before framing (PowerBoozt NULs; engine 4)",
    "status": "a status byte that refuses a request",
    "streaming": "replies the BMS keeps sending after one request",
    "stuffing": "byte stuffing between the markers: an escape byte makes the next a literal (escape; engine 5)",
    "unmarked": "frames sent without their start marker, one per chunk (marker_on_wire: false; engine 5)",
    "unmarked_stream": (
        "fixed-length frames without a start marker in a byte stream, found by their checksum "
        "(marker_on_wire: false with fixed_length; engine 6)"
    ),
    "until_refused": "a run of requests that ends at the first refused one (a probe; engine 6)",
    "text": "frames sent as hex text between ASCII markers (text: hex; engine 3)",
    "text_json": "replies that are JSON objects, named members read into fixed slots (text: json; engine 5)",
    "text_lines": "delimited text lines (CSV), each kind of line read by column into slots (text: lines; engine 5)",
    "variants": "layouts chosen by a decoded value",
    "variants.by_name": "layouts and the requests sent chosen by the device's advertised name (engine 6)",
    "wire_key": "every byte written and received XOR-ed with a key computed from the device name (engine 6)",
}

CONSTRUCTS: Final[Mapping[str, str]] = {
    **_FIELD_CONSTRUCTS,
    **_TYPE_CONSTRUCTS,
    **_DEFINITION_CONSTRUCTS,
    **{f"checksum.{name}": f"the {name} checksum" for name in CHECKSUMS},
}
"""Every construct this engine runs, with what it means (the one table; see the module docstring)."""


def unknown_constructs(names: object) -> list[str]:
    """The entries of a ``requires`` value this engine lacks (non-strings are reported as their repr)."""
    if not isinstance(names, list | tuple):
        return []
    return [name if isinstance(name, str) else repr(name) for name in names if name not in CONSTRUCTS]


def _field_constructs(field: FieldSpec) -> set[str]:
    used = {
        name
        for name in ("bit", "cells", "codes", "date", "date_format", "flags", "limit", "map")
        if getattr(field, name) is not None
    }
    used |= {
        name
        for name in ("one_of", "shift", "sign_char", "sign_magnitude", "stride", "version", "when")
        if getattr(field, name) is not None
    }
    if field.sign_magnitude is not None and field.sign_magnitude.negative == "complement":
        used.add("sign_magnitude.complement")
    if field.difference:
        used.add("difference")
    if field.multiplier:
        used.add("multiplier")
    if field.absent:
        used.add("absent")
    if field.invert:
        used.add("invert")
    if field.popcount:
        used.add("popcount")
    if field.count == "rest":
        used.add("count_rest")
    elif isinstance(field.count, str):
        used.add("count_var")
    if field.variants is not None:
        used.add("variants")
    if field.type in _TYPE_CONSTRUCTS:
        used.add(field.type)
    return used


def _checksum(spec: ChecksumSpec | None) -> set[str]:
    return set() if spec is None else {f"checksum.{spec.algorithm}"}


def rotating_reply(definition: ProtocolDefinition) -> int | None:
    """The reply of the first streaming request whose frames are numbered one by one (construct ``rotation``)."""
    for request in definition.requests:
        reply = definition.replies.get(request.reply) if request.reply is not None else None
        if request.streaming and reply is not None and reply.index is not None and reply.index.numbers == "frames":
            return request.reply
    return None


def constructs_used(definition: ProtocolDefinition) -> frozenset[str]:
    """Every construct `definition` uses (what its ``requires`` must say)."""
    framing = definition.framing
    used = _checksum(framing.checksum) | _checksum(framing.request_checksum)
    profiles = definition.gatt.profiles if definition.gatt is not None else []
    kinds = framing.lines.kinds if framing.lines is not None else []
    flags = {
        "aliases": bool(definition.aliases),
        "check_end": not framing.check_end,
        "commands": bool(definition.commands),
        "connect": any(request.when == "connect" for request in definition.requests),
        "excess": framing.excess == "ignore",
        "fixed_length": framing.fixed_length is not None,
        "frame_per_chunk": framing.frame_per_chunk,
        "from_name": any(request.from_name is not None for request in definition.requests),
        "gatt.also_notify": any(profile.also_notify for profile in profiles),
        "gatt.connect_writes": any(profile.connect_writes for profile in profiles),
        "gatt.answer_notify": any(profile.answer_notify for profile in profiles),
        "gatt.authenticate": any(profile.authenticate is not None for profile in profiles),
        "gatt.tags": any(profile.tags for profile in profiles),
        "ignore_chunks": bool(framing.ignore_chunks),
        "follows": any(request.follows for request in definition.requests),
        "index": any(reply.index is not None for reply in definition.replies.values()),
        "keep_alive": definition.keep_alive is not None,
        "lines.no_columns": any(not kind.columns and not kind.refusal for kind in kinds),
        "lines.no_value": framing.lines is not None and framing.lines.no_value is not None,
        "lines.refusal": any(kind.refusal for kind in kinds),
        "lines.signed": any(column.signed for kind in kinds for column in kind.columns),
        "secret": any(request.secret is not None for request in definition.requests),
        "index_items": any(
            reply.index is not None and reply.index.numbers == "items" for reply in definition.replies.values()
        ),
        "listen": any(not request.frame and not request.follows for request in definition.requests),
        "only_if": any(request.only_if is not None for request in definition.requests),
        "pages": framing.pages is not None,
        "prefix": framing.prefix is not None,
        "reply_of_request": framing.key is not None and not framing.key.in_replies,
        "match.service_data_uuid": any(matcher.service_data_uuid is not None for matcher in definition.match),
        "refusal": framing.refusal is not None,
        "request_checksum": framing.request_checksum is not None,
        "requests_as_written": framing.requests_as_written,
        "scramble": framing.scramble is not None,
        "starts": bool(framing.starts),
        "strip_bytes": bool(framing.strip_bytes),
        "status": framing.status is not None,
        "streaming": any(request.streaming for request in definition.requests),
        "rotation": rotating_reply(definition) is not None,
        "until_refused": any(request.until_refused for request in definition.requests),
        "text": framing.text == "hex",
        "text_json": framing.text == "json",
        "text_lines": framing.text == "lines",
        "stuffing": framing.escape is not None,
        "unmarked": not framing.marker_on_wire and framing.frame_per_chunk,
        "unmarked_stream": not framing.marker_on_wire and not framing.frame_per_chunk,
        "variants": definition.variants is not None,
        "variants.by_name": definition.variants is not None and bool(definition.variants.by_name),
        "wire_key": framing.wire_key is not None,
    }
    used |= {name for name, on in flags.items() if on}
    used |= {f"derive.{name}" for name in definition.derive}
    for reply in definition.replies.values():
        for field in reply.fields:
            used |= _field_constructs(field)
    return frozenset(used)
