"""Health reasons: what is wrong with a gateway, with how much it matters, in words.

One shape everywhere a person or a monitor is told (``lockgw health`` and its
``--json``, the metrics endpoint, the retained ``status`` topic, the ``health.warning``
and ``health.cleared`` events): ``{code, level, text, subject}``.

- ``code`` is stable, for machines (``revocation.stale``, ``consent.ending``, ...;
  docs/install.md lists them with what to do);
- ``level`` says how much it matters:

  ``warning``    nothing is refused yet, but someone should act (before it is);
  ``degraded``   planned care is refused (or nothing is recorded) for a reason the
                 site can fix; emergency access still works;
  ``unhealthy``  a door cannot be opened (device offline or jammed, the gateway not
                 running or not yet started, the clock untrusted with nothing allowed);

- ``text`` says it in plain words, in the site's language (Dutch by default);
- ``subject`` names what it is about, when it is about one thing: a device id, an
  issuer id, a state file.

The overall health is the worst level present, or ``healthy`` when there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LEVELS", "HealthLevel", "HealthReason", "Overall", "overall"]

HealthLevel = Literal["warning", "degraded", "unhealthy"]
Overall = Literal["healthy", "warning", "degraded", "unhealthy"]

#: from least to most serious
LEVELS: Final[tuple[HealthLevel, ...]] = ("warning", "degraded", "unhealthy")


class HealthReason(BaseModel):
    """One thing wrong with the gateway (``protocols.health``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(
        description="stable, for machines: e.g. revocation.stale, revocation.ageing, "
        "consent.ending, consent.ended, token.expiring, clock.untrusted, device.offline, "
        "device.jammed, device.battery_critical, door.left_unlocked, journal.fallback, "
        "journal.unrecorded (docs/install.md lists them all)"
    )
    level: HealthLevel = Field(
        description="warning: nothing refused yet, act before it is; degraded: planned care "
        "is refused (or nothing is recorded) for a reason the site can fix, emergency "
        "access still works; unhealthy: a door cannot be opened"
    )
    text: str = Field(description="what is wrong and what to do, in the site's language")
    subject: str | None = Field(
        default=None,
        description="what it is about when it is one thing: a device id, an issuer id, "
        "a state file",
    )

    @property
    def key(self) -> tuple[str, str | None]:
        """What makes it the same reason from one look to the next (its words may change)."""
        return self.code, self.subject


def overall(reasons: Iterable[HealthReason]) -> Overall:
    """The worst level among ``reasons``; ``healthy`` when there is none."""
    worst = -1
    for r in reasons:
        worst = max(worst, LEVELS.index(r.level))
    return "healthy" if worst < 0 else LEVELS[worst]
