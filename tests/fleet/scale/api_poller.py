"""A dashboard stand-in for failover tests: it asks for the gateway list over and over and counts the answers."""

from __future__ import annotations

import asyncio
import time

import httpx


async def poll_gateway_list(
    url: str, token: str | None, stop: asyncio.Event, *, period_s: float
) -> tuple[list[float], list[str]]:
    """GET /api/v1/gateways every `period_s` (one kept-alive client, as a browser) until `stop`.

    Returns:
        when it answered (monotonic) and every failure as text.
    """
    answers: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client:
        while not stop.is_set():
            try:
                response = await client.get("/api/v1/gateways")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            else:
                if response.status_code == 200:
                    answers.append(time.monotonic())
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            await asyncio.sleep(period_s)
    return answers, failures
