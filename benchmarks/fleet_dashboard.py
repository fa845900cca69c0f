"""The dashboard at fleet scale: API response times and sizes, and first paint / search latency in Chromium.

For each fleet size (default 1,000, 10,000 and 50,000 sites): seeds a real store (SQLite, or PostgreSQL
with ``--postgres``; one state and one telemetry message per site, ``seed_fleet(templated=True)``),
serves the real API on uvicorn and prints

* the overview read model's first full read (what a server start costs before the first page), and one
  full store read in the full and in the summary form;
* ``GET /api/v1/overview`` (first page of 100, default order), a search (``q=``, five different words), the
  fleet counts, the map for the whole country (clustered) and for one town (single sites), and the old
  every-summary-at-once ``GET /api/v1/gateways?summary=true`` for comparison: p50 / p99 and body size;
* with SQLite only (the browser does not care about the backend): a fresh page in Debian's headless
  Chromium (token already in sessionStorage): first paint and first contentful paint (Paint Timing) and
  the time until the first page of rows is drawn, from navigation start; a search: from the input event
  until the new rows are drawn and the next frame painted, p50 / p99 over five words and several loads;
  the map page: from the route change until its markers are drawn.

With ``--live R``, R gateway updates per second go through the live feed meanwhile (as ingest announces
telemetry, with each gateway's readings: 5,000/s is 50,000 gateways at 10 s; one in a hundred a gateway
update the stream reads from the store): the read model applies the telemetry, the stream reads the other
changed gateways, and the read model re-sorts and re-counts (at most once a second beyond 5,000 gateways),
so the figures include that work. Also printed: how late the event loop woke (10 ms ticks) and the garbage
collections meanwhile (what stops every thread).

Targets (issue 18): search ≤ 200 ms, first paint ≤ 1 s at 50,000 sites.

Usage: python benchmarks/fleet_dashboard.py [--sites 1000 10000 50000] [--requests 30] [--loads 3]
       [--postgres URL|auto] [--live 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright

from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.server.ingest import tune_gc_for_ingest
from bmsgate.fleet.server.live import LiveKind, LiveUpdate
from bmsgate.fleet.server.store import StoreSettings
from bmsgate.fleet.server.store.repository import GatewayRecord

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UNLIMITED = ApiSettings(
    token_limit=RateLimit(per_minute=1e6, burst=100_000), anonymous_limit=RateLimit(per_minute=1e6, burst=100_000)
)
SEARCHES = ["durban", "site-0042", "0.2.0", "springbok 01", "zzz-nothing"]
_SEARCH_IN_PAGE = """(word) => new Promise((done) => {
    const search = document.getElementById("search");
    const before = Number(document.body.dataset.drawn || 0);
    const started = performance.now();
    const finish = () => requestAnimationFrame(() => setTimeout(() => done(performance.now() - started), 0));
    const watcher = new MutationObserver(() => {
        if (Number(document.body.dataset.drawn || 0) > before) {
            watcher.disconnect();
            finish();
        }
    });
    watcher.observe(document.body, { attributes: true, attributeFilter: ["data-drawn"] });
    search.value = word;
    search.dispatchEvent(new Event("input"));
})"""


class Stalls:
    """Where a request's time goes besides its own work: the event loop's lateness and garbage collections.

    A task wakes every 10 ms and records how late it woke (the loop was busy, or another thread held the
    GIL); :mod:`gc`'s callbacks time each collection (every thread stops for it).
    """

    def __init__(self) -> None:
        self.loop_late: list[float] = []
        self.collections: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started: float | None = None

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.collections[info["generation"]].append(time.perf_counter() - self._started)
            self._started = None

    async def watch(self) -> None:
        gc.callbacks.append(self._collecting)
        try:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                self.loop_late.append(time.perf_counter() - before - 0.01)
        finally:
            gc.callbacks.remove(self._collecting)

    def report(self) -> str:
        late = self.loop_late or [0.0]
        full = self.collections[2] or [0.0]
        return (
            f"event loop late p50 {statistics.median(late) * 1000:.1f} / p99 {percentile(late, 0.99) * 1000:.0f} / "
            f"max {max(late) * 1000:.0f} ms; full collections {len(self.collections[2])}, longest "
            f"{max(full) * 1000:.0f} ms; young ones {len(self.collections[0]) + len(self.collections[1])}"
        )


async def per_changed_gateway(fleet: RunningFleet, count: int = 1250) -> dict[str, float]:
    """CPU per changed gateway of the live stream's three ways to refresh a summary (best of 5, `count` at once).

    A full record read and summary build (before), the summary read and build (other changes now), and
    telemetry applied in place by the read model (telemetry now). Process CPU time: the reads run in the
    store's thread.
    """
    cache = OverviewCache(fleet.store)
    await cache.warm()
    ids = sorted(entry.view.id for entry in await cache.entries())[:: max(1, len(await cache.entries()) // count)]
    ids = ids[:count]
    now = time.time()
    readings = [
        (record.id, {**telemetry_data(record), "at": now, "received": now})
        for record in await fleet.store.get_gateways(ids)
    ]

    async def full() -> None:
        await cache.update_many(await fleet.store.get_gateways(ids))

    async def summary() -> None:
        await cache.update_many(await fleet.store.get_gateway_summaries(ids))

    async def applied() -> None:
        declined = sum(not cache.apply_telemetry(gateway, data) for gateway, data in readings)
        if declined:
            raise SystemExit(f"{declined} readings were not applied in place")

    figures = {}
    for name, way in (
        ("full read + summary", full),
        ("summary read + summary", summary),
        ("applied in place", applied),
    ):
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            await way()
            best = min(best, time.process_time() - started)
        figures[name] = best / len(ids)
    await cache.close()
    return figures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def api_latency(fleet: RunningFleet, paths: list[str], requests: int) -> tuple[float, float, int]:
    """p50 and p99 in ms over `requests` rounds of `paths`, and the largest body in bytes."""
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.viewer}"}) as http:
        for path in paths:
            (await http.get(path, timeout=120)).raise_for_status()  # warm-up
        times = []
        size = 0
        for _ in range(requests):
            for path in paths:
                started = time.perf_counter()
                answer = await http.get(path, timeout=120)
                times.append(time.perf_counter() - started)
                answer.raise_for_status()
                size = max(size, len(answer.content))
    return statistics.median(times) * 1000, percentile(times, 0.99) * 1000, size


async def browser_figures(fleet: RunningFleet, loads: int) -> dict[str, float]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        figures: dict[str, list[float]] = {"fp": [], "fcp": [], "rows": [], "search": [], "map": []}
        for _ in range(loads):
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.add_init_script(f"sessionStorage.setItem('bmsgate.token', {fleet.viewer!r})")
            await page.goto(fleet.url + "/")
            await page.wait_for_selector("body[data-ready=overview]", state="attached", timeout=60_000)
            paints = await page.evaluate(
                "Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]))"
            )
            figures["fp"].append(paints.get("first-paint", float("nan")))
            figures["fcp"].append(paints.get("first-contentful-paint", float("nan")))
            figures["rows"].append(float(await page.evaluate("Number(document.body.dataset.readyAt)")))
            for word in SEARCHES:
                figures["search"].append(float(await page.evaluate(_SEARCH_IN_PAGE, word)))
            started = time.perf_counter()
            await page.evaluate("location.hash = '#/map'")
            await page.wait_for_selector("body[data-ready=map]", state="attached", timeout=60_000)
            figures["map"].append((time.perf_counter() - started) * 1000)
            await page.close()
        await browser.close()
    return {
        "fp": statistics.median(figures["fp"]),
        "fcp": statistics.median(figures["fcp"]),
        "rows": statistics.median(figures["rows"]),
        "rows_max": max(figures["rows"]),
        "search_p50": statistics.median(figures["search"]),
        "search_p99": percentile(figures["search"], 0.99),
        "search_n": len(figures["search"]),
        "map": statistics.median(figures["map"]),
    }


@contextlib.contextmanager
def postgres_database(wanted: str | None) -> Iterator[str | None]:
    """A PostgreSQL URL: the one given, a throwaway cluster for ``auto``, or None (SQLite)."""
    if wanted != "auto":
        yield wanted
        return
    from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries

    binaries = _postgres_binaries()
    if binaries is None:
        raise SystemExit("--postgres auto needs the PostgreSQL server binaries (apt-get install postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-bench-pg-"))
    cluster = PostgresCluster(binaries, directory)
    try:
        cluster.start()
        yield cluster.url("postgres")
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def telemetry_data(record: GatewayRecord) -> dict[str, Any]:
    """What ingest puts on the live feed for a telemetry message of this gateway (its stored readings again)."""
    batteries = {
        battery.id: {"age_s": battery.age_s, "stale": False, "snapshot": battery.snapshot}
        for battery in record.batteries
        if battery.snapshot is not None
    }
    return {"at": 0.0, "received": 0.0, "backfill": False, "batteries": batteries, "inverter": record.inverter}


async def live_updates(fleet: RunningFleet, records: list[GatewayRecord], rate: float) -> None:
    """Announce `rate` gateway updates per second on the live feed, round-robin over the fleet, until cancelled.

    As ingest does: telemetry with each gateway's readings and the receive time; one update in a hundred is a
    gateway update instead (a state or availability message: read from the store by the live stream).
    """
    # One reading per set of battery ids, shared (a templated fleet's sites share readings anyway): the
    # benchmark must not keep 50,000 gateways' snapshots alive itself, every collection would walk them.
    shared: dict[tuple[str, ...], dict[str, Any]] = {}
    templates = []
    for record in records:
        batteries = tuple(battery.id for battery in record.batteries if battery.snapshot is not None)
        templates.append((record.id, shared.setdefault(batteries, telemetry_data(record))))
    del records  # the caller lets go of them too
    index = 0
    started = time.perf_counter()
    sent = 0
    while True:
        due = int((time.perf_counter() - started) * rate) - sent
        now = time.time()
        for _ in range(due):
            gateway, data = templates[index % len(templates)]
            if index % 100 == 99:
                update = LiveUpdate(kind=LiveKind.GATEWAY, gateway=gateway, at=now, data={"online": True})
            else:
                update = LiveUpdate(
                    kind=LiveKind.TELEMETRY, gateway=gateway, at=now, data={**data, "at": now, "received": now}
                )
            fleet.feed.publish(update)
            index += 1
        sent += due
        await asyncio.sleep(0.02)


async def one_size(sites: int, arguments: argparse.Namespace, postgres: str | None, cluster_db: int) -> None:
    store = None
    if postgres is not None:
        if arguments.postgres == "auto":
            import psycopg

            name = f"bench_{cluster_db}"
            with psycopg.connect(postgres, autocommit=True) as connection:
                connection.execute(f"CREATE DATABASE {name}")
            postgres = postgres.rsplit("/", 1)[0] + f"/{name}"
        store = StoreSettings(postgres_url=postgres)
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        async with running_fleet(
            Path(directory), sites=sites, history=1, settings=UNLIMITED, templated=True, store_settings=store
        ) as fleet:
            seeded = time.perf_counter() - started
            # The server warmed the read model at start; time a full read of its own (what each re-read costs).
            await asyncio.sleep(0)
            read_started = time.perf_counter()
            records = await fleet.store.list_gateways()
            full_read = time.perf_counter() - read_started
            read_started = time.perf_counter()
            await fleet.store.list_gateway_summaries()
            summary_read = time.perf_counter() - read_started
            read_model = OverviewCache(fleet.store)
            while_reading = Stalls()
            watching = asyncio.create_task(while_reading.watch())
            read_started = time.perf_counter()
            await read_model.warm()  # what a server start costs before the first page: read and prepare
            first_read = time.perf_counter() - read_started
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            del read_model
            requests = arguments.requests
            updates = asyncio.create_task(live_updates(fleet, records, arguments.live)) if arguments.live > 0 else None
            stalls = Stalls()
            watching = asyncio.create_task(stalls.watch())
            rows = [
                ("overview, first page of 100", ["/api/v1/overview"], requests),
                ("overview search (5 words)", [f"/api/v1/overview?q={word}" for word in SEARCHES], requests // 5 or 1),
                ("overview, sorted by SoC desc", ["/api/v1/overview?sort=soc&descending=true"], requests),
                ("fleet counts", ["/api/v1/overview/counts"], requests),
                ("map, whole fleet, zoom 5", ["/api/v1/overview/map?zoom=5"], requests),
                (
                    "map, one town, zoom 10",
                    ["/api/v1/overview/map?zoom=10&south=-30&west=30.5&north=-29.5&east=31.5"],
                    requests,
                ),
                ("every summary (old, for comparison)", ["/api/v1/gateways?summary=true"], max(3, requests // 10)),
            ]
            del records  # only the templates are kept
            timings = [(label, await api_latency(fleet, paths, count)) for label, paths, count in rows]
            page = await browser_figures(fleet, arguments.loads) if store is None else None
            for task in (updates, watching):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            refresh = await per_changed_gateway(fleet)  # its own full read is not part of the stalls above
    backend = "PostgreSQL" if store is not None else "SQLite"
    live = f"; {arguments.live:,.0f} live updates/s" if arguments.live > 0 else ""
    reads = f"one full store read {full_read:.1f} s, in the summary form {summary_read:.1f} s"
    print(f"\n{sites:,} sites, {backend} (seeded in {seeded:.1f} s; {reads}{live})")
    read_late = max(while_reading.loop_late or [0.0]) * 1000
    print(f"  the read model's first full read (server start): {first_read:.1f} s (loop late ≤ {read_late:.0f} ms)")
    for label, (p50, p99, size) in timings:
        print(f"  {label:38s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  {size / 1e3:9.1f} kB")
    print(f"  meanwhile: {stalls.report()}")
    ways = ", ".join(f"{name} {cpu * 1e6:.0f} us" for name, cpu in refresh.items())
    print(f"  a changed gateway's summary, CPU: {ways}")
    if page is not None:
        print(f"  Chromium first paint                   {page['fp']:7.0f} ms")
        print(f"  Chromium first contentful paint        {page['fcp']:7.0f} ms")
        rows_max = f"(max {page['rows_max']:.0f} ms, {arguments.loads} loads)"
        print(f"  first page of rows drawn               {page['rows']:7.0f} ms  {rows_max}")
        search = f"p50 {page['search_p50']:5.0f} ms  p99 {page['search_p99']:5.0f} ms  ({page['search_n']} searches)"
        print(f"  search: input -> new rows painted      {search}")
        print(f"  map page: route -> markers drawn       {page['map']:7.0f} ms")


async def main() -> None:
    tune_gc_for_ingest()  # as `fleet serve` does in its process (the figures are that process's)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--loads", type=int, default=3, help="page loads per size")
    parser.add_argument("--live", type=float, default=0.0, help="gateway updates per second on the live feed")
    parser.add_argument("--postgres", help="a PostgreSQL URL, or 'auto' for a throwaway cluster (API figures only)")
    arguments = parser.parse_args()
    with postgres_database(arguments.postgres) as postgres:
        for number, sites in enumerate(arguments.sites):
            await one_size(sites, arguments, postgres, number)


if __name__ == "__main__":
    asyncio.run(main())
