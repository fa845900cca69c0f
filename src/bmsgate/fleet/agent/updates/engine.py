"""The update state machine on the gateway: intake, download, stage, wait, switch, check, commit or revert.

One update runs at a time (the agent hands over the retained ``desired`` payload, newest first). Each step
is written to the journal (:mod:`~bmsgate.fleet.agent.updates.journal`) before it takes effect and reported
through the agent (retained, QoS 1) with what runs at that moment::

    desired ─ verify (signature, expiry) ─ generation > last accepted? ─ same packs as now? → idle
      → downloading → verified (hash, pack format, hardware, engine) → staged (slot installed and loaded)
      → [waiting: preconditions, when the inverter sees the change] → active-pending (switched live)
      → committed | reverted (health check failed: the inverse changes applied, previous slot back)
    any refusal → failed (nothing changed)

A desired state from the broker reaches the download only through :meth:`UpdateSource.verify_desired`
(:meth:`UpdateEngine.take`); the installer's local path (:meth:`UpdateEngine.install_local`) takes a
desired state built on site, with a source that has no signatures.

On start, :func:`start_committed_slot` (called before the gateway loads its definitions) installs the
committed slot's catalog; an activation that a restart interrupted is rolled back there, and
:meth:`UpdateEngine.resume` reports it as reverted, never as committed on the old version. A download,
check or staging that a restart interrupted is resumed from the start of the generation (the source
resumes the download itself).

A desired software version (:mod:`~bmsgate.fleet.agent.updates.software`, whose docstring tells the whole
way) is installed into the idle environment, switched to, and checked by the new version after its restart.

A weak link is not a failure: a metadata refresh or a download that fails with reason ``download`` is tried
again (``download_attempts``, doubling from ``download_retry``), resuming the cut file.

Why one long module: the steps share one journal, one lock and one report function, and each step's
order against the journal write is the point (written before it takes effect); split across modules the
ordering would be spread over call chains. The pure parts already live apart (plan, health, slots,
journal, software).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from bmsgate import __version__
from bmsgate.canonical import canonical_bytes
from bmsgate.catalog import Catalog, set_default_catalog
from bmsgate.errors import ConfigError
from bmsgate.fleet.agent.updates.health import HealthSettings, check_health
from bmsgate.fleet.agent.updates.journal import (
    Journal,
    JournalError,
    SlotRecord,
    SoftwareActivation,
    recover_journal,
    write_journal,
)
from bmsgate.fleet.agent.updates.plan import ActivationPlan, RunningSite, plan_activation
from bmsgate.fleet.agent.updates.preconditions import unmet_precondition
from bmsgate.fleet.agent.updates.slots import SlotStore
from bmsgate.fleet.agent.updates.software import (
    RESTART,
    SoftwareError,
    SoftwareLayout,
    install_wheel,
    settle_switch,
    wheel_version,
)
from bmsgate.fleet.agent.updates.source import ArtifactSource, LocalArtifacts, UpdateSource
from bmsgate.fleet.protocol import Channel, FleetMessageError, PackVersion, topic
from bmsgate.fleet.updates import (
    TERMINAL_PHASES,
    DesiredState,
    FailureReason,
    ReportedState,
    RunningVersions,
    UpdatePhase,
    UpdateProgress,
    decode_desired,
)
from bmsgate.packs.bundle import Pack, pack_sha256, read_pack
from bmsgate.packs.compatibility import check_compatible
from bmsgate.packs.errors import PackError
from bmsgate.runtime.supervisor import Change, Supervisor

__all__ = ["INTERRUPTED", "EngineSettings", "Reporter", "UpdateEngine", "start_committed_slot"]

_T = TypeVar("_T")
_LOGGER = logging.getLogger(__name__)

Reporter = Callable[[ReportedState], None]
"""Publishes one reported state (retained); returns at once."""

INTERRUPTED: Final = "interrupted during health check: the gateway restarted before the check passed"
_RUNNING_WAIT: Final = 30.0
_PROGRESS_GAP: Final = 1.0
"""Seconds between progress reports of a download."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """What the engine needs besides the running gateway."""

    directory: Path
    """The updates directory: journal and slots (``<state_dir>/packs`` by default)."""
    gateway_id: str
    hardware: str
    """The board model packs are checked against."""
    precondition_timeout: float = 1800.0
    precondition_interval: float = 5.0
    health: HealthSettings = dataclasses.field(default_factory=HealthSettings)
    software_version: str = __version__
    software: SoftwareLayout | None = None
    """The A/B environments (None: a desired software version fails with reason ``install``)."""
    install_timeout: float = 600.0
    """Seconds each pip step may take."""
    restart: Callable[[Supervisor], None] = RESTART.request
    """Stops the gateway so that ``bmsgate run`` exits with the restart status."""
    restart_grace: float = 1.0
    """Seconds between the last report and the restart (the report leaves first)."""
    download_attempts: int = 6
    """Tries of a metadata refresh or an artifact download before the update fails with ``download``."""
    download_retry: float = 10.0
    """Seconds before the second try; doubled each time (10, 20, 40, 80, 160 s: about five minutes)."""


def start_committed_slot(directory: Path, software: SoftwareLayout | None = None) -> Catalog:
    """Install the catalog of the committed slot as the process's default (call before loading definitions).

    An activation still pending in the journal (a restart during its health check) is rolled back here:
    the gateway starts with the previous slot and the journal says ``reverted``.

    A damaged journal is moved aside: the gateway starts with the built-in definitions (see
    :func:`~bmsgate.fleet.agent.updates.journal.recover_journal`).
    """
    journal = recover_journal(directory)
    if journal.phase is UpdatePhase.ACTIVE_PENDING and journal.software is not None:
        journal = settle_switch(directory, journal, journal.software, software)
    elif journal.phase is UpdatePhase.ACTIVE_PENDING:
        _LOGGER.warning(
            "updates: generation %d was interrupted during its health check; rolling back", journal.generation
        )
        interrupted = journal.pending
        journal = journal.model_copy(
            update={
                "phase": UpdatePhase.REVERTED,
                "reason": FailureReason.HEALTH,
                "detail": INTERRUPTED,
                "pending": None,
            }
        )
        write_journal(directory, journal)
        SlotStore(directory).remove(interrupted)
    catalog = SlotStore(directory).catalog(journal.committed)
    set_default_catalog(catalog)
    return catalog


class _Refused(Exception):
    """An update step refused: fail with this reason and detail."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _identities(desired: DesiredState) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted((target.pack, target.version, target.sha256) for target in desired.packs))


class UpdateEngine:
    """Applies desired pack sets to a running gateway (see the module docstring).

    Args:
        settings: directory, identity, limits.
        supervisor: the running gateway's supervisor (its live changes switch the definitions).
        site: the names the gateway resolved through the catalog.
        source: the signed repository; None: desired states from the broker are refused (nothing can verify
            them).
        clock: wall clock for report times.
    """

    def __init__(
        self,
        settings: EngineSettings,
        supervisor: Supervisor,
        site: RunningSite,
        *,
        source: UpdateSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.site = site
        self.source = source
        self._clock = clock
        self.slots = SlotStore(settings.directory)
        self.journal = recover_journal(settings.directory)
        self._active: SlotRecord | None = self.journal.committed
        self._catalog = self.slots.catalog(self._active)
        self._lock = asyncio.Lock()

    # -- entry points ----------------------------------------------------------------------------

    async def resume(self, report: Reporter) -> None:
        """Report what a restart left, and resume an update it interrupted before its switch."""
        async with self._lock:
            journal = self.journal
            packs_follow = False
            if journal.phase is UpdatePhase.ACTIVE_PENDING and journal.software is not None:
                if await self._check_software(journal.software, report):
                    return
                packs_follow = True
            elif journal.phase is UpdatePhase.ACTIVE_PENDING:
                # start_committed_slot was not called (the gateway loaded its definitions another way): the
                # switch that was pending never ran in this process, so the committed slot is what runs.
                self._write(phase=UpdatePhase.REVERTED, reason=FailureReason.HEALTH, detail=INTERRUPTED, pending=None)
            if self.journal.generation == 0:
                return
            if self.journal.desired is None or (self.journal.phase in TERMINAL_PHASES and not packs_follow):
                report(self._reported(self.journal.phase, reason=self.journal.reason, detail=self.journal.detail))
                return
            desired = self.journal.desired
            source: ArtifactSource | None = self.source
            if self.journal.local_dir is not None:
                source = LocalArtifacts(Path(self.journal.local_dir))
            if source is None:
                self._fail(report, FailureReason.SIGNATURE, "resumed after a restart, but no trusted source is set up")
                return
            if desired.expires_at < self._clock():
                # Off for longer than the desired state is valid: the server re-issues a current one.
                self._fail(report, FailureReason.EXPIRED, f"generation {desired.generation} expired while interrupted")
                return
            _LOGGER.info("updates: resuming generation %d after a restart", desired.generation)
            await self._apply(desired, source, report)

    async def take(self, payload: bytes, report: Reporter) -> None:
        """The agent's desired-state handler: verify a ``desired`` payload from the broker and apply it."""
        async with self._lock:
            digest = hashlib.sha256(payload).hexdigest()
            gateway = self.settings.gateway_id
            try:
                envelope = decode_desired(payload, topic=topic(gateway, Channel.DESIRED), gateway=gateway)
            except FleetMessageError as exc:
                report(
                    self._reported(
                        UpdatePhase.FAILED,
                        reason=FailureReason.INTERNAL,
                        detail=f"desired refused: {exc}",
                        generation=0,
                        digest=digest,
                    )
                )
                return
            if self.source is None:
                report(
                    self._reported(
                        UpdatePhase.FAILED,
                        reason=FailureReason.SIGNATURE,
                        detail="no trusted repository is set up on this gateway: a desired state cannot be verified",
                        generation=envelope.signed.generation,
                        digest=digest,
                    )
                )
                return
            try:
                await self._with_retries(self.source.refresh, report, "refreshing the signed metadata")
                desired = await asyncio.to_thread(self.source.verify_desired, envelope, now=self._clock())
            except PackError as exc:
                report(
                    self._reported(
                        UpdatePhase.FAILED,
                        reason=exc.reason,
                        detail=str(exc),
                        generation=envelope.signed.generation,
                        digest=digest,
                    )
                )
                return
            if self._accept(desired, digest, report, local_dir=None):
                await self._apply(desired, self.source, report)

    async def install_local(self, desired: DesiredState, directory: Path, report: Reporter) -> None:
        """Apply a desired state built on site from the pack files in `directory` (no server, no signatures)."""
        async with self._lock:
            digest = hashlib.sha256(canonical_bytes(desired.model_dump(mode="json"))).hexdigest()
            if desired.gateway != self.settings.gateway_id:
                detail = f"the desired state is for gateway {desired.gateway}, this is {self.settings.gateway_id}"
                report(self._reported(UpdatePhase.FAILED, reason=FailureReason.INTERNAL, detail=detail, digest=digest))
                return
            if self._accept(desired, digest, report, local_dir=str(directory)):
                await self._apply(desired, LocalArtifacts(directory), report)

    @property
    def next_generation(self) -> int:
        """The lowest generation a new desired state may have."""
        return self.journal.generation + 1

    # -- the steps -------------------------------------------------------------------------------

    def _accept(self, desired: DesiredState, digest: str, report: Reporter, *, local_dir: str | None) -> bool:
        journal = self.journal
        if desired.generation == journal.generation and digest == journal.desired_sha256:
            # The broker re-delivers the retained desired state on every (re)connect: say again where it stands.
            if journal.phase in TERMINAL_PHASES:
                report(self._reported(journal.phase, reason=journal.reason, detail=journal.detail))
            return False
        if desired.generation <= journal.generation:
            report(
                self._reported(
                    UpdatePhase.FAILED,
                    reason=FailureReason.REPLAY,
                    detail=f"generation {desired.generation} is not above {journal.generation}, the last accepted",
                    generation=desired.generation,
                    digest=digest,
                )
            )
            return False
        self._write(
            generation=desired.generation,
            desired_sha256=digest,
            rollout=desired.rollout,
            desired=desired,
            local_dir=local_dir,
            phase=UpdatePhase.DOWNLOADING,
            reason=None,
            detail="",
            pending=None,
        )
        return True

    async def _apply(self, desired: DesiredState, source: ArtifactSource, report: Reporter) -> None:
        try:
            await self._run(desired, source, report)
        except _Refused as refused:
            self._fail(report, refused.reason, refused.detail)
        except PackError as exc:
            self._fail(report, exc.reason, str(exc))
        except JournalError as exc:
            self._fail(report, FailureReason.INTERNAL, str(exc))

    async def _run(self, desired: DesiredState, source: ArtifactSource, report: Reporter) -> None:
        committed = self.journal.committed
        if desired.software is not None and desired.software.version != self.settings.software_version:
            await self._install_software(desired, source, report)
            return
        if _identities(desired) == (committed.identities if committed is not None else ()):
            self._write(phase=UpdatePhase.IDLE, desired=None, pending=None)
            report(self._reported(UpdatePhase.IDLE, detail="the desired packs are the ones that run"))
            return
        packs = await self._download(desired, source, report)
        self._write(phase=UpdatePhase.VERIFIED)
        report(self._reported(UpdatePhase.VERIFIED, detail=", ".join(p.manifest.label for p in packs)))
        self.slots.keep_only(committed)
        record = await asyncio.to_thread(self.slots.install, desired.generation, packs, _identities(desired))
        self._write(phase=UpdatePhase.STAGED, pending=record)
        report(self._reported(UpdatePhase.STAGED, detail=f"slot {record.slot}"))
        new_catalog = self.slots.catalog(record)
        try:
            plan = plan_activation(self.site, self._catalog, new_catalog)
            await self._wait_for_preconditions(plan, report)
        except (_Refused, PackError):
            self.slots.remove(record)
            raise
        await self._activate(plan, record, new_catalog, report)

    async def _install_software(self, desired: DesiredState, source: ArtifactSource, report: Reporter) -> None:
        wanted = desired.software
        layout = self.settings.software
        assert wanted is not None
        if layout is None:
            raise _Refused(FailureReason.INSTALL, "software updates are off: no A/B environments configured")
        if not layout.runs_this_process():
            raise _Refused(
                FailureReason.INSTALL, f"this process does not run from {layout.current}: a restart would not switch"
            )
        total = wanted.length
        report(
            self._reported(UpdatePhase.DOWNLOADING, progress=UpdateProgress(done=0, total=total), detail=wanted.target)
        )
        await self._with_retries(source.refresh, report, "refreshing the signed metadata")
        progress = self._progress_reporter(report, wanted.target, 0, total)
        wheel = await self._with_retries(
            functools.partial(
                source.download, wanted.target, length=wanted.length, sha256=wanted.sha256, progress=progress
            ),
            report,
            wanted.target,
        )
        data = await asyncio.to_thread(wheel.read_bytes)
        if len(data) != wanted.length or hashlib.sha256(data).hexdigest() != wanted.sha256:
            raise _Refused(FailureReason.MISMATCH, f"{wanted.target}: changed after its download")
        try:
            if wheel_version(wheel) != wanted.version:
                raise _Refused(FailureReason.DEFINITION, f"{wanted.target} is not bmsgate {wanted.version}")
            self._write(phase=UpdatePhase.VERIFIED)
            report(self._reported(UpdatePhase.VERIFIED, detail=wheel.name))
            idle = await asyncio.to_thread(
                install_wheel, layout, wheel, wanted.version, timeout=self.settings.install_timeout
            )
            self._write(phase=UpdatePhase.STAGED)
            report(self._reported(UpdatePhase.STAGED, detail=f"software {wanted.version} installed in {idle}"))
            activation = SoftwareActivation(
                previous=layout.active(),
                previous_version=self.settings.software_version,
                target=idle,
                version=wanted.version,
            )
            # Written before the switch: every start from here on knows where to return.
            self._write(phase=UpdatePhase.ACTIVE_PENDING, software=activation)
            layout.mark_pending(activation.previous)
            layout.switch(idle)
        except SoftwareError as exc:
            layout.clear_pending()
            raise _Refused(FailureReason.INSTALL, str(exc)) from None
        report(
            self._reported(
                UpdatePhase.ACTIVE_PENDING, detail=f"software {wanted.version} in {idle}: restarting into it"
            )
        )
        _LOGGER.info("updates: switched to software %s in %s; restarting", wanted.version, idle)
        await asyncio.sleep(self.settings.restart_grace)
        self.settings.restart(self.supervisor)

    async def _check_software(self, activation: SoftwareActivation, report: Reporter) -> bool:
        """The health check of a new software version after its restart; True when nothing more is to do."""
        layout = self.settings.software
        if layout is None or self.settings.software_version != activation.version:
            # start_committed_slot did not run: settle the switch here (the previous version runs).
            self.journal = settle_switch(self.settings.directory, self.journal, activation, layout)
            report(self._reported(self.journal.phase, reason=self.journal.reason, detail=self.journal.detail))
            return True
        detail = f"software {activation.version} in {activation.target}"
        report(self._reported(UpdatePhase.ACTIVE_PENDING, detail=f"{detail}: health check running"))
        try:
            await self._wait_running()
            plan = ActivationPlan(
                (), tuple(self.supervisor.batteries), tuple(sink.name for sink in self.supervisor.sinks)
            )
            problem = await check_health(self.supervisor, plan, self.settings.health)
        except _Refused as refused:
            problem = refused.detail
        if problem is None:
            layout.clear_pending()
            self._write(phase=UpdatePhase.COMMITTED, software=None, reason=None, detail=detail)
            _LOGGER.info("updates: generation %d committed (%s)", self.journal.generation, detail)
            desired = self.journal.desired
            committed = self.journal.committed
            if desired is not None and _identities(desired) != (committed.identities if committed else ()):
                # The packs of the same desired state follow, on the new version: the desired state is not
                # committed until they are (a server counts the first "committed" as the outcome).
                report(self._reported(UpdatePhase.ACTIVE_PENDING, detail=f"{detail}: committed; the packs follow"))
                return False
            report(self._reported(UpdatePhase.COMMITTED, detail=detail))
            self._write(desired=None)
            return True
        _LOGGER.warning("updates: %s failed its health check: %s; switching back", detail, problem)
        try:
            layout.switch(activation.previous)
        except SoftwareError as exc:
            _LOGGER.error("updates: %s", exc)  # noqa: TRY400 - the guard switches back at the next start
        layout.clear_pending()
        self._write(
            phase=UpdatePhase.REVERTED,
            reason=FailureReason.HEALTH,
            detail=f"{detail}: {problem}; {activation.previous} with {activation.previous_version} runs again",
            software=None,
            desired=None,
        )
        # No report from here: "reverted" comes from the previous version, which is what will run.
        self.settings.restart(self.supervisor)
        return True

    async def _download(self, desired: DesiredState, source: ArtifactSource, report: Reporter) -> list[Pack]:
        total = sum(target.length for target in desired.packs)
        done = 0
        packs: list[Pack] = []
        await self._with_retries(source.refresh, report, "refreshing the signed metadata")
        for target in desired.packs:
            report(
                self._reported(
                    UpdatePhase.DOWNLOADING, progress=UpdateProgress(done=done, total=total), detail=target.target
                )
            )
            progress = self._progress_reporter(report, target.target, done, total)
            path = await self._with_retries(
                functools.partial(
                    source.download, target.target, length=target.length, sha256=target.sha256, progress=progress
                ),
                report,
                target.target,
            )
            data = await asyncio.to_thread(path.read_bytes)
            # The source checked it; a file changed on disk since then must not slip through.
            if len(data) != target.length or pack_sha256(data) != target.sha256:
                raise _Refused(FailureReason.MISMATCH, f"{target.target}: changed after its download")
            pack = read_pack(data, source=target.target)
            if (pack.manifest.name, pack.manifest.version) != (target.pack, target.version):
                raise _Refused(
                    FailureReason.DEFINITION,
                    f"{target.target} holds {pack.manifest.label}, "
                    f"the desired state names {target.pack}@{target.version}",
                )
            check_compatible(pack.manifest, hardware=self.settings.hardware)
            packs.append(pack)
            done += target.length
        report(self._reported(UpdatePhase.DOWNLOADING, progress=UpdateProgress(done=done, total=total)))
        return packs

    async def _with_retries(self, call: Callable[[], _T], report: Reporter, what: str) -> _T:
        """Run a blocking network call in a thread; a ``download`` failure (a weak link) is tried again.

        Only the link is retried: a signature, expiry, replay or mismatch is an answer, not a blip. The
        partial file of a cut download stays, so the next try resumes it.

        Raises:
            PackError: the call's own refusal, or ``download`` once the tries are used up.
        """
        delay = self.settings.download_retry
        attempts = max(1, self.settings.download_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await asyncio.to_thread(call)
            except PackError as exc:
                if exc.reason is not FailureReason.DOWNLOAD or attempt == attempts:
                    raise
                _LOGGER.warning("updates: %s: %s; try %d of %d in %.0f s", what, exc, attempt + 1, attempts, delay)
                report(self._reported(UpdatePhase.DOWNLOADING, detail=f"{what}: {exc}; retrying in {delay:.0f} s"))
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _progress_reporter(self, report: Reporter, target: str, before: int, total: int) -> Callable[[int, int], None]:
        """A download's progress callback (called in the downloading thread): a report at most every second."""
        loop = asyncio.get_running_loop()
        last = time.monotonic()

        def progress(done: int, length: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done >= length or now - last < _PROGRESS_GAP:
                return  # the report after the target says it is complete
            last = now
            position = UpdateProgress(done=min(before + done, total), total=total)
            loop.call_soon_threadsafe(
                lambda: report(self._reported(UpdatePhase.DOWNLOADING, progress=position, detail=target))
            )

        return progress

    async def _wait_for_preconditions(self, plan: ActivationPlan, report: Reporter) -> None:
        batteries = plan.affected_batteries(self.site) if plan.affects_inverter else frozenset()
        if not batteries:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.precondition_timeout
        said: str | None = None
        while (problem := unmet_precondition(self.supervisor.hub, batteries)) is not None:
            if loop.time() >= deadline:
                raise _Refused(
                    FailureReason.PRECONDITION, f"not met within {self.settings.precondition_timeout:g} s: {problem}"
                )
            if problem != said:
                said = problem
                self._write(phase=UpdatePhase.WAITING)
                report(self._reported(UpdatePhase.WAITING, detail=problem))
            await asyncio.sleep(min(self.settings.precondition_interval, max(0.0, deadline - loop.time())))

    async def _wait_running(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RUNNING_WAIT
        while not self.supervisor.running:
            if loop.time() >= deadline:
                raise _Refused(FailureReason.INTERNAL, "the gateway is not running: nothing to switch")
            await asyncio.sleep(0.1)

    async def _activate(self, plan: ActivationPlan, record: SlotRecord, catalog: Catalog, report: Reporter) -> None:
        await self._wait_running()
        previous, previous_catalog = self._active, self._catalog
        # Written before the switch: a restart from here on starts on `committed` (the previous slot).
        self._write(phase=UpdatePhase.ACTIVE_PENDING, pending=record)
        inverses: list[Change] = []
        try:
            for change in plan.changes:
                inverses.append(await self.supervisor.apply(change))  # noqa: PERF401 - one at a time, in order
        except (ConfigError, RuntimeError) as exc:
            await self._undo(inverses)
            self._write(phase=UpdatePhase.STAGED)
            self.slots.remove(record)
            raise _Refused(FailureReason.INTERNAL, f"the switch failed, undone: {exc}") from None
        self._active, self._catalog = record, catalog
        set_default_catalog(catalog)
        report(self._reported(UpdatePhase.ACTIVE_PENDING, detail=f"slot {record.slot}: health check running"))
        problem = await check_health(self.supervisor, plan, self.settings.health)
        if problem is None:
            self._write(phase=UpdatePhase.COMMITTED, committed=record, pending=None, desired=None, detail="")
            self.slots.keep_only(record, previous)
            _LOGGER.info("updates: generation %d committed (%s)", self.journal.generation, ", ".join(record.packs))
            report(self._reported(UpdatePhase.COMMITTED, detail=f"slot {record.slot}"))
            return
        _LOGGER.warning(
            "updates: generation %d failed its health check: %s; reverting", self.journal.generation, problem
        )
        await self._undo(inverses)
        self._active, self._catalog = previous, previous_catalog
        set_default_catalog(previous_catalog)
        self._write(phase=UpdatePhase.REVERTED, reason=FailureReason.HEALTH, detail=problem, pending=None, desired=None)
        self.slots.remove(record)
        report(self._reported(UpdatePhase.REVERTED, reason=FailureReason.HEALTH, detail=problem))

    async def _undo(self, inverses: list[Change]) -> None:
        for inverse in reversed(inverses):
            await self.supervisor.apply(inverse)

    # -- journal and reports ---------------------------------------------------------------------

    def _write(self, **changes: object) -> None:
        journal = self.journal.model_copy(update=changes)
        # model_copy does not validate: a round trip does, before anything reaches the disk.
        journal = Journal.model_validate(journal.model_dump())
        write_journal(self.settings.directory, journal)
        self.journal = journal

    def _fail(self, report: Reporter, reason: FailureReason, detail: str) -> None:
        _LOGGER.warning("updates: generation %d failed (%s): %s", self.journal.generation, reason.value, detail)
        try:
            self._write(
                phase=UpdatePhase.FAILED, reason=reason, detail=detail[:1024], pending=None, desired=None, software=None
            )
        except JournalError as exc:
            _LOGGER.error("updates: %s", exc)  # noqa: TRY400 - the report below says what failed
        report(self._reported(UpdatePhase.FAILED, reason=reason, detail=detail))

    def active_packs(self) -> list[PackVersion]:
        """The installed packs (kind ``pack``, by their file's sha256), for the gateway's retained state."""
        active = self._active
        if active is None:
            return []
        return [
            PackVersion(kind="pack", name=name, version=version, sha256=sha) for name, version, sha in active.identities
        ]

    def running_versions(self) -> RunningVersions:
        """What runs now: the active slot's packs and items, and the software."""
        active = self._active
        return RunningVersions(
            packs=active.items if active is not None else (),
            software=self.settings.software_version,
            pack_names=active.packs if active is not None else (),
        )

    def _reported(
        self,
        phase: UpdatePhase,
        *,
        reason: FailureReason | None = None,
        detail: str = "",
        progress: UpdateProgress | None = None,
        generation: int | None = None,
        digest: str | None = None,
    ) -> ReportedState:
        return ReportedState(
            v=1,
            gateway=self.settings.gateway_id,
            at=self._clock(),
            phase=phase,
            generation=self.journal.generation if generation is None else generation,
            rollout=self.journal.rollout if generation is None else None,
            desired_sha256=self.journal.desired_sha256 if digest is None else digest,
            reason=reason,
            detail=detail[:1024],
            progress=progress,
            running=self.running_versions(),
        )
