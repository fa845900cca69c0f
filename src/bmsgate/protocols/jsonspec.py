"""The ``framing.json`` section: which members of a JSON text reply become the frame's numbers (engine 5).

Felicity modules answer with one JSON object (``{"CommVer":1,"Batt":[[52800],[-1],[null]],…}``) spread over
several notifications. The engine decodes bytes at offsets, so a JSON reply is turned into a frame of fixed
layout at the edge (:mod:`bmsgate.protocols.jsonframing`), the way hex text is decoded to bytes: every
declared member, in the order declared, becomes a slot of the frame.

- a number member: a 4-byte big-endian signed slot (``s32``);
- a list member (``items: N``): N such slots, those after the list's last item :data:`ABSENT`;
- a text member (``text: N``): its string as UTF-8 in N bytes, NUL-padded (a ``type: str`` field reads it);
- a checked member (``equals: V``): no slot; a reply whose member is not V is refused.

A ``null``, a member that is absent and not ``required``, or a list's unused slot reads as :data:`ABSENT`
(the lowest ``s32``), which a field lists in its ``absent`` values (a list field with ``count: N`` and
``absent`` then holds the list's items). Re-exported by `definition` through `framingspec`.
"""

from __future__ import annotations

from typing import Final, Self

from pydantic import BaseModel, Field, model_validator

from bmsgate.protocols.datatypes import STRICT

__all__ = ["ABSENT", "SLOT_SIZE", "JsonMember", "JsonSpec"]

SLOT_SIZE: Final = 4
"""Bytes of one number's slot (a big-endian ``s32``)."""
ABSENT: Final = -(2**31)
"""The slot value of a ``null`` or a missing optional member: ``absent: [-2147483648]`` in a field."""


class _Strict(BaseModel):
    model_config = STRICT


class JsonMember(_Strict):
    """One member of the reply object, optionally an element of nested lists inside it."""

    member: str = Field(min_length=1, max_length=64)
    """The top-level member's name, e.g. ``Batt``."""
    index: list[int] = Field(default=[], max_length=4)
    """List positions inside the member: ``[1, 0]`` is ``Batt[1][0]``."""
    items: int | None = Field(default=None, ge=1, le=255)
    """The value is a list of numbers with at most this many items (one slot each)."""
    text: int | None = Field(default=None, ge=1, le=64)
    """The value is a string of at most this many UTF-8 bytes (``null``/missing: empty)."""
    equals: int | None = None
    """The member must have this value (a protocol version check); it takes no slot."""
    required: bool = True
    """``false``: a reply without the member reads :data:`ABSENT` instead of being refused."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if any(not 0 <= position <= 255 for position in self.index):
            raise ValueError("list positions in 'index' lie in 0..255")
        if sum(value is not None for value in (self.items, self.text, self.equals)) > 1:
            raise ValueError("a member is one of a list ('items'), a string ('text') or checked ('equals')")
        return self

    @property
    def path(self) -> str:
        """How the member is named in errors and docs: ``Batt[1][0]``."""
        return self.member + "".join(f"[{position}]" for position in self.index)

    @property
    def size(self) -> int:
        """Bytes of the member's slot in the frame."""
        if self.equals is not None:
            return 0
        if self.items is not None:
            return SLOT_SIZE * self.items
        if self.text is not None:
            return self.text
        return SLOT_SIZE


class JsonSpec(_Strict):
    """The members a JSON reply is read by, and the bounds of its text."""

    members: list[JsonMember] = Field(min_length=1, max_length=128)
    max_depth: int = Field(default=8, ge=1, le=32)
    """Deepest nesting of objects and lists accepted; deeper text is refused before it is parsed."""
    chunk_starts_object: bool = True
    """A received chunk that begins with ``{"`` (an object and its first member's name) while an object is
    incomplete begins a new one; the cut object is dropped. The BMS starts every reply in a new
    notification, as aiobmsble relies on; a lost notification (even one cut inside a string) then costs
    only its own reply. ``false`` for a family whose nested objects may begin a notification."""

    @model_validator(mode="after")
    def _paths_distinct(self) -> Self:
        paths: list[tuple[str | int, ...]] = [(member.member, *member.index) for member in self.members]
        for number, path in enumerate(paths):
            for other in paths[number + 1 :]:
                shorter, longer = sorted((path, other), key=len)
                if longer[: len(shorter)] == shorter:
                    raise ValueError(f"members {_named(path)} and {_named(other)} overlap (one holds the other)")
        return self

    @property
    def layout_size(self) -> int:
        """Bytes of all the members' slots: the frame is ``{`` + these + ``}``."""
        return sum(member.size for member in self.members)


def _named(path: tuple[str | int, ...]) -> str:
    return str(path[0]) + "".join(f"[{position}]" for position in path[1:])
