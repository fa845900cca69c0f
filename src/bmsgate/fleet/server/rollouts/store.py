"""Rollouts in the fleet store: their own tables (migration ``0002_rollouts``) through the store's extension calls.

The SQL here is portable (``?`` placeholders, ``ON CONFLICT``, ``RETURNING``): the same statements run on
SQLite and PostgreSQL through :meth:`~bmsgate.fleet.server.store.repository.Repository.extension_query` and
``extension_write``, so the two backends cannot drift apart. JSON documents (the spec, a member's targets,
the desired envelope) are TEXT columns.

``desired_states`` holds each gateway's last desired generation and envelope. The generation is raised by
one statement (``INSERT … ON CONFLICT DO UPDATE … RETURNING``), so it is monotonic even across server
restarts; it is kept when a gateway is deleted (a re-enrolled gateway still refuses older generations).

**Several writers (server processes) on one store.** A rollout's row carries a ``revision`` (migration
``0003_rollout_revision``). A change decided on a rollout read at revision *r* is stored by
:meth:`RolloutStore.save` in one transaction whose first statement is
``UPDATE rollouts SET revision = revision + 1, write_token = <fresh random token>, ... WHERE id = ? AND
revision = r``; every other statement of that transaction (member updates, audit lines) applies only
``WHERE EXISTS (... write_token = <that token>)``. So either the whole change applies, or, when another
writer moved the rollout on since *r*, none of it does and ``save`` answers False (the caller reads again
and decides again). Why this is correct on both backends: on PostgreSQL (READ COMMITTED) the first
``UPDATE`` takes the row lock, and one that waited for a concurrent writer re-checks ``revision = r`` on the
row as that writer committed it; on SQLite every write transaction holds the one writer lock from
``BEGIN IMMEDIATE``. Either way, once the first statement matched, nobody else changes the row before
commit, so the token stays ours; when it did not match, the row holds another writer's token, and no one
else ever writes ours. Writes that do not decide on a read state (a published member's generation, a
claim given back) are conditioned on the member row itself and raise the revision unconditionally, so a
decision read before them is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
from collections.abc import Sequence
from typing import Any, Final

from pydantic import ValidationError

from bmsgate.fleet.server.rollouts.model import (
    ACTIVE_STATES,
    Actor,
    Member,
    Outcome,
    Rollout,
    RolloutSpec,
    RolloutState,
    RolloutTarget,
    UnknownRollout,
)
from bmsgate.fleet.server.store.repository import Repository, StoreError
from bmsgate.fleet.updates import DesiredEnvelope

__all__ = ["AuditEntry", "CurrentDesired", "RolloutStore"]

_ROLLOUT_COLUMNS: Final = "id, created_at, created_by, state, reason, spec, progress, updated_at, revision"
_MEMBER_COLUMNS: Final = (
    "rollout_id, gateway, group_index, jitter_s, phase, outcome, reason, detail, generation, published_at, "
    "clock_started_at, reported_at, target, previous"
)
_MEMBER_UPDATE: Final = (
    "UPDATE rollout_members SET phase = ?, outcome = ?, reason = ?, detail = ?, generation = ?, published_at = ?, "
    "clock_started_at = ?, reported_at = ?, target = ?, previous = ? WHERE rollout_id = ? AND gateway = ?"
)
_WRITTEN_BY: Final = "EXISTS (SELECT 1 FROM rollouts WHERE id = ? AND write_token = ?)"
"""True only inside the write whose revision check won (its token; see the module docstring)."""
_GUARDED_MEMBER_UPDATE: Final = f"{_MEMBER_UPDATE} AND {_WRITTEN_BY}"
_REVISION_BUMP: Final = "UPDATE rollouts SET revision = revision + 1 WHERE id = ?"
_CLAIMED: Final = "phase = 'published' AND generation IS NULL AND published_at = ?"
"""A member a planning step claimed for publishing and has not yet recorded (its claim time)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One line of a rollout's audit log."""

    rollout_id: str
    at: float
    actor: str
    role: str
    action: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CurrentDesired:
    """A gateway's last desired generation and envelope (None: never published, or the publish failed)."""

    generation: int
    envelope: DesiredEnvelope | None


def _target_json(target: RolloutTarget | None) -> str | None:
    return None if target is None else target.model_dump_json()


@functools.lru_cache(maxsize=1024)
def _target(text: str | None) -> RolloutTarget | None:
    # Cached: the members of a rollout share a handful of targets, and a planning step reads them all.
    return None if text is None else RolloutTarget.model_validate_json(text)


def _progress_json(rollout: Rollout) -> str:
    return json.dumps({"group_started_at": list(rollout.group_started_at), "group_count": rollout.group_count})


def _rollout(row: Sequence[Any]) -> Rollout:
    try:
        progress = json.loads(row[6])
        return Rollout(
            id=row[0],
            created_at=float(row[1]),
            created_by=row[2],
            state=RolloutState(row[3]),
            reason=row[4],
            spec=RolloutSpec.model_validate_json(row[5]),
            group_started_at=tuple(float(at) for at in progress["group_started_at"]),
            group_count=int(progress["group_count"]),
            updated_at=float(row[7]),
            revision=int(row[8]),
        )
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"rollout {row[0]}: damaged row ({exc})") from exc


def _member(row: Sequence[Any]) -> Member:
    try:
        return Member(
            rollout_id=row[0],
            gateway=row[1],
            group=int(row[2]),
            jitter_s=float(row[3]),
            phase=row[4],
            outcome=None if row[5] is None else Outcome(row[5]),
            reason=row[6],
            detail=row[7],
            generation=None if row[8] is None else int(row[8]),
            published_at=row[9],
            clock_started_at=row[10],
            reported_at=row[11],
            target=_target(row[12]),
            previous=_target(row[13]),
        )
    except (ValidationError, ValueError) as exc:
        raise StoreError(f"rollout {row[0]} member {row[1]}: damaged row ({exc})") from exc


def _member_values(member: Member) -> list[Any]:
    return [
        member.phase,
        None if member.outcome is None else member.outcome.value,
        member.reason,
        member.detail,
        member.generation,
        member.published_at,
        member.clock_started_at,
        member.reported_at,
        _target_json(member.target),
        _target_json(member.previous),
        member.rollout_id,
        member.gateway,
    ]


class RolloutStore:
    """Rollout rows of one open fleet store."""

    def __init__(self, store: Repository) -> None:
        self._store = store

    async def creations_revision(self) -> int:
        """The revision of the creations (raised by every rollout created): read before the overlap check."""
        rows = await self._store.extension_query("SELECT revision FROM rollout_creations WHERE id = 1")
        return int(rows[0][0])

    async def create(
        self, rollout: Rollout, members: Sequence[Member], actor: Actor, detail: str, *, creations_revision: int
    ) -> bool:
        """Store a new rollout, its members and the audit line of its creation, in one transaction.

        Only if no other rollout was created since `creations_revision` was read (the overlap check made
        then still holds); False: nothing stored.
        """
        token = secrets.token_hex(16)
        claim = (
            "UPDATE rollout_creations SET revision = revision + 1, write_token = ? WHERE id = 1 AND revision = ? "
            "RETURNING revision",
            [token, creations_revision],
        )
        header = (
            f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}, write_token) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "  # noqa: S608 - constant columns; values are parameters
            "WHERE EXISTS (SELECT 1 FROM rollout_creations WHERE id = 1 AND write_token = ?)",
            [
                rollout.id,
                rollout.created_at,
                rollout.created_by,
                rollout.state.value,
                rollout.reason,
                rollout.spec.model_dump_json(),
                _progress_json(rollout),
                rollout.updated_at,
                rollout.revision,
                token,
                token,
            ],
        )
        # Only the columns a new member sets are parameters (PostgreSQL types a bare NULL parameter in a
        # SELECT list as text, which an INTEGER column refuses).
        rows = [
            [
                member.rollout_id,
                member.gateway,
                member.group,
                member.jitter_s,
                member.phase,
                _target_json(member.target),
                rollout.id,
                token,
            ]
            for member in members
        ]
        insert_members = (
            f"INSERT INTO rollout_members ({_MEMBER_COLUMNS}) "
            f"SELECT ?, ?, ?, ?, ?, NULL, NULL, '', NULL, NULL, NULL, NULL, ?, NULL WHERE {_WRITTEN_BY}"
        )
        returned = await self._store.extension_write(
            [
                claim,
                header,
                _audit_statement(rollout.id, rollout.created_at, actor, "create", detail, written_by=token),
            ],
            many=[(insert_members, rows)],
        )
        return bool(returned[0])

    async def get(self, rollout_id: str) -> Rollout:
        """One rollout.

        Raises:
            UnknownRollout: no rollout has this id.
        """
        rows = await self._store.extension_query(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", [rollout_id])  # noqa: S608 - constant columns; values are parameters
        if not rows:
            raise UnknownRollout(f"no rollout {rollout_id!r}")
        return _rollout(rows[0])

    async def list_rollouts(self, *, states: Sequence[RolloutState] = ()) -> list[Rollout]:
        """Rollouts (only those in `states`, if given), newest first."""
        where = ""
        if states:
            where = f" WHERE state IN ({', '.join(['?'] * len(states))})"
        rows = await self._store.extension_query(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts{where} ORDER BY created_at DESC, id DESC",  # noqa: S608 - constant columns; values are parameters
            [state.value for state in states],
        )
        return [_rollout(row) for row in rows]

    async def members(self, rollout_id: str) -> list[Member]:
        """A rollout's members by group, then gateway id."""
        rows = await self._store.extension_query(
            f"SELECT {_MEMBER_COLUMNS} FROM rollout_members WHERE rollout_id = ? ORDER BY group_index, gateway",  # noqa: S608 - constant columns; values are parameters
            [rollout_id],
        )
        return [_member(row) for row in rows]

    async def phase_counts(self, rollout_id: str) -> list[tuple[int, str, str | None, str | None, int]]:
        """A rollout's members counted by group, phase, outcome and reason (one aggregate query)."""
        rows = await self._store.extension_query(
            "SELECT group_index, phase, outcome, reason, count(*) FROM rollout_members WHERE rollout_id = ? "
            "GROUP BY group_index, phase, outcome, reason",
            [rollout_id],
        )
        return [(int(row[0]), row[1], row[2], row[3], int(row[4])) for row in rows]

    async def members_shown(self, rollout_id: str, limit: int) -> list[Member]:
        """At most `limit` members to show: failures first, then those in progress, then the rest."""
        rows = await self._store.extension_query(
            f"SELECT {_MEMBER_COLUMNS} FROM rollout_members WHERE rollout_id = ? "  # noqa: S608 - constant columns
            "ORDER BY CASE WHEN outcome = 'failure' THEN 0 WHEN outcome IS NULL THEN 1 ELSE 2 END, group_index, "
            "gateway LIMIT ?",
            [rollout_id, limit],
        )
        return [_member(row) for row in rows]

    async def member(self, rollout_id: str, gateway: str) -> Member | None:
        """One member (None: the gateway is not in that rollout)."""
        rows = await self._store.extension_query(
            f"SELECT {_MEMBER_COLUMNS} FROM rollout_members WHERE rollout_id = ? AND gateway = ?",  # noqa: S608 - constant columns; values are parameters
            [rollout_id, gateway],
        )
        return _member(rows[0]) if rows else None

    async def save(
        self,
        rollout: Rollout,
        members: Sequence[Member] = (),
        audit: Sequence[tuple[float, Actor, str, str]] = (),
        *,
        header: bool = True,
    ) -> int | None:
        """Store a change decided on `rollout` as read (its revision), in one transaction, if still current.

        Args:
            rollout: the rollout as the change left it, with the revision it was read at.
            members: changed members of that rollout.
            audit: audit lines ``(at, actor, action, detail)``.
            header: False: only the revision is raised (the header's state, reason and progress are kept).

        Returns:
            The new revision, or None when another writer changed the rollout since it was read (nothing
            of this change is stored).
        """
        token = secrets.token_hex(16)
        if header:
            first = (
                "UPDATE rollouts SET revision = revision + 1, write_token = ?, state = ?, reason = ?, progress = ?, "
                "updated_at = ? WHERE id = ? AND revision = ? RETURNING revision",
                [
                    token,
                    rollout.state.value,
                    rollout.reason,
                    _progress_json(rollout),
                    rollout.updated_at,
                    rollout.id,
                    rollout.revision,
                ],
            )
        else:
            first = (
                "UPDATE rollouts SET revision = revision + 1, write_token = ? WHERE id = ? AND revision = ? "
                "RETURNING revision",
                [token, rollout.id, rollout.revision],
            )
        statements: list[tuple[str, Sequence[Any]]] = [first]
        statements.extend(
            _audit_statement(rollout.id, at, actor, action, detail, written_by=token)
            for at, actor, action, detail in audit
        )
        rows = [[*_member_values(member), rollout.id, token] for member in members]
        returned = await self._store.extension_write(statements, many=[(_GUARDED_MEMBER_UPDATE, rows)])
        return int(returned[0][0][0]) if returned[0] else None

    async def claim_intact(self, member: Member) -> bool:
        """Whether `member`'s claim (phase published, no generation yet) still stands and its rollout runs."""
        rows = await self._store.extension_query(
            "SELECT 1 FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id "
            "WHERE m.rollout_id = ? AND m.gateway = ? AND r.state = ? AND m.phase = 'published' "
            "AND m.generation IS NULL AND m.published_at = ?",
            [member.rollout_id, member.gateway, RolloutState.RUNNING.value, member.published_at],
        )
        return bool(rows)

    async def release_claims(self, members: Sequence[Member]) -> None:
        """Give claims that were not published back (pending again), where they still stand."""
        if not members:
            return
        sql = (
            "UPDATE rollout_members SET phase = 'pending', published_at = NULL "  # noqa: S608 - constant SQL
            f"WHERE rollout_id = ? AND gateway = ? AND {_CLAIMED}"
        )
        await self._store.extension_write(
            [(_REVISION_BUMP, [members[0].rollout_id])],
            many=[(sql, [[member.rollout_id, member.gateway, member.published_at] for member in members])],
        )

    async def audit(self, rollout_id: str) -> list[AuditEntry]:
        """A rollout's audit log, oldest first.

        Raises:
            UnknownRollout: no rollout has this id.
        """
        await self.get(rollout_id)
        rows = await self._store.extension_query(
            "SELECT rollout_id, at, actor, role, action, detail FROM rollout_audit WHERE rollout_id = ? "
            "ORDER BY at, id",
            [rollout_id],
        )
        return [
            AuditEntry(rollout_id=row[0], at=float(row[1]), actor=row[2], role=row[3], action=row[4], detail=row[5])
            for row in rows
        ]

    async def busy_gateways(self) -> dict[str, str]:
        """Gateways without a final answer in an active rollout, and that rollout's id."""
        states = sorted(state.value for state in ACTIVE_STATES)
        placeholders = ", ".join(["?"] * len(states))
        sql = (
            "SELECT m.gateway, m.rollout_id FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id "  # noqa: S608
            f"WHERE m.outcome IS NULL AND r.state IN ({placeholders})"
        )
        rows = await self._store.extension_query(sql, states)
        return {row[0]: row[1] for row in rows}

    async def online(self) -> dict[str, bool]:
        """Every registered gateway's availability (from its retained availability message)."""
        rows = await self._store.extension_query("SELECT id, online FROM gateways")
        return {row[0]: bool(row[1]) for row in rows}

    async def current_desired(self, gateway: str) -> CurrentDesired | None:
        """A gateway's last desired generation and envelope (None: no generation was ever taken)."""
        rows = await self._store.extension_query(
            "SELECT generation, envelope FROM desired_states WHERE gateway = ?", [gateway]
        )
        if not rows:
            return None
        generation, envelope = rows[0]
        try:
            parsed = None if envelope is None else DesiredEnvelope.model_validate_json(envelope)
        except ValidationError as exc:
            raise StoreError(f"desired state of {gateway}: damaged row ({exc})") from exc
        return CurrentDesired(generation=int(generation), envelope=parsed)

    async def next_generation(self, gateway: str) -> int:
        """Raise the gateway's desired generation by one (atomically) and return it."""
        returned = await self._store.extension_write(
            [
                (
                    "INSERT INTO desired_states (gateway, generation) VALUES (?, 1) ON CONFLICT (gateway) "
                    "DO UPDATE SET generation = desired_states.generation + 1 RETURNING generation",
                    [gateway],
                )
            ]
        )
        return int(returned[0][0][0])

    async def record_published(self, envelope: DesiredEnvelope, member: Member, claimed_at: float) -> bool:
        """Remember the envelope published to a gateway, and its member row, in one transaction.

        The member row is written only if the claim made at `claimed_at` still stands (False: it was given
        back or taken over meanwhile; the envelope is still recorded: it was published).
        """
        state = envelope.signed
        # The rollout's row first, as in every rollout write: one lock order, no deadlock on PostgreSQL.
        returned = await self._store.extension_write(
            [
                (_REVISION_BUMP, [member.rollout_id]),
                (
                    "UPDATE desired_states SET rollout_id = ?, issued_at = ?, envelope = ? "
                    "WHERE gateway = ? AND generation = ?",
                    [state.rollout, state.issued_at, envelope.model_dump_json(), state.gateway, state.generation],
                ),
                (f"{_MEMBER_UPDATE} AND {_CLAIMED} RETURNING gateway", [*_member_values(member), claimed_at]),
            ]
        )
        return bool(returned[2])

    async def add_audit(self, rollout_id: str, at: float, actor: Actor, action: str, detail: str = "") -> None:
        """Add one audit line."""
        await self._store.extension_write([_audit_statement(rollout_id, at, actor, action, detail)])


def _audit_statement(
    rollout_id: str, at: float, actor: Actor, action: str, detail: str, *, written_by: str | None = None
) -> tuple[str, list[Any]]:
    values: list[Any] = [rollout_id, at, actor.name, actor.role, action, detail]
    if written_by is None:
        return (
            "INSERT INTO rollout_audit (rollout_id, at, actor, role, action, detail) VALUES (?, ?, ?, ?, ?, ?)",
            values,
        )
    return (
        "INSERT INTO rollout_audit (rollout_id, at, actor, role, action, detail) "
        f"SELECT ?, ?, ?, ?, ?, ? WHERE {_WRITTEN_BY}",
        [*values, rollout_id, written_by],
    )
