"""Right of the hub, toward the inverter: bank, limits, the one inverter status, and its encoders.

``modbus/`` and ``can/`` only encode the :class:`~bmsgate.inverter.status.InverterStatus`; they hold the
only pymodbus and python-can imports.
"""
