"""`CompiledProtocol`: a definition compiled once, with the public decode / encode / command API.

The work happens in `compile` (definition → layouts), `decode` (frames → snapshot), `encode` (state →
frames, commands) and `transforms` (each field transform, once); this class holds the compiled parts
and is immutable after construction except for its `BoundedMemo` caches, which are safe to share
between batteries, tasks and threads (see `bmsgate.protocols.memo`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from bmsgate.errors import DecodeError, DefinitionError, FrameError, ProtocolError
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.protocols import jsonframing, lineframing, pagedframing, stuffedframing, unmarkedframing
from bmsgate.protocols.compile import compile_reply
from bmsgate.protocols.decode import (
    EXTRA_LISTS,
    POSITIONED,
    FrameRunner,
    build_snapshot,
    numbered_keys,
    place_positioned,
    run_frames,
)
from bmsgate.protocols.definition import CommandSpec, GattProfile, ProtocolDefinition, RequestSpec, parse_hex
from bmsgate.protocols.encode import (
    ReplyEncoder,
    checksum_ok,
    encode_frame,
    encoder_variables,
    frame_count,
    list_starts,
    mosfet_param,
    render_template,
)
from bmsgate.protocols.framing import ChunkFrameAssembler, Frame, FrameAssembler, FrameChecker
from bmsgate.protocols.jsonframing import JsonFrameAssembler
from bmsgate.protocols.lineframing import LineFrameAssembler
from bmsgate.protocols.memo import BoundedMemo
from bmsgate.protocols.pagedframing import PagedFrameAssembler
from bmsgate.protocols.stuffedframing import StuffedFrameAssembler
from bmsgate.protocols.textframing import TextFrameAssembler, to_wire
from bmsgate.protocols.unmarkedframing import UnmarkedChunkAssembler
from bmsgate.protocols.unmarkedstream import UnmarkedStreamAssembler

__all__ = ["CompiledProtocol", "compile_definition", "decode_hex_frames"]

# Distinct device-info field sets: one per battery speaking the protocol, plus firmware changes.
_DEVICE_MEMO_SIZE: Final = 64
# Distinct (extras list, length) pairs: a few per protocol.
_KEYS_MEMO_SIZE: Final = 64


class CompiledProtocol:
    """A definition compiled for fast decoding, frame checking, request building and encoding."""

    def __init__(self, definition: ProtocolDefinition) -> None:
        self.definition = definition
        self.name = definition.name
        framing = definition.framing
        self.checker = FrameChecker(framing)
        self._variants = definition.variants
        self._select = (definition.variants.select or "")[4:] if definition.variants else ""
        variant_names = tuple(definition.variants.choices) if definition.variants else ()
        self._variant_set = frozenset(variant_names)
        self._replies = {
            key: compile_reply(
                key,
                spec,
                endian=definition.endian,
                source=definition.source,
                variant_names=variant_names,
                payload_slice=(framing.payload_offset, framing.trailer_size),
            )
            for key, spec in definition.replies.items()
        }
        self._limits: dict[str, str | None] = {}
        for reply in self._replies.values():
            self._limits.update(reply.limits)
        order = [request.reply for request in definition.requests if request.reply is not None]
        self._list_starts = list_starts(definition, order)
        self._encoders = {
            key: ReplyEncoder(framing, reply, self._list_starts.get(key, {})) for key, reply in self._replies.items()
        }
        self._runner = FrameRunner(
            name=self.name,
            checker=self.checker,
            keyed=framing.key is not None,
            order={key: index for index, key in enumerate(order)},
            replies=self._replies,
            payload_offset=framing.payload_offset,
            trailer=framing.trailer_size,
            variants=self._variants,
            select=self._select,
            prefix=(
                (framing.prefix.var[4:], tuple(framing.starts) if framing.starts else framing.start)
                if framing.prefix is not None
                else None
            ),
        )
        # Identical device fields (every poll) give one shared, frozen DeviceInfo: `merged_over` then
        # short-circuits on identity, and no poll allocates a new one.
        self._device_info = BoundedMemo(self._new_device_info, _DEVICE_MEMO_SIZE)
        self._numbered_keys = BoundedMemo(numbered_keys, _KEYS_MEMO_SIZE)
        # What a poll without device fields reports (frozen, so one instance serves every poll).
        self._anonymous = DeviceInfo(manufacturer=definition.manufacturer)
        self._voltage_from_cells = "voltage_from_cells" in definition.derive
        # `key.in_replies: false`: frames decoded without the key of their request answer the requests in order.
        self._reply_order: tuple[int, ...] | None = None
        if framing.key is not None and not framing.key.in_replies:
            self._reply_order = tuple(dict.fromkeys(order))

    # -- what the definition says ---------------------------------------------------------------------

    @property
    def title(self) -> str:
        """Human-readable protocol name."""
        return self.definition.title

    @property
    def gatt_profiles(self) -> list[GattProfile]:
        """GATT service/characteristic triples to try, in order (empty for serial-only protocols)."""
        return list(self.definition.gatt.profiles) if self.definition.gatt else []

    @property
    def requests(self) -> list[RequestSpec]:
        """The requests of one poll, in order."""
        return list(self.definition.requests)

    @property
    def needs_secret(self) -> bool:
        """Whether a request carries the battery's configured secret (engine 7: a PIN, a key)."""
        return any(request.secret is not None for request in self.definition.requests)

    @property
    def possible_alarms(self) -> frozenset[Alarm]:
        """Every alarm this protocol can raise."""
        return self.definition.possible_alarms

    @property
    def variant_names(self) -> tuple[str, ...]:
        """Names of the layouts a decoded value chooses between (empty when there is one layout)."""
        return tuple(self._variants.choices) if self._variants else ()

    def variant_for(self, variables: Mapping[str, int]) -> str | None:
        """The layout the variables select (None when the definition has a single layout)."""
        if self._variants is None:
            return None
        return self._variants.choose(variables.get(self._select))

    def variant_for_name(self, device_name: str | None) -> str | None:
        """The layout a device's advertised name chooses (None when the name chooses none: no ``by_name``)."""
        if self._variants is None or not self._variants.by_name:
            return None
        return self._variants.for_name(device_name)

    def requests_for(self, device_name: str | None) -> list[RequestSpec]:
        """The poll's requests for the device named `device_name` (``variants.by_name`` leaves some out)."""
        layout = self.variant_for_name(device_name)
        requests = self.definition.requests
        if layout is None:
            return requests
        return [request for request in requests if request.variants is None or layout in request.variants]

    def __repr__(self) -> str:
        return f"<CompiledProtocol {self.name} from {self.definition.source}>"

    # -- decoding -------------------------------------------------------------------------------

    def new_assembler(
        self,
    ) -> (
        FrameAssembler
        | TextFrameAssembler
        | ChunkFrameAssembler
        | JsonFrameAssembler
        | LineFrameAssembler
        | UnmarkedChunkAssembler
        | StuffedFrameAssembler
        | PagedFrameAssembler
        | UnmarkedStreamAssembler
    ):
        """A fresh assembler for one connection."""
        if self.definition.framing.pages is not None:
            return PagedFrameAssembler(self.definition.framing, checker=self.checker)
        if self.definition.framing.escape is not None:
            return StuffedFrameAssembler(self.definition.framing, checker=self.checker)
        if not self.definition.framing.marker_on_wire and not self.definition.framing.frame_per_chunk:
            return UnmarkedStreamAssembler(self.definition.framing, checker=self.checker)
        if not self.definition.framing.marker_on_wire:
            return UnmarkedChunkAssembler(self.definition.framing, checker=self.checker)
        if self.definition.framing.text == "json":
            return JsonFrameAssembler(self.definition.framing, checker=self.checker)
        if self.definition.framing.text == "lines":
            return LineFrameAssembler(self.definition.framing, checker=self.checker)
        if self.definition.framing.text is not None:
            return TextFrameAssembler(self.definition.framing, checker=self.checker)
        if self.definition.framing.frame_per_chunk:
            return ChunkFrameAssembler(self.definition.framing, checker=self.checker)
        return FrameAssembler(self.definition.framing, checker=self.checker)

    def wire(self, frame: bytes) -> bytes:
        """What is sent for a frame (a request, or a reply the simulator encodes).

        The frame itself, or its hex text between the markers (hex-text framing).
        """
        framing = self.definition.framing
        if framing.pages is not None:
            return pagedframing.to_wire(frame, framing)
        if framing.escape is not None and frame:
            return stuffedframing.to_wire(frame, framing)
        if not framing.marker_on_wire and frame:
            return unmarkedframing.to_wire(frame, framing)
        if framing.text is None or not frame or framing.requests_as_written:  # (listen: nothing on the wire)
            return frame
        if framing.text == "json":
            return jsonframing.to_wire(frame, framing)
        if framing.text == "lines":
            return lineframing.to_wire(frame, framing)
        return to_wire(frame, framing)

    def wire_reply(self, frame: bytes) -> bytes:
        """What the BMS sends for a reply frame (the simulator): `wire`, but paged replies count data only."""
        if self.definition.framing.pages is not None:
            return pagedframing.to_wire(frame, self.definition.framing, request=False)
        if self.definition.framing.requests_as_written and frame:
            return to_wire(frame, self.definition.framing)
        return self.wire(frame)

    def check_frame(self, raw: bytes) -> Frame:
        """Validate a complete frame (see `FrameChecker.check`)."""
        return self.checker.check(raw)

    def decode(
        self,
        frames: Iterable[Frame | bytes | bytearray],
        *,
        battery_id: str = "battery",
        timestamp: float | None = None,
        device: DeviceInfo | None = None,
        variant: str | None = None,
    ) -> BatterySnapshot:
        """Decode the reply frames of one poll into one snapshot.

        Frames are processed in the definition's request order (so values such as a cell count
        decoded from one reply are available to the next); unknown reply types are ignored.

        Args:
            frames: the poll's reply frames (raw bytes are checked first).
            battery_id: put into the snapshot.
            timestamp: Unix time of the poll (default: now).
            device: identity known from earlier polls; this poll's values take precedence.
            variant: force a layout (see `variant_names`) instead of the one a decoded value selects.

        Raises:
            FrameError: a raw frame fails its length/marker/checksum check.
            DecodeError: a frame is too short for its fields, or values are impossible.
            ProtocolError: the BMS flagged an error in a reply's status byte.
            ValueError: `variant` is not one of `variant_names`.
        """
        if variant is not None and variant not in self._variant_set:
            raise ValueError(f"{self.name}: unknown variant {variant!r}; choose one of {list(self.variant_names)}")
        out: dict[str, Any] = {}
        device_fields: dict[str, Any] = {}
        variables: dict[str, int] = {}
        if self._reply_order is not None:
            frames = self._keyed_in_request_order(frames)
        if not run_frames(self._runner, frames, out, device_fields, variables, variant):
            raise DecodeError(f"{self.name}: none of the frames is a reply this protocol decodes")
        if POSITIONED in out:
            place_positioned(self.name, out, variables, self._limits)
        if self._voltage_from_cells and out.get("voltage") is None and out.get("cell_voltages"):
            out["voltage"] = round(math.fsum(out["cell_voltages"]), 3)
        if EXTRA_LISTS in out:
            # Lists decoded into extras become numbered scalar keys.
            extras = out.setdefault("extras", {})
            keys = self._numbered_keys
            for name, values in out.pop(EXTRA_LISTS).items():
                # The keys are made for this length: a strict zip would only re-check it.
                extras.update(zip(keys[name, len(values)], values, strict=False))
        info = self._device_info[tuple(device_fields.items())] if device_fields else None
        return build_snapshot(self.name, out, info, battery_id, timestamp, device, self._anonymous)

    def _keyed_in_request_order(self, frames: Iterable[Frame | bytes | bytearray]) -> list[Frame]:
        """Frames without a key (``key.in_replies: false``) as the answers of the requests, in request order.

        A frame the session already keyed keeps its key; the n-th frame without one answers the n-th request
        that expects a reply; frames beyond the requests answer none (they are ignored).
        """
        order = self._reply_order or ()
        keyed: list[Frame] = []
        for index, item in enumerate(frames):
            frame = item if isinstance(item, Frame) else self.checker.check(bytes(item))
            if frame.key is None and index < len(order):
                frame = frame._replace(key=order[index])
            keyed.append(frame)
        return keyed

    def _new_device_info(self, fields: tuple[tuple[str, Any], ...]) -> DeviceInfo:
        values = dict(fields)
        if self.definition.manufacturer:
            values.setdefault("manufacturer", self.definition.manufacturer)
        return DeviceInfo(**values)

    def variables_of(self, frames: Iterable[Frame | bytes | bytearray]) -> dict[str, int]:
        """The ``var.*`` values the frames decoded so far define (best effort; never raises)."""
        variables: dict[str, int] = {}
        with contextlib.suppress(ProtocolError, ValueError):
            run_frames(self._runner, frames, {}, {}, variables, None)
        return variables

    def frames_expected(self, key: int | None, variables: Mapping[str, int]) -> int | None:
        """How many frames of reply `key` answer one request (None: unknown until a variable is decoded)."""
        reply = self._replies.get(key) if key is not None else None
        if reply is None or reply.spec.index is None:
            return 1
        if reply.frames_var is None:
            return None
        count = variables.get(reply.frames_var)
        if count is None:
            return None
        return max(1, -(-count // reply.per_frame))

    def frame_numbers(self, key: int | None, variables: Mapping[str, int]) -> range | None:
        """The numbers of the frames that together make reply `key` whole (engine 6, rotating streams).

        None when the reply is not numbered by frame, or its frame count is not known from `variables` yet.
        """
        reply = self._replies.get(key) if key is not None else None
        if reply is None or reply.spec.index is None or reply.spec.index.numbers != "frames":
            return None
        expected = self.frames_expected(key, variables)
        if expected is None:
            return None
        return range(reply.spec.index.base, reply.spec.index.base + expected)

    def frame_number(self, frame: Frame) -> int | None:
        """The number byte of a frame of an indexed reply (None: no indexed reply of its key)."""
        reply = self._replies.get(frame.key) if frame.key is not None else None
        if reply is None or reply.spec.index is None:
            return None
        at = self.definition.framing.payload_offset + reply.spec.index.at
        return frame.raw[at] if at < len(frame.raw) else None

    # -- encoding ---------------------------------------------------------------------------------

    def encode_reply(
        self,
        key: int,
        state: Mapping[str, Any],
        *,
        status_ok: bool = True,
        variant: str | None = None,
        frame_index: int = 0,
    ) -> bytes:
        """Build a complete, valid reply frame of type `key` from snapshot-like `state`.

        `state` maps targets (``voltage``, ``cell_voltages``, ``device.model``, ``extras.x``,
        ``var.cell_count``, ``alarms`` as a set of `Alarm`, ``balancing_cells`` as cell numbers) to
        values; missing values encode as zero / absent. The layout is `variant`, else the one the
        state's selector variable chooses. `frame_index` picks the slice of an indexed reply.
        """
        encoder = self._encoders[key]
        variables = encoder.variables(state, frame_index)
        layout = None
        if self._variants is not None:
            layout = variant or self._variants.choose(variables.get(self._select))
        return encoder.encode(layout, state, variables, status_ok=status_ok, frame_index=frame_index)

    def _encode_reply_stepwise(
        self,
        key: int,
        state: Mapping[str, Any],
        *,
        status_ok: bool = True,
        variant: str | None = None,
        frame_index: int = 0,
    ) -> bytes:
        """`encode_reply` field step by field step: the reference the generated encoders are tested against."""
        reply = self._replies[key]
        variables = encoder_variables(reply, state, frame_index, self._list_starts.get(key, {}))
        encoders = reply.default.encoders
        if self._variants is not None:
            encoders = reply.layouts[variant or self._variants.choose(variables.get(self._select))].encoders
        return encode_frame(
            self.definition.framing,
            reply,
            encoders,
            state,
            variables,
            status_ok=status_ok,
            frame_index=frame_index,
        )

    def encode_replies(self, key: int, state: Mapping[str, Any], *, variant: str | None = None) -> list[bytes]:
        """Every frame that answers one request for reply `key` (several for an indexed reply)."""
        reply = self._replies[key]
        if reply.spec.index is None or not reply.per_frame:
            return [self.encode_reply(key, state, variant=variant)]
        variables = {target[4:]: int(value) for target, value in state.items() if target.startswith("var.")}
        expected = frame_count(reply, state, self.frames_expected(key, variables))
        return [self.encode_reply(key, state, variant=variant, frame_index=index) for index in range(expected)]

    def build_command(self, name: str, *, charge: bool | None, discharge: bool | None) -> bytes:
        """A complete write frame for command `name` with parameters from the desired MOSFET states."""
        command = self.definition.commands[name]
        values = {
            param: mosfet_param(bits, charge=charge, discharge=discharge) for param, bits in command.params.items()
        }
        return self.render_command(command, values)

    def render_command(self, command: CommandSpec, values: Mapping[str, int]) -> bytes:
        """Fill a command template's placeholders and checksum."""
        return render_template(command, values, self.definition.framing)

    def request_checksum_ok(self, frame: bytes) -> bool:
        """Whether a literal request frame carries a correct checksum (catches typos in definitions)."""
        framing = self.definition.framing
        return checksum_ok(frame, framing.request_checksum or framing.checksum)


def compile_definition(definition: ProtocolDefinition) -> CompiledProtocol:
    """Compile a definition (do this once; the result is safe to share between tasks and threads)."""
    compiled = CompiledProtocol(definition)
    for request in definition.requests:
        if request.frame and not compiled.request_checksum_ok(request.frame):
            raise DefinitionError(
                "checksum of the request frame is wrong",
                source=definition.source,
                field=f"requests.{request.name}.frame",
            )
    return compiled


def decode_hex_frames(compiled: CompiledProtocol, texts: Sequence[str]) -> list[Frame]:
    """Parse hex strings (spaces allowed) into checked frames, naming the bad argument on error."""
    frames = []
    for index, text in enumerate(texts, start=1):
        try:
            raw = parse_hex(text)
        except ValueError as exc:
            raise FrameError(f"frame {index}: {exc}") from None
        try:
            frames.append(compiled.check_frame(raw))
        except FrameError as exc:
            raise FrameError(f"frame {index}: {exc}") from None
    return frames
