"""Alarm notifications: a JSON webhook (HTTP POST) and optional e-mail (SMTP), never in ingest's way.

:meth:`Notifier.notify` only queues (bounded: when full the oldest waiting notification is dropped and
counted). A worker sends each one to every target with retries and backoff, bounded in attempts and time
per attempt; the outcome lands in the alarm's history (``notified`` / ``notify_failed``). Both transports
are the standard library (``urllib``, ``smtplib``) run in a thread.

The webhook body::

    {"event": "alarm", "action": "opened", "alarm": {...alarm JSON form...}, "server": "<name>"}
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http.client
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bmsgate.fleet.server.store.repository import AlarmAction, AlarmRecord, Repository, StoreError, UnknownRecord
from bmsgate.runtime.backoff import Backoff

__all__ = ["NotifySettings", "Notifier", "SmtpSettings"]

_log = logging.getLogger(__name__)
_USER_AGENT: Final = "bmsgate-fleet"


class SmtpSettings(BaseModel):
    """Where alarm e-mails go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: list[str] = Field(min_length=1)


class NotifySettings(BaseModel):
    """Notification targets and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[str] = []
    """URLs that receive a POST with the alarm as JSON."""
    smtp: SmtpSettings | None = None
    actions: list[Literal["opened", "acknowledged", "closed"]] = ["opened", "closed"]
    """Which alarm changes are sent."""
    server_name: str = "bmsgate fleet"
    queue_limit: int = Field(default=1000, ge=1)
    attempts: int = Field(default=5, ge=1, le=20)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Per attempt."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    alarm: AlarmRecord
    action: str


class Notifier:
    """Queues alarm notifications and sends them; ``await run()`` until cancelled."""

    def __init__(self, settings: NotifySettings, store: Repository | None = None) -> None:
        self.settings = settings
        self.store = store
        self._queue: collections.deque[_Job] = collections.deque(maxlen=settings.queue_limit)
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        """Notifications dropped unsent because the queue was full."""

    @property
    def enabled(self) -> bool:
        """Whether any target is configured."""
        return bool(self.settings.webhooks or self.settings.smtp)

    def notify(self, alarm: AlarmRecord, action: str) -> None:
        """Queue a notification (never blocks)."""
        if not self.enabled or action not in self.settings.actions:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            _log.warning("notifications: queue full, dropping the oldest")
        self._queue.append(_Job(alarm, action))
        self._wake.set()

    async def run(self) -> None:
        """Send queued notifications until cancelled; one notification that fails in any way never ends it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                job = self._queue.popleft()
                try:
                    await self._deliver(job)
                except Exception as exc:  # noqa: BLE001 - a bug in one delivery must not stop every later one
                    _log.error("notification of alarm %d failed unexpectedly", job.alarm.id, exc_info=exc)
                    await self._history(job, AlarmAction.NOTIFY_FAILED, f"{job.action}: {type(exc).__name__}: {exc}")
                    self.failed += 1

    def _body(self, job: _Job) -> dict[str, object]:
        return {
            "event": "alarm",
            "action": job.action,
            "alarm": job.alarm.to_dict(),
            "server": self.settings.server_name,
        }

    async def _deliver(self, job: _Job) -> None:
        body = self._body(job)
        targets: list[tuple[str, object]] = [(f"webhook {url}", url) for url in self.settings.webhooks]
        if self.settings.smtp is not None:
            targets.append((f"e-mail to {', '.join(self.settings.smtp.recipients)}", self.settings.smtp))
        for label, target in targets:
            error = await self._attempts(body, target)
            # Counted once its outcome is recorded: whoever sees the counter move finds the history written.
            if error is None:
                await self._history(job, AlarmAction.NOTIFIED, f"{job.action}: {label}")
                self.sent += 1
            else:
                _log.warning("notification failed: %s: %s", label, error)
                await self._history(job, AlarmAction.NOTIFY_FAILED, f"{job.action}: {label}: {error}")
                self.failed += 1

    async def _attempts(self, body: dict[str, object], target: object) -> str | None:
        backoff = Backoff(self.settings.retry_initial_s, max(self.settings.retry_max_s, self.settings.retry_initial_s))
        error = ""
        for attempt in range(self.settings.attempts):
            try:
                if isinstance(target, SmtpSettings):
                    await asyncio.to_thread(self._send_mail, target, body)
                else:
                    await asyncio.to_thread(self._post, str(target), body)
            except (OSError, http.client.HTTPException, smtplib.SMTPException, ValueError) as exc:
                # HTTPException: a malformed answer (BadStatusLine, IncompleteRead) is not an OSError.
                error = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < self.settings.attempts:
                    await asyncio.sleep(backoff.next_delay())
                continue
            return None
        return f"{error} (after {self.settings.attempts} attempts)"

    def _post(self, url: str, body: dict[str, object]) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url}")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
            if response.status >= 300:
                raise OSError(f"HTTP {response.status}")

    def _send_mail(self, smtp: SmtpSettings, body: dict[str, object]) -> None:
        alarm = body["alarm"]
        assert isinstance(alarm, dict)
        message = EmailMessage()
        message["From"] = smtp.sender
        message["To"] = ", ".join(smtp.recipients)
        server = self.settings.server_name
        message["Subject"] = (
            f"[{server}] {alarm['severity']} alarm {body['action']}: {alarm['gateway']} {alarm['kind']}"
        )
        opened = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(alarm["opened_at"])))
        message.set_content(
            f"{alarm['message']}\n\nGateway: {alarm['gateway']}\nBattery: {alarm['battery'] or '-'}\n"
            f"State: {alarm['state']}\nOpened: {opened}\n\n{json.dumps(body, indent=2)}\n"
        )
        timeout = self.settings.timeout_s
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if smtp.username is not None:
                client.login(smtp.username, smtp.password.get_secret_value() if smtp.password else "")
            client.send_message(message)

    async def _history(self, job: _Job, action: AlarmAction, detail: str) -> None:
        if self.store is None:
            return
        try:
            await self.store.add_alarm_history(job.alarm.id, time.time(), action, detail=detail[:1000])
        except UnknownRecord:
            pass  # the alarm was deleted meanwhile
        except StoreError as exc:
            _log.warning("notifications: could not record the outcome: %s", exc)
