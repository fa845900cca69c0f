"""A real fleet-style TUF repository for the packs tests: offline keys, the server's directory, real HTTPS.

The HTTPS server is the one ``fleet serve`` runs (uvicorn with :class:`ArtifactFiles`, a certificate from the
fleet CA), in a thread of its own so the tests can call the gateway's blocking API directly. A small ASGI
tap in front of it records the requests and can cut a response short or serve other bytes for one path —
the hostile network a gateway must survive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmsgate.fleet.server.api.artifacts import ArtifactFiles
from bmsgate.fleet.server.api.server import HttpServer
from bmsgate.fleet.server.tls import FleetPki
from bmsgate.packs.repository import PackRepository
from bmsgate.packs.trust import ROLES, KeySigner, TargetSpec, TrustedRepository, create_root, generate_key, sign_targets


class CutConnection(Exception):
    """Raised inside the tap to make uvicorn drop the connection mid-body."""


@dataclasses.dataclass
class Tap:
    """Records requests; can cut one path's body after N bytes, or serve other bytes for a path."""

    inner: Any
    requests: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    cut_after: dict[str, int] = dataclasses.field(default_factory=dict)
    override: dict[str, bytes] = dataclasses.field(default_factory=dict)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path = scope["path"]
        ranged = next((value.decode() for name, value in scope["headers"] if name == b"range"), "")
        self.requests.append((path, ranged))
        for suffix, body in self.override.items():
            if path.endswith(suffix):
                headers = [(b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        limit = next((limit for suffix, limit in self.cut_after.items() if path.endswith(suffix)), None)
        if limit is None:
            await self.inner(scope, receive, send)
            return
        sent = 0

        async def cutting(message: Any) -> None:
            nonlocal sent
            if message["type"] == "http.response.body" and message.get("body"):
                body = message["body"][: max(0, limit - sent)]
                sent += len(body)
                if body:
                    await send({**message, "body": body, "more_body": True})
                if sent >= limit:
                    raise CutConnection
                return
            await send(message)

        self.cut_after = {key: value for key, value in self.cut_after.items() if not path.endswith(key)}
        await self.inner(scope, receive, cutting)


class ThreadedHttps:
    """uvicorn (HTTPS) on its own event loop in a thread."""

    def __init__(self, app: Any, pki: FleetPki) -> None:
        self._server = HttpServer(
            app, "127.0.0.1", 0, tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(15)
        return f"https://localhost:{self._server.port}"

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@dataclasses.dataclass
class Fleet:
    """Offline keys, the server's repository, its HTTPS URL, and a gateway factory."""

    tmp: Path
    keys: Path
    signers: dict[str, KeySigner]
    root_json: bytes
    server: PackRepository
    base_url: str
    ca_pem: str
    tap: Tap
    targets_json: bytes | None = None
    published: int = 0

    def publish(self, files: dict[str, bytes], *, custom: dict[str, Any] | None = None) -> dict[str, Path]:
        """Sign targets.json offline with ``files`` added (path -> content) and publish it on the server."""
        self.published += 1
        work = self.tmp / f"publish-{self.published}"
        work.mkdir()
        paths = {}
        for target, content in files.items():
            local = work / target.rpartition("/")[2]
            local.write_bytes(content)
            paths[target] = local
        specs = [TargetSpec(path=target, file=local, custom=custom or {}) for target, local in paths.items()]
        self.targets_json = sign_targets(self.root_json, self.targets_json, specs, signer=self.signers["targets"])
        targets_file = work / "targets.json"
        targets_file.write_bytes(self.targets_json)
        self.server.publish(targets_file, list(paths.values()))
        return paths

    def gateway(self, name: str = "gw", *, bootstrap: bytes | None = None) -> TrustedRepository:
        """A gateway's trusted repository (its own directories under tmp/name)."""
        return TrustedRepository(
            self.tmp / name / "metadata",
            self.tmp / name / "artifacts",
            self.base_url + "/tuf",
            ca_pem=self.ca_pem,
            bootstrap_root=self.root_json if bootstrap is None else bootstrap,
        )


def offline_keys(directory: Path) -> tuple[dict[str, KeySigner], bytes]:
    """A key pair per role (as ``bmsgate pack keygen`` makes them) and root.json v1."""
    signers = {role: generate_key(directory, role) for role in ROLES}
    root_json = create_root({role: [signer] for role, signer in signers.items()})
    (directory / "root.json").write_bytes(root_json)
    return signers, root_json


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    keys = tmp_path / "offline"
    signers, root_json = offline_keys(keys)
    online = tmp_path / "online"
    online.mkdir()
    for role in ("snapshot", "timestamp"):
        for suffix in (".key", ".pub.json"):
            (online / f"{role}{suffix}").write_bytes((keys / f"{role}{suffix}").read_bytes())
    server = PackRepository(tmp_path / "server" / "tuf")
    server.install_root(keys / "root.json", online_keys=online)
    pki = FleetPki(tmp_path / "server" / "tls")
    pki.ensure_ca()
    pki.ensure_server_certificate(["localhost", "127.0.0.1"])
    tap = Tap(ArtifactFiles(server.directory))
    with ThreadedHttps(tap, pki) as url:
        yield Fleet(
            tmp=tmp_path,
            keys=keys,
            signers=signers,
            root_json=root_json,
            server=server,
            base_url=url,
            ca_pem=pki.ca_pem,
            tap=tap,
        )
