"""Fixtures for the RS485 tests (the pty pair is in tests/inverter/conftest.py)."""

from __future__ import annotations

import pytest

from ..modbus.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
