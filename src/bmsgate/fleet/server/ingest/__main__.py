"""``python -m bmsgate.fleet.server.ingest``: one ingest worker process (started by :class:`IngestWorkers`)."""

from __future__ import annotations

from bmsgate.fleet.server.ingest.workers import main

main()
