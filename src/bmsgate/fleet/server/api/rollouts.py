"""The rollout routes of the API (``/api/v1/rollouts``), registered by :func:`.app.create_app`.

Roles follow :mod:`bmsgate.fleet.server.auth`: a viewer reads, a technician creates, pauses, resumes, cancels
and retries, an admin also rolls back. Every action is written to the rollout's audit log with the token's
label (or its id) and role. Without a rollout service (no signing key configured) the routes answer 503.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.params import FromPath, JSONBody

from bmsgate.fleet.server.api.context import TOKEN_STATE, ApiContext
from bmsgate.fleet.server.auth import Role, TokenInfo
from bmsgate.fleet.server.rollouts.model import Actor, RolloutError, RolloutKind, parse_spec
from bmsgate.fleet.server.rollouts.service import RolloutService, RolloutView
from bmsgate.fleet.server.rollouts.store import AuditEntry

__all__ = ["ROLLOUT_HANDLERS", "audit_json", "view_json"]


def _service(ctx: ApiContext) -> RolloutService:
    if ctx.rollouts is None:
        raise HTTPException(status_code=503, detail="rollouts are not enabled on this server (no signing key)")
    return ctx.rollouts


def _actor(request: Request[Any, Any, Any]) -> Actor:
    info = request.scope.get("state", {}).get(TOKEN_STATE)
    if not isinstance(info, TokenInfo):  # the guard ran first; kept for the type checker
        raise NotAuthorizedException("a valid bearer token is required")
    return Actor(name=info.label or f"token {info.token_id}", role=info.role.value)


def view_json(view: RolloutView, *, members: bool = True) -> dict[str, Any]:
    """The JSON form of a rollout with its progress per group (and its members, failures first)."""
    rollout = view.rollout
    answer: dict[str, Any] = {
        "id": rollout.id,
        "name": rollout.spec.name,
        "kind": rollout.spec.kind.value,
        "parent": rollout.spec.parent,
        "state": rollout.state.value,
        "reason": rollout.reason,
        "created_at": rollout.created_at,
        "created_by": rollout.created_by,
        "updated_at": rollout.updated_at,
        "target": rollout.spec.target.model_dump(mode="json"),
        "options": rollout.spec.options.model_dump(mode="json"),
        "total": sum(group.size for group in view.groups),
        "succeeded": sum(group.succeeded for group in view.groups),
        "failed": sum(group.failed for group in view.groups),
        "groups": [
            {
                "index": group.index,
                "size": group.size,
                "started_at": group.started_at,
                "phases": dict(group.phases),
                "succeeded": group.succeeded,
                "failed": group.failed,
                "reasons": dict(group.reasons),
            }
            for group in view.groups
        ],
    }
    if members:
        answer["members"] = [
            {
                "gateway": member.gateway,
                "group": member.group,
                "phase": member.phase,
                "outcome": None if member.outcome is None else member.outcome.value,
                "reason": member.reason,
                "detail": member.detail,
                "generation": member.generation,
                "published_at": member.published_at,
                "reported_at": member.reported_at,
            }
            for member in view.members
        ]
    return answer


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """The JSON form of one audit line."""
    return dataclasses.asdict(entry)


async def _do(request: Request[Any, Any, Any], ctx: ApiContext, action: str, rollout_id: str) -> dict[str, Any]:
    service = _service(ctx)
    actor = _actor(request)
    try:
        if action == "pause":
            rollout = await service.pause(rollout_id, actor)
        elif action == "resume":
            rollout = await service.resume(rollout_id, actor)
        elif action == "cancel":
            rollout = await service.cancel(rollout_id, actor)
        elif action == "retry-failed":
            rollout = await service.retry_failed(rollout_id, actor)
        else:
            rollout = await service.rollback(rollout_id, actor)
    except RolloutError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return view_json(await service.view(rollout.id), members=False)


@post("/rollouts", opt={"role": Role.TECHNICIAN}, status_code=201, summary="Create a rollout (technician)")
async def create_rollout(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], data: JSONBody[dict[str, Any]]
) -> dict[str, Any]:
    """Create a rollout: ``{"name", "target": {"packs": [...], "software": {...}}, "selection", "options"}``.

    The selection is evaluated against the registry now; its gateways are frozen into the rollout.
    """
    service = _service(ctx)
    try:
        spec = parse_spec(data)
    except RolloutError as exc:
        raise ValidationException(str(exc)) from exc
    if spec.kind is not RolloutKind.ROLLOUT:
        raise ValidationException("retries and rollbacks are made with .../retry-failed and .../rollback")
    try:
        rollout = await service.create(spec, _actor(request))
    except RolloutError as exc:
        raise ValidationException(str(exc)) from exc
    return view_json(await service.view(rollout.id), members=False)


@get("/rollouts", summary="Every rollout with its progress per group")
async def list_rollouts(ctx: NamedDependency[ApiContext]) -> dict[str, Any]:
    """Every rollout, newest first (without members)."""
    views = await _service(ctx).list_views()
    return {"rollouts": [view_json(view, members=False) for view in views], "total": len(views)}


@get("/rollouts/{rollout_id:str}", summary="One rollout: progress per group, failures with reasons, members")
async def get_rollout(ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]) -> dict[str, Any]:
    """One rollout with counts per phase per group and its members (failed ones first)."""
    return view_json(await _service(ctx).view(rollout_id))


@get("/rollouts/{rollout_id:str}/audit", summary="A rollout's audit log")
async def rollout_audit(ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]) -> dict[str, Any]:
    """Who did what when, oldest first (the server's own steps as ``server``)."""
    entries = await _service(ctx).audit(rollout_id)
    return {"entries": [audit_json(entry) for entry in entries]}


@post("/rollouts/{rollout_id:str}/pause", opt={"role": Role.TECHNICIAN}, status_code=200, summary="Pause")
async def pause_rollout(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]
) -> dict[str, Any]:
    """Pause: nothing more is published until resumed."""
    return await _do(request, ctx, "pause", rollout_id)


@post("/rollouts/{rollout_id:str}/resume", opt={"role": Role.TECHNICIAN}, status_code=200, summary="Resume/approve")
async def resume_rollout(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]
) -> dict[str, Any]:
    """Resume a paused rollout, or approve the next group of one waiting for approval."""
    return await _do(request, ctx, "resume", rollout_id)


@post("/rollouts/{rollout_id:str}/cancel", opt={"role": Role.TECHNICIAN}, status_code=200, summary="Cancel")
async def cancel_rollout(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]
) -> dict[str, Any]:
    """Cancel: gateways not yet started keep what they run; started ones keep their new target."""
    return await _do(request, ctx, "cancel", rollout_id)


@post(
    "/rollouts/{rollout_id:str}/retry-failed",
    opt={"role": Role.TECHNICIAN},
    status_code=201,
    summary="A new rollout of only the failed gateways (technician)",
)
async def retry_failed(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]
) -> dict[str, Any]:
    """A new rollout of the failed gateways of a finished rollout, same target and options."""
    return await _do(request, ctx, "retry-failed", rollout_id)


@post(
    "/rollouts/{rollout_id:str}/rollback",
    opt={"role": Role.ADMIN},
    status_code=201,
    summary="Roll the gateways back to their previous desired set (admin)",
)
async def rollback_rollout(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], rollout_id: FromPath[str]
) -> dict[str, Any]:
    """A new rollout giving each gateway this rollout published to the desired set it had before."""
    return await _do(request, ctx, "rollback", rollout_id)


ROLLOUT_HANDLERS: Final = (
    create_rollout,
    list_rollouts,
    get_rollout,
    rollout_audit,
    pause_rollout,
    resume_rollout,
    cancel_rollout,
    retry_failed,
    rollback_rollout,
)
