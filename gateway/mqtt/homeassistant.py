"""Home Assistant MQTT discovery: read-only entities for every device (docs/homeassistant.md).

Opt-in with ``[mqtt] homeassistant = true``. :func:`discovery_messages` turns the
configured devices into retained discovery configs under ``<discovery_prefix>/``, the
way Zigbee2MQTT and nuki_hub do it:

- one HA device per lock or key safe, from the inventory (manufacturer, model, serial,
  firmware), ``via_device`` the gateway; the gateway is a device too, with one
  ``connectivity`` sensor on its ``status`` topic;
- entities that read the topics the platform reads anyway — ``devices/<id>/state``:
  lock state, door, compartment, key present, problem (with the list as an attribute),
  battery %;
- availability: the gateway's ``status`` **and** the device's own
  ``devices/<id>/availability``, both required (``availability_mode: all``), so a device
  shows unavailable when the gateway is gone or cannot reach it.

Nothing here can open a door: no entity has a command topic. HA's MQTT ``lock``
platform requires one (``command_topic`` is mandatory in its schema), so the lock
state is an ``enum`` sensor, not a ``lock`` entity. Opening stays a signed command
(CONTRACT §5); the broker, and so anything with write access to it, is not trusted
to open a door. Pure: values in, topics and payloads out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocols.device import Capability, DeviceKind

__all__ = ["HaDevice", "discovery_messages", "node_id"]

#: what HA accepts as node_id and object_id in a discovery topic
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_LOCK_STATES = ("locked", "unlocked", "unlatched", "jammed")


@dataclass(frozen=True)
class HaDevice:
    """What discovery needs to know of one configured device."""

    id: str
    door: str
    kind: DeviceKind
    capabilities: frozenset[Capability]
    manufacturer: str = "unknown"
    model: str = "unknown"
    serial: str = "unknown"
    firmware: str = "unknown"


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


def node_id(site: str) -> str:
    """The node id of one gateway's discovery topics: ``lockgw_<site>``."""
    return f"lockgw_{_safe(site)}"


def _on_off(field: str, on: str, off: str) -> str:
    """A template mapping ``value_json.<field>`` to ON / OFF, and anything else (unknown,
    absent) to HA's "None" payload, which makes the state unknown."""
    return f"{{{{ {{'{on}': 'ON', '{off}': 'OFF'}}.get(value_json.{field}, 'None') }}}}"


def discovery_messages(
    *,
    site: str,
    prefix: str,
    version: str,
    devices: Iterable[HaDevice],
    root: str = "lockgw/v1",
) -> dict[str, bytes]:
    """Every discovery config of this gateway: ``{topic: JSON payload}`` (retain them)."""
    node = node_id(site)
    status = f"{root}/{site}/status"
    origin = {"name": "lockgw", "sw": version}
    gateway = {
        "identifiers": [node],
        "name": f"lockgw {site}",
        "manufacturer": "lockgw",
        "model": "door-access gateway",
        "sw_version": version,
    }
    out: dict[str, bytes] = {}

    def add(component: str, object_id: str, config: dict[str, Any]) -> None:
        oid = _safe(object_id)
        config = {**config, "unique_id": f"{node}_{oid}", "object_id": oid, "origin": origin}
        out[f"{prefix}/{component}/{node}/{oid}/config"] = json.dumps(
            config, separators=(",", ":"), ensure_ascii=False, sort_keys=True
        ).encode()

    add(
        "binary_sensor",
        node,
        {
            "name": "Connection",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": status,
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "qos": 1,
            "device": gateway,
        },
    )
    for dev in devices:
        base = f"{root}/{site}/devices/{dev.id}"
        state = f"{base}/state"
        device: dict[str, Any] = {
            "identifiers": [f"{node}_{_safe(dev.id)}"],
            "name": dev.id,
            "via_device": node,
        }
        for key, value in (
            ("manufacturer", dev.manufacturer),
            ("model", dev.model),
            ("serial_number", dev.serial),
            ("sw_version", dev.firmware),
        ):
            if value and value != "unknown":
                device[key] = value
        common: dict[str, Any] = {
            "state_topic": state,
            "qos": 1,
            "availability": [
                {"topic": status, "value_template": "{{ value_json.state }}"},
                {"topic": f"{base}/availability", "value_template": "{{ value_json.state }}"},
            ],
            "availability_mode": "all",
            "device": device,
        }
        caps = dev.capabilities
        if dev.kind is DeviceKind.LOCK:
            known = ", ".join(f"'{s}'" for s in _LOCK_STATES)
            add(
                "sensor",
                f"{dev.id}_lock",
                {
                    **common,
                    "name": "Lock",
                    "icon": "mdi:lock",
                    "device_class": "enum",
                    "options": list(_LOCK_STATES),
                    "value_template": (
                        f"{{{{ value_json.lock if value_json.lock in [{known}] else 'None' }}}}"
                    ),
                },
            )
            if Capability.DOOR_SENSOR in caps:
                add(
                    "binary_sensor",
                    f"{dev.id}_door",
                    {
                        **common,
                        "name": "Door",
                        "device_class": "door",
                        "value_template": _on_off("door", "open", "closed"),
                    },
                )
        else:
            add(
                "binary_sensor",
                f"{dev.id}_compartment",
                {
                    **common,
                    "name": "Compartment",
                    "device_class": "opening",
                    "value_template": _on_off("compartment", "open", "closed"),
                },
            )
            if Capability.KEY_SENSOR in caps:
                add(
                    "binary_sensor",
                    f"{dev.id}_key",
                    {
                        **common,
                        "name": "Key present",
                        "icon": "mdi:key-variant",
                        "value_template": _on_off("key", "present", "absent"),
                    },
                )
        add(
            "binary_sensor",
            f"{dev.id}_problem",
            {
                **common,
                "name": "Problem",
                "device_class": "problem",
                "value_template": "{{ 'ON' if (value_json.problems | default([])) else 'OFF' }}",
                "json_attributes_topic": state,
                "json_attributes_template": (
                    "{{ {'problems': value_json.problems | default([])} | tojson }}"
                ),
            },
        )
        if Capability.BATTERY in caps:
            add(
                "sensor",
                f"{dev.id}_battery",
                {
                    **common,
                    "name": "Battery",
                    "device_class": "battery",
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "entity_category": "diagnostic",
                    "value_template": (
                        "{{ value_json.battery if value_json.battery is number else 'None' }}"
                    ),
                },
            )
    return out
