"""The rollout routes over real HTTP (uvicorn, a real SQLite store seeded with a sample fleet): roles, shapes,
actions, audit, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from tests.fleet.server.rollouts.helpers import PACK, report, unsigned_envelope

_GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=60_000, burst=10_000), anonymous_limit=RateLimit(per_minute=60_000, burst=10_000)
)
REQUEST: dict[str, Any] = {
    "name": "maps 2.0",
    "target": {"packs": [PACK.model_dump(mode="json")]},
    "options": {"jitter_s": 0},
}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RunningFleet]:
    async with running_fleet(tmp_path, settings=_GENEROUS, sign_desired=unsigned_envelope) as running:
        yield running


def client(fleet: RunningFleet, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=fleet.url, headers=headers, timeout=10)


async def _step(fleet: RunningFleet) -> list[str]:
    published: list[str] = []

    async def publish(topic_name: str, _payload: bytes) -> None:
        published.append(topic_name.split("/")[2])

    assert fleet.rollouts is not None
    await fleet.rollouts.step(publish)
    return published


async def test_roles_create_read_act_and_audit(fleet: RunningFleet) -> None:
    async with client(fleet, fleet.viewer) as viewer, client(fleet, fleet.technician) as tech:
        assert (await viewer.post("/api/v1/rollouts", json=REQUEST)).status_code == 403
        async with client(fleet) as anonymous:
            assert (await anonymous.get("/api/v1/rollouts")).status_code == 401
        created = await tech.post("/api/v1/rollouts", json=REQUEST)
        assert created.status_code == 201, created.text
        body = created.json()
        rollout_id = body["id"]
        assert (body["state"], body["total"], [group["size"] for group in body["groups"]]) == (
            "running",
            12,
            [1, 10, 1],
        )

        canary = await _step(fleet)
        assert len(canary) == 1
        assert fleet.rollouts is not None
        await fleet.rollouts.handle_report(
            f"fleet/v1/{canary[0]}/reported",
            report(canary[0], UpdatePhase.REVERTED, generation=1, rollout=rollout_id, reason=FailureReason.HEALTH)
            .model_dump_json()
            .encode(),
        )
        await _step(fleet)
        shown = (await viewer.get(f"/api/v1/rollouts/{rollout_id}")).json()
        assert shown["state"] == "stopped" and "error threshold" in shown["reason"]
        assert shown["groups"][0]["phases"] == {"reverted": 1} and shown["groups"][0]["reasons"] == {"health": 1}
        assert shown["members"][0] == {
            "gateway": canary[0],
            "group": 0,
            "phase": "reverted",
            "outcome": "failure",
            "reason": "health",
            "detail": "",
            "generation": 1,
            "published_at": shown["members"][0]["published_at"],
            "reported_at": shown["members"][0]["reported_at"],
        }
        assert (await tech.post(f"/api/v1/rollouts/{rollout_id}/pause")).status_code == 409
        assert (await viewer.post(f"/api/v1/rollouts/{rollout_id}/retry-failed")).status_code == 403
        retry = await tech.post(f"/api/v1/rollouts/{rollout_id}/retry-failed")
        assert retry.status_code == 201 and retry.json()["kind"] == "retry" and retry.json()["total"] == 1
        assert (await tech.post(f"/api/v1/rollouts/{rollout_id}/rollback")).status_code == 403
        async with client(fleet, fleet.admin) as admin:
            busy = await admin.post(f"/api/v1/rollouts/{rollout_id}/rollback")
            assert busy.status_code == 409 and "still in an active rollout" in busy.text
            assert (await tech.post(f"/api/v1/rollouts/{retry.json()['id']}/cancel")).status_code == 200
            rollback = await admin.post(f"/api/v1/rollouts/{rollout_id}/rollback")
        assert rollback.status_code == 201 and rollback.json()["kind"] == "rollback"
        listing = (await viewer.get("/api/v1/rollouts")).json()
        assert listing["total"] == 3
        assert sorted(item["kind"] for item in listing["rollouts"]) == ["retry", "rollback", "rollout"]
        audit = (await viewer.get(f"/api/v1/rollouts/{rollout_id}/audit")).json()["entries"]
        assert [(entry["actor"], entry["role"], entry["action"]) for entry in audit if entry["actor"] != "server"] == [
            ("tech", "technician", "create"),
            ("tech", "technician", "retry-failed"),
            ("admin", "admin", "rollback"),
        ]
        assert any(entry["actor"] == "server" and entry["detail"].startswith("stopped") for entry in audit)


async def test_pause_resume_cancel_and_bad_requests(fleet: RunningFleet) -> None:
    async with client(fleet, fleet.technician) as tech:
        rollout_id = (await tech.post("/api/v1/rollouts", json=REQUEST)).json()["id"]
        assert (await tech.post(f"/api/v1/rollouts/{rollout_id}/pause")).json()["state"] == "paused"
        assert await _step(fleet) == []
        assert (await tech.post(f"/api/v1/rollouts/{rollout_id}/resume")).json()["state"] == "running"
        assert len(await _step(fleet)) == 1
        assert (await tech.post(f"/api/v1/rollouts/{rollout_id}/cancel")).json()["state"] == "cancelled"
        assert await _step(fleet) == []
        assert (await tech.get("/api/v1/rollouts/ro-nope")).status_code == 404
        bad = await tech.post("/api/v1/rollouts", json={"target": {}})
        assert bad.status_code == 400 and "packs or software" in bad.text
        nobody = await tech.post("/api/v1/rollouts", json={**REQUEST, "selection": {"tags": ["no-such-tag"]}})
        assert nobody.status_code == 400 and "picks no gateway" in nobody.text
        unknown = await tech.post("/api/v1/rollouts", json={**REQUEST, "selection": {"gateways": ["gw-unknown"]}})
        assert unknown.status_code == 400 and "not in the registry" in unknown.text
        extra = await tech.post("/api/v1/rollouts", json={**REQUEST, "surprise": 1})
        assert extra.status_code == 400
        openapi = (await tech.get("/api/v1/openapi.json")).json()
        assert "/api/v1/rollouts/{rollout_id}/rollback" in openapi["paths"]


async def test_without_a_rollout_service_the_routes_say_so(tmp_path: Path) -> None:
    async with running_fleet(tmp_path, settings=_GENEROUS) as fleet, client(fleet, fleet.viewer) as viewer:
        answer = await viewer.get("/api/v1/rollouts")
        assert answer.status_code == 503 and "not enabled" in answer.text
