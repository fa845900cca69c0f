"""Signed packs (TUF): signing and verification rates, gateway refresh and download times over real HTTPS.

A real repository (offline keys, the server's directory), the server's HTTPS listener (uvicorn with the fleet
CA's certificate) on localhost in a thread, and the gateway's TrustedRepository:

* desired states: sign_desired (server) and verify_desired (gateway) per second;
* publish: sign_targets + PackRepository.publish with N targets; targets.json size;
* refresh: a gateway's first refresh (root → timestamp → snapshot → targets) and a refresh with nothing new;
* download: an artifact of --mib MiB (hash-verified), and one cut at half then resumed by a range request.

Run: .venv/bin/python benchmarks/packs_trust.py [--targets 200] [--mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bmsgate.fleet.server.api.artifacts import ArtifactFiles
from bmsgate.fleet.server.api.server import HttpServer
from bmsgate.fleet.server.tls import FleetPki
from bmsgate.fleet.updates import DesiredState, PackTarget
from bmsgate.packs.repository import PackRepository
from bmsgate.packs.trust import (
    ROLES,
    TargetSpec,
    TrustedRepository,
    create_root,
    generate_key,
    sign_desired,
    sign_targets,
)


class Cut:
    """Drops the connection of the first request for a path after half the bytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cut: dict[str, int] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limit = self.cut.pop(scope.get("path", "").rpartition("/")[2], None) if scope["type"] == "http" else None
        if limit is None:
            await self.inner(scope, receive, send)
            return
        sent = 0

        async def cutting(message: Any) -> None:
            nonlocal sent
            if message["type"] == "http.response.body" and sent + len(message.get("body", b"")) > limit:
                raise ConnectionAbortedError
            sent += len(message.get("body", b""))
            await send(message)

        await self.inner(scope, receive, cutting)


def rate(action: Any, seconds: float = 1.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        action()
        count += 1
    return count / (time.perf_counter() - start)


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--mib", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bmsgate-packs-bench-"))
    keys = work / "keys"
    signers = {role: generate_key(keys, role) for role in ROLES}
    root_json = create_root({role: [signer] for role, signer in signers.items()})
    (keys / "root.json").write_bytes(root_json)
    server = PackRepository(work / "server" / "tuf")
    server.install_root(keys / "root.json", online_keys=keys)

    now = time.time()
    pack = PackTarget(pack="demo", version="1.0", target="packs/demo-1.0.pack", length=10, sha256="0" * 64)
    state = DesiredState(v=1, gateway="gw", generation=1, issued_at=now, expires_at=now + 3600, packs=(pack,))
    print(f"sign_desired: {rate(lambda: sign_desired(state, signers['timestamp'])):,.0f}/s")

    files = work / "files"
    files.mkdir()
    specs = []
    for index in range(args.targets):
        path = files / f"pack{index}-1.0.pack"
        path.write_bytes(os.urandom(2048))
        specs.append(TargetSpec(f"packs/{path.name}", path, {"bmsgate": {"kind": "pack", "name": f"pack{index}"}}))
    big = files / "bmsgate-9.9-py3-none-any.whl"
    big.write_bytes(os.urandom(args.mib << 20))
    specs.append(TargetSpec(f"software/{big.name}", big, {"bmsgate": {"kind": "software"}}))
    start = time.perf_counter()
    targets_json = sign_targets(root_json, None, specs, signer=signers["targets"])
    signing = time.perf_counter() - start
    (work / "targets.json").write_bytes(targets_json)
    publishing = timed(lambda: server.publish(work / "targets.json", [spec.file for spec in specs]))
    print(
        f"publish {len(specs)} targets: sign_targets {signing * 1000:.0f} ms, publish {publishing * 1000:.0f} ms "
        f"(incl. copying {args.mib} MiB), targets.json {len(targets_json) / 1024:.0f} KiB"
    )

    pki = FleetPki(work / "tls")
    pki.ensure_ca()
    pki.ensure_server_certificate(["localhost"])
    app = Cut(ArtifactFiles(server.directory))
    http = HttpServer(app, "127.0.0.1", 0, tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(http.start(), loop).result(15)
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # the deliberate cut is not news
    base = f"https://localhost:{http.port}/tuf"
    try:

        def gateway(name: str) -> TrustedRepository:
            return TrustedRepository(
                work / name / "m", work / name / "a", base, ca_pem=pki.ca_pem, bootstrap_root=root_json
            )

        repo = gateway("gw")
        first = timed(repo.refresh)
        again = timed(gateway("gw").refresh)
        print(f"refresh: first {first * 1000:.0f} ms, nothing new {again * 1000:.0f} ms ({len(specs)} targets)")
        verify = rate(lambda: repo.verify_desired(sign_desired(state, signers["timestamp"])))
        print(f"sign + verify_desired: {verify:,.0f}/s")
        content = big.read_bytes()
        sha256 = hashlib.sha256(content).hexdigest()
        whole = timed(lambda: repo.download(f"software/{big.name}", length=len(content), sha256=sha256))
        print(f"download {args.mib} MiB: {whole:.2f} s ({args.mib / whole:.0f} MiB/s, verified)")
        cut = gateway("cut")
        cut.refresh()
        app.cut[f"{sha256}.{big.name}"] = len(content) // 2
        try:
            cut.download(f"software/{big.name}", length=len(content), sha256=sha256)
        except Exception as exc:  # noqa: BLE001 - the cut is the point
            print(f"cut at half: {type(exc).__name__}: {exc.reason}")  # type: ignore[attr-defined]
        resumed = timed(lambda: cut.download(f"software/{big.name}", length=len(content), sha256=sha256))
        print(f"resume the second half: {resumed:.2f} s")
    finally:
        asyncio.run_coroutine_threadsafe(http.stop(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
