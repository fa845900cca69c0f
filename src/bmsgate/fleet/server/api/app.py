"""The HTTP API and the dashboard as a Litestar application (the only module importing Litestar).

:func:`create_app` takes its collaborators (store, token store, live feed, a command sender, settings), so a
test and the ``fleet serve`` command compose it alike; :mod:`bmsgate.fleet.server.api.server` runs it on
uvicorn. Everything under ``/api/v1`` (see docs/fleet/api-and-dashboard.md):

* bearer tokens: a handler names the least role it needs (viewer < technician < admin); no or a bad token
  is 401, a role too low 403;
* a rate limit per token (per client IP for requests without a valid token): 429 with ``Retry-After``;
* ``/api/v1/openapi.json``: the OpenAPI document; ``/api/v1/health``: liveness, no token;
* ``/api/v1/live``: the websocket of live updates (:mod:`.stream`), authenticated by its first message and
  verified again every ``live_token_check_s`` and before each message (a revoked token is closed with 4401).

The dashboard is ``/`` (``index.html``), ``/static/*`` (our files) and ``/vendor/*`` (npm files).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Final

from litestar import Litestar, MediaType, Request, Response, Router, WebSocket, delete, get, post, websocket
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
    WebSocketDisconnect,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import CommandKind, CommandMessage, is_gateway_id
from bmsgate.fleet.server.api.assets import AssetError
from bmsgate.fleet.server.api.context import TOKEN_STATE, ApiContext, CommandSender
from bmsgate.fleet.server.api.overview_routes import OVERVIEW_HANDLERS
from bmsgate.fleet.server.api.rollouts import ROLLOUT_HANDLERS
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.stream import HELLO
from bmsgate.fleet.server.api.views import (
    AlarmList,
    AlarmView,
    CommandAccepted,
    GatewayList,
    GatewayView,
    Health,
    SeriesView,
    SessionView,
    alarm_view,
    gateway_view,
    series_view,
)
from bmsgate.fleet.server.auth import Role, TokenError, TokenInfo, TokenStore
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.rollouts.service import RolloutService
from bmsgate.fleet.server.store.repository import (
    AlarmFilter,
    AlarmState,
    Repository,
    Resolution,
    StoreError,
    UnknownRecord,
    series_field_is_valid,
)

__all__ = ["API_PREFIX", "CommandRequest", "create_app"]

_log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
_TOKEN_STATE: Final = TOKEN_STATE
_DEFAULT_SPAN_S: Final = 24 * 3600.0
_ALARM_STATES: Final = ("active", "open", "acknowledged", "closed", "all")
_MAX_ACTIVE_ALARMS: Final = 100_000  # of one gateway: one per battery and kind in practice


@dataclasses.dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command to send to a gateway (the whole list is :class:`bmsgate.fleet.protocol.CommandKind`)."""

    kind: CommandKind


# -- authentication and rate limit ---------------------------------------------------------------------------


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class _AccessMiddleware:
    """Verifies the bearer token once per request (for the guards) and applies the rate limit."""

    def __init__(self, app: ASGIApp, *, context: ApiContext) -> None:
        self._app = app
        self._context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        token = _bearer(scope)
        info = self._context.tokens.verify(token) if token else None
        scope.setdefault("state", {})[_TOKEN_STATE] = info
        if scope["path"].startswith(API_PREFIX):
            if info is not None:
                retry = self._context.token_limiter.acquire(f"token:{info.token_id}", self._context.monotonic())
            else:
                client = scope.get("client")
                retry = self._context.anonymous_limiter.acquire(
                    f"ip:{client[0] if client else '?'}", self._context.monotonic()
                )
            if retry:
                await _too_many(scope, send, retry)
                return
        await self._app(scope, receive, send)


async def _too_many(scope: Scope, send: Send, retry: float) -> None:
    if scope["type"] == ScopeType.WEBSOCKET:
        await send({"type": "websocket.close", "code": 4429, "reason": "rate limit"})
        return
    body = json.dumps({"status_code": 429, "detail": f"rate limit exceeded: retry in {retry:.0f} s"}).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/json"),
            (b"retry-after", str(int(retry)).encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    finished: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(finished)


def _token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> TokenInfo | None:
    info = connection.scope.get("state", {}).get(_TOKEN_STATE)
    return info if isinstance(info, TokenInfo) else None


def _role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    needed = handler.opt.get("role", Role.VIEWER)
    if needed is None:
        return
    info = _token_of(connection)
    if info is None:
        raise NotAuthorizedException(
            "a valid bearer token is required (Authorization: Bearer <token>)", headers={"WWW-Authenticate": "Bearer"}
        )
    if not info.role.allows(needed):
        raise PermissionDeniedException(f"this needs the {needed.value} role; the token has {info.role.value}")


def _actor(request: Request[Any, Any, Any]) -> str:
    info = _token_of(request)
    if info is None:  # the guard ran first; kept for the type checker
        raise NotAuthorizedException("a valid bearer token is required")
    return info.label or f"token {info.token_id}"


def _require_finite(**times: float | None) -> None:
    """Refuse NaN and infinities (a float query parameter accepts them) before they reach the store."""
    for name, value in times.items():
        if value is not None and not math.isfinite(value):
            raise ValidationException(f"{name} must be a finite number of Unix seconds, not {value}")


def _known_gateway(gateway_id: FromPath[str]) -> str:
    if not is_gateway_id(gateway_id):
        raise NotFoundException(f"no gateway {gateway_id!r}")
    return gateway_id


# -- handlers ------------------------------------------------------------------------------------------------


@get("/health", opt={"role": None}, summary="Liveness (no token)")
async def health(ctx: NamedDependency[ApiContext]) -> Health:
    """Whether the server runs; needs no token."""
    return Health(status="ok", store=ctx.store.backend, live_subscribers=ctx.stream.client_count)


@get("/session", summary="Who the token belongs to, and the dashboard settings")
async def session(request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext]) -> SessionView:
    """The caller's token id, role and label, and the dashboard's map settings."""
    info = _token_of(request)
    assert info is not None  # the guard ran
    return SessionView(
        token_id=info.token_id,
        role=info.role.value,
        label=info.label,
        tile_url=ctx.settings.tile_url,
        tile_attribution=ctx.settings.tile_attribution,
    )


@get("/gateways", summary="Every gateway")
async def list_gateways(
    ctx: NamedDependency[ApiContext],
    summary: Annotated[
        bool, QueryParameter(description="leave out batteries and inverter (the overview's form)")
    ] = False,
) -> GatewayList:
    """Every gateway with its latest battery snapshots (unless ``summary``), sorted by id.

    The summary comes from the overview read model: current to the live feed, fully re-read every
    ``overview_max_age_s``.
    """
    if summary:
        views = await ctx.overview.summaries()
        return GatewayList(gateways=views, total=len(views))
    records = await ctx.store.list_gateways()
    now = ctx.clock()
    return GatewayList(gateways=[gateway_view(record, now=now) for record in records], total=len(records))


@get("/gateways/{gateway_id:str}", summary="One gateway with its batteries, inverter and recent alarms")
async def get_gateway(ctx: NamedDependency[ApiContext], gateway_id: FromPath[str]) -> GatewayView:
    """One gateway in full, with its 50 most recent alarms."""
    record = await ctx.store.get_gateway(_known_gateway(gateway_id))
    alarms = await ctx.store.list_alarms(AlarmFilter(gateway=gateway_id, limit=50))
    return gateway_view(record, alarms=alarms, now=ctx.clock())


@delete("/gateways/{gateway_id:str}", opt={"role": Role.ADMIN}, summary="Delete a gateway and its history (admin)")
async def delete_gateway(ctx: NamedDependency[ApiContext], gateway_id: FromPath[str]) -> None:
    """Remove a gateway and everything stored about it."""
    # The alarm engine holds only alarms not closed; read before they are gone.
    active = await ctx.store.list_alarms(
        AlarmFilter(state=AlarmState.OPEN, gateway=_known_gateway(gateway_id), limit=_MAX_ACTIVE_ALARMS)
    )
    await ctx.store.delete_gateway(gateway_id)
    for alarm in active:
        ctx.alarm_deleted(alarm.id)
    ctx.feed.publish(LiveUpdate(kind=LiveKind.GATEWAY_DELETED, gateway=gateway_id, at=ctx.clock(), data={}))


@post(
    "/gateways/{gateway_id:str}/commands",
    opt={"role": Role.TECHNICIAN},
    status_code=202,
    summary="Send a command to a gateway (technician)",
)
async def post_command(
    ctx: NamedDependency[ApiContext], gateway_id: FromPath[str], data: JSONBody[CommandRequest]
) -> CommandAccepted:
    """Hand a command to the broker; the gateway answers with a ``command_done``/``command_rejected`` event."""
    await ctx.store.get_gateway(_known_gateway(gateway_id))
    now = ctx.clock()
    command = CommandMessage(
        v=1,
        id=f"cmd-{secrets.token_hex(8)}",
        kind=data.kind,
        issued_at=now,
        expires_at=now + ctx.settings.command_ttl_s,
    )
    try:
        await ctx.send_command(gateway_id, command)
    except BmsgateError as exc:
        raise HTTPException(status_code=503, detail=f"command not sent: {exc}") from exc
    return CommandAccepted(
        id=command.id, gateway=gateway_id, kind=command.kind.value, issued_at=now, expires_at=command.expires_at
    )


@get("/gateways/{gateway_id:str}/batteries/{battery_id:str}/series", summary="History of one battery field")
async def series(
    ctx: NamedDependency[ApiContext],
    gateway_id: FromPath[str],
    battery_id: FromPath[str],
    field: Annotated[
        str,
        QueryParameter(description="a numeric field (voltage, current, soc, cell_delta, …), cell_voltages or cell:N"),
    ],
    since: Annotated[float | None, QueryParameter(description="Unix seconds; default: 24 h before until")] = None,
    until: Annotated[float | None, QueryParameter(description="Unix seconds; default: now")] = None,
    resolution: Annotated[Resolution, QueryParameter(description="raw, minute, hour or auto")] = Resolution.AUTO,
) -> SeriesView:
    """A time series, oldest first (``auto``: raw up to 6 h, per minute up to 7 days, else per hour)."""
    if not series_field_is_valid(field):
        raise ValidationException(f"unknown field {field!r}")
    _require_finite(since=since, until=until)
    end = ctx.clock() if until is None else until
    start = end - _DEFAULT_SPAN_S if since is None else since
    if start > end:
        raise ValidationException("since is after until")
    answer = await ctx.store.series(
        _known_gateway(gateway_id), battery_id, field, start, end, resolution, limit=ctx.settings.max_series_points
    )
    return series_view(answer)


@get("/alarms", summary="Alarms, newest first")
async def list_alarms(
    ctx: NamedDependency[ApiContext],
    wanted_state: Annotated[
        str,
        QueryParameter(name="state", description="active (open or acknowledged), open, acknowledged, closed or all"),
    ] = "active",
    gateway: Annotated[str | None, QueryParameter(description="only this gateway's")] = None,
    since: Annotated[float | None, QueryParameter(description="opened at or after (Unix seconds)")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000,
) -> AlarmList:
    """Alarms matching the filter."""
    if wanted_state not in _ALARM_STATES:
        raise ValidationException(f"state must be one of {', '.join(_ALARM_STATES)}")
    _require_finite(since=since)
    wanted = {
        "active": (AlarmState.OPEN, False),
        "open": (AlarmState.OPEN, True),
        "acknowledged": (AlarmState.ACKNOWLEDGED, True),
        "closed": (AlarmState.CLOSED, True),
        "all": (None, False),
    }[wanted_state]
    records = await ctx.store.list_alarms(
        AlarmFilter(state=wanted[0], only_state=wanted[1], gateway=gateway, since=since, limit=limit)
    )
    return AlarmList(alarms=[alarm_view(record) for record in records], total=len(records))


@get("/alarms/{alarm_id:int}", summary="One alarm")
async def get_alarm(ctx: NamedDependency[ApiContext], alarm_id: FromPath[int]) -> AlarmView:
    """One alarm."""
    return alarm_view(await ctx.store.get_alarm(alarm_id))


def _publish_alarm(ctx: ApiContext, view: AlarmView) -> None:
    ctx.feed.publish(
        LiveUpdate(kind=LiveKind.ALARM, gateway=view.gateway, at=ctx.clock(), data=dataclasses.asdict(view))
    )


@post("/alarms/{alarm_id:int}/ack", opt={"role": Role.TECHNICIAN}, status_code=200, summary="Acknowledge (technician)")
async def acknowledge_alarm(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], alarm_id: FromPath[int]
) -> AlarmView:
    """Acknowledge an open alarm (no change when it already is, or is closed)."""
    view = alarm_view(await ctx.store.acknowledge_alarm(alarm_id, ctx.clock(), by=_actor(request)))
    _publish_alarm(ctx, view)
    return view


@post("/alarms/{alarm_id:int}/close", opt={"role": Role.TECHNICIAN}, status_code=200, summary="Close (technician)")
async def close_alarm(
    request: Request[Any, Any, Any], ctx: NamedDependency[ApiContext], alarm_id: FromPath[int]
) -> AlarmView:
    """Close an alarm (no change when it already is closed).

    The alarm engine forgets it: a condition that still holds opens a new alarm instead of staying silenced.
    """
    view = alarm_view(await ctx.store.close_alarm(alarm_id, ctx.clock(), by=_actor(request)))
    ctx.alarm_deleted(alarm_id)
    _publish_alarm(ctx, view)
    return view


@delete("/alarms/{alarm_id:int}", opt={"role": Role.ADMIN}, summary="Delete an alarm and its history (admin)")
async def delete_alarm(ctx: NamedDependency[ApiContext], alarm_id: FromPath[int]) -> None:
    """Remove an alarm and its history."""
    record = await ctx.store.get_alarm(alarm_id)
    await ctx.store.delete_alarm(alarm_id)
    ctx.alarm_deleted(alarm_id)
    ctx.feed.publish(
        LiveUpdate(kind=LiveKind.GATEWAY, gateway=record.gateway, at=ctx.clock(), data={"alarm_deleted": alarm_id})
    )


@websocket("/live", opt={"role": None})
async def live(socket: WebSocket[Any, Any, Any], ctx: NamedDependency[ApiContext]) -> None:
    """Live updates; the first message from the client must be ``{"token": "<token>"}``."""
    await socket.accept()
    try:
        first = await asyncio.wait_for(socket.receive_data(mode="text"), ctx.settings.live_auth_timeout_s)
        hello = json.loads(first) if len(first) <= 1024 else None
    except (TimeoutError, ValueError):
        await socket.close(code=4401, reason='send {"token": ...} first')
        return
    except WebSocketDisconnect:
        return
    token = hello.get("token") if isinstance(hello, dict) else None
    if not isinstance(token, str) or not _still_valid(ctx, token):
        await socket.close(code=4401, reason="invalid token")
        return
    revoked = asyncio.Event()
    with ctx.stream.connect() as client:
        await socket.send_text(HELLO)

        async def pump() -> None:
            while True:
                message = await client.queue.get()
                if not _still_valid(ctx, token):
                    revoked.set()
                    return
                await socket.send_text(message)

        async def drain() -> None:
            while True:
                await socket.receive_data(mode="text")

        async def watch_token() -> None:
            # A quiet stream sends nothing, so the check before each message alone would leave it open.
            while True:
                await asyncio.sleep(ctx.settings.live_token_check_s)
                if not _still_valid(ctx, token):
                    revoked.set()
                    return

        tasks = {
            asyncio.create_task(pump()),
            asyncio.create_task(drain()),
            asyncio.create_task(watch_token()),
            asyncio.create_task(client.overflowed.wait()),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if revoked.is_set():
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await socket.close(code=4401, reason="token revoked")
        elif client.overflowed.is_set():
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await socket.close(code=4408, reason="fell behind: reconnect and reload")


def _still_valid(ctx: ApiContext, token: str) -> bool:
    """Whether the token is (still) known; a token file that cannot be read counts as no (fail closed)."""
    try:
        return ctx.tokens.verify(token) is not None
    except TokenError as exc:
        _log.error("live websocket: cannot verify its token: %s", exc)
        return False


# -- the dashboard -------------------------------------------------------------------------------------------


@get("/", include_in_schema=False)
async def index(ctx: NamedDependency[ApiContext]) -> Response[bytes]:
    """The dashboard page, or a page saying which front-end files are missing."""
    if ctx.assets.missing:
        return Response(ctx.assets.missing_page().encode(), media_type=MediaType.HTML, status_code=503)
    page = ctx.assets.own("index.html")
    return Response(page.body, media_type=page.media_type, headers={"Cache-Control": "no-cache"})


@get("/static/{name:str}", include_in_schema=False)
async def own_file(ctx: NamedDependency[ApiContext], name: FromPath[str]) -> Response[bytes]:
    """One of our dashboard files."""
    try:
        asset = ctx.assets.own(name)
    except AssetError as exc:
        raise NotFoundException(str(exc)) from exc
    return Response(asset.body, media_type=asset.media_type, headers={"Cache-Control": "no-cache"})


@get("/vendor/{name:str}", include_in_schema=False)
async def vendor_file(ctx: NamedDependency[ApiContext], name: FromPath[str]) -> Response[bytes]:
    """A third-party front-end file (from npm)."""
    try:
        asset = ctx.assets.vendor(name)
    except AssetError as exc:
        raise NotFoundException(str(exc)) from exc
    return Response(asset.body, media_type=asset.media_type, headers={"Cache-Control": "max-age=3600"})


# -- errors and assembly -------------------------------------------------------------------------------------


def _store_failed(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, UnknownRecord):
        return Response({"status_code": 404, "detail": str(exc)}, status_code=404)
    _log.warning("%s %s: %s", request.method, request.url.path, exc)
    return Response({"status_code": 503, "detail": f"store unavailable: {exc}"}, status_code=503)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Litestar does not log what it turns into a 500 (outside debug mode): a bug must not go unnoticed.
    _log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return Response({"status_code": 500, "detail": "internal error (logged on the server)"}, status_code=500)


def _tokens_failed(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    _log.error("%s %s: %s", request.method, request.url.path, exc)
    return Response({"status_code": 503, "detail": "token store unavailable"}, status_code=503)


def create_app(
    *,
    store: Repository,
    tokens: TokenStore,
    feed: LiveFeed,
    send_command: CommandSender,
    settings: ApiSettings | None = None,
    alarm_deleted: Callable[[int], None] | None = None,
    rollouts: RolloutService | None = None,
) -> Litestar:
    """The API and dashboard application.

    Args:
        store: the fleet store (the caller opens and closes it).
        tokens: API tokens.
        feed: the live feed that ingest and alarms publish to.
        send_command: hands a command to the broker (see :data:`~bmsgate.fleet.server.api.context.CommandSender`).
        settings: rate limits, map tiles, where the npm files are.
        alarm_deleted: told the id of each alarm closed or deleted through the API, including the active
            alarms of a deleted gateway (the alarm engine's ``forget``, so the condition can open it again).
        rollouts: the rollout service (None: the rollout routes answer 503).
    """
    context = ApiContext.compose(
        store=store,
        tokens=tokens,
        feed=feed,
        send_command=send_command,
        settings=settings or ApiSettings(),
        alarm_deleted=alarm_deleted,
        rollouts=rollouts,
    )

    @contextlib.asynccontextmanager
    async def follow_feed(_: Litestar) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(context.stream.run(), name="bmsgate-live-stream"),
            asyncio.create_task(context.overview.warm(), name="bmsgate-overview-warm"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await context.overview.close()

    api = Router(
        path=API_PREFIX,
        route_handlers=[
            health,
            session,
            list_gateways,
            get_gateway,
            delete_gateway,
            post_command,
            series,
            list_alarms,
            get_alarm,
            acknowledge_alarm,
            close_alarm,
            delete_alarm,
            live,
            *ROLLOUT_HANDLERS,
            *OVERVIEW_HANDLERS,
        ],
        security=[{"bearer": []}],
        guards=[_role_guard],
    )
    return Litestar(
        route_handlers=[api, index, own_file, vendor_file],
        dependencies={"ctx": Provide(lambda: context, sync_to_thread=False)},
        middleware=[DefineMiddleware(_AccessMiddleware, context=context)],
        exception_handlers={StoreError: _store_failed, TokenError: _tokens_failed, 500: _unexpected},
        lifespan=[follow_feed],
        openapi_config=OpenAPIConfig(
            title="bmsgate fleet API",
            version="1",
            path=API_PREFIX,
            render_plugins=[JsonRenderPlugin()],
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description="an API token")}
            ),
        ),
        logging_config=None,
    )
