"""Rollouts: packs and gateway software to a selection of gateways, group by group (see docs/fleet/rollouts.md)."""
