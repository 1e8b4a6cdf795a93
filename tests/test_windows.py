"""Time windows in the site's zone across daylight-saving changes (Europe/Amsterdam)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cred_kit import Site, attempt, make_site

from protocols.errors import Reason
from protocols.windows import (
    Window,
    WindowSpecError,
    format_window,
    in_windows,
    local_day_minute,
    parse_window,
)

AMS = ZoneInfo("Europe/Amsterdam")
MON, TUE, SAT, SUN = 1, 2, 32, 64


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


# 2026: clocks go forward Sun 29 March 02:00 CET → 03:00 CEST (01:00 UTC),
#        and back Sun 25 October 03:00 CEST → 02:00 CET (01:00 UTC).
@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        (utc(2026, 3, 29, 5, 59), False),  # 07:59 CEST
        (utc(2026, 3, 29, 6, 0), True),  # 08:00 CEST: opens at wall-clock 08:00, not 09:00
        (utc(2026, 3, 29, 7, 59), True),
        (utc(2026, 3, 29, 8, 0), False),  # 10:00 CEST
        (utc(2026, 10, 25, 6, 59), False),  # 07:59 CET
        (utc(2026, 10, 25, 7, 0), True),  # 08:00 CET
        (utc(2026, 10, 25, 8, 59), True),
        (utc(2026, 10, 25, 9, 0), False),
    ],
)
def test_window_keeps_wall_clock_times_on_dst_days(instant: float, inside: bool) -> None:
    assert in_windows([Window(SUN, 8 * 60, 10 * 60)], instant, AMS) is inside


def test_spring_forward_skips_the_missing_hour() -> None:
    w = [Window(SUN, 2 * 60, 3 * 60)]  # 02:00-03:00 does not exist on 29 March 2026
    for minute in range(0, 24 * 60, 5):
        assert not in_windows(w, utc(2026, 3, 28, 23, 0) + minute * 60, AMS)
    # the minute before the jump is 01:59 CET, the minute after is 03:00 CEST
    assert local_day_minute(utc(2026, 3, 29, 0, 59), AMS) == (SUN, 1 * 60 + 59)
    assert local_day_minute(utc(2026, 3, 29, 1, 0), AMS) == (SUN, 3 * 60)


def test_fall_back_repeats_the_hour_and_the_window_is_open_both_times() -> None:
    w = [Window(SUN, 2 * 60, 3 * 60)]
    first = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    second = utc(2026, 10, 25, 1, 30)  # 02:30 CET, an hour later
    assert in_windows(w, first, AMS) and in_windows(w, second, AMS)
    assert not in_windows(w, utc(2026, 10, 25, 2, 0), AMS)  # 03:00 CET
    open_minutes = sum(in_windows(w, utc(2026, 10, 24, 22, 0) + m * 60, AMS) for m in range(6 * 60))
    assert open_minutes == 120  # a one-hour window is open two real hours that night


def test_day_boundary_is_local_midnight() -> None:
    w = [Window(SAT, 0, 1440)]
    assert not in_windows(w, utc(2026, 7, 3, 21, 59), AMS)  # Friday 23:59 CEST
    assert in_windows(w, utc(2026, 7, 3, 22, 0), AMS)  # Saturday 00:00 CEST
    assert in_windows(w, utc(2026, 7, 4, 21, 59), AMS)
    assert not in_windows(w, utc(2026, 7, 4, 22, 0), AMS)


def test_no_windows_means_no_limit() -> None:
    assert in_windows([], utc(2026, 1, 1), AMS)


@pytest.mark.parametrize(
    ("spec", "windows"),
    [
        ("mon-fri 07:00-10:00", [Window(31, 420, 600)]),
        ("sat,sun 09:00-12:30", [Window(96, 540, 750)]),
        ("daily 00:00-24:00", [Window(127, 0, 1440)]),
        ("sun-tue 08:00-09:00", [Window(64 | 1 | 2, 480, 540)]),
        ("sun 22:00-06:00", [Window(64, 1320, 1440), Window(1, 0, 360)]),
        ("mon 22:00-00:00", [Window(1, 1320, 1440)]),
    ],
)
def test_text_windows(spec: str, windows: list[Window]) -> None:
    assert parse_window(spec) == windows
    assert parse_window(format_window(windows[0]))[0] == windows[0]


@pytest.mark.parametrize("spec", ["", "mon", "fri 7-10", "funday 07:00-08:00", "mon 07:60-08:00",
                                  "mon 24:00-24:00", "mon 25:00-26:00", "mon 07:00-07:00x"])  # fmt: skip
def test_bad_text_windows(spec: str) -> None:
    with pytest.raises(WindowSpecError):
        parse_window(spec)


def test_gateway_decides_windows_in_the_site_zone_across_dst(tmp_path: Path) -> None:
    site: Site = make_site(tmp_path)
    site.clock.t = utc(2026, 3, 29, 5, 30)  # Sunday 07:30 CEST, the first summer morning
    ctl = site.controller()
    t = site.token(windows=[Window(SUN, 7 * 60, 8 * 60)], exp=int(site.clock.t) + 86400)
    assert attempt(ctl, t, site.keys["phone"]).granted
    site.clock.advance(3600)  # 08:30 CEST
    assert attempt(ctl, t, site.keys["phone"]).reason is Reason.OUTSIDE_WINDOW


@pytest.mark.parametrize(
    "zone", ["Europe/Amsterdam", "UTC", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu"]
)
def test_local_clock_agrees_with_zoneinfo_everywhere_and_across_every_change(zone: str) -> None:
    """LocalClock holds one UTC offset per period between the zone's changes; it must give
    what a datetime gives, second by second around both Amsterdam changes of 2026, for
    random instants from 1970 to 2039, and when the clock jumps back and forth."""
    import random

    from protocols.windows import LocalClock

    tz = ZoneInfo(zone)
    lc = LocalClock(tz)
    rnd = random.Random(zone)
    spring, autumn = utc(2026, 3, 29, 1, 0), utc(2026, 10, 25, 1, 0)
    instants = [spring + s for s in range(-1800, 1800, 7)] + [
        autumn + s for s in range(-1800, 1800, 7)
    ]
    instants += [rnd.uniform(0, 2.2e9) for _ in range(1500)]  # jumps both ways
    instants += [spring - 0.5, spring - 0.001, spring, spring + 0.001, autumn - 0.001, autumn]
    for t in instants:
        assert lc.day_minute(t) == local_day_minute(t, tz), (zone, t)
