"""Shared pieces of the rollout tests: a target, a spec, reports as a gateway sends them."""

from __future__ import annotations

from typing import Any

from bmsgate.fleet.server.rollouts.model import RolloutOptions, RolloutSpec, RolloutTarget, Selection
from bmsgate.fleet.updates import (
    DesiredEnvelope,
    DesiredState,
    FailureReason,
    PackTarget,
    ReportedState,
    RunningVersions,
    Signature,
    UpdatePhase,
)

PACK = PackTarget(
    pack="victron-maps", version="2.0.0", target="packs/victron-maps-2.0.0.tar", length=1234, sha256="ab" * 32
)
OLD_PACK = PackTarget(
    pack="victron-maps", version="1.0.0", target="packs/victron-maps-1.0.0.tar", length=1000, sha256="cd" * 32
)


def spec(**options: Any) -> RolloutSpec:
    """A rollout of :data:`PACK` to every gateway, with these options."""
    return RolloutSpec(
        name="maps 2.0", target=RolloutTarget(packs=(PACK,)), selection=Selection(), options=RolloutOptions(**options)
    )


def report(
    gateway: str,
    phase: UpdatePhase,
    *,
    generation: int,
    rollout: str | None,
    at: float = 1000.0,
    reason: FailureReason | None = None,
) -> ReportedState:
    """A gateway's report about one desired generation."""
    return ReportedState(
        v=1,
        gateway=gateway,
        at=at,
        phase=phase,
        generation=generation,
        rollout=rollout,
        reason=reason,
        running=RunningVersions(software="1.0.0"),
    )


def unsigned_envelope(state: DesiredState) -> DesiredEnvelope:
    """Wrap a desired state with a placeholder signature.

    The signature's content is the trust module's business (bmsgate.packs.trust.sign_desired); the
    server side never verifies its own signatures, so these tests check everything but that content.
    """
    return DesiredEnvelope(signed=state, signatures=(Signature(keyid="0" * 64, sig="00"),))
