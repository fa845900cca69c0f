"""Fleet ingest: every gateway's messages from the broker into the store (see :mod:`.consumer`).

:class:`Ingest` is one consumer in this process; :class:`IngestWorkers` runs several in their own processes
(``fleet serve --ingest-workers N``) and brings their committed batches back to this one for the live feed
and the alarm engine (see :mod:`.workers`).
"""

from __future__ import annotations

from bmsgate.fleet.server.ingest.consumer import (
    BatchObserver,
    Ingest,
    IngestCounters,
    IngestSettings,
    batch_of_messages,
    decode_incoming,
    publish_batch,
    refuse_future,
    tune_gc_for_ingest,
)
from bmsgate.fleet.server.ingest.sources import IngestSource, MqttSource
from bmsgate.fleet.server.ingest.workers import IngestWorkers

__all__ = [
    "BatchObserver",
    "Ingest",
    "IngestCounters",
    "IngestSettings",
    "IngestSource",
    "IngestWorkers",
    "MqttSource",
    "batch_of_messages",
    "decode_incoming",
    "publish_batch",
    "refuse_future",
    "tune_gc_for_ingest",
]
