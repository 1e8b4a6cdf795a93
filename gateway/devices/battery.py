"""Battery thresholds and a days-left estimate from the trend.

A lock's battery is "sometimes suddenly empty" (seed 001); the platform wants to
send someone *before* that. :class:`BatteryTrend` keeps the readings at which the
level changed (at most :data:`MAX_SAMPLES`, over at most :data:`WINDOW` seconds),
fits a least-squares line through them and extrapolates to 0 %: ``days_left``.
It says nothing (``None``) until it has two readings at least an hour apart — or
any two readings when the level falls fast (a drain is worth reporting early) —
and nothing while the level is not falling. A jump up of more than
:data:`REPLACED_JUMP` points means new batteries: the history starts again.

Pure: no clock, no I/O; times are passed in (seconds since the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["BatteryLevel", "BatteryTrend", "classify"]

MAX_SAMPLES = 64
WINDOW = 90 * 86400.0
REPLACED_JUMP = 10
MIN_SPAN = 3600.0
#: report a trend early when it would empty the battery within this many days
FAST_DRAIN_DAYS = 2.0


class BatteryLevel(StrEnum):
    OK = "ok"
    LOW = "low"
    CRITICAL = "critical"


def classify(level: int, *, low: int, critical: int, device_flag: bool = False) -> BatteryLevel:
    if device_flag or level <= critical:
        return BatteryLevel.CRITICAL
    if level <= low:
        return BatteryLevel.LOW
    return BatteryLevel.OK


@dataclass
class BatteryTrend:
    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, t: float, level: int) -> None:
        if self.samples and level - self.samples[-1][1] > REPLACED_JUMP:
            self.samples.clear()
        if self.samples and self.samples[-1][1] == level:
            return  # only changes are kept: the line runs through the steps
        self.samples.append((t, level))
        while self.samples and (
            len(self.samples) > MAX_SAMPLES or t - self.samples[0][0] > WINDOW
        ):
            self.samples.pop(0)

    def slope_per_day(self) -> float | None:
        """Percentage points per day by least squares (negative = draining)."""
        if len(self.samples) < 2:
            return None
        n = len(self.samples)
        ts = [t / 86400.0 for t, _ in self.samples]
        ls = [float(v) for _, v in self.samples]
        mt, ml = sum(ts) / n, sum(ls) / n
        var = sum((t - mt) ** 2 for t in ts)
        if var == 0:
            return None
        return sum((t - mt) * (v - ml) for t, v in zip(ts, ls, strict=True)) / var

    def days_left(self, level: int) -> float | None:
        """Days until 0 % from ``level`` at the current trend; None if unknown."""
        slope = self.slope_per_day()
        if slope is None or slope >= 0:
            return None
        days = level / -slope
        span = self.samples[-1][0] - self.samples[0][0]
        if span < MIN_SPAN and days > FAST_DRAIN_DAYS:
            return None  # too little history to say anything about a slow decline
        return round(max(days, 0.0), 2)

    def to_json(self) -> list[list[float]]:
        return [[t, float(v)] for t, v in self.samples]

    @classmethod
    def from_json(cls, raw: object) -> BatteryTrend:
        out = cls()
        if isinstance(raw, list):
            for item in raw:
                if (
                    isinstance(item, list)
                    and len(item) == 2
                    and all(isinstance(x, int | float) for x in item)
                ):
                    out.samples.append((float(item[0]), int(item[1])))
        return out
