"""The declarative protocol definition format (YAML), its validation and loading.

A definition is pure data: it is parsed by the bounded safe YAML loader (`bmsgate.datafiles`) and
validated into the frozen models below and in `fields` (the field tables), `gattspec` (discovery: GATT
profiles, advertisement matchers, serial settings) and `datatypes` (hex, UUIDs);
this module re-exports those so the format has one public home. Nothing in it can name or run code;
algorithms (checksums, value transforms) are chosen from
fixed sets that ship with bmsgate. The format is documented in docs/protocol-definitions.md.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bmsgate.canonical import CanonicalModel, Real
from bmsgate.datafiles import describe_validation_error, parse_yaml, read_text
from bmsgate.errors import DefinitionError
from bmsgate.model import Alarm
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION, constructs_used, unknown_constructs
from bmsgate.protocols.datatypes import STRICT, Endian, HexBytes, normalize_uuid, parse_hex
from bmsgate.protocols.fields import (
    BOOL_TARGETS,
    DEVICE_TARGETS,
    FLOAT_TARGETS,
    INT_TARGETS,
    INTEGER_SIZES,
    LIST_TARGETS,
    FieldCondition,
    FieldSpec,
    FrameIndexSpec,
    ReplySpec,
    is_var,
)
from bmsgate.protocols.framingspec import ChecksumSpec, FramingSpec, KeySpec, LengthSpec, PrefixSpec, StatusSpec
from bmsgate.protocols.gattspec import (
    AdvertisementMatcher,
    CharacteristicWrite,
    GattProfile,
    GattSpec,
    NotificationAnswer,
    SerialSpec,
)
from bmsgate.protocols.requestspec import (
    PLACEHOLDER_SIZES,
    CommandSpec,
    KeepAliveSpec,
    MosfetBits,
    NameBytesSpec,
    RequestSpec,
    SecretSpec,
)
from bmsgate.protocols.textslots import check_absent_markers

__all__ = [
    "BOOL_TARGETS",
    "DEVICE_TARGETS",
    "FLOAT_TARGETS",
    "INTEGER_SIZES",
    "INT_TARGETS",
    "LIST_TARGETS",
    "PLACEHOLDER_SIZES",
    "AdvertisementMatcher",
    "CharacteristicWrite",
    "NotificationAnswer",
    "ChecksumSpec",
    "CommandSpec",
    "FieldCondition",
    "FieldSpec",
    "FORMAT_VERSIONS",
    "FrameIndexSpec",
    "FramingSpec",
    "GattProfile",
    "GattSpec",
    "KeySpec",
    "LengthSpec",
    "MosfetBits",
    "KeepAliveSpec",
    "NameBytesSpec",
    "PrefixSpec",
    "ProtocolAlias",
    "ProtocolDefinition",
    "ReplySpec",
    "RequestSpec",
    "SecretSpec",
    "SerialSpec",
    "SimulatorSpec",
    "StatusSpec",
    "VariantChoice",
    "VariantSpec",
    "definition_from_canonical",
    "definition_from_mapping",
    "load_definition",
    "normalize_uuid",
    "parse_hex",
]

FORMAT_VERSION: Final = 1
FORMAT_VERSIONS: Final = frozenset({FORMAT_VERSION})
"""Definition formats this engine reads."""


# What a field may write is the snapshot model itself (bmsgate.model derives these from its dataclasses).
class _Strict(BaseModel):
    model_config = STRICT


# -- layouts and simulation --------------------------------------------------------------------------


class VariantChoice(_Strict):
    """The selector range of one layout (inclusive; an open end is unbounded)."""

    min: int | None = None
    max: int | None = None


class VariantSpec(_Strict):
    """Layouts chosen by a decoded value (e.g. JK's cell-info layout by the firmware version) or by the name.

    Fields carrying ``variants: [name, ...]`` exist only in those layouts. The first choice whose
    range holds the selector variable wins; `default` applies while the selector is unknown. With
    `by_name` (engine 6, Offgridtec's types A and B) the device's advertised name chooses instead: the first
    glob it matches names the layout, and requests carrying ``variants`` are sent only in those layouts.
    """

    select: str | None = None
    by_name: dict[str, str] = {}
    """Glob of advertised names (case-sensitive) -> the layout for them; the first that matches wins."""
    default: str
    choices: dict[str, VariantChoice] = Field(min_length=1)

    @field_validator("select")
    @classmethod
    def _select_form(cls, value: str | None) -> str | None:
        if value is not None and not is_var(value):
            raise ValueError("expected 'var.NAME'")
        return value

    @model_validator(mode="after")
    def _default_known(self) -> Self:
        if self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of the choices {sorted(self.choices)}")
        if (self.select is None) == (not self.by_name):
            raise ValueError("give exactly one of 'select' (a decoded value) and 'by_name' (the device name)")
        unknown = sorted(set(self.by_name.values()) - set(self.choices))
        if unknown:
            raise ValueError(f"by_name names layouts {unknown} that 'choices' does not define")
        return self

    def choose(self, value: int | None) -> str:
        """The layout for a selector value (None = unknown)."""
        if value is not None:
            for name, choice in self.choices.items():
                if (choice.min is None or value >= choice.min) and (choice.max is None or value <= choice.max):
                    return name
        return self.default

    def for_name(self, device_name: str | None) -> str:
        """The layout for a device's advertised name (`default` when no glob of `by_name` matches)."""
        if device_name:
            for glob, layout in self.by_name.items():
                if fnmatch.fnmatchcase(device_name, glob):
                    return layout
        return self.default


SimulatorValue = str | int | float | bool | None


class SimulatorSpec(_Strict):
    """How the built-in simulator imitates this BMS beyond its field tables (pure data)."""

    state: dict[str, SimulatorValue | list[SimulatorValue]] = {}
    """Targets overriding the simulated pack's state (e.g. a firmware version that picks a layout)."""
    noise: list[HexBytes] = []
    """Chunks the BLE module sends before each reply (``AT\\r\\n``)."""
    append: dict[int, HexBytes] = {}
    """Bytes glued onto the end of replies of a type (an ack some firmware appends)."""
    stream_interval: Real = Field(default=1.0, gt=0)
    """Seconds between frames of a streaming reply."""
    device_name: str | None = None
    """The advertised name of the simulated device, for definitions that depend on it (engine 6: a
    ``wire_key`` the simulator transport applies, the layout ``variants.by_name`` chooses)."""


# -- the definition ----------------------------------------------------------------------------------

_NAME_FORM: Final = re.compile(r"[a-z][a-z0-9_-]*")


class ProtocolAlias(_Strict):
    """Another family id that is this protocol with other discovery data (aiobmsble's subclasses).

    Its advertisement matchers and GATT profile are part of the definition's own ``match`` and
    ``gatt.profiles``; the alias makes ``protocol: ID`` resolve here and ``protocols list`` name it.
    """

    id: str
    title: str
    manufacturer: str | None = None
    verified: str = ""
    """``real frames: SOURCE`` when conformance vectors under spec/vectors/ID/ decode frames captured from a
    pack of this family (through this definition); empty: unverified (the protocol may be verified)."""

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _NAME_FORM.fullmatch(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (e.g. 'ag')")
        return value


class ProtocolDefinition(_Strict, CanonicalModel):
    """A complete, validated protocol definition (its :meth:`ir` is the canonical form)."""

    format: Literal[1] = 1
    name: str
    version: str | None = None
    """The definition's own version (free text such as ``2024.3``), shown by the catalog."""
    requires: list[str] | None = None
    """Engine constructs the definition uses (see bmsgate.protocols.constructs); None: not declared."""
    title: str
    manufacturer: str | None = None
    description: str = ""
    references: list[str] = []
    verified: str = ""
    """How the layout is known; ``real frames: SOURCE`` when conformance vectors decode frames captured from
    a real BMS (spec/vectors/NAME/, a test holds the two together). Empty: unverified."""
    endian: Endian = "big"
    gatt: GattSpec | None = None
    match: list[AdvertisementMatcher] = []
    serial: SerialSpec | None = None
    framing: FramingSpec
    requests: list[RequestSpec] = Field(min_length=1)
    commands: dict[str, CommandSpec] = {}
    keep_alive: KeepAliveSpec | None = None
    """Engine 7: bytes written every ``period`` seconds while connected (123\\SmartBMS gen3's ``$``)."""
    replies: dict[int, ReplySpec]
    variants: VariantSpec | None = None
    derive: list[Literal["voltage_from_cells"]] = []
    """Values computed from decoded ones when the frames lack them: ``voltage_from_cells`` is the pack
    voltage as the sum of the cell voltages (E&J frames carry no pack voltage)."""
    simulator: SimulatorSpec = SimulatorSpec()
    aliases: list[ProtocolAlias] = []
    """Family ids that are this protocol under other names (``protocol: ID`` resolves to this definition)."""

    source: str = Field(default="<memory>", exclude=True)
    """Where the definition was loaded from (for error messages)."""

    @field_validator("name")
    @classmethod
    def _name_form(cls, value: str) -> str:
        if not _NAME_FORM.fullmatch(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (e.g. 'jbd')")
        return value

    @model_validator(mode="after")
    def _aliases_distinct(self) -> Self:
        seen = {self.name}
        for alias in self.aliases:
            if alias.id in seen:
                raise ValueError(f"alias {alias.id!r} repeats the definition's name or another alias")
            seen.add(alias.id)
        return self

    @field_validator("requires")
    @classmethod
    def _known_constructs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = unknown_constructs(value)
            if unknown:
                raise ValueError(_unsupported(unknown))
        return value

    @model_validator(mode="after")
    def _requires_tells_the_truth(self) -> Self:
        if self.requires is not None:
            used = constructs_used(self)
            missing, unused = sorted(used - set(self.requires)), sorted(set(self.requires) - used)
            if missing:
                raise ValueError(f"uses {', '.join(missing)} but 'requires' does not list {_them(missing)}")
            if unused:
                raise ValueError(f"'requires' lists {', '.join(unused)}, which the definition does not use")
        return self

    def _ir_always(self) -> dict[str, Any]:
        return {"format": self.format, "requires": sorted(constructs_used(self))}

    @model_validator(mode="after")
    def _text_slots_say_when_absent(self) -> Self:
        check_absent_markers(self.framing.text, self.replies)
        return self

    @model_validator(mode="after")
    def _further_notifications_are_whole_frames(self) -> Self:
        # Notifications of two characteristics interleave in no defined order: only when each one is a whole
        # frame can a frame of one never be cut by a chunk of the other.
        if (
            self.gatt is not None
            and any(p.also_notify for p in self.gatt.profiles)
            and not self.framing.frame_per_chunk
        ):
            raise ValueError("gatt 'also_notify' needs framing.frame_per_chunk (every notification one whole frame)")
        markers = {self.framing.start, *self.framing.starts}
        for profile in self.gatt.profiles if self.gatt is not None else []:
            # A tag is the frame's type in front of a block: only a whole notification can carry one.
            if profile.tags and not (self.framing.frame_per_chunk and {e.tag for e in profile.tags} <= markers):
                raise ValueError("gatt 'tags' need framing.frame_per_chunk and each tag among framing.starts")
        return self

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        if self.framing.text is not None and self.commands:
            raise ValueError("commands are not supported with hex-text framing yet")
        keyed = self.framing.key is not None
        for index, request in enumerate(self.requests):
            if request.follows and (index == 0 or self.requests[index - 1].streaming):
                raise ValueError(
                    f"requests[{index}] ({request.name}) follows no request it could be a further reply of"
                )
            if request.reply is not None:
                if request.reply not in self.replies:
                    raise ValueError(
                        f"requests[{index}] ({request.name}) expects reply {request.reply:#04x}, "
                        "which 'replies' does not define"
                    )
                if not keyed and len(self.requests) > 1:
                    raise ValueError("several requests need framing.key to tell their replies apart")
        self._check_keys_from_requests()
        defined = {
            field.target[4:]
            for reply in self.replies.values()
            for field in reply.fields
            if field.target.startswith("var.")
        }
        if self.framing.prefix is not None:
            defined.add(self.framing.prefix.var[4:])
        layouts = set(self.variants.choices) if self.variants else set()
        for key, reply in self.replies.items():
            for index, field in enumerate(reply.fields):
                for name in field.variables_used():
                    if name not in defined:
                        raise ValueError(f"replies[{key:#04x}].fields[{index}] uses var.{name}, which no field sets")
                unknown = set(field.variants or ()) - layouts
                if unknown:
                    raise ValueError(
                        f"replies[{key:#04x}].fields[{index}] names layouts {sorted(unknown)} "
                        "that 'variants.choices' does not define"
                    )
        for index, request in enumerate(self.requests):
            if request.variants is not None and (
                self.variants is None or not self.variants.by_name or not set(request.variants) <= layouts
            ):
                raise ValueError(
                    f"requests[{index}] ({request.name}) names layouts: that needs 'variants.by_name' defining them"
                )
        if self.variants is not None and self.variants.select is not None and self.variants.select[4:] not in defined:
            raise ValueError(f"variants.select uses {self.variants.select}, which no field sets")
        for key in self.simulator.append:
            if key not in self.replies:
                raise ValueError(f"simulator.append names reply {key:#04x}, which 'replies' does not define")
        return self

    def _check_keys_from_requests(self) -> None:
        """`key.in_replies: false`: each request's frame carries the key of the reply it names."""
        key = self.framing.key
        if key is None or key.in_replies:
            return
        if any(reply.index is not None for reply in self.replies.values()):
            raise ValueError("'key.in_replies: false' cannot tell numbered frames ('index') apart")
        for index, request in enumerate(self.requests):
            if request.streaming or not request.frame:
                raise ValueError(
                    f"requests[{index}] ({request.name}): with 'key.in_replies: false' a reply answers the request "
                    "just sent, so no request may stream or listen"
                )
            if request.reply is None:
                continue
            carried = request.frame[key.offset : key.offset + key.size]
            if len(carried) != key.size or int.from_bytes(carried, "big") != request.reply:
                raise ValueError(
                    f"requests[{index}] ({request.name}) expects reply {request.reply:#04x}, but its frame carries "
                    f"{carried.hex().upper() or 'nothing'} at the key's offset {key.offset}"
                )

    # -- conveniences ---------------------------------------------------------------------------

    @property
    def possible_alarms(self) -> frozenset[Alarm]:
        """Every alarm some field of this definition can raise."""
        return frozenset(
            alarm
            for reply in self.replies.values()
            for field in reply.fields
            for alarm in [*(field.flags or {}).values(), *(field.codes or {}).values()]
        )

    @property
    def reported_targets(self) -> frozenset[str]:
        """Every snapshot target some field fills or the definition derives (which entities to offer)."""
        filled = {field.target for reply in self.replies.values() for field in reply.fields}
        if "voltage_from_cells" in self.derive:
            filled.add("voltage")
        return frozenset(filled)

    def matches_advertisement(
        self,
        *,
        name: str | None,
        address: str | None,
        service_uuids: list[str],
        manufacturer_ids: list[int],
        service_data_uuids: Sequence[str] = (),
    ) -> bool:
        """True when any advertisement matcher fits."""
        return any(
            matcher.matches(
                name=name,
                address=address,
                service_uuids=service_uuids,
                manufacturer_ids=manufacturer_ids,
                service_data_uuids=service_data_uuids,
            )
            for matcher in self.match
        )


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def _unsupported(names: list[str]) -> str:
    return (
        f"needs engine construct{'s' if len(names) > 1 else ''} {', '.join(names)}, which this engine "
        f"(protocol engine {ENGINE_VERSION}) does not support; known constructs: {', '.join(sorted(CONSTRUCTS))}"
    )


def _check_engine(data: Mapping[Any, Any], source: str) -> None:
    """Refuse a file written for a newer engine by what it needs, before the strict schema sees it."""
    version = data.get("format", FORMAT_VERSION)
    if version not in FORMAT_VERSIONS:
        raise DefinitionError(
            f"format {version!r} is not supported by this engine (protocol engine {ENGINE_VERSION} reads format "
            f"{', '.join(map(str, sorted(FORMAT_VERSIONS)))})",
            source=source,
            field="format",
        )
    requires = data.get("requires")
    if requires is not None and not (isinstance(requires, list) and all(isinstance(n, str) for n in requires)):
        raise DefinitionError("expected a list of construct names", source=source, field="requires")
    unknown = unknown_constructs(requires)
    if unknown:
        raise DefinitionError(_unsupported(unknown), source=source, field="requires")


def definition_from_mapping(data: Any, *, source: str = "<memory>") -> ProtocolDefinition:
    """Validate an already-parsed mapping (YAML, or the canonical IR).

    ``format`` and ``requires`` are checked first, so a file for a newer engine is refused by the
    construct it needs rather than by the first key this engine does not know.

    Raises:
        DefinitionError: naming the source, the field path and the reason.
    """
    if not isinstance(data, Mapping):
        raise DefinitionError("expected a mapping at the top level", source=source)
    _check_engine(data, source)
    try:
        return ProtocolDefinition.model_validate({**data, "source": source})
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        raise DefinitionError(problem.reason + problem.more_text, source=source, field=problem.location) from None


def load_definition(path: str | Path) -> ProtocolDefinition:
    """Load a definition from a YAML file (data only: it can never execute code).

    Raises:
        DefinitionError: unreadable file, YAML syntax error, or invalid content.
    """
    source = str(path)
    text = read_text(path, error=lambda reason: DefinitionError(reason, source=source))
    return definition_from_text(text, source=source)


def definition_from_text(text: str, *, source: str = "<memory>") -> ProtocolDefinition:
    """Parse and validate YAML text (``yaml.safe_load``: no tags that construct objects)."""
    data = parse_yaml(text, error=lambda reason: DefinitionError(reason, source=source))
    return definition_from_mapping(data, source=source)


def definition_from_canonical(text: bytes | str, *, source: str = "<canonical>") -> ProtocolDefinition:
    """A definition from its canonical JSON (what :meth:`ProtocolDefinition.canonical_json` wrote).

    Raises:
        DefinitionError: not JSON, or not a valid definition.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DefinitionError(f"invalid JSON: {exc}", source=source) from None
    return definition_from_mapping(data, source=source)
