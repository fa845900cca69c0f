"""The MQTT adapter's housekeeping: paho's keep-alive runs on the shared tick grid and still keeps an idle
connection alive (a broker drops a client that sends nothing for 1.5 keep-alive periods)."""

from __future__ import annotations

import asyncio
from typing import Any

from bmsgate.mqtt.broker import EmbeddedBroker, free_port
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.cadence import TICK_TOLERANCE


async def test_an_idle_connection_pings_on_the_grid_and_stays_up() -> None:
    async with EmbeddedBroker(port=free_port(), prefer="mosquitto") as broker:
        settings = BrokerSettings(url=broker.url, keepalive=5)
        async with connect(settings, will_topic="test/idle/will", will_payload="gone", client_id="idle") as session:
            client = session._client
            misc_task = client._misc_task
            assert misc_task is not None
            coroutine: Any = misc_task.get_coro()
            assert "_housekeeping_on_grid" in coroutine.__qualname__
            paho = _paho(session)
            sent_before = paho._last_msg_out
            # Nothing is sent for longer than the keep-alive period: only the housekeeping sends (a PINGREQ),
            # and the broker's PINGRESP clears paho's pending ping.
            await asyncio.sleep(6.5)
            assert paho._last_msg_out > sent_before, "no ping was sent: the housekeeping did not run"
            assert paho._ping_t == 0, "the ping was not answered"
            assert not misc_task.done()
            # The connection is still usable.
            await session.publish("test/idle/after", "still here", retain=False)
            # The housekeeping sleeps until whole seconds of the loop's clock.
            loop = asyncio.get_running_loop()
            handles = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            assert any(abs(h.when() - round(h.when())) <= TICK_TOLERANCE for h in handles)


def _paho(session: MqttSession) -> Any:
    return session._client._client
