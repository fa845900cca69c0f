"""A weak link is not a failed update: a download cut by the link is tried again and the update commits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bmsgate.fleet.agent.updates.source import Progress
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from bmsgate.packs.errors import PackError
from tests.fleet.agent.updates.conftest import Artifacts, bench, desired, generic_map_text
from tests.fleet.agent.updates.signed import SignedDirectory, sign


class _WeakLink(SignedDirectory):
    """The signed directory behind a link that drops the first `drops` downloads (a cellular blip)."""

    def __init__(self, directory: Path, key: Ed25519PrivateKey, drops: int) -> None:
        super().__init__(directory, key.public_key())
        self.drops = drops
        self.tries = 0

    def download(self, target: str, *, length: int, sha256: str, progress: Progress | None = None) -> Path:
        self.tries += 1
        if self.tries <= self.drops:
            raise PackError(FailureReason.DOWNLOAD, "connection reset by peer", source=target)
        return super().download(target, length=length, sha256=sha256, progress=progress)


async def test_a_download_cut_twice_is_tried_again_and_commits(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    artifacts = Artifacts(tmp_path / "repo")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    link = _WeakLink(artifacts.directory, key, drops=2)
    async with bench(tmp_path / "state", source=link) as site:
        site.engine.settings = dataclasses.replace(site.engine.settings, download_retry=0.05)
        await site.engine.take(sign(desired(1, maps), key), site.reports.append)
        assert link.tries == 3
        retried = [report for report in site.reports if "retrying" in report.detail]
        assert len(retried) == 2 and all(report.phase is UpdatePhase.DOWNLOADING for report in retried)
        assert site.reports.last.phase is UpdatePhase.COMMITTED


async def test_a_link_that_stays_down_fails_with_download_after_the_tries(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    artifacts = Artifacts(tmp_path / "repo")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)})
    link = _WeakLink(artifacts.directory, key, drops=100)
    async with bench(tmp_path / "state", source=link) as site:
        site.engine.settings = dataclasses.replace(site.engine.settings, download_retry=0.01, download_attempts=3)
        await site.engine.take(sign(desired(1, maps), key), site.reports.append)
        assert link.tries == 3
        last = site.reports.last
        assert (last.phase, last.reason) == (UpdatePhase.FAILED, FailureReason.DOWNLOAD)
