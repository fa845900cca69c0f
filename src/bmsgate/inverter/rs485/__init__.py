"""Pylontech LV RS485, battery side: frames (frame.py), replies from the status (pylontech.py), the sink.

frame.py and pylontech.py are pure; sink.py drives them over the serial transport; simulated.py is an
inverter that polls like a Voltronic or an SRNE (the demo and the tests use it).
"""

from bmsgate.inverter.rs485.settings import Rs485Settings

__all__ = ["Rs485Settings"]
