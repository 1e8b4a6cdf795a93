"""Device supervision: one supervisor per lock or key safe, routed by door and action.

See :mod:`gateway.devices.manager` for the API the door service uses and
``docs/devices.md`` for what an installer sees.
"""

from gateway.devices.battery import BatteryLevel, BatteryTrend
from gateway.devices.manager import DeviceManager, DriverLookup, make_driver
from gateway.devices.record import DeviceRecord, StateFile, describe_state
from gateway.devices.secrets import FileSecretStore
from gateway.devices.supervisor import Supervisor, backoff_delay

__all__ = [
    "BatteryLevel",
    "BatteryTrend",
    "DeviceManager",
    "DeviceRecord",
    "DriverLookup",
    "FileSecretStore",
    "StateFile",
    "Supervisor",
    "backoff_delay",
    "describe_state",
    "make_driver",
]
