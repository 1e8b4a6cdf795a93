"""What the resident's pages show, built from the journal, the rosters and the devices.

Pure functions from values to small view records with every text already in the
reader's language (the templates only lay them out): the day's visits as a timeline,
who may enter per organisation with their times in plain words, the devices, the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from markupsafe import Markup

from gateway.web.svg import battery_trend
from gateway.words import (
    People,
    ago,
    describe,
    door_name,
    problem_text,
    purpose_text,
    reason_text,
    role_text,
    state_text,
)
from protocols.device import DeviceKind
from protocols.events import Envelope
from protocols.i18n import Lang, first_upper

if TYPE_CHECKING:
    from gateway.access import AccessController
    from gateway.config import Config
    from gateway.devices.record import DeviceRecord

__all__ = [
    "LOG_TYPES",
    "MAX_EVENTS",
    "TIMELINE_TYPES",
    "Timeline",
    "devices",
    "emergency_rules",
    "log_days",
    "organisations",
    "people_of",
    "site_warnings",
]

#: at most this many events on one page (the page says when there were more)
MAX_EVENTS: Final = 2000
TIMELINE_TYPES: Final = (
    "access.granted",
    "access.denied",
    "access.suspicious",
    "visit.ended",
    "alarm.raised",
    "alarm.cleared",
    "keysafe.key_not_returned",
    "door.left_open",
)
LOG_TYPES: Final = (
    *TIMELINE_TYPES,
    "visit.started",
    "roster.applied",
    "roster.over_limit",
    "device.online",
    "device.offline",
    "battery",
)


def people_of(
    config: Config, access: AccessController, records: Mapping[str, DeviceRecord]
) -> People:
    return People.of(
        config,
        {k: p.name for k, p in access.names().items()},
        {i: r.kind for i, r in records.items()},
    )


def _local(ts: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(tz)


def _hm(dt: datetime) -> str:
    return dt.strftime("%H:%M")


# -- today and this week ---------------------------------------------------------------------
@dataclass
class Item:
    """One line of the timeline."""

    kind: str  # visit | refused | alarm | warning
    start: datetime
    title: str
    what: str = ""
    end: datetime | None = None
    duration: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ongoing: bool = False
    device: str | None = None

    @property
    def start_hm(self) -> str:
        return _hm(self.start)

    @property
    def end_hm(self) -> str:
        return _hm(self.end) if self.end is not None else ""

    @property
    def time_label(self) -> str:
        return f"{self.start_hm}–{self.end_hm}" if self.end is not None else self.start_hm

    @property
    def datetime_attr(self) -> str:
        return self.start.isoformat(timespec="seconds")


@dataclass
class Day:
    label: str
    day: date
    items: list[Item]

    @property
    def visits(self) -> int:
        return sum(1 for i in self.items if i.kind == "visit")

    @property
    def problems(self) -> int:
        return sum(1 for i in self.items if i.problems or i.kind in ("warning", "refused"))


class Timeline:
    def __init__(self, lang: Lang, people: People, tz: ZoneInfo) -> None:
        self.lang, self.people, self.tz = lang, people, tz

    def _thing(self, w: Mapping[str, Any]) -> str:
        _ = self.lang.gettext
        if w.get("action") == "open":
            return _("Key safe at the {door}").format(door=door_name(self.lang, w.get("door")))
        return first_upper(door_name(self.lang, w.get("door")))

    def items(self, events: Iterable[Envelope]) -> list[Item]:
        _ = self.lang.gettext
        lang, people = self.lang, self.people
        visits: dict[str, Item] = {}
        out: list[Item] = []
        for env in events:
            w = env.to_wire()
            t = env.type
            at = _local(env.ts, self.tz)
            if t == "access.granted":
                item = Item("visit", at, people.who(lang, w), self._thing(w), ongoing=True)
                item.device = w.get("device")
                purpose = purpose_text(lang, w.get("purpose"))
                if w.get("channel") == "command":
                    item.notes.append(
                        _("opened remotely by {actor}").format(actor=w.get("actor") or "?")
                    )
                elif purpose:
                    item.notes.append(purpose)
                if w.get("emergency_outside_window"):
                    item.problems.append(_("emergency entry outside the agreed times"))
                if w.get("not_on_roster"):
                    item.problems.append(_("not on the organisation's list of who may come in"))
                visits[env.id] = item
                out.append(item)
            elif t == "visit.ended":
                visit = visits.get(str(w.get("visit")))
                if visit is None:
                    continue  # its grant is before the period shown
                visit.ongoing = False
                visit.end = at
                visit.duration = lang.duration(w.get("duration_s") or 0)
                if w.get("relocked") is True:
                    visit.notes.append(_("door locked again"))
                if w.get("key_returned") is True:
                    visit.notes.append(_("key put back"))
                visit.problems += [problem_text(lang, p) for p in w.get("problems") or []]
            elif t == "access.denied":
                out.append(
                    Item(
                        "refused",
                        at,
                        people.who(lang, w),
                        _("Not let in at the {thing}").format(thing=self._thing(w).lower()),
                        problems=[reason_text(lang, w.get("reason"))],
                    )
                )
            elif t in ("alarm.raised", "alarm.cleared"):
                out.append(Item("alarm", at, describe(lang, env, people)))
            elif t in ("keysafe.key_not_returned", "door.left_open"):
                problem = "key_not_returned" if t.startswith("keysafe") else "door_left_open"
                item = Item("warning", at, describe(lang, env, people), device=w.get("device"))
                item.notes.append(problem_text(lang, problem))  # to find its visit below
                out.append(item)
            elif t == "access.suspicious":
                out.append(Item("warning", at, describe(lang, env, people)))
        # a warning a visit of the same device already tells (the visit ends after it)
        return [
            i
            for i in out
            if not (
                i.kind == "warning"
                and i.device is not None
                and any(v.device == i.device and i.notes[0] in v.problems for v in visits.values())
            )
        ]

    def days(self, events: Iterable[Envelope], *, today: date) -> list[Day]:
        """Newest day first; within a day in the order things happened. Today is
        always there (perhaps empty)."""
        _ = self.lang.gettext
        by_day: dict[date, list[Item]] = {today: []}
        for item in self.items(events):
            by_day.setdefault(item.start.date(), []).append(item)
        out = []
        for d in sorted(by_day, reverse=True):
            if d == today:
                label = _("Today")
            elif d == today - timedelta(days=1):
                label = _("Yesterday")
            else:
                label = first_upper(self.lang.date(d, year=False))
            out.append(Day(label, d, by_day[d]))
        return out


# -- who may enter -----------------------------------------------------------------------------
@dataclass
class PersonRow:
    name: str
    role: str
    purposes: str
    doors: str
    times: list[str]
    valid: str


@dataclass
class Organisation:
    name: str
    roles: str
    doors: str
    consent: str
    has_roster: bool
    roster_date: str = ""
    people: list[PersonRow] = field(default_factory=list)


def _join(lang: Lang, items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return lang.gettext("{items} and {last}").format(items=", ".join(items[:-1]), last=items[-1])


def organisations(
    lang: Lang, config: Config, access: AccessController, tz: ZoneInfo, now: float
) -> list[Organisation]:
    _ = lang.gettext
    rosters = {h.iss: h for h in access.rosters()}
    out = []
    for iss in config.issuers:
        if iss.consent_from and iss.consent_until:
            consent = _("agreed from {first} to {last}").format(
                first=lang.date(iss.consent_from, weekday=False),
                last=lang.date(iss.consent_until, weekday=False),
            )
        elif iss.consent_from:
            consent = _("agreed since {first}").format(first=lang.date(iss.consent_from, weekday=False))
        elif iss.consent_until:
            consent = _("agreed until {last}").format(last=lang.date(iss.consent_until, weekday=False))
        else:
            consent = ""
        org = Organisation(
            name=iss.title,
            roles=_join(lang, [role_text(lang, r) for r in iss.roles]),
            doors=_join(lang, [door_name(lang, d) for d in iss.doors]),
            consent=consent,
            has_roster=iss.id in rosters,
        )
        held = rosters.get(iss.id)
        if held is not None:
            org.roster_date = lang.date(datetime.fromtimestamp(held.received_at, tz), weekday=False)
            for e in held.roster.entries:
                if e.exp is not None and e.exp < now:
                    continue
                times = [lang.window(w) for w in e.windows] or [_("at any time")]
                if e.exp is not None:
                    valid = _("until {day}").format(
                        day=lang.date(datetime.fromtimestamp(e.exp, tz), weekday=False)
                    )
                else:
                    valid = ""
                if e.nbf is not None and e.nbf > now:
                    valid = _("from {day}").format(
                        day=lang.date(datetime.fromtimestamp(e.nbf, tz), weekday=False)
                    ) + (" " + valid if valid else "")
                org.people.append(
                    PersonRow(
                        name=e.name,
                        role=role_text(lang, e.role),
                        purposes=_join(lang, [purpose_text(lang, p) for p in e.purposes]),
                        doors=_join(lang, [door_name(lang, d) for d in e.doors]),
                        times=times,
                        valid=valid,
                    )
                )
        out.append(org)
    return out


def emergency_rules(lang: Lang, config: Config) -> list[str]:
    """Emergency access, explained for this home."""
    _ = lang.gettext
    orgs = [i.title for i in config.issuers if "emergency" in i.purposes]
    out = []
    if orgs:
        if config.site.emergency_outside_window_without_alarm:
            out.append(
                _(
                    "In an emergency an alarm responder of {orgs} may come in at any time, "
                    "also outside the agreed times."
                ).format(orgs=_join(lang, orgs))
            )
        else:
            out.append(
                _(
                    "When you raise an alarm (for example with your alarm button), an alarm "
                    "responder of {orgs} may come in, also outside the agreed times — but only "
                    "while the alarm centre has reported an alarm for your home."
                ).format(orgs=_join(lang, orgs))
            )
        out.append(_("Such an entry is always marked separately in the log."))
    else:
        out.append(_("No organisation has emergency access to your home."))
    if config.command_signers:
        out.append(
            _(
                "The alarm centre can open the door from a distance, for example for an "
                "ambulance. That too is written in the log, with who asked for it."
            )
        )
    return out


def site_warnings(lang: Lang, config: Config, access: AccessController) -> list[str]:
    _ = lang.gettext
    limit = config.site.max_people
    out = []
    if limit is not None:
        n = access.site_people()
        if n > limit:
            out.append(
                _(
                    "{n} people may come in, more than the {limit} agreed for this home. "
                    "Experts advise that as few people as possible can open your door; "
                    "ask the care organisations whether everyone still needs to."
                ).format(n=n, limit=limit)
            )
    return out


# -- devices ------------------------------------------------------------------------------------
@dataclass
class DeviceRow:
    title: str
    online: bool | None
    status: str
    state: str
    battery: str
    battery_problem: bool
    trend: Markup | None
    last_seen: str


def devices(
    lang: Lang,
    config: Config,
    records: Mapping[str, DeviceRecord],
    now: float,
    tz: ZoneInfo,
) -> list[DeviceRow]:
    _ = lang.gettext
    out = []
    for dev in config.devices:
        r = records.get(dev.id)
        if r is None:
            continue
        door = door_name(lang, dev.door)
        if r.kind is DeviceKind.KEYSAFE or dev.driver.endswith("keysafe"):
            title = _("Key safe at the {door}").format(door=door)
        else:
            title = _("Lock of the {door}").format(door=door)
        if r.online is None:
            status = _("not reached yet")
        elif r.online:
            status = _("working")
        else:
            status = _("not reachable")
        problem = r.battery_status in ("low", "critical")
        if r.battery is None:
            battery = _("not known")
        else:
            battery = f"{r.battery} %"
            if r.battery_status == "critical":
                battery += " — " + _("almost empty: the batteries must be replaced today")
            elif r.battery_status == "low":
                battery += " — " + _("low: the batteries must be replaced soon")
            if r.days_left is not None and r.days_left < 1:
                battery += " " + _("(less than a day left)")
            elif r.days_left is not None:
                days = round(r.days_left)
                battery += " " + lang.ngettext(
                    "(about {n} day left)", "(about {n} days left)", days
                ).format(n=days)
        samples = [(float(t), float(v)) for t, v in r.battery_samples]
        if r.battery is not None and r.last_contact is not None:
            samples.append((r.last_contact, float(r.battery)))
        trend = battery_trend(lang, samples, now, tz, low=dev.battery_low) if samples else None
        out.append(
            DeviceRow(
                title=title,
                online=r.online,
                status=status,
                state=state_text(lang, r.state),
                battery=battery,
                battery_problem=problem,
                trend=trend,
                last_seen=ago(lang, r.last_contact, now, tz),
            )
        )
    return out


# -- the log --------------------------------------------------------------------------------------
@dataclass
class LogRow:
    time: str
    text: str
    problem: bool


@dataclass
class LogDay:
    label: str
    rows: list[LogRow]


_PROBLEM_TYPES: Final = frozenset(
    {
        "access.denied",
        "access.suspicious",
        "keysafe.key_not_returned",
        "door.left_open",
        "roster.over_limit",
        "device.offline",
        "battery",
    }
)


def log_days(lang: Lang, people: People, tz: ZoneInfo, events: Iterable[Envelope]) -> list[LogDay]:
    """Everything recorded, day by day, oldest first (a battery only when low)."""
    out: list[LogDay] = []
    day = None
    for env in events:
        w = env.to_wire()
        if env.type == "battery" and not (w.get("low") or w.get("critical")):
            continue
        at = _local(env.ts, tz)
        if at.date() != day:
            day = at.date()
            out.append(LogDay(first_upper(lang.date(at)), []))
        problem = env.type in _PROBLEM_TYPES or bool(env.type == "visit.ended" and w.get("problems"))
        out[-1].rows.append(LogRow(at.strftime("%H:%M:%S"), describe(lang, env, people), problem))
    return out
