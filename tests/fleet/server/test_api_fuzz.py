"""Hostile input to the API never gets a 500: random query values, paths, headers and websocket greetings
get a clear 4xx (or a closed socket), and the rate limiter keeps its budget under any request pattern."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.api.ratelimit import RateLimit, RateLimiter
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet

_GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=1e6, burst=100_000), anonymous_limit=RateLimit(per_minute=1e6, burst=100_000)
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fleet_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, RunningFleet]]:
    """One server for all examples (hypothesis runs each example synchronously in this loop)."""
    loop = asyncio.new_event_loop()
    directory = tmp_path_factory.mktemp("fuzz")
    context = running_fleet(directory, sites=3, history=2, settings=_GENEROUS)
    fleet = loop.run_until_complete(context.__aenter__())
    yield loop, fleet
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


def _get(loop: asyncio.AbstractEventLoop, fleet: RunningFleet, path: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=10) as http:
            return await http.get(path, **kwargs)  # type: ignore[arg-type]

    return loop.run_until_complete(go())


@_FUZZ
@given(field=_TEXT, since=_TEXT, until=_TEXT, resolution=_TEXT, battery=_TEXT)
def test_series_queries_never_fail_on_the_server(
    fleet_loop: tuple[asyncio.AbstractEventLoop, RunningFleet],
    field: str,
    since: str,
    until: str,
    resolution: str,
    battery: str,
) -> None:
    loop, fleet = fleet_loop
    path = f"/api/v1/gateways/site-00001/batteries/{urllib.parse.quote(battery or 'x', safe='')}/series"
    answer = _get(
        loop,
        fleet,
        path,
        params={"field": field, "since": since, "until": until, "resolution": resolution},
        headers={"Authorization": f"Bearer {fleet.viewer}"},
    )
    assert answer.status_code in (200, 400, 404), answer.text
    assert "detail" in answer.json() or answer.status_code == 200


@_FUZZ
@given(
    # HTTP forbids leading and trailing blanks in a header value: the client would refuse to send them.
    authorization=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300).map(str.strip),
    state=_TEXT,
)
def test_headers_and_alarm_filters_never_fail_on_the_server(
    fleet_loop: tuple[asyncio.AbstractEventLoop, RunningFleet], authorization: str, state: str
) -> None:
    loop, fleet = fleet_loop
    answer = _get(loop, fleet, "/api/v1/alarms", params={"state": state}, headers={"Authorization": authorization})
    assert answer.status_code == 401
    answer = _get(
        loop, fleet, "/api/v1/alarms", params={"state": state}, headers={"Authorization": f"Bearer {fleet.viewer}"}
    )
    assert answer.status_code in (200, 400)


@_FUZZ
@given(greeting=st.one_of(_TEXT, st.binary(max_size=64).map(lambda raw: raw.hex()), st.just("x" * 5000)))
def test_websocket_greetings_that_are_not_a_token_are_closed(
    fleet_loop: tuple[asyncio.AbstractEventLoop, RunningFleet], greeting: str
) -> None:
    loop, fleet = fleet_loop

    async def go() -> int | None:
        async with websockets.connect(fleet.url.replace("http", "ws") + "/api/v1/live") as socket:
            await socket.send(greeting)
            try:
                await asyncio.wait_for(socket.recv(), 5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert loop.run_until_complete(go()) == 4401
    assert json.dumps(greeting)  # the greeting was text, as the protocol says


@given(
    per_minute=st.floats(min_value=1, max_value=6000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200),
)
def test_rate_limiter_never_lets_more_through_than_its_budget(per_minute: float, burst: int, gaps: list[float]) -> None:
    limiter = RateLimiter(RateLimit(per_minute=per_minute, burst=burst))
    now = 0.0
    passed = 0
    for gap in gaps:
        now += gap
        retry = limiter.acquire("caller", now)
        if retry == 0:
            passed += 1
        else:
            assert retry >= 1 and retry == math.ceil(retry)
    assert passed <= burst + now * per_minute / 60 + 1e-6


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(RateLimit(per_minute=60, burst=1), max_callers=100)
    for caller in range(10_000):
        limiter.acquire(f"ip:{caller}", 0.0)
    assert len(limiter) == 100
    assert limiter.acquire("ip:9999", 0.0) > 0  # the most recent callers are the ones remembered


def test_rate_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(per_minute=0, burst=1)
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(per_minute=10, burst=0)


@_FUZZ
@given(
    search=st.one_of(_TEXT, st.just("x" * 300)),
    state=_TEXT,
    sort=st.one_of(_TEXT, st.sampled_from(["state", "soc", "name", "last_seen"])),
    offset=_TEXT,
    limit=_TEXT,
    edges=st.lists(st.one_of(_TEXT, st.floats().map(str)), min_size=5, max_size=5),
)
def test_overview_and_map_queries_never_fail_on_the_server(
    fleet_loop: tuple[asyncio.AbstractEventLoop, RunningFleet],
    search: str,
    state: str,
    sort: str,
    offset: str,
    limit: str,
    edges: list[str],
) -> None:
    loop, fleet = fleet_loop
    viewer = {"Authorization": f"Bearer {fleet.viewer}"}
    page = _get(
        loop,
        fleet,
        "/api/v1/overview",
        params={"q": search, "state": state, "sort": sort, "offset": offset, "limit": limit},
        headers=viewer,
    )
    assert page.status_code in (200, 400), page.text
    zoom, south, west, north, east = edges
    answer = _get(
        loop,
        fleet,
        "/api/v1/overview/map",
        params={"zoom": zoom, "south": south, "west": west, "north": north, "east": east, "q": search},
        headers=viewer,
    )
    assert answer.status_code in (200, 400), answer.text
