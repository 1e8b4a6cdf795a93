"""The MQTT link of CONTRACT §4: status, retained state, the event stream, inbound messages."""

from ._link import MqttLink, Topics, load_secrets

__all__ = ["MqttLink", "Topics", "load_secrets"]
