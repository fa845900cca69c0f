"""What switching to a new catalog changes in the running gateway: the live changes, and whom they affect.

Only items configured *by name* can change: an explicit file path in the configuration is the catalog's
last layer and wins over any pack. A battery changes when its protocol's name resolves to another identity
(sha256) in the new catalog, an output when its register map or CAN profile does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from bmsgate.catalog import Catalog, Kind
from bmsgate.errors import DefinitionError
from bmsgate.fleet.updates import FailureReason
from bmsgate.packs.errors import PackError
from bmsgate.runtime.supervisor import Change, ReplaceOutputItem, ReplaceProtocol

__all__ = ["ActivationPlan", "RunningSite", "plan_activation"]


@dataclasses.dataclass(frozen=True, slots=True)
class RunningSite:
    """The names the running gateway resolved through the catalog (from its configuration).

    Attributes:
        protocols: battery id -> protocol name, for batteries configured by protocol name.
        outputs: output name -> (kind, item name), for outputs whose register map / CAN profile is a name.
        inverter_bank: the batteries the inverter outputs report (empty: no inverter output).
    """

    protocols: Mapping[str, str] = dataclasses.field(default_factory=dict)
    outputs: Mapping[str, tuple[Kind, str]] = dataclasses.field(default_factory=dict)
    inverter_bank: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class ActivationPlan:
    """The changes to apply, and what the health check and the preconditions look at."""

    changes: tuple[Change, ...]
    batteries: tuple[str, ...]
    """Batteries whose protocol definition changes."""
    outputs: tuple[str, ...]
    """Outputs whose item changes."""

    @property
    def affects_inverter(self) -> bool:
        """Whether an inverter sees a difference (see :func:`affected_batteries`)."""
        return bool(self.outputs) or bool(self.batteries)

    def affected_batteries(self, site: RunningSite) -> frozenset[str]:
        """The batteries whose alarms and freshness the preconditions check.

        A changed output (every swappable output encodes the inverter status) concerns the whole bank; a
        changed protocol its own batteries, when they are in the bank.
        """
        if self.outputs:
            return site.inverter_bank
        return frozenset(self.batteries) & site.inverter_bank


def plan_activation(site: RunningSite, old: Catalog, new: Catalog) -> ActivationPlan:
    """The live changes that make the running gateway use `new` where it used `old`.

    Raises:
        PackError: reason ``definition``: a name the gateway uses no longer resolves in `new` or does not
            compile (the slot would leave a battery or an output without its definition).
    """
    changes: list[Change] = []
    batteries: list[str] = []
    outputs: list[str] = []
    try:
        for battery_id, name in sorted(site.protocols.items()):
            if _identity(old, Kind.PROTOCOL, name) != _identity(new, Kind.PROTOCOL, name):
                changes.append(ReplaceProtocol(battery_id, new.protocol(name)))
                batteries.append(battery_id)
        for output, (kind, name) in sorted(site.outputs.items()):
            if _identity(old, kind, name) != _identity(new, kind, name):
                item = new.register_map(name) if kind is Kind.REGISTER_MAP else new.can_profile(name)
                changes.append(ReplaceOutputItem(output, item))
                outputs.append(output)
    except DefinitionError as exc:
        raise PackError(FailureReason.DEFINITION, f"the running gateway's items do not load from it: {exc}") from None
    return ActivationPlan(tuple(changes), tuple(batteries), tuple(outputs))


def _identity(catalog: Catalog, kind: Kind, name: str) -> str | None:
    try:
        return catalog.get(kind, name).sha256
    except DefinitionError:
        return None
