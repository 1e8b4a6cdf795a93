"""A battery's level over time as a small SVG drawn on the server (no script, no library).

The picture is for eyes; its ``<title>`` and ``aria-label`` say the same in words (first
and last reading), and the page states the level and the estimate in text beside it.
Only numbers and escaped text go into the markup.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from protocols.i18n import Lang

__all__ = ["battery_trend"]

W, H = 320, 140
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 10, 26
DAY = 86400.0


def battery_trend(
    lang: Lang,
    samples: list[tuple[float, float]],
    now: float,
    tz: ZoneInfo,
    *,
    low: int = 20,
    days: int = 30,
) -> Markup:
    """The last ``days`` days of ``(time, percent)`` readings as inline SVG."""
    _ = lang.gettext
    start = now - days * DAY
    pts = sorted((t, v) for t, v in samples if t >= start)
    earlier = [s for s in sorted(samples) if s[0] < start]
    if earlier:  # where the line stood when the picture begins
        pts.insert(0, (start, earlier[-1][1]))
    if not pts:
        pts = [(start, 0.0)]
    pts.append((now, pts[-1][1]))  # the level holds until now

    def x(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - start) / (now - start)

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - max(0.0, min(100.0, v)) / 100)

    step = []  # the level holds until the next reading: a step line
    for i, (t, v) in enumerate(pts):
        if i:
            step.append(f"{x(t):.1f},{y(pts[i - 1][1]):.1f}")
        step.append(f"{x(t):.1f},{y(v):.1f}")
    first, last = pts[0], pts[-1]
    words = _("Battery level over the last {days} days: {first} % on {day}, now {now} %.").format(
        days=days,
        first=round(first[1]),
        day=lang.date(datetime.fromtimestamp(first[0], tz), weekday=False, year=False),
        now=round(last[1]),
    )
    grid = []
    for v in (0, 50, 100):
        grid.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#767676" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 5:.1f}" text-anchor="end" font-size="14" '
            f'fill="#000">{v}%</text>'
        )
    grid.append(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(low):.1f}" y2="{y(low):.1f}" '
        f'stroke="#b00020" stroke-width="2" stroke-dasharray="6 4"/>'
    )
    today = _("today")
    labels = (
        f'<text x="{LEFT}" y="{H - 6}" font-size="14" fill="#000">'
        f"{escape(lang.date(datetime.fromtimestamp(start, tz), weekday=False, year=False))}</text>"
        f'<text x="{W - RIGHT}" y="{H - 6}" text-anchor="end" font-size="14" fill="#000">'
        f"{escape(today)}</text>"
    )
    svg = (
        f'<svg class="trend" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(words)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(words)}</title>{''.join(grid)}{labels}"
        f'<polyline points="{" ".join(step)}" fill="none" stroke="#003d80" stroke-width="3"/>'
        "</svg>"
    )
    return Markup(svg)
