"""The demo's carers' hours keep their meaning whenever the demo runs, midnight included."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from protocols.windows import Window, in_windows
from simulators.demo import ZONE, Demo


def _windows(raw: list[list[int]]) -> list[Window]:
    return [Window(days=d, start=s, end=e) for d, s, e in raw]


@pytest.mark.parametrize("hhmm", ["00:00", "00:30", "07:15", "12:00", "20:59", "23:30", "23:59"])
def test_demo_windows_hold_for_the_whole_run_at_any_hour(hhmm: str) -> None:
    tz = ZoneInfo(ZONE)
    h, m = map(int, hhmm.split(":"))
    start = datetime(2026, 12, 7, h, m, 30, tzinfo=tz)
    inside, outside, text = Demo.windows_now(start)
    for minutes in range(0, 121, 5):  # a demo run (and --keep for a while) lasts minutes
        t = (start + timedelta(minutes=minutes)).timestamp()
        assert in_windows(_windows(inside), t, tz), (hhmm, minutes)
        assert not in_windows(_windows(outside), t, tz), (hhmm, minutes)
    assert "–" in text
