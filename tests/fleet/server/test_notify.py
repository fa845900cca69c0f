"""Alarm notifications to a real local HTTP receiver and a real local SMTP server; failures retried and recorded."""

from __future__ import annotations

import asyncio
import email
import http.server
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from bmsgate.fleet.server.notify import Notifier, NotifySettings, SmtpSettings
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import AlarmAction, AlarmRecord, NewAlarm, Severity
from bmsgate.mqtt.broker import free_port
from tests.fleet.server.store.messages import T0


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]
    fail_first: int

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).bodies.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"bodies": [], "fail_first": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, _Mailbox]]:
    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@pytest.fixture
async def store_with_alarm(tmp_path: Path) -> AsyncIterator[tuple[Repository, AlarmRecord]]:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    alarm, _ = await store.open_alarm(
        NewAlarm(gateway="gw-1", battery="b1", kind="cell_drift", severity=Severity.WARNING, message="drift", at=T0)
    )
    yield store, alarm
    await store.close()


async def _drain(notifier: Notifier, done: int) -> None:
    task = asyncio.create_task(notifier.run())
    try:
        async with asyncio.timeout(20):
            while notifier.sent + notifier.failed < done:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_webhook_and_email_are_sent_and_recorded(
    webhook: tuple[str, type[_Receiver]],
    smtp_server: tuple[int, _Mailbox],
    store_with_alarm: tuple[Repository, AlarmRecord],
) -> None:
    url, receiver = webhook
    receiver.fail_first = 2  # the receiver is briefly down: retried
    port, mailbox = smtp_server
    store, alarm = store_with_alarm
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", sender="fleet@test", recipients=["ops@test"])
    notifier = Notifier(NotifySettings(webhooks=[url], smtp=smtp, retry_initial_s=0.05, retry_max_s=0.1), store)
    notifier.notify(alarm, "opened")
    notifier.notify(alarm, "acknowledged")  # not in the default actions: not sent
    await _drain(notifier, 2)
    assert (notifier.sent, notifier.failed) == (2, 0)
    (body,) = receiver.bodies
    assert body["action"] == "opened"
    assert body["alarm"]["kind"] == "cell_drift"
    assert body["alarm"]["severity"] == "warning"
    (mail,) = mailbox.messages
    assert "cell_drift" in mail["Subject"]
    assert mail["To"] == "ops@test"
    history = await store.alarm_history(alarm.id)
    assert [entry.action for entry in history].count(AlarmAction.NOTIFIED) == 2


async def test_an_unreachable_webhook_is_bounded_and_recorded(store_with_alarm: tuple[Repository, AlarmRecord]) -> None:
    store, alarm = store_with_alarm
    url = f"http://127.0.0.1:{free_port()}/nobody"
    settings = NotifySettings(webhooks=[url], attempts=3, retry_initial_s=0.01, retry_max_s=0.02, timeout_s=1)
    notifier = Notifier(settings, store)
    notifier.notify(alarm, "opened")
    await _drain(notifier, 1)
    assert notifier.failed == 1
    history = await store.alarm_history(alarm.id)
    failed = [entry for entry in history if entry.action is AlarmAction.NOTIFY_FAILED]
    assert len(failed) == 1
    assert "after 3 attempts" in failed[0].detail


def test_the_queue_is_bounded(store_with_alarm: tuple[Repository, AlarmRecord]) -> None:
    _, alarm = store_with_alarm
    notifier = Notifier(NotifySettings(webhooks=["http://127.0.0.1:9/"], queue_limit=3))
    for _ in range(5):
        notifier.notify(alarm, "opened")
    assert notifier.dropped == 2


def test_without_targets_nothing_is_queued(store_with_alarm: tuple[Repository, AlarmRecord]) -> None:
    _, alarm = store_with_alarm
    notifier = Notifier(NotifySettings())
    notifier.notify(alarm, "opened")
    assert not notifier.enabled
    assert notifier.dropped == 0


@pytest.fixture
def garbage_http() -> Iterator[str]:
    """A server that answers every request with something that is not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(b"garbage response\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join()
        listener.close()


async def test_a_malformed_http_answer_is_a_recorded_failure_and_the_notifier_goes_on(
    garbage_http: str, store_with_alarm: tuple[Repository, AlarmRecord]
) -> None:
    store, alarm = store_with_alarm
    settings = NotifySettings(webhooks=[garbage_http], attempts=2, retry_initial_s=0.01, retry_max_s=0.02)
    notifier = Notifier(settings, store)
    notifier.notify(alarm, "opened")
    notifier.notify(alarm, "closed")
    await _drain(notifier, 2)
    assert (notifier.sent, notifier.failed) == (0, 2)
    history = await store.alarm_history(alarm.id)
    failed = [entry.detail for entry in history if entry.action is AlarmAction.NOTIFY_FAILED]
    assert len(failed) == 2
    assert "BadStatusLine" in failed[0]


async def test_an_unexpected_error_in_one_delivery_does_not_end_the_notifier(
    webhook: tuple[str, type[_Receiver]],
    store_with_alarm: tuple[Repository, AlarmRecord],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, receiver = webhook
    store, alarm = store_with_alarm
    notifier = Notifier(NotifySettings(webhooks=[url], attempts=1), store)
    real_body = notifier._body
    calls = 0

    def body_failing_once(job: Any) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in building the first body")
        return real_body(job)

    monkeypatch.setattr(notifier, "_body", body_failing_once)
    notifier.notify(alarm, "opened")
    notifier.notify(alarm, "closed")
    await _drain(notifier, 2)
    assert (notifier.sent, notifier.failed) == (1, 1)
    assert [body["action"] for body in receiver.bodies] == ["closed"]
    assert "failed unexpectedly" in caplog.text
    history = await store.alarm_history(alarm.id)
    assert any("RuntimeError" in entry.detail for entry in history if entry.action is AlarmAction.NOTIFY_FAILED)
