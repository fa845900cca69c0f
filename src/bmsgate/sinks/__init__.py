"""Outputs fed by the snapshot hub."""
