"""The lockgw gateway service: config, access decision, devices, phone link, journal, MQTT, CLI."""

__version__ = "0.1.0"
