"""Run-time faults of a simulated BLE link, switched by technicians and tests.

A :class:`LinkFaults` is shared by a :class:`~simulators.gatt_server.GattServer` and its
connections; changing a field takes effect on the next frame. The names below are the
control-channel names (``lockgw-sim fault --control H:P NAME [VALUE]``):

=================  =========================================================================
``delay_ms``       latency added to every frame in each direction (30 = one BLE connection
                   interval); frames stay in order
``reply_delay_ms`` extra time before the device answers a request (a slow device)
``corrupt``        the next N frames the device sends are corrupted (the central must drop
                   the link); ``true`` = 1
``refuse``         refuse new connections (``true``/``false``): they close at once
``out_of_range``   ``true``: current links drop, scans and connection attempts get no answer
                   at all (the central times out), as a device out of radio range
``drop``           drop every current link now, without a goodbye (an action, no value)
``faults``         the current settings (no value)
``clear``          all faults off
=================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LinkFaults"]

_MAX_DELAY_MS = 60_000.0


def _ms(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= _MAX_DELAY_MS
    ):
        raise ValueError(f"a delay is a number of milliseconds 0..{_MAX_DELAY_MS:g}, not {value!r}")
    return float(value)


def _flag(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "on", "1", "false", "off", "0"}:
        return value.lower() in {"true", "on", "1"}
    raise ValueError(f"expected true or false, not {value!r}")


@dataclass
class LinkFaults:
    """The fault switches of one simulated device's link."""

    delay_ms: float = 0.0
    reply_delay_ms: float = 0.0
    corrupt: int = 0
    refuse: bool = False
    out_of_range: bool = False
    #: called by ``drop``: set by the server that owns these faults
    _drop: Callable[[], int] | None = field(default=None, repr=False, compare=False)
    #: called after every switch (the BlueZ transport stops advertising out of range)
    _changed: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            "delay_ms": self.delay_ms,
            "reply_delay_ms": self.reply_delay_ms,
            "corrupt": self.corrupt,
            "refuse": self.refuse,
            "out_of_range": self.out_of_range,
        }

    def clear(self) -> None:
        self.delay_ms = self.reply_delay_ms = 0.0
        self.corrupt = 0
        self.refuse = self.out_of_range = False

    def take_corrupt(self) -> bool:
        """True when the frame about to be sent must be corrupted (counts down)."""
        if self.corrupt > 0:
            self.corrupt -= 1
            return True
        return False

    def drop(self) -> int:
        """Drop every current link; returns how many were dropped."""
        return self._drop() if self._drop is not None else 0

    def apply(self, name: str, value: Any = None) -> Any:
        """Switch one fault by its control name; returns what the control channel answers."""
        result = self._apply(name, value)
        if self._changed is not None:
            self._changed()
        return result

    def _apply(self, name: str, value: Any) -> Any:
        if name == "delay_ms":
            self.delay_ms = _ms(value)
        elif name == "reply_delay_ms":
            self.reply_delay_ms = _ms(value)
        elif name == "corrupt":
            if value is None or value is True:
                value = 1
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
                raise ValueError(f"corrupt takes a frame count 0..1000, not {value!r}")
            self.corrupt = value
        elif name == "refuse":
            self.refuse = _flag(value)
        elif name == "out_of_range":
            self.out_of_range = _flag(value)
            if self.out_of_range:
                self.drop()
        elif name == "drop":
            return {"dropped": self.drop()}
        elif name == "clear":
            self.clear()
        elif name != "faults":
            raise KeyError(name)
        return self.snapshot()

    NAMES = (
        "delay_ms",
        "reply_delay_ms",
        "corrupt",
        "refuse",
        "out_of_range",
        "drop",
        "clear",
        "faults",
    )
