"""Words for people in Dutch (the default) or English: one gettext catalogue for all of lockgw.

The resident's page, the command line's ``audit show``, ``devices`` and ``health``, and
the demo's narration all take their text from the ``lockgw`` gettext domain. Source
strings are English; ``protocols/locale/nl/LC_MESSAGES/lockgw.po`` translates them and
its compiled ``.mo`` beside it is what runs (committed, so a clean clone and a wheel
work without a build step; ``scripts/i18n`` extracts, updates and compiles with Babel,
and ``tests/test_i18n.py`` fails when the ``.mo`` and the ``.po`` or the code drift apart).

It lives in ``protocols/`` because the simulators (the demo) may import nothing else;
it reads its own package data once per language and does no other I/O.

``lang = language("nl")``; ``_ = lang.gettext``; ``_("key safe opened")`` →
``"sleutelkluis geopend"``. A :class:`Lang` also formats what every view needs alike:
durations ("4 min 12 s"), days ("maandag t/m vrijdag"), time windows, dates.
"""

from __future__ import annotations

import gettext as _gettext
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Final

from protocols.windows import Window

__all__ = [
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "LOCALE_DIR",
    "N_",
    "Lang",
    "first_upper",
    "language",
]

LANGUAGES: Final = ("nl", "en")
DEFAULT_LANGUAGE: Final = "nl"
DOMAIN: Final = "lockgw"
LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it here (tables of words)."""
    return message


_WEEKDAYS: Final = (
    N_("Monday"),
    N_("Tuesday"),
    N_("Wednesday"),
    N_("Thursday"),
    N_("Friday"),
    N_("Saturday"),
    N_("Sunday"),
)
_MONTHS: Final = (
    N_("January"),
    N_("February"),
    N_("March"),
    N_("April"),
    N_("May"),
    N_("June"),
    N_("July"),
    N_("August"),
    N_("September"),
    N_("October"),
    N_("November"),
    N_("December"),
)


class Lang:
    """One language's catalogue and formatting (immutable; share it freely)."""

    def __init__(self, code: str, translations: _gettext.NullTranslations) -> None:
        self.code = code
        self._t = translations

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def pgettext(self, context: str, message: str) -> str:
        return self._t.pgettext(context, message)

    @property
    def translations(self) -> _gettext.NullTranslations:
        """For template engines (Jinja2's i18n extension)."""
        return self._t

    # -- formatting -----------------------------------------------------------------------
    def duration(self, seconds: float) -> str:
        """``45 s``, ``4 min 12 s``, ``1 h 5 min`` (Dutch: ``1 u 5 min``)."""
        _ = self.gettext
        s = max(0, round(seconds))
        if s < 60:
            return _("{s} s").format(s=s)
        if s < 3600:
            m, s = divmod(s, 60)
            return (
                _("{m} min {s} s").format(m=m, s=s) if s else _("{m} min").format(m=m)
            )
        h, rest = divmod(s, 3600)
        m = rest // 60
        return _("{h} h {m} min").format(h=h, m=m) if m else _("{h} h").format(h=h)

    def weekday(self, index: int) -> str:
        """Monday = 0, in lower case as a sentence has it ("maandag", "Monday")."""
        name = self.gettext(_WEEKDAYS[index])
        return name if self.code == "en" else name.lower()

    def month(self, index: int) -> str:
        """January = 1."""
        name = self.gettext(_MONTHS[index - 1])
        return name if self.code == "en" else name.lower()

    def days(self, mask: int) -> str:
        """A day bitmask (Mon = 1 … Sun = 64) in words: "maandag t/m vrijdag",
        "elke dag", "zaterdag en zondag", "maandag, woensdag en vrijdag"."""
        _ = self.gettext
        mask &= 0x7F
        if mask == 0x7F:
            return _("every day")
        days = [i for i in range(7) if mask & (1 << i)]
        if len(days) >= 3 and days == list(range(days[0], days[-1] + 1)):
            return _("{first} to {last}").format(
                first=self.weekday(days[0]), last=self.weekday(days[-1])
            )
        names = [self.weekday(i) for i in days]
        if len(names) == 1:
            return names[0]
        return _("{items} and {last}").format(items=", ".join(names[:-1]), last=names[-1])

    def window(self, w: Window) -> str:
        """``maandag t/m vrijdag 07:00–10:00``."""
        return f"{self.days(w.days)} {_hm(w.start)}–{_hm(w.end)}"

    def date(self, d: date | datetime, *, weekday: bool = True, year: bool = True) -> str:
        """``maandag 23 november 2026`` / ``Monday 23 November 2026``."""
        text = f"{d.day} {self.month(d.month)}"
        if year:
            text += f" {d.year}"
        return f"{self.weekday(d.weekday())} {text}" if weekday else text

    def __repr__(self) -> str:
        return f"language({self.code!r})"


def first_upper(text: str) -> str:
    """``text`` with its first letter a capital (``str.capitalize`` lowers the rest)."""
    return text[:1].upper() + text[1:]


def _hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@cache
def language(code: str | None = None) -> Lang:
    """The catalogue for ``code`` (``nl``, ``en``; None: the default, Dutch).
    ValueError for another language; a missing compiled catalogue is an error too,
    never a silent fall-back to English."""
    code = code or DEFAULT_LANGUAGE
    if code not in LANGUAGES:
        raise ValueError(f"language {code!r} is not available; choose one of {', '.join(LANGUAGES)}")
    if code == "en":  # the source language: the strings as written
        return Lang(code, _gettext.NullTranslations())
    return Lang(code, _gettext.translation(DOMAIN, LOCALE_DIR, languages=[code]))
