"""The translation catalogue: complete, compiled, and what each view says in both languages."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.i18n_tool import problems
from protocols.i18n import language
from protocols.windows import Window, parse_window


def test_the_catalogue_is_complete_and_its_compiled_form_current() -> None:
    """Every marked string of the code and the page templates is translated into Dutch,
    and the committed .mo is the compiled .po (run scripts/i18n when this fails)."""
    assert problems() == []


def test_an_unknown_language_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="choose one of nl, en"):
        language("de")


@pytest.mark.parametrize(
    ("seconds", "nl", "en"),
    [
        (0, "0 s", "0 s"),
        (45.4, "45 s", "45 s"),
        (252, "4 min 12 s", "4 min 12 s"),
        (1380, "23 min", "23 min"),
        (3900, "1 u 5 min", "1 h 5 min"),
        (7200, "2 u", "2 h"),
    ],
)
def test_durations_read_in_minutes_and_seconds(seconds: float, nl: str, en: str) -> None:
    assert language("nl").duration(seconds) == nl
    assert language("en").duration(seconds) == en


@pytest.mark.parametrize(
    ("spec", "nl", "en"),
    [
        ("mon-fri 07:00-10:00", "maandag t/m vrijdag 07:00–10:00", "Monday to Friday 07:00–10:00"),
        ("daily 22:00-24:00", "elke dag 22:00–24:00", "every day 22:00–24:00"),
        ("sat,sun 09:00-12:30", "zaterdag en zondag 09:00–12:30", "Saturday and Sunday 09:00–12:30"),
        ("mon,wed,fri 08:00-09:00", "maandag, woensdag en vrijdag 08:00–09:00",
         "Monday, Wednesday and Friday 08:00–09:00"),
        ("tue 13:15-14:00", "dinsdag 13:15–14:00", "Tuesday 13:15–14:00"),
    ],
)  # fmt: skip
def test_time_windows_read_in_plain_words(spec: str, nl: str, en: str) -> None:
    (w,) = parse_window(spec)
    assert language("nl").window(w) == nl
    assert language("en").window(w) == en


def test_dates_name_the_weekday_and_month() -> None:
    d = date(2026, 11, 24)
    assert language("nl").date(d) == "dinsdag 24 november 2026"
    assert language("en").date(d, year=False) == "Tuesday 24 November"
    assert language("nl").window(Window(96, 0, 1440)) == "zaterdag en zondag 00:00–24:00"
