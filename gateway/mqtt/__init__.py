"""The MQTT link of CONTRACT §4: status, retained state, the event stream, inbound messages."""

from ._link import MqttLink, Topics

__all__ = ["MqttLink", "Topics"]
