"""Argument types for the command line: bad numbers are usage errors, not tracebacks later on."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["int_range", "positive_float"]


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An ``int`` between `low` and `high` inclusive."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def positive_float(maximum: float = math.inf) -> Callable[[str], float]:
    """A finite number greater than 0 (and at most `maximum`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def print_help(parser: argparse.ArgumentParser) -> int:
    """Show a command group's help and succeed: a group without an action is a question, not a mistake."""
    parser.print_help()
    return 0
