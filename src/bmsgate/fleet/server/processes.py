"""``fleet serve --cluster ... --processes N``: N server processes behind one address, supervised.

The parent (:class:`ServerProcesses`) migrates the store and makes the first admin token once, then starts
N children (``python -m bmsgate.fleet.server.processes``), each told its settings with its
``process_index`` (pickled on standard input). Each child is a whole :class:`~.service.FleetServer` in
cluster mode:

- its HTTP (and pack repository) listener binds the shared port with ``SO_REUSEPORT``, so one address
  serves them all and the kernel spreads new connections over the processes that are alive;
- its ingest reads the shared JetStream consumer (the consumer hands each message to one process) and
  publishes each committed batch to every process (:mod:`.nats_broadcast`), whose live feed and, in the
  leader, alarm engine take it;
- the singletons (alarm evaluation and notifications, rollouts, TUF re-signing, store maintenance) run in
  the one process holding the PostgreSQL leader lock (:mod:`.leadership`).

A child that dies is started again (with a growing pause if it keeps dying); cancelling :meth:`run`
(SIGTERM/SIGINT in the command) stops them all, each with SIGTERM and a grace period. A child also stops
when its standard input closes, so children never outlive a parent that was killed.

A child that hangs without dying (stopped, deadlocked, its event loop stuck) would keep its share of the
port's new connections and never answer them: the parent probes each child every ``probe_interval_s``
over its standard input (:func:`~.children.probe`; the child answers from the event loop that serves its
HTTP), and SIGKILLs one that has not answered for ``hung_after_s`` (``start_timeout_s`` before it reported
its address: the first read of a large fleet takes a while); it is then started again like a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.server.children import answer_probes, probe, read_settings, send_settings, stop_child
from bmsgate.fleet.server.datadir import DataDir
from bmsgate.fleet.server.ingest import tune_gc_for_ingest
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.server.store import open_store
from bmsgate.fleet.server.store.settings import StoreSettings
from bmsgate.runtime.backoff import Backoff

__all__ = ["ServerProcesses", "main"]

_log = logging.getLogger(__name__)
_STOP_GRACE_S: Final = 15.0
_STEADY_S: Final = 60.0
"""A child that ran this long before it died is restarted without the growing pause."""


class ServerProcessError(BmsgateError):
    """A server process could not be started or said something unreadable."""


class ServerProcesses:
    """Starts and supervises ``settings.processes`` server processes; ``await run()`` until cancelled."""

    def __init__(
        self,
        settings: FleetServerSettings,
        *,
        restart_initial_s: float = 0.5,
        probe_interval_s: float = 1.0,
        hung_after_s: float = 10.0,
        start_timeout_s: float = 180.0,
    ) -> None:
        """Prepare to supervise (nothing starts before :meth:`run`).

        Args:
            settings: every process's settings (each is told its ``process_index``).
            restart_initial_s: the first pause before a stopped process is started again (it grows).
            probe_interval_s: how often each process is probed.
            hung_after_s: a process that reported its address and has not answered a probe for this long
                is killed (and started again).
            start_timeout_s: the same bound before it reported its address.

        Raises:
            ServerProcessError: the settings are not cluster mode.
        """
        if not settings.cluster or not settings.postgres_url:
            raise ServerProcessError("several server processes need cluster mode (--cluster and --postgres)")
        self.settings = settings
        self.restart_initial_s = restart_initial_s
        self.probe_interval_s = probe_interval_s
        self.hung_after_s = hung_after_s
        self.start_timeout_s = start_timeout_s
        self.hung_kills = 0
        """Processes killed because they stopped answering probes."""
        self.pids: dict[int, int] = {}
        """Process index → pid of the processes running now."""
        self.urls: dict[int, str] = {}
        """Process index → the URL it serves (all the same address)."""
        self.restarts = 0
        self.ready = asyncio.Event()
        """Set once every process answered at least once."""
        self.admin_token: str | None = None
        """The first admin token, made by :meth:`prepare` on a fresh data directory (shown once)."""

    async def prepare(self) -> None:
        """What must happen once, before the processes race for it: the store's migration, the first token.

        Raises:
            StoreError: PostgreSQL cannot be reached or migrated.
        """
        data = DataDir.open(self.settings.data_dir)
        self.admin_token = data.ensure_admin_token()
        store = await open_store(StoreSettings(postgres_url=self.settings.postgres_url))
        await store.close()

    async def run(self) -> None:
        """Prepare, then run every process (restarting a dead one) until cancelled."""
        await self.prepare()
        async with asyncio.TaskGroup() as group:
            for index in range(self.settings.processes):
                group.create_task(self._keep_running(index), name=f"fleet-server-process-{index}")

    async def _keep_running(self, index: int) -> None:
        backoff = Backoff(self.restart_initial_s, 10.0)
        while True:
            started = time.monotonic()
            outcome: object
            try:
                outcome = f"exit status {await self._run_once(index)}"
            except (ServerProcessError, OSError) as exc:
                outcome = exc
            finally:
                self.pids.pop(index, None)
            _log.warning("fleet server process %d stopped (%s); starting it again", index, outcome)
            self.restarts += 1
            if time.monotonic() - started > _STEADY_S:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _run_once(self, index: int) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bmsgate.fleet.server.processes",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches this parent, which stops the children in order
        )
        assert process.stdin is not None
        assert process.stdout is not None
        self.pids[index] = process.pid
        life = _Life(time.monotonic())
        watchdog: asyncio.Task[None] | None = None
        try:
            await send_settings(process, self.settings.model_copy(update={"process_index": index, "processes": 1}))
            watchdog = asyncio.create_task(self._watch(index, process, life), name=f"fleet-server-probe-{index}")
            while line := await process.stdout.readline():
                self._heard(index, line, life)
            return await process.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            await stop_child(process, _STOP_GRACE_S)

    def _heard(self, index: int, line: bytes, life: _Life) -> None:
        try:
            report = json.loads(line)
            if "alive" in report:
                life.answered_at = time.monotonic()
                return
            self.urls[index] = str(report["url"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerProcessError(f"process {index} said {line[:200]!r}") from exc
        life.answered_at = time.monotonic()
        life.serving = True
        if len(self.urls) == self.settings.processes:
            self.ready.set()

    async def _watch(self, index: int, process: asyncio.subprocess.Process, life: _Life) -> None:
        """Probe the process; SIGKILL it once it has not answered within its bound (its stdout then ends)."""
        while process.returncode is None:
            probe(process)
            await asyncio.sleep(self.probe_interval_s)
            bound = self.hung_after_s if life.serving else self.start_timeout_s
            silent = time.monotonic() - life.answered_at
            if silent > bound and process.returncode is None:
                _log.error(
                    "fleet server process %d (pid %d) has not answered for %.1f s: killing it",
                    index,
                    process.pid,
                    silent,
                )
                self.hung_kills += 1
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                return


@dataclasses.dataclass(slots=True)
class _Life:
    """What the parent last heard from one run of a process."""

    answered_at: float
    serving: bool = False


async def _child() -> int:
    loop = asyncio.get_running_loop()
    told, reader = await read_settings()
    settings: FleetServerSettings = told
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def alive() -> None:
        sys.stdout.write('{"alive": true}\n')
        sys.stdout.flush()

    async def until_parent_leaves() -> None:
        await answer_probes(reader, alive)
        stop.set()

    watch = asyncio.create_task(until_parent_leaves())  # answered while the server starts, too

    async with FleetServer(settings) as running:
        sys.stdout.write(json.dumps({"url": running.url}) + "\n")
        sys.stdout.flush()
        stopping = asyncio.create_task(stop.wait())
        either: set[asyncio.Future[Any]] = {stopping, running.failure}
        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        stopping.cancel()
        if running.failure in done:
            _log.error("fleet server process stopped: %s", running.failure.result())
            return 1
    return 0


def main() -> None:
    """Run one server process (``python -m bmsgate.fleet.server.processes``, started by :class:`ServerProcesses`)."""
    logging.basicConfig(level=logging.WARNING, format="fleet server %(process)d: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bmsgate").setLevel(logging.INFO)
    for noisy in ("yoyo", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    tune_gc_for_ingest()
    sys.exit(asyncio.run(_child()))


if __name__ == "__main__":
    main()
