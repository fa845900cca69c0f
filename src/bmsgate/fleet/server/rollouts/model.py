"""What a rollout is: its request (target, selection, options), its state, its members, and their JSON forms.

A rollout is created from a :class:`RolloutSpec`: a :class:`RolloutTarget` (packs and/or a software version,
as TUF targets of :mod:`bmsgate.fleet.updates`), a :class:`Selection` evaluated once against the registry
(the gateways it picks are frozen into :class:`Member` rows), and :class:`RolloutOptions` (groups,
thresholds, pacing, timeouts). The planner (:mod:`.planner`) moves a :class:`Rollout` and its members on;
the service (:mod:`.service`) stores them and talks MQTT.

The request models are pydantic (strict, frozen, unknown keys refused), so an API body or a stored spec
that does not fit is refused with the field that is wrong; :class:`Rollout` and :class:`Member` are plain
records.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import GATEWAY_ID_PATTERN
from bmsgate.fleet.server.store.repository import GatewayRecord, UnknownRecord
from bmsgate.fleet.updates import MAX_DESIRED_PACKS, PackTarget, SoftwareTarget, UpdatePhase

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_GROUPS",
    "FAILURE_PHASES",
    "MAX_MEMBERS",
    "Actor",
    "GroupSize",
    "Member",
    "MemberPhase",
    "Outcome",
    "Rollout",
    "RolloutError",
    "RolloutKind",
    "RolloutOptions",
    "RolloutSpec",
    "RolloutState",
    "RolloutTarget",
    "SERVER_ACTOR",
    "SUCCESS_PHASES",
    "Selection",
    "UnknownRollout",
    "parse_spec",
    "select_gateways",
]

MAX_MEMBERS: Final = 100_000
"""The most gateways one rollout may hold (a selection picking more is refused)."""


class RolloutError(BmsgateError):
    """A rollout request that cannot be done (nothing selected, a bad spec, an action its state forbids)."""


class UnknownRollout(UnknownRecord):
    """No rollout has this id."""


_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=256)
_GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]


class RolloutTarget(BaseModel):
    """What the selected gateways should run.

    ``packs`` None keeps each gateway's current desired packs (a software-only rollout); ``()`` means the
    built-in definitions only. ``software`` None keeps the software each gateway's desired state names.
    """

    model_config = _STRICT

    packs: Annotated[tuple[PackTarget, ...], Field(max_length=MAX_DESIRED_PACKS)] | None = None
    software: SoftwareTarget | None = None


class Selection(BaseModel):
    """Which gateways of the registry a rollout takes (every given criterion must hold)."""

    model_config = _STRICT

    gateways: Annotated[tuple[_GatewayId, ...], Field(max_length=MAX_MEMBERS)] = ()
    """Explicit ids (each must be in the registry); empty: every gateway the other criteria pick."""
    tags: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=64)], ...], Field(max_length=16)] = ()
    """The gateway has every one of these tags."""
    site: str | None = None
    hardware: str | None = None
    software_version: str | None = None
    """Runs exactly this software version."""
    software_version_not: str | None = None
    """Does not run this software version (e.g. the target's: only the outdated ones)."""
    pack: str | None = None
    """Runs a data file named ``NAME`` or ``NAME@VERSION`` (as its state message lists it)."""
    online: bool | None = None
    """True: only gateways online now; False: only offline ones; None: either."""

    def matches(self, gateway: GatewayRecord) -> bool:
        """Whether `gateway` fits every criterion given (the explicit id list aside)."""
        checks = (
            not self.tags or set(self.tags) <= set(gateway.tags),
            self.site is None or gateway.site == self.site,
            self.hardware is None or gateway.hardware == self.hardware,
            self.software_version is None or gateway.software_version == self.software_version,
            self.software_version_not is None or gateway.software_version != self.software_version_not,
            self.pack is None or _runs_pack(gateway, self.pack),
            self.online is None or gateway.online == self.online,
        )
        return all(checks)


def _runs_pack(gateway: GatewayRecord, wanted: str) -> bool:
    name, _, version = wanted.partition("@")
    return any(pack.name == name and (not version or pack.version == version) for pack in gateway.packs)


class GroupSize(BaseModel):
    """The size of one group: ``percent`` of the rollout's gateways, kept within ``[at_least, at_most]``."""

    model_config = _STRICT

    percent: Annotated[float, Field(gt=0, le=100)]
    at_least: Annotated[int, Field(ge=1)] = 1
    at_most: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> GroupSize:
        if self.at_most is not None and self.at_most < self.at_least:
            raise ValueError("at_most is below at_least")
        return self


DEFAULT_GROUPS: Final = (
    GroupSize(percent=5, at_least=1, at_most=5),
    GroupSize(percent=100, at_least=1, at_most=10),
    GroupSize(percent=15, at_least=1),
)
"""Canary (5 %, 1 to 5 gateways) → at most 10 → 15 % → then the rest (always a last group)."""


class RolloutOptions(BaseModel):
    """How a rollout proceeds (the defaults are documented in docs/fleet/rollouts.md)."""

    model_config = _STRICT

    groups: Annotated[tuple[GroupSize, ...], Field(max_length=20)] = DEFAULT_GROUPS
    """The groups before the last one, which takes every gateway left."""
    success_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Share of a group that must have committed before the next group starts (or approval is asked)."""
    error_ratio: Annotated[float, Field(gt=0, le=1)] | None = 0.2
    """Failed, reverted or timed-out share of any started group that stops the rollout (None: no ratio)."""
    error_count: Annotated[int, Field(ge=1)] | None = None
    """Failures in the whole rollout that stop it (None: no absolute limit)."""
    approval: bool = False
    """Pause for approval (``resume``) each time a group reaches the success threshold."""
    rate_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 100
    """At most this many desired states published in any 60 s."""
    jitter_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    """Each gateway starts at a random offset in ``[0, jitter_s]`` after its group starts."""
    timeout_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 7200.0
    """A gateway without a final answer this long after it was first seen online with the desired state fails
    with reason ``timeout``."""
    expires_s: Annotated[float, Field(gt=0, le=366 * 86_400)] = 30 * 86_400.0
    """Validity of each published desired state."""


class RolloutKind(enum.StrEnum):
    """Where a rollout came from."""

    ROLLOUT = "rollout"
    RETRY = "retry"
    """The failed gateways of another rollout, again."""
    ROLLBACK = "rollback"
    """Each gateway of another rollout back to the desired set it had before it."""


class RolloutSpec(BaseModel):
    """A rollout request (``POST /api/v1/rollouts``; stored with the rollout)."""

    model_config = _STRICT

    name: Annotated[str, Field(max_length=128)] = ""
    target: RolloutTarget
    selection: Selection = Selection()
    options: RolloutOptions = RolloutOptions()
    kind: RolloutKind = RolloutKind.ROLLOUT
    parent: Annotated[str, Field(max_length=64)] | None = None
    """The rollout a retry or rollback was made from."""

    @model_validator(mode="after")
    def _has_target(self) -> RolloutSpec:
        if self.kind is RolloutKind.ROLLOUT and self.target.packs is None and self.target.software is None:
            raise ValueError("a rollout needs packs or software in its target")
        return self


def parse_spec(document: Any) -> RolloutSpec:
    """Validate a rollout request given as JSON-like data.

    Raises:
        RolloutError: it does not fit (names the first field that is wrong).
    """
    try:
        return RolloutSpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise RolloutError(f"bad rollout request: {where}: {first['msg']}") from None


class RolloutState(enum.StrEnum):
    """A rollout's life."""

    RUNNING = "running"
    PAUSED = "paused"
    """Paused by a user: nothing more is published until ``resume``."""
    WAITING_APPROVAL = "waiting_approval"
    """A group reached the success threshold and the rollout asks for approval (``resume``)."""
    STOPPED = "stopped"
    """The error threshold was reached (``reason`` says where); final (``retry-failed`` or ``rollback`` next)."""
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    """Every gateway answered with a final phase (some may have failed below the error threshold)."""


ACTIVE_STATES: Final = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.WAITING_APPROVAL})


class MemberPhase(enum.StrEnum):
    """Where one gateway stands in a rollout: not yet published, published, then what it reported."""

    PENDING = "pending"
    PUBLISHED = "published"
    TIMEOUT = "timeout"


class Outcome(enum.StrEnum):
    """A member's final result."""

    SUCCESS = "success"
    FAILURE = "failure"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who did something (the API token's label and role; ``server`` for the rollout's own steps)."""

    name: str
    role: str


SERVER_ACTOR: Final = Actor(name="server", role="server")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One gateway of a rollout."""

    rollout_id: str
    gateway: str
    group: int
    jitter_s: float
    phase: str = MemberPhase.PENDING.value
    outcome: Outcome | None = None
    reason: str | None = None
    detail: str = ""
    generation: int | None = None
    """The desired generation published to it for this rollout (None: not yet)."""
    published_at: float | None = None
    clock_started_at: float | None = None
    """When it was first seen online with the desired state (the timeout counts from here)."""
    reported_at: float | None = None
    target: RolloutTarget | None = None
    """This gateway's own target (a rollback's), None: the rollout's."""
    previous: RolloutTarget | None = None
    """The desired set it had before this rollout published to it (what a rollback restores)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """A rollout's header: its spec and where it stands."""

    id: str
    created_at: float
    created_by: str
    spec: RolloutSpec
    state: RolloutState = RolloutState.RUNNING
    reason: str = ""
    group_started_at: tuple[float, ...] = ()
    """When each started group started (its length is the number of groups started)."""
    group_count: int = 1
    updated_at: float = 0.0
    revision: int = 0
    """Raised by every stored change of the rollout or its members (the store checks it: see :mod:`.store`)."""

    @property
    def current_group(self) -> int:
        """The index of the latest started group (-1: none yet)."""
        return len(self.group_started_at) - 1


def select_gateways(registry: Sequence[GatewayRecord], selection: Selection) -> list[str]:
    """The ids the selection picks from the registry, sorted.

    Raises:
        RolloutError: an explicit id is not in the registry, nothing is picked, or too many are.
    """
    by_id = {gateway.id: gateway for gateway in registry}
    if selection.gateways:
        unknown = sorted(set(selection.gateways) - set(by_id))
        if unknown:
            raise RolloutError(f"not in the registry: {', '.join(unknown[:10])}")
        candidates = [by_id[gateway_id] for gateway_id in sorted(set(selection.gateways))]
    else:
        candidates = sorted(registry, key=lambda gateway: gateway.id)
    picked = [gateway.id for gateway in candidates if selection.matches(gateway)]
    if not picked:
        raise RolloutError("the selection picks no gateway")
    if len(picked) > MAX_MEMBERS:
        raise RolloutError(f"the selection picks {len(picked)} gateways, at most {MAX_MEMBERS}")
    return picked


FAILURE_PHASES: Final[frozenset[str]] = frozenset(
    {UpdatePhase.FAILED.value, UpdatePhase.REVERTED.value, MemberPhase.TIMEOUT.value}
)
SUCCESS_PHASES: Final[frozenset[str]] = frozenset({UpdatePhase.COMMITTED.value, UpdatePhase.IDLE.value})
"""``idle`` for the rollout's own generation: the gateway already ran the desired set (nothing to do)."""
