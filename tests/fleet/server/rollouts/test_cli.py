"""``bmsgate fleet rollout ...`` against a real running API (the CLI runs in a thread: it blocks)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import running_fleet
from tests.fleet.server.rollouts.helpers import PACK, unsigned_envelope

_GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=60_000, burst=10_000), anonymous_limit=RateLimit(per_minute=60_000, burst=10_000)
)


async def test_create_status_pause_resume_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "rollout.json"
    request.write_text(json.dumps({"name": "maps", "target": {"packs": [PACK.model_dump(mode="json")]}}))
    async with running_fleet(tmp_path / "fleet", settings=_GENEROUS, sign_desired=unsigned_envelope) as fleet:
        common = ["--server", fleet.url, f"--token={fleet.technician}"]  # a token may start with "-"
        assert await asyncio.to_thread(main, ["fleet", "rollout", "create", str(request), *common, "--json"]) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["state"] == "running" and created["total"] == 12
        rollout_id = created["id"]
        assert await asyncio.to_thread(main, ["fleet", "rollout", "status", rollout_id, *common]) == 0
        shown = capsys.readouterr().out
        assert f"{rollout_id} rollout 'maps': running" in shown and "group 1 (1, not started): pending 1" in shown
        for action, state in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
            assert await asyncio.to_thread(main, ["fleet", "rollout", action, rollout_id, *common]) == 0
            assert f": {state}" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["fleet", "rollout", "status", *common]) == 0
        assert rollout_id in capsys.readouterr().out
        viewer = ["--server", fleet.url, f"--token={fleet.viewer}"]
        assert await asyncio.to_thread(main, ["fleet", "rollout", "audit", rollout_id, *viewer]) == 0
        audit = capsys.readouterr().out.splitlines()
        assert [line.split(" ", 2)[2] for line in audit] == [
            "tech (technician) create: rollout 'maps': 12 gateways in groups 1+10+1",
            "tech (technician) pause: paused by a user",
            "tech (technician) resume",
            "tech (technician) cancel: cancelled by a user",
        ]
        assert await asyncio.to_thread(main, ["fleet", "rollout", "rollback", rollout_id, *viewer]) != 0
        assert "HTTP 403" in capsys.readouterr().err
