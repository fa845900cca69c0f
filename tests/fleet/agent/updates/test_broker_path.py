"""The broker path: a retained ``desired`` payload reaches the engine through the agent, and only a verified one
is applied (a real Mosquitto with the fleet's ACL, the agent, a running simulated gateway)."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.updates.journal import read_journal
from bmsgate.fleet.protocol import Channel, topic
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from bmsgate.mqtt import client as mqtt
from tests.fleet.agent.conftest import FleetBroker, Recorder, agent_options, running
from tests.fleet.agent.updates.conftest import GATEWAY, Artifacts, bench, desired, generic_map_text, reports_of
from tests.fleet.agent.updates.signed import SignedDirectory, sign

_DESIRED = topic(GATEWAY, Channel.DESIRED)


async def test_only_a_verified_desired_state_is_applied(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    trusted, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    artifacts = Artifacts(tmp_path / "repository")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    source = SignedDirectory(artifacts.directory, trusted.public_key())
    async with bench(tmp_path / "state", source=source) as site:
        # packs=None: the state lists the catalog's items, as a real gateway's does.
        agent = FleetAgent(agent_options(fleet_broker, tmp_path, packs=None), desired=site.engine)
        async with running(agent, site.gateway.hub):
            await agent.connected.wait()
            before = await site.soc_register()

            def last() -> UpdatePhase | None:
                found = reports_of(recorder.raw)
                return found[-1].phase if found else None

            await recorder.publish(_DESIRED, sign(desired(1, maps), stranger), retain=True)
            await recorder.wait_for(lambda: last() is UpdatePhase.FAILED)
            assert reports_of(recorder.raw)[-1].reason is FailureReason.SIGNATURE
            expired = desired(2, maps).model_copy(update={"expires_at": time.time() - 1})
            await recorder.publish(_DESIRED, sign(expired, trusted), retain=True)
            await recorder.wait_for(lambda: reports_of(recorder.raw)[-1].reason is FailureReason.EXPIRED)
            assert abs(await site.soc_register() - before) <= 5, "nothing was applied"
            assert read_journal(tmp_path / "state" / "packs").generation == 0, "refused states consume nothing"

            # A gateway's own credentials cannot publish a desired state (the broker's ACL drops it).
            rogue_settings = fleet_broker.settings(GATEWAY).model_copy(update={"client_id": "rogue"})
            async with mqtt.connect(rogue_settings, will_topic="test/rogue", will_payload="gone") as rogue:
                await rogue.publish(_DESIRED, sign(desired(3, maps), trusted), retain=True)
            count = len(reports_of(recorder.raw))

            await recorder.publish(_DESIRED, sign(desired(4, maps), trusted), retain=True)
            await recorder.wait_for(lambda: last() is UpdatePhase.COMMITTED)
            soc = site.soc()
            assert soc is not None
            assert abs(await site.soc_register() - soc * 10) <= 20
            committed = reports_of(recorder.raw)[-1]
            new_map = next(item for item in committed.running.packs if item.name == "generic")

            def state_names_the_new_map() -> bool:
                states = recorder.of(Channel.STATE, GATEWAY)
                return bool(states) and any(
                    pack.kind == "register-map" and pack.sha256 == new_map.sha256 for pack in states[-1].packs
                )

            # The retained state follows the catalog that now runs.
            await recorder.wait_for(state_names_the_new_map)
        phases = [report.phase for report in reports_of(recorder.raw)[count:]]
        assert phases[-3:] == [UpdatePhase.STAGED, UpdatePhase.ACTIVE_PENDING, UpdatePhase.COMMITTED]
        assert all(report.generation == 4 for report in reports_of(recorder.raw)[count:])
        assert [raw for raw in recorder.raw if raw[0] == _DESIRED and b'"generation":3' in raw[1]] == []
        assert source.refreshes >= 1


async def test_without_a_trusted_repository_a_desired_state_is_refused(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    artifacts = Artifacts(tmp_path / "repository")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text()})
    async with bench(tmp_path / "state") as site:
        agent = FleetAgent(agent_options(fleet_broker, tmp_path), desired=site.engine)
        async with running(agent, site.gateway.hub):
            await agent.connected.wait()
            await recorder.publish(_DESIRED, sign(desired(1, maps), Ed25519PrivateKey.generate()), retain=True)
            await recorder.wait_for(lambda: reports_of(recorder.raw))
    refused = reports_of(recorder.raw)[-1]
    assert refused.phase is UpdatePhase.FAILED
    assert refused.reason is FailureReason.SIGNATURE
    assert "no trusted repository" in refused.detail
    assert refused.generation == 1
