"""The fleet: gateways report to a central server, which pushes definitions and software back.

``protocol`` is the contract both sides share; ``agent/`` is the gateway side, ``server/`` the central one.
"""
