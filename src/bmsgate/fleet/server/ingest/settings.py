"""How one ingest consumer connects and batches (:class:`IngestSettings`)."""

from __future__ import annotations

import dataclasses

__all__ = ["IngestSettings"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class IngestSettings:
    """How ingest connects and batches."""

    client_id: str = "bmsgate-fleet-ingest"
    """Fixed, so the broker keeps this consumer's session (and queues for it) across reconnects."""
    share_group: str | None = None
    """Subscribe telemetry and events as ``$share/<group>/...`` (several ingest processes)."""
    max_batch: int = 1000
    """Messages per store transaction at most."""
    max_delay_s: float = 0.5
    """A batch is written at the latest this long after its first message."""
    queue_limit: int = 20_000
    """Decoded messages waiting for the store; beyond it ingest stops taking messages from the broker (what
    the broker already sent waits in memory: its in-flight window bounds that)."""
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    retained_channels: bool = True
    """Subscribe availability and state too (plain subscriptions: each subscriber gets every one). Of several
    ingest workers only one does; the others read only the shared telemetry and events."""
    future_tolerance_s: float = 300.0
    """A state, telemetry or event timed further ahead of the server's clock is refused (``future``): the
    latest view keeps the newest time, so one message from a gateway clock in the year 3000 would freeze it.
    Past times are fine (backfill; a Pi without a real-time clock boots in the past)."""
