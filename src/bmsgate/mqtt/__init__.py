"""MQTT shared by the Home Assistant output and the fleet: broker settings, the client adapter, a local broker."""
