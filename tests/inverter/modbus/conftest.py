"""Fixtures for the Modbus bridge tests (the pty pair is in tests/inverter/conftest.py)."""

from __future__ import annotations

import pytest

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
