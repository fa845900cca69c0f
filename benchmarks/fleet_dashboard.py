"""Dashboard overview load time in Chromium and /api/v1/gateways latency, at 1,000 and 10,000 sites.

For each fleet size: seeds a real SQLite store (one state and one telemetry message per site, 1/3 of them
with two packs) and serves the real API on uvicorn; then

* ``GET /api/v1/gateways?summary=true`` (the dashboard's one fetch) and ``GET /api/v1/gateways`` (with every
  battery snapshot): p50 / p95 over repeated requests, and the body size;
* a fresh page in Debian's headless Chromium (token already in sessionStorage): first paint and first
  contentful paint (the browser's Paint Timing entries), and the time until the overview's rows are drawn
  (fetch + sort + first render), from navigation start;
* time to a filtered result: typing a search word until the next frame is painted, p50 / max over a few
  words.

Target (issue 15): first paint ≤ 1 s at 10,000 sites.

Usage: python benchmarks/fleet_dashboard.py [--sites 1000 10000] [--requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet

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


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def api_latency(fleet: RunningFleet, path: str, requests: int) -> tuple[float, float, int]:
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.viewer}"}) as http:
        await http.get(path)  # warm-up
        times = []
        size = 0
        for _ in range(requests):
            started = time.perf_counter()
            answer = await http.get(path, timeout=60)
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
            size = len(answer.content)
    return statistics.median(times) * 1000, percentile(times, 0.95) * 1000, size


async def browser_figures(fleet: RunningFleet, runs: int) -> dict[str, float]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        figures: dict[str, list[float]] = {"fp": [], "fcp": [], "rows": [], "filter": []}
        for _ in range(runs):
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
                elapsed = await page.evaluate(
                    """(word) => new Promise((done) => {
                        const search = document.getElementById("search");
                        const started = performance.now();
                        search.value = word;
                        search.dispatchEvent(new Event("input"));
                        requestAnimationFrame(() => setTimeout(() => done(performance.now() - started), 0));
                    })""",
                    word,
                )
                figures["filter"].append(float(elapsed))
            await page.close()
        await browser.close()
    return {
        "fp": statistics.median(figures["fp"]),
        "fcp": statistics.median(figures["fcp"]),
        "rows": statistics.median(figures["rows"]),
        "rows_max": max(figures["rows"]),
        "filter_p50": statistics.median(figures["filter"]),
        "filter_max": max(figures["filter"]),
    }


async def one_size(sites: int, requests: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        async with running_fleet(Path(directory), sites=sites, history=1, settings=UNLIMITED) as fleet:
            seeded = time.perf_counter() - started
            summary = await api_latency(fleet, "/api/v1/gateways?summary=true", requests)
            full = await api_latency(fleet, "/api/v1/gateways", max(3, requests // 4))
            page = await browser_figures(fleet, runs)
    print(f"\n{sites:,} sites (seeded in {seeded:.1f} s)")
    for label, (p50, p95, size) in (("?summary=true", summary), (" (snapshots)  ", full)):
        print(f"  GET /api/v1/gateways{label}  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {size / 1e6:.2f} MB")
    print(f"  Chromium first paint              {page['fp']:7.0f} ms")
    print(f"  Chromium first contentful paint   {page['fcp']:7.0f} ms")
    print(f"  overview rows drawn               {page['rows']:7.0f} ms  (max {page['rows_max']:.0f} ms, {runs} loads)")
    print(f"  filtered result painted           {page['filter_p50']:7.1f} ms  (max {page['filter_max']:.1f} ms)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--loads", type=int, default=3, help="page loads per size")
    arguments = parser.parse_args()
    for sites in arguments.sites:
        await one_size(sites, arguments.requests, arguments.loads)


if __name__ == "__main__":
    asyncio.run(main())
