"""Byte movers: BLE, serial, simulator, replay."""
