"""The HTTP API against a real SQLite store, served by uvicorn: roles, 401/403/429, shapes, series, OpenAPI,
the live websocket."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from openapi_spec_validator import validate

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import CommandKind, CommandMessage
from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.sample_fleet import sample_site
from bmsgate.fleet.server.api.sample_fleet import state as sample_state
from bmsgate.fleet.server.api.sample_fleet import telemetry as sample_telemetry
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.server.auth import Role
from bmsgate.fleet.server.live import LiveKind, LiveUpdate
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, NewAlarm, Severity

_GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=60_000, burst=10_000), anonymous_limit=RateLimit(per_minute=60_000, burst=10_000)
)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RunningFleet]:
    async with running_fleet(tmp_path, settings=_GENEROUS) as running:
        yield running


def client(fleet: RunningFleet, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=fleet.url, headers=headers, timeout=10)


async def open_alarm(fleet: RunningFleet, gateway: str = "site-00003", kind: str = "cell_drift") -> int:
    record, created = await fleet.store.open_alarm(
        NewAlarm(
            gateway=gateway,
            battery="pack1",
            kind=kind,
            severity=Severity.WARNING,
            message="cell 7 is 120 mV above the others",
            at=time.time(),
            value=0.12,
        )
    )
    assert created
    return record.id


# -- authentication and roles -------------------------------------------------------------------------------


async def test_health_needs_no_token(fleet: RunningFleet) -> None:
    async with client(fleet) as http:
        answer = await http.get("/api/v1/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok" and answer.json()["store"] == "sqlite"


@pytest.mark.parametrize("token", [None, "not-a-token", "x" * 300])
async def test_no_or_bad_token_is_401(fleet: RunningFleet, token: str | None) -> None:
    async with client(fleet, token) as http:
        for method, path in [
            ("GET", "/api/v1/gateways"),
            ("GET", "/api/v1/alarms"),
            ("POST", "/api/v1/alarms/1/ack"),
            ("DELETE", "/api/v1/gateways/site-00001"),
        ]:
            answer = await http.request(method, path)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert len(await fleet.store.list_gateways()) == 12


async def test_a_revoked_token_is_refused_at_once(fleet: RunningFleet) -> None:
    token = fleet.tokens.create(fleet.tokens.list()[0].role, "short-lived")
    async with client(fleet, token) as http:
        assert (await http.get("/api/v1/session")).status_code == 200
        token_id = (await http.get("/api/v1/session")).json()["token_id"]
        assert fleet.tokens.revoke(token_id)
        assert (await http.get("/api/v1/session")).status_code == 401


async def test_session_names_the_role(fleet: RunningFleet) -> None:
    for token, role in [(fleet.viewer, "viewer"), (fleet.technician, "technician"), (fleet.admin, "admin")]:
        async with client(fleet, token) as http:
            answer = (await http.get("/api/v1/session")).json()
        assert answer["role"] == role
        assert answer["tile_url"] is None


async def test_a_viewer_reads_but_cannot_act_or_delete(fleet: RunningFleet) -> None:
    alarm = await open_alarm(fleet)
    async with client(fleet, fleet.viewer) as http:
        assert (await http.get("/api/v1/gateways")).status_code == 200
        assert (await http.get(f"/api/v1/alarms/{alarm}")).status_code == 200
        for method, path, body in [
            ("POST", f"/api/v1/alarms/{alarm}/ack", None),
            ("POST", f"/api/v1/alarms/{alarm}/close", None),
            ("POST", "/api/v1/gateways/site-00003/commands", {"kind": "refresh_state"}),
            ("DELETE", f"/api/v1/alarms/{alarm}", None),
            ("DELETE", "/api/v1/gateways/site-00003", None),
        ]:
            answer = await http.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "viewer" in answer.json()["detail"]
    assert (await fleet.store.get_alarm(alarm)).state == "open"
    assert fleet.commands == []
    await fleet.store.get_gateway("site-00003")


async def test_a_technician_acts_but_cannot_delete(fleet: RunningFleet) -> None:
    alarm = await open_alarm(fleet)
    async with client(fleet, fleet.technician) as http:
        acknowledged = await http.post(f"/api/v1/alarms/{alarm}/ack")
        assert acknowledged.status_code == 200
        assert acknowledged.json()["state"] == "acknowledged" and acknowledged.json()["acknowledged_by"] == "tech"
        assert (await http.delete(f"/api/v1/alarms/{alarm}")).status_code == 403
        assert (await http.delete("/api/v1/gateways/site-00003")).status_code == 403
        closed = await http.post(f"/api/v1/alarms/{alarm}/close")
        assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert (await fleet.store.get_alarm(alarm)).closed_by == "tech"


async def test_an_admin_deletes_alarms_and_gateways(fleet: RunningFleet) -> None:
    alarm = await open_alarm(fleet)
    async with client(fleet, fleet.admin) as http:
        assert (await http.delete(f"/api/v1/alarms/{alarm}")).status_code == 204
        assert (await http.get(f"/api/v1/alarms/{alarm}")).status_code == 404
        assert fleet.deleted_alarms == [alarm]  # the alarm engine forgets it, so it can open again
        assert (await http.delete("/api/v1/gateways/site-00003")).status_code == 204
        assert (await http.get("/api/v1/gateways/site-00003")).status_code == 404
        assert (await http.get("/api/v1/gateways")).json()["total"] == 11
        assert (await http.delete("/api/v1/gateways/no-such-site")).status_code == 404


async def test_closing_an_alarm_tells_the_alarm_engine_to_forget_it(fleet: RunningFleet) -> None:
    alarm = await open_alarm(fleet)
    async with client(fleet, fleet.technician) as http:
        assert (await http.post(f"/api/v1/alarms/{alarm}/ack")).status_code == 200
        assert fleet.deleted_alarms == [], "acknowledging keeps the alarm active"
        assert (await http.post(f"/api/v1/alarms/{alarm}/close")).status_code == 200
    assert fleet.deleted_alarms == [alarm]  # a condition that persists opens a new alarm


async def test_deleting_a_gateway_tells_the_alarm_engine_to_forget_its_active_alarms(fleet: RunningFleet) -> None:
    first = await open_alarm(fleet, "site-00004", "cell_drift")
    second = await open_alarm(fleet, "site-00004", "no_data")
    elsewhere = await open_alarm(fleet, "site-00005", "cell_drift")
    async with client(fleet, fleet.admin) as http:
        assert (await http.post(f"/api/v1/alarms/{second}/ack")).status_code == 200
        assert (await http.delete("/api/v1/gateways/site-00004")).status_code == 204
    assert sorted(fleet.deleted_alarms) == sorted([first, second])
    assert elsewhere not in fleet.deleted_alarms
    assert (await fleet.store.get_alarm(elsewhere)).state == "open"


# -- commands -----------------------------------------------------------------------------------------------


async def test_a_technician_sends_a_command(fleet: RunningFleet) -> None:
    async with client(fleet, fleet.technician) as http:
        answer = await http.post("/api/v1/gateways/site-00002/commands", json={"kind": "rediscover_outputs"})
        assert answer.status_code == 202, answer.text
        assert (await http.post("/api/v1/gateways/site-00002/commands", json={"kind": "rm -rf"})).status_code == 400
        assert (await http.post("/api/v1/gateways/site-00002/commands", json={})).status_code == 400
        assert (await http.post("/api/v1/gateways/nowhere/commands", json={"kind": "refresh_state"})).status_code == 404
        assert (
            await http.post("/api/v1/gateways/BAD%20ID/commands", json={"kind": "refresh_state"})
        ).status_code == 404
    [(gateway, command)] = fleet.commands
    assert gateway == "site-00002"
    assert command.kind is CommandKind.REDISCOVER_OUTPUTS and command.id == answer.json()["id"]
    assert command.expires_at - command.issued_at == pytest.approx(300)


async def test_a_command_the_broker_cannot_take_is_503(tmp_path: Path) -> None:
    tried: list[str] = []

    async def broken(gateway: str, command: CommandMessage) -> None:
        tried.append(gateway)
        raise BmsgateError("broker unreachable")

    async with running_fleet(tmp_path, sites=2, history=1, settings=_GENEROUS, send_command=broken) as fleet:
        async with client(fleet, fleet.admin) as http:
            answer = await http.post("/api/v1/gateways/site-00001/commands", json={"kind": "refresh_state"})
    assert answer.status_code == 503 and "broker unreachable" in answer.json()["detail"]
    assert tried == ["site-00001"]


# -- shapes ---------------------------------------------------------------------------------------------------


async def test_gateways_list_the_registry_and_latest_snapshots(fleet: RunningFleet) -> None:
    await open_alarm(fleet, "site-00006")
    async with client(fleet, fleet.viewer) as http:
        listing = (await http.get("/api/v1/gateways")).json()
        summary = (await http.get("/api/v1/gateways", params={"summary": "true"})).json()
    assert listing["total"] == 12
    by_id = {gateway["id"]: gateway for gateway in listing["gateways"]}
    site = by_id["site-00003"]
    assert site["name"] == "Durban 00003" and site["site"] == "Durban" and site["tags"] == ["demo", "durban"]
    assert site["online"] is True and site["last_seen"] > 0 and site["software_version"] == "0.2.0"
    assert site["location"]["lat"] == pytest.approx(fleet.sites[3].lat)
    assert {pack["name"] for pack in site["packs"]} == {"jbd", "sunsynk"}
    assert all(len(pack["sha256"]) == 64 for pack in site["packs"])
    assert [battery["id"] for battery in site["batteries"]] == ["pack1", "pack2"]
    snapshot = site["batteries"][0]["snapshot"]
    assert len(snapshot["cell_voltages"]) == 16 and snapshot["battery_id"] == "pack1"
    assert snapshot["cell_delta"] == pytest.approx(max(snapshot["cell_voltages"]) - min(snapshot["cell_voltages"]))
    assert site["cell_delta"] >= 0.1  # site 3 has a drifting cell
    assert site["soc"] == pytest.approx(snapshot["soc"])
    assert site["inverter"]["limits"]["charge_voltage"] == 55.2
    assert by_id["site-00006"]["online"] is False and by_id["site-00006"]["open_alarms"] == 1
    assert all(gateway["batteries"] is None for gateway in summary["gateways"])
    assert [gateway["id"] for gateway in summary["gateways"]] == sorted(by_id)


async def _silent_site(fleet: RunningFleet, index: int, *, at: float, received: float) -> str:
    """A site whose only telemetry was sampled at `at` (its clock) and received at `received` (ours)."""
    site = sample_site(index)
    batch = IngestBatch()
    batch.states.append((sample_state(site, received), received))
    batch.availability.append((site.gateway, Availability.ONLINE, received))
    batch.telemetry.append((sample_telemetry(site, at, 0), received))
    await fleet.store.write_batch(batch)
    return site.gateway


async def test_a_battery_whose_data_stopped_is_stale_now(fleet: RunningFleet) -> None:
    now = time.time()
    silent = await _silent_site(fleet, 40, at=now - 3600, received=now - 3599)
    # Its clock an hour ahead: the reading's time is in the future, but it was received an hour ago.
    ahead = await _silent_site(fleet, 41, at=now + 3600, received=now - 3600)
    async with client(fleet, fleet.viewer) as http:
        listing = {gateway["id"]: gateway for gateway in (await http.get("/api/v1/gateways")).json()["gateways"]}
        detail = (await http.get(f"/api/v1/gateways/{silent}")).json()
    for gateway in (listing[silent], detail, listing[ahead]):
        for battery in gateway["batteries"]:
            assert battery["stale"] is True, (gateway["id"], battery)
            assert battery["age_s"] == pytest.approx(3601, abs=30), "age now, not the age stored at message time"
            assert battery["stale_after_s"] == 60.0  # three intervals of 10 s, at least a minute
    for battery in listing["site-00003"]["batteries"]:  # reported just now
        assert battery["stale"] is False and battery["age_s"] < 60


async def test_one_gateway_has_its_alarms(fleet: RunningFleet) -> None:
    alarm = await open_alarm(fleet, "site-00004")
    async with client(fleet, fleet.viewer) as http:
        gateway = (await http.get("/api/v1/gateways/site-00004")).json()
        assert (await http.get("/api/v1/gateways/site-99999")).status_code == 404
    assert [entry["id"] for entry in gateway["alarms"]] == [alarm]
    assert gateway["alarms"][0]["severity"] == "warning"


async def test_alarms_filter_by_state(fleet: RunningFleet) -> None:
    first = await open_alarm(fleet, "site-00001")
    second = await open_alarm(fleet, "site-00002")
    async with client(fleet, fleet.technician) as http:
        await http.post(f"/api/v1/alarms/{second}/ack")
        third = await open_alarm(fleet, "site-00005")
        await http.post(f"/api/v1/alarms/{third}/close")

        async def ids(state: str) -> set[int]:
            answer = await http.get("/api/v1/alarms", params={"state": state})
            assert answer.status_code == 200, answer.text
            return {alarm["id"] for alarm in answer.json()["alarms"]}

        assert await ids("active") == {first, second}
        assert await ids("open") == {first}
        assert await ids("acknowledged") == {second}
        assert await ids("closed") == {third}
        assert await ids("all") == {first, second, third}
        assert (await http.get("/api/v1/alarms", params={"state": "bogus"})).status_code == 400
        assert (await http.get("/api/v1/alarms", params={"limit": "0"})).status_code == 400
        not_finite = await http.get("/api/v1/alarms", params={"since": "nan"})
        assert not_finite.status_code == 400 and "finite" in not_finite.json()["detail"]


# -- series ---------------------------------------------------------------------------------------------------


async def test_series_raw_with_since_and_until(fleet: RunningFleet) -> None:
    base = "/api/v1/gateways/site-00003/batteries/pack1/series"
    async with client(fleet, fleet.viewer) as http:
        everything = (
            await http.get(
                base, params={"field": "soc", "since": fleet.now - 3600, "until": fleet.now + 1, "resolution": "raw"}
            )
        ).json()
        assert everything["resolution"] == "raw"
        times = [point[0] for point in everything["points"]]
        assert len(times) == 6 and times == sorted(times)
        part = (
            await http.get(
                base, params={"field": "soc", "since": fleet.now - 150, "until": fleet.now + 1, "resolution": "raw"}
            )
        ).json()
        assert [point[0] for point in part["points"]] == times[-3:]
        cells = (
            await http.get(
                base,
                params={
                    "field": "cell_voltages",
                    "since": fleet.now - 3600,
                    "until": fleet.now + 1,
                    "resolution": "raw",
                },
            )
        ).json()
        assert all(len(point[1]) == 16 for point in cells["points"])
        assert max(cells["points"][-1][1]) - min(cells["points"][-1][1]) >= 0.1
        one_cell = (
            await http.get(
                base, params={"field": "cell:7", "since": fleet.now - 3600, "until": fleet.now + 1, "resolution": "raw"}
            )
        ).json()
        assert [point[1] for point in one_cell["points"]] == [point[1][6] for point in cells["points"]]


async def test_series_rollups_and_auto(fleet: RunningFleet) -> None:
    base = "/api/v1/gateways/site-00003/batteries/pack1/series"
    async with client(fleet, fleet.viewer) as http:
        minute = (
            await http.get(
                base,
                params={"field": "voltage", "since": fleet.now - 3600, "until": fleet.now + 60, "resolution": "minute"},
            )
        ).json()
        assert minute["resolution"] == "minute" and 1 <= len(minute["points"]) <= 6
        for _, average, low, high, count in minute["points"]:
            assert low <= average <= high and count >= 1
        hour = (
            await http.get(
                base,
                params={"field": "voltage", "since": fleet.now - 7200, "until": fleet.now + 3600, "resolution": "hour"},
            )
        ).json()
        assert hour["resolution"] == "hour" and sum(point[4] for point in hour["points"]) == 6
        auto_day = (
            await http.get(base, params={"field": "voltage", "since": fleet.now - 86400 * 30, "until": fleet.now})
        ).json()
        assert auto_day["resolution"] == "hour"
        auto_short = (await http.get(base, params={"field": "voltage", "since": fleet.now - 3600})).json()
        assert auto_short["resolution"] == "raw"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"field": "bogus"}, 400),
        ({"field": "cell:0"}, 400),
        ({}, 400),
        ({"field": "soc", "since": "10", "until": "5"}, 400),
        ({"field": "soc", "resolution": "weekly"}, 400),
        ({"field": "soc", "since": "yesterday"}, 400),
        ({"field": "soc", "since": "nan"}, 400),
        ({"field": "soc", "until": "inf"}, 400),
        ({"field": "soc", "since": "-inf", "until": "NaN"}, 400),
        ({"field": "soc", "since": "-Infinity"}, 400),
    ],
)
async def test_series_refuses_bad_queries(fleet: RunningFleet, params: dict[str, str], status: int) -> None:
    async with client(fleet, fleet.viewer) as http:
        answer = await http.get("/api/v1/gateways/site-00003/batteries/pack1/series", params=params)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]
    if any(value.lower().lstrip("-") in ("nan", "inf", "infinity") for value in params.values()):
        assert "finite" in answer.json()["detail"]


# -- rate limit -----------------------------------------------------------------------------------------------


async def test_rate_limit_per_token_and_per_address(tmp_path: Path) -> None:
    settings = ApiSettings(
        token_limit=RateLimit(per_minute=6, burst=3), anonymous_limit=RateLimit(per_minute=6, burst=2)
    )
    async with running_fleet(tmp_path, sites=2, history=1, settings=settings) as fleet:
        async with client(fleet, fleet.viewer) as viewer, client(fleet, fleet.admin) as admin:
            answers = [(await viewer.get("/api/v1/session")).status_code for _ in range(4)]
            assert answers == [200, 200, 200, 429]
            limited = await viewer.get("/api/v1/gateways")
            assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 10
            assert "rate limit" in limited.json()["detail"]
            assert (await admin.get("/api/v1/session")).status_code == 200  # another token, its own budget
        async with client(fleet, "guess-1") as guesser:
            assert [(await guesser.get("/api/v1/gateways")).status_code for _ in range(3)] == [401, 401, 429]
        async with client(fleet) as anonymous:
            assert (await anonymous.get("/api/v1/health")).status_code == 429  # the same address's budget


# -- OpenAPI --------------------------------------------------------------------------------------------------


async def test_openapi_document_is_valid_and_lists_the_endpoints(fleet: RunningFleet) -> None:
    async with client(fleet) as http:
        answer = await http.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    validate(document)
    paths = document["paths"]
    for path, method in [
        ("/api/v1/gateways", "get"),
        ("/api/v1/gateways/{gateway_id}", "get"),
        ("/api/v1/gateways/{gateway_id}", "delete"),
        ("/api/v1/gateways/{gateway_id}/commands", "post"),
        ("/api/v1/gateways/{gateway_id}/batteries/{battery_id}/series", "get"),
        ("/api/v1/alarms", "get"),
        ("/api/v1/alarms/{alarm_id}/ack", "post"),
        ("/api/v1/alarms/{alarm_id}/close", "post"),
        ("/api/v1/alarms/{alarm_id}", "delete"),
        ("/api/v1/health", "get"),
        ("/api/v1/session", "get"),
    ]:
        assert method in paths.get(path, {}), (path, method, sorted(paths))
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    gateway_schema = json.dumps(document["components"]["schemas"])
    for key in ("software_version", "last_seen", "sha256", "cell_delta"):
        assert key in gateway_schema
    assert not any(path.startswith(("/static", "/vendor")) or path == "/" for path in paths)


# -- live websocket -------------------------------------------------------------------------------------------


def _ws_url(fleet: RunningFleet) -> str:
    return fleet.url.replace("http://", "ws://") + "/api/v1/live"


async def _next_of(socket: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["type"] == kind:
                return message


async def test_websocket_delivers_alarms_and_gateway_updates(fleet: RunningFleet) -> None:
    async with websockets.connect(_ws_url(fleet)) as socket:
        await socket.send(json.dumps({"token": fleet.viewer}))
        assert (await _next_of(socket, "hello"))["type"] == "hello"
        alarm = await open_alarm(fleet, "site-00008")
        fleet.feed.publish(LiveUpdate(kind=LiveKind.ALARM, gateway="site-00008", at=time.time(), data={"id": alarm}))
        pushed = await _next_of(socket, "alarm")
        assert pushed["alarm"]["id"] == alarm and pushed["alarm"]["state"] == "open"
        update = await _next_of(socket, "gateway")
        assert update["gateway"]["id"] == "site-00008" and update["gateway"]["open_alarms"] == 1
        async with client(fleet, fleet.admin) as http:
            await http.delete("/api/v1/gateways/site-00009")
        assert (await _next_of(socket, "gateway_deleted"))["id"] == "site-00009"


@pytest.mark.parametrize("first", ['{"token": "wrong"}', "not json", '["token"]', '{"token": 5}'])
async def test_websocket_refuses_a_bad_token(fleet: RunningFleet, first: str) -> None:
    async with websockets.connect(_ws_url(fleet)) as socket:
        await socket.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_websocket_of_a_revoked_token_is_closed(tmp_path: Path) -> None:
    settings = dataclasses.replace(_GENEROUS, live_token_check_s=0.1)
    async with running_fleet(tmp_path, sites=2, history=1, settings=settings) as fleet:
        token = fleet.tokens.create(Role.VIEWER, "soon revoked")
        (info,) = [known for known in fleet.tokens.list() if known.label == "soon revoked"]
        async with websockets.connect(_ws_url(fleet)) as quiet, websockets.connect(_ws_url(fleet)) as other:
            await quiet.send(json.dumps({"token": token}))
            await other.send(json.dumps({"token": fleet.viewer}))
            assert (await _next_of(quiet, "hello"))["type"] == "hello"
            assert (await _next_of(other, "hello"))["type"] == "hello"
            assert fleet.tokens.revoke(info.token_id)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(quiet.recv(), 5)  # nothing is sent to it: the periodic check closes it
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            assert closed.value.rcvd.reason == "token revoked"
            fleet.feed.publish(LiveUpdate(kind=LiveKind.GATEWAY_DELETED, gateway="site-00001", at=time.time(), data={}))
            assert (await _next_of(other, "gateway_deleted"))["id"] == "site-00001", "other tokens keep their socket"


async def test_websocket_of_a_revoked_token_gets_no_further_message(tmp_path: Path) -> None:
    settings = dataclasses.replace(_GENEROUS, live_token_check_s=60.0)  # only the check before sending can act
    async with running_fleet(tmp_path, sites=2, history=1, settings=settings) as fleet:
        token = fleet.tokens.create(Role.VIEWER, "soon revoked")
        (info,) = [known for known in fleet.tokens.list() if known.label == "soon revoked"]
        async with websockets.connect(_ws_url(fleet)) as socket:
            await socket.send(json.dumps({"token": token}))
            assert (await _next_of(socket, "hello"))["type"] == "hello"
            assert fleet.tokens.revoke(info.token_id)
            fleet.feed.publish(LiveUpdate(kind=LiveKind.GATEWAY_DELETED, gateway="site-00001", at=time.time(), data={}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


# -- the dashboard's files ------------------------------------------------------------------------------------


async def test_the_dashboard_and_its_libraries_are_served(fleet: RunningFleet) -> None:
    async with client(fleet) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "bmsgate fleet" in page.text
        script = await http.get("/static/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        leaflet = await http.get("/vendor/leaflet.js")
        assert leaflet.status_code == 200 and len(leaflet.content) > 100_000
        assert (await http.get("/vendor/countries-110m.json")).json()["type"] == "Topology"
        assert (await http.get("/vendor/../../etc/passwd")).status_code == 404
        assert (await http.get("/vendor/package.json")).status_code == 404
        assert (await http.get("/static/..%2F__init__.py")).status_code == 404


# -- the overview read model ----------------------------------------------------------------------------------


async def _summary_of(http: httpx.AsyncClient, gateway: str) -> dict[str, Any]:
    listing = (await http.get("/api/v1/gateways", params={"summary": "true"})).json()
    found: dict[str, Any]
    [found] = [entry for entry in listing["gateways"] if entry["id"] == gateway]
    return found


async def test_the_overview_summary_follows_the_live_feed(fleet: RunningFleet) -> None:
    async with client(fleet, fleet.viewer) as http:
        assert (await _summary_of(http, "site-00007"))["open_alarms"] == 0
        alarm = await open_alarm(fleet, "site-00007")
        # Not yet on the live feed: the read model still has the summary it read (up to overview_max_age_s).
        assert (await _summary_of(http, "site-00007"))["open_alarms"] == 0
        fleet.feed.publish(LiveUpdate(kind=LiveKind.ALARM, gateway="site-00007", at=time.time(), data={"id": alarm}))
        async with asyncio.timeout(3):
            while (await _summary_of(http, "site-00007"))["open_alarms"] != 1:
                await asyncio.sleep(0.05)
        async with client(fleet, fleet.admin) as admin:
            await admin.delete("/api/v1/gateways/site-00007")
        async with asyncio.timeout(3):
            while any(
                entry["id"] == "site-00007"
                for entry in (await http.get("/api/v1/gateways?summary=true")).json()["gateways"]
            ):
                await asyncio.sleep(0.05)


async def test_the_overview_summary_is_reread_when_old(tmp_path: Path) -> None:
    settings = ApiSettings(
        token_limit=_GENEROUS.token_limit, anonymous_limit=_GENEROUS.anonymous_limit, overview_max_age_s=0.0
    )
    async with (
        running_fleet(tmp_path, sites=3, history=1, settings=settings) as fleet,
        client(fleet, fleet.viewer) as http,
    ):
        assert (await _summary_of(http, "site-00001"))["open_alarms"] == 0
        await open_alarm(fleet, "site-00001")  # not published: only the periodic re-read finds it
        async with asyncio.timeout(3):
            while (await _summary_of(http, "site-00001"))["open_alarms"] != 1:
                await asyncio.sleep(0.05)


async def test_missing_front_end_files_get_a_page_that_says_how_to_install_them(tmp_path: Path) -> None:
    empty = tmp_path / "node_modules"
    empty.mkdir()
    settings = ApiSettings(
        token_limit=_GENEROUS.token_limit, anonymous_limit=_GENEROUS.anonymous_limit, assets_dir=empty
    )
    async with running_fleet(tmp_path, sites=1, history=1, settings=settings) as fleet, client(fleet) as http:
        page = await http.get("/")
        assert page.status_code == 503
        assert "leaflet/dist/leaflet.js" in page.text and "npm ci" in page.text
        missing = await http.get("/vendor/leaflet.js")
        assert missing.status_code == 404 and "npm ci" in missing.json()["detail"]
        assert (await http.get("/api/v1/health")).status_code == 200


async def test_an_unexpected_error_is_a_logged_500_without_details(
    fleet: RunningFleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(fleet.store, "list_alarms", broken)
    async with client(fleet, fleet.viewer) as http:
        answer = await http.get("/api/v1/alarms")
    assert answer.status_code == 500
    assert "secret" not in answer.text
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)
