"""The agent's queue of ``reported`` payloads: every phase in order, none lost to a broken session."""

from __future__ import annotations

import pytest

from bmsgate.errors import SinkError
from bmsgate.fleet.agent.desired import REPORTED_QUEUE, ReportedOutbox


class _Session:
    """Publishes into a list; fails once on request (a connection lost before the PUBACK)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.fail_on: bytes | None = None

    async def publish(self, payload: bytes) -> None:
        if payload == self.fail_on:
            self.fail_on = None
            raise SinkError("connection lost", sink="fleet")
        self.sent.append(payload)


async def test_reports_leave_in_order_and_only_once_acknowledged() -> None:
    wakes: list[None] = []
    outbox = ReportedOutbox(lambda: wakes.append(None))
    session = _Session()
    for phase in (b"downloading", b"verified", b"staged"):
        outbox.put(phase)
    assert len(wakes) == 3
    session.fail_on = b"verified"
    with pytest.raises(SinkError):
        await outbox.send(session.publish)
    assert session.sent == [b"downloading"]
    outbox.reconnected()  # still queued: those go, not a repeat of the newest
    await outbox.send(session.publish)
    assert session.sent == [b"downloading", b"verified", b"staged"]
    outbox.reconnected()  # nothing queued: the newest again (the broker may have lost it with its session)
    await outbox.send(session.publish)
    await outbox.send(session.publish)
    assert session.sent[-2:] == [b"staged", b"staged"]
    assert len(session.sent) == 4


async def test_offline_the_oldest_give_way_and_the_newest_stays() -> None:
    outbox = ReportedOutbox(lambda: None)
    session = _Session()
    for index in range(REPORTED_QUEUE + 5):
        outbox.put(b"%d" % index)
    await outbox.send(session.publish)
    assert len(session.sent) == REPORTED_QUEUE
    assert session.sent[-1] == b"%d" % (REPORTED_QUEUE + 4)
    assert outbox.latest == session.sent[-1]
