"""The CAN profile file format as validated data, with its DBC text inside (not yet parsed).

The profile YAML names a DBC file (``dbc: pylon.dbc``, relative to the profile); loading puts that file's
text into ``dbc_text``, so the model, and its canonical IR, is self-contained: a pushed pack or a fleet
server sees the whole profile in one JSON document, and its sha256 changes when the DBC does. A profile may
also carry ``dbc_text`` itself instead of naming a file beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bmsgate.canonical import CanonicalModel, Real
from bmsgate.datafiles import describe_validation_error
from bmsgate.errors import DefinitionError

__all__ = ["FORMAT_VERSIONS", "CanProfileDefinition", "ProfileQuirks", "profile_definition"]

FORMAT_VERSIONS: Final = frozenset({1})
"""CAN profile formats this bmsgate reads."""


class ProfileQuirks(BaseModel):
    """Inverter-specific behaviour a profile switches on.

    Attributes:
        stop_charge_with_cvl: when charging must stop, lower the CVL to the pack voltage (Victron, SMA).
        never_zero_cvl: never send CVL 0 (fall back to the pack voltage; Victron faults on 0).
        soc_forcing: report SoC 100 % when charging must stop, 0 % when discharging must (Deye/Solis
            ignore zero current limits).
        invalid_markers: values the bank does not know are sent as "invalid" (0xFFFF unsigned,
            0x8000 signed; SMA) instead of 0.
        victron_extras: also send the profile's ``extra_frames`` (Victron-style 0x372 module counts and
            0x374-0x377 extreme cell/sensor ids; docs/can.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    stop_charge_with_cvl: bool = False
    never_zero_cvl: bool = False
    soc_forcing: bool = False
    invalid_markers: bool = False
    victron_extras: bool = False


_FrameId = Annotated[int, Field(ge=0, le=0x1FFF_FFFF)]


class CanProfileDefinition(BaseModel, CanonicalModel):
    """A CAN profile with its DBC text (its :meth:`ir` is the canonical form)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    format: Literal[1] = 1
    name: str = Field(min_length=1)
    version: str | None = None
    """The profile's own version (free text), shown by the catalog."""
    description: str = ""
    inverters: list[str] = []
    """Inverters the profile is known to fit (shown by ``bmsgate inverters list``)."""
    verified: str = ""
    """How the layout is known: ``real frames`` (checked against captures), ``device-confirmed``, ``vendor
    document``, ``reported`` (user reports only); empty: not stated."""
    dbc: str = Field(min_length=1)
    """The DBC file's name as the profile wrote it (relative to the profile file)."""
    dbc_text: str = Field(min_length=1)
    """The DBC file's content."""
    mode: Literal["push", "request"] = "push"
    period: Annotated[Real, Field(gt=0, le=60)] = 1.0
    min_interval: Annotated[Real, Field(ge=0, le=10)] = 0.1
    dlc: Annotated[int, Field(ge=0, le=8)] | None = None
    manufacturer: str = ""
    keepalive_id: _FrameId | None = None
    request_id: _FrameId | None = None
    frames: list[_FrameId] = Field(min_length=1)
    extra_frames: list[_FrameId] = []
    """Optional frames sent after `frames` only while the ``victron_extras`` quirk is on."""
    signals: dict[str, str] = {}
    constants: dict[str, int] = {}
    invalid: list[str] = []
    quirks: ProfileQuirks = ProfileQuirks()

    @field_validator("manufacturer")
    @classmethod
    def _ascii8(cls, value: str) -> str:
        if not value.isascii() or len(value) > 8:
            raise ValueError("manufacturer must be at most 8 ASCII characters")
        return value

    def _ir_always(self) -> dict[str, Any]:
        return {"format": self.format}


def profile_definition(
    data: object, *, source: str, read_dbc: Callable[[str], str] | None = None
) -> CanProfileDefinition:
    """Validate a parsed profile (YAML or canonical IR); the format is checked first.

    Args:
        data: the parsed file.
        source: the file name, for error messages.
        read_dbc: reads the named DBC file (relative to the profile) when the data has no ``dbc_text``.

    Raises:
        DefinitionError: naming `source`, the field and the reason.
    """
    if not isinstance(data, Mapping):
        raise DefinitionError("a profile must be a mapping", source=source)
    version = data.get("format", 1)
    if version not in FORMAT_VERSIONS:
        raise DefinitionError(
            f"CAN profile format {version!r} is not supported by this bmsgate (it reads format "
            f"{', '.join(map(str, sorted(FORMAT_VERSIONS)))})",
            source=source,
            field="format",
        )
    if "dbc_text" not in data and isinstance(data.get("dbc"), str) and read_dbc is not None:
        data = {**data, "dbc_text": read_dbc(data["dbc"])}
    try:
        return CanProfileDefinition.model_validate(data)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        raise DefinitionError(problem.reason + problem.more_text, source=source, field=problem.location) from None
