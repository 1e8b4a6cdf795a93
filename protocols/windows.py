"""Time windows of a credential token (CONTRACT §2 claim ``"win"``), in the site's zone.

A window is ``[days, start, end]``: ``days`` a bitmask Mon=1, Tue=2 … Sun=64; ``start``
and ``end`` the **wall-clock** time of day as minutes (07:30 = 450), ``0 ≤ start < end ≤
1440``. The token names no zone: the gateway evaluates windows in its site's zone.

Daylight saving: a window keeps its wall-clock times. "07:00-10:00" opens at 07:00 local
time on the day the clocks go forward (a 23-hour day) and on the day they go back (a
25-hour day) alike. On the spring-forward day local times 02:00–02:59 do not exist, so
a window inside that hour never opens that day; on the fall-back day 02:00–02:59 happens
twice and a window covering it is open both times. A window cannot cross midnight; the
text form ``"mon-fri 22:00-06:00"`` is split into two windows (the second on the next days).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = [
    "DAY_NAMES",
    "LocalClock",
    "Window",
    "WindowSpecError",
    "format_window",
    "in_windows",
    "in_windows_at",
    "local_day_minute",
    "parse_window",
    "windows_from_specs",
]

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALL_DAYS: Final = 0x7F
_SPEC = re.compile(r"^\s*([a-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class WindowSpecError(ValueError):
    """A text window (CLI) that cannot be understood; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Window:
    days: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 < self.days <= _ALL_DAYS:
            raise ValueError(f"days bitmask {self.days} is not in 1..127")
        if not 0 <= self.start < self.end <= 1440:
            raise ValueError(f"window {self.start}..{self.end} is not 0 ≤ start < end ≤ 1440")

    @classmethod
    def from_cbor(cls, item: Any) -> Window:
        """From ``[days, start, end]``; ValueError when the shape or a value is wrong.
        Equal windows are one shared (immutable) object: tokens repeat a few shapes."""
        if type(item) is not list or len(item) != 3:
            raise ValueError("a window is an array of 3 integers [days, start, end]")
        days, start, end = item
        if type(days) is not int or type(start) is not int or type(end) is not int:
            raise ValueError("a window is an array of 3 integers [days, start, end]")
        key = (days, start, end)
        w = _INTERNED.get(key)
        if w is None:
            w = cls(days, start, end)
            if len(_INTERNED) < 4096:
                _INTERNED[key] = w
        return w

    def to_cbor(self) -> list[int]:
        return [self.days, self.start, self.end]

    def contains(self, day_bit: int, minute: int) -> bool:
        return bool(self.days & day_bit) and self.start <= minute < self.end


_INTERNED: dict[tuple[int, int, int], Window] = {}


def local_day_minute(instant: float, tz: ZoneInfo) -> tuple[int, int]:
    """(day bit Mon=1…Sun=64, wall-clock minute of the day) of a UTC instant in ``tz``."""
    local = datetime.fromtimestamp(instant, tz)
    return 1 << local.weekday(), local.hour * 60 + local.minute


_DAY: Final = 86400
#: how far ahead a zone's next offset change is looked for, and the sampling step (a
#: change and its reversal within one step would be missed: no zone has ever done that)
_HORIZON: Final = 400 * _DAY
_STEP: Final = _DAY


def _offset(tz: ZoneInfo, instant: float) -> int:
    off = datetime.fromtimestamp(instant, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


class LocalClock:
    """Day and minute of the day in one zone for UTC instants, without a datetime per
    question: the UTC offset is constant between two of the zone's changes, so it is
    looked up (with ZoneInfo, exactly to the second) once per period — months, under
    daylight saving — and the rest is arithmetic. Any instant outside the held period,
    earlier or later, looks the period up again, so clocks set back or jumping are fine.
    Checked against ZoneInfo across both Amsterdam changes in ``tests/test_windows.py``.
    """

    __slots__ = ("_from", "_offset", "_until", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._from = self._until = 0.0
        self._offset = 0

    def day_minute(self, instant: float) -> tuple[int, int]:
        """(day bit Mon=1…Sun=64, wall-clock minute of the day) of ``instant``."""
        if not self._from <= instant < self._until:
            self._period(instant)
        local = int(instant // 1) + self._offset
        return 1 << (local // _DAY + 3) % 7, local % _DAY // 60  # 1970-01-01 was a Thursday

    def _period(self, instant: float) -> None:
        tz, start = self.tz, float(int(instant // 1))
        off = _offset(tz, start)
        lo, hi = start, start + _HORIZON
        t = start
        while t < start + _HORIZON:  # the first day sample with another offset ...
            nxt = t + _STEP
            if _offset(tz, nxt) != off:
                lo, hi = t, nxt
                while hi - lo > 1:  # ... and the change to the second inside that day
                    mid = (lo + hi) // 2
                    if _offset(tz, mid) == off:
                        lo = mid
                    else:
                        hi = mid
                break
            t = nxt
        self._from, self._until, self._offset = start, hi, off


def in_windows_at(windows: Sequence[Window], day_bit: int, minute: int) -> bool:
    """:func:`in_windows` for a day and minute already known (:class:`LocalClock`)."""
    if not windows:
        return True
    for w in windows:  # noqa: SIM110 - a plain loop is cheaper than any() on the hot path
        if w.days & day_bit and w.start <= minute < w.end:
            return True
    return False


def in_windows(windows: Sequence[Window], instant: float, tz: ZoneInfo) -> bool:
    """True when ``instant`` falls in one of ``windows`` (no windows = no limit)."""
    if not windows:
        return True
    local = datetime.fromtimestamp(instant, tz)
    day_bit, minute = 1 << local.weekday(), local.hour * 60 + local.minute
    for w in windows:  # noqa: SIM110 - a plain loop is cheaper than any() on the hot path
        if w.days & day_bit and w.start <= minute < w.end:
            return True
    return False


def _days(text: str) -> int:
    mask = 0
    for part in text.split(","):
        if not part:
            raise WindowSpecError("empty day in the day list")
        if part in ("daily", "all"):
            mask |= _ALL_DAYS
            continue
        first, _, last = part.partition("-")
        for name in (first, last or first):
            if name not in DAY_NAMES:
                raise WindowSpecError(f"unknown day {name!r}; use mon tue wed thu fri sat sun")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        i = a
        while True:  # ranges may wrap: sat-mon = sat, sun, mon
            mask |= 1 << i
            if i == b:
                break
            i = (i + 1) % 7
    return mask


def _rotate(mask: int) -> int:
    """The same days shifted one day later (Sun → Mon)."""
    return ((mask << 1) | (mask >> 6)) & _ALL_DAYS


def parse_window(spec: str) -> list[Window]:
    """``"mon-fri 07:00-10:00"``, ``"sat,sun 09:00-12:30"``, ``"daily 22:00-06:00"``.

    A window that ends at or before it starts crosses midnight and becomes two windows.
    ``24:00`` is allowed as an end.
    """
    m = _SPEC.match(spec.lower())
    if m is None:
        raise WindowSpecError(
            f'window {spec!r} is not like "mon-fri 07:00-10:00" (days, then HH:MM-HH:MM)'
        )
    days = _days(m.group(1))
    sh, sm, eh, em = (int(g) for g in m.group(2, 3, 4, 5))
    for h, mi in ((sh, sm), (eh, em)):
        if mi > 59 or h > 24 or (h == 24 and mi != 0):
            raise WindowSpecError(f"{h:02d}:{mi:02d} is not a time of day")
    start, end = sh * 60 + sm, eh * 60 + em
    if start == 1440:
        raise WindowSpecError("a window cannot start at 24:00")
    if start < end:
        return [Window(days, start, end)]
    out = [Window(days, start, 1440)]
    if end > 0:
        out.append(Window(_rotate(days), 0, end))
    return out


def format_window(w: Window) -> str:
    """The text form of one window, e.g. ``"mon,tue,wed,thu,fri 07:00-10:00"``."""
    days = ",".join(n for i, n in enumerate(DAY_NAMES) if w.days & (1 << i))
    return f"{days} {w.start // 60:02d}:{w.start % 60:02d}-{w.end // 60:02d}:{w.end % 60:02d}"


def windows_from_specs(specs: Iterable[str]) -> list[Window]:
    out: list[Window] = []
    for s in specs:
        out.extend(parse_window(s))
    return out
