"""Applying the fleet's desired state on the gateway: packs staged into slots, activated live, checked, committed.

``source`` is where artifacts come from (the TUF repository, or a local directory for an installer on site);
``journal`` the crash-safe record of the update's phase; ``slots`` the pack directories on disk; ``plan``
what a new slot changes in the running gateway; ``preconditions`` and ``health`` the checks before and after
the switch; ``engine`` the state machine that ties them together (see docs/fleet/updates-on-the-gateway.md).
"""
